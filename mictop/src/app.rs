//! The application: the components (see [`crate::components`]) and its
//! one entry point, [`App::update`]. Every input, sysfs change, log update
//! and action result arrives as an [`Action`]; input goes to the component
//! it is for, whose [`Msg`] the update step carries out; `update` returns
//! the [`Effect`]s the runtime must carry out (reads, lifecycle operations,
//! quitting). Drawing ([`crate::ui`]) reads this state; the layout
//! ([`crate::layout`]) is a function of plain inputs both use.

use std::time::Instant;

use libmic::klog::LogEntry;
use libmic::{CardInfo, MicState};
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, MouseButton, MouseEvent, MouseEventKind};
use ratatui::layout::{Position, Rect};

use crate::components::Msg;
use crate::components::console::{ConsoleOp, Consoles};
use crate::components::detail::DetailView;
use crate::components::dialogs::{Dialogs, Overlay};
use crate::components::fleet::Fleet;
use crate::components::header::Header;
use crate::components::log::LogView;
use crate::config::{Command, Config};
use crate::console::{ConsoleEvent, TermSize};
use crate::layout::{self, Areas, LayoutInput, Screen, Zoom};
use crate::model::{CardView, Detail, HostInfo, Mpssd, MpssdUpdate, OpEvent, OpKind};
use crate::theme::Theme;

/// Which pane takes the navigation keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Focus {
    Cards,
    Log,
    Console,
}

/// Everything that can happen to the application.
#[derive(Debug, Clone)]
pub enum Action {
    Key(KeyEvent),
    /// Text pasted into the terminal.
    Paste(String),
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
    /// What an attached console of card `card` says.
    Console {
        card: u32,
        event: ConsoleEvent,
    },
    /// The event loop's own: card `card`'s console has events waiting in
    /// its mailbox, which the loop hands on as [`Action::Console`] (the
    /// app itself passes over this).
    ConsoleMail {
        card: u32,
    },
    /// The configuration file was read again: the new configuration and
    /// its theme, or why it cannot be used.
    Config(Box<Result<(Config, Theme), String>>),
    /// mpssd's status, its absence, or one of its events.
    Mpssd(MpssdUpdate),
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
    /// A new configuration is in force (intervals, timeouts).
    Reconfigure(Box<Config>),
    /// Attach, type into, resize or detach a console.
    Console(ConsoleOp),
}

/// The whole state of the UI.
#[derive(Debug)]
pub struct App {
    config: Config,
    theme: Theme,
    header: Header,
    fleet: Fleet,
    detail: DetailView,
    log: LogView,
    consoles: Consoles,
    dialogs: Dialogs,
    /// mpssd, as last heard of.
    mpssd: Mpssd,
    focus: Focus,
    zoom: Zoom,
    mouse: bool,
    /// A one-line message for the footer, cleared by the next key.
    status: Option<String>,
    /// Why the configuration file, read again, is not in force.
    config_error: Option<String>,
    size: Rect,
    /// Something changed since the last frame.
    dirty: bool,
    quit: bool,
    last_stats: Option<Instant>,
}

impl App {
    /// A new UI over `cards` (in id order). `now` is the start time.
    #[must_use]
    pub fn new(config: Config, theme: Theme, root: String, cards: Vec<CardView>, now: Instant) -> Self {
        let log = LogView::new(cards.first().map(|c| c.id), 7);
        Self {
            fleet: Fleet::new(cards, config.layout, config.compact_threshold, now),
            mouse: config.mouse,
            consoles: Consoles::new(config.console_scrollback),
            config,
            theme,
            header: Header::new(root),
            detail: DetailView::default(),
            log,
            dialogs: Dialogs::default(),
            mpssd: Mpssd::Unknown,
            focus: Focus::Cards,
            zoom: Zoom::None,
            status: None,
            config_error: None,
            size: Rect::new(0, 0, 80, 24),
            dirty: true,
            quit: false,
            last_stats: None,
        }
    }

