//! mpssd's figures beside their baselines, from one run
//! (`cargo bench -p mpssd [-- blk|console|idle]`; root, /dev/fuse).
//! Prints figures; asserts nothing about time.
//!
//! 1. `blk`: virtio-blk 64 KiB sequential read and write through the whole
//!    emulated path — the card OS's driver (`blk bench`, `blk fill`: 64 KiB
//!    requests, 8 in flight) → the rings → micemu's dev/micN → mpssd (a
//!    real process) → the image, on tmpfs so it lives in the page cache —
//!    against memcpy of the same bytes in 64 KiB chunks out of cache in the
//!    same run (goal: at least 50 %): the median of five passes each way,
//!    every pass shown in order (the first reads pages mpssd has not
//!    mapped yet); CPU seconds per GB of mpssd and of the emulator (this
//!    process) over the five.
//! 2. `console`: a keystroke's round trip to the card's shell and back
//!    (its echo), through the broker (libmic's client, the control socket)
//!    and through the pty, beside a Unix-socket ping-pong between two
//!    threads (one hop's floor): p50 and p99 (goal: p99 under 1 ms through
//!    the broker).
//! 3. `idle`: mpssd's CPU with 8 booted cards and all their devices up
//!    (console, net, block), nothing typed or sent (goal: under 0.2 % of a
//!    core), beside the emulator's own.
//!
//! mpssd runs in a network namespace of this process's own (its TAPs live
//! there).

#![allow(clippy::cast_precision_loss, reason = "figures for display")]
#![allow(clippy::many_single_char_names, reason = "short-lived figures")]

#[path = "../tests/common/mod.rs"]
mod common;

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::console::{shell, shell_ready};
use common::{Daemon, Fleet, HANG, to_state, wait_event};
use libmic::mpssd::{AttachOptions, Console, ConsoleItem, Replay, SupervisorState as S};

const MIB: u64 = 1 << 20;
/// What each blk pass moves.
const BLK_MIB: u64 = 256;
/// Passes each way: the median is the figure.
const BLK_PASSES: usize = 5;
const TRIPS: usize = 2000;
const IDLE: Duration = Duration::from_secs(10);

fn main() {
    let only: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let run = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    println!("mpssd benchmarks\n");
    if run("blk") {
        blk();
        println!();
    }
    if run("console") {
        console();
        println!();
    }
    if run("idle") {
        idle();
    }
}

/// CPU time of process `pid` (`None`: this one): the sum of its live
/// threads' time on a CPU (`schedstat`, in ns: the 10 ms ticks of `stat`
/// are too coarse for an idle daemon).
fn cpu(pid: Option<u32>) -> Duration {
    let dir = pid.map_or_else(|| "/proc/self/task".to_owned(), |p| format!("/proc/{p}/task"));
    let mut ns = 0u64;
    for t in std::fs::read_dir(dir).unwrap().flatten() {
        if let Ok(s) = std::fs::read_to_string(t.path().join("schedstat")) {
            ns += s
                .split_whitespace()
                .next()
                .and_then(|x| x.parse().ok())
                .unwrap_or(0);
        }
    }
    Duration::from_nanos(ns)
}

fn boot_all(fleet: &Fleet, d: &Daemon, cards: u32) {
    let mut ev = d.events();
    for c in 0..cards {
        fleet.boot(c);
    }
    for c in 0..cards {
        wait_event(&mut ev, "running", to_state(c, S::Running));
    }
}

fn attach(d: &Daemon, card: u32) -> Console {
    let mut c = d
        .client()
        .attach_console(
            card,
            &AttachOptions::read_write()
                .replay(Replay::Bytes(0))
                .named("bench"),
        )
        .unwrap();
    c.output.set_timeout(Some(HANG)).unwrap();
    c
}

/// The MiB/s figure of a `blk bench`/`blk fill` answer.
fn mib_per_s(out: &str) -> f64 {
    let at = out
        .find(" MiB/s")
        .unwrap_or_else(|| panic!("no figure in {out:?}"));
    let start = out[..at].rfind(' ').unwrap() + 1;
    out[start..at].parse().unwrap()
}

/// memcpy of `total` bytes in 64 KiB chunks between two buffers larger
/// than any cache; MiB/s.
fn memcpy_mib_per_s(total: u64) -> f64 {
    let len = usize::try_from(total).unwrap();
    let src: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
    let mut dst = vec![0u8; len];
    let mut best = f64::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        for (d, s) in dst.chunks_mut(64 << 10).zip(src.chunks(64 << 10)) {
            d.copy_from_slice(s);
        }
        std::hint::black_box(&dst);
        best = best.min(t.elapsed().as_secs_f64());
    }
    total as f64 / MIB as f64 / best
}

