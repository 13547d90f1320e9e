//! `micemu` in the foreground: serve, wait for SIGINT/SIGTERM, unmount.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{Context as _, Result};
use nix::sys::signal::{SigSet, Signal};

use crate::cli::{Cli, Command, RunArgs};
use crate::control;
use crate::instance::Instance;

/// Entry point behind `main`.
pub fn main(cli: Cli) -> Result<()> {
    match cli.command {
        Some(Command::Inject { root, card, fault }) => control::request(&root, &card, &fault),
        None => run(&cli.run),
    }
}

fn run(args: &RunArgs) -> Result<()> {
    let root: PathBuf = args
        .root
        .clone()
        .context("--root DIR is required (the directory to serve the emulated cards under)")?;
    // Signals are taken synchronously by this thread; block them before any
    // other thread exists so none of them receives one.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    signals.thread_block().context("blocking SIGINT/SIGTERM")?;

    crate::logger::init(args.log_level);
    let instance = Instance::start_with(&root, args.config(), args.start_options())?;
    let n = args.cards;
    println!(
        "micemu: serving {n} card{} under {} (sysfs {}, control {})",
        if n == 1 { "" } else { "s" },
        instance.root().display(),
        instance.root().join("sys/class/mic").display(),
        instance.socket().display()
    );
    std::io::stdout().flush()?;

    let sig = signals.wait().context("waiting for a signal")?;
    eprintln!(
        "micemu: {sig}, unmounting {}",
        instance.root().join("sys").display()
    );
    instance.stop()
}
