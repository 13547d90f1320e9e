//! Fault injection: what can be done to a card from outside (a crash, a
//! hang, a hostile card), how a request names it, and how the emulator
//! applies it. [`crate::control`] carries requests over a socket.

pub mod virtio;

use std::fmt::Write as _;

use mic_core::abi::MicStatus;
use mic_core::host::sysfs::parse_card_id;

use crate::emu::Emulator;
pub use virtio::VirtioFault;

/// Something injected into a card from outside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// The card kernel panics (shutdown_status crashed).
    Panic(String),
    /// The card OS halts itself (`halt` inside the card).
    Halt,
    /// The card OS powers itself off.
    Poweroff,
    /// The card OS reboots itself (shutdown_status restart).
    Reboot,
    /// The next (or current) boot stops making progress.
    HangBoot,
    /// The next reset never brings the bootstrap back (→ reset_failed).
    FailReset,
    /// Random bytes are written over part of the card's log buffer.
    GarbageLog,
    /// The card kernel prints a message (at the given syslog level).
    Log { level: u8, text: String },
    /// A hostile card: writes this byte as its shutdown status and rings
    /// the host's shutdown doorbell.
    BadStatus(u8),
    /// A hostile card breaks the protocol of one of its virtio devices
    /// (rings, device page, handshakes).
    Virtio(VirtioFault),
}

/// Why a fault request could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FaultParseError {
    #[error("missing verb")]
    MissingVerb,
    #[error("{0} takes no arguments")]
    NoArguments(String),
    #[error("bad-status takes one byte (0-255), not {0:?}")]
    BadStatusByte(String),
    #[error("log needs a message")]
    EmptyLog,
    #[error("unknown verb {verb:?}; known: {known}")]
    UnknownVerb { verb: String, known: String },
    #[error("{0:?} is not a virtio device: {dev}", dev = virtio::DEVICE_HELP)]
    Device(String),
    #[error("{0} needs a device: {dev}", dev = virtio::DEVICE_HELP)]
    MissingDevice(String),
    #[error("{0:?} is not a virtqueue (0-3)")]
    BadVq(String),
    #[error("{0:?} is not a doorbell count (1-{max})", max = virtio::STORM_MAX)]
    BadCount(String),
    #[error("too many arguments for {0}")]
    TooManyArguments(String),
}

/// Why a fault could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InjectError {
    #[error("{0:?} is not a card name (mic0, mic1, ... or 0, 1, ...)")]
    BadCardName(String),
    #[error("no card mic{0}")]
    NoCard(u32),
    #[error("mic{card}: no card OS is running (state {state})")]
    NoOs { card: u32, state: &'static str },
    #[error("the card's mic driver is not up")]
    DriverNotUp,
    #[error("device page unreachable: {0}")]
    DevicePage(mic_core::hw::MemError),
    #[error("mic{card}: {why}")]
    Virtio { card: u32, why: String },
}

