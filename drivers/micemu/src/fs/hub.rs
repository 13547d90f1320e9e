//! `sysfs_notify` for the FUSE tree: per-file event counters and the poll
//! waiters to wake when they change.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use fuser::PollNotifier;

use super::Tree;

/// Event counters of every file and the `poll(2)` callers waiting on them.
///
/// Share it (`Arc<PollHub>`) between [`mount`](super::mount) and whatever
/// changes attribute values; it outlives mounts, so notifications sent while
/// nothing is mounted are not lost to handles opened later (those start from
/// the current counter, as in kernfs).
#[derive(Default)]
pub struct PollHub {
    state: Mutex<HashMap<(Tree, u32), HashMap<String, Slot>>>,
    /// Signalled whenever a poll registers a waiter.
    registered: Condvar,
}

#[derive(Default)]
struct Slot {
    event: u64,
    /// Registered pollers by file handle (unique across mounts).
    waiters: HashMap<u64, Waiter>,
}

struct Waiter {
    mount: u64,
    notifier: PollNotifier,
}

impl PollHub {
    /// A hub with all counters at zero and nobody waiting.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<(Tree, u32), HashMap<String, Slot>>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `sysfs_notify`: bumps the event counter of `micN/<name>` in `tree` and
    /// wakes everyone polling it. Every open handle that has not read the file
    /// (from offset 0) since then polls as changed (`POLLPRI|POLLERR`).
    pub fn notify(&self, card: u32, tree: Tree, name: &str) {
        let fired: Vec<PollNotifier> = {
            let mut files = self.lock();
            let card_files = files.entry((tree, card)).or_default();
            let slot = if let Some(slot) = card_files.get_mut(name) {
                slot
            } else {
                card_files.entry(name.to_owned()).or_default()
            };
            slot.event = slot.event.wrapping_add(1);
            slot.waiters.drain().map(|(_, w)| w.notifier).collect()
        };
        for notifier in fired {
            // Fails harmlessly when the poller's file or the mount is gone.
            if let Err(e) = notifier.notify() {
                log::debug!("poll wakeup for mic{card} {tree:?} {name}: {e}");
            }
        }
    }

    /// Current event counter of a file (0 until its first notification).
    #[must_use]
    pub fn event(&self, card: u32, tree: Tree, name: &str) -> u64 {
        self.lock()
            .get(&(tree, card))
            .and_then(|files| files.get(name))
            .map_or(0, |slot| slot.event)
    }

    /// Number of open handles of the file whose `poll` registered for a
    /// wakeup that has not fired yet. A poller that timed out stays counted
    /// until the next notification (the kernel does not tell us it left).
    #[must_use]
    pub fn pollers(&self, card: u32, tree: Tree, name: &str) -> usize {
        Self::count(&self.lock(), card, tree, name)
    }

    /// Blocks until at least `n` handles wait on the file (see
    /// [`pollers`](Self::pollers)) or `timeout` passes; returns whether they do.
    /// Meant for tests that need a poller to be parked before notifying.
    pub fn wait_for_pollers(&self, card: u32, tree: Tree, name: &str, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut files = self.lock();
        loop {
            if Self::count(&files, card, tree, name) >= n {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            files = self
                .registered
                .wait_timeout(files, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    fn count(
        files: &HashMap<(Tree, u32), HashMap<String, Slot>>,
        card: u32,
        tree: Tree,
        name: &str,
    ) -> usize {
        files
            .get(&(tree, card))
            .and_then(|f| f.get(name))
            .map_or(0, |slot| slot.waiters.len())
    }

    /// `kernfs_generic_poll` for handle `fh`, which last saw event `seen`:
    /// registers `waiter` (if the kernel asked for a notification) and
    /// returns whether the file changed since. Both happen under one lock, so
    /// a concurrent `notify` either is seen here or wakes the waiter.
    pub(crate) fn poll(
        &self,
        card: u32,
        tree: Tree,
        name: &str,
        fh: u64,
        seen: u64,
        waiter: Option<(u64, PollNotifier)>,
    ) -> bool {
        let mut files = self.lock();
        let card_files = files.entry((tree, card)).or_default();
        let slot = if let Some(slot) = card_files.get_mut(name) {
            slot
        } else {
            card_files.entry(name.to_owned()).or_default()
        };
        let changed = slot.event != seen;
        if let Some((mount, notifier)) = waiter {
            slot.waiters.insert(fh, Waiter { mount, notifier });
            self.registered.notify_all();
        }
        changed
    }

    /// Handle `fh` was released: forget its waiter.
    pub(crate) fn release(&self, card: u32, tree: Tree, name: &str, fh: u64) {
        if let Some(slot) = self.lock().get_mut(&(tree, card)).and_then(|f| f.get_mut(name)) {
            slot.waiters.remove(&fh);
        }
    }

    /// Mount `mount` went away: drop its waiters (their notifiers are dead).
    pub(crate) fn forget_mount(&self, mount: u64) {
        for slot in self.lock().values_mut().flat_map(HashMap::values_mut) {
            slot.waiters.retain(|_, w| w.mount != mount);
        }
    }
}

impl fmt::Debug for PollHub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let files = self.lock();
        let mut d = f.debug_map();
        for ((tree, card), names) in files.iter() {
            for (name, slot) in names {
                d.entry(
                    &format_args!("mic{card} {tree:?} {name}"),
                    &format_args!("event {} pollers {}", slot.event, slot.waiters.len()),
                );
            }
        }
        d.finish()
    }
}
