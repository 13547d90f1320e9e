//! `cargo xtask ci`: every check CI runs, cheapest first.

use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, Result, bail};

use crate::generate;

/// Generated artifacts fresh, rustfmt check, clippy `-D warnings`, the
/// whole test suite.
pub fn run(root: &Path) -> Result<()> {
    eprintln!("xtask: gen --check");
    generate::check(root)?;
    cargo(root, &["fmt", "--all", "--check"])?;
    cargo(
        root,
        &["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"],
    )?;
    cargo(root, &["test", "--workspace"])?;
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
