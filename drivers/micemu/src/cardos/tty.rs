//! The console's line discipline: what the card kernel's tty layer does for
//! `hvc0` in canonical mode with echo (`stty sane`), and the output rules
//! that keep whatever the card prints safe for any terminal.
//!
//! Input: printable characters (UTF-8) are collected into a bounded line and
//! echoed; CR, LF or CRLF end it; backspace (DEL or BS) erases one
//! character; ctrl-U erases the line; ctrl-C discards the line (`^C`) and
//! interrupts the running command; ctrl-D on an empty line is end of file;
//! escape sequences (arrow keys, ...) and other control bytes are swallowed,
//! never echoed raw.
//!
//! Output: `\n` becomes `\r\n` (`onlcr`); text that came from data (the
//! command line, a disk, the network) goes through [`safe`], which shows
//! control characters as escapes.

use std::fmt::Write as _;

/// The longest line the discipline collects (`N_TTY_BUF_SIZE` is 4096;
/// a shell line is far shorter).
pub const MAX_LINE: usize = 1024;

/// What the discipline hands the shell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TtyEvent {
    /// A complete line (without its terminator).
    Line(String),
    /// ctrl-C.
    Interrupt,
    /// ctrl-D on an empty line.
    Eof,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Esc {
    #[default]
    None,
    /// After ESC.
    Start,
    /// Inside a CSI (`ESC [` ... final byte) or SS3 (`ESC O` x) sequence.
    Csi,
    Ss3,
}

/// The line discipline's state.
#[derive(Debug, Clone, Default)]
pub struct Tty {
    line: String,
    /// A UTF-8 sequence being assembled.
    utf8: Vec<u8>,
    esc: Esc,
    /// The last byte ended a line with CR (a following LF is the same end).
    after_cr: bool,
}

const BS: u8 = 0x08;
const DEL: u8 = 0x7f;
const CTRL_C: u8 = 0x03;
const CTRL_D: u8 = 0x04;
const CTRL_U: u8 = 0x15;
const ESC: u8 = 0x1b;
const BEL: &[u8] = b"\x07";
const ERASE: &[u8] = b"\x08 \x08";

impl Tty {
    /// Feeds input bytes; the echo goes to `echo`, completed lines and
    /// signals to `events`.
    pub fn feed(&mut self, bytes: &[u8], echo: &mut Vec<u8>, events: &mut Vec<TtyEvent>) {
        for &b in bytes {
            self.byte(b, echo, events);
        }
    }

    /// Forgets a partly typed line (a reset of the console).
    pub fn clear(&mut self) {
        *self = Self::default();
    }

    /// The partly typed line.
    #[must_use]
    pub fn pending(&self) -> &str {
        &self.line
    }

    fn byte(&mut self, b: u8, echo: &mut Vec<u8>, events: &mut Vec<TtyEvent>) {
        let after_cr = std::mem::take(&mut self.after_cr);
        match self.esc {
            Esc::None => {}
            Esc::Start => {
                self.esc = match b {
                    b'[' => Esc::Csi,
                    b'O' => Esc::Ss3,
                    _ => Esc::None,
                };
                return;
            }
            Esc::Csi => {
                if (0x40..=0x7e).contains(&b) {
                    self.esc = Esc::None;
                }
                return;
            }
            Esc::Ss3 => {
                self.esc = Esc::None;
                return;
            }
        }
        if b >= 0x80 {
            self.utf8_byte(b, echo);
            return;
        }
        // Any ASCII byte ends an unfinished UTF-8 sequence (dropped).
        self.utf8.clear();
        match b {
            b'\r' | b'\n' => {
                if b == b'\n' && after_cr {
                    return;
                }
                self.after_cr = b == b'\r';
                echo.extend_from_slice(b"\r\n");
                events.push(TtyEvent::Line(std::mem::take(&mut self.line)));
            }
            BS | DEL if self.line.pop().is_some() => echo.extend_from_slice(ERASE),
            CTRL_U => {
                for _ in 0..self.line.chars().count() {
                    echo.extend_from_slice(ERASE);
                }
                self.line.clear();
            }
            CTRL_C => {
                echo.extend_from_slice(b"^C\r\n");
                self.line.clear();
                events.push(TtyEvent::Interrupt);
            }
            CTRL_D if self.line.is_empty() => events.push(TtyEvent::Eof),
            ESC => self.esc = Esc::Start,
            b'\t' => self.push(' ', echo),
            0x20..=0x7e => self.push(char::from(b), echo),
            _ => {}
        }
    }

    fn utf8_byte(&mut self, b: u8, echo: &mut Vec<u8>) {
        self.utf8.push(b);
        match std::str::from_utf8(&self.utf8) {
            Ok(s) => {
                let c = s.chars().next();
                self.utf8.clear();
                if let Some(c) = c.filter(|c| !c.is_control()) {
                    self.push(c, echo);
                }
            }
            Err(e) if e.error_len().is_some() || self.utf8.len() >= 4 => self.utf8.clear(),
            Err(_) => {}
        }
    }

    fn push(&mut self, c: char, echo: &mut Vec<u8>) {
        if self.line.len() + c.len_utf8() > MAX_LINE {
            echo.extend_from_slice(BEL);
            return;
        }
        self.line.push(c);
        let mut b = [0u8; 4];
        echo.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
    }
}

