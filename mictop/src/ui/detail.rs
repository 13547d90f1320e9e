//! The detail pane: every attribute of the selected card, mpssd's
//! supervision of it and its virtio devices (mpssd's view of each beside
//! the host driver's: status, features, bytes, rings), its boot
//! configuration, and the SMPT and device-page summaries.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Wrap};

use libmic::mpssd::SupervisorState;
use libmic::{DpDevice, VdevInfo};
use mic_core::abi::virtio;
use mpssd_proto::DeviceStatus;
use ratatui::style::Style;

use crate::app::{App, Focus};
use crate::layout::Zoom;
use crate::model::{CardView, Detail, Mpssd};
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
    let detail = app.detail().of(c.id);
    supervision(app, c, &mut lines);
    virtio(app, c, detail, &mut lines);
    boot_config(app, c, &mut lines);
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

/// `2026-01-01 12:00:00Z` of a Unix time in ms.
fn utc(ms: u64) -> String {
    let t = mpssd_proto::timefmt::rfc3339_ms(ms);
    // Seconds are enough on a screen.
    format!("{}Z", t[..19].replace('T', " "))
}

/// mpssd's supervision of the card (nothing until mpssd was asked).
fn supervision(app: &App, c: &CardView, lines: &mut Vec<Line<'_>>) {
    let t = app.theme();
    let (title, note) = match app.mpssd() {
        Mpssd::Unknown => return,
        Mpssd::NotRunning(why) => ("── mpssd".to_owned(), Some((escape_untrusted(why), t.dim))),
        Mpssd::Unreachable(why) => ("── mpssd".to_owned(), Some((escape_untrusted(why), t.warn))),
        Mpssd::Running { version, pid } => (format!("── mpssd {version} (pid {pid})"), None),
    };
    lines.push(Line::from(Span::styled(title, t.title)));
    if let Some((text, style)) = note {
        lines.push(Line::from(Span::styled(text, style)));
        return;
    }
    let Some(s) = &c.supervision else {
        lines.push(Line::from(Span::styled("does not supervise this card", t.dim)));
        return;
    };
    lines.push(Line::from(vec![
        Span::styled(format!("{:<16}", "supervisor"), t.dim),
        Span::styled(s.supervisor.as_str(), supervisor_style(app, s.supervisor)),
        Span::styled(
            format!(
                "  since {}{}",
                utc(s.since_ms),
                if s.adopted { " (adopted)" } else { "" }
            ),
            t.dim,
        ),
    ]));
    lines.push(field(
        app,
        "boots",
        format!("{}, crashes {} ({} recent)", s.boots, s.crashes, s.recent_crashes),
        if s.crashes > 0 { t.warn } else { t.text },
    ));
    if let Some(at) = s.next_boot_ms {
        lines.push(field(app, "next boot", utc(at), t.warn));
    }
    match &s.last_crash {
        None => lines.push(field(app, "last crash", none(), t.text)),
        Some(l) => {
            lines.push(field(app, "last crash", utc(l.ts_ms), t.error));
            let bundle = l
                .bundle
                .as_deref()
                .map_or_else(|| "no forensics bundle written".to_owned(), escape_untrusted);
            lines.push(field(app, "", bundle, t.text));
        }
    }
    if let Some(e) = &s.last_error {
        lines.push(field(app, "last error", escape_untrusted(e), t.error));
    }
}

/// The style of a supervisor state.
#[must_use]
pub fn supervisor_style(app: &App, s: SupervisorState) -> Style {
    let t = app.theme();
    match s {
        SupervisorState::Running => t.ok,
        SupervisorState::Idle | SupervisorState::Stopped => t.text,
        SupervisorState::CrashLoop | SupervisorState::ResetFailed => t.error,
        _ => t.warn,
    }
}

