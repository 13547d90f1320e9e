//! The configuration: a TOML file (`$XDG_CONFIG_HOME/mictop/config.toml` or
//! `--config FILE`), then the command-line flags, then `NO_COLOR`. The
//! file is read again whenever it changes ([`crate::reload`]).
//!
//! ```toml
//! interval_ms = 500          # card log follow and boot progress
//! stats_interval_ms = 1000   # host CPU/memory
//! theme = "dark"             # dark, light, mono
//! mouse = true
//! layout = "auto"            # auto, full, compact
//! compact_threshold = 32     # auto: compact above this many cards
//! scrollback = 10000         # log lines kept
//! console_scrollback = 10000 # lines each attached console keeps (of its last 16 MiB)
//! action_timeout_secs = 300
//!
//! [keys]
//! boot = "b"
//! quit = ["q", "ctrl-c"]
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use serde::Deserialize;

/// A configuration that could not be used: the file and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct ConfigError {
    pub path: PathBuf,
    pub message: String,
}

/// The colour scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThemeName {
    Dark,
    Light,
    /// No colours (also what `NO_COLOR` selects).
    Mono,
}

impl ThemeName {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "dark" | "default" => Some(Self::Dark),
            "light" => Some(Self::Light),
            "mono" | "none" => Some(Self::Mono),
            _ => None,
        }
    }
}

/// How the card list is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayoutMode {
    /// Compact for many cards (or a small terminal), full otherwise.
    Auto,
    /// One table row per card with every column.
    Full,
    /// A grid of small cells, for 64–256 cards.
    Compact,
}

impl LayoutMode {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "auto" => Some(Self::Auto),
            "full" => Some(Self::Full),
            "compact" => Some(Self::Compact),
            _ => None,
        }
    }

    #[must_use]
    pub fn next(self) -> Self {
        match self {
            Self::Auto => Self::Full,
            Self::Full => Self::Compact,
            Self::Compact => Self::Auto,
        }
    }

    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Full => "full",
            Self::Compact => "compact",
        }
    }
}

/// Everything a key can be bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Command {
    Quit,
    Help,
    Up,
    Down,
    Left,
    Right,
    PageUp,
    PageDown,
    Top,
    Bottom,
    Focus,
    Zoom,
    Mark,
    MarkAll,
    UnmarkAll,
    Boot,
    Shutdown,
    Reset,
    Reboot,
    Sort,
    SortReverse,
    Follow,
    Search,
    NextMatch,
    PrevMatch,
    Level,
    Console,
    ConsoleWrite,
    ConsoleLeave,
    ConsolePrev,
    ConsoleNext,
    ConsoleClose,
    Layout,
    Mouse,
}

