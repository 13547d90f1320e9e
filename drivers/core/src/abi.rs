//! The user-visible ABI of the 3.13 generation: enums with their sysfs
//! strings, the device-page structures, ioctl numbers.
//!
//! Every structure is `#[repr(C, align(8))]` like the original header, with
//! compile-time checks of its size and of every field offset, and with explicit
//! little-endian `to_bytes`/`from_bytes` so no code needs to reinterpret memory.
//! The `*_OFF` / `BP_*` / `DESC_*` / `VQ_*` / `CTRL_*` / `CD_*` constants are the
//! byte offsets code uses when it touches one field of a structure that lives in
//! shared memory (the other side may be writing the neighbouring fields).

use core::mem::{offset_of, size_of};

/// `enum mic_states` of the original driver, with its sysfs strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum MicState {
    /// "offline": ready to boot.
    Offline = 0,
    /// "online": the image was handed to the bootstrap.
    Online = 1,
    /// `"shutting_down"`: shutdown requested or reported by the card.
    ShuttingDown = 2,
    /// `"reset_failed"`: the bootstrap did not come back after a reset.
    ResetFailed = 3,
}

impl MicState {
    /// Every state, in value order.
    pub const ALL: [MicState; 4] = [
        MicState::Offline,
        MicState::Online,
        MicState::ShuttingDown,
        MicState::ResetFailed,
    ];

    /// The string sysfs shows (without the trailing newline).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            MicState::Offline => "offline",
            MicState::Online => "online",
            MicState::ShuttingDown => "shutting_down",
            MicState::ResetFailed => "reset_failed",
        }
    }

    /// Parses a sysfs state string (a trailing newline is tolerated).
    #[must_use]
    pub fn from_sysfs(s: &str) -> Option<Self> {
        let s = s.strip_suffix('\n').unwrap_or(s);
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// `enum mic_status`: what the card reported about its last shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum MicStatus {
    /// "nop": nothing reported.
    Nop = 0,
    /// "crashed": the card kernel panicked.
    Crashed = 1,
    /// "halted"
    Halted = 2,
    /// "poweroff"
    PowerOff = 3,
    /// "restart": the card asked to be rebooted.
    Restart = 4,
}

impl MicStatus {
    /// Every status, in value order.
    pub const ALL: [MicStatus; 5] = [
        MicStatus::Nop,
        MicStatus::Crashed,
        MicStatus::Halted,
        MicStatus::PowerOff,
        MicStatus::Restart,
    ];

    /// The string sysfs shows (without the trailing newline).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            MicStatus::Nop => "nop",
            MicStatus::Crashed => "crashed",
            MicStatus::Halted => "halted",
            MicStatus::PowerOff => "poweroff",
            MicStatus::Restart => "restart",
        }
    }

    /// Parses a status string (a trailing newline is tolerated).
    #[must_use]
    pub fn from_sysfs(s: &str) -> Option<Self> {
        let s = s.strip_suffix('\n').unwrap_or(s);
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// Decodes the byte the card wrote into `bootparam.shutdown_status`.
    #[must_use]
    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(MicStatus::Nop),
            1 => Some(MicStatus::Crashed),
            2 => Some(MicStatus::Halted),
            3 => Some(MicStatus::PowerOff),
            4 => Some(MicStatus::Restart),
            _ => None,
        }
    }
}

/// The `bootmode` attribute: "linux" loads image, cmdline and ramdisk; "elf"
/// loads the image only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BootMode {
    /// "linux"
    Linux,
    /// "elf"
    Elf,
}

