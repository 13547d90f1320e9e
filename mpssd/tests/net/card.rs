//! A card's virtio-net driver (or any two-queue device's: the console's
//! too) played by the test (or the benchmark) on
//! micemu's emulated card hardware, with the driver core's card half: it
//! finds mpssd's net device in the device page, negotiates, re-homes the
//! used rings, goes DRIVER_OK, and then posts receive buffers and
//! transmit chains of its choosing — well-formed or hostile. The card is
//! not booted, so nothing else on it touches the rings.

#![allow(dead_code, unreachable_pub)]

use std::time::{Duration, Instant};

use mic_core::abi::virtio::{VRING_USED_F_NO_NOTIFY, id, status};
use mic_core::card::virtio::CardVdev;
use mic_core::card::vring::Buf;
use mic_core::card::{CardDevice, CardDoorbells};
use mic_core::devpage::walk_mem;
use mic_core::handshake::{AckPoll, AckTiming};
use mic_core::hw::Memory;
use micemu::Instance;
use micemu::cardos::CardHw;
use micemu::hw::{CardPhys, MmioView};

/// Where the played driver keeps its used rings and buffers in GDDR.
const USED: [u64; 2] = [0x0800_0000, 0x0800_1000];
const RX_BASE: u64 = 0x0810_0000;
const TX_BASE: u64 = 0x0910_0000;
/// Bytes per buffer slot.
pub const SLOT: u64 = 128 << 10;
/// Slots per queue (the rings' size).
pub const SLOTS: u32 = 128;

const TIMING: AckTiming = AckTiming {
    period_ms: 1,
    budget_ms: 10_000,
};

pub struct Card<'a> {
    pub hw: CardHw<MmioView<'a>, CardPhys<'a>>,
    pub vdev: CardVdev,
    rx_free: Vec<u32>,
    tx_free: Vec<u32>,
    /// Receive buffer lengths by slot.
    rx_len: Vec<u32>,
    /// Per queue, its avail index before the first add since the last kick.
    added: [Option<u16>; 2],
    /// Doorbells [`Card::kick_if_needed`] rang, and those it saved because
    /// the host did not want them.
    pub rung: u64,
    pub saved: u64,
}

