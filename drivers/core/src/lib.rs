//! Intel MIC X100 driver logic shared by the Rust-for-Linux modules, `micemu`
//! and the host tests.
//!
//! `no_std`, no `alloc`, no dependencies, no `unsafe`: everything here talks to
//! hardware only through the traits in [`hw`], so the same files compile into
//! a kernel module and into ordinary unit tests.
//!
//! Layout:
//! * [`abi`] — the user-visible ABI (enums, device-page structures, ioctls);
//! * [`devpage`] — the bounds-checked device-page walker and bootparam access;
//! * [`regs`] — the X100 register map;
//! * [`bzimage`] — the x86 boot-protocol header facts the loader patches;
//! * [`host`] — the host driver: SMPT, doorbells, loader, state machine;
//! * [`card`] — the card driver: discovery, doorbells, shutdown reporting;
//! * [`post`] — the POST codes the card reports;
//! * [`printk`] — the card kernel's log record format and ring writer.
#![no_std]
#![forbid(unsafe_code)]

#[cfg(any(test, feature = "fake"))]
extern crate std;

pub mod abi;
pub mod bzimage;
pub mod card;
pub mod devpage;
pub mod handshake;
pub mod host;
pub mod hw;
pub mod post;
pub mod printk;
pub mod regs;

/// Positive errno values the callers map errors to (the same numbers on every
/// Linux architecture the X100 ever worked with).
pub mod errno {
    /// No such file or directory.
    pub const ENOENT: i32 = 2;
    /// I/O error.
    pub const EIO: i32 = 5;
    /// Argument list too long.
    pub const E2BIG: i32 = 7;
    /// Try again.
    pub const EAGAIN: i32 = 11;
    /// Out of memory.
    pub const ENOMEM: i32 = 12;
    /// Permission denied.
    pub const EACCES: i32 = 13;
    /// Bad address.
    pub const EFAULT: i32 = 14;
    /// Device or resource busy.
    pub const EBUSY: i32 = 16;
    /// No such device.
    pub const ENODEV: i32 = 19;
    /// Invalid argument.
    pub const EINVAL: i32 = 22;
    /// Inappropriate ioctl for device.
    pub const ENOTTY: i32 = 25;
    /// Result out of range.
    pub const ERANGE: i32 = 34;
    /// Too many symbolic links (the kernel's "descriptor loop").
    pub const ELOOP: i32 = 40;
    /// Protocol error.
    pub const EPROTO: i32 = 71;
    /// Connection timed out.
    pub const ETIMEDOUT: i32 = 110;
}

#[cfg(any(test, feature = "fake"))]
pub mod fake;

#[cfg(test)]
mod virtio_tests;

#[cfg(test)]
mod tests {
    use std::string::ToString;

    use crate::abi::{MicState, MicStatus};
    use crate::bzimage::ImageError;
    use crate::card::CardError;
    use crate::devpage::{DescErrorKind, DevPageError};
    use crate::host::doorbell::DoorbellError;
    use crate::host::smpt::SmptError;
    use crate::host::sysfs::ParseHexError;
    use crate::host::{BootError, HostError};
    use crate::hw::MemError;

    #[test]
    fn errors_display() {
        let mem = MemError::OutOfBounds { addr: 16, len: 4 };
        assert_eq!(mem.to_string(), "memory access out of bounds: 0x4 bytes at 0x10");
        let dp = |kind| DevPageError { offset: 16, kind }.to_string();
        for kind in [
            DescErrorKind::HeaderOutOfPage,
            DescErrorKind::TooManyVqs(5),
            DescErrorKind::BlockTooLarge(300),
            DescErrorKind::OutOfPage { end: 5000 },
            DescErrorKind::VringTooLarge { index: 1, num: 256 },
            DescErrorKind::Mem(mem),
        ] {
            assert!(dp(kind).starts_with("bad device descriptor at 0x10: "));
        }
        assert_eq!(
            ImageError::UnsupportedVersion(0x0105).to_string(),
            "boot protocol 1.05 too old"
        );
        for e in [
            ImageError::TooShort { len: 1 },
            ImageError::BadBootFlag(0),
            ImageError::BadMagic(0),
            ImageError::Mem(mem),
        ] {
            assert!(!e.to_string().is_empty());
        }
        assert_eq!(
            BootError::InvalidState(MicState::Online).to_string(),
            "card is online, not offline"
        );
        for e in [
            BootError::ResetInProgress,
            BootError::FirmwareNotReady,
            BootError::BootAddrTooHigh(1),
            BootError::ImageTooLarge {
                boot_addr: 0,
                len: 1,
                aperture: 0,
            },
            BootError::CmdlineTooLong,
            BootError::CmdlineDoesNotFit,
            BootError::RamdiskTooLarge { addr: 0, len: 1 },
            BootError::RamdiskOverlap,
            BootError::BadImage(ImageError::BadMagic(0)),
            BootError::Mem(mem),
        ] {
            assert!(!e.to_string().is_empty());
        }
        for e in [
            HostError::Mem(mem),
            HostError::Doorbell(DoorbellError::Invalid(-3)),
            HostError::InvalidStatus(7),
            HostError::SmptFull,
        ] {
            assert!(!e.to_string().is_empty());
        }
        assert_eq!(
            CardError::BadMagic(0).to_string(),
            "bootparam magic mismatch (0x00000000)"
        );
        assert_eq!(
            CardError::InvalidStatus(MicStatus::Nop).to_string(),
            "nop is not a shutdown status"
        );
        assert!(!CardError::Mem(mem).to_string().is_empty());
        assert!(
            !SmptError::NotInWindow {
                card_addr: 0,
                size: 1
            }
            .to_string()
            .is_empty()
        );
        assert!(!SmptError::RefcountUnderflow { entry: 0 }.to_string().is_empty());
        assert_eq!(ParseHexError::Empty.to_string(), "empty number");
        assert!(!ParseHexError::InvalidDigit.to_string().is_empty());
        assert!(!ParseHexError::Overflow.to_string().is_empty());
    }
}
