//! The error type of the sysfs/debugfs client, with the driver's errno
//! explained in words per attribute.

use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mic_core::abi::MicState;
use mic_core::host::attrs::CMDLINE_STORE_MAX;

use crate::attrs::{Attr, quote_value};

/// Result alias for this crate's sysfs/debugfs operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Hint for a permission error on a sysfs attribute.
pub const HINT_SYSFS: &str = "run as root (the mic sysfs attributes are writable by root only), \
                              or point --root/MIC_ROOT at a micemu root you own";
/// Hint for a permission error on a debugfs file.
pub const HINT_DEBUGFS: &str = "run as root (debugfs is readable by root only), \
                                or point --root/MIC_ROOT at a micemu root you own";
/// Hint for a permission error elsewhere under the root.
pub const HINT_OTHER: &str = "run as root or fix the permissions of the file";

/// Everything that can go wrong talking to a card's sysfs and debugfs.
///
/// Not `#[non_exhaustive]`: the tools map every variant to an exit code
/// with an exhaustive `match`, so a new variant cannot go unmapped.
///
/// `Display` never repeats the `source` of a variant; print the chain
/// ([`report`], or anyhow's `{:#}`) to see the cause.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `sys/class/mic` does not exist under the root.
    #[error(
        "{} does not exist: the mic_host driver is not loaded, or micemu is not running \
         for this root (start it with `micemu --root DIR`)",
        looked_in.display()
    )]
    DriverAbsent { looked_in: PathBuf },

    /// `sys/kernel/debug/mic_host` does not exist under the root.
    #[error(
        "{} does not exist: debugfs is not mounted (mount -t debugfs none /sys/kernel/debug) \
         or the mic_host driver is not loaded",
        looked_in.display()
    )]
    DebugfsAbsent { looked_in: PathBuf },

    /// A card selector matched no card.
    #[error("no such card {} (known cards: {})", quote_value(name), known_list(known))]
    NoSuchCard { name: String, known: Vec<String> },

    /// The driver refused a write; `meaning` explains `errno` for `attr`.
    #[error(
        "{card}: writing {} to {attr} was rejected: {meaning} ({})",
        quote_value(value),
        errno_text(*errno)
    )]
    Rejected {
        card: String,
        attr: Attr,
        value: String,
        errno: i32,
        meaning: String,
    },

    /// A value was refused before reaching the driver.
    #[error("{card}: refusing to write {} to {attr}: {reason}", quote_value(value))]
    InvalidValue {
        card: String,
        attr: Attr,
        value: String,
        reason: &'static str,
    },

    /// A firmware or ramdisk name that would leave `lib/firmware`.
    #[error("bad firmware name {}: {reason}", quote_value(name))]
    BadFirmwareName { name: String, reason: &'static str },

    /// EACCES/EPERM.
    #[error("permission denied: {}: {hint}", path.display())]
    PermissionDenied { path: PathBuf, hint: &'static str },

    /// ENOTCONN from a FUSE mount whose server has gone.
    #[error(
        "{}: the micemu serving this root has exited (stale FUSE mount); \
         unmount it with `fusermount3 -u` on its mount point and start micemu again",
        path.display()
    )]
    EmulatorGone { path: PathBuf },

    /// File contents that do not parse as the attribute's type.
    #[error("{}: unexpected contents {}, expected {expected}", path.display(), quote_value(value))]
    Parse {
        path: PathBuf,
        value: String,
        expected: &'static str,
    },

    /// [`crate::Card::wait_for`] ran out of time.
    #[error(
        "{card}: timed out after {waited:.1?} waiting for a state change (last state: {})",
        last_state.as_str()
    )]
    Timeout {
        card: String,
        waited: Duration,
        last_state: MicState,
    },

    /// The card stayed `online` after a shutdown request: its OS is still
    /// booting or never published its shutdown doorbell.
    #[error(
        "{card}: the card OS did not take the shutdown request (still booting, or no shutdown \
         doorbell published): reset the card instead"
    )]
    ShutdownIgnored { card: String },

    /// A reset ended in `reset_failed`.
    #[error("{card}: the reset failed: the card's bootstrap did not come back (state reset_failed)")]
    ResetFailed { card: String },

    /// Polling the state file keeps reporting events without a change.
    #[error(
        "{}: poll reports events continuously without a state change; \
         the file does not support sysfs notification",
        path.display()
    )]
    PollUnsupported { path: PathBuf },

    /// A System.map lacks symbols needed to locate the card's log buffer.
    #[error("{}: symbol(s) {} not found in the System.map", path.display(), missing.join(", "))]
    SystemMap { path: PathBuf, missing: Vec<String> },

    /// A file of the driver did not answer within its deadline: the driver
    /// (or the micemu serving the root) is hung or stopped.
    #[error(
        "{}: no answer from the driver after {waited:.1?}: the mic driver (or the micemu serving \
         this root) is hung or stopped",
        path.display()
    )]
    NoAnswer { path: PathBuf, waited: Duration },

    /// The card kernel panicked (its log says so) while it was waited for.
    #[error("{card}: the card kernel panicked: \"{line}\"")]
    CardCrashed {
        card: String,
        /// The panic line from the card log, escaped for display.
        line: String,
    },

    /// Any other I/O error on `path`; the OS error is the `source` (shown
    /// after the path by [`report`]: `path: No such file or directory`).
    #[error("{}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// Maps an I/O error on `path` to the typed variants: permission errors
    /// get a hint, ENOTCONN means a dead emulator, everything else is `Io`.
    pub(crate) fn io(path: &Path, source: io::Error, hint: &'static str) -> Self {
        match source.raw_os_error() {
            Some(libc::EACCES | libc::EPERM) => Error::PermissionDenied {
                path: path.to_owned(),
                hint,
            },
            Some(libc::ENOTCONN) => Error::EmulatorGone {
                path: path.to_owned(),
            },
            _ if source.kind() == io::ErrorKind::PermissionDenied => Error::PermissionDenied {
                path: path.to_owned(),
                hint,
            },
            _ => Error::Io {
                path: path.to_owned(),
                source,
            },
        }
    }

    /// Whether this is an I/O error of kind `NotFound` (a missing file).
    #[must_use]
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }

    /// Whether the driver (or the micemu serving the root) has gone away:
    /// its files are gone or their connection is dead. A tool watching
    /// cards should re-enumerate them rather than trust open files.
    #[must_use]
    pub fn is_driver_gone(&self) -> bool {
        match self {
            Error::DriverAbsent { .. } | Error::EmulatorGone { .. } => true,
            Error::Io { source, .. } => matches!(
                source.raw_os_error(),
                Some(libc::ENOTCONN | libc::ENODEV | libc::ENXIO | libc::ENOENT | libc::ESTALE | libc::EBADF)
            ),
            _ => false,
        }
    }

    /// The OS errno behind this error, if there is one.
    #[must_use]
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Rejected { errno, .. } => Some(*errno),
            Error::PermissionDenied { .. } => Some(libc::EACCES),
            Error::EmulatorGone { .. } => Some(libc::ENOTCONN),
            Error::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// An error and its causes on one line, `: `-separated (what anyhow's