    /// The effects to run at start: load everything, follow the first card.
    #[must_use]
    pub fn start(&self) -> Vec<Effect> {
        let mut e = vec![
            Effect::RefreshHost,
            Effect::RefreshInfo(self.fleet.cards().iter().map(|c| c.id).collect()),
        ];
        if let Some(id) = self.selected_id() {
            e.push(Effect::FollowLog(Some(id)));
            e.push(Effect::LoadDetail(id));
        }
        e
    }

    // ---- queries ---------------------------------------------------------

    #[must_use]
    pub fn config(&self) -> &Config {
        &self.config
    }

    #[must_use]
    pub fn theme(&self) -> &Theme {
        &self.theme
    }

    #[must_use]
    pub fn header(&self) -> &Header {
        &self.header
    }

    #[must_use]
    pub fn fleet(&self) -> &Fleet {
        &self.fleet
    }

    #[must_use]
    pub fn cards(&self) -> &[CardView] {
        self.fleet.cards()
    }

    #[must_use]
    pub fn detail(&self) -> &DetailView {
        &self.detail
    }

    #[must_use]
    pub fn log(&self) -> &LogView {
        &self.log
    }

    #[must_use]
    pub fn consoles(&self) -> &Consoles {
        &self.consoles
    }

    /// mpssd, as last heard of.
    #[must_use]
    pub fn mpssd(&self) -> &Mpssd {
        &self.mpssd
    }

    #[must_use]
    pub fn overlay(&self) -> &Overlay {
        self.dialogs.overlay()
    }

    /// Errors not yet acknowledged.
    #[must_use]
    pub fn errors(&self) -> &[String] {
        self.dialogs.errors()
    }

    #[must_use]
    pub fn focus(&self) -> Focus {
        self.focus
    }

    #[must_use]
    pub fn zoom(&self) -> Zoom {
        self.zoom
    }

    #[must_use]
    pub fn mouse(&self) -> bool {
        self.mouse
    }

    #[must_use]
    pub fn status(&self) -> Option<&str> {
        self.status.as_deref()
    }

    /// Why the configuration file, read again, is not in force (the
    /// configuration before it is).
    #[must_use]
    pub fn config_error(&self) -> Option<&str> {
        self.config_error.as_deref()
    }

    /// The driver is gone, and why.
    #[must_use]
    pub fn driver_gone(&self) -> Option<&str> {
        self.fleet.driver_gone()
    }

    #[must_use]
    pub fn selected_card(&self) -> Option<&CardView> {
        self.fleet.selected_card()
    }

    #[must_use]
    pub fn selected_id(&self) -> Option<u32> {
        self.fleet.selected_id()
    }

    /// Whether the card list is drawn as the compact grid.
    #[must_use]
    pub fn compact(&self) -> bool {
        self.fleet.compact(self.size.height)
    }

    /// The size and zoom: the application's inputs to the layout.
    #[must_use]
    pub fn screen(&self) -> Screen {
        Screen {
            size: self.size,
            zoom: self.zoom,
            console: self.consoles.visible(),
        }
    }

    /// The screen areas for the current size.
    #[must_use]
    pub fn areas(&self) -> Areas {
        self.fleet.areas(self.screen())
    }

    /// The areas in a frame of `size` (the card list drawn as for the
    /// terminal's size).
    #[must_use]
    pub fn areas_in(&self, size: Rect) -> Areas {
        layout::areas(&LayoutInput {
            screen: Screen {
                size,
                zoom: self.zoom,
                console: self.consoles.visible(),
            },
            cards: self.fleet.cards().len(),
            compact: self.compact(),
        })
    }

    /// Something changed since the last frame.
    #[must_use]
    pub fn needs_redraw(&self) -> bool {
        self.dirty
    }

    /// A frame showing the current state was drawn.
    pub fn drawn(&mut self) {
        self.dirty = false;
    }

    #[must_use]
    pub fn quitting(&self) -> bool {
        self.quit
    }

    fn log_page(&self) -> usize {
        self.areas().log_page()
    }

    // ---- update ------------------------------------------------------------

