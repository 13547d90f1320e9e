//! The client library against a live emulated fleet (in-process), where the
//! hardening matters: a card log scribbled on by a broken card, state
//! notifications that change nothing, a panic before the card driver is up.
//! (A driver that stops answering is in `e2e.rs`, where micemu runs as a
//! process that can be stopped.)
//!
//! No sleeps as synchronisation: waits are libmic's (poll on `state`), and
//! the card log is re-read until a deadline (it has no notification).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use libmic::klog::{self, CardLogFollower, LogEntry, LostReason};
use libmic::{BootRequest, Card, Error, MicRoot, MicState, OS_UP_MARKER};
use micemu::{Config, Fault, Instance, Timing};

/// Upper bound for anything a test waits on; only reached if something hangs.
const HANG: Duration = Duration::from_secs(20);

struct Fleet {
    inst: Instance,
    _dir: tempfile::TempDir,
}

impl Fleet {
    fn start(cards: u32) -> Fleet {
        let dir = tempfile::tempdir().unwrap();
        let inst = Instance::start(
            dir.path(),
            Config {
                cards,
                timing: Timing::FAST,
                memory: 1 << 30,
                ..Default::default()
            },
        )
        .expect("starting micemu (needs root and /dev/fuse)");
        Fleet { inst, _dir: dir }
    }

    fn card(&self, id: u32) -> Card {
        MicRoot::new(self.inst.root()).card_by_id(id)
    }

    fn boot(&self, id: u32) -> Card {
        let card = self.card(id);
        let map = MicRoot::new(self.inst.root()).system_map();
        card.boot_with(&BootRequest::defaults_for(&card), Some(&map))
            .unwrap();
        card.wait_os_up(Some(HANG)).unwrap();
        card
    }

    fn inject(&self, id: u32, f: &Fault) {
        self.inst.inject(id, f).unwrap();
    }
}

/// Reads the card log until `done` holds for what was followed so far.
fn follow_until(log: &mut CardLogFollower, seen: &mut Vec<LogEntry>, done: impl Fn(&[LogEntry]) -> bool) {
    let deadline = Instant::now() + HANG;
    while !done(seen) {
        assert!(Instant::now() < deadline, "gave up following; got {seen:#?}");
        seen.extend(log.next(Duration::from_millis(20)).unwrap());
    }
}

fn texts(entries: &[LogEntry]) -> Vec<String> {
    klog::records(entries).map(|r| r.text.clone()).collect()
}

#[test]
fn a_wake_up_without_a_state_change_is_not_a_transition() {
    let f = Fleet::start(1);
    let card = f.boot(0);
    let mut watcher = card.watch_state().unwrap();
    assert_eq!(watcher.current(), MicState::Online);
    // Reset and boot again while the watcher is not looking: two real
    // notifications, and the card reads online again.
    let other = f.card(0);
    other.reset().unwrap();
    other.wait_for(|s| s == MicState::Offline, Some(HANG)).unwrap();
    f.boot(0);
    let before = watcher.notifications();
    assert_eq!(
        watcher.wait_change(Some(Duration::from_millis(300))).unwrap(),
        None,
        "online → online is no transition"
    );
    assert!(
        watcher.notifications() > before,
        "the wake-up path ran (the notification was taken)"
    );
    assert_eq!(watcher.current(), MicState::Online);
    // And a real change afterwards is one.
    other.reset().unwrap();
    assert_eq!(watcher.wait_change(Some(HANG)).unwrap(), Some(MicState::Offline));
}

#[test]
fn garbage_in_the_card_log_hides_nothing_after_it() {
    let f = Fleet::start(1);
    let card = f.boot(0);
    for _ in 0..200 {
        f.inject(0, &Fault::GarbageLog);
    }
    f.inject(0, &Fault::Panic("VISIBLE".into()));
    let entries = klog::decode_log(&card.log_buf_raw().unwrap());
    let texts = texts(&entries);
    assert!(
        texts.iter().any(|t| t == "Kernel panic - not syncing: VISIBLE"),
        "{texts:#?}"
    );
    // What was skipped is said, with its size.
    let lost: Vec<_> = entries
        .iter()
        .filter_map(|e| match e {
            LogEntry::Lost(l) => Some(*l),
            _ => None,
        })
        .collect();
    assert!(
        !lost.is_empty(),
        "200 scribbles and no damage reported: {entries:#?}"
    );
    assert!(
        lost.iter()
            .all(|l| l.reason == LostReason::Damaged && l.bytes.is_some_and(|b| b > 0))
    );
    assert_eq!(
        klog::panic_line(&entries).as_deref(),
        Some("Kernel panic - not syncing: VISIBLE")
    );
}

#[test]
fn following_a_scribbled_log_neither_resets_nor_repeats_nor_stops() {
    let f = Fleet::start(1);
    let card = f.boot(0);
    let mut log = CardLogFollower::open(&card).unwrap();
    let mut seen = log.next(Duration::ZERO).unwrap();
    assert!(texts(&seen).iter().any(|t| t == OS_UP_MARKER));
    for i in 1..=200 {
        f.inject(
            0,
            &Fault::Log {
                level: 6,
                text: format!("L{i}"),
            },
        );
        f.inject(0, &Fault::GarbageLog);
        seen.extend(log.next(Duration::ZERO).unwrap());
    }
    follow_until(&mut log, &mut seen, |s| texts(s).iter().any(|t| t == "L200"));
    assert!(!seen.contains(&LogEntry::Reset), "no reset happened: {seen:#?}");
    let all = texts(&seen);
    let mut once = HashSet::new();
    for t in &all {
        assert!(once.insert(t.clone()), "{t:?} yielded twice: {all:#?}");
    }
    // The L lines that survived came in order.
    let ls: Vec<u32> = all
        .iter()
        .filter_map(|t| t.strip_prefix('L')?.parse().ok())
        .collect();
    assert!(ls.windows(2).all(|w| w[0] < w[1]), "{ls:?}");
}

