//! The harness of `micctl console`'s tests and benchmark: an in-process
//! micemu card, mpssd as a process of its own (the test or bench
//! executable run again, calling mpssd's `main`: [`mpssd_child_main`]; in
//! a network namespace of the caller's own, for its TAP), micctl on a pty
//! that is its controlling terminal.
//!
//! No sleeps: mpssd is ready when it sends READY=1 on a notification
//! socket of ours; the console when a broker client sees it up;
//! everything else is read until it arrives, bounded by [`HANG`].

#![allow(dead_code, unreachable_pub)]

use std::fs::File;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use libmic::mpssd::{AttachOptions, Client, ConsoleItem, Event, EventKind, Replay, SupervisorState};
use libmic::{BootRequest, Card, MicRoot};
use micemu::{Config, Instance, Timing};
use nix::sys::termios::{self, LocalFlags, Termios};

pub const BIN: &str = env!("CARGO_BIN_EXE_micctl");
/// Upper bound on anything a test waits for; only reached if something hangs.
pub const HANG: Duration = Duration::from_secs(30);
/// Makes [`mpssd_child_main`] run mpssd for this root.
const MPSSD_ROOT_ENV: &str = "MICCTL_CONSOLE_TEST_MPSSD_ROOT";

/// What [`Mpssd`]'s child runs: mpssd's `main` for the root in the
/// environment (and exits with its code). Without the variable it
/// returns at once.
pub fn mpssd_child_main() {
    use clap::Parser as _;
    let Some(root) = std::env::var_os(MPSSD_ROOT_ENV) else {
        return;
    };
    let cli = mpssd::cli::Cli::parse_from([std::ffi::OsStr::new("mpssd"), "--root".as_ref(), &root]);
    std::process::exit(i32::from(mpssd::daemon::main(&cli)));
}

pub struct Fleet {
    pub inst: Instance,
    _dir: tempfile::TempDir,
}

impl Fleet {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let inst = Instance::start(
            dir.path(),
            Config {
                cards: 1,
                timing: Timing::FAST,
                memory: 1 << 30,
                ..Default::default()
            },
        )
        .unwrap();
        Self { inst, _dir: dir }
    }

    pub fn root(&self) -> &Path {
        self.inst.root()
    }

    pub fn card(&self) -> Card {
        MicRoot::new(self.root()).card_by_id(0)
    }

    /// Re-reads the card's kernel log until a line contains `needle` (the
    /// log has no change notification, as on real hardware).
    pub fn wait_card_log(&self, needle: &str) {
        let start = Instant::now();
        loop {
            let raw = self.card().log_buf_raw().unwrap();
            if libmic::klog::decode(&raw).iter().any(|r| r.text.contains(needle)) {
                return;
            }
            assert!(start.elapsed() < HANG, "{needle:?} never in the card's log");
            std::thread::yield_now();
        }
    }
}

/// mpssd for a fleet's root, as a process of its own.
pub struct Mpssd {
    pub child: Child,
    pub root: std::path::PathBuf,
    log: Arc<Mutex<Vec<String>>>,
    _notify_dir: tempfile::TempDir,
}

/// Moves the calling thread (once) into a network namespace of its own:
/// mpssd, started from it, makes its TAP there.
pub fn own_netns() {
    thread_local! {
        static DONE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    if !DONE.with(std::cell::Cell::get) {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .expect("unshare(CLONE_NEWNET) (tests run as root)");
        DONE.with(|d| d.set(true));
    }
}

impl Mpssd {
    /// Starts mpssd for `root` with `config` as its configuration file:
    /// this executable run again with `args`, which must make it call
    /// [`mpssd_child_main`].
    pub fn start(root: &Path, config: &str, args: &[&str]) -> Self {
        own_netns();
        let etc = root.join("etc/mpss");
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(etc.join("mpssd.toml"), config).unwrap();
        let notify_dir = tempfile::tempdir().unwrap();
        let sock = notify_dir.path().join("notify");
        let notify = UnixDatagram::bind(&sock).unwrap();
        notify.set_read_timeout(Some(HANG)).unwrap();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(args)
            .env(MPSSD_ROOT_ENV, root)
            .env("NOTIFY_SOCKET", &sock)
            .env("MPSSD_LOG", "debug")
            .env_remove("MIC_ROOT")
            .env_remove("WATCHDOG_USEC")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let keep = Arc::clone(&log);
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                keep.lock().unwrap().push(line);
            }
        });
        let m = Self {
            child,
            root: root.to_owned(),
            log,
            _notify_dir: notify_dir,
        };
        let mut buf = [0u8; 4096];
        loop {
            let n = notify
                .recv(&mut buf)
                .unwrap_or_else(|e| panic!("no READY=1 from mpssd ({e}); log:\n{}", m.log_text()));
            if String::from_utf8_lossy(&buf[..n]).lines().any(|l| l == "READY=1") {
                return m;
            }
        }
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    pub fn client(&self) -> Client {
        let mut c = Client::connect(&MicRoot::new(&self.root)).unwrap();
        c.set_timeout(Some(HANG)).unwrap();
        c
    }

    /// Stops mpssd as a wedged daemon would be; returns once it has stopped
    /// (the kernel reports the stop to the parent once every thread has).
    pub fn sigstop(&self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
        let mut status = 0;
        // SAFETY: waitpid on our own child with a pointer to a local;
        // WUNTRACED reports the stop without reaping the child.
        let r = unsafe { libc::waitpid(pid.as_raw(), &raw mut status, libc::WUNTRACED) };
        assert!(
            r == pid.as_raw() && libc::WIFSTOPPED(status),
            "mpssd did not stop"
        );
    }

    pub fn sigcont(&self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    }

    /// SIGTERM, and its exit code.
    pub fn stop(&mut self) -> i32 {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        self.child.wait().unwrap().code().unwrap_or(-1)
    }
}

