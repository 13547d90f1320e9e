//! The host side of one split virtqueue: what the kernel's `vringh` does for
//! the original driver, hardened against a hostile card.
//!
//! The descriptor table and the avail ring live in host memory (in the ring
//! block the host allocated) but are written by the card; the used ring
//! lives in card memory once the card has re-homed it. Every index, address
//! and length read from them is checked before use, a chain is read exactly
//! once into a snapshot ([`HostVring`] never reads a descriptor twice), and
//! the host's own shadow indices are the only ones it trusts.
//!
//! A card that breaks the ring protocol (an avail index jump, a head or
//! `next` out of range, a loop, a buffer outside card memory, ...) gets the
//! errno `vringh` would have returned and the ring is marked broken: every
//! later copy fails with [`RingError::Broken`] until the card resets the
//! device. Nothing the card writes can make the host loop, read outside the
//! ring or write outside card memory.
//!
//! Kick suppression (which the original never did): while the card has
//! chains available that the host has not consumed, its kicks for the ring
//! are off — `VRING_USED_F_NO_NOTIFY` in the used ring, or with EVENT_IDX an
//! `avail_event` already passed — because the reader, woken once, drains
//! what is there and looks at `pending` after its last copy. They come back
//! on the completion that consumes the last available chain; a chain the
//! card adds meanwhile is caught by a second look after a full barrier, so
//! none waits unseen. A doorbell turns them off ([`HostVring::quiet_kicks`]).

use core::fmt;

use crate::abi::virtio::{
    VRING_AVAIL_F_NO_INTERRUPT, VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE,
    VRING_USED_F_NO_NOTIFY, VringDesc, VringUsedElem, avail_entry, avail_event_offset, need_event,
    used_entry, used_event_offset, used_size,
};
use crate::abi::{MIC_MAX_VRING_ENTRIES, VRI_AVAIL_IDX};
use crate::errno;
use crate::hw::{MemError, Memory, in_bounds, offset_addr};

/// The longest chain a ring accepts: its own size, and never more than the
/// largest ring (direct and indirect descriptors together).
pub const MAX_CHAIN: usize = MIC_MAX_VRING_ENTRIES as usize;

/// Entries of an indirect table, at most (the ring's size bounds it further).
const MAX_INDIRECT: u32 = MIC_MAX_VRING_ENTRIES as u32;

/// What a card did wrong on a ring (or why the ring cannot be used).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingError {
    /// `avail.idx` moved more than the ring size past the host's index
    /// (also: backwards).
    AvailJump {
        /// The card's avail index.
        idx: u16,
        /// The host's last consumed index.
        last: u16,
    },
    /// An avail entry names a head outside the ring.
    BadHead(u16),
    /// A `next` outside the table it indexes.
    BadNext(u16),
    /// More descriptors than the ring holds: a loop, or an overlong chain.
    Loop,
    /// A descriptor with flag bits the protocol does not define.
    BadFlags(u16),
    /// A device-readable descriptor after a device-writable one.
    ReadAfterWrite,
    /// A zero-length buffer.
    ZeroLength,
    /// A buffer not wholly inside card memory.
    BufferOutOfRange {
        /// Buffer address.
        addr: u64,
        /// Buffer length.
        len: u32,
    },
    /// The chain's total length does not fit in 32 bits.
    TooLong,
    /// An indirect descriptor although INDIRECT_DESC was not negotiated.
    IndirectNotNegotiated,
    /// An indirect descriptor inside an indirect table.
    NestedIndirect,
    /// An indirect descriptor that also has NEXT set.
    IndirectWithNext,
    /// An indirect table whose length is 0, not a multiple of 16 or too big.
    BadIndirectLen(u32),
    /// The ring (or a ring part) cannot be reached.
    Mem(MemError),
    /// The ring was marked broken by an earlier error; it works again after
    /// the card resets the device.
    Broken,
}

impl RingError {
    /// The errno (positive) COPY_DESC returns, as `vringh` would.
    #[must_use]
    pub const fn errno(&self) -> i32 {
        match self {
            RingError::Loop => errno::ELOOP,
            RingError::Mem(_) => errno::EFAULT,
            RingError::Broken => errno::EIO,
            _ => errno::EINVAL,
        }
    }
}

impl From<MemError> for RingError {
    fn from(e: MemError) -> Self {
        RingError::Mem(e)
    }
}

