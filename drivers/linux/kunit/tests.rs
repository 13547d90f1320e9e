// SPDX-License-Identifier: GPL-2.0-only

//! mic-core inside a kernel: the KUnit cases `suite.c` declares, each a
//! `#[no_mangle]` entry point asserting through KUnit.
//!
//! The core is compiled in unchanged, with the kernel's `core`, flags and
//! overflow checks (`CONFIG_RUST_OVERFLOW_CHECKS`). Its host-side unit tests
//! use `std` (vectors, formatting, proptest), which a kernel does not have,
//! so these cases drive the same entry points through allocation-light
//! fakes of the core's hardware traits: a register file and byte memories
//! on the kernel's allocators. Hostile-input cases use a fixed-seed
//! xorshift generator instead of proptest.

use core::cell::RefCell;

use kernel::alloc::{KVec, VVec};
use kernel::ffi::c_void;
use kernel::prelude::*;

include!("../mic_core.rs");

use abi::{
    BootMode, MicBootparam, MicDeviceCtrl, MicDeviceDesc, MicState, MicStatus, MicVqconfig,
    BP_H2C_SHUTDOWN_DB, BP_SHUTDOWN_CARD, BP_SHUTDOWN_STATUS, MIC_DP_SIZE, MIC_MAGIC,
};
use card::{CardDevice, CardError};
use host::boot::{self, BootError, BootParams};
use host::reset::{ResetPoll, ResetSeq, ResetTiming};
use host::smpt::{Smpt, SmptError, SMPT_CARD_BASE, SMPT_PAGE_SIZE};
use host::state::{HostDevice, HostError, ResetStart, Transition};
use host::sysfs;
use host::vop::{
    CopyError, CopyFault, HostAlloc, HostBuf, RingError, UserBuffers, VopDevice, VopError, VopState,
};
use hw::{in_bounds, MemError, Memory, Mmio};
use printk::LogRing;

/// A KUnit expectation; a failure ends the case (KUnit aborts it).
macro_rules! check {
    ($cond:expr) => {
        kernel::kunit_assert!("mic_core", "linux/kunit/tests.rs", 0, $cond)
    };
}

macro_rules! check_eq {
    ($left:expr, $right:expr) => {
        check!($left == $right)
    };
}

/// Unwraps a setup step (an allocation); a failure fails the case.
macro_rules! need {
    ($e:expr) => {
        match $e {
            Some(v) => v,
            None => {
                check!(false);
                return;
            }
        }
    };
}

// ---------------------------------------------------------------------------
// Fakes of the core's hardware traits
// ---------------------------------------------------------------------------

/// A register file: reads return the last value written; writes are logged.
struct Regs {
    regs: RefCell<VVec<u32>>,
    writes: RefCell<KVec<(u32, u32)>>,
    /// A write could not be logged (allocation failure): checked by `log`.
    lost: core::cell::Cell<bool>,
}

impl Regs {
    fn new() -> Option<Self> {
        let n = (regs::MMIO_SIZE / 4) as usize;
        Some(Self {
            regs: RefCell::new(VVec::from_elem(0, n, GFP_KERNEL).ok()?),
            writes: RefCell::new(KVec::new()),
            lost: core::cell::Cell::new(false),
        })
    }

    fn set(&self, off: u32, v: u32) {
        if let Some(r) = self.regs.borrow_mut().get_mut((off / 4) as usize) {
            *r = v;
        }
    }

    fn get(&self, off: u32) -> u32 {
        self.regs
            .borrow()
            .get((off / 4) as usize)
            .copied()
            .unwrap_or(u32::MAX)
    }

    fn clear_log(&self) {
        *self.writes.borrow_mut() = KVec::new();
    }

    /// The logged writes (`None` if one was lost).
    fn log(&self) -> Option<core::cell::Ref<'_, KVec<(u32, u32)>>> {
        (!self.lost.get()).then(|| self.writes.borrow())
    }

    /// Number of writes to `off` and the last value written there.
    fn writes_to(&self, off: u32) -> (usize, Option<u32>) {
        let w = self.writes.borrow();
        let mut it = w.iter().filter(|(o, _)| *o == off);
        let n = it.clone().count();
        (n, it.next_back().map(|(_, v)| *v))
    }
}

impl Mmio for Regs {
    fn read32(&self, offset: u32) -> u32 {
        self.get(offset)
    }

    fn write32(&self, offset: u32, value: u32) {
        if self
            .writes
            .borrow_mut()
            .push((offset, value), GFP_KERNEL)
            .is_err()
        {
            self.lost.set(true);
        }
        self.set(offset, value);
    }
}

/// Memory whose valid bytes are `base .. base + len` (`size()` is
/// `base + len`; addresses below `base` fail like out-of-range ones).
struct Ram {
    base: u64,
    data: RefCell<VVec<u8>>,
}

impl Ram {
    fn new(len: usize) -> Option<Self> {
        Self::with_base(0, len)
    }

    fn with_base(base: u64, len: usize) -> Option<Self> {
        Some(Self {
            base,
            data: RefCell::new(VVec::from_elem(0, len, GFP_KERNEL).ok()?),
        })
    }

    fn range(&self, addr: u64, len: usize) -> Result<usize, MemError> {
        let err = MemError::OutOfBounds {
            addr,
            len: len as u64,
        };
        let rel = addr.checked_sub(self.base).ok_or(err)?;
        if in_bounds(rel, len as u64, self.data.borrow().len() as u64) {
            Ok(rel as usize)
        } else {
            Err(err)
        }
    }

    /// Whether the bytes at `addr` are `expect`.
    fn holds(&self, addr: u64, expect: &[u8]) -> bool {
        self.range(addr, expect.len())
            .is_ok_and(|i| self.data.borrow()[i..i + expect.len()] == *expect)
    }

    fn fill(&self, addr: u64, data: &[u8]) -> bool {
        self.write(addr, data).is_ok()
    }

    fn all_zero(&self) -> bool {
        self.data.borrow().iter().all(|&b| b == 0)
    }

    /// A copy of `len` bytes at `addr`.
    fn snapshot(&self, addr: u64, len: usize) -> Option<KVec<u8>> {
        let i = self.range(addr, len).ok()?;
        let mut v = KVec::new();
        v.extend_from_slice(&self.data.borrow()[i..i + len], GFP_KERNEL)
            .ok()?;
        Some(v)
    }
}

impl Memory for Ram {
    fn size(&self) -> u64 {
        self.base + self.data.borrow().len() as u64
    }

    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        let i = self.range(addr, buf.len())?;
        buf.copy_from_slice(&self.data.borrow()[i..i + buf.len()]);
        Ok(())
    }

    fn write(&self, addr: u64, data: &[u8]) -> Result<(), MemError> {
        let i = self.range(addr, data.len())?;
        self.data.borrow_mut()[i..i + data.len()].copy_from_slice(data);
        Ok(())
    }
}

/// xorshift64*: deterministic hostile input without an RNG dependency.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            *b = self.next() as u8;
        }
    }
}

const MIB: u64 = 1 << 20;

