//! The mpssd control-socket protocol, version [`VERSION`]: the message
//! types and their encoding, and nothing else — no I/O (the model is
//! Firecracker's `rpc_interface.rs`: request, response, event and error
//! types in one small crate both ends share).
//!
//! Framing: one JSON object per line (`\n`-terminated, UTF-8), at most
//! [`MAX_FRAME`] bytes including the newline. Every frame carries the
//! protocol version as `"v"`; a frame of another version is refused with
//! [`ErrorCode::UnsupportedVersion`] before anything else is looked at.
//!
//! - client → daemon: [`ClientFrame`] (a [`Request`] and an optional `id`
//!   the answer echoes);
//! - daemon → client: [`ServerFrame`]: an answer ([`ServerBody::Ok`] with a
//!   [`Response`], or [`ServerBody::Error`]), an [`Event`] (only after
//!   [`Request::Subscribe`]), or a [`ConsoleFrame`] (only after
//!   [`Request::ConsoleAttach`]).
//!
//! `mpssd/PROTOCOL.md` documents the protocol; `mpssd/schema/` has its JSON
//! Schema, which the tests hold to the encoding of these types.
//!
//! Besides the socket, the other thing mpssd leaves for clients to read:
//! [`crash`], the layout of its crash forensics bundles; and [`timefmt`],
//! the UTC timestamps their names and mpssd's timelines are written in.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::fmt;

use mic_core::abi::{MicState, MicStatus};
use serde::{Deserialize, Serialize};

mod bytes;
pub mod crash;
mod framing;
pub mod timefmt;
pub use bytes::{Base64Error, Bytes, decode_base64, encode_base64};
pub use framing::{FrameError, LineDecoder};

/// The protocol version this crate speaks.
pub const VERSION: u32 = 1;

/// The longest frame either side accepts, newline included.
pub const MAX_FRAME: usize = 64 * 1024;

/// The control socket, relative to the root (`DIR/run/mpssd/control.sock`).
pub const SOCKET_PATH: &str = "run/mpssd/control.sock";

// ---- client → daemon ------------------------------------------------------

/// One request frame: `{"v":1,"id":7,"request":"status"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientFrame {
    pub v: u32,
    /// Echoed in the answer; lets a client match answers to requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    #[serde(flatten)]
    pub request: Request,
}

impl ClientFrame {
    /// A frame of this version.
    #[must_use]
    pub fn new(id: Option<u64>, request: Request) -> Self {
        Self {
            v: VERSION,
            id,
            request,
        }
    }
}

/// What a client can ask.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum Request {
    /// The daemon and every card ([`Response::Status`]).
    Status,
    /// One card ([`Response::Card`]).
    CardStatus { card: u32 },
    /// Turns this connection into an event stream ([`Response::Subscribed`],
    /// then [`Event`] frames until the connection closes).
    Subscribe,
    /// Re-reads the configuration file ([`Response::Reloaded`]).
    ReloadConfig,
    /// Attaches this connection to a card's console
    /// ([`Response::ConsoleAttached`], then the scrollback as
    /// [`ConsoleEvent::Output`] frames marked `replay`, then live output,
    /// until [`Request::ConsoleDetach`], the connection closing, or
    /// [`ConsoleEvent::Ended`]). One connection may attach to several
    /// cards; attaching again to the same card replaces the attachment.
    ConsoleAttach {
        card: u32,
        mode: ConsoleMode,
        /// How much scrollback is replayed first (absent: all of it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        replay: Option<Replay>,
        /// With `read_write`: take the console even if another client
        /// holds it read-write (that client's attachment ends with
        /// [`EndReason::TakenOver`]; the answer names it in `taken_from`).
        #[serde(default, skip_serializing_if = "is_false")]
        force: bool,
        /// Who this client is, shown to others in `console_busy` errors and
        /// mode changes (e.g. `"micctl console"`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client: Option<String>,
        /// The client's window; with `read_write`, passed to the card.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        size: Option<WindowSize>,
    },
    /// Types `data` into an attached card's console (the connection must be
    /// attached `read_write`): [`Response::ConsoleInput`] once the console
    /// took it. A card that does not take input makes this wait, at most
    /// `daemon.client_timeout`, then [`ErrorCode::ConsoleBusy`] says how
    /// much was taken.
    ConsoleInput { card: u32, data: Bytes },
    /// The client's window changed (`read_write` only):
    /// [`Response::ConsoleResized`].
    ConsoleResize { card: u32, cols: u16, rows: u16 },
    /// Detaches from a card's console ([`Response::ConsoleDetached`]); a
    /// read-write attachment gives the console up.
    ConsoleDetach { card: u32 },
    /// Swaps a card's block backing file (`path`: the new file; `None`:
    /// re-read it from the configuration): [`Response::BlockSwapped`].
    BlockSwap {
        card: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        path: Option<String>,
    },
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's `skip_serializing_if` signature
fn is_false(b: &bool) -> bool {
    !*b
}

