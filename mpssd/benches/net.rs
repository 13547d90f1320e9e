//! virtio-net figures beside their baselines, from one run
//! (`cargo bench -p mpssd --bench net [-- tx|rx]`; needs root, for a
//! network namespace of its own, and /dev/fuse). Prints figures; asserts
//! nothing about time.
//!
//! - card → TAP (`tx`): a driver played by this process on micemu's
//!   emulated card keeps the transmit ring full of 1514-byte frames (with
//!   their 10-byte virtio-net header) for [`RUN`]; mpssd's net device
//!   drains it into the TAP. Baseline: raw writes of the same frames to a
//!   TAP of the benchmark's own, one thread — the kernel's cost that every
//!   frame from the card pays too.
//! - TAP → card (`rx`): [`QUEUED`] 1514-byte frames wait on the device's
//!   TAP (sent out of its interface while the card had no buffers posted);
//!   the card then reposts every receive buffer the device fills until all
//!   are through. Baseline: raw reads of as many frames waiting on a TAP of
//!   the benchmark's own.
//!
//! The played driver kicks as a driver does, only when the host wants to
//! hear (the driver's kick suppression); the doorbells it rang and saved
//! are printed. It has no interrupt to wait for, so it naps ([`NAP`]) when
//! it has nothing to do: the card's processors are not the host's two.
//!
//! Each direction also prints every thread's CPU per frame while the
//! device moved frames — the played card's (which a real card spends on
//! its own cores), micemu's server's (the real card's DMA engine), mpssd's
//! — and mpssd's own beside the baseline's: on a shared machine the
//! figure above is bounded by the baseline over all of them together.
//!
//! Goal: each direction through the device at ≥ 70 % of its baseline.
//! Baseline and device alternate, [`ROUNDS`] times each, and the medians
//! are compared: the machine is shared, and its other load moves both.
//!
//! Everything runs in a network namespace this process makes for itself;
//! without the privilege for that (or for a TAP in it) it says so and exits
//! 0, having measured nothing.
#![allow(clippy::cast_precision_loss)]

#[path = "../tests/net/card.rs"]
mod card;
#[path = "../tests/net/netns.rs"]
mod netns;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use libmic::MicRoot;
use libmic::vdev::VirtioFile;
use mic_core::abi::virtio::VirtioNetHdr;
use micemu::{Config, Instance, Timing};
use mpssd::config::CardConfig;
use mpssd::devices::net::{NetConfig, NetDevice, NetState, NetStats, netlink, tap};

/// One card → TAP measurement.
const RUN: Duration = Duration::from_secs(1);
/// Measurements of each kind, alternating.
const ROUNDS: usize = 3;
const FRAME: usize = 1514;
const GOAL: f64 = 70.0;
/// Not the TAP's MAC: the kernel drops the frames as soon as it sees them
/// (the same cost for the baseline and the device).
const DST: [u8; 6] = [0x02, 0, 0, 0, 0x0b, 0x0e];
/// Any wait for the device; only reached if something hangs.
const HANG: Duration = Duration::from_secs(20);
/// Frames queued on a TAP for its reader, per measurement.
const QUEUED: u64 = 20_000;
/// What the played card naps when its ring is full or it has nothing to
/// do (with its timer slack at 1 µs, so the nap is this long), about as
/// often as a driver's transmit-complete interrupt would wake it: at
/// 100 µs plus the default 50 µs of slack, a ring of 128 frames ran dry
/// before the card looked again, and the device was measured waiting for
/// the card (it slept thousands of times a second); at 20 µs the card's
/// own wake-ups took the CPU the device needs.
const NAP: Duration = Duration::from_micros(50);

/// The played card keeps off the CPU the device's thread runs on, as the
/// card's own cores would: on a two-CPU machine the scheduler otherwise
/// now and then puts the two together, and the card's refills then take
/// the device's CPU, which measures the placement, not the device. Every
/// [`KEEP_OFF_EVERY`] it looks where that thread ran last and, when it is
/// this CPU, moves off it (`micemu::affinity::move_off`).
struct KeepOff {
    stat: std::path::PathBuf,
    next: Instant,
    /// Times it moved.
    moves: u64,
}

/// How often the played card looks where the device's thread runs.
const KEEP_OFF_EVERY: Duration = Duration::from_millis(1);