/// The card's virtio devices: mpssd's view of each (state, target,
/// counters) beside the host driver's (status, features, bytes, rings).
fn virtio(app: &App, c: &CardView, detail: Option<&Detail>, lines: &mut Vec<Line<'_>>) {
    let t = app.theme();
    let served: &[DeviceStatus] = c.supervision.as_ref().map_or(&[], |s| &s.devices);
    let vdevs: &[VdevInfo] = detail.and_then(|d| d.vdevs.as_ref().ok()).map_or(&[], |v| v);
    let descs: &[DpDevice] = detail.and_then(|d| d.dp.as_ref().ok()).map_or(&[], |d| &d.descs);
    // Every kind either side knows, mpssd's order first.
    let mut kinds: Vec<&str> = served.iter().map(|d| d.kind.as_str()).collect();
    for ty in vdevs.iter().map(|v| v.ty).chain(descs.iter().map(|d| d.ty)) {
        let k = virtio::id::name(ty);
        if !kinds.contains(&k) {
            kinds.push(k);
        }
    }
    let error = detail.and_then(|d| d.vdevs.as_ref().err());
    if kinds.is_empty() && error.is_none() {
        return;
    }
    lines.push(Line::from(Span::styled("── virtio devices", t.title)));
    if let Some(e) = error {
        lines.push(Line::from(Span::styled(escape_untrusted(e), t.warn)));
    }
    for kind in kinds {
        let dev = served.iter().find(|d| d.kind == kind);
        let info = vdevs.iter().find(|v| virtio::id::name(v.ty) == kind);
        let desc = descs.iter().find(|d| virtio::id::name(d.ty) == kind);
        match dev {
            Some(d) => {
                let style = match d.state.as_str() {
                    "up" => t.ok,
                    "down" => t.warn,
                    _ => t.error,
                };
                lines.push(Line::from(vec![
                    Span::styled(format!("{kind:<16}"), t.text),
                    Span::styled(d.state.clone(), style),
                    Span::styled(format!("  {}", escape_untrusted(&d.target)), t.text),
                ]));
                if !d.counters.is_empty() {
                    let counters: Vec<String> = d.counters.iter().map(|(k, v)| format!("{k} {v}")).collect();
                    lines.push(field(app, "  counters", counters.join(", "), t.text));
                }
            }
            None => lines.push(Line::from(vec![
                Span::styled(format!("{kind:<16}"), t.text),
                Span::styled("not served by mpssd", t.dim),
            ])),
        }
        if let Some(i) = info {
            let features = desc.map_or_else(String::new, |d| {
                format!(
                    "  features {:#x}, card took {:#x}",
                    d.host_features, d.guest_features
                )
            });
            lines.push(Line::from(vec![
                Span::styled(format!("{:<16}", "  driver"), t.dim),
                Span::styled(if i.up { "UP" } else { "DOWN" }, if i.up { t.ok } else { t.warn }),
                Span::styled(format!("  status {:#04x}{features}", i.status), t.text),
            ]));
            lines.push(field(
                app,
                "  copied",
                format!(
                    "{} B to card, {} B from; doorbells {}, resets {}",
                    i.bytes_to_card, i.bytes_from_card, i.doorbells, i.resets
                ),
                t.text,
            ));
            if let Some(b) = &i.broken {
                lines.push(field(app, "  broken", b.clone(), t.error));
            }
            for r in &i.vrings {
                lines.push(field(
                    app,
                    &format!("  vring {}", r.index),
                    format!(
                        "{} slots, {} in flight{}, {} chains, {} errors",
                        r.num,
                        r.in_flight(),
                        if r.held { " (one held)" } else { "" },
                        r.chains,
                        r.errors
                    ),
                    if r.errors > 0 { t.warn } else { t.text },
                ));
            }
        } else if let Some(d) = desc {
            lines.push(field(
                app,
                "  device page",
                format!(
                    "status {:#04x}  features {:#x}, card took {:#x}",
                    d.status, d.host_features, d.guest_features
                ),
                t.text,
            ));
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
