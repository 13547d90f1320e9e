//! The X100 hardware model: the MMIO register file with the side effects the
//! driver relies on, the card's GDDR as a sealed sparse memfd, host RAM that
//! the card reaches through the SMPT window.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use mic_core::hw::{MemError, Memory, Mmio, in_bounds};
use mic_core::regs;
use nix::fcntl::{FallocateFlags, FcntlArg, SealFlag, fallocate, fcntl};
use nix::sys::memfd::{MFdFlags, memfd_create};

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

/// The card's GDDR: a sparse memfd sealed at its size, so nothing can grow or
/// shrink it behind the model's back. Accessed with pread/pwrite, which keeps
/// the model free of `unsafe`.
#[derive(Debug)]
pub struct Gddr {
    file: File,
    size: u64,
}

impl Gddr {
    pub fn new(card: u32, size: u64) -> std::io::Result<Self> {
        let name = format!("mic{card}-gddr");
        let fd = memfd_create(name.as_str(), MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING)?;
        let file = File::from(fd);
        file.set_len(size)?;
        fcntl(
            &file,
            FcntlArg::F_ADD_SEALS(SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL),
        )?;
        Ok(Self { file, size })
    }

    /// What the bootstrap does to GDDR after a reset: it initialises the
    /// whole memory (ECC needs every word written before use), so nothing
    /// of the previous OS survives, its kernel log included. Modelled by
    /// giving every page of the memfd back, which reads as zeros.
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
}

impl Memory for Gddr {
    fn size(&self) -> u64 {
        self.size
    }

    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        let len = buf.len() as u64;
        if !in_bounds(addr, len, self.size) {
            return Err(MemError::OutOfBounds { addr, len });
        }
        self.file
            .read_exact_at(buf, addr)
            .map_err(|_| MemError::OutOfBounds { addr, len })
    }

    fn write(&self, addr: u64, data: &[u8]) -> Result<(), MemError> {
        let len = data.len() as u64;
        if !in_bounds(addr, len, self.size) {
            return Err(MemError::OutOfBounds { addr, len });
        }
        self.file
            .write_all_at(data, addr)
            .map_err(|_| MemError::OutOfBounds { addr, len })
    }
}

/// A piece of host RAM the host driver allocated for the card (the device
/// page). The host driver addresses it from 0 (its own pointer to the
/// allocation); the card reaches it by its bus ("DMA") address through the
/// SMPT.
#[derive(Debug)]
pub struct HostRam {
    dma_base: u64,
    bytes: Mutex<Vec<u8>>,
}

impl HostRam {
    #[must_use]
    pub fn new(dma_base: u64, len: usize) -> Self {
        Self {
            dma_base,
            bytes: Mutex::new(vec![0; len]),
        }
    }

    /// Bus address of byte 0.
    #[must_use]
    pub fn dma_base(&self) -> u64 {
        self.dma_base
    }

    fn range(&self, off: u64, len: usize) -> Result<std::ops::Range<usize>, MemError> {
        let err = MemError::OutOfBounds {
            addr: off,
            len: len as u64,
        };
        let size = self.bytes.lock().map_or(0, |b| b.len()) as u64;
        if !in_bounds(off, len as u64, size) {
            return Err(err);
        }
        Ok(off as usize..off as usize + len)
    }
}

impl Memory for HostRam {
    fn size(&self) -> u64 {
        self.bytes.lock().map_or(0, |b| b.len()) as u64
    }

    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        let r = self.range(addr, buf.len())?;
        let bytes = self.bytes.lock().map_err(|_| MemError::OutOfBounds {
            addr,
            len: buf.len() as u64,
        })?;
        buf.copy_from_slice(&bytes[r]);
        Ok(())
    }

    fn write(&self, addr: u64, data: &[u8]) -> Result<(), MemError> {
        let r = self.range(addr, data.len())?;
        let mut bytes = self.bytes.lock().map_err(|_| MemError::OutOfBounds {
            addr,
            len: data.len() as u64,
        })?;
        bytes[r].copy_from_slice(data);
        Ok(())
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
        let host = HostRam::new(0x4_5a6f_0000, 4096);
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
