//! mictop's console source over mpssd's broker, against live emulated
//! cards and mpssd as a real process (mictop's binary run as mpssd, as the
//! demo runs it): waiting for an mpssd that is not running, the replay,
//! read-only viewers that cannot type, taking the write side from another
//! client (and saying whose it was), being taken over (and saying by
//! whom), giving it back, the window size reaching the card, two cards'
//! consoles at once, and the ends: mpssd stopping, the card down for good,
//! a card mpssd does not know.
//!
//! Needs root and `/dev/fuse` (micemu), and root for mpssd's network
//! namespace.

mod support;

use std::fmt::Write as _;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use libmic::mpssd::{AttachOptions, Client, ConsoleEnd, ConsoleItem, Replay};
use libmic::{BootRequest, MicRoot};
use mictop::console::broker::BrokerConsoles;
use mictop::console::{Access, Console, ConsoleError, ConsoleEvent, ConsoleSource, Sink, TermSize};

const WAIT: Duration = Duration::from_secs(30);
const SIZE: TermSize = TermSize { cols: 80, rows: 24 };

/// One console's events, the output kept as text.
struct Viewer {
    rx: mpsc::Receiver<ConsoleEvent>,
    out: String,
}

impl Viewer {
    fn new() -> (Viewer, Sink) {
        let (tx, rx) = mpsc::channel();
        let sink: Sink = Box::new(move |e| tx.send(e).is_ok());
        (
            Viewer {
                rx,
                out: String::new(),
            },
            sink,
        )
    }

    /// Events until `cond` holds of one (or of the output so far); the
    /// output up to then.
    fn until(&mut self, what: &str, mut cond: impl FnMut(&ConsoleEvent, &str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            // TIMEOUT: the deadline for `what`.
            let ev = self
                .rx
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("timed out waiting for {what}; so far:\n{}", self.out));
            match &ev {
                ConsoleEvent::Output(b) => self.out.push_str(&String::from_utf8_lossy(b)),
                // In the text too, so that a failure shows what was said.
                other => {
                    let _ = write!(self.out, "\n[{other:?}]\n");
                }
            }
            if cond(&ev, &self.out) {
                return std::mem::take(&mut self.out);
            }
        }
    }

    fn expect(&mut self, needle: &str) -> String {
        self.until(needle, |_, out| out.contains(needle))
    }

    fn access(&mut self, what: &str, want: &ConsoleEvent) -> String {
        self.until(what, |e, _| e == want)
    }

    /// Every event already here, nothing waited for.
    fn pending(&mut self) -> Vec<ConsoleEvent> {
        self.rx.try_iter().collect()
    }
}

fn read_write() -> ConsoleEvent {
    ConsoleEvent::Access {
        access: Access::ReadWrite,
        writer: None,
    }
}

fn read_only() -> ConsoleEvent {
    ConsoleEvent::Access {
        access: Access::ReadOnly,
        writer: None,
    }
}

fn boot(root: &MicRoot, id: u32) {
    let card = root.card_by_id(id);
    card.boot_with(&BootRequest::defaults_for(&card), Some(&root.system_map()))
        .unwrap();
    card.wait_os_up(Some(WAIT)).unwrap();
}