fn card_ready(boot_addr: u32) -> Option<Regs> {
    let r = Regs::new()?;
    r.set(
        regs::spad(regs::SPAD_DOWNLOAD_INFO),
        regs::spad2_encode(true, 3, boot_addr),
    );
    Some(r)
}

/// A bzImage-shaped kernel of `len` bytes.
fn kernel_image(len: usize) -> Option<KVec<u8>> {
    let mut img = KVec::from_elem(0x90u8, len, GFP_KERNEL).ok()?;
    bzimage::Header::new().write_into(&mut img).ok()?;
    Some(img)
}

fn linux<'a>(
    image: &'a [u8],
    ramdisk: Option<&'a [u8]>,
    cmdline: Option<&'a str>,
) -> BootParams<'a> {
    BootParams {
        mode: BootMode::Linux,
        image,
        ramdisk,
        cmdline,
    }
}

// ---------------------------------------------------------------------------
// The loader
// ---------------------------------------------------------------------------

#[no_mangle]
extern "C" fn mic_kunit_loader_linux_layout(_test: *mut c_void) {
    let mmio = need!(card_ready(0x10_0000));
    let ap = need!(Ram::new(4 * MIB as usize));
    let img = need!(kernel_image(0x1000));
    let rd = [0xABu8; 100];
    let info = boot::load(&mmio, &ap, &linux(&img, Some(&rd), Some("console=hvc0")));
    let info = need!(info.ok());
    check_eq!(info.boot_addr, 0x10_0000);
    check_eq!(info.image_len, 0x1000);
    check_eq!(mmio.get(regs::spad(regs::SPAD_IMAGE_SIZE)), 0x1000);
    check!(ap.holds(0x10_0000 + 0x300, &[0x90; 16]));
    let expect = b" mem=4M console=hvc0\0";
    check_eq!(info.cmdline, Some((0x10_1000, expect.len())));
    check!(ap.holds(0x10_1000, expect));
    check_eq!(info.ramdisk, Some((0x20_0000, 100)));
    check!(ap.holds(0x20_0000, &rd));
    let h = need!(bzimage::read_header(&ap, 0x10_0000).ok());
    check_eq!(h.ramdisk_image, 0x20_0000);
    check_eq!(h.ramdisk_size, 100);
    // The caller's image is left as it was.
    check_eq!(bzimage::parse_header(&img).map(|h| h.ramdisk_size), Ok(0));
    // "elf" loads the image only.
    let ap = need!(Ram::new(4 * MIB as usize));
    let elf = BootParams {
        mode: BootMode::Elf,
        image: &[7; 64],
        ramdisk: Some(&rd),
        cmdline: Some("quiet"),
    };
    let info = need!(boot::load(&mmio, &ap, &elf).ok());
    check_eq!(info.cmdline, None);
    check_eq!(info.ramdisk, None);
    check!(ap.holds(0x10_0000, &[7; 64]));
    check!(ap.holds(0x10_0000 + 64, &[0; 16]));
}

#[no_mangle]
extern "C" fn mic_kunit_loader_refusals_write_nothing(_test: *mut c_void) {
    let mmio = need!(card_ready(0x10_0000));
    let ap = need!(Ram::new(4 * MIB as usize));
    let small = need!(kernel_image(0x1000));
    let big = need!(kernel_image(3 * MIB as usize + 1));
    let long = need!(KVec::from_elem(b'x', boot::CMDLINE_SIZE, GFP_KERNEL).ok());
    let long = need!(core::str::from_utf8(&long).ok());
    let huge_rd = need!(VVec::from_elem(0u8, 2 * MIB as usize + 1, GFP_KERNEL).ok());
    mmio.clear_log();
    check!(matches!(
        boot::load(&mmio, &ap, &linux(&big, None, None)),
        Err(BootError::ImageTooLarge { .. })
    ));
    check_eq!(
        boot::load(&mmio, &ap, &linux(&small, None, Some(long))),
        Err(BootError::CmdlineTooLong)
    );
    check!(matches!(
        boot::load(&mmio, &ap, &linux(&small, Some(&huge_rd), None)),
        Err(BootError::RamdiskTooLarge { .. })
    ));
    check!(matches!(
        boot::load(&mmio, &ap, &linux(&[0; 0x1000], Some(&[1]), None)),
        Err(BootError::BadImage(_))
    ));
    mmio.set(
        regs::spad(regs::SPAD_DOWNLOAD_INFO),
        regs::spad2_encode(true, 0, 0x8000_1000),
    );
    check_eq!(
        boot::load(&mmio, &ap, &linux(&small, None, None)),
        Err(BootError::BootAddrTooHigh(0x8000_1000))
    );
    check!(need!(mmio.log()).is_empty());
    check!(ap.all_zero());
}

// ---------------------------------------------------------------------------
// The state machine and the reset sequence
// ---------------------------------------------------------------------------

const DP_DMA: u64 = 0x1_2345_6000;

/// Drives a reset sequence on a fake clock; `ready_at` is when the
/// bootstrap reports ready. Returns the outcome, the time and the polls.
fn drive(seq: &mut ResetSeq, mmio: &Regs, ready_at: Option<u64>) -> (ResetPoll, u64, u32) {
    let mut t = 0;
    let mut polls = 0;
    loop {
        if ready_at.is_some_and(|r| t >= r) {
            mmio.set(
                regs::spad(regs::SPAD_DOWNLOAD_INFO),
                regs::spad2_encode(true, 7, 0x10_0000),
            );
        }
        polls += 1;
        match seq.poll(mmio, t) {
            ResetPoll::Wait { ms } => t += ms,
            done => return (done, t, polls),
        }
    }
}

