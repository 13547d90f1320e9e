//! mpssd's crash forensics bundles, read (feature `mpssd`): the bundles
//! under a crash directory, newest last, and what each holds. The layout
//! is [`mpssd_proto::crash`], the one mpssd writes by.
//!
//! The bundles are plain files on the host (not the driver's), so reads
//! are not bounded by an [`crate::IoLimit`]; they are bounded in size:
//! a file is read from its end, at most the bytes asked for. What a bundle
//! holds came from the card (its log, its console, its device page):
//! escape it before printing it.

use std::fs;
use std::io::{self, Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};

use mic_core::card::PANIC_MARKER;
pub use mpssd_proto::crash::{BundleName, FILES, Summary};

use crate::root::MicRoot;

/// How much of the end of `card.log` is searched for the panic line.
pub const PANIC_SEARCH: usize = 64 * 1024;

/// The longest `summary.json` read (mpssd writes a few hundred bytes).
pub const MAX_SUMMARY: usize = 64 * 1024;

/// Reading a bundle failed.
#[derive(Debug, thiserror::Error)]
pub enum CrashError {
    #[error("cannot read {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is not a summary mpssd writes: {message}", path.display())]
    BadSummary { path: PathBuf, message: String },
}

impl CrashError {
    fn io(path: &Path, source: io::Error) -> Self {
        CrashError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

impl MicRoot {
    /// `<root>/var/lib/mpssd/crash`: where mpssd writes crash bundles
    /// unless its `[crash] dir` says otherwise.
    #[must_use]
    pub fn crash_dir(&self) -> PathBuf {
        self.join(mpssd_proto::crash::DEFAULT_DIR)
    }
}

/// One bundle directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    pub name: BundleName,
    pub path: PathBuf,
}

/// The bundles in `dir`, oldest first. A directory that does not exist
/// holds none; entries that are not bundles (partial ones, other files,
/// symbolic links) are skipped.
pub fn bundles(dir: &Path) -> Result<Vec<Bundle>, CrashError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(CrashError::io(dir, e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| CrashError::io(dir, e))?;
        let Some(name) = entry.file_name().to_str().and_then(BundleName::parse) else {
            continue;
        };
        // The entry itself, not what a link points at.
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            out.push(Bundle {
                name,
                path: entry.path(),
            });
        }
    }
    out.sort_by_key(|b| b.name.sort_key());
    Ok(out)
}

/// One file of a bundle and its size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    pub name: &'static str,
    pub bytes: u64,
}

impl Bundle {
    /// The bundle at `path` (a directory named as mpssd names bundles).
    #[must_use]
    pub fn at(path: &Path) -> Option<Self> {
        let name = BundleName::parse(path.file_name()?.to_str()?)?;
        Some(Self {
            name,
            path: path.to_owned(),
        })
    }

    /// `summary.json`.
    pub fn summary(&self) -> Result<Summary, CrashError> {
        let path = self.path.join(mpssd_proto::crash::SUMMARY);
        let bytes = read_head(&path, MAX_SUMMARY)?;
        serde_json::from_slice(&bytes).map_err(|e| CrashError::BadSummary {
            path,
            message: e.to_string(),
        })
    }

    /// The files of [`FILES`] the bundle holds, in that order, with their
    /// sizes.
    #[must_use]
    pub fn files(&self) -> Vec<FileInfo> {
        FILES
            .iter()
            .filter_map(|&name| {
                let m = fs::symlink_metadata(self.path.join(name)).ok()?;
                m.is_file().then_some(FileInfo { name, bytes: m.len() })
            })
            .collect()
    }

    /// All its files together.
    #[must_use]
    pub fn size(&self) -> u64 {
        self.files().iter().map(|f| f.bytes).sum()
    }

    /// The last `max` bytes of one of its files (`file`: one of [`FILES`];
    /// anything else is refused, so no name reaches outside the bundle).
    pub fn tail(&self, file: &str, max: usize) -> Result<Vec<u8>, CrashError> {
        let Some(name) = FILES.iter().find(|f| **f == file) else {
            return Err(CrashError::io(
                &self.path.join(file),
                io::Error::new(io::ErrorKind::InvalidInput, "not a file a bundle holds"),
            ));
        };
        read_tail(&self.path.join(name), max)
    }

    /// The card's panic line (`Kernel panic - not syncing: ...`, from the
    /// marker on), the last in the end of its log; `None` if the log has
    /// none (the card did not panic, or its log could not be read).
    #[must_use]
    pub fn panic(&self) -> Option<String> {
        let log = self.tail(mpssd_proto::crash::CARD_LOG, PANIC_SEARCH).ok()?;
        panic_line(&String::from_utf8_lossy(&log)).map(str::to_owned)
    }
}

