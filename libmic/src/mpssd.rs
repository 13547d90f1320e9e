//! The client of mpssd's control socket (feature `mpssd`):
//! `DIR/run/mpssd/control.sock`, the protocol of [`mpssd_proto`].
//!
//! Blocking, one request at a time; [`Client::subscribe`] turns the
//! connection into an event stream, [`Client::attach_console`] into a
//! card's console: a stream of output ([`ConsoleOutput`], ending with a
//! reason) and a writer ([`ConsoleInput`]), usable from two threads. A tool
//! that must not hang on a stopped or wedged mpssd gives the connection a
//! deadline ([`Client::connect_until`], [`Client::set_deadline`]): past it,
//! every call fails with [`ClientError::NoAnswer`]. [`status_until`] is the
//! one-shot question the tools ask, telling "mpssd is not running"
//! ([`ClientError::NotRunning`]) apart from every way a running one can fail.

use std::io::{self, Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use mpssd_proto::{
    BlockSwapped, Bytes, CardStatus, ClientFrame, ConsoleAttached, ConsoleClient, ConsoleEvent, ConsoleMode,
    CrashSummary, DaemonStatus, DeviceStatus, EndReason, ErrorBody, ErrorCode, Event, EventKind,
    ReloadResult, Replay, Request, Response, ServerBody, ServerFrame, SupervisorState, WindowSize, unix_ms,
};
use mpssd_proto::{DecodeError, FrameError, LineDecoder};

use crate::root::MicRoot;

/// Everything that can go wrong talking to mpssd.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// No control socket, or nothing listening on it: mpssd is not running
    /// for this root (or left a stale socket behind).
    #[error("mpssd is not running (no {}{})", path.display(), if source.kind() == io::ErrorKind::NotFound { "" } else { " listening" })]
    NotRunning {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot connect to mpssd at {}", path.display())]
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
    /// mpssd did not answer (or take the request) in time: it is stopped,
    /// wedged, or overloaded.
    #[error("mpssd did not answer within {} on {}", fmt_wait(*waited), path.display())]
    NoAnswer { path: PathBuf, waited: Duration },
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

    /// Whether this says mpssd is not running (rather than failing).
    #[must_use]
    pub fn is_not_running(&self) -> bool {
        matches!(self, ClientError::NotRunning { .. })
    }

    /// The OS error behind it, if there is one (EACCES on the socket).
    #[must_use]
    pub fn os_error(&self) -> Option<&io::Error> {
        match self {
            ClientError::NotRunning { source, .. }
            | ClientError::Connect { source, .. }
            | ClientError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// `850ms`, `2s`, `2.5s` (to the nearest millisecond: a budget counted
/// from a moment later than it was set reads as set).
fn fmt_wait(d: Duration) -> String {
    let ms = (d.as_micros() + 500) / 1000;
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{}.{}s", ms / 1000, ms % 1000 / 100)
    }
}

/// How often a connection to a full listen queue is tried again (it has
/// no readiness to wait on: a non-blocking connect to a Unix socket whose
/// queue is full fails with EAGAIN until a slot frees).
const CONNECT_RETRY: Duration = Duration::from_millis(10);

/// The most read from mpssd's socket at once (a console frame is about
/// 22 KB of JSON: one read, not three).
const READ_CHUNK: usize = 64 << 10;

pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// A connection to mpssd.
#[derive(Debug)]
pub struct Client {
    path: PathBuf,
    stream: UnixStream,
    decoder: LineDecoder,
    next_id: u64,
    /// Every read and write is over by then ([`Client::set_deadline`]).
    deadline: Option<Instant>,
    /// What the deadline was counted from: the error names the time given.
    started: Instant,
    /// The per-read bound of [`Client::set_timeout`].
    timeout: Option<Duration>,
    /// The socket's timeouts were last set for a deadline (and must be
    /// put back to `timeout` when there is none).
    armed: bool,
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
        let stream = UnixStream::connect(path).map_err(|source| connect_error(path, source))?;
        Ok(Self::over(path, stream))
    }

    /// Connects to the mpssd serving `root`, the connection (and, after
    /// [`Client::set_deadline`] with the same instant, everything else)
    /// over by `deadline`.
    pub fn connect_until(root: &MicRoot, deadline: Instant) -> Result<Self> {
        Self::connect_path_until(&root.mpssd_socket(), deadline)
    }

    /// [`Client::connect_until`] with the deadline `limit` from now (a
    /// [`ClientError::NoAnswer`] then names `limit` as the time it had).
    pub fn connect_within(root: &MicRoot, limit: Duration) -> Result<Self> {
        let now = Instant::now();
        Self::connect_path_between(&root.mpssd_socket(), now, now + limit)
    }

    /// [`Client::connect_until`] for the socket at `path`. A listen queue
    /// that is full (an mpssd that stopped accepting) is tried again until
    /// the deadline, then [`ClientError::NoAnswer`].
    pub fn connect_path_until(path: &Path, deadline: Instant) -> Result<Self> {
        Self::connect_path_between(path, Instant::now(), deadline)
    }

    /// Connects, the time given counted from `started`.
    fn connect_path_between(path: &Path, started: Instant, deadline: Instant) -> Result<Self> {
        use nix::errno::Errno;
        use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, connect, socket};
        let fail = |e: Errno| connect_error(path, io::Error::from_raw_os_error(e as i32));
        let addr = UnixAddr::new(path).map_err(fail)?;
        let fd = socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(fail)?;
        loop {
            match connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr) {
                Ok(()) => break,
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(ClientError::NoAnswer {
                            path: path.to_owned(),
                            waited: deadline.saturating_duration_since(started),
                        });
                    }
                    // TIMEOUT: the caller's deadline, checked above.
                    std::thread::sleep(CONNECT_RETRY.min(deadline - now));
                }
                Err(e) => return Err(fail(e)),
            }
        }
        let stream = UnixStream::from(fd);
        stream
            .set_nonblocking(false)
            .map_err(|e| connect_error(path, e))?;
        let mut c = Self::over(path, stream);
        c.started = started;
        c.deadline = Some(deadline);
        Ok(c)
    }

    fn over(path: &Path, stream: UnixStream) -> Self {
        Self {
            path: path.to_owned(),
            stream,
            decoder: LineDecoder::default(),
            next_id: 1,
            deadline: None,
            started: Instant::now(),
            timeout: None,
            armed: false,
        }
    }

    /// Bounds every read and write (`None`: block).
    pub fn set_timeout(&mut self, timeout: Option<Duration>) -> Result<()> {
        self.timeout = timeout;
        self.stream
            .set_read_timeout(timeout)
            .and_then(|()| self.stream.set_write_timeout(timeout))
            .map_err(|e| self.io(e))
    }

    /// Ends every read and write at `deadline` (`None`: only the timeout
    /// of [`Client::set_timeout`], if any): after it, calls fail with
    /// [`ClientError::NoAnswer`].
    pub fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.started = Instant::now();
        self.deadline = deadline;
    }

    /// Before a read or write: the socket's timeout for it, the smaller of
    /// the per-call timeout and what is left of the deadline.
    fn arm(&mut self) -> Result<()> {
        let Some(d) = self.deadline else {
            if std::mem::take(&mut self.armed) {
                let t = self.timeout;
                return self.set_timeout(t);
            }
            return Ok(());
        };
        self.armed = true;
        let left = d.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(self.no_answer());
        }
        let t = self.timeout.map_or(left, |t| t.min(left));
        self.stream
            .set_read_timeout(Some(t))
            .and_then(|()| self.stream.set_write_timeout(Some(t)))
            .map_err(|e| self.io(e))
    }

    fn no_answer(&self) -> ClientError {
        let waited = match (self.deadline, self.timeout) {
            // What it was given, not what it took (the same, give or take
            // the scheduler).
            (Some(d), _) => d.saturating_duration_since(self.started),
            (None, None) => self.started.elapsed(),
            (None, Some(t)) => t,
        };
        ClientError::NoAnswer {
            path: self.path.clone(),
            waited,
        }
    }

    fn io(&self, source: io::Error) -> ClientError {
        if matches!(source.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) {
            return self.no_answer();
        }
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
        self.arm()?;
        self.stream.write_all(&line).map_err(|e| self.io(e))?;
        Ok(id)
    }

    /// The next frame mpssd sends (an answer or an event).
    pub fn next_frame(&mut self) -> Result<ServerFrame> {
        let line = self.next_line()?;
        mpssd_proto::decode_server(line).map_err(ClientError::Decode)
    }

    /// The next frame's line, undecoded, where it was received.
    fn next_line(&mut self) -> Result<&[u8]> {
        while !self.decoder.ready().map_err(ClientError::Frame)? {
            self.read_some()?;
        }
        Ok(self
            .decoder
            .next_frame_ref()
            .map_err(ClientError::Frame)?
            .unwrap_or_default())
    }

    /// Reads what has come (waiting for it, until the deadline) straight
    /// into the decoder.
    fn read_some(&mut self) -> Result<()> {
        loop {
            self.arm()?;
            let want = READ_CHUNK.min(self.decoder.room().max(1));
            let stream = &self.stream;
            match self.decoder.fill(want, |b| (&*stream).read(b)) {
                Ok(0) => return Err(ClientError::Closed),
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io(e)),
            }
        }
    }

    /// A frame already received, or one read now without waiting; `None`
    /// if nothing whole has arrived (for an event loop that polls the
    /// socket).
    fn try_next_frame(&mut self) -> Result<Option<ServerFrame>> {
        use nix::errno::Errno;
        use nix::sys::socket::{MsgFlags, recv};
        loop {
            if self.decoder.ready().map_err(ClientError::Frame)? {
                let line = self.decoder.next_frame_ref().map_err(ClientError::Frame)?;
                return mpssd_proto::decode_server(line.unwrap_or_default())
                    .map(Some)
                    .map_err(ClientError::Decode);
            }
            let want = READ_CHUNK.min(self.decoder.room().max(1));
            let fd = std::os::fd::AsRawFd::as_raw_fd(&self.stream);
            match self.decoder.fill(want, |b| recv(fd, b, MsgFlags::MSG_DONTWAIT)) {
                Ok(0) => return Err(ClientError::Closed),
                Ok(_) | Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => return Ok(None),
                Err(e) => return Err(self.io(io::Error::from(e))),
            }
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
        let attached = self.attach_request(card, opts)?;
        self.into_console(card, attached)
    }

    /// Attaches read-write if no other client holds card `card`'s console
    /// read-write, else read-only (`opts.mode` and `opts.force` are not
    /// looked at): an operator's default. With the read-only fallback,
    /// mpssd's refusal (which names the writer) comes back beside the
    /// console.
    pub fn attach_console_or_watch(
        mut self,
        card: u32,
        opts: &AttachOptions,
    ) -> Result<(Console, Option<ErrorBody>)> {
        let rw = AttachOptions {
            mode: ConsoleMode::ReadWrite,
            force: false,
            ..opts.clone()
        };
        let ro = AttachOptions {
            mode: ConsoleMode::ReadOnly,
            ..rw.clone()
        };
        let busy = |e: &ClientError| e.code() == Some(ErrorCode::ConsoleBusy);
        let refused = match self.attach_request(card, &rw) {
            Ok(a) => return Ok((self.into_console(card, a)?, None)),
            Err(ClientError::Refused(e)) if e.code == ErrorCode::ConsoleBusy => e,
            Err(e) => return Err(e),
        };
        let a = self.attach_request(card, &ro)?;
        if a.writer.is_some() {
            return Ok((self.into_console(card, a)?, Some(refused)));
        }
        // The writer left between the two answers: take the console after
        // all (attaching again replaces the attachment); if another client
        // was quicker, stay read-only.
        match self.attach_request(card, &rw) {
            Ok(a) => Ok((self.into_console(card, a)?, None)),
            Err(e) if busy(&e) => {
                let a = self.attach_request(card, &ro)?;
                let ClientError::Refused(refused) = e else {
                    unreachable!("busy is a refusal")
                };
                Ok((self.into_console(card, a)?, Some(refused)))
            }
            Err(e) => Err(e),
        }
    }

    fn attach_request(&mut self, card: u32, opts: &AttachOptions) -> Result<ConsoleAttached> {
        match self.request(Request::ConsoleAttach {
            card,
            mode: opts.mode,
            replay: opts.replay,
            force: opts.force,
            client: opts.client.clone(),
            size: opts.size,
        })? {
            Response::ConsoleAttached(a) => Ok(a),
            other => Err(unexpected("console_attach", &other)),
        }
    }

    fn into_console(self, card: u32, attached: ConsoleAttached) -> Result<Console> {
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
                skip: None,
            },
            input,
        })
    }
}

