//! Waiting for state changes the way sysfs intends: open `state`, read it,
//! `poll(POLLPRI|POLLERR)`, then `lseek(0)` and read again. No sleeping, no
//! busy polling.
//!
//! The driver calls `sysfs_notify` on `state` at every state change, which
//! makes a poll for `POLLPRI|POLLERR` on an open `state` file return; reading
//! the file from offset 0 re-arms it. micemu serves the same semantics over
//! FUSE.
//!
//! Regular files do not support `POLLPRI`: poll on them never reports the
//! requested events, so a wait on a plain file simply blocks until its
//! timeout (forever without one). Every wait re-reads the file before
//! blocking and again at the deadline, so on a plain file a change is still
//! noticed — at the latest when the timeout expires — and never by spinning.

use std::fs::File;
use std::io::{self, Read as _, Seek as _, SeekFrom};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mic_core::abi::MicState;

use crate::attrs::Attr;
use crate::card::{Card, parse_state};
use crate::error::{Error, HINT_SYSFS, Result};
use crate::io::{IoLimit, POLL_SLACK, bounded, run_until};

/// How many wake-ups in a row may report an event without a state change
/// before the file is declared not to support notification (a real driver
/// notifies on changes only; this guards against a level-triggered source
/// turning a wait into a spin).
pub const SPURIOUS_LIMIT: u32 = 1000;

/// An open `state` file of one card and the state last read from it.
#[derive(Debug)]
pub struct StateWatcher {
    card: String,
    path: PathBuf,
    /// Shared with the worker that reads or polls it under a deadline (and
    /// with a reactor that waits on it): it stays open while any holds it.
    file: Arc<File>,
    current: MicState,
    limit: IoLimit,
    notifications: u64,
}

impl StateWatcher {
    fn open(card: &Card) -> Result<Self> {
        let path = card.attr_path(Attr::State);
        let target = path.clone();
        let file = bounded(card.io_limit(), &path, move || File::open(&target))?
            .map_err(|e| Error::io(&path, e, HINT_SYSFS))?;
        let mut w = Self {
            card: card.name().to_owned(),
            path,
            file: Arc::new(file),
            current: MicState::Offline,
            limit: card.io_limit(),
            notifications: 0,
        };
        w.current = w.read_state()?;
        Ok(w)
    }

    /// The state as last read.
    #[must_use]
    pub fn current(&self) -> MicState {
        self.current
    }

    /// `micN`.
    #[must_use]
    pub fn card_name(&self) -> &str {
        &self.card
    }

    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many times a wait on this file was woken by a notification
    /// (`sysfs_notify`), whether or not the state had changed when it was
    /// read again. A wake-up with no visible change is no transition, but it
    /// says the state was set meanwhile: a card reset and booted between two
    /// reads reads `online` both times.
    #[must_use]
    pub fn notifications(&self) -> u64 {
        self.notifications
    }

    /// The open `state` file, for a reactor that waits on it (e.g. tokio
    /// with priority interest): keeping the `Arc` keeps the descriptor open
    /// and the same. Read through [`StateWatcher::refresh`], which re-arms
    /// the notification.
    #[must_use]
    pub fn shared_file(&self) -> Arc<File> {
        Arc::clone(&self.file)
    }

    fn read_state(&mut self) -> Result<MicState> {
        let file = Arc::clone(&self.file);
        let buf = bounded(self.limit, &self.path, move || {
            let mut buf = Vec::with_capacity(32);
            let mut f = &*file;
            f.seek(SeekFrom::Start(0))
                .and_then(|_| f.read_to_end(&mut buf))
                .map(|_| buf)
        })?
        .map_err(|e| Error::io(&self.path, e, HINT_SYSFS))?;
        let raw = String::from_utf8_lossy(&buf);
        parse_state(&raw).ok_or_else(|| Error::Parse {
            path: self.path.clone(),
            value: raw.into_owned(),
            expected: "one of offline, online, shutting_down, reset_failed",
        })
    }

    /// Re-reads the state (lseek 0 + read, which also re-arms the sysfs
    /// notification). Returns the new state if it changed. For callers that
    /// wait on [`AsFd`] themselves (e.g. an async reactor with priority
    /// interest).
    pub fn refresh(&mut self) -> Result<Option<MicState>> {
        let new = self.read_state()?;
        if new == self.current {
            Ok(None)
        } else {
            self.current = new;
            Ok(Some(new))
        }
    }

    /// Blocks until the state differs from [`current`](Self::current) or
    /// `timeout` passes (`None`: no timeout). Returns the new state, or
    /// `None` on timeout.
    pub fn wait_change(&mut self, timeout: Option<Duration>) -> Result<Option<MicState>> {
        let changed = wait_any(std::slice::from_mut(self), timeout)?;
        Ok((!changed.is_empty()).then_some(self.current))
    }
}

