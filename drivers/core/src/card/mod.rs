//! The card driver logic (`mic_card.ko` in the original): finding the
//! host's device page, publishing the card's doorbells, and reporting
//! shutdown and panic to the host; [`virtio`] is the card's virtio
//! transport and [`vring`] the driver side of its rings.
//!
//! `mem` is the card's physical address space; the device page address comes
//! from the host (SPAD14/15) and is untrusted: every access is bounds-checked
//! by the [`Memory`] implementation and surfaces as [`CardError::Mem`].

pub mod virtio;
pub mod vring;

use core::fmt;

use crate::abi::{
    BP_C2H_SHUTDOWN_DB, BP_H2C_CONFIG_DB, BP_H2C_SHUTDOWN_DB, BP_MAGIC, BP_SHUTDOWN_CARD, BP_SHUTDOWN_STATUS,
    DB_NONE, MIC_DP_SIZE, MIC_DPHI_SPAD, MIC_DPLO_SPAD, MIC_MAGIC, MicStatus,
};
use crate::devpage::{read_u8_at, write_u8_at};
use crate::hw::{MemError, Memory, Mmio, check_range, offset_addr};
use crate::regs;

/// The line the card kernel logs when its init starts: the card OS is up.
/// Tools watching a boot look for it in the card log.
pub const OS_UP_MARKER: &str = "Run /sbin/init as init process";

/// How a panicking card kernel's last words begin (`panic()`'s
/// `"Kernel panic - not syncing: %s"`). Tools waiting for a boot look for it
/// in the card log: a card that panics before its driver is up cannot report
/// the crash through the device page, and its log is then the only witness.
pub const PANIC_MARKER: &str = "Kernel panic - not syncing";

/// Card driver errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CardError {
    /// The bootparam magic is not 0xC0FFEE00 ("bootparam magic mismatch").
    BadMagic(u32),
    /// The device page (or a field in it) is outside card memory.
    Mem(MemError),
    /// Only halted/poweroff/restart may be reported as a shutdown.
    InvalidStatus(MicStatus),
}

impl From<MemError> for CardError {
    fn from(e: MemError) -> Self {
        CardError::Mem(e)
    }
}

impl fmt::Display for CardError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CardError::BadMagic(m) => write!(f, "bootparam magic mismatch ({m:#010x})"),
            CardError::Mem(e) => write!(f, "device page: {e}"),
            CardError::InvalidStatus(s) => write!(f, "{} is not a shutdown status", s.as_str()),
        }
    }
}

impl core::error::Error for CardError {}

/// Reads the device page address from SPAD14 (low) / SPAD15 (high), checks
/// that the whole page is in `mem` and that its magic is right.
pub fn discover(mmio: &impl Mmio, mem: &impl Memory) -> Result<u64, CardError> {
    let lo = mmio.read32(regs::spad(MIC_DPLO_SPAD));
    let hi = mmio.read32(regs::spad(MIC_DPHI_SPAD));
    let dp = (u64::from(hi) << 32) | u64::from(lo);
    check_range(mem, dp, MIC_DP_SIZE as u64)?;
    let magic = mem.read_u32(offset_addr(dp, BP_MAGIC as u64)?)?;
    if magic != MIC_MAGIC {
        return Err(CardError::BadMagic(magic));
    }
    Ok(dp)
}

/// Rings card→host doorbell `db` (write 0x80000000 to SDBIC0 + 4·db).
/// Numbers outside 0..=8 (the host supplied them) are silently dropped, as
/// in the original; returns whether the doorbell was rung.
pub fn send_host_intr(mmio: &impl Mmio, db: i8) -> bool {
    match u8::try_from(db) {
        Ok(db) if db <= regs::MAX_C2H_DB => {
            mmio.write32(regs::sdbic(db), regs::SDBIC_RING);
            true
        }
        _ => false,
    }
}

/// The card irq a host→card doorbell arrives on (26 + db for all 16).
#[must_use]
pub const fn irq_for_db(db: u8) -> u32 {
    regs::CARD_DB_IRQ_BASE + db as u32
}

