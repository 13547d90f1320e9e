//! The one table of the host driver's sysfs and debugfs files: names, modes,
//! and the rules by which each is shown and stored. The kernel module builds
//! its attribute groups from it, micemu serves its FUSE trees from it, and
//! libmic names files by it, so a file cannot exist in one and not another,
//! or parse differently.
//!
//! [`parse_store`] applies a file's store rule to the bytes of a `write(2)`
//! and answers with the driver's errno; the caller then acts on the value.

use core::fmt;

use crate::abi::BootMode;
use crate::errno;
use crate::host::sysfs::{StateRequest, parse_hex_u64, parse_state_request, strip_newline};

/// How a file's content is produced on read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Show {
    /// A value the driver knows, then `"\n"` (`state`, `family`, ...).
    Line,
    /// The stored string and `"\n"`, or nothing if it was never set.
    Stored,
    /// The stored number as the kernel's `%p` ([`PercentP`]), then `"\n"`.
    Pointer,
    /// Raw bytes (`log_buf`).
    Raw,
    /// A multi-line text dump (`smpt`, `dp`, `vdev_info`).
    Dump,
    /// Reading it performs an action and shows nothing (`soft_reset`).
    Action,
}

/// What a write does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    /// No store method: the file is read-only.
    None,
    /// "boot", "reset" or "shutdown" ([`StateRequest`]); anything else EINVAL.
    StateWord,
    /// Any string; exactly one trailing newline is stripped.
    Text,
    /// The kernel command line: [`Store::Text`], at most [`CMDLINE_STORE_MAX`]
    /// bytes (after the newline is stripped); longer is E2BIG.
    Cmdline,
    /// "linux" or "elf"; anything else EINVAL.
    BootMode,
    /// A hexadecimal number (`kstrtoul(…, 16)`): EINVAL or ERANGE.
    Hex,
}

/// One file of a card's directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileSpec {
    /// File name inside `micN/`.
    pub name: &'static str,
    /// Permission bits.
    pub mode: u16,
    /// Read rule.
    pub show: Show,
    /// Write rule.
    pub store: Store,
}

impl FileSpec {
    /// A file named `name` with permission bits `mode` and the given rules.
    #[must_use]
    pub const fn new(name: &'static str, mode: u16, show: Show, store: Store) -> Self {
        Self {
            name,
            mode,
            show,
            store,
        }
    }

    /// Whether the driver accepts writes to this file.
    #[must_use]
    pub const fn is_writable(&self) -> bool {
        !matches!(self.store, Store::None)
    }
}

/// A sysfs attribute under `sys/class/mic/micN/`: the 3.13 set plus the
/// read-only `ipaddr`, derived from `cmdline`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Attr {
    /// "x100" or "Unknown".
    Family,
    /// "A0", "B0", "B1", "C0" or "??".
    Stepping,
    /// The card state; writes request boot, reset or shutdown.
    State,
    /// What the card last reported about its shutdown.
    ShutdownStatus,
    /// Kernel command line appended after `mem=`.
    Cmdline,
    /// OS image name under the firmware directory.
    Firmware,
    /// Initramfs name under the firmware directory.
    Ramdisk,
    /// "linux" or "elf".
    Bootmode,
    /// Card virtual address of `__log_buf`.
    LogBufAddr,
    /// Card virtual address of `log_buf_len`.
    LogBufLen,
    /// The card's address from `cmdline`'s `ifcfg=static;address,A` (not
    /// on a real 3.13 kernel; tools fall back to parsing `cmdline`).
    Ipaddr,
}

impl Attr {
    /// Every attribute, in the order the directory lists them.
    pub const ALL: [Attr; 11] = [
        Attr::Family,
        Attr::Stepping,
        Attr::State,
        Attr::ShutdownStatus,
        Attr::Cmdline,
        Attr::Firmware,
        Attr::Ramdisk,
        Attr::Bootmode,
        Attr::LogBufAddr,
        Attr::LogBufLen,
        Attr::Ipaddr,
    ];

