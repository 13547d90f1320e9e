//! Event sources and the event loop.
//!
//! Everything that happens arrives as an [`Action`] on one channel:
//!
//! * terminal input (a thread blocked in `crossterm::event::read`);
//! * card state changes: one task per card waits on its `state` file with
//!   `POLLPRI` (libmic's `AsyncStateWatcher`: priority and error interest), exactly as on
//!   real sysfs; nothing is read until the kernel (or micemu) notifies, and
//!   the read itself runs on the blocking pool, bounded, so a hung driver
//!   never stalls the loop;
//! * the driver going away (its files answer ENOTCONN or ENODEV, or vanish):
//!   the watchers stop, a probe re-reads the root every interval, and when
//!   the cards answer again they are enumerated afresh;
//! * the card log of the selected card, read at the configured interval
//!   (the log has no notification), only while a card is shown;
//! * a clock tick at the same interval (time in state, boot progress, host
//!   statistics);
//! * mpssd: its status every [`MPSSD_POLL`] (every card's supervision,
//!   devices and counters; or that it is not running), each request
//!   bounded by [`MPSSD_LIMIT`] on the blocking pool; and its events, on a
//!   thread subscribed to them (crashes with their bundles), reconnecting
//!   when mpssd comes back;
//! * results of reads and of lifecycle operations;
//! * SIGTERM, SIGINT and SIGHUP.
//!
//! The loop applies every queued action, carries out the effects, and
//! draws one frame only if something changed.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use libmic::klog::CardLogFollower;
use libmic::{AsyncStateWatcher, Card, IoLimit, MicRoot, StateWatcher};
use ratatui::Terminal;
use ratatui::backend::Backend;
use ratatui::crossterm::event::{self as ct, Event};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::actions;
use crate::app::{Action, App, Effect};
use crate::components::console::ConsoleOp;
use crate::config::Config;
use crate::console::broker::BrokerConsoles;
use crate::console::{Access, Console, ConsoleError, ConsoleEvent, ConsoleSource, Sink};
use crate::model::{CardView, Detail, HostInfo, Mpssd, MpssdUpdate};
use crate::theme::Theme;
use crate::ui;

/// Frames come at most one per this on average (a 60 Hz cap)...
pub const FRAME_INTERVAL: Duration = Duration::from_millis(16);

/// ... in bursts of at most this many: the frames drawn for the clock, the
/// host's figures and mpssd's status (each once a second, often together)
/// just before a console's echo do not hold the echo back.
pub const FRAME_BURST: f64 = 4.0;

/// Frames allowed: a token bucket of [`FRAME_BURST`] filled one token per
/// [`FRAME_INTERVAL`].
#[derive(Debug)]
struct FramePacer {
    tokens: f64,
    at: Instant,
}

impl FramePacer {
    fn new(now: Instant) -> Self {
        Self {
            tokens: FRAME_BURST,
            at: now,
        }
    }

    /// `None`: draw now (the token is taken); else when a frame may be drawn.
    fn ask(&mut self, now: Instant) -> Option<Instant> {
        let filled = now.saturating_duration_since(self.at).as_secs_f64() / FRAME_INTERVAL.as_secs_f64();
        self.tokens = (self.tokens + filled).min(FRAME_BURST);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            None
        } else {
            Some(now + FRAME_INTERVAL.mul_f64(1.0 - self.tokens))
        }
    }
}

/// One card's console events on their way to the loop. The console's
/// threads put them in; the loop is woken only when the box was empty
/// (and once more when much output has piled up), and takes them all at
/// once when it draws its next frame: a card printing as fast as it can
/// costs the loop a wake-up and one pass of its terminal a frame, not one
/// per chunk (the lines its screen ends up showing are parsed once).
#[derive(Debug, Default)]
struct Mailbox(std::sync::Mutex<Mail>);

#[derive(Debug, Default)]
struct Mail {
    /// In arrival order; adjacent output joined.
    events: VecDeque<ConsoleEvent>,
    /// Output bytes waiting.
    bytes: usize,
    /// The loop was told of what waits.
    woken: bool,
    /// ... and told again that it is much.
    urged: bool,
}

