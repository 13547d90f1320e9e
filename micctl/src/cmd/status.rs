//! `micctl status [CARDS]`: one row per card; `--watch` prints every change
//! as it happens.
//!
//! Time in state: sysfs keeps no timestamps, so it is only shown when it is
//! known. With `--watch` it is the time since micctl observed the change
//! (`source: observed`). Otherwise, for an online card, the newest record
//! of the card kernel log gives a lower bound of the time since boot (the
//! card clock starts at the bootstrap, right after the state became online;
//! `source: card-log`, `lower_bound: true`, shown as `>=12.3s`). Everything
//! else is unknown (`null`, shown as `-`).
//!
//! A card whose `state` cannot be read is still listed, marked `unreadable`
//! (JSON: `state` null and an `error`), with the reason on stderr; the
//! other cards are shown as usual and the exit code is 7 (all unreadable:
//! their common code). `--timeout` bounds the whole read (10 s by default):
//! a driver that does not answer by then is hung (exit 6, naming the file).
//!
//! Under the table, mpssd's view ([`crate::supervision`]): its supervisor
//! state for each card, the card's virtio devices, its last crash; or that
//! mpssd is not running. It is asked beside the card reads and answers
//! within 2 s (or `--timeout`): an mpssd that does not is reported (exit 6
//! when the cards themselves were fine), the card table still printed.

use std::time::{Duration, Instant};

use libmic::{Card, IoLimit, MicState, MicStatus, StateWatcher, wait_any};
use mic_core::post;
use serde_json::{Value, json};

use super::{ACCESS_LIMIT, round_ms, select};
use crate::Ctx;
use crate::cli::StatusArgs;
use crate::exit::Exit;
use crate::output::{self, Cell, Style, state_style, status_style};
use crate::supervision;

/// How often POST codes and shutdown_status are re-read while they are
/// moving (a boot, a reset, a shutdown in progress): they have no change
/// notification of their own that tells a boot step apart. A settled fleet
/// is waited on with poll alone.
const TRANSIENT_POLL: Duration = Duration::from_millis(100);
/// The longest a transient card goes unread while it stays unchanged.
const TRANSIENT_MAX: Duration = Duration::from_secs(5);

/// Where a time in state comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum InState {
    /// micctl saw the state change at this instant.
    Observed(Instant),
    /// At least this long, from the card log.
    AtLeast(Duration),
    Unknown,
}

/// One card's row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub card: String,
    pub id: u32,
    pub state: MicState,
    pub shutdown_status: Option<MicStatus>,
    pub family: Option<String>,
    pub stepping: Option<String>,
    pub ipaddr: Option<String>,
    pub post_code: Option<String>,
    pub in_state: InState,
}

impl Row {
    /// Reads a card's row; the state is taken from `state` if given (a
    /// watcher's latest read), else read.
    /// `with_log`: derive the time in state from the card log (one-shot
    /// status; --watch observes it instead).
    pub fn read(card: &Card, state: Option<MicState>, with_log: bool) -> libmic::Result<Self> {
        let state = match state {
            Some(s) => s,
            None => card.state()?,
        };
        let in_state = if with_log && state == MicState::Online {
            card.log_buf_raw()
                .ok()
                .and_then(|raw| libmic::klog::decode(&raw).last().map(|r| r.ts_nsec))
                .map_or(InState::Unknown, |ns| InState::AtLeast(Duration::from_nanos(ns)))
        } else {
            InState::Unknown
        };
        Ok(Self {
            card: card.name().to_owned(),
            id: card.id(),
            state,
            shutdown_status: card.shutdown_status().ok(),
            family: card.family().ok(),
            stepping: card.stepping().ok(),
            ipaddr: card.ipaddr().ok().flatten().map(|a| a.to_string()),
            post_code: card.post_code().ok().flatten(),
            in_state,
        })
    }

    /// Whether something is still moving without a `state` change to tell.
    fn transient(&self) -> bool {
        match self.state {
            MicState::Online => self.post_code.as_deref() != post::as_str(&post::RUNNING),
            MicState::Offline => self
                .post_code
                .as_deref()
                .is_some_and(|p| Some(p) != post::as_str(&post::READY)),
            MicState::ShuttingDown => self.shutdown_status == Some(MicStatus::Nop),
            MicState::ResetFailed => false,
        }
    }

    fn in_state_json(&self) -> Value {
        match self.in_state {
            InState::Observed(t) => json!({
                "seconds": round_ms(t.elapsed().as_secs_f64()),
                "source": "observed",
                "lower_bound": false,
            }),
            InState::AtLeast(d) => json!({
                "seconds": round_ms(d.as_secs_f64()),
                "source": "card-log",
                "lower_bound": true,
            }),
            InState::Unknown => Value::Null,
        }
    }

    fn in_state_human(&self) -> String {
        match self.in_state {
            InState::Observed(t) => output::human_duration(t.elapsed().as_secs_f64()),
            InState::AtLeast(d) => format!(">={}", output::human_duration(d.as_secs_f64())),
            InState::Unknown => "-".to_owned(),
        }
    }

