//! The demo's mpssd: mictop's own executable run again as mpssd (so
//! `cargo run -p mictop -- --demo` needs no other binary), for the demo's
//! root, in a network namespace of its own.
//!
//! mpssd's network devices are TAPs `micN` with the host's end
//! `172.31.N.254/24`: the demo must not touch the host's network, so the
//! child moves itself into a new network namespace before it runs mpssd
//! (as root `unshare(CLONE_NEWNET)`; otherwise a user namespace with it,
//! the user mapped to its own uid). The namespace lives and dies with the
//! process: nothing to clean up. If no namespace can be made, mpssd runs
//! without network devices (`net = false` in the generated configuration)
//! and the demo says so.
//!
//! The child is [`child_main`] (mictop's `main` and its bench's call it
//! first): the environment variable [`ENV`] tells it to be mpssd, how,
//! and who its parent is; it dies with its parent (`PR_SET_PDEATHSIG`).
//! The parent waits for mpssd's `READY=1` on a notification socket of its
//! own (every card adopted, its devices added), bounded, and stops it
//! with SIGTERM (bounded, then SIGKILL).

use std::fs::File;
use std::io::Read as _;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser as _;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Set in the child's environment: `own:PPID` (make a network namespace
/// first) or `host:PPID` (no network devices, no namespace needed).
pub const ENV: &str = "MICTOP_AS_MPSSD";

/// The child's exit code when it cannot make its network namespace.
const NO_NETNS: u8 = 75;

/// How long mpssd has to adopt every card and say `READY=1`.
const READY_LIMIT: Duration = Duration::from_secs(30);

/// How long mpssd has to stop after SIGTERM (it removes every device,
/// each bounded) before it is killed.
const STOP_LIMIT: Duration = Duration::from_secs(30);

/// How often a child that has not answered is looked at again.
const CHILD_POLL: Duration = Duration::from_millis(20);

/// The size of each card's (sparse) disk image.
pub const IMAGE_BYTES: u64 = 64 << 20;

/// In a child started by [`Mpssd::start`]: runs mpssd and returns its exit
/// code. `None`: this process is not one (mictop goes on).
#[must_use]
pub fn child_main() -> Option<u8> {
    let how = std::env::var(ENV).ok()?;
    let (mode, parent) = how.split_once(':').unwrap_or((how.as_str(), ""));
    // Dies with the demo; a parent gone before this was said: at once.
    if nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).is_err()
        || parent.parse::<i32>().ok() != Some(nix::unistd::getppid().as_raw())
    {
        eprintln!("mpssd (mictop --demo): the demo that started it is gone");
        return Some(mpssd::exit::FAILURE);
    }
    if mode == "own"
        && let Err(e) = own_netns()
    {
        eprintln!("mpssd (mictop --demo): no network namespace of its own: {e}");
        return Some(NO_NETNS);
    }
    let cli = mpssd::cli::Cli::parse();
    Some(mpssd::daemon::main(&cli))
}

/// Moves this (single-threaded) process into a new network namespace: as
/// root directly, otherwise inside a new user namespace that maps root to
/// the caller's uid and gid (so files and the FUSE mounts see the same
/// user).
fn own_netns() -> Result<(), String> {
    use nix::sched::{CloneFlags, unshare};
    let uid = nix::unistd::geteuid();
    if uid.is_root() {
        return unshare(CloneFlags::CLONE_NEWNET).map_err(|e| format!("unshare(CLONE_NEWNET): {e}"));
    }
    let gid = nix::unistd::getegid();
    unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNET).map_err(|e| {
        format!("unshare(CLONE_NEWUSER | CLONE_NEWNET): {e} (not root, and no user namespaces)")
    })?;
    let write = |file: &str, text: String| {
        std::fs::write(format!("/proc/self/{file}"), text).map_err(|e| format!("/proc/self/{file}: {e}"))
    };
    write("setgroups", "deny".into())?;
    write("uid_map", format!("0 {uid} 1\n"))?;
    write("gid_map", format!("0 {gid} 1\n"))
}

/// mpssd's configuration for the demo under `root`: every card's disk a
/// sparse image of [`IMAGE_BYTES`] (made here if missing); network
/// devices unless `net` is false.
pub fn prepare(root: &Path, cards: u32, net: bool) -> anyhow::Result<()> {
    let images = root.join("var/lib/mpss");
    std::fs::create_dir_all(&images).with_context(|| format!("creating {}", images.display()))?;
    for card in 0..cards {
        let path = images.join(format!("mic{card}.img"));
        if !path.exists() {
            let f = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
            f.set_len(IMAGE_BYTES)
                .with_context(|| format!("sizing {}", path.display()))?;
        }
    }
    let mut text = String::from(
        "# mictop --demo: mpssd for the emulated cards. Consoles and disks (sparse\n\
         # images beside this root); network devices in mpssd's own network namespace.\n",
    );
    if !net {
        text.push_str("[defaults]\nnet = false\n");
    }
    text.push_str("[defaults.block]\nimage = \"var/lib/mpss/mic{card}.img\"\n");
    let conf = root.join(mpssd::daemon::DEFAULT_CONFIG);
    if let Some(dir) = conf.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&conf, text).with_context(|| format!("writing {}", conf.display()))
}

