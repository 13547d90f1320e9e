//! The command line.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::config::parse_interval;

/// Live TUI for Intel MIC X100 cards: fleet, details, card logs, lifecycle
/// actions, card consoles (through mpssd's console broker).
#[derive(Debug, Parser)]
#[command(
    name = "mictop",
    version,
    after_help = "Press ? in mictop for the key bindings. Card consoles (c) come from the mpssd \
serving the root; without one the console pane says so and waits for it."
)]
pub struct Cli {
    /// Directory all card paths are resolved under [env: MIC_ROOT; default /]
    #[arg(long, value_name = "DIR", conflicts_with = "demo")]
    pub root: Option<PathBuf>,

    /// How often the card log and boot progress are read (500ms, 2s, ...)
    #[arg(long, value_name = "DURATION", value_parser = parse_interval)]
    pub interval: Option<Duration>,

    /// Do not capture the mouse (keeps the terminal's own selection)
    #[arg(long)]
    pub no_mouse: bool,

    /// Configuration file, read again whenever it is saved [default:
    /// $XDG_CONFIG_HOME/mictop/config.toml]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Start emulated cards (micemu, in-process) under a temporary root and an
    /// mpssd for them (their consoles, network and disks; its network in a
    /// namespace of its own), boot them and watch them; c attaches a card's
    /// console through mpssd's broker. Quitting tears it all down. Needs FUSE
    #[arg(long)]
    pub demo: bool,

    /// Number of emulated cards for --demo
    #[arg(long, value_name = "N", default_value_t = 4, requires = "demo",
          value_parser = clap::value_parser!(u32).range(1..=256))]
    pub demo_cards: u32,
}
