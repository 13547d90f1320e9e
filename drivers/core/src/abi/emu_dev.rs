//! The wire format of micemu's `dev/micN`: a `SOCK_SEQPACKET` Unix socket
//! whose every connection is one open file of the character device.
//!
//! Not used by the kernel module; it lives here so the emulator (server)
//! and libmic (client) share one definition. The three ioctls travel with
//! their ioctl numbers as the operation and their argument layouts as the
//! payload; what a socket cannot carry as an argument (the iovec array a
//! `mic_copy_desc` points to, the data in inline mode) follows the argument.
//!
//! ```text
//! client → server  ReqHeader { op, len } + payload
//!   OP_HELLO       Hello                          → REPLY HelloReply
//!   ADD_DEVICE     descriptor block               → REPLY
//!   COPY_DESC      MicCopyDesc, iovcnt × Iovec,   → REPLY MicCopyDesc (out_len),
//!                  [inline: the iovecs' bytes]      CopyReply, [inline: to_user bytes]
//!   CONFIG_CHANGE  config_len bytes               → REPLY
//!   OP_MMAP        MmapReq                        → REPLY n × Piece + the fd (SCM_RIGHTS)
//!   OP_ACK_WAKE    (nothing)                      → no reply
//!   OP_COPY_BATCH  BatchReq, count × (MicCopyDesc, → REPLY BatchReply,
//!                  iovcnt × Iovec)                  count × BatchResult
//! server → client  MsgHeader { kind, result } + payload
//!   MSG_REPLY      result 0 or −errno, then the payload above
//!   MSG_WAKE       poll's POLLIN: a card doorbell or reset for this device;
//!                  at most one outstanding until the client sends OP_ACK_WAKE
//!   MSG_GONE       poll's POLLERR: the device is gone
//! ```
//!
//! In direct mode the server moves the bytes with `process_vm_readv/writev`
//! between card memory and the client's iovecs (the one copy the kernel's
//! `copy_to_user` makes); when it cannot reach the client's memory (HELLO
//! tells), inline mode carries the bytes in the messages instead.
//!
//! The fast path. With [`HELLO_SHM`] the HELLO carries three descriptors:
//! a memfd the client mapped (the shared region: control words, a request
//! and a response slot, then an arena of I/O buffers) and two eventfds
//! (kick the server, kick the client). COPY_DESC then goes through the
//! slots instead of the socket: the client writes the request and bumps
//! [`SHM_REQ_SEQ`]; the server, spinning briefly after each request and
//! sleeping on its eventfd otherwise ([`SHM_SERVER_SLEEPING`] says which),
//! answers in the response slot and sets [`SHM_RESP_SEQ`]; the client spins
//! briefly, then sleeps on its own eventfd. Spinning pays only while the
//! other side runs on another CPU; on two cores with a third thread busy,
//! the side waited for may instead be queued behind the spinner on its
//! CPU. So each side publishes the CPU it runs on ([`SHM_CLIENT_CPU`],
//! [`SHM_SERVER_CPU`]; the server 0 before it sleeps, the client again
//! when it returns to its caller and when a wait for a wake-up ends), and
//! a spinner asks its [`Spinner`] every few looks: it
//! spins on while the other side was last seen on another CPU, yields the
//! CPU when that was its own CPU (the other side waits for it) or is not
//! known, and sleeps once its budget is spent. A side that finds it
//! lost its CPU between two asks (preempted, or its yield went to a busy
//! thread) sleeps at once and takes the machine for loaded a while,
//! sleeping then where it would have yielded to the other side queued on
//! its CPU. The server yields where the client would spin
//! ([`Spinner::yielding`]): it stands in for the card's DMA engine, which
//! takes no host CPU, and a pure spin took the CPU from a third thread
//! that wanted it (the card's emulated cores). And when a batch the
//! client works beside ([`BATCH_F_STARTED`], protocol 4) finds the two on
//! one CPU (a wake-up puts a thread beside its waker, and the scheduler
//! keeps it there), the server moves off it, so the client's own work
//! overlaps the copies; a client that waits for its answer gains nothing
//! from the move and is not made to pay for it. iovecs inside the
//! arena are copied with one plain memcpy between the two mappings. The
//! socket still carries everything else, wake-ups included.
//!
//! Batches (protocol 2). One hand-off between the two threads costs far
//! more than walking and copying a chain, so [`OP_COPY_BATCH`] carries up
//! to [`BATCH_MAX`] COPY_DESCs, each its own chain with its own iovecs and
//! its own result, exactly as that many ioctls in a row would have done:
//! they run in order, and the batch stops after the first that fails or
//! moves no bytes (its ring had no chain). [`BatchReply::done`] counts the
//! entries run, the last of them the one that stopped it; the results of
//! the others are zero. A malformed batch (a count above [`BATCH_MAX`], an
//! entry that does not parse or runs past the request, an iovec count
//! above the driver's limit, a buffer the server cannot reach directly) is
//! refused whole with `EINVAL` before any entry runs. The doorbells the
//! entries would ring are rung once, after the batch. Only direct mode and
//! arena buffers: inline copies go one COPY_DESC at a time. It travels
//! through the slot or the socket alike; HELLO negotiates it: the server
//! answers with the lower of the two versions, and a client sends batches
//! only when that is 2 or more.
//!
//! The aperture (protocol 3). A caller's buffer outside the arena (its
//! heap, say) is out of the server's reach but for `process_vm_*`, whose
//! kernel copy runs far below `memcpy` (pinning the pages, one page a
//! copy). [`OP_APERTURE`] instead hands the client the card's memory, read
//! and write, as root may map a real card's memory BAR; the client maps it
//! and makes the one copy itself, where the server says. COPY_DESC and
//! batches in the slot then run as follows: the server walks the chain,
//! checks every card address, copies the arena's pieces itself, and
//! answers the rest with [`MSG_PLAN`] in the response slot (its `result`
//! the count of [`PlanOp`]s that follow, at most [`PLAN_MAX`]; a longer
//! list comes in several plans) under the request's own counter value.
//! The client checks every operation against its buffers and the
//! aperture, copies, and answers [`OP_PLAN_DONE`] (an `i32`: 0, or
//! `-EFAULT` if it refused the plan) as a new request; only then does the
//! server complete the chain (the used entry, the card's doorbell), and
//! answer the request under the counter value of that last answer. A
//! client that does not answer within [`PLAN_BUDGET_MS`] has failed the
//! copy: the answer, `EFAULT` (the chain stays where it was), is written
//! over the plan under the same counter value, and an answer to the plan
//! that comes later is a request of its own (`EINVAL`). A client that
//! hangs up meanwhile ends the connection as ever. Requests over
//! the socket never get plans (the server uses `process_vm_*`, or refuses
//! buffers it cannot reach).
//!
//! Requests larger than the slot. The request slot holds [`SHM_REQ_MAX`]
//! bytes, header included; a client sends a larger request (a COPY_DESC
//! or a batch with many iovecs) over the socket instead, where the limit
//! is [`MAX_MSG`]. A slot whose header announces more than the slot holds
//! is answered `EINVAL`, as is a socket message longer than [`MAX_MSG`]
//! (cut short on receipt); nothing of either runs.

