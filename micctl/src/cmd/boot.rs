//! `micctl boot [CARDS]`: the original micctrl defaults (linux,
//! `mic/uos.img`, `mic/micN.image`), `log_buf_addr`/`log_buf_len` from
//! System.map, cards in parallel; `--wait` until the card OS is up.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use libmic::{BootRequest, Card, MicRoot, Outcome};

use super::{CardOutcome, default_timeout, report, run_parallel, select_within, until, wait_booted};
use crate::Ctx;
use crate::cli::{BootArgs, BootOpts};
use crate::exit::Exit;
use crate::progress::CardProgress;

/// What the boot and reboot commands share.
#[derive(Debug, Clone)]
pub struct BootPlan {
    pub opts: BootOpts,
    /// System.map to set the log buffer addresses from, if there is one.
    pub sysmap: Option<PathBuf>,
}

impl BootPlan {
    /// The plan and the warnings about it (no System.map).
    #[must_use]
    pub fn new(root: &MicRoot, opts: &BootOpts) -> (Self, Vec<String>) {
        let map = root.system_map();
        let mut warnings = Vec::new();
        let sysmap = if map.is_file() {
            Some(map)
        } else {
            warnings.push(format!(
                "{} not found: log_buf_addr/log_buf_len are left as they are, so the card log may be \
                 unreadable",
                map.display()
            ));
            None
        };
        let plan = Self {
            opts: opts.clone(),
            sysmap,
        };
        (plan, warnings)
    }

    #[must_use]
    pub fn request(&self, card: &Card) -> BootRequest {
        let mut req = BootRequest::defaults_for(card);
        let o = &self.opts;
        req.bootmode = o.bootmode.into();
        req.firmware.clone_from(&o.firmware);
        if let Some(r) = &o.ramdisk {
            req.ramdisk = Some(r.clone());
        }
        req.cmdline.clone_from(&o.cmdline);
        req
    }
}

pub fn run(ctx: &Ctx, args: &BootArgs) -> anyhow::Result<Exit> {
    let cards = select_within(ctx, &args.cards, args.wait.timeout)?;
    let timeout = args.wait.timeout.unwrap_or_else(|| default_timeout(cards.len()));
    // A boot write returns once the image is loaded (after a reset first,
    // if the card needs one): bounded by the timeout, waiting or not.
    let cards = until(cards, Instant::now() + timeout);
    let (plan, warnings) = BootPlan::new(&ctx.root, &args.boot);
    let wait = args.wait.wait;
    let strict = args.wait.strict;
    let outcomes = run_parallel(ctx, &cards, wait, "booting", |card, pb| {
        boot_one(card, &plan, wait.then_some(timeout), strict, pb)
    });
    report(ctx, "boot", &outcomes, &warnings)
}

/// Boots one card; with `wait`, waits for its OS.
#[must_use]
pub fn boot_one(
    card: &Card,
    plan: &BootPlan,
    wait: Option<Duration>,
    strict: bool,
    pb: &CardProgress,
) -> CardOutcome {
    let start = Instant::now();
    match card.boot_with(&plan.request(card), plan.sysmap.as_deref()) {
        Ok(Outcome::AlreadyInState(_)) => CardOutcome::already(card, "already online", start, strict),
        Ok(Outcome::Requested) => match wait {
            None => CardOutcome::ok(card, "boot requested (online)", start),
            Some(t) => {
                pb.set("waiting for the card OS");
                match wait_booted(card, start + t, start) {
                    Ok(()) => CardOutcome::ok(card, "booted, card OS up", start),
                    Err(o) => o,
                }
            }
        },
        Err(e) => CardOutcome::from_error(card, &e, start),
    }
}
