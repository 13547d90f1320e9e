//! Command line of `micemu`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{self, Config, PciId, Timing};
use crate::faults::Fault;

/// Emulate Intel MIC X100 coprocessor cards behind a real sysfs and debugfs.
///
/// Serves DIR/sys/class/mic/micN and DIR/sys/kernel/debug/mic_host/micN over
/// FUSE, creates default card OS images under DIR/lib/firmware/mic, and
/// listens for fault injection on DIR/run/micemu.sock. Runs in the
/// foreground until SIGINT or SIGTERM, then unmounts.
#[derive(Debug, Parser)]
#[command(name = "micemu", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Inject a fault into, or act inside, a running emulated card.
    ///
    /// Talks to DIR/run/micemu.sock, which only the user running micemu
    /// (normally root) may use.
    #[command(after_help = Fault::verbs_help())]
    Inject {
        /// Root directory of the running micemu.
        #[arg(long, env = "MIC_ROOT", default_value = "/")]
        root: PathBuf,
        /// Card name (mic0) or number (0), spelled as the driver names cards.
        card: String,
        /// The verb and its arguments.
        #[arg(required = true, num_args = 1.., trailing_var_arg = true)]
        fault: Vec<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TimingPreset {
    /// Close to real cards: resets take seconds, boots several seconds.
    Realistic,
    /// The same sequences a hundred times quicker (tests, demos).
    Fast,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Root directory to serve (sys/, lib/firmware/, run/ are created in it).
    #[arg(long, env = "MIC_ROOT")]
    pub root: Option<PathBuf>,
    /// Number of cards (1-256).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub cards: u32,
    /// GDDR per card (K, M, G suffixes; at least 256M).
    #[arg(long, default_value = "8G", value_parser = parse_memory)]
    pub memory: u64,
    /// Timing preset.
    #[arg(long, value_enum, default_value_t = TimingPreset::Realistic)]
    pub timing: TimingPreset,
    /// Override the reset duration in milliseconds.
    #[arg(long, value_name = "MS")]
    pub reset_ms: Option<u64>,
    /// Override the boot duration (bootstrap to init) in milliseconds.
    #[arg(long, value_name = "MS")]
    pub boot_ms: Option<u64>,
    /// Override the virtio handshakes' budget (used rings, config change,
    /// removal, device reset) in milliseconds.
    #[arg(long, value_name = "MS")]
    pub ack_ms: Option<u64>,
    /// PCI device IDs handed out in turn (hex), e.g. 2250,225d.
    #[arg(long, value_delimiter = ',', value_parser = parse_device_id)]
    pub device_id: Vec<u16>,
    /// Steppings handed out in turn: A0, B0, B1, C0 or a hex revision.
    #[arg(long, value_delimiter = ',', value_parser = config::parse_revision)]
    pub stepping: Vec<u8>,
    /// Size of the card kernel log buffer (power of two, 4K-16M).
    #[arg(long, default_value = "128K", value_parser = parse_log_len)]
    pub log_buf_len: u32,
    /// Unmount a dead FUSE mount a killed micemu left at DIR/sys (only one
    /// the kernel proves dead: Transport endpoint is not connected).
    #[arg(long)]
    pub force: bool,
    /// micemu's own log lines on stderr (what the host driver would log):
    /// off, error, warn, info, debug or trace.
    #[arg(long, default_value = "warn", value_name = "LEVEL", value_parser = log_level())]
    pub log_level: log::LevelFilter,
}

fn log_level() -> impl clap::builder::TypedValueParser<Value = log::LevelFilter> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(["off", "error", "warn", "info", "debug", "trace"])
        .map(|s| s.parse().unwrap_or(log::LevelFilter::Warn))
}

fn parse_device_id(s: &str) -> Result<u16, String> {
    u16::from_str_radix(s.trim_start_matches("0x"), 16)
        .map_err(|_| format!("{s:?} is not a hex PCI device ID (e.g. 2250)"))
}

fn parse_memory(s: &str) -> Result<u64, String> {
    let n = config::parse_size(s)?;
    let probe = Config {
        memory: n,
        ..Config::default()
    };
    probe.validate().map_err(|e| e.to_string())?;
    Ok(n)
}

