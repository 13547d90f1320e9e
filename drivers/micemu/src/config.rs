//! What an emulated fleet looks like: card count, memory, PCI identities,
//! timings.

use std::time::Duration;

use mic_core::handshake::AckTiming;
use mic_core::host::ResetTiming;

use crate::events::duration_ms;

/// How long the hardware and the emulated kernels take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// From RGCR to the bootstrap reporting ready in SPAD2.
    pub reset: Duration,
    /// The host driver's settle time after setting RGCR (1 s originally).
    pub reset_settle: Duration,
    /// The host driver's SPAD2 poll period (1 s originally).
    pub reset_poll: Duration,
    /// The host driver's reset budget (45 s originally).
    pub reset_budget: Duration,
    /// From the bootstrap interrupt to the card OS running init.
    pub boot: Duration,
    /// The virtio handshakes' poll period (100 ms originally), both sides.
    pub ack_poll: Duration,
    /// The virtio handshakes' budget (10 s originally).
    pub ack_budget: Duration,
}

impl Timing {
    /// The virtio handshake timing in the driver core's terms.
    #[must_use]
    pub fn ack(&self) -> AckTiming {
        AckTiming {
            period_ms: duration_ms(self.ack_poll),
            budget_ms: duration_ms(self.ack_budget),
        }
    }

    /// The host driver's reset timing in the driver core's terms.
    #[must_use]
    pub fn reset_timing(&self) -> ResetTiming {
        ResetTiming {
            settle_ms: duration_ms(self.reset_settle),
            period_ms: duration_ms(self.reset_poll),
            budget_ms: duration_ms(self.reset_budget),
        }
    }
}

impl Timing {
    /// Close to the real cards; the host driver's waits are the driver
    /// core's originals ([`ResetTiming::ORIGINAL`], [`AckTiming::ORIGINAL`]).
    pub const REALISTIC: Timing = Timing {
        reset: Duration::from_millis(2500),
        reset_settle: Duration::from_millis(ResetTiming::ORIGINAL.settle_ms),
        reset_poll: Duration::from_millis(ResetTiming::ORIGINAL.period_ms),
        reset_budget: Duration::from_millis(ResetTiming::ORIGINAL.budget_ms),
        boot: Duration::from_secs(6),
        ack_poll: Duration::from_millis(AckTiming::ORIGINAL.period_ms),
        ack_budget: Duration::from_millis(AckTiming::ORIGINAL.budget_ms),
    };

    /// For tests and demos: the same sequence, a hundred times quicker.
    pub const FAST: Timing = Timing {
        reset: Duration::from_millis(30),
        reset_settle: Duration::from_millis(ResetTiming::ORIGINAL.settle_ms / FAST_BY),
        reset_poll: Duration::from_millis(ResetTiming::ORIGINAL.period_ms / FAST_BY),
        reset_budget: Duration::from_millis(ResetTiming::ORIGINAL.budget_ms / FAST_BY),
        boot: Duration::from_millis(250),
        ack_poll: Duration::from_millis(AckTiming::ORIGINAL.period_ms / FAST_BY),
        ack_budget: Duration::from_millis(AckTiming::ORIGINAL.budget_ms / FAST_BY),
    };
}

/// How much quicker [`Timing::FAST`] runs the host driver's waits.
const FAST_BY: u64 = 100;

/// PCI identity of one card.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PciId {
    pub device: u16,
    pub revision: u8,
}

impl PciId {
    /// A realistic fleet: several X100 SKUs at C0, B1 and B0 stepping.
    pub const DEFAULT_FLEET: [PciId; 4] = [
        PciId {
            device: 0x2250,
            revision: 0x20,
        },
        PciId {
            device: 0x225d,
            revision: 0x20,
        },
        PciId {
            device: 0x2251,
            revision: 0x11,
        },
        PciId {
            device: 0x225c,
            revision: 0x10,
        },
    ];
}

/// The whole emulated fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub cards: u32,
    /// GDDR size per card in bytes.
    pub memory: u64,
    pub timing: Timing,
    /// Identities handed out to cards in turn.
    pub pci: Vec<PciId>,
    /// Size of the card kernel's log buffer (`log_buf_len`).
    pub log_buf_len: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            cards: 4,
            memory: 8 << 30,
            timing: Timing::REALISTIC,
            pci: PciId::DEFAULT_FLEET.to_vec(),
            log_buf_len: 128 << 10,
        }
    }
}

