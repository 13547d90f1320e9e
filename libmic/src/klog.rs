//! Card kernel log: decode and follow the printk ring.
//!
//! debugfs `log_buf` hands out the card's `__log_buf` as raw bytes, without
//! `log_first_idx`/`log_next_idx`. [`decode_log`] rebuilds the ordered
//! records from such a snapshot alone, using the placement rules of the
//! 3.10 writer (see [`mic_core::printk`]), and survives damage:
//!
//! * Every aligned offset where a record parses strictly is a candidate
//!   (strict: exact length, zero padding, known flags, a text without NUL).
//!   Of overlapping candidates the set covering the most records wins,
//!   records linked to a neighbour (one ending where the next begins) counting
//!   double: bytes that merely look like a header lose to the chain they
//!   would cut.
//! * Physically contiguous records form *pieces*; a piece that follows
//!   another across unreadable bytes continues its segment if its time does
//!   (it starts no earlier than the previous piece ends, or later than the
//!   segment began). Otherwise it begins an older segment.
//! * The first segment is the *newest* (after a wrap the writer starts again
//!   at offset 0). The *older* segment, if the ring has wrapped, is the one
//!   after it ending with the most recent record not after the newest
//!   segment's first one; other segments are leftovers of earlier laps of a
//!   writer that does not zero what it drops, and are not shown.
//! * Unreadable bytes between the records of a segment, before the newest
//!   segment's first record, and between the older segment's last record and
//!   its wrap marker are reported where they are, as [`Lost`] entries with
//!   their size: a valid record after damage is never hidden, and damage is
//!   never silent. (Garbage after the newest record, where the writer has
//!   not been yet, is no loss and is not reported.)
//!
//! [`LogFollower`] turns successive snapshots into a stream of entries
//! without duplicates. It never decides from the log that the card
//! restarted: an unreadable ring is not a reset. [`CardLogFollower`] adds
//! what really signals one, the card's `state` as seen through poll: every
//! reset passes through `offline` (or `reset_failed`), and a notification
//! after which the card still reads `online` while the newest record shown
//! has vanished from the log is a reset and boot between two reads.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use mic_core::abi::{MicState, MicStatus};
use mic_core::printk::{HEADER_LEN, LOG_ALIGN, Record, is_zero_header_at, parse_record};

use crate::attrs::escape_untrusted;
use crate::card::Card;
use crate::error::Result;
use crate::wait::StateWatcher;

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

/// Why records are missing from what was shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LostReason {
    /// Bytes of the ring could not be decoded (scribbled on, by a broken or
    /// hostile card): the records they held are gone.
    Damaged,
    /// The ring wrapped over records before they could be read.
    Overwritten,
    /// The card was reset while it was shutting down: its last lines, logged
    /// just before, may not have been read.
    ResetDuringShutdown,
}

impl LostReason {
    /// `damaged`, `overwritten`, `reset-during-shutdown` (as in JSON).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            LostReason::Damaged => "damaged",
            LostReason::Overwritten => "overwritten",
            LostReason::ResetDuringShutdown => "reset-during-shutdown",
        }
    }
}

/// A place in the log where records are missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Lost {
    pub reason: LostReason,
    /// How many bytes of the ring could not be read, for
    /// [`LostReason::Damaged`]. (Records overwritten cannot be counted: 3.10
    /// records carry no sequence number.)
    pub bytes: Option<u64>,
    /// Card time of the last record shown before the loss, if any.
    pub after_ts: Option<u64>,
    /// Card time of the first record shown after it, if any.
    pub before_ts: Option<u64>,
}

impl Lost {
    /// The loss in words, for humans:
    /// `312 bytes of the card log are unreadable (damaged) between [ 1.2] and [ 1.3]`.
    #[must_use]
    pub fn describe(&self) -> String {
        let span = match (self.after_ts, self.before_ts) {
            (Some(a), Some(b)) => format!(" between {} and {}", format_timestamp(a), format_timestamp(b)),
            (Some(a), None) => format!(" after {}", format_timestamp(a)),
            (None, Some(b)) => format!(" before {}", format_timestamp(b)),
            (None, None) => String::new(),
        };
        match self.reason {
            LostReason::Damaged => {
                let n = self.bytes.unwrap_or(0);
                format!(
                    "lost {n} byte{} of the card log{span}: unreadable (damaged)",
                    if n == 1 { "" } else { "s" }
                )
            }
            LostReason::Overwritten => {
                format!("lost records{span}: overwritten on the card before they could be read")
            }
            LostReason::ResetDuringShutdown => {
                "the card was reset during its shutdown: its last log lines may be missing".to_owned()
            }
        }
    }
}

/// One entry of a decoded or followed log, in order.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LogEntry {
    Record(LogRecord),
    /// Records are missing here.
    Lost(Lost),
    /// The card restarted: what follows is a new boot's log, from its
    /// beginning. (Only [`CardLogFollower`] says so.)
    Reset,
}

impl LogEntry {
    /// The record, if this is one.
    #[must_use]
    pub fn record(&self) -> Option<&LogRecord> {
        match self {
            LogEntry::Record(r) => Some(r),
            _ => None,
        }
    }
}

