//! Mounting and unmounting the FUSE tree, with the checks that turn the
//! usual failure modes into actionable errors.

use nix::mount::{MntFlags, MsFlags, umount2};
use std::ffi::OsString;
use std::fmt;
use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use fuser::{BackgroundSession, Config, MountOption, SessionACL};

use super::Backend;
use super::hub::PollHub;
use super::ops::MicFs;

/// FUSE worker threads: a backend that takes its time in `read` or `write`
/// occupies one of them while the others keep serving.
const N_THREADS: usize = 4;
const DEV_FUSE: &str = "/dev/fuse";

static NEXT_MOUNT_ID: AtomicU64 = AtomicU64::new(1);

/// Why [`mount`] failed.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// FUSE cannot be used in this environment.
    #[error(
        "FUSE is unavailable: {reason}. micemu serves sysfs and debugfs through FUSE and needs it: \
         load the module (`modprobe fuse`), give a container the device (`--device /dev/fuse`) \
         and run with the privilege to mount (root, or CAP_SYS_ADMIN, e.g. `--cap-add SYS_ADMIN`)"
    )]
    FuseUnavailable {
        /// What exactly failed.
        reason: String,
        /// The underlying error, if any.
        #[source]
        source: Option<io::Error>,
    },
    /// Something that answers is already mounted at the mount point.
    #[error(
        "{} is already a mount point and its server answers (another micemu serving it?); \
         stop it or unmount it (`umount {}`) and retry",
        path.display(),
        path.display()
    )]
    Busy {
        /// The mount point.
        path: PathBuf,
    },
    /// A FUSE mount whose server neither answers nor is proven gone.
    #[error(
        "{} is a FUSE mount whose server does not answer (a stopped micemu?); resume or stop \
         that process; if it was killed, `micemu --force` unmounts what it left",
        path.display()
    )]
    Unresponsive {
        /// The mount point.
        path: PathBuf,
    },
    /// A dead FUSE mount occupies the mount point.
    #[error(
        "a previous micemu left a dead FUSE mount at {} (its server is gone: Transport endpoint \
         is not connected); start micemu with --force to unmount it, or run `umount -l {}` \
         (or `fusermount3 -u {}`) and retry",
        path.display(),
        path.display(),
        path.display()
    )]
    StaleMount {
        /// The mount point.
        path: PathBuf,
    },
    /// Any other I/O failure (the cause is the source).
    #[error("{what} {}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

/// A mounted tree. Unmounts (and stops the FUSE threads) on drop or
/// [`unmount`](Self::unmount).
pub struct Mount {
    session: Option<BackgroundSession>,
    path: PathBuf,
    /// `st_dev` of the mount (`major << 20 | minor`, the kernel encoding that
    /// names the connection under `/sys/fs/fuse/connections`).
    conn: Option<u64>,
    hub: Arc<PollHub>,
    id: u64,
}

impl fmt::Debug for Mount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mount")
            .field("path", &self.path)
            .field("conn", &self.conn)
            .field("mounted", &self.session.is_some())
            .finish_non_exhaustive()
    }
}

/// Mounts the sysfs/debugfs tree of `backend` at `sys_dir` (created if
/// missing), with `hub` delivering `sysfs_notify` to pollers.
pub fn mount(sys_dir: &Path, backend: Arc<dyn Backend>, hub: Arc<PollHub>) -> Result<Mount, MountError> {
    let path = preflight(sys_dir)?;
    check_dev_fuse()?;

    let id = NEXT_MOUNT_ID.fetch_add(1, Ordering::Relaxed);
    let fs = MicFs::new(backend, hub.clone(), id);
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName("micemu".into()),
        MountOption::Subtype("micemu".into()),
        MountOption::DefaultPermissions,
        MountOption::NoDev,
        MountOption::NoSuid,
        MountOption::NoExec,
        MountOption::RW,
    ];
    config.acl = SessionACL::All;
    config.n_threads = Some(N_THREADS);
    // One /dev/fuse fd per worker (FUSE_DEV_IOC_CLONE): the workers do not
    // queue behind each other on a shared fd.
    config.clone_fd = true;

    let session = fuser::Session::new(fs, &path, &config).map_err(|e| mount_failed(&path, e))?;
    let session = session.spawn().map_err(|source| MountError::Io {
        what: "starting the FUSE threads for",
        path: path.clone(),
        source,
    })?;
    let conn = mountinfo()
        .ok()
        .and_then(|mounts| mounts.into_iter().rev().find(|m| m.point == path))
        .map(|m| m.dev);
    log::info!("serving sysfs and debugfs at {}", path.display());
    Ok(Mount {
        session: Some(session),
        path,
        conn,
        hub,
        id,
    })
}

