//! The emulated card OS images under `<root>/lib/firmware/`, and the kernel
//! firmware loader's view of that directory.
//!
//! `mic/uos.img` is a bzImage-shaped kernel (a valid x86 boot-protocol header
//! whose `kernel_version` string the card prints as its banner),
//! `mic/System.map` names `__log_buf` and `log_buf_len` where the emulated
//! card kernel keeps them, and `mic/micN.image` is a real initramfs (cpio
//! "newc") archive. They are created only if absent, so an operator's own
//! files are never overwritten.

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

/// Card kernel virtual address of `__log_buf` in the emulated card kernel.
pub const LOG_BUF_VA: u64 = 0xffff_ffff_81c3_d560;
/// Card kernel virtual address of the `log_buf_len` variable.
pub const LOG_BUF_LEN_VA: u64 = 0xffff_ffff_81a1_b2c0;
/// `__START_KERNEL_map`: the card kernel is never relocated, so physical =
/// virtual - this.
pub use mic_core::host::sysfs::START_KERNEL_MAP;

/// Kernel version string embedded in the default image.
pub const KERNEL_VERSION: &str =
    "3.10.0-micemu (build@micemu) (gcc version 4.7.0 (GCC) ) #1 SMP Tue Nov 24 12:00:00 UTC 2026";

/// Why the firmware loader refused a name.
#[derive(Debug, thiserror::Error)]
pub enum FirmwareError {
    #[error("firmware name {0:?} is empty, absolute or escapes the firmware directory")]
    BadName(String),
    #[error("firmware {name:?} not found under {dir}")]
    NotFound { name: String, dir: PathBuf },
    #[error("firmware {name:?}: {source}")]
    Io { name: String, source: io::Error },
}

impl FirmwareError {
    /// The errno the kernel's `request_firmware` would hand back: the
    /// file system's own answer (EISDIR for a directory, ENAMETOOLONG for a
    /// name too long for a path, ENOENT for a name with a NUL, which names
    /// no file), EIO only when there is none.
    #[must_use]
    pub fn errno(&self) -> i32 {
        match self {
            FirmwareError::BadName(_) => libc::EINVAL,
            FirmwareError::NotFound { .. } => libc::ENOENT,
            FirmwareError::Io { source, .. } => match source.raw_os_error() {
                Some(errno) => errno,
                None if source.kind() == io::ErrorKind::InvalidInput => libc::ENOENT,
                None => libc::EIO,
            },
        }
    }
}

/// The firmware loader: resolves names relative to `<root>/lib/firmware`.
#[derive(Debug, Clone)]
pub struct FirmwareDir {
    dir: PathBuf,
}

impl FirmwareDir {
    #[must_use]
    pub fn new(root: &Path) -> Self {
        Self {
            dir: root.join("lib/firmware"),
        }
    }

    #[must_use]
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Resolves a firmware name; names that are empty, absolute or contain
    /// `..` are refused (as the kernel loader refuses them).
    pub fn resolve(&self, name: &str) -> Result<PathBuf, FirmwareError> {
        let rel = Path::new(name);
        let ok = !name.is_empty()
            && rel
                .components()
                .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
        if !ok {
            return Err(FirmwareError::BadName(name.to_owned()));
        }
        Ok(self.dir.join(rel))
    }

    /// Reads a whole firmware file, as `request_firmware` does.
    pub fn load(&self, name: &str) -> Result<Vec<u8>, FirmwareError> {
        let path = self.resolve(name)?;
        fs::read(&path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                FirmwareError::NotFound {
                    name: name.to_owned(),
                    dir: self.dir.clone(),
                }
            } else {
                FirmwareError::Io {
                    name: name.to_owned(),
                    source: e,
                }
            }
        })
    }

    /// Creates the default card OS images that are missing.
    pub fn install_defaults(&self, cards: u32) -> io::Result<()> {
        let mic = self.dir.join("mic");
        fs::create_dir_all(&mic)?;
        write_if_absent(&mic.join("uos.img"), &kernel_image())?;
        write_if_absent(&mic.join("System.map"), system_map().as_bytes())?;
        for n in 0..cards {
            write_if_absent(&mic.join(format!("mic{n}.image")), &initramfs(n))?;
        }
        Ok(())
    }
}

