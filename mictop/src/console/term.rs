//! A console's terminal emulator: the live screen (`vt100`) and its
//! scrollback, kept as the output that made it.
//!
//! vt100 keeps a scrollback row by row: each line scrolled off is trimmed
//! cell by cell, moved into the scrollback and a row of the screen's width
//! allocated in its place, and the oldest row freed. For a card printing as
//! fast as it can that was most of mictop's time (perf: `Grid::scroll_up`,
//! 70 % of the loop's thread for `seq`'s short lines), for lines nearly all
//! of which scroll out of the scrollback again unseen.
//!
//! So the live parser keeps no scrollback (a line scrolled off is a row
//! cleared in place) and only counts the lines scrolled off, and the
//! scrollback is kept as what made it: the output since a copy of the
//! screen (a checkpoint), in two generations, each started once the one
//! before holds the scrollback's depth of lines. Looking at the scrollback
//! replays it: the checkpoint into a parser that captures the last lines
//! scrolled off, exactly the rows vt100's own scrollback would have kept,
//! shown through a parser of their own. The replay happens when the view
//! scrolls back (and again when it moves after new output), never per line.
//!
//! A checkpoint is taken only where the byte stream is between escape
//! sequences and characters ([`Ground`]), so the replay's parser, which
//! starts there afresh, reads the rest as the live one did.

use std::collections::VecDeque;
use std::num::NonZeroU16;

use vt100::capture::{BasicFormattedCaptureState, RowContents};

/// A generation is also closed after this much output (a full-screen
/// program redrawing without scrolling), so what is kept stays bounded:
/// then the scrollback holds the lines of the last two generations' output
/// if that is fewer than its depth.
pub const GENERATION_BYTES: usize = 8 << 20;

/// A stream that never returns between sequences (a card writing one
/// endless escape string) closes its generation here anyway; the replay
/// then starts in the middle of that sequence and may show its tail as
/// text in the scrollback (never on the live screen).
const GENERATION_BYTES_HARD: usize = 4 * GENERATION_BYTES;

/// Counts the lines scrolled off the main screen (the alternate screen
/// has no scrollback); in a replay, also keeps the last of them.
#[derive(Debug, Default)]
struct Tally {
    lines: u64,
    capture: Option<Capture>,
}

#[derive(Debug)]
struct Capture {
    /// Lines scrolled off before the first one kept.
    skip: u64,
    keep: usize,
    /// Rows as vt100 formats them (`contents_formatted_basic`).
    rows: VecDeque<String>,
}

impl vt100::Callbacks for Tally {
    fn on_scroll(&mut self, row: RowContents<'_>, alternate_screen: bool) {
        if alternate_screen {
            return;
        }
        self.lines += 1;
        let Some(c) = &mut self.capture else { return };
        if c.skip > 0 {
            c.skip -= 1;
            return;
        }
        if c.keep == 0 {
            return;
        }
        let mut s = if c.rows.len() >= c.keep {
            c.rows.pop_front().unwrap_or_default()
        } else {
            String::new()
        };
        s.clear();
        // Writing into a String does not fail.
        let _ = row.write_formatted_basic(&mut s, &mut BasicFormattedCaptureState::new());
        c.rows.push_back(s);
    }
}

/// Whether the byte stream is at a point where a parser starting afresh
/// reads on as one that saw everything before: not inside an escape
/// sequence, a control string or a UTF-8 character. Conservative: it may
/// say no where vte is in fact back in its ground state, never yes where
/// it is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Ground {
    #[default]
    Ground,
    /// Continuation bytes of a UTF-8 character still to come.
    Utf8(u8),
    Escape,
    EscapeIntermediate,
    Csi,
    /// OSC: ends at BEL or ST.
    Osc,
    /// DCS, SOS, PM, APC: end at ST.
    String,
}

impl Ground {
    /// The state after `bytes`.
    #[must_use]
    pub fn feed(mut self, bytes: &[u8]) -> Self {
        // Plain text stays plain (most of a flood).
        if self == Ground::Ground && bytes.is_ascii() && !bytes.contains(&0x1b) {
            return self;
        }
        for &b in bytes {
            self = self.step(b);
        }
        self
    }

    fn step(self, b: u8) -> Self {
        use Ground as G;
        match (self, b) {
            // Anywhere: ESC starts a sequence (and CAN or SUB, below,
            // cancels one).
            (_, 0x1b) => G::Escape,
            (G::Ground, 0xc0..=0xdf) => G::Utf8(1),
            (G::Ground, 0xe0..=0xef) => G::Utf8(2),
            (G::Ground, 0xf0..=0xf7) => G::Utf8(3),
            (G::Utf8(n), 0x80..=0xbf) if n > 1 => G::Utf8(n - 1),
            (G::Escape, b'[') => G::Csi,
            (G::Escape, b']') => G::Osc,
            (G::Escape, b'P' | b'X' | b'^' | b'_') => G::String,
            (G::Escape | G::EscapeIntermediate, 0x20..=0x2f) => G::EscapeIntermediate,
            (_, 0x18 | 0x1a)
            | (G::Ground, _)
            | (G::Utf8(_), 0x80..=0xbf)
            | (G::Escape | G::EscapeIntermediate, 0x30..=0x7e)
            | (G::Csi, 0x40..=0x7e)
            | (G::Osc, 0x07) => G::Ground,
            // A broken UTF-8 character stays unknown (what vte does next
            // is not worth mirroring) until a sequence starts and ends;
            // controls inside a sequence do not end it.
            (s, _) => s,
        }
    }
}

