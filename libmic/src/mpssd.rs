//! The client of mpssd's control socket (feature `mpssd`):
//! `DIR/run/mpssd/control.sock`, the protocol of [`mpssd_proto`].
//!
//! Blocking, one request at a time; [`Client::subscribe`] turns the
//! connection into an event stream, [`Client::attach_console`] into a
//! card's console: a stream of output ([`ConsoleOutput`], ending with a
//! reason) and a writer ([`ConsoleInput`]), usable from two threads.

use std::io::{self, Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use mpssd_proto::{
    BlockSwapped, Bytes, CardStatus, ClientFrame, ConsoleAttached, ConsoleClient, ConsoleEvent, ConsoleMode,
    DaemonStatus, EndReason, ErrorBody, ErrorCode, Event, EventKind, ReloadResult, Replay, Request, Response,
    ServerBody, ServerFrame, SupervisorState, WindowSize,
};
use mpssd_proto::{DecodeError, FrameError, LineDecoder};

use crate::root::MicRoot;

/// Everything that can go wrong talking to mpssd.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error("cannot connect to mpssd at {}: {source} (is mpssd running for this root?)", path.display())]
    Connect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("talking to mpssd at {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("mpssd closed the connection")]
    Closed,
    #[error("mpssd sent a frame that does not decode")]
    Decode(#[source] DecodeError),
    #[error("mpssd sent an oversized frame")]
    Frame(#[source] FrameError),
    /// mpssd refused the request.
    #[error("mpssd refused the request: {0}")]
    Refused(ErrorBody),
    #[error("mpssd answered {got} to a {asked} request")]
    Unexpected { asked: &'static str, got: String },
}

impl ClientError {
    /// The protocol error code, if mpssd refused the request.
    #[must_use]
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Refused(b) => Some(b.code),
            _ => None,
        }
    }
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// A connection to mpssd.
#[derive(Debug)]
pub struct Client {
    path: PathBuf,
    stream: UnixStream,
    decoder: LineDecoder,
    next_id: u64,
}

impl MicRoot {
    /// `<root>/run/mpssd/control.sock`.
    #[must_use]
    pub fn mpssd_socket(&self) -> PathBuf {
        self.join(mpssd_proto::SOCKET_PATH)
    }
}

impl Client {
    /// Connects to the mpssd serving `root`.
    pub fn connect(root: &MicRoot) -> Result<Self> {
        Self::connect_path(&root.mpssd_socket())
    }

    /// Connects to the control socket at `path`.
    pub fn connect_path(path: &Path) -> Result<Self> {
        let stream = UnixStream::connect(path).map_err(|source| ClientError::Connect {
            path: path.to_owned(),
            source,
        })?;
        Ok(Self {
            path: path.to_owned(),
            stream,
            decoder: LineDecoder::default(),
            next_id: 1,
        })
    }

    /// Bounds every read and write (`None`: block).
    pub fn set_timeout(&mut self, timeout: Option<Duration>) -> Result<()> {
        self.stream
            .set_read_timeout(timeout)
            .and_then(|()| self.stream.set_write_timeout(timeout))
            .map_err(|e| self.io(e))
    }

    fn io(&self, source: io::Error) -> ClientError {
        ClientError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// Sends one request; returns its id.
    pub fn send(&mut self, request: Request) -> Result<u64> {
        let id = self.next_id;
        self.next_id += 1;
        let line = mpssd_proto::encode(&ClientFrame::new(Some(id), request));
        self.stream.write_all(&line).map_err(|e| self.io(e))?;
        Ok(id)
    }

    /// The next frame mpssd sends (an answer or an event).
    pub fn next_frame(&mut self) -> Result<ServerFrame> {
        loop {
            if let Some(line) = self.decoder.next_frame().map_err(ClientError::Frame)? {
                return mpssd_proto::decode_server(&line).map_err(ClientError::Decode);
            }
            let mut buf = [0u8; 8192];
            let want = buf.len().min(self.decoder.room().max(1));
            let n = match self.stream.read(&mut buf[..want]) {
                Ok(0) => return Err(ClientError::Closed),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.io(e)),
            };
            self.decoder.push(&buf[..n]);
        }
    }

    /// Sends `request` and waits for its answer (events arriving before it
    /// are skipped).
    pub fn request(&mut self, request: Request) -> Result<Response> {
        let id = self.send(request)?;
        loop {
            let frame = self.next_frame()?;
            match frame.body {
                // An answer without an id is the daemon refusing the
                // connection itself (too many clients, shutting down).
                ServerBody::Error(e) if frame.id.is_none() || frame.id == Some(id) => {
                    return Err(ClientError::Refused(e));
                }
                ServerBody::Ok(r) if frame.id == Some(id) => return Ok(r),
                _ => {}
            }
        }
    }

    /// The daemon and every card.
    pub fn status(&mut self) -> Result<DaemonStatus> {
        match self.request(Request::Status)? {
            Response::Status(s) => Ok(s),
            other => Err(unexpected("status", &other)),
        }
    }

    /// One card.
    pub fn card_status(&mut self, card: u32) -> Result<CardStatus> {
        match self.request(Request::CardStatus { card })? {
            Response::Card(s) => Ok(s),
            other => Err(unexpected("card_status", &other)),
        }
    }

    /// Asks mpssd to re-read its configuration file.
    pub fn reload_config(&mut self) -> Result<ReloadResult> {
        match self.request(Request::ReloadConfig)? {
            Response::Reloaded(r) => Ok(r),
            other => Err(unexpected("reload_config", &other)),
        }
    }

    /// Turns the connection into an event stream.
    pub fn subscribe(mut self) -> Result<Events> {
        match self.request(Request::Subscribe)? {
            Response::Subscribed => Ok(Events { client: self }),
            other => Err(unexpected("subscribe", &other)),
        }
    }

    /// Swaps card `card`'s disk image to `path` (`None`: what the
    /// configuration names).
    pub fn block_swap(&mut self, card: u32, path: Option<&str>) -> Result<BlockSwapped> {
        match self.request(Request::BlockSwap {
            card,
            path: path.map(str::to_owned),
        })? {
            Response::BlockSwapped(s) => Ok(s),
            other => Err(unexpected("block_swap", &other)),
        }
    }

    /// Attaches the connection to card `card`'s console; the connection
    /// becomes the console's: [`Console::split`] gives the stream of
    /// output and the writer.
    pub fn attach_console(mut self, card: u32, opts: &AttachOptions) -> Result<Console> {
        let attached = match self.request(Request::ConsoleAttach {
            card,
            mode: opts.mode,
            replay: opts.replay,
            force: opts.force,
            client: opts.client.clone(),
            size: opts.size,
        })? {
            Response::ConsoleAttached(a) => a,
            other => return Err(unexpected("console_attach", &other)),
        };
        let write = self.stream.try_clone().map_err(|e| self.io(e))?;
        let input = ConsoleInput {
            path: self.path.clone(),
            stream: write,
            card,
            // Ids apart from the reader's: the reader never sends again.
            next_id: self.next_id,
        };
        Ok(Console {
            attached,
            output: ConsoleOutput {
                client: self,
                card,
                ended: false,
            },
            input,
        })
    }
}

fn unexpected(asked: &'static str, got: &Response) -> ClientError {
    ClientError::Unexpected {
        asked,
        got: got.name().to_owned(),
    }
}

/// How to attach to a console.
#[derive(Debug, Clone)]
pub struct AttachOptions {
    pub mode: ConsoleMode,
    /// How much scrollback to replay first (`None`: all of it).
    pub replay: Option<Replay>,
    /// With read-write: take the console from whoever holds it (their
    /// attachment ends, [`ConsoleEnd::TakenOver`]).
    pub force: bool,
    /// What to call this client (shown to others: `"micctl console"`).
    pub client: Option<String>,
    /// The terminal's size, passed to the card (read-write).
    pub size: Option<WindowSize>,
}

impl AttachOptions {
    /// Read-write, the whole scrollback replayed.
    #[must_use]
    pub fn read_write() -> Self {
        Self {
            mode: ConsoleMode::ReadWrite,
            replay: None,
            force: false,
            client: None,
            size: None,
        }
    }

    /// Read-only, the whole scrollback replayed.
    #[must_use]
    pub fn read_only() -> Self {
        Self {
            mode: ConsoleMode::ReadOnly,
            ..Self::read_write()
        }
    }

    #[must_use]
    pub fn replay(mut self, replay: Replay) -> Self {
        self.replay = Some(replay);
        self
    }

    #[must_use]
    pub fn force(mut self) -> Self {
        self.force = true;
        self
    }

    #[must_use]
    pub fn named(mut self, client: &str) -> Self {
        self.client = Some(client.to_owned());
        self
    }

    #[must_use]
    pub fn size(mut self, cols: u16, rows: u16) -> Self {
        self.size = Some(WindowSize { cols, rows });
        self
    }
}

/// A connection attached to one card's console.
#[derive(Debug)]
pub struct Console {
    /// What the attach granted (mode, replay size, pty, the writer, whom
    /// a forced attach took the console from).
    pub attached: ConsoleAttached,
    pub output: ConsoleOutput,
    pub input: ConsoleInput,
}

impl Console {
    /// The output stream (read it on one thread) and the writer (use it
    /// from another).
    #[must_use]
    pub fn split(self) -> (ConsoleAttached, ConsoleOutput, ConsoleInput) {
        (self.attached, self.output, self.input)
    }
}

/// One thing an attached console delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsoleItem {
    /// What the card printed; `replay`: from the scrollback, before the
    /// live output.
    Output { data: Vec<u8>, replay: bool },
    /// This client fell behind and `missed` bytes were dropped for it.
    Lagged { missed: u64 },
    /// The card's console device came up or went down (a reboot); the
    /// attachment stays.
    Device { up: bool, reason: String },
    /// mpssd refused something the writer sent (read-only, the card not
    /// taking input in time, not attached any more); the attachment stays.
    Refused(ErrorBody),
    /// The attachment is over: the last item.
    Ended(ConsoleEnd),
}

/// Why an attachment ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsoleEnd {
    /// The card went down and mpssd is not booting it again.
    CardDown { message: String },
    /// The card's console is gone from mpssd for good.
    ConsoleRemoved { message: String },
    /// mpssd is stopping.
    DaemonStopping { message: String },
    /// Another client forced the console read-write.
    TakenOver {
        by: Option<ConsoleClient>,
        message: String,
    },
    /// This client detached ([`ConsoleInput::detach`]).
    Detached,
    /// The connection closed without a reason (mpssd killed?).
    Disconnected,
}

impl std::fmt::Display for ConsoleEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConsoleEnd::CardDown { message }
            | ConsoleEnd::ConsoleRemoved { message }
            | ConsoleEnd::DaemonStopping { message }
            | ConsoleEnd::TakenOver { message, .. } => f.write_str(message),
            ConsoleEnd::Detached => f.write_str("detached"),
            ConsoleEnd::Disconnected => f.write_str("mpssd closed the connection"),
        }
    }
}

