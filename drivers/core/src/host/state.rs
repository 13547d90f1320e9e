//! [`HostDevice`]: the per-card host state machine (original 3.13 semantics).
//!
//! ```text
//! offline --boot--> online --shutdown / card report--> shutting_down
//! any --reset--> offline | reset_failed      reset_failed --boot--> EINVAL
//! ```
//!
//! Every call that changes `state` returns the [`Transition`] so the caller
//! can `sysfs_notify` the `state` node. The device page is the first 4 KiB
//! of the `dp_mem` passed to each call (host RAM).

use core::fmt;

use crate::abi::{
    BP_H2C_SHUTDOWN_DB, BP_SHUTDOWN_CARD, BP_SHUTDOWN_STATUS, MIC_DP_SIZE, MIC_DPHI_SPAD, MIC_DPLO_SPAD,
    MicState, MicStatus,
};
use crate::devpage::{init_bootparam, read_u8_at, write_u8_at};
use crate::errno;
use crate::host::boot::{self, BootError, BootParams, LoadInfo};
use crate::host::doorbell::{self, DoorbellError, HostDoorbells};
use crate::host::reset::{ResetSeq, ResetTiming};
use crate::host::smpt::Smpt;
use crate::host::vop::SlotTable;
use crate::hw::{MemError, Memory, Mmio, check_range};
use crate::regs;

/// Offset of the device page in `dp_mem`.
const DP_BASE: u64 = 0;

/// A state change, for `sysfs_notify`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// State before.
    pub from: MicState,
    /// State after.
    pub to: MicState,
}

/// Errors of the non-boot host operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostError {
    /// Device-page or card memory access failed.
    Mem(MemError),
    /// The card published an invalid doorbell number.
    Doorbell(DoorbellError),
    /// The card wrote a `shutdown_status` outside the enum (ignored).
    InvalidStatus(u8),
    /// The SMPT could not map the device page.
    SmptFull,
}

impl HostError {
    /// The errno (positive) a caller returns for it.
    #[must_use]
    pub const fn errno(&self) -> i32 {
        match self {
            HostError::Mem(_) | HostError::Doorbell(_) => errno::EIO,
            HostError::InvalidStatus(_) => errno::EINVAL,
            HostError::SmptFull => errno::ENODEV,
        }
    }
}

impl From<MemError> for HostError {
    fn from(e: MemError) -> Self {
        HostError::Mem(e)
    }
}

impl From<DoorbellError> for HostError {
    fn from(e: DoorbellError) -> Self {
        HostError::Doorbell(e)
    }
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostError::Mem(e) => write!(f, "{e}"),
            HostError::Doorbell(e) => write!(f, "{e}"),
            HostError::InvalidStatus(v) => write!(f, "card reported invalid shutdown status {v}"),
            HostError::SmptFull => write!(f, "no SMPT entries left for the device page"),
        }
    }
}

impl core::error::Error for HostError {}

/// Result of [`HostDevice::begin_reset`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResetStart {
    /// The hardware reset was started: drive the sequence, then call
    /// [`HostDevice::finish_reset`].
    Started(ResetSeq),
    /// The card is offline and `force` was not set: nothing to do.
    AlreadyOffline,
    /// A reset is already running: nothing to do.
    InProgress,
}

/// Result of a successful [`HostDevice::start`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootOutcome {
    /// Always offline → online.
    pub transition: Transition,
    /// Where the loader put things.
    pub load: LoadInfo,
}

/// What [`HostDevice::handle_shutdown_interrupt`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    /// The status the card reported (now the `shutdown_status` attribute).
    pub status: MicStatus,
    /// The state change, unless the card was already shutting down.
    pub transition: Option<Transition>,
}

/// Host driver state of one card.
#[derive(Debug, Clone)]
pub struct HostDevice {
    state: MicState,
    shutdown_status: MicStatus,
    smpt: Smpt,
    doorbells: HostDoorbells,
    shutdown_db: u8,
    dp_dma_addr: u64,
    dp_card_addr: u64,
    resetting: bool,
    msix: bool,
    reset_timing: ResetTiming,
    slots: SlotTable,
}

