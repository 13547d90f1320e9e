//! `cargo xtask`: project automation. The work lives in the library's
//! modules; this only parses the command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// Project automation for the MIC X100 workspace.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Debug, Clone, Subcommand)]
enum Task {
    /// Everything CI runs: generated artifacts up to date, rustfmt check,
    /// clippy -D warnings, the whole test suite, a short run of each fuzz
    /// target.
    Ci,
    /// Build the fuzz targets (nightly, cargo-fuzz), replay their corpus
    /// and fuzz each for a bounded time.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = xtask::fuzz::CI_SECONDS)]
        seconds: u64,
    },
    /// Generate man pages (man/) and shell completions (shell-completions/)
    /// from the tools' clap definitions.
    Gen {
        /// Write nothing; fail if the committed files differ from what would
        /// be generated.
        #[arg(long)]
        check: bool,
    },
    /// The Rust-for-Linux tier: build mic_host.ko and mic_card.ko against
    /// Linux 6.12.117 (CONFIG_WERROR, CLIPPY=1), check their formatting, and
    /// run mic-core's KUnit suite in a User-Mode Linux kernel. Installs the
    /// pinned Debian toolchain if missing; caches the prepared tree.
    Kernel {
        /// Cache for the kernel tree, bindgen and build directories, outside
        /// the clone [default: /var/cache/mic-x100-kernel, or
        /// ~/.cache/mic-x100-kernel where that cannot be written].
        #[arg(long, env = "MIC_KERNEL_CACHE")]
        cache: Option<PathBuf>,
        /// Build and check the modules only; skip KUnit.
        #[arg(long)]
        modules_only: bool,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse().command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The message is the report; a backtrace would only bury it.
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(task: Task) -> Result<()> {
    let root = xtask::workspace_root();
    match task {
        Task::Ci => xtask::ci::run(&root),
        Task::Fuzz { seconds } => xtask::fuzz::run_all(&root, seconds),
        Task::Gen { check: false } => {
            let summary = xtask::generate::write(&root)?;
            eprintln!("xtask: {summary}");
            Ok(())
        }
        Task::Gen { check: true } => xtask::generate::check(&root),
        Task::Kernel { cache, modules_only } => {
            let opts = xtask::kernel::Options {
                cache: cache.unwrap_or_else(xtask::kernel::default_cache),
                kunit: !modules_only,
            };
            let outcome = xtask::kernel::run(&root, &opts)?;
            xtask::kernel::print_outcome(&outcome);
            Ok(())
        }
    }
}
