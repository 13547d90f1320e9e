//! mpssd for a fleet's root, as a process of its own: this test binary
//! run again, whose `mpssd_process_child` calls [`child_main`] (mpssd's
//! binary is that one call over the library). It is ready when it sends
//! READY=1 on a notification socket of the test's.

#![allow(dead_code, unreachable_pub)]

use std::io::Read as _;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;

use libmic::MicRoot;
use libmic::mpssd::Client;

use super::{HANG, sigstop, this_test};

/// Makes [`child_main`] run mpssd for this root.
const ROOT_ENV: &str = "MICCTL_TEST_MPSSD_ROOT";

/// Crashed cards are booted again at once, so a crash and its reboot are
/// over quickly.
pub const FAST_CRASH: &str = "[defaults]\ncrash_backoff = \"100ms\"\ncrash_backoff_max = \"200ms\"\n";

/// The body of [`Mpssd`]'s child: mpssd's `main` for the root in the
/// environment, its exit code the process's. Without the variable it
/// returns at once. A test binary that starts an [`Mpssd`] has
///
/// ```ignore
/// #[test]
/// #[ignore = "the child process of Mpssd; runs only when one starts it"]
/// fn mpssd_process_child() {
///     common::mpssd::child_main();
/// }
/// ```
pub fn child_main() {
    use clap::Parser as _;
    let Some(root) = std::env::var_os(ROOT_ENV) else {
        return;
    };
    // mpssd's net backend makes TAP devices and gives them addresses: in a
    // network namespace of this process's own, never the host's. The
    // threads mpssd starts from here inherit it.
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
        .expect("unshare(CLONE_NEWNET) (tests run as root)");
    let cli = mpssd::cli::Cli::parse_from([std::ffi::OsStr::new("mpssd"), "--root".as_ref(), &root]);
    std::process::exit(i32::from(mpssd::daemon::main(&cli)));
}

/// A running mpssd.
pub struct Mpssd {
    pub child: Child,
    pub root: PathBuf,
    stopped: bool,
    _notify_dir: tempfile::TempDir,
    log: Receiver<String>,
}

impl Mpssd {
    /// mpssd for `root`, `config` its configuration file; returns once it
    /// is ready (every card adopted).
    pub fn start(root: &Path, config: &str) -> Self {
        let etc = root.join("etc/mpss");
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(etc.join("mpssd.toml"), config).unwrap();
        let notify_dir = tempfile::tempdir().unwrap();
        let sock = notify_dir.path().join("notify");
        let notify = UnixDatagram::bind(&sock).unwrap();
        notify.set_read_timeout(Some(HANG)).unwrap();
        let mut child = this_test("mpssd_process_child")
            .env(ROOT_ENV, root)
            .env("NOTIFY_SOCKET", &sock)
            .env_remove("MIC_ROOT")
            .env_remove("WATCHDOG_USEC")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = stderr_lines(&mut child);
        let mut buf = [0u8; 4096];
        loop {
            let n = notify
                .recv(&mut buf)
                .unwrap_or_else(|e| panic!("mpssd not ready: {e}; log:\n{}", drain(&log)));
            if String::from_utf8_lossy(&buf[..n]).lines().any(|l| l == "READY=1") {
                break;
            }
        }
        Self {
            child,
            root: root.to_owned(),
            stopped: false,
            _notify_dir: notify_dir,
            log,
        }
    }

    /// A control-socket client, every wait bounded by [`HANG`].
    pub fn client(&self) -> Client {
        let mut c = Client::connect(&MicRoot::new(&self.root)).unwrap();
        c.set_timeout(Some(HANG)).unwrap();
        c
    }

    /// `kill -STOP`: an mpssd that no longer answers anything.
    pub fn freeze(&mut self) {
        sigstop(&self.child);
        self.stopped = true;
    }

    /// `kill -CONT` after [`Mpssd::freeze`].
    pub fn thaw(&mut self) {
        Command::new("kill")
            .args(["-CONT", &self.child.id().to_string()])
            .status()
            .unwrap();
        self.stopped = false;
    }

    /// SIGTERM (resuming it first if frozen); its exit code.
    pub fn stop(&mut self) -> i32 {
        if self.stopped {
            self.thaw();
        }
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        self.child.wait().unwrap().code().unwrap_or(-1)
    }
}

impl Drop for Mpssd {
    fn drop(&mut self) {
        // (A no-op once stop waited for it: the child is known to be gone.)
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- mpssd log\n{}", drain(&self.log));
        }
    }
}

fn stderr_lines(child: &mut Child) -> Receiver<String> {
    let err = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::BufReader::new(err).read_to_string(&mut text);
        for l in text.lines() {
            let _ = tx.send(l.to_owned());
        }
    });
    rx
}

fn drain(rx: &Receiver<String>) -> String {
    rx.try_iter().collect::<Vec<_>>().join("\n")
}
