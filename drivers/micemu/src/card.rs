//! One emulated card: its hardware (registers, GDDR, the host RAM the host
//! driver gave it) and, behind one mutex, the state machines that run on it
//! — the host driver instance the kernel would run, the card OS, and the
//! bookkeeping of the reset in progress.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use mic_core::host::{HostDevice, ResetSeq};

use crate::cardos::{CardHw, CardOs};
use crate::config::PciId;
use crate::dev::Vdev;
use crate::fs::WriteDone;
use crate::hw::{CardPhys, Gddr, HostArena, HostRam, MmioView, RegFile, Side};

/// The host-side sysfs attributes the driver only stores.
#[derive(Debug, Default)]
pub struct Attrs {
    pub cmdline: Option<String>,
    pub firmware: Option<String>,
    pub ramdisk: Option<String>,
    pub bootmode: Option<String>,
    pub log_buf_addr: u64,
    pub log_buf_len: u64,
}

/// A reset the host driver is running, and what waits for it.
#[derive(Debug)]
pub(crate) struct ResetProgress {
    pub(crate) seq: ResetSeq,
    pub(crate) started: Instant,
    /// A `boot` write that needed the reset first (the original resets a
    /// card whose bootstrap is not ready inside the boot request).
    pub(crate) boot: Option<WriteDone>,
}

/// Everything of one card behind its mutex.
#[derive(Debug)]
pub struct CardState {
    pub host: HostDevice,
    pub attrs: Attrs,
    pub(crate) os: CardOs,
    pub(crate) reset: Option<ResetProgress>,
    /// Hardware generation: bumped by every reset; timers of an older
    /// generation are void.
    pub(crate) epoch: u64,
    pub(crate) fail_next_reset: bool,
    /// When the state last changed (for tools showing time in state).
    pub since: Instant,
    /// The open files of `dev/micN` (virtio device slots).
    pub(crate) vdevs: Vec<Arc<Vdev>>,
    /// The host driver's DMA memory for ring blocks.
    pub(crate) arena: HostArena,
}

impl CardState {
    pub(crate) fn new(host: HostDevice, os: CardOs, host_ram_len: u64) -> Self {
        Self {
            host,
            attrs: Attrs::default(),
            os,
            reset: None,
            epoch: 0,
            fail_next_reset: false,
            since: Instant::now(),
            vdevs: Vec::new(),
            arena: HostArena::new(host_ram_len),
        }
    }
}

/// One emulated card: hardware plus the state machines.
#[derive(Debug)]
pub struct Card {
    pub id: u32,
    pub pci: PciId,
    pub regs: RegFile,
    pub gddr: Gddr,
    pub host_ram: HostRam,
    state: Mutex<CardState>,
}

impl Card {
    pub(crate) fn new(
        id: u32,
        pci: PciId,
        regs: RegFile,
        gddr: Gddr,
        host_ram: HostRam,
        st: CardState,
    ) -> Self {
        Self {
            id,
            pci,
            regs,
            gddr,
            host_ram,
            state: Mutex::new(st),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, CardState> {
        // A panic while holding a card lock is a bug; keep serving the
        // other cards and this one's last consistent state.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The host driver's view of the registers.
    pub(crate) fn host_mmio(&self) -> MmioView<'_> {
        self.regs.view(Side::Host)
    }

    /// The card's own view of its hardware, for the card OS.
    pub(crate) fn card_hw(&self, memory: u64) -> CardHw<MmioView<'_>, CardPhys<'_>> {
        CardHw {
            mmio: self.regs.view(Side::Card),
            phys: CardPhys {
                gddr: &self.gddr,
                host: &self.host_ram,
                regs: &self.regs,
            },
            memory,
        }
    }
}
