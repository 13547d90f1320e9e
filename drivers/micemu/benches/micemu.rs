//! micemu figures against their goals and baselines, from one run
//! (`cargo bench -p micemu`; needs /dev/fuse and root, like the end-to-end
//! tests). Prints figures; asserts nothing about time.
//!
//! 1. Idle CPU: 8 cards booted and online through libmic, then this
//!    process's CPU time (every thread: event loop, FUSE workers, control
//!    socket) over a few seconds of nothing happening. Goal: ≤ 0.5 % of one
//!    core.
//! 2. sysfs read latency: open + read + close of `sys/class/mic/mic0/state`
//!    through FUSE, against the same on a tmpfs file of the same contents.

use std::fs;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

const CARDS: u32 = 8;
const IDLE: Duration = Duration::from_secs(3);
const IDLE_GOAL_PERCENT: f64 = 0.5;
const READS: usize = 20_000;
const WARMUP_READS: usize = 500;

fn main() -> Result<()> {
    // `cargo bench` passes --bench (and a filter if one was given); there is
    // one benchmark, so both are ignored.
    let dir = tempfile::tempdir()?;
    let instance = micemu::Instance::start(
        dir.path(),
        micemu::Config {
            cards: CARDS,
            timing: micemu::Timing::FAST,
            ..Default::default()
        },
    )
    .context("starting micemu (needs /dev/fuse and root)")?;
    let root = libmic::MicRoot::new(instance.root());

    println!("micemu benchmarks ({CARDS} emulated cards, fast timing)\n");
    idle_cpu(&root)?;
    println!();
    read_latency(&root)?;
    instance.stop()
}

fn idle_cpu(root: &libmic::MicRoot) -> Result<()> {
    let cards = root.cards()?;
    let (boot_cpu0, booting) = (process_cpu()?, Instant::now());
    for card in &cards {
        card.boot_with(&libmic::BootRequest::defaults_for(card), Some(&root.system_map()))
            .with_context(|| format!("booting {}", card.name()))?;
    }
    for card in &cards {
        card.wait_os_up(Some(Duration::from_secs(10)))
            .with_context(|| format!("waiting for {}", card.name()))?;
    }
    let boot = booting.elapsed();
    let boot_cpu = process_cpu()?.saturating_sub(boot_cpu0);
    // Let anything the boots left behind (timers, log flushes) settle.
    std::thread::sleep(Duration::from_millis(200));

    let (cpu0, wall0) = (process_cpu()?, Instant::now());
    std::thread::sleep(IDLE);
    let (cpu1, wall) = (process_cpu()?, wall0.elapsed());
    let cpu = cpu1.saturating_sub(cpu0);
    let percent = 100.0 * cpu.as_secs_f64() / wall.as_secs_f64();
    let online = cards
        .iter()
        .filter(|c| c.state().is_ok_and(|s| s == libmic::MicState::Online))
        .count();

    println!(
        "idle CPU, {online} of {CARDS} cards online (booted in {boot:.2?} using {} CPU):",
        fmt_dur(boot_cpu)
    );
    println!(
        "  {:<34} {:>9}   goal ≤ {IDLE_GOAL_PERCENT} %   ({} CPU in {:.2?} wall, {})",
        "% of one core",
        format!("{percent:.3} %"),
        fmt_dur(cpu),
        wall,
        if percent <= IDLE_GOAL_PERCENT {
            "meets goal"
        } else {
            "OVER GOAL"
        }
    );
    Ok(())
}

/// CPU time of every thread of this process. Sums the kernel's per-thread
/// run time in ns from `/proc/self/task/*/schedstat` (getrusage would need
/// `unsafe`, which micemu does without); threads that exit between two
/// samples would be lost, and an idle fleet starts and ends none.
fn process_cpu() -> Result<Duration> {
    let mut ns: u64 = 0;
    for task in fs::read_dir("/proc/self/task")? {
        let path = task?.path().join("schedstat");
        let Ok(text) = fs::read_to_string(&path) else {
            continue;
        }; // thread just exited
        let run = text.split_whitespace().next().unwrap_or_default();
        ns += run
            .parse::<u64>()
            .with_context(|| format!("parsing {}: {text:?}", path.display()))?;
    }
    Ok(Duration::from_nanos(ns))
}

struct Stats {
    mean: Duration,
    median: Duration,
    p99: Duration,
}

fn read_many(path: &Path) -> Result<Stats> {
    let mut buf = [0u8; 4096];
    let mut once = || -> Result<Duration> {
        let t = Instant::now();
        let mut f = fs::File::open(path)?;
        let n = f.read(&mut buf)?;
        drop(f);
        let d = t.elapsed();
        if n == 0 {
            bail!("{} read empty", path.display());
        }
        Ok(d)
    };
    for _ in 0..WARMUP_READS {
        once()?;
    }
    let mut samples = (0..READS).map(|_| once()).collect::<Result<Vec<_>>>()?;
    samples.sort_unstable();
    let total: Duration = samples.iter().sum();
    Ok(Stats {
        mean: total / READS as u32,
        median: samples[READS / 2],
        p99: samples[READS * 99 / 100],
    })
}

/// A directory on tmpfs for the baseline file: /dev/shm if it is one.
fn tmpfs_dir() -> Result<(tempfile::TempDir, bool)> {
    let mounts = fs::read_to_string("/proc/mounts").unwrap_or_default();
    let shm_is_tmpfs = mounts.lines().any(|l| {
        l.split_whitespace().nth(1) == Some("/dev/shm") && l.split_whitespace().nth(2) == Some("tmpfs")
    });
    if shm_is_tmpfs {
        return Ok((tempfile::tempdir_in("/dev/shm")?, true));
    }
    Ok((tempfile::tempdir()?, false))
}

fn read_latency(root: &libmic::MicRoot) -> Result<()> {
    let card = root.card("mic0")?;
    let fuse: PathBuf = card.attr_path(libmic::Attr::State);
    let contents = fs::read(&fuse)?;
    let (dir, on_tmpfs) = tmpfs_dir()?;
    let plain = dir.path().join("state");
    fs::write(&plain, &contents)?;

    let f = read_many(&fuse)?;
    let t = read_many(&plain)?;
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    println!(
        "sysfs read latency, open+read+close of {:?} ({} bytes), {READS} reads:",
        "sys/class/mic/mic0/state",
        contents.len()
    );
    let baseline = if on_tmpfs {
        "tmpfs (/dev/shm)"
    } else {
        "temp dir (NOT tmpfs)"
    };
    println!(
        "  {:<10} {:>12} {:>12} {:>12}",
        "", "micemu FUSE", baseline, "ratio"
    );
    for (what, a, b) in [
        ("mean", f.mean, t.mean),
        ("median", f.median, t.median),
        ("p99", f.p99, t.p99),
    ] {
        println!(
            "  {what:<10} {:>12} {:>12} {:>11.1}x",
            fmt_dur(a),
            fmt_dur(b),
            ratio(a, b)
        );
    }
    Ok(())
}

fn fmt_dur(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1000.0 {
        format!("{us:.1} µs")
    } else {
        format!("{:.2} ms", us / 1000.0)
    }
}
