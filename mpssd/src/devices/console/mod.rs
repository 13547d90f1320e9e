//! The virtio console of a card (type 3, two vrings of 128: vring 0
//! host→card, vring 1 card→host, as the original's §5.2/§5.4), served from
//! a pty and a broker:
//!
//! - [`device`]: the slot (the pty, the broker, adding and removing the
//!   device, its status);
//! - [`event_handler`]: the data thread that moves bytes between the rings,
//!   the pty and the broker;
//! - [`broker`]: attached control-socket clients, the scrollback, the one
//!   writer, the input inbox;
//! - [`pty`]: the pty and its link `DIR/run/mpssd/micN/console`;
//! - [`log`]: the rotating console log;
//! - [`metrics`]: the counters.

pub mod broker;
pub mod device;
pub mod event_handler;
pub mod log;
pub mod metrics;
pub mod pty;

use std::path::PathBuf;

pub use broker::Broker;
pub use device::ConsoleSlot;

/// What can go wrong with a console.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("creating the pty: {what}")]
    Pty {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("linking the pty at {}", path.display())]
    Link {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Vdev(#[from] libmic::vdev::VdevError),
    #[error("starting the data thread")]
    Thread(#[source] std::io::Error),
}