#[derive(Debug)]
enum Entry {
    Output(Vec<u8>),
    /// A new size, and how many of the last lines scrolled off it pulled
    /// back onto the screen (it grew).
    Resize(NonZeroU16, NonZeroU16, usize),
}

/// Output since a checkpoint.
struct Generation {
    start: vt100::Screen,
    /// The live parser's line count at the checkpoint.
    first: u64,
    /// Lines pulled back onto the screen since (each resize's).
    pulled: u64,
    log: Vec<Entry>,
    bytes: usize,
}

impl Generation {
    fn push(&mut self, bytes: &[u8]) {
        self.bytes += bytes.len();
        if let Some(Entry::Output(v)) = self.log.last_mut() {
            v.extend_from_slice(bytes);
        } else {
            self.log.push(Entry::Output(bytes.to_vec()));
        }
    }
}

/// The scrollback being looked at, as of `at` lines scrolled off.
struct View {
    parser: vt100::Parser,
    at: u64,
}

/// A terminal emulator's screen and scrollback.
pub struct Term {
    live: vt100::Parser<Tally>,
    ground: Ground,
    /// Lines of scrollback kept.
    depth: usize,
    /// At most two; the oldest one's checkpoint is where a replay starts.
    generations: VecDeque<Generation>,
    /// Lines vt100's own scrollback would hold: up to `depth`, less those
    /// a taller screen pulled back (the older ones do not come back).
    kept: usize,
    view: Option<View>,
    /// Whether the card may have set a scroll region (a CSI ending in `r`
    /// was seen; only a full reset clears it): then a line feed at the
    /// bottom need not scroll, and plain text is never skipped.
    region: Region,
}

/// Watches the stream for DECSTBM (`CSI top;bottom r`) and RIS (`ESC c`),
/// across chunks: a region is set unless the last DECSTBM named the whole
/// screen (no parameters, or `1;N` with N at least the screen's rows).
#[derive(Debug, Clone, Copy, Default)]
struct Region {
    maybe_set: bool,
    state: RegionScan,
    /// The parameters of the CSI being read (at most 15 bytes; longer ones
    /// count as a region set).
    params: [u8; 15],
    len: usize,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum RegionScan {
    #[default]
    Text,
    Escape,
    Csi,
}

impl Region {
    fn feed(&mut self, bytes: &[u8], rows: u16) {
        if self.state == RegionScan::Text && !bytes.contains(&0x1b) {
            return;
        }
        for &b in bytes {
            self.state = match (self.state, b) {
                (_, 0x1b) => RegionScan::Escape,
                (RegionScan::Escape, b'[') => {
                    self.len = 0;
                    RegionScan::Csi
                }
                (RegionScan::Escape, b'c') => {
                    self.maybe_set = false;
                    RegionScan::Text
                }
                (RegionScan::Csi, 0x40..=0x7e) => {
                    if b == b'r' {
                        self.maybe_set = !self.whole_screen(rows);
                    }
                    RegionScan::Text
                }
                (RegionScan::Csi, _) => {
                    if let Some(p) = self.params.get_mut(self.len) {
                        *p = b;
                    }
                    self.len = self.len.saturating_add(1);
                    RegionScan::Csi
                }
                _ => RegionScan::Text,
            };
        }
    }

    /// Whether the DECSTBM just read names the whole screen.
    fn whole_screen(&self, rows: u16) -> bool {
        let Some(params) = self.params.get(..self.len) else {
            return false;
        };
        let number = |p: &[u8]| -> Option<u32> {
            if p.is_empty() {
                return Some(0);
            }
            std::str::from_utf8(p).ok()?.parse().ok()
        };
        let mut parts = params.split(|&b| b == b';');
        let top = parts.next().map_or(Some(0), number);
        let bottom = parts.next().map_or(Some(0), number);
        match (top, bottom, parts.next()) {
            (Some(top), Some(bottom), None) => top <= 1 && (bottom == 0 || bottom >= u32::from(rows)),
            _ => false,
        }
    }
}

/// The line feeds in `bytes` if it is plain printable ASCII in lines
/// ended by `\r\n` (a `\r` alone may return to the line's start), no
/// line reaching column `cols`; else `None`. A card printing as fast as it
/// can passes through here whole: [`short_plain_lines`] answers for most
/// of it without a byte-at-a-time loop.
fn plain_lines(bytes: &[u8], cols: u16) -> Option<u64> {
    match short_plain_lines(bytes, cols) {
        Quick::Plain(feeds) => Some(feeds),
        Quick::NotPlain => None,
        Quick::CannotTell => plain_lines_bytewise(bytes, cols),
    }
}

/// [`plain_lines`] a byte at a time.
fn plain_lines_bytewise(bytes: &[u8], cols: u16) -> Option<u64> {
    let (mut feeds, mut run, mut prev) = (0u64, 0u16, b'\n');
    for &b in bytes {
        match b {
            b'\r' => run = 0,
            b'\n' if prev == b'\r' => feeds += 1,
            0x20..=0x7e => {
                run += 1;
                if run >= cols {
                    return None;
                }
            }
            _ => return None,
        }
        prev = b;
    }
    Some(feeds)
}

/// What [`short_plain_lines`] can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quick {
    /// Plain lines, this many line feeds.
    Plain(u64),
    NotPlain,
    /// A line may be longer than half the screen's width.
    CannotTell,
}

