//! Parsers for the debugfs `smpt`, `dp` and `vdev_info` dumps of a card.
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
    /// The same descriptors, their numbers read (a line whose numbers do
    /// not read is in `devices` only), with the feature words under them.
    pub descs: Vec<DpDevice>,
    /// How many lines report a malformed descriptor.
    pub malformed: usize,
}

/// One device descriptor of the device page, as `dp` dumps it (written by
/// the host, but its status and guest features by the card).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DpDevice {
    /// The virtio device type (1 net, 2 block, 3 console).
    pub ty: i8,
    pub num_vq: u8,
    /// The virtio status byte the card's driver wrote.
    pub status: u8,
    /// The first 64 feature bits the host offers (little-endian bytes).
    pub host_features: u64,
    /// The first 64 the card's driver acknowledged.
    pub guest_features: u64,
}

/// One device of debugfs `vdev_info` (the host driver's own record of it).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VdevInfo {
    /// The virtio device type (1 net, 2 block, 3 console).
    pub ty: i8,
    /// `UP` (the card's driver set DRIVER_OK) or not.
    pub up: bool,
    /// Bytes copied to the card and from it.
    pub bytes_to_card: u64,
    pub bytes_from_card: u64,
    pub doorbells: u64,
    /// Resets the card asked for.
    pub resets: u64,
    pub status: u8,
    /// Why its rings are refused until the card resets it (escaped).
    pub broken: Option<String>,
    pub vrings: Vec<VringInfo>,
}

/// One vring of a `vdev_info` device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VringInfo {
    pub index: u32,
    /// Descriptors in the ring.
    pub num: u32,
    /// The host's next avail slot and its next used slot.
    pub last_avail: u16,
    pub last_used: u16,
    /// A chain fetched but not finished.
    pub held: bool,
    pub chains: u64,
    pub completed: u64,
    pub notifies: u64,
    pub errors: u64,
}

impl VringInfo {
    /// Chains the host took from the ring and has not given back: how
    /// full the ring is on the host's side (the card's own avail index is
    /// not in the dump).
    #[must_use]
    pub fn in_flight(&self) -> u16 {
        self.last_avail.wrapping_sub(self.last_used)
    }
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

/// The number after `key` in a `key value key value` line.
fn value_of<T: std::str::FromStr>(line: &str, key: &str) -> Option<T> {
    let mut words = line.split_whitespace();
    while let Some(w) = words.next() {
        if w == key {
            return words.next()?.parse().ok();
        }
    }
    None
}

/// A hexadecimal number with or without `0x`.
fn hex<T: TryFrom<u64>>(s: &str) -> Option<T> {
    let v = u64::from_str_radix(s.strip_prefix("0x").unwrap_or(s), 16).ok()?;
    T::try_from(v).ok()
}

/// `  host features: 41 00 20 00` as a little-endian number (the first 8
/// bytes).
fn feature_bytes(rest: &str) -> Option<u64> {
    let mut v = 0u64;
    for (i, b) in rest.split_whitespace().take(8).enumerate() {
        v |= u64::from(u8::from_str_radix(b, 16).ok()?) << (8 * i);
    }
    Some(v)
}

/// Parses the `dp` dump: `Bootparam: key value` lines, `Device type ...`
/// lines (with the `host features:` and `guest features:` lines under
/// them) and `malformed descriptor: ...` lines; anything else is skipped,
/// as is a `Bootparam:` line without a value.
#[must_use]
pub fn parse_dp(text: &str) -> DpSummary {
    let mut s = DpSummary::default();
    // Whether the feature lines that follow are the last descriptor's.
    let mut in_desc = false;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("Bootparam: ") {
            in_desc = false;
            let Some((k, v)) = rest.trim().split_once(' ') else {
                continue;
            };
            if s.bootparam.len() < MAX_ROWS {
                s.bootparam.push((field(k), field(v.trim())));
            }
        } else if line.starts_with("Device type") {
            in_desc = false;
            if s.devices.len() < MAX_ROWS {
                s.devices.push(field(line));
                let desc = (|| {
                    Some(DpDevice {
                        ty: value_of(line, "type")?,
                        num_vq: value_of(line, "num_vq")?,
                        status: hex(&value_of::<String>(line, "status")?)?,
                        ..DpDevice::default()
                    })
                })();
                if let Some(d) = desc {
                    s.descs.push(d);
                    in_desc = true;
                }
            }
        } else if let (true, Some(rest)) = (in_desc, line.trim_start().strip_prefix("host features:")) {
            if let (Some(d), Some(f)) = (s.descs.last_mut(), feature_bytes(rest)) {
                d.host_features = f;
            }
        } else if let (true, Some(rest)) = (in_desc, line.trim_start().strip_prefix("guest features:")) {
            if let (Some(d), Some(f)) = (s.descs.last_mut(), feature_bytes(rest)) {
                d.guest_features = f;
            }
        } else if line.starts_with("malformed") {
            in_desc = false;
            s.malformed = s.malformed.saturating_add(1);
        }
    }
    s
}