impl BootMode {
    /// The string sysfs shows.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            BootMode::Linux => "linux",
            BootMode::Elf => "elf",
        }
    }

    /// Parses a `bootmode` write (a trailing newline is tolerated).
    #[must_use]
    pub fn from_sysfs(s: &str) -> Option<Self> {
        match s.strip_suffix('\n').unwrap_or(s) {
            "linux" => Some(BootMode::Linux),
            "elf" => Some(BootMode::Elf),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------
// Constants
// ---------------------------------------------------------------------------

/// Bootparam magic (`MIC_MAGIC`); also the base of the vring-info debug cookie.
pub const MIC_MAGIC: u32 = 0xC0FF_EE00;
/// Size of the device page (bootparam + descriptors).
pub const MIC_DP_SIZE: usize = 4096;
/// Alignment between the avail and used parts of a vring.
pub const MIC_VIRTIO_RING_ALIGN: usize = 4096;
/// Maximum number of virtqueues per device.
pub const MIC_MAX_VRINGS: u8 = 4;
/// Number of entries per vring used by the daemon.
pub const MIC_VRING_ENTRIES: u16 = 128;
/// Maximum `num` accepted for a vring.
pub const MIC_MAX_VRING_ENTRIES: u16 = 128;
/// Maximum 8-aligned size of descriptor + vqconfigs + features + config.
pub const MIC_MAX_DESC_BLK_SIZE: usize = 256;
/// Scratchpad holding the low 32 bits of the device page's card address.
pub const MIC_DPLO_SPAD: u8 = 14;
/// Scratchpad holding the high 32 bits of the device page's card address.
pub const MIC_DPHI_SPAD: u8 = 15;
/// `device_ctrl.config_change`: the host asks the card to remove the device.
pub const MIC_VIRTIO_PARAM_DEV_REMOVE: u8 = 0x1;
/// `device_ctrl.config_change`: the host changed the config space.
pub const MIC_VIRTIO_PARAM_CONFIG_CHANGED: u8 = 0x2;
/// `device_desc.type` value ending the device list.
pub const DESC_TYPE_END: i8 = 0;
/// `device_desc.type` value of a removed (reusable) slot.
pub const DESC_TYPE_REMOVED: i8 = -1;
/// Doorbell value meaning "none published" in the bootparam and `device_ctrl`.
pub const DB_NONE: i8 = -1;

/// Rounds `a` up to a multiple of `x` (a power of two), like `__mic_align`.
/// Saturates instead of overflowing; `x == 0` returns `a` unchanged.
#[must_use]
pub const fn mic_align(a: usize, x: usize) -> usize {
    if x == 0 {
        return a;
    }
    let mask = x - 1;
    match a.checked_add(mask) {
        Some(v) => v & !mask,
        None => usize::MAX & !mask,
    }
}

// ---------------------------------------------------------------------------
// struct mic_bootparam (original 16-byte layout)
// ---------------------------------------------------------------------------

/// `struct mic_bootparam`: the first 16 bytes of the device page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C, align(8))]
pub struct MicBootparam {
    /// [`MIC_MAGIC`], written by the host.
    pub magic: u32,
    /// Doorbell the card rings to report shutdown/crash (host chooses).
    pub c2h_shutdown_db: i8,
    /// Doorbell the host rings to request shutdown (card publishes, -1 = none).
    pub h2c_shutdown_db: i8,
    /// Doorbell the host rings on virtio config changes (card publishes).
    pub h2c_config_db: i8,
    /// `MicStatus` value reported by the card.
    pub shutdown_status: u8,
    /// Set to 1 by the host to ask the card to shut down.
    pub shutdown_card: u8,
}

/// Byte offset of `mic_bootparam.magic`.
pub const BP_MAGIC: usize = 0;
/// Byte offset of `mic_bootparam.c2h_shutdown_db`.
pub const BP_C2H_SHUTDOWN_DB: usize = 4;
/// Byte offset of `mic_bootparam.h2c_shutdown_db`.
pub const BP_H2C_SHUTDOWN_DB: usize = 5;
/// Byte offset of `mic_bootparam.h2c_config_db`.
pub const BP_H2C_CONFIG_DB: usize = 6;
/// Byte offset of `mic_bootparam.shutdown_status`.
pub const BP_SHUTDOWN_STATUS: usize = 7;
/// Byte offset of `mic_bootparam.shutdown_card`.
pub const BP_SHUTDOWN_CARD: usize = 8;

const _: () = {
    assert!(size_of::<MicBootparam>() == 16);
    assert!(MicBootparam::SIZE == 16);
    assert!(offset_of!(MicBootparam, magic) == BP_MAGIC);
    assert!(offset_of!(MicBootparam, c2h_shutdown_db) == BP_C2H_SHUTDOWN_DB);
    assert!(offset_of!(MicBootparam, h2c_shutdown_db) == BP_H2C_SHUTDOWN_DB);
    assert!(offset_of!(MicBootparam, h2c_config_db) == BP_H2C_CONFIG_DB);
    assert!(offset_of!(MicBootparam, shutdown_status) == BP_SHUTDOWN_STATUS);
    assert!(offset_of!(MicBootparam, shutdown_card) == BP_SHUTDOWN_CARD);
};

impl MicBootparam {
    /// Size on the wire.
    pub const SIZE: usize = size_of::<Self>();

    /// The bootparam the host writes at probe and after every reset.
    #[must_use]
    pub const fn host_initial(c2h_shutdown_db: i8) -> Self {
        Self {
            magic: MIC_MAGIC,
            c2h_shutdown_db,
            h2c_shutdown_db: DB_NONE,
            h2c_config_db: DB_NONE,
            shutdown_status: 0,
            shutdown_card: 0,
        }
    }

    /// Little-endian encoding (padding bytes are zero).
    #[must_use]
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        put(&mut b, BP_MAGIC, &self.magic.to_le_bytes());
        b[BP_C2H_SHUTDOWN_DB] = self.c2h_shutdown_db as u8;
        b[BP_H2C_SHUTDOWN_DB] = self.h2c_shutdown_db as u8;
        b[BP_H2C_CONFIG_DB] = self.h2c_config_db as u8;
        b[BP_SHUTDOWN_STATUS] = self.shutdown_status;
        b[BP_SHUTDOWN_CARD] = self.shutdown_card;
        b
    }

    /// Decodes the first [`Self::SIZE`] bytes of `b`, if it has that many.
    #[must_use]
    pub fn from_slice(b: &[u8]) -> Option<Self> {
        b.get(..Self::SIZE)?.try_into().ok().map(Self::from_bytes)
    }

    /// Decodes the little-endian encoding.
    #[must_use]
    pub fn from_bytes(b: &[u8; Self::SIZE]) -> Self {
        Self {
            magic: le32(b, BP_MAGIC),
            c2h_shutdown_db: b[BP_C2H_SHUTDOWN_DB] as i8,
            h2c_shutdown_db: b[BP_H2C_SHUTDOWN_DB] as i8,
            h2c_config_db: b[BP_H2C_CONFIG_DB] as i8,
            shutdown_status: b[BP_SHUTDOWN_STATUS],
            shutdown_card: b[BP_SHUTDOWN_CARD],
        }
    }
}

// ---------------------------------------------------------------------------
// struct mic_device_desc
// ---------------------------------------------------------------------------

/// `struct mic_device_desc`: the 8-byte header of one virtio device's block.
/// The variable tail (vqconfigs, features ×2, config) follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C, align(8))]
pub struct MicDeviceDesc {
    /// Virtio device ID; [`DESC_TYPE_END`] ends the list, [`DESC_TYPE_REMOVED`] is a free slot.
    pub ty: i8,
    /// Number of virtqueues (≤ [`MIC_MAX_VRINGS`]).
    pub num_vq: u8,
    /// Bytes of feature bits (the block holds twice this: host, then guest).
    pub feature_len: u8,
    /// Bytes of virtio config space.
    pub config_len: u8,
    /// Virtio status byte, written by the card.
    pub status: u8,
}

/// Byte offset of `mic_device_desc.type`.
pub const DESC_TYPE: usize = 0;
/// Byte offset of `mic_device_desc.num_vq`.
pub const DESC_NUM_VQ: usize = 1;
/// Byte offset of `mic_device_desc.feature_len`.
pub const DESC_FEATURE_LEN: usize = 2;
/// Byte offset of `mic_device_desc.config_len`.
pub const DESC_CONFIG_LEN: usize = 3;
/// Byte offset of `mic_device_desc.status`.
pub const DESC_STATUS: usize = 4;
/// Byte offset of `mic_device_desc.config[0]`: where the variable tail starts.
pub const DESC_TAIL: usize = 8;

const _: () = {
    assert!(size_of::<MicDeviceDesc>() == 8);
    assert!(MicDeviceDesc::SIZE == DESC_TAIL);
    assert!(offset_of!(MicDeviceDesc, ty) == DESC_TYPE);
    assert!(offset_of!(MicDeviceDesc, num_vq) == DESC_NUM_VQ);
    assert!(offset_of!(MicDeviceDesc, feature_len) == DESC_FEATURE_LEN);
    assert!(offset_of!(MicDeviceDesc, config_len) == DESC_CONFIG_LEN);
    assert!(offset_of!(MicDeviceDesc, status) == DESC_STATUS);
};

impl MicDeviceDesc {
    /// Size of the header on the wire.
    pub const SIZE: usize = size_of::<Self>();

    /// Little-endian encoding (padding bytes are zero).
    #[must_use]
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        b[DESC_TYPE] = self.ty as u8;
        b[DESC_NUM_VQ] = self.num_vq;
        b[DESC_FEATURE_LEN] = self.feature_len;
        b[DESC_CONFIG_LEN] = self.config_len;
        b[DESC_STATUS] = self.status;
        b
    }

    /// Decodes the first [`Self::SIZE`] bytes of `b`, if it has that many.
    #[must_use]
    pub fn from_slice(b: &[u8]) -> Option<Self> {
        b.get(..Self::SIZE)?.try_into().ok().map(Self::from_bytes)
    }

    /// Decodes the little-endian encoding.
    #[must_use]
    pub fn from_bytes(b: &[u8; Self::SIZE]) -> Self {
        Self {
            ty: b[DESC_TYPE] as i8,
            num_vq: b[DESC_NUM_VQ],
            feature_len: b[DESC_FEATURE_LEN],
            config_len: b[DESC_CONFIG_LEN],
            status: b[DESC_STATUS],
        }
    }

    /// Offset of vqconfig `i` from the start of the descriptor.
    #[must_use]
    pub const fn vq_offset(&self, i: usize) -> usize {
        DESC_TAIL + i * MicVqconfig::SIZE
    }

    /// Offset of the host feature bytes from the start of the descriptor
    /// (`mic_vq_features`); the guest-acked bytes follow `feature_len` later.
    #[must_use]
    pub const fn features_offset(&self) -> usize {
        self.vq_offset(self.num_vq as usize)
    }

    /// Offset of the guest-acked feature bytes from the start of the descriptor.
    #[must_use]
    pub const fn guest_features_offset(&self) -> usize {
        self.features_offset() + self.feature_len as usize
    }

    /// Offset of the config space from the start of the descriptor
    /// (`mic_vq_configspace`).
    #[must_use]
    pub const fn config_offset(&self) -> usize {
        self.features_offset() + 2 * self.feature_len as usize
    }

    /// Offset of the `mic_device_ctrl` from the start of the descriptor.
    #[must_use]
    pub const fn ctrl_offset(&self) -> usize {
        aligned_desc_size(self)
    }
}

