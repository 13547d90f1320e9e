//! Both ends of virtio over PCIe against one emulated link: the host's
//! `/dev/micN` code and the card's transport and driver queues over fake
//! memories, with the card reaching host memory only through the SMPT
//! window exactly as the hardware translates it.
#![allow(clippy::many_single_char_names)]

use std::vec::Vec;

use crate::abi::virtio::{id, status};
use crate::abi::{MicDeviceDesc, MicVqconfig, desc_size};
use crate::card::CardDevice;
use crate::card::virtio::{CardVdev, ConfigRequest, VirtioError};
use crate::card::vring::{Buf, DriverQueue, QueueError, UsedBuf};
use crate::devpage::walk_mem;
use crate::fake::{FakeMem, FakeMmio};
use crate::handshake::{AckPoll, AckTiming};
use crate::host::HostDevice;
use crate::host::smpt::{self, SMPT_CARD_BASE, SMPT_PAGE_SHIFT, SMPT_PAGE_SIZE};
use crate::host::vop::{CopyFault, HostAlloc, HostBuf, UserBuffers, VopDevice};
use crate::hw::{MemError, Memory};
use crate::regs;

const HOST_LEN: usize = 128 << 10;
const GDDR_LEN: usize = 4 << 20;
const DMA_BASE: u64 = 0x4_5a6f_0000;

/// The card's physical address space: GDDR from 0, host memory through the
/// SMPT window.
struct CardPhys<'a> {
    gddr: &'a FakeMem,
    host: &'a FakeMem,
    mmio: &'a FakeMmio,
}

impl CardPhys<'_> {
    fn translate(&self, addr: u64, len: usize) -> Result<u64, MemError> {
        let err = MemError::OutOfBounds {
            addr,
            len: len as u64,
        };
        let rel = addr.checked_sub(SMPT_CARD_BASE).ok_or(err)?;
        let entry = rel >> SMPT_PAGE_SHIFT;
        if entry >= 32 {
            return Err(err);
        }
        let bus = smpt::entry_dma_addr(self.mmio.get(regs::smpt(entry as u8))) + (rel & (SMPT_PAGE_SIZE - 1));
        bus.checked_sub(DMA_BASE).ok_or(err)
    }
}

impl Memory for CardPhys<'_> {
    fn size(&self) -> u64 {
        SMPT_CARD_BASE + (32 << SMPT_PAGE_SHIFT)
    }
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        if addr < GDDR_LEN as u64 {
            return self.gddr.read(addr, buf);
        }
        self.host.read(self.translate(addr, buf.len())?, buf)
    }
    fn write(&self, addr: u64, data: &[u8]) -> Result<(), MemError> {
        if addr < GDDR_LEN as u64 {
            return self.gddr.write(addr, data);
        }
        self.host.write(self.translate(addr, data.len())?, data)
    }
}

#[derive(Default)]
struct Bump(u64);

impl HostAlloc for Bump {
    fn alloc(&mut self, len: usize) -> Option<HostBuf> {
        let offset = 0x1000 + self.0;
        self.0 += len as u64;
        Some(HostBuf {
            offset,
            dma_addr: DMA_BASE + offset,
            len,
        })
    }
    fn free(&mut self, _: HostBuf) {}
}

struct User<'a> {
    buf: Vec<u8>,
    gddr: &'a FakeMem,
}

impl UserBuffers for User<'_> {
    fn capacity(&self) -> u64 {
        self.buf.len() as u64
    }
    fn card_to_user(&mut self, off: u64, card_addr: u64, len: u32) -> Result<(), CopyFault> {
        let o = off as usize;
        self.gddr
            .read(card_addr, &mut self.buf[o..o + len as usize])
            .map_err(|_| CopyFault)
    }
    fn user_to_card(&mut self, off: u64, card_addr: u64, len: u32) -> Result<(), CopyFault> {
        let o = off as usize;
        self.gddr
            .write(card_addr, &self.buf[o..o + len as usize])
            .map_err(|_| CopyFault)
    }
}

fn console_block() -> Vec<u8> {
    let d = MicDeviceDesc {
        ty: id::CONSOLE,
        num_vq: 2,
        feature_len: 4,
        config_len: 12,
        status: 0,
    };
    let mut b = std::vec![0u8; desc_size(&d)];
    b[..8].copy_from_slice(&d.to_bytes());
    for i in 0..2 {
        let vq = MicVqconfig {
            address: 0,
            used_address: 0,
            num: 128,
        };
        b[d.vq_offset(i)..d.vq_offset(i) + 24].copy_from_slice(&vq.to_bytes());
    }
    b
}

