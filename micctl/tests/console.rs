//! `micctl console` end to end: micemu's card OS booted in this process,
//! mpssd as a process of its own (this test binary run again, calling
//! mpssd's `main`; in a network namespace of the test's own, for its TAP),
//! micctl as the operator runs it: on a pty that is its controlling
//! terminal (raw mode, the escape key, SIGWINCH), or with stdin a pipe.
//!
//! No sleeps: mpssd is ready when it sends READY=1 on the test's
//! notification socket; the console when a broker client sees it up;
//! everything else is read from the pty, micctl's output or the card's
//! log until it arrives, bounded by [`HANG`].

mod common;

use std::io::Write as _;
use std::path::Path;
use std::process::Stdio;
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use common::console::{Tty, assert_raw, console_up, marker, micctl, wait_card_log, wait_child};
use common::mpssd::{FAST_CRASH, Mpssd};
use common::{Fleet, HANG, lines_of, validated};
use libmic::{BootRequest, MicRoot};
use micemu::Fault;
use nix::sys::termios::{self, LocalFlags};

/// The body of [`Mpssd`]'s child (see [`common::mpssd::child_main`]).
#[test]
#[ignore = "the child process of Mpssd; runs only when one starts it"]
fn mpssd_process_child() {
    common::mpssd::child_main();
}

fn booted() -> (Fleet, Mpssd) {
    common::console::booted(FAST_CRASH)
}

#[test]
fn attach_type_resize_and_detach_with_the_escape_key() {
    let (fleet, _d) = booted();
    let before = {
        let pty = nix::pty::openpty(None, None).unwrap();
        termios::tcgetattr(&pty.slave).unwrap()
    };
    let mut tty = Tty::spawn(fleet.root(), &[]);
    assert_eq!(tty.termios(), before, "a fresh pty's modes");
    let line = tty.wait_for("ctrl-] detaches");
    assert!(
        line.contains("micctl: attached to mic0's console read-write, pty /dev/pts/"),
        "{line}"
    );
    assert_raw(&tty.termios());
    // The window's size reached the card at attach.
    wait_card_log(&fleet, "hvc0: console size 132x43");
    tty.type_(b"uname -a\r");
    tty.wait_for("Linux mic0 3.10.0-micemu #1 SMP");
    tty.wait_for("k1om GNU/Linux\r\nroot@mic0:~# ");
    // SIGWINCH: the new size goes to the card.
    tty.resize(100, 30);
    wait_card_log(&fleet, "hvc0: console size 100x30");
    // ctrl-C is a key for the card, not a signal for micctl.
    tty.type_(b"echo never\x03");
    tty.wait_for("^C");
    tty.type_(b"\x1d");
    tty.wait_for("micctl: detached from mic0's console\r\n");
    assert_eq!(tty.exit_code(), 0, "{}", tty.text());
    assert_eq!(tty.termios(), before, "the terminal's modes came back");
}