    /// The attribute's row of the table.
    #[must_use]
    pub const fn spec(self) -> FileSpec {
        use Show::{Line, Pointer, Stored};
        match self {
            Attr::Family => FileSpec::new("family", 0o444, Line, Store::None),
            Attr::Stepping => FileSpec::new("stepping", 0o444, Line, Store::None),
            Attr::State => FileSpec::new("state", 0o644, Line, Store::StateWord),
            Attr::ShutdownStatus => FileSpec::new("shutdown_status", 0o444, Line, Store::None),
            Attr::Cmdline => FileSpec::new("cmdline", 0o644, Stored, Store::Cmdline),
            Attr::Firmware => FileSpec::new("firmware", 0o644, Stored, Store::Text),
            Attr::Ramdisk => FileSpec::new("ramdisk", 0o644, Stored, Store::Text),
            Attr::Bootmode => FileSpec::new("bootmode", 0o644, Stored, Store::BootMode),
            Attr::LogBufAddr => FileSpec::new("log_buf_addr", 0o644, Pointer, Store::Hex),
            Attr::LogBufLen => FileSpec::new("log_buf_len", 0o644, Pointer, Store::Hex),
            Attr::Ipaddr => FileSpec::new("ipaddr", 0o444, Line, Store::None),
        }
    }

    /// The file name in the card's sysfs directory.
    #[must_use]
    pub const fn file_name(self) -> &'static str {
        self.spec().name
    }

    /// Whether the driver accepts writes to this attribute.
    #[must_use]
    pub const fn is_writable(self) -> bool {
        self.spec().is_writable()
    }

    /// The attribute named `name`.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.file_name() == name)
    }
}

impl fmt::Display for Attr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.file_name())
    }
}

/// A debugfs file under `sys/kernel/debug/mic_host/micN/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DebugFile {
    /// The card kernel's log buffer, raw.
    LogBuf,
    /// The two POST code characters.
    PostCode,
    /// The SMPT entries.
    Smpt,
    /// The device page: bootparam and every device descriptor.
    Dp,
    /// The virtio devices and their rings.
    VdevInfo,
    /// Reading this file force-resets the card.
    SoftReset,
}

impl DebugFile {
    /// Every debugfs file, in directory order.
    pub const ALL: [DebugFile; 6] = [
        DebugFile::LogBuf,
        DebugFile::PostCode,
        DebugFile::Smpt,
        DebugFile::Dp,
        DebugFile::VdevInfo,
        DebugFile::SoftReset,
    ];

    /// The file's row of the table. debugfs is root's: every file is
    /// readable by its owner only (and reading `soft_reset` resets the card).
    #[must_use]
    pub const fn spec(self) -> FileSpec {
        match self {
            DebugFile::LogBuf => FileSpec::new("log_buf", 0o400, Show::Raw, Store::None),
            DebugFile::PostCode => FileSpec::new("post_code", 0o400, Show::Line, Store::None),
            DebugFile::Smpt => FileSpec::new("smpt", 0o400, Show::Dump, Store::None),
            DebugFile::Dp => FileSpec::new("dp", 0o400, Show::Dump, Store::None),
            DebugFile::VdevInfo => FileSpec::new("vdev_info", 0o400, Show::Dump, Store::None),
            DebugFile::SoftReset => FileSpec::new("soft_reset", 0o400, Show::Action, Store::None),
        }
    }

    /// The file name in the card's debugfs directory.
    #[must_use]
    pub const fn file_name(self) -> &'static str {
        self.spec().name
    }

    /// The file named `name`.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.file_name() == name)
    }
}

impl fmt::Display for DebugFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.file_name())
    }
}

/// Permission bits of every debugfs directory: debugfs is mounted 0700
/// (the kernel's `DEBUGFS_DEFAULT_MODE`), so nobody but root reaches a
/// file below it whatever the file's own mode. micemu serves each debugfs
/// directory with this mode and refuses every request from anyone else.
pub const DEBUGFS_DIR_MODE: u16 = 0o700;

/// The most a sysfs store receives from one `write(2)`: kernfs cuts a
/// longer write to one page, and `write(2)` returns this many bytes.
pub const STORE_MAX: usize = 4096;

/// The longest `cmdline` a store accepts: what the card's command-line
/// buffer holds without its NUL.
pub const CMDLINE_STORE_MAX: usize = crate::host::boot::CMDLINE_SIZE - 1;

