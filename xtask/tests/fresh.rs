//! The committed man pages and shell completions are what `cargo xtask gen`
//! generates from the current clap definitions.

#[test]
fn generated_artifacts_are_fresh() {
    let report = xtask::generate::compare(&xtask::workspace_root()).expect("generating the artifacts");
    assert!(report.is_fresh(), "{report}");
}
