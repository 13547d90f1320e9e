//! Bounded access to the driver's files.
//!
//! A hung driver (a wedged kernel module holding its mutex, or a stopped
//! micemu behind its FUSE mount) makes every `open`, `read`, `write` and
//! even `poll` of its files block, and no timeout of ours reaches into the
//! kernel to end them. So a bounded access runs on a worker thread, and the
//! caller waits for its answer only until the access's deadline: then it
//! gets [`Error::NoAnswer`] naming the file, and the worker is left behind,
//! blocked in the kernel, until the driver answers or the process exits.
//!
//! Workers are pooled (an answered access costs two thread switches, no
//! thread creation). A file whose access is still stuck is not touched
//! again until that access returns: the next access to it fails at once,
//! so a tool polling a hung card does not pile up blocked threads; and at
//! most [`MAX_STUCK`] accesses may be stuck in all.
//!
//! An unbounded [`IoLimit`] (the default) runs every access inline, exactly
//! as plain `std::fs` would.

use std::cell::RefCell;
use std::collections::HashMap;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// How long accesses to a card's files may block.
///
/// `deadline` bounds everything (a command's `--timeout`); `per_access`
/// bounds each access on its own (for tools that run indefinitely). Waits
/// for a state change end at the deadline like any other wait; a hung
/// driver is noticed within `per_access` even while waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct IoLimit {
    deadline: Option<Instant>,
    per_access: Option<Duration>,
}

/// After the deadline has passed, an access is still given this long: the
/// last reads of a command that timed out (the state it ended in) answer at
/// once from a live driver.
pub const AFTER_DEADLINE: Duration = Duration::from_millis(500);

/// How much longer than its own timeout a `poll(2)` may take before the
/// driver counts as hung (a live driver answers a poll at once; the wait
/// itself is the kernel's).
pub const POLL_SLACK: Duration = Duration::from_millis(500);

/// The most accesses that may be stuck at once; beyond, accesses fail at
/// once without a thread.
pub const MAX_STUCK: usize = 64;

/// Idle workers kept for reuse.
const MAX_IDLE: usize = 16;

impl IoLimit {
    /// No bound: every access runs inline and may block forever.
    pub const NONE: IoLimit = IoLimit {
        deadline: None,
        per_access: None,
    };

    /// Everything must be over by `deadline`.
    #[must_use]
    pub const fn until(deadline: Instant) -> Self {
        Self {
            deadline: Some(deadline),
            per_access: None,
        }
    }

    /// No single access may take longer than `limit`.
    #[must_use]
    pub const fn per_access(limit: Duration) -> Self {
        Self {
            deadline: None,
            per_access: Some(limit),
        }
    }

    /// This limit with (also) the deadline `deadline`.
    #[must_use]
    pub fn and_until(self, deadline: Instant) -> Self {
        Self {
            deadline: Some(self.deadline.map_or(deadline, |d| d.min(deadline))),
            ..self
        }
    }

    /// The overall deadline, if any.
    #[must_use]
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The bound of each single access, if any.
    #[must_use]
    pub fn access_limit(&self) -> Option<Duration> {
        self.per_access
    }

    /// Whether accesses are bounded at all.
    #[must_use]
    pub fn is_bounded(&self) -> bool {
        self.deadline.is_some() || self.per_access.is_some()
    }

    /// When an access starting at `now` must have answered.
    #[must_use]
    pub fn access_deadline(&self, now: Instant) -> Option<Instant> {
        let overall = self.deadline.map(|d| d.max(now + AFTER_DEADLINE));
        let single = self.per_access.map(|p| now + p);
        match (overall, single) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The tighter of two limits (the earlier deadline, the shorter
    /// per-access bound).
    #[must_use]
    pub fn min(self, other: IoLimit) -> IoLimit {
        IoLimit {
            deadline: earliest(self.deadline, other.deadline),
            per_access: earliest(self.per_access, other.per_access),
        }
    }
}

/// The smaller of two optional bounds (`None` is no bound).
fn earliest<T: Ord>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, y) => x.or(y),
    }
}

