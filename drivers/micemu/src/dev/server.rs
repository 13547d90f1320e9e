//! `DIR/dev/micN` as `SOCK_SEQPACKET` Unix sockets: every connection is one
//! open file ([`super::VdevFile`]), its messages are the ioctls
//! ([`mic_core::abi::emu_dev`] has the wire format), readability is poll's
//! wake-up, and closing the connection removes the device.
//!
//! One listener thread serves every card's socket; each connection gets a
//! thread of its own, so one slow or hostile client holds up nothing but
//! itself. COPY_DESC moves the bytes with one copy: `process_vm_readv` and
//! `process_vm_writev` between the GDDR mapping and the client's iovecs,
//! or inside the messages when the client's memory cannot be reached.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use mic_core::abi::emu_dev::{
    ApertureReply, BATCH_F_STARTED, BATCH_MAX, BatchReply, BatchReq, BatchResult, CopyReply,
    HELLO_FORCE_INLINE, HELLO_SHM, Hello, HelloReply, Iovec, MAX_INLINE, MAX_MSG, MODE_DIRECT, MODE_INLINE,
    MSG_GONE, MSG_PLAN, MSG_REPLY, MSG_WAKE, MmapReq, MsgHeader, OP_ACK_WAKE, OP_APERTURE, OP_COPY_BATCH,
    OP_HELLO, OP_MMAP, OP_PLAN_DONE, PLAN_BUDGET_MS, PLAN_MAX, PROT_WRITE, PROTO_VERSION,
    PROTO_VERSION_APERTURE, PROTO_VERSION_BATCH, PROTO_VERSION_MIN, PROTO_VERSION_STARTED, Piece, PlanOp,
    ReqHeader, SHM_ARENA, SHM_CLIENT_CPU, SHM_CLIENT_SLEEPING, SHM_MAX, SHM_REQ, SHM_REQ_MAX, SHM_REQ_SEQ,
    SHM_RESP, SHM_RESP_MAX, SHM_RESP_SEQ, SHM_SERVER_CPU, SHM_SERVER_SLEEPING, Spin, SpinStep, Spinner,
    cpu_word,
};
use mic_core::abi::{MIC_VIRTIO_ADD_DEVICE, MIC_VIRTIO_CONFIG_CHANGE, MIC_VIRTIO_COPY_DESC, MicCopyDesc};
use mic_core::host::vop::{CopyFault, MAX_IOVECS, UserBuffers};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{
    AddressFamily, Backlog, ControlMessage, MsgFlags, SockFlag, SockType, UnixAddr, bind, getsockopt, listen,
    send, sendmsg, socket, sockopt,
};

use super::{VdevFile, Waker};
use crate::emu::Emulator;
use crate::fs::Errno;
use crate::hw::SharedMem;

/// Path of card `id`'s device under a root.
#[must_use]
pub fn dev_path(root: &Path, id: u32) -> PathBuf {
    root.join(format!("dev/mic{id}"))
}

/// The served sockets; dropping it stops the listener (connections end
/// with their clients or when the emulator goes).
#[derive(Debug)]
pub struct Server {
    paths: Vec<PathBuf>,
    /// Every connection's socket, to end them when the emulator goes.
    conns: Arc<Mutex<Vec<std::sync::Weak<OwnedFd>>>>,
    stop: Arc<AtomicBool>,
    wake: OwnedFd,
    thread: Option<thread::JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = nix::unistd::write(&self.wake, &[1]);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // The clients see the end (EOF, poll's hang-up) as they would a
        // driver going away; their threads then remove the devices.
        for c in self
            .conns
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            if let Some(fd) = c.upgrade() {
                let _ = nix::sys::socket::shutdown(fd.as_raw_fd(), nix::sys::socket::Shutdown::Both);
            }
        }
        for p in &self.paths {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Binds `DIR/dev/micN` for every card (replacing stale socket files) and
/// serves them.
pub fn serve(root: &Path, emu: &Arc<Emulator>) -> std::io::Result<Server> {
    std::fs::create_dir_all(root.join("dev"))?;
    let mut listeners = Vec::new();
    let mut paths = Vec::new();
    for id in 0..emu.config.cards {
        let path = dev_path(root, id);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let fd = socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        bind(fd.as_raw_fd(), &UnixAddr::new(&path)?)?;
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o660))?;
        listen(&fd, Backlog::new(64).map_err(std::io::Error::from)?)?;
        listeners.push((id, fd));
        paths.push(path);
    }
    let (wake_r, wake_w) = nix::unistd::pipe()?;
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = Arc::clone(&stop);
    let conns = Arc::new(Mutex::new(Vec::new()));
    let registry = Arc::clone(&conns);
    let emu = Arc::clone(emu);
    let thread = thread::Builder::new()
        .name("micemu-dev".into())
        .spawn(move || accept_loop(&emu, &listeners, &wake_r, &stopping, &registry))?;
    Ok(Server {
        paths,
        conns,
        stop,
        wake: wake_w,
        thread: Some(thread),
    })
}

fn accept_loop(
    emu: &Arc<Emulator>,
    listeners: &[(u32, OwnedFd)],
    wake: &OwnedFd,
    stop: &AtomicBool,
    conns: &Mutex<Vec<std::sync::Weak<OwnedFd>>>,
) {
    loop {
        let mut fds: Vec<PollFd<'_>> = listeners
            .iter()
            .map(|(_, fd)| PollFd::new(fd.as_fd(), PollFlags::POLLIN))
            .collect();
        fds.push(PollFd::new(wake.as_fd(), PollFlags::POLLIN));
        if poll(&mut fds, PollTimeout::NONE).is_err() {
            continue;
        }
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let ready: Vec<usize> = fds
            .iter()
            .enumerate()
            .filter(|(_, f)| f.revents().is_some_and(|r| r.contains(PollFlags::POLLIN)))
            .map(|(i, _)| i)
            .collect();
        drop(fds);
        for i in ready {
            let Some((id, fd)) = listeners.get(i) else {
                continue;
            };
            let Ok(raw) = nix::sys::socket::accept4(fd.as_raw_fd(), SockFlag::SOCK_CLOEXEC) else {
                continue;
            };
            // SAFETY: accept4 just returned this descriptor; nothing else
            // owns it.
            let conn = Arc::new(unsafe { OwnedFd::from_raw_fd(raw) });
            {
                let mut list = conns.lock().unwrap_or_else(PoisonError::into_inner);
                list.retain(|w| w.strong_count() > 0);
                list.push(Arc::downgrade(&conn));
            }
            let emu = Arc::clone(emu);
            let id = *id;
            let _ = thread::Builder::new()
                .name(format!("mic{id}-vdev"))
                .spawn(move || serve_conn(&emu, id, conn));
        }
    }
}

