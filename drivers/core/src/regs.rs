//! The X100 register map, as absolute offsets into the MMIO space (BAR4 on
//! the host, the [`CARD_MMIO_BASE`] window on the card).
//!
//! [`sbox`] holds the datasheet's SBOX-relative offsets; everything at the top
//! level is already absolute (`SBOX_BASE + X`), so callers never add bases.
//! Indexed registers take `u8` indices so the arithmetic cannot overflow.

/// Size of the MMIO space (host BAR4, card MMIO window).
pub const MMIO_SIZE: u32 = 0x2_0000;
/// Card physical address of the MMIO window as the card sees it.
pub const CARD_MMIO_BASE: u64 = 0x08_007C_0000;
/// Offset of the SBOX block inside the MMIO space.
pub const SBOX_BASE: u32 = 0x1_0000;

/// SBOX-relative register offsets (as the datasheet lists them).
pub mod sbox {
    /// Scratchpad 0; scratchpad *n* at +4n.
    pub const SPAD0: u32 = 0xAB20;
    /// Interrupt cause (read, then write the value back to clear).
    pub const SICR0: u32 = 0x9004;
    /// Interrupt enable.
    pub const SICE0: u32 = 0x900C;
    /// Interrupt disable (write the enabled mask).
    pub const SICC0: u32 = 0x9010;
    /// Interrupt auto-clear enable (MSI-X only).
    pub const SIAC0: u32 = 0x9014;
    /// MSI-X vector 0 source map; vector *e* at +4e.
    pub const MXAR0: u32 = 0x9044;
    /// MSI-X pending-bit workaround register (A0 stepping).
    pub const MSIXPBACR: u32 = 0x9084;
    /// SMPT entry 0; entry *i* at +4i.
    pub const SMPT00: u32 = 0x3100;
    /// Reset control: set bit 0 to reset the card.
    pub const RGCR: u32 = 0x4010;
    /// Host→card interrupt 0; doorbell *db* (0..7) at +8·db.
    pub const APICICR0: u32 = 0xA9D0;
    /// APIC ICR used for the bootstrap ("firmware") interrupt.
    pub const APICICR7: u32 = 0xAA08;
    /// RDMA scratch register 0; register *i* at +4i (host→card doorbells ≥ 8).
    pub const RDMASR0: u32 = 0xB180;
    /// Card→host doorbell 0; doorbell *db* at +4·db.
    pub const SDBIC0: u32 = 0xCC90;
    /// DMA channel enable/owner bits.
    pub const DCR: u32 = 0xA280;
}

/// Scratchpad 0 (absolute); see [`spad`].
pub const SPAD0: u32 = SBOX_BASE + sbox::SPAD0;
/// SMPT entry 0 (absolute); see [`smpt`].
pub const SMPT00: u32 = SBOX_BASE + sbox::SMPT00;
/// APICICR of doorbell 0 (absolute); see [`apicicr`].
pub const APICICR0: u32 = SBOX_BASE + sbox::APICICR0;
/// RDMASR 0 (absolute); see [`rdmasr`].
pub const RDMASR0: u32 = SBOX_BASE + sbox::RDMASR0;
/// SDBIC 0 (absolute); see [`sdbic`].
pub const SDBIC0: u32 = SBOX_BASE + sbox::SDBIC0;
/// MXAR 0 (absolute); see [`mxar`].
pub const MXAR0: u32 = SBOX_BASE + sbox::MXAR0;
/// Interrupt cause register (absolute).
pub const SICR0: u32 = SBOX_BASE + sbox::SICR0;
/// Interrupt enable register (absolute).
pub const SICE0: u32 = SBOX_BASE + sbox::SICE0;
/// Interrupt disable register (absolute).
pub const SICC0: u32 = SBOX_BASE + sbox::SICC0;
/// Interrupt auto-clear register (absolute).
pub const SIAC0: u32 = SBOX_BASE + sbox::SIAC0;
/// MSI-X pending-bit workaround register (absolute).
pub const MSIXPBACR: u32 = SBOX_BASE + sbox::MSIXPBACR;
/// Reset control register (absolute).
pub const RGCR: u32 = SBOX_BASE + sbox::RGCR;
/// Bootstrap APIC ICR, low dword (absolute); the high dword is at +4.
pub const APICICR7: u32 = SBOX_BASE + sbox::APICICR7;
/// DMA control register (absolute).
pub const DCR: u32 = SBOX_BASE + sbox::DCR;
/// Bootstrap post code; the low two bytes are ASCII. Not SBOX-relative.
pub const POSTCODE: u32 = 0x242C;