fn write_if_absent(path: &Path, data: &[u8]) -> io::Result<()> {
    match fs::OpenOptions::new().write(true).create_new(true).open(path) {
        Ok(mut f) => io::Write::write_all(&mut f, data),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Offset of the kernel version string inside the image.
const VERSION_OFFSET: usize = 0x400;
const SETUP_SECTS: u8 = 4;
const PAYLOAD_LEN: usize = 768 * 1024;

/// A bzImage-shaped kernel: boot sector and setup header with the fields the
/// host loader patches and the card checks, then a deterministic payload.
#[must_use]
pub fn kernel_image() -> Vec<u8> {
    let setup_len = (usize::from(SETUP_SECTS) + 1) * 512;
    let mut img = vec![0u8; setup_len + PAYLOAD_LEN];
    img[0x1F1] = SETUP_SECTS;
    img[0x1FE..0x200].copy_from_slice(&0xAA55u16.to_le_bytes());
    img[0x202..0x206].copy_from_slice(b"HdrS");
    img[0x206..0x208].copy_from_slice(&0x020Cu16.to_le_bytes());
    img[0x20E..0x210].copy_from_slice(&((VERSION_OFFSET - 0x200) as u16).to_le_bytes());
    let v = KERNEL_VERSION.as_bytes();
    img[VERSION_OFFSET..VERSION_OFFSET + v.len()].copy_from_slice(v);
    // A cheap deterministic "compressed kernel" so the image is not all zeros.
    let mut x: u32 = 0x2545_F491;
    for b in &mut img[setup_len..] {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = x as u8;
    }
    img
}

/// A System.map for the emulated card kernel.
#[must_use]
pub fn system_map() -> String {
    let syms: [(u64, char, &str); 8] = [
        (0xffff_ffff_8100_0000, 'T', "_text"),
        (0xffff_ffff_8100_0000, 'T', "startup_64"),
        (0xffff_ffff_8107_3a10, 'T', "printk"),
        (0xffff_ffff_8107_4c80, 'T', "panic"),
        (LOG_BUF_LEN_VA, 'd', "log_buf_len"),
        (0xffff_ffff_81a1_b2c8, 'd', "log_buf"),
        (LOG_BUF_VA, 'b', "__log_buf"),
        (0xffff_ffff_81e0_0000, 'B', "_end"),
    ];
    syms.iter().fold(String::new(), |mut out, (addr, kind, name)| {
        let _ = writeln!(out, "{addr:016x} {kind} {name}");
        out
    })
}

/// A cpio "newc" archive: the initramfs of card `n`.
#[must_use]
pub fn initramfs(n: u32) -> Vec<u8> {
    let files: Vec<(String, u32, Vec<u8>)> = vec![
        ("etc".into(), 0o040_755, Vec::new()),
        ("sbin".into(), 0o040_755, Vec::new()),
        ("dev".into(), 0o040_755, Vec::new()),
        (
            "init".into(),
            0o100_755,
            b"#!/bin/sh\nmount -t proc proc /proc\nexec /sbin/init\n".to_vec(),
        ),
        (
            "sbin/init".into(),
            0o100_755,
            b"#!/bin/sh\necho 'MIC card OS ready'\nexec /bin/sh\n".to_vec(),
        ),
        ("etc/hostname".into(), 0o100_644, format!("mic{n}\n").into_bytes()),
        (
            "etc/issue".into(),
            0o100_644,
            b"Intel MIC X100 card OS (emulated)\n".to_vec(),
        ),
    ];
    let mut out = Vec::new();
    for (ino, (name, mode, data)) in files.iter().enumerate() {
        cpio_entry(&mut out, ino as u32 + 1, *mode, name, data);
    }
    cpio_entry(&mut out, 0, 0, "TRAILER!!!", &[]);
    out
}

fn cpio_entry(out: &mut Vec<u8>, ino: u32, mode: u32, name: &str, data: &[u8]) {
    let nlink = if mode & 0o040_000 != 0 { 2 } else { 1 };
    let fields = [
        ino,
        mode,
        0,
        0,
        nlink,
        0,
        data.len() as u32,
        0,
        0,
        0,
        0,
        name.len() as u32 + 1,
        0,
    ];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08X}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(data);
    pad4(out);
}

fn pad4(out: &mut Vec<u8>) {
    while out.len() % 4 != 0 {
        out.push(0);
    }
}

/// What the card found in an initramfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitramfsInfo {
    pub entries: usize,
    pub has_init: bool,
}

