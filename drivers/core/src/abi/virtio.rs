//! Virtio layouts and constants the MIC devices use: the legacy split ring
//! (the generation the 3.13 card kernel spoke), virtio-net, virtio-blk and
//! virtio-console. Every structure is little-endian on the wire, as the card
//! is always x86.

use super::layout::abi_struct;

/// Virtio device IDs (`mic_device_desc.type`).
pub mod id {
    /// virtio-net.
    pub const NET: i8 = 1;
    /// virtio-blk.
    pub const BLOCK: i8 = 2;
    /// virtio-console.
    pub const CONSOLE: i8 = 3;

    /// A short name for logs and tools ("net", "block", "console").
    #[must_use]
    pub const fn name(ty: i8) -> &'static str {
        match ty {
            NET => "net",
            BLOCK => "block",
            CONSOLE => "console",
            _ => "unknown",
        }
    }
}

/// Device status bits (`mic_device_desc.status`).
pub mod status {
    /// The guest noticed the device.
    pub const ACKNOWLEDGE: u8 = 1;
    /// The guest has a driver for it.
    pub const DRIVER: u8 = 2;
    /// The driver is ready: the device may be used.
    pub const DRIVER_OK: u8 = 4;
    /// Feature negotiation finished.
    pub const FEATURES_OK: u8 = 8;
    /// The device hit an error and needs a reset.
    pub const DEVICE_NEEDS_RESET: u8 = 64;
    /// The driver gave up on the device.
    pub const FAILED: u8 = 128;
}

/// Transport feature bits (in the high part of the 32 the MIC exposes).
pub mod ring_features {
    /// Indirect descriptor tables.
    pub const INDIRECT_DESC: u32 = 28;
    /// `used_event` / `avail_event` notification suppression.
    pub const EVENT_IDX: u32 = 29;
}

/// `vring_desc.flags`: the buffer continues in `next`.
pub const VRING_DESC_F_NEXT: u16 = 1;
/// `vring_desc.flags`: the buffer is device-writable (else device-readable).
pub const VRING_DESC_F_WRITE: u16 = 2;
/// `vring_desc.flags`: the buffer holds an indirect descriptor table.
pub const VRING_DESC_F_INDIRECT: u16 = 4;
/// `vring_avail.flags`: the driver does not want used-buffer interrupts.
pub const VRING_AVAIL_F_NO_INTERRUPT: u16 = 1;
/// `vring_used.flags`: the device does not want available-buffer kicks.
pub const VRING_USED_F_NO_NOTIFY: u16 = 1;

abi_struct! {
    /// `struct vring_desc`: one descriptor-table entry.
    pub struct VringDesc: size 16, repr(C, align(8)) {
        /// Buffer address (card physical for MIC).
        addr: u64 => VRING_DESC_ADDR = 0,
        /// Buffer length in bytes.
        len: u32 => VRING_DESC_LEN = 8,
        /// `VRING_DESC_F_*`.
        flags: u16 => VRING_DESC_FLAGS = 12,
        /// Next descriptor when `flags` has `VRING_DESC_F_NEXT`.
        next: u16 => VRING_DESC_NEXT = 14,
    }
}

abi_struct! {
    /// The header of `struct vring_avail`; `ring[num]` of u16 heads and
    /// `used_event` follow.
    pub struct VringAvailHdr: size 4, repr(C, align(2)) {
        /// `VRING_AVAIL_F_*`.
        flags: u16 => VRING_AVAIL_FLAGS = 0,
        /// Free-running index of the next entry the driver will write.
        idx: u16 => VRING_AVAIL_IDX = 2,
    }
}

abi_struct! {
    /// The header of `struct vring_used`; `ring[num]` of [`VringUsedElem`] and
    /// `avail_event` follow.
    pub struct VringUsedHdr: size 4, repr(C, align(2)) {
        /// `VRING_USED_F_*`.
        flags: u16 => VRING_USED_FLAGS = 0,
        /// Free-running index of the next entry the device will write.
        idx: u16 => VRING_USED_IDX = 2,
    }
}

abi_struct! {
    /// `struct vring_used_elem`: one completed chain.
    pub struct VringUsedElem: size 8, repr(C, align(4)) {
        /// Head descriptor index of the chain.
        id: u32 => VRING_USED_ELEM_ID = 0,
        /// Bytes the device wrote into the chain.
        len: u32 => VRING_USED_ELEM_LEN = 4,
    }
}