/// A directory on tmpfs (the page cache) if the machine has one.
fn page_cache_dir() -> tempfile::TempDir {
    match tempfile::tempdir_in("/dev/shm") {
        Ok(d) => d,
        Err(_) => tempfile::tempdir().unwrap(),
    }
}

fn blk() {
    let fleet = Fleet::start(1);
    let dir = page_cache_dir();
    let img: PathBuf = dir.path().join("mic0.img");
    std::fs::write(&img, vec![0x5au8; usize::try_from(BLK_MIB * MIB).unwrap()]).unwrap();
    fleet.write_config(&format!(
        "[defaults]\nnet = false\n[cards.mic0.block]\nimage = \"{}\"\n",
        img.display()
    ));
    let d = Daemon::start(fleet.root(), &[]);
    boot_all(&fleet, &d, 1);
    let mut c = attach(&d, 0);
    let start = Instant::now();
    while shell(&mut c, "blk info").contains("no such disk") {
        assert!(start.elapsed() < HANG, "the card never saw its disk");
    }
    shell(&mut c, "blk bench 32");
    let pid = d.child.id();
    // In pass order (the first touches the image's pages: mpssd maps
    // them on first use).
    let mut measure = |cmd: &str| {
        let mut figures = Vec::with_capacity(BLK_PASSES);
        let (m0, e0) = (cpu(Some(pid)), cpu(None));
        for _ in 0..BLK_PASSES {
            figures.push(mib_per_s(&shell(&mut c, cmd)));
        }
        let (m, e) = (cpu(Some(pid)).saturating_sub(m0), cpu(None).saturating_sub(e0));
        let gb = (BLK_PASSES as u64 * BLK_MIB * MIB) as f64 / 1e9;
        (figures, m.as_secs_f64() / gb, e.as_secs_f64() / gb)
    };
    let read = measure(&format!("blk bench {BLK_MIB}"));
    let write = measure(&format!("blk fill 1 {}", BLK_MIB * MIB / 512));
    let memcpy = memcpy_mib_per_s(BLK_MIB * MIB);
    println!(
        "virtio-blk, 64 KiB sequential, {BLK_MIB} MiB a pass, {BLK_PASSES} passes each way (the median): card OS driver → rings → micemu → mpssd → image in the page cache"
    );
    println!("  memcpy, 64 KiB chunks out of cache    {memcpy:8.0} MiB/s   (baseline)");
    for (what, (figures, m, e)) in [
        ("read  (blk bench)", read),
        ("write (blk fill, then flush)", write),
    ] {
        let mut sorted = figures.clone();
        sorted.sort_by(f64::total_cmp);
        let mibs = sorted[sorted.len() / 2];
        let pct = 100.0 * mibs / memcpy;
        let passes: Vec<String> = figures
            .iter()
            .map(|f| format!("{:.0}", 100.0 * f / memcpy))
            .collect();
        println!(
            "  {what:<30} {mibs:8.0} MiB/s   {pct:5.1} % of memcpy (passes in order: {} %)   CPU {:.2} s/GB (mpssd {m:.2}, micemu {e:.2})   goal ≥ 50 %   {}",
            passes.join(", "),
            m + e,
            if pct >= 50.0 { "(met)" } else { "(NOT met)" }
        );
    }
    drop(c);
    d.stop();
}

/// Types `key` and waits for `echo` on the broker client.
fn broker_trip(c: &mut Console, key: u8, echo: &[u8]) -> Duration {
    let t = Instant::now();
    c.input.send(&[key]).unwrap();
    let mut got = Vec::new();
    while !got.ends_with(echo) {
        match c.output.next_item().unwrap() {
            ConsoleItem::Output { data, .. } => got.extend(data),
            ConsoleItem::Ended(e) => panic!("ended: {e}"),
            _ => {}
        }
    }
    t.elapsed()
}

fn pty_trip(pty: &mut File, key: u8, echo: &[u8]) -> Duration {
    let t = Instant::now();
    pty.write_all(&[key]).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    while !got.ends_with(echo) {
        let n = pty.read(&mut buf).unwrap();
        got.extend_from_slice(&buf[..n]);
    }
    t.elapsed()
}

fn quantiles(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let q = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e6;
    (q(0.5), q(0.99))
}

