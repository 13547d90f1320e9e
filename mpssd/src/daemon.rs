//! Start-up, the running daemon, and the orderly stop.
//!
//! Start: configuration (refused → exit 4), cards (no driver → exit 3),
//! `run/mpssd/mpssd.lock` (held → exit 5), the control socket, the metrics
//! endpoint, one supervisor per card. Once every supervisor has adopted its
//! card: systemd `READY=1`. Then `STATUS=` on every supervisor change,
//! `WATCHDOG=1` at half of `WatchdogSec` if set, reloads on SIGHUP and on
//! file changes, disk images re-read on SIGUSR1. SIGTERM or SIGINT: every connection is told, every
//! supervisor removes its card's devices (cards are left running, to be
//! adopted by the next mpssd), exit 0.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use libmic::MicRoot;
use mpssd_proto::{DaemonStep, EventKind, ReloadSource};
use nix::fcntl::{Flock, FlockArg};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{oneshot, watch};

use crate::cli::Cli;
use crate::config::Config;
use crate::devices::Backends;
use crate::devices::card::CardBackends;
use crate::exit;
use crate::sdnotify::{Notifier, watchdog_interval};
use crate::shared::{CardHandle, Shared};
use crate::supervisor::Supervisor;

/// The configuration file, relative to the root.
pub const DEFAULT_CONFIG: &str = "etc/mpss/mpssd.toml";
/// The lock file, relative to the root.
pub const LOCK_PATH: &str = "run/mpssd/mpssd.lock";
/// How long adoption of all cards may take before READY=1 is sent anyway.
pub const ADOPT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the supervisors get to stop (their device removal is bounded
/// by `devices::REMOVE_TIMEOUT`).
pub const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs mpssd as `cli` says; returns the exit code.
#[must_use]
pub fn main(cli: &Cli) -> u8 {
    crate::logging::init();
    let root = MicRoot::from_env_or(cli.root.clone());
    let config_path = cli.config.clone().unwrap_or_else(|| root.join(DEFAULT_CONFIG));
    if cli.check_config {
        return match Config::load(&config_path, false) {
            Ok(_) => {
                println!("{}: ok", config_path.display());
                exit::OK
            }
            Err(e) => {
                eprintln!("mpssd: {e}");
                exit::BAD_CONFIG
            }
        };
    }
    // The default file may be absent (built-in defaults); a named one not.
    let config = match Config::load(&config_path, cli.config.is_none()) {
        Ok(c) => c,
        Err(e) => {
            log::error!(target: "mpssd", "{e}");
            return exit::BAD_CONFIG;
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            log::error!(target: "mpssd", "starting the runtime: {e}");
            return exit::FAILURE;
        }
    };
    let code = rt.block_on(async {
        match run(cli, root, config_path, config, Arc::new(CardBackends)).await {
            Ok(()) => exit::OK,
            Err(e) => {
                let code = e
                    .downcast_ref::<StartError>()
                    .map_or(exit::FAILURE, StartError::code);
                log::error!(target: "mpssd", "{e:#}");
                code
            }
        }
    });
    // Blocking calls left behind by a hung driver must not keep the
    // process alive.
    rt.shutdown_timeout(Duration::from_secs(1));
    code
}

/// A start-up failure with its own exit code.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    DriverAbsent(libmic::Error),
    #[error("another mpssd runs for this root ({0})")]
    AlreadyRunning(String),
    #[error("{0}")]
    BadConfig(String),
}

impl StartError {
    fn code(&self) -> u8 {
        match self {
            StartError::DriverAbsent(_) => exit::DRIVER_ABSENT,
            StartError::AlreadyRunning(_) => exit::ALREADY_RUNNING,
            StartError::BadConfig(_) => exit::BAD_CONFIG,
        }
    }
}

/// Takes `run/mpssd/mpssd.lock` (released by the kernel however mpssd
/// ends, `kill -9` included) and writes our pid into it.
fn lock(root: &MicRoot) -> Result<Flock<std::fs::File>> {
    let path = root.join(LOCK_PATH);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(mut f) => {
            f.set_len(0)?;
            writeln!(f, "{}", std::process::id())?;
            Ok(f)
        }
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
            let pid = std::fs::read_to_string(&path).unwrap_or_default();
            Err(StartError::AlreadyRunning(format!("pid {}, lock {}", pid.trim(), path.display())).into())
        }
        Err((_, e)) => Err(e).with_context(|| format!("locking {}", path.display())),
    }
}