/// A failed connect: [`ClientError::NotRunning`] when there is no socket
/// or nothing listens on it, else [`ClientError::Connect`].
fn connect_error(path: &Path, source: io::Error) -> ClientError {
    let path = path.to_owned();
    match source.raw_os_error() {
        Some(libc::ENOENT | libc::ECONNREFUSED | libc::ENOTDIR) => ClientError::NotRunning { path, source },
        _ => ClientError::Connect { path, source },
    }
}

/// The one-shot question of the tools: mpssd's status, everything (the
/// connection included) over by `deadline`.
pub fn status_until(root: &MicRoot, deadline: Instant) -> Result<DaemonStatus> {
    let mut c = Client::connect_until(root, deadline)?;
    c.status()
}

/// [`status_until`] `limit` from now.
pub fn status_within(root: &MicRoot, limit: Duration) -> Result<DaemonStatus> {
    let mut c = Client::connect_within(root, limit)?;
    c.status()
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
    /// [`skip_output`](Self::skip_output): the line an output frame of
    /// this card starts with, as mpssd encodes it.
    skip: Option<Vec<u8>>,
}

impl ConsoleOutput {
    /// The card's output is not wanted here (a write side whose viewer
    /// shows it): [`next_item`](Self::next_item) passes over output frames
    /// without decoding them (a card printing as fast as it can is
    /// otherwise decoded twice). Lines that merely look otherwise are
    /// decoded as ever; only [`ConsoleItem::Output`] is left out.
    pub fn skip_output(&mut self) {
        let prefix = mpssd_proto::encode(&ServerFrame {
            v: mpssd_proto::VERSION,
            id: None,
            body: ServerBody::Console(mpssd_proto::ConsoleFrame {
                card: self.card,
                event: ConsoleEvent::Output {
                    data: mpssd_proto::Bytes(Vec::new()),
                    replay: false,
                },
            }),
        });
        // `…"kind":"output",` of `…"kind":"output","data":""}}`.
        let cut = prefix
            .windows(8)
            .position(|w| w == b"\"data\":\"")
            .unwrap_or(prefix.len());
        self.skip = Some(prefix[..cut].to_vec());
    }