impl Mount {
    /// The mount point (canonical).
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Unmounts and waits for the FUSE threads to finish.
    ///
    /// If files are still open the tree is detached lazily (like
    /// `umount -l`) and its FUSE connection aborted, so their users get
    /// `ENOTCONN` instead of a hung emulator.
    pub fn unmount(mut self) -> io::Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> io::Result<()> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        self.hub.forget_mount(self.id);
        let err = match session.umount_and_join() {
            Ok(()) => return Ok(()),
            Err(err) => err,
        };
        // The threads are detached now; make sure they end.
        match err.raw_os_error() {
            Some(libc::EBUSY) => {
                log::warn!(
                    "{} is busy (files still open); detaching it and aborting its FUSE connection",
                    self.path.display()
                );
                umount2(&self.path, MntFlags::MNT_DETACH).map_err(io::Error::from)?;
                self.abort_connection();
                Ok(())
            }
            // Unmounted behind our back (`umount`, `fusermount -u`): the
            // threads have ended or will with the connection.
            Some(libc::EINVAL | libc::ENOENT) if !self.still_mounted() => Ok(()),
            // The unmount went through and the threads were joined, but one
            // of them had taken a request (a RELEASE of a file closed just
            // before) off the device as the kernel tore the connection
            // down: the kernel answers that read ECONNABORTED, not ENODEV,
            // although nobody aborted anything. The connection ended as
            // asked.
            Some(libc::ECONNABORTED) if !self.still_mounted() => {
                log::debug!(
                    "{}: a FUSE thread was reading as the connection closed",
                    self.path.display()
                );
                Ok(())
            }
            _ => Err(err),
        }
    }

    fn still_mounted(&self) -> bool {
        mountinfo().is_ok_and(|mounts| {
            mounts
                .iter()
                .any(|m| m.point == self.path && Some(m.dev) == self.conn)
        })
    }

    fn abort_connection(&self) {
        let Some(conn) = self.conn else {
            log::warn!(
                "FUSE connection of {} unknown; cannot abort it",
                self.path.display()
            );
            return;
        };
        let abort = format!("/sys/fs/fuse/connections/{conn}/abort");
        let result = match fs::write(&abort, b"1") {
            Err(e) if e.kind() == io::ErrorKind::NotFound => abort_via_private_fusectl(conn),
            r => r,
        };
        if let Err(e) = result {
            log::warn!(
                "cannot abort FUSE connection {conn} ({e}); its threads linger until the last \
                 open file of {} is closed",
                self.path.display()
            );
        }
    }
}

/// Aborts FUSE connection `conn` through a private mount of fusectl (a
/// single-instance filesystem: every mount shows all connections), for hosts
/// where it is not mounted at /sys/fs/fuse/connections.
fn abort_via_private_fusectl(conn: u64) -> io::Result<()> {
    let dir = private_dir()?;
    let mounted = nix::mount::mount(
        Some("fusectl"),
        &dir,
        Some("fusectl"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    );
    let result = match mounted {
        Ok(()) => {
            let r = fs::write(dir.join(conn.to_string()).join("abort"), b"1");
            let _ = umount2(&dir, MntFlags::MNT_DETACH);
            r
        }
        Err(e) => Err(io::Error::from(e)),
    };
    let _ = fs::remove_dir(&dir);
    result
}

/// A fresh empty directory under the temporary directory.
fn private_dir() -> io::Result<PathBuf> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "micemu-fusectl-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    fs::create_dir(&dir)?;
    Ok(dir)
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            log::error!("unmounting {}: {e}", self.path.display());
        }
    }
}

/// What asking a mount point's file system for its statistics showed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probe {
    /// It answered: a live server.
    Answers,
    /// ENOTCONN: the kernel says the FUSE connection is gone.
    Dead,
    /// No answer within [`PROBE_TIMEOUT`] (a stopped server), or another error.
    Silent,
}

