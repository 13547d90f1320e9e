//! mpssd's view of the cards, as `status` and `info` show it: asked once,
//! bounded, and told plainly when mpssd is not running.
//!
//! The question runs beside the card reads (a thread of its own) and must
//! be answered within [`ANSWER_LIMIT`] (or the command's own deadline if
//! that is sooner): a stopped or wedged mpssd costs that long and an exit
//! code ([`Exit::of_mpssd`]: 6 for no answer), never a hang. mpssd not
//! running is no failure: the cards are the driver's, mpssd only serves
//! them.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use libmic::MicRoot;
use libmic::mpssd::{CardStatus, ClientError, DaemonStatus, SupervisorState};
use mpssd_proto::{DeviceStatus, timefmt, unix_ms};
use serde_json::{Value, json};

use crate::exit::Exit;
use crate::output::{self, Cell, Style};

/// The longest mpssd is given to answer `status` and `info`.
pub const ANSWER_LIMIT: Duration = Duration::from_secs(2);

/// What mpssd said, or why it said nothing.
#[derive(Debug)]
pub enum View {
    Running(Box<DaemonStatus>),
    /// No socket, or nothing listening on it.
    NotRunning(ClientError),
    /// It is there but failed: no answer in time, refused, garbled.
    Unreachable(ClientError),
}

/// The question on its way.
#[derive(Debug)]
pub struct Asking {
    socket: PathBuf,
    job: JoinHandle<Result<DaemonStatus, ClientError>>,
}

/// Asks the mpssd of `root` for its status on a thread of its own, to be
/// answered within [`ANSWER_LIMIT`] (or by `deadline`, if sooner).
#[must_use]
pub fn ask(root: &MicRoot, deadline: Instant) -> Asking {
    // TIMEOUT: ANSWER_LIMIT, or what is left of the command's deadline.
    let limit = deadline
        .saturating_duration_since(Instant::now())
        .min(ANSWER_LIMIT);
    let r = root.clone();
    Asking {
        socket: root.mpssd_socket(),
        job: std::thread::spawn(move || libmic::mpssd::status_within(&r, limit)),
    }
}

impl Asking {
    /// The answer (the thread ends by the deadline: every call it makes is
    /// bounded by it).
    #[must_use]
    pub fn answer(self) -> (PathBuf, View) {
        let view = match self.job.join() {
            Ok(Ok(s)) => View::Running(Box::new(s)),
            Ok(Err(e)) if e.is_not_running() => View::NotRunning(e),
            Ok(Err(e)) => View::Unreachable(e),
            Err(p) => std::panic::resume_unwind(p),
        };
        (self.socket, view)
    }
}

impl View {
    /// The card as mpssd supervises it, if it does.
    #[must_use]
    pub fn card(&self, id: u32) -> Option<&CardStatus> {
        match self {
            View::Running(s) => s.cards.iter().find(|c| c.card == id),
            _ => None,
        }
    }

    /// The exit code of what was asked: 0 unless a running mpssd failed.
    #[must_use]
    pub fn exit(&self) -> Exit {
        match self {
            View::Running(_) | View::NotRunning(_) => Exit::Ok,
            View::Unreachable(e) => Exit::of_mpssd(e),
        }
    }

    /// The failure to report on stderr, if any.
    #[must_use]
    pub fn error(&self) -> Option<&ClientError> {
        match self {
            View::Unreachable(e) => Some(e),
            _ => None,
        }
    }

    /// The JSON `mpssd` object of `status` and `info`.
    #[must_use]
    pub fn to_json(&self, socket: &std::path::Path) -> Value {
        let socket = socket.display().to_string();
        match self {
            View::Running(s) => json!({
                "state": "running",
                "socket": socket,
                "version": s.version,
                "protocol": s.protocol,
                "pid": s.pid,
                "started_ms": s.started_ms,
                "uptime_secs": secs_since(s.started_ms),
                "config_file": s.config_file,
                "config_loaded_ms": s.config_loaded_ms,
                "clients": s.clients,
                "cards": s.cards.iter().map(|c| c.name.clone()).collect::<Vec<_>>(),
            }),
            View::NotRunning(e) => json!({
                "state": "not-running",
                "socket": socket,
                "message": e.to_string(),
            }),
            View::Unreachable(e) => {
                let exit = Exit::of_mpssd(e);
                json!({
                    "state": "unreachable",
                    "socket": socket,
                    "message": error_text(e),
                    "error": {
                        "kind": exit.kind(),
                        "exit_code": exit.code(),
                        "message": error_text(e),
                    },
                })
            }
        }
    }

    /// The line under the status table (and the head of info's section).
    #[must_use]
    pub fn headline(&self, color: bool) -> String {
        match self {
            View::Running(s) => format!(
                "{} {}: {} (pid {}, up {}, {} client{})",
                Style::Bold.paint("mpssd", color),
                s.version,
                Style::Green.paint("running", color),
                s.pid,
                output::human_duration(secs_since(s.started_ms)),
                s.clients,
                if s.clients == 1 { "" } else { "s" }
            ),
            View::NotRunning(e) => format!(
                "{}: {}",
                Style::Bold.paint("mpssd", color),
                e.to_string().trim_start_matches("mpssd is ")
            ),
            View::Unreachable(e) => {
                let text = error_text(e);
                format!(
                    "{}: {}",
                    Style::Bold.paint("mpssd", color),
                    Style::Red.paint(text.strip_prefix("mpssd ").unwrap_or(&text), color)
                )
            }
        }
    }
}

