//! Target `vop_ring`: one `/dev/micN` device and its ring walker against a
//! card that writes anything anywhere it can (its own memory, the ring
//! blocks, the device page) between the host's operations.
//!
//! Two memories, as on the hardware: host memory (the device page, then the
//! ring blocks the host allocated) and card memory (GDDR, where buffers and
//! the re-homed used rings live). The input sets up the device (ring sizes,
//! offered features, the bytes of each descriptor table and avail ring, the
//! card memory), then runs a list of operations: card writes, descriptor
//! and avail helpers, COPY_DESC with `update_used` on or off, activation
//! with used-ring addresses, doorbells, card and host resets, removal.
//!
//! Invariants checked after every operation:
//! * nothing panics, every access the walker hands the caller's buffers is
//!   inside card memory and of the direction its descriptor says;
//! * the host writes host memory only in the device page, its own used
//!   rings (while not re-homed) and the info words — never a descriptor
//!   table or avail ring; it writes card memory only in re-homed used rings;
//! * it reads host memory only in the device page, the descriptor tables
//!   and the avail rings, and card memory (besides the caller's copies)
//!   only in the indirect tables of the chain it is fetching;
//! * every chain the walker takes is the chain a reference reading of the
//!   rings finds, no longer than the ring, and it is refused exactly when
//!   the reference finds it breaks a rule; a refused chain breaks the ring
//!   until a reset, and refused re-homed used rings shut every ring of the
//!   device until a reset;
//! * each completion writes `{head, bytes moved}` at the host's next used
//!   slot and publishes the host's own used index.

use arbitrary::Arbitrary;
use mic_core::abi::virtio::{
    SplitLayout, VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE, VringDesc, avail_entry,
    avail_size, used_entry, used_size,
};
use mic_core::abi::{
    BP_H2C_CONFIG_DB, CTRL_H2C_VDEV_DB, CTRL_USED_ADDRESS_UPDATED, CTRL_VDEV_RESET, DESC_STATUS, MIC_DP_SIZE,
    MIC_MAX_VRINGS, MIC_VIRTIO_RING_ALIGN, MicDeviceDesc, MicVqconfig, VQ_USED_ADDRESS, desc_size,
};
use mic_core::fake::FakeMmio;
use mic_core::host::HostDevice;
use mic_core::host::vop::ring::{Seg, UsedRing};
use mic_core::host::vop::{
    CopyError, CopyFault, DP_OFFSET, HostAlloc, HostBuf, HostVring, RingError, UserBuffers, VopDevice,
    VopError,
};
use mic_core::hw::{Memory, in_bounds};

use crate::mem::Logged;

/// Host memory: the device page, then room for four 128-entry ring blocks.
pub const HOST_LEN: usize = MIC_DP_SIZE + 4 * 8192;
/// Card memory: small, so that arbitrary addresses often land inside it.
pub const CARD_LEN: usize = 16 << 10;
const DMA_BASE: u64 = 0x1_0000_0000;
const CONFIG_DB: u8 = 5;
const VDEV_DB: u8 = 3;
/// Most bytes one COPY_DESC moves (the caller's buffer size).
const MAX_CAP: u16 = 4096;
/// Most operations run per input (bounds the time per input).
const MAX_OPS: usize = 96;

/// One vring to create.
#[derive(Debug, Arbitrary)]
pub struct RingInit {
    /// log2 of the ring size (taken mod 8: 1..=128 entries).
    pub log2: u8,
    /// Initial bytes of the descriptor table.
    pub desc: Vec<u8>,
    /// Initial bytes of the avail ring.
    pub avail: Vec<u8>,
}

/// A card address: mostly inside card memory, sometimes anything.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum Addr {
    /// An offset in card memory (mod its size).
    Card(u16),
    /// A raw 64-bit address.
    Raw(u64),
}

impl Addr {
    fn get(self) -> u64 {
        match self {
            Addr::Card(o) => u64::from(o) % CARD_LEN as u64,
            Addr::Raw(a) => a,
        }
    }
}

