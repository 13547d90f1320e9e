//! The host side of virtio over PCIe against a hand-driven (and often
//! hostile) card: every handshake and errno, and the hostile-input cases
//! of the ring walker, each with its defined outcome.
#![allow(clippy::unused_self)]

use core::cell::{Cell, RefCell};
use std::vec;
use std::vec::Vec;

use super::*;
use crate::abi::virtio::{
    VRING_AVAIL_F_NO_INTERRUPT, VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE,
    VRING_USED_F_NO_NOTIFY, VringDesc, id, status,
};
use crate::abi::{CTRL_C2H_VDEV_DB, DESC_TYPE_END, MIC_MAGIC, VQ_ADDRESS, VQ_NUM};
use crate::fake::{FakeMem, FakeMmio};
use crate::regs;

const HOST_LEN: usize = 128 << 10;
const CARD_LEN: usize = 1 << 20;
const DMA_BASE: u64 = 0x1_0000_0000;
const CONFIG_DB: u8 = 5;
const VDEV_DB: u8 = 3;

/// Bump allocator over host memory from 0x1000 (the device page is below).
#[derive(Default)]
struct Bump {
    next: u64,
    live: Vec<HostBuf>,
    fail: bool,
}

impl HostAlloc for Bump {
    fn alloc(&mut self, len: usize) -> Option<HostBuf> {
        if self.fail {
            return None;
        }
        let offset = 0x1000 + self.next;
        if offset + len as u64 > HOST_LEN as u64 {
            return None;
        }
        self.next += len as u64;
        let b = HostBuf {
            offset,
            dma_addr: DMA_BASE + offset,
            len,
        };
        self.live.push(b);
        Some(b)
    }
    fn free(&mut self, buf: HostBuf) {
        self.live.retain(|b| *b != buf);
    }
}

/// The caller's buffer, copying from and to card memory.
struct UserVec<'a> {
    buf: Vec<u8>,
    card: &'a FakeMem,
    fault_at: Option<u64>,
}

impl<'a> UserVec<'a> {
    fn new(card: &'a FakeMem, len: usize) -> Self {
        Self {
            buf: vec![0; len],
            card,
            fault_at: None,
        }
    }
    fn with(card: &'a FakeMem, data: &[u8]) -> Self {
        Self {
            buf: data.to_vec(),
            card,
            fault_at: None,
        }
    }
}

impl UserBuffers for UserVec<'_> {
    fn capacity(&self) -> u64 {
        self.buf.len() as u64
    }
    fn card_to_user(&mut self, off: u64, card_addr: u64, len: u32) -> Result<(), CopyFault> {
        if self.fault_at.is_some_and(|f| f < off + u64::from(len)) {
            return Err(CopyFault);
        }
        let o = off as usize;
        self.card
            .read(card_addr, &mut self.buf[o..o + len as usize])
            .map_err(|_| CopyFault)
    }
    fn user_to_card(&mut self, off: u64, card_addr: u64, len: u32) -> Result<(), CopyFault> {
        if self.fault_at.is_some_and(|f| f < off + u64::from(len)) {
            return Err(CopyFault);
        }
        let o = off as usize;
        self.card
            .write(card_addr, &self.buf[o..o + len as usize])
            .map_err(|_| CopyFault)
    }
}

struct Rig {
    mmio: FakeMmio,
    host: FakeMem,
    card: FakeMem,
    dev: HostDevice,
    alloc: Bump,
}

fn block(ty: i8, nums: &[u16], features: u32, config: &[u8]) -> Vec<u8> {
    let d = MicDeviceDesc {
        ty,
        num_vq: nums.len() as u8,
        feature_len: 4,
        config_len: config.len() as u8,
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
        let at = d.vq_offset(i);
        b[at..at + 24].copy_from_slice(&vq.to_bytes());
    }
    let f = d.features_offset();
    b[f..f + 4].copy_from_slice(&features.to_le_bytes());
    let c = d.config_offset();
    b[c..c + config.len()].copy_from_slice(config);
    b
}

fn console() -> Vec<u8> {
    block(id::CONSOLE, &[128, 128], 0, &[0; 12])
}

impl Rig {
    fn new() -> Self {
        let mmio = FakeMmio::new();
        let host = FakeMem::new(HOST_LEN);
        let dev = HostDevice::probe(&mmio, &host, DMA_BASE).unwrap();
        // The card driver is up and published its config doorbell.
        host.write_u8(DP_OFFSET + BP_H2C_CONFIG_DB as u64, CONFIG_DB)
            .unwrap();
        Self {
            mmio,
            host,
            card: FakeMem::new(CARD_LEN),
            dev,
            alloc: Bump::default(),
        }
    }

    fn add(&mut self, blk: &[u8]) -> Result<VopDevice, VopError> {
        let mut v = VopDevice::new();
        v.add(&mut self.dev, &self.mmio, &self.host, &mut self.alloc, blk)?;
        Ok(v)
    }

    /// Rings the card's doorbell `db` counted in the fake's log.
    fn rings_of(&self, db: u8) -> usize {
        self.mmio
            .writes
            .borrow()
            .iter()
            .filter(|(o, v)| *o == regs::apicicr(db) && v & regs::APICICR_SEND != 0)
            .count()
    }

    fn page(&self, v: &VopDevice, field: usize) -> u64 {
        DP_OFFSET + (v.slot() + field) as u64
    }

    fn ctrl(&self, v: &VopDevice, field: usize) -> u64 {
        self.page(v, v.desc().ctrl_offset() + field)
    }

    /// The card's side of find_vqs: re-home the used rings to `used`,
    /// ack `features`, publish its doorbell, go DRIVER_OK.
    fn card_start(&self, v: &mut VopDevice, used: &[u64], features: u32) -> DoorbellEvents {
        for (i, &u) in used.iter().enumerate() {
            self.host
                .write_u64(self.page(v, v.desc().vq_offset(i) + VQ_USED_ADDRESS), u)
                .unwrap();
        }
        self.host
            .write_u32(self.page(v, v.desc().guest_features_offset()), features)
            .unwrap();
        self.host
            .write_u8(self.ctrl(v, CTRL_H2C_VDEV_DB), VDEV_DB)
            .unwrap();
        self.host
            .write_u8(self.ctrl(v, CTRL_USED_ADDRESS_UPDATED), 1)
            .unwrap();
        self.host
            .write_u8(self.page(v, DESC_STATUS), status::DRIVER_OK)
            .unwrap();
        v.handle_doorbell(&self.host, &self.card).unwrap()
    }

    fn ring_base(v: &VopDevice, q: usize) -> u64 {
        v.mmap_layout().nth(q + 1).unwrap().1
    }

    fn num(v: &VopDevice, q: usize) -> u16 {
        v.rings().nth(q).unwrap().num()
    }

    fn put_desc(&self, v: &VopDevice, q: usize, i: u16, d: VringDesc) {
        let at = Self::ring_base(v, q) + u64::from(i) * 16;
        self.host.write(at, &d.to_bytes()).unwrap();
    }

    fn avail(v: &VopDevice, q: usize) -> u64 {
        Self::ring_base(v, q) + 16 * u64::from(Self::num(v, q))
    }

    fn avail_idx(&self, v: &VopDevice, q: usize) -> u16 {
        self.host.read_u16(Self::avail(v, q) + 2).unwrap()
    }

    /// Offers chain `head` in the avail ring.
    fn offer(&self, v: &VopDevice, q: usize, head: u16) {
        let a = Self::avail(v, q);
        let idx = self.avail_idx(v, q);
        let slot = idx & (Self::num(v, q) - 1);
        self.host.write_u16(a + 4 + 2 * u64::from(slot), head).unwrap();
        self.host.write_u16(a + 2, idx.wrapping_add(1)).unwrap();
    }