impl Request {
    /// The `request` tag, for logs.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Request::Status => "status",
            Request::CardStatus { .. } => "card_status",
            Request::Subscribe => "subscribe",
            Request::ReloadConfig => "reload_config",
            Request::ConsoleAttach { .. } => "console_attach",
            Request::ConsoleInput { .. } => "console_input",
            Request::ConsoleResize { .. } => "console_resize",
            Request::ConsoleDetach { .. } => "console_detach",
            Request::BlockSwap { .. } => "block_swap",
        }
    }
}

/// How a console client is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsoleMode {
    /// Sees the output and types; one client at a time.
    ReadWrite,
    /// Sees the output only.
    ReadOnly,
}

impl ConsoleMode {
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            ConsoleMode::ReadWrite => "read_write",
            ConsoleMode::ReadOnly => "read_only",
        }
    }
}

/// How much scrollback an attach replays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Replay {
    /// The last `n` bytes (`{"bytes":4096}`; 0: none).
    Bytes(u64),
    /// The last `n` lines, as `tail -n` counts them: an unfinished last
    /// line (a prompt) is one (`{"lines":50}`; 0: none).
    Lines(u64),
}

/// A terminal's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowSize {
    pub cols: u16,
    pub rows: u16,
}

/// A console client, as others are told about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsoleClient {
    /// The process on the other end of the socket (SO_PEERCRED), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// What the client called itself at attach.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Unix time (ms) it attached in its current mode.
    pub since_ms: u64,
}

impl fmt::Display for ConsoleClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(n) => write!(f, "{n:?}")?,
            None => f.write_str("a client")?,
        }
        match (self.pid, self.uid) {
            (Some(p), Some(u)) => write!(f, " (pid {p}, uid {u})"),
            (Some(p), None) => write!(f, " (pid {p})"),
            (None, Some(u)) => write!(f, " (uid {u})"),
            (None, None) => Ok(()),
        }
    }
}

// ---- daemon → client ------------------------------------------------------

/// One frame from the daemon: `{"v":1,"id":7,"ok":{...}}`,
/// `{"v":1,"id":7,"error":{...}}` or `{"v":1,"event":{...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerFrame {
    pub v: u32,
    /// The `id` of the request answered (absent on events and on answers to
    /// requests that had none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    #[serde(flatten)]
    pub body: ServerBody,
}

impl ServerFrame {
    #[must_use]
    pub fn ok(id: Option<u64>, response: Response) -> Self {
        Self {
            v: VERSION,
            id,
            body: ServerBody::Ok(response),
        }
    }

    #[must_use]
    pub fn error(id: Option<u64>, error: ErrorBody) -> Self {
        Self {
            v: VERSION,
            id,
            body: ServerBody::Error(error),
        }
    }

    #[must_use]
    pub fn event(event: Event) -> Self {
        Self {
            v: VERSION,
            id: None,
            body: ServerBody::Event(event),
        }
    }

