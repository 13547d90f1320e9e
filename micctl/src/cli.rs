//! The whole command line, as one clap `Parser` (derive). The xtask that
//! generates man pages and shell completions builds on [`Cli`].

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum, ValueHint};
use libmic::{BootMode, MicState};

const CARDS_HELP: &str = "Cards to act on: mic0, 0, lists (mic0,2), ranges (4-7, mic4-mic7) or all; \
several arguments add up. Default: every card";

/// micctl: boot, reset, shut down, wait for and inspect Intel MIC X100
/// coprocessor cards.
#[derive(Debug, Parser)]
#[command(
    name = "micctl",
    version,
    about = "Operator CLI for Intel MIC X100 coprocessor cards",
    long_about = "Operator CLI for Intel MIC X100 coprocessor cards: lifecycle (boot, shutdown, reset, \
reboot, wait), status, info, the card kernel log and the card console; mpssd's view of the cards \
(in status and info), its events, and its crash forensics bundles.\n\n\
Every command takes --root DIR (or MIC_ROOT) to work on an emulated fleet served by micemu, and \
--json for machine-readable output (one document with a schema_version; JSON Lines for streams). \
The schema is micctl/schema/micctl.schema.json, documented in micctl/JSON.md.",
    after_help = crate::exit::help(),
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Directory all card paths are resolved under (sys/class/mic, debugfs, lib/firmware); `/` on a
    /// real system, micemu's --root for an emulated fleet
    #[arg(long, global = true, env = "MIC_ROOT", value_name = "DIR", value_hint = ValueHint::DirPath)]
    pub root: Option<PathBuf>,
    /// Machine-readable output: one JSON document with a schema_version, or JSON Lines for streams
    /// (log, status --watch, wait, events, console)
    #[arg(long, global = true)]
    pub json: bool,
    /// When to colour human output (NO_COLOR in the environment also disables colour under auto)
    #[arg(long, global = true, value_enum, value_name = "WHEN", default_value_t = ColorWhen::Auto)]
    pub color: ColorWhen,
}

/// `--color`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorWhen {
    /// Colour when stdout is a terminal, TERM is not dumb and NO_COLOR is unset
    Auto,
    /// Always colour
    Always,
    /// Never colour
    Never,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// One row per card: state, shutdown status, family, stepping, IP address, time in state, POST code
    #[command(after_help = STATUS_AFTER_HELP)]
    Status(StatusArgs),
    /// Every sysfs attribute of a card and the useful debugfs facts (POST code, SMPT, device page)
    Info(InfoArgs),
    /// Boot cards with the micctrl defaults (linux, mic/uos.img, mic/micN.image)
    Boot(BootArgs),
    /// Ask the card OS to shut down
    Shutdown(LifecycleArgs),
    /// Reset cards to offline
    Reset(LifecycleArgs),
    /// Shut down, reset and boot again
    Reboot(RebootArgs),
    /// Wait until cards reach a state
    Wait(WaitArgs),
    /// The card kernel log, dmesg style
    #[command(after_help = LOG_AFTER_HELP)]
    Log(LogArgs),
    /// mpssd's events as they happen: supervision, devices, crashes, configuration reloads
    #[command(after_help = EVENTS_AFTER_HELP)]
    Events(EventsArgs),
    /// mpssd's crash forensics bundles (DIR/var/lib/mpssd/crash/micN-TIME/); mpssd need not run
    #[command(subcommand)]
    Crash(CrashCommand),
    /// Attach to a card's console (through mpssd): type into it, watch it, or script it
    #[command(after_help = crate::cmd::console::args::AFTER_HELP)]
    Console(crate::cmd::console::ConsoleArgs),
}

const EVENTS_AFTER_HELP: &str = "\
The first line (-- mpssd VERSION (pid N): mic0 running, ... --) says the stream is live: nothing
after it is missed. Then one line per event in mpssd's own words, with its UTC time; --json gives
JSON Lines (a start record, event records, an end record). Daemon-wide events (configuration reloads, mpssd starting
and stopping) are shown whatever CARDS says. The stream ends with exit 10 when mpssd stops.";

const CRASH_AFTER_HELP: &str = "\
BUNDLE is a bundle's directory (a path, or its name in the crash directory, as crash list
shows it), or a card (mic0, 0, mic0:latest) for that card's newest bundle.";

const STATUS_AFTER_HELP: &str = "\
IN STATE: with --watch, the time since micctl saw the state change; otherwise, for an online card,
'>=N' is a lower bound taken from the newest card kernel log record (the card clock starts at boot);
'-' when unknown (sysfs keeps no timestamps).";

