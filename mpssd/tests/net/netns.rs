//! A network namespace of the caller's own, and raw frames on an
//! interface in it.
//!
//! [`enter`] is what `unshare -n` does, for the calling thread only: the
//! threads and processes it starts afterwards (the net device's worker,
//! `ping`, `nc`, `curl`) live in the new namespace with the TAP, and the
//! host's namespace is never touched. The namespace goes away with the
//! last of them.

#![allow(dead_code, unreachable_pub, unsafe_code)]

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// The inode of the calling thread's network namespace.
fn netns_id() -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata("/proc/thread-self/ns/net").unwrap().ino()
}

/// Moves the calling thread into a new, empty network namespace (only
/// `lo`, down) and checks that it did. IPv6 is off in it, so the kernel
/// sends nothing of its own (router solicitations, MLD) out of the
/// interfaces made there: every frame a TAP carries is a test's.
pub fn enter() {
    try_enter().unwrap_or_else(|e| panic!("unshare(CLONE_NEWNET): {e}"));
}

/// [`enter`], or why not (no privilege for it).
pub fn try_enter() -> std::io::Result<()> {
    let before = netns_id();
    // SAFETY: unshare with a flag constant; affects this thread only.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    assert_ne!(netns_id(), before, "still in the namespace we started in");
    // The namespace's own sysctls (those of the thread that opens them).
    for scope in ["all", "default"] {
        match std::fs::write(format!("/proc/sys/net/ipv6/conf/{scope}/disable_ipv6"), "1") {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// The index of interface `name` in this thread's namespace.
pub fn ifindex(name: &str) -> i32 {
    let c = std::ffi::CString::new(name).unwrap();
    // SAFETY: a NUL-terminated string that outlives the call.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    assert!(i > 0, "no interface {name}: {}", std::io::Error::last_os_error());
    i as i32
}

/// An AF_PACKET socket on one interface: sends raw frames out of it (into
/// the TAP, towards the card) and receives the frames it receives (what
/// the TAP was written).
pub struct Packet {
    fd: OwnedFd,
}

impl Packet {
    /// Bound to interface `name` for every protocol; receives wait at
    /// most `timeout`.
    pub fn bind(name: &str, timeout: Duration) -> Packet {
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: socket with constant arguments; the result is checked.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                i32::from(proto),
            )
        };
        assert!(raw >= 0, "AF_PACKET socket: {}", std::io::Error::last_os_error());
        // SAFETY: a descriptor we just got and own from here on.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_ll is plain data, all zeroes is valid.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = ifindex(name);
        // SAFETY: a sockaddr_ll of the size given, for the call.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const sll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(r, 0, "bind to {name}: {}", std::io::Error::last_os_error());
        let tv = libc::timeval {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_usec: libc::suseconds_t::from(timeout.subsec_micros() as i32),
        };
        // SAFETY: SO_RCVTIMEO takes a timeval of the size given.
        let r = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const tv).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            )
        };
        assert_eq!(r, 0);
        // Room for a burst the reader has not caught up with (the kernel
        // drops what does not fit, and the tests count frames): 8 MiB,
        // past rmem_max (the tests run as root), else the default.
        let size: libc::c_int = 8 << 20;
        // SAFETY: SO_RCVBUFFORCE takes an int of the size given.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&raw const size).cast(),
                std::mem::size_of::<libc::c_int>() as u32,
            )
        };
        Packet { fd }
    }

    /// Sends `frame` out of the interface. `false` if the kernel had no
    /// room for it.
    pub fn send(&self, frame: &[u8]) -> bool {
        // SAFETY: a buffer of the length given, for the call.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        n == frame.len() as isize
    }

    /// The next frame the interface received (not one it sent), `None`
    /// after the timeout.
    pub fn recv(&self) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 70_000];
        loop {
            // SAFETY: sockaddr_ll is plain data, all zeroes is valid.
            let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
            // SAFETY: a buffer and an address of the sizes given.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    0,
                    (&raw mut from).cast(),
                    &raw mut len,
                )
            };
            if n < 0 {
                return None;
            }
            if from.sll_pkttype != libc::PACKET_OUTGOING {
                return Some(buf[..n as usize].to_vec());
            }
        }
    }
}

/// An Ethernet frame from `src` to `dst` of `ethertype` carrying
/// `payload`.
pub fn ether(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = dst.to_vec();
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}