    fn copy(
        &self,
        v: &mut VopDevice,
        q: u8,
        user: &mut UserVec<'_>,
        update: bool,
    ) -> Result<Copied, VopError> {
        v.copy_desc(&self.mmio, &self.host, &self.card, q, user, update)
    }
}

fn desc(addr: u64, len: u32, flags: u16, next: u16) -> VringDesc {
    VringDesc {
        addr,
        len,
        flags,
        next,
    }
}

const USED0: u64 = 0x8_0000;
const USED1: u64 = 0x9_0000;

/// A started console: used rings at USED0/USED1 in card memory.
fn started() -> (Rig, VopDevice) {
    let mut rig = Rig::new();
    let mut v = rig.add(&console()).unwrap();
    let ev = rig.card_start(&mut v, &[USED0, USED1], 0);
    assert!(ev.activated, "{ev:?}");
    (rig, v)
}

fn used_idx(rig: &Rig, used: u64) -> u16 {
    rig.card.read_u16(used + 2).unwrap()
}

fn used_elem(rig: &Rig, used: u64, slot: u16) -> (u32, u32) {
    let at = used + 4 + 8 * u64::from(slot);
    (rig.card.read_u32(at).unwrap(), rig.card.read_u32(at + 4).unwrap())
}

// ---------------------------------------------------------------------------
// ADD_DEVICE
// ---------------------------------------------------------------------------

#[test]
fn add_publishes_the_device_as_the_original() {
    let mut rig = Rig::new();
    let v = rig.add(&console()).unwrap();
    assert_eq!(v.state(), VopState::Added);
    assert_eq!(v.slot(), 16);
    // Type published, ctrl initialised, doorbells.
    assert_eq!(rig.host.read_u8(16).unwrap() as i8, id::CONSOLE);
    let ctrl = v.ctrl(&rig.host).unwrap();
    assert_eq!(ctrl.h2c_vdev_db, -1);
    assert_eq!(ctrl.c2h_vdev_db, 1, "shutdown took host doorbell 0");
    assert_eq!(v.c2h_db(), 1);
    // Each vring: 8 KiB block, mapped through the SMPT, info.magic.
    let layout: Vec<_> = v.mmap_layout().collect();
    assert_eq!(layout.len(), 3);
    assert_eq!((layout[1].0, layout[1].2), (0x1000, 8192));
    assert_eq!((layout[2].0, layout[2].2), (0x1000 + 8192, 8192));
    assert_eq!(v.mmap_len(), 0x1000 + 2 * 8192);
    for q in 0..2u8 {
        let base = layout[usize::from(q) + 1].1;
        let magic = rig.host.read_u32(base + 5126 + 4).unwrap();
        assert_eq!(magic, MIC_MAGIC + 3 + u32::from(q));
        let vq = rig.page(&v, v.desc().vq_offset(usize::from(q)));
        let addr = rig.host.read_u64(vq + VQ_ADDRESS as u64).unwrap();
        assert!(crate::host::smpt::in_window(addr), "{addr:#x}");
        assert_eq!(rig.host.read_u16(vq + VQ_NUM as u64).unwrap(), 128);
    }
    // Hot plug: the card's config doorbell was rung once.
    assert_eq!(rig.rings_of(CONFIG_DB), 1);
    // A second device goes right after the first; doorbells round-robin.
    let v2 = rig.add(&block(id::NET, &[128, 128], 0, &[0; 10])).unwrap();
    assert_eq!(v2.slot(), 16 + total_desc_size(&v.desc()));
    assert_eq!(v2.c2h_db(), 2);
    let names: Vec<_> = crate::devpage::walk_mem(&rig.host, 0)
        .map(|d| d.unwrap().desc.ty)
        .collect();
    assert_eq!(names, [id::CONSOLE, id::NET]);
}

#[test]
fn add_checks_header_then_block_with_the_original_errno() {
    let mut rig = Rig::new();
    let mut bad = console();
    bad[1] = 5; // num_vq
    assert_eq!(rig.add(&bad).unwrap_err(), VopError::TooManyVqs(5));
    assert_eq!(rig.add(&bad).unwrap_err().errno(), errno::EINVAL);
    let big = block(id::NET, &[128; 4], 0, &[0; 200]);
    assert!(matches!(rig.add(&big).unwrap_err(), VopError::BlockTooLarge(_)));
    for n in [0u16, 3, 129, 256, 32768] {
        let e = rig.add(&block(id::NET, &[128, n], 0, &[])).unwrap_err();
        assert_eq!(e, VopError::BadVringSize(n));
        assert_eq!(e.errno(), errno::EINVAL);
    }
    for t in [0i8, -1, -7] {
        assert_eq!(
            rig.add(&block(t, &[128], 0, &[])).unwrap_err(),
            VopError::BadType(t)
        );
    }
    let short = &console()[..20];
    assert_eq!(rig.add(short).unwrap_err(), VopError::ShortArgument);
    assert_eq!(rig.add(&[1, 2]).unwrap_err().errno(), errno::EFAULT);
    // None of the failures left anything behind.
    assert_eq!(rig.dev.slots_mut().in_use(), 0);
    assert!(rig.alloc.live.is_empty());
    assert_eq!(rig.host.read_u8(16).unwrap() as i8, DESC_TYPE_END);
    // Twice on one file.
    let mut v = rig.add(&console()).unwrap();
    let e = v
        .add(&mut rig.dev, &rig.mmio, &rig.host, &mut rig.alloc, &console())
        .unwrap_err();
    assert_eq!(e.errno(), errno::EBUSY);
}

#[test]
fn add_runs_out_of_slots_and_memory_cleanly() {
    let mut rig = Rig::new();
    // Blocks without vqs fill the page: 32 bytes each (header, 8 feature
    // bytes, ctrl), (4096 - 16) / 32 = 127 of them.
    let tiny = block(9, &[], 0, &[]);
    let each = total_desc_size(&MicDeviceDesc::from_slice(&tiny).unwrap());
    assert_eq!(each, 32);
    let mut n = 0;
    while rig.add(&tiny).is_ok() {
        n += 1;
    }
    assert_eq!(n, (MIC_DP_SIZE - 16) / each);
    assert_eq!(rig.add(&tiny).unwrap_err().errno(), errno::EINVAL);

    let mut rig = Rig::new();
    rig.alloc.fail = true;
    assert_eq!(rig.add(&console()).unwrap_err(), VopError::NoMemory);
    assert_eq!(rig.add(&console()).unwrap_err().errno(), errno::ENOMEM);
    assert_eq!(rig.dev.slots_mut().in_use(), 0);
    rig.alloc.fail = false;
    // SMPT refcounts were released: the next add maps fine.
    assert!(rig.add(&console()).is_ok());
}

#[test]
fn removed_slots_are_reused_only_when_the_block_fits_exactly() {
    let mut rig = Rig::new();
    let mut a = rig.add(&console()).unwrap();
    let b = rig.add(&block(id::NET, &[128, 128], 0, &[0; 10])).unwrap();
    assert!(a.begin_remove(&rig.mmio, &rig.host).is_some());
    a.finish_remove(&mut rig.dev, &rig.host, &mut rig.alloc);
    assert_eq!(rig.host.read_u8(16).unwrap() as i8, DESC_TYPE_REMOVED);
    // A block of another size goes to the end, the same size reuses slot 16.
    let c = rig.add(&block(id::BLOCK, &[128], 0, &[0; 60])).unwrap();
    assert!(c.slot() > b.slot());
    let d = rig.add(&console()).unwrap();
    assert_eq!(d.slot(), 16);
    let types: Vec<_> = crate::devpage::walk_mem(&rig.host, 0)
        .map(|x| x.unwrap().desc.ty)
        .collect();
    assert_eq!(types, [id::CONSOLE, id::NET, id::BLOCK]);
}

