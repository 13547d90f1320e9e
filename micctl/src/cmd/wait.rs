//! `micctl wait [CARDS] --state STATE --timeout T`: waits on every card's
//! `state` at once (one poll over all of them), printing each transition as
//! it happens (a JSON Lines `state` record with --json) and a result per
//! card at the end.

use std::time::Instant;

use libmic::{MicState, StateWatcher, wait_any};
use serde_json::json;

use super::{CardOutcome, Kind, combine, default_timeout, print_outcomes, round_ms, select_within, until};
use crate::Ctx;
use crate::cli::WaitArgs;
use crate::exit::Exit;
use crate::output::{self, state_style};
use crate::progress::Progress;

pub fn run(ctx: &Ctx, args: &WaitArgs) -> anyhow::Result<Exit> {
    let cards = select_within(ctx, &args.cards, args.timeout)?;
    let target: MicState = args.state.into();
    let timeout = args.timeout.unwrap_or_else(|| default_timeout(cards.len()));
    let start = Instant::now();
    let deadline = start + timeout;
    let cards = until(cards, deadline);
    let mut watchers = cards
        .iter()
        .map(libmic::Card::watch_state)
        .collect::<Result<Vec<StateWatcher>, _>>()?;
    let mut done: Vec<Option<CardOutcome>> = vec![None; cards.len()];
    let progress = Progress::new(ctx.progress);
    let bars: Vec<_> = watchers
        .iter()
        .map(|w| progress.card(w.card_name(), w.current().as_str()))
        .collect();
    let mut prev: Vec<MicState> = watchers.iter().map(StateWatcher::current).collect();
    // A card that is already there counts at once.
    let settle = |i: usize, s: MicState, done: &mut Vec<Option<CardOutcome>>| {
        if done[i].is_some() {
            return;
        }
        if s == target {
            done[i] = Some(CardOutcome::ok(&cards[i], s.as_str(), start));
        } else if s == MicState::ResetFailed {
            done[i] = Some(CardOutcome::failed(
                &cards[i],
                format!("reset_failed while waiting for {}", target.as_str()),
                start,
            ));
        }
        if done[i].is_some() {
            bars[i].done();
        }
    };
    for (i, s) in prev.iter().enumerate() {
        settle(i, *s, &mut done);
    }
    // The watchers of the cards still pending, and their card indices.
    let (mut idx, mut ws): (Vec<usize>, Vec<StateWatcher>) = watchers
        .drain(..)
        .enumerate()
        .filter(|(i, _)| done[*i].is_none())
        .unzip();
    while !ws.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let changed = wait_any(&mut ws, Some(left))?;
        if changed.is_empty() {
            break;
        }
        for k in changed {
            let i = idx[k];
            let now = ws[k].current();
            let from = std::mem::replace(&mut prev[i], now);
            bars[i].set(now.as_str());
            transition(ctx, cards[i].name(), from, now, start)?;
            settle(i, now, &mut done);
        }
        // Stop watching the cards that are done.
        for k in (0..ws.len()).rev() {
            if done[idx[k]].is_some() {
                idx.swap_remove(k);
                ws.swap_remove(k);
            }
        }
    }
    let outcomes: Vec<CardOutcome> = done
        .into_iter()
        .enumerate()
        .map(|(i, o)| {
            o.unwrap_or_else(|| {
                bars[i].done();
                let msg = format!(
                    "timed out after {} waiting for {} (state {})",
                    output::human_duration(timeout.as_secs_f64()),
                    target.as_str(),
                    prev[i].as_str()
                );
                CardOutcome::new(&cards[i], Kind::TimedOut, msg, start, Exit::Timeout)
            })
        })
        .collect();
    let exit = combine(&outcomes);
    if ctx.json {
        output::print_json(&output::record(
            "result",
            json!({
                "state": target.as_str(),
                "cards": outcomes.iter().map(CardOutcome::to_json).collect::<Vec<_>>(),
                "exit_code": exit.code(),
            }),
        ))?;
    } else {
        print_outcomes(ctx, &outcomes)?;
    }
    Ok(exit)
}

/// Prints one state change: a JSON Lines `state` record, or a line when no
/// spinner shows it.
fn transition(ctx: &Ctx, card: &str, from: MicState, to: MicState, start: Instant) -> anyhow::Result<()> {
    let elapsed = start.elapsed().as_secs_f64();
    if ctx.json {
        output::print_json(&output::record(
            "state",
            json!({
                "card": card,
                "from": from.as_str(),
                "to": to.as_str(),
                "elapsed_secs": round_ms(elapsed),
            }),
        ))?;
    } else if !ctx.progress {
        output::print_text(&format!(
            "{card}: {} → {} (+{})\n",
            from.as_str(),
            state_style(to).paint(to.as_str(), ctx.color),
            output::human_duration(elapsed)
        ))?;
    }
    Ok(())
}
