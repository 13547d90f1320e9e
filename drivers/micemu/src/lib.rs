//! `micemu`: an emulator of Intel MIC X100 cards that serves the real kernel
//! interfaces (sysfs, debugfs) under a root directory.
//!
//! * [`hw`] — the hardware: register file, GDDR memfd, host RAM, SMPT window;
//! * [`card`] — one card: hardware plus its state machines behind a mutex;
//! * [`cardos`] — the card OS model that boots from what the host loaded and
//!   runs its virtio devices (console and shell, network, disk);
//! * [`emu`] — the fleet and the host driver operations;
//! * [`events`] — the event loop that owns time and interrupts;
//! * [`backend`] — what the sysfs/debugfs files show and store;
//! * [`fs`] — the FUSE filesystem that serves them;
//! * [`dev`] — `dev/micN`: the virtio character device, and its socket;
//! * [`firmware`] — the firmware loader and the default card OS images;
//! * [`faults`] — fault injection, and [`control`], its socket;
//! * [`instance`] — a whole fleet served under a root (also for tests);
//! * [`cli`], [`run`] — the command line.

pub mod affinity;
pub mod backend;
pub mod card;
pub mod cardos;
pub mod cli;
pub mod config;
pub mod control;
pub mod dev;
pub mod emu;
pub mod events;
pub mod faults;
pub mod firmware;
pub mod fs;
pub mod hw;
pub mod instance;
pub mod logger;
pub mod run;

pub use config::{Config, Timing};
pub use faults::{Fault, InjectError};
pub use instance::{Instance, StartOptions};