/// poll's wake-up over the socket: at most one `MSG_WAKE` outstanding
/// until the client acknowledges it; wake-ups in between are remembered.
#[derive(Debug)]
struct SocketWaker {
    fd: Arc<OwnedFd>,
    /// (a wake is outstanding, another came meanwhile)
    state: Mutex<(bool, bool)>,
    gone: AtomicBool,
}

impl SocketWaker {
    fn send_kind(&self, kind: u32) {
        let h = MsgHeader { kind, result: 0 };
        // Never blocks: the event loop calls this. With at most one wake
        // outstanding the socket cannot fill with them.
        let _ = send(
            self.fd.as_raw_fd(),
            &h.to_bytes(),
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
        );
    }

    fn ack(&self) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        s.0 = false;
        if s.1 {
            s.1 = false;
            s.0 = true;
            self.send_kind(MSG_WAKE);
        }
    }
}

impl Waker for Arc<SocketWaker> {
    fn wake(&self) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if s.0 {
            s.1 = true;
        } else {
            s.0 = true;
            self.send_kind(MSG_WAKE);
        }
    }
    fn gone(&self) {
        if !self.gone.swap(true, Ordering::SeqCst) {
            self.send_kind(MSG_GONE);
        }
    }
}

/// The client's shared region and its two eventfds (the fast path).
struct Shm {
    map: vm_memory::MmapRegion<()>,
    /// The client's address of byte 0.
    client_base: u64,
    len: u64,
    kick_server: OwnedFd,
    kick_client: OwnedFd,
    /// The last request taken (a plan's answer is a request too).
    seq: std::cell::Cell<u32>,
    /// How this side waits for the next request, for a plan's answer,
    /// and the clock it waits by.
    spinner: std::cell::Cell<Spinner>,
    plan_spinner: std::cell::Cell<Spinner>,
    epoch: Instant,
    /// When this thread last moved off the client's CPU ([`Shm::keep_off`]).
    moved_ns: std::cell::Cell<Option<u64>>,
}

/// How long the server keeps looking for the next fast request after one
/// before it sleeps on its eventfd, in ns. It yields between looks
/// ([`Spinner::yielding`]), so the wait costs a CPU only nobody else
/// wants: long enough to span a backend's work between two batches (a
/// batch of frames written to a TAP), so that a stream of requests never
/// puts it to sleep and back.
const SERVER_SPIN_NS: u64 = 200_000;

/// How long the server spins for a plan's answer before it sleeps, in ns:
/// the client copies and answers at once, so this wait spins (a yield
/// could hand the CPU to a busy thread for a whole time slice).
const PLAN_SPIN_NS: u64 = 50_000;

/// At most one move off the client's CPU ([`Shm::keep_off`]) this often.
const KEEP_OFF_EVERY_NS: u64 = 1_000_000;

/// Looks at the slot (one load each) between two asks what to do next
/// ([`Spin`]: a look at the clock and the CPUs; in the main loop also at
/// the socket).
const SPIN_BATCH: u32 = 32;

impl Shm {
    fn slice(&self, off: usize, len: usize) -> Option<vm_memory::VolatileSlice<'_, ()>> {
        use vm_memory::volatile_memory::VolatileMemory as _;
        self.map.get_slice(off, len).ok()
    }

    fn load(&self, off: usize, order: Ordering) -> u32 {
        use vm_memory::Bytes as _;
        self.slice(off, 4)
            .and_then(|s| s.load::<u32>(0, order).ok())
            .unwrap_or(0)
    }

    fn store(&self, off: usize, v: u32, order: Ordering) {
        use vm_memory::Bytes as _;
        if let Some(s) = self.slice(off, 4) {
            let _ = s.store(v, 0, order);
        }
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// A spin for the next request, or (`plan`) a plan's answer.
    fn begin_spin(&self, plan: bool) -> Spin {
        self.which(plan).get().begin(self.now_ns())
    }

    fn which(&self, plan: bool) -> &std::cell::Cell<Spinner> {
        if plan { &self.plan_spinner } else { &self.spinner }
    }

    /// Publishes the CPU this thread runs on and whether to look again
    /// for `spin`: after spinning on or yielding (true), or not (false:
    /// sleep).
    fn spin_on(&self, spin: &mut Spin, plan: bool) -> bool {
        let cpu = this_cpu();
        self.store(SHM_SERVER_CPU, cpu, Ordering::Relaxed);
        let client = self.load(SHM_CLIENT_CPU, Ordering::Relaxed);
        let mut spinner = self.which(plan).get();
        let step = spinner.step(spin, self.now_ns(), cpu, client);
        self.which(plan).set(spinner);
        match step {
            SpinStep::Spin => true,
            SpinStep::Yield => {
                std::thread::yield_now();
                true
            }
            SpinStep::Sleep => false,
        }
    }

    /// Moves this thread off CPU `cpu` (a [`cpu_word`]), the one its
    /// client was just seen on, if the machine has another (for a batch the
    /// client works beside, [`BATCH_F_STARTED`]): the server
    /// stands in for the card's DMA engine, which never takes the CPU of
    /// the thread it serves. A wake-up puts the server beside its waker,
    /// and the scheduler then keeps a thread that ran a moment ago where it
    /// is; the two then take turns on one CPU and the client's work no
    /// longer overlaps the copies ([`crate::affinity::move_off`]); at
    /// most once per [`KEEP_OFF_EVERY_NS`].
    fn keep_off(&self, cpu: u32) {
        let now = self.now_ns();
        if self
            .moved_ns
            .get()
            .is_some_and(|t| now.saturating_sub(t) < KEEP_OFF_EVERY_NS)
        {
            return;
        }
        self.moved_ns.set(Some(now));
        if let Some(here) = (cpu as usize).checked_sub(1) {
            let _ = crate::affinity::move_off(here);
        }
    }

    /// The arena slice behind client addresses `addr .. addr + len`, if the
    /// range lies inside the arena.
    fn arena(&self, addr: u64, len: usize) -> Option<vm_memory::VolatileSlice<'_, ()>> {
        let off = addr.checked_sub(self.client_base)?;
        if off < SHM_ARENA as u64 || !mic_core::hw::in_bounds(off, len as u64, self.len) {
            return None;
        }
        self.slice(off as usize, len)
    }
}

