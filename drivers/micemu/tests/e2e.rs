//! End-to-end: a live micemu in a temporary root, driven with plain file I/O
//! the way the original micctrl drives sysfs, and waited on with poll() the
//! way mpssd does.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod support;

use support::run_as_nobody;

use libmic::klog;
use libmic::{Error, IoLimit, MicRoot, MicState};

const WAIT: Duration = Duration::from_secs(20);

/// A running micemu; SIGTERM and a clean unmount on drop.
struct Emu {
    child: Child,
    dir: tempfile::TempDir,
    /// Killed on purpose by the test: nothing left to stop.
    dead: bool,
}

impl Emu {
    fn start(cards: u32) -> Emu {
        Self::start_with(cards, &[])
    }

    fn start_with(cards: u32, extra: &[&str]) -> Emu {
        let dir = tempfile::tempdir().unwrap();
        let child = spawn(dir.path(), cards, extra);
        Emu {
            child,
            dir,
            dead: false,
        }
    }

    /// Lets other users reach the root (a temporary directory is 0700), so
    /// that what keeps them out is the driver's files' own permissions.
    fn open_to_others(&self) {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(self.root(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn attr(&self, card: u32, name: &str) -> PathBuf {
        self.root().join(format!("sys/class/mic/mic{card}/{name}"))
    }

    fn debug(&self, card: u32, name: &str) -> PathBuf {
        self.root()
            .join(format!("sys/kernel/debug/mic_host/mic{card}/{name}"))
    }

    fn read(&self, card: u32, name: &str) -> String {
        std::fs::read_to_string(self.attr(card, name)).unwrap()
    }

    /// `echo value > attr`, returning the errno on failure.
    fn write(&self, card: u32, name: &str, value: &str) -> Result<(), i32> {
        std::fs::write(self.attr(card, name), format!("{value}\n")).map_err(|e| e.raw_os_error().unwrap())
    }

    /// What `micctrl -b` does, plus the log buffer addresses mpssd sets.
    fn boot(&self, card: u32) {
        let c = MicRoot::new(self.root()).card_by_id(card);
        c.set_log_buf_from_sysmap(&MicRoot::new(self.root()).system_map())
            .unwrap();
        self.write(
            card,
            "cmdline",
            &format!("ifcfg=static;address,172.31.{card}.1;netmask,255.255.255.0"),
        )
        .unwrap();
        self.write(card, "bootmode", "linux").unwrap();
        self.write(card, "firmware", "mic/uos.img").unwrap();
        self.write(card, "ramdisk", &format!("mic/mic{card}.image"))
            .unwrap();
        self.write(card, "state", "boot").unwrap();
    }

    fn wait_state(&self, card: u32, want: MicState) {
        let c = MicRoot::new(self.root()).card_by_id(card);
        let got = c.wait_for(|s| s == want, Some(WAIT)).unwrap();
        assert_eq!(got, want);
    }

    fn log(&self, card: u32) -> Vec<String> {
        let raw = std::fs::read(self.debug(card, "log_buf")).unwrap();
        klog::decode(&raw).into_iter().map(|r| r.text).collect()
    }

    /// Waits until the card log has a line containing `needle`. The log has
    /// no change notification (as on real hardware), so this re-reads it
    /// until a deadline; correctness does not depend on the interval.
    fn wait_log(&self, card: u32, needle: &str) -> Vec<String> {
        let start = Instant::now();
        loop {
            let log = self.log(card);
            if log.iter().any(|l| l.contains(needle)) {
                return log;
            }
            assert!(
                start.elapsed() < WAIT,
                "mic{card}: {needle:?} never logged; log: {log:#?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn inject(&self, card: u32, verb: &[&str]) {
        let st = Command::new(env!("CARGO_BIN_EXE_micemu"))
            .arg("inject")
            .arg("--root")
            .arg(self.root())
            .arg(format!("mic{card}"))
            .args(verb)
            .status()
            .unwrap();
        assert!(st.success(), "inject {verb:?} failed");
    }
}

/// Starts micemu serving `cards` cards under `root`; returns once it has
/// printed its banner (everything mounted and served).
fn spawn(root: &Path, cards: u32, extra: &[&str]) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_micemu"))
        .arg("--root")
        .arg(root)
        .args(["--cards", &cards.to_string(), "--timing", "fast"])
        .args(extra)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("micemu: serving"), "unexpected banner {line:?}");
    child
}

impl Emu {
    /// `kill -STOP`, as a hung driver: returns once micemu has stopped (the
    /// signal is asynchronous, and a FUSE thread could still answer one more
    /// request; the kernel reports the stop to the parent once every thread
    /// has stopped).
    fn stop(&self) {
        let pid = self.child.id() as i32;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGSTOP).unwrap();
        let mut status = 0;
        // SAFETY: waitpid on our own child with a valid pointer to a local;
        // WUNTRACED reports the stop without reaping the child.
        let r = unsafe { libc::waitpid(pid, &raw mut status, libc::WUNTRACED) };
        assert!(r == pid && libc::WIFSTOPPED(status), "micemu did not stop");
    }

    fn resume(&self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGCONT,
        )
        .unwrap();
    }
}

impl Drop for Emu {
    fn drop(&mut self) {
        if self.dead {
            return;
        }
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        // A test may have stopped it; a stopped process takes no SIGTERM.
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let status = self.child.wait().unwrap();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let sys = self.dir.path().join("sys");
        if !std::thread::panicking() {
            assert!(status.success(), "micemu exited with {status}");
            assert!(
                !mounts.contains(sys.to_str().unwrap()),
                "{} still mounted",
                sys.display()
            );
        }
    }
}

#[test]
fn fresh_cards_are_offline_with_identity() {
    let emu = Emu::start(4);
    for n in 0..4 {
        assert_eq!(emu.read(n, "state"), "offline\n");
        assert_eq!(emu.read(n, "shutdown_status"), "nop\n");
        assert_eq!(emu.read(n, "family"), "x100\n");
        assert!(["A0\n", "B0\n", "B1\n", "C0\n"].contains(&emu.read(n, "stepping").as_str()));
        assert_eq!(emu.read(n, "cmdline"), "");
        assert_eq!(emu.read(n, "log_buf_addr"), "          (null)\n");
    }
    // A realistic fleet mixes steppings.
    let steppings: std::collections::HashSet<String> = (0..4).map(|n| emu.read(n, "stepping")).collect();
    assert!(steppings.len() > 1);
    assert_eq!(
        std::fs::read_to_string(emu.debug(0, "post_code")).unwrap(),
        "12\n"
    );
    // The default images exist.
    for f in ["mic/uos.img", "mic/System.map", "mic/mic3.image"] {
        assert!(emu.root().join("lib/firmware").join(f).is_file(), "{f}");
    }
}

#[test]
fn boot_goes_online_and_the_log_has_the_banner() {
    let emu = Emu::start(2);
    emu.boot(1);
    // The original returns from the boot write with the card online.
    assert_eq!(emu.read(1, "state"), "online\n");
    assert_eq!(emu.read(1, "ipaddr"), "172.31.1.1\n");
    let log = emu.wait_log(1, "Run /sbin/init as init process");
    assert!(log[0].starts_with("Linux version 3.10.0"), "{log:#?}");
    assert!(
        log.iter()
            .any(|l| l.contains("Command line:") && l.contains("mem=")),
        "{log:#?}"
    );
    assert!(
        log.iter().any(|l| l.contains("Freeing initrd memory")),
        "{log:#?}"
    );
    assert!(log.iter().any(|l| l.contains("172.31.1.1")), "{log:#?}");
    assert_eq!(
        std::fs::read_to_string(emu.debug(1, "post_code")).unwrap(),
        "FF\n"
    );
    // The other card is untouched.
    assert_eq!(emu.read(0, "state"), "offline\n");
    // Boot while online is refused as the original refuses it.
    assert_eq!(emu.write(1, "state", "boot"), Err(libc::EINVAL));
}

#[test]
fn host_shutdown_powers_the_card_off_then_reset_brings_it_back() {
    let emu = Emu::start(1);
    emu.boot(0);
    emu.wait_log(0, "Run /sbin/init");
    emu.write(0, "state", "shutdown").unwrap();
    assert_eq!(emu.read(0, "state"), "shutting_down\n");
    emu.wait_log(0, "reboot: Power down");
    let start = Instant::now();
    while emu.read(0, "shutdown_status") != "poweroff\n" {
        assert!(start.elapsed() < WAIT, "status never became poweroff");
        std::thread::sleep(Duration::from_millis(5));
    }
    emu.write(0, "state", "reset").unwrap();
    emu.wait_state(0, MicState::Offline);
    assert_eq!(emu.read(0, "shutdown_status"), "nop\n");
    // And it boots again.
    emu.boot(0);
    emu.wait_log(0, "Run /sbin/init");
}

#[test]
fn card_halt_and_panic_are_reported() {
    let emu = Emu::start(2);
    emu.boot(0);
    emu.boot(1);
    emu.wait_log(0, "Run /sbin/init");
    emu.wait_log(1, "Run /sbin/init");
    emu.inject(0, &["halt"]);
    emu.wait_state(0, MicState::ShuttingDown);
    assert_eq!(emu.read(0, "shutdown_status"), "halted\n");
    emu.inject(1, &["panic", "test", "panic"]);
    emu.wait_state(1, MicState::ShuttingDown);
    assert_eq!(emu.read(1, "shutdown_status"), "crashed\n");
    let log = emu.log(1);
    assert!(
        log.iter().any(|l| l == "Kernel panic - not syncing: test panic"),
        "{log:#?}"
    );
}

#[test]
fn a_failing_reset_ends_in_reset_failed() {
    let emu = Emu::start(1);
    emu.boot(0);
    emu.inject(0, &["fail-reset"]);
    emu.write(0, "state", "reset").unwrap();
    emu.wait_state(0, MicState::ResetFailed);
    // Only a successful reset recovers.
    assert_eq!(emu.write(0, "state", "boot"), Err(libc::EINVAL));
    emu.write(0, "state", "reset").unwrap();
    emu.wait_state(0, MicState::Offline);
}

#[test]
fn bad_writes_get_the_original_errno() {
    let emu = Emu::start(1);
    assert_eq!(emu.write(0, "state", "explode"), Err(libc::EINVAL));
    assert_eq!(emu.write(0, "bootmode", "windows"), Err(libc::EINVAL));
    assert_eq!(emu.write(0, "log_buf_addr", "not-hex"), Err(libc::EINVAL));
    assert_eq!(emu.write(0, "family", "x200"), Err(libc::EACCES));
    // Boot without bootmode/firmware set.
    assert_eq!(emu.write(0, "state", "boot"), Err(libc::EINVAL));
    // A firmware name escaping lib/firmware is stored, but boot refuses it.
    emu.write(0, "bootmode", "linux").unwrap();
    emu.write(0, "firmware", "../../etc/passwd").unwrap();
    assert_eq!(emu.write(0, "state", "boot"), Err(libc::EINVAL));
    // A missing image is ENOENT.
    emu.write(0, "firmware", "mic/nope.img").unwrap();
    assert_eq!(emu.write(0, "state", "boot"), Err(libc::ENOENT));
    assert_eq!(emu.read(0, "state"), "offline\n");
    // Shutdown of an offline card succeeds and changes nothing.
    emu.write(0, "state", "shutdown").unwrap();
    assert_eq!(emu.read(0, "state"), "offline\n");
}

#[test]
fn garbage_in_the_log_buffer_does_not_break_decoding() {
    let emu = Emu::start(1);
    emu.boot(0);
    emu.wait_log(0, "Run /sbin/init");
    for _ in 0..5 {
        emu.inject(0, &["garbage-log"]);
    }
    emu.inject(0, &["log", "after the garbage"]);
    // Decoding never panics; the newest record survives.
    emu.wait_log(0, "after the garbage");
}

#[test]
fn sixty_four_cards_start_and_answer() {
    let emu = Emu::start(64);
    let root = MicRoot::new(emu.root());
    let cards = root.cards().unwrap();
    assert_eq!(cards.len(), 64);
    for c in &cards {
        assert_eq!(c.state().unwrap(), MicState::Offline);
    }
    emu.boot(63);
    emu.wait_state(63, MicState::Online);
}

#[test]
fn a_second_micemu_on_the_same_root_is_refused_clearly() {
    let emu = Emu::start(1);
    let out = Command::new(env!("CARGO_BIN_EXE_micemu"))
        .arg("--root")
        .arg(emu.root())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already"), "{err}");
}

/// The kernfs contract user space relies on: poll(POLLPRI|POLLERR) on an
/// open, read `state` blocks until the state changes, then wakes.
#[test]
fn poll_on_state_wakes_on_every_change() {
    use std::io::{Read as _, Seek as _};
    use std::os::fd::AsRawFd as _;

    let emu = Emu::start(1);
    let mut f = std::fs::File::open(emu.attr(0, "state")).unwrap();
    let mut s = String::new();
    f.read_to_string(&mut s).unwrap();
    assert_eq!(s, "offline\n");
    let poll = |f: &std::fs::File, ms: i32| {
        let mut p = libc::pollfd {
            fd: f.as_raw_fd(),
            events: libc::POLLPRI | libc::POLLERR,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        let n = unsafe { libc::poll(&raw mut p, 1, ms) };
        (n, p.revents)
    };
    // Nothing happened: no wake-up.
    assert_eq!(poll(&f, 50).0, 0);
    emu.boot(0);
    let (n, rev) = poll(&f, 10_000);
    assert_eq!(n, 1);
    assert_ne!(rev & libc::POLLPRI, 0);
    f.rewind().unwrap();
    s.clear();
    f.read_to_string(&mut s).unwrap();
    assert_eq!(s, "online\n");
    // Re-armed by the read: quiet again until the next change.
    assert_eq!(poll(&f, 50).0, 0);
    // (A panic is only reported once the card's mic driver is up.)
    emu.wait_log(0, libmic::OS_UP_MARKER);
    emu.inject(0, &["panic"]);
    assert_eq!(poll(&f, 10_000).0, 1);
}

#[test]
fn lifecycle_helpers_boot_and_wait_for_the_os() {
    let emu = Emu::start(1);
    let root = MicRoot::new(emu.root());
    let card = root.card("mic0").unwrap();
    let req = libmic::BootRequest::defaults_for(&card);
    assert_eq!(
        card.boot_with(&req, Some(&root.system_map())).unwrap(),
        libmic::Outcome::Requested
    );
    card.wait_os_up(Some(WAIT)).unwrap();
    // Idempotent: booting an online card is not an error.
    assert_eq!(
        card.boot_with(&req, Some(&root.system_map())).unwrap(),
        libmic::Outcome::AlreadyInState(MicState::Online)
    );
    assert_eq!(card.ipaddr().unwrap(), Some("172.31.0.1".parse().unwrap()));
}

#[test]
fn a_hung_boot_never_comes_up() {
    let emu = Emu::start(1);
    emu.inject(0, &["hang"]);
    emu.boot(0);
    let card = MicRoot::new(emu.root()).card_by_id(0);
    let err = card.wait_os_up(Some(Duration::from_millis(800))).unwrap_err();
    assert!(matches!(err, libmic::Error::Timeout { .. }), "{err}");
    // The banner was printed, init never ran.
    let log = emu.log(0);
    assert!(log[0].starts_with("Linux version"));
    assert!(!log.iter().any(|l| l.contains(libmic::OS_UP_MARKER)));
    // A reset recovers the card.
    emu.write(0, "state", "reset").unwrap();
    emu.wait_state(0, MicState::Offline);
}

#[test]
fn a_killed_micemu_is_explained_and_force_recovers() {
    // A micemu killed without unmounting leaves a dead FUSE mount behind,
    // whose root the kernel still has attributes of (a tool looked).
    let mut emu = Emu::start(1);
    assert_eq!(emu.read(0, "state"), "offline\n");
    let pid = nix::unistd::Pid::from_raw(emu.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    emu.child.wait().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_micemu"))
        .arg("--root")
        .arg(emu.root())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("left a dead FUSE mount"), "{err}");
    assert!(err.contains("--force") && err.contains("umount -l"), "{err}");
    // --force proves it dead (ENOTCONN), unmounts it and serves again.
    emu.child = spawn(emu.root(), 1, &["--force"]);
    assert_eq!(emu.read(0, "state"), "offline\n");
    // A live micemu is never taken for a dead one, --force or not.
    let out = Command::new(env!("CARGO_BIN_EXE_micemu"))
        .arg("--root")
        .arg(emu.root())
        .arg("--force")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("its server answers"), "{err}");
    assert_eq!(emu.read(0, "state"), "offline\n");
}

#[test]
fn a_card_reporting_a_nonsense_status_is_ignored() {
    let emu = Emu::start(1);
    emu.boot(0);
    emu.wait_log(0, libmic::OS_UP_MARKER);
    let mut watcher = MicRoot::new(emu.root()).card_by_id(0).watch_state().unwrap();
    for bad in ["200", "5", "0"] {
        emu.inject(0, &["bad-status", bad]);
    }
    // No state change follows (a negative check: bounded by a short wait).
    assert_eq!(
        watcher.wait_change(Some(Duration::from_millis(300))).unwrap(),
        None
    );
    assert_eq!(emu.read(0, "state"), "online\n");
    assert_eq!(emu.read(0, "shutdown_status"), "nop\n");
    // A real report still gets through afterwards.
    emu.inject(0, &["reboot"]);
    emu.wait_state(0, MicState::ShuttingDown);
    assert_eq!(emu.read(0, "shutdown_status"), "restart\n");
}

#[test]
fn reading_soft_reset_resets_the_card() {
    let emu = Emu::start(1);
    emu.boot(0);
    assert_eq!(emu.read(0, "state"), "online\n");
    // As in the original debugfs, merely reading the file forces a reset.
    std::fs::read(emu.debug(0, "soft_reset")).unwrap();
    emu.wait_state(0, MicState::Offline);
    assert_eq!(emu.read(0, "shutdown_status"), "nop\n");
}

#[test]
fn the_card_log_decodes_across_many_ring_wraps() {
    // A 4 KiB log buffer wraps every few dozen lines.
    let emu = Emu::start_with(1, &["--log-buf-len", "4K"]);
    emu.boot(0);
    emu.wait_log(0, libmic::OS_UP_MARKER);
    for i in 0..300 {
        emu.inject(0, &["log", &format!("line {i:03} of the wrap test")]);
    }
    let log = emu.log(0);
    let tail: Vec<&String> = log.iter().filter(|l| l.starts_with("line ")).collect();
    // The ring holds only the newest lines, complete and in order.
    assert!(tail.len() > 20 && tail.len() < 300, "{} lines kept", tail.len());
    let first: usize = tail[0][5..8].parse().unwrap();
    for (k, line) in tail.iter().enumerate() {
        assert_eq!(**line, format!("line {:03} of the wrap test", first + k));
    }
    assert_eq!(first + tail.len(), 300);
}

#[test]
fn a_stopped_emulator_costs_a_bounded_wait_naming_the_file() {
    let emu = Emu::start(2);
    let root = MicRoot::new(emu.root());
    let card = root.card_by_id(0);
    assert_eq!(card.state().unwrap(), MicState::Offline);
    emu.stop();

    let limit = IoLimit::per_access(Duration::from_millis(300));
    let bounded = card.clone().with_io_limit(limit);
    match bounded.state() {
        Err(Error::NoAnswer { path, waited }) => {
            assert!(path.ends_with("sys/class/mic/mic0/state"), "{}", path.display());
            assert!(waited >= Duration::from_millis(300));
        }
        other => panic!("{other:?}"),
    }
    // A wait with a deadline ends at it, however the driver hangs.
    let deadline = Instant::now() + Duration::from_millis(500);
    let waiting = root.card_by_id(1).with_io_limit(IoLimit::until(deadline));
    let e = waiting
        .wait_for(|s| s == MicState::Online, Some(Duration::from_secs(60)))
        .unwrap_err();
    assert!(matches!(e, Error::NoAnswer { .. }), "{e:?}");
    assert!(e.to_string().contains("mic1/state"), "{e}");
    // Enumeration too.
    let e = root.clone().with_io_limit(limit).cards().unwrap_err();
    assert!(
        matches!(e, Error::NoAnswer { ref path, .. } if path.ends_with("sys/class/mic")),
        "{e:?}"
    );

    // Once it answers again, so do the files.
    emu.resume();
    let deadline = Instant::now() + WAIT;
    loop {
        match bounded.state() {
            Ok(s) => {
                assert_eq!(s, MicState::Offline);
                break;
            }
            Err(Error::NoAnswer { .. }) if Instant::now() < deadline => std::thread::yield_now(),
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn debugfs_is_roots_even_through_a_handle_root_opened() {
    use std::os::unix::fs::MetadataExt as _;
    let emu = Emu::start(1);
    emu.boot(0);
    emu.wait_log(0, libmic::OS_UP_MARKER);
    emu.open_to_others();
    let debug = emu.root().join("sys/kernel/debug");
    for dir in [debug.clone(), debug.join("mic_host"), debug.join("mic_host/mic0")] {
        let m = std::fs::metadata(&dir).unwrap();
        assert_eq!((m.mode() & 0o7777, m.uid()), (0o700, 0), "{}", dir.display());
    }
    for f in mic_core::host::attrs::DebugFile::ALL {
        let m = std::fs::metadata(emu.debug(0, f.file_name())).unwrap();
        assert_eq!(m.mode() & 0o7777, u32::from(f.spec().mode), "{f}");
        assert_eq!(m.mode() & 0o077, 0, "{f}");
    }
    let mut watcher = MicRoot::new(emu.root()).card_by_id(0).watch_state().unwrap();
    // By path: the directories keep others out.
    let log_buf = emu.debug(0, "log_buf");
    let (ok, _, err) = run_as_nobody("cat", &[log_buf.as_os_str()], None);
    assert!(!ok && err.contains("Permission denied"), "{err}");
    // Through handles root opened and passed on: each read is refused, so
    // reading soft_reset resets nothing and log_buf shows nothing.
    for name in ["soft_reset", "log_buf"] {
        let handle = std::fs::File::open(emu.debug(0, name)).unwrap();
        let (ok, out, err) = run_as_nobody("cat", &[], Some(handle));
        assert!(!ok && err.contains("Permission denied"), "{name}: {err}");
        assert!(out.is_empty(), "{name}: {out:?}");
    }
    // (A negative check: no state change within a short wait.)
    assert_eq!(
        watcher.wait_change(Some(Duration::from_millis(300))).unwrap(),
        None
    );
    assert_eq!(emu.read(0, "state"), "online\n");
    // sysfs stays everyone's to read; root reads debugfs.
    let (ok, out, err) = run_as_nobody("cat", &[emu.attr(0, "state").as_os_str()], None);
    assert!(ok, "{err}");
    assert_eq!(out, "online\n");
    assert!(!std::fs::read(&log_buf).unwrap().is_empty());
}

/// `n` bytes in MiB, to a tenth.
fn mib(n: u64) -> String {
    format!("{}.{} MiB", n >> 20, ((n & ((1 << 20) - 1)) * 10) >> 20)
}

/// VmRSS of a process, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

/// What 1000 open `log_buf` handles may cost micemu at most: the 32 MiB its
/// mount keeps of shows in all, and 16 MiB for the allocator's slack.
/// (Before shows were bounded, each handle kept its own 128 KiB: 125 MiB.)
const READERS_BOUND: u64 = 48 << 20;

#[test]
fn a_thousand_log_buf_readers_cost_bounded_memory() {
    use std::io::{Read as _, Write as _};
    // Room for a thousand files beside the test's own.
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut lim), 0);
        lim.rlim_cur = lim.rlim_max.max(lim.rlim_cur);
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &raw const lim), 0);
    }
    assert!(
        lim.rlim_cur >= 1100,
        "RLIMIT_NOFILE hard limit {} too low",
        lim.rlim_max
    );
    let emu = Emu::start(1);
    emu.boot(0);
    emu.wait_log(0, libmic::OS_UP_MARKER);
    let path = emu.debug(0, "log_buf");
    let log_len = std::fs::read(&path).unwrap().len();
    assert_eq!(log_len, 128 << 10);
    let open_and_start = |path: &Path| {
        let mut f = std::fs::File::open(path).unwrap();
        let mut first = [0u8; 16];
        f.read_exact(&mut first).unwrap();
        f
    };
    // Readers of an unchanged log share one copy of it.
    let before = rss(emu.child.id());
    let same: Vec<_> = (0..1000).map(|_| open_and_start(&path)).collect();
    let grown = rss(emu.child.id()).saturating_sub(before);
    eprintln!("1000 readers of one log: micemu grew by {}", mib(grown));
    assert!(grown < 8 << 20, "micemu grew by {grown} bytes");
    drop(same);
    let before = rss(emu.child.id());
    let ctl = std::os::unix::net::UnixStream::connect(emu.root().join("run/micemu.sock")).unwrap();
    let mut replies = BufReader::new(ctl.try_clone().unwrap());
    let mut ctl = ctl;
    let mut files = Vec::with_capacity(1000);
    for i in 0..1000 {
        // The card prints between two opens: no two readers see one log.
        writeln!(ctl, "mic0 log reader {i}").unwrap();
        let mut reply = String::new();
        replies.read_line(&mut reply).unwrap();
        assert_eq!(reply, "ok\n");
        files.push(open_and_start(&path));
    }
    let grown = rss(emu.child.id()).saturating_sub(before);
    eprintln!(
        "1000 readers of 1000 logs: micemu grew by {} (bound {}; a show kept by each would be {})",
        mib(grown),
        mib(READERS_BOUND),
        mib(1000 * log_len as u64)
    );
    assert!(grown < READERS_BOUND, "micemu grew by {grown} bytes");
    // Every reader still reads the rest of a whole log.
    for f in files.iter_mut().step_by(97) {
        let mut rest = Vec::new();
        f.read_to_end(&mut rest).unwrap();
        assert_eq!(rest.len() + 16, log_len);
    }
    drop(files);
}

