//! Lifecycle operations, each card on its own worker thread, through
//! libmic only (mictop never writes sysfs itself). Workers report progress
//! and the outcome as [`Action::Op`]; they never panic the UI.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use libmic::{BootRequest, Card, MicState, MicStatus, Outcome};
use tokio::sync::mpsc::UnboundedSender;

use crate::app::{Action, OpEvent, OpKind};

/// How often a shutdown wait looks at `shutdown_status` (it has no
/// notification on every kernel; a state change wakes the wait at once).
const STATUS_POLL: Duration = Duration::from_millis(100);

/// How long a reset of a `reset_failed` card may take before it counts as
/// failed again (the driver's reset budget is 45 s).
const RESET_FAILED_RETRY: Duration = Duration::from_secs(60);

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
    e.to_string()
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
                match self.card.state().map_err(|e| err(&e))? {
                    MicState::Online => {
                        self.shutdown()?;
                    }
                    MicState::Offline => {}
                    MicState::ShuttingDown | MicState::ResetFailed => {
                        self.reset()?;
                    }
                }
                self.boot()
            }
        }
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
        match self.card.state().map_err(|e| err(&e))? {
            MicState::Offline => return Ok("already offline".into()),
            MicState::ResetFailed => {
                return Err("the card is reset_failed and runs no OS to shut down: reset it instead".into());
            }
            MicState::Online => {
                self.progress("asking the card OS to shut down");
                self.card.request_shutdown().map_err(|e| err(&e))?;
                if self.card.state().map_err(|e| err(&e))? == MicState::Online {
                    return Err(
                        "the card OS did not take the shutdown request (still booting, or no shutdown \
                                doorbell published): reset the card instead"
                            .into(),
                    );
                }
            }
            MicState::ShuttingDown => {}
        }
        self.progress("waiting for the card OS to halt");
        let status = self.wait_status()?;
        let status = match status {
            Some(s) => s.as_str().to_owned(),
            None => "offline".to_owned(),
        };
        if self.card.state().map_err(|e| err(&e))? != MicState::Offline {
            self.reset()?;
        }
        Ok(format!("offline (card reported {status})"))
    }

    /// Waits until the card reports its shutdown (`shutdown_status` not
    /// `nop`) or goes offline on its own (`None`).
    fn wait_status(&self) -> Res<Option<MicStatus>> {
        let mut watcher = self.card.watch_state().map_err(|e| err(&e))?;
        loop {
            if watcher.current() == MicState::Offline {
                return Ok(None);
            }
            let status = self.card.shutdown_status().map_err(|e| err(&e))?;
            if status != MicStatus::Nop {
                return Ok(Some(status));
            }
            let left = self.left();
            if left.is_zero() {
                return Err(format!(
                    "timed out waiting for the card OS to report its shutdown (state {})",
                    watcher.current().as_str()
                ));
            }
            watcher
                .wait_change(Some(left.min(STATUS_POLL)))
                .map_err(|e| err(&e))?;
        }
    }

    fn reset(&self) -> Res<String> {
        self.progress("resetting");
        let mut watcher = self.card.watch_state().map_err(|e| err(&e))?;
        let initial = watcher.current();
        if let Outcome::AlreadyInState(s) = self.card.request_reset().map_err(|e| err(&e))? {
            return Ok(format!("already {}", s.as_str()));
        }
        // A failed reset of a reset_failed card changes nothing that could be
        // noticed; the driver gives up within its reset budget (45 s).
        let deadline = if initial == MicState::ResetFailed {
            self.deadline.min(Instant::now() + RESET_FAILED_RETRY)
        } else {
            self.deadline
        };
        let mut changed = false;
        loop {
            match watcher.current() {
                MicState::Offline => return Ok("offline".into()),
                MicState::ResetFailed if changed || initial != MicState::ResetFailed => {
                    return Err(
                        "the reset failed: the card's bootstrap did not come back (reset_failed)".into(),
                    );
                }
                _ => {}
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || watcher.wait_change(Some(left)).map_err(|e| err(&e))?.is_none() {
                return Err(format!(
                    "the reset did not complete in time (state {})",
                    watcher.current().as_str()
                ));
            }
            changed = true;
        }
    }
}
