//! A card's devices composed from its slots: the console (always), the
//! network, the disk (when an image is configured).
//!
//! [`CardBackends`] is what mpssd runs with: for each card it makes the
//! slots (in the order the card probes them: console `virtio0`/`hvc0`,
//! then net, then the disk), a [`CardDevices`] over them for the
//! supervisor, a [`CardView`] for everyone else, and a task that applies
//! configuration changes (console limits; `net` turned off or on removes or
//! adds the network; a changed disk section swaps the disk).
//!
//! Adding goes slot by slot in that order (a slot that fails is reported,
//! the others are added); removing stops them all at once, each bounded.

use std::sync::Arc;

use libmic::Card;
use mpssd_proto::{DeviceStatus, EventKind};

use super::block::BlockSlot;
use super::block::device::SwapError;
use super::console::{Broker, ConsoleSlot};
use super::net::NetSlot;
use super::net::slot::NetChange;
use super::{BoxFuture, DeviceContext, DeviceError, DeviceSet, DeviceView, Slot};
use crate::shared::Shared;

/// mpssd's backends.
#[derive(Debug, Clone, Copy, Default)]
pub struct CardBackends;

impl super::Backends for CardBackends {
    fn device_set(&self, card: &Card, shared: &Arc<Shared>) -> Box<dyn DeviceSet> {
        let cfg = shared.config().card(card.id());
        let run_dir = crate::supervisor::run_dir(shared, card);
        let mut slots: Vec<Arc<dyn Slot>> = Vec::new();
        let console = match ConsoleSlot::new(&shared.root, card, &cfg.console, &run_dir) {
            Ok(c) => {
                let c = Arc::new(c);
                slots.push(Arc::clone(&c) as Arc<dyn Slot>);
                Some(c)
            }
            Err(e) => {
                log::error!(target: "mpssd", "{}: no console: {e}", card.name());
                None
            }
        };
        let net = Arc::new(NetSlot::new(&shared.root, card.id()));
        slots.push(Arc::clone(&net) as Arc<dyn Slot>);
        let block = Arc::new(BlockSlot::new(&shared.root, card.id(), &cfg.block));
        slots.push(Arc::clone(&block) as Arc<dyn Slot>);
        let view = Arc::new(CardView {
            slots: slots.clone(),
            console: console.as_ref().map(|c| Arc::clone(c.broker())),
            block: Some(Arc::clone(&block)),
        });
        tokio::spawn(follow_config(
            Arc::clone(shared),
            card.id(),
            net,
            Arc::clone(&view),
        ));
        Box::new(CardDevices { slots, view })
    }
}

/// Applies configuration changes to a card's devices.
async fn follow_config(shared: Arc<Shared>, card: u32, net: Arc<NetSlot>, view: Arc<CardView>) {
    let mut rx = shared.config_rx();
    while rx.changed().await.is_ok() {
        let cfg = rx.borrow_and_update().card(card);
        if let Some(b) = &view.console {
            b.configure(&cfg.console);
        }
        let (slot, new) = (Arc::clone(&net), cfg.clone());
        // TIMEOUT: bounded inside (the data thread's stop, ADD_DEVICE).
        match tokio::task::spawn_blocking(move || slot.config_changed(&new)).await {
            Ok(Some(change)) => report_net(&shared, card, change),
            Ok(None) => {}
            Err(e) => log::error!(target: "mpssd", "mic{card}: changing the network failed: {e}"),
        }
        let Some(block) = view.block.clone() else { continue };
        let new = cfg.block.clone();
        // TIMEOUT: bounded inside (device removal and addition).
        match tokio::task::spawn_blocking(move || block.config_changed(&new)).await {
            Ok(Some(r)) => report_swap(&shared, card, "a configuration change", &r),
            Ok(None) => {}
            Err(e) => log::error!(target: "mpssd", "mic{card}: the disk swap failed: {e}"),
        }
    }
}

