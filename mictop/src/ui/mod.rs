//! Drawing: a pure function of the application's state into a frame, one
//! module per component, placed by [`crate::layout`]. Nothing here changes
//! state, and nothing in the application depends on this module.

pub mod console;
pub mod detail;
pub mod dialog;
pub mod header;
pub mod help;
pub mod log;
pub mod table;

use libmic::attrs::escape_untrusted;
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, BorderType, Paragraph};

use crate::app::{App, Focus};
use crate::components::dialogs::Overlay;
use crate::config::Command;
use crate::model::OpStatus;

/// Draws the whole screen.
pub fn draw(frame: &mut Frame<'_>, app: &App) {
    let areas = app.areas_in(frame.area());
    header::draw(frame, areas.header, app);
    if let Some(r) = areas.cards {
        table::draw(frame, r, app);
    }
    if let Some(r) = areas.detail {
        detail::draw(frame, r, app);
    }
    if let Some(r) = areas.log {
        log::draw(frame, r, app);
    }
    if let Some(r) = areas.console {
        console::draw(frame, r, app);
    }
    draw_footer(frame, areas.footer, app);
    match app.overlay() {
        Overlay::None | Overlay::Search { .. } => {}
        Overlay::Help { scroll } => help::draw(frame, app, *scroll),
        Overlay::Confirm { kind, ids } => dialog::draw_confirm(frame, app, *kind, ids),
        Overlay::Errors => dialog::draw_errors(frame, app),
    }
}

/// A bordered block, highlighted when focused.
#[must_use]
pub fn block<'a>(app: &App, title: Line<'a>, focused: bool) -> Block<'a> {
    Block::bordered()
        .border_type(BorderType::Rounded)
        .border_style(if focused {
            app.theme().border_focus
        } else {
            app.theme().border
        })
        .title(title)
}

/// Whether a pane has the focus.
#[must_use]
pub fn focused(app: &App, pane: Focus) -> bool {
    app.focus() == pane && *app.overlay() == Overlay::None
}

fn draw_footer(frame: &mut Frame<'_>, area: Rect, app: &App) {
    let t = app.theme();
    let line = if let Overlay::Search { input } = app.overlay() {
        Line::from(vec![
            Span::styled(" search log: /", t.key),
            Span::styled(input.clone(), t.text),
            Span::styled("█", t.text),
            Span::styled("   enter: find  esc: cancel", t.dim),
        ])
    } else if let Some(s) = app.status() {
        Line::from(Span::styled(format!(" {s}"), t.text))
    } else if let Some(c) = app.consoles().shown().filter(|_| app.consoles().typing()) {
        Line::from(vec![
            Span::styled(format!(" typing into {}'s console:", c.name), t.warn),
            Span::styled(" every key is the card's but ", t.dim),
            Span::styled(app.config().keys.hint(Command::ConsoleLeave), t.key),
            Span::styled(", which stops typing", t.dim),
        ])
    } else if let Some(e) = app.config_error() {
        Line::from(vec![
            Span::styled(" ⚠ config not loaded", t.error),
            Span::styled(" (the previous one stays in force): ", t.dim),
            Span::styled(escape_untrusted(e), t.warn),
        ])
    } else {
        let busy = app
            .cards()
            .iter()
            .filter(|c| c.op.as_ref().is_some_and(OpStatus::running))
            .count();
        let mut spans = Vec::new();
        if busy > 0 {
            spans.push(Span::styled(format!(" {busy} action(s) running │"), t.warn));
        }
        let k = &app.config().keys;
        let console = app.consoles().visible() && app.focus() == Focus::Console;
        let hints: &[(Command, &str)] = if console {
            &[
                (Command::ConsoleWrite, "type"),
                (Command::ConsolePrev, "prev"),
                (Command::ConsoleNext, "next"),
                (Command::ConsoleClose, "detach"),
                (Command::Console, "log"),
                (Command::Up, "scrollback"),
                (Command::Focus, "focus"),
                (Command::Zoom, "zoom"),
                (Command::Help, "help"),
                (Command::Quit, "quit"),
            ]
        } else {
            &[
                (Command::Help, "help"),
                (Command::Boot, "boot"),
                (Command::Shutdown, "shutdown"),
                (Command::Reset, "reset"),
                (Command::Reboot, "reboot"),
                (Command::Mark, "mark"),
                (Command::Focus, "focus"),
                (Command::Zoom, "zoom"),
                (Command::Search, "search"),
                (Command::Console, "console"),
                (Command::Quit, "quit"),
            ]
        };
        for &(cmd, label) in hints {
            spans.push(Span::styled(format!(" {}", k.hint(cmd)), t.key));
            spans.push(Span::styled(format!(" {label}"), t.dim));
        }
        Line::from(spans)
    };
    frame.render_widget(Paragraph::new(line), area);
}

/// A rectangle of at most `w`×`h` centred in `area`.
#[must_use]
pub fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let w = w.min(area.width);
    let h = h.min(area.height);
    Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    )
}

/// `s` cut to `max` characters with an ellipsis.
#[must_use]
pub fn ellipsize(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else if max == 0 {
        String::new()
    } else {
        let mut out: String = s.chars().take(max - 1).collect();
        out.push('…');
        out
    }
}

/// A `label  value` line for the detail pane.
#[must_use]
pub fn field<'a>(app: &App, label: &str, value: impl Into<String>, style: Style) -> Line<'a> {
    Line::from(vec![
        Span::styled(format!("{label:<16}"), app.theme().dim),
        Span::styled(value.into(), style),
    ])
}
