//! The application state and its one entry point, [`App::update`]: every
//! input, sysfs change, log update and action result arrives as an
//! [`Action`]; `update` changes the state and returns the [`Effect`]s the
//! runtime must carry out (reads, lifecycle operations, quitting). Drawing
//! is a pure function of this state (see [`crate::ui`]).

use std::collections::VecDeque;
use std::hash::{Hash as _, Hasher as _};
use std::time::{Duration, Instant};

use libmic::klog::{LogEntry, LogRecord};
use libmic::{Card, CardInfo, MicState, MicStatus};
use ratatui::crossterm::event::{
    KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseButton, MouseEvent, MouseEventKind,
};
use ratatui::layout::{Position, Rect};

use crate::config::{Command, Config, LayoutMode};
use crate::ui::{self, Areas, theme::Theme};

/// Host facts for the header.
#[derive(Debug, Clone, PartialEq)]
pub struct HostInfo {
    pub hostname: String,
    /// Whole-machine CPU use, percent of all CPUs.
    pub cpu_percent: f32,
    pub cpus: usize,
    pub mem_used: u64,
    pub mem_total: u64,
}

/// A lifecycle operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpKind {
    Boot,
    Shutdown,
    Reset,
    Reboot,
}

impl OpKind {
    #[must_use]
    pub fn verb(self) -> &'static str {
        match self {
            OpKind::Boot => "boot",
            OpKind::Shutdown => "shutdown",
            OpKind::Reset => "reset",
            OpKind::Reboot => "reboot",
        }
    }

    /// What the operation does, for the confirmation dialog.
    #[must_use]
    pub fn explain(self) -> &'static str {
        match self {
            OpKind::Boot => {
                "load mic/uos.img with the default ramdisk and command line, then wait for the card OS"
            }
            OpKind::Shutdown => "ask the card OS to shut down, then reset the card to offline",
            OpKind::Reset => "reset the card to offline; a running card OS is stopped without warning",
            OpKind::Reboot => "shut down (or reset) the card, then boot it again",
        }
    }
}

/// What a worker running an operation reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpEvent {
    Progress(String),
    Done(String),
    Failed(String),
}

/// The last operation on a card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpStatus {
    pub kind: OpKind,
    pub phase: String,
    /// `None` while running.
    pub outcome: Option<Result<String, String>>,
}

impl OpStatus {
    #[must_use]
    pub fn running(&self) -> bool {
        self.outcome.is_none()
    }
}

/// The debugfs summaries of the selected card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detail {
    pub smpt: Result<libmic::SmptSummary, String>,
    pub dp: Result<libmic::DpSummary, String>,
}

/// One card as mictop knows it.
#[derive(Debug, Clone)]
pub struct CardView {
    pub card: Card,
    pub id: u32,
    pub name: String,
    pub state: Option<MicState>,
    /// Why the state could not be read, if it could not.
    pub state_error: Option<String>,
    /// When mictop saw the state begin; `None`: before mictop started (or
    /// before the card was enumerated again, see `first_seen`).
    pub since: Option<Instant>,
    /// When this card was enumerated, if after mictop started (the driver
    /// came back): a state of unknown age is at least this old.
    pub first_seen: Option<Instant>,
    /// When the state shown was read (a watcher's read, or the start of an
    /// attribute snapshot): an older read does not override it.
    pub state_at: Option<Instant>,
    pub info: Option<CardInfo>,
    pub info_error: Option<String>,
    pub post: Option<String>,
    pub op: Option<OpStatus>,
    pub marked: bool,
}

impl CardView {
    #[must_use]
    pub fn new(card: Card, state: Result<MicState, String>) -> Self {
        let (state, state_error) = match state {
            Ok(s) => (Some(s), None),
            Err(e) => (None, Some(e)),
        };
        Self {
            id: card.id(),
            name: card.name().to_owned(),
            card,
            state,
            state_error,
            since: None,
            first_seen: None,
            state_at: None,
            info: None,
            info_error: None,
            post: None,
            op: None,
            marked: false,
        }
    }

    /// Online, with the card OS not yet running (post code not `FF`).
    #[must_use]
    pub fn booting(&self) -> bool {
        self.state == Some(MicState::Online) && self.post.as_deref().is_some_and(|p| p != "FF")
    }

    #[must_use]
    pub fn shutdown_status(&self) -> Option<MicStatus> {
        self.info.as_ref().and_then(|i| i.shutdown_status)
    }

    /// Time in the current state, and whether it is only a lower bound
    /// (the state began before mictop started).
    #[must_use]
    pub fn age(&self, now: Instant, started: Instant) -> (Duration, bool) {
        match self.since {
            Some(s) => (now.saturating_duration_since(s), false),
            None => (
                now.saturating_duration_since(self.first_seen.unwrap_or(started)),
                true,
            ),
        }
    }
}

/// `42s`, `12m`, `3h05m`, `2d04h`: second resolution only in the first minute.
#[must_use]
pub fn fmt_age(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86_400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// Which column the table is sorted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    Name,
    State,
    Status,
    Family,
    Ip,
    Age,
}

