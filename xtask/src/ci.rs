//! `cargo xtask ci`: every check CI runs, cheapest first.

use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, Result, bail};

use crate::{fuzz, generate, kernel};

/// Generated artifacts fresh, rustfmt check, clippy `-D warnings`, the
/// whole test suite, then the kernel tier ([`kernel`]: the modules against
/// Linux 6.12 and mic-core's KUnit suite; reported loudly and skipped only
/// when its packages cannot be had), then each fuzz target briefly
/// ([`fuzz`]: when the nightly toolchain and cargo-fuzz are there).
pub fn run(root: &Path) -> Result<()> {
    eprintln!("xtask: gen --check");
    generate::check(root)?;
    cargo(root, &["fmt", "--all", "--check"])?;
    cargo(
        root,
        &["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"],
    )?;
    cargo(root, &["test", "--workspace"])?;
    eprintln!("xtask: kernel");
    let outcome = kernel::run(root, &kernel::Options::from_env())?;
    kernel::print_outcome(&outcome);
    eprintln!("xtask: fuzz ({}s per target)", fuzz::CI_SECONDS);
    fuzz::run_all(root, fuzz::CI_SECONDS)?;
    Ok(())
}

fn cargo(root: &Path, args: &[&str]) -> Result<()> {
    eprintln!("xtask: cargo {}", args.join(" "));
    let status = Command::new(env!("CARGO"))
        .args(args)
        .current_dir(root)
        .status()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}
