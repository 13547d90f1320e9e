//! What mictop knows about the cards and the host: plain data the
//! components keep and draw, with no UI state in it.

use std::time::{Duration, Instant};

use libmic::mpssd::CardStatus;
use libmic::{Card, CardInfo, MicState, MicStatus, VdevInfo};

/// Host facts for the header.
#[derive(Debug, Clone, PartialEq)]
pub struct HostInfo {
    pub hostname: String,
    /// Whole-machine CPU use, percent of all CPUs.
    pub cpu_percent: f32,
    pub cpus: usize,
    pub mem_used: u64,
    pub mem_total: u64,
}

/// A lifecycle operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpKind {
    Boot,
    Shutdown,
    Reset,
    Reboot,
}

impl OpKind {
    #[must_use]
    pub fn verb(self) -> &'static str {
        match self {
            OpKind::Boot => "boot",
            OpKind::Shutdown => "shutdown",
            OpKind::Reset => "reset",
            OpKind::Reboot => "reboot",
        }
    }

    /// What the operation does, for the confirmation dialog.
    #[must_use]
    pub fn explain(self) -> &'static str {
        match self {
            OpKind::Boot => {
                "load mic/uos.img with the default ramdisk and command line, then wait for the card OS"
            }
            OpKind::Shutdown => "ask the card OS to shut down, then reset the card to offline",
            OpKind::Reset => "reset the card to offline; a running card OS is stopped without warning",
            OpKind::Reboot => "shut down (or reset) the card, then boot it again",
        }
    }
}

/// What a worker running an operation reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpEvent {
    Progress(String),
    Done(String),
    Failed(String),
}

/// The last operation on a card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpStatus {
    pub kind: OpKind,
    pub phase: String,
    /// `None` while running.
    pub outcome: Option<Result<String, String>>,
}

impl OpStatus {
    #[must_use]
    pub fn running(&self) -> bool {
        self.outcome.is_none()
    }
}

/// The debugfs summaries of the selected card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detail {
    pub smpt: Result<libmic::SmptSummary, String>,
    pub dp: Result<libmic::DpSummary, String>,
    /// The host driver's record of the card's virtio devices.
    pub vdevs: Result<Vec<VdevInfo>, String>,
}

/// mpssd as mictop last heard of it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Mpssd {
    /// Not asked yet.
    #[default]
    Unknown,
    Running {
        version: String,
        pid: u32,
    },
    /// No control socket, or nothing listening: in words.
    NotRunning(String),
    /// It did not answer in time, or failed: in words.
    Unreachable(String),
}

/// What mictop hears from mpssd.
#[derive(Debug, Clone, PartialEq)]
pub enum MpssdUpdate {
    /// Its status, with every card it supervises.
    Status(Box<libmic::mpssd::DaemonStatus>),
    /// It is not there, or not answering.
    Gone(Mpssd),
    /// One of its events.
    Event(libmic::mpssd::Event),
}

/// The virtio device kinds as the table abbreviates them.
#[must_use]
pub fn short_kind(kind: &str) -> &str {
    match kind {
        "console" => "con",
        "block" => "blk",
        other => other,
    }
}

/// The kinds of a supervised card's devices that are not up, while its
/// supervisor has it running (a card being reset has its devices down on
/// purpose). `None`: not supervised, or not running.
#[must_use]
pub fn devices_down(s: &CardStatus) -> Option<Vec<&str>> {
    (s.supervisor == libmic::mpssd::SupervisorState::Running).then(|| {
        s.devices
            .iter()
            .filter(|d| d.state != "up")
            .map(|d| d.kind.as_str())
            .collect()
    })
}

/// One card as mictop knows it.
#[derive(Debug, Clone)]
pub struct CardView {
    pub card: Card,
    pub id: u32,
    pub name: String,
    pub state: Option<MicState>,
    /// Why the state could not be read, if it could not.
    pub state_error: Option<String>,
    /// When mictop saw the state begin; `None`: before mictop started (or
    /// before the card was enumerated again, see `first_seen`).
    pub since: Option<Instant>,
    /// When this card was enumerated, if after mictop started (the driver
    /// came back): a state of unknown age is at least this old.
    pub first_seen: Option<Instant>,
    /// When the state shown was read (a watcher's read, or the start of an
    /// attribute snapshot): an older read does not override it.
    pub state_at: Option<Instant>,
    pub info: Option<CardInfo>,
    pub info_error: Option<String>,
    pub post: Option<String>,
    pub op: Option<OpStatus>,
    pub marked: bool,
    /// mpssd's supervision of the card, while mpssd runs and supervises it.
    pub supervision: Option<CardStatus>,
}

impl CardView {
    #[must_use]
    pub fn new(card: Card, state: Result<MicState, String>) -> Self {
        let (state, state_error) = match state {
            Ok(s) => (Some(s), None),
            Err(e) => (None, Some(e)),
        };
        Self {
            id: card.id(),
            name: card.name().to_owned(),
            card,
            state,
            state_error,
            since: None,
            first_seen: None,
            state_at: None,
            info: None,
            info_error: None,
            post: None,
            op: None,
            marked: false,
            supervision: None,
        }
    }

    /// Online, with the card OS not yet running (post code not `FF`).
    #[must_use]
    pub fn booting(&self) -> bool {
        self.state == Some(MicState::Online) && self.post.as_deref().is_some_and(|p| p != "FF")
    }

    #[must_use]
    pub fn shutdown_status(&self) -> Option<MicStatus> {
        self.info.as_ref().and_then(|i| i.shutdown_status)
    }

    /// Time in the current state, and whether it is only a lower bound
    /// (the state began before mictop started).
    #[must_use]
    pub fn age(&self, now: Instant, started: Instant) -> (Duration, bool) {
        match self.since {
            Some(s) => (now.saturating_duration_since(s), false),
            None => (
                now.saturating_duration_since(self.first_seen.unwrap_or(started)),
                true,
            ),
        }
    }
}

/// `42s`, `12m`, `3h05m`, `2d04h`: second resolution only in the first minute.
#[must_use]
pub fn fmt_age(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86_400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages() {
        assert_eq!(fmt_age(Duration::from_secs(5)), "5s");
        assert_eq!(fmt_age(Duration::from_secs(125)), "2m");
        assert_eq!(fmt_age(Duration::from_secs(3 * 3600 + 300)), "3h05m");
        assert_eq!(fmt_age(Duration::from_secs(2 * 86_400 + 4 * 3600)), "2d04h");
    }
}
