// SPDX-License-Identifier: GPL-2.0-only

//! `mic_card`: the card-side driver of an Intel MIC X100 (it runs inside the
//! card's Linux), as thin glue between Linux 6.12 and the driver core
//! (`drivers/core`, compiled in unchanged below).
//!
//! * `shim.c` registers the "mic" platform device and driver, maps MMIO,
//!   requests the doorbell interrupts and hooks the panic and reboot
//!   notifiers, forwarding each to the `mic_card_rs_*` functions here;
//! * [`shim`] wraps each call into the shim once, safely;
//! * the decisions — device-page discovery with the magic check, doorbell
//!   allocation and publication, the shutdown and panic reports — are the
//!   core's `card::CardDevice`.
//!
//! The card side of virtio over PCIe is the core's `card::virtio::CardVdev`:
//! the config doorbell's work walks the device page, probes each new
//! device (takes and publishes its `h2c_vdev_db`), acknowledges config
//! changes and completes hot removal, so the host's handshakes finish.
//!
// TODO(virtio card): registering the devices with the card kernel's virtio
// core (`register_virtio_device` with `virtio_config_ops` over `CardVdev` in
// this shim) is not done: a MIC virtqueue keeps desc/avail in the host's
// ring block and the used ring in card memory (`CardVdev::find_vqs`), and
// 6.12's exported `vring_new_virtqueue` lays all three out contiguously in
// one buffer (`__vring_new_virtqueue`, which took a prepared `struct vring`
// in the VOP era, is static now). It needs a kernel that exports a way to
// place the used ring, or a patched tree.

use kernel::ffi::{c_int, c_uint, c_void};
use kernel::prelude::*;
use kernel::sync::{Arc, Mutex};
use kernel::workqueue::{self, Work, WorkItem};
use kernel::{impl_has_work, new_mutex, new_work};

include!("../mic_core.rs");

mod shim;

use abi::MicStatus;
use card::virtio::{CardVdev, ConfigRequest};
use card::{irq_for_db, CardDevice};
use shim::{CardShim, Doorbell, PhysWindow, RawDev, Registration};

module! {
    type: MicCard,
    name: "mic_card",
    author: "mic-x100 project",
    description: "Intel MIC X100 card driver (Rust glue over mic-core)",
    license: "GPL",
}

struct MicCard {
    _reg: Registration,
}

impl kernel::Module for MicCard {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        Ok(Self {
            _reg: Registration::new(regs::CARD_MMIO_BASE, u64::from(regs::MMIO_SIZE))?,
        })
    }
}

/// What the config doorbell's work changes: the doorbell allocator and the
/// virtio devices found.
struct Devices {
    dev: CardDevice,
    /// One entry per device descriptor probed (`None` once removed),
    /// boxed: a `CardVdev` is 9 KiB.
    vdevs: KVec<Option<KBox<CardVdev>>>,
}

/// The card driver's state. `report` is the driver core's card device as
/// initialised, immutable, so the panic path reads it without a lock;
/// `devices` holds the copy whose doorbell allocator the virtio devices use.
#[pin_data]
struct Card {
    shim: CardShim,
    mem: PhysWindow,
    report: CardDevice,
    #[pin]
    devices: Mutex<Devices>,
    #[pin]
    scan: Work<Card>,
}

impl_has_work! {
    impl HasWork<Self> for Card { self.scan }
}

impl WorkItem for Card {
    type Pointer = Arc<Card>;

    fn run(this: Arc<Card>) {
        this.scan_devices();
    }
}

