//! Parsers for the debugfs `smpt` and `dp` dumps of a card.
//!
//! The dumps are text from the host driver, but what `dp` shows is written
//! by the card: both are parsed leniently (a line that does not have the
//! expected shape is skipped, never an error), bounded (at most
//! [`MAX_ROWS`] rows and [`MAX_FIELD`] characters a field are kept), and
//! every string kept is escaped with [`escape_untrusted`], so it is safe to
//! print as it is.
//!
//! Pure: no I/O. [`crate::Card::smpt`] and [`crate::Card::dp`] read and parse.

use crate::attrs::escape_untrusted;

/// How many rows of one kind (SMPT entries in use, bootparam fields,
/// device descriptors) are kept at most. An X100 has 32 SMPT entries and a
/// device page holds a handful of fields and descriptors.
pub const MAX_ROWS: usize = 64;

/// How many characters of one field are kept at most (before escaping).
pub const MAX_FIELD: usize = 256;

/// One SMPT entry with a non-zero reference count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmptEntry {
    pub index: u32,
    /// The host DMA address as the dump shows it (`0x400000000`, `0`).
    pub dma_addr: String,
    pub refcount: u64,
}

/// The `smpt` dump.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SmptSummary {
    /// How many entries the dump lists.
    pub entries: usize,
    /// The entries with a non-zero refcount, in dump order (at most
    /// [`MAX_ROWS`]).
    pub in_use: Vec<SmptEntry>,
}

/// The `dp` (device page) dump.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DpSummary {
    /// The `Bootparam: key value` lines, in dump order: `magic`,
    /// `h2c_shutdown_db`, `h2c_config_db`, `c2h_shutdown_db`,
    /// `shutdown_status`, `shutdown_card`.
    pub bootparam: Vec<(String, String)>,
    /// The device descriptor lines (`Device type 1 num_vq 2 ...`).
    pub devices: Vec<String>,
    /// How many lines report a malformed descriptor.
    pub malformed: usize,
}

