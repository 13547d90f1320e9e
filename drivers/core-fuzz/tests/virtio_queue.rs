//! Differential test: for valid chains, mic-core's host ring walker
//! ([`HostVring`]) hands out exactly the buffers (address, length,
//! direction, order) that rust-vmm's `virtio-queue` finds in the same rings,
//! writes the same used entries and index, and makes the same EVENT_IDX
//! notification decisions.
//!
//! The rings are built with `virtio-queue`'s own `MockSplitQueue` in a
//! two-region guest memory: card memory at 0 (buffers, indirect tables, the
//! used ring) and host ring memory at 1 TiB (descriptor table and avail
//! ring). The layouts differ where MIC differs: the mock puts the used ring
//! right after the avail ring, while a MIC card re-homes it into its own
//! memory; the test points the oracle's queue at the card address too
//! (`try_set_used_ring_address`) and activates mic-core's ring with the same
//! address. mic-core reads its own two fake memories, into which the test
//! copies the bytes the mock wrote, so both read identical rings.
//!
//! What mic-core reports as a chain's buffers is what it asks the caller's
//! buffers to move: one COPY_DESC may be cut by the caller's capacity, so
//! the test consumes each chain in random pieces and compares the calls
//! with the oracle's descriptors cut at the same offsets.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use mic_core::abi::virtio::{
    VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE, avail_size, used_size,
};
use mic_core::fake::FakeMem;
use mic_core::host::vop::{CopyFault, HostVring, RingFeatures, UserBuffers};
use mic_core::hw::Memory;
use proptest::prelude::*;
use virtio_queue::desc::RawDescriptor;
use virtio_queue::desc::split::Descriptor as SplitDescriptor;
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Card memory: at 0 in the guest memory, 0.. in mic-core's card fake.
const CARD_LEN: usize = 1 << 20;
/// Host ring memory: far above card memory, with a gap.
const HOST_BASE: u64 = 1 << 40;
const HOST_LEN: usize = 16 << 10;
/// Where the card re-homes the used ring.
const USED_AT: u64 = 0xF_0000;
/// Indirect tables, in card memory.
const INDIRECT_AT: u64 = 0xE_0000;
/// Buffers lie below this.
const BUF_SPAN: u64 = 0xD_0000;
/// mic-core's info word and first used ring (outside what the mock lays
/// out).
const INFO_AT: u64 = HOST_BASE + 0x3000;
const HOST_USED_AT: u64 = HOST_BASE + 0x2000;

/// One buffer: length and direction (its address comes from the case).
#[derive(Debug, Clone, Copy)]
struct BufSpec {
    addr: u64,
    len: u32,
    write: bool,
}

/// One chain: direct buffers, then (optionally) an indirect table holding
/// the rest; how much of it the caller consumes and in what pieces.
#[derive(Debug, Clone)]
struct ChainSpec {
    direct: Vec<BufSpec>,
    indirect: Option<Vec<BufSpec>>,
    /// Caller capacities of the successive COPY_DESCs (the last completes).
    pieces: Vec<u32>,
    /// The card's `used_event` while this chain is completed.
    used_event: u16,
}

impl ChainSpec {
    /// Ring entries it takes (the indirect descriptor counts).
    fn ring_descs(&self) -> usize {
        self.direct.len() + usize::from(self.indirect.is_some())
    }

    /// Everything the chain holds, as the device sees it.
    fn bufs(&self) -> impl Iterator<Item = &BufSpec> {
        self.direct.iter().chain(self.indirect.iter().flatten())
    }
}

#[derive(Debug, Clone)]
struct Case {
    num: u16,
    event_idx: bool,
    /// Batches of chains offered together (each batch fits the ring).
    batches: Vec<Vec<ChainSpec>>,
    /// Descriptor indices in the order chains take them.
    perm: Vec<u16>,
    /// Start the indices this close below 65536 (u16 wrap), or at 0.
    near_wrap: Option<u16>,
}

