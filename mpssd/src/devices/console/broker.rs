//! The console broker of one card: it outlives the virtio device (which
//! comes and goes with resets), so clients stay attached, the scrollback
//! spans reboots, and the log is one stream.
//!
//! - Output: the data thread [`Broker::publish`]es what the card printed:
//!   into the scrollback (replayed on attach, the crash bundle's
//!   `console.log`), the console log, and a broadcast every attached
//!   client forwards from. Each chunk carries its offset in the card's
//!   output, so a client that falls behind the broadcast is told exactly
//!   how many bytes it missed. Nothing here waits for a client.
//! - Input: the one read-write client's bytes go into a bounded inbox the
//!   data thread empties only while the card has receive buffers posted;
//!   a full inbox makes the client's request wait (bounded), so a card
//!   that does not read its console stops its clients, never grows a
//!   buffer.
//! - One writer: a second read-write attach is refused with who holds it,
//!   unless it forces: then the holder's attachment ends (`taken_over`,
//!   naming who took it) and the answer names the holder it was taken
//!   from.
//! - Ends: an attachment ends from mpssd's side with a reason
//!   ([`EndReason`]): taken over, the console device gone from under
//!   mpssd, mpssd stopping, or (watched by the forwarder) the card down
//!   for good. The end is delivered on a channel of its own, never lost
//!   behind queued notices.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use mpssd_proto::{
    Bytes, CONSOLE_CHUNK, CardStatus, ConsoleClient, ConsoleEvent, ConsoleMode, EndReason, ErrorBody,
    ErrorCode, Replay, ServerFrame, SupervisorState, WindowSize, unix_ms,
};
use tokio::sync::{Notify, broadcast, mpsc, oneshot, watch};

use super::log::ConsoleLog;
use crate::config::ConsoleConfig;
use crate::devices::dataplane::{Waker, lock};

/// Output chunks kept for clients that fall behind.
pub const OUTPUT_BACKLOG: usize = 512;
/// Bytes of input waiting for the card, at most.
pub const INBOX_BYTES: usize = 64 << 10;
/// Notices (mode, device) queued for one client.
const NOTICES: usize = 32;

/// A piece of the card's output: bytes `start .. start + data.len()` of
/// everything it printed since mpssd started.
#[derive(Debug, Clone)]
pub struct Chunk {
    pub start: u64,
    pub data: Arc<[u8]>,
}

#[derive(Debug)]
struct Client {
    who: ConsoleClient,
    notices: mpsc::Sender<ConsoleEvent>,
    end: oneshot::Sender<ConsoleEvent>,
}

impl Client {
    fn end(self, reason: EndReason, by: Option<ConsoleClient>, message: String) {
        let _ = self.end.send(ConsoleEvent::Ended { reason, by, message });
    }
}

#[derive(Debug)]
struct State {
    scrollback: VecDeque<u8>,
    scrollback_max: usize,
    /// Bytes ever published.
    total: u64,
    log: Option<ConsoleLog>,
    clients: BTreeMap<u64, Client>,
    writer: Option<u64>,
    next_id: u64,
    device_up: bool,
    inbox: VecDeque<u8>,
    /// A window size for the data thread to pass to the card.
    resize: Option<WindowSize>,
}

/// What an attach asks.
#[derive(Debug, Clone)]
pub struct AttachRequest {
    pub mode: ConsoleMode,
    pub force: bool,
    /// How much scrollback to replay (`None`: all).
    pub replay: Option<Replay>,
    pub who: ConsoleClient,
    pub size: Option<WindowSize>,
}

/// A granted attachment: what the answer says and what the forwarder
/// sends.
#[derive(Debug)]
pub struct Attachment {
    pub id: u64,
    pub answer: mpssd_proto::ConsoleAttached,
    replay: Vec<u8>,
    next: u64,
    output: broadcast::Receiver<Chunk>,
    notices: mpsc::Receiver<ConsoleEvent>,
    end: oneshot::Receiver<ConsoleEvent>,
}

/// One card's console broker.
#[derive(Debug)]
pub struct Broker {
    card: u32,
    pty: Option<String>,
    state: Mutex<State>,
    output: broadcast::Sender<Chunk>,
    /// Input was taken from the inbox: senders waiting for room retry.
    space: Notify,
    /// Wakes the data thread (input queued, a resize).
    kick: Arc<Waker>,
}