/// Number of scratchpads.
pub const NUM_SPADS: u8 = 16;
/// Number of SMPT entries.
pub const NUM_SMPT: u8 = 32;
/// Number of host→card doorbells (8 via APICICR, 8 via RDMASR).
pub const NUM_CARD_DOORBELLS: u8 = 16;
/// Doorbells below this go through APICICR; the rest through RDMASR.
pub const NUM_APICICR_DOORBELLS: u8 = 8;
/// Number of MSI-X vectors the host driver requests.
pub const NUM_MSIX_VECTORS: u8 = 8;

/// Absolute offset of scratchpad `n`.
#[must_use]
pub const fn spad(n: u8) -> u32 {
    SPAD0 + 4 * n as u32
}

/// Absolute offset of SMPT entry `i`.
#[must_use]
pub const fn smpt(i: u8) -> u32 {
    SMPT00 + 4 * i as u32
}

/// Absolute offset of the APICICR (low dword) for host→card doorbell `db`.
#[must_use]
pub const fn apicicr(db: u8) -> u32 {
    APICICR0 + 8 * db as u32
}

/// Absolute offset of RDMASR register `i`.
#[must_use]
pub const fn rdmasr(i: u8) -> u32 {
    RDMASR0 + 4 * i as u32
}

/// Absolute offset of the card→host doorbell register for `db`.
#[must_use]
pub const fn sdbic(db: u8) -> u32 {
    SDBIC0 + 4 * db as u32
}

/// Absolute offset of the MSI-X source map of vector `e`.
#[must_use]
pub const fn mxar(e: u8) -> u32 {
    MXAR0 + 4 * e as u32
}

/// The RDMASR index a host→card doorbell in 8..16 is rung through
/// (db − 8 + 17); `None` for doorbells outside that range.
#[must_use]
pub const fn rdmasr_index_for_db(db: u8) -> Option<u8> {
    if db >= NUM_APICICR_DOORBELLS && db < NUM_CARD_DOORBELLS {
        Some(db - NUM_APICICR_DOORBELLS + 17)
    } else {
        None
    }
}

// --- scratchpads -----------------------------------------------------------

/// SPAD2: "download info" written by the card bootstrap.
pub const SPAD_DOWNLOAD_INFO: u8 = 2;
/// SPAD5: OS image size, written by the host loader.
pub const SPAD_IMAGE_SIZE: u8 = 5;
/// SPAD2 bit 0: the bootstrap is ready for a download.
pub const SPAD2_READY: u32 = 1;
/// SPAD2 bits 9:1: bootstrap APIC ID.
pub const SPAD2_APIC_ID_MASK: u32 = 0x1FF;
/// SPAD2 bits 31:12: card physical address for the OS image.
pub const SPAD2_BOOT_ADDR_MASK: u32 = 0xFFFF_F000;

/// SPAD2 bit 0: firmware (bootstrap) ready.
#[must_use]
pub const fn spad2_ready(v: u32) -> bool {
    v & SPAD2_READY != 0
}

/// SPAD2 bits 9:1: the bootstrap processor's APIC ID.
#[must_use]
pub const fn spad2_apic_id(v: u32) -> u32 {
    (v >> 1) & SPAD2_APIC_ID_MASK
}

/// SPAD2 bits 31:12: where the OS image must be placed.
#[must_use]
pub const fn spad2_boot_addr(v: u32) -> u64 {
    (v & SPAD2_BOOT_ADDR_MASK) as u64
}

/// Builds a SPAD2 value (what an emulated bootstrap writes). `apic_id` is
/// masked to 9 bits and `boot_addr` to bits 31:12.
#[must_use]
pub const fn spad2_encode(ready: bool, apic_id: u32, boot_addr: u32) -> u32 {
    (boot_addr & SPAD2_BOOT_ADDR_MASK) | ((apic_id & SPAD2_APIC_ID_MASK) << 1) | ready as u32
}

