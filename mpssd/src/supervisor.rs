//! One task per card, owning everything about it: the card's `state`
//! watched with POLLPRI through the reactor, its device set, its crash
//! history, its timeline, and the status it publishes.
//!
//! At start it adopts whatever it finds (offline: devices added, idle;
//! online: devices added, running; shutting_down: handled as below;
//! reset_failed: reported, left for an operator). Then, as the original
//! mpssd's §5.6 but with every wait bounded and every outcome reported:
//!
//! `shutting_down` → final `shutdown_status` (≤ shutdown_status_timeout)
//! → forensics bundle if it crashed → devices removed → `reset` →
//! `offline` (≤ reset_timeout) → devices added → boot again if the card
//! asked to restart, or after a crash per policy (backoff, crash-loop limit).
//!
//! Sysfs and debugfs are touched only through libmic, on the blocking pool,
//! each call bounded ([`SYSFS_TIMEOUT`]): a hung driver cannot hang the
//! supervisor.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use libmic::{AsyncStateWatcher, BootMode, BootRequest, Card, MicState, MicStatus, SystemMap};
use mpssd_proto::{CardStatus, CrashSummary, EventKind, ResetOutcome, SupervisorState as S, unix_ms};
use tokio::sync::{oneshot, watch};
use tokio::time::sleep_until;

use crate::config::{CardConfig, Config};
use crate::devices::{ADD_TIMEOUT, DeviceContext, DeviceSet, REMOVE_TIMEOUT};
use crate::forensics::{self, BundleInput};
use crate::policy::{CrashHistory, Decision};
use crate::shared::Shared;
use mpssd_proto::timefmt;

