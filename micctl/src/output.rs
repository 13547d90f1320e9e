//! Human tables, colour, and the JSON envelope every `--json` output uses.

use std::io::{self, IsTerminal as _, Write as _};

use libmic::{MicState, MicStatus};
use serde_json::{Map, Value, json};

use crate::cli::ColorWhen;

/// The version of the JSON output, in every document and every JSON Lines
/// record. Bumped only for incompatible changes; new fields may be added
/// without a bump (consumers must ignore fields and record types they do
/// not know).
pub const SCHEMA_VERSION: u32 = 1;

/// Whether human output is coloured: `--color`, then `NO_COLOR` (set and
/// non-empty disables), `TERM=dumb`, and whether stdout is a terminal.
#[must_use]
pub fn use_color(when: ColorWhen) -> bool {
    match when {
        ColorWhen::Always => true,
        ColorWhen::Never => false,
        ColorWhen::Auto => {
            std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                && std::env::var_os("TERM").is_none_or(|t| t != "dumb")
                && io::stdout().is_terminal()
        }
    }
}

/// An ANSI style.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Plain,
    Bold,
    Dim,
    Red,
    BoldRed,
    Green,
    Yellow,
    Blue,
}

impl Style {
    fn code(self) -> &'static str {
        match self {
            Style::Plain => "",
            Style::Bold => "\x1b[1m",
            Style::Dim => "\x1b[2m",
            Style::Red => "\x1b[31m",
            Style::BoldRed => "\x1b[1;31m",
            Style::Green => "\x1b[32m",
            Style::Yellow => "\x1b[33m",
            Style::Blue => "\x1b[34m",
        }
    }

    /// `text` in this style if `color`, else as is.
    #[must_use]
    pub fn paint(self, text: &str, color: bool) -> String {
        if !color || self == Style::Plain || text.is_empty() {
            text.to_owned()
        } else {
            format!("{}{text}\x1b[0m", self.code())
        }
    }
}

/// The colour of a state.
#[must_use]
pub fn state_style(s: MicState) -> Style {
    match s {
        MicState::Offline => Style::Plain,
        MicState::Online => Style::Green,
        MicState::ShuttingDown => Style::Yellow,
        MicState::ResetFailed => Style::BoldRed,
    }
}

/// The colour of a shutdown status.
#[must_use]
pub fn status_style(s: MicStatus) -> Style {
    match s {
        MicStatus::Crashed => Style::BoldRed,
        MicStatus::Nop => Style::Plain,
        _ => Style::Yellow,
    }
}

/// The colour of a kernel log level (dmesg's choices).
#[must_use]
pub fn level_style(level: u8) -> Style {
    match level {
        0..=2 => Style::BoldRed,
        3 => Style::Red,
        4 => Style::Yellow,
        5 => Style::Bold,
        7 => Style::Dim,
        _ => Style::Plain,
    }
}

/// One table cell: its text and its style.
#[derive(Debug, Clone)]
pub struct Cell {
    pub text: String,
    pub style: Style,
    /// `text` already coloured in parts (its width is still `text`'s).
    pub painted: Option<String>,
}

impl Cell {
    #[must_use]
    pub fn new(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            style: Style::Plain,
            painted: None,
        }
    }

    #[must_use]
    pub fn styled(text: impl Into<String>, style: Style) -> Self {
        Self {
            text: text.into(),
            style,
            painted: None,
        }
    }
}

/// Renders a table: a header row, then rows, columns padded to the widest
/// cell, two spaces apart, no trailing spaces.
#[must_use]
pub fn table(headers: &[&str], rows: &[Vec<Cell>], color: bool) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, c) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.text.chars().count());
            }
        }
    }
    let mut out = String::new();
    let header: Vec<Cell> = headers.iter().map(|h| Cell::styled(*h, Style::Bold)).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, c) in row.iter().enumerate() {
            let last = i + 1 == row.len();
            match &c.painted {
                Some(p) if color => line.push_str(p),
                _ => line.push_str(&c.style.paint(&c.text, color)),
            }
            if !last {
                let pad = widths[i].saturating_sub(c.text.chars().count()) + 2;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// A JSON document: `{"schema_version": 1, "command": ..., ...fields}`.
#[must_use]
pub fn document(command: &str, fields: Value) -> Value {
    envelope("command", command, fields)
}

/// A JSON Lines record: `{"schema_version": 1, "type": ..., ...fields}`.
#[must_use]
pub fn record(kind: &str, fields: Value) -> Value {
    envelope("type", kind, fields)
}

/// `{"schema_version": 1, key: name, ...fields}`.
fn envelope(key: &str, name: &str, fields: Value) -> Value {
    let mut m = Map::new();
    m.insert("schema_version".into(), json!(SCHEMA_VERSION));
    m.insert(key.into(), json!(name));
    if let Value::Object(f) = fields {
        m.extend(f);
    }
    Value::Object(m)
}

/// Prints a value as one line of JSON on stdout and flushes (so streams
/// reach a pipe at once).
pub fn print_json(v: &Value) -> io::Result<()> {
    let mut out = io::stdout().lock();
    serde_json::to_writer(&mut out, v)?;
    out.write_all(b"\n")?;
    out.flush()
}

/// Prints text on stdout and flushes.
pub fn print_text(s: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(s.as_bytes())?;
    out.flush()
}

/// Seconds as a short human duration: `850ms`, `12.3s`, `4m05s`, `2h03m`,
/// `3d04h`.
#[must_use]
pub fn human_duration(secs: f64) -> String {
    if secs < 1.0 {
        return format!("{}ms", (secs * 1000.0).round() as u64);
    }
    if secs < 60.0 {
        return format!("{secs:.1}s");
    }
    let s = secs as u64;
    match s {
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, (s / 60) % 60),
        _ => format!("{}d{:02}h", s / 86400, (s / 3600) % 24),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables() {
        let rows = vec![
            vec![Cell::new("mic0"), Cell::new("online")],
            vec![Cell::new("mic10"), Cell::new("")],
        ];
        assert_eq!(
            table(&["CARD", "STATE"], &rows, false),
            "CARD   STATE\nmic0   online\nmic10\n"
        );
        assert!(table(&["A"], &[], true).contains("\x1b[1mA\x1b[0m"));
    }

    #[test]
    fn durations() {
        assert_eq!(human_duration(0.25), "250ms");
        assert_eq!(human_duration(12.34), "12.3s");
        assert_eq!(human_duration(245.0), "4m05s");
        assert_eq!(human_duration(7380.0), "2h03m");
        assert_eq!(human_duration(273_600.0), "3d04h");
    }

    #[test]
    fn envelope() {
        let d = document("status", json!({"cards": []}));
        assert_eq!(d, json!({"schema_version": 1, "command": "status", "cards": []}));
        let r = record("state", json!({"card": "mic0"}));
        assert_eq!(r["type"], "state");
        assert_eq!(r["schema_version"], 1);
    }
}
