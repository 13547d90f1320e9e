//! Virtio over PCIe figures beside their baselines, from one run
//! (`cargo bench -p micemu --bench vop [-- walker|copy|roundtrip]`; needs
//! /dev/fuse and root).
//! Prints figures; asserts nothing about time.
//!
//! 1. The host ring walker alone (mic-core's COPY_DESC over in-memory fakes):
//!    1500-byte chains per second, fetched, validated, copied and completed.
//!    Goal: ≥ 1 M/s.
//! 2. COPY_DESC throughput through micemu's dev/micN with libmic's client,
//!    64 KiB chains card → caller and caller → card, against plain memcpy of
//!    the same bytes (64 KiB chunks over the same 256 MiB working set, out of
//!    cache) in the same run. Goal: ≥ 50 % of memcpy. The time counted is
//!    the client's COPY_DESC calls; the card refills the ring between
//!    rounds. Each row once with one COPY_DESC a call and once with
//!    `copy_desc_batch` (16 chains, one hand-off to micemu); each alternates
//!    with its memcpy baseline 3 times and compares the medians.
//!
//! 3. Doorbell round trip card → host → card through micemu: a console
//!    keystroke echo. The host writes one byte into the card's receive ring
//!    (COPY_DESC, which rings the card), the card OS's console echoes it on
//!    its transmit ring and rings the host, the host wakes on the doorbell
//!    (poll on its dev/micN file) and reads the echo back. p50 and p99 over
//!    many round trips, beside an eventfd ping-pong between two threads
//!    measured in the same run. Goal: at most 3× the ping-pong.
//!
//! In 1 and 2 the card side is played by this process with the driver
//! core's card half on the emulated card's own hardware view, keeping the
//! ring full; in 3 it is the card OS model, booted.
#![allow(clippy::cast_precision_loss, clippy::many_single_char_names)]

use std::io::IoSliceMut;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use libmic::MicRoot;
use libmic::vdev::{DeviceBlock, VirtioFile};
use mic_core::abi::virtio::{VringDesc, id, status};
use mic_core::abi::{BP_H2C_CONFIG_DB, CTRL_USED_ADDRESS_UPDATED, DESC_STATUS, VQ_USED_ADDRESS};
use mic_core::card::CardDevice;
use mic_core::card::virtio::CardVdev;
use mic_core::card::vring::Buf;
use mic_core::devpage::walk_mem;
use mic_core::fake::{FakeMem, FakeMmio};
use mic_core::handshake::{AckPoll, AckTiming};
use mic_core::host::HostDevice;
use mic_core::host::vop::{CopyFault, HostAlloc, HostBuf, UserBuffers, VopDevice};
use mic_core::hw::Memory;
use micemu::{Config, Instance, Timing};

const CHUNK: usize = 64 << 10;
const WORKING_SET: u64 = 256 << 20;
const RUN: Duration = Duration::from_secs(2);
/// One measurement of a COPY_DESC row or of its memcpy baseline; each row
/// alternates them [`ROUNDS`] times and compares the medians (the machine
/// is shared: its other load moves both).
const ROUND: Duration = Duration::from_millis(400);
const ROUNDS: usize = 3;

fn main() -> Result<()> {
    // `cargo bench -p micemu --bench vop -- walker|copy|roundtrip` runs one.
    let only: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let run = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    println!("virtio over PCIe benchmarks\n");
    if run("walker") {
        walker_alone();
        println!();
    }
    if run("copy") {
        copy_desc_throughput()?;
        println!();
    }
    if run("roundtrip") {
        doorbell_round_trip()?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// 1. The walker alone
// ---------------------------------------------------------------------------

struct Bump(u64);

impl HostAlloc for Bump {
    fn alloc(&mut self, len: usize) -> Option<HostBuf> {
        let offset = 0x1000 + self.0;
        self.0 += len as u64;
        Some(HostBuf {
            offset,
            dma_addr: 0x1_0000_0000 + offset,
            len,
        })
    }
    fn free(&mut self, _: HostBuf) {}
}

struct Sink<'a> {
    buf: &'a mut [u8],
    card: &'a FakeMem,
}

impl UserBuffers for Sink<'_> {
    fn capacity(&self) -> u64 {
        self.buf.len() as u64
    }
    fn card_to_user(&mut self, off: u64, addr: u64, len: u32) -> Result<(), CopyFault> {
        let o = off as usize;
        self.card
            .read(addr, &mut self.buf[o..o + len as usize])
            .map_err(|_| CopyFault)
    }
    fn user_to_card(&mut self, _: u64, _: u64, _: u32) -> Result<(), CopyFault> {
        Ok(())
    }
}

