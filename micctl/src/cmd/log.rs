//! `micctl log CARD`: the card kernel log from debugfs `log_buf`, dmesg
//! style. `--follow` re-reads the buffer every 200 ms (the log has no change
//! notification, on real hardware either) and wakes early on a state change
//! through poll on `state`; a card reset or reboot prints a separator.

use std::time::{Duration, Instant};

use libmic::attrs::escape_untrusted_keep_tabs;
use libmic::klog::{LogFollower, LogRecord};
use libmic::{Card, MicState, MicStatus};
use serde_json::json;

use crate::Ctx;
use crate::cli::{LogArgs, Since, TimeFormat};
use crate::exit::Exit;
use crate::output::{self, Style, level_style};

/// How often `--follow` re-reads the log buffer.
pub const FOLLOW_INTERVAL: Duration = Duration::from_millis(200);
/// The interval while a shutdown is under way and the card has not reported
/// its final status: its last lines come just before that report, and a
/// reset right after it makes the log unreadable.
pub const SHUTDOWN_INTERVAL: Duration = Duration::from_millis(10);

/// `1m02.345s`-style time since card boot.
#[must_use]
pub fn human_ts(ns: u64) -> String {
    let ms = ns / 1_000_000;
    let (h, m, s, milli) = (ms / 3_600_000, (ms / 60_000) % 60, (ms / 1000) % 60, ms % 1000);
    match (h, m) {
        (0, 0) => format!("{s}.{milli:03}s"),
        (0, _) => format!("{m}m{s:02}.{milli:03}s"),
        _ => format!("{h}h{m:02}m{s:02}.{milli:03}s"),
    }
}

struct Printer<'a> {
    ctx: &'a Ctx,
    card: String,
    format: TimeFormat,
    level: Option<u8>,
    prev_ts: Option<u64>,
}

impl Printer<'_> {
    fn line(&mut self, r: &LogRecord) -> String {
        let ts = match self.format {
            TimeFormat::Kernel => format!("{} ", r.dmesg_timestamp()),
            TimeFormat::Human => format!("[{:>12}] ", human_ts(r.ts_nsec)),
            TimeFormat::Delta => {
                let d = self.prev_ts.map_or(0, |p| r.ts_nsec.saturating_sub(p));
                format!("[{:>+12.6}] ", Duration::from_nanos(d).as_secs_f64())
            }
            TimeFormat::None => String::new(),
        };
        self.prev_ts = Some(r.ts_nsec);
        let color = self.ctx.color;
        format!(
            "{}{}\n",
            Style::Green.paint(&ts, color && !ts.is_empty()),
            level_style(r.level).paint(&escape_untrusted_keep_tabs(&r.text), color)
        )
    }

    fn records<'r>(&mut self, recs: impl IntoIterator<Item = &'r LogRecord>) -> anyhow::Result<()> {
        let mut out = String::new();
        for r in recs {
            if self.level.is_some_and(|l| r.level > l) {
                continue;
            }
            if self.ctx.json {
                output::print_json(&output::record(
                    "record",
                    json!({
                        "card": self.card,
                        "ts_nsec": r.ts_nsec,
                        "timestamp": r.timestamp_secs(),
                        "level": r.level_name(),
                        "level_num": r.level,
                        "facility": r.facility,
                        "text": r.text,
                    }),
                ))?;
            } else {
                out.push_str(&self.line(r));
            }
        }
        if !out.is_empty() {
            output::print_text(&out)?;
        }
        Ok(())
    }

    fn event(&mut self, kind: &str, human: &str) -> anyhow::Result<()> {
        if self.ctx.json {
            output::print_json(&output::record(kind, json!({ "card": self.card })))?;
        } else if kind == "lost" {
            eprintln!("micctl: warning: {}: {human}", self.card);
        } else {
            output::print_text(&format!(
                "{}\n",
                Style::Dim.paint(&format!("-- {}: {human} --", self.card), self.ctx.color)
            ))?;
        }
        Ok(())
    }
}

pub fn run(ctx: &Ctx, args: &LogArgs) -> anyhow::Result<Exit> {
    let sel = crate::select::Selection::parse(&[args.card.as_str()])?;
    let cards = sel.resolve(&ctx.root)?;
    let [card] = cards.as_slice() else {
        return Err(crate::UsageError(format!("log takes exactly one card, not {:?}", args.card)).into());
    };
    let mut p = Printer {
        ctx,
        card: card.name().to_owned(),
        format: args.time_format,
        level: args.level,
        prev_ts: None,
    };
    let mut follower = LogFollower::new();
    // The watcher is opened before the first read so no state change
    // between the two is missed.
    let mut watcher = if args.follow {
        Some(card.watch_state()?)
    } else {
        None
    };
    let first = follower.update(&card.log_buf_raw()?).records;
    if first.is_empty() && !ctx.json {
        explain_empty(card);
    }
    let from = match args.since {
        None => 0,
        Some(Since::CardTime(d)) => u64::try_from(d.as_nanos()).unwrap_or(u64::MAX),
        Some(Since::Ago(d)) => first.last().map_or(0, |r| {
            r.ts_nsec
                .saturating_sub(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        }),
    };
    p.records(first.iter().filter(|r| r.ts_nsec >= from))?;
    let Some(w) = watcher.as_mut() else {
        return Ok(Exit::Ok);
    };
    let deadline = args.duration.map(|d| Instant::now() + d);
    let mut restarted = false;
    loop {
        // A shutdown whose final status is still to come is watched closely.
        let closing = w.current() == MicState::ShuttingDown
            && card.shutdown_status().is_ok_and(|s| s == MicStatus::Nop);
        let mut nap = if closing {
            SHUTDOWN_INTERVAL
        } else {
            FOLLOW_INTERVAL
        };
        if let Some(d) = deadline {
            let left = d.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(Exit::Ok);
            }
            nap = nap.min(left);
        }
        if w.wait_change(Some(nap))? == Some(MicState::Offline) {
            // The card was reset: whatever it logs next is a new boot.
            if closing {
                p.event(
                    "lost",
                    "the card was reset during its shutdown: its last log lines may be missing",
                )?;
            }
            follower = LogFollower::new();
            restarted = true;
        }
        let update = follower.update(&card.log_buf_raw()?);
        if (update.reset || restarted) && !update.records.is_empty() {
            restarted = false;
            p.prev_ts = None;
            p.event("reset", "card reset, new boot")?;
        }
        if update.lost {
            p.event(
                "lost",
                "some log records were overwritten before they could be read",
            )?;
        }
        p.records(&update.records)?;
    }
}

/// Says on stderr why a log is empty, when it can tell.
fn explain_empty(card: &Card) {
    let name = card.name();
    match card.state() {
        Ok(MicState::Offline | MicState::ResetFailed) => {
            eprintln!("micctl: {name} is not running: there is no card log (boot it first)");
        }
        _ => {
            if card.log_buf_addr().ok().flatten().is_none() {
                eprintln!(
                    "micctl: {name}: log_buf_addr is not set, so the driver cannot find the card log; \
                     boot the card with `micctl boot` (which sets it from System.map)"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_timestamps() {
        assert_eq!(human_ts(1_234_567_890), "1.234s");
        assert_eq!(human_ts(62_345_000_000), "1m02.345s");
        assert_eq!(human_ts(3_723_004_000_000), "1h02m03.004s");
    }
}