    /// Applies one action.
    pub fn update(&mut self, action: Action) -> Vec<Effect> {
        let mut effects = self.apply_action(action);
        // Every console's terminal is the size of the pane's inside.
        if let Some((cols, rows)) = self.areas().console_inner() {
            let ops = self.consoles.resize(TermSize { cols, rows });
            effects.extend(ops.into_iter().map(Effect::Console));
        }
        effects
    }

    fn apply_action(&mut self, action: Action) -> Vec<Effect> {
        match action {
            Action::Key(k) => self.on_key(k),
            Action::Paste(text) => self.on_paste(&text),
            Action::Console { card, event } => {
                let shown = self.consoles.visible() && self.consoles.shown().is_some_and(|c| c.card == card);
                let typing = self.consoles.typing();
                if self.consoles.on_event(card, event) && shown {
                    self.dirty = true;
                    if typing && !self.consoles.typing() {
                        let who = self.consoles.shown().and_then(|c| c.writer.clone());
                        self.status = Some(match who {
                            Some(w) => format!("typing stopped: {w} took the write side"),
                            None => "typing stopped: the console is read-only now".to_owned(),
                        });
                        self.dialogs.show_pending();
                    }
                }
                vec![]
            }
            Action::Mouse(m) => self.on_mouse(m),
            Action::Resize(w, h) => {
                self.size = Rect::new(0, 0, w, h);
                self.fleet.ensure_visible(self.screen());
                self.dirty = true;
                vec![]
            }
            Action::Tick(t) => self.on_tick(t),
            Action::Host(h) => {
                self.dirty |= self.header.on_host(h);
                vec![]
            }
            Action::State { id, state, at } => self.on_state(id, state, at),
            Action::Info { id, info, post, at } => self.on_info(id, info, post, at),
            Action::PostCode { id, post } => {
                if !self.fleet.on_post_code(id, post) {
                    return vec![];
                }
                self.dirty = true;
                // The card OS is up: its device page is worth another look.
                let up = self
                    .fleet
                    .card(id)
                    .is_some_and(|c| c.post.as_deref() == Some("FF"));
                if up && Some(id) == self.selected_id() {
                    return vec![Effect::LoadDetail(id)];
                }
                vec![]
            }
            Action::Detail { id, detail } => {
                if Some(id) == self.selected_id() {
                    self.detail.set(id, detail);
                    self.dirty = true;
                }
                vec![]
            }
            Action::Log { id, entries } => {
                self.dirty |= self.log.on_log(id, entries, self.config.scrollback);
                vec![]
            }
            Action::LogError { id, error } => {
                self.dirty |= self.log.on_error(id, error);
                vec![]
            }
            Action::Op { id, kind, event } => self.on_op(id, kind, event),
            Action::DriverGone(reason) => {
                if !self.fleet.on_driver_gone(reason) {
                    return vec![];
                }
                self.detail.clear();
                self.dirty = true;
                vec![Effect::Reconnect]
            }
            Action::DriverBack => vec![Effect::Reenumerate],
            Action::Fleet(cards) => {
                self.fleet.replace(cards, self.screen());
                self.dirty = true;
                let mut effects = vec![Effect::RefreshInfo(
                    self.fleet.cards().iter().map(|c| c.id).collect(),
                )];
                effects.extend(self.selection_changed());
                effects
            }
            Action::Config(loaded) => self.on_config(*loaded),
            Action::Mpssd(u) => self.on_mpssd(u),
            Action::Quit => self.quit(),
            Action::ConsoleMail { .. } => vec![],
        }
    }

    /// The configuration file was read again. A good one is in force from
    /// now on (keys, theme, layout, mouse, intervals); a bad one is shown
    /// and the configuration before it stays.
    fn on_config(&mut self, loaded: Result<(Config, Theme), String>) -> Vec<Effect> {
        self.dirty = true;
        let (config, theme) = match loaded {
            Ok(c) => c,
            Err(e) => {
                self.config_error = Some(one_line(&e));
                // The footer shows it now, not after the next key.
                self.status = None;
                return vec![];
            }
        };
        self.config_error = None;
        self.status = Some("configuration reloaded".into());
        self.theme = theme;
        let old = std::mem::replace(&mut self.config, config);
        if old == self.config {
            return vec![];
        }
        let mut effects = Vec::new();
        if self.config.mouse != old.mouse && self.config.mouse != self.mouse {
            self.mouse = self.config.mouse;
            effects.push(Effect::SetMouse(self.mouse));
        }
        self.consoles.set_scrollback(self.config.console_scrollback);
        let layout = (self.config.layout != old.layout).then_some(self.config.layout);
        self.fleet
            .reconfigure(layout, self.config.compact_threshold, self.screen());
        effects.push(Effect::Reconfigure(Box::new(self.config.clone())));
        effects
    }