/// Bound on one sysfs/debugfs operation.
pub const SYSFS_TIMEOUT: Duration = Duration::from_secs(15);
/// Bound on the `boot` write (synchronous in the driver: it loads the image).
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on writing a forensics bundle.
pub const BUNDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How often `shutdown_status` is re-read while waiting for it (the
/// attribute has no notification of its own; a state change wakes the wait
/// at once).
pub const STATUS_POLL: Duration = libmic::lifecycle::STATUS_POLL_INTERVAL;
/// How often the state is re-read even without a notification, in case one
/// was lost (the kernel coalesces; a missed edge must not strand a card).
pub const RESYNC: Duration = Duration::from_secs(30);
/// Steps kept in the timeline.
pub const TIMELINE_LEN: usize = 256;

/// Why a supervised operation failed.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    #[error(transparent)]
    Card(#[from] libmic::Error),
    #[error("{what} did not finish within {limit:?} (the driver or emulator is hung)")]
    Hung { what: &'static str, limit: Duration },
    #[error("{what} failed: {message}")]
    Task { what: &'static str, message: String },
}

/// Runs one libmic call on the blocking pool, bounded.
pub async fn blocking<T: Send + 'static>(
    card: &Card,
    what: &'static str,
    limit: Duration,
    f: impl FnOnce(&Card) -> libmic::Result<T> + Send + 'static,
) -> Result<T, OpError> {
    let card = card.clone();
    // TIMEOUT: `limit`; the thread of a hung call is left behind, the
    // supervisor goes on.
    match tokio::time::timeout(limit, tokio::task::spawn_blocking(move || f(&card))).await {
        Err(_) => Err(OpError::Hung { what, limit }),
        Ok(Err(e)) => Err(OpError::Task {
            what,
            message: e.to_string(),
        }),
        Ok(Ok(r)) => r.map_err(OpError::Card),
    }
}

/// Why the main loop woke.
enum Wake {
    State(libmic::Result<MicState>),
    Resync,
    BackoffOver,
    Stop,
}

/// One card's supervisor.
pub struct Supervisor {
    card: Card,
    id: u32,
    shared: Arc<Shared>,
    config: watch::Receiver<Arc<Config>>,
    status: watch::Sender<CardStatus>,
    devices: Box<dyn DeviceSet>,
    devices_up: bool,
    watcher: Option<AsyncStateWatcher>,
    /// The card state last seen.
    state: Option<MicState>,
    crashes: CrashHistory,
    timeline: VecDeque<String>,
    backoff_until: Option<Instant>,
    stop: watch::Receiver<bool>,
    adopted: Option<oneshot::Sender<()>>,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("card", &self.id)
            .finish_non_exhaustive()
    }
}

impl Supervisor {
    /// A supervisor for `card`; `adopted` fires once the card's state has
    /// been taken over; `stop` turning true ends it.
    #[must_use]
    pub fn new(
        card: Card,
        shared: Arc<Shared>,
        devices: Box<dyn DeviceSet>,
        stop: watch::Receiver<bool>,
        adopted: oneshot::Sender<()>,
    ) -> (Self, watch::Receiver<CardStatus>) {
        let id = card.id();
        let (status, rx) = watch::channel(CardStatus::new(
            id,
            card.name().to_owned(),
            S::Adopting,
            unix_ms(SystemTime::now()),
        ));
        let config = shared.config_rx();
        let sup = Self {
            card,
            id,
            shared,
            config,
            status,
            devices,
            devices_up: false,
            watcher: None,
            state: None,
            crashes: CrashHistory::default(),
            timeline: VecDeque::new(),
            backoff_until: None,
            stop,
            adopted: Some(adopted),
        };
        (sup, rx)
    }

    fn cfg(&self) -> CardConfig {
        self.config.borrow().card(self.id)
    }

    fn note(&mut self, text: &str) {
        if self.timeline.len() == TIMELINE_LEN {
            self.timeline.pop_front();
        }
        self.timeline
            .push_back(format!("{} {text}", timefmt::rfc3339(SystemTime::now())));
    }

    fn emit(&mut self, kind: EventKind) {
        self.note(
            &crate::shared::describe(&mpssd_proto::Event {
                ts_ms: 0,
                card: None,
                kind: kind.clone(),
            })
            .1,
        );
        self.shared.emit(Some(self.id), kind);
    }

    fn sup_state(&self) -> S {
        self.status.borrow().supervisor
    }

    fn set(&mut self, to: S, reason: impl Into<String>) {
        let reason = reason.into();
        let from = self.sup_state();
        self.status.send_modify(|s| {
            s.supervisor = to;
            s.since_ms = unix_ms(SystemTime::now());
            if to != S::Backoff {
                s.next_boot_ms = None;
            }
        });
        self.emit(EventKind::Supervisor { from, to, reason });
    }

    fn error(&mut self, message: String) {
        self.status.send_modify(|s| s.last_error = Some(message.clone()));
        self.emit(EventKind::Error { message });
    }

    fn saw_state(&mut self, to: MicState) {
        let from = self.state;
        if from == Some(to) {
            return;
        }
        self.state = Some(to);
        self.status.send_modify(|s| s.state = Some(to));
        self.emit(EventKind::CardState { from, to });
    }

    fn adopted_done(&mut self) {
        if let Some(tx) = self.adopted.take() {
            let _ = tx.send(());
        }
    }

    /// Runs until the daemon stops.
    pub async fn run(mut self) {
        self.adopt().await;
        self.adopted_done();
        loop {
            match self.next_wake().await {
                Wake::Stop => break,
                Wake::State(Ok(s)) => self.on_state(s).await,
                Wake::State(Err(e)) => {
                    self.error(format!("watching state: {e}; watching again"));
                    self.watcher = None;
                    self.reopen_watcher().await;
                }
                Wake::Resync => {
                    if self.watcher.is_none() {
                        self.reopen_watcher().await;
                    }
                    let refreshed = self.watcher.as_mut().map(AsyncStateWatcher::refresh);
                    match refreshed {
                        Some(Ok(Some(s))) => self.on_state(s).await,
                        Some(Err(e)) => self.error(format!("re-reading state: {e}")),
                        _ => {}
                    }
                }
                Wake::BackoffOver => {
                    self.backoff_until = None;
                    self.boot("restart after a crash").await;
                }
            }
        }
        self.remove_devices("mpssd is stopping").await;
        self.set(S::Stopped, "mpssd is stopping; the card is left as it is");
    }

    async fn next_wake(&mut self) -> Wake {
        if *self.stop.borrow() {
            return Wake::Stop;
        }
        let backoff = self.backoff_until;
        let mut stop = self.stop.clone();
        let resync = Instant::now() + RESYNC;
        let watcher = self.watcher.as_mut();
        tokio::select! {
            biased;
            _ = stop.changed() => Wake::Stop,
            () = async {
                match backoff {
                    Some(t) => sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            } => Wake::BackoffOver,
            r = async {
                match watcher {
                    Some(w) => w.changed().await,
                    None => std::future::pending().await,
                }
            } => Wake::State(r),
            // TIMEOUT: RESYNC, a safety net for a lost notification.
            () = sleep_until(resync.into()) => Wake::Resync,
        }
    }

    async fn reopen_watcher(&mut self) {
        match blocking(&self.card, "opening state", SYSFS_TIMEOUT, Card::watch_state).await {
            Ok(w) => {
                let s = w.current();
                self.watcher = Some(AsyncStateWatcher::new(w));
                self.saw_state(s);
            }
            Err(e) => self.error(format!("opening state: {e}")),
        }
    }

    async fn adopt(&mut self) {
        self.reopen_watcher().await;
        self.prepare().await;
        let Some(state) = self.state else {
            self.set(S::Idle, "the card's state cannot be read; retrying");
            return;
        };
        if let Ok(st) = blocking(
            &self.card,
            "reading shutdown_status",
            SYSFS_TIMEOUT,
            Card::shutdown_status,
        )
        .await
        {
            self.status.send_modify(|s| s.shutdown_status = Some(st));
        }
        match state {
            MicState::Offline => {
                self.add_devices().await;
                self.set(S::Idle, "card found offline");
            }
            MicState::Online => {
                self.status.send_modify(|s| s.adopted = true);
                self.add_devices().await;
                self.set(S::Running, "card found online: adopted");
            }
            MicState::ShuttingDown => {
                self.status.send_modify(|s| s.adopted = true);
                self.adopted_done();
                self.handle_shutdown().await;
            }
            MicState::ResetFailed => {
                self.set(
                    S::ResetFailed,
                    "card found in reset_failed: reset it (micctl reset) to recover",
                );
            }
        }
    }

    /// What the original did per card before serving it: log_buf_addr and
    /// log_buf_len from System.map (written only if they differ), and the
    /// cmdline when the operator has set none. Failures are reported, not
    /// fatal.
    async fn prepare(&mut self) {
        let map_path = self
            .config
            .borrow()
            .daemon
            .system_map
            .as_ref()
            .map_or_else(|| self.shared.root.system_map(), |p| self.shared.root.join(p));
        let cmdline = self.config.borrow().cmdline(self.id);
        let r = blocking(&self.card, "setting up the card", SYSFS_TIMEOUT, move |c| {
            prepare_card(c, &map_path, &cmdline)
        })
        .await;
        match r {
            Ok(notes) => {
                for n in notes {
                    self.note(&n);
                    log::info!(target: "mpssd", "{}: {n}", self.card.name());
                }
            }
            Err(e) => self.error(format!("setting up the card: {e}")),
        }
    }

    async fn on_state(&mut self, new: MicState) {
        self.saw_state(new);
        let sup = self.sup_state();
        match new {
            MicState::Online => {
                if !self.devices_up {
                    self.add_devices().await;
                }
                match sup {
                    S::Booting => self.set(S::Running, "booted"),
                    S::Running => {}
                    S::CrashLoop | S::Backoff => {
                        self.backoff_until = None;
                        self.crashes.clear();
                        self.status.send_modify(|s| s.recent_crashes = 0);
                        self.set(S::Running, "booted by an operator; crash history cleared");
                    }
                    _ => self.set(S::Running, "booted by an operator"),
                }
            }
            MicState::ShuttingDown => self.handle_shutdown().await,
            MicState::Offline => match sup {
                S::Idle | S::CrashLoop | S::Backoff => {}
                S::ResetFailed => {
                    self.add_devices().await;
                    self.set(S::Idle, "card reset by an operator");
                }
                _ => {
                    // Reset from outside (an operator's reset, soft_reset):
                    // the driver reset the devices with the card.
                    self.remove_devices("card reset from outside").await;
                    self.add_devices().await;
                    self.set(S::Idle, "card reset from outside");
                }
            },
            MicState::ResetFailed => {
                self.remove_devices("card in reset_failed").await;
                self.set(S::ResetFailed, "the card's reset failed: reset it to recover");
            }
        }
    }

    /// The §5.6 sequence, bounded.
    async fn handle_shutdown(&mut self) {
        self.backoff_until = None;
        self.set(S::ShuttingDown, "the card is shutting down");
        let cfg = self.cfg();
        let started = Instant::now();
        let status = self.wait_final_status(cfg.shutdown_status_timeout).await;
        self.status
            .send_modify(|s| s.shutdown_status = status.or(s.shutdown_status));
        self.emit(EventKind::ShutdownStatus {
            status,
            waited_ms: ms(started.elapsed()),
        });
        let crashed = status == Some(MicStatus::Crashed);
        let mut decision = None;
        if crashed {
            let now = Instant::now();
            let d = self.crashes.record(now, &cfg);
            let recent = self.crashes.recent(now, cfg.crash_loop_window);
            self.status.send_modify(|s| {
                s.crashes += 1;
                s.recent_crashes = recent;
            });
            let bundle = self.bundle(status).await;
            self.status.send_modify(|s| {
                s.last_crash = Some(CrashSummary {
                    ts_ms: unix_ms(SystemTime::now()),
                    bundle: bundle.clone(),
                });
            });
            self.emit(EventKind::Crash {
                bundle,
                recent_crashes: recent,
            });
            decision = Some(d);
        }
        self.set(S::StoppingDevices, "removing the card's devices before the reset");
        self.remove_devices("card shutting down").await;
        match self.reset(cfg.reset_timeout).await {
            ResetOutcome::Offline => {}
            ResetOutcome::ResetFailed => {
                self.set(S::ResetFailed, "the card's reset failed: reset it to recover");
                return;
            }
            ResetOutcome::Timeout | ResetOutcome::Error => {
                self.set(
                    S::ResetFailed,
                    "the card did not come back offline after the reset: reset it to recover",
                );
                return;
            }
        }
        self.add_devices().await;
        match (status, decision) {
            (Some(MicStatus::Restart), _) => self.boot("the card asked to restart").await,
            (_, Some(Decision::Reboot { delay, attempt })) => {
                self.emit(EventKind::Backoff {
                    delay_ms: ms(delay),
                    attempt,
                });
                self.backoff_until = Some(Instant::now() + delay);
                self.set(S::Backoff, format!("crashed; booting again in {delay:?}"));
                let at = unix_ms(SystemTime::now() + delay);
                self.status.send_modify(|s| s.next_boot_ms = Some(at));
            }
            (_, Some(Decision::CrashLoop { crashes })) => {
                self.emit(EventKind::CrashLoop {
                    crashes,
                    window_secs: cfg.crash_loop_window.as_secs(),
                });
                self.set(
                    S::CrashLoop,
                    format!(
                        "{crashes} crashes within {:?}: left down until an operator boots it",
                        cfg.crash_loop_window
                    ),
                );
            }
            (_, Some(Decision::StayDown)) => self.set(S::Idle, "crashed; restart_on_crash is off"),
            (Some(s), None) => self.set(S::Idle, format!("card shut down ({})", s.as_str())),
            (None, None) => self.set(S::Idle, "card reset without a final shutdown status"),
        }
    }

    /// Waits for `shutdown_status` to leave `nop` while the card is
    /// shutting down; `None` after `limit` (or if the card left
    /// `shutting_down` without one).
    async fn wait_final_status(&mut self, limit: Duration) -> Option<MicStatus> {
        // TIMEOUT: `limit` (the original's 60 s by default).
        let deadline = Instant::now() + limit;
        loop {
            match blocking(
                &self.card,
                "reading shutdown_status",
                SYSFS_TIMEOUT,
                Card::shutdown_status,
            )
            .await
            {
                Ok(MicStatus::Nop) => {}
                Ok(s) => return Some(s),
                Err(e) => self.error(format!("reading shutdown_status: {e}")),
            }
            if self.state != Some(MicState::ShuttingDown) || Instant::now() >= deadline {
                return None;
            }
            let next = (Instant::now() + STATUS_POLL).min(deadline);
            let watcher = self.watcher.as_mut();
            let changed = tokio::select! {
                r = async {
                    match watcher {
                        Some(w) => w.changed().await.ok(),
                        None => std::future::pending().await,
                    }
                } => r,
                () = sleep_until(next.into()) => None,
            };
            if let Some(s) = changed {
                self.saw_state(s);
            }
        }
    }

    async fn reset(&mut self, limit: Duration) -> ResetOutcome {
        self.set(S::Resetting, "resetting the card");
        let started = Instant::now();
        let outcome = match blocking(&self.card, "writing reset", SYSFS_TIMEOUT, Card::request_reset).await {
            Err(e) => {
                self.error(format!("reset: {e}"));
                ResetOutcome::Error
            }
            Ok(_) => self.wait_reset_end(started + limit).await,
        };
        self.emit(EventKind::Reset {
            outcome,
            waited_ms: ms(started.elapsed()),
        });
        outcome
    }

    async fn wait_reset_end(&mut self, deadline: Instant) -> ResetOutcome {
        // TIMEOUT: `deadline` (reset_timeout, the original's 120 s).
        loop {
            match self.state {
                Some(MicState::Offline) => return ResetOutcome::Offline,
                Some(MicState::ResetFailed) => return ResetOutcome::ResetFailed,
                _ => {}
            }
            if Instant::now() >= deadline {
                return ResetOutcome::Timeout;
            }
            let watcher = self.watcher.as_mut();
            let r = tokio::select! {
                r = async {
                    match watcher {
                        Some(w) => Some(w.changed().await),
                        None => std::future::pending().await,
                    }
                } => r,
                () = sleep_until(deadline.into()) => None,
            };
            match r {
                Some(Ok(s)) => self.saw_state(s),
                Some(Err(e)) => {
                    self.error(format!("watching state: {e}"));
                    return ResetOutcome::Error;
                }
                None => {
                    // Last look at the deadline.
                    if let Some(Ok(Some(s))) = self.watcher.as_mut().map(AsyncStateWatcher::refresh) {
                        self.saw_state(s);
                    }
                }
            }
        }
    }

    async fn boot(&mut self, reason: &str) {
        self.set(S::Booting, format!("booting: {reason}"));
        self.prepare().await;
        let cmdline = self.config.borrow().cmdline(self.id);
        let r = blocking(&self.card, "writing boot", BOOT_TIMEOUT, move |c| {
            let req = BootRequest {
                bootmode: c.bootmode()?.unwrap_or(BootMode::Linux),
                firmware: c
                    .firmware()?
                    .unwrap_or_else(|| libmic::root::DEFAULT_FIRMWARE.to_owned()),
                ramdisk: Some(c.ramdisk()?.unwrap_or_else(|| c.default_ramdisk())),
                cmdline: c.cmdline()?.is_none().then_some(cmdline),
            };
            c.boot_with(&req, None)
        })
        .await;
        match r {
            Ok(_) => {
                self.status.send_modify(|s| s.boots += 1);
                self.emit(EventKind::Boot {
                    reason: reason.to_owned(),
                    error: None,
                });
                // The state watcher reports `online`; read it now too, so
                // a card already online is seen as running at once.
                if let Some(Ok(Some(s))) = self.watcher.as_mut().map(AsyncStateWatcher::refresh) {
                    self.saw_state(s);
                }
                if self.state == Some(MicState::Online) {
                    self.set(S::Running, format!("booted ({reason})"));
                }
            }
            Err(e) => {
                let message = e.to_string();
                self.status.send_modify(|s| s.last_error = Some(message.clone()));
                self.emit(EventKind::Boot {
                    reason: reason.to_owned(),
                    error: Some(message),
                });
                self.set(S::Idle, "the boot failed");
            }
        }
    }

    async fn bundle(&mut self, status: Option<MicStatus>) -> Option<String> {
        let cfg = self.config.borrow().crash.clone();
        let dir = self.shared.root.join(&cfg.dir);
        self.note("writing the forensics bundle");
        let input = BundleInput {
            card: self.card.clone(),
            at: SystemTime::now(),
            status,
            timeline: self.timeline.iter().cloned().collect(),
            console: self
                .devices
                .view()
                .console_tail(usize::try_from(cfg.max_file_bytes).unwrap_or(usize::MAX)),
        };
        // TIMEOUT: BUNDLE_TIMEOUT.
        let job = tokio::task::spawn_blocking(move || forensics::write_bundle(&dir, &cfg, &input));
        match tokio::time::timeout(BUNDLE_TIMEOUT, job).await {
            Ok(Ok(Ok(p))) => Some(p.display().to_string()),
            Ok(Ok(Err(e))) => {
                self.error(format!("writing the forensics bundle: {e}"));
                None
            }
            Ok(Err(e)) => {
                self.error(format!("writing the forensics bundle: {e}"));
                None
            }
            Err(_) => {
                self.error(format!(
                    "writing the forensics bundle took longer than {BUNDLE_TIMEOUT:?}; abandoned"
                ));
                None
            }
        }
    }

    fn device_context(&self) -> DeviceContext {
        DeviceContext {
            card: self.card.clone(),
            config: self.cfg(),
            run_dir: run_dir(&self.shared, &self.card),
        }
    }

    async fn add_devices(&mut self) {
        let ctx = self.device_context();
        // TIMEOUT: ADD_TIMEOUT.
        match tokio::time::timeout(ADD_TIMEOUT, self.devices.add(&ctx)).await {
            Ok(Ok(names)) => {
                self.devices_up = true;
                self.emit(EventKind::DevicesAdded { devices: names });
            }
            Ok(Err(e)) => {
                self.devices_up = true;
                self.error(format!("adding devices: {e}"));
            }
            Err(_) => self.error(format!("adding devices took longer than {ADD_TIMEOUT:?}")),
        }
    }

    async fn remove_devices(&mut self, why: &str) {
        if !self.devices_up {
            return;
        }
        self.devices_up = false;
        // TIMEOUT: REMOVE_TIMEOUT.
        match tokio::time::timeout(REMOVE_TIMEOUT, self.devices.remove(why)).await {
            Ok(names) => self.emit(EventKind::DevicesRemoved { devices: names }),
            Err(_) => self.error(format!(
                "removing devices ({why}) took longer than {REMOVE_TIMEOUT:?}"
            )),
        }
    }
}

/// `DIR/run/mpssd/micN`.
#[must_use]
pub fn run_dir(shared: &Shared, card: &Card) -> PathBuf {
    shared.root.join("run/mpssd").join(card.name())
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// log_buf_addr/log_buf_len from the System.map at `map` (only if they
/// differ, as the original's `setsysfs`), and `cmdline` if the card has
/// none. Returns what it did, in words.
fn prepare_card(card: &Card, map: &std::path::Path, cmdline: &str) -> libmic::Result<Vec<String>> {
    let mut notes = Vec::new();
    match std::fs::read(map) {
        Ok(bytes) => {
            let sysmap = SystemMap::parse(&String::from_utf8_lossy(&bytes));
            match sysmap.log_buf_symbols() {
                Ok((addr, len)) => {
                    if card.log_buf_addr()? != Some(addr) {
                        card.set_log_buf_addr(addr)?;
                        notes.push(format!("log_buf_addr set to {addr:#x} from {}", map.display()));
                    }
                    if card.log_buf_len()? != Some(len) {
                        card.set_log_buf_len(len)?;
                        notes.push(format!("log_buf_len set to {len:#x}"));
                    }
                }
                Err(missing) => notes.push(format!(
                    "{}: no {} symbol: the card log cannot be located",
                    map.display(),
                    missing.join(", ")
                )),
            }
        }
        Err(e) => notes.push(format!("{}: {e}: the card log cannot be located", map.display())),
    }
    if card.cmdline()?.is_none() {
        card.set_cmdline(cmdline)?;
        notes.push(format!("cmdline set to {cmdline:?}"));
    }
    Ok(notes)
}