impl ConsoleEnd {
    fn from_event(reason: EndReason, by: Option<ConsoleClient>, message: String) -> Self {
        match reason {
            EndReason::CardDown => ConsoleEnd::CardDown { message },
            EndReason::ConsoleRemoved => ConsoleEnd::ConsoleRemoved { message },
            EndReason::DaemonStopping => ConsoleEnd::DaemonStopping { message },
            EndReason::TakenOver => ConsoleEnd::TakenOver { by, message },
        }
    }
}

/// The output of an attached console, in order: the replay, then live
/// output and notices, then one [`ConsoleItem::Ended`].
#[derive(Debug)]
pub struct ConsoleOutput {
    client: Client,
    card: u32,
    ended: bool,
}

impl ConsoleOutput {
    /// Bounds the wait for the next item (`None`: block). Shared with the
    /// writer's socket.
    pub fn set_timeout(&mut self, timeout: Option<Duration>) -> Result<()> {
        self.client.set_timeout(timeout)
    }

    /// The socket (to wait for readability in an event loop).
    #[must_use]
    pub fn as_raw_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.client.stream)
    }

    /// The next item; after [`ConsoleItem::Ended`], [`ClientError::Closed`].
    pub fn next_item(&mut self) -> Result<ConsoleItem> {
        if self.ended {
            return Err(ClientError::Closed);
        }
        let item = loop {
            let frame = match self.client.next_frame() {
                Ok(f) => f,
                Err(ClientError::Closed) => break ConsoleItem::Ended(ConsoleEnd::Disconnected),
                Err(e) => return Err(e),
            };
            match frame.body {
                ServerBody::Console(c) if c.card == self.card => match c.event {
                    ConsoleEvent::Output { data, replay } => {
                        break ConsoleItem::Output { data: data.0, replay };
                    }
                    ConsoleEvent::Lagged { missed } => break ConsoleItem::Lagged { missed },
                    ConsoleEvent::Device { up, reason } => break ConsoleItem::Device { up, reason },
                    ConsoleEvent::Ended { reason, by, message } => {
                        break ConsoleItem::Ended(ConsoleEnd::from_event(reason, by, message));
                    }
                },
                ServerBody::Ok(Response::ConsoleDetached { card }) if card == self.card => {
                    break ConsoleItem::Ended(ConsoleEnd::Detached);
                }
                // The whole connection refused (mpssd stopping).
                ServerBody::Error(e) if frame.id.is_none() => {
                    break ConsoleItem::Ended(match e.code {
                        ErrorCode::ShuttingDown => ConsoleEnd::DaemonStopping { message: e.message },
                        _ => ConsoleEnd::Disconnected,
                    });
                }
                ServerBody::Error(e) => break ConsoleItem::Refused(e),
                // Input taken, resizes done: nothing to tell.
                _ => {}
            }
        };
        self.ended = matches!(item, ConsoleItem::Ended(_));
        Ok(item)
    }
}

