//! mictop's console pane against a live card through mpssd's broker:
//! figures beside their baselines from one run; nothing here asserts on
//! time. `cargo bench -p mictop --bench console` (root, /dev/fuse; about
//! 30 s).
//!
//! The card is micemu's (a child process: this executable run again),
//! mpssd is mictop's demo mpssd (this executable again, `--demo`'s way;
//! no network devices, so no namespace is needed), and mictop is the real
//! event loop on a headless terminal whose every flushed frame a probe
//! reads: what the measurements see is what a terminal would show.
//!
//! 1. Keystroke to echo: a key into the loop (`Action::Key`, what the
//!    terminal reader sends) until the frame showing the card's echo is
//!    flushed, `x` and its erasure in turn, beside the broker client's
//!    own round trip (libmic, attached read-write, the key sent until its
//!    echo is read) on the same card: p50 and p99 (goal: p99 under 2 ms).
//!    Keys are paced a little over a frame interval apart (a very fast
//!    typist): faster than that, frames are capped at 60 a second.
//! 2. Render cost: the card prints 10 MB as fast as it can (`seq 1
//!    1250000`, refilled as the console drains) into the attached pane,
//!    drawn at up to 60 frames a second; mictop's CPU (its threads: the
//!    loop and the console's) per second of it (goal: under 50 % of a
//!    core), the rate, mpssd's and the emulator's CPU beside it, and the
//!    bytes the pane received counted against the bytes the card printed
//!    (goal: nothing lost).

#![allow(clippy::cast_precision_loss, reason = "figures for display")]

use std::io::{BufRead as _, BufReader, Read as _};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use libmic::mpssd::{AttachOptions, Client, ConsoleItem, Replay};
use libmic::{BootRequest, MicRoot};
use mictop::app::Action;
use mictop::config::{Config, ThemeName};
use mictop::console::broker::BrokerConsoles;
use mictop::console::{Access, Console, ConsoleError, ConsoleEvent, ConsoleSource, Sink, TermSize};
use mictop::theme::Theme;
use ratatui::Terminal;
use ratatui::backend::{Backend, ClearType, TestBackend, WindowSize};
use ratatui::buffer::{Buffer, Cell};
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::layout::{Position, Size};

const EMU_ENV: &str = "MICTOP_BENCH_CONSOLE_EMULATOR";
/// Keystrokes of each kind (`x`, its erasure) per path.
const PAIRS: usize = 250;
/// A little over mictop's frame interval (16 ms).
const PACE: Duration = Duration::from_millis(20);
/// `seq 1 LAST` prints 10 MB.
const LAST: u64 = 1_250_000;
const WAIT: Duration = Duration::from_secs(60);
const PROMPT: &str = "root@mic0:~# ";

fn main() {
    if let Some(code) = mictop::demo::mpssd::child_main() {
        std::process::exit(i32::from(code));
    }
    if let Some(root) = std::env::var_os(EMU_ENV) {
        emulator_child(Path::new(&root));
        return;
    }
    if let Err(e) = run() {
        println!("console benchmarks: skipped: {e:#}");
    }
}

/// The emulator, in a child process: one card at fast timing, "ready",
/// served until stdin closes.
fn emulator_child(root: &Path) {
    let config = micemu::Config {
        cards: 1,
        timing: micemu::Timing::FAST,
        ..Default::default()
    };
    match micemu::Instance::start(root, config) {
        Ok(fleet) => {
            println!("ready");
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
            drop(fleet);
        }
        Err(e) => println!("error {e:#}"),
    }
}

struct Emulator(Child);

impl Drop for Emulator {
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        let _ = self.0.wait();
    }
}