    #[must_use]
    pub fn console(card: u32, event: ConsoleEvent) -> Self {
        Self {
            v: VERSION,
            id: None,
            body: ServerBody::Console(ConsoleFrame { card, event }),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerBody {
    Ok(Response),
    Error(ErrorBody),
    Event(Event),
    /// Console output and notices, only for an attached connection.
    Console(ConsoleFrame),
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "response", rename_all = "snake_case")]
pub enum Response {
    Status(DaemonStatus),
    Card(CardStatus),
    /// Events follow on this connection.
    Subscribed,
    Reloaded(ReloadResult),
    ConsoleAttached(ConsoleAttached),
    /// `bytes` of input were taken by the console.
    ConsoleInput {
        card: u32,
        bytes: u64,
    },
    ConsoleResized {
        card: u32,
    },
    ConsoleDetached {
        card: u32,
    },
    BlockSwapped(BlockSwapped),
}

impl Response {
    /// The `response` tag, for messages.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Response::Status(_) => "status",
            Response::Card(_) => "card",
            Response::Subscribed => "subscribed",
            Response::Reloaded(_) => "reloaded",
            Response::ConsoleAttached(_) => "console_attached",
            Response::ConsoleInput { .. } => "console_input",
            Response::ConsoleResized { .. } => "console_resized",
            Response::ConsoleDetached { .. } => "console_detached",
            Response::BlockSwapped(_) => "block_swapped",
        }
    }
}

/// The answer to [`Request::ConsoleAttach`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsoleAttached {
    pub card: u32,
    /// The mode granted.
    pub mode: ConsoleMode,
    /// Scrollback bytes that follow as `replay` output.
    pub replay_bytes: u64,
    /// The card's console pty (`/dev/pts/N`; also linked at
    /// `DIR/run/mpssd/micN/console`), if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pty: Option<String>,
    /// Whether the card's console device is up now (it goes down while the
    /// card resets; the attachment stays).
    pub device_up: bool,
    /// Who else holds the console read-write (with `read_only`), if anyone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writer: Option<ConsoleClient>,
    /// With a forced `read_write`: the client it was taken from (its
    /// attachment ended with [`EndReason::TakenOver`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taken_from: Option<ConsoleClient>,
}

/// The answer to [`Request::BlockSwap`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockSwapped {
    pub card: u32,
    /// The image now backing the card's disk (`None`: the configuration has
    /// none, and the card has no disk).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    pub read_only: bool,
    /// The disk's size in 512-byte sectors.
    pub sectors: u64,
    /// Whether the disk was added to the card now (`false`: the card's
    /// devices are down, as during a reset; the new image is used when
    /// they come back).
    pub added: bool,
}

// ---- console frames --------------------------------------------------------

/// A console frame: `{"v":1,"console":{"card":0,"kind":"output","data":"..."}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsoleFrame {
    pub card: u32,
    #[serde(flatten)]
    pub event: ConsoleEvent,
}

/// What an attached client is sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ConsoleEvent {
    /// What the card printed (`data`, base64; at most 16 KiB per frame);
    /// `replay`: from the scrollback, before the live output.
    Output {
        data: Bytes,
        #[serde(default, skip_serializing_if = "is_false")]
        replay: bool,
    },
    /// The card's console device came up or went down (removed before a
    /// reset, added after it: a reboot); the attachment stays.
    Device { up: bool, reason: String },
    /// This client fell behind the console and `missed` bytes of output
    /// were dropped for it (the scrollback and the console log keep them).
    Lagged { missed: u64 },
    /// The attachment ended from mpssd's side; nothing more comes for this
    /// card on this connection (attach again to follow it).
    Ended {
        reason: EndReason,
        /// With `taken_over`: who took the console.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<ConsoleClient>,
        /// The reason in words.
        message: String,
    },
}

/// Why mpssd ended a console attachment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// The card went down and mpssd is not booting it again (halted,
    /// powered off, crash loop, failed reset or boot). A card that reboots
    /// does not end attachments (they see `device` notices and the boot).
    CardDown,
    /// mpssd no longer serves the card's console (its devices were
    /// dropped). A console device that goes with a reset does not end
    /// attachments.
    ConsoleRemoved,
    /// mpssd is stopping.
    DaemonStopping,
    /// Another client forced the console read-write (`by`).
    TakenOver,
}

impl EndReason {
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            EndReason::CardDown => "card_down",
            EndReason::ConsoleRemoved => "console_removed",
            EndReason::DaemonStopping => "daemon_stopping",
            EndReason::TakenOver => "taken_over",
        }
    }
}

/// The most output bytes in one [`ConsoleEvent::Output`] frame.
pub const CONSOLE_CHUNK: usize = 16 * 1024;

