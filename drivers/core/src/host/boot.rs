//! The boot loader: places the OS image, command line and ramdisk in card
//! memory through the aperture, as the card bootstrap expects them.
//!
//! Every check runs before the first write, so a refused boot leaves card
//! memory and the scratchpads untouched.

use core::fmt::{self, Write as _};

use crate::abi::{BootMode, MicState};
use crate::bzimage::{self, ImageError};
use crate::errno;
use crate::hw::{MemError, Memory, Mmio, in_bounds};
use crate::regs;

/// Highest boot address accepted (2 GiB).
pub const MAX_BOOT_ADDR: u64 = 2 << 30;
/// Size of the command-line buffer, NUL included.
pub const CMDLINE_SIZE: usize = 2048;

/// What to boot.
#[derive(Debug, Clone, Copy)]
pub struct BootParams<'a> {
    /// "linux" (image + cmdline + ramdisk) or "elf" (image only).
    pub mode: BootMode,
    /// The OS image (the `firmware` attribute's file).
    pub image: &'a [u8],
    /// The ramdisk (the `ramdisk` attribute's file), if set.
    pub ramdisk: Option<&'a [u8]>,
    /// The `cmdline` attribute, if set.
    pub cmdline: Option<&'a str>,
}

/// Why a boot was refused. [`BootError::errno`] gives the write(2) error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootError {
    /// The card is not offline.
    InvalidState(MicState),
    /// A reset is still running.
    ResetInProgress,
    /// SPAD2 bit 0 is clear: the caller must run the reset sequence
    /// ([`crate::host::HostDevice::begin_reset`] with `force`) and retry; if
    /// that reset fails the state is `reset_failed` and the write fails EINVAL.
    FirmwareNotReady,
    /// The bootstrap asked for an image address above 2 GiB.
    BootAddrTooHigh(u64),
    /// The image does not fit in the aperture above the boot address.
    ImageTooLarge {
        /// Boot address.
        boot_addr: u64,
        /// Image length.
        len: u64,
        /// Aperture size.
        aperture: u64,
    },
    /// The command line is longer than [`CMDLINE_SIZE`] − 1 bytes.
    CmdlineTooLong,
    /// The command line does not fit in the aperture after the image.
    CmdlineDoesNotFit,
    /// The ramdisk does not fit at 2 × boot address (or exceeds 4 GiB).
    RamdiskTooLarge {
        /// Where it would go.
        addr: u64,
        /// Its length.
        len: u64,
    },
    /// The ramdisk at 2 × boot address would overwrite the image or cmdline.
    RamdiskOverlap,
    /// The image has no valid boot header to patch.
    BadImage(ImageError),
    /// Card memory access failed.
    Mem(MemError),
}

impl BootError {
    /// The errno (positive) the sysfs store returns: E2BIG for a command
    /// line the card's buffer cannot hold (with the driver's ` mem=` first),
    /// EIO when card memory cannot be written, EINVAL for the rest.
    #[must_use]
    pub const fn errno(&self) -> i32 {
        match self {
            BootError::Mem(_) => errno::EIO,
            BootError::CmdlineTooLong => errno::E2BIG,
            _ => errno::EINVAL,
        }
    }
}

impl From<MemError> for BootError {
    fn from(e: MemError) -> Self {
        BootError::Mem(e)
    }
}

impl fmt::Display for BootError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BootError::InvalidState(s) => write!(f, "card is {}, not offline", s.as_str()),
            BootError::ResetInProgress => write!(f, "reset in progress"),
            BootError::FirmwareNotReady => write!(f, "bootstrap not ready"),
            BootError::BootAddrTooHigh(a) => write!(f, "boot address {a:#x} above 2 GiB"),
            BootError::ImageTooLarge {
                boot_addr,
                len,
                aperture,
            } => write!(
                f,
                "image of {len} bytes at {boot_addr:#x} exceeds the {aperture:#x}-byte aperture"
            ),
            BootError::CmdlineTooLong => write!(f, "command line longer than {}", CMDLINE_SIZE - 1),
            BootError::CmdlineDoesNotFit => write!(f, "command line does not fit in the aperture"),
            BootError::RamdiskTooLarge { addr, len } => {
                write!(f, "ramdisk of {len} bytes does not fit at {addr:#x}")
            }
            BootError::RamdiskOverlap => write!(f, "ramdisk would overlap the image"),
            BootError::BadImage(e) => write!(f, "image: {e}"),
            BootError::Mem(e) => write!(f, "{e}"),
        }
    }
}