/// `mic_desc_size`: `8 + num_vq * 24 + 2 * feature_len + config_len` (at most 6896,
/// so it never overflows).
#[must_use]
pub const fn desc_size(d: &MicDeviceDesc) -> usize {
    DESC_TAIL + d.num_vq as usize * MicVqconfig::SIZE + 2 * d.feature_len as usize + d.config_len as usize
}

/// `mic_aligned_desc_size`: [`desc_size`] rounded up to 8.
#[must_use]
pub const fn aligned_desc_size(d: &MicDeviceDesc) -> usize {
    mic_align(desc_size(d), 8)
}

/// `mic_total_desc_size`: [`aligned_desc_size`] plus the 16-byte `device_ctrl`;
/// the step between descriptors in the device page.
#[must_use]
pub const fn total_desc_size(d: &MicDeviceDesc) -> usize {
    aligned_desc_size(d) + MicDeviceCtrl::SIZE
}

// ---------------------------------------------------------------------------
// struct mic_vqconfig
// ---------------------------------------------------------------------------

/// `struct mic_vqconfig`: where one virtqueue's rings live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C, align(8))]
pub struct MicVqconfig {
    /// Card-visible address of the ring block (desc + avail + info), host allocated.
    pub address: u64,
    /// Card physical address of the used ring after the card re-homed it.
    pub used_address: u64,
    /// Number of ring entries (≤ [`MIC_MAX_VRING_ENTRIES`]).
    pub num: u16,
}

