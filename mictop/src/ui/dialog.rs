//! Dialogs: the confirmation before a lifecycle action, and the errors
//! actions reported.

use ratatui::Frame;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph, Wrap};

use crate::app::App;
use crate::model::OpKind;
use crate::ui::{block, centered, ellipsize};
use libmic::attrs::escape_untrusted;

pub fn draw_confirm(frame: &mut Frame<'_>, app: &App, kind: OpKind, ids: &[u32]) {
    let t = app.theme();
    let names: Vec<String> = ids.iter().map(|id| format!("mic{id}")).collect();
    let verb = kind.verb();
    let mut capitalised = verb.to_owned();
    capitalised[..1].make_ascii_uppercase();
    let what = if ids.len() == 1 {
        names[0].clone()
    } else {
        format!("{} cards: {}", ids.len(), ellipsize(&names.join(", "), 120))
    };
    let lines = vec![
        Line::from(vec![
            Span::styled(format!("{capitalised} "), t.title),
            Span::styled(format!("{what}?"), t.text),
        ]),
        Line::default(),
        Line::from(Span::styled(kind.explain(), t.dim)),
        Line::default(),
        Line::from(vec![
            Span::styled("  y", t.key),
            Span::styled(format!(" {verb}     "), t.text),
            Span::styled("n", t.key),
            Span::styled(" cancel", t.text),
        ]),
    ];
    let area = centered(frame.area(), 64, 9);
    frame.render_widget(Clear, area);
    let title = Line::from(Span::styled(format!(" confirm {verb} "), t.title));
    frame.render_widget(
        Paragraph::new(lines)
            .block(block(app, title, true))
            .wrap(Wrap { trim: false }),
        area,
    );
}

pub fn draw_errors(frame: &mut Frame<'_>, app: &App) {
    let t = app.theme();
    let mut lines: Vec<Line<'_>> = app
        .errors()
        .iter()
        .rev()
        .take(20)
        .map(|e| Line::from(Span::styled(format!("• {}", escape_untrusted(e)), t.error)))
        .collect();
    lines.push(Line::default());
    lines.push(Line::from(vec![
        Span::styled("  enter", t.key),
        Span::styled("/", t.dim),
        Span::styled("esc", t.key),
        Span::styled(" dismiss", t.text),
    ]));
    let h = (lines.len() as u16).saturating_mul(2).min(24) + 2;
    let area = centered(frame.area(), 76, h);
    frame.render_widget(Clear, area);
    let title = Line::from(Span::styled(
        format!(" {} error(s) ", app.errors().len()),
        t.error,
    ));
    frame.render_widget(
        Paragraph::new(lines)
            .block(block(app, title, true))
            .wrap(Wrap { trim: false }),
        area,
    );
}