impl Command {
    /// Every command with its config name, default keys and help text, in
    /// the order the help overlay lists them.
    pub const ALL: &'static [(Command, &'static str, &'static [&'static str], &'static str)] = &[
        (
            Command::Up,
            "up",
            &["up", "k"],
            "select previous card / scroll the log or console up",
        ),
        (
            Command::Down,
            "down",
            &["down", "j"],
            "select next card / scroll the log or console down",
        ),
        (
            Command::Left,
            "left",
            &["left", "h"],
            "previous card (compact grid)",
        ),
        (
            Command::Right,
            "right",
            &["right", "l"],
            "next card (compact grid)",
        ),
        (Command::PageUp, "page_up", &["pageup", "ctrl-u"], "page up"),
        (
            Command::PageDown,
            "page_down",
            &["pagedown", "ctrl-d"],
            "page down",
        ),
        (Command::Top, "top", &["home", "g"], "first card / oldest line"),
        (
            Command::Bottom,
            "bottom",
            &["end", "G"],
            "last card / newest line",
        ),
        (
            Command::Focus,
            "focus",
            &["tab", "backtab"],
            "switch focus: cards <-> log (or console)",
        ),
        (
            Command::Zoom,
            "zoom",
            &["enter"],
            "zoom the focused pane (details, log or console)",
        ),
        (
            Command::Mark,
            "mark",
            &["space"],
            "mark / unmark the selected card",
        ),
        (Command::MarkAll, "mark_all", &["a"], "mark every card"),
        (Command::UnmarkAll, "unmark_all", &["A"], "clear all marks"),
        (
            Command::Boot,
            "boot",
            &["b"],
            "boot the marked (or selected) cards",
        ),
        (
            Command::Shutdown,
            "shutdown",
            &["s"],
            "shut down (card OS halts, then reset to offline)",
        ),
        (Command::Reset, "reset", &["r"], "reset to offline"),
        (Command::Reboot, "reboot", &["R"], "shut down or reset, then boot"),
        (Command::Sort, "sort", &["o"], "sort by the next column"),
        (
            Command::SortReverse,
            "sort_reverse",
            &["O"],
            "reverse the sort order",
        ),
        (Command::Follow, "follow", &["f"], "log: follow new lines / pause"),
        (Command::Search, "search", &["/"], "log: search"),
        (
            Command::NextMatch,
            "next_match",
            &["n"],
            "log: next (newer) match",
        ),
        (
            Command::PrevMatch,
            "prev_match",
            &["N"],
            "log: previous (older) match",
        ),
        (Command::Level, "level", &["v"], "log: cycle the level filter"),
        (
            Command::Console,
            "console",
            &["c"],
            "console: show the selected card's (attached read-only) / the log",
        ),
        (
            Command::ConsoleWrite,
            "console_write",
            &["w"],
            "console: take the write side and type into it",
        ),
        (
            Command::ConsoleLeave,
            "console_leave",
            &["ctrl-]"],
            "console: stop typing (gives the write side back)",
        ),
        (
            Command::ConsolePrev,
            "console_prev",
            &["["],
            "console: show the previous attached console",
        ),
        (
            Command::ConsoleNext,
            "console_next",
            &["]"],
            "console: show the next attached console",
        ),
        (
            Command::ConsoleClose,
            "console_close",
            &["C"],
            "console: detach the shown console",
        ),
        (Command::Layout, "layout", &["m"], "layout: auto, full, compact"),
        (Command::Mouse, "mouse", &["M"], "mouse on / off"),
        (Command::Help, "help", &["?", "f1"], "this help"),
        (Command::Quit, "quit", &["q", "ctrl-c"], "quit"),
    ];

    /// The moves that scroll a pane (or the selection).
    #[must_use]
    pub fn is_move(self) -> bool {
        matches!(
            self,
            Command::Up
                | Command::Down
                | Command::PageUp
                | Command::PageDown
                | Command::Top
                | Command::Bottom
        )
    }

    fn by_name(name: &str) -> Option<Command> {
        Self::ALL.iter().find(|(_, n, _, _)| *n == name).map(|(c, ..)| *c)
    }
}

/// One key with modifiers, as written in the config (`"ctrl-c"`, `"G"`,
/// `"pageup"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key {
    pub code: KeyCode,
    pub ctrl: bool,
    pub alt: bool,
}

impl Key {
    /// Parses `[ctrl-][alt-]NAME` where NAME is a single character or one
    /// of the named keys.
    pub fn parse(spec: &str) -> Result<Key, String> {
        let mut rest = spec;
        let (mut ctrl, mut alt) = (false, false);
        loop {
            let lower = rest.to_ascii_lowercase();
            if rest.chars().count() > 1 && lower.starts_with("ctrl-") {
                ctrl = true;
                rest = &rest[5..];
            } else if rest.chars().count() > 1 && lower.starts_with("alt-") {
                alt = true;
                rest = &rest[4..];
            } else {
                break;
            }
        }
        let mut chars = rest.chars();
        let code = match (chars.next(), chars.next()) {
            (None, _) => return Err(format!("{spec:?} names no key")),
            (Some(c), None) => KeyCode::Char(if ctrl { c.to_ascii_lowercase() } else { c }),
            _ => match rest.to_ascii_lowercase().as_str() {
                "enter" | "return" => KeyCode::Enter,
                "esc" | "escape" => KeyCode::Esc,
                "tab" => KeyCode::Tab,
                "backtab" | "shift-tab" => KeyCode::BackTab,
                "space" => KeyCode::Char(' '),
                "backspace" => KeyCode::Backspace,
                "delete" | "del" => KeyCode::Delete,
                "insert" | "ins" => KeyCode::Insert,
                "up" => KeyCode::Up,
                "down" => KeyCode::Down,
                "left" => KeyCode::Left,
                "right" => KeyCode::Right,
                "pageup" | "pgup" => KeyCode::PageUp,
                "pagedown" | "pgdn" => KeyCode::PageDown,
                "home" => KeyCode::Home,
                "end" => KeyCode::End,
                f if f.starts_with('f') && f[1..].parse::<u8>().is_ok_and(|n| (1..=12).contains(&n)) => {
                    KeyCode::F(f[1..].parse().unwrap_or(1))
                }
                _ => {
                    return Err(format!(
                        "{spec:?} is not a key (a character, or enter, esc, tab, backtab, space, \
                         backspace, delete, insert, up, down, left, right, pageup, pagedown, home, \
                         end, f1-f12, with optional ctrl- or alt-)"
                    ));
                }
            },
        };
        Ok(Key { code, ctrl, alt })
    }