impl Shm {
    /// Hands the client `ops` in the response slot ([`MSG_PLAN`], under the
    /// request taken last) and waits for its [`OP_PLAN_DONE`]: `Ok` once it
    /// made the copies, a fault if it refused them, answered anything else,
    /// hung up or let [`PLAN_BUDGET_MS`] pass.
    fn plan(&self, sock: BorrowedFd<'_>, ops: &[PlanOp]) -> Result<(), CopyFault> {
        let mut out = [0u8; SHM_RESP_MAX];
        let head = MsgHeader {
            kind: MSG_PLAN,
            result: i32::try_from(ops.len()).map_err(|_| CopyFault)?,
        };
        out[..MsgHeader::SIZE].copy_from_slice(&head.to_bytes());
        let mut at = MsgHeader::SIZE;
        for op in ops {
            out.get_mut(at..at + PlanOp::SIZE)
                .ok_or(CopyFault)?
                .copy_from_slice(&op.to_bytes());
            at += PlanOp::SIZE;
        }
        let slot = self.slice(SHM_RESP, at).ok_or(CopyFault)?;
        vm_memory::Bytes::write_slice(&slot, &out[..at], 0).map_err(|_| CopyFault)?;
        let seq = self.seq.get();
        self.store(SHM_RESP_SEQ, seq, Ordering::SeqCst);
        if self.load(SHM_CLIENT_SLEEPING, Ordering::SeqCst) != 0 {
            kick(&self.kick_client);
        }
        // TIMEOUT: PLAN_BUDGET_MS, for a client that never answers.
        let next = self
            .wait_request(sock, Duration::from_millis(PLAN_BUDGET_MS))
            .ok_or(CopyFault)?;
        self.seq.set(next);
        let mut done = [0u8; ReqHeader::SIZE + 4];
        let req = self.slice(SHM_REQ, done.len()).ok_or(CopyFault)?;
        vm_memory::Bytes::read_slice(&req, &mut done, 0).map_err(|_| CopyFault)?;
        let h = ReqHeader::from_slice(&done).ok_or(CopyFault)?;
        let result = i32::from_le_bytes([done[8], done[9], done[10], done[11]]);
        if h.op == OP_PLAN_DONE && h.len == 4 && result == 0 {
            Ok(())
        } else {
            Err(CopyFault)
        }
    }

    /// Waits for the client's next request in the slot (its answer to a
    /// plan): spins a little ([`PLAN_SPIN_NS`]), then sleeps on the
    /// eventfd; `None` if the client hung up or `budget` passed. Returns
    /// its counter value.
    fn wait_request(&self, sock: BorrowedFd<'_>, budget: Duration) -> Option<u32> {
        let start = Instant::now();
        let old = self.seq.get();
        let mut looks = 0u32;
        let mut spin = Some(self.begin_spin(true));
        loop {
            let seq = self.load(SHM_REQ_SEQ, Ordering::Acquire);
            if seq != old {
                return Some(seq);
            }
            if let Some(s) = &mut spin {
                looks = looks.wrapping_add(1);
                if looks % SPIN_BATCH != 0 {
                    std::hint::spin_loop();
                    continue;
                }
                if self.spin_on(s, true) {
                    continue;
                }
                spin = None;
            }
            let waited = start.elapsed();
            if waited >= budget {
                return None;
            }
            self.store(SHM_SERVER_CPU, 0, Ordering::Relaxed);
            self.store(SHM_SERVER_SLEEPING, 1, Ordering::SeqCst);
            if self.load(SHM_REQ_SEQ, Ordering::SeqCst) == old {
                // Only the end is looked for on the socket: its requests
                // wait for the main loop.
                let mut fds = [
                    PollFd::new(sock, PollFlags::empty()),
                    PollFd::new(self.kick_server.as_fd(), PollFlags::POLLIN),
                ];
                let left = budget.saturating_sub(waited).as_millis() + 1;
                let ms = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
                let _ = poll(&mut fds, ms);
                if fds[0].revents().is_some_and(|r| !r.is_empty()) {
                    self.store(SHM_SERVER_SLEEPING, 0, Ordering::SeqCst);
                    return None;
                }
            }
            self.store(SHM_SERVER_SLEEPING, 0, Ordering::SeqCst);
            self.store(SHM_SERVER_CPU, this_cpu(), Ordering::Relaxed);
            drain(&self.kick_server);
        }
    }
}

/// The CPU this thread runs on, as the region publishes it.
fn this_cpu() -> u32 {
    cpu_word(nix::sched::sched_getcpu().ok())
}

fn kick(fd: &OwnedFd) {
    let _ = nix::unistd::write(fd, &1u64.to_ne_bytes());
}

fn drain(fd: &OwnedFd) {
    let mut b = [0u8; 8];
    let _ = nix::unistd::read(fd, &mut b);
}

struct Conn {
    fd: Arc<OwnedFd>,
    waker: Arc<SocketWaker>,
    file: VdevFile,
    pid: i32,
    /// The client may map the card's memory (root, or our own user).
    may_map_card: bool,
    /// It did: buffers outside the arena are copied by the client.
    aperture: bool,
    mode: u32,
    shm: Option<Shm>,
    /// Reused across requests: no allocation per COPY_DESC.
    scratch: Scratch,
    req: Vec<u8>,
    /// The protocol version HELLO settled on.
    version: u32,
    /// A batch's parsed entries and its reply, reused.
    batch: Vec<(MicCopyDesc, std::ops::Range<usize>)>,
    batch_out: Vec<u8>,
    /// The doorbells the last COPY_DESC or batch asked for, rung once its
    /// answer is out: the client goes on while this thread plays the card.
    bells: super::PendingBells,
}

