//! One file per subcommand, and what the lifecycle commands share: per-card
//! outcomes, running cards in parallel, reporting.

pub mod boot;
pub mod console;
pub mod crash;
pub mod events;
pub mod info;
pub mod log;
pub mod reboot;
pub mod reset;
pub mod shutdown;
pub mod status;
pub mod wait;

use std::time::{Duration, Instant};

use libmic::{Card, IoLimit, MicState, MicStatus};
use serde_json::{Value, json};

use crate::Ctx;
use crate::cli::{CardsArg, LifecycleArgs};
use crate::exit::Exit;
use crate::output::{self, Style};
use crate::progress::{CardProgress, Progress};
use crate::select::Selection;

/// The longest one access to the driver's files may take in a command
/// without a deadline of its own (and each read of a stream: `log
/// --follow`, `status --watch`). A driver that does not answer by then is
/// hung: exit 6, naming the file.
pub const ACCESS_LIMIT: Duration = Duration::from_secs(10);

/// The cards named by a CARDS argument.
pub fn select(ctx: &Ctx, arg: &CardsArg) -> anyhow::Result<Vec<Card>> {
    let sel = Selection::parse(&arg.cards)?;
    Ok(sel.resolve(&ctx.root)?)
}

/// [`select`], the enumeration itself over within `timeout` (a command's
/// `--timeout`) if one is given.
pub fn select_within(ctx: &Ctx, arg: &CardsArg, timeout: Option<Duration>) -> anyhow::Result<Vec<Card>> {
    let Some(t) = timeout else {
        return select(ctx, arg);
    };
    let limit = ctx.root.io_limit().and_until(Instant::now() + t);
    let ctx = Ctx {
        root: ctx.root.clone().with_io_limit(limit),
        ..ctx.clone()
    };
    select(&ctx, arg)
}

/// `cards`, every access to their files to be over by `deadline` (a
/// command's `--timeout`, counted from its start).
#[must_use]
pub fn until(cards: Vec<Card>, deadline: Instant) -> Vec<Card> {
    cards
        .into_iter()
        .map(|c| c.with_io_limit(IoLimit::until(deadline)))
        .collect()
}

/// micctrl's default wait: 90 s plus 60 s per extra card, clamped to
/// 300..=600 s.
#[must_use]
pub fn default_timeout(cards: usize) -> Duration {
    let extra = cards.saturating_sub(1) as u64;
    Duration::from_secs((90 + 60 * extra).clamp(300, 600))
}

/// How one card's request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Ok,
    AlreadyInState,
    Rejected,
    Failed,
    TimedOut,
}

impl Kind {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Ok => "ok",
            Kind::AlreadyInState => "already-in-state",
            Kind::Rejected => "rejected",
            Kind::Failed => "failed",
            Kind::TimedOut => "timed-out",
        }
    }
}

/// One card's outcome.
#[derive(Debug, Clone)]
pub struct CardOutcome {
    pub card: String,
    pub kind: Kind,
    /// What happened, in words ("booted, card OS up", "already offline").
    pub message: String,
    /// The card's state when done, if it could be read.
    pub state: Option<MicState>,
    pub shutdown_status: Option<MicStatus>,
    pub elapsed: Duration,
    pub exit: Exit,
}

impl CardOutcome {
    /// An outcome with the card's current state and status read now.
    #[must_use]
    pub fn new(card: &Card, kind: Kind, message: impl Into<String>, start: Instant, exit: Exit) -> Self {
        Self {
            card: card.name().to_owned(),
            kind,
            message: message.into(),
            state: card.state().ok(),
            shutdown_status: card.shutdown_status().ok(),
            elapsed: start.elapsed(),
            exit,
        }
    }

    #[must_use]
    pub fn ok(card: &Card, message: impl Into<String>, start: Instant) -> Self {
        Self::new(card, Kind::Ok, message, start, Exit::Ok)
    }

    /// Already in the requested state: fine, unless `strict`.
    #[must_use]
    pub fn already(card: &Card, message: impl Into<String>, start: Instant, strict: bool) -> Self {
        let exit = if strict { Exit::AlreadyInState } else { Exit::Ok };
        Self::new(card, Kind::AlreadyInState, message, start, exit)
    }

    #[must_use]
    pub fn failed(card: &Card, message: impl Into<String>, start: Instant) -> Self {
        Self::new(card, Kind::Failed, message, start, Exit::Failure)
    }

    /// The outcome of a library error.
    #[must_use]
    pub fn from_error(card: &Card, e: &libmic::Error, start: Instant) -> Self {
        let exit = Exit::of_libmic(e);
        let kind = match e {
            libmic::Error::Rejected { .. }
            | libmic::Error::ShutdownIgnored { .. }
            | libmic::Error::InvalidValue { .. }
            | libmic::Error::BadFirmwareName { .. } => Kind::Rejected,
            libmic::Error::Timeout { .. } | libmic::Error::NoAnswer { .. } => Kind::TimedOut,
            _ => Kind::Failed,
        };
        Self::new(card, kind, libmic::error::report(e), start, exit)
    }

    /// Whether the card ended as asked.
    #[must_use]
    pub fn is_ok(&self) -> bool {
        self.exit == Exit::Ok
    }

    #[must_use]
    pub fn to_json(&self) -> Value {
        json!({
            "card": self.card,
            "outcome": self.kind.as_str(),
            "ok": self.is_ok(),
            "message": self.message,
            "state": self.state.map(MicState::as_str),
            "shutdown_status": self.shutdown_status.map(MicStatus::as_str),
            "elapsed_secs": round_ms(self.elapsed.as_secs_f64()),
            "exit_code": self.exit.code(),
        })
    }