/// [`plain_lines`]' answer when the lines are short, in passes the
/// compiler vectorises (branch-free, hence `&` and `|` on booleans).
///
/// Every `\n` follows a `\r` and the rest is printable: then a line
/// reaches column `cols` only if `cols` bytes in a row hold no `\r`, which
/// cannot be when every aligned stretch of `cols / 2` bytes holds one (any
/// `cols` bytes in a row hold a whole such stretch, at the start and end
/// of `bytes` too).
#[allow(
    clippy::needless_bitwise_bool,
    reason = "branch-free: the passes are vectorised"
)]
fn short_plain_lines(bytes: &[u8], cols: u16) -> Quick {
    /// Each pass over a block the cache still holds.
    const BLOCK: usize = 4096;
    let half = usize::from(cols / 2);
    if half == 0 {
        return Quick::CannotTell;
    }
    let mut feeds = 0u64;
    let mut prev = b'\n';
    for block in bytes.chunks(BLOCK) {
        let bad = block.iter().fold(false, |bad, &b| {
            bad | (!(0x20..=0x7e).contains(&b) & (b != b'\r') & (b != b'\n'))
        });
        let lone = (block[0] == b'\n') & (prev != b'\r')
            | block
                .iter()
                .zip(&block[1..])
                .fold(false, |lone, (&p, &b)| lone | ((b == b'\n') & (p != b'\r')));
        if bad || lone {
            return Quick::NotPlain;
        }
        feeds += u64::try_from(memchr::memchr_iter(b'\n', block).count()).unwrap_or(u64::MAX);
        prev = block[block.len() - 1];
    }
    if bytes
        .chunks_exact(half)
        .all(|stretch| memchr::memchr(b'\r', stretch).is_some())
    {
        Quick::Plain(feeds)
    } else {
        Quick::CannotTell
    }
}

/// How much of `bytes` a terminal of `rows` × `cols` whose cursor is at
/// the start of its bottom row may skip, and how many lines that part
/// scrolls off: when `bytes` is plain printable ASCII in lines ended by
/// `\r\n`, none reaching the right edge (no wrap), each line feed scrolls
/// exactly one line, and the last `rows` lines and what follows them write
/// every row of the screen — what came before leaves nothing on it. The
/// cut is after a `\r\n`, so the rest starts where the skipped part left
/// the cursor. `(0, 0)`: not such output, or too little of it to matter.
fn skippable(bytes: &[u8], rows: u16, cols: u16) -> (usize, u64) {
    let Some(feeds) = plain_lines(bytes, cols) else {
        return (0, 0);
    };
    let keep = u64::from(rows) + 1;
    if feeds <= 2 * keep {
        return (0, 0);
    }
    // Every `\n` here is a line feed: the cut is after the one that
    // leaves the last `keep` of them.
    let skip = feeds - keep;
    let keep = usize::try_from(keep).unwrap_or(usize::MAX);
    memchr::memrchr_iter(b'\n', bytes)
        .nth(keep)
        .map_or((0, 0), |i| (i + 1, skip))
}

impl std::fmt::Debug for Term {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (rows, cols) = self.live.screen().size();
        f.debug_struct("Term")
            .field("rows", &rows)
            .field("cols", &cols)
            .field("depth", &self.depth)
            .field("scrolled", &self.scrolled())
            .finish_non_exhaustive()
    }
}

impl Term {
    /// A terminal of `rows` × `cols` keeping `depth` lines of scrollback.
    #[must_use]
    pub fn new(rows: NonZeroU16, cols: NonZeroU16, depth: usize) -> Self {
        let live = vt100::Parser::new_with_callbacks(rows, cols, 0, Tally::default());
        let mut term = Self {
            live,
            ground: Ground::Ground,
            depth,
            generations: VecDeque::new(),
            kept: 0,
            view: None,
            region: Region::default(),
        };
        term.checkpoint();
        term
    }

    /// The screen to draw: the live one, or the scrollback being looked at.
    #[must_use]
    pub fn screen(&self) -> &vt100::Screen {
        self.view
            .as_ref()
            .map_or(self.live.screen(), |v| v.parser.screen())
    }

    /// The live screen (its modes: cursor keys, bracketed paste).
    #[must_use]
    pub fn live(&self) -> &vt100::Screen {
        self.live.screen()
    }

