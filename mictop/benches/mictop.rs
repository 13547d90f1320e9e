//! mictop benchmarks: figures next to their goals and baselines, from one
//! run. Nothing here asserts on time.
//!
//! * idle CPU of the real event loop (headless: a `TestBackend` instead of a
//!   terminal) watching 8 and 256 online emulated cards at the default
//!   intervals, and 8 with mpssd running (its status asked every second,
//!   its events followed); the emulator and mpssd run in child processes
//!   (this executable re-run), so the process CPU time measured is
//!   mictop's alone;
//! * time to the first frame (enumerate, open every `state` for polling,
//!   draw);
//! * resident memory with 256 cards;
//! * card log decode + follow + render throughput without loss;
//! * the console pane alone: 10 MB of output through vt100 and drawn,
//!   without loss (the whole path, card to pane: `benches/console.rs`).
//!
//! `cargo bench -p mictop --bench mictop` (about 20 s; `cargo bench -p
//! mictop` runs `benches/console.rs` too).

#![allow(clippy::cast_precision_loss, reason = "figures for display")]

use std::io::{BufRead as _, BufReader, Read as _};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use libmic::klog::LogFollower;
use libmic::{BootRequest, MicRoot};
use mic_core::printk::LogRing;
use mictop::app::{Action, App, Focus};
use mictop::components::dialogs::Overlay;
use mictop::config::{Config, ThemeName};
use mictop::model::CardView;
use mictop::theme::Theme;
use mictop::ui;
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

const EMU_ENV: &str = "MICTOP_BENCH_EMULATOR";
const IDLE_SECS: u64 = 4;

fn main() {
    // mpssd for the idle run beside it: this executable again.
    if let Some(code) = mictop::demo::mpssd::child_main() {
        std::process::exit(i32::from(code));
    }
    if let Some(root) = std::env::var_os(EMU_ENV) {
        let cards = std::env::var("MICTOP_BENCH_CARDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(8);
        emulator_child(Path::new(&root), cards);
        return;
    }
    println!("mictop benchmarks (one run; figure, goal, and figure/goal)");
    println!();
    for (cards, mpssd) in [(8, false), (8, true), (256, false)] {
        match idle(cards, mpssd) {
            Ok(r) if mpssd => {
                // mictop asks mpssd's status every second and follows its
                // events: still idle.
                row(
                    &format!("idle CPU, {cards} online cards and mpssd"),
                    &format!("{:.2}% of a core", r.cpu_percent),
                    "< 1.0%",
                    r.cpu_percent,
                );
            }
            Ok(r) => {
                let goal = if cards == 8 { 1.0 } else { 3.0 };
                row(
                    &format!("idle CPU, {cards} online cards, default intervals"),
                    &format!("{:.2}% of a core", r.cpu_percent),
                    &format!("< {goal}%"),
                    r.cpu_percent / goal,
                );
                println!("{:50} {} frames drawn in the {IDLE_SECS} s", "", r.frames);
                row(
                    &format!("time to first frame, {cards} cards"),
                    &format!("{:.1} ms", r.first_frame.as_secs_f64() * 1e3),
                    "< 100 ms",
                    r.first_frame.as_secs_f64() * 1e3 / 100.0,
                );
                if cards == 256 {
                    let mib = r.rss_kib as f64 / 1024.0;
                    row(
                        "resident memory, 256 cards",
                        &format!("{mib:.1} MiB"),
                        "< 30 MiB",
                        mib / 30.0,
                    );
                }
            }
            Err(e) => println!("idle CPU, {cards} cards (mpssd: {mpssd}): skipped: {e:#}"),
        }
    }
    let (rate, follow_rate, lost) = log_rate();
    row(
        "log decode + follow + render",
        &format!("{:.0}k records/s", rate / 1e3),
        ">= 100k/s",
        rate / 100e3,
    );
    println!("{:50} lost {lost} records", "");
    row(
        "log decode + follow only",
        &format!("{:.0}k records/s", follow_rate / 1e3),
        "-",
        f64::NAN,
    );
    let (mbps, lost, kept) = console_rate();
    row(
        "console pane: 10 MB through vt100 + 60 fps render",
        &format!("{mbps:.1} MB/s"),
        "-",
        f64::NAN,
    );
    println!(
        "{:50} {:.0} ms of one core per MB: under 50% of a core while the card prints under {:.1} MB/s",
        "",
        1e3 / mbps,
        mbps / 2.0
    );
    println!(
        "{:50} lost {lost} bytes; scrollback holds the last {kept} lines",
        ""
    );
    println!();
    println!("baselines (anchors-tools.md): bpytop 8.9% of a core at default settings (bpytop #286);");
    println!("ytop ~1% after its CPU fix (ytop #18); nvtop 100% of a core with 8 GPUs (nvtop #189).");
}

fn row(what: &str, figure: &str, goal: &str, ratio: f64) {
    let ratio = if ratio.is_nan() {
        String::new()
    } else {
        format!("{ratio:.2}× goal")
    };
    println!("{what:50} {figure:>18}   goal {goal:10} {ratio}");
}

struct Idle {
    cpu_percent: f64,
    frames: u64,
    first_frame: Duration,
    rss_kib: u64,
}

/// The emulator, in a child process: boot every card, say "ready", serve
/// until stdin closes.
fn emulator_child(root: &Path, cards: u32) {
    let config = micemu::Config {
        cards,
        timing: micemu::Timing::FAST,
        ..Default::default()
    };
    let fleet = match micemu::Instance::start(root, config) {
        Ok(f) => f,
        Err(e) => {
            println!("error {e:#}");
            return;
        }
    };
    let mic = MicRoot::new(fleet.root());
    let all = mic.cards().expect("cards");
    let map = mic.system_map();
    std::thread::scope(|s| {
        for chunk in all.chunks(all.len().div_ceil(16)) {
            let map = &map;
            s.spawn(move || {
                for c in chunk {
                    c.boot_with(&BootRequest::defaults_for(c), Some(map))
                        .expect("boot");
                }
                for c in chunk {
                    c.wait_os_up(Some(Duration::from_secs(60))).expect("card OS up");
                }
            });
        }
    });
    println!("ready");
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    drop(fleet);
}

struct Emulator(Child);

impl Drop for Emulator {
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        let _ = self.0.wait();
    }
}