/// Runs `op` on `path` bounded by `limit` (an access starting now).
pub(crate) fn bounded<T: Send + 'static>(
    limit: IoLimit,
    path: &Path,
    op: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    run_until(limit.access_deadline(Instant::now()), path, op)
}

/// Runs `op` on `path`; without `until` inline, else on a worker, waiting
/// for the answer until `until` ([`Error::NoAnswer`] after).
pub(crate) fn run_until<T: Send + 'static>(
    until: Option<Instant>,
    path: &Path,
    op: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    let Some(until) = until else {
        // Inside a batch, on its worker: note where it is, and do not block
        // on a file already stuck.
        if let Some(progress) = BATCH.with(|b| b.borrow().clone()) {
            if !Stuck::admit(path) {
                return Err(Error::NoAnswer {
                    path: path.to_owned(),
                    waited: Duration::ZERO,
                });
            }
            path.clone_into(&mut lock(&progress));
        }
        return Ok(op());
    };
    on_worker(until, path, None, op)
}

/// Runs `op`, any number of accesses made unbounded inside it, as one
/// access bounded by `limit`: one hand-off to a worker instead of one per
/// file. [`Error::NoAnswer`] names the file `op` was at when time ran out
/// (`path` before its first).
pub(crate) fn batch<T: Send + 'static>(
    limit: IoLimit,
    path: &Path,
    op: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    let Some(until) = limit.access_deadline(Instant::now()) else {
        return Ok(op());
    };
    let progress = Arc::new(Mutex::new(path.to_owned()));
    let here = Arc::clone(&progress);
    on_worker(until, path, Some(progress), move || {
        BATCH.with(|b| *b.borrow_mut() = Some(here));
        let value = op();
        BATCH.with(|b| *b.borrow_mut() = None);
        value
    })
}

/// Where a batch running on this thread is (see [`batch`]).
type Progress = Arc<Mutex<PathBuf>>;

thread_local! {
    static BATCH: RefCell<Option<Progress>> = const { RefCell::new(None) };
}

