//! `MicRoot`: the directory every path is resolved under (`--root`, `MIC_ROOT`).

use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use crate::card::Card;
use crate::error::{Error, HINT_OTHER, HINT_SYSFS, Result};
use crate::io::{IoLimit, bounded};

/// `"micN"` → N (the driver core's one rule: no sign, no leading zeros).
pub use mic_core::host::sysfs::{parse_card_id, parse_card_name};

/// The environment variable naming the root.
pub const MIC_ROOT_ENV: &str = "MIC_ROOT";
/// sysfs class directory, relative to the root.
pub const SYSFS_CLASS: &str = "sys/class/mic";
/// debugfs directory of the host driver, relative to the root.
pub const DEBUGFS_DIR: &str = "sys/kernel/debug/mic_host";
/// Firmware directory, relative to the root.
pub const FIRMWARE_DIR: &str = "lib/firmware";
/// The card OS image `micctrl -b` boots, relative to the firmware directory.
pub const DEFAULT_FIRMWARE: &str = "mic/uos.img";
/// The System.map mpssd reads, relative to the firmware directory.
pub const DEFAULT_SYSTEM_MAP: &str = "mic/System.map";

/// The root all card paths live under: `/` on a real system, the emulator's
/// directory under `micemu`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MicRoot {
    root: PathBuf,
    limit: IoLimit,
}

impl MicRoot {
    /// The root at `root`; accesses unbounded ([`IoLimit::NONE`]).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            limit: IoLimit::NONE,
        }
    }

    /// This root with every access to the driver's files under it bounded
    /// by `limit`; the cards it enumerates inherit the bound.
    #[must_use]
    pub fn with_io_limit(mut self, limit: IoLimit) -> Self {
        self.limit = limit;
        self
    }

    /// The bound on accesses under this root.
    #[must_use]
    pub fn io_limit(&self) -> IoLimit {
        self.limit
    }

    /// `flag` (from `--root`) if given, else `$MIC_ROOT` if set and non-empty,
    /// else `/`.
    #[must_use]
    pub fn from_env_or(flag: Option<PathBuf>) -> Self {
        Self::resolve(flag, std::env::var_os(MIC_ROOT_ENV))
    }

    fn resolve(flag: Option<PathBuf>, env: Option<OsString>) -> Self {
        let root = flag
            .or_else(|| env.filter(|v| !v.is_empty()).map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("/"));
        Self::new(root)
    }

    #[must_use]
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// `rel` resolved under the root.
    #[must_use]
    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.root.join(rel)
    }

    /// `<root>/sys/class/mic`.
    #[must_use]
    pub fn sysfs_class_dir(&self) -> PathBuf {
        self.join(SYSFS_CLASS)
    }

    /// `<root>/sys/kernel/debug/mic_host`.
    #[must_use]
    pub fn debugfs_dir(&self) -> PathBuf {
        self.join(DEBUGFS_DIR)
    }

    /// `<root>/lib/firmware`.
    #[must_use]
    pub fn firmware_dir(&self) -> PathBuf {
        self.join(FIRMWARE_DIR)
    }

    /// `<root>/lib/firmware/mic/System.map`.
    #[must_use]
    pub fn system_map(&self) -> PathBuf {
        self.firmware_dir().join(DEFAULT_SYSTEM_MAP)
    }

    /// `<root>/dev/micN`.
    #[must_use]
    pub fn dev_node(&self, id: u32) -> PathBuf {
        self.join(format!("dev/mic{id}"))
    }

    /// Resolves a firmware/ramdisk name (as written to the `firmware` and
    /// `ramdisk` attributes) to its file under `lib/firmware`, rejecting
    /// names that would leave it.
    pub fn resolve_firmware(&self, name: &str) -> Result<PathBuf> {
        check_firmware_name(name)?;
        Ok(self.firmware_dir().join(name))
    }

    /// The card with number `id`, without checking that it exists.
    #[must_use]
    pub fn card_by_id(&self, id: u32) -> Card {
        Card::new(self, id)
    }

    /// All cards, sorted by number. Only entries named `micN` (N decimal)
    /// count; anything else in the class directory is ignored.
    pub fn cards(&self) -> Result<Vec<Card>> {
        let mut ids = self.card_ids()?;
        ids.sort_unstable();
        ids.dedup();
        Ok(ids.into_iter().map(|id| Card::new(self, id)).collect())
    }

    fn card_ids(&self) -> Result<Vec<u32>> {
        let dir = self.sysfs_class_dir();
        let listed = dir.clone();
        let names = bounded(
            self.limit,
            &dir,
            move || -> std::result::Result<_, (bool, io::Error)> {
                let entries = fs::read_dir(&listed).map_err(|e| (true, e))?;
                entries
                    .map(|e| e.map(|e| e.file_name()).map_err(|e| (false, e)))
                    .collect::<std::result::Result<Vec<OsString>, _>>()
            },
        )?;
        let names = names.map_err(|(opening, e)| {
            if opening {
                class_dir_error(&dir, e)
            } else {
                Error::io(&dir, e, HINT_SYSFS)
            }
        })?;
        Ok(names
            .iter()
            .filter_map(|n| n.to_str().and_then(parse_card_name))
            .collect())
    }

    /// The card named by `sel`: `"mic3"` or `"3"`.
    pub fn card(&self, sel: &str) -> Result<Card> {
        let cards = self.cards()?;
        parse_card_id(sel)
            .and_then(|id| cards.iter().find(|c| c.id() == id).cloned())
            .ok_or_else(|| Error::NoSuchCard {
                name: sel.to_owned(),
                known: cards.iter().map(|c| c.name().to_owned()).collect(),
            })
    }

    /// The cards named by `sel`, or all cards if `sel` is `None` (the
    /// `micctrl` convention of an optional card argument).
    pub fn select(&self, sel: Option<&str>) -> Result<Vec<Card>> {
        match sel {
            Some(s) => Ok(vec![self.card(s)?]),
            None => self.cards(),
        }
    }
}

