//! The console pane's state: the cards' consoles mictop is attached to,
//! each with its own terminal emulator (`vt100`: colours, cursor movement,
//! the alternate screen of full-screen programs, scrollback), which one
//! the pane shows, and whether keys are being typed into it.
//!
//! Consoles are attached read-only; typing needs the write side, taken
//! explicitly ([`Consoles::take_write`]) and given back when typing stops
//! ([`Consoles::leave`]). What a console does is asked of the runtime as
//! [`ConsoleOp`]s.

use std::num::NonZeroU16;

use ratatui::crossterm::event::KeyEvent;

use crate::console::{Access, ConsoleEvent, TermSize, keys};

/// What the pane asks of the console source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsoleOp {
    Attach {
        card: u32,
        access: Access,
        size: TermSize,
    },
    Send {
        card: u32,
        bytes: Vec<u8>,
    },
    Access {
        card: u32,
        access: Access,
    },
    Resize {
        card: u32,
        size: TermSize,
    },
    Detach {
        card: u32,
    },
}

pub use crate::console::term::Term;

fn nz(n: u16) -> NonZeroU16 {
    NonZeroU16::new(n).unwrap_or(NonZeroU16::MIN)
}

/// One attached console.
#[derive(Debug)]
pub struct ConsoleView {
    pub card: u32,
    pub name: String,
    term: Term,
    /// The access held.
    pub access: Access,
    /// The write side was asked for and not yet given.
    pub asked_write: bool,
    /// Who else holds the write side, if someone does.
    pub writer: Option<String>,
    /// Why the console cannot be reached yet (mpssd is not running), while
    /// the source keeps trying.
    pub waiting: Option<String>,
    /// Why the console ended, if it did.
    pub ended: Option<String>,
    /// Bytes received.
    pub received: u64,
}

impl ConsoleView {
    #[must_use]
    pub fn term(&self) -> &Term {
        &self.term
    }

    /// Lines scrolled back (0: the live screen).
    #[must_use]
    pub fn scrolled(&self) -> usize {
        self.term.scrolled()
    }

    /// A line of mictop's own in the console's scrollback (reverse video,
    /// on a line of its own), as tmux and conman mark their notes.
    fn note(&mut self, text: &str) {
        let safe = libmic::attrs::escape_untrusted(text);
        self.term
            .process(format!("\r\n\x1b[0;7m── {safe} ──\x1b[0m\r\n").as_bytes());
    }
}

/// Every attached console and the pane.
#[derive(Debug)]
pub struct Consoles {
    open: Vec<ConsoleView>,
    /// Index into `open` of the one the pane shows.
    shown: usize,
    /// The pane is on screen (in place of the log).
    visible: bool,
    /// Keys go to the shown console.
    typing: bool,
    /// The pane's inside, which every console's terminal takes.
    size: TermSize,
    /// Lines of scrollback each console keeps.
    scrollback: usize,
}

impl Consoles {
    #[must_use]
    pub fn new(scrollback: usize) -> Self {
        Self {
            open: Vec::new(),
            shown: 0,
            visible: false,
            typing: false,
            size: TermSize { cols: 80, rows: 24 },
            scrollback,
        }
    }

    // ---- queries -----------------------------------------------------------

    #[must_use]
    pub fn visible(&self) -> bool {
        self.visible
    }

    #[must_use]
    pub fn typing(&self) -> bool {
        self.typing && self.visible
    }

    /// The console the pane shows.
    #[must_use]
    pub fn shown(&self) -> Option<&ConsoleView> {
        self.open.get(self.shown)
    }

    /// Every attached console, in the order they were opened.
    #[must_use]
    pub fn all(&self) -> &[ConsoleView] {
        &self.open
    }

    fn index(&self, card: u32) -> Option<usize> {
        self.open.iter().position(|c| c.card == card)
    }

    // ---- commands ------------------------------------------------------------