#[test]
fn a_card_that_removed_the_device_ends_it() {
    let (rig, mut v) = started();
    assert!(!v.poll_error(&rig.host));
    // The card's shutdown removes its devices: type = -1.
    rig.host.write_u8(16, DESC_TYPE_REMOVED as u8).unwrap();
    assert!(v.poll_error(&rig.host));
    let mut u = UserVec::new(&rig.card, 4);
    assert_eq!(
        rig.copy(&mut v, 0, &mut u, true).unwrap_err().errno(),
        errno::ENODEV
    );
    assert_eq!(
        v.config_change(&rig.mmio, &rig.host, &[0; 12]).unwrap_err(),
        VopError::Removed
    );
}

#[test]
fn a_card_scribbling_types_cannot_make_the_host_overwrite_a_device() {
    let mut rig = Rig::new();
    let a = rig.add(&console()).unwrap();
    // Hostile card: marks the live console removed, and garbage after it.
    rig.host.write_u8(16, DESC_TYPE_REMOVED as u8).unwrap();
    let b = rig.add(&console()).unwrap();
    assert_ne!(b.slot(), a.slot(), "the host keeps its own slot table");
}

// ---------------------------------------------------------------------------
// COPY_DESC basics and the original errno
// ---------------------------------------------------------------------------

#[test]
fn copy_desc_errno_before_and_after_the_device_exists() {
    let mut rig = Rig::new();
    let mut empty = VopDevice::new();
    let card = FakeMem::new(16);
    let mut u = UserVec::new(&card, 4);
    assert_eq!(
        empty
            .copy_desc(&rig.mmio, &rig.host, &rig.card, 0, &mut u, true)
            .unwrap_err()
            .errno(),
        errno::EINVAL
    );
    let mut v = rig.add(&console()).unwrap();
    // Status 0: the card has not started it.
    assert_eq!(
        rig.copy(&mut v, 0, &mut u, true).unwrap_err().errno(),
        errno::ENODEV
    );
    rig.card_start(&mut v, &[USED0, USED1], 0);
    assert_eq!(
        rig.copy(&mut v, 2, &mut u, true).unwrap_err(),
        VopError::BadVring(2)
    );
    // Nothing available: 0 bytes, not an error.
    assert_eq!(rig.copy(&mut v, 0, &mut u, true).unwrap(), Copied::default());
    v.finish_remove(&mut rig.dev, &rig.host, &mut rig.alloc);
    assert_eq!(
        rig.copy(&mut v, 0, &mut u, true).unwrap_err().errno(),
        errno::ENODEV
    );
    assert!(v.poll_error(&rig.host));
    assert!(empty.poll_error(&rig.host));
}

#[test]
fn readable_then_writable_with_partial_chains_and_used_entries() {
    let (rig, mut v) = started();
    rig.card.write(0x1000, b"hello world").unwrap();
    // head 0: 11 readable bytes, then 8 writable at 0x2000.
    rig.put_desc(&v, 1, 0, desc(0x1000, 11, VRING_DESC_F_NEXT, 1));
    rig.put_desc(&v, 1, 1, desc(0x2000, 8, VRING_DESC_F_WRITE, 0));
    rig.offer(&v, 1, 0);
    assert!(v.pending(&rig.host, 1).unwrap());
    // 5 bytes now, without completing: the chain is held.
    let mut u = UserVec::new(&rig.card, 5);
    let c = rig.copy(&mut v, 1, &mut u, false).unwrap();
    assert_eq!((c.out_len, c.completed), (5, false));
    assert_eq!(&u.buf, b"hello");
    assert!(v.rings().nth(1).unwrap().holds_chain());
    assert_eq!(used_idx(&rig, USED1), 0);
    // The rest of the readable part, then our data into the writable part.
    let mut u = UserVec::with(&rig.card, b"\0\0\0\0\0\0ABCDEFGH");
    let c = rig.copy(&mut v, 1, &mut u, true).unwrap();
    assert_eq!(c.out_len, 14);
    assert!(c.completed);
    assert_eq!(&u.buf[..6], b" world");
    assert_eq!(rig.card.bytes(0x2000, 8), b"ABCDEFGH");
    // Used entry: head 0, len = everything consumed (both directions).
    assert_eq!(used_idx(&rig, USED1), 1);
    assert_eq!(used_elem(&rig, USED1, 0), (0, 19));
    // info.avail_idx follows the host's index.
    let info = Rig::ring_base(&v, 1) + 5126;
    assert_eq!(rig.host.read_u16(info).unwrap(), 1);
    assert!(!v.pending(&rig.host, 1).unwrap());
    // The card asked for interrupts (no NO_INTERRUPT): its doorbell rang.
    assert!(c.notify);
    assert_eq!(rig.rings_of(VDEV_DB), 1);
    let s = v.rings().nth(1).unwrap().stats();
    assert_eq!((s.chains, s.to_user, s.to_card, s.completed), (1, 11, 8, 1));
}

#[test]
fn a_fault_in_the_callers_buffers_is_efault_and_loses_nothing() {
    let (rig, mut v) = started();
    rig.card.write(0x1000, b"abcdef").unwrap();
    rig.put_desc(&v, 1, 0, desc(0x1000, 6, 0, 0));
    rig.offer(&v, 1, 0);
    let mut u = UserVec::new(&rig.card, 6);
    u.fault_at = Some(2);
    assert_eq!(
        rig.copy(&mut v, 1, &mut u, true).unwrap_err().errno(),
        errno::EFAULT
    );
    // Not the card's fault: the ring is not broken and the chain is intact.
    assert_eq!(v.broken(), None);
    let mut u = UserVec::new(&rig.card, 6);
    assert_eq!(rig.copy(&mut v, 1, &mut u, true).unwrap().out_len, 6);
    assert_eq!(&u.buf, b"abcdef");
}

#[test]
fn kicks_are_off_while_chains_wait_and_on_again_when_drained() {
    let (rig, mut v) = started();
    let flags = |used| rig.card.read_u16(used).unwrap();
    let kicks_off = |v: &VopDevice| v.rings().nth(1).unwrap().kicks_off();
    // A doorbell with nothing available leaves the card's kicks on.
    v.handle_doorbell(&rig.host, &rig.card).unwrap();
    assert_eq!((flags(USED0), flags(USED1)), (0, 0));
    for i in 0..3u16 {
        rig.put_desc(&v, 1, i, desc(0x1000 + 0x100 * u64::from(i), 4, 0, 0));
    }
    rig.offer(&v, 1, 0);
    rig.offer(&v, 1, 1);
    // Chains waiting on ring 1, a doorbell: its kicks off, ring 0's not.
    v.handle_doorbell(&rig.host, &rig.card).unwrap();
    assert_eq!((flags(USED0), flags(USED1)), (0, VRING_USED_F_NO_NOTIFY));
    assert!(kicks_off(&v));
    // One consumed, one still waits: still off.
    let mut u = UserVec::new(&rig.card, 4);
    assert!(rig.copy(&mut v, 1, &mut u, true).unwrap().completed);
    assert_eq!(flags(USED1), VRING_USED_F_NO_NOTIFY);
    // The last one is consumed while the card adds another (the chain is
    // held, then completed): the second look keeps kicks off.
    let mut u = UserVec::new(&rig.card, 2);
    rig.copy(&mut v, 1, &mut u, false).unwrap();
    rig.offer(&v, 1, 2);
    let mut u = UserVec::new(&rig.card, 2);
    assert!(rig.copy(&mut v, 1, &mut u, true).unwrap().completed);
    assert_eq!(flags(USED1), VRING_USED_F_NO_NOTIFY);
    // Nothing left: on again.
    let mut u = UserVec::new(&rig.card, 4);
    assert!(rig.copy(&mut v, 1, &mut u, true).unwrap().completed);
    assert_eq!(flags(USED1), 0);
    assert!(!kicks_off(&v));
    // A reset forgets it; the card zeroes its used ring itself.
    rig.offer(&v, 1, 0);
    v.handle_doorbell(&rig.host, &rig.card).unwrap();
    assert!(kicks_off(&v));
    v.reset(&rig.host).unwrap();
    assert!(!kicks_off(&v));

    // With EVENT_IDX: the flag is left alone, avail_event follows the
    // host's index each time it has consumed everything.
    let mut rig = Rig::new();
    let evt = 1u32 << ring_features::EVENT_IDX;
    let mut v = rig.add(&block(id::CONSOLE, &[128, 128], evt, &[0; 12])).unwrap();
    assert!(rig.card_start(&mut v, &[USED0, USED1], evt).activated);
    let avail_event = USED1 + 4 + 8 * 128;
    for i in 0..3u16 {
        rig.put_desc(&v, 1, i, desc(0x1000, 4, 0, 0));
        rig.offer(&v, 1, i);
    }
    v.handle_doorbell(&rig.host, &rig.card).unwrap();
    for _ in 0..3 {
        let mut u = UserVec::new(&rig.card, 4);
        rig.copy(&mut v, 1, &mut u, true).unwrap();
    }
    assert_eq!(rig.card.read_u16(USED1).unwrap(), 0);
    assert_eq!(rig.card.read_u16(avail_event).unwrap(), 3);
}