/// Byte offset of `mic_vqconfig.address`.
pub const VQ_ADDRESS: usize = 0;
/// Byte offset of `mic_vqconfig.used_address`.
pub const VQ_USED_ADDRESS: usize = 8;
/// Byte offset of `mic_vqconfig.num`.
pub const VQ_NUM: usize = 16;

const _: () = {
    assert!(size_of::<MicVqconfig>() == 24);
    assert!(offset_of!(MicVqconfig, address) == VQ_ADDRESS);
    assert!(offset_of!(MicVqconfig, used_address) == VQ_USED_ADDRESS);
    assert!(offset_of!(MicVqconfig, num) == VQ_NUM);
};

impl MicVqconfig {
    /// Size on the wire.
    pub const SIZE: usize = size_of::<Self>();

    /// Little-endian encoding (padding bytes are zero).
    #[must_use]
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        put(&mut b, VQ_ADDRESS, &self.address.to_le_bytes());
        put(&mut b, VQ_USED_ADDRESS, &self.used_address.to_le_bytes());
        put(&mut b, VQ_NUM, &self.num.to_le_bytes());
        b
    }

    /// Decodes the first [`Self::SIZE`] bytes of `b`, if it has that many.
    #[must_use]
    pub fn from_slice(b: &[u8]) -> Option<Self> {
        b.get(..Self::SIZE)?.try_into().ok().map(Self::from_bytes)
    }

    /// Decodes the little-endian encoding.
    #[must_use]
    pub fn from_bytes(b: &[u8; Self::SIZE]) -> Self {
        Self {
            address: le64(b, VQ_ADDRESS),
            used_address: le64(b, VQ_USED_ADDRESS),
            num: le16(b, VQ_NUM),
        }
    }
}

// ---------------------------------------------------------------------------
// struct mic_device_ctrl
// ---------------------------------------------------------------------------

