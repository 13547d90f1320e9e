// SPDX-License-Identifier: GPL-2.0-only

//! [`HostCard`]: one X100 as the module drives it. Every decision is
//! mic-core's (`HostDevice`, `ResetSeq`, the loader); this file only moves
//! the core's calls onto kernel contexts: sysfs stores, the reset work item,
//! the shutdown interrupt and its thread.

use core::sync::atomic::{AtomicU32, Ordering};

use kernel::firmware::Firmware;
use kernel::prelude::*;
use kernel::str::CStr;
use kernel::sync::lock::{mutex::MutexBackend, Guard};
use kernel::sync::{Arc, CondVar, Mutex};
use kernel::workqueue::{self, Work, WorkItem};
use kernel::{impl_has_work, new_condvar, new_mutex, new_work};

use crate::abi::{BootMode, MicState};
use crate::attrs;
use crate::host::attrs::Attr;
use crate::host::boot::{BootError, BootParams};
use crate::host::doorbell;
use crate::host::reset::{ResetPoll, ResetSeq};
use crate::host::state::{HostDevice, ResetStart, Transition};
use crate::host::sysfs::kernel_vaddr_to_aperture;
use crate::host::vop::VopDevice;
use crate::hw::{Memory, Mmio};
use crate::mem::{Blocks, DmaAlloc, HostMem};
use crate::regs;
use crate::shim::{self, DmaBuf, SeqFile, ShimDev};

/// A positive errno from mic-core as a kernel error.
pub(crate) fn core_err(errno: i32) -> Error {
    Error::from_errno(-errno)
}

/// The longest card log the debugfs `log_buf` file returns: the length lives
/// in card memory and is card-controlled.
const MAX_LOG_BUF: u64 = 16 << 20;

/// What user space stored in the string and address attributes.
#[derive(Default)]
pub(crate) struct Attrs {
    pub(crate) cmdline: Option<KVec<u8>>,
    pub(crate) firmware: Option<KVec<u8>>,
    pub(crate) ramdisk: Option<KVec<u8>>,
    pub(crate) bootmode: Option<BootMode>,
    pub(crate) log_buf_addr: u64,
    pub(crate) log_buf_len: u64,
}

/// One open file's virtio device.
pub(crate) struct Vdev {
    pub(crate) vop: VopDevice,
    /// A card doorbell (or a host reset) for it since the last poll.
    pub(crate) woken: bool,
}

/// The state behind the card's lock.
pub(crate) struct Inner {
    pub(crate) host: HostDevice,
    pub(crate) attrs: Attrs,
    /// The ring blocks of every virtio device.
    pub(crate) blocks: Blocks,
    /// One entry per open file of `/dev/micN` (`None` once closed), boxed:
    /// a `VopDevice` is 9 KiB.
    pub(crate) vdevs: KVec<Option<KBox<Vdev>>>,
    /// A reset the work item is to drive (taken by it when it runs).
    pending_reset: Option<ResetSeq>,
    /// Removal began: the hardware must not be touched any more.
    pub(crate) removed: bool,
}

/// One card.
#[pin_data]
pub(crate) struct HostCard {
    id: u32,
    device_id: u16,
    revision: u8,
    msix: bool,
    hw: ShimDev,
    dp: DmaBuf,
    /// Interrupt causes the hard handler acknowledged, for the thread.
    causes: AtomicU32,
    #[pin]
    inner: Mutex<Inner>,
    /// Signalled whenever a reset finishes.
    #[pin]
    reset_done: CondVar,
    #[pin]
    reset_work: Work<HostCard>,
}

impl_has_work! {
    impl HasWork<Self> for HostCard { self.reset_work }
}

impl WorkItem for HostCard {
    type Pointer = Arc<HostCard>;

    fn run(this: Arc<HostCard>) {
        this.run_reset();
    }
}

/// The probe-time facts of a card.
pub(crate) struct CardInfo {
    pub(crate) id: u32,
    pub(crate) device_id: u16,
    pub(crate) revision: u8,
    pub(crate) msix: bool,
}