use super::layout::abi_struct;

/// Protocol version: the highest this side speaks.
pub const PROTO_VERSION: u32 = 4;
/// The oldest version a server still serves (1: no [`OP_COPY_BATCH`]).
pub const PROTO_VERSION_MIN: u32 = 1;
/// The first version with [`OP_COPY_BATCH`].
pub const PROTO_VERSION_BATCH: u32 = 2;
/// The first version with [`OP_APERTURE`] and plans.
pub const PROTO_VERSION_APERTURE: u32 = 3;
/// The first version with [`BATCH_F_STARTED`].
pub const PROTO_VERSION_STARTED: u32 = 4;

/// [`BatchReq::flags`]: the client handed the batch over through the slot
/// and works on until it collects the answer (libmic's `start_batch`), so
/// the server moves off the client's CPU if it finds itself there (see the
/// module text); the batch runs as any other. Unknown bits are refused.
pub const BATCH_F_STARTED: u32 = 1;

/// Handshake: version and the direct-mode probe.
pub const OP_HELLO: u32 = 0x4D45_0001;
/// mmap of the file.
pub const OP_MMAP: u32 = 0x4D45_0002;
/// The client consumed a `MSG_WAKE`.
pub const OP_ACK_WAKE: u32 = 0x4D45_0003;
/// Several COPY_DESCs in one request (protocol 2).
pub const OP_COPY_BATCH: u32 = 0x4D45_0004;
/// The card's memory for the client to map (protocol 3; needs the shared
/// region): REPLY [`ApertureReply`] and the memfd.
pub const OP_APERTURE: u32 = 0x4D45_0005;
/// In the request slot, the client's answer to a [`MSG_PLAN`]: an `i32`.
pub const OP_PLAN_DONE: u32 = 0x4D45_0006;

