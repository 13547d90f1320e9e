//! `Card`: one `micN`, its sysfs attributes and debugfs files.

use std::fs::{self, OpenOptions};
use std::io::{self, Write as _};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use mic_core::abi::{BootMode, MicState, MicStatus};
use mic_core::host::attrs::STORE_MAX;

use crate::attrs::{
    Attr, DebugFile, escape_untrusted, format_hex, ipaddr_from_cmdline, parse_kernel_ptr, strip_newline,
};
use crate::debugfs::{DpSummary, SmptSummary, parse_dp, parse_smpt};
use crate::error::{Error, HINT_DEBUGFS, HINT_SYSFS, Result, explain_errno, report};
use crate::io::{IoLimit, bounded};
use crate::root::{MicRoot, check_firmware_name};

/// Longest `cmdline` accepted. The driver copies " mem=<N>M " plus the
/// cmdline into a 2048-byte area and truncates silently; this limit leaves
/// room for that prefix so nothing is lost.
pub const CMDLINE_MAX: usize = 2000;

/// One card under a [`MicRoot`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Card {
    id: u32,
    name: String,
    sysfs: PathBuf,
    debugfs: PathBuf,
    debugfs_top: PathBuf,
    firmware_dir: PathBuf,
    dev_node: PathBuf,
    limit: IoLimit,
}

/// A snapshot of every sysfs attribute of a card.
///
/// Only `state` is required; any other attribute that is missing or does not
/// parse is `None`, and the reason is recorded in `problems`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardInfo {
    pub id: u32,
    pub name: String,
    pub state: MicState,
    pub shutdown_status: Option<MicStatus>,
    pub family: Option<String>,
    pub stepping: Option<String>,
    pub cmdline: Option<String>,
    pub firmware: Option<String>,
    pub ramdisk: Option<String>,
    pub bootmode: Option<BootMode>,
    pub log_buf_addr: Option<u64>,
    pub log_buf_len: Option<u64>,
    pub ipaddr: Option<Ipv4Addr>,
    /// Attributes that could not be read or parsed, with the error message.
    pub problems: Vec<(Attr, String)>,
}

impl Card {
    /// The card `micN` under `root`; does not check that it exists.
    #[must_use]
    pub fn new(root: &MicRoot, id: u32) -> Self {
        let name = format!("mic{id}");
        Self {
            id,
            sysfs: root.sysfs_class_dir().join(&name),
            debugfs: root.debugfs_dir().join(&name),
            debugfs_top: root.debugfs_dir(),
            firmware_dir: root.firmware_dir(),
            dev_node: root.dev_node(id),
            limit: root.io_limit(),
            name,
        }
    }

    /// This card with every access to its files bounded by `limit` (see
    /// [`IoLimit`]); watchers opened from it inherit the bound.
    #[must_use]
    pub fn with_io_limit(mut self, limit: IoLimit) -> Self {
        self.limit = limit;
        self
    }

    /// The bound on accesses to this card's files.
    #[must_use]
    pub fn io_limit(&self) -> IoLimit {
        self.limit
    }