fn serve_conn(emu: &Arc<Emulator>, id: u32, fd: Arc<OwnedFd>) {
    let creds = getsockopt(&*fd, sockopt::PeerCredentials).ok();
    let pid = creds.map_or(0, |c| c.pid());
    let may_map_card = creds.is_some_and(|c| c.uid() == 0 || c.uid() == nix::unistd::geteuid().as_raw());
    let waker = Arc::new(SocketWaker {
        fd: Arc::clone(&fd),
        state: Mutex::new((false, false)),
        gone: AtomicBool::new(false),
    });
    let Ok(file) = VdevFile::open(emu, id, Box::new(Arc::clone(&waker))) else {
        return;
    };
    let mut conn = Conn {
        fd,
        waker,
        file,
        pid,
        may_map_card,
        aperture: false,
        mode: MODE_INLINE,
        shm: None,
        scratch: Scratch::default(),
        req: Vec::new(),
        version: PROTO_VERSION_MIN,
        batch: Vec::new(),
        batch_out: Vec::new(),
        bells: super::PendingBells::default(),
    };
    let mut buf = vec![0u8; MAX_MSG];
    // After a fast request, the server looks for the next one a while.
    let mut idle: Option<Spin> = None;
    let mut looks = 0u32;
    loop {
        if conn.serve_fast() {
            idle = conn.shm.as_ref().map(|shm| shm.begin_spin(false));
            continue;
        }
        if let Some(s) = &mut idle {
            looks = looks.wrapping_add(1);
            if looks % SPIN_BATCH != 0 {
                std::hint::spin_loop();
                continue;
            }
            if !conn.shm.as_ref().is_some_and(|shm| shm.spin_on(s, false)) {
                idle = None;
                continue;
            }
            // A socket request (a wake ack, a config change) is served
            // between spins too.
            if !socket_readable(conn.fd.as_raw_fd(), 0) {
                continue;
            }
        } else if let Some(shm) = &conn.shm {
            // Sleep: say so, look once more, then wait for either side.
            shm.store(SHM_SERVER_CPU, 0, Ordering::Relaxed);
            shm.store(SHM_SERVER_SLEEPING, 1, Ordering::SeqCst);
            if shm.load(SHM_REQ_SEQ, Ordering::SeqCst) != shm.seq.get() {
                shm.store(SHM_SERVER_SLEEPING, 0, Ordering::SeqCst);
                continue;
            }
            let mut fds = [
                PollFd::new(conn.fd.as_fd(), PollFlags::POLLIN),
                PollFd::new(shm.kick_server.as_fd(), PollFlags::POLLIN),
            ];
            let _ = poll(&mut fds, PollTimeout::NONE);
            let sock = fds[0].revents().is_some_and(|r| !r.is_empty());
            shm.store(SHM_SERVER_SLEEPING, 0, Ordering::SeqCst);
            shm.store(SHM_SERVER_CPU, this_cpu(), Ordering::Relaxed);
            drain(&shm.kick_server);
            if !sock {
                continue;
            }
        }
        let n = match recv_msg(conn.fd.as_raw_fd(), &mut buf) {
            Ok(Some(n)) => n,
            Ok(None) => break,
            Err(Truncated) => {
                conn.reply_err(libc::EINVAL);
                continue;
            }
        };
        let (msg, fds) = (&buf[..n.0], n.1);
        let Some(h) = ReqHeader::from_slice(msg) else {
            conn.reply_err(libc::EINVAL);
            continue;
        };
        // A header claiming more than came (more than MAX_MSG, say) is
        // refused, as one claiming more than the slot is.
        let Some(payload) = msg.get(ReqHeader::SIZE..ReqHeader::SIZE + h.len as usize) else {
            conn.reply_err(libc::EINVAL);
            continue;
        };
        conn.handle(h.op, payload, fds);
        conn.file.ring_here(std::mem::take(&mut conn.bells));
    }
    // close(2): the removal handshake, bounded.
    conn.file.close();
}

/// Whether the socket has a message (or hung up), waiting `ms`.
fn socket_readable(fd: RawFd, ms: u16) -> bool {
    // SAFETY: fd is the connection's socket, open for the call.
    let b = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let mut fds = [PollFd::new(b, PollFlags::POLLIN)];
    poll(&mut fds, PollTimeout::from(ms)).is_ok_and(|n| n > 0)
}

struct Truncated;