#[test]
fn a_viewer_sees_the_writer_and_cannot_type_and_force_takes_over() {
    let (fleet, _d) = booted();
    let mut writer = Tty::spawn(fleet.root(), &["--escape", "ctrl-t"]);
    writer.wait_for("ctrl-t detaches");
    let mut viewer = Tty::spawn(fleet.root(), &["--ro"]);
    viewer.wait_for("attached to mic0's console read-only (\"micctl console on /dev/pts/");
    // A second operator without --ro gets read-only too, and is told who
    // holds the console.
    let mut second = Tty::spawn(fleet.root(), &[]);
    let line = second.wait_for("ctrl-] detaches");
    assert!(
        line.contains("read-only: \"micctl console on /dev/pts/"),
        "{line}"
    );
    assert!(line.contains("(--force takes it), pty /dev/pts/"), "{line}");
    assert!(line.contains("holds it read-write for "), "{line}");
    // The viewers see what the writer types and the card answers.
    let (mark, answer) = marker();
    writer.type_(mark.as_bytes());
    for t in [&mut writer, &mut viewer, &mut second] {
        t.wait_for(&answer);
    }
    // The viewer's keys are not typed: said once, and the card never gets them.
    viewer.type_(b"zz");
    viewer.wait_for("micctl: read-only: keystrokes are not sent; ctrl-] detaches\r\n");
    viewer.type_(b"zz");
    let (mark, answer) = marker();
    writer.type_(mark.as_bytes());
    let seen = writer.wait_for(&answer);
    assert!(
        !seen.contains("zz"),
        "the viewer's keys reached the card: {seen:?}"
    );
    assert_eq!(
        viewer.text().matches("keystrokes are not sent").count(),
        1,
        "said once: {}",
        viewer.text()
    );
    // --force takes the console: the writer is told who took it and ends
    // (its terminal restored), the taker types.
    let before = writer.termios();
    assert_raw(&before);
    let mut taker = Tty::spawn(fleet.root(), &["--force"]);
    let line = taker.wait_for("ctrl-] detaches");
    assert!(
        line.contains("read-write, taken from \"micctl console on /dev/pts/"),
        "{line}"
    );
    let end = writer.wait_for("detached\r\n");
    assert!(
        end.contains("micctl: error: \"micctl console on /dev/pts/"),
        "{end}"
    );
    assert!(
        end.contains("took mic0's console read-write (forced); detached"),
        "{end}"
    );
    assert_eq!(writer.exit_code(), 14, "{}", writer.text());
    assert!(
        writer
            .termios()
            .local_flags
            .contains(LocalFlags::ECHO | LocalFlags::ICANON),
        "the writer's terminal came back"
    );
    let (mark, answer) = marker();
    taker.type_(mark.as_bytes());
    viewer.wait_for(&answer);
    for t in [&mut viewer, &mut second, &mut taker] {
        t.type_(b"\x1d");
        t.wait_for("micctl: detached from mic0's console");
        assert_eq!(t.exit_code(), 0, "{}", t.text());
    }
}

#[test]
fn the_card_crashing_ends_the_session_with_the_card_down_code() {
    let (fleet, _d) = booted();
    let mut tty = Tty::spawn(fleet.root(), &[]);
    tty.wait_for("ctrl-] detaches");
    fleet
        .inst
        .inject(0, &Fault::Panic("console test".into()))
        .unwrap();
    let end = tty.wait_for("detached\r\n");
    assert!(
        end.contains("micctl: error: mic0 went down (") && end.contains("shutdown status crashed)"),
        "{end}"
    );
    assert_eq!(tty.exit_code(), 12, "{}", tty.text());
    assert!(tty.termios().local_flags.contains(LocalFlags::ECHO), "restored");
}

#[test]
fn a_signal_ends_the_session_with_the_terminal_restored() {
    let (fleet, _d) = booted();
    let mut tty = Tty::spawn(fleet.root(), &[]);
    tty.wait_for("ctrl-] detaches");
    assert_raw(&tty.termios());
    let pid = nix::unistd::Pid::from_raw(tty.child.as_ref().unwrap().id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    tty.wait_for("\nmicctl: SIGTERM; detached\r\n");
    // It dies of the signal, as an uncaught SIGTERM would end it.
    assert_eq!(tty.exit_code(), 128 + libc::SIGTERM, "{}", tty.text());
    assert!(
        tty.termios()
            .local_flags
            .contains(LocalFlags::ECHO | LocalFlags::ICANON),
        "restored"
    );
}

#[test]
fn follow_stays_attached_through_a_reboot_until_the_card_halts() {
    let (fleet, _d) = booted();
    let mut tty = Tty::spawn(fleet.root(), &["--follow"]);
    tty.wait_for("ctrl-] detaches");
    tty.type_(b"reboot\r");
    tty.wait_for("micctl: mic0's console went down (");
    tty.wait_for("micctl: mic0's console is up (");
    // The card booted again; its shell answers the same session.
    fleet.card(0).wait_os_up(Some(HANG)).unwrap();
    let (mark, answer) = marker();
    tty.type_(mark.as_bytes());
    tty.wait_for(&answer);
    tty.type_(b"halt\r");
    let end = tty.wait_for("detached\r\n");
    assert!(end.contains("micctl: error: mic0 went down ("), "{end}");
    assert_eq!(tty.exit_code(), 12, "{}", tty.text());
}

/// micctl with stdin a pipe holding `input`: its exit code, stdout, stderr.
fn script(root: &Path, input: &str, args: &[&str]) -> (i32, String, String) {
    let mut child = micctl(root, args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = read_all(child.stdout.take().unwrap());
    let err = read_all(child.stderr.take().unwrap());
    let code = wait_child(child, || "(a script)".to_owned());
    let text = |rx: Receiver<Vec<u8>>| String::from_utf8(rx.recv_timeout(HANG).unwrap()).unwrap();
    (code, text(out), text(err))
}

fn read_all(mut r: impl std::io::Read + Send + 'static) -> Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = r.read_to_end(&mut v);
        let _ = tx.send(v);
    });
    rx
}

