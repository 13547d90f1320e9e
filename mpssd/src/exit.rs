//! mpssd's exit codes.

/// Stopped cleanly (SIGTERM/SIGINT), or `--check-config` found the file valid.
pub const OK: u8 = 0;
/// A failure while running (see the log).
pub const FAILURE: u8 = 1;
/// Bad command line (clap's own code).
pub const USAGE: u8 = 2;
/// No `sys/class/mic` under the root: the driver is not loaded (as the
/// original's exit 3).
pub const DRIVER_ABSENT: u8 = 3;
/// The configuration file was refused.
pub const BAD_CONFIG: u8 = 4;
/// Another mpssd runs for this root.
pub const ALREADY_RUNNING: u8 = 5;

/// The table for `--help`.
pub const EXIT_CODES_HELP: &str = "Exit codes: 0 stopped cleanly (or --check-config: valid), \
1 failure, 2 usage, 3 driver absent (no sys/class/mic under the root), 4 invalid configuration, \
5 another mpssd runs for this root";
