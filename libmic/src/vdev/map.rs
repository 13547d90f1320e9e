//! The read-only view of a device's page and rings that `mmap` of
//! `dev/micN` gives, as mpssd used it: to see whether the card made chains
//! available (`avail.idx` against the driver's `info.avail_idx`) and the
//! device's status, without a round trip to the driver.
//!
//! The memory is written concurrently by the card and the driver, so it is
//! only ever read with volatile loads, never through references.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::NonNull;

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