const FAST: AckTiming = AckTiming {
    period_ms: 1,
    budget_ms: 10,
};

fn acked(p: AckPoll) -> bool {
    p == AckPoll::Acked
}

struct Link {
    mmio: FakeMmio,
    host: FakeMem,
    gddr: FakeMem,
    dev: HostDevice,
    alloc: Bump,
}

impl Link {
    fn new() -> Self {
        let mmio = FakeMmio::new();
        let host = FakeMem::new(HOST_LEN);
        let dev = HostDevice::probe(&mmio, &host, DMA_BASE).unwrap();
        Self {
            mmio,
            host,
            gddr: FakeMem::new(GDDR_LEN),
            dev,
            alloc: Bump::default(),
        }
    }

    fn phys(&self) -> CardPhys<'_> {
        CardPhys {
            gddr: &self.gddr,
            host: &self.host,
            mmio: &self.mmio,
        }
    }

    fn user(&self, data: &[u8]) -> User<'_> {
        User {
            buf: data.to_vec(),
            gddr: &self.gddr,
        }
    }
}

/// Host adds a console, card driver comes up, finds it, negotiates, finds
/// its vqs (host takes the used rings), and goes DRIVER_OK.
fn up() -> (Link, VopDevice, CardDevice, CardVdev) {
    let mut l = Link::new();
    let card = CardDevice::init(&l.mmio, &l.phys()).unwrap();
    let mut v = VopDevice::new();
    v.add(&mut l.dev, &l.mmio, &l.host, &mut l.alloc, &console_block())
        .unwrap();
    let phys = l.phys();
    let loc = walk_mem(&phys, card.dp()).next().unwrap().unwrap();
    let mut doorbells = crate::card::CardDoorbells::new();
    let mut cv = CardVdev::probe(&phys, card.dp(), &loc, &mut doorbells).unwrap();
    assert_eq!(cv.device_type(), id::CONSOLE);
    cv.set_status(&l.mmio, &phys, status::ACKNOWLEDGE | status::DRIVER)
        .unwrap();
    assert_eq!(cv.finalize_features(&phys, u32::MAX).unwrap(), 0);
    let wait = cv
        .find_vqs(&l.mmio, &phys, &[0x10_0000, 0x10_1000], FAST)
        .unwrap();
    assert!(!acked(wait.poll(&phys, 0)), "host has not looked yet");
    // The card rang c2h_vdev_db: the host's bottom half.
    assert!(v.handle_doorbell(&l.host, &l.gddr).unwrap().activated);
    assert!(acked(wait.poll(&phys, 0)));
    cv.set_status(
        &l.mmio,
        &phys,
        status::ACKNOWLEDGE | status::DRIVER | status::DRIVER_OK,
    )
    .unwrap();
    assert_eq!(v.status(&l.host).unwrap() & status::DRIVER_OK, status::DRIVER_OK);
    (l, v, card, cv)
}

#[test]
fn a_console_carries_bytes_both_ways() {
    let (l, mut v, _card, mut cv) = up();
    let phys = l.phys();
    // Card → host: the card's TX queue (1) offers "uname -a\n".
    l.gddr.write(0x20_0000, b"uname -a\n").unwrap();
    let q = cv.queue(1).unwrap();
    let old = q.avail_idx();
    q.add(
        &phys,
        &[Buf {
            addr: 0x20_0000,
            len: 9,
            write: false,
        }],
        11,
    )
    .unwrap();
    assert!(q.kick_needed(&phys, old).unwrap());
    assert!(v.pending(&l.host, 1).unwrap());
    let mut u = l.user(&[0; 64]);
    let c = v.copy_desc(&l.mmio, &l.host, &l.gddr, 1, &mut u, true).unwrap();
    assert_eq!(&u.buf[..c.out_len as usize], b"uname -a\n");
    assert_eq!(
        cv.queue(1).unwrap().pop_used(&phys).unwrap(),
        Some(UsedBuf { token: 11, len: 9 })
    );
    // Host → card: the card's RX queue (0) has a 64-byte buffer.
    let rx = cv.queue(0).unwrap();
    rx.add(
        &phys,
        &[Buf {
            addr: 0x30_0000,
            len: 64,
            write: true,
        }],
        22,
    )
    .unwrap();
    let mut u = l.user(b"Linux mic0 3.10.0\r\n");
    let c = v.copy_desc(&l.mmio, &l.host, &l.gddr, 0, &mut u, true).unwrap();
    assert_eq!(c.out_len, 19);
    // The card wanted an interrupt: the host rang the card's doorbell.
    assert!(c.notify);
    let db = cv.h2c_db();
    assert!(
        l.mmio
            .writes_to(regs::apicicr(db))
            .iter()
            .any(|v| v & regs::APICICR_SEND != 0)
    );
    let got = cv.queue(0).unwrap().pop_used(&phys).unwrap().unwrap();
    assert_eq!(got, UsedBuf { token: 22, len: 19 });
    assert_eq!(l.gddr.bytes(0x30_0000, 19), b"Linux mic0 3.10.0\r\n");
    assert_eq!(cv.queue(0).unwrap().pop_used(&phys).unwrap(), None);
    assert_eq!(cv.queue(0).unwrap().in_flight(), 0);
}