/// Most COPY_DESCs one [`OP_COPY_BATCH`] carries.
pub const BATCH_MAX: u32 = 64;

/// A reply to the request before it.
pub const MSG_REPLY: u32 = 1;
/// A wake-up (poll: readable).
pub const MSG_WAKE: u32 = 2;
/// The device is gone (poll: error).
pub const MSG_GONE: u32 = 3;
/// In the response slot, mid-request: copies for the client to make
/// (`result` is their count; that many [`PlanOp`]s follow).
pub const MSG_PLAN: u32 = 4;

/// Most [`PlanOp`]s one [`MSG_PLAN`] carries (what the response slot holds).
pub const PLAN_MAX: usize = (SHM_RESP_MAX - MsgHeader::SIZE) / PlanOp::SIZE;
/// How long the server waits for a client's [`OP_PLAN_DONE`] (holding the
/// device, as the kernel holds it over `copy_to_user`).
pub const PLAN_BUDGET_MS: u64 = 1000;

/// Copies go by `process_vm_readv/writev` on the client's iovecs.
pub const MODE_DIRECT: u32 = 1;
/// Copies travel inside the messages.
pub const MODE_INLINE: u32 = 2;

/// Largest message either side sends (below a Unix socket's default send
/// buffer, so one message always fits).
pub const MAX_MSG: usize = 160 << 10;
/// Largest caller buffer total of one inline COPY_DESC (leaves room for
/// the headers and iovecs in [`MAX_MSG`]).
pub const MAX_INLINE: usize = 128 << 10;

/// [`Hello::flags`]: use inline mode even if direct would work.
pub const HELLO_FORCE_INLINE: u32 = 1;
/// [`Hello::flags`]: the message carries the shared region and its two
/// eventfds (in that order).
pub const HELLO_SHM: u32 = 2;

/// Shared region: the client's request counter (u32).
pub const SHM_REQ_SEQ: usize = 0;
/// Shared region: the server's answered-request counter (u32).
pub const SHM_RESP_SEQ: usize = 64;
/// Shared region: 1 while the server sleeps on its eventfd (u32).
pub const SHM_SERVER_SLEEPING: usize = 128;
/// Shared region: 1 while the client sleeps on its eventfd (u32).
pub const SHM_CLIENT_SLEEPING: usize = 192;
/// Shared region: the CPU the client last ran on, plus one (0: not said)
/// (u32).
pub const SHM_CLIENT_CPU: usize = 256;
/// Shared region: the CPU the server last ran on, plus one (u32).
pub const SHM_SERVER_CPU: usize = 320;
/// Shared region: the request slot (a [`ReqHeader`] and its payload).
pub const SHM_REQ: usize = 4096;
/// Bytes of the request slot.
pub const SHM_REQ_MAX: usize = 32 << 10;
/// Shared region: the response slot (a [`MsgHeader`] and its payload).
pub const SHM_RESP: usize = SHM_REQ + SHM_REQ_MAX;
/// Bytes of the response slot.
pub const SHM_RESP_MAX: usize = 4096;
/// Shared region: where the arena of I/O buffers starts.
pub const SHM_ARENA: usize = 64 << 10;
/// Largest shared region a server accepts.
pub const SHM_MAX: u64 = 1 << 30;

/// What a side publishes as its CPU: `sched_getcpu()`'s answer plus one,
/// 0 if it failed (or is too large to say).
#[must_use]
pub fn cpu_word(sched_getcpu: Option<usize>) -> u32 {
    sched_getcpu
        .and_then(|c| u32::try_from(c).ok())
        .map_or(0, |c| c.saturating_add(1))
}

/// What a spinning side of the slot protocol does next (see [`Spinner`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpinStep {
    /// Look again at once: the other side runs on another CPU.
    Spin,
    /// Give the CPU up for a moment, then look again: the other side is
    /// queued on this very CPU, or where it runs is not known.
    Yield,
    /// Stop spinning and sleep until woken.
    Sleep,
}

/// A gap this long between two asks of a spinning side means it lost its
/// CPU meanwhile to a thread that ran its time slice (preempted, or a
/// yield went to a busy thread rather than to the other side, which
/// answers and gives the CPU back within µs).
pub const SPIN_PREEMPTED_NS: u64 = 500_000;