    #[must_use]
    pub fn to_json(&self) -> Value {
        json!({
            "card": self.card,
            "id": self.id,
            "state": self.state.as_str(),
            "shutdown_status": self.shutdown_status.map(MicStatus::as_str),
            "family": self.family,
            "stepping": self.stepping,
            "ipaddr": self.ipaddr,
            "post_code": self.post_code,
            "time_in_state": self.in_state_json(),
        })
    }

    fn cells(&self) -> Vec<Cell> {
        let dash = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".to_owned());
        vec![
            Cell::new(&self.card),
            Cell::styled(self.state.as_str(), state_style(self.state)),
            self.shutdown_status
                .map_or_else(|| Cell::new("-"), |s| Cell::styled(s.as_str(), status_style(s))),
            Cell::new(dash(&self.family)),
            Cell::new(dash(&self.stepping)),
            Cell::new(dash(&self.ipaddr)),
            Cell::new(self.in_state_human()),
            Cell::new(dash(&self.post_code)),
        ]
    }

    /// What differs from `old`, for a watch line: `state offline → online`.
    fn changes(&self, old: &Row) -> Vec<(&'static str, String, String)> {
        let o = |x: &Option<String>| x.clone().unwrap_or_else(|| "-".to_owned());
        let st = |x: Option<MicStatus>| x.map_or("-", MicStatus::as_str).to_owned();
        let mut v = Vec::new();
        if self.state != old.state {
            v.push((
                "state",
                old.state.as_str().to_owned(),
                self.state.as_str().to_owned(),
            ));
        }
        if self.shutdown_status != old.shutdown_status {
            v.push((
                "shutdown_status",
                st(old.shutdown_status),
                st(self.shutdown_status),
            ));
        }
        if self.post_code != old.post_code {
            v.push(("post_code", o(&old.post_code), o(&self.post_code)));
        }
        if self.ipaddr != old.ipaddr {
            v.push(("ipaddr", o(&old.ipaddr), o(&self.ipaddr)));
        }
        v
    }
}

const HEADERS: [&str; 8] = [
    "CARD", "STATE", "SHUTDOWN", "FAMILY", "STEPPING", "IPADDR", "IN STATE", "POST",
];

pub fn run(ctx: &Ctx, args: &StatusArgs) -> anyhow::Result<Exit> {
    let limit = args.timeout.unwrap_or(ACCESS_LIMIT);
    if args.watch {
        let ctx = Ctx {
            root: ctx.root.clone().with_io_limit(IoLimit::per_access(limit)),
            ..ctx.clone()
        };
        let cards = select(&ctx, &args.cards)?;
        return watch(&ctx, &cards, args.duration);
    }
    // TIMEOUT: the whole status, enumeration included, is over by then.
    let deadline = Instant::now() + limit;
    let ctx = Ctx {
        root: ctx.root.clone().with_io_limit(IoLimit::until(deadline)),
        ..ctx.clone()
    };
    let asking = supervision::ask(&ctx.root, deadline);
    let cards = select(&ctx, &args.cards)?;
    let rows = read_rows(&cards);
    let (socket, view) = asking.answer();
    let exit = Exit::combine(
        rows.iter()
            .map(|r| r.as_ref().map_or_else(Exit::of_libmic, |_| Exit::Ok)),
    );
    // The cards first: a failing mpssd decides only when they were fine.
    let exit = if exit == Exit::Ok { view.exit() } else { exit };
    if ctx.json {
        let cards: Vec<Value> = cards
            .iter()
            .zip(&rows)
            .map(|(c, r)| {
                let mut v = r.as_ref().map_or_else(|e| broken_json(c, e), Row::to_json);
                v["supervision"] = view.card(c.id()).map_or(Value::Null, supervision::card_json);
                v
            })
            .collect();
        output::print_json(&output::document(
            "status",
            json!({ "cards": cards, "mpssd": view.to_json(&socket) }),
        ))?;
    } else {
        let cells: Vec<_> = cards
            .iter()
            .zip(&rows)
            .map(|(c, r)| r.as_ref().map_or_else(|_| broken_cells(c), Row::cells))
            .collect();
        let ids: Vec<u32> = cards.iter().map(Card::id).collect();
        output::print_text(&format!(
            "{}\n{}\n{}",
            output::table(&HEADERS, &cells, ctx.color),
            view.headline(ctx.color),
            supervision::table(&view, &ids, ctx.color)
        ))?;
    }
    for (c, r) in cards.iter().zip(&rows) {
        if let Err(e) = r {
            eprintln!("micctl: {}: {}", c.name(), libmic::error::report(e));
        }
    }
    if let Some(e) = view.error() {
        eprintln!("micctl: {}", supervision::error_text(e));
    }
    Ok(exit)
}