#[test]
fn notification_follows_no_interrupt_and_event_idx() {
    let (rig, mut v) = started();
    let avail = Rig::avail(&v, 0);
    rig.host.write_u16(avail, VRING_AVAIL_F_NO_INTERRUPT).unwrap();
    rig.put_desc(&v, 0, 0, desc(0x1000, 4, VRING_DESC_F_WRITE, 0));
    rig.offer(&v, 0, 0);
    let mut u = UserVec::with(&rig.card, b"abcd");
    let c = rig.copy(&mut v, 0, &mut u, true).unwrap();
    assert!(c.completed && !c.notify);
    assert_eq!(rig.rings_of(VDEV_DB), 0);

    // With EVENT_IDX offered and acked, used_event decides; flags do not.
    let mut rig = Rig::new();
    let evt = 1u32 << ring_features::EVENT_IDX;
    let mut v = rig.add(&block(id::CONSOLE, &[128, 128], evt, &[0; 12])).unwrap();
    assert!(rig.card_start(&mut v, &[USED0, USED1], evt).activated);
    assert!(v.rings().next().unwrap().features().event_idx);
    let avail = Rig::avail(&v, 0);
    rig.host.write_u16(avail, VRING_AVAIL_F_NO_INTERRUPT).unwrap();
    // used_event = 1: notify when the used index goes past 1, i.e. on the 2nd.
    rig.host.write_u16(avail + 4 + 2 * 128, 1).unwrap();
    let mut notes = Vec::new();
    for i in 0..3u16 {
        rig.put_desc(&v, 0, i, desc(0x1000, 1, VRING_DESC_F_WRITE, 0));
        rig.offer(&v, 0, i);
        let mut u = UserVec::with(&rig.card, b"x");
        notes.push(rig.copy(&mut v, 0, &mut u, true).unwrap().notify);
    }
    assert_eq!(notes, [false, true, false]);

    // Offered but not acked: no EVENT_IDX.
    let mut rig = Rig::new();
    let mut v = rig.add(&block(id::CONSOLE, &[128], evt, &[0; 12])).unwrap();
    rig.card_start(&mut v, &[USED0], 0);
    assert!(!v.rings().next().unwrap().features().event_idx);
}

#[test]
fn avail_index_wraps_past_65535() {
    let (rig, mut v) = started();
    rig.put_desc(&v, 1, 0, desc(0x1000, 1, 0, 0));
    for i in 0..70_000u32 {
        rig.offer(&v, 1, 0);
        let mut u = UserVec::new(&rig.card, 1);
        let c = rig.copy(&mut v, 1, &mut u, true).unwrap();
        assert_eq!(c.out_len, 1, "at {i}");
    }
    assert_eq!(used_idx(&rig, USED1), (70_000u32 % 65_536) as u16);
    assert_eq!(v.broken(), None);
}

// ---------------------------------------------------------------------------
// Hostile avail rings and chains (virtio-anchors (b) 9-25)
// ---------------------------------------------------------------------------

/// Offers `head` after `setup` wrote descriptors, copies once, and returns
/// the error; checks the ring is then broken (EIO) until a reset.
fn hostile(setup: impl FnOnce(&Rig, &VopDevice)) -> RingError {
    let (rig, mut v) = started();
    setup(&rig, &v);
    let mut u = UserVec::new(&rig.card, 64);
    let err = match rig.copy(&mut v, 1, &mut u, true) {
        Err(VopError::Copy(CopyError::Ring(e))) => e,
        other => panic!("expected a ring error, got {other:?}"),
    };
    let again = rig.copy(&mut v, 1, &mut u, true).unwrap_err();
    assert_eq!(again.errno(), errno::EIO, "broken until reset");
    assert_eq!(v.broken(), Some(err));
    // Nothing was completed.
    assert_eq!(used_idx(&rig, USED1), 0);
    // A card reset clears it.
    rig.host.write_u8(rig.ctrl(&v, CTRL_VDEV_RESET), 1).unwrap();
    assert!(v.handle_doorbell(&rig.host, &rig.card).unwrap().reset);
    assert_eq!(v.broken(), None);
    err
}

#[test]
fn avail_index_jumps_forward_or_backwards() {
    let e = hostile(|rig, v| rig.host.write_u16(Rig::avail(v, 1) + 2, 129).unwrap());
    assert_eq!(e, RingError::AvailJump { idx: 129, last: 0 });
    assert_eq!(e.errno(), errno::EINVAL);
    let e = hostile(|rig, v| rig.host.write_u16(Rig::avail(v, 1) + 2, 0xFFFF).unwrap());
    assert!(matches!(e, RingError::AvailJump { .. }));
}

#[test]
fn heads_and_nexts_out_of_range() {
    let e = hostile(|rig, v| rig.offer(v, 1, 128));
    assert_eq!(e, RingError::BadHead(128));
    let e = hostile(|rig, v| {
        rig.put_desc(v, 1, 0, desc(0x1000, 4, VRING_DESC_F_NEXT, 500));
        rig.offer(v, 1, 0);
    });
    assert_eq!(e, RingError::BadNext(500));
}

#[test]
fn loops_are_found_and_a_full_ring_chain_is_accepted() {
    for cycle in [1u16, 2, 100] {
        let e = hostile(|rig, v| {
            for i in 0..cycle {
                rig.put_desc(v, 1, i, desc(0x1000, 4, VRING_DESC_F_NEXT, (i + 1) % cycle));
            }
            rig.offer(v, 1, 0);
        });
        assert_eq!(e, RingError::Loop, "cycle of {cycle}");
        assert_eq!(e.errno(), errno::ELOOP);
    }
    // Exactly `num` distinct descriptors: fine.
    let (rig, mut v) = started();
    for i in 0..128u16 {
        let flags = if i == 127 { 0 } else { VRING_DESC_F_NEXT };
        rig.put_desc(&v, 1, i, desc(0x1000 + u64::from(i), 1, flags, i + 1));
    }
    rig.offer(&v, 1, 0);
    let mut u = UserVec::new(&rig.card, 256);
    assert_eq!(rig.copy(&mut v, 1, &mut u, true).unwrap().out_len, 128);
}

