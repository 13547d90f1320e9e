//! The control socket, `DIR/run/mpssd/control.sock` (mode 0660, group
//! `daemon.control_group`), speaking [`mpssd_proto`].
//!
//! Shaped after tokio's mini-redis server: the accept loop takes a
//! shutdown future, a semaphore caps the clients, and a broadcast tells
//! every connection to finish; `run` returns once they all have.
//!
//! Nothing a client does can stall the daemon or another client:
//! - a frame over [`MAX_FRAME`] is answered `frame_too_large` and the
//!   connection closed; garbage gets `bad_request` and the connection
//!   stays usable (line framing resynchronises at the next newline);
//! - a frame must be finished within `client_timeout` of its first byte,
//!   and a connection that is neither subscribed nor asking anything is
//!   closed after [`IDLE_TIMEOUT`];
//! - answers and events go through a bounded queue to a writer whose every
//!   write is bounded by `client_timeout`: a client that does not read is
//!   disconnected, never waited for; events never wait for anyone (a
//!   subscriber that falls behind the bus is told how many it missed);
//! - past `max_clients` a connection gets one `too_many_clients` frame,
//!   written without waiting, and is closed.
//!
//! Console attachments (`console_attach`): a forwarder task per attached
//! card sends the replay, then the card's output, into the connection's
//! queue, waiting for room; while it waits the broker's broadcast runs on
//! and what the client misses is reported as `lagged`. Input waits (at most
//! `client_timeout`) for the card to take it, and meanwhile the connection
//! reads nothing more from its client: back-pressure reaches the client's
//! socket. When mpssd stops, each attachment gets `gone` before the
//! `shutting_down` error.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context as _, Result};
use mpssd_proto::{
    ConsoleEvent, EndReason, ErrorBody, ErrorCode, EventKind, FrameError, LineDecoder, MAX_FRAME,
    ReloadResult, ReloadSource, Request, Response, ServerFrame, WindowSize, decode_request, encode, unix_ms,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, broadcast, mpsc};
use tokio::time::{Instant, sleep_until, timeout};

use crate::devices::block::device::SwapError;
use crate::devices::console::{Broker, broker};
use crate::shared::Shared;

/// A connection that is not subscribed and sends nothing for this long is
/// closed (so idle connections cannot hold every client slot).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Frames queued for one client before it counts as not reading.
pub const OUT_QUEUE: usize = 256;
/// How long the daemon waits for connections to finish when it stops.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Binds the control socket: removes a stale one, sets mode 0660 and the
/// group, and only then listens (until `listen` a connect is refused, so
/// no client gets in while the socket still has the umask's mode).
/// (Another live daemon is excluded earlier, by the lock file.)
pub fn bind(path: &Path, group: Option<&str>) -> Result<UnixListener> {
    use nix::sys::socket::{AddressFamily, Backlog, SockFlag, SockType, UnixAddr, listen, socket};
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => log::info!(target: "mpssd", "removed a stale {}", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing the stale {}", path.display())),
    }
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
    .context("creating the control socket")?;
    let addr = UnixAddr::new(path).with_context(|| format!("socket path {}", path.display()))?;
    nix::sys::socket::bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr)
        .with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("chmod 0660 {}", path.display()))?;
    if let Some(g) = group {
        let gid = nix::unistd::Group::from_name(g)
            .with_context(|| format!("looking up group {g:?}"))?
            .with_context(|| format!("no group named {g:?}"))?
            .gid;
        nix::unistd::chown(path, None, Some(gid)).with_context(|| format!("chgrp {g} {}", path.display()))?;
    }
    listen(&fd, Backlog::MAXCONN).with_context(|| format!("listening on {}", path.display()))?;
    UnixListener::from_std(std::os::unix::net::UnixListener::from(fd))
        .with_context(|| format!("registering {}", path.display()))
}