/// The daemon and its cards.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DaemonStatus {
    /// mpssd's version.
    pub version: String,
    /// The protocol version (= `v`).
    pub protocol: u32,
    pub pid: u32,
    pub root: String,
    pub config_file: String,
    /// Unix time (ms) the running configuration was loaded.
    pub config_loaded_ms: u64,
    pub started_ms: u64,
    /// Connected control clients, this one included.
    pub clients: u32,
    pub cards: Vec<CardStatus>,
}

/// One card as its supervisor sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CardStatus {
    pub card: u32,
    /// `micN`.
    pub name: String,
    /// The sysfs `state` last read; `None` if it could not be read.
    #[serde(with = "opt_state")]
    pub state: Option<MicState>,
    /// The sysfs `shutdown_status` last read.
    #[serde(with = "opt_status")]
    pub shutdown_status: Option<MicStatus>,
    pub supervisor: SupervisorState,
    /// Unix time (ms) the supervisor entered its state.
    pub since_ms: u64,
    /// Whether the card was found running when mpssd started (adopted, not
    /// booted by this mpssd).
    pub adopted: bool,
    /// Boots this mpssd requested.
    pub boots: u64,
    /// Crashes seen.
    pub crashes: u64,
    /// Crashes within the crash-loop window.
    pub recent_crashes: u32,
    /// Unix time (ms) of the next boot, while in `backoff`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_boot_ms: Option<u64>,
    /// The card's virtio devices (console, net, block) with their counters.
    pub devices: Vec<DeviceStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_crash: Option<CrashSummary>,
    /// The last thing that went wrong, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl CardStatus {
    /// A card of which nothing is known yet but its supervisor's state.
    #[must_use]
    pub fn new(card: u32, name: String, supervisor: SupervisorState, since_ms: u64) -> Self {
        Self {
            card,
            name,
            state: None,
            shutdown_status: None,
            supervisor,
            since_ms,
            adopted: false,
            boots: 0,
            crashes: 0,
            recent_crashes: 0,
            next_boot_ms: None,
            devices: Vec::new(),
            last_crash: None,
            last_error: None,
        }
    }
}

/// What the supervisor of one card is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SupervisorState {
    /// Reading the card's state at start.
    Adopting,
    /// The card is offline, its devices ready; waiting for a boot.
    Idle,
    /// The card is online and served.
    Running,
    /// The card is shutting down: waiting for its final shutdown status.
    ShuttingDown,
    /// Stopping the card's device backends.
    StoppingDevices,
    /// Reset written; waiting for `offline`.
    Resetting,
    /// Writing `boot`.
    Booting,
    /// Waiting before booting a crashed card again.
    Backoff,
    /// Too many crashes: the card is left down until an operator boots it.
    CrashLoop,
    /// The card's reset failed; waiting for an operator.
    ResetFailed,
    /// The daemon is stopping; the card is no longer supervised.
    Stopped,
}

impl SupervisorState {
    pub const ALL: [SupervisorState; 11] = [
        SupervisorState::Adopting,
        SupervisorState::Idle,
        SupervisorState::Running,
        SupervisorState::ShuttingDown,
        SupervisorState::StoppingDevices,
        SupervisorState::Resetting,
        SupervisorState::Booting,
        SupervisorState::Backoff,
        SupervisorState::CrashLoop,
        SupervisorState::ResetFailed,
        SupervisorState::Stopped,
    ];

    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            SupervisorState::Adopting => "adopting",
            SupervisorState::Idle => "idle",
            SupervisorState::Running => "running",
            SupervisorState::ShuttingDown => "shutting_down",
            SupervisorState::StoppingDevices => "stopping_devices",
            SupervisorState::Resetting => "resetting",
            SupervisorState::Booting => "booting",
            SupervisorState::Backoff => "backoff",
            SupervisorState::CrashLoop => "crash_loop",
            SupervisorState::ResetFailed => "reset_failed",
            SupervisorState::Stopped => "stopped",
        }
    }
}

impl fmt::Display for SupervisorState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One virtio device a backend serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceStatus {
    /// `console`, `net`, `block`.
    pub kind: String,
    /// What the backend is attached to (a pty, a TAP name, an image path).
    pub target: String,
    /// `down` (not added: the card's devices are down), `waiting` (added;
    /// the card's driver has not taken it up), `up` (served), `gone` (the
    /// card removed it), `error` (adding failed, or the card broke its
    /// rings: `target` says why).
    pub state: String,
    /// Counters by name (`rx_bytes`, `tx_bytes`, `requests`, `errors`,
    /// `ring_full`, ...).
    pub counters: BTreeMap<String, u64>,
}