/// Events for a network turned off or on by a reload.
fn report_net(shared: &Shared, card: u32, change: NetChange) {
    let devices = vec!["net".to_owned()];
    match change {
        NetChange::Removed => {
            log::info!(target: "mpssd", "mic{card}: network removed (net = false)");
            shared.emit(Some(card), EventKind::DevicesRemoved { devices });
        }
        NetChange::Added => {
            log::info!(target: "mpssd", "mic{card}: network added (net = true)");
            shared.emit(Some(card), EventKind::DevicesAdded { devices });
        }
        NetChange::Failed(e) => shared.emit(
            Some(card),
            EventKind::Error {
                message: format!("adding the network (net = true): {e}"),
            },
        ),
    }
}

/// Swaps card `card`'s disk (`path`, or what the configuration names),
/// off the reactor, and reports it.
pub async fn swap_block(
    shared: &Shared,
    card: u32,
    block: Arc<BlockSlot>,
    path: Option<std::path::PathBuf>,
    cause: &str,
) -> Result<mpssd_proto::BlockSwapped, SwapError> {
    // TIMEOUT: bounded inside (the data thread's stop, ADD_DEVICE).
    let r = match tokio::task::spawn_blocking(move || block.swap(path)).await {
        Ok(r) => r,
        Err(e) => {
            log::error!(target: "mpssd", "mic{card}: the disk swap failed: {e}");
            Err(SwapError::Panicked)
        }
    };
    report_swap(shared, card, cause, &r);
    r
}

/// Events for a disk swap: the disk went and came back, or why not.
pub fn report_swap(
    shared: &Shared,
    card: u32,
    cause: &str,
    r: &Result<mpssd_proto::BlockSwapped, SwapError>,
) {
    match r {
        Ok(s) if s.added => {
            shared.emit(
                Some(card),
                EventKind::DevicesRemoved {
                    devices: vec!["block".into()],
                },
            );
            shared.emit(
                Some(card),
                EventKind::DevicesAdded {
                    devices: vec!["block".into()],
                },
            );
            log::info!(
                target: "mpssd",
                "mic{card}: disk swapped ({cause}): {} ({} sectors)",
                s.path.as_deref().unwrap_or("none"),
                s.sectors
            );
        }
        Ok(s) => log::info!(
            target: "mpssd",
            "mic{card}: disk set to {} ({cause}); added when the card's devices are",
            s.path.as_deref().unwrap_or("none")
        ),
        Err(SwapError::NoImage { .. }) => {}
        Err(e) => shared.emit(
            Some(card),
            EventKind::Error {
                message: format!("swapping the disk ({cause}): {}", libmic::error::report(e)),
            },
        ),
    }
}

/// The devices of one card, for its supervisor.
#[derive(Debug)]
pub struct CardDevices {
    slots: Vec<Arc<dyn Slot>>,
    view: Arc<CardView>,
}

impl CardDevices {
    /// A set over `slots` (tests compose their own).
    #[must_use]
    pub fn new(
        slots: Vec<Arc<dyn Slot>>,
        console: Option<Arc<Broker>>,
        block: Option<Arc<BlockSlot>>,
    ) -> Self {
        let view = Arc::new(CardView {
            slots: slots.clone(),
            console,
            block,
        });
        Self { slots, view }
    }
}

impl DeviceSet for CardDevices {
    fn add<'a>(&'a mut self, ctx: &'a DeviceContext) -> BoxFuture<'a, Result<Vec<String>, DeviceError>> {
        Box::pin(async move {
            let mut added = Vec::new();
            let mut failed = Vec::new();
            for slot in &self.slots {
                let (s, c) = (Arc::clone(slot), ctx.clone());
                match tokio::task::spawn_blocking(move || s.add(&c)).await {
                    Ok(Ok(true)) => added.push(slot.kind().to_owned()),
                    Ok(Ok(false)) => {}
                    Ok(Err(e)) => failed.push(e.to_string()),
                    Err(e) => failed.push(format!("{}: {e}", slot.kind())),
                }
            }
            if failed.is_empty() {
                Ok(added)
            } else {
                Err(DeviceError {
                    device: failed.join("; "),
                    message: if added.is_empty() {
                        "no device was added".to_owned()
                    } else {
                        format!("added [{}] only", added.join(", "))
                    },
                })
            }
        })
    }