#[test]
fn bad_flags_order_and_lengths() {
    let e = hostile(|rig, v| {
        rig.put_desc(v, 1, 0, desc(0x1000, 4, 0x10, 0));
        rig.offer(v, 1, 0);
    });
    assert_eq!(e, RingError::BadFlags(0x10));
    let e = hostile(|rig, v| {
        rig.put_desc(
            v,
            1,
            0,
            desc(0x1000, 4, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 1),
        );
        rig.put_desc(v, 1, 1, desc(0x2000, 4, 0, 0));
        rig.offer(v, 1, 0);
    });
    assert_eq!(e, RingError::ReadAfterWrite);
    let e = hostile(|rig, v| {
        rig.put_desc(v, 1, 0, desc(0x1000, 0, 0, 0));
        rig.offer(v, 1, 0);
    });
    assert_eq!(e, RingError::ZeroLength);
}

#[test]
fn buffers_resolve_against_card_memory_only() {
    let cases = [
        (u64::MAX - 2, 8u32),                    // addr + len overflows
        (CARD_LEN as u64 - 4, 8),                // straddles the end of card memory
        (CARD_LEN as u64, 1),                    // just past it
        (crate::host::smpt::SMPT_CARD_BASE, 16), // the host ring region, through the SMPT window
        (0x10, u32::MAX),                        // 4 GiB - 1 in a 1 MiB card
    ];
    for (addr, len) in cases {
        let e = hostile(|rig, v| {
            rig.put_desc(v, 1, 0, desc(addr, len, 0, 0));
            rig.offer(v, 1, 0);
        });
        assert_eq!(e, RingError::BufferOutOfRange { addr, len }, "{addr:#x}+{len:#x}");
    }
}

/// Card memory that claims 8 GiB but stores only its first page, to check
/// the host never allocates or copies in proportion to a claimed length.
struct BigMem(FakeMem);

impl Memory for BigMem {
    fn size(&self) -> u64 {
        8 << 30
    }
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        if addr < 4096 {
            self.0.read(addr, buf)
        } else {
            buf.fill(0);
            Ok(())
        }
    }
    fn write(&self, addr: u64, data: &[u8]) -> Result<(), MemError> {
        if addr < 4096 {
            self.0.write(addr, data)
        } else {
            Ok(())
        }
    }
}

#[test]
fn huge_lengths_are_bounded_by_the_callers_buffers() {
    let mut rig = Rig::new();
    let mut v = rig.add(&console()).unwrap();
    let big = BigMem(FakeMem::new(4096));
    for (i, u) in [(0, USED0), (1, USED1)] {
        rig.host
            .write_u64(rig.page(&v, v.desc().vq_offset(i) + VQ_USED_ADDRESS), u)
            .unwrap();
    }
    rig.host
        .write_u8(rig.ctrl(&v, CTRL_USED_ADDRESS_UPDATED), 1)
        .unwrap();
    rig.host
        .write_u8(rig.page(&v, DESC_STATUS), status::DRIVER_OK)
        .unwrap();
    assert!(v.handle_doorbell(&rig.host, &big).unwrap().activated);
    // One 4 GiB - 1 descriptor: each copy moves what the caller can take.
    rig.put_desc(&v, 1, 0, desc(0x1_0000, u32::MAX, 0, 0));
    rig.offer(&v, 1, 0);
    let card = FakeMem::new(16);
    let mut u = UserVec::new(&card, 4096);
    let moved = v
        .copy_desc(&rig.mmio, &rig.host, &big, 1, &mut NullUser(4096), false)
        .unwrap();
    assert_eq!(moved.out_len, 4096);
    let _ = &mut u;
    // Two 3 GiB descriptors: the total overflows 32 bits.
    rig.host.write_u8(rig.ctrl(&v, CTRL_VDEV_RESET), 1).unwrap();
    v.handle_doorbell(&rig.host, &big).unwrap();
    rig.host
        .write_u8(rig.page(&v, DESC_STATUS), status::DRIVER_OK)
        .unwrap();
    rig.host.write_u16(Rig::avail(&v, 1) + 2, 0).unwrap();
    rig.put_desc(&v, 1, 0, desc(0x1_0000, 3 << 30, VRING_DESC_F_NEXT, 1));
    rig.put_desc(&v, 1, 1, desc(0x1_0000, 3 << 30, 0, 0));
    rig.offer(&v, 1, 0);
    let e = v
        .copy_desc(&rig.mmio, &rig.host, &big, 1, &mut NullUser(16), true)
        .unwrap_err();
    assert_eq!(e, VopError::Copy(CopyError::Ring(RingError::TooLong)));
}

/// Caller buffers that accept anything and keep nothing.
struct NullUser(u64);

impl UserBuffers for NullUser {
    fn capacity(&self) -> u64 {
        self.0
    }
    fn card_to_user(&mut self, _: u64, _: u64, _: u32) -> Result<(), CopyFault> {
        Ok(())
    }
    fn user_to_card(&mut self, _: u64, _: u64, _: u32) -> Result<(), CopyFault> {
        Ok(())
    }
}

/// Host memory that counts reads of one range and can flip a descriptor
/// after its first read, to prove nothing reads a descriptor twice.
struct Spy<'a> {
    inner: &'a FakeMem,
    watch: (u64, u64),
    reads: Cell<u32>,
    flip: RefCell<Option<(u64, u8)>>,
}

impl Memory for Spy<'_> {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        self.inner.read(addr, buf)?;
        if addr >= self.watch.0 && addr < self.watch.1 {
            self.reads.set(self.reads.get() + 1);
            if let Some((at, v)) = self.flip.borrow_mut().take() {
                self.inner.write_u8(at, v)?;
            }
        }
        Ok(())
    }
    fn write(&self, addr: u64, data: &[u8]) -> Result<(), MemError> {
        self.inner.write(addr, data)
    }
}

#[test]
fn each_descriptor_is_read_once_from_one_snapshot() {
    let (rig, mut v) = started();
    rig.card.write(0x1000, b"abcd").unwrap();
    rig.put_desc(&v, 1, 0, desc(0x1000, 4, VRING_DESC_F_NEXT, 1));
    rig.put_desc(&v, 1, 1, desc(0x2000, 4, VRING_DESC_F_WRITE, 0));
    rig.offer(&v, 1, 0);
    let base = Rig::ring_base(&v, 1);
    // After the first descriptor is read, the card flips descriptor 0's
    // WRITE flag (it would now be a writable buffer over its own data).
    let spy = Spy {
        inner: &rig.host,
        watch: (base, base + 16 * 128),
        reads: Cell::new(0),
        flip: RefCell::new(Some((
            base + 12,
            VRING_DESC_F_WRITE as u8 | VRING_DESC_F_NEXT as u8,
        ))),
    };
    let mut u = UserVec::with(&rig.card, b"....WXYZ");
    let c = v.copy_desc(&rig.mmio, &spy, &rig.card, 1, &mut u, false).unwrap();
    assert_eq!(c.out_len, 8);
    assert_eq!(&u.buf[..4], b"abcd", "the snapshot said readable");
    assert_eq!(rig.card.bytes(0x1000, 4), b"abcd", "card data not overwritten");
    assert_eq!(spy.reads.get(), 2, "two descriptors, two reads");
    // Completing the held chain reads no descriptor again.
    let mut u = UserVec::new(&rig.card, 1);
    let _ = v.copy_desc(&rig.mmio, &spy, &rig.card, 1, &mut u, true).unwrap();
    assert_eq!(spy.reads.get(), 2);
}

