//! The client of a card's `dev/micN`: one [`VirtioFile`] is one open file
//! of the host driver's character device, carrying at most one virtio
//! device — what mpssd's backends are written against.
//!
//! It works the same whatever `dev/micN` is: the real character device
//! (ioctls with the real numbers, `mmap`, `poll`) or micemu's socket (the
//! same operations as messages; see `mic_core::abi::emu_dev`). Callers see
//! one API: add a device, map its rings read-only, copy descriptors
//! between the card and their buffers, change its config, wait for the
//! card's doorbells (blocking, or through the file descriptor with an
//! async runtime and [`VirtioFile::try_wake`]).

mod chardev;
mod map;
mod shm;
mod socket;

use std::io::IoSliceMut;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::FileTypeExt as _;
use std::path::PathBuf;
use std::time::Duration;

use mic_core::abi::{MicDeviceDesc, MicVqconfig, desc_size};

pub use map::{ChainError, ChainShape, RingMap};
pub use shm::IoBuf;

use crate::root::MicRoot;

/// What went wrong with a card's `dev/micN`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VdevError {
    /// The device node is missing.
    #[error(
        "{}: no such device: the mic_host driver is not loaded, or micemu is not serving this root",
        path.display()
    )]
    Absent { path: PathBuf },
    /// The node is neither a character device nor micemu's socket.
    #[error("{}: neither a character device nor micemu's socket", path.display())]
    NotADevice { path: PathBuf },
    /// Opening or talking to it failed at the OS level.
    #[error("{}: {op}", path.display())]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The driver refused an operation; `meaning` explains `errno`.
    #[error("mic{card}: {op} failed: {meaning} (errno {errno})")]
    Driver {
        card: u32,
        op: &'static str,
        errno: i32,
        meaning: &'static str,
    },
    /// The emulator speaks another protocol version.
    #[error("{}: micemu speaks dev/micN protocol {theirs}, this client {ours}", path.display())]
    Protocol { path: PathBuf, theirs: u32, ours: u32 },
    /// A reply that does not parse.
    #[error("{}: malformed reply to {op}", path.display())]
    BadReply { path: PathBuf, op: &'static str },
    /// The driver reported more bytes moved than the caller's buffers
    /// hold (a broken driver; the bytes are not trusted).
    #[error("mic{card}: the driver reports {moved} bytes of COPY_DESC in buffers of {room}")]
    Overrun { card: u32, moved: u32, room: usize },
    /// The caller's buffers are too large for one inline copy.
    #[error("mic{card}: COPY_DESC buffers of {len} bytes exceed the {max} an inline copy carries")]
    TooLarge { card: u32, len: usize, max: usize },
}

