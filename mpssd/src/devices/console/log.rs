//! The append-only console log of a card, `DIR/var/log/mpssd/micN-console.log`:
//! every byte the card printed, written as it arrives (nothing buffered in
//! mpssd, so a `kill -9` loses nothing already printed), rotated to `.1`,
//! `.2`, … when it would pass its size.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// The log directory, relative to the root.
pub const LOG_DIR: &str = "var/log/mpssd";

/// The log file of card `name` (`micN`) under `root_dir`.
#[must_use]
pub fn log_path(root_dir: &Path, name: &str) -> PathBuf {
    root_dir.join(LOG_DIR).join(format!("{name}-console.log"))
}

/// An open, rotating log.
#[derive(Debug)]
pub struct ConsoleLog {
    path: PathBuf,
    file: Option<File>,
    len: u64,
    max: u64,
    keep: u32,
    /// The last failure, reported once until a write succeeds again.
    failing: bool,
}

impl ConsoleLog {
    /// Opens (appending to) `path`; rotates past `max` bytes keeping `keep`
    /// old files.
    #[must_use]
    pub fn open(path: PathBuf, max: u64, keep: u32) -> Self {
        let mut log = Self {
            path,
            file: None,
            len: 0,
            max: max.max(1),
            keep,
            failing: false,
        };
        log.reopen();
        log
    }

    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Changes the limits (a configuration reload).
    pub fn set_limits(&mut self, max: u64, keep: u32) {
        self.max = max.max(1);
        self.keep = keep;
    }

    fn reopen(&mut self) {
        if let Some(dir) = self.path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        match OpenOptions::new().create(true).append(true).open(&self.path) {
            Ok(f) => {
                self.len = f.metadata().map_or(0, |m| m.len());
                self.file = Some(f);
            }
            Err(e) => {
                self.file = None;
                self.report(&format!("opening {}: {e}", self.path.display()));
            }
        }
    }

    fn report(&mut self, what: &str) {
        if !self.failing {
            log::warn!(target: "mpssd", "console log: {what}; output is not logged until it works again");
            self.failing = true;
        }
    }

    fn rotated(&self, n: u32) -> PathBuf {
        let mut s = self.path.clone().into_os_string();
        s.push(format!(".{n}"));
        PathBuf::from(s)
    }

    fn rotate(&mut self) {
        self.file = None;
        if self.keep == 0 {
            let _ = std::fs::remove_file(&self.path);
        } else {
            let _ = std::fs::remove_file(self.rotated(self.keep));
            for n in (1..self.keep).rev() {
                let _ = std::fs::rename(self.rotated(n), self.rotated(n + 1));
            }
            let _ = std::fs::rename(&self.path, self.rotated(1));
        }
        self.reopen();
    }

    /// Appends `bytes`, rotating first if they would take the file past
    /// its limit (a single write larger than the limit gets a file of its
    /// own).
    pub fn append(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if self.len > 0 && self.len + bytes.len() as u64 > self.max {
            self.rotate();
        }
        if self.file.is_none() {
            self.reopen();
        }
        let Some(f) = self.file.as_mut() else { return };
        match f.write_all(bytes) {
            Ok(()) => {
                self.len += bytes.len() as u64;
                self.failing = false;
            }
            Err(e) => {
                self.file = None;
                self.report(&format!("writing {}: {e}", self.path.display()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_and_rotates() {
        let dir = tempfile::tempdir().unwrap();
        let p = log_path(dir.path(), "mic0");
        assert!(p.ends_with("var/log/mpssd/mic0-console.log"));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, b"from before\n").unwrap();
        let mut log = ConsoleLog::open(p.clone(), 20, 2);
        log.append(b"abc\n");
        assert_eq!(
            std::fs::read(&p).unwrap(),
            b"from before\nabc\n",
            "appended, not truncated"
        );
        log.append(b"0123456789");
        assert_eq!(std::fs::read(&p).unwrap(), b"0123456789");
        assert_eq!(std::fs::read(log.rotated(1)).unwrap(), b"from before\nabc\n");
        log.append(b"0123456789");
        log.append(b"x");
        log.append(b"y".repeat(30).as_slice());
        assert_eq!(std::fs::read(&p).unwrap(), b"y".repeat(30));
        assert_eq!(std::fs::read(log.rotated(1)).unwrap(), b"x");
        assert_eq!(std::fs::read(log.rotated(2)).unwrap(), b"01234567890123456789");
        assert!(!log.rotated(3).exists(), "only `keep` rotated files");
    }

    #[test]
    fn an_unwritable_directory_is_reported_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("var"), b"a file, not a directory").unwrap();
        let mut log = ConsoleLog::open(log_path(dir.path(), "mic1"), 100, 1);
        log.append(b"lost");
        assert!(log.failing);
    }
}
