//! The attached session: one poll loop over mpssd's socket, stdin, the
//! signals and the card's state, until something ends it.

use std::io::{self, Read as _};
use std::os::fd::AsFd;
use std::time::{Duration, Instant, SystemTime};

use libmic::mpssd::{
    Console, ConsoleAttached, ConsoleClient, ConsoleEnd, ConsoleItem, ConsoleMode, ConsoleOutput, ErrorBody,
    ErrorCode, unix_ms,
};
use libmic::{Card, MicState};
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;
use serde_json::{Value, json};

use super::args::{ConsoleArgs, Escape};
use super::end::End;
use super::out::{Matcher, Printer};
use super::writer::{Sent, Writer};
use super::{DRAIN_LIMIT, INPUT_CHUNK, PENDING_MAX, States, term};
use crate::output;

/// What is typed, and where it stands.
#[derive(Debug)]
struct Input {
    /// stdin is a terminal (raw mode, the escape key, a window size).
    interactive: bool,
    escape: Option<u8>,
    /// stdin is still read.
    open: bool,
    /// A script's stdin ended then.
    done_at: Option<Instant>,
    /// Typed and not handed to the writer yet.
    pending: Vec<u8>,
    /// Keystrokes were dropped and that was said; not again until the
    /// console's mode or device changes.
    told_dropped: bool,
}

/// The attached session.
#[derive(Debug)]
pub(super) struct Session {
    card: Card,
    conn: ConsoleOutput,
    writer: Writer,
    pub(super) out: Printer,
    attached: ConsoleAttached,
    /// Attached read-only because another client holds the console.
    refused: Option<ErrorBody>,
    mode: ConsoleMode,
    input: Input,
    until: Option<(String, Matcher)>,
    idle: Duration,
    /// `--timeout`: when, and how long it was.
    deadline: Option<(Instant, Duration)>,
    /// `--follow`: the card's state does not end the session.
    follow: bool,
    device_up: bool,
    card_state: MicState,
    /// The card is down: the end, and until when its last output and the
    /// removal of its console are read first.
    ending: Option<(Instant, End)>,
    last_output: Instant,
}

impl Session {
    pub(super) fn new(
        json: bool,
        args: &ConsoleArgs,
        card: Card,
        (console, refused): (Console, Option<ErrorBody>),
        interactive: bool,
        started: Instant,
    ) -> io::Result<Self> {
        let (attached, conn, input) = console.split();
        Ok(Self {
            out: Printer::new(card.name(), json),
            card,
            conn,
            writer: Writer::start(input)?,
            mode: attached.mode,
            device_up: attached.device_up,
            attached,
            refused,
            input: Input {
                interactive,
                escape: if interactive { args.escape.0 } else { None },
                // A read-only script has nothing to type.
                open: interactive || !args.read_only,
                done_at: None,
                pending: Vec::new(),
                told_dropped: false,
            },
            until: args.until.clone().map(|u| {
                let m = Matcher::new(&u);
                (u, m)
            }),
            idle: args.idle,
            deadline: args.timeout.map(|t| (started + t, t)),
            follow: args.follow,
            card_state: MicState::Online,
            ending: None,
            last_output: Instant::now(),
        })
    }

    fn name(&self) -> &str {
        self.card.name()
    }

