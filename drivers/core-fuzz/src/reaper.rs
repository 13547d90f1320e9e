//! Target `used_reaper`: the card's driver queue ([`DriverQueue`]) adding
//! chains and reaping used entries that a hostile host writes (entries,
//! the used index, descriptor-table scribbles), interleaved.
//!
//! A model of the chains in flight (token, descriptors, capacity) is kept
//! beside the queue. Invariants: nothing panics; every chain `add` writes
//! uses only free descriptors, is the chain asked for, and is published at
//! the next avail slot; `add` refuses exactly the chains that are empty,
//! unordered or too long for the free descriptors; every reaped token is in
//! flight and is reaped once, with a length no larger than its chain; a
//! refused used entry changes nothing, and a used index that jumps past the
//! ring is refused; the free count always matches the model; the driver
//! writes only its descriptor table and avail ring, never the host's used
//! ring, and reads only the used ring.

use std::collections::BTreeMap;

use arbitrary::Arbitrary;
use mic_core::abi::virtio::{
    VRING_DESC_F_NEXT, VRING_DESC_F_WRITE, VringDesc, avail_entry, avail_size, used_entry, used_size,
};
use mic_core::card::vring::{Buf, DriverQueue, QueueError};
use mic_core::hw::Memory;

use crate::mem::Logged;

/// The ring memory (descriptor table and avail ring, host-side block).
const RING_LEN: usize = 4096;
/// Card memory holding the used ring.
const CARD_LEN: usize = 4096;
const USED: u64 = 0x400;
/// Most operations per input.
const MAX_OPS: usize = 256;

/// One buffer of a chain to add.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub struct BufIn {
    /// Card address.
    pub addr: u32,
    /// Length.
    pub len: u16,
    /// Device-writable.
    pub write: bool,
}

/// What happens next.
#[derive(Debug, Arbitrary)]
pub enum ReapOp {
    /// The driver adds a chain.
    Add(Vec<BufIn>),
    /// The host completes the oldest chain it has not completed, claiming
    /// `len` bytes (an honest host, as far as it goes).
    Complete { len: u32 },
    /// The host writes used entry `slot`.
    UsedElem { slot: u8, id: u32, len: u32 },
    /// The host sets the used index.
    UsedIdx(u16),
    /// The host bumps the used index.
    UsedBump(u8),
    /// The host scribbles on the descriptor table.
    Scribble { off: u16, data: Vec<u8> },
    /// The driver reaps one entry.
    Pop,
    /// The driver reaps until there is nothing (or an error).
    Drain,
    /// The driver asks for interrupts or not, and checks for kicks.
    Interrupts(bool),
}

/// A whole input.
#[derive(Debug, Arbitrary)]
pub struct ReapInput {
    /// log2 of the ring size (mod 8).
    pub log2: u8,
    /// EVENT_IDX negotiated.
    pub event_idx: bool,
    /// What happens.
    pub ops: Vec<ReapOp>,
}

#[derive(Debug, Clone)]
struct Chain {
    token: u32,
    descs: Vec<u16>,
    cap: u64,
}

struct Rig {
    ring: Logged,
    card: Logged,
    q: DriverQueue,
    num: u16,
    avail: u64,
    /// head → chain in flight.
    flight: BTreeMap<u16, Chain>,
    next_token: u32,
    /// The honest host's next avail index to complete and its used index.
    host_avail: u16,
    host_used: u16,
    /// Entries reaped so far (the driver's used index, as the model has it).
    reaped: u16,
}

impl Rig {
    fn new(input: &ReapInput) -> Self {
        let num = 1u16 << (input.log2 % 8);
        let ring = Logged::new(RING_LEN);
        let card = Logged::new(CARD_LEN);
        let avail = 16 * u64::from(num);
        let mut q = DriverQueue::new(num, 0, avail, USED).expect("a valid size");
        q.set_event_idx(input.event_idx);
        q.zero(&ring, &card).expect("rings inside memory");
        ring.take_writes();
        card.take_writes();
        ring.take_reads();
        card.take_reads();
        Self {
            ring,
            card,
            q,
            num,
            avail,
            flight: BTreeMap::new(),
            next_token: 0,
            host_avail: 0,
            host_used: 0,
            reaped: 0,
        }
    }