impl fmt::Display for RingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RingError::AvailJump { idx, last } => {
                write!(f, "card moved avail index to {idx} from {last}")
            }
            RingError::BadHead(h) => write!(f, "card says index {h} is available"),
            RingError::BadNext(n) => write!(f, "descriptor next is {n}"),
            RingError::Loop => write!(f, "descriptor loop (chain longer than the ring)"),
            RingError::BadFlags(fl) => write!(f, "descriptor flags {fl:#x} not defined"),
            RingError::ReadAfterWrite => write!(f, "device-readable descriptor after a writable one"),
            RingError::ZeroLength => write!(f, "zero-length buffer"),
            RingError::BufferOutOfRange { addr, len } => {
                write!(f, "buffer {len:#x} bytes at {addr:#x} outside card memory")
            }
            RingError::TooLong => write!(f, "chain longer than 4 GiB"),
            RingError::IndirectNotNegotiated => write!(f, "indirect descriptor without the feature"),
            RingError::NestedIndirect => write!(f, "indirect descriptor inside an indirect table"),
            RingError::IndirectWithNext => write!(f, "indirect descriptor with NEXT"),
            RingError::BadIndirectLen(l) => write!(f, "indirect table of {l} bytes"),
            RingError::Mem(e) => write!(f, "ring unreachable: {e}"),
            RingError::Broken => write!(f, "ring broken until the card resets the device"),
        }
    }
}

impl core::error::Error for RingError {}

/// A fault copying to or from the caller's buffers (`EFAULT`, the caller's
/// problem, not the card's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyFault;

/// The caller's buffers of one COPY_DESC, seen as one contiguous space of
/// [`UserBuffers::capacity`] bytes (its iovecs end to end).
///
/// The walker decides what moves where and calls these with card addresses
/// it has already checked against card memory; the implementation does the
/// one copy (`copy_to_user` from the aperture in the kernel,
/// `process_vm_writev` from the GDDR mapping in micemu). It may defer the
/// copies until [`UserBuffers::finish`]; the ring is only updated after
/// `finish` succeeded.
pub trait UserBuffers {
    /// Total bytes of the caller's buffers.
    fn capacity(&self) -> u64;
    /// Copies `len` bytes of card memory at `card_addr` to offset `off` of
    /// the caller's buffers.
    fn card_to_user(&mut self, off: u64, card_addr: u64, len: u32) -> Result<(), CopyFault>;
    /// Copies `len` bytes at offset `off` of the caller's buffers into card
    /// memory at `card_addr`.
    fn user_to_card(&mut self, off: u64, card_addr: u64, len: u32) -> Result<(), CopyFault>;
    /// Completes every copy issued so far.
    fn finish(&mut self) -> Result<(), CopyFault> {
        Ok(())
    }
}

/// Why a COPY_DESC on a ring failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyError {
    /// The card broke the ring protocol (the ring is now broken).
    Ring(RingError),
    /// The caller's buffers could not be read or written (`EFAULT`); the
    /// chain stays where it was.
    UserFault,
}

impl CopyError {
    /// The errno (positive) COPY_DESC returns.
    #[must_use]
    pub const fn errno(&self) -> i32 {
        match self {
            CopyError::Ring(e) => e.errno(),
            CopyError::UserFault => errno::EFAULT,
        }
    }
}

impl From<RingError> for CopyError {
    fn from(e: RingError) -> Self {
        CopyError::Ring(e)
    }
}

impl fmt::Display for CopyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CopyError::Ring(e) => write!(f, "{e}"),
            CopyError::UserFault => write!(f, "bad address in the caller's buffers"),
        }
    }
}

impl core::error::Error for CopyError {}

/// One validated buffer of a chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Seg {
    /// Card address.
    pub addr: u64,
    /// Length (non-zero).
    pub len: u32,
    /// Device-writable (card → host direction is `false`).
    pub write: bool,
}

/// A chain fetched from the avail ring and not yet completed (kept in
/// its ring for the ring's life and refilled by each fetch: the segment
/// table is never zeroed or moved a chain).
#[derive(Debug, Clone)]
struct Held {
    head: u16,
    segs: [Seg; MAX_CHAIN],
    nsegs: usize,
    /// Next segment to move and the offset inside it.
    pos: usize,
    off: u32,
    /// Bytes moved so far in both directions.
    consumed: u32,
}

/// Where the used ring is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsedRing {
    /// In the host's ring block (before the card re-homed it).
    Host(u64),
    /// In card memory, at a card address checked at activation.
    Card(u64),
}

