//! `mpssd`: everything is in the library; this parses the command line and
//! runs it.

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let cli = mpssd::cli::Cli::parse();
    ExitCode::from(mpssd::daemon::main(&cli))
}
