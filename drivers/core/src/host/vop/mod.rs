//! Virtio over PCIe, host side: what `/dev/micN` does for user space
//! (`mic_virtio.c` and `mic_fops.c` of the original).
//!
//! One open file of the character device is one [`VopDevice`]: ADD_DEVICE
//! places its descriptor block in the device page and allocates its rings
//! in host memory; COPY_DESC moves bytes between the caller's buffers and
//! the card's, through the hardened ring walker of [`ring`]; CONFIG_CHANGE
//! and removal (close) tell the card and wait, bounded, for its ack; the
//! card's doorbell runs [`VopDevice::handle_doorbell`] (used-ring re-homing,
//! device reset), and stopping the card runs [`VopDevice::host_reset`].
//!
//! What the host wrote (type, sizes, ring addresses, its slot) is kept
//! here and never read back from the card-writable page; what the card
//! writes (status, acks, used-ring addresses, doorbell numbers) is read
//! live and checked every time. Waits are caller-timed ([`AckWait`]), like
//! the reset sequence, so the same code runs in a kernel work item and in
//! micemu.

pub mod ring;

use core::fmt;

use crate::abi::virtio::{SplitLayout, ring_features};
use crate::abi::{
    BP_H2C_CONFIG_DB, CTRL_CONFIG_CHANGE, CTRL_GUEST_ACK, CTRL_H2C_VDEV_DB, CTRL_HOST_ACK,
    CTRL_USED_ADDRESS_UPDATED, CTRL_VDEV_RESET, DB_NONE, DESC_STATUS, DESC_TYPE, DESC_TYPE_REMOVED,
    MIC_DP_SIZE, MIC_MAX_DESC_BLK_SIZE, MIC_MAX_VRING_ENTRIES, MIC_MAX_VRINGS,
    MIC_VIRTIO_PARAM_CONFIG_CHANGED, MIC_VIRTIO_PARAM_DEV_REMOVE, MIC_VIRTIO_RING_ALIGN, MicBootparam,
    MicDeviceCtrl, MicDeviceDesc, MicVqconfig, MicVringInfo, VQ_USED_ADDRESS, aligned_desc_size, desc_size,
    mic_align, total_desc_size, vring_size,
};
use crate::errno;
use crate::handshake::Until;
pub use crate::handshake::{AckPoll, AckTiming, AckWait};
use crate::host::doorbell::{card_db, send_intr};
use crate::host::state::HostDevice;
use crate::hw::{MemError, Memory, Mmio};

pub use ring::{Copied, CopyError, CopyFault, HostVring, RingError, RingFeatures, RingStats, UserBuffers};

/// Offset of the device page in host memory (the same page the state
/// machine initialises).
pub const DP_OFFSET: u64 = 0;

/// Most iovecs one COPY_DESC takes (`UIO_MAXIOV`).
pub const MAX_IOVECS: u32 = 1024;

/// Most devices one device page can hold (each block is at least a header
/// and a control block).
pub const MAX_SLOTS: usize = (MIC_DP_SIZE - MicBootparam::SIZE) / (MicDeviceDesc::SIZE + MicDeviceCtrl::SIZE);

/// A piece of host memory the card can reach by DMA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostBuf {
    /// Where it is in the host memory the driver core is given.
    pub offset: u64,
    /// Its bus address (what the SMPT maps for the card).
    pub dma_addr: u64,
    /// Bytes.
    pub len: usize,
}

/// The host's DMA allocator for ring blocks (`dma_alloc_coherent` in the
/// kernel, an arena in micemu). Buffers come back zeroed.
pub trait HostAlloc {
    /// Allocates `len` zeroed bytes, or `None` when out of memory.
    fn alloc(&mut self, len: usize) -> Option<HostBuf>;
    /// Returns a buffer from [`HostAlloc::alloc`].
    fn free(&mut self, buf: HostBuf);
}

