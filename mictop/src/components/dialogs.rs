//! What is drawn over the screen — help, the confirmation before an
//! action, the errors actions reported, the search prompt — and the keys
//! while one is open.

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use crate::components::Msg;
use crate::model::OpKind;

/// What is drawn over the screen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Overlay {
    None,
    Help { scroll: u16 },
    Confirm { kind: OpKind, ids: Vec<u32> },
    Errors,
    Search { input: String },
}

/// The overlay and the errors not yet acknowledged.
#[derive(Debug)]
pub struct Dialogs {
    overlay: Overlay,
    errors: Vec<String>,
}

impl Default for Dialogs {
    fn default() -> Self {
        Self {
            overlay: Overlay::None,
            errors: Vec::new(),
        }
    }
}

/// ctrl-c, which quits from every dialog but the search prompt.
#[must_use]
pub fn is_ctrl_c(key: &KeyEvent) -> bool {
    key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL)
}

impl Dialogs {
    #[must_use]
    pub fn overlay(&self) -> &Overlay {
        &self.overlay
    }

    /// Whether a dialog is open (it takes every key).
    #[must_use]
    pub fn is_open(&self) -> bool {
        self.overlay != Overlay::None
    }

    #[must_use]
    pub fn errors(&self) -> &[String] {
        &self.errors
    }

    pub fn help(&mut self) {
        self.overlay = Overlay::Help { scroll: 0 };
    }

    /// The search prompt, starting from the current search.
    pub fn search(&mut self, current: Option<&str>) {
        self.overlay = Overlay::Search {
            input: current.unwrap_or_default().to_owned(),
        };
    }

    pub fn confirm(&mut self, kind: OpKind, ids: Vec<u32>) {
        self.overlay = Overlay::Confirm { kind, ids };
    }

    /// An error to acknowledge: shown at once (if `show`) unless another
    /// dialog is open.
    pub fn error(&mut self, e: String, show: bool) {
        self.errors.push(e);
        if show {
            self.show_pending();
        }
    }

    /// Shows the errors not yet acknowledged, if no other dialog is open.
    pub fn show_pending(&mut self) {
        if self.overlay == Overlay::None && !self.errors.is_empty() {
            self.overlay = Overlay::Errors;
        }
    }

    /// Text pasted while a dialog is open: the search prompt takes it.
    pub fn paste(&mut self, text: &str) {
        if let Overlay::Search { input } = &mut self.overlay {
            for c in text.chars().filter(|c| !c.is_control()) {
                if input.len() >= 200 {
                    break;
                }
                input.push(c);
            }
        }
    }

    /// Closes the dialog: errors not yet acknowledged come back.
    fn close(&mut self) {
        self.overlay = if self.errors.is_empty() {
            Overlay::None
        } else {
            Overlay::Errors
        };
    }

    /// A key while a dialog is open.
    pub fn key(&mut self, key: &KeyEvent) -> Msg {
        match &mut self.overlay {
            Overlay::None => Msg::Unbound,
            Overlay::Confirm { kind, ids } => {
                let (kind, ids) = (*kind, std::mem::take(ids));
                match key.code {
                    KeyCode::Char('y' | 'Y') | KeyCode::Enter => {
                        self.close();
                        Msg::Run { kind, ids }
                    }
                    KeyCode::Char('n' | 'N' | 'q') | KeyCode::Esc => {
                        self.close();
                        Msg::Status(format!("{} cancelled", kind.verb()))
                    }
                    _ if is_ctrl_c(key) => Msg::Quit,
                    _ => {
                        self.overlay = Overlay::Confirm { kind, ids };
                        Msg::None
                    }
                }
            }
            Overlay::Errors => {
                if is_ctrl_c(key) {
                    return Msg::Quit;
                }
                if matches!(key.code, KeyCode::Esc | KeyCode::Enter | KeyCode::Char('q' | ' ')) {
                    self.errors.clear();
                    self.close();
                }
                Msg::None
            }
            Overlay::Help { scroll } => {
                match key.code {
                    KeyCode::Up | KeyCode::Char('k') => *scroll = scroll.saturating_sub(1),
                    KeyCode::Down | KeyCode::Char('j') => *scroll = scroll.saturating_add(1),
                    KeyCode::PageUp => *scroll = scroll.saturating_sub(10),
                    KeyCode::PageDown => *scroll = scroll.saturating_add(10),
                    _ if is_ctrl_c(key) => return Msg::Quit,
                    _ => self.close(),
                }
                Msg::None
            }
            Overlay::Search { input } => {
                let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
                match key.code {
                    KeyCode::Esc => self.close(),
                    KeyCode::Enter => {
                        let q = std::mem::take(input);
                        self.close();
                        return Msg::Search(q);
                    }
                    KeyCode::Backspace => {
                        input.pop();
                    }
                    KeyCode::Char('c') if ctrl => self.close(),
                    KeyCode::Char('u') if ctrl => input.clear(),
                    KeyCode::Char(c) if input.len() < 200 => input.push(c),
                    _ => {}
                }
                Msg::None
            }
        }
    }
}