impl KeepOff {
    /// For the thread named `name` (the device's), if there is one.
    fn new(name: &str) -> Option<Self> {
        let task = std::fs::read_dir("/proc/self/task")
            .ok()?
            .flatten()
            .find(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == name))?;
        Some(Self {
            stat: task.path().join("stat"),
            next: Instant::now(),
            moves: 0,
        })
    }

    fn check(&mut self) {
        let now = Instant::now();
        if now < self.next {
            return;
        }
        self.next = now + KEEP_OFF_EVERY;
        // The CPU it ran on last: field 39, the 37th after the name.
        let Some(theirs) = std::fs::read_to_string(&self.stat).ok().and_then(|st| {
            st.rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(36)?
                .parse::<usize>()
                .ok()
        }) else {
            return;
        };
        if nix::sched::sched_getcpu().ok() != Some(theirs) {
            return;
        }
        if micemu::affinity::move_off(theirs) {
            self.moves += 1;
        }
    }
}

fn frame() -> Vec<u8> {
    netns::ether(DST, [0x02, 0x6d, 0x69, 0x63, 0, 0], 0x88b5, &[0x5a; FRAME - 14])
}

fn with_hdr(f: &[u8]) -> Vec<u8> {
    let mut v = VirtioNetHdr::default().to_bytes().to_vec();
    v.extend_from_slice(f);
    v
}

fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A TAP of the baseline's own, with an address and its link up.
fn baseline_tap(name: &str, addr: Ipv4Addr) -> Result<tap::Tap> {
    let t = tap::Tap::create(name)?;
    netlink::configure(name, addr, 24)?;
    Ok(t)
}

/// Raw TAP writes for one [`RUN`]: frames per second.
fn raw_writes(t: &tap::Tap) -> Result<f64> {
    let buf = with_hdr(&frame());
    let mut n = 0u64;
    let start = Instant::now();
    while start.elapsed() < RUN {
        for _ in 0..256 {
            t.send(&buf)?;
        }
        n += 256;
    }
    Ok(rate(n, start.elapsed()))
}

/// Queues `n` frames on TAP `name`'s read side: sent out of its
/// interface (AF_PACKET), where its reader finds them.
fn fill(name: &str, n: u64) -> Result<()> {
    let p = netns::Packet::bind(name, Duration::from_secs(1));
    let f = frame();
    for _ in 0..n {
        anyhow::ensure!(p.send(&f), "the kernel refused a frame out of {name}");
    }
    Ok(())
}

/// Lets TAP `name` queue [`QUEUED`] frames and more for its reader.
fn deep_queue(name: &str) -> Result<()> {
    let ok = std::process::Command::new("ip")
        .args([
            "link",
            "set",
            "dev",
            name,
            "txqueuelen",
            &(2 * QUEUED).to_string(),
        ])
        .status()
        .context("running ip (iproute2)")?
        .success();
    anyhow::ensure!(ok, "ip link set {name} txqueuelen failed");
    Ok(())
}

/// A plain reader drains [`QUEUED`] frames waiting on TAP `t` (interface
/// `name`): frames per second.
fn raw_reads(t: &tap::Tap, name: &str) -> Result<f64> {
    let mut buf = vec![0u8; 70_000];
    while t.recv(&mut buf)?.is_some() {}
    fill(name, QUEUED)?;
    let mut n = 0u64;
    let start = Instant::now();
    while t.recv(&mut buf)?.is_some() {
        n += 1;
    }
    Ok(rate(n, start.elapsed()))
}

/// The card keeps the transmit ring full for one [`RUN`]: frames per
/// second the device wrote to the TAP.
fn device_tx(card: &mut card::Card<'_>, stats: &NetStats, mut keep_off: Option<&mut KeepOff>) -> f64 {
    let tx = with_hdr(&frame());
    let before = stats.tx_frames.load(Ordering::Relaxed);
    let start = Instant::now();
    while start.elapsed() < RUN {
        if let Some(k) = keep_off.as_deref_mut() {
            k.check();
        }
        card.reap_tx();
        let mut added = false;
        while card.send(&[&tx]) {
            added = true;
        }
        if added {
            card.kick_if_needed();
        } else {
            std::thread::sleep(NAP);
        }
    }
    let secs = start.elapsed();
    let r = rate(stats.tx_frames.load(Ordering::Relaxed) - before, secs);
    card.until("the transmit ring drained", HANG, |c| {
        c.reap_tx();
        c.vdev.queue(1).unwrap().in_flight() == 0
    });
    r
}

