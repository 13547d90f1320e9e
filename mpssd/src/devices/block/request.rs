//! One virtio-blk request, served whole: parsed, bounds-checked against
//! the image, executed, and answered with a status the card can trust.
//!
//! The chain is taken as the byte stream the virtio spec says it is (a
//! device must not assume any framing): its device-readable bytes are the
//! 16-byte header then, for a write, the data; its device-writable bytes
//! are, for a read or GET_ID, the data, then the status byte (the last
//! writable byte). The shape comes from the ring mapping before the first
//! copy ([`libmic::vdev::RingMap::peek_chain`]); every copy is sized by it
//! and checked to have moved what it asked, so a card that rewrites a
//! chain in flight gets an error, never a host buffer overrun.
//!
//! Outcomes (virtio-anchors.md (b) 35; the original answered OK to most of
//! these):
//! - header shorter than 16 bytes, a readable byte after the header of a
//!   read, a writable byte before the status of a write, data not a
//!   multiple of 512, a range past the image's end (or overflowing): IOERR;
//! - a write to a read-only image: IOERR; a failed read, write or flush:
//!   IOERR;
//! - GET_ID with less than 20 bytes of room: IOERR;
//! - an unknown type: UNSUPP;
//! - no writable byte at all (nowhere for a status): the chain is consumed
//!   and completed, counted as malformed.
//!
//! The last copy of a chain completes it (`update_used`), and only the
//! last: COPY_DESC completes a chain on any copy that asks, and a chain
//! whose bytes are all moved can no longer be completed.

use std::io::IoSliceMut;

use libmic::vdev::ChainShape;
use mic_core::abi::virtio::{
    VIRTIO_BLK_ID_BYTES, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_SECTOR_SIZE,
    VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT, VirtioBlkOutHdr,
};

/// Bytes of data moved per copy (and per pread/pwrite).
pub const CHUNK: usize = 1 << 20;
/// The buffer a request is served from: 32 bytes for the header and the
/// status, then [`CHUNK`] of data.
pub const BUF_LEN: usize = 32 + CHUNK;

const SECTOR: u64 = VIRTIO_BLK_SECTOR_SIZE;
const HDR: u64 = VirtioBlkOutHdr::SIZE as u64;

