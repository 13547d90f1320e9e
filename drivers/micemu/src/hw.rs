//! The X100 hardware model: the MMIO register file with the side effects the
//! driver relies on, the card's GDDR as a sealed sparse memfd, host RAM (a
//! memfd too) that the card reaches through the SMPT window.

use std::fs::File;
use std::sync::atomic::{AtomicU32, Ordering};

use mic_core::host::vop::{HostAlloc, HostBuf};
use mic_core::hw::{MemError, Memory, Mmio, in_bounds};
use mic_core::regs;
use nix::fcntl::{FallocateFlags, FcntlArg, SealFlag, fallocate, fcntl};
use nix::sys::memfd::{MFdFlags, memfd_create};
use vm_memory::volatile_memory::VolatileMemory as _;
use vm_memory::{Bytes as _, FileOffset, MmapRegion};

/// Something the hardware does that the rest of the emulator must act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HwEvent {
    /// RGCR bit 0 was set: the card goes through reset.
    Reset,
    /// The host sent the bootstrap interrupt (APICICR7).
    Bootstrap,
    /// The host rang a host→card doorbell.
    CardDoorbell(u8),
    /// The card rang a card→host doorbell (SDBIC).
    HostDoorbell(u8),
}

/// Which side of the PCIe link a register access comes from. The register
/// file is the same; only the meaning of some writes differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Host,
    Card,
}

type EventSink = Box<dyn Fn(u32, HwEvent) + Send + Sync>;

/// The 128 KiB MMIO space as 32-bit registers.
pub struct RegFile {
    regs: Box<[AtomicU32]>,
    card: u32,
    events: EventSink,
}

impl std::fmt::Debug for RegFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegFile")
            .field("card", &self.card)
            .finish_non_exhaustive()
    }
}

impl RegFile {
    /// A register file whose side effects are reported to `events`.
    pub fn new(card: u32, events: impl Fn(u32, HwEvent) + Send + Sync + 'static) -> Self {
        let words = (regs::MMIO_SIZE / 4) as usize;
        Self {
            regs: (0..words).map(|_| AtomicU32::new(0)).collect(),
            card,
            events: Box::new(events),
        }
    }

    /// A view of the registers from one side of the link.
    #[must_use]
    pub fn view(&self, side: Side) -> MmioView<'_> {
        MmioView { file: self, side }
    }

    fn slot(&self, offset: u32) -> Option<&AtomicU32> {
        if offset % 4 != 0 {
            return None;
        }
        self.regs.get((offset / 4) as usize)
    }

    /// Direct register write without side effects: the hardware itself
    /// updating a register (bootstrap writing SPAD2, post codes).
    pub fn set(&self, offset: u32, value: u32) {
        if let Some(r) = self.slot(offset) {
            r.store(value, Ordering::SeqCst);
        }
    }

    #[must_use]
    pub fn get(&self, offset: u32) -> u32 {
        self.slot(offset).map_or(u32::MAX, |r| r.load(Ordering::SeqCst))
    }

    fn raise(&self, ev: HwEvent) {
        (self.events)(self.card, ev);
    }

    fn write(&self, side: Side, offset: u32, value: u32) {
        let Some(slot) = self.slot(offset) else {
            return;
        };
        slot.store(value, Ordering::SeqCst);
        match side {
            Side::Host => {
                if offset == regs::RGCR && value & 1 != 0 {
                    self.raise(HwEvent::Reset);
                } else if offset == regs::APICICR7 && value & (1 << 13) != 0 {
                    self.raise(HwEvent::Bootstrap);
                } else if let Some(db) = doorbell_of(offset, regs::APICICR0, 8, 8) {
                    if value & (1 << 13) != 0 && db < 7 {
                        self.raise(HwEvent::CardDoorbell(db));
                    }
                } else if let Some(idx) = doorbell_of(offset, regs::RDMASR0, 4, 32) {
                    // Doorbells 8..16 arrive through RDMASR registers 17..25.
                    if (17..25).contains(&idx) {
                        self.raise(HwEvent::CardDoorbell(idx - 17 + 8));
                    }
                }
            }
            Side::Card => {
                if let Some(db) = doorbell_of(offset, regs::SDBIC0, 4, 4) {
                    if value & 0x8000_0000 != 0 {
                        // The doorbell sets its cause bit; the host acks it by
                        // writing SICR0 back.
                        if let Some(sicr) = self.slot(regs::SICR0) {
                            sicr.fetch_or(1 << db, Ordering::SeqCst);
                        }
                        self.raise(HwEvent::HostDoorbell(db));
                    }
                }
            }
        }
    }
}