/// [`QUEUED`] frames wait on the device's TAP (interface `name`), which
/// stopped reading it when the card's buffers ran out; the card then
/// reposts every buffer filled until they are through: frames per second
/// the card received, and how many (the threads' CPU while they moved is
/// added to `before` and `after`).
fn device_rx(
    card: &mut card::Card<'_>,
    stats: &NetStats,
    name: &str,
    (before, after): (&mut BTreeMap<String, f64>, &mut BTreeMap<String, f64>),
    mut keep_off: Option<&mut KeepOff>,
) -> Result<(f64, u64)> {
    let full = stats.rx_ring_full.load(Ordering::Relaxed);
    let before_frames = stats.rx_frames.load(Ordering::Relaxed);
    fill(name, QUEUED)?;
    card.until("the receive ring full", HANG, |_| {
        stats.rx_ring_full.load(Ordering::Relaxed) > full
    });
    let start_frames = stats.rx_frames.load(Ordering::Relaxed);
    let left = QUEUED - (start_frames - before_frames);
    accumulate(before, &thread_cpu());
    let start = Instant::now();
    while stats.rx_frames.load(Ordering::Relaxed) - start_frames < left {
        anyhow::ensure!(start.elapsed() < HANG, "the queued frames never reached the card");
        if let Some(k) = keep_off.as_deref_mut() {
            k.check();
        }
        if card.recycle_rx() > 0 {
            card.kick_if_needed();
        } else {
            std::thread::sleep(NAP);
        }
    }
    let n = stats.rx_frames.load(Ordering::Relaxed) - start_frames;
    let r = rate(n, start.elapsed());
    accumulate(after, &thread_cpu());
    Ok((r, n))
}

/// Our median beside the baseline's, and the card's doorbells since
/// `bells` (rung, saved).
fn line(what: &str, ours: &[f64], base: &[f64], card: &card::Card<'_>, bells: (u64, u64)) {
    let (ours, base) = (median(ours.to_vec()), median(base.to_vec()));
    let pct = 100.0 * ours / base;
    println!(
        "  {what:<11} {:6.1} k frames/s ({:5.2} µs each)   baseline {what_base:<10} {:6.1} k frames/s ({:4.2} µs)   \
         {pct:5.1} % (goal ≥ {GOAL} %: {})",
        ours / 1e3,
        1e6 / ours,
        base / 1e3,
        1e6 / base,
        if pct >= GOAL { "met" } else { "NOT met" },
        what_base = if what.ends_with("TAP") {
            "TAP writes"
        } else {
            "TAP reads"
        },
    );
    println!(
        "  {:<11} the card rang {} doorbells, saved {} kicks the host did not want",
        "",
        card.rung - bells.0,
        card.saved - bells.1
    );
}

