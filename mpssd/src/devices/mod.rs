//! The virtio backends (console, net, block) and what they plug into.
//!
//! The supervisor owns one [`DeviceSet`] per card, made by the daemon's
//! [`Backends`]. It calls [`DeviceSet::add`] when the card's devices should
//! exist — at adoption (card offline or online) and after every reset — and
//! [`DeviceSet::remove`] before it resets the card and when the daemon
//! stops. Both are bounded by the supervisor ([`ADD_TIMEOUT`],
//! [`REMOVE_TIMEOUT`]). Counters and the console's last output are read
//! through the [`DeviceView`] from any task, without the supervisor.
//!
//! mpssd's [`card::CardBackends`] gives each card a [`card::CardDevices`]:
//! one [`Slot`] per kind of device, kept for the daemon's life and added
//! and removed with the card's devices. Each backend is a module of its own
//! in Firecracker's shape (device, event handling, metrics, errors):
//! [`console`], [`block`], and `net` (its slot goes into
//! [`card::CardBackends`]'s list, between the console and the disk). Their
//! data paths share [`dataplane`]: a thread per device, `poll(2)`,
//! wakers, counters.
//!
//! [`NoBackends`] gives every card an empty set (tests of the supervisor).

pub mod block;
pub mod card;
pub mod console;
pub mod dataplane;

pub mod net;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use libmic::Card;
use mpssd_proto::DeviceStatus;

use crate::config::CardConfig;

/// A boxed future (the trait is object safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How long [`DeviceSet::add`] may take: opening `dev/micN` and
/// ADD_DEVICE for each device (the driver does not wait for the card).
pub const ADD_TIMEOUT: Duration = Duration::from_secs(15);

/// How long [`DeviceSet::remove`] may take: closing each device's fd makes
/// the driver wait up to 10 s for the card's acknowledgement, per device.
pub const REMOVE_TIMEOUT: Duration = Duration::from_secs(45);

/// How long one device's data thread gets to stop and close its file (the
/// driver's 10 s for the card's acknowledgement, and some).
pub const STOP_ONE_TIMEOUT: Duration = Duration::from_secs(15);

/// A backend failure.
#[derive(Debug, thiserror::Error)]
#[error("{device}: {message}")]
pub struct DeviceError {
    /// `console`, `net`, `block`.
    pub device: String,
    pub message: String,
}

impl DeviceError {
    /// `device`'s failure `e`, with its causes on one line.
    #[must_use]
    pub fn of(device: &str, e: &(dyn std::error::Error + 'static)) -> Self {
        Self {
            device: device.to_owned(),
            message: libmic::error::report(e),
        }
    }
}

/// What a [`DeviceSet`] is given.
#[derive(Debug, Clone)]
pub struct DeviceContext {
    /// The card (its `dev/micN` is `card.dev_node()`).
    pub card: Card,
    /// The card's settings when the devices are added.
    pub config: CardConfig,
    /// `DIR/run/mpssd/micN`: where a backend puts links (the console pty).
    pub run_dir: std::path::PathBuf,
}

/// The virtio devices of one card.
pub trait DeviceSet: Send {
    /// Adds the card's devices (an open `dev/micN` and ADD_DEVICE each)
    /// and starts serving them; returns their names. Called with the card
    /// offline or online. A device that fails is reported; the others stay.
    fn add<'a>(&'a mut self, ctx: &'a DeviceContext) -> BoxFuture<'a, Result<Vec<String>, DeviceError>>;

    /// Stops serving and closes every device (the driver removes them from
    /// the card); returns the names removed. `why` is told to attached
    /// console clients. Must not fail: what cannot be closed cleanly is
    /// dropped.
    fn remove<'a>(&'a mut self, why: &'a str) -> BoxFuture<'a, Vec<String>>;

    /// A handle for reading counters and the console's output.
    fn view(&self) -> Arc<dyn DeviceView>;
}

/// Read-only access to a card's devices, from any task.
pub trait DeviceView: Send + Sync {
    /// Every device with its counters.
    fn devices(&self) -> Vec<DeviceStatus>;

    /// The console's last output, at most `max` bytes (`None`: no console).
    fn console_tail(&self, max: usize) -> Option<Vec<u8>>;

    /// The card's console broker (attach, input), if it has a console.
    fn console(&self) -> Option<Arc<console::Broker>> {
        None
    }

    /// The card's disk slot (swaps), if the backends serve disks.
    fn block(&self) -> Option<Arc<block::BlockSlot>> {
        None
    }
}

/// Makes each card's [`DeviceSet`] (called once per card at start, inside
/// the runtime).
pub trait Backends: Send + Sync {
    fn device_set(&self, card: &Card, shared: &Arc<crate::shared::Shared>) -> Box<dyn DeviceSet>;
}

/// One kind of virtio device of one card, for the daemon's life: the
/// card's [`card::CardDevices`] adds it at adoption and after every reset,
/// and removes it before resets and when mpssd stops. Every method may
/// block (they run on tokio's blocking pool, each bounded by the set).
///
/// A backend: opens `dev/micN` ([`libmic::vdev::VirtioFile`]), ADD_DEVICE,
/// maps the rings, and serves them from a [`dataplane::DataThread`] of its
/// own; `remove` stops that thread, which closes the file (the driver
/// removes the device from the card).
pub trait Slot: Send + Sync + std::fmt::Debug {
    /// `console`, `net`, `block`: the device's name in events and metrics.
    fn kind(&self) -> &'static str;

    /// Adds the device and starts serving it; `Ok(false)`: the
    /// configuration has none for this card. Adding what is already added
    /// is `Ok(true)` and changes nothing.
    fn add(&self, ctx: &DeviceContext) -> Result<bool, DeviceError>;

    /// Stops serving and closes the file; returns whether there was a
    /// device to remove.
    fn remove(&self, why: &str) -> bool;

    /// The device and its counters (`None`: the card has none).
    fn status(&self) -> Option<DeviceStatus>;
}

/// No backends: every card has no devices.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoBackends;

impl Backends for NoBackends {
    fn device_set(&self, _: &Card, _: &Arc<crate::shared::Shared>) -> Box<dyn DeviceSet> {
        Box::new(NoDevices)
    }
}

#[derive(Debug, Clone, Copy)]
struct NoDevices;

impl DeviceSet for NoDevices {
    fn add<'a>(&'a mut self, _: &'a DeviceContext) -> BoxFuture<'a, Result<Vec<String>, DeviceError>> {
        Box::pin(async { Ok(Vec::new()) })
    }

    fn remove<'a>(&'a mut self, _: &'a str) -> BoxFuture<'a, Vec<String>> {
        Box::pin(async { Vec::new() })
    }

    fn view(&self) -> Arc<dyn DeviceView> {
        Arc::new(NoDevices)
    }
}

impl DeviceView for NoDevices {
    fn devices(&self) -> Vec<DeviceStatus> {
        Vec::new()
    }

    fn console_tail(&self, _: usize) -> Option<Vec<u8>> {
        None
    }
}