#[test]
fn sysfs_stores_are_cut_at_a_page_and_end_at_a_nul() {
    use std::io::Write as _;
    let emu = Emu::start(1);
    // One write(2), its errno or how much the store took.
    let write_once = |name: &str, bytes: &[u8]| -> Result<usize, i32> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(emu.attr(0, name))
            .unwrap();
        f.write(bytes).map_err(|e| e.raw_os_error().unwrap())
    };
    // kernfs hands the store one page; write(2) says so.
    assert_eq!(write_once("firmware", &[b'f'; 5000]), Ok(4096));
    let shown = std::fs::read(emu.attr(0, "firmware")).unwrap();
    assert_eq!(shown.len(), 4095, "a page of show, its newline cut");
    assert!(shown.iter().all(|&b| b == b'f'));
    // A store ends at the first NUL, as the kernel's strncpy ends there.
    assert_eq!(write_once("cmdline", b"quiet\0console=evil"), Ok(18));
    assert_eq!(emu.read(0, "cmdline"), "quiet\n");
    assert_eq!(write_once("bootmode", b"elf\0junk"), Ok(8));
    assert_eq!(emu.read(0, "bootmode"), "elf\n");
    // sysfs_streq: one trailing newline, no more.
    assert_eq!(write_once("bootmode", b"linux\n\n"), Err(libc::EINVAL));
    assert_eq!(emu.read(0, "bootmode"), "elf\n");
    // The command line the card's buffer could never hold is refused.
    assert_eq!(write_once("cmdline", &[b'c'; 2048]), Err(libc::E2BIG));
    assert_eq!(emu.read(0, "cmdline"), "quiet\n");
    assert_eq!(write_once("cmdline", &[b'c'; 2047]), Ok(2047));
    // An attribute cannot be mapped shared. (A private mapping cannot be
    // refused by a FUSE server: the kernel serves it from its page cache.)
    let f = std::fs::File::open(emu.attr(0, "state")).unwrap();
    // SAFETY: mmap of a valid fd; the mapping is unmapped at once if made.
    let (map, errno) = unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ,
            libc::MAP_SHARED,
            std::os::fd::AsRawFd::as_raw_fd(&f),
            0,
        );
        let errno = std::io::Error::last_os_error().raw_os_error();
        if p != libc::MAP_FAILED {
            libc::munmap(p, 4096);
        }
        (p, errno)
    };
    assert_eq!(map, libc::MAP_FAILED);
    assert_eq!(errno, Some(libc::ENODEV));
}

#[test]
fn inject_explains_permissions_and_spells_cards_as_the_driver_does() {
    let emu = Emu::start(2);
    emu.open_to_others();
    let micemu = env!("CARGO_BIN_EXE_micemu");
    let root = emu.root().as_os_str();
    let args = |card: &'static str| -> Vec<&std::ffi::OsStr> {
        vec![
            "inject".as_ref(),
            "--root".as_ref(),
            root,
            card.as_ref(),
            "fail-reset".as_ref(),
        ]
    };
    let (ok, _, err) = run_as_nobody(micemu, &args("mic0"), None);
    assert!(!ok);
    assert!(
        err.contains("permission denied on micemu's control socket"),
        "{err}"
    );
    assert!(!err.contains("running?"), "{err}");
    for bad in ["mic+1", "mic01", "+1"] {
        let out = Command::new(micemu).args(args(bad)).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{bad} taken for a card");
        assert!(err.contains("is not a card name"), "{bad}: {err}");
    }
    for good in ["mic1", "1"] {
        let out = Command::new(micemu).args(args(good)).output().unwrap();
        assert!(
            out.status.success(),
            "{good}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