/// Output waiting past this is handed to the app at once.
const HELD_LIMIT: usize = 4 << 20;

impl Mailbox {
    fn lock(&self) -> std::sync::MutexGuard<'_, Mail> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Puts `event` in; whether the loop is to be told.
    fn put(&self, event: ConsoleEvent) -> bool {
        let mut m = self.lock();
        if let ConsoleEvent::Output(b) = &event {
            m.bytes += b.len();
        }
        match (m.events.back_mut(), event) {
            (Some(ConsoleEvent::Output(held)), ConsoleEvent::Output(more)) => held.extend_from_slice(&more),
            (_, event) => m.events.push_back(event),
        }
        let much = m.bytes >= HELD_LIMIT;
        let wake = !m.woken || (much && !m.urged);
        m.urged |= m.woken && much;
        m.woken = true;
        wake
    }

    /// Whether so much output waits that it goes to the app now.
    fn full(&self) -> bool {
        self.lock().bytes >= HELD_LIMIT
    }

    /// Everything waiting; the next event wakes the loop again.
    fn take(&self) -> VecDeque<ConsoleEvent> {
        let mut m = self.lock();
        m.bytes = 0;
        m.woken = false;
        m.urged = false;
        std::mem::take(&mut m.events)
    }
}

/// The cards whose mailboxes the loop was told of and has not emptied
/// yet. Any action that is not console mail lets what waits go first: the
/// app sees every console's events in order, and before what follows.
#[derive(Debug, Default)]
struct Held(std::collections::BTreeSet<u32>);

impl Held {
    fn any(&self) -> bool {
        !self.0.is_empty()
    }

    /// Notes console mail (handing it on at once if it is much); gives the
    /// app anything else, after what waits.
    fn update(&mut self, boxes: &Mailboxes, app: &mut App, action: Action) -> Vec<Effect> {
        match action {
            Action::ConsoleMail { card } => {
                self.0.insert(card);
                if boxes.get(&card).is_some_and(|b| b.full()) {
                    return self.release(boxes, app);
                }
                Vec::new()
            }
            other => {
                let mut effects = self.release(boxes, app);
                effects.extend(app.update(other));
                effects
            }
        }
    }

    /// Gives the app what waits.
    fn release(&mut self, boxes: &Mailboxes, app: &mut App) -> Vec<Effect> {
        let mut effects = Vec::new();
        for card in std::mem::take(&mut self.0) {
            let Some(mailbox) = boxes.get(&card) else { continue };
            for event in mailbox.take() {
                effects.extend(app.update(Action::Console { card, event }));
            }
        }
        effects
    }
}

/// Each card's console mailbox (one per card for good: a console attached
/// again shares it with the one before, whose last events come first).
type Mailboxes = BTreeMap<u32, Arc<Mailbox>>;

/// The longest one access to the driver's files may take: a driver that
/// does not answer by then is hung, and the access fails naming the file.
pub const ACCESS_LIMIT: Duration = Duration::from_secs(5);

/// How often mpssd's status is asked for (its counters move on their own).
pub const MPSSD_POLL: Duration = Duration::from_secs(1);

/// How long mpssd has to answer one request: a stopped mpssd costs the
/// status poller this, never the loop.
pub const MPSSD_LIMIT: Duration = Duration::from_secs(2);