/// A descriptor length: mostly one that fits card memory, sometimes any.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum Len {
    /// Up to 4 KiB (0 included).
    Small(u16),
    /// Any 32-bit length.
    Raw(u32),
}

impl Len {
    fn get(self) -> u32 {
        match self {
            Len::Small(l) => u32::from(l) % 0x1001,
            Len::Raw(l) => l,
        }
    }
}

/// Descriptor flags: mostly the defined bits, sometimes any.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum Flags {
    /// NEXT, WRITE and INDIRECT as the low three bits.
    Known(u8),
    /// Any 16 bits.
    Raw(u16),
}

impl Flags {
    fn get(self) -> u16 {
        match self {
            Flags::Known(f) => u16::from(f & 7),
            Flags::Raw(f) => f,
        }
    }
}

/// A descriptor as the card writes it.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub struct DescIn {
    /// Buffer (or indirect table) address.
    pub addr: Addr,
    /// Length.
    pub len: Len,
    /// Flags.
    pub flags: Flags,
    /// Next index.
    pub next: u16,
}

impl DescIn {
    fn bytes(self) -> [u8; VringDesc::SIZE] {
        VringDesc {
            addr: self.addr.get(),
            len: self.len.get(),
            flags: self.flags.get(),
            next: self.next,
        }
        .to_bytes()
    }
}

/// What the test does next.
#[derive(Debug, Arbitrary)]
pub enum Op {
    /// The card writes bytes at an offset of ring `ring`'s block.
    RingWrite { ring: u8, off: u16, data: Vec<u8> },
    /// The card writes bytes into the device page.
    PageWrite { off: u16, data: Vec<u8> },
    /// The card writes its own memory.
    CardWrite { off: u16, data: Vec<u8> },
    /// The card writes descriptor `index` of ring `ring`.
    Desc { ring: u8, index: u8, desc: DescIn },
    /// The card writes a 16-byte descriptor into card memory (an indirect
    /// table entry).
    CardDesc { off: u16, desc: DescIn },
    /// The card writes a linked chain at descriptors `first`, `first + 1`,
    /// ... (mod the ring size) and offers it.
    Chain {
        ring: u8,
        first: u8,
        bufs: Vec<(Addr, Len, bool)>,
    },
    /// The card writes an indirect table at `table` in its memory, points
    /// descriptor `index` of ring `ring` at it, and offers that.
    Indirect {
        ring: u8,
        index: u8,
        table: u16,
        entries: Vec<DescIn>,
    },
    /// The card makes `head` available on ring `ring`.
    Offer { ring: u8, head: u16 },
    /// The card sets ring `ring`'s avail index.
    AvailIdx { ring: u8, idx: u16 },
    /// The card sets ring `ring`'s `used_event` / `avail.flags`.
    Event { ring: u8, used_event: u16, flags: u16 },
    /// MIC_VIRTIO_COPY_DESC on ring `ring`.
    Copy {
        ring: u8,
        cap: u16,
        update_used: bool,
        /// The caller's buffers fault at this offset.
        fault_at: Option<u16>,
    },
    /// The card re-homes the used rings, acks features, goes DRIVER_OK and
    /// rings the device's doorbell.
    Activate { used: [Addr; 4], features: u32 },
    /// A doorbell from the card with whatever the control block holds.
    Doorbell,
    /// The card resets the device (`vdev_reset`, then the doorbell).
    CardReset,
    /// The host stops the card.
    HostReset,
    /// The caller closes the file.
    Remove,
}

/// A whole input.
#[derive(Debug, Arbitrary)]
pub struct VopInput {
    /// The vrings (the first four; at least one is made).
    pub rings: Vec<RingInit>,
    /// Feature bits the host offers (INDIRECT_DESC is bit 28, EVENT_IDX 29).
    pub features: u32,
    /// Initial card memory.
    pub card: Vec<u8>,
    /// What happens then.
    pub ops: Vec<Op>,
}

/// Bump allocator over host memory after the device page.
#[derive(Debug, Default)]
struct Bump(u64);