impl HostCard {
    /// Probe: the core programs the SMPT, maps the device page for the card,
    /// publishes it in SPAD14/15 and initialises the bootparam; with MSI-X
    /// the shutdown doorbell's source is routed to vector 0.
    pub(crate) fn new(info: CardInfo, hw: ShimDev, dp: DmaBuf) -> Result<Arc<Self>> {
        let mut host =
            HostDevice::probe(&hw, &dp, dp.dma_addr()).map_err(|e| core_err(e.errno()))?;
        host.set_msix(info.msix);
        if info.msix {
            let db = host.c2h_shutdown_db();
            let v = hw.read32(regs::mxar(0));
            hw.write32(
                regs::mxar(0),
                v | (1 << (regs::DB_SRC_START + u32::from(db))),
            );
        }
        Arc::pin_init(
            pin_init!(HostCard {
                id: info.id,
                device_id: info.device_id,
                revision: info.revision,
                msix: info.msix,
                hw,
                dp,
                causes: AtomicU32::new(0),
                inner <- new_mutex!(Inner {
                    host,
                    attrs: Attrs::default(),
                    blocks: Blocks::new(),
                    vdevs: KVec::new(),
                    pending_reset: None,
                    removed: false,
                }),
                reset_done <- new_condvar!(),
                reset_work <- new_work!("HostCard::reset_work"),
            }),
            GFP_KERNEL,
        )
    }

    pub(crate) fn id(&self) -> u32 {
        self.id
    }

    pub(crate) fn device_id(&self) -> u16 {
        self.device_id
    }

    pub(crate) fn revision(&self) -> u8 {
        self.revision
    }

    pub(crate) fn shim(&self) -> &ShimDev {
        &self.hw
    }

    pub(crate) fn device_page(&self) -> &DmaBuf {
        &self.dp
    }

    /// Host memory (device page and ring blocks); `blocks` is the locked
    /// card's.
    pub(crate) fn host_mem_parts<'a>(&'a self, blocks: &'a Blocks) -> HostMem<'a> {
        HostMem {
            dp: &self.dp,
            blocks,
        }
    }

    /// The ring-block allocator; `blocks` is the locked card's.
    pub(crate) fn dma_alloc_parts<'a>(&'a self, blocks: &'a Blocks) -> DmaAlloc<'a> {
        DmaAlloc {
            shim: &self.hw,
            blocks,
        }
    }

