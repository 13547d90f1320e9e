//! The disk's counters (`mpssd_device_<name>_total{device="block"}`).

/// Requests served, of any kind.
pub const REQUESTS: usize = 0;
pub const READS: usize = 1;
pub const WRITES: usize = 2;
pub const FLUSHES: usize = 3;
/// Bytes read from the image for the card.
pub const READ_BYTES: usize = 4;
/// Bytes the card wrote to the image.
pub const WRITE_BYTES: usize = 5;
/// Requests answered IOERR (bad range, read-only image, failed I/O).
pub const IO_ERRORS: usize = 6;
/// Requests of an unknown type (answered UNSUPP).
pub const UNSUPPORTED: usize = 7;
/// Chains that were not requests (no header, no status byte), or that the
/// card rewrote in flight, or that the ring refused.
pub const MALFORMED: usize = 8;
/// Rounds that ended with requests left for the next (the ring held more
/// than one round's budget).
pub const RING_FULL: usize = 9;

/// The names, by index.
pub const NAMES: &[&str] = &[
    "requests",
    "reads",
    "writes",
    "flushes",
    "read_bytes",
    "write_bytes",
    "io_errors",
    "unsupported",
    "malformed",
    "ring_full",
];