    /// Whether the terminal event is this key. Shift is part of the
    /// character for character keys (`G`), so it is not compared there.
    #[must_use]
    pub fn matches(&self, ev: &KeyEvent) -> bool {
        let ctrl = ev.modifiers.contains(KeyModifiers::CONTROL);
        let alt = ev.modifiers.contains(KeyModifiers::ALT);
        if ctrl != self.ctrl || alt != self.alt {
            return false;
        }
        match (self.code, ev.code) {
            (KeyCode::Char(a), KeyCode::Char(b)) if self.ctrl => {
                ctrl_alias(a).eq_ignore_ascii_case(&ctrl_alias(b))
            }
            (a, b) => a == b,
        }
    }
}

/// Terminals send ctrl-\\, ctrl-], ctrl-^ and ctrl-_ as the bytes of
/// ctrl-4 to ctrl-7 (and crossterm reports them so).
fn ctrl_alias(c: char) -> char {
    match c {
        '4' => '\\',
        '5' => ']',
        '6' => '^',
        '7' => '_',
        c => c,
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.ctrl {
            f.write_str("ctrl-")?;
        }
        if self.alt {
            f.write_str("alt-")?;
        }
        match self.code {
            KeyCode::Char(' ') => f.write_str("space"),
            KeyCode::Char(c) => write!(f, "{c}"),
            KeyCode::Enter => f.write_str("enter"),
            KeyCode::Esc => f.write_str("esc"),
            KeyCode::Tab => f.write_str("tab"),
            KeyCode::BackTab => f.write_str("backtab"),
            KeyCode::Backspace => f.write_str("backspace"),
            KeyCode::Delete => f.write_str("delete"),
            KeyCode::Insert => f.write_str("insert"),
            KeyCode::Up => f.write_str("↑"),
            KeyCode::Down => f.write_str("↓"),
            KeyCode::Left => f.write_str("←"),
            KeyCode::Right => f.write_str("→"),
            KeyCode::PageUp => f.write_str("pgup"),
            KeyCode::PageDown => f.write_str("pgdn"),
            KeyCode::Home => f.write_str("home"),
            KeyCode::End => f.write_str("end"),
            KeyCode::F(n) => write!(f, "f{n}"),
            other => write!(f, "{other:?}"),
        }
    }
}

/// Key bindings: which keys run which command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyMap {
    bindings: Vec<(Key, Command)>,
}

impl Default for KeyMap {
    fn default() -> Self {
        let mut bindings = Vec::new();
        for (cmd, _, keys, _) in Command::ALL {
            for k in *keys {
                if let Ok(key) = Key::parse(k) {
                    bindings.push((key, *cmd));
                }
            }
        }
        Self { bindings }
    }
}

impl KeyMap {
    /// The command bound to a key event.
    #[must_use]
    pub fn command(&self, ev: &KeyEvent) -> Option<Command> {
        self.bindings.iter().find(|(k, _)| k.matches(ev)).map(|(_, c)| *c)
    }

    /// The keys bound to `cmd`, in binding order.
    #[must_use]
    pub fn keys_for(&self, cmd: Command) -> Vec<Key> {
        self.bindings
            .iter()
            .filter(|(_, c)| *c == cmd)
            .map(|(k, _)| *k)
            .collect()
    }

    /// The first key bound to `cmd`, for hints (`"?"` if none).
    #[must_use]
    pub fn hint(&self, cmd: Command) -> String {
        self.keys_for(cmd)
            .first()
            .map_or_else(|| "-".to_owned(), ToString::to_string)
    }

    /// Rebinds `cmd` to exactly `keys`; a key bound to another command
    /// moves to this one.
    fn rebind(&mut self, cmd: Command, keys: &[Key]) {
        self.bindings.retain(|(k, c)| *c != cmd && !keys.contains(k));
        self.bindings.extend(keys.iter().map(|k| (*k, cmd)));
    }
}