fn walker_alone() {
    let mmio = FakeMmio::new();
    let host = FakeMem::new(64 << 10);
    let card = FakeMem::new(1 << 20);
    let mut dev = HostDevice::probe(&mmio, &host, 0x1_0000_0000).unwrap();
    host.write_u8(BP_H2C_CONFIG_DB as u64, 5).unwrap();
    let block = DeviceBlock {
        ty: id::CONSOLE,
        vrings: vec![128, 128],
        host_features: 0,
        config: vec![0; 12],
    }
    .to_bytes();
    let mut v = VopDevice::new();
    v.add(&mut dev, &mmio, &host, &mut Bump(0), &block).unwrap();
    // The card's side, by hand: used rings in card memory, DRIVER_OK.
    let page = |f: usize| (v.slot() + f) as u64;
    host.write_u64(page(v.desc().vq_offset(1) + VQ_USED_ADDRESS), 0x8_0000)
        .unwrap();
    host.write_u64(page(v.desc().vq_offset(0) + VQ_USED_ADDRESS), 0x9_0000)
        .unwrap();
    host.write_u8(page(v.desc().ctrl_offset() + CTRL_USED_ADDRESS_UPDATED), 1)
        .unwrap();
    host.write_u8(page(DESC_STATUS), status::DRIVER_OK).unwrap();
    assert!(v.handle_doorbell(&host, &card).unwrap().activated);
    let ring = v.mmap_layout().nth(2).unwrap().1;
    let avail = ring + 16 * 128;
    let d = VringDesc {
        addr: 0x1000,
        len: 1500,
        flags: 0,
        next: 0,
    };
    host.write(ring, &d.to_bytes()).unwrap();
    let mut buf = vec![0u8; 1500];
    let mut idx = 0u16;
    let mut chains = 0u64;
    let start = Instant::now();
    while start.elapsed() < RUN {
        for _ in 0..1000 {
            host.write_u16(avail + 4 + 2 * u64::from(idx & 127), 0).unwrap();
            idx = idx.wrapping_add(1);
            host.write_u16(avail + 2, idx).unwrap();
            let mut s = Sink {
                buf: &mut buf,
                card: &card,
            };
            let c = v.copy_desc(&mmio, &host, &card, 1, &mut s, true).unwrap();
            assert_eq!(c.out_len, 1500);
            chains += 1;
        }
    }
    let rate = chains as f64 / start.elapsed().as_secs_f64();
    println!("ring walker alone, 1500-byte chains (fetch, validate, copy, complete):");
    println!(
        "  {:.2} M chains/s   goal ≥ 1.00 M/s   {}",
        rate / 1e6,
        if rate >= 1e6 { "(met)" } else { "(NOT met)" }
    );
}

// ---------------------------------------------------------------------------
// 2. COPY_DESC through micemu
// ---------------------------------------------------------------------------

const TIMING: AckTiming = AckTiming {
    period_ms: 1,
    budget_ms: 5_000,
};

fn card_up(inst: &Instance) -> CardVdev {
    let hw = inst.emulator().card_hw(0).unwrap();
    let dev = CardDevice::init(&hw.mmio, &hw.phys).unwrap();
    let loc = walk_mem(&hw.phys, dev.dp()).next().unwrap().unwrap();
    let mut dbs = mic_core::card::CardDoorbells::new();
    let mut v = CardVdev::probe(&hw.phys, dev.dp(), &loc, &mut dbs).unwrap();
    v.set_status(&hw.mmio, &hw.phys, status::ACKNOWLEDGE | status::DRIVER)
        .unwrap();
    let wait = v
        .find_vqs(&hw.mmio, &hw.phys, &[0x2000_0000, 0x2000_1000], TIMING)
        .unwrap();
    let t = Instant::now();
    while wait.poll(&hw.phys, t.elapsed().as_millis() as u64) != AckPoll::Acked {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "host never took the used rings"
        );
        std::thread::yield_now();
    }
    v.set_status(
        &hw.mmio,
        &hw.phys,
        status::ACKNOWLEDGE | status::DRIVER | status::DRIVER_OK,
    )
    .unwrap();
    v
}