/// Walks a cpio "newc" archive with every length checked against the buffer.
pub fn parse_initramfs(buf: &[u8]) -> Result<InitramfsInfo, &'static str> {
    let mut off = 0usize;
    let mut entries = 0usize;
    let mut has_init = false;
    loop {
        let hdr = buf.get(off..off + 110).ok_or("truncated cpio header")?;
        if &hdr[..6] != b"070701" && &hdr[..6] != b"070702" {
            return Err("bad cpio magic");
        }
        let field = |i: usize| -> Result<usize, &'static str> {
            let s = std::str::from_utf8(&hdr[6 + 8 * i..14 + 8 * i]).map_err(|_| "bad cpio field")?;
            usize::from_str_radix(s, 16).map_err(|_| "bad cpio field")
        };
        let filesize = field(6)?;
        let namesize = field(11)?;
        if namesize == 0 || namesize > 4096 {
            return Err("bad cpio name size");
        }
        let name_end = off.checked_add(110 + namesize).ok_or("cpio overflow")?;
        let name = buf.get(off + 110..name_end - 1).ok_or("truncated cpio name")?;
        let data_start = align4(name_end);
        let data_end = data_start.checked_add(filesize).ok_or("cpio overflow")?;
        if data_end > buf.len() {
            return Err("truncated cpio data");
        }
        if name == b"TRAILER!!!" {
            return Ok(InitramfsInfo { entries, has_init });
        }
        if name == b"init" || name == b"sbin/init" {
            has_init = true;
        }
        entries += 1;
        off = align4(data_end);
    }
}

fn align4(x: usize) -> usize {
    (x + 3) & !3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initramfs_round_trips() {
        let info = parse_initramfs(&initramfs(3)).unwrap();
        assert_eq!(info.entries, 7);
        assert!(info.has_init);
    }

    #[test]
    fn truncated_initramfs_is_an_error() {
        let img = initramfs(0);
        for cut in [0, 5, 110, 200, img.len() - 1] {
            assert!(parse_initramfs(&img[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn system_map_names_log_symbols_the_mpssd_way() {
        let map = system_map();
        for (sym, addr) in [("__log_buf", LOG_BUF_VA), ("log_buf_len", LOG_BUF_LEN_VA)] {
            let needle = format!(" {sym}\n");
            let pos = map.find(&needle).unwrap() + 1;
            // The original mpssd takes 16 characters starting 19 before the name.
            let hex = &map[pos - 19..pos - 3];
            assert_eq!(u64::from_str_radix(hex, 16).unwrap(), addr);
        }
    }

    #[test]
    fn firmware_names_cannot_escape() {
        let fw = FirmwareDir::new(Path::new("/r"));
        assert!(fw.resolve("mic/uos.img").is_ok());
        for bad in ["", "/etc/passwd", "../x", "mic/../../x"] {
            let err = fw.resolve(bad).unwrap_err();
            assert_eq!(err.errno(), libc::EINVAL, "{bad}");
        }
    }

    #[test]
    fn load_errors_are_the_file_systems_errno() {
        let dir = tempfile::tempdir().unwrap();
        let fw = FirmwareDir::new(dir.path());
        fw.install_defaults(1).unwrap();
        assert!(fw.load("mic/uos.img").is_ok());
        let long = "a".repeat(300);
        let deep = vec!["d"; 3000].join("/");
        for (name, errno) in [
            ("mic", libc::EISDIR),
            ("mic/", libc::EISDIR),
            ("mic/nope.img", libc::ENOENT),
            (long.as_str(), libc::ENAMETOOLONG),
            (deep.as_str(), libc::ENAMETOOLONG),
            ("mic/uos.img/x", libc::ENOTDIR),
            ("mic/uos\0.img", libc::ENOENT),
        ] {
            let e = fw.load(name).unwrap_err();
            assert_eq!(e.errno(), errno, "{name:.40}: {e}");
        }
    }
}