impl AsFd for StateWatcher {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

impl AsRawFd for StateWatcher {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

/// Waits on all `watchers` at once (one poll over all fds) until at least
/// one card's state changes or `timeout` passes. Returns the indices of the
/// watchers whose state changed (their `current()` is updated); empty on
/// timeout, and at once for an empty slice.
///
/// A wake-up after which every woken file still reads the same state is no
/// transition: the wait goes on ([`Error::PollUnsupported`] after
/// [`SPURIOUS_LIMIT`] of them in a row). The watchers' [`IoLimit`]s apply:
/// the wait ends at their deadline, and a poll that the driver does not
/// answer ends in [`Error::NoAnswer`].
pub fn wait_any(watchers: &mut [StateWatcher], timeout: Option<Duration>) -> Result<Vec<usize>> {
    if watchers.is_empty() {
        return Ok(Vec::new());
    }
    let now = Instant::now();
    let limit = watchers.iter().fold(IoLimit::NONE, |l, w| l.min(w.limit));
    let deadline = match (timeout.map(|t| now + t), limit.deadline()) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let mut src = Watchers { watchers, limit };
    // Notifications since the last read are counted here (the read below
    // re-arms them); then a change that happened before the wait is seen at
    // once, on plain files too.
    if let Some(ready) = src.poll(Some(now))? {
        src.count(&ready);
    }
    let all: Vec<usize> = (0..src.watchers.len()).collect();
    let changed = src.refresh(&all)?;
    if !changed.is_empty() {
        return Ok(changed);
    }
    wait_loop(&mut src, deadline, limit.access_limit())
}

/// What [`wait_loop`] waits on: the real watchers, or a test's fake.
trait Source {
    /// Blocks until some files report an event or `until` passes: their
    /// indices, or `None` at `until`.
    fn poll(&mut self, until: Option<Instant>) -> Result<Option<Vec<usize>>>;
    /// Re-reads the files `which`; the indices whose state changed.
    fn refresh(&mut self, which: &[usize]) -> Result<Vec<usize>>;
    /// The number of files.
    fn len(&self) -> usize;
    /// A file's path, for errors.
    fn path(&self, i: usize) -> PathBuf;
}

/// The wait proper: poll (in slices of `slice`, if set, so a hung driver is
/// noticed within it), re-read the woken files, and return the ones that
/// changed. Wake-ups without a change are not transitions; too many in a
/// row is [`Error::PollUnsupported`]. At `deadline` every file is read one
/// last time (plain files do not notify).
fn wait_loop(
    src: &mut impl Source,
    deadline: Option<Instant>,
    slice: Option<Duration>,
) -> Result<Vec<usize>> {
    let mut spurious = 0u32;
    loop {
        let now = Instant::now();
        let until = match (deadline, slice.map(|s| now + s)) {
            (Some(d), Some(s)) => Some(d.min(s)),
            (d, s) => d.or(s),
        };
        let Some(ready) = src.poll(until)? else {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                let all: Vec<usize> = (0..src.len()).collect();
                return src.refresh(&all);
            }
            // Only a slice ended: the driver answered; wait on.
            continue;
        };
        let changed = src.refresh(&ready)?;
        if !changed.is_empty() {
            return Ok(changed);
        }
        spurious += 1;
        if spurious >= SPURIOUS_LIMIT {
            return Err(Error::PollUnsupported {
                path: ready.first().map(|&i| src.path(i)).unwrap_or_default(),
            });
        }
    }
}

struct Watchers<'a> {
    watchers: &'a mut [StateWatcher],
    limit: IoLimit,
}

impl Watchers<'_> {
    fn count(&mut self, ready: &[usize]) {
        for &i in ready {
            self.watchers[i].notifications += 1;
        }
    }
}

