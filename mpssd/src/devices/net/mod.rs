//! The virtio-net backend: a card's `eth0` at the host end of a TAP
//! device `micN`, as the original mpssd's (`original-mic.md` §5.3), done
//! carefully.
//!
//! - [`tap`]: the TAP (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR, non-blocking),
//!   hand-rolled over three ioctls;
//! - [`netlink`]: its host address (172.31.N.254/24 by default) and link
//!   state over rtnetlink, never by running `ip`;
//! - [`hdr`]: the virtio-net header rules — the card's headers checked
//!   before the TAP sees them, `DATA_VALID` on frames to the card, the
//!   TAP offloads from what the card negotiated;
//! - [`worker`]: the device's own thread serving both rings (COPY_DESC
//!   blocks, so never on the runtime's threads);
//! - [`metrics`]: its counters;
//! - [`slot`]: the device as one of a card's slots (added and removed
//!   with the card's devices).
//!
//! [`NetDevice::start`] makes the TAP, adds the device to the card and
//! starts the thread; [`NetDevice::stop`] ends the thread and closes the
//! card's file (the driver removes the device from the card) and the TAP
//! (the interface goes away). Both block; call them off the runtime's
//! threads (`spawn_blocking`).

pub mod hdr;
pub mod metrics;
pub mod netlink;
pub mod slot;
pub mod tap;
mod worker;

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use libmic::vdev::{DeviceBlock, VdevError, VirtioFile};
use mic_core::abi::virtio::{VirtioNetConfig, id};
use mpssd_proto::DeviceStatus;
use nix::sys::eventfd::{EfdFlags, EventFd};

pub use metrics::{NetState, NetStats};
pub use slot::NetSlot;

use crate::config::CardConfig;

/// Entries of each of the two vrings, as the original.
pub const RING_ENTRIES: u16 = 128;

/// The device descriptor block mpssd adds: type 1, two vrings of 128,
/// [`hdr::host_features`], a zeroed `virtio_net_config` (no MAC feature:
/// the card picks its own address).
#[must_use]
pub fn device_block() -> DeviceBlock {
    DeviceBlock {
        ty: id::NET,
        vrings: vec![RING_ENTRIES; 2],
        host_features: hdr::host_features(),
        config: vec![0; VirtioNetConfig::SIZE],
    }
}

/// What a card's net device is set up with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    /// The TAP's name: `micN`.
    pub tap: String,
    /// The host's address on the link.
    pub host: Ipv4Addr,
    pub prefix_len: u8,
}

impl NetConfig {
    /// Card `id`'s: TAP `micN`, the host address `host_address` from the
    /// configuration, or else the host end of the card's own /24 —
    /// `card_addr` (what its cmdline gives it), or the configured
    /// `address`, or 172.31.N.1: see `libmic::lifecycle::host_address_for`.
    #[must_use]
    pub fn resolve(id: u32, config: &CardConfig, card_addr: Option<Ipv4Addr>) -> Self {
        let host = config.host_address.unwrap_or_else(|| {
            libmic::lifecycle::host_address_for(
                card_addr
                    .or(config.address)
                    .unwrap_or_else(|| libmic::lifecycle::default_card_address(id)),
            )
        });
        Self {
            tap: format!("mic{id}"),
            host,
            prefix_len: libmic::lifecycle::LINK_PREFIX_LEN,
        }
    }

    /// How the status names it: `mic0 172.31.0.254/24`.
    #[must_use]
    pub fn target(&self) -> String {
        format!("{} {}/{}", self.tap, self.host, self.prefix_len)
    }
}

