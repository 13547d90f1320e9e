//! `micctl events [CARDS]`: mpssd's event stream — supervisor state
//! changes, device add and remove, crashes with their bundles, resets,
//! configuration reloads — as mpssd describes them, one line each with its
//! UTC time (JSON Lines `event` records with `--json`).
//!
//! The stream starts once it is live: subscribed first, then mpssd's status
//! asked on a second connection (CARDS checked against the cards it
//! supervises) and printed as the first line — `-- mpssd 0.1.0 (pid 42):
//! mic0 running, mic1 idle --`, or a `start` record with `--json` — so
//! nothing after that line is missed, and nothing before it is in it but
//! what the status says. Those steps are bounded
//! ([`crate::supervision::ANSWER_LIMIT`]); the stream itself waits as long
//! as mpssd is quiet, unless `--duration` or `--timeout` ends it. It ends:
//!
//! - after `--count` events: exit 0;
//! - at `--duration`: exit 0; at `--timeout` before `--count` events:
//!   exit 6;
//! - when mpssd stops (it says so, then closes): exit 10, with an `end`
//!   record (`reason` `mpssd-stopped`) under `--json`.

use std::time::{Duration, Instant};

use libmic::mpssd::{CardStatus, Client, ClientError, DaemonStatus, ErrorCode, Event, EventKind};
use mpssd_proto::{DaemonStep, Severity, timefmt};
use serde_json::{Value, json};

use crate::Ctx;
use crate::cli::EventsArgs;
use crate::exit::Exit;
use crate::output::{self, Style};
use crate::select::Selection;
use crate::supervision::ANSWER_LIMIT;

/// How the stream ended.
#[derive(Debug, Clone, Copy)]
enum End {
    Count,
    Duration,
    Timeout { got: u64, want: u64, after: Duration },
    Stopped,
}

pub fn run(ctx: &Ctx, args: &EventsArgs) -> anyhow::Result<Exit> {
    let sel = Selection::parse(&args.cards.cards)?;
    let start = Instant::now();
    // TIMEOUT: ANSWER_LIMIT for subscribing, and for the status after it.
    let mut events = Client::connect_within(&ctx.root, ANSWER_LIMIT)?.subscribe()?;
    let status = libmic::mpssd::status_within(&ctx.root, ANSWER_LIMIT)?;
    if !sel.is_all() {
        let known: Vec<u32> = status.cards.iter().map(|c| c.card).collect();
        if let Some(id) = sel.ids_outside(&known) {
            return Err(libmic::Error::NoSuchCard {
                name: format!("mic{id}"),
                known: status.cards.iter().map(|c| c.name.clone()).collect(),
            }
            .into());
        }
    }
    print_start(ctx, &status, &sel)?;
    let until = args.duration.or(args.timeout).map(|d| start + d);
    events.set_deadline(until);
    let mut shown = 0u64;
    let end = loop {
        if args.count.is_some_and(|n| shown >= n) {
            break End::Count;
        }
        let e = match events.next_event() {
            Ok(e) => e,
            Err(ClientError::NoAnswer { .. }) if until.is_some() => {
                break match (args.timeout, args.count) {
                    (Some(after), Some(want)) => End::Timeout {
                        got: shown,
                        want,
                        after,
                    },
                    _ => End::Duration,
                };
            }
            // mpssd going away: it closes the stream, or says it is
            // stopping and then closes it.
            Err(ClientError::Closed) => break End::Stopped,
            Err(ClientError::Refused(b)) if b.code == ErrorCode::ShuttingDown => break End::Stopped,
            Err(e) => return Err(e.into()),
        };
        let stopping = e.card.is_none()
            && matches!(
                e.kind,
                EventKind::Daemon {
                    what: DaemonStep::Stopping
                }
            );
        if wanted(&e, &sel, &args.kind) {
            print_event(ctx, &e)?;
            shown += 1;
        }
        if stopping {
            break End::Stopped;
        }
    };
    finish(ctx, end, shown)
}

