//! `mictop`: the live TUI for MIC X100 cards (see the library for the
//! structure).

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    // `mictop --demo` runs this executable again as its mpssd.
    if let Some(code) = mictop::demo::mpssd::child_main() {
        return ExitCode::from(code);
    }
    let cli = mictop::cli::Cli::parse();
    match mictop::run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mictop: {e:#}");
            ExitCode::FAILURE
        }
    }
}