#[test]
fn a_script_on_stdin_gets_its_answer() {
    let (fleet, d) = booted();
    let root = fleet.root();
    // --until: ends as soon as the answer is there.
    let (code, out, err) = script(root, "uname -a\n", &["--until", "GNU/Linux", "--timeout", "20s"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("Linux mic0 3.10.0-micemu #1 SMP"), "{out}");
    assert_eq!(err, "", "a script that got its answer is quiet");
    // Without --until, the answer is over when the card is quiet for --idle.
    let (mark, answer) = marker();
    let (code, out, err) = script(root, &format!("uname -n\n{mark}"), &["--idle", "300ms"]);
    assert_eq!(code, 0, "{out}\n{err}");
    // (The card echoes the second line as it is typed, before the first's answer.)
    assert!(
        out.starts_with("uname -n\r\n") && out.contains("\r\nmic0\r\n"),
        "{out}"
    );
    assert!(out.contains(&answer), "{out}");
    // Text that never comes: exit 6 at --timeout.
    let (code, _, err) = script(
        root,
        "uname -n\n",
        &["--until", "no such text", "--timeout", "1s"],
    );
    assert_eq!(code, 6, "{err}");
    assert_eq!(
        err,
        "micctl: error: mic0 did not print \"no such text\" within 1.0s\n"
    );
    // JSON Lines, each record valid by the schema; the replay of the
    // last 2 lines (the previous answer and the prompt) first.
    let (code, out, err) = script(
        root,
        "uname -m\n",
        &["--json", "--until", "k1om\r\n", "--replay", "2"],
    );
    assert_eq!(code, 0, "{err}");
    let records: Vec<serde_json::Value> = out.lines().map(validated).collect();
    assert_eq!(records[0]["type"], "console_attached", "{out}");
    assert_eq!(records[0]["mode"], "read_write", "{out}");
    let text = |replay: bool| -> String {
        records
            .iter()
            .filter(|r| r["type"] == "console_output" && r["replay"] == replay)
            .map(|r| r["data"].as_str().unwrap())
            .collect()
    };
    assert_eq!(text(true), "mic0\r\nroot@mic0:~# ", "{out}");
    assert!(text(false).starts_with("uname -m\r\nk1om\r\n"), "{out}");
    let last = records.last().unwrap();
    assert_eq!(
        (&last["type"], &last["end"], &last["exit_code"]),
        (&"console_end".into(), &"until".into(), &0.into()),
        "{out}"
    );
    // A script cannot type while an operator holds the console.
    let mut tty = Tty::spawn(root, &[]);
    tty.wait_for("ctrl-] detaches");
    let (code, _, err) = script(root, "uname\n", &["--timeout", "5s"]);
    assert_eq!(code, 14, "{err}");
    assert!(
        err.starts_with("micctl: error: mic0's console is held read-write by \"micctl console on /dev/pts/"),
        "{err}"
    );
    // Watching with --ro is fine meanwhile: JSON Lines, valid by the
    // schema, from the attach to the end.
    let (mark, answer) = marker();
    let mut watcher = micctl(root, &["--ro", "--until", &answer, "--timeout", "20s"])
        .arg("--json")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = lines_of(&mut watcher);
    let first = validated(&lines.recv_timeout(HANG).unwrap());
    assert_eq!(first["type"], "console_attached", "{first}");
    assert_eq!(first["mode"], "read_only");
    assert_eq!(first["escape"], serde_json::Value::Null);
    assert!(
        first["writer"]["name"]
            .as_str()
            .unwrap()
            .starts_with("micctl console on /dev/pts/"),
        "{first}"
    );
    tty.type_(mark.as_bytes());
    let mut text = String::new();
    let last = loop {
        let v = validated(&lines.recv_timeout(HANG).unwrap());
        match v["type"].as_str() {
            Some("console_output") => text.push_str(v["data"].as_str().unwrap()),
            Some("console_end") => break v,
            _ => {}
        }
    };
    assert!(text.contains(&answer), "{text}");
    assert_eq!(last["end"], "until");
    assert_eq!(last["exit_code"], 0);
    assert_eq!(wait_child(watcher, || "(the watcher)".to_owned()), 0);
    let _ = d;
}

/// A card whose boot hangs before its console comes up: a script says it
/// waits, and --timeout ends the wait (exit 6).
#[test]
fn a_script_waits_for_the_console_within_its_timeout() {
    let fleet = Fleet::start(1);
    let _d = Mpssd::start(fleet.root(), FAST_CRASH);
    let card = fleet.card(0);
    fleet.inject(0, &Fault::HangBoot);
    let map = MicRoot::new(fleet.root()).system_map();
    card.boot_with(&BootRequest::defaults_for(&card), Some(&map))
        .unwrap();
    let (code, out, err) = script(fleet.root(), "uname\n", &["--timeout", "1s"]);
    assert_eq!(code, 6, "{out}\n{err}");
    assert_eq!(
        err,
        "micctl: mic0's console is not up yet; waiting for it (--timeout bounds the wait)\n\
         micctl: error: gave up after 1.0s (--timeout)\n"
    );
    assert_eq!(out, "", "nothing was typed, nothing came");
}

#[test]
fn without_mpssd_or_with_it_stopping() {
    let fleet = Fleet::start(1);
    let card = fleet.card(0);
    // Not running: one line, at once.
    let start = Instant::now();
    let out = micctl(fleet.root(), &[]).stdin(Stdio::null()).output().unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(10), "{err}");
    let line = format!(
        "micctl: error: mpssd is not running (no {}/run/mpssd/control.sock)",
        fleet.root().display()
    );
    assert!(err.starts_with(&line) && err.lines().count() == 1, "{err}");
    assert!(start.elapsed() < Duration::from_secs(5), "{:?}", start.elapsed());
    // An offline card has no console.
    let mut d = Mpssd::start(fleet.root(), FAST_CRASH);
    let out = micctl(fleet.root(), &[]).stdin(Stdio::null()).output().unwrap();
    assert_eq!(out.status.code(), Some(12));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        "micctl: error: mic0 is offline: its console is down (boot it first: micctl boot mic0)\n"
    );
    // mpssd stopping ends an attached session.
    let map = MicRoot::new(fleet.root()).system_map();
    card.boot_with(&BootRequest::defaults_for(&card), Some(&map))
        .unwrap();
    card.wait_os_up(Some(HANG)).unwrap();
    console_up(&d);
    // A stopped mpssd (its socket takes the connection, nobody answers)
    // costs the deadline, then exit 6.
    d.freeze();
    let start = Instant::now();
    let out = micctl(fleet.root(), &["--timeout", "1s"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(6));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        format!(
            "micctl: error: mpssd did not answer within 1s on {}/run/mpssd/control.sock\n",
            fleet.root().display()
        )
    );
    assert!(start.elapsed() < Duration::from_secs(5), "{:?}", start.elapsed());
    d.thaw();
    let mut tty = Tty::spawn(fleet.root(), &[]);
    tty.wait_for("ctrl-] detaches");
    assert_eq!(d.stop(), 0);
    let end = tty.wait_for("detached\r\n");
    assert!(end.contains("micctl: error: mpssd stopped ("), "{end}");
    assert_eq!(tty.exit_code(), 10, "{}", tty.text());
}