    /// Shows card `card`'s console, attaching it (read-only) first if it
    /// is not.
    pub fn show(&mut self, card: u32, name: &str) -> Vec<ConsoleOp> {
        self.visible = true;
        self.typing = false;
        if let Some(i) = self.index(card) {
            self.shown = i;
            if self.open[i].ended.is_none() {
                return vec![];
            }
            // Ended: attach afresh, the old screen kept above.
            self.open[i].ended = None;
            self.open[i].waiting = None;
            self.open[i].access = Access::ReadOnly;
            self.open[i].note("attaching again");
        } else {
            self.open.push(ConsoleView {
                card,
                name: name.to_owned(),
                term: Term::new(nz(self.size.rows), nz(self.size.cols), self.scrollback),
                access: Access::ReadOnly,
                asked_write: false,
                writer: None,
                waiting: None,
                ended: None,
                received: 0,
            });
            self.shown = self.open.len() - 1;
        }
        vec![ConsoleOp::Attach {
            card,
            access: Access::ReadOnly,
            size: self.size,
        }]
    }

    /// Takes the log's place back; the consoles stay attached. Typing
    /// stops (and the write side is given back).
    pub fn hide(&mut self) -> Vec<ConsoleOp> {
        let ops = self.leave();
        self.visible = false;
        ops
    }

    /// Detaches the shown console.
    pub fn close(&mut self) -> Vec<ConsoleOp> {
        if self.shown >= self.open.len() {
            return vec![];
        }
        let view = self.open.remove(self.shown);
        self.typing = false;
        if self.open.is_empty() {
            self.visible = false;
            self.shown = 0;
        } else {
            self.shown = self.shown.min(self.open.len() - 1);
        }
        vec![ConsoleOp::Detach { card: view.card }]
    }

    /// Shows the next (or previous) attached console.
    pub fn cycle(&mut self, forward: bool) -> Vec<ConsoleOp> {
        let ops = self.leave();
        let n = self.open.len();
        if n > 0 {
            self.shown = if forward {
                (self.shown + 1) % n
            } else {
                (self.shown + n - 1) % n
            };
        }
        ops
    }

    /// Asks for the write side of the shown console and starts typing into
    /// it. `Err`: why not.
    pub fn take_write(&mut self) -> Result<Vec<ConsoleOp>, String> {
        let Some(view) = self.open.get_mut(self.shown).filter(|_| self.visible) else {
            return Err("no console shown: press c to attach the selected card's".into());
        };
        if let Some(why) = &view.ended {
            return Err(format!("{}'s console ended: {why}", view.name));
        }
        self.typing = true;
        if view.access == Access::ReadWrite {
            return Ok(vec![]);
        }
        view.asked_write = true;
        Ok(vec![ConsoleOp::Access {
            card: view.card,
            access: Access::ReadWrite,
        }])
    }

    /// Stops typing, giving the write side back.
    pub fn leave(&mut self) -> Vec<ConsoleOp> {
        let was = std::mem::replace(&mut self.typing, false);
        match self.open.get_mut(self.shown) {
            Some(v) if was && (v.access == Access::ReadWrite || v.asked_write) && v.ended.is_none() => {
                v.asked_write = false;
                vec![ConsoleOp::Access {
                    card: v.card,
                    access: Access::ReadOnly,
                }]
            }
            _ => vec![],
        }
    }

    /// A key typed into the shown console. `Err`: why it was not sent.
    pub fn key(&mut self, key: &KeyEvent) -> Result<Vec<ConsoleOp>, String> {
        let Some(view) = self.open.get(self.shown) else {
            return Ok(vec![]);
        };
        let app_cursor = view.term.live().application_cursor();
        match keys::encode(key, app_cursor) {
            Some(bytes) => self.send(bytes),
            None => Ok(vec![]),
        }
    }

