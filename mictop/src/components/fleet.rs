//! The fleet: every card as mictop knows it, the display order (sort),
//! the selection, the marks, and how the list scrolls. It takes the cards'
//! states, attributes and post codes as they arrive, and the navigation,
//! mark, sort and layout commands.

use std::hash::{Hash as _, Hasher as _};
use std::time::Instant;

use libmic::{CardInfo, MicState};
use ratatui::layout::{Position, Rect};

use crate::components::Msg;
use crate::config::{Command, LayoutMode};
use crate::layout::{self, Areas, LayoutInput, Screen};
use crate::model::{CardView, OpEvent, OpKind, OpStatus, fmt_age};

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

/// The card list.
#[derive(Debug)]
pub struct Fleet {
    cards: Vec<CardView>,
    /// Display order: indices into `cards`.
    order: Vec<usize>,
    /// Position of the selection in `order`.
    selected: usize,
    sort: SortKey,
    sort_reverse: bool,
    layout: LayoutMode,
    /// In `auto` layout, more cards than this get the compact grid.
    compact_threshold: usize,
    /// First visible row of the card table (or grid).
    offset: usize,
    /// The driver is gone, and why: what the cards showed is no longer
    /// known; mictop is reconnecting.
    driver_gone: Option<String>,
    /// The clock the cards' ages are measured against.
    now: Instant,
    started: Instant,
    /// What the ages looked like when last drawn.
    clock_key: u64,
}

impl Fleet {
    /// `cards` in id order; `now` is the start time.
    #[must_use]
    pub fn new(cards: Vec<CardView>, layout: LayoutMode, compact_threshold: usize, now: Instant) -> Self {
        let mut fleet = Self {
            order: (0..cards.len()).collect(),
            cards,
            selected: 0,
            sort: SortKey::Name,
            sort_reverse: false,
            layout,
            compact_threshold,
            offset: 0,
            driver_gone: None,
            now,
            started: now,
            clock_key: 0,
        };
        fleet.clock_key = fleet.compute_clock_key();
        fleet
    }

    // ---- queries -----------------------------------------------------------

    #[must_use]
    pub fn cards(&self) -> &[CardView] {
        &self.cards
    }

    /// The cards in display order, with their position.
    pub fn ordered(&self) -> impl Iterator<Item = (usize, &CardView)> {
        self.order.iter().map(|&i| &self.cards[i]).enumerate()
    }

    /// Position of the selection in display order.
    #[must_use]
    pub fn selected_pos(&self) -> usize {
        self.selected
    }

    #[must_use]
    pub fn selected_card(&self) -> Option<&CardView> {
        self.order.get(self.selected).map(|&i| &self.cards[i])
    }

    #[must_use]
    pub fn selected_id(&self) -> Option<u32> {
        self.selected_card().map(|c| c.id)
    }

    #[must_use]
    pub fn sort(&self) -> (SortKey, bool) {
        (self.sort, self.sort_reverse)
    }

    #[must_use]
    pub fn layout_mode(&self) -> LayoutMode {
        self.layout
    }

    /// First visible row of the table (or grid).
    #[must_use]
    pub fn offset(&self) -> usize {
        self.offset
    }

    #[must_use]
    pub fn driver_gone(&self) -> Option<&str> {
        self.driver_gone.as_deref()
    }

    /// The clock: now, and when mictop started.
    #[must_use]
    pub fn clock(&self) -> (Instant, Instant) {
        (self.now, self.started)
    }

    fn index_of(&self, id: u32) -> Option<usize> {
        // Cards are in id order, usually ids 0..n.
        match self.cards.get(id as usize) {
            Some(c) if c.id == id => Some(id as usize),
            _ => self.cards.iter().position(|c| c.id == id),
        }
    }