impl HostDevice {
    /// Probe-time setup: program the SMPT, map the device page (host bus
    /// address `dp_dma_addr`) for the card and publish its card address in
    /// SPAD14/15, take the shutdown doorbell (0) and initialise the bootparam.
    /// The card starts offline with status nop.
    pub fn probe(mmio: &impl Mmio, dp_mem: &impl Memory, dp_dma_addr: u64) -> Result<Self, HostError> {
        check_range(dp_mem, DP_BASE, MIC_DP_SIZE as u64)?;
        let mut smpt = Smpt::init(mmio);
        let dp_card_addr = smpt
            .map(mmio, dp_dma_addr, MIC_DP_SIZE as u64)
            .ok_or(HostError::SmptFull)?;
        let mut doorbells = HostDoorbells::new();
        let shutdown_db = doorbells.next_db();
        let dev = Self {
            state: MicState::Offline,
            shutdown_status: MicStatus::Nop,
            smpt,
            doorbells,
            shutdown_db,
            dp_dma_addr,
            dp_card_addr,
            resetting: false,
            msix: false,
            reset_timing: ResetTiming::ORIGINAL,
            slots: SlotTable::new(),
        };
        dev.write_dp_spads(mmio);
        init_bootparam(dp_mem, DP_BASE, shutdown_db as i8)?;
        Ok(dev)
    }

    /// Current `state`.
    #[must_use]
    pub fn state(&self) -> MicState {
        self.state
    }

    /// Current `shutdown_status`.
    #[must_use]
    pub fn shutdown_status(&self) -> MicStatus {
        self.shutdown_status
    }

    /// The SMPT software copy (debugfs `smpt`).
    #[must_use]
    pub fn smpt(&self) -> &Smpt {
        &self.smpt
    }

    /// The SMPT, for mapping vring blocks.
    pub fn smpt_mut(&mut self) -> &mut Smpt {
        &mut self.smpt
    }

    /// The host doorbell allocator, for virtio devices.
    pub fn doorbells_mut(&mut self) -> &mut HostDoorbells {
        &mut self.doorbells
    }

    /// Where virtio device blocks sit in the device page.
    pub fn slots_mut(&mut self) -> &mut SlotTable {
        &mut self.slots
    }

    /// The card→host shutdown doorbell (`bootparam.c2h_shutdown_db`).
    #[must_use]
    pub fn c2h_shutdown_db(&self) -> u8 {
        self.shutdown_db
    }

    /// Host bus address of the device page.
    #[must_use]
    pub fn dp_dma_addr(&self) -> u64 {
        self.dp_dma_addr
    }

    /// Card address of the device page (what SPAD14/15 carry).
    #[must_use]
    pub fn dp_card_addr(&self) -> u64 {
        self.dp_card_addr
    }

    /// Whether a reset is running.
    #[must_use]
    pub fn is_resetting(&self) -> bool {
        self.resetting
    }

    /// Whether interrupts are delivered by MSI-X (enables auto-clear).
    pub fn set_msix(&mut self, msix: bool) {
        self.msix = msix;
    }

    /// The timing the next [`HostDevice::begin_reset`] hands out
    /// ([`ResetTiming::ORIGINAL`] unless changed).
    pub fn set_reset_timing(&mut self, timing: ResetTiming) {
        self.reset_timing = timing;
    }

    fn set_state(&mut self, to: MicState) -> Option<Transition> {
        let from = self.state;
        self.state = to;
        (from != to).then_some(Transition { from, to })
    }

    /// Writes the device page's card address into SPAD14 (low) / SPAD15 (high).
    pub fn write_dp_spads(&self, mmio: &impl Mmio) {
        mmio.write32(regs::spad(MIC_DPLO_SPAD), self.dp_card_addr as u32);
        mmio.write32(regs::spad(MIC_DPHI_SPAD), (self.dp_card_addr >> 32) as u32);
    }

