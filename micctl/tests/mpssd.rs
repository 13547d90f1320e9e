//! micctl against a running mpssd: the views of `status` and `info`,
//! `events`, `crash list` and `crash show`, and what a stopped mpssd costs.
//!
//! mpssd runs as a process of its own: this test binary run again, whose
//! `mpssd_process_child` calls mpssd's `main` (its binary is that one call
//! over the library), on an in-process micemu fleet. It is ready when it
//! sends READY=1 on a notification socket of the test's; everything after
//! that is waited for on micctl's own output lines, on its `--wait`s, or by
//! re-reading mpssd's status until a deadline. No sleeps.

mod common;

use std::path::Path;
use std::process::Child;
use std::sync::mpsc::Receiver;
use std::time::Instant;

use common::mpssd::{FAST_CRASH, Mpssd};
use common::{Fleet, HANG, Run, lines_of, pretty, read_until, run_all, validated};
use micemu::Fault;
use serde_json::Value;

/// The body of [`Mpssd`]'s child (see [`common::mpssd::child_main`]).
#[test]
#[ignore = "the child process of Mpssd; runs only when one starts it"]
fn mpssd_process_child() {
    common::mpssd::child_main();
}

/// Re-reads mpssd's status (through micctl) until `pred` holds of it.
fn until_status(f: &Fleet, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + HANG;
    loop {
        let v = f.run(&["status", "--json"]).json();
        if pred(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "never {what}: {}", pretty(&v));
    }
}