fn start_emulator(root: &Path, cards: u32) -> anyhow::Result<Emulator> {
    let mut child = Command::new(std::env::current_exe()?)
        .env(EMU_ENV, root)
        .env("MICTOP_BENCH_CARDS", cards.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line)?;
    let emu = Emulator(child);
    anyhow::ensure!(
        line.trim() == "ready",
        "the emulator did not come up: {}",
        line.trim()
    );
    Ok(emu)
}

fn cpu_time() -> Duration {
    // SAFETY: an all-zero rusage is a valid value of the plain C struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage for the call.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &raw mut ru) };
    assert_eq!(rc, 0);
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Runs the real loop headless against `cards` online cards.
fn idle(cards: u32, mpssd: bool) -> anyhow::Result<Idle> {
    let dir = tempfile::tempdir()?;
    let root = dir.path().join("root");
    let _emu = start_emulator(&root, cards)?;
    // mpssd in a process of its own (no network devices: no namespace).
    let _daemon = if mpssd {
        mictop::demo::mpssd::prepare(&root, cards, false)?;
        let exe = std::env::current_exe()?;
        Some(mictop::demo::mpssd::Mpssd::start(
            &exe,
            &root,
            &dir.path().join("mpssd.log"),
            false,
        )?)
    } else {
        None
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let t0 = Instant::now();
        let mictop::event::Session {
            mut app,
            mut runtime,
            mut rx,
        } = mictop::event::session(
            &MicRoot::new(&root),
            Config::default(),
            Theme::new(ThemeName::Dark),
        )?;
        let mut terminal = Terminal::new(TestBackend::new(200, 50))?;
        let tx = runtime.sender();
        let frames = runtime.frame_counter();
        let loop_task = async {
            runtime.run(&mut terminal, &mut app, &mut rx, Vec::new()).await?;
            anyhow::Ok(runtime)
        };
        let measure = async {
            // Let the start-up reads settle, then measure a quiet period.
            tokio::time::sleep(Duration::from_secs(1)).await;
            let frames0 = frames.load(std::sync::atomic::Ordering::Relaxed);
            let cpu0 = cpu_time();
            let wall0 = Instant::now();
            tokio::time::sleep(Duration::from_secs(IDLE_SECS)).await;
            let cpu = cpu_time().saturating_sub(cpu0);
            let wall = wall0.elapsed();
            let rss = rss_kib();
            let _ = tx.send(Action::Quit);
            let drawn = frames.load(std::sync::atomic::Ordering::Relaxed) - frames0;
            (cpu.as_secs_f64() / wall.as_secs_f64() * 100.0, rss, drawn)
        };
        let (runtime, (cpu_percent, rss, drawn)) =
            tokio::try_join!(loop_task, async { anyhow::Ok(measure.await) })?;
        Ok(Idle {
            cpu_percent,
            frames: drawn,
            first_frame: runtime.first_frame.map_or(Duration::ZERO, |f| f - t0),
            rss_kib: rss,
        })
    })
}