/// The last crash of a card.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrashSummary {
    pub ts_ms: u64,
    /// The forensics bundle directory, if one was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle: Option<String>,
}

/// How a configuration reload went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadResult {
    /// Whether the configuration changed at all.
    pub changed: bool,
}

// ---- events ---------------------------------------------------------------

/// Something that happened, sent to subscribers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Unix time, ms.
    pub ts_ms: u64,
    /// The card it concerns; absent for daemon-wide events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card: Option<u32>,
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventKind {
    /// The card's sysfs `state` changed.
    CardState {
        #[serde(with = "opt_state")]
        from: Option<MicState>,
        #[serde(with = "state")]
        to: MicState,
    },
    /// The supervisor changed state; `reason` says why.
    Supervisor {
        from: SupervisorState,
        to: SupervisorState,
        reason: String,
    },
    /// The card's final shutdown status (`None`: it never came within the
    /// bound).
    ShutdownStatus {
        #[serde(with = "opt_status")]
        status: Option<MicStatus>,
        waited_ms: u64,
    },
    /// A crash was handled; `bundle` is the forensics directory.
    Crash {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        bundle: Option<String>,
        recent_crashes: u32,
    },
    /// A reset ended: `offline`, `reset_failed` or `timeout`.
    Reset { outcome: ResetOutcome, waited_ms: u64 },
    /// The supervisor booted the card (`error`: the boot was refused).
    Boot {
        reason: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// A crashed card will be booted again after `delay_ms`.
    Backoff { delay_ms: u64, attempt: u32 },
    /// Too many crashes: the card is left down.
    CrashLoop { crashes: u32, window_secs: u64 },
    /// Devices were added for the card.
    DevicesAdded { devices: Vec<String> },
    /// The card's devices were removed.
    DevicesRemoved { devices: Vec<String> },
    /// The configuration was reloaded (`error`: refused, the old one stays).
    ConfigReloaded {
        source: ReloadSource,
        ok: bool,
        changed: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// A daemon lifecycle step: `started`, `ready`, `stopping`.
    Daemon { what: DaemonStep },
    /// Something failed; the supervisor carries on.
    Error { message: String },
    /// This subscriber fell behind and `missed` events were dropped for it.
    Lagged { missed: u64 },
}

impl EventKind {
    /// Every `kind` tag, in declaration order.
    pub const NAMES: [&'static str; 14] = [
        "card_state",
        "supervisor",
        "shutdown_status",
        "crash",
        "reset",
        "boot",
        "backoff",
        "crash_loop",
        "devices_added",
        "devices_removed",
        "config_reloaded",
        "daemon",
        "error",
        "lagged",
    ];

    /// The `kind` tag, for logs and metrics.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::CardState { .. } => "card_state",
            EventKind::Supervisor { .. } => "supervisor",
            EventKind::ShutdownStatus { .. } => "shutdown_status",
            EventKind::Crash { .. } => "crash",
            EventKind::Reset { .. } => "reset",
            EventKind::Boot { .. } => "boot",
            EventKind::Backoff { .. } => "backoff",
            EventKind::CrashLoop { .. } => "crash_loop",
            EventKind::DevicesAdded { .. } => "devices_added",
            EventKind::DevicesRemoved { .. } => "devices_removed",
            EventKind::ConfigReloaded { .. } => "config_reloaded",
            EventKind::Daemon { .. } => "daemon",
            EventKind::Error { .. } => "error",
            EventKind::Lagged { .. } => "lagged",
        }
    }
}

/// How much an event matters: mpssd logs it at this level, the tools
/// colour it by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Debug,
    Info,
    Warn,
    Error,
}