impl DpSummary {
    /// The value of a bootparam field (the first, should it repeat).
    #[must_use]
    pub fn field(&self, key: &str) -> Option<&str> {
        self.bootparam
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// The first [`MAX_FIELD`] characters of `s`, escaped.
fn field(s: &str) -> String {
    match s.char_indices().nth(MAX_FIELD) {
        Some((cut, _)) => escape_untrusted(&s[..cut]),
        None => escape_untrusted(s),
    }
}

/// Parses the `smpt` dump: a `MIC N |SMPT entry| SW DMA addr RefCount`
/// header, `=` rules, and a `|index | addr refcount` row per entry. Rows
/// whose index or refcount is not a number are skipped.
#[must_use]
pub fn parse_smpt(text: &str) -> SmptSummary {
    let mut s = SmptSummary::default();
    for line in text.lines() {
        let mut cols = line.split('|').skip(1);
        let (Some(index), Some(rest)) = (cols.next(), cols.next()) else {
            continue;
        };
        let Ok(index) = index.trim().parse::<u32>() else {
            continue;
        };
        let mut words = rest.split_whitespace();
        let (Some(addr), Some(refcount)) = (words.next(), words.next()) else {
            continue;
        };
        let Ok(refcount) = refcount.parse::<u64>() else {
            continue;
        };
        s.entries += 1;
        if refcount > 0 && s.in_use.len() < MAX_ROWS {
            s.in_use.push(SmptEntry {
                index,
                dma_addr: field(addr),
                refcount,
            });
        }
    }
    s
}

/// Parses the `dp` dump: `Bootparam: key value` lines, `Device type ...`
/// lines and `malformed descriptor: ...` lines; anything else is skipped,
/// as is a `Bootparam:` line without a value.
#[must_use]
pub fn parse_dp(text: &str) -> DpSummary {
    let mut s = DpSummary::default();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("Bootparam: ") {
            let Some((k, v)) = rest.trim().split_once(' ') else {
                continue;
            };
            if s.bootparam.len() < MAX_ROWS {
                s.bootparam.push((field(k), field(v.trim())));
            }
        } else if line.starts_with("Device type") {
            if s.devices.len() < MAX_ROWS {
                s.devices.push(field(line));
            }
        } else if line.starts_with("malformed") {
            s.malformed = s.malformed.saturating_add(1);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;

    use super::*;
    use proptest::prelude::*;

    /// What mic-core's `Smpt::write_dump` writes (two of 32 rows).
    const SMPT: &str = "MIC 0  |SMPT entry| SW DMA addr    RefCount  \n\
                        ====================================================\n\
                        \x20        |0         | 0              0         \n\
                        \x20        |1         | 0x400000000    4096      \n\
                        ====================================================\n";

    /// What micemu's `dp_dump` writes.
    const DP: &str = "Bootparam: magic 0xc0ffee00\nBootparam: h2c_shutdown_db 3\n\
                      Bootparam: h2c_config_db -1\nBootparam: c2h_shutdown_db 1\n\
                      Bootparam: shutdown_status 0\nBootparam: shutdown_card 0\n\
                      Device type 1 num_vq 2 feature_len 4 config_len 8 status 0x0 at offset 0x10\n\
                      malformed descriptor: Oops\n";

    #[test]
    fn smpt() {
        let s = parse_smpt(SMPT);
        assert_eq!(s.entries, 2);
        assert_eq!(
            s.in_use,
            vec![SmptEntry {
                index: 1,
                dma_addr: "0x400000000".into(),
                refcount: 4096
            }]
        );
        assert_eq!(parse_smpt(""), SmptSummary::default());
    }

    #[test]
    fn smpt_skips_rows_that_are_not_entries() {
        let s =
            parse_smpt("|x| junk\n|1|\n|2| 0x1\n|3| 0x1 many\n|-4| 0x1 1\n|99999999999| 0x1 1\n|5| 0x1 -1\n");
        assert_eq!(s, SmptSummary::default());
    }

    #[test]
    fn smpt_escapes_and_bounds() {
        let s = parse_smpt("|1| \x1b]0;pwned\x07 1\n");
        assert_eq!(s.in_use[0].dma_addr, "\\x1b]0;pwned\\x07");
        let long = format!("|1| 0x{} 1\n", "f".repeat(10_000));
        assert!(parse_smpt(&long).in_use[0].dma_addr.len() <= MAX_FIELD);
        let many = "|1| 0x1 1\n".repeat(1000);
        let s = parse_smpt(&many);
        assert_eq!((s.entries, s.in_use.len()), (1000, MAX_ROWS));
    }

    #[test]
    fn dp() {
        let s = parse_dp(DP);
        assert_eq!(s.field("magic"), Some("0xc0ffee00"));
        assert_eq!(s.field("h2c_config_db"), Some("-1"));
        assert_eq!(s.bootparam.len(), 6);
        assert_eq!(s.devices.len(), 1);
        assert_eq!(s.malformed, 1);
    }

    #[test]
    fn dp_hostile() {
        assert_eq!(parse_dp("\u{1b}[2J garbage"), DpSummary::default());
        assert_eq!(
            parse_dp("Bootparam: x\nBootparam: \nBootparam:"),
            DpSummary::default()
        );
        let s = parse_dp("Bootparam: magic\t\u{9b}31m 0x1\u{202e}\nDevice type \x1b[2J\n");
        assert_eq!(
            s.bootparam,
            vec![("magic\\x09\\x9b31m".into(), "0x1\\u{202e}".into())]
        );
        assert_eq!(s.devices, vec!["Device type \\x1b[2J".to_owned()]);
        let s = parse_dp(&"Device type 1\nBootparam: k v\n".repeat(1000));
        assert_eq!((s.devices.len(), s.bootparam.len()), (MAX_ROWS, MAX_ROWS));
    }

    proptest! {
        #[test]
        fn never_panics_and_keeps_only_safe_text(s in "(\\PC|[|\n\t\u{1b}\u{9b} 0-9a-fx]){0,400}") {
            let smpt = parse_smpt(&s);
            prop_assert!(smpt.in_use.len() <= MAX_ROWS);
            for e in &smpt.in_use {
                prop_assert!(!e.dma_addr.chars().any(char::is_control));
            }
            let dp = parse_dp(&s);
            for (k, v) in &dp.bootparam {
                prop_assert!(!k.chars().any(char::is_control) && !v.chars().any(char::is_control));
            }
            for d in &dp.devices {
                prop_assert!(!d.chars().any(char::is_control));
            }
        }

        #[test]
        fn lines_of_the_dump_shape_never_panic(
            rows in proptest::collection::vec(("[ |]{0,3}", "-?[0-9]{0,12}", "[ |]{0,3}", "\\PC{0,12}", " {0,3}", "-?[0-9]{0,22}"), 0..40)
        ) {
            let mut text = String::new();
            for (a, b, c, d, e, f) in &rows {
                let _ = write!(text, "{a}{b}{c}{d}{e}{f}\nBootparam: {d}{e}{f}\n");
            }
            let _ = parse_smpt(&text);
            let _ = parse_dp(&text);
        }
    }
}
