//! `micctl`: the operator CLI for Intel MIC X100 cards, as a library so the
//! xtask (man pages, completions), benchmarks and tests can reach the clap
//! definitions ([`cli::Cli`]) and the logic behind them.
//!
//! `main.rs` only parses the command line and calls [`run`]; each
//! subcommand lives in its own file under [`cmd`].

pub mod cli;
pub mod cmd;
pub mod exit;
pub mod output;
pub mod progress;
pub mod select;

use std::io::IsTerminal as _;
use std::process::ExitCode;

use libmic::MicRoot;
use serde_json::json;

use crate::cli::{Cli, Command};
use crate::exit::Exit;

/// A bad command-line value found after clap's parsing (card selector,
/// ...): exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// What every command needs: the root, and how to print.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub root: MicRoot,
    /// `--json`.
    pub json: bool,
    /// Colour human output on stdout.
    pub color: bool,
    /// Draw progress on stderr (it is a terminal).
    pub progress: bool,
}

impl Ctx {
    #[must_use]
    pub fn new(cli: &Cli) -> Self {
        let flag = cli.global.root.clone().filter(|p| !p.as_os_str().is_empty());
        Self {
            root: MicRoot::from_env_or(flag),
            json: cli.global.json,
            color: output::use_color(cli.global.color),
            progress: std::io::stderr().is_terminal(),
        }
    }
}

impl Command {
    /// The subcommand's name, as in JSON `command`.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Command::Status(_) => "status",
            Command::Info(_) => "info",
            Command::Boot(_) => "boot",
            Command::Shutdown(_) => "shutdown",
            Command::Reset(_) => "reset",
            Command::Reboot(_) => "reboot",
            Command::Wait(_) => "wait",
            Command::Log(_) => "log",
        }
    }

    /// Whether `--json` output is JSON Lines rather than one document.
    #[must_use]
    pub fn streams(&self) -> bool {
        match self {
            Command::Status(a) => a.watch,
            Command::Wait(_) | Command::Log(_) => true,
            _ => false,
        }
    }
}

/// Runs a parsed command line; returns the process exit code.
#[must_use]
pub fn run(cli: &Cli) -> ExitCode {
    let ctx = Ctx::new(cli);
    let result = match &cli.command {
        Command::Status(a) => cmd::status::run(&ctx, a),
        Command::Info(a) => cmd::info::run(&ctx, a),
        Command::Boot(a) => cmd::boot::run(&ctx, a),
        Command::Shutdown(a) => cmd::shutdown::run(&ctx, a),
        Command::Reset(a) => cmd::reset::run(&ctx, a),
        Command::Reboot(a) => cmd::reboot::run(&ctx, a),
        Command::Wait(a) => cmd::wait::run(&ctx, a),
        Command::Log(a) => cmd::log::run(&ctx, a),
    };
    match result {
        Ok(exit) => exit.into(),
        Err(e) => {
            let exit = Exit::of_error(&e);
            report_error(&ctx, &cli.command, &e, exit);
            exit.into()
        }
    }
}

/// Prints a command-level error: always on stderr; with `--json` also as a
/// JSON document (or a JSON Lines `error` record for streams) on stdout.
fn report_error(ctx: &Ctx, command: &Command, e: &anyhow::Error, exit: Exit) {
    let message = format!("{e:#}");
    eprintln!("micctl: error: {message}");
    if ctx.json {
        let mut err = json!({
            "kind": exit.kind(),
            "exit_code": exit.code(),
            "message": message,
        });
        if let Some(libmic::Error::NoSuchCard { known, .. }) =
            e.chain().find_map(|c| c.downcast_ref::<libmic::Error>())
        {
            err["known_cards"] = json!(known);
        }
        let v = if command.streams() {
            output::record("error", json!({ "error": err }))
        } else {
            output::document(command.name(), json!({ "error": err, "exit_code": exit.code() }))
        };
        let _ = output::print_json(&v);
    }
}

/// Restores the default SIGPIPE action, so `micctl log | head` ends quietly
/// like any Unix tool instead of failing on a closed pipe.
pub fn reset_sigpipe() {
    // SAFETY: setting a signal disposition to SIG_DFL has no memory-safety
    // preconditions; it runs at the start of main before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
