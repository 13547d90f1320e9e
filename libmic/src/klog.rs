//! Card kernel log: decode and follow the printk ring.
//!
//! debugfs `log_buf` hands out the card's `__log_buf` as raw bytes, without
//! `log_first_idx`/`log_next_idx`. [`decode`] rebuilds the ordered records
//! from such a snapshot alone, using the placement rules of the 3.10 writer
//! (see [`mic_core::printk`]):
//!
//! * the *newest* segment always starts at offset 0 (after a wrap the writer
//!   puts the next record there) and runs as a chain of valid records with
//!   non-decreasing timestamps;
//! * the *older* segment, if the ring has wrapped, is a chain of valid
//!   records that ends exactly at a wrap marker (an all-zero header) or at
//!   the end of the buffer, and starts more than one header's length after
//!   the end of the newest segment (the writer always leaves that gap);
//!   its timestamps are non-decreasing and not after the newest segment's
//!   first one.
//!
//! Among the candidate older chains the one ending with the most recent
//! record wins (chains left over from earlier laps of the ring end with
//! older records), then the longest one. Anything that does not parse is
//! skipped; garbage never panics, it only costs the records it overwrote
//! (and, within a segment, those it cuts off from their chain's anchor).
//!
//! [`LogFollower`] turns successive snapshots into a stream of records
//! without duplicates, and says when records were lost between two reads or
//! when the card restarted.

use std::fmt;

use mic_core::printk::{HEADER_LEN, LOG_ALIGN, Record, align_up, is_zero_header_at, parse_record};

/// `dmesg` level names, indexed by level (0 = `KERN_EMERG`).
pub const LEVEL_NAMES: [&str; 8] = ["emerg", "alert", "crit", "err", "warn", "notice", "info", "debug"];

/// The name of a log level (`level` is taken modulo 8, as the 3-bit field
/// holds it).
#[must_use]
pub fn level_name(level: u8) -> &'static str {
    LEVEL_NAMES[usize::from(level & 7)]
}

/// A timestamp the way `dmesg` and the kernel console print it:
/// `[%5lu.%06lu]` seconds and microseconds.
#[must_use]
pub fn format_timestamp(ts_nsec: u64) -> String {
    let secs = ts_nsec / 1_000_000_000;
    let usecs = (ts_nsec % 1_000_000_000) / 1_000;
    format!("[{secs:5}.{usecs:06}]")
}

/// One decoded record, owned.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LogRecord {
    /// Nanoseconds since the card booted (`local_clock()`).
    pub ts_nsec: u64,
    /// 0 = emerg .. 7 = debug.
    pub level: u8,
    /// Syslog facility (0 = kernel).
    pub facility: u8,
    /// The message, invalid UTF-8 replaced by U+FFFD.
    pub text: String,
    /// The dictionary (`KEY=value` pairs separated by NUL), if any, lossily
    /// converted like `text`.
    pub dict: Option<String>,
}

impl LogRecord {
    #[must_use]
    pub fn from_record(r: &Record<'_>) -> Self {
        Self {
            ts_nsec: r.header.ts_nsec,
            level: r.header.level,
            facility: r.header.facility,
            text: String::from_utf8_lossy(r.text).into_owned(),
            dict: (!r.dict.is_empty()).then(|| String::from_utf8_lossy(r.dict).into_owned()),
        }
    }

    /// `emerg` .. `debug`.
    #[must_use]
    pub fn level_name(&self) -> &'static str {
        level_name(self.level)
    }

    /// Seconds since boot (nanosecond precision is lost past 2^53 ns,
    /// about 104 days; the f64 is for display and arithmetic, not identity).
    #[must_use]
    #[allow(clippy::cast_precision_loss)]
    pub fn timestamp_secs(&self) -> f64 {
        self.ts_nsec as f64 / 1e9
    }

    /// `[    1.234567]`, see [`format_timestamp`].
    #[must_use]
    pub fn dmesg_timestamp(&self) -> String {
        format_timestamp(self.ts_nsec)
    }

    /// The line `dmesg` prints: `[    1.234567] text` (same as `Display`).
    #[must_use]
    pub fn dmesg_line(&self) -> String {
        self.to_string()
    }
}