#[no_mangle]
extern "C" fn mic_kunit_state_machine_boot_shutdown_reset(_test: *mut c_void) {
    let mmio = need!(Regs::new());
    let dp = need!(Ram::new(MIC_DP_SIZE));
    let mut dev = need!(HostDevice::probe(&mmio, &dp, DP_DMA).ok());
    check_eq!(dev.state(), MicState::Offline);
    check_eq!(dev.dp_card_addr(), SMPT_CARD_BASE + DP_DMA);
    check_eq!(mmio.get(regs::spad(14)), (SMPT_CARD_BASE + DP_DMA) as u32);
    check_eq!(
        mmio.get(regs::spad(15)),
        ((SMPT_CARD_BASE + DP_DMA) >> 32) as u32
    );
    check_eq!(
        devpage::read_bootparam(&dp, 0),
        Ok(MicBootparam::host_initial(0))
    );

    // Not ready: nothing is touched; the forced reset brings it back.
    let ap = need!(Ram::new(4 * MIB as usize));
    let img = [1u8; 16];
    let elf = BootParams {
        mode: BootMode::Elf,
        image: &img,
        ramdisk: None,
        cmdline: None,
    };
    mmio.clear_log();
    check_eq!(
        dev.start(&mmio, &ap, &dp, &elf).map(|_| ()),
        Err(BootError::FirmwareNotReady)
    );
    check!(need!(mmio.log()).is_empty());
    check_eq!(
        dev.begin_reset(&mmio, &dp, false),
        Ok(ResetStart::AlreadyOffline)
    );
    let Ok(ResetStart::Started(mut seq)) = dev.begin_reset(&mmio, &dp, true) else {
        check!(false);
        return;
    };
    check_eq!(
        dev.begin_reset(&mmio, &dp, true),
        Ok(ResetStart::InProgress)
    );
    check_eq!(
        dev.start(&mmio, &ap, &dp, &elf).map(|_| ()),
        Err(BootError::ResetInProgress)
    );
    check_eq!(drive(&mut seq, &mmio, Some(3000)).0, ResetPoll::Ready);
    check_eq!(dev.finish_reset(true), None);

    // Boot: online, the bootstrap interrupt is the last write.
    mmio.clear_log();
    let out = need!(dev.start(&mmio, &ap, &dp, &elf).ok());
    check_eq!(
        out.transition,
        Transition {
            from: MicState::Offline,
            to: MicState::Online
        }
    );
    check_eq!(dev.state(), MicState::Online);
    {
        let w = need!(mmio.log());
        let n = w.len();
        check!(n >= 2);
        check_eq!(w[n - 2], (regs::APICICR7 + 4, 7));
        check_eq!(w[n - 1], (regs::APICICR7, 0x20E5));
    }

    // Host-requested shutdown once the card published its doorbell (a
    // hostile number first).
    check_eq!(dev.request_shutdown(&mmio, &dp), Ok(None));
    check!(dp.fill(BP_H2C_SHUTDOWN_DB as u64, &[40]));
    check!(matches!(
        dev.request_shutdown(&mmio, &dp),
        Err(HostError::Doorbell(_))
    ));
    check!(dp.fill(BP_H2C_SHUTDOWN_DB as u64, &[9]));
    check_eq!(
        dev.request_shutdown(&mmio, &dp),
        Ok(Some(Transition {
            from: MicState::Online,
            to: MicState::ShuttingDown
        }))
    );
    check!(dp.holds(BP_SHUTDOWN_CARD as u64, &[1]));
    check_eq!(mmio.writes_to(regs::rdmasr(18)), (1, Some(0)));

    // The card reports: garbage is ignored, "halted" is taken and cleared.
    check!(dp.fill(BP_SHUTDOWN_STATUS as u64, &[9]));
    check_eq!(
        dev.handle_shutdown_interrupt(&dp),
        Err(HostError::InvalidStatus(9))
    );
    check!(dp.fill(BP_SHUTDOWN_STATUS as u64, &[MicStatus::Halted as u8]));
    let report = need!(dev.handle_shutdown_interrupt(&dp).ok().flatten());
    check_eq!(report.status, MicStatus::Halted);
    check_eq!(report.transition, None);
    check_eq!(dev.shutdown_status(), MicStatus::Halted);
    check!(dp.holds(BP_SHUTDOWN_STATUS as u64, &[0]));

    // Reset back to offline; the status is cleared.
    let Ok(ResetStart::Started(mut seq)) = dev.begin_reset(&mmio, &dp, false) else {
        check!(false);
        return;
    };
    check_eq!(mmio.get(regs::spad(regs::SPAD_DOWNLOAD_INFO)), 0);
    check_eq!(mmio.get(regs::RGCR) & regs::RGCR_RESET, regs::RGCR_RESET);
    check_eq!(
        drive(&mut seq, &mmio, Some(5000)),
        (ResetPoll::Ready, 5000, 6)
    );
    check_eq!(
        dev.finish_reset(true),
        Some(Transition {
            from: MicState::ShuttingDown,
            to: MicState::Offline
        })
    );
    check_eq!(dev.shutdown_status(), MicStatus::Nop);
}

#[no_mangle]
extern "C" fn mic_kunit_state_machine_failed_reset(_test: *mut c_void) {
    let mmio = need!(card_ready(0x10_0000));
    let dp = need!(Ram::new(MIC_DP_SIZE));
    let ap = need!(Ram::new(4 * MIB as usize));
    let mut dev = need!(HostDevice::probe(&mmio, &dp, DP_DMA).ok());
    let elf = BootParams {
        mode: BootMode::Elf,
        image: &[1; 16],
        ramdisk: None,
        cmdline: None,
    };
    check!(dev.start(&mmio, &ap, &dp, &elf).is_ok());
    let Ok(ResetStart::Started(mut seq)) = dev.begin_reset(&mmio, &dp, false) else {
        check!(false);
        return;
    };
    // The original's budget: 1 s settle, then 45 polls 1 s apart.
    check_eq!(
        drive(&mut seq, &mmio, None),
        (ResetPoll::Failed, 45_000, 46)
    );
    check_eq!(seq.poll(&mmio, 99_999), ResetPoll::Failed);
    check_eq!(
        dev.finish_reset(false),
        Some(Transition {
            from: MicState::Online,
            to: MicState::ResetFailed
        })
    );
    check_eq!(
        dev.start(&mmio, &ap, &dp, &elf).map(|_| ()),
        Err(BootError::InvalidState(MicState::ResetFailed))
    );
    // A device page too small for the bootparam is an error, not a panic.
    let tiny = need!(Ram::new(8));
    check!(matches!(
        dev.begin_reset(&mmio, &tiny, true),
        Err(HostError::Mem(_))
    ));
}

#[no_mangle]
extern "C" fn mic_kunit_reset_sequence_timing(_test: *mut c_void) {
    let mmio = need!(Regs::new());
    let t = ResetTiming {
        settle_ms: 10,
        period_ms: 10,
        budget_ms: 30,
    };
    check_eq!(t.max_checks(), 3);
    let mut seq = ResetSeq::with_timing(t);
    check_eq!(seq.poll(&mmio, 0), ResetPoll::Wait { ms: 10 });
    check_eq!(seq.poll(&mmio, 10), ResetPoll::Wait { ms: 10 });
    // Early calls check ready but use up no poll.
    check_eq!(seq.poll(&mmio, 11), ResetPoll::Wait { ms: 9 });
    check_eq!(seq.poll(&mmio, 20), ResetPoll::Wait { ms: 10 });
    check_eq!(seq.poll(&mmio, 35), ResetPoll::Failed);
    let degenerate = ResetTiming {
        settle_ms: 0,
        period_ms: 0,
        budget_ms: 0,
    };
    check_eq!(degenerate.max_checks(), 1);
    check_eq!(ResetTiming::ORIGINAL.max_checks(), 45);
}

// ---------------------------------------------------------------------------
// The device-page walker
// ---------------------------------------------------------------------------

fn desc(ty: i8, num_vq: u8, feature_len: u8, config_len: u8) -> MicDeviceDesc {
    MicDeviceDesc {
        ty,
        num_vq,
        feature_len,
        config_len,
        status: 0,
    }
}

/// Writes a descriptor block (vqconfigs, ctrl) at `off`; the next offset.
fn put_desc(page: &mut [u8], off: usize, d: MicDeviceDesc, num: u16) -> usize {
    page[off..off + MicDeviceDesc::SIZE].copy_from_slice(&d.to_bytes());
    for i in 0..d.num_vq as usize {
        let vq = MicVqconfig {
            address: SMPT_CARD_BASE + 0x2000 * i as u64,
            used_address: 0,
            num,
        };
        let o = off + d.vq_offset(i);
        page[o..o + MicVqconfig::SIZE].copy_from_slice(&vq.to_bytes());
    }
    let c = off + d.ctrl_offset();
    page[c..c + MicDeviceCtrl::SIZE].copy_from_slice(&MicDeviceCtrl::host_initial().to_bytes());
    off + abi::total_desc_size(&d)
}

