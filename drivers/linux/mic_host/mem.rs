// SPDX-License-Identifier: GPL-2.0-only

//! Host memory as mic-core's virtio code sees it: one address space with
//! the device page at 0 and each ring block at its own fixed window above
//! it, every window backed by its own DMA-coherent allocation.

use core::cell::Cell;

use kernel::prelude::*;

use crate::host::vop::{HostAlloc, HostBuf};
use crate::hw::{MemError, Memory};
use crate::shim::{DmaBuf, ShimDev};

/// Ring blocks a card can have at once (16 devices of 4 vrings; mpssd adds 3).
pub(crate) const MAX_BLOCKS: usize = 64;
/// Where block `i` lives in the address space: `BLOCK_BASE + i * BLOCK_STRIDE`.
const BLOCK_BASE: u64 = 0x1_0000;
/// Room per block (a 128-entry ring block is 8 KiB).
const BLOCK_STRIDE: u64 = 0x1_0000;

/// The ring blocks of one card (behind the card's lock).
pub(crate) struct Blocks {
    slots: [Cell<Option<Block>>; MAX_BLOCKS],
}

/// One allocated block: its memory (moved out only to be freed).
struct Block {
    buf: DmaBuf,
}

impl Blocks {
    pub(crate) fn new() -> Self {
        Self {
            slots: [const { Cell::new(None) }; MAX_BLOCKS],
        }
    }

    /// Runs `f` on block `i` (put back afterwards).
    fn with<R>(&self, i: usize, f: impl FnOnce(&DmaBuf) -> R) -> Option<R> {
        let slot = self.slots.get(i)?;
        let b = slot.take()?;
        let r = f(&b.buf);
        slot.set(Some(b));
        Some(r)
    }

    /// Frees every block (the card is going away).
    pub(crate) fn free_all(&self, shim: &ShimDev) {
        for slot in &self.slots {
            if let Some(b) = slot.take() {
                shim.dma_free(b.buf);
            }
        }
    }
}

/// The host memory of one card: the device page and the ring blocks.
pub(crate) struct HostMem<'a> {
    pub(crate) dp: &'a DmaBuf,
    pub(crate) blocks: &'a Blocks,
}

impl HostMem<'_> {
    /// Runs `f` on the buffer holding `addr .. addr + len` and the offset in it.
    fn at<R>(
        &self,
        addr: u64,
        len: usize,
        f: impl FnOnce(&DmaBuf, u64) -> Result<R, MemError>,
    ) -> Result<R, MemError> {
        let err = MemError::OutOfBounds {
            addr,
            len: len as u64,
        };
        if addr < BLOCK_BASE {
            return f(self.dp, addr);
        }
        let i = usize::try_from((addr - BLOCK_BASE) / BLOCK_STRIDE).map_err(|_| err)?;
        let within = (addr - BLOCK_BASE) % BLOCK_STRIDE;
        self.blocks.with(i, |b| f(b, within)).unwrap_or(Err(err))
    }

    /// Maps host memory `addr .. addr + len` (one buffer, whole) into `vma` at `off`.
    pub(crate) fn mmap_piece(
        &self,
        vma: &crate::shim::Vma,
        off: usize,
        addr: u64,
        len: usize,
    ) -> Result {
        self.at(addr, len, |b, within| Ok(within == 0 && b.len() == len))
            .ok()
            .filter(|&whole| whole)
            .ok_or(EINVAL)?;
        if addr < BLOCK_BASE {
            return self.dp.mmap_into(vma, off);
        }
        let i = ((addr - BLOCK_BASE) / BLOCK_STRIDE) as usize;
        self.blocks
            .with(i, |b| b.mmap_into(vma, off))
            .unwrap_or(Err(EINVAL))
    }
}

impl Memory for HostMem<'_> {
    fn size(&self) -> u64 {
        BLOCK_BASE + MAX_BLOCKS as u64 * BLOCK_STRIDE
    }

    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        self.at(addr, buf.len(), |b, within| b.read(within, buf))
            .map_err(|_| MemError::OutOfBounds {
                addr,
                len: buf.len() as u64,
            })
    }

    fn write(&self, addr: u64, data: &[u8]) -> Result<(), MemError> {
        self.at(addr, data.len(), |b, within| b.write(within, data))
            .map_err(|_| MemError::OutOfBounds {
                addr,
                len: data.len() as u64,
            })
    }

    fn write_barrier(&self) {
        crate::shim::wmb();
    }

    fn read_barrier(&self) {
        crate::shim::rmb();
    }
}

/// mic-core's ring-block allocator over `dma_alloc_coherent`.
pub(crate) struct DmaAlloc<'a> {
    pub(crate) shim: &'a ShimDev,
    pub(crate) blocks: &'a Blocks,
}

impl HostAlloc for DmaAlloc<'_> {
    fn alloc(&mut self, len: usize) -> Option<HostBuf> {
        if len as u64 > BLOCK_STRIDE || len == 0 {
            return None;
        }
        let (i, slot) = self
            .blocks
            .slots
            .iter()
            .enumerate()
            .find(|(_, s)| is_free(s))?;
        let buf = self.shim.dma_alloc(len)?;
        let host = HostBuf {
            offset: BLOCK_BASE + i as u64 * BLOCK_STRIDE,
            dma_addr: buf.dma_addr(),
            len,
        };
        slot.set(Some(Block { buf }));
        Some(host)
    }

    fn free(&mut self, buf: HostBuf) {
        let Some(rel) = buf.offset.checked_sub(BLOCK_BASE) else {
            return;
        };
        if rel % BLOCK_STRIDE != 0 {
            return;
        }
        if let Some(slot) = self.blocks.slots.get((rel / BLOCK_STRIDE) as usize) {
            if let Some(b) = slot.take() {
                self.shim.dma_free(b.buf);
            }
        }
    }
}

fn is_free(slot: &Cell<Option<Block>>) -> bool {
    match slot.take() {
        None => true,
        Some(b) => {
            slot.set(Some(b));
            false
        }
    }
}