/// One call mic-core made on the caller's buffers: (offset, addr, len, write).
type Call = (u64, u64, u32, bool);

#[derive(Default)]
struct Recorder {
    cap: u64,
    calls: Vec<Call>,
}

impl UserBuffers for Recorder {
    fn capacity(&self) -> u64 {
        self.cap
    }
    fn card_to_user(&mut self, off: u64, card_addr: u64, len: u32) -> Result<(), CopyFault> {
        self.calls.push((off, card_addr, len, false));
        Ok(())
    }
    fn user_to_card(&mut self, off: u64, card_addr: u64, len: u32) -> Result<(), CopyFault> {
        self.calls.push((off, card_addr, len, true));
        Ok(())
    }
}

/// `1..=max` buffers, readable ones first.
fn bufs_strategy(max: usize) -> impl Strategy<Value = Vec<BufSpec>> {
    let buf = (
        0..BUF_SPAN - 0x1000,
        prop_oneof![1u32..=16, 1u32..=4096],
        any::<bool>(),
    )
        .prop_map(|(addr, len, write)| BufSpec { addr, len, write });
    prop::collection::vec(buf, 1..=max).prop_map(|mut v| {
        v.sort_by_key(|b| b.write);
        v
    })
}

/// A valid chain for a ring of `num`: direct buffers, and sometimes the
/// rest in an indirect table (mic-core counts the indirect descriptor with
/// its table: direct + 1 + table ≤ num).
fn chain_strategy(num: u16) -> impl Strategy<Value = ChainSpec> {
    let num = usize::from(num);
    (
        bufs_strategy(num),
        any::<bool>(),
        any::<prop::sample::Index>(),
        any::<u16>(),
        prop::collection::vec(1u32..=8192, 1..4),
    )
        .prop_map(move |(bufs, indirect, cut, used_event, pieces)| {
            let n = bufs.len();
            let (direct, indirect) = if indirect && n < num {
                let d = cut.index(n);
                (bufs[..d].to_vec(), Some(bufs[d..].to_vec()))
            } else {
                (bufs, None)
            };
            ChainSpec {
                direct,
                indirect,
                pieces,
                used_event,
            }
        })
}

fn case_strategy() -> impl Strategy<Value = Case> {
    (0u32..=7, any::<bool>(), prop::option::weighted(0.25, 1u16..=256)).prop_flat_map(
        |(log2, event_idx, near_wrap)| {
            let num = 1u16 << log2;
            let perm = Just((0..num).collect::<Vec<_>>()).prop_shuffle();
            let batches = prop::collection::vec(
                prop::collection::vec(chain_strategy(num), 1..=usize::from(num).min(6)),
                1..=6,
            );
            (Just(num), Just(event_idx), batches, perm, Just(near_wrap)).prop_map(
                |(num, event_idx, batches, perm, near_wrap)| {
                    // Keep each batch within the ring: drop the chains that
                    // would overflow it (the first always fits).
                    let batches = batches
                        .into_iter()
                        .map(|b| {
                            let mut used = 0;
                            b.into_iter()
                                .filter(|c| {
                                    used += c.ring_descs();
                                    used <= usize::from(num)
                                })
                                .collect::<Vec<_>>()
                        })
                        .collect();
                    Case {
                        num,
                        event_idx,
                        batches,
                        perm,
                        near_wrap,
                    }
                },
            )
        },
    )
}

fn raw(addr: u64, len: u32, flags: u16, next: u16) -> RawDescriptor {
    RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next))
}

/// Where every wrap case starts from (then walks a few hundred more).
const WARM: u16 = 0u16.wrapping_sub(512);

