//! The FUSE sysfs/debugfs layer against a fake backend, through real mounts.
//!
//! Needs root and a working /dev/fuse.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirEntryExt, FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

mod support;

use mic_core::host::attrs::{Show, Store as Rule};
use micemu::fs::{self as mfs, Backend, Errno, FileSpec, Mount, MountError, PollHub, Tree, WriteDone};

/// Failure guard for anything that should happen promptly; never used to wait
/// for something to happen.
const GUARD: Duration = Duration::from_secs(10);
const GUARD_MS: i32 = 10_000;

const SYSFS: &[FileSpec] = &[
    FileSpec::new("state", 0o644, Show::Line, Rule::Text),
    FileSpec::new("family", 0o444, Show::Line, Rule::Text),
    // store fails with EINVAL
    FileSpec::new("strict", 0o644, Show::Line, Rule::Text),
    // store completes later, through `Fake::deferred`
    FileSpec::new("slow", 0o644, Show::Line, Rule::Text),
    // show fails with EIO
    FileSpec::new("broken", 0o444, Show::Line, Rule::Text),
    // store drops its WriteDone
    FileSpec::new("dropper", 0o200, Show::Line, Rule::Text),
];
const DEBUGFS: &[FileSpec] = &[
    FileSpec::new("log_buf_addr", 0o600, Show::Line, Rule::Text),
    FileSpec::new("post_code", 0o444, Show::Line, Rule::Text),
];

type Deferred = (u32, Vec<u8>, WriteDone);
type Store = (u32, Tree, String, Vec<u8>);

#[derive(Default)]
struct Fake {
    values: Mutex<HashMap<(u32, Tree, String), Vec<u8>>>,
    stores: Mutex<Vec<Store>>,
    deferred: Mutex<Option<mpsc::Sender<Deferred>>>,
}

impl Fake {
    fn set(&self, card: u32, tree: Tree, name: &str, value: &str) {
        self.values
            .lock()
            .unwrap()
            .insert((card, tree, name.into()), value.into());
    }

    fn value(&self, card: u32, tree: Tree, name: &str) -> Option<Vec<u8>> {
        self.values
            .lock()
            .unwrap()
            .get(&(card, tree, name.into()))
            .cloned()
    }

    fn stores(&self, card: u32, tree: Tree, name: &str) -> Vec<Vec<u8>> {
        self.stores
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.0 == card && s.1 == tree && s.2 == name)
            .map(|s| s.3.clone())
            .collect()
    }

    /// Stores to "slow" are handed to the returned receiver.
    fn defer_slow(&self) -> mpsc::Receiver<Deferred> {
        let (tx, rx) = mpsc::channel();
        *self.deferred.lock().unwrap() = Some(tx);
        rx
    }
}

impl Backend for Fake {
    fn card_count(&self) -> u32 {
        2
    }

    fn files(&self, tree: Tree) -> &'static [FileSpec] {
        match tree {
            Tree::Sysfs => SYSFS,
            Tree::Debugfs => DEBUGFS,
        }
    }

    fn read(&self, card: u32, tree: Tree, name: &str) -> Result<Vec<u8>, Errno> {
        if name == "broken" {
            return Err(libc::EIO);
        }
        Ok(self
            .value(card, tree, name)
            .unwrap_or_else(|| format!("{name} of mic{card}\n").into_bytes()))
    }

    fn write(&self, card: u32, tree: Tree, name: &str, data: &[u8], done: WriteDone) {
        self.stores
            .lock()
            .unwrap()
            .push((card, tree, name.into(), data.to_vec()));
        match name {
            "strict" => done.err(libc::EINVAL),
            "dropper" => drop(done),
            "slow" => {
                let tx = self.deferred.lock().unwrap().clone();
                if let Some(tx) = tx {
                    // On a closed channel the WriteDone is dropped: EIO.
                    let _ = tx.send((card, data.to_vec(), done));
                }
            }
            _ => {
                self.values
                    .lock()
                    .unwrap()
                    .insert((card, tree, name.into()), data.to_vec());
                done.ok();
            }
        }
    }
}

