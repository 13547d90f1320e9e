//! Waiting on `state` from tokio (feature `tokio`), shared by mictop and
//! mpssd: the `state` fd is registered with the reactor for priority and
//! error events (`POLLPRI`, what `sysfs_notify` raises; `POLLERR`, a FUSE
//! connection or device that went away), so a wait costs nothing until the
//! driver (or micemu) notifies. Each wake-up re-reads the file on the
//! blocking pool, bounded by the card's [`crate::IoLimit`], so a hung driver
//! never stalls the runtime.
//!
//! Files the reactor cannot watch (epoll refuses regular files) fall back to
//! [`StateWatcher::wait_change`] on the blocking pool, in bounded slices.

use std::fs::File;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use mic_core::abi::MicState;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::wait::StateWatcher;

/// How long one blocking wait of the fallback lasts before it is started
/// again (so a dropped watcher frees its thread within this time).
const FALLBACK_SLICE: Duration = Duration::from_secs(1);

/// What the reactor waits for.
const INTEREST: Interest = Interest::PRIORITY.add(Interest::ERROR);

type Pending = JoinHandle<(StateWatcher, Result<Option<MicState>>)>;

/// A card's `state` watched from async code.
#[derive(Debug)]
pub struct AsyncStateWatcher {
    card: String,
    current: MicState,
    /// `None`: the blocking fallback.
    fd: Option<AsyncFd<Arc<File>>>,
    // INVARIANT: exactly one of `watcher` and `pending` is `Some`.
    watcher: Option<StateWatcher>,
    /// A read (or, in the fallback, a wait) running on the blocking pool;
    /// kept across cancellation so no change is lost.
    pending: Option<Pending>,
}

impl AsyncStateWatcher {
    /// Watches `w` through the reactor, or through the blocking fallback if
    /// its fd cannot be registered. Must run inside a tokio runtime.
    #[must_use]
    pub fn new(w: StateWatcher) -> Self {
        match Self::try_register(w) {
            Ok(a) => a,
            Err((w, _)) => Self {
                card: w.card_name().to_owned(),
                current: w.current(),
                fd: None,
                watcher: Some(w),
                pending: None,
            },
        }
    }

    /// Watches `w` through the reactor only; gives `w` back with the
    /// reason if its fd cannot be registered.
    pub fn try_register(w: StateWatcher) -> std::result::Result<Self, (StateWatcher, io::Error)> {
        // SAFETY: the `Arc<File>` keeps the `state` file open for as long as
        // the `AsyncFd` holds it (the watcher shares the same `Arc` and only
        // seeks and reads through it), so the registered descriptor is
        // neither closed nor reused while registered.
        match unsafe { AsyncFd::register_with_interest(w.shared_file(), INTEREST) } {
            Ok(fd) => Ok(Self {
                card: w.card_name().to_owned(),
                current: w.current(),
                fd: Some(fd),
                watcher: Some(w),
                pending: None,
            }),
            Err(e) => Err((w, e.into())),
        }
    }

    /// Whether the reactor watches the fd (false: the blocking fallback).
    #[must_use]
    pub fn is_reactor(&self) -> bool {
        self.fd.is_some()
    }

    /// The state as last read.
    #[must_use]
    pub fn current(&self) -> MicState {
        self.current
    }

    /// `micN`.
    #[must_use]
    pub fn card_name(&self) -> &str {
        &self.card
    }

    fn io_error(&self, source: io::Error) -> Error {
        Error::Io {
            path: format!("{}/state", self.card).into(),
            source,
        }
    }

    /// Waits until the state differs from [`current`](Self::current) and
    /// returns it. Cancel safe: dropping the future loses no change.
    pub async fn changed(&mut self) -> Result<MicState> {
        loop {
            if self.pending.is_none() {
                if let Some(fd) = &self.fd {
                    let mut guard = fd.ready(INTEREST).await.map_err(|e| self.io_error(e))?;
                    // Clear first: a notification after this point wakes us again.
                    guard.clear_ready();
                }
                let Some(mut w) = self.watcher.take() else {
                    unreachable!("INVARIANT: watcher or pending")
                };
                let job = if self.fd.is_some() {
                    // The read is bounded by the card's IoLimit.
                    tokio::task::spawn_blocking(move || {
                        let r = w.refresh();
                        (w, r)
                    })
                } else {
                    // TIMEOUT: one slice, then the loop starts another.
                    tokio::task::spawn_blocking(move || {
                        let r = w.wait_change(Some(FALLBACK_SLICE));
                        (w, r)
                    })
                };
                self.pending = Some(job);
            }
            let Some(job) = self.pending.as_mut() else {
                unreachable!("just set")
            };
            let joined = job.await;
            self.pending = None;
            let (w, r) = joined.map_err(|e| self.io_error(io::Error::other(e)))?;
            self.watcher = Some(w);
            if let Some(s) = r? {
                self.current = s;
                return Ok(s);
            }
        }
    }

    /// Re-reads the state now (bounded by the card's IoLimit); returns it if
    /// it changed. While a read started by [`changed`](Self::changed) is
    /// still running, this reports nothing new: that read will.
    pub fn refresh(&mut self) -> Result<Option<MicState>> {
        let Some(w) = self.watcher.as_mut() else {
            return Ok(None);
        };
        let changed = w.refresh()?;
        if let Some(s) = changed {
            self.current = s;
        }
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attrs::Attr;
    use crate::card::Card;
    use crate::root::MicRoot;

    #[tokio::test(flavor = "current_thread")]
    async fn plain_files_use_the_fallback_and_see_changes() {
        let dir = tempfile::tempdir().unwrap();
        let card = Card::new(&MicRoot::new(dir.path()), 0);
        std::fs::create_dir_all(card.sysfs_dir()).unwrap();
        std::fs::write(card.attr_path(Attr::State), "offline\n").unwrap();
        let mut w = AsyncStateWatcher::new(card.watch_state().unwrap());
        assert!(!w.is_reactor(), "epoll does not take regular files");
        assert_eq!(w.current(), MicState::Offline);
        // Cancel a wait mid-slice: the change made after it is still seen.
        let first = tokio::time::timeout(Duration::from_millis(20), w.changed()).await;
        assert!(first.is_err());
        std::fs::write(card.attr_path(Attr::State), "online\n").unwrap();
        // TIMEOUT: the fallback notices within one slice.
        let s = tokio::time::timeout(Duration::from_secs(10), w.changed())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(s, MicState::Online);
        assert_eq!(w.current(), MicState::Online);
        assert_eq!(w.card_name(), "mic0");
    }
}
