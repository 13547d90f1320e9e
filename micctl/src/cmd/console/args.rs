//! `micctl console`'s command line: its options, and the two small
//! languages they take (the escape key, the replay amount).

use std::fmt;
use std::time::Duration;

use clap::{Args, ValueHint};

use crate::cli::parse_duration;

pub(crate) const AFTER_HELP: &str = "\
On a terminal, the console is attached in raw mode: every key goes to the card (ctrl-C too) except
the escape key, which detaches (ctrl-] unless --escape says otherwise); the terminal is restored
however micctl ends. The window size is passed to the card, and again when it changes.

One client at a time types: if another holds the console read-write, micctl attaches read-only
and says who; --force takes the console from it (its session ends, saying who took it).

With stdin not a terminal, what it holds is typed into the card, then micctl waits for the answer:
it ends when --until TEXT appears in the card's output (exit 0), when the card has printed nothing
for --idle after the input was typed (exit 0), or at --timeout (exit 6). The card echoes what is
typed, so pick an --until TEXT the answer has and the command does not.

micctl console also ends when the card goes down (exit 12: it crashed, shut down or was reset;
with --follow only when mpssd leaves it down), when mpssd removes its console (exit 13), when
another client takes the console with --force (exit 14) and when mpssd stops (exit 10). A console
that goes down while the card stays up is waited for.

--replay takes lines (20), bytes (512B, 4K, 4KiB, 1M) or all.";

/// `micctl console CARD`.
#[derive(Debug, Clone, Args)]
pub struct ConsoleArgs {
    /// The card: mic0 or 0
    #[arg(value_name = "CARD", value_hint = ValueHint::Other)]
    pub card: String,
    /// Read-only: see the console, never type into it
    #[arg(long = "ro", visible_alias = "read-only")]
    pub read_only: bool,
    /// Take the console read-write even if another client holds it (that client is told and
    /// detached)
    #[arg(short, long, conflicts_with = "read_only")]
    pub force: bool,
    /// Show this much of the console's past output first: lines (20), bytes (512B, 4K, 1MiB) or
    /// all [default: none]
    #[arg(
        short,
        long,
        value_name = "AMOUNT",
        value_parser = Replay::parse,
        default_value = "0",
        hide_default_value = true
    )]
    pub replay: Replay,
    /// The key that detaches: ^X or ctrl-X for a control key (^] is ctrl-]), or none
    #[arg(short, long, value_name = "KEY", value_parser = Escape::parse, default_value = "^]")]
    pub escape: Escape,
    /// End (exit 0) once the card's output contains TEXT
    #[arg(short, long, value_name = "TEXT")]
    pub until: Option<String>,
    /// Give up after this long (exit 6): the attach itself, and --until or the answer to a script
    #[arg(short, long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Stay attached through the card's reboots and crashes (the card going down ends the session
    /// only if mpssd leaves it down)
    #[arg(long)]
    pub follow: bool,
    /// With stdin not a terminal: end (exit 0) once the card has printed nothing for this long after
    /// the input was typed; 0 never ends that way
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "1s")]
    pub idle: Duration,
}

/// How much scrollback to show on attach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    /// The last N lines (the line being written counts as one).
    Lines(u64),
    /// The last N bytes.
    Bytes(u64),
    /// Everything mpssd keeps.
    All,
}

impl Replay {
    /// `20` (lines), `512B`, `4K`/`4KiB`/`4KB`, `1M`/`1MiB`, `all`.
    pub fn parse(s: &str) -> Result<Self, String> {
        const USE: &str = "use lines (20), bytes (512B, 4K, 1MiB) or all";
        let t = s.trim();
        if t.eq_ignore_ascii_case("all") {
            return Ok(Replay::All);
        }
        let bad = || format!("{} is not a replay amount ({USE})", libmic::attrs::quote_value(s));
        let end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (n, unit) = t.split_at(end);
        let n: u64 = n.parse().map_err(|_| bad())?;
        let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" => return Ok(Replay::Lines(n)),
            "b" => 1,
            "k" | "kb" | "kib" => 1 << 10,
            "m" | "mb" | "mib" => 1 << 20,
            _ => return Err(bad()),
        };
        n.checked_mul(scale).map(Replay::Bytes).ok_or_else(bad)
    }

    /// What to ask mpssd for (`None`: all it keeps).
    #[must_use]
    pub fn request(self) -> Option<libmic::mpssd::Replay> {
        match self {
            Replay::Bytes(n) => Some(libmic::mpssd::Replay::Bytes(n)),
            Replay::Lines(n) => Some(libmic::mpssd::Replay::Lines(n)),
            Replay::All => None,
        }
    }
}

