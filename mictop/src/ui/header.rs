//! The header: host, CPU and memory, card counts by state; while the
//! driver is gone, a banner saying so instead of the counts.

use libmic::MicState;
use libmic::attrs::escape_untrusted;
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use crate::app::App;
use crate::model::OpStatus;

const GIB: f64 = 1_073_741_824.0;

#[allow(clippy::cast_precision_loss)]
pub fn draw(frame: &mut Frame<'_>, area: Rect, app: &App) {
    let t = app.theme();
    let sep = || Span::styled(" │ ", t.dim);
    let mut first = vec![Span::styled(" mictop", t.title)];
    if let Some(h) = &app.header().host {
        first.extend([
            sep(),
            Span::styled("host ", t.dim),
            Span::styled(h.hostname.clone(), t.text),
            sep(),
            Span::styled("cpu ", t.dim),
            Span::styled(format!("{:.0}% of {}", h.cpu_percent, h.cpus), t.text),
            sep(),
            Span::styled("mem ", t.dim),
            Span::styled(
                format!(
                    "{:.1}/{:.1} GiB",
                    h.mem_used as f64 / GIB,
                    h.mem_total as f64 / GIB
                ),
                t.text,
            ),
        ]);
    }
    first.extend([
        sep(),
        Span::styled("root ", t.dim),
        Span::styled(app.header().root.clone(), t.text),
    ]);

    if let Some(reason) = app.driver_gone() {
        let banner = vec![
            Span::styled(" ⚠ driver gone — reconnecting", t.error),
            Span::styled(
                format!("  ({})", crate::ui::ellipsize(&escape_untrusted(reason), 160)),
                t.dim,
            ),
        ];
        frame.render_widget(Paragraph::new(vec![Line::from(first), Line::from(banner)]), area);
        return;
    }
    let count = |s: MicState| app.cards().iter().filter(|c| c.state == Some(s)).count();
    let mut second = vec![
        Span::styled(" cards ", t.dim),
        Span::styled(app.cards().len().to_string(), t.title),
    ];
    for s in MicState::ALL {
        second.push(sep());
        second.push(Span::styled("● ", t.state(s)));
        second.push(Span::styled(format!("{} {}", s.as_str(), count(s)), t.text));
    }
    let extra = [
        (
            "booting",
            app.cards().iter().filter(|c| c.booting()).count(),
            t.booting,
        ),
        (
            "unreadable",
            app.cards().iter().filter(|c| c.state_error.is_some()).count(),
            t.error,
        ),
        (
            "marked",
            app.cards().iter().filter(|c| c.marked).count(),
            t.marked,
        ),
        (
            "busy",
            app.cards()
                .iter()
                .filter(|c| c.op.as_ref().is_some_and(OpStatus::running))
                .count(),
            t.warn,
        ),
    ];
    for (label, n, style) in extra {
        if n > 0 {
            second.push(sep());
            second.push(Span::styled(format!("{label} {n}"), style));
        }
    }
    frame.render_widget(Paragraph::new(vec![Line::from(first), Line::from(second)]), area);
}