/// If `offset` is the register of doorbell `n` in a bank starting at `base`
/// with `stride` bytes between registers, returns `n`.
fn doorbell_of(offset: u32, base: u32, stride: u32, count: u32) -> Option<u8> {
    let rel = offset.checked_sub(base)?;
    (rel % stride == 0 && rel / stride < count).then(|| (rel / stride) as u8)
}

/// Register access from one side of the link.
#[derive(Debug, Clone, Copy)]
pub struct MmioView<'a> {
    file: &'a RegFile,
    side: Side,
}

impl Mmio for MmioView<'_> {
    fn read32(&self, offset: u32) -> u32 {
        self.file.get(offset)
    }

    fn write32(&self, offset: u32, value: u32) {
        if offset == regs::SICR0 && self.side == Side::Host {
            // Write-one-to-clear.
            if let Some(r) = self.file.slot(offset) {
                r.fetch_and(!value, Ordering::SeqCst);
            }
            return;
        }
        self.file.write(self.side, offset, value);
    }
}

/// A sealed memfd mapped shared into micemu: card GDDR, or the host RAM a
/// card's host driver allocated. Both sides of the emulated link reach it
/// through this one mapping (the card OS model and the host driver core
/// run in this process); ring indices are accessed with single atomic
/// 16-bit loads and stores, everything else with volatile copies, as
/// memory another agent writes concurrently must be.
pub struct SharedMem {
    file: File,
    // INVARIANT: maps exactly `size` bytes of `file` shared read-write, and
    // lives as long as the `SharedMem`; every access is bounds-checked
    // against `size` before it reaches the mapping.
    map: MmapRegion<()>,
    size: u64,
}