impl HostAlloc for Bump {
    fn alloc(&mut self, len: usize) -> Option<HostBuf> {
        let offset = MIC_DP_SIZE as u64 + self.0;
        if offset + len as u64 > HOST_LEN as u64 {
            return None;
        }
        self.0 += len as u64;
        Some(HostBuf {
            offset,
            dma_addr: DMA_BASE + offset,
            len,
        })
    }
    fn free(&mut self, _: HostBuf) {}
}

/// One call the walker made on the caller's buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Call {
    off: u64,
    seg: Seg,
}

/// The caller's buffers: check every access and do it on card memory.
struct User<'a> {
    cap: u64,
    fault_at: Option<u64>,
    card: &'a Logged,
    calls: Vec<Call>,
}

impl User<'_> {
    fn access(&mut self, off: u64, card_addr: u64, len: u32, write: bool) -> Result<(), CopyFault> {
        assert!(len > 0, "empty access");
        assert!(
            off + u64::from(len) <= self.cap,
            "access past the caller's buffers"
        );
        assert!(
            in_bounds(card_addr, u64::from(len), CARD_LEN as u64),
            "walker handed out {len:#x} bytes at card {card_addr:#x}"
        );
        if self.fault_at.is_some_and(|f| f < off + u64::from(len)) {
            return Err(CopyFault);
        }
        self.calls.push(Call {
            off,
            seg: Seg {
                addr: card_addr,
                len,
                write,
            },
        });
        // The copy itself (the card's view, not logged as a host write).
        let mut buf = [0u8; MAX_CAP as usize];
        let b = &mut buf[..len as usize];
        if write {
            b.fill(off as u8);
            self.card.raw.fill(card_addr, b);
        } else {
            self.card.raw.read(card_addr, b).expect("checked above");
        }
        Ok(())
    }
}

impl UserBuffers for User<'_> {
    fn capacity(&self) -> u64 {
        self.cap
    }
    fn card_to_user(&mut self, off: u64, card_addr: u64, len: u32) -> Result<(), CopyFault> {
        self.access(off, card_addr, len, false)
    }
    fn user_to_card(&mut self, off: u64, card_addr: u64, len: u32) -> Result<(), CopyFault> {
        self.access(off, card_addr, len, true)
    }
}

/// Where one ring sits in host memory.
#[derive(Debug, Clone, Copy)]
struct RingAt {
    num: u16,
    block: u64,
    block_len: u64,
    desc: u64,
    avail: u64,
    host_used: u64,
    info: u64,
}

/// What a reference reading of the rings says the next fetch finds.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Fetch {
    /// Nothing available.
    Nothing,
    /// A chain that breaks a rule.
    Invalid,
    /// A valid chain.
    Chain { head: u16, segs: Vec<Seg> },
}

/// A chain the walker holds, as the reference read it.
#[derive(Debug, Clone)]
struct Model {
    head: u16,
    segs: Vec<Seg>,
    pos: usize,
    off: u32,
    consumed: u32,
}