#[no_mangle]
extern "C" fn mic_kunit_devpage_walker(_test: *mut c_void) {
    let mut page = need!(KVec::from_elem(0u8, MIC_DP_SIZE, GFP_KERNEL).ok());
    check_eq!(devpage::walk(&page).count(), 0);
    let console = desc(3, 2, 4, 8);
    let o1 = put_desc(&mut page, 16, console, 128);
    check_eq!(o1, 16 + 88);
    let o2 = put_desc(&mut page, o1, desc(-1, 2, 4, 12), 128);
    let o3 = put_desc(&mut page, o2, desc(2, 1, 4, 60), 128);
    // After the end of the list nothing is looked at.
    page[o3 + 8] = 0xFF;
    let mut it = devpage::walk(&page);
    let first = need!(it.next().and_then(Result::ok));
    check_eq!(first.offset, 16);
    check_eq!(first.desc, console);
    check_eq!(first.end(), o1);
    check_eq!(first.vqconfig(&page, 1).map(|v| v.num), Some(128));
    check_eq!(first.vqconfig(&page, 2), None);
    check_eq!(first.config(&page).map(<[u8]>::len), Some(8));
    check_eq!(first.ctrl(&page).map(|c| c.c2h_vdev_db), Some(-1));
    let second = need!(it.next().and_then(Result::ok));
    check_eq!((second.offset, second.desc.ty), (o2, 2));
    check!(it.next().is_none());
    check_eq!(devpage::walk(&page).with_removed().count(), 3);

    // The memory walker sees the same page through card memory.
    let mem = need!(Ram::with_base(SMPT_CARD_BASE, MIC_DP_SIZE));
    check!(mem.fill(SMPT_CARD_BASE, &page));
    let mut from_mem = devpage::walk_mem(&mem, SMPT_CARD_BASE);
    check_eq!(
        from_mem.next().and_then(Result::ok).map(|d| d.offset),
        Some(16)
    );

    // Malformed: too many vqs, and a vring larger than the maximum.
    let mut bad = need!(KVec::from_elem(0u8, MIC_DP_SIZE, GFP_KERNEL).ok());
    bad[16..24].copy_from_slice(&desc(1, 5, 0, 0).to_bytes());
    check!(matches!(
        devpage::walk(&bad).last(),
        Some(Err(devpage::DevPageError {
            offset: 16,
            kind: devpage::DescErrorKind::TooManyVqs(5)
        }))
    ));
    let mut bad = need!(KVec::from_elem(0u8, MIC_DP_SIZE, GFP_KERNEL).ok());
    put_desc(&mut bad, 16, desc(1, 1, 0, 0), 256);
    check!(matches!(
        devpage::walk(&bad).last(),
        Some(Err(devpage::DevPageError {
            kind: devpage::DescErrorKind::VringTooLarge { .. },
            ..
        }))
    ));
}

/// Every item of a walk lies inside the page, and an error ends it.
fn walk_is_contained(page: &[u8]) -> bool {
    let mut seen_err = false;
    let mut n = 0;
    for item in devpage::walk(page).with_removed() {
        n += 1;
        if seen_err || n > MIC_DP_SIZE / 8 {
            return false;
        }
        match item {
            Ok(d) => {
                if d.end() > page.len() || d.offset < devpage::FIRST_DESC_OFFSET {
                    return false;
                }
            }
            Err(_) => seen_err = true,
        }
    }
    true
}

#[no_mangle]
extern "C" fn mic_kunit_devpage_walker_hostile_pages(_test: *mut c_void) {
    let mut rng = XorShift(0x6d69_635f_636f_7265);
    let mut page = need!(KVec::from_elem(0u8, MIC_DP_SIZE, GFP_KERNEL).ok());
    for round in 0..400u32 {
        if round % 2 == 0 {
            // Pure noise.
            rng.fill(&mut page);
        } else {
            // Plausible descriptors with hostile sizes, then noise.
            page.fill(0);
            let mut off = 16;
            while off + 8 < MIC_DP_SIZE {
                let r = rng.next();
                let d = desc(
                    (r % 7) as i8 - 1,
                    (r >> 8) as u8 % 6,
                    (r >> 16) as u8,
                    (r >> 24) as u8,
                );
                if abi::aligned_desc_size(&d) + off + MicDeviceCtrl::SIZE > MIC_DP_SIZE || d.ty == 0
                {
                    break;
                }
                let num = if (r >> 32) % 4 == 0 {
                    (r >> 40) as u16
                } else {
                    128
                };
                off = put_desc(&mut page, off, d, num);
            }
            let tail = rng.next() as usize % MIC_DP_SIZE;
            rng.fill(&mut page[tail..]);
        }
        check!(walk_is_contained(&page));
        // Short slices too.
        let cut = rng.next() as usize % 200;
        check!(walk_is_contained(&page[..cut]));
    }
    // The memory walker never reads outside its memory, even at the top of
    // the address space.
    let small = need!(Ram::new(64));
    check!(devpage::walk_mem(&small, u64::MAX - 4).all(|i| i.is_err()));
}

// ---------------------------------------------------------------------------
// The printk ring
// ---------------------------------------------------------------------------