/// How long a side takes the machine for loaded after such a gap: it then
/// sleeps where it would have yielded (a yield on a loaded CPU gives it to
/// a busy thread for a whole time slice; a sleeper is woken in µs).
pub const SPIN_LOADED_NS: u64 = 100_000_000;

/// One spinning wait (from [`Spinner::begin`]); times in ns.
#[derive(Debug, Clone, Copy)]
#[allow(clippy::struct_field_names)] // all times in ns, named so
pub struct Spin {
    start_ns: u64,
    last_ns: u64,
    limit_ns: u64,
}

/// A side's way of waiting in the slot protocol, with what its last waits
/// taught it: asked every few looks at the counter what to do next (see
/// the module text). Clocks are nanoseconds from any fixed start.
#[derive(Debug, Clone, Copy)]
#[allow(clippy::struct_field_names)] // all times in ns, named so
pub struct Spinner {
    loaded_until_ns: u64,
    limit_ns: u64,
    /// Yields where it would spin (see [`Spinner::yielding`]).
    yields: bool,
}

impl Spinner {
    /// A side spinning at most `limit_ns` a wait.
    #[must_use]
    pub const fn new(limit_ns: u64) -> Self {
        Self {
            loaded_until_ns: 0,
            limit_ns,
            yields: false,
        }
    }

    /// A side that yields the CPU between its looks where [`Spinner::new`]'s
    /// would spin, at most `limit_ns` a wait: it looks again at once when
    /// nothing else wants its CPU, and lets any thread that does run first
    /// (the server: it stands in for hardware, which takes no host CPU).
    #[must_use]
    pub const fn yielding(limit_ns: u64) -> Self {
        Self {
            loaded_until_ns: 0,
            limit_ns,
            yields: true,
        }
    }

    /// A wait, from `now_ns`.
    #[must_use]
    pub const fn begin(&self, now_ns: u64) -> Spin {
        Spin {
            start_ns: now_ns,
            last_ns: now_ns,
            limit_ns: self.limit_ns,
        }
    }

    /// Whether the machine looks loaded at `now_ns`.
    #[must_use]
    pub const fn loaded(&self, now_ns: u64) -> bool {
        now_ns < self.loaded_until_ns
    }

    /// The next step of `spin` at `now_ns`, on CPU word `cpu`, the other
    /// side's last published one being `peer_cpu` ([`cpu_word`]; 0 for not
    /// known: asleep, or between calls).
    pub fn step(&mut self, spin: &mut Spin, now_ns: u64, cpu: u32, peer_cpu: u32) -> SpinStep {
        let gap = now_ns.saturating_sub(spin.last_ns);
        spin.last_ns = now_ns;
        if gap >= SPIN_PREEMPTED_NS {
            self.loaded_until_ns = now_ns.saturating_add(SPIN_LOADED_NS);
            return SpinStep::Sleep;
        }
        if now_ns.saturating_sub(spin.start_ns) >= spin.limit_ns {
            SpinStep::Sleep
        } else if peer_cpu != 0 && peer_cpu != cpu {
            if self.yields {
                SpinStep::Yield
            } else {
                SpinStep::Spin
            }
        } else if peer_cpu == cpu && self.loaded(now_ns) {
            SpinStep::Sleep
        } else {
            // Queued here, or not known (asleep and maybe being woken onto
            // this CPU, or between calls): let it run.
            SpinStep::Yield
        }
    }
}

/// `PROT_WRITE` in [`MmapReq::prot`].
pub const PROT_WRITE: u32 = 2;

abi_struct! {
    /// Header of every client message.
    pub struct ReqHeader: size 8, repr(C, align(4)) {
        /// An ioctl number or `OP_*`.
        op: u32 => REQ_OP = 0,
        /// Payload bytes after the header.
        len: u32 => REQ_LEN = 4,
    }
}

abi_struct! {
    /// Header of every server message.
    pub struct MsgHeader: size 8, repr(C, align(4)) {
        /// `MSG_*`.
        kind: u32 => MSG_KIND = 0,
        /// 0, or a negative errno (replies only).
        result: i32 => MSG_RESULT = 4,
    }
}