impl Event {
    /// The event in words, `micN: ` first for a card's, and its severity:
    /// the one description mpssd logs and the tools show.
    #[must_use]
    pub fn describe(&self) -> (Severity, String) {
        let e = self;
        let who = e.card.map(|c| format!("mic{c}: ")).unwrap_or_default();
        let opt = |s: Option<&'static str>| s.unwrap_or("unknown");
        let (level, text) = match &e.kind {
            EventKind::CardState { from, to } => (
                Severity::Info,
                format!(
                    "card state {} -> {}",
                    opt(from.map(MicState::as_str)),
                    to.as_str()
                ),
            ),
            EventKind::Supervisor { from, to, reason } => {
                let level = match to {
                    SupervisorState::ResetFailed | SupervisorState::CrashLoop => Severity::Error,
                    _ => Severity::Info,
                };
                (level, format!("{from} -> {to}: {reason}"))
            }
            EventKind::ShutdownStatus { status, waited_ms } => match status {
                Some(s) => (
                    Severity::Info,
                    format!("shutdown status {} after {waited_ms} ms", s.as_str()),
                ),
                None => (
                    Severity::Warn,
                    format!("no final shutdown status within {waited_ms} ms; resetting anyway"),
                ),
            },
            EventKind::Crash {
                bundle,
                recent_crashes,
            } => (
                Severity::Warn,
                format!(
                    "card crashed ({recent_crashes} in the crash-loop window); forensics: {}",
                    bundle.as_deref().unwrap_or("none written")
                ),
            ),
            EventKind::Reset { outcome, waited_ms } => {
                let level = match outcome {
                    ResetOutcome::Offline => Severity::Info,
                    _ => Severity::Error,
                };
                (level, format!("reset ended {outcome:?} after {waited_ms} ms"))
            }
            EventKind::Boot { reason, error } => match error {
                None => (Severity::Info, format!("booting ({reason})")),
                Some(err) => (Severity::Error, format!("boot ({reason}) failed: {err}")),
            },
            EventKind::Backoff { delay_ms, attempt } => (
                Severity::Info,
                format!("booting again in {delay_ms} ms (crash {attempt} in the window)"),
            ),
            EventKind::CrashLoop { crashes, window_secs } => (
                Severity::Error,
                format!(
                    "{crashes} crashes within {window_secs} s: crash loop, the card is left down \
                 (boot it by hand to try again)"
                ),
            ),
            EventKind::DevicesAdded { devices } => {
                (Severity::Info, format!("devices added: [{}]", devices.join(", ")))
            }
            EventKind::DevicesRemoved { devices } => (
                Severity::Info,
                format!("devices removed: [{}]", devices.join(", ")),
            ),
            EventKind::ConfigReloaded {
                source,
                ok,
                changed,
                error,
            } => match (ok, error) {
                (true, _) => (
                    Severity::Info,
                    format!(
                        "configuration reloaded ({source:?}){}",
                        if *changed { "" } else { ", unchanged" }
                    ),
                ),
                (false, e) => (
                    Severity::Error,
                    format!(
                        "configuration refused ({source:?}), the running one stays: {}",
                        e.as_deref().unwrap_or("?")
                    ),
                ),
            },
            EventKind::Daemon { what } => (Severity::Info, format!("daemon {what:?}")),
            EventKind::Error { message } => (Severity::Error, message.clone()),
            EventKind::Lagged { missed } => (Severity::Debug, format!("a subscriber missed {missed} events")),
        };
        (level, format!("{who}{text}"))
    }
}

/// How a reset ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResetOutcome {
    Offline,
    ResetFailed,
    Timeout,
    /// The reset could not be requested.
    Error,
}

/// What made the daemon re-read its configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReloadSource {
    Start,
    File,
    Sighup,
    Request,
}

/// A daemon lifecycle step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DaemonStep {
    Started,
    /// Every card adopted (systemd READY=1).
    Ready,
    Stopping,
}

// ---- errors ---------------------------------------------------------------

/// A refused request: `{"code":"no_such_card","message":"..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
}