impl Iterator for ConsoleOutput {
    type Item = Result<ConsoleItem>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.next_item() {
            Err(ClientError::Closed) if self.ended => None,
            r => Some(r),
        }
    }
}

/// The writer of an attached console: what it sends is answered on the
/// output stream (a refusal as [`ConsoleItem::Refused`]). A card that
/// does not read its console makes mpssd stop reading this connection, so
/// writes block (bounded by the socket's timeout): back-pressure.
#[derive(Debug)]
pub struct ConsoleInput {
    path: PathBuf,
    stream: UnixStream,
    card: u32,
    next_id: u64,
}

impl ConsoleInput {
    fn send_request(&mut self, request: Request) -> Result<()> {
        let id = self.next_id;
        self.next_id += 1;
        let line = mpssd_proto::encode(&ClientFrame::new(Some(id), request));
        self.stream.write_all(&line).map_err(|source| ClientError::Io {
            path: self.path.clone(),
            source,
        })
    }

    /// Types `data` (read-write attachments; in frames of at most
    /// [`mpssd_proto::CONSOLE_CHUNK`] bytes).
    pub fn send(&mut self, data: &[u8]) -> Result<()> {
        for piece in data.chunks(mpssd_proto::CONSOLE_CHUNK) {
            self.send_request(Request::ConsoleInput {
                card: self.card,
                data: Bytes(piece.to_vec()),
            })?;
        }
        Ok(())
    }

