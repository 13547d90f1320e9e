//! The console's data thread: `poll(2)` over the `dev/micN` file, the pty
//! master, the broker's waker and the stop waker.
//!
//! - card → host (vring 1): every chain drained per wake, [`TX_BATCH`] a
//!   hand-off (at most [`BUDGET`] per round, then the round repeats
//!   without blocking),
//!   published to the broker, written to the pty. The card is never held
//!   back by a slow reader: the broker and the log take everything; the
//!   pty gets what it can take and [`PTY_BACKLOG`] more, and the rest is
//!   dropped for it and counted.
//! - host → card (vring 0): the pty is read, and the broker's inbox
//!   emptied, only while the card has receive buffers posted. Without
//!   them nothing is read, so the pty's writer and the clients block
//!   (back-pressure), and the thread sleeps until the card's next doorbell.
//! - the card resets the device (COPY_DESC: ENODEV) → wait for DRIVER_OK
//!   again; the card removes it → wait to be stopped.

use std::collections::VecDeque;
use std::io::IoSliceMut;
use std::os::fd::AsFd as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use libmic::vdev::{IoBuf, RingMap, VdevError, VirtioFile};
use mic_core::abi::virtio::{VirtioConsoleConfig, id, status};
use nix::poll::{PollFd, PollFlags};

use super::broker::Broker;
use super::metrics as m;
use super::pty::Pty;
use crate::devices::dataplane::{DevState, Stats, Waker, drain, end_round, poll, readable};

/// Chains moved per direction per round before other descriptors get a
/// look.
pub const BUDGET: usize = 256;
/// The largest chain the card's console offers in one piece (Linux's hvc
/// writes at most a page; anything longer is cut at this and counted as an
/// error).
pub const TX_BUF: usize = 64 << 10;
/// Output chains moved per hand-off (buffers of [`TX_BUF`], allocated
/// once; only the pages chains touch are ever backed).
pub const TX_BATCH: usize = 16;
/// Bytes read from the pty at once.
pub const RX_BUF: usize = 4096;
/// Output held for a pty that is not being read.
pub const PTY_BACKLOG: usize = 64 << 10;
/// How long the pty is left alone after it failed a read (a hangup).
pub const PTY_PAUSE: Duration = Duration::from_secs(1);

/// The data path of one console device.
pub struct ConsolePath {
    pub file: VirtioFile,
    pub map: RingMap,
    pub broker: Arc<Broker>,
    pub pty: Option<Arc<Pty>>,
    pub stats: Arc<Stats>,
    pub name: String,
    tx: Vec<IoBuf>,
    /// Read from the pty, not yet taken by the card: `pty_in[at..len]`.
    pty_in: IoBuf,
    pty_in_at: usize,
    pty_in_len: usize,
    /// Staging for the broker's input.
    inbox: IoBuf,
    pty_out: VecDeque<u8>,
    /// The card's driver set DRIVER_OK and has not reset the device since.
    ready: bool,
    gone: bool,
    /// Input waited for receive buffers (counted once per wait).
    starved: bool,
    /// A window size not yet passed to the card.
    size: Option<mpssd_proto::WindowSize>,
    /// The pty failed a read: not read again until then.
    pty_rest: Option<Instant>,
}