impl VdevError {
    /// The driver's errno, if the driver refused.
    #[must_use]
    pub fn errno(&self) -> Option<i32> {
        match self {
            VdevError::Driver { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

/// What each errno means for each operation, in the original driver.
fn meaning(op: &'static str, errno: i32) -> &'static str {
    match (op, errno) {
        ("ADD_DEVICE", libc::EINVAL) => {
            "bad descriptor block (too many vqs, too large, bad ring size or type) or no room in the device page"
        }
        ("ADD_DEVICE", libc::EBUSY) => "this file already carries a device",
        ("ADD_DEVICE", libc::ENOMEM) => "no host memory or SMPT room for the rings",
        ("COPY_DESC" | "CONFIG_CHANGE" | "mmap", libc::EINVAL) => {
            "no device added on this file, a bad vring index, or a malformed chain from the card"
        }
        ("COPY_DESC" | "CONFIG_CHANGE" | "mmap", libc::ENODEV) => {
            "the device is gone or the card has not started it"
        }
        ("COPY_DESC", libc::EIO) => {
            "the card broke the ring protocol; it works again after the card resets the device"
        }
        ("COPY_DESC", libc::ELOOP) => "the card offered a descriptor loop",
        ("COPY_DESC", libc::EFAULT) => "a bad address in the caller's buffers",
        ("CONFIG_CHANGE", libc::EIO) => "the card driver is not up (no config doorbell)",
        ("mmap", libc::EACCES) => "the rings can only be mapped read-only",
        (_, libc::ENOTTY) => "the driver does not know this ioctl",
        _ => "unexpected error from the driver",
    }
}

/// How a [`VirtioFile`] reaches the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// The real character device.
    CharDevice,
    /// micemu's socket, bytes copied straight into our buffers.
    SocketDirect,
    /// micemu's socket, bytes carried in the messages.
    SocketInline,
}

/// What a wait found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// The card rang the device's doorbell (or the host reset it): drain
    /// every vring, as the driver only wakes once per doorbell — and while
    /// a ring holds chains not yet consumed the card does not ring for it
    /// at all (the driver's kick suppression), so look at
    /// [`RingMap::pending`] after the last COPY_DESC before sleeping.
    Doorbell,
    /// The device is gone (removed by the card, or the driver went away).
    Gone,
    /// The timeout passed.
    TimedOut,
}

/// What a [`VirtioFile::copy_desc_batch`] did.
#[derive(Debug)]
pub struct Batch {
    /// Chains moved, one per buffer from the first: `lens[..chains]` are
    /// their byte counts.
    pub chains: usize,
    /// Bytes each chain moved (COPY_DESC's `out_len`).
    pub lens: [u32; BATCH_MAX],
    /// The driver's refusal that stopped the batch at buffer `chains`.
    pub error: Option<VdevError>,
}

impl Default for Batch {
    fn default() -> Self {
        Self {
            chains: 0,
            lens: [0; BATCH_MAX],
            error: None,
        }
    }
}

/// Most buffers one [`VirtioFile::copy_desc_batch`] uses.
pub const BATCH_MAX: usize = mic_core::abi::emu_dev::BATCH_MAX as usize;

/// `moved` bytes as the driver reported them, checked against the `room`
/// the caller's buffers have: callers slice their buffers by it.
fn within(card: u32, moved: u32, room: usize) -> Result<(), VdevError> {
    if moved as usize > room {
        return Err(VdevError::Overrun { card, moved, room });
    }
    Ok(())
}

/// A batch as one COPY_DESC per buffer, with the batch's stop rule: after
/// the first that fails (as the driver refused it) or moves no bytes.
fn batch_by_one(
    bufs: &mut [IoSliceMut<'_>],
    update_used: &[bool],
    mut one: impl FnMut(&mut IoSliceMut<'_>, bool) -> Result<u32, VdevError>,
) -> Result<Batch, VdevError> {
    let mut out = Batch::default();
    for (i, (b, &u)) in bufs.iter_mut().zip(update_used).take(BATCH_MAX).enumerate() {
        match one(b, u) {
            Ok(0) => break,
            Ok(n) => {
                out.lens[i] = n;
                out.chains = i + 1;
            }
            Err(e) if e.errno().is_some() => {
                out.error = Some(e);
                break;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// A virtio device's descriptor block for ADD_DEVICE, as mpssd builds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceBlock {
    /// Virtio device ID.
    pub ty: i8,
    /// Entries of each virtqueue.
    pub vrings: Vec<u16>,
    /// The first 32 host feature bits (`feature_len` is 4, as mpssd's).
    pub host_features: u32,
    /// The config space.
    pub config: Vec<u8>,
}

impl DeviceBlock {
    /// The header.
    #[must_use]
    pub fn desc(&self) -> MicDeviceDesc {
        MicDeviceDesc {
            ty: self.ty,
            num_vq: self.vrings.len() as u8,
            feature_len: 4,
            config_len: self.config.len() as u8,
            status: 0,
        }
    }

    /// The bytes ADD_DEVICE takes: header, vqconfigs, host then guest
    /// features, config.
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        let d = self.desc();
        let mut b = vec![0u8; desc_size(&d)];
        b[..MicDeviceDesc::SIZE].copy_from_slice(&d.to_bytes());
        for (i, &num) in self.vrings.iter().enumerate() {
            let vq = MicVqconfig {
                address: 0,
                used_address: 0,
                num,
            };
            let at = d.vq_offset(i);
            b[at..at + MicVqconfig::SIZE].copy_from_slice(&vq.to_bytes());
        }
        let f = d.features_offset();
        b[f..f + 4].copy_from_slice(&self.host_features.to_le_bytes());
        let c = d.config_offset();
        b[c..c + self.config.len()].copy_from_slice(&self.config);
        b
    }
}

/// A batch [`VirtioFile::start_batch`] handed over (or already made).
#[must_use = "a started batch's answer must be collected with finish_batch"]
pub struct PendingBatch {
    state: Pending,
    /// Each buffer's length, to check what the answer says it moved.
    sizes: [usize; BATCH_MAX],
}

enum Pending {
    Started(socket::Started),
    Done(Box<Result<Batch, VdevError>>),
}

impl std::fmt::Debug for PendingBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.state {
            Pending::Started(_) => "PendingBatch(started)",
            Pending::Done(_) => "PendingBatch(done)",
        })
    }
}

#[derive(Debug)]
enum Inner {
    Char(chardev::CharFile),
    Socket(socket::SockFile),
}

/// One open file of a card's `dev/micN`.
#[derive(Debug)]
pub struct VirtioFile {
    inner: Inner,
    card: u32,
    vrings: Vec<u16>,
}

impl VirtioFile {
    /// Opens card `card`'s `dev/micN` under `root`, whatever it is.
    pub fn open(root: &MicRoot, card: u32) -> Result<Self, VdevError> {
        Self::open_with(root, card, false)
    }

    /// Like [`VirtioFile::open`], but on micemu's socket carries the bytes
    /// in the messages even when the emulator could reach this process's
    /// memory (for clients that will not grant it, and for tests).
    pub fn open_inline(root: &MicRoot, card: u32) -> Result<Self, VdevError> {
        Self::open_with(root, card, true)
    }

    fn open_with(root: &MicRoot, card: u32, force_inline: bool) -> Result<Self, VdevError> {
        let path = root.dev_node(card);
        let meta = std::fs::metadata(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                VdevError::Absent { path: path.clone() }
            } else {
                VdevError::Io {
                    path: path.clone(),
                    op: "stat",
                    source: e,
                }
            }
        })?;
        let ft = meta.file_type();
        let inner = if ft.is_socket() {
            Inner::Socket(socket::SockFile::connect(&path, card, force_inline)?)
        } else if ft.is_char_device() {
            Inner::Char(chardev::CharFile::open(&path, card)?)
        } else {
            return Err(VdevError::NotADevice { path });
        };
        Ok(Self {
            inner,
            card,
            vrings: Vec::new(),
        })
    }

    /// The card.
    #[must_use]
    pub fn card(&self) -> u32 {
        self.card
    }

    /// Whether COPY_DESC's bytes for buffers outside the shared arena are
    /// copied by this process, from the card's memory micemu handed over
    /// (the one copy, at memcpy speed), rather than by the driver.
    #[must_use]
    pub fn copies_itself(&self) -> bool {
        match &self.inner {
            Inner::Char(_) => false,
            Inner::Socket(s) => s.copies_itself(),
        }
    }

    /// How this file reaches the driver.
    #[must_use]
    pub fn transport(&self) -> Transport {
        match &self.inner {
            Inner::Char(_) => Transport::CharDevice,
            Inner::Socket(s) => s.transport(),
        }
    }

    /// MIC_VIRTIO_ADD_DEVICE.
    pub fn add_device(&mut self, block: &DeviceBlock) -> Result<(), VdevError> {
        let bytes = block.to_bytes();
        match &mut self.inner {
            Inner::Char(c) => c.add_device(&bytes),
            Inner::Socket(s) => s.add_device(&bytes),
        }?;
        self.vrings.clone_from(&block.vrings);
        Ok(())
    }

    /// MIC_VIRTIO_COPY_DESC on vring `vr_idx`: bytes of the card's next
    /// chain move into `bufs` (its device-readable part), then from `bufs`
    /// into its device-writable part; returns the bytes moved. With
    /// `update_used` (and bytes moved) the chain is completed.
    pub fn copy_desc(
        &mut self,
        vr_idx: u8,
        bufs: &mut [IoSliceMut<'_>],
        update_used: bool,
    ) -> Result<u32, VdevError> {
        let n = match &mut self.inner {
            Inner::Char(c) => c.copy_desc(vr_idx, bufs, update_used),
            Inner::Socket(s) => s.copy_desc(vr_idx, bufs, update_used),
        }?;
        within(self.card, n, bufs.iter().map(|b| b.len()).sum())?;
        Ok(n)
    }

    /// Up to [`BATCH_MAX`] COPY_DESCs on vring `vr_idx`, one chain per
    /// buffer in order, each exactly as [`VirtioFile::copy_desc`] with that
    /// one buffer would have done; they stop after the first that moves no
    /// bytes (the ring had no chain) or that the driver refuses (its error
    /// is in [`Batch::error`]; an error reaching the driver at all is the
    /// `Err`). On micemu the whole batch is one request (the hand-off
    /// between the two processes is what a COPY_DESC costs most), and the
    /// card's doorbell rings once after it; on the real character device it
    /// is one ioctl per chain.
    pub fn copy_desc_batch(
        &mut self,
        vr_idx: u8,
        bufs: &mut [IoSliceMut<'_>],
        update_used: bool,
    ) -> Result<Batch, VdevError> {
        self.copy_desc_each(vr_idx, bufs, &[update_used; BATCH_MAX])
    }

    /// [`VirtioFile::copy_desc_batch`] with each buffer's own
    /// `update_used` (`update_used[i]` for `bufs[i]`; as many COPY_DESCs as
    /// both slices have entries, at most [`BATCH_MAX`]). One hand-off can
    /// so complete the chain a backend holds half-copied and start the
    /// next one, still held: what a backend whose answer depends on a
    /// request's first bytes (a disk) needs to move one chain per hand-off.
    pub fn copy_desc_each(
        &mut self,
        vr_idx: u8,
        bufs: &mut [IoSliceMut<'_>],
        update_used: &[bool],
    ) -> Result<Batch, VdevError> {
        let n = bufs.len().min(update_used.len());
        let (bufs, update_used) = (&mut bufs[..n], &update_used[..n]);
        let batch = match &mut self.inner {
            Inner::Char(c) => batch_by_one(bufs, update_used, |b, u| {
                c.copy_desc(vr_idx, std::slice::from_mut(b), u)
            }),
            Inner::Socket(s) => s.copy_desc_batch(vr_idx, bufs, update_used),
        }?;
        for (b, &moved) in bufs.iter().zip(&batch.lens[..batch.chains]) {
            within(self.card, moved, b.len())?;
        }
        Ok(batch)
    }

    /// [`VirtioFile::copy_desc_batch`] in two halves, so the copies run
    /// while the caller does something else (a backend writes the last
    /// batch's frames out meanwhile): on micemu's shared slot, with
    /// buffers the emulator reaches itself, this hands the batch over and
    /// returns at once; [`VirtioFile::finish_batch`] waits for its answer.
    /// Until then the buffers are the emulator's (not to be touched) and
    /// this file takes no other request (one fails), and the batch is
    /// finished on this file, not another (that fails). Anywhere else (the
    /// real device, buffers outside the arena) the batch is made whole
    /// here and `finish_batch` gives its result.
    pub fn start_batch(
        &mut self,
        vr_idx: u8,
        bufs: &mut [IoSliceMut<'_>],
        update_used: bool,
    ) -> PendingBatch {
        let n = bufs.len().min(BATCH_MAX);
        let mut sizes = [0usize; BATCH_MAX];
        for (s, b) in sizes.iter_mut().zip(bufs.iter()) {
            *s = b.len();
        }
        let state = match &mut self.inner {
            Inner::Socket(s) => s
                .start_batch(vr_idx, &bufs[..n], &[update_used; BATCH_MAX])
                .map(Pending::Started),
            Inner::Char(_) => None,
        }
        .unwrap_or_else(|| {
            Pending::Done(Box::new(self.copy_desc_batch(
                vr_idx,
                &mut bufs[..n],
                update_used,
            )))
        });
        PendingBatch { state, sizes }
    }

    /// The answer to [`VirtioFile::start_batch`]'s batch, checked as
    /// [`VirtioFile::copy_desc_batch`]'s is.
    pub fn finish_batch(&mut self, pending: PendingBatch) -> Result<Batch, VdevError> {
        let batch = match (pending.state, &mut self.inner) {
            (Pending::Done(r), _) => return *r,
            (Pending::Started(started), Inner::Socket(s)) => s.finish_batch(started)?,
            // Started by another file (never by the character device).
            (Pending::Started(_), Inner::Char(c)) => {
                return Err(VdevError::BadReply {
                    path: c.path().to_path_buf(),
                    op: "COPY_DESC",
                });
            }
        };
        for (&size, &moved) in pending.sizes.iter().zip(&batch.lens[..batch.chains]) {
            within(self.card, moved, size)?;
        }
        Ok(batch)
    }

    /// A buffer of `len` bytes for [`VirtioFile::copy_desc`]. On micemu it
    /// comes from the arena shared with the emulator (its copies are then a
    /// plain memcpy), as long as the arena has room; otherwise, and on the
    /// real device, from the heap. Allocate the backend's buffers once.
    pub fn alloc_buf(&mut self, len: usize) -> IoBuf {
        match &mut self.inner {
            Inner::Char(_) => IoBuf::heap(len),
            Inner::Socket(s) => s.alloc(len),
        }
    }

    /// MIC_VIRTIO_CONFIG_CHANGE: returns once the card acknowledged or the
    /// driver's bounded wait ended.
    pub fn config_change(&mut self, config: &[u8]) -> Result<(), VdevError> {
        match &mut self.inner {
            Inner::Char(c) => c.config_change(config),
            Inner::Socket(s) => s.config_change(config),
        }
    }

    /// Maps the device page and this device's rings read-only (the
    /// original layout: page at 0, vring i at 0x1000 + 8192·i for 128
    /// entries).
    pub fn map(&mut self) -> Result<RingMap, VdevError> {
        let len = RingMap::layout_len(&self.vrings);
        let map = match &mut self.inner {
            Inner::Char(c) => c.map(len),
            Inner::Socket(s) => s.map(len),
        }?;
        Ok(RingMap::new(map, &self.vrings))
    }

    /// Waits for the card's next doorbell for this device, at most
    /// `timeout` (forever with `None`).
    pub fn wait(&mut self, timeout: Option<Duration>) -> Result<Wake, VdevError> {
        match &mut self.inner {
            Inner::Char(c) => c.wait(timeout),
            Inner::Socket(s) => s.wait(timeout),
        }
    }

    /// The non-blocking wait: for an event loop that watches
    /// [`VirtioFile::as_fd`] for readability.
    pub fn try_wake(&mut self) -> Result<Option<Wake>, VdevError> {
        match self.wait(Some(Duration::ZERO))? {
            Wake::TimedOut => Ok(None),
            w => Ok(Some(w)),
        }
    }
}

impl std::os::fd::AsRawFd for VirtioFile {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.as_fd().as_raw_fd()
    }
}

impl AsFd for VirtioFile {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match &self.inner {
            Inner::Char(c) => c.as_fd(),
            Inner::Socket(s) => s.as_fd(),
        }
    }
}

/// Turns a poll timeout into poll(2)'s milliseconds.
fn poll_ms(timeout: Option<Duration>) -> i32 {
    timeout.map_or(-1, |t| i32::try_from(t.as_millis()).unwrap_or(i32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_encode_like_the_original() {
        let b = DeviceBlock {
            ty: 3,
            vrings: vec![128, 128],
            host_features: 0x41,
            config: vec![0; 12],
        };
        let bytes = b.to_bytes();
        assert_eq!(bytes.len(), 8 + 48 + 8 + 12);
        assert_eq!(&bytes[..4], &[3, 2, 4, 12]);
        assert_eq!(u16::from_le_bytes([bytes[24], bytes[25]]), 128);
        assert_eq!(&bytes[56..60], &0x41u32.to_le_bytes());
        assert_eq!(&bytes[60..64], &[0; 4], "guest features start cleared");
    }

    #[test]
    fn a_driver_reporting_more_than_the_buffers_hold_is_refused() {
        assert!(within(0, 4096, 4096).is_ok());
        let e = within(3, 4097, 4096).unwrap_err();
        assert!(matches!(
            e,
            VdevError::Overrun {
                card: 3,
                moved: 4097,
                room: 4096
            }
        ));
        assert_eq!(
            e.to_string(),
            "mic3: the driver reports 4097 bytes of COPY_DESC in buffers of 4096"
        );
    }

    #[test]
    fn a_batch_by_one_stops_after_an_empty_ring_or_a_refusal() {
        let mut store = [[0u8; 4]; 5];
        let mut bufs: Vec<IoSliceMut<'_>> = store.iter_mut().map(|b| IoSliceMut::new(b)).collect();
        let mut calls = 0;
        let b = batch_by_one(&mut bufs, &[true; 5], |_, _| {
            calls += 1;
            Ok(if calls < 3 { 10 * calls } else { 0 })
        })
        .unwrap();
        assert_eq!((b.chains, &b.lens[..3], calls), (2, &[10, 20, 0][..], 3));
        let mut calls = 0;
        let b = batch_by_one(&mut bufs, &[true; 5], |_, _| {
            calls += 1;
            if calls == 2 {
                Err(VdevError::Driver {
                    card: 0,
                    op: "COPY_DESC",
                    errno: libc::EIO,
                    meaning: "",
                })
            } else {
                Ok(7)
            }
        })
        .unwrap();
        assert_eq!((b.chains, calls), (1, 2));
        assert_eq!(b.error.and_then(|e| e.errno()), Some(libc::EIO));
        // An error that never reached the driver is the batch's own.
        let e = batch_by_one(&mut bufs, &[true; 5], |_, _| {
            Err(VdevError::BadReply {
                path: PathBuf::from("x"),
                op: "COPY_DESC",
            })
        });
        assert!(e.is_err());
        // Each buffer its own update_used, and no more copies than flags.
        let mut seen = Vec::new();
        let b = batch_by_one(&mut bufs, &[true, false, true], |_, u| {
            seen.push(u);
            Ok(1)
        })
        .unwrap();
        assert_eq!((b.chains, seen), (3, vec![true, false, true]));
    }

    #[test]
    fn errno_meanings() {
        assert!(meaning("COPY_DESC", libc::ELOOP).contains("loop"));
        assert!(meaning("mmap", libc::EACCES).contains("read-only"));
        assert_eq!(meaning("ADD_DEVICE", 12345), "unexpected error from the driver");
        let e = VdevError::Driver {
            card: 1,
            op: "ADD_DEVICE",
            errno: libc::EBUSY,
            meaning: meaning("ADD_DEVICE", libc::EBUSY),
        };
        assert_eq!(e.errno(), Some(libc::EBUSY));
        assert!(
            e.to_string()
                .starts_with("mic1: ADD_DEVICE failed: this file already carries a device")
        );
    }
}