impl Drop for Mpssd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- mpssd log\n{}", self.log_text());
        }
    }
}

/// Card 0 booted under a running mpssd, its console up.
pub fn booted(config: &str, mpssd_args: &[&str]) -> (Fleet, Mpssd) {
    let fleet = Fleet::start();
    let d = Mpssd::start(fleet.root(), config, mpssd_args);
    let mut events = d.client().subscribe().unwrap();
    events.set_timeout(Some(HANG)).unwrap();
    let card = fleet.card();
    let map = MicRoot::new(fleet.root()).system_map();
    card.boot_with(&BootRequest::defaults_for(&card), Some(&map))
        .unwrap();
    card.wait_os_up(Some(HANG)).unwrap();
    wait_event(&mut events, |e| {
        e.card == Some(0)
            && matches!(
                e.kind,
                EventKind::Supervisor {
                    to: SupervisorState::Running,
                    ..
                }
            )
    });
    console_up(&d);
    (fleet, d)
}

pub fn wait_event(events: &mut libmic::mpssd::Events, pred: impl Fn(&Event) -> bool) {
    let start = Instant::now();
    loop {
        let e = events.next_event().unwrap();
        if pred(&e) {
            return;
        }
        assert!(start.elapsed() < HANG, "no such event");
    }
}

/// Waits, as a read-only broker client, until the card's console is up.
pub fn console_up(d: &Mpssd) {
    let c = d
        .client()
        .attach_console(0, &AttachOptions::read_only().replay(Replay::Bytes(0)))
        .unwrap();
    let (attached, mut out, _) = c.split();
    let mut up = attached.device_up;
    while !up {
        match out.next_item().unwrap() {
            ConsoleItem::Device { up: u, .. } => up = u,
            ConsoleItem::Ended(e) => panic!("the console ended: {e}"),
            _ => {}
        }
    }
}

/// A line that makes the shell print `mark-N`: that text is not in the
/// echo of the line (the quotes are), so once it arrives everything typed
/// before was answered.
pub fn marker() -> (String, String) {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    (format!("echo \"ma\"rk-{n}\r"), format!("mark-{n}\r\n"))
}

pub fn micctl(root: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.arg("--root")
        .arg(root)
        .arg("console")
        .arg("mic0")
        .args(args)
        .env_remove("MIC_ROOT")
        .env("TERM", "dumb");
    c
}

/// micctl on a pty of its own: its controlling terminal, stdin, stdout
/// and stderr.
pub struct Tty {
    /// Until [`Tty::exit_code`] hands it to the thread that reaps it.
    pub child: Option<Child>,
    pub master: File,
    /// The slave, kept open to read its termios while micctl runs and after.
    slave: OwnedFd,
    screen: Arc<(Mutex<Vec<u8>>, Condvar)>,
    /// How much of the screen earlier waits consumed.
    seen: usize,
}

