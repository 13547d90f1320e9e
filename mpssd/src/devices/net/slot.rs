//! The net device as one of a card's slots ([`crate::devices::Slot`]):
//! started with the card's devices when the configuration gives the card
//! a network (`net = true`, the default), stopped with them; a reload that
//! turns `net` off or on removes or adds it at once while the card's
//! devices are up ([`NetSlot::config_changed`]). The TAP's host address
//! follows what the card's cmdline gives it at that moment
//! ([`NetConfig::resolve`]); the counters live as long as mpssd.

use std::sync::{Arc, Mutex};

use libmic::MicRoot;
use libmic::vdev::VirtioFile;
use mpssd_proto::DeviceStatus;

use super::{NetConfig, NetDevice, NetStats, status_of};
use crate::config::CardConfig;
use crate::devices::dataplane::lock;
use crate::devices::{DeviceContext, DeviceError, Slot};

#[derive(Debug, Default)]
struct Inner {
    dev: Option<NetDevice>,
    /// While the card's devices are added (between the supervisor's add
    /// and remove): what they were added with, for a reload that turns
    /// the network on.
    added: Option<DeviceContext>,
    /// What the device was last started with (kept for the status).
    config: Option<NetConfig>,
    /// Why the last start failed.
    error: Option<String>,
}

/// The network device of one card.
#[derive(Debug)]
pub struct NetSlot {
    root: MicRoot,
    card: u32,
    stats: Arc<NetStats>,
    inner: Mutex<Inner>,
}

impl NetSlot {
    #[must_use]
    pub fn new(root: &MicRoot, card: u32) -> Self {
        Self {
            root: root.clone(),
            card,
            stats: Arc::new(NetStats::default()),
            inner: Mutex::new(Inner::default()),
        }
    }
}

impl Slot for NetSlot {
    fn kind(&self) -> &'static str {
        "net"
    }

    fn add(&self, ctx: &DeviceContext) -> Result<bool, DeviceError> {
        let mut inner = lock(&self.inner);
        inner.added = Some(ctx.clone());
        self.start(&mut inner, ctx)
    }

    fn remove(&self, _why: &str) -> bool {
        let mut inner = lock(&self.inner);
        inner.added = None;
        let dev = inner.dev.take();
        drop(inner);
        let had = dev.is_some();
        if let Some(d) = dev {
            d.stop();
        }
        had
    }

    fn status(&self) -> Option<DeviceStatus> {
        let inner = lock(&self.inner);
        let config = inner.config.as_ref()?;
        let mut st = status_of(config, &self.stats);
        if let Some(e) = &inner.error {
            "error".clone_into(&mut st.state);
            st.target = format!("{} ({e})", st.target);
        }
        Some(st)
    }
}

/// What a reload did to a card's network.
#[derive(Debug)]
pub enum NetChange {
    Removed,
    Added,
    /// `net = true` now, but the device could not be started.
    Failed(DeviceError),
}

impl NetSlot {
    /// The configuration changed: with the card's devices up, `net` turned
    /// off removes the device (the card sees it unplugged) and turned on
    /// adds it; otherwise the next add follows the new setting. `None`:
    /// nothing to do now.
    pub fn config_changed(&self, cfg: &CardConfig) -> Option<NetChange> {
        let mut inner = lock(&self.inner);
        let ctx = inner.added.as_mut()?;
        let was = std::mem::replace(&mut ctx.config, cfg.clone()).net;
        if was == cfg.net {
            return None;
        }
        let ctx = ctx.clone();
        match (cfg.net, inner.dev.is_some()) {
            (false, true) => {
                let dev = inner.dev.take();
                inner.config = None;
                inner.error = None;
                drop(inner);
                if let Some(d) = dev {
                    d.stop();
                }
                Some(NetChange::Removed)
            }
            (true, false) => Some(match self.start(&mut inner, &ctx) {
                Ok(_) => NetChange::Added,
                Err(e) => NetChange::Failed(e),
            }),
            _ => None,
        }
    }

    /// Starts the device if `ctx` gives the card a network; `Ok(false)`:
    /// it does not.
    fn start(&self, inner: &mut Inner, ctx: &DeviceContext) -> Result<bool, DeviceError> {
        if inner.dev.is_some() {
            return Ok(true);
        }
        if !ctx.config.net {
            inner.config = None;
            inner.error = None;
            return Ok(false);
        }
        // What the card's cmdline says now (the operator's own address).
        let card_addr = ctx.card.ipaddr().ok().flatten();
        let config = NetConfig::resolve(self.card, &ctx.config, card_addr);
        let started = VirtioFile::open(&self.root, self.card)
            .map_err(super::NetError::from)
            .and_then(|file| NetDevice::start(self.card, file, &config, Arc::clone(&self.stats)));
        inner.config = Some(config);
        match started {
            Ok(dev) => {
                inner.dev = Some(dev);
                inner.error = None;
                Ok(true)
            }
            Err(e) => {
                let e = DeviceError::of("net", &e);
                inner.error = Some(e.message.clone());
                Err(e)
            }
        }
    }
}
