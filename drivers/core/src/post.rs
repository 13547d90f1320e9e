//! POST codes: the two ASCII characters the card's bootstrap and OS write
//! into the POSTCODE register (debugfs `post_code` shows them). The values
//! are what the emulated card reports; tools compare against these, never
//! against literals of their own.

use crate::regs;

/// A post code: two ASCII characters.
pub type PostCode = [u8; 2];

/// Reset in progress.
pub const RESET: PostCode = *b"01";
/// Bootstrap ready, waiting for the host to download an OS.
pub const READY: PostCode = *b"12";
/// The OS image did not pass the bootstrap's checks.
pub const BAD_IMAGE: PostCode = *b"E1";
/// OS running.
pub const RUNNING: PostCode = *b"FF";

/// Boot step `n` is "2n" (20..29; steps past 9 show 29).
#[must_use]
pub const fn step(n: u32) -> PostCode {
    let d = if n > 9 { 9 } else { n as u8 };
    [b'2', b'0' + d]
}

/// The POSTCODE register value for a code: the characters in the low bytes.
#[must_use]
pub const fn register_value(code: PostCode) -> u32 {
    code[0] as u32 | ((code[1] as u32) << 8)
}

/// The code in a POSTCODE register value.
#[must_use]
pub const fn from_register(v: u32) -> PostCode {
    regs::post_code_chars(v)
}

/// The code as text, if both characters are printable ASCII.
#[must_use]
pub fn as_str(code: &PostCode) -> Option<&str> {
    core::str::from_utf8(code)
        .ok()
        .filter(|s| s.bytes().all(|b| b.is_ascii_graphic()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_in_the_register() {
        assert_eq!(register_value(RUNNING), 0x4646);
        assert_eq!(from_register(register_value(READY)), READY);
        assert_eq!(step(3), *b"23");
        assert_eq!(step(12), *b"29");
        assert_eq!(as_str(&BAD_IMAGE), Some("E1"));
        assert_eq!(as_str(&[1, 0xFF]), None);
    }
}