/// Why a fleet cannot be built as configured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "{} of GDDR per card is too little: the card OS needs at least {} \
         (its virtio buffers at 48 MiB, the kernel at 64 MiB, the ramdisk at 128 MiB)",
        size_name(*.0),
        size_name(MIN_MEMORY)
    )]
    MemoryTooSmall(u64),
    #[error("log buffer of {0} bytes: it must be a power of two from 4K to 16M")]
    LogBufLen(u32),
    #[error("a fleet needs at least one card")]
    NoCards,
}

pub use crate::cardos::memmap::{LOG_BUF_MAX, MIN_MEMORY};

/// `256M`, `8G`, or bytes.
fn size_name(n: u64) -> String {
    match n {
        n if n >= 1 << 30 && n % (1 << 30) == 0 => format!("{}G", n >> 30),
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{}M", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{}K", n >> 10),
        n => format!("{n} bytes"),
    }
}

impl Config {
    /// Checks what the emulated hardware and the card OS need.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.cards == 0 {
            return Err(ConfigError::NoCards);
        }
        if self.memory < MIN_MEMORY {
            return Err(ConfigError::MemoryTooSmall(self.memory));
        }
        let len = u64::from(self.log_buf_len);
        if !len.is_power_of_two() || !(4096..=LOG_BUF_MAX).contains(&len) {
            return Err(ConfigError::LogBufLen(self.log_buf_len));
        }
        Ok(())
    }

    #[must_use]
    pub fn pci_of(&self, card: u32) -> PciId {
        self.pci[card as usize % self.pci.len()]
    }
}

/// Parses "8G", "512M", "128K" or a plain byte count.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, shift) = match s.char_indices().last() {
        Some((i, 'K' | 'k')) => (&s[..i], 10),
        Some((i, 'M' | 'm')) => (&s[..i], 20),
        Some((i, 'G' | 'g')) => (&s[..i], 30),
        _ => (s, 0),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (examples: 8G, 512M, 131072)"))?;
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// Parses a stepping name or a raw revision ("C0", "0x20").
pub fn parse_revision(s: &str) -> Result<u8, String> {
    match s {
        "A0" => Ok(0x00),
        "B0" => Ok(0x10),
        "B1" => Ok(0x11),
        "C0" => Ok(0x20),
        _ => u8::from_str_radix(s.trim_start_matches("0x"), 16)
            .map_err(|_| format!("{s:?} is not a stepping (A0, B0, B1, C0) or a hex revision")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("8G"), Ok(8 << 30));
        assert_eq!(parse_size("128K"), Ok(128 << 10));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("99999999999999G").is_err());
    }

    #[test]
    fn validation() {
        let ok = Config::default();
        assert_eq!(ok.validate(), Ok(()));
        let small = Config {
            memory: 64 << 20,
            ..Config::default()
        };
        let e = small.validate().unwrap_err();
        assert_eq!(e, ConfigError::MemoryTooSmall(64 << 20));
        assert!(
            e.to_string().starts_with("64M of GDDR per card is too little"),
            "{e}"
        );
        assert!(e.to_string().contains("at least 256M"), "{e}");
        let log = Config {
            log_buf_len: 3000,
            ..Config::default()
        };
        assert_eq!(log.validate(), Err(ConfigError::LogBufLen(3000)));
        assert_eq!(size_name(1536), "1536 bytes");
    }

    #[test]
    fn timings_are_the_driver_cores() {
        assert_eq!(Timing::REALISTIC.reset_timing(), ResetTiming::ORIGINAL);
        assert_eq!(Timing::REALISTIC.ack(), AckTiming::ORIGINAL);
        // The original's figures, as the driver core states them.
        assert_eq!(Timing::REALISTIC.reset_settle, Duration::from_secs(1));
        assert_eq!(Timing::REALISTIC.reset_poll, Duration::from_secs(1));
        assert_eq!(Timing::REALISTIC.reset_budget, Duration::from_secs(45));
        // Fast is the same sequence, a hundred times quicker: as many polls.
        let fast = Timing::FAST.reset_timing();
        assert_eq!(fast.max_checks(), ResetTiming::ORIGINAL.max_checks());
        assert_eq!(fast.settle_ms * FAST_BY, ResetTiming::ORIGINAL.settle_ms);
        assert_eq!(
            Timing::FAST.ack().budget_ms * FAST_BY,
            AckTiming::ORIGINAL.budget_ms
        );
        // The card's reset outlasts the driver's settle time, and ends
        // within its budget, in both.
        for t in [Timing::REALISTIC, Timing::FAST] {
            assert!(t.reset > t.reset_settle && t.reset < t.reset_settle + t.reset_budget);
        }
    }

    #[test]
    fn revisions() {
        assert_eq!(parse_revision("B0"), Ok(0x10));
        assert_eq!(parse_revision("0x42"), Ok(0x42));
        assert!(parse_revision("Z9").is_err());
    }
}
