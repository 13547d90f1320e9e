//! The harness: an in-process micemu fleet, mpssd as a real process, its
//! control socket, its systemd notifications and its log.
//!
//! mpssd runs in a network namespace of the test's own ([`own_netns`],
//! entered by the test's thread before it starts anything, so mpssd,
//! `curl` and `prometheus` share it and its loopback): the TAPs mpssd's
//! net devices make live and die there, never in the host's namespace.
//!
//! No sleeps as synchronisation: mpssd is ready when it sends READY=1 on
//! the notification socket the test made; everything after that is waited
//! for on the event stream, on libmic's state waits, or (the card log and
//! the log lines) re-read until a deadline.

#![allow(dead_code, unreachable_pub)]

pub mod console;

use std::io::{BufRead as _, BufReader};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use libmic::mpssd::{Client, Event, EventKind, Events};
use libmic::{BootRequest, Card, MicRoot};
use micemu::{Config, Fault, Instance, Timing};

pub const BIN: &str = env!("CARGO_BIN_EXE_mpssd");
/// Upper bound on anything a test waits for; only reached if something hangs.
pub const HANG: Duration = Duration::from_secs(30);

pub struct Fleet {
    inst: Instance,
    _dir: tempfile::TempDir,
}

impl Fleet {
    pub fn start(cards: u32) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let inst = Instance::start(
            dir.path(),
            Config {
                cards,
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

    pub fn instance(&self) -> &Instance {
        &self.inst
    }

    pub fn card(&self, id: u32) -> Card {
        MicRoot::new(self.root()).card_by_id(id)
    }

    /// What an operator does: `micctl boot`, then wait for the card OS.
    pub fn boot(&self, id: u32) {
        let c = self.card(id);
        let map = MicRoot::new(self.root()).system_map();
        c.boot_with(&BootRequest::defaults_for(&c), Some(&map)).unwrap();
        self.wait_os_up(id);
    }

    pub fn wait_os_up(&self, id: u32) {
        self.card(id).wait_os_up(Some(HANG)).unwrap();
    }

    pub fn inject(&self, id: u32, f: &Fault) {
        self.inst.inject(id, f).unwrap();
    }

    pub fn write_config(&self, text: &str) {
        let p = self.root().join("etc/mpss/mpssd.toml");
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        // Whole file at once (write then rename), as editors do.
        let tmp = p.with_extension("toml.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &p).unwrap();
    }

    /// How many times the card's OS reached init, by its own log.
    pub fn os_up_count(&self, id: u32) -> usize {
        let raw = self.card(id).log_buf_raw().unwrap();
        libmic::klog::decode(&raw)
            .iter()
            .filter(|r| r.text.contains(libmic::OS_UP_MARKER))
            .count()
    }
}

/// A running mpssd.
pub struct Daemon {
    pub child: Child,
    pub root: PathBuf,
    notify: UnixDatagram,
    _notify_dir: tempfile::TempDir,
    lines: Receiver<String>,
    pub log: Arc<Mutex<Vec<String>>>,
    done: bool,
}

pub struct Spawned {
    pub child: Child,
    notify: UnixDatagram,
    notify_dir: tempfile::TempDir,
    lines: Receiver<String>,
    log: Arc<Mutex<Vec<String>>>,
}

thread_local! {
    static NETNS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Moves the calling thread (once) into a new network namespace with its
/// loopback up: what it starts afterwards lives there (`unshare -n`).
pub fn own_netns() {
    if NETNS.with(std::cell::Cell::get) {
        return;
    }
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
        .expect("unshare(CLONE_NEWNET) (tests run as root)");
    let st = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .expect("ip (iproute2; .ci/run installs it)");
    assert!(st.success(), "ip link set lo up: {st}");
    NETNS.with(|n| n.set(true));
}

/// Starts mpssd for `root` with `args`, its stderr captured line by line,
/// `NOTIFY_SOCKET` pointing at a socket of the test's.
pub fn spawn(root: &Path, args: &[&str], env: &[(&str, &str)]) -> Spawned {
    let notify_dir = tempfile::tempdir().unwrap();
    let sock = notify_dir.path().join("notify");
    let notify = UnixDatagram::bind(&sock).unwrap();
    notify.set_read_timeout(Some(HANG)).unwrap();
    own_netns();
    let mut cmd = Command::new(BIN);
    cmd.arg("--root")
        .arg(root)
        .args(args)
        .env_remove("MIC_ROOT")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .env("NOTIFY_SOCKET", &sock)
        .env("MPSSD_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let (tx, lines) = mpsc::channel();
    let log = Arc::new(Mutex::new(Vec::new()));
    let stderr = child.stderr.take().unwrap();
    let keep = Arc::clone(&log);
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            keep.lock().unwrap().push(line.clone());
            let _ = tx.send(line);
        }
    });
    Spawned {
        child,
        notify,
        notify_dir,
        lines,
        log,
    }
}

impl Daemon {
    pub fn start(root: &Path, args: &[&str]) -> Self {
        Self::start_env(root, args, &[])
    }

    pub fn start_env(root: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let s = spawn(root, args, env);
        let mut d = Daemon {
            child: s.child,
            root: root.to_owned(),
            notify: s.notify,
            _notify_dir: s.notify_dir,
            lines: s.lines,
            log: s.log,
            done: false,
        };
        let ready = d.wait_notify(|m| m.lines().any(|l| l == "READY=1"));
        assert!(ready.contains("STATUS="), "{ready}");
        d
    }

    /// The next notification datagram matching `pred`.
    pub fn wait_notify(&mut self, pred: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        let mut buf = vec![0u8; 4096];
        loop {
            let n = self.notify.recv(&mut buf).unwrap_or_else(|e| {
                panic!(
                    "no notification ({e}) after {:?}; log:\n{}",
                    start.elapsed(),
                    self.log_text()
                )
            });
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            if pred(&msg) {
                return msg;
            }
            assert!(
                start.elapsed() < HANG,
                "no matching notification; log:\n{}",
                self.log_text()
            );
        }
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// The next log line containing `needle` (lines already read count).
    pub fn wait_log(&self, needle: &str) -> String {
        if let Some(l) = self.log.lock().unwrap().iter().find(|l| l.contains(needle)) {
            return l.clone();
        }
        let start = Instant::now();
        loop {
            match self.lines.recv_timeout(HANG.saturating_sub(start.elapsed())) {
                Ok(l) if l.contains(needle) => return l,
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                    panic!("{needle:?} never logged; log:\n{}", self.log_text())
                }
            }
        }
    }

    pub fn client(&self) -> Client {
        let mut c = Client::connect(&MicRoot::new(&self.root)).unwrap();
        c.set_timeout(Some(HANG)).unwrap();
        c
    }

    /// Card `card`'s device of kind `kind` as the control socket reports
    /// it, once `ready` holds (bounded by `HANG`): a request is counted
    /// once its answer is with the card, so a count may trail what the
    /// card was told by a moment.
    pub fn device_status(
        &self,
        card: u32,
        kind: &str,
        ready: impl Fn(&mpssd_proto::DeviceStatus) -> bool,
    ) -> mpssd_proto::DeviceStatus {
        let start = std::time::Instant::now();
        loop {
            let st = self.client().card_status(card).unwrap();
            let dev = st.devices.into_iter().find(|x| x.kind == kind).unwrap();
            if ready(&dev) {
                return dev;
            }
            assert!(start.elapsed() < HANG, "{dev:?}");
            std::thread::yield_now();
        }
    }

    pub fn events(&self) -> Events {
        let mut e = self.client().subscribe().unwrap();
        e.set_timeout(Some(HANG)).unwrap();
        e
    }

    pub fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.child.id() as i32)
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(self.pid(), sig).unwrap();
    }