impl From<&Record<'_>> for LogRecord {
    fn from(r: &Record<'_>) -> Self {
        Self::from_record(r)
    }
}

/// `dmesg` style: `[    1.234567] text`.
impl fmt::Display for LogRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.dmesg_timestamp(), self.text)
    }
}

/// Decodes a raw `log_buf` snapshot into its records, oldest first. See the
/// module documentation for the rules.
#[must_use]
pub fn decode(buf: &[u8]) -> Vec<LogRecord> {
    decode_records(buf).iter().map(LogRecord::from_record).collect()
}

/// [`decode`] without copying: the records borrowed from `buf`.
#[must_use]
pub fn decode_records(buf: &[u8]) -> Vec<Record<'_>> {
    let newest = chain_from(buf, 0);
    let (lo, bound) = match (newest.first(), newest.last()) {
        // The writer keeps more than a header's room between the newest
        // record's end and the oldest record.
        (Some(first), Some(last)) => (align_up(last.end() + HEADER_LEN + 1), Some(first.ts_nsec())),
        _ => (0, None),
    };
    let mut out = match older_start(buf, lo, bound) {
        Some(start) => chain_from(buf, start),
        None => Vec::new(),
    };
    out.extend(newest);
    out
}

/// The chain of valid records starting at `off`, as long as timestamps do
/// not decrease.
fn chain_from(buf: &[u8], mut off: usize) -> Vec<Record<'_>> {
    let mut out: Vec<Record<'_>> = Vec::new();
    while let Some(r) = parse_record(buf, off) {
        if out.last().is_some_and(|p| r.ts_nsec() < p.ts_nsec()) {
            break;
        }
        off = r.end();
        out.push(r);
    }
    out
}

/// Whether a chain may end at `end`: at a wrap marker, at the buffer end, or
/// where no header fits before the buffer end.
fn is_terminator(buf: &[u8], end: usize) -> bool {
    buf.len().saturating_sub(end) < HEADER_LEN || is_zero_header_at(buf, end)
}

#[derive(Clone, Copy)]
struct Chain {
    count: usize,
    first_ts: u64,
    last_ts: u64,
}

/// The start (at or after `lo`) of the best chain that ends at a terminator
/// and whose records are not later than `bound`.
fn older_start(buf: &[u8], lo: usize, bound: Option<u64>) -> Option<usize> {
    let slots = buf.len() / LOG_ALIGN;
    let lo_slot = lo / LOG_ALIGN;
    if lo_slot >= slots {
        return None;
    }
    // chains[i - lo_slot]: the terminated chain starting at slot i, if any.
    let mut chains: Vec<Option<Chain>> = vec![None; slots - lo_slot];
    let mut best: Option<(usize, Chain)> = None;
    for slot in (lo_slot..slots).rev() {
        let Some(r) = parse_record(buf, slot * LOG_ALIGN) else {
            continue;
        };
        let ts = r.ts_nsec();
        let end = r.end();
        let chain = if is_terminator(buf, end) {
            Some(Chain {
                count: 1,
                first_ts: ts,
                last_ts: ts,
            })
        } else {
            chains
                .get((end / LOG_ALIGN).wrapping_sub(lo_slot))
                .copied()
                .flatten()
                .filter(|next| next.first_ts >= ts)
                .map(|next| Chain {
                    count: next.count + 1,
                    first_ts: ts,
                    last_ts: next.last_ts,
                })
        };
        chains[slot - lo_slot] = chain;
        let Some(c) = chain else { continue };
        if bound.is_some_and(|b| c.last_ts > b) {
            continue;
        }
        // Scanning downwards, ties keep the lower start.
        let better = best.is_none_or(|(_, b)| {
            if bound.is_some() {
                (c.last_ts, c.count) >= (b.last_ts, b.count)
            } else {
                (c.count, c.last_ts) >= (b.count, b.last_ts)
            }
        });
        if better {
            best = Some((slot * LOG_ALIGN, c));
        }
    }
    best.map(|(start, _)| start)
}