/// The records of `entries`, in order.
pub fn records(entries: &[LogEntry]) -> impl Iterator<Item = &LogRecord> {
    entries.iter().filter_map(LogEntry::record)
}

/// Decodes a raw `log_buf` snapshot into its records, oldest first (the
/// records of [`decode_log`], without the losses).
#[must_use]
pub fn decode(buf: &[u8]) -> Vec<LogRecord> {
    decode_records(buf).iter().map(LogRecord::from_record).collect()
}

/// [`decode`] without copying: the records borrowed from `buf`.
#[must_use]
pub fn decode_records(buf: &[u8]) -> Vec<Record<'_>> {
    layout(buf).records
}

/// Decodes a raw `log_buf` snapshot: its records oldest first, with a
/// [`Lost`] entry wherever damage hides some. See the module documentation
/// for the rules.
#[must_use]
pub fn decode_log(buf: &[u8]) -> Vec<LogEntry> {
    decode_marked(buf).0
}

/// [`decode_log`], and for each record whether it is lone (see
/// [`Layout::lone`]).
fn decode_marked(buf: &[u8]) -> (Vec<LogEntry>, Vec<bool>) {
    let Layout {
        records,
        damage,
        lone,
    } = layout(buf);
    let marks = records
        .iter()
        .map(|r| lone.binary_search(&r.offset).is_ok())
        .collect();
    let mut out = Vec::with_capacity(records.len() + damage.len());
    let mut gaps = damage.into_iter().peekable();
    let mut prev: Option<u64> = None;
    for (i, r) in records.iter().enumerate() {
        let mut bytes = 0;
        while let Some(&(at, n)) = gaps.peek() {
            if at != i {
                break;
            }
            bytes += n;
            gaps.next();
        }
        if bytes > 0 {
            out.push(LogEntry::Lost(Lost {
                reason: LostReason::Damaged,
                bytes: Some(bytes as u64),
                after_ts: prev,
                before_ts: Some(r.ts_nsec()),
            }));
        }
        prev = Some(r.ts_nsec());
        out.push(LogEntry::Record(LogRecord::from_record(r)));
    }
    (out, marks)
}

/// The records of a snapshot in log order, and the damage between them:
/// `(i, bytes)` means `bytes` unreadable bytes before `records[i]`.
struct Layout<'a> {
    records: Vec<Record<'a>>,
    damage: Vec<(usize, usize)>,
    /// Offsets of records with no record next to them on either side (and
    /// not at offset 0 or a terminator): where such a record belongs is
    /// guessed from its time alone, which damage may have changed.
    lone: Vec<usize>,
}

/// Physically contiguous records, each ending where the next begins, whose
/// time runs forward.
///
/// Damage can leave a record valid with a scribbled time (a header's
/// first eight bytes are its time): the first record after unreadable
/// bytes, and a record whose time falls outside its two neighbours' while
/// they agree with each other, are not trusted. They stay where they are,
/// but place nothing: a piece's keys are its trusted records' times.
struct Piece<'a> {
    records: Vec<Record<'a>>,
    /// The first trusted time.
    key_first: u64,
    /// The last trusted time.
    key_last: u64,
    /// Unreadable bytes come before it.
    after_gap: bool,
}

impl Piece<'_> {
    fn start(&self) -> usize {
        self.records[0].offset
    }
    fn end(&self) -> usize {
        self.records[self.records.len() - 1].end()
    }
}

/// Pieces whose time runs on across the unreadable bytes between them.
struct Segment<'a> {
    pieces: Vec<Piece<'a>>,
    /// The key of its first piece.
    first_ts: u64,
    /// The end time of its last piece placed by time.
    last_ts: u64,
}

impl Segment<'_> {
    fn count(&self) -> usize {
        self.pieces.iter().map(|p| p.records.len()).sum()
    }
    fn end(&self) -> usize {
        self.pieces[self.pieces.len() - 1].end()
    }
}