/// Runs `op` on a worker and waits for it until `until`. The file that did
/// not answer is `path`, or where `progress` says a batch got to.
fn on_worker<T: Send + 'static>(
    until: Instant,
    path: &Path,
    progress: Option<Progress>,
    op: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    let start = Instant::now();
    if !Stuck::admit(path) {
        return Err(Error::NoAnswer {
            path: path.to_owned(),
            waited: Duration::ZERO,
        });
    }
    let at = {
        let path = path.to_owned();
        move || {
            progress
                .as_ref()
                .map_or_else(|| path.clone(), |p| lock(p).clone())
        }
    };
    let (tx, rx) = mpsc::sync_channel(1);
    let done = Arc::new(Mutex::new(JobEnd::Running));
    let job_done = Arc::clone(&done);
    submit(Box::new(move || {
        // A panic is the caller's, not the pool's: carried back and resumed.
        let value = panic::catch_unwind(AssertUnwindSafe(op));
        let _ = tx.send(value);
        let mut end = lock(&job_done);
        if let JobEnd::Abandoned(key) = &*end {
            Stuck::release(key);
        }
        *end = JobEnd::Finished;
    }))
    .map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })?;
    // TIMEOUT: the access's deadline (a command's --timeout, or the
    // per-access bound); past it the driver counts as hung.
    let answer = match rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
        Ok(v) => v,
        Err(RecvTimeoutError::Disconnected) => {
            return Err(Error::NoAnswer {
                path: at(),
                waited: start.elapsed(),
            });
        }
        Err(RecvTimeoutError::Timeout) => {
            let mut end = lock(&done);
            if *end == JobEnd::Finished {
                drop(end);
                rx.try_recv().map_err(|_| Error::NoAnswer {
                    path: at(),
                    waited: start.elapsed(),
                })?
            } else {
                let stuck = at();
                Stuck::hold(&stuck);
                *end = JobEnd::Abandoned(stuck.clone());
                return Err(Error::NoAnswer {
                    path: stuck,
                    waited: start.elapsed(),
                });
            }
        }
    };
    match answer {
        Ok(v) => Ok(v),
        Err(p) => panic::resume_unwind(p),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum JobEnd {
    Running,
    Finished,
    /// The caller gave up; this file stays stuck until the job ends.
    Abandoned(PathBuf),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The files with an access still stuck in the kernel, and how many each.
struct Stuck;

static STUCK: Mutex<Option<HashMap<PathBuf, usize>>> = Mutex::new(None);

impl Stuck {
    /// Whether an access to `path` may start: none of its accesses is
    /// stuck, and fewer than [`MAX_STUCK`] are in all.
    fn admit(path: &Path) -> bool {
        lock(&STUCK)
            .as_ref()
            .is_none_or(|map| !map.contains_key(path) && map.values().sum::<usize>() < MAX_STUCK)
    }

    fn hold(path: &Path) {
        *lock(&STUCK)
            .get_or_insert_with(HashMap::new)
            .entry(path.to_owned())
            .or_default() += 1;
    }

    fn release(path: &Path) {
        if let Some(map) = lock(&STUCK).as_mut() {
            if let Some(n) = map.get_mut(path) {
                *n -= 1;
                if *n == 0 {
                    map.remove(path);
                }
            }
        }
    }
}

/// Accesses stuck in the kernel right now (for tests and diagnostics).
#[must_use]
pub fn stuck_accesses() -> usize {
    lock(&STUCK).as_ref().map_or(0, |m| m.values().sum())
}

type Job = Box<dyn FnOnce() + Send>;

/// Idle workers, each waiting on its own channel.
static IDLE: Mutex<Vec<Sender<Job>>> = Mutex::new(Vec::new());

/// Hands `job` to an idle worker, or to a new one.
fn submit(job: Job) -> std::io::Result<()> {
    let mut job = job;
    loop {
        let idle = lock(&IDLE).pop();
        match idle {
            Some(tx) => match tx.send(job) {
                Ok(()) => return Ok(()),
                // That worker has ended; try the next.
                Err(mpsc::SendError(j)) => job = j,
            },
            None => return spawn_worker(job),
        }
    }
}

fn spawn_worker(first: Job) -> std::io::Result<()> {
    let (tx, rx) = mpsc::channel::<Job>();
    thread::Builder::new()
        .name("libmic-io".into())
        .spawn(move || {
            let mut job = first;
            loop {
                job();
                {
                    let mut idle = lock(&IDLE);
                    if idle.len() >= MAX_IDLE {
                        return;
                    }
                    idle.push(tx.clone());
                }
                match rx.recv() {
                    Ok(next) => job = next,
                    Err(_) => return,
                }
            }
        })
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::Receiver;

    /// An access that blocks until the test lets it go.
    fn gate() -> (Sender<()>, Receiver<()>) {
        mpsc::channel()
    }

    #[test]
    fn unbounded_runs_inline() {
        let here = thread::current().id();
        let there = bounded(IoLimit::NONE, Path::new("/x"), move || thread::current().id()).unwrap();
        assert_eq!(here, there);
    }

    #[test]
    fn answered_access_returns_its_value() {
        let limit = IoLimit::per_access(Duration::from_secs(20));
        for i in 0..50 {
            assert_eq!(bounded(limit, Path::new("/x"), move || i * 2).unwrap(), i * 2);
        }
    }

    #[test]
    fn a_hung_access_is_abandoned_and_its_file_fails_fast_until_it_returns() {
        let path = Path::new("/test/hung/state");
        let (release, wait) = gate();
        let start = Instant::now();
        let e = bounded(IoLimit::per_access(Duration::from_millis(100)), path, move || {
            let _ = wait.recv();
        })
        .unwrap_err();
        assert!(start.elapsed() >= Duration::from_millis(100));
        match &e {
            Error::NoAnswer { path: p, waited } => {
                assert_eq!(p, path);
                assert!(*waited >= Duration::from_millis(100));
            }
            other => panic!("{other:?}"),
        }
        assert!(e.to_string().contains("/test/hung/state"), "{e}");
        // The same file again: refused at once, no second thread blocked.
        let again = Instant::now();
        let e = bounded(IoLimit::per_access(Duration::from_secs(20)), path, || ()).unwrap_err();
        assert!(
            matches!(e, Error::NoAnswer { waited, .. } if waited.is_zero()),
            "{e:?}"
        );
        assert!(again.elapsed() < Duration::from_secs(20));
        // Another file is fine.
        assert_eq!(
            bounded(
                IoLimit::per_access(Duration::from_secs(20)),
                Path::new("/test/other"),
                || 7
            )
            .unwrap(),
            7
        );
        // The stuck access returns: the file is usable again.
        release.send(()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match bounded(IoLimit::per_access(Duration::from_secs(20)), path, || 1) {
                Ok(v) => {
                    assert_eq!(v, 1);
                    break;
                }
                Err(_) if Instant::now() < deadline => thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        }
    }

    #[test]
    fn a_batch_is_one_access_and_names_the_file_it_stopped_at() {
        let limit = IoLimit::per_access(Duration::from_millis(100));
        let worker = batch(limit, Path::new("/test/batch/mic0"), || {
            let here = thread::current().id();
            let inner = run_until(None, Path::new("/test/batch/mic0/family"), || {
                thread::current().id()
            })
            .unwrap();
            (here, inner)
        })
        .unwrap();
        assert_eq!(
            worker.0, worker.1,
            "inner accesses run inline on the batch's worker"
        );
        assert_ne!(worker.0, thread::current().id());

        let (release, wait) = gate();
        let e = batch(limit, Path::new("/test/batch/mic1"), move || {
            run_until(None, Path::new("/test/batch/mic1/state"), || ()).unwrap();
            run_until(None, Path::new("/test/batch/mic1/log_buf"), move || {
                let _ = wait.recv();
            })
            .unwrap();
        })
        .unwrap_err();
        match &e {
            Error::NoAnswer { path, .. } => assert_eq!(path, Path::new("/test/batch/mic1/log_buf")),
            other => panic!("{other:?}"),
        }
        // That file stays stuck, inside a batch too; others are fine.
        let again = batch(
            IoLimit::per_access(Duration::from_secs(20)),
            Path::new("/test/batch/mic1"),
            || {
                let stuck = run_until(None, Path::new("/test/batch/mic1/log_buf"), || ());
                let fine = run_until(None, Path::new("/test/batch/mic1/state"), || ());
                (stuck.is_err(), fine.is_ok())
            },
        )
        .unwrap();
        assert_eq!(again, (true, true));
        release.send(()).unwrap();
    }

    #[test]
    fn a_panic_in_an_access_is_the_callers() {
        let r = panic::catch_unwind(|| {
            bounded(
                IoLimit::per_access(Duration::from_secs(20)),
                Path::new("/test/panic"),
                || panic!("boom"),
            )
        });
        assert!(r.is_err());
        // The pool still works.
        assert_eq!(
            bounded(
                IoLimit::per_access(Duration::from_secs(20)),
                Path::new("/x"),
                || 3
            )
            .unwrap(),
            3
        );
    }

    #[test]
    fn access_deadlines() {
        let now = Instant::now();
        assert_eq!(IoLimit::NONE.access_deadline(now), None);
        let p = IoLimit::per_access(Duration::from_secs(3));
        assert_eq!(p.access_deadline(now), Some(now + Duration::from_secs(3)));
        let d = IoLimit::until(now + Duration::from_secs(10));
        assert_eq!(d.access_deadline(now), Some(now + Duration::from_secs(10)));
        // Past the deadline an access still gets a moment.
        let late = now + Duration::from_secs(11);
        assert_eq!(d.access_deadline(late), Some(late + AFTER_DEADLINE));
        let both = p.and_until(now + Duration::from_secs(1));
        assert_eq!(both.access_deadline(now), Some(now + Duration::from_secs(1)));
        assert_eq!(
            p.min(d),
            IoLimit {
                deadline: Some(now + Duration::from_secs(10)),
                per_access: Some(Duration::from_secs(3))
            }
        );
    }
}