/// `text` for a terminal: every control character (C0, DEL, C1) that did
/// not come from the card's own formatting shown as an escape (`\x1b`,
/// `\u{9b}`), so no data can move a cursor, change a title or ring a bell.
/// Newlines are kept when `keep_newlines` (multi-line text of the card's
/// own making, e.g. `dmesg`), escaped otherwise (`\n`).
#[must_use]
pub fn safe(text: &str, keep_newlines: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' if keep_newlines => out.push('\n'),
            '\n' => out.push_str("\\n"),
            '\t' => out.push('\t'),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// Bytes as a string for a terminal: valid UTF-8 through [`safe`], any
/// invalid byte as `\xNN`.
#[must_use]
pub fn safe_bytes(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.utf8_chunks() {
        out.push_str(&safe(chunk.valid(), false));
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

/// `text` as console output: `\n` → `\r\n`.
#[must_use]
pub fn onlcr(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + text.len() / 16);
    for b in text.bytes() {
        if b == b'\n' {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(t: &mut Tty, input: &[u8]) -> (String, Vec<TtyEvent>) {
        let (mut echo, mut ev) = (Vec::new(), Vec::new());
        t.feed(input, &mut echo, &mut ev);
        (String::from_utf8(echo).unwrap(), ev)
    }

    fn line(s: &str) -> TtyEvent {
        TtyEvent::Line(s.to_owned())
    }

    #[test]
    fn lines_echo_and_end_with_any_terminator() {
        let mut t = Tty::default();
        assert_eq!(
            feed(&mut t, b"uname -a\r"),
            ("uname -a\r\n".into(), vec![line("uname -a")])
        );
        // CRLF is one end of line, LF alone is one, CR CR two.
        assert_eq!(feed(&mut t, b"\nls\n").1, vec![line("ls")]);
        assert_eq!(feed(&mut t, b"\r\r").1, vec![line(""), line("")]);
        // Split across reads.
        assert_eq!(feed(&mut t, b"ec").1, vec![]);
        assert_eq!(feed(&mut t, b"ho\r\n").1, vec![line("echo")]);
    }

    #[test]
    fn erase_kill_interrupt_and_eof() {
        let mut t = Tty::default();
        let (echo, ev) = feed(&mut t, b"lx\x7fs\x08\x08");
        assert_eq!(echo, "lx\x08 \x08s\x08 \x08\x08 \x08");
        assert!(ev.is_empty());
        assert_eq!(t.pending(), "");
        // Backspace on an empty line echoes nothing.
        assert_eq!(feed(&mut t, b"\x7f").0, "");
        feed(&mut t, b"abc");
        assert_eq!(feed(&mut t, b"\x15").0, "\x08 \x08".repeat(3));
        assert_eq!(
            feed(&mut t, b"xyz\x03"),
            ("xyz^C\r\n".into(), vec![TtyEvent::Interrupt])
        );
        assert_eq!(t.pending(), "");
        // ctrl-D only on an empty line.
        assert_eq!(feed(&mut t, b"ab\x04").1, vec![]);
        assert_eq!(feed(&mut t, b"\x15\x04").1, vec![TtyEvent::Eof]);
    }

    #[test]
    fn control_bytes_and_escape_sequences_are_never_echoed() {
        let mut t = Tty::default();
        // Arrow keys, ctrl-arrows, F1, a bell, a NUL and an Alt-key.
        let (echo, ev) = feed(&mut t, b"a\x1b[A\x1b[1;5Cb\x1bOPc\x07\x00\x1b]d\r");
        assert_eq!(echo, "abcd\r\n");
        assert_eq!(ev, vec![line("abcd")]);
        // UTF-8 is kept whole; a broken sequence is dropped.
        let (echo, ev) = feed(&mut t, "é\u{2603}".as_bytes());
        assert_eq!(echo, "é\u{2603}");
        assert!(ev.is_empty());
        feed(&mut t, b"\xc3x\xff\r");
        // Backspace removes a whole character.
        let (echo, _) = feed(&mut t, "ü\x7f".as_bytes());
        assert_eq!(echo, "ü\x08 \x08");
        // C1 controls encoded in UTF-8 are swallowed too.
        assert_eq!(feed(&mut t, "\u{9b}".as_bytes()).0, "");
    }

    #[test]
    fn the_line_is_bounded() {
        let mut t = Tty::default();
        let long = vec![b'x'; MAX_LINE + 10];
        let (echo, _) = feed(&mut t, &long);
        assert_eq!(echo.matches('\x07').count(), 10);
        assert_eq!(t.pending().len(), MAX_LINE);
        let (_, ev) = feed(&mut t, b"\r");
        assert_eq!(ev, vec![TtyEvent::Line("x".repeat(MAX_LINE))]);
    }

    #[test]
    fn output_is_terminal_safe() {
        assert_eq!(safe("a\x1b[2Jb\u{9b}c\\", false), "a\\x1b[2Jb\\u{9b}c\\\\");
        assert_eq!(safe("one\ntwo\x07", true), "one\ntwo\\x07");
        assert_eq!(safe("one\ntwo", false), "one\\ntwo");
        assert_eq!(safe_bytes(b"ok\xff\x1b"), "ok\\xff\\x1b");
        assert_eq!(onlcr("a\nb\n"), b"a\r\nb\r\n");
    }
}
