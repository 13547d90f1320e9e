//! The client half of micemu's COPY_DESC fast path: a shared region (a
//! memfd both processes map: control words, a request and a response slot,
//! an arena of I/O buffers) and two eventfds to wake the side that sleeps.
//! See `mic_core::abi::emu_dev` for the protocol.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use std::io::IoSliceMut;

use mic_core::abi::emu_dev::{
    MSG_PLAN, MsgHeader, OP_PLAN_DONE, PLAN_MAX, PlanOp, ReqHeader, SHM_ARENA, SHM_CLIENT_CPU,
    SHM_CLIENT_SLEEPING, SHM_REQ, SHM_REQ_MAX, SHM_REQ_SEQ, SHM_RESP, SHM_RESP_MAX, SHM_RESP_SEQ,
    SHM_SERVER_CPU, SHM_SERVER_SLEEPING, SpinStep, Spinner, cpu_word,
};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::memfd::{MFdFlags, memfd_create};

/// Default size of the shared region (control slots and a 16 MiB arena:
/// room for a batch of the largest frames each way; only the pages
/// buffers touch are ever backed).
pub(super) const DEFAULT_LEN: usize = SHM_ARENA + (16 << 20);

/// How long the client spins for an answer before it sleeps (a batch of
/// 64 KiB chains takes tens of µs), in ns.
const CLIENT_SPIN_NS: u64 = 200_000;

/// Looks at the answer counter (one load each) between two asks what to
/// do next ([`Spin`]: a look at the clock and at the CPUs).
const SPIN_BATCH: u32 = 32;

/// The CPU this thread runs on, as the region publishes it.
fn this_cpu() -> u32 {
    cpu_word(nix::sched::sched_getcpu().ok())
}

/// A read-write shared mapping of the region.
#[derive(Debug)]
pub(super) struct Region {
    // INVARIANT: `ptr .. ptr + len` is a live PROT_READ|PROT_WRITE shared
    // mapping owned by this value, unmapped only by its Drop; its first
    // SHM_ARENA bytes are the control area, the rest the arena.
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: shared memory, accessed through atomics, volatile copies, and
// disjoint `IoBuf` ranges; nothing in it is tied to a thread.
unsafe impl Send for Region {}
// SAFETY: as above.
unsafe impl Sync for Region {}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: the range this value mapped (invariant).
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

impl Region {
    fn word(&self, off: usize) -> &AtomicU32 {
        debug_assert!(off % 64 == 0 && off + 4 <= SHM_ARENA);
        // SAFETY: `off` is one of the control words: aligned (a multiple of
        // 64 from a page-aligned start) and inside the live mapping; atomics
        // are how both processes touch it.
        #[allow(clippy::cast_ptr_alignment)]
        unsafe {
            &*self.ptr.as_ptr().add(off).cast::<AtomicU32>()
        }
    }

    fn write(&self, off: usize, data: &[u8]) {
        assert!(off + data.len() <= SHM_ARENA);
        // SAFETY: inside the control area of the live mapping (checked);
        // the server reads the slot only after the Release store of the
        // request counter that follows.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.as_ptr().add(off), data.len()) }
    }

    fn read(&self, off: usize, buf: &mut [u8]) {
        assert!(off + buf.len() <= SHM_ARENA);
        // SAFETY: inside the control area (checked), read after the Acquire
        // load of the answer counter, when the server no longer writes it.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.as_ptr().add(off), buf.as_mut_ptr(), buf.len()) }
    }