impl Card {
    /// The config doorbell's work: walk the device page (the core's
    /// bounds-checked walker), probe new devices, answer the host's config
    /// changes and removals.
    fn scan_devices(&self) {
        let mut guard = self.devices.lock();
        let st = &mut *guard;
        let dp = st.dev.dp();
        for item in devpage::walk_mem(&self.mem, dp) {
            let loc = match item {
                Ok(loc) => loc,
                Err(e) => {
                    pr_warn!("mic_card: {}\n", e);
                    break;
                }
            };
            let addr = dp + loc.offset as u64;
            let known = st
                .vdevs
                .iter()
                .position(|v| v.as_ref().is_some_and(|v| v.addr() == addr));
            let Some(i) = known else {
                match probe_vdev(&self.mem, dp, &loc, st.dev.doorbells_mut()) {
                    Ok(v) => {
                        pr_info!(
                            "mic_card: virtio {} device at {:#x} ({} vqs)\n",
                            abi::virtio::id::name(v.device_type()),
                            loc.offset,
                            loc.desc.num_vq
                        );
                        if st.vdevs.push(Some(v), GFP_KERNEL).is_err() {
                            pr_err!("mic_card: out of memory for a virtio device\n");
                        }
                    }
                    Err(e) => pr_warn!("mic_card: virtio device at {:#x}: {}\n", loc.offset, e),
                }
                continue;
            };
            let Some(v) = st.vdevs[i].as_ref() else {
                continue;
            };
            match v.config_request(&self.mem) {
                Ok(Some(ConfigRequest::Changed)) => {
                    let _ = v.ack_config(&self.mem);
                }
                Ok(Some(ConfigRequest::Remove)) => {
                    if let Some(v) = st.vdevs[i].take() {
                        let _ = remove_vdev(v, &self.shim, &self.mem, st.dev.doorbells_mut());
                    }
                }
                Ok(None) => {}
                Err(e) => pr_warn!("mic_card: {}\n", e),
            }
        }
    }

    /// Orderly shutdown: every virtio device removed, then the report.
    fn shut_down(&self, status: MicStatus) {
        {
            let mut guard = self.devices.lock();
            let st = &mut *guard;
            for slot in st.vdevs.iter_mut() {
                if let Some(v) = slot.take() {
                    let _ = remove_vdev(v, &self.shim, &self.mem, st.dev.doorbells_mut());
                }
            }
        }
        if let Err(e) = self.report.report_shutdown(&self.shim, &self.mem, status) {
            pr_err!("mic_card: shutdown report failed: {}\n", e);
        }
    }

    /// A host doorbell fired (interrupt thread).
    fn doorbell(self: &Arc<Self>, which: u32) {
        if which == Doorbell::Shutdown as u32 {
            if let Ok(true) = self.report.shutdown_requested(&self.mem) {
                shim::orderly_poweroff();
            }
        } else if which == Doorbell::Config as u32 {
            let _ = workqueue::system().enqueue(self.clone());
        }
    }
}

/// Why a device could not be taken.
enum ProbeError {
    Virtio(card::virtio::VirtioError),
    NoMemory,
}

impl core::fmt::Display for ProbeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ProbeError::Virtio(e) => write!(f, "{e}"),
            ProbeError::NoMemory => f.write_str("out of memory"),
        }
    }
}

/// Probes a device into a box, in a frame of its own: a `CardVdev` is
/// 9 KiB, and no caller's frame should hold it (kernel stacks are 16 KiB).
#[inline(never)]
fn probe_vdev(
    mem: &PhysWindow,
    dp: u64,
    loc: &devpage::DescLoc,
    dbs: &mut card::CardDoorbells,
) -> Result<KBox<CardVdev>, ProbeError> {
    let v = CardVdev::probe(mem, dp, loc, dbs).map_err(ProbeError::Virtio)?;
    KBox::new(v, GFP_KERNEL).map_err(|_| ProbeError::NoMemory)
}

/// `CardVdev::remove` takes the device by value: unboxed in a frame of its own.
#[inline(never)]
fn remove_vdev(
    v: KBox<CardVdev>,
    mmio: &CardShim,
    mem: &PhysWindow,
    dbs: &mut card::CardDoorbells,
) -> Result<(), crate::hw::MemError> {
    KBox::into_inner(v).remove(mmio, mem, dbs)
}

/// Borrows the card behind the pointer `mic_card_rs_probe` handed out.
///
/// # Safety
///
/// `rs` comes from `mic_card_rs_probe` and was not yet released.
unsafe fn card_ref<'a>(rs: *mut c_void) -> &'a Arc<Card> {
    // SAFETY: a `KBox<Arc<Card>>` leaked by `mic_card_rs_probe` (caller's guarantee).
    unsafe { &*rs.cast::<Arc<Card>>() }
}