/// The first line: mpssd and the cards followed, as they are now.
fn print_start(ctx: &Ctx, status: &DaemonStatus, sel: &Selection) -> anyhow::Result<()> {
    let cards: Vec<&CardStatus> = status.cards.iter().filter(|c| sel.contains(c.card)).collect();
    if ctx.json {
        output::print_json(&output::record(
            "start",
            json!({
                "version": status.version,
                "pid": status.pid,
                "cards": cards.iter().map(|c| json!({
                    "card": c.name,
                    "supervisor": c.supervisor.as_str(),
                    "since_ms": c.since_ms,
                })).collect::<Vec<_>>(),
            }),
        ))?;
        return Ok(());
    }
    let list: Vec<String> = cards
        .iter()
        .map(|c| format!("{} {}", c.name, c.supervisor))
        .collect();
    let line = format!(
        "-- mpssd {} (pid {}): {} --",
        status.version,
        status.pid,
        if list.is_empty() {
            "no cards".to_owned()
        } else {
            list.join(", ")
        }
    );
    output::print_text(&format!("{}\n", Style::Dim.paint(&line, ctx.color)))?;
    Ok(())
}

/// Whether the event is of the cards and kinds asked for (daemon-wide ones
/// are of every card).
fn wanted(e: &Event, sel: &Selection, kinds: &[String]) -> bool {
    let card_ok = e.card.is_none_or(|c| sel.is_all() || sel.contains(c));
    card_ok && (kinds.is_empty() || kinds.iter().any(|k| k == e.kind.name()))
}

fn finish(ctx: &Ctx, end: End, shown: u64) -> anyhow::Result<Exit> {
    let (exit, reason, message) = match end {
        End::Count => (Exit::Ok, "count", format!("{shown} events")),
        End::Duration => (Exit::Ok, "duration", format!("{shown} events")),
        End::Timeout { got, want, after } => (
            Exit::Timeout,
            "timeout",
            format!(
                "{got} of {want} events within {}",
                output::human_duration(after.as_secs_f64())
            ),
        ),
        End::Stopped => (
            Exit::MpssdAbsent,
            "mpssd-stopped",
            "mpssd stopped: the event stream ended".to_owned(),
        ),
    };
    if ctx.json {
        output::print_json(&output::record(
            "end",
            json!({
                "reason": reason,
                "events": shown,
                "message": message,
                "exit_code": exit.code(),
            }),
        ))?;
    }
    if exit != Exit::Ok {
        eprintln!("micctl: {message}");
    }
    Ok(exit)
}

/// The JSON of an event: the protocol's fields, `card` as its name, and
/// the time in words.
#[must_use]
pub fn event_json(e: &Event) -> Value {
    let mut v = serde_json::to_value(e).unwrap_or(Value::Null);
    if let Some(c) = e.card {
        v["card"] = json!(format!("mic{c}"));
    }
    v["time"] = json!(timefmt::rfc3339_ms(e.ts_ms));
    v
}

fn print_event(ctx: &Ctx, e: &Event) -> anyhow::Result<()> {
    if ctx.json {
        let mut r = output::record("event", Value::Object(serde_json::Map::new()));
        if let (Value::Object(r), Value::Object(f)) = (&mut r, event_json(e)) {
            r.extend(f);
        }
        output::print_json(&r)?;
        return Ok(());
    }
    let (severity, text) = e.describe();
    let style = match severity {
        Severity::Debug => Style::Dim,
        Severity::Info => Style::Plain,
        Severity::Warn => Style::Yellow,
        Severity::Error => Style::Red,
    };
    output::print_text(&format!(
        "{} {}\n",
        Style::Dim.paint(&timefmt::rfc3339_ms(e.ts_ms), ctx.color),
        // Reasons and messages may quote what a card or a file said.
        style.paint(&libmic::attrs::escape_untrusted(&text), ctx.color)
    ))?;
    Ok(())
}