/// The last line of `log` with the panic marker, from the marker on.
#[must_use]
pub fn panic_line(log: &str) -> Option<&str> {
    log.lines()
        .rev()
        .find_map(|l| l.find(PANIC_MARKER).map(|at| l[at..].trim_end()))
}

/// The first `max` bytes of a file.
fn read_head(path: &Path, max: usize) -> Result<Vec<u8>, CrashError> {
    let f = fs::File::open(path).map_err(|e| CrashError::io(path, e))?;
    let mut out = Vec::new();
    f.take(max as u64)
        .read_to_end(&mut out)
        .map_err(|e| CrashError::io(path, e))?;
    Ok(out)
}

/// The last `max` bytes of a file.
fn read_tail(path: &Path, max: usize) -> Result<Vec<u8>, CrashError> {
    let mut f = fs::File::open(path).map_err(|e| CrashError::io(path, e))?;
    let len = f.metadata().map_err(|e| CrashError::io(path, e))?.len();
    let from = len.saturating_sub(max as u64);
    f.seek(SeekFrom::Start(from))
        .map_err(|e| CrashError::io(path, e))?;
    let mut out = Vec::new();
    f.take(max as u64)
        .read_to_end(&mut out)
        .map_err(|e| CrashError::io(path, e))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn bundle(dir: &Path, card: u32, secs: u64, seq: u32) -> PathBuf {
        let name = BundleName::new(card, UNIX_EPOCH + Duration::from_secs(secs)).with_seq(seq);
        let p = dir.join(name.to_string());
        fs::create_dir_all(&p).unwrap();
        p
    }

    #[test]
    fn lists_bundles_oldest_first_and_nothing_else() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(bundles(&d.path().join("none")).unwrap(), vec![]);
        let b2 = bundle(d.path(), 0, 1_700_000_100, 1);
        let b1 = bundle(d.path(), 1, 1_700_000_000, 1);
        let b3 = bundle(d.path(), 0, 1_700_000_100, 2);
        fs::create_dir(d.path().join(".mic0-20231114T221320.000Z.partial")).unwrap();
        fs::create_dir(d.path().join("lost+found")).unwrap();
        fs::write(d.path().join("mic3-20231114T221320.000Z"), "a file").unwrap();
        std::os::unix::fs::symlink(&b1, d.path().join("mic4-20231114T221320.000Z")).unwrap();
        let got: Vec<PathBuf> = bundles(d.path()).unwrap().into_iter().map(|b| b.path).collect();
        assert_eq!(got, [b1, b2, b3]);
    }

    #[test]
    fn reads_what_a_bundle_holds() {
        let d = tempfile::tempdir().unwrap();
        let p = bundle(d.path(), 2, 1_700_000_000, 1);
        let b = Bundle::at(&p).unwrap();
        assert!(b.summary().is_err());
        assert_eq!(b.panic(), None);
        fs::write(
            p.join("card.log"),
            "[    0.100000] boot\n[    1.000000] Kernel panic - not syncing: first\n\
             [    2.000000] Kernel panic - not syncing: last words  \n[    2.1] after\n",
        )
        .unwrap();
        fs::write(
            p.join("summary.json"),
            r#"{"card":"mic2","time":"2023-11-14T22:13:20.000Z","shutdown_status":"crashed","files":["card.log"],"errors":["dp.txt: gone"]}"#,
        )
        .unwrap();
        fs::write(p.join("stray"), "x").unwrap();
        assert_eq!(
            b.panic().as_deref(),
            Some("Kernel panic - not syncing: last words")
        );
        let s = b.summary().unwrap();
        assert_eq!(s.shutdown_status, Some(crate::MicStatus::Crashed));
        assert_eq!(s.errors, ["dp.txt: gone"]);
        let files: Vec<&str> = b.files().iter().map(|f| f.name).collect();
        assert_eq!(files, ["summary.json", "card.log"]);
        assert_eq!(b.tail("card.log", 9).unwrap(), b"1] after\n");
        assert!(b.tail("../../etc/passwd", 10).is_err());
        assert!(b.tail("stray", 10).is_err());
        fs::write(p.join("summary.json"), "{\"card\":1}").unwrap();
        assert!(matches!(b.summary(), Err(CrashError::BadSummary { .. })));
        assert_eq!(Bundle::at(&d.path().join("elsewhere")), None);
    }
}