/// One message and the descriptors that came with it; `None` at end of file.
fn recv_msg(fd: RawFd, buf: &mut [u8]) -> Result<Option<(usize, Vec<OwnedFd>)>, Truncated> {
    let mut cmsg = nix::cmsg_space!([RawFd; 3]);
    loop {
        let mut iov = [IoSliceMut::new(buf)];
        match nix::sys::socket::recvmsg::<()>(fd, &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC) {
            Ok(m) => {
                let mut fds = Vec::new();
                if let Ok(cmsgs) = m.cmsgs() {
                    for c in cmsgs {
                        if let nix::sys::socket::ControlMessageOwned::ScmRights(raw) = c {
                            for r in raw {
                                // SAFETY: the kernel just installed this
                                // descriptor in our table for us.
                                fds.push(unsafe { OwnedFd::from_raw_fd(r) });
                            }
                        }
                    }
                }
                if m.flags.contains(MsgFlags::MSG_TRUNC) {
                    return Err(Truncated);
                }
                if m.bytes == 0 {
                    return Ok(None);
                }
                return Ok(Some((m.bytes, fds)));
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return Ok(None),
        }
    }
}

impl Conn {
    fn reply(&self, result: i32, parts: &[&[u8]], fd: Option<RawFd>) {
        let h = MsgHeader {
            kind: MSG_REPLY,
            result,
        }
        .to_bytes();
        let mut iov = vec![IoSlice::new(&h)];
        iov.extend(parts.iter().map(|p| IoSlice::new(p)));
        let fds;
        let cmsg: &[ControlMessage<'_>] = match fd {
            Some(f) => {
                fds = [f];
                &[ControlMessage::ScmRights(&fds)]
            }
            None => &[],
        };
        let _ = sendmsg::<()>(self.fd.as_raw_fd(), &iov, cmsg, MsgFlags::MSG_NOSIGNAL, None);
    }

    fn reply_err(&self, errno: Errno) {
        self.reply(-errno, &[], None);
    }

    fn done(&self, r: Result<(), Errno>) {
        match r {
            Ok(()) => self.reply(0, &[], None),
            Err(e) => self.reply_err(e),
        }
    }

    fn handle(&mut self, op: u32, payload: &[u8], fds: Vec<OwnedFd>) {
        match op {
            OP_HELLO => self.hello(payload, fds),
            OP_ACK_WAKE => self.waker.ack(),
            OP_MMAP => self.mmap(payload),
            MIC_VIRTIO_ADD_DEVICE => {
                let r = self.file.add_device(payload);
                self.done(r);
            }
            MIC_VIRTIO_CONFIG_CHANGE => {
                let r = self.file.config_change(payload);
                self.done(r);
            }
            OP_APERTURE if self.version >= PROTO_VERSION_APERTURE => self.aperture(),
            OP_COPY_BATCH if self.version >= PROTO_VERSION_BATCH => {
                let r = self.copy_batch(payload, false);
                match r {
                    Ok(()) => self.reply(0, &[&self.batch_out], None),
                    Err(e) => self.reply_err(e),
                }
            }
            MIC_VIRTIO_COPY_DESC => {
                let (result, cd, tail) = self.copy_desc(payload, false);
                match result {
                    Ok(()) => {
                        let out: &[u8] = if self.mode == MODE_DIRECT {
                            &[]
                        } else {
                            &self.scratch.out
                        };
                        self.reply(0, &[&cd, &tail, out], None);
                    }
                    Err(e) => self.reply_err(e),
                }
            }
            // Any other ioctl: -ENOIOCTLCMD, which user space sees as ENOTTY.
            _ => self.reply_err(libc::ENOTTY),
        }
    }

    fn hello(&mut self, payload: &[u8], fds: Vec<OwnedFd>) {
        let Some(h) = Hello::from_slice(payload) else {
            return self.reply_err(libc::EINVAL);
        };
        // Any client from the oldest version served on; both then speak
        // the lower of the two versions.
        if h.version < PROTO_VERSION_MIN {
            return self.reply_err(libc::EPROTO);
        }
        self.version = h.version.min(PROTO_VERSION);
        let mut byte = [0u8; 1];
        let inline = h.flags & HELLO_FORCE_INLINE != 0;
        self.mode = if !inline && self.pid > 0 && remote_read(self.pid, h.probe, &mut byte) {
            MODE_DIRECT
        } else {
            MODE_INLINE
        };
        if h.flags & HELLO_SHM != 0 {
            match take_shm(&h, fds) {
                Ok(shm) => self.shm = Some(shm),
                Err(e) => return self.reply_err(e),
            }
        }
        let r = HelloReply {
            version: self.version,
            mode: self.mode,
        };
        self.reply(0, &[&r.to_bytes()], None);
    }

    /// OP_APERTURE: the card's memory, read-write, for a client with the
    /// shared region (plans come only through its slot) that may have it;
    /// EPERM otherwise.
    fn aperture(&mut self) {
        if self.shm.is_none() || !self.may_map_card {
            return self.reply_err(libc::EPERM);
        }
        match self.file.card_memory() {
            Ok((fd, size)) => {
                self.aperture = true;
                let r = ApertureReply { size };
                self.reply(0, &[&r.to_bytes()], Some(fd.as_raw_fd()));
            }
            Err(e) => self.reply_err(e),
        }
    }

    fn mmap(&self, payload: &[u8]) {
        let Some(m) = MmapReq::from_slice(payload) else {
            return self.reply_err(libc::EINVAL);
        };
        match self.file.mmap(m.offset, m.len, m.prot & PROT_WRITE != 0) {
            Ok(plan) => {
                let pieces: Vec<u8> = plan
                    .pieces
                    .iter()
                    .flat_map(|&(map_off, file_off, len)| {
                        Piece {
                            map_off,
                            file_off,
                            len: len as u64,
                        }
                        .to_bytes()
                    })
                    .collect();
                self.reply(0, &[&pieces], Some(plan.fd.as_raw_fd()));
            }
            Err(e) => self.reply_err(e),
        }
    }

    /// Serves the request in the shared region's slot, if there is a new
    /// one; returns whether it did.
    fn serve_fast(&mut self) -> bool {
        let Some(shm) = &self.shm else { return false };
        let seq = shm.load(SHM_REQ_SEQ, Ordering::Acquire);
        if seq == shm.seq.get() {
            return false;
        }
        shm.seq.set(seq);
        shm.store(SHM_SERVER_CPU, this_cpu(), Ordering::Relaxed);
        // The header, then only the payload it announces (a COPY_DESC is
        // tens of bytes; the slot is 32 KiB).
        let mut req = std::mem::take(&mut self.req);
        req.clear();
        req.resize(ReqHeader::SIZE, 0);
        let read = |req: &mut [u8], at: usize| {
            shm.slice(SHM_REQ + at, req.len())
                .is_some_and(|s| vm_memory::Bytes::read_slice(&s, req, 0).is_ok())
        };
        let mut ok = read(&mut req, 0);
        let head = ReqHeader::from_slice(&req).filter(|h| h.len as usize <= SHM_REQ_MAX - ReqHeader::SIZE);
        if let Some(h) = head.filter(|_| ok) {
            req.resize(ReqHeader::SIZE + h.len as usize, 0);
            ok = read(&mut req[ReqHeader::SIZE..], ReqHeader::SIZE);
        }
        // The reply: its result, and its payload's parts.
        let mut cd_reply = [0u8; MicCopyDesc::SIZE];
        let result = match head {
            Some(h) if ok && h.op == MIC_VIRTIO_COPY_DESC => {
                let payload = &req[ReqHeader::SIZE..ReqHeader::SIZE + h.len as usize];
                let (r, cd, _) = self.copy_desc(payload, true);
                cd_reply = cd;
                r.map(|()| false)
            }
            Some(h) if ok && h.op == OP_COPY_BATCH && self.version >= PROTO_VERSION_BATCH => {
                let payload = &req[ReqHeader::SIZE..ReqHeader::SIZE + h.len as usize];
                self.copy_batch(payload, true).map(|()| true)
            }
            _ => Err(libc::EINVAL),
        };
        self.req = req;
        let Some(shm) = &mut self.shm else { return false };
        let head = MsgHeader {
            kind: MSG_REPLY,
            result: result.map_or_else(|e| -e, |_| 0),
        }
        .to_bytes();
        let body: &[u8] = match result {
            Ok(true) => &self.batch_out,
            Ok(false) => &cd_reply,
            Err(_) => &[],
        };
        if let Some(s) = shm.slice(SHM_RESP, SHM_RESP_MAX) {
            let _ = vm_memory::Bytes::write_slice(&s, &head, 0);
            if body.len() <= SHM_RESP_MAX - MsgHeader::SIZE {
                let _ = vm_memory::Bytes::write_slice(&s, body, MsgHeader::SIZE);
            }
        }
        // The answer goes under the last request taken: the plans' answers
        // came as requests of their own.
        let seq = shm.seq.get();
        shm.store(SHM_RESP_SEQ, seq, Ordering::SeqCst);
        if shm.load(SHM_CLIENT_SLEEPING, Ordering::SeqCst) != 0 {
            kick(&shm.kick_client);
        }
        self.file.ring_here(std::mem::take(&mut self.bells));
        true
    }

    /// COPY_DESC: the updated `mic_copy_desc` and the reply trailer, or the
    /// errno. In inline mode the bytes for the caller are left in `out`.
    fn copy_desc(
        &mut self,
        payload: &[u8],
        via_slot: bool,
    ) -> (Result<(), Errno>, [u8; MicCopyDesc::SIZE], [u8; CopyReply::SIZE]) {
        let fail = |e| (Err(e), [0; MicCopyDesc::SIZE], [0; CopyReply::SIZE]);
        let (mut cd, iov_end) = match parse_copy(payload) {
            Ok(p) => p,
            Err(e) => return fail(e),
        };
        let bells = self.file.doorbells();
        let peer = peer!(self, via_slot);
        let r = self.scratch.run_copy(
            &self.file,
            &bells,
            peer,
            (0, &cd),
            &payload[MicCopyDesc::SIZE..iov_end],
            Some(&payload[iov_end..]),
        );
        self.bells = bells.into_pending();
        match r {
            Ok((out_len, to_user)) => {
                cd.out_len = out_len;
                let tail = CopyReply {
                    to_user: to_user as u32,
                    flags: 0,
                };
                (Ok(()), cd.to_bytes(), tail.to_bytes())
            }
            Err(e) => fail(e),
        }
    }

    /// OP_COPY_BATCH: the reply payload (a [`BatchReply`] and one
    /// [`BatchResult`] per entry) in `self.batch_out`, or the errno that
    /// refused the whole batch before any entry ran.
    fn copy_batch(&mut self, payload: &[u8], via_slot: bool) -> Result<(), Errno> {
        let head = BatchReq::from_slice(payload).ok_or(libc::EINVAL)?;
        let known = if self.version >= PROTO_VERSION_STARTED {
            BATCH_F_STARTED
        } else {
            0
        };
        if head.count > BATCH_MAX || head.flags & !known != 0 {
            return Err(libc::EINVAL);
        }
        if head.flags & BATCH_F_STARTED != 0 && via_slot {
            if let Some(shm) = &self.shm {
                let cpu = this_cpu();
                if cpu != 0 && shm.load(SHM_CLIENT_CPU, Ordering::Relaxed) == cpu {
                    shm.keep_off(cpu);
                }
            }
        }
        // Every entry parses, and every buffer is reachable, before any runs.
        let mut entries = std::mem::take(&mut self.batch);
        entries.clear();
        let mut at = BatchReq::SIZE;
        for _ in 0..head.count {
            let rest = payload.get(at..).ok_or(libc::EINVAL)?;
            let (cd, iov_end) = parse_copy(rest).map_err(|_| libc::EINVAL)?;
            entries.push((cd, at + MicCopyDesc::SIZE..at + iov_end));
            at += iov_end;
        }
        let reachable = self.mode == MODE_DIRECT
            || (via_slot && self.aperture)
            || entries.iter().all(|(_, r)| {
                self.shm.as_ref().is_some_and(|s| {
                    payload[r.clone()]
                        .chunks_exact(Iovec::SIZE)
                        .filter_map(Iovec::from_slice)
                        .all(|v| s.arena(v.base, v.len as usize).is_some())
                })
            });
        if at != payload.len() || !reachable {
            self.batch = entries;
            return Err(libc::EINVAL);
        }
        let mut results = [BatchResult::default(); BATCH_MAX as usize];
        let mut done = 0;
        let bells = self.file.doorbells();
        let peer = peer!(self, via_slot);
        for (i, (cd, r)) in entries.iter().enumerate() {
            done = i + 1;
            // i < BATCH_MAX, which fits a plan's entry field.
            let entry = (i as u16, cd);
            match self
                .scratch
                .run_copy(&self.file, &bells, peer, entry, &payload[r.clone()], None)
            {
                Ok((0, _)) => break,
                Ok((n, _)) => results[i].out_len = n,
                Err(e) => {
                    results[i].result = -e;
                    break;
                }
            }
        }
        self.bells = bells.into_pending();
        self.batch = entries;
        self.batch_out.clear();
        self.batch_out.extend_from_slice(
            &BatchReply {
                done: done as u32,
                flags: 0,
            }
            .to_bytes(),
        );
        for r in &results[..head.count as usize] {
            self.batch_out.extend_from_slice(&r.to_bytes());
        }
        Ok(())
    }
}

/// How a connection's client is reached for a request that came through
/// the slot (`via_slot`) or the socket (a macro: it borrows the fields,
/// not the whole connection).
macro_rules! peer {
    ($conn:expr, $via_slot:expr) => {
        Peer {
            mode: $conn.mode,
            pid: $conn.pid,
            shm: $conn.shm.as_ref(),
            plan: $via_slot && $conn.aperture,
            sock: $conn.fd.as_fd(),
        }
    };
}
use peer;

/// Who the caller of a COPY_DESC is, and how its buffers are reached.
#[derive(Clone, Copy)]
struct Peer<'a> {
    mode: u32,
    pid: i32,
    shm: Option<&'a Shm>,
    /// The request came through the slot from a client holding the
    /// aperture: it copies what lies outside the arena itself, by plan.
    plan: bool,
    /// The connection's socket (a plan's wait watches it for the end).
    sock: BorrowedFd<'a>,
}