    /// The client's address of byte 0 (what the server translates).
    pub(super) fn base(&self) -> u64 {
        self.ptr.as_ptr() as u64
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }
}

/// The fast path of one connection.
#[derive(Debug)]
pub(super) struct Shm {
    region: Arc<Region>,
    memfd: OwnedFd,
    kick_server: EventFd,
    kick_client: EventFd,
    seq: u32,
    /// Next free arena offset (a bump allocator: buffers live as long as
    /// the region).
    next: usize,
    /// How this side waits, and the clock it waits by.
    spinner: Spinner,
    epoch: Instant,
}

impl Shm {
    pub(super) fn new(len: usize) -> std::io::Result<Self> {
        let memfd = memfd_create("micemu-vdev-shm", MFdFlags::MFD_CLOEXEC)?;
        let file = std::fs::File::from(memfd);
        file.set_len(len as u64)?;
        // SAFETY: a fresh shared mapping of the memfd we just sized, chosen
        // by the kernel; the result is checked.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                std::os::fd::AsRawFd::as_raw_fd(&file),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let region = Region {
            ptr: NonNull::new(p.cast()).ok_or_else(std::io::Error::last_os_error)?,
            len,
        };
        Ok(Self {
            region: Arc::new(region),
            memfd: OwnedFd::from(file),
            kick_server: EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?,
            kick_client: EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?,
            seq: 0,
            next: SHM_ARENA,
            spinner: Spinner::new(CLIENT_SPIN_NS),
            epoch: Instant::now(),
        })
    }

    /// The descriptors the HELLO passes: region, server kick, client kick.
    pub(super) fn fds(&self) -> [BorrowedFd<'_>; 3] {
        [
            self.memfd.as_fd(),
            self.kick_server.as_fd(),
            self.kick_client.as_fd(),
        ]
    }

    pub(super) fn region(&self) -> &Region {
        &self.region
    }

    /// Whether a request of `len` bytes (header included) fits the slot;
    /// [`Shm::call`] takes only those.
    pub(super) fn fits(len: usize) -> bool {
        len <= SHM_REQ_MAX
    }

    /// Whether `addr .. addr + len` lies in the arena.
    pub(super) fn in_arena(&self, addr: u64, len: usize) -> bool {
        let base = self.region.base() + SHM_ARENA as u64;
        addr >= base
            && addr
                .checked_add(len as u64)
                .is_some_and(|e| e <= self.region.base() + self.region.len() as u64)
    }

    /// A buffer of `len` bytes in the arena, if room is left.
    pub(super) fn alloc(&mut self, len: usize) -> Option<IoBuf> {
        let off = self.next.next_multiple_of(64);
        if off.checked_add(len)? > self.region.len() {
            return None;
        }
        self.next = off + len;
        Some(IoBuf(Buf::Shared {
            region: Arc::clone(&self.region),
            off,
            len,
        }))
    }

    /// Sends one request through the slot and waits for its answer, which
    /// is copied into `reply` (header included). `sock` is watched while
    /// sleeping: `on_msg` is called when it is readable (wake-ups, the end),
    /// and an error from it ends the wait. A plan the server sends meanwhile
    /// ([`MSG_PLAN`]) is carried out by `on_plan` (its raw [`PlanOp`]s;
    /// false refuses it) and answered.
    pub(super) fn call<E>(
        &mut self,
        request: &[&[u8]],
        reply: &mut [u8],
        sock: RawFd,
        on_msg: impl FnMut() -> Result<(), E>,
        on_plan: impl FnMut(&[u8]) -> bool,
    ) -> Result<(), E> {
        self.post(request);
        self.finish(reply, sock, on_msg, on_plan)
    }

    /// Hands a request to the server without waiting for its answer (the
    /// first half of [`Shm::call`]; [`Shm::finish`] is the second, and no
    /// other request may be posted between them).
    pub(super) fn start(&mut self, request: &[&[u8]]) {
        self.post(request);
    }

    /// Waits for the answer to the request posted last, as [`Shm::call`].
    pub(super) fn finish<E>(
        &mut self,
        reply: &mut [u8],
        sock: RawFd,
        mut on_msg: impl FnMut() -> Result<(), E>,
        mut on_plan: impl FnMut(&[u8]) -> bool,
    ) -> Result<(), E> {
        loop {
            self.wait_answer(sock, &mut on_msg)?;
            let mut head = [0u8; MsgHeader::SIZE];
            self.region.read(SHM_RESP, &mut head);
            let h = MsgHeader::from_bytes(&head);
            if h.kind != MSG_PLAN {
                break;
            }
            let ok = usize::try_from(h.result)
                .ok()
                .filter(|&n| n <= PLAN_MAX)
                .is_some_and(|n| {
                    let mut ops = [0u8; PLAN_MAX * PlanOp::SIZE];
                    let ops = &mut ops[..n * PlanOp::SIZE];
                    self.region.read(SHM_RESP + MsgHeader::SIZE, ops);
                    on_plan(ops)
                });
            let done = ReqHeader {
                op: OP_PLAN_DONE,
                len: 4,
            };
            let result: i32 = if ok { 0 } else { -libc::EFAULT };
            self.post(&[&done.to_bytes(), &result.to_le_bytes()]);
        }
        let n = reply.len().min(SHM_RESP_MAX);
        self.region.read(SHM_RESP, &mut reply[..n]);
        // Back to the caller, on this CPU for now.
        self.publish_cpu();
        Ok(())
    }

