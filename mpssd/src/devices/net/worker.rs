//! The net device's thread: one `poll()` over the card's `dev/micN` file,
//! the TAP and a stop eventfd; COPY_DESC (which blocks) only here, never on
//! the runtime's threads.
//!
//! Each wake-up serves both rings, at most [`TX_BUDGET`] frames from the
//! card and [`BUDGET`] to it before the other direction gets a look, draining what the card made available
//! (the driver wakes once per doorbell, so everything pending is served
//! before sleeping, and the card's doorbells coalesce while we work).
//! Frames move [`BATCH`] chains to a `copy_desc_batch`: on micemu one
//! hand-off between the processes for them all, which costs far more than
//! the copies (one ioctl each on the real device). From the card, the next
//! batch is copied while the last one is written to the TAP
//! (`dataplane::drain_overlapped`: micemu copies on its own thread while
//! this one writes); to the card, the next batch is read from the TAP
//! while the last is copied. Before sleeping, a wake
//! absorbed during a COPY_DESC is collected, so none is lost.
//!
//! Notification suppression is the driver's half, as the ABI has it (the
//! rings are mapped read-only; the used ring is the driver's to write):
//! while a ring holds chains we have not consumed, the card does not ring
//! for it (`VRING_USED_F_NO_NOTIFY`, `mic_core::host::vop::ring`), and it
//! rings again once we consume the last. Ours is the contract that makes
//! that safe: drain the transmit ring, and look at `pending` before each
//! receive copy and after the last, never waiting on a doorbell for chains
//! already there. Host → card, the card's `VRING_AVAIL_F_NO_INTERRUPT` (or
//! `used_event`) decides, in the driver too.
//!
//! Back-pressure: frames are read from the TAP only for receive chains
//! the card says it has posted (at most [`BATCH`] a batch, and as many
//! again for the next while one is copied), or one when it has none, so
//! at most 2 × [`BATCH`] frames wait for card buffers, in buffers
//! allocated once. While any waits the TAP is not polled at all, so a
//! card that never replenishes its receive ring costs nothing — the
//! kernel's TAP queue fills and drops — and the next kick (the card
//! posting buffers) resumes delivery.

use std::io::IoSliceMut;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use libmic::vdev::{IoBuf, RingMap, VdevError, VirtioFile, Wake};
use mic_core::abi::virtio::{VIRTIO_NET_MAX_FRAME, id, status};
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::eventfd::EventFd;

use super::hdr::{self, HDR};
use super::metrics::{NetState, NetStats, bump};
use super::tap::Tap;
use crate::devices::dataplane::drain_overlapped;

/// Frames served per direction before the other direction (and the stop
/// request) gets a look.
pub(super) const BUDGET: usize = 64;

/// Frames taken from the card per wake-up before the receive side gets a
/// look: four rings' worth (the card refills as we go), so the one batch
/// of a drain whose copy nothing overlaps (its first) is a small part.
pub(super) const TX_BUDGET: usize = 512;

/// Chains per `copy_desc_batch`; each direction has two sets of this many
/// buffers (each holds the largest frame: 2 × 2 × 32 × 64 KiB of address
/// space in all, of which only the pages frames touch are ever backed).
pub(super) const BATCH: usize = 32;

/// vring 0: host → card (the card's receive queue).
const RX: u8 = 0;
/// vring 1: card → host.
const TX: u8 = 1;

/// What a batch found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Batch {
    /// Nothing more to do now.
    Done,
    /// The budget ran out with work left.
    More,
}

pub(super) struct Worker {
    pub(super) card: u32,
    pub(super) file: VirtioFile,
    pub(super) map: RingMap,
    pub(super) tap: Tap,
    pub(super) stop: Arc<EventFd>,
    pub(super) stopping: Arc<AtomicBool>,
    pub(super) stats: Arc<NetStats>,
    /// [`BATCH`] × header + the largest frame: TAP reads.
    pub(super) rx_bufs: Vec<IoBuf>,
    /// [`BATCH`] × header + the largest frame + 1 (to see a chain that is
    /// longer).
    pub(super) tx_bufs: Vec<IoBuf>,
    /// Lengths of the TAP frames waiting for card buffers, in
    /// `rx_bufs[..held.len()]`, oldest first (at most `rx_bufs.len()`).
    held: Vec<usize>,
    /// What the card acknowledged, while its driver is up.
    acked: Option<u32>,
    /// The card broke a ring; waiting for it to reset the device.
    broken: bool,
    /// The last receive attempt found no card buffer.
    rx_blocked: bool,
    /// Reasons already logged (each is logged once per device life).
    logged: u32,
}

