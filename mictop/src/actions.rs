//! Lifecycle operations, each card on its own worker thread, through
//! libmic only (mictop never writes sysfs itself). Workers report progress
//! and the outcome as [`Action::Op`]; they never panic the UI.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use libmic::{BootRequest, Card, MicState, MicStatus, Outcome, ResetEnd, StopStep, Stopped};
use tokio::sync::mpsc::UnboundedSender;

use crate::app::Action;
use crate::model::{OpEvent, OpKind};

const RESET_FAILED: &str = "the reset failed: the card's bootstrap did not come back (reset_failed)";

/// Starts `kind` on every card, one thread each.
pub fn spawn(kind: OpKind, cards: Vec<Card>, sysmap: &Path, timeout: Duration, tx: &UnboundedSender<Action>) {
    for card in cards {
        let tx = tx.clone();
        let sysmap: PathBuf = sysmap.to_owned();
        let id = card.id();
        let name = format!("op-{}", card.name());
        let tx2 = tx.clone();
        let spawned = std::thread::Builder::new().name(name).spawn(move || {
            let report = |event| {
                let _ = tx.send(Action::Op { id, kind, event });
            };
            let worker = Worker {
                card: &card,
                sysmap: sysmap.is_file().then_some(sysmap.as_path()),
                deadline: Instant::now() + timeout,
                report: &report,
            };
            let event = match worker.run(kind) {
                Ok(msg) => OpEvent::Done(msg),
                Err(msg) => OpEvent::Failed(msg),
            };
            report(event);
        });
        if let Err(e) = spawned {
            let _ = tx2.send(Action::Op {
                id,
                kind,
                event: OpEvent::Failed(format!("cannot start a worker thread: {e}")),
            });
        }
    }
}

struct Worker<'a> {
    card: &'a Card,
    sysmap: Option<&'a Path>,
    deadline: Instant,
    report: &'a dyn Fn(OpEvent),
}

type Res<T> = Result<T, String>;

fn err(e: &libmic::Error) -> String {
    libmic::error::report(e)
}

impl Worker<'_> {
    fn progress(&self, p: &str) {
        (self.report)(OpEvent::Progress(p.to_owned()));
    }

    fn left(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    fn run(&self, kind: OpKind) -> Res<String> {
        match kind {
            OpKind::Boot => self.boot(),
            OpKind::Shutdown => self.shutdown(),
            OpKind::Reset => self.reset(),
            OpKind::Reboot => {
                self.stop()?;
                self.boot()
            }
        }
    }

    /// Shutdown (online), final status, reset (anything not offline).
    fn stop(&self) -> Res<Stopped> {
        let step = Cell::new(None);
        self.card
            .stop(Some(self.left()), |s| {
                step.set(Some(s));
                self.progress(match s {
                    StopStep::Shutdown => "asking the card OS to shut down",
                    StopStep::WaitShutdown => "waiting for the card OS to halt",
                    StopStep::Reset => "resetting",
                });
            })
            .map_err(|e| stop_err(step.get(), &e))
    }

    fn boot(&self) -> Res<String> {
        self.progress("loading the card OS");
        let req = BootRequest::defaults_for(self.card);
        match self.card.boot_with(&req, self.sysmap).map_err(|e| err(&e))? {
            Outcome::AlreadyInState(s) => Ok(format!("already {}", s.as_str())),
            Outcome::Requested => {
                self.progress("waiting for the card OS");
                self.card.wait_os_up(Some(self.left())).map_err(|e| match e {
                    libmic::Error::Timeout { last_state, .. } if last_state != MicState::Online => {
                        format!("the card left online while booting (now {})", last_state.as_str())
                    }
                    e => err(&e),
                })?;
                Ok("card OS up".into())
            }
        }
    }

    fn shutdown(&self) -> Res<String> {
        let (state, status) = match self.card.state().map_err(|e| err(&e))? {
            MicState::Offline => return Ok("already offline".into()),
            MicState::ResetFailed => {
                return Err("the card is reset_failed and runs no OS to shut down: reset it instead".into());
            }
            MicState::Online => self
                .stop()?
                .shutdown
                .unwrap_or((MicState::Offline, MicStatus::Nop)),
            MicState::ShuttingDown => {
                self.progress("waiting for the card OS to halt");
                let end = self
                    .card
                    .wait_shutdown_status(Some(self.left()))
                    .map_err(|e| stop_err(Some(StopStep::WaitShutdown), &e))?;
                if end.0 != MicState::Offline {
                    self.reset()?;
                }
                end
            }
        };
        let status = if state == MicState::Offline {
            "offline"
        } else {
            status.as_str()
        };
        Ok(format!("offline (card reported {status})"))
    }

    fn reset(&self) -> Res<String> {
        self.progress("resetting");
        match self.card.reset_and_wait(Some(self.left())) {
            Ok(ResetEnd::AlreadyOffline) => Ok("already offline".into()),
            Ok(ResetEnd::Offline) => Ok("offline".into()),
            Ok(ResetEnd::Failed) => Err(RESET_FAILED.into()),
            Err(e) => Err(stop_err(Some(StopStep::Reset), &e)),
        }
    }
}

/// A failed step of a lifecycle sequence, in words.
fn stop_err(step: Option<StopStep>, e: &libmic::Error) -> String {
    use libmic::Error as E;
    match (e, step) {
        (E::ShutdownIgnored { .. }, _) => {
            "the card OS did not take the shutdown request (still booting, or no \
                                           shutdown doorbell published): reset the card instead"
                .into()
        }
        (E::ResetFailed { .. }, _) => RESET_FAILED.into(),
        (E::Timeout { last_state, .. }, Some(StopStep::WaitShutdown)) => format!(
            "timed out waiting for the card OS to report its shutdown (state {})",
            last_state.as_str()
        ),
        (E::Timeout { last_state, .. }, Some(StopStep::Reset)) => format!(
            "the reset did not complete in time (state {})",
            last_state.as_str()
        ),
        (e, _) => err(e),
    }
}