// --- interrupts ------------------------------------------------------------

/// First host interrupt source used by doorbells (bit in SICR0/SICE0).
pub const DB_SRC_START: u32 = 0;
/// Number of host doorbell sources.
pub const DB_SRC_COUNT: u32 = 4;
/// First host interrupt source used by DMA channels.
pub const DMA_SRC_START: u32 = 8;
/// Number of DMA channel sources.
pub const DMA_SRC_COUNT: u32 = 8;
/// Error interrupt source.
pub const ERR_SRC: u32 = 30;
/// SICE0 mask of the doorbell sources.
pub const DB_SRC_MASK: u32 = ((1 << DB_SRC_COUNT) - 1) << DB_SRC_START;
/// SICE0 mask of the DMA sources.
pub const DMA_SRC_MASK: u32 = ((1 << DMA_SRC_COUNT) - 1) << DMA_SRC_START;
/// APICICR bit that sends the interrupt.
pub const APICICR_SEND: u32 = 1 << 13;
/// Vector of the bootstrap interrupt.
pub const BOOTSTRAP_VECTOR: u32 = 229;
/// Value the card writes to SDBIC to ring a card→host doorbell.
pub const SDBIC_RING: u32 = 0x8000_0000;
/// Highest card→host doorbell the card driver will ring.
pub const MAX_C2H_DB: u8 = 8;
/// RGCR bit that resets the card.
pub const RGCR_RESET: u32 = 1;
/// Card irq of doorbell 0; card irq = base + db for all 16 doorbells.
pub const CARD_DB_IRQ_BASE: u32 = 26;

/// Decodes a post code register value into its two ASCII characters.
#[must_use]
pub const fn post_code_chars(v: u32) -> [u8; 2] {
    [v as u8, (v >> 8) as u8]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_offsets() {
        assert_eq!(spad(0), 0x1AB20);
        assert_eq!((SPAD0, SMPT00, APICICR0), (0x1AB20, 0x13100, 0x1A9D0));
        assert_eq!((RDMASR0, SDBIC0, MXAR0), (0x1B180, 0x1CC90, 0x19044));
        assert_eq!(spad(14), 0x1AB58);
        assert_eq!(spad(15), 0x1AB5C);
        assert_eq!(smpt(0), 0x13100);
        assert_eq!(smpt(31), 0x1317C);
        assert_eq!(apicicr(0), 0x1A9D0);
        assert_eq!(apicicr(7), APICICR7);
        assert_eq!(rdmasr(17), 0x1B1C4);
        assert_eq!(sdbic(3), 0x1CC9C);
        assert_eq!(mxar(1), 0x19048);
        assert_eq!(SICR0, 0x19004);
        assert_eq!(RGCR, 0x14010);
        assert_eq!(DCR, 0x1A280);
        assert_eq!(POSTCODE, 0x242C);
        assert_eq!(rdmasr_index_for_db(8), Some(17));
        assert_eq!(rdmasr_index_for_db(15), Some(24));
        assert_eq!(rdmasr_index_for_db(7), None);
        assert_eq!(rdmasr_index_for_db(16), None);
        assert!(spad(NUM_SPADS - 1) < MMIO_SIZE);
        assert!(sdbic(255) < MMIO_SIZE);
    }

    #[test]
    fn spad2_round_trip() {
        let v = spad2_encode(true, 0x1F3, 0x0400_0000);
        assert!(spad2_ready(v));
        assert_eq!(spad2_apic_id(v), 0x1F3);
        assert_eq!(spad2_boot_addr(v), 0x0400_0000);
        let v = spad2_encode(false, 0xFFFF, 0x0400_0FFF);
        assert!(!spad2_ready(v));
        assert_eq!(spad2_apic_id(v), 0x1FF);
        assert_eq!(spad2_boot_addr(v), 0x0400_0000);
        assert_eq!(DB_SRC_MASK, 0xF);
        assert_eq!(DMA_SRC_MASK, 0xFF00);
        assert_eq!(post_code_chars(0x4C41), *b"AL");
    }
}