impl Fault {
    /// Every verb with a one-line description, for `--help` and errors.
    pub const VERBS: &'static [(&'static str, &'static str)] = &[
        (
            "panic [MSG]",
            "card kernel panics: shutdown_status becomes crashed",
        ),
        ("halt", "card OS halts: shutdown_status halted"),
        ("poweroff", "card OS powers off: shutdown_status poweroff"),
        ("reboot", "card OS reboots: shutdown_status restart"),
        ("hang", "the current or next boot stops making progress"),
        ("fail-reset", "the next reset never completes: state reset_failed"),
        (
            "garbage-log",
            "random bytes overwrite part of the card log buffer",
        ),
        (
            "log [LEVEL] TEXT",
            "the card kernel prints TEXT (level 0-7, default 6)",
        ),
        (
            "bad-status BYTE",
            "a hostile card writes BYTE (0-255) as its shutdown status and rings the host",
        ),
        // A hostile card's virtio devices (faults::virtio).
        (
            "vring-loop DEV [VQ]",
            "the next chain the host fetches on DEV's virtqueue VQ (default 0) is a descriptor loop",
        ),
        (
            "vring-outside DEV [VQ]",
            "the next chain the host fetches has a buffer outside card memory (host memory)",
        ),
        (
            "vring-huge DEV [VQ]",
            "the next chain the host fetches is two 2 GiB buffers: over 4 GiB",
        ),
        (
            "vring-jump DEV [VQ]",
            "DEV's avail.idx on VQ jumps 32768 entries ahead of the host",
        ),
        (
            "vring-double DEV [VQ]",
            "the newest chain waiting for the host on VQ is made available twice",
        ),
        (
            "doorbell-storm DEV [N]",
            "the card rings DEV's host doorbell N times (default 100000, at most 1000000)",
        ),
        (
            "vqconfig-change DEV",
            "the card rewrites DEV's vqconfigs (size, ring and used-ring addresses) after activation",
        ),
        (
            "used-outside DEV",
            "the card resets DEV and probes it again with virtqueue 0's used ring outside card memory",
        ),
        (
            "config-no-ack DEV",
            "the card never acknowledges DEV's config changes or removal",
        ),
        (
            "garbage-dp [DEV]",
            "random bytes over DEV's descriptor and control block (without DEV: the whole device page)",
        ),
    ];

    /// The verbs and what they do, one per line, for `micemu inject --help`.
    #[must_use]
    pub fn verbs_help() -> String {
        let width = Self::VERBS.iter().map(|(v, _)| v.len()).max().unwrap_or(0);
        let mut out = String::from("Verbs:\n");
        for (verb, what) in Self::VERBS {
            let _ = writeln!(out, "  {verb:width$}  {what}");
        }
        let _ = writeln!(out, "\n{}; VQ a virtqueue (0-3).", virtio::DEVICE_HELP);
        out
    }

    /// Parses the words after the card name.
    pub fn parse(words: &[&str]) -> Result<Fault, FaultParseError> {
        let (verb, rest) = words.split_first().ok_or(FaultParseError::MissingVerb)?;
        let text = rest.join(" ");
        let no_args = |f: Fault| {
            if rest.is_empty() {
                Ok(f)
            } else {
                Err(FaultParseError::NoArguments((*verb).to_owned()))
            }
        };
        match *verb {
            "panic" => Ok(Fault::Panic(if text.is_empty() {
                "Fatal exception (injected by micemu)".to_owned()
            } else {
                text
            })),
            "halt" => no_args(Fault::Halt),
            "poweroff" => no_args(Fault::Poweroff),
            "reboot" => no_args(Fault::Reboot),
            "hang" => no_args(Fault::HangBoot),
            "fail-reset" => no_args(Fault::FailReset),
            "garbage-log" => no_args(Fault::GarbageLog),
            "bad-status" => match rest {
                [v] => v
                    .parse::<u8>()
                    .map(Fault::BadStatus)
                    .map_err(|_| FaultParseError::BadStatusByte((*v).to_owned())),
                _ => Err(FaultParseError::BadStatusByte(text)),
            },
            "log" => {
                let (level, words) = match rest.first().and_then(|w| w.parse::<u8>().ok()) {
                    Some(l) if l <= 7 && rest.len() > 1 => (l, &rest[1..]),
                    _ => (6, rest),
                };
                if words.is_empty() {
                    return Err(FaultParseError::EmptyLog);
                }
                Ok(Fault::Log {
                    level,
                    text: words.join(" "),
                })
            }
            other => match virtio::parse(other, rest) {
                Some(f) => f.map(Fault::Virtio),
                None => Err(FaultParseError::UnknownVerb {
                    verb: other.to_owned(),
                    known: Fault::VERBS
                        .iter()
                        .map(|(v, _)| v.split(' ').next().unwrap_or(v))
                        .collect::<Vec<_>>()
                        .join(", "),
                }),
            },
        }
    }
}

impl Emulator {
    /// Applies a fault to card `id`.
    pub fn inject(&self, id: u32, fault: &Fault) -> Result<(), InjectError> {
        let card = self.card(id).ok_or(InjectError::NoCard(id))?;
        let mut st = card.lock();
        let hw = card.card_hw(self.config.memory);
        let need_os = |st: &crate::card::CardState| {
            if st.os.alive() {
                Ok(())
            } else {
                Err(InjectError::NoOs {
                    card: id,
                    state: st.host.state().as_str(),
                })
            }
        };
        match fault {
            Fault::FailReset => st.fail_next_reset = true,
            Fault::HangBoot => st.os.arm_hang(),
            Fault::Panic(msg) => {
                need_os(&st)?;
                st.os.panic(&hw, msg);
            }
            Fault::Halt | Fault::Poweroff | Fault::Reboot => {
                need_os(&st)?;
                let how = match fault {
                    Fault::Halt => MicStatus::Halted,
                    Fault::Poweroff => MicStatus::PowerOff,
                    _ => MicStatus::Restart,
                };
                st.os.shut_down(&hw, how);
            }
            Fault::GarbageLog => {
                need_os(&st)?;
                st.os.garbage_log(&hw);
            }
            Fault::Log { level, text } => {
                need_os(&st)?;
                st.os.printk(&hw, *level, text);
            }
            Fault::BadStatus(v) => {
                need_os(&st)?;
                st.os.report_raw_status(&hw, *v)?;
            }
            Fault::Virtio(f) => {
                need_os(&st)?;
                st.os.hostile(&hw, f)?;
            }
        }
        self.arm_os(id, &mut st);
        Ok(())
    }

