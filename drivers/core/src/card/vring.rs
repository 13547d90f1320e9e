//! The driver side of a split virtqueue, as the card's virtio core runs it
//! (what `virtio_ring.c` does for the card kernel, and rcore-os's
//! virtio-drivers in no_std).
//!
//! The descriptor table and avail ring are in the host's ring block (the
//! card writes them across PCIe); the used ring is in card memory, written
//! by the host. The host is as untrusted as the card is to it: the driver
//! keeps its own record of every chain it made available (which descriptors,
//! how many writable bytes) and never follows a link read back from shared
//! memory; a used entry naming a head that is not in flight, claiming more
//! bytes than the chain could hold, or an index that jumps, is an error.

use core::fmt;

use crate::abi::MIC_MAX_VRING_ENTRIES;
use crate::abi::virtio::{SplitLayout, avail_size};
use crate::abi::virtio::{
    VRING_AVAIL_F_NO_INTERRUPT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE, VringDesc, VringUsedElem, avail_entry,
    avail_event_offset, desc_table_size, need_event, used_entry, used_event_offset, used_size,
};
use crate::hw::{MemError, Memory};

const MAX: usize = MIC_MAX_VRING_ENTRIES as usize;

/// Writes `len` zero bytes at `at`.
fn zero_range(mem: &impl Memory, at: u64, len: usize) -> Result<(), MemError> {
    let zeros = [0u8; 256];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(zeros.len());
        mem.write(at + done as u64, &zeros[..n])?;
        done += n;
    }
    Ok(())
}

/// One buffer of a chain to make available.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buf {
    /// Card address.
    pub addr: u64,
    /// Bytes.
    pub len: u32,
    /// Device-writable (the host fills it).
    pub write: bool,
}

/// What went wrong on a driver queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueError {
    /// Not enough free descriptors for the chain.
    Full,
    /// A chain needs at least one buffer, readable ones first.
    BadChain,
    /// The host's used index moved by more than the ring holds.
    UsedJump {
        /// The host's used index.
        idx: u16,
        /// The driver's last seen one.
        last: u16,
    },
    /// The host completed a head that is not in flight.
    UnknownHead(u32),
    /// The host claimed more bytes than the chain holds.
    BadLen {
        /// The head.
        head: u16,
        /// What the host claimed.
        len: u32,
        /// The chain's size.
        cap: u32,
    },
    /// The ring could not be reached.
    Mem(MemError),
}

impl From<MemError> for QueueError {
    fn from(e: MemError) -> Self {
        QueueError::Mem(e)
    }
}

impl fmt::Display for QueueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QueueError::Full => write!(f, "no free descriptors"),
            QueueError::BadChain => write!(f, "empty chain or readable buffer after a writable one"),
            QueueError::UsedJump { idx, last } => write!(f, "host moved used index to {idx} from {last}"),
            QueueError::UnknownHead(h) => write!(f, "host completed head {h}, not in flight"),
            QueueError::BadLen { head, len, cap } => {
                write!(f, "host claims {len} bytes in head {head} of {cap}")
            }
            QueueError::Mem(e) => write!(f, "ring unreachable: {e}"),
        }
    }
}

impl core::error::Error for QueueError {}

/// A completed chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsedBuf {
    /// The caller's token given to [`DriverQueue::add`].
    pub token: u32,
    /// Bytes the host reported (`≤` the chain's writable capacity).
    pub len: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct InFlight {
    token: u32,
    ndesc: u16,
    read_cap: u32,
    write_cap: u32,
    live: bool,
}

/// The driver side of one split virtqueue.
#[derive(Debug, Clone)]
pub struct DriverQueue {
    // INVARIANT: `num` is a power of two in 1..=128 (checked by `new`).
    num: u16,
    desc: u64,
    avail: u64,
    used: u64,
    /// Free descriptors, linked through `next` (the driver's own copy).
    free_head: u16,
    num_free: u16,
    next: [u16; MAX],
    flight: [InFlight; MAX],
    avail_idx: u16,
    last_used: u16,
    event_idx: bool,
    kicks_suppressed: u64,
}

impl DriverQueue {
    /// A queue of `num` entries whose descriptor table and avail ring are
    /// at `desc` and `avail`, used ring at `used` (all card addresses).
    #[must_use]
    pub fn new(num: u16, desc: u64, avail: u64, used: u64) -> Option<Self> {
        if num == 0 || !num.is_power_of_two() || usize::from(num) > MAX {
            return None;
        }
        let mut next = [0u16; MAX];
        for (i, n) in next.iter_mut().enumerate() {
            *n = (i + 1) as u16;
        }
        Some(Self {
            num,
            desc,
            avail,
            used,
            free_head: 0,
            num_free: num,
            next,
            flight: [InFlight::default(); MAX],
            avail_idx: 0,
            last_used: 0,
            event_idx: false,
            kicks_suppressed: 0,
        })
    }