/// How long a mount point's server may take to answer a probe.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// `statfs(2)` on `path`, which a FUSE mount always passes to its server
/// (no cached answer), so a dead connection shows as ENOTCONN.
fn probe(path: &Path) -> Probe {
    let (tx, rx) = std::sync::mpsc::channel();
    let target = path.to_path_buf();
    // A stopped server never answers: the probe runs on a thread of its own,
    // left behind (blocked in the kernel) if it does not return in time.
    let spawned = std::thread::Builder::new()
        .name("micemu-probe".into())
        .spawn(move || {
            let _ = tx.send(nix::sys::statfs::statfs(&target));
        });
    if spawned.is_err() {
        return Probe::Silent;
    }
    // TIMEOUT: PROBE_TIMEOUT bounds the wait for the server's answer.
    match rx.recv_timeout(PROBE_TIMEOUT) {
        Ok(Ok(_)) => Probe::Answers,
        Ok(Err(nix::errno::Errno::ENOTCONN)) => Probe::Dead,
        Ok(Err(_)) | Err(_) => Probe::Silent,
    }
}

/// `path` without resolving its last component (which may be a dead mount
/// that cannot be looked at).
fn canonical_parent(path: &Path) -> io::Result<PathBuf> {
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => {
            let parent = if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            };
            Ok(parent.canonicalize()?.join(name))
        }
        _ => path.canonicalize(),
    }
}

/// Unmounts (lazily, as `umount -l`) every FUSE mount at `sys_dir` that is
/// proven dead: the kernel answers ENOTCONN for it. A mount that answers,
/// or does not answer at all, is left alone. Returns how many were removed.
pub fn unmount_dead(sys_dir: &Path) -> Result<usize, MountError> {
    let path = canonical_parent(sys_dir).map_err(|source| MountError::Io {
        what: "resolving mount point",
        path: sys_dir.to_path_buf(),
        source,
    })?;
    let mut removed = 0;
    // Mounts stack: a micemu killed twice leaves two. Bounded all the same.
    for _ in 0..16 {
        let mounts = mountinfo().map_err(|source| MountError::Io {
            what: "reading",
            path: "/proc/self/mountinfo".into(),
            source,
        })?;
        let top = mounts.iter().rev().find(|m| m.point == path);
        if !top.is_some_and(MountEntry::is_fuse) || probe(&path) != Probe::Dead {
            break;
        }
        umount2(&path, MntFlags::MNT_DETACH).map_err(|e| MountError::Io {
            what: "unmounting the dead FUSE mount at",
            path: path.clone(),
            source: e.into(),
        })?;
        log::warn!("unmounted a dead FUSE mount at {}", path.display());
        removed += 1;
    }
    Ok(removed)
}

/// Checks the mount point before mounting; returns its canonical path.
fn preflight(sys_dir: &Path) -> Result<PathBuf, MountError> {
    let io_err = |what, source| MountError::Io {
        what,
        path: sys_dir.to_path_buf(),
        source,
    };
    match fs::metadata(sys_dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            return Err(io_err(
                "mount point is not a directory:",
                io::Error::from_raw_os_error(libc::ENOTDIR),
            ));
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            return Err(MountError::StaleMount {
                path: sys_dir.to_path_buf(),
            });
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(sys_dir).map_err(|e| io_err("creating mount point", e))?;
        }
        Err(e) => return Err(io_err("checking mount point", e)),
    }
    let path = sys_dir
        .canonicalize()
        .map_err(|e| io_err("resolving mount point", e))?;
    let mounts = mountinfo().map_err(|e| MountError::Io {
        what: "reading",
        path: "/proc/self/mountinfo".into(),
        source: e,
    })?;
    // The newest mount at the point is the one a lookup reaches. Its root's
    // attributes may still be cached after its server died, so only asking
    // the server tells a live mount from a dead one.
    match mounts.iter().rev().find(|m| m.point == path) {
        None => Ok(path),
        Some(m) if !m.is_fuse() => Err(MountError::Busy { path }),
        Some(_) => Err(match probe(&path) {
            Probe::Answers => MountError::Busy { path },
            Probe::Dead => MountError::StaleMount { path },
            Probe::Silent => MountError::Unresponsive { path },
        }),
    }
}

fn check_dev_fuse() -> Result<(), MountError> {
    match OpenOptions::new().read(true).write(true).open(DEV_FUSE) {
        Ok(_) => Ok(()),
        Err(e) => {
            let reason = match e.raw_os_error() {
                Some(libc::ENOENT) => format!("{DEV_FUSE} does not exist"),
                Some(libc::EACCES | libc::EPERM) => {
                    format!("{DEV_FUSE} cannot be opened (permission denied)")
                }
                Some(libc::ENODEV | libc::ENXIO) => {
                    format!("{DEV_FUSE} exists but no FUSE driver backs it")
                }
                _ => format!("{DEV_FUSE} cannot be opened ({e})"),
            };
            Err(MountError::FuseUnavailable {
                reason,
                source: Some(e),
            })
        }
    }
}