impl core::error::Error for BootError {}

/// Where [`load`] put things (for logging and for tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadInfo {
    /// Card address of the image.
    pub boot_addr: u64,
    /// Image length (also written to SPAD5).
    pub image_len: u64,
    /// Card address and length (NUL included) of the command line, if written.
    pub cmdline: Option<(u64, usize)>,
    /// Card address and length of the ramdisk, if written.
    pub ramdisk: Option<(u64, u64)>,
}

/// A fixed buffer the command line is formatted into.
struct CmdlineBuf {
    buf: [u8; CMDLINE_SIZE],
    len: usize,
}

impl fmt::Write for CmdlineBuf {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        // Keep one byte for the NUL.
        if end >= CMDLINE_SIZE {
            return Err(fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Builds " mem=<MiB>M[ <cmdline>]" plus NUL; the returned buffer's first
/// `len` bytes are the string including its NUL.
fn build_cmdline(aperture: u64, extra: Option<&str>) -> Result<CmdlineBuf, BootError> {
    let mut c = CmdlineBuf {
        buf: [0; CMDLINE_SIZE],
        len: 0,
    };
    write!(c, " mem={}M", aperture >> 20).map_err(|_| BootError::CmdlineTooLong)?;
    if let Some(s) = extra {
        write!(c, " {s}").map_err(|_| BootError::CmdlineTooLong)?;
    }
    c.len += 1; // the NUL (already zero)
    Ok(c)
}

/// Loads the OS for `params` into the aperture as the bootstrap expects it:
/// image at SPAD2 & 0xFFFFF000 (≤ 2 GiB), its size in SPAD5; for "linux"
/// also the command line right after the image and the ramdisk at twice the
/// boot address, with `ramdisk_image`/`ramdisk_size` patched into the copied
/// image's boot header. Does not send the bootstrap interrupt.
pub fn load(
    mmio: &impl Mmio,
    aperture: &impl Memory,
    params: &BootParams<'_>,
) -> Result<LoadInfo, BootError> {
    let ap = aperture.size();
    let boot_addr = regs::spad2_boot_addr(mmio.read32(regs::spad(regs::SPAD_DOWNLOAD_INFO)));
    if boot_addr > MAX_BOOT_ADDR {
        return Err(BootError::BootAddrTooHigh(boot_addr));
    }
    let image_len = params.image.len() as u64;
    if !in_bounds(boot_addr, image_len, ap) || image_len > u64::from(u32::MAX) {
        return Err(BootError::ImageTooLarge {
            boot_addr,
            len: image_len,
            aperture: ap,
        });
    }
    let mut info = LoadInfo {
        boot_addr,
        image_len,
        cmdline: None,
        ramdisk: None,
    };

    // Validate everything for "linux" before writing anything.
    let mut cmdline = None;
    let mut ramdisk = None;
    if params.mode == BootMode::Linux {
        let c = build_cmdline(ap, params.cmdline)?;
        let addr = boot_addr + image_len;
        if !in_bounds(addr, c.len as u64, ap) {
            return Err(BootError::CmdlineDoesNotFit);
        }
        info.cmdline = Some((addr, c.len));
        if let Some(rd) = params.ramdisk {
            bzimage::parse_header(params.image).map_err(BootError::BadImage)?;
            let rd_addr = 2 * boot_addr;
            let rd_len = rd.len() as u64;
            if !in_bounds(rd_addr, rd_len, ap) || rd_len > u64::from(u32::MAX) {
                return Err(BootError::RamdiskTooLarge {
                    addr: rd_addr,
                    len: rd_len,
                });
            }
            let used_end = addr + c.len as u64;
            if rd_len > 0 && rd_addr < used_end && rd_addr + rd_len > boot_addr {
                return Err(BootError::RamdiskOverlap);
            }
            info.ramdisk = Some((rd_addr, rd_len));
            ramdisk = Some(rd);
        }
        cmdline = Some(c);
    }

    aperture.write(boot_addr, params.image)?;
    mmio.write32(regs::spad(regs::SPAD_IMAGE_SIZE), image_len as u32);
    if let (Some(c), Some((addr, len))) = (&cmdline, info.cmdline) {
        aperture.write(addr, &c.buf[..len])?;
    }
    if let (Some(rd), Some((addr, len))) = (ramdisk, info.ramdisk) {
        aperture.write(addr, rd)?;
        bzimage::patch_ramdisk(aperture, boot_addr, addr as u32, len as u32)?;
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bzimage::Header;
    use crate::fake::{FakeMem, FakeMmio};
    use std::vec;
    use std::vec::Vec;

    const MIB: u64 = 1 << 20;

    fn card(boot_addr: u32) -> FakeMmio {
        let mmio = FakeMmio::new();
        mmio.set(
            regs::spad(regs::SPAD_DOWNLOAD_INFO),
            regs::spad2_encode(true, 3, boot_addr),
        );
        mmio
    }

    fn kernel(len: usize) -> Vec<u8> {
        let mut img = vec![0x90; len];
        Header::new().write_into(&mut img).unwrap();
        img
    }

    fn linux<'a>(image: &'a [u8], ramdisk: Option<&'a [u8]>, cmdline: Option<&'a str>) -> BootParams<'a> {
        BootParams {
            mode: BootMode::Linux,
            image,
            ramdisk,
            cmdline,
        }
    }

    #[test]
    fn linux_boot_layout() {
        let mmio = card(0x100_0000); // 16 MiB
        let ap = FakeMem::new(64 * MIB as usize);
        let img = kernel(0x1000);
        let rd = [0xAB; 100];
        let info = load(&mmio, &ap, &linux(&img, Some(&rd), Some("console=hvc0"))).unwrap();
        assert_eq!(info.boot_addr, 0x100_0000);
        assert_eq!(info.image_len, 0x1000);
        assert_eq!(mmio.get(regs::spad(5)), 0x1000);
        // Image copied (apart from the patched fields).
        assert_eq!(ap.bytes(0x100_0000 + 0x300, 16), [0x90; 16]);
        let expect = b" mem=64M console=hvc0\0";
        assert_eq!(info.cmdline, Some((0x100_1000, expect.len())));
        assert_eq!(ap.bytes(0x100_1000, expect.len()), expect);
        assert_eq!(info.ramdisk, Some((0x200_0000, 100)));
        assert_eq!(ap.bytes(0x200_0000, 100), [0xAB; 100]);
        let h = bzimage::read_header(&ap, 0x100_0000).unwrap();
        assert_eq!(h.ramdisk_image, 0x200_0000);
        assert_eq!(h.ramdisk_size, 100);
        // The caller's image is untouched.
        assert_eq!(bzimage::parse_header(&img).unwrap().ramdisk_size, 0);
    }

    #[test]
    fn linux_without_cmdline_or_ramdisk() {
        let mmio = card(0x10_0000);
        let ap = FakeMem::new(8 * MIB as usize);
        // No header needed without a ramdisk.
        let img = [1u8; 10];
        let info = load(&mmio, &ap, &linux(&img, None, None)).unwrap();
        assert_eq!(ap.bytes(0x10_000A, 8), b" mem=8M\0");
        assert_eq!(info.ramdisk, None);
    }

    #[test]
    fn elf_loads_image_only() {
        let mmio = card(0x10_0000);
        let ap = FakeMem::new(8 * MIB as usize);
        let img = [7u8; 32];
        let p = BootParams {
            mode: BootMode::Elf,
            image: &img,
            ramdisk: Some(&[1, 2, 3]),
            cmdline: Some("x"),
        };
        let info = load(&mmio, &ap, &p).unwrap();
        assert_eq!(info.cmdline, None);
        assert_eq!(info.ramdisk, None);
        assert_eq!(ap.bytes(0x10_0000, 32), [7; 32]);
        assert_eq!(ap.bytes(0x10_0020, 8), [0; 8]);
        assert_eq!(ap.bytes(0x20_0000, 3), [0; 3]);
        assert_eq!(mmio.get(regs::spad(5)), 32);
    }

    #[test]
    fn refusals_write_nothing() {
        let ap = FakeMem::new(4 * MIB as usize);
        let img = kernel(0x400);
        let check = |mmio: &FakeMmio, p: &BootParams<'_>, e: BootError| {
            assert_eq!(load(mmio, &ap, p), Err(e));
            assert!(mmio.writes.borrow().is_empty());
            assert!(ap.data.borrow().iter().all(|&b| b == 0));
        };
        // Boot address above 2 GiB.
        check(
            &card(0x8000_1000),
            &linux(&img, None, None),
            BootError::BootAddrTooHigh(0x8000_1000),
        );
        // Image does not fit.
        let big = vec![0u8; 3 * MIB as usize + 1];
        check(
            &card(0x10_0000),
            &linux(&big, None, None),
            BootError::ImageTooLarge {
                boot_addr: 0x10_0000,
                len: big.len() as u64,
                aperture: 4 * MIB,
            },
        );
        // Command line too long.
        let long = "a".repeat(CMDLINE_SIZE);
        check(
            &card(0x10_0000),
            &linux(&img, None, Some(&long)),
            BootError::CmdlineTooLong,
        );
        // Command line does not fit after an image filling the aperture.
        let fill = vec![0u8; 3 * MIB as usize];
        check(
            &card(0x10_0000),
            &linux(&fill, None, None),
            BootError::CmdlineDoesNotFit,
        );
        // Ramdisk without a patchable header.
        check(
            &card(0x10_0000),
            &linux(&[0u8; 16], Some(&[1]), None),
            BootError::BadImage(ImageError::TooShort { len: 16 }),
        );
        // Ramdisk beyond the aperture.
        let rd = vec![0u8; 2 * MIB as usize + 1];
        check(
            &card(0x10_0000),
            &linux(&img, Some(&rd), None),
            BootError::RamdiskTooLarge {
                addr: 0x20_0000,
                len: rd.len() as u64,
            },
        );
        // Image running into the ramdisk area.
        let img2 = kernel(0x10_0000);
        check(
            &card(0x10_0000),
            &linux(&img2, Some(&[1]), None),
            BootError::RamdiskOverlap,
        );
        // Boot address 0: ramdisk at 0 overlaps.
        check(
            &card(0),
            &linux(&img, Some(&[1]), None),
            BootError::RamdiskOverlap,
        );
    }

    #[test]
    fn limits_are_inclusive() {
        // Exactly 2 GiB boot address is accepted (aperture permitting).
        let mmio = card(0x8000_0000);
        let ap = FakeMem::with_base(0x8000_0000, 4096);
        let p = BootParams {
            mode: BootMode::Elf,
            image: &[1; 4096],
            ramdisk: None,
            cmdline: None,
        };
        assert!(load(&mmio, &ap, &p).is_ok());
        // A command line of exactly 2047 bytes (NUL makes 2048) is accepted.
        let mmio = card(0x10_0000);
        let ap = FakeMem::new(4 * MIB as usize);
        let prefix = " mem=4M ".len();
        let s = "b".repeat(CMDLINE_SIZE - 1 - prefix);
        let info = load(&mmio, &ap, &linux(&[0; 8], None, Some(&s))).unwrap();
        assert_eq!(info.cmdline.unwrap().1, CMDLINE_SIZE);
        let s = "b".repeat(CMDLINE_SIZE - prefix);
        assert_eq!(
            load(&mmio, &ap, &linux(&[0; 8], None, Some(&s))),
            Err(BootError::CmdlineTooLong)
        );
    }

    #[test]
    fn ramdisk_may_start_where_the_cmdline_ends() {
        // Image and command line ending exactly at twice the boot address:
        // the ramdisk goes right after them. One byte more overlaps.
        let boot = 0x10_0000u64;
        let ap = FakeMem::new(4 * MIB as usize);
        let cmdline = b" mem=4M\0";
        let rd = [0xCD; 64];
        let fits = kernel((boot as usize) - cmdline.len());
        let info = load(&card(boot as u32), &ap, &linux(&fits, Some(&rd), None)).unwrap();
        let (cmd_addr, cmd_len) = info.cmdline.unwrap();
        assert_eq!(
            cmd_addr + cmd_len as u64,
            2 * boot,
            "the command line ends at the ramdisk"
        );
        assert_eq!(info.ramdisk, Some((2 * boot, rd.len() as u64)));
        assert_eq!(ap.bytes(2 * boot - 8, 8), cmdline);
        assert_eq!(ap.bytes(2 * boot, 64), [0xCD; 64]);

        let ap = FakeMem::new(4 * MIB as usize);
        let over = kernel((boot as usize) - cmdline.len() + 1);
        let mmio = card(boot as u32);
        assert_eq!(
            load(&mmio, &ap, &linux(&over, Some(&rd), None)),
            Err(BootError::RamdiskOverlap)
        );
        assert!(mmio.writes.borrow().is_empty(), "refused before writing");
    }

    #[test]
    fn errnos() {
        assert_eq!(BootError::FirmwareNotReady.errno(), errno::EINVAL);
        assert_eq!(BootError::CmdlineTooLong.errno(), errno::E2BIG);
        assert_eq!(
            BootError::Mem(MemError::OutOfBounds { addr: 0, len: 1 }).errno(),
            errno::EIO
        );
    }
}
