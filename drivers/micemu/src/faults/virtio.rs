//! A hostile card's acts on its own virtio devices: what `micemu inject
//! micN VERB DEV [ARG]` names, parsed. The card OS model applies them
//! (`cardos::virtio::hostile`), since it owns the card's side of the rings
//! and of the device page; the host driver's answer to each is its defined
//! outcome (README, "Hostile card").

use std::fmt;

use mic_core::abi::MIC_MAX_VRINGS;
use mic_core::abi::virtio::id;

use super::FaultParseError;

/// Doorbells a storm rings unless told otherwise.
pub const STORM_DEFAULT: u32 = 100_000;
/// The most doorbells one storm may ring.
pub const STORM_MAX: u32 = 1_000_000;

/// Which of the card's virtio devices an act is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceSel {
    /// `virtioN`: the card's device index.
    Index(u32),
    /// A driver's name for it: `hvc0`, `eth0`, `vda`.
    Name(String),
    /// `console`, `net` or `blk`: the first device of that type.
    Type(i8),
}

impl DeviceSel {
    /// Parses `virtioN`, `hvcN`, `ethN`, `vdX`, `console`, `net` or `blk`.
    pub fn parse(s: &str) -> Result<Self, FaultParseError> {
        let bad = || FaultParseError::Device(s.to_owned());
        let digits = |t: &str| !t.is_empty() && t.len() <= 9 && t.bytes().all(|b| b.is_ascii_digit());
        match s {
            "console" => return Ok(DeviceSel::Type(id::CONSOLE)),
            "net" => return Ok(DeviceSel::Type(id::NET)),
            "blk" => return Ok(DeviceSel::Type(id::BLOCK)),
            _ => {}
        }
        if let Some(n) = s.strip_prefix("virtio") {
            return if digits(n) {
                n.parse().map(DeviceSel::Index).map_err(|_| bad())
            } else {
                Err(bad())
            };
        }
        let named = match (s.strip_prefix("hvc"), s.strip_prefix("eth"), s.strip_prefix("vd")) {
            (Some(n), _, _) | (_, Some(n), _) => digits(n),
            (_, _, Some(x)) => !x.is_empty() && x.len() <= 4 && x.bytes().all(|b| b.is_ascii_lowercase()),
            _ => false,
        };
        if named {
            Ok(DeviceSel::Name(s.to_owned()))
        } else {
            Err(bad())
        }
    }
}

impl fmt::Display for DeviceSel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSel::Index(i) => write!(f, "virtio{i}"),
            DeviceSel::Name(n) => f.write_str(n),
            DeviceSel::Type(t) => f.write_str(match *t {
                id::CONSOLE => "console",
                id::NET => "net",
                _ => "blk",
            }),
        }
    }
}

/// What the card does to the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    /// The next chain the host fetches on virtqueue `vq` loops (A → B → A).
    Loop { vq: u8 },
    /// ... points at host memory (its own descriptor table, through the
    /// SMPT window): a buffer outside card memory.
    Outside { vq: u8 },
    /// ... is two 2 GiB buffers: its length does not fit in 32 bits.
    Huge { vq: u8 },
    /// `avail.idx` jumps 32768 entries ahead of the host.
    Jump { vq: u8 },
    /// The newest chain waiting for the host is made available twice.
    Double { vq: u8 },
    /// The device's host doorbell rung `count` times in a row.
    DoorbellStorm { count: u32 },
    /// Every vqconfig rewritten (size, ring and used-ring addresses).
    VqconfigChange,
    /// The device is reset and probed again with virtqueue 0's used ring
    /// outside card memory.
    UsedOutside,
    /// Config changes (and removal requests) are never acknowledged.
    ConfigNoAck,
    /// Random bytes over the device's block, or the whole page.
    GarbageDp,
}

impl Act {
    /// The verb that names it.
    #[must_use]
    pub fn verb(self) -> &'static str {
        match self {
            Act::Loop { .. } => "vring-loop",
            Act::Outside { .. } => "vring-outside",
            Act::Huge { .. } => "vring-huge",
            Act::Jump { .. } => "vring-jump",
            Act::Double { .. } => "vring-double",
            Act::DoorbellStorm { .. } => "doorbell-storm",
            Act::VqconfigChange => "vqconfig-change",
            Act::UsedOutside => "used-outside",
            Act::ConfigNoAck => "config-no-ack",
            Act::GarbageDp => "garbage-dp",
        }
    }
}

/// A hostile act on one device (or, for [`Act::GarbageDp`] without one,
/// on the whole device page).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtioFault {
    pub device: Option<DeviceSel>,
    pub act: Act,
}

/// The words a device argument may take, for help and errors.
pub const DEVICE_HELP: &str =
    "DEV is virtioN, hvcN, ethN, vdX, or console, net, blk (the first of that type)";

/// Parses one of this module's verbs; `None` if `verb` is not one.
#[must_use]
pub fn parse(verb: &str, rest: &[&str]) -> Option<Result<VirtioFault, FaultParseError>> {
    let ring = |mk: fn(u8) -> Act| parse_ring(verb, rest, mk);
    Some(match verb {
        "vring-loop" => ring(|vq| Act::Loop { vq }),
        "vring-outside" => ring(|vq| Act::Outside { vq }),
        "vring-huge" => ring(|vq| Act::Huge { vq }),
        "vring-jump" => ring(|vq| Act::Jump { vq }),
        "vring-double" => ring(|vq| Act::Double { vq }),
        "doorbell-storm" => parse_storm(verb, rest),
        "vqconfig-change" => device_only(verb, rest, Act::VqconfigChange),
        "used-outside" => device_only(verb, rest, Act::UsedOutside),
        "config-no-ack" => device_only(verb, rest, Act::ConfigNoAck),
        "garbage-dp" => match rest {
            [] => Ok(VirtioFault {
                device: None,
                act: Act::GarbageDp,
            }),
            _ => device_only(verb, rest, Act::GarbageDp),
        },
        _ => return None,
    })
}