/// Errors of the `/dev/micN` operations, each with the original's errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VopError {
    /// COPY_DESC or CONFIG_CHANGE before ADD_DEVICE.
    NotAdded,
    /// The device was removed.
    Removed,
    /// ADD_DEVICE on a file that already carries a device.
    AlreadyAdded,
    /// The argument is shorter than its own header says.
    ShortArgument,
    /// `num_vq` above [`MIC_MAX_VRINGS`].
    TooManyVqs(u8),
    /// The 8-aligned descriptor size above [`MIC_MAX_DESC_BLK_SIZE`].
    BlockTooLarge(usize),
    /// A vring size of 0, not a power of two, or above 128.
    BadVringSize(u16),
    /// A device type of 0 (list end) or negative (removed).
    BadType(i8),
    /// No room for the block in the device page.
    NoSlot,
    /// No host memory or SMPT room for the rings.
    NoMemory,
    /// `vr_idx` beyond the device's virtqueues.
    BadVring(u8),
    /// Too many iovecs.
    TooManyIovecs(u32),
    /// The card has not set a status for the device yet.
    NotReady,
    /// The card never published its config doorbell (or published garbage).
    NoConfigDoorbell,
    /// The copy failed.
    Copy(CopyError),
    /// Host memory (the device page, a ring block) could not be accessed.
    Mem(MemError),
}

impl VopError {
    /// The errno (positive) the ioctl returns.
    #[must_use]
    pub const fn errno(&self) -> i32 {
        match self {
            VopError::NotAdded
            | VopError::TooManyVqs(_)
            | VopError::BlockTooLarge(_)
            | VopError::BadVringSize(_)
            | VopError::BadType(_)
            | VopError::NoSlot
            | VopError::BadVring(_)
            | VopError::TooManyIovecs(_) => errno::EINVAL,
            VopError::Removed | VopError::NotReady => errno::ENODEV,
            VopError::AlreadyAdded => errno::EBUSY,
            VopError::ShortArgument => errno::EFAULT,
            VopError::NoMemory => errno::ENOMEM,
            VopError::NoConfigDoorbell | VopError::Mem(_) => errno::EIO,
            VopError::Copy(e) => e.errno(),
        }
    }
}

impl From<MemError> for VopError {
    fn from(e: MemError) -> Self {
        VopError::Mem(e)
    }
}

impl From<CopyError> for VopError {
    fn from(e: CopyError) -> Self {
        VopError::Copy(e)
    }
}

impl fmt::Display for VopError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VopError::NotAdded => write!(f, "no device added on this file"),
            VopError::Removed => write!(f, "the device was removed"),
            VopError::AlreadyAdded => write!(f, "a device is already added on this file"),
            VopError::ShortArgument => write!(f, "argument shorter than its header says"),
            VopError::TooManyVqs(n) => write!(f, "num_vq {n} > {MIC_MAX_VRINGS}"),
            VopError::BlockTooLarge(n) => {
                write!(f, "descriptor block of {n} bytes > {MIC_MAX_DESC_BLK_SIZE}")
            }
            VopError::BadVringSize(n) => {
                write!(
                    f,
                    "vring size {n} (must be a power of two up to {MIC_MAX_VRING_ENTRIES})"
                )
            }
            VopError::BadType(t) => write!(f, "device type {t}"),
            VopError::NoSlot => write!(f, "no room left in the device page"),
            VopError::NoMemory => write!(f, "no host memory or SMPT room for the rings"),
            VopError::BadVring(i) => write!(f, "no vring {i} on this device"),
            VopError::TooManyIovecs(n) => write!(f, "{n} iovecs > {MAX_IOVECS}"),
            VopError::NotReady => write!(f, "the card has not started the device"),
            VopError::NoConfigDoorbell => write!(f, "the card has no config doorbell"),
            VopError::Copy(e) => write!(f, "{e}"),
            VopError::Mem(e) => write!(f, "{e}"),
        }
    }
}

impl core::error::Error for VopError {}

/// One block the host placed in the device page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Slot {
    offset: u16,
    size: u16,
    used: bool,
}

/// Where the host has placed device blocks in the page: its own record,
/// never rebuilt from the card-writable page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotTable {
    slots: [Slot; MAX_SLOTS],
    n: usize,
}

impl Default for SlotTable {
    fn default() -> Self {
        Self::new()
    }
}