/// Chains per `copy_desc_batch` in the batched rows.
const BATCH: usize = 16;

/// Bytes per second the client moved on vring `vr` (readable 64 KiB
/// chains on vr 1, writable on vr 0), `batch` chains a call (1: plain
/// COPY_DESC). The card side runs in the same thread between rounds:
/// refill the ring, let the client drain it, reap.
fn through_micemu(
    inst: &Instance,
    f: &mut VirtioFile,
    v: &mut CardVdev,
    vr: u8,
    arena: bool,
    batch: usize,
) -> f64 {
    through_micemu_sized(inst, f, v, vr, CHUNK, arena, batch).0
}

/// As [`through_micemu`] with chains of `chunk` bytes: (bytes/s, calls/s).
fn through_micemu_sized(
    inst: &Instance,
    f: &mut VirtioFile,
    v: &mut CardVdev,
    vr: u8,
    chunk: usize,
    arena: bool,
    batch: usize,
) -> (f64, f64) {
    let hw = inst.emulator().card_hw(0).unwrap();
    let base = 0x3000_0000u64;
    let slots = WORKING_SET / CHUNK as u64;
    let q = v.queue(vr).unwrap();
    // A polling driver (NAPI-style): no interrupt per completion.
    q.set_interrupts(&hw.phys, false).unwrap();
    let mut bufs: Vec<libmic::vdev::IoBuf> = (0..batch)
        .map(|_| {
            if arena {
                f.alloc_buf(chunk)
            } else {
                libmic::vdev::IoBuf::from(vec![0x5au8; chunk])
            }
        })
        .collect();
    assert!(bufs.iter().all(|b| b.is_shared() == arena));
    let mut calls = 0u64;
    let mut next = 0u64;
    let mut moved = 0u64;
    let mut busy = Duration::ZERO;
    let start = Instant::now();
    while start.elapsed() < ROUND {
        while q.num_free() > 0 {
            let b = Buf {
                addr: base + (next % slots) * CHUNK as u64,
                len: chunk as u32,
                write: vr == 0,
            };
            q.add(&hw.phys, &[b], next as u32).unwrap();
            next += 1;
        }
        let t = Instant::now();
        loop {
            calls += 1;
            if batch == 1 {
                let n = f
                    .copy_desc(vr, &mut [IoSliceMut::new(&mut bufs[0])], true)
                    .unwrap();
                if n == 0 {
                    break;
                }
                moved += u64::from(n);
                continue;
            }
            let mut io: Vec<IoSliceMut<'_>> = bufs.iter_mut().map(|b| IoSliceMut::new(b)).collect();
            let b = f.copy_desc_batch(vr, &mut io, true).unwrap();
            assert!(b.error.is_none(), "{:?}", b.error);
            moved += b.lens[..b.chains].iter().map(|&n| u64::from(n)).sum::<u64>();
            if b.chains < batch {
                break;
            }
        }
        busy += t.elapsed();
        while q.pop_used(&hw.phys).unwrap().is_some() {}
    }
    let secs = busy.as_secs_f64();
    (moved as f64 / secs, calls as f64 / secs)
}

