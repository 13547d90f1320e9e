//! `micctl`: the operator CLI for MIC X100 cards. Everything is in the
//! library; this parses the command line and runs it.

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    micctl::reset_sigpipe();
    let cli = micctl::cli::Cli::parse();
    micctl::run(&cli)
}