    /// What mpssd said: its status (every supervised card's), that it is
    /// gone, or an event. A crash is shown among the card's log lines, and
    /// in the footer, with its bundle; devices added or removed make the
    /// selected card's debugfs worth another look.
    fn on_mpssd(&mut self, update: MpssdUpdate) -> Vec<Effect> {
        match update {
            MpssdUpdate::Status(s) => {
                let now = Mpssd::Running {
                    version: s.version.clone(),
                    pid: s.pid,
                };
                let changed = self.mpssd != now;
                self.mpssd = now;
                self.dirty |= self.fleet.on_supervision(Some(&s.cards)) || changed;
                vec![]
            }
            MpssdUpdate::Gone(why) => {
                let changed = self.mpssd != why;
                self.mpssd = why;
                self.dirty |= self.fleet.on_supervision(None) || changed;
                vec![]
            }
            MpssdUpdate::Event(e) => {
                let Some(id) = e.card else { return vec![] };
                match &e.kind {
                    libmic::mpssd::EventKind::Crash { bundle, .. } => {
                        let name = format!("mic{id}");
                        let whither = bundle.as_deref().map_or_else(
                            || "no forensics bundle written".to_owned(),
                            |b| format!("forensics: {b}"),
                        );
                        let time = mpssd_proto::timefmt::rfc3339_ms(e.ts_ms);
                        self.dirty |= self.log.note(
                            id,
                            format!("── {name} crashed at {time}; {whither} ──"),
                            self.config.scrollback,
                        );
                        if !self.consoles.typing() {
                            self.status = Some(format!("{name} crashed; {whither}"));
                            self.dirty = true;
                        }
                        vec![]
                    }
                    libmic::mpssd::EventKind::DevicesAdded { .. }
                    | libmic::mpssd::EventKind::DevicesRemoved { .. }
                        if Some(id) == self.selected_id() =>
                    {
                        vec![Effect::LoadDetail(id)]
                    }
                    _ => vec![],
                }
            }
        }
    }

    fn quit(&mut self) -> Vec<Effect> {
        self.quit = true;
        vec![Effect::Quit]
    }

    fn on_tick(&mut self, t: Instant) -> Vec<Effect> {
        let mut effects = Vec::new();
        if self
            .last_stats
            .is_none_or(|s| t.saturating_duration_since(s) >= self.config.stats_interval)
        {
            self.last_stats = Some(t);
            effects.push(Effect::RefreshHost);
        }
        let (booting, changed) = self.fleet.tick(t);
        if !booting.is_empty() {
            effects.push(Effect::ReadPostCodes(booting));
        }
        self.dirty |= changed;
        effects
    }

    fn on_state(&mut self, id: u32, state: Result<MicState, String>, at: Instant) -> Vec<Effect> {
        if !self.fleet.on_state(id, state, at, self.screen()) {
            return vec![];
        }
        self.dirty = true;
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
        self.dirty |= self.fleet.on_info(id, info, post, at, self.screen());
        vec![]
    }

    fn on_op(&mut self, id: u32, kind: OpKind, event: OpEvent) -> Vec<Effect> {
        let Some((name, finished)) = self.fleet.on_op(id, kind, &event) else {
            return vec![];
        };
        match event {
            OpEvent::Progress(_) => {}
            OpEvent::Done(m) => self.status = Some(format!("{name}: {}: {m}", kind.verb())),
            // Not over a console being typed into: shown when typing stops.
            OpEvent::Failed(m) => self.dialogs.error(
                format!("{name}: {} failed: {m}", kind.verb()),
                !self.consoles.typing(),
            ),
        }
        self.dirty = true;
        let mut effects = vec![Effect::RefreshInfo(vec![id])];
        if finished && Some(id) == self.selected_id() {
            effects.push(Effect::LoadDetail(id));
        }
        effects
    }

