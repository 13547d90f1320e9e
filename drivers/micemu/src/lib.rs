//! `micemu`: an emulator of Intel MIC X100 cards that serves the real kernel
//! interfaces (sysfs, debugfs) under a root directory.
//!
//! * [`hw`] — the hardware: register file, GDDR memfd, host RAM, SMPT window;
//! * [`cardos`] — the card OS model that boots from what the host loaded;
//! * [`emu`] — the fleet, the host driver instances and the event loop;
//! * [`sysfs`] — attribute formats and store semantics;
//! * [`fs`] — the FUSE filesystem that serves them;
//! * [`firmware`] — the firmware loader and the default card OS images;
//! * [`control`] — fault injection over a Unix socket;
//! * [`instance`] — a whole fleet served under a root (also for tests);
//! * [`cli`], [`run`], [`demo`] — the command line.

pub mod cardos;
pub mod cli;
pub mod config;
pub mod control;
pub mod demo;
pub mod emu;
pub mod firmware;
pub mod fs;
pub mod hw;
pub mod instance;
pub mod run;
pub mod sysfs;

pub use config::{Config, Timing};
pub use control::Fault;
pub use instance::Instance;
