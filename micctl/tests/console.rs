//! `micctl console` end to end: micemu's card OS booted in this process,
//! mpssd as a process of its own (this test binary run again, calling
//! mpssd's `main`; in a network namespace of the test's own, for its TAP),
//! micctl as the operator runs it: on a pty that is its controlling
//! terminal (raw mode, the escape key, SIGWINCH), or with stdin a pipe.
//!
//! No sleeps: mpssd is ready when it sends READY=1 on the test's
//! notification socket; the console when a broker client sees it up;
//! everything else is read from the pty, micctl's output or the card's
//! log until it arrives, bounded by [`HANG`].

use std::fs::File;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use libmic::mpssd::{AttachOptions, Client, ConsoleItem, Event, EventKind, Replay, SupervisorState};
use libmic::{BootRequest, Card, MicRoot};
use micemu::{Config, Fault, Instance, Timing};
use nix::sys::termios::{self, LocalFlags, Termios};

const BIN: &str = env!("CARGO_BIN_EXE_micctl");
/// Upper bound on anything a test waits for; only reached if something hangs.
const HANG: Duration = Duration::from_secs(30);
/// Makes `mpssd_process_child` run mpssd for this root.
const MPSSD_ROOT_ENV: &str = "MICCTL_CONSOLE_TEST_MPSSD_ROOT";

/// The body of [`Mpssd`]'s child: mpssd's `main` for the root in the
/// environment. Without the variable it does nothing.
#[test]
#[ignore = "the child process of Mpssd; runs only when one starts it"]
fn mpssd_process_child() {
    use clap::Parser as _;
    let Some(root) = std::env::var_os(MPSSD_ROOT_ENV) else {
        return;
    };
    let cli = mpssd::cli::Cli::parse_from([std::ffi::OsStr::new("mpssd"), "--root".as_ref(), &root]);
    std::process::exit(i32::from(mpssd::daemon::main(&cli)));
}

struct Fleet {
    inst: Instance,
    _dir: tempfile::TempDir,
}