    /// The human line: `mic0: booted, card OS up (0.3s)`.
    #[must_use]
    pub fn human(&self, color: bool) -> String {
        let style = match self.kind {
            Kind::Ok => Style::Green,
            Kind::AlreadyInState => Style::Plain,
            Kind::Rejected | Kind::Failed | Kind::TimedOut => Style::Red,
        };
        let label = match self.kind {
            Kind::Ok | Kind::AlreadyInState | Kind::TimedOut => String::new(),
            k => format!("{}: ", k.as_str()),
        };
        format!(
            "{}: {}{}",
            self.card,
            style.paint(&label, color),
            self.message
                .strip_prefix(&format!("{}: ", self.card))
                .unwrap_or(&self.message)
        )
    }
}

/// Seconds rounded to milliseconds (stable-looking JSON).
#[must_use]
pub fn round_ms(secs: f64) -> f64 {
    (secs * 1000.0).round() / 1000.0
}

/// Runs `f` for every card at once, one thread per card; outcomes in card
/// order. `wait` turns on spinners (on a terminal).
pub fn run_parallel<F>(ctx: &Ctx, cards: &[Card], wait: bool, first_msg: &str, f: F) -> Vec<CardOutcome>
where
    F: Fn(&Card, &CardProgress) -> CardOutcome + Sync,
{
    let progress = Progress::new(wait && ctx.progress);
    std::thread::scope(|s| {
        let handles: Vec<_> = cards
            .iter()
            .map(|card| {
                let pb = progress.card(card.name(), first_msg);
                let f = &f;
                s.spawn(move || {
                    let out = f(card, &pb);
                    pb.done();
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .zip(cards)
            .map(|(h, card)| {
                h.join().unwrap_or_else(|_| {
                    CardOutcome::failed(card, "internal error: the card's worker panicked", Instant::now())
                })
            })
            .collect()
    })
}

/// `shutdown` and `reset`: `f(card, timeout if --wait, --strict, progress)`
/// on every card at once, reported as `command`.
pub fn run_lifecycle<F>(
    ctx: &Ctx,
    args: &LifecycleArgs,
    command: &str,
    first_msg: &str,
    f: F,
) -> anyhow::Result<Exit>
where
    F: Fn(&Card, Option<Duration>, bool, &CardProgress) -> CardOutcome + Sync,
{
    let cards = select_within(ctx, &args.cards, args.wait.timeout)?;
    let timeout = args.wait.timeout.unwrap_or_else(|| default_timeout(cards.len()));
    let wait = args.wait.wait.then_some(timeout);
    let strict = args.wait.strict;
    let cards = until(cards, Instant::now() + timeout);
    let outcomes = run_parallel(ctx, &cards, wait.is_some(), first_msg, |card, pb| {
        f(card, wait, strict, pb)
    });
    report(ctx, command, &outcomes, &[])
}

/// Prints the outcomes (a JSON document, or a line per card: successes on
/// stdout, failures on stderr) and returns the combined exit code.
pub fn report(
    ctx: &Ctx,
    command: &str,
    outcomes: &[CardOutcome],
    warnings: &[String],
) -> anyhow::Result<Exit> {
    let exit = combine(outcomes);
    if ctx.json {
        output::print_json(&output::document(
            command,
            json!({
                "cards": outcomes.iter().map(CardOutcome::to_json).collect::<Vec<_>>(),
                "warnings": warnings,
                "exit_code": exit.code(),
            }),
        ))?;
    } else {
        for w in warnings {
            eprintln!("micctl: warning: {w}");
        }
        print_outcomes(ctx, outcomes)?;
    }
    Ok(exit)
}

/// The exit code of a command's outcomes ([`Exit::combine_needed`]).
#[must_use]
pub fn combine(outcomes: &[CardOutcome]) -> Exit {
    Exit::combine_needed(outcomes.iter().map(|o| (o.exit, o.kind == Kind::AlreadyInState)))
}

/// One line per card: successes on stdout, failures on stderr.
pub fn print_outcomes(ctx: &Ctx, outcomes: &[CardOutcome]) -> anyhow::Result<()> {
    let mut out = String::new();
    for o in outcomes {
        if o.is_ok() {
            out.push_str(&o.human(ctx.color));
            out.push('\n');
        } else {
            eprintln!("{}", o.human(false));
        }
    }
    output::print_text(&out)?;
    Ok(())
}

/// Waits for the card OS after a boot; a card that leaves `online` before
/// its OS is up (a crash) is a failure, not a timeout.
pub fn wait_booted(card: &Card, deadline: Instant, start: Instant) -> Result<(), CardOutcome> {
    let left = deadline.saturating_duration_since(Instant::now());
    match card.wait_os_up(Some(left)) {
        Ok(()) => Ok(()),
        Err(libmic::Error::Timeout { last_state, .. }) if last_state != MicState::Online => {
            let status = card.shutdown_status().map_or("unknown", MicStatus::as_str);
            Err(CardOutcome::failed(
                card,
                format!(
                    "the card left online before its OS was up (state {}, shutdown_status {status})",
                    last_state.as_str()
                ),
                start,
            ))
        }
        Err(e @ libmic::Error::Timeout { .. }) => Err(CardOutcome::new(
            card,
            Kind::TimedOut,
            format!(
                "{e}; the card OS did not report up (no \"{}\" in its log)",
                libmic::OS_UP_MARKER
            ),
            start,
            Exit::Timeout,
        )),
        Err(e) => Err(CardOutcome::from_error(card, &e, start)),
    }
}