/// Raises the soft open-files limit to the hard one (each control client is
/// an fd).
fn raise_nofile() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}

fn metrics_addr(cli: &Cli, config: &Config) -> Result<Option<std::net::SocketAddr>> {
    if !config.metrics.enabled {
        if cli.metrics.is_some() {
            log::info!(target: "mpssd", "--metrics ignored: metrics.enabled = false in the configuration");
        }
        return Ok(None);
    }
    let addr = cli.metrics.or(config.metrics.listen);
    if let Some(a) = addr {
        if !a.ip().is_loopback() && !config.metrics.allow_remote {
            return Err(StartError::BadConfig(format!(
                "--metrics {a}: not a loopback address; set metrics.allow_remote = true to serve it"
            ))
            .into());
        }
    }
    Ok(addr)
}

/// The running daemon, with `backends` for the cards' devices.
pub async fn run(
    cli: &Cli,
    root: MicRoot,
    config_path: PathBuf,
    config: Config,
    backends: Arc<dyn Backends>,
) -> Result<()> {
    let cards = root.cards().map_err(StartError::DriverAbsent)?;
    let _lock = lock(&root)?;
    raise_nofile();
    let metrics = metrics_addr(cli, &config)?;
    let group = config.daemon.control_group.clone();
    match &config.source {
        Some(p) => log::info!(target: "mpssd", "configuration {}", p.display()),
        None => log::info!(
            target: "mpssd",
            "no configuration file at {}: built-in defaults",
            config_path.display()
        ),
    }
    let shared = Arc::new(Shared::new(root.clone(), config_path, config));
    let sock_path = root.mpssd_socket();
    let listener = crate::control::bind(&sock_path, group.as_deref())?;
    log::info!(target: "mpssd", "control socket {}", sock_path.display());
    let metrics_task = match metrics {
        Some(addr) => {
            let l = crate::metrics::bind(addr).await?;
            let local = l.local_addr()?;
            log::info!(target: "mpssd", "metrics at http://{local}/metrics");
            Some(tokio::spawn(crate::metrics::serve(Arc::clone(&shared), l)))
        }
        None => None,
    };
    shared.emit(
        None,
        EventKind::Daemon {
            what: DaemonStep::Started,
        },
    );

    let (stop_tx, stop_rx) = watch::channel(false);
    let (adopted, tasks) = start_supervisors(&shared, cards, backends.as_ref(), &stop_rx)?;
    let mut server_stop = stop_rx.clone();
    let server = tokio::spawn(crate::control::run(
        Arc::clone(&shared),
        listener,
        sock_path,
        async move {
            let _ = server_stop.wait_for(|s| *s).await;
        },
    ));
    let _watcher = crate::reload::watch_file(Arc::clone(&shared));
    let notifier = Arc::new(Notifier::from_env());
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
    let mut usr1 = signal(SignalKind::user_defined1()).context("SIGUSR1 handler")?;

    wait_adopted(adopted).await;
    let status_line = status_line(&shared);
    notifier.notify(&format!("READY=1\nSTATUS={status_line}"));
    shared.emit(
        None,
        EventKind::Daemon {
            what: DaemonStep::Ready,
        },
    );
    log::info!(target: "mpssd", "ready: {status_line}");
    let status_task = tokio::spawn(status_updates(Arc::clone(&shared), Arc::clone(&notifier)));
    let watchdog_task = watchdog_interval().map(|every| {
        let n = Arc::clone(&notifier);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                n.notify("WATCHDOG=1");
            }
        })
    });

    until_stopped(&shared, &mut term, &mut int, &mut hup, &mut usr1).await;

    notifier.notify("STOPPING=1\nSTATUS=stopping");
    shared.emit(
        None,
        EventKind::Daemon {
            what: DaemonStep::Stopping,
        },
    );
    let _ = stop_tx.send(true);
    wait_stopped(tasks).await;
    // TIMEOUT: the server bounds its own drain (control::DRAIN_TIMEOUT).
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
    status_task.abort();
    if let Some(t) = watchdog_task {
        t.abort();
    }
    if let Some(t) = metrics_task {
        t.abort();
    }
    log::info!(target: "mpssd", "stopped");
    Ok(())
}

