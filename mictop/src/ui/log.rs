//! The log pane: the selected card's kernel log, levels coloured, with
//! follow/pause, level filter and search highlighting.

use libmic::MicState;
use libmic::attrs::escape_untrusted;
use libmic::klog::{format_timestamp, level_name};
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use crate::app::{App, Focus};
use crate::components::dialogs::Overlay;
use crate::components::log::LogLine;
use crate::layout::Zoom;
use crate::ui::{block, focused};

pub fn draw(frame: &mut Frame<'_>, area: Rect, app: &App) {
    let t = app.theme();
    let log = app.log();
    let name = app.selected_card().map_or("-", |c| c.name.as_str());
    let mut title = vec![
        Span::styled(format!(" log {name} "), t.title),
        if log.follow {
            Span::styled("following ", t.ok)
        } else {
            Span::styled("paused ", t.warn)
        },
    ];
    if log.max_level < 7 {
        title.push(Span::styled(format!("· {}+ ", level_name(log.max_level)), t.warn));
    }
    if let Some(q) = &log.search {
        title.push(Span::styled(format!("· /{} ", escape_untrusted(q)), t.key));
    }
    title.push(Span::styled(format!("· {} ", log.lines.len()), t.dim));
    let focus = focused(app, Focus::Log) || (app.zoom() == Zoom::Log && *app.overlay() == Overlay::None);
    let blk = block(app, Line::from(title), focus);
    let inner = blk.inner(area);
    frame.render_widget(blk, area);
    let height = inner.height as usize;
    if height == 0 {
        return;
    }

    let vis = log.visible();
    let mut lines: Vec<Line<'_>> = Vec::with_capacity(height);
    if let Some(e) = &log.error {
        lines.push(Line::from(Span::styled(escape_untrusted(e), t.warn)));
    }
    if vis.is_empty() && log.error.is_none() {
        let msg = match app.selected_card().and_then(|c| c.state) {
            _ if !log.lines.is_empty() => "(no lines at this level: press v to show more)".to_owned(),
            Some(MicState::Online | MicState::ShuttingDown) => "(waiting for the card log…)".to_owned(),
            Some(s) => format!("(no log: the card is {})", s.as_str()),
            None => "(no card)".to_owned(),
        };
        lines.push(Line::from(Span::styled(msg, t.dim)));
    }
    let room = height - lines.len();
    if let Some(bottom) = log.bottom(&vis) {
        let top = (bottom + 1).saturating_sub(room);
        for &i in &vis[top..=bottom] {
            lines.push(render_line(app, &log.lines[i].1));
        }
    }
    frame.render_widget(Paragraph::new(lines), inner);
}

fn render_line<'a>(app: &App, line: &'a LogLine) -> Line<'a> {
    let t = app.theme();
    let log = app.log();
    match line {
        LogLine::Marker(m) => Line::from(Span::styled(m.as_str(), t.warn)),
        LogLine::Record(r) => {
            let style = t.level(r.level);
            let mut spans = vec![
                Span::styled(format_timestamp(r.ts_nsec), t.dim),
                Span::styled(format!(" {:<6} ", level_name(r.level)), style),
            ];
            match log.search.as_deref() {
                Some(q) if log.matches(line) => highlight(&mut spans, &r.text, q, style, t.search_match),
                _ => spans.push(Span::styled(escape_untrusted(&r.text), style)),
            }
            Line::from(spans)
        }
    }
}

/// Splits `text` into spans with every (ASCII case-insensitive) match of
/// `q` in `hit` style.
fn highlight(spans: &mut Vec<Span<'_>>, text: &str, q: &str, style: Style, hit: Style) {
    let (h, n) = (text.as_bytes(), q.as_bytes());
    let mut start = 0;
    let mut i = 0;
    while !n.is_empty() && i + n.len() <= h.len() {
        if h[i..i + n.len()].eq_ignore_ascii_case(n)
            && text.is_char_boundary(i)
            && text.is_char_boundary(i + n.len())
        {
            if start < i {
                spans.push(Span::styled(escape_untrusted(&text[start..i]), style));
            }
            spans.push(Span::styled(escape_untrusted(&text[i..i + n.len()]), hit));
            i += n.len();
            start = i;
        } else {
            i += 1;
        }
    }
    if start < text.len() {
        spans.push(Span::styled(escape_untrusted(&text[start..]), style));
    }
}