/// Runs one-byte chains through head 0 until mic-core's indices reach `to`.
fn trivial_chains(vr: &mut HostVring, host: &FakeMem, card: &FakeMem, to: u16) {
    let num = vr.num();
    let desc = mic_core::abi::virtio::VringDesc {
        addr: 0x10,
        len: 1,
        flags: 0,
        next: 0,
    };
    host.write(HOST_BASE, &desc.to_bytes()).unwrap();
    let avail = avail_addr(num);
    while vr.last_avail() != to {
        let i = vr.last_avail();
        host.write_u16(avail + 4 + 2 * u64::from(i % num), 0).unwrap();
        host.write_u16(avail + 2, i.wrapping_add(1)).unwrap();
        let mut rec = Recorder {
            cap: 1,
            ..Recorder::default()
        };
        assert!(vr.copy(host, card, &mut rec, true).unwrap().completed);
    }
    assert_eq!(vr.last_used(), to);
}

/// mic-core's ring of `num` entries after [`WARM`] one-byte chains, with
/// the used ring they left in card memory: walked once per ring size.
fn warmed(num: u16) -> (HostVring, Vec<u8>) {
    type Warmed = HashMap<u16, (HostVring, Vec<u8>)>;
    static CACHE: LazyLock<Mutex<Warmed>> = LazyLock::new(|| Mutex::new(HashMap::new()));
    let mut cache = CACHE.lock().unwrap();
    let w = cache.entry(num).or_insert_with(|| {
        let host = FakeMem::with_base(HOST_BASE, HOST_LEN);
        let card = FakeMem::new(CARD_LEN);
        let mut vr = new_ring(num);
        vr.activate(&card, USED_AT, RingFeatures::default()).unwrap();
        trivial_chains(&mut vr, &host, &card, WARM);
        (vr, card.bytes(USED_AT, used_size(num)))
    });
    w.clone()
}

/// The layout `MockSplitQueue::create` uses at `HOST_BASE`.
fn avail_addr(num: u16) -> u64 {
    HOST_BASE + 16 * u64::from(num)
}

/// A mic-core ring over the mock's descriptor table and avail ring; its
/// used ring starts in host memory (at a spot of its own, as the mock's
/// overlaps the avail ring) and is re-homed before any chain moves.
fn new_ring(num: u16) -> HostVring {
    HostVring::new(num, HOST_BASE, avail_addr(num), HOST_USED_AT, INFO_AT).unwrap()
}

/// The oracle's descriptors of one chain: (addr, len, write), in order.
fn oracle_chain(q: &mut Queue, gm: &GuestMemoryMmap) -> (u16, Vec<(u64, u32, bool)>) {
    let chain = q.pop_descriptor_chain(gm).expect("the oracle finds the chain");
    let head = chain.head_index();
    let descs = chain.map(|d| (d.addr().0, d.len(), d.is_write_only())).collect();
    (head, descs)
}

/// The caller's capacities up to the one that consumes the whole chain of
/// `total` bytes (all of them if they never do: a partly used chain).
fn pieces_for(pieces: &[u32], total: u64) -> Vec<u32> {
    let mut sum = 0u64;
    let mut out = Vec::new();
    for &p in pieces {
        out.push(p);
        sum += u64::from(p);
        if sum >= total {
            break;
        }
    }
    out
}

/// What the caller's buffers must see when `descs` is consumed in
/// `pieces`, and the bytes moved in all.
fn expected_calls(descs: &[(u64, u32, bool)], pieces: &[u32]) -> (Vec<Vec<Call>>, u32) {
    let mut out = Vec::new();
    let (mut i, mut off, mut total) = (0usize, 0u32, 0u32);
    for &cap in pieces {
        let mut calls = Vec::new();
        let mut moved = 0u32;
        while i < descs.len() && moved < cap {
            let (addr, len, write) = descs[i];
            let n = (len - off).min(cap - moved);
            calls.push((u64::from(moved), addr + u64::from(off), n, write));
            moved += n;
            off += n;
            if off == len {
                i += 1;
                off = 0;
            }
        }
        total += moved;
        out.push(calls);
    }
    (out, total)
}