fn layout(buf: &[u8]) -> Layout<'_> {
    let selected = select(buf);
    let lone: Vec<usize> = (0..selected.len())
        .filter(|&k| {
            let r = &selected[k];
            let after = k > 0 && selected[k - 1].end() == r.offset;
            let before = selected.get(k + 1).is_some_and(|n| n.offset == r.end());
            !(after || before || r.offset == 0 || is_terminator(buf, r.end()))
        })
        .map(|k| selected[k].offset)
        .collect();
    let pieces = pieces(&selected);
    // A lone record after unreadable bytes whose time disagrees with the
    // pieces around it, while those agree with each other, has a scribbled
    // time: it stays where it physically is, in the segment before it.
    let outlier: Vec<bool> = (0..pieces.len())
        .map(|i| {
            let p = &pieces[i];
            if !(p.after_gap && p.records.len() == 1) || i == 0 || i + 1 >= pieces.len() {
                return false;
            }
            let (before, after) = (pieces[i - 1].key_last, pieces[i + 1].key_first);
            after >= before && (p.key_first < before || p.key_first > after)
        })
        .collect();
    let mut segments: Vec<Segment<'_>> = Vec::new();
    for (piece, outlier) in pieces.into_iter().zip(outlier) {
        let joins = segments
            .last()
            .is_some_and(|seg| outlier || piece.key_first >= seg.last_ts || piece.key_first > seg.first_ts);
        match segments.last_mut() {
            Some(seg) if joins => {
                // A lone record after unreadable bytes joins by its time,
                // but its time is too weak to move the segment's end.
                let lone_after_gap = piece.after_gap && piece.records.len() == 1;
                if !(outlier || lone_after_gap) {
                    seg.last_ts = piece.key_last;
                }
                seg.pieces.push(piece);
            }
            _ => segments.push(Segment {
                first_ts: piece.key_first,
                last_ts: piece.key_last,
                pieces: vec![piece],
            }),
        }
    }
    let mut segments = segments.into_iter();
    let Some(newest) = segments.next() else {
        return Layout {
            records: Vec::new(),
            damage: Vec::new(),
            lone,
        };
    };
    let bound = newest.first_ts;
    // Scanning in order, ties keep the earlier segment.
    let older = segments
        .filter(|s| s.last_ts <= bound)
        .fold(None::<Segment<'_>>, |best, s| match best {
            Some(b) if (b.last_ts, b.count()) >= (s.last_ts, s.count()) => Some(b),
            _ => Some(s),
        });

    let mut records = Vec::new();
    let mut damage = Vec::new();
    if let Some(seg) = older {
        let end = seg.end();
        push_segment(seg, &mut records, &mut damage);
        // The older segment ends at the wrap marker (or the buffer end).
        if !is_terminator(buf, end) {
            damage.push((records.len(), next_terminator(buf, end) - end));
        }
    }
    // The newest segment starts at offset 0.
    let start = newest.pieces[0].start();
    if start > 0 {
        damage.push((records.len(), start));
    }
    push_segment(newest, &mut records, &mut damage);
    Layout {
        records,
        damage,
        lone,
    }
}

/// The non-overlapping set of candidate records that covers the most
/// records, those linked to a neighbour (or ending at a terminator)
/// counting double; in physical order.
fn select(buf: &[u8]) -> Vec<Record<'_>> {
    let slots = buf.len() / LOG_ALIGN;
    // end_of[s]: the slot just past the candidate record at slot s (0: none).
    let mut end_of = vec![0u32; slots];
    let mut ends_at = vec![false; slots + 1];
    for (slot, end) in end_of.iter_mut().enumerate() {
        if let Some(r) = parse_record(buf, slot * LOG_ALIGN) {
            let e = r.end() / LOG_ALIGN;
            *end = e as u32;
            ends_at[e] = true;
        }
    }
    let weight = |slot: usize| -> u32 {
        let end = end_of[slot] as usize;
        let linked =
            ends_at[slot] || end_of.get(end).is_some_and(|&e| e != 0) || is_terminator(buf, end * LOG_ALIGN);
        1 + u32::from(linked)
    };
    // best[s]: the most weight a selection within slots s.. can have.
    let mut best = vec![0u32; slots + 1];
    for slot in (0..slots).rev() {
        let skip = best[slot + 1];
        let end = end_of[slot] as usize;
        best[slot] = if end == 0 {
            skip
        } else {
            skip.max(weight(slot) + best[end])
        };
    }
    let mut out = Vec::new();
    let mut slot = 0;
    while slot < slots {
        let end = end_of[slot] as usize;
        if end != 0 && weight(slot) + best[end] >= best[slot + 1] {
            if let Some(r) = parse_record(buf, slot * LOG_ALIGN) {
                out.push(r);
            }
            slot = end;
        } else {
            slot += 1;
        }
    }
    out
}

/// Appends a segment's records, noting the unreadable bytes between its
/// pieces.
fn push_segment<'a>(seg: Segment<'a>, records: &mut Vec<Record<'a>>, damage: &mut Vec<(usize, usize)>) {
    let mut prev_end = None;
    for piece in seg.pieces {
        if let Some(end) = prev_end.filter(|&e| e < piece.start()) {
            damage.push((records.len(), piece.start() - end));
        }
        prev_end = Some(piece.end());
        records.extend(piece.records);
    }
}

/// A piece being put together: its trusted first and last times so far.
struct Building<'a> {
    records: Vec<Record<'a>>,
    first: Option<u64>,
    last: Option<u64>,
    after_gap: bool,
}

impl<'a> Building<'a> {
    fn finish(self) -> Piece<'a> {
        let (r0, rn) = (
            self.records[0].ts_nsec(),
            self.records[self.records.len() - 1].ts_nsec(),
        );
        Piece {
            key_first: self.first.unwrap_or(r0),
            key_last: self.last.unwrap_or(rn),
            records: self.records,
            after_gap: self.after_gap,
        }
    }
}