/// The effective configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Card log follow and boot-progress (post code) interval.
    pub interval: Duration,
    /// Host CPU/memory refresh interval.
    pub stats_interval: Duration,
    pub theme: ThemeName,
    pub mouse: bool,
    pub layout: LayoutMode,
    /// In `auto` layout, more cards than this get the compact grid.
    pub compact_threshold: usize,
    /// Log lines kept for the selected card.
    pub scrollback: usize,
    /// Lines of scrollback each attached console keeps.
    pub console_scrollback: usize,
    /// How long a lifecycle action may take before it is reported failed.
    pub action_timeout: Duration,
    pub keys: KeyMap,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            interval: Duration::from_millis(500),
            stats_interval: Duration::from_secs(1),
            theme: ThemeName::Dark,
            mouse: true,
            layout: LayoutMode::Auto,
            compact_threshold: 32,
            scrollback: 10_000,
            console_scrollback: 10_000,
            action_timeout: Duration::from_secs(300),
            keys: KeyMap::default(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    interval_ms: Option<u64>,
    stats_interval_ms: Option<u64>,
    theme: Option<String>,
    mouse: Option<bool>,
    layout: Option<String>,
    compact_threshold: Option<usize>,
    scrollback: Option<usize>,
    console_scrollback: Option<usize>,
    action_timeout_secs: Option<u64>,
    #[serde(default)]
    keys: BTreeMap<String, OneOrMany>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// Shortest accepted interval: anything quicker only burns CPU.
pub const MIN_INTERVAL: Duration = Duration::from_millis(50);

impl Config {
    /// Parses a config file's contents; `path` is for messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let err = |message: String| ConfigError {
            path: path.to_owned(),
            message,
        };
        let file: FileConfig = toml::from_str(text).map_err(|e| err(e.to_string().trim_end().to_owned()))?;
        let mut c = Config::default();
        let interval = |key: &str, ms: u64| {
            let d = Duration::from_millis(ms);
            if d < MIN_INTERVAL {
                Err(err(format!("key `{key}`: {ms} ms is below the minimum of 50 ms")))
            } else {
                Ok(d)
            }
        };
        if let Some(ms) = file.interval_ms {
            c.interval = interval("interval_ms", ms)?;
        }
        if let Some(ms) = file.stats_interval_ms {
            c.stats_interval = interval("stats_interval_ms", ms)?;
        }
        if let Some(t) = file.theme {
            c.theme = ThemeName::parse(&t).ok_or_else(|| {
                err(format!(
                    "key `theme`: unknown theme {t:?} (expected dark, light or mono)"
                ))
            })?;
        }
        if let Some(m) = file.mouse {
            c.mouse = m;
        }
        if let Some(l) = file.layout {
            c.layout = LayoutMode::parse(&l).ok_or_else(|| {
                err(format!(
                    "key `layout`: unknown layout {l:?} (expected auto, full or compact)"
                ))
            })?;
        }
        if let Some(n) = file.compact_threshold {
            c.compact_threshold = n;
        }
        if let Some(n) = file.scrollback {
            if n == 0 {
                return Err(err("key `scrollback`: must be at least 1".to_owned()));
            }
            c.scrollback = n;
        }
        if let Some(n) = file.console_scrollback {
            c.console_scrollback = n;
        }
        if let Some(s) = file.action_timeout_secs {
            if s == 0 {
                return Err(err("key `action_timeout_secs`: must be at least 1".to_owned()));
            }
            c.action_timeout = Duration::from_secs(s);
        }
        for (name, spec) in &file.keys {
            let cmd = Command::by_name(name).ok_or_else(|| {
                let known: Vec<&str> = Command::ALL.iter().map(|(_, n, _, _)| *n).collect();
                err(format!(
                    "key `keys.{name}`: no such command (commands: {})",
                    known.join(", ")
                ))
            })?;
            let specs = match spec {
                OneOrMany::One(s) => std::slice::from_ref(s),
                OneOrMany::Many(v) => v.as_slice(),
            };
            let keys = specs
                .iter()
                .map(|s| Key::parse(s))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| err(format!("key `keys.{name}`: {e}")))?;
            c.keys.rebind(cmd, &keys);
        }
        Ok(c)
    }

    /// The default file: `$XDG_CONFIG_HOME/mictop/config.toml`, else
    /// `$HOME/.config/mictop/config.toml`.
    #[must_use]
    pub fn default_path() -> Option<PathBuf> {
        let base = std::env::var_os("XDG_CONFIG_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME")
                    .filter(|v| !v.is_empty())
                    .map(|h| PathBuf::from(h).join(".config"))
            })?;
        Some(base.join("mictop").join("config.toml"))
    }

    /// The file the configuration is read from: `explicit`, else the
    /// default file (which may not exist).
    #[must_use]
    pub fn path(explicit: Option<&Path>) -> Option<PathBuf> {
        explicit.map(Path::to_owned).or_else(Self::default_path)
    }

    /// Loads `explicit` (which must exist), or the default file if it
    /// exists, or the defaults.
    pub fn load(explicit: Option<&Path>) -> Result<Config, ConfigError> {
        let required = explicit.is_some();
        let Some(path) = Self::path(explicit) else {
            return Ok(Config::default());
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => Config::parse(&text, &path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => Ok(Config::default()),
            Err(e) => Err(ConfigError {
                path,
                message: format!("cannot read the config file: {e}"),
            }),
        }
    }
}

