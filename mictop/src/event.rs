//! Event sources and the event loop.
//!
//! Everything that happens arrives as an [`Action`] on one channel:
//!
//! * terminal input (a thread blocked in `crossterm::event::read`);
//! * card state changes: one task per card waits on its `state` file with
//!   `POLLPRI` (tokio `AsyncFd`, priority interest), exactly as on real
//!   sysfs; nothing is read until the kernel (or micemu) notifies;
//! * the card log of the selected card, read at the configured interval
//!   (the log has no notification), only while a card is shown;
//! * a clock tick at the same interval (time in state, boot progress, host
//!   statistics);
//! * results of reads and of lifecycle operations;
//! * SIGTERM, SIGINT and SIGHUP.
//!
//! The loop applies every queued action, carries out the effects, and
//! draws one frame only if something changed.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use libmic::klog::LogFollower;
use libmic::{Card, MicRoot, StateWatcher};
use ratatui::Terminal;
use ratatui::backend::Backend;
use ratatui::crossterm::event::{self as ct, Event};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use crate::actions;
use crate::app::{Action, App, CardView, Detail, Effect, HostInfo};
use crate::config::Config;
use crate::ui::{self, theme::Theme};

/// The shortest time between two frames (a 60 Hz cap).
pub const FRAME_INTERVAL: Duration = Duration::from_millis(16);

/// The sending side of the action channel.
pub type Tx = UnboundedSender<Action>;

/// Turns terminal mouse capture on or off.
pub type MouseControl = Box<dyn FnMut(bool)>;