fn pieces<'a>(records: &[Record<'a>]) -> Vec<Piece<'a>> {
    // Chains of physically contiguous records.
    let mut chains: Vec<(bool, Vec<Record<'a>>)> = Vec::new();
    for r in records {
        match chains.last_mut() {
            Some((_, chain)) if chain[chain.len() - 1].end() == r.offset => chain.push(*r),
            last => {
                let after_gap = last.map_or(r.offset > 0, |(_, c)| c[c.len() - 1].end() < r.offset);
                chains.push((after_gap, vec![*r]));
            }
        }
    }
    let mut out = Vec::new();
    for (after_gap, chain) in chains {
        let ts: Vec<u64> = chain.iter().map(Record::ts_nsec).collect();
        let n = ts.len();
        let trusted = |i: usize| {
            let scribbled_first = i == 0 && after_gap && n >= 2;
            let outside =
                i > 0 && i + 1 < n && ts[i - 1] <= ts[i + 1] && (ts[i] < ts[i - 1] || ts[i] > ts[i + 1]);
            !(scribbled_first || outside)
        };
        let mut piece: Option<Building<'a>> = None;
        for (i, r) in chain.into_iter().enumerate() {
            let t = trusted(i).then_some(ts[i]);
            // Time going back between trusted records: a leftover of an
            // earlier lap (or a clock that stepped back) begins a piece of
            // its own.
            let split = piece
                .as_ref()
                .is_some_and(|p| t.is_some_and(|t| p.last.is_some_and(|last| t < last)));
            if split {
                if let Some(p) = piece.take() {
                    out.push(p.finish());
                }
            }
            match &mut piece {
                Some(p) => {
                    p.records.push(r);
                    if t.is_some() {
                        p.first = p.first.or(t);
                        p.last = t;
                    }
                }
                None => {
                    piece = Some(Building {
                        records: vec![r],
                        first: t,
                        last: t,
                        after_gap: after_gap && i == 0,
                    });
                }
            }
        }
        if let Some(p) = piece {
            out.push(p.finish());
        }
    }
    out
}

/// Whether a segment may end at `end`: at a wrap marker, at the buffer end,
/// or where no header fits before the buffer end.
fn is_terminator(buf: &[u8], end: usize) -> bool {
    buf.len().saturating_sub(end) < HEADER_LEN || is_zero_header_at(buf, end)
}

/// The first terminator at or after `from` (aligned).
fn next_terminator(buf: &[u8], from: usize) -> usize {
    (from..buf.len())
        .step_by(LOG_ALIGN)
        .find(|&off| is_terminator(buf, off))
        .unwrap_or(buf.len())
}

/// Follows the card log across successive snapshots: every record is
/// yielded once, in order, and every loss noticed is reported once.
///
/// It keeps the records of the last snapshot that had any (all yielded by
/// then) and matches the next snapshot against them, record by record,
/// equal ones in order. What comes after the last matched record and was
/// not matched is new: new records are always written after the newest
/// one. Nothing is decided from timestamps, so a record whose time was
/// scribbled on derails nothing, and a snapshot whose newest records are
/// unreadable yields nothing until newer ones come: it is not a restart.
/// Restarts are the caller's to say ([`LogFollower::restart`]; see
/// [`CardLogFollower`]).
#[derive(Debug, Clone, Default)]
pub struct LogFollower {
    /// The records of the last snapshot that had any, in log order.
    prev: Vec<LogRecord>,
    yielded: u64,
}

impl LogFollower {
    /// A follower that has seen nothing: the first update yields the whole
    /// snapshot.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Timestamp of the newest record of the last snapshot (since the last
    /// restart).
    #[must_use]
    pub fn last_ts(&self) -> Option<u64> {
        self.prev.last().map(|r| r.ts_nsec)
    }

    /// Number of records yielded so far (across restarts).
    #[must_use]
    pub fn yielded(&self) -> u64 {
        self.yielded
    }

    /// The card restarted: forget what was seen, so the next update yields
    /// the new log from its beginning.
    pub fn restart(&mut self) {
        self.prev.clear();
    }

    /// Whether `entries` still hold any record of the last snapshot (true
    /// if there was none): false after the log was replaced (a new boot) or
    /// wholly overwritten.
    #[must_use]
    pub fn holds_last(&self, entries: &[LogEntry]) -> bool {
        self.prev.is_empty() || records(entries).any(|r| self.prev.contains(r))
    }

    /// Decodes a raw `log_buf` snapshot and yields what is new in it.
    pub fn update(&mut self, snapshot: &[u8]) -> Vec<LogEntry> {
        let (entries, lone) = decode_marked(snapshot);
        self.update_marked(entries, &lone)
    }

    /// Like [`LogFollower::update`] for an already decoded snapshot (in log
    /// order, as [`decode_log`] returns it).
    ///
    /// A snapshot without records changes nothing (a card that is not up
    /// yet, a cleared buffer, one wholly unreadable). A loss is yielded with
    /// the new record it precedes. A snapshot sharing no record with the
    /// last one, after records were seen, had its predecessors overwritten
    /// ([`LostReason::Overwritten`]).
    pub fn update_entries(&mut self, entries: Vec<LogEntry>) -> Vec<LogEntry> {
        self.update_marked(entries, &[])
    }

