//! The card's virtio transport over the device page (`card/mic_virtio.c`
//! of the original): one [`CardVdev`] per device descriptor the host
//! published, with feature negotiation, bounds-checked config access,
//! status, find_vqs (map the host's ring block, check its magic, re-home
//! the used ring into card memory, the `used_address_updated` handshake),
//! notify, the device-reset handshake and hot removal.
//!
//! `mem` is the card's physical address space: the device page and the
//! ring blocks are host memory reached through the SMPT window, the used
//! rings and buffers are in GDDR. Everything the host wrote is checked
//! before use; the waits are caller-timed [`AckWait`]s.

use core::fmt;

use crate::abi::{
    CTRL_C2H_VDEV_DB, CTRL_CONFIG_CHANGE, CTRL_GUEST_ACK, CTRL_H2C_VDEV_DB, CTRL_HOST_ACK,
    CTRL_USED_ADDRESS_UPDATED, CTRL_VDEV, CTRL_VDEV_RESET, DESC_STATUS, DESC_TYPE, DESC_TYPE_REMOVED,
    MIC_MAX_VRING_ENTRIES, MIC_MAX_VRINGS, MIC_VIRTIO_PARAM_CONFIG_CHANGED, MIC_VIRTIO_PARAM_DEV_REMOVE,
    MIC_VIRTIO_RING_ALIGN, MicDeviceDesc, MicVqconfig, MicVringInfo, VQ_USED_ADDRESS, VRI_MAGIC, vring_size,
};
use crate::card::vring::{DriverQueue, QueueError};
use crate::card::{CardDoorbells, send_host_intr};
use crate::devpage::DescLoc;
use crate::handshake::{AckTiming, AckWait, Until};
use crate::hw::{MemError, Memory, Mmio, check_range, offset_addr};

/// Errors of the card's virtio transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VirtioError {
    /// A vqconfig's `num` is 0, not a power of two or above 128.
    BadVring {
        /// Which virtqueue.
        index: u8,
        /// Its `num`.
        num: u16,
    },
    /// A ring block is not where the card can reach it.
    RingOutOfRange {
        /// Which virtqueue.
        index: u8,
    },
    /// `info.magic` is not `MIC_MAGIC + type + index` ("magic mismatch").
    MagicMismatch {
        /// Which virtqueue.
        index: u8,
        /// What was found.
        found: u32,
    },
    /// Fewer used rings than virtqueues were supplied.
    MissingUsedRing(u8),
    /// A config access outside `config_len`.
    ConfigOutOfRange,
    /// No such virtqueue.
    NoQueue(u8),
    /// The device page or a ring could not be reached.
    Mem(MemError),
    /// A queue operation failed.
    Queue(QueueError),
}

impl From<MemError> for VirtioError {
    fn from(e: MemError) -> Self {
        VirtioError::Mem(e)
    }
}

impl From<QueueError> for VirtioError {
    fn from(e: QueueError) -> Self {
        VirtioError::Queue(e)
    }
}

impl fmt::Display for VirtioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VirtioError::BadVring { index, num } => write!(f, "vq {index}: bad ring size {num}"),
            VirtioError::RingOutOfRange { index } => write!(f, "vq {index}: ring block out of reach"),
            VirtioError::MagicMismatch { index, found } => {
                write!(f, "vq {index}: magic mismatch ({found:#010x})")
            }
            VirtioError::MissingUsedRing(i) => write!(f, "no used ring for vq {i}"),
            VirtioError::ConfigOutOfRange => write!(f, "config access out of range"),
            VirtioError::NoQueue(i) => write!(f, "no virtqueue {i}"),
            VirtioError::Mem(e) => write!(f, "{e}"),
            VirtioError::Queue(e) => write!(f, "{e}"),
        }
    }
}

impl core::error::Error for VirtioError {}

/// What the host asked with `config_change`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigRequest {
    /// The config space changed.
    Changed,
    /// Remove the device.
    Remove,
}

/// The card's side of one virtio device.
#[derive(Debug, Clone)]
pub struct CardVdev {
    /// Card address of the descriptor.
    addr: u64,
    desc: MicDeviceDesc,
    h2c_db: u8,
    features: u32,
    queues: [Option<DriverQueue>; MIC_MAX_VRINGS as usize],
}

impl CardVdev {
    /// A descriptor found at `loc` of the page at `dp`: take a card
    /// doorbell and publish it as `h2c_vdev_db`, and record the device in
    /// `vdev`. The walker already validated the header against the page.
    pub fn probe(
        mem: &impl Memory,
        dp: u64,
        loc: &DescLoc,
        doorbells: &mut CardDoorbells,
    ) -> Result<Self, VirtioError> {
        let addr = offset_addr(dp, loc.offset as u64)?;
        let dev = Self {
            addr,
            desc: loc.desc,
            h2c_db: doorbells.next_db(),
            features: 0,
            queues: [None, None, None, None],
        };
        mem.write_u64(dev.ctrl(CTRL_VDEV), addr)?;
        mem.write_u8(dev.ctrl(CTRL_H2C_VDEV_DB), dev.h2c_db)?;
        Ok(dev)
    }

