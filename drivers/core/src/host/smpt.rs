//! SMPT (System Memory Page Table): 32 entries, each mapping a 16 GiB page of
//! host bus address space into the card's window at `0x80_0000_0000`.
//!
//! The software copy is the source of truth: every map writes the entries it
//! changes, and [`Smpt::restore`] rewrites the whole table before each boot
//! (some steppings lose it across reset).

use core::fmt;

use crate::hw::Mmio;
use crate::regs;

/// Number of SMPT entries.
pub const SMPT_ENTRIES: usize = regs::NUM_SMPT as usize;
/// log2 of the page each entry maps.
pub const SMPT_PAGE_SHIFT: u32 = 34;
/// Bytes each entry maps (16 GiB).
pub const SMPT_PAGE_SIZE: u64 = 1 << SMPT_PAGE_SHIFT;
/// Card physical address of the SMPT window.
pub const SMPT_CARD_BASE: u64 = 0x80_0000_0000;
/// Size of the SMPT window (512 GiB).
pub const SMPT_WINDOW_SIZE: u64 = SMPT_ENTRIES as u64 * SMPT_PAGE_SIZE;
/// Entry bit 0: no-snoop (0 = snooped, what the driver uses).
pub const SMPT_NO_SNOOP: u32 = 1;

/// The register value for an entry mapping the page containing `dma_addr`,
/// snooped: `(addr >> 34) << 2`.
#[must_use]
pub const fn entry_value(dma_addr: u64) -> u32 {
    ((dma_addr >> SMPT_PAGE_SHIFT) << 2) as u32
}

/// The host page an entry register value maps (the inverse of
/// [`entry_value`], for an emulator translating card accesses).
#[must_use]
pub const fn entry_dma_addr(value: u32) -> u64 {
    ((value >> 2) as u64) << SMPT_PAGE_SHIFT
}

/// Whether `card_addr` lies in the SMPT window.
#[must_use]
pub const fn in_window(card_addr: u64) -> bool {
    card_addr >= SMPT_CARD_BASE && card_addr - SMPT_CARD_BASE < SMPT_WINDOW_SIZE
}

/// One entry of the software copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SmptEntry {
    /// Host bus address of the 16 GiB page mapped.
    pub dma_addr: u64,
    /// Bytes currently mapped through this entry (0 = free).
    pub refcount: u64,
}

/// Why an unmap was refused or inconsistent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmptError {
    /// The range is not inside the SMPT window.
    NotInWindow {
        /// Card address given.
        card_addr: u64,
        /// Size given.
        size: u64,
    },
    /// An entry's refcount would have gone negative (clamped to 0).
    RefcountUnderflow {
        /// The entry.
        entry: usize,
    },
}

impl fmt::Display for SmptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SmptError::NotInWindow { card_addr, size } => {
                write!(f, "{size:#x} bytes at {card_addr:#x} not in the SMPT window")
            }
            SmptError::RefcountUnderflow { entry } => {
                write!(f, "SMPT entry {entry} refcount underflow")
            }
        }
    }
}

impl core::error::Error for SmptError {}

/// The software copy of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Smpt {
    entries: [SmptEntry; SMPT_ENTRIES],
}

impl Default for Smpt {
    fn default() -> Self {
        Self::new()
    }
}

/// Bytes of `[start, last]` (inclusive, so the top of the address space
/// works) that fall in the page-aligned page starting at `page`.
fn overlap(start: u64, last: u64, page: u64) -> u64 {
    let page_last = page + (SMPT_PAGE_SIZE - 1);
    let (lo, hi) = (start.max(page), last.min(page_last));
    if hi < lo { 0 } else { hi - lo + 1 }
}