/// Reads the next chain the way ring.rs documents its rules, written
/// independently of it; adds each indirect table it accepted (the only card
/// memory a fetch may read) to `tables`.
fn reference_fetch(
    host: &Logged,
    card: &Logged,
    r: RingAt,
    last_avail: u16,
    indirect_ok: bool,
    tables: &mut Vec<(u64, u64)>,
) -> Fetch {
    let (hmem, cmem) = (&host.raw, &card.raw);
    let num = u32::from(r.num);
    let idx = hmem.read_u16(r.avail + 2).expect("avail inside host memory");
    let pending = idx.wrapping_sub(last_avail);
    if pending == 0 {
        return Fetch::Nothing;
    }
    if u32::from(pending) > num {
        return Fetch::Invalid;
    }
    let slot = last_avail % r.num;
    let head = hmem
        .read_u16(r.avail + avail_entry(slot) as u64)
        .expect("avail entry");
    if u32::from(head) >= num {
        return Fetch::Invalid;
    }
    let mut table: Option<(u64, u32)> = None;
    let mut i = u32::from(head);
    let mut segs = Vec::new();
    let mut count = 0;
    let mut total = 0u64;
    let mut seen_write = false;
    loop {
        count += 1;
        if count > num {
            return Fetch::Invalid;
        }
        let mut raw = [0u8; 16];
        match table {
            None => hmem
                .read(r.desc + u64::from(i) * 16, &mut raw)
                .expect("table in host memory"),
            Some((base, _)) => cmem
                .read(base + u64::from(i) * 16, &mut raw)
                .expect("table checked"),
        }
        let d = VringDesc::from_bytes(&raw);
        let known = VRING_DESC_F_NEXT | VRING_DESC_F_WRITE | VRING_DESC_F_INDIRECT;
        if d.flags & !known != 0 {
            return Fetch::Invalid;
        }
        if d.flags & VRING_DESC_F_INDIRECT != 0 {
            let entries = d.len / 16;
            let bad = table.is_some()
                || !indirect_ok
                || d.flags & VRING_DESC_F_NEXT != 0
                || d.len == 0
                || d.len % 16 != 0
                || entries > num
                || !in_bounds(d.addr, u64::from(d.len), CARD_LEN as u64);
            if bad {
                return Fetch::Invalid;
            }
            table = Some((d.addr, entries));
            tables.push((d.addr, d.addr + u64::from(d.len)));
            i = 0;
            continue;
        }
        let write = d.flags & VRING_DESC_F_WRITE != 0;
        total += u64::from(d.len);
        if d.len == 0
            || !in_bounds(d.addr, u64::from(d.len), CARD_LEN as u64)
            || (seen_write && !write)
            || total > u64::from(u32::MAX)
        {
            return Fetch::Invalid;
        }
        seen_write |= write;
        segs.push(Seg {
            addr: d.addr,
            len: d.len,
            write,
        });
        if d.flags & VRING_DESC_F_NEXT == 0 {
            return Fetch::Chain { head, segs };
        }
        let limit = table.map_or(num, |(_, n)| n);
        if u32::from(d.next) >= limit {
            return Fetch::Invalid;
        }
        i = u32::from(d.next);
    }
}

/// The whole rig for one input.
struct Rig {
    mmio: FakeMmio,
    host: Logged,
    card: Logged,
    dev: HostDevice,
    alloc: Bump,
    v: VopDevice,
    rings: Vec<RingAt>,
    models: Vec<Option<Model>>,
}

fn block(input: &VopInput) -> (Vec<u8>, Vec<u16>) {
    let nums: Vec<u16> = input
        .rings
        .iter()
        .take(usize::from(MIC_MAX_VRINGS))
        .map(|r| 1u16 << (r.log2 % 8))
        .collect();
    let nums = if nums.is_empty() { vec![8] } else { nums };
    let d = MicDeviceDesc {
        ty: mic_core::abi::virtio::id::NET,
        num_vq: nums.len() as u8,
        feature_len: 4,
        config_len: 0,
        status: 0,
    };
    let mut b = vec![0u8; desc_size(&d)];
    b[..8].copy_from_slice(&d.to_bytes());
    for (i, &num) in nums.iter().enumerate() {
        let vq = MicVqconfig {
            address: 0,
            used_address: 0,
            num,
        };
        b[d.vq_offset(i)..d.vq_offset(i) + MicVqconfig::SIZE].copy_from_slice(&vq.to_bytes());
    }
    let f = d.features_offset();
    b[f..f + 4].copy_from_slice(&input.features.to_le_bytes());
    (b, nums)
}

