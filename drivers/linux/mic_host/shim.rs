// SPDX-License-Identifier: GPL-2.0-only

//! Safe wrappers over the C shim (`shim.c`, declared in `shim.h`): each raw
//! call is made in exactly one place, here, and the rest of the crate is safe
//! Rust over the types below.

use core::ptr::NonNull;
use kernel::error::to_result;
use kernel::ffi::{c_char, c_int, c_uint, c_ulong, c_void};

use kernel::prelude::*;

use crate::host::attrs::FileSpec;
use crate::hw::{self, MemError, Memory, Mmio};

/// `struct mic_shim_dev` (opaque).
#[repr(C)]
pub(crate) struct RawDev {
    _private: [u8; 0],
}

/// `struct seq_file` (opaque).
#[repr(C)]
pub(crate) struct RawSeq {
    _private: [u8; 0],
}

/// `struct vm_area_struct` (opaque).
#[repr(C)]
pub(crate) struct RawVma {
    _private: [u8; 0],
}

/// `struct mic_shim_attr`.
#[repr(C)]
pub(crate) struct ShimAttr {
    name: *const c_char,
    mode: u16,
}

/// `enum mic_shim_irq`.
pub(crate) const IRQ_MSIX: u32 = 0;

/// `enum mic_shim_poll`.
#[derive(Clone, Copy)]
#[repr(u32)]
pub(crate) enum PollState {
    None = 0,
    Ready = 1,
    Error = 2,
}

/// `struct mic_shim_probe`.
#[repr(C)]
pub(crate) struct ProbeInfo {
    pub(crate) id: u32,
    pub(crate) device_id: u16,
    pub(crate) revision: u8,
    pub(crate) irq_type: u32,
    pub(crate) mmio_len: u64,
    pub(crate) aper_len: u64,
    pub(crate) dp: *mut c_void,
    pub(crate) dp_len: u64,
    pub(crate) dp_dma: u64,
}

/// `struct mic_shim_vma`.
#[repr(C)]
struct RawVmaInfo {
    pgoff: c_ulong,
    len: c_ulong,
    writable: bool,
}

extern "C" {
    fn mic_shim_register(
        sysfs: *const ShimAttr,
        nsysfs: c_uint,
        dbg: *const ShimAttr,
        ndbg: c_uint,
    ) -> c_int;
    fn mic_shim_unregister();
    fn mic_shim_read32(sd: *mut RawDev, off: u32) -> u32;
    fn mic_shim_write32(sd: *mut RawDev, off: u32, val: u32);
    fn mic_shim_aper_read(sd: *mut RawDev, off: u64, buf: *mut c_void, len: usize);
    fn mic_shim_aper_write(sd: *mut RawDev, off: u64, buf: *const c_void, len: usize);
    fn mic_shim_device(sd: *mut RawDev) -> *mut c_void;
    fn mic_shim_notify(sd: *mut RawDev, attr: c_uint);
    fn mic_shim_wake(sd: *mut RawDev);
    fn mic_shim_seq_write(s: *mut RawSeq, data: *const c_void, len: usize);
    fn mic_shim_dma_alloc(sd: *mut RawDev, len: usize, dma: *mut u64) -> *mut c_void;
    fn mic_shim_dma_free(sd: *mut RawDev, p: *mut c_void, len: usize, dma: u64);
    fn mic_shim_remap(vma: *mut RawVma, off: c_ulong, cpu_addr: *mut c_void, len: usize) -> c_int;
    fn mic_shim_wmb();
    fn mic_shim_rmb();
    fn mic_shim_vma_info(vma: *mut RawVma, info: *mut RawVmaInfo);
}

/// The module-wide registration: the "mic" class and char region, the
/// `mic_host` debugfs directory and the PCI driver, with one file per row
/// of mic-core's sysfs and debugfs tables.
///
/// # Invariants
///
/// `mic_shim_register` succeeded with pointers into `sysfs`, `debugfs` and
/// `names`, which live (unmoved on the heap) until `drop` unregistered.
pub(crate) struct Registration {
    sysfs: KVec<ShimAttr>,
    debugfs: KVec<ShimAttr>,
    names: KVec<KVec<u8>>,
}

// SAFETY: the tables are only read, by the shim, while registered.
unsafe impl Send for Registration {}
// SAFETY: as above.
unsafe impl Sync for Registration {}

