//! `micctl console`'s tests and benchmark: card 0 booted under a running
//! mpssd ([`super::mpssd::Mpssd`]), its console up; micctl on a pty that is
//! its controlling terminal.
//!
//! No sleeps: the console is up when a broker client sees it up;
//! everything else is read until it arrives, bounded by [`HANG`].

#![allow(dead_code, unreachable_pub)]

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use libmic::mpssd::{AttachOptions, ConsoleItem, Event, EventKind, Replay, SupervisorState};
use libmic::{BootRequest, MicRoot};
use nix::sys::termios::{self, LocalFlags, Termios};

use super::mpssd::Mpssd;
use super::{BIN, Fleet, HANG};

/// Re-reads card 0's kernel log until a line contains `needle` (the log
/// has no change notification, as on real hardware).
pub fn wait_card_log(fleet: &Fleet, needle: &str) {
    let start = Instant::now();
    loop {
        let raw = fleet.card(0).log_buf_raw().unwrap();
        if libmic::klog::decode(&raw).iter().any(|r| r.text.contains(needle)) {
            return;
        }
        assert!(start.elapsed() < HANG, "{needle:?} never in the card's log");
        std::thread::yield_now();
    }
}

/// Card 0 booted under a running mpssd, its console up.
pub fn booted(config: &str) -> (Fleet, Mpssd) {
    let fleet = Fleet::start(1);
    let d = Mpssd::start(fleet.root(), config);
    let mut events = d.client().subscribe().unwrap();
    events.set_timeout(Some(HANG)).unwrap();
    let card = fleet.card(0);
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