impl SortKey {
    #[must_use]
    pub fn next(self) -> Self {
        match self {
            SortKey::Name => SortKey::State,
            SortKey::State => SortKey::Status,
            SortKey::Status => SortKey::Family,
            SortKey::Family => SortKey::Ip,
            SortKey::Ip => SortKey::Age,
            SortKey::Age => SortKey::Name,
        }
    }

    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            SortKey::Name => "name",
            SortKey::State => "state",
            SortKey::Status => "status",
            SortKey::Family => "family",
            SortKey::Ip => "ip",
            SortKey::Age => "age",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Focus {
    Cards,
    Log,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Zoom {
    None,
    Detail,
    Log,
}

/// What is drawn over the screen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Overlay {
    None,
    Help { scroll: u16 },
    Confirm { kind: OpKind, ids: Vec<u32> },
    Errors,
    Search { input: String },
}

/// One line of the log pane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogLine {
    Record(LogRecord),
    /// mictop's own note (records lost, card restarted).
    Marker(String),
}

/// The log pane: the selected card's kernel log.
#[derive(Debug, Clone)]
pub struct LogView {
    pub card: Option<u32>,
    /// (sequence number, line); sequence numbers only grow.
    pub lines: VecDeque<(u64, LogLine)>,
    next_seq: u64,
    /// Stick to the newest line.
    pub follow: bool,
    /// When paused: the sequence number of the bottom line shown.
    pub anchor: u64,
    /// Show records up to this level (7: all).
    pub max_level: u8,
    pub search: Option<String>,
    pub error: Option<String>,
    /// Records received for this card.
    pub received: u64,
}

impl LogView {
    fn new(card: Option<u32>, max_level: u8) -> Self {
        Self {
            card,
            lines: VecDeque::new(),
            next_seq: 0,
            follow: true,
            anchor: 0,
            max_level,
            search: None,
            error: None,
            received: 0,
        }
    }

    fn push(&mut self, line: LogLine, cap: usize) {
        self.lines.push_back((self.next_seq, line));
        self.next_seq += 1;
        while self.lines.len() > cap {
            self.lines.pop_front();
        }
    }

    fn shown(&self, line: &LogLine) -> bool {
        match line {
            LogLine::Record(r) => r.level & 7 <= self.max_level,
            LogLine::Marker(_) => true,
        }
    }

    /// Indices (into `lines`) of the lines the level filter lets through.
    #[must_use]
    pub fn visible(&self) -> Vec<usize> {
        (0..self.lines.len())
            .filter(|&i| self.shown(&self.lines[i].1))
            .collect()
    }

    /// The position in `vis` of the bottom line shown.
    #[must_use]
    pub fn bottom(&self, vis: &[usize]) -> Option<usize> {
        if vis.is_empty() {
            return None;
        }
        if self.follow {
            return Some(vis.len() - 1);
        }
        let p = vis.partition_point(|&i| self.lines[i].0 <= self.anchor);
        Some(p.saturating_sub(1))
    }

    /// Whether a line matches the search.
    #[must_use]
    pub fn matches(&self, line: &LogLine) -> bool {
        let Some(q) = self.search.as_deref() else {
            return false;
        };
        let text = match line {
            LogLine::Record(r) => &r.text,
            LogLine::Marker(m) => m,
        };
        contains_ignore_case(text, q)
    }

    /// Moves the bottom of the view by `delta` lines; `page` is the pane
    /// height. Moving past the newest line resumes following.
    fn scroll(&mut self, delta: isize, page: usize) {
        let vis = self.visible();
        let Some(bottom) = self.bottom(&vis) else { return };
        let last = vis.len() - 1;
        let min = page.min(vis.len()).saturating_sub(1);
        let target = bottom.saturating_add_signed(delta).max(min);
        if target >= last {
            self.follow = true;
        } else {
            self.follow = false;
            self.anchor = self.lines[vis[target]].0;
        }
    }

    fn jump_to(&mut self, pos: usize, vis: &[usize], page: usize) {
        let last = vis.len().saturating_sub(1);
        let pos = pos.max(page.min(vis.len()).saturating_sub(1));
        if pos >= last {
            self.follow = true;
        } else {
            self.follow = false;
            self.anchor = self.lines[vis[pos]].0;
        }
    }

    /// Moves to the next match below (`forward`) or above the bottom line.
    fn find(&mut self, forward: bool, page: usize, include_current: bool) -> bool {
        let vis = self.visible();
        let Some(bottom) = self.bottom(&vis) else {
            return false;
        };
        let hit = if forward {
            let from = if include_current { bottom } else { bottom + 1 };
            (from..vis.len()).find(|&p| self.matches(&self.lines[vis[p]].1))
        } else {
            let to = if include_current { bottom + 1 } else { bottom };
            (0..to).rev().find(|&p| self.matches(&self.lines[vis[p]].1))
        };
        if let Some(p) = hit {
            // Show the match, a few lines above the bottom when possible.
            let pos = (p + page / 3).min(vis.len() - 1);
            self.follow = false;
            self.anchor = self.lines[vis[pos]].0;
            true
        } else {
            false
        }
    }
}

/// Case-insensitive substring test (ASCII case folding).
#[must_use]
pub fn contains_ignore_case(hay: &str, needle: &str) -> bool {
    if needle.is_empty() {
        return false;
    }
    let (h, n) = (hay.as_bytes(), needle.as_bytes());
    h.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n))
}