fn start_emulator(root: &Path) -> anyhow::Result<Emulator> {
    let mut child = Command::new(std::env::current_exe()?)
        .env(EMU_ENV, root)
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

/// CPU time of process `pid` (`None`: this one), summed over its threads
/// except those named in `skip` (`schedstat`, ns).
fn cpu(pid: Option<u32>, skip: &[&str]) -> Duration {
    let dir = pid.map_or_else(|| "/proc/self/task".to_owned(), |p| format!("/proc/{p}/task"));
    let mut ns = 0u64;
    for t in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if skip.contains(&comm.trim()) {
            continue;
        }
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

/// This process's CPU time per thread name (`schedstat`, ns).
fn cpu_by_thread() -> std::collections::BTreeMap<String, Duration> {
    let mut m = std::collections::BTreeMap::new();
    for t in std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        let ns: u64 = std::fs::read_to_string(t.path().join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next().and_then(|x| x.parse().ok()))
            .unwrap_or(0);
        *m.entry(comm.trim().to_owned()).or_insert(Duration::ZERO) += Duration::from_nanos(ns);
    }
    m
}

/// The bench's own threads, not mictop's.
const BENCH_THREADS: &[&str] = &["bench-driver"];

fn quantiles(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let q = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e6;
    (q(0.5), q(0.99))
}

/// Whether `lines` are consecutive numbers: which, or what is not.
fn numbers(lines: &[String]) -> String {
    let n: Vec<Option<u64>> = lines.iter().map(|l| l.parse().ok()).collect();
    match (n.first().copied().flatten(), n.last().copied().flatten()) {
        (Some(a), Some(b)) if n.iter().zip(a..).all(|(x, i)| *x == Some(i)) => format!("{a}..={b}"),
        _ => format!(
            "NOT consecutive numbers (first {:?}, last {:?})",
            lines.first(),
            lines.last()
        ),
    }
}

/// Bytes `seq 1 last` prints (`\r\n` after each number).
fn seq_bytes(last: u64) -> u64 {
    (1..=last).map(|n| n.to_string().len() as u64 + 2).sum()
}

fn run() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let root_path = dir.path().join("root");
    let emu = start_emulator(&root_path)?;
    mictop::demo::mpssd::prepare(&root_path, 1, false)?;
    let exe = std::env::current_exe()?;
    let daemon = mictop::demo::mpssd::Mpssd::start(&exe, &root_path, &dir.path().join("mpssd.log"), false)?;
    let root = MicRoot::new(&root_path);
    let card = root.card_by_id(0);
    card.boot_with(&BootRequest::defaults_for(&card), Some(&root.system_map()))?;
    card.wait_os_up(Some(WAIT))?;

    println!("mictop console benchmarks (one run; figures beside their baselines)");
    println!();
    let direct = direct_trips(&root)?;
    let pane = pane(&root, emu.0.id(), daemon.pid().unwrap_or(0))?;
    let (d50, d99) = quantiles(direct);
    let (p50, p99) = quantiles(pane.trips);
    println!(
        "console keystroke → echo ({} keystrokes each, {} ms apart):",
        2 * PAIRS,
        PACE.as_millis()
    );
    println!("  broker client, direct (libmic)         p50 {d50:7.1} µs   p99 {d99:7.1} µs   (baseline)");
    println!(
        "  through mictop's pane (key → frame)    p50 {p50:7.1} µs   p99 {p99:7.1} µs   goal p99 < 2000 µs   {}",
        if p99 < 2000.0 { "(met)" } else { "(NOT met)" }
    );
    println!(
        "  mictop's own share                     p50 {:7.1} µs",
        p50 - d50
    );
    println!();
    let f = pane.flood;
    let secs = f.wall.as_secs_f64();
    let mib = f.expected as f64 / 1e6;
    let share = f.mictop.as_secs_f64() / secs * 100.0;
    println!("console pane, the card printing {mib:.1} MB as fast as it can (seq 1 {LAST}):");
    println!(
        "  card → mpssd → pane, drawn              {:7.1} MB/s over {secs:.2} s, {} frames",
        mib / secs,
        f.frames
    );
    println!(
        "  mictop's CPU (loop + console threads)  {share:7.1} % of a core   goal < 50 %   {}",
        if share < 50.0 { "(met)" } else { "(NOT met)" }
    );
    println!(
        "  of which the console's threads (mpssd's frames decoded, the write side) {:.1} %; \
         {:.1} ms of mictop's CPU per MB",
        f.console_threads.as_secs_f64() / secs * 100.0,
        f.mictop.as_secs_f64() * 1e3 / mib
    );
    println!(
        "  (output waits for the next frame and goes through the pane's terminal once a frame; plain \
         lines the screen would scroll past unseen are counted, not drawn, and kept as output for the \
         scrollback; what is left per MB is reading and decoding mpssd's frames and finding those \
         lines, and per frame drawing the pane; seq's {:.0}-byte lines)",
        f.expected as f64 / LAST as f64
    );
    println!(
        "  beside it: mpssd {:.1} %, the emulator (card and driver) {:.1} %",
        f.mpssd.as_secs_f64() / secs * 100.0,
        f.emulator.as_secs_f64() / secs * 100.0
    );
    println!(
        "  the scrollback replayed: {} lines, {} in order, in {:.1} ms",
        f.scrollback,
        f.kept,
        f.replay.as_secs_f64() * 1e3
    );
    let lost = f.expected.saturating_sub(f.received);
    println!(
        "  received by the pane {} of {} bytes: {} lost{}; notices meanwhile: {}; the pane's scrollback keeps the last {} lines",
        f.received,
        f.expected,
        lost,
        if f.received > f.expected {
            " (and more than printed!)"
        } else {
            ""
        },
        f.notices,
        f.scrollback
    );
    daemon.stop()?;
    drop(emu);
    Ok(())
}

