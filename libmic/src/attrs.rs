//! The names of the sysfs and debugfs files of a card, and the parsers for
//! their contents.
//!
//! Everything here is pure: no I/O, so the parsers can be unit- and
//! property-tested on arbitrary input.

use std::fmt;
use std::net::Ipv4Addr;

/// The sysfs attributes and debugfs files: the driver core's one table.
pub use mic_core::host::attrs::{Attr, DebugFile};

/// Strips exactly one trailing newline, as the driver appends one on read.
#[must_use]
pub fn strip_newline(s: &str) -> &str {
    s.strip_suffix('\n').unwrap_or(s)
}

/// Parses a `%p`-formatted pointer as `log_buf_addr`/`log_buf_len` show it:
/// `ffffffff81e4c3a0`, `0xffffffff81e4c3a0`, `(null)`, `0000000000000000`,
/// or empty. A null pointer (or nothing) is `Ok(None)`; anything that is not
/// hex is `Err(())`.
#[allow(clippy::result_unit_err)]
pub fn parse_kernel_ptr(s: &str) -> Result<Option<u64>, ()> {
    let s = s.trim();
    if s.is_empty() || s.eq_ignore_ascii_case("(null)") {
        return Ok(None);
    }
    let hex = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")).unwrap_or(s);
    if hex.is_empty() || hex.len() > 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(());
    }
    match u64::from_str_radix(hex, 16) {
        Ok(0) => Ok(None),
        Ok(v) => Ok(Some(v)),
        Err(_) => Err(()),
    }
}

/// Formats a value the way the driver parses `log_buf_addr`/`log_buf_len`
/// (`kstrtoul(buf, 16, ...)`): plain lowercase hex, no prefix.
#[must_use]
pub fn format_hex(v: u64) -> String {
    format!("{v:x}")
}

/// The card's address from a kernel command line's
/// `ifcfg=static;address,A;netmask,M` word (the form mpssd writes).
///
/// Returns `None` when there is no such word, it is not `static`, or the
/// address does not parse. The last `ifcfg=` word wins, as it would for the
/// card kernel's own parser.
#[must_use]
pub fn ipaddr_from_cmdline(cmdline: &str) -> Option<Ipv4Addr> {
    // One rule for the whole stack: the driver's, which `ipaddr` shows.
    mic_core::host::sysfs::ipaddr_from_cmdline(cmdline)?.parse().ok()
}

/// Makes card-controlled text safe to print on a terminal or in a TUI, on
/// one line: printable text (any script) passes; control characters (C0,
/// DEL, C1, tab and newline included) and bytes that are not UTF-8 become
/// `\xNN`; the invisible bidirectional controls that can reorder what a
/// terminal shows (U+061C, U+200E/F, U+202A–U+202E, U+2066–U+2069) become
/// `\u{NNNN}`. The result has no control characters, and escaping it again
/// changes nothing.
#[must_use]
pub fn escape_untrusted(text: impl AsRef<[u8]>) -> String {
    escape(text.as_ref(), false)
}

/// [`escape_untrusted`], except that a tab passes: for line-oriented
/// terminal output (a log), where a tab is layout and cannot move the
/// cursor anywhere harmful.
#[must_use]
pub fn escape_untrusted_keep_tabs(text: impl AsRef<[u8]>) -> String {
    escape(text.as_ref(), true)
}

