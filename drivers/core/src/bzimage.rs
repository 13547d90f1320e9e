//! The few facts of the x86 Linux boot protocol the loader relies on: the
//! setup header at the start of a bzImage, and the two `boot_params` fields
//! the host patches to tell the card kernel where its ramdisk is.
//!
//! Used by the host loader (validate, then patch through the aperture) and by
//! an emulated card OS (read back what the host wrote, build test images).

use crate::hw::{MemError, Memory, offset_addr};

/// `setup_sects` (u8).
pub const SETUP_SECTS: usize = 0x1F1;
/// `boot_flag` (u16), must be [`BOOT_FLAG_MAGIC`].
pub const BOOT_FLAG: usize = 0x1FE;
/// Header magic `"HdrS"` (u32 LE).
pub const HEADER_MAGIC: usize = 0x202;
/// Boot protocol `version` (u16, major.minor as 0xMMmm).
pub const VERSION: usize = 0x206;
/// `kernel_version` (u16): offset − 0x200 of a NUL-terminated version string.
pub const KERNEL_VERSION: usize = 0x20E;
/// `ramdisk_image` (u32): physical load address of the ramdisk.
pub const RAMDISK_IMAGE: usize = 0x218;
/// `ramdisk_size` (u32).
pub const RAMDISK_SIZE: usize = 0x21C;
/// `cmd_line_ptr` (u32, protocol ≥ 2.02).
pub const CMD_LINE_PTR: usize = 0x228;
/// Bytes an image must have for all of the above to be present.
pub const HEADER_END: usize = CMD_LINE_PTR + 4;

/// Value of `boot_flag`.
pub const BOOT_FLAG_MAGIC: u16 = 0xAA55;
/// Value of the header magic: `"HdrS"` in little-endian byte order.
pub const HDRS_MAGIC: u32 = u32::from_le_bytes(*b"HdrS");
/// Lowest protocol version with `ramdisk_image`/`ramdisk_size` (2.00).
pub const MIN_VERSION: u16 = 0x0200;
/// `kernel_version` is relative to this offset.
pub const KERNEL_VERSION_BASE: usize = 0x200;

/// Why an image's header was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageError {
    /// The image is shorter than [`HEADER_END`].
    TooShort {
        /// Image length.
        len: usize,
    },
    /// `boot_flag` is not 0xAA55.
    BadBootFlag(u16),
    /// The header magic is not `"HdrS"`.
    BadMagic(u32),
    /// Boot protocol older than 2.00 (no ramdisk fields).
    UnsupportedVersion(u16),
    /// Reading or writing the image in memory failed.
    Mem(MemError),
}

impl From<MemError> for ImageError {
    fn from(e: MemError) -> Self {
        ImageError::Mem(e)
    }
}

impl core::fmt::Display for ImageError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ImageError::TooShort { len } => {
                write!(f, "image too short for a boot header ({len} bytes)")
            }
            ImageError::BadBootFlag(v) => write!(f, "bad boot_flag {v:#06x}"),
            ImageError::BadMagic(v) => write!(f, "bad setup header magic {v:#010x}"),
            ImageError::UnsupportedVersion(v) => {
                write!(f, "boot protocol {}.{:02} too old", v >> 8, v & 0xFF)
            }
            ImageError::Mem(e) => write!(f, "{e}"),
        }
    }
}

impl core::error::Error for ImageError {}

/// The header fields the stack cares about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Number of 512-byte setup sectors (0 means 4).
    pub setup_sects: u8,
    /// Boot protocol version.
    pub version: u16,
    /// `kernel_version` pointer (0 = none).
    pub kernel_version: u16,
    /// Ramdisk load address.
    pub ramdisk_image: u32,
    /// Ramdisk size in bytes.
    pub ramdisk_size: u32,
    /// Command line address.
    pub cmd_line_ptr: u32,
}

fn le16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

fn le32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

/// Parses and validates the setup header at the start of `image`.
pub fn parse_header(image: &[u8]) -> Result<Header, ImageError> {
    let b = image
        .get(..HEADER_END)
        .ok_or(ImageError::TooShort { len: image.len() })?;
    let flag = le16(b, BOOT_FLAG);
    if flag != BOOT_FLAG_MAGIC {
        return Err(ImageError::BadBootFlag(flag));
    }
    let magic = le32(b, HEADER_MAGIC);
    if magic != HDRS_MAGIC {
        return Err(ImageError::BadMagic(magic));
    }
    let version = le16(b, VERSION);
    if version < MIN_VERSION {
        return Err(ImageError::UnsupportedVersion(version));
    }
    Ok(Header {
        setup_sects: b[SETUP_SECTS],
        version,
        kernel_version: le16(b, KERNEL_VERSION),
        ramdisk_image: le32(b, RAMDISK_IMAGE),
        ramdisk_size: le32(b, RAMDISK_SIZE),
        cmd_line_ptr: le32(b, CMD_LINE_PTR),
    })
}

/// Reads and validates the header of the image at `base` in `mem` (what the
/// card sees after the host loaded it).
pub fn read_header(mem: &impl Memory, base: u64) -> Result<Header, ImageError> {
    let mut b = [0u8; HEADER_END];
    mem.read(base, &mut b)?;
    parse_header(&b)
}

/// The NUL-terminated `kernel_version` string of `image`, without the NUL,
/// if the pointer is set and the string ends inside the image.
#[must_use]
pub fn kernel_version(image: &[u8]) -> Option<&[u8]> {
    let h = parse_header(image).ok()?;
    if h.kernel_version == 0 {
        return None;
    }
    let start = KERNEL_VERSION_BASE + h.kernel_version as usize;
    let tail = image.get(start..)?;
    let len = tail.iter().position(|&c| c == 0)?;
    Some(&tail[..len])
}

