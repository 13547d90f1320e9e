//! `mictop`: the live TUI for MIC X100 cards (see the library for the
//! structure).

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let cli = mictop::cli::Cli::parse();
    match mictop::run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mictop: {e:#}");
            ExitCode::FAILURE
        }
    }
}
