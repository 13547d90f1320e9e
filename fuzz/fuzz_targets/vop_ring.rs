//! libFuzzer entry point; the harness and its invariants are in
//! `mic_fuzz::vop`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mic_fuzz::vop::fuzz(data));