/// `{:#}` prints), for places that show an error without anyhow. A cause
/// whose text the line already ends with is not repeated.
#[must_use]
pub fn report(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !text.is_empty() && !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

fn known_list(known: &[String]) -> String {
    if known.is_empty() {
        "none".to_owned()
    } else {
        known.join(", ")
    }
}

/// The symbolic name of the errnos a sysfs store can return, else the number.
#[must_use]
pub fn errno_name(errno: i32) -> Option<&'static str> {
    Some(match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::EIO => "EIO",
        libc::ENXIO => "ENXIO",
        libc::E2BIG => "E2BIG",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::ENODEV => "ENODEV",
        libc::EINVAL => "EINVAL",
        libc::EFBIG => "EFBIG",
        libc::ENOSPC => "ENOSPC",
        libc::ERANGE => "ERANGE",
        libc::EAGAIN => "EAGAIN",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::ENOTCONN => "ENOTCONN",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        _ => return None,
    })
}

fn errno_text(errno: i32) -> String {
    let mut s = String::new();
    if let Some(name) = errno_name(errno) {
        s.push_str(name);
    } else {
        let _ = write!(s, "errno {errno}");
    }
    s
}

/// Explains in words why the driver returned `errno` for a write of `value`
/// to `attr`. `firmware_dir` is the root's `lib/firmware`, named in messages
/// about missing files.
#[must_use]
pub fn explain_errno(attr: Attr, value: &str, errno: i32, firmware_dir: &Path) -> String {
    let fw = firmware_dir.display();
    let value = value.trim_end_matches('\n');
    let specific = match (attr, errno) {
        (Attr::State, libc::EINVAL) if value == "boot" => {
            Some("card is not offline (boot only from offline) or the image could not be loaded".to_owned())
        }
        (Attr::State, libc::EINVAL) if !matches!(value, "reset" | "shutdown" | "suspend") => {
            Some("state accepts only boot, reset or shutdown".to_owned())
        }
        (Attr::State, libc::EINVAL) => Some(format!(
            "the driver does not accept {value} in the card's current state"
        )),
        (Attr::State, libc::ENOENT) => Some(format!(
            "the firmware or ramdisk file set for this card was not found under {fw}"
        )),
        (Attr::State, libc::EISDIR) => Some(format!(
            "the firmware or ramdisk name set for this card is a directory under {fw}, not an image file"
        )),
        (Attr::State, libc::ENOTDIR) => Some(format!(
            "the firmware or ramdisk name set for this card goes through a file under {fw} as if it were a directory"
        )),
        (Attr::State, libc::ENAMETOOLONG) => Some(format!(
            "the firmware or ramdisk name set for this card is too long for a path under {fw} \
             (at most 255 bytes per component, 4095 in all)"
        )),
        (Attr::State, libc::E2BIG) => Some(format!(
            "the command line does not fit in the card's {CMDLINE_STORE_MAX}-byte boot command line \
             once the driver puts ` mem=<MiB>M` before it: shorten cmdline"
        )),
        (Attr::State, libc::ENOMEM | libc::EFBIG | libc::ENOSPC) => {
            Some("the image, command line or ramdisk does not fit in the card's memory aperture".to_owned())
        }
        (Attr::State, libc::EBUSY) => {
            Some("the card is busy (a reset or another boot is in progress)".to_owned())
        }
        (Attr::State, libc::EIO | libc::ETIMEDOUT) => {
            Some("the card did not respond (bootstrap not ready after reset)".to_owned())
        }
        (Attr::Bootmode, libc::EINVAL) => Some("bootmode must be linux or elf".to_owned()),
        (Attr::Firmware | Attr::Ramdisk, libc::ENOENT) => Some(format!("firmware file not found under {fw}")),
        (Attr::Firmware | Attr::Ramdisk, libc::EINVAL) => {
            Some(format!("not a usable file name relative to {fw}"))
        }
        (Attr::Cmdline | Attr::Firmware | Attr::Ramdisk | Attr::Bootmode, libc::ENOMEM) => {
            Some("the driver could not allocate memory to store the value".to_owned())
        }
        (Attr::Cmdline, libc::E2BIG) => Some(format!(
            "the command line is longer than the {CMDLINE_STORE_MAX} bytes the card's boot command line holds"
        )),
        (Attr::Cmdline, libc::EINVAL) => Some("the command line is not valid UTF-8 text".to_owned()),
        (Attr::LogBufAddr | Attr::LogBufLen, libc::EINVAL | libc::ERANGE) => {
            Some("value must be a hexadecimal card kernel virtual address (from System.map)".to_owned())
        }
        (_, libc::EIO) if !attr.is_writable() => Some(format!("{attr} is read-only")),
        (_, libc::ENODEV | libc::ENXIO) => {
            Some("the card has gone away (device removed or driver unbinding)".to_owned())
        }
        _ => None,
    };
    specific.unwrap_or_else(|| {
        let os = io::Error::from_raw_os_error(errno).to_string();
        // "Invalid argument (os error 22)" -> "invalid argument"
        let os = os.split(" (os error").next().unwrap_or(&os).to_owned();
        let mut chars = os.chars();
        match chars.next() {
            Some(c) => c.to_lowercase().chain(chars).collect(),
            None => os,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meanings() {
        let fw = Path::new("/r/lib/firmware");
        assert!(explain_errno(Attr::State, "boot", libc::EINVAL, fw).contains("not offline"));
        assert!(explain_errno(Attr::State, "banana", libc::EINVAL, fw).contains("boot, reset"));
        assert_eq!(
            explain_errno(Attr::Bootmode, "bsd", libc::EINVAL, fw),
            "bootmode must be linux or elf"
        );
        assert_eq!(
            explain_errno(Attr::Firmware, "x", libc::ENOENT, fw),
            "firmware file not found under /r/lib/firmware"
        );
        assert_eq!(
            explain_errno(Attr::Cmdline, "x", libc::EDOM, fw),
            "numerical argument out of domain"
        );
    }

    #[test]
    fn boot_failures_are_told_apart() {
        let fw = Path::new("/r/lib/firmware");
        let boot = |errno| explain_errno(Attr::State, "boot", errno, fw);
        assert!(boot(libc::EISDIR).contains("is a directory under /r/lib/firmware"));
        assert!(boot(libc::ENAMETOOLONG).contains("too long for a path"));
        assert!(boot(libc::ENOTDIR).contains("as if it were a directory"));
        assert!(boot(libc::ENOENT).contains("not found under /r/lib/firmware"));
        assert!(boot(libc::E2BIG).contains("2047-byte boot command line"));
        // None of them is the card failing to answer.
        for errno in [
            libc::EISDIR,
            libc::ENAMETOOLONG,
            libc::ENOTDIR,
            libc::ENOENT,
            libc::E2BIG,
        ] {
            assert!(!boot(errno).contains("did not respond"), "{errno}");
            assert!(errno_name(errno).is_some(), "{errno}");
        }
        assert!(explain_errno(Attr::Cmdline, "x", libc::E2BIG, fw).contains("longer than the 2047 bytes"));
    }

    #[test]
    fn messages_are_lowercase_without_period() {
        let errs = [
            Error::DriverAbsent {
                looked_in: "/x/sys/class/mic".into(),
            },
            Error::NoSuchCard {
                name: "mic9".into(),
                known: vec![],
            },
            Error::Rejected {
                card: "mic0".into(),
                attr: Attr::State,
                value: "boot".into(),
                errno: libc::EINVAL,
                meaning: explain_errno(Attr::State, "boot", libc::EINVAL, Path::new("/")),
            },
            Error::Timeout {
                card: "mic0".into(),
                waited: Duration::from_millis(1500),
                last_state: MicState::Online,
            },
            Error::ShutdownIgnored { card: "mic0".into() },
            Error::ResetFailed { card: "mic0".into() },
        ];
        for e in errs {
            let m = e.to_string();
            assert!(!m.ends_with('.'), "{m}");
            let first = m.chars().next().unwrap();
            assert!(!first.is_uppercase(), "{m}");
        }
    }

    #[test]
    fn io_mapping() {
        let p = Path::new("/r/sys/class/mic/mic0/state");
        for errno in [libc::EACCES, libc::EPERM] {
            let e = Error::io(p, io::Error::from_raw_os_error(errno), HINT_SYSFS);
            assert!(matches!(e, Error::PermissionDenied { .. }), "{e:?}");
            assert!(e.to_string().starts_with("permission denied: /r/sys"), "{e}");
            assert!(e.to_string().contains("run as root"), "{e}");
        }
        let e = Error::io(p, io::Error::from_raw_os_error(libc::ENOTCONN), HINT_SYSFS);
        assert!(matches!(e, Error::EmulatorGone { .. }), "{e:?}");
        let e = Error::io(p, io::Error::from_raw_os_error(libc::ENOENT), HINT_SYSFS);
        assert!(e.is_not_found());
        assert_eq!(e.errno(), Some(libc::ENOENT));
    }

    #[test]
    fn io_errors_name_their_cause_once() {
        let e = Error::io(
            Path::new("/r/sys/class/mic/mic1/state"),
            io::Error::from_raw_os_error(libc::ENOENT),
            HINT_SYSFS,
        );
        let cause = io::Error::from_raw_os_error(libc::ENOENT).to_string();
        assert_eq!(report(&e), format!("/r/sys/class/mic/mic1/state: {cause}"));
        assert_eq!(report(&e).matches(&cause).count(), 1);
        // What micctl prints: anyhow's chain.
        let chained = format!("{:#}", anyhow::Error::new(e));
        assert_eq!(chained.matches(&cause).count(), 1, "{chained}");
        // The variant with a source does not repeat it in its own message.
        let e = Error::Io {
            path: "/p".into(),
            source: io::Error::other("the cause"),
        };
        assert!(!e.to_string().contains("the cause"), "{e}");
        assert_eq!(report(&e), "/p: the cause");
    }

    #[test]
    fn long_values_are_cut_in_messages() {
        let value = "x".repeat(5000);
        let errs = [
            Error::Rejected {
                card: "mic0".into(),
                attr: Attr::Cmdline,
                value: value.clone(),
                errno: libc::EINVAL,
                meaning: "m".into(),
            },
            Error::InvalidValue {
                card: "mic0".into(),
                attr: Attr::Cmdline,
                value: value.clone(),
                reason: "r",
            },
            Error::BadFirmwareName {
                name: value.clone(),
                reason: "r",
            },
            Error::NoSuchCard {
                name: value.clone(),
                known: vec![],
            },
            Error::Parse {
                path: "/p".into(),
                value: value.clone(),
                expected: "e",
            },
        ];
        for e in errs {
            let m = e.to_string();
            assert!(m.len() < 300, "{} bytes: {m}", m.len());
            assert!(m.contains("…\" (5000 bytes)"), "{m}");
        }
    }

    #[test]
    fn rejected_message() {
        let e = Error::Rejected {
            card: "mic0".into(),
            attr: Attr::Bootmode,
            value: "bsd".into(),
            errno: libc::EINVAL,
            meaning: "bootmode must be linux or elf".into(),
        };
        assert_eq!(
            e.to_string(),
            "mic0: writing \"bsd\" to bootmode was rejected: bootmode must be linux or elf (EINVAL)"
        );
    }
}