/// An error and its causes, one line.
#[must_use]
pub fn error_text(e: &ClientError) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        let _ = write!(s, ": {c}");
        src = c.source();
    }
    s
}

/// Seconds from a Unix time in ms to now (0 if it is in the future).
#[must_use]
pub fn secs_since(ms: u64) -> f64 {
    Duration::from_millis(unix_ms(SystemTime::now()).saturating_sub(ms)).as_secs_f64()
}

/// Seconds from now to a Unix time in ms (0 if it has passed).
#[must_use]
pub fn secs_until(ms: u64) -> f64 {
    Duration::from_millis(ms.saturating_sub(unix_ms(SystemTime::now()))).as_secs_f64()
}

/// The colour of a supervisor state.
#[must_use]
pub fn supervisor_style(s: SupervisorState) -> Style {
    match s {
        SupervisorState::Running => Style::Green,
        SupervisorState::Idle | SupervisorState::Stopped => Style::Plain,
        SupervisorState::CrashLoop | SupervisorState::ResetFailed => Style::BoldRed,
        _ => Style::Yellow,
    }
}

/// The colour of a device state (`up`, `down`, `error`).
#[must_use]
pub fn device_style(state: &str) -> Style {
    match state {
        "up" => Style::Green,
        "down" => Style::Yellow,
        _ => Style::Red,
    }
}

fn device_json(d: &DeviceStatus) -> Value {
    json!({
        "kind": d.kind,
        "target": d.target,
        "state": d.state,
        "counters": d.counters,
    })
}

/// A card's JSON `supervision` object: what its mpssd supervisor knows.
#[must_use]
pub fn card_json(c: &CardStatus) -> Value {
    json!({
        "supervisor": c.supervisor.as_str(),
        "since_ms": c.since_ms,
        "in_state_secs": crate::cmd::round_ms(secs_since(c.since_ms)),
        "adopted": c.adopted,
        "boots": c.boots,
        "crashes": c.crashes,
        "recent_crashes": c.recent_crashes,
        "next_boot_ms": c.next_boot_ms,
        "devices": c.devices.iter().map(device_json).collect::<Vec<_>>(),
        "last_crash": c.last_crash.as_ref().map(|l| json!({
            "ts_ms": l.ts_ms,
            "time": timefmt::rfc3339_ms(l.ts_ms),
            "bundle": l.bundle,
        })),
        "last_error": c.last_error,
    })
}