/// What one COPY_DESC did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Copied {
    /// Bytes moved in both directions (`out_len`).
    pub out_len: u32,
    /// Whether a used entry was added.
    pub completed: bool,
    /// Whether the card asked to be notified of it.
    pub notify: bool,
}

/// Counters of one ring, for debugfs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RingStats {
    /// Chains fetched.
    pub chains: u64,
    /// Bytes moved card → caller.
    pub to_user: u64,
    /// Bytes moved caller → card.
    pub to_card: u64,
    /// Used entries written.
    pub completed: u64,
    /// Notifications the card asked for.
    pub notifies: u64,
    /// Protocol errors (each breaks the ring).
    pub errors: u64,
}

/// The negotiated ring features that change the host's behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RingFeatures {
    /// `VIRTIO_RING_F_EVENT_IDX`.
    pub event_idx: bool,
    /// `VIRTIO_RING_F_INDIRECT_DESC`.
    pub indirect: bool,
}

/// The host side of one virtqueue.
#[derive(Debug, Clone)]
pub struct HostVring {
    // INVARIANT: `num` is a power of two in 1..=MAX_CHAIN, and the descriptor
    // table (`desc`, 16·num bytes), avail ring (`avail`) and info word lie in
    // host memory the host allocated for this ring; set by `new` only.
    num: u16,
    desc: u64,
    avail: u64,
    info: u64,
    /// The used ring in the host's block (where it starts, and returns to
    /// on reset).
    host_used: u64,
    used: UsedRing,
    features: RingFeatures,
    last_avail: u16,
    last_used: u16,
    /// Used index at the last notification decision.
    notify_base: u16,
    /// Completions since that decision (the `vring_need_event` 0xffff guard).
    since_notify: u32,
    /// The card's kicks for this ring are off (see the module's doc).
    kicks_off: bool,
    // INVARIANT: `held` is a chain (its fields meaningful) only while
    // `holding`; otherwise it is the last chain's leftovers, never read.
    held: Held,
    holding: bool,
    broken: Option<RingError>,
    stats: RingStats,
}

impl HostVring {
    /// A ring of `num` entries (a power of two ≤ 128) whose parts are at the
    /// given host-memory offsets. Returns `None` for an invalid `num`.
    #[must_use]
    pub fn new(num: u16, desc: u64, avail: u64, host_used: u64, info: u64) -> Option<Self> {
        if num == 0 || !num.is_power_of_two() || usize::from(num) > MAX_CHAIN {
            return None;
        }
        Some(Self {
            num,
            desc,
            avail,
            info,
            host_used,
            used: UsedRing::Host(host_used),
            features: RingFeatures::default(),
            last_avail: 0,
            last_used: 0,
            notify_base: 0,
            since_notify: 0,
            kicks_off: false,
            held: Held {
                head: 0,
                segs: [Seg::default(); MAX_CHAIN],
                nsegs: 0,
                pos: 0,
                off: 0,
                consumed: 0,
            },
            holding: false,
            broken: None,
            stats: RingStats::default(),
        })
    }

    /// Entries.
    #[must_use]
    pub fn num(&self) -> u16 {
        self.num
    }

    /// Where the used ring is.
    #[must_use]
    pub fn used(&self) -> UsedRing {
        self.used
    }

    /// The host's last consumed avail index.
    #[must_use]
    pub fn last_avail(&self) -> u16 {
        self.last_avail
    }

    /// The host's used index.
    #[must_use]
    pub fn last_used(&self) -> u16 {
        self.last_used
    }

    /// Why the ring is broken, if it is.
    #[must_use]
    pub fn broken(&self) -> Option<RingError> {
        self.broken
    }

    /// Whether a chain is held partly consumed.
    #[must_use]
    pub fn holds_chain(&self) -> bool {
        self.holding
    }

    /// Counters.
    #[must_use]
    pub fn stats(&self) -> RingStats {
        self.stats
    }

    /// The features in force.
    #[must_use]
    pub fn features(&self) -> RingFeatures {
        self.features
    }

    /// The card re-homed the used ring to `addr` in card memory: check it
    /// (non-zero, 4-aligned, the whole used ring of this ring's own size
    /// inside `card`) and switch to it; the features the card acked take
    /// effect with it.
    pub fn activate(
        &mut self,
        card: &impl Memory,
        addr: u64,
        features: RingFeatures,
    ) -> Result<(), RingError> {
        self.check_used_at(card, addr)?;
        self.used = UsedRing::Card(addr);
        self.features = features;
        Ok(())
    }

