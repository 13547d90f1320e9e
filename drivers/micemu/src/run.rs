//! `micemu` in the foreground: mount, serve, wait for SIGINT/SIGTERM,
//! unmount.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, Result};
use nix::sys::signal::{SigSet, Signal};

use crate::cli::{Cli, Command, RunArgs};
use crate::control;
use crate::emu::Emulator;
use crate::firmware::FirmwareDir;
use crate::fs::{self, PollHub};

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

    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let root = root.canonicalize()?;
    let config = args.config();
    let firmware = FirmwareDir::new(&root);
    firmware
        .install_defaults(config.cards)
        .with_context(|| format!("creating default card OS images in {}", firmware.path().display()))?;

    let hub = Arc::new(PollHub::default());
    let running = Emulator::start(config, firmware, Arc::clone(&hub)).context("starting the emulated cards")?;
    let sys = root.join("sys");
    std::fs::create_dir_all(&sys).or_else(|e| {
        // A dead FUSE mount makes mkdir fail; let mount() explain it.
        if sys.exists() || e.raw_os_error() == Some(libc::ENOTCONN) { Ok(()) } else { Err(e) }
    })?;
    let mount = fs::mount(&sys, Arc::clone(&running.emu) as Arc<dyn fs::Backend>, hub)?;
    let sock = control::serve(&root, Arc::clone(&running.emu) as Arc<dyn control::Handler>)
        .context("starting the control socket")?;
    let pidfile = root.join("run/micemu.pid");
    std::fs::write(&pidfile, format!("{}\n", std::process::id()))?;

    let n = running.emu.config.cards;
    println!(
        "micemu: serving {n} card{} under {} (sysfs {}, control {})",
        if n == 1 { "" } else { "s" },
        root.display(),
        sys.join("class/mic").display(),
        sock.display()
    );
    std::io::stdout().flush()?;
    if args.demo {
        crate::demo::spawn(&root)?;
    }

    let sig = signals.wait().context("waiting for a signal")?;
    eprintln!("micemu: {sig}, unmounting {}", sys.display());
    drop(mount);
    drop(running);
    cleanup(&root, &sock, &pidfile);
    Ok(())
}

fn cleanup(_root: &Path, sock: &Path, pidfile: &Path) {
    let _ = std::fs::remove_file(sock);
    let _ = std::fs::remove_file(pidfile);
}
