//! The one fake register file and memory for tests and benchmarks (feature
//! `fake`; always on for mic-core's own tests). Other crates use these
//! instead of writing their own.

use core::cell::RefCell;
use std::vec;
use std::vec::Vec;

use crate::hw::{MemError, Memory, Mmio, in_bounds};
use crate::regs::MMIO_SIZE;

/// A plain register file: reads return the last value written; every access
/// is logged so tests can check order.
#[derive(Debug)]
pub struct FakeMmio {
    regs: RefCell<Vec<u32>>,
    pub writes: RefCell<Vec<(u32, u32)>>,
    pub reads: RefCell<Vec<u32>>,
}

impl FakeMmio {
    #[must_use]
    pub fn new() -> Self {
        Self {
            regs: RefCell::new(vec![0; (MMIO_SIZE / 4) as usize]),
            writes: RefCell::new(Vec::new()),
            reads: RefCell::new(Vec::new()),
        }
    }

    /// Sets a register without logging a write.
    pub fn set(&self, off: u32, v: u32) {
        self.regs.borrow_mut()[(off / 4) as usize] = v;
    }

    /// Reads a register without logging a read.
    pub fn get(&self, off: u32) -> u32 {
        self.regs.borrow()[(off / 4) as usize]
    }

    pub fn clear_log(&self) {
        self.writes.borrow_mut().clear();
        self.reads.borrow_mut().clear();
    }

    pub fn writes_to(&self, off: u32) -> Vec<u32> {
        self.writes
            .borrow()
            .iter()
            .filter(|(o, _)| *o == off)
            .map(|(_, v)| *v)
            .collect()
    }
}

impl Default for FakeMmio {
    fn default() -> Self {
        Self::new()
    }
}

impl Mmio for FakeMmio {
    fn read32(&self, offset: u32) -> u32 {
        assert_eq!(offset % 4, 0, "unaligned register read {offset:#x}");
        self.reads.borrow_mut().push(offset);
        self.get(offset)
    }

    fn write32(&self, offset: u32, value: u32) {
        assert_eq!(offset % 4, 0, "unaligned register write {offset:#x}");
        self.writes.borrow_mut().push((offset, value));
        self.set(offset, value);
    }
}

/// Memory whose valid bytes are `base .. base + len`; `size()` is
/// `base + len`, and accesses below `base` fail like out-of-range ones.
#[derive(Debug)]
pub struct FakeMem {
    base: u64,
    pub data: RefCell<Vec<u8>>,
}

impl FakeMem {
    #[must_use]
    pub fn new(len: usize) -> Self {
        Self::with_base(0, len)
    }

    #[must_use]
    pub fn with_base(base: u64, len: usize) -> Self {
        Self {
            base,
            data: RefCell::new(vec![0; len]),
        }
    }

    fn index(&self, addr: u64, len: usize) -> Result<usize, MemError> {
        let err = MemError::OutOfBounds {
            addr,
            len: len as u64,
        };
        let rel = addr.checked_sub(self.base).ok_or(err)?;
        if in_bounds(rel, len as u64, self.data.borrow().len() as u64) {
            Ok(rel as usize)
        } else {
            Err(err)
        }
    }

    pub fn bytes(&self, addr: u64, len: usize) -> Vec<u8> {
        let i = self.index(addr, len).unwrap();
        self.data.borrow()[i..i + len].to_vec()
    }

    pub fn fill(&self, addr: u64, data: &[u8]) {
        self.write(addr, data).unwrap();
    }
}

impl Memory for FakeMem {
    fn size(&self) -> u64 {
        self.base + self.data.borrow().len() as u64
    }

    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        let i = self.index(addr, buf.len())?;
        buf.copy_from_slice(&self.data.borrow()[i..i + buf.len()]);
        Ok(())
    }

    fn write(&self, addr: u64, data: &[u8]) -> Result<(), MemError> {
        let i = self.index(addr, data.len())?;
        self.data.borrow_mut()[i..i + data.len()].copy_from_slice(data);
        Ok(())
    }
}