    /// Checks that this ring's used ring fits at card address `addr` (as
    /// [`HostVring::activate`] would, changing nothing); the card range it
    /// would occupy.
    pub fn check_used_at(&self, card: &impl Memory, addr: u64) -> Result<(u64, u64), RingError> {
        let len = used_size(self.num) as u32;
        if addr == 0 || addr % 4 != 0 || !in_bounds(addr, u64::from(len), card.size()) {
            return Err(RingError::BufferOutOfRange { addr, len });
        }
        Ok((addr, addr + u64::from(len)))
    }

    /// The range of card memory the used ring occupies, once re-homed.
    #[must_use]
    pub fn card_used_range(&self) -> Option<(u64, u64)> {
        match self.used {
            UsedRing::Card(a) => Some((a, a + used_size(self.num) as u64)),
            UsedRing::Host(_) => None,
        }
    }

    /// Device reset (card-initiated or the host stopping the card): drop
    /// the held chain, zero the indices (and `info.avail_idx`), forget the
    /// re-homed used ring so nothing is written to it any more, clear the
    /// broken mark.
    pub fn reset(&mut self, host: &impl Memory) -> Result<(), MemError> {
        self.holding = false;
        self.last_avail = 0;
        self.last_used = 0;
        self.notify_base = 0;
        self.since_notify = 0;
        self.kicks_off = false;
        self.broken = None;
        self.used = UsedRing::Host(self.host_used);
        self.features = RingFeatures::default();
        host.write_u16(offset_addr(self.info, VRI_AVAIL_IDX as u64)?, 0)
    }

    /// Whether the card has made chains available that the host has not
    /// fetched (or a chain is held).
    pub fn pending(&self, host: &impl Memory) -> Result<bool, MemError> {
        Ok(self.holding || host.read_u16(self.avail + 2)? != self.last_avail)
    }

    /// Whether the card's kicks for this ring are off.
    #[must_use]
    pub fn kicks_off(&self) -> bool {
        self.kicks_off
    }

    /// On the card's doorbell: with chains available that the host has not
    /// consumed, turns the card's kicks for this ring off until it has
    /// (`VRING_USED_F_NO_NOTIFY`; with EVENT_IDX the `avail_event` the card
    /// just passed says so already). Only on a re-homed, working ring.
    pub fn quiet_kicks(&mut self, host: &impl Memory, card: &impl Memory) -> Result<(), MemError> {
        let UsedRing::Card(base) = self.used else {
            return Ok(());
        };
        if self.kicks_off || self.broken.is_some() || !self.pending(host)? {
            return Ok(());
        }
        if !self.features.event_idx {
            card.write_u16(base, VRING_USED_F_NO_NOTIFY)?;
        }
        self.kicks_off = true;
        Ok(())
    }

    /// After a completion: once nothing available is left unconsumed, the
    /// card's kicks back on (the flag cleared; with EVENT_IDX `avail_event`
    /// at the next entry), then, after a full barrier, the avail index read
    /// again: a chain the card added while they were off keeps them off
    /// (the reader finds it pending).
    fn rearm_kicks(&mut self, host: &impl Memory, card: &impl Memory) -> Result<(), MemError> {
        let UsedRing::Card(base) = self.used else {
            return Ok(());
        };
        if self.pending(host)? {
            return Ok(());
        }
        if self.features.event_idx {
            card.write_u16(base + avail_event_offset(self.num) as u64, self.last_avail)?;
        } else if self.kicks_off {
            card.write_u16(base, 0)?;
        }
        self.kicks_off = false;
        card.full_barrier();
        if self.pending(host)? {
            if !self.features.event_idx {
                card.write_u16(base, VRING_USED_F_NO_NOTIFY)?;
            }
            self.kicks_off = true;
        }
        Ok(())
    }

    fn fail(&mut self, e: RingError) -> RingError {
        self.stats.errors += 1;
        self.broken = Some(e);
        self.holding = false;
        e
    }