/// A record text: "msg <i> " followed by one letter, 64 bytes (callers
/// take the length they want).
fn text_of(i: u64) -> [u8; 64] {
    let mut t = [b'a' + (i % 26) as u8; 64];
    t[..4].copy_from_slice(b"msg ");
    let mut digits = [0u8; 20];
    let (mut n, mut v) = (0, i);
    loop {
        digits[n] = b'0' + (v % 10) as u8;
        n += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    for (k, d) in digits[..n].iter().rev().enumerate() {
        t[4 + k] = *d;
    }
    t[4 + n] = b' ';
    t
}

#[no_mangle]
extern "C" fn mic_kunit_printk_ring_wraps(_test: *mut c_void) {
    // 128-byte ring, 32-byte records (16 bytes of text).
    let mem = need!(Ram::new(128));
    let mut ring = LogRing::new(0, 128);
    for i in 0..3 {
        check!(ring.store(&mem, i, 0, 6, &text_of(i)[..16]).is_ok());
    }
    check_eq!((ring.first_idx(), ring.next_idx()), (0, 96));
    // No room before the end: wrap, dropping #0 and #1.
    check!(ring.store(&mem, 3, 0, 6, &text_of(3)[..16]).is_ok());
    check_eq!((ring.first_idx(), ring.next_idx()), (64, 32));
    check_eq!((ring.first_seq(), ring.next_seq()), (2, 4));
    let snap = need!(mem.snapshot(0, 128));
    check!(printk::is_zero_header_at(&snap, 96));
    let mut ts = ring.records(&snap).map(|r| r.ts_nsec());
    check_eq!((ts.next(), ts.next(), ts.next()), (Some(2), Some(3), None));
    let first = need!(ring.records(&snap).next());
    check_eq!(&first.text[..6], b"msg 2 ");
    check_eq!(first.level(), 6);

    // Many wraps: always the newest records, in order, none stale.
    let mem = need!(Ram::new(1024));
    let mut ring = LogRing::new(0, 1000);
    for i in 0..500u64 {
        let len = 9 + (i as usize * 7) % 55;
        check!(ring
            .store(&mem, i, 0, (i % 8) as u8, &text_of(i)[..len])
            .is_ok());
    }
    let snap = need!(mem.snapshot(0, 1000));
    let mut expect = ring.first_seq();
    let mut n = 0;
    for r in ring.records(&snap) {
        check_eq!(r.ts_nsec(), expect);
        expect += 1;
        n += 1;
    }
    check_eq!(expect, 500);
    check_eq!(n, ring.live_records());
    check!(n > 5);
    // A ring that does not fit its memory is refused before any write.
    let mut outside = LogRing::new(1000, 100);
    let tiny = need!(Ram::new(1024));
    check!(outside.store(&tiny, 0, 0, 6, b"x").is_err());
    check!(tiny.all_zero());
}

#[no_mangle]
extern "C" fn mic_kunit_printk_ring_hostile_snapshots(_test: *mut c_void) {
    // A card-controlled buffer decoded by the host's walker: whatever the
    // bytes, records stay inside the buffer and iteration ends.
    let mut rng = XorShift(0x7072_696e_746b_0001);
    let mut buf = need!(KVec::from_elem(0u8, 512, GFP_KERNEL).ok());
    for _ in 0..300 {
        rng.fill(&mut buf);
        let mut off = 0usize;
        let mut steps = 0;
        while let Some(r) = printk::parse_record(&buf, off) {
            check!(r.end() <= buf.len());
            check!(r.end() > off);
            off = r.end();
            steps += 1;
            check!(steps <= buf.len() / printk::HEADER_LEN);
        }
        // A scribbled ring is cleared, not trusted.
        let mem = need!(Ram::new(512));
        check!(mem.fill(0, &buf));
        let mut ring = LogRing::new(0, 512);
        check!(ring.clear(&mem).is_ok());
        check!(mem.all_zero());
        check!(ring.store(&mem, 1, 0, 6, b"after").is_ok());
    }
}

// ---------------------------------------------------------------------------
// The card side, against what the host set up
// ---------------------------------------------------------------------------

#[no_mangle]
extern "C" fn mic_kunit_card_discovery_and_reports(_test: *mut c_void) {
    let mmio = need!(Regs::new());
    let dp_dma = 0x5000;
    let host_dp = need!(Ram::new(MIC_DP_SIZE));
    let host = need!(HostDevice::probe(&mmio, &host_dp, dp_dma).ok());
    // The card sees the host's page through the SMPT window.
    let card_addr = host.dp_card_addr();
    let mem = need!(Ram::with_base(card_addr, MIC_DP_SIZE));
    let bytes = need!(host_dp.snapshot(0, MIC_DP_SIZE));
    check!(mem.fill(card_addr, &bytes));
    check_eq!(card::discover(&mmio, &mem), Ok(card_addr));
    let dev = need!(CardDevice::init(&mmio, &mem).ok());
    check_eq!(dev.dp(), card_addr);
    check_eq!((dev.shutdown_db(), dev.config_db()), (0, 1));
    let bp = need!(devpage::read_bootparam(&mem, card_addr).ok());
    check_eq!((bp.h2c_shutdown_db, bp.h2c_config_db), (0, 1));
    check_eq!(dev.shutdown_requested(&mem), Ok(false));
    check!(mem.fill(card_addr + BP_SHUTDOWN_CARD as u64, &[1]));
    check_eq!(dev.shutdown_requested(&mem), Ok(true));

    mmio.clear_log();
    check_eq!(
        dev.report_shutdown(&mmio, &mem, MicStatus::PowerOff),
        Ok(true)
    );
    check_eq!(
        mmio.writes_to(regs::sdbic(host.c2h_shutdown_db())),
        (1, Some(regs::SDBIC_RING))
    );
    let bp = need!(devpage::read_bootparam(&mem, card_addr).ok());
    check_eq!(bp.shutdown_status, MicStatus::PowerOff as u8);
    check_eq!((bp.h2c_shutdown_db, bp.h2c_config_db), (-1, -1));
    check_eq!(
        dev.report_shutdown(&mmio, &mem, MicStatus::Crashed),
        Err(CardError::InvalidStatus(MicStatus::Crashed))
    );
    check_eq!(dev.report_panic(&mmio, &mem), Ok(true));
    check!(mem.holds(
        card_addr + BP_SHUTDOWN_STATUS as u64,
        &[MicStatus::Crashed as u8]
    ));
    // The host side picks the report up from its own copy of the page.
    let report_page = need!(mem.snapshot(card_addr, MIC_DP_SIZE));
    check!(host_dp.fill(0, &report_page));
    let mut host = host;
    check!(matches!(
        host.handle_shutdown_interrupt(&host_dp),
        Ok(Some(r)) if r.status == MicStatus::Crashed
    ));

    // A hostile host: bad magic, a page beyond memory.
    check!(mem.fill(card_addr, &[1, 2, 3, 4]));
    check_eq!(
        card::discover(&mmio, &mem),
        Err(CardError::BadMagic(0x0403_0201))
    );
    mmio.set(regs::spad(14), u32::MAX);
    mmio.set(regs::spad(15), u32::MAX);
    check!(matches!(
        card::discover(&mmio, &mem),
        Err(CardError::Mem(_))
    ));
    check_eq!(MIC_MAGIC, 0xC0FF_EE00);
}

// ---------------------------------------------------------------------------
// The virtio ring walker (host::vop)
// ---------------------------------------------------------------------------

const VOP_HOST_LEN: usize = 128 << 10;
const VOP_CARD_LEN: usize = 1 << 20;
const VOP_DMA: u64 = 0x1_0000_0000;
const CONFIG_DB: u8 = 5;
const VDEV_DB: u8 = 3;
const USED0: u64 = 0x8_0000;
const USED1: u64 = 0x9_0000;

/// Bump allocator over host memory from 0x1000 (the device page is below).
struct Bump {
    next: u64,
}

impl HostAlloc for Bump {
    fn alloc(&mut self, len: usize) -> Option<HostBuf> {
        let offset = 0x1000 + self.next;
        if offset + len as u64 > VOP_HOST_LEN as u64 {
            return None;
        }
        self.next += len as u64;
        Some(HostBuf {
            offset,
            dma_addr: VOP_DMA + offset,
            len,
        })
    }

    fn free(&mut self, _buf: HostBuf) {}
}

/// The caller's buffer of a COPY_DESC.
struct UserBuf<'a> {
    buf: KVec<u8>,
    card: &'a Ram,
}