#[test]
fn a_chain_without_the_direction_the_caller_wanted_moves_what_it_has() {
    let (rig, mut v) = started();
    // An "RX" chain (vring 0) offering only a readable buffer.
    rig.card.write(0x1000, b"junk").unwrap();
    rig.put_desc(&v, 0, 0, desc(0x1000, 4, 0, 0));
    rig.offer(&v, 0, 0);
    let mut u = UserVec::with(&rig.card, b"PACKET");
    let c = rig.copy(&mut v, 0, &mut u, true).unwrap();
    // Defined outcome: the card's readable bytes come to the caller, nothing
    // is written to the card, and the chain completes with what moved.
    assert_eq!(c.out_len, 4);
    assert_eq!(&u.buf[..4], b"junk");
    assert_eq!(used_elem(&rig, USED0, 0), (0, 4));
}

// ---------------------------------------------------------------------------
// Indirect descriptors (17, 18)
// ---------------------------------------------------------------------------

fn indirect_rig() -> (Rig, VopDevice) {
    let mut rig = Rig::new();
    let ind = 1u32 << ring_features::INDIRECT_DESC;
    let mut v = rig.add(&block(id::BLOCK, &[128, 128], ind, &[0; 34])).unwrap();
    assert!(rig.card_start(&mut v, &[USED0, USED1], ind).activated);
    (rig, v)
}

fn put_table(rig: &Rig, at: u64, descs: &[VringDesc]) {
    for (i, d) in descs.iter().enumerate() {
        rig.card.write(at + 16 * i as u64, &d.to_bytes()).unwrap();
    }
}

#[test]
fn indirect_tables_when_negotiated() {
    let (rig, mut v) = indirect_rig();
    rig.card.write(0x1000, b"hdr!").unwrap();
    put_table(
        &rig,
        0x4000,
        &[
            desc(0x1000, 4, VRING_DESC_F_NEXT, 1),
            desc(0x2000, 2, VRING_DESC_F_WRITE, 0),
        ],
    );
    // A direct descriptor, then the table; WRITE on the table's own
    // descriptor is ignored.
    rig.put_desc(&v, 1, 0, desc(0x3000, 1, VRING_DESC_F_NEXT, 1));
    rig.put_desc(
        &v,
        1,
        1,
        desc(0x4000, 32, VRING_DESC_F_INDIRECT | VRING_DESC_F_WRITE, 0),
    );
    rig.offer(&v, 1, 0);
    let mut u = UserVec::with(&rig.card, b".....ok");
    let c = rig.copy(&mut v, 1, &mut u, true).unwrap();
    assert_eq!(c.out_len, 7);
    assert_eq!(&u.buf[1..5], b"hdr!");
    assert_eq!(rig.card.bytes(0x2000, 2), b"ok");
}

#[test]
fn hostile_indirect_tables() {
    let bad = |table: u64, len: u32, flags: u16, content: &[VringDesc]| {
        let (rig, mut v) = indirect_rig();
        put_table(&rig, 0x4000, content);
        rig.put_desc(&v, 1, 0, desc(table, len, VRING_DESC_F_INDIRECT | flags, 1));
        rig.put_desc(&v, 1, 1, desc(0x1000, 4, 0, 0));
        rig.offer(&v, 1, 0);
        let mut u = UserVec::new(&rig.card, 64);
        match rig.copy(&mut v, 1, &mut u, true) {
            Err(VopError::Copy(CopyError::Ring(e))) => e,
            other => panic!("{other:?}"),
        }
    };
    let one = [desc(0x1000, 4, 0, 0)];
    assert_eq!(bad(0x4000, 0, 0, &one), RingError::BadIndirectLen(0));
    assert_eq!(bad(0x4000, 20, 0, &one), RingError::BadIndirectLen(20));
    assert_eq!(
        bad(0x4000, 16 * 65537, 0, &one),
        RingError::BadIndirectLen(16 * 65537)
    );
    assert_eq!(
        bad(0x4000, 16 * 129, 0, &one),
        RingError::BadIndirectLen(16 * 129)
    );
    assert!(matches!(
        bad(CARD_LEN as u64 - 8, 16, 0, &one),
        RingError::BufferOutOfRange { .. }
    ));
    assert!(matches!(
        bad(u64::MAX - 8, 16, 0, &one),
        RingError::BufferOutOfRange { .. }
    ));
    assert_eq!(
        bad(0x4000, 16, VRING_DESC_F_NEXT, &one),
        RingError::IndirectWithNext
    );
    let nested = [desc(0x5000, 16, VRING_DESC_F_INDIRECT, 0)];
    assert_eq!(bad(0x4000, 16, 0, &nested), RingError::NestedIndirect);
    let looped = [
        desc(0x1000, 4, VRING_DESC_F_NEXT, 1),
        desc(0x1000, 4, VRING_DESC_F_NEXT, 0),
    ];
    assert_eq!(bad(0x4000, 32, 0, &looped), RingError::Loop);
    let out = [desc(0x1000, 4, VRING_DESC_F_NEXT, 2)];
    assert_eq!(bad(0x4000, 16, 0, &out), RingError::BadNext(2));
    // 100 direct + a table of 100: more than the ring's 128 in all.
    let (rig, mut v) = indirect_rig();
    let table: Vec<_> = (0..100u16)
        .map(|i| desc(0x1000, 1, if i == 99 { 0 } else { VRING_DESC_F_NEXT }, i + 1))
        .collect();
    put_table(&rig, 0x4000, &table);
    for i in 0..100u16 {
        rig.put_desc(&v, 1, i, desc(0x1000, 1, VRING_DESC_F_NEXT, i + 1));
    }
    rig.put_desc(&v, 1, 100, desc(0x4000, 1600, VRING_DESC_F_INDIRECT, 0));
    rig.offer(&v, 1, 0);
    let mut u = UserVec::new(&rig.card, 64);
    assert_eq!(
        rig.copy(&mut v, 1, &mut u, true).unwrap_err(),
        VopError::Copy(CopyError::Ring(RingError::Loop))
    );
    // Not negotiated: refused.
    let e = hostile(|rig, v| {
        rig.put_desc(v, 1, 0, desc(0x4000, 16, VRING_DESC_F_INDIRECT, 0));
        rig.offer(v, 1, 0);
    });
    assert_eq!(e, RingError::IndirectNotNegotiated);
}

// ---------------------------------------------------------------------------
// Used ring (2-5, 26-29)
// ---------------------------------------------------------------------------

#[test]
fn used_ring_addresses_are_checked_at_activation() {
    let refused = |used: &[u64]| {
        let mut rig = Rig::new();
        let mut v = rig.add(&console()).unwrap();
        let ev = rig.card_start(&mut v, used, 0);
        assert!(!ev.activated);
        // The flag stays set: the card's own wait for the host fails.
        assert_eq!(
            rig.host.read_u8(rig.ctrl(&v, CTRL_USED_ADDRESS_UPDATED)).unwrap(),
            1
        );
        assert!(v.broken().is_some());
        // A valid chain on a device whose rings were refused: EIO.
        let mut u = UserVec::new(&rig.card, 4);
        rig.put_desc(&v, 0, 0, desc(0x1000, 4, 0, 0));
        rig.offer(&v, 0, 0);
        let err = rig.copy(&mut v, 0, &mut u, true).unwrap_err();
        assert_eq!(err.errno(), errno::EIO, "{err}");
        ev.refused.unwrap()
    };
    refused(&[0, USED1]);
    refused(&[USED0 + 2, USED1]);
    refused(&[CARD_LEN as u64 - 100, USED1]);
    refused(&[u64::MAX - 3, USED1]);
    refused(&[crate::host::smpt::SMPT_CARD_BASE, USED1]);
    // Overlapping the other queue's used ring.
    refused(&[USED0, USED0 + 512]);
}