/// Why the device could not start.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error(transparent)]
    Tap(#[from] tap::TapError),
    #[error("configuring TAP {tap}")]
    Netlink {
        tap: String,
        #[source]
        source: netlink::NetlinkError,
    },
    #[error("adding the net device")]
    Vdev(#[from] VdevError),
    #[error("starting the net device's thread")]
    Thread(#[source] std::io::Error),
}

/// A running net device.
#[derive(Debug)]
pub struct NetDevice {
    config: NetConfig,
    stats: Arc<NetStats>,
    stop: Arc<EventFd>,
    stopping: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl NetDevice {
    /// Makes TAP `config.tap` with its address and link up, adds the net
    /// device on `file` (an open, empty `dev/micN` file of card `card`),
    /// maps its rings and starts serving them. Counts into `stats` (keep
    /// one across restarts, so counters stay monotonic). Blocks briefly.
    pub fn start(
        card: u32,
        mut file: VirtioFile,
        config: &NetConfig,
        stats: Arc<NetStats>,
    ) -> Result<NetDevice, NetError> {
        let tap = tap::Tap::create(&config.tap)?;
        netlink::configure(tap.name(), config.host, config.prefix_len).map_err(|source| {
            NetError::Netlink {
                tap: config.tap.clone(),
                source,
            }
        })?;
        file.add_device(&device_block())?;
        let map = file.map()?;
        let bufs = worker::buffers(&mut file);
        let stop = Arc::new(
            EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
                .map_err(|e| NetError::Thread(e.into()))?,
        );
        let stopping = Arc::new(AtomicBool::new(false));
        let w = worker::Worker::new(
            card,
            file,
            map,
            tap,
            Arc::clone(&stop),
            Arc::clone(&stopping),
            Arc::clone(&stats),
            bufs,
        );
        let thread = std::thread::Builder::new()
            .name(format!("net-mic{card}"))
            .spawn(move || match w.run() {
                worker::End::Failed(e) => {
                    log::error!(target: "mpssd", "mic{card}: net: {e}; the device stopped");
                }
                worker::End::Gone => {
                    log::info!(target: "mpssd", "mic{card}: net: the card removed the device");
                }
                worker::End::Stopped => {}
            })
            .map_err(NetError::Thread)?;
        log::info!(
            target: "mpssd",
            "mic{card}: net: TAP {} up at {}/{}",
            config.tap,
            config.host,
            config.prefix_len
        );
        Ok(NetDevice {
            config: config.clone(),
            stats,
            stop,
            stopping,
            thread: Some(thread),
        })
    }

    /// The counters.
    #[must_use]
    pub fn stats(&self) -> &Arc<NetStats> {
        &self.stats
    }

    /// What it was started with.
    #[must_use]
    pub fn config(&self) -> &NetConfig {
        &self.config
    }

    /// Its status for the control socket and metrics.
    #[must_use]
    pub fn status(&self) -> DeviceStatus {
        status_of(&self.config, &self.stats)
    }

    /// Stops the thread and waits for it: it finishes the COPY_DESC in
    /// progress, closes the card's file (the driver removes the device
    /// from the card, waiting for its acknowledgement as it always does)
    /// and the TAP.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stopping.store(true, Ordering::Release);
        let _ = self.stop.write(1);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for NetDevice {
    fn drop(&mut self) {
        self.halt();
    }
}

/// A net device's status from its configuration and counters.
#[must_use]
pub fn status_of(config: &NetConfig, stats: &NetStats) -> DeviceStatus {
    DeviceStatus {
        kind: "net".to_owned(),
        target: config.target(),
        state: stats.state().summary().to_owned(),
        counters: stats.snapshot(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_addresses() {
        let d = CardConfig::default();
        assert_eq!(
            NetConfig::resolve(2, &d, None),
            NetConfig {
                tap: "mic2".into(),
                host: Ipv4Addr::new(172, 31, 2, 254),
                prefix_len: 24
            }
        );
        let card = Some(Ipv4Addr::new(10, 9, 8, 7));
        assert_eq!(NetConfig::resolve(2, &d, card).host, Ipv4Addr::new(10, 9, 8, 254));
        let c = CardConfig {
            address: Some(Ipv4Addr::new(192, 0, 2, 1)),
            ..CardConfig::default()
        };
        assert_eq!(
            NetConfig::resolve(0, &c, None).host,
            Ipv4Addr::new(192, 0, 2, 254)
        );
        // What the card really has wins over what the config would give it.
        assert_eq!(NetConfig::resolve(0, &c, card).host, Ipv4Addr::new(10, 9, 8, 254));
        let c = CardConfig {
            host_address: Some(Ipv4Addr::new(192, 0, 2, 100)),
            ..c
        };
        assert_eq!(
            NetConfig::resolve(0, &c, card).host,
            Ipv4Addr::new(192, 0, 2, 100)
        );
        assert_eq!(NetConfig::resolve(0, &c, card).target(), "mic0 192.0.2.100/24");
    }

    #[test]
    fn the_block_is_the_originals_less_ufo() {
        let b = device_block();
        assert_eq!(
            (b.ty, b.vrings.as_slice(), b.config.len()),
            (1, &[128, 128][..], 10)
        );
        assert_eq!(
            b.host_features, 0x3c3,
            "CSUM, GUEST_CSUM, GSO, GUEST_TSO4/6, GUEST_ECN"
        );
    }
}
