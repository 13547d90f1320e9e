//! What the virtio backends (console, net, block) plug into.
//!
//! The supervisor owns one [`DeviceSet`] per card, made by the daemon's
//! [`Backends`]. It calls [`DeviceSet::add`] when the card's devices should
//! exist — at adoption (card offline or online) and after every reset — and
//! [`DeviceSet::remove`] before it resets the card and when the daemon
//! stops. Both are bounded by the supervisor ([`ADD_TIMEOUT`],
//! [`REMOVE_TIMEOUT`]). Counters and the console's last output are read
//! through the [`DeviceView`] from any task, without the supervisor.
//!
//! Until the backends exist, [`NoBackends`] gives every card an empty set.

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

/// A backend failure.
#[derive(Debug, thiserror::Error)]
#[error("{device}: {message}")]
pub struct DeviceError {
    /// `console`, `net`, `block`.
    pub device: String,
    pub message: String,
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
    /// the card); returns the names removed. Must not fail: what cannot be
    /// closed cleanly is dropped.
    fn remove(&mut self) -> BoxFuture<'_, Vec<String>>;

    /// A handle for reading counters and the console's output.
    fn view(&self) -> Arc<dyn DeviceView>;
}

/// Read-only access to a card's devices, from any task.
pub trait DeviceView: Send + Sync {
    /// Every device with its counters.
    fn devices(&self) -> Vec<DeviceStatus>;

    /// The console's last output, at most `max` bytes (`None`: no console).
    fn console_tail(&self, max: usize) -> Option<Vec<u8>>;
}

/// Makes each card's [`DeviceSet`].
pub trait Backends: Send + Sync {
    fn device_set(&self, card: &Card) -> Box<dyn DeviceSet>;
}

/// No backends: every card has no devices.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoBackends;

impl Backends for NoBackends {
    fn device_set(&self, _: &Card) -> Box<dyn DeviceSet> {
        Box::new(NoDevices)
    }
}

#[derive(Debug, Clone, Copy)]
struct NoDevices;

impl DeviceSet for NoDevices {
    fn add<'a>(&'a mut self, _: &'a DeviceContext) -> BoxFuture<'a, Result<Vec<String>, DeviceError>> {
        Box::pin(async { Ok(Vec::new()) })
    }

    fn remove(&mut self) -> BoxFuture<'_, Vec<String>> {
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