/// Parses an interval flag: `500ms`, `2s`, `1.5s` or plain milliseconds.
pub fn parse_interval(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let bad = || format!("{s:?} is not an interval (examples: 500ms, 2s, 250)");
    let d = if let Some(ms) = s.strip_suffix("ms") {
        Duration::from_millis(ms.trim().parse().map_err(|_| bad())?)
    } else if let Some(secs) = s.strip_suffix('s') {
        let v: f64 = secs.trim().parse().map_err(|_| bad())?;
        if !(0.0..=86_400.0).contains(&v) {
            return Err(bad());
        }
        Duration::from_secs_f64(v)
    } else {
        Duration::from_millis(s.parse().map_err(|_| bad())?)
    };
    if d < MIN_INTERVAL {
        return Err(format!("{s:?} is below the minimum interval of 50ms"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, Path::new("/cfg/config.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_values() {
        let c = parse("").unwrap();
        assert_eq!(c.interval, Duration::from_millis(500));
        let c = parse(
            "interval_ms = 250\ntheme = \"mono\"\nmouse = false\nlayout = \"compact\"\n\
             [keys]\nboot = \"B\"\nquit = [\"x\", \"ctrl-q\"]\n",
        )
        .unwrap();
        assert_eq!(c.interval, Duration::from_millis(250));
        assert_eq!(c.theme, ThemeName::Mono);
        assert!(!c.mouse);
        assert_eq!(c.layout, LayoutMode::Compact);
        let key = |code, m| KeyEvent::new(code, m);
        assert_eq!(
            c.keys.command(&key(KeyCode::Char('B'), KeyModifiers::SHIFT)),
            Some(Command::Boot)
        );
        assert_eq!(c.keys.command(&key(KeyCode::Char('b'), KeyModifiers::NONE)), None);
        assert_eq!(
            c.keys.command(&key(KeyCode::Char('q'), KeyModifiers::CONTROL)),
            Some(Command::Quit)
        );
        assert_eq!(c.keys.command(&key(KeyCode::Char('q'), KeyModifiers::NONE)), None);
        assert_eq!(
            c.keys.command(&key(KeyCode::Char('x'), KeyModifiers::NONE)),
            Some(Command::Quit)
        );
    }

    #[test]
    fn errors_name_file_and_key() {
        let e = parse("theme = \"neon\"").unwrap_err();
        assert!(e.starts_with("/cfg/config.toml: key `theme`"), "{e}");
        let e = parse("[keys]\nlaunch = \"l\"").unwrap_err();
        assert!(e.contains("keys.launch") && e.contains("no such command"), "{e}");
        let e = parse("[keys]\nboot = \"ctrl-\"").unwrap_err();
        assert!(e.contains("keys.boot"), "{e}");
        let e = parse("interval_ms = 1").unwrap_err();
        assert!(e.contains("interval_ms"), "{e}");
        let e = parse("refresh = 3").unwrap_err();
        assert!(e.contains("/cfg/config.toml") && e.contains("refresh"), "{e}");
        let e = parse("interval_ms = \"fast\"").unwrap_err();
        assert!(e.contains("interval_ms"), "{e}");
    }

    #[test]
    fn key_specs() {
        assert_eq!(Key::parse("ctrl-c").unwrap().to_string(), "ctrl-c");
        assert_eq!(Key::parse("-").unwrap().code, KeyCode::Char('-'));
        assert_eq!(Key::parse("F5").unwrap().code, KeyCode::F(5));
        assert_eq!(Key::parse("space").unwrap().code, KeyCode::Char(' '));
        assert!(Key::parse("").is_err());
        assert!(Key::parse("hyper-x").is_err());
        assert!(Key::parse("f13").is_err());
        // ctrl-] arrives as ctrl-5 (its byte, 0x1d).
        let esc = Key::parse("ctrl-]").unwrap();
        assert!(esc.matches(&KeyEvent::new(KeyCode::Char('5'), KeyModifiers::CONTROL)));
        assert!(esc.matches(&KeyEvent::new(KeyCode::Char(']'), KeyModifiers::CONTROL)));
        assert!(!esc.matches(&KeyEvent::new(KeyCode::Char(']'), KeyModifiers::NONE)));
    }

    #[test]
    fn intervals() {
        assert_eq!(parse_interval("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_interval("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_interval("250"), Ok(Duration::from_millis(250)));
        assert!(parse_interval("10ms").is_err());
        assert!(parse_interval("soon").is_err());
    }
}