    /// Says which CPU this thread runs on (after a wake-up, say).
    pub(super) fn publish_cpu(&self) {
        self.region
            .word(SHM_CLIENT_CPU)
            .store(this_cpu(), Ordering::Relaxed);
    }

    /// Writes a request into the slot and hands it to the server.
    fn post(&mut self, request: &[&[u8]]) {
        let mut at = SHM_REQ;
        for part in request {
            assert!(
                at + part.len() <= SHM_REQ + SHM_REQ_MAX,
                "request larger than the slot"
            );
            self.region.write(at, part);
            at += part.len();
        }
        self.seq = self.seq.wrapping_add(1);
        let r = &self.region;
        r.word(SHM_CLIENT_CPU).store(this_cpu(), Ordering::Relaxed);
        r.word(SHM_REQ_SEQ).store(self.seq, Ordering::SeqCst);
        if r.word(SHM_SERVER_SLEEPING).load(Ordering::SeqCst) != 0 {
            let _ = self.kick_server.write(1);
        }
    }

    /// Waits until the server answered the last request posted.
    fn wait_answer<E>(&mut self, sock: RawFd, on_msg: &mut impl FnMut() -> Result<(), E>) -> Result<(), E> {
        let r = &self.region;
        let now = |epoch: Instant| u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let mut spin = self.spinner.begin(now(self.epoch));
        let mut spinning = true;
        let mut looks = 0u32;
        loop {
            if r.word(SHM_RESP_SEQ).load(Ordering::Acquire) == self.seq {
                break;
            }
            if spinning {
                // The answer is one load away; the clock and the CPUs are
                // read every few looks only.
                looks = looks.wrapping_add(1);
                if looks % SPIN_BATCH != 0 {
                    std::hint::spin_loop();
                    continue;
                }
                let cpu = this_cpu();
                r.word(SHM_CLIENT_CPU).store(cpu, Ordering::Relaxed);
                let server = r.word(SHM_SERVER_CPU).load(Ordering::Relaxed);
                match self.spinner.step(&mut spin, now(self.epoch), cpu, server) {
                    SpinStep::Spin => continue,
                    SpinStep::Yield => {
                        std::thread::yield_now();
                        continue;
                    }
                    SpinStep::Sleep => spinning = false,
                }
            }
            r.word(SHM_CLIENT_CPU).store(0, Ordering::Relaxed);
            r.word(SHM_CLIENT_SLEEPING).store(1, Ordering::SeqCst);
            if r.word(SHM_RESP_SEQ).load(Ordering::SeqCst) == self.seq {
                r.word(SHM_CLIENT_SLEEPING).store(0, Ordering::SeqCst);
                break;
            }
            let mut fds = [
                libc::pollfd {
                    fd: std::os::fd::AsRawFd::as_raw_fd(&self.kick_client.as_fd()),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: sock,
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // TIMEOUT: none needed: the server answers, or its end makes
            // the socket readable (EOF), which `on_msg` turns into an error.
            // SAFETY: two pollfds of descriptors we hold, for the call.
            unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
            r.word(SHM_CLIENT_SLEEPING).store(0, Ordering::SeqCst);
            r.word(SHM_CLIENT_CPU).store(this_cpu(), Ordering::Relaxed);
            let _ = self.kick_client.read();
            if fds[1].revents != 0 {
                on_msg()?;
            }
        }
        Ok(())
    }
}

/// The card's memory, mapped read-write (micemu's `OP_APERTURE`): where a
/// plan's copies go to and come from.
#[derive(Debug)]
pub(super) struct Aperture {
    // INVARIANT: `ptr .. ptr + len` is a live PROT_READ|PROT_WRITE shared
    // mapping owned by this value, unmapped only by its Drop; the card (in
    // the emulator) writes it concurrently, so it is only ever copied to
    // and from through raw pointers, never referenced.
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: shared memory touched only by raw copies; nothing in it is tied
// to a thread.
unsafe impl Send for Aperture {}

impl Drop for Aperture {
    fn drop(&mut self) {
        // SAFETY: the range this value mapped (invariant).
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

impl Aperture {
    /// Maps `len` bytes of `fd` shared, read-write.
    pub(super) fn map(fd: BorrowedFd<'_>, len: usize) -> std::io::Result<Self> {
        // SAFETY: a fresh mapping chosen by the kernel (no address hint), of
        // a descriptor we hold open for the call; the result is checked.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                std::os::fd::AsRawFd::as_raw_fd(&fd),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Self {
            ptr: NonNull::new(p.cast()).ok_or_else(std::io::Error::last_os_error)?,
            len,
        })
    }

    /// Carries out a plan's raw [`PlanOp`]s on `bufs` (entry `i` of a batch
    /// is `bufs[i]`; a lone COPY_DESC's entry 0 is all of them). Every
    /// operation is checked first, against the aperture and the buffers of
    /// its entry: false (nothing copied) if one does not fit.
    pub(super) fn run_plan(&self, ops: &[u8], bufs: &mut [IoSliceMut<'_>], batch: bool) -> bool {
        let ops = || ops.chunks_exact(PlanOp::SIZE).filter_map(PlanOp::from_slice);
        let entry = |bufs: &[IoSliceMut<'_>], e: u16| -> Option<(usize, usize)> {
            let e = usize::from(e);
            if batch {
                (e < bufs.len()).then_some((e, e + 1))
            } else {
                (e == 0).then_some((0, bufs.len()))
            }
        };
        let fits = ops().all(|op| {
            let room =
                entry(bufs, op.entry).map_or(0, |(a, b)| bufs[a..b].iter().map(|b| b.len() as u64).sum());
            let user_ok = op
                .user_off
                .checked_add(u64::from(op.len))
                .is_some_and(|e| e <= room);
            let card_ok = mic_core::hw::in_bounds(op.card_addr, u64::from(op.len), self.len as u64);
            op.to_user <= 1 && user_ok && card_ok
        });
        if !fits {
            return false;
        }
        for op in ops() {
            let Some((a, b)) = entry(bufs, op.entry) else {
                return false;
            };
            // Checked above: inside the aperture; the card address fits usize.
            let mut card = op.card_addr as usize;
            let (mut skip, mut left) = (op.user_off as usize, op.len as usize);
            for buf in &mut bufs[a..b] {
                if left == 0 {
                    break;
                }
                if skip >= buf.len() {
                    skip -= buf.len();
                    continue;
                }
                let n = (buf.len() - skip).min(left);
                let user = buf[skip..skip + n].as_mut_ptr();
                // SAFETY: `card .. card + n` lies inside the live mapping
                // (checked against its length above) and `user .. user + n`
                // inside the caller's buffer we hold `&mut` of; one is the
                // card's memory, the other not, so they do not overlap.
                unsafe {
                    let at = self.ptr.as_ptr().add(card);
                    if op.to_user == 1 {
                        std::ptr::copy_nonoverlapping(at, user, n);
                    } else {
                        std::ptr::copy_nonoverlapping(user, at, n);
                    }
                }
                card += n;
                left -= n;
                skip = 0;
            }
        }
        true
    }
}

/// An I/O buffer for [`super::VirtioFile::copy_desc`]: in the fast path's
/// shared arena (micemu copies into it with one plain memcpy), or on the
/// heap.
#[derive(Debug)]
pub struct IoBuf(Buf);

#[derive(Debug)]
enum Buf {
    Shared {
        region: Arc<Region>,
        off: usize,
        len: usize,
    },
    Heap(Box<[u8]>),
}

impl IoBuf {
    pub(super) fn heap(len: usize) -> Self {
        IoBuf(Buf::Heap(vec![0; len].into_boxed_slice()))
    }

    /// Whether the buffer is in the arena shared with the emulator.
    #[must_use]
    pub fn is_shared(&self) -> bool {
        matches!(self.0, Buf::Shared { .. })
    }
}

impl From<Vec<u8>> for IoBuf {
    fn from(v: Vec<u8>) -> Self {
        IoBuf(Buf::Heap(v.into_boxed_slice()))
    }
}

impl std::ops::Deref for IoBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &self.0 {
            // SAFETY: `off .. off + len` lies in the live region (the Arc
            // keeps it) and belongs to this buffer alone (the arena never
            // hands a range out twice); the emulator writes it only during a
            // COPY_DESC that names it, which needs `&mut` of this buffer.
            Buf::Shared { region, off, len } => unsafe {
                std::slice::from_raw_parts(region.ptr.as_ptr().add(*off), *len)
            },
            Buf::Heap(b) => b,
        }
    }
}

impl std::ops::DerefMut for IoBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        match &mut self.0 {
            // SAFETY: as in `deref`, and `&mut self` makes this the only
            // reference to the range.
            Buf::Shared { region, off, len } => unsafe {
                std::slice::from_raw_parts_mut(region.ptr.as_ptr().add(*off), *len)
            },
            Buf::Heap(b) => b,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(card_addr: u64, user_off: u64, len: u32, entry: u16, to_user: u16) -> [u8; PlanOp::SIZE] {
        PlanOp {
            card_addr,
            user_off,
            len,
            entry,
            to_user,
        }
        .to_bytes()
    }

    #[test]
    fn a_plan_is_checked_whole_before_anything_is_copied() {
        let memfd = memfd_create("aperture-test", MFdFlags::MFD_CLOEXEC).unwrap();
        let file = std::fs::File::from(memfd);
        file.set_len(8192).unwrap();
        let ap = Aperture::map(file.as_fd(), 8192).unwrap();
        let mut card = [0u8; 8192];
        card.iter_mut().enumerate().for_each(|(i, b)| *b = i as u8);
        assert!(ap.run_plan(&[], &mut [], false), "an empty plan");
        // Seed the card memory through a plan (caller → card).
        let mut src = card.to_vec();
        let mut io = [IoSliceMut::new(&mut src)];
        assert!(ap.run_plan(&op(0, 0, 8192, 0, 0), &mut io, false));
        // Card → caller across two buffers, at an offset.
        let (mut a, mut b) = ([0u8; 4], [0u8; 4]);
        let mut io = [IoSliceMut::new(&mut a), IoSliceMut::new(&mut b)];
        assert!(ap.run_plan(&op(100, 2, 5, 0, 1), &mut io, false));
        assert_eq!((a, b), ([0, 0, 100, 101], [102, 103, 104, 0]));
        // Each of these refuses the whole plan, the good first op included.
        for (what, bad) in [
            ("past the card's memory", op(8190, 0, 4, 0, 1)),
            ("an address that wraps", op(u64::MAX - 1, 0, 4, 0, 1)),
            ("past the buffers", op(0, 6, 4, 0, 1)),
            ("an offset that wraps", op(0, u64::MAX, 2, 0, 1)),
            ("an entry of a batch that is not there", op(0, 0, 1, 2, 1)),
            ("a direction that is neither", op(0, 0, 1, 0, 2)),
        ] {
            let (mut a, mut b) = ([0u8; 4], [0u8; 4]);
            let mut io = [IoSliceMut::new(&mut a), IoSliceMut::new(&mut b)];
            let plan = [op(0, 0, 1, 0, 1), bad].concat();
            assert!(!ap.run_plan(&plan, &mut io, true), "{what}");
            assert_eq!((a, b), ([0; 4], [0; 4]), "{what}: nothing copied");
        }
        // In a batch, entry 1 is the second buffer alone.
        let (mut a, mut b) = ([0u8; 4], [0u8; 4]);
        let mut io = [IoSliceMut::new(&mut a), IoSliceMut::new(&mut b)];
        assert!(!ap.run_plan(&op(0, 2, 4, 1, 1), &mut io, true), "past entry 1");
        assert!(ap.run_plan(&op(7, 0, 4, 1, 1), &mut io, true));
        assert_eq!((a, b), ([0; 4], [7, 8, 9, 10]));
    }
}