impl Rig {
    fn new(input: &VopInput) -> Option<Self> {
        let mmio = FakeMmio::new();
        let host = Logged::new(HOST_LEN);
        let card = Logged::new(CARD_LEN);
        let mut dev = HostDevice::probe(&mmio, &host, DMA_BASE).ok()?;
        host.raw.fill(DP_OFFSET + BP_H2C_CONFIG_DB as u64, &[CONFIG_DB]);
        let mut alloc = Bump::default();
        let mut v = VopDevice::new();
        let (blk, nums) = block(input);
        v.add(&mut dev, &mmio, &host, &mut alloc, &blk)
            .expect("a valid block fits an empty page");
        let rings: Vec<RingAt> = v
            .mmap_layout()
            .skip(1)
            .zip(&nums)
            .map(|((_, block, block_len), &num)| {
                let l = SplitLayout::new(num, MIC_VIRTIO_RING_ALIGN);
                RingAt {
                    num,
                    block,
                    block_len: block_len as u64,
                    desc: block,
                    avail: block + l.avail as u64,
                    host_used: block + l.used as u64,
                    info: block + l.size as u64,
                }
            })
            .collect();
        assert_eq!(rings.len(), nums.len());
        for (r, init) in rings.iter().zip(&input.rings) {
            host.poke(r.desc, &init.desc[..init.desc.len().min(16 * usize::from(r.num))]);
            host.poke(r.avail, &init.avail[..init.avail.len().min(avail_size(r.num))]);
        }
        card.poke(0, &input.card);
        host.take_writes();
        card.take_writes();
        host.take_reads();
        card.take_reads();
        let models = vec![None; rings.len()];
        Some(Self {
            mmio,
            host,
            card,
            dev,
            alloc,
            v,
            rings,
            models,
        })
    }

    fn ring(&self, i: u8) -> (usize, RingAt) {
        let i = usize::from(i) % self.rings.len();
        (i, self.rings[i])
    }

    fn page(&self, field: usize) -> u64 {
        DP_OFFSET + (self.v.slot() + field) as u64
    }

    fn ctrl(&self, field: usize) -> u64 {
        self.page(self.v.desc().ctrl_offset() + field)
    }

    /// Host-memory ranges the host may write: its device page, and for each
    /// ring the info word and (unless re-homed) its used ring.
    fn host_allowed(&self) -> Vec<(u64, u64)> {
        let mut a = vec![(DP_OFFSET, DP_OFFSET + MIC_DP_SIZE as u64)];
        for (r, hr) in self.rings.iter().zip(self.v.rings()) {
            a.push((r.info, r.info + 8));
            if matches!(hr.used(), UsedRing::Host(_)) {
                a.push((r.host_used, r.host_used + used_size(r.num) as u64));
            }
        }
        a
    }

    /// Card-memory ranges the host may write: the re-homed used rings.
    fn card_allowed(&self) -> Vec<(u64, u64)> {
        self.v.rings().filter_map(HostVring::card_used_range).collect()
    }

    fn forget_chains(&mut self) {
        for m in &mut self.models {
            *m = None;
        }
    }

    fn run(&mut self, op: &Op) {
        let host_allowed = self.host_allowed();
        let card_allowed = self.card_allowed();
        let host_readable = self.host_readable();
        let mut card_readable = Vec::new();
        if !self.card_writes(op) {
            card_readable = self.host_op(op);
        }
        self.host.check_writes(&host_allowed, "host memory");
        self.card.check_writes(&card_allowed, "card memory");
        self.host.check_reads(&host_readable, "host memory");
        self.card.check_reads(&card_readable, "card memory");
    }

    /// Host memory the host may read: its device page, and each ring's
    /// descriptor table and avail ring (nothing else of a ring block).
    fn host_readable(&self) -> Vec<(u64, u64)> {
        let mut a = vec![(DP_OFFSET, DP_OFFSET + MIC_DP_SIZE as u64)];
        for r in &self.rings {
            a.push((r.desc, r.desc + 16 * u64::from(r.num)));
            a.push((r.avail, r.avail + avail_size(r.num) as u64));
        }
        a
    }

