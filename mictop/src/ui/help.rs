//! The help overlay: every key binding (as configured) and what it does.

use ratatui::Frame;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph};

use crate::app::App;
use crate::config::Command;
use crate::ui::{block, centered};

pub fn draw(frame: &mut Frame<'_>, app: &App, scroll: u16) {
    let t = app.theme();
    let mut lines = Vec::new();
    for (cmd, _, _, help) in Command::ALL {
        let keys: Vec<String> = app
            .config()
            .keys
            .keys_for(*cmd)
            .iter()
            .map(ToString::to_string)
            .collect();
        lines.push(Line::from(vec![
            Span::styled(format!("  {:<16}", keys.join(" ")), t.key),
            Span::styled(*help, t.text),
        ]));
    }
    lines.push(Line::default());
    for (k, help) in [
        ("esc", "close a dialog or zoom; clear the search, then the marks"),
        ("y / n", "confirm / cancel an action"),
        (
            "mouse",
            "click selects a card or focuses a pane; the wheel scrolls",
        ),
    ] {
        lines.push(Line::from(vec![
            Span::styled(format!("  {k:<16}"), t.key),
            Span::styled(help, t.text),
        ]));
    }
    lines.push(Line::default());
    lines.push(Line::from(Span::styled(
        "  Keys, theme and intervals: ~/.config/mictop/config.toml, read again when saved.",
        t.dim,
    )));
    let h = lines.len() as u16 + 2;
    let area = centered(frame.area(), 84, h);
    frame.render_widget(Clear, area);
    let title = Line::from(vec![
        Span::styled(" mictop help ", t.title),
        Span::styled("(esc closes) ", t.dim),
    ]);
    frame.render_widget(
        Paragraph::new(lines)
            .block(block(app, title, true))
            .scroll((scroll, 0)),
        area,
    );
}
