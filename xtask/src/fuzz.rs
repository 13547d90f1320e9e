//! `cargo xtask fuzz` and the fuzz step of `cargo xtask ci`: build the
//! libFuzzer targets of `fuzz/` with the nightly toolchain and cargo-fuzz,
//! replay each target's committed corpus, then fuzz each for a bounded time.
//!
//! The main build never needs nightly: without a nightly toolchain or
//! cargo-fuzz this step says so loudly and returns, and the corpus is still
//! replayed on stable by `mic-fuzz`'s tests.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context as _, Result, bail};

/// Seconds each target fuzzes in CI.
pub const CI_SECONDS: u64 = 10;

/// Why the fuzzers cannot run here, if they cannot.
fn unavailable(root: &Path) -> Option<&'static str> {
    if !nightly(root, &["--version"]) {
        return Some("no nightly toolchain (`cargo +nightly` fails)");
    }
    if !nightly(root, &["fuzz", "--version"]) {
        return Some("cargo-fuzz is not installed (.ci/run installs it)");
    }
    None
}

/// A `cargo +nightly` command with the outer (stable) cargo's environment
/// removed, so the nightly toolchain's own cargo and rustc run.
fn nightly_cmd(root: &Path, args: &[&str]) -> Command {
    let mut c = Command::new("cargo");
    c.arg("+nightly").args(args).current_dir(root);
    for var in [
        "CARGO",
        "RUSTC",
        "RUSTDOC",
        "RUSTUP_TOOLCHAIN",
        "RUSTFLAGS",
        "CARGO_TARGET_DIR",
    ] {
        c.env_remove(var);
    }
    c
}

fn nightly(root: &Path, args: &[&str]) -> bool {
    nightly_cmd(root, args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn run(root: &Path, args: &[&str]) -> Result<()> {
    eprintln!("xtask: cargo +nightly {}", args.join(" "));
    let status = nightly_cmd(root, args)
        .status()
        .with_context(|| format!("running cargo +nightly {}", args.join(" ")))?;
    if !status.success() {
        bail!("cargo +nightly {} failed ({status})", args.join(" "));
    }
    Ok(())
}

/// The targets `fuzz/` declares.
fn targets(root: &Path) -> Result<Vec<String>> {
    let out = nightly_cmd(root, &["fuzz", "list"])
        .output()
        .context("running cargo +nightly fuzz list")?;
    if !out.status.success() {
        bail!(
            "cargo +nightly fuzz list failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let list: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if list.is_empty() {
        bail!("fuzz/ declares no targets");
    }
    Ok(list)
}

/// Builds every target, replays its committed corpus and fuzzes it for
/// `seconds`; new inputs go to a scratch directory, never into the
/// committed corpus. Skips loudly (and succeeds) when the toolchain is
/// missing.
pub fn run_all(root: &Path, seconds: u64) -> Result<()> {
    if let Some(why) = unavailable(root) {
        let bar = "*".repeat(72);
        eprintln!("xtask: {bar}");
        eprintln!("xtask: FUZZ STEP SKIPPED: {why}.");
        eprintln!("xtask: The committed corpus is still replayed by `cargo test -p mic-fuzz`,");
        eprintln!("xtask: but nothing was fuzzed. See README.md, \"Fuzzing\".");
        eprintln!("xtask: {bar}");
        return Ok(());
    }
    // No sanitizer: everything fuzzed is safe Rust (mic-core forbids
    // unsafe), so AddressSanitizer would only halve the rate.
    run(root, &["fuzz", "build", "-s", "none"])?;
    let scratch = tempfile::tempdir().context("scratch corpus directory")?;
    for t in targets(root)? {
        let corpus = root.join("fuzz/corpus").join(&t);
        let new = scratch.path().join(&t);
        std::fs::create_dir_all(&new).with_context(|| format!("creating {}", new.display()))?;
        let time = format!("-max_total_time={seconds}");
        let (new, corpus) = (new.to_string_lossy(), corpus.to_string_lossy());
        run(
            root,
            &[
                "fuzz",
                "run",
                "-s",
                "none",
                &t,
                &new,
                &corpus,
                "--",
                &time,
                "-print_final_stats=1",
            ],
        )
        .with_context(|| format!("fuzz target {t} (a crash input is under fuzz/artifacts/{t}/)"))?;
    }
    Ok(())
}