    fn in_flight_descs(&self) -> u16 {
        self.flight.values().map(|c| c.descs.len() as u16).sum()
    }

    fn check_counts(&self) {
        assert_eq!(self.q.num_free(), self.num - self.in_flight_descs(), "free count");
        assert_eq!(self.q.in_flight(), self.in_flight_descs());
    }

    fn run(&mut self, op: &ReapOp) {
        match op {
            ReapOp::Add(bufs) => self.add(bufs),
            ReapOp::Complete { len } => {
                let idx = self.ring.raw.read_u16(self.avail + 2).expect("avail idx");
                if idx == self.host_avail {
                    return;
                }
                let slot = self.host_avail % self.num;
                let head = self
                    .ring
                    .raw
                    .read_u16(self.avail + avail_entry(slot) as u64)
                    .expect("avail entry");
                self.host_avail = self.host_avail.wrapping_add(1);
                self.put_used(self.host_used % self.num, u32::from(head), *len);
                self.host_used = self.host_used.wrapping_add(1);
                self.card.poke(USED + 2, &self.host_used.to_le_bytes());
            }
            ReapOp::UsedElem { slot, id, len } => {
                self.put_used(u16::from(*slot) % self.num, *id, *len);
            }
            ReapOp::UsedIdx(i) => {
                self.host_used = *i;
                self.card.poke(USED + 2, &i.to_le_bytes());
            }
            ReapOp::UsedBump(n) => {
                self.host_used = self.host_used.wrapping_add(u16::from(*n));
                self.card.poke(USED + 2, &self.host_used.to_le_bytes());
            }
            ReapOp::Scribble { off, data } => {
                let off = u64::from(*off) % (16 * u64::from(self.num));
                let n = data.len().min((16 * u64::from(self.num) - off) as usize);
                self.ring.poke(off, &data[..n]);
            }
            ReapOp::Pop => {
                self.pop();
            }
            ReapOp::Drain => {
                for _ in 0..=self.num {
                    if !self.pop() {
                        break;
                    }
                }
            }
            ReapOp::Interrupts(on) => {
                let old = self.q.avail_idx();
                let _ = self.q.set_interrupts(&self.ring, *on);
                let _ = self.q.kick_needed(&self.card, old);
            }
        }
        self.check_counts();
        let avail_end = self.avail + avail_size(self.num) as u64;
        self.ring.check_writes(&[(0, avail_end)], "ring memory");
        self.card.check_writes(&[], "card memory (the host's used ring)");
        // The driver reads nothing back from the ring it writes (it keeps
        // its own record), and of card memory only the used ring.
        self.ring.check_reads(&[], "ring memory");
        let used_end = USED + used_size(self.num) as u64;
        self.card.check_reads(&[(USED, used_end)], "card memory");
    }

    fn put_used(&self, slot: u16, id: u32, len: u32) {
        let at = USED + used_entry(slot) as u64;
        self.card.poke(at, &id.to_le_bytes());
        self.card.poke(at + 4, &len.to_le_bytes());
    }