/// CPU time of each of this process's threads so far, by name (the
/// scheduler's own account, `/proc/self/task/*/sched`), in ms; this
/// thread, the played card, is named `card`.
fn thread_cpu() -> BTreeMap<String, f64> {
    let me = std::process::id().to_string();
    let mut out = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for t in tasks.flatten() {
        let Ok(sched) = std::fs::read_to_string(t.path().join("sched")) else {
            continue;
        };
        let ms = sched
            .lines()
            .find_map(|l| l.strip_prefix("se.sum_exec_runtime"))
            .and_then(|l| l.trim_start_matches([' ', ':']).trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        let name = if t.file_name().to_string_lossy() == me {
            "card".to_owned()
        } else {
            std::fs::read_to_string(t.path().join("comm"))
                .map_or_else(|_| "?".into(), |c| c.trim().to_owned())
        };
        *out.entry(name).or_insert(0.0) += ms;
    }
    out
}

/// Adds `now` into `sum`, thread by thread.
fn accumulate(sum: &mut BTreeMap<String, f64>, now: &BTreeMap<String, f64>) {
    for (k, v) in now {
        *sum.entry(k.clone()).or_insert(0.0) += v;
    }
}

/// CPU each thread spent between `before` and `after`, per frame of
/// `frames`: the played card's, the device's (mpssd's threads), micemu's;
/// and mpssd's own beside the baseline's (`base`: its rates).
fn cpu_line(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>, frames: u64, base: &[f64]) {
    let per = |ms: f64| ms * 1e3 / frames.max(1) as f64;
    let mut parts = Vec::new();
    let (mut total, mut ours) = (0.0, 0.0);
    for (name, &ms) in after {
        let d = ms - before.get(name).copied().unwrap_or(0.0);
        if d * 1e3 / frames.max(1) as f64 >= 0.005 {
            parts.push(format!("{name} {:.2}", per(d)));
            total += d;
        }
        if name.starts_with("net-mic") {
            ours += d;
        }
    }
    println!(
        "  {:<11} CPU µs per frame: {} (all {:.2})",
        "",
        parts.join(", "),
        per(total)
    );
    // The baseline is one thread that never waits: its time is its CPU.
    let base = 1e6 / median(base.to_vec());
    println!(
        "  {:<11} mpssd's own CPU per frame {:.2} µs, the baseline's {base:.2} µs: {:.1} % of the card's \
         and micemu's share aside",
        "",
        per(ours),
        100.0 * base / per(ours).max(f64::MIN_POSITIVE)
    );
}

/// Why the benchmark cannot run here, if it cannot: no network namespace
/// of its own, or no TAP in it.
fn unprivileged() -> Option<String> {
    if let Err(e) = netns::try_enter() {
        return Some(format!("cannot make a network namespace of its own: {e}"));
    }
    match tap::Tap::create("probe0") {
        Ok(_) => None,
        Err(e) => Some(format!("cannot make a TAP device in its namespace: {e}")),
    }
}

fn main() -> Result<()> {
    // `cargo bench -p mpssd --bench net -- tx|rx` runs one direction.
    let only: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let run = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    if let Some(why) = unprivileged() {
        eprintln!("\n*** net benchmark SKIPPED: {why}.");
        eprintln!("*** It needs CAP_SYS_ADMIN and CAP_NET_ADMIN (run it as root); nothing was measured.\n");
        return Ok(());
    }
    println!(
        "virtio-net benchmarks, {FRAME}-byte frames, medians of {ROUNDS} rounds \
         (in a network namespace of their own)\n"
    );
    let dir = tempfile::tempdir()?;
    let inst = Instance::start(
        dir.path(),
        Config {
            cards: 1,
            memory: 256 << 20,
            timing: Timing::FAST,
            ..Config::default()
        },
    )
    .context("starting micemu (needs /dev/fuse)")?;
    let stats = Arc::new(NetStats::default());
    let file = VirtioFile::open(&MicRoot::new(dir.path()), 0)?;
    let transport = file.transport();
    let config = NetConfig::resolve(0, &CardConfig::default(), None);
    let dev = NetDevice::start(0, file, &config, Arc::clone(&stats))?;
    // The played card's naps last what they say (see NAP).
    nix::sys::prctl::set_timerslack(1000).context("setting the timer slack")?;
    let mut card = card::Card::up(&inst, 0, 0);
    let t = Instant::now();
    while stats.state() != NetState::Up {
        anyhow::ensure!(t.elapsed() < HANG, "the device never came up");
        std::thread::yield_now();
    }
    println!("  (dev/micN transport: {transport:?})");
    let mut keep_off = KeepOff::new("net-mic0");

    if run("tx") {
        let base_tap = baseline_tap("bench0", Ipv4Addr::new(192, 0, 2, 254))?;
        let bells = (card.rung, card.saved);
        let (mut base, mut ours) = (Vec::new(), Vec::new());
        let (mut before, mut after) = (BTreeMap::new(), BTreeMap::new());
        let frames = stats.tx_frames.load(Ordering::Relaxed);
        for _ in 0..ROUNDS {
            base.push(raw_writes(&base_tap)?);
            accumulate(&mut before, &thread_cpu());
            ours.push(device_tx(&mut card, &stats, keep_off.as_mut()));
            accumulate(&mut after, &thread_cpu());
        }
        line("card → TAP", &ours, &base, &card, bells);
        cpu_line(
            &before,
            &after,
            stats.tx_frames.load(Ordering::Relaxed) - frames,
            &base,
        );
    }
    if run("rx") {
        let base_tap = baseline_tap("bench1", Ipv4Addr::new(198, 51, 100, 254))?;
        deep_queue("bench1")?;
        deep_queue(&config.tap)?;
        let bells = (card.rung, card.saved);
        card.post_rx(card::SLOTS as usize, 1536);
        card.kick_if_needed();
        let (mut base, mut ours) = (Vec::new(), Vec::new());
        let (mut before, mut after) = (BTreeMap::new(), BTreeMap::new());
        let mut frames = 0;
        for _ in 0..ROUNDS {
            base.push(raw_reads(&base_tap, "bench1")?);
            let (r, n) = device_rx(
                &mut card,
                &stats,
                &config.tap,
                (&mut before, &mut after),
                keep_off.as_mut(),
            )?;
            ours.push(r);
            frames += n;
        }
        line("TAP → card", &ours, &base, &card, bells);
        cpu_line(&before, &after, frames, &base);
    }
    let st = stats.snapshot();
    println!(
        "\n  device: {} frames out, {} in; woken {} times by a doorbell, slept {} times, \
         {} ring-full stalls, {} errors",
        st["tx_frames"], st["rx_frames"], st["doorbells"], st["polls"], st["rx_ring_full"], st["errors"]
    );
    if let Some(k) = &keep_off {
        println!(
            "  the played card moved off the device's CPU {} times (looking every {KEEP_OFF_EVERY:?})",
            k.moves
        );
    }
    dev.stop();
    drop(card);
    inst.stop()
}