/// What one [`LogFollower::update`] produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Update {
    /// Records not yielded before, oldest first.
    pub records: Vec<LogRecord>,
    /// Records may have been overwritten before they could be read: the
    /// last record yielded before is no longer in the snapshot. (Reported
    /// also when exactly that record was the last to go, which cannot be
    /// told apart.)
    pub lost: bool,
    /// The card restarted (its log went back in time): the follower started
    /// over and `records` is the new log from its beginning.
    pub reset: bool,
}

/// Follows the card log across successive snapshots: every record is
/// yielded once, in order.
///
/// It remembers the timestamp of the last record yielded and the records
/// yielded with that timestamp, so records sharing a timestamp are neither
/// repeated nor skipped.
#[derive(Debug, Clone, Default)]
pub struct LogFollower {
    /// The records of the last snapshot carrying its newest timestamp (all
    /// yielded).
    tail: Vec<LogRecord>,
    yielded: u64,
}

impl LogFollower {
    /// A follower that has seen nothing: the first update yields the whole
    /// snapshot.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Timestamp of the last record yielded.
    #[must_use]
    pub fn last_ts(&self) -> Option<u64> {
        self.tail.last().map(|r| r.ts_nsec)
    }

    /// Number of records yielded so far (across resets).
    #[must_use]
    pub fn yielded(&self) -> u64 {
        self.yielded
    }

    /// Decodes a raw `log_buf` snapshot and yields what is new in it.
    pub fn update(&mut self, snapshot: &[u8]) -> Update {
        self.update_records(decode(snapshot))
    }

    /// Like [`LogFollower::update`] for an already decoded snapshot
    /// (ordered by timestamp, as [`decode`] returns it).
    ///
    /// An empty snapshot changes nothing (a card that is not up yet, or a
    /// cleared buffer); a restart is noticed once the new log has records.
    pub fn update_records(&mut self, recs: Vec<LogRecord>) -> Update {
        let Some(newest_ts) = recs.last().map(|r| r.ts_nsec) else {
            return Update::default();
        };
        let Some(t) = self.last_ts() else {
            return self.take(recs, 0, false, false);
        };
        let at_t = recs.partition_point(|r| r.ts_nsec < t);
        let after_t = recs.partition_point(|r| r.ts_nsec <= t);
        let group = &recs[at_t..after_t];
        // Records older than the last one yielded are still there, so that
        // one must be too, with every record we saw at its timestamp.
        let inconsistent = at_t > 0 && !group.starts_with(&self.tail);
        if newest_ts < t || inconsistent {
            self.tail.clear();
            return self.take(recs, 0, false, true);
        }
        let seen = if at_t > 0 {
            self.tail.len()
        } else {
            overlap(group, &self.tail)
        };
        self.take(recs, at_t + seen, seen == 0, false)
    }

    fn take(&mut self, mut recs: Vec<LogRecord>, skip: usize, lost: bool, reset: bool) -> Update {
        if let Some(newest) = recs.last().map(|r| r.ts_nsec) {
            let from = recs.partition_point(|r| r.ts_nsec < newest);
            self.tail = recs[from..].to_vec();
        }
        let records = recs.split_off(skip.min(recs.len()));
        self.yielded += records.len() as u64;
        Update { records, lost, reset }
    }
}