    /// A queue over a legacy ring at `ring` (desc, avail, aligned used) but
    /// with the used ring re-homed to `used`.
    #[must_use]
    pub fn in_block(num: u16, ring: u64, used: u64, align: usize) -> Option<Self> {
        let l = SplitLayout::new(num, align);
        Self::new(num, ring, ring + l.avail as u64, used)
    }

    /// Entries.
    #[must_use]
    pub fn num(&self) -> u16 {
        self.num
    }

    /// Free descriptors.
    #[must_use]
    pub fn num_free(&self) -> u16 {
        self.num_free
    }

    /// Card address of the used ring.
    #[must_use]
    pub fn used_addr(&self) -> u64 {
        self.used
    }

    /// Card address of the descriptor table.
    #[must_use]
    pub fn desc_addr(&self) -> u64 {
        self.desc
    }

    /// Card address of the avail ring.
    #[must_use]
    pub fn avail_addr(&self) -> u64 {
        self.avail
    }

    /// Whether `head` starts a chain the driver made available and has not
    /// reaped.
    #[must_use]
    pub fn head_in_flight(&self, head: u16) -> bool {
        self.flight.get(usize::from(head)).is_some_and(|f| f.live)
    }

    /// Makes `head` available once more without a new chain behind it (a
    /// double submission, as a buggy or hostile driver makes one: micemu's
    /// fault injection). Nothing of the driver's record changes but the
    /// avail index, so the host's second completion of the chain is refused
    /// by [`DriverQueue::pop_used`] ([`QueueError::UnknownHead`]).
    pub fn offer_again(&mut self, ring_mem: &impl Memory, head: u16) -> Result<(), QueueError> {
        if self.in_flight() == self.num {
            return Err(QueueError::Full);
        }
        let slot = self.avail_idx & (self.num - 1);
        ring_mem.write_u16(self.avail + avail_entry(slot) as u64, head)?;
        ring_mem.write_barrier();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        ring_mem.write_u16(self.avail + 2, self.avail_idx)?;
        Ok(())
    }

    /// Whether EVENT_IDX was negotiated for this queue.
    pub fn set_event_idx(&mut self, on: bool) {
        self.event_idx = on;
    }

    /// Zeroes the descriptor table and avail ring (in `ring_mem`, the
    /// host's block) and the used ring (in `mem`), as find_vqs does.
    pub fn zero(&self, ring_mem: &impl Memory, mem: &impl Memory) -> Result<(), MemError> {
        zero_range(ring_mem, self.desc, desc_table_size(self.num))?;
        zero_range(ring_mem, self.avail, avail_size(self.num))?;
        zero_range(mem, self.used, used_size(self.num))
    }

    /// Makes a chain available: readable buffers first, then writable ones.
    /// Returns the head; `token` comes back with the completion.
    pub fn add(&mut self, ring_mem: &impl Memory, bufs: &[Buf], token: u32) -> Result<u16, QueueError> {
        let first_write = bufs.iter().position(|b| b.write).unwrap_or(bufs.len());
        if bufs.is_empty() || bufs[first_write..].iter().any(|b| !b.write) || bufs.iter().any(|b| b.len == 0)
        {
            return Err(QueueError::BadChain);
        }
        if bufs.len() > usize::from(self.num_free) {
            return Err(QueueError::Full);
        }
        let head = self.free_head;
        let mut i = head;
        let (mut read_cap, mut write_cap) = (0u32, 0u32);
        for (k, b) in bufs.iter().enumerate() {
            let last = k + 1 == bufs.len();
            let next = self.next[usize::from(i)];
            let mut flags = if b.write { VRING_DESC_F_WRITE } else { 0 };
            if !last {
                flags |= VRING_DESC_F_NEXT;
            }
            let d = VringDesc {
                addr: b.addr,
                len: b.len,
                flags,
                next: if last { 0 } else { next },
            };
            ring_mem.write(self.desc + u64::from(i) * VringDesc::SIZE as u64, &d.to_bytes())?;
            if b.write {
                write_cap = write_cap.saturating_add(b.len);
            } else {
                read_cap = read_cap.saturating_add(b.len);
            }
            if !last {
                i = next;
            }
        }
        self.free_head = self.next[usize::from(i)];
        self.num_free -= bufs.len() as u16;
        self.flight[usize::from(head)] = InFlight {
            token,
            ndesc: bufs.len() as u16,
            read_cap,
            write_cap,
            live: true,
        };
        let slot = self.avail_idx & (self.num - 1);
        ring_mem.write_u16(self.avail + avail_entry(slot) as u64, head)?;
        ring_mem.write_barrier();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        ring_mem.write_u16(self.avail + 2, self.avail_idx)?;
        Ok(head)
    }