/// Writes chain `c` through descriptors `idx` of the mock's table (the
/// indirect descriptor last), its indirect table at `table_at` in both card
/// memories; returns the table's bytes.
fn write_chain(
    mock: &MockSplitQueue<'_, GuestMemoryMmap>,
    gm: &GuestMemoryMmap,
    card: &FakeMem,
    c: &ChainSpec,
    idx: &[u16],
    table_at: u64,
) -> u64 {
    let flags = |write: bool, more: bool| {
        (if write { VRING_DESC_F_WRITE } else { 0 }) | if more { VRING_DESC_F_NEXT } else { 0 }
    };
    for (k, b) in c.direct.iter().enumerate() {
        let more = k + 1 < idx.len();
        let next = if more { idx[k + 1] } else { 0 };
        mock.desc_table()
            .store(idx[k], raw(b.addr, b.len, flags(b.write, more), next))
            .unwrap();
    }
    let Some(table) = &c.indirect else {
        return 0;
    };
    for (k, b) in table.iter().enumerate() {
        let more = k + 1 < table.len();
        let at = GuestAddress(table_at + 16 * k as u64);
        let next = if more { (k + 1) as u16 } else { 0 };
        gm.write_obj(raw(b.addr, b.len, flags(b.write, more), next), at)
            .unwrap();
    }
    let len = 16 * table.len() as u32;
    let last = *idx.last().expect("the indirect descriptor");
    mock.desc_table()
        .store(last, raw(table_at, len, VRING_DESC_F_INDIRECT, 0))
        .unwrap();
    // mic-core reads the table from its own card memory.
    let mut bytes = vec![0u8; len as usize];
    gm.read_slice(&mut bytes, GuestAddress(table_at)).unwrap();
    card.write(table_at, &bytes).unwrap();
    u64::from(len)
}

