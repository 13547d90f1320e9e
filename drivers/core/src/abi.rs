//! The user-visible ABI of the 3.13 generation: enums with their sysfs
//! strings, the device-page structures, ioctl numbers.
//!
//! (Structures, layouts and compile-time checks are added below the enums.)

/// `enum mic_states` of the original driver, with its sysfs strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum MicState {
    Offline = 0,
    Online = 1,
    ShuttingDown = 2,
    ResetFailed = 3,
}

impl MicState {
    pub const ALL: [MicState; 4] = [
        MicState::Offline,
        MicState::Online,
        MicState::ShuttingDown,
        MicState::ResetFailed,
    ];

    /// The string sysfs shows (without the trailing newline).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            MicState::Offline => "offline",
            MicState::Online => "online",
            MicState::ShuttingDown => "shutting_down",
            MicState::ResetFailed => "reset_failed",
        }
    }

    /// Parses a sysfs state string (a trailing newline is tolerated).
    #[must_use]
    pub fn from_sysfs(s: &str) -> Option<Self> {
        let s = s.strip_suffix('\n').unwrap_or(s);
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// `enum mic_status`: what the card reported about its last shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum MicStatus {
    Nop = 0,
    Crashed = 1,
    Halted = 2,
    PowerOff = 3,
    Restart = 4,
}

impl MicStatus {
    pub const ALL: [MicStatus; 5] = [
        MicStatus::Nop,
        MicStatus::Crashed,
        MicStatus::Halted,
        MicStatus::PowerOff,
        MicStatus::Restart,
    ];

    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            MicStatus::Nop => "nop",
            MicStatus::Crashed => "crashed",
            MicStatus::Halted => "halted",
            MicStatus::PowerOff => "poweroff",
            MicStatus::Restart => "restart",
        }
    }

    #[must_use]
    pub fn from_sysfs(s: &str) -> Option<Self> {
        let s = s.strip_suffix('\n').unwrap_or(s);
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// Decodes the byte the card wrote into `bootparam.shutdown_status`.
    #[must_use]
    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(MicStatus::Nop),
            1 => Some(MicStatus::Crashed),
            2 => Some(MicStatus::Halted),
            3 => Some(MicStatus::PowerOff),
            4 => Some(MicStatus::Restart),
            _ => None,
        }
    }
}

/// The `bootmode` attribute: "linux" loads image, cmdline and ramdisk; "elf"
/// loads the image only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BootMode {
    Linux,
    Elf,
}

impl BootMode {
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            BootMode::Linux => "linux",
            BootMode::Elf => "elf",
        }
    }

    #[must_use]
    pub fn from_sysfs(s: &str) -> Option<Self> {
        match s.strip_suffix('\n').unwrap_or(s) {
            "linux" => Some(BootMode::Linux),
            "elf" => Some(BootMode::Elf),
            _ => None,
        }
    }
}
