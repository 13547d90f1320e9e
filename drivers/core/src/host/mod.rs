//! The host driver logic for one card (`mic_host.ko` in the original).
//!
//! * [`smpt`] — the System Memory Page Table;
//! * [`doorbell`] — host→card doorbells, the bootstrap interrupt, host
//!   doorbell allocation, interrupt cause/enable registers;
//! * [`boot`] — the loader (image, cmdline, ramdisk, `boot_params` patch);
//! * [`reset`] — the caller-timed reset sequence;
//! * [`state`] — [`HostDevice`], the per-card state machine;
//! * [`attrs`] — the table of sysfs and debugfs files and their rules;
//! * [`sysfs`] — parsing/formatting helpers for the sysfs attributes;
//! * [`vop`] — virtio over PCIe: `/dev/micN`'s devices and the ring walker.

pub mod attrs;
pub mod boot;
pub mod doorbell;
pub mod reset;
pub mod smpt;
pub mod state;
pub mod sysfs;
pub mod vop;

pub use boot::{BootError, BootParams, LoadInfo};
pub use doorbell::{ack_interrupt, send_bootstrap_intr, send_intr};
pub use reset::{ResetPoll, ResetSeq, ResetTiming};
pub use state::{BootOutcome, HostDevice, HostError, ResetStart, ShutdownReport, Transition};
