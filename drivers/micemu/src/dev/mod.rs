//! `dev/micN`: the host driver's character device, in process.
//!
//! One [`VdevFile`] is one open file of `/dev/micN` (one virtio device
//! slot), running the driver core's [`VopDevice`] against the card's host
//! RAM and GDDR exactly as `mic_fops.c` would: ADD_DEVICE, COPY_DESC and
//! CONFIG_CHANGE with the same errno, a read-only mapping with the original
//! offset layout, poll's wake-ups, and removal with its handshake on close.
//! [`server`] serves these over a Unix socket at `DIR/dev/micN`, one
//! connection per open file; tests may use them directly.
//!
//! Locks: a file's device has its own mutex; ADD_DEVICE and removal also
//! take the card's (for the SMPT, the host doorbells and the ring arena),
//! always card first. COPY_DESC takes only the device's, so data moves
//! while the card OS runs; the doorbell it rings waits until that lock is
//! gone (and, on the socket, until the client has its answer). Handshake
//! waits hold no lock.

pub mod server;

use std::fs::File;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use mic_core::handshake::{AckPoll, AckWait};
use mic_core::host::vop::{Copied, UserBuffers, VopDevice, VopError};

use crate::card::Card;
use crate::emu::Emulator;
use crate::fs::Errno;
use crate::hw::ArenaAlloc;

/// How a device's wake-ups reach its open file (poll), and its end.
pub trait Waker: Send + Sync + std::fmt::Debug {
    /// A card doorbell for this device, or a host-side reset.
    fn wake(&self);
    /// The device is gone (the card removed it): poll's error condition.
    fn gone(&self);
}

/// A device as the card's interrupt path and its open file share it.
#[derive(Debug)]
pub struct Vdev {
    dev: Mutex<VopDevice>,
    waker: Box<dyn Waker>,
}

impl Vdev {
    pub(crate) fn lock(&self) -> MutexGuard<'_, VopDevice> {
        self.dev.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn waker(&self) -> &dyn Waker {
        &*self.waker
    }
}

/// What a read-only mapping of the file consists of: the fd of the card's
/// host RAM (read-only) and the pieces to map end to end.
#[derive(Debug)]
pub struct MmapPlan {
    /// Read-only file description of the host RAM memfd.
    pub fd: File,
    /// `(offset in the mapping, offset in the fd, length)`.
    pub pieces: Vec<(u64, u64, usize)>,
}

/// One open file of `dev/micN`.
#[derive(Debug)]
pub struct VdevFile {
    emu: Arc<Emulator>,
    card: u32,
    vdev: Arc<Vdev>,
    closed: bool,
}

impl VdevFile {
    /// `open("/dev/micN")`: a fresh slot, registered with the card so its
    /// doorbells and resets reach it.
    pub fn open(emu: &Arc<Emulator>, card: u32, waker: Box<dyn Waker>) -> Result<Self, Errno> {
        let c = emu.card(card).ok_or(libc::ENODEV)?;
        let mut dev = VopDevice::new();
        dev.set_ack_timing(emu.config.timing.ack());
        let vdev = Arc::new(Vdev {
            dev: Mutex::new(dev),
            waker,
        });
        c.lock().vdevs.push(Arc::clone(&vdev));
        Ok(Self {
            emu: Arc::clone(emu),
            card,
            vdev,
            closed: false,
        })
    }

    fn card(&self) -> &Card {
        // INVARIANT: `open` checked the id; the fleet never shrinks.
        &self.emu.cards[self.card as usize]
    }

    /// The card this file belongs to.
    #[must_use]
    pub fn card_id(&self) -> u32 {
        self.card
    }

    /// MIC_VIRTIO_ADD_DEVICE.
    pub fn add_device(&self, block: &[u8]) -> Result<(), Errno> {
        let card = self.card();
        let mut st = card.lock();
        let st = &mut *st;
        let mut dev = self.vdev.lock();
        let mut alloc = ArenaAlloc {
            arena: &mut st.arena,
            ram: &card.host_ram,
        };
        let res = dev.add(&mut st.host, &card.host_mmio(), &card.host_ram, &mut alloc, block);
        match res {
            Ok(()) => {
                log::info!(
                    "mic{}: added virtio {} at page offset {:#x}",
                    self.card,
                    mic_core::abi::virtio::id::name(dev.desc().ty),
                    dev.slot()
                );
                Ok(())
            }
            Err(e) => Err(e.errno()),
        }
    }

