//! The terminal side of `micctl console`: raw mode that is always undone,
//! the window size, and the signals it handles itself.

use std::io;
use std::os::fd::{AsFd, AsRawFd as _, BorrowedFd, OwnedFd};

use libmic::mpssd::WindowSize;
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::termios::{self, SetArg, SpecialCharacterIndices, Termios};

/// A terminal in raw mode; the mode it had comes back when this is
/// dropped: on detach, on every error, and on a panic (the unwind drops
/// it). Signals that would end micctl are taken by [`Signals`] meanwhile,
/// so they end the session through here too.
#[derive(Debug)]
pub(super) struct RawMode {
    /// A duplicate of the terminal's descriptor (the same terminal).
    fd: OwnedFd,
    saved: Termios,
}

impl RawMode {
    /// Puts the terminal on `fd` into raw mode: bytes as typed, no echo, no
    /// signals from keys (ctrl-C goes to the card), no output processing.
    pub(super) fn enter(fd: BorrowedFd<'_>) -> io::Result<Self> {
        let fd = fd.try_clone_to_owned()?;
        let saved = termios::tcgetattr(&fd)?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        raw.control_chars[SpecialCharacterIndices::VMIN as usize] = 1;
        raw.control_chars[SpecialCharacterIndices::VTIME as usize] = 0;
        termios::tcsetattr(&fd, SetArg::TCSANOW, &raw)?;
        Ok(Self { fd, saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // TCSANOW, not TCSADRAIN: a terminal whose reader went away must
        // not keep micctl from ending.
        let _ = termios::tcsetattr(&self.fd, SetArg::TCSANOW, &self.saved);
    }
}

/// The size of the terminal on `fd`, if it is one and knows its size.
#[must_use]
pub(super) fn window_size(fd: BorrowedFd<'_>) -> Option<WindowSize> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` through the pointer, which
    // points to a live, exclusively borrowed local of that type; the fd is
    // borrowed for the call.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &raw mut ws) };
    (r == 0 && ws.ws_col > 0 && ws.ws_row > 0).then_some(WindowSize {
        cols: ws.ws_col,
        rows: ws.ws_row,
    })
}

/// The signals the console handles: blocked, and read from a signalfd in
/// the event loop instead. Dropping this puts the old mask back.
#[derive(Debug)]
pub(super) struct Signals {
    fd: SignalFd,
    old: SigSet,
}

/// The signals that end a session (it restores the terminal, then micctl
/// dies of the signal, as a tool killed by it would).
pub(super) const ENDING: [Signal; 4] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP, Signal::SIGQUIT];

impl Signals {
    /// Blocks SIGWINCH, SIGPIPE and the [`ENDING`] signals in this thread
    /// (and the threads it starts from now on) and opens a signalfd for
    /// them. Call it before any thread starts, so none takes them with
    /// their default action.
    pub(super) fn block() -> io::Result<Self> {
        let mut set = SigSet::empty();
        for s in ENDING.into_iter().chain([Signal::SIGWINCH, Signal::SIGPIPE]) {
            set.add(s);
        }
        let old = set.thread_swap_mask(SigmaskHow::SIG_BLOCK)?;
        let fd = SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
        Ok(Self { fd, old })
    }

    /// The next signal that arrived, if any (never waits).
    pub(super) fn next(&self) -> io::Result<Option<Signal>> {
        loop {
            match self.fd.read_signal() {
                Ok(None) => return Ok(None),
                Ok(Some(info)) => {
                    if let Ok(s) = Signal::try_from(info.ssi_signo as i32) {
                        return Ok(Some(s));
                    }
                }
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl AsFd for Signals {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        let _ = self.old.thread_set_mask();
    }
}

/// Dies of `sig` (after the session's guards restored the terminal and the
/// signal mask): the default action of an ending signal, as if it had not
/// been caught.
pub(super) fn die_of(sig: Signal) {
    let _ = nix::sys::signal::raise(sig);
}