    /// SIGKILL, as `kill -9`.
    pub fn kill9(mut self) {
        self.signal(nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
        self.done = true;
    }

    /// SIGTERM and the exit code.
    pub fn stop(mut self) -> i32 {
        // The process may be on its way out already (signalled by the test).
        let _ = nix::sys::signal::kill(self.pid(), nix::sys::signal::Signal::SIGTERM);
        let st = self.child.wait().unwrap();
        self.done = true;
        st.code().unwrap_or(-1)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if !self.done {
            let _ = nix::sys::signal::kill(self.pid(), nix::sys::signal::Signal::SIGKILL);
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- mpssd log\n{}", self.log_text());
        }
    }
}

/// Waits for the first event matching `pred`; panics with the events seen
/// if the stream ends or nothing matches within [`HANG`].
pub fn wait_event(events: &mut Events, what: &str, pred: impl Fn(&Event) -> bool) -> Event {
    let start = Instant::now();
    let mut seen = Vec::new();
    loop {
        let e = events
            .next_event()
            .unwrap_or_else(|e| panic!("waiting for {what}: {e}; seen: {seen:#?}"));
        if pred(&e) {
            return e;
        }
        seen.push(e);
        assert!(start.elapsed() < HANG, "no {what}; seen: {seen:#?}");
    }
}

/// A supervisor transition of `card` into `to`.
pub fn to_state(card: u32, to: libmic::mpssd::SupervisorState) -> impl Fn(&Event) -> bool {
    move |e| e.card == Some(card) && matches!(&e.kind, EventKind::Supervisor { to: t, .. } if *t == to)
}
