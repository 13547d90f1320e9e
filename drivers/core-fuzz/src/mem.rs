//! Memory that records what the code under test read and wrote.

use core::cell::RefCell;

use mic_core::fake::FakeMem;
use mic_core::hw::{MemError, Memory};

/// A [`FakeMem`] whose accesses through the [`Memory`] trait are logged.
/// The harness plays the other side by touching [`Logged::raw`] directly,
/// which logs nothing.
#[derive(Debug)]
pub struct Logged {
    /// The memory itself (the other side's view).
    pub raw: FakeMem,
    writes: RefCell<Vec<(u64, u64)>>,
    reads: RefCell<Vec<(u64, u64)>>,
}

/// Asserts that every `(addr, len)` of `log` lies wholly inside one of
/// `allowed` (`(start, end)` ranges).
fn check(log: Vec<(u64, u64)>, allowed: &[(u64, u64)], what: &str, how: &str) {
    for (addr, len) in log {
        let end = addr + len;
        assert!(
            allowed.iter().any(|&(a, b)| a <= addr && end <= b),
            "{what}: {how} of {len} bytes at {addr:#x} outside {allowed:x?}"
        );
    }
}

impl Logged {
    /// `len` zeroed bytes at 0.
    #[must_use]
    pub fn new(len: usize) -> Self {
        Self {
            raw: FakeMem::new(len),
            writes: RefCell::new(Vec::new()),
            reads: RefCell::new(Vec::new()),
        }
    }

    /// The ranges `(addr, len)` written since the last call, in order.
    pub fn take_writes(&self) -> Vec<(u64, u64)> {
        core::mem::take(&mut *self.writes.borrow_mut())
    }

    /// The ranges read since the last call, in order.
    pub fn take_reads(&self) -> Vec<(u64, u64)> {
        core::mem::take(&mut *self.reads.borrow_mut())
    }

    /// Asserts that every write since the last call lies wholly inside one
    /// of `allowed` (`(start, end)` ranges); `what` names the memory.
    pub fn check_writes(&self, allowed: &[(u64, u64)], what: &str) {
        check(self.take_writes(), allowed, what, "write");
    }

    /// Likewise for reads (the code under test reading what it has no
    /// business reading is as wrong as writing it).
    pub fn check_reads(&self, allowed: &[(u64, u64)], what: &str) {
        check(self.take_reads(), allowed, what, "read");
    }

    /// Copies `data` to `addr`, cut at the end of the memory (the other
    /// side writing).
    pub fn poke(&self, addr: u64, data: &[u8]) {
        let size = self.raw.size();
        if addr >= size {
            return;
        }
        let n = data.len().min((size - addr) as usize);
        self.raw.fill(addr, &data[..n]);
    }
}

impl Memory for Logged {
    fn size(&self) -> u64 {
        self.raw.size()
    }

    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        self.raw.read(addr, buf)?;
        self.reads.borrow_mut().push((addr, buf.len() as u64));
        Ok(())
    }

    fn write(&self, addr: u64, data: &[u8]) -> Result<(), MemError> {
        self.raw.write(addr, data)?;
        self.writes.borrow_mut().push((addr, data.len() as u64));
        Ok(())
    }
}