/// Everything that can happen to the application.
#[derive(Debug, Clone)]
pub enum Action {
    Key(KeyEvent),
    Mouse(MouseEvent),
    Resize(u16, u16),
    /// The clock: time-in-state, boot progress, host stats.
    Tick(Instant),
    Host(HostInfo),
    /// A card's `state` changed (poll on sysfs).
    State {
        id: u32,
        state: Result<MicState, String>,
        at: Instant,
    },
    /// Every attribute of a card, re-read; `at` is when the read began.
    Info {
        id: u32,
        info: Result<CardInfo, String>,
        post: Option<String>,
        at: Instant,
    },
    PostCode {
        id: u32,
        post: Option<String>,
    },
    Detail {
        id: u32,
        detail: Detail,
    },
    /// What is new in the card log: records, losses, a restart.
    Log {
        id: u32,
        entries: Vec<LogEntry>,
    },
    LogError {
        id: u32,
        error: String,
    },
    Op {
        id: u32,
        kind: OpKind,
        event: OpEvent,
    },
    /// The driver (or the micemu serving the root) went away: open files
    /// answer ENOTCONN/ENODEV, or the cards vanished.
    DriverGone(String),
    /// The driver answers again (its cards can be enumerated and read).
    DriverBack,
    /// The cards as enumerated afresh after the driver came back.
    Fleet(Vec<CardView>),
    Quit,
}

/// What the runtime must do after an update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    Quit,
    /// Re-read every attribute (and the post code) of these cards.
    RefreshInfo(Vec<u32>),
    /// Read the debugfs summaries of a card.
    LoadDetail(u32),
    /// Follow this card's log (or none).
    FollowLog(Option<u32>),
    ReadPostCodes(Vec<u32>),
    RefreshHost,
    Run {
        kind: OpKind,
        ids: Vec<u32>,
    },
    SetMouse(bool),
    /// The driver is gone: stop watching the old files, and probe the root
    /// until its cards can be read again (then [`Action::DriverBack`]).
    Reconnect,
    /// Enumerate the cards again and watch the new files ([`Action::Fleet`]).
    Reenumerate,
}

/// The whole state of the UI.
#[derive(Debug)]
#[expect(clippy::struct_excessive_bools, reason = "independent flags of the UI state")]
pub struct App {
    pub config: Config,
    pub theme: Theme,
    /// The root, for the header.
    pub root: String,
    pub host: Option<HostInfo>,
    pub cards: Vec<CardView>,
    /// Display order: indices into `cards`.
    pub order: Vec<usize>,
    /// Position of the selection in `order`.
    pub selected: usize,
    pub sort: SortKey,
    pub sort_reverse: bool,
    pub focus: Focus,
    pub zoom: Zoom,
    pub overlay: Overlay,
    /// Errors not yet acknowledged.
    pub errors: Vec<String>,
    pub log: LogView,
    pub detail: Option<(u32, Detail)>,
    /// A one-line message for the footer, cleared by the next key.
    pub status: Option<String>,
    pub now: Instant,
    pub started: Instant,
    pub size: Rect,
    pub mouse: bool,
    pub layout: LayoutMode,
    /// First visible row of the card table (or grid).
    pub table_offset: usize,
    /// Something changed since the last frame.
    pub dirty: bool,
    pub quit: bool,
    /// The driver is gone, and why: what the cards showed is no longer
    /// known; mictop is reconnecting.
    pub driver_gone: Option<String>,
    last_stats: Option<Instant>,
    clock_key: u64,
}

impl App {
    /// A new UI over `cards` (in id order). `now` is the start time.
    #[must_use]
    pub fn new(config: Config, theme: Theme, root: String, cards: Vec<CardView>, now: Instant) -> Self {
        let order = (0..cards.len()).collect();
        let mouse = config.mouse;
        let layout = config.layout;
        let log = LogView::new(cards.first().map(|c| c.id), 7);
        let mut app = Self {
            config,
            theme,
            root,
            host: None,
            cards,
            order,
            selected: 0,
            sort: SortKey::Name,
            sort_reverse: false,
            focus: Focus::Cards,
            zoom: Zoom::None,
            overlay: Overlay::None,
            errors: Vec::new(),
            log,
            detail: None,
            status: None,
            now,
            started: now,
            size: Rect::new(0, 0, 80, 24),
            mouse,
            layout,
            table_offset: 0,
            dirty: true,
            quit: false,
            driver_gone: None,
            last_stats: None,
            clock_key: 0,
        };
        app.clock_key = app.compute_clock_key();
        app
    }

    /// The effects to run at start: load everything, follow the first card.
    #[must_use]
    pub fn start(&self) -> Vec<Effect> {
        let mut e = vec![
            Effect::RefreshHost,
            Effect::RefreshInfo(self.cards.iter().map(|c| c.id).collect()),
        ];
        if let Some(id) = self.selected_id() {
            e.push(Effect::FollowLog(Some(id)));
            e.push(Effect::LoadDetail(id));
        }
        e
    }

    // ---- queries ---------------------------------------------------------

    #[must_use]
    pub fn selected_card(&self) -> Option<&CardView> {
        self.order.get(self.selected).map(|&i| &self.cards[i])
    }

    #[must_use]
    pub fn selected_id(&self) -> Option<u32> {
        self.selected_card().map(|c| c.id)
    }

