//! Card consoles: where their bytes come from.
//!
//! mictop shows a card's console through a [`ConsoleSource`]: it attaches
//! to a card's console (read-only or holding the write side), and gets a
//! [`Console`] to type into, resize, change access on and detach from;
//! what the console says arrives as [`ConsoleEvent`]s on the [`Sink`] given
//! at attach. The source is mpssd's console broker ([`broker::BrokerConsoles`],
//! over its control socket), for a real host and for `mictop --demo`,
//! which runs an mpssd of its own; the tests script others.
//!
//! The contract, for every source:
//! * no method blocks for long: work that waits (a socket, a ring) is
//!   handed to the source's own threads or tasks; a failure found later
//!   arrives as [`ConsoleEvent::Ended`];
//! * on attach, the console's recent output comes first (as
//!   [`ConsoleEvent::Output`]), then everything after it, in order, with
//!   nothing lost and nothing twice;
//! * the card's bytes are untrusted: mictop runs them through its own
//!   terminal emulator and never writes them to the real terminal.

pub mod broker;
pub mod keys;
pub mod term;

/// Whether a console client may type into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Watching only.
    ReadOnly,
    /// Holding the write side (there is one writer per console).
    ReadWrite,
}

/// A terminal size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TermSize {
    pub cols: u16,
    pub rows: u16,
}

/// What a console tells its client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsoleEvent {
    /// Bytes the card wrote.
    Output(Vec<u8>),
    /// The access this client now has; `writer` names who holds the write
    /// side when it is someone else.
    Access { access: Access, writer: Option<String> },
    /// Something about the console itself, not the card's bytes (the card
    /// removed it at shutdown; it is back; who took the write side).
    Notice(String),
    /// The console cannot be reached yet (mpssd is not running), why; the
    /// source keeps trying and attaches once it can (then
    /// [`ConsoleEvent::Access`]).
    Waiting(String),
    /// The console is gone for good for this client (the card or the
    /// broker went away, the client was detached); why.
    Ended(String),
}

/// Where one attached console's events go. Returns `false` once nobody
/// listens any more (the source may then detach). Called from the source's
/// own threads, possibly with its state locked: it hands the event on and
/// never calls back into the source.
pub type Sink = Box<dyn Fn(ConsoleEvent) -> bool + Send + Sync>;

/// Why a console operation failed at once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConsoleError {
    #[error("mic{card} has no console here")]
    NoConsole { card: u32 },
    #[error("mic{card}'s console is read-only for this viewer: take the write side first")]
    ReadOnly { card: u32 },
    /// The console cannot take this now (the card is not reading its
    /// input); the console stays attached.
    #[error("mic{card}'s console is busy: {message}")]
    Busy { card: u32, message: String },
    #[error("mic{card}'s console: {message}")]
    Failed { card: u32, message: String },
}

/// Where consoles come from.
pub trait ConsoleSource: Send {
    /// Attaches to card `card`'s console with `access`, the client's
    /// terminal `size`; its events go to `sink`.
    fn attach(
        &mut self,
        card: u32,
        access: Access,
        size: TermSize,
        sink: Sink,
    ) -> Result<Box<dyn Console>, ConsoleError>;
}

/// One attached console.
pub trait Console: Send {
    /// Types `bytes` into the console (the write side must be held).
    fn send(&mut self, bytes: &[u8]) -> Result<(), ConsoleError>;

    /// Takes (`ReadWrite`) or gives back (`ReadOnly`) the write side; the
    /// outcome arrives as [`ConsoleEvent::Access`].
    fn set_access(&mut self, access: Access) -> Result<(), ConsoleError>;

    /// The client's terminal changed size.
    fn resize(&mut self, size: TermSize) -> Result<(), ConsoleError>;

    /// Detaches; no event follows. Dropping a console detaches it too.
    fn detach(self: Box<Self>);
}
