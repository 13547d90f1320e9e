//! `micctl reboot [CARDS]`: shutdown (waiting for the card OS to report its
//! final shutdown_status) → reset (waiting for offline) → boot; `--wait`
//! also waits for the card OS to be up again. One deadline covers it all.

use std::time::Instant;

use libmic::{Card, MicState, Outcome};

use super::boot::BootPlan;
use super::reset::wait_reset;
use super::{CardOutcome, default_timeout, report, run_parallel, select, wait_booted, wait_shut_down};
use crate::Ctx;
use crate::cli::RebootArgs;
use crate::exit::Exit;
use crate::progress::CardProgress;

pub fn run(ctx: &Ctx, args: &RebootArgs) -> anyhow::Result<Exit> {
    let cards = select(ctx, &args.cards)?;
    let timeout = args.timeout.unwrap_or_else(|| default_timeout(cards.len()));
    let (plan, warnings) = BootPlan::new(
        &ctx.root,
        &args.firmware,
        args.ramdisk.as_deref(),
        args.cmdline.as_deref(),
        args.bootmode,
    );
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
    let err = |e: libmic::Error| CardOutcome::from_error(card, &e, start);
    let mut steps = Vec::new();
    if card.state().map_err(err)? == MicState::Online {
        card.shutdown().map_err(err)?;
        let (_, status) = wait_shut_down(card, deadline).map_err(err)?;
        steps.push(format!("shut down ({})", status.as_str()));
    }
    if card.state().map_err(err)? != MicState::Offline {
        pb.set("resetting");
        card.reset().map_err(err)?;
        wait_reset(card, deadline.saturating_duration_since(start), start)?;
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