impl Broker {
    /// A broker for card `card`, its pty at `pty` (if it has one), logging
    /// to `log` (if enabled).
    #[must_use]
    pub fn new(
        card: u32,
        pty: Option<String>,
        cfg: &ConsoleConfig,
        log: Option<ConsoleLog>,
        kick: Arc<Waker>,
    ) -> Self {
        Self {
            card,
            pty,
            state: Mutex::new(State {
                scrollback: VecDeque::new(),
                scrollback_max: cfg.scrollback_bytes,
                total: 0,
                log,
                clients: BTreeMap::new(),
                writer: None,
                next_id: 1,
                device_up: false,
                inbox: VecDeque::new(),
                resize: None,
            }),
            output: broadcast::Sender::new(OUTPUT_BACKLOG),
            space: Notify::new(),
            kick,
        }
    }

    #[must_use]
    pub fn card(&self) -> u32 {
        self.card
    }

    #[must_use]
    pub fn pty(&self) -> Option<&str> {
        self.pty.as_deref()
    }

    /// The waker of the data thread.
    #[must_use]
    pub fn kick(&self) -> &Arc<Waker> {
        &self.kick
    }

    /// Applies a reloaded configuration (scrollback size, log limits).
    pub fn configure(&self, cfg: &ConsoleConfig) {
        let mut s = lock(&self.state);
        s.scrollback_max = cfg.scrollback_bytes;
        let excess = s.scrollback.len().saturating_sub(cfg.scrollback_bytes);
        s.scrollback.drain(..excess);
        if let Some(l) = s.log.as_mut() {
            l.set_limits(cfg.log_max_bytes, cfg.log_keep);
        }
    }

    /// The card printed `bytes` (from the data thread).
    pub fn publish(&self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let mut s = lock(&self.state);
        let keep = s.scrollback_max;
        if bytes.len() >= keep {
            s.scrollback.clear();
            s.scrollback.extend(&bytes[bytes.len() - keep..]);
        } else {
            let excess = (s.scrollback.len() + bytes.len()).saturating_sub(keep);
            s.scrollback.drain(..excess);
            s.scrollback.extend(bytes);
        }
        if let Some(l) = s.log.as_mut() {
            l.append(bytes);
        }
        let start = s.total;
        s.total += bytes.len() as u64;
        // Sent under the lock: an attach sees each chunk either in its
        // replay or on its receiver, never both, never neither.
        let _ = self.output.send(Chunk {
            start,
            data: Arc::from(bytes),
        });
    }

    /// The last `max` bytes the card printed.
    #[must_use]
    pub fn tail(&self, max: usize) -> Vec<u8> {
        let s = lock(&self.state);
        let skip = s.scrollback.len().saturating_sub(max);
        s.scrollback.iter().skip(skip).copied().collect()
    }

    /// Bytes the card printed since mpssd started.
    #[must_use]
    pub fn total(&self) -> u64 {
        lock(&self.state).total
    }

    /// Attached clients.
    #[must_use]
    pub fn clients(&self) -> usize {
        lock(&self.state).clients.len()
    }

    /// The read-write client, if any.
    #[must_use]
    pub fn writer(&self) -> Option<ConsoleClient> {
        let s = lock(&self.state);
        s.writer.and_then(|w| s.clients.get(&w)).map(|c| c.who.clone())
    }