    /// Applies a fault to the card named `card` ("mic1" or "1", spelled as
    /// the driver names cards: [`parse_card_id`]).
    pub fn inject_named(&self, card: &str, fault: &Fault) -> Result<(), InjectError> {
        let id = parse_card_id(card).ok_or_else(|| InjectError::BadCardName(card.to_owned()))?;
        self.inject(id, fault)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_verb() {
        assert_eq!(Fault::parse(&["halt"]), Ok(Fault::Halt));
        assert_eq!(
            Fault::parse(&["panic", "oops", "here"]),
            Ok(Fault::Panic("oops here".into()))
        );
        assert_eq!(
            Fault::parse(&["log", "3", "disk", "on", "fire"]),
            Ok(Fault::Log {
                level: 3,
                text: "disk on fire".into()
            })
        );
        assert_eq!(
            Fault::parse(&["log", "hello"]),
            Ok(Fault::Log {
                level: 6,
                text: "hello".into()
            })
        );
        assert_eq!(Fault::parse(&["bad-status", "200"]), Ok(Fault::BadStatus(200)));
        assert!(Fault::parse(&["bad-status", "300"]).is_err());
        assert_eq!(
            Fault::parse(&["halt", "now"]),
            Err(FaultParseError::NoArguments("halt".into()))
        );
        assert_eq!(Fault::parse(&["log"]), Err(FaultParseError::EmptyLog));
        assert_eq!(Fault::parse(&[]), Err(FaultParseError::MissingVerb));
        let err = Fault::parse(&["explode"]).unwrap_err().to_string();
        assert!(err.contains("panic") && err.contains("fail-reset"), "{err}");
    }

    /// One example of every fault, by an exhaustive match: a new variant
    /// does not compile until it is listed here, and then must be in VERBS.
    fn verb_of(f: &Fault) -> &'static str {
        match f {
            Fault::Panic(_) => "panic",
            Fault::Halt => "halt",
            Fault::Poweroff => "poweroff",
            Fault::Reboot => "reboot",
            Fault::HangBoot => "hang",
            Fault::FailReset => "fail-reset",
            Fault::GarbageLog => "garbage-log",
            Fault::Log { .. } => "log",
            Fault::BadStatus(_) => "bad-status",
            Fault::Virtio(v) => v.act.verb(),
        }
    }

    #[test]
    fn every_verb_is_listed_in_help_and_errors() {
        let examples: &[&[&str]] = &[
            &["panic"],
            &["halt"],
            &["poweroff"],
            &["reboot"],
            &["hang"],
            &["fail-reset"],
            &["garbage-log"],
            &["log", "x"],
            &["bad-status", "7"],
            &["vring-loop", "hvc0"],
            &["vring-outside", "virtio1", "1"],
            &["vring-huge", "eth0"],
            &["vring-jump", "vda"],
            &["vring-double", "console", "1"],
            &["doorbell-storm", "net", "10"],
            &["vqconfig-change", "blk"],
            &["used-outside", "hvc1"],
            &["config-no-ack", "virtio0"],
            &["garbage-dp"],
        ];
        let listed: Vec<&str> = Fault::VERBS
            .iter()
            .map(|(v, _)| v.split(' ').next().unwrap())
            .collect();
        let unknown = Fault::parse(&["explode"]).unwrap_err().to_string();
        let help = Fault::verbs_help();
        for words in examples {
            let fault = Fault::parse(words).unwrap();
            let verb = verb_of(&fault);
            assert_eq!(verb, words[0]);
            assert!(listed.contains(&verb), "{verb} missing from VERBS");
            assert!(unknown.contains(verb), "{verb} missing from {unknown:?}");
            assert!(help.contains(verb), "{verb} missing from {help:?}");
        }
        assert_eq!(listed.len(), examples.len());
    }

    #[test]
    fn card_names_are_spelled_as_the_driver_spells_them() {
        let emu = crate::emu::Emulator::start(
            crate::Config {
                cards: 2,
                memory: 1 << 30,
                timing: crate::Timing::FAST,
                ..crate::Config::default()
            },
            crate::firmware::FirmwareDir::new(std::path::Path::new("/nonexistent")),
            std::sync::Arc::new(crate::fs::PollHub::new()),
        )
        .unwrap();
        for good in ["mic1", "1", "mic0", "0"] {
            assert_eq!(emu.emu.inject_named(good, &Fault::FailReset), Ok(()), "{good}");
        }
        for bad in ["mic+1", "mic01", "+1", "01", "mic", "", "mic1 ", "MIC1"] {
            assert_eq!(
                emu.emu.inject_named(bad, &Fault::FailReset),
                Err(InjectError::BadCardName(bad.to_owned())),
                "{bad}"
            );
        }
        assert_eq!(
            emu.emu.inject_named("mic2", &Fault::FailReset),
            Err(InjectError::NoCard(2))
        );
    }
}