impl Header {
    /// A minimal valid header (protocol 2.02), for building test and emulated
    /// images.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            setup_sects: 1,
            version: 0x0202,
            kernel_version: 0,
            ramdisk_image: 0,
            ramdisk_size: 0,
            cmd_line_ptr: 0,
        }
    }

    /// Writes this header (and the boot flag and magic) into `image`.
    pub fn write_into(&self, image: &mut [u8]) -> Result<(), ImageError> {
        let len = image.len();
        let b = image.get_mut(..HEADER_END).ok_or(ImageError::TooShort { len })?;
        b[SETUP_SECTS] = self.setup_sects;
        b[BOOT_FLAG..BOOT_FLAG + 2].copy_from_slice(&BOOT_FLAG_MAGIC.to_le_bytes());
        b[HEADER_MAGIC..HEADER_MAGIC + 4].copy_from_slice(&HDRS_MAGIC.to_le_bytes());
        b[VERSION..VERSION + 2].copy_from_slice(&self.version.to_le_bytes());
        b[KERNEL_VERSION..KERNEL_VERSION + 2].copy_from_slice(&self.kernel_version.to_le_bytes());
        b[RAMDISK_IMAGE..RAMDISK_IMAGE + 4].copy_from_slice(&self.ramdisk_image.to_le_bytes());
        b[RAMDISK_SIZE..RAMDISK_SIZE + 4].copy_from_slice(&self.ramdisk_size.to_le_bytes());
        b[CMD_LINE_PTR..CMD_LINE_PTR + 4].copy_from_slice(&self.cmd_line_ptr.to_le_bytes());
        Ok(())
    }
}

impl Default for Header {
    fn default() -> Self {
        Self::new()
    }
}

/// Patches `ramdisk_image` and `ramdisk_size` of the image loaded at
/// `image_base` in `mem`.
pub fn patch_ramdisk(
    mem: &impl Memory,
    image_base: u64,
    ramdisk_image: u32,
    ramdisk_size: u32,
) -> Result<(), MemError> {
    mem.write_u32(offset_addr(image_base, RAMDISK_IMAGE as u64)?, ramdisk_image)?;
    mem.write_u32(offset_addr(image_base, RAMDISK_SIZE as u64)?, ramdisk_size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::FakeMem;

    fn image() -> [u8; 0x400] {
        let mut img = [0u8; 0x400];
        let h = Header {
            kernel_version: 0x100,
            ..Header::new()
        };
        h.write_into(&mut img).unwrap();
        img[0x300..0x306].copy_from_slice(b"3.10\0x");
        img
    }

    #[test]
    fn parses_valid_header() {
        let img = image();
        let h = parse_header(&img).unwrap();
        assert_eq!(h.version, 0x0202);
        assert_eq!(h.setup_sects, 1);
        assert_eq!(h.kernel_version, 0x100);
        assert_eq!(kernel_version(&img), Some(&b"3.10"[..]));
        assert_eq!(&img[0x202..0x206], b"HdrS");
        assert_eq!(&img[0x1FE..0x200], &[0x55, 0xAA]);
    }

    #[test]
    fn rejects_bad_headers() {
        assert_eq!(parse_header(&[0u8; 10]), Err(ImageError::TooShort { len: 10 }));
        let mut img = image();
        img[0x1FE] = 0;
        assert_eq!(parse_header(&img), Err(ImageError::BadBootFlag(0xAA00)));
        let mut img = image();
        img[0x202] = b'X';
        assert!(matches!(parse_header(&img), Err(ImageError::BadMagic(_))));
        let mut img = image();
        img[VERSION..VERSION + 2].copy_from_slice(&0x0105u16.to_le_bytes());
        assert_eq!(parse_header(&img), Err(ImageError::UnsupportedVersion(0x0105)));
        assert!(Header::new().write_into(&mut [0u8; 0x100]).is_err());
    }

    #[test]
    fn kernel_version_edge_cases() {
        let mut img = image();
        img[KERNEL_VERSION..KERNEL_VERSION + 2].copy_from_slice(&0u16.to_le_bytes());
        assert_eq!(kernel_version(&img), None);
        img[KERNEL_VERSION..KERNEL_VERSION + 2].copy_from_slice(&0xFFFFu16.to_le_bytes());
        assert_eq!(kernel_version(&img), None);
        let mut img = image();
        img[0x300..].fill(b'a');
        assert_eq!(kernel_version(&img), None);
        assert_eq!(kernel_version(&[0u8; 4]), None);
    }

    #[test]
    fn patch_and_read_back() {
        let mem = FakeMem::new(0x1000);
        mem.fill(0x200, &image());
        patch_ramdisk(&mem, 0x200, 0x0800_0000, 12345).unwrap();
        let h = read_header(&mem, 0x200).unwrap();
        assert_eq!(h.ramdisk_image, 0x0800_0000);
        assert_eq!(h.ramdisk_size, 12345);
        assert_eq!(
            patch_ramdisk(&mem, 0x1000, 1, 1),
            Err(MemError::OutOfBounds { addr: 0x1218, len: 4 })
        );
        assert!(patch_ramdisk(&mem, u64::MAX, 1, 1).is_err());
        assert!(matches!(read_header(&mem, 0xF00), Err(ImageError::Mem(_))));
    }
}