/// Least-used allocator over the 16 host→card doorbells.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CardDoorbells {
    usage: [u32; regs::NUM_CARD_DOORBELLS as usize],
}

impl CardDoorbells {
    /// All doorbells unused.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            usage: [0; regs::NUM_CARD_DOORBELLS as usize],
        }
    }

    /// Takes the least-used doorbell (lowest number on ties).
    pub fn next_db(&mut self) -> u8 {
        let mut best = 0;
        for (i, &u) in self.usage.iter().enumerate() {
            if u < self.usage[best] {
                best = i;
            }
        }
        self.usage[best] += 1;
        best as u8
    }

    /// Returns a doorbell taken with [`CardDoorbells::next_db`].
    pub fn free_db(&mut self, db: u8) {
        if let Some(u) = self.usage.get_mut(db as usize) {
            *u = u.saturating_sub(1);
        }
    }

    /// Users of each doorbell.
    #[must_use]
    pub fn usage(&self) -> &[u32; regs::NUM_CARD_DOORBELLS as usize] {
        &self.usage
    }
}

/// Card driver state.
#[derive(Debug, Clone)]
pub struct CardDevice {
    dp: u64,
    doorbells: CardDoorbells,
    shutdown_db: u8,
    config_db: u8,
}

impl CardDevice {
    /// Driver init: [`discover`] the device page, take a shutdown doorbell and
    /// publish it as `h2c_shutdown_db`, then a config doorbell published as
    /// `h2c_config_db`.
    pub fn init(mmio: &impl Mmio, mem: &impl Memory) -> Result<Self, CardError> {
        let dp = discover(mmio, mem)?;
        let mut doorbells = CardDoorbells::new();
        let shutdown_db = doorbells.next_db();
        write_u8_at(mem, dp, BP_H2C_SHUTDOWN_DB, shutdown_db)?;
        let config_db = doorbells.next_db();
        write_u8_at(mem, dp, BP_H2C_CONFIG_DB, config_db)?;
        Ok(Self {
            dp,
            doorbells,
            shutdown_db,
            config_db,
        })
    }

    /// Card address of the device page.
    #[must_use]
    pub fn dp(&self) -> u64 {
        self.dp
    }

    /// The doorbell the host rings to request shutdown.
    #[must_use]
    pub fn shutdown_db(&self) -> u8 {
        self.shutdown_db
    }

    /// The doorbell the host rings on virtio config changes.
    #[must_use]
    pub fn config_db(&self) -> u8 {
        self.config_db
    }

    /// The doorbell allocator (for virtio devices' `h2c_vdev_db`).
    pub fn doorbells_mut(&mut self) -> &mut CardDoorbells {
        &mut self.doorbells
    }

    /// Whether the host asked for shutdown (`bootparam.shutdown_card`), to be
    /// checked when the shutdown doorbell fires.
    pub fn shutdown_requested(&self, mem: &impl Memory) -> Result<bool, CardError> {
        Ok(read_u8_at(mem, self.dp, BP_SHUTDOWN_CARD)? != 0)
    }

    fn ring_c2h_shutdown(&self, mmio: &impl Mmio, mem: &impl Memory) -> Result<bool, CardError> {
        let db = read_u8_at(mem, self.dp, BP_C2H_SHUTDOWN_DB)? as i8;
        Ok(send_host_intr(mmio, db))
    }

    /// Orderly halt/poweroff/restart (after the virtio devices were removed):
    /// `h2c_config_db = -1`, `shutdown_status = status`, ring
    /// `c2h_shutdown_db`, then `h2c_shutdown_db = -1`. Returns whether the
    /// doorbell was rung (the host's number was valid).
    pub fn report_shutdown(
        &self,
        mmio: &impl Mmio,
        mem: &impl Memory,
        status: MicStatus,
    ) -> Result<bool, CardError> {
        if !matches!(
            status,
            MicStatus::Halted | MicStatus::PowerOff | MicStatus::Restart
        ) {
            return Err(CardError::InvalidStatus(status));
        }
        write_u8_at(mem, self.dp, BP_H2C_CONFIG_DB, DB_NONE as u8)?;
        write_u8_at(mem, self.dp, BP_SHUTDOWN_STATUS, status as u8)?;
        let rung = self.ring_c2h_shutdown(mmio, mem)?;
        write_u8_at(mem, self.dp, BP_H2C_SHUTDOWN_DB, DB_NONE as u8)?;
        Ok(rung)
    }

