//! The user-visible ABI of the 3.13 generation: enums with their sysfs
//! strings, the device-page structures, ioctl numbers.
//!
//! Every structure is declared once with [`layout::abi_struct!`]: that gives
//! the `#[repr(C)]` type (aligned like the original header), compile-time
//! checks of its size and of every field offset, explicit little-endian
//! `to_bytes`/`from_bytes` so no code needs to reinterpret memory, and the
//! `BP_*` / `DESC_*` / `VQ_*` / `CTRL_*` / `VRI_*` / `CD_*` byte-offset constants
//! code uses when it touches one field of a structure that lives in shared
//! memory (the other side may be writing the neighbouring fields).
//!
//! [`virtio`] holds the virtio layouts the devices use (split ring, net,
//! block, console), declared the same way.

pub mod emu_dev;
pub mod layout;
pub mod virtio;

use layout::abi_struct;

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

abi_struct! {
    /// `struct mic_bootparam`: the first 16 bytes of the device page.
    pub struct MicBootparam: size 16, repr(C, align(8)) {
        /// [`MIC_MAGIC`], written by the host.
        magic: u32 => BP_MAGIC = 0,
        /// Doorbell the card rings to report shutdown/crash (host chooses).
        c2h_shutdown_db: i8 => BP_C2H_SHUTDOWN_DB = 4,
        /// Doorbell the host rings to request shutdown (card publishes, -1 = none).
        h2c_shutdown_db: i8 => BP_H2C_SHUTDOWN_DB = 5,
        /// Doorbell the host rings on virtio config changes (card publishes).
        h2c_config_db: i8 => BP_H2C_CONFIG_DB = 6,
        /// `MicStatus` value reported by the card.
        shutdown_status: u8 => BP_SHUTDOWN_STATUS = 7,
        /// Set to 1 by the host to ask the card to shut down.
        shutdown_card: u8 => BP_SHUTDOWN_CARD = 8,
    }
}

impl MicBootparam {
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
}

// ---------------------------------------------------------------------------
// struct mic_device_desc
// ---------------------------------------------------------------------------

abi_struct! {
    /// `struct mic_device_desc`: the 8-byte header of one virtio device's block.
    /// The variable tail (vqconfigs, features ×2, config) follows it at
    /// [`DESC_TAIL`].
    pub struct MicDeviceDesc: size 8, repr(C, align(8)) {
        /// Virtio device ID; [`DESC_TYPE_END`] ends the list, [`DESC_TYPE_REMOVED`] is a free slot.
        ty: i8 => DESC_TYPE = 0,
        /// Number of virtqueues (≤ [`MIC_MAX_VRINGS`]).
        num_vq: u8 => DESC_NUM_VQ = 1,
        /// Bytes of feature bits (the block holds twice this: host, then guest).
        feature_len: u8 => DESC_FEATURE_LEN = 2,
        /// Bytes of virtio config space.
        config_len: u8 => DESC_CONFIG_LEN = 3,
        /// Virtio status byte, written by the card.
        status: u8 => DESC_STATUS = 4,
    }
}

/// Byte offset of `mic_device_desc.config[0]`: where the variable tail starts.
pub const DESC_TAIL: usize = MicDeviceDesc::SIZE;

impl MicDeviceDesc {
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

abi_struct! {
    /// `struct mic_vqconfig`: where one virtqueue's rings live.
    pub struct MicVqconfig: size 24, repr(C, align(8)) {
        /// Card-visible address of the ring block (desc + avail + info), host allocated.
        address: u64 => VQ_ADDRESS = 0,
        /// Card physical address of the used ring after the card re-homed it.
        used_address: u64 => VQ_USED_ADDRESS = 8,
        /// Number of ring entries (≤ [`MIC_MAX_VRING_ENTRIES`]).
        num: u16 => VQ_NUM = 16,
    }
}

// ---------------------------------------------------------------------------
// struct mic_device_ctrl
// ---------------------------------------------------------------------------

abi_struct! {
    /// `struct mic_device_ctrl`: per-device control block after the 8-aligned
    /// descriptor.
    pub struct MicDeviceCtrl: size 16, repr(C, align(8)) {
        /// Opaque card pointer to its per-device structure.
        vdev: u64 => CTRL_VDEV = 0,
        /// Host command: 0, [`MIC_VIRTIO_PARAM_DEV_REMOVE`] or [`MIC_VIRTIO_PARAM_CONFIG_CHANGED`].
        config_change: u8 => CTRL_CONFIG_CHANGE = 8,
        /// Card: 1 = the card reset this device.
        vdev_reset: u8 => CTRL_VDEV_RESET = 9,
        /// Card: 1 = `config_change` processed.
        guest_ack: u8 => CTRL_GUEST_ACK = 10,
        /// Host: 1 = `vdev_reset` processed.
        host_ack: u8 => CTRL_HOST_ACK = 11,
        /// Card sets 1 after writing used-ring addresses; host clears it.
        used_address_updated: u8 => CTRL_USED_ADDRESS_UPDATED = 12,
        /// Doorbell the card rings to notify the host (host chooses, -1 = none).
        c2h_vdev_db: i8 => CTRL_C2H_VDEV_DB = 13,
        /// Doorbell the host rings to notify the card (card chooses, -1 = none).
        h2c_vdev_db: i8 => CTRL_H2C_VDEV_DB = 14,
    }
}

impl MicDeviceCtrl {
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
}

// ---------------------------------------------------------------------------
// struct _mic_vring_info
// ---------------------------------------------------------------------------

abi_struct! {
    /// `struct _mic_vring_info`: trailer of a host-allocated vring block, at
    /// [`vring_size`]`(num, 4096)` inside it.
    pub struct MicVringInfo: size 8, repr(C, align(4)) {
        /// Host's last consumed avail index.
        avail_idx: u16 => VRI_AVAIL_IDX = 0,
        /// Debug cookie `MIC_MAGIC + type + vq index`.
        magic: u32 => VRI_MAGIC = 4,
    }
}

impl MicVringInfo {
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

abi_struct! {
    /// `struct mic_copy_desc` (64-bit user-space layout; `iov` is the user pointer).
    pub struct MicCopyDesc: size 24, repr(C, align(8)) {
        /// User address of the iovec array.
        iov: u64 => CD_IOV = 0,
        /// Number of iovecs.
        iovcnt: u32 => CD_IOVCNT = 8,
        /// Vring index within the device.
        vr_idx: u8 => CD_VR_IDX = 12,
        /// Non-zero: complete the chain (add a used entry) after copying.
        update_used: u8 => CD_UPDATE_USED = 13,
        /// Out: bytes moved.
        out_len: u32 => CD_OUT_LEN = 16,
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