    /// Runs the card's `bytes` through the emulator. A flood of plain lines
    /// is parsed only as far as the screen shows it ([`skippable`]): what
    /// scrolls past unseen is counted and kept for the scrollback, not
    /// drawn (the cost of a card printing as fast as it can is then per
    /// chunk, not per line).
    pub fn process(&mut self, bytes: &[u8]) {
        let before = self.live.callbacks().lines;
        // A chunk rarely starts at a line's start: its first line is drawn
        // as it comes, then the rest may be skipped through.
        let head = bytes
            .iter()
            .position(|&b| b == b'\n')
            .map_or(bytes.len(), |i| i + 1);
        self.live.process(&bytes[..head]);
        let rows = self.live.screen().size().0.get();
        self.region.feed(&bytes[..head], rows);
        self.ground = self.ground.feed(&bytes[..head]);
        let rest = &bytes[head..];
        let screen = self.live.screen();
        let (rows, cols) = screen.size();
        let (skip, lines) = if self.ground == Ground::Ground
            && screen.cursor_position() == (rows.get() - 1, 0)
            && !self.region.maybe_set
            && !screen.alternate_screen()
        {
            skippable(rest, rows.get(), cols.get())
        } else {
            (0, 0)
        };
        self.live.callbacks_mut().lines += lines;
        self.live.process(&rest[skip..]);
        self.region.feed(rest, rows.get());
        self.ground = self.ground.feed(rest);
        if self.depth == 0 {
            return;
        }
        let lines = self.live.callbacks().lines;
        self.scrolled_off(lines - before);
        let Some(g) = self.generations.back_mut() else {
            return;
        };
        g.push(bytes);
        let full = usize::try_from(lines - g.first).unwrap_or(usize::MAX) >= self.depth
            || g.bytes >= GENERATION_BYTES;
        if full && (self.ground == Ground::Ground || g.bytes >= GENERATION_BYTES_HARD) {
            self.checkpoint();
        }
    }

    fn scrolled_off(&mut self, lines: u64) {
        let lines = usize::try_from(lines).unwrap_or(usize::MAX);
        self.kept = self.kept.saturating_add(lines).min(self.depth);
    }

    /// Starts a generation at the live screen as it is; the one before the
    /// last is dropped.
    fn checkpoint(&mut self) {
        if self.depth == 0 {
            return;
        }
        self.generations.push_back(Generation {
            start: self.live.screen().clone(),
            first: self.live.callbacks().lines,
            pulled: 0,
            log: Vec::new(),
            bytes: 0,
        });
        while self.generations.len() > 2 {
            self.generations.pop_front();
        }
    }

    /// The terminal is now `rows` × `cols` (the view goes back to the live
    /// screen, as xterm's does).
    ///
    /// A taller screen pulls the last lines scrolled off back onto it, as
    /// vt100 does from its own scrollback: here vt100 leaves blank rows
    /// for them (it has none), which are written with the lines from the
    /// scrollback, and the lines leave the scrollback.
    pub fn set_size(&mut self, rows: NonZeroU16, cols: NonZeroU16) {
        let (cursor_before, _) = self.live.screen().cursor_position();
        let before = self.live.callbacks().lines;
        self.live.set_size(rows, cols);
        self.view = None;
        let lines = self.live.callbacks().lines;
        self.scrolled_off(lines - before);
        let Some(g) = self.generations.back_mut() else {
            return;
        };
        g.log.push(Entry::Resize(rows, cols, 0));
        let (row, col) = self.live.screen().cursor_position();
        // The rows vt100 put above the screen's old top.
        let blank = usize::from(row.saturating_sub(cursor_before));
        if blank == 0 {
            return;
        }
        let (lines, widest) = self.history();
        let pulled = blank.min(lines.len());
        // A line from when the terminal was wider would wrap over the
        // screen: then the rows stay blank (as vt100's would with nothing
        // to pull) and the lines stay in the scrollback.
        if pulled == 0 || widest > cols.get() {
            return;
        }
        self.kept -= pulled;
        let mut fill = Vec::new();
        for (i, line) in lines.iter().skip(lines.len() - pulled).enumerate() {
            let r = blank - pulled + i + 1;
            fill.extend_from_slice(format!("\x1b[{r};1H\x1b[m").as_bytes());
            fill.extend_from_slice(line.as_bytes());
        }
        // The cursor and the attributes back as they were.
        fill.extend_from_slice(format!("\x1b[{};{}H", row + 1, col + 1).as_bytes());
        fill.extend_from_slice(self.live.screen().attributes_formatted().as_bytes());
        if let Some(g) = self.generations.back_mut() {
            if let Some(Entry::Resize(_, _, n)) = g.log.last_mut() {
                *n = pulled;
            }
            g.pulled += pulled as u64;
        }
        self.live.process(&fill);
        if let Some(g) = self.generations.back_mut() {
            g.push(&fill);
        }
    }

    /// Lines scrolled off that the scrollback holds.
    #[must_use]
    pub fn scrollback_len(&self) -> usize {
        let Some(first) = self.generations.front() else {
            return 0;
        };
        let pulled: u64 = self.generations.iter().map(|g| g.pulled).sum();
        let lines = self.live.callbacks().lines - first.first - pulled;
        usize::try_from(lines).unwrap_or(usize::MAX).min(self.kept)
    }

    /// Lines scrolled back (0: the live screen). A view scrolled back
    /// stays on its lines while output arrives: this grows with it.
    #[must_use]
    pub fn scrolled(&self) -> usize {
        self.view.as_ref().map_or(0, |v| {
            let since = usize::try_from(self.live.callbacks().lines - v.at).unwrap_or(usize::MAX);
            v.parser
                .screen()
                .scrollback()
                .saturating_add(since)
                .min(self.scrollback_len())
        })
    }

    /// Looks at the scrollback `lines` back (0: the live screen), at most
    /// as far as it goes.
    pub fn scroll_to(&mut self, lines: usize) {
        let lines = lines.min(self.scrollback_len());
        if lines == 0 {
            self.view = None;
            return;
        }
        let now = self.live.callbacks().lines;
        if self.view.as_ref().is_none_or(|v| v.at != now) {
            self.view = Some(View {
                parser: self.replay(),
                at: now,
            });
        }
        if let Some(v) = &mut self.view {
            v.parser.screen_mut().set_scrollback(lines);
        }
    }