    /// The card writing memory it can write; whether `op` was one of those.
    fn card_writes(&mut self, op: &Op) -> bool {
        match *op {
            Op::RingWrite { ring, off, ref data } => {
                let (_, r) = self.ring(ring);
                let off = u64::from(off) % r.block_len;
                let n = data.len().min((r.block_len - off) as usize);
                self.host.poke(r.block + off, &data[..n]);
            }
            Op::PageWrite { off, ref data } => {
                let off = u64::from(off) % MIC_DP_SIZE as u64;
                let n = data.len().min(MIC_DP_SIZE - off as usize);
                self.host.poke(DP_OFFSET + off, &data[..n]);
            }
            Op::CardWrite { off, ref data } => self.card.poke(u64::from(off), data),
            Op::Desc { ring, index, desc } => {
                let (_, r) = self.ring(ring);
                let at = r.desc + 16 * u64::from(u16::from(index) % r.num);
                self.host.poke(at, &desc.bytes());
            }
            Op::CardDesc { off, desc } => self.card.poke(u64::from(off) & !15, &desc.bytes()),
            Op::Chain {
                ring,
                first,
                ref bufs,
            } => {
                let (_, r) = self.ring(ring);
                let first = u16::from(first) % r.num;
                for (k, &(addr, len, write)) in bufs.iter().take(2 * usize::from(r.num)).enumerate() {
                    let i = (first + k as u16) % r.num;
                    let last = k + 1 == bufs.len();
                    let d = VringDesc {
                        addr: addr.get(),
                        len: len.get(),
                        flags: if write { VRING_DESC_F_WRITE } else { 0 }
                            | if last { 0 } else { VRING_DESC_F_NEXT },
                        next: (i + 1) % r.num,
                    };
                    self.host.poke(r.desc + 16 * u64::from(i), &d.to_bytes());
                }
                self.offer(r, first);
            }
            Op::Indirect {
                ring,
                index,
                table,
                ref entries,
            } => {
                let (_, r) = self.ring(ring);
                let table = u64::from(table) & !15;
                for (k, e) in entries.iter().take(usize::from(r.num)).enumerate() {
                    self.card.poke(table + 16 * k as u64, &e.bytes());
                }
                let index = u16::from(index) % r.num;
                let d = VringDesc {
                    addr: table,
                    len: 16 * entries.len().min(usize::from(r.num)) as u32,
                    flags: VRING_DESC_F_INDIRECT,
                    next: 0,
                };
                self.host.poke(r.desc + 16 * u64::from(index), &d.to_bytes());
                self.offer(r, index);
            }
            Op::Offer { ring, head } => {
                let (_, r) = self.ring(ring);
                self.offer(r, head);
            }
            Op::AvailIdx { ring, idx } => {
                let (_, r) = self.ring(ring);
                self.host.poke(r.avail + 2, &idx.to_le_bytes());
            }
            Op::Event {
                ring,
                used_event,
                flags,
            } => {
                let (_, r) = self.ring(ring);
                self.host.poke(r.avail, &flags.to_le_bytes());
                let at = r.avail + avail_entry(r.num) as u64;
                self.host.poke(at, &used_event.to_le_bytes());
            }
            _ => return false,
        }
        true
    }

    /// The host's operations, and the card's doorbells; the card memory
    /// each may read (only a fetch reads any: its indirect tables).
    fn host_op(&mut self, op: &Op) -> Vec<(u64, u64)> {
        match *op {
            Op::Copy {
                ring,
                cap,
                update_used,
                fault_at,
            } => return self.copy(ring, cap, update_used, fault_at),
            Op::Activate { used, features } => {
                for (i, u) in used.iter().enumerate().take(self.rings.len()) {
                    let at = self.page(self.v.desc().vq_offset(i) + VQ_USED_ADDRESS);
                    self.host.poke(at, &u.get().to_le_bytes());
                }
                let at = self.page(self.v.desc().guest_features_offset());
                self.host.poke(at, &features.to_le_bytes());
                self.host.poke(self.ctrl(CTRL_H2C_VDEV_DB), &[VDEV_DB]);
                self.host.poke(self.ctrl(CTRL_USED_ADDRESS_UPDATED), &[1]);
                self.host.poke(
                    self.page(DESC_STATUS),
                    &[mic_core::abi::virtio::status::DRIVER_OK],
                );
                self.doorbell();
            }
            Op::Doorbell => self.doorbell(),
            Op::CardReset => {
                self.host.poke(self.ctrl(CTRL_VDEV_RESET), &[1]);
                self.doorbell();
            }
            Op::HostReset => {
                let _ = self.v.host_reset(&self.host);
                self.forget_chains();
                self.check_reset();
            }
            Op::Remove => {
                let _ = self.v.begin_remove(&self.mmio, &self.host);
                self.v.finish_remove(&mut self.dev, &self.host, &mut self.alloc);
                self.forget_chains();
            }
            _ => {}
        }
        Vec::new()
    }