/// COPY_DESC on the request queue, as the driver does it.
pub trait Ring {
    type Error;
    /// Moves the chain's readable bytes into `bufs`, then `bufs` into its
    /// writable bytes; `complete`: add the used entry (if bytes moved).
    fn copy(&mut self, bufs: &mut [IoSliceMut<'_>], complete: bool) -> Result<u32, Self::Error>;
}

/// The image a request reads and writes.
pub trait Disk {
    fn size(&self) -> u64;
    fn read_only(&self) -> bool;
    fn serial(&self) -> [u8; VIRTIO_BLK_ID_BYTES];
    fn read_at(&self, buf: &mut [u8], off: u64) -> std::io::Result<()>;
    fn write_at(&self, buf: &[u8], off: u64) -> std::io::Result<()>;
    fn flush(&self) -> std::io::Result<()>;
}

/// What a request was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Read,
    Write,
    Flush,
    GetId,
    /// An unknown type (answered UNSUPP).
    Unsupported(u32),
    /// Not a request: too short a header, or nowhere to put a status.
    Malformed,
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Served {
    pub kind: Kind,
    /// The status byte written (`None`: the chain had no room for one).
    pub status: Option<u8>,
    /// Data bytes moved to or from the image.
    pub bytes: u64,
    /// Why it failed, for the log (rare: the card's mistakes and I/O
    /// errors).
    pub why: Option<&'static str>,
}

/// Why a request could not be finished.
#[derive(Debug)]
pub enum Abort<E> {
    /// COPY_DESC failed (the card reset the device, or broke its ring).
    Ring(E),
    /// A copy moved less than the chain's shape promised: the card
    /// rewrote the chain in flight. `completed`: whether what was left of
    /// the chain could be completed (filled with IOERR); if not, the ring
    /// is stuck until the card resets the device.
    Changed { completed: bool },
}

struct Cursor<'r, R: Ring> {
    ring: &'r mut R,
    done: u64,
    total: u64,
}

impl<R: Ring> Cursor<'_, R> {
    /// One copy of exactly `bufs`' bytes, completing the chain if it ends
    /// it.
    fn copy(&mut self, bufs: &mut [IoSliceMut<'_>]) -> Result<(), Abort<R::Error>> {
        let len: u64 = bufs.iter().map(|b| b.len() as u64).sum();
        if len == 0 {
            return Ok(());
        }
        let last = self.done + len >= self.total;
        let n = self.ring.copy(bufs, last).map_err(Abort::Ring)?;
        if u64::from(n) != len {
            return Err(Abort::Changed {
                completed: self.salvage(n, last, bufs),
            });
        }
        self.done += len;
        Ok(())
    }

    /// After a short copy: complete whatever is left of the chain with
    /// IOERR bytes. Returns whether the chain got completed.
    fn salvage(&mut self, moved: u32, was_last: bool, bufs: &mut [IoSliceMut<'_>]) -> bool {
        if was_last && moved > 0 {
            return true;
        }
        for b in bufs.iter_mut() {
            b.fill(VIRTIO_BLK_S_IOERR);
        }
        matches!(self.ring.copy(bufs, true), Ok(n) if n > 0)
    }

    /// Reads and drops `n` readable bytes.
    fn skip(&mut self, mut n: u64, scratch: &mut [u8]) -> Result<(), Abort<R::Error>> {
        while n > 0 {
            let k = n.min(scratch.len() as u64) as usize;
            self.copy(&mut [IoSliceMut::new(&mut scratch[..k])])?;
            n -= k as u64;
        }
        Ok(())
    }

    /// Fills `n` writable bytes with zeros then the status byte.
    fn zeros_then(
        &mut self,
        n: u64,
        status: u8,
        data: &mut [u8],
        meta: &mut [u8],
    ) -> Result<(), Abort<R::Error>> {
        let mut left = n;
        while left > 0 {
            let k = left.min(data.len() as u64) as usize;
            data[..k].fill(0);
            self.copy(&mut [IoSliceMut::new(&mut data[..k])])?;
            left -= k as u64;
        }
        meta[16] = status;
        self.copy(&mut [IoSliceMut::new(&mut meta[16..17])])
    }
}

/// Whether `len` bytes at sector `sector` lie inside an image of `size`
/// bytes, as whole sectors.
#[must_use]
pub fn in_bounds(sector: u64, len: u64, size: u64) -> bool {
    len % SECTOR == 0
        && sector
            .checked_mul(SECTOR)
            .and_then(|off| off.checked_add(len))
            .is_some_and(|end| end <= size)
}

/// Serves the request whose chain has `shape` from `buf` (at least
/// [`BUF_LEN`] bytes; in the arena shared with micemu, every copy is one
/// memcpy).
pub fn serve<R: Ring, D: Disk>(
    ring: &mut R,
    shape: ChainShape,
    disk: &D,
    buf: &mut [u8],
) -> Result<Served, Abort<R::Error>> {
    let (meta, data) = buf.split_at_mut(32);
    let readable = u64::from(shape.readable);
    let writable = u64::from(shape.writable);
    let mut cur = Cursor {
        ring,
        done: 0,
        total: shape.total(),
    };
    // Nowhere for a status, or no whole header: consume it all.
    if writable == 0 || readable < HDR {
        cur.skip(readable, data)?;
        if writable == 0 {
            return Ok(served(Kind::Malformed, None, 0, Some("no status byte")));
        }
        cur.zeros_then(writable - 1, VIRTIO_BLK_S_IOERR, data, meta)?;
        return Ok(served(
            Kind::Malformed,
            Some(VIRTIO_BLK_S_IOERR),
            0,
            Some("header shorter than 16 bytes"),
        ));
    }
    cur.copy(&mut [IoSliceMut::new(&mut meta[..16])])?;
    let mut raw = [0u8; 16];
    raw.copy_from_slice(&meta[..16]);
    let hdr = VirtioBlkOutHdr::from_bytes(&raw);
    let req = Req {
        sector: hdr.sector,
        out_len: readable - HDR,
        in_len: writable - 1,
    };
    match classify(hdr.ty, req, disk) {
        (_, Action::Read(off)) => read(&mut cur, req, off, disk, meta, data),
        (_, Action::Write(off)) => write(&mut cur, req, off, disk, meta, data),
        (_, Action::Flush) => {
            let (status, why) = flush(disk);
            cur.skip(req.out_len, data)?;
            cur.zeros_then(req.in_len, status, data, meta)?;
            Ok(served(Kind::Flush, Some(status), 0, why))
        }
        (_, Action::GetId) => get_id(&mut cur, req, disk, meta, data),
        (kind, Action::Refuse(status, why)) => refuse(&mut cur, req, (meta, data), kind, status, why),
    }
}

/// Whether a chain of `shape` is served in two copies, by [`answer`]
/// between them: a whole header, room for a status, and at most a
/// [`CHUNK`] of data each way (every request of the card's driver). The
/// first copy fetches the readable bytes into a buffer of [`BUF_LEN`],
/// the second completes the chain with the writable bytes from another.
#[must_use]
pub fn fits(shape: ChainShape) -> bool {
    let (r, w) = (u64::from(shape.readable), u64::from(shape.writable));
    (HDR..=HDR + CHUNK as u64).contains(&r) && (1..=CHUNK as u64 + 1).contains(&w)
}

/// Serves a request from all its readable bytes, `input` (the header,
/// then a write's data), into all its writable bytes, `out` (a read's or
/// GET_ID's data, then the status, last): what [`serve`] does over a
/// chain, with the same checks and answers, for a chain that [`fits`].
/// The image is read, written or flushed before this returns, so the
/// status in `out` is true once the card sees it.
pub fn answer<D: Disk>(input: &[u8], out: &mut [u8], disk: &D) -> Served {
    let Some((status, data)) = out.split_last_mut() else {
        return served(Kind::Malformed, None, 0, Some("no status byte"));
    };
    let Some(raw) = input.first_chunk::<{ VirtioBlkOutHdr::SIZE }>() else {
        data.fill(0);
        *status = VIRTIO_BLK_S_IOERR;
        return served(
            Kind::Malformed,
            Some(VIRTIO_BLK_S_IOERR),
            0,
            Some("header shorter than 16 bytes"),
        );
    };
    let hdr = VirtioBlkOutHdr::from_bytes(raw);
    let payload = &input[raw.len()..];
    let req = Req {
        sector: hdr.sector,
        out_len: payload.len() as u64,
        in_len: data.len() as u64,
    };
    let (kind, action) = classify(hdr.ty, req, disk);
    let (st, bytes, why) = match action {
        Action::Read(off) => {
            if disk.read_at(data, off).is_ok() {
                (VIRTIO_BLK_S_OK, req.in_len, None)
            } else {
                data.fill(0);
                (VIRTIO_BLK_S_IOERR, req.in_len, Some("reading the image failed"))
            }
        }
        Action::Write(off) => match disk.write_at(payload, off) {
            Ok(()) => (VIRTIO_BLK_S_OK, req.out_len, None),
            Err(_) => (VIRTIO_BLK_S_IOERR, req.out_len, Some("writing the image failed")),
        },
        Action::Flush => {
            data.fill(0);
            let (st, why) = flush(disk);
            (st, 0, why)
        }
        Action::GetId => {
            let (id, rest) = data.split_at_mut(VIRTIO_BLK_ID_BYTES);
            id.copy_from_slice(&disk.serial());
            rest.fill(0);
            (VIRTIO_BLK_S_OK, 0, None)
        }
        Action::Refuse(st, why) => {
            data.fill(0);
            (st, 0, Some(why))
        }
    };
    *status = st;
    served(kind, Some(st), bytes, why)
}

/// What a request asks for, once its header is read and checked against
/// its shape and the image: the one place these checks live.
#[derive(Debug, Clone, Copy)]
enum Action {
    /// The request's room filled from the image at this byte offset.
    Read(u64),
    /// The request's data written to the image at this byte offset.
    Write(u64),
    Flush,
    GetId,
    /// Answered with this status and nothing else: the readable bytes
    /// dropped, the writable ones zeroed.
    Refuse(u8, &'static str),
}

fn classify<D: Disk>(ty: u32, req: Req, disk: &D) -> (Kind, Action) {
    let ioerr = |why| Action::Refuse(VIRTIO_BLK_S_IOERR, why);
    match ty {
        VIRTIO_BLK_T_IN => (
            Kind::Read,
            if req.out_len != 0 {
                ioerr("a read with readable data")
            } else if !in_bounds(req.sector, req.in_len, disk.size()) {
                ioerr("a read beyond the image or not in sectors")
            } else {
                Action::Read(req.sector * SECTOR)
            },
        ),
        VIRTIO_BLK_T_OUT => (
            Kind::Write,
            if req.in_len != 0 {
                ioerr("a write with writable data")
            } else if !in_bounds(req.sector, req.out_len, disk.size()) {
                ioerr("a write beyond the image or not in sectors")
            } else if disk.read_only() {
                ioerr("a write to a read-only image")
            } else {
                Action::Write(req.sector * SECTOR)
            },
        ),
        VIRTIO_BLK_T_FLUSH => (Kind::Flush, Action::Flush),
        VIRTIO_BLK_T_GET_ID => (
            Kind::GetId,
            if req.out_len != 0 || req.in_len < VIRTIO_BLK_ID_BYTES as u64 {
                ioerr("GET_ID without 20 bytes of room")
            } else {
                Action::GetId
            },
        ),
        other => (
            Kind::Unsupported(other),
            Action::Refuse(VIRTIO_BLK_S_UNSUPP, "an unknown request type"),
        ),
    }
}

fn flush<D: Disk>(disk: &D) -> (u8, Option<&'static str>) {
    match disk.flush() {
        Ok(()) => (VIRTIO_BLK_S_OK, None),
        Err(_) => (VIRTIO_BLK_S_IOERR, Some("fdatasync failed")),
    }
}

fn served(kind: Kind, status: Option<u8>, bytes: u64, why: Option<&'static str>) -> Served {
    Served {
        kind,
        status,
        bytes,
        why,
    }
}

/// A request past its header: its sector, the data bytes it carries
/// (readable, after the header) and the room it has (writable, before the
/// status).
#[derive(Debug, Clone, Copy)]
struct Req {
    sector: u64,
    out_len: u64,
    in_len: u64,
}

/// A request of the wrong shape: the rest of its readable bytes dropped,
/// its writable data zeroed, `status` answered.
fn refuse<R: Ring>(
    cur: &mut Cursor<'_, R>,
    req: Req,
    (meta, data): (&mut [u8], &mut [u8]),
    kind: Kind,
    status: u8,
    why: &'static str,
) -> Result<Served, Abort<R::Error>> {
    cur.skip(req.out_len, data)?;
    cur.zeros_then(req.in_len, status, data, meta)?;
    Ok(served(kind, Some(status), 0, Some(why)))
}

fn read<R: Ring, D: Disk>(
    cur: &mut Cursor<'_, R>,
    req: Req,
    mut off: u64,
    disk: &D,
    meta: &mut [u8],
    data: &mut [u8],
) -> Result<Served, Abort<R::Error>> {
    let mut status = VIRTIO_BLK_S_OK;
    let mut why = None;
    let mut left = req.in_len;
    while left > 0 {
        let k = left.min(data.len() as u64) as usize;
        if status == VIRTIO_BLK_S_OK && disk.read_at(&mut data[..k], off).is_err() {
            status = VIRTIO_BLK_S_IOERR;
            why = Some("reading the image failed");
        }
        if status != VIRTIO_BLK_S_OK {
            data[..k].fill(0);
        }
        left -= k as u64;
        off += k as u64;
        if left == 0 {
            meta[16] = status;
            let (d, m) = (&mut data[..k], &mut meta[16..17]);
            cur.copy(&mut [IoSliceMut::new(d), IoSliceMut::new(m)])?;
        } else {
            cur.copy(&mut [IoSliceMut::new(&mut data[..k])])?;
        }
    }
    if req.in_len == 0 {
        meta[16] = status;
        cur.copy(&mut [IoSliceMut::new(&mut meta[16..17])])?;
    }
    Ok(served(Kind::Read, Some(status), req.in_len, why))
}

fn write<R: Ring, D: Disk>(
    cur: &mut Cursor<'_, R>,
    req: Req,
    mut off: u64,
    disk: &D,
    meta: &mut [u8],
    data: &mut [u8],
) -> Result<Served, Abort<R::Error>> {
    let mut status = VIRTIO_BLK_S_OK;
    let mut why = None;
    let mut left = req.out_len;
    while left > 0 {
        let k = left.min(data.len() as u64) as usize;
        cur.copy(&mut [IoSliceMut::new(&mut data[..k])])?;
        if status == VIRTIO_BLK_S_OK && disk.write_at(&data[..k], off).is_err() {
            status = VIRTIO_BLK_S_IOERR;
            why = Some("writing the image failed");
        }
        left -= k as u64;
        off += k as u64;
    }
    meta[16] = status;
    cur.copy(&mut [IoSliceMut::new(&mut meta[16..17])])?;
    Ok(served(Kind::Write, Some(status), req.out_len, why))
}

fn get_id<R: Ring, D: Disk>(
    cur: &mut Cursor<'_, R>,
    req: Req,
    disk: &D,
    meta: &mut [u8],
    data: &mut [u8],
) -> Result<Served, Abort<R::Error>> {
    let serial = disk.serial();
    let n = serial.len();
    data[..n].copy_from_slice(&serial);
    let rest = req.in_len - n as u64;
    if rest == 0 {
        meta[16] = VIRTIO_BLK_S_OK;
        let (d, m) = (&mut data[..n], &mut meta[16..17]);
        cur.copy(&mut [IoSliceMut::new(d), IoSliceMut::new(m)])?;
    } else {
        cur.copy(&mut [IoSliceMut::new(&mut data[..n])])?;
        cur.zeros_then(rest, VIRTIO_BLK_S_OK, data, meta)?;
    }
    Ok(served(Kind::GetId, Some(VIRTIO_BLK_S_OK), 0, None))
}

#[cfg(test)]
pub(super) mod tests;