/// memcpy of 64 KiB chunks out of the working set (`src`) into one buffer.
fn memcpy_rate(src: &[u8]) -> f64 {
    let mut dst = vec![0u8; CHUNK];
    let slots = src.len() / CHUNK;
    let mut bytes = 0u64;
    let mut i = 0;
    let start = Instant::now();
    while start.elapsed() < ROUND {
        for _ in 0..256 {
            let at = (i % slots) * CHUNK;
            dst.copy_from_slice(&src[at..at + CHUNK]);
            std::hint::black_box(&dst);
            i += 1;
            bytes += CHUNK as u64;
        }
    }
    bytes as f64 / start.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// One card under a temporary root, with a console added on its
/// `dev/mic0` through libmic's client.
fn console_on(memory: u64, timing: Timing) -> Result<(tempfile::TempDir, Instance, VirtioFile)> {
    let dir = tempfile::tempdir()?;
    let inst = Instance::start(
        dir.path(),
        Config {
            cards: 1,
            memory,
            timing,
            ..Config::default()
        },
    )
    .context("starting micemu (needs /dev/fuse and root)")?;
    let mut f = VirtioFile::open(&MicRoot::new(dir.path()), 0)?;
    f.add_device(&DeviceBlock {
        ty: id::CONSOLE,
        vrings: vec![128, 128],
        host_features: 0,
        config: vec![0; 12],
    })?;
    Ok((dir, inst, f))
}

fn copy_desc_throughput() -> Result<()> {
    let (_dir, inst, mut f) = console_on(2 << 30, Timing::FAST)?;
    let mut v = card_up(&inst);
    let gb = |r: f64| r / 1e9;
    let src = vec![0x11u8; WORKING_SET as usize];
    println!(
        "COPY_DESC through micemu's dev/micN ({:?}), 64 KiB chains, medians of {ROUNDS} rounds \
         alternating with memcpy:",
        f.transport()
    );
    let b = BATCH;
    for (what, vr, arena, batch) in [
        ("card → caller, arena buffer", 1, true, 1),
        ("caller → card, arena buffer", 0, true, 1),
        ("card → caller, heap buffer ", 1, false, 1),
        ("caller → card, heap buffer ", 0, false, 1),
        ("card → caller, arena, batch", 1, true, b),
        ("caller → card, arena, batch", 0, true, b),
        ("card → caller, heap, batch ", 1, false, b),
        ("caller → card, heap, batch ", 0, false, b),
    ] {
        let (mut base, mut ours) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            base.push(memcpy_rate(&src));
            ours.push(through_micemu(&inst, &mut f, &mut v, vr, arena, batch));
        }
        let (base, r) = (median(base), median(ours));
        let pct = 100.0 * r / base;
        println!(
            "  {what}   {:6.2} GB/s   memcpy {:6.2} GB/s   {pct:5.1} %   goal ≥ 50 %   {}",
            gb(r),
            gb(base),
            if pct >= 50.0 { "(met)" } else { "(NOT met)" }
        );
    }
    println!("  (batch: {BATCH} chains a copy_desc_batch, one hand-off to micemu)");
    let (_, calls) = through_micemu_sized(&inst, &mut f, &mut v, 1, 1, true, 1);
    println!(
        "  1-byte chains: {:.2} µs per COPY_DESC (the call's own cost)",
        1e6 / calls
    );
    // 1-byte chains: bytes per second are chains per second.
    let (chains, _) = through_micemu_sized(&inst, &mut f, &mut v, 1, 1, true, BATCH);
    println!(
        "  1-byte chains: {:.2} µs per chain in batches of {BATCH}",
        1e6 / chains
    );
    drop(f);
    inst.stop()
}

// ---------------------------------------------------------------------------
// 3. Doorbell round trip: a console keystroke echo against eventfd ping-pong
// ---------------------------------------------------------------------------

/// Round trips measured (after as many warm-up ones).
const TRIPS: usize = 5_000;

/// The `q`-quantile of sorted durations.
fn quantile(sorted: &[Duration], q: f64) -> Duration {
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i]
}

/// Two threads passing a token through two eventfds, blocking reads:
/// the floor for "wake another thread and be woken back".
fn eventfd_ping_pong(trips: usize) -> Vec<Duration> {
    use nix::sys::eventfd::{EfdFlags, EventFd};
    let there = std::sync::Arc::new(EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC).unwrap());
    let back = std::sync::Arc::new(EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC).unwrap());
    let (p, q) = (std::sync::Arc::clone(&there), std::sync::Arc::clone(&back));
    let echo = std::thread::spawn(move || {
        for _ in 0..2 * trips {
            p.read().unwrap();
            q.write(1).unwrap();
        }
    });
    let mut out = Vec::with_capacity(trips);
    for i in 0..2 * trips {
        let t = Instant::now();
        there.write(1).unwrap();
        back.read().unwrap();
        if i >= trips {
            out.push(t.elapsed());
        }
    }
    echo.join().unwrap();
    out
}

