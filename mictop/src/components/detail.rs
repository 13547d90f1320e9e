//! The detail pane's state: the debugfs summaries of the selected card,
//! once read.

use crate::model::Detail;

/// The summaries shown, and whose.
#[derive(Debug, Default)]
pub struct DetailView {
    shown: Option<(u32, Detail)>,
}

impl DetailView {
    /// The summaries of card `id`, if they are the ones held.
    #[must_use]
    pub fn of(&self, id: u32) -> Option<&Detail> {
        self.shown.as_ref().filter(|(i, _)| *i == id).map(|(_, d)| d)
    }

    pub fn set(&mut self, id: u32, detail: Detail) {
        self.shown = Some((id, detail));
    }

    /// Forgets them (another card is selected, the driver is gone).
    pub fn clear(&mut self) {
        self.shown = None;
    }
}