impl std::fmt::Debug for SharedMem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedMem")
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl SharedMem {
    /// A zeroed sparse memfd named `name` of `size` bytes, sealed against
    /// growing and shrinking (nothing can SIGBUS the mapping), mapped.
    pub fn new(name: &str, size: u64) -> std::io::Result<Self> {
        Self::sealed(name, size, SealFlag::empty())
    }

    /// As [`new`](Self::new), and written only through this process's own
    /// mapping from now on (`F_SEAL_FUTURE_WRITE`): a client handed the
    /// memfd ([`read_only_fd`](Self::read_only_fd)) cannot write it by
    /// opening it again read-write (`/proc/self/fd/N`), `write(2)`,
    /// `fallocate` or a new shared writable mapping. The host RAM that
    /// `dev/micN` clients map is made so: the original's mmap was
    /// read-only. (Such memory can no longer be [`scrub`](Self::scrub)bed.)
    pub fn private_writes(name: &str, size: u64) -> std::io::Result<Self> {
        Self::sealed(name, size, SealFlag::F_SEAL_FUTURE_WRITE)
    }

    fn sealed(name: &str, size: u64, extra: SealFlag) -> std::io::Result<Self> {
        let fd = memfd_create(name, MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING)?;
        let file = File::from(fd);
        file.set_len(size)?;
        let len = usize::try_from(size).map_err(std::io::Error::other)?;
        // Mapped before the seals: F_SEAL_FUTURE_WRITE leaves this
        // mapping writable and refuses every later way to write.
        let map = MmapRegion::from_file(FileOffset::new(file.try_clone()?, 0), len)
            .map_err(|e| std::io::Error::other(format!("mapping {name}: {e}")))?;
        fcntl(
            &file,
            FcntlArg::F_ADD_SEALS(
                SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL | extra,
            ),
        )?;
        Ok(Self { file, map, size })
    }

    /// Gives every page back (reads as zeros from now on).
    pub fn scrub(&self) -> std::io::Result<()> {
        let len = i64::try_from(self.size).map_err(std::io::Error::other)?;
        fallocate(
            &self.file,
            FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
            0,
            len,
        )?;
        Ok(())
    }

    /// A new read-only file description of the memfd, for a client's
    /// read-only mapping (`mmap` with `PROT_WRITE` on it fails: EACCES).
    pub fn read_only_fd(&self) -> std::io::Result<File> {
        let path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&self.file));
        File::open(path)
    }

    /// Another descriptor of the memfd, read-write (its size is sealed:
    /// a client's mapping of it can never fault past the end).
    pub fn read_write_fd(&self) -> std::io::Result<File> {
        self.file.try_clone()
    }

    /// The address in this process of bytes `addr .. addr + len`, for the
    /// kernel to copy to or from with `process_vm_readv/writev` (the one
    /// copy COPY_DESC makes). `None` if the range is not inside.
    #[must_use]
    pub fn host_ptr(&self, addr: u64, len: usize) -> Option<*mut u8> {
        if !in_bounds(addr, len as u64, self.size) {
            return None;
        }
        let s = self.map.get_slice(addr as usize, len).ok()?;
        Some(s.ptr_guard_mut().as_ptr())
    }

    /// The bytes `addr .. addr + len` for a volatile copy to or from another
    /// mapping, if they are inside.
    #[must_use]
    pub fn volatile(&self, addr: u64, len: usize) -> Option<vm_memory::VolatileSlice<'_, ()>> {
        self.slice(addr, len).ok()
    }

    fn slice(&self, addr: u64, len: usize) -> Result<vm_memory::VolatileSlice<'_, ()>, MemError> {
        let err = MemError::OutOfBounds {
            addr,
            len: len as u64,
        };
        if !in_bounds(addr, len as u64, self.size) {
            return Err(err);
        }
        self.map.get_slice(addr as usize, len).map_err(|_| err)
    }
}

impl Memory for SharedMem {
    fn size(&self) -> u64 {
        self.size
    }

    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        let len = buf.len();
        self.slice(addr, len)?
            .read_slice(buf, 0)
            .map_err(|_| MemError::OutOfBounds {
                addr,
                len: len as u64,
            })
    }

    fn write(&self, addr: u64, data: &[u8]) -> Result<(), MemError> {
        let len = data.len();
        self.slice(addr, len)?
            .write_slice(data, 0)
            .map_err(|_| MemError::OutOfBounds {
                addr,
                len: len as u64,
            })
    }

    fn read_u16(&self, addr: u64) -> Result<u16, MemError> {
        if addr % 2 != 0 {
            let mut b = [0u8; 2];
            self.read(addr, &mut b)?;
            return Ok(u16::from_le_bytes(b));
        }
        let v: u16 = self
            .slice(addr, 2)?
            .load(0, Ordering::Acquire)
            .map_err(|_| MemError::OutOfBounds { addr, len: 2 })?;
        Ok(u16::from_le(v))
    }

    fn write_u16(&self, addr: u64, v: u16) -> Result<(), MemError> {
        if addr % 2 != 0 {
            return self.write(addr, &v.to_le_bytes());
        }
        self.slice(addr, 2)?
            .store(v.to_le(), 0, Ordering::Release)
            .map_err(|_| MemError::OutOfBounds { addr, len: 2 })
    }

    // The barriers are the trait's: fences of the ordering each names
    // (release, acquire, and a full one only where a write must be seen
    // before a later read), as the kernel's smp_wmb/rmb/mb.
}

