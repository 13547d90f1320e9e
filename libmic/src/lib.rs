//! The client library shared by `micctl`, `mictop` and `mpssd`: everything a
//! tool needs to know about cards under a `MIC_ROOT`.
//!
//! - [`MicRoot`]: the root all paths resolve under (`--root`, `MIC_ROOT`, `/`),
//!   card enumeration and selection, firmware names.
//! - [`Card`]: typed readers and writers for the sysfs attributes and debugfs
//!   files of one card; [`CardInfo`] snapshots.
//! - [`StateWatcher`], [`wait_any`], [`Card::wait_for`]: waiting on `state`
//!   with `poll(POLLPRI|POLLERR)`.
//! - [`debugfs`]: the `smpt`, `dp` and `vdev_info` dumps parsed ([`Card::smpt`],
//!   [`Card::dp`], [`Card::vdev_info`]).
//! - [`lifecycle`]: boot, shutdown, reset and the waits between them, as
//!   operators mean them ([`Card::stop`], [`Card::reset_and_wait`]).
//! - [`SystemMap`]: locating the card log buffer for `log_buf_addr`/`log_buf_len`.
//! - [`vdev`]: a card's `dev/micN` (virtio devices), the real character
//!   device or micemu's socket behind one API.
//! - [`klog`]: the card log decoded (resynchronising after damage) and
//!   followed across resets ([`klog::CardLogFollower`]).
//! - [`IoLimit`]: deadlines for every access to the driver's files, so a
//!   hung driver costs a bounded wait and an [`Error::NoAnswer`].
//! - [`async_wait`] (feature `tokio`): [`AsyncStateWatcher`], waiting on
//!   `state` from tokio with the fd registered for priority and error events.
//! - [`mpssd`] (feature `mpssd`): the client of mpssd's control socket;
//!   [`crash`] (feature `mpssd`): mpssd's crash forensics bundles, read.

#[cfg(feature = "tokio")]
pub mod async_wait;
pub mod attrs;
pub mod card;
#[cfg(feature = "mpssd")]
pub mod crash;
pub mod debugfs;
pub mod error;
pub mod io;
pub mod klog;
pub mod lifecycle;
#[cfg(feature = "mpssd")]
pub mod mpssd;
pub mod root;
pub mod sysmap;
pub mod vdev;
pub mod wait;

#[cfg(feature = "tokio")]
pub use async_wait::AsyncStateWatcher;
pub use attrs::{Attr, DebugFile};
pub use card::{Card, CardInfo};
pub use debugfs::{DpDevice, DpSummary, SmptEntry, SmptSummary, VdevInfo, VringInfo};
pub use error::{Error, Result};
pub use io::IoLimit;
pub use lifecycle::{BootRequest, OS_UP_MARKER, Outcome, ResetEnd, StopStep, Stopped};
pub use mic_core::abi::{BootMode, MicState, MicStatus};
pub use root::MicRoot;
pub use sysmap::SystemMap;
pub use wait::{StateWatcher, wait_any};