    fn field(&self, off: usize) -> u64 {
        self.addr + off as u64
    }

    fn ctrl(&self, f: usize) -> u64 {
        self.field(self.desc.ctrl_offset() + f)
    }

    /// Card address of the descriptor (what identifies it in the page).
    #[must_use]
    pub fn addr(&self) -> u64 {
        self.addr
    }

    /// The virtio device ID.
    #[must_use]
    pub fn device_type(&self) -> i8 {
        self.desc.ty
    }

    /// The header as discovered.
    #[must_use]
    pub fn desc(&self) -> MicDeviceDesc {
        self.desc
    }

    /// The card doorbell the host rings for this device.
    #[must_use]
    pub fn h2c_db(&self) -> u8 {
        self.h2c_db
    }

    /// The first 32 host feature bits (`get_features`).
    pub fn host_features(&self, mem: &impl Memory) -> Result<u32, MemError> {
        let mut b = [0u8; 4];
        let n = usize::from(self.desc.feature_len).min(4);
        mem.read(self.field(self.desc.features_offset()), &mut b[..n])?;
        Ok(u32::from_le_bytes(b))
    }

    /// `finalize_features`: clear the guest-ack bytes, then ack the
    /// `wanted` bits the host offered. Returns the negotiated bits.
    pub fn finalize_features(&mut self, mem: &impl Memory, wanted: u32) -> Result<u32, MemError> {
        let acked = wanted & self.host_features(mem)?;
        let at = self.field(self.desc.guest_features_offset());
        for i in 0..u64::from(self.desc.feature_len) {
            mem.write_u8(at + i, 0)?;
        }
        let n = usize::from(self.desc.feature_len).min(4);
        mem.write(at, &acked.to_le_bytes()[..n])?;
        self.features = acked;
        Ok(acked)
    }

    /// The negotiated features.
    #[must_use]
    pub fn features(&self) -> u32 {
        self.features
    }

    fn config_range(&self, off: usize, len: usize) -> Result<u64, VirtioError> {
        let end = off.checked_add(len).ok_or(VirtioError::ConfigOutOfRange)?;
        if end > usize::from(self.desc.config_len) {
            return Err(VirtioError::ConfigOutOfRange);
        }
        Ok(self.field(self.desc.config_offset() + off))
    }

    /// Reads config space bytes `off..off+buf.len()`.
    pub fn read_config(&self, mem: &impl Memory, off: usize, buf: &mut [u8]) -> Result<(), VirtioError> {
        let at = self.config_range(off, buf.len())?;
        Ok(mem.read(at, buf)?)
    }

    /// Writes config space bytes.
    pub fn write_config(&self, mem: &impl Memory, off: usize, data: &[u8]) -> Result<(), VirtioError> {
        let at = self.config_range(off, data.len())?;
        Ok(mem.write(at, data)?)
    }

    /// The status byte.
    pub fn status(&self, mem: &impl Memory) -> Result<u8, MemError> {
        mem.read_u8(self.field(DESC_STATUS))
    }

    /// `set_status`: writes a non-zero status and rings the host (0 is a
    /// reset, which goes through [`CardVdev::begin_reset`]).
    pub fn set_status(&self, mmio: &impl Mmio, mem: &impl Memory, status: u8) -> Result<(), MemError> {
        if status == 0 {
            return Ok(());
        }
        mem.write_u8(self.field(DESC_STATUS), status)?;
        mem.write_barrier();
        self.notify(mmio, mem);
        Ok(())
    }

    /// Rings the host's doorbell for this device (`c2h_vdev_db`, which the
    /// host chose; an out-of-range number is dropped as the hardware does).
    pub fn notify(&self, mmio: &impl Mmio, mem: &impl Memory) -> bool {
        mem.read_u8(self.ctrl(CTRL_C2H_VDEV_DB))
            .is_ok_and(|db| send_host_intr(mmio, db as i8))
    }