/// What one COPY_DESC needs besides the device, reused across requests.
#[derive(Default)]
struct Scratch {
    ops: Vec<Op>,
    out: Vec<u8>,
    iovs: Vec<Iovec>,
    plan: Vec<PlanOp>,
}

impl Scratch {
    /// One COPY_DESC (`cd`, entry `entry` of its batch) with its iovecs
    /// (`raw`), its doorbell left in `bells`, for the client `peer`:
    /// (out_len, bytes for the caller in `out`). `inline` is the caller's
    /// data when the message carries it (`None` in a batch: its buffers
    /// must be reachable directly).
    fn run_copy(
        &mut self,
        file: &VdevFile,
        bells: &super::Doorbells<'_>,
        peer: Peer<'_>,
        (entry, cd): (u16, &MicCopyDesc),
        raw: &[u8],
        inline: Option<&[u8]>,
    ) -> Result<(u32, usize), Errno> {
        self.iovs.clear();
        self.iovs
            .extend(raw.chunks_exact(Iovec::SIZE).filter_map(Iovec::from_slice));
        let total = self
            .iovs
            .iter()
            .try_fold(0u64, |a, v| a.checked_add(v.len))
            .ok_or(libc::EINVAL)?;
        self.ops.clear();
        let gddr = &file.card().gddr;
        let update = cd.update_used != 0;
        let arena_only = peer.shm.is_some_and(|s| {
            self.iovs
                .iter()
                .all(|v| s.arena(v.base, v.len as usize).is_some())
        });
        if peer.plan || peer.mode == MODE_DIRECT || arena_only {
            self.plan.clear();
            let mut user = RemoteBuffers {
                peer,
                entry,
                iovs: &self.iovs,
                total,
                ops: &mut self.ops,
                plan: &mut self.plan,
                gddr,
            };
            return file
                .copy_desc_deferred(bells, cd.vr_idx, &mut user, update)
                .map(|c| (c.out_len, 0));
        }
        let data = inline.ok_or(libc::EINVAL)?;
        if total > MAX_INLINE as u64 || data.len() as u64 != total {
            return Err(libc::EINVAL);
        }
        self.out.clear();
        let mut user = InlineBuffers {
            data,
            out: &mut self.out,
            gddr,
        };
        let c = file.copy_desc_deferred(bells, cd.vr_idx, &mut user, update)?;
        Ok((c.out_len, self.out.len()))
    }
}

