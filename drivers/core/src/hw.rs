//! The small hardware traits the driver logic is written against.
//!
//! The kernel module implements them over `ioread32`/`iowrite32` on the BARs;
//! `micemu` implements them over its register file and a memfd; unit tests
//! implement them over arrays. Every method takes `&self`: hardware is shared
//! state with its own side effects, and interior mutability is its nature.

/// 32-bit register access to the X100 MMIO space (BAR4 on the host, the
/// `0x08_007C_0000` window on the card). `offset` is relative to the start of
/// the MMIO space; SBOX registers live at [`crate::regs::SBOX_BASE`] + X.
pub trait Mmio {
    fn read32(&self, offset: u32) -> u32;
    fn write32(&self, offset: u32, value: u32);
}

/// Why a memory access was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemError {
    /// `addr + len` falls outside the memory (or overflows).
    OutOfBounds { addr: u64, len: u64 },
}

/// Byte-addressed memory: the card's GDDR seen through the aperture (host),
/// the card's physical address space (card), or host RAM holding the device
/// page. Implementations must check `addr + buf.len()` against their size and
/// return [`MemError::OutOfBounds`] rather than panic.
pub trait Memory {
    /// Size in bytes; valid addresses are `0..size()`.
    fn size(&self) -> u64;
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError>;
    fn write(&self, addr: u64, data: &[u8]) -> Result<(), MemError>;

    fn read_u8(&self, addr: u64) -> Result<u8, MemError> {
        let mut b = [0u8; 1];
        self.read(addr, &mut b)?;
        Ok(b[0])
    }
    fn read_u16(&self, addr: u64) -> Result<u16, MemError> {
        let mut b = [0u8; 2];
        self.read(addr, &mut b)?;
        Ok(u16::from_le_bytes(b))
    }
    fn read_u32(&self, addr: u64) -> Result<u32, MemError> {
        let mut b = [0u8; 4];
        self.read(addr, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }
    fn read_u64(&self, addr: u64) -> Result<u64, MemError> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }
    fn write_u8(&self, addr: u64, v: u8) -> Result<(), MemError> {
        self.write(addr, &[v])
    }
    fn write_u16(&self, addr: u64, v: u16) -> Result<(), MemError> {
        self.write(addr, &v.to_le_bytes())
    }
    fn write_u32(&self, addr: u64, v: u32) -> Result<(), MemError> {
        self.write(addr, &v.to_le_bytes())
    }
    fn write_u64(&self, addr: u64, v: u64) -> Result<(), MemError> {
        self.write(addr, &v.to_le_bytes())
    }

    /// Makes this side's earlier writes visible to the other side before
    /// its later ones (`wmb()`): between a ring entry and the index that
    /// publishes it. Implementations over device memory override it.
    fn write_barrier(&self) {
        core::sync::atomic::fence(core::sync::atomic::Ordering::Release);
    }

    /// Orders earlier reads before later ones (`rmb()`): between reading an
    /// index and the entries it covers.
    fn read_barrier(&self) {
        core::sync::atomic::fence(core::sync::atomic::Ordering::Acquire);
    }

    /// Orders earlier writes before later reads too (`mb()`): between
    /// publishing an index or a flag and reading what the other side
    /// published in answer (kick suppression's two halves).
    fn full_barrier(&self) {
        core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
    }
}

/// Checks that `addr .. addr + len` lies inside `0 .. size`, without overflow.
#[must_use]
pub fn in_bounds(addr: u64, len: u64, size: u64) -> bool {
    addr.checked_add(len).is_some_and(|end| end <= size)
}

/// `base + off` as a memory address, or [`MemError::OutOfBounds`] if the sum
/// overflows. Use it for every address derived from a value the other side
/// supplied (a device-page address from a scratchpad, a ring address from a
/// descriptor): plain `+` would panic in debug builds on hostile input.
pub fn offset_addr(base: u64, off: u64) -> Result<u64, MemError> {
    base.checked_add(off)
        .ok_or(MemError::OutOfBounds { addr: base, len: off })
}

/// Checks that `addr .. addr + len` lies inside `mem`, as an error the `?`
/// operator can carry.
pub fn check_range(mem: &impl Memory, addr: u64, len: u64) -> Result<(), MemError> {
    if in_bounds(addr, len, mem.size()) {
        Ok(())
    } else {
        Err(MemError::OutOfBounds { addr, len })
    }
}

impl core::fmt::Display for MemError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            MemError::OutOfBounds { addr, len } => {
                write!(f, "memory access out of bounds: {len:#x} bytes at {addr:#x}")
            }
        }
    }
}

impl core::error::Error for MemError {}