/// The card's GDDR: sparse, sealed at its size.
#[derive(Debug)]
pub struct Gddr(SharedMem);

impl Gddr {
    pub fn new(card: u32, size: u64) -> std::io::Result<Self> {
        SharedMem::new(&format!("mic{card}-gddr"), size).map(Gddr)
    }

    /// What the bootstrap does to GDDR after a reset: it initialises the
    /// whole memory (ECC needs every word written before use), so nothing
    /// of the previous OS survives, its kernel log included.
    pub fn scrub(&self) -> std::io::Result<()> {
        self.0.scrub()
    }

    /// The mapping, for the one-copy data path.
    #[must_use]
    pub fn shared(&self) -> &SharedMem {
        &self.0
    }
}

impl std::ops::Deref for Gddr {
    type Target = SharedMem;
    fn deref(&self) -> &SharedMem {
        &self.0
    }
}

impl Memory for Gddr {
    fn size(&self) -> u64 {
        self.0.size()
    }
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        self.0.read(addr, buf)
    }
    fn write(&self, addr: u64, data: &[u8]) -> Result<(), MemError> {
        self.0.write(addr, data)
    }
    fn read_u16(&self, addr: u64) -> Result<u16, MemError> {
        self.0.read_u16(addr)
    }
    fn write_u16(&self, addr: u64, v: u16) -> Result<(), MemError> {
        self.0.write_u16(addr, v)
    }
    fn write_barrier(&self) {
        self.0.write_barrier();
    }
    fn read_barrier(&self) {
        self.0.read_barrier();
    }
    fn full_barrier(&self) {
        self.0.full_barrier();
    }
}

/// The host RAM the host driver allocated for one card, as if from its DMA
/// allocator: the device page at offset 0 and the virtio ring blocks after
/// it. The host driver addresses it from 0; the card reaches it by its bus
/// ("DMA") address through the SMPT. A memfd, so a client's read-only
/// mapping of `dev/micN` shows the very bytes.
#[derive(Debug)]
pub struct HostRam {
    dma_base: u64,
    mem: SharedMem,
}

impl HostRam {
    pub fn new(card: u32, dma_base: u64, len: u64) -> std::io::Result<Self> {
        Ok(Self {
            dma_base,
            mem: SharedMem::private_writes(&format!("mic{card}-host-ram"), len)?,
        })
    }

    /// Bus address of byte 0.
    #[must_use]
    pub fn dma_base(&self) -> u64 {
        self.dma_base
    }

    /// The memfd and its mapping.
    #[must_use]
    pub fn shared(&self) -> &SharedMem {
        &self.mem
    }
}

impl Memory for HostRam {
    fn size(&self) -> u64 {
        self.mem.size()
    }
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        self.mem.read(addr, buf)
    }
    fn write(&self, addr: u64, data: &[u8]) -> Result<(), MemError> {
        self.mem.write(addr, data)
    }
    fn read_u16(&self, addr: u64) -> Result<u16, MemError> {
        self.mem.read_u16(addr)
    }
    fn write_u16(&self, addr: u64, v: u16) -> Result<(), MemError> {
        self.mem.write_u16(addr, v)
    }
    fn write_barrier(&self) {
        self.mem.write_barrier();
    }
    fn read_barrier(&self) {
        self.mem.read_barrier();
    }
    fn full_barrier(&self) {
        self.mem.full_barrier();
    }
}

/// First-fit page allocator over a card's host RAM above the device page:
/// what the host driver core's [`HostAlloc`] gets in micemu. Buffers come
/// back zeroed.
#[derive(Debug)]
pub struct HostArena {
    /// One flag per 4 KiB page after the device page.
    used: Vec<bool>,
}

const ARENA_PAGE: usize = 4096;

impl HostArena {
    /// An arena over pages `1 ..` of a host RAM of `len` bytes.
    #[must_use]
    pub fn new(len: u64) -> Self {
        Self {
            used: vec![false; (len as usize / ARENA_PAGE).saturating_sub(1)],
        }
    }

