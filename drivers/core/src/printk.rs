//! 3.10 printk ring records (written by the card, decoded by the host).
//!
//! The card kernel keeps its log in `__log_buf`, a byte ring of `log_buf_len`
//! bytes holding variable-size records in the Linux 3.10 layout:
//!
//! ```text
//! struct printk_log {          offset
//!     u64 ts_nsec;               0   timestamp (local_clock), little-endian
//!     u16 len;                   8   whole record, header included, 8-aligned
//!     u16 text_len;             10   bytes of text after the header
//!     u16 dict_len;             12   bytes of dictionary after the text
//!     u8  facility;             14   syslog facility
//!     u8  flags:5, level:3;     15   level in bits 7..5, flags in bits 4..0
//! };                            16   text, then dict, then zero padding
//! ```
//!
//! Records are never split: one that does not fit before the end of the
//! buffer is written at offset 0 instead, and a zeroed header (`len == 0`,
//! the *wrap marker*) is left where it would have started. The oldest
//! records are dropped to make room.
//!
//! [`LogRing`] is the writer (the card side), [`parse_record`] the strict
//! validator that the host decoder (`libmic::klog`) is built on.
//!
//! # Differences from 3.10 `log_store`
//!
//! The byte format and the placement rules are those of 3.10 (including the
//! requirement that a record leaves room for one more header after it, and
//! that after a wrap more than one header's worth of space separates the
//! newest record from the oldest one). In addition, the writer zeroes the
//! header of every record it drops. 3.10 readers follow `log_first_idx` and
//! never look at dropped records, so this changes nothing for them; but a
//! reader that only has the raw bytes (the host, through debugfs `log_buf`)
//! can then tell live records from dropped ones exactly.
//!
//! A text is cut at its first NUL byte, as the C string 3.10 formats it
//! into would be; [`parse_record`] accordingly refuses a text holding a NUL.
//! (The dictionary keeps its NULs: they separate its `KEY=value` pairs.) To
//! a reader resynchronising after damage this is worth a lot: bytes that
//! merely happen to look like a header almost always claim a text that
//! runs over some zero byte.

use crate::hw::{MemError, Memory, in_bounds};

/// Size of `struct printk_log`.
pub const HEADER_LEN: usize = 16;
/// Records start and end on multiples of this (`LOG_ALIGN` on 64-bit).
pub const LOG_ALIGN: usize = 8;
/// Largest record length the `u16 len` field can hold, rounded down to
/// [`LOG_ALIGN`].
pub const MAX_RECORD_LEN: usize = 0xFFF8;
/// Smallest usable ring: one empty record plus the header room after it.
pub const MIN_RING_LEN: u32 = 2 * HEADER_LEN as u32;
/// Highest (least severe) log level, `LOGLEVEL_DEBUG`.
pub const LEVEL_MAX: u8 = 7;

/// `LOG_NOCONS`: already flushed to the console.
pub const LOG_NOCONS: u8 = 1;
/// `LOG_NEWLINE`: text ended with a newline.
pub const LOG_NEWLINE: u8 = 2;
/// `LOG_PREFIX`: text started with a prefix.
pub const LOG_PREFIX: u8 = 4;
/// `LOG_CONT`: a fragment of a continuation line.
pub const LOG_CONT: u8 = 8;
/// Every flag 3.10 defines; [`parse_record`] rejects the others.
pub const LOG_FLAGS_MASK: u8 = LOG_NOCONS | LOG_NEWLINE | LOG_PREFIX | LOG_CONT;

/// `n` rounded up to [`LOG_ALIGN`] (saturating near `usize::MAX`).
#[must_use]
pub const fn align_up(n: usize) -> usize {
    match n.checked_add(LOG_ALIGN - 1) {
        Some(v) => v & !(LOG_ALIGN - 1),
        None => usize::MAX & !(LOG_ALIGN - 1),
    }
}

/// The `len` of a record with the given text and dictionary sizes: header,
/// payload and padding to [`LOG_ALIGN`].
#[must_use]
pub const fn record_len(text_len: usize, dict_len: usize) -> usize {
    align_up(HEADER_LEN.saturating_add(text_len).saturating_add(dict_len))
}

/// The 16-byte record header, fields unpacked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct RecordHeader {
    pub ts_nsec: u64,
    pub len: u16,
    pub text_len: u16,
    pub dict_len: u16,
    pub facility: u8,
    /// Low 5 bits of byte 15 (`LOG_*` flags).
    pub flags: u8,
    /// High 3 bits of byte 15 (0 = emerg .. 7 = debug).
    pub level: u8,
}

