//! The log pane's state: the selected card's kernel log as received
//! (a bounded scrollback), follow or paused at a line, the level filter and
//! the search; the scroll, follow, filter and search commands.

use std::collections::VecDeque;

use libmic::klog::{LogEntry, LogRecord};

use crate::components::Msg;
use crate::config::Command;

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
    #[must_use]
    pub fn new(card: Option<u32>, max_level: u8) -> Self {
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
    pub fn scroll(&mut self, delta: isize, page: usize) {
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

impl LogView {
    /// Starts afresh on another card (or none), keeping the level filter.
    pub fn follow_card(&mut self, card: Option<u32>) {
        *self = LogView::new(card, self.max_level);
    }

    /// Scrolling, follow, search and level commands; `page` is the pane's
    /// height. Anything else is not the log's ([`Msg::Unbound`]).
    pub fn command(&mut self, cmd: Command, page: usize) -> Msg {
        match cmd {
            Command::Up => self.scroll(-1, page),
            Command::Down => self.scroll(1, page),
            Command::PageUp => self.scroll(-(page as isize), page),
            Command::PageDown => self.scroll(page as isize, page),
            Command::Top => {
                let vis = self.visible();
                self.jump_to(0, &vis, page);
            }
            Command::Bottom => self.follow = true,
            Command::Follow => {
                self.follow = !self.follow;
                if !self.follow {
                    let vis = self.visible();
                    self.anchor = self.bottom(&vis).map_or(0, |p| self.lines[vis[p]].0);
                }
            }
            Command::NextMatch | Command::PrevMatch => {
                if self.search.is_none() {
                    return Msg::Status("no search: press / to search the log".into());
                } else if !self.find(cmd == Command::NextMatch, page, false) {
                    return Msg::Status("no more matches".into());
                }
            }
            Command::Level => {
                self.max_level = match self.max_level {
                    7 => 6,
                    6 => 5,
                    5 => 4,
                    4 => 3,
                    _ => 7,
                };
                return Msg::Status(match self.max_level {
                    7 => "log: all levels".to_owned(),
                    l => format!("log: {} and more severe", libmic::klog::level_name(l)),
                });
            }
            _ => return Msg::Unbound,
        }
        Msg::None
    }

    /// Searches for `q` (empty: no search), from the bottom line shown
    /// upwards: the most recent match.
    pub fn apply_search(&mut self, q: String, page: usize) -> Msg {
        if q.is_empty() {
            self.search = None;
            return Msg::None;
        }
        self.search = Some(q);
        if self.find(false, page, true) {
            Msg::None
        } else {
            Msg::Status("no match".into())
        }
    }

    /// What is new in card `id`'s log; `cap` lines are kept. `false`: the
    /// pane shows another card.
    /// A note of mictop's among card `id`'s log lines (an mpssd event),
    /// if that card's log is shown. `false`: it is not.
    pub fn note(&mut self, id: u32, text: String, cap: usize) -> bool {
        if self.card != Some(id) {
            return false;
        }
        self.push(LogLine::Marker(text), cap);
        true
    }

    pub fn on_log(&mut self, id: u32, entries: Vec<LogEntry>, cap: usize) -> bool {
        if self.card != Some(id) {
            return false;
        }
        for e in entries {
            match e {
                LogEntry::Record(r) => {
                    self.received += 1;
                    self.push(LogLine::Record(r), cap);
                }
                LogEntry::Lost(l) => self.push(LogLine::Marker(format!("── {} ──", l.describe())), cap),
                LogEntry::Reset => {
                    if self.received > 0 {
                        self.push(
                            LogLine::Marker("── the card restarted: its log begins again ──".into()),
                            cap,
                        );
                    }
                }
            }
        }
        // A paused view whose anchor scrolled out of the scrollback sticks
        // to the oldest line kept.
        self.error = None;
        true
    }

    /// Reading card `id`'s log failed. `false`: nothing changed.
    pub fn on_error(&mut self, id: u32, error: String) -> bool {
        if self.card == Some(id) && self.error.as_ref() != Some(&error) {
            self.error = Some(error);
            true
        } else {
            false
        }
    }
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