impl<'a> Card<'a> {
    /// Brings up the card's driver for the net device mpssd added to card
    /// `card` of `inst`, taking the `wanted` features it offers; returns
    /// once DRIVER_OK is written.
    pub fn up(inst: &'a Instance, card: u32, wanted: u32) -> Card<'a> {
        Self::up_device(inst, card, id::NET, wanted)
    }

    /// The same for the first device of type `ty` (queue 0 the card's
    /// receive queue, queue 1 its transmit queue, as net and console).
    pub fn up_device(inst: &'a Instance, card: u32, ty: i8, wanted: u32) -> Card<'a> {
        let hw = inst.emulator().card_hw(card).unwrap();
        let dev = CardDevice::init(&hw.mmio, &hw.phys).unwrap();
        let start = Instant::now();
        let loc = loop {
            let found = walk_mem(&hw.phys, dev.dp()).flatten().find(|l| l.desc.ty == ty);
            if let Some(l) = found {
                break l;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "no device of type {ty} in the page"
            );
            std::thread::yield_now();
        };
        let mut dbs = CardDoorbells::new();
        let mut v = CardVdev::probe(&hw.phys, dev.dp(), &loc, &mut dbs).unwrap();
        v.set_status(&hw.mmio, &hw.phys, status::ACKNOWLEDGE | status::DRIVER)
            .unwrap();
        v.finalize_features(&hw.phys, wanted).unwrap();
        let wait = v.find_vqs(&hw.mmio, &hw.phys, &USED, TIMING).unwrap();
        let t = Instant::now();
        while wait.poll(&hw.phys, t.elapsed().as_millis() as u64) != AckPoll::Acked {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "the host never took the used rings"
            );
            std::thread::yield_now();
        }
        v.set_status(
            &hw.mmio,
            &hw.phys,
            status::ACKNOWLEDGE | status::DRIVER | status::DRIVER_OK,
        )
        .unwrap();
        // A polling driver: no interrupt per completion.
        for q in 0..2 {
            v.queue(q).unwrap().set_interrupts(&hw.phys, false).unwrap();
        }
        Card {
            hw,
            vdev: v,
            rx_free: (0..SLOTS).rev().collect(),
            tx_free: (0..SLOTS).rev().collect(),
            rx_len: vec![0; SLOTS as usize],
            added: [None; 2],
            rung: 0,
            saved: 0,
        }
    }

    /// Rings the host's doorbell for the device, wanted or not.
    pub fn kick(&mut self) {
        self.added = [None; 2];
        self.vdev.notify(&self.hw.mmio, &self.hw.phys);
    }

    /// What a driver does after adding chains: rings the host's doorbell
    /// unless the host said (`VRING_USED_F_NO_NOTIFY`) it needs none;
    /// whether it rang.
    pub fn kick_if_needed(&mut self) -> bool {
        let mut ring = false;
        for q in 0..2u8 {
            if let Some(old) = self.added[usize::from(q)].take() {
                ring |= self
                    .vdev
                    .queue(q)
                    .unwrap()
                    .kick_needed(&self.hw.phys, old)
                    .unwrap();
            }
        }
        if ring {
            self.rung += 1;
            self.vdev.notify(&self.hw.mmio, &self.hw.phys);
        } else {
            self.saved += 1;
        }
        ring
    }

    /// Whether the host wants a kick for queue `q` now (its used ring's
    /// flags).
    pub fn kicks_wanted(&mut self, q: u8) -> bool {
        let used = self.vdev.queue(q).unwrap().used_addr();
        self.hw.phys.read_u16(used).unwrap() & VRING_USED_F_NO_NOTIFY == 0
    }

    fn note_add(&mut self, q: u8) {
        let idx = self.vdev.queue(q).unwrap().avail_idx();
        self.added[usize::from(q)].get_or_insert(idx);
    }

    /// Posts `n` receive buffers of `len` bytes (no kick).
    pub fn post_rx(&mut self, n: usize, len: u32) {
        for _ in 0..n {
            let slot = self.rx_free.pop().expect("receive slots left");
            self.note_add(0);
            self.rx_len[slot as usize] = len;
            let b = Buf {
                addr: RX_BASE + u64::from(slot) * SLOT,
                len,
                write: true,
            };
            self.vdev
                .queue(0)
                .unwrap()
                .add(&self.hw.phys, &[b], slot)
                .unwrap();
        }
    }

    /// Receive buffers the host filled, their bytes (header and frame);
    /// their slots are free again (not reposted).
    pub fn take_rx(&mut self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(u) = self.vdev.queue(0).unwrap().pop_used(&self.hw.phys).unwrap() {
            let mut b = vec![0u8; u.len as usize];
            self.hw
                .phys
                .read(RX_BASE + u64::from(u.token) * SLOT, &mut b)
                .unwrap();
            self.rx_free.push(u.token);
            out.push(b);
        }
        out
    }

    /// Counts filled receive buffers and posts each again (the fast path
    /// of a benchmark: the bytes are not looked at).
    pub fn recycle_rx(&mut self) -> u64 {
        let mut n = 0;
        let q = self.vdev.queue(0).unwrap();
        let old = q.avail_idx();
        while let Some(u) = q.pop_used(&self.hw.phys).unwrap() {
            let b = Buf {
                addr: RX_BASE + u64::from(u.token) * SLOT,
                len: self.rx_len[u.token as usize],
                write: true,
            };
            q.add(&self.hw.phys, &[b], u.token).unwrap();
            n += 1;
        }
        if n > 0 {
            self.added[0].get_or_insert(old);
        }
        n
    }

    /// Makes one transmit chain available (no kick): `parts` each in a
    /// descriptor of its own, all in one slot; `false` if the ring is full.
    pub fn send(&mut self, parts: &[&[u8]]) -> bool {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        assert!(total as u64 <= SLOT, "a chain fits a slot");
        if self.vdev.queue(1).unwrap().num_free() < parts.len() as u16 {
            return false;
        }
        let Some(slot) = self.tx_free.pop() else {
            return false;
        };
        self.note_add(1);
        let mut at = TX_BASE + u64::from(slot) * SLOT;
        let mut bufs = Vec::new();
        for p in parts {
            self.hw.phys.write(at, p).unwrap();
            bufs.push(Buf {
                addr: at,
                len: p.len() as u32,
                write: false,
            });
            at += p.len() as u64;
        }
        self.vdev
            .queue(1)
            .unwrap()
            .add(&self.hw.phys, &bufs, slot)
            .unwrap();
        true
    }

    /// Transmit chains the host completed; their slots are free again.
    pub fn reap_tx(&mut self) -> u64 {
        let mut n = 0;
        while let Some(u) = self.vdev.queue(1).unwrap().pop_used(&self.hw.phys).unwrap() {
            self.tx_free.push(u.token);
            n += 1;
        }
        n
    }

    /// Re-reads until `cond` holds, at most `max`.
    pub fn until(&mut self, what: &str, max: Duration, mut cond: impl FnMut(&mut Self) -> bool) {
        let start = Instant::now();
        while !cond(self) {
            assert!(start.elapsed() < max, "timed out waiting for {what}");
            std::thread::yield_now();
        }
    }
}