/// Where the parts of a legacy split ring of `num` entries sit, relative to
/// the ring's start, with the avail→used alignment `align` (a power of two).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitLayout {
    /// Entries.
    pub num: u16,
    /// Offset of the avail ring (right after the descriptor table).
    pub avail: usize,
    /// Offset of the used ring.
    pub used: usize,
    /// Total bytes (`vring_size`).
    pub size: usize,
}

impl SplitLayout {
    /// The legacy layout of `vring_init(num, align)`.
    #[must_use]
    pub const fn new(num: u16, align: usize) -> Self {
        let avail = 16 * num as usize;
        Self {
            num,
            avail,
            used: super::mic_align(avail + avail_size(num), align),
            size: super::vring_size(num, align),
        }
    }
}

/// Bytes of a descriptor table of `num` entries.
#[must_use]
pub const fn desc_table_size(num: u16) -> usize {
    VringDesc::SIZE * num as usize
}

/// Bytes of an avail ring of `num` entries (header, ring, `used_event`).
#[must_use]
pub const fn avail_size(num: u16) -> usize {
    VringAvailHdr::SIZE + 2 * num as usize + 2
}

/// Bytes of a used ring of `num` entries (header, ring, `avail_event`).
#[must_use]
pub const fn used_size(num: u16) -> usize {
    VringUsedHdr::SIZE + VringUsedElem::SIZE * num as usize + 2
}

/// Offset of avail `ring[i]` from the start of the avail ring.
#[must_use]
pub const fn avail_entry(i: u16) -> usize {
    VringAvailHdr::SIZE + 2 * i as usize
}

/// Offset of `used_event` from the start of the avail ring.
#[must_use]
pub const fn used_event_offset(num: u16) -> usize {
    avail_entry(num)
}

/// Offset of used `ring[i]` from the start of the used ring.
#[must_use]
pub const fn used_entry(i: u16) -> usize {
    VringUsedHdr::SIZE + VringUsedElem::SIZE * i as usize
}

/// Offset of `avail_event` from the start of the used ring.
#[must_use]
pub const fn avail_event_offset(num: u16) -> usize {
    used_entry(num)
}

/// `vring_need_event(event, new, old)`: whether moving an index from `old`
/// to `new` crossed `event` (all free-running u16).
#[must_use]
pub const fn need_event(event: u16, new: u16, old: u16) -> bool {
    new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
}

// ---------------------------------------------------------------------------
// virtio-net
// ---------------------------------------------------------------------------

/// virtio-net feature bits.
pub mod net_features {
    /// The device handles partial checksums (host side of TX).
    pub const CSUM: u32 = 0;
    /// The driver handles partial checksums.
    pub const GUEST_CSUM: u32 = 1;
    /// The device has a MAC address in its config.
    pub const MAC: u32 = 5;
    /// Legacy "GSO" bit.
    pub const GSO: u32 = 6;
    /// The driver can receive TSOv4.
    pub const GUEST_TSO4: u32 = 7;
    /// The driver can receive TSOv6.
    pub const GUEST_TSO6: u32 = 8;
    /// The driver can receive TSO with ECN.
    pub const GUEST_ECN: u32 = 9;
    /// The driver can receive UFO.
    pub const GUEST_UFO: u32 = 10;
    /// Link status in the config.
    pub const STATUS: u32 = 16;
}

/// `virtio_net_hdr.flags`: the checksum at `csum_start + csum_offset` must be filled in.
pub const VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;
/// `virtio_net_hdr.flags`: the checksum is known good.
pub const VIRTIO_NET_HDR_F_DATA_VALID: u8 = 2;
/// `virtio_net_hdr.gso_type`: not a GSO frame.
pub const VIRTIO_NET_HDR_GSO_NONE: u8 = 0;
/// `virtio_net_hdr.gso_type`: TCPv4 segmentation.
pub const VIRTIO_NET_HDR_GSO_TCPV4: u8 = 1;
/// `virtio_net_hdr.gso_type`: UDP fragmentation.
pub const VIRTIO_NET_HDR_GSO_UDP: u8 = 3;
/// `virtio_net_hdr.gso_type`: TCPv6 segmentation.
pub const VIRTIO_NET_HDR_GSO_TCPV6: u8 = 4;
/// `virtio_net_hdr.gso_type` flag: ECN.
pub const VIRTIO_NET_HDR_GSO_ECN: u8 = 0x80;
/// The largest frame a virtio-net device exchanges (64 KiB GSO + Ethernet header).
pub const VIRTIO_NET_MAX_FRAME: usize = 65_550;

