//! The demo's console source against a live emulated card: the console
//! added on `dev/mic0` before boot, the card's shell through it, a second
//! viewer (the replay, read-only, taking the write side), and the console
//! coming back after the card shuts down and boots again.
//!
//! Needs root and `/dev/fuse` (micemu).

mod support;

use std::fmt::Write as _;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use libmic::{BootRequest, MicRoot};
use mictop::console::demo::DemoConsoles;
use mictop::console::{Access, ConsoleError, ConsoleEvent, ConsoleSource, TermSize};

const WAIT: Duration = Duration::from_secs(30);
const SIZE: TermSize = TermSize { cols: 80, rows: 24 };

/// One viewer's events, as text.
struct Viewer {
    rx: mpsc::Receiver<ConsoleEvent>,
    out: String,
}

impl Viewer {
    fn new() -> (Viewer, mictop::console::Sink) {
        let (tx, rx) = mpsc::channel();
        let sink: mictop::console::Sink = Box::new(move |e| tx.send(e).is_ok());
        (
            Viewer {
                rx,
                out: String::new(),
            },
            sink,
        )
    }

    /// Events until `cond` holds of one (or of the output so far).
    fn until(&mut self, what: &str, mut cond: impl FnMut(&ConsoleEvent, &str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            // TIMEOUT: the deadline for `what`.
            let ev = self
                .rx
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("timed out waiting for {what}; output so far:\n{}", self.out));
            match &ev {
                ConsoleEvent::Output(b) => self.out.push_str(&String::from_utf8_lossy(b)),
                // In the output too, so that a failure shows what was said.
                ConsoleEvent::Notice(n) => {
                    let _ = write!(self.out, "\n[notice: {n}]\n");
                }
                _ => {}
            }
            if cond(&ev, &self.out) {
                return std::mem::take(&mut self.out);
            }
        }
    }

    fn expect(&mut self, needle: &str) -> String {
        self.until(needle, |_, out| out.contains(needle))
    }
}

#[test]
fn the_demo_serves_the_cards_console() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = support::fast_fleet(dir.path(), 1);
    let root = MicRoot::new(fleet.root());
    let mut consoles = DemoConsoles::start(&root, &[0]).unwrap();
    assert!(matches!(
        consoles.attach(1, Access::ReadOnly, SIZE, Box::new(|_| true)),
        Err(ConsoleError::NoConsole { card: 1 })
    ));

    let (mut first, sink) = Viewer::new();
    let mut one = consoles.attach(0, Access::ReadOnly, SIZE, sink).unwrap();
    first.until("read-only access", |e, _| {
        *e == ConsoleEvent::Access {
            access: Access::ReadOnly,
            writer: None,
        }
    });
    let card = root.card("mic0").unwrap();
    card.boot_with(&BootRequest::defaults_for(&card), Some(&root.system_map()))
        .unwrap();
    first.expect("root@mic0:~# ");

    // Read-only: typing is refused.
    assert!(matches!(
        one.send(b"uname\r"),
        Err(ConsoleError::ReadOnly { card: 0 })
    ));
    one.set_access(Access::ReadWrite).unwrap();
    first.until("the write side", |e, _| {
        matches!(
            e,
            ConsoleEvent::Access {
                access: Access::ReadWrite,
                ..
            }
        )
    });
    one.send(b"uname -a\r").unwrap();
    let answer = first.expect("root@mic0:~# ");
    assert!(answer.contains("Linux mic0 3.10.0-micemu"), "{answer:?}");

    // A second viewer gets what was said before it came (the prompt and
    // the answer), then takes the write side: the first is told.
    let (mut second, sink) = Viewer::new();
    let mut two = consoles.attach(0, Access::ReadOnly, SIZE, sink).unwrap();
    second.expect("Linux mic0 3.10.0-micemu");
    two.set_access(Access::ReadWrite).unwrap();
    first.until("losing the write side", |e, _| {
        *e == ConsoleEvent::Access {
            access: Access::ReadOnly,
            writer: Some("viewer 2".into()),
        }
    });
    assert!(matches!(one.send(b"x"), Err(ConsoleError::ReadOnly { .. })));
    two.send(b"echo hello from two\r").unwrap();
    first.expect("hello from two\r\n");

    // The card shuts down: the console goes, and comes back with the next
    // boot, to the same viewers.
    two.send(b"poweroff\r").unwrap();
    first.until(
        "the console removed",
        |e, _| matches!(e, ConsoleEvent::Notice(n) if n.contains("removed its console")),
    );
    let (_, status) = card.wait_shutdown_status(Some(WAIT)).unwrap();
    assert_eq!(status, libmic::MicStatus::PowerOff);
    card.reset().unwrap();
    card.wait_for(|s| s == libmic::MicState::Offline, Some(WAIT))
        .unwrap();
    card.boot_with(&BootRequest::defaults_for(&card), Some(&root.system_map()))
        .unwrap();
    first.expect("root@mic0:~# ");
    two.send(b"uptime\r").unwrap();
    assert!(first.expect("root@mic0:~# ").contains(" up "));
    two.detach();
    one.detach();
}