/// The broker client's own round trips: a key, until its echo is read.
fn direct_trips(root: &MicRoot) -> anyhow::Result<Vec<Duration>> {
    let console = Client::connect(root)?.attach_console(
        0,
        &AttachOptions::read_write()
            .force()
            .replay(Replay::Bytes(0))
            .named("bench"),
    )?;
    let (_, mut out, mut input) = console.split();
    out.set_timeout(Some(WAIT))?;
    let mut trip = |key: &[u8], echo: &[u8]| -> anyhow::Result<Duration> {
        std::thread::sleep(PACE);
        let t = Instant::now();
        input.send(key)?;
        let mut got = Vec::new();
        while !got.ends_with(echo) {
            if let ConsoleItem::Output { data, .. } = out.next_item()? {
                got.extend_from_slice(&data);
            }
        }
        Ok(t.elapsed())
    };
    let mut v = Vec::with_capacity(2 * PAIRS);
    for i in 0..PAIRS + PAIRS / 10 {
        let x = trip(b"x", b"x")?;
        let del = trip(b"\x7f", b"\x08 \x08")?;
        if i >= PAIRS / 10 {
            v.extend([x, del]);
        }
    }
    input.detach()?;
    Ok(v)
}

/// What a flushed frame showed.
#[derive(Debug, Clone, Default)]
struct Frame {
    at: Option<Instant>,
    /// The pane's title says mictop is typing into it.
    typing: bool,
    /// The character after the last prompt on screen (`None`: no prompt).
    after_prompt: Option<char>,
    /// What follows the last prompt, trimmed.
    prompt_line: String,
    /// The line above the last prompt.
    above_prompt: String,
}

/// A headless terminal that tells what each flushed frame shows.
struct Probe {
    inner: TestBackend,
    frames: mpsc::Sender<Frame>,
}

impl Probe {
    fn frame(buf: &Buffer) -> Frame {
        let (w, h) = (buf.area.width, buf.area.height);
        let text = |y: u16, from: u16| -> String { (from..w).map(|x| buf[(x, y)].symbol()).collect() };
        let prompt: Vec<char> = PROMPT.chars().collect();
        let starts_prompt = |x: u16, y: u16| {
            prompt
                .iter()
                .enumerate()
                .all(|(i, &c)| x + (i as u16) < w && buf[(x + i as u16, y)].symbol().starts_with(c))
        };
        let mut f = Frame {
            at: Some(Instant::now()),
            typing: (0..h).any(|y| text(y, 0).contains("console mic0 typing")),
            ..Frame::default()
        };
        let trim = |s: String| {
            s.trim_end_matches(|c: char| c == '│' || c.is_whitespace())
                .to_owned()
        };
        // The last prompt on screen, cell by cell (box drawing is wider
        // than a byte).
        if let Some((x, y)) = (0..h)
            .rev()
            .find_map(|y| (0..w).find(|&x| starts_prompt(x, y)).map(|x| (x, y)))
        {
            let after = x + prompt.len() as u16;
            f.prompt_line = trim(text(y, after));
            f.after_prompt = f.prompt_line.chars().next().or(Some(' '));
            if y > 0 {
                f.above_prompt = trim(text(y - 1, x));
            }
        }
        f
    }
}

impl Backend for Probe {
    type Error = <TestBackend as Backend>::Error;