    /// Whether the host should be kicked after adding chains since
    /// `old_idx` (the avail index before them): with EVENT_IDX when the
    /// host's `avail_event` was crossed; otherwise unless the host set
    /// `VRING_USED_F_NO_NOTIFY` (it does while chains wait for it). The full
    /// barrier orders the avail index written before the host's word read.
    pub fn kick_needed(&mut self, mem: &impl Memory, old_idx: u16) -> Result<bool, MemError> {
        mem.full_barrier();
        let kick = if self.event_idx {
            let ev = mem.read_u16(self.used + avail_event_offset(self.num) as u64)?;
            need_event(ev, self.avail_idx, old_idx)
        } else {
            mem.read_u16(self.used)? & crate::abi::virtio::VRING_USED_F_NO_NOTIFY == 0
        };
        if !kick {
            self.kicks_suppressed += 1;
        }
        Ok(kick)
    }

    /// The driver's avail index (for [`DriverQueue::kick_needed`]).
    #[must_use]
    pub fn avail_idx(&self) -> u16 {
        self.avail_idx
    }

    /// Asks the host for interrupts (or not): `avail.flags` without
    /// EVENT_IDX, `used_event` with it.
    pub fn set_interrupts(&self, ring_mem: &impl Memory, on: bool) -> Result<(), MemError> {
        if self.event_idx {
            let ev = if on {
                self.last_used
            } else {
                self.last_used.wrapping_sub(1)
            };
            ring_mem.write_u16(self.avail + used_event_offset(self.num) as u64, ev)
        } else {
            let flags = if on { 0 } else { VRING_AVAIL_F_NO_INTERRUPT };
            ring_mem.write_u16(self.avail, flags)
        }
    }

    /// Whether the host has completed chains the driver has not reaped.
    pub fn has_used(&self, mem: &impl Memory) -> Result<bool, MemError> {
        Ok(mem.read_u16(self.used + 2)? != self.last_used)
    }

    /// Reaps one completed chain, checking what the host wrote.
    pub fn pop_used(&mut self, mem: &impl Memory) -> Result<Option<UsedBuf>, QueueError> {
        let idx = mem.read_u16(self.used + 2)?;
        let pending = idx.wrapping_sub(self.last_used);
        if pending == 0 {
            return Ok(None);
        }
        if pending > self.num {
            return Err(QueueError::UsedJump {
                idx,
                last: self.last_used,
            });
        }
        mem.read_barrier();
        let slot = self.last_used & (self.num - 1);
        let mut raw = [0u8; VringUsedElem::SIZE];
        mem.read(self.used + used_entry(slot) as u64, &mut raw)?;
        let e = VringUsedElem::from_bytes(&raw);
        let head = u16::try_from(e.id)
            .ok()
            .filter(|&h| h < self.num && self.flight[usize::from(h)].live)
            .ok_or(QueueError::UnknownHead(e.id))?;
        let f = self.flight[usize::from(head)];
        // The MIC host reports the bytes it consumed in both directions, so
        // a chain's whole size is the most it may claim.
        let total = f.read_cap.saturating_add(f.write_cap);
        if e.len > total {
            return Err(QueueError::BadLen {
                head,
                len: e.len,
                cap: total,
            });
        }
        self.free_chain(head, f.ndesc);
        self.last_used = self.last_used.wrapping_add(1);
        Ok(Some(UsedBuf {
            token: f.token,
            len: e.len,
        }))
    }

    fn free_chain(&mut self, head: u16, ndesc: u16) {
        let mut i = head;
        for _ in 1..ndesc {
            i = self.next[usize::from(i)];
        }
        self.next[usize::from(i)] = self.free_head;
        self.free_head = head;
        self.num_free += ndesc;
        self.flight[usize::from(head)].live = false;
    }

    /// Chains in flight.
    #[must_use]
    pub fn in_flight(&self) -> u16 {
        self.num - self.num_free
    }

    /// Kicks skipped because the host did not want them.
    #[must_use]
    pub fn kicks_suppressed(&self) -> u64 {
        self.kicks_suppressed
    }
}
