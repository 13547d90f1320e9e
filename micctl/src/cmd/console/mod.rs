//! `micctl console CARD`: a card's console through mpssd's console broker
//! (libmic's [`Console`](libmic::mpssd::Console)).
//!
//! One thread runs one poll loop over mpssd's socket, stdin, a signalfd
//! and a pipe from a thread that waits on the card's sysfs `state` (waits
//! on the driver's files are bounded, so they run beside the loop, never
//! in it). Input goes through a writer thread, so the escape key and the
//! signals are read however slow the card is to take input.
//!
//! How a session ends is decided here, from two sources: mpssd's end of
//! the attachment (the card down for good, the console removed, mpssd
//! stopping, the console taken over) and the card's state, the one truth
//! about whether the card is up: a card that leaves `online` ends the
//! session (exit 12) unless `--follow`, once its last output and the
//! removal of its console were read (at most [`DRAIN_LIMIT`]). A console
//! that goes down while the card stays online is waited for.
//!
//! Files: [`args`] (the command line), `session` (the loop), `writer`
//! (the thread that types), `end` (how it ends), `out` (what it prints),
//! `guard` (what of the card's output reaches a terminal), `term` (raw
//! mode, window size, signals).

pub mod args;
mod end;
mod guard;
mod out;
mod session;
mod term;
mod writer;

use std::io::{self, IsTerminal as _, Write as _};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use libmic::mpssd::{AttachOptions, Client, ClientError, Console, ConsoleMode, ErrorBody, ErrorCode};
use libmic::{Card, MicState};

pub use self::args::ConsoleArgs;
use self::end::End;
use self::session::Session;
use crate::Ctx;
use crate::exit::Exit;

/// How long mpssd has to answer the attach (and a connection to be made):
/// a stopped or wedged mpssd costs this, then exit 6.
pub const ATTACH_LIMIT: Duration = Duration::from_secs(5);
/// Once the card is down, how long its last output and the removal of its
/// console are waited for; at the end, how long typed input may take to
/// reach mpssd.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(2);
/// Bytes of one input request, at most.
const INPUT_CHUNK: usize = 4096;
/// Keystrokes read while the writer's queue is full, at most; past it
/// stdin is not read until the card takes input (the escape key is seen
/// up to there).
const PENDING_MAX: usize = 64 << 10;

/// Why the card's console cannot be attached (beside mpssd not running or
/// not answering, which are libmic's [`ClientError`]s).
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("{card} is {}: its console is down (boot it first: micctl boot {card})", state.as_str())]
    CardDown { card: String, state: MicState },
    /// mpssd has no console for the card.
    #[error("{0}")]
    NoConsole(ErrorBody),
    #[error(
        "{card}'s console is held read-write by {holder}; a script cannot type into it (--force takes it)"
    )]
    Busy { card: String, holder: String },
}

impl AttachError {
    #[must_use]
    pub fn exit(&self) -> Exit {
        match self {
            AttachError::CardDown { .. } => Exit::CardDown,
            AttachError::NoConsole(_) => Exit::ConsoleGone,
            AttachError::Busy { .. } => Exit::ConsoleBusy,
        }
    }
}

pub fn run(ctx: &Ctx, args: &ConsoleArgs) -> anyhow::Result<Exit> {
    // First, before any thread starts: the signals come to the loop.
    let signals = term::Signals::block().context("blocking signals for the console")?;
    let started = Instant::now();
    let card = single_card(ctx, &args.card)?;
    // TIMEOUT: ATTACH_LIMIT (or a shorter --timeout) for mpssd to take the
    // connection and answer the attach; not running is said at once.
    let limit = args.timeout.map_or(ATTACH_LIMIT, |t| t.min(ATTACH_LIMIT));
    let client = Client::connect_within(&ctx.root, limit)?;
    let state = card.state()?;
    if state != MicState::Online {
        return Err(AttachError::CardDown {
            card: card.name().to_owned(),
            state,
        }
        .into());
    }
    let interactive = io::stdin().is_terminal();
    let session = attach(client, &card, args, interactive)?;
    let states = watch_state(&card).context("watching the card's state")?;
    let mut s = Session::new(ctx.json, args, card, session, interactive, started)
        .context("starting the console's writer")?;
    let raw = if interactive {
        Some(term::RawMode::enter(io::stdin().as_fd()).context("putting the terminal into raw mode")?)
    } else {
        None
    };
    s.out.raw = raw.is_some();
    s.announce();
    let end = s.run(&signals, &states);
    s.drain_input();
    // The terminal comes back before anything more is said.
    drop(raw);
    s.out.raw = false;
    s.finish(&end);
    if let End::Signal(sig) = end {
        drop(signals);
        term::die_of(sig);
    }
    Ok(end.exit())
}