/// Reloads on SIGHUP, swaps disks on SIGUSR1, until SIGTERM or SIGINT.
async fn until_stopped(
    shared: &Arc<Shared>,
    term: &mut tokio::signal::unix::Signal,
    int: &mut tokio::signal::unix::Signal,
    hup: &mut tokio::signal::unix::Signal,
    usr1: &mut tokio::signal::unix::Signal,
) {
    loop {
        tokio::select! {
            _ = term.recv() => return,
            _ = int.recv() => return,
            _ = hup.recv() => {
                let _ = shared.reload(ReloadSource::Sighup).await;
            }
            _ = usr1.recv() => swap_all_disks(shared),
        }
    }
}

/// SIGUSR1, as the original's: every card's disk is removed and added
/// again on the image the configuration (or `mpssd%03d.conf`) names now.
fn swap_all_disks(shared: &Arc<Shared>) {
    log::info!(target: "mpssd", "SIGUSR1: re-reading every card's disk image");
    for (&card, h) in shared.cards() {
        if let Some(block) = h.view.block() {
            let s = Arc::clone(shared);
            tokio::spawn(async move {
                let _ = crate::devices::card::swap_block(&s, card, block, None, "SIGUSR1").await;
            });
        }
    }
}

type Started = (Vec<oneshot::Receiver<()>>, Vec<tokio::task::JoinHandle<()>>);

/// One supervisor per card; their handles go into `shared`.
fn start_supervisors(
    shared: &Arc<Shared>,
    cards: Vec<libmic::Card>,
    backends: &dyn Backends,
    stop: &watch::Receiver<bool>,
) -> Result<Started> {
    let mut handles = BTreeMap::new();
    let mut adopted = Vec::new();
    let mut tasks = Vec::new();
    for card in cards {
        let devices = backends.device_set(&card, shared);
        let view = devices.view();
        let (tx, rx) = oneshot::channel();
        let (sup, status) = Supervisor::new(card.clone(), Arc::clone(shared), devices, stop.clone(), tx);
        handles.insert(card.id(), CardHandle { status, view });
        adopted.push(rx);
        tasks.push(tokio::spawn(sup.run()));
    }
    if shared.cards.set(handles).is_err() {
        bail!("card handles set twice");
    }
    Ok((adopted, tasks))
}

/// Until every supervisor has adopted its card (bounded).
async fn wait_adopted(adopted: Vec<oneshot::Receiver<()>>) {
    let deadline = tokio::time::Instant::now() + ADOPT_TIMEOUT;
    for rx in adopted {
        // TIMEOUT: ADOPT_TIMEOUT for all cards together.
        if tokio::time::timeout_at(deadline, rx).await.is_err() {
            log::warn!(target: "mpssd", "not every card was adopted within {ADOPT_TIMEOUT:?}; ready anyway");
            break;
        }
    }
}

/// Until every supervisor has stopped (bounded).
async fn wait_stopped(tasks: Vec<tokio::task::JoinHandle<()>>) {
    let deadline = tokio::time::Instant::now() + STOP_TIMEOUT;
    for t in tasks {
        // TIMEOUT: STOP_TIMEOUT for every supervisor together.
        if tokio::time::timeout_at(deadline, t).await.is_err() {
            log::warn!(target: "mpssd", "a supervisor did not stop within {STOP_TIMEOUT:?}");
            break;
        }
    }
}

/// `2 cards: mic0 running, mic1 idle`.
fn status_line(shared: &Shared) -> String {
    let cards = shared.cards();
    let parts: Vec<String> = cards
        .values()
        .map(|h| {
            let s = h.status.borrow();
            format!("{} {}", s.name, s.supervisor)
        })
        .collect();
    format!(
        "{} card{}: {}",
        cards.len(),
        if cards.len() == 1 { "" } else { "s" },
        if parts.is_empty() {
            "none".to_owned()
        } else {
            parts.join(", ")
        }
    )
}

/// `STATUS=` after every supervisor state change.
async fn status_updates(shared: Arc<Shared>, notifier: Arc<Notifier>) {
    if !notifier.active() {
        return;
    }
    let mut rx = shared.subscribe();
    loop {
        match rx.recv().await {
            Ok(e) if matches!(e.kind, EventKind::Supervisor { .. }) => {
                notifier.notify(&format!("STATUS={}", status_line(&shared)));
            }
            Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}