impl Source for Watchers<'_> {
    fn poll(&mut self, until: Option<Instant>) -> Result<Option<Vec<usize>>> {
        let files: Vec<Arc<File>> = self.watchers.iter().map(|w| Arc::clone(&w.file)).collect();
        let first = self.watchers[0].path.clone();
        // TIMEOUT: a live driver answers the poll itself at once; past the
        // poll's own end plus POLL_SLACK it is hung.
        let guard = if self.limit.is_bounded() {
            until.map(|u| u.max(Instant::now()) + POLL_SLACK)
        } else {
            None
        };
        let revents = run_until(guard, &first, move || {
            let mut fds: Vec<libc::pollfd> = files
                .iter()
                .map(|f| libc::pollfd {
                    fd: f.as_raw_fd(),
                    events: libc::POLLPRI | libc::POLLERR,
                    revents: 0,
                })
                .collect();
            poll(&mut fds, until).map(|any| any.then(|| fds.iter().map(|f| f.revents).collect::<Vec<_>>()))
        })?
        .map_err(|e| Error::io(&first, e, HINT_SYSFS))?;
        let Some(revents) = revents else {
            return Ok(None);
        };
        let mut ready = Vec::new();
        for (i, r) in revents.into_iter().enumerate() {
            if r & libc::POLLNVAL != 0 {
                return Err(Error::io(
                    &self.watchers[i].path,
                    io::Error::from_raw_os_error(libc::EBADF),
                    HINT_SYSFS,
                ));
            }
            if r != 0 {
                ready.push(i);
            }
        }
        self.count(&ready);
        Ok(Some(ready))
    }

    fn refresh(&mut self, which: &[usize]) -> Result<Vec<usize>> {
        let mut changed = Vec::new();
        for &i in which {
            if self.watchers[i].refresh()?.is_some() {
                changed.push(i);
            }
        }
        Ok(changed)
    }

    fn len(&self) -> usize {
        self.watchers.len()
    }

    fn path(&self, i: usize) -> PathBuf {
        self.watchers[i].path.clone()
    }
}

/// One poll(2) until something is reported or `deadline` passes; retries on
/// EINTR with the remaining time. `Ok(false)` on timeout.
fn poll(fds: &mut [libc::pollfd], deadline: Option<Instant>) -> io::Result<bool> {
    loop {
        let ms = match deadline {
            None => -1,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                // Round up so we never wake just before the deadline.
                let ms = left.as_micros().div_ceil(1000);
                i32::try_from(ms).unwrap_or(i32::MAX)
            }
        };
        for fd in fds.iter_mut() {
            fd.revents = 0;
        }
        // SAFETY: `fds` is an exclusively borrowed, initialised slice of
        // `pollfd` that outlives the call, and its exact length is passed.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        match n {
            0 => {
                // poll(2) may return a little early; honour the deadline.
                if deadline.is_some_and(|d| Instant::now() < d) {
                    continue;
                }
                return Ok(false);
            }
            n if n > 0 => return Ok(true),
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
}

impl Card {
    /// Opens the card's `state` for waiting on changes.
    pub fn watch_state(&self) -> Result<StateWatcher> {
        StateWatcher::open(self)
    }