/// `struct mic_device_ctrl`: per-device control block after the 8-aligned
/// descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C, align(8))]
pub struct MicDeviceCtrl {
    /// Opaque card pointer to its per-device structure.
    pub vdev: u64,
    /// Host command: 0, [`MIC_VIRTIO_PARAM_DEV_REMOVE`] or [`MIC_VIRTIO_PARAM_CONFIG_CHANGED`].
    pub config_change: u8,
    /// Card: 1 = the card reset this device.
    pub vdev_reset: u8,
    /// Card: 1 = `config_change` processed.
    pub guest_ack: u8,
    /// Host: 1 = `vdev_reset` processed.
    pub host_ack: u8,
    /// Card sets 1 after writing used-ring addresses; host clears it.
    pub used_address_updated: u8,
    /// Doorbell the card rings to notify the host (host chooses, -1 = none).
    pub c2h_vdev_db: i8,
    /// Doorbell the host rings to notify the card (card chooses, -1 = none).
    pub h2c_vdev_db: i8,
}

/// Byte offset of `mic_device_ctrl.vdev`.
pub const CTRL_VDEV: usize = 0;
/// Byte offset of `mic_device_ctrl.config_change`.
pub const CTRL_CONFIG_CHANGE: usize = 8;
/// Byte offset of `mic_device_ctrl.vdev_reset`.
pub const CTRL_VDEV_RESET: usize = 9;
/// Byte offset of `mic_device_ctrl.guest_ack`.
pub const CTRL_GUEST_ACK: usize = 10;
/// Byte offset of `mic_device_ctrl.host_ack`.
pub const CTRL_HOST_ACK: usize = 11;
/// Byte offset of `mic_device_ctrl.used_address_updated`.
pub const CTRL_USED_ADDRESS_UPDATED: usize = 12;
/// Byte offset of `mic_device_ctrl.c2h_vdev_db`.
pub const CTRL_C2H_VDEV_DB: usize = 13;
/// Byte offset of `mic_device_ctrl.h2c_vdev_db`.
pub const CTRL_H2C_VDEV_DB: usize = 14;

const _: () = {
    assert!(size_of::<MicDeviceCtrl>() == 16);
    assert!(offset_of!(MicDeviceCtrl, vdev) == CTRL_VDEV);
    assert!(offset_of!(MicDeviceCtrl, config_change) == CTRL_CONFIG_CHANGE);
    assert!(offset_of!(MicDeviceCtrl, vdev_reset) == CTRL_VDEV_RESET);
    assert!(offset_of!(MicDeviceCtrl, guest_ack) == CTRL_GUEST_ACK);
    assert!(offset_of!(MicDeviceCtrl, host_ack) == CTRL_HOST_ACK);
    assert!(offset_of!(MicDeviceCtrl, used_address_updated) == CTRL_USED_ADDRESS_UPDATED);
    assert!(offset_of!(MicDeviceCtrl, c2h_vdev_db) == CTRL_C2H_VDEV_DB);
    assert!(offset_of!(MicDeviceCtrl, h2c_vdev_db) == CTRL_H2C_VDEV_DB);
};

impl MicDeviceCtrl {
    /// Size on the wire.
    pub const SIZE: usize = size_of::<Self>();

    /// The control block the host writes when it adds a device: all zero,
    /// both doorbells -1.
    #[must_use]
    pub const fn host_initial() -> Self {
        Self {
            vdev: 0,
            config_change: 0,
            vdev_reset: 0,
            guest_ack: 0,
            host_ack: 0,
            used_address_updated: 0,
            c2h_vdev_db: DB_NONE,
            h2c_vdev_db: DB_NONE,
        }
    }

    /// Little-endian encoding (padding bytes are zero).
    #[must_use]
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        put(&mut b, CTRL_VDEV, &self.vdev.to_le_bytes());
        b[CTRL_CONFIG_CHANGE] = self.config_change;
        b[CTRL_VDEV_RESET] = self.vdev_reset;
        b[CTRL_GUEST_ACK] = self.guest_ack;
        b[CTRL_HOST_ACK] = self.host_ack;
        b[CTRL_USED_ADDRESS_UPDATED] = self.used_address_updated;
        b[CTRL_C2H_VDEV_DB] = self.c2h_vdev_db as u8;
        b[CTRL_H2C_VDEV_DB] = self.h2c_vdev_db as u8;
        b
    }

    /// Decodes the first [`Self::SIZE`] bytes of `b`, if it has that many.
    #[must_use]
    pub fn from_slice(b: &[u8]) -> Option<Self> {
        b.get(..Self::SIZE)?.try_into().ok().map(Self::from_bytes)
    }

    /// Decodes the little-endian encoding.
    #[must_use]
    pub fn from_bytes(b: &[u8; Self::SIZE]) -> Self {
        Self {
            vdev: le64(b, CTRL_VDEV),
            config_change: b[CTRL_CONFIG_CHANGE],
            vdev_reset: b[CTRL_VDEV_RESET],
            guest_ack: b[CTRL_GUEST_ACK],
            host_ack: b[CTRL_HOST_ACK],
            used_address_updated: b[CTRL_USED_ADDRESS_UPDATED],
            c2h_vdev_db: b[CTRL_C2H_VDEV_DB] as i8,
            h2c_vdev_db: b[CTRL_H2C_VDEV_DB] as i8,
        }
    }
}