#[test]
fn many_chains_recycle_descriptors_through_wraps() {
    let (l, mut v, _card, mut cv) = up();
    let phys = l.phys();
    for round in 0..1000u32 {
        let q = cv.queue(1).unwrap();
        let n = 1 + round % 3;
        let bufs: Vec<_> = (0..n)
            .map(|k| Buf {
                addr: 0x20_0000 + u64::from(k) * 16,
                len: 16,
                write: false,
            })
            .collect();
        q.add(&phys, &bufs, round).unwrap();
        let mut u = l.user(&[0; 64]);
        let c = v.copy_desc(&l.mmio, &l.host, &l.gddr, 1, &mut u, true).unwrap();
        assert_eq!(c.out_len, 16 * n);
        let got = cv.queue(1).unwrap().pop_used(&phys).unwrap().unwrap();
        assert_eq!(got.token, round);
    }
    assert_eq!(cv.queue(1).unwrap().num_free(), 128);
}

/// The card adds one chain to its TX queue and kicks as a driver does,
/// only if the host wants to hear; a kick runs the host's bottom half.
/// Whether it kicked.
fn add_and_kick(l: &Link, v: &mut VopDevice, cv: &mut CardVdev, token: u32) -> bool {
    let phys = l.phys();
    let q = cv.queue(1).unwrap();
    let old = q.avail_idx();
    let b = Buf {
        addr: 0x20_0000 + u64::from(token % 128) * 64,
        len: 64,
        write: false,
    };
    q.add(&phys, &[b], token).unwrap();
    let kick = q.kick_needed(&phys, old).unwrap();
    if kick {
        v.handle_doorbell(&l.host, &l.gddr).unwrap();
    }
    kick
}

/// The host consumes one chain of the card's TX queue, which it reaps.
fn consume(l: &Link, v: &mut VopDevice, cv: &mut CardVdev) {
    let mut u = l.user(&[0; 64]);
    let c = v.copy_desc(&l.mmio, &l.host, &l.gddr, 1, &mut u, true).unwrap();
    assert!(c.completed);
    cv.queue(1).unwrap().pop_used(&l.phys()).unwrap().unwrap();
}

#[test]
fn the_card_kicks_once_per_batch_the_host_drains() {
    let (l, mut v, _card, mut cv) = up();
    // A batch of 16 chains added one at a time: one doorbell, the first.
    let kicks: Vec<bool> = (0..16).map(|t| add_and_kick(&l, &mut v, &mut cv, t)).collect();
    assert_eq!(kicks.iter().filter(|&&k| k).count(), 1, "{kicks:?}");
    assert!(kicks[0]);
    assert_eq!(cv.queue(1).unwrap().kicks_suppressed(), 15);
    // While the host drains it, chains the card adds need no doorbell:
    // the host finds them before it stops.
    for _ in 0..8 {
        consume(&l, &mut v, &mut cv);
    }
    assert!(!add_and_kick(&l, &mut v, &mut cv, 16));
    for _ in 0..9 {
        consume(&l, &mut v, &mut cv);
    }
    assert!(!v.pending(&l.host, 1).unwrap());
    // Drained: the next batch rings again, once.
    let kicks = (17..33).filter(|&t| add_and_kick(&l, &mut v, &mut cv, t)).count();
    assert_eq!(kicks, 1);
    // The other queue was never quietened: it has nothing waiting.
    let rx = cv.queue(0).unwrap();
    let old = rx.avail_idx();
    let b = Buf {
        addr: 0x30_0000,
        len: 64,
        write: true,
    };
    rx.add(&l.phys(), &[b], 99).unwrap();
    assert!(rx.kick_needed(&l.phys(), old).unwrap());
}

