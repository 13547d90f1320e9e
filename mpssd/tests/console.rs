//! Card consoles end to end: micemu's card OS booted, mpssd as a real
//! process; its shell through the pty (`DIR/run/mpssd/micN/console`, what
//! `screen` and `picocom` open) and through broker clients on the control
//! socket (libmic's console client).
//!
//! No sleeps: every wait reads the pty or the client's stream until what
//! is awaited arrives, bounded by [`HANG`].

mod common;
#[path = "net/card.rs"]
mod played;

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::os::fd::AsFd as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::time::Instant;

use common::console::{marker, next_notice, shell_ready, until};
use common::{Daemon, Fleet, HANG, to_state, wait_event};
use libmic::mpssd::{
    AttachOptions, Console, ConsoleEnd, ConsoleItem, ConsoleMode, ConsoleOutput, ErrorCode, Replay,
    SupervisorState as S,
};
use nix::poll::{PollFd, PollFlags, PollTimeout};

/// A booted card 0 under a running mpssd.
fn booted() -> (Fleet, Daemon) {
    let fleet = Fleet::start(1);
    let d = Daemon::start(fleet.root(), &[]);
    let mut ev = d.events();
    fleet.boot(0);
    wait_event(&mut ev, "running", to_state(0, S::Running));
    (fleet, d)
}

fn attach(d: &Daemon, opts: &AttachOptions) -> Console {
    d.client().attach_console(0, opts).unwrap()
}

/// Re-reads the card's kernel log until a line contains `needle` (the
/// log has no change notification, as on real hardware).
fn wait_card_log(fleet: &Fleet, needle: &str) {
    let start = Instant::now();
    loop {
        let raw = fleet.card(0).log_buf_raw().unwrap();
        if libmic::klog::decode(&raw).iter().any(|r| r.text.contains(needle)) {
            return;
        }
        assert!(start.elapsed() < HANG, "{needle:?} never in the card's log");
        std::thread::yield_now();
    }
}

/// The pty's slave, opened as a terminal program opens it.
fn open_pty(d: &Daemon) -> File {
    let link = d.root.join("run/mpssd/mic0/console");
    let target = std::fs::read_link(&link).unwrap();
    assert!(target.starts_with("/dev/pts/"), "{}", target.display());
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(nix::fcntl::OFlag::O_NOCTTY.bits())
        .open(&link)
        .unwrap()
}

/// Reads the pty until its output contains `needle`.
fn pty_until(pty: &mut File, needle: &str) -> String {
    let start = Instant::now();
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains(needle) {
        let left = HANG.saturating_sub(start.elapsed());
        assert!(
            !left.is_zero(),
            "{needle:?} never came on the pty; got {:?}",
            String::from_utf8_lossy(&seen)
        );
        let mut fds = [PollFd::new(pty.as_fd(), PollFlags::POLLIN)];
        // TIMEOUT: what is left of HANG.
        let t = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
        if nix::poll::poll(&mut fds, t).unwrap() == 0 {
            continue;
        }
        let mut buf = [0u8; 4096];
        let n = pty.read(&mut buf).unwrap();
        seen.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&seen).into_owned()
}

#[test]
fn the_shell_answers_through_the_pty_and_a_broker_client() {
    let (fleet, d) = booted();
    // The pty's path is logged, as the original's was.
    let line = d.wait_log("mic0 console message goes to /dev/pts/");
    assert!(line.contains("run/mpssd/mic0/console"), "{line}");
    let mut pty = open_pty(&d);
    let (line, answer) = marker();
    pty.write_all(line.as_bytes()).unwrap();
    pty_until(&mut pty, &answer);
    pty.write_all(b"uname -n\r").unwrap();
    let out = pty_until(&mut pty, "uname -n\r\nmic0\r\nroot@mic0:~# ");
    assert!(!out.contains("\r\r"), "the pty is raw: {out:?}");
    // Through the broker: the answer carries the pty, the device is up,
    // and the shell answers.
    let mut c = attach(
        &d,
        &AttachOptions::read_write()
            .replay(Replay::Bytes(0))
            .named("test")
            .size(132, 43),
    );
    assert_eq!(c.attached.mode, ConsoleMode::ReadWrite);
    assert!(c.attached.device_up);
    assert_eq!(c.attached.replay_bytes, 0);
    assert_eq!(
        c.attached.pty.as_deref(),
        Some(
            std::fs::read_link(d.root.join("run/mpssd/mic0/console"))
                .unwrap()
                .to_str()
                .unwrap()
        )
    );
    c.input.send(b"echo through-the-broker\r").unwrap();
    until(&mut c.output, "echo through-the-broker\r\nthrough-the-broker\r\n");
    // The pty saw the same output (both follow the card).
    pty_until(&mut pty, "through-the-broker\r\n");
    // The window's size reached the card (VIRTIO_CONSOLE_F_SIZE), at
    // attach and on a resize.
    wait_card_log(&fleet, "hvc0: console size 132x43");
    c.input.resize(100, 30).unwrap();
    wait_card_log(&fleet, "hvc0: console size 100x30");
    // Everything went into the console log.
    let log = std::fs::read_to_string(d.root.join("var/log/mpssd/mic0-console.log")).unwrap();
    assert!(
        log.contains("uname -n\r\nmic0\r\n") && log.contains("through-the-broker"),
        "{log}"
    );
    // Counters moved.
    let st = d.client().card_status(0).unwrap();
    let console = st.devices.iter().find(|x| x.kind == "console").unwrap();
    assert_eq!(console.state, "up");
    assert!(console.counters["input_bytes"] >= 30, "{console:?}");
    assert!(console.counters["output_bytes"] > 0, "{console:?}");
    assert_eq!(d.stop(), 0);
}