    fn draw<'a, I>(&mut self, content: I) -> Result<(), Self::Error>
    where
        I: Iterator<Item = (u16, u16, &'a Cell)>,
    {
        self.inner.draw(content)
    }

    fn hide_cursor(&mut self) -> Result<(), Self::Error> {
        self.inner.hide_cursor()
    }

    fn show_cursor(&mut self) -> Result<(), Self::Error> {
        self.inner.show_cursor()
    }

    fn get_cursor_position(&mut self) -> Result<Position, Self::Error> {
        self.inner.get_cursor_position()
    }

    fn set_cursor_position<P: Into<Position>>(&mut self, position: P) -> Result<(), Self::Error> {
        self.inner.set_cursor_position(position)
    }

    fn clear(&mut self) -> Result<(), Self::Error> {
        self.inner.clear()
    }

    fn clear_region(&mut self, clear_type: ClearType) -> Result<(), Self::Error> {
        self.inner.clear_region(clear_type)
    }

    fn size(&self) -> Result<Size, Self::Error> {
        self.inner.size()
    }

    fn window_size(&mut self) -> Result<WindowSize, Self::Error> {
        self.inner.window_size()
    }

    fn flush(&mut self) -> Result<(), Self::Error> {
        self.inner.flush()?;
        let _ = self.frames.send(Self::frame(self.inner.buffer()));
        Ok(())
    }
}

/// The broker's consoles, each one's output bytes and notices counted as
/// they reach the loop.
struct Counting {
    inner: BrokerConsoles,
    bytes: Arc<AtomicU64>,
    notices: Arc<AtomicU64>,
}

impl ConsoleSource for Counting {
    fn attach(
        &mut self,
        card: u32,
        access: Access,
        size: TermSize,
        sink: Sink,
    ) -> Result<Box<dyn Console>, ConsoleError> {
        let (bytes, notices) = (Arc::clone(&self.bytes), Arc::clone(&self.notices));
        let counted: Sink = Box::new(move |e| {
            match &e {
                ConsoleEvent::Output(b) => {
                    bytes.fetch_add(b.len() as u64, Ordering::Relaxed);
                }
                ConsoleEvent::Notice(_) => {
                    notices.fetch_add(1, Ordering::Relaxed);
                }
                _ => {}
            }
            sink(e)
        });
        self.inner.attach(card, access, size, counted)
    }
}

struct Flood {
    wall: Duration,
    /// Of `mictop`: the console's own threads.
    console_threads: Duration,
    frames: u64,
    mictop: Duration,
    mpssd: Duration,
    emulator: Duration,
    expected: u64,
    received: u64,
    notices: u64,
    scrollback: usize,
    /// What the scrollback's lines are (the numbers, in order?).
    kept: String,
    replay: Duration,
}

struct Pane {
    trips: Vec<Duration>,
    flood: Flood,
}

/// Waits for a frame for which `cond` holds.
fn frame_until(
    frames: &mpsc::Receiver<Frame>,
    what: &str,
    cond: impl Fn(&Frame) -> bool,
) -> anyhow::Result<Frame> {
    let deadline = Instant::now() + WAIT;
    loop {
        // TIMEOUT: WAIT for `what`.
        let f = frames
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .map_err(|_| anyhow::anyhow!("no frame showing {what}"))?;
        if cond(&f) {
            return Ok(f);
        }
    }
}

fn key(tx: &mictop::event::Tx, code: KeyCode) {
    let _ = tx.send(Action::Key(KeyEvent::new(code, KeyModifiers::NONE)));
}

/// The real loop on the probe's terminal: the pane's keystroke trips, then
/// the flood.
fn pane(root: &MicRoot, emulator: u32, mpssd: u32) -> anyhow::Result<Pane> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mictop::event::Session {
            mut app,
            mut runtime,
            mut rx,
        } = mictop::event::session(root, Config::default(), Theme::new(ThemeName::Dark))?;
        let bytes = Arc::new(AtomicU64::new(0));
        let notices = Arc::new(AtomicU64::new(0));
        runtime.set_console_source(Box::new(Counting {
            inner: BrokerConsoles::new(root),
            bytes: Arc::clone(&bytes),
            notices: Arc::clone(&notices),
        }));
        let (ftx, frames) = mpsc::channel();
        let mut terminal = Terminal::new(Probe {
            inner: TestBackend::new(200, 50),
            frames: ftx,
        })?;
        let tx = runtime.sender();
        let drawn = runtime.frame_counter();
        let driver = std::thread::Builder::new()
            .name("bench-driver".into())
            .spawn(move || {
                let r = drive(&tx, &frames, &bytes, &notices, &drawn, emulator, mpssd);
                let _ = tx.send(Action::Quit);
                r
            })?;
        runtime.run(&mut terminal, &mut app, &mut rx, Vec::new()).await?;
        let (trips, mut flood) = driver
            .join()
            .map_err(|_| anyhow::anyhow!("the driver panicked"))??;
        let view = app
            .consoles()
            .shown()
            .ok_or_else(|| anyhow::anyhow!("no console"))?;
        flood.scrollback = view.term().scrollback_len();
        let t = Instant::now();
        let lines = view.term().scrollback_text();
        flood.replay = t.elapsed();
        flood.kept = numbers(&lines);
        Ok(Pane { trips, flood })
    })
}