impl Registration {
    /// Registers everything; every card gets the files of `sysfs` and `debugfs`.
    pub(crate) fn new(sysfs: &[FileSpec], debugfs: &[FileSpec]) -> Result<Self> {
        let mut names = KVec::new();
        let mut table = |specs: &[FileSpec]| -> Result<KVec<ShimAttr>> {
            let mut out = KVec::new();
            for spec in specs {
                let mut name = KVec::new();
                name.extend_from_slice(spec.name.as_bytes(), GFP_KERNEL)?;
                name.push(0, GFP_KERNEL)?;
                out.push(
                    ShimAttr {
                        name: name.as_ptr().cast(),
                        mode: spec.mode,
                    },
                    GFP_KERNEL,
                )?;
                names.push(name, GFP_KERNEL)?;
            }
            Ok(out)
        };
        let (sysfs, debugfs) = (table(sysfs)?, table(debugfs)?);
        let (ns, nd) = (u32::try_from(sysfs.len())?, u32::try_from(debugfs.len())?);
        // SAFETY: the tables and the NUL-terminated names they point to are
        // heap buffers owned by the returned value and freed only after
        // `mic_shim_unregister` (in `drop`).
        to_result(unsafe { mic_shim_register(sysfs.as_ptr(), ns, debugfs.as_ptr(), nd) })?;
        // INVARIANT: registered with pointers into the values kept here.
        Ok(Self {
            sysfs,
            debugfs,
            names,
        })
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        // SAFETY: by the type invariant the registration exists and is
        // undone once; the tables are still alive.
        unsafe { mic_shim_unregister() };
        let _ = (&self.sysfs, &self.debugfs, &self.names);
    }
}

/// One probed card as the shim holds it: BAR4 (MMIO) and BAR0 (aperture)
/// mapped, the device page allocated.
///
/// # Invariants
///
/// `raw` points to a live `struct mic_shim_dev` whose mappings cover
/// `mmio_len` and `aper_len` bytes, from `mic_rs_probe` until `mic_rs_remove`
/// returns; callers stop touching the hardware once removal began (the
/// card's `removed` flag, checked under its lock).
pub(crate) struct ShimDev {
    raw: NonNull<RawDev>,
    mmio_len: u64,
    aper_len: u64,
}

// SAFETY: the shim's device is reachable from any thread; MMIO and the
// aperture are hardware, and every access is a single I/O accessor call.
unsafe impl Send for ShimDev {}
// SAFETY: as above; nothing in `ShimDev` is mutated through `&self`.
unsafe impl Sync for ShimDev {}

impl ShimDev {
    /// Wraps the device `mic_rs_probe` was called with.
    ///
    /// # Safety
    ///
    /// `raw` and `info` must be what the shim passed to `mic_rs_probe`.
    pub(crate) unsafe fn new(raw: *mut RawDev, info: &ProbeInfo) -> Option<Self> {
        // INVARIANT: the shim mapped both BARs with these lengths before the call.
        Some(Self {
            raw: NonNull::new(raw)?,
            mmio_len: info.mmio_len,
            aper_len: info.aper_len,
        })
    }

    /// The PCI device's `struct device`.
    pub(crate) fn device(&self) -> &kernel::device::Device {
        // SAFETY: by the type invariant `raw` is live; the PCI device outlives
        // the shim's device, which outlives `self`.
        unsafe { kernel::device::Device::as_ref(mic_shim_device(self.raw.as_ptr()).cast()) }
    }

    /// `sysfs_notify` on sysfs attribute `index` of the card's class device.
    pub(crate) fn notify(&self, index: usize) {
        if let Ok(i) = u32::try_from(index) {
            // SAFETY: by the type invariant `raw` is live; the shim ignores
            // indices it has no node for.
            unsafe { mic_shim_notify(self.raw.as_ptr(), i) };
        }
    }

    /// Wakes every `poll()` on the card's `/dev/micN`.
    pub(crate) fn wake(&self) {
        // SAFETY: by the type invariant `raw` is live.
        unsafe { mic_shim_wake(self.raw.as_ptr()) };
    }

    /// Allocates `len` zeroed bytes of DMA-coherent memory for the card.
    pub(crate) fn dma_alloc(&self, len: usize) -> Option<DmaBuf> {
        let mut dma = 0u64;
        // SAFETY: by the type invariant `raw` is live; `dma` is valid for writes.
        let p = unsafe { mic_shim_dma_alloc(self.raw.as_ptr(), len, &mut dma) };
        // INVARIANT: the shim allocated `len` coherent bytes at `p`.
        Some(DmaBuf {
            ptr: NonNull::new(p.cast())?,
            len,
            dma,
        })
    }

