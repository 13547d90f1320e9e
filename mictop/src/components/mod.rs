//! The components of the screen, each with its own state: input handling
//! that returns a [`Msg`] for the application's update step, and data
//! updates that say whether anything changed. None of them draws (that is
//! [`crate::ui`]) or knows another.
//!
//! * [`fleet`] — the cards, their order, the selection and the marks;
//! * [`log`] — the selected card's kernel log: scrollback, follow, filter,
//!   search;
//! * [`console`] — the attached card consoles, each through a terminal
//!   emulator, and the pane that shows one;
//! * [`detail`] — the selected card's debugfs summaries;
//! * [`header`] — the host and the root;
//! * [`dialogs`] — help, confirmation, errors and the search prompt.

pub mod console;
pub mod detail;
pub mod dialogs;
pub mod fleet;
pub mod header;
pub mod log;

use crate::model::OpKind;

/// What a component's input handling asks of the application; its update
/// step carries it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    /// Handled: nothing more to do.
    None,
    /// The key is bound to nothing here: nothing changed.
    Unbound,
    Quit,
    /// A one-line message for the footer.
    Status(String),
    /// Another card is selected: follow its log, load its details.
    Selected,
    /// Run an operation on these cards (confirmed).
    Run {
        kind: OpKind,
        ids: Vec<u32>,
    },
    /// Search the log for this text.
    Search(String),
    /// Turn mouse capture on or off.
    Mouse(bool),
    /// Ask the console source for these.
    Console(Vec<console::ConsoleOp>),
}