    /// The card makes `head` available.
    fn offer(&self, r: RingAt, head: u16) {
        let idx = self.host.raw.read_u16(r.avail + 2).expect("avail");
        let slot = idx % r.num;
        self.host
            .poke(r.avail + avail_entry(slot) as u64, &head.to_le_bytes());
        self.host.poke(r.avail + 2, &idx.wrapping_add(1).to_le_bytes());
    }

    fn doorbell(&mut self) {
        let was_active = self.v.is_activated();
        if let Ok(ev) = self.v.handle_doorbell(&self.host, &self.card) {
            // A reset in the same doorbell undoes the activation.
            if ev.activated && !ev.reset {
                assert!(!was_active, "activated twice without a reset");
                for r in self.v.rings() {
                    let (a, b) = r.card_used_range().expect("activated rings are re-homed");
                    assert!(a != 0 && a % 4 == 0 && b <= CARD_LEN as u64);
                }
            }
            if ev.reset {
                self.forget_chains();
                self.check_reset();
            }
        }
    }

    fn check_reset(&self) {
        for r in self.v.rings() {
            assert_eq!((r.last_avail(), r.last_used()), (0, 0));
            assert!(!r.holds_chain() && r.broken().is_none());
            assert!(matches!(r.used(), UsedRing::Host(_)));
        }
    }

    fn copy(&mut self, ring: u8, cap: u16, update_used: bool, fault_at: Option<u16>) -> Vec<(u64, u64)> {
        let (i, r) = self.ring(ring);
        let cap = u64::from(cap % (MAX_CAP + 1));
        let mut tables = Vec::new();
        let before = self.v.rings().nth(i).cloned();
        let refused = self.v.refused_activation().is_some();
        let reference = before.as_ref().and_then(|hr| {
            (!refused && !hr.holds_chain() && hr.broken().is_none()).then(|| {
                let indirect = hr.features().indirect;
                reference_fetch(&self.host, &self.card, r, hr.last_avail(), indirect, &mut tables)
            })
        });
        let mut user = User {
            cap,
            fault_at: fault_at.map(u64::from),
            card: &self.card,
            calls: Vec::new(),
        };
        let res = self.v.copy_desc(
            &self.mmio,
            &self.host,
            &self.card,
            i as u8,
            &mut user,
            update_used,
        );
        let calls = core::mem::take(&mut user.calls);
        let after = self.v.rings().nth(i).cloned();
        match res {
            Err(VopError::Copy(CopyError::Ring(RingError::Broken))) => {
                // The ring was broken, or the device refused the card's
                // re-homed used rings (every ring stays shut until a reset).
                assert!(refused || before.is_some_and(|b| b.broken().is_some()));
            }
            Err(VopError::Copy(CopyError::Ring(e))) => {
                assert_eq!(
                    reference,
                    Some(Fetch::Invalid),
                    "walker refused a chain the rules allow: {e}"
                );
                let after = after.expect("the ring exists");
                assert_eq!(after.broken(), Some(e), "a refused chain breaks the ring");
                assert!(!after.holds_chain());
                self.models[i] = None;
            }
            Err(VopError::Copy(CopyError::UserFault)) => {
                // The chain was fetched (or already held) but did not move.
                self.take_fetched(i, reference.as_ref());
                self.check_calls(i, &calls);
            }
            Err(_) => {
                // Refused before the ring was looked at: nothing changed.
                assert!(calls.is_empty());
                if let (Some(b), Some(a)) = (&before, &after) {
                    assert_eq!(
                        (b.last_avail(), b.holds_chain()),
                        (a.last_avail(), a.holds_chain())
                    );
                }
            }
            Ok(c) => {
                let after = after.expect("a copy that worked had a ring");
                if reference == Some(Fetch::Nothing) {
                    assert_eq!(c.out_len, 0);
                    assert!(calls.is_empty() && !after.holds_chain());
                    return tables;
                }
                assert_ne!(
                    reference,
                    Some(Fetch::Invalid),
                    "walker took a chain that breaks a rule"
                );
                self.take_fetched(i, reference.as_ref());
                let moved = self.check_calls(i, &calls);
                assert_eq!(u64::from(c.out_len), moved);
                let m = self.models[i].as_mut().expect("a chain is held");
                advance(m, &calls);
                if c.completed {
                    assert!(update_used && c.out_len > 0);
                    let m = self.models[i].take().expect("held");
                    assert!(!after.holds_chain());
                    self.check_used(r, &after, m.head, m.consumed);
                } else {
                    assert!(!(update_used && c.out_len > 0));
                    assert!(after.holds_chain());
                }
            }
        }
        tables
    }

