//! micctl figures against their baselines, from one run
//! (`cargo bench -p micctl [-- status|boot|console]`; needs /dev/fuse and
//! root, like the end-to-end tests). Prints figures and ratios; asserts
//! nothing about time.
//!
//! 1. `micctl status --json` over 64 and 256 emulated cards, against `cat`
//!    of the same sysfs and debugfs files (shell glob included), next to
//!    the floor: this process reading those files once each. Goals: at most 2× cat,
//!    under 50 ms at 256 cards.
//! 2. `micctl boot --wait` of 8 cards at once against one card alone.
//!    Goal: wall-time ratio ≤ 1.2.
//! 3. `micctl console`: keystroke-to-echo latency (see `console.rs`).
//!
//! `cargo bench -p micctl -- console` (or `status`, `boot`) runs one.
//!
//! The fleets run in this process (`micemu::Instance`); micctl runs as the
//! operator would run it, as a separate process. `cargo bench -p micctl`
//! builds the micctl binary next to this benchmark (target/<profile>/); if
//! it is missing anyway, it is built with `cargo build -p micctl --release`.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "micctl/console.rs"]
mod console;

/// The files `micctl status` reads for each card of an offline fleet (see
/// `micctl::cmd::status::Row::read`; an online card's log buffer is read
/// too, for the time in state). `*` is the card.
const STATUS_FILES: &[&str] = &[
    "sys/class/mic/mic*/state",
    "sys/class/mic/mic*/shutdown_status",
    "sys/class/mic/mic*/family",
    "sys/class/mic/mic*/stepping",
    "sys/class/mic/mic*/ipaddr",
    "sys/kernel/debug/mic_host/mic*/post_code",
];
const STATUS_RUNS: usize = 15;
const STATUS_GOAL_RATIO: f64 = 2.0;
const STATUS_GOAL_256: Duration = Duration::from_millis(50);

const BOOT_CARDS: u32 = 8;
const BOOT_RUNS: usize = 3;
const BOOT_GOAL_RATIO: f64 = 1.2;

fn main() -> Result<()> {
    // When the console benchmark runs this executable as its mpssd.
    common::mpssd::child_main();
    let only: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let run = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    let micctl = micctl_binary()?;
    println!("micctl benchmarks ({})\n", micctl.display());
    if run("status") {
        status(&micctl)?;
        println!();
    }
    if run("boot") {
        boot(&micctl)?;
        println!();
    }
    if run("console") {
        console::console()?;
    }
    Ok(())
}

/// target/<profile>/micctl, next to target/<profile>/deps/ where this
/// benchmark runs from; built if missing.
fn micctl_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("locating the target directory from the benchmark's path")?;
    let bin = profile_dir.join("micctl");
    if !bin.exists() {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        eprintln!("{} is missing: cargo build -p micctl --release", bin.display());
        let ok = Command::new(cargo)
            .args(["build", "-p", "micctl", "--release"])
            .status()?
            .success();
        if !ok || !bin.exists() {
            bail!("no micctl binary at {}", bin.display());
        }
    }
    Ok(bin)
}

fn fleet(dir: &Path, cards: u32) -> Result<micemu::Instance> {
    let config = micemu::Config {
        cards,
        timing: micemu::Timing::FAST,
        ..Default::default()
    };
    micemu::Instance::start(dir, config).context("starting micemu (needs /dev/fuse and root)")
}

