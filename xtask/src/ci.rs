//! `cargo xtask ci`: every check CI runs, cheapest first.

use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, Result, bail};

use crate::{generate, kernel};

/// Generated artifacts fresh, rustfmt check, clippy `-D warnings`, the
/// whole test suite, then the kernel tier ([`kernel`]: the modules against
/// Linux 6.12 and mic-core's KUnit suite; reported loudly and skipped only
/// when its packages cannot be had).
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
