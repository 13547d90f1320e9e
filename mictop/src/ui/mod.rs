//! Drawing: a pure function of [`App`] state into a frame. One module per
//! component.

pub mod detail;
pub mod dialog;
pub mod header;
pub mod help;
pub mod log;
pub mod table;
pub mod theme;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, BorderType, Paragraph};

use crate::app::{App, Focus, OpStatus, Overlay, Zoom};
use crate::config::Command;

/// Where each component goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Areas {
    pub header: Rect,
    pub cards: Option<Rect>,
    pub detail: Option<Rect>,
    pub log: Option<Rect>,
    pub footer: Rect,
}

/// Width the detail pane takes beside the log.
const DETAIL_WIDTH: u16 = 46;

/// Lays out the screen for `app`.
#[must_use]
pub fn layout(area: Rect, app: &App) -> Areas {
    let [header, body, footer] =
        Layout::vertical([Constraint::Length(2), Constraint::Min(0), Constraint::Length(1)]).areas(area);
    let mut areas = Areas {
        header,
        footer,
        ..Areas::default()
    };
    match app.zoom {
        Zoom::Detail => areas.detail = Some(body),
        Zoom::Log => areas.log = Some(body),
        Zoom::None => {
            let count = app.cards.len().max(1);
            let wanted = if app.compact() {
                count.div_ceil(table::grid_columns(body.width)) + 2
            } else {
                count + 3
            };
            let most = (body.height as usize * 3 / 5).max(5);
            let height = wanted.min(most).min(body.height as usize) as u16;
            let [cards, bottom] =
                Layout::vertical([Constraint::Length(height), Constraint::Min(0)]).areas(body);
            areas.cards = Some(cards);
            if bottom.height >= 3 {
                if bottom.width >= DETAIL_WIDTH + 40 {
                    let [detail, log] =
                        Layout::horizontal([Constraint::Length(DETAIL_WIDTH), Constraint::Min(0)])
                            .areas(bottom);
                    areas.detail = Some(detail);
                    areas.log = Some(log);
                } else {
                    areas.log = Some(bottom);
                }
            }
        }
    }
    areas
}

/// Draws the whole screen.
pub fn draw(frame: &mut Frame<'_>, app: &App) {
    let areas = layout(frame.area(), app);
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
    draw_footer(frame, areas.footer, app);
    match &app.overlay {
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
            app.theme.border_focus
        } else {
            app.theme.border
        })
        .title(title)
}

/// Whether a pane has the focus.
#[must_use]
pub fn focused(app: &App, pane: Focus) -> bool {
    app.focus == pane && app.overlay == Overlay::None
}

fn draw_footer(frame: &mut Frame<'_>, area: Rect, app: &App) {
    let t = &app.theme;
    let line = if let Overlay::Search { input } = &app.overlay {
        Line::from(vec![
            Span::styled(" search log: /", t.key),
            Span::styled(input.clone(), t.text),
            Span::styled("█", t.text),
            Span::styled("   enter: find  esc: cancel", t.dim),
        ])
    } else if let Some(s) = &app.status {
        Line::from(Span::styled(format!(" {s}"), t.text))
    } else {
        let busy = app
            .cards
            .iter()
            .filter(|c| c.op.as_ref().is_some_and(OpStatus::running))
            .count();
        let mut spans = Vec::new();
        if busy > 0 {
            spans.push(Span::styled(format!(" {busy} action(s) running │"), t.warn));
        }
        let k = &app.config.keys;
        for (cmd, label) in [
            (Command::Help, "help"),
            (Command::Boot, "boot"),
            (Command::Shutdown, "shutdown"),
            (Command::Reset, "reset"),
            (Command::Reboot, "reboot"),
            (Command::Mark, "mark"),
            (Command::Focus, "focus"),
            (Command::Zoom, "zoom"),
            (Command::Search, "search"),
            (Command::Follow, "follow"),
            (Command::Quit, "quit"),
        ] {
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
        Span::styled(format!("{label:<16}"), app.theme.dim),
        Span::styled(value.into(), style),
    ])
}
