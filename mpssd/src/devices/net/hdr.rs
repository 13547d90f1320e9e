//! The `virtio_net_hdr` at both ends: what the card may send is checked
//! before the TAP sees it (virtio-anchors (b) 36), what the card receives
//! is marked as the original did, and the TAP's offloads follow what the
//! card negotiated. Pure functions over bytes; the card is untrusted.

use mic_core::abi::virtio::{
    VIRTIO_NET_HDR_F_DATA_VALID, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_ECN,
    VIRTIO_NET_HDR_GSO_NONE, VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6, VIRTIO_NET_MAX_FRAME,
    VirtioNetHdr, feature, net_features,
};

use super::tap;

/// Bytes of the header before every frame.
pub const HDR: usize = VirtioNetHdr::SIZE;
/// An Ethernet header.
pub const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;

/// The features mpssd offers: the original's (CSUM, GSO, GUEST_TSO4,
/// GUEST_TSO6, GUEST_ECN) less GUEST_UFO, which Linux removed, plus
/// GUEST_CSUM, which the spec makes the guest TSO bits depend on (the
/// original's omission of it left them unusable to a careful driver).
#[must_use]
pub fn host_features() -> u32 {
    [
        net_features::CSUM,
        net_features::GUEST_CSUM,
        net_features::GSO,
        net_features::GUEST_TSO4,
        net_features::GUEST_TSO6,
        net_features::GUEST_ECN,
    ]
    .iter()
    .fold(0, |acc, &bit| acc | feature(bit))
}

/// The TAP offloads (`TUN_F_*`) for a card that acknowledged `acked`:
/// partial checksums only to a card that takes them (GUEST_CSUM), TSO only
/// on top of that. A card that negotiated nothing (micemu's, whose
/// buffers are 1536 bytes) gets whole, checksummed frames of at most the
/// MTU; the original's fixed offloads would have sent it 64 KiB GSO frames.
#[must_use]
pub fn tap_offloads(acked: u32) -> u32 {
    let has = |bit| acked & feature(bit) != 0;
    if !has(net_features::GUEST_CSUM) {
        return 0;
    }
    let mut f = tap::CSUM;
    if has(net_features::GUEST_TSO4) {
        f |= tap::TSO4;
    }
    if has(net_features::GUEST_TSO6) {
        f |= tap::TSO6;
    }
    if f & (tap::TSO4 | tap::TSO6) != 0 && has(net_features::GUEST_ECN) {
        f |= tap::TSO_ECN;
    }
    f
}

/// Marks a frame for the card (`buf` = header + frame, from the TAP):
/// `DATA_VALID` unless its checksum is partial — the original's "PCIe is
/// reliable, the card need not verify" (the card's driver honours it).
pub fn mark_rx(buf: &mut [u8]) {
    if let Some(flags) = buf.first_mut() {
        if *flags & VIRTIO_NET_HDR_F_NEEDS_CSUM == 0 {
            *flags |= VIRTIO_NET_HDR_F_DATA_VALID;
        }
    }
}

/// Why a frame from the card was not given to the TAP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxDrop {
    /// Shorter than the header, or than header and Ethernet header.
    Short,
    /// More than [`VIRTIO_NET_MAX_FRAME`] bytes after the header.
    Long,
    /// A partial checksum from a card that did not negotiate CSUM.
    CsumNotNegotiated,
    /// `csum_start + csum_offset` outside the frame.
    CsumOffsets,
    /// A GSO frame from a card that did not negotiate GSO.
    GsoNotNegotiated,
    /// A GSO type that is unknown or not offered (UDP: no UFO).
    GsoType,
    /// A GSO frame without a partial checksum, with `gso_size` 0, or with
    /// `hdr_len` beyond the frame.
    GsoInconsistent,
    /// A TCPv4/TCPv6 GSO frame that is not IPv4/IPv6.
    GsoProtocol,
}

impl std::fmt::Display for TxDrop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TxDrop::Short => "shorter than a virtio-net and an Ethernet header",
            TxDrop::Long => "longer than 65550 bytes",
            TxDrop::CsumNotNegotiated => "a partial checksum, CSUM not negotiated",
            TxDrop::CsumOffsets => "partial checksum offsets outside the frame",
            TxDrop::GsoNotNegotiated => "a GSO frame, GSO not negotiated",
            TxDrop::GsoType => "an unknown or unoffered GSO type",
            TxDrop::GsoInconsistent => "GSO fields inconsistent with the frame",
            TxDrop::GsoProtocol => "a TCP GSO frame of another protocol",
        })
    }
}

