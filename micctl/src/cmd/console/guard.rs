//! What of the card's output reaches the operator's terminal. The card is
//! untrusted, and some escape sequences act on the terminal beyond the
//! screen: they set its title and then ask for it back (an answer typed
//! into the card, as if by the operator), write the clipboard (OSC 52),
//! send hyperlinks, or drive the terminal through device-control strings.
//! The guard passes text and the sequences a console needs (colours,
//! cursor movement, erasing, scrolling regions, modes, queries a full-screen
//! program asks: the terminal's answers are the operator's terminal's own)
//! and drops the rest:
//!
//! - OSC, DCS, SOS, PM and APC strings (`ESC ]`, `ESC P`, `ESC X`,
//!   `ESC ^`, `ESC _` up to BEL or ST), whatever they say;
//! - CSI window operations (`CSI … t`: resizing, moving, reporting the
//!   title);
//! - a CSI longer than [`CSI_MAX`] (no terminal needs one).
//!
//! Only a terminal gets the guard; a file or a pipe gets the bytes as
//! they came.

/// The longest CSI sequence passed, bytes.
pub(super) const CSI_MAX: usize = 64;

const ESC: u8 = 0x1b;
const BEL: u8 = 0x07;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum State {
    #[default]
    Ground,
    /// After ESC.
    Esc,
    /// Inside `ESC [` … (the sequence so far is held).
    Csi,
    /// Inside a string that is dropped.
    Str,
    /// ESC inside such a string (ST is `ESC \`).
    StrEsc,
}

/// The guard's state across output chunks.
#[derive(Debug, Default)]
pub(super) struct Guard {
    state: State,
    csi: Vec<u8>,
}

impl Guard {
    /// What of `data` goes to the terminal (appended to `out`).
    pub(super) fn filter(&mut self, data: &[u8], out: &mut Vec<u8>) {
        for &b in data {
            self.byte(b, out);
        }
    }

    fn byte(&mut self, b: u8, out: &mut Vec<u8>) {
        match self.state {
            State::Ground => {
                if b == ESC {
                    self.state = State::Esc;
                } else {
                    out.push(b);
                }
            }
            State::Esc => match b {
                b'[' => {
                    self.csi.clear();
                    self.csi.extend_from_slice(b"\x1b[");
                    self.state = State::Csi;
                }
                b']' | b'P' | b'X' | b'^' | b'_' => self.state = State::Str,
                ESC => out.push(ESC),
                _ => {
                    out.extend_from_slice(&[ESC, b]);
                    self.state = State::Ground;
                }
            },
            State::Csi => match b {
                ESC => self.state = State::Esc,
                // C0 controls inside a sequence act at once, as on a terminal.
                0x00..=0x1f => out.push(b),
                0x20..=0x3f => {
                    self.csi.push(b);
                    if self.csi.len() > CSI_MAX {
                        self.state = State::Ground;
                    }
                }
                _ => {
                    // 0x40..=0x7e ends it; anything else cancels it.
                    if (0x40..=0x7e).contains(&b) && b != b't' {
                        out.extend_from_slice(&self.csi);
                        out.push(b);
                    }
                    self.state = State::Ground;
                }
            },
            State::Str => match b {
                BEL => self.state = State::Ground,
                ESC => self.state = State::StrEsc,
                _ => {}
            },
            State::StrEsc => {
                if b == b'\\' {
                    self.state = State::Ground;
                } else {
                    // The string ended without ST; this ESC starts anew.
                    self.state = State::Esc;
                    self.byte(b, out);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pass(chunks: &[&[u8]]) -> Vec<u8> {
        let mut g = Guard::default();
        let mut out = Vec::new();
        for c in chunks {
            g.filter(c, &mut out);
        }
        out
    }

    #[test]
    fn text_and_the_sequences_a_console_needs_pass() {
        let screen: &[u8] =
            b"\x1b[1;31mred\x1b[0m\r\n\x1b[2J\x1b[H\x1b[?25l\x1b[3;20r\x1b7\x1b8\x1b(B\x1b[6n\x1bM\x08 \x08";
        assert_eq!(pass(&[screen]), screen);
        // Split anywhere, the same.
        for cut in 0..screen.len() {
            assert_eq!(pass(&[&screen[..cut], &screen[cut..]]), screen, "cut at {cut}");
        }
        assert_eq!(pass(&["é€ ok".as_bytes()]), "é€ ok".as_bytes());
    }

    #[test]
    fn strings_and_window_operations_are_dropped() {
        // Title set then asked back (the answer would be typed into the card).
        assert_eq!(pass(&[b"a\x1b]0;echo evil\x07b\x1b[21tc"]), b"abc");
        // The clipboard, ST-terminated, split across chunks.
        assert_eq!(pass(&[b"x\x1b]52;c;ZXZpbA", b"==\x1b", b"\\y"]), b"xy");
        // DCS, APC, PM, SOS.
        assert_eq!(
            pass(&[b"1\x1bP$q\"p\x1b\\2\x1b_apc\x1b\\3\x1b^pm\x1b\\4\x1bXsos\x1b\\5"]),
            b"12345"
        );
        // A string cut short by a new sequence: that one counts.
        assert_eq!(pass(&[b"\x1b]0;t\x1b[1mB"]), b"\x1b[1mB");
        // A CSI that never ends is not held for ever.
        let mut long = b"\x1b[".to_vec();
        long.extend(std::iter::repeat_n(b'1', CSI_MAX + 10));
        long.extend_from_slice(b"mok");
        // Dropped once it is over the limit; what follows is text.
        let rest = CSI_MAX + 10 - (CSI_MAX - 1);
        let mut want = vec![b'1'; rest];
        want.extend_from_slice(b"mok");
        assert_eq!(pass(&[&long]), want);
        // Controls inside a CSI act; a cancelled CSI goes.
        assert_eq!(pass(&[b"\x1b[1\r2m"]), b"\r\x1b[12m");
        assert_eq!(pass(&[b"\x1b[1\x80z"]), b"z");
    }
}