impl ErrorBody {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame's `v` is not [`VERSION`].
    UnsupportedVersion,
    /// Not a JSON object, no `v`, or not a known request.
    BadRequest,
    /// Longer than [`MAX_FRAME`]; the connection is closed.
    FrameTooLarge,
    /// No such card.
    NoSuchCard,
    /// The request needs a backend the card does not have (no block image
    /// configured, no console).
    NotAvailable,
    /// The configuration file was refused; the running one stays.
    InvalidConfig,
    /// The daemon serves as many clients as it is configured to.
    TooManyClients,
    /// The daemon is stopping.
    ShuttingDown,
    /// A console request on a card this connection is not attached to.
    NotAttached,
    /// Input or a resize from a `read_only` attachment.
    ReadOnly,
    /// Another client holds the console read-write (the message says
    /// who); or the card did not take input within the bound (the message
    /// says how much it took).
    ConsoleBusy,
    /// A backend could not do what was asked (the message says why; e.g.
    /// the new block image cannot be opened, and the old one stays).
    DeviceError,
    /// The client did not finish a frame or read its answers in time.
    Timeout,
    /// Anything else.
    Internal,
}

/// Why a frame could not be decoded; becomes an [`ErrorBody`] for the
/// answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("not a JSON object: {0}")]
    NotJson(String),
    #[error("the frame has no protocol version \"v\" (this mpssd speaks version {VERSION})")]
    NoVersion,
    #[error("protocol version {got} is not supported: this mpssd speaks version {VERSION}")]
    UnsupportedVersion { got: String },
    #[error("bad request: {0}")]
    BadRequest(String),
}

impl DecodeError {
    #[must_use]
    pub fn code(&self) -> ErrorCode {
        match self {
            DecodeError::UnsupportedVersion { .. } => ErrorCode::UnsupportedVersion,
            _ => ErrorCode::BadRequest,
        }
    }

    #[must_use]
    pub fn to_body(&self) -> ErrorBody {
        ErrorBody::new(self.code(), self.to_string())
    }
}

/// The `v` and `id` of a frame, read before the rest (so a frame of an
/// unknown version is refused by its version, not by its contents).
#[derive(Deserialize)]
struct Probe {
    v: Option<serde_json::Value>,
    id: Option<serde_json::Value>,
}

fn probe(line: &[u8]) -> Result<(Option<u64>, serde_json::Value), DecodeError> {
    let value: serde_json::Value =
        serde_json::from_slice(line).map_err(|e| DecodeError::NotJson(e.to_string()))?;
    if !value.is_object() {
        return Err(DecodeError::NotJson(format!("found {}", kind_of(&value))));
    }
    let p = Probe::deserialize(&value).map_err(|e| DecodeError::BadRequest(e.to_string()))?;
    let id = p.id.as_ref().and_then(serde_json::Value::as_u64);
    match p.v {
        None => Err(DecodeError::NoVersion),
        Some(v) if v.as_u64() == Some(u64::from(VERSION)) => Ok((id, value)),
        Some(v) => Err(DecodeError::UnsupportedVersion {
            got: truncate(&v.to_string(), 40),
        }),
    }
}

/// Decodes one request frame (without its newline). On failure, the `id`
/// the frame carried (if it had one) comes back with the error, so the
/// answer can name it.
pub fn decode_request(line: &[u8]) -> Result<ClientFrame, (Option<u64>, DecodeError)> {
    let (id, value) = probe(line).map_err(|e| (peek_id(line), e))?;
    ClientFrame::deserialize(value).map_err(|e| (id, DecodeError::BadRequest(e.to_string())))
}

/// Decodes one daemon frame (without its newline).
pub fn decode_server(line: &[u8]) -> Result<ServerFrame, DecodeError> {
    if let Some(frame) = console_output(line) {
        return Ok(frame);
    }
    // The common case in one pass; anything it does not take is decoded
    // again the careful way, for the error that says what is wrong.
    if let Ok(frame) = serde_json::from_slice::<ServerFrame>(line) {
        if frame.v == VERSION {
            return Ok(frame);
        }
    }
    let (_, value) = probe(line)?;
    ServerFrame::deserialize(value).map_err(|e| DecodeError::BadRequest(e.to_string()))
}

