//! Where every pane goes: a pure function of plain inputs (the terminal
//! size, the zoom, how many cards, whether they are drawn as the compact
//! grid). The application uses it to know its viewports (how far a page
//! scrolls, which card a click hit); drawing uses it to place the panes.

use ratatui::layout::{Constraint, Layout, Rect};

use crate::config::LayoutMode;

/// Which pane, if any, fills the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Zoom {
    None,
    Detail,
    Log,
    Console,
}

/// What the application decides about the screen: its size and zoom.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Screen {
    /// The whole terminal.
    pub size: Rect,
    pub zoom: Zoom,
    /// A console is shown in the log's place.
    pub console: bool,
}

/// Everything the layout depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayoutInput {
    pub screen: Screen,
    /// Cards in the fleet.
    pub cards: usize,
    /// The cards are drawn as the compact grid ([`compact`]).
    pub compact: bool,
}

/// Where each component goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Areas {
    pub header: Rect,
    pub cards: Option<Rect>,
    pub detail: Option<Rect>,
    pub log: Option<Rect>,
    pub console: Option<Rect>,
    pub footer: Rect,
}

/// Width the detail pane takes beside the log.
const DETAIL_WIDTH: u16 = 46;

/// Width of one cell of the compact grid.
pub const CELL_WIDTH: u16 = 18;

/// Cells per row of the compact grid in an area `width` wide.
#[must_use]
pub fn grid_columns(width: u16) -> usize {
    (width.saturating_sub(2) / CELL_WIDTH).max(1) as usize
}

/// Whether `cards` cards are drawn as the compact grid in a terminal
/// `height` rows high.
#[must_use]
pub fn compact(mode: LayoutMode, cards: usize, threshold: usize, height: u16) -> bool {
    match mode {
        LayoutMode::Full => false,
        LayoutMode::Compact => true,
        LayoutMode::Auto => {
            let body = height.saturating_sub(3) as usize;
            cards > threshold || cards + 3 > body * 3 / 5
        }
    }
}

/// Lays out the screen.
#[must_use]
pub fn areas(input: &LayoutInput) -> Areas {
    let [header, body, footer] =
        Layout::vertical([Constraint::Length(2), Constraint::Min(0), Constraint::Length(1)])
            .areas(input.screen.size);
    let mut areas = Areas {
        header,
        footer,
        ..Areas::default()
    };
    match input.screen.zoom {
        Zoom::Detail => areas.detail = Some(body),
        Zoom::Log => areas.log = Some(body),
        Zoom::Console => areas.console = Some(body),
        Zoom::None => {
            let count = input.cards.max(1);
            let wanted = if input.compact {
                count.div_ceil(grid_columns(body.width)) + 2
            } else {
                count + 3
            };
            let most = (body.height as usize * 3 / 5).max(5);
            let height = wanted.min(most).min(body.height as usize) as u16;
            let [cards, bottom] =
                Layout::vertical([Constraint::Length(height), Constraint::Min(0)]).areas(body);
            areas.cards = Some(cards);
            if bottom.height >= 3 {
                if bottom.width >= DETAIL_WIDTH + 40 {
                    let [detail, log] =
                        Layout::horizontal([Constraint::Length(DETAIL_WIDTH), Constraint::Min(0)])
                            .areas(bottom);
                    areas.detail = Some(detail);
                    areas.log = Some(log);
                } else {
                    areas.log = Some(bottom);
                }
                if input.screen.console {
                    areas.console = areas.log.take();
                }
            }
        }
    }
    areas
}

impl Areas {
    /// Rows of cards visible in the card area, and cards per row.
    #[must_use]
    pub fn card_viewport(&self, compact: bool) -> (usize, usize) {
        let area = self.cards.unwrap_or_default();
        if compact {
            (area.height.saturating_sub(2) as usize, grid_columns(area.width))
        } else {
            (area.height.saturating_sub(3) as usize, 1)
        }
    }

    /// The inside of the console pane (its terminal's size), if shown.
    #[must_use]
    pub fn console_inner(&self) -> Option<(u16, u16)> {
        self.console.map(|r| {
            (
                r.width.saturating_sub(2).max(1),
                r.height.saturating_sub(2).max(1),
            )
        })
    }

    /// Lines of log a page scrolls.
    #[must_use]
    pub fn log_page(&self) -> usize {
        self.log
            .map_or(10, |r| r.height.saturating_sub(2) as usize)
            .max(1)
    }
}