    /// Tells the card the terminal's size (read-write attachments).
    pub fn resize(&mut self, cols: u16, rows: u16) -> Result<()> {
        self.send_request(Request::ConsoleResize {
            card: self.card,
            cols,
            rows,
        })
    }

    /// Detaches: the output ends with [`ConsoleEnd::Detached`].
    pub fn detach(&mut self) -> Result<()> {
        self.send_request(Request::ConsoleDetach { card: self.card })
    }
}

impl io::Write for ConsoleInput {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(mpssd_proto::CONSOLE_CHUNK);
        self.send(&buf[..n]).map_err(io::Error::other)?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The events of a subscribed connection.
#[derive(Debug)]
pub struct Events {
    client: Client,
}

impl Events {
    /// Bounds the wait for the next event (`None`: block).
    pub fn set_timeout(&mut self, timeout: Option<Duration>) -> Result<()> {
        self.client.set_timeout(timeout)
    }

    /// The next event.
    pub fn next_event(&mut self) -> Result<Event> {
        loop {
            let frame = self.client.next_frame()?;
            match frame.body {
                ServerBody::Event(e) => return Ok(e),
                ServerBody::Error(e) => return Err(ClientError::Refused(e)),
                ServerBody::Ok(_) | ServerBody::Console(_) => {}
            }
        }
    }
}

impl Iterator for Events {
    type Item = Result<Event>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.next_event() {
            Err(ClientError::Closed) => None,
            r => Some(r),
        }
    }
}
