//! What every backend's data path is made of: a thread of its own per
//! device (COPY_DESC blocks, so it never runs on tokio's reactor threads),
//! `poll(2)` over the `dev/micN` file and the backend's own descriptors,
//! eventfds to wake it, the drain-every-wake contract of the driver, and
//! atomic counters read from any task.
//!
//! The contract with the driver (original-mic.md §3.8): the file becomes
//! readable once per card doorbell, so after a wake every vring is drained;
//! a doorbell that arrives while draining wakes the next `poll`. micemu's
//! socket may note a wake while a COPY_DESC waits for its reply, so
//! [`drain_wakes`] runs after every service round and before the thread
//! blocks. A ring whose chains are complete in one copy each (the card's
//! transmit rings) is emptied with [`drain`], in batches.

use std::io::IoSliceMut;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use libmic::vdev::{BATCH_MAX, IoBuf, RingMap, VdevError, VirtioFile, Wake};
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};

/// An eventfd that wakes a data thread (stop, input queued, a resize).
#[derive(Debug)]
pub struct Waker(EventFd);

impl Waker {
    pub fn new() -> std::io::Result<Self> {
        Ok(Self(EventFd::from_value_and_flags(
            0,
            EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK,
        )?))
    }

    /// Makes the descriptor readable (never blocks: the counter saturates
    /// long before an overflow could block a non-blocking eventfd).
    pub fn wake(&self) {
        let _ = self.0.write(1);
    }

    /// Clears it; returns whether it was set.
    #[allow(clippy::must_use_candidate)] // clearing is the point; the answer is a bonus
    pub fn clear(&self) -> bool {
        self.0.read().is_ok()
    }

    /// Whether it is set, without clearing it.
    #[must_use]
    pub fn is_set(&self) -> bool {
        let mut fds = [PollFd::new(self.0.as_fd(), PollFlags::POLLIN)];
        matches!(nix::poll::poll(&mut fds, PollTimeout::ZERO), Ok(1))
    }
}