    fn index_of(&self, id: u32) -> Option<usize> {
        // Cards are in id order, usually ids 0..n.
        match self.cards.get(id as usize) {
            Some(c) if c.id == id => Some(id as usize),
            _ => self.cards.iter().position(|c| c.id == id),
        }
    }

    /// The cards an action applies to: the marked ones, else the selected.
    #[must_use]
    pub fn targets(&self) -> Vec<u32> {
        let marked: Vec<u32> = self.cards.iter().filter(|c| c.marked).map(|c| c.id).collect();
        if marked.is_empty() {
            self.selected_id().into_iter().collect()
        } else {
            marked
        }
    }

    /// Whether the card list is drawn as the compact grid.
    #[must_use]
    pub fn compact(&self) -> bool {
        match self.layout {
            LayoutMode::Full => false,
            LayoutMode::Compact => true,
            LayoutMode::Auto => {
                let body = self.size.height.saturating_sub(3) as usize;
                self.cards.len() > self.config.compact_threshold || self.cards.len() + 3 > body * 3 / 5
            }
        }
    }

    /// The screen areas for the current size.
    #[must_use]
    pub fn areas(&self) -> Areas {
        ui::layout(self.size, self)
    }

    /// Rows of cards visible in the card area, and cards per row.
    #[must_use]
    pub fn card_viewport(&self) -> (usize, usize) {
        let area = self.areas().cards.unwrap_or_default();
        if self.compact() {
            let per_row = ui::table::grid_columns(area.width);
            (area.height.saturating_sub(2) as usize, per_row)
        } else {
            (area.height.saturating_sub(3) as usize, 1)
        }
    }

    fn log_page(&self) -> usize {
        self.areas()
            .log
            .map_or(10, |r| r.height.saturating_sub(2) as usize)
            .max(1)
    }

    fn compute_clock_key(&self) -> u64 {
        let mut h = std::hash::DefaultHasher::new();
        for c in &self.cards {
            fmt_age(c.age(self.now, self.started).0).hash(&mut h);
        }
        h.finish()
    }

    // ---- update ------------------------------------------------------------

    /// Applies one action.
    pub fn update(&mut self, action: Action) -> Vec<Effect> {
        match action {
            Action::Key(k) => self.on_key(k),
            Action::Mouse(m) => self.on_mouse(m),
            Action::Resize(w, h) => {
                self.size = Rect::new(0, 0, w, h);
                self.ensure_visible();
                self.dirty = true;
                vec![]
            }
            Action::Tick(t) => self.on_tick(t),
            Action::Host(h) => {
                if self.host.as_ref() != Some(&h) {
                    self.host = Some(h);
                    self.dirty = true;
                }
                vec![]
            }
            Action::State { id, state, at } => self.on_state(id, state, at),
            Action::Info { id, info, post, at } => self.on_info(id, info, post, at),
            Action::PostCode { id, post } => {
                let Some(i) = self.index_of(id) else { return vec![] };
                if self.cards[i].post == post {
                    return vec![];
                }
                self.cards[i].post = post;
                self.dirty = true;
                // The card OS is up: its device page is worth another look.
                if self.cards[i].post.as_deref() == Some("FF") && Some(id) == self.selected_id() {
                    return vec![Effect::LoadDetail(id)];
                }
                vec![]
            }
            Action::Detail { id, detail } => {
                if Some(id) == self.selected_id() {
                    self.detail = Some((id, detail));
                    self.dirty = true;
                }
                vec![]
            }
            Action::Log { id, entries } => {
                self.on_log(id, entries);
                vec![]
            }
            Action::LogError { id, error } => {
                if self.log.card == Some(id) && self.log.error.as_ref() != Some(&error) {
                    self.log.error = Some(error);
                    self.dirty = true;
                }
                vec![]
            }
            Action::Op { id, kind, event } => self.on_op(id, kind, event),
            Action::DriverGone(reason) => self.on_driver_gone(reason),
            Action::DriverBack => vec![Effect::Reenumerate],
            Action::Fleet(cards) => self.on_fleet(cards),
            Action::Quit => self.quit(),
        }
    }

    fn quit(&mut self) -> Vec<Effect> {
        self.quit = true;
        vec![Effect::Quit]
    }

    fn on_tick(&mut self, t: Instant) -> Vec<Effect> {
        self.now = t;
        let mut effects = Vec::new();
        if self
            .last_stats
            .is_none_or(|s| t.saturating_duration_since(s) >= self.config.stats_interval)
        {
            self.last_stats = Some(t);
            effects.push(Effect::RefreshHost);
        }
        let booting: Vec<u32> = self.cards.iter().filter(|c| c.booting()).map(|c| c.id).collect();
        if !booting.is_empty() {
            effects.push(Effect::ReadPostCodes(booting));
        }
        let key = self.compute_clock_key();
        if key != self.clock_key {
            self.clock_key = key;
            self.dirty = true;
        }
        effects
    }

    fn on_state(&mut self, id: u32, state: Result<MicState, String>, at: Instant) -> Vec<Effect> {
        let Some(i) = self.index_of(id) else { return vec![] };
        let c = &mut self.cards[i];
        match state {
            Ok(s) => {
                c.state_error = None;
                c.state_at = Some(at);
                if c.state != Some(s) {
                    c.state = Some(s);
                    c.since = Some(at);
                }
            }
            Err(e) => c.state_error = Some(e),
        }
        self.dirty = true;
        self.resort();
        let mut effects = vec![Effect::RefreshInfo(vec![id])];
        if Some(id) == self.selected_id() {
            effects.push(Effect::LoadDetail(id));
        }
        effects
    }