// ---------------------------------------------------------------------------
// struct _mic_vring_info
// ---------------------------------------------------------------------------

/// `struct _mic_vring_info`: trailer of a host-allocated vring block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C)]
pub struct MicVringInfo {
    /// Host's last consumed avail index.
    pub avail_idx: u16,
    /// Debug cookie `MIC_MAGIC + type + vq index`.
    pub magic: u32,
}

/// Byte offset of `_mic_vring_info.avail_idx`.
pub const VRI_AVAIL_IDX: usize = 0;
/// Byte offset of `_mic_vring_info.magic`.
pub const VRI_MAGIC: usize = 4;

const _: () = {
    assert!(size_of::<MicVringInfo>() == 8);
    assert!(offset_of!(MicVringInfo, avail_idx) == VRI_AVAIL_IDX);
    assert!(offset_of!(MicVringInfo, magic) == VRI_MAGIC);
};

impl MicVringInfo {
    /// Size on the wire.
    pub const SIZE: usize = size_of::<Self>();

    /// Little-endian encoding.
    #[must_use]
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        put(&mut b, VRI_AVAIL_IDX, &self.avail_idx.to_le_bytes());
        put(&mut b, VRI_MAGIC, &self.magic.to_le_bytes());
        b
    }

    /// Decodes the first [`Self::SIZE`] bytes of `b`, if it has that many.
    #[must_use]
    pub fn from_slice(b: &[u8]) -> Option<Self> {
        b.get(..Self::SIZE)?.try_into().ok().map(Self::from_bytes)
    }

    /// Decodes the little-endian encoding.
    #[must_use]
    pub fn from_bytes(b: &[u8; Self::SIZE]) -> Self {
        Self {
            avail_idx: le16(b, VRI_AVAIL_IDX),
            magic: le32(b, VRI_MAGIC),
        }
    }

    /// The magic the host writes for vq `index` of a device of type `ty`.
    #[must_use]
    pub const fn magic_for(ty: i8, index: u8) -> u32 {
        MIC_MAGIC
            .wrapping_add(ty as i32 as u32)
            .wrapping_add(index as u32)
    }
}

/// `vring_size(num, align)` of the legacy virtio layout: desc table, avail
/// ring (with `used_event`), padding to `align`, used ring (with `avail_event`).
/// `align` must be a power of two.
#[must_use]
pub const fn vring_size(num: u16, align: usize) -> usize {
    let num = num as usize;
    mic_align(16 * num + 2 * (3 + num), align) + 2 * 3 + 8 * num
}

// ---------------------------------------------------------------------------
// struct mic_copy_desc and ioctls
// ---------------------------------------------------------------------------

/// `struct mic_copy_desc` (64-bit user-space layout; `iov` is the user pointer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C, align(8))]
pub struct MicCopyDesc {
    /// User address of the iovec array.
    pub iov: u64,
    /// Number of iovecs.
    pub iovcnt: u32,
    /// Vring index within the device.
    pub vr_idx: u8,
    /// Non-zero: complete the chain (add a used entry) after copying.
    pub update_used: u8,
    /// Out: bytes moved.
    pub out_len: u32,
}

/// Byte offset of `mic_copy_desc.iov`.
pub const CD_IOV: usize = 0;
/// Byte offset of `mic_copy_desc.iovcnt`.
pub const CD_IOVCNT: usize = 8;
/// Byte offset of `mic_copy_desc.vr_idx`.
pub const CD_VR_IDX: usize = 12;
/// Byte offset of `mic_copy_desc.update_used`.
pub const CD_UPDATE_USED: usize = 13;
/// Byte offset of `mic_copy_desc.out_len`.
pub const CD_OUT_LEN: usize = 16;

const _: () = {
    assert!(size_of::<MicCopyDesc>() == 24);
    assert!(offset_of!(MicCopyDesc, iov) == CD_IOV);
    assert!(offset_of!(MicCopyDesc, iovcnt) == CD_IOVCNT);
    assert!(offset_of!(MicCopyDesc, vr_idx) == CD_VR_IDX);
    assert!(offset_of!(MicCopyDesc, update_used) == CD_UPDATE_USED);
    assert!(offset_of!(MicCopyDesc, out_len) == CD_OUT_LEN);
};

