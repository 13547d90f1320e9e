//! `micctl reset [CARDS]`: resets cards; `--wait` until `offline` (a
//! `reset_failed` card is a failure).

use std::time::{Duration, Instant};

use libmic::{Card, Outcome, ResetEnd};

use super::{CardOutcome, run_lifecycle};
use crate::Ctx;
use crate::cli::LifecycleArgs;
use crate::exit::Exit;
use crate::progress::CardProgress;

pub fn run(ctx: &Ctx, args: &LifecycleArgs) -> anyhow::Result<Exit> {
    run_lifecycle(ctx, args, "reset", "resetting", reset_one)
}

/// What a reset that ended in `reset_failed` reports.
pub const RESET_FAILED: &str =
    "the reset failed: the card's bootstrap did not come back (state reset_failed)";

fn reset_one(card: &Card, wait: Option<Duration>, strict: bool, pb: &CardProgress) -> CardOutcome {
    let start = Instant::now();
    let Some(t) = wait else {
        return match card.request_reset() {
            Ok(Outcome::AlreadyInState(_)) => CardOutcome::already(card, "already offline", start, strict),
            Ok(Outcome::Requested) => CardOutcome::ok(card, "reset requested", start),
            Err(e) => CardOutcome::from_error(card, &e, start),
        };
    };
    pb.set("waiting for offline");
    match card.reset_and_wait(Some(t)) {
        Ok(ResetEnd::AlreadyOffline) => CardOutcome::already(card, "already offline", start, strict),
        Ok(ResetEnd::Offline) => CardOutcome::ok(card, "reset (offline)", start),
        Ok(ResetEnd::Failed) => CardOutcome::failed(card, RESET_FAILED, start),
        Err(e) => CardOutcome::from_error(card, &e, start),
    }
}