fn drive(
    tx: &mictop::event::Tx,
    frames: &mpsc::Receiver<Frame>,
    bytes: &AtomicU64,
    notices: &AtomicU64,
    drawn: &AtomicU64,
    emulator: u32,
    mpssd: u32,
) -> anyhow::Result<(Vec<Duration>, Flood)> {
    // Attach (c), the replay ends in the prompt; take the write side (w).
    key(tx, KeyCode::Char('c'));
    frame_until(frames, "the prompt", |f| f.after_prompt.is_some())?;
    key(tx, KeyCode::Char('w'));
    frame_until(frames, "typing", |f| f.typing)?;
    let trip = |code: KeyCode, echoed: bool| -> anyhow::Result<Duration> {
        std::thread::sleep(PACE);
        while frames.try_recv().is_ok() {}
        let t = Instant::now();
        key(tx, code);
        let f = frame_until(frames, "the echo", |f| (f.after_prompt == Some('x')) == echoed)?;
        Ok(f.at.unwrap_or_else(Instant::now) - t)
    };
    let mut trips = Vec::with_capacity(2 * PAIRS);
    for i in 0..PAIRS + PAIRS / 10 {
        let x = trip(KeyCode::Char('x'), true)?;
        let del = trip(KeyCode::Backspace, false)?;
        if i >= PAIRS / 10 {
            trips.extend([x, del]);
        }
    }

    // The flood: everything from the command's echo to the prompt after
    // its last number.
    let line = format!("seq 1 {LAST}");
    // After the command's own echo: its end of line, the numbers, the
    // prompt.
    let expected = 2 + seq_bytes(LAST) + PROMPT.len() as u64;
    for c in line.chars() {
        key(tx, KeyCode::Char(c));
    }
    frame_until(frames, "the command typed", |f| f.prompt_line == line)?;
    std::thread::sleep(PACE);
    let (b0, n0, d0) = (
        bytes.load(Ordering::Relaxed),
        notices.load(Ordering::Relaxed),
        drawn.load(Ordering::Relaxed),
    );
    let (m0, p0, e0) = (
        cpu(None, BENCH_THREADS),
        cpu(Some(mpssd), &[]),
        cpu(Some(emulator), &[]),
    );
    let threads0 = cpu_by_thread();
    let t = Instant::now();
    key(tx, KeyCode::Enter);
    let last = LAST.to_string();
    frame_until(frames, "the last number and the prompt", |f| {
        f.after_prompt.is_some() && f.above_prompt == last
    })?;
    let wall = t.elapsed();
    // The console's threads (the viewer decoding mpssd's frames, the
    // write side) apart from the loop's.
    let console_threads: Duration = cpu_by_thread()
        .into_iter()
        .filter(|(name, _)| name.starts_with("console-mic"))
        .map(|(name, d)| d.saturating_sub(threads0.get(&name).copied().unwrap_or_default()))
        .sum();
    let flood = Flood {
        wall,
        console_threads,
        frames: drawn.load(Ordering::Relaxed) - d0,
        mictop: cpu(None, BENCH_THREADS).saturating_sub(m0),
        mpssd: cpu(Some(mpssd), &[]).saturating_sub(p0),
        emulator: cpu(Some(emulator), &[]).saturating_sub(e0),
        expected,
        received: bytes.load(Ordering::Relaxed) - b0,
        notices: notices.load(Ordering::Relaxed) - n0,
        scrollback: 0,
        kept: String::new(),
        replay: Duration::ZERO,
    };
    Ok((trips, flood))
}