    /// The update step: carries out what a component asked.
    fn apply(&mut self, msg: Msg) -> Vec<Effect> {
        match msg {
            Msg::None => {}
            Msg::Unbound => self.dirty = false,
            Msg::Quit => return self.quit(),
            Msg::Status(s) => self.status = Some(s),
            Msg::Selected => return self.selection_changed(),
            Msg::Mouse(on) => return vec![Effect::SetMouse(on)],
            Msg::Console(ops) => return ops.into_iter().map(Effect::Console).collect(),
            Msg::Run { kind, ids } => return self.start_op(kind, ids),
            Msg::Search(q) => {
                let msg = self.log.apply_search(q, self.log_page());
                return self.apply(msg);
            }
        }
        vec![]
    }

    fn selection_changed(&mut self) -> Vec<Effect> {
        let id = self.selected_id();
        self.detail.clear();
        self.log.follow_card(id);
        match id {
            Some(id) => vec![Effect::FollowLog(Some(id)), Effect::LoadDetail(id)],
            None => vec![Effect::FollowLog(None)],
        }
    }

    fn start_op(&mut self, kind: OpKind, ids: Vec<u32>) -> Vec<Effect> {
        self.fleet.start_op(kind, &ids);
        self.status = Some(format!("{}: {} card(s)", kind.verb(), ids.len()));
        vec![Effect::Run { kind, ids }]
    }

    /// Starts operations without confirmation (the demo boots its cards).
    pub fn run_now(&mut self, kind: OpKind, ids: Vec<u32>) -> Vec<Effect> {
        self.dirty = true;
        self.start_op(kind, ids)
    }

    /// Shows `text` in the footer (until the next key).
    pub fn say(&mut self, text: String) {
        self.status = Some(text);
        self.dirty = true;
    }

    /// What the header says of the root (the demo: what it brought up).
    pub fn set_root_label(&mut self, label: String) {
        self.header.root = label;
        self.dirty = true;
    }

    // ---- keys --------------------------------------------------------------

    fn on_key(&mut self, key: KeyEvent) -> Vec<Effect> {
        if key.kind == KeyEventKind::Release {
            return vec![];
        }
        if self.consoles.typing() {
            // A key typed into a console changes nothing on screen until
            // the card echoes it: a frame now would only hold the echo's
            // frame back (frames are FRAME_INTERVAL apart).
            self.dirty = self.status.take().is_some();
            return self.type_key(&key);
        }
        self.dirty = true;
        self.status = None;
        if self.dialogs.is_open() {
            let msg = self.dialogs.key(&key);
            return self.apply(msg);
        }
        if key.code == KeyCode::Esc {
            if self.zoom != Zoom::None {
                self.zoom = Zoom::None;
                self.fleet.ensure_visible(self.screen());
            } else if self.log.search.is_some() {
                self.log.search = None;
            } else if self.fleet.any_marked() {
                self.fleet.unmark_all();
            }
            return vec![];
        }
        let msg = match self.config.keys.command(&key) {
            Some(cmd) => self.route(cmd),
            None => Msg::Unbound,
        };
        self.apply(msg)
    }

    /// A key while typing into a console: every key is the card's but the
    /// one that stops typing.
    fn type_key(&mut self, key: &KeyEvent) -> Vec<Effect> {
        let msg = if self.config.keys.command(key) == Some(Command::ConsoleLeave) {
            let ops = self.consoles.leave();
            self.dialogs.show_pending();
            self.dirty = true;
            Msg::Console(ops)
        } else {
            // Typing returns a scrolled-back console to the live screen.
            self.dirty |= self.consoles.shown().is_some_and(|c| c.scrolled() > 0);
            match self.consoles.key(key) {
                Ok(ops) => Msg::Console(ops),
                Err(why) => {
                    self.dirty = true;
                    Msg::Status(why)
                }
            }
        };
        self.apply(msg)
    }

