//! Colours and text attributes, one set per theme.

use libmic::MicState;
use ratatui::style::{Color, Modifier, Style};

use crate::config::ThemeName;

/// Every style the UI uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Theme {
    pub name: ThemeName,
    pub text: Style,
    pub dim: Style,
    pub title: Style,
    pub border: Style,
    pub border_focus: Style,
    pub column_header: Style,
    pub selected: Style,
    pub marked: Style,
    pub key: Style,
    pub ok: Style,
    pub warn: Style,
    pub error: Style,
    pub booting: Style,
    pub search_match: Style,
    states: [Style; 4],
    levels: [Style; 8],
}

impl Theme {
    #[must_use]
    pub fn new(name: ThemeName) -> Self {
        match name {
            ThemeName::Dark => Self::colours(name, Color::Gray, Color::DarkGray),
            ThemeName::Light => Self::colours(name, Color::Black, Color::Gray),
            ThemeName::Mono => Self::mono(),
        }
    }

    fn colours(name: ThemeName, fg: Color, dim: Color) -> Self {
        let s = Style::new();
        Self {
            name,
            text: s.fg(fg),
            dim: s.fg(dim),
            title: s.fg(Color::Cyan).add_modifier(Modifier::BOLD),
            border: s.fg(dim),
            border_focus: s.fg(Color::Cyan),
            column_header: s.fg(fg).add_modifier(Modifier::BOLD | Modifier::UNDERLINED),
            selected: s.add_modifier(Modifier::REVERSED),
            marked: s.fg(Color::Magenta).add_modifier(Modifier::BOLD),
            key: s.fg(Color::Cyan).add_modifier(Modifier::BOLD),
            ok: s.fg(Color::Green),
            warn: s.fg(Color::Yellow),
            error: s.fg(Color::Red).add_modifier(Modifier::BOLD),
            booting: s.fg(Color::Yellow),
            search_match: s.fg(Color::Black).bg(Color::Yellow),
            states: [
                s.fg(dim).add_modifier(Modifier::BOLD),           // offline
                s.fg(Color::Green).add_modifier(Modifier::BOLD),  // online
                s.fg(Color::Yellow).add_modifier(Modifier::BOLD), // shutting_down
                s.fg(Color::Red).add_modifier(Modifier::BOLD),    // reset_failed
            ],
            levels: [
                s.fg(Color::White).bg(Color::Red).add_modifier(Modifier::BOLD), // emerg
                s.fg(Color::Red).add_modifier(Modifier::BOLD | Modifier::REVERSED), // alert
                s.fg(Color::Red).add_modifier(Modifier::BOLD),                  // crit
                s.fg(Color::Red),                                               // err
                s.fg(Color::Yellow),                                            // warn
                s.fg(fg).add_modifier(Modifier::BOLD),                          // notice
                s.fg(fg),                                                       // info
                s.fg(dim),                                                      // debug
            ],
        }
    }

    fn mono() -> Self {
        let s = Style::new();
        let b = s.add_modifier(Modifier::BOLD);
        Self {
            name: ThemeName::Mono,
            text: s,
            dim: s,
            title: b,
            border: s,
            border_focus: b,
            column_header: s.add_modifier(Modifier::UNDERLINED),
            selected: s.add_modifier(Modifier::REVERSED),
            marked: b,
            key: b,
            ok: s,
            warn: b,
            error: b,
            booting: s,
            search_match: s.add_modifier(Modifier::REVERSED),
            states: [s, b, b, b.add_modifier(Modifier::UNDERLINED)],
            levels: [b, b, b, b, s, s, s, s],
        }
    }

    /// The style of a card state.
    #[must_use]
    pub fn state(&self, state: MicState) -> Style {
        self.states[state as usize]
    }

    /// The style of a log level (0 = emerg).
    #[must_use]
    pub fn level(&self, level: u8) -> Style {
        self.levels[usize::from(level & 7)]
    }
}