/// The server's parts (mini-redis's `Listener`).
struct Server {
    shared: Arc<Shared>,
    listener: UnixListener,
    limit: Arc<Semaphore>,
    notify_shutdown: broadcast::Sender<()>,
    /// Dropped by every connection when it ends; `recv` on the other side
    /// returns once all are gone.
    shutdown_complete: mpsc::Sender<()>,
}

/// Serves `listener` until `shutdown` completes, then tells every
/// connection to finish and waits for them ([`DRAIN_TIMEOUT`]).
pub async fn run(
    shared: Arc<Shared>,
    listener: UnixListener,
    path: PathBuf,
    shutdown: impl Future<Output = ()>,
) {
    let max = shared.config().daemon.max_clients as usize;
    let (notify_shutdown, _) = broadcast::channel(1);
    let (shutdown_complete, mut all_done) = mpsc::channel::<()>(1);
    let mut server = Server {
        shared,
        listener,
        limit: Arc::new(Semaphore::new(max)),
        notify_shutdown,
        shutdown_complete,
    };
    tokio::select! {
        () = server.accept_loop() => {}
        () = shutdown => {}
    }
    let Server {
        notify_shutdown,
        shutdown_complete,
        ..
    } = server;
    drop(notify_shutdown);
    drop(shutdown_complete);
    // TIMEOUT: DRAIN_TIMEOUT; connections that do not finish are dropped
    // with the runtime.
    let _ = timeout(DRAIN_TIMEOUT, all_done.recv()).await;
    let _ = std::fs::remove_file(&path);
}

impl Server {
    async fn accept_loop(&mut self) {
        let mut backoff = Duration::from_millis(10);
        loop {
            let stream = match self.listener.accept().await {
                Ok((s, _)) => {
                    backoff = Duration::from_millis(10);
                    s
                }
                Err(e) => {
                    // Out of fds or memory: wait, so the loop does not spin.
                    log::warn!(target: "mpssd", "control socket accept: {e}");
                    // TIMEOUT: a growing pause, at most 1 s.
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            };
            let Ok(permit) = Arc::clone(&self.limit).try_acquire_owned() else {
                refuse(&stream, &self.shared);
                continue;
            };
            let cred = stream
                .peer_cred()
                .ok()
                .map(|c| (c.pid().and_then(|p| u32::try_from(p).ok()), c.uid()));
            let conn = Connection {
                shared: Arc::clone(&self.shared),
                shutdown: self.notify_shutdown.subscribe(),
                _done: self.shutdown_complete.clone(),
                cred,
                attached: std::collections::BTreeMap::new(),
                starting: Vec::new(),
            };
            self.shared.clients.fetch_add(1, Ordering::Relaxed);
            let shared = Arc::clone(&self.shared);
            tokio::spawn(async move {
                conn.serve(stream).await;
                shared.clients.fetch_sub(1, Ordering::Relaxed);
                drop(permit);
            });
        }
    }
}

/// One `too_many_clients` frame, written only if it fits the socket buffer
/// at once, then the connection is dropped.
fn refuse(stream: &UnixStream, shared: &Shared) {
    let max = shared.config().daemon.max_clients;
    let frame = encode(&ServerFrame::error(
        None,
        ErrorBody::new(
            ErrorCode::TooManyClients,
            format!("mpssd serves at most {max} control clients (daemon.max_clients); try again later"),
        ),
    ));
    let _ = stream.try_write(&frame);
}

struct Connection {
    shared: Arc<Shared>,
    shutdown: broadcast::Receiver<()>,
    _done: mpsc::Sender<()>,
    /// The peer's pid and uid (SO_PEERCRED).
    cred: Option<(Option<u32>, u32)>,
    /// Console attachments, by card.
    attached: std::collections::BTreeMap<u32, Attached>,
    /// Attachments granted by the last answer: their forwarders start once
    /// the answer is queued (the replay follows the answer).
    starting: Vec<(u32, broker::Attachment)>,
}

/// One console attachment of a connection.
struct Attached {
    id: u64,
    broker: Arc<Broker>,
    forwarder: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        for (_, a) in std::mem::take(&mut self.attached) {
            a.broker.detach(a.id);
            if let Some(f) = a.forwarder {
                f.abort();
            }
        }
    }
}