impl Smpt {
    /// The initial table: entry i maps host page i·16 GiB, all refcounts 0.
    /// Nothing is written to hardware; see [`Smpt::init`].
    #[must_use]
    pub fn new() -> Self {
        let mut entries = [SmptEntry {
            dma_addr: 0,
            refcount: 0,
        }; SMPT_ENTRIES];
        for (i, e) in entries.iter_mut().enumerate() {
            e.dma_addr = i as u64 * SMPT_PAGE_SIZE;
        }
        Self { entries }
    }

    /// [`Smpt::new`] and program every register.
    pub fn init(mmio: &impl Mmio) -> Self {
        let s = Self::new();
        s.restore(mmio);
        s
    }

    /// Rewrites every SMPT register from the software copy.
    pub fn restore(&self, mmio: &impl Mmio) {
        for (i, e) in self.entries.iter().enumerate() {
            mmio.write32(regs::smpt(i as u8), entry_value(e.dma_addr));
        }
    }

    /// The software copy, for the debugfs dump.
    #[must_use]
    pub fn entries(&self) -> &[SmptEntry; SMPT_ENTRIES] {
        &self.entries
    }

    /// Maps `size` bytes at host bus address `dma` and returns the card
    /// address, or `None` if `size` is 0, larger than the window, or no run of
    /// entries is available. A run already mapping those pages is reused;
    /// otherwise the first run of free entries is taken (and its registers
    /// written). Refcounts grow by the bytes mapped through each entry.
    pub fn map(&mut self, mmio: &impl Mmio, dma: u64, size: u64) -> Option<u64> {
        if size == 0 || size > SMPT_WINDOW_SIZE {
            return None;
        }
        let last_byte = dma.checked_add(size - 1)?;
        let first = dma >> SMPT_PAGE_SHIFT;
        let last = last_byte >> SMPT_PAGE_SHIFT;
        let n = (last - first + 1) as usize;
        if n > SMPT_ENTRIES {
            return None;
        }
        let page = first << SMPT_PAGE_SHIFT;
        let spot = self.find_existing(page, n).or_else(|| self.find_free(n))?;
        for j in 0..n {
            let p = page + j as u64 * SMPT_PAGE_SIZE;
            let e = &mut self.entries[spot + j];
            let changed = e.dma_addr != p;
            e.dma_addr = p;
            e.refcount += overlap(dma, last_byte, p);
            if changed {
                mmio.write32(regs::smpt((spot + j) as u8), entry_value(p));
            }
        }
        Some(SMPT_CARD_BASE + spot as u64 * SMPT_PAGE_SIZE + (dma - page))
    }

    fn find_existing(&self, page: u64, n: usize) -> Option<usize> {
        (0..=SMPT_ENTRIES - n)
            .find(|&i| (0..n).all(|j| self.entries[i + j].dma_addr == page + j as u64 * SMPT_PAGE_SIZE))
    }

    fn find_free(&self, n: usize) -> Option<usize> {
        (0..=SMPT_ENTRIES - n).find(|&i| self.entries[i..i + n].iter().all(|e| e.refcount == 0))
    }

    /// Releases a mapping made by [`Smpt::map`] (`card_addr` as returned,
    /// same `size`). Size 0 is a no-op. Refcounts are clamped at 0; an
    /// underflow is reported after all entries were updated.
    pub fn unmap(&mut self, card_addr: u64, size: u64) -> Result<(), SmptError> {
        if size == 0 {
            return Ok(());
        }
        let bad = SmptError::NotInWindow { card_addr, size };
        if !in_window(card_addr) {
            return Err(bad);
        }
        let start = card_addr - SMPT_CARD_BASE;
        let last_byte = start
            .checked_add(size - 1)
            .filter(|&e| e < SMPT_WINDOW_SIZE)
            .ok_or(bad)?;
        let first = (start >> SMPT_PAGE_SHIFT) as usize;
        let last = (last_byte >> SMPT_PAGE_SHIFT) as usize;
        let mut result = Ok(());
        for i in first..=last {
            let bytes = overlap(start, last_byte, i as u64 * SMPT_PAGE_SIZE);
            let e = &mut self.entries[i];
            if e.refcount < bytes {
                e.refcount = 0;
                result = Err(SmptError::RefcountUnderflow { entry: i });
            } else {
                e.refcount -= bytes;
            }
        }
        result
    }