/// Filters for mpssd's facts that change from run to run.
fn settings(f: &Fleet) -> insta::Settings {
    let mut s = f.settings();
    s.add_filter(r"pid \d+", "pid [PID]");
    s.add_filter(r#""pid": \d+"#, r#""pid": "[PID]""#);
    s.add_filter(
        r#""(\w+_ms|uptime_secs|in_state_secs)": [0-9.]+"#,
        r#""$1": "[N]""#,
    );
    s.add_filter(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", "[TIME]");
    s.add_filter(r"mic(\d+)-\d{8}T\d{6}\.\d{3}Z", "mic$1-[STAMP]");
    s.add_filter(env!("CARGO_PKG_VERSION"), "[VERSION]");
    // Connections of earlier micctl runs may not be closed yet.
    s.add_filter(r"\d+ clients?\b", "[N] client(s)");
    s.add_filter(r#""clients": \d+"#, r#""clients": "[N]""#);
    s
}

/// A micctl process whose stdout lines arrive as they are printed.
fn spawn(f: &Fleet, args: &[&str]) -> (Child, Receiver<String>) {
    let mut child = f.spawn(args);
    let rx = lines_of(&mut child);
    (child, rx)
}

/// Waits (within [`HANG`]) for a child to exit; its code and what it
/// said on stderr.
fn exit_of(child: Child) -> (i32, String) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = rx.recv_timeout(HANG).expect("micctl did not exit").unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A stream's first line: it is live from then on.
fn live(rx: &Receiver<String>) -> String {
    read_until(rx, |_| true).pop().unwrap()
}

#[test]
fn without_mpssd_status_and_info_say_so_and_events_has_its_code() {
    let f = Fleet::start(1);
    let socket = f.root().join("run/mpssd/control.sock");
    let r = f.run(&["status"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout
            .contains(&format!("mpssd: not running (no {})", socket.display())),
        "{}",
        r.stdout
    );
    let v = f.run(&["status", "--json"]).json();
    assert_eq!(v["mpssd"]["state"], "not-running");
    assert_eq!(v["cards"][0]["supervision"], Value::Null);
    let v = f.run(&["info", "mic0", "--json"]).json();
    assert_eq!(v["mpssd"]["state"], "not-running");
    assert_eq!(v["card"]["supervision"], Value::Null);
    let r = f.run(&["info", "mic0"]);
    assert_eq!(r.code, 0);
    assert!(
        r.stdout
            .ends_with(&format!("mpssd: not running (no {})\n", socket.display())),
        "{}",
        r.stdout
    );

    // events needs mpssd: exit 10, said plainly, and as JSON for --json.
    let r = f.run(&["events"]);
    assert_eq!(r.code, 10, "{}", r.both());
    assert!(r.stderr.contains("mpssd is not running (no "), "{}", r.stderr);
    let r = f.run(&["events", "--json"]);
    assert_eq!(r.code, 10);
    let rec = r.json();
    assert_eq!(rec["type"], "error");
    assert_eq!(rec["error"]["kind"], "mpssd-absent");

    // A socket left behind by an mpssd that died: nothing listens.
    std::fs::create_dir_all(socket.parent().unwrap()).unwrap();
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let r = f.run(&["status"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains(" listening)"), "{}", r.stdout);
}

#[test]
fn status_and_info_show_mpssds_view() {
    let f = Fleet::start(2);
    let mut d = Mpssd::start(f.root(), FAST_CRASH);
    let r = f.run(&["boot", "mic0", "--wait", "-t", "10s"]);
    assert_eq!(r.code, 0, "{}", r.both());
    let v = until_status(&f, "mic0 running, its devices up", |v| {
        let s = &v["cards"][0]["supervision"];
        s["supervisor"] == "running"
            && s["devices"]
                .as_array()
                .is_some_and(|d| !d.is_empty() && d.iter().all(|d| d["state"] == "up"))
    });
    assert_eq!(v["mpssd"]["state"], "running");
    assert_eq!(v["mpssd"]["cards"], serde_json::json!(["mic0", "mic1"]));
    assert_eq!(v["cards"][1]["supervision"]["supervisor"], "idle");
    assert_eq!(v["cards"][0]["supervision"]["adopted"], false);
    settings(&f).bind(|| {
        let r = f.run(&["status"]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        insta::assert_snapshot!("status_with_mpssd", r.both());
        let r = f.run(&["info", "mic0"]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        let section = &r.stdout[r.stdout.find("\nmpssd ").unwrap() + 1..];
        // The devices' lines carry ptys and counters that move: the
        // snapshot ends before them, and they are checked by their shape.
        let (head, devices) = section.split_at(section.find("  device ").unwrap_or(section.len()));
        insta::assert_snapshot!("info_with_mpssd", head);
        for kind in ["console", "net"] {
            let line = devices
                .lines()
                .find(|l| l.trim_start().starts_with(&format!("device {kind} ")))
                .unwrap_or_else(|| panic!("no {kind} device in:\n{devices}"));
            assert!(line.contains(" up "), "{line}");
        }
        let mut v = f.run(&["info", "mic0", "--json"]).json();
        // The devices' targets (ptys, TAPs) and counters move: their kinds
        // and states are the snapshot's, the rest is checked to be there.
        let devices = v["card"]["supervision"]["devices"].take();
        let devices: Vec<serde_json::Value> = devices
            .as_array()
            .expect("devices")
            .iter()
            .map(|d| {
                assert!(d["target"].is_string() && d["counters"].is_object(), "{d}");
                serde_json::json!({ "kind": d["kind"], "state": d["state"] })
            })
            .collect();
        v["card"]["supervision"]["devices"] = devices.into();
        insta::assert_snapshot!(
            "info_with_mpssd_json",
            pretty(&serde_json::json!({ "mpssd": v["mpssd"], "supervision": v["card"]["supervision"] }))
        );
    });
    // Only the cards asked for.
    let r = f.run(&["status", "mic1"]);
    assert!(r.stdout.contains("mic1  idle"), "{}", r.stdout);
    assert!(!r.stdout.contains("mic0  running"), "{}", r.stdout);
    assert_eq!(d.stop(), 0);
}

/// `events` shows a boot and then a crash, in mpssd's order, with the
/// bundle; `crash list` and `crash show` read that bundle, with mpssd and
/// after it stopped; the stream ends when mpssd does.
#[test]
#[expect(clippy::too_many_lines, reason = "one scenario, start to end")]
fn events_show_a_boot_and_a_crash_and_its_bundle() {
    let f = Fleet::start(2);
    let mut d = Mpssd::start(f.root(), FAST_CRASH);
    let (json_child, json) = spawn(&f, &["events", "--json"]);
    let (human_child, human) = spawn(&f, &["events", "mic0"]);
    let start = validated(&live(&json));
    assert_eq!(start["type"], "start");
    assert_eq!(start["cards"][0]["supervisor"], "idle");
    let first = live(&human);
    assert!(
        first.starts_with("-- mpssd ") && first.ends_with("): mic0 idle --"),
        "{first}"
    );

    let r = f.run(&["boot", "mic0", "--wait", "-t", "10s"]);
    assert_eq!(r.code, 0, "{}", r.both());
    f.inject(0, &Fault::Panic("views: crash me".into()));
    let is_running_again = |l: &str| {
        let v: Value = serde_json::from_str(l).unwrap();
        v["kind"] == "supervisor" && v["to"] == "running" && v["from"] == "booting"
    };
    let lines = read_until(&json, is_running_again);
    let events: Vec<Value> = lines.iter().map(|l| validated(l)).collect();
    assert!(events.iter().all(|e| e["type"] == "event"));
    let pos = |what: &str, pred: &dyn Fn(&Value) -> bool| {
        events
            .iter()
            .position(pred)
            .unwrap_or_else(|| panic!("no {what} in {}", lines.join("\n")))
    };
    let booted = pos("boot by the operator", &|e| {
        e["card"] == "mic0" && e["kind"] == "supervisor" && e["from"] == "idle" && e["to"] == "running"
    });
    let status = pos("shutdown status", &|e| {
        e["kind"] == "shutdown_status" && e["status"] == "crashed"
    });
    let crash = pos("crash", &|e| e["kind"] == "crash");
    let reset = pos("reset", &|e| e["kind"] == "reset" && e["outcome"] == "offline");
    let reboot = pos("reboot", &|e| {
        e["kind"] == "boot" && e["reason"] == "restart after a crash"
    });
    assert!(
        booted < status && status < crash && crash < reset && reset < reboot,
        "out of order: {}",
        lines.join("\n")
    );
    let bundle = events[crash]["bundle"].as_str().unwrap().to_owned();
    assert!(
        events
            .windows(2)
            .all(|w| w[0]["ts_ms"].as_u64() <= w[1]["ts_ms"].as_u64()),
        "times go back"
    );
    // The human stream says the same in mpssd's words.
    let seen = read_until(&human, |l| {
        l.ends_with("mic0: booting -> running: booted (restart after a crash)")
    });
    let text = seen.join("\n");
    assert!(
        text.contains("mic0: idle -> running: booted by an operator"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "mic0: card crashed (1 in the crash-loop window); forensics: {bundle}"
        )),
        "{text}"
    );
    // mic1's events are left out; daemon-wide ones (a configuration
    // reload noticed late, a lag) concern every card and may come too.
    assert!(seen.iter().all(|l| !l.contains(" mic1")), "only mic0's: {text}");
    assert!(
        seen.iter().filter(|l| l.contains(" mic0: ")).count() >= 4,
        "mic0's: {text}"
    );

    // The bundle, by its card and by its path.
    let name = Path::new(&bundle)
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let r = f.run(&["crash", "list"]);
    assert_eq!(r.code, 0, "{}", r.both());
    let row = r.stdout.lines().nth(1).unwrap();
    assert!(row.starts_with(&format!("{name}  mic0  ")), "{}", r.stdout);
    assert!(row.contains("crashed"), "{row}");
    assert!(
        row.ends_with("Kernel panic - not syncing: views: crash me"),
        "{row}"
    );
    let list = f.run(&["crash", "list", "--json"]).json();
    assert_eq!(list["bundles"][0]["path"], bundle.as_str());
    assert_eq!(list["bundles"][0]["shutdown_status"], "crashed");
    let show = f.run(&["crash", "show", "mic0:latest", "--json"]).json();
    assert_eq!(show["bundle"]["bundle"], name.as_str());
    assert_eq!(
        show["bundle"]["panic"],
        "Kernel panic - not syncing: views: crash me"
    );
    assert!(
        show["bundle"]["card_log"].as_array().unwrap().iter().any(|l| l
            .as_str()
            .unwrap()
            .ends_with("Kernel panic - not syncing: views: crash me")),
        "{}",
        pretty(&show)
    );
    assert!(
        show["bundle"]["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l.as_str().unwrap().contains("shutdown status crashed")),
        "{}",
        pretty(&show)
    );
    let r = f.run(&["crash", "show", &bundle]);
    assert_eq!(r.code, 0, "{}", r.both());
    assert!(
        r.stdout
            .starts_with(&format!("{name}\n  path              {bundle}\n")),
        "{}",
        r.stdout
    );
    let r = f.run(&["crash", "show", &name, "--file", "shutdown_status"]);
    assert_eq!((r.code, r.stdout.as_str()), (0, "crashed\n"));

    // The supervisor's view names the same bundle.
    let v = f.run(&["status", "--json"]).json();
    assert_eq!(
        v["cards"][0]["supervision"]["last_crash"]["bundle"],
        bundle.as_str()
    );
    assert_eq!(v["cards"][0]["supervision"]["crashes"], 1);

    // mpssd stops: each stream ends, exit 10, saying so.
    assert_eq!(d.stop(), 0);
    let tail = read_until(&json, |l| l.contains(r#""type":"end""#));
    let end = validated(tail.last().unwrap());
    assert_eq!(end["reason"], "mpssd-stopped");
    assert_eq!(end["exit_code"], 10);
    let (code, err) = exit_of(json_child);
    assert_eq!(code, 10, "{err}");
    let (code, err) = exit_of(human_child);
    assert_eq!(code, 10, "{err}");
    assert!(err.contains("mpssd stopped: the event stream ended"), "{err}");

    // The bundles need no mpssd.
    let r = f.run(&["crash", "list", "mic0"]);
    assert_eq!(r.code, 0, "{}", r.both());
    assert!(r.stdout.contains(&name));
    let r = f.run(&["crash", "list", "mic1"]);
    assert_eq!(r.code, 0);
    assert!(
        r.stdout.starts_with("no crash bundles of mic1 in "),
        "{}",
        r.stdout
    );
    let r = f.run(&["crash", "show", "mic1"]);
    assert_eq!(r.code, 11, "{}", r.both());
    assert!(r.stderr.contains("mic1 has no crash bundles in "), "{}", r.stderr);
    let r = f.run(&["crash", "show", "mic1-x", "--json"]);
    assert_eq!(r.code, 2, "{}", r.both());
    assert_eq!(r.json()["error"]["kind"], "usage");
    let r = f.run(&["crash", "show", "mic0-20200101T000000.000Z"]);
    assert_eq!(r.code, 11, "{}", r.both());
}

/// `--count` and `--timeout`: the stream ends when it has what it asked
/// for, or with exit 6 when that did not come in time.
#[test]
fn events_count_and_timeout() {
    let f = Fleet::start(1);
    let mut d = Mpssd::start(f.root(), FAST_CRASH);
    let r = f.run(&[
        "events",
        "--kind",
        "crash",
        "-n",
        "1",
        "--timeout",
        "300ms",
        "--json",
    ]);
    assert_eq!(r.code, 6, "{}", r.both());
    let recs = r.json_lines();
    assert_eq!(recs[0]["type"], "start");
    let end = &recs[1];
    assert_eq!(
        (end["reason"].as_str(), end["events"].as_u64()),
        (Some("timeout"), Some(0))
    );
    assert!(r.stderr.contains("0 of 1 events within 300ms"), "{}", r.stderr);
    let r = f.run(&["events", "--duration", "200ms"]);
    assert_eq!(r.code, 0, "{}", r.both());
    // Two supervisor changes of a boot, nothing more.
    let (child, rx) = spawn(&f, &["events", "--kind", "supervisor", "-n", "1"]);
    live(&rx);
    let r = f.run(&["boot", "mic0", "--wait", "-t", "10s"]);
    assert_eq!(r.code, 0, "{}", r.both());
    let lines = read_until(&rx, |_| true);
    assert!(
        lines[0].ends_with("mic0: idle -> running: booted by an operator"),
        "{lines:?}"
    );
    assert_eq!(exit_of(child).0, 0);
    let r = f.run(&["events", "mic7"]);
    assert_eq!(r.code, 4, "{}", r.both());
    assert!(r.stderr.contains("mic7"), "{}", r.stderr);
    assert_eq!(d.stop(), 0);
}

/// A stopped mpssd accepts connections (the kernel queues them) and
/// answers nothing: status, info and events end at their deadline with
/// exit 6, the card table still shown.
#[test]
fn a_stopped_mpssd_costs_status_its_deadline() {
    let f = Fleet::start(1);
    let mut d = Mpssd::start(f.root(), "");
    d.freeze();
    let runs = run_all(
        f.root(),
        &[
            &["status"],
            &["status", "--json"],
            &["status", "--timeout", "500ms"],
            &["info", "mic0"],
            &["events"],
        ],
    );
    let socket = f.root().join("run/mpssd/control.sock");
    let said = |r: &Run, within: &str| {
        assert_eq!(r.code, 6, "{}", r.both());
        let msg = format!("mpssd did not answer within {within} on {}", socket.display());
        assert!(r.stderr.contains(&msg), "{msg:?} not in {}", r.stderr);
    };
    said(&runs[0], "2s");
    assert!(runs[0].stdout.starts_with("CARD  STATE"), "{}", runs[0].stdout);
    assert!(
        runs[0].stdout.contains("\nmpssd: did not answer within 2s"),
        "{}",
        runs[0].stdout
    );
    said(&runs[1], "2s");
    let v = runs[1].json();
    assert_eq!(v["mpssd"]["state"], "unreachable");
    assert_eq!(v["mpssd"]["error"]["kind"], "timeout");
    assert_eq!(v["cards"][0]["state"], "offline");
    said(&runs[2], "500ms");
    said(&runs[3], "2s");
    assert!(runs[3].stdout.contains("post_code"), "{}", runs[3].stdout);
    said(&runs[4], "2s");
    assert_eq!(d.stop(), 0);
}