    /// Bounds the wait for the next item (`None`: block). Shared with the
    /// writer's socket.
    pub fn set_timeout(&mut self, timeout: Option<Duration>) -> Result<()> {
        self.client.set_timeout(timeout)
    }

    /// Ends the wait for items at `deadline` (`None`: only the timeout of
    /// [`ConsoleOutput::set_timeout`], if any): then
    /// [`ClientError::NoAnswer`]. Shared with the writer's socket.
    pub fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.client.set_deadline(deadline);
    }

    /// The socket (to wait for readability in an event loop).
    #[must_use]
    pub fn as_raw_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.client.stream)
    }

    /// The socket, borrowed (to poll it; [`ConsoleOutput::try_next_item`]
    /// then reads what came without waiting).
    #[must_use]
    pub fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.client.stream)
    }

    /// Whether a frame has already been received (with an earlier answer,
    /// in the same read): polling the socket would not show it. An event
    /// loop takes [`try_next_item`](Self::try_next_item) first while this
    /// holds.
    #[must_use]
    pub fn has_buffered(&self) -> bool {
        !self.ended && self.client.decoder.has_frame()
    }

    /// The next item if it has arrived, read without waiting; `None` if
    /// nothing whole is there yet. Call it until `None` each time the
    /// socket is readable.
    pub fn try_next_item(&mut self) -> Result<Option<ConsoleItem>> {
        if self.ended {
            return Err(ClientError::Closed);
        }
        loop {
            let frame = match self.client.try_next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => return Ok(None),
                Err(ClientError::Closed) => {
                    return Ok(Some(self.ended(ConsoleItem::Ended(ConsoleEnd::Disconnected))));
                }
                Err(e) => return Err(e),
            };
            if let Some(item) = self.item(frame) {
                return Ok(Some(self.ended(item)));
            }
        }
    }

    fn ended(&mut self, item: ConsoleItem) -> ConsoleItem {
        self.ended = matches!(item, ConsoleItem::Ended(_));
        item
    }

    /// What a frame tells this console's reader, if anything.
    fn item(&self, frame: ServerFrame) -> Option<ConsoleItem> {
        Some(match frame.body {
            ServerBody::Console(c) if c.card == self.card => match c.event {
                ConsoleEvent::Output { data, replay } => ConsoleItem::Output { data: data.0, replay },
                ConsoleEvent::Lagged { missed } => ConsoleItem::Lagged { missed },
                ConsoleEvent::Device { up, reason } => ConsoleItem::Device { up, reason },
                ConsoleEvent::Ended { reason, by, message } => {
                    ConsoleItem::Ended(ConsoleEnd::from_event(reason, by, message))
                }
            },
            ServerBody::Ok(Response::ConsoleDetached { card }) if card == self.card => {
                ConsoleItem::Ended(ConsoleEnd::Detached)
            }
            // The whole connection refused (mpssd stopping).
            ServerBody::Error(e) if frame.id.is_none() => ConsoleItem::Ended(match e.code {
                ErrorCode::ShuttingDown => ConsoleEnd::DaemonStopping { message: e.message },
                _ => ConsoleEnd::Disconnected,
            }),
            ServerBody::Error(e) => ConsoleItem::Refused(e),
            // Input taken, resizes done: nothing to tell.
            _ => return None,
        })
    }

    /// The next item; after [`ConsoleItem::Ended`], [`ClientError::Closed`].
    pub fn next_item(&mut self) -> Result<ConsoleItem> {
        if self.ended {
            return Err(ClientError::Closed);
        }
        loop {
            let line = match self.client.next_line() {
                Ok(l) => l,
                Err(ClientError::Closed) => {
                    return Ok(self.ended(ConsoleItem::Ended(ConsoleEnd::Disconnected)));
                }
                Err(e) => return Err(e),
            };
            if self.skip.as_ref().is_some_and(|p| line.starts_with(p)) {
                continue;
            }
            let frame = mpssd_proto::decode_server(line).map_err(ClientError::Decode)?;
            if self.skip.is_some()
                && matches!(&frame.body, ServerBody::Console(c) if matches!(c.event, ConsoleEvent::Output { .. }))
            {
                continue;
            }
            if let Some(item) = self.item(frame) {
                return Ok(self.ended(item));
            }
        }
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

    /// Ends the stream at `deadline`: then [`ClientError::NoAnswer`].
    pub fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.client.set_deadline(deadline);
    }

    /// The socket, for a caller that waits on it with others (`poll`).
    #[must_use]
    pub fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.client.stream)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    fn root() -> (tempfile::TempDir, MicRoot) {
        let d = tempfile::tempdir().unwrap();
        let r = MicRoot::new(d.path());
        std::fs::create_dir_all(r.mpssd_socket().parent().unwrap()).unwrap();
        (d, r)
    }

    #[test]
    fn no_socket_and_a_stale_one_are_not_running() {
        let (_d, r) = root();
        let soon = Instant::now() + Duration::from_secs(5);
        let e = status_until(&r, soon).unwrap_err();
        assert!(e.is_not_running(), "{e:?}");
        assert!(e.to_string().starts_with("mpssd is not running (no "), "{e}");
        // A socket left by an mpssd that died: nothing listens.
        drop(UnixListener::bind(r.mpssd_socket()).unwrap());
        let e = status_until(&r, soon).unwrap_err();
        assert!(e.is_not_running(), "{e:?}");
        assert!(e.to_string().ends_with(" listening)"), "{e}");
    }

    /// A deadline lifted (the stream of `micctl events` after its bounded
    /// start) no longer bounds the reads: an answer later than it was
    /// still arrives.
    #[test]
    fn a_lifted_deadline_bounds_nothing() {
        let (_d, r) = root();
        let l = UnixListener::bind(r.mpssd_socket()).unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            // A slow daemon: the answer comes well after the first deadline.
            std::thread::sleep(Duration::from_millis(400));
            s.write_all(&mpssd_proto::encode(&ServerFrame::ok(
                Some(1),
                Response::Subscribed,
            )))
            .unwrap();
        });
        let mut c = Client::connect_until(&r, Instant::now() + Duration::from_millis(200)).unwrap();
        c.send(Request::Subscribe).unwrap();
        c.set_deadline(None);
        let f = c.next_frame().unwrap();
        assert_eq!(f.body, ServerBody::Ok(Response::Subscribed));
        server.join().unwrap();
    }

    /// A listener that never reads (a stopped mpssd): the question ends at
    /// its deadline, connected or not (a full listen queue).
    #[test]
    fn a_daemon_that_does_not_answer_costs_the_deadline() {
        let (_d, r) = root();
        let _l = UnixListener::bind(r.mpssd_socket()).unwrap();
        let t = Instant::now();
        let e = status_until(&r, t + Duration::from_millis(300)).unwrap_err();
        assert!(matches!(e, ClientError::NoAnswer { .. }), "{e:?}");
        assert!(t.elapsed() < Duration::from_secs(5));
        assert!(
            e.to_string().starts_with("mpssd did not answer within 300ms on "),
            "{e}"
        );
        // Fill the queue: connections pile up unaccepted until connect
        // itself has to wait; it gives up at the deadline too.
        let mut held = Vec::new();
        let full = loop {
            match Client::connect_until(&r, Instant::now() + Duration::from_millis(50)) {
                Ok(c) => held.push(c),
                Err(e) => break e,
            }
            assert!(held.len() < 100_000, "the listen queue never filled");
        };
        assert!(matches!(full, ClientError::NoAnswer { .. }), "{full:?}");
    }

    /// A fake mpssd on `r`'s socket: for each request line it reads, the
    /// frames `answer` gives (by the request's `id` and name) are written.
    fn fake(
        r: &MicRoot,
        answer: impl Fn(u64, &Request) -> Vec<ServerFrame> + Send + 'static,
    ) -> std::thread::JoinHandle<()> {
        use std::io::BufRead as _;
        let listener = UnixListener::bind(r.mpssd_socket()).unwrap();
        std::thread::spawn(move || {
            let (conn, _) = listener.accept().unwrap();
            let mut out = conn.try_clone().unwrap();
            for line in std::io::BufReader::new(conn).lines().map_while(Result::ok) {
                let frame = mpssd_proto::decode_request(line.as_bytes()).unwrap();
                for answer in answer(frame.id.unwrap(), &frame.request) {
                    out.write_all(&mpssd_proto::encode(&answer)).unwrap();
                }
            }
        })
    }

    fn attached(mode: ConsoleMode, writer: Option<&str>) -> Response {
        Response::ConsoleAttached(ConsoleAttached {
            card: 0,
            mode,
            replay_bytes: 0,
            pty: None,
            device_up: true,
            writer: writer.map(|n| ConsoleClient {
                pid: Some(7),
                uid: Some(0),
                name: Some(n.into()),
                since_ms: 0,
            }),
            taken_from: None,
        })
    }

    fn mode_of(req: &Request) -> ConsoleMode {
        match req {
            Request::ConsoleAttach { mode, .. } => *mode,
            other => panic!("{other:?}"),
        }
    }

    /// Busy: read-only, the refusal beside it; the writer gone between the
    /// two answers: read-write after all.
    #[test]
    fn attach_or_watch_falls_back_to_read_only_and_says_who_writes() {
        let busy = || ErrorBody::new(ErrorCode::ConsoleBusy, "held read-write by \"w\"");
        let (_d, r) = root();
        let server = fake(&r, move |id, req| match mode_of(req) {
            ConsoleMode::ReadWrite => vec![ServerFrame::error(Some(id), busy())],
            ConsoleMode::ReadOnly => vec![ServerFrame::ok(
                Some(id),
                attached(ConsoleMode::ReadOnly, Some("w")),
            )],
        });
        let c = Client::connect(&r).unwrap();
        let (console, refused) = c
            .attach_console_or_watch(0, &AttachOptions::read_write())
            .unwrap();
        assert_eq!(console.attached.mode, ConsoleMode::ReadOnly);
        assert_eq!(console.attached.writer.unwrap().name.as_deref(), Some("w"));
        assert_eq!(refused.unwrap().code, ErrorCode::ConsoleBusy);
        drop(console.output);
        drop(console.input);
        server.join().unwrap();

        let (_d, r) = root();
        let tries = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let n = std::sync::Arc::clone(&tries);
        let server = fake(&r, move |id, req| {
            let first = n.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0;
            match mode_of(req) {
                ConsoleMode::ReadWrite if first => vec![ServerFrame::error(Some(id), busy())],
                m => vec![ServerFrame::ok(Some(id), attached(m, None))],
            }
        });
        let c = Client::connect(&r).unwrap();
        let (console, refused) = c
            .attach_console_or_watch(0, &AttachOptions::read_write())
            .unwrap();
        assert_eq!(
            console.attached.mode,
            ConsoleMode::ReadWrite,
            "the writer left: taken"
        );
        assert!(refused.is_none());
        assert_eq!(tries.load(std::sync::atomic::Ordering::SeqCst), 3);
        drop(console);
        server.join().unwrap();
    }

    /// An event loop's read: what has come, never a wait; a frame in two
    /// pieces is one item; answers to input are no items, refusals are;
    /// the close is the end.
    #[test]
    fn try_next_item_reads_what_came_and_never_waits() {
        let (_d, r) = root();
        let (to_test, arrived) = std::sync::mpsc::channel::<()>();
        let (go, from_test) = std::sync::mpsc::channel::<()>();
        let listener = UnixListener::bind(r.mpssd_socket()).unwrap();
        let server = std::thread::spawn(move || {
            let mut w = accept_attach(&listener);
            let out = mpssd_proto::encode(&ServerFrame::console(
                0,
                ConsoleEvent::Output {
                    data: Bytes(b"hello".to_vec()),
                    replay: false,
                },
            ));
            let (first, rest) = out.split_at(out.len() / 2);
            w.write_all(first).unwrap();
            to_test.send(()).unwrap();
            from_test.recv().unwrap();
            w.write_all(rest).unwrap();
            w.write_all(&mpssd_proto::encode(&ServerFrame::ok(
                Some(9),
                Response::ConsoleInput { card: 0, bytes: 1 },
            )))
            .unwrap();
            w.write_all(&mpssd_proto::encode(&ServerFrame::error(
                Some(10),
                ErrorBody::new(ErrorCode::ReadOnly, "read-only"),
            )))
            .unwrap();
            // The close follows (the connection is dropped).
        });
        let c = Client::connect(&r).unwrap();
        let mut console = c.attach_console(0, &AttachOptions::read_write()).unwrap();
        arrived.recv().unwrap();
        assert_eq!(console.output.try_next_item().unwrap(), None, "half a frame");
        go.send(()).unwrap();
        server.join().unwrap();
        let mut items = Vec::new();
        // Everything has been written and the server is gone: each call
        // returns at once.
        while !matches!(items.last(), Some(ConsoleItem::Ended(_))) {
            if let Some(i) = console.output.try_next_item().unwrap() {
                items.push(i);
            }
        }
        assert_eq!(
            items,
            [
                ConsoleItem::Output {
                    data: b"hello".to_vec(),
                    replay: false
                },
                ConsoleItem::Refused(ErrorBody::new(ErrorCode::ReadOnly, "read-only")),
                ConsoleItem::Ended(ConsoleEnd::Disconnected),
            ]
        );
        assert!(matches!(console.output.try_next_item(), Err(ClientError::Closed)));
    }

    /// A fake mpssd's side: takes one connection and answers its attach
    /// read-write; returns the connection to write the rest on.
    fn accept_attach(listener: &UnixListener) -> std::os::unix::net::UnixStream {
        use std::io::BufRead as _;
        let (conn, _) = listener.accept().unwrap();
        let mut w = conn.try_clone().unwrap();
        let mut line = String::new();
        std::io::BufReader::new(conn).read_line(&mut line).unwrap();
        let id = mpssd_proto::decode_request(line.trim_end().as_bytes())
            .unwrap()
            .id;
        w.write_all(&mpssd_proto::encode(&ServerFrame::ok(
            id,
            attached(ConsoleMode::ReadWrite, None),
        )))
        .unwrap();
        w
    }

    /// A write side that skips the output still gets everything else, in
    /// order; output in any encoding is left out.
    #[test]
    fn skip_output_passes_over_the_output_and_nothing_else() {
        let (_d, r) = root();
        let listener = UnixListener::bind(r.mpssd_socket()).unwrap();
        let server = std::thread::spawn(move || {
            let mut w = accept_attach(&listener);
            let output = |card, replay| {
                mpssd_proto::encode(&ServerFrame::console(
                    card,
                    ConsoleEvent::Output {
                        data: Bytes(b"hello".to_vec()),
                        replay,
                    },
                ))
            };
            w.write_all(&output(0, false)).unwrap();
            w.write_all(&output(0, true)).unwrap();
            w.write_all(&output(10, false)).unwrap();
            // The same output, its keys in another order.
            w.write_all(b"{\"console\":{\"kind\":\"output\",\"card\":0,\"data\":\"aGk=\"},\"v\":1}\n")
                .unwrap();
            w.write_all(&mpssd_proto::encode(&ServerFrame::console(
                0,
                ConsoleEvent::Device {
                    up: false,
                    reason: "the card resets".into(),
                },
            )))
            .unwrap();
            w.write_all(&mpssd_proto::encode(&ServerFrame::error(
                Some(10),
                ErrorBody::new(ErrorCode::ReadOnly, "read-only"),
            )))
            .unwrap();
        });
        let c = Client::connect(&r).unwrap();
        let mut console = c.attach_console(0, &AttachOptions::read_write()).unwrap();
        console.output.skip_output();
        server.join().unwrap();
        let items: Vec<_> = console.output.by_ref().map(Result::unwrap).collect();
        assert_eq!(
            items,
            [
                ConsoleItem::Device {
                    up: false,
                    reason: "the card resets".into()
                },
                ConsoleItem::Refused(ErrorBody::new(ErrorCode::ReadOnly, "read-only")),
                ConsoleItem::Ended(ConsoleEnd::Disconnected),
            ]
        );
    }
}