/// Why a connection ends.
enum End {
    Closed,
    Error(ErrorBody),
    Quiet,
}

impl Connection {
    async fn serve(mut self, stream: UnixStream) {
        let client_timeout = self.shared.config().daemon.client_timeout;
        let (mut rd, wr) = stream.into_split();
        let (out, out_rx) = mpsc::channel::<Vec<u8>>(OUT_QUEUE);
        let writer = tokio::spawn(writer(wr, out_rx, client_timeout));
        let mut decoder = LineDecoder::new(MAX_FRAME);
        let mut events: Option<broadcast::Receiver<mpssd_proto::Event>> = None;
        let mut buf = vec![0u8; 8192];
        let mut idle_deadline = Instant::now() + IDLE_TIMEOUT;
        let mut frame_deadline: Option<Instant> = None;
        let end = loop {
            let streaming = events.is_some() || !self.attached.is_empty();
            let deadline = match (streaming, frame_deadline) {
                (_, Some(f)) => f,
                (false, None) => idle_deadline,
                (true, None) => Instant::now() + Duration::from_secs(3600),
            };
            let room = decoder.room().clamp(1, buf.len());
            tokio::select! {
                _ = self.shutdown.recv() => {
                    // The events sent before the stop (the daemon's own
                    // `stopping` among them) reach a subscriber before it
                    // is told: select! may have seen the stop first.
                    if let Some(rx) = events.as_mut() {
                        while let Ok(e) = rx.try_recv() {
                            if out.try_send(encode(&ServerFrame::event(e))).is_err() {
                                break;
                            }
                        }
                    }
                    for (&card, a) in &mut self.attached {
                        if let Some(f) = a.forwarder.take() {
                            f.abort();
                        }
                        let _ = out.try_send(encode(&ServerFrame::console(card, ConsoleEvent::Ended {
                            reason: EndReason::DaemonStopping,
                            by: None,
                            message: "mpssd is stopping".into(),
                        })));
                    }
                    break End::Error(ErrorBody::new(ErrorCode::ShuttingDown, "mpssd is stopping"));
                }
                // TIMEOUT: a partial frame must finish within client_timeout;
                // an idle, unsubscribed connection lasts IDLE_TIMEOUT.
                () = sleep_until(deadline) => {
                    break if frame_deadline.is_some() {
                        End::Error(ErrorBody::new(ErrorCode::Timeout, format!(
                            "a frame was not finished within {client_timeout:?}")))
                    } else {
                        End::Quiet
                    };
                }
                ev = recv_event(&mut events) => {
                    let frame = match ev {
                        Ok(e) => ServerFrame::event(e),
                        Err(broadcast::error::RecvError::Lagged(missed)) => ServerFrame::event(mpssd_proto::Event {
                            ts_ms: unix_ms(std::time::SystemTime::now()),
                            card: None,
                            kind: EventKind::Lagged { missed },
                        }),
                        Err(broadcast::error::RecvError::Closed) => break End::Closed,
                    };
                    if out.try_send(encode(&frame)).is_err() {
                        break End::Quiet;
                    }
                }
                r = rd.read(&mut buf[..room]) => {
                    let n = match r {
                        Ok(0) | Err(_) => break End::Closed,
                        Ok(n) => n,
                    };
                    decoder.push(&buf[..n]);
                    let whole = match self.frames(&mut decoder, &out, &mut events).await {
                        Ok(n) => n,
                        Err(end) => break end,
                    };
                    idle_deadline = Instant::now() + IDLE_TIMEOUT;
                    // A partial frame's bound runs from its first byte, or
                    // from when the frames before it were answered (the
                    // time spent answering them, e.g. waiting for a card
                    // to take input, is not the client's).
                    frame_deadline = match (decoder.has_partial(), whole) {
                        (false, _) => None,
                        (true, 0) => frame_deadline.or(Some(Instant::now() + client_timeout)),
                        (true, _) => Some(Instant::now() + client_timeout),
                    };
                }
            }
        };
        if let End::Error(e) = end {
            let _ = out.try_send(encode(&ServerFrame::error(None, e)));
        }
        for (_, a) in std::mem::take(&mut self.attached) {
            a.broker.detach(a.id);
            if let Some(f) = a.forwarder {
                f.abort();
            }
        }
        drop(out);
        // The writer ends once the queue is drained or a write times out.
        let _ = writer.await;
    }