impl Default for MicRoot {
    fn default() -> Self {
        Self::new("/")
    }
}

fn class_dir_error(dir: &Path, e: io::Error) -> Error {
    if e.kind() == io::ErrorKind::NotFound {
        Error::DriverAbsent {
            looked_in: dir.to_owned(),
        }
    } else {
        Error::io(dir, e, HINT_OTHER)
    }
}

/// Checks a name relative to `lib/firmware`: not empty, not absolute, no
/// `..`, no NUL, no newline (the driver would store it verbatim).
pub fn check_firmware_name(name: &str) -> Result<()> {
    let bad = |reason| {
        Err(Error::BadFirmwareName {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("the name is empty");
    }
    if name.contains(['\0', '\n']) {
        return bad("the name contains a NUL or newline character");
    }
    for c in Path::new(name).components() {
        match c {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => return bad("names may not contain `..`"),
            Component::RootDir | Component::Prefix(_) => {
                return bad("names are relative to lib/firmware and may not be absolute");
            }
        }
    }
    if name.ends_with('/') {
        return bad("the name is a directory");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_resolution() {
        assert_eq!(
            MicRoot::resolve(Some("/a".into()), Some("/b".into())).path(),
            Path::new("/a")
        );
        assert_eq!(MicRoot::resolve(None, Some("/b".into())).path(), Path::new("/b"));
        assert_eq!(MicRoot::resolve(None, Some("".into())).path(), Path::new("/"));
        assert_eq!(MicRoot::resolve(None, None).path(), Path::new("/"));
    }

    #[test]
    fn card_names() {
        assert_eq!(parse_card_name("mic0"), Some(0));
        assert_eq!(parse_card_name("mic10"), Some(10));
        assert_eq!(parse_card_name("mic"), None);
        assert_eq!(parse_card_name("mic+1"), None);
        assert_eq!(parse_card_name("mic1a"), None);
        assert_eq!(parse_card_name("micro"), None);
        assert_eq!(parse_card_name("mic99999999999"), None);
        assert_eq!(parse_card_name("mic01"), None);
    }

    #[test]
    fn firmware_names() {
        assert!(check_firmware_name("mic/uos.img").is_ok());
        assert!(check_firmware_name("./mic/uos.img").is_ok());
        assert!(check_firmware_name("uos.img").is_ok());
        for bad in [
            "",
            "/etc/shadow",
            "../x",
            "mic/../../x",
            "mic/..",
            "a\0b",
            "a\nb",
            "mic/",
        ] {
            assert!(
                matches!(check_firmware_name(bad), Err(Error::BadFirmwareName { .. })),
                "{bad:?}"
            );
        }
    }
}