    /// The lines the scrollback holds, oldest first, as vt100 formats a
    /// row (`contents_formatted_basic`: text and SGR attributes), and the
    /// widest the terminal was meanwhile.
    fn history(&self) -> (VecDeque<String>, u16) {
        let Some(first) = self.generations.front() else {
            return (VecDeque::new(), self.live.screen().size().1.get());
        };
        let total = self.live.callbacks().lines - first.first;
        let pulled: u64 = self.generations.iter().map(|g| g.pulled).sum();
        // Of the lines after those skipped, the last `depth` not pulled
        // back are kept (a pull takes the newest lines, captured ones).
        let tally = Tally {
            lines: 0,
            capture: Some(Capture {
                skip: total.saturating_sub(self.depth as u64 + pulled),
                keep: usize::MAX,
                rows: VecDeque::new(),
            }),
        };
        let (rows, cols) = first.start.size();
        let mut widest = cols.get();
        let mut p = vt100::Parser::new_with_callbacks(rows, cols, 0, tally);
        *p.screen_mut() = first.start.clone();
        for e in self.generations.iter().flat_map(|g| &g.log) {
            match e {
                Entry::Output(bytes) => p.process(bytes),
                Entry::Resize(rows, cols, pulled) => {
                    widest = widest.max(cols.get());
                    p.set_size(*rows, *cols);
                    if let Some(c) = &mut p.callbacks_mut().capture {
                        let keep = c.rows.len().saturating_sub(*pulled);
                        c.rows.truncate(keep);
                    }
                }
            }
        }
        debug_assert_eq!(
            p.callbacks().lines,
            total,
            "the replay scrolls as the live screen did"
        );
        let rows = p
            .callbacks_mut()
            .capture
            .take()
            .map(|c| c.rows)
            .unwrap_or_default();
        (rows, widest)
    }

    /// A parser showing the scrollback above the live screen: the rows as
    /// vt100's own scrollback would hold them.
    fn replay(&self) -> vt100::Parser {
        let (lines, widest) = self.history();
        let (rows, cols) = self.live.screen().size();
        // As wide as the widest line kept: a line from before the terminal
        // narrowed is cut at the pane's edge, not wrapped.
        let cols = NonZeroU16::new(widest.max(cols.get())).unwrap_or(cols);
        let mut p = vt100::Parser::new(rows, cols, self.depth);
        let mut feed = Vec::with_capacity(lines.iter().map(|l| l.len() + 8).sum());
        feed.extend_from_slice(b"\x1b[H");
        for (i, l) in lines.iter().enumerate() {
            if i > 0 {
                feed.extend_from_slice(b"\r\n");
            }
            feed.extend_from_slice(b"\x1b[m");
            feed.extend_from_slice(l.as_bytes());
        }
        // Every line written scrolled off the screen into the scrollback.
        if !lines.is_empty() {
            feed.extend_from_slice(b"\x1b[m");
            for _ in 0..rows.get() {
                feed.extend_from_slice(b"\r\n");
            }
        }
        p.process(&feed);
        p.process(self.live.screen().contents_formatted().as_bytes());
        p
    }

