//! `micctl`: the operator CLI for MIC X100 cards. Everything is in the
//! library; this parses the command line and runs it.

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    micctl::reset_sigpipe();
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    match micctl::cli::Cli::try_parse_from(&args) {
        Ok(cli) => micctl::run(&cli),
        Err(e) => micctl::command_line_error(&e, &args),
    }
}
