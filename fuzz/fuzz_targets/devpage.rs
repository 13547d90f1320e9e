//! libFuzzer entry point; the harness and its invariants are in
//! `mic_fuzz::devpage`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mic_fuzz::run_bytes(data, mic_fuzz::devpage::run as fn(&mic_fuzz::devpage::PageInput));
});
