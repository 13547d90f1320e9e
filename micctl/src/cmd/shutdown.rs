//! `micctl shutdown [CARDS]`: asks the card OS to shut down; `--wait` until
//! it reports a final `shutdown_status` (halted, poweroff, ...).

use std::time::{Duration, Instant};

use libmic::{Card, MicState, Outcome};

use super::{CardOutcome, default_timeout, report, run_parallel, select, wait_shut_down};
use crate::Ctx;
use crate::cli::LifecycleArgs;
use crate::exit::Exit;
use crate::progress::CardProgress;

pub fn run(ctx: &Ctx, args: &LifecycleArgs) -> anyhow::Result<Exit> {
    let cards = select(ctx, &args.cards)?;
    let timeout = args.wait.timeout.unwrap_or_else(|| default_timeout(cards.len()));
    let wait = args.wait.wait.then_some(timeout);
    let strict = args.wait.strict;
    let outcomes = run_parallel(ctx, &cards, wait.is_some(), "shutting down", |card, pb| {
        shutdown_one(card, wait, strict, pb)
    });
    report(ctx, "shutdown", &outcomes, &[])
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
                match wait_shut_down(card, start + t) {
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