    fn on_info(
        &mut self,
        id: u32,
        info: Result<CardInfo, String>,
        post: Option<String>,
        at: Instant,
    ) -> Vec<Effect> {
        let Some(i) = self.index_of(id) else { return vec![] };
        let c = &mut self.cards[i];
        match info {
            Ok(info) => {
                // A snapshot that began before the state last read was read
                // may hold an older state: it does not override it.
                let newer = c.state_at.is_none_or(|t| at >= t);
                if newer && c.state != Some(info.state) {
                    if c.state.is_some() {
                        c.since = Some(at);
                    }
                    c.state = Some(info.state);
                }
                if newer {
                    c.state_at = Some(at);
                }
                c.state_error = None;
                c.info = Some(info);
                c.info_error = None;
            }
            Err(e) => c.info_error = Some(e),
        }
        c.post = post;
        self.dirty = true;
        self.resort();
        vec![]
    }

    /// The driver went away: nothing shown about the cards is known any
    /// more. They are kept (so the screen keeps its shape) but show as gone
    /// until the driver is back and they are enumerated again.
    fn on_driver_gone(&mut self, reason: String) -> Vec<Effect> {
        if self.driver_gone.is_some() {
            return vec![];
        }
        self.driver_gone = Some(reason);
        for c in &mut self.cards {
            c.state = None;
            c.since = None;
            c.post = None;
            c.info = None;
        }
        self.detail = None;
        self.dirty = true;
        vec![Effect::Reconnect]
    }

    /// The cards as the driver shows them after it came back: they replace
    /// the old ones; marks and the selection stay with their cards.
    fn on_fleet(&mut self, cards: Vec<CardView>) -> Vec<Effect> {
        let keep = self.selected_id();
        let marked: Vec<u32> = self.cards.iter().filter(|c| c.marked).map(|c| c.id).collect();
        self.cards = cards;
        for c in &mut self.cards {
            c.marked = marked.contains(&c.id);
            c.first_seen = Some(self.now);
        }
        self.order = (0..self.cards.len()).collect();
        self.selected = 0;
        self.driver_gone = None;
        self.resort();
        if let Some(p) = keep.and_then(|id| self.order.iter().position(|&i| self.cards[i].id == id)) {
            self.selected = p;
        }
        self.ensure_visible();
        self.dirty = true;
        let mut effects = vec![Effect::RefreshInfo(self.cards.iter().map(|c| c.id).collect())];
        effects.extend(self.selection_changed());
        effects
    }

    fn on_log(&mut self, id: u32, entries: Vec<LogEntry>) {
        if self.log.card != Some(id) {
            return;
        }
        let cap = self.config.scrollback;
        for e in entries {
            match e {
                LogEntry::Record(r) => {
                    self.log.received += 1;
                    self.log.push(LogLine::Record(r), cap);
                }
                LogEntry::Lost(l) => self
                    .log
                    .push(LogLine::Marker(format!("── {} ──", l.describe())), cap),
                LogEntry::Reset => {
                    if self.log.received > 0 {
                        self.log.push(
                            LogLine::Marker("── the card restarted: its log begins again ──".into()),
                            cap,
                        );
                    }
                }
            }
        }
        self.log.error = None;
        // A paused view whose anchor scrolled out of the scrollback sticks
        // to the oldest line kept.
        self.dirty = true;
    }

    fn on_op(&mut self, id: u32, kind: OpKind, event: OpEvent) -> Vec<Effect> {
        let Some(i) = self.index_of(id) else { return vec![] };
        let name = self.cards[i].name.clone();
        let op = self.cards[i].op.get_or_insert(OpStatus {
            kind,
            phase: String::new(),
            outcome: None,
        });
        op.kind = kind;
        match event {
            OpEvent::Progress(p) => op.phase = p,
            OpEvent::Done(m) => {
                op.phase.clone_from(&m);
                op.outcome = Some(Ok(m.clone()));
                self.status = Some(format!("{name}: {}: {m}", kind.verb()));
            }
            OpEvent::Failed(m) => {
                op.phase = "failed".into();
                op.outcome = Some(Err(m.clone()));
                self.errors.push(format!("{name}: {} failed: {m}", kind.verb()));
                if self.overlay == Overlay::None {
                    self.overlay = Overlay::Errors;
                }
            }
        }
        self.dirty = true;
        let mut effects = vec![Effect::RefreshInfo(vec![id])];
        if Some(id) == self.selected_id() && self.cards[i].op.as_ref().is_some_and(|o| !o.running()) {
            effects.push(Effect::LoadDetail(id));
        }
        effects
    }

    // ---- keys --------------------------------------------------------------