fn run_case(case: &Case) -> Result<(), TestCaseError> {
    let num = case.num;
    let gm = GuestMemoryMmap::<()>::from_ranges(&[
        (GuestAddress(0), CARD_LEN),
        (GuestAddress(HOST_BASE), HOST_LEN),
    ])
    .unwrap();
    let mock = MockSplitQueue::create(&gm, GuestAddress(HOST_BASE), num);
    prop_assert_eq!(mock.avail_addr().0, avail_addr(num));
    let mut q: Queue = mock.create_queue().unwrap();
    q.try_set_used_ring_address(GuestAddress(USED_AT)).unwrap();
    q.set_event_idx(case.event_idx);

    let host = FakeMem::with_base(HOST_BASE, HOST_LEN);
    let card = FakeMem::new(CARD_LEN);
    let features = RingFeatures {
        event_idx: case.event_idx,
        indirect: true,
    };
    // Start at 0, or just below the 16-bit wrap with both sides agreeing.
    let mut vr = match case.near_wrap {
        None => new_ring(num),
        Some(below) => {
            let start = 0u16.wrapping_sub(below);
            let (mut vr, used) = warmed(num);
            card.write(USED_AT, &used).unwrap();
            trivial_chains(&mut vr, &host, &card, start);
            gm.write_slice(&card.bytes(USED_AT, used_size(num)), GuestAddress(USED_AT))
                .unwrap();
            mock.avail().idx().store(start);
            q.set_next_avail(start);
            q.set_next_used(start);
            vr
        }
    };
    vr.activate(&card, USED_AT, features).unwrap();
    let mut avail_idx = mock.avail().idx().load();

    let mut next_desc = 0usize;
    let mut next_table = INDIRECT_AT;
    for batch in &case.batches {
        // The card side: write each chain, offer its head.
        let mut offered = Vec::new();
        for c in batch {
            let idx: Vec<u16> = (0..c.ring_descs())
                .map(|k| case.perm[(next_desc + k) % usize::from(num)])
                .collect();
            next_desc += c.ring_descs();
            let head = idx[0];
            next_table += write_chain(&mock, &gm, &card, c, &idx, next_table);
            let slot = usize::from(avail_idx % num);
            mock.avail().ring().ref_at(slot).unwrap().store(head);
            avail_idx = avail_idx.wrapping_add(1);
            offered.push(head);
        }
        mock.avail().idx().store(avail_idx);
        // mic-core reads the same descriptor table and avail ring.
        let span = 16 * usize::from(num) + avail_size(num);
        let mut bytes = vec![0u8; span];
        gm.read_slice(&mut bytes, GuestAddress(HOST_BASE)).unwrap();
        host.write(HOST_BASE, &bytes).unwrap();

        // The host side: each chain through both.
        for (c, &head) in batch.iter().zip(&offered) {
            // The card's used_event while this chain completes.
            let ev = avail_addr(num) + 4 + 2 * u64::from(num);
            host.write_u16(ev, c.used_event).unwrap();
            gm.write_obj(c.used_event, GuestAddress(ev)).unwrap();

            let (ohead, descs) = oracle_chain(&mut q, &gm);
            prop_assert_eq!(ohead, head);
            let want: Vec<_> = c.bufs().map(|b| (b.addr, b.len, b.write)).collect();
            prop_assert_eq!(&descs, &want, "the oracle read back what was written");
            let total = descs.iter().map(|d| u64::from(d.1)).sum();
            let pieces = pieces_for(&c.pieces, total);
            let (want_calls, consumed) = expected_calls(&descs, &pieces);
            for (k, (&cap, want)) in pieces.iter().zip(&want_calls).enumerate() {
                let last = k + 1 == pieces.len();
                let mut rec = Recorder {
                    cap: u64::from(cap),
                    ..Recorder::default()
                };
                let got = vr.copy(&host, &card, &mut rec, last).unwrap();
                prop_assert_eq!(&rec.calls, want, "piece {} of chain {}", k, head);
                prop_assert_eq!(got.completed, last);
                if last {
                    q.add_used(&gm, ohead, consumed).unwrap();
                    let notify = q.needs_notification(&gm).unwrap();
                    prop_assert_eq!(got.notify, notify, "notification decision");
                }
            }
            prop_assert_eq!(vr.last_avail(), q.next_avail());
            prop_assert_eq!(vr.last_used(), q.next_used());
            prop_assert_eq!(host.read_u16(INFO_AT).unwrap(), vr.last_avail());
            // Same used entries, same used index, in card memory.
            let n = 4 + 8 * usize::from(num);
            let mut oracle_used = vec![0u8; n];
            gm.read_slice(&mut oracle_used, GuestAddress(USED_AT)).unwrap();
            prop_assert_eq!(card.bytes(USED_AT, n), oracle_used);
        }
    }
    // Nothing left over on either side.
    prop_assert!(!vr.pending(&host).unwrap());
    prop_assert!(q.pop_descriptor_chain(&gm).is_none());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn walker_agrees_with_virtio_queue(case in case_strategy()) {
        run_case(&case)?;
    }
}

/// The same rings at the 16-bit wrap, every ring size, deterministically.
#[test]
fn walker_agrees_across_the_u16_wrap_for_every_size() {
    for log2 in 0..=7 {
        let num = 1u16 << log2;
        let chain = |k: u16| ChainSpec {
            direct: vec![
                BufSpec {
                    addr: 0x1000 * u64::from(k),
                    len: 100,
                    write: false,
                },
                BufSpec {
                    addr: 0x8000,
                    len: 50,
                    write: true,
                },
            ][..if num == 1 { 1 } else { 2 }]
                .to_vec(),
            indirect: None,
            pieces: vec![60, 1000],
            used_event: k,
        };
        let per = if num == 1 { 1 } else { usize::from(num) / 2 };
        let case = Case {
            num,
            event_idx: log2 % 2 == 0,
            batches: (0..4)
                .map(|b| (0..per as u16).map(|k| chain(b * 16 + k)).collect())
                .collect(),
            perm: (0..num).rev().collect(),
            near_wrap: Some(per as u16 * 2 - 1),
        };
        run_case(&case).unwrap();
    }
}
