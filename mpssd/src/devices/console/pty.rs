//! The console's pty, as the original's (`posix_openpt`, `grantpt`,
//! `unlockpt`; the slave's name logged), plus what the original lacked: the
//! slave is put in raw mode (a cooked slave would echo the card's output
//! back to it as input), mpssd keeps one slave descriptor open itself (so
//! the master never reads EIO or polls HUP between two `screen` sessions),
//! and the slave is linked at `DIR/run/mpssd/micN/console`.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::pty::PtyMaster;
use nix::sys::termios;

use super::ConsoleError;

/// The link's name in the card's run directory.
pub const LINK: &str = "console";

/// A pty whose master mpssd serves.
#[derive(Debug)]
pub struct Pty {
    master: PtyMaster,
    /// Held so the master never sees the slave closed.
    _slave: OwnedFd,
    path: String,
}

impl Pty {
    /// A new pty, its slave raw, its master non-blocking.
    pub fn open() -> Result<Self, ConsoleError> {
        let err = |what: &'static str| {
            move |e: nix::errno::Errno| ConsoleError::Pty {
                what,
                source: e.into(),
            }
        };
        let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
            .map_err(err("posix_openpt"))?;
        nix::pty::grantpt(&master).map_err(err("grantpt"))?;
        nix::pty::unlockpt(&master).map_err(err("unlockpt"))?;
        let path = nix::pty::ptsname_r(&master).map_err(err("ptsname"))?;
        let slave = nix::fcntl::open(
            Path::new(&path),
            OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(err("opening the slave"))?;
        let mut t = termios::tcgetattr(&slave).map_err(err("tcgetattr"))?;
        termios::cfmakeraw(&mut t);
        termios::tcsetattr(&slave, termios::SetArg::TCSANOW, &t).map_err(err("tcsetattr"))?;
        let flags = nix::fcntl::fcntl(&master, nix::fcntl::FcntlArg::F_GETFL).map_err(err("fcntl"))?;
        nix::fcntl::fcntl(
            &master,
            nix::fcntl::FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
        )
        .map_err(err("fcntl"))?;
        Ok(Self {
            master,
            _slave: slave,
            path,
        })
    }

    /// `/dev/pts/N`.
    #[must_use]
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Reads what a terminal typed (non-blocking).
    pub fn read(&self, buf: &mut [u8]) -> nix::Result<usize> {
        nix::unistd::read(&self.master, buf)
    }

    /// Writes output for the terminal (non-blocking: EAGAIN when full).
    pub fn write(&self, buf: &[u8]) -> nix::Result<usize> {
        nix::unistd::write(&self.master, buf)
    }

    /// Points `dir/console` at the slave (replacing a stale link).
    pub fn link(&self, dir: &Path) -> Result<PathBuf, ConsoleError> {
        let link = dir.join(LINK);
        let io = |source| ConsoleError::Link {
            path: link.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let tmp = dir.join(".console.new");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&self.path, &tmp).map_err(io)?;
        std::fs::rename(&tmp, &link).map_err(io)?;
        Ok(link)
    }
}

impl AsFd for Pty {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.master.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Write as _};

    use super::*;

    #[test]
    fn the_slave_is_raw_and_linked() {
        let pty = Pty::open().unwrap();
        assert!(pty.path().starts_with("/dev/pts/"), "{}", pty.path());
        let dir = tempfile::tempdir().unwrap();
        let link = pty.link(&dir.path().join("mic0")).unwrap();
        assert_eq!(std::fs::read_link(&link).unwrap(), Path::new(pty.path()));
        // Relinked in place (a stale link is replaced).
        pty.link(&dir.path().join("mic0")).unwrap();
        // A terminal program on the slave sees the card's bytes unchanged
        // (no \n → \r\n), and what it types reaches the master unechoed.
        let mut term = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&link)
            .unwrap();
        assert_eq!(pty.write(b"out\n").unwrap(), 4);
        let mut got = [0u8; 4];
        term.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"out\n");
        term.write_all(b"in\r").unwrap();
        let mut buf = [0u8; 16];
        let mut fds = [nix::poll::PollFd::new(pty.as_fd(), nix::poll::PollFlags::POLLIN)];
        crate::devices::dataplane::poll(&mut fds, Some(std::time::Duration::from_secs(10))).unwrap();
        let n = pty.read(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"in\r");
        // Nothing more (no echo of the output came back as input).
        assert_eq!(pty.read(&mut buf), Err(nix::errno::Errno::EAGAIN));
        // With the terminal gone, the master still neither errs nor hangs up.
        drop(term);
        let mut fds = [nix::poll::PollFd::new(pty.as_fd(), nix::poll::PollFlags::POLLIN)];
        assert_eq!(
            crate::devices::dataplane::poll(&mut fds, Some(std::time::Duration::ZERO)).unwrap(),
            0
        );
    }
}