    /// The update proper. `lone[i]` (absent: false) says the `i`-th record
    /// was placed by its time alone: it is matched like any other, but new
    /// records are looked for only after the last matched record that is
    /// not lone.
    fn update_marked(&mut self, entries: Vec<LogEntry>, lone: &[bool]) -> Vec<LogEntry> {
        let recs: Vec<&LogRecord> = records(&entries).collect();
        let Some(first) = recs.first().map(|r| r.ts_nsec) else {
            return Vec::new();
        };
        // Match against the last snapshot: each of its records once (equal
        // records are interchangeable).
        let mut pool: HashMap<&LogRecord, usize> = HashMap::with_capacity(self.prev.len());
        for r in &self.prev {
            *pool.entry(r).or_default() += 1;
        }
        let matched: Vec<bool> = recs
            .iter()
            .map(|r| match pool.get_mut(*r) {
                Some(n) if *n > 0 => {
                    *n -= 1;
                    true
                }
                _ => false,
            })
            .collect();
        let anchor = (0..matched.len())
            .rev()
            .find(|&i| matched[i] && !lone.get(i).copied().unwrap_or(false));
        let mut out = Vec::new();
        if !matched.contains(&true) && !self.prev.is_empty() {
            out.push(LogEntry::Lost(Lost {
                reason: LostReason::Overwritten,
                bytes: None,
                after_ts: self.last_ts(),
                before_ts: Some(first),
            }));
        }
        let mut pending = Vec::new();
        let mut i = 0;
        let mut next_prev = Vec::with_capacity(recs.len());
        for e in entries {
            match e {
                LogEntry::Record(r) => {
                    let new = anchor.is_none_or(|a| i > a) && !matched[i];
                    i += 1;
                    if new {
                        out.append(&mut pending);
                        self.yielded += 1;
                        out.push(LogEntry::Record(r.clone()));
                    } else {
                        pending.clear();
                    }
                    next_prev.push(r);
                }
                lost @ LogEntry::Lost(_) => pending.push(lost),
                LogEntry::Reset => {}
            }
        }
        self.prev = next_prev;
        out
    }
}

/// Follows one card's log across its resets and reboots: a
/// [`LogFollower`] told of restarts by the card's `state`.
///
/// A restart is what the state says: a transition to `offline` or
/// `reset_failed` (every reset ends there), or to `online` from anything
/// but `offline` (a reset seen only at its end). A poll wake-up after which
/// the state still reads the same is a reset and boot between two reads if
/// the newest record shown has gone from the log too. An unreadable or
/// damaged log alone never counts as a restart.
#[derive(Debug)]
pub struct CardLogFollower {
    card: Card,
    watcher: StateWatcher,
    follower: LogFollower,
    /// A wake-up showed no change of state: the card may have been reset
    /// and booted between two reads; the log decides.
    suspect: bool,
    /// The card restarted after records were yielded: the next records
    /// begin a new boot.
    restarted: bool,
    /// At the last look the card was shutting down without a final status.
    closing: bool,
}

impl CardLogFollower {
    /// Starts following `card`'s log; its `state` is opened first, so no
    /// change between that and the first read of the log goes unseen.
    /// Nothing is read from the log until [`CardLogFollower::next`].
    pub fn open(card: &Card) -> Result<Self> {
        Ok(Self {
            card: card.clone(),
            watcher: card.watch_state()?,
            follower: LogFollower::new(),
            suspect: false,
            restarted: false,
            closing: false,
        })
    }

    #[must_use]
    pub fn card(&self) -> &Card {
        &self.card
    }

    /// The card's state as last read.
    #[must_use]
    pub fn state(&self) -> MicState {
        self.watcher.current()
    }

    /// Whether the card was shutting down without having reported its final
    /// status at the last look: its last lines come now, and the reset that
    /// follows its report makes the log unreadable, so read it often.
    #[must_use]
    pub fn closing(&self) -> bool {
        self.closing
    }

    /// Records yielded so far (across restarts).
    #[must_use]
    pub fn yielded(&self) -> u64 {
        self.follower.yielded()
    }

    /// Waits up to `wait` for a change of the card's state (`ZERO`: only
    /// takes the notifications already there), then reads the log once:
    /// what is new, in order, with [`LogEntry::Reset`] where a new boot
    /// begins and [`LogEntry::Lost`] where records are missing. The first
    /// call yields the whole log.
    pub fn next(&mut self, wait: Duration) -> Result<Vec<LogEntry>> {
        let mut out = Vec::new();
        let before = self.watcher.notifications();
        let prev = self.watcher.current();
        match self.watcher.wait_change(Some(wait))? {
            Some(now) => {
                self.suspect = false;
                let reset = match now {
                    MicState::Offline | MicState::ResetFailed => true,
                    MicState::Online => prev != MicState::Offline,
                    MicState::ShuttingDown => false,
                };
                if reset {
                    if self.closing && now != MicState::Online {
                        out.push(LogEntry::Lost(Lost {
                            reason: LostReason::ResetDuringShutdown,
                            bytes: None,
                            after_ts: self.follower.last_ts(),
                            before_ts: None,
                        }));
                    }
                    self.new_boot();
                }
            }
            None => {
                if self.watcher.notifications() != before && self.state() != MicState::Offline {
                    self.suspect = true;
                }
            }
        }
        let (entries, lone) = decode_marked(&self.card.log_buf_raw()?);
        if self.suspect && records(&entries).next().is_some() {
            if !self.follower.holds_last(&entries) {
                self.new_boot();
            }
            self.suspect = false;
        }
        let new = self.follower.update_marked(entries, &lone);
        if self.restarted && records(&new).next().is_some() {
            self.restarted = false;
            out.push(LogEntry::Reset);
        }
        out.extend(new);
        self.closing = self.state() == MicState::ShuttingDown
            && self.card.shutdown_status().is_ok_and(|s| s == MicStatus::Nop);
        Ok(out)
    }