    /// Writes the debugfs `smpt` dump: a header line, a rule, one row per
    /// entry (index, host DMA address, refcount), a rule.
    pub fn write_dump(&self, id: u32, w: &mut impl fmt::Write) -> fmt::Result {
        const RULE: &str = "====================================================\n";
        writeln!(
            w,
            "MIC {id:<2} |{:<10}| {:<14} {:<10}",
            "SMPT entry", "SW DMA addr", "RefCount"
        )?;
        w.write_str(RULE)?;
        for (i, e) in self.entries.iter().enumerate() {
            // C's "%#llx" prints a bare "0" for zero.
            if e.dma_addr == 0 {
                writeln!(w, "{:9}|{i:<10}| {:<14} {:<10}", "", "0", e.refcount)?;
            } else {
                writeln!(w, "{:9}|{i:<10}| {:<#14x} {:<10}", "", e.dma_addr, e.refcount)?;
            }
        }
        w.write_str(RULE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::FakeMmio;
    use std::string::String;

    const G16: u64 = SMPT_PAGE_SIZE;

    #[test]
    fn init_programs_identity_like_table() {
        let mmio = FakeMmio::new();
        let s = Smpt::init(&mmio);
        assert_eq!(mmio.writes.borrow().len(), 32);
        for i in 0..32u8 {
            assert_eq!(mmio.get(regs::smpt(i)), u32::from(i) << 2);
            assert_eq!(s.entries()[i as usize].refcount, 0);
        }
        assert_eq!(
            entry_value(0x1_2345_6789_0000),
            (0x1_2345_6789_0000u64 >> 34 << 2) as u32
        );
        assert_eq!(entry_dma_addr(entry_value(5 * G16)), 5 * G16);
    }

    #[test]
    fn map_reuses_identity_entries() {
        let mmio = FakeMmio::new();
        let mut s = Smpt::init(&mmio);
        mmio.clear_log();
        let a = s.map(&mmio, 0x1234_5000, 4096).unwrap();
        assert_eq!(a, SMPT_CARD_BASE + 0x1234_5000);
        assert_eq!(s.entries()[0].refcount, 4096);
        // Reuse needs no register write.
        assert!(mmio.writes.borrow().is_empty());
        let b = s.map(&mmio, 3 * G16 + 8, 16).unwrap();
        assert_eq!(b, SMPT_CARD_BASE + 3 * G16 + 8);
        assert_eq!(s.entries()[3].refcount, 16);
        // Spanning two pages: refcount split by bytes.
        let c = s.map(&mmio, 2 * G16 - 100, 300).unwrap();
        assert_eq!(c, SMPT_CARD_BASE + 2 * G16 - 100);
        assert_eq!(s.entries()[1].refcount, 100);
        assert_eq!(s.entries()[2].refcount, 200);
        s.unmap(c, 300).unwrap();
        assert_eq!(s.entries()[1].refcount, 0);
        assert_eq!(s.entries()[2].refcount, 0);
        s.unmap(a, 4096).unwrap();
        assert_eq!(s.entries()[0].refcount, 0);
    }

    #[test]
    fn map_high_addresses_takes_free_entries() {
        let mmio = FakeMmio::new();
        let mut s = Smpt::init(&mmio);
        // Page 0 busy.
        s.map(&mmio, 0x1000, 0x1000).unwrap();
        mmio.clear_log();
        let high = 0x4000_0000_0000u64; // 64 TiB, beyond the identity table
        let a = s.map(&mmio, high + 0x10, 0x20).unwrap();
        // Entry 0 is busy, entry 1 is the first free one.
        assert_eq!(a, SMPT_CARD_BASE + G16 + 0x10);
        assert_eq!(s.entries()[1].dma_addr, high);
        assert_eq!(*mmio.writes.borrow(), [(regs::smpt(1), entry_value(high))]);
        // A second mapping in the same page reuses entry 1.
        mmio.clear_log();
        let b = s.map(&mmio, high + 0x100, 0x10).unwrap();
        assert_eq!(b, SMPT_CARD_BASE + G16 + 0x100);
        assert_eq!(s.entries()[1].refcount, 0x30);
        assert!(mmio.writes.borrow().is_empty());
        // restore rewrites everything from the software copy.
        mmio.set(regs::smpt(1), 0);
        s.restore(&mmio);
        assert_eq!(mmio.get(regs::smpt(1)), entry_value(high));
        assert_eq!(mmio.writes.borrow().len(), 32);
    }

    #[test]
    fn map_failures() {
        let mmio = FakeMmio::new();
        let mut s = Smpt::init(&mmio);
        assert_eq!(s.map(&mmio, 0, 0), None);
        assert_eq!(s.map(&mmio, 0, SMPT_WINDOW_SIZE + 1), None);
        assert_eq!(s.map(&mmio, u64::MAX - 10, 100), None);
        assert_eq!(s.map(&mmio, u64::MAX, 2), None);
        // Unaligned whole-window request needs 33 entries.
        assert_eq!(s.map(&mmio, 1, SMPT_WINDOW_SIZE), None);
        // Whole window from 0 fits exactly.
        assert_eq!(s.map(&mmio, 0, SMPT_WINDOW_SIZE), Some(SMPT_CARD_BASE));
        // Now nothing is free for a foreign page.
        assert_eq!(s.map(&mmio, 0x100_0000_0000_0000, 1), None);
        // Top of the address space does not overflow.
        let mut s = Smpt::init(&mmio);
        let top = u64::MAX - 15;
        let a = s.map(&mmio, top, 16).unwrap();
        assert_eq!(s.entries()[0].refcount, 16);
        assert_eq!(a, SMPT_CARD_BASE + (top & (G16 - 1)));
    }

    #[test]
    fn unmap_errors() {
        let mmio = FakeMmio::new();
        let mut s = Smpt::init(&mmio);
        assert_eq!(s.unmap(0, 0), Ok(()));
        assert!(matches!(s.unmap(0x1000, 1), Err(SmptError::NotInWindow { .. })));
        assert!(matches!(
            s.unmap(SMPT_CARD_BASE + SMPT_WINDOW_SIZE - 1, 2),
            Err(SmptError::NotInWindow { .. })
        ));
        assert!(matches!(
            s.unmap(SMPT_CARD_BASE, u64::MAX),
            Err(SmptError::NotInWindow { .. })
        ));
        let a = s.map(&mmio, 0x1000, 10).unwrap();
        assert_eq!(s.unmap(a, 20), Err(SmptError::RefcountUnderflow { entry: 0 }));
        assert_eq!(s.entries()[0].refcount, 0);
        assert!(in_window(SMPT_CARD_BASE));
        assert!(!in_window(SMPT_CARD_BASE + SMPT_WINDOW_SIZE));
    }

    #[test]
    fn dump_format() {
        let mmio = FakeMmio::new();
        let mut s = Smpt::init(&mmio);
        s.map(&mmio, G16 + 1, 7).unwrap();
        let mut out = String::new();
        s.write_dump(0, &mut out).unwrap();
        let lines: std::vec::Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 35);
        assert_eq!(lines[0], "MIC 0  |SMPT entry| SW DMA addr    RefCount  ");
        assert!(lines[1].chars().all(|c| c == '='));
        assert_eq!(lines[2], "         |0         | 0              0         ");
        assert_eq!(lines[3], "         |1         | 0x400000000    7         ");
        assert_eq!(lines[34], lines[1]);
    }
}