impl MicCopyDesc {
    /// Size on the wire.
    pub const SIZE: usize = size_of::<Self>();

    /// Little-endian encoding (padding bytes are zero).
    #[must_use]
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        put(&mut b, CD_IOV, &self.iov.to_le_bytes());
        put(&mut b, CD_IOVCNT, &self.iovcnt.to_le_bytes());
        b[CD_VR_IDX] = self.vr_idx;
        b[CD_UPDATE_USED] = self.update_used;
        put(&mut b, CD_OUT_LEN, &self.out_len.to_le_bytes());
        b
    }

    /// Decodes the first [`Self::SIZE`] bytes of `b`, if it has that many.
    #[must_use]
    pub fn from_slice(b: &[u8]) -> Option<Self> {
        b.get(..Self::SIZE)?.try_into().ok().map(Self::from_bytes)
    }

    /// Decodes the little-endian encoding.
    #[must_use]
    pub fn from_bytes(b: &[u8; Self::SIZE]) -> Self {
        Self {
            iov: le64(b, CD_IOV),
            iovcnt: le32(b, CD_IOVCNT),
            vr_idx: b[CD_VR_IDX],
            update_used: b[CD_UPDATE_USED],
            out_len: le32(b, CD_OUT_LEN),
        }
    }
}

/// ioctl type letter of the MIC virtio ioctls (`'s'`).
pub const MIC_IOCTL_TYPE: u8 = b's';
/// Argument size encoded in the ioctl numbers: the size of a user pointer on
/// 64-bit user space (the macros name pointer types).
pub const MIC_IOCTL_ARG_SIZE: u32 = 8;

/// `_IOWR(ty, nr, size)` of the asm-generic ioctl encoding
/// (dir 3 in bits 31:30, size in 29:16, type in 15:8, nr in 7:0).
#[must_use]
pub const fn iowr(ty: u8, nr: u8, size: u32) -> u32 {
    (3 << 30) | ((size & 0x3FFF) << 16) | ((ty as u32) << 8) | nr as u32
}

/// `MIC_VIRTIO_ADD_DEVICE`: argument = a complete descriptor block.
pub const MIC_VIRTIO_ADD_DEVICE: u32 = iowr(MIC_IOCTL_TYPE, 1, MIC_IOCTL_ARG_SIZE);
/// `MIC_VIRTIO_COPY_DESC`: argument = `struct mic_copy_desc`.
pub const MIC_VIRTIO_COPY_DESC: u32 = iowr(MIC_IOCTL_TYPE, 2, MIC_IOCTL_ARG_SIZE);
/// `MIC_VIRTIO_CONFIG_CHANGE`: argument = `config_len` bytes of config space.
pub const MIC_VIRTIO_CONFIG_CHANGE: u32 = iowr(MIC_IOCTL_TYPE, 5, MIC_IOCTL_ARG_SIZE);

const _: () = {
    assert!(MIC_VIRTIO_ADD_DEVICE == 0xC008_7301);
    assert!(MIC_VIRTIO_COPY_DESC == 0xC008_7302);
    assert!(MIC_VIRTIO_CONFIG_CHANGE == 0xC008_7305);
};

// ---------------------------------------------------------------------------
// little-endian helpers
// ---------------------------------------------------------------------------

fn put(b: &mut [u8], off: usize, v: &[u8]) {
    b[off..off + v.len()].copy_from_slice(v);
}

fn le16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

fn le32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