impl RecordHeader {
    /// The all-zero header that marks the wrap point.
    pub const WRAP_MARKER: Self = Self {
        ts_nsec: 0,
        len: 0,
        text_len: 0,
        dict_len: 0,
        facility: 0,
        flags: 0,
        level: 0,
    };

    /// The on-card bytes. `flags` and `level` are masked to their 5 and 3
    /// bits.
    #[must_use]
    pub const fn encode(&self) -> [u8; HEADER_LEN] {
        let ts = self.ts_nsec.to_le_bytes();
        let len = self.len.to_le_bytes();
        let text_len = self.text_len.to_le_bytes();
        let dict_len = self.dict_len.to_le_bytes();
        [
            ts[0],
            ts[1],
            ts[2],
            ts[3],
            ts[4],
            ts[5],
            ts[6],
            ts[7],
            len[0],
            len[1],
            text_len[0],
            text_len[1],
            dict_len[0],
            dict_len[1],
            self.facility,
            (self.flags & 0x1f) | ((self.level & 0x07) << 5),
        ]
    }

    /// Unpacks the on-card bytes. Never fails; validity is [`parse_record`]'s
    /// business.
    #[must_use]
    pub const fn decode(b: &[u8; HEADER_LEN]) -> Self {
        Self {
            ts_nsec: u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
            len: u16::from_le_bytes([b[8], b[9]]),
            text_len: u16::from_le_bytes([b[10], b[11]]),
            dict_len: u16::from_le_bytes([b[12], b[13]]),
            facility: b[14],
            flags: b[15] & 0x1f,
            level: b[15] >> 5,
        }
    }

    /// The header at `buf[off..off + 16]`, if those bytes exist.
    #[must_use]
    pub fn read_from(buf: &[u8], off: usize) -> Option<Self> {
        let end = off.checked_add(HEADER_LEN)?;
        let bytes: &[u8; HEADER_LEN] = buf.get(off..end)?.try_into().ok()?;
        Some(Self::decode(bytes))
    }

    /// `len == 0`: the wrap marker as 3.10 readers recognise it.
    #[must_use]
    pub const fn is_wrap_marker(&self) -> bool {
        self.len == 0
    }

    /// Header plus text plus dictionary, before padding.
    #[must_use]
    pub const fn used_len(&self) -> usize {
        HEADER_LEN + self.text_len as usize + self.dict_len as usize
    }
}

/// A validated record borrowed from a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// Offset of the header in the buffer it was parsed from.
    pub offset: usize,
    pub header: RecordHeader,
    pub text: &'a [u8],
    pub dict: &'a [u8],
}

impl Record<'_> {
    /// Offset just past the record (where the next header starts).
    #[must_use]
    pub const fn end(&self) -> usize {
        self.offset + self.header.len as usize
    }

    #[must_use]
    pub const fn ts_nsec(&self) -> u64 {
        self.header.ts_nsec
    }

    #[must_use]
    pub const fn level(&self) -> u8 {
        self.header.level
    }

    #[must_use]
    pub const fn facility(&self) -> u8 {
        self.header.facility
    }
}

/// Parses and strictly validates the record whose header is at `off`.
///
/// Accepted only if: `off` is a multiple of [`LOG_ALIGN`]; the header lies in
/// `buf`; `len` is exactly the header plus text plus dictionary rounded up to
/// [`LOG_ALIGN`] (so a multiple of it, and at least that size), as 3.10
/// always writes it; the record lies in `buf`; its padding is zero (3.10
/// `memset`s it); its text holds no NUL (it was a C string); only 3.10 flags
/// are set. (`level` is 3 bits wide and therefore always ≤ [`LEVEL_MAX`].)
/// A wrap marker is not a record and yields `None`.
///
/// The exact length and the zero padding matter to a reader without
/// `log_first_idx`: the last bytes of a text followed by its padding often
/// look like a header with a plausible `len` but not with the exact one.
#[must_use]
pub fn parse_record(buf: &[u8], off: usize) -> Option<Record<'_>> {
    if off % LOG_ALIGN != 0 {
        return None;
    }
    let header = RecordHeader::read_from(buf, off)?;
    let len = header.len as usize;
    if len < HEADER_LEN
        || len != align_up(header.used_len())
        || header.flags & !LOG_FLAGS_MASK != 0
        || header.level > LEVEL_MAX
    {
        return None;
    }
    let end = off.checked_add(len)?;
    if end > buf.len() {
        return None;
    }
    let text_start = off + HEADER_LEN;
    let dict_start = text_start + header.text_len as usize;
    let dict_end = dict_start + header.dict_len as usize;
    if buf[dict_end..end].iter().any(|&b| b != 0) || buf[text_start..dict_start].contains(&0) {
        return None;
    }
    Some(Record {
        offset: off,
        header,
        text: &buf[text_start..dict_start],
        dict: &buf[dict_start..dict_end],
    })
}