/// A mounted tree in a temporary directory. Fields drop in order: the mount
/// goes before its directory.
struct Env {
    mount: Option<Mount>,
    backend: Arc<Fake>,
    hub: Arc<PollHub>,
    sys: PathBuf,
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        // Not created beforehand: mount creates it.
        let sys = dir.path().join("sys");
        let backend = Arc::new(Fake::default());
        let hub = Arc::new(PollHub::new());
        let mount = mfs::mount(&sys, backend.clone(), hub.clone()).unwrap();
        let sys = sys.canonicalize().unwrap();
        Env {
            mount: Some(mount),
            backend,
            hub,
            sys,
            dir,
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.sys.join(rel)
    }

    fn state(&self, card: u32) -> PathBuf {
        self.path(&format!("class/mic/mic{card}/state"))
    }
}

fn mounted(path: &Path) -> bool {
    let info = fs::read("/proc/self/mountinfo").unwrap();
    // Test paths contain no characters that mountinfo escapes.
    info.split(|&b| b == b'\n').any(|line| {
        line.split(|&b| b == b' ')
            .nth(4)
            .is_some_and(|p| p == path.as_os_str().as_bytes())
    })
}

/// Names as readdir(3) returns them, `.` and `..` included.
fn readdir_all(dir: &Path) -> Vec<String> {
    let c = CString::new(dir.as_os_str().as_bytes()).unwrap();
    let mut names = Vec::new();
    // SAFETY: `c` is a valid C string; the DIR stream is used only here and
    // closed below; each dirent is read before the next readdir call.
    unsafe {
        let d = libc::opendir(c.as_ptr());
        assert!(!d.is_null(), "opendir {}", dir.display());
        loop {
            let e = libc::readdir(d);
            if e.is_null() {
                break;
            }
            let name = std::ffi::CStr::from_ptr((*e).d_name.as_ptr());
            names.push(name.to_string_lossy().into_owned());
        }
        libc::closedir(d);
    }
    names
}

fn names(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

fn errno(r: io::Result<impl Sized>) -> i32 {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.raw_os_error().expect("an OS error"),
    }
}