    /// A fetch happened: the model holds the reference's chain.
    fn take_fetched(&mut self, i: usize, reference: Option<&Fetch>) {
        if let Some(Fetch::Chain { head, segs }) = reference {
            assert!(
                segs.len() <= usize::from(self.rings[i].num),
                "chain longer than the ring"
            );
            self.models[i] = Some(Model {
                head: *head,
                segs: segs.clone(),
                pos: 0,
                off: 0,
                consumed: 0,
            });
        }
    }

    /// The calls continue the held chain where it stood, contiguous in the
    /// caller's buffers from offset 0. Returns the bytes they moved.
    fn check_calls(&self, i: usize, calls: &[Call]) -> u64 {
        let Some(m) = &self.models[i] else {
            assert!(calls.is_empty(), "bytes moved without a chain");
            return 0;
        };
        let (mut pos, mut off, mut at) = (m.pos, m.off, 0u64);
        for c in calls {
            assert_eq!(c.off, at, "caller's buffers not filled in order");
            let seg = m.segs.get(pos).expect("access past the chain's end");
            assert_eq!(c.seg.write, seg.write, "direction differs from the descriptor");
            assert_eq!(c.seg.addr, seg.addr + u64::from(off), "address differs");
            assert!(c.seg.len <= seg.len - off, "access past its descriptor");
            at += u64::from(c.seg.len);
            off += c.seg.len;
            if off == seg.len {
                pos += 1;
                off = 0;
            }
        }
        at
    }

    fn check_used(&self, r: RingAt, hr: &HostVring, head: u16, len: u32) {
        let slot = hr.last_used().wrapping_sub(1) % r.num;
        let (mem, base) = match hr.used() {
            UsedRing::Host(b) => (&self.host.raw, b),
            UsedRing::Card(b) => (&self.card.raw, b),
        };
        let at = base + used_entry(slot) as u64;
        assert_eq!(mem.read_u32(at).expect("used entry"), u32::from(head));
        assert_eq!(mem.read_u32(at + 4).expect("used entry"), len);
        assert_eq!(mem.read_u16(base + 2).expect("used idx"), hr.last_used());
        let info = self.host.raw.read_u16(r.info).expect("info");
        assert_eq!(info, hr.last_avail(), "info.avail_idx tells the host's index");
    }
}

/// Moves the model's position over what the calls moved.
fn advance(m: &mut Model, calls: &[Call]) {
    for c in calls {
        m.consumed += c.seg.len;
        m.off += c.seg.len;
        if m.off == m.segs[m.pos].len {
            m.pos += 1;
            m.off = 0;
        }
    }
}

/// Runs the fuzzer's bytes (decoded as a [`VopInput`]).
pub fn fuzz(data: &[u8]) {
    crate::run_bytes(data, run);
}

/// Runs one input.
pub fn run(input: &VopInput) {
    let Some(mut rig) = Rig::new(input) else {
        return;
    };
    for op in input.ops.iter().take(MAX_OPS) {
        rig.run(op);
    }
}

#[cfg(test)]
#[path = "vop_tests.rs"]
mod tests;