abi_struct! {
    /// `OP_HELLO` payload.
    pub struct Hello: size 32, repr(C, align(8)) {
        /// The client's [`PROTO_VERSION`].
        version: u32 => HELLO_VERSION = 0,
        /// `HELLO_*` bits.
        flags: u32 => HELLO_FLAGS = 4,
        /// Address of one readable byte in the client, for the server to
        /// try `process_vm_readv` on.
        probe: u64 => HELLO_PROBE = 8,
        /// With [`HELLO_SHM`]: the client's address of the shared region.
        shm_base: u64 => HELLO_SHM_BASE = 16,
        /// With [`HELLO_SHM`]: its length.
        shm_len: u64 => HELLO_SHM_LEN = 24,
    }
}

abi_struct! {
    /// `OP_HELLO` reply payload.
    pub struct HelloReply: size 8, repr(C, align(4)) {
        /// The server's [`PROTO_VERSION`].
        version: u32 => HELLO_REPLY_VERSION = 0,
        /// [`MODE_DIRECT`] or [`MODE_INLINE`].
        mode: u32 => HELLO_REPLY_MODE = 4,
    }
}

abi_struct! {
    /// `struct iovec` as it travels after a `MicCopyDesc`.
    pub struct Iovec: size 16, repr(C, align(8)) {
        /// Client address.
        base: u64 => IOVEC_BASE = 0,
        /// Bytes.
        len: u64 => IOVEC_LEN = 8,
    }
}

abi_struct! {
    /// Trailer of a COPY_DESC reply.
    pub struct CopyReply: size 8, repr(C, align(4)) {
        /// Bytes moved card → caller (at the start of the caller's buffers).
        to_user: u32 => COPY_REPLY_TO_USER = 0,
        /// Reserved, 0.
        flags: u32 => COPY_REPLY_FLAGS = 4,
    }
}

abi_struct! {
    /// `OP_MMAP` payload.
    pub struct MmapReq: size 24, repr(C, align(8)) {
        /// Offset into the file's mapping layout.
        offset: u64 => MMAP_OFFSET = 0,
        /// Bytes.
        len: u64 => MMAP_LEN = 8,
        /// `PROT_*` bits asked for.
        prot: u32 => MMAP_PROT = 16,
    }
}

abi_struct! {
    /// One piece of a mapping: map `len` bytes of the passed fd at
    /// `file_off` to `map_off` of the mapping.
    pub struct Piece: size 24, repr(C, align(8)) {
        /// Offset in the mapping.
        map_off: u64 => PIECE_MAP_OFF = 0,
        /// Offset in the fd.
        file_off: u64 => PIECE_FILE_OFF = 8,
        /// Bytes.
        len: u64 => PIECE_LEN = 16,
    }
}

abi_struct! {
    /// `OP_COPY_BATCH` payload head; `count` entries follow, each a
    /// `MicCopyDesc` (its `iov` ignored) and its `iovcnt` × [`Iovec`].
    pub struct BatchReq: size 8, repr(C, align(4)) {
        /// Entries, at most [`BATCH_MAX`].
        count: u32 => BATCH_COUNT = 0,
        /// `BATCH_F_*` bits (from [`PROTO_VERSION_STARTED`]; 0 before).
        flags: u32 => BATCH_FLAGS = 4,
    }
}

abi_struct! {
    /// `OP_COPY_BATCH` reply head; `count` [`BatchResult`]s follow.
    pub struct BatchReply: size 8, repr(C, align(4)) {
        /// Entries run, the one that stopped the batch included.
        done: u32 => BATCH_REPLY_DONE = 0,
        /// Reserved, 0.
        flags: u32 => BATCH_REPLY_FLAGS = 4,
    }
}

abi_struct! {
    /// The outcome of one entry of a batch.
    pub struct BatchResult: size 8, repr(C, align(4)) {
        /// 0, or the negative errno the ioctl would have failed with.
        result: i32 => BATCH_RESULT = 0,
        /// The `out_len` the ioctl would have returned.
        out_len: u32 => BATCH_OUT_LEN = 4,
    }
}

abi_struct! {
    /// `OP_APERTURE` reply payload.
    pub struct ApertureReply: size 8, repr(C, align(8)) {
        /// Bytes of card memory the passed memfd holds (map them all).
        size: u64 => APERTURE_SIZE = 0,
    }
}

abi_struct! {
    /// One copy of a [`MSG_PLAN`].
    pub struct PlanOp: size 24, repr(C, align(8)) {
        /// Card memory address (an offset into the aperture).
        card_addr: u64 => PLAN_CARD_ADDR = 0,
        /// Offset into the concatenation of the entry's iovecs.
        user_off: u64 => PLAN_USER_OFF = 8,
        /// Bytes.
        len: u32 => PLAN_LEN = 16,
        /// Which COPY_DESC of a batch (0 for a lone one).
        entry: u16 => PLAN_ENTRY = 20,
        /// 1: card → caller; 0: caller → card.
        to_user: u16 => PLAN_TO_USER = 22,
    }
}

