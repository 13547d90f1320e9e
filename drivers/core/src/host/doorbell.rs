//! Host-side interrupts and doorbells: ringing the card, the bootstrap
//! interrupt, host doorbell allocation, and the interrupt cause/enable
//! registers.

use crate::hw::Mmio;
use crate::regs;

/// Why a host→card doorbell could not be rung.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DoorbellError {
    /// The doorbell number (card supplied) is not in 0..16.
    Invalid(i8),
}

impl core::fmt::Display for DoorbellError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            DoorbellError::Invalid(db) => write!(f, "invalid card doorbell {db}"),
        }
    }
}

impl core::error::Error for DoorbellError {}

/// Validates a card-published doorbell number (`-1` and anything outside
/// 0..16 is refused).
pub fn card_db(db: i8) -> Result<u8, DoorbellError> {
    u8::try_from(db)
        .ok()
        .filter(|&d| d < regs::NUM_CARD_DOORBELLS)
        .ok_or(DoorbellError::Invalid(db))
}

/// Rings host→card doorbell `db` (0..16): below 8 through APICICR\[db\]
/// (read, OR the send bit, write); from 8 by writing 0 to
/// RDMASR\[db − 8 + 17\].
pub fn send_intr(mmio: &impl Mmio, db: u8) -> Result<(), DoorbellError> {
    if db < regs::NUM_APICICR_DOORBELLS {
        let off = regs::apicicr(db);
        let v = mmio.read32(off);
        mmio.write32(off, v | regs::APICICR_SEND);
        Ok(())
    } else if let Some(idx) = regs::rdmasr_index_for_db(db) {
        mmio.write32(regs::rdmasr(idx), 0);
        Ok(())
    } else {
        Err(DoorbellError::Invalid(db as i8))
    }
}

/// Sends the bootstrap interrupt: the APIC ID to APICICR7+4, then vector 229
/// with the send bit to APICICR7.
pub fn send_bootstrap_intr(mmio: &impl Mmio, apic_id: u32) {
    mmio.write32(regs::APICICR7 + 4, apic_id);
    mmio.write32(regs::APICICR7, regs::BOOTSTRAP_VECTOR | regs::APICICR_SEND);
}

/// Reads the interrupt cause register and writes the value back to clear it;
/// returns the cause bits.
pub fn ack_interrupt(mmio: &impl Mmio) -> u32 {
    let cause = mmio.read32(regs::SICR0);
    mmio.write32(regs::SICR0, cause);
    cause
}

/// The host doorbells (0..4) set in an interrupt cause value, as a bit mask.
#[must_use]
pub const fn doorbells_in(cause: u32) -> u8 {
    ((cause & regs::DB_SRC_MASK) >> regs::DB_SRC_START) as u8
}

/// Enables the doorbell and DMA interrupt sources; with MSI-X also enables
/// auto-clear for them.
pub fn enable_interrupts(mmio: &impl Mmio, msix: bool) {
    let mask = regs::DB_SRC_MASK | regs::DMA_SRC_MASK;
    mmio.write32(regs::SICE0, mask);
    if msix {
        mmio.write32(regs::SIAC0, mask);
    }
}

/// Disables every enabled interrupt source (writes the enable mask to SICC0).
pub fn disable_interrupts(mmio: &impl Mmio) {
    let mask = mmio.read32(regs::SICE0);
    mmio.write32(regs::SICC0, mask);
}

/// Post-interrupt workarounds: re-write the enable register (B0 and later)
/// or poke MSIXPBACR (A0).
pub fn intr_workarounds(mmio: &impl Mmio, stepping_a0: bool) {
    if stepping_a0 {
        mmio.write32(regs::MSIXPBACR, 1);
    } else {
        let mask = mmio.read32(regs::SICE0);
        mmio.write32(regs::SICE0, mask);
    }
}

/// Number of host (card→host) doorbells.
pub const HOST_DOORBELLS: u8 = regs::DB_SRC_COUNT as u8;

/// Round-robin host doorbell allocator: the first call (the shutdown
/// doorbell) gets 0, then 1, 2, 3, then it wraps and shares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostDoorbells {
    next: u8,
}

impl HostDoorbells {
    /// A fresh allocator.
    #[must_use]
    pub const fn new() -> Self {
        Self { next: 0 }
    }

    /// The next doorbell.
    pub fn next_db(&mut self) -> u8 {
        let db = self.next;
        self.next = (self.next + 1) % HOST_DOORBELLS;
        db
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::FakeMmio;

    #[test]
    fn send_intr_low_and_high() {
        let mmio = FakeMmio::new();
        mmio.set(regs::apicicr(3), 0x00C5);
        send_intr(&mmio, 3).unwrap();
        assert_eq!(*mmio.reads.borrow(), [regs::apicicr(3)]);
        assert_eq!(*mmio.writes.borrow(), [(regs::apicicr(3), 0x20C5)]);
        mmio.clear_log();
        mmio.set(regs::rdmasr(20), 7);
        send_intr(&mmio, 11).unwrap();
        assert!(mmio.reads.borrow().is_empty());
        assert_eq!(*mmio.writes.borrow(), [(regs::rdmasr(20), 0)]);
        assert_eq!(send_intr(&mmio, 16), Err(DoorbellError::Invalid(16)));
    }

    #[test]
    fn card_db_validation() {
        assert_eq!(card_db(0), Ok(0));
        assert_eq!(card_db(15), Ok(15));
        assert_eq!(card_db(-1), Err(DoorbellError::Invalid(-1)));
        assert_eq!(card_db(16), Err(DoorbellError::Invalid(16)));
        assert_eq!(card_db(-100), Err(DoorbellError::Invalid(-100)));
    }

    #[test]
    fn bootstrap_interrupt() {
        let mmio = FakeMmio::new();
        send_bootstrap_intr(&mmio, 0x1F);
        assert_eq!(
            *mmio.writes.borrow(),
            [(regs::APICICR7 + 4, 0x1F), (regs::APICICR7, 0xE5 | (1 << 13))]
        );
    }

    #[test]
    fn ack_and_enable() {
        let mmio = FakeMmio::new();
        mmio.set(regs::SICR0, 0b1010_0101);
        assert_eq!(ack_interrupt(&mmio), 0b1010_0101);
        assert_eq!(mmio.writes_to(regs::SICR0), [0b1010_0101]);
        assert_eq!(doorbells_in(0b1010_0101), 0b0101);
        enable_interrupts(&mmio, false);
        assert_eq!(mmio.writes_to(regs::SICE0), [0xFF0F]);
        assert!(mmio.writes_to(regs::SIAC0).is_empty());
        enable_interrupts(&mmio, true);
        assert_eq!(mmio.writes_to(regs::SIAC0), [0xFF0F]);
        disable_interrupts(&mmio);
        assert_eq!(mmio.writes_to(regs::SICC0), [0xFF0F]);
        mmio.clear_log();
        intr_workarounds(&mmio, false);
        assert_eq!(mmio.writes_to(regs::SICE0), [0xFF0F]);
        intr_workarounds(&mmio, true);
        assert_eq!(mmio.writes_to(regs::MSIXPBACR), [1]);
    }

    #[test]
    fn round_robin() {
        let mut a = HostDoorbells::new();
        let got: std::vec::Vec<u8> = (0..6).map(|_| a.next_db()).collect();
        assert_eq!(got, [0, 1, 2, 3, 0, 1]);
    }
}