    /// find_vqs: for each virtqueue map the host's ring block (checked to
    /// be reachable, with the right `info.magic`), zero it, re-home its used
    /// ring to `used[i]` in card memory and publish that address; then set
    /// `used_address_updated`, ring the host and return the wait for the
    /// host to clear it (then the device may go DRIVER_OK).
    pub fn find_vqs(
        &mut self,
        mmio: &impl Mmio,
        mem: &impl Memory,
        used: &[u64],
        timing: AckTiming,
    ) -> Result<AckWait, VirtioError> {
        let event_idx = self.features & (1 << crate::abi::virtio::ring_features::EVENT_IDX) != 0;
        for i in 0..self.desc.num_vq {
            let index = i;
            let at = self.field(self.desc.vq_offset(usize::from(i)));
            let mut raw = [0u8; MicVqconfig::SIZE];
            mem.read(at, &mut raw)?;
            let vq = MicVqconfig::from_bytes(&raw);
            if vq.num == 0 || !vq.num.is_power_of_two() || vq.num > MIC_MAX_VRING_ENTRIES {
                return Err(VirtioError::BadVring { index, num: vq.num });
            }
            let size = vring_size(vq.num, MIC_VIRTIO_RING_ALIGN) as u64;
            check_range(mem, vq.address, size + MicVringInfo::SIZE as u64)
                .map_err(|_| VirtioError::RingOutOfRange { index })?;
            // The card's space has holes (host memory is only where the SMPT
            // leads), so a failed read is as much "out of reach" as a range.
            let found = mem
                .read_u32(vq.address + size + VRI_MAGIC as u64)
                .map_err(|_| VirtioError::RingOutOfRange { index })?;
            if found != MicVringInfo::magic_for(self.desc.ty, i) {
                return Err(VirtioError::MagicMismatch { index, found });
            }
            let used_at = *used.get(usize::from(i)).ok_or(VirtioError::MissingUsedRing(i))?;
            let mut q = DriverQueue::in_block(vq.num, vq.address, used_at, MIC_VIRTIO_RING_ALIGN)
                .ok_or(VirtioError::BadVring { index, num: vq.num })?;
            q.set_event_idx(event_idx);
            q.zero(mem, mem)
                .map_err(|_| VirtioError::RingOutOfRange { index })?;
            mem.write_u64(at + VQ_USED_ADDRESS as u64, used_at)?;
            self.queues[usize::from(i)] = Some(q);
        }
        mem.write_barrier();
        mem.write_u8(self.ctrl(CTRL_USED_ADDRESS_UPDATED), 1)?;
        self.notify(mmio, mem);
        Ok(AckWait::new(
            self.ctrl(CTRL_USED_ADDRESS_UPDATED),
            Until::Clear,
            timing,
        ))
    }

    /// Virtqueue `i`, once found.
    pub fn queue(&mut self, i: u8) -> Result<&mut DriverQueue, VirtioError> {
        self.queues
            .get_mut(usize::from(i))
            .and_then(Option::as_mut)
            .ok_or(VirtioError::NoQueue(i))
    }

    /// Drops the virtqueues (`del_vqs`).
    pub fn del_vqs(&mut self) {
        self.queues = [None, None, None, None];
    }

    /// What the host asks through `config_change`, if anything.
    pub fn config_request(&self, mem: &impl Memory) -> Result<Option<ConfigRequest>, MemError> {
        Ok(match mem.read_u8(self.ctrl(CTRL_CONFIG_CHANGE))? {
            MIC_VIRTIO_PARAM_CONFIG_CHANGED => Some(ConfigRequest::Changed),
            MIC_VIRTIO_PARAM_DEV_REMOVE => Some(ConfigRequest::Remove),
            _ => None,
        })
    }

    /// Whether the config change pending was acknowledged already (the
    /// host clears `guest_ack` before it asks for each change).
    pub fn config_acked(&self, mem: &impl Memory) -> Result<bool, MemError> {
        Ok(mem.read_u8(self.ctrl(CTRL_GUEST_ACK))? != 0)
    }

    /// Acknowledges a config change (`guest_ack = 1`).
    pub fn ack_config(&self, mem: &impl Memory) -> Result<(), MemError> {
        mem.write_u8(self.ctrl(CTRL_GUEST_ACK), 1)
    }

    /// Device reset, first half: `host_ack = 0`, `vdev_reset = 1`, ring the
    /// host; returns the wait for `host_ack`.
    pub fn begin_reset(
        &mut self,
        mmio: &impl Mmio,
        mem: &impl Memory,
        timing: AckTiming,
    ) -> Result<AckWait, MemError> {
        mem.write_u8(self.ctrl(CTRL_HOST_ACK), 0)?;
        mem.write_barrier();
        mem.write_u8(self.ctrl(CTRL_VDEV_RESET), 1)?;
        self.notify(mmio, mem);
        Ok(AckWait::new(self.ctrl(CTRL_HOST_ACK), Until::Set, timing))
    }

    /// Device reset, second half (after the wait, whatever its outcome):
    /// status 0, queues gone.
    pub fn finish_reset(&mut self, mem: &impl Memory) -> Result<(), MemError> {
        self.del_vqs();
        self.features = 0;
        mem.write_u8(self.field(DESC_STATUS), 0)
    }

    /// Hot removal, after the device was reset: give back the doorbell,
    /// acknowledge, mark the slot removed (`type = -1`), and ring the host
    /// once more so its file sees the device gone (poll's error) without
    /// waiting for anything else.
    pub fn remove(
        self,
        mmio: &impl Mmio,
        mem: &impl Memory,
        doorbells: &mut CardDoorbells,
    ) -> Result<(), MemError> {
        doorbells.free_db(self.h2c_db);
        mem.write_u8(self.ctrl(CTRL_GUEST_ACK), 1)?;
        mem.write_barrier();
        mem.write_u8(self.field(DESC_TYPE), DESC_TYPE_REMOVED as u8)?;
        self.notify(mmio, mem);
        Ok(())
    }
}