/// A COPY_DESC's argument and where its iovecs end in `payload` (the
/// original's errno: EFAULT for a short argument or iovec array, EINVAL for
/// more iovecs than the driver takes).
fn parse_copy(payload: &[u8]) -> Result<(MicCopyDesc, usize), Errno> {
    let cd = MicCopyDesc::from_slice(payload).ok_or(libc::EFAULT)?;
    if cd.iovcnt > MAX_IOVECS {
        return Err(libc::EINVAL);
    }
    let iov_end = MicCopyDesc::SIZE + cd.iovcnt as usize * Iovec::SIZE;
    if payload.len() < iov_end {
        return Err(libc::EFAULT);
    }
    Ok((cd, iov_end))
}

/// Maps the client's shared region from the HELLO's descriptors.
fn take_shm(h: &Hello, fds: Vec<OwnedFd>) -> Result<Shm, Errno> {
    let mut fds = fds.into_iter();
    let (Some(mem), Some(kick_server), Some(kick_client)) = (fds.next(), fds.next(), fds.next()) else {
        return Err(libc::EINVAL);
    };
    let file = std::fs::File::from(mem);
    let size = file.metadata().map_err(|_| libc::EINVAL)?.len();
    if h.shm_len < SHM_ARENA as u64 || h.shm_len > SHM_MAX || size < h.shm_len {
        return Err(libc::EINVAL);
    }
    let map = vm_memory::MmapRegion::from_file(vm_memory::FileOffset::new(file, 0), h.shm_len as usize)
        .map_err(|_| libc::ENOMEM)?;
    let shm = Shm {
        map,
        client_base: h.shm_base,
        len: h.shm_len,
        kick_server,
        kick_client,
        seq: std::cell::Cell::new(0),
        spinner: std::cell::Cell::new(Spinner::yielding(SERVER_SPIN_NS)),
        plan_spinner: std::cell::Cell::new(Spinner::new(PLAN_SPIN_NS)),
        moved_ns: std::cell::Cell::new(None),
        epoch: Instant::now(),
    };
    shm.seq.set(shm.load(SHM_REQ_SEQ, Ordering::Acquire));
    Ok(shm)
}

/// One deferred copy of a direct-mode COPY_DESC.
#[derive(Debug, Clone, Copy)]
struct Op {
    to_user: bool,
    off: u64,
    card_addr: u64,
    len: u32,
}

/// The client's iovecs in its own address space, reached when the
/// walker's plan is complete: in the arena with a plain copy, else by the
/// client itself (a plan) or with `process_vm_readv/writev`.
struct RemoteBuffers<'a> {
    peer: Peer<'a>,
    /// Which COPY_DESC of its batch this is.
    entry: u16,
    iovs: &'a [Iovec],
    total: u64,
    ops: &'a mut Vec<Op>,
    plan: &'a mut Vec<PlanOp>,
    gddr: &'a SharedMem,
}

