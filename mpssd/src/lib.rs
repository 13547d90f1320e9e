//! `mpssd`, the MIC X100 daemon, as a library with a thin `main.rs`.
//!
//! - [`daemon`]: start-up (configuration, lock, sockets), the supervisors,
//!   systemd notification, signals, the orderly stop;
//! - [`supervisor`]: one task per card owning its state (adoption, the
//!   shutdown/reset/reboot sequence, crash policy);
//! - [`policy`]: backoff and the crash-loop limit, pure;
//! - [`forensics`]: crash bundles;
//! - [`devices`]: the trait the virtio backends implement, and the
//!   backends ([`devices::net`]);
//! - [`control`]: the control socket ([`mpssd_proto`]);
//! - [`metrics`]: the Prometheus endpoint;
//! - [`config`], [`reload`]: `mpssd.toml`, hot reload;
//! - [`shared`]: what the tasks share, the event bus;
//! - [`logging`], [`sdnotify`], [`cli`], [`exit`].

// The TAP's ioctls (devices::net::tap) and the disk image's mapping
// (devices::block::mapping) are the places allowed unsafe.
#![deny(unsafe_code)]

pub mod cli;
pub mod config;
pub mod control;
pub mod daemon;
pub mod devices;
pub mod exit;
pub mod forensics;
pub mod logging;
pub mod metrics;
pub mod policy;
pub mod reload;
pub mod sdnotify;
pub mod shared;
pub mod supervisor;