const LOG_AFTER_HELP: &str = "\
--level shows that level and more severe ones: emerg (0), alert (1), crit (2), err (3), warn (4),
notice (5), info (6), debug (7).
--since takes card time in seconds since the card booted (12.5, 12.5s, 2m) or a duration before
the newest record ('30s ago', '2m ago').";

/// Card selection for commands that take several cards.
#[derive(Debug, Clone, Args)]
pub struct CardsArg {
    #[arg(value_name = "CARDS", help = CARDS_HELP, value_hint = ValueHint::Other)]
    pub cards: Vec<String>,
}

/// `--wait`/`--timeout`/`--strict` of the lifecycle commands.
#[derive(Debug, Clone, Args)]
pub struct WaitOpts {
    /// Wait until the operation completed on every card
    #[arg(short, long)]
    pub wait: bool,
    /// Give up waiting after this long (e.g. 90, 90s, 500ms, 5m, 1h30m). Default: 90 s plus 60 s
    /// per extra card, between 300 s and 600 s (micctrl's rule)
    #[arg(short, long, value_name = "DURATION", value_parser = parse_duration, requires = "wait")]
    pub timeout: Option<Duration>,
    /// Treat a card already in the requested state as a failure (exit 9)
    #[arg(long)]
    pub strict: bool,
}

#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub cards: CardsArg,
    /// Keep running and print every change as it happens (JSON Lines with --json)
    #[arg(short, long)]
    pub watch: bool,
    /// With --watch: stop after this long
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, requires = "watch")]
    pub duration: Option<Duration>,
    /// Give up (exit 6) if the driver has not answered within this long: for the whole status, or
    /// with --watch for each read [default: 10s]
    #[arg(short, long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
}

#[derive(Debug, Clone, Args)]
pub struct InfoArgs {
    /// The card: mic0 or 0
    #[arg(value_name = "CARD", value_hint = ValueHint::Other)]
    pub card: String,
}

#[derive(Debug, Clone, Args)]
pub struct BootArgs {
    #[command(flatten)]
    pub cards: CardsArg,
    #[command(flatten)]
    pub boot: BootOpts,
    #[command(flatten)]
    pub wait: WaitOpts,
}

/// What to boot: the options `boot` and `reboot` share.
#[derive(Debug, Clone, Args)]
pub struct BootOpts {
    /// Card OS image, relative to lib/firmware
    #[arg(long, value_name = "FILE", default_value = libmic::root::DEFAULT_FIRMWARE)]
    pub firmware: String,
    /// Ramdisk, relative to lib/firmware [default: mic/micN.image]
    #[arg(long, value_name = "FILE")]
    pub ramdisk: Option<String>,
    /// Kernel command line [default: the card's own, or mpssd's default with a static address]
    #[arg(long, value_name = "CMDLINE")]
    pub cmdline: Option<String>,
    /// Boot mode
    #[arg(long, value_enum, value_name = "MODE", default_value_t = BootModeArg::Linux)]
    pub bootmode: BootModeArg,
}

/// `--bootmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BootModeArg {
    /// A Linux bzImage (the card OS)
    Linux,
    /// A bare ELF image
    Elf,
}