impl UserBuffers for RemoteBuffers<'_> {
    fn capacity(&self) -> u64 {
        self.total
    }
    fn card_to_user(&mut self, off: u64, card_addr: u64, len: u32) -> Result<(), CopyFault> {
        self.ops.push(Op {
            to_user: true,
            off,
            card_addr,
            len,
        });
        Ok(())
    }
    fn user_to_card(&mut self, off: u64, card_addr: u64, len: u32) -> Result<(), CopyFault> {
        self.ops.push(Op {
            to_user: false,
            off,
            card_addr,
            len,
        });
        Ok(())
    }
    fn finish(&mut self) -> Result<(), CopyFault> {
        let mut pieces = Vec::new();
        for dir in [true, false] {
            let mut local = Vec::new();
            let mut remote = Vec::new();
            let mut expect = 0usize;
            for op in self.ops.iter().filter(|o| o.to_user == dir) {
                pieces.clear();
                split_user(self.iovs, op.off, u64::from(op.len), &mut pieces)?;
                let (mut card_addr, mut user_off) = (op.card_addr, op.off);
                for p in &pieces {
                    let n = p.iov_len;
                    if let Some(user) = self.peer.shm.and_then(|s| s.arena(p.iov_base as u64, n)) {
                        // The caller's buffer is in the shared arena: one
                        // plain copy between the two mappings.
                        let card = self.gddr.volatile(card_addr, n).ok_or(CopyFault)?;
                        if dir {
                            card.copy_to_volatile_slice(user);
                        } else {
                            user.copy_to_volatile_slice(card);
                        }
                    } else if self.peer.plan {
                        // The client copies, where we say: only inside
                        // card memory.
                        self.gddr.volatile(card_addr, n).ok_or(CopyFault)?;
                        self.plan.push(PlanOp {
                            card_addr,
                            user_off,
                            len: u32::try_from(n).map_err(|_| CopyFault)?,
                            entry: self.entry,
                            to_user: u16::from(dir),
                        });
                    } else {
                        let ptr = self.gddr.host_ptr(card_addr, n).ok_or(CopyFault)?;
                        local.push(libc::iovec {
                            iov_base: ptr.cast(),
                            iov_len: n,
                        });
                        remote.push(*p);
                        expect += n;
                    }
                    card_addr += n as u64;
                    user_off += n as u64;
                }
            }
            if expect > 0 && vm_copy(self.peer.pid, dir, &local, &remote) != expect {
                return Err(CopyFault);
            }
        }
        if let Some(shm) = self.peer.shm.filter(|_| self.peer.plan) {
            for part in self.plan.chunks(PLAN_MAX) {
                shm.plan(self.peer.sock, part)?;
            }
        }
        Ok(())
    }
}

/// The part of the client's iovecs covering `off .. off + len` of their
/// concatenation, appended to `out`.
fn split_user(
    iovs: &[Iovec],
    mut off: u64,
    mut len: u64,
    out: &mut Vec<libc::iovec>,
) -> Result<(), CopyFault> {
    for v in iovs {
        if len == 0 {
            break;
        }
        if off >= v.len {
            off -= v.len;
            continue;
        }
        let n = (v.len - off).min(len);
        out.push(libc::iovec {
            iov_base: (v.base.checked_add(off).ok_or(CopyFault)?) as usize as *mut libc::c_void,
            iov_len: n as usize,
        });
        len -= n;
        off = 0;
    }
    if len == 0 { Ok(()) } else { Err(CopyFault) }
}

/// Moves bytes between our mapping (`local`) and the client (`remote`):
/// into the client when `to_user`. Returns the bytes moved (short or 0 on
/// any fault), in as many calls as the kernel's iovec limit needs.
fn vm_copy(pid: i32, to_user: bool, local: &[libc::iovec], remote: &[libc::iovec]) -> usize {
    const IOV_MAX: usize = 1024;
    let want: usize = local.iter().map(|v| v.iov_len).sum();
    if local.len() <= IOV_MAX && remote.len() <= IOV_MAX {
        return vm_call(pid, to_user, local, remote);
    }
    // Rare: more pieces than one call takes. Go piece by piece on the
    // local side, splitting the remote list to match.
    let mut done = 0;
    let mut r = 0;
    let mut r_off = 0;
    for l in local {
        let mut need = l.iov_len;
        let mut part = Vec::new();
        while need > 0 && r < remote.len() {
            let avail = remote[r].iov_len - r_off;
            let n = avail.min(need);
            part.push(libc::iovec {
                iov_base: (remote[r].iov_base as usize + r_off) as *mut libc::c_void,
                iov_len: n,
            });
            need -= n;
            r_off += n;
            if r_off == remote[r].iov_len {
                r += 1;
                r_off = 0;
            }
        }
        let moved = vm_call(pid, to_user, std::slice::from_ref(l), &part);
        done += moved;
        if moved != l.iov_len {
            break;
        }
    }
    done.min(want)
}

fn vm_call(pid: i32, to_user: bool, local: &[libc::iovec], remote: &[libc::iovec]) -> usize {
    // SAFETY: every local iovec points into the card's GDDR mapping, which
    // `SharedMem::host_ptr` bounds-checked and which outlives the call; the
    // remote iovecs are addresses in another process, which the kernel
    // checks (a bad one fails with EFAULT, it cannot touch our memory). The
    // counts are the slices' lengths.
    let n = unsafe {
        if to_user {
            libc::process_vm_writev(
                pid,
                local.as_ptr(),
                local.len() as libc::c_ulong,
                remote.as_ptr(),
                remote.len() as libc::c_ulong,
                0,
            )
        } else {
            libc::process_vm_readv(
                pid,
                local.as_ptr(),
                local.len() as libc::c_ulong,
                remote.as_ptr(),
                remote.len() as libc::c_ulong,
                0,
            )
        }
    };
    usize::try_from(n).unwrap_or(0)
}

/// Whether one byte at `addr` of process `pid` can be read (direct mode).
fn remote_read(pid: i32, addr: u64, byte: &mut [u8; 1]) -> bool {
    let local = [libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    }];
    let remote = [libc::iovec {
        iov_base: addr as usize as *mut libc::c_void,
        iov_len: 1,
    }];
    // SAFETY: the local iovec is our 1-byte buffer, alive for the call; the
    // remote one is checked by the kernel.
    let n = unsafe { libc::process_vm_readv(pid, local.as_ptr(), 1, remote.as_ptr(), 1, 0) };
    n == 1
}

/// Inline mode: the caller's bytes came with the request; what goes to the
/// caller goes back in the reply.
struct InlineBuffers<'a> {
    data: &'a [u8],
    out: &'a mut Vec<u8>,
    gddr: &'a SharedMem,
}

impl UserBuffers for InlineBuffers<'_> {
    fn capacity(&self) -> u64 {
        self.data.len() as u64
    }
    fn card_to_user(&mut self, off: u64, card_addr: u64, len: u32) -> Result<(), CopyFault> {
        let end = off as usize + len as usize;
        if self.out.len() < end {
            self.out.resize(end, 0);
        }
        mic_core::hw::Memory::read(self.gddr, card_addr, &mut self.out[off as usize..end])
            .map_err(|_| CopyFault)
    }
    fn user_to_card(&mut self, off: u64, card_addr: u64, len: u32) -> Result<(), CopyFault> {
        let src = self
            .data
            .get(off as usize..off as usize + len as usize)
            .ok_or(CopyFault)?;
        mic_core::hw::Memory::write(self.gddr, card_addr, src).map_err(|_| CopyFault)
    }
}
