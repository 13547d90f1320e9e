//! The detail pane: every attribute of the selected card, its boot
//! configuration, and the SMPT and device-page summaries.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Wrap};

use crate::app::{App, Focus};
use crate::layout::Zoom;
use crate::model::{CardView, Detail};
use crate::ui::table::{age_cell, op_cell, post_meaning, state_cell};
use crate::ui::{block, field, focused};
use libmic::attrs::escape_untrusted;

fn none() -> String {
    "-".to_owned()
}

pub fn draw(frame: &mut Frame<'_>, area: Rect, app: &App) {
    let t = app.theme();
    let Some(c) = app.selected_card() else {
        let blk = block(app, Line::from(Span::styled(" details ", t.title)), false);
        frame.render_widget(Paragraph::new("no card").block(blk), area);
        return;
    };
    let title = Line::from(vec![
        Span::styled(format!(" {} ", c.name), t.title),
        Span::styled("details ", t.dim),
    ]);
    let blk = block(
        app,
        title,
        focused(app, Focus::Cards) && app.zoom() == Zoom::Detail,
    );
    let mut lines = Vec::new();
    attributes(app, c, &mut lines);
    boot_config(app, c, &mut lines);
    let detail = app.detail().of(c.id);
    debugfs(app, detail, &mut lines);
    frame.render_widget(Paragraph::new(lines).block(blk).wrap(Wrap { trim: false }), area);
}

fn attributes(app: &App, c: &CardView, lines: &mut Vec<Line<'_>>) {
    let t = app.theme();
    let info = c.info.as_ref();
    let (state, style) = state_cell(app, c);
    lines.push(Line::from(vec![
        Span::styled(format!("{:<16}", "state"), t.dim),
        Span::styled(state, style),
        Span::styled(format!("  for {}", age_cell(app, c)), t.dim),
    ]));
    if let Some(e) = &c.state_error {
        lines.push(Line::from(Span::styled(escape_untrusted(e), t.error)));
    }
    let status = c.shutdown_status().map_or_else(none, |s| s.as_str().to_owned());
    lines.push(field(app, "shutdown_status", status, t.text));
    let fam = info.and_then(|i| i.family.clone()).unwrap_or_else(none);
    let step = info.and_then(|i| i.stepping.clone()).unwrap_or_else(none);
    lines.push(field(app, "family", format!("{fam}  stepping {step}"), t.text));
    let ip = info.and_then(|i| i.ipaddr).map_or_else(none, |a| a.to_string());
    lines.push(field(app, "ip address", ip, t.text));
    let post = c
        .post
        .as_deref()
        .map_or_else(none, |p| format!("{p}  {}", post_meaning(p)));
    lines.push(field(
        app,
        "post code",
        post,
        if c.booting() { t.booting } else { t.text },
    ));
    if let Some(op) = &c.op {
        let (text, style) = op_cell(app, Some(op));
        lines.push(field(app, "action", text, style));
        if let Some(Err(e)) = &op.outcome {
            lines.push(Line::from(Span::styled(escape_untrusted(e), t.error)));
        }
    }
}

fn boot_config(app: &App, c: &CardView, lines: &mut Vec<Line<'_>>) {
    let t = app.theme();
    let info = c.info.as_ref();
    lines.push(Line::from(Span::styled("── boot configuration", t.title)));
    let bootmode = info
        .and_then(|i| i.bootmode)
        .map_or_else(none, |b| b.as_str().to_owned());
    lines.push(field(app, "bootmode", bootmode, t.text));
    let firmware = info
        .and_then(|i| i.firmware.as_deref())
        .map_or_else(none, escape_untrusted);
    lines.push(field(app, "firmware", firmware, t.text));
    let ramdisk = info
        .and_then(|i| i.ramdisk.as_deref())
        .map_or_else(none, escape_untrusted);
    lines.push(field(app, "ramdisk", ramdisk, t.text));
    let addr = |v: Option<u64>| v.map_or_else(none, |a| format!("{a:#x}"));
    lines.push(field(
        app,
        "log_buf_addr",
        addr(info.and_then(|i| i.log_buf_addr)),
        t.text,
    ));
    lines.push(field(
        app,
        "log_buf_len",
        addr(info.and_then(|i| i.log_buf_len)),
        t.text,
    ));
    let cmdline = info
        .and_then(|i| i.cmdline.as_deref())
        .map_or_else(none, escape_untrusted);
    lines.push(field(app, "cmdline", cmdline, t.text));
    if let Some(i) = info {
        for (attr, e) in &i.problems {
            lines.push(Line::from(Span::styled(
                format!("{attr}: {}", escape_untrusted(e)),
                t.warn,
            )));
        }
    }
    if let Some(e) = &c.info_error {
        lines.push(Line::from(Span::styled(escape_untrusted(e), t.error)));
    }
}

fn debugfs(app: &App, detail: Option<&Detail>, lines: &mut Vec<Line<'_>>) {
    let t = app.theme();
    lines.push(Line::from(Span::styled("── SMPT", t.title)));
    match detail.map(|d| &d.smpt) {
        None => lines.push(Line::from(Span::styled("…", t.dim))),
        Some(Err(e)) => lines.push(Line::from(Span::styled(escape_untrusted(e), t.warn))),
        Some(Ok(s)) => {
            lines.push(field(
                app,
                "entries",
                format!("{}, {} in use", s.entries, s.in_use.len()),
                t.text,
            ));
            for e in &s.in_use {
                lines.push(Line::from(Span::styled(
                    format!("  #{:<3} {:<16} refs {}", e.index, e.dma_addr, e.refcount),
                    t.text,
                )));
            }
        }
    }
    lines.push(Line::from(Span::styled("── device page", t.title)));
    match detail.map(|d| &d.dp) {
        None => lines.push(Line::from(Span::styled("…", t.dim))),
        Some(Err(e)) => lines.push(Line::from(Span::styled(escape_untrusted(e), t.warn))),
        Some(Ok(dp)) if dp.bootparam.is_empty() && dp.devices.is_empty() => {
            lines.push(Line::from(Span::styled("(empty)", t.dim)));
        }
        Some(Ok(dp)) => {
            for (k, v) in &dp.bootparam {
                lines.push(field(app, k, v.clone(), t.text));
            }
            lines.push(field(app, "devices", dp.devices.len().to_string(), t.text));
            for d in &dp.devices {
                lines.push(Line::from(Span::styled(format!("  {d}"), t.text)));
            }
            if dp.malformed > 0 {
                lines.push(Line::from(Span::styled(
                    format!("{} malformed descriptor(s)", dp.malformed),
                    t.error,
                )));
            }
        }
    }
}