/// `net:up console:down`, or `-`.
#[must_use]
pub fn devices_cell(c: &CardStatus, color: bool) -> String {
    if c.devices.is_empty() {
        return "-".to_owned();
    }
    c.devices
        .iter()
        .map(|d| format!("{}:{}", d.kind, device_style(&d.state).paint(&d.state, color)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The supervision table under `status`: one row per card shown.
#[must_use]
pub fn table(view: &View, ids: &[u32], color: bool) -> String {
    const HEADERS: [&str; 7] = [
        "CARD",
        "SUPERVISOR",
        "FOR",
        "BOOTS",
        "CRASHES",
        "DEVICES",
        "LAST CRASH",
    ];
    let rows: Vec<Vec<Cell>> = ids
        .iter()
        .filter_map(|&id| view.card(id))
        .map(|c| {
            // The device states are painted inside the cell's text; its
            // width is counted without the escapes.
            let devices = devices_cell(c, false);
            let painted = devices_cell(c, color);
            let mut cells = vec![
                Cell::new(&c.name),
                Cell::styled(c.supervisor.as_str(), supervisor_style(c.supervisor)),
                Cell::new(output::human_duration(secs_since(c.since_ms))),
                Cell::new(c.boots.to_string()),
                Cell::styled(
                    c.crashes.to_string(),
                    if c.crashes > 0 {
                        Style::Yellow
                    } else {
                        Style::Plain
                    },
                ),
                Cell::new(devices),
                Cell::new(last_crash_text(c)),
            ];
            cells[5].painted = (painted != cells[5].text).then_some(painted);
            cells
        })
        .collect();
    if rows.is_empty() {
        return String::new();
    }
    output::table(&HEADERS, &rows, color)
}

/// `2026-01-01T12:00:00.123Z BUNDLE`, or `-`.
#[must_use]
pub fn last_crash_text(c: &CardStatus) -> String {
    c.last_crash.as_ref().map_or_else(
        || "-".to_owned(),
        |l| {
            format!(
                "{} {}",
                timefmt::rfc3339_ms(l.ts_ms),
                l.bundle.as_deref().unwrap_or("(no bundle written)")
            )
        },
    )
}

/// The `mpssd` section of `info` for one card.
#[must_use]
pub fn info_section(view: &View, id: u32, color: bool) -> String {
    let mut out = format!("{}\n", view.headline(color));
    let mut line = |k: &str, v: String| {
        let _ = writeln!(out, "  {k:<18}{v}");
    };
    let Some(c) = view.card(id) else {
        if matches!(view, View::Running(_)) {
            line("supervisor", "- (mpssd does not supervise this card)".to_owned());
        }
        return out;
    };
    line(
        "supervisor",
        format!(
            "{} for {}{}",
            supervisor_style(c.supervisor).paint(c.supervisor.as_str(), color),
            output::human_duration(secs_since(c.since_ms)),
            if c.adopted {
                " (adopted: the card was up when mpssd started)"
            } else {
                ""
            }
        ),
    );
    line(
        "boots",
        format!(
            "{}, crashes {} ({} in the crash-loop window)",
            c.boots, c.crashes, c.recent_crashes
        ),
    );
    if let Some(at) = c.next_boot_ms {
        line(
            "next boot",
            format!("in {}", output::human_duration(secs_until(at))),
        );
    }
    line("last crash", last_crash_text(c));
    if let Some(e) = &c.last_error {
        line("last error", libmic::attrs::escape_untrusted(e));
    }
    if c.devices.is_empty() {
        line("devices", "-".to_owned());
    }
    for d in &c.devices {
        line(
            &format!("device {}", d.kind),
            format!(
                "{}  {}",
                device_style(&d.state).paint(&d.state, color),
                libmic::attrs::escape_untrusted(&d.target)
            ),
        );
        if !d.counters.is_empty() {
            let counters: Vec<String> = d.counters.iter().map(|(k, v)| format!("{k} {v}")).collect();
            line("", counters.join(", "));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use mpssd_proto::CrashSummary;

    fn daemon() -> View {
        let card = CardStatus {
            card: 0,
            name: "mic0".into(),
            state: Some(libmic::MicState::Online),
            shutdown_status: None,
            supervisor: SupervisorState::Backoff,
            since_ms: 0,
            adopted: true,
            boots: 2,
            crashes: 1,
            recent_crashes: 1,
            next_boot_ms: Some(u64::MAX / 2),
            devices: vec![
                DeviceStatus {
                    kind: "net".into(),
                    target: "mic0 172.31.0.254/24".into(),
                    state: "up".into(),
                    counters: [("rx_bytes".to_owned(), 10), ("ring_full".to_owned(), 2)].into(),
                },
                DeviceStatus {
                    kind: "console".into(),
                    target: "/dev/pts/\x1b[7".into(),
                    state: "down".into(),
                    counters: std::collections::BTreeMap::new(),
                },
            ],
            last_crash: Some(CrashSummary {
                ts_ms: 1_700_000_000_000,
                bundle: Some("/r/var/lib/mpssd/crash/mic0-20231114T221320.000Z".into()),
            }),
            last_error: Some("reset timed out".into()),
        };
        View::Running(Box::new(DaemonStatus {
            version: "0.1.0".into(),
            protocol: 1,
            pid: 7,
            root: "/r".into(),
            config_file: "/r/etc/mpss/mpssd.toml".into(),
            config_loaded_ms: 0,
            started_ms: 0,
            clients: 1,
            cards: vec![card],
        }))
    }

    #[test]
    fn devices_and_crashes_are_shown() {
        let view = daemon();
        let plain = table(&view, &[0, 1], false);
        let row = plain.lines().nth(1).unwrap();
        assert!(row.starts_with("mic0  backoff"), "{plain}");
        assert!(
            row.contains("  2      1        net:up console:down  2023-11-14T22:13:20.000Z /r/var/lib"),
            "{plain}"
        );
        assert_eq!(plain.lines().count(), 2, "mic1 is not supervised: no row");
        // Coloured, the device states are painted and the columns still line up.
        let coloured = table(&view, &[0], true);
        assert!(
            coloured.contains("net:\x1b[32mup\x1b[0m console:\x1b[33mdown\x1b[0m"),
            "{coloured:?}"
        );
        let section = info_section(&view, 0, false);
        assert!(section.contains("  supervisor        backoff for "), "{section}");
        assert!(
            section.contains("(adopted: the card was up when mpssd started)"),
            "{section}"
        );
        assert!(section.contains("  next boot         in "), "{section}");
        assert!(
            section.contains("  last error        reset timed out\n"),
            "{section}"
        );
        assert!(
            section.contains(
                "  device net        up  mic0 172.31.0.254/24\n                    ring_full 2, rx_bytes 10\n"
            ),
            "{section}"
        );
        // A target is the backend's, but may carry what a card named: escaped.
        assert!(
            section.contains("  device console    down  /dev/pts/\\x1b[7\n"),
            "{section}"
        );
        let json = card_json(view.card(0).unwrap());
        assert_eq!(json["devices"][0]["counters"]["ring_full"], 2);
        assert_eq!(json["last_crash"]["time"], "2023-11-14T22:13:20.000Z");
        assert!(info_section(&view, 1, false).contains("mpssd does not supervise this card"));
    }
}