impl Tty {
    pub fn spawn(root: &Path, args: &[&str]) -> Self {
        let (child, master, slave) = spawn_on_pty(root, args);
        let screen = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let (mut rd, keep) = (master.try_clone().unwrap(), Arc::clone(&screen));
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // Ends with EIO once micctl and every other holder of the
            // slave... the test keeps one, so it ends when the test drops it.
            while let Ok(n) = rd.read(&mut buf) {
                if n == 0 {
                    break;
                }
                keep.0.lock().unwrap().extend_from_slice(&buf[..n]);
                keep.1.notify_all();
            }
        });
        Self {
            child: Some(child),
            master,
            slave,
            screen,
            seen: 0,
        }
    }

    /// Everything on the screen so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.screen.0.lock().unwrap()).into_owned()
    }

    /// Waits until the screen, after what earlier waits consumed, contains
    /// `needle`; returns that part of it.
    pub fn wait_for(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + HANG;
        let (lock, cv) = &*self.screen;
        let mut screen = lock.lock().unwrap();
        loop {
            let text = String::from_utf8_lossy(&screen[self.seen..]).into_owned();
            if let Some(at) = text.find(needle) {
                self.seen += at + needle.len();
                return text;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "{needle:?} never on the screen; it shows:\n{text}"
            );
            screen = cv.wait_timeout(screen, left).unwrap().0;
        }
    }

    pub fn type_(&mut self, keys: &[u8]) {
        self.master.write_all(keys).unwrap();
    }

    pub fn termios(&self) -> Termios {
        termios::tcgetattr(&self.slave).unwrap()
    }

    /// Sets the window's size: the kernel sends SIGWINCH to micctl.
    pub fn resize(&self, cols: u16, rows: u16) {
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one winsize from a live local.
        let r = unsafe {
            libc::ioctl(
                std::os::fd::AsRawFd::as_raw_fd(&self.master),
                libc::TIOCSWINSZ,
                &raw const ws,
            )
        };
        assert_eq!(r, 0, "TIOCSWINSZ");
    }

    /// micctl's exit code, waited for at most [`HANG`].
    pub fn exit_code(&mut self) -> i32 {
        let screen = Arc::clone(&self.screen);
        let child = self.child.take().expect("waited for once");
        wait_child(child, move || {
            String::from_utf8_lossy(&screen.0.lock().unwrap()).into_owned()
        })
    }
}

/// micctl on a new pty (132x43) that becomes its controlling terminal:
/// it, the pty's master and its slave.
pub fn spawn_on_pty(root: &Path, args: &[&str]) -> (Child, File, OwnedFd) {
    let size = nix::pty::Winsize {
        ws_row: 43,
        ws_col: 132,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&size), None).unwrap();
    let mut cmd = micctl(root, args);
    cmd.stdin(pty.slave.try_clone().unwrap())
        .stdout(pty.slave.try_clone().unwrap())
        .stderr(pty.slave.try_clone().unwrap());
    // SAFETY: between fork and exec the closure calls only setsid and
    // ioctl, both async-signal-safe, and allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid()?;
            // The pty (stdin) becomes the session's controlling terminal.
            if libc::ioctl(0, libc::TIOCSCTTY, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().unwrap();
    (child, File::from(pty.master), pty.slave)
}

/// Reads `from` until what it read ends with `suffix` (for a benchmark:
/// no thread between the read and the clock).
pub fn read_until_suffix(from: &mut File, suffix: &[u8]) {
    read_while(from, |got| !got.ends_with(suffix));
}

/// Reads `from` until what it read contains `needle`.
pub fn read_until_contains(from: &mut File, needle: &[u8]) {
    read_while(from, |got| !got.windows(needle.len()).any(|w| w == needle));
}

fn read_while(from: &mut File, more: impl Fn(&[u8]) -> bool) {
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while more(&got) {
        let n = from.read(&mut buf).unwrap();
        assert!(n > 0, "EOF; got {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
}

impl Drop for Tty {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A child's exit code, waited for at most [`HANG`] (`what` shows when it
/// does not end; it is killed then). The child is reaped by a thread that
/// owns it, so nothing signals a pid that may have been reused.
pub fn wait_child(child: Child, what: impl Fn() -> String) -> i32 {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut child = child;
        let _ = tx.send(child.wait());
    });
    let Ok(status) = rx.recv_timeout(HANG) else {
        // Not reaped yet (the thread would have said): the pid is still ours.
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        panic!("micctl did not end; it showed:\n{}", what());
    };
    let status = status.unwrap();
    status
        .code()
        .unwrap_or_else(|| 128 + std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0))
}

/// Asserts the terminal is in raw mode: no echo, no line editing, no
/// signals from keys.
pub fn assert_raw(t: &Termios) {
    let l = t.local_flags;
    assert!(
        !l.intersects(LocalFlags::ECHO | LocalFlags::ICANON | LocalFlags::ISIG),
        "not raw: {l:?}"
    );
}