fn device(verb: &str, rest: &[&str]) -> Result<DeviceSel, FaultParseError> {
    let first = rest
        .first()
        .ok_or_else(|| FaultParseError::MissingDevice(verb.to_owned()))?;
    DeviceSel::parse(first)
}

fn device_only(verb: &str, rest: &[&str], act: Act) -> Result<VirtioFault, FaultParseError> {
    let dev = device(verb, rest)?;
    if rest.len() > 1 {
        return Err(FaultParseError::TooManyArguments(verb.to_owned()));
    }
    Ok(VirtioFault {
        device: Some(dev),
        act,
    })
}

fn parse_ring(verb: &str, rest: &[&str], mk: fn(u8) -> Act) -> Result<VirtioFault, FaultParseError> {
    let dev = device(verb, rest)?;
    let vq = match rest {
        [_] => 0,
        [_, q] => q
            .parse::<u8>()
            .ok()
            .filter(|&q| q < MIC_MAX_VRINGS)
            .ok_or_else(|| FaultParseError::BadVq((*q).to_owned()))?,
        _ => return Err(FaultParseError::TooManyArguments(verb.to_owned())),
    };
    Ok(VirtioFault {
        device: Some(dev),
        act: mk(vq),
    })
}

fn parse_storm(verb: &str, rest: &[&str]) -> Result<VirtioFault, FaultParseError> {
    let dev = device(verb, rest)?;
    let count = match rest {
        [_] => STORM_DEFAULT,
        [_, n] => n
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=STORM_MAX).contains(n))
            .ok_or_else(|| FaultParseError::BadCount((*n).to_owned()))?,
        _ => return Err(FaultParseError::TooManyArguments(verb.to_owned())),
    };
    Ok(VirtioFault {
        device: Some(dev),
        act: Act::DoorbellStorm { count },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(words: &[&str]) -> Result<VirtioFault, FaultParseError> {
        parse(words[0], &words[1..]).unwrap()
    }

    #[test]
    fn devices_by_index_name_or_type() {
        assert_eq!(DeviceSel::parse("virtio2"), Ok(DeviceSel::Index(2)));
        assert_eq!(DeviceSel::parse("console"), Ok(DeviceSel::Type(id::CONSOLE)));
        assert_eq!(DeviceSel::parse("blk"), Ok(DeviceSel::Type(id::BLOCK)));
        for name in ["hvc0", "eth12", "vda", "vdab"] {
            assert_eq!(DeviceSel::parse(name), Ok(DeviceSel::Name(name.to_owned())));
        }
        for bad in [
            "virtio",
            "virtio-1",
            "virtio+1",
            "hvc",
            "ethX",
            "vd",
            "vdA",
            "sda",
            "",
            "virtio99999999999",
        ] {
            assert_eq!(
                DeviceSel::parse(bad),
                Err(FaultParseError::Device(bad.to_owned())),
                "{bad:?}"
            );
        }
        assert_eq!(DeviceSel::Index(3).to_string(), "virtio3");
        assert_eq!(DeviceSel::Type(id::NET).to_string(), "net");
    }

    #[test]
    fn every_verb_with_its_arguments() {
        assert_eq!(
            p(&["vring-loop", "console"]),
            Ok(VirtioFault {
                device: Some(DeviceSel::Type(id::CONSOLE)),
                act: Act::Loop { vq: 0 }
            })
        );
        assert_eq!(
            p(&["vring-double", "hvc1", "1"]).unwrap().act,
            Act::Double { vq: 1 }
        );
        assert_eq!(
            p(&["vring-huge", "virtio0", "3"]).unwrap().act,
            Act::Huge { vq: 3 }
        );
        assert_eq!(
            p(&["vring-jump", "eth0", "4"]),
            Err(FaultParseError::BadVq("4".into()))
        );
        assert_eq!(
            p(&["vring-outside"]),
            Err(FaultParseError::MissingDevice("vring-outside".into()))
        );
        assert_eq!(
            p(&["vring-loop", "hvc0", "0", "1"]),
            Err(FaultParseError::TooManyArguments("vring-loop".into()))
        );
        assert_eq!(
            p(&["doorbell-storm", "vda"]).unwrap().act,
            Act::DoorbellStorm { count: STORM_DEFAULT }
        );
        assert_eq!(
            p(&["doorbell-storm", "vda", "5"]).unwrap().act,
            Act::DoorbellStorm { count: 5 }
        );
        for n in ["0", "1000001", "lots"] {
            assert_eq!(
                p(&["doorbell-storm", "vda", n]),
                Err(FaultParseError::BadCount(n.into()))
            );
        }
        assert_eq!(
            p(&["vqconfig-change", "virtio1"]).unwrap().act,
            Act::VqconfigChange
        );
        assert_eq!(p(&["used-outside", "net"]).unwrap().act, Act::UsedOutside);
        assert_eq!(
            p(&["config-no-ack", "hvc0", "now"]),
            Err(FaultParseError::TooManyArguments("config-no-ack".into()))
        );
        assert_eq!(
            p(&["garbage-dp"]),
            Ok(VirtioFault {
                device: None,
                act: Act::GarbageDp
            })
        );
        assert_eq!(
            p(&["garbage-dp", "hvc0"]).unwrap().device,
            Some(DeviceSel::Name("hvc0".into()))
        );
        assert!(parse("panic", &[]).is_none());
    }
}
