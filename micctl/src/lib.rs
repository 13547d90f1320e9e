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
pub mod supervision;

use std::ffi::OsString;
use std::io::IsTerminal as _;
use std::process::ExitCode;

use clap::CommandFactory as _;
use libmic::{IoLimit, MicRoot};
use serde_json::{Value, json};

use crate::cli::{Cli, Command, CrashCommand};
use crate::exit::Exit;

/// A bad command-line value found after clap's parsing (card selector,
/// ...): exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Something asked for that does not exist and is not a card (a crash
/// bundle): exit code 11.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NotFound(pub String);

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
    /// Every access to the driver's files is bounded by
    /// [`cmd::ACCESS_LIMIT`] until a command sets its own deadline.
    #[must_use]
    pub fn new(cli: &Cli) -> Self {
        let flag = cli.global.root.clone().filter(|p| !p.as_os_str().is_empty());
        Self {
            root: MicRoot::from_env_or(flag).with_io_limit(IoLimit::per_access(cmd::ACCESS_LIMIT)),
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
            Command::Events(_) => "events",
            Command::Crash(CrashCommand::List(_)) => "crash list",
            Command::Crash(CrashCommand::Show(_)) => "crash show",
            Command::Console(_) => "console",
        }
    }

    /// Whether `--json` output is JSON Lines rather than one document.
    #[must_use]
    pub fn streams(&self) -> bool {
        match self {
            Command::Status(a) => a.watch,
            Command::Wait(_) | Command::Log(_) | Command::Events(_) | Command::Console(_) => true,
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
        Command::Events(a) => cmd::events::run(&ctx, a),
        Command::Crash(CrashCommand::List(a)) => cmd::crash::list(&ctx, a),
        Command::Crash(CrashCommand::Show(a)) => cmd::crash::show(&ctx, a),
        Command::Console(a) => cmd::console::run(&ctx, a),
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
        let mut err = error_json(exit, &message);
        if let Some(libmic::Error::NoSuchCard { known, .. }) =
            e.chain().find_map(|c| c.downcast_ref::<libmic::Error>())
        {
            err["known_cards"] = json!(known);
        }
        print_error_json(Some(command.name()), command.streams(), exit, &err);
    }
}

fn error_json(exit: Exit, message: &str) -> Value {
    json!({
        "kind": exit.kind(),
        "exit_code": exit.code(),
        "message": message,
    })
}

/// The JSON of a failed run: a JSON Lines `error` record for a stream, else
/// an error document (`command` null if the command line named none).
fn print_error_json(command: Option<&str>, streams: bool, exit: Exit, err: &Value) {
    let v = if streams {
        output::record("error", json!({ "error": err }))
    } else {
        let mut d = output::document(
            command.unwrap_or(""),
            json!({ "error": err, "exit_code": exit.code() }),
        );
        if command.is_none() {
            d["command"] = Value::Null;
        }
        d
    };
    let _ = output::print_json(&v);
}

/// Handles a command line clap refused (or `--help`/`--version`, which clap
/// reports the same way): clap's text on stderr (help and version on
/// stdout), and with `--json` anywhere on the line, the error as JSON on
/// stdout too, since a script that asked for JSON gets JSON whatever went
/// wrong. Returns the exit code (2 for errors).
#[must_use]
pub fn command_line_error(e: &clap::Error, args: &[OsString]) -> ExitCode {
    use clap::error::ErrorKind;
    let _ = e.print();
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        return ExitCode::SUCCESS;
    }
    if wants_json(args) {
        let (command, streams) = command_of(args);
        let rendered = e.render().to_string();
        let first = rendered
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("invalid command line");
        let message = first.trim().strip_prefix("error: ").unwrap_or(first.trim());
        print_error_json(
            command.as_deref(),
            streams,
            Exit::Usage,
            &error_json(Exit::Usage, message),
        );
    }
    Exit::Usage.into()
}

/// Whether `--json` is among the options (before a `--`).
fn wants_json(args: &[OsString]) -> bool {
    args.iter()
        .skip(1)
        .take_while(|a| *a != "--")
        .any(|a| a == "--json")
}

/// The subcommand an unparsable command line names, if any, and whether it
/// would stream (log, wait, status --watch).
fn command_of(args: &[OsString]) -> (Option<String>, bool) {
    let cli = Cli::command();
    let mut words = args.iter().skip(1).map(|a| a.to_string_lossy());
    let mut name = None;
    while let Some(w) = words.next() {
        if w == "--root" || w == "--color" {
            words.next();
        } else if !w.starts_with('-') {
            let Some(sub) = cli.get_subcommands().find(|c| c.get_name() == w) else {
                break;
            };
            // A command of commands (`crash list`) is named by both words.
            name = if sub.has_subcommands() {
                words
                    .find(|w| !w.starts_with('-'))
                    .and_then(|w| sub.find_subcommand(w.as_ref()))
                    .map(|c| format!("{} {}", sub.get_name(), c.get_name()))
            } else {
                Some(sub.get_name().to_owned())
            };
            break;
        }
    }
    let watch = args.iter().any(|a| a == "--watch" || a == "-w");
    let streams = match name.as_deref() {
        Some("log" | "wait" | "events" | "console") => true,
        Some("status") => watch,
        _ => false,
    };
    (name, streams)
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