/// Whether `buf[off..off + 16]` exists and is all zero: the wrap marker as
/// `log_store` writes it (`memset(.., 0, sizeof(struct printk_log))`).
#[must_use]
pub fn is_zero_header_at(buf: &[u8], off: usize) -> bool {
    off.checked_add(HEADER_LEN)
        .and_then(|end| buf.get(off..end))
        .is_some_and(|h| h.iter().all(|&b| b == 0))
}

/// The writer side of the ring: `log_first_idx`, `log_next_idx`,
/// `log_first_seq`, `log_next_seq` of 3.10, over `len` bytes of card memory
/// at `base`.
///
/// The ring memory must start out zeroed (as `__log_buf` in `.bss` does), or
/// be zeroed with [`LogRing::clear`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRing {
    base: u64,
    len: u32,
    first_idx: u32,
    next_idx: u32,
    first_seq: u64,
    next_seq: u64,
}

impl LogRing {
    /// An empty ring of `len` bytes at card address `base`. Only the first
    /// `len` rounded down to [`LOG_ALIGN`] bytes are used; a ring shorter
    /// than [`MIN_RING_LEN`] refuses every [`LogRing::store`].
    #[must_use]
    pub const fn new(base: u64, len: u32) -> Self {
        Self {
            base,
            len,
            first_idx: 0,
            next_idx: 0,
            first_seq: 0,
            next_seq: 0,
        }
    }

    /// Card address of the ring.
    #[must_use]
    pub const fn base(&self) -> u64 {
        self.base
    }

    /// Ring length as configured (`log_buf_len`).
    #[must_use]
    pub const fn len(&self) -> u32 {
        self.len
    }

    /// Bytes the ring actually uses: `len` rounded down to [`LOG_ALIGN`].
    #[must_use]
    pub const fn capacity(&self) -> u32 {
        self.len & !(LOG_ALIGN as u32 - 1)
    }

    /// Offset of the oldest live record (`log_first_idx`).
    #[must_use]
    pub const fn first_idx(&self) -> u32 {
        self.first_idx
    }

    /// Offset where the next record goes (`log_next_idx`).
    #[must_use]
    pub const fn next_idx(&self) -> u32 {
        self.next_idx
    }

    /// Sequence number of the oldest live record (`log_first_seq`).
    #[must_use]
    pub const fn first_seq(&self) -> u64 {
        self.first_seq
    }

