//! `mictop --demo`: emulated cards under a temporary root (micemu
//! in-process) and an mpssd for them ([`mpssd`]: this executable run
//! again, its network in a namespace of its own), booted from the UI; the
//! console pane goes through mpssd's broker as on a real host. Quitting
//! stops mpssd, then the cards, and removes the root.

pub mod mpssd;

use std::path::Path;

use anyhow::Context as _;
use libmic::MicRoot;

use crate::config::Config;
use crate::model::OpKind;
use crate::reload::ConfigSource;
use crate::theme::Theme;

/// Runs the demo with `cards` emulated cards at realistic timing.
pub fn run(cards: u32, config: Config, theme: Theme, source: &ConfigSource) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("mictop-demo-{}", std::process::id()));
    let emu = micemu::Config {
        cards,
        ..micemu::Config::default()
    };
    let instance = match micemu::Instance::start(&dir, emu) {
        Ok(i) => i,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e).context("mictop --demo could not start the emulated cards");
        }
    };
    let root = MicRoot::new(instance.root());
    let log = instance.root().join("var/log/mpssd.log");
    let started = std::fs::create_dir_all(log.parent().unwrap_or(instance.root()))
        .context("creating the log directory")
        .and_then(|()| mpssd::start_demo(Path::new("/proc/self/exe"), instance.root(), cards, &log));
    let (daemon, no_net) = match started {
        Ok(d) => d,
        Err(e) => {
            let _ = instance.stop();
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e).context("mictop --demo could not start mpssd for the emulated cards");
        }
    };
    let pid = daemon.pid().unwrap_or(0);
    let label = match &no_net {
        None => format!(
            "{} · demo: micemu, mpssd pid {pid} (its network namespace: nsenter -t {pid} -n ping 172.31.0.1)",
            instance.root().display()
        ),
        Some(_) => format!(
            "{} · demo: micemu, mpssd pid {pid} (no network devices)",
            instance.root().display()
        ),
    };
    let result = crate::run_tui(&root, config, theme, source, |app| {
        let ids = app.cards().iter().map(|c| c.id).collect();
        let effects = app.run_now(OpKind::Boot, ids);
        app.set_root_label(label);
        if let Some(why) = &no_net {
            app.say(format!("demo: the cards have no network: {why}"));
        }
        effects
    });
    if let Some(why) = &no_net {
        eprintln!("mictop --demo: the cards had no network: {why}");
    }
    // mpssd first (it removes the cards' devices), then the cards.
    let daemon = daemon.stop().context("stopping the demo's mpssd");
    let stopped = instance.stop().context("stopping the emulated cards");
    if stopped.is_ok() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result.and(daemon).and(stopped)
}