    fn mode_words(&self) -> &'static str {
        match self.mode {
            ConsoleMode::ReadWrite => "read-write",
            ConsoleMode::ReadOnly => "read-only",
        }
    }

    /// `; ctrl-] detaches`, or nothing without an escape key.
    fn detach_hint(&self) -> String {
        Escape(self.input.escape)
            .spoken()
            .map_or_else(String::new, |k| format!("; {k} detaches"))
    }

    /// The attach line (one line: how, who else, the escape key), said on
    /// a terminal, and by a script only if it could not get the console.
    pub(super) fn announce(&mut self) {
        let a = self.attached.clone();
        if self.out.json() {
            self.out.record(
                "console_attached",
                json!({
                    "mode": self.mode.as_str(),
                    "pty": a.pty,
                    "device_up": self.device_up,
                    "replay_bytes": a.replay_bytes,
                    "writer": a.writer.as_ref().map(client_json),
                    "taken_from": a.taken_from.as_ref().map(client_json),
                    "escape": self.input.escape.map(|e| Escape(Some(e)).to_string()),
                }),
            );
            return;
        }
        if !self.input.interactive && self.refused.is_none() {
            if !self.device_up {
                // A script waits for the console before it types: say so.
                let msg = format!(
                    "{}'s console is not up yet; waiting for it (--timeout bounds the wait)",
                    self.name()
                );
                self.out.say("console-down", &msg);
            }
            return;
        }
        let how = match (&self.refused, &a.writer) {
            (Some(_), Some(w)) => format!(
                "read-only: {w} holds it read-write{} (--force takes it)",
                held_for(w)
            ),
            (Some(_), None) => "read-only: another client holds it read-write (--force takes it)".to_owned(),
            (None, Some(w)) if self.mode == ConsoleMode::ReadOnly => format!("read-only ({w} types)"),
            _ => match &a.taken_from {
                Some(from) => format!("read-write, taken from {from}"),
                None => self.mode_words().to_owned(),
            },
        };
        let pty = a.pty.map_or_else(String::new, |p| format!(", pty {p}"));
        let down = if self.device_up {
            ""
        } else {
            "; the console is not up yet"
        };
        let line = format!(
            "attached to {}'s console {how}{pty}{down}{}",
            self.name(),
            self.detach_hint()
        );
        self.out.say("attached", &line);
    }

    /// The last line, or the `console_end` record. A script that got its
    /// answer ends quietly.
    pub(super) fn finish(&mut self, end: &End) {
        let exit = end.exit();
        let message = end.message(self.name(), self.until.as_ref().map(|u| u.0.as_str()));
        if self.out.json() {
            self.out.record(
                "console_end",
                json!({ "end": end.name(), "message": message, "exit_code": exit.code() }),
            );
        } else if self.input.interactive || exit != crate::exit::Exit::Ok {
            // A signal is how the operator ended it, not a failure.
            let failed = exit != crate::exit::Exit::Ok && !matches!(end, End::Signal(_));
            self.out.last_words(&message, failed);
        }
    }

    /// The loop: until something ends the session.
    pub(super) fn run(&mut self, signals: &term::Signals, states: &States) -> End {
        loop {
            if let Some(end) = self.due() {
                return end;
            }
            let wait = self
                .next_deadline()
                .map(|d| d.saturating_duration_since(Instant::now()));
            let read_stdin = self.wants_stdin();
            let stdin = io::stdin();
            let mut fds = vec![
                PollFd::new(signals.as_fd(), PollFlags::POLLIN),
                PollFd::new(self.conn.as_fd(), PollFlags::POLLIN),
                PollFd::new(states.wake.as_fd(), PollFlags::POLLIN),
            ];
            if read_stdin {
                fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
            }
            // TIMEOUT: the nearest of --timeout, --idle and the drain of
            // an ending session; none: wait for the card, the operator or
            // a signal.
            // Frames that came with the attach answer (the scrollback, an
            // end) are in the reader's buffer, not on the socket: the poll
            // only looks, and the socket counts as ready.
            let buffered = self.conn.has_buffered();
            let timeout = if buffered {
                PollTimeout::ZERO
            } else {
                wait.map_or(PollTimeout::NONE, |w| {
                    // Rounded up: never woken just before the deadline.
                    PollTimeout::try_from(w.as_micros().div_ceil(1000)).unwrap_or(PollTimeout::MAX)
                })
            };
            match nix::poll::poll(&mut fds, timeout) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return End::Failed(anyhow::Error::from(io::Error::from(e)).context("poll")),
            }
            let ready: Vec<bool> = fds
                .iter()
                .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
                .collect();
            drop(fds);
            let ready = |i: usize| ready.get(i).copied().unwrap_or(false) || (i == 1 && buffered);
            let end = None
                .or_else(|| ready(0).then(|| self.signals(signals)).flatten())
                .or_else(|| ready(2).then(|| self.states(states)).flatten())
                .or_else(|| ready(1).then(|| self.socket()).flatten())
                .or_else(|| ready(3).then(|| self.stdin()).flatten())
                .or_else(|| self.flush_pending());
            if let Some(end) = end {
                return end;
            }
        }
    }

    fn wants_stdin(&self) -> bool {
        if !self.input.open || self.input.pending.len() >= PENDING_MAX {
            return false;
        }
        // A script types once the console is up; a terminal is always read
        // (the escape key).
        self.input.interactive || self.device_up
    }

    /// A script's answer is over once the card is quiet for `--idle` after
    /// everything was typed and taken.
    fn idle_deadline(&self) -> Option<Instant> {
        let i = &self.input;
        if i.interactive || self.idle.is_zero() || !i.pending.is_empty() || self.writer.busy() {
            return None;
        }
        Some(i.done_at?.max(self.last_output) + self.idle)
    }

    fn next_deadline(&self) -> Option<Instant> {
        [
            self.deadline.map(|d| d.0),
            self.ending.as_ref().map(|e| e.0),
            self.idle_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// An end whose time has come.
    fn due(&mut self) -> Option<End> {
        let now = Instant::now();
        if self.ending.as_ref().is_some_and(|e| now >= e.0) {
            return self.ending.take().map(|e| e.1);
        }
        if let Some((at, t)) = self.deadline {
            if now >= at {
                return Some(End::Timeout(t));
            }
        }
        if self.idle_deadline().is_some_and(|d| now >= d) {
            return Some(End::Idle);
        }
        None
    }

    /// `end`, unless the card is down after all (its state is read again:
    /// the watching thread's news may be behind).
    fn down_or(&self, end: End) -> End {
        match self.card.state() {
            Ok(s) if s != MicState::Online => self.card_down(s),
            _ => end,
        }
    }

    fn card_down(&self, state: MicState) -> End {
        End::CardDown {
            state,
            status: self.card.shutdown_status().ok(),
        }
    }

    fn signals(&mut self, signals: &term::Signals) -> Option<End> {
        loop {
            match signals.next() {
                Ok(None) => return None,
                Ok(Some(Signal::SIGWINCH)) => self.resize(),
                Ok(Some(Signal::SIGPIPE)) => {}
                Ok(Some(s)) => return Some(End::Signal(s)),
                Err(e) => return Some(End::Failed(anyhow::Error::from(e).context("reading signals"))),
            }
        }
    }

    /// The terminal's new size goes to the card (a read-write terminal's).
    fn resize(&mut self) {
        if self.mode != ConsoleMode::ReadWrite || !self.input.interactive {
            return;
        }
        if let Some(ws) = super::terminal_size() {
            // The answer matters only as a refusal, said when it comes.
            if self.writer.resize(ws.cols, ws.rows) == Sent::Gone {
                let msg = "the new window size was not sent: the connection to mpssd is gone".to_owned();
                self.out.say("refused", &msg);
            }
        }
    }

    fn states(&mut self, states: &States) -> Option<End> {
        let mut buf = [0u8; 64];
        while matches!((&states.wake).read(&mut buf), Ok(n) if n > 0) {}
        while let Ok(r) = states.rx.try_recv() {
            match r {
                Ok(s) => {
                    self.card_state = s;
                    if s == MicState::Online || self.ending.is_some() || self.follow {
                        continue;
                    }
                    let end = self.card_down(s);
                    if !self.device_up {
                        return Some(end);
                    }
                    // The card's last output and mpssd's removal of its
                    // console follow the state: read them first.
                    self.ending = Some((Instant::now() + DRAIN_LIMIT, end));
                }
                Err(e) => {
                    let msg = format!("cannot watch {}'s state any more: {e}", self.name());
                    self.out.say("state", &msg);
                }
            }
        }
        None
    }

    fn socket(&mut self) -> Option<End> {
        use libmic::attrs::escape_untrusted;
        loop {
            let item = match self.conn.try_next_item() {
                Ok(None) => return None,
                Ok(Some(item)) => item,
                Err(e) => return Some(End::Failed(anyhow::Error::from(e))),
            };
            let end = match item {
                ConsoleItem::Output { data, replay } => self.output(&data, replay),
                ConsoleItem::Device { up, reason } => self.device(up, &escape_untrusted(&reason)),
                ConsoleItem::Lagged { missed } => {
                    let msg = format!(
                        "{missed} bytes of {}'s output were dropped: micctl did not keep up (mpssd's console log has them)",
                        self.name()
                    );
                    self.out.say("lagged", &msg);
                    None
                }
                ConsoleItem::Refused(e) => {
                    self.refused(&e);
                    None
                }
                ConsoleItem::Ended(e) => Some(self.ended(e)),
            };
            if end.is_some() {
                return end;
            }
        }
    }

    /// How mpssd's end of the attachment ends the session.
    fn ended(&self, e: ConsoleEnd) -> End {
        use libmic::attrs::escape_untrusted;
        match e {
            ConsoleEnd::CardDown { .. } => self.card_down(self.card.state().unwrap_or(self.card_state)),
            ConsoleEnd::ConsoleRemoved { message } => End::ConsoleGone(escape_untrusted(&message)),
            ConsoleEnd::DaemonStopping { message } => End::MpssdStopped(escape_untrusted(&message)),
            ConsoleEnd::TakenOver { message, .. } => End::TakenOver(escape_untrusted(&message)),
            ConsoleEnd::Detached => End::Detached,
            // Killed, or gone some other way: the card may have gone too.
            ConsoleEnd::Disconnected => {
                self.down_or(End::MpssdStopped("it closed the connection".to_owned()))
            }
        }
    }

    fn device(&mut self, up: bool, reason: &str) -> Option<End> {
        if up == self.device_up {
            return None;
        }
        self.device_up = up;
        self.input.told_dropped = false;
        if up {
            let msg = format!("{}'s console is up ({reason})", self.name());
            self.out.say("console-up", &msg);
            return None;
        }
        if let Some((_, End::CardDown { .. })) = &self.ending {
            // The card is down, and this was the last of its console.
            return self.ending.take().map(|e| e.1);
        }
        if self.card_state != MicState::Online && !self.follow {
            return Some(self.card_down(self.card_state));
        }
        let msg = format!(
            "{}'s console went down ({reason}); waiting for it{}",
            self.name(),
            self.detach_hint()
        );
        self.out.say("console-down", &msg);
        None
    }

    fn output(&mut self, data: &[u8], replay: bool) -> Option<End> {
        if let Some(end) = self.print(data, replay) {
            return Some(end);
        }
        if replay {
            return None;
        }
        self.last_output = Instant::now();
        self.until
            .as_mut()
            .is_some_and(|u| u.1.feed(data))
            .then_some(End::Until)
    }

    fn print(&mut self, data: &[u8], replay: bool) -> Option<End> {
        match self.out.output(data, replay) {
            Ok(()) => None,
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Some(End::OutputClosed),
            Err(e) => Some(End::Failed(
                anyhow::Error::from(e).context("writing the console to stdout"),
            )),
        }
    }

    /// mpssd refused input or a window size.
    fn refused(&mut self, e: &ErrorBody) {
        let msg = match e.code {
            ErrorCode::ReadOnly => format!(
                "input not sent: {}'s console is read-only for micctl",
                self.name()
            ),
            _ => format!("mpssd refused: {}", libmic::attrs::escape_untrusted(&e.message)),
        };
        self.out.say("refused", &msg);
    }

    fn stdin(&mut self) -> Option<End> {
        let mut buf = [0u8; INPUT_CHUNK];
        let n = match nix::unistd::read(io::stdin().as_fd(), &mut buf) {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => return None,
            Err(e) => {
                return Some(End::Failed(
                    anyhow::Error::from(io::Error::from(e)).context("reading stdin"),
                ));
            }
        };
        if n == 0 {
            self.input.open = false;
            if self.input.interactive {
                // The terminal hung up.
                return Some(End::Detached);
            }
            self.input.done_at = Some(Instant::now());
            return None;
        }
        let mut data = &buf[..n];
        let mut detach = false;
        if let Some(i) = self
            .input
            .escape
            .and_then(|esc| data.iter().position(|&b| b == esc))
        {
            data = &data[..i];
            detach = true;
        }
        if self.mode == ConsoleMode::ReadWrite && self.device_up {
            self.input.pending.extend_from_slice(data);
        } else if !data.is_empty() && !self.input.told_dropped {
            self.input.told_dropped = true;
            let why = if self.mode == ConsoleMode::ReadOnly {
                "read-only"
            } else {
                "the console is down"
            };
            let msg = format!("{why}: keystrokes are not sent{}", self.detach_hint());
            self.out.say("keys-dropped", &msg);
        }
        if detach {
            // What was typed before the key still goes.
            return Some(self.flush_pending().unwrap_or(End::Detached));
        }
        None
    }

    /// Hands what was typed to the writer, as far as its queue allows.
    fn flush_pending(&mut self) -> Option<End> {
        let i = &mut self.input;
        while !i.pending.is_empty() {
            let n = i.pending.len().min(INPUT_CHUNK);
            match self.writer.input(&i.pending[..n]) {
                Sent::Queued => {
                    i.pending.drain(..n);
                }
                Sent::Full => break,
                Sent::Gone => return Some(End::Failed(self.writer.failure())),
            }
        }
        None
    }

    /// What was typed and queued still goes to mpssd, for a little while.
    pub(super) fn drain_input(&mut self) {
        let _ = self.flush_pending();
        self.writer.finish(DRAIN_LIMIT);
    }
}

/// A console client as JSON.
fn client_json(c: &ConsoleClient) -> Value {
    json!({ "name": c.name, "pid": c.pid, "uid": c.uid, "since_ms": c.since_ms })
}

/// ` for 3m05s`: how long a writer has held the console.
fn held_for(c: &ConsoleClient) -> String {
    let ms = unix_ms(SystemTime::now()).saturating_sub(c.since_ms);
    format!(
        " for {}",
        output::human_duration(Duration::from_millis(ms).as_secs_f64())
    )
}