/// The worker's buffers, two sets of [`BATCH`] each way: TAP reads, and
/// card chains with one byte more than any valid one.
pub(super) fn buffers(file: &mut VirtioFile) -> (Vec<IoBuf>, Vec<IoBuf>) {
    // Two sets: the next batch is read from the TAP while one is copied.
    let rx = (0..2 * BATCH)
        .map(|_| file.alloc_buf(HDR + VIRTIO_NET_MAX_FRAME))
        .collect();
    // Two sets: one batch is copied while the last is written out.
    let tx = (0..2 * std::env::var("XTXB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(BATCH))
        .map(|_| file.alloc_buf(HDR + VIRTIO_NET_MAX_FRAME + 1))
        .collect();
    (rx, tx)
}

/// Why the worker ended.
#[derive(Debug)]
pub(super) enum End {
    Stopped,
    Gone,
    Failed(String),
}

impl Worker {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        card: u32,
        file: VirtioFile,
        map: RingMap,
        tap: Tap,
        stop: Arc<EventFd>,
        stopping: Arc<AtomicBool>,
        stats: Arc<NetStats>,
        (rx_bufs, tx_bufs): (Vec<IoBuf>, Vec<IoBuf>),
    ) -> Self {
        Self {
            card,
            file,
            map,
            tap,
            stop,
            stopping,
            stats,
            rx_bufs,
            tx_bufs,
            held: Vec::with_capacity(2 * BATCH),
            acked: None,
            broken: false,
            rx_blocked: false,
            logged: 0,
        }
    }

    /// Runs until stopped, the device is gone, or something fails.
    pub(super) fn run(mut self) -> End {
        self.stats.set_state(NetState::Waiting);
        let end = self.serve();
        self.stats.set_state(match end {
            End::Stopped => NetState::Down,
            End::Gone => NetState::Gone,
            End::Failed(_) => NetState::Failed,
        });
        end
    }

    fn serve(&mut self) -> End {
        loop {
            if self.stopping.load(Ordering::Acquire) {
                return End::Stopped;
            }
            if let Err(e) = self.follow_status() {
                return End::Failed(e);
            }
            let mut more = false;
            if self.acked.is_some() && !self.broken {
                match self.tx_batch().and_then(|a| self.rx_batch().map(|b| (a, b))) {
                    Ok((a, b)) => more = a == Batch::More || b == Batch::More,
                    Err(e) => return End::Failed(e),
                }
            }
            if more {
                continue;
            }
            // A doorbell noted during a COPY_DESC leaves nothing readable.
            match self.file.try_wake() {
                Ok(Some(Wake::Doorbell)) => {
                    bump(&self.stats.doorbells, 1);
                    continue;
                }
                Ok(Some(Wake::Gone)) => return End::Gone,
                Ok(_) => {}
                Err(e) => return End::Failed(format!("waiting for the card: {e}")),
            }
            if let Err(e) = self.sleep() {
                return End::Failed(e);
            }
        }
    }

    /// Follows the card's driver: DRIVER_OK starts the device with what it
    /// negotiated (TAP offloads to match); losing it (a device reset)
    /// stops it, and ends a broken ring's wait.
    fn follow_status(&mut self) -> Result<(), String> {
        let up = self.map.device_status(id::NET) & status::DRIVER_OK != 0;
        match (up, self.acked) {
            (true, None) if !self.broken => {
                let acked = self.map.guest_features(id::NET);
                self.tap
                    .set_offloads(hdr::tap_offloads(acked))
                    .map_err(|e| e.to_string())?;
                self.acked = Some(acked);
                self.rx_blocked = false;
                bump(&self.stats.activations, 1);
                self.stats.set_state(NetState::Up);
                log::info!(
                    target: "mpssd",
                    "mic{}: net: the card's driver is up (features {acked:#010x}, TAP offloads {:#x})",
                    self.card,
                    hdr::tap_offloads(acked)
                );
            }
            (false, _) if self.acked.is_some() || self.broken => {
                self.acked = None;
                self.broken = false;
                self.tap.set_offloads(0).map_err(|e| e.to_string())?;
                self.stats.set_state(NetState::Waiting);
            }
            _ => {}
        }
        Ok(())
    }

    /// A COPY_DESC the driver refused: the card broke the ring (or the
    /// device went away under us). Nothing moves until its driver resets
    /// the device or removes it; other errors end the worker.
    fn copy_failed(&mut self, vr: u8, e: &VdevError) -> Result<(), String> {
        if e.errno().is_none() {
            return Err(format!("COPY_DESC on vring {vr}: {e}"));
        }
        bump(&self.stats.ring_errors, 1);
        self.broken = true;
        self.stats.set_state(NetState::Broken);
        log::warn!(
            target: "mpssd",
            "mic{}: net: vring {vr}: {e}; waiting for the card to reset the device",
            self.card
        );
        Ok(())
    }

    /// Card → TAP: drain the card's transmit chains.
    fn tx_batch(&mut self) -> Result<Batch, String> {
        if self.broken {
            return Ok(Batch::Done);
        }
        let acked = self.acked.unwrap_or(0);
        let (card, tap, stats, logged) = (self.card, &self.tap, &*self.stats, &mut self.logged);
        // Counted once a drain, not once a frame.
        let (mut frames, mut bytes) = (0u64, 0u64);
        let d = drain_overlapped(
            &mut self.file,
            &self.map,
            TX,
            &mut self.tx_bufs,
            TX_BUDGET,
            |frame| {
                if forward(frame, acked, tap, stats, (card, logged)) {
                    frames += 1;
                    bytes += (frame.len() - HDR) as u64;
                }
            },
        );
        bump(&self.stats.tx_frames, frames);
        bump(&self.stats.tx_bytes, bytes);
        if let Some(e) = d.error {
            self.copy_failed(TX, &e)?;
            return Ok(Batch::Done);
        }
        Ok(if d.more { Batch::More } else { Batch::Done })
    }

    /// TAP → card: fill the card's posted receive buffers. The frames for
    /// the next batch are read from the TAP while micemu copies this one
    /// into the card ([`VirtioFile::start_batch`]), into the buffers after
    /// it, and only as many as the card says it has buffers for beyond it.
    fn rx_batch(&mut self) -> Result<Batch, String> {
        let mut served = 0;
        while served < BUDGET {
            if self.broken {
                return Ok(Batch::Done);
            }
            // Frames for the buffers the card says it has (one if none, to
            // hold while the TAP is left alone).
            let avail = usize::from(self.map.available(usize::from(RX)));
            self.read_tap(avail.clamp(1, BATCH))?;
            if self.held.is_empty() {
                return Ok(Batch::Done);
            }
            if !self.map.pending(usize::from(RX)) {
                self.ring_full();
                return Ok(Batch::Done);
            }
            let want = self.held.len().min(BATCH);
            // The held frames' slices, on the stack (no allocation a batch).
            let started = {
                let mut io: [IoSliceMut<'_>; BATCH] = std::array::from_fn(|_| IoSliceMut::new(&mut []));
                for ((slot, b), &n) in io.iter_mut().zip(&mut self.rx_bufs).zip(&self.held[..want]) {
                    *slot = IoSliceMut::new(&mut b[..n]);
                }
                self.file.start_batch(RX, &mut io[..want], true)
            };
            // Meanwhile, the next batch's frames, into the other buffers.
            let read = self.read_tap(want + avail.saturating_sub(want).min(BATCH));
            let b = match self.file.finish_batch(started) {
                Ok(b) => b,
                Err(e) => {
                    self.copy_failed(RX, &e)?;
                    return Ok(Batch::Done);
                }
            };
            // Counted once a batch, not once a frame.
            let (mut cut, mut bytes) = (0u64, 0u64);
            for (&moved, &len) in b.lens.iter().zip(&self.held[..b.chains]) {
                cut += u64::from((moved as usize) < len);
                bytes += (len - HDR) as u64;
            }
            if cut > 0 {
                bump(&self.stats.rx_truncated, cut);
            }
            bump(&self.stats.rx_frames, b.chains as u64);
            bump(&self.stats.rx_bytes, bytes);
            if b.chains > 0 {
                self.rx_blocked = false;
            }
            // The frames still waiting move to the front, in order.
            self.held.drain(..b.chains);
            self.rx_bufs.rotate_left(b.chains);
            served += b.chains;
            read?;
            if let Some(e) = b.error {
                self.copy_failed(RX, &e)?;
                return Ok(Batch::Done);
            }
            if b.chains < want {
                // The driver saw fewer chains than the card announced.
                self.ring_full();
                return Ok(Batch::Done);
            }
        }
        Ok(Batch::More)
    }

    /// Reads frames from the TAP into the buffers after the held ones
    /// until `want` are held (at most one per buffer) or the TAP has none.
    fn read_tap(&mut self, want: usize) -> Result<(), String> {
        while self.held.len() < want.min(self.rx_bufs.len()) {
            let buf = &mut self.rx_bufs[self.held.len()];
            match self.tap.recv(buf) {
                Ok(Some(n)) if n > HDR => {
                    hdr::mark_rx(&mut buf[..n]);
                    self.held.push(n);
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => return Err(format!("reading the TAP: {e}")),
            }
        }
        Ok(())
    }

    /// A frame waits and the card has no buffer: counted once per stall.
    fn ring_full(&mut self) {
        if !self.rx_blocked {
            self.rx_blocked = true;
            bump(&self.stats.rx_ring_full, 1);
        }
    }

    /// Sleeps until the card rings, the TAP has a frame for a card that can
    /// take it, or stop is asked.
    fn sleep(&mut self) -> Result<(), String> {
        let serving = self.acked.is_some() && !self.broken;
        // Only watched while a frame could go somewhere: a held frame
        // waits for the card's kick, not for more frames.
        let want_tap = serving && self.held.is_empty();
        let file = self.file.as_fd();
        let stop = self.stop.as_fd();
        let tap = self.tap.as_fd();
        let mut fds = vec![
            PollFd::new(file, PollFlags::POLLIN),
            PollFd::new(stop, PollFlags::POLLIN),
        ];
        if want_tap {
            fds.push(PollFd::new(tap, PollFlags::POLLIN));
        }
        bump(&self.stats.polls, 1);
        // TIMEOUT: none needed: the card's doorbells, the TAP and the stop
        // eventfd are the only things that change what there is to do.
        match nix::poll::poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => Ok(()),
            Err(e) => Err(format!("poll: {e}")),
        }
    }
}

/// Logs `what` the first time reason `bit` happens (`logged`: the reasons
/// already logged, each once per device life).
fn log_once(logged: &mut u32, card: u32, bit: u32, what: impl FnOnce() -> String) {
    if *logged & (1 << bit) == 0 {
        *logged |= 1 << bit;
        log::warn!(target: "mpssd", "mic{card}: net: {} (counted; logged once)", what());
    }
}

/// A transmit chain's bytes (a header and a frame) go to the TAP,
/// sanitised, or are dropped and counted (a reason logged once per card);
/// whether it went (the caller counts the frames that did).
fn forward(
    frame: &mut [u8],
    acked: u32,
    tap: &Tap,
    stats: &NetStats,
    (card, logged): (u32, &mut u32),
) -> bool {
    match hdr::sanitize_tx(frame, acked) {
        Ok(changed) => {
            if changed {
                bump(&stats.tx_sanitised, 1);
            }
            match tap.send(frame) {
                Ok(()) => true,
                Err(e) => {
                    bump(&stats.tx_drop_tap, 1);
                    log_once(logged, card, 0, || {
                        format!("the TAP refused a frame from the card: {e}")
                    });
                    false
                }
            }
        }
        Err(why) => {
            stats.dropped(why);
            log_once(logged, card, 1 + why as u32, || {
                format!("dropped a frame from the card: {why}")
            });
            false
        }
    }
}