/// How often the event thread looks up from a quiet stream (to notice that
/// mictop quit) and tries again to subscribe when mpssd is not there.
const MPSSD_RETRY: Duration = Duration::from_secs(1);

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
    /// The clock's and the log follower's interval.
    interval: watch::Sender<Duration>,
    host: HostStats,
    post_inflight: Arc<AtomicBool>,
    mouse: Option<MouseControl>,
    /// The tasks watching the current cards' `state`.
    watching: Watching,
    /// Where card consoles come from (mpssd's broker for the root, unless
    /// told otherwise).
    console_source: Box<dyn ConsoleSource>,
    /// The consoles attached, by card.
    consoles: BTreeMap<u32, Box<dyn Console>>,
    /// Their events on the way to the loop.
    mail: Mailboxes,
    /// A probe for the driver's return is running.
    reconnecting: bool,
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
    let root = root.clone().with_io_limit(IoLimit::per_access(ACCESS_LIMIT));
    let (tx, rx) = unbounded_channel();
    let fleet = open_fleet(&root, &tx)?;
    let (log_target, log_rx) = watch::channel(None);
    let (interval, interval_rx) = watch::channel(config.interval);
    tokio::spawn(log_task(log_rx, interval_rx.clone(), tx.clone()));
    tokio::spawn(ticker(interval_rx, tx.clone()));
    tokio::spawn(mpssd_status(root.clone(), tx.clone()));
    spawn_mpssd_events(root.clone(), tx.clone());
    let app = App::new(
        config.clone(),
        theme,
        root.path().display().to_string(),
        fleet.views,
        now,
    );
    let consoles = BrokerConsoles::new(&root);
    let runtime = Runtime {
        root,
        cards: fleet.cards.into_iter().map(|c| (c.id(), c)).collect(),
        config,
        tx,
        log_target,
        interval,
        host: HostStats::new(),
        post_inflight: Arc::new(AtomicBool::new(false)),
        mouse: None,
        watching: fleet.watching,
        console_source: Box::new(consoles),
        consoles: BTreeMap::new(),
        mail: Mailboxes::new(),
        reconnecting: false,
        frames: Arc::new(AtomicU64::new(0)),
        first_frame: None,
    };
    Ok(Session { app, runtime, rx })
}

/// The cards of one enumeration and what watches them.
struct Fleet {
    cards: Vec<Card>,
    views: Vec<CardView>,
    watching: Watching,
}

/// The watchers of one enumeration: stopped together when the driver goes.
#[derive(Default)]
struct Watching {
    tasks: Vec<JoinHandle<()>>,
    /// Tells the thread watching files the reactor cannot take to stop.
    thread_stop: Option<Arc<AtomicBool>>,
}

impl Watching {
    fn stop(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
        if let Some(stop) = self.thread_stop.take() {
            stop.store(true, Ordering::Release);
        }
    }
}

/// Enumerates the cards under `root` and starts watching each one's state.
fn open_fleet(root: &MicRoot, tx: &Tx) -> anyhow::Result<Fleet> {
    let cards = root.cards()?;
    let mut views = Vec::with_capacity(cards.len());
    let mut watching = Watching::default();
    let mut fallback = Vec::new();
    for card in &cards {
        match card.watch_state() {
            Ok(w) => {
                views.push(CardView::new(card.clone(), Ok(w.current())));
                match spawn_watcher(card.id(), w, tx) {
                    Ok(task) => watching.tasks.push(task),
                    Err(w) => fallback.push((card.id(), w)),
                }
            }
            Err(e) => views.push(CardView::new(card.clone(), Err(libmic::error::report(&e)))),
        }
    }
    if !fallback.is_empty() {
        let stop = Arc::new(AtomicBool::new(false));
        spawn_blocking_watcher(fallback, tx.clone(), Arc::clone(&stop));
        watching.thread_stop = Some(stop);
    }
    Ok(Fleet {
        cards,
        views,
        watching,
    })
}