impl SlotTable {
    /// An empty page.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            slots: [Slot {
                offset: 0,
                size: 0,
                used: false,
            }; MAX_SLOTS],
            n: 0,
        }
    }

    /// First fit for a block of `size` bytes: a freed slot of exactly that
    /// size (a walker steps by the size the header gives, so a block must
    /// fill its slot), else a new slot after the last one if the page has
    /// room. Returns the page offset.
    pub fn place(&mut self, size: usize) -> Option<usize> {
        if let Some(s) = self.slots[..self.n]
            .iter_mut()
            .find(|s| !s.used && usize::from(s.size) == size)
        {
            s.used = true;
            return Some(usize::from(s.offset));
        }
        let end = self.slots[..self.n].last().map_or(MicBootparam::SIZE, |s| {
            usize::from(s.offset) + usize::from(s.size)
        });
        if self.n == MAX_SLOTS || end + size > MIC_DP_SIZE {
            return None;
        }
        self.slots[self.n] = Slot {
            offset: end as u16,
            size: size as u16,
            used: true,
        };
        self.n += 1;
        Some(end)
    }

    /// Frees the slot at page offset `offset`.
    pub fn release(&mut self, offset: usize) {
        if let Some(s) = self.slots[..self.n]
            .iter_mut()
            .find(|s| usize::from(s.offset) == offset)
        {
            s.used = false;
        }
    }

    /// Slots in use.
    #[must_use]
    pub fn in_use(&self) -> usize {
        self.slots[..self.n].iter().filter(|s| s.used).count()
    }
}

/// Where a device is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VopState {
    /// Opened, nothing added yet.
    Empty,
    /// Added and published in the device page.
    Added,
    /// Removed (the file is being closed).
    Removed,
}

/// What the card's doorbell did to a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DoorbellEvents {
    /// The card re-homed its used rings and the host accepted them.
    pub activated: bool,
    /// The card re-homed its used rings and the host refused them (the
    /// device is broken; the flag stays set, so the card's wait fails).
    pub refused: Option<RingError>,
    /// The card reset the device.
    pub reset: bool,
}

/// One mapped ring block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Block {
    buf: HostBuf,
    card_addr: u64,
}

/// One open file of `/dev/micN`: at most one virtio device.
#[derive(Debug, Clone)]
pub struct VopDevice {
    state: VopState,
    /// Page offset of the descriptor block.
    slot: usize,
    /// The header the host wrote (type included); never re-read.
    desc: MicDeviceDesc,
    /// Host feature word as added (for what the host offered).
    host_features: u32,
    vrings: [Option<HostVring>; MIC_MAX_VRINGS as usize],
    blocks: [Option<Block>; MIC_MAX_VRINGS as usize],
    c2h_db: u8,
    activated: bool,
    broken: Option<RingError>,
    timing: AckTiming,
    card_resets: u64,
    /// Times the card's doorbell reached this device's bottom half.
    doorbells: u64,
}

impl Default for VopDevice {
    fn default() -> Self {
        Self::new()
    }
}

/// Rounds up to the ring alignment (the block sizes the original allocates).
const fn block_len(num: u16) -> usize {
    mic_align(
        vring_size(num, MIC_VIRTIO_RING_ALIGN) + MicVringInfo::SIZE,
        MIC_VIRTIO_RING_ALIGN,
    )
}

