//! The card list: a full table for few cards, a compact grid for many.

use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Row, Table};

use crate::app::{App, Focus};
use crate::components::fleet::SortKey;
use crate::layout::grid_columns;
use crate::model::{CardView, OpStatus, devices_down, fmt_age, short_kind};
use crate::ui::{block, ellipsize, focused};

/// What a post code means (the codes micemu and the X100 bootstrap use).
#[must_use]
pub fn post_meaning(code: &str) -> &'static str {
    match code {
        "01" => "in reset",
        "12" => "bootstrap ready",
        "FF" => "card OS running",
        "E1" => "image rejected",
        c if c.len() == 2 && c.starts_with('2') => "booting",
        _ => "",
    }
}

/// The state text and style of a card.
#[must_use]
pub fn state_cell(app: &App, c: &CardView) -> (String, Style) {
    let t = app.theme();
    if app.driver_gone().is_some() {
        return ("gone".into(), t.error);
    }
    match (c.state, &c.state_error) {
        (_, Some(_)) => ("unreadable".into(), t.error),
        (Some(s), None) => (s.as_str().into(), t.state(s)),
        (None, None) => ("…".into(), t.dim),
    }
}

/// The time a card has been in its state (`≥` when it began before mictop
/// started); `-` while the driver is gone and the state unknown.
#[must_use]
pub fn age_cell(app: &App, c: &CardView) -> String {
    if app.driver_gone().is_some() {
        return "-".to_owned();
    }
    let (now, started) = app.fleet().clock();
    let (age, lower_bound) = c.age(now, started);
    format!("{}{}", if lower_bound { "≥" } else { "" }, fmt_age(age))
}

/// Short text for an operation.
#[must_use]
pub fn op_cell(app: &App, op: Option<&OpStatus>) -> (String, Style) {
    let t = app.theme();
    match op {
        None => (String::new(), t.dim),
        Some(o) => match &o.outcome {
            None => (format!("⟳ {}: {}", o.kind.verb(), o.phase), t.warn),
            Some(Ok(m)) => (format!("✓ {}: {m}", o.kind.verb()), t.ok),
            Some(Err(_)) => (format!("✗ {} failed", o.kind.verb()), t.error),
        },
    }
}

/// The `mpssd` column: the supervisor's state while it is not running the
/// card; while it is, `ok` or the devices that are down (`✗ net,con`).
#[must_use]
pub fn mpssd_cell(app: &App, c: &CardView) -> (String, Style) {
    let t = app.theme();
    let Some(s) = &c.supervision else {
        return (String::new(), t.dim);
    };
    match devices_down(s) {
        None => (
            s.supervisor.as_str().to_owned(),
            crate::ui::detail::supervisor_style(app, s.supervisor),
        ),
        Some(down) if down.is_empty() => (
            if s.devices.is_empty() { "no devices" } else { "ok" }.to_owned(),
            if s.devices.is_empty() { t.dim } else { t.ok },
        ),
        Some(down) => {
            let kinds: Vec<&str> = down.iter().map(|k| short_kind(k)).collect();
            (format!("✗ {}", kinds.join(",")), t.error)
        }
    }
}

pub fn draw(frame: &mut Frame<'_>, area: Rect, app: &App) {
    let t = app.theme();
    let (sort, reverse) = app.fleet().sort();
    let arrow = if reverse { "▲" } else { "▼" };
    let title = Line::from(vec![
        Span::styled(" cards ", t.title),
        Span::styled(
            format!(
                "{} · sort {}{arrow} · {} ",
                app.cards().len(),
                sort.as_str(),
                app.fleet().layout_mode().as_str()
            ),
            t.dim,
        ),
    ]);
    let blk = block(app, title, focused(app, Focus::Cards));
    let inner = blk.inner(area);
    frame.render_widget(blk, area);
    if app.cards().is_empty() {
        let msg = format!("no cards under {}", app.header().root);
        frame.render_widget(Paragraph::new(Span::styled(msg, t.dim)), inner);
        return;
    }
    if app.compact() {
        draw_grid(frame, inner, app);
    } else {
        draw_table(frame, inner, app);
    }
}