    /// Sequence number the next record gets (`log_next_seq`); also the
    /// number of records ever stored.
    #[must_use]
    pub const fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Whether no record is live.
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.first_seq == self.next_seq
    }

    /// Number of live records.
    #[must_use]
    pub const fn live_records(&self) -> u64 {
        self.next_seq - self.first_seq
    }

    /// Largest record [`LogRing::store`] writes: the record and the header
    /// room after it must fit the ring, and `len` must fit a `u16`.
    #[must_use]
    pub const fn max_record_len(&self) -> usize {
        let cap = self.capacity() as usize;
        if cap < MIN_RING_LEN as usize {
            return 0;
        }
        let room = cap - HEADER_LEN;
        if room < MAX_RECORD_LEN {
            room
        } else {
            MAX_RECORD_LEN
        }
    }

    /// Longest text (without dictionary) stored untruncated.
    #[must_use]
    pub const fn max_text_len(&self) -> usize {
        self.max_record_len().saturating_sub(HEADER_LEN)
    }

    fn check_region(&self, mem: &impl Memory) -> Result<usize, MemError> {
        let cap = self.capacity();
        if cap < MIN_RING_LEN || !in_bounds(self.base, u64::from(cap), mem.size()) {
            return Err(MemError::OutOfBounds {
                addr: self.base,
                len: u64::from(self.len),
            });
        }
        Ok(cap as usize)
    }

    /// Zeroes the ring memory and forgets every record (sequence numbers keep
    /// counting).
    pub fn clear(&mut self, mem: &impl Memory) -> Result<(), MemError> {
        let cap = self.check_region(mem)?;
        self.zero(mem, 0, cap)?;
        self.first_idx = 0;
        self.next_idx = 0;
        self.first_seq = self.next_seq;
        Ok(())
    }

    fn zero(&self, mem: &impl Memory, off: usize, len: usize) -> Result<(), MemError> {
        const ZEROS: [u8; 64] = [0; 64];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(ZEROS.len());
            mem.write(self.base + (off + done) as u64, &ZEROS[..n])?;
            done += n;
        }
        Ok(())
    }

    /// Appends a record with `LOG_NEWLINE` set and no dictionary. See
    /// [`LogRing::store_with_dict`].
    pub fn store(
        &mut self,
        mem: &impl Memory,
        ts_nsec: u64,
        facility: u8,
        level: u8,
        text: &[u8],
    ) -> Result<(), MemError> {
        self.store_with_dict(mem, ts_nsec, facility, level, LOG_NEWLINE, text, &[])
    }

    /// Appends a record (`log_store`): drops the oldest records until it
    /// fits, wraps to offset 0 (leaving a wrap marker) if it does not fit
    /// before the end of the buffer.
    ///
    /// A record larger than [`LogRing::max_record_len`] loses its dictionary,
    /// then its text is truncated to [`LogRing::max_text_len`]. `level` is
    /// masked to 3 bits, `flags` to the 3.10 flags.
    ///
    /// Fails with [`MemError::OutOfBounds`], before writing anything, if the
    /// ring is shorter than [`MIN_RING_LEN`] or does not lie inside `mem`.
    #[allow(clippy::too_many_arguments)]
    pub fn store_with_dict(
        &mut self,
        mem: &impl Memory,
        ts_nsec: u64,
        facility: u8,
        level: u8,
        flags: u8,
        text: &[u8],
        dict: &[u8],
    ) -> Result<(), MemError> {
        let cap = self.check_region(mem)?;
        let max = self.max_record_len();
        // A C string ends at its first NUL.
        let text = text.iter().position(|&b| b == 0).map_or(text, |n| &text[..n]);
        let (text, dict) = if record_len(text.len(), dict.len()) <= max {
            (text, dict)
        } else {
            (&text[..text.len().min(max - HEADER_LEN)], &[][..])
        };
        let size = record_len(text.len(), dict.len());

        let pos = loop {
            if self.is_empty() {
                // Every dropped header is zeroed: nothing in the buffer
                // survives as a record, so the ring may restart at 0.
                self.first_idx = 0;
                self.next_idx = 0;
                break 0;
            }
            let first = self.first_idx as usize;
            let next = self.next_idx as usize;
            if first < next {
                // Not wrapped: live records are first..next.
                if next + size + HEADER_LEN <= cap {
                    break next;
                }
                if size + HEADER_LEN < first {
                    if next + HEADER_LEN <= cap {
                        mem.write(self.base + next as u64, &RecordHeader::WRAP_MARKER.encode())?;
                    }
                    break 0;
                }
            } else if next + size + HEADER_LEN < first {
                // Wrapped: live records are first..marker, then 0..next, and
                // more than a header's room stays between next and first.
                break next;
            }
            self.drop_oldest(mem, cap)?;
        };

        let header = RecordHeader {
            ts_nsec,
            len: size as u16,
            text_len: text.len() as u16,
            dict_len: dict.len() as u16,
            facility,
            flags: flags & LOG_FLAGS_MASK,
            level: level & LEVEL_MAX,
        };
        let addr = self.base + pos as u64;
        mem.write(addr, &header.encode())?;
        mem.write(addr + HEADER_LEN as u64, text)?;
        mem.write(addr + (HEADER_LEN + text.len()) as u64, dict)?;
        let used = header.used_len();
        self.zero(mem, pos + used, size - used)?;
        self.next_idx = (pos + size) as u32;
        self.next_seq += 1;
        debug_assert!(self.invariant_holds(), "printk ring invariant broken: {self:?}");
        Ok(())
    }

    /// Whether the writer's placement invariant holds for the current
    /// indices (it does after every [`LogRing::store`]; checked there in
    /// debug builds and after every store in the tests):
    ///
    /// - an empty ring is at 0 (`first_idx == next_idx == 0` once a store
    ///   found it empty);
    /// - indices are aligned and inside the ring, and the newest record
    ///   leaves room for one more header before the end of the ring (where
    ///   the wrap marker goes);
    /// - not wrapped (`first_idx < next_idx`): the live records are
    ///   `first_idx..next_idx`;
    /// - wrapped (`first_idx > next_idx`): *more than* one header's room
    ///   separates the newest record's end from the oldest record, so a
    ///   reader without the indices can tell the two apart.
    #[must_use]
    pub const fn invariant_holds(&self) -> bool {
        // INVARIANT: what `store_with_dict` establishes after every record;
        // `libmic::klog` decodes raw snapshots relying on it.
        let cap = self.capacity() as usize;
        let (first, next) = (self.first_idx as usize, self.next_idx as usize);
        if self.is_empty() {
            return first == next;
        }
        if first % LOG_ALIGN != 0 || next % LOG_ALIGN != 0 || next + HEADER_LEN > cap || first >= cap {
            return false;
        }
        if first < next {
            true
        } else {
            first > next && first - next > HEADER_LEN
        }
    }

    /// Drops the record at `first_idx`, zeroing its header. A header that
    /// cannot be a live record (the memory was scribbled on) makes the whole
    /// ring be cleared instead.
    fn drop_oldest(&mut self, mem: &impl Memory, cap: usize) -> Result<(), MemError> {
        let first = self.first_idx as usize;
        let next = self.next_idx as usize;
        let wrapped = first > next;
        let mut raw = [0u8; HEADER_LEN];
        mem.read(self.base + first as u64, &mut raw)?;
        let len = RecordHeader::decode(&raw).len as usize;
        let limit = if wrapped { cap - HEADER_LEN } else { next };
        if len < HEADER_LEN || len % LOG_ALIGN != 0 || first + len > limit {
            return self.clear(mem);
        }
        mem.write(self.base + first as u64, &[0u8; HEADER_LEN])?;
        self.first_idx = (first + len) as u32;
        self.first_seq += 1;
        if wrapped && !self.is_empty() {
            mem.read(self.base + u64::from(self.first_idx), &mut raw)?;
            if RecordHeader::decode(&raw).is_wrap_marker() {
                self.first_idx = 0;
            }
        }
        Ok(())
    }

    /// The live records, oldest first, read from `snapshot`: a copy of the
    /// ring's bytes (at least [`LogRing::capacity`] of them) taken while
    /// this state was current. Stops early at anything that does not parse.
    #[must_use]
    pub fn records<'a>(&self, snapshot: &'a [u8]) -> RingRecords<'a> {
        RingRecords {
            buf: snapshot.get(..self.capacity() as usize).unwrap_or(&[]),
            idx: self.first_idx as usize,
            remaining: self.live_records(),
        }
    }
}