/// Why mpssd did not come up.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// It could not make its network namespace (why, in its words).
    #[error("mpssd could not make a network namespace of its own: {0}")]
    NoNetns(String),
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

/// A running mpssd, a child of this process.
#[derive(Debug)]
pub struct Mpssd {
    child: Option<Child>,
    log: PathBuf,
    /// Its network devices live in a namespace of its own (else it has
    /// none).
    pub netns: bool,
}

impl Mpssd {
    /// Runs `exe` (a program whose `main` calls [`child_main`] first:
    /// mictop, or a test's copy of it) as mpssd for `root`, its log in
    /// `log`; in a network namespace of its own if `netns`. Returns once
    /// mpssd has adopted every card (`READY=1`).
    pub fn start(exe: &Path, root: &Path, log: &Path, netns: bool) -> Result<Self, StartError> {
        let run = root.join("run");
        std::fs::create_dir_all(&run).with_context(|| format!("creating {}", run.display()))?;
        let sock = run.join("mictop-demo-notify.sock");
        let _ = std::fs::remove_file(&sock);
        let notify = UnixDatagram::bind(&sock).with_context(|| format!("binding {}", sock.display()))?;
        notify
            .set_read_timeout(Some(CHILD_POLL))
            .context("the notification socket")?;
        let stderr = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let mode = if netns { "own" } else { "host" };
        let child = Command::new(exe)
            .arg0("mpssd")
            .arg("--root")
            .arg(root)
            .env(ENV, format!("{mode}:{}", std::process::id()))
            .env("NOTIFY_SOCKET", &sock)
            .env_remove("MIC_ROOT")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("starting {} as mpssd", exe.display()))?;
        let mut m = Mpssd {
            child: Some(child),
            log: log.to_owned(),
            netns,
        };
        let ready = m.wait_ready(&notify);
        let _ = std::fs::remove_file(&sock);
        ready.map(|()| m)
    }

    /// Waits for `READY=1`, or the child's end.
    fn wait_ready(&mut self, notify: &UnixDatagram) -> Result<(), StartError> {
        let deadline = Instant::now() + READY_LIMIT;
        let mut buf = [0u8; 4096];
        loop {
            // TIMEOUT: CHILD_POLL per read, READY_LIMIT in all.
            if let Ok(n) = notify.recv(&mut buf)
                && String::from_utf8_lossy(&buf[..n]).lines().any(|l| l == "READY=1")
            {
                return Ok(());
            }
            let child = self.child.as_mut().expect("the child until stopped");
            if let Some(status) = child.try_wait().context("waiting for mpssd")? {
                self.child = None;
                let said = self.log_tail();
                return Err(if status.code() == Some(i32::from(NO_NETNS)) {
                    StartError::NoNetns(said)
                } else {
                    StartError::Failed(anyhow::anyhow!(
                        "mpssd exited ({status}) before it was ready: {said}"
                    ))
                });
            }
            if Instant::now() >= deadline {
                let said = self.log_tail();
                return Err(StartError::Failed(anyhow::anyhow!(
                    "mpssd was not ready within {} s: {said}",
                    READY_LIMIT.as_secs()
                )));
            }
        }
    }

    /// The last lines of mpssd's log, for an error.
    fn log_tail(&self) -> String {
        let mut text = String::new();
        let _ = File::open(&self.log).and_then(|mut f| f.read_to_string(&mut text));
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(5)..].join("; ");
        if tail.is_empty() {
            format!("(nothing in {})", self.log.display())
        } else {
            tail
        }
    }

    /// Its process id.
    #[must_use]
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Where its log goes.
    #[must_use]
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Stops it (SIGTERM: it removes the cards' devices and leaves the
    /// cards running); killed if it has not stopped within its bound.
    pub fn stop(mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("mpssd had stopped by itself ({status}): {}", self.log_tail());
        }
        let pid = Pid::from_raw(child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + STOP_LIMIT;
        loop {
            if let Some(status) = child.try_wait()? {
                anyhow::ensure!(
                    status.success(),
                    "mpssd stopped with {status}: {}",
                    self.log_tail()
                );
                return Ok(());
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                anyhow::bail!("mpssd did not stop within {} s: killed", STOP_LIMIT.as_secs());
            }
            // TIMEOUT: STOP_LIMIT, looked at every CHILD_POLL.
            std::thread::sleep(CHILD_POLL);
        }
    }
}

impl Drop for Mpssd {
    fn drop(&mut self) {
        // Not stopped in order (a panic on the way): no orphan.
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The demo's mpssd for `root` with `cards`: its configuration written,
/// started in a network namespace of its own, or, if none can be made,
/// without network devices (the second value says why).
pub fn start_demo(
    exe: &Path,
    root: &Path,
    cards: u32,
    log: &Path,
) -> anyhow::Result<(Mpssd, Option<String>)> {
    prepare(root, cards, true)?;
    match Mpssd::start(exe, root, log, true) {
        Ok(m) => Ok((m, None)),
        Err(StartError::NoNetns(why)) => {
            prepare(root, cards, false)?;
            let m = Mpssd::start(exe, root, log, false).map_err(anyhow::Error::from)?;
            Ok((m, Some(why)))
        }
        Err(StartError::Failed(e)) => Err(e),
    }
}