impl From<BootModeArg> for BootMode {
    fn from(b: BootModeArg) -> Self {
        match b {
            BootModeArg::Linux => BootMode::Linux,
            BootModeArg::Elf => BootMode::Elf,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct LifecycleArgs {
    #[command(flatten)]
    pub cards: CardsArg,
    #[command(flatten)]
    pub wait: WaitOpts,
}

#[derive(Debug, Clone, Args)]
pub struct RebootArgs {
    #[command(flatten)]
    pub cards: CardsArg,
    #[command(flatten)]
    pub boot: BootOpts,
    /// Also wait until the card OS is up again (the shutdown and reset are always waited for)
    #[arg(short, long)]
    pub wait: bool,
    /// Give up after this long, for the whole reboot (default as for boot)
    #[arg(short, long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
}

#[derive(Debug, Clone, Args)]
pub struct WaitArgs {
    #[command(flatten)]
    pub cards: CardsArg,
    /// The state to wait for
    #[arg(short, long, value_enum, value_name = "STATE", default_value_t = StateArg::Online)]
    pub state: StateArg,
    /// Give up after this long (default as for boot --wait)
    #[arg(short, long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
}

/// A card state, as sysfs names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StateArg {
    /// Ready to boot
    Offline,
    /// Booted (the image was handed to the card)
    Online,
    /// Shutting down, or shut down and waiting for a reset
    #[value(name = "shutting_down", alias = "shutting-down")]
    ShuttingDown,
    /// The last reset did not complete
    #[value(name = "reset_failed", alias = "reset-failed")]
    ResetFailed,
}

impl From<StateArg> for MicState {
    fn from(s: StateArg) -> Self {
        match s {
            StateArg::Offline => MicState::Offline,
            StateArg::Online => MicState::Online,
            StateArg::ShuttingDown => MicState::ShuttingDown,
            StateArg::ResetFailed => MicState::ResetFailed,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// The card: mic0 or 0
    #[arg(value_name = "CARD", value_hint = ValueHint::Other)]
    pub card: String,
    /// Keep printing new records as the card logs them (across reboots)
    #[arg(short, long)]
    pub follow: bool,
    /// Show this level and more severe ones: a name (emerg, alert, crit, err, warn, notice, info,
    /// debug) or a number 0-7
    #[arg(short, long, value_name = "LEVEL", value_parser = parse_level)]
    pub level: Option<u8>,
    /// Show records from this card time on: seconds since card boot (12.5) or 'DURATION ago'
    /// relative to the newest record ('30s ago')
    #[arg(long, value_name = "WHEN", value_parser = parse_since, allow_hyphen_values = true)]
    pub since: Option<Since>,
    /// Timestamp style: kernel ([   12.345678]), human (+1m02.345s since boot), delta (time since
    /// the previous record) or none
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = TimeFormat::Kernel)]
    pub time_format: TimeFormat,
    /// With --follow: stop after this long
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, requires = "follow")]
    pub duration: Option<Duration>,
}

#[derive(Debug, Clone, Args)]
pub struct EventsArgs {
    #[command(flatten)]
    pub cards: CardsArg,
    /// Only events of this kind (repeat for several)
    #[arg(short, long, value_name = "KIND", value_parser = clap::builder::PossibleValuesParser::new(mpssd_proto::EventKind::NAMES))]
    pub kind: Vec<String>,
    /// Stop after this many events (of the cards and kinds asked for)
    #[arg(short = 'n', long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// Stop after this long (exit 0)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, conflicts_with = "timeout")]
    pub duration: Option<Duration>,
    /// With --count: give up after this long if fewer events came (exit 6)
    #[arg(short, long, value_name = "DURATION", value_parser = parse_duration, requires = "count")]
    pub timeout: Option<Duration>,
}

/// `crash list` and `crash show`.
#[derive(Debug, Subcommand)]
pub enum CrashCommand {
    /// One row per bundle, oldest first: card, time, shutdown status, size, the panic line
    List(CrashListArgs),
    /// What a bundle holds: summary, panic line, timeline, the end of the card log and console
    #[command(after_help = CRASH_AFTER_HELP)]
    Show(CrashShowArgs),
}

/// Where the bundles are.
#[derive(Debug, Clone, Args)]
pub struct CrashDirArg {
    /// The crash directory, relative to the root unless absolute (mpssd.toml [crash] dir)
    #[arg(long, value_name = "DIR", default_value = mpssd_proto::crash::DEFAULT_DIR, value_hint = ValueHint::DirPath)]
    pub dir: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct CrashListArgs {
    #[command(flatten)]
    pub cards: CardsArg,
    #[command(flatten)]
    pub dir: CrashDirArg,
}

#[derive(Debug, Clone, Args)]
pub struct CrashShowArgs {
    /// The bundle: a path, a bundle name, or a card (mic0, mic0:latest) for its newest
    #[arg(value_name = "BUNDLE", value_hint = ValueHint::AnyPath)]
    pub bundle: String,
    #[command(flatten)]
    pub dir: CrashDirArg,
    /// Lines of the card log and the console shown (their ends)
    #[arg(short = 'n', long, value_name = "N", default_value_t = 20)]
    pub lines: usize,
    /// Print this file of the bundle instead (control characters escaped)
    #[arg(long, value_name = "FILE", value_parser = clap::builder::PossibleValuesParser::new(mpssd_proto::crash::FILES))]
    pub file: Option<String>,
}

/// `--time-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TimeFormat {
    /// dmesg's [seconds.micros] since card boot
    Kernel,
    /// Time since card boot as 1h02m03.456s
    Human,
    /// Time since the previous record, as [  +0.001234]
    Delta,
    /// No timestamp
    None,
}

/// `--since`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    /// Card time (since card boot).
    CardTime(Duration),
    /// This long before the newest record.
    Ago(Duration),
}