    fn remove<'a>(&'a mut self, why: &'a str) -> BoxFuture<'a, Vec<String>> {
        Box::pin(async move {
            let mut jobs = tokio::task::JoinSet::new();
            for slot in self.slots.iter().rev() {
                let (s, w) = (Arc::clone(slot), why.to_owned());
                jobs.spawn_blocking(move || s.remove(&w).then(|| s.kind().to_owned()));
            }
            let mut removed = Vec::new();
            while let Some(r) = jobs.join_next().await {
                if let Ok(Some(name)) = r {
                    removed.push(name);
                }
            }
            removed.sort_by_key(|n| self.slots.iter().position(|s| s.kind() == n));
            removed
        })
    }

    fn view(&self) -> Arc<dyn DeviceView> {
        Arc::clone(&self.view) as Arc<dyn DeviceView>
    }
}

/// A card's devices seen from any task.
#[derive(Debug)]
pub struct CardView {
    slots: Vec<Arc<dyn Slot>>,
    console: Option<Arc<Broker>>,
    block: Option<Arc<BlockSlot>>,
}

impl DeviceView for CardView {
    fn devices(&self) -> Vec<DeviceStatus> {
        self.slots.iter().filter_map(|s| s.status()).collect()
    }

    fn console_tail(&self, max: usize) -> Option<Vec<u8>> {
        self.console.as_ref().map(|b| b.tail(max))
    }

    fn console(&self) -> Option<Arc<Broker>> {
        self.console.clone()
    }

    fn block(&self) -> Option<Arc<BlockSlot>> {
        self.block.clone()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::super::dataplane::lock;
    use super::*;

    /// A slot that records what it is asked.
    #[derive(Debug)]
    struct Rec {
        kind: &'static str,
        log: Arc<Mutex<Vec<String>>>,
        fail: bool,
        up: Mutex<bool>,
    }

    impl Slot for Rec {
        fn kind(&self) -> &'static str {
            self.kind
        }
        fn add(&self, _: &DeviceContext) -> Result<bool, DeviceError> {
            lock(&self.log).push(format!("add {}", self.kind));
            if self.fail {
                return Err(DeviceError {
                    device: self.kind.into(),
                    message: "no".into(),
                });
            }
            *lock(&self.up) = true;
            Ok(true)
        }
        fn remove(&self, why: &str) -> bool {
            lock(&self.log).push(format!("remove {} ({why})", self.kind));
            std::mem::replace(&mut *lock(&self.up), false)
        }
        fn status(&self) -> Option<DeviceStatus> {
            Some(DeviceStatus {
                kind: self.kind.into(),
                target: String::new(),
                state: if *lock(&self.up) { "up" } else { "down" }.into(),
                counters: [("n".to_owned(), 1)].into(),
            })
        }
    }

    #[tokio::test]
    async fn slots_are_added_in_order_and_failures_reported() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mk = |kind, fail| {
            Arc::new(Rec {
                kind,
                log: Arc::clone(&log),
                fail,
                up: Mutex::new(false),
            }) as Arc<dyn Slot>
        };
        let mut set = CardDevices::new(
            vec![mk("console", false), mk("net", true), mk("block", false)],
            None,
            None,
        );
        let dir = tempfile::tempdir().unwrap();
        let root = libmic::MicRoot::new(dir.path());
        let ctx = DeviceContext {
            card: root.card_by_id(0),
            config: crate::config::CardConfig::default(),
            run_dir: dir.path().join("run/mpssd/mic0"),
        };
        let e = set.add(&ctx).await.unwrap_err();
        assert_eq!(e.to_string(), "net: no: added [console, block] only");
        assert_eq!(*lock(&log), ["add console", "add net", "add block"]);
        let view = set.view();
        assert_eq!(view.devices().len(), 3);
        assert_eq!(view.console_tail(10), None);
        let removed = set.remove("the card resets").await;
        assert_eq!(
            removed,
            ["console", "block"],
            "the ones that were up, in slot order"
        );
        assert!(lock(&log).contains(&"remove net (the card resets)".to_owned()));
    }
}
