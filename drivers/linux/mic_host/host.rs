// SPDX-License-Identifier: GPL-2.0-only

//! `mic_host`: the host driver for Intel MIC X100 coprocessors, as thin glue
//! between Linux 6.12 and the driver core (`drivers/core`, compiled in
//! unchanged below).
//!
//! * `shim.c` registers what 6.12's Rust API cannot (PCI driver, class and
//!   sysfs, debugfs, `/dev/micN`, interrupts, the coherent device page) and
//!   forwards every callback to the `mic_rs_*` functions here;
//! * [`shim`] wraps each call into the shim once, safely;
//! * [`hostcard`] drives the core's state machine from kernel contexts;
//! * [`attrs`] and [`fdev`] are the sysfs/debugfs files and `/dev/micN`
//!   (over the core's attribute table and virtio host code);
//! * [`mem`] and [`user`] give the core's virtio code its host memory
//!   (device page and ring blocks) and the caller's iovecs.

use kernel::ffi::{c_char, c_int, c_long, c_uint, c_ulong, c_void};

use kernel::prelude::*;
use kernel::sync::Arc;

include!("../mic_core.rs");

mod attrs;
mod fdev;
mod hostcard;
mod mem;
mod shim;
mod user;

use hostcard::{CardInfo, HostCard};
use shim::{ProbeInfo, RawDev, RawSeq, RawVma, Registration};

module! {
    type: MicHost,
    name: "mic_host",
    author: "mic-x100 project",
    description: "Intel MIC X100 host driver (Rust glue over mic-core)",
    license: "GPL",
}

struct MicHost {
    _reg: Registration,
}

impl kernel::Module for MicHost {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        Ok(Self {
            _reg: Registration::new(&host::attrs::SYSFS_FILES, &host::attrs::DEBUGFS_FILES)?,
        })
    }
}

/// Borrows the card behind the pointer `mic_rs_probe` gave the shim.
///
/// # Safety
///
/// `rs` must come from `mic_rs_probe` and `mic_rs_remove` must not have
/// released it yet.
unsafe fn card_ref<'a>(rs: *mut c_void) -> &'a Arc<HostCard> {
    // SAFETY: `rs` is a `Box<Arc<HostCard>>` leaked by `mic_rs_probe` and
    // alive until `mic_rs_remove` (guaranteed by the caller).
    unsafe { &*rs.cast::<Arc<HostCard>>() }
}

fn errno(e: Error) -> c_int {
    e.to_errno()
}

/// PCI probe, after the shim mapped the BARs, set up the vectors and
/// allocated the device page.
///
/// # Safety
///
/// Called by the shim only, with its device and probe info; `rs` is valid
/// for writes.
#[no_mangle]
unsafe extern "C" fn mic_rs_probe(
    sd: *mut RawDev,
    info: *const ProbeInfo,
    rs: *mut *mut c_void,
) -> c_int {
    // SAFETY: the shim passes a valid `info` for the duration of the call.
    let info = unsafe { &*info };
    // SAFETY: `sd` and `info` are the shim's, as `ShimDev::new` requires.
    let Some(hw) = (unsafe { shim::ShimDev::new(sd, info) }) else {
        return errno(EINVAL);
    };
    // SAFETY: `info` is the shim's, as `DmaBuf::device_page` requires.
    let Some(dp) = (unsafe { shim::DmaBuf::device_page(info) }) else {
        return errno(EINVAL);
    };
    let card_info = CardInfo {
        id: info.id,
        device_id: info.device_id,
        revision: info.revision,
        msix: info.irq_type == shim::IRQ_MSIX,
    };
    let card = match HostCard::new(card_info, hw, dp).and_then(|c| Ok(KBox::new(c, GFP_KERNEL)?)) {
        Ok(c) => c,
        Err(e) => return errno(e),
    };
    // SAFETY: `rs` is valid for writes (caller's guarantee).
    unsafe { *rs = KBox::into_raw(card).cast() };
    0
}

/// PCI remove (or probe unwinding): stops the card and drops the shim's
/// reference.
///
/// # Safety
///
/// `rs` comes from `mic_rs_probe`; this is its last use by the shim.
#[no_mangle]
unsafe extern "C" fn mic_rs_remove(rs: *mut c_void) {
    // SAFETY: `rs` is the box leaked by `mic_rs_probe`, released once here.
    let card = unsafe { KBox::from_raw(rs.cast::<Arc<HostCard>>()) };
    card.remove();
}

/// # Safety
///
/// `rs` is live (the class device exists) and `buf` is valid for `size` bytes.
#[no_mangle]
unsafe extern "C" fn mic_rs_attr_show(
    rs: *mut c_void,
    attr: c_uint,
    buf: *mut c_char,
    size: usize,
) -> isize {
    // SAFETY: the shim calls this only while the class device, and so `rs`, exists.
    let card = unsafe { card_ref(rs) };
    let Some(attr) = attrs::sysfs_file(attr) else {
        return errno(EINVAL) as isize;
    };
    // SAFETY: sysfs hands `show` a page of `size` writable bytes.
    let page = unsafe { core::slice::from_raw_parts_mut(buf.cast::<u8>(), size) };
    let mut w = attrs::PageWriter::new(page);
    match attrs::show(card, attr, &mut w) {
        Ok(()) => w.len() as isize,
        Err(_) => errno(EINVAL) as isize,
    }
}