/// The rows of every sysfs attribute, in [`Attr::ALL`] order.
pub const SYSFS_FILES: [FileSpec; Attr::ALL.len()] = {
    let mut out = [Attr::Family.spec(); Attr::ALL.len()];
    let mut i = 0;
    while i < out.len() {
        out[i] = Attr::ALL[i].spec();
        i += 1;
    }
    out
};

/// The rows of every debugfs file, in [`DebugFile::ALL`] order.
pub const DEBUGFS_FILES: [FileSpec; DebugFile::ALL.len()] = {
    let mut out = [DebugFile::LogBuf.spec(); DebugFile::ALL.len()];
    let mut i = 0;
    while i < out.len() {
        out[i] = DebugFile::ALL[i].spec();
        i += 1;
    }
    out
};

/// The value a store carries, after its file's rule accepted it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreValue<'a> {
    /// A `state` request.
    State(StateRequest),
    /// A string, its one trailing newline stripped.
    Text(&'a str),
    /// A boot mode.
    BootMode(BootMode),
    /// A hexadecimal number.
    Hex(u64),
}

/// What a store sees of the bytes of one `write(2)`: at most
/// [`STORE_MAX`] of them (kernfs cuts the rest), read as a C string (the
/// stores compare with `sysfs_streq` and copy with `strncpy`, which end at
/// the first NUL).
#[must_use]
pub fn store_input(data: &[u8]) -> &[u8] {
    let data = &data[..data.len().min(STORE_MAX)];
    match data.iter().position(|&b| b == 0) {
        Some(nul) => &data[..nul],
        None => data,
    }
}

/// Applies `spec`'s store rule to the bytes of one `write(2)` (as
/// [`store_input`] cuts them); the error is the errno (positive) the store
/// returns.
pub fn parse_store<'a>(spec: &FileSpec, data: &'a [u8]) -> Result<StoreValue<'a>, i32> {
    let data = store_input(data);
    let text = || core::str::from_utf8(data).map_err(|_| errno::EINVAL);
    match spec.store {
        Store::None => Err(errno::EACCES),
        Store::StateWord => parse_state_request(text()?)
            .map(StoreValue::State)
            .ok_or(errno::EINVAL),
        Store::Text => Ok(StoreValue::Text(strip_newline(text()?))),
        Store::Cmdline => match strip_newline(text()?) {
            line if line.len() > CMDLINE_STORE_MAX => Err(errno::E2BIG),
            line => Ok(StoreValue::Text(line)),
        },
        Store::BootMode => BootMode::from_sysfs(text()?)
            .map(StoreValue::BootMode)
            .ok_or(errno::EINVAL),
        Store::Hex => parse_hex_u64(text()?)
            .map(StoreValue::Hex)
            .map_err(crate::host::sysfs::ParseHexError::errno),
    }
}

/// The kernel's `%p` of the 3.13 era: 16 zero-padded hex digits, or
/// `(null)` right-aligned in the same width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PercentP(pub u64);