/// The frames a fake mpssd sends, given the id of the request answered.
type Script = Box<dyn Fn(Option<u64>) -> Vec<mpssd_proto::ServerFrame> + Send>;

/// An mpssd of the test's own on the control socket: each connection, in
/// turn, answers its first request with the next of `scripts` (the frames
/// it sends, given the request's id), then waits for the client to hang up.
fn fake_mpssd(root: &Path, scripts: Vec<Script>) -> std::thread::JoinHandle<Vec<mpssd_proto::Request>> {
    use std::io::{BufRead as _, BufReader, Read as _};
    let path = MicRoot::new(root).mpssd_socket();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    std::thread::spawn(move || {
        let mut asked = Vec::new();
        for script in scripts {
            let (mut conn, _) = listener.accept().unwrap();
            conn.set_read_timeout(Some(HANG)).unwrap();
            let mut line = Vec::new();
            BufReader::new(&conn).read_until(b'\n', &mut line).unwrap();
            let frame = mpssd_proto::decode_request(&line).unwrap();
            for answer in script(frame.id) {
                conn.write_all(&mpssd_proto::encode(&answer)).unwrap();
            }
            asked.push(frame.request);
            // Until micctl hangs up (what it sends meanwhile is not looked at).
            let _ = std::io::copy(&mut (&conn).take(1 << 20), &mut std::io::sink());
        }
        asked
    })
}