fn mount_failed(path: &Path, e: io::Error) -> MountError {
    match e.kind() {
        // mount(2) said EPERM and fuser's fallback, the setuid fusermount3
        // helper, is missing or refused too.
        io::ErrorKind::PermissionDenied | io::ErrorKind::NotFound => MountError::FuseUnavailable {
            reason: format!("mounting a FUSE filesystem at {} was refused", path.display()),
            source: Some(e),
        },
        _ => MountError::Io {
            what: "mounting FUSE at",
            path: path.to_path_buf(),
            source: e,
        },
    }
}

struct MountEntry {
    /// `major << 20 | minor`.
    dev: u64,
    point: PathBuf,
    /// The file system type (`fuse`, `fuse.micemu`, `tmpfs`, ...).
    fstype: String,
}

impl MountEntry {
    fn is_fuse(&self) -> bool {
        self.fstype == "fuse" || self.fstype.starts_with("fuse.")
    }
}

fn mountinfo() -> io::Result<Vec<MountEntry>> {
    Ok(parse_mountinfo(&fs::read("/proc/self/mountinfo")?))
}

fn parse_mountinfo(text: &[u8]) -> Vec<MountEntry> {
    text.split(|&b| b == b'\n')
        .filter_map(|line| {
            let mut fields = line.split(|&b| b == b' ');
            let dev = fields.nth(2)?;
            let point = fields.nth(1)?;
            // Optional fields, then "-", then the file system type.
            let fstype = fields.skip_while(|&f| f != b"-").nth(1)?;
            let dev = std::str::from_utf8(dev).ok()?;
            let (major, minor) = dev.split_once(':')?;
            let dev = (major.parse::<u64>().ok()? << 20) | minor.parse::<u64>().ok()?;
            Some(MountEntry {
                dev,
                point: PathBuf::from(OsString::from_vec(unescape(point))),
                fstype: String::from_utf8_lossy(fstype).into_owned(),
            })
        })
        .collect()
}

/// Undoes the octal escapes (`\040` for space, ...) of mountinfo paths.
fn unescape(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'\\' && i + 3 < s.len() && s[i + 1..=i + 3].iter().all(|c| (b'0'..=b'7').contains(c)) {
            let v = s[i + 1..=i + 3]
                .iter()
                .fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
            out.push(v as u8);
            i += 4;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines() {
        let text = b"36 35 98:0 /mnt1 /mnt/par\\040ent rw,noatime master:1 - ext3 /dev/root rw\n\
                     40 36 0:57 / /tmp/x/sys rw,nosuid - fuse.micemu micemu rw\n";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].point, Path::new("/mnt/par ent"));
        assert_eq!(m[0].dev, (98 << 20));
        assert_eq!(m[1].point, Path::new("/tmp/x/sys"));
        assert_eq!(m[1].dev, 57);
        assert_eq!((m[0].fstype.as_str(), m[0].is_fuse()), ("ext3", false));
        assert_eq!((m[1].fstype.as_str(), m[1].is_fuse()), ("fuse.micemu", true));
    }

    #[test]
    fn messages_say_what_to_do() {
        let p = PathBuf::from("/r/sys");
        let stale = MountError::StaleMount { path: p.clone() }.to_string();
        assert!(stale.contains("umount -l /r/sys"), "{stale}");
        assert!(stale.contains("fusermount3 -u /r/sys"), "{stale}");
        assert!(stale.contains("--force"), "{stale}");
        let silent = MountError::Unresponsive {
            path: "/r/sys".into(),
        }
        .to_string();
        assert!(silent.contains("does not answer"), "{silent}");
        let busy = MountError::Busy { path: p }.to_string();
        assert!(busy.contains("already a mount point"), "{busy}");
        let unavailable = MountError::FuseUnavailable {
            reason: "/dev/fuse does not exist".into(),
            source: None,
        }
        .to_string();
        assert!(unavailable.contains("modprobe fuse"), "{unavailable}");
        assert!(unavailable.contains("--device /dev/fuse"), "{unavailable}");
    }
}
