//! What `micctl console` prints: the card's output on stdout (through the
//! [`Guard`] on a terminal), its own notices on stderr (each on a line of
//! its own, in raw mode too), or both as JSON Lines records with `--json`.

use std::io::{self, Write as _};

use serde_json::{Value, json};

use super::guard::Guard;
use crate::output;

/// The console's printer.
#[derive(Debug)]
pub(super) struct Printer {
    card: String,
    json: bool,
    /// The terminal is in raw mode: lines end `\r\n`.
    pub(super) raw: bool,
    /// With stdout a terminal: whether the last byte printed ended a line
    /// (output to a pipe or a file shares no line with stderr: `None`).
    at_line_start: Option<bool>,
    utf8: Utf8Chunks,
    /// What of the card's output reaches a terminal.
    guard: Guard,
    guarded: Vec<u8>,
}

impl Printer {
    pub(super) fn new(card: &str, json: bool) -> Self {
        Self {
            card: card.to_owned(),
            json,
            raw: false,
            at_line_start: std::io::IsTerminal::is_terminal(&io::stdout()).then_some(true),
            utf8: Utf8Chunks::default(),
            guard: Guard::default(),
            guarded: Vec::new(),
        }
    }

    pub(super) fn json(&self) -> bool {
        self.json
    }

    /// A JSON Lines record of this console: `{"type": kind, "card": ..., fields}`.
    pub(super) fn record(&self, kind: &str, fields: Value) {
        let mut v = output::record(kind, json!({ "card": self.card }));
        if let (Value::Object(m), Value::Object(f)) = (&mut v, fields) {
            m.extend(f);
        }
        let _ = output::print_json(&v);
    }

    /// One notice: `micctl: MESSAGE` on stderr, on a line of its own, or a
    /// `console_notice` record.
    pub(super) fn say(&mut self, notice: &str, message: &str) {
        if self.json {
            self.record("console_notice", json!({ "notice": notice, "message": message }));
            return;
        }
        let nl = if self.raw { "\r\n" } else { "\n" };
        let lead = if self.at_line_start == Some(false) { nl } else { "" };
        let _ = write!(io::stderr().lock(), "{lead}micctl: {message}{nl}");
        if let Some(at) = self.at_line_start.as_mut() {
            *at = true;
        }
    }

    /// The last line, after the terminal was restored: `micctl: MESSAGE`
    /// (`micctl: error: MESSAGE` for a failure).
    pub(super) fn last_words(&self, message: &str, failed: bool) {
        let lead = if self.at_line_start == Some(false) {
            "\n"
        } else {
            ""
        };
        let kind = if failed { "error: " } else { "" };
        let _ = writeln!(io::stderr().lock(), "{lead}micctl: {kind}{message}");
    }

    /// Output of the card: as it is on stdout, or a `console_output`
    /// record (text; bytes that are not UTF-8 become U+FFFD).
    pub(super) fn output(&mut self, data: &[u8], replay: bool) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        if let (Some(at), Some(&last)) = (self.at_line_start.as_mut(), data.last()) {
            *at = last == b'\n';
        }
        if self.json {
            let text = self.utf8.text(data);
            self.record("console_output", json!({ "data": text, "replay": replay }));
            return Ok(());
        }
        let mut out = io::stdout().lock();
        if self.at_line_start.is_none() {
            // A file or a pipe: the bytes as they came.
            return out.write_all(data).and_then(|()| out.flush());
        }
        self.guarded.clear();
        self.guard.filter(data, &mut self.guarded);
        out.write_all(&self.guarded).and_then(|()| out.flush())
    }
}

/// Finds TEXT in a stream of output chunks, across chunk boundaries.
#[derive(Debug)]
pub(super) struct Matcher {
    needle: Vec<u8>,
    tail: Vec<u8>,
}

impl Matcher {
    pub(super) fn new(text: &str) -> Self {
        Self {
            needle: text.as_bytes().to_vec(),
            tail: Vec::new(),
        }
    }

    /// Whether the output so far, ending with `chunk`, contains the text.
    pub(super) fn feed(&mut self, chunk: &[u8]) -> bool {
        if self.needle.is_empty() {
            return true;
        }
        self.tail.extend_from_slice(chunk);
        let found = self.tail.windows(self.needle.len()).any(|w| w == self.needle);
        let keep = self.needle.len() - 1;
        let cut = self.tail.len().saturating_sub(keep);
        self.tail.drain(..cut);
        found
    }
}

/// Turns output bytes into text, keeping a UTF-8 sequence split across
/// chunks whole.
#[derive(Debug, Default)]
struct Utf8Chunks {
    partial: Vec<u8>,
}

impl Utf8Chunks {
    fn text(&mut self, chunk: &[u8]) -> String {
        self.partial.extend_from_slice(chunk);
        let whole = match std::str::from_utf8(&self.partial) {
            // An incomplete sequence at the end waits for the next chunk.
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            _ => self.partial.len(),
        };
        let rest = self.partial.split_off(whole);
        let text = String::from_utf8_lossy(&self.partial).into_owned();
        self.partial = rest;
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn until_matches_across_chunks() {
        let mut m = Matcher::new("Linux mic0");
        assert!(!m.feed(b"uname -a\r\nLin"));
        assert!(!m.feed(b"ux mi"));
        assert!(m.feed(b"c0 3.10.0"));
        let mut m = Matcher::new("ab");
        assert!(!m.feed(b"a"));
        assert!(!m.feed(b""));
        assert!(m.feed(b"b"));
        assert!(!m.feed(b"a"), "a match is not kept");
        assert!(Matcher::new("").feed(b""));
    }

    #[test]
    fn utf8_split_across_chunks_stays_whole() {
        let mut u = Utf8Chunks::default();
        let s = "é€".as_bytes();
        assert_eq!(u.text(&s[..1]), "");
        assert_eq!(u.text(&s[1..3]), "é");
        assert_eq!(u.text(&s[3..]), "€");
        assert_eq!(u.text(b"\xffok"), "\u{fffd}ok");
    }
}
