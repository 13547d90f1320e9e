//! The configuration reloaded while the app runs: the real watch (notify,
//! debounced) on a file in a temporary directory, its results fed to the
//! real `App` and drawn. Waits are on the channel the watch sends to,
//! bounded by a deadline.

use std::path::Path;
use std::time::{Duration, Instant};

use libmic::{MicRoot, MicState};
use mictop::app::{Action, App, Effect};
use mictop::config::{Command, Config, LayoutMode};
use mictop::model::CardView;
use mictop::reload::ConfigSource;
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use tokio::sync::mpsc::UnboundedReceiver;

/// How long a change may take to come back through the watch.
const WAIT: Duration = Duration::from_secs(10);

fn app(config: Config, theme: mictop::theme::Theme) -> App {
    let root = MicRoot::new("/nonexistent");
    let cards = (0..2)
        .map(|i| CardView::new(root.card_by_id(i), Ok(MicState::Offline)))
        .collect();
    let mut app = App::new(config, theme, "/r".into(), cards, Instant::now());
    app.update(Action::Resize(100, 24));
    app
}

fn screen(app: &App) -> String {
    let mut term = Terminal::new(TestBackend::new(100, 24)).unwrap();
    term.draw(|f| mictop::ui::draw(f, app)).unwrap();
    term.backend().to_string()
}

/// The next reload the watch reports, fed to the app; its effects.
async fn next_reload(rx: &mut UnboundedReceiver<Action>, app: &mut App) -> Vec<Effect> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        // TIMEOUT: the deadline for the change to come back.
        let action = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("the watch reported no reload in time")
            .expect("the watch stopped");
        if matches!(action, Action::Config(_)) {
            return app.update(action);
        }
    }
}

/// Writes `text` as an editor that saves by renaming a new file over the
/// old one does.
fn save_by_rename(path: &Path, text: &str) {
    let tmp = path.with_extension("toml.swp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn key(app: &mut App, c: char) -> Vec<Effect> {
    app.update(Action::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE)))
}

#[tokio::test(flavor = "current_thread")]
async fn a_good_edit_takes_effect_and_a_bad_one_leaves_the_old_in_force() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, "").unwrap();
    let source = ConfigSource {
        explicit: Some(path.clone()),
        ..ConfigSource::default()
    };
    let (config, theme) = source.load().unwrap();
    let mut app = app(config, theme);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let _watch = source.watch(tx).unwrap();
    assert!(!screen(&app).contains("compact"));

    // A good edit: boot moves to B, the grid layout, a new log interval.
    std::fs::write(
        &path,
        "layout = \"compact\"\ninterval_ms = 250\n[keys]\nboot = \"B\"\n",
    )
    .unwrap();
    let effects = next_reload(&mut rx, &mut app).await;
    assert!(
        effects.iter().any(|e| matches!(e, Effect::Reconfigure(c)
            if c.interval == Duration::from_millis(250))),
        "the runtime is told the new interval: {effects:?}"
    );
    assert_eq!(app.config().layout, LayoutMode::Compact);
    assert!(app.compact());
    assert_eq!(app.config_error(), None);
    let shown = screen(&app);
    assert!(
        shown.contains("compact") && shown.contains("configuration reloaded"),
        "{shown}"
    );
    assert!(key(&mut app, 'b').is_empty(), "b is no longer boot");
    key(&mut app, 'B');
    assert!(screen(&app).contains("confirm boot"));
    app.update(Action::Key(KeyEvent::new(KeyCode::Esc, KeyModifiers::NONE)));

    // A bad edit, saved by rename: shown, and the configuration before it
    // stays in force.
    save_by_rename(&path, "layout = \"diagonal\"\n[keys]\nboot = \"b\"\n");
    let effects = next_reload(&mut rx, &mut app).await;
    assert!(effects.is_empty(), "{effects:?}");
    let err = app.config_error().expect("the error is kept").to_owned();
    assert!(
        err.contains("config.toml") && err.contains("key `layout`"),
        "{err}"
    );
    let shown = screen(&app);
    assert!(shown.contains("config not loaded"), "{shown}");
    assert!(shown.contains("key `layout`"), "{shown}");
    assert_eq!(app.config().keys.hint(Command::Boot), "B");
    assert!(app.compact());

    // A TOML syntax error is one line in the footer too.
    std::fs::write(&path, "theme = \n").unwrap();
    next_reload(&mut rx, &mut app).await;
    let err = app.config_error().unwrap().to_owned();
    assert!(err.contains("TOML parse error") && !err.contains('\n'), "{err}");

    // Fixed: in force, the error gone.
    std::fs::write(&path, "theme = \"mono\"\n").unwrap();
    next_reload(&mut rx, &mut app).await;
    assert_eq!(app.config_error(), None);
    assert_eq!(app.theme().name, mictop::config::ThemeName::Mono);
    assert_eq!(app.config().keys.hint(Command::Boot), "b");
    assert_eq!(app.config().layout, LayoutMode::Auto);
    assert!(!screen(&app).contains("config not loaded"));
}

#[tokio::test(flavor = "current_thread")]
async fn the_command_line_still_overrides_the_reloaded_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, "").unwrap();
    let source = ConfigSource {
        explicit: Some(path.clone()),
        overrides: mictop::reload::Overrides {
            interval: Some(Duration::from_millis(100)),
            no_mouse: true,
            no_color: true,
        },
    };
    let (config, theme) = source.load().unwrap();
    let mut app = app(config, theme);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let _watch = source.watch(tx).unwrap();
    std::fs::write(&path, "interval_ms = 2000\nmouse = true\ntheme = \"light\"\n").unwrap();
    let effects = next_reload(&mut rx, &mut app).await;
    assert!(!effects.contains(&Effect::SetMouse(true)), "{effects:?}");
    assert!(!app.mouse());
    assert_eq!(app.config().interval, Duration::from_millis(100));
    assert_eq!(app.theme().name, mictop::config::ThemeName::Mono);
}

#[test]
fn a_file_in_a_directory_that_does_not_exist_is_not_watched() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let source = ConfigSource {
        explicit: Some("/nonexistent/mictop/config.toml".into()),
        ..ConfigSource::default()
    };
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let err = rt.block_on(async { source.watch(tx).unwrap_err() });
    assert!(err.to_string().contains("/nonexistent/mictop"), "{err}");
}
