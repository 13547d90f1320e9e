//! Summaries of the debugfs `smpt` and `dp` dumps for the detail pane.
//!
//! The dumps come from the host driver, but the device page is written by
//! the card: everything is parsed leniently, bounded, and shown escaped.

/// How many rows of a dump are kept at most.
const MAX_ROWS: usize = 64;

/// The `smpt` dump: entries, and those in use.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SmptSummary {
    /// Number of entries listed.
    pub entries: usize,
    /// Entries with a non-zero refcount: (index, host DMA address, refcount).
    pub used: Vec<(usize, String, u64)>,
}

/// The `dp` dump: bootparam fields and device descriptors.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DpSummary {
    /// `Bootparam: key value` lines.
    pub bootparam: Vec<(String, String)>,
    /// Device descriptor lines.
    pub devices: Vec<String>,
    /// Lines reporting a malformed descriptor.
    pub malformed: usize,
}

impl DpSummary {
    /// The value of a bootparam field.
    #[must_use]
    pub fn field(&self, key: &str) -> Option<&str> {
        self.bootparam
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses the `smpt` dump (`MIC N |SMPT entry| SW DMA addr RefCount`
/// header, `=` rules, `|idx | addr refcount` rows).
#[must_use]
pub fn parse_smpt(text: &str) -> SmptSummary {
    let mut s = SmptSummary::default();
    for line in text.lines() {
        let mut cols = line.split('|');
        let (Some(_), Some(idx), Some(rest)) = (cols.next(), cols.next(), cols.next()) else {
            continue;
        };
        let Ok(idx) = idx.trim().parse::<usize>() else {
            continue;
        };
        let mut words = rest.split_whitespace();
        let (Some(addr), Some(refs)) = (words.next(), words.next()) else {
            continue;
        };
        s.entries += 1;
        let refs = refs.parse::<u64>().unwrap_or(0);
        if refs > 0 && s.used.len() < MAX_ROWS {
            s.used.push((idx, printable(addr), refs));
        }
    }
    s
}

/// Parses the `dp` dump.
#[must_use]
pub fn parse_dp(text: &str) -> DpSummary {
    let mut s = DpSummary::default();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("Bootparam: ") {
            let (k, v) = rest.split_once(' ').unwrap_or((rest, ""));
            if s.bootparam.len() < MAX_ROWS {
                s.bootparam.push((printable(k), printable(v.trim())));
            }
        } else if line.starts_with("Device type") {
            if s.devices.len() < MAX_ROWS {
                s.devices.push(printable(line));
            }
        } else if line.starts_with("malformed") {
            s.malformed += 1;
        }
    }
    s
}

/// `s` with control characters replaced, at most 4096 characters.
#[must_use]
pub fn printable(s: &str) -> String {
    s.chars()
        .take(4096)
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smpt() {
        let text = "MIC 0  |SMPT entry| SW DMA addr    RefCount  \n\
                    ====\n         |0         | 0              0         \n\
                    \x20        |1         | 0x400000000    7         \n====\n";
        let s = parse_smpt(text);
        assert_eq!(s.entries, 2);
        assert_eq!(s.used, vec![(1, "0x400000000".to_owned(), 7)]);
    }

    #[test]
    fn dp() {
        let text = "Bootparam: magic 0xc0ffee00\nBootparam: h2c_shutdown_db 3\n\
                    Device type 1 num_vq 2 feature_len 4 config_len 8 status 0x0 at offset 0x10\n\
                    malformed descriptor: Oops\n";
        let s = parse_dp(text);
        assert_eq!(s.field("magic"), Some("0xc0ffee00"));
        assert_eq!(s.field("h2c_shutdown_db"), Some("3"));
        assert_eq!(s.devices.len(), 1);
        assert_eq!(s.malformed, 1);
        assert_eq!(parse_dp("\u{1b}[2J garbage"), DpSummary::default());
    }
}