    /// Answers every whole frame in `decoder`; how many there were.
    async fn frames(
        &mut self,
        decoder: &mut LineDecoder,
        out: &mpsc::Sender<Vec<u8>>,
        events: &mut Option<broadcast::Receiver<mpssd_proto::Event>>,
    ) -> Result<usize, End> {
        let mut whole = 0;
        loop {
            let line = match decoder.next_frame() {
                Ok(Some(l)) => l,
                Ok(None) => return Ok(whole),
                Err(FrameError::TooLarge { limit }) => {
                    return Err(End::Error(ErrorBody::new(
                        ErrorCode::FrameTooLarge,
                        format!("frame longer than {limit} bytes; closing the connection"),
                    )));
                }
            };
            whole += 1;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let answer = match decode_request(&line) {
                Err((id, e)) => ServerFrame::error(id, e.to_body()),
                Ok(frame) => {
                    let id = frame.id;
                    match self.answer(frame.request, events).await {
                        Ok(r) => ServerFrame::ok(id, r),
                        Err(e) => ServerFrame::error(id, e),
                    }
                }
            };
            let limit = self.shared.config().daemon.client_timeout;
            // TIMEOUT: daemon.client_timeout for room in the queue (a
            // console forwarder may have filled it).
            if !matches!(timeout(limit, out.send(encode(&answer))).await, Ok(Ok(()))) {
                // The client does not read its answers (the writer gave up
                // on it, or the queue stayed full).
                return Err(End::Quiet);
            }
            for (card, att) in std::mem::take(&mut self.starting) {
                if let Some(a) = self.attached.get_mut(&card) {
                    let status = self.shared.cards().get(&card).map(|h| h.status.clone());
                    a.forwarder = Some(tokio::spawn(att.forward(
                        Arc::clone(&a.broker),
                        out.clone(),
                        status,
                    )));
                }
            }
        }
    }