/// The ethertype of an Ethernet frame (looking through one 802.1Q tag).
fn ethertype(frame: &[u8]) -> Option<u16> {
    let at = |i: usize| frame.get(i..i + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
    match at(12)? {
        ETH_P_8021Q => at(16),
        t => Some(t),
    }
}

/// Checks a frame from the card (`buf` = header + frame, as COPY_DESC
/// left it) against what it negotiated (`acked`) before it goes to the
/// TAP: the header is made consistent in place (fields that mean nothing
/// for this frame are cleared), or the frame is refused. Returns whether
/// the header was changed.
pub fn sanitize_tx(buf: &mut [u8], acked: u32) -> Result<bool, TxDrop> {
    if buf.len() < HDR + ETH_HLEN {
        return Err(TxDrop::Short);
    }
    let (h, frame) = buf.split_at_mut(HDR);
    if frame.len() > VIRTIO_NET_MAX_FRAME {
        return Err(TxDrop::Long);
    }
    let Some(mut hdr) = VirtioNetHdr::from_slice(h) else {
        return Err(TxDrop::Short);
    };
    let orig = hdr;
    let has = |bit| acked & feature(bit) != 0;
    // DATA_VALID (and any unknown bit) means nothing on transmit.
    hdr.flags &= VIRTIO_NET_HDR_F_NEEDS_CSUM;
    if hdr.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0 {
        if !has(net_features::CSUM) {
            return Err(TxDrop::CsumNotNegotiated);
        }
        let end = u32::from(hdr.csum_start) + u32::from(hdr.csum_offset) + 2;
        if end > frame.len() as u32 {
            return Err(TxDrop::CsumOffsets);
        }
    } else {
        hdr.csum_start = 0;
        hdr.csum_offset = 0;
    }
    match hdr.gso_type & !VIRTIO_NET_HDR_GSO_ECN {
        VIRTIO_NET_HDR_GSO_NONE => {
            hdr.gso_type = VIRTIO_NET_HDR_GSO_NONE;
            hdr.gso_size = 0;
            hdr.hdr_len = 0;
        }
        t @ (VIRTIO_NET_HDR_GSO_TCPV4 | VIRTIO_NET_HDR_GSO_TCPV6) => {
            if !has(net_features::GSO) {
                return Err(TxDrop::GsoNotNegotiated);
            }
            if hdr.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM == 0
                || hdr.gso_size == 0
                || usize::from(hdr.hdr_len) > frame.len()
            {
                return Err(TxDrop::GsoInconsistent);
            }
            let want = if t == VIRTIO_NET_HDR_GSO_TCPV4 {
                ETH_P_IP
            } else {
                ETH_P_IPV6
            };
            if ethertype(frame) != Some(want) {
                return Err(TxDrop::GsoProtocol);
            }
        }
        _ => return Err(TxDrop::GsoType),
    }
    if hdr == orig {
        return Ok(false);
    }
    h.copy_from_slice(&hdr.to_bytes());
    Ok(true)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const ALL: u32 = u32::MAX;

    fn frame(ethertype: u16, len: usize) -> Vec<u8> {
        let mut f = vec![0u8; len];
        f[..6].copy_from_slice(&[2, 0, 0, 0, 0, 0xfe]);
        f[6..12].copy_from_slice(&[2, 0x6d, 0x69, 0x63, 0, 0]);
        f[12..14].copy_from_slice(&ethertype.to_be_bytes());
        f
    }

    fn with(h: VirtioNetHdr, frame: &[u8]) -> Vec<u8> {
        let mut v = h.to_bytes().to_vec();
        v.extend_from_slice(frame);
        v
    }

    fn hdr_of(buf: &[u8]) -> VirtioNetHdr {
        VirtioNetHdr::from_slice(&buf[..HDR]).unwrap()
    }

    fn tso4(len: usize) -> (VirtioNetHdr, Vec<u8>) {
        let h = VirtioNetHdr {
            flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
            gso_type: VIRTIO_NET_HDR_GSO_TCPV4,
            hdr_len: 54,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
        };
        (h, frame(ETH_P_IP, len))
    }

    #[test]
    fn a_plain_frame_passes_untouched() {
        let mut b = with(VirtioNetHdr::default(), &frame(ETH_P_IP, 60));
        let before = b.clone();
        assert_eq!(sanitize_tx(&mut b, 0), Ok(false));
        assert_eq!(b, before);
    }

    #[test]
    fn lengths() {
        assert_eq!(sanitize_tx(&mut [], ALL), Err(TxDrop::Short));
        assert_eq!(sanitize_tx(&mut [0; HDR - 1], ALL), Err(TxDrop::Short));
        assert_eq!(sanitize_tx(&mut [0; HDR], ALL), Err(TxDrop::Short));
        assert_eq!(sanitize_tx(&mut [0; HDR + ETH_HLEN - 1], ALL), Err(TxDrop::Short));
        assert_eq!(sanitize_tx(&mut [0; HDR + ETH_HLEN], ALL), Ok(false));
        let mut max = vec![0u8; HDR + VIRTIO_NET_MAX_FRAME];
        assert_eq!(sanitize_tx(&mut max, ALL), Ok(false));
        let mut long = vec![0u8; HDR + VIRTIO_NET_MAX_FRAME + 1];
        assert_eq!(sanitize_tx(&mut long, ALL), Err(TxDrop::Long));
    }

    #[test]
    fn meaningless_fields_are_cleared() {
        let h = VirtioNetHdr {
            flags: VIRTIO_NET_HDR_F_DATA_VALID | 0xf0,
            gso_type: VIRTIO_NET_HDR_GSO_ECN,
            hdr_len: 9999,
            gso_size: 1448,
            csum_start: 60000,
            csum_offset: 60000,
        };
        let f = frame(ETH_P_IP, 100);
        let mut b = with(h, &f);
        assert_eq!(sanitize_tx(&mut b, 0), Ok(true));
        assert_eq!(hdr_of(&b), VirtioNetHdr::default());
        assert_eq!(&b[HDR..], &f[..], "the frame itself is never changed");
    }

    #[test]
    fn partial_checksums() {
        let f = frame(ETH_P_IP, 60);
        let h = |start, offset| VirtioNetHdr {
            flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
            csum_start: start,
            csum_offset: offset,
            ..VirtioNetHdr::default()
        };
        let csum = feature(net_features::CSUM);
        assert_eq!(sanitize_tx(&mut with(h(34, 6), &f), csum), Ok(false));
        // The last two bytes of the frame are the last place it may go.
        assert_eq!(sanitize_tx(&mut with(h(34, 24), &f), csum), Ok(false));
        assert_eq!(
            sanitize_tx(&mut with(h(34, 25), &f), csum),
            Err(TxDrop::CsumOffsets)
        );
        assert_eq!(
            sanitize_tx(&mut with(h(u16::MAX, u16::MAX), &f), csum),
            Err(TxDrop::CsumOffsets)
        );
        assert_eq!(
            sanitize_tx(&mut with(h(34, 6), &f), ALL & !csum),
            Err(TxDrop::CsumNotNegotiated)
        );
    }

    #[test]
    fn gso_frames() {
        let gso = feature(net_features::GSO) | feature(net_features::CSUM);
        let (h, f) = tso4(3000);
        assert_eq!(sanitize_tx(&mut with(h, &f), gso), Ok(false));
        let ecn = VirtioNetHdr {
            gso_type: VIRTIO_NET_HDR_GSO_TCPV4 | VIRTIO_NET_HDR_GSO_ECN,
            ..h
        };
        assert_eq!(sanitize_tx(&mut with(ecn, &f), gso), Ok(false));
        assert_eq!(
            sanitize_tx(&mut with(h, &f), feature(net_features::CSUM)),
            Err(TxDrop::GsoNotNegotiated)
        );
        for bad in [
            VirtioNetHdr { gso_size: 0, ..h },
            VirtioNetHdr { hdr_len: 3001, ..h },
            VirtioNetHdr {
                flags: 0,
                csum_start: 0,
                csum_offset: 0,
                ..h
            },
        ] {
            assert_eq!(
                sanitize_tx(&mut with(bad, &f), gso),
                Err(TxDrop::GsoInconsistent),
                "{bad:?}"
            );
        }
        // TCPv6 GSO on an IPv4 frame, and the reverse.
        let v6 = VirtioNetHdr {
            gso_type: VIRTIO_NET_HDR_GSO_TCPV6,
            ..h
        };
        assert_eq!(sanitize_tx(&mut with(v6, &f), gso), Err(TxDrop::GsoProtocol));
        assert_eq!(
            sanitize_tx(&mut with(v6, &frame(ETH_P_IPV6, 3000)), gso),
            Ok(false)
        );
        assert_eq!(
            sanitize_tx(&mut with(h, &frame(0x0806, 3000)), gso),
            Err(TxDrop::GsoProtocol)
        );
        // One VLAN tag is looked through.
        let mut tagged = frame(ETH_P_8021Q, 3000);
        tagged[16..18].copy_from_slice(&ETH_P_IP.to_be_bytes());
        assert_eq!(sanitize_tx(&mut with(h, &tagged), gso), Ok(false));
        // UDP (UFO was not offered) and unknown types.
        for t in [3u8, 2, 5, 0x7f, 0x83] {
            let x = VirtioNetHdr { gso_type: t, ..h };
            assert_eq!(
                sanitize_tx(&mut with(x, &f), ALL),
                Err(TxDrop::GsoType),
                "type {t}"
            );
        }
    }

    #[test]
    fn rx_marks_data_valid_unless_partial() {
        let mut b = with(VirtioNetHdr::default(), &frame(ETH_P_IP, 60));
        mark_rx(&mut b);
        assert_eq!(hdr_of(&b).flags, VIRTIO_NET_HDR_F_DATA_VALID);
        let mut p = with(
            VirtioNetHdr {
                flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
                ..VirtioNetHdr::default()
            },
            &frame(ETH_P_IP, 60),
        );
        mark_rx(&mut p);
        assert_eq!(hdr_of(&p).flags, VIRTIO_NET_HDR_F_NEEDS_CSUM);
        mark_rx(&mut []);
    }

    #[test]
    fn offloads_follow_the_negotiation() {
        let f = |bits: &[u32]| bits.iter().fold(0, |a, &b| a | feature(b));
        assert_eq!(tap_offloads(0), 0);
        assert_eq!(tap_offloads(f(&[net_features::MAC, net_features::STATUS])), 0);
        // TSO without GUEST_CSUM is not usable.
        assert_eq!(tap_offloads(f(&[net_features::GUEST_TSO4])), 0);
        assert_eq!(tap_offloads(f(&[net_features::GUEST_CSUM])), tap::CSUM);
        assert_eq!(
            tap_offloads(f(&[net_features::GUEST_CSUM, net_features::GUEST_ECN])),
            tap::CSUM,
            "ECN only with TSO"
        );
        assert_eq!(
            tap_offloads(host_features()),
            tap::CSUM | tap::TSO4 | tap::TSO6 | tap::TSO_ECN
        );
        assert_eq!(host_features() & feature(net_features::GUEST_UFO), 0);
    }

    proptest! {
        /// Whatever the card writes, a frame either is refused or leaves
        /// with a header the kernel's rules accept: known flags only,
        /// checksum offsets inside the frame, GSO fields consistent; and
        /// the frame bytes are never touched.
        #[test]
        fn hostile_headers(raw in proptest::collection::vec(any::<u8>(), 0..200), acked in any::<u32>()) {
            let mut b = raw.clone();
            match sanitize_tx(&mut b, acked) {
                Err(_) => prop_assert_eq!(&b, &raw),
                Ok(changed) => {
                    prop_assert_eq!(changed, b[..HDR] != raw[..HDR]);
                    prop_assert_eq!(&b[HDR..], &raw[HDR..]);
                    let h = hdr_of(&b);
                    let len = b.len() - HDR;
                    prop_assert_eq!(h.flags & !VIRTIO_NET_HDR_F_NEEDS_CSUM, 0);
                    if h.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0 {
                        prop_assert!(acked & feature(net_features::CSUM) != 0);
                        prop_assert!(usize::from(h.csum_start) + usize::from(h.csum_offset) + 2 <= len);
                    } else {
                        prop_assert_eq!((h.csum_start, h.csum_offset), (0, 0));
                    }
                    if h.gso_type == VIRTIO_NET_HDR_GSO_NONE {
                        prop_assert_eq!((h.gso_size, h.hdr_len), (0, 0));
                    } else {
                        prop_assert!(acked & feature(net_features::GSO) != 0);
                        prop_assert!(h.gso_size > 0 && usize::from(h.hdr_len) <= len);
                    }
                    // Sanitising twice changes nothing more.
                    prop_assert_eq!(sanitize_tx(&mut b, acked), Ok(false));
                }
            }
        }
    }
}