    /// Pasted text typed into the shown console (bracketed if the program
    /// asked for it).
    pub fn paste(&mut self, text: &str) -> Result<Vec<ConsoleOp>, String> {
        let Some(view) = self.open.get(self.shown) else {
            return Ok(vec![]);
        };
        let bytes = if view.term.live().bracketed_paste() {
            format!("\x1b[200~{text}\x1b[201~").into_bytes()
        } else {
            text.replace("\r\n", "\r").replace('\n', "\r").into_bytes()
        };
        self.send(bytes)
    }

    fn send(&mut self, bytes: Vec<u8>) -> Result<Vec<ConsoleOp>, String> {
        let Some(view) = self.open.get_mut(self.shown) else {
            return Ok(vec![]);
        };
        if let Some(why) = &view.ended {
            return Err(format!("{}'s console ended: {why}", view.name));
        }
        if view.access != Access::ReadWrite {
            return Err(match &view.writer {
                Some(w) => format!(
                    "{}'s console is read-only here: {w} holds the write side",
                    view.name
                ),
                None => format!("{}'s console: waiting for the write side", view.name),
            });
        }
        // Typing returns to the live screen, as terminals do.
        view.term.scroll_to(0);
        Ok(vec![ConsoleOp::Send {
            card: view.card,
            bytes,
        }])
    }

    /// Scrolls the shown console's scrollback by `delta` lines (positive:
    /// back in time).
    pub fn scroll(&mut self, delta: isize) {
        if let Some(v) = self.open.get_mut(self.shown) {
            let to = v.term.scrolled().saturating_add_signed(delta);
            v.term.scroll_to(to);
        }
    }

    /// To the oldest line kept (`true`) or the live screen.
    pub fn scroll_to(&mut self, oldest: bool) {
        if let Some(v) = self.open.get_mut(self.shown) {
            v.term.scroll_to(if oldest { usize::MAX } else { 0 });
        }
    }

    // ---- what the consoles report -------------------------------------------

    /// An event from card `card`'s console. `false`: no such console (it
    /// was detached), nothing changed.
    pub fn on_event(&mut self, card: u32, event: ConsoleEvent) -> bool {
        let Some(i) = self.index(card) else {
            return false;
        };
        let shown = i == self.shown;
        let v = &mut self.open[i];
        if !matches!(event, ConsoleEvent::Waiting(_)) {
            // Anything else comes from an attached console.
            v.waiting = None;
        }
        match event {
            ConsoleEvent::Output(bytes) => {
                v.received += bytes.len() as u64;
                v.term.process(&bytes);
            }
            ConsoleEvent::Access { access, writer } => {
                v.asked_write = false;
                let lost = v.access == Access::ReadWrite && access == Access::ReadOnly;
                v.access = access;
                v.writer = writer;
                if lost && shown {
                    // Someone else took it (or it was given back): no more typing.
                    self.typing = false;
                }
            }
            ConsoleEvent::Notice(text) => v.note(&text),
            ConsoleEvent::Waiting(why) => {
                if v.waiting.is_none() {
                    v.note(&why);
                }
                v.waiting = Some(why);
            }
            ConsoleEvent::Ended(why) => {
                v.note(&format!("console ended: {why}"));
                v.ended = Some(why);
                v.access = Access::ReadOnly;
                v.asked_write = false;
                if shown {
                    self.typing = false;
                }
            }
        }
        true
    }

    /// The pane's inside is now `size`: every console's terminal takes it.
    pub fn resize(&mut self, size: TermSize) -> Vec<ConsoleOp> {
        let size = TermSize {
            cols: size.cols.max(1),
            rows: size.rows.max(1),
        };
        if size == self.size {
            return vec![];
        }
        self.size = size;
        let mut ops = Vec::new();
        for v in &mut self.open {
            v.term.set_size(nz(size.rows), nz(size.cols));
            if v.ended.is_none() {
                ops.push(ConsoleOp::Resize { card: v.card, size });
            }
        }
        ops
    }

    /// A new scrollback depth, for consoles attached from now on.
    pub fn set_scrollback(&mut self, lines: usize) {
        self.scrollback = lines;
    }
}