/// The largest `k` such that the first `k` of `group` are the last `k` of
/// `tail`.
fn overlap(group: &[LogRecord], tail: &[LogRecord]) -> usize {
    (1..=group.len().min(tail.len()))
        .rev()
        .find(|&k| group[..k] == tail[tail.len() - k..])
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mic_core::hw::{MemError, Memory, in_bounds};
    use mic_core::printk::{LogRing, RecordHeader, record_len};
    use proptest::prelude::*;
    use std::cell::RefCell;

    /// Card memory: a guard zone, then the ring.
    struct VecMem(RefCell<Vec<u8>>);

    impl VecMem {
        fn new(size: usize) -> Self {
            Self(RefCell::new(vec![0; size]))
        }
        fn bytes(&self, base: u64, len: u32) -> Vec<u8> {
            self.0.borrow()[base as usize..base as usize + len as usize].to_vec()
        }
    }

    impl Memory for VecMem {
        fn size(&self) -> u64 {
            self.0.borrow().len() as u64
        }
        fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
            let len = buf.len() as u64;
            if !in_bounds(addr, len, self.size()) {
                return Err(MemError::OutOfBounds { addr, len });
            }
            buf.copy_from_slice(&self.0.borrow()[addr as usize..(addr + len) as usize]);
            Ok(())
        }
        fn write(&self, addr: u64, data: &[u8]) -> Result<(), MemError> {
            let len = data.len() as u64;
            if !in_bounds(addr, len, self.size()) {
                return Err(MemError::OutOfBounds { addr, len });
            }
            self.0.borrow_mut()[addr as usize..(addr + len) as usize].copy_from_slice(data);
            Ok(())
        }
    }

    /// A ring at card address 64 with everything it ever stored.
    struct Card {
        mem: VecMem,
        ring: LogRing,
        written: Vec<LogRecord>,
    }

    impl Card {
        const BASE: u64 = 64;

        fn new(len: u32) -> Self {
            Self {
                mem: VecMem::new(Self::BASE as usize + len as usize + 64),
                ring: LogRing::new(Self::BASE, len),
                written: Vec::new(),
            }
        }

        fn log(&mut self, ts_nsec: u64, level: u8, facility: u8, text: &str) {
            self.ring
                .store(&self.mem, ts_nsec, facility, level, text.as_bytes())
                .unwrap();
            self.written.push(LogRecord {
                ts_nsec,
                level,
                facility,
                text: text.to_owned(),
                dict: None,
            });
        }

        fn snapshot(&self) -> Vec<u8> {
            self.mem.bytes(Self::BASE, self.ring.len())
        }

        /// What the writer still holds.
        fn live(&self) -> &[LogRecord] {
            &self.written[self.ring.first_seq() as usize..]
        }

        fn guard_untouched(&self) -> bool {
            let m = self.mem.0.borrow();
            let end = (Self::BASE + u64::from(self.ring.len())) as usize;
            m[..Self::BASE as usize].iter().all(|&b| b == 0) && m[end..].iter().all(|&b| b == 0)
        }
    }

    fn msg(i: usize, len: usize) -> String {
        let mut s = format!("msg {i}:");
        while s.len() < len {
            s.push((b'a' + (i % 26) as u8) as char);
        }
        s.truncate(len);
        s
    }

    fn texts(recs: &[LogRecord]) -> Vec<&str> {
        recs.iter().map(|r| r.text.as_str()).collect()
    }

    #[test]
    fn helpers() {
        assert_eq!(format_timestamp(0), "[    0.000000]");
        assert_eq!(format_timestamp(1_234_567_891), "[    1.234567]");
        assert_eq!(format_timestamp(123_456_000_000_000), "[123456.000000]");
        assert_eq!(level_name(0), "emerg");
        assert_eq!(level_name(3), "err");
        assert_eq!(level_name(4), "warn");
        assert_eq!(level_name(7), "debug");
        let r = LogRecord {
            ts_nsec: 2_500_000_000,
            level: 6,
            facility: 0,
            text: "hi".into(),
            dict: None,
        };
        assert_eq!(r.level_name(), "info");
        assert!((r.timestamp_secs() - 2.5).abs() < 1e-12);
        assert_eq!(r.to_string(), "[    2.500000] hi");
        assert_eq!(r.dmesg_line(), "[    2.500000] hi");
    }

    #[test]
    fn empty_and_tiny_buffers() {
        assert!(decode(&[]).is_empty());
        assert!(decode(&[0; 7]).is_empty());
        assert!(decode(&[0; 16]).is_empty());
        assert!(decode(&vec![0; 4096]).is_empty());
        assert!(decode(&vec![0xff; 4096]).is_empty());
    }

    #[test]
    fn one_record() {
        let mut card = Card::new(1024);
        card.log(1_000, 3, 0, "hello, world");
        let got = decode(&card.snapshot());
        assert_eq!(got, card.written);
        assert_eq!(got[0].level_name(), "err");
        assert!(card.guard_untouched());
    }

    #[test]
    fn dict_and_lossy_text() {
        let mut card = Card::new(256);
        card.ring
            .store_with_dict(
                &card.mem,
                5,
                1,
                7,
                0,
                b"bad \xff utf8",
                b"SUBSYSTEM=pci\0DEVICE=+pci:0000:00:01.0",
            )
            .unwrap();
        let got = decode(&card.snapshot());
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].text, "bad \u{fffd} utf8");
        assert_eq!(
            got[0].dict.as_deref(),
            Some("SUBSYSTEM=pci\0DEVICE=+pci:0000:00:01.0")
        );
        assert_eq!((got[0].level, got[0].facility), (7, 1));
    }

    #[test]
    fn exact_wrap() {
        // 128-byte ring: 16 + 96 = 112 bytes of record leave exactly the 16
        // bytes of the wrap marker at the end.
        let mut card = Card::new(128);
        card.log(1, 6, 0, &msg(0, 72));
        card.log(2, 6, 0, &msg(1, 8));
        assert_eq!(card.ring.next_idx(), 112);
        card.log(3, 6, 0, &msg(2, 8));
        assert_eq!(card.ring.next_idx(), 24);
        assert_eq!(card.ring.first_idx(), 88);
        let snap = card.snapshot();
        assert!(is_zero_header_at(&snap, 112));
        assert_eq!(decode(&snap), card.live());
        assert_eq!(texts(&decode(&snap)), [msg(1, 8), msg(2, 8)]);
    }

    #[test]
    fn older_segment_ending_at_buffer_end() {
        // A foreign writer whose last record ends exactly at the buffer end.
        let mut buf = vec![0u8; 96];
        let mut put = |off: usize, ts: u64, text: &[u8]| {
            let h = RecordHeader {
                ts_nsec: ts,
                len: record_len(text.len(), 0) as u16,
                text_len: text.len() as u16,
                level: 6,
                ..RecordHeader::default()
            };
            buf[off..off + 16].copy_from_slice(&h.encode());
            buf[off + 16..off + 16 + text.len()].copy_from_slice(text);
        };
        put(0, 30, b"newest");
        put(48, 10, b"older1");
        put(72, 20, b"older2");
        assert_eq!(texts(&decode(&buf)), ["older1", "older2", "newest"]);
    }

    #[test]
    fn stale_chain_from_an_earlier_lap_loses_to_the_recent_one() {
        // 3.10 does not zero dropped headers: beyond this lap's marker, a
        // chain of an earlier lap survives and is longer than this lap's
        // older segment.
        let mut buf = vec![0u8; 256];
        let mut put = |off: usize, ts: u64, text: &str| {
            let t = text.as_bytes();
            let h = RecordHeader {
                ts_nsec: ts,
                len: record_len(t.len(), 0) as u16,
                text_len: t.len() as u16,
                level: 6,
                ..RecordHeader::default()
            };
            buf[off..off + 16].copy_from_slice(&h.encode());
            buf[off + 16..off + 16 + t.len()].copy_from_slice(t);
        };
        put(0, 100, "new");
        // gap 24..64
        put(64, 50, "old-a");
        put(88, 51, "old-b");
        // marker at 112..128 (zeros), then an earlier lap's records
        put(128, 1, "stale1");
        put(152, 2, "stale2");
        put(176, 3, "stale3");
        put(200, 4, "stale4");
        // its marker at 224
        assert_eq!(texts(&decode(&buf)), ["old-a", "old-b", "new"]);
    }

    #[test]
    fn many_wraps_decode_exactly() {
        let mut card = Card::new(1000);
        for i in 0..2000 {
            let len = (i * 37) % 170;
            card.log(i as u64 * 1000 + 7, (i % 8) as u8, (i % 3) as u8, &msg(i, len));
            assert_eq!(decode(&card.snapshot()), card.live(), "after {i}");
        }
        assert!(card.ring.first_seq() > 1900);
        assert!(card.guard_untouched());
    }

    #[test]
    fn garbage_region_is_skipped() {
        for (from, to) in [
            (0, 40),
            (100, 180),
            (300, 312),
            (500, 640),
            (900, 1024),
            (0, 1024),
        ] {
            let mut card = Card::new(1024);
            let mut i = 0;
            while i < 100 || card.ring.first_idx() < card.ring.next_idx() {
                card.log(i as u64 * 10, 6, 0, &msg(i, 10 + (i * 13) % 60));
                i += 1;
            }
            let mut snap = card.snapshot();
            let mut x: u32 = 0x1234_5678 ^ from as u32;
            for b in &mut snap[from..to] {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                *b = x as u8;
            }
            let got = decode_records(&snap);
            // Records clear of the garbage are an ordered subsequence of the
            // live records (garbage inside a text goes unnoticed).
            let live = card.live();
            let mut it = live.iter();
            for r in got.iter().filter(|r| r.end() <= from || r.offset >= to) {
                let r = LogRecord::from_record(r);
                assert!(it.any(|l| *l == r), "{r:?} not live or out of order");
            }
            // What survives for sure: newest-segment records before the
            // garbage, older-segment records after it.
            let clean = card.snapshot();
            let (first, next) = (card.ring.first_idx() as usize, card.ring.next_idx() as usize);
            assert!(first > next, "the scenario has wrapped");
            let got_at: Vec<usize> = got.iter().map(|r| r.offset).collect();
            for r in card.ring.records(&clean) {
                let newest = r.offset < next;
                if from > 0 && ((newest && r.end() <= from) || (!newest && r.offset >= to)) {
                    assert!(got_at.contains(&r.offset), "lost {} for {from}..{to}", r.offset);
                }
            }
        }
    }

    #[test]
    fn follower_across_wraps() {
        let mut card = Card::new(512);
        let mut f = LogFollower::new();
        let mut seen = Vec::new();
        for i in 0..300 {
            card.log(i as u64 * 5, 6, 0, &msg(i, 20 + i % 30));
            if i % 3 == 0 {
                let u = f.update(&card.snapshot());
                assert!(!u.lost && !u.reset, "at {i}");
                seen.extend(u.records);
            }
        }
        let u = f.update(&card.snapshot());
        seen.extend(u.records);
        assert_eq!(seen, card.written);
        assert_eq!(f.yielded(), 300);
        // Nothing new: nothing yielded.
        assert_eq!(f.update(&card.snapshot()), Update::default());
        assert_eq!(f.update(&vec![0; 512]), Update::default());
    }

    #[test]
    fn follower_reports_loss() {
        let mut card = Card::new(512);
        let mut f = LogFollower::new();
        card.log(1, 6, 0, "first");
        assert_eq!(texts(&f.update(&card.snapshot()).records), ["first"]);
        for i in 0..100 {
            card.log(10 + i, 6, 0, &msg(i as usize, 40));
        }
        let u = f.update(&card.snapshot());
        assert!(u.lost && !u.reset);
        assert_eq!(u.records, card.live());
        let u = f.update(&card.snapshot());
        assert!(!u.lost && u.records.is_empty());
    }

    #[test]
    fn follower_equal_timestamps() {
        let mut card = Card::new(4096);
        let mut f = LogFollower::new();
        card.log(0, 6, 0, "a");
        card.log(0, 6, 0, "a");
        assert_eq!(f.update(&card.snapshot()).records.len(), 2);
        card.log(0, 6, 0, "a");
        card.log(0, 6, 0, "b");
        let u = f.update(&card.snapshot());
        assert_eq!(texts(&u.records), ["a", "b"]);
        card.log(5, 6, 0, "c");
        assert_eq!(texts(&f.update(&card.snapshot()).records), ["c"]);
    }

    #[test]
    fn follower_equal_timestamps_partly_dropped() {
        let mut f = LogFollower::new();
        let r = |t: u64, s: &str| LogRecord {
            ts_nsec: t,
            level: 6,
            facility: 0,
            text: s.into(),
            dict: None,
        };
        f.update_records(vec![r(1, "x"), r(7, "a"), r(7, "b")]);
        // "a" dropped, "b" still there, "c" and "d" new.
        let u = f.update_records(vec![r(7, "b"), r(7, "c"), r(8, "d")]);
        assert_eq!(texts(&u.records), ["c", "d"]);
        assert!(!u.lost);
    }

    #[test]
    fn follower_notices_restart() {
        let mut card = Card::new(2048);
        let mut f = LogFollower::new();
        for i in 0..10 {
            card.log(1_000_000 + i, 6, 0, &msg(i as usize, 30));
        }
        assert_eq!(f.update(&card.snapshot()).records.len(), 10);

        // Reboot: the buffer is cleared, the clock starts over.
        let mut card = Card::new(2048);
        card.log(5, 6, 0, "Linux version 2.6.38.8+mpss3.8.6");
        let u = f.update(&card.snapshot());
        assert!(u.reset && !u.lost);
        assert_eq!(u.records, card.written);

        // Reboot again, and the new log overtakes the old timestamps before
        // the next read.
        let mut card2 = Card::new(2048);
        for i in 0..10 {
            card2.log(i * 1_000_000, 6, 0, &msg(100 + i as usize, 30));
        }
        let u = f.update(&card2.snapshot());
        assert!(u.reset);
        assert_eq!(u.records, card2.written);
        card2.log(20_000_000, 6, 0, "later");
        let u = f.update(&card2.snapshot());
        assert!(!u.reset && !u.lost);
        assert_eq!(texts(&u.records), ["later"]);
    }

    const MAX_TEXT: usize = 199;

    fn scenario() -> impl Strategy<Value = (u32, Vec<(u64, u8, u8, String)>)> {
        (
            512u32..8192,
            proptest::collection::vec((1u64..5_000_000, 0u8..8, 0u8..24, "[ -~]{0,199}"), 1..400),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn decode_matches_what_the_writer_holds((len, recs) in scenario()) {
            let mut card = Card::new(len);
            let mut ts = 0;
            for (dt, level, facility, text) in &recs {
                ts += dt;
                card.log(ts, *level, *facility, text);
                prop_assert_eq!(decode(&card.snapshot()), card.live());
            }
            prop_assert!(card.guard_untouched());
        }

        #[test]
        fn follower_yields_everything_once((len, recs) in scenario(), k in 1usize..64) {
            // The newest (cap - 3 * 232) / 216 records are always live (at
            // most two records' room plus slack is ever unused).
            let worst = record_len(MAX_TEXT, 0);
            let guaranteed = (len as usize & !7).saturating_sub(3 * (worst + HEADER_LEN)) / worst;
            let k = k.min(guaranteed.max(1));
            let mut card = Card::new(len);
            let mut f = LogFollower::new();
            let mut seen = Vec::new();
            let mut ts = 0;
            for (i, (dt, level, facility, text)) in recs.iter().enumerate() {
                ts += dt;
                card.log(ts, *level, *facility, text);
                if (i + 1) % k == 0 || i + 1 == recs.len() {
                    // The test's premise: nothing unseen was dropped.
                    prop_assert!(card.ring.first_seq() as usize <= seen.len());
                    let last_still_held =
                        seen.is_empty() || (card.ring.first_seq() as usize) < seen.len();
                    let u = f.update(&card.snapshot());
                    prop_assert!(!u.reset);
                    if last_still_held {
                        prop_assert!(!u.lost);
                    }
                    seen.extend(u.records);
                }
            }
            prop_assert_eq!(&seen, &card.written);
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let got = decode(&bytes);
            prop_assert!(got.windows(2).all(|w| w[0].ts_nsec <= w[1].ts_nsec));
            let _ = LogFollower::new().update(&bytes);
        }

        #[test]
        fn corrupted_rings_never_panic(
            (len, recs) in scenario(),
            hits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..64),
            snapshots in 1usize..4,
        ) {
            let mut card = Card::new(len);
            let mut f = LogFollower::new();
            let mut ts = 0;
            for (i, (dt, level, facility, text)) in recs.iter().enumerate() {
                ts += dt;
                card.log(ts, *level, *facility, text);
                if i % (recs.len() / snapshots + 1) == 0 {
                    let mut snap = card.snapshot();
                    for (at, b) in &hits {
                        let n = snap.len();
                        snap[at % n] = *b;
                    }
                    let got = decode(&snap);
                    prop_assert!(got.windows(2).all(|w| w[0].ts_nsec <= w[1].ts_nsec));
                    let _ = f.update(&snap);
                }
            }
        }
    }
}
