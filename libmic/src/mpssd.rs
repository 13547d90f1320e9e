//! The client of mpssd's control socket (feature `mpssd`):
//! `DIR/run/mpssd/control.sock`, the protocol of [`mpssd_proto`].
//!
//! Blocking, one request at a time; [`Client::subscribe`] turns the
//! connection into an event stream, [`Client::attach_console`] into a
//! console session.

use std::io::{self, Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use mpssd_proto::{
    BlockSwapped, Bytes, CardStatus, ClientFrame, ConsoleAttached, ConsoleClient, ConsoleEvent, ConsoleMode,
    DaemonStatus, ErrorBody, ErrorCode, Event, EventKind, ReloadResult, Request, Response, ServerBody,
    ServerFrame, SupervisorState, WindowSize,
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

    /// Attaches the connection to card `card`'s console.
    pub fn attach_console(self, card: u32, opts: &AttachOptions) -> Result<ConsoleSession> {
        let mut s = ConsoleSession {
            client: self,
            card,
            queued: std::collections::VecDeque::new(),
            attached: None,
        };
        match s.request(Request::ConsoleAttach {
            card,
            mode: opts.mode,
            replay: opts.replay,
            force: opts.force,
            client: opts.client.clone(),
            size: opts.size,
        })? {
            Response::ConsoleAttached(a) => {
                s.attached = Some(a);
                Ok(s)
            }
            other => Err(unexpected("console_attach", &other)),
        }
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
    /// Scrollback bytes to replay at most (`None`: all, `Some(0)`: none).
    pub replay: Option<u64>,
    /// Take the console read-write from whoever holds it.
    pub force: bool,
    /// What to call this client (shown to others).
    pub client: Option<String>,
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
}

/// A connection attached to one card's console: its output and notices
/// arrive as [`ConsoleEvent`]s, input and window sizes go the other way.
#[derive(Debug)]
pub struct ConsoleSession {
    client: Client,
    card: u32,
    /// Console frames that arrived while waiting for an answer.
    queued: std::collections::VecDeque<ConsoleEvent>,
    attached: Option<ConsoleAttached>,
}

impl ConsoleSession {
    /// What the attach granted (mode, replay size, pty, writer).
    #[must_use]
    pub fn attached(&self) -> Option<&ConsoleAttached> {
        self.attached.as_ref()
    }

    /// Bounds every read and write (`None`: block).
    pub fn set_timeout(&mut self, timeout: Option<Duration>) -> Result<()> {
        self.client.set_timeout(timeout)
    }

    /// The connection's socket (to wait for readability in an event loop;
    /// [`ConsoleSession::next_event`] then reads without blocking long).
    #[must_use]
    pub fn as_raw_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.client.stream)
    }

    fn request(&mut self, request: Request) -> Result<Response> {
        let id = self.client.send(request)?;
        loop {
            let frame = self.client.next_frame()?;
            match frame.body {
                ServerBody::Error(e) if frame.id.is_none() || frame.id == Some(id) => {
                    return Err(ClientError::Refused(e));
                }
                ServerBody::Ok(r) if frame.id == Some(id) => return Ok(r),
                ServerBody::Console(c) if c.card == self.card => self.queued.push_back(c.event),
                _ => {}
            }
        }
    }

    /// Types `data` (read-write only); returns once mpssd handed it to the
    /// console.
    pub fn send_input(&mut self, data: &[u8]) -> Result<u64> {
        match self.request(Request::ConsoleInput {
            card: self.card,
            data: Bytes(data.to_vec()),
        })? {
            Response::ConsoleInput { bytes, .. } => Ok(bytes),
            other => Err(unexpected("console_input", &other)),
        }
    }

    /// Tells the card the window's size (read-write only).
    pub fn resize(&mut self, cols: u16, rows: u16) -> Result<()> {
        match self.request(Request::ConsoleResize {
            card: self.card,
            cols,
            rows,
        })? {
            Response::ConsoleResized { .. } => Ok(()),
            other => Err(unexpected("console_resize", &other)),
        }
    }

    /// The next output or notice.
    pub fn next_event(&mut self) -> Result<ConsoleEvent> {
        if let Some(e) = self.queued.pop_front() {
            return Ok(e);
        }
        loop {
            let frame = self.client.next_frame()?;
            match frame.body {
                ServerBody::Console(c) if c.card == self.card => return Ok(c.event),
                ServerBody::Error(e) if frame.id.is_none() => return Err(ClientError::Refused(e)),
                _ => {}
            }
        }
    }

    /// Detaches; the connection can be used for other requests.
    pub fn detach(mut self) -> Result<Client> {
        match self.request(Request::ConsoleDetach { card: self.card })? {
            Response::ConsoleDetached { .. } => Ok(self.client),
            other => Err(unexpected("console_detach", &other)),
        }
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