    fn on_key(&mut self, key: KeyEvent) -> Vec<Effect> {
        if key.kind == KeyEventKind::Release {
            return vec![];
        }
        self.dirty = true;
        self.status = None;
        match &mut self.overlay {
            Overlay::None => {}
            Overlay::Confirm { kind, ids } => {
                let (kind, ids) = (*kind, std::mem::take(ids));
                return match key.code {
                    KeyCode::Char('y' | 'Y') | KeyCode::Enter => {
                        self.close_overlay();
                        self.start_op(kind, ids)
                    }
                    KeyCode::Char('n' | 'N' | 'q') | KeyCode::Esc => {
                        self.status = Some(format!("{} cancelled", kind.verb()));
                        self.close_overlay();
                        vec![]
                    }
                    _ if is_ctrl_c(&key) => self.quit(),
                    _ => {
                        self.overlay = Overlay::Confirm { kind, ids };
                        vec![]
                    }
                };
            }
            Overlay::Errors => {
                if is_ctrl_c(&key) {
                    return self.quit();
                }
                if matches!(key.code, KeyCode::Esc | KeyCode::Enter | KeyCode::Char('q' | ' ')) {
                    self.errors.clear();
                    self.close_overlay();
                }
                return vec![];
            }
            Overlay::Help { scroll } => {
                match key.code {
                    KeyCode::Up | KeyCode::Char('k') => *scroll = scroll.saturating_sub(1),
                    KeyCode::Down | KeyCode::Char('j') => *scroll = scroll.saturating_add(1),
                    KeyCode::PageUp => *scroll = scroll.saturating_sub(10),
                    KeyCode::PageDown => *scroll = scroll.saturating_add(10),
                    _ if is_ctrl_c(&key) => return self.quit(),
                    _ => self.close_overlay(),
                }
                return vec![];
            }
            Overlay::Search { input } => {
                match key.code {
                    KeyCode::Esc => self.close_overlay(),
                    KeyCode::Enter => {
                        let q = std::mem::take(input);
                        self.close_overlay();
                        self.apply_search(q);
                    }
                    KeyCode::Backspace => {
                        input.pop();
                    }
                    KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => {
                        self.close_overlay();
                    }
                    KeyCode::Char('u') if key.modifiers.contains(KeyModifiers::CONTROL) => input.clear(),
                    KeyCode::Char(c) if input.len() < 200 => input.push(c),
                    _ => {}
                }
                return vec![];
            }
        }
        if key.code == KeyCode::Esc {
            if self.zoom != Zoom::None {
                self.zoom = Zoom::None;
                self.ensure_visible();
            } else if self.log.search.is_some() {
                self.log.search = None;
            } else if self.cards.iter().any(|c| c.marked) {
                self.unmark_all();
            }
            return vec![];
        }
        if let Some(cmd) = self.config.keys.command(&key) {
            self.on_command(cmd)
        } else {
            self.dirty = false;
            vec![]
        }
    }

    fn close_overlay(&mut self) {
        self.overlay = if self.errors.is_empty() {
            Overlay::None
        } else {
            Overlay::Errors
        };
    }

