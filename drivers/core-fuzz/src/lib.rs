//! Hostile-input harnesses for `mic-core`, shared by the libFuzzer targets in
//! `fuzz/` (nightly, `cargo +nightly fuzz`) and by stable tests that replay
//! the committed corpus.
//!
//! Each harness takes a structured input (decoded with [`arbitrary`] from
//! the fuzzer's bytes), drives the real `mic-core` code over the shared fake
//! memories, and asserts its invariants with `assert!`: a violation is a
//! panic, which libFuzzer reports as a crash and a test as a failure.
//!
//! * [`vop`] — the host ring walker behind COPY_DESC, over two memories
//!   (host ring memory and card memory), against a card doing anything;
//! * [`devpage`] — the device-page walker over arbitrary (and changing)
//!   pages;
//! * [`reaper`] — the card's driver queue reaping used entries a hostile
//!   host writes.
#![forbid(unsafe_code)]

pub mod devpage;
pub mod mem;
pub mod reaper;
pub mod vop;

use arbitrary::{Arbitrary, Unstructured};

/// A harness over the fuzzer's raw bytes.
pub type Harness = fn(&[u8]);

/// The fuzz targets (the names of `fuzz/fuzz_targets/*.rs` and of their
/// corpus directories) and the harness each runs.
pub const TARGETS: &[(&str, Harness)] = &[
    ("vop_ring", vop::fuzz),
    ("devpage", devpage::fuzz),
    ("used_reaper", reaper::fuzz),
];

/// Decodes `data` as `T` and runs `f` on it; bytes that do not decode are
/// skipped (libFuzzer then learns nothing from them).
pub fn run_bytes<'a, T: Arbitrary<'a>>(data: &'a [u8], f: impl FnOnce(&T)) {
    if let Ok(input) = T::arbitrary_take_rest(Unstructured::new(data)) {
        f(&input);
    }
}