    /// Waits until `pred` holds for the card's state (checked first on the
    /// current state) and returns that state; [`Error::Timeout`] after
    /// `timeout`.
    ///
    /// Transient states that come and go between two reads can be missed;
    /// wait for stable states (`offline`, `online`, `reset_failed`).
    pub fn wait_for(&self, pred: impl Fn(MicState) -> bool, timeout: Option<Duration>) -> Result<MicState> {
        let start = Instant::now();
        let mut w = self.watch_state()?;
        loop {
            if pred(w.current()) {
                return Ok(w.current());
            }
            let left = timeout.map(|t| t.saturating_sub(start.elapsed()));
            let timed_out = left.is_some_and(|l| l.is_zero()) || w.wait_change(left)?.is_none();
            if timed_out {
                if pred(w.current()) {
                    return Ok(w.current());
                }
                return Err(Error::Timeout {
                    card: self.name().to_owned(),
                    waited: start.elapsed(),
                    last_state: w.current(),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::root::MicRoot;
    use std::fs;

    fn plain_card(state: &str) -> (tempfile::TempDir, Card) {
        let dir = tempfile::tempdir().unwrap();
        let root = MicRoot::new(dir.path());
        let card = Card::new(&root, 0);
        fs::create_dir_all(card.sysfs_dir()).unwrap();
        fs::write(card.attr_path(Attr::State), state).unwrap();
        (dir, card)
    }

    fn thread_cpu_time() -> Duration {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec for the call.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &raw mut ts) };
        assert_eq!(rc, 0);
        Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    }

    #[test]
    fn plain_file_times_out_without_spinning() {
        let (_dir, card) = plain_card("online\n");
        let mut w = card.watch_state().unwrap();
        assert_eq!(w.current(), MicState::Online);
        let wall = Instant::now();
        let cpu = thread_cpu_time();
        assert_eq!(w.wait_change(Some(Duration::from_millis(300))).unwrap(), None);
        let cpu = thread_cpu_time().saturating_sub(cpu);
        assert!(wall.elapsed() >= Duration::from_millis(300));
        // A spinning wait would burn ~300 ms of CPU; a blocked one ~0.
        assert!(cpu < Duration::from_millis(100), "cpu {cpu:?}");
    }

    #[test]
    fn change_before_wait_is_seen_at_once() {
        let (_dir, card) = plain_card("online\n");
        let mut w = card.watch_state().unwrap();
        fs::write(card.attr_path(Attr::State), "shutting_down\n").unwrap();
        // No timeout: must return from the initial re-read, not block.
        assert_eq!(w.wait_change(None).unwrap(), Some(MicState::ShuttingDown));
        assert_eq!(w.current(), MicState::ShuttingDown);
    }

    #[test]
    fn zero_timeout_checks_once() {
        let (_dir, card) = plain_card("offline\n");
        let mut w = card.watch_state().unwrap();
        assert_eq!(w.wait_change(Some(Duration::ZERO)).unwrap(), None);
    }

    #[test]
    fn bad_state_is_an_error() {
        let (_dir, card) = plain_card("online\n");
        let mut w = card.watch_state().unwrap();
        fs::write(card.attr_path(Attr::State), "banana\n").unwrap();
        assert!(matches!(w.wait_change(None), Err(Error::Parse { .. })));
    }

    #[test]
    fn wait_for_satisfied_and_timeout() {
        let (_dir, card) = plain_card("online\n");
        assert_eq!(
            card.wait_for(|s| s == MicState::Online, Some(Duration::ZERO))
                .unwrap(),
            MicState::Online
        );
        let e = card
            .wait_for(|s| s == MicState::Offline, Some(Duration::from_millis(50)))
            .unwrap_err();
        match e {
            Error::Timeout {
                card,
                waited,
                last_state,
            } => {
                assert_eq!(card, "mic0");
                assert!(waited >= Duration::from_millis(50));
                assert_eq!(last_state, MicState::Online);
            }
            other => panic!("{other}"),
        }
    }

    /// A source whose every poll reports file 0, and whose state changes at
    /// the `change_at`-th re-read (never if `None`).
    struct Noisy {
        polls: u32,
        reads: u32,
        change_at: Option<u32>,
    }

    impl Source for Noisy {
        fn poll(&mut self, _until: Option<Instant>) -> Result<Option<Vec<usize>>> {
            self.polls += 1;
            Ok(Some(vec![0]))
        }
        fn refresh(&mut self, which: &[usize]) -> Result<Vec<usize>> {
            assert_eq!(which, [0], "only the woken file is re-read");
            self.reads += 1;
            Ok(if Some(self.reads) == self.change_at {
                vec![0]
            } else {
                vec![]
            })
        }
        fn len(&self) -> usize {
            2
        }
        fn path(&self, i: usize) -> PathBuf {
            PathBuf::from(format!("/fake/mic{i}/state"))
        }
    }

    #[test]
    fn a_wake_up_without_a_change_is_not_a_transition() {
        let mut src = Noisy {
            polls: 0,
            reads: 0,
            change_at: Some(4),
        };
        assert_eq!(wait_loop(&mut src, None, None).unwrap(), vec![0]);
        assert_eq!((src.polls, src.reads), (4, 4), "three wake-ups passed over");
    }

    #[test]
    fn endless_spurious_wake_ups_end_the_wait() {
        let mut src = Noisy {
            polls: 0,
            reads: 0,
            change_at: None,
        };
        match wait_loop(&mut src, None, None) {
            Err(Error::PollUnsupported { path }) => assert_eq!(path, Path::new("/fake/mic0/state")),
            other => panic!("{other:?}"),
        }
        assert_eq!(src.polls, SPURIOUS_LIMIT, "gave up after exactly the limit");
    }

    #[test]
    fn wait_any_reports_changed_indices() {
        let dir = tempfile::tempdir().unwrap();
        let root = MicRoot::new(dir.path());
        let cards: Vec<Card> = (0..3).map(|i| Card::new(&root, i)).collect();
        for c in &cards {
            fs::create_dir_all(c.sysfs_dir()).unwrap();
            fs::write(c.attr_path(Attr::State), "offline\n").unwrap();
        }
        let mut ws: Vec<_> = cards.iter().map(|c| c.watch_state().unwrap()).collect();
        assert!(
            wait_any(&mut ws, Some(Duration::from_millis(20)))
                .unwrap()
                .is_empty()
        );
        fs::write(cards[2].attr_path(Attr::State), "online\n").unwrap();
        fs::write(cards[0].attr_path(Attr::State), "reset_failed\n").unwrap();
        assert_eq!(wait_any(&mut ws, None).unwrap(), vec![0, 2]);
        assert_eq!(ws[0].current(), MicState::ResetFailed);
        assert_eq!(ws[1].current(), MicState::Offline);
        assert_eq!(ws[2].current(), MicState::Online);
        assert!(wait_any(&mut [], None).unwrap().is_empty());
    }
}