    /// Fetches the next available chain into a snapshot. `Ok(false)`: none.
    fn fetch(&mut self, host: &impl Memory, card: &impl Memory) -> Result<bool, RingError> {
        let idx = host.read_u16(self.avail + 2)?;
        host.read_barrier();
        let pending = idx.wrapping_sub(self.last_avail);
        if pending == 0 {
            return Ok(false);
        }
        if pending > self.num {
            return Err(RingError::AvailJump {
                idx,
                last: self.last_avail,
            });
        }
        let slot = self.last_avail & (self.num - 1);
        let head = host.read_u16(self.avail + avail_entry(slot) as u64)?;
        if head >= self.num {
            return Err(RingError::BadHead(head));
        }
        let chain = &mut self.held;
        chain.head = head;
        chain.nsegs = 0;
        chain.pos = 0;
        chain.off = 0;
        chain.consumed = 0;
        Self::walk((self.num, self.desc, self.features), host, card, head, chain)?;
        self.last_avail = self.last_avail.wrapping_add(1);
        self.stats.chains += 1;
        self.holding = true;
        Ok(true)
    }

    /// Reads the chain at `first` once, validating every descriptor, into
    /// `chain` (of a ring of `num` entries, its table at `desc`).
    fn walk(
        (num, desc, features): (u16, u64, RingFeatures),
        host: &impl Memory,
        card: &impl Memory,
        first: u16,
        chain: &mut Held,
    ) -> Result<(), RingError> {
        let num = u32::from(num);
        // The table being walked: the ring's own (in host memory) or an
        // indirect one (in card memory) of `len` entries.
        let mut indirect: Option<(u64, u32)> = None;
        let mut i = u32::from(first);
        let mut count = 0u32;
        let mut total = 0u32;
        let mut seen_write = false;
        loop {
            count += 1;
            if count > num {
                return Err(RingError::Loop);
            }
            let mut raw = [0u8; VringDesc::SIZE];
            match indirect {
                None => host.read(desc + u64::from(i) * VringDesc::SIZE as u64, &mut raw)?,
                Some((table, _)) => card.read(table + u64::from(i) * VringDesc::SIZE as u64, &mut raw)?,
            }
            let d = VringDesc::from_bytes(&raw);
            if d.flags & !(VRING_DESC_F_NEXT | VRING_DESC_F_WRITE | VRING_DESC_F_INDIRECT) != 0 {
                return Err(RingError::BadFlags(d.flags));
            }
            if d.flags & VRING_DESC_F_INDIRECT != 0 {
                if indirect.is_some() {
                    return Err(RingError::NestedIndirect);
                }
                if !features.indirect {
                    return Err(RingError::IndirectNotNegotiated);
                }
                if d.flags & VRING_DESC_F_NEXT != 0 {
                    return Err(RingError::IndirectWithNext);
                }
                let entries = d.len / VringDesc::SIZE as u32;
                if d.len == 0 || d.len % VringDesc::SIZE as u32 != 0 || entries > MAX_INDIRECT.min(num) {
                    return Err(RingError::BadIndirectLen(d.len));
                }
                if !in_bounds(d.addr, u64::from(d.len), card.size()) {
                    return Err(RingError::BufferOutOfRange {
                        addr: d.addr,
                        len: d.len,
                    });
                }
                // The WRITE flag of the table's own descriptor is ignored.
                indirect = Some((d.addr, entries));
                i = 0;
                continue;
            }
            if d.len == 0 {
                return Err(RingError::ZeroLength);
            }
            if !in_bounds(d.addr, u64::from(d.len), card.size()) {
                return Err(RingError::BufferOutOfRange {
                    addr: d.addr,
                    len: d.len,
                });
            }
            let write = d.flags & VRING_DESC_F_WRITE != 0;
            if seen_write && !write {
                return Err(RingError::ReadAfterWrite);
            }
            seen_write |= write;
            total = total.checked_add(d.len).ok_or(RingError::TooLong)?;
            // count ≤ num ≤ MAX_CHAIN bounds nsegs.
            chain.segs[chain.nsegs] = Seg {
                addr: d.addr,
                len: d.len,
                write,
            };
            chain.nsegs += 1;
            if d.flags & VRING_DESC_F_NEXT == 0 {
                return Ok(());
            }
            let limit = indirect.map_or(num, |(_, n)| n);
            if u32::from(d.next) >= limit {
                return Err(RingError::BadNext(d.next));
            }
            i = u32::from(d.next);
        }
    }