fn probe(sd: *mut RawDev, mmio_len: u64) -> Result<Arc<Card>> {
    // SAFETY: `sd` and `mmio_len` are what the shim passed to `mic_card_rs_probe`.
    let shim = unsafe { CardShim::new(sd, mmio_len) }.ok_or(EINVAL)?;
    let mem = PhysWindow::new();
    let dev = CardDevice::init(&shim, &mem).map_err(|e| {
        pr_err!("mic_card: {}\n", e);
        EIO
    })?;
    shim.request_doorbell(irq_for_db(dev.shutdown_db()), Doorbell::Shutdown)?;
    shim.request_doorbell(irq_for_db(dev.config_db()), Doorbell::Config)?;
    let report = dev.clone();
    let card = Arc::pin_init(
        pin_init!(Card {
            shim,
            mem,
            report,
            devices <- new_mutex!(Devices {
                dev,
                vdevs: KVec::new(),
            }),
            scan <- new_work!("Card::scan"),
        }),
        GFP_KERNEL,
    )?;
    // Devices the host added before this driver came up.
    let _ = workqueue::system().enqueue(card.clone());
    Ok(card)
}

/// Platform probe: the core discovers the device page (magic checked),
/// takes and publishes the shutdown and config doorbells; their interrupts
/// are requested.
///
/// # Safety
///
/// Called by the shim only; `rs` is valid for writes.
#[no_mangle]
unsafe extern "C" fn mic_card_rs_probe(
    sd: *mut RawDev,
    mmio_len: u64,
    rs: *mut *mut c_void,
) -> c_int {
    match probe(sd, mmio_len).and_then(|c| Ok(KBox::new(c, GFP_KERNEL)?)) {
        Ok(card) => {
            // SAFETY: `rs` is valid for writes (caller's guarantee).
            unsafe { *rs = KBox::into_raw(card).cast() };
            0
        }
        Err(e) => e.to_errno(),
    }
}

/// # Safety
///
/// `rs` comes from `mic_card_rs_probe`; this is its last use (the shim
/// freed the interrupts and unhooked the notifiers first).
#[no_mangle]
unsafe extern "C" fn mic_card_rs_remove(rs: *mut c_void) {
    // SAFETY: the box leaked by `mic_card_rs_probe`, released once here.
    drop(unsafe { KBox::from_raw(rs.cast::<Arc<Card>>()) });
}

/// # Safety
///
/// `rs` is live (the interrupts are freed before `mic_card_rs_remove`).
#[no_mangle]
unsafe extern "C" fn mic_card_rs_db(rs: *mut c_void, which: c_uint) {
    // SAFETY: see the function's safety section.
    unsafe { card_ref(rs) }.doorbell(which);
}

/// Panic notifier: report "crashed" to the host. No locks, no allocation,
/// no mapping: the window was mapped at probe.
///
/// # Safety
///
/// `rs` is live (the notifier is unhooked before `mic_card_rs_remove`).
#[no_mangle]
unsafe extern "C" fn mic_card_rs_panic(rs: *mut c_void) {
    // SAFETY: see the function's safety section.
    let card = unsafe { card_ref(rs) };
    let _ = card.report.report_panic(&card.shim, &card.mem);
}

/// Reboot notifier: report halt, poweroff or restart to the host.
///
/// # Safety
///
/// `rs` is live (the notifier is unhooked before `mic_card_rs_remove`).
#[no_mangle]
unsafe extern "C" fn mic_card_rs_down(rs: *mut c_void, why: c_uint) {
    // SAFETY: see the function's safety section.
    let card = unsafe { card_ref(rs) };
    // `enum mic_card_shim_down`.
    let status = match why {
        0 => MicStatus::Halted,
        1 => MicStatus::PowerOff,
        _ => MicStatus::Restart,
    };
    card.shut_down(status);
}