abi_struct! {
    /// `struct virtio_net_hdr` (without `num_buffers`: MIC never offered
    /// mergeable RX buffers).
    pub struct VirtioNetHdr: size 10, repr(C, align(2)) {
        /// `VIRTIO_NET_HDR_F_*`.
        flags: u8 => NET_HDR_FLAGS = 0,
        /// `VIRTIO_NET_HDR_GSO_*`.
        gso_type: u8 => NET_HDR_GSO_TYPE = 1,
        /// Length of the headers to copy into each segment.
        hdr_len: u16 => NET_HDR_HDR_LEN = 2,
        /// Segment size for GSO.
        gso_size: u16 => NET_HDR_GSO_SIZE = 4,
        /// Where checksumming starts.
        csum_start: u16 => NET_HDR_CSUM_START = 6,
        /// Offset of the checksum field from `csum_start`.
        csum_offset: u16 => NET_HDR_CSUM_OFFSET = 8,
    }
}

abi_struct! {
    /// `struct virtio_net_config` (3.13 headers).
    pub struct VirtioNetConfig: size 10, repr(C, align(2)) {
        /// MAC address, valid with the MAC feature.
        mac: [u8; 6] => NET_CFG_MAC = 0,
        /// Link status, valid with the STATUS feature.
        status: u16 => NET_CFG_STATUS = 6,
        /// Queue pairs, valid with the MQ feature.
        max_virtqueue_pairs: u16 => NET_CFG_MAX_VQ_PAIRS = 8,
    }
}

// ---------------------------------------------------------------------------
// virtio-blk
// ---------------------------------------------------------------------------

/// virtio-blk feature bits.
pub mod blk_features {
    /// `size_max` is valid.
    pub const SIZE_MAX: u32 = 1;
    /// `seg_max` is valid.
    pub const SEG_MAX: u32 = 2;
    /// The device is read-only.
    pub const RO: u32 = 5;
    /// `blk_size` is valid.
    pub const BLK_SIZE: u32 = 6;
    /// The device supports FLUSH.
    pub const FLUSH: u32 = 9;
}

/// Sector size of virtio-blk requests and capacity.
pub const VIRTIO_BLK_SECTOR_SIZE: u64 = 512;
/// `virtio_blk_outhdr.type`: read.
pub const VIRTIO_BLK_T_IN: u32 = 0;
/// `virtio_blk_outhdr.type`: write.
pub const VIRTIO_BLK_T_OUT: u32 = 1;
/// `virtio_blk_outhdr.type`: flush.
pub const VIRTIO_BLK_T_FLUSH: u32 = 4;
/// `virtio_blk_outhdr.type`: device ID string.
pub const VIRTIO_BLK_T_GET_ID: u32 = 8;
/// Request status: success.
pub const VIRTIO_BLK_S_OK: u8 = 0;
/// Request status: I/O error.
pub const VIRTIO_BLK_S_IOERR: u8 = 1;
/// Request status: unsupported request.
pub const VIRTIO_BLK_S_UNSUPP: u8 = 2;
/// Length of the GET_ID answer.
pub const VIRTIO_BLK_ID_BYTES: usize = 20;

abi_struct! {
    /// `struct virtio_blk_outhdr`: the device-readable header of a request.
    pub struct VirtioBlkOutHdr: size 16, repr(C, align(8)) {
        /// `VIRTIO_BLK_T_*`.
        ty: u32 => BLK_HDR_TYPE = 0,
        /// I/O priority (ignored).
        ioprio: u32 => BLK_HDR_IOPRIO = 4,
        /// Start sector (512 bytes).
        sector: u64 => BLK_HDR_SECTOR = 8,
    }
}

abi_struct! {
    /// `struct virtio_blk_config` (3.13 headers, packed).
    pub struct VirtioBlkConfig: size 34, repr(C, packed) {
        /// Capacity in 512-byte sectors.
        capacity: u64 => BLK_CFG_CAPACITY = 0,
        /// Largest segment, with SIZE_MAX.
        size_max: u32 => BLK_CFG_SIZE_MAX = 8,
        /// Most segments per request, with SEG_MAX.
        seg_max: u32 => BLK_CFG_SEG_MAX = 12,
        /// Geometry: cylinders.
        cylinders: u16 => BLK_CFG_CYLINDERS = 16,
        /// Geometry: heads.
        heads: u8 => BLK_CFG_HEADS = 18,
        /// Geometry: sectors.
        sectors: u8 => BLK_CFG_SECTORS = 19,
        /// Block size, with BLK_SIZE.
        blk_size: u32 => BLK_CFG_BLK_SIZE = 20,
        /// Physical block exponent.
        physical_block_exp: u8 => BLK_CFG_PHYS_EXP = 24,
        /// Alignment offset.
        alignment_offset: u8 => BLK_CFG_ALIGN_OFFSET = 25,
        /// Minimum I/O size.
        min_io_size: u16 => BLK_CFG_MIN_IO = 26,
        /// Optimal I/O size.
        opt_io_size: u32 => BLK_CFG_OPT_IO = 28,
        /// Write-cache enabled.
        wce: u8 => BLK_CFG_WCE = 32,
        /// Padding.
        unused: u8 => BLK_CFG_UNUSED = 33,
    }
}

