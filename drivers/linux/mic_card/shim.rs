// SPDX-License-Identifier: GPL-2.0-only

//! Safe wrappers over the card shim (`shim.c`, declared in `shim.h`): each
//! raw call is made once, here.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

use kernel::error::to_result;
use kernel::ffi::{c_int, c_uint, c_void};
use kernel::prelude::*;

use crate::hw::{MemError, Memory, Mmio};

/// `struct mic_card_shim_dev` (opaque).
#[repr(C)]
pub(crate) struct RawDev {
    _private: [u8; 0],
}

/// `enum mic_card_shim_db`.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum Doorbell {
    Shutdown = 0,
    Config = 1,
}

extern "C" {
    fn mic_card_shim_register(mmio_base: u64, mmio_len: u64) -> c_int;
    fn mic_card_shim_unregister();
    fn mic_card_shim_read32(sd: *mut RawDev, off: u32) -> u32;
    fn mic_card_shim_write32(sd: *mut RawDev, off: u32, val: u32);
    fn mic_card_shim_ioremap(phys: u64, len: usize) -> *mut c_void;
    fn mic_card_shim_iounmap(addr: *mut c_void);
    fn mic_card_shim_fromio(dst: *mut c_void, src: *const c_void, len: usize);
    fn mic_card_shim_toio(dst: *mut c_void, src: *const c_void, len: usize);
    fn mic_card_shim_request_db(sd: *mut RawDev, irq: c_uint, which: c_uint) -> c_int;
    fn mic_card_shim_poweroff();
}

/// The platform device and driver "mic", with the card's MMIO window as
/// its resource.
///
/// # Invariants
///
/// `mic_card_shim_register` succeeded; it is undone once, on drop.
pub(crate) struct Registration(());

impl Registration {
    pub(crate) fn new(mmio_base: u64, mmio_len: u64) -> Result<Self> {
        // SAFETY: FFI call; the shim checks the CPU and registers.
        to_result(unsafe { mic_card_shim_register(mmio_base, mmio_len) })?;
        // INVARIANT: the registration succeeded.
        Ok(Self(()))
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        // SAFETY: by the type invariant the registration exists and is undone once.
        unsafe { mic_card_shim_unregister() };
    }
}

/// The probed platform device: MMIO (SBOX and friends) mapped.
///
/// # Invariants
///
/// `raw` is live with `mmio_len` bytes of MMIO mapped from probe until
/// `mic_card_rs_remove` returns.
pub(crate) struct CardShim {
    raw: NonNull<RawDev>,
    mmio_len: u64,
}

// SAFETY: MMIO is hardware reachable from any context; each access is one
// I/O accessor call and nothing is mutated through `&self`.
unsafe impl Send for CardShim {}
// SAFETY: as above.
unsafe impl Sync for CardShim {}

impl CardShim {
    /// # Safety
    ///
    /// `raw` and `mmio_len` must be what the shim passed to `mic_card_rs_probe`.
    pub(crate) unsafe fn new(raw: *mut RawDev, mmio_len: u64) -> Option<Self> {
        // INVARIANT: the shim mapped `mmio_len` bytes before the call.
        Some(Self {
            raw: NonNull::new(raw)?,
            mmio_len,
        })
    }

    /// Requests the interrupt `irq` of a card doorbell (threaded).
    pub(crate) fn request_doorbell(&self, irq: u32, which: Doorbell) -> Result {
        // SAFETY: by the type invariant `raw` is live; the shim frees the
        // interrupt before `mic_card_rs_remove`.
        to_result(unsafe { mic_card_shim_request_db(self.raw.as_ptr(), irq, which as c_uint) })
    }
}

impl Mmio for CardShim {
    fn read32(&self, offset: u32) -> u32 {
        if offset % 4 != 0 || u64::from(offset) + 4 > self.mmio_len {
            return u32::MAX;
        }
        // SAFETY: the MMIO window is mapped for `mmio_len` bytes (type
        // invariant) and the access was checked to be inside it and aligned.
        unsafe { mic_card_shim_read32(self.raw.as_ptr(), offset) }
    }

    fn write32(&self, offset: u32, value: u32) {
        if offset % 4 != 0 || u64::from(offset) + 4 > self.mmio_len {
            return;
        }
        // SAFETY: as in `read32`.
        unsafe { mic_card_shim_write32(self.raw.as_ptr(), offset, value) }
    }
}

/// Size of the window [`PhysWindow`] maps: two pages, so a 4 KiB device
/// page at any address fits.
const WINDOW: u64 = 8192;

/// The card's physical address space as [`Memory`], reached through one
/// window mapped at the first access (in probe, where the driver core
/// discovers the device page) and fixed from then on: later accesses
/// outside it fail, and the panic path never maps anything.
///
/// # Invariants
///
/// Once `ptr` is non-null it maps `WINDOW` bytes of card physical memory
/// from `base`, until drop.
pub(crate) struct PhysWindow {
    base: AtomicU64,
    ptr: AtomicPtr<c_void>,
}

impl PhysWindow {
    pub(crate) const fn new() -> Self {
        Self {
            base: AtomicU64::new(0),
            ptr: AtomicPtr::new(core::ptr::null_mut()),
        }
    }

    /// The mapped address of `addr .. addr + len`, mapping the window first
    /// if nothing is mapped yet.
    fn map(&self, addr: u64, len: usize) -> Result<*mut u8, MemError> {
        let err = MemError::OutOfBounds {
            addr,
            len: len as u64,
        };
        let end = addr.checked_add(len as u64).ok_or(err)?;
        if self.ptr.load(Ordering::Acquire).is_null() {
            let base = addr & !0xFFF;
            // SAFETY: FFI call; mapping card physical memory has no
            // preconditions beyond process context (probe).
            let p = unsafe { mic_card_shim_ioremap(base, WINDOW as usize) };
            if p.is_null() {
                return Err(err);
            }
            self.base.store(base, Ordering::Relaxed);
            // INVARIANT: `p` maps WINDOW bytes from `base`.
            self.ptr.store(p, Ordering::Release);
        }
        let base = self.base.load(Ordering::Relaxed);
        let p = self.ptr.load(Ordering::Acquire);
        if addr < base || end > base + WINDOW {
            return Err(err);
        }
        // SAFETY: `addr - base < WINDOW`, inside the mapping.
        Ok(unsafe { p.cast::<u8>().add((addr - base) as usize) })
    }
}

impl Drop for PhysWindow {
    fn drop(&mut self) {
        let p = self.ptr.load(Ordering::Acquire);
        if !p.is_null() {
            // SAFETY: `p` came from `mic_card_shim_ioremap` and is unmapped once.
            unsafe { mic_card_shim_iounmap(p) };
        }
    }
}

impl Memory for PhysWindow {
    fn size(&self) -> u64 {
        u64::MAX
    }

    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        let src = self.map(addr, buf.len())?;
        // SAFETY: `map` checked the whole range is mapped; `buf` is valid.
        unsafe { mic_card_shim_fromio(buf.as_mut_ptr().cast(), src.cast(), buf.len()) };
        Ok(())
    }

    fn write(&self, addr: u64, data: &[u8]) -> Result<(), MemError> {
        let dst = self.map(addr, data.len())?;
        // SAFETY: as in `read`.
        unsafe { mic_card_shim_toio(dst.cast(), data.as_ptr().cast(), data.len()) };
        Ok(())
    }
}

/// `orderly_poweroff(true)`: the host asked the card OS to shut down.
pub(crate) fn orderly_poweroff() {
    // SAFETY: FFI call without preconditions (it queues the poweroff work).
    unsafe { mic_card_shim_poweroff() };
}
