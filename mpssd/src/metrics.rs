//! The Prometheus endpoint: `GET /metrics` in the text exposition format
//! (version 0.0.4), on loopback unless the configuration allows otherwise.
//!
//! A minimal HTTP/1.x responder, bounded like the control socket: at most
//! [`MAX_CONNECTIONS`] at once, a request head of at most [`MAX_HEAD`]
//! bytes that must arrive within [`REQUEST_TIMEOUT`], one answer, close.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, Result};
use libmic::MicState;
use mpssd_proto::{CardStatus, SupervisorState, unix_ms};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::timeout;

use crate::shared::Shared;

pub const MAX_CONNECTIONS: usize = 16;
pub const MAX_HEAD: usize = 8192;
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Binds the endpoint.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the metrics endpoint {addr}"))
}

/// Serves until the task is dropped.
pub async fn serve(shared: Arc<Shared>, listener: TcpListener) {
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // TIMEOUT: a short pause so an accept error cannot spin.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
            continue;
        };
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            // TIMEOUT: REQUEST_TIMEOUT for the whole exchange.
            let _ = timeout(REQUEST_TIMEOUT, answer(stream, &shared)).await;
            drop(permit);
        });
    }
}

async fn answer(mut stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        if head.len() >= MAX_HEAD {
            return respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                "text/plain",
                "",
            )
            .await;
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut words = line.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET", "/metrics") => {
            let body = render(shared);
            respond(
                &mut stream,
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                &body,
            )
            .await
        }
        ("GET", "/") => {
            respond(
                &mut stream,
                "200 OK",
                "text/plain; charset=utf-8",
                "mpssd: metrics at /metrics\n",
            )
            .await
        }
        ("GET", _) => respond(&mut stream, "404 Not Found", "text/plain", "not found\n").await,
        _ => respond(&mut stream, "405 Method Not Allowed", "text/plain", "GET only\n").await,
    }
}

async fn respond(stream: &mut TcpStream, status: &str, ctype: &str, body: &str) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

/// A label value escaped for the exposition format.
fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// A metric name part from a counter name: `[a-z0-9_]` only.
fn name_part(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

struct Family<'a> {
    out: &'a mut String,
}

impl Family<'_> {
    fn head(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        let labels: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", esc(v)))
            .collect();
        if labels.is_empty() {
            let _ = writeln!(self.out, "{name} {value}");
        } else {
            let _ = writeln!(self.out, "{name}{{{}}} {value}", labels.join(","));
        }
    }
}