fn console() {
    let fleet = Fleet::start(1);
    fleet.write_config("[defaults]\nnet = false\n");
    let d = Daemon::start(fleet.root(), &[]);
    boot_all(&fleet, &d, 1);
    let mut c = attach(&d, 0);
    shell_ready(&mut c);
    // A keystroke and its erasure: the line stays empty, every byte echoes.
    let mut broker = Vec::with_capacity(2 * TRIPS);
    for i in 0..TRIPS + TRIPS / 10 {
        let x = broker_trip(&mut c, b'x', b"x");
        let del = broker_trip(&mut c, 0x7f, b"\x08 \x08");
        if i >= TRIPS / 10 {
            broker.extend([x, del]);
        }
    }
    c.input.detach().unwrap();
    drop(c);
    let mut pty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(nix::fcntl::OFlag::O_NOCTTY.bits())
        .open(d.root.join("run/mpssd/mic0/console"))
        .unwrap();
    // What the pty holds from before is read as the first trip's.
    let mut via_pty = Vec::with_capacity(2 * TRIPS);
    for i in 0..TRIPS + TRIPS / 10 {
        let x = pty_trip(&mut pty, b'x', b"x");
        let del = pty_trip(&mut pty, 0x7f, b"\x08 \x08");
        if i >= TRIPS / 10 {
            via_pty.extend([x, del]);
        }
    }
    let ping = unix_ping_pong(2 * TRIPS);
    let (b50, b99) = quantiles(broker);
    let (p50, p99) = quantiles(via_pty);
    let (u50, u99) = quantiles(ping);
    println!(
        "console keystroke round trip to the card's shell and back ({} keystrokes echoed):",
        2 * TRIPS
    );
    println!(
        "  Unix-socket ping-pong, two threads     p50 {u50:7.1} µs   p99 {u99:7.1} µs   (baseline: one hop)"
    );
    println!(
        "  through the pty (mpssd's data thread)  p50 {p50:7.1} µs   p99 {p99:7.1} µs   (plus the kernel's tty layer)"
    );
    println!(
        "  through the broker (control socket)    p50 {b50:7.1} µs   p99 {b99:7.1} µs   goal p99 < 1000 µs   {}",
        if b99 < 1000.0 { "(met)" } else { "(NOT met)" }
    );
    d.stop();
}

fn unix_ping_pong(n: usize) -> Vec<Duration> {
    let (mut a, mut b) = UnixStream::pair().unwrap();
    let echo = std::thread::spawn(move || {
        let mut x = [0u8; 1];
        while b.read_exact(&mut x).is_ok() {
            if b.write_all(&x).is_err() {
                break;
            }
        }
    });
    let mut v = Vec::with_capacity(n);
    let mut x = [0u8; 1];
    for _ in 0..n {
        let t = Instant::now();
        a.write_all(b"x").unwrap();
        a.read_exact(&mut x).unwrap();
        v.push(t.elapsed());
    }
    drop(a);
    echo.join().unwrap();
    v
}

fn idle() {
    const CARDS: u32 = 8;
    let fleet = Fleet::start(CARDS);
    let dir = fleet.root().join("var/lib/mpss");
    std::fs::create_dir_all(&dir).unwrap();
    for c in 0..CARDS {
        let f = File::create(dir.join(format!("mic{c}.img"))).unwrap();
        f.set_len(16 * MIB).unwrap();
    }
    fleet.write_config("[defaults.block]\nimage = \"var/lib/mpss/mic{card}.img\"\n");
    let d = Daemon::start(fleet.root(), &[]);
    boot_all(&fleet, &d, CARDS);
    // Every device of every card up.
    let start = Instant::now();
    loop {
        let st = d.client().status().unwrap();
        let up = st
            .cards
            .iter()
            .flat_map(|c| &c.devices)
            .filter(|x| x.state == "up")
            .count();
        if up == 3 * CARDS as usize {
            break;
        }
        assert!(start.elapsed() < HANG, "only {up} devices up: {st:#?}");
        std::thread::yield_now();
    }
    let pid = d.child.id();
    let (m0, e0, t0) = (cpu(Some(pid)), cpu(None), Instant::now());
    // The measurement window (nothing waits on it).
    std::thread::sleep(IDLE);
    let wall = t0.elapsed().as_secs_f64();
    let (m, e) = (cpu(Some(pid)).saturating_sub(m0), cpu(None).saturating_sub(e0));
    let pct = |d: Duration| d.as_secs_f64() / wall * 100.0;
    println!(
        "idle CPU with {CARDS} booted cards and their console, net and block devices up, over {wall:.0} s:"
    );
    println!(
        "  micemu (this process: the cards)   {:7.3} % of a core ({:6.1} ms)   (context)",
        pct(e),
        e.as_secs_f64() * 1e3
    );
    println!(
        "  mpssd                              {:7.3} % of a core ({:6.1} ms)   goal < 0.2 %   {}",
        pct(m),
        m.as_secs_f64() * 1e3,
        if pct(m) < 0.2 { "(met)" } else { "(NOT met)" }
    );
    d.stop();
}