    /// Runs `f` on this card as one bounded access: every read and write
    /// `f` makes runs on one worker thread, and the whole is bounded by this
    /// card's [`IoLimit`] — one thread hand-off instead of one per file, for
    /// reading many attributes at once. [`Error::NoAnswer`] names the file
    /// `f` was at when time ran out.
    pub fn batch<T: Send + 'static>(&self, f: impl FnOnce(&Card) -> T + Send + 'static) -> Result<T> {
        let inner = self.clone().with_io_limit(IoLimit::NONE);
        crate::io::batch(self.limit, &self.sysfs, move || f(&inner))
    }

    #[must_use]
    pub fn id(&self) -> u32 {
        self.id
    }

    /// `micN`.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `<root>/sys/class/mic/micN`.
    #[must_use]
    pub fn sysfs_dir(&self) -> &Path {
        &self.sysfs
    }

    /// `<root>/sys/kernel/debug/mic_host/micN`.
    #[must_use]
    pub fn debugfs_dir(&self) -> &Path {
        &self.debugfs
    }

    /// `<root>/lib/firmware`.
    #[must_use]
    pub fn firmware_dir(&self) -> &Path {
        &self.firmware_dir
    }

    /// `<root>/dev/micN` (a char device, or micemu's socket).
    #[must_use]
    pub fn dev_node(&self) -> &Path {
        &self.dev_node
    }

    #[must_use]
    pub fn attr_path(&self, attr: Attr) -> PathBuf {
        self.sysfs.join(attr.file_name())
    }

    #[must_use]
    pub fn debug_path(&self, file: DebugFile) -> PathBuf {
        self.debugfs.join(file.file_name())
    }

    /// Whether the card's sysfs directory exists (false also when the
    /// driver does not answer).
    #[must_use]
    pub fn exists(&self) -> bool {
        let dir = self.sysfs.clone();
        bounded(self.limit, &self.sysfs, move || dir.is_dir()).unwrap_or(false)
    }

    /// The default ramdisk `micctrl -b` uses: `mic/micN.image`.
    #[must_use]
    pub fn default_ramdisk(&self) -> String {
        format!("mic/{}.image", self.name)
    }

    // ---- raw access ----------------------------------------------------

    /// The attribute's contents as the driver shows them (trailing newline
    /// included).
    pub fn read_raw(&self, attr: Attr) -> Result<String> {
        let path = self.attr_path(attr);
        let bytes = read_file(self.limit, &path, HINT_SYSFS)?;
        String::from_utf8(bytes).map_err(|e| Error::Parse {
            path,
            value: String::from_utf8_lossy(e.as_bytes()).into_owned(),
            expected: "utf-8 text",
        })
    }

    /// The bytes of a debugfs file.
    pub fn read_debug(&self, file: DebugFile) -> Result<Vec<u8>> {
        let path = self.debug_path(file);
        read_file(self.limit, &path, HINT_DEBUGFS).map_err(|e| {
            if e.is_not_found() && !self.debugfs_exists() {
                Error::DebugfsAbsent {
                    looked_in: self.debugfs_top.clone(),
                }
            } else {
                e
            }
        })
    }

    fn debugfs_exists(&self) -> bool {
        let top = self.debugfs_top.clone();
        bounded(self.limit, &self.debugfs_top, move || top.is_dir()).unwrap_or(true)
    }

    /// Writes `value` to the attribute with a single write(2), like
    /// `echo value > attr`. An empty value is written as `"\n"` (sysfs drops
    /// zero-length writes; the driver strips one trailing newline).
    ///
    /// An errno from the write itself is the driver's answer and becomes
    /// [`Error::Rejected`] with the errno explained.
    pub fn write_raw(&self, attr: Attr, value: &str) -> Result<()> {
        let path = self.attr_path(attr);
        let bytes = if value.is_empty() { "\n" } else { value }.as_bytes().to_vec();
        let len = bytes.len();
        if len > STORE_MAX {
            // The driver would store the first page and answer for it alone.
            return Err(Error::InvalidValue {
                card: self.name.clone(),
                attr,
                value: value.to_owned(),
                reason: "longer than a sysfs store takes (4096 bytes)",
            });
        }
        let target = path.clone();
        // Open and write both wait on the driver (a boot write returns once
        // the image is loaded, after a reset if one is needed).
        let written = bounded(self.limit, &path, move || {
            let mut f = OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(&target)
                .map_err(Failed::Open)?;
            f.write(&bytes).map_err(Failed::Io)
        })?;
        match written {
            Err(Failed::Open(e)) => Err(Error::io(&path, e, HINT_SYSFS)),
            Ok(n) if n == len => Ok(()),
            Ok(n) => Err(Error::Io {
                path,
                source: io::Error::new(
                    io::ErrorKind::WriteZero,
                    format!("short write: {n} of {len} bytes accepted"),
                ),
            }),
            Err(Failed::Io(e)) => Err(self.write_error(attr, value, &path, e)),
        }
    }

    fn write_error(&self, attr: Attr, value: &str, path: &Path, e: io::Error) -> Error {
        match e.raw_os_error() {
            Some(libc::EACCES | libc::EPERM | libc::ENOTCONN | libc::EINTR | libc::EBADF) | None => {
                Error::io(path, e, HINT_SYSFS)
            }
            Some(errno) => Error::Rejected {
                card: self.name.clone(),
                attr,
                value: value.to_owned(),
                errno,
                meaning: explain_errno(attr, value, errno, &self.firmware_dir),
            },
        }
    }

    fn parse_err(&self, attr: Attr, value: &str, expected: &'static str) -> Error {
        Error::Parse {
            path: self.attr_path(attr),
            value: value.to_owned(),
            expected,
        }
    }

    /// Contents without the trailing newline; empty is `None`.
    fn read_opt_string(&self, attr: Attr) -> Result<Option<String>> {
        let raw = self.read_raw(attr)?;
        let s = strip_newline(&raw);
        Ok((!s.is_empty()).then(|| s.to_owned()))
    }

    // ---- typed readers -------------------------------------------------

    pub fn state(&self) -> Result<MicState> {
        let raw = self.read_raw(Attr::State)?;
        parse_state(&raw).ok_or_else(|| {
            self.parse_err(
                Attr::State,
                &raw,
                "one of offline, online, shutting_down, reset_failed",
            )
        })
    }

    pub fn shutdown_status(&self) -> Result<MicStatus> {
        let raw = self.read_raw(Attr::ShutdownStatus)?;
        MicStatus::from_sysfs(raw.trim()).ok_or_else(|| {
            self.parse_err(
                Attr::ShutdownStatus,
                &raw,
                "one of nop, crashed, halted, poweroff, restart",
            )
        })
    }

    /// `x100`, or `Unknown`.
    pub fn family(&self) -> Result<String> {
        Ok(strip_newline(&self.read_raw(Attr::Family)?).to_owned())
    }

    /// `A0`, `B0`, `B1`, `C0`, or `??`.
    pub fn stepping(&self) -> Result<String> {
        Ok(strip_newline(&self.read_raw(Attr::Stepping)?).to_owned())
    }

    /// The stored kernel command line; `None` if never set (empty).
    pub fn cmdline(&self) -> Result<Option<String>> {
        self.read_opt_string(Attr::Cmdline)
    }

    /// The image name relative to `lib/firmware`; `None` if unset.
    pub fn firmware(&self) -> Result<Option<String>> {
        self.read_opt_string(Attr::Firmware)
    }

    /// The ramdisk name relative to `lib/firmware`; `None` if unset.
    pub fn ramdisk(&self) -> Result<Option<String>> {
        self.read_opt_string(Attr::Ramdisk)
    }

    /// `None` if never set.
    pub fn bootmode(&self) -> Result<Option<BootMode>> {
        match self.read_opt_string(Attr::Bootmode)? {
            None => Ok(None),
            Some(s) => BootMode::from_sysfs(s.trim())
                .map(Some)
                .ok_or_else(|| self.parse_err(Attr::Bootmode, &s, "linux or elf")),
        }
    }

    /// The card kernel virtual address of `__log_buf`; `None` if unset.
    pub fn log_buf_addr(&self) -> Result<Option<u64>> {
        self.read_ptr(Attr::LogBufAddr)
    }

    /// The card kernel virtual address of the `log_buf_len` variable (an
    /// address, despite the name); `None` if unset.
    pub fn log_buf_len(&self) -> Result<Option<u64>> {
        self.read_ptr(Attr::LogBufLen)
    }

    fn read_ptr(&self, attr: Attr) -> Result<Option<u64>> {
        let raw = self.read_raw(attr)?;
        parse_kernel_ptr(&raw).map_err(|()| self.parse_err(attr, &raw, "a hexadecimal address"))
    }

    /// The card's IP address: the `ipaddr` attribute, or, where it does not
    /// exist (a real 3.13 kernel), the `ifcfg=static;address,A` word of
    /// `cmdline`. `None` if no address is configured.
    pub fn ipaddr(&self) -> Result<Option<Ipv4Addr>> {
        match self.read_opt_string(Attr::Ipaddr) {
            Ok(None) => Ok(None),
            Ok(Some(s)) => s
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| self.parse_err(Attr::Ipaddr, &s, "an IPv4 address")),
            Err(e) if e.is_not_found() => Ok(self.cmdline()?.as_deref().and_then(ipaddr_from_cmdline)),
            Err(e) => Err(e),
        }
    }

    /// Every sysfs attribute at once. Fails only if `state` cannot be read;
    /// other attributes that fail are `None` and listed in `problems`.
    pub fn info(&self) -> Result<CardInfo> {
        let state = self.state()?;
        let mut problems = Vec::new();
        let p = &mut problems;
        let shutdown_status = keep(Attr::ShutdownStatus, self.shutdown_status().map(Some), p);
        let family = keep(Attr::Family, self.family().map(Some), p);
        let stepping = keep(Attr::Stepping, self.stepping().map(Some), p);
        let cmdline = keep(Attr::Cmdline, self.cmdline(), p);
        let firmware = keep(Attr::Firmware, self.firmware(), p);
        let ramdisk = keep(Attr::Ramdisk, self.ramdisk(), p);
        let bootmode = keep(Attr::Bootmode, self.bootmode(), p);
        let log_buf_addr = keep(Attr::LogBufAddr, self.log_buf_addr(), p);
        let log_buf_len = keep(Attr::LogBufLen, self.log_buf_len(), p);
        let ipaddr = keep(Attr::Ipaddr, self.ipaddr(), p);
        Ok(CardInfo {
            id: self.id,
            name: self.name.clone(),
            state,
            shutdown_status,
            family,
            stepping,
            cmdline,
            firmware,
            ramdisk,
            bootmode,
            log_buf_addr,
            log_buf_len,
            ipaddr,
            problems,
        })
    }

    // ---- debugfs -------------------------------------------------------

    /// The two-character POST code; `None` if the file is empty. Card
    /// controlled: non-printable bytes are shown as `\xNN`.
    pub fn post_code(&self) -> Result<Option<String>> {
        let raw = self.read_debug(DebugFile::PostCode)?;
        let trimmed = raw.strip_suffix(b"\n").unwrap_or(&raw);
        Ok((!trimmed.is_empty()).then(|| escape_untrusted(trimmed)))
    }

    /// The `smpt` dump as text (invalid UTF-8 replaced).
    pub fn smpt_raw(&self) -> Result<String> {
        Ok(String::from_utf8_lossy(&self.read_debug(DebugFile::Smpt)?).into_owned())
    }

    /// The `dp` (device page) dump as text (invalid UTF-8 replaced).
    pub fn dp_raw(&self) -> Result<String> {
        Ok(String::from_utf8_lossy(&self.read_debug(DebugFile::Dp)?).into_owned())
    }

    /// The `vdev_info` dump as text (invalid UTF-8 replaced).
    pub fn vdev_info_raw(&self) -> Result<String> {
        Ok(String::from_utf8_lossy(&self.read_debug(DebugFile::VdevInfo)?).into_owned())
    }

    /// The `vdev_info` dump, parsed: the host driver's record of the card's
    /// virtio devices and their rings.
    pub fn vdev_info(&self) -> Result<Vec<crate::debugfs::VdevInfo>> {
        Ok(crate::debugfs::parse_vdev_info(&self.vdev_info_raw()?))
    }

    /// The `smpt` dump, parsed (escaped and bounded; see [`crate::debugfs`]).
    pub fn smpt(&self) -> Result<SmptSummary> {
        Ok(parse_smpt(&self.smpt_raw()?))
    }

    /// The `dp` dump, parsed (escaped and bounded; see [`crate::debugfs`]).
    pub fn dp(&self) -> Result<DpSummary> {
        Ok(parse_dp(&self.dp_raw()?))
    }

    /// The raw card log buffer (empty unless the card is online or shutting
    /// down). Card controlled; decode with [`crate::klog`].
    pub fn log_buf_raw(&self) -> Result<Vec<u8>> {
        self.read_debug(DebugFile::LogBuf)
    }

    /// Force-stops and resets the card by *reading* debugfs `soft_reset`.
    pub fn soft_reset(&self) -> Result<()> {
        self.read_debug(DebugFile::SoftReset).map(drop)
    }

    // ---- writers -------------------------------------------------------

    pub fn set_bootmode(&self, mode: BootMode) -> Result<()> {
        self.write_raw(Attr::Bootmode, mode.as_str())
    }

    /// `name` is relative to `lib/firmware`; names that would leave it are
    /// refused before reaching the driver.
    pub fn set_firmware(&self, name: &str) -> Result<()> {
        check_firmware_name(name)?;
        self.write_raw(Attr::Firmware, name)
    }

    /// `name` is relative to `lib/firmware`; names that would leave it are
    /// refused before reaching the driver.
    pub fn set_ramdisk(&self, name: &str) -> Result<()> {
        check_firmware_name(name)?;
        self.write_raw(Attr::Ramdisk, name)
    }

    /// Sets the kernel command line (empty clears it). One line, at most
    /// [`CMDLINE_MAX`] bytes.
    pub fn set_cmdline(&self, cmdline: &str) -> Result<()> {
        let invalid = |reason| Error::InvalidValue {
            card: self.name.clone(),
            attr: Attr::Cmdline,
            value: cmdline.to_owned(),
            reason,
        };
        if cmdline.contains(['\n', '\0']) {
            return Err(invalid("the command line must be one line without NUL bytes"));
        }
        if cmdline.len() > CMDLINE_MAX {
            return Err(invalid(
                "the command line is longer than 2000 bytes and would be truncated on boot",
            ));
        }
        self.write_raw(Attr::Cmdline, cmdline)
    }

    /// Writes the address as hex (what the driver's `kstrtoul(.., 16, ..)`
    /// expects).
    pub fn set_log_buf_addr(&self, addr: u64) -> Result<()> {
        self.write_raw(Attr::LogBufAddr, &format_hex(addr))
    }

    /// Writes the address of the card's `log_buf_len` variable as hex.
    pub fn set_log_buf_len(&self, addr: u64) -> Result<()> {
        self.write_raw(Attr::LogBufLen, &format_hex(addr))
    }

    /// `state` ← `boot`. Synchronous on the real driver: returns after the
    /// image is loaded (state then reads `online`).
    pub fn boot(&self) -> Result<()> {
        self.write_raw(Attr::State, "boot")
    }

    /// `state` ← `reset`. Returns at once; wait for `offline` or
    /// `reset_failed` with [`Card::wait_for`].
    pub fn reset(&self) -> Result<()> {
        self.write_raw(Attr::State, "reset")
    }

    /// `state` ← `shutdown`. Silently does nothing unless the card is online
    /// and has published its shutdown doorbell.
    pub fn shutdown(&self) -> Result<()> {
        self.write_raw(Attr::State, "shutdown")
    }
}

/// Parses `state` contents (surrounding whitespace tolerated).
pub(crate) fn parse_state(raw: &str) -> Option<MicState> {
    MicState::from_sysfs(raw.trim())
}

/// The value of an optional attribute for a snapshot; a failure is recorded.
fn keep<T>(attr: Attr, r: Result<Option<T>>, problems: &mut Vec<(Attr, String)>) -> Option<T> {
    r.unwrap_or_else(|e| {
        problems.push((attr, report(&e)));
        None
    })
}

/// Which step of a write failed: opening is an I/O matter, the write itself
/// is the driver's answer.
enum Failed {
    Open(io::Error),
    Io(io::Error),
}

/// `fs::read`, bounded by `limit`; errors mapped with `hint`.
fn read_file(limit: IoLimit, path: &Path, hint: &'static str) -> Result<Vec<u8>> {
    let p = path.to_owned();
    bounded(limit, path, move || fs::read(&p))?.map_err(|e| Error::io(path, e, hint))
}
