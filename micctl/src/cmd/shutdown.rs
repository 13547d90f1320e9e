//! `micctl shutdown [CARDS]`: asks the card OS to shut down; `--wait` until
//! it reports a final `shutdown_status` (halted, poweroff, ...).

use std::time::{Duration, Instant};

use libmic::{Card, MicState, Outcome};

use super::{CardOutcome, run_lifecycle};
use crate::Ctx;
use crate::cli::LifecycleArgs;
use crate::exit::Exit;
use crate::progress::CardProgress;

pub fn run(ctx: &Ctx, args: &LifecycleArgs) -> anyhow::Result<Exit> {
    run_lifecycle(ctx, args, "shutdown", "shutting down", shutdown_one)
}

fn shutdown_one(card: &Card, wait: Option<Duration>, strict: bool, pb: &CardProgress) -> CardOutcome {
    let start = Instant::now();
    match card.request_shutdown() {
        Ok(Outcome::AlreadyInState(MicState::Offline)) => {
            CardOutcome::already(card, "already offline", start, strict)
        }
        Ok(Outcome::AlreadyInState(s)) => {
            CardOutcome::already(card, format!("already {}", s.as_str()), start, strict)
        }
        Ok(Outcome::Requested) => match wait {
            None => CardOutcome::ok(card, "shutdown requested", start),
            Some(t) => {
                pb.set("waiting for the card OS to shut down");
                match card.wait_shutdown_status(Some(t.saturating_sub(start.elapsed()))) {
                    Ok((state, status)) => CardOutcome::ok(
                        card,
                        format!("shut down ({}, {})", state.as_str(), status.as_str()),
                        start,
                    ),
                    Err(e) => CardOutcome::from_error(card, &e, start),
                }
            }
        },
        Err(e) => CardOutcome::from_error(card, &e, start),
    }
}
