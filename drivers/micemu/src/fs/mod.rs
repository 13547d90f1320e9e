//! FUSE filesystem serving the emulated cards' sysfs and debugfs.
//!
//! [`mount`] serves, under the mount point it is given (the emulator passes
//! `<root>/sys`):
//!
//! ```text
//! class/mic/micN/<sysfs files>                 (Tree::Sysfs)
//! kernel/debug/mic_host/micN/<debugfs files>   (Tree::Debugfs)
//! ```
//!
//! for every card `N` in `0..Backend::card_count()`. File contents come from a
//! [`Backend`]; the filesystem reproduces the kernfs and `seq_file` behaviour that
//! user space relies on:
//!
//! * every `open` gets its own handle and `FOPEN_DIRECT_IO`, so every read
//!   reaches us (no page cache);
//! * a read at offset 0 calls [`Backend::read`] and keeps the result in the
//!   handle; reads further on serve that snapshot, so a value is never torn.
//!   Handles that read the same bytes share one copy, and a mount keeps at
//!   most 32 MiB of them in all: past that a handle keeps nothing and each
//!   of its reads shows afresh;
//! * each `write(2)` is one [`Backend::write`] ("store") of that buffer, cut
//!   to a page as kernfs cuts it, whose errno is what `write(2)` returns;
//! * debugfs (`kernel/debug` and below) is root's: its directories are
//!   0700, and every request on it from anyone else (a handle opened by
//!   root and passed on included) fails with `EACCES`. (The user micemu
//!   runs as owns it, when that is not root.)
//! * `poll` behaves like `sysfs_notify`/`kernfs_generic_poll`: a handle is
//!   "changed" (`POLLPRI|POLLERR` on top of the default mask) once
//!   [`PollHub::notify`] bumped the file's event counter after the handle's
//!   last read from offset 0 (or its open).

mod hub;
mod mount;
mod ops;
mod snapshot;
mod tree;

use std::fmt;

pub use hub::PollHub;
pub use mount::{Mount, MountError, mount, unmount_dead};

/// A `libc` errno value (positive, e.g. `libc::EINVAL`).
pub type Errno = i32;

/// Which of the two served trees a file lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tree {
    /// `class/mic/micN/`.
    Sysfs,
    /// `kernel/debug/mic_host/micN/`.
    Debugfs,
}

/// One file of a card's directory: the driver core's table row (only the
/// name and mode matter to the filesystem).
pub use mic_core::host::attrs::FileSpec;

/// Where the filesystem gets file contents from and sends writes to.
///
/// Called from the FUSE worker threads; calls may run concurrently.
pub trait Backend: Send + Sync + 'static {
    /// Number of cards; directories `micN` exist for `N` in `0..card_count()`.
    fn card_count(&self) -> u32;

    /// The files of every card's directory in `tree`.
    fn files(&self, tree: Tree) -> &'static [FileSpec];

    /// Whole content of a file ("show"); called when a read starts at offset 0.
    fn read(&self, card: u32, tree: Tree, name: &str) -> Result<Vec<u8>, Errno>;

    /// "store": the whole written buffer. May complete later from another
    /// thread via `done`; until then the writer's `write(2)` blocks (other
    /// requests keep being served).
    fn write(&self, card: u32, tree: Tree, name: &str, data: &[u8], done: WriteDone);
}

/// Completion of one [`Backend::write`]: the pending `write(2)` returns when
/// this is consumed.
///
/// Dropping it without calling [`ok`](Self::ok) or [`err`](Self::err) makes
/// the `write(2)` fail with `EIO`, so the kernel is never left waiting.
pub struct WriteDone {
    reply: Option<fuser::ReplyWrite>,
    len: u32,
}

impl WriteDone {
    pub(crate) fn new(reply: fuser::ReplyWrite, len: u32) -> Self {
        Self {
            reply: Some(reply),
            len,
        }
    }

    /// Number of bytes the writer passed (what [`ok`](Self::ok) reports as written).
    #[must_use]
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether the write was empty (never the case for sysfs stores).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The store succeeded: `write(2)` returns the full length.
    pub fn ok(mut self) {
        if let Some(reply) = self.reply.take() {
            reply.written(self.len);
        }
    }

    /// The store failed: `write(2)` fails with `errno` (`EIO` if `errno` is
    /// not a positive value).
    pub fn err(mut self, errno: Errno) {
        if let Some(reply) = self.reply.take() {
            reply.error(fuser::Errno::from_i32(errno));
        }
    }
}

impl Drop for WriteDone {
    fn drop(&mut self) {
        if let Some(reply) = self.reply.take() {
            log::warn!("sysfs store dropped without completion; failing write(2) with EIO");
            reply.error(fuser::Errno::EIO);
        }
    }
}

impl fmt::Debug for WriteDone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteDone")
            .field("len", &self.len)
            .field("pending", &self.reply.is_some())
            .finish()
    }
}