fn single_card(ctx: &Ctx, arg: &str) -> anyhow::Result<Card> {
    let sel = crate::select::Selection::parse(&[arg])?;
    let cards = sel.resolve(&ctx.root)?;
    match <[Card; 1]>::try_from(cards) {
        Ok([c]) => Ok(c),
        Err(_) => Err(crate::UsageError(format!(
            "console takes exactly one card, not {}",
            libmic::attrs::quote_value(arg)
        ))
        .into()),
    }
}

/// How this client is named to others: `micctl console on /dev/pts/3`.
fn client_name(interactive: bool) -> String {
    let tty = interactive
        .then(|| std::fs::read_link("/proc/self/fd/0").ok())
        .flatten();
    match tty {
        Some(t) => format!("micctl console on {}", t.display()),
        None => "micctl console (script)".to_owned(),
    }
}

/// The terminal micctl types from or prints to, for its size.
pub(super) fn terminal_size() -> Option<libmic::mpssd::WindowSize> {
    [io::stdin().as_fd(), io::stdout().as_fd()]
        .into_iter()
        .find_map(term::window_size)
}

/// Attaches `client` (its deadline running) to the card's console.
fn attach(
    client: Client,
    card: &Card,
    args: &ConsoleArgs,
    interactive: bool,
) -> anyhow::Result<(Console, Option<ErrorBody>)> {
    let opts = AttachOptions {
        mode: if args.read_only {
            ConsoleMode::ReadOnly
        } else {
            ConsoleMode::ReadWrite
        },
        replay: args.replay.request(),
        force: args.force,
        client: Some(client_name(interactive)),
        size: if interactive { terminal_size() } else { None },
    };
    let attached = if args.read_only || args.force {
        client.attach_console(card.id(), &opts).map(|s| (s, None))
    } else {
        client.attach_console_or_watch(card.id(), &opts)
    };
    let (mut console, refused) = attached.map_err(|e| match e {
        ClientError::Refused(b) if b.code == ErrorCode::NotAvailable => AttachError::NoConsole(b).into(),
        e => anyhow::Error::from(e),
    })?;
    if !interactive && refused.is_some() && !args.read_only {
        let holder = console
            .attached
            .writer
            .as_ref()
            .map_or_else(|| "another client".to_owned(), ToString::to_string);
        return Err(AttachError::Busy {
            card: card.name().to_owned(),
            holder,
        }
        .into());
    }
    // The loop reads without waiting, the writer waits as long as mpssd
    // makes it (mpssd bounds how long it waits for the card).
    console.output.set_deadline(None);
    console.output.set_timeout(None)?;
    Ok((console, refused))
}

/// The card's state as a thread waiting on it sees it: each change (and
/// the state it started from) comes through the channel, with a byte on
/// the socket for the loop to poll.
struct States {
    wake: UnixStream,
    rx: mpsc::Receiver<libmic::Result<MicState>>,
}

fn watch_state(card: &Card) -> io::Result<States> {
    let (wake, tx_wake) = UnixStream::pair()?;
    wake.set_nonblocking(true)?;
    let (tx, rx) = mpsc::channel();
    let card = card.clone();
    std::thread::Builder::new().name("state".into()).spawn(move || {
        let send = |r: libmic::Result<MicState>| {
            let ended = r.is_err();
            let gone = tx.send(r).is_err() || (&tx_wake).write_all(b"s").is_err();
            !(ended || gone)
        };
        let mut w = match card.watch_state() {
            Ok(w) => w,
            Err(e) => {
                send(Err(e));
                return;
            }
        };
        if !send(Ok(w.current())) {
            return;
        }
        // TIMEOUT: none; each wait on the driver is bounded by the
        // card's access limit (a hung driver ends it with an error),
        // and the process ends with the session.
        loop {
            let r = w.wait_change(None);
            if let Ok(None) = r {
                continue;
            }
            if !send(r.map(|s| s.unwrap_or(MicState::Offline))) {
                return;
            }
        }
    })?;
    Ok(States { wake, rx })
}