/// Re-reads card `id`'s log until a record contains `needle`.
fn wait_card_log(root: &MicRoot, id: u32, needle: &str) {
    let card = root.card_by_id(id);
    let deadline = Instant::now() + WAIT;
    loop {
        let raw = card.log_buf_raw().unwrap();
        if libmic::klog::decode(&raw).iter().any(|r| r.text.contains(needle)) {
            return;
        }
        assert!(Instant::now() < deadline, "no {needle:?} in mic{id}'s log");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn attach(src: &mut BrokerConsoles, card: u32) -> (Viewer, Box<dyn Console>) {
    let (v, sink) = Viewer::new();
    let c = src.attach(card, Access::ReadOnly, SIZE, sink).unwrap();
    (v, c)
}

#[test]
fn waits_for_mpssd_then_views_types_and_hands_the_write_side_around() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = support::fast_fleet(dir.path(), 2);
    let root = MicRoot::new(fleet.root());
    let mut src = BrokerConsoles::new(&root);

    // No mpssd yet: said, and the console attaches once it runs.
    let (mut v0, mut c0) = attach(&mut src, 0);
    v0.until(
        "waiting for mpssd",
        |e, _| matches!(e, ConsoleEvent::Waiting(w) if w.contains("mpssd is not running for")),
    );
    let daemon = support::mpssd(fleet.root(), 2);
    v0.access("the viewer attached", &read_only());
    boot(&root, 0);
    boot(&root, 1);
    v0.expect("root@mic0:~# ");

    // Read-only: typing is refused (by mictop, before mpssd would).
    assert!(matches!(
        c0.send(b"uname\r"),
        Err(ConsoleError::ReadOnly { card: 0 })
    ));
    c0.set_access(Access::ReadWrite).unwrap();
    v0.access("the write side", &read_write());
    // The window's size went with it, and follows the pane.
    wait_card_log(&root, 0, "hvc0: console size 80x24");
    c0.send(b"uname -a\r").unwrap();
    let answer = v0.expect("root@mic0:~# ");
    assert!(answer.contains("Linux mic0 3.10.0-micemu"), "{answer:?}");
    c0.resize(TermSize { cols: 100, rows: 30 }).unwrap();
    wait_card_log(&root, 0, "hvc0: console size 100x30");

    // A viewer that comes later gets the scrollback first.
    let (mut late, late_c) = attach(&mut src, 0);
    late.expect("Linux mic0 3.10.0-micemu");

    // Another client forces the write side: the pane is told who took it,
    // keeps watching, and cannot type.
    let other = Client::connect(&root)
        .unwrap()
        .attach_console(
            0,
            &AttachOptions::read_write()
                .force()
                .replay(Replay::Bytes(0))
                .named("test writer"),
        )
        .unwrap();
    let (_, mut other_out, mut other_in) = other.split();
    other_out.set_timeout(Some(WAIT)).unwrap();
    v0.until("being taken over", |e, _| {
        matches!(e, ConsoleEvent::Access { access: Access::ReadOnly, writer: Some(w) } if w.contains("\"test writer\""))
    });
    assert!(matches!(c0.send(b"x"), Err(ConsoleError::ReadOnly { .. })));
    other_in.send(b"echo from the test\r").unwrap();
    v0.expect("from the test\r\n");

    // Taking it back says whose it was; the other client is told it was
    // mictop.
    c0.set_access(Access::ReadWrite).unwrap();
    v0.until("taking it back", |e, _| {
        matches!(e, ConsoleEvent::Notice(n) if n.starts_with("took the write side from \"test writer\""))
    });
    let by = loop {
        match other_out.next_item().unwrap() {
            ConsoleItem::Ended(ConsoleEnd::TakenOver { by, .. }) => break by,
            ConsoleItem::Ended(other) => panic!("{other:?}"),
            _ => {}
        }
    };
    assert_eq!(by.and_then(|b| b.name).as_deref(), Some("mictop"));

    // Given back: the broker's writer is free (a client that does not
    // force gets it, once mpssd has taken the detach).
    c0.set_access(Access::ReadOnly).unwrap();
    v0.access("read-only again", &read_only());
    let deadline = Instant::now() + WAIT;
    let free = loop {
        match Client::connect(&root)
            .unwrap()
            .attach_console(0, &AttachOptions::read_write().replay(Replay::Bytes(0)))
        {
            Ok(c) => break c,
            Err(e) => assert!(Instant::now() < deadline, "still held: {e}"),
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    drop(free);

    // Two cards' consoles at once, each its own.
    let (mut v1, mut c1) = attach(&mut src, 1);
    v1.expect("root@mic1:~# ");
    c1.set_access(Access::ReadWrite).unwrap();
    v1.access("mic1's write side", &read_write());
    c1.send(b"echo only on one\r").unwrap();
    v1.expect("only on one\r\n");
    assert!(
        !v0.pending().iter().any(
            |e| matches!(e, ConsoleEvent::Output(b) if String::from_utf8_lossy(b).contains("only on one"))
        ),
        "mic1's output on mic0's console"
    );

    // mpssd stops: every console ends, saying so.
    daemon.stop().unwrap();
    for v in [&mut v0, &mut v1, &mut late] {
        v.until(
            "the end",
            |e, _| matches!(e, ConsoleEvent::Ended(why) if why.starts_with("mpssd stopped")),
        );
    }
    drop((c0, c1, late_c));
}

#[test]
fn a_card_down_for_good_ends_its_console_and_an_unknown_card_has_none() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = support::fast_fleet(dir.path(), 1);
    let root = MicRoot::new(fleet.root());
    let daemon = support::mpssd(fleet.root(), 1);
    let mut src = BrokerConsoles::new(&root);

    let (mut none, _c) = attach(&mut src, 7);
    let why = none.until("the refusal", |e, _| matches!(e, ConsoleEvent::Ended(_)));
    assert!(why.contains("mpssd: ") && why.contains("mic7"), "{why}");

    boot(&root, 0);
    let (mut v, mut c) = attach(&mut src, 0);
    v.expect("root@mic0:~# ");
    c.set_access(Access::ReadWrite).unwrap();
    v.access("the write side", &read_write());
    c.send(b"poweroff\r").unwrap();
    let said = v.until("the end", |e, _| matches!(e, ConsoleEvent::Ended(_)));
    assert!(said.contains("card down: mic0 is down"), "{said}");
    // Ended: typing goes nowhere.
    assert!(c.send(b"x").is_err());
    daemon.stop().unwrap();
}