    /// Frees a buffer from [`ShimDev::dma_alloc`].
    pub(crate) fn dma_free(&self, buf: DmaBuf) {
        // SAFETY: `buf` came from `dma_alloc` on this device (the only way to
        // get an owned `DmaBuf` other than the device page, which is never
        // passed here) and is freed once, as it is consumed.
        unsafe { mic_shim_dma_free(self.raw.as_ptr(), buf.ptr.as_ptr().cast(), buf.len, buf.dma) };
    }

    /// The card's aperture (BAR0): GDDR as the host sees it.
    pub(crate) fn aperture(&self) -> Aperture<'_> {
        Aperture(self)
    }
}

/// MMIO space (BAR4): out-of-range or unaligned accesses read all ones and
/// drop writes, as a master abort would.
impl Mmio for ShimDev {
    fn read32(&self, offset: u32) -> u32 {
        if offset % 4 != 0 || u64::from(offset) + 4 > self.mmio_len {
            return u32::MAX;
        }
        // SAFETY: by the type invariant BAR4 is mapped for `mmio_len` bytes,
        // and the access was just checked to be inside it and aligned.
        unsafe { mic_shim_read32(self.raw.as_ptr(), offset) }
    }

    fn write32(&self, offset: u32, value: u32) {
        if offset % 4 != 0 || u64::from(offset) + 4 > self.mmio_len {
            return;
        }
        // SAFETY: as in `read32`.
        unsafe { mic_shim_write32(self.raw.as_ptr(), offset, value) }
    }
}

/// The aperture (BAR0) as [`Memory`], bounds-checked against the BAR length.
pub(crate) struct Aperture<'a>(&'a ShimDev);

impl Memory for Aperture<'_> {
    fn size(&self) -> u64 {
        self.0.aper_len
    }

    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        hw::check_range(self, addr, buf.len() as u64)?;
        // SAFETY: BAR0 is mapped for `aper_len` bytes (type invariant of
        // `ShimDev`) and the range was just checked; `buf` is valid for writes.
        unsafe {
            mic_shim_aper_read(
                self.0.raw.as_ptr(),
                addr,
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        Ok(())
    }

    fn write(&self, addr: u64, data: &[u8]) -> Result<(), MemError> {
        hw::check_range(self, addr, data.len() as u64)?;
        // SAFETY: as in `read`; `data` is valid for reads.
        unsafe { mic_shim_aper_write(self.0.raw.as_ptr(), addr, data.as_ptr().cast(), data.len()) };
        Ok(())
    }

    // The aperture is mapped write-combining: ordering needs real barriers.
    fn write_barrier(&self) {
        wmb();
    }

    fn read_barrier(&self) {
        rmb();
    }
}

/// `wmb()`.
pub(crate) fn wmb() {
    // SAFETY: a barrier, no preconditions.
    unsafe { mic_shim_wmb() };
}

/// `rmb()`.
pub(crate) fn rmb() {
    // SAFETY: a barrier, no preconditions.
    unsafe { mic_shim_rmb() };
}

/// DMA-coherent memory shared with the card: the device page (allocated by
/// the shim at probe) or a ring block ([`ShimDev::dma_alloc`]).
///
/// # Invariants
///
/// `ptr` points to `len` bytes of coherent memory that stays allocated
/// while the value exists (the device page until after `mic_rs_remove`, a
/// ring block until [`ShimDev::dma_free`] consumes it). The card writes it
/// concurrently, so every access is a volatile byte copy.
pub(crate) struct DmaBuf {
    ptr: NonNull<u8>,
    len: usize,
    dma: u64,
}

// SAFETY: the memory is plain memory shared with the device; every access
// is a volatile copy through `&self`.
unsafe impl Send for DmaBuf {}
// SAFETY: as above.
unsafe impl Sync for DmaBuf {}

impl DmaBuf {
    /// Wraps the device page `mic_rs_probe` was handed.
    ///
    /// # Safety
    ///
    /// `info` must be what the shim passed to `mic_rs_probe`.
    pub(crate) unsafe fn device_page(info: &ProbeInfo) -> Option<Self> {
        // INVARIANT: the shim allocated `dp_len` coherent bytes at `dp`,
        // freed after `mic_rs_remove`.
        Some(Self {
            ptr: NonNull::new(info.dp.cast())?,
            len: usize::try_from(info.dp_len).ok()?,
            dma: info.dp_dma,
        })
    }

    /// Bus address.
    pub(crate) fn dma_addr(&self) -> u64 {
        self.dma
    }