    /// Attaches a client.
    pub fn attach(&self, req: AttachRequest) -> Result<Attachment, ErrorBody> {
        let mut s = lock(&self.state);
        let id = s.next_id;
        s.next_id += 1;
        let mut taken_from = None;
        if req.mode == ConsoleMode::ReadWrite {
            if let Some(holder) = s.writer {
                let Some(h) = s.clients.get(&holder) else {
                    return Err(ErrorBody::new(
                        ErrorCode::Internal,
                        "the console's writer is unknown",
                    ));
                };
                if !req.force {
                    return Err(ErrorBody::new(
                        ErrorCode::ConsoleBusy,
                        format!(
                            "mic{}'s console is held read-write by {} since {}; attach read_only, or force",
                            self.card,
                            h.who,
                            mpssd_proto::timefmt::rfc3339_ms(h.who.since_ms)
                        ),
                    ));
                }
                if let Some(h) = s.clients.remove(&holder) {
                    log::info!(
                        target: "mpssd",
                        "mic{}: console taken read-write by {} from {}",
                        self.card,
                        req.who,
                        h.who
                    );
                    taken_from = Some(h.who.clone());
                    let message = format!("{} took mic{}'s console read-write (forced)", req.who, self.card);
                    h.end(EndReason::TakenOver, Some(req.who.clone()), message);
                }
            }
            s.writer = Some(id);
            if let Some(size) = req.size {
                s.resize = Some(size);
                self.kick.wake();
            }
        }
        let skip = match req.replay {
            None => 0,
            Some(Replay::Bytes(n)) => s
                .scrollback
                .len()
                .saturating_sub(usize::try_from(n).unwrap_or(usize::MAX)),
            Some(Replay::Lines(n)) => tail_lines(&s.scrollback, n),
        };
        let replay: Vec<u8> = s.scrollback.iter().skip(skip).copied().collect();
        let (tx, notices) = mpsc::channel(NOTICES);
        let (end_tx, end) = oneshot::channel();
        let writer = s
            .writer
            .filter(|&w| w != id)
            .and_then(|w| s.clients.get(&w))
            .map(|c| c.who.clone());
        s.clients.insert(
            id,
            Client {
                who: req.who,
                notices: tx,
                end: end_tx,
            },
        );
        let answer = mpssd_proto::ConsoleAttached {
            card: self.card,
            mode: req.mode,
            replay_bytes: replay.len() as u64,
            pty: self.pty.clone(),
            device_up: s.device_up,
            writer,
            taken_from,
        };
        Ok(Attachment {
            id,
            answer,
            replay,
            next: s.total,
            output: self.output.subscribe(),
            notices,
            end,
        })
    }

    /// Detaches client `id` (giving the console up if it held it).
    pub fn detach(&self, id: u64) {
        let mut s = lock(&self.state);
        s.clients.remove(&id);
        if s.writer == Some(id) {
            s.writer = None;
        }
    }

    /// Ends every attachment (`reason`, `message`): they are told and
    /// detached; clients may attach again.
    pub fn end_all(&self, reason: EndReason, message: &str) {
        let mut s = lock(&self.state);
        s.writer = None;
        for (_, c) in std::mem::take(&mut s.clients) {
            c.end(reason, None, message.to_owned());
        }
    }

    fn check_writer(&self, id: u64) -> Result<(), ErrorBody> {
        let s = lock(&self.state);
        match s.clients.get(&id) {
            None => Err(ErrorBody::new(
                ErrorCode::NotAttached,
                format!("not attached to mic{}'s console", self.card),
            )),
            Some(_) if s.writer == Some(id) => Ok(()),
            Some(_) => Err(ErrorBody::new(
                ErrorCode::ReadOnly,
                format!("attached to mic{}'s console read-only", self.card),
            )),
        }
    }

    /// Types `data` for client `id` (the writer). Waits, at most `limit`,
    /// while the inbox is full; the error says how much was taken.
    pub async fn input(&self, id: u64, data: &[u8], limit: Duration) -> Result<u64, ErrorBody> {
        self.check_writer(id)?;
        // TIMEOUT: `limit` (daemon.client_timeout) for the card to take it.
        let deadline = tokio::time::Instant::now() + limit;
        let mut at = 0;
        loop {
            let notified = self.space.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let took = {
                let mut s = lock(&self.state);
                let room = INBOX_BYTES.saturating_sub(s.inbox.len());
                let take = room.min(data.len() - at);
                s.inbox.extend(&data[at..at + take]);
                take
            };
            if took > 0 {
                at += took;
                self.kick.wake();
            }
            if at == data.len() {
                return Ok(at as u64);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(ErrorBody::new(
                    ErrorCode::ConsoleBusy,
                    format!(
                        "mic{} took {at} of {} bytes within {limit:?}: the card is not reading its console",
                        self.card,
                        data.len()
                    ),
                ));
            }
        }
    }

    /// The writer's window changed.
    pub fn resize(&self, id: u64, size: WindowSize) -> Result<(), ErrorBody> {
        self.check_writer(id)?;
        lock(&self.state).resize = Some(size);
        self.kick.wake();
        Ok(())
    }

    /// Whether input waits for the card (data thread).
    #[must_use]
    pub fn has_input(&self) -> bool {
        !lock(&self.state).inbox.is_empty()
    }