impl Fleet {
    fn start() -> Self {
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

    fn root(&self) -> &Path {
        self.inst.root()
    }

    fn card(&self) -> Card {
        MicRoot::new(self.root()).card_by_id(0)
    }

    /// Re-reads the card's kernel log until a line contains `needle` (the
    /// log has no change notification, as on real hardware).
    fn wait_card_log(&self, needle: &str) {
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
struct Mpssd {
    child: Child,
    root: std::path::PathBuf,
    log: Arc<Mutex<Vec<String>>>,
    _notify_dir: tempfile::TempDir,
}

/// Moves the calling thread (once) into a network namespace of its own:
/// mpssd, started from it, makes its TAP there.
fn own_netns() {
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
    fn start(root: &Path) -> Self {
        own_netns();
        let etc = root.join("etc/mpss");
        std::fs::create_dir_all(&etc).unwrap();
        // A crashed card is booted again at once.
        std::fs::write(
            etc.join("mpssd.toml"),
            "[defaults]\ncrash_backoff = \"100ms\"\ncrash_backoff_max = \"200ms\"\n",
        )
        .unwrap();
        let notify_dir = tempfile::tempdir().unwrap();
        let sock = notify_dir.path().join("notify");
        let notify = UnixDatagram::bind(&sock).unwrap();
        notify.set_read_timeout(Some(HANG)).unwrap();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "mpssd_process_child",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
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

    fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    fn client(&self) -> Client {
        let mut c = Client::connect(&MicRoot::new(&self.root)).unwrap();
        c.set_timeout(Some(HANG)).unwrap();
        c
    }

    /// Stops mpssd as a wedged daemon would be; returns once it has stopped
    /// (the kernel reports the stop to the parent once every thread has).
    fn sigstop(&self) {
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

    fn sigcont(&self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    }

    /// SIGTERM, and its exit code.
    fn stop(&mut self) -> i32 {
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
fn booted() -> (Fleet, Mpssd) {
    let fleet = Fleet::start();
    let d = Mpssd::start(fleet.root());
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

fn wait_event(events: &mut libmic::mpssd::Events, pred: impl Fn(&Event) -> bool) {
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
fn console_up(d: &Mpssd) {
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
fn marker() -> (String, String) {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    (format!("echo \"ma\"rk-{n}\r"), format!("mark-{n}\r\n"))
}

fn micctl(root: &Path, args: &[&str]) -> Command {
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
struct Tty {
    /// Until [`Tty::exit_code`] hands it to the thread that reaps it.
    child: Option<Child>,
    master: File,
    /// The slave, kept open to read its termios while micctl runs and after.
    slave: OwnedFd,
    screen: Arc<(Mutex<Vec<u8>>, Condvar)>,
    /// How much of the screen earlier waits consumed.
    seen: usize,
}

impl Tty {
    fn spawn(root: &Path, args: &[&str]) -> Self {
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
        let master = File::from(pty.master);
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
            slave: pty.slave,
            screen,
            seen: 0,
        }
    }

    /// Everything on the screen so far.
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.screen.0.lock().unwrap()).into_owned()
    }

    /// Waits until the screen, after what earlier waits consumed, contains
    /// `needle`; returns that part of it.
    fn wait_for(&mut self, needle: &str) -> String {
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

    fn type_(&mut self, keys: &[u8]) {
        self.master.write_all(keys).unwrap();
    }

    fn termios(&self) -> Termios {
        termios::tcgetattr(&self.slave).unwrap()
    }

    /// Sets the window's size: the kernel sends SIGWINCH to micctl.
    fn resize(&self, cols: u16, rows: u16) {
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
    fn exit_code(&mut self) -> i32 {
        let screen = Arc::clone(&self.screen);
        let child = self.child.take().expect("waited for once");
        wait_child(child, move || {
            String::from_utf8_lossy(&screen.0.lock().unwrap()).into_owned()
        })
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
fn wait_child(child: Child, what: impl Fn() -> String) -> i32 {
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
fn assert_raw(t: &Termios) {
    let l = t.local_flags;
    assert!(
        !l.intersects(LocalFlags::ECHO | LocalFlags::ICANON | LocalFlags::ISIG),
        "not raw: {l:?}"
    );
}

#[test]
fn attach_type_resize_and_detach_with_the_escape_key() {
    let (fleet, _d) = booted();
    let before = {
        let pty = nix::pty::openpty(None, None).unwrap();
        termios::tcgetattr(&pty.slave).unwrap()
    };
    let mut tty = Tty::spawn(fleet.root(), &[]);
    assert_eq!(tty.termios(), before, "a fresh pty's modes");
    let line = tty.wait_for("ctrl-] detaches");
    assert!(
        line.contains("micctl: attached to mic0's console read-write, pty /dev/pts/"),
        "{line}"
    );
    assert_raw(&tty.termios());
    // The window's size reached the card at attach.
    fleet.wait_card_log("hvc0: console size 132x43");
    tty.type_(b"uname -a\r");
    tty.wait_for("Linux mic0 3.10.0-micemu #1 SMP");
    tty.wait_for("k1om GNU/Linux\r\nroot@mic0:~# ");
    // SIGWINCH: the new size goes to the card.
    tty.resize(100, 30);
    fleet.wait_card_log("hvc0: console size 100x30");
    // ctrl-C is a key for the card, not a signal for micctl.
    tty.type_(b"echo never\x03");
    tty.wait_for("^C");
    tty.type_(b"\x1d");
    tty.wait_for("micctl: detached from mic0's console\r\n");
    assert_eq!(tty.exit_code(), 0, "{}", tty.text());
    assert_eq!(tty.termios(), before, "the terminal's modes came back");
}

#[test]
fn a_viewer_sees_the_writer_and_cannot_type_and_force_takes_over() {
    let (fleet, _d) = booted();
    let mut writer = Tty::spawn(fleet.root(), &["--escape", "ctrl-t"]);
    writer.wait_for("ctrl-t detaches");
    let mut viewer = Tty::spawn(fleet.root(), &["--ro"]);
    viewer.wait_for("attached to mic0's console read-only (\"micctl console on /dev/pts/");
    // A second operator without --ro gets read-only too, and is told who
    // holds the console.
    let mut second = Tty::spawn(fleet.root(), &[]);
    let line = second.wait_for("ctrl-] detaches");
    assert!(
        line.contains("read-only: \"micctl console on /dev/pts/"),
        "{line}"
    );
    assert!(line.contains("(--force takes it), pty /dev/pts/"), "{line}");
    assert!(line.contains("holds it read-write for "), "{line}");
    // The viewers see what the writer types and the card answers.
    let (mark, answer) = marker();
    writer.type_(mark.as_bytes());
    for t in [&mut writer, &mut viewer, &mut second] {
        t.wait_for(&answer);
    }
    // The viewer's keys are not typed: said once, and the card never gets them.
    viewer.type_(b"zz");
    viewer.wait_for("micctl: read-only: keystrokes are not sent; ctrl-] detaches\r\n");
    viewer.type_(b"zz");
    let (mark, answer) = marker();
    writer.type_(mark.as_bytes());
    let seen = writer.wait_for(&answer);
    assert!(
        !seen.contains("zz"),
        "the viewer's keys reached the card: {seen:?}"
    );
    assert_eq!(
        viewer.text().matches("keystrokes are not sent").count(),
        1,
        "said once: {}",
        viewer.text()
    );
    // --force takes the console: the writer is told who took it and ends
    // (its terminal restored), the taker types.
    let before = writer.termios();
    assert_raw(&before);
    let mut taker = Tty::spawn(fleet.root(), &["--force"]);
    let line = taker.wait_for("ctrl-] detaches");
    assert!(
        line.contains("read-write, taken from \"micctl console on /dev/pts/"),
        "{line}"
    );
    let end = writer.wait_for("detached\r\n");
    assert!(
        end.contains("micctl: error: \"micctl console on /dev/pts/"),
        "{end}"
    );
    assert!(
        end.contains("took mic0's console read-write (forced); detached"),
        "{end}"
    );
    assert_eq!(writer.exit_code(), 14, "{}", writer.text());
    assert!(
        writer
            .termios()
            .local_flags
            .contains(LocalFlags::ECHO | LocalFlags::ICANON),
        "the writer's terminal came back"
    );
    let (mark, answer) = marker();
    taker.type_(mark.as_bytes());
    viewer.wait_for(&answer);
    for t in [&mut viewer, &mut second, &mut taker] {
        t.type_(b"\x1d");
        t.wait_for("micctl: detached from mic0's console");
        assert_eq!(t.exit_code(), 0, "{}", t.text());
    }
}

#[test]
fn the_card_crashing_ends_the_session_with_the_card_down_code() {
    let (fleet, _d) = booted();
    let mut tty = Tty::spawn(fleet.root(), &[]);
    tty.wait_for("ctrl-] detaches");
    fleet
        .inst
        .inject(0, &Fault::Panic("console test".into()))
        .unwrap();
    let end = tty.wait_for("detached\r\n");
    assert!(
        end.contains("micctl: error: mic0 went down (") && end.contains("shutdown status crashed)"),
        "{end}"
    );
    assert_eq!(tty.exit_code(), 12, "{}", tty.text());
    assert!(tty.termios().local_flags.contains(LocalFlags::ECHO), "restored");
}

#[test]
fn a_signal_ends_the_session_with_the_terminal_restored() {
    let (fleet, _d) = booted();
    let mut tty = Tty::spawn(fleet.root(), &[]);
    tty.wait_for("ctrl-] detaches");
    assert_raw(&tty.termios());
    let pid = nix::unistd::Pid::from_raw(tty.child.as_ref().unwrap().id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    tty.wait_for("\nmicctl: SIGTERM; detached\r\n");
    // It dies of the signal, as an uncaught SIGTERM would end it.
    assert_eq!(tty.exit_code(), 128 + libc::SIGTERM, "{}", tty.text());
    assert!(
        tty.termios()
            .local_flags
            .contains(LocalFlags::ECHO | LocalFlags::ICANON),
        "restored"
    );
}

#[test]
fn follow_stays_attached_through_a_reboot_until_the_card_halts() {
    let (fleet, _d) = booted();
    let mut tty = Tty::spawn(fleet.root(), &["--follow"]);
    tty.wait_for("ctrl-] detaches");
    tty.type_(b"reboot\r");
    tty.wait_for("micctl: mic0's console went down (");
    tty.wait_for("micctl: mic0's console is up (");
    // The card booted again; its shell answers the same session.
    fleet.card().wait_os_up(Some(HANG)).unwrap();
    let (mark, answer) = marker();
    tty.type_(mark.as_bytes());
    tty.wait_for(&answer);
    tty.type_(b"halt\r");
    let end = tty.wait_for("detached\r\n");
    assert!(end.contains("micctl: error: mic0 went down ("), "{end}");
    assert_eq!(tty.exit_code(), 12, "{}", tty.text());
}

/// micctl with stdin a pipe holding `input`: its exit code, stdout, stderr.
fn script(root: &Path, input: &str, args: &[&str]) -> (i32, String, String) {
    let mut child = micctl(root, args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = read_all(child.stdout.take().unwrap());
    let err = read_all(child.stderr.take().unwrap());
    let code = wait_child(child, || "(a script)".to_owned());
    let text = |rx: Receiver<Vec<u8>>| String::from_utf8(rx.recv_timeout(HANG).unwrap()).unwrap();
    (code, text(out), text(err))
}

fn read_all(mut r: impl std::io::Read + Send + 'static) -> Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = r.read_to_end(&mut v);
        let _ = tx.send(v);
    });
    rx
}

#[test]
fn a_script_on_stdin_gets_its_answer() {
    let (fleet, d) = booted();
    let root = fleet.root();
    // --until: ends as soon as the answer is there.
    let (code, out, err) = script(root, "uname -a\n", &["--until", "GNU/Linux", "--timeout", "20s"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("Linux mic0 3.10.0-micemu #1 SMP"), "{out}");
    assert_eq!(err, "", "a script that got its answer is quiet");
    // Without --until, the answer is over when the card is quiet for --idle.
    let (mark, answer) = marker();
    let (code, out, err) = script(root, &format!("uname -n\n{mark}"), &["--idle", "300ms"]);
    assert_eq!(code, 0, "{out}\n{err}");
    // (The card echoes the second line as it is typed, before the first's answer.)
    assert!(
        out.starts_with("uname -n\r\n") && out.contains("\r\nmic0\r\n"),
        "{out}"
    );
    assert!(out.contains(&answer), "{out}");
    // Text that never comes: exit 6 at --timeout.
    let (code, _, err) = script(
        root,
        "uname -n\n",
        &["--until", "no such text", "--timeout", "1s"],
    );
    assert_eq!(code, 6, "{err}");
    assert_eq!(
        err,
        "micctl: error: mic0 did not print \"no such text\" within 1.0s\n"
    );
    // JSON Lines, each record valid by the schema; the replay of the
    // last 2 lines (the previous answer and the prompt) first.
    let (code, out, err) = script(
        root,
        "uname -m\n",
        &["--json", "--until", "k1om\r\n", "--replay", "2"],
    );
    assert_eq!(code, 0, "{err}");
    let records: Vec<serde_json::Value> = out.lines().map(validated).collect();
    assert_eq!(records[0]["type"], "console_attached", "{out}");
    assert_eq!(records[0]["mode"], "read_write", "{out}");
    let text = |replay: bool| -> String {
        records
            .iter()
            .filter(|r| r["type"] == "console_output" && r["replay"] == replay)
            .map(|r| r["data"].as_str().unwrap())
            .collect()
    };
    assert_eq!(text(true), "mic0\r\nroot@mic0:~# ", "{out}");
    assert!(text(false).starts_with("uname -m\r\nk1om\r\n"), "{out}");
    let last = records.last().unwrap();
    assert_eq!(
        (&last["type"], &last["end"], &last["exit_code"]),
        (&"console_end".into(), &"until".into(), &0.into()),
        "{out}"
    );
    // A script cannot type while an operator holds the console.
    let mut tty = Tty::spawn(root, &[]);
    tty.wait_for("ctrl-] detaches");
    let (code, _, err) = script(root, "uname\n", &["--timeout", "5s"]);
    assert_eq!(code, 14, "{err}");
    assert!(
        err.starts_with("micctl: error: mic0's console is held read-write by \"micctl console on /dev/pts/"),
        "{err}"
    );
    // Watching with --ro is fine meanwhile: JSON Lines, valid by the
    // schema, from the attach to the end.
    let (mark, answer) = marker();
    let mut watcher = micctl(root, &["--ro", "--until", &answer, "--timeout", "20s"])
        .arg("--json")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = lines_of(watcher.stdout.take().unwrap());
    let first = validated(&lines.recv_timeout(HANG).unwrap());
    assert_eq!(first["type"], "console_attached", "{first}");
    assert_eq!(first["mode"], "read_only");
    assert_eq!(first["escape"], serde_json::Value::Null);
    assert!(
        first["writer"]["name"]
            .as_str()
            .unwrap()
            .starts_with("micctl console on /dev/pts/"),
        "{first}"
    );
    tty.type_(mark.as_bytes());
    let mut text = String::new();
    let last = loop {
        let v = validated(&lines.recv_timeout(HANG).unwrap());
        match v["type"].as_str() {
            Some("console_output") => text.push_str(v["data"].as_str().unwrap()),
            Some("console_end") => break v,
            _ => {}
        }
    };
    assert!(text.contains(&answer), "{text}");
    assert_eq!(last["end"], "until");
    assert_eq!(last["exit_code"], 0);
    assert_eq!(wait_child(watcher, || "(the watcher)".to_owned()), 0);
    let _ = d;
}

/// A child's stdout, line by line as it comes.
fn lines_of(out: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    rx
}

/// One JSON Lines record, held to micctl's schema.
fn validated(line: &str) -> serde_json::Value {
    static SCHEMA: std::sync::OnceLock<jsonschema::Validator> = std::sync::OnceLock::new();
    let schema = SCHEMA.get_or_init(|| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/micctl.schema.json");
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        jsonschema::validator_for(&v).unwrap()
    });
    let v: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    let errors: Vec<String> = schema.iter_errors(&v).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{errors:?} in {line}");
    v
}

#[test]
fn without_mpssd_or_with_it_stopping() {
    let fleet = Fleet::start();
    let card = fleet.card();
    // Not running: one line, at once.
    let start = Instant::now();
    let out = micctl(fleet.root(), &[]).stdin(Stdio::null()).output().unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(10), "{err}");
    assert_eq!(
        err,
        format!(
            "micctl: error: mpssd is not running for this root (no {}/run/mpssd/control.sock)\n",
            fleet.root().display()
        )
    );
    assert!(start.elapsed() < Duration::from_secs(5), "{:?}", start.elapsed());
    // An offline card has no console.
    let mut d = Mpssd::start(fleet.root());
    let out = micctl(fleet.root(), &[]).stdin(Stdio::null()).output().unwrap();
    assert_eq!(out.status.code(), Some(12));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        "micctl: error: mic0 is offline: its console is down (boot it first: micctl boot mic0)\n"
    );
    // mpssd stopping ends an attached session.
    let map = MicRoot::new(fleet.root()).system_map();
    card.boot_with(&BootRequest::defaults_for(&card), Some(&map))
        .unwrap();
    card.wait_os_up(Some(HANG)).unwrap();
    console_up(&d);
    // A stopped mpssd (its socket takes the connection, nobody answers)
    // costs the deadline, then exit 6.
    d.sigstop();
    let start = Instant::now();
    let out = micctl(fleet.root(), &["--timeout", "1s"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(6));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        "micctl: error: mpssd did not answer the attach within 1s\n"
    );
    assert!(start.elapsed() < Duration::from_secs(5), "{:?}", start.elapsed());
    d.sigcont();
    let mut tty = Tty::spawn(fleet.root(), &[]);
    tty.wait_for("ctrl-] detaches");
    assert_eq!(d.stop(), 0);
    let end = tty.wait_for("detached\r\n");
    assert!(end.contains("micctl: error: mpssd stopped ("), "{end}");
    assert_eq!(tty.exit_code(), 10, "{}", tty.text());
}