/// Everything the loop needs besides the app: the cards, the channel, the
/// background tasks' controls.
pub struct Runtime {
    root: MicRoot,
    cards: BTreeMap<u32, Card>,
    config: Config,
    tx: Tx,
    log_target: watch::Sender<Option<Card>>,
    host: HostStats,
    post_inflight: Arc<AtomicBool>,
    mouse: Option<MouseControl>,
    /// Frames drawn so far.
    frames: Arc<AtomicU64>,
    /// When the first frame was drawn.
    pub first_frame: Option<Instant>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("root", &self.root)
            .field("cards", &self.cards.len())
            .field("frames", &self.frames.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// A ready-to-run session: the app with every card's state read, the
/// runtime with its background tasks started, and the channel's receiver.
#[derive(Debug)]
pub struct Session {
    pub app: App,
    pub runtime: Runtime,
    pub rx: UnboundedReceiver<Action>,
}

/// Opens the cards under `root`: enumerates them, opens every `state` for
/// polling, starts the watchers, the log follower and the clock. Must run
/// inside a tokio runtime with I/O and time enabled.
pub fn session(root: &MicRoot, config: Config, theme: Theme) -> anyhow::Result<Session> {
    let now = Instant::now();
    let cards = root.cards()?;
    let (tx, rx) = unbounded_channel();
    let mut views = Vec::with_capacity(cards.len());
    let mut fallback = Vec::new();
    for card in &cards {
        match card.watch_state() {
            Ok(w) => {
                views.push(CardView::new(card.clone(), Ok(w.current())));
                if let Some(w) = spawn_watcher(card.id(), w, &tx) {
                    fallback.push((card.id(), w));
                }
            }
            Err(e) => views.push(CardView::new(card.clone(), Err(e.to_string()))),
        }
    }
    if !fallback.is_empty() {
        spawn_blocking_watcher(fallback, tx.clone());
    }
    let (log_target, log_rx) = watch::channel(None);
    tokio::spawn(log_task(log_rx, config.interval, tx.clone()));
    tokio::spawn(ticker(config.interval, tx.clone()));
    let app = App::new(
        config.clone(),
        theme,
        root.path().display().to_string(),
        views,
        now,
    );
    let runtime = Runtime {
        root: root.clone(),
        cards: cards.into_iter().map(|c| (c.id(), c)).collect(),
        config,
        tx,
        log_target,
        host: HostStats::new(),
        post_inflight: Arc::new(AtomicBool::new(false)),
        mouse: None,
        frames: Arc::new(AtomicU64::new(0)),
        first_frame: None,
    };
    Ok(Session { app, runtime, rx })
}

impl Runtime {
    /// A sender for more actions (terminal input, signals, tests).
    #[must_use]
    pub fn sender(&self) -> Tx {
        self.tx.clone()
    }

    /// The number of frames drawn so far (shared, for measurements).
    #[must_use]
    pub fn frame_counter(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.frames)
    }

    /// Lets the `mouse` key turn terminal mouse capture on and off.
    pub fn set_mouse_control(&mut self, f: MouseControl) {
        self.mouse = Some(f);
    }

    /// Runs the loop until the app quits (or every sender is gone): apply
    /// actions, carry out effects, draw when something changed.
    pub async fn run<B: Backend>(
        &mut self,
        terminal: &mut Terminal<B>,
        app: &mut App,
        rx: &mut UnboundedReceiver<Action>,
        initial: Vec<Effect>,
    ) -> anyhow::Result<()>
    where
        B::Error: Send + Sync + 'static,
    {
        let size = terminal.size()?;
        let mut pending: VecDeque<Effect> = app.update(Action::Resize(size.width, size.height)).into();
        pending.extend(app.start());
        pending.extend(initial);
        let mut last_frame: Option<Instant> = None;
        loop {
            while let Some(effect) = pending.pop_front() {
                pending.extend(self.apply(effect, app));
            }
            if app.quit {
                return Ok(());
            }
            // At most one frame per FRAME_INTERVAL: a burst of changes
            // (every card's attributes arriving at start) is one frame.
            let mut due = None;
            if app.dirty {
                let next = last_frame.map(|t| t + FRAME_INTERVAL);
                if next.is_none_or(|n| n <= Instant::now()) {
                    terminal.draw(|f| ui::draw(f, app))?;
                    app.dirty = false;
                    let now = Instant::now();
                    last_frame = Some(now);
                    self.frames.fetch_add(1, Ordering::Relaxed);
                    self.first_frame.get_or_insert(now);
                } else {
                    due = next;
                }
            }
            let action = match due {
                None => rx.recv().await,
                Some(at) => tokio::select! {
                    a = rx.recv() => a,
                    () = tokio::time::sleep_until(at.into()) => continue,
                },
            };
            let Some(action) = action else { return Ok(()) };
            pending.extend(app.update(action));
            while let Ok(action) = rx.try_recv() {
                pending.extend(app.update(action));
            }
        }
    }

    /// Carries out one effect; returns follow-up effects.
    fn apply(&mut self, effect: Effect, app: &mut App) -> Vec<Effect> {
        match effect {
            Effect::Quit => {}
            Effect::RefreshHost => {
                let info = self.host.refresh();
                return app.update(Action::Host(info));
            }
            Effect::FollowLog(id) => {
                let card = id.and_then(|id| self.cards.get(&id).cloned());
                self.log_target.send_replace(card);
            }
            Effect::RefreshInfo(ids) => {
                let cards = self.pick(&ids);
                let tx = self.tx.clone();
                tokio::task::spawn_blocking(move || {
                    for c in cards {
                        let info = c.info().map_err(|e| e.to_string());
                        let post = c.post_code().ok().flatten();
                        let at = Instant::now();
                        if tx
                            .send(Action::Info {
                                id: c.id(),
                                info,
                                post,
                                at,
                            })
                            .is_err()
                        {
                            return;
                        }
                    }
                });
            }
            Effect::ReadPostCodes(ids) => {
                if self.post_inflight.swap(true, Ordering::AcqRel) {
                    return vec![];
                }
                let cards = self.pick(&ids);
                let tx = self.tx.clone();
                let inflight = Arc::clone(&self.post_inflight);
                tokio::task::spawn_blocking(move || {
                    for c in cards {
                        let post = c.post_code().ok().flatten();
                        if tx.send(Action::PostCode { id: c.id(), post }).is_err() {
                            break;
                        }
                    }
                    inflight.store(false, Ordering::Release);
                });
            }
            Effect::LoadDetail(id) => {
                if let Some(c) = self.cards.get(&id).cloned() {
                    let tx = self.tx.clone();
                    tokio::task::spawn_blocking(move || {
                        let smpt = c.smpt().map_err(|e| e.to_string());
                        let dp = c.dp().map_err(|e| e.to_string());
                        let _ = tx.send(Action::Detail {
                            id,
                            detail: Detail { smpt, dp },
                        });
                    });
                }
            }
            Effect::Run { kind, ids } => {
                let cards = self.pick(&ids);
                actions::spawn(
                    kind,
                    cards,
                    &self.root.system_map(),
                    self.config.action_timeout,
                    &self.tx,
                );
            }
            Effect::SetMouse(on) => {
                if let Some(f) = &mut self.mouse {
                    f(on);
                }
            }
        }
        vec![]
    }

    fn pick(&self, ids: &[u32]) -> Vec<Card> {
        ids.iter().filter_map(|id| self.cards.get(id).cloned()).collect()
    }
}

/// Watches one card's `state` with priority (POLLPRI) interest. Returns
/// the watcher back if the reactor cannot take it (e.g. a plain file).
fn spawn_watcher(id: u32, w: StateWatcher, tx: &Tx) -> Option<StateWatcher> {
    // SAFETY: the fd is the `state` file the watcher owns for its whole
    // life; `StateWatcher` never closes or replaces it (its fields are
    // private and `refresh` only seeks and reads), so the fd stays open and
    // the same for as long as the `AsyncFd` owns the watcher.
    let fd = match unsafe { AsyncFd::register_with_interest(w, Interest::PRIORITY) } {
        Ok(fd) => fd,
        Err(e) => return Some(e.into_parts().0),
    };
    let tx = tx.clone();
    tokio::spawn(async move {
        let mut fd = fd;
        // Whether the UI still listens.
        let send = |state| {
            tx.send(Action::State {
                id,
                state,
                at: Instant::now(),
            })
            .is_ok()
        };
        loop {
            let mut guard = match fd.ready_mut(Interest::PRIORITY).await {
                Ok(g) => g,
                Err(e) => {
                    send(Err(e.to_string()));
                    return;
                }
            };
            // Clear first: a notification after this point wakes us again.
            guard.clear_ready();
            let state = match guard.get_inner_mut().refresh() {
                Ok(None) => continue,
                Ok(Some(s)) => Ok(s),
                Err(e) => Err(e.to_string()),
            };
            let failed = state.is_err();
            if !send(state) || failed {
                return;
            }
        }
    });
    None
}

/// For `state` files the reactor cannot watch: `libmic::wait_any` on a
/// thread (with a timeout, so it notices when mictop has quit).
fn spawn_blocking_watcher(watchers: Vec<(u32, StateWatcher)>, tx: Tx) {
    let (ids, mut ws): (Vec<u32>, Vec<StateWatcher>) = watchers.into_iter().unzip();
    let _ = std::thread::Builder::new()
        .name("state-watch".into())
        .spawn(move || {
            while !tx.is_closed() {
                match libmic::wait_any(&mut ws, Some(Duration::from_secs(2))) {
                    Ok(changed) => {
                        for i in changed {
                            let _ = tx.send(Action::State {
                                id: ids[i],
                                state: Ok(ws[i].current()),
                                at: Instant::now(),
                            });
                        }
                    }
                    Err(e) => {
                        for &id in &ids {
                            let _ = tx.send(Action::State {
                                id,
                                state: Err(e.to_string()),
                                at: Instant::now(),
                            });
                        }
                        return;
                    }
                }
            }
        });
}

/// Follows the card log of the card in `target` (none: sleeps until one is
/// chosen), reading it every `interval`.
async fn log_task(mut target: watch::Receiver<Option<Card>>, interval: Duration, tx: Tx) {
    loop {
        let card = target.borrow_and_update().clone();
        let Some(card) = card else {
            if target.changed().await.is_err() {
                return;
            }
            continue;
        };
        let id = card.id();
        let mut follower = Some(LogFollower::new());
        let mut last_err: Option<String> = None;
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                changed = target.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    break;
                }
                _ = tick.tick() => {
                    let mut fol = follower.take().unwrap_or_default();
                    let reader = card.clone();
                    let Ok((read, fol)) = tokio::task::spawn_blocking(move || {
                        let read = reader.log_buf_raw().map(|raw| fol.update(&raw));
                        (read, fol)
                    })
                    .await
                    else {
                        return;
                    };
                    follower = Some(fol);
                    let sent = match read {
                        Ok(update) => {
                            let news = !update.records.is_empty() || update.lost || update.reset;
                            let recovered = last_err.take().is_some();
                            if news || recovered {
                                tx.send(Action::Log { id, update })
                            } else {
                                Ok(())
                            }
                        }
                        Err(e) => {
                            let s = e.to_string();
                            if last_err.as_ref() == Some(&s) {
                                Ok(())
                            } else {
                                last_err = Some(s.clone());
                                tx.send(Action::LogError { id, error: s })
                            }
                        }
                    };
                    if sent.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// The clock.
async fn ticker(interval: Duration, tx: Tx) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if tx.send(Action::Tick(Instant::now())).is_err() {
            return;
        }
    }
}

/// Forwards terminal input from a thread blocked in `event::read`.
pub fn spawn_input(tx: Tx) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("input".into())
        .spawn(move || {
            loop {
                let action = match ct::read() {
                    Ok(Event::Key(k)) => Action::Key(k),
                    Ok(Event::Mouse(m)) => Action::Mouse(m),
                    Ok(Event::Resize(w, h)) => Action::Resize(w, h),
                    Ok(_) => continue,
                    Err(_) => Action::Quit,
                };
                let quit = matches!(action, Action::Quit);
                if tx.send(action).is_err() || quit {
                    return;
                }
            }
        })
        .map(drop)
}

/// SIGTERM, SIGINT and SIGHUP end the loop (and so restore the terminal).
pub fn spawn_signals(tx: Tx) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
            _ = hup.recv() => {}
        }
        let _ = tx.send(Action::Quit);
    });
    Ok(())
}

/// Host CPU and memory through sysinfo.
struct HostStats {
    sys: Option<sysinfo::System>,
    hostname: String,
}

impl HostStats {
    fn new() -> Self {
        Self {
            sys: sysinfo::System::new().ok(),
            hostname: sysinfo::System::host_name().unwrap_or_else(|_| "?".to_owned()),
        }
    }

    fn refresh(&mut self) -> HostInfo {
        let Some(sys) = &mut self.sys else {
            return HostInfo {
                hostname: self.hostname.clone(),
                cpu_percent: 0.0,
                cpus: 0,
                mem_used: 0,
                mem_total: 0,
            };
        };
        sys.refresh_cpu_usage();
        sys.refresh_memory();
        HostInfo {
            hostname: self.hostname.clone(),
            cpu_percent: sys.global_cpu_usage(),
            cpus: sys.cpus().len(),
            mem_used: sys.used_memory(),
            mem_total: sys.total_memory(),
        }
    }
}