    fn add(&mut self, bufs: &[BufIn]) {
        let bufs: Vec<Buf> = bufs
            .iter()
            .take(usize::from(self.num) + 1)
            .map(|b| Buf {
                addr: u64::from(b.addr),
                len: u32::from(b.len),
                write: b.write,
            })
            .collect();
        let first_write = bufs.iter().position(|b| b.write).unwrap_or(bufs.len());
        let ordered = bufs[first_write..].iter().all(|b| b.write);
        let valid = !bufs.is_empty() && ordered && bufs.iter().all(|b| b.len > 0);
        let free = self.num - self.in_flight_descs();
        let old_avail = self.q.avail_idx();
        let token = self.next_token;
        self.next_token += 1;
        match self.q.add(&self.ring, &bufs, token) {
            Err(QueueError::BadChain) => assert!(!valid, "a valid chain refused"),
            Err(QueueError::Full) => assert!(valid && bufs.len() > usize::from(free), "refused as full"),
            Err(e) => panic!("add failed: {e}"),
            Ok(head) => {
                assert!(valid && bufs.len() <= usize::from(free));
                assert!(
                    head < self.num && !self.flight.contains_key(&head),
                    "head {head} in flight"
                );
                let owned: Vec<u16> = self.flight.values().flat_map(|c| c.descs.clone()).collect();
                let mut descs = Vec::new();
                let mut i = head;
                for (k, b) in bufs.iter().enumerate() {
                    assert!(
                        i < self.num && !owned.contains(&i) && !descs.contains(&i),
                        "descriptor {i} reused"
                    );
                    descs.push(i);
                    let mut raw = [0u8; 16];
                    self.ring.raw.read(u64::from(i) * 16, &mut raw).expect("table");
                    let d = VringDesc::from_bytes(&raw);
                    let last = k + 1 == bufs.len();
                    assert_eq!((d.addr, d.len), (b.addr, b.len));
                    assert_eq!(d.flags & VRING_DESC_F_WRITE != 0, b.write);
                    assert_eq!(d.flags & VRING_DESC_F_NEXT == 0, last);
                    i = d.next;
                }
                let slot = old_avail % self.num;
                let at = self.avail + avail_entry(slot) as u64;
                assert_eq!(self.ring.raw.read_u16(at).expect("avail"), head);
                assert_eq!(self.q.avail_idx(), old_avail.wrapping_add(1));
                assert_eq!(
                    self.ring.raw.read_u16(self.avail + 2).expect("avail"),
                    self.q.avail_idx()
                );
                let cap = bufs.iter().map(|b| u64::from(b.len)).sum();
                self.flight.insert(head, Chain { token, descs, cap });
            }
        }
    }

    /// One `pop_used`; whether it reaped something.
    fn pop(&mut self) -> bool {
        let free = self.q.num_free();
        let idx = self.card.raw.read_u16(USED + 2).expect("used idx");
        let pending = idx.wrapping_sub(self.reaped);
        let res = self.q.pop_used(&self.card);
        if pending > self.num {
            assert!(res.is_err(), "used index jumped by {pending} and was taken");
        }
        match res {
            Ok(None) => {
                assert_eq!(pending, 0, "entries pending and none reaped");
                assert!(!self.q.has_used(&self.card).expect("used ring inside"));
                false
            }
            Ok(Some(u)) => {
                let head = self
                    .flight
                    .iter()
                    .find(|(_, c)| c.token == u.token)
                    .map(|(h, _)| *h)
                    .expect("reaped a token not in flight (or twice)");
                let c = self.flight.remove(&head).expect("found above");
                assert!(u64::from(u.len) <= c.cap, "length beyond the chain");
                assert_eq!(self.q.num_free(), free + c.descs.len() as u16);
                self.reaped = self.reaped.wrapping_add(1);
                true
            }
            Err(_) => {
                assert_eq!(self.q.num_free(), free, "a refused entry changed the queue");
                false
            }
        }
    }
}

/// Runs the fuzzer's bytes (decoded as a [`ReapInput`]).
pub fn fuzz(data: &[u8]) {
    crate::run_bytes(data, run);
}

/// Runs one input.
pub fn run(input: &ReapInput) {
    let mut rig = Rig::new(input);
    assert!(USED + used_size(rig.num) as u64 <= CARD_LEN as u64);
    for op in input.ops.iter().take(MAX_OPS) {
        rig.run(op);
    }
}