    /// "boot": must be offline (else [`BootError::InvalidState`]) and not
    /// resetting. If the bootstrap is not ready returns
    /// [`BootError::FirmwareNotReady`] without touching anything: the caller
    /// runs `begin_reset(force = true)` … `finish_reset`, and calls `start`
    /// again if the state is still offline (`reset_failed` → EINVAL). Otherwise
    /// loads the OS, restores the SMPT, enables interrupts, re-initialises
    /// the bootparam (defensive: probe and every reset already did, so the
    /// card OS always starts from magic and -1 doorbells), rewrites
    /// SPAD14/15, sends the bootstrap interrupt and goes online.
    pub fn start(
        &mut self,
        mmio: &impl Mmio,
        aperture: &impl Memory,
        dp_mem: &impl Memory,
        params: &BootParams<'_>,
    ) -> Result<BootOutcome, BootError> {
        if self.state != MicState::Offline {
            return Err(BootError::InvalidState(self.state));
        }
        if self.resetting {
            return Err(BootError::ResetInProgress);
        }
        let spad2 = mmio.read32(regs::spad(regs::SPAD_DOWNLOAD_INFO));
        if !regs::spad2_ready(spad2) {
            return Err(BootError::FirmwareNotReady);
        }
        check_range(dp_mem, DP_BASE, MIC_DP_SIZE as u64)?;
        let load = boot::load(mmio, aperture, params)?;
        init_bootparam(dp_mem, DP_BASE, self.shutdown_db as i8)?;
        self.smpt.restore(mmio);
        doorbell::enable_interrupts(mmio, self.msix);
        self.write_dp_spads(mmio);
        doorbell::send_bootstrap_intr(mmio, regs::spad2_apic_id(spad2));
        let transition = Transition {
            from: self.state,
            to: MicState::Online,
        };
        self.state = MicState::Online;
        Ok(BootOutcome { transition, load })
    }

    /// "reset" (and the reset inside "boot", debugfs `soft_reset`, remove):
    /// unless offline and not `force`, re-initialise the bootparam, clear
    /// SPAD2 and set RGCR bit 0, and hand back the polling sequence. The
    /// state does not change until [`HostDevice::finish_reset`].
    pub fn begin_reset(
        &mut self,
        mmio: &impl Mmio,
        dp_mem: &impl Memory,
        force: bool,
    ) -> Result<ResetStart, HostError> {
        if self.resetting {
            return Ok(ResetStart::InProgress);
        }
        if self.state == MicState::Offline && !force {
            return Ok(ResetStart::AlreadyOffline);
        }
        init_bootparam(dp_mem, DP_BASE, self.shutdown_db as i8)?;
        mmio.write32(regs::spad(regs::SPAD_DOWNLOAD_INFO), 0);
        let rgcr = mmio.read32(regs::RGCR);
        mmio.write32(regs::RGCR, rgcr | regs::RGCR_RESET);
        self.resetting = true;
        Ok(ResetStart::Started(ResetSeq::with_timing(self.reset_timing)))
    }

    /// Ends a reset: success → `shutdown_status` nop and offline; failure →
    /// `reset_failed`.
    pub fn finish_reset(&mut self, ok: bool) -> Option<Transition> {
        self.resetting = false;
        if ok {
            self.shutdown_status = MicStatus::Nop;
            self.set_state(MicState::Offline)
        } else {
            self.set_state(MicState::ResetFailed)
        }
    }

    /// "shutdown": if online and the card published `h2c_shutdown_db`, set
    /// `bootparam.shutdown_card = 1`, ring that doorbell and go
    /// `shutting_down`. Otherwise nothing changes (and the write succeeds).
    pub fn request_shutdown(
        &mut self,
        mmio: &impl Mmio,
        dp_mem: &impl Memory,
    ) -> Result<Option<Transition>, HostError> {
        if self.state != MicState::Online {
            return Ok(None);
        }
        let db = read_u8_at(dp_mem, DP_BASE, BP_H2C_SHUTDOWN_DB)? as i8;
        if db == crate::abi::DB_NONE {
            return Ok(None);
        }
        let db = doorbell::card_db(db)?;
        write_u8_at(dp_mem, DP_BASE, BP_SHUTDOWN_CARD, 1)?;
        doorbell::send_intr(mmio, db)?;
        Ok(self.set_state(MicState::ShuttingDown))
    }

