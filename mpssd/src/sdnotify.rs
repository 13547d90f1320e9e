//! systemd's notification protocol (sd_notify(3)) without libsystemd: one
//! datagram per message to `$NOTIFY_SOCKET` (a path, or `@name` in the
//! abstract namespace). Outside systemd (no `$NOTIFY_SOCKET`) every call
//! does nothing.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// The notification socket, if systemd gave one.
#[derive(Debug)]
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET`. A socket that cannot be used is logged and
    /// ignored (notifications are advisory; the daemon runs without them).
    #[must_use]
    pub fn from_env() -> Self {
        let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
            return Self { target: None };
        };
        let addr = {
            use std::os::unix::ffi::OsStrExt as _;
            let bytes = path.as_bytes();
            match bytes.strip_prefix(b"@") {
                Some(name) => {
                    use std::os::linux::net::SocketAddrExt as _;
                    SocketAddr::from_abstract_name(name)
                }
                None => SocketAddr::from_pathname(&path),
            }
        };
        // Non-blocking: a notification that does not fit the receiver's
        // queue is dropped; mpssd never waits for systemd.
        let sock = UnixDatagram::unbound().and_then(|s| s.set_nonblocking(true).map(|()| s));
        let target = match (sock, addr) {
            (Ok(sock), Ok(addr)) => Some((sock, addr)),
            (Err(e), _) | (_, Err(e)) => {
                log::warn!(
                    "NOTIFY_SOCKET={}: unusable ({e}); not notifying systemd",
                    path.to_string_lossy()
                );
                None
            }
        };
        Self { target }
    }

    /// Whether systemd listens.
    #[must_use]
    pub fn active(&self) -> bool {
        self.target.is_some()
    }

    /// Sends `state` (`READY=1`, `STATUS=...`, `WATCHDOG=1`, `STOPPING=1`).
    pub fn notify(&self, state: &str) {
        if let Some((sock, addr)) = &self.target {
            if let Err(e) = sock.send_to_addr(state.as_bytes(), addr) {
                log::debug!("sd_notify {state:?}: {e}");
            }
        }
    }
}

/// The watchdog interval systemd asked for (`$WATCHDOG_USEC`, for this
/// process if `$WATCHDOG_PID` is set): pings go at half of it.
#[must_use]
pub fn watchdog_interval() -> Option<Duration> {
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
            return None;
        }
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}