fn parse_log_len(s: &str) -> Result<u32, String> {
    let n = config::parse_size(s)?;
    if !n.is_power_of_two() || !(4096..=config::LOG_BUF_MAX).contains(&n) {
        return Err(format!("{s:?}: log buffer must be a power of two from 4K to 16M"));
    }
    Ok(n as u32)
}

impl RunArgs {
    /// How to start, beyond the fleet.
    #[must_use]
    pub fn start_options(&self) -> crate::StartOptions {
        crate::StartOptions { force: self.force }
    }

    /// The fleet these flags describe.
    #[must_use]
    pub fn config(&self) -> Config {
        let mut timing = match self.timing {
            TimingPreset::Realistic => Timing::REALISTIC,
            TimingPreset::Fast => Timing::FAST,
        };
        if let Some(ms) = self.reset_ms {
            timing.reset = Duration::from_millis(ms);
        }
        if let Some(ms) = self.boot_ms {
            timing.boot = Duration::from_millis(ms);
        }
        if let Some(ms) = self.ack_ms {
            timing.ack_budget = Duration::from_millis(ms);
        }
        let n = self.device_id.len().max(self.stepping.len());
        let pci = if n == 0 {
            PciId::DEFAULT_FLEET.to_vec()
        } else {
            (0..n)
                .map(|i| {
                    let base = PciId::DEFAULT_FLEET[i % PciId::DEFAULT_FLEET.len()];
                    PciId {
                        device: cycle(&self.device_id, i).unwrap_or(base.device),
                        revision: cycle(&self.stepping, i).unwrap_or(base.revision),
                    }
                })
                .collect()
        };
        Config {
            cards: self.cards,
            memory: self.memory,
            timing,
            pci,
            log_buf_len: self.log_buf_len,
        }
    }
}

fn cycle<T: Copy>(v: &[T], i: usize) -> Option<T> {
    (!v.is_empty()).then(|| v[i % v.len()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn inject_help_lists_every_verb() {
        use clap::CommandFactory;
        let mut cmd = Cli::command();
        let help = cmd
            .find_subcommand_mut("inject")
            .unwrap()
            .render_help()
            .to_string();
        for (verb, _) in Fault::VERBS {
            assert!(help.contains(verb), "{verb} missing from\n{help}");
        }
        assert!(help.contains("bad-status BYTE"), "{help}");
    }

    #[test]
    fn fleet_flags() {
        let cli = Cli::try_parse_from([
            "micemu",
            "--root",
            "/r",
            "--cards",
            "3",
            "--device-id",
            "2250,2260",
            "--stepping",
            "B0",
            "--timing",
            "fast",
            "--boot-ms",
            "100",
            "--ack-ms",
            "700",
            "--log-level",
            "info",
        ])
        .unwrap();
        let cfg = cli.run.config();
        assert_eq!(cfg.cards, 3);
        assert_eq!(
            cfg.pci_of(0),
            PciId {
                device: 0x2250,
                revision: 0x10
            }
        );
        assert_eq!(cfg.pci_of(1).device, 0x2260);
        assert_eq!(cfg.timing.boot, Duration::from_millis(100));
        assert_eq!(cfg.timing.reset, Timing::FAST.reset);
        assert_eq!(cfg.timing.ack_budget, Duration::from_millis(700));
        assert_eq!(cli.run.log_level, log::LevelFilter::Info);
    }

    #[test]
    fn bad_flags_are_refused() {
        for args in [
            &["micemu", "--cards", "0"][..],
            &["micemu", "--cards", "257"],
            &["micemu", "--log-buf-len", "3000"],
            &["micemu", "--device-id", "zz"],
            &["micemu", "--memory", "lots"],
            &["micemu", "--memory", "128M"],
            &["micemu", "--memory", "0"],
            &["micemu", "--log-level", "loud"],
        ] {
            assert!(Cli::try_parse_from(args).is_err(), "{args:?}");
        }
        let err = Cli::try_parse_from(["micemu", "--memory", "16M"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("16M of GDDR per card is too little"), "{err}");
        assert!(Cli::try_parse_from(["micemu", "--memory", "256M"]).is_ok());
    }
}