impl UserBuffers for UserBuf<'_> {
    fn capacity(&self) -> u64 {
        self.buf.len() as u64
    }

    fn card_to_user(&mut self, off: u64, card_addr: u64, len: u32) -> Result<(), CopyFault> {
        let dst = self
            .buf
            .get_mut(off as usize..(off + u64::from(len)) as usize)
            .ok_or(CopyFault)?;
        self.card.read(card_addr, dst).map_err(|_| CopyFault)
    }

    fn user_to_card(&mut self, off: u64, card_addr: u64, len: u32) -> Result<(), CopyFault> {
        let src = self
            .buf
            .get(off as usize..(off + u64::from(len)) as usize)
            .ok_or(CopyFault)?;
        self.card.write(card_addr, src).map_err(|_| CopyFault)
    }
}

/// A virtio-console descriptor block: 2 vrings of 128, 4 feature bytes,
/// 12 config bytes.
fn console_block() -> Option<KVec<u8>> {
    let d = MicDeviceDesc {
        ty: abi::virtio::id::CONSOLE,
        num_vq: 2,
        feature_len: 4,
        config_len: 12,
        status: 0,
    };
    let mut b = KVec::from_elem(0u8, abi::desc_size(&d), GFP_KERNEL).ok()?;
    b[..MicDeviceDesc::SIZE].copy_from_slice(&d.to_bytes());
    for i in 0..2 {
        let vq = MicVqconfig {
            address: 0,
            used_address: 0,
            num: 128,
        };
        let at = d.vq_offset(i);
        b[at..at + MicVqconfig::SIZE].copy_from_slice(&vq.to_bytes());
    }
    Some(b)
}

struct VopRig {
    mmio: Regs,
    host: Ram,
    card: Ram,
    dev: HostDevice,
    alloc: Bump,
}

impl VopRig {
    fn new() -> Option<Self> {
        let mmio = Regs::new()?;
        let host = Ram::new(VOP_HOST_LEN)?;
        let dev = HostDevice::probe(&mmio, &host, VOP_DMA).ok()?;
        // The card driver is up and published its config doorbell.
        host.write_u8(abi::BP_H2C_CONFIG_DB as u64, CONFIG_DB)
            .ok()?;
        Some(Self {
            mmio,
            host,
            card: Ram::new(VOP_CARD_LEN)?,
            dev,
            alloc: Bump { next: 0 },
        })
    }

    /// A virtio console added on a fresh file (ADD_DEVICE succeeded).
    fn add_console(&mut self) -> Option<KBox<VopDevice>> {
        let block = console_block()?;
        let mut v = boxed_vop_device()?;
        v.add(
            &mut self.dev,
            &self.mmio,
            &self.host,
            &mut self.alloc,
            &block,
        )
        .ok()?;
        Some(v)
    }

    fn at(v: &VopDevice, field: usize) -> u64 {
        (v.slot() + field) as u64
    }

    /// The card's find_vqs: used rings re-homed to card memory, its
    /// doorbell published, DRIVER_OK.
    fn card_start(&self, v: &mut VopDevice) -> Option<bool> {
        for (i, u) in [USED0, USED1].into_iter().enumerate() {
            let at = Self::at(v, v.desc().vq_offset(i) + abi::VQ_USED_ADDRESS);
            self.host.write_u64(at, u).ok()?;
        }
        let ctrl = v.desc().ctrl_offset();
        self.host
            .write_u8(Self::at(v, ctrl + abi::CTRL_H2C_VDEV_DB), VDEV_DB)
            .ok()?;
        self.host
            .write_u8(Self::at(v, ctrl + abi::CTRL_USED_ADDRESS_UPDATED), 1)
            .ok()?;
        self.host
            .write_u8(
                Self::at(v, abi::DESC_STATUS),
                abi::virtio::status::DRIVER_OK,
            )
            .ok()?;
        Some(v.handle_doorbell(&self.host, &self.card).ok()?.activated)
    }

    fn ring_base(v: &VopDevice, q: usize) -> Option<u64> {
        v.mmap_layout().nth(q + 1).map(|p| p.1)
    }

    /// Writes descriptor `i` of vring `q` and offers `head` in its avail ring.
    fn put(&self, v: &VopDevice, q: usize, i: u16, d: abi::virtio::VringDesc) -> Option<()> {
        let base = Self::ring_base(v, q)?;
        self.host
            .write(base + u64::from(i) * 16, &d.to_bytes())
            .ok()
    }

    fn offer(&self, v: &VopDevice, q: usize, head: u16) -> Option<()> {
        let avail = Self::ring_base(v, q)? + 16 * 128;
        let idx = self.host.read_u16(avail + 2).ok()?;
        self.host
            .write_u16(avail + 4 + 2 * u64::from(idx & 127), head)
            .ok()?;
        self.host.write_u16(avail + 2, idx.wrapping_add(1)).ok()
    }
}

/// A `VopDevice` on the heap. It is 9 KiB: built in a frame of its own so
/// no caller's frame holds it (a kernel stack is 16 KiB), as mic_host does.
#[inline(never)]
fn boxed_vop_device() -> Option<KBox<VopDevice>> {
    KBox::new(VopDevice::new(), GFP_KERNEL).ok()
}

/// The card side's device (9 KiB too), probed in a frame of its own.
#[inline(never)]
fn boxed_card_vdev(
    mem: &Ram,
    loc: &devpage::DescLoc,
    dbs: &mut card::CardDoorbells,
) -> Option<KBox<card::virtio::CardVdev>> {
    let cv = card::virtio::CardVdev::probe(mem, 0, loc, dbs).ok()?;
    KBox::new(cv, GFP_KERNEL).ok()
}

/// `CardVdev::remove` takes the device by value: unboxed in a frame of its own.
#[inline(never)]
fn remove_boxed_card_vdev(
    cv: KBox<card::virtio::CardVdev>,
    mmio: &Regs,
    mem: &Ram,
    dbs: &mut card::CardDoorbells,
) -> Result<(), MemError> {
    KBox::into_inner(cv).remove(mmio, mem, dbs)
}

fn vring_desc(addr: u64, len: u32, flags: u16, next: u16) -> abi::virtio::VringDesc {
    abi::virtio::VringDesc {
        addr,
        len,
        flags,
        next,
    }
}

