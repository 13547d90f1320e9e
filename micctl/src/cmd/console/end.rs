//! How a console session ends: its exit code, its JSON name, its words.

use std::time::Duration;

use libmic::{MicState, MicStatus};
use nix::sys::signal::Signal;

use crate::exit::Exit;
use crate::output;

/// How a session ended.
#[derive(Debug)]
pub(super) enum End {
    /// The escape key, or the terminal went away.
    Detached,
    /// `--until` appeared.
    Until,
    /// A script's answer is over: nothing printed for `--idle`.
    Idle,
    /// stdout was closed (`micctl console mic0 | head`).
    OutputClosed,
    Timeout(Duration),
    CardDown {
        state: MicState,
        status: Option<MicStatus>,
    },
    ConsoleGone(String),
    /// Another client took the console read-write (`--force`).
    TakenOver(String),
    MpssdStopped(String),
    Signal(Signal),
    Failed(anyhow::Error),
}

impl End {
    pub(super) fn exit(&self) -> Exit {
        match self {
            End::Detached | End::Until | End::Idle | End::OutputClosed => Exit::Ok,
            End::Timeout(_) => Exit::Timeout,
            End::CardDown { .. } => Exit::CardDown,
            End::ConsoleGone(_) => Exit::ConsoleGone,
            End::TakenOver(_) => Exit::ConsoleBusy,
            End::MpssdStopped(_) => Exit::MpssdAbsent,
            End::Signal(_) => Exit::Failure,
            End::Failed(e) => Exit::of_error(e),
        }
    }

    /// The JSON `end`.
    pub(super) fn name(&self) -> &'static str {
        match self {
            End::Detached => "detached",
            End::Until => "until",
            End::Idle => "idle",
            End::OutputClosed => "output-closed",
            End::Timeout(_) => "timeout",
            End::CardDown { .. } => "card-down",
            End::ConsoleGone(_) => "console-gone",
            End::TakenOver(_) => "taken-over",
            End::MpssdStopped(_) => "mpssd-stopped",
            End::Signal(_) => "signal",
            End::Failed(_) => "failed",
        }
    }

    pub(super) fn message(&self, card: &str, until: Option<&str>) -> String {
        match self {
            End::Detached => format!("detached from {card}'s console"),
            End::Until => format!(
                "{card} printed {}",
                libmic::attrs::quote_value(until.unwrap_or_default())
            ),
            End::Idle => format!("{card} printed nothing more; detached"),
            End::OutputClosed => "stdout was closed; detached".to_owned(),
            End::Timeout(t) => match until {
                Some(u) => format!(
                    "{card} did not print {} within {}",
                    libmic::attrs::quote_value(u),
                    output::human_duration(t.as_secs_f64())
                ),
                None => format!(
                    "gave up after {} (--timeout)",
                    output::human_duration(t.as_secs_f64())
                ),
            },
            End::CardDown { state, status } => match status {
                Some(s) if *s != MicStatus::Nop => {
                    format!(
                        "{card} went down ({}, shutdown status {}); detached",
                        state.as_str(),
                        s.as_str()
                    )
                }
                _ => format!("{card} went down ({}); detached", state.as_str()),
            },
            End::ConsoleGone(why) => format!("{card}'s console went away: {why}; detached"),
            End::TakenOver(why) => format!("{why}; detached"),
            End::MpssdStopped(why) => format!("mpssd stopped ({why}); detached"),
            End::Signal(s) => format!("{s}; detached"),
            End::Failed(e) => format!("{e:#}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ends_have_their_codes_and_words() {
        let down = End::CardDown {
            state: MicState::ShuttingDown,
            status: Some(MicStatus::Crashed),
        };
        assert_eq!(down.exit(), Exit::CardDown);
        assert_eq!(
            down.message("mic0", None),
            "mic0 went down (shutting_down, shutdown status crashed); detached"
        );
        assert_eq!(End::ConsoleGone("x".into()).exit(), Exit::ConsoleGone);
        assert_eq!(End::TakenOver("x".into()).exit(), Exit::ConsoleBusy);
        assert_eq!(End::MpssdStopped("x".into()).exit(), Exit::MpssdAbsent);
        assert_eq!(End::Timeout(Duration::from_secs(5)).exit(), Exit::Timeout);
        assert_eq!(
            End::Timeout(Duration::from_secs(5)).message("mic0", Some("# ")),
            "mic0 did not print \"# \" within 5.0s"
        );
        for ok in [End::Detached, End::Until, End::Idle, End::OutputClosed] {
            assert_eq!(ok.exit(), Exit::Ok);
        }
        assert_eq!(
            End::Signal(Signal::SIGTERM).message("mic0", None),
            "SIGTERM; detached"
        );
    }
}