    pub(crate) fn lock(&self) -> Guard<'_, Inner, MutexBackend> {
        self.inner.lock()
    }

    /// `sysfs_notify` for a state change (and `/dev/micN` pollers).
    fn notify(&self, t: Option<Transition>) {
        if t.is_some() {
            self.hw.notify(attr_index(Attr::State));
        }
    }

    /// POSTCODE, or all ones once removed.
    pub(crate) fn read_post_code(&self) -> u32 {
        let st = self.lock();
        if st.removed {
            return u32::MAX;
        }
        self.hw.read32(regs::POSTCODE)
    }

    /// "reset" (`force` = false) and debugfs `soft_reset` (`force` = true):
    /// starts the core's reset sequence and hands it to the work item;
    /// returns at once, as the original. Whether a reset was started.
    pub(crate) fn reset(self: &Arc<Self>, force: bool) -> Result<bool> {
        let mut st = self.lock();
        self.begin_reset(&mut st, force)
    }

    fn begin_reset(
        self: &Arc<Self>,
        st: &mut Guard<'_, Inner, MutexBackend>,
        force: bool,
    ) -> Result<bool> {
        if st.removed {
            return Err(ENODEV);
        }
        match st.host.begin_reset(&self.hw, &self.dp, force) {
            Ok(ResetStart::Started(seq)) => {
                st.pending_reset = Some(seq);
                // Stopping the card resets every virtio device.
                let inner = &mut **st;
                let mem = HostMem {
                    dp: &self.dp,
                    blocks: &inner.blocks,
                };
                for v in inner.vdevs.iter_mut().flatten() {
                    let _ = v.vop.host_reset(&mem);
                    v.woken = true;
                }
                self.hw.wake();
                // Already queued is impossible: the core refuses a second
                // reset while one runs, and the work takes the sequence
                // before it finishes it.
                let _ = workqueue::system_long().enqueue(self.clone());
                Ok(true)
            }
            Ok(ResetStart::AlreadyOffline | ResetStart::InProgress) => Ok(false),
            Err(e) => Err(core_err(e.errno())),
        }
    }

    /// The reset work item: drives the sequence with the core's timing
    /// (settle, then polls of SPAD2 one period apart), then finishes it.
    fn run_reset(&self) {
        let Some(mut seq) = self.lock().pending_reset.take() else {
            return;
        };
        let start = shim::now_ms();
        // TIMEOUT: the core's ResetTiming bounds the sequence (1 s settle +
        // 45 polls 1 s apart by default); `poll` answers Failed after that.
        let ok = loop {
            match seq.poll(&self.hw, shim::now_ms().saturating_sub(start)) {
                ResetPoll::Wait { ms } => shim::msleep(ms),
                ResetPoll::Ready => break true,
                ResetPoll::Failed => break false,
            }
        };
        let mut st = self.lock();
        let t = st.host.finish_reset(ok);
        drop(st);
        self.notify(t);
        self.reset_done.notify_all();
    }

    /// "boot": must be offline and not resetting; loads `firmware` (and
    /// `ramdisk` in linux mode) through the firmware loader, runs the core's
    /// loader, and if the bootstrap is not ready resets first and waits for
    /// it, as the original. Returns when the card is online.
    pub(crate) fn boot(self: &Arc<Self>) -> Result {
        let (mode, fw_name, rd_name, cmdline) = {
            let st = self.lock();
            if st.removed {
                return Err(ENODEV);
            }
            if st.host.state() != MicState::Offline || st.host.is_resetting() {
                return Err(EINVAL);
            }
            let mode = st.attrs.bootmode.ok_or(EINVAL)?;
            let fw = cstring(st.attrs.firmware.as_deref().ok_or(EINVAL)?)?;
            let rd = match (&st.attrs.ramdisk, mode) {
                (Some(name), BootMode::Linux) => Some(cstring(name)?),
                _ => None,
            };
            let cmdline = match &st.attrs.cmdline {
                Some(c) => Some(copy(c)?),
                None => None,
            };
            (mode, fw, rd, cmdline)
        };
        let dev = self.hw.device();
        let image = Firmware::request(as_cstr(&fw_name)?, dev)?;
        let ramdisk = match &rd_name {
            Some(name) => Some(Firmware::request(as_cstr(name)?, dev)?),
            None => None,
        };
        let cmdline = match &cmdline {
            Some(c) => Some(core::str::from_utf8(c).map_err(|_| EINVAL)?),
            None => None,
        };
        let params = BootParams {
            mode,
            image: image.data(),
            ramdisk: ramdisk.as_ref().map(Firmware::data),
            cmdline,
        };
        let mut st = self.lock();
        let mut reset_once = false;
        loop {
            if st.removed {
                return Err(ENODEV);
            }
            match st
                .host
                .start(&self.hw, &self.hw.aperture(), &self.dp, &params)
            {
                Ok(out) => {
                    drop(st);
                    self.notify(Some(out.transition));
                    return Ok(());
                }
                Err(BootError::FirmwareNotReady) if !reset_once => {
                    reset_once = true;
                    if !self.begin_reset(&mut st, true)? {
                        return Err(EINVAL);
                    }
                    // TIMEOUT: the reset work finishes within the core's
                    // reset budget and signals `reset_done` either way.
                    while st.host.is_resetting() && !st.removed {
                        self.reset_done.wait(&mut st);
                    }
                    if st.host.state() != MicState::Offline {
                        return Err(EINVAL);
                    }
                }
                Err(e) => return Err(core_err(e.errno())),
            }
        }
    }

    /// "shutdown": the core's handshake; a no-op unless online with the
    /// card's shutdown doorbell published.
    pub(crate) fn shutdown(&self) -> Result {
        let mut st = self.lock();
        if st.removed {
            return Err(ENODEV);
        }
        let t = st
            .host
            .request_shutdown(&self.hw, &self.dp)
            .map_err(|e| core_err(e.errno()))?;
        drop(st);
        self.notify(t);
        Ok(())
    }

    /// Hard interrupt: acknowledge the causes; whether any were ours.
    pub(crate) fn irq(&self) -> bool {
        let read = doorbell::ack_interrupt(&self.hw);
        let causes = if self.msix {
            // Vector 0 is ours alone and carries every doorbell source, and
            // auto-clear (SIAC) may have emptied SICR0 already: let each
            // handler look at its own flags.
            read | regs::DB_SRC_MASK
        } else if read == 0 || read == u32::MAX {
            // Shared INTx or a surprise-removed device: not ours.
            return false;
        } else {
            read
        };
        self.causes.fetch_or(causes, Ordering::AcqRel);
        doorbell::intr_workarounds(&self.hw, self.revision == 0);
        true
    }

    /// Interrupt thread: the shutdown doorbell's bottom half, then wake
    /// `/dev/micN` pollers (every card doorbell does).
    pub(crate) fn irq_thread(&self) {
        let causes = self.causes.swap(0, Ordering::AcqRel);
        let dbs = doorbell::doorbells_in(causes);
        let mut st = self.lock();
        if st.removed {
            return;
        }
        {
            let inner = &mut *st;
            let mem = HostMem {
                dp: &self.dp,
                blocks: &inner.blocks,
            };
            let aperture = self.hw.aperture();
            for v in inner.vdevs.iter_mut().flatten() {
                if v.vop.device_type().is_none() || dbs & (1 << v.vop.c2h_db()) == 0 {
                    continue;
                }
                match v.vop.handle_doorbell(&mem, &aperture) {
                    Ok(ev) => {
                        if let Some(e) = ev.refused {
                            pr_warn!("mic{}: virtio device refused: {}\n", self.id, e);
                        }
                    }
                    Err(e) => pr_warn!("mic{}: virtio doorbell: {}\n", self.id, e),
                }
                v.woken = true;
            }
        }
        if dbs & (1 << st.host.c2h_shutdown_db()) != 0 {
            match st.host.handle_shutdown_interrupt(&self.dp) {
                Ok(Some(report)) => {
                    drop(st);
                    self.hw.notify(attr_index(Attr::ShutdownStatus));
                    self.notify(report.transition);
                }
                Ok(None) => drop(st),
                Err(e) => {
                    drop(st);
                    pr_warn!("mic{}: ignored shutdown report: {}\n", self.id, e);
                }
            }
        } else {
            drop(st);
        }
        self.hw.wake();
    }

    /// debugfs `log_buf`: the card's `__log_buf`, found through the card
    /// kernel addresses user space stored, read through the aperture with
    /// the card-controlled length capped.
    pub(crate) fn dump_log_buf(&self, s: &mut SeqFile) -> Result {
        let st = self.lock();
        let (addr, len_addr) = (st.attrs.log_buf_addr, st.attrs.log_buf_len);
        if st.removed || addr == 0 || len_addr == 0 || !attrs::log_readable(st.host.state()) {
            return Ok(());
        }
        let (Some(off), Some(len_off)) = (
            kernel_vaddr_to_aperture(addr),
            kernel_vaddr_to_aperture(len_addr),
        ) else {
            return Ok(());
        };
        let aper = self.hw.aperture();
        let Ok(len) = aper.read_u32(len_off) else {
            return Ok(());
        };
        let len = u64::from(len).min(MAX_LOG_BUF);
        if crate::hw::check_range(&aper, off, len).is_err() {
            return Ok(());
        }
        let mut chunk = [0u8; 256];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(chunk.len() as u64) as usize;
            aper.read(off + done, &mut chunk[..n]).map_err(|_| EIO)?;
            s.write(&chunk[..n]);
            done += n as u64;
        }
        Ok(())
    }

    /// Removal: the core's stop (a reset unless offline), waited for; after
    /// it nothing touches the hardware.
    pub(crate) fn remove(self: &Arc<Self>) {
        let mut st = self.lock();
        if let Ok(true) = self.begin_reset(&mut st, false) {
            // TIMEOUT: bounded by the core's reset budget, as in `boot`.
            while st.host.is_resetting() {
                self.reset_done.wait(&mut st);
            }
        }
        // Open files keep their slots; their devices go now, with their DMA.
        let inner = &mut *st;
        let mem = HostMem {
            dp: &self.dp,
            blocks: &inner.blocks,
        };
        let mut alloc = DmaAlloc {
            shim: &self.hw,
            blocks: &inner.blocks,
        };
        for v in inner.vdevs.iter_mut().flatten() {
            v.vop.finish_remove(&mut inner.host, &mem, &mut alloc);
        }
        inner.blocks.free_all(&self.hw);
        st.removed = true;
        drop(st);
        self.flush_reset_work();
        self.hw.wake();
    }

    /// Waits until the reset work item is idle (it may still be returning
    /// after signalling `reset_done`).
    fn flush_reset_work(&self) {
        // SAFETY: the pointer is this card's own `Work` field, valid for the call.
        let work = unsafe { Work::raw_get(core::ptr::addr_of!(self.reset_work)) };
        // SAFETY: `work` points to the initialised `work_struct` of this
        // pinned card, which outlives the call.
        unsafe { kernel::bindings::flush_work(work) };
    }
}

/// A copy of an attribute's bytes, so the lock is not held across the
/// firmware loader.
fn copy(b: &[u8]) -> Result<KVec<u8>> {
    let mut v = KVec::new();
    v.extend_from_slice(b, GFP_KERNEL)?;
    Ok(v)
}

/// A firmware file name with its NUL.
fn cstring(name: &[u8]) -> Result<KVec<u8>> {
    let mut v = copy(name)?;
    v.push(0, GFP_KERNEL)?;
    Ok(v)
}

fn as_cstr(v: &[u8]) -> Result<&CStr> {
    CStr::from_bytes_with_nul(v).map_err(|_| EINVAL)
}

/// The index of a sysfs attribute in the table the shim was given.
pub(crate) fn attr_index(a: Attr) -> usize {
    Attr::ALL.iter().position(|&x| x == a).unwrap_or(usize::MAX)
}
