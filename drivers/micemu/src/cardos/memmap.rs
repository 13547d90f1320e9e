//! The card OS's map of its GDDR, and the page allocator of its virtio
//! arena: where the used rings and every buffer the card hands the host
//! live.
//!
//! | card physical | what |
//! |---|---|
//! | `0x1a1b2c0` | `log_buf_len` (the kernel's .data) |
//! | `0x1c3d560 ..` | `__log_buf`, at most [`LOG_BUF_MAX`] (ends below 45 MiB) |
//! | 48 MiB .. 64 MiB | the virtio arena ([`ARENA_BASE`], [`ARENA_LEN`]) |
//! | 64 MiB .. | the kernel image, then the command line (SPAD2's boot address) |
//! | 128 MiB .. | the ramdisk (twice the boot address) |
//!
//! The arena sits in memory the loader never writes (between the kernel's
//! .bss and the image the bootstrap was handed), whatever the image and
//! ramdisk sizes, so no device buffer can overlap anything the boot uses.

use crate::firmware::{LOG_BUF_LEN_VA, LOG_BUF_VA, START_KERNEL_MAP};

/// Allocation granule.
pub const PAGE: u64 = 4096;
/// Start of the virtio arena.
pub const ARENA_BASE: u64 = 48 << 20;
/// Size of the virtio arena.
pub const ARENA_LEN: u64 = 16 << 20;
/// The largest card log buffer (`log_buf_len`) micemu accepts.
pub const LOG_BUF_MAX: u64 = 16 << 20;
/// Where the bootstrap tells the host to load the kernel (SPAD2).
pub const BOOT_ADDR: u64 = 64 << 20;
/// The smallest GDDR the card OS runs in: the arena, the kernel at 64 MiB
/// and a ramdisk at 128 MiB with room to spare.
pub const MIN_MEMORY: u64 = 256 << 20;

const _: () = {
    assert!(LOG_BUF_LEN_VA - START_KERNEL_MAP + 4 <= LOG_BUF_VA - START_KERNEL_MAP);
    assert!(LOG_BUF_VA - START_KERNEL_MAP + LOG_BUF_MAX <= ARENA_BASE);
    assert!(ARENA_BASE + ARENA_LEN <= BOOT_ADDR);
    assert!(2 * BOOT_ADDR < MIN_MEMORY);
};

/// A run of whole pages of card memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    /// Card physical address (page aligned).
    pub addr: u64,
    /// Bytes (a multiple of [`PAGE`]).
    pub len: u64,
}

impl Region {
    /// The address `off` bytes in.
    #[must_use]
    pub fn at(&self, off: u64) -> u64 {
        debug_assert!(off < self.len);
        self.addr + off
    }
}

/// First-fit page allocator over the arena.
#[derive(Debug, Clone)]
pub struct Arena {
    base: u64,
    used: Vec<bool>,
}

impl Arena {
    /// An allocator over `len` bytes at `base` (page aligned).
    #[must_use]
    pub fn new(base: u64, len: u64) -> Self {
        Self {
            base,
            used: vec![false; (len / PAGE) as usize],
        }
    }

    /// The card OS's arena.
    #[must_use]
    pub fn card() -> Self {
        Self::new(ARENA_BASE, ARENA_LEN)
    }

    /// `len` bytes rounded up to whole pages, or `None` when no run of free
    /// pages is long enough.
    pub fn alloc(&mut self, len: u64) -> Option<Region> {
        let pages = usize::try_from(len.div_ceil(PAGE)).ok()?.max(1);
        let start = (0..=self.used.len().checked_sub(pages)?)
            .find(|&i| self.used[i..i + pages].iter().all(|u| !u))?;
        self.used[start..start + pages].fill(true);
        Some(Region {
            addr: self.base + start as u64 * PAGE,
            len: pages as u64 * PAGE,
        })
    }

    /// Gives back a region from [`Arena::alloc`].
    pub fn free(&mut self, r: Region) {
        let start = ((r.addr - self.base) / PAGE) as usize;
        let pages = (r.len / PAGE) as usize;
        if let Some(s) = self.used.get_mut(start..start + pages) {
            s.fill(false);
        }
    }

    /// Free bytes.
    #[must_use]
    pub fn free_bytes(&self) -> u64 {
        self.used.iter().filter(|u| !**u).count() as u64 * PAGE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_fit_pages() {
        let mut a = Arena::new(0x1000_0000, 4 * PAGE);
        let r1 = a.alloc(1).unwrap();
        assert_eq!(
            r1,
            Region {
                addr: 0x1000_0000,
                len: PAGE
            }
        );
        let r2 = a.alloc(PAGE + 1).unwrap();
        assert_eq!(r2.addr, 0x1000_0000 + PAGE);
        assert_eq!(r2.len, 2 * PAGE);
        assert!(a.alloc(2 * PAGE).is_none());
        a.free(r1);
        assert_eq!(a.free_bytes(), 2 * PAGE);
        assert_eq!(a.alloc(PAGE).unwrap().addr, 0x1000_0000);
        assert_eq!(a.alloc(PAGE).unwrap().addr, 0x1000_0000 + 3 * PAGE);
        assert!(a.alloc(1).is_none());
        assert!(a.alloc(u64::MAX).is_none());
    }
}