/// A card whose state could not be read, as JSON: its name, `state` null,
/// and why.
fn broken_json(card: &Card, e: &libmic::Error) -> Value {
    json!({
        "card": card.name(),
        "id": card.id(),
        "state": null,
        "shutdown_status": null,
        "family": null,
        "stepping": null,
        "ipaddr": null,
        "post_code": null,
        "time_in_state": null,
        "error": libmic::error::report(e),
    })
}

fn broken_cells(card: &Card) -> Vec<Cell> {
    let mut cells = vec![Cell::new(card.name()), Cell::styled("unreadable", Style::BoldRed)];
    cells.extend((2..HEADERS.len()).map(|_| Cell::new("-")));
    cells
}

/// Reads every card's row, spreading the cards over a few threads: each
/// attribute read is a round trip to the driver (or to micemu's FUSE
/// server), so a large fleet is read faster in parallel than one by one.
fn read_rows(cards: &[Card]) -> Vec<libmic::Result<Row>> {
    const READERS: usize = 8;
    let chunk = cards.len().div_ceil(READERS).max(1);
    std::thread::scope(|s| {
        let workers: Vec<_> = cards
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    // One bounded hand-off per card, not one per file.
                    part.iter()
                        .map(|c| c.batch(|c| Row::read(c, None, true)).and_then(|r| r))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut rows = Vec::with_capacity(cards.len());
        for w in workers {
            // A reader thread only panics on a bug; surface it as one.
            rows.extend(w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
        }
        rows
    })
}

fn watch(ctx: &Ctx, cards: &[Card], duration: Option<Duration>) -> anyhow::Result<Exit> {
    let start = Instant::now();
    let deadline = duration.map(|d| start + d);
    let mut watchers = cards
        .iter()
        .map(Card::watch_state)
        .collect::<libmic::Result<Vec<StateWatcher>>>()?;
    let mut rows = cards
        .iter()
        .zip(&watchers)
        .map(|(c, w)| Row::read(c, Some(w.current()), true))
        .collect::<libmic::Result<Vec<_>>>()?;
    if ctx.json {
        for r in &rows {
            emit_json(r, &[], start)?;
        }
    } else {
        let cells: Vec<_> = rows.iter().map(Row::cells).collect();
        output::print_text(&output::table(&HEADERS, &cells, ctx.color))?;
    }
    // When each transient card (moving without a `state` change: POST
    // codes while booting, a shutdown status still to come) is looked at
    // next, and how long it has been quiet: an unchanged card is looked at
    // less and less often, so a hung card costs next to nothing.
    let mut follow: Vec<Option<(Instant, Duration)>> = rows
        .iter()
        .map(|r| {
            r.transient()
                .then(|| (Instant::now() + TRANSIENT_POLL, TRANSIENT_POLL))
        })
        .collect();
    loop {
        let mut timeout = follow
            .iter()
            .flatten()
            .map(|(next, _)| next.saturating_duration_since(Instant::now()))
            .min();
        if let Some(d) = deadline {
            let left = d.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(Exit::Ok);
            }
            timeout = Some(timeout.map_or(left, |t| t.min(left)));
        }
        // Blocks in poll(2) on every card's `state`; the timeout only runs
        // while something transient is being followed or --duration is set.
        let woke = wait_any(&mut watchers, timeout)?;
        let now = Instant::now();
        for (i, card) in cards.iter().enumerate() {
            let due = follow[i].is_some_and(|(next, _)| next <= now);
            if !woke.contains(&i) && !due {
                continue;
            }
            let mut new = Row::read(card, Some(watchers[i].current()), false)?;
            let old = &rows[i];
            new.in_state = if new.state == old.state {
                old.in_state
            } else {
                InState::Observed(Instant::now())
            };
            let changes = new.changes(old);
            let quiet = follow[i].map_or(TRANSIENT_POLL, |(_, q)| q);
            let interval = if changes.is_empty() {
                (quiet * 2).min(TRANSIENT_MAX)
            } else {
                TRANSIENT_POLL
            };
            follow[i] = new.transient().then_some((now + interval, interval));
            if changes.is_empty() {
                continue;
            }
            if ctx.json {
                let names: Vec<&str> = changes.iter().map(|c| c.0).collect();
                emit_json(&new, &names, start)?;
            } else {
                let what: Vec<String> = changes
                    .iter()
                    .map(|(k, a, b)| {
                        let b = if *k == "state" {
                            state_style(new.state).paint(b, ctx.color)
                        } else {
                            Style::Plain.paint(b, ctx.color)
                        };
                        format!("{k} {a} → {b}")
                    })
                    .collect();
                output::print_text(&format!(
                    "[+{:.3}s] {}: {}\n",
                    start.elapsed().as_secs_f64(),
                    new.card,
                    what.join(", ")
                ))?;
            }
            rows[i] = new;
        }
    }
}

fn emit_json(row: &Row, changed: &[&str], start: Instant) -> anyhow::Result<()> {
    let mut v = output::record("card", row.to_json());
    v["changed"] = json!(changed);
    v["elapsed_secs"] = json!(round_ms(start.elapsed().as_secs_f64()));
    output::print_json(&v)?;
    Ok(())
}