/// What a failed read of a card's state tells the UI: the driver is gone
/// (its files are dead or vanished), or this card's state is unreadable.
fn state_error(id: u32, e: &libmic::Error) -> Action {
    if e.is_driver_gone() {
        Action::DriverGone(libmic::error::report(e))
    } else {
        Action::State {
            id,
            state: Err(libmic::error::report(e)),
            at: Instant::now(),
        }
    }
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

    /// Where the console pane's consoles come from, instead of mpssd's
    /// broker for the root.
    pub fn set_console_source(&mut self, source: Box<dyn ConsoleSource>) {
        self.console_source = source;
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
        let mut pacer = FramePacer::new(Instant::now());
        let mut held = Held::default();
        loop {
            while let Some(effect) = pending.pop_front() {
                pending.extend(self.apply(effect, app));
            }
            if app.quitting() {
                return Ok(());
            }
            // At most one frame per FRAME_INTERVAL on average: a burst of
            // changes (every card's attributes arriving at start, a card
            // printing as fast as it can) is a frame at a time.
            let mut due = None;
            if app.needs_redraw() || held.any() {
                match pacer.ask(Instant::now()) {
                    None => {
                        pending.extend(held.release(&self.mail, app));
                        while let Some(effect) = pending.pop_front() {
                            pending.extend(self.apply(effect, app));
                        }
                        if app.quitting() {
                            return Ok(());
                        }
                        if app.needs_redraw() {
                            terminal.draw(|f| ui::draw(f, app))?;
                            app.drawn();
                            self.frames.fetch_add(1, Ordering::Relaxed);
                            self.first_frame.get_or_insert_with(Instant::now);
                        }
                    }
                    Some(at) => due = Some(at),
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
            pending.extend(held.update(&self.mail, app, action));
            // Whatever else is queued, for at most a frame interval: a
            // flood (a card printing as fast as it can) still gets its
            // frames.
            let batch = Instant::now() + FRAME_INTERVAL;
            while let Ok(action) = rx.try_recv() {
                pending.extend(held.update(&self.mail, app, action));
                if Instant::now() >= batch {
                    break;
                }
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
            Effect::RefreshInfo(ids) => self.refresh_info(&ids),
            Effect::ReadPostCodes(ids) => self.read_post_codes(&ids),
            Effect::LoadDetail(id) => self.load_detail(id),
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
            Effect::Reconnect => self.reconnect(),
            Effect::Console(op) => {
                if let Some(action) = self.console(op) {
                    return app.update(action);
                }
            }
            Effect::Reconfigure(config) => {
                self.interval.send_if_modified(|i| {
                    let changed = *i != config.interval;
                    *i = config.interval;
                    changed
                });
                self.config = *config;
            }
            Effect::Reenumerate => {
                self.reconnecting = false;
                match open_fleet(&self.root, &self.tx) {
                    Ok(fleet) => {
                        self.watching.stop();
                        self.watching = fleet.watching;
                        self.cards = fleet.cards.into_iter().map(|c| (c.id(), c)).collect();
                        return app.update(Action::Fleet(fleet.views));
                    }
                    // Gone again before it could be read: keep probing.
                    Err(_) => self.reconnect(),
                }
            }
        }
        vec![]
    }

    /// Carries out a console operation; what the app must hear of a
    /// failure.
    fn console(&mut self, op: ConsoleOp) -> Option<Action> {
        let (card, result) = match op {
            ConsoleOp::Attach { card, access, size } => {
                if let Some(old) = self.consoles.remove(&card) {
                    old.detach();
                }
                let tx = self.tx.clone();
                let mailbox = Arc::clone(self.mail.entry(card).or_default());
                let sink: Sink = Box::new(move |event| {
                    if mailbox.put(event) {
                        tx.send(Action::ConsoleMail { card }).is_ok()
                    } else {
                        !tx.is_closed()
                    }
                });
                let attached = self.console_source.attach(card, access, size, sink).map(|c| {
                    self.consoles.insert(card, c);
                });
                (card, attached)
            }
            ConsoleOp::Send { card, bytes } => (card, self.attached(card).and_then(|c| c.send(&bytes))),
            ConsoleOp::Access { card, access } => {
                (card, self.attached(card).and_then(|c| c.set_access(access)))
            }
            ConsoleOp::Resize { card, size } => (card, self.attached(card).and_then(|c| c.resize(size))),
            ConsoleOp::Detach { card } => {
                if let Some(c) = self.consoles.remove(&card) {
                    c.detach();
                }
                (card, Ok(()))
            }
        };
        let event = match result.err()? {
            // The write side is not this viewer's (any more).
            ConsoleError::ReadOnly { .. } => ConsoleEvent::Access {
                access: Access::ReadOnly,
                writer: None,
            },
            // Refused for now; the console stays.
            e @ ConsoleError::Busy { .. } => ConsoleEvent::Notice(e.to_string()),
            e => {
                self.consoles.remove(&card);
                ConsoleEvent::Ended(e.to_string())
            }
        };
        Some(Action::Console { card, event })
    }

    fn attached(&mut self, card: u32) -> Result<&mut Box<dyn Console>, ConsoleError> {
        self.consoles
            .get_mut(&card)
            .ok_or(ConsoleError::NoConsole { card })
    }

    /// Re-reads every attribute (and the post code) of these cards.
    fn refresh_info(&self, ids: &[u32]) {
        let cards = self.pick(ids);
        let tx = self.tx.clone();
        tokio::task::spawn_blocking(move || {
            for c in cards {
                // When the read began: a state notified while it
                // ran may be newer than what it read.
                let at = Instant::now();
                // One bounded hand-off for all of the card's files.
                let read = c.batch(|c| (c.info(), c.post_code().ok().flatten()));
                let (info, post) = match read {
                    Ok((info, post)) => (info.map_err(|e| libmic::error::report(&e)), post),
                    Err(e) => (Err(libmic::error::report(&e)), None),
                };
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

    /// Reads the post codes of booting cards (one read at a time).
    fn read_post_codes(&self, ids: &[u32]) {
        if self.post_inflight.swap(true, Ordering::AcqRel) {
            return;
        }
        let cards = self.pick(ids);
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

    /// Reads the debugfs summaries of a card.
    fn load_detail(&self, id: u32) {
        if let Some(c) = self.cards.get(&id).cloned() {
            let tx = self.tx.clone();
            tokio::task::spawn_blocking(move || {
                let smpt = c.smpt().map_err(|e| libmic::error::report(&e));
                let dp = c.dp().map_err(|e| libmic::error::report(&e));
                let vdevs = c.vdev_info().map_err(|e| libmic::error::report(&e));
                let _ = tx.send(Action::Detail {
                    id,
                    detail: Detail { smpt, dp, vdevs },
                });
            });
        }
    }

    /// Stops watching the dead files and probes the root every interval
    /// until its cards can be enumerated and read again.
    fn reconnect(&mut self) {
        if self.reconnecting {
            return;
        }
        self.reconnecting = true;
        self.watching.stop();
        self.log_target.send_replace(None);
        let root = self.root.clone();
        let tx = self.tx.clone();
        let every = self.config.interval.max(Duration::from_millis(100));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if tx.is_closed() {
                    return;
                }
                let r = root.clone();
                let back = tokio::task::spawn_blocking(move || {
                    r.cards()
                        .and_then(|cards| cards.iter().try_for_each(|c| c.state().map(drop)))
                        .is_ok()
                })
                .await;
                if matches!(back, Ok(true)) {
                    let _ = tx.send(Action::DriverBack);
                    return;
                }
            }
        });
    }

    fn pick(&self, ids: &[u32]) -> Vec<Card> {
        ids.iter().filter_map(|id| self.cards.get(id).cloned()).collect()
    }
}

/// Watches one card's `state` with priority (POLLPRI) and error (POLLERR)
/// interest: a notification re-reads it; an error (a FUSE connection that
/// died, a device that went away) reads it too, and the failed read says the
/// driver is gone. The read runs on the blocking pool, bounded by the card's
/// [`IoLimit`]. Returns the watcher back if the reactor cannot take it
/// (e.g. a plain file).
fn spawn_watcher(id: u32, w: StateWatcher, tx: &Tx) -> Result<JoinHandle<()>, StateWatcher> {
    let mut w = AsyncStateWatcher::try_register(w).map_err(|(w, _)| w)?;
    let tx = tx.clone();
    Ok(tokio::spawn(async move {
        loop {
            let action = match w.changed().await {
                Ok(state) => Action::State {
                    id,
                    state: Ok(state),
                    at: Instant::now(),
                },
                Err(e) => {
                    let _ = tx.send(state_error(id, &e));
                    return;
                }
            };
            if tx.send(action).is_err() {
                return;
            }
        }
    }))
}

/// For `state` files the reactor cannot watch: `libmic::wait_any` on a
/// thread (with a timeout, so it notices when mictop has quit or the
/// watchers were stopped).
fn spawn_blocking_watcher(watchers: Vec<(u32, StateWatcher)>, tx: Tx, stop: Arc<AtomicBool>) {
    let (ids, mut ws): (Vec<u32>, Vec<StateWatcher>) = watchers.into_iter().unzip();
    let _ = std::thread::Builder::new()
        .name("state-watch".into())
        .spawn(move || {
            while !tx.is_closed() && !stop.load(Ordering::Acquire) {
                match libmic::wait_any(&mut ws, Some(Duration::from_secs(2))) {
                    Ok(changed) => {
                        if stop.load(Ordering::Acquire) {
                            return;
                        }
                        for i in changed {
                            let _ = tx.send(Action::State {
                                id: ids[i],
                                state: Ok(ws[i].current()),
                                at: Instant::now(),
                            });
                        }
                    }
                    Err(e) => {
                        if !stop.load(Ordering::Acquire) {
                            if e.is_driver_gone() {
                                let _ = tx.send(state_error(ids[0], &e));
                            } else {
                                for &id in &ids {
                                    let _ = tx.send(state_error(id, &e));
                                }
                            }
                        }
                        return;
                    }
                }
            }
        });
}

/// Follows the card log of the card in `target` (none: sleeps until one is
/// chosen), reading it every `interval`. Resets are told by the card's
/// state ([`CardLogFollower`]); a read that fails is shown once, until a
/// read succeeds again.
async fn log_task(
    mut target: watch::Receiver<Option<Card>>,
    mut interval: watch::Receiver<Duration>,
    tx: Tx,
) {
    loop {
        let card = target.borrow_and_update().clone();
        let Some(card) = card else {
            if target.changed().await.is_err() {
                return;
            }
            continue;
        };
        let id = card.id();
        let mut follower: Option<CardLogFollower> = None;
        let mut last_err: Option<String> = None;
        let mut tick = every(*interval.borrow_and_update());
        loop {
            tokio::select! {
                changed = target.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    break;
                }
                changed = interval.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    tick = every(*interval.borrow_and_update());
                }
                _ = tick.tick() => {
                    let reader = card.clone();
                    let fol = follower.take();
                    let Ok((read, fol)) = tokio::task::spawn_blocking(move || {
                        // The state is opened with the first read (and again
                        // after a failure), so no reset before it is missed.
                        let mut fol = match fol {
                            Some(f) => f,
                            None => match CardLogFollower::open(&reader) {
                                Ok(f) => f,
                                Err(e) => return (Err(e), None),
                            },
                        };
                        // Only the notifications already there: the tick is
                        // the clock.
                        let read = fol.next(Duration::ZERO);
                        (read, Some(fol))
                    })
                    .await
                    else {
                        return;
                    };
                    let sent = match read {
                        Ok(entries) => {
                            follower = fol;
                            let recovered = last_err.take().is_some();
                            if !entries.is_empty() || recovered {
                                tx.send(Action::Log { id, entries })
                            } else {
                                Ok(())
                            }
                        }
                        Err(e) => {
                            // A driver that went away is followed afresh
                            // once it is back; anything else keeps its place.
                            if !e.is_driver_gone() {
                                follower = fol;
                            }
                            let s = libmic::error::report(&e);
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

/// mpssd's status every [`MPSSD_POLL`], each question bounded by
/// [`MPSSD_LIMIT`]; only a change is worth a frame (the app compares).
async fn mpssd_status(root: MicRoot, tx: Tx) {
    let mut tick = every(MPSSD_POLL);
    loop {
        tick.tick().await;
        if tx.is_closed() {
            return;
        }
        let r = root.clone();
        // TIMEOUT: MPSSD_LIMIT, inside status_within.
        let Ok(answer) =
            tokio::task::spawn_blocking(move || libmic::mpssd::status_within(&r, MPSSD_LIMIT)).await
        else {
            return;
        };
        let update = match answer {
            Ok(s) => MpssdUpdate::Status(Box::new(s)),
            Err(e) if e.is_not_running() => MpssdUpdate::Gone(Mpssd::NotRunning(e.to_string())),
            Err(e) => MpssdUpdate::Gone(Mpssd::Unreachable(e.to_string())),
        };
        if tx.send(Action::Mpssd(update)).is_err() {
            return;
        }
    }
}

/// mpssd's events, forwarded from a thread subscribed to them: the stream
/// is read [`MPSSD_RETRY`] at a time (so a quit is noticed), subscribing
/// again whenever mpssd is back.
fn spawn_mpssd_events(root: MicRoot, tx: Tx) {
    let _ = std::thread::Builder::new()
        .name("mpssd-events".into())
        .spawn(move || {
            while !tx.is_closed() {
                let sub = libmic::mpssd::Client::connect_within(&root, MPSSD_LIMIT)
                    .and_then(libmic::mpssd::Client::subscribe);
                if let Ok(mut events) = sub {
                    // The connect's deadline is over once subscribed: past
                    // it every read would fail at once, and this loop spin.
                    events.set_deadline(None);
                    if events.set_timeout(Some(MPSSD_RETRY)).is_err() {
                        continue;
                    }
                    loop {
                        match events.next_event() {
                            Ok(e) => {
                                if tx.send(Action::Mpssd(MpssdUpdate::Event(e))).is_err() {
                                    return;
                                }
                            }
                            Err(libmic::mpssd::ClientError::NoAnswer { .. }) if !tx.is_closed() => {}
                            Err(_) => break,
                        }
                    }
                }
                // TIMEOUT: not there (or gone): try again after MPSSD_RETRY.
                std::thread::sleep(MPSSD_RETRY);
            }
        });
}

/// The clock, at the configured interval.
async fn ticker(mut interval: watch::Receiver<Duration>, tx: Tx) {
    let mut tick = every(*interval.borrow_and_update());
    loop {
        tokio::select! {
            changed = interval.changed() => {
                if changed.is_err() {
                    return;
                }
                tick = every(*interval.borrow_and_update());
            }
            _ = tick.tick() => {
                if tx.send(Action::Tick(Instant::now())).is_err() {
                    return;
                }
            }
        }
    }
}

/// A tokio interval that waits out missed ticks instead of bursting.
fn every(period: Duration) -> tokio::time::Interval {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tick
}

/// Forwards terminal input from a thread blocked in `event::read`.
pub fn spawn_input(tx: Tx) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("input".into())
        .spawn(move || {
            loop {
                let action = match ct::read() {
                    Ok(Event::Key(k)) => Action::Key(k),
                    Ok(Event::Paste(p)) => Action::Paste(p),
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

#[cfg(test)]
mod pacer {
    use super::*;

    #[test]
    fn frames_come_in_bursts_then_one_per_interval() {
        let t0 = Instant::now();
        let mut p = FramePacer::new(t0);
        // A burst at once (the clock, the host, mpssd's status, an echo);
        // the next waits.
        for _ in 0..4 {
            assert_eq!(p.ask(t0), None);
        }
        let due = p.ask(t0).expect("the fifth waits");
        assert_eq!(due, t0 + FRAME_INTERVAL);
        // Sustained: one per interval, never two.
        let mut drawn = 0;
        for i in 1..=100u32 {
            if p.ask(t0 + FRAME_INTERVAL * i).is_none() {
                drawn += 1;
            }
            assert!(
                p.ask(t0 + FRAME_INTERVAL * i).is_some(),
                "two in one interval at {i}"
            );
        }
        assert_eq!(drawn, 100);
        // Idle for a while: the burst is back, no more.
        let later = t0 + FRAME_INTERVAL * 1000;
        for _ in 0..4 {
            assert_eq!(p.ask(later), None);
        }
        assert!(p.ask(later).is_some());
    }
}

#[cfg(test)]
mod held {
    use super::*;
    use crate::config::ThemeName;
    use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

    fn app_with_console() -> App {
        let root = libmic::MicRoot::new("/nonexistent");
        let mut app = App::new(
            Config::default(),
            Theme::new(ThemeName::Dark),
            "/held".into(),
            vec![CardView::new(root.card_by_id(0), Ok(libmic::MicState::Online))],
            Instant::now(),
        );
        app.update(Action::Resize(120, 40));
        app.update(Action::Key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::NONE)));
        app
    }

    fn out(bytes: &[u8]) -> ConsoleEvent {
        ConsoleEvent::Output(bytes.to_vec())
    }

    fn received(app: &App) -> u64 {
        app.consoles().shown().expect("the console").received
    }

    /// Card 0's mailbox, and what the loop does with each wake-up it asks
    /// for.
    fn mailbox() -> (Mailboxes, Arc<Mailbox>) {
        let mb = Arc::new(Mailbox::default());
        (Mailboxes::from([(0, Arc::clone(&mb))]), mb)
    }

    #[test]
    fn the_loop_is_woken_once_and_takes_the_output_in_one_piece() {
        let mut app = app_with_console();
        let (boxes, mb) = mailbox();
        let mut held = Held::default();
        assert!(mb.put(out(b"one ")), "the first event wakes the loop");
        assert!(!mb.put(out(b"two\r\n")), "then no more wake-ups");
        held.update(&boxes, &mut app, Action::ConsoleMail { card: 0 });
        assert!(!mb.put(out(b"three")), "still none: the loop has not taken it");
        assert_eq!(received(&app), 0, "waiting for the frame, not yet the app's");
        assert!(held.any());
        held.release(&boxes, &mut app);
        assert_eq!(received(&app), 14);
        assert!(!held.any());
        let screen = app.consoles().shown().unwrap().term().screen().contents();
        assert_eq!(screen.lines().next(), Some("one two"), "{screen:?}");
        assert!(mb.put(out(b"four")), "taken: the next event wakes the loop again");
    }

    #[test]
    fn anything_else_lets_the_waiting_events_go_first_in_order() {
        let mut app = app_with_console();
        let (boxes, mb) = mailbox();
        let mut held = Held::default();
        mb.put(out(b"before"));
        mb.put(ConsoleEvent::Ended("gone".into()));
        mb.put(out(b"after"));
        held.update(&boxes, &mut app, Action::ConsoleMail { card: 0 });
        assert_eq!(received(&app), 0);
        held.update(&boxes, &mut app, Action::Resize(120, 40));
        assert!(!held.any());
        let view = app.consoles().shown().unwrap();
        assert_eq!(view.ended.as_deref(), Some("gone"));
        assert_eq!(view.received, 11);
        // In order, output joined only where nothing came between.
        mb.put(out(b"a"));
        mb.put(out(b"b"));
        mb.put(ConsoleEvent::Notice("n".into()));
        mb.put(out(b"c"));
        let got: Vec<String> = mb
            .take()
            .into_iter()
            .map(|e| match e {
                ConsoleEvent::Output(b) => String::from_utf8(b).unwrap(),
                ConsoleEvent::Notice(n) => format!("notice {n}"),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(got, ["ab", "notice n", "c"]);
    }

    #[test]
    fn much_output_wakes_the_loop_again_and_goes_at_once() {
        let mut app = app_with_console();
        let (boxes, mb) = mailbox();
        let mut held = Held::default();
        let chunk = vec![b'x'; 64 << 10];
        assert!(mb.put(out(&chunk)));
        held.update(&boxes, &mut app, Action::ConsoleMail { card: 0 });
        let mut sent = chunk.len();
        let mut wakes = 0;
        while sent < 3 * HELD_LIMIT {
            if mb.put(out(&chunk)) {
                wakes += 1;
                held.update(&boxes, &mut app, Action::ConsoleMail { card: 0 });
            }
            sent += chunk.len();
            let waiting = sent - usize::try_from(received(&app)).unwrap();
            assert!(waiting <= HELD_LIMIT, "{waiting} bytes held");
        }
        assert!(wakes >= 2, "woken again each time it piled up: {wakes}");
    }
}