/// The detach key: one control byte, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Escape(pub Option<u8>);

impl Escape {
    /// `^]`, `ctrl-]`, `ctrl+]`, `^a`, `none`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("none") {
            return Ok(Escape(None));
        }
        let lower = t.to_ascii_lowercase();
        let key = t
            .strip_prefix('^')
            .or_else(|| lower.strip_prefix("ctrl-").map(|_| &t[5..]))
            .or_else(|| lower.strip_prefix("ctrl+").map(|_| &t[5..]));
        let byte = match key.map(str::as_bytes) {
            Some(&[c]) => match c.to_ascii_uppercase() {
                c @ b'@'..=b'_' => Some(c - b'@'),
                b'?' => Some(0x7f),
                _ => None,
            },
            _ => None,
        };
        match byte {
            // ctrl-@ is NUL, which terminals send for ctrl-space too.
            Some(b) if b != 0 => Ok(Escape(Some(b))),
            _ => Err(format!(
                "{} is not an escape key (use ^X or ctrl-X for a control key, e.g. ^] or ctrl-t, or none)",
                libmic::attrs::quote_value(s)
            )),
        }
    }
}

impl fmt::Display for Escape {
    /// `^]`, or `none`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => f.write_str("none"),
            Some(0x7f) => f.write_str("^?"),
            Some(b) => write!(f, "^{}", char::from(b + b'@')),
        }
    }
}

impl Escape {
    /// `ctrl-]` (how the attach line names the key).
    #[must_use]
    pub fn spoken(self) -> Option<String> {
        self.0.map(|b| match b {
            0x7f => "ctrl-?".to_owned(),
            b => format!("ctrl-{}", char::from(b + b'@').to_ascii_lowercase()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_amounts() {
        use libmic::mpssd::Replay as Asked;
        assert_eq!(Replay::parse("20"), Ok(Replay::Lines(20)));
        assert_eq!(Replay::parse("0"), Ok(Replay::Lines(0)));
        assert_eq!(Replay::parse("512B"), Ok(Replay::Bytes(512)));
        assert_eq!(Replay::parse("4k"), Ok(Replay::Bytes(4096)));
        assert_eq!(Replay::parse("4KiB"), Ok(Replay::Bytes(4096)));
        assert_eq!(Replay::parse("1M"), Ok(Replay::Bytes(1 << 20)));
        assert_eq!(Replay::parse("ALL"), Ok(Replay::All));
        for bad in ["", "x", "-1", "4q", "1.5K", "99999999999999999999M"] {
            let e = Replay::parse(bad).unwrap_err();
            assert!(e.contains("is not a replay amount"), "{bad}: {e}");
        }
        assert_eq!(Replay::Lines(3).request(), Some(Asked::Lines(3)));
        assert_eq!(Replay::Bytes(9).request(), Some(Asked::Bytes(9)));
        assert_eq!(Replay::All.request(), None);
    }

    #[test]
    fn escape_keys() {
        assert_eq!(Escape::parse("^]"), Ok(Escape(Some(0x1d))));
        assert_eq!(Escape::parse("ctrl-]"), Ok(Escape(Some(0x1d))));
        assert_eq!(Escape::parse("Ctrl+T"), Ok(Escape(Some(0x14))));
        assert_eq!(Escape::parse("^a"), Ok(Escape(Some(0x01))));
        assert_eq!(Escape::parse("^?"), Ok(Escape(Some(0x7f))));
        assert_eq!(Escape::parse("none"), Ok(Escape(None)));
        for bad in ["", "]", "^", "^@", "^ab", "ctrl-", "alt-x", "^1"] {
            assert!(Escape::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Escape(Some(0x1d)).to_string(), "^]");
        assert_eq!(Escape(Some(0x14)).to_string(), "^T");
        assert_eq!(Escape(None).to_string(), "none");
        assert_eq!(Escape(Some(0x1d)).spoken().as_deref(), Some("ctrl-]"));
        assert_eq!(Escape(Some(0x14)).spoken().as_deref(), Some("ctrl-t"));
        for b in (1..0x20).chain([0x7f]) {
            let e = Escape(Some(b));
            assert_eq!(Escape::parse(&e.to_string()), Ok(e), "round trip of {b:#x}");
        }
    }
}
