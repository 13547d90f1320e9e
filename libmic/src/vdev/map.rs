//! The read-only view of a device's page and rings that `mmap` of
//! `dev/micN` gives, as mpssd used it: to see whether the card made chains
//! available (`avail.idx` against the driver's `info.avail_idx`) and the
//! device's status, without a round trip to the driver.
//!
//! The memory is written concurrently by the card and the driver, so it is
//! only ever read with volatile loads, never through references.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::NonNull;

use mic_core::abi::virtio::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE, avail_entry};
use mic_core::abi::{
    MIC_DP_SIZE, MIC_VIRTIO_RING_ALIGN, MicVringInfo, VRI_AVAIL_IDX, VRI_MAGIC, mic_align, vring_size,
};
use mic_core::devpage;

/// A read-only shared mapping.
#[derive(Debug)]
pub(super) struct Mapping {
    // INVARIANT: `ptr .. ptr + len` is a live PROT_READ mapping owned by
    // this value, unmapped only by its Drop.
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain shared memory, read only with volatile loads;
// nothing in it is tied to a thread.
unsafe impl Send for Mapping {}
// SAFETY: as above; `&Mapping` only allows volatile reads.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `len` bytes of `fd` at offset 0 (the character device).
    pub(super) fn whole(fd: BorrowedFd<'_>, len: usize) -> std::io::Result<Self> {
        // SAFETY: a fresh mapping chosen by the kernel (no address hint), of
        // a descriptor we hold open for the call; the result is checked.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Self {
            ptr: NonNull::new(p.cast()).ok_or_else(std::io::Error::last_os_error)?,
            len,
        })
    }

    /// Reserves `len` bytes and maps each `(map_off, file_off, len)` piece
    /// of `fd` into it (micemu's socket passes the host RAM's fd and where
    /// each piece of the layout lives in it).
    pub(super) fn pieces(
        fd: BorrowedFd<'_>,
        pieces: &[(u64, u64, u64)],
        len: usize,
    ) -> std::io::Result<Self> {
        // SAFETY: reserving fresh address space (PROT_NONE, anonymous).
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let map = Self {
            ptr: NonNull::new(base.cast()).ok_or_else(std::io::Error::last_os_error)?,
            len,
        };
        for &(at, off, n) in pieces {
            let end = at.checked_add(n).filter(|&e| e <= len as u64);
            if end.is_none() || n == 0 {
                return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
            }
            let off =
                libc::off_t::try_from(off).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
            // SAFETY: the target range lies inside our own reservation
            // (checked above), so MAP_FIXED replaces only our PROT_NONE pages.
            let p = unsafe {
                libc::mmap(
                    map.ptr.as_ptr().add(at as usize).cast(),
                    n as usize,
                    libc::PROT_READ,
                    libc::MAP_SHARED | libc::MAP_FIXED,
                    fd.as_raw_fd(),
                    off,
                )
            };
            if p == libc::MAP_FAILED {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(map)
    }

    fn read(&self, off: usize, buf: &mut [u8]) -> bool {
        if off.checked_add(buf.len()).is_none_or(|e| e > self.len) {
            return false;
        }
        for (i, b) in buf.iter_mut().enumerate() {
            // SAFETY: `off + i < len`, inside the live mapping (invariant).
            *b = unsafe { self.ptr.as_ptr().add(off + i).read_volatile() };
        }
        true
    }

    fn read_u32(&self, off: usize) -> Option<u32> {
        let mut b = [0u8; 4];
        self.read(off, &mut b).then(|| u32::from_le_bytes(b))
    }

    fn read_u16(&self, off: usize) -> Option<u16> {
        if off % 2 != 0 || off.checked_add(2).is_none_or(|e| e > self.len) {
            let mut b = [0u8; 2];
            return self.read(off, &mut b).then(|| u16::from_le_bytes(b));
        }
        // SAFETY: inside the live mapping (checked above), and aligned: the
        // mapping starts on a page and `off` is even.
        #[allow(clippy::cast_ptr_alignment)]
        Some(u16::from_le(unsafe {
            self.ptr.as_ptr().add(off).cast::<u16>().read_volatile()
        }))
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the range this value mapped (invariant).
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

/// The shape of the chain the card made available next on a vring, read
/// from the mapping: how many bytes the device reads (the card's out
/// buffers, first) and writes (its in buffers, after).
///
/// It is a hint, not the chain COPY_DESC will move: the card can rewrite
/// its descriptors until the driver fetches them. A caller sizes its
/// copies by it and checks every copy moved what it asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainShape {
    /// Bytes of the device-readable descriptors.
    pub readable: u32,
    /// Bytes of the device-writable descriptors.
    pub writable: u32,
    /// Descriptors in the chain.
    pub descriptors: u16,
}

impl ChainShape {
    /// Every byte of the chain.
    #[must_use]
    pub fn total(&self) -> u64 {
        u64::from(self.readable) + u64::from(self.writable)
    }
}

/// Why the next chain cannot be read: what the driver's COPY_DESC would
/// refuse too (the card's fault), or no such vring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("no vring {0}")]
    NoRing(usize),
    #[error("the ring cannot be read")]
    Unreadable,
    #[error("head index {0} is beyond the ring")]
    BadHead(u16),
    #[error("next index {0} is beyond the ring")]
    BadNext(u16),
    #[error("the chain loops")]
    Loop,
    #[error("an indirect descriptor (the feature is not offered)")]
    Indirect,
    #[error("a descriptor of length 0")]
    ZeroLength,
    #[error("a device-readable descriptor after a device-writable one")]
    ReadAfterWrite,
    #[error("the chain is longer than 4 GiB")]
    TooLong,
}

/// The read-only view of a device page and one device's rings.
#[derive(Debug)]
pub struct RingMap {
    map: Mapping,
    /// (offset of the ring in the mapping, entries)
    rings: Vec<(usize, u16)>,
}

fn block_len(num: u16) -> usize {
    mic_align(
        vring_size(num, MIC_VIRTIO_RING_ALIGN) + MicVringInfo::SIZE,
        MIC_VIRTIO_RING_ALIGN,
    )
}

impl RingMap {
    /// Bytes of the mapping for rings of these sizes.
    pub(super) fn layout_len(vrings: &[u16]) -> usize {
        MIC_DP_SIZE + vrings.iter().map(|&n| block_len(n)).sum::<usize>()
    }

    pub(super) fn new(map: Mapping, vrings: &[u16]) -> Self {
        let mut at = MIC_DP_SIZE;
        let rings = vrings
            .iter()
            .map(|&n| {
                let r = (at, n);
                at += block_len(n);
                r
            })
            .collect();
        Self { map, rings }
    }

    /// A copy of the device page now.
    #[must_use]
    pub fn page(&self) -> [u8; MIC_DP_SIZE] {
        let mut p = [0u8; MIC_DP_SIZE];
        self.map.read(0, &mut p);
        p
    }

    /// The status byte of the first device of type `ty` in the page (0 if
    /// there is none).
    #[must_use]
    pub fn device_status(&self, ty: i8) -> u8 {
        let page = self.page();
        devpage::walk(&page)
            .flatten()
            .find(|d| d.desc.ty == ty)
            .map_or(0, |d| d.desc.status)
    }

    /// The first 32 feature bits the driver of the first device of type
    /// `ty` acknowledged (0 if there is none): what it negotiated, once its
    /// status has DRIVER_OK. Card-written: read it once per DRIVER_OK and
    /// keep the copy.
    #[must_use]
    pub fn guest_features(&self, ty: i8) -> u32 {
        let page = self.page();
        devpage::walk(&page)
            .flatten()
            .find(|d| d.desc.ty == ty)
            .and_then(|d| d.guest_features(&page)?.first_chunk::<4>().copied())
            .map_or(0, u32::from_le_bytes)
    }

    /// Number of vrings.
    #[must_use]
    pub fn vrings(&self) -> usize {
        self.rings.len()
    }

    /// The card's `avail.idx` of vring `vr`.
    #[must_use]
    pub fn avail_idx(&self, vr: usize) -> Option<u16> {
        let &(at, num) = self.rings.get(vr)?;
        self.map.read_u16(at + 16 * usize::from(num) + 2)
    }

    /// The driver's last consumed avail index of vring `vr`
    /// (`info.avail_idx`).
    #[must_use]
    pub fn info_avail_idx(&self, vr: usize) -> Option<u16> {
        let &(at, num) = self.rings.get(vr)?;
        self.map
            .read_u16(at + vring_size(num, MIC_VIRTIO_RING_ALIGN) + VRI_AVAIL_IDX)
    }

    /// The ring's magic (`MIC_MAGIC + type + index`).
    #[must_use]
    pub fn info_magic(&self, vr: usize) -> Option<u32> {
        let &(at, num) = self.rings.get(vr)?;
        let mut b = [0u8; 4];
        self.map
            .read(at + vring_size(num, MIC_VIRTIO_RING_ALIGN) + VRI_MAGIC, &mut b)
            .then(|| u32::from_le_bytes(b))
    }

    /// The shape of the chain COPY_DESC would fetch next on vring `vr`
    /// (the one at the driver's `info.avail_idx`), walked with the
    /// driver's rules: every index within the ring, no loop, no zero
    /// length, readable before writable, no indirect tables (never
    /// offered by mpssd). `Ok(None)`: nothing available.
    ///
    /// Valid only while no chain is held half-copied on the ring (the
    /// driver moves `info.avail_idx` when it completes a chain); while one
    /// is, [`RingMap::peek_chain_after`] with `skip` 1 sees the next.
    pub fn peek_chain(&self, vr: usize) -> Result<Option<ChainShape>, ChainError> {
        self.peek_chain_after(vr, 0)
    }

    /// Like [`RingMap::peek_chain`], for the chain `skip` places after the
    /// one at `info.avail_idx` (`Ok(None)`: the card made fewer available).
    /// A caller holding a half-copied chain peeks the next with `skip` 1.
    pub fn peek_chain_after(&self, vr: usize, skip: u16) -> Result<Option<ChainShape>, ChainError> {
        let &(at, num) = self.rings.get(vr).ok_or(ChainError::NoRing(vr))?;
        // The card's count: a lie only changes which entry is read (every
        // entry read is checked below).
        if self.available(vr) <= skip {
            return Ok(None);
        }
        let last = self.info_avail_idx(vr).ok_or(ChainError::Unreadable)?;
        // `num` is a power of two (the driver refused the device otherwise).
        let slot = last.wrapping_add(skip) & num.wrapping_sub(1);
        let avail = at + 16 * usize::from(num);
        let head = self
            .map
            .read_u16(avail + avail_entry(slot))
            .ok_or(ChainError::Unreadable)?;
        if head >= num {
            return Err(ChainError::BadHead(head));
        }
        let mut shape = ChainShape {
            readable: 0,
            writable: 0,
            descriptors: 0,
        };
        let mut i = head;
        loop {
            if shape.descriptors >= num {
                return Err(ChainError::Loop);
            }
            shape.descriptors += 1;
            let d = at + 16 * usize::from(i);
            let (len, flags, next) = (
                self.map.read_u32(d + 8).ok_or(ChainError::Unreadable)?,
                self.map.read_u16(d + 12).ok_or(ChainError::Unreadable)?,
                self.map.read_u16(d + 14).ok_or(ChainError::Unreadable)?,
            );
            if flags & VRING_DESC_F_INDIRECT != 0 {
                return Err(ChainError::Indirect);
            }
            if len == 0 {
                return Err(ChainError::ZeroLength);
            }
            if flags & VRING_DESC_F_WRITE != 0 {
                shape.writable = shape.writable.checked_add(len).ok_or(ChainError::TooLong)?;
            } else if shape.writable > 0 {
                return Err(ChainError::ReadAfterWrite);
            } else {
                shape.readable = shape.readable.checked_add(len).ok_or(ChainError::TooLong)?;
            }
            shape
                .readable
                .checked_add(shape.writable)
                .ok_or(ChainError::TooLong)?;
            if flags & VRING_DESC_F_NEXT == 0 {
                return Ok(Some(shape));
            }
            if next >= num {
                return Err(ChainError::BadNext(next));
            }
            i = next;
        }
    }

    /// How many chains the card says it made available that the driver
    /// has not consumed: the card's word, so at most the ring's size only
    /// if the card is honest (bound it before sizing anything by it).
    #[must_use]
    pub fn available(&self, vr: usize) -> u16 {
        match (self.avail_idx(vr), self.info_avail_idx(vr)) {
            (Some(a), Some(i)) => a.wrapping_sub(i),
            _ => 0,
        }
    }

    /// Whether the card made chains available that the driver has not
    /// consumed (what mpssd checks before COPY_DESC).
    #[must_use]
    pub fn pending(&self, vr: usize) -> bool {
        match (self.avail_idx(vr), self.info_avail_idx(vr)) {
            (Some(a), Some(i)) => a != i,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd as _;
    use std::os::unix::fs::FileExt as _;

    use super::*;

    const NUM: u16 = 8;

    /// A device page and one ring of [`NUM`] entries in a memfd, mapped as
    /// the driver maps it; `descs` are (len, flags, next), `heads` the
    /// avail entries from slot `consumed` on; `info.avail_idx` =
    /// `consumed`.
    fn ring(descs: &[Desc], heads: &[u16], consumed: u16) -> RingMap {
        let fd = nix::sys::memfd::memfd_create("ringmap-test", nix::sys::memfd::MFdFlags::empty()).unwrap();
        let file = std::fs::File::from(fd);
        let len = RingMap::layout_len(&[NUM]);
        file.set_len(len as u64).unwrap();
        let at = MIC_DP_SIZE as u64;
        for (i, &(l, flags, next)) in descs.iter().enumerate() {
            let d = at + 16 * i as u64;
            file.write_all_at(&l.to_le_bytes(), d + 8).unwrap();
            file.write_all_at(&flags.to_le_bytes(), d + 12).unwrap();
            file.write_all_at(&next.to_le_bytes(), d + 14).unwrap();
        }
        let avail = at + 16 * u64::from(NUM);
        for (i, &h) in heads.iter().enumerate() {
            let slot = consumed.wrapping_add(i as u16) & (NUM - 1);
            file.write_all_at(&h.to_le_bytes(), avail + avail_entry(slot) as u64)
                .unwrap();
        }
        let idx = consumed.wrapping_add(heads.len() as u16);
        file.write_all_at(&idx.to_le_bytes(), avail + 2).unwrap();
        let info = at + vring_size(NUM, MIC_VIRTIO_RING_ALIGN) as u64;
        file.write_all_at(&consumed.to_le_bytes(), info + VRI_AVAIL_IDX as u64)
            .unwrap();
        let map = Mapping::whole(file.as_fd(), len).unwrap();
        RingMap::new(map, &[NUM])
    }

    /// A descriptor: (len, flags, next).
    type Desc = (u32, u16, u16);

    const N: u16 = VRING_DESC_F_NEXT;
    const W: u16 = VRING_DESC_F_WRITE;

    #[test]
    fn a_block_request_is_header_data_status() {
        let r = ring(&[(16, N, 1), (4096, N | W, 2), (1, W, 0)], &[0], 0);
        assert!(r.pending(0));
        assert_eq!(
            r.peek_chain(0),
            Ok(Some(ChainShape {
                readable: 16,
                writable: 4097,
                descriptors: 3
            }))
        );
        assert_eq!(r.peek_chain(0).unwrap().unwrap().total(), 4113);
        assert_eq!(r.peek_chain(1), Err(ChainError::NoRing(1)));
    }

    #[test]
    fn the_chain_after_a_held_one_is_peeked_by_skipping_it() {
        // Two chains at slots 6 and 7 (info.avail_idx = 6): a read of 512
        // bytes, then a write of 1024.
        let descs = [
            (16, N, 1),
            (512, N | W, 2),
            (1, W, 0),
            (16, N, 4),
            (1024, N, 5),
            (1, W, 0),
        ];
        let r = ring(&descs, &[0, 3], 6);
        assert_eq!(r.peek_chain_after(0, 0).unwrap().unwrap().writable, 513);
        let next = r.peek_chain_after(0, 1).unwrap().unwrap();
        assert_eq!((next.readable, next.writable, next.descriptors), (1040, 1, 3));
        assert_eq!(r.peek_chain_after(0, 2), Ok(None), "only two are available");
        assert_eq!(r.peek_chain_after(1, 1), Err(ChainError::NoRing(1)));
        // A bad head past the held chain is reported like any other.
        let r = ring(&descs, &[0, 9], 6);
        assert_eq!(r.peek_chain_after(0, 1), Err(ChainError::BadHead(9)));
    }

    #[test]
    fn nothing_available_is_none() {
        let r = ring(&[(16, 0, 0)], &[], 5);
        assert_eq!(r.peek_chain(0), Ok(None));
    }

    #[test]
    fn the_head_is_taken_at_the_drivers_index_modulo_the_ring() {
        // info.avail_idx = 9: slot 1 of the 8-entry ring holds head 2.
        let fd_descs = [(16, 0, 0), (100, 0, 0), (7, W, 0)];
        let r = ring(&fd_descs, &[2, 1], 9);
        assert_eq!(r.peek_chain(0).unwrap().unwrap().writable, 7);
        let r = ring(&fd_descs, &[1, 2], 9);
        assert_eq!(r.peek_chain(0).unwrap().unwrap().readable, 100);
        let r = ring(&fd_descs, &[2, 1], 65535);
        assert_eq!(r.peek_chain(0).unwrap().unwrap().writable, 7, "u16 wrap");
    }

    #[test]
    fn hostile_chains_are_refused() {
        let cases: [(&[Desc], &[u16], ChainError); 7] = [
            (&[(16, N, 0)], &[0], ChainError::Loop),
            (&[(16, N, 1), (16, N, 0)], &[0], ChainError::Loop),
            (&[(16, 0, 0)], &[8], ChainError::BadHead(8)),
            (&[(16, N, 9)], &[0], ChainError::BadNext(9)),
            (&[(0, 0, 0)], &[0], ChainError::ZeroLength),
            (&[(1, W | N, 1), (1, 0, 0)], &[0], ChainError::ReadAfterWrite),
            (&[(16, VRING_DESC_F_INDIRECT, 0)], &[0], ChainError::Indirect),
        ];
        for (descs, heads, want) in cases {
            assert_eq!(ring(descs, heads, 0).peek_chain(0), Err(want), "{descs:?}");
        }
        let r = ring(&[(u32::MAX, N, 1), (1, W, 0)], &[0], 0);
        assert_eq!(r.peek_chain(0), Err(ChainError::TooLong));
    }
}
