//! `micctl reboot [CARDS]`: shutdown (waiting for the card OS to report its
//! final shutdown_status) → reset (waiting for offline) → boot; `--wait`
//! also waits for the card OS to be up again. One deadline covers it all.

use std::time::Instant;

use libmic::{Card, Outcome, StopStep};

use super::boot::BootPlan;
use super::reset::RESET_FAILED;
use super::{CardOutcome, default_timeout, report, run_parallel, select_within, until, wait_booted};
use crate::Ctx;
use crate::cli::RebootArgs;
use crate::exit::Exit;
use crate::progress::CardProgress;

pub fn run(ctx: &Ctx, args: &RebootArgs) -> anyhow::Result<Exit> {
    let cards = select_within(ctx, &args.cards, args.timeout)?;
    let timeout = args.timeout.unwrap_or_else(|| default_timeout(cards.len()));
    let cards = until(cards, Instant::now() + timeout);
    let (plan, warnings) = BootPlan::new(&ctx.root, &args.boot);
    let outcomes = run_parallel(ctx, &cards, true, "shutting down", |card, pb| {
        let start = Instant::now();
        reboot_one(card, &plan, start, start + timeout, args.wait, pb).unwrap_or_else(|o| o)
    });
    report(ctx, "reboot", &outcomes, &warnings)
}

fn reboot_one(
    card: &Card,
    plan: &BootPlan,
    start: Instant,
    deadline: Instant,
    wait_os: bool,
    pb: &CardProgress,
) -> Result<CardOutcome, CardOutcome> {
    let err = |e: libmic::Error| match e {
        libmic::Error::ResetFailed { .. } => CardOutcome::failed(card, RESET_FAILED, start),
        e => CardOutcome::from_error(card, &e, start),
    };
    let mut steps = Vec::new();
    let left = deadline.saturating_duration_since(Instant::now());
    let stopped = card
        .stop(Some(left), |step| {
            pb.set(match step {
                StopStep::Shutdown => "shutting down",
                StopStep::WaitShutdown => "waiting for the card OS to shut down",
                StopStep::Reset => "resetting",
            });
        })
        .map_err(err)?;
    if let Some((_, status)) = stopped.shutdown {
        steps.push(format!("shut down ({})", status.as_str()));
    }
    if stopped.reset {
        steps.push("reset".to_owned());
    }
    pb.set("booting");
    match card
        .boot_with(&plan.request(card), plan.sysmap.as_deref())
        .map_err(err)?
    {
        Outcome::Requested => steps.push("booted".to_owned()),
        Outcome::AlreadyInState(_) => steps.push("already online (booted by someone else)".to_owned()),
    }
    if wait_os {
        pb.set("waiting for the card OS");
        wait_booted(card, deadline, start)?;
        steps.push("card OS up".to_owned());
    }
    Ok(CardOutcome::ok(card, steps.join(", "), start))
}