    #[must_use]
    pub fn card(&self, id: u32) -> Option<&CardView> {
        self.index_of(id).map(|i| &self.cards[i])
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

    #[must_use]
    pub fn any_marked(&self) -> bool {
        self.cards.iter().any(|c| c.marked)
    }

    /// Whether the card list is drawn as the compact grid in a terminal
    /// `height` rows high.
    #[must_use]
    pub fn compact(&self, height: u16) -> bool {
        layout::compact(self.layout, self.cards.len(), self.compact_threshold, height)
    }

    /// The layout of `screen` with this fleet.
    #[must_use]
    pub fn areas(&self, screen: Screen) -> Areas {
        layout::areas(&LayoutInput {
            screen,
            cards: self.cards.len(),
            compact: self.compact(screen.size.height),
        })
    }

    fn viewport(&self, screen: Screen) -> (usize, usize) {
        self.areas(screen).card_viewport(self.compact(screen.size.height))
    }

    fn compute_clock_key(&self) -> u64 {
        let mut h = std::hash::DefaultHasher::new();
        for c in &self.cards {
            fmt_age(c.age(self.now, self.started).0).hash(&mut h);
        }
        h.finish()
    }

    // ---- commands ------------------------------------------------------------

    /// Navigation, marks, sort and layout. Anything else is not the
    /// fleet's ([`Msg::Unbound`]).
    pub fn command(&mut self, cmd: Command, screen: Screen) -> Msg {
        let (rows, cols) = self.viewport(screen);
        match cmd {
            Command::Up => self.move_selection(-(cols as isize), screen),
            Command::Down => self.move_selection(cols as isize, screen),
            Command::Left => self.move_selection(-1, screen),
            Command::Right => self.move_selection(1, screen),
            Command::PageUp => self.move_selection(-((rows.max(1) * cols) as isize), screen),
            Command::PageDown => self.move_selection((rows.max(1) * cols) as isize, screen),
            Command::Top => self.select_pos(0, screen),
            Command::Bottom => self.select_pos(self.order.len().saturating_sub(1), screen),
            Command::Mark => {
                if let Some(&i) = self.order.get(self.selected) {
                    self.cards[i].marked = !self.cards[i].marked;
                }
                if !self.compact(screen.size.height) || cols == 1 {
                    return self.move_selection(1, screen);
                }
                Msg::None
            }
            Command::MarkAll => {
                self.cards.iter_mut().for_each(|c| c.marked = true);
                Msg::None
            }
            Command::UnmarkAll => {
                self.unmark_all();
                Msg::None
            }
            Command::Sort => {
                self.sort = self.sort.next();
                self.resort(screen);
                Msg::Status(format!("sorted by {}", self.sort.as_str()))
            }
            Command::SortReverse => {
                self.sort_reverse = !self.sort_reverse;
                self.resort(screen);
                Msg::None
            }
            Command::Layout => {
                self.layout = self.layout.next();
                self.offset = 0;
                self.ensure_visible(screen);
                Msg::Status(format!("layout: {}", self.layout.as_str()))
            }
            _ => Msg::Unbound,
        }
    }

    pub fn unmark_all(&mut self) {
        self.cards.iter_mut().for_each(|c| c.marked = false);
    }

    /// The cards an action would apply to, or why there are none.
    pub fn confirmable(&self) -> Result<Vec<u32>, String> {
        let ids = self.targets();
        if ids.is_empty() {
            return Err("no card selected".into());
        }
        if let Some(busy) = ids
            .iter()
            .filter_map(|&id| self.card(id))
            .find(|c| c.op.as_ref().is_some_and(OpStatus::running))
        {
            return Err(format!("{} is busy: wait for its action to finish", busy.name));
        }
        Ok(ids)
    }

    /// Marks the operation started on these cards and clears the marks.
    pub fn start_op(&mut self, kind: OpKind, ids: &[u32]) {
        for &id in ids {
            if let Some(i) = self.index_of(id) {
                self.cards[i].op = Some(OpStatus {
                    kind,
                    phase: "starting".into(),
                    outcome: None,
                });
            }
        }
        self.unmark_all();
    }

    // ---- selection -------------------------------------------------------------

    /// Moves the selection by `delta` cards in display order.
    pub fn move_selection(&mut self, delta: isize, screen: Screen) -> Msg {
        if self.order.is_empty() {
            return Msg::None;
        }
        let pos = self
            .selected
            .saturating_add_signed(delta)
            .min(self.order.len() - 1);
        self.select_pos(pos, screen)
    }

    /// Selects the card at `pos` in display order.
    pub fn select_pos(&mut self, pos: usize, screen: Screen) -> Msg {
        let before = self.selected_id();
        self.selected = pos.min(self.order.len().saturating_sub(1));
        self.ensure_visible(screen);
        if before == self.selected_id() {
            Msg::None
        } else {
            Msg::Selected
        }
    }

    /// Scrolls the card list so the selection is visible.
    pub fn ensure_visible(&mut self, screen: Screen) {
        let (rows, cols) = self.viewport(screen);
        let rows = rows.max(1);
        let row = self.selected / cols.max(1);
        if row < self.offset {
            self.offset = row;
        } else if row >= self.offset + rows {
            self.offset = row + 1 - rows;
        }
        let total_rows = self.order.len().div_ceil(cols.max(1));
        self.offset = self.offset.min(total_rows.saturating_sub(rows));
    }

    /// Re-sorts, keeping the selected card selected.
    fn resort(&mut self, screen: Screen) {
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
        self.ensure_visible(screen);
    }

    /// The position in display order of the card drawn at `at` in the card
    /// area `area`.
    #[must_use]
    pub fn card_at(&self, area: Rect, at: Position, screen: Screen) -> Option<usize> {
        let inner_top = area.y + 1;
        if self.compact(screen.size.height) {
            let row = at.y.checked_sub(inner_top)? as usize;
            let col = (at.x.checked_sub(area.x + 1)? / layout::CELL_WIDTH) as usize;
            let cols = layout::grid_columns(area.width);
            if col >= cols {
                return None;
            }
            let pos = (row + self.offset) * cols + col;
            (pos < self.order.len()).then_some(pos)
        } else {
            let row = at.y.checked_sub(inner_top + 1)? as usize;
            let pos = row + self.offset;
            (pos < self.order.len()).then_some(pos)
        }
    }

    /// A new configuration: the layout mode if it changed there, and the
    /// compact threshold.
    pub fn reconfigure(&mut self, layout: Option<LayoutMode>, compact_threshold: usize, screen: Screen) {
        if let Some(l) = layout {
            self.layout = l;
            self.offset = 0;
        }
        self.compact_threshold = compact_threshold;
        self.ensure_visible(screen);
    }

    // ---- what the cards report ---------------------------------------------------

    /// The clock moved: returns the cards booting (their post codes are
    /// worth reading) and whether any age shown changed.
    pub fn tick(&mut self, now: Instant) -> (Vec<u32>, bool) {
        self.now = now;
        let booting = self.cards.iter().filter(|c| c.booting()).map(|c| c.id).collect();
        let key = self.compute_clock_key();
        let changed = key != self.clock_key;
        self.clock_key = key;
        (booting, changed)
    }

    /// A card's `state` as its watcher read it at `at`. `false`: no such card.
    pub fn on_state(
        &mut self,
        id: u32,
        state: Result<MicState, String>,
        at: Instant,
        screen: Screen,
    ) -> bool {
        let Some(i) = self.index_of(id) else { return false };
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
        self.resort(screen);
        true
    }

    /// Every attribute of a card, from a snapshot begun at `at`. `false`: no
    /// such card.
    pub fn on_info(
        &mut self,
        id: u32,
        info: Result<CardInfo, String>,
        post: Option<String>,
        at: Instant,
        screen: Screen,
    ) -> bool {
        let Some(i) = self.index_of(id) else { return false };
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
        self.resort(screen);
        true
    }

    /// A card's post code. `false`: nothing changed.
    pub fn on_post_code(&mut self, id: u32, post: Option<String>) -> bool {
        let Some(i) = self.index_of(id) else { return false };
        if self.cards[i].post == post {
            return false;
        }
        self.cards[i].post = post;
        true
    }

    /// What a worker running an operation on card `id` reported. Returns
    /// the card's name and whether the operation is over (`None`: no such
    /// card).
    pub fn on_op(&mut self, id: u32, kind: OpKind, event: &OpEvent) -> Option<(String, bool)> {
        let i = self.index_of(id)?;
        let name = self.cards[i].name.clone();
        let op = self.cards[i].op.get_or_insert(OpStatus {
            kind,
            phase: String::new(),
            outcome: None,
        });
        op.kind = kind;
        match event {
            OpEvent::Progress(p) => op.phase.clone_from(p),
            OpEvent::Done(m) => {
                op.phase.clone_from(m);
                op.outcome = Some(Ok(m.clone()));
            }
            OpEvent::Failed(m) => {
                op.phase = "failed".into();
                op.outcome = Some(Err(m.clone()));
            }
        }
        Some((name, !op.running()))
    }

    /// mpssd's view of the cards (`None`: mpssd is not there): each card
    /// takes its supervision, or none. `false`: nothing changed.
    pub fn on_supervision(&mut self, cards: Option<&[libmic::mpssd::CardStatus]>) -> bool {
        let mut changed = false;
        for c in &mut self.cards {
            let new = cards.and_then(|all| all.iter().find(|s| s.card == c.id)).cloned();
            if c.supervision != new {
                c.supervision = new;
                changed = true;
            }
        }
        changed
    }

    /// Whether mpssd supervises any card shown.
    #[must_use]
    pub fn supervised(&self) -> bool {
        self.cards.iter().any(|c| c.supervision.is_some())
    }

    /// The driver went away: nothing shown about the cards is known any
    /// more. They are kept (so the screen keeps its shape) but show as gone
    /// until the driver is back and they are enumerated again. `false`: it
    /// was already gone.
    pub fn on_driver_gone(&mut self, reason: String) -> bool {
        if self.driver_gone.is_some() {
            return false;
        }
        self.driver_gone = Some(reason);
        for c in &mut self.cards {
            c.state = None;
            c.since = None;
            c.post = None;
            c.info = None;
        }
        true
    }

    /// The cards as the driver shows them after it came back: they replace
    /// the old ones; marks and the selection stay with their cards.
    pub fn replace(&mut self, cards: Vec<CardView>, screen: Screen) {
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
        self.resort(screen);
        if let Some(p) = keep.and_then(|id| self.order.iter().position(|&i| self.cards[i].id == id)) {
            self.selected = p;
        }
        self.ensure_visible(screen);
    }
}