    fn on_paste(&mut self, text: &str) -> Vec<Effect> {
        self.dirty = true;
        let msg = if self.consoles.typing() {
            match self.consoles.paste(text) {
                Ok(ops) => Msg::Console(ops),
                Err(why) => Msg::Status(why),
            }
        } else {
            self.dialogs.paste(text);
            Msg::None
        };
        self.apply(msg)
    }

    /// The console commands.
    fn console_command(&mut self, cmd: Command) -> Msg {
        let visible = self.consoles.visible();
        let ops = match cmd {
            Command::Console => {
                let Some((id, name)) = self.selected_card().map(|c| (c.id, c.name.clone())) else {
                    return Msg::Status("no card selected".into());
                };
                let showing = visible && self.consoles.shown().is_some_and(|c| c.card == id);
                if showing && self.focus == Focus::Console {
                    // Back to the log; the console stays attached.
                    self.focus = Focus::Log;
                    if self.zoom == Zoom::Console {
                        self.zoom = Zoom::Log;
                    }
                    self.consoles.hide()
                } else {
                    self.focus = Focus::Console;
                    if self.zoom == Zoom::Log {
                        self.zoom = Zoom::Console;
                    }
                    // The pane's size before it attaches: its terminal
                    // starts the size it is drawn.
                    let screen = Screen {
                        console: true,
                        ..self.screen()
                    };
                    let mut ops = Vec::new();
                    if let Some((cols, rows)) = self.fleet.areas(screen).console_inner() {
                        ops = self.consoles.resize(TermSize { cols, rows });
                    }
                    ops.extend(self.consoles.show(id, &name));
                    ops
                }
            }
            _ if !visible => {
                return Msg::Status("no console shown: press c to attach the selected card's".into());
            }
            Command::ConsoleWrite => {
                self.focus = Focus::Console;
                match self.consoles.take_write() {
                    Ok(ops) => ops,
                    Err(why) => return Msg::Status(why),
                }
            }
            Command::ConsolePrev | Command::ConsoleNext => self.consoles.cycle(cmd == Command::ConsoleNext),
            Command::ConsoleClose => {
                let ops = self.consoles.close();
                if !self.consoles.visible() {
                    if self.focus == Focus::Console {
                        self.focus = Focus::Log;
                    }
                    if self.zoom == Zoom::Console {
                        self.zoom = Zoom::Log;
                    }
                }
                ops
            }
            _ => vec![],
        };
        Msg::Console(ops)
    }

    /// Scrolls the shown console's scrollback.
    fn console_scroll(&mut self, cmd: Command) -> Msg {
        let page = self.areas().console_inner().map_or(10, |(_, rows)| rows as isize);
        match cmd {
            Command::Up => self.consoles.scroll(1),
            Command::Down => self.consoles.scroll(-1),
            Command::PageUp => self.consoles.scroll(page),
            Command::PageDown => self.consoles.scroll(-page),
            Command::Top => self.consoles.scroll_to(true),
            _ => self.consoles.scroll_to(false),
        }
        Msg::None
    }