#[test]
fn a_console_mpssd_does_not_have_or_removes_ends_with_the_console_gone_code() {
    use mpssd_proto::{
        ConsoleAttached, ConsoleEvent, ConsoleFrame, ConsoleMode, EndReason, ErrorBody, ErrorCode, Response,
        ServerBody, ServerFrame, VERSION,
    };
    // mpssd answers as it does for a card whose console it could not make,
    // then as it does when it drops a card's devices under an attachment.
    let fleet = Fleet::start(1);
    let card = fleet.card(0);
    let map = MicRoot::new(fleet.root()).system_map();
    card.boot_with(&BootRequest::defaults_for(&card), Some(&map))
        .unwrap();
    card.wait_os_up(Some(HANG)).unwrap();
    let server = fake_mpssd(
        fleet.root(),
        vec![
            Box::new(|id| {
                vec![ServerFrame::error(
                    id,
                    ErrorBody::new(ErrorCode::NotAvailable, "mic0 has no console".to_owned()),
                )]
            }),
            Box::new(|id| {
                vec![
                    ServerFrame::ok(
                        id,
                        Response::ConsoleAttached(ConsoleAttached {
                            card: 0,
                            mode: ConsoleMode::ReadWrite,
                            replay_bytes: 0,
                            pty: None,
                            device_up: true,
                            writer: None,
                            taken_from: None,
                        }),
                    ),
                    ServerFrame {
                        v: VERSION,
                        id: None,
                        body: ServerBody::Console(ConsoleFrame {
                            card: 0,
                            event: ConsoleEvent::Ended {
                                reason: EndReason::ConsoleRemoved,
                                by: None,
                                message: "mic0's console was removed".to_owned(),
                            },
                        }),
                    },
                ]
            }),
        ],
    );
    // Idle and timeout far beyond the test's wait: only the end ends it.
    let long = ["--idle", "0", "--timeout", "60s"];
    let (code, out, err) = script(fleet.root(), "", &long);
    assert_eq!(code, 13, "{out}\n{err}");
    assert!(err.contains("mic0 has no console"), "{err}");
    let (code, out, err) = script(fleet.root(), "", &long);
    assert_eq!(code, 13, "{out}\n{err}");
    assert!(
        err.contains("mic0's console went away: mic0's console was removed; detached"),
        "{err}"
    );
    let asked = server.join().unwrap();
    assert!(
        asked.iter().all(|r| matches!(
            r,
            mpssd_proto::Request::ConsoleAttach {
                card: 0,
                mode: ConsoleMode::ReadWrite,
                ..
            }
        )),
        "{asked:?}"
    );
}