impl fmt::Display for PercentP {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            write!(f, "{:>16}", "(null)")
        } else {
            write!(f, "{:016x}", self.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;
    use std::vec::Vec;

    #[test]
    fn names_are_unique_and_round_trip() {
        let mut names: Vec<_> = Attr::ALL.iter().map(|a| a.file_name()).collect();
        names.extend(DebugFile::ALL.iter().map(|d| d.file_name()));
        let n = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), n);
        for a in Attr::ALL {
            assert_eq!(Attr::from_name(a.file_name()), Some(a));
            assert_eq!(a.to_string(), a.file_name());
            // Writable exactly when the mode has the owner's write bit.
            assert_eq!(a.is_writable(), a.spec().mode & 0o200 != 0, "{a}");
        }
        for d in DebugFile::ALL {
            assert_eq!(DebugFile::from_name(d.file_name()), Some(d));
            assert!(!d.spec().is_writable());
            // Root's: no bit for group or others, on files or directories.
            assert_eq!(d.spec().mode & 0o077, 0, "{d}");
        }
        assert_eq!(DEBUGFS_DIR_MODE, 0o700);
        assert_eq!(Attr::from_name("nope"), None);
    }

    #[test]
    fn store_rules() {
        let st = Attr::State.spec();
        assert_eq!(
            parse_store(&st, b"boot\n"),
            Ok(StoreValue::State(StateRequest::Boot))
        );
        assert_eq!(parse_store(&st, b"suspend"), Err(errno::EINVAL));
        assert_eq!(parse_store(&st, &[0xFF]), Err(errno::EINVAL));
        let c = Attr::Cmdline.spec();
        assert_eq!(parse_store(&c, b"quiet\n\n"), Ok(StoreValue::Text("quiet\n")));
        let b = Attr::Bootmode.spec();
        assert_eq!(parse_store(&b, b"elf\n"), Ok(StoreValue::BootMode(BootMode::Elf)));
        assert_eq!(parse_store(&b, b"flash"), Err(errno::EINVAL));
        let h = Attr::LogBufAddr.spec();
        assert_eq!(parse_store(&h, b"0x10\n"), Ok(StoreValue::Hex(16)));
        assert_eq!(parse_store(&h, b"zz"), Err(errno::EINVAL));
        assert_eq!(parse_store(&h, b"1ffffffffffffffff"), Err(errno::ERANGE));
        assert_eq!(parse_store(&Attr::Family.spec(), b"x"), Err(errno::EACCES));
    }

    #[test]
    fn stores_see_a_c_string_of_at_most_a_page() {
        // sysfs_streq: one trailing newline, no more.
        let b = Attr::Bootmode.spec();
        assert_eq!(parse_store(&b, b"linux\n\n"), Err(errno::EINVAL));
        assert_eq!(
            parse_store(&b, b"linux\n"),
            Ok(StoreValue::BootMode(BootMode::Linux))
        );
        // A store ends at the first NUL: nothing after it is compared or kept.
        assert_eq!(
            parse_store(&b, b"elf\0junk"),
            Ok(StoreValue::BootMode(BootMode::Elf))
        );
        let st = Attr::State.spec();
        assert_eq!(
            parse_store(&st, b"boot\0"),
            Ok(StoreValue::State(StateRequest::Boot))
        );
        let fw = Attr::Firmware.spec();
        assert_eq!(
            parse_store(&fw, b"mic/uos.img\0../../etc/passwd"),
            Ok(StoreValue::Text("mic/uos.img"))
        );
        assert_eq!(parse_store(&fw, b"\0mic/uos.img"), Ok(StoreValue::Text("")));
        assert_eq!(
            parse_store(&Attr::LogBufAddr.spec(), b"10\0zz"),
            Ok(StoreValue::Hex(16))
        );
        // kernfs hands a store at most a page of a longer write.
        let long = [b'a'; STORE_MAX + 100];
        assert_eq!(store_input(&long).len(), STORE_MAX);
        match parse_store(&fw, &long) {
            Ok(StoreValue::Text(t)) => assert_eq!(t.len(), STORE_MAX),
            other => panic!("{other:?}"),
        }
        assert_eq!(store_input(b"ab\0cd\0"), b"ab");
    }

    #[test]
    fn cmdline_longer_than_the_card_buffer_is_e2big() {
        let c = Attr::Cmdline.spec();
        let max = "x".repeat(CMDLINE_STORE_MAX);
        assert_eq!(
            parse_store(&c, max.as_bytes()),
            Ok(StoreValue::Text(max.as_str()))
        );
        // The newline does not count.
        let with_nl = std::format!("{max}\n");
        assert_eq!(
            parse_store(&c, with_nl.as_bytes()),
            Ok(StoreValue::Text(max.as_str()))
        );
        let over = "x".repeat(CMDLINE_STORE_MAX + 1);
        assert_eq!(parse_store(&c, over.as_bytes()), Err(errno::E2BIG));
        assert_eq!(CMDLINE_STORE_MAX, 2047);
    }

    #[test]
    fn percent_p() {
        assert_eq!(PercentP(0).to_string(), "          (null)");
        assert_eq!(PercentP(0xffff_ffff_81c3_d560).to_string(), "ffffffff81c3d560");
    }
}