/// Console output exactly as [`encode`] writes it
/// (`{"v":1,"console":{"card":N,"kind":"output","data":"…"}}`, with
/// `,"replay":true` after the data for scrollback),
/// taken apart without the JSON parser: it is nearly all a console
/// reader receives, and its data is base64, which holds nothing JSON would
/// escape. `None` for anything else (other frames, other spellings of the
/// same one, bad base64), which the parser decodes as ever.
fn console_output(line: &[u8]) -> Option<ServerFrame> {
    /// A JSON number as serde writes a `u32`: digits, no leading zero.
    fn number(s: &[u8]) -> Option<(u32, &[u8])> {
        let end = s.iter().position(|b| !b.is_ascii_digit()).unwrap_or(s.len());
        let (digits, rest) = s.split_at(end);
        if digits.is_empty() || (digits.len() > 1 && digits[0] == b'0') {
            return None;
        }
        Some((std::str::from_utf8(digits).ok()?.parse().ok()?, rest))
    }
    let (v, rest) = number(line.strip_prefix(br#"{"v":"#)?)?;
    let (card, rest) = number(rest.strip_prefix(br#","console":{"card":"#)?)?;
    let rest = rest.strip_prefix(br#","kind":"output","data":""#)?;
    let end = memchr::memchr(b'"', rest)?;
    let (data, tail) = rest.split_at(end);
    let replay = match tail {
        br#""}}"# | br#"","replay":false}}"# => false,
        br#"","replay":true}}"# => true,
        _ => return None,
    };
    if v != VERSION {
        return None;
    }
    let data = bytes::decode_base64_bytes(data).ok()?;
    Some(ServerFrame {
        v,
        id: None,
        body: ServerBody::Console(ConsoleFrame {
            card,
            event: ConsoleEvent::Output {
                data: Bytes(data),
                replay,
            },
        }),
    })
}

/// Encodes a frame as one line, newline included.
pub fn encode<T: Serialize>(frame: &T) -> Vec<u8> {
    // Serialising these types cannot fail: no maps with non-string keys, no
    // failing Serialize impls.
    let mut out = serde_json::to_vec(frame).unwrap_or_else(|e| {
        format!(r#"{{"v":{VERSION},"error":{{"code":"internal","message":"encoding failed: {e}"}}}}"#)
            .into_bytes()
    });
    out.push(b'\n');
    out
}

fn peek_id(line: &[u8]) -> Option<u64> {
    let value: serde_json::Value = serde_json::from_slice(line).ok()?;
    value.get("id")?.as_u64()
}

fn kind_of(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((cut, _)) => format!("{}...", &s[..cut]),
        None => s.to_owned(),
    }
}

/// Unix time in ms of a `SystemTime` (0 before the epoch).
#[must_use]
pub fn unix_ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

// ---- the sysfs strings, from mic-core's one definition ---------------------

mod state {
    use super::MicState;
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    #[allow(clippy::trivially_copy_pass_by_ref)] // serde's `with` signature
    pub(crate) fn serialize<S: Serializer>(s: &MicState, ser: S) -> Result<S::Ok, S::Error> {
        ser.serialize_str(s.as_str())
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<MicState, D::Error> {
        let s = String::deserialize(de)?;
        MicState::from_sysfs(&s).ok_or_else(|| D::Error::custom(format!("unknown card state {s:?}")))
    }
}

mod opt_state {
    use super::MicState;
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    #[allow(clippy::ref_option, clippy::trivially_copy_pass_by_ref)] // serde's `with` signature
    pub(crate) fn serialize<S: Serializer>(s: &Option<MicState>, ser: S) -> Result<S::Ok, S::Error> {
        match s {
            Some(s) => ser.serialize_str(s.as_str()),
            None => ser.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<Option<MicState>, D::Error> {
        match Option::<String>::deserialize(de)? {
            None => Ok(None),
            Some(s) => MicState::from_sysfs(&s)
                .map(Some)
                .ok_or_else(|| D::Error::custom(format!("unknown card state {s:?}"))),
        }
    }
}

pub(crate) mod opt_status {
    use super::MicStatus;
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    #[allow(clippy::ref_option, clippy::trivially_copy_pass_by_ref)] // serde's `with` signature
    pub(crate) fn serialize<S: Serializer>(s: &Option<MicStatus>, ser: S) -> Result<S::Ok, S::Error> {
        match s {
            Some(s) => ser.serialize_str(s.as_str()),
            None => ser.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<Option<MicStatus>, D::Error> {
        match Option::<String>::deserialize(de)? {
            None => Ok(None),
            Some(s) => MicStatus::from_sysfs(&s)
                .map(Some)
                .ok_or_else(|| D::Error::custom(format!("unknown shutdown status {s:?}"))),
        }
    }
}

#[cfg(test)]
mod tests;