/// poll(2) on one fd; returns (poll's result, revents).
fn poll(file: &File, events: libc::c_short, timeout_ms: i32) -> (i32, libc::c_short) {
    let mut pfd = libc::pollfd {
        fd: file.as_raw_fd(),
        events,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    let rc = unsafe { libc::poll(&raw mut pfd, 1, timeout_ms) };
    assert!(rc >= 0, "poll: {}", io::Error::last_os_error());
    (rc, pfd.revents)
}

const PRI_ERR: libc::c_short = libc::POLLPRI | libc::POLLERR;

fn reread(file: &mut File) -> String {
    file.seek(SeekFrom::Start(0)).unwrap();
    let mut s = String::new();
    file.read_to_string(&mut s).unwrap();
    s
}

#[test]
fn tree_listing() {
    let env = Env::new();
    assert_eq!(readdir_all(&env.sys), [".", "..", "class", "kernel"]);
    assert_eq!(names(&env.path("class")), ["mic"]);
    assert_eq!(names(&env.path("class/mic")), ["mic0", "mic1"]);
    assert_eq!(names(&env.path("kernel")), ["debug"]);
    assert_eq!(names(&env.path("kernel/debug")), ["mic_host"]);
    assert_eq!(names(&env.path("kernel/debug/mic_host")), ["mic0", "mic1"]);
    let sysfs: Vec<_> = SYSFS.iter().map(|f| f.name).collect();
    let debugfs: Vec<_> = DEBUGFS.iter().map(|f| f.name).collect();
    let mut with_dots = vec![".", ".."];
    with_dots.extend(&sysfs);
    assert_eq!(readdir_all(&env.path("class/mic/mic1")), with_dots);
    assert_eq!(names(&env.path("kernel/debug/mic_host/mic0")), debugfs);

    let dir = fs::metadata(env.path("class/mic/mic0")).unwrap();
    assert!(dir.is_dir());
    assert_eq!(dir.mode(), libc::S_IFDIR | 0o755);
    let state = fs::metadata(env.state(0)).unwrap();
    assert!(state.is_file());
    assert_eq!(state.mode(), libc::S_IFREG | 0o644);
    assert_eq!((state.len(), state.uid(), state.gid()), (4096, 0, 0));
    let family = fs::metadata(env.path("class/mic/mic0/family")).unwrap();
    assert_eq!(family.mode(), libc::S_IFREG | 0o444);
    let post = fs::metadata(env.path("kernel/debug/mic_host/mic1/post_code")).unwrap();
    // Files have their table's mode; debugfs directories are root's.
    assert_eq!(post.mode(), libc::S_IFREG | 0o444);
    for d in [
        "kernel/debug",
        "kernel/debug/mic_host",
        "kernel/debug/mic_host/mic1",
    ] {
        let m = fs::metadata(env.path(d)).unwrap();
        assert_eq!((m.mode(), m.uid(), m.gid()), (libc::S_IFDIR | 0o700, 0, 0), "{d}");
    }
    assert_eq!(
        fs::metadata(env.path("kernel")).unwrap().mode(),
        libc::S_IFDIR | 0o755
    );

    // Inode numbers are stable, distinct and agree with readdir.
    assert_eq!(fs::metadata(env.state(0)).unwrap().ino(), state.ino());
    let inos = [
        state.ino(),
        fs::metadata(env.state(1)).unwrap().ino(),
        family.ino(),
        dir.ino(),
        post.ino(),
        fs::metadata(env.path("kernel/debug/mic_host/mic0/post_code"))
            .unwrap()
            .ino(),
    ];
    for (i, a) in inos.iter().enumerate() {
        for b in &inos[i + 1..] {
            assert_ne!(a, b);
        }
    }
    let listed = fs::read_dir(env.path("class/mic/mic0"))
        .unwrap()
        .map(Result::unwrap)
        .find(|e| e.file_name() == "state")
        .unwrap();
    assert_eq!(listed.ino(), state.ino());

    for missing in [
        "class/mic/mic2",
        "class/mic/mic00",
        "class/mic/mic0/nope",
        "kernel/debug/mic_host/mic0/state",
        "class/mic/mic0/state/x",
    ] {
        assert!(fs::metadata(env.path(missing)).is_err(), "{missing}");
    }
    assert_eq!(errno(File::create(env.path("class/mic/mic0/new"))), libc::EACCES);
    assert_eq!(errno(fs::create_dir(env.path("class/mic/mic0/d"))), libc::EPERM);
    assert_eq!(errno(fs::remove_file(env.state(0))), libc::EPERM);
}

#[test]
fn read_content_and_offsets() {
    let env = Env::new();
    assert_eq!(fs::read_to_string(env.state(0)).unwrap(), "state of mic0\n");
    assert_eq!(fs::read_to_string(env.state(1)).unwrap(), "state of mic1\n");
    assert_eq!(
        fs::read_to_string(env.path("kernel/debug/mic_host/mic1/post_code")).unwrap(),
        "post_code of mic1\n"
    );

    let file = File::open(env.state(0)).unwrap();
    let mut buf = [0u8; 64];
    assert_eq!(file.read_at(&mut buf[..5], 0).unwrap(), 5);
    assert_eq!(&buf[..5], b"state");
    // Reads past offset 0 serve the snapshot taken at offset 0 (seq_file).
    env.backend.set(0, Tree::Sysfs, "state", "CHANGED\n");
    let n = file.read_at(&mut buf, 6).unwrap();
    assert_eq!(&buf[..n], b"of mic0\n");
    assert_eq!(file.read_at(&mut buf, 14).unwrap(), 0);
    assert_eq!(file.read_at(&mut buf, 1000).unwrap(), 0);
    // A read from 0 shows again.
    let n = file.read_at(&mut buf, 0).unwrap();
    assert_eq!(&buf[..n], b"CHANGED\n");

    // Sequential small reads reassemble the content.
    let mut small = io::BufReader::with_capacity(3, File::open(env.state(0)).unwrap());
    let mut s = String::new();
    small.read_to_string(&mut s).unwrap();
    assert_eq!(s, "CHANGED\n");

    // Backend errors are the read's errno.
    assert_eq!(errno(fs::read(env.path("class/mic/mic1/broken"))), libc::EIO);
}

#[test]
fn write_and_errors() {
    let env = Env::new();
    // O_TRUNC included, as `echo ready > state` does.
    fs::write(env.state(1), "ready\n").unwrap();
    assert_eq!(
        env.backend.value(1, Tree::Sysfs, "state").as_deref(),
        Some(&b"ready\n"[..])
    );
    assert_eq!(fs::read_to_string(env.state(1)).unwrap(), "ready\n");

    // One store per write(2).
    let mut f = OpenOptions::new().write(true).open(env.state(0)).unwrap();
    assert_eq!(f.write(b"boot").unwrap(), 4);
    assert_eq!(f.write(b"reset\n").unwrap(), 6);
    drop(f);
    assert_eq!(
        env.backend.stores(0, Tree::Sysfs, "state"),
        [b"boot".to_vec(), b"reset\n".to_vec()]
    );

    // The backend's errno is write(2)'s.
    let mut f = OpenOptions::new()
        .write(true)
        .open(env.path("class/mic/mic0/strict"))
        .unwrap();
    assert_eq!(errno(f.write(b"bogus\n")), libc::EINVAL);
    drop(f);
    // kernfs hands a store at most a page and write(2) says how much it
    // took: a longer buffer is two stores when written out in full.
    let mut f = OpenOptions::new().write(true).open(env.state(0)).unwrap();
    assert_eq!(f.write(&[b'x'; 5000]).unwrap(), 4096);
    f.write_all(&[b'y'; 5000]).unwrap();
    drop(f);
    let stores = env.backend.stores(0, Tree::Sysfs, "state");
    let lens: Vec<usize> = stores.iter().map(Vec::len).collect();
    assert_eq!(lens[2..], [4096, 4096, 904]);
    // A dropped WriteDone is EIO.
    assert_eq!(
        errno(fs::write(env.path("class/mic/mic0/dropper"), "x")),
        libc::EIO
    );

    // Read-only files refuse writers, even root; write-only ones readers.
    assert_eq!(
        errno(fs::write(env.path("class/mic/mic0/family"), "x")),
        libc::EACCES
    );
    assert_eq!(
        errno(
            OpenOptions::new()
                .read(true)
                .write(true)
                .open(env.path("kernel/debug/mic_host/mic0/post_code"))
        ),
        libc::EACCES
    );
    assert_eq!(
        errno(File::open(env.path("class/mic/mic0/dropper"))),
        libc::EACCES
    );
    assert!(env.backend.stores(0, Tree::Sysfs, "family").is_empty());
}

#[test]
fn deferred_write_does_not_block_others() {
    let env = Env::new();
    let rx = env.backend.defer_slow();
    for (answer, expect) in [(None, Ok(())), (Some(libc::EBUSY), Err(libc::EBUSY))] {
        let slow = env.path("class/mic/mic1/slow");
        let writer = thread::spawn(move || fs::write(slow, "go\n").map_err(|e| e.raw_os_error().unwrap()));
        let (card, data, done) = rx.recv_timeout(GUARD).expect("store reached the backend");
        assert_eq!((card, data.as_slice()), (1, &b"go\n"[..]));
        assert_eq!(done.len(), 3);
        // The store is pending; other requests are served meanwhile.
        assert!(!writer.is_finished());
        assert_eq!(fs::read_to_string(env.state(0)).unwrap(), "state of mic0\n");
        fs::write(env.state(1), "other\n").unwrap();
        assert_eq!(names(&env.path("class/mic")), ["mic0", "mic1"]);
        // Completed from yet another thread.
        thread::spawn(move || match answer {
            None => done.ok(),
            Some(e) => done.err(e),
        })
        .join()
        .unwrap();
        assert_eq!(writer.join().unwrap(), expect);
    }
}

#[test]
fn poll_blocks_until_notify() {
    let env = Env::new();
    let mut file = File::open(env.state(0)).unwrap();
    assert_eq!(reread(&mut file), "state of mic0\n");

    // Nothing happened: poll blocks (negative check with a short timeout).
    assert_eq!(poll(&file, PRI_ERR, 100), (0, 0));

    // A notification since the last read: poll returns at once, and keeps
    // doing so until the file is re-read from offset 0.
    env.backend.set(0, Tree::Sysfs, "state", "online\n");
    env.hub.notify(0, Tree::Sysfs, "state");
    assert_eq!(poll(&file, PRI_ERR, GUARD_MS), (1, PRI_ERR));
    assert_eq!(poll(&file, PRI_ERR, 0), (1, PRI_ERR));
    // Other cards and files are not affected.
    let other = File::open(env.state(1)).unwrap();
    assert_eq!(poll(&other, PRI_ERR, 0), (0, 0));
    assert_eq!(reread(&mut file), "online\n");
    assert_eq!(poll(&file, PRI_ERR, 0), (0, 0));
    // Plain readability is always reported, like sysfs.
    assert_eq!(poll(&file, libc::POLLIN, 0), (1, libc::POLLIN));
    // Handles opened after a notification start from it.
    let late = File::open(env.state(0)).unwrap();
    assert_eq!(poll(&late, PRI_ERR, 0), (0, 0));
    drop(late);

    // Flush the waiter left by the timed-out poll above, then re-read.
    env.hub.notify(0, Tree::Sysfs, "state");
    reread(&mut file);
    assert_eq!(env.hub.pollers(0, Tree::Sysfs, "state"), 0);

    // A blocked poller wakes when another thread notifies.
    let (tx, rx) = mpsc::channel();
    let poller = thread::spawn(move || {
        let start = Instant::now();
        let r = poll(&file, PRI_ERR, GUARD_MS);
        tx.send(()).unwrap();
        (r, start.elapsed(), file)
    });
    assert!(env.hub.wait_for_pollers(0, Tree::Sysfs, "state", 1, GUARD));
    assert_eq!(
        rx.recv_timeout(Duration::from_millis(100)),
        Err(RecvTimeoutError::Timeout),
        "poll returned without a notification"
    );
    env.backend.set(0, Tree::Sysfs, "state", "ready\n");
    let hub = env.hub.clone();
    thread::spawn(move || hub.notify(0, Tree::Sysfs, "state"))
        .join()
        .unwrap();
    let (r, elapsed, mut file) = poller.join().unwrap();
    assert_eq!(r, (1, PRI_ERR));
    assert!(elapsed < GUARD, "woke by timeout, not by notify");
    // (The kernel re-polled after the wakeup, still queued, so a waiter is
    // registered again until the next notification drains it.)
    assert_eq!(reread(&mut file), "ready\n");
    assert_eq!(poll(&file, PRI_ERR, 0), (0, 0));
}

#[test]
fn notify_wakes_every_poller() {
    let env = Env::new();
    let path = env.path("kernel/debug/mic_host/mic1/post_code");
    let pollers: Vec<_> = (0..2)
        .map(|_| {
            let mut file = File::open(&path).unwrap();
            reread(&mut file);
            thread::spawn(move || poll(&file, PRI_ERR, GUARD_MS))
        })
        .collect();
    assert!(env.hub.wait_for_pollers(1, Tree::Debugfs, "post_code", 2, GUARD));
    env.hub.notify(1, Tree::Debugfs, "post_code");
    for p in pollers {
        assert_eq!(p.join().unwrap(), (1, PRI_ERR));
    }
    assert_eq!(env.hub.event(1, Tree::Debugfs, "post_code"), 1);
}

#[test]
fn busy_mount_point() {
    let env = Env::new();
    let again = mfs::mount(&env.sys, env.backend.clone(), env.hub.clone());
    match again {
        Err(e @ MountError::Busy { .. }) => {
            assert!(e.to_string().contains("already a mount point"), "{e}");
        }
        other => panic!("expected Busy, got {other:?}"),
    }
    // The first mount is unaffected.
    assert_eq!(fs::read_to_string(env.state(0)).unwrap(), "state of mic0\n");
}

#[test]
fn stale_mount_point() {
    let dir = tempfile::tempdir().unwrap();
    let sys = dir.path().join("sys");
    fs::create_dir(&sys).unwrap();
    let c = CString::new(sys.as_os_str().as_bytes()).unwrap();
    // A FUSE mount whose server is gone: mount with a /dev/fuse fd, close it.
    let dev = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .unwrap();
    let opts = CString::new(format!(
        "fd={},rootmode=40000,user_id=0,group_id=0",
        dev.as_raw_fd()
    ))
    .unwrap();
    // SAFETY: valid C strings; the fd in the options is open.
    let rc = unsafe {
        libc::mount(
            c"dead".as_ptr(),
            c.as_ptr(),
            c"fuse".as_ptr(),
            0,
            opts.as_ptr().cast(),
        )
    };
    assert_eq!(rc, 0, "mount: {}", io::Error::last_os_error());
    drop(dev);
    let r = mfs::mount(&sys, Arc::new(Fake::default()), Arc::new(PollHub::new()));
    match r {
        Err(e @ MountError::StaleMount { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("umount -l"), "{msg}");
            assert!(msg.contains("--force"), "{msg}");
            assert!(msg.contains(sys.to_str().unwrap()), "{msg}");
        }
        other => panic!("expected StaleMount, got {other:?}"),
    }
    // Proven dead, so it may be taken away; then the tree mounts there.
    assert_eq!(mfs::unmount_dead(&sys).unwrap(), 1);
    assert!(!mounted(&sys.canonicalize().unwrap()));
    assert_eq!(mfs::unmount_dead(&sys).unwrap(), 0);
    let m = mfs::mount(&sys, Arc::new(Fake::default()), Arc::new(PollHub::new())).unwrap();
    // A live mount is never taken away.
    assert_eq!(mfs::unmount_dead(&sys).unwrap(), 0);
    assert!(mounted(m.path()));
    m.unmount().unwrap();
}

#[test]
fn unmount_on_drop_and_explicitly() {
    let mut env = Env::new();
    assert!(mounted(&env.sys));
    drop(env.mount.take());
    assert!(!mounted(&env.sys));
    assert!(names(&env.sys).is_empty());

    // Mountable again at the same place; explicit unmount.
    let m = mfs::mount(&env.sys, env.backend.clone(), env.hub.clone()).unwrap();
    assert!(mounted(&env.sys));
    assert_eq!(m.path(), env.sys);
    m.unmount().unwrap();
    assert!(!mounted(&env.sys));

    // Unmounted behind our back (`umount`): unmount() still succeeds.
    let m = mfs::mount(&env.sys, env.backend.clone(), env.hub.clone()).unwrap();
    let c = CString::new(env.sys.as_os_str().as_bytes()).unwrap();
    // SAFETY: valid C string.
    assert_eq!(unsafe { libc::umount(c.as_ptr()) }, 0);
    m.unmount().unwrap();
    assert!(!mounted(&env.sys));
}

#[test]
fn unmount_with_open_files() {
    let mut env = Env::new();
    let file = File::open(env.state(0)).unwrap();
    // A parked poller and a pending store must not hold up the unmount.
    let mut watched = File::open(env.state(1)).unwrap();
    reread(&mut watched);
    let poller = thread::spawn(move || poll(&watched, PRI_ERR, GUARD_MS));
    assert!(env.hub.wait_for_pollers(1, Tree::Sysfs, "state", 1, GUARD));
    let rx = env.backend.defer_slow();
    let slow = env.path("class/mic/mic0/slow");
    let writer = thread::spawn(move || fs::write(slow, "x").map_err(|e| e.raw_os_error()));
    let (_, _, done) = rx.recv_timeout(GUARD).unwrap();

    env.mount.take().unwrap().unmount().unwrap();
    assert!(!mounted(&env.sys));
    // Detached and its connection aborted: holders get errors, not hangs.
    let mut buf = [0u8; 16];
    assert_eq!(errno(file.read_at(&mut buf, 0)), libc::ENOTCONN);
    let (rc, revents) = poller.join().unwrap();
    assert_eq!(rc, 1);
    assert_ne!(revents & libc::POLLERR, 0);
    assert!(writer.join().unwrap().is_err());
    // Completing a store of a dead mount is harmless.
    done.ok();
    // The hub forgot the dead mount's waiters.
    assert_eq!(env.hub.pollers(1, Tree::Sysfs, "state"), 0);
}

/// `cat args` as `nobody`, `stdin` (if any) as its standard input.
fn cat_as_nobody(args: &[&Path], stdin: Option<File>) -> (bool, String, String) {
    let args: Vec<&std::ffi::OsStr> = args.iter().map(|p| p.as_os_str()).collect();
    support::run_as_nobody("cat", &args, stdin)
}

#[test]
fn debugfs_refuses_everyone_but_root_on_every_request() {
    use std::os::unix::fs::PermissionsExt as _;
    let env = Env::new();
    // Let others reach the mount at all (a temporary directory is 0700).
    fs::set_permissions(env.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    // sysfs is everyone's to read.
    let (ok, out, err) = cat_as_nobody(&[&env.path("class/mic/mic0/family")], None);
    assert!(ok, "{err}");
    assert_eq!(out, "family of mic0\n");
    // debugfs by path: the 0700 directories keep others out.
    let post = env.path("kernel/debug/mic_host/mic0/post_code");
    let (ok, _, err) = cat_as_nobody(&[&post], None);
    assert!(!ok && err.contains("Permission denied"), "{err}");
    // A handle root opened and passed on: every read is refused all the same.
    let (ok, out, err) = cat_as_nobody(&[], Some(File::open(&post).unwrap()));
    assert!(!ok && err.contains("Permission denied"), "{err}");
    assert!(out.is_empty(), "{out}");
    // Root reads it through the very same kind of handle.
    let mut handle = File::open(&post).unwrap();
    assert_eq!(reread(&mut handle), "post_code of mic0\n");
}
