//! The console's counters (`mpssd_device_<name>_total{device="console"}`).

/// Bytes the card printed.
pub const OUTPUT_BYTES: usize = 0;
/// Bytes typed into the card (pty and clients).
pub const INPUT_BYTES: usize = 1;
/// Times input waited because the card had no receive buffer posted.
pub const RING_FULL: usize = 2;
/// Output the pty could not take (nobody reading it) and that was dropped
/// for it (the broker, the scrollback and the log have it).
pub const PTY_DROPPED_BYTES: usize = 3;
/// Failed copies and config changes.
pub const ERRORS: usize = 4;
/// Window sizes passed to the card.
pub const RESIZES: usize = 5;

/// The names, by index.
pub const NAMES: &[&str] = &[
    "output_bytes",
    "input_bytes",
    "ring_full",
    "pty_dropped_bytes",
    "errors",
    "resizes",
];