#[test]
fn refused_used_rings_stay_refused_until_the_card_resets_the_device() {
    let mut rig = Rig::new();
    let mut v = rig.add(&console()).unwrap();
    let ev = rig.card_start(&mut v, &[crate::host::smpt::SMPT_CARD_BASE, USED1], 0);
    assert!(matches!(ev.refused, Some(RingError::BufferOutOfRange { .. })));
    rig.put_desc(&v, 1, 0, desc(0x1000, 4, 0, 0));
    rig.offer(&v, 1, 0);
    let mut u = UserVec::new(&rig.card, 4);
    // Further doorbells change nothing: the refusal stands.
    v.handle_doorbell(&rig.host, &rig.card).unwrap();
    assert_eq!(rig.copy(&mut v, 1, &mut u, true).unwrap_err().errno(), errno::EIO);
    // The card resets the device: the reset wins over the stale re-homing
    // request (not refused again), and clears it.
    rig.host.write_u8(rig.ctrl(&v, CTRL_HOST_ACK), 0).unwrap();
    rig.host.write_u8(rig.ctrl(&v, CTRL_VDEV_RESET), 1).unwrap();
    let ev = v.handle_doorbell(&rig.host, &rig.card).unwrap();
    assert_eq!((ev.reset, ev.activated, ev.refused), (true, false, None));
    assert_eq!(v.broken(), None);
    let ctrl = v.ctrl(&rig.host).unwrap();
    assert_eq!((ctrl.used_address_updated, ctrl.host_ack), (0, 1));
    // A status write (no re-homing asked) activates nothing.
    rig.host
        .write_u8(rig.page(&v, DESC_STATUS), status::DRIVER)
        .unwrap();
    let ev = v.handle_doorbell(&rig.host, &rig.card).unwrap();
    assert_eq!((ev.activated, ev.refused), (false, None));
    // Good used rings this time: the device works.
    rig.host.write_u16(Rig::avail(&v, 1) + 2, 0).unwrap();
    assert!(rig.card_start(&mut v, &[USED0, USED1], 0).activated);
    rig.offer(&v, 1, 0);
    assert_eq!(rig.copy(&mut v, 1, &mut u, true).unwrap().out_len, 4);
    assert_eq!(v.doorbells(), 5);
}

#[test]
fn the_host_uses_its_snapshot_after_activation() {
    let (rig, mut v) = started();
    // The card rewrites vqconfig after activation: huge num, new addresses.
    let vq = rig.page(&v, v.desc().vq_offset(1));
    rig.host.write_u16(vq + VQ_NUM as u64, 4096).unwrap();
    rig.host.write_u64(vq + VQ_ADDRESS as u64, 0xdead_0000).unwrap();
    rig.host.write_u64(vq + VQ_USED_ADDRESS as u64, 0x10).unwrap();
    rig.host.write_u8(16 + 1, 200).unwrap(); // num_vq
    rig.card.write(0x1000, b"ok").unwrap();
    rig.put_desc(&v, 1, 0, desc(0x1000, 2, 0, 0));
    rig.offer(&v, 1, 0);
    let mut u = UserVec::new(&rig.card, 2);
    assert_eq!(rig.copy(&mut v, 1, &mut u, true).unwrap().out_len, 2);
    assert_eq!(used_idx(&rig, USED1), 1, "used entry where the snapshot says");
    assert_eq!(rig.card.read_u16(0x10 + 2).unwrap(), 0);
    assert_eq!(v.rings().nth(1).unwrap().num(), 128);
    // Re-homing again without a reset: refused, device broken.
    rig.host
        .write_u8(rig.ctrl(&v, CTRL_USED_ADDRESS_UPDATED), 1)
        .unwrap();
    let ev = v.handle_doorbell(&rig.host, &rig.card).unwrap();
    assert_eq!(ev.refused, Some(RingError::Broken));
}

#[test]
fn the_host_keeps_its_own_used_index() {
    let (rig, mut v) = started();
    rig.put_desc(&v, 1, 0, desc(0x1000, 1, 0, 0));
    for n in 1..=3u16 {
        rig.offer(&v, 1, 0);
        // The card scribbles over used.idx between completions.
        rig.card.write_u16(USED1 + 2, 999).unwrap();
        let mut u = UserVec::new(&rig.card, 1);
        rig.copy(&mut v, 1, &mut u, true).unwrap();
        assert_eq!(used_idx(&rig, USED1), n);
    }
}

/// Card memory recording the order and size of writes.
struct Recorder<'a> {
    inner: &'a FakeMem,
    log: RefCell<Vec<(u64, usize)>>,
}

impl Memory for Recorder<'_> {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        self.inner.read(addr, buf)
    }
    fn write(&self, addr: u64, data: &[u8]) -> Result<(), MemError> {
        self.log.borrow_mut().push((addr, data.len()));
        self.inner.write(addr, data)
    }
}

#[test]
fn used_entries_are_published_entry_first_index_in_one_store() {
    let (rig, mut v) = started();
    rig.put_desc(&v, 1, 0, desc(0x1000, 1, 0, 0));
    rig.offer(&v, 1, 0);
    let rec = Recorder {
        inner: &rig.card,
        log: RefCell::new(Vec::new()),
    };
    let mut u = UserVec::new(&rig.card, 1);
    v.copy_desc(&rig.mmio, &rig.host, &rec, 1, &mut u, true).unwrap();
    assert_eq!(*rec.log.borrow(), [(USED1 + 4, 8), (USED1 + 2, 2)]);
}

#[test]
fn a_card_reset_with_chains_in_flight() {
    let (rig, mut v) = started();
    rig.card.write(0x1000, b"abcdef").unwrap();
    rig.put_desc(&v, 1, 0, desc(0x1000, 6, 0, 0));
    rig.offer(&v, 1, 0);
    rig.offer(&v, 1, 0);
    let mut u = UserVec::new(&rig.card, 2);
    rig.copy(&mut v, 1, &mut u, false).unwrap();
    assert!(v.rings().nth(1).unwrap().holds_chain());
    // The card resets the device (driver unbind).
    rig.host.write_u8(rig.ctrl(&v, CTRL_HOST_ACK), 0).unwrap();
    rig.host.write_u8(rig.ctrl(&v, CTRL_VDEV_RESET), 1).unwrap();
    let ev = v.handle_doorbell(&rig.host, &rig.card).unwrap();
    assert!(ev.reset);
    assert_eq!(v.card_resets(), 1);
    let ctrl = v.ctrl(&rig.host).unwrap();
    assert_eq!((ctrl.vdev_reset, ctrl.host_ack), (0, 1));
    assert_eq!(v.status(&rig.host).unwrap(), 0);
    let r = v.rings().nth(1).unwrap();
    assert!(!r.holds_chain());
    assert_eq!((r.last_avail(), r.last_used()), (0, 0));
    assert_eq!(rig.host.read_u16(Rig::ring_base(&v, 1) + 5126).unwrap(), 0);
    // Nothing is written to the old used ring any more: status is 0 so
    // copies are refused until the card starts the device again.
    let before = rig.card.bytes(USED1, 16);
    assert_eq!(rig.copy(&mut v, 1, &mut u, true).unwrap_err(), VopError::NotReady);
    assert_eq!(rig.card.bytes(USED1, 16), before);
    // The card zeroes its rings and starts again with a new used ring.
    rig.host.write_u16(Rig::avail(&v, 1) + 2, 0).unwrap();
    let ev = rig.card_start(&mut v, &[0xA_0000, 0xB_0000], 0);
    assert!(ev.activated);
    rig.offer(&v, 1, 0);
    let mut u = UserVec::new(&rig.card, 6);
    assert_eq!(rig.copy(&mut v, 1, &mut u, true).unwrap().out_len, 6);
    assert_eq!(used_idx(&rig, 0xB_0000), 1);
    assert_eq!(rig.card.bytes(USED1, 16), before);
}