    /// The scrollback's lines, oldest first, as plain text (trailing blanks
    /// trimmed).
    #[must_use]
    pub fn scrollback_text(&self) -> Vec<String> {
        self.history()
            .0
            .iter()
            .map(|l| {
                let s: String = vt100::capture::basic_formatted_to_plain(l).collect();
                s.trim_end().to_owned()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;

    use super::*;

    fn nz(n: u16) -> NonZeroU16 {
        NonZeroU16::new(n).expect("non-zero")
    }

    /// What a cell shows.
    type Shown = (String, vt100::Color, vt100::Color, [bool; 5]);

    fn cells(screen: &vt100::Screen, rows: u16, cols: u16) -> Vec<Vec<Shown>> {
        (0..rows)
            .map(|r| {
                (0..cols)
                    .map(|c| {
                        let cell = screen.cell(r, c).expect("a cell");
                        // An empty cell shows as a space (`TermView`);
                        // the rows replayed from vt100's formatting have
                        // spaces where a coloured erase left empty cells.
                        let text = if cell.has_contents() { cell.contents() } else { " " };
                        (
                            text.to_owned(),
                            cell.fgcolor(),
                            cell.bgcolor(),
                            [
                                cell.bold(),
                                cell.dim(),
                                cell.italic(),
                                cell.underline(),
                                cell.inverse(),
                            ],
                        )
                    })
                    .collect()
            })
            .collect()
    }

    fn same_cells(ours: &vt100::Screen, theirs: &vt100::Screen, rows: u16, cols: u16, what: &str) {
        let (a, b) = (cells(ours, rows, cols), cells(theirs, rows, cols));
        for (r, (x, y)) in a.iter().zip(&b).enumerate() {
            if let Some(c) = x.iter().zip(y).position(|(p, q)| p != q) {
                let text = |s: &vt100::Screen| -> Vec<String> { s.rows(0, cols).collect() };
                panic!(
                    "{what}: row {r} col {c}: ours {:?} theirs {:?}\nours:\n{:#?}\ntheirs:\n{:#?}",
                    x[c],
                    y[c],
                    text(ours),
                    text(theirs)
                );
            }
        }
    }

    /// A card's output of every kind: plain, coloured and wide lines,
    /// lines longer than the screen, erasing, a scroll region, a visit to
    /// the alternate screen, cursor movement.
    fn stream(lines: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for i in 0..lines {
            let line = match i % 9 {
                0 => format!("plain line {i}\r\n"),
                1 => format!("\x1b[1;32m[  OK  ]\x1b[0m started unit {i}\r\n"),
                2 => format!("\x1b[41m\x1b[Kred to the edge {i}\x1b[m\r\n"),
                3 => format!("wide 漢字 and ünïcode {i}\r\n"),
                4 => format!("{} {i}\r\n", "long".repeat(12)),
                5 => format!("\x1b[38;5;208m256\x1b[38;2;1;2;3m rgb \x1b[7m inverse {i}\x1b[0m\r\n"),
                6 => format!("\x1b[?1049h\x1b[2J\x1b[Htop {i}\r\nPID USER\r\n\x1b[?1049lback {i}\r\n"),
                7 => format!("\x1b]0;title {i}\x07abc\x1b[2Dx\x1b[1A\x1b[1B\r\n"),
                _ => format!("\x1b[3;5r\x1b[5H in region {i}\n\n\x1b[r\x1b[24H{i} after\r\n"),
            };
            out.extend_from_slice(line.as_bytes());
        }
        out
    }

    /// A small pseudo-random generator (deterministic chunk boundaries).
    fn lcg(seed: &mut u64) -> usize {
        *seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        usize::try_from(*seed >> 33).expect("fits")
    }

    /// Our terminal beside vt100 with its own scrollback, fed the same
    /// bytes in random chunks (cutting sequences and characters); every
    /// scrolled-back view must show the same cells.
    fn same_as_vt100(size: (u16, u16), resize: Option<(u16, u16)>, depth: usize, bytes: &[u8], seed: u64) {
        same_as_vt100_in(size, resize, depth, bytes, seed, 97);
    }

    /// [`same_as_vt100`] with chunks of up to `chunk` bytes.
    fn same_as_vt100_in(
        size: (u16, u16),
        resize: Option<(u16, u16)>,
        depth: usize,
        bytes: &[u8],
        seed: u64,
        chunk: usize,
    ) {
        let (mut rows, mut cols) = size;
        let mut ours = Term::new(nz(rows), nz(cols), depth);
        let mut theirs = vt100::Parser::new(nz(rows), nz(cols), depth);
        let mut seed = seed;
        let mut at = 0;
        while at < bytes.len() {
            // The new size halfway, the old one back at three quarters
            // (a pane zoomed and back).
            let want = match resize {
                Some(_) if at >= bytes.len() * 3 / 4 => size,
                Some(new) if at >= bytes.len() / 2 => new,
                _ => size,
            };
            if want != (rows, cols) {
                ours.set_size(nz(want.0), nz(want.1));
                theirs.set_size(nz(want.0), nz(want.1));
                (rows, cols) = want;
                same_cells(ours.screen(), theirs.screen(), rows, cols, "the resized screen");
                assert_eq!(ours.scrollback_len(), theirs.screen().scrollback_len(), "resized");
            }
            let n = (lcg(&mut seed) % chunk + 1).min(bytes.len() - at);
            ours.process(&bytes[at..at + n]);
            theirs.process(&bytes[at..at + n]);
            at += n;
            // The live screen after every chunk (a flood skipped past
            // shows the same screen at once, not only by the end).
            same_cells(
                ours.screen(),
                theirs.screen(),
                rows,
                cols,
                &format!("at byte {at}"),
            );
        }
        assert_eq!(ours.scrollback_len(), theirs.screen().scrollback_len());
        same_cells(ours.screen(), theirs.screen(), rows, cols, "the live screen");
        let len = ours.scrollback_len();
        for back in [1, 2, rows as usize - 1, rows as usize + 3, len / 2, len - 1, len] {
            ours.scroll_to(back);
            theirs.screen_mut().set_scrollback(back);
            assert_eq!(ours.scrolled(), back.min(len));
            same_cells(
                ours.screen(),
                theirs.screen(),
                rows,
                cols,
                &format!("{back} lines back of {len}"),
            );
        }
        ours.scroll_to(0);
        assert_eq!(ours.scrolled(), 0);
    }

    #[test]
    fn the_scrollback_is_what_vt100s_own_would_hold() {
        let bytes = stream(400);
        // Several generations (400 lines through 40 kept), then fewer
        // lines than the depth.
        for seed in 1..6 {
            same_as_vt100((24, 40), None, 40, &bytes, seed);
        }
        same_as_vt100((10, 30), None, 1000, &bytes, 7);
        // A terminal made smaller pushes rows into the scrollback, a
        // taller one pulls them back.
        same_as_vt100((24, 40), Some((20, 40)), 40, &bytes, 8);
        same_as_vt100((24, 40), Some((20, 40)), 1000, &bytes, 9);
        same_as_vt100((20, 40), Some((30, 40)), 40, &bytes, 10);
        same_as_vt100((20, 40), Some((30, 40)), 1000, &bytes, 11);
        same_as_vt100((20, 40), Some((30, 40)), 5, &bytes, 12);
    }

    /// Floods of plain lines (which [`skippable`] lets the live screen skip)
    /// in big chunks, between and after everything else: a partial line
    /// the cursor went back over, colours in force, a scroll region set and
    /// reset, the alternate screen, lines at and past the right edge.
    #[test]
    fn a_flood_skipped_past_shows_what_vt100_shows() {
        let flood = |from: usize, n: usize| -> Vec<u8> {
            let mut v = Vec::new();
            for i in from..from + n {
                v.extend_from_slice(format!("{i}\r\n").as_bytes());
            }
            v
        };
        let mut bytes = flood(0, 300);
        bytes.extend_from_slice(b"half a line\r");
        bytes.extend_from_slice(&flood(300, 200));
        bytes.extend_from_slice(b"\x1b[1;33m");
        bytes.extend_from_slice(&flood(500, 200));
        bytes.extend_from_slice(b"\x1b[0m");
        bytes.extend_from_slice(&stream(60));
        bytes.extend_from_slice(&flood(600, 300));
        bytes.extend_from_slice(b"\x1b[3;10r\x1b[10H");
        bytes.extend_from_slice(&flood(900, 200));
        bytes.extend_from_slice(b"\x1b[r\x1b[24H");
        bytes.extend_from_slice(&flood(1100, 200));
        bytes.extend_from_slice(&flood(1300, 300));
        bytes.extend_from_slice(b"\x1b[?1049h");
        bytes.extend_from_slice(&flood(1600, 200));
        bytes.extend_from_slice(b"\x1b[?1049l");
        for i in 0..200 {
            bytes.extend_from_slice(format!("{}{i}\r\n", "x".repeat(i % 45)).as_bytes());
        }
        bytes.extend_from_slice(&flood(2000, 300));
        for seed in 1..5 {
            same_as_vt100_in((24, 40), None, 40, &bytes, seed, 8192);
            same_as_vt100_in((24, 40), None, 1000, &bytes, seed, 4096);
        }
        same_as_vt100_in((24, 40), Some((30, 40)), 100, &bytes, 5, 8192);
        same_as_vt100_in((24, 40), Some((20, 30)), 100, &bytes, 6, 8192);
    }

    /// Lines short and long against the screen's width, with a lone
    /// `\r`, a lone `\n`, an escape or a byte past ASCII now and then, cut
    /// anywhere: the quick answer, when there is one, is the byte-wise one.
    #[test]
    fn short_lines_are_told_as_a_byte_at_a_time_tells_them() {
        let mut seed = 7;
        let (mut quick, mut plain) = (0, 0);
        for case in 0..6000 {
            let cols = [1, 2, 3, 20, 63, 64, 65, 80, 200][case % 9];
            let odd = case % 3 == 0;
            let longest = if case % 2 == 0 {
                usize::from(cols) + 3
            } else {
                usize::from(cols / 2) + 1
            };
            let mut bytes = Vec::new();
            let len = lcg(&mut seed) % if case % 5 == 0 { 9000 } else { 700 };
            while bytes.len() < len {
                let line = lcg(&mut seed) % longest;
                bytes.extend((0..line).map(|i| b' ' + u8::try_from((i + case) % 95).unwrap()));
                match lcg(&mut seed) % if odd { 12 } else { 400 } {
                    0 => bytes.push(b'\r'),
                    1 => bytes.push(b'\n'),
                    2 => bytes.push(0x1b),
                    3 => bytes.push(0xc3),
                    _ => bytes.extend_from_slice(b"\r\n"),
                }
            }
            let cut = lcg(&mut seed) % (bytes.len() + 1);
            for part in [&bytes[..], &bytes[cut..], &bytes[..cut]] {
                let want = plain_lines_bytewise(part, cols);
                plain += usize::from(want.is_some());
                let got = match short_plain_lines(part, cols) {
                    Quick::Plain(feeds) => Some(Some(feeds)),
                    Quick::NotPlain => Some(None),
                    Quick::CannotTell => None,
                };
                if let Some(got) = got {
                    quick += usize::from(got.is_some());
                    assert_eq!(got, want, "cols {cols}: {:?}", String::from_utf8_lossy(part));
                }
                assert_eq!(plain_lines(part, cols), want);
            }
        }
        assert!(
            plain > 3000 && quick > 1500,
            "both answers are exercised: {plain} plain, {quick} quick"
        );
    }

    #[test]
    fn a_flood_skips_the_lines_that_scroll_past_unseen() {
        // A screen of 5 rows fed 1000 plain lines at once draws few of them:
        // the rest are counted, and the screen is the last ones.
        let mut t = Term::new(nz(5), nz(20), 100);
        // The cursor at the start of the bottom row, one line scrolled off.
        t.process(b"a\r\nb\r\nc\r\nd\r\ne\r\n");
        assert_eq!(t.live.callbacks().lines, 1);
        let mut text = String::new();
        for n in 1..=1000 {
            write!(text, "{n}\r\n").expect("to a string");
        }
        // All but the last 6 lines (the screen's 5 and one more).
        assert_eq!(
            skippable(text.as_bytes(), 5, 20),
            (text.find("995\r\n").unwrap(), 994)
        );
        t.process(text.as_bytes());
        assert_eq!(t.live.callbacks().lines, 1001);
        assert_eq!(t.live.screen().contents(), "997\n998\n999\n1000");
        assert_eq!(t.scrollback_text().last().map(String::as_str), Some("996"));
        // Not plain, or a line reaching the edge: nothing is skipped.
        assert_eq!(skippable(b"a\x1b[mb\r\n", 5, 20).0, 0);
        assert_eq!(skippable(&b"x\n".repeat(100), 5, 20).0, 0);
        assert_eq!(skippable(&b"0123456789012345678901\r\n".repeat(100), 5, 20).0, 0);
    }

    #[test]
    fn a_flood_keeps_exactly_the_last_lines() {
        let mut t = Term::new(nz(5), nz(20), 100);
        let mut text = String::new();
        for n in 1..=100_000 {
            write!(text, "{n}\r\n").expect("to a string");
        }
        for chunk in text.as_bytes().chunks(4093) {
            t.process(chunk);
        }
        let kept = t.scrollback_text();
        assert_eq!(kept.len(), 100);
        assert_eq!(t.scrollback_len(), 100);
        // The screen holds the last 4 numbers and the cursor's empty line.
        let want: Vec<String> = (99_897..=99_996).map(|n| n.to_string()).collect();
        assert_eq!(kept, want);
        // What is kept stays bounded: two generations of about the depth.
        assert!(t.generations.len() <= 2);
        assert!(t.generations.iter().map(|g| g.bytes).sum::<usize>() < 3 * 100 * 8);
    }

    #[test]
    fn a_view_scrolled_back_stays_on_its_lines_while_output_arrives() {
        let mut t = Term::new(nz(5), nz(20), 100);
        let mut text = String::new();
        for n in 1..=50 {
            write!(text, "line {n}\r\n").expect("to a string");
        }
        t.process(text.as_bytes());
        t.scroll_to(10);
        let before = cells(t.screen(), 5, 20);
        t.process(b"line 51\r\nline 52\r\n");
        assert_eq!(cells(t.screen(), 5, 20), before);
        assert_eq!(t.scrolled(), 12);
        // Moving on replays: one line further back from where it stayed.
        t.scroll_to(t.scrolled() + 1);
        assert_eq!(t.screen().cell(0, 0).map(vt100::Cell::contents), Some("l"));
        let top: String = (0..20)
            .filter_map(|c| t.screen().cell(0, c).map(|c| c.contents().to_owned()))
            .collect();
        assert_eq!(top.trim_end(), "line 36");
    }

    #[test]
    fn no_depth_keeps_nothing() {
        let mut t = Term::new(nz(3), nz(10), 0);
        t.process(b"a\r\nb\r\nc\r\nd\r\n");
        assert_eq!(t.scrollback_len(), 0);
        t.scroll_to(5);
        assert_eq!(t.scrolled(), 0);
        assert!(t.generations.is_empty());
    }

    #[test]
    fn a_narrowed_terminal_cuts_its_old_lines_at_the_edge() {
        let mut t = Term::new(nz(3), nz(30), 100);
        t.process(b"a line of twenty-six chars\r\n\r\n\r\n\r\n");
        t.set_size(nz(3), nz(10));
        t.process(b"short\r\n\r\n\r\n");
        assert_eq!(t.scrollback_text()[0], "a line of twenty-six chars");
        t.scroll_to(usize::MAX);
        let top: String = (0..10)
            .filter_map(|c| t.screen().cell(0, c).map(|c| c.contents().to_owned()))
            .collect();
        assert_eq!(top, "a line of ");
    }

    #[test]
    fn a_taller_screen_after_a_wider_one_leaves_its_rows_blank() {
        let mut t = Term::new(nz(3), nz(30), 100);
        t.process(b"a line of twenty-six chars\r\nb\r\nc\r\nd");
        t.set_size(nz(3), nz(10));
        t.set_size(nz(5), nz(10));
        let rows: Vec<String> = t.screen().rows(0, 10).collect();
        // One line had scrolled off: one row above, blank, one below.
        assert_eq!(rows, ["", "b", "c", "d", ""]);
        assert_eq!(t.scrollback_text(), ["a line of twenty-six chars"]);
    }

    #[test]
    fn ground_is_between_sequences_and_characters() {
        let g = |b: &[u8]| Ground::Ground.feed(b);
        assert_eq!(g(b"text\r\n"), Ground::Ground);
        assert_eq!(g(b"\x1b[31"), Ground::Csi);
        assert_eq!(g(b"\x1b[31m"), Ground::Ground);
        // Controls inside a sequence do not end it.
        assert_eq!(g(b"\x1b[3\n"), Ground::Csi);
        assert_eq!(g(b"\x1b]0;title\n"), Ground::Osc);
        assert_eq!(g(b"\x1b]0;title\x07"), Ground::Ground);
        assert_eq!(g(b"\x1b]0;title\x1b\\"), Ground::Ground);
        assert_eq!(g(b"\x1bPq#0\x07"), Ground::String);
        assert_eq!(g(b"\x1bPq#0\x1b\\"), Ground::Ground);
        assert_eq!(g(b"\x1b(B"), Ground::Ground);
        assert_eq!(g(b"\x1b("), Ground::EscapeIntermediate);
        assert_eq!(g(b"\x1b[31\x18"), Ground::Ground);
        assert_eq!(g("漢".as_bytes()), Ground::Ground);
        assert_eq!(g(&"漢".as_bytes()[..2]), Ground::Utf8(1));
    }
}