    /// MIC_VIRTIO_COPY_DESC on vring `vr_idx` with the caller's buffers.
    pub fn copy_desc(
        &self,
        vr_idx: u8,
        user: &mut impl UserBuffers,
        update_used: bool,
    ) -> Result<Copied, Errno> {
        let bells = self.doorbells();
        let r = self.copy_desc_deferred(&bells, vr_idx, user, update_used);
        // The card answers on the event loop, as a card runs beside its
        // host: a caller here that drains a ring until it is empty sees it
        // empty once it outruns the card, never one refilled by its own
        // call.
        bells.into_pending().write(&self.card().host_mmio());
        r
    }

    /// Doorbells to the card held back over several COPY_DESCs (a batch)
    /// and rung once each when the caller is done.
    #[must_use]
    pub fn doorbells(&self) -> Doorbells<'_> {
        Doorbells::new(self.card().host_mmio())
    }

    /// Rings the doorbells COPY_DESCs asked for, and runs the card's
    /// interrupt handler, and the host interrupt it may answer with, in
    /// this thread ([`Emulator::deliver_here`]) rather than waking the
    /// event loop to do it. For a server that has answered its client
    /// already (the client goes on beside the card, as beside a real one);
    /// call it holding no lock.
    pub fn ring_here(&self, bells: PendingBells) {
        if bells.0.is_empty() {
            return;
        }
        let mmio = self.card().host_mmio();
        self.emu.deliver_here(|| bells.write(&mmio));
    }

    /// MIC_VIRTIO_COPY_DESC whose doorbell to the card waits in `bells`.
    pub fn copy_desc_deferred(
        &self,
        bells: &Doorbells<'_>,
        vr_idx: u8,
        user: &mut impl UserBuffers,
        update_used: bool,
    ) -> Result<Copied, Errno> {
        let card = self.card();
        // The card's doorbell is rung once the device's lock is released
        // (by the caller, after the batch): the card OS's answer (on the
        // event loop) needs that lock next.
        let mut dev = self.vdev.lock();
        let res = dev.copy_desc(bells, &card.host_ram, &card.gddr, vr_idx, user, update_used);
        let ty = dev.desc().ty;
        drop(dev);
        res.map_err(|e| {
            // The error that broke the ring is logged; the EIO of every
            // later copy until the card resets the device is not.
            if let VopError::Copy(mic_core::host::vop::CopyError::Ring(r)) = e {
                if r != mic_core::host::vop::RingError::Broken {
                    log::warn!(
                        "mic{}: virtio {}: vring {vr_idx}: {r}; broken until the card resets the device",
                        self.card,
                        mic_core::abi::virtio::id::name(ty)
                    );
                }
            }
            e.errno()
        })
    }

    /// MIC_VIRTIO_CONFIG_CHANGE: returns once the card acknowledged or the
    /// wait's budget ran out (not an error, as in the original).
    pub fn config_change(&self, config: &[u8]) -> Result<(), Errno> {
        let card = self.card();
        let wait = self
            .vdev
            .lock()
            .config_change(&card.host_mmio(), &card.host_ram, config)
            .map_err(|e| e.errno())?;
        if !self.wait_ack(&wait) {
            log::warn!("mic{}: config change not acknowledged by the card", self.card);
        }
        self.vdev
            .lock()
            .finish_config_change(&card.host_ram)
            .map_err(|e| e.errno())
    }

    /// Waits (no lock held) for a handshake; true if the card answered.
    fn wait_ack(&self, wait: &AckWait) -> bool {
        let start = Instant::now();
        loop {
            let ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
            match wait.poll(&self.card().host_ram, ms) {
                AckPoll::Acked => return true,
                AckPoll::TimedOut => return false,
                // TIMEOUT: bounded by the handshake's budget (10 s realistic).
                AckPoll::Wait { ms } => std::thread::sleep(Duration::from_millis(ms)),
            }
        }
    }

    /// mmap of `len` bytes at `offset`: read-only only (EACCES otherwise),
    /// the device must exist, and `offset` must start a piece of the
    /// layout (0 the device page, 0x1000 vring 0, ...), else EINVAL.
    pub fn mmap(&self, offset: u64, len: u64, write: bool) -> Result<MmapPlan, Errno> {
        let card = self.card();
        let dev = self.vdev.lock();
        if write {
            return Err(libc::EACCES);
        }
        if dev.poll_error(&card.host_ram) {
            return Err(if dev.state() == mic_core::host::vop::VopState::Empty {
                libc::EINVAL
            } else {
                libc::ENODEV
            });
        }
        let layout: Vec<_> = dev.mmap_layout().collect();
        let first = layout.iter().position(|p| p.0 == offset).ok_or(libc::EINVAL)?;
        let total: u64 = layout[first..].iter().map(|p| p.2 as u64).sum();
        if len == 0 || len > total {
            return Err(libc::EINVAL);
        }
        let mut pieces = Vec::new();
        let mut left = len;
        for &(at, off, n) in &layout[first..] {
            if left == 0 {
                break;
            }
            let take = (n as u64).min(left);
            pieces.push((at - offset, off, take as usize));
            left -= take;
        }
        let fd = card.host_ram.shared().read_only_fd().map_err(|_| libc::ENOMEM)?;
        Ok(MmapPlan { fd, pieces })
    }

    /// The card's memory, read-write, and its size: what micemu's socket
    /// hands a client as the card's memory BAR (the client then makes a
    /// COPY_DESC's one copy itself, where the driver's walk says).
    pub fn card_memory(&self) -> Result<(File, u64), Errno> {
        let gddr = self.card().gddr.shared();
        let fd = gddr.read_write_fd().map_err(|_| libc::ENOMEM)?;
        Ok((fd, mic_core::hw::Memory::size(gddr)))
    }

    /// poll's error condition.
    #[must_use]
    pub fn poll_error(&self) -> bool {
        self.vdev.lock().poll_error(&self.card().host_ram)
    }

    /// The device, for inspection (tests, debugfs).
    pub fn device(&self) -> MutexGuard<'_, VopDevice> {
        self.vdev.lock()
    }

    /// close(): ask the card to remove the device and wait (bounded) for
    /// its ack, then free everything and unregister.
    pub fn close(mut self) {
        self.do_close();
    }

    fn do_close(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        let card = self.card();
        let wait = self.vdev.lock().begin_remove(&card.host_mmio(), &card.host_ram);
        let unacked = wait.is_some_and(|w| !self.wait_ack(&w));
        self.finish_close();
        if unacked {
            // Said once the slot is free: whoever reads it may add a device
            // in its place.
            log::warn!("mic{}: device removal not acknowledged by the card", self.card);
        }
    }

    fn finish_close(&self) {
        let card = self.card();
        let mut st = card.lock();
        let st = &mut *st;
        {
            let mut dev = self.vdev.lock();
            let mut alloc = ArenaAlloc {
                arena: &mut st.arena,
                ram: &card.host_ram,
            };
            dev.finish_remove(&mut st.host, &card.host_ram, &mut alloc);
        }
        st.vdevs.retain(|v| !Arc::ptr_eq(v, &self.vdev));
    }
}

