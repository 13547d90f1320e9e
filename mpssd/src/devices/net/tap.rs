//! The host end of a card's link: a TAP device with a virtio-net header
//! on every frame, as the VMMs make one (TUNSETIFF, TUNSETVNETHDRSZ,
//! TUNSETOFFLOAD on `/dev/net/tun`), non-blocking.
//!
//! One of mpssd's two places of `unsafe` (the other maps disk images):
//! three ioctls whose argument layouts the kernel defines (`struct ifreq`, an `int`, an `unsigned int`).

#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt as _;

use mic_core::abi::virtio::VirtioNetHdr;

/// The clone device.
const TUN_PATH: &str = "/dev/net/tun";

/// `IFNAMSIZ`, the terminating NUL included.
pub const IFNAMSIZ: usize = 16;

/// The TAP offloads mpssd may enable (`TUN_F_*`): the original's, less
/// UFO (Linux removed it). Which of them are on follows what the card
/// negotiated ([`super::hdr::tap_offloads`]).
pub const CSUM: u32 = libc::TUN_F_CSUM;
pub const TSO4: u32 = libc::TUN_F_TSO4;
pub const TSO6: u32 = libc::TUN_F_TSO6;
pub const TSO_ECN: u32 = libc::TUN_F_TSO_ECN;

/// `struct ifreq` as TUNSETIFF reads and writes it: the name, then the
/// flags in the union (the union is 24 bytes on every Linux ABI).
#[repr(C)]
struct IfReq {
    name: [u8; IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Why a TAP could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error("{name:?} is not a usable interface name (1 to {} bytes, no '/', ':', NUL or white space)", IFNAMSIZ - 1)]
    BadName { name: String },
    #[error("opening {TUN_PATH} (is the tun module loaded?)")]
    Open(#[source] io::Error),
    #[error("creating TAP {name} (TUNSETIFF){}", busy_hint(.source))]
    Create {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("TAP {name}: {op}")]
    Ioctl {
        name: String,
        op: &'static str,
        #[source]
        source: io::Error,
    },
}

fn busy_hint(e: &io::Error) -> &'static str {
    if e.raw_os_error() == Some(libc::EBUSY) {
        ": the interface exists already (another mpssd, or one made by hand)"
    } else {
        ""
    }
}

/// Whether `name` can name a network interface.
#[must_use]
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() < IFNAMSIZ
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace())
}

/// An open TAP device; closing it removes the interface.
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
}

impl Tap {
    /// Creates TAP `name` (it must not exist yet) with IFF_NO_PI and a
    /// `virtio_net_hdr` before every frame, no offloads, non-blocking.
    pub fn create(name: &str) -> Result<Tap, TapError> {
        if !valid_name(name) {
            return Err(TapError::BadName {
                name: name.to_owned(),
            });
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(TUN_PATH)
            .map_err(TapError::Open)?;
        let mut req = IfReq {
            name: [0; IFNAMSIZ],
            flags: (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR | libc::IFF_TUN_EXCL)
                as libc::c_short,
            _pad: [0; 22],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: TUNSETIFF reads and writes a `struct ifreq`, which `req`
        // is laid out as (name, then the flags at the start of the union,
        // 40 bytes in all); it lives across the call; the fd is ours.
        let r = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &raw mut req) };
        if r < 0 {
            return Err(TapError::Create {
                name: name.to_owned(),
                source: io::Error::last_os_error(),
            });
        }
        let tap = Tap {
            file,
            name: name.to_owned(),
        };
        let hdr = VirtioNetHdr::SIZE as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one `int` through the pointer,
        // which points at a live local; the fd is ours.
        let r = unsafe { libc::ioctl(tap.file.as_raw_fd(), libc::TUNSETVNETHDRSZ, &raw const hdr) };
        tap.check(r, "TUNSETVNETHDRSZ")?;
        tap.set_offloads(0)?;
        Ok(tap)
    }

    fn check(&self, r: libc::c_int, op: &'static str) -> Result<(), TapError> {
        if r < 0 {
            return Err(TapError::Ioctl {
                name: self.name.clone(),
                op,
                source: io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    /// TUNSETOFFLOAD: which partial-checksum and TSO frames the kernel may
    /// hand us (and so the card) — `TUN_F_*` bits.
    pub fn set_offloads(&self, flags: u32) -> Result<(), TapError> {
        // SAFETY: TUNSETOFFLOAD takes its argument by value (an unsigned
        // long); the fd is ours.
        let r = unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                libc::TUNSETOFFLOAD,
                libc::c_ulong::from(flags),
            )
        };
        self.check(r, "TUNSETOFFLOAD")
    }

    /// The interface's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Reads one frame (header first) into `buf`; `None` when none is
    /// waiting. A frame longer than `buf` is cut (the kernel drops the
    /// rest), which a buffer of header + 64 KiB + Ethernet never sees.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        loop {
            match nix::unistd::read(self.file.as_fd(), buf) {
                Ok(n) => return Ok(Some(n)),
                Err(nix::errno::Errno::EAGAIN) => return Ok(None),
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Writes one frame (header first).
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        loop {
            match nix::unistd::write(self.file.as_fd(), frame) {
                Ok(_) => return Ok(()),
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl AsFd for Tap {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names() {
        assert!(valid_name("mic0"));
        assert!(valid_name("mic4294967295"));
        assert!(valid_name("abcdefghijklmno"));
        assert!(
            !valid_name("abcdefghijklmnop"),
            "16 bytes leave no room for the NUL"
        );
        assert!(!valid_name(""));
        assert!(!valid_name("a/b"));
        assert!(!valid_name("a:b"));
        assert!(!valid_name("a b"));
        assert!(!valid_name(".."));
        assert!(matches!(Tap::create("a b"), Err(TapError::BadName { .. })));
    }

    #[test]
    fn ifreq_is_the_kernels_size() {
        assert_eq!(std::mem::size_of::<IfReq>(), 40);
    }
}
