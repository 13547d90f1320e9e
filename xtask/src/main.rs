//! `cargo xtask`: project automation. The work lives in the library's
//! modules; this only parses the command line.

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

#[derive(Debug, Clone, Copy, Subcommand)]
enum Task {
    /// Everything CI runs: generated artifacts up to date, rustfmt check,
    /// clippy -D warnings, the whole test suite.
    Ci,
    /// Generate man pages (man/) and shell completions (shell-completions/)
    /// from the tools' clap definitions.
    Gen {
        /// Write nothing; fail if the committed files differ from what would
        /// be generated.
        #[arg(long)]
        check: bool,
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
        Task::Gen { check: false } => {
            let summary = xtask::generate::write(&root)?;
            eprintln!("xtask: {summary}");
            Ok(())
        }
        Task::Gen { check: true } => xtask::generate::check(&root),
    }
}
