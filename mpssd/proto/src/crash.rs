//! The layout of mpssd's crash forensics bundles: where they are, how a
//! bundle is named, which files it holds and what its `summary.json` says.
//! mpssd writes bundles by these facts; the tools (`micctl crash`, mictop)
//! read them by the same ones. No I/O.
//!
//! ```text
//! DIR/var/lib/mpssd/crash/            (DEFAULT_DIR; [crash] dir in mpssd.toml)
//!   mic0-20260101T120000.123Z/        (BundleName: card, UTC time)
//!   mic0-20260101T120000.123Z-2/      (a second crash in the same millisecond)
//!   .mic1-20260101T120100.000Z.partial/   (being written; renamed whole)
//! ```
//!
//! | file | what |
//! |---|---|
//! | `card.log` | the card kernel log, decoded (`[    1.234567] <level> text`) |
//! | `dp.txt`, `smpt.txt` | the debugfs device page and SMPT dumps |
//! | `shutdown_status` | what the card reported ([`NO_STATUS`] if nothing) |
//! | `timeline.txt` | the supervisor's own recent steps |
//! | `console.log` | the console's last output ([`NO_CONSOLE`] without a console backend) |
//! | `errors.txt` | what could not be read (only when something could not) |
//! | `summary.json` | [`Summary`]: card, time, status, files, errors |

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mic_core::abi::MicStatus;
use mic_core::host::sysfs::parse_card_name;
use serde::{Deserialize, Serialize};

use crate::timefmt;

/// Where the bundles are, relative to the root, unless `[crash] dir` in
/// `mpssd.toml` says otherwise.
pub const DEFAULT_DIR: &str = "var/lib/mpssd/crash";

pub const CARD_LOG: &str = "card.log";
pub const DP: &str = "dp.txt";
pub const SMPT: &str = "smpt.txt";
pub const SHUTDOWN_STATUS: &str = "shutdown_status";
pub const TIMELINE: &str = "timeline.txt";
pub const CONSOLE_LOG: &str = "console.log";
pub const ERRORS: &str = "errors.txt";
pub const SUMMARY: &str = "summary.json";

/// Every file a bundle may hold, in the order a reader shows them.
pub const FILES: [&str; 8] = [
    SUMMARY,
    SHUTDOWN_STATUS,
    TIMELINE,
    CARD_LOG,
    CONSOLE_LOG,
    DP,
    SMPT,
    ERRORS,
];

/// `shutdown_status` when the card reported none.
pub const NO_STATUS: &str = "(none reported)";

/// `console.log` when mpssd has no console backend.
pub const NO_CONSOLE: &str = "(no console backend: nothing captured)\n";

/// The name of one bundle directory: `micN-<compact UTC time>`, and `-K`
/// (K ≥ 2) for the K-th bundle of that card in the same millisecond.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BundleName {
    pub card: u32,
    /// Unix time, ms.
    pub at_ms: u64,
    /// 1 for the first bundle of that card and instant.
    pub seq: u32,
}

impl BundleName {
    /// The first name for a crash of `card` at `at`.
    #[must_use]
    pub fn new(card: u32, at: SystemTime) -> Self {
        Self {
            card,
            at_ms: crate::unix_ms(at),
            seq: 1,
        }
    }

    /// The same name with another sequence number.
    #[must_use]
    pub fn with_seq(self, seq: u32) -> Self {
        Self { seq, ..self }
    }

    /// Reads a directory name back; `None` if it is not a bundle's (a
    /// `.partial` one included).
    #[must_use]
    pub fn parse(name: &str) -> Option<Self> {
        let (card, rest) = name.split_once('-')?;
        let card = parse_card_name(card)?;
        let (stamp, seq) = match rest.split_once('-') {
            None => (rest, 1),
            // The same canonical spelling as card numbers: no sign, no
            // leading zeros.
            Some((stamp, seq)) => (stamp, parse_card_name(&format!("mic{seq}")).filter(|&n| n >= 2)?),
        };
        let at_ms = timefmt::parse_compact(stamp)?;
        Some(Self { card, at_ms, seq })
    }

    /// The crash's time.
    #[must_use]
    pub fn at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.at_ms)
    }

    /// Oldest first: by time, then sequence, then card.
    #[must_use]
    pub fn sort_key(&self) -> (u64, u32, u32) {
        (self.at_ms, self.seq, self.card)
    }

    /// The directory a bundle is written in before it is renamed to its
    /// name.
    #[must_use]
    pub fn partial(&self) -> String {
        format!(".{self}.partial")
    }
}

impl fmt::Display for BundleName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "mic{}-{}", self.card, timefmt::compact(self.at()))?;
        if self.seq > 1 {
            write!(f, "-{}", self.seq)?;
        }
        Ok(())
    }
}

/// Whether a directory name is a bundle still being written (or left by an
/// interrupted write).
#[must_use]
pub fn is_partial(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(".partial")
}

/// A bundle's `summary.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// `micN`.
    pub card: String,
    /// RFC 3339, UTC.
    pub time: String,
    /// What the card reported; `null` if nothing.
    #[serde(with = "crate::opt_status")]
    pub shutdown_status: Option<MicStatus>,
    /// The files written, in the order they were.
    pub files: Vec<String>,
    /// What could not be read (`"card.log: ..."`).
    pub errors: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_read_back() {
        let at = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let n = BundleName::new(2, at);
        assert_eq!(n.to_string(), "mic2-20231114T221320.123Z");
        assert_eq!(BundleName::parse(&n.to_string()), Some(n.clone()));
        let n3 = n.clone().with_seq(3);
        assert_eq!(n3.to_string(), "mic2-20231114T221320.123Z-3");
        assert_eq!(BundleName::parse("mic2-20231114T221320.123Z-3"), Some(n3.clone()));
        assert!(n.sort_key() < n3.sort_key());
        assert_eq!(n.partial(), ".mic2-20231114T221320.123Z.partial");
        assert!(is_partial(&n.partial()));
        assert!(!is_partial(&n.to_string()));
        assert_eq!(n.at(), at);
    }

    #[test]
    fn other_names_are_not_bundles() {
        for bad in [
            "",
            "mic",
            "mic2",
            "mic2-",
            "micx-20231114T221320.123Z",
            "mic02-20231114T221320.123Z",
            "mic2-20231114T221320.123Z-1",
            "mic2-20231114T221320.123Z-02",
            "mic2-20231114T221320.123Z-x",
            "mic2-2023-11-14",
            ".mic2-20231114T221320.123Z.partial",
            "lost+found",
        ] {
            assert_eq!(BundleName::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn summary_encoding() {
        let s = Summary {
            card: "mic0".into(),
            time: "2023-11-14T22:13:20.000Z".into(),
            shutdown_status: Some(MicStatus::Crashed),
            files: vec![CARD_LOG.into()],
            errors: vec![],
        };
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["shutdown_status"], "crashed");
        assert_eq!(serde_json::from_value::<Summary>(v).unwrap(), s);
        let none: Summary = serde_json::from_str(
            r#"{"card":"mic0","time":"t","shutdown_status":null,"files":[],"errors":[]}"#,
        )
        .unwrap();
        assert_eq!(none.shutdown_status, None);
    }
}