impl std::fmt::Debug for ConsolePath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsolePath")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl ConsolePath {
    #[must_use]
    pub fn new(
        mut file: VirtioFile,
        map: RingMap,
        broker: Arc<Broker>,
        pty: Option<Arc<Pty>>,
        stats: Arc<Stats>,
        name: String,
    ) -> Self {
        let tx = (0..TX_BATCH).map(|_| file.alloc_buf(TX_BUF)).collect();
        let pty_in = file.alloc_buf(RX_BUF);
        let inbox = file.alloc_buf(RX_BUF);
        Self {
            file,
            map,
            broker,
            pty,
            stats,
            name,
            tx,
            pty_in,
            pty_in_at: 0,
            pty_in_len: 0,
            inbox,
            pty_out: VecDeque::new(),
            ready: false,
            gone: false,
            starved: false,
            size: None,
            pty_rest: None,
        }
    }

    /// Serves until `stop` is woken.
    pub fn run(mut self, stop: &Waker) {
        self.stats.set_state(DevState::Waiting);
        loop {
            let mut again = false;
            if !self.gone {
                again = self.service();
                match end_round(&mut self.file, "console") {
                    Ok(rang) => again |= rang,
                    Err(why) => self.went(&why),
                }
            }
            if self.pty_rest.is_some_and(|t| Instant::now() >= t) {
                self.pty_rest = None;
            }
            let want_pty_in = self.ready
                && self.pty_rest.is_none()
                && self.pty_in_at == self.pty_in_len
                && self.map.pending(0);
            let pty = self.pty.clone();
            let kick = Arc::clone(self.broker.kick());
            let mut fds = vec![
                PollFd::new(stop.as_fd(), PollFlags::POLLIN),
                PollFd::new(kick.as_fd(), PollFlags::POLLIN),
            ];
            let file_at = (!self.gone).then(|| {
                fds.push(PollFd::new(self.file.as_fd(), PollFlags::POLLIN));
                fds.len() - 1
            });
            let pty_at = pty.as_ref().filter(|_| self.pty_rest.is_none()).and_then(|p| {
                let mut ev = PollFlags::empty();
                if want_pty_in {
                    ev |= PollFlags::POLLIN;
                }
                if !self.pty_out.is_empty() {
                    ev |= PollFlags::POLLOUT;
                }
                (!ev.is_empty()).then(|| {
                    fds.push(PollFd::new(p.as_fd(), ev));
                    fds.len() - 1
                })
            });
            // TIMEOUT: none while idle (every source is a descriptor); zero
            // while work is left from the last round; the end of a pause
            // after a pty error.
            let timeout = if again {
                Some(Duration::ZERO)
            } else {
                self.pty_rest.map(|t| t.saturating_duration_since(Instant::now()))
            };
            if let Err(e) = poll(&mut fds, timeout) {
                log::error!(target: "mpssd", "{}: poll: {e}", self.name);
                break;
            }
            if readable(&fds[0]) {
                break;
            }
            if readable(&fds[1]) {
                kick.clear();
            }
            // The file's readiness is read by drain_wakes next round (on the
            // character device, POLLERR there means the device is gone).
            let _ = file_at;
            let pty_ready = pty_at
                .and_then(|i| fds[i].revents())
                .unwrap_or(PollFlags::empty());
            drop(fds);
            if let Some(p) = pty {
                if pty_ready.contains(PollFlags::POLLOUT) {
                    self.flush_pty(&p);
                }
                if pty_ready.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
                    self.read_pty(&p);
                }
            }
        }
    }

    fn went(&mut self, why: &str) {
        if !self.gone {
            log::info!(target: "mpssd", "{}: {why}", self.name);
            self.gone = true;
            self.ready = false;
            self.stats.set_state(DevState::Gone);
            self.broker.device(false, why);
        }
    }

    /// One round of service; returns whether work was left over.
    fn service(&mut self) -> bool {
        if !self.ready {
            if self.map.device_status(id::CONSOLE) & status::DRIVER_OK == 0 {
                return false;
            }
            self.ready = true;
            self.stats.set_state(DevState::Up);
            self.broker.device(true, "the card's console is up");
        }
        let mut more = self.output();
        if self.ready {
            if let Some(s) = self.broker.take_resize() {
                self.size = Some(s);
            }
            if let Some(s) = self.size.take() {
                self.resize(s);
            }
            more |= self.input();
        }
        more
    }

    /// A copy failed: the card reset the device, or broke its rings.
    fn copy_failed(&mut self, dir: &str, e: &VdevError) {
        self.ready = false;
        if e.errno() == Some(libc_enodev()) {
            self.stats.set_state(DevState::Waiting);
            self.broker.device(false, "the card reset its console");
        } else {
            self.stats.add(m::ERRORS, 1);
            log::warn!(target: "mpssd", "{}: {dir}: {e}; waiting for the card to reset the device", self.name);
            self.stats.fail(format!("{dir}: {e}"));
            self.broker.device(false, "the card broke its console's rings");
        }
    }

    /// Card → host, [`TX_BATCH`] chains a hand-off.
    fn output(&mut self) -> bool {
        let mut out = Vec::new();
        let stats = &*self.stats;
        let d = drain(&mut self.file, &self.map, 1, &mut self.tx, BUDGET, |chain| {
            if chain.len() == TX_BUF {
                stats.add(m::ERRORS, 1);
            }
            out.extend_from_slice(chain);
        });
        if let Some(e) = d.error {
            self.copy_failed("reading the card's output", &e);
        }
        if !out.is_empty() {
            self.stats.add(m::OUTPUT_BYTES, out.len() as u64);
            self.broker.publish(&out);
            if let Some(p) = self.pty.clone() {
                self.write_pty(&p, &out);
            }
        }
        d.more
    }

    /// Host → card, while the card has receive buffers.
    fn input(&mut self) -> bool {
        let mut chains = 0;
        while chains < BUDGET {
            let pty_waiting = self.pty_in_at < self.pty_in_len;
            if !pty_waiting && !self.broker.has_input() {
                self.starved = false;
                return false;
            }
            if !self.map.pending(0) {
                if !self.starved {
                    self.starved = true;
                    self.stats.add(m::RING_FULL, 1);
                }
                return false;
            }
            let r = if pty_waiting {
                let (at, len) = (self.pty_in_at, self.pty_in_len);
                self.file
                    .copy_desc(0, &mut [IoSliceMut::new(&mut self.pty_in[at..len])], true)
                    .inspect(|&n| self.pty_in_at += n as usize)
            } else {
                let n = self.broker.peek_input(&mut self.inbox);
                self.file
                    .copy_desc(0, &mut [IoSliceMut::new(&mut self.inbox[..n])], true)
                    .inspect(|&took| self.broker.consume_input(took as usize))
            };
            match r {
                Ok(0) => return false,
                Ok(n) => {
                    self.stats.add(m::INPUT_BYTES, u64::from(n));
                    chains += 1;
                }
                Err(e) => {
                    self.copy_failed("passing input to the card", &e);
                    return false;
                }
            }
        }
        true
    }

    fn resize(&mut self, s: mpssd_proto::WindowSize) {
        let cfg = VirtioConsoleConfig {
            cols: s.cols,
            rows: s.rows,
            max_nr_ports: 0,
            emerg_wr: 0,
        };
        match self.file.config_change(&cfg.to_bytes()) {
            Ok(()) => self.stats.add(m::RESIZES, 1),
            Err(e) => {
                self.stats.add(m::ERRORS, 1);
                log::debug!(target: "mpssd", "{}: passing the window size {}x{}: {e}", self.name, s.cols, s.rows);
            }
        }
    }

    fn read_pty(&mut self, p: &Pty) {
        if self.pty_in_at < self.pty_in_len {
            return;
        }
        match p.read(&mut self.pty_in) {
            Ok(n) => {
                self.pty_in_at = 0;
                self.pty_in_len = n;
            }
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => {}
            Err(e) => {
                // mpssd holds the slave open, so this is a hangup forced on
                // it (vhangup) that lasts until the terminal that did it
                // closes: the pty is not read for PTY_PAUSE, so a hangup
                // that poll keeps reporting cannot make this thread spin.
                log::debug!(target: "mpssd", "{}: reading the pty: {e}; pausing it", self.name);
                self.pty_rest = Some(Instant::now() + PTY_PAUSE);
            }
        }
    }

    fn write_pty(&mut self, p: &Pty, data: &[u8]) {
        let mut rest = data;
        if self.pty_out.is_empty() {
            match p.write(data) {
                Ok(n) => rest = &data[n..],
                Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => {}
                Err(_) => {
                    self.stats.add(m::PTY_DROPPED_BYTES, data.len() as u64);
                    return;
                }
            }
        }
        self.pty_out.extend(rest);
        let excess = self.pty_out.len().saturating_sub(PTY_BACKLOG);
        if excess > 0 {
            self.pty_out.drain(..excess);
            self.stats.add(m::PTY_DROPPED_BYTES, excess as u64);
        }
    }

    fn flush_pty(&mut self, p: &Pty) {
        while !self.pty_out.is_empty() {
            let (a, _) = self.pty_out.as_slices();
            match p.write(a) {
                Ok(0) | Err(nix::errno::Errno::EAGAIN) => return,
                Ok(n) => {
                    self.pty_out.drain(..n);
                }
                Err(nix::errno::Errno::EINTR) => {}
                Err(_) => {
                    self.stats.add(m::PTY_DROPPED_BYTES, self.pty_out.len() as u64);
                    self.pty_out.clear();
                    return;
                }
            }
        }
    }
}

fn libc_enodev() -> i32 {
    nix::errno::Errno::ENODEV as i32
}