    /// Copies waiting input into `buf` without taking it (data thread);
    /// [`Broker::consume_input`] takes what the card accepted.
    pub fn peek_input(&self, buf: &mut [u8]) -> usize {
        let s = lock(&self.state);
        let n = buf.len().min(s.inbox.len());
        for (d, b) in buf.iter_mut().zip(s.inbox.iter()).take(n) {
            *d = *b;
        }
        n
    }

    /// The card took `n` bytes of input.
    pub fn consume_input(&self, n: usize) {
        let mut s = lock(&self.state);
        let n = n.min(s.inbox.len());
        s.inbox.drain(..n);
        drop(s);
        self.space.notify_waiters();
    }

    /// A pending window size (data thread).
    pub fn take_resize(&self) -> Option<WindowSize> {
        lock(&self.state).resize.take()
    }

    /// The card's console device came up or went down.
    pub fn device(&self, up: bool, reason: &str) {
        let mut s = lock(&self.state);
        if s.device_up == up {
            return;
        }
        s.device_up = up;
        if !up {
            // Input typed for a card that went away is not kept for the next.
            s.inbox.clear();
            self.space.notify_waiters();
        }
        for c in s.clients.values() {
            let _ = c.notices.try_send(ConsoleEvent::Device {
                up,
                reason: reason.to_owned(),
            });
        }
    }
}

impl Attachment {
    /// Sends the replay, then live output and notices, as frames into
    /// `out` until the attachment ends (from `broker`'s side, or the card
    /// going down for good by its `status`) or `out` closes. Waits for
    /// room in `out` (the connection's bounded queue); meanwhile the
    /// broadcast runs on, and what this client misses is reported as
    /// `lagged`.
    pub async fn forward(
        mut self,
        broker: Arc<Broker>,
        out: mpsc::Sender<Vec<u8>>,
        mut status: Option<watch::Receiver<CardStatus>>,
    ) {
        let card = broker.card;
        let frame = |e: ConsoleEvent| mpssd_proto::encode(&ServerFrame::console(card, e));
        for piece in self.replay.chunks(CONSOLE_CHUNK) {
            let f = frame(ConsoleEvent::Output {
                data: Bytes::from(piece),
                replay: true,
            });
            if out.send(f).await.is_err() {
                return;
            }
        }
        self.replay = Vec::new();
        let mut active = status
            .as_mut()
            .is_some_and(|s| is_active(s.borrow_and_update().supervisor));
        loop {
            let f = tokio::select! {
                biased;
                e = &mut self.end => {
                    if let Ok(e) = e {
                        let _ = out.send(frame(e)).await;
                    }
                    return;
                }
                down = watch_down(&mut status, &mut active) => {
                    broker.detach(self.id);
                    let _ = out.send(frame(ConsoleEvent::Ended {
                        reason: EndReason::CardDown,
                        by: None,
                        message: format!("mic{card} is down ({down}); mpssd is not booting it again"),
                    })).await;
                    return;
                }
                n = self.notices.recv() => match n {
                    Some(e) => vec![frame(e)],
                    // Detached: the end (if any) comes first, being biased.
                    None => return,
                },
                c = self.output.recv() => match c {
                    Ok(chunk) => self.frames(&chunk, &frame),
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            };
            for f in f {
                if out.send(f).await.is_err() {
                    return;
                }
            }
        }
    }

    fn frames(&mut self, chunk: &Chunk, frame: &impl Fn(ConsoleEvent) -> Vec<u8>) -> Vec<Vec<u8>> {
        let mut v = Vec::new();
        let end = chunk.start + chunk.data.len() as u64;
        if end <= self.next {
            return v;
        }
        if chunk.start > self.next {
            v.push(frame(ConsoleEvent::Lagged {
                missed: chunk.start - self.next,
            }));
            self.next = chunk.start;
        }
        let from = (self.next - chunk.start) as usize;
        for piece in chunk.data[from..].chunks(CONSOLE_CHUNK) {
            v.push(frame(ConsoleEvent::Output {
                data: Bytes::from(piece),
                replay: false,
            }));
        }
        self.next = end;
        v
    }
}

/// A card on its way somewhere (booting, running, shutting down,
/// resetting): one that later rests down went down.
fn is_active(s: SupervisorState) -> bool {
    use SupervisorState as S;
    matches!(
        s,
        S::Running | S::ShuttingDown | S::StoppingDevices | S::Resetting | S::Booting | S::Backoff
    )
}

/// Waits until the card goes from active to resting down (offline with
/// nothing to boot it: idle, crash loop, failed reset); its state. Pends
/// forever without a watch (or once the supervisor is gone).
async fn watch_down(status: &mut Option<watch::Receiver<CardStatus>>, active: &mut bool) -> &'static str {
    use SupervisorState as S;
    let Some(rx) = status.as_mut() else {
        return std::future::pending().await;
    };
    loop {
        if rx.changed().await.is_err() {
            return std::future::pending().await;
        }
        let now = rx.borrow_and_update().supervisor;
        if *active && matches!(now, S::Idle | S::CrashLoop | S::ResetFailed) {
            return now.as_str();
        }
        *active = is_active(now);
    }
}