#[test]
fn device_reset_and_hot_removal_handshakes() {
    let (mut l, mut v, _card, mut cv) = up();
    // Card resets the device (driver unbind).
    let phys = l.phys();
    let wait = cv.begin_reset(&l.mmio, &phys, FAST).unwrap();
    assert!(!acked(wait.poll(&phys, 0)));
    assert!(v.handle_doorbell(&l.host, &l.gddr).unwrap().reset);
    assert!(acked(wait.poll(&phys, 0)));
    cv.finish_reset(&phys).unwrap();
    assert!(matches!(cv.queue(0), Err(VirtioError::NoQueue(0))));
    assert_eq!(v.status(&l.host).unwrap(), 0);
    // The host removes the device (its file is closed).
    let hwait = v.begin_remove(&l.mmio, &l.host).unwrap();
    // (The card's config doorbell rang; the card looks at the page.)
    assert_eq!(cv.config_request(&phys).unwrap(), Some(ConfigRequest::Remove));
    let mut doorbells = crate::card::CardDoorbells::new();
    cv.remove(&l.mmio, &phys, &mut doorbells).unwrap();
    assert!(acked(hwait.poll(&l.host, 0)));
    v.finish_remove(&mut l.dev, &l.host, &mut l.alloc);
    let phys = l.phys();
    assert!(walk_mem(&phys, 0).next().is_none() || walk_mem(&phys, 0).all(|d| d.is_ok()));
    assert_eq!(
        crate::devpage::walk_mem(&l.host, 0).count(),
        0,
        "only a removed slot is left"
    );
}

#[test]
fn config_change_reaches_the_card() {
    let (l, mut v, _card, cv) = up();
    let phys = l.phys();
    let wait = v
        .config_change(&l.mmio, &l.host, &[80, 0, 25, 0, 0, 0, 0, 0, 0, 0, 0, 0])
        .unwrap();
    assert_eq!(cv.config_request(&phys).unwrap(), Some(ConfigRequest::Changed));
    let mut cfg = [0u8; 4];
    cv.read_config(&phys, 0, &mut cfg).unwrap();
    assert_eq!(cfg, [80, 0, 25, 0]);
    assert_eq!(
        cv.read_config(&phys, 10, &mut cfg),
        Err(VirtioError::ConfigOutOfRange)
    );
    assert_eq!(
        cv.read_config(&phys, usize::MAX, &mut cfg),
        Err(VirtioError::ConfigOutOfRange)
    );
    cv.ack_config(&phys).unwrap();
    assert!(acked(wait.poll(&l.host, 0)));
    v.finish_config_change(&l.host).unwrap();
    assert_eq!(cv.config_request(&phys).unwrap(), None);
}

#[test]
fn the_card_checks_what_the_host_wrote() {
    // A wrong ring magic: find_vqs refuses.
    let mut l = Link::new();
    let card = CardDevice::init(&l.mmio, &l.phys()).unwrap();
    let mut v = VopDevice::new();
    v.add(&mut l.dev, &l.mmio, &l.host, &mut l.alloc, &console_block())
        .unwrap();
    let ring0 = v.mmap_layout().nth(1).unwrap().1;
    l.host.write_u32(ring0 + 5126 + 4, 0x1234).unwrap();
    let phys = l.phys();
    let loc = walk_mem(&phys, card.dp()).next().unwrap().unwrap();
    let mut dbs = crate::card::CardDoorbells::new();
    let mut cv = CardVdev::probe(&phys, card.dp(), &loc, &mut dbs).unwrap();
    assert_eq!(
        cv.find_vqs(&l.mmio, &phys, &[0x10_0000, 0x10_1000], FAST)
            .unwrap_err(),
        VirtioError::MagicMismatch {
            index: 0,
            found: 0x1234
        }
    );
    // A ring address outside anything the card can reach.
    let vq0 = card.dp() + loc.offset as u64 + 8;
    phys.write_u64(vq0, 0x7_0000_0000).unwrap();
    assert_eq!(
        cv.find_vqs(&l.mmio, &phys, &[0x10_0000, 0x10_1000], FAST)
            .unwrap_err(),
        VirtioError::RingOutOfRange { index: 0 }
    );
    phys.write_u16(vq0 + 16, 100).unwrap();
    assert_eq!(
        cv.find_vqs(&l.mmio, &phys, &[0x10_0000], FAST).unwrap_err(),
        VirtioError::BadVring { index: 0, num: 100 }
    );
}

