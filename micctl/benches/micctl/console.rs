//! 3. `console`: keystroke-to-echo latency through `micctl console` on a
//!    pty (its controlling terminal, raw mode), the way an operator types:
//!    a key written to the pty's master until the card's echo comes back
//!    on it. Beside it, from the same run, the same round trip through
//!    libmic's broker client directly (what micctl stands on: the control
//!    socket, mpssd, the card's shell) and through mpssd's own pty
//!    (`DIR/run/mpssd/micN/console`). p50 and p99; goal: p99 under 2 ms
//!    through micctl.
//!
//! A keystroke and its erasure make one pair (`x`, then DEL echoed as
//! `\b \b`): the shell's line stays empty, every byte echoes.

use std::fs::File;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use libmic::mpssd::{AttachOptions, Console, ConsoleItem, Replay};

use crate::common::console::{self as harness, marker, read_until_contains, read_until_suffix};

/// Keystrokes timed on each path (pairs × 2), after a tenth as warm-up.
const PAIRS: usize = 1000;
const GOAL_P99: Duration = Duration::from_millis(2);

/// mpssd for the benchmark: no network backend (no TAP to make).
const CONFIG: &str = "[defaults]\nnet = false\n";

pub(crate) fn console() -> Result<()> {
    // This executable again, its main calling common::mpssd::child_main.
    let (fleet, d) = harness::booted(CONFIG);
    let root = fleet.root().to_owned();

    let mut c = d
        .client()
        .attach_console(0, &AttachOptions::read_write().replay(Replay::Bytes(0)))
        .context("attaching the broker client")?;
    shell_ready(&mut c)?;
    let broker = pairs(|key, echo| broker_trip(&mut c, key, echo))?;
    c.input.detach()?;
    drop(c);

    let mut pty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(nix::fcntl::OFlag::O_NOCTTY.bits())
        .open(root.join("run/mpssd/mic0/console"))
        .context("opening mpssd's pty")?;
    // What the pty holds from before is read as part of the first trip.
    let via_pty = pairs(|key, echo| Ok(file_trip(&mut pty, key, echo)))?;
    drop(pty);

    let (mut child, mut master, _slave) = harness::spawn_on_pty(&root, &[]);
    read_until_contains(&mut master, b"ctrl-] detaches\r\n");
    let (line, answer) = marker();
    master.write_all(line.as_bytes())?;
    read_until_contains(&mut master, answer.as_bytes());
    let micctl = pairs(|key, echo| Ok(file_trip(&mut master, key, echo)))?;
    master.write_all(b"\x1d")?;
    read_until_contains(&mut master, b"detached from mic0's console");
    let status = child.wait()?;
    if !status.success() {
        bail!("micctl console ended {status}");
    }

    let (b50, b99) = quantiles(broker);
    let (p50, p99) = quantiles(via_pty);
    let (m50, m99) = quantiles(micctl);
    println!(
        "console keystroke to echo ({} keystrokes on each path, a card shell's echo):",
        2 * PAIRS
    );
    println!(
        "  mpssd's pty (its data thread)           p50 {p50:7.1} µs   p99 {p99:7.1} µs   (baseline: no control socket)"
    );
    println!(
        "  libmic's broker client directly         p50 {b50:7.1} µs   p99 {b99:7.1} µs   (baseline: what micctl stands on)"
    );
    println!(
        "  micctl console on a pty (raw mode)      p50 {m50:7.1} µs   p99 {m99:7.1} µs   goal p99 < {} µs   {}",
        GOAL_P99.as_micros(),
        if m99 < GOAL_P99.as_secs_f64() * 1e6 {
            "(met)"
        } else {
            "(NOT met)"
        }
    );
    println!(
        "  micctl's own share (p50 over the broker client): {:.1} µs",
        m50 - b50
    );
    Ok(())
}

/// `PAIRS` keystroke pairs (after a tenth more as warm-up): their round
/// trips.
fn pairs(mut trip: impl FnMut(u8, &[u8]) -> Result<Duration>) -> Result<Vec<Duration>> {
    let mut v = Vec::with_capacity(2 * PAIRS);
    for i in 0..PAIRS + PAIRS / 10 {
        let x = trip(b'x', b"x")?;
        let del = trip(0x7f, b"\x08 \x08")?;
        if i >= PAIRS / 10 {
            v.extend([x, del]);
        }
    }
    Ok(v)
}

fn file_trip(f: &mut File, key: u8, echo: &[u8]) -> Duration {
    let t = Instant::now();
    f.write_all(&[key]).unwrap();
    read_until_suffix(f, echo);
    t.elapsed()
}

fn broker_trip(c: &mut Console, key: u8, echo: &[u8]) -> Result<Duration> {
    let t = Instant::now();
    c.input.send(&[key])?;
    let mut got = Vec::new();
    while !got.ends_with(echo) {
        match c.output.next_item()? {
            ConsoleItem::Output { data, .. } => got.extend_from_slice(&data),
            ConsoleItem::Ended(e) => bail!("the console ended: {e}"),
            _ => {}
        }
    }
    Ok(t.elapsed())
}

/// Waits until the shell has answered everything typed so far.
fn shell_ready(c: &mut Console) -> Result<()> {
    let (line, answer) = marker();
    c.input.send(line.as_bytes())?;
    let mut got = Vec::new();
    while !String::from_utf8_lossy(&got).contains(&answer) {
        match c.output.next_item()? {
            ConsoleItem::Output { data, .. } => got.extend_from_slice(&data),
            ConsoleItem::Ended(e) => bail!("the console ended: {e}"),
            _ => {}
        }
    }
    Ok(())
}

/// p50 and p99, µs.
#[allow(clippy::cast_precision_loss, reason = "figures for display")]
fn quantiles(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let q = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e6;
    (q(0.5), q(0.99))
}