/// Where the last `n` lines of `buf` start, as `tail -n` counts them (an
/// unfinished last line is one).
fn tail_lines(buf: &VecDeque<u8>, n: u64) -> usize {
    if n == 0 {
        return buf.len();
    }
    let mut seen = 0;
    // A final newline ends the last line; it does not start another.
    let end = buf.len() - usize::from(buf.back() == Some(&b'\n'));
    for i in (0..end).rev() {
        if buf[i] == b'\n' {
            seen += 1;
            if seen == n {
                return i + 1;
            }
        }
    }
    0
}

/// Who a control-socket peer is.
#[must_use]
pub fn client_info(cred: Option<(Option<u32>, u32)>, name: Option<String>) -> ConsoleClient {
    ConsoleClient {
        pid: cred.and_then(|c| c.0),
        uid: cred.map(|c| c.1),
        name: name.map(|n| n.chars().filter(|c| !c.is_control()).take(64).collect()),
        since_ms: unix_ms(SystemTime::now()),
    }
}

#[cfg(test)]
mod tests {
    use mpssd_proto::{ServerBody, decode_server};

    use super::*;

    fn broker() -> Broker {
        let cfg = ConsoleConfig {
            scrollback_bytes: 8,
            ..ConsoleConfig::default()
        };
        Broker::new(
            0,
            Some("/dev/pts/9".into()),
            &cfg,
            None,
            Arc::new(Waker::new().unwrap()),
        )
    }

    fn req(mode: ConsoleMode, force: bool, name: &str) -> AttachRequest {
        AttachRequest {
            mode,
            force,
            replay: None,
            who: client_info(Some((Some(7), 0)), Some(name.into())),
            size: None,
        }
    }

