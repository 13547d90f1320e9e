//! `micemu`: an emulator of Intel MIC X100 cards that serves the real kernel
//! interfaces (sysfs, debugfs) under a root directory.

pub mod fs;