    /// Bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Maps the buffer read-only into `vma` at byte offset `off` of the mapping.
    pub(crate) fn mmap_into(&self, vma: &Vma, off: usize) -> Result {
        // SAFETY: the VMA is live (type invariant of `Vma`), the buffer is
        // allocated for `len` bytes, and `off + len` was checked by the
        // caller against the VMA's length (remap_pfn_range checks it too).
        to_result(unsafe {
            mic_shim_remap(
                vma.0.as_ptr(),
                off as c_ulong,
                self.ptr.as_ptr().cast(),
                self.len,
            )
        })
    }
}

impl Memory for DmaBuf {
    fn size(&self) -> u64 {
        self.len as u64
    }

    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        hw::check_range(self, addr, buf.len() as u64)?;
        for (i, b) in buf.iter_mut().enumerate() {
            // SAFETY: `addr + i < len` was checked above, and the page is
            // valid for `len` bytes by the type invariant.
            *b = unsafe { self.ptr.as_ptr().add(addr as usize + i).read_volatile() };
        }
        Ok(())
    }

    fn write(&self, addr: u64, data: &[u8]) -> Result<(), MemError> {
        hw::check_range(self, addr, data.len() as u64)?;
        for (i, b) in data.iter().enumerate() {
            // SAFETY: as in `read`.
            unsafe { self.ptr.as_ptr().add(addr as usize + i).write_volatile(*b) };
        }
        Ok(())
    }

    fn write_barrier(&self) {
        wmb();
    }

    fn read_barrier(&self) {
        rmb();
    }
}

/// A `seq_file` a debugfs `show` writes into.
///
/// # Invariants
///
/// Points to the `seq_file` of a running `show` callback.
pub(crate) struct SeqFile(NonNull<RawSeq>);

impl SeqFile {
    /// Wraps the `seq_file` a `show` callback received.
    ///
    /// # Safety
    ///
    /// `raw` must be the `seq_file` of the running callback, and the value
    /// must not outlive it.
    pub(crate) unsafe fn new(raw: *mut RawSeq) -> Option<Self> {
        // INVARIANT: guaranteed by the caller.
        NonNull::new(raw).map(Self)
    }

    /// Appends bytes (the seq_file grows its buffer and re-runs `show` as needed).
    pub(crate) fn write(&mut self, data: &[u8]) {
        // SAFETY: by the type invariant the seq_file is live; `data` is valid.
        unsafe { mic_shim_seq_write(self.0.as_ptr(), data.as_ptr().cast(), data.len()) };
    }
}

impl core::fmt::Write for SeqFile {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        self.write(s.as_bytes());
        Ok(())
    }
}

/// A `vm_area_struct` being set up by `mmap` on `/dev/micN`.
///
/// # Invariants
///
/// Points to the VMA of a running `mmap` callback.
pub(crate) struct Vma(NonNull<RawVma>);

/// What `mmap` asked for.
pub(crate) struct VmaInfo {
    /// Offset in pages.
    pub(crate) pgoff: usize,
    /// Length in bytes.
    pub(crate) len: usize,
    /// `VM_WRITE` was requested.
    pub(crate) writable: bool,
}

impl Vma {
    /// Wraps the VMA an `mmap` callback received.
    ///
    /// # Safety
    ///
    /// `raw` must be the VMA of the running callback, and the value must not
    /// outlive it.
    pub(crate) unsafe fn new(raw: *mut RawVma) -> Option<Self> {
        // INVARIANT: guaranteed by the caller.
        NonNull::new(raw).map(Self)
    }

    /// The request, with `VM_MAYWRITE` cleared so it can never become writable.
    pub(crate) fn info(&self) -> VmaInfo {
        let mut raw = RawVmaInfo {
            pgoff: 0,
            len: 0,
            writable: false,
        };
        // SAFETY: by the type invariant the VMA is live; `raw` is valid.
        unsafe { mic_shim_vma_info(self.0.as_ptr(), &mut raw) };
        VmaInfo {
            pgoff: raw.pgoff,
            len: raw.len,
            writable: raw.writable,
        }
    }
}

/// Sleeps for `ms` milliseconds (process context only).
pub(crate) fn msleep(ms: u64) {
    let ms = u32::try_from(ms).unwrap_or(u32::MAX);
    // SAFETY: FFI call without preconditions beyond process context, which
    // every caller (work items, sysfs stores, remove) is in.
    unsafe { kernel::bindings::msleep(ms) };
}

/// Milliseconds since boot (monotonic).
pub(crate) fn now_ms() -> u64 {
    u64::try_from(kernel::time::Ktime::ktime_get().to_ms()).unwrap_or(0)
}