    /// Allocates zeroed pages for `len` bytes of `ram`.
    pub fn alloc(&mut self, ram: &HostRam, len: usize) -> Option<HostBuf> {
        let pages = len.div_ceil(ARENA_PAGE).max(1);
        let start = (0..=self.used.len().checked_sub(pages)?)
            .find(|&i| self.used[i..i + pages].iter().all(|u| !u))?;
        let offset = ((start + 1) * ARENA_PAGE) as u64;
        let zeros = [0u8; ARENA_PAGE];
        for p in 0..pages {
            ram.write(offset + (p * ARENA_PAGE) as u64, &zeros).ok()?;
        }
        self.used[start..start + pages].fill(true);
        Some(HostBuf {
            offset,
            dma_addr: ram.dma_base() + offset,
            len,
        })
    }

    /// Frees a buffer from [`HostArena::alloc`].
    pub fn free(&mut self, buf: HostBuf) {
        let start = (buf.offset as usize / ARENA_PAGE).saturating_sub(1);
        let pages = buf.len.div_ceil(ARENA_PAGE).max(1);
        if let Some(s) = self.used.get_mut(start..start + pages) {
            s.fill(false);
        }
    }

    /// Pages in use.
    #[must_use]
    pub fn pages_used(&self) -> usize {
        self.used.iter().filter(|u| **u).count()
    }
}

/// [`HostArena`] bound to its RAM, as the driver core's allocator.
#[derive(Debug)]
pub struct ArenaAlloc<'a> {
    pub arena: &'a mut HostArena,
    pub ram: &'a HostRam,
}

impl HostAlloc for ArenaAlloc<'_> {
    fn alloc(&mut self, len: usize) -> Option<HostBuf> {
        self.arena.alloc(self.ram, len)
    }
    fn free(&mut self, buf: HostBuf) {
        self.arena.free(buf);
    }
}

/// The card's physical address space as the card OS sees it: GDDR from 0,
/// and host memory through the SMPT window at 0x80_0000_0000, translated by
/// the SMPT registers exactly as the hardware does. An address the SMPT does
/// not lead to host RAM we model is a bounds error, never a panic.
#[derive(Debug)]
pub struct CardPhys<'a> {
    pub gddr: &'a Gddr,
    pub host: &'a HostRam,
    pub regs: &'a RegFile,
}

use mic_core::host::smpt::{
    self, SMPT_CARD_BASE as SMPT_WINDOW, SMPT_PAGE_SHIFT, SMPT_PAGE_SIZE, SMPT_WINDOW_SIZE,
};

impl CardPhys<'_> {
    fn translate(&self, addr: u64, len: u64) -> Result<u64, MemError> {
        let err = MemError::OutOfBounds { addr, len };
        let rel = addr.checked_sub(SMPT_WINDOW).ok_or(err)?;
        let entry = rel >> SMPT_PAGE_SHIFT;
        if entry >= (SMPT_WINDOW_SIZE >> SMPT_PAGE_SHIFT)
            || (rel + len.saturating_sub(1)) >> SMPT_PAGE_SHIFT != entry
        {
            return Err(err);
        }
        let value = self.regs.get(regs::smpt(entry as u8));
        let bus = smpt::entry_dma_addr(value) + (rel & (SMPT_PAGE_SIZE - 1));
        // Host memory other than the pages we model is not there.
        bus.checked_sub(self.host.dma_base()).ok_or(err)
    }
}