    fn events(frames: &[Vec<u8>]) -> Vec<ConsoleEvent> {
        frames
            .iter()
            .map(|f| match decode_server(&f[..f.len() - 1]).unwrap().body {
                ServerBody::Console(c) => c.event,
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn scrollback_keeps_the_end_and_replays_it() {
        let b = broker();
        b.publish(b"0123");
        b.publish(b"456789");
        assert_eq!(b.tail(100), b"23456789");
        assert_eq!(b.tail(3), b"789");
        b.publish(b"a very long line");
        assert_eq!(b.tail(100), b"ong line");
        assert_eq!(b.total(), 26);
        let mut r = req(ConsoleMode::ReadOnly, false, "x");
        r.replay = Some(Replay::Bytes(4));
        let a = b.attach(r).unwrap();
        assert_eq!(a.answer.replay_bytes, 4);
        assert_eq!(a.replay, b"line");
        assert_eq!(a.answer.pty.as_deref(), Some("/dev/pts/9"));
    }

    #[test]
    fn one_writer_unless_forced() {
        let b = broker();
        let first = b.attach(req(ConsoleMode::ReadWrite, false, "first")).unwrap();
        let e = b
            .attach(req(ConsoleMode::ReadWrite, false, "second"))
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::ConsoleBusy);
        assert!(
            e.message
                .starts_with("mic0's console is held read-write by \"first\" (pid 7, uid 0) since "),
            "{}",
            e.message
        );
        let ro = b.attach(req(ConsoleMode::ReadOnly, false, "watcher")).unwrap();
        assert_eq!(
            ro.answer.writer.as_ref().and_then(|w| w.name.as_deref()),
            Some("first")
        );
        let mut first = first;
        let forced = b.attach(req(ConsoleMode::ReadWrite, true, "third")).unwrap();
        assert_eq!(
            forced.answer.taken_from.as_ref().and_then(|w| w.name.as_deref()),
            Some("first"),
            "the answer names whom it was taken from"
        );
        match first.end.try_recv().unwrap() {
            ConsoleEvent::Ended { reason, by, message } => {
                assert_eq!(reason, EndReason::TakenOver);
                assert_eq!(by.unwrap().name.as_deref(), Some("third"));
                assert_eq!(
                    message,
                    "\"third\" (pid 7, uid 0) took mic0's console read-write (forced)"
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(b.writer().unwrap().name.as_deref(), Some("third"));
        assert_eq!(
            b.resize(first.id, WindowSize { cols: 1, rows: 1 })
                .unwrap_err()
                .code,
            ErrorCode::NotAttached,
            "the one taken over is detached"
        );
        assert_eq!(
            b.resize(ro.id, WindowSize { cols: 1, rows: 1 }).unwrap_err().code,
            ErrorCode::ReadOnly
        );
        b.detach(forced.id);
        assert_eq!(b.writer(), None);
        assert_eq!(b.clients(), 1);
        // A writer can attach again once the console is free.
        let again = b.attach(req(ConsoleMode::ReadWrite, false, "fourth")).unwrap();
        assert_eq!(again.answer.taken_from, None);
        b.end_all(EndReason::DaemonStopping, "mpssd is stopping");
        assert_eq!(b.clients(), 0);
        let mut again = again;
        assert!(matches!(
            again.end.try_recv().unwrap(),
            ConsoleEvent::Ended {
                reason: EndReason::DaemonStopping,
                ..
            }
        ));
    }

    fn status(s: SupervisorState) -> CardStatus {
        CardStatus::new(0, "mic0".into(), s, 0)
    }

    #[tokio::test]
    async fn a_card_going_down_for_good_ends_the_attachment_a_reboot_does_not() {
        use SupervisorState as S;
        let b = Arc::new(broker());
        let (st_tx, st_rx) = watch::channel(status(S::Idle));
        let a = b.attach(req(ConsoleMode::ReadWrite, false, "w")).unwrap();
        let (tx, mut rx) = mpsc::channel(64);
        let fwd = tokio::spawn(a.forward(Arc::clone(&b), tx, Some(st_rx)));
        // Idle at attach, then booted, then a reboot: still attached.
        for s in [
            S::Booting,
            S::Running,
            S::ShuttingDown,
            S::Resetting,
            S::Booting,
            S::Running,
        ] {
            st_tx.send(status(s)).unwrap();
            tokio::task::yield_now().await;
        }
        b.publish(b"still here");
        let ev = events(&[rx.recv().await.unwrap()]);
        assert!(
            matches!(&ev[0], ConsoleEvent::Output { data, .. } if data.0 == b"still here"),
            "{ev:?}"
        );
        // Halted: shut down, reset, idle.
        for s in [S::ShuttingDown, S::Resetting, S::Idle] {
            st_tx.send(status(s)).unwrap();
        }
        let ev = events(&[rx.recv().await.unwrap()]);
        match &ev[0] {
            ConsoleEvent::Ended { reason, message, .. } => {
                assert_eq!(*reason, EndReason::CardDown);
                assert_eq!(message, "mic0 is down (idle); mpssd is not booting it again");
            }
            other => panic!("{other:?}"),
        }
        fwd.await.unwrap();
        assert!(rx.recv().await.is_none(), "nothing after the end");
        assert_eq!(b.clients(), 0, "detached");
        assert_eq!(b.writer(), None);
    }

    #[test]
    fn replay_by_bytes_or_lines() {
        let cfg = ConsoleConfig::default();
        let b = Broker::new(0, None, &cfg, None, Arc::new(Waker::new().unwrap()));
        b.publish(b"one\ntwo\nthree\nroot@mic0:~# ");
        let replay = |r: Option<Replay>| {
            let mut q = req(ConsoleMode::ReadOnly, false, "r");
            q.replay = r;
            let a = b.attach(q).unwrap();
            assert_eq!(a.answer.replay_bytes, a.replay.len() as u64);
            String::from_utf8(a.replay).unwrap()
        };
        assert_eq!(replay(None), "one\ntwo\nthree\nroot@mic0:~# ");
        assert_eq!(
            replay(Some(Replay::Lines(1))),
            "root@mic0:~# ",
            "the prompt is a line"
        );
        assert_eq!(replay(Some(Replay::Lines(2))), "three\nroot@mic0:~# ");
        assert_eq!(replay(Some(Replay::Lines(9))), "one\ntwo\nthree\nroot@mic0:~# ");
        assert_eq!(replay(Some(Replay::Lines(0))), "");
        assert_eq!(replay(Some(Replay::Bytes(5))), "0:~# ");
        assert_eq!(replay(Some(Replay::Bytes(0))), "");
        b.publish(b"\n");
        assert_eq!(
            replay(Some(Replay::Lines(1))),
            "root@mic0:~# \n",
            "a final newline ends a line"
        );
        assert_eq!(replay(Some(Replay::Lines(2))), "three\nroot@mic0:~# \n");
    }

    #[tokio::test]
    async fn input_waits_for_room_and_gives_up_at_its_bound() {
        let b = Arc::new(broker());
        let w = b.attach(req(ConsoleMode::ReadWrite, false, "w")).unwrap();
        let big = vec![b'x'; INBOX_BYTES + 10];
        let e = b.input(w.id, &big, Duration::from_millis(50)).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::ConsoleBusy);
        assert!(
            e.message
                .contains(&format!("took {INBOX_BYTES} of {} bytes", big.len())),
            "{}",
            e.message
        );
        assert!(b.kick().clear(), "the data thread was woken");
        // The inbox is full: a sender waits, and gets its bytes in as the
        // card takes input.
        let b2 = Arc::clone(&b);
        let id = w.id;
        let sender = tokio::spawn(async move { b2.input(id, b"0123456789", Duration::from_secs(30)).await });
        tokio::task::yield_now().await;
        assert!(!sender.is_finished(), "no room: it waits");
        let mut taken = 0;
        while !sender.is_finished() {
            assert!(taken <= INBOX_BYTES, "the sender never got in");
            b.consume_input(1000);
            taken += 1000;
            tokio::task::yield_now().await;
        }
        assert_eq!(sender.await.unwrap().unwrap(), 10);
        let mut all = vec![0u8; INBOX_BYTES];
        let n = b.peek_input(&mut all);
        assert_eq!(&all[n - 10..n], b"0123456789", "queued behind what was there");
        // Read-only clients cannot type.
        let ro = b.attach(req(ConsoleMode::ReadOnly, false, "r")).unwrap();
        assert_eq!(
            b.input(ro.id, b"x", Duration::ZERO).await.unwrap_err().code,
            ErrorCode::ReadOnly
        );
        // A card going down drops what it did not take.
        b.device(true, "up");
        b.device(false, "the card resets");
        assert!(!b.has_input());
    }

    #[tokio::test]
    async fn a_client_that_falls_behind_is_told_how_much_it_missed() {
        let b = broker();
        b.publish(b"old");
        let a = b.attach(req(ConsoleMode::ReadOnly, false, "slow")).unwrap();
        let (tx, mut rx) = mpsc::channel(1024);
        for i in 0..OUTPUT_BACKLOG + 10 {
            b.publish(format!("{:04}", i % 10_000).as_bytes());
        }
        b.device(true, "the card's console is up");
        let fwd = tokio::spawn(a.forward(Arc::new(b), tx, None));
        let mut got = Vec::new();
        while got.len() < OUTPUT_BACKLOG + 3 {
            got.push(rx.recv().await.unwrap());
        }
        fwd.abort();
        let ev = events(&got);
        assert_eq!(
            ev[0],
            ConsoleEvent::Output {
                data: Bytes::from(&b"old"[..]),
                replay: true
            }
        );
        assert!(ev.contains(&ConsoleEvent::Device {
            up: true,
            reason: "the card's console is up".into()
        }));
        let lagged: Vec<u64> = ev
            .iter()
            .filter_map(|e| match e {
                ConsoleEvent::Lagged { missed } => Some(*missed),
                _ => None,
            })
            .collect();
        assert_eq!(lagged, [40], "10 chunks of 4 bytes fell out of the backlog");
        let live: Vec<u8> = ev
            .iter()
            .filter_map(|e| match e {
                ConsoleEvent::Output { data, replay: false } => Some(data.0.clone()),
                _ => None,
            })
            .flatten()
            .collect();
        assert_eq!(&live[..4], b"0010");
        assert_eq!(live.len(), 4 * OUTPUT_BACKLOG);
    }
}