fn draw_table(frame: &mut Frame<'_>, area: Rect, app: &App) {
    let t = app.theme();
    let rows_visible = area.height.saturating_sub(1) as usize;
    let (sort, reverse) = app.fleet().sort();
    let arrow = if reverse { "▲" } else { "▼" };
    let head = |label: &str, key: Option<SortKey>| {
        if key == Some(sort) {
            format!("{label}{arrow}")
        } else {
            label.to_owned()
        }
    };
    // The mpssd column only when mpssd supervises a card shown.
    let mpssd = app.fleet().supervised();
    let mut headers = vec![
        String::new(),
        head("name", Some(SortKey::Name)),
        head("state", Some(SortKey::State)),
        head("status", Some(SortKey::Status)),
        head("family", Some(SortKey::Family)),
        "step".to_owned(),
        head("ip address", Some(SortKey::Ip)),
        head("in state", Some(SortKey::Age)),
        "post".to_owned(),
        "action".to_owned(),
    ];
    if mpssd {
        headers.insert(9, "mpssd".to_owned());
    }
    let header = Row::new(headers).style(t.column_header);
    let selected = app.fleet().selected_pos();
    let rows = app
        .fleet()
        .ordered()
        .skip(app.fleet().offset())
        .take(rows_visible)
        .map(|(pos, c)| {
            let info = c.info.as_ref();
            let (state, state_style) = state_cell(app, c);
            let status = c.shutdown_status().map_or("", |s| s.as_str());
            let status_style = match status {
                "nop" | "" => t.dim,
                "crashed" => t.error,
                _ => t.warn,
            };
            let age = age_cell(app, c);
            let (post, post_style) = match c.post.as_deref() {
                None => ("-".to_owned(), t.dim),
                Some(p) if c.booting() => (format!("{p} {}", post_meaning(p)), t.booting),
                Some(p) => (p.to_owned(), t.dim),
            };
            let (op, op_style) = op_cell(app, c.op.as_ref());
            let mut cells = vec![
                Line::from(Span::styled(if c.marked { "*" } else { " " }, t.marked)),
                Line::from(Span::styled(c.name.clone(), t.text)),
                Line::from(Span::styled(state, state_style)),
                Line::from(Span::styled(status, status_style)),
                Line::from(Span::styled(
                    info.and_then(|i| i.family.clone()).unwrap_or_default(),
                    t.text,
                )),
                Line::from(Span::styled(
                    info.and_then(|i| i.stepping.clone()).unwrap_or_default(),
                    t.text,
                )),
                Line::from(Span::styled(
                    info.and_then(|i| i.ipaddr)
                        .map(|a| a.to_string())
                        .unwrap_or_default(),
                    t.text,
                )),
                Line::from(Span::styled(age, t.text)),
                Line::from(Span::styled(post, post_style)),
                Line::from(Span::styled(op, op_style)),
            ];
            if mpssd {
                let (text, style) = mpssd_cell(app, c);
                cells.insert(9, Line::from(Span::styled(text, style)));
            }
            let row = Row::new(cells);
            if pos == selected {
                row.style(t.selected)
            } else {
                row
            }
        });
    let mut widths = vec![
        Constraint::Length(1),
        Constraint::Length(6),
        Constraint::Length(13),
        Constraint::Length(8),
        Constraint::Length(7),
        Constraint::Length(4),
        Constraint::Length(15),
        Constraint::Length(8),
        Constraint::Length(10),
        Constraint::Min(10),
    ];
    if mpssd {
        widths.insert(9, Constraint::Length(12));
    }
    frame.render_widget(Table::new(rows, widths).header(header).column_spacing(1), area);
}

fn draw_grid(frame: &mut Frame<'_>, area: Rect, app: &App) {
    let t = app.theme();
    let cols = grid_columns(area.width + 2);
    let rows_visible = area.height as usize;
    let mut lines = Vec::with_capacity(rows_visible);
    let selected = app.fleet().selected_pos();
    let ordered: Vec<&CardView> = app.fleet().ordered().map(|(_, c)| c).collect();
    for (r, row) in ordered
        .chunks(cols)
        .enumerate()
        .skip(app.fleet().offset())
        .take(rows_visible)
    {
        let mut spans = Vec::with_capacity(cols * 5);
        for (k, &c) in row.iter().enumerate() {
            let pos = r * cols + k;
            let (mut state, mut style) = state_cell(app, c);
            if c.booting() {
                state = "booting".into();
                style = t.booting;
            } else if state == "shutting_down" {
                state = "shutdown".into();
            } else if state == "reset_failed" {
                state = "rst-fail".into();
            }
            let down = c
                .supervision
                .as_ref()
                .and_then(devices_down)
                .is_some_and(|d| !d.is_empty());
            let op = match c.op.as_ref().map(|o| &o.outcome) {
                Some(None) => "⟳",
                Some(Some(Err(_))) => "✗",
                // A device of a running card is down.
                _ if down => "↓",
                _ => " ",
            };
            let sel = if pos == selected { t.selected } else { Style::new() };
            spans.push(Span::styled(
                if c.marked { "*" } else { " " },
                t.marked.patch(sel),
            ));
            spans.push(Span::styled(
                format!("{:<6} ", ellipsize(&c.name, 6)),
                t.text.patch(sel),
            ));
            spans.push(Span::styled(
                format!("{:<8}", ellipsize(&state, 8)),
                style.patch(sel),
            ));
            spans.push(Span::styled(op, t.warn.patch(sel)));
            spans.push(Span::raw(" "));
        }
        lines.push(Line::from(spans));
    }
    frame.render_widget(Paragraph::new(lines), area);
}
