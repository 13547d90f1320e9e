//! The command line (the source of `man/mpssd.1` and the completions).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, ValueHint};

use crate::exit::EXIT_CODES_HELP;

/// mpssd: supervises Intel MIC X100 cards and serves their virtio devices.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "mpssd",
    version,
    about = "Daemon for Intel MIC X100 cards: supervision, crash forensics, control socket, metrics",
    long_about = "Daemon for Intel MIC X100 cards. Runs in the foreground (systemd Type=notify). One \
supervisor per card sets log_buf_addr/log_buf_len from System.map and the cmdline when none is set, \
adopts the card in whatever state it is, and on shutting_down reads the final shutdown status, writes \
a forensics bundle if it crashed, resets the card, and boots it again when it asked to restart or, by \
policy, after a crash (with backoff and a crash-loop limit).\n\n\
Each card gets its virtio devices: a console (a pty linked at DIR/run/mpssd/micN/console, a broker \
clients attach to over the control socket, everything logged to DIR/var/log/mpssd/micN-console.log), \
a network (TAP micN, the host at 172.31.N.254/24) and, when an image is configured, a disk.\n\n\
Control socket: DIR/run/mpssd/control.sock (protocol: mpssd/PROTOCOL.md). Configuration: TOML, \
reloaded on change and on SIGHUP; SIGUSR1 re-reads every card's disk image. Logs go to stderr with \
syslog priority prefixes (MPSSD_LOG sets the level).",
    after_help = EXIT_CODES_HELP,
    max_term_width = 100
)]
pub struct Cli {
    /// Directory all card paths are resolved under (sys/class/mic, debugfs, lib/firmware, etc/mpss,
    /// run/mpssd, var/lib/mpssd); `/` on a real system, micemu's --root for an emulated fleet
    #[arg(long, env = "MIC_ROOT", value_name = "DIR", value_hint = ValueHint::DirPath)]
    pub root: Option<PathBuf>,
    /// The configuration file [default: DIR/etc/mpss/mpssd.toml; a missing default file means the
    /// built-in defaults]
    #[arg(long, value_name = "FILE", value_hint = ValueHint::FilePath)]
    pub config: Option<PathBuf>,
    /// Check the configuration file and exit: 0 if valid, 4 (with the file, line and key named) if
    /// not
    #[arg(long)]
    pub check_config: bool,
    /// Serve Prometheus metrics at ADDR (e.g. 127.0.0.1:9464); loopback only unless
    /// metrics.allow_remote; metrics.enabled = false turns it off
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
}