/// # Safety
///
/// `rs` is live and `buf` is valid for `len` bytes.
#[no_mangle]
unsafe extern "C" fn mic_rs_attr_store(
    rs: *mut c_void,
    attr: c_uint,
    buf: *const c_char,
    len: usize,
) -> isize {
    // SAFETY: as in `mic_rs_attr_show`.
    let card = unsafe { card_ref(rs) };
    let Some(attr) = attrs::sysfs_file(attr) else {
        return errno(EINVAL) as isize;
    };
    // SAFETY: sysfs hands `store` `len` readable bytes.
    let data = unsafe { core::slice::from_raw_parts(buf.cast::<u8>(), len) };
    match attrs::store(card, attr, data) {
        Ok(()) => len as isize,
        Err(e) => errno(e) as isize,
    }
}

/// # Safety
///
/// `rs` is live (debugfs files are removed before `mic_rs_remove`) and `s`
/// is the running `show`'s seq_file.
#[no_mangle]
unsafe extern "C" fn mic_rs_debugfs_show(rs: *mut c_void, file: c_uint, s: *mut RawSeq) -> c_int {
    // SAFETY: as in `mic_rs_attr_show`.
    let card = unsafe { card_ref(rs) };
    // SAFETY: `s` is the seq_file of this callback and `seq` dies with it.
    let (Some(file), Some(mut seq)) = (attrs::debugfs_file(file), unsafe { shim::SeqFile::new(s) })
    else {
        return errno(EINVAL);
    };
    match attrs::debugfs_show(card, file, &mut seq) {
        Ok(()) => 0,
        Err(e) => errno(e),
    }
}

/// # Safety
///
/// `rs` is live (the cdev exists) and `out` is valid for writes.
#[no_mangle]
unsafe extern "C" fn mic_rs_open(rs: *mut c_void, out: *mut *mut c_void) -> c_int {
    // SAFETY: the shim calls `open` only while the cdev, and so `rs`, exists.
    let card = unsafe { card_ref(rs) };
    match fdev::MicFile::open(card.clone()).and_then(|f| Ok(KBox::new(f, GFP_KERNEL)?)) {
        Ok(f) => {
            // SAFETY: `out` is valid for writes (caller's guarantee).
            unsafe { *out = KBox::into_raw(f).cast() };
            0
        }
        Err(e) => errno(e),
    }
}

/// Borrows an open file's state.
///
/// # Safety
///
/// `f` comes from `mic_rs_open` and was not yet released.
unsafe fn file_ref<'a>(f: *mut c_void) -> &'a fdev::MicFile {
    // SAFETY: guaranteed by the caller.
    unsafe { &*f.cast::<fdev::MicFile>() }
}

/// # Safety
///
/// `f` comes from `mic_rs_open`; this is its last use.
#[no_mangle]
unsafe extern "C" fn mic_rs_release(f: *mut c_void) {
    // SAFETY: the box leaked by `mic_rs_open`, released once here.
    let file = unsafe { KBox::from_raw(f.cast::<fdev::MicFile>()) };
    file.release();
}

/// # Safety
///
/// `f` is an open file's state.
#[no_mangle]
unsafe extern "C" fn mic_rs_ioctl(f: *mut c_void, cmd: c_uint, arg: c_ulong) -> c_long {
    // SAFETY: the file is open for the duration of the call.
    let file = unsafe { file_ref(f) };
    match file.ioctl(cmd, arg) {
        Ok(v) => v as c_long,
        Err(e) => errno(e) as c_long,
    }
}

/// # Safety
///
/// `f` is an open file's state and `vma` the VMA being mapped.
#[no_mangle]
unsafe extern "C" fn mic_rs_mmap(f: *mut c_void, vma: *mut RawVma) -> c_int {
    // SAFETY: the file is open for the duration of the call.
    let file = unsafe { file_ref(f) };
    // SAFETY: `vma` is this callback's and `v` dies with it.
    let Some(v) = (unsafe { shim::Vma::new(vma) }) else {
        return errno(EINVAL);
    };
    match file.mmap(&v) {
        Ok(()) => 0,
        Err(e) => errno(e),
    }
}

/// # Safety
///
/// `f` is an open file's state.
#[no_mangle]
unsafe extern "C" fn mic_rs_poll(f: *mut c_void) -> c_uint {
    // SAFETY: the file is open for the duration of the call.
    let file = unsafe { file_ref(f) };
    file.poll() as c_uint
}

/// # Safety
///
/// `rs` is live: the shim frees the interrupt before `mic_rs_remove`.
#[no_mangle]
unsafe extern "C" fn mic_rs_irq(rs: *mut c_void) -> bool {
    // SAFETY: see the function's safety section.
    unsafe { card_ref(rs) }.irq()
}

/// # Safety
///
/// As for `mic_rs_irq`.
#[no_mangle]
unsafe extern "C" fn mic_rs_irq_thread(rs: *mut c_void) {
    // SAFETY: see the function's safety section.
    unsafe { card_ref(rs) }.irq_thread();
}