/// Milliseconds as decimal seconds, exactly.
fn secs(ms: u64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

/// The whole exposition.
#[must_use]
pub fn render(shared: &Shared) -> String {
    let cards: Vec<CardStatus> = shared
        .cards()
        .values()
        .map(crate::shared::CardHandle::snapshot)
        .collect();
    render_cards(
        &cards,
        shared.clients.load(Ordering::Relaxed),
        shared.reloads_ok.load(Ordering::Relaxed),
        shared.reloads_failed.load(Ordering::Relaxed),
        shared.started_ms,
        unix_ms(SystemTime::now()),
    )
}

/// The exposition of these numbers (pure, for tests).
#[must_use]
pub fn render_cards(
    cards: &[CardStatus],
    clients: u32,
    reloads_ok: u64,
    reloads_failed: u64,
    started_ms: u64,
    now_ms: u64,
) -> String {
    let mut out = String::new();
    let mut f = Family { out: &mut out };
    f.head("mpssd_build_info", "gauge", "mpssd's version (always 1).");
    f.sample("mpssd_build_info", &[("version", env!("CARGO_PKG_VERSION"))], 1);
    f.head("mpssd_start_time_seconds", "gauge", "Unix time mpssd started.");
    f.sample("mpssd_start_time_seconds", &[], secs(started_ms));
    f.head(
        "mpssd_control_clients",
        "gauge",
        "Connected control-socket clients.",
    );
    f.sample("mpssd_control_clients", &[], clients);
    f.head(
        "mpssd_config_reloads_total",
        "counter",
        "Configuration reloads, by result.",
    );
    f.sample("mpssd_config_reloads_total", &[("result", "ok")], reloads_ok);
    f.sample(
        "mpssd_config_reloads_total",
        &[("result", "refused")],
        reloads_failed,
    );

    card_families(&mut f, cards, now_ms);
    out
}

/// The per-card and per-device families.
fn card_families(f: &mut Family<'_>, cards: &[CardStatus], now_ms: u64) {
    f.head(
        "mpssd_card_state",
        "gauge",
        "The card's sysfs state (1 for the current one).",
    );
    for c in cards {
        for s in MicState::ALL {
            f.sample(
                "mpssd_card_state",
                &[("card", &c.name), ("state", s.as_str())],
                u8::from(c.state == Some(s)),
            );
        }
    }
    f.head(
        "mpssd_supervisor_state",
        "gauge",
        "What the card's supervisor is doing (1 for the current state).",
    );
    for c in cards {
        for s in SupervisorState::ALL {
            f.sample(
                "mpssd_supervisor_state",
                &[("card", &c.name), ("state", s.as_str())],
                u8::from(c.supervisor == s),
            );
        }
    }
    f.head(
        "mpssd_supervisor_state_seconds",
        "gauge",
        "Time the supervisor has been in its current state.",
    );
    for c in cards {
        f.sample(
            "mpssd_supervisor_state_seconds",
            &[("card", &c.name)],
            secs(now_ms.saturating_sub(c.since_ms)),
        );
    }
    f.head("mpssd_card_boots_total", "counter", "Boots mpssd requested.");
    for c in cards {
        f.sample("mpssd_card_boots_total", &[("card", &c.name)], c.boots);
    }
    f.head(
        "mpssd_card_crashes_total",
        "counter",
        "Crashes the card reported.",
    );
    for c in cards {
        f.sample("mpssd_card_crashes_total", &[("card", &c.name)], c.crashes);
    }
    f.head(
        "mpssd_card_adopted",
        "gauge",
        "1 if the card was running when mpssd started.",
    );
    for c in cards {
        f.sample("mpssd_card_adopted", &[("card", &c.name)], u8::from(c.adopted));
    }
    // Per device counters: one counter family per counter name the
    // backends report (mpssd_device_rx_bytes_total, ...).
    let mut names: Vec<String> = cards
        .iter()
        .flat_map(|c| c.devices.iter().flat_map(|d| d.counters.keys().cloned()))
        .collect();
    names.sort();
    names.dedup();
    for counter in names {
        let metric = format!(
            "mpssd_device_{}_total",
            name_part(counter.trim_end_matches("_total"))
        );
        f.head(&metric, "counter", &format!("Device counter {counter}."));
        for c in cards {
            for d in &c.devices {
                if let Some(v) = d.counters.get(&counter) {
                    f.sample(&metric, &[("card", &c.name), ("device", &d.kind)], v);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mpssd_proto::DeviceStatus;

    #[test]
    fn renders_every_family_once_with_devices() {
        let card = CardStatus {
            card: 0,
            name: "mic0".into(),
            state: Some(MicState::Online),
            shutdown_status: None,
            supervisor: SupervisorState::Running,
            since_ms: 1000,
            adopted: false,
            boots: 3,
            crashes: 1,
            recent_crashes: 1,
            next_boot_ms: None,
            devices: vec![DeviceStatus {
                kind: "net".into(),
                target: "mic0".into(),
                state: "up".into(),
                counters: [("rx_bytes".to_owned(), 10), ("ring-full".to_owned(), 2)].into(),
            }],
            last_crash: None,
            last_error: None,
        };
        let text = render_cards(&[card], 2, 1, 0, 500, 3500);
        assert!(text.contains("mpssd_card_state{card=\"mic0\",state=\"online\"} 1\n"));
        assert!(text.contains("mpssd_card_state{card=\"mic0\",state=\"offline\"} 0\n"));
        assert!(text.contains("mpssd_supervisor_state{card=\"mic0\",state=\"running\"} 1\n"));
        assert!(text.contains("mpssd_supervisor_state_seconds{card=\"mic0\"} 2.500\n"));
        assert!(text.contains("mpssd_card_boots_total{card=\"mic0\"} 3\n"));
        assert!(text.contains("mpssd_device_rx_bytes_total{card=\"mic0\",device=\"net\"} 10\n"));
        assert!(text.contains("mpssd_device_ring_full_total{card=\"mic0\",device=\"net\"} 2\n"));
        let types = text
            .lines()
            .filter(|l| l.starts_with("# TYPE mpssd_card_state "))
            .count();
        assert_eq!(types, 1);
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(esc("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