#[test]
fn the_host_stopping_the_card_resets_every_device() {
    let (rig, mut v) = started();
    rig.put_desc(&v, 1, 0, desc(0x1000, 6, 0, 0));
    rig.offer(&v, 1, 0);
    let mut u = UserVec::new(&rig.card, 2);
    rig.copy(&mut v, 1, &mut u, false).unwrap();
    v.host_reset(&rig.host).unwrap();
    assert_eq!(v.status(&rig.host).unwrap(), 0);
    assert!(!v.is_activated());
    assert!(!v.rings().any(HostVring::holds_chain));
    assert_eq!(
        v.state(),
        VopState::Added,
        "still added: the next card OS finds it"
    );
}

// ---------------------------------------------------------------------------
// Doorbells, config change, removal (7, 31, 34)
// ---------------------------------------------------------------------------

#[test]
fn card_doorbell_numbers_are_checked() {
    let (rig, mut v) = started();
    for bad in [99u8, 0xFB, 16] {
        rig.host.write_u8(rig.ctrl(&v, CTRL_H2C_VDEV_DB), bad).unwrap();
        rig.put_desc(&v, 1, 0, desc(0x1000, 1, 0, 0));
        rig.offer(&v, 1, 0);
        let before = rig.mmio.writes.borrow().len();
        let mut u = UserVec::new(&rig.card, 1);
        let c = rig.copy(&mut v, 1, &mut u, true).unwrap();
        assert!(c.notify);
        assert_eq!(
            rig.mmio.writes.borrow().len(),
            before,
            "no register touched for db {bad}"
        );
    }
    // A garbage config doorbell: CONFIG_CHANGE is EIO, removal does not wait.
    rig.host
        .write_u8(DP_OFFSET + BP_H2C_CONFIG_DB as u64, 0xF0)
        .unwrap();
    assert_eq!(
        v.config_change(&rig.mmio, &rig.host, &[0; 12])
            .unwrap_err()
            .errno(),
        errno::EIO
    );
    assert!(v.begin_remove(&rig.mmio, &rig.host).is_none());
}

#[test]
fn spurious_doorbells_change_nothing() {
    let (rig, mut v) = started();
    assert_eq!(
        v.handle_doorbell(&rig.host, &rig.card).unwrap(),
        DoorbellEvents::default()
    );
    let mut fresh = VopDevice::new();
    assert_eq!(
        fresh.handle_doorbell(&rig.host, &rig.card).unwrap(),
        DoorbellEvents::default()
    );
}

#[test]
fn config_change_waits_for_the_ack_bounded() {
    let (rig, mut v) = started();
    assert_eq!(
        v.config_change(&rig.mmio, &rig.host, &[1; 4]).unwrap_err(),
        VopError::ShortArgument
    );
    let before = rig.rings_of(CONFIG_DB);
    let wait = v.config_change(&rig.mmio, &rig.host, &[7; 20]).unwrap();
    assert_eq!(rig.rings_of(CONFIG_DB), before + 1);
    let cfg = rig.page(&v, v.desc().config_offset());
    assert_eq!(rig.host.bytes(cfg, 12), [7; 12]);
    assert_eq!(
        rig.host.read_u8(rig.ctrl(&v, CTRL_CONFIG_CHANGE)).unwrap(),
        MIC_VIRTIO_PARAM_CONFIG_CHANGED
    );
    assert_eq!(wait.poll(&rig.host, 0), AckPoll::Wait { ms: 100 });
    assert_eq!(wait.poll(&rig.host, 9_950), AckPoll::Wait { ms: 50 });
    assert_eq!(wait.poll(&rig.host, 10_000), AckPoll::TimedOut);
    rig.host.write_u8(rig.ctrl(&v, CTRL_GUEST_ACK), 1).unwrap();
    assert_eq!(wait.poll(&rig.host, 10_000), AckPoll::Acked);
    v.finish_config_change(&rig.host).unwrap();
    let ctrl = v.ctrl(&rig.host).unwrap();
    assert_eq!((ctrl.config_change, ctrl.guest_ack), (0, 0));
    // No config doorbell yet (card driver not up): EIO.
    rig.host
        .write_u8(DP_OFFSET + BP_H2C_CONFIG_DB as u64, 0xFF)
        .unwrap();
    assert_eq!(
        v.config_change(&rig.mmio, &rig.host, &[0; 12]).unwrap_err(),
        VopError::NoConfigDoorbell
    );
}

#[test]
fn removal_handshake_then_release() {
    let (mut rig, mut v) = started();
    let wait = v.begin_remove(&rig.mmio, &rig.host).unwrap();
    assert_eq!(
        rig.host.read_u8(rig.ctrl(&v, CTRL_CONFIG_CHANGE)).unwrap(),
        MIC_VIRTIO_PARAM_DEV_REMOVE
    );
    // The card never acks: the wait ends at its budget.
    assert_eq!(wait.poll(&rig.host, 10_000), AckPoll::TimedOut);
    v.finish_remove(&mut rig.dev, &rig.host, &mut rig.alloc);
    assert_eq!(v.state(), VopState::Removed);
    assert_eq!(rig.host.read_u8(16).unwrap() as i8, DESC_TYPE_REMOVED);
    assert!(rig.alloc.live.is_empty(), "ring blocks freed");
    assert_eq!(rig.dev.slots_mut().in_use(), 0);
    // c2h doorbell and the ctrl block are left as they were for the card.
    assert_eq!(v.ctrl(&rig.host).unwrap().c2h_vdev_db, 1);
    let _ = CTRL_C2H_VDEV_DB;
}

#[test]
fn vdev_info_tells_the_state() {
    use std::string::String;
    let (rig, mut v) = started();
    rig.put_desc(&v, 1, 0, desc(0x1000, 3, 0, 0));
    rig.offer(&v, 1, 0);
    let mut u = UserVec::new(&rig.card, 3);
    rig.copy(&mut v, 1, &mut u, true).unwrap();
    let mut s = String::new();
    v.write_info(&rig.host, &mut s).unwrap();
    assert!(
        s.starts_with("VDEV type 3 (console) state UP in 0 out 3 slot 0x"),
        "{s}"
    );
    assert!(s.contains(" c2h_db 1 doorbells 1 resets 0 status 0x4\n"), "{s}");
    assert!(
        s.contains("vring 1: num 128 last_avail 1 last_used 1 held 0 used card@0x90000"),
        "{s}"
    );
    let mut s = String::new();
    VopDevice::new().write_info(&rig.host, &mut s).unwrap();
    assert!(s.is_empty());
}

#[test]
fn errors_display_and_map() {
    use std::string::ToString;
    for e in [
        VopError::NotAdded,
        VopError::Removed,
        VopError::AlreadyAdded,
        VopError::ShortArgument,
        VopError::TooManyVqs(9),
        VopError::BlockTooLarge(300),
        VopError::BadVringSize(3),
        VopError::BadType(0),
        VopError::NoSlot,
        VopError::NoMemory,
        VopError::BadVring(4),
        VopError::TooManyIovecs(5000),
        VopError::NotReady,
        VopError::NoConfigDoorbell,
        VopError::Copy(CopyError::UserFault),
        VopError::Mem(MemError::OutOfBounds { addr: 0, len: 1 }),
    ] {
        assert!(!e.to_string().is_empty());
        assert!(e.errno() > 0);
    }
    assert_eq!(VopError::TooManyIovecs(5000).errno(), errno::EINVAL);
    assert_eq!(
        RingError::Broken.to_string(),
        "ring broken until the card resets the device"
    );
}