fn escape(bytes: &[u8], keep_tabs: bool) -> String {
    use fmt::Write as _;
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '\t' && keep_tabs {
                out.push(c);
            } else if c.is_control() {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            } else if matches!(c, '\u{61c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
            {
                let _ = write!(out, "\\u{{{:04x}}}", u32::from(c));
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

/// How a value from a user, a file or the card appears in an error
/// message: quoted, control characters escaped ([`escape_untrusted`]), and
/// cut after [`QUOTE_MAX`] characters with an ellipsis and its full length,
/// so that a huge or hostile value cannot flood a terminal.
#[must_use]
pub fn quote_value(s: &str) -> String {
    let escaped = escape_untrusted(s);
    match escaped.char_indices().nth(QUOTE_MAX) {
        Some((cut, _)) => format!("\"{}…\" ({} bytes)", &escaped[..cut], s.len()),
        None => format!("\"{escaped}\""),
    }
}

/// Characters of a value [`quote_value`] shows before cutting it short.
pub const QUOTE_MAX: usize = 64;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn kernel_ptr_forms() {
        assert_eq!(
            parse_kernel_ptr("ffffffff81e4c3a0\n"),
            Ok(Some(0xffffffff81e4c3a0))
        );
        assert_eq!(
            parse_kernel_ptr("0xffffffff81e4c3a0\n"),
            Ok(Some(0xffffffff81e4c3a0))
        );
        assert_eq!(parse_kernel_ptr("0XAB"), Ok(Some(0xab)));
        assert_eq!(parse_kernel_ptr("(null)\n"), Ok(None));
        assert_eq!(parse_kernel_ptr("0000000000000000\n"), Ok(None));
        assert_eq!(parse_kernel_ptr("0x0"), Ok(None));
        assert_eq!(parse_kernel_ptr(""), Ok(None));
        assert_eq!(parse_kernel_ptr("\n"), Ok(None));
        assert_eq!(parse_kernel_ptr("0x"), Err(()));
        assert_eq!(parse_kernel_ptr("banana"), Err(()));
        assert_eq!(parse_kernel_ptr("+12"), Err(()));
        assert_eq!(parse_kernel_ptr("1ffffffffffffffff"), Err(()));
    }

    #[test]
    fn hex_round_trip() {
        assert_eq!(format_hex(0xffffffff81e4c3a0), "ffffffff81e4c3a0");
        assert_eq!(parse_kernel_ptr(&format_hex(0x1234)), Ok(Some(0x1234)));
    }

    #[test]
    fn ipaddr_forms() {
        let mpssd = "clocksource=tsc highres=off nohz=off cpufreq_on;corec6_off;pc3_off;pc6_off \
                     ifcfg=static;address,172.31.1.1;netmask,255.255.255.0";
        assert_eq!(ipaddr_from_cmdline(mpssd), Some(Ipv4Addr::new(172, 31, 1, 1)));
        assert_eq!(
            ipaddr_from_cmdline("ifcfg=static;netmask,255.0.0.0;address,10.0.0.2"),
            Some(Ipv4Addr::new(10, 0, 0, 2))
        );
        assert_eq!(
            ipaddr_from_cmdline("ifcfg=static;address,10.0.0.2,extra"),
            Some(Ipv4Addr::new(10, 0, 0, 2))
        );
        assert_eq!(ipaddr_from_cmdline(""), None);
        assert_eq!(ipaddr_from_cmdline("ifcfg=dhcp"), None);
        assert_eq!(ipaddr_from_cmdline("ifcfg=static;address,banana"), None);
        assert_eq!(ipaddr_from_cmdline("address,10.0.0.2"), None);
        assert_eq!(
            ipaddr_from_cmdline("ifcfg=static;address,1.1.1.1 ifcfg=static;address,2.2.2.2"),
            Some(Ipv4Addr::new(2, 2, 2, 2))
        );
    }

    #[test]
    fn escaping() {
        assert_eq!(escape_untrusted(b"3C"), "3C");
        assert_eq!(escape_untrusted(b"\x01\xff a"), "\\x01\\xff a");
        assert_eq!(escape_untrusted("\x1b[2Jboom\x07"), "\\x1b[2Jboom\\x07");
        assert_eq!(
            escape_untrusted("Phi\u{2122} \u{9b}x\u{7f}"),
            "Phi\u{2122} \\x9bx\\x7f"
        );
        assert_eq!(escape_untrusted("a\tb\nc"), "a\\x09b\\x0ac");
        assert_eq!(escape_untrusted_keep_tabs("a\tb\nc"), "a\tb\\x0ac");
        assert_eq!(escape_untrusted("abc\u{202e}fed"), "abc\\u{202e}fed");
        // A multi-byte character cut short is escaped bytewise.
        assert_eq!(escape_untrusted(b"\xe2\x84"), "\\xe2\\x84");
        assert_eq!(quote_value("bsd"), "\"bsd\"");
        assert_eq!(quote_value("a\nb"), "\"a\\x0ab\"");
        let long = quote_value(&"x".repeat(5000));
        assert_eq!(long, format!("\"{}…\" (5000 bytes)", "x".repeat(64)));
        assert_eq!(
            quote_value(&"é".repeat(100)).chars().count(),
            2 + 64 + 1 + " (200 bytes)".len()
        );
        assert_eq!(
            quote_value(&"é".repeat(64)).chars().count(),
            66,
            "64 characters are not cut"
        );
    }

    #[test]
    fn attr_names_are_unique() {
        let mut names: Vec<_> = Attr::ALL.iter().map(|a| a.file_name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Attr::ALL.len());
    }

    proptest! {
        #[test]
        fn kernel_ptr_never_panics(s in ".*") {
            let _ = parse_kernel_ptr(&s);
        }

        #[test]
        fn kernel_ptr_round_trips(v in 1u64..) {
            prop_assert_eq!(parse_kernel_ptr(&format_hex(v)), Ok(Some(v)));
            prop_assert_eq!(parse_kernel_ptr(&format!("{v:#018x}\n")), Ok(Some(v)));
        }

        #[test]
        fn ipaddr_never_panics(s in ".*") {
            let _ = ipaddr_from_cmdline(&s);
        }

        #[test]
        fn ipaddr_round_trips(a: [u8; 4], pre in "[a-z=]{0,10}") {
            let ip = Ipv4Addr::from(a);
            let line = format!("{pre} ifcfg=static;address,{ip};netmask,255.255.255.0");
            prop_assert_eq!(ipaddr_from_cmdline(&line), Some(ip));
        }

        #[test]
        fn escape_is_printable(b in proptest::collection::vec(any::<u8>(), 0..64)) {
            let e = escape_untrusted(&b);
            prop_assert!(!e.chars().any(char::is_control));
            prop_assert_eq!(escape_untrusted(&e), e.clone());
            let t = escape_untrusted_keep_tabs(&b);
            prop_assert!(!t.chars().any(|c| c.is_control() && c != '\t'));
        }

        #[test]
        fn quote_value_is_bounded(s in ".*") {
            prop_assert!(quote_value(&s).chars().count() <= 2 + QUOTE_MAX + 1 + 30);
        }

        #[test]
        fn escape_passes_printable_text(s in "[^\\p{Cc}\u{61c}\u{200e}\u{200f}\u{202a}-\u{202e}\u{2066}-\u{2069}]*") {
            prop_assert_eq!(escape_untrusted(&s), s.clone());
        }
    }
}
