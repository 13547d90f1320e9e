//! `mictop`: the live TUI for MIC X100 cards.
//!
//! * [`app`] — the application: its components and `update(Action) ->
//!   Effects`, input routed to the component it is for;
//! * [`components`] — the panes' and dialogs' own state, input handling
//!   and updates;
//! * [`model`] — what is known about the cards and the host;
//! * [`layout`] — where each pane goes, from plain inputs;
//! * [`event`] — the event sources (terminal, `state` polls, log follower,
//!   clock, signals) and the loop that applies actions and draws;
//! * [`ui`] — drawing, one module per component, a pure function of the
//!   state; [`theme`] — its styles;
//! * [`actions`] — lifecycle operations on worker threads through libmic;
//! * [`console`] — where card consoles come from (the source trait,
//!   mpssd's console broker, keys as bytes);
//! * [`config`] — the TOML configuration and key bindings; [`reload`] —
//!   reading it again when its file changes;
//! * [`terminal`] — taking and restoring the terminal;
//! * [`demo`] — `mictop --demo`, emulated cards in-process and an mpssd
//!   for them (this executable run again: [`demo::mpssd::child_main`]).

#![forbid(unsafe_code)]

pub mod actions;
pub mod app;
pub mod cli;
pub mod components;
pub mod config;
pub mod console;
pub mod demo;
pub mod event;
pub mod layout;
pub mod model;
pub mod reload;
pub mod terminal;
pub mod theme;
pub mod ui;

use std::time::Duration;

use libmic::MicRoot;

use crate::app::{App, Effect};
use crate::cli::Cli;
use crate::config::Config;
use crate::reload::ConfigSource;
use crate::theme::Theme;

/// The effective configuration: the file, then the flags, then `NO_COLOR`.
pub fn effective_config(cli: &Cli) -> anyhow::Result<(Config, Theme)> {
    Ok(ConfigSource::from_cli(cli).load()?)
}

/// mictop as the command line asks.
pub fn run(cli: &Cli) -> anyhow::Result<()> {
    let source = ConfigSource::from_cli(cli);
    let (config, theme) = source.load()?;
    if cli.demo {
        return demo::run(cli.demo_cards, config, theme, &source);
    }
    let root = MicRoot::from_env_or(cli.root.clone());
    run_tui(&root, config, theme, &source, |_| Vec::new())
}

/// Runs the TUI on the cards under `root` until the user quits, reading
/// the configuration again from `source` whenever its file changes; card
/// consoles come from the mpssd serving `root`. `initial` may start
/// actions once the cards are known.
pub fn run_tui(
    root: &MicRoot,
    config: Config,
    theme: Theme,
    source: &ConfigSource,
    initial: impl FnOnce(&mut App) -> Vec<Effect>,
) -> anyhow::Result<()> {
    let mouse = config.mouse;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(async {
        // Everything that can fail for a bad root fails here, before the
        // terminal is taken.
        let event::Session {
            mut app,
            mut runtime,
            mut rx,
        } = event::session(root, config, theme)?;
        let init = initial(&mut app);
        // Watched before the first frame, so no edit after it is missed. A
        // file whose directory cannot be watched is read at start only.
        let _watch = source.watch(runtime.sender()).ok();
        let (mut terminal, _guard) = terminal::enter(mouse)?;
        runtime.set_mouse_control(Box::new(terminal::set_mouse));
        event::spawn_input(runtime.sender())?;
        event::spawn_signals(runtime.sender())?;
        runtime.run(&mut terminal, &mut app, &mut rx, init).await
    });
    rt.shutdown_timeout(Duration::from_millis(200));
    result
}