#[test]
fn two_clients_see_the_same_output_and_a_read_only_one_cannot_type() {
    let (_fleet, d) = booted();
    let mut writer = attach(&d, &AttachOptions::read_write().named("writer"));
    shell_ready(&mut writer);
    let mut reader = attach(
        &d,
        &AttachOptions::read_only()
            .replay(Replay::Bytes(0))
            .named("reader"),
    );
    assert_eq!(reader.attached.mode, ConsoleMode::ReadOnly);
    assert_eq!(
        reader.attached.writer.as_ref().and_then(|x| x.name.as_deref()),
        Some("writer"),
        "the reader is told who writes"
    );
    writer.input.send(b"echo same-for-both\r").unwrap();
    let seen_w = until(&mut writer.output, "same-for-both\r\nroot@mic0:~# ");
    let seen_r = until(&mut reader.output, "same-for-both\r\nroot@mic0:~# ");
    assert!(seen_w.ends_with(&seen_r), "writer {seen_w:?}, reader {seen_r:?}");
    assert!(seen_r.starts_with("echo same-for-both"), "{seen_r:?}");
    // The reader types: refused, and nothing reaches the card.
    reader.input.send(b"echo from-the-reader\r").unwrap();
    match next_notice(&mut reader.output) {
        ConsoleItem::Refused(e) => {
            assert_eq!(e.code, ErrorCode::ReadOnly);
            assert_eq!(e.message, "attached to mic0's console read-only");
        }
        other => panic!("{other:?}"),
    }
    writer.input.send(b"echo after\r").unwrap();
    let rest = until(&mut writer.output, "after\r\nroot@mic0:~# ");
    assert!(!rest.contains("from-the-reader"), "{rest:?}");
    // A second writer is refused with who holds the console.
    let err = d
        .client()
        .attach_console(0, &AttachOptions::read_write().named("second"))
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::ConsoleBusy));
    assert!(
        err.to_string().contains("held read-write by \"writer\" (pid "),
        "{err}"
    );
    // Forced: the answer names whom it was taken from, whose attachment
    // ends naming who took it.
    let mut forcer = attach(
        &d,
        &AttachOptions::read_write()
            .force()
            .named("forcer")
            .replay(Replay::Lines(1)),
    );
    assert_eq!(
        forcer
            .attached
            .taken_from
            .as_ref()
            .and_then(|x| x.name.as_deref()),
        Some("writer")
    );
    match next_notice(&mut writer.output) {
        ConsoleItem::Ended(ConsoleEnd::TakenOver { by, message }) => {
            assert_eq!(by.and_then(|b| b.name).as_deref(), Some("forcer"));
            assert!(message.contains("\"forcer\""), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert!(writer.output.next_item().is_err(), "nothing after the end");
    // The replay of one line is the prompt.
    match forcer.output.next_item().unwrap() {
        ConsoleItem::Output { data, replay: true } => assert_eq!(data, b"root@mic0:~# "),
        other => panic!("{other:?}"),
    }
    forcer.input.send(b"echo forced\r").unwrap();
    until(&mut forcer.output, "forced\r\n");
    until(&mut reader.output, "forced\r\n");
    // Detaching ends the stream with its own reason.
    reader.input.detach().unwrap();
    loop {
        match reader.output.next_item().unwrap() {
            ConsoleItem::Ended(end) => {
                assert_eq!(end, ConsoleEnd::Detached);
                break;
            }
            ConsoleItem::Output { .. } => {}
            other => panic!("{other:?}"),
        }
    }
    // mpssd stopping ends the attachment with its reason.
    let mut out = forcer.output;
    assert_eq!(d.stop(), 0);
    // (The console device may be seen going down first.)
    match next_notice_skipping_devices(&mut out) {
        ConsoleItem::Ended(ConsoleEnd::DaemonStopping { message }) => {
            assert_eq!(message, "mpssd is stopping");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn attachments_follow_a_reboot_and_end_when_the_card_halts() {
    let (_fleet, d) = booted();
    let mut c = attach(&d, &AttachOptions::read_write());
    shell_ready(&mut c);
    c.input.send(b"reboot\r").unwrap();
    // The device goes with the reset and comes back; the boot is seen.
    let mut ups = Vec::new();
    let start = Instant::now();
    while ups != [false, true] {
        assert!(start.elapsed() < HANG, "device notices {ups:?}");
        match c.output.next_item().unwrap() {
            ConsoleItem::Device { up, .. } => ups.push(up),
            ConsoleItem::Ended(e) => panic!("a reboot ended the attachment: {e}"),
            _ => {}
        }
    }
    shell_ready(&mut c);
    c.input.send(b"halt\r").unwrap();
    match next_notice_skipping_devices(&mut c.output) {
        ConsoleItem::Ended(ConsoleEnd::CardDown { message }) => {
            assert_eq!(message, "mic0 is down (idle); mpssd is not booting it again");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(d.stop(), 0);
}

fn next_notice_skipping_devices(out: &mut ConsoleOutput) -> ConsoleItem {
    loop {
        match next_notice(out) {
            ConsoleItem::Device { .. } => {}
            other => return other,
        }
    }
}

/// mpssd's CPU time so far (user + system), from `/proc`.
fn cpu_time(pid: u32) -> std::time::Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command's closing parenthesis: state is the 3rd
    // field of the line, utime and stime the 14th and 15th.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|x| x.parse().unwrap())
        .collect();
    // USER_HZ is 100 on Linux.
    std::time::Duration::from_millis((f[0] + f[1]) * 10)
}

/// A card that does not replenish its receive ring: mpssd stops reading
/// its console's input (the pty and the clients), neither spins nor
/// buffers more than its bound, and hands everything over, in order, once
/// the card posts buffers again.
#[test]
fn a_card_that_posts_no_receive_buffers_stops_its_input_without_spinning() {
    let fleet = Fleet::start(1);
    fleet.write_config("[daemon]\nclient_timeout = \"1s\"\n[defaults]\nnet = false\n");
    let d = Daemon::start(fleet.root(), &[]);
    // The card is not booted: the test plays its console driver.
    let mut card = played::Card::up_device(fleet.instance(), 0, mic_core::abi::virtio::id::CONSOLE, 0);
    let mut c = attach(&d, &AttachOptions::read_write().replay(Replay::Bytes(0)));
    assert!(card.send(&[b"hello from the played card\r\n"]));
    card.kick();
    until(&mut c.output, "hello from the played card\r\n");
    // Input with no receive buffer posted: 64 KiB is queued, the rest
    // waits for the card and is refused after client_timeout, per frame.
    let cpu0 = cpu_time(d.child.id());
    let t0 = Instant::now();
    let typed = vec![b'x'; 100_000];
    c.input.send(&typed).unwrap();
    let mut refused = Vec::new();
    while refused.len() < 3 {
        match next_notice(&mut c.output) {
            ConsoleItem::Refused(e) => refused.push(e),
            other => panic!("{other:?}"),
        }
    }
    for e in &refused {
        assert_eq!(e.code, ErrorCode::ConsoleBusy);
        assert!(
            e.message.starts_with("mic0 took 0 of ")
                && e.message.ends_with("the card is not reading its console"),
            "{}",
            e.message
        );
    }
    // The pty is not read either: what a terminal writes stays in the
    // kernel's pty buffer, which fills.
    let mut pty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags((nix::fcntl::OFlag::O_NOCTTY | nix::fcntl::OFlag::O_NONBLOCK).bits())
        .open(d.root.join("run/mpssd/mic0/console"))
        .unwrap();
    let mut in_pty = 0usize;
    loop {
        match pty.write(&[b'p'; 512]) {
            Ok(n) => in_pty += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("{e}"),
        }
        assert!(
            in_pty < 16 << 20,
            "the pty never filled: mpssd reads it without a receive buffer"
        );
    }
    // Waiting all that time cost mpssd next to no CPU: nothing spins.
    let wall = t0.elapsed();
    let cpu = cpu_time(d.child.id()).saturating_sub(cpu0);
    assert!(
        cpu * 4 < wall,
        "mpssd used {cpu:?} of CPU in {wall:?} while the card took no input"
    );
    let st = d.client().card_status(0).unwrap();
    let console = st.devices.iter().find(|x| x.kind == "console").unwrap();
    assert!(console.counters["ring_full"] >= 1, "{console:?}");
    assert_eq!(console.counters["input_bytes"], 0, "{console:?}");
    // The card posts buffers: it gets the queued 64 KiB and the pty's
    // bytes, nothing more, nothing lost.
    card.post_rx(128, 4096);
    card.kick();
    let (mut xs, mut ps) = (0usize, 0usize);
    let start = Instant::now();
    while xs + ps < 65536 + in_pty {
        assert!(start.elapsed() < HANG, "the card got {xs} + {ps} bytes");
        for byte in card.take_rx().concat() {
            match byte {
                b'x' => xs += 1,
                b'p' => ps += 1,
                other => panic!("the card got {other:#x}: nobody typed it"),
            }
        }
        std::thread::yield_now();
    }
    assert_eq!((xs, ps), (65536, in_pty));
    let want = (65536 + in_pty) as u64;
    let console = d.device_status(0, "console", |c| c.counters["input_bytes"] >= want);
    assert_eq!(console.counters["input_bytes"], want, "{console:?}");
    drop(card);
    assert_eq!(d.stop(), 0);
}