#[test]
fn a_hostile_host_cannot_confuse_the_driver_queue() {
    let mem = FakeMem::new(64 << 10);
    let mut q = DriverQueue::new(8, 0, 0x800, 0x1000).unwrap();
    q.zero(&mem, &mem).unwrap();
    assert_eq!(q.add(&mem, &[], 0), Err(QueueError::BadChain));
    let w = Buf {
        addr: 0x4000,
        len: 100,
        write: true,
    };
    let r = Buf { write: false, ..w };
    assert_eq!(q.add(&mem, &[w, r], 0), Err(QueueError::BadChain));
    assert_eq!(q.add(&mem, &[Buf { len: 0, ..r }], 0), Err(QueueError::BadChain));
    let head = q.add(&mem, &[r, w], 5).unwrap();
    // The host completes an unknown head.
    let used = 0x1000;
    let elem = |id: u32, len: u32, idx: u16| {
        mem.write_u32(used + 4, id).unwrap();
        mem.write_u32(used + 8, len).unwrap();
        mem.write_u16(used + 2, idx).unwrap();
    };
    elem(7, 1, 1);
    assert_eq!(q.pop_used(&mem), Err(QueueError::UnknownHead(7)));
    elem(1000, 1, 1);
    assert_eq!(q.pop_used(&mem), Err(QueueError::UnknownHead(1000)));
    // More bytes than the chain holds.
    elem(u32::from(head), 201, 1);
    assert_eq!(
        q.pop_used(&mem),
        Err(QueueError::BadLen {
            head,
            len: 201,
            cap: 200
        })
    );
    // A used index jump.
    elem(u32::from(head), 1, 9);
    assert_eq!(q.pop_used(&mem), Err(QueueError::UsedJump { idx: 9, last: 0 }));
    // And the honest completion still works.
    elem(u32::from(head), 150, 1);
    assert_eq!(q.pop_used(&mem), Ok(Some(UsedBuf { token: 5, len: 150 })));
    // Full ring.
    for t in 0..8 {
        q.add(&mem, &[r], t).unwrap();
    }
    assert_eq!(q.add(&mem, &[r], 9), Err(QueueError::Full));
    assert!(DriverQueue::new(0, 0, 0, 0).is_none());
    assert!(DriverQueue::new(6, 0, 0, 0).is_none());
    assert!(DriverQueue::new(256, 0, 0, 0).is_none());
}

#[test]
fn a_double_submission_is_served_twice_and_the_second_completion_refused() {
    let (l, mut v, _card, mut cv) = up();
    let phys = l.phys();
    l.gddr.write(0x20_0000, b"twice").unwrap();
    let q = cv.queue(1).unwrap();
    let head = q
        .add(
            &phys,
            &[Buf {
                addr: 0x20_0000,
                len: 5,
                write: false,
            }],
            3,
        )
        .unwrap();
    assert!(q.head_in_flight(head));
    q.offer_again(&phys, head).unwrap();
    // The host cannot tell a resubmission from a reuse: it serves both.
    for _ in 0..2 {
        let mut u = l.user(&[0; 8]);
        let c = v.copy_desc(&l.mmio, &l.host, &l.gddr, 1, &mut u, true).unwrap();
        assert_eq!(&u.buf[..c.out_len as usize], b"twice");
    }
    assert_eq!(v.broken(), None);
    // The driver's own record catches the second completion.
    let q = cv.queue(1).unwrap();
    assert_eq!(q.pop_used(&phys), Ok(Some(UsedBuf { token: 3, len: 5 })));
    assert!(!q.head_in_flight(head));
    assert_eq!(q.pop_used(&phys), Err(QueueError::UnknownHead(u32::from(head))));
    assert_eq!(q.num_free(), 128, "nothing freed twice");
}