impl Drop for VdevFile {
    fn drop(&mut self) {
        self.do_close();
    }
}

/// Register access whose writes wait until the caller rings them (reads go
/// through): doorbells rung by code that runs under a lock, sent after it,
/// each distinct one once however many COPY_DESCs rang it.
#[derive(Debug)]
pub struct Doorbells<'a> {
    mmio: crate::hw::MmioView<'a>,
    // INVARIANT: only COPY_DESC's notification writes (a few doorbells).
    writes: std::cell::RefCell<Vec<(u32, u32)>>,
}

impl<'a> Doorbells<'a> {
    fn new(mmio: crate::hw::MmioView<'a>) -> Self {
        Self {
            mmio,
            writes: std::cell::RefCell::new(Vec::new()),
        }
    }

    /// What the copies asked for, to ring once the lock is gone (a server
    /// answers its client first: [`VdevFile::ring_here`]).
    pub fn into_pending(self) -> PendingBells {
        PendingBells(self.writes.into_inner())
    }
}

/// Doorbell writes held back: (register, value), each distinct one once.
#[derive(Debug, Default)]
#[must_use = "doorbells not rung are lost"]
pub struct PendingBells(Vec<(u32, u32)>);

impl PendingBells {
    fn write(self, mmio: &crate::hw::MmioView<'_>) {
        use mic_core::hw::Mmio as _;
        for (off, v) in self.0 {
            mmio.write32(off, v);
        }
    }
}

impl mic_core::hw::Mmio for Doorbells<'_> {
    fn read32(&self, offset: u32) -> u32 {
        self.mmio.read32(offset)
    }
    fn write32(&self, offset: u32, value: u32) {
        let mut w = self.writes.borrow_mut();
        if !w.contains(&(offset, value)) {
            w.push((offset, value));
        }
    }
}