    fn new_boot(&mut self) {
        if self.follower.yielded() > 0 {
            self.restarted = true;
        }
        self.follower.restart();
    }
}

/// The first panic line among `entries`, escaped for display: the card
/// kernel's last words ([`mic_core::card::PANIC_MARKER`]).
#[must_use]
pub fn panic_line(entries: &[LogEntry]) -> Option<String> {
    records(entries)
        .find(|r| r.text.contains(mic_core::card::PANIC_MARKER))
        .map(|r| escape_untrusted(&r.text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mic_core::hw::{MemError, Memory, in_bounds};
    use mic_core::printk::{LogRing, RecordHeader, record_len};
    use proptest::prelude::*;
    use std::cell::RefCell;

    /// Card memory: a guard zone, then the ring. It remembers which bytes
    /// are not the writer's records: zeroed by the writer in a stretch of
    /// 16 bytes or more (a dropped header, a wrap marker, a cleared ring),
    /// or scribbled on by a test.
    struct VecMem(RefCell<Vec<u8>>, RefCell<Vec<bool>>);

    impl VecMem {
        fn new(size: usize) -> Self {
            Self(RefCell::new(vec![0; size]), RefCell::new(vec![false; size]))
        }

        fn dirty(&self, from: usize, len: usize) -> bool {
            self.1.borrow()[from..from + len].iter().any(|&d| d)
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
            let not_a_record = data.len() >= HEADER_LEN && data.iter().all(|&b| b == 0);
            self.1.borrow_mut()[addr as usize..(addr + len) as usize].fill(not_a_record);
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

    /// A card whose records' places and bytes are remembered, so a test can
    /// tell which are still intact after the memory was scribbled on.
    struct Tracked {
        card: Card,
        /// By sequence number: offset in the ring and the bytes written.
        placed: Vec<(usize, Vec<u8>)>,
        /// The sequence number of the newest record placed at each offset.
        at: std::collections::HashMap<usize, usize>,
        /// Where the writer left its last wrap marker.
        marker: Option<usize>,
    }

    impl Tracked {
        fn new(len: u32) -> Self {
            Self {
                card: Card::new(len),
                placed: Vec::new(),
                at: std::collections::HashMap::new(),
                marker: None,
            }
        }

        fn log(&mut self, ts: u64, level: u8, facility: u8, text: &str) {
            let before = self.card.ring.next_idx() as usize;
            self.card.log(ts, level, facility, text);
            let n = record_len(text.len(), 0);
            let off = self.card.ring.next_idx() as usize - n;
            if off == 0 && before > 0 {
                self.marker = Some(before);
            }
            self.at.insert(off, self.placed.len());
            self.placed
                .push((off, self.card.snapshot()[off..off + n].to_vec()));
        }

        /// The records the writer's indices say are live: the chain from
        /// `first_idx` (to the wrap marker, then from 0) to `next_idx`, as
        /// placed. (After the writer read a scribbled header as a record,
        /// its indices may lead nowhere: then the chain ends there.)
        fn live(&self) -> Vec<usize> {
            let ring = &self.card.ring;
            let (first, next) = (ring.first_idx() as usize, ring.next_idx() as usize);
            let mut out = Vec::new();
            if ring.is_empty() {
                return out;
            }
            let mut walk = |mut off: usize, stop: Option<usize>| {
                while Some(off) != stop {
                    let Some(&seq) = self.at.get(&off) else { break };
                    out.push(seq);
                    off += self.placed[seq].1.len();
                }
            };
            if first < next {
                walk(first, Some(next));
            } else {
                walk(first, self.marker);
                walk(0, Some(next));
            }
            out
        }

        /// `kind` 0: random bytes, 1: zeros, 2: 0xff.
        fn corrupt(&mut self, start: usize, n: usize, kind: u8, seed: u32) {
            let len = self.card.ring.len() as usize;
            let start = start % len;
            let n = n.min(len - start);
            let mut x = seed | 1;
            let bytes: Vec<u8> = (0..n)
                .map(|_| match kind {
                    0 => {
                        x ^= x << 13;
                        x ^= x >> 17;
                        x ^= x << 5;
                        x as u8
                    }
                    1 => 0,
                    _ => 0xff,
                })
                .collect();
            self.card.mem.write(Card::BASE + start as u64, &bytes).unwrap();
            let base = Card::BASE as usize;
            self.card.mem.1.borrow_mut()[base + start..base + start + n].fill(true);
        }

        /// A record decoded from `snap`: one that was written, or one made
        /// of bytes that were scribbled on (a damaged record may still
        /// validate, with a wrong time or text).
        fn genuine(&self, r: &Record<'_>) -> bool {
            let damaged = self
                .card
                .mem
                .dirty(Card::BASE as usize + r.offset, r.header.len as usize);
            let rec = LogRecord::from_record(r);
            if self.card.written.contains(&rec) {
                return true;
            }
            damaged
        }

        /// The records the writer still holds whose bytes are untouched.
        fn intact_live(&self, snap: &[u8]) -> Vec<usize> {
            self.live()
                .into_iter()
                .filter(|&seq| {
                    let (off, bytes) = &self.placed[seq];
                    snap.get(*off..off + bytes.len()) == Some(&bytes[..])
                })
                .collect()
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

    /// The records of follower output.
    fn records_of(entries: &[LogEntry]) -> Vec<LogRecord> {
        records(entries).cloned().collect()
    }

    fn losses(entries: &[LogEntry]) -> Vec<Lost> {
        entries
            .iter()
            .filter_map(|e| match e {
                LogEntry::Lost(l) => Some(*l),
                _ => None,
            })
            .collect()
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
                assert!(losses(&u).is_empty(), "at {i}: {u:?}");
                seen.extend(records_of(&u));
            }
        }
        seen.extend(records_of(&f.update(&card.snapshot())));
        assert_eq!(seen, card.written);
        assert_eq!(f.yielded(), 300);
        // Nothing new: nothing yielded.
        assert_eq!(f.update(&card.snapshot()), []);
        assert_eq!(f.update(&vec![0; 512]), []);
    }

    #[test]
    fn follower_reports_loss() {
        let mut card = Card::new(512);
        let mut f = LogFollower::new();
        card.log(1, 6, 0, "first");
        assert_eq!(texts(&records_of(&f.update(&card.snapshot()))), ["first"]);
        for i in 0..100 {
            card.log(10 + i, 6, 0, &msg(i as usize, 40));
        }
        let u = f.update(&card.snapshot());
        let live = card.live();
        assert_eq!(
            u[0],
            LogEntry::Lost(Lost {
                reason: LostReason::Overwritten,
                bytes: None,
                after_ts: Some(1),
                before_ts: Some(live[0].ts_nsec),
            })
        );
        assert_eq!(records_of(&u), live);
        assert_eq!(losses(&u).len(), 1);
        assert!(f.update(&card.snapshot()).is_empty());
    }

    #[test]
    fn follower_equal_timestamps() {
        let mut card = Card::new(4096);
        let mut f = LogFollower::new();
        card.log(0, 6, 0, "a");
        card.log(0, 6, 0, "a");
        assert_eq!(records_of(&f.update(&card.snapshot())).len(), 2);
        card.log(0, 6, 0, "a");
        card.log(0, 6, 0, "b");
        assert_eq!(texts(&records_of(&f.update(&card.snapshot()))), ["a", "b"]);
        card.log(5, 6, 0, "c");
        assert_eq!(texts(&records_of(&f.update(&card.snapshot()))), ["c"]);
    }

    fn rec(t: u64, s: &str) -> LogRecord {
        LogRecord {
            ts_nsec: t,
            level: 6,
            facility: 0,
            text: s.into(),
            dict: None,
        }
    }

    fn entries(rs: &[LogRecord]) -> Vec<LogEntry> {
        rs.iter().cloned().map(LogEntry::Record).collect()
    }

    #[test]
    fn follower_equal_timestamps_partly_dropped() {
        let mut f = LogFollower::new();
        f.update_entries(entries(&[rec(1, "x"), rec(7, "a"), rec(7, "b")]));
        // "a" dropped, "b" still there, "c" and "d" new.
        let u = f.update_entries(entries(&[rec(7, "b"), rec(7, "c"), rec(8, "d")]));
        assert_eq!(texts(&records_of(&u)), ["c", "d"]);
        assert!(losses(&u).is_empty());
    }

    #[test]
    fn a_log_going_back_in_time_is_not_a_restart() {
        // What an unreadable ring looks like to the follower: the newest
        // records gone. It waits for newer ones; it neither starts over nor
        // repeats anything.
        let mut f = LogFollower::new();
        assert!(f.holds_last(&entries(&[rec(9, "z")])), "nothing seen yet");
        f.update_entries(entries(&[rec(1, "a"), rec(2, "b"), rec(3, "c")]));
        assert!(f.holds_last(&entries(&[rec(3, "c")])));
        assert!(!f.holds_last(&entries(&[rec(5, "new boot")])));
        assert!(f.update_entries(entries(&[rec(1, "a")])).is_empty());
        let u = f.update_entries(entries(&[rec(1, "a"), rec(4, "d")]));
        assert_eq!(texts(&records_of(&u)), ["d"]);
        assert!(!u.contains(&LogEntry::Reset));
    }

    #[test]
    fn restart_starts_over() {
        let mut card = Card::new(2048);
        let mut f = LogFollower::new();
        for i in 0..10 {
            card.log(1_000_000 + i, 6, 0, &msg(i as usize, 30));
        }
        assert_eq!(records_of(&f.update(&card.snapshot())).len(), 10);
        // Reboot: the buffer is cleared, the clock starts over. Told so,
        // the follower yields the new log from its beginning.
        let mut card = Card::new(2048);
        card.log(5, 6, 0, "Linux version 2.6.38.8+mpss3.8.6");
        f.restart();
        assert_eq!(records_of(&f.update(&card.snapshot())), card.written);
        card.log(20_000_000, 6, 0, "later");
        let u = f.update(&card.snapshot());
        assert_eq!(texts(&records_of(&u)), ["later"]);
        assert_eq!(f.yielded(), 12);
    }

    #[test]
    fn damage_is_reported_where_it_is_and_once() {
        let mut card = Card::new(4096);
        for i in 0..20 {
            card.log(100 + i as u64, 6, 0, &msg(i, 30));
        }
        let clean = card.snapshot();
        let hit = decode_records(&clean)[5].offset + 3;
        card.mem.write(Card::BASE + hit as u64, &[0xAA; 60]).unwrap();
        let got = decode_log(&card.snapshot());
        // Records 5 and 6 are gone (record 7 starts 96 bytes after 5).
        let lost = losses(&got);
        assert_eq!(lost.len(), 1, "{got:#?}");
        assert_eq!(lost[0].reason, LostReason::Damaged);
        assert_eq!(lost[0].bytes, Some(96));
        assert_eq!((lost[0].after_ts, lost[0].before_ts), (Some(104), Some(107)));
        assert_eq!(got[5], LogEntry::Lost(lost[0]));
        let want: Vec<_> = card
            .written
            .iter()
            .filter(|r| !matches!(r.ts_nsec, 105 | 106))
            .cloned()
            .collect();
        assert_eq!(records_of(&got), want);
        assert!(
            lost[0]
                .describe()
                .starts_with("lost 96 bytes of the card log between"),
            "{}",
            lost[0].describe()
        );

        // Followed: the loss comes with the first record after it, once.
        let mut f = LogFollower::new();
        assert_eq!(losses(&f.update(&card.snapshot())).len(), 1);
        card.log(200, 6, 0, "after the damage");
        let u = f.update(&card.snapshot());
        assert_eq!(texts(&records_of(&u)), ["after the damage"]);
        assert!(losses(&u).is_empty());
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
                    prop_assert!(!u.contains(&LogEntry::Reset));
                    if last_still_held {
                        prop_assert!(losses(&u).is_empty(), "{:?}", losses(&u));
                    }
                    seen.extend(records_of(&u));
                }
            }
            prop_assert_eq!(&seen, &card.written);
        }

        /// Random corruption of random spans, at random times, of a ring
        /// holding known records: one read never loses a record outside
        /// the corrupted bytes, never duplicates one and never invents one;
        /// following, every record seen intact in some snapshot is yielded
        /// exactly once, in order.
        #[test]
        fn corruption_never_hides_an_intact_record(
            (len, recs) in scenario(),
            hits in proptest::collection::vec((0usize..400, any::<usize>(), 1usize..600, 0u8..3, any::<u32>()), 1..12),
            k in 1usize..40,
        ) {
            let mut t = Tracked::new(len);
            let mut f = LogFollower::new();
            let mut yielded: Vec<LogRecord> = Vec::new();
            let mut must_yield = std::collections::BTreeSet::new();
            let mut ts = 0;
            for (i, (dt, level, facility, text)) in recs.iter().enumerate() {
                ts += dt;
                t.log(ts, *level, *facility, text);
                for &(_, start, n, kind, seed) in hits.iter().filter(|h| h.0 == i) {
                    t.corrupt(start, n, kind, seed);
                }
                if (i + 1) % k != 0 && i + 1 != recs.len() {
                    continue;
                }
                let snap = t.card.snapshot();
                let got = decode_records(&snap);
                let at: Vec<usize> = got.iter().map(|r| r.offset).collect();
                for seq in t.intact_live(&snap) {
                    prop_assert!(at.contains(&t.placed[seq].0), "record {} at {} not decoded", seq, t.placed[seq].0);
                    must_yield.insert(t.card.written[seq].ts_nsec);
                }
                for r in &got {
                    prop_assert!(t.genuine(r), "invented {:?} at {}", LogRecord::from_record(r), r.offset);
                }
                let written: Vec<LogRecord> = got
                    .iter()
                    .map(LogRecord::from_record)
                    .filter(|r| t.card.written.contains(r))
                    .collect();
                prop_assert!(written.windows(2).all(|w| w[0].ts_nsec < w[1].ts_nsec), "out of order or duplicated");
                let u = f.update(&snap);
                prop_assert!(!u.contains(&LogEntry::Reset));
                yielded.extend(records_of(&u));
            }
            let written: Vec<&LogRecord> = yielded.iter().filter(|r| t.card.written.contains(r)).collect();
            prop_assert!(written.windows(2).all(|w| w[0].ts_nsec < w[1].ts_nsec), "follower repeated or reordered");
            let got: std::collections::BTreeSet<u64> = written.iter().map(|r| r.ts_nsec).collect();
            for ts in &must_yield {
                prop_assert!(got.contains(ts), "record at {} never yielded", ts);
            }
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
                    // Every record at most once (a hit in a header's time
                    // can leave a valid record with a wrong time: order is
                    // not promised under this much damage).
                    let got = decode_records(&snap);
                    let mut at: Vec<usize> = got.iter().map(|r| r.offset).collect();
                    at.sort_unstable();
                    at.dedup();
                    prop_assert_eq!(at.len(), got.len());
                    let _ = f.update(&snap);
                }
            }
        }
    }
}