impl AsFd for Waker {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

/// `poll(2)` with EINTR retried; `None` waits without a bound.
pub fn poll(fds: &mut [PollFd<'_>], timeout: Option<Duration>) -> std::io::Result<usize> {
    let t = match timeout {
        None => PollTimeout::NONE,
        Some(d) => PollTimeout::try_from(d).unwrap_or(PollTimeout::MAX),
    };
    loop {
        match nix::poll::poll(fds, t) {
            Ok(n) => return Ok(usize::try_from(n).unwrap_or(0)),
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Whether a poll result says the descriptor is readable, or broken.
#[must_use]
pub fn readable(fd: &PollFd<'_>) -> bool {
    fd.revents()
        .is_some_and(|r| r.intersects(PollFlags::POLLIN | PollFlags::POLLERR | PollFlags::POLLHUP))
}

/// Consumes every wake the file has noted; returns whether the card rang
/// and whether the device is gone.
pub fn drain_wakes(file: &mut VirtioFile) -> Result<(bool, bool), VdevError> {
    let mut rang = false;
    // Bounded: each call consumes one noted wake or one message; a storm
    // of doorbells is coalesced into one round of service.
    for _ in 0..64 {
        match file.try_wake()? {
            None | Some(Wake::TimedOut) => return Ok((rang, false)),
            Some(Wake::Doorbell) => rang = true,
            Some(Wake::Gone) => return Ok((rang, true)),
        }
    }
    Ok((rang, false))
}

/// The end of a round of service: the wakes the file noted are consumed.
/// `Ok(true)`: the card rang meanwhile (serve again before blocking);
/// `Err(why)`: the device is gone (`what`: the device, in words).
pub fn end_round(file: &mut VirtioFile, what: &str) -> Result<bool, String> {
    match drain_wakes(file) {
        Ok((rang, false)) => Ok(rang),
        Ok((_, true)) => Err(format!("the card removed its {what}")),
        Err(e) => Err(format!("dev/micN: {e}")),
    }
}

/// What [`drain`] did.
#[derive(Debug, Default)]
pub struct Drained {
    /// Chains moved (and completed).
    pub chains: usize,
    /// The budget ran out with chains left.
    pub more: bool,
    /// The COPY_DESC that stopped the drain (the chains before it moved):
    /// the driver's refusal, or a failure to reach it.
    pub error: Option<VdevError>,
}

/// Drains the card's chains on vring `vr`, each completed, into `bufs`: a
/// `copy_desc_batch` of up to `bufs.len()` chains at a time (on micemu
/// one hand-off for them all), sized by what the card says it made
/// available (its word: a lie costs at most one batch that stops early).
/// `each` hears of every chain's bytes, in ring order. Stops when the ring
/// is empty, after `budget` chains, or at an error.
pub fn drain(
    file: &mut VirtioFile,
    map: &RingMap,
    vr: u8,
    bufs: &mut [IoBuf],
    budget: usize,
    mut each: impl FnMut(&mut [u8]),
) -> Drained {
    let mut out = Drained::default();
    let mut lens = Vec::with_capacity(bufs.len().min(BATCH_MAX));
    while out.chains < budget {
        let room = budget - out.chains;
        let most = bufs.len().min(room);
        let d = drain_batch(file, map, vr, &mut bufs[..most], &mut lens);
        for (buf, &len) in bufs.iter_mut().zip(&lens) {
            each(&mut buf[..len]);
        }
        out.chains += d.chains;
        if d.error.is_some() || !d.more {
            out.error = d.error;
            return out;
        }
    }
    out.more = map.pending(usize::from(vr));
    out
}

/// [`drain`] with the copies of one batch overlapping the handling of the
/// one before: `bufs` holds two sets of buffers (its halves); while `each`
/// takes the chains of one set, the next batch is copied into the other
/// ([`VirtioFile::start_batch`]: on micemu's shared slot the emulator
/// copies while this thread works; elsewhere the same as [`drain`]). The
/// chains reach `each` in ring order.
pub fn drain_overlapped(
    file: &mut VirtioFile,
    map: &RingMap,
    vr: u8,
    bufs: &mut [IoBuf],
    budget: usize,
    mut each: impl FnMut(&mut [u8]),
) -> Drained {
    let ring = usize::from(vr);
    let half = (bufs.len() / 2).min(BATCH_MAX);
    let (first, second) = bufs.split_at_mut(half);
    let sets = [first, &mut second[..half]];
    let mut out = Drained::default();
    let start = |file: &mut VirtioFile, set: &mut [IoBuf], room: usize| {
        let (want, mut io) = next_chains(map, ring, &mut set[..half.min(room)])?;
        Some((file.start_batch(vr, &mut io[..want], true), want))
    };
    let mut cur = 0;
    let mut pending = start(file, sets[0], budget);
    while let Some((p, want)) = pending.take() {
        let b = match file.finish_batch(p) {
            Ok(b) => b,
            Err(e) => {
                out.error = Some(e);
                return out;
            }
        };
        out.chains += b.chains;
        let more = b.error.is_none() && b.chains == want;
        // The next batch is copied while this one is handled.
        if more {
            pending = start(file, sets[cur ^ 1], budget - out.chains);
        }
        for (buf, &len) in sets[cur].iter_mut().zip(&b.lens[..b.chains]) {
            each(&mut buf[..len as usize]);
        }
        if b.error.is_some() {
            // Nothing was started after a refusal.
            out.error = b.error;
            return out;
        }
        cur ^= 1;
        if !more {
            return out;
        }
    }
    out.more = out.chains >= budget && map.pending(ring);
    out
}

/// How many of the card's chains on `ring` the next batch asks for (what
/// it says it made available, at least one, at most `bufs.len()` and
/// [`BATCH_MAX`]), and the first that many of `bufs` as COPY_DESC slices;
/// `None` when the ring holds nothing or there is no buffer.
fn next_chains<'a>(
    map: &RingMap,
    ring: usize,
    bufs: &'a mut [IoBuf],
) -> Option<(usize, [IoSliceMut<'a>; BATCH_MAX])> {
    let most = bufs.len().min(BATCH_MAX);
    if most == 0 || !map.pending(ring) {
        return None;
    }
    let want = usize::from(map.available(ring)).clamp(1, most);
    let mut io: [IoSliceMut<'a>; BATCH_MAX] = std::array::from_fn(|_| IoSliceMut::new(&mut []));
    for (slot, b) in io.iter_mut().zip(&mut bufs[..want]) {
        *slot = IoSliceMut::new(b);
    }
    Some((want, io))
}

/// One `copy_desc_batch` of [`drain`]: up to `bufs.len()` (and
/// [`BATCH_MAX`]) of the card's chains on vring `vr`, each completed, into
/// `bufs` in ring order; `lens` gets their lengths (cleared first). `more`:
/// every chain asked for came, so the ring may hold more.
pub fn drain_batch(
    file: &mut VirtioFile,
    map: &RingMap,
    vr: u8,
    bufs: &mut [IoBuf],
    lens: &mut Vec<usize>,
) -> Drained {
    lens.clear();
    let mut out = Drained::default();
    let Some((want, mut io)) = next_chains(map, usize::from(vr), bufs) else {
        return out;
    };
    match file.copy_desc_batch(vr, &mut io[..want], true) {
        Ok(b) => {
            lens.extend(b.lens[..b.chains].iter().map(|&l| l as usize));
            out.chains = b.chains;
            out.more = b.error.is_none() && b.chains == want;
            out.error = b.error;
        }
        Err(e) => out.error = Some(e),
    }
    out
}

/// A data thread: spawned with a stop [`Waker`], stopped with a bound.
#[derive(Debug)]
pub struct DataThread {
    name: String,
    stop: Arc<Waker>,
    done: mpsc::Receiver<()>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl DataThread {
    /// Runs `body(stop)` on a thread named `name`; `body` returns when the
    /// waker it is given becomes readable.
    pub fn spawn(name: String, body: impl FnOnce(Arc<Waker>) + Send + 'static) -> std::io::Result<Self> {
        let stop = Arc::new(Waker::new()?);
        let (tx, done) = mpsc::channel::<()>();
        let s = Arc::clone(&stop);
        let handle = std::thread::Builder::new().name(name.clone()).spawn(move || {
            // Dropped when the body returns (or panics): the stopper sees it.
            let _done = tx;
            body(s);
        })?;
        Ok(Self {
            name,
            stop,
            done,
            handle: Some(handle),
        })
    }

    /// Tells the thread to stop and waits for it, at most `limit`. Returns
    /// whether it stopped; one that did not is left behind, logged.
    #[allow(clippy::must_use_candidate)] // stopping is the point; the answer is logged too
    pub fn stop(mut self, limit: Duration) -> bool {
        self.stop.wake();
        // TIMEOUT: `limit`: the thread closes its dev/micN file on the way
        // out, which the real driver bounds (10 s for the card's ack).
        match self.done.recv_timeout(limit) {
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                if let Some(h) = self.handle.take() {
                    if h.join().is_err() {
                        log::error!(target: "mpssd", "{}: the data thread panicked", self.name);
                    }
                }
                true
            }
            Ok(()) | Err(mpsc::RecvTimeoutError::Timeout) => {
                log::error!(
                    target: "mpssd",
                    "{}: the data thread did not stop within {limit:?}; left behind",
                    self.name
                );
                false
            }
        }
    }
}

/// What a device is doing, for its status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum DevState {
    /// Not added (the card's devices are down, or none configured).
    Down = 0,
    /// Added; the card's driver has not set DRIVER_OK (card offline,
    /// booting, or it reset the device).
    Waiting = 1,
    /// Served.
    Up = 2,
    /// The card removed the device (or the driver went away).
    Gone = 3,
    /// Adding failed, or the card broke the device's rings; the message is
    /// in the status.
    Error = 4,
}

impl DevState {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            DevState::Down => "down",
            DevState::Waiting => "waiting",
            DevState::Up => "up",
            DevState::Gone => "gone",
            DevState::Error => "error",
        }
    }

    fn from_u8(v: u8) -> Self {
        match v {
            1 => DevState::Waiting,
            2 => DevState::Up,
            3 => DevState::Gone,
            4 => DevState::Error,
            _ => DevState::Down,
        }
    }
}

/// A device's state and counters, shared between its data thread and
/// whoever reads them. Counter names are fixed per backend (`metrics.rs`
/// of each) and become `mpssd_device_<name>_total` in the metrics.
#[derive(Debug)]
pub struct Stats {
    names: &'static [&'static str],
    values: Box<[AtomicU64]>,
    state: AtomicU8,
    error: Mutex<Option<String>>,
    target: Mutex<String>,
}

impl Stats {
    #[must_use]
    pub fn new(names: &'static [&'static str]) -> Self {
        Self {
            names,
            values: names.iter().map(|_| AtomicU64::new(0)).collect(),
            state: AtomicU8::new(DevState::Down as u8),
            error: Mutex::new(None),
            target: Mutex::new(String::new()),
        }
    }

    /// Adds `n` to counter `i` (an index into the backend's names).
    pub fn add(&self, i: usize, n: u64) {
        if let Some(v) = self.values.get(i) {
            v.fetch_add(n, Ordering::Relaxed);
        }
    }

    #[must_use]
    pub fn get(&self, i: usize) -> u64 {
        self.values.get(i).map_or(0, |v| v.load(Ordering::Relaxed))
    }

    pub fn set_state(&self, s: DevState) {
        self.state.store(s as u8, Ordering::Relaxed);
        if s != DevState::Error {
            *lock(&self.error) = None;
        }
    }

    #[must_use]
    pub fn state(&self) -> DevState {
        DevState::from_u8(self.state.load(Ordering::Relaxed))
    }

    /// Error state with its message (logged by the caller).
    pub fn fail(&self, message: String) {
        self.state.store(DevState::Error as u8, Ordering::Relaxed);
        *lock(&self.error) = Some(message);
    }

    #[must_use]
    pub fn error(&self) -> Option<String> {
        lock(&self.error).clone()
    }

    pub fn set_target(&self, t: String) {
        *lock(&self.target) = t;
    }

    /// The status the control socket and the metrics show.
    #[must_use]
    pub fn status(&self, kind: &str) -> mpssd_proto::DeviceStatus {
        let mut target = lock(&self.target).clone();
        if let Some(e) = self.error() {
            target = if target.is_empty() {
                e
            } else {
                format!("{target} ({e})")
            };
        }
        mpssd_proto::DeviceStatus {
            kind: kind.to_owned(),
            target,
            state: self.state().as_str().to_owned(),
            counters: self
                .names
                .iter()
                .zip(self.values.iter())
                .map(|(n, v)| ((*n).to_owned(), v.load(Ordering::Relaxed)))
                .collect(),
        }
    }
}

/// Locks a mutex whose data stays consistent even if a holder panicked
/// (counters, strings, byte buffers).
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_waker_is_level_until_cleared() {
        let w = Waker::new().unwrap();
        assert!(!w.is_set());
        w.wake();
        w.wake();
        assert!(w.is_set());
        assert!(w.clear());
        assert!(!w.is_set());
        assert!(!w.clear());
    }