/// Parses `90`, `1.5`, `90s`, `500ms`, `5m`, `1h` and compounds such as
/// `1h30m` or `2m30.5s` (a bare number is seconds; each unit at most once,
/// largest first).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    const USE: &str = "use e.g. 90, 90s, 500ms, 5m, 1h30m";
    let quoted = libmic::attrs::quote_value(s);
    let t = s.trim();
    let number = |n: &str| -> Result<f64, String> {
        if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            return Err(format!("{quoted} is not a duration ({USE})"));
        }
        n.parse()
            .map_err(|_| format!("{quoted} is not a duration ({USE})"))
    };
    let secs = if t.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        number(t)?
    } else {
        let mut total = 0.0;
        let mut rest = t;
        // The units seen so far may only get smaller: 1h30m, not 30m1h.
        let mut smallest = f64::INFINITY;
        while !rest.is_empty() {
            let n_end = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(rest.len());
            let (n, after) = rest.split_at(n_end);
            let u_end = after
                .find(|c: char| !c.is_ascii_alphabetic())
                .unwrap_or(after.len());
            let (unit, next) = after.split_at(u_end);
            let scale = match unit {
                "ms" => 0.001,
                "s" | "sec" | "secs" => 1.0,
                "m" | "min" => 60.0,
                "h" => 3600.0,
                "" => return Err(format!("{quoted}: a number without a unit ({USE})")),
                other => {
                    return Err(format!(
                        "unknown unit {} in {quoted} ({USE})",
                        libmic::attrs::quote_value(other)
                    ));
                }
            };
            if scale >= smallest {
                return Err(format!(
                    "{quoted}: units must come largest first, each once ({USE})"
                ));
            }
            smallest = scale;
            total += number(n)? * scale;
            rest = next.trim_start();
        }
        total
    };
    if !secs.is_finite() || secs > 1e9 {
        return Err(format!("{quoted} is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parses a syslog level name or number.
pub fn parse_level(s: &str) -> Result<u8, String> {
    let t = s.trim().to_ascii_lowercase();
    if let Ok(n) = t.parse::<u8>() {
        return if n <= 7 {
            Ok(n)
        } else {
            Err(format!("level {n} is out of range 0-7"))
        };
    }
    let alias = match t.as_str() {
        "warning" => "warn",
        "error" => "err",
        "critical" => "crit",
        "emergency" | "panic" => "emerg",
        other => other,
    };
    libmic::klog::LEVEL_NAMES
        .iter()
        .position(|n| *n == alias)
        .map(|p| p as u8)
        .ok_or_else(|| {
            format!(
                "unknown level {s:?} (use one of {} or 0-7)",
                libmic::klog::LEVEL_NAMES.join(", ")
            )
        })
}

/// Parses `--since`.
pub fn parse_since(s: &str) -> Result<Since, String> {
    let t = s.trim();
    if let Some(d) = t.strip_suffix("ago") {
        return parse_duration(d.trim()).map(Since::Ago);
    }
    parse_duration(t).map(Since::CardTime)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("2m30.5s").unwrap(), Duration::from_millis(150_500));
        assert_eq!(parse_duration("1h 5m 2s").unwrap(), Duration::from_secs(3902));
        assert_eq!(parse_duration("1m500ms").unwrap(), Duration::from_millis(60_500));
        for bad in [
            "", "x", "5y", "-1", "1e999", "..", "1.2.3", "30m1h", "1h1h", "1h30", "h", "1h-5m", "1.2.3s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        let long = format!("{}x", "9".repeat(5000));
        let e = parse_duration(&long).unwrap_err();
        assert!(e.len() < 200 && e.contains("…\" (5001 bytes)"), "{e}");
    }

    #[test]
    fn levels() {
        assert_eq!(parse_level("err").unwrap(), 3);
        assert_eq!(parse_level("WARNING").unwrap(), 4);
        assert_eq!(parse_level("7").unwrap(), 7);
        assert!(parse_level("8").is_err());
        assert!(parse_level("loud").is_err());
    }

    #[test]
    fn since() {
        assert_eq!(
            parse_since("12.5").unwrap(),
            Since::CardTime(Duration::from_millis(12500))
        );
        assert_eq!(
            parse_since("30s ago").unwrap(),
            Since::Ago(Duration::from_secs(30))
        );
        assert_eq!(
            parse_since("2m ago").unwrap(),
            Since::Ago(Duration::from_secs(120))
        );
        assert!(parse_since("yesterday").is_err());
    }
}