    /// Sends a command to the component it is for.
    fn route(&mut self, cmd: Command) -> Msg {
        let log_focus = self.focus == Focus::Log || self.zoom == Zoom::Log;
        let console_focus =
            self.consoles.visible() && (self.focus == Focus::Console || self.zoom == Zoom::Console);
        let screen = self.screen();
        match cmd {
            c if c.is_move() && console_focus => self.console_scroll(cmd),
            Command::Console
            | Command::ConsoleWrite
            | Command::ConsoleLeave
            | Command::ConsolePrev
            | Command::ConsoleNext
            | Command::ConsoleClose => self.console_command(cmd),
            Command::Quit => Msg::Quit,
            Command::Help => {
                self.dialogs.help();
                Msg::None
            }
            c if c.is_move() && log_focus => self.log.command(cmd, self.log_page()),
            Command::Follow | Command::NextMatch | Command::PrevMatch | Command::Level => {
                self.log.command(cmd, self.log_page())
            }
            Command::Search => {
                self.dialogs.search(self.log.search.as_deref());
                Msg::None
            }
            Command::Focus => {
                let lower = if self.consoles.visible() {
                    Focus::Console
                } else {
                    Focus::Log
                };
                self.focus = match self.focus {
                    Focus::Cards => lower,
                    Focus::Log | Focus::Console => Focus::Cards,
                };
                if self.zoom != Zoom::None {
                    self.zoom = match self.focus {
                        Focus::Cards => Zoom::Detail,
                        Focus::Log => Zoom::Log,
                        Focus::Console => Zoom::Console,
                    };
                }
                Msg::None
            }
            Command::Zoom => {
                self.zoom = match (self.zoom, self.focus) {
                    (Zoom::None, Focus::Cards) => Zoom::Detail,
                    (Zoom::None, Focus::Log) => Zoom::Log,
                    (Zoom::None, Focus::Console) => Zoom::Console,
                    _ => Zoom::None,
                };
                self.fleet.ensure_visible(self.screen());
                Msg::None
            }
            Command::Boot | Command::Shutdown | Command::Reset | Command::Reboot => {
                let kind = match cmd {
                    Command::Boot => OpKind::Boot,
                    Command::Shutdown => OpKind::Shutdown,
                    Command::Reset => OpKind::Reset,
                    _ => OpKind::Reboot,
                };
                match self.fleet.confirmable() {
                    Ok(ids) => {
                        self.dialogs.confirm(kind, ids);
                        Msg::None
                    }
                    Err(why) => Msg::Status(why),
                }
            }
            Command::Mouse => {
                self.mouse = !self.mouse;
                self.status = Some(format!("mouse {}", if self.mouse { "on" } else { "off" }));
                Msg::Mouse(self.mouse)
            }
            _ => self.fleet.command(cmd, screen),
        }
    }

    // ---- mouse -------------------------------------------------------------

    fn on_mouse(&mut self, m: MouseEvent) -> Vec<Effect> {
        if !self.mouse || self.dialogs.is_open() {
            return vec![];
        }
        let screen = self.screen();
        let areas = self.areas();
        let at = Position::new(m.column, m.row);
        let in_cards = areas.cards.filter(|r| r.contains(at));
        let in_log = areas.log.is_some_and(|r| r.contains(at));
        let in_console = areas.console.is_some_and(|r| r.contains(at));
        let msg = match m.kind {
            MouseEventKind::Down(MouseButton::Left) => {
                if let Some(r) = in_cards {
                    self.focus = Focus::Cards;
                    self.dirty = true;
                    match self.fleet.card_at(r, at, screen) {
                        Some(pos) => self.fleet.select_pos(pos, screen),
                        None => Msg::None,
                    }
                } else {
                    if in_log {
                        self.focus = Focus::Log;
                        self.dirty = true;
                    } else if in_console {
                        self.focus = Focus::Console;
                        self.dirty = true;
                    }
                    Msg::None
                }
            }
            MouseEventKind::ScrollUp | MouseEventKind::ScrollDown => {
                let up = m.kind == MouseEventKind::ScrollUp;
                self.dirty = true;
                if in_log {
                    self.log.scroll(if up { -3 } else { 3 }, self.log_page());
                    Msg::None
                } else if in_console {
                    self.consoles.scroll(if up { 3 } else { -3 });
                    Msg::None
                } else if in_cards.is_some() {
                    self.fleet.move_selection(if up { -1 } else { 1 }, screen)
                } else {
                    Msg::None
                }
            }
            _ => Msg::None,
        };
        let mut effects = self.apply(msg);
        // A click elsewhere stops typing into the console.
        if self.focus != Focus::Console && self.consoles.typing() {
            effects.extend(self.consoles.leave().into_iter().map(Effect::Console));
            self.dialogs.show_pending();
        }
        effects
    }
}

/// A multi-line error (TOML's show the line and a caret) as one line for
/// the footer: the lines that say something, joined.
fn one_line(e: &str) -> String {
    let said: Vec<&str> = e
        .lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty()
                && !l.starts_with('|')
                && l.split_once(" |").is_none_or(|(n, _)| n.parse::<u64>().is_err())
        })
        .collect();
    said.join(": ")
}
