//! `micctl reset [CARDS]`: resets cards; `--wait` until `offline` (a
//! `reset_failed` card is a failure).

use std::time::{Duration, Instant};

use libmic::{Card, MicState, Outcome};

use super::{CardOutcome, default_timeout, report, run_parallel, select};
use crate::Ctx;
use crate::cli::LifecycleArgs;
use crate::exit::Exit;
use crate::progress::CardProgress;

pub fn run(ctx: &Ctx, args: &LifecycleArgs) -> anyhow::Result<Exit> {
    let cards = select(ctx, &args.cards)?;
    let timeout = args.wait.timeout.unwrap_or_else(|| default_timeout(cards.len()));
    let wait = args.wait.wait.then_some(timeout);
    let strict = args.wait.strict;
    let outcomes = run_parallel(ctx, &cards, wait.is_some(), "resetting", |card, pb| {
        reset_one(card, wait, strict, pb)
    });
    report(ctx, "reset", &outcomes, &[])
}

fn reset_one(card: &Card, wait: Option<Duration>, strict: bool, pb: &CardProgress) -> CardOutcome {
    let start = Instant::now();
    match card.request_reset() {
        Ok(Outcome::AlreadyInState(_)) => CardOutcome::already(card, "already offline", start, strict),
        Ok(Outcome::Requested) => match wait {
            None => CardOutcome::ok(card, "reset requested", start),
            Some(t) => {
                pb.set("waiting for offline");
                wait_reset(card, t, start).unwrap_or_else(|o| o)
            }
        },
        Err(e) => CardOutcome::from_error(card, &e, start),
    }
}

/// Waits for a reset to end: `offline` is success, `reset_failed` failure.
pub fn wait_reset(card: &Card, timeout: Duration, start: Instant) -> Result<CardOutcome, CardOutcome> {
    let left = timeout.saturating_sub(start.elapsed());
    match card.wait_for(
        |s| matches!(s, MicState::Offline | MicState::ResetFailed),
        Some(left),
    ) {
        Ok(MicState::Offline) => Ok(CardOutcome::ok(card, "reset (offline)", start)),
        Ok(_) => Err(CardOutcome::failed(
            card,
            "the reset failed: the card's bootstrap did not come back (state reset_failed)",
            start,
        )),
        Err(e) => Err(CardOutcome::from_error(card, &e, start)),
    }
}