    /// The c2h shutdown doorbell fired: read `bootparam.shutdown_status`.
    /// Halted/poweroff/restart/crashed become the `shutdown_status`
    /// attribute, the bootparam field is zeroed and the state goes
    /// `shutting_down` (unless already). Nop is ignored (`Ok(None)`); a value
    /// outside the enum is ignored and reported as
    /// [`HostError::InvalidStatus`].
    pub fn handle_shutdown_interrupt(
        &mut self,
        dp_mem: &impl Memory,
    ) -> Result<Option<ShutdownReport>, HostError> {
        let v = read_u8_at(dp_mem, DP_BASE, BP_SHUTDOWN_STATUS)?;
        let status = match MicStatus::from_u8(v) {
            None => return Err(HostError::InvalidStatus(v)),
            Some(MicStatus::Nop) => return Ok(None),
            Some(s) => s,
        };
        self.shutdown_status = status;
        write_u8_at(dp_mem, DP_BASE, BP_SHUTDOWN_STATUS, 0)?;
        let transition = self.set_state(MicState::ShuttingDown);
        Ok(Some(ShutdownReport { status, transition }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::{BootMode, MIC_MAGIC};
    use crate::devpage::read_bootparam;
    use crate::fake::{FakeMem, FakeMmio};
    use crate::host::reset::ResetPoll;
    use crate::host::smpt::SMPT_CARD_BASE;

    const DP_DMA: u64 = 0x1_2345_6000;

    fn setup() -> (FakeMmio, FakeMem, HostDevice) {
        let mmio = FakeMmio::new();
        let dp = FakeMem::new(MIC_DP_SIZE);
        let dev = HostDevice::probe(&mmio, &dp, DP_DMA).unwrap();
        (mmio, dp, dev)
    }

    fn ready(mmio: &FakeMmio) {
        mmio.set(regs::spad(2), regs::spad2_encode(true, 7, 0x10_0000));
    }

    fn elf(img: &[u8]) -> BootParams<'_> {
        BootParams {
            mode: BootMode::Elf,
            image: img,
            ramdisk: None,
            cmdline: None,
        }
    }

    fn online() -> (FakeMmio, FakeMem, HostDevice) {
        let (mmio, dp, mut dev) = setup();
        ready(&mmio);
        let ap = FakeMem::new(0x40_0000);
        dev.start(&mmio, &ap, &dp, &elf(&[1; 16])).unwrap();
        (mmio, dp, dev)
    }

    #[test]
    fn probe_publishes_device_page() {
        let (mmio, dp, dev) = setup();
        assert_eq!(dev.state(), MicState::Offline);
        assert_eq!(dev.shutdown_status(), MicStatus::Nop);
        assert_eq!(dev.c2h_shutdown_db(), 0);
        assert_eq!(dev.dp_dma_addr(), DP_DMA);
        assert_eq!(dev.dp_card_addr(), SMPT_CARD_BASE + DP_DMA);
        assert_eq!(mmio.get(regs::spad(14)), (SMPT_CARD_BASE + DP_DMA) as u32);
        assert_eq!(mmio.get(regs::spad(15)), ((SMPT_CARD_BASE + DP_DMA) >> 32) as u32);
        let bp = read_bootparam(&dp, 0).unwrap();
        assert_eq!(bp.magic, MIC_MAGIC);
        assert_eq!(bp.c2h_shutdown_db, 0);
        assert_eq!(bp.h2c_shutdown_db, -1);
        assert_eq!(bp.h2c_config_db, -1);
        assert_eq!(dev.smpt().entries()[0].refcount, 4096);
        assert!(!dev.is_resetting());
    }

    #[test]
    fn probe_errors() {
        let mmio = FakeMmio::new();
        assert!(matches!(
            HostDevice::probe(&mmio, &FakeMem::new(100), 0),
            Err(HostError::Mem(_))
        ));
        assert_eq!(
            HostDevice::probe(&mmio, &FakeMem::new(4096), u64::MAX).unwrap_err(),
            HostError::SmptFull
        );
        assert_eq!(HostError::SmptFull.errno(), errno::ENODEV);
    }

    #[test]
    fn start_boots_and_goes_online() {
        let (mmio, dp, mut dev) = setup();
        ready(&mmio);
        dev.set_msix(true);
        dp.fill(BP_SHUTDOWN_STATUS as u64, &[3]);
        // Clobber the SMPT and SPAD14 as a reset might.
        mmio.set(regs::smpt(3), 0);
        mmio.set(regs::spad(14), 0);
        mmio.clear_log();
        let ap = FakeMem::new(0x40_0000);
        let out = dev.start(&mmio, &ap, &dp, &elf(&[1; 16])).unwrap();
        assert_eq!(
            out.transition,
            Transition {
                from: MicState::Offline,
                to: MicState::Online
            }
        );
        assert_eq!(out.load.boot_addr, 0x10_0000);
        assert_eq!(
            read_bootparam(&dp, 0).unwrap(),
            crate::abi::MicBootparam::host_initial(0)
        );
        assert_eq!(dev.state(), MicState::Online);
        assert_eq!(mmio.get(regs::smpt(3)), 3 << 2);
        assert_eq!(mmio.get(regs::spad(14)), dev.dp_card_addr() as u32);
        assert_eq!(mmio.writes_to(regs::SIAC0), [0xFF0F]);
        // The bootstrap interrupt is the last thing written.
        let w = mmio.writes.borrow();
        assert_eq!(w[w.len() - 2], (regs::APICICR7 + 4, 7));
        assert_eq!(w[w.len() - 1], (regs::APICICR7, 0x20E5));
        drop(w);
        // Boot when not offline.
        assert_eq!(
            dev.start(&mmio, &ap, &dp, &elf(&[1; 16])).unwrap_err(),
            BootError::InvalidState(MicState::Online)
        );
    }

    #[test]
    fn start_not_ready_then_reset_then_start() {
        let (mmio, dp, mut dev) = setup();
        let ap = FakeMem::new(0x40_0000);
        mmio.clear_log();
        assert_eq!(
            dev.start(&mmio, &ap, &dp, &elf(&[1; 16])).unwrap_err(),
            BootError::FirmwareNotReady
        );
        assert!(mmio.writes.borrow().is_empty());
        // Plain reset while offline is a no-op; the boot path forces it.
        assert_eq!(
            dev.begin_reset(&mmio, &dp, false).unwrap(),
            ResetStart::AlreadyOffline
        );
        let ResetStart::Started(mut seq) = dev.begin_reset(&mmio, &dp, true).unwrap() else {
            panic!("reset not started")
        };
        assert_eq!(dev.begin_reset(&mmio, &dp, true).unwrap(), ResetStart::InProgress);
        assert_eq!(
            dev.start(&mmio, &ap, &dp, &elf(&[1; 16])).unwrap_err(),
            BootError::ResetInProgress
        );
        assert_eq!(seq.poll(&mmio, 1000), ResetPoll::Wait { ms: 1000 });
        ready(&mmio);
        assert_eq!(seq.poll(&mmio, 2000), ResetPoll::Ready);
        assert_eq!(dev.finish_reset(true), None);
        assert!(dev.start(&mmio, &ap, &dp, &elf(&[1; 16])).is_ok());
    }

    #[test]
    fn failed_load_stays_offline() {
        let (mmio, dp, mut dev) = setup();
        mmio.set(regs::spad(2), regs::spad2_encode(true, 0, 0x8000_1000));
        let ap = FakeMem::new(0x40_0000);
        assert_eq!(
            dev.start(&mmio, &ap, &dp, &elf(&[1; 16])).unwrap_err(),
            BootError::BootAddrTooHigh(0x8000_1000)
        );
        assert_eq!(dev.state(), MicState::Offline);
        // Device page memory too small.
        ready(&mmio);
        assert!(matches!(
            dev.start(&mmio, &ap, &FakeMem::new(8), &elf(&[1; 16])),
            Err(BootError::Mem(_))
        ));
        assert_eq!(dev.state(), MicState::Offline);
    }

    #[test]
    fn reset_timing_is_configurable() {
        let (mmio, dp, mut dev) = online();
        let t = ResetTiming {
            settle_ms: 1,
            period_ms: 2,
            budget_ms: 3,
        };
        dev.set_reset_timing(t);
        let ResetStart::Started(seq) = dev.begin_reset(&mmio, &dp, false).unwrap() else {
            panic!("reset not started")
        };
        assert_eq!(seq.timing, t);
    }

    #[test]
    fn reset_sequence_writes() {
        let (mmio, dp, mut dev) = online();
        // Card had published doorbells and a status.
        dp.fill(4, &[0, 3, 4, 2, 1]);
        mmio.set(regs::RGCR, 0x10);
        mmio.clear_log();
        let ResetStart::Started(seq) = dev.begin_reset(&mmio, &dp, false).unwrap() else {
            panic!("reset not started")
        };
        assert_eq!(seq, ResetSeq::new());
        assert_eq!(mmio.get(regs::spad(2)), 0);
        assert_eq!(mmio.writes_to(regs::RGCR), [0x11]);
        let bp = read_bootparam(&dp, 0).unwrap();
        assert_eq!((bp.h2c_shutdown_db, bp.h2c_config_db), (-1, -1));
        assert_eq!((bp.shutdown_status, bp.shutdown_card), (0, 0));
        assert!(dev.is_resetting());
        assert_eq!(dev.state(), MicState::Online);
        assert_eq!(
            dev.finish_reset(false),
            Some(Transition {
                from: MicState::Online,
                to: MicState::ResetFailed
            })
        );
        // reset_failed → boot is refused; a good reset recovers.
        let ap = FakeMem::new(0x40_0000);
        assert_eq!(
            dev.start(&mmio, &ap, &dp, &elf(&[1])).unwrap_err(),
            BootError::InvalidState(MicState::ResetFailed)
        );
        assert!(matches!(
            dev.begin_reset(&mmio, &dp, false).unwrap(),
            ResetStart::Started(_)
        ));
        assert_eq!(
            dev.finish_reset(true),
            Some(Transition {
                from: MicState::ResetFailed,
                to: MicState::Offline
            })
        );
        assert!(matches!(
            dev.begin_reset(&mmio, &FakeMem::new(8), true),
            Err(HostError::Mem(_))
        ));
        assert!(!dev.is_resetting());
    }

    #[test]
    fn shutdown_request() {
        // Not online: nothing.
        let (mmio, dp, mut dev) = setup();
        assert_eq!(dev.request_shutdown(&mmio, &dp), Ok(None));

        let (mmio, dp, mut dev) = online();
        // Card has not published h2c_shutdown_db: nothing.
        mmio.clear_log();
        assert_eq!(dev.request_shutdown(&mmio, &dp), Ok(None));
        assert!(mmio.writes.borrow().is_empty());
        assert_eq!(dp.bytes(BP_SHUTDOWN_CARD as u64, 1), [0]);
        // Hostile doorbell number: error, no change.
        dp.fill(BP_H2C_SHUTDOWN_DB as u64, &[40]);
        assert_eq!(
            dev.request_shutdown(&mmio, &dp),
            Err(HostError::Doorbell(DoorbellError::Invalid(40)))
        );
        assert_eq!(dev.state(), MicState::Online);
        // Card published doorbell 9.
        dp.fill(BP_H2C_SHUTDOWN_DB as u64, &[9]);
        assert_eq!(
            dev.request_shutdown(&mmio, &dp),
            Ok(Some(Transition {
                from: MicState::Online,
                to: MicState::ShuttingDown
            }))
        );
        assert_eq!(dp.bytes(BP_SHUTDOWN_CARD as u64, 1), [1]);
        assert_eq!(mmio.writes_to(regs::rdmasr(18)), [0]);
        // Again: not online any more.
        assert_eq!(dev.request_shutdown(&mmio, &dp), Ok(None));
    }

    #[test]
    fn shutdown_interrupt() {
        let (mmio, dp, mut dev) = online();
        // Nop is ignored.
        assert_eq!(dev.handle_shutdown_interrupt(&dp), Ok(None));
        // Invalid value: ignored, reported, left in place.
        dp.fill(BP_SHUTDOWN_STATUS as u64, &[9]);
        assert_eq!(
            dev.handle_shutdown_interrupt(&dp),
            Err(HostError::InvalidStatus(9))
        );
        assert_eq!(dev.state(), MicState::Online);
        assert_eq!(HostError::InvalidStatus(9).errno(), errno::EINVAL);
        // Halted.
        dp.fill(BP_SHUTDOWN_STATUS as u64, &[2]);
        assert_eq!(
            dev.handle_shutdown_interrupt(&dp),
            Ok(Some(ShutdownReport {
                status: MicStatus::Halted,
                transition: Some(Transition {
                    from: MicState::Online,
                    to: MicState::ShuttingDown
                })
            }))
        );
        assert_eq!(dp.bytes(BP_SHUTDOWN_STATUS as u64, 1), [0]);
        assert_eq!(dev.shutdown_status(), MicStatus::Halted);
        // A later crash while shutting down: status updates, no transition.
        dp.fill(BP_SHUTDOWN_STATUS as u64, &[1]);
        assert_eq!(
            dev.handle_shutdown_interrupt(&dp),
            Ok(Some(ShutdownReport {
                status: MicStatus::Crashed,
                transition: None
            }))
        );
        // Reset clears the status.
        assert!(matches!(
            dev.begin_reset(&mmio, &dp, false).unwrap(),
            ResetStart::Started(_)
        ));
        dev.finish_reset(true);
        assert_eq!(dev.shutdown_status(), MicStatus::Nop);
        assert_eq!(dev.state(), MicState::Offline);
        assert!(matches!(
            dev.handle_shutdown_interrupt(&FakeMem::new(4)),
            Err(HostError::Mem(_))
        ));
    }

    #[test]
    fn accessors() {
        let (mmio, _dp, mut dev) = setup();
        assert_eq!(dev.doorbells_mut().next_db(), 1);
        assert!(dev.smpt_mut().map(&mmio, 0x1000, 1).is_some());
    }
}