type VecMem = mic_core::fake::FakeMem;

/// The card writes 1000 records between two reads of its 128 KiB ring (the
/// default `log_buf_len`); each read is decoded and followed, the new
/// The app over one online card on a 200×50 screen.
fn one_card_app() -> App {
    let root = MicRoot::new("/nonexistent");
    let mut app = App::new(
        Config::default(),
        Theme::new(ThemeName::Dark),
        "/bench".into(),
        vec![CardView::new(root.card_by_id(0), Ok(libmic::MicState::Online))],
        Instant::now(),
    );
    app.update(Action::Resize(200, 50));
    app
}

/// 10 MB of console output (coloured 75-byte lines, 4 KiB at a time) into
/// an attached console pane in-process (no card, no broker: the pane's own
/// cost; `--bench console` has the whole path), a frame drawn per 64 KiB (60 frames a second at 3.8 MB/s). Returns MB per second, the
/// bytes the console did not count, and the lines its scrollback holds.
fn console_rate() -> (f64, u64, usize) {
    const TOTAL: usize = 10 << 20;
    const CHUNK: usize = 4096;
    let mut app = one_card_app();
    app.update(Action::Key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::NONE)));
    let mut text = Vec::with_capacity(TOTAL + 128);
    let mut n = 0u64;
    while text.len() < TOTAL {
        text.extend_from_slice(
            format!(
                "[{:>6}.{:06}] \x1b[32mworker\x1b[0m {n}: processed batch of 4096 items in 1.7 ms\r\n",
                n / 1000,
                n % 1000
            )
            .as_bytes(),
        );
        n += 1;
    }
    let mut terminal = Terminal::new(TestBackend::new(200, 50)).expect("terminal");
    let start = Instant::now();
    for (i, chunk) in text.chunks(CHUNK).enumerate() {
        app.update(Action::Console {
            card: 0,
            event: mictop::console::ConsoleEvent::Output(chunk.to_vec()),
        });
        if i % 16 == 15 {
            terminal.draw(|f| ui::draw(f, &app)).expect("draw");
        }
    }
    terminal.draw(|f| ui::draw(f, &app)).expect("draw");
    let secs = start.elapsed().as_secs_f64();
    let view = app.consoles().shown().expect("the console");
    let lost = text.len() as u64 - view.received;
    let kept = view.term().scrollback_len();
    (text.len() as f64 / secs / 1e6, lost, kept)
}

/// records go into the app and the log pane is drawn. Returns records per
/// second with rendering, without, and the records lost.
fn log_rate() -> (f64, f64, u64) {
    const RING: usize = 128 << 10;
    const PER_READ: u64 = 1000;
    const READS: u64 = 200;
    let texts = [
        "smpboot: Booting Node 0, Processors #1 #2 #3 #4 #5 OK",
        "mic_card: doorbell 3 allocated",
        "virtio_net virtio0: link up, 172.31.0.1/24",
        "EXT4-fs (vda): mounted filesystem with ordered data mode",
    ];
    let run = |render: bool| {
        let mem = VecMem::new(RING);
        let mut ring = LogRing::new(0, RING as u32);
        let mut follower = LogFollower::new();
        let mut app = one_card_app();
        app.update(Action::Key(KeyEvent::new(KeyCode::Tab, KeyModifiers::NONE)));
        assert_eq!(app.focus(), Focus::Log);
        assert_eq!(*app.overlay(), Overlay::None);
        let mut terminal = Terminal::new(TestBackend::new(200, 50)).expect("terminal");
        let (mut got, mut lost, mut seq) = (0u64, 0u64, 0u64);
        let start = Instant::now();
        for _ in 0..READS {
            for _ in 0..PER_READ {
                let text = texts[(seq % 4) as usize];
                ring.store(&mem, seq * 1000, 0, (seq % 8) as u8, text.as_bytes())
                    .expect("store");
                seq += 1;
            }
            let snapshot = mem.data.borrow().clone();
            let entries = follower.update(&snapshot);
            got += libmic::klog::records(&entries).count() as u64;
            lost += entries
                .iter()
                .filter(|e| matches!(e, libmic::klog::LogEntry::Lost(_)))
                .count() as u64;
            if render {
                app.update(Action::Log { id: 0, entries });
                terminal.draw(|f| ui::draw(f, &app)).expect("draw");
            }
        }
        let secs = start.elapsed().as_secs_f64();
        lost += seq - got;
        (got as f64 / secs, lost)
    };
    let (with_render, lost) = run(true);
    let (follow_only, _) = run(false);
    (with_render, follow_only, lost)
}