/// A console on a booted card, through libmic's client.
struct Console {
    file: VirtioFile,
    map: libmic::vdev::RingMap,
    rx: libmic::vdev::IoBuf,
    tx: libmic::vdev::IoBuf,
}

impl Console {
    /// Reads the card's output until `n` bytes came, waking on the
    /// doorbell (poll) between reads; returns them.
    fn read(&mut self, n: usize) -> Vec<u8> {
        let mut got = Vec::new();
        let start = Instant::now();
        while got.len() < n {
            while self.map.pending(1) {
                let k = self
                    .file
                    .copy_desc(1, &mut [IoSliceMut::new(&mut self.tx)], true)
                    .unwrap();
                got.extend_from_slice(&self.tx[..k as usize]);
            }
            if got.len() >= n {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(10), "no echo: {got:?}");
            // TIMEOUT: a bound on one wait; the loop's own bound is 10 s.
            self.file.wait(Some(Duration::from_secs(1))).unwrap();
        }
        got
    }

    /// One keystroke: the byte into the receive ring, its echo back.
    fn keystroke(&mut self, byte: u8, echo: &[u8]) -> Duration {
        let t = Instant::now();
        self.rx[0] = byte;
        let n = self
            .file
            .copy_desc(0, &mut [IoSliceMut::new(&mut self.rx[..1])], true)
            .unwrap();
        assert_eq!(n, 1, "no receive buffer");
        let got = self.read(echo.len());
        let d = t.elapsed();
        assert_eq!(got, echo);
        d
    }
}

fn doorbell_round_trip() -> Result<()> {
    let timing = Timing {
        ack_budget: Duration::from_secs(5),
        ..Timing::FAST
    };
    let (dir, inst, mut file) = console_on(256 << 20, timing)?;
    let root = MicRoot::new(dir.path());
    let map = file.map()?;
    let card = root.card_by_id(0);
    card.boot_with(
        &libmic::BootRequest::defaults_for(&card),
        Some(&root.system_map()),
    )?;
    card.wait_os_up(Some(Duration::from_secs(20)))?;
    let (rx, tx) = (file.alloc_buf(64), file.alloc_buf(4096));
    let mut con = Console { file, map, rx, tx };
    // The login banner and the first prompt.
    let start = Instant::now();
    let mut banner = Vec::new();
    while !banner.ends_with(b"root@mic0:~# ") {
        assert!(start.elapsed() < Duration::from_secs(20), "no prompt: {banner:?}");
        banner.extend(con.read(1));
    }
    // A keystroke and its erasure: the line stays empty, every byte echoes.
    let mut trips = Vec::with_capacity(TRIPS);
    for i in 0..2 * TRIPS {
        let x = con.keystroke(b'x', b"x");
        let del = con.keystroke(0x7f, b"\x08 \x08");
        if i >= TRIPS {
            trips.extend([x, del]);
        }
    }
    let mut ping = eventfd_ping_pong(2 * TRIPS);
    trips.sort();
    ping.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let (t50, t99) = (quantile(&trips, 0.5), quantile(&trips, 0.99));
    let (p50, p99) = (quantile(&ping, 0.5), quantile(&ping, 0.99));
    let ratio = us(t50) / us(p50);
    println!(
        "doorbell round trip card → host → card ({} console keystrokes echoed, {:?}):",
        trips.len(),
        con.file.transport()
    );
    println!(
        "  eventfd ping-pong, two threads   p50 {:7.1} µs   p99 {:7.1} µs",
        us(p50),
        us(p99)
    );
    println!(
        "  keystroke echo through micemu    p50 {:7.1} µs   p99 {:7.1} µs",
        us(t50),
        us(t99)
    );
    println!(
        "  p50 {ratio:.1}× the ping-pong (p99 {:.1}×)   goal ≤ 3×   {}",
        us(t99) / us(p99),
        if ratio <= 3.0 { "(met)" } else { "(NOT met)" }
    );
    drop(con);
    inst.stop()
}