    /// COPY_DESC on this ring: fetch a chain if none is held, move bytes
    /// from its device-readable buffers into the caller's buffers, then from
    /// the caller's buffers into its device-writable ones, until either runs
    /// out; with `update_used` (and bytes moved) complete the chain.
    pub fn copy(
        &mut self,
        host: &impl Memory,
        card: &impl Memory,
        user: &mut impl UserBuffers,
        update_used: bool,
    ) -> Result<Copied, CopyError> {
        if self.broken.is_some() {
            return Err(RingError::Broken.into());
        }
        if !self.holding {
            match self.fetch(host, card) {
                Ok(true) => {}
                Ok(false) => return Ok(Copied::default()),
                Err(e) => return Err(self.fail(e).into()),
            }
        }
        let chain = &mut self.held;
        let cap = user.capacity();
        let (mut pos, mut off, mut moved) = (chain.pos, chain.off, 0u64);
        let (mut to_user, mut to_card) = (0u64, 0u64);
        while pos < chain.nsegs && moved < cap {
            let seg = chain.segs[pos];
            let n = u64::from(seg.len - off).min(cap - moved) as u32;
            let addr = seg.addr + u64::from(off);
            let res = if seg.write {
                to_card += u64::from(n);
                user.user_to_card(moved, addr, n)
            } else {
                to_user += u64::from(n);
                user.card_to_user(moved, addr, n)
            };
            if res.is_err() {
                return Err(CopyError::UserFault);
            }
            moved += u64::from(n);
            off += n;
            if off == seg.len {
                pos += 1;
                off = 0;
            }
        }
        if user.finish().is_err() {
            return Err(CopyError::UserFault);
        }
        // moved ≤ the chain's total, which fits in u32.
        let out_len = moved as u32;
        chain.pos = pos;
        chain.off = off;
        chain.consumed += out_len;
        self.stats.to_user += to_user;
        self.stats.to_card += to_card;
        let mut copied = Copied {
            out_len,
            ..Copied::default()
        };
        if update_used && out_len > 0 {
            let (id, consumed) = (chain.head, chain.consumed);
            self.holding = false;
            copied.completed = true;
            copied.notify = self
                .complete(host, card, id, consumed)
                .map_err(|e| CopyError::from(self.fail(e)))?;
            self.rearm_kicks(host, card)
                .map_err(|e| CopyError::from(self.fail(e.into())))?;
        }
        Ok(copied)
    }

    /// Adds the used entry `{head, len}`, publishes it, updates
    /// `info.avail_idx`, and decides whether the card wants a notification.
    fn complete(
        &mut self,
        host: &impl Memory,
        card: &impl Memory,
        head: u16,
        len: u32,
    ) -> Result<bool, RingError> {
        let elem = VringUsedElem {
            id: u32::from(head),
            len,
        };
        let slot = self.last_used & (self.num - 1);
        let next = self.last_used.wrapping_add(1);
        match self.used {
            UsedRing::Host(base) => {
                host.write(base + used_entry(slot) as u64, &elem.to_bytes())?;
                host.write_barrier();
                host.write_u16(base + 2, next)?;
            }
            UsedRing::Card(base) => {
                card.write(base + used_entry(slot) as u64, &elem.to_bytes())?;
                card.write_barrier();
                card.write_u16(base + 2, next)?;
            }
        }
        self.last_used = next;
        self.since_notify += 1;
        self.stats.completed += 1;
        host.write_u16(self.info + VRI_AVAIL_IDX as u64, self.last_avail)?;
        let notify = self.need_notify(host)?;
        if notify {
            self.stats.notifies += 1;
        }
        Ok(notify)
    }

    /// `vringh_need_notify`: with EVENT_IDX, whether the used index crossed
    /// the card's `used_event` since the last decision (or more than 0xffff
    /// completions happened, when the comparison would wrap); without it,
    /// unless the card set NO_INTERRUPT.
    fn need_notify(&mut self, host: &impl Memory) -> Result<bool, RingError> {
        // The used index written before the card's word is read
        // (`virtio_mb`): the card's half orders them the other way.
        host.full_barrier();
        let old = self.notify_base;
        let many = self.since_notify > 0xFFFF;
        self.notify_base = self.last_used;
        self.since_notify = 0;
        if self.features.event_idx {
            let event = host.read_u16(self.avail + used_event_offset(self.num) as u64)?;
            Ok(many || need_event(event, self.last_used, old))
        } else {
            let flags = host.read_u16(self.avail)?;
            Ok(flags & VRING_AVAIL_F_NO_INTERRUPT == 0)
        }
    }
}