/// Iterator returned by [`LogRing::records`].
#[derive(Debug, Clone)]
pub struct RingRecords<'a> {
    buf: &'a [u8],
    idx: usize,
    remaining: u64,
}

impl<'a> Iterator for RingRecords<'a> {
    type Item = Record<'a>;

    fn next(&mut self) -> Option<Record<'a>> {
        if self.remaining == 0 {
            return None;
        }
        if RecordHeader::read_from(self.buf, self.idx).is_some_and(|h| h.is_wrap_marker()) {
            self.idx = 0;
        }
        let Some(rec) = parse_record(self.buf, self.idx) else {
            self.remaining = 0;
            return None;
        };
        self.idx = rec.end();
        self.remaining -= 1;
        Some(rec)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use std::vec;
    use std::vec::Vec;

    /// Card memory for the ring tests.
    type VecMem = crate::fake::FakeMem;

    fn text_of(i: u64, len: usize) -> Vec<u8> {
        let mut t = std::format!("msg {i} ").into_bytes();
        t.resize(len, b'a' + (i % 26) as u8);
        t
    }

    #[test]
    fn header_roundtrip_and_bit_layout() {
        let h = RecordHeader {
            ts_nsec: 0x0102_0304_0506_0708,
            len: 40,
            text_len: 20,
            dict_len: 3,
            facility: 3,
            flags: LOG_NEWLINE | LOG_PREFIX,
            level: 6,
        };
        let b = h.encode();
        assert_eq!(&b[..8], &[8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(&b[8..14], &[40, 0, 20, 0, 3, 0]);
        assert_eq!(b[14], 3);
        assert_eq!(b[15], (6 << 5) | 6);
        assert_eq!(RecordHeader::decode(&b), h);
        assert_eq!(RecordHeader::WRAP_MARKER.encode(), [0; 16]);
        assert!(RecordHeader::decode(&[0; 16]).is_wrap_marker());
    }

    #[test]
    fn record_len_is_aligned() {
        assert_eq!(record_len(0, 0), 16);
        assert_eq!(record_len(1, 0), 24);
        assert_eq!(record_len(8, 0), 24);
        assert_eq!(record_len(5, 4), 32);
        assert_eq!(align_up(usize::MAX) % LOG_ALIGN, 0);
    }

    #[test]
    fn parse_record_is_strict() {
        let mut buf = vec![0u8; 64];
        let h = RecordHeader {
            ts_nsec: 5,
            len: 32,
            text_len: 5,
            dict_len: 4,
            facility: 0,
            flags: LOG_NEWLINE,
            level: 4,
        };
        buf[..16].copy_from_slice(&h.encode());
        buf[16..21].copy_from_slice(b"hello");
        buf[21..25].copy_from_slice(b"A=bc");
        let r = parse_record(&buf, 0).unwrap();
        assert_eq!(r.text, b"hello");
        assert_eq!(r.dict, b"A=bc");
        assert_eq!(r.end(), 32);
        assert_eq!(r.level(), 4);

        // Zero header, misaligned offset, header past the end.
        assert!(parse_record(&buf, 32).is_none());
        assert!(parse_record(&buf, 4).is_none());
        assert!(parse_record(&buf, 56).is_none());
        assert!(parse_record(&buf, usize::MAX - 7).is_none());

        let mut bad = |f: &dyn Fn(&mut RecordHeader)| {
            let mut h2 = h;
            f(&mut h2);
            buf[..16].copy_from_slice(&h2.encode());
            parse_record(&buf, 0).is_none()
        };
        assert!(bad(&|h| h.len = 24)); // too short for its payload
        assert!(bad(&|h| h.len = 36)); // not aligned
        assert!(bad(&|h| h.len = 72)); // past the buffer
        assert!(bad(&|h| h.len = 0)); // marker
        assert!(bad(&|h| h.flags = 0x10)); // unknown flag
        assert!(bad(&|h| h.text_len = 0xffff));
        assert!(bad(&|h| h.len = 40)); // longer than 3.10 makes it
        assert!(!bad(&|_| ()));
        buf[18] = 0; // a NUL inside the text: not a C string
        assert!(parse_record(&buf, 0).is_none());
        buf[18] = b'l';
        buf[23] = 0; // inside the dictionary: its separator, fine
        assert!(parse_record(&buf, 0).is_some());
        buf[30] = 1; // padding
        assert!(parse_record(&buf, 0).is_none());
    }

    #[test]
    fn text_ends_at_its_first_nul() {
        let mem = VecMem::new(256);
        let mut ring = LogRing::new(0, 256);
        ring.store_with_dict(&mem, 1, 0, 6, LOG_NEWLINE, b"ab\0cd", b"K=v\0L=w")
            .unwrap();
        let snap = mem.bytes(0, 256);
        let r = parse_record(&snap, 0).unwrap();
        assert_eq!((r.text, r.dict), (&b"ab"[..], &b"K=v\0L=w"[..]));
        assert_eq!(r.end(), record_len(2, 7));
    }

    #[test]
    fn invariant_check_rejects_broken_indices() {
        let ring = |first, next, first_seq| LogRing {
            base: 0,
            len: 256,
            first_idx: first,
            next_idx: next,
            first_seq,
            next_seq: 5,
        };
        assert!(LogRing::new(0, 256).invariant_holds());
        assert!(ring(0, 240, 0).invariant_holds());
        assert!(ring(64, 200, 3).invariant_holds());
        assert!(ring(64, 40, 3).invariant_holds(), "wrapped with 24 bytes between");
        assert!(!ring(64, 48, 3).invariant_holds(), "only a header's room between");
        assert!(!ring(64, 56, 3).invariant_holds());
        assert!(!ring(0, 248, 0).invariant_holds(), "no room for the wrap marker");
        assert!(!ring(4, 200, 3).invariant_holds(), "unaligned");
        assert!(!ring(8, 8, 3).invariant_holds(), "live records but no room");
        assert!(!ring(8, 16, 5).invariant_holds(), "empty but not at 0");
    }

    #[test]
    fn store_refuses_bad_regions() {
        let mem = VecMem::new(256);
        let mut ring = LogRing::new(200, 128);
        assert_eq!(
            ring.store(&mem, 0, 0, 6, b"x"),
            Err(MemError::OutOfBounds { addr: 200, len: 128 })
        );
        let mut tiny = LogRing::new(0, 31);
        assert!(tiny.store(&mem, 0, 0, 6, b"").is_err());
        let mut huge = LogRing::new(u64::MAX - 4, 64);
        assert!(huge.store(&mem, 0, 0, 6, b"").is_err());
        assert_eq!(ring.next_seq(), 0);
        assert!(mem.data.borrow().iter().all(|&b| b == 0));
    }

    #[test]
    fn single_record_layout() {
        let mem = VecMem::new(512);
        let mut ring = LogRing::new(64, 256);
        ring.store(&mem, 1234, 0, 6, b"hello").unwrap();
        let snap = mem.bytes(64, 256);
        let r = parse_record(&snap, 0).unwrap();
        assert_eq!(r.text, b"hello");
        assert_eq!(r.ts_nsec(), 1234);
        assert_eq!(r.header.len, 24);
        assert_eq!(r.header.flags, LOG_NEWLINE);
        assert_eq!((ring.first_idx(), ring.next_idx()), (0, 24));
        assert_eq!(ring.live_records(), 1);
        assert!(mem.data.borrow()[..64].iter().all(|&b| b == 0));
    }

    #[test]
    fn oversized_text_is_truncated() {
        let mem = VecMem::new(128);
        let mut ring = LogRing::new(0, 128);
        assert_eq!(ring.max_text_len(), 96);
        let long = [b'z'; 300];
        ring.store_with_dict(&mem, 1, 0, 6, 0, &long, b"K=v").unwrap();
        let snap = mem.bytes(0, 128);
        let r = parse_record(&snap, 0).unwrap();
        assert_eq!(r.text.len(), 96);
        assert!(r.dict.is_empty());
        assert_eq!(r.end(), 112);
        // The next one forces a wrap and drops the giant.
        ring.store(&mem, 2, 0, 6, b"small").unwrap();
        let snap = mem.bytes(0, 128);
        let got: Vec<_> = ring.records(&snap).map(|r| r.text).collect();
        assert_eq!(got, [b"small"]);
    }

    #[test]
    fn wraps_and_drops_oldest() {
        // 128-byte ring, 32-byte records (text 9..16).
        let mem = VecMem::new(128);
        let mut ring = LogRing::new(0, 128);
        for i in 0..3 {
            ring.store(&mem, i, 0, 6, &text_of(i, 16)).unwrap();
        }
        assert_eq!((ring.first_idx(), ring.next_idx()), (0, 96));
        // 96 + 32 + 16 > 128: wrap. Dropping #0 leaves first = 32, not more
        // than 32 + 16, so #1 goes too.
        ring.store(&mem, 3, 0, 6, &text_of(3, 16)).unwrap();
        assert_eq!((ring.first_idx(), ring.next_idx()), (64, 32));
        assert_eq!((ring.first_seq(), ring.next_seq()), (2, 4));
        let snap = mem.bytes(0, 128);
        assert!(is_zero_header_at(&snap, 96), "wrap marker");
        assert!(is_zero_header_at(&snap, 32), "dropped header zeroed");
        let got: Vec<u64> = ring.records(&snap).map(|r| r.ts_nsec()).collect();
        assert_eq!(got, [2, 3]);
        // 32 + 32 + 16 !< 64: drop #2, then first crosses the marker to 0.
        ring.store(&mem, 4, 0, 6, &text_of(4, 16)).unwrap();
        assert_eq!((ring.first_idx(), ring.next_idx()), (0, 64));
        let snap = mem.bytes(0, 128);
        let got: Vec<u64> = ring.records(&snap).map(|r| r.ts_nsec()).collect();
        assert_eq!(got, [3, 4]);
    }

    #[test]
    fn many_wraps_keep_the_newest_records() {
        let mem = VecMem::new(1024);
        let mut ring = LogRing::new(0, 1000);
        for i in 0..500u64 {
            let len = (i as usize * 37) % 150;
            ring.store(&mem, i * 10, 0, (i % 8) as u8, &text_of(i, len))
                .unwrap();
            assert!(ring.invariant_holds(), "after store {i}: {ring:?}");
            let snap = mem.bytes(0, 1000);
            let got: Vec<_> = ring.records(&snap).collect();
            assert_eq!(got.len() as u64, ring.live_records());
            for (k, r) in got.iter().enumerate() {
                let seq = ring.first_seq() + k as u64;
                assert_eq!(r.ts_nsec(), seq * 10);
                assert_eq!(r.text, &text_of(seq, (seq as usize * 37) % 150)[..]);
                assert_eq!(r.level(), (seq % 8) as u8);
            }
            assert_eq!(got.last().unwrap().ts_nsec(), i * 10);
            // Every valid header in the buffer belongs to a live record.
            let live: Vec<usize> = got.iter().map(|r| r.offset).collect();
            for off in (0..1000).step_by(LOG_ALIGN) {
                if parse_record(&snap, off).is_some_and(|r| r.text.starts_with(b"msg ")) {
                    assert!(live.contains(&off), "stale record at {off}");
                }
            }
        }
        assert!(ring.first_seq() > 400);
    }

    #[test]
    fn record_filling_the_ring_empties_it() {
        let mem = VecMem::new(256);
        let mut ring = LogRing::new(0, 256);
        for i in 0..5 {
            ring.store(&mem, i, 0, 6, &text_of(i, 20)).unwrap();
        }
        ring.store(&mem, 9, 0, 6, &[b'x'; 224]).unwrap();
        assert_eq!((ring.first_idx(), ring.next_idx()), (0, 240));
        assert_eq!(ring.live_records(), 1);
        ring.store(&mem, 10, 0, 6, b"after").unwrap();
        let snap = mem.bytes(0, 256);
        let got: Vec<u64> = ring.records(&snap).map(|r| r.ts_nsec()).collect();
        assert_eq!(got, [10]);
    }

    #[test]
    fn scribbled_ring_is_cleared_not_panicking() {
        let mem = VecMem::new(128);
        let mut ring = LogRing::new(0, 128);
        for i in 0..3 {
            ring.store(&mem, i, 0, 6, &text_of(i, 16)).unwrap();
        }
        mem.write(0, &[0xff; 16]).unwrap();
        ring.store(&mem, 3, 0, 6, &text_of(3, 16)).unwrap();
        let snap = mem.bytes(0, 128);
        let got: Vec<u64> = ring.records(&snap).map(|r| r.ts_nsec()).collect();
        assert_eq!(got, [3]);
    }

    #[test]
    fn unaligned_ring_length_uses_the_aligned_part() {
        let mem = VecMem::new(200);
        let mut ring = LogRing::new(0, 100);
        assert_eq!(ring.capacity(), 96);
        for i in 0..20 {
            ring.store(&mem, i, 0, 6, &text_of(i, 10)).unwrap();
            assert!(ring.next_idx() as usize + HEADER_LEN <= 96);
        }
        assert!(mem.data.borrow()[96..].iter().all(|&b| b == 0));
    }
    const TICK: u64 = 1_000_003;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]

        /// Any geometry, any texts: `store` either refuses or keeps exactly
        /// the newest records, never panics, never writes outside the ring,
        /// and leaves no dropped record parseable.
        #[test]
        fn store_keeps_the_newest_suffix(
            base in 0u64..256,
            len in 0u32..2048,
            slack in 0usize..200,
            lens in proptest::collection::vec(0usize..700, 1..150),
        ) {
            let mem_size = (base as usize + len as usize + slack).saturating_sub(32);
            let mem = VecMem::new(mem_size);
            let mut ring = LogRing::new(base, len);
            let fits = ring.capacity() >= MIN_RING_LEN
                && base + u64::from(ring.capacity()) <= mem_size as u64;
            let mut written: Vec<Vec<u8>> = Vec::new();
            for (i, &l) in lens.iter().enumerate() {
                let text = text_of(i as u64, l);
                let r = ring.store(&mem, TICK * (i as u64 + 1), 0, 6, &text);
                proptest::prop_assert_eq!(r.is_ok(), fits);
                proptest::prop_assert!(ring.invariant_holds(), "after store {}: {:?}", i, ring);
                if !fits {
                    proptest::prop_assert!(mem.data.borrow().iter().all(|&b| b == 0));
                    return Ok(());
                }
                written.push(text[..l.min(ring.max_text_len())].to_vec());
                let snap = mem.bytes(base, ring.capacity() as usize);
                let got: Vec<&[u8]> = ring.records(&snap).map(|r| r.text).collect();
                let want: Vec<&[u8]> =
                    written[ring.first_seq() as usize..].iter().map(Vec::as_slice).collect();
                proptest::prop_assert_eq!(got, want);
                let live: Vec<usize> = ring.records(&snap).map(|r| r.offset).collect();
                for off in (0..snap.len()).step_by(LOG_ALIGN) {
                    // (Text followed by the next header can look like a
                    // record by chance; a dropped record keeps its timestamp.)
                    if parse_record(&snap, off).is_some_and(|r| r.ts_nsec() % TICK == 0) {
                        proptest::prop_assert!(live.contains(&off), "stale record at {}", off);
                    }
                }
            }
            let m = mem.data.borrow();
            let end = (base + u64::from(ring.capacity())) as usize;
            proptest::prop_assert!(m[..base as usize].iter().all(|&b| b == 0));
            proptest::prop_assert!(m[end..].iter().all(|&b| b == 0));
        }
    }
}