/// Runs `cmd` to completion, failing on a non-zero exit; returns its wall time.
fn timed(cmd: &mut Command) -> Result<Duration> {
    let start = Instant::now();
    let out = cmd.stdin(Stdio::null()).output()?;
    let took = start.elapsed();
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(took)
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// The floor under any status tool: this process reading every file of
/// [`STATUS_FILES`] once (directory listing included) with one read each,
/// no process start, no parsing.
fn read_status_files(root: &Path) -> Result<Duration> {
    let mut buf = [0u8; 4096];
    let start = Instant::now();
    let class = root.join("sys/class/mic");
    for card in std::fs::read_dir(&class)? {
        let name = card?.file_name();
        for f in STATUS_FILES {
            let path = root.join(f.replace("mic*", &name.to_string_lossy()));
            // One open, one read, close: what a sysfs attribute needs
            // (fs::read would add a stat and a read to EOF).
            let n = std::fs::File::open(&path)
                .and_then(|mut file| file.read(&mut buf))
                .with_context(|| format!("reading {}", path.display()))?;
            if n == buf.len() {
                bail!("{} is larger than a sysfs attribute", path.display());
            }
        }
    }
    Ok(start.elapsed())
}

fn status(micctl: &Path) -> Result<()> {
    println!("`micctl status --json` vs `cat` of the same files, offline fleet, median of {STATUS_RUNS}:");
    for f in STATUS_FILES {
        println!("    {f}");
    }
    println!(
        "  {:<6} {:>11} {:>11} {:>7} {:>11}   goals: ≤ {STATUS_GOAL_RATIO}x cat, < {} at 256",
        "cards",
        "micctl",
        "cat",
        "ratio",
        "floor",
        ms(STATUS_GOAL_256)
    );
    for cards in [64, 256] {
        let dir = tempfile::tempdir()?;
        let instance = fleet(dir.path(), cards)?;
        let root = instance.root();
        let out = Command::new(micctl)
            .arg("--root")
            .arg(root)
            .args(["status", "--json"])
            .output()?;
        if !out.status.success() {
            bail!(
                "micctl status --json failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let json: serde_json::Value =
            serde_json::from_slice(&out.stdout).context("micctl status --json output")?;
        // One document: {"schema_version", "command", "cards": [...]}.
        let listed = json
            .get("cards")
            .and_then(serde_json::Value::as_array)
            .map_or(0, Vec::len);

        let files = STATUS_FILES
            .iter()
            .map(|f| format!("\"$R\"/{f}"))
            .collect::<Vec<_>>()
            .join(" ");
        let mut cat = Command::new("sh");
        cat.args(["-c", &format!("cat {files} >/dev/null")])
            .env("R", root);
        let mut status = Command::new(micctl);
        status
            .arg("--root")
            .arg(root)
            .args(["status", "--json"])
            .stdout(Stdio::null());

        let mut m = Vec::new();
        let mut c = Vec::new();
        let mut f = Vec::new();
        timed(&mut status)?; // warm the caches of all three
        timed(&mut cat)?;
        read_status_files(root)?;
        for _ in 0..STATUS_RUNS {
            m.push(timed(&mut status)?);
            c.push(timed(&mut cat)?);
            f.push(read_status_files(root)?);
        }
        let (m, c, f) = (median(m), median(c), median(f));
        let ratio = m.as_secs_f64() / c.as_secs_f64();
        let goal = ratio <= STATUS_GOAL_RATIO && (cards < 256 || m < STATUS_GOAL_256);
        println!(
            "  {cards:<6} {:>11} {:>11} {ratio:>6.2}x {:>11}   {}{}",
            ms(m),
            ms(c),
            ms(f),
            if goal { "meets goals" } else { "MISSES GOAL" },
            if listed == cards as usize {
                String::new()
            } else {
                format!(" (json listed {listed} cards)")
            }
        );
        instance.stop()?;
    }
    Ok(())
}

/// The micctl selection of cards mic0..mic(n-1).
fn selection(n: u32) -> String {
    if n == 1 {
        "mic0".to_owned()
    } else {
        format!("mic0-mic{}", n - 1)
    }
}

fn boot(micctl: &Path) -> Result<()> {
    println!(
        "`micctl boot {} --wait` vs `micctl boot mic0 --wait` (fast timing, fresh fleet each run, median of {BOOT_RUNS}):",
        selection(BOOT_CARDS)
    );
    let mut medians = Vec::new();
    for n in [1, BOOT_CARDS] {
        let mut runs = Vec::new();
        for _ in 0..BOOT_RUNS {
            let dir = tempfile::tempdir()?;
            let instance = fleet(dir.path(), BOOT_CARDS)?;
            let mut cmd = Command::new(micctl);
            cmd.arg("--root")
                .arg(instance.root())
                .args(["boot", &selection(n), "--wait"])
                .stdout(Stdio::null());
            runs.push(timed(&mut cmd)?);
            instance.stop()?;
        }
        let m = median(runs);
        println!(
            "  {:<24} {:>11}",
            format!("{n} card{}", if n == 1 { "" } else { "s" }),
            ms(m)
        );
        medians.push(m);
    }
    let ratio = medians[1].as_secs_f64() / medians[0].as_secs_f64();
    println!(
        "  {:<24} {ratio:>10.2}x   goal ≤ {BOOT_GOAL_RATIO}x   {}",
        "ratio",
        if ratio <= BOOT_GOAL_RATIO {
            "meets goal"
        } else {
            "MISSES GOAL"
        }
    );
    Ok(())
}