// ---------------------------------------------------------------------------
// virtio-console
// ---------------------------------------------------------------------------

/// virtio-console feature bits.
pub mod console_features {
    /// `cols`/`rows` are valid.
    pub const SIZE: u32 = 0;
    /// Several ports (never offered by MIC).
    pub const MULTIPORT: u32 = 1;
    /// `emerg_wr` is valid.
    pub const EMERG_WRITE: u32 = 2;
}

abi_struct! {
    /// `struct virtio_console_config`.
    pub struct VirtioConsoleConfig: size 12, repr(C, packed) {
        /// Columns, with SIZE.
        cols: u16 => CONSOLE_CFG_COLS = 0,
        /// Rows, with SIZE.
        rows: u16 => CONSOLE_CFG_ROWS = 2,
        /// Ports, with MULTIPORT.
        max_nr_ports: u32 => CONSOLE_CFG_MAX_PORTS = 4,
        /// Emergency write register, with EMERG_WRITE.
        emerg_wr: u32 => CONSOLE_CFG_EMERG_WR = 8,
    }
}

/// Bit `bit` as a mask in a 32-bit feature word.
#[must_use]
pub const fn feature(bit: u32) -> u32 {
    1 << bit
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::{MIC_VIRTIO_RING_ALIGN, vring_size};

    #[test]
    fn split_layout_of_the_mic_ring() {
        let l = SplitLayout::new(128, MIC_VIRTIO_RING_ALIGN);
        assert_eq!((l.avail, l.used, l.size), (2048, 4096, 5126));
        assert_eq!(l.size, vring_size(128, MIC_VIRTIO_RING_ALIGN));
        assert_eq!(desc_table_size(128), 2048);
        assert_eq!(avail_size(128), 262);
        assert_eq!(used_size(128), 1030);
        assert_eq!(used_event_offset(128), 260);
        assert_eq!(avail_event_offset(128), 1028);
        let small = SplitLayout::new(4, 4096);
        assert_eq!((small.avail, small.used), (64, 4096));
    }

    #[test]
    fn need_event_wraps() {
        assert!(need_event(0, 1, 0));
        assert!(!need_event(5, 3, 0));
        assert!(need_event(65535, 2, 65534));
        assert!(!need_event(10, 10, 10));
    }

    #[test]
    fn layouts_round_trip() {
        let d = VringDesc {
            addr: 0x1122_3344_5566_7788,
            len: 1500,
            flags: VRING_DESC_F_NEXT | VRING_DESC_F_WRITE,
            next: 7,
        };
        let b = d.to_bytes();
        assert_eq!(&b[..8], &0x1122_3344_5566_7788u64.to_le_bytes());
        assert_eq!(VringDesc::from_bytes(&b), d);
        let c = VirtioBlkConfig {
            capacity: 2048,
            seg_max: 126,
            ..VirtioBlkConfig::default()
        };
        let b = c.to_bytes();
        assert_eq!(&b[..8], &2048u64.to_le_bytes());
        assert_eq!(&b[12..16], &126u32.to_le_bytes());
        assert_eq!(VirtioBlkConfig::from_bytes(&b), c);
        let n = VirtioNetConfig {
            mac: [2, 0, 0, 0, 0, 1],
            status: 1,
            max_virtqueue_pairs: 0,
        };
        assert_eq!(VirtioNetConfig::from_bytes(&n.to_bytes()), n);
        assert_eq!(VirtioNetHdr::from_slice(&[0; 9]), None);
        assert_eq!(VirtioConsoleConfig::SIZE, 12);
        assert_eq!(feature(net_features::GSO), 0x40);
        assert_eq!(id::name(id::CONSOLE), "console");
        assert_eq!(id::name(9), "unknown");
    }
}
