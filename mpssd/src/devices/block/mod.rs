//! The virtio disk of a card (type 2, one vring of 128, as the original's
//! §5.2/§5.5), backed by a raw image file:
//!
//! - [`device`]: the slot (which image, adding and removing the device,
//!   hot swap, its status);
//! - [`event_handler`]: the data thread that serves the request queue;
//! - [`queue`]: the request queue, one hand-off per request;
//! - [`request`]: one request, parsed, bounds-checked and answered;
//! - [`image`]: the image file;
//! - [`mapping`]: the image mapped, its faults made I/O errors;
//! - [`metrics`]: the counters.

pub mod device;
pub mod event_handler;
pub mod image;
pub mod mapping;
pub mod metrics;
pub mod queue;
pub mod request;

use std::path::PathBuf;

pub use device::BlockSlot;

/// What can go wrong with a disk.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error("{what} {}", path.display())]
    Image {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not a regular file or a block device", path.display())]
    NotAnImage { path: PathBuf },
    #[error("{}: {len} bytes: smaller than one 512-byte sector", path.display())]
    TooSmall { path: PathBuf, len: u64 },
    #[error(transparent)]
    Vdev(#[from] libmic::vdev::VdevError),
    #[error("starting the data thread")]
    Thread(#[source] std::io::Error),
}