    #[expect(
        clippy::too_many_lines,
        reason = "one arm per command reads best in one place"
    )]
    fn on_command(&mut self, cmd: Command) -> Vec<Effect> {
        let log_focus = self.focus == Focus::Log || self.zoom == Zoom::Log;
        match cmd {
            Command::Quit => return self.quit(),
            Command::Help => self.overlay = Overlay::Help { scroll: 0 },
            Command::Up if log_focus => self.log.scroll(-1, self.log_page()),
            Command::Down if log_focus => self.log.scroll(1, self.log_page()),
            Command::PageUp if log_focus => self.log.scroll(-(self.log_page() as isize), self.log_page()),
            Command::PageDown if log_focus => self.log.scroll(self.log_page() as isize, self.log_page()),
            Command::Top if log_focus => {
                let vis = self.log.visible();
                self.log.jump_to(0, &vis, self.log_page());
            }
            Command::Bottom if log_focus => self.log.follow = true,
            Command::Up => return self.move_selection(-(self.card_viewport().1 as isize)),
            Command::Down => return self.move_selection(self.card_viewport().1 as isize),
            Command::Left => return self.move_selection(-1),
            Command::Right => return self.move_selection(1),
            Command::PageUp => {
                let (rows, cols) = self.card_viewport();
                return self.move_selection(-((rows.max(1) * cols) as isize));
            }
            Command::PageDown => {
                let (rows, cols) = self.card_viewport();
                return self.move_selection((rows.max(1) * cols) as isize);
            }
            Command::Top => return self.select_pos(0),
            Command::Bottom => return self.select_pos(self.order.len().saturating_sub(1)),
            Command::Focus => {
                self.focus = match self.focus {
                    Focus::Cards => Focus::Log,
                    Focus::Log => Focus::Cards,
                };
                if self.zoom != Zoom::None {
                    self.zoom = if self.focus == Focus::Log {
                        Zoom::Log
                    } else {
                        Zoom::Detail
                    };
                }
            }
            Command::Zoom => {
                self.zoom = match (self.zoom, self.focus) {
                    (Zoom::None, Focus::Cards) => Zoom::Detail,
                    (Zoom::None, Focus::Log) => Zoom::Log,
                    _ => Zoom::None,
                };
                self.ensure_visible();
            }
            Command::Mark => {
                if let Some(&i) = self.order.get(self.selected) {
                    self.cards[i].marked = !self.cards[i].marked;
                }
                if !self.compact() || self.card_viewport().1 == 1 {
                    return self.move_selection(1);
                }
            }
            Command::MarkAll => self.cards.iter_mut().for_each(|c| c.marked = true),
            Command::UnmarkAll => self.unmark_all(),
            Command::Boot => self.confirm(OpKind::Boot),
            Command::Shutdown => self.confirm(OpKind::Shutdown),
            Command::Reset => self.confirm(OpKind::Reset),
            Command::Reboot => self.confirm(OpKind::Reboot),
            Command::Sort => {
                self.sort = self.sort.next();
                self.resort();
                self.status = Some(format!("sorted by {}", self.sort.as_str()));
            }
            Command::SortReverse => {
                self.sort_reverse = !self.sort_reverse;
                self.resort();
            }
            Command::Follow => {
                self.log.follow = !self.log.follow;
                if !self.log.follow {
                    let vis = self.log.visible();
                    self.log.anchor = self.log.bottom(&vis).map_or(0, |p| self.log.lines[vis[p]].0);
                }
            }
            Command::Search => {
                self.overlay = Overlay::Search {
                    input: self.log.search.clone().unwrap_or_default(),
                };
            }
            Command::NextMatch | Command::PrevMatch => {
                if self.log.search.is_none() {
                    self.status = Some("no search: press / to search the log".into());
                } else if !self.log.find(cmd == Command::NextMatch, self.log_page(), false) {
                    self.status = Some("no more matches".into());
                }
            }
            Command::Level => {
                self.log.max_level = match self.log.max_level {
                    7 => 6,
                    6 => 5,
                    5 => 4,
                    4 => 3,
                    _ => 7,
                };
                self.status = Some(match self.log.max_level {
                    7 => "log: all levels".to_owned(),
                    l => format!("log: {} and more severe", libmic::klog::level_name(l)),
                });
            }
            Command::Layout => {
                self.layout = self.layout.next();
                self.table_offset = 0;
                self.ensure_visible();
                self.status = Some(format!("layout: {}", self.layout.as_str()));
            }
            Command::Mouse => {
                self.mouse = !self.mouse;
                self.status = Some(format!("mouse {}", if self.mouse { "on" } else { "off" }));
                return vec![Effect::SetMouse(self.mouse)];
            }
        }
        vec![]
    }

    fn unmark_all(&mut self) {
        self.cards.iter_mut().for_each(|c| c.marked = false);
    }

    fn apply_search(&mut self, q: String) {
        if q.is_empty() {
            self.log.search = None;
            return;
        }
        self.log.search = Some(q);
        // From the bottom shown, upwards: the most recent match.
        if !self.log.find(false, self.log_page(), true) {
            self.status = Some("no match".into());
        }
    }

    fn confirm(&mut self, kind: OpKind) {
        let ids = self.targets();
        if ids.is_empty() {
            self.status = Some("no card selected".into());
            return;
        }
        if let Some(busy) = ids
            .iter()
            .filter_map(|&id| self.index_of(id))
            .find(|&i| self.cards[i].op.as_ref().is_some_and(OpStatus::running))
        {
            self.status = Some(format!(
                "{} is busy: wait for its action to finish",
                self.cards[busy].name
            ));
            return;
        }
        self.overlay = Overlay::Confirm { kind, ids };
    }

    fn start_op(&mut self, kind: OpKind, ids: Vec<u32>) -> Vec<Effect> {
        for &id in &ids {
            if let Some(i) = self.index_of(id) {
                self.cards[i].op = Some(OpStatus {
                    kind,
                    phase: "starting".into(),
                    outcome: None,
                });
            }
        }
        self.unmark_all();
        self.status = Some(format!("{}: {} card(s)", kind.verb(), ids.len()));
        vec![Effect::Run { kind, ids }]
    }

    /// Starts operations without confirmation (the demo boots its cards).
    pub fn run_now(&mut self, kind: OpKind, ids: Vec<u32>) -> Vec<Effect> {
        self.dirty = true;
        self.start_op(kind, ids)
    }

    // ---- selection ---------------------------------------------------------

    fn move_selection(&mut self, delta: isize) -> Vec<Effect> {
        if self.order.is_empty() {
            return vec![];
        }
        let pos = self
            .selected
            .saturating_add_signed(delta)
            .min(self.order.len() - 1);
        self.select_pos(pos)
    }

    fn select_pos(&mut self, pos: usize) -> Vec<Effect> {
        let before = self.selected_id();
        self.selected = pos.min(self.order.len().saturating_sub(1));
        self.ensure_visible();
        let after = self.selected_id();
        if before == after {
            return vec![];
        }
        self.selection_changed()
    }

    fn selection_changed(&mut self) -> Vec<Effect> {
        let id = self.selected_id();
        self.detail = None;
        self.log = LogView::new(id, self.log.max_level);
        match id {
            Some(id) => vec![Effect::FollowLog(Some(id)), Effect::LoadDetail(id)],
            None => vec![Effect::FollowLog(None)],
        }
    }

    /// Scrolls the card list so the selection is visible.
    pub fn ensure_visible(&mut self) {
        let (rows, cols) = self.card_viewport();
        let rows = rows.max(1);
        let row = self.selected / cols.max(1);
        if row < self.table_offset {
            self.table_offset = row;
        } else if row >= self.table_offset + rows {
            self.table_offset = row + 1 - rows;
        }
        let total_rows = self.order.len().div_ceil(cols.max(1));
        self.table_offset = self.table_offset.min(total_rows.saturating_sub(rows));
    }

    /// Re-sorts, keeping the selected card selected.
    fn resort(&mut self) {
        let keep = self.selected_id();
        let cards = &self.cards;
        let (now, started) = (self.now, self.started);
        let key = self.sort;
        self.order.sort_by(|&a, &b| {
            let (x, y) = (&cards[a], &cards[b]);
            let ord = match key {
                SortKey::Name => std::cmp::Ordering::Equal,
                SortKey::State => x.state.map(|s| s as u8).cmp(&y.state.map(|s| s as u8)),
                SortKey::Status => x.shutdown_status().cmp(&y.shutdown_status()),
                SortKey::Family => {
                    let f = |c: &CardView| c.info.as_ref().map(|i| (i.family.clone(), i.stepping.clone()));
                    f(x).cmp(&f(y))
                }
                SortKey::Ip => {
                    let f = |c: &CardView| c.info.as_ref().and_then(|i| i.ipaddr);
                    f(x).cmp(&f(y))
                }
                SortKey::Age => y.age(now, started).0.cmp(&x.age(now, started).0),
            };
            ord.then(x.id.cmp(&y.id))
        });
        if self.sort_reverse {
            self.order.reverse();
        }
        if let Some(id) = keep {
            if let Some(p) = self.order.iter().position(|&i| self.cards[i].id == id) {
                self.selected = p;
            }
        }
        self.ensure_visible();
    }

    // ---- mouse -------------------------------------------------------------

    fn on_mouse(&mut self, m: MouseEvent) -> Vec<Effect> {
        if !self.mouse || self.overlay != Overlay::None {
            return vec![];
        }
        let areas = self.areas();
        let at = Position::new(m.column, m.row);
        let in_cards = areas.cards.filter(|r| r.contains(at));
        let in_log = areas.log.is_some_and(|r| r.contains(at));
        match m.kind {
            MouseEventKind::Down(MouseButton::Left) => {
                if let Some(r) = in_cards {
                    self.focus = Focus::Cards;
                    self.dirty = true;
                    if let Some(pos) = self.card_at(r, at) {
                        return self.select_pos(pos);
                    }
                } else if in_log {
                    self.focus = Focus::Log;
                    self.dirty = true;
                }
            }
            MouseEventKind::ScrollUp | MouseEventKind::ScrollDown => {
                let up = m.kind == MouseEventKind::ScrollUp;
                self.dirty = true;
                if in_log {
                    self.log.scroll(if up { -3 } else { 3 }, self.log_page());
                } else if in_cards.is_some() {
                    return self.move_selection(if up { -1 } else { 1 });
                }
            }
            _ => {}
        }
        vec![]
    }

    /// The position in `order` of the card drawn at `at`.
    fn card_at(&self, area: Rect, at: Position) -> Option<usize> {
        let inner_top = area.y + 1;
        if self.compact() {
            let row = at.y.checked_sub(inner_top)? as usize;
            let col = (at.x.checked_sub(area.x + 1)? / ui::table::CELL_WIDTH) as usize;
            let cols = ui::table::grid_columns(area.width);
            if col >= cols {
                return None;
            }
            let pos = (row + self.table_offset) * cols + col;
            (pos < self.order.len()).then_some(pos)
        } else {
            let row = at.y.checked_sub(inner_top + 1)? as usize;
            let pos = row + self.table_offset;
            (pos < self.order.len()).then_some(pos)
        }
    }
}

