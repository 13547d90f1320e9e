//! The console pane: the shown console's terminal screen (its emulator's
//! cells, colours and attributes as the card set them, the cursor where
//! the card put it), the attached consoles as tabs, and whether mictop is
//! typing into it.

use ratatui::Frame;
use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Widget};

use crate::app::{App, Focus};
use crate::components::console::{ConsoleView, Consoles};
use crate::components::dialogs::Overlay;
use crate::config::Command;
use crate::console::Access;
use crate::layout::Zoom;
use crate::ui::block;

/// A terminal emulator's screen as a widget.
#[derive(Debug)]
pub struct TermView<'a> {
    pub screen: &'a vt100::Screen,
    /// Draw the cursor (the pane is focused and shows the live screen).
    pub cursor: bool,
    /// Keep the card's colours (not under the mono theme / `NO_COLOR`).
    pub colours: bool,
}

/// A `vt100` colour as ratatui's: the 16 named colours by name (so a
/// 16-colour terminal shows them), the rest as they are.
#[must_use]
pub fn colour(c: vt100::Color) -> Color {
    match c {
        vt100::Color::Default => Color::Reset,
        vt100::Color::Idx(i) => match i {
            0 => Color::Black,
            1 => Color::Red,
            2 => Color::Green,
            3 => Color::Yellow,
            4 => Color::Blue,
            5 => Color::Magenta,
            6 => Color::Cyan,
            7 => Color::Gray,
            8 => Color::DarkGray,
            9 => Color::LightRed,
            10 => Color::LightGreen,
            11 => Color::LightYellow,
            12 => Color::LightBlue,
            13 => Color::LightMagenta,
            14 => Color::LightCyan,
            15 => Color::White,
            i => Color::Indexed(i),
        },
        vt100::Color::Rgb(r, g, b) => Color::Rgb(r, g, b),
    }
}

fn cell_style(cell: &vt100::Cell, colours: bool) -> Style {
    let mut style = Style::new();
    if colours {
        style = style.fg(colour(cell.fgcolor())).bg(colour(cell.bgcolor()));
    }
    let mut m = Modifier::empty();
    for (on, bit) in [
        (cell.bold(), Modifier::BOLD),
        (cell.dim(), Modifier::DIM),
        (cell.italic(), Modifier::ITALIC),
        (cell.underline(), Modifier::UNDERLINED),
        (cell.inverse(), Modifier::REVERSED),
    ] {
        if on {
            m |= bit;
        }
    }
    style.add_modifier(m)
}

/// No contents, default colours, no attributes.
fn is_blank(cell: &vt100::Cell) -> bool {
    !cell.has_contents()
        && cell.fgcolor() == vt100::Color::Default
        && cell.bgcolor() == vt100::Color::Default
        && !(cell.bold() || cell.dim() || cell.italic() || cell.underline() || cell.inverse())
}

impl Widget for TermView<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let (rows, cols) = self.screen.size();
        let (rows, cols) = (rows.get().min(area.height), cols.get().min(area.width));
        for r in 0..rows {
            for c in 0..cols {
                let Some(cell) = self.screen.cell(r, c) else {
                    continue;
                };
                // A blank cell in the default colours is what the buffer
                // holds already: most of a console's screen, not redrawn.
                if cell.is_wide_continuation() || is_blank(cell) {
                    continue;
                }
                let out = &mut buf[(area.x + c, area.y + r)];
                out.set_symbol(if cell.has_contents() { cell.contents() } else { " " });
                out.set_style(cell_style(cell, self.colours));
            }
        }
        if self.cursor && !self.screen.hide_cursor() && self.screen.scrollback() == 0 {
            let (r, c) = self.screen.cursor_position();
            if r < rows && c < cols {
                let out = &mut buf[(area.x + c, area.y + r)];
                out.set_style(Style::new().add_modifier(Modifier::REVERSED));
            }
        }
    }
}

pub fn draw(frame: &mut Frame<'_>, area: Rect, app: &App) {
    let t = app.theme();
    let consoles = app.consoles();
    let focus =
        (app.focus() == Focus::Console || app.zoom() == Zoom::Console) && *app.overlay() == Overlay::None;
    let Some(view) = consoles.shown() else {
        let blk = block(app, Line::from(Span::styled(" console ", t.title)), focus);
        frame.render_widget(Paragraph::new("no console attached").block(blk), area);
        return;
    };
    let blk = block(app, title(app, consoles, view), focus);
    let inner = blk.inner(area);
    frame.render_widget(blk, area);
    frame.render_widget(
        TermView {
            screen: view.term().screen(),
            cursor: focus,
            colours: t.name != crate::config::ThemeName::Mono,
        },
        inner,
    );
}

fn title<'a>(app: &App, consoles: &Consoles, view: &ConsoleView) -> Line<'a> {
    let t = app.theme();
    let keys = &app.config().keys;
    let mut spans = vec![Span::styled(format!(" console {} ", view.name), t.title)];
    let state = if let Some(why) = &view.ended {
        Span::styled(format!("ended: {} ", crate::ui::ellipsize(why, 60)), t.error)
    } else if let Some(why) = &view.waiting {
        Span::styled(format!("waiting: {} ", crate::ui::ellipsize(why, 60)), t.warn)
    } else if consoles.typing() && view.access == Access::ReadWrite {
        Span::styled(
            format!("typing · {} stops ", keys.hint(Command::ConsoleLeave)),
            t.warn.add_modifier(Modifier::BOLD),
        )
    } else if view.asked_write {
        Span::styled("taking the write side… ", t.warn)
    } else {
        let who = view
            .writer
            .as_ref()
            .map_or_else(String::new, |w| format!(", {w} writes"));
        Span::styled(
            format!("read-only{who} · {} types ", keys.hint(Command::ConsoleWrite)),
            t.ok,
        )
    };
    spans.push(state);
    if view.scrolled() > 0 {
        spans.push(Span::styled(format!("· ↑{} lines ", view.scrolled()), t.warn));
    }
    if consoles.all().len() > 1 {
        spans.push(Span::styled("· ", t.dim));
        for c in consoles.all() {
            let style = if c.card == view.card { t.key } else { t.dim };
            spans.push(Span::styled(format!("{} ", c.name), style));
        }
    }
    Line::from(spans)
}