/// Bytes of a batch reply for `count` entries (fits the response slot
/// for every count up to [`BATCH_MAX`]).
#[must_use]
pub const fn batch_reply_len(count: u32) -> usize {
    BatchReply::SIZE + count as usize * BatchResult::SIZE
}

const _: () = assert!(MsgHeader::SIZE + batch_reply_len(BATCH_MAX) <= SHM_RESP_MAX);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spinner_spins_beside_a_running_peer_yields_to_one_on_its_cpu_and_sleeps_when_spent() {
        let (cpu0, cpu1) = (cpu_word(Some(0)), cpu_word(Some(1)));
        assert_eq!((cpu0, cpu1, cpu_word(None)), (1, 2, 0), "0 is 'not known'");
        let mut w = Spinner::new(1000);
        let mut s = w.begin(5_000);
        assert_eq!(
            w.step(&mut s, 5_000, cpu0, cpu1),
            SpinStep::Spin,
            "peer on the other CPU"
        );
        assert_eq!(
            w.step(&mut s, 5_010, cpu0, cpu0),
            SpinStep::Yield,
            "peer queued on ours"
        );
        assert_eq!(
            w.step(&mut s, 5_020, cpu0, 0),
            SpinStep::Yield,
            "peer asleep or between calls"
        );
        assert_eq!(w.step(&mut s, 5_999, cpu0, cpu1), SpinStep::Spin);
        // Spent: sleep, wherever the peer is.
        for peer in [cpu1, cpu0, 0] {
            let mut s = w.begin(5_000);
            assert_eq!(w.step(&mut s, 5_999, cpu0, cpu1), SpinStep::Spin);
            assert_eq!(w.step(&mut s, 6_000, cpu0, peer), SpinStep::Sleep, "spent");
        }
        assert!(!w.loaded(6_000));
    }

    #[test]
    fn a_yielding_spinner_yields_where_the_other_spins_and_sleeps_when_spent() {
        let (cpu0, cpu1) = (cpu_word(Some(0)), cpu_word(Some(1)));
        let mut w = Spinner::yielding(1000);
        let mut s = w.begin(5_000);
        for (t, peer) in [(5_000, cpu1), (5_010, cpu0), (5_020, 0), (5_999, cpu1)] {
            assert_eq!(w.step(&mut s, t, cpu0, peer), SpinStep::Yield, "peer word {peer}");
        }
        assert_eq!(w.step(&mut s, 6_000, cpu0, cpu1), SpinStep::Sleep, "spent");
        assert_eq!(
            Spinner::new(1000).step(&mut Spinner::new(1000).begin(0), 10, cpu0, cpu1),
            SpinStep::Spin,
            "the other kind spins there"
        );
    }

    #[test]
    fn a_spinner_that_lost_its_cpu_sleeps_and_then_sleeps_instead_of_yielding_a_while() {
        let (cpu0, cpu1) = (cpu_word(Some(0)), cpu_word(Some(1)));
        let mut w = Spinner::new(1_000_000);
        let mut s = w.begin(0);
        assert_eq!(w.step(&mut s, 1_000, cpu0, cpu1), SpinStep::Spin);
        let back = 1_000 + SPIN_PREEMPTED_NS;
        assert_eq!(w.step(&mut s, back, cpu0, cpu1), SpinStep::Sleep, "preempted");
        assert!(w.loaded(back) && w.loaded(back + SPIN_LOADED_NS - 1));
        let mut s = w.begin(back);
        assert_eq!(
            w.step(&mut s, back + 10, cpu0, cpu1),
            SpinStep::Spin,
            "still spins beside a running peer"
        );
        assert_eq!(
            w.step(&mut s, back + 20, cpu0, cpu0),
            SpinStep::Sleep,
            "no yield while loaded"
        );
        assert_eq!(
            w.step(&mut s, back + 30, cpu0, 0),
            SpinStep::Yield,
            "not known: it may be woken onto this CPU"
        );
        let later = back + SPIN_LOADED_NS;
        assert!(!w.loaded(later));
        let mut s = w.begin(later);
        assert_eq!(
            w.step(&mut s, later + 10, cpu0, cpu0),
            SpinStep::Yield,
            "forgotten"
        );
    }
}
