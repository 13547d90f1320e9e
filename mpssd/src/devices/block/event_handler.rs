//! The disk's data thread: `poll(2)` over the `dev/micN` file and the stop
//! waker; on every wake, every available request is served (at most
//! [`BUDGET`] per round, then the round repeats without blocking), one
//! hand-off per request: the copy that completes one request travels with
//! the copy that fetches the next ([`super::queue`]).
//!
//! A chain the ring walker would refuse, or one the card rewrote in
//! flight, stops the round: the device is served again at the card's next
//! doorbell, one attempt per doorbell, so a card that broke its ring
//! cannot make this thread spin. It works again once the card resets the
//! device.

use std::os::fd::AsFd as _;
use std::sync::Arc;
use std::time::Duration;

use libmic::vdev::{RingMap, VirtioFile};
use mic_core::abi::virtio::{VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_UNSUPP, id, status};
use nix::poll::{PollFd, PollFlags};

use super::image::Image;
use super::metrics as m;
use super::queue::{End, FileQueue, Server};
use super::request::{self, Abort, BUF_LEN, Kind};
use crate::devices::dataplane::{DevState, Stats, Waker, end_round, poll, readable};

/// Requests served per round.
pub const BUDGET: usize = 64;

/// The data path of one disk.
pub struct BlockPath {
    file: VirtioFile,
    map: RingMap,
    image: Arc<Image>,
    stats: Arc<Stats>,
    name: String,
    server: Server,
    ready: bool,
    gone: bool,
    /// The ring refused a chain or one changed in flight: one attempt per
    /// doorbell until it works again.
    wedged: bool,
}

impl std::fmt::Debug for BlockPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockPath")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl BlockPath {
    #[must_use]
    pub fn new(
        mut file: VirtioFile,
        map: RingMap,
        image: Arc<Image>,
        stats: Arc<Stats>,
        name: String,
    ) -> Self {
        let (input, out) = (file.alloc_buf(BUF_LEN), file.alloc_buf(BUF_LEN));
        if !(input.is_shared() && out.is_shared()) {
            log::debug!(target: "mpssd", "{name}: I/O buffers on the heap (no shared arena)");
        }
        let server = Server::new(input, out);
        Self {
            file,
            map,
            image,
            stats,
            name,
            server,
            ready: false,
            gone: false,
            wedged: false,
        }
    }

    /// Serves until `stop` is woken.
    pub fn run(mut self, stop: &Waker) {
        self.stats.set_state(DevState::Waiting);
        loop {
            let mut again = false;
            if !self.gone {
                again = self.service();
                match end_round(&mut self.file, "disk") {
                    Ok(rang) => again |= rang,
                    Err(why) => self.went(&why),
                }
            }
            let mut fds = vec![PollFd::new(stop.as_fd(), PollFlags::POLLIN)];
            if !self.gone {
                fds.push(PollFd::new(self.file.as_fd(), PollFlags::POLLIN));
            }
            // TIMEOUT: none while idle (the card's doorbells and the stop
            // are descriptors); zero while work is left.
            if let Err(e) = poll(&mut fds, again.then_some(Duration::ZERO)) {
                log::error!(target: "mpssd", "{}: poll: {e}", self.name);
                break;
            }
            if readable(&fds[0]) {
                break;
            }
        }
    }

    fn went(&mut self, why: &str) {
        if !self.gone {
            log::info!(target: "mpssd", "{}: {why}", self.name);
            self.gone = true;
            self.stats.set_state(DevState::Gone);
        }
    }

    /// One round; returns whether requests were left for the next.
    fn service(&mut self) -> bool {
        if !self.ready {
            if self.map.device_status(id::BLOCK) & status::DRIVER_OK == 0 {
                return false;
            }
            self.ready = true;
            self.wedged = false;
            self.stats.set_state(DevState::Up);
        }
        let mut queue = FileQueue {
            file: &mut self.file,
            map: &self.map,
        };
        let (stats, name) = (&*self.stats, self.name.as_str());
        let mut any = false;
        let r = self.server.round(&mut queue, &*self.image, BUDGET, &mut |s| {
            any = true;
            count(stats, name, s);
        });
        if any && self.wedged {
            self.wedged = false;
            self.stats.set_state(DevState::Up);
        }
        match r {
            Ok(End::Empty) => {
                if self.wedged {
                    self.wedged = false;
                    self.stats.set_state(DevState::Up);
                }
                false
            }
            Ok(End::Budget) => {
                self.stats.add(m::RING_FULL, 1);
                true
            }
            Ok(End::BadChain(e)) => {
                self.wedge(&format!("the card offered a bad chain: {e}"));
                false
            }
            Err(Abort::Ring(e)) if e.errno() == Some(nix::errno::Errno::ENODEV as i32) => {
                // The card reset the device: wait for DRIVER_OK again.
                self.ready = false;
                self.stats.set_state(DevState::Waiting);
                false
            }
            Err(Abort::Ring(e)) => {
                self.wedge(&format!("COPY_DESC: {e}"));
                false
            }
            Err(Abort::Changed { completed }) => {
                self.wedge(if completed {
                    "the card rewrote a request in flight (answered IOERR)"
                } else {
                    "the card rewrote a request in flight; the ring is stuck until the card resets the disk"
                });
                false
            }
        }
    }

    fn wedge(&mut self, why: &str) {
        self.stats.add(m::MALFORMED, 1);
        if !self.wedged {
            log::warn!(target: "mpssd", "{}: {why}", self.name);
            self.stats.fail(why.to_owned());
        }
        self.wedged = true;
    }
}

/// Counts a completed request.
fn count(st: &Stats, name: &str, s: request::Served) {
    st.add(m::REQUESTS, 1);
    match s.status {
        Some(VIRTIO_BLK_S_IOERR) => st.add(m::IO_ERRORS, 1),
        Some(VIRTIO_BLK_S_UNSUPP) => st.add(m::UNSUPPORTED, 1),
        None => st.add(m::MALFORMED, 1),
        Some(_) => match s.kind {
            Kind::Read => {
                st.add(m::READS, 1);
                st.add(m::READ_BYTES, s.bytes);
            }
            Kind::Write => {
                st.add(m::WRITES, 1);
                st.add(m::WRITE_BYTES, s.bytes);
            }
            Kind::Flush => st.add(m::FLUSHES, 1),
            Kind::GetId | Kind::Unsupported(_) | Kind::Malformed => {}
        },
    }
    if let Some(why) = s.why {
        log::debug!(target: "mpssd", "{name}: {why} ({:?})", s.kind);
    }
}