impl VopDevice {
    /// A freshly opened file.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            state: VopState::Empty,
            slot: 0,
            desc: MicDeviceDesc {
                ty: 0,
                num_vq: 0,
                feature_len: 0,
                config_len: 0,
                status: 0,
            },
            host_features: 0,
            vrings: [None, None, None, None],
            blocks: [None; MIC_MAX_VRINGS as usize],
            c2h_db: 0,
            activated: false,
            broken: None,
            timing: AckTiming::ORIGINAL,
            card_resets: 0,
            doorbells: 0,
        }
    }

    /// The timing of the config-change and removal waits.
    pub fn set_ack_timing(&mut self, timing: AckTiming) {
        self.timing = timing;
    }

    /// Where the device is in its life.
    #[must_use]
    pub fn state(&self) -> VopState {
        self.state
    }

    /// The virtio device type, once added.
    #[must_use]
    pub fn device_type(&self) -> Option<i8> {
        (self.state == VopState::Added).then_some(self.desc.ty)
    }

    /// The header as added.
    #[must_use]
    pub fn desc(&self) -> MicDeviceDesc {
        self.desc
    }

    /// Page offset of the descriptor block.
    #[must_use]
    pub fn slot(&self) -> usize {
        self.slot
    }

    /// The host doorbell the card rings for this device.
    #[must_use]
    pub fn c2h_db(&self) -> u8 {
        self.c2h_db
    }

    /// Whether the card has re-homed the used rings and the host took them.
    #[must_use]
    pub fn is_activated(&self) -> bool {
        self.activated
    }

    /// Why the card's re-homed used rings were refused, if they were: until
    /// the card resets the device, none of its rings moves a byte.
    #[must_use]
    pub fn refused_activation(&self) -> Option<RingError> {
        self.broken
    }

    /// Why the device is broken, if it is (a refused activation); rings
    /// carry their own marks ([`HostVring::broken`]).
    #[must_use]
    pub fn broken(&self) -> Option<RingError> {
        self.broken.or_else(|| self.rings().find_map(HostVring::broken))
    }

    /// How many times the card reset the device.
    #[must_use]
    pub fn card_resets(&self) -> u64 {
        self.card_resets
    }

    /// How many times the card's doorbell reached this device's bottom
    /// half (a storm of doorbells is coalesced by the interrupt cause
    /// register before it gets here).
    #[must_use]
    pub fn doorbells(&self) -> u64 {
        self.doorbells
    }

    /// The device's rings.
    pub fn rings(&self) -> impl Iterator<Item = &HostVring> {
        self.vrings.iter().flatten()
    }

    /// poll's error condition: nothing added, removed by the host, or
    /// removed by the card (it wrote `type = -1`, as its shutdown does).
    pub fn poll_error(&self, host: &impl Memory) -> bool {
        self.state != VopState::Added || self.card_removed(host)
    }

    /// Whether the card marked the device removed (`type = -1`): the one
    /// card-written header field the host looks at, and it can only end
    /// this device.
    pub fn card_removed(&self, host: &impl Memory) -> bool {
        self.state == VopState::Added
            && host
                .read_u8(self.desc_addr(DESC_TYPE))
                .is_ok_and(|t| t as i8 == DESC_TYPE_REMOVED)
    }

    fn ctrl_addr(&self, field: usize) -> u64 {
        DP_OFFSET + (self.slot + self.desc.ctrl_offset() + field) as u64
    }

    fn desc_addr(&self, field: usize) -> u64 {
        DP_OFFSET + (self.slot + field) as u64
    }

    /// The status byte the card wrote.
    pub fn status(&self, host: &impl Memory) -> Result<u8, MemError> {
        host.read_u8(self.desc_addr(DESC_STATUS))
    }

    /// The control block as the card sees it now.
    pub fn ctrl(&self, host: &impl Memory) -> Result<MicDeviceCtrl, MemError> {
        let mut b = [0u8; MicDeviceCtrl::SIZE];
        host.read(self.ctrl_addr(0), &mut b)?;
        Ok(MicDeviceCtrl::from_bytes(&b))
    }

    /// The pieces of the read-only mapping of this file, in mapping order:
    /// `(offset in the mapping, offset in host memory, length)` — the device
    /// page at 0, then each ring block (0x1000 + 8192·i for 128 entries).
    pub fn mmap_layout(&self) -> impl Iterator<Item = (u64, u64, usize)> + '_ {
        let page = core::iter::once((0, DP_OFFSET, MIC_DP_SIZE));
        let mut at = MIC_DP_SIZE as u64;
        let rings = self.blocks.iter().flatten().map(move |b| {
            let piece = (at, b.buf.offset, b.buf.len);
            at += b.buf.len as u64;
            piece
        });
        page.chain(rings)
    }

    /// Bytes of the whole mapping.
    #[must_use]
    pub fn mmap_len(&self) -> usize {
        self.mmap_layout().map(|(_, _, l)| l).sum()
    }

    /// MIC_VIRTIO_ADD_DEVICE: checks the block (header first, then the vq
    /// sizes), places it first-fit in the page, allocates, initialises and
    /// maps a ring block per vq (with `info.magic`), takes a host doorbell,
    /// publishes the type last (after a barrier) and rings the card's config
    /// doorbell if it has one (hot plug).
    pub fn add(
        &mut self,
        host_dev: &mut HostDevice,
        mmio: &impl Mmio,
        host: &impl Memory,
        alloc: &mut impl HostAlloc,
        block: &[u8],
    ) -> Result<(), VopError> {
        match self.state {
            VopState::Empty => {}
            VopState::Added => return Err(VopError::AlreadyAdded),
            VopState::Removed => return Err(VopError::Removed),
        }
        let desc = MicDeviceDesc::from_slice(block).ok_or(VopError::ShortArgument)?;
        if desc.num_vq > MIC_MAX_VRINGS {
            return Err(VopError::TooManyVqs(desc.num_vq));
        }
        let aligned = aligned_desc_size(&desc);
        if aligned > MIC_MAX_DESC_BLK_SIZE {
            return Err(VopError::BlockTooLarge(aligned));
        }
        let size = desc_size(&desc);
        let src = block.get(..size).ok_or(VopError::ShortArgument)?;
        if desc.ty <= 0 {
            return Err(VopError::BadType(desc.ty));
        }
        let mut vqs = [MicVqconfig::default(); MIC_MAX_VRINGS as usize];
        for (i, vq) in vqs.iter_mut().enumerate().take(usize::from(desc.num_vq)) {
            let at = desc.vq_offset(i);
            *vq = MicVqconfig::from_slice(&src[at..]).ok_or(VopError::ShortArgument)?;
            if vq.num == 0 || !vq.num.is_power_of_two() || vq.num > MIC_MAX_VRING_ENTRIES {
                return Err(VopError::BadVringSize(vq.num));
            }
        }
        let total = total_desc_size(&desc);
        let slot = host_dev.slots_mut().place(total).ok_or(VopError::NoSlot)?;
        self.slot = slot;
        self.desc = desc;
        let mut out = [0u8; MIC_MAX_DESC_BLK_SIZE];
        out[..size].copy_from_slice(src);
        out[DESC_TYPE] = 0;
        out[DESC_STATUS] = 0;
        for (i, asked) in vqs.iter().enumerate().take(usize::from(desc.num_vq)) {
            if let Err(e) = self.add_vring(host_dev, mmio, host, alloc, i, *asked) {
                self.release(host_dev, alloc);
                host_dev.slots_mut().release(slot);
                return Err(e);
            }
            let Some(b) = self.blocks[i] else { continue };
            let vq = MicVqconfig {
                address: b.card_addr,
                used_address: 0,
                num: asked.num,
            };
            let at = desc.vq_offset(i);
            out[at..at + MicVqconfig::SIZE].copy_from_slice(&vq.to_bytes());
        }
        let feat = desc.features_offset();
        self.host_features = (0..usize::from(desc.feature_len).min(4))
            .map(|b| u32::from(out[feat + b]) << (8 * b))
            .fold(0, |a, b| a | b);
        self.c2h_db = host_dev.doorbells_mut().next_db();
        let mut ctrl = MicDeviceCtrl::host_initial();
        ctrl.c2h_vdev_db = self.c2h_db as i8;
        let publish = (|| {
            host.write(self.desc_addr(0), &out[..aligned])?;
            host.write(self.ctrl_addr(0), &ctrl.to_bytes())?;
            host.write_barrier();
            host.write_u8(self.desc_addr(DESC_TYPE), desc.ty as u8)
        })();
        if let Err(e) = publish {
            self.release(host_dev, alloc);
            host_dev.slots_mut().release(slot);
            return Err(e.into());
        }
        self.state = VopState::Added;
        Self::ring_config_db(mmio, host);
        Ok(())
    }

    fn add_vring(
        &mut self,
        host_dev: &mut HostDevice,
        mmio: &impl Mmio,
        host: &impl Memory,
        alloc: &mut impl HostAlloc,
        i: usize,
        vq: MicVqconfig,
    ) -> Result<(), VopError> {
        let len = block_len(vq.num);
        let buf = alloc.alloc(len).ok_or(VopError::NoMemory)?;
        let Some(card_addr) = host_dev.smpt_mut().map(mmio, buf.dma_addr, len as u64) else {
            alloc.free(buf);
            return Err(VopError::NoMemory);
        };
        self.blocks[i] = Some(Block { buf, card_addr });
        let layout = SplitLayout::new(vq.num, MIC_VIRTIO_RING_ALIGN);
        let info = buf.offset + layout.size as u64;
        let magic = MicVringInfo {
            avail_idx: 0,
            magic: MicVringInfo::magic_for(self.desc.ty, i as u8),
        };
        host.write(info, &magic.to_bytes())?;
        self.vrings[i] = HostVring::new(
            vq.num,
            buf.offset,
            buf.offset + layout.avail as u64,
            buf.offset + layout.used as u64,
            info,
        );
        Ok(())
    }

    /// Unmaps and frees every ring block.
    fn release(&mut self, host_dev: &mut HostDevice, alloc: &mut impl HostAlloc) {
        for (block, ring) in self.blocks.iter_mut().zip(&mut self.vrings) {
            if let Some(b) = block.take() {
                // A mapping this device made cannot fail to unmap.
                let _ = host_dev.smpt_mut().unmap(b.card_addr, b.buf.len as u64);
                alloc.free(b.buf);
            }
            *ring = None;
        }
    }

    /// Rings the card's config doorbell if it published a valid one.
    fn ring_config_db(mmio: &impl Mmio, host: &impl Memory) -> bool {
        let Ok(db) = host.read_u8(DP_OFFSET + BP_H2C_CONFIG_DB as u64) else {
            return false;
        };
        match card_db(db as i8) {
            Ok(db) => send_intr(mmio, db).is_ok(),
            Err(_) => false,
        }
    }

    fn check_open(&self, host: &impl Memory) -> Result<(), VopError> {
        match self.state {
            VopState::Added if self.card_removed(host) => Err(VopError::Removed),
            VopState::Added => Ok(()),
            VopState::Empty => Err(VopError::NotAdded),
            VopState::Removed => Err(VopError::Removed),
        }
    }

    /// MIC_VIRTIO_COPY_DESC on vring `vr_idx`: see [`HostVring::copy`].
    /// Rings the card's `h2c_vdev_db` when the card wants to hear of the
    /// completion (a doorbell number outside 0..16 is ignored).
    pub fn copy_desc(
        &mut self,
        mmio: &impl Mmio,
        host: &impl Memory,
        card: &impl Memory,
        vr_idx: u8,
        user: &mut impl UserBuffers,
        update_used: bool,
    ) -> Result<Copied, VopError> {
        self.check_open(host)?;
        let status = self.desc_addr(DESC_STATUS);
        let h2c = self.ctrl_addr(CTRL_H2C_VDEV_DB);
        let ring = self
            .vrings
            .get_mut(usize::from(vr_idx))
            .and_then(Option::as_mut)
            .ok_or(VopError::BadVring(vr_idx))?;
        if host.read_u8(status)? == 0 {
            return Err(VopError::NotReady);
        }
        if self.broken.is_some() {
            // The host refused the card's used rings: no ring of this
            // device is usable until the card resets it.
            return Err(CopyError::Ring(RingError::Broken).into());
        }
        let copied = ring.copy(host, card, user, update_used)?;
        if copied.notify {
            let db = host.read_u8(h2c)?;
            if let Ok(db) = card_db(db as i8) {
                let _ = send_intr(mmio, db);
            }
        }
        Ok(copied)
    }

    /// Whether vring `vr_idx` has chains the host has not consumed.
    pub fn pending(&self, host: &impl Memory, vr_idx: u8) -> Result<bool, VopError> {
        self.check_open(host)?;
        let ring = self
            .vrings
            .get(usize::from(vr_idx))
            .and_then(Option::as_ref)
            .ok_or(VopError::BadVring(vr_idx))?;
        Ok(ring.pending(host)?)
    }

    /// MIC_VIRTIO_CONFIG_CHANGE: copies `config_len` bytes of new config
    /// space (a longer argument is cut, a shorter one is a fault), sets
    /// `config_change`, rings the card's config doorbell and returns the
    /// wait for `guest_ack`. Then call [`VopDevice::finish_config_change`]
    /// whatever the wait's outcome (a timeout is not reported, as in the
    /// original).
    pub fn config_change(
        &mut self,
        mmio: &impl Mmio,
        host: &impl Memory,
        config: &[u8],
    ) -> Result<AckWait, VopError> {
        self.check_open(host)?;
        let config = config
            .get(..usize::from(self.desc.config_len))
            .ok_or(VopError::ShortArgument)?;
        let db = host.read_u8(DP_OFFSET + BP_H2C_CONFIG_DB as u64)? as i8;
        if db == DB_NONE || card_db(db).is_err() {
            return Err(VopError::NoConfigDoorbell);
        }
        host.write(self.desc_addr(self.desc.config_offset()), config)?;
        host.write_u8(self.ctrl_addr(CTRL_GUEST_ACK), 0)?;
        host.write_barrier();
        host.write_u8(
            self.ctrl_addr(CTRL_CONFIG_CHANGE),
            MIC_VIRTIO_PARAM_CONFIG_CHANGED,
        )?;
        Self::ring_config_db(mmio, host);
        Ok(self.ack_wait())
    }

    fn ack_wait(&self) -> AckWait {
        AckWait::new(self.ctrl_addr(CTRL_GUEST_ACK), Until::Set, self.timing)
    }

    /// Ends a config change: clears `config_change` and `guest_ack`.
    pub fn finish_config_change(&mut self, host: &impl Memory) -> Result<(), VopError> {
        host.write_u8(self.ctrl_addr(CTRL_CONFIG_CHANGE), 0)?;
        host.write_u8(self.ctrl_addr(CTRL_GUEST_ACK), 0)?;
        Ok(())
    }

    /// Close of the file, first half: if the device is added and the card
    /// has a config doorbell, ask it to remove the device and return the
    /// wait for its ack. Then call [`VopDevice::finish_remove`] always.
    pub fn begin_remove(&mut self, mmio: &impl Mmio, host: &impl Memory) -> Option<AckWait> {
        if self.state != VopState::Added {
            return None;
        }
        let db = host.read_u8(DP_OFFSET + BP_H2C_CONFIG_DB as u64).ok()? as i8;
        card_db(db).ok()?;
        host.write_u8(self.ctrl_addr(CTRL_GUEST_ACK), 0).ok()?;
        host.write_barrier();
        host.write_u8(self.ctrl_addr(CTRL_CONFIG_CHANGE), MIC_VIRTIO_PARAM_DEV_REMOVE)
            .ok()?;
        Self::ring_config_db(mmio, host).then(|| self.ack_wait())
    }

    /// Close of the file, second half: clear the handshake, unmap and free
    /// the rings, free the slot, and mark it removed (`type = -1`) after a
    /// barrier.
    pub fn finish_remove(
        &mut self,
        host_dev: &mut HostDevice,
        host: &impl Memory,
        alloc: &mut impl HostAlloc,
    ) {
        if self.state != VopState::Added {
            self.state = VopState::Removed;
            return;
        }
        let _ = self.finish_config_change(host);
        self.release(host_dev, alloc);
        host.write_barrier();
        let _ = host.write_u8(self.desc_addr(DESC_TYPE), DESC_TYPE_REMOVED as u8);
        host_dev.slots_mut().release(self.slot);
        self.activated = false;
        self.state = VopState::Removed;
    }

    /// The card rang this device's doorbell: serve a device reset (if
    /// `vdev_reset`: it supersedes anything else the card asked), or take
    /// re-homed used rings (if `used_address_updated`).
    pub fn handle_doorbell(
        &mut self,
        host: &impl Memory,
        card: &impl Memory,
    ) -> Result<DoorbellEvents, VopError> {
        let mut ev = DoorbellEvents::default();
        if self.state != VopState::Added {
            return Ok(ev);
        }
        self.doorbells += 1;
        let ctrl = self.ctrl(host)?;
        if ctrl.used_address_updated != 0 && ctrl.vdev_reset == 0 {
            match self.activate(host, card) {
                Ok(()) => {
                    host.write_u8(self.ctrl_addr(CTRL_USED_ADDRESS_UPDATED), 0)?;
                    ev.activated = true;
                }
                Err(e) => {
                    self.broken = Some(e);
                    ev.refused = Some(e);
                }
            }
        }
        if ctrl.vdev_reset != 0 {
            self.reset(host)?;
            self.card_resets += 1;
            ev.reset = true;
        } else if self.activated && self.broken.is_none() && !ev.activated {
            // The reader is about to drain what the card made available:
            // the card need not ring again for it. (Not on the doorbell
            // that re-homed the rings: the card has offered nothing yet.)
            for ring in self.vrings.iter_mut().flatten() {
                ring.quiet_kicks(host, card)?;
            }
        }
        Ok(ev)
    }

    /// Takes the used-ring addresses the card published, each checked
    /// against card memory with its own ring's size, none overlapping
    /// another; the ring features take effect (only those the host offered).
    fn activate(&mut self, host: &impl Memory, card: &impl Memory) -> Result<(), RingError> {
        if self.activated {
            // Re-homing twice without a reset: the card is confused or hostile.
            return Err(RingError::Broken);
        }
        let mut guest = [0u8; 4];
        let n = usize::from(self.desc.feature_len).min(4);
        host.read(self.desc_addr(self.desc.guest_features_offset()), &mut guest[..n])?;
        let acked = u32::from_le_bytes(guest) & self.host_features;
        let features = RingFeatures {
            event_idx: acked & (1 << ring_features::EVENT_IDX) != 0,
            indirect: acked & (1 << ring_features::INDIRECT_DESC) != 0,
        };
        // Stage the used-ring ranges only (not copies of the rings: they are
        // 2 KiB each, and this runs on a kernel stack), apply when all pass.
        let mut staged = [None; MIC_MAX_VRINGS as usize];
        for (i, (ring, range)) in self.vrings.iter().zip(&mut staged).enumerate() {
            let Some(ring) = ring else { continue };
            let at = self.desc_addr(self.desc.vq_offset(i) + VQ_USED_ADDRESS);
            let addr = host.read_u64(at)?;
            *range = Some(ring.check_used_at(card, addr)?);
        }
        let ranges = staged.iter().flatten();
        for (i, &(a0, a1)) in ranges.clone().enumerate() {
            if ranges.clone().skip(i + 1).any(|&(b0, b1)| a0 < b1 && b0 < a1) {
                return Err(RingError::BufferOutOfRange {
                    addr: a0,
                    len: (a1 - a0) as u32,
                });
            }
        }
        for (ring, range) in self.vrings.iter_mut().zip(staged) {
            if let (Some(ring), Some((addr, _))) = (ring, range) {
                ring.activate(card, addr, features)?;
            }
        }
        self.activated = true;
        Ok(())
    }

    /// Device reset (the card's `vdev_reset`, or the host stopping the
    /// card): status 0, `vdev_reset` 0, a pending (or refused) re-homing
    /// dropped (`used_address_updated` 0), `host_ack` 1, every ring back to
    /// index 0 with nothing held, broken marks cleared.
    pub fn reset(&mut self, host: &impl Memory) -> Result<(), VopError> {
        for ring in self.vrings.iter_mut().flatten() {
            ring.reset(host)?;
        }
        self.activated = false;
        self.broken = None;
        if self.state == VopState::Added {
            host.write_u8(self.desc_addr(DESC_STATUS), 0)?;
            host.write_u8(self.ctrl_addr(CTRL_VDEV_RESET), 0)?;
            host.write_u8(self.ctrl_addr(CTRL_USED_ADDRESS_UPDATED), 0)?;
            host.write_barrier();
            host.write_u8(self.ctrl_addr(CTRL_HOST_ACK), 1)?;
        }
        Ok(())
    }

    /// The host stops the card (reset, shutdown handling): reset the device.
    pub fn host_reset(&mut self, host: &impl Memory) -> Result<(), VopError> {
        self.reset(host)
    }

    /// debugfs `vdev_info`: the device and its rings.
    pub fn write_info(&self, host: &impl Memory, out: &mut impl fmt::Write) -> fmt::Result {
        if self.state != VopState::Added {
            return Ok(());
        }
        let status = self.status(host).unwrap_or(0);
        let (to_user, to_card) = self
            .rings()
            .fold((0, 0), |(a, b), r| (a + r.stats().to_user, b + r.stats().to_card));
        writeln!(
            out,
            "VDEV type {} ({}) state {} in {} out {} slot {:#x} c2h_db {} doorbells {} resets {} status {:#x}{}",
            self.desc.ty,
            crate::abi::virtio::id::name(self.desc.ty),
            if status & crate::abi::virtio::status::DRIVER_OK != 0 {
                "UP"
            } else {
                "DOWN"
            },
            to_card,
            to_user,
            self.slot,
            self.c2h_db,
            self.doorbells,
            self.card_resets,
            status,
            match self.broken() {
                Some(_) => " BROKEN",
                None => "",
            }
        )?;
        if let Some(e) = self.broken() {
            writeln!(out, "  broken: {e}")?;
        }
        for (i, r) in self.vrings.iter().enumerate() {
            let Some(r) = r else { continue };
            let s = r.stats();
            let used = match r.used() {
                ring::UsedRing::Host(_) => UsedAt::Host,
                ring::UsedRing::Card(a) => UsedAt::Card(a),
            };
            writeln!(
                out,
                "  vring {i}: num {} last_avail {} last_used {} held {} used {} chains {} completed {} notifies {} errors {}",
                r.num(),
                r.last_avail(),
                r.last_used(),
                u8::from(r.holds_chain()),
                used,
                s.chains,
                s.completed,
                s.notifies,
                s.errors
            )?;
        }
        Ok(())
    }
}

/// A used-ring location for `vdev_info`.
#[derive(Debug, Clone, Copy)]
enum UsedAt {
    Host,
    Card(u64),
}

impl fmt::Display for UsedAt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UsedAt::Host => f.write_str("host"),
            UsedAt::Card(a) => write!(f, "card@{a:#x}"),
        }
    }
}

#[cfg(test)]
mod tests;