#[test]
fn a_reset_between_two_reads_is_a_new_boot() {
    let f = Fleet::start(1);
    let card = f.boot(0);
    let mut log = CardLogFollower::open(&card).unwrap();
    let first = log.next(Duration::ZERO).unwrap();
    assert!(!first.is_empty());
    // Reset and boot again between two reads of the follower: its state
    // never reads anything but online.
    let other = f.card(0);
    other.reset().unwrap();
    other.wait_for(|s| s == MicState::Offline, Some(HANG)).unwrap();
    f.boot(0);
    let next = log.next(Duration::ZERO).unwrap();
    assert_eq!(next.first(), Some(&LogEntry::Reset), "{next:#?}");
    let t = texts(&next);
    assert!(
        t[0].starts_with("Linux version"),
        "the new boot from its start: {t:#?}"
    );
    assert!(t.iter().any(|t| t == OS_UP_MARKER));
    // Nothing new, nothing more.
    assert!(log.next(Duration::ZERO).unwrap().is_empty());
}

#[test]
fn a_card_that_panics_before_its_driver_is_up_ends_the_boot_wait() {
    let f = Fleet::start(1);
    let card = f.card(0);
    let map = MicRoot::new(f.inst.root()).system_map();
    // A kernel image as ramdisk: the card cannot unpack it and panics
    // before its mic driver starts, so nothing reaches the host but the log.
    let mut req = BootRequest::defaults_for(&card);
    req.ramdisk = Some("mic/uos.img".into());
    card.boot_with(&req, Some(&map)).unwrap();
    let start = Instant::now();
    match card.wait_os_up(Some(Duration::from_secs(120))) {
        Err(Error::CardCrashed { card, line }) => {
            assert_eq!(card, "mic0");
            assert!(line.starts_with("Kernel panic - not syncing: VFS"), "{line}");
        }
        other => panic!("{other:?} after {:?}", start.elapsed()),
    }
    assert_eq!(card.state().unwrap(), MicState::Online, "the host was never told");
}

/// The boot's errno, and libmic's words for it, when it is refused.
fn refused_boot(card: &Card, req: &BootRequest, map: &std::path::Path) -> (i32, String) {
    match card.boot_with(req, Some(map)) {
        Err(Error::Rejected {
            attr: libmic::Attr::State,
            errno,
            meaning,
            ..
        }) => (errno, meaning),
        other => panic!("expected the boot to be refused, got {other:?}"),
    }
}

#[test]
fn a_refused_boot_says_why_in_words() {
    let f = Fleet::start(1);
    let card = f.card(0);
    let map = MicRoot::new(f.inst.root()).system_map();
    let mut req = BootRequest::defaults_for(&card);

    // A directory where the image should be.
    req.firmware = "mic".into();
    let (errno, meaning) = refused_boot(&card, &req, &map);
    assert_eq!(errno, libc::EISDIR, "{meaning}");
    assert!(meaning.contains("is a directory under"), "{meaning}");

    // A name no path can hold.
    req.firmware = format!("mic/{}", "x".repeat(300));
    let (errno, meaning) = refused_boot(&card, &req, &map);
    assert_eq!(errno, libc::ENAMETOOLONG, "{meaning}");
    assert!(meaning.contains("too long"), "{meaning}");

    // A name with a NUL is cut there by the store, as the kernel's strncpy
    // cuts it: what remains names no file.
    req.firmware = "mic/uos.img".into();
    card.boot_with(&req, Some(&map)).unwrap_or_else(|e| panic!("{e}"));
    card.reset().unwrap();
    card.wait_for(|s| s == MicState::Offline, Some(HANG)).unwrap();
    let fw = f.inst.root().join("sys/class/mic/mic0/firmware");
    std::fs::write(&fw, b"mic/nope.img\0/uos.img").unwrap();
    assert_eq!(std::fs::read(&fw).unwrap(), b"mic/nope.img\n");
    match card.boot() {
        Err(Error::Rejected { errno, meaning, .. }) => {
            assert_eq!(errno, libc::ENOENT, "{meaning}");
            assert!(meaning.contains("not found under"), "{meaning}");
        }
        other => panic!("{other:?}"),
    }

    // A command line the store takes but that does not fit once the driver
    // put its ` mem=1024M` first: E2BIG from the boot, in words.
    // (Written raw: libmic's own limit would refuse it before the driver.)
    let cmdline = f.inst.root().join("sys/class/mic/mic0/cmdline");
    std::fs::write(&cmdline, "c".repeat(2040)).unwrap();
    req.cmdline = None;
    let (errno, meaning) = refused_boot(&card, &req, &map);
    assert_eq!(errno, libc::E2BIG, "{meaning}");
    assert!(meaning.contains("shorten cmdline"), "{meaning}");
    // One the card's buffer could never hold is refused by the store.
    match card.write_raw(libmic::Attr::Cmdline, &"c".repeat(2048)) {
        Err(Error::Rejected {
            attr: libmic::Attr::Cmdline,
            errno,
            meaning,
            ..
        }) => {
            assert_eq!(errno, libc::E2BIG);
            assert!(meaning.contains("longer than the 2047 bytes"), "{meaning}");
        }
        other => panic!("{other:?}"),
    }
    // More than a store takes never reaches the driver.
    assert!(matches!(
        card.write_raw(libmic::Attr::Firmware, &"f".repeat(5000)),
        Err(Error::InvalidValue { .. })
    ));
    // None of it touched the card.
    assert_eq!(card.state().unwrap(), MicState::Offline);
}