/// Parses debugfs `vdev_info`: a `VDEV type T (name) state UP|DOWN in N
/// out N slot A c2h_db D doorbells N resets N status 0xS [BROKEN]` line per
/// device, `  broken: why` under a broken one, and `  vring I: num N
/// last_avail A last_used U held H used WHERE chains C completed C
/// notifies N errors E` per ring. Lines that do not read are skipped; at
/// most [`MAX_ROWS`] devices, each with at most [`MAX_ROWS`] rings.
#[must_use]
pub fn parse_vdev_info(text: &str) -> Vec<VdevInfo> {
    let mut out: Vec<VdevInfo> = Vec::new();
    // Whether the indented lines that follow are the last device's.
    let mut in_dev = false;
    for line in text.lines() {
        if line.starts_with("VDEV ") {
            in_dev = false;
            if out.len() >= MAX_ROWS {
                continue;
            }
            let dev = (|| {
                Some(VdevInfo {
                    ty: value_of(line, "type")?,
                    up: value_of::<String>(line, "state")? == "UP",
                    // `in` counts what went to the card, `out` what came
                    // from it.
                    bytes_to_card: value_of(line, "in")?,
                    bytes_from_card: value_of(line, "out")?,
                    doorbells: value_of(line, "doorbells")?,
                    resets: value_of(line, "resets")?,
                    status: hex(&value_of::<String>(line, "status")?)?,
                    broken: None,
                    vrings: Vec::new(),
                })
            })();
            if let Some(d) = dev {
                out.push(d);
                in_dev = true;
            }
        } else if let (true, Some(rest)) = (in_dev, line.strip_prefix("  broken: ")) {
            if let Some(d) = out.last_mut() {
                d.broken = Some(field(rest));
            }
        } else if let (true, Some(rest)) = (in_dev, line.strip_prefix("  vring ")) {
            let Some((index, rest)) = rest.split_once(':') else {
                continue;
            };
            let ring = (|| {
                Some(VringInfo {
                    index: index.parse().ok()?,
                    num: value_of(rest, "num")?,
                    last_avail: value_of(rest, "last_avail")?,
                    last_used: value_of(rest, "last_used")?,
                    held: value_of::<u8>(rest, "held")? != 0,
                    chains: value_of(rest, "chains")?,
                    completed: value_of(rest, "completed")?,
                    notifies: value_of(rest, "notifies")?,
                    errors: value_of(rest, "errors")?,
                })
            })();
            if let (Some(d), Some(r)) = (out.last_mut(), ring) {
                if d.vrings.len() < MAX_ROWS {
                    d.vrings.push(r);
                }
            }
        } else {
            in_dev = false;
        }
    }
    out
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

    /// What mic-core's `write_dump` and `write_info` write for a console.
    #[test]
    fn dp_features_and_vdev_info() {
        let dp = "Bootparam: magic 0xc0ffee00\n\
                  Device type 3 num_vq 2 feature_len 4 config_len 8 status 0x7 at offset 0x10\n\
                  \x20 vqconfig[0]: address 0x80000 used_address 0x0 num 128\n\
                  \x20 host features: 41 00 00 01\n\
                  \x20 guest features: 01 00 00 00\n\
                  \x20 config: 00 00 00 00 00 00 00 00\n\
                  Device type 1 num_vq 2 feature_len 4 config_len 8 status 0x0 at offset 0x60\n\
                  \x20 host features: zz\n";
        let s = parse_dp(dp);
        assert_eq!(
            s.descs,
            [
                DpDevice {
                    ty: 3,
                    num_vq: 2,
                    status: 7,
                    host_features: 0x0100_0041,
                    guest_features: 1,
                },
                DpDevice {
                    ty: 1,
                    num_vq: 2,
                    ..DpDevice::default()
                }
            ]
        );
        let info = "VDEV type 3 (console) state UP in 12 out 345 slot 0x10 c2h_db 4 doorbells 9 resets 1 status 0x7\n\
                    \x20 vring 0: num 128 last_avail 5 last_used 3 held 1 used card@0x90000 chains 5 completed 3 notifies 2 errors 0\n\
                    \x20 vring 1: num 128 last_avail 65535 last_used 1 held 0 used host chains 7 completed 7 notifies 7 errors 1\n\
                    VDEV type 1 (net) state DOWN in 0 out 0 slot 0x60 c2h_db 5 doorbells 0 resets 0 status 0x0 BROKEN\n\
                    \x20 broken: descriptor \x1b[31mloop\n\
                    \x20 vring x: garbage\n";
        let v = parse_vdev_info(info);
        assert_eq!(v.len(), 2);
        assert_eq!(
            (
                v[0].ty,
                v[0].up,
                v[0].bytes_to_card,
                v[0].bytes_from_card,
                v[0].doorbells,
                v[0].resets
            ),
            (3, true, 12, 345, 9, 1)
        );
        assert_eq!(v[0].vrings.len(), 2);
        assert_eq!((v[0].vrings[0].in_flight(), v[0].vrings[0].held), (2, true));
        // Indices wrap.
        assert_eq!(v[0].vrings[1].in_flight(), 65534);
        assert_eq!(v[0].vrings[1].errors, 1);
        assert!(!v[1].up);
        assert_eq!(v[1].broken.as_deref(), Some("descriptor \\x1b[31mloop"));
        assert!(v[1].vrings.is_empty());
        assert_eq!(parse_vdev_info("VDEV type x\n  vring 0: num 1\n"), vec![]);
        assert!(
            parse_vdev_info(
                &"VDEV type 3 (c) state UP in 0 out 0 slot 0 c2h_db 0 doorbells 0 resets 0 status 0x0\n"
                    .repeat(1000)
            )
            .len()
                <= MAX_ROWS
        );
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
            let _ = parse_vdev_info(&s);
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