/// The host driver's bottom half for a card→host doorbell: every device
/// on doorbell `db` takes re-homed used rings and card resets, then its
/// file is woken (or told the device is gone).
pub(crate) fn doorbell(card: &Card, vdevs: &[Arc<Vdev>], db: u8) {
    for v in vdevs {
        let mut dev = v.lock();
        if dev.c2h_db() != db || dev.state() != mic_core::host::vop::VopState::Added {
            continue;
        }
        match dev.handle_doorbell(&card.host_ram, &card.gddr) {
            Ok(ev) => {
                if let Some(e) = ev.refused {
                    log::warn!(
                        "mic{}: virtio {}: refused the card's used rings ({e}); broken until the card resets the device",
                        card.id,
                        mic_core::abi::virtio::id::name(dev.desc().ty)
                    );
                }
            }
            Err(e) => log::warn!("mic{}: virtio doorbell: {e}", card.id),
        }
        let gone = dev.card_removed(&card.host_ram);
        drop(dev);
        if gone {
            v.waker().gone();
        } else {
            v.waker().wake();
        }
    }
}

/// The host stopping the card resets every device and wakes its file.
pub(crate) fn reset_all(card: &Card, vdevs: &[Arc<Vdev>]) {
    for v in vdevs {
        if let Err(e) = v.lock().host_reset(&card.host_ram) {
            log::warn!("mic{}: resetting a virtio device: {e}", card.id);
        }
        v.waker().wake();
    }
}

/// debugfs `vdev_info`.
pub(crate) fn info(card: &Card, vdevs: &[Arc<Vdev>]) -> String {
    let mut out = String::new();
    for v in vdevs {
        let _ = v.lock().write_info(&card.host_ram, &mut out);
    }
    out
}

/// Caller buffers in this process: one slice, copied to and from GDDR
/// directly (one copy).
#[derive(Debug)]
pub struct LocalBuffers<'a> {
    buf: &'a mut [u8],
    gddr: &'a crate::hw::Gddr,
}

impl<'a> LocalBuffers<'a> {
    /// `buf` against `file`'s card memory.
    #[must_use]
    pub fn new(file: &'a VdevFile, buf: &'a mut [u8]) -> Self {
        Self {
            buf,
            gddr: &file.card().gddr,
        }
    }
}

impl UserBuffers for LocalBuffers<'_> {
    fn capacity(&self) -> u64 {
        self.buf.len() as u64
    }
    fn card_to_user(
        &mut self,
        off: u64,
        card_addr: u64,
        len: u32,
    ) -> Result<(), mic_core::host::vop::CopyFault> {
        let o = off as usize;
        let dst = self
            .buf
            .get_mut(o..o + len as usize)
            .ok_or(mic_core::host::vop::CopyFault)?;
        mic_core::hw::Memory::read(self.gddr, card_addr, dst).map_err(|_| mic_core::host::vop::CopyFault)
    }
    fn user_to_card(
        &mut self,
        off: u64,
        card_addr: u64,
        len: u32,
    ) -> Result<(), mic_core::host::vop::CopyFault> {
        let o = off as usize;
        let src = self
            .buf
            .get(o..o + len as usize)
            .ok_or(mic_core::host::vop::CopyFault)?;
        mic_core::hw::Memory::write(self.gddr, card_addr, src).map_err(|_| mic_core::host::vop::CopyFault)
    }
}

/// A waker for in-process files: counts wakes, remembers the end, and lets
/// a thread wait for either.
#[derive(Debug, Default)]
pub struct CondvarWaker {
    state: Mutex<(u64, bool)>,
    cv: std::sync::Condvar,
}

impl CondvarWaker {
    /// Waits until more than `seen` wakes happened or the device is gone,
    /// for at most `timeout`; returns (wakes so far, gone).
    pub fn wait(&self, seen: u64, timeout: Duration) -> (u64, bool) {
        let guard = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        // TIMEOUT: the caller's bound.
        let (g, _) = self
            .cv
            .wait_timeout_while(guard, timeout, |s| s.0 <= seen && !s.1)
            .unwrap_or_else(PoisonError::into_inner);
        *g
    }
}

impl Waker for Arc<CondvarWaker> {
    fn wake(&self) {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).0 += 1;
        self.cv.notify_all();
    }
    fn gone(&self) {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).1 = true;
        self.cv.notify_all();
    }
}