#[no_mangle]
extern "C" fn mic_kunit_vop_add_and_copy_desc(_test: *mut c_void) {
    let mut boxed = need!(VopRig::new().and_then(|r| KBox::new(r, GFP_KERNEL).ok()));
    let rig = &mut *boxed;
    let block = need!(console_block());
    let mut v = need!(boxed_vop_device());
    // COPY_DESC before ADD_DEVICE: EINVAL, as the original.
    let mut user = UserBuf {
        buf: need!(KVec::from_elem(0u8, 64, GFP_KERNEL).ok()),
        card: &rig.card,
    };
    let e = v.copy_desc(&rig.mmio, &rig.host, &rig.card, 0, &mut user, true);
    check_eq!(e.map(|_| ()), Err(VopError::NotAdded));
    check_eq!(VopError::NotAdded.errno(), errno::EINVAL);
    check!(v
        .add(&mut rig.dev, &rig.mmio, &rig.host, &mut rig.alloc, &block)
        .is_ok());
    check_eq!(v.state(), VopState::Added);
    check_eq!(v.slot(), 16);
    check_eq!(v.mmap_len(), 0x1000 + 2 * 8192);
    // Published: the type is in the page, the card's config doorbell rung.
    check_eq!(
        rig.host.read_u8(16).map(|t| t as i8),
        Ok(abi::virtio::id::CONSOLE)
    );
    check_eq!(rig.mmio.writes_to(regs::apicicr(CONFIG_DB)).0, 1);
    check_eq!(
        devpage::walk_mem(&rig.host, 0)
            .filter_map(Result::ok)
            .map(|d| d.desc.ty)
            .next(),
        Some(abi::virtio::id::CONSOLE)
    );
    // Status 0: the card has not started the device.
    let e = v.copy_desc(&rig.mmio, &rig.host, &rig.card, 0, &mut user, true);
    check_eq!(e.map(|_| ()), Err(VopError::NotReady));
    check_eq!(rig.card_start(&mut v), Some(true));

    // The card offers "hello, host" on vring 0; the host copies it out
    // and completes the chain in the card's used ring.
    check!(rig.card.fill(0x1000, b"hello, host"));
    need!(rig.put(&v, 0, 0, vring_desc(0x1000, 11, 0, 0)));
    need!(rig.offer(&v, 0, 0));
    let copied = v.copy_desc(&rig.mmio, &rig.host, &rig.card, 0, &mut user, true);
    let copied = need!(copied.ok());
    check_eq!(copied.out_len, 11);
    check!(copied.completed);
    check_eq!(&user.buf[..11], b"hello, host");
    check_eq!(rig.card.read_u16(USED0 + 2), Ok(1));
    check_eq!(rig.card.read_u32(USED0 + 4), Ok(0));
    check_eq!(rig.card.read_u32(USED0 + 8), Ok(11));
    // Nothing more offered: no bytes, no error.
    let again = v.copy_desc(&rig.mmio, &rig.host, &rig.card, 0, &mut user, true);
    check_eq!(again.map(|c| c.out_len), Ok(0));

    // The host writes into a device-writable buffer on vring 1.
    user.buf[..4].copy_from_slice(b"ping");
    need!(rig.put(
        &v,
        1,
        0,
        vring_desc(0x2000, 64, abi::virtio::VRING_DESC_F_WRITE, 0)
    ));
    need!(rig.offer(&v, 1, 0));
    let copied = v.copy_desc(&rig.mmio, &rig.host, &rig.card, 1, &mut user, true);
    check_eq!(copied.map(|c| c.out_len), Ok(64));
    check!(rig.card.holds(0x2000, b"ping"));
    check_eq!(rig.card.read_u32(USED1 + 8), Ok(64));
    // A vring that does not exist.
    let e = v.copy_desc(&rig.mmio, &rig.host, &rig.card, 2, &mut user, true);
    check_eq!(e.map(|_| ()), Err(VopError::BadVring(2)));
}

#[no_mangle]
extern "C" fn mic_kunit_vop_hostile_rings(_test: *mut c_void) {
    let mut boxed = need!(VopRig::new().and_then(|r| KBox::new(r, GFP_KERNEL).ok()));
    let rig = &mut *boxed;
    let mut v = need!(rig.add_console());
    check_eq!(rig.card_start(&mut v), Some(true));
    let mut user = UserBuf {
        buf: need!(KVec::from_elem(0u8, 256, GFP_KERNEL).ok()),
        card: &rig.card,
    };
    let broken = |r: Result<host::vop::Copied, VopError>, want: RingError| {
        r.map(|_| ()) == Err(VopError::Copy(CopyError::Ring(want)))
    };
    // A buffer beyond card memory.
    let far = VOP_CARD_LEN as u64 - 4;
    need!(rig.put(&v, 0, 0, vring_desc(far, 16, 0, 0)));
    need!(rig.offer(&v, 0, 0));
    let r = v.copy_desc(&rig.mmio, &rig.host, &rig.card, 0, &mut user, true);
    check!(broken(
        r,
        RingError::BufferOutOfRange { addr: far, len: 16 }
    ));
    // The ring stays broken until the device is reset.
    let r = v.copy_desc(&rig.mmio, &rig.host, &rig.card, 0, &mut user, true);
    check!(r.is_err());
    check!(v.reset(&rig.host).is_ok());
    check_eq!(rig.card_start(&mut v), Some(true));

    // A descriptor chain that loops back on itself.
    let next = abi::virtio::VRING_DESC_F_NEXT;
    need!(rig.put(&v, 1, 0, vring_desc(0x1000, 8, next, 1)));
    need!(rig.put(&v, 1, 1, vring_desc(0x1100, 8, next, 0)));
    need!(rig.offer(&v, 1, 0));
    let r = v.copy_desc(&rig.mmio, &rig.host, &rig.card, 1, &mut user, true);
    check!(broken(r, RingError::Loop));
    check!(v.reset(&rig.host).is_ok());
    check_eq!(rig.card_start(&mut v), Some(true));

    // An avail index that jumps past the ring, and a head outside it.
    let avail1 = need!(VopRig::ring_base(&v, 1)) + 16 * 128;
    check!(rig.host.write_u16(avail1 + 2, 200).is_ok());
    let r = v.copy_desc(&rig.mmio, &rig.host, &rig.card, 1, &mut user, true);
    check!(matches!(
        r,
        Err(VopError::Copy(CopyError::Ring(RingError::AvailJump { .. })))
    ));
    check!(v.reset(&rig.host).is_ok());
    check_eq!(rig.card_start(&mut v), Some(true));
    check!(rig.host.write_u16(avail1 + 2, 0).is_ok());
    need!(rig.offer(&v, 1, 500));
    let r = v.copy_desc(&rig.mmio, &rig.host, &rig.card, 1, &mut user, true);
    check!(broken(r, RingError::BadHead(500)));

    // Pseudo-random descriptor tables never take the walker outside card
    // memory or the caller's buffer, and never panic (overflow checks on).
    let mut rng = XorShift(0x766f_705f_7269_6e67);
    for _ in 0..200 {
        check!(v.reset(&rig.host).is_ok());
        check_eq!(rig.card_start(&mut v), Some(true));
        let base = need!(VopRig::ring_base(&v, 0));
        let mut table = [0u8; 16 * 8];
        rng.fill(&mut table);
        for (i, d) in table.chunks_exact(16).enumerate() {
            // Keep `next` mostly inside the table so chains get walked.
            let mut d16 = [0u8; 16];
            d16.copy_from_slice(d);
            if rng.next() % 2 == 0 {
                d16[14] = (rng.next() % 8) as u8;
                d16[15] = 0;
            }
            check!(rig.host.write(base + 16 * i as u64, &d16).is_ok());
        }
        check!(rig.host.write_u16(base + 16 * 128 + 2, 0).is_ok());
        need!(rig.offer(&v, 0, (rng.next() % 8) as u16));
        match v.copy_desc(&rig.mmio, &rig.host, &rig.card, 0, &mut user, true) {
            Ok(c) => check!(u64::from(c.out_len) <= 256),
            Err(e) => check!(e.errno() != 0),
        }
    }
}