fn is_ctrl_c(key: &KeyEvent) -> bool {
    key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(ts: u64, level: u8, text: &str) -> LogRecord {
        LogRecord {
            ts_nsec: ts,
            level,
            facility: 0,
            text: text.into(),
            dict: None,
        }
    }

    #[test]
    fn ages() {
        assert_eq!(fmt_age(Duration::from_secs(5)), "5s");
        assert_eq!(fmt_age(Duration::from_secs(125)), "2m");
        assert_eq!(fmt_age(Duration::from_secs(3 * 3600 + 300)), "3h05m");
        assert_eq!(fmt_age(Duration::from_secs(2 * 86_400 + 4 * 3600)), "2d04h");
    }

    #[test]
    fn log_scroll_and_search() {
        let mut v = LogView::new(Some(0), 7);
        for i in 0..100 {
            v.push(
                LogLine::Record(rec(i, if i % 10 == 0 { 3 } else { 6 }, &format!("line {i}"))),
                50,
            );
        }
        assert_eq!(v.lines.len(), 50);
        let vis = v.visible();
        assert_eq!(v.bottom(&vis), Some(49));
        v.scroll(-5, 10);
        assert!(!v.follow);
        let vis = v.visible();
        assert_eq!(v.bottom(&vis), Some(44));
        // Cannot scroll above a full first page.
        v.scroll(-1000, 10);
        let vis = v.visible();
        assert_eq!(v.bottom(&vis), Some(9));
        v.scroll(1000, 10);
        assert!(v.follow);
        v.max_level = 3;
        assert_eq!(v.visible().len(), 5);
        v.max_level = 7;
        v.search = Some("LINE 7".into());
        assert!(v.find(false, 9, true));
        let vis = v.visible();
        let b = v.bottom(&vis).unwrap();
        assert_eq!(v.lines[vis[b]].0, 82); // line 79 + page/3
        assert!(contains_ignore_case("Linux version", "linux"));
        assert!(!contains_ignore_case("abc", ""));
    }
}
