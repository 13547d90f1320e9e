//! `micctl log CARD`: the card kernel log from debugfs `log_buf`, dmesg
//! style. `--follow` re-reads the buffer every 200 ms (the log has no change
//! notification, on real hardware either) and wakes early on a state change
//! through poll on `state`; a card reset or reboot prints a separator.

use std::time::{Duration, Instant};

use libmic::attrs::escape_untrusted_keep_tabs;
use libmic::klog::{CardLogFollower, LogEntry, LogRecord, Lost, decode_log};
use libmic::{Card, IoLimit, MicState};
use serde_json::json;

use super::ACCESS_LIMIT;
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
    /// Records before this card time are not shown (`--since`).
    from: u64,
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

    /// A marker line: `-- mic0: card reset, new boot --`.
    fn marker(&self, human: &str) -> String {
        format!(
            "{}\n",
            Style::Dim.paint(&format!("-- {}: {human} --", self.card), self.ctx.color)
        )
    }

    /// Prints entries in order: records (filtered by level and --since),
    /// losses and resets as markers (JSON: `lost` and `reset` records).
    fn entries(&mut self, entries: &[LogEntry]) -> anyhow::Result<()> {
        let mut out = String::new();
        for e in entries {
            match e {
                LogEntry::Record(r) => {
                    if self.level.is_some_and(|l| r.level > l) || r.ts_nsec < self.from {
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
                LogEntry::Lost(l) => {
                    if l.before_ts.is_some_and(|b| b < self.from) {
                        continue;
                    }
                    if self.ctx.json {
                        output::print_json(&output::record("lost", lost_json(&self.card, l)))?;
                    } else {
                        out.push_str(&self.marker(&l.describe()));
                    }
                }
                LogEntry::Reset => {
                    self.prev_ts = None;
                    if self.ctx.json {
                        output::print_json(&output::record("reset", json!({ "card": self.card })))?;
                    } else {
                        out.push_str(&self.marker("card reset, new boot"));
                    }
                }
            }
        }
        if !out.is_empty() {
            output::print_text(&out)?;
        }
        Ok(())
    }
}

/// A `lost` JSON Lines record: why, how many bytes when they are known, and
/// between which card times.
fn lost_json(card: &str, l: &Lost) -> serde_json::Value {
    json!({
        "card": card,
        "reason": l.reason.as_str(),
        "bytes": l.bytes,
        "after_ts_nsec": l.after_ts,
        "before_ts_nsec": l.before_ts,
        "message": l.describe(),
    })
}

pub fn run(ctx: &Ctx, args: &LogArgs) -> anyhow::Result<Exit> {
    let sel = crate::select::Selection::parse(&[args.card.as_str()])?;
    let cards = sel.resolve(&ctx.root)?;
    let [card] = cards.as_slice() else {
        return Err(crate::UsageError(format!(
            "log takes exactly one card, not {}",
            libmic::attrs::quote_value(&args.card)
        ))
        .into());
    };
    let mut p = Printer {
        ctx,
        card: card.name().to_owned(),
        format: args.time_format,
        level: args.level,
        from: 0,
        prev_ts: None,
    };
    if !args.follow {
        // TIMEOUT: a one-shot read is over within the access bound.
        let card = card
            .clone()
            .with_io_limit(IoLimit::until(Instant::now() + ACCESS_LIMIT));
        let entries = decode_log(&card.log_buf_raw()?);
        return print_first(&mut p, &card, args.since, &entries).map(|()| Exit::Ok);
    }
    // Each read of the stream is bounded on its own.
    let card = card.clone().with_io_limit(IoLimit::per_access(ACCESS_LIMIT));
    let mut log = CardLogFollower::open(&card)?;
    let first = log.next(Duration::ZERO)?;
    print_first(&mut p, &card, args.since, &first)?;
    let deadline = args.duration.map(|d| Instant::now() + d);
    loop {
        // A shutdown whose final status is still to come is watched closely.
        let mut nap = if log.closing() {
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
        // Wakes at once on a state change; a reset or reboot starts a new
        // log (a `reset` marker), told by the card's state, never by what
        // an unreadable ring looks like.
        let entries = log.next(nap)?;
        p.entries(&entries)?;
    }
}

/// The first read: `--since` fixes the first card time shown, then the
/// entries are printed (and an empty log is explained).
fn print_first(
    p: &mut Printer<'_>,
    card: &Card,
    since: Option<Since>,
    entries: &[LogEntry],
) -> anyhow::Result<()> {
    let newest = libmic::klog::records(entries).map(|r| r.ts_nsec).max();
    if newest.is_none() && !p.ctx.json {
        explain_empty(card);
    }
    p.from = match since {
        None => 0,
        Some(Since::CardTime(d)) => u64::try_from(d.as_nanos()).unwrap_or(u64::MAX),
        Some(Since::Ago(d)) => newest.map_or(0, |t| {
            t.saturating_sub(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        }),
    };
    p.entries(entries)?;
    // Later boots start from their beginning.
    p.from = 0;
    Ok(())
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