    #[test]
    fn a_data_thread_stops_when_told() {
        let t = DataThread::spawn("test".into(), |stop| {
            let mut fds = [PollFd::new(stop.as_fd(), PollFlags::POLLIN)];
            // TIMEOUT: none: the test's stop wakes it.
            poll(&mut fds, None).unwrap();
        })
        .unwrap();
        assert!(t.stop(Duration::from_secs(10)));
        let stuck = DataThread::spawn("stuck".into(), |_| {
            std::thread::park_timeout(Duration::from_secs(2));
        })
        .unwrap();
        assert!(
            !stuck.stop(Duration::from_millis(10)),
            "a thread that ignores stop is reported"
        );
    }

    #[test]
    fn stats_report_state_counters_and_errors() {
        static NAMES: &[&str] = &["rx_bytes", "tx_bytes"];
        let s = Stats::new(NAMES);
        s.set_target("/dev/pts/3".into());
        s.add(1, 5);
        s.add(1, 2);
        s.add(9, 1);
        s.set_state(DevState::Up);
        let st = s.status("console");
        assert_eq!(st.state, "up");
        assert_eq!(st.target, "/dev/pts/3");
        assert_eq!(st.counters["tx_bytes"], 7);
        assert_eq!(st.counters["rx_bytes"], 0);
        s.fail("ADD_DEVICE failed".into());
        let st = s.status("console");
        assert_eq!(
            (st.state.as_str(), st.target.as_str()),
            ("error", "/dev/pts/3 (ADD_DEVICE failed)")
        );
        s.set_state(DevState::Waiting);
        assert_eq!(s.error(), None);
    }
}