    /// Panic: `h2c_config_db = h2c_shutdown_db = -1`, `shutdown_status =
    /// crashed`, ring `c2h_shutdown_db`. Returns whether the doorbell was rung.
    pub fn report_panic(&self, mmio: &impl Mmio, mem: &impl Memory) -> Result<bool, CardError> {
        write_u8_at(mem, self.dp, BP_H2C_CONFIG_DB, DB_NONE as u8)?;
        write_u8_at(mem, self.dp, BP_H2C_SHUTDOWN_DB, DB_NONE as u8)?;
        write_u8_at(mem, self.dp, BP_SHUTDOWN_STATUS, MicStatus::Crashed as u8)?;
        self.ring_c2h_shutdown(mmio, mem)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::MicBootparam;
    use crate::devpage::{init_bootparam, read_bootparam};
    use crate::fake::{FakeMem, FakeMmio};
    use crate::host::HostDevice;
    use crate::host::smpt::SMPT_CARD_BASE;

    const DP: u64 = SMPT_CARD_BASE + 0x5000;

    fn card() -> (FakeMmio, FakeMem) {
        let mmio = FakeMmio::new();
        mmio.set(regs::spad(14), DP as u32);
        mmio.set(regs::spad(15), (DP >> 32) as u32);
        let mem = FakeMem::with_base(DP, MIC_DP_SIZE);
        init_bootparam(&mem, DP, 2).unwrap();
        (mmio, mem)
    }

    #[test]
    fn discover_checks_magic_and_bounds() {
        let (mmio, mem) = card();
        assert_eq!(discover(&mmio, &mem), Ok(DP));
        mem.fill(DP, &[0; 4]);
        assert_eq!(discover(&mmio, &mem), Err(CardError::BadMagic(0)));
        // Page straddling the end of memory.
        mmio.set(regs::spad(14), (DP + 8) as u32);
        assert!(matches!(discover(&mmio, &mem), Err(CardError::Mem(_))));
        // Address wildly out of range.
        mmio.set(regs::spad(14), u32::MAX);
        mmio.set(regs::spad(15), u32::MAX);
        assert!(matches!(discover(&mmio, &mem), Err(CardError::Mem(_))));
    }

    #[test]
    fn init_publishes_doorbells() {
        let (mmio, mem) = card();
        let dev = CardDevice::init(&mmio, &mem).unwrap();
        assert_eq!(dev.dp(), DP);
        assert_eq!((dev.shutdown_db(), dev.config_db()), (0, 1));
        let bp = read_bootparam(&mem, DP).unwrap();
        assert_eq!((bp.h2c_shutdown_db, bp.h2c_config_db), (0, 1));
        assert_eq!(bp.c2h_shutdown_db, 2);
        assert!(!dev.shutdown_requested(&mem).unwrap());
        mem.fill(DP + BP_SHUTDOWN_CARD as u64, &[1]);
        assert!(dev.shutdown_requested(&mem).unwrap());
        let (mmio, mem) = card();
        mem.fill(DP, &[1, 2, 3, 4]);
        assert!(matches!(
            CardDevice::init(&mmio, &mem),
            Err(CardError::BadMagic(0x0403_0201))
        ));
    }

    #[test]
    fn doorbell_allocation() {
        let mut d = CardDoorbells::new();
        for i in 0..16 {
            assert_eq!(d.next_db(), i);
        }
        assert_eq!(d.next_db(), 0);
        d.free_db(5);
        d.free_db(5);
        d.free_db(200);
        assert_eq!(d.usage()[5], 0);
        assert_eq!(d.next_db(), 5);
        assert_eq!(d.next_db(), 1);
        assert_eq!(irq_for_db(0), 26);
        assert_eq!(irq_for_db(15), 41);
    }

    #[test]
    fn report_shutdown_sequence() {
        let (mmio, mem) = card();
        let dev = CardDevice::init(&mmio, &mem).unwrap();
        mmio.clear_log();
        assert_eq!(dev.report_shutdown(&mmio, &mem, MicStatus::PowerOff), Ok(true));
        let bp = read_bootparam(&mem, DP).unwrap();
        assert_eq!(
            bp,
            MicBootparam {
                magic: MIC_MAGIC,
                c2h_shutdown_db: 2,
                h2c_shutdown_db: -1,
                h2c_config_db: -1,
                shutdown_status: 3,
                shutdown_card: 0,
            }
        );
        assert_eq!(*mmio.writes.borrow(), [(regs::sdbic(2), 0x8000_0000)]);
        assert_eq!(
            dev.report_shutdown(&mmio, &mem, MicStatus::Crashed),
            Err(CardError::InvalidStatus(MicStatus::Crashed))
        );
        assert!(dev.report_shutdown(&mmio, &mem, MicStatus::Nop).is_err());
        // Hostile c2h doorbell: not rung, still reported.
        mem.fill(DP + BP_C2H_SHUTDOWN_DB as u64, &[9]);
        mmio.clear_log();
        assert_eq!(dev.report_shutdown(&mmio, &mem, MicStatus::Restart), Ok(false));
        assert!(mmio.writes.borrow().is_empty());
        assert_eq!(read_u8_at(&mem, DP, BP_SHUTDOWN_STATUS).unwrap(), 4);
    }

    #[test]
    fn report_panic_sequence() {
        let (mmio, mem) = card();
        let dev = CardDevice::init(&mmio, &mem).unwrap();
        mmio.clear_log();
        assert_eq!(dev.report_panic(&mmio, &mem), Ok(true));
        let bp = read_bootparam(&mem, DP).unwrap();
        assert_eq!((bp.h2c_shutdown_db, bp.h2c_config_db), (-1, -1));
        assert_eq!(bp.shutdown_status, 1);
        assert_eq!(mmio.writes_to(regs::sdbic(2)), [0x8000_0000]);
        assert!(send_host_intr(&mmio, 8));
        assert!(!send_host_intr(&mmio, -1));
        // Device page vanished (memory shrank): errors, no panic.
        let tiny = FakeMem::new(16);
        assert!(matches!(dev.report_panic(&mmio, &tiny), Err(CardError::Mem(_))));
        assert!(dev.shutdown_requested(&tiny).is_err());
    }

    #[test]
    fn host_and_card_together() {
        // Host RAM holds the page; the card sees it through the SMPT window.
        let mmio = FakeMmio::new();
        let dp_dma = 0x5000;
        let host_ram = FakeMem::new(0x6000);
        // The card's view: the same bytes at SMPT_CARD_BASE + dma.
        let host = {
            let dp = FakeMem::new(MIC_DP_SIZE);
            let h = HostDevice::probe(&mmio, &dp, dp_dma).unwrap();
            host_ram.fill(dp_dma, &dp.bytes(0, MIC_DP_SIZE));
            h
        };
        let card_mem = FakeMem::with_base(SMPT_CARD_BASE + dp_dma, MIC_DP_SIZE);
        card_mem.fill(SMPT_CARD_BASE + dp_dma, &host_ram.bytes(dp_dma, MIC_DP_SIZE));
        let dev = CardDevice::init(&mmio, &card_mem).unwrap();
        assert_eq!(dev.dp(), host.dp_card_addr());
        dev.report_panic(&mmio, &card_mem).unwrap();
        assert_eq!(mmio.writes_to(regs::sdbic(host.c2h_shutdown_db())), [0x8000_0000]);
    }
}