    async fn answer(
        &mut self,
        request: Request,
        events: &mut Option<broadcast::Receiver<mpssd_proto::Event>>,
    ) -> Result<Response, ErrorBody> {
        let card_known = |card: u32| {
            if self.shared.cards().contains_key(&card) {
                Ok(())
            } else {
                Err(ErrorBody::new(
                    ErrorCode::NoSuchCard,
                    format!(
                        "no card mic{card} (cards: {})",
                        self.shared
                            .cards()
                            .keys()
                            .map(|c| format!("mic{c}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ))
            }
        };
        match request {
            Request::Status => Ok(Response::Status(self.shared.status())),
            Request::CardStatus { card } => {
                card_known(card)?;
                Ok(Response::Card(self.shared.cards()[&card].snapshot()))
            }
            Request::Subscribe => {
                if events.is_none() {
                    *events = Some(self.shared.subscribe());
                }
                Ok(Response::Subscribed)
            }
            Request::ReloadConfig => match self.shared.reload(ReloadSource::Request).await {
                Ok(changed) => Ok(Response::Reloaded(ReloadResult { changed })),
                Err(e) => Err(ErrorBody::new(
                    ErrorCode::InvalidConfig,
                    format!("{e}; the running configuration stays in force"),
                )),
            },
            Request::ConsoleAttach {
                card,
                mode,
                replay,
                force,
                client,
                size,
            } => {
                card_known(card)?;
                self.attach(card, mode, replay, force, client, size)
            }
            Request::ConsoleInput { card, data } => {
                let (id, b) = self.attachment(card)?;
                let limit = self.shared.config().daemon.client_timeout;
                let bytes = b.input(id, &data, limit).await?;
                Ok(Response::ConsoleInput { card, bytes })
            }
            Request::ConsoleResize { card, cols, rows } => {
                let (id, b) = self.attachment(card)?;
                b.resize(id, WindowSize { cols, rows })?;
                Ok(Response::ConsoleResized { card })
            }
            Request::ConsoleDetach { card } => {
                self.attachment(card)?;
                if let Some(a) = self.attached.remove(&card) {
                    a.broker.detach(a.id);
                    if let Some(f) = a.forwarder {
                        f.abort();
                    }
                }
                Ok(Response::ConsoleDetached { card })
            }
            Request::BlockSwap { card, path } => {
                card_known(card)?;
                let Some(block) = self.shared.cards()[&card].view.block() else {
                    return Err(ErrorBody::new(
                        ErrorCode::NotAvailable,
                        format!("mic{card} has no disk backend"),
                    ));
                };
                crate::devices::card::swap_block(
                    &self.shared,
                    card,
                    block,
                    path.map(std::path::PathBuf::from),
                    "a control-socket request",
                )
                .await
                .map(Response::BlockSwapped)
                .map_err(|e| {
                    let code = match e {
                        SwapError::NoImage { .. } => ErrorCode::NotAvailable,
                        _ => ErrorCode::DeviceError,
                    };
                    ErrorBody::new(code, libmic::error::report(&e))
                })
            }
        }
    }

    /// The attachment of this connection to `card`'s console.
    fn attachment(&self, card: u32) -> Result<(u64, Arc<Broker>), ErrorBody> {
        self.attached
            .get(&card)
            .map(|a| (a.id, Arc::clone(&a.broker)))
            .ok_or_else(|| {
                ErrorBody::new(
                    ErrorCode::NotAttached,
                    format!("this connection is not attached to mic{card}'s console"),
                )
            })
    }

    fn attach(
        &mut self,
        card: u32,
        mode: mpssd_proto::ConsoleMode,
        replay: Option<mpssd_proto::Replay>,
        force: bool,
        client: Option<String>,
        size: Option<WindowSize>,
    ) -> Result<Response, ErrorBody> {
        let Some(broker) = self.shared.cards()[&card].view.console() else {
            return Err(ErrorBody::new(
                ErrorCode::NotAvailable,
                format!("mic{card} has no console"),
            ));
        };
        // Attaching again replaces this connection's attachment.
        if let Some(old) = self.attached.remove(&card) {
            old.broker.detach(old.id);
            if let Some(f) = old.forwarder {
                f.abort();
            }
        }
        let att = broker.attach(broker::AttachRequest {
            mode,
            force,
            replay,
            who: broker::client_info(self.cred, client),
            size,
        })?;
        let answer = att.answer.clone();
        self.attached.insert(
            card,
            Attached {
                id: att.id,
                broker,
                forwarder: None,
            },
        );
        self.starting.push((card, att));
        Ok(Response::ConsoleAttached(answer))
    }
}

async fn recv_event(
    events: &mut Option<broadcast::Receiver<mpssd_proto::Event>>,
) -> Result<mpssd_proto::Event, broadcast::error::RecvError> {
    match events {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Writes queued frames; every write bounded by `limit`. Ends when the
/// queue closes and is drained, or at the first failed or late write.
async fn writer(mut wr: OwnedWriteHalf, mut rx: mpsc::Receiver<Vec<u8>>, limit: Duration) {
    while let Some(frame) = rx.recv().await {
        // TIMEOUT: `limit` (daemon.client_timeout): a client that does not
        // read is dropped.
        match timeout(limit, wr.write_all(&frame)).await {
            Ok(Ok(())) => {}
            _ => return,
        }
    }
    let _ = timeout(limit, wr.shutdown()).await;
}