impl Memory for CardPhys<'_> {
    fn size(&self) -> u64 {
        SMPT_WINDOW + SMPT_WINDOW_SIZE
    }

    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        if addr < self.gddr.size() {
            return self.gddr.read(addr, buf);
        }
        let host = self.translate(addr, buf.len() as u64)?;
        self.host.read(host, buf)
    }

    fn write(&self, addr: u64, data: &[u8]) -> Result<(), MemError> {
        if addr < self.gddr.size() {
            return self.gddr.write(addr, data);
        }
        let host = self.translate(addr, data.len() as u64)?;
        self.host.write(host, data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn regfile() -> (RegFile, Arc<Mutex<Vec<HwEvent>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        let rf = RegFile::new(0, move |_, ev| sink.lock().unwrap().push(ev));
        (rf, seen)
    }

    #[test]
    fn register_side_effects() {
        let (rf, seen) = regfile();
        let host = rf.view(Side::Host);
        let card = rf.view(Side::Card);
        host.write32(regs::RGCR, 1);
        host.write32(regs::APICICR7, regs::BOOTSTRAP_VECTOR | regs::APICICR_SEND);
        host.write32(regs::apicicr(3), 1 << 13);
        host.write32(regs::rdmasr(17 + 2), 0);
        card.write32(regs::sdbic(1), 0x8000_0000);
        // A doorbell write without the ring bit, and a misaligned offset, do nothing.
        card.write32(regs::sdbic(2), 0);
        host.write32(regs::RGCR + 1, 1);
        assert_eq!(
            *seen.lock().unwrap(),
            [
                HwEvent::Reset,
                HwEvent::Bootstrap,
                HwEvent::CardDoorbell(3),
                HwEvent::CardDoorbell(10),
                HwEvent::HostDoorbell(1),
            ]
        );
        // The card's doorbell set its cause bit; the host clears it by writing it back.
        assert_eq!(host.read32(regs::SICR0), 0b10);
        host.write32(regs::SICR0, 0b10);
        assert_eq!(host.read32(regs::SICR0), 0);
        // Outside the MMIO space reads as all-ones, as a dead BAR does.
        assert_eq!(host.read32(regs::MMIO_SIZE), u32::MAX);
    }

    #[test]
    fn gddr_is_bounded() {
        let g = Gddr::new(0, 1 << 20).unwrap();
        g.write(10, b"abc").unwrap();
        let mut b = [0u8; 3];
        g.read(10, &mut b).unwrap();
        assert_eq!(&b, b"abc");
        assert!(g.write((1 << 20) - 2, b"abc").is_err());
        assert!(g.read(u64::MAX - 1, &mut b).is_err());
        g.scrub().unwrap();
        g.read(10, &mut b).unwrap();
        assert_eq!(b, [0; 3]);
        assert_eq!(g.size(), 1 << 20);
    }

    #[test]
    fn the_card_reaches_host_ram_only_through_the_smpt() {
        let (rf, _) = regfile();
        let gddr = Gddr::new(0, 1 << 20).unwrap();
        let host = HostRam::new(0, 0x4_5a6f_0000, 4096).unwrap();
        let phys = CardPhys {
            gddr: &gddr,
            host: &host,
            regs: &rf,
        };
        let card_addr = SMPT_WINDOW + (1 << SMPT_PAGE_SHIFT) + 0x5a6f_0000;
        // SMPT entry 1 not programmed yet: the address leads nowhere we model.
        assert!(phys.write(card_addr, b"x").is_err());
        rf.set(regs::smpt(1), smpt::entry_value(0x4_0000_0000));
        phys.write(card_addr + 8, b"hello").unwrap();
        let mut b = [0u8; 5];
        host.read(8, &mut b).unwrap();
        assert_eq!(&b, b"hello");
        // Past the end of the page, and straddling two SMPT entries, are refused.
        assert!(phys.write(card_addr + 4095, b"xy").is_err());
        assert!(phys.read(SMPT_WINDOW + SMPT_PAGE_SIZE - 1, &mut b).is_err());
        // Below the window is GDDR.
        phys.write(0x100, b"g").unwrap();
        assert_eq!(gddr.read_u8(0x100).unwrap(), b'g');
        assert!(phys.write(1 << 20, b"g").is_err());
    }
}