#[no_mangle]
extern "C" fn mic_kunit_card_virtio_handshakes(_test: *mut c_void) {
    // The host adds a console; the card side (the core's CardVdev, here
    // over the same page the host wrote) finds it, publishes its doorbell,
    // negotiates, answers a config change and completes hot removal.
    let mut boxed = need!(VopRig::new().and_then(|r| KBox::new(r, GFP_KERNEL).ok()));
    let rig = &mut *boxed;
    let mut v = need!(rig.add_console());
    let loc = need!(devpage::walk_mem(&rig.host, 0).next().and_then(Result::ok));
    let mut dbs = card::CardDoorbells::new();
    dbs.next_db();
    dbs.next_db();
    let mut cv = need!(boxed_card_vdev(&rig.host, &loc, &mut dbs));
    check_eq!(cv.device_type(), abi::virtio::id::CONSOLE);
    check_eq!(cv.h2c_db(), 2);
    let ctrl = need!(v.ctrl(&rig.host).ok());
    check_eq!(ctrl.h2c_vdev_db, 2);
    check_eq!(ctrl.vdev, loc.offset as u64);
    check_eq!(cv.finalize_features(&rig.host, u32::MAX), Ok(0));
    let mut cfg = [0u8; 4];
    check!(cv.read_config(&rig.host, 8, &mut cfg).is_ok());
    check_eq!(
        cv.read_config(&rig.host, 10, &mut cfg),
        Err(card::virtio::VirtioError::ConfigOutOfRange)
    );
    check!(cv.set_status(&rig.mmio, &rig.host, 4).is_ok());
    check_eq!(v.status(&rig.host), Ok(4));

    // Config change: the card sees it and acks; the host's wait ends.
    let wait = need!(v.config_change(&rig.mmio, &rig.host, &[7; 12]).ok());
    check_eq!(
        wait.poll(&rig.host, 0),
        handshake::AckPoll::Wait { ms: 100 }
    );
    check_eq!(
        cv.config_request(&rig.host),
        Ok(Some(card::virtio::ConfigRequest::Changed))
    );
    check!(cv.read_config(&rig.host, 0, &mut cfg).is_ok());
    check_eq!(cfg, [7; 4]);
    check!(cv.ack_config(&rig.host).is_ok());
    check_eq!(wait.poll(&rig.host, 100), handshake::AckPoll::Acked);
    check!(v.finish_config_change(&rig.host).is_ok());
    check_eq!(cv.config_request(&rig.host), Ok(None));

    // Hot removal: the card acks and frees the slot.
    let wait = need!(v.begin_remove(&rig.mmio, &rig.host));
    check_eq!(
        cv.config_request(&rig.host),
        Ok(Some(card::virtio::ConfigRequest::Remove))
    );
    check!(remove_boxed_card_vdev(cv, &rig.mmio, &rig.host, &mut dbs).is_ok());
    check_eq!(dbs.usage()[2], 0);
    check_eq!(wait.poll(&rig.host, 0), handshake::AckPoll::Acked);
    v.finish_remove(&mut rig.dev, &rig.host, &mut rig.alloc);
    check_eq!(v.state(), VopState::Removed);
    check_eq!(devpage::walk_mem(&rig.host, 0).count(), 0);
    // A card that never answers: the removal wait ends with its budget.
    let mut v2 = need!(rig.add_console());
    let wait = need!(v2.begin_remove(&rig.mmio, &rig.host));
    let budget = handshake::AckTiming::ORIGINAL.budget_ms;
    check_eq!(
        wait.poll(&rig.host, budget - 1),
        handshake::AckPoll::Wait { ms: 1 }
    );
    check_eq!(wait.poll(&rig.host, budget), handshake::AckPoll::TimedOut);
    v2.finish_remove(&mut rig.dev, &rig.host, &mut rig.alloc);
    check_eq!(devpage::walk_mem(&rig.host, 0).count(), 0);
}

// ---------------------------------------------------------------------------
// SMPT and the sysfs parsers
// ---------------------------------------------------------------------------

#[no_mangle]
extern "C" fn mic_kunit_smpt_map_unmap(_test: *mut c_void) {
    let mmio = need!(Regs::new());
    let mut smpt = Smpt::init(&mmio);
    check_eq!(mmio.get(regs::smpt(3)), 3 << 2);
    let a = need!(smpt.map(&mmio, 0x1000, 0x2000));
    check_eq!(a, SMPT_CARD_BASE + 0x1000);
    check_eq!(smpt.entries()[0].refcount, 0x2000);
    check_eq!(smpt.map(&mmio, 0, 0), None);
    check_eq!(smpt.map(&mmio, u64::MAX, 2), None);
    check!(smpt.unmap(a, 0x2000).is_ok());
    check_eq!(smpt.entries()[0].refcount, 0);
    check!(matches!(
        smpt.unmap(a, 0x2000),
        Err(SmptError::RefcountUnderflow { entry: 0 })
    ));
    check!(matches!(
        smpt.unmap(0x1000, 1),
        Err(SmptError::NotInWindow { .. })
    ));
    // A range crossing a 16 GiB page takes two entries.
    let b = need!(smpt.map(&mmio, SMPT_PAGE_SIZE - 0x1000, 0x2000));
    check_eq!(b, SMPT_CARD_BASE + SMPT_PAGE_SIZE - 0x1000);
    check!(smpt.entries()[0].refcount == 0x1000 && smpt.entries()[1].refcount == 0x1000);
}

#[no_mangle]
extern "C" fn mic_kunit_sysfs_parsing(_test: *mut c_void) {
    use sysfs::{ParseHexError, StateRequest};
    check_eq!(
        sysfs::parse_state_request("boot\n"),
        Some(StateRequest::Boot)
    );
    check_eq!(
        sysfs::parse_state_request("shutdown"),
        Some(StateRequest::Shutdown)
    );
    check_eq!(sysfs::parse_state_request("boot\n\n"), None);
    check_eq!(
        sysfs::parse_hex_u64("ffffffff81e3c6e0\n"),
        Ok(0xFFFF_FFFF_81E3_C6E0)
    );
    check_eq!(sysfs::parse_hex_u64("0x"), Err(ParseHexError::Empty));
    check_eq!(
        sysfs::parse_hex_u64("1ffffffffffffffff"),
        Err(ParseHexError::Overflow)
    );
    check_eq!(ParseHexError::Overflow.errno(), errno::ERANGE);
    check_eq!(
        sysfs::kernel_vaddr_to_aperture(0xFFFF_FFFF_81E3_C6E0),
        Some(0x1E3_C6E0)
    );
    check_eq!(sysfs::kernel_vaddr_to_aperture(0x1000), None);
    check_eq!(sysfs::family(0x225E), "x100");
    check_eq!(sysfs::family(0x225F), "Unknown");
    check_eq!(sysfs::stepping(0x11), "B1");
    check_eq!(
        sysfs::ipaddr_from_cmdline("quiet ifcfg=static;address,172.31.1.1;netmask,255.255.255.0"),
        Some("172.31.1.1")
    );
    check_eq!(sysfs::ipaddr_from_cmdline("ifcfg=dhcp"), None);
    check_eq!(
        MicState::from_sysfs("reset_failed\n"),
        Some(MicState::ResetFailed)
    );
    check_eq!(BootMode::from_sysfs("windows"), None);
}