fn le64(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_strings_round_trip() {
        for s in MicState::ALL {
            assert_eq!(MicState::from_sysfs(s.as_str()), Some(s));
        }
        assert_eq!(MicState::from_sysfs("online\n"), Some(MicState::Online));
        assert_eq!(MicState::from_sysfs("ready"), None);
        for s in MicStatus::ALL {
            assert_eq!(MicStatus::from_sysfs(s.as_str()), Some(s));
            assert_eq!(MicStatus::from_u8(s as u8), Some(s));
        }
        assert_eq!(MicStatus::from_u8(5), None);
        assert_eq!(BootMode::from_sysfs("elf\n"), Some(BootMode::Elf));
        assert_eq!(BootMode::from_sysfs("flash"), None);
    }

    #[test]
    fn bootparam_encoding() {
        let bp = MicBootparam::host_initial(0);
        let b = bp.to_bytes();
        assert_eq!(
            b,
            [0x00, 0xEE, 0xFF, 0xC0, 0, 0xFF, 0xFF, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(MicBootparam::from_bytes(&b), bp);
        let bp2 = MicBootparam {
            magic: 1,
            c2h_shutdown_db: 3,
            h2c_shutdown_db: 7,
            h2c_config_db: -1,
            shutdown_status: 4,
            shutdown_card: 1,
        };
        let b2 = bp2.to_bytes();
        assert_eq!(b2[BP_SHUTDOWN_CARD], 1);
        assert_eq!(b2[BP_SHUTDOWN_STATUS], 4);
        assert_eq!(MicBootparam::from_bytes(&b2), bp2);
        let mut page = [0u8; 64];
        page[..16].copy_from_slice(&b2);
        assert_eq!(MicBootparam::from_slice(&page), Some(bp2));
        assert_eq!(MicBootparam::from_slice(&page[..15]), None);
        assert_eq!(MicDeviceDesc::from_slice(&page[..8]).unwrap().num_vq, 0);
        assert!(MicVqconfig::from_slice(&page).is_some());
        assert!(MicDeviceCtrl::from_slice(&page).is_some());
        assert!(MicVringInfo::from_slice(&page).is_some());
        assert!(MicCopyDesc::from_slice(&page[..23]).is_none());
    }

    #[test]
    fn desc_sizes() {
        // console: 2 vqs, 4 feature bytes, 8 config bytes.
        let d = MicDeviceDesc {
            ty: 3,
            num_vq: 2,
            feature_len: 4,
            config_len: 8,
            status: 0,
        };
        assert_eq!(desc_size(&d), 8 + 48 + 8 + 8);
        assert_eq!(aligned_desc_size(&d), 72);
        assert_eq!(total_desc_size(&d), 88);
        assert_eq!(d.vq_offset(1), 32);
        assert_eq!(d.features_offset(), 56);
        assert_eq!(d.guest_features_offset(), 60);
        assert_eq!(d.config_offset(), 64);
        assert_eq!(d.ctrl_offset(), 72);
        let odd = MicDeviceDesc { config_len: 1, ..d };
        assert_eq!(desc_size(&odd), 65);
        assert_eq!(aligned_desc_size(&odd), 72);
        let max = MicDeviceDesc {
            ty: 1,
            num_vq: 255,
            feature_len: 255,
            config_len: 255,
            status: 0,
        };
        assert_eq!(desc_size(&max), 8 + 255 * 24 + 510 + 255);
        assert_eq!(MicDeviceDesc::from_bytes(&d.to_bytes()), d);
    }

    #[test]
    fn struct_round_trips() {
        let vq = MicVqconfig {
            address: 0x80_0000_1000,
            used_address: 0x1234_5678_9ABC,
            num: 128,
        };
        let b = vq.to_bytes();
        assert_eq!(&b[16..18], &[128, 0]);
        assert_eq!(&b[18..], &[0; 6]);
        assert_eq!(MicVqconfig::from_bytes(&b), vq);

        let ctrl = MicDeviceCtrl {
            vdev: 0xFFFF_8800_0000_1234,
            config_change: MIC_VIRTIO_PARAM_CONFIG_CHANGED,
            vdev_reset: 1,
            guest_ack: 1,
            host_ack: 1,
            used_address_updated: 1,
            c2h_vdev_db: 2,
            h2c_vdev_db: 9,
        };
        assert_eq!(MicDeviceCtrl::from_bytes(&ctrl.to_bytes()), ctrl);
        let init = MicDeviceCtrl::host_initial().to_bytes();
        assert_eq!(init[CTRL_C2H_VDEV_DB], 0xFF);
        assert_eq!(init[CTRL_H2C_VDEV_DB], 0xFF);
        assert_eq!(init[15], 0);

        let cd = MicCopyDesc {
            iov: 0x7FFF_0000_1000,
            iovcnt: 2,
            vr_idx: 1,
            update_used: 1,
            out_len: 65_600,
        };
        let b = cd.to_bytes();
        assert_eq!(&b[14..16], &[0, 0]);
        assert_eq!(MicCopyDesc::from_bytes(&b), cd);

        let vi = MicVringInfo {
            avail_idx: 7,
            magic: MicVringInfo::magic_for(3, 1),
        };
        assert_eq!(vi.magic, 0xC0FF_EE04);
        assert_eq!(MicVringInfo::from_bytes(&vi.to_bytes()), vi);
        assert_eq!(MicVringInfo::magic_for(-1, 0), 0xC0FF_EDFF);
    }

    #[test]
    fn ioctl_numbers_and_align() {
        assert_eq!(iowr(b's', 1, 4), 0xC004_7301);
        assert_eq!(MIC_VIRTIO_COPY_DESC, 0xC008_7302);
        assert_eq!(mic_align(0, 8), 0);
        assert_eq!(mic_align(9, 8), 16);
        assert_eq!(mic_align(9, 0), 9);
        assert_eq!(mic_align(usize::MAX, 8), usize::MAX & !7);
        assert_eq!(vring_size(128, MIC_VIRTIO_RING_ALIGN), 5126);
    }
}
