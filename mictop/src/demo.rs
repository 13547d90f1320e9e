//! `mictop --demo`: emulated cards under a temporary root (micemu
//! in-process), their consoles served by mictop itself, booted from the
//! UI, torn down on quit.

use anyhow::Context as _;
use libmic::MicRoot;

use crate::config::Config;
use crate::console::demo::DemoConsoles;
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
    // Their consoles, added before they boot (there is no mpssd here).
    let ids: Vec<u32> = (0..cards).collect();
    let consoles = match DemoConsoles::start(&root, &ids) {
        Ok(c) => c,
        Err(e) => {
            let _ = instance.stop();
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e).context("mictop --demo could not add the emulated cards' consoles");
        }
    };
    let result = crate::run_tui(&root, config, theme, source, Some(Box::new(consoles)), |app| {
        let ids = app.cards().iter().map(|c| c.id).collect();
        app.run_now(OpKind::Boot, ids)
    });
    let stopped = instance.stop();
    if stopped.is_ok() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result.and(stopped.context("stopping the emulated cards"))
}
