//! Replays the committed corpus of every fuzz target (fuzz/corpus/NAME/)
//! through its harness on the stable toolchain: each input the fuzzer kept
//! as interesting is a regression test of the invariants.

use std::fs;
use std::path::Path;

/// Fewer inputs than this means the corpus went missing.
const MIN_INPUTS: usize = 20;

#[test]
fn every_corpus_input_keeps_the_invariants() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    for &(name, run) in mic_fuzz::TARGETS {
        let dir = root.join(name);
        let mut n = 0;
        for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            let data = fs::read(&path).unwrap();
            eprintln!("{}", path.display());
            run(&data);
            n += 1;
        }
        assert!(
            n >= MIN_INPUTS,
            "{name}: only {n} corpus inputs in {}",
            dir.display()
        );
    }
}
