//! End-to-end tests of the `micctl` binary against live in-process micemu
//! fleets: human and JSON output snapshots (insta, with timestamps, durations
//! and temp paths redacted), exit codes, every JSON output validated against
//! schema/micctl.schema.json, streams, concurrency, bad input.
//!
//! No sleeps as synchronisation: tests wait on micctl's own `--wait`, on
//! libmic waits, or on lines arriving from a child's stdout (with a generous
//! bound that only turns a hang into a failure).

mod common;

use common::{
    BIN, Fleet, HANG, Run, command, lines_of, pretty, read_until, regex_escape, run_all, run_in, sigstop,
    stop, this_test, validated,
};
use libmic::MicState;
use micemu::{Config, Fault, Instance, Timing};
use serde_json::Value;
use std::path::Path;
use std::process::{Child, Command, Stdio};

// ---- tests ---------------------------------------------------------------

#[test]
fn help_documents_exit_codes() {
    let r = run_in(None, &["--help"]);
    assert_eq!(r.code, 0);
    assert!(r.stdout.contains("Exit codes:"), "{}", r.stdout);
    assert!(r.stdout.contains("3  driver absent"));
    insta::assert_snapshot!("help", r.stdout);
}

#[test]
fn status_and_info_of_offline_cards() {
    let f = Fleet::start(2);
    f.settings().bind(|| {
        let r = f.run(&["status"]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        insta::assert_snapshot!("status_offline", r.both());
        insta::assert_snapshot!(
            "status_offline_json",
            pretty(&f.run(&["status", "--json"]).json())
        );
        let r = f.run(&["info", "mic1"]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        insta::assert_snapshot!("info_offline", r.both());
        insta::assert_snapshot!(
            "info_offline_json",
            pretty(&f.run(&["info", "1", "--json"]).json())
        );
    });
}

#[test]
fn boot_status_info_log_shutdown_reset() {
    let f = Fleet::start(2);
    f.settings().bind(|| {
        let r = f.run(&["boot", "mic0", "--wait", "--timeout", "10s"]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        insta::assert_snapshot!("boot_wait", r.both());
        assert_eq!(f.card(0).state().unwrap(), MicState::Online);

        // Idempotent: already online is fine, unless --strict.
        let r = f.run(&["boot", "0"]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        insta::assert_snapshot!("boot_already", r.both());
        let r = f.run(&["boot", "0", "--strict", "--json"]);
        assert_eq!(r.code, 9);
        insta::assert_snapshot!("boot_already_strict_json", pretty(&r.json()));

        // Both cards: one already online, one booted; JSON outcome per card.
        let r = f.run(&["boot", "--json", "--wait", "-t", "10s"]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        insta::assert_snapshot!("boot_all_json", pretty(&r.json()));

        let r = f.run(&["status"]);
        assert_eq!(r.code, 0);
        insta::assert_snapshot!("status_online", r.both());
        let v = f.run(&["status", "--json"]).json();
        assert_eq!(v["cards"][0]["time_in_state"]["source"], "card-log");
        insta::assert_snapshot!("status_online_json", pretty(&v));

        let r = f.run(&["info", "mic0"]);
        insta::assert_snapshot!("info_online", r.both());
        insta::assert_snapshot!(
            "info_online_json",
            pretty(&f.run(&["info", "mic0", "--json"]).json())
        );

        // The card log.
        let r = f.run(&["log", "mic0"]);
        assert_eq!(r.code, 0);
        assert!(r.stdout.contains(libmic::OS_UP_MARKER));
        insta::assert_snapshot!("log", r.both());
        let recs = f.run(&["log", "mic0", "--json"]).json_lines();
        assert!(recs.iter().all(|r| r["type"] == "record"));
        assert!(recs.iter().any(|r| r["text"] == libmic::OS_UP_MARKER));
        f.inject(
            0,
            &Fault::Log {
                level: 3,
                text: "ecc: uncorrectable error".into(),
            },
        );
        f.inject(
            0,
            &Fault::Log {
                level: 4,
                text: "thermal: warm".into(),
            },
        );
        f.inject(
            0,
            &Fault::Log {
                level: 6,
                text: "just info".into(),
            },
        );
        let r = f.run(&["log", "mic0", "--level", "warn", "--time-format", "none"]);
        insta::assert_snapshot!("log_level_warn", r.both());
        let r = f.run(&["log", "mic0", "--level", "3", "--time-format", "none"]);
        assert_eq!(r.stdout, "ecc: uncorrectable error\n");
        let r = f.run(&["log", "mic0", "--since", "0s ago", "--time-format", "none"]);
        assert_eq!(r.stdout, "just info\n");
        let r = f.run(&["log", "mic0", "--since", "1000", "--time-format", "none"]);
        assert_eq!(r.stdout, "");
        let all = f.run(&["log", "mic0", "--since", "0"]).stdout;
        assert_eq!(all, f.run(&["log", "mic0"]).stdout);

        // Shutdown, idempotently.
        let r = f.run(&["shutdown", "mic0", "--wait", "-t", "10s"]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        insta::assert_snapshot!("shutdown_wait", r.both());
        let r = f.run(&["shutdown", "mic0", "--json"]);
        assert_eq!(r.code, 0);
        assert_eq!(r.json()["cards"][0]["outcome"], "already-in-state");

        // Reset both, then again: already offline.
        let r = f.run(&["reset", "mic0-mic1", "--wait", "-t", "10s", "--json"]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        insta::assert_snapshot!("reset_wait_json", pretty(&r.json()));
        let r = f.run(&["reset", "all"]);
        assert_eq!(r.code, 0);
        insta::assert_snapshot!("reset_already", r.both());
        let r = f.run(&["shutdown", "0"]);
        assert_eq!(r.code, 0);
        assert_eq!(r.stdout, "mic0: already offline\n");
        let r = f.run(&["log", "mic0"]);
        assert_eq!(r.code, 0);
        insta::assert_snapshot!("log_offline", r.both());
    });
}

#[test]
fn reboot_and_wait() {
    let f = Fleet::start(2);
    f.settings().bind(|| {
        // Offline cards just boot; --wait waits for the OS.
        let r = f.run(&["reboot", "0,1", "--wait", "-t", "10s"]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        insta::assert_snapshot!("reboot_offline", r.both());
        // Online cards go through shutdown and reset.
        let r = f.run(&["reboot", "mic1", "--wait", "-t", "10s", "--json"]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        insta::assert_snapshot!("reboot_online_json", pretty(&r.json()));
        assert!(f.run(&["log", "1"]).stdout.contains(libmic::OS_UP_MARKER));

        // wait: already there.
        let r = f.run(&["wait", "--state", "online", "-t", "5s"]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        insta::assert_snapshot!("wait_already", r.both());
        // wait: JSON Lines with transitions, then a result.
        f.card(0).reset().unwrap();
        let r = f.run(&["wait", "0", "--state", "offline", "-t", "10s", "--json"]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        let recs = r.json_lines();
        let last = recs.last().unwrap();
        assert_eq!(last["type"], "result");
        assert_eq!(last["cards"][0]["state"], "offline");
        // wait: timeout.
        let r = f.run(&["wait", "0", "--state", "online", "-t", "300ms"]);
        assert_eq!(r.code, 6);
        insta::assert_snapshot!("wait_timeout", r.both());
        // Partial: one card there, one not.
        let r = f.run(&["wait", "--state", "online", "-t", "200ms", "--json"]);
        assert_eq!(r.code, 7);
        insta::assert_snapshot!("wait_partial_json", pretty(r.json_lines().last().unwrap()));
    });
}

#[test]
fn lifecycle_failures() {
    let f = Fleet::start(3);
    f.settings().bind(|| {
        // The driver rejects a missing image: errno explained, exit 5.
        let r = f.run(&["boot", "0", "--firmware", "mic/missing.img"]);
        assert_eq!(r.code, 5, "{}", r.both());
        insta::assert_snapshot!("boot_rejected", r.both());
        // A name that would leave lib/firmware never reaches the driver.
        let r = f.run(&["boot", "0", "--firmware", "../../etc/passwd", "--json"]);
        assert_eq!(r.code, 2);
        assert_eq!(r.json()["cards"][0]["outcome"], "rejected");
        // A hanging boot times out; the others still boot: partial.
        f.inject(1, &Fault::HangBoot);
        let r = f.run(&["boot", "1,2", "--wait", "-t", "3s", "--json"]);
        assert_eq!(r.code, 7, "{}", r.both());
        insta::assert_snapshot!("boot_partial_json", pretty(&r.json()));
        // The hung card's OS never published its shutdown doorbell: the
        // driver drops the request, and micctl says so instead of waiting.
        let r = f.run(&["shutdown", "1", "--wait", "-t", "30s", "--json"]);
        assert_eq!(r.code, 5, "{}", r.both());
        assert_eq!(r.json()["cards"][0]["outcome"], "rejected");
        f.run(&["reset", "1", "--wait", "-t", "5s"]);
        // A failed reset: reset_failed is a failure (exit 1).
        f.card(2).wait_for(|s| s == MicState::Online, Some(HANG)).unwrap();
        f.inject(2, &Fault::FailReset);
        let r = f.run(&["reset", "2", "--wait", "-t", "10s"]);
        assert_eq!(r.code, 1, "{}", r.both());
        insta::assert_snapshot!("reset_failed", r.both());
        let r = f.run(&["wait", "2", "--state", "online", "-t", "5s"]);
        assert_eq!(r.code, 1, "{}", r.both());
    });
}

#[test]
fn a_crash_shows_in_status_and_log() {
    let f = Fleet::start(1);
    let r = f.run(&["boot", "0"]);
    assert_eq!(r.code, 0, "{}", r.both());
    f.card(0).wait_os_up(Some(HANG)).unwrap();
    f.inject(0, &Fault::Panic("boom".into()));
    f.card(0)
        .wait_for(|s| s == MicState::ShuttingDown, Some(HANG))
        .unwrap();
    let r = f.run(&["status", "--json"]);
    assert_eq!(r.json()["cards"][0]["shutdown_status"], "crashed");
    let r = f.run(&["log", "0", "--level", "emerg", "--time-format", "none"]);
    assert!(r.stdout.contains("Kernel panic"), "{}", r.both());
}

#[test]
fn log_follow_streams_across_a_reboot() {
    let f = Fleet::start(1);
    let mut child = f.spawn(&["log", "mic0", "--follow", "--json"]);
    let rx = lines_of(&mut child);
    let r = f.run(&["boot", "0"]);
    assert_eq!(r.code, 0, "{}", r.both());
    read_until(&rx, |l| validated(l)["text"] == libmic::OS_UP_MARKER);
    f.inject(
        0,
        &Fault::Log {
            level: 3,
            text: "followed".into(),
        },
    );
    read_until(&rx, |l| validated(l)["text"] == "followed");
    let r = f.run(&["reboot", "0", "--wait", "-t", "10s"]);
    assert_eq!(r.code, 0, "{}", r.both());
    let seen = read_until(&rx, |l| validated(l)["text"] == libmic::OS_UP_MARKER);
    assert!(seen.iter().any(|l| validated(l)["type"] == "reset"), "{seen:#?}");
    stop(child);

    // Human follow with a bounded duration ends by itself.
    let r = f.run(&[
        "log",
        "0",
        "--follow",
        "--duration",
        "300ms",
        "--time-format",
        "none",
    ]);
    assert_eq!(r.code, 0);
    assert!(
        r.stdout.ends_with(&format!("{}\n", libmic::OS_UP_MARKER)),
        "{}",
        r.stdout
    );
}

#[test]
fn status_watch_streams_changes() {
    let f = Fleet::start(2);
    let mut child = f.spawn(&["status", "--watch", "--json"]);
    let rx = lines_of(&mut child);
    let first = read_until(&rx, |l| validated(l)["card"] == "mic1");
    assert_eq!(first.len(), 2);
    let r = f.run(&["boot", "1"]);
    assert_eq!(r.code, 0, "{}", r.both());
    let seen = read_until(&rx, |l| {
        let v = validated(l);
        v["card"] == "mic1" && v["post_code"] == "FF"
    });
    let states: Vec<Value> = seen
        .iter()
        .map(|l| validated(l))
        .filter(|v| v["changed"].to_string().contains("state"))
        .collect();
    assert_eq!(states[0]["state"], "online");
    assert_eq!(states[0]["time_in_state"]["source"], "observed");
    // POST codes of the boot steps were followed.
    assert!(seen.len() >= 3, "{seen:#?}");
    stop(child);

    // Human watch, bounded.
    let mut settings = f.settings();
    settings.add_filter(r"\[\+[0-9.]+s\]", "[+T]");
    let r = f.run(&["status", "--watch", "--duration", "200ms"]);
    assert_eq!(r.code, 0);
    settings.bind(|| insta::assert_snapshot!("status_watch_idle", r.both()));
}

#[test]
fn many_concurrent_micctl_processes() {
    const N: u32 = 8;
    let f = Fleet::start(N);
    let spawn_all = |verb: &str| -> Vec<(u32, Child)> {
        (0..N)
            .map(|i| {
                (
                    i,
                    f.spawn(&[verb, &format!("mic{i}"), "--wait", "-t", "30s", "--json"]),
                )
            })
            .collect()
    };
    for verb in ["boot", "reset", "boot", "reboot"] {
        for (i, child) in spawn_all(verb) {
            let r = Run::from(child.wait_with_output().unwrap());
            assert_eq!(r.code, 0, "{verb} mic{i}: {}", r.both());
            let v = r.json();
            assert_eq!(v["cards"][0]["card"], format!("mic{i}"));
            assert_eq!(v["cards"][0]["outcome"], "ok");
        }
    }
    let v = f.run(&["status", "--json"]).json();
    for c in v["cards"].as_array().unwrap() {
        assert_eq!(c["state"], "online");
    }
    // One process, every card, in parallel.
    let r = f.run(&["reset", "--wait", "-t", "30s"]);
    assert_eq!(r.code, 0, "{}", r.both());
    assert_eq!(r.stdout.lines().count(), N as usize);
}

#[test]
fn bad_input() {
    let f = Fleet::start(2);
    f.settings().bind(|| {
        let r = f.run(&["status", "mic7"]);
        assert_eq!(r.code, 4);
        assert!(r.stderr.contains("known cards: mic0, mic1"), "{}", r.stderr);
        insta::assert_snapshot!("unknown_card", r.both());
        let r = f.run(&["boot", "mic3", "--json"]);
        assert_eq!(r.code, 4);
        insta::assert_snapshot!("unknown_card_json", pretty(&r.json()));
        let r = f.run(&["log", "9", "--json"]);
        assert_eq!(r.code, 4);
        assert_eq!(r.json()["type"], "error");
        let r = f.run(&["reset", "1-0"]);
        assert_eq!(r.code, 2);
        insta::assert_snapshot!("bad_range", r.both());
        let r = f.run(&["status", "mic0,,1"]);
        assert_eq!(r.code, 2);
        let r = f.run(&["wait", "--state", "asleep"]);
        assert_eq!(r.code, 2);
        insta::assert_snapshot!("bad_state", r.both());
        let r = f.run(&["wait", "--timeout", "soon"]);
        assert_eq!(r.code, 2);
        let r = f.run(&["log", "0", "--level", "loud"]);
        assert_eq!(r.code, 2);
        let r = f.run(&["info", "0,1"]);
        assert_eq!(r.code, 2);
        let r = f.run(&["frobnicate"]);
        assert_eq!(r.code, 2);
    });
}

#[test]
fn driver_absent() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("nothing-here");
    let r = run_in(Some(&root), &["status"]);
    assert_eq!(r.code, 3);
    assert!(r.stderr.contains("micemu"), "{}", r.stderr);
    assert!(r.stderr.contains("sys/class/mic"), "{}", r.stderr);
    let mut s = insta::Settings::clone_current();
    s.add_filter(&regex_escape(&root.display().to_string()), "[ROOT]");
    s.bind(|| {
        insta::assert_snapshot!("driver_absent", r.both());
        let r = run_in(Some(&root), &["boot", "--json"]);
        assert_eq!(r.code, 3);
        insta::assert_snapshot!("driver_absent_json", pretty(&r.json()));
    });
    // MIC_ROOT works the same as --root.
    let out = Command::new(BIN)
        .arg("status")
        .env("MIC_ROOT", &root)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    // An empty class directory: no cards.
    std::fs::create_dir_all(root.join("sys/class/mic")).unwrap();
    let r = run_in(Some(&root), &["status"]);
    assert_eq!(r.code, 4, "{}", r.both());
    assert!(r.stderr.contains("known cards: none"), "{}", r.stderr);
}

#[test]
fn colour_only_when_asked() {
    let f = Fleet::start(1);
    let r = f.run(&["status"]);
    assert!(!r.stdout.contains('\x1b'));
    let r = f.run(&["status", "--color", "always"]);
    assert!(r.stdout.contains("\x1b[1mCARD"), "{}", r.stdout);
    let r = f.run(&["status", "--color", "never"]);
    assert!(!r.stdout.contains('\x1b'));
}

// ---- hardening ------------------------------------------------------------

/// Makes `fleet_process_child` serve a fleet under this root.
const FLEET_ROOT_ENV: &str = "MICCTL_TEST_FLEET_ROOT";

/// The body of [`FleetProcess`]'s child (this test binary, run again):
/// serves two cards until its stdin closes or it is killed. Without the
/// variable it does nothing.
#[test]
#[ignore = "the child process of FleetProcess; runs only when one starts it"]
fn fleet_process_child() {
    use std::io::{Read as _, Write as _};
    let Some(root) = std::env::var_os(FLEET_ROOT_ENV) else {
        return;
    };
    let inst = Instance::start(
        Path::new(&root),
        Config {
            cards: 2,
            timing: Timing::FAST,
            memory: 1 << 30,
            ..Default::default()
        },
    )
    .unwrap();
    println!("fleet-ready");
    std::io::stdout().flush().unwrap();
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    drop(inst);
}

/// A fleet served by a process of its own, so a test can stop it
/// (`kill -STOP`) as a hung driver would be. Killed and its mount detached
/// on drop.
struct FleetProcess {
    child: Child,
    root: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl FleetProcess {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let mut child = this_test("fleet_process_child")
            .env(FLEET_ROOT_ENV, &root)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let rx = lines_of(&mut child);
        // libtest prints its own lines first (and "test ... " before ours).
        read_until(&rx, |l| l.ends_with("fleet-ready"));
        Self {
            child,
            root,
            _dir: dir,
        }
    }

    /// Stops it as a hung driver would be ([`sigstop`]).
    fn stop(&self) {
        sigstop(&self.child);
    }
}

impl Drop for FleetProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Its FUSE mount is dead now: detach it so the directory can go.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.root.join("sys"))
            .status();
    }
}

#[test]
fn a_hung_driver_costs_a_bounded_wait_naming_the_file() {
    let f = FleetProcess::start();
    let r = run_in(Some(&f.root), &["boot", "mic0", "--wait", "-t", "10s"]);
    assert_eq!(r.code, 0, "{}", r.both());
    f.stop();
    let runs = run_all(
        &f.root,
        &[
            &["wait", "mic0", "--state", "offline", "--timeout", "2s"],
            &["wait", "mic0", "--state", "offline", "--timeout", "2s", "--json"],
            &["boot", "mic1", "--wait", "--timeout", "2s"],
            &["status", "--timeout", "1s"],
            // No --timeout: status has a bound of its own.
            &["status"],
        ],
    );
    for r in &runs {
        assert_eq!(r.code, 6, "{}", r.both());
        assert!(r.stderr.contains("no answer from the driver"), "{}", r.both());
    }
    let root = f.root.display().to_string();
    assert!(
        runs[0]
            .stderr
            .contains(&format!("micctl: error: {root}/sys/class/mic")),
        "names the file: {}",
        runs[0].stderr
    );
    let rec = validated(runs[1].stdout.lines().last().unwrap());
    assert_eq!(rec["type"], "error");
    assert_eq!(rec["error"]["kind"], "timeout");
    for r in &runs[2..] {
        assert!(
            r.stderr.contains(&format!("{root}/sys/class/mic")),
            "{}",
            r.stderr
        );
    }
}

#[test]
fn a_panic_before_the_driver_is_up_ends_boot_wait_at_once() {
    let f = Fleet::start(1);
    // A kernel image as ramdisk: the card OS cannot unpack it and panics
    // before its mic driver starts; only its log says so. Without looking
    // at the log this waits out the timeout (exit 6).
    let r = f.run(&["boot", "0", "--ramdisk", "mic/uos.img", "--wait", "-t", "60s"]);
    assert_eq!(r.code, 1, "{}", r.both());
    assert!(
        r.stderr
            .contains("the card kernel panicked: \"Kernel panic - not syncing: VFS: Unable to mount root fs"),
        "{}",
        r.both()
    );
    f.run(&["reset", "0", "--wait", "-t", "10s"]);
    let r = f.run(&[
        "boot",
        "0",
        "--ramdisk",
        "mic/uos.img",
        "--wait",
        "-t",
        "60s",
        "--json",
    ]);
    assert_eq!(r.code, 1, "{}", r.both());
    let v = r.json();
    assert_eq!(v["cards"][0]["outcome"], "failed");
    assert!(
        v["cards"][0]["message"]
            .as_str()
            .unwrap()
            .contains("Kernel panic - not syncing"),
        "{v}"
    );
}

#[test]
fn the_log_survives_garbage_and_says_what_it_skipped() {
    let f = Fleet::start(1);
    let r = f.run(&["boot", "0", "--wait", "-t", "10s"]);
    assert_eq!(r.code, 0, "{}", r.both());
    for _ in 0..200 {
        f.inject(0, &Fault::GarbageLog);
    }
    f.inject(0, &Fault::Panic("VISIBLE".into()));
    let r = f.run(&["log", "mic0", "--time-format", "none"]);
    assert_eq!(r.code, 0, "{}", r.both());
    assert!(
        r.stdout.contains("Kernel panic - not syncing: VISIBLE"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .lines()
            .any(|l| l.starts_with("-- mic0: lost ") && l.contains(" bytes of the card log")),
        "{}",
        r.stdout
    );
    let recs = f.run(&["log", "mic0", "--json"]).json_lines();
    assert!(
        recs.iter()
            .any(|v| v["text"] == "Kernel panic - not syncing: VISIBLE")
    );
    let lost: Vec<&Value> = recs.iter().filter(|v| v["type"] == "lost").collect();
    assert!(!lost.is_empty());
    for l in lost {
        assert_eq!(l["reason"], "damaged");
        assert!(l["bytes"].as_u64().is_some_and(|b| b > 0), "{l}");
    }
}

#[test]
fn following_a_scribbled_log_neither_resets_nor_repeats_nor_stops() {
    let f = Fleet::start(1);
    let r = f.run(&["boot", "0", "--wait", "-t", "10s"]);
    assert_eq!(r.code, 0, "{}", r.both());
    let mut child = f.spawn(&["log", "mic0", "--follow", "--json"]);
    let rx = lines_of(&mut child);
    read_until(&rx, |l| validated(l)["text"] == libmic::OS_UP_MARKER);
    for i in 1..=200 {
        f.inject(
            0,
            &Fault::Log {
                level: 6,
                text: format!("L{i}"),
            },
        );
        f.inject(0, &Fault::GarbageLog);
    }
    let seen = read_until(&rx, |l| validated(l)["text"] == "L200");
    stop(child);
    let recs: Vec<Value> = seen.iter().map(|l| validated(l)).collect();
    assert!(!recs.iter().any(|v| v["type"] == "reset"), "{seen:#?}");
    let texts: Vec<&str> = recs
        .iter()
        .filter(|v| v["type"] == "record")
        .filter_map(|v| v["text"].as_str())
        .collect();
    let mut once = std::collections::HashSet::new();
    for t in &texts {
        assert!(once.insert(*t), "{t:?} printed twice");
    }
}

#[test]
fn status_shows_the_cards_it_can_read_and_marks_the_broken_one() {
    let dir = tempfile::tempdir().unwrap();
    let class = dir.path().join("sys/class/mic");
    for (card, state) in [
        ("mic0", Some("online\n")),
        ("mic1", None),
        ("mic2", Some("offline\n")),
    ] {
        let d = class.join(card);
        std::fs::create_dir_all(&d).unwrap();
        if let Some(s) = state {
            std::fs::write(d.join("state"), s).unwrap();
            std::fs::write(d.join("family"), "x100\n").unwrap();
        }
    }
    let r = run_in(Some(dir.path()), &["status"]);
    assert_eq!(r.code, 7, "{}", r.both());
    let row = |card: &str| {
        r.stdout
            .lines()
            .find(|l| l.starts_with(card))
            .unwrap_or("")
            .to_owned()
    };
    assert!(row("mic0").contains("online"), "{}", r.stdout);
    assert!(row("mic1").contains("unreadable"), "{}", r.stdout);
    assert!(row("mic2").contains("offline"), "{}", r.stdout);
    // The cause is named once, not twice.
    let cause = std::io::Error::from_raw_os_error(libc::ENOENT).to_string();
    assert!(r.stderr.contains("mic1/state"), "{}", r.stderr);
    assert_eq!(r.stderr.matches(&cause).count(), 1, "{}", r.stderr);

    let r = run_in(Some(dir.path()), &["status", "--json"]);
    assert_eq!(r.code, 7, "{}", r.both());
    let v = r.json();
    assert_eq!(v["cards"][0]["state"], "online");
    assert_eq!(v["cards"][1]["state"], Value::Null);
    assert!(v["cards"][1]["error"].as_str().unwrap().contains("mic1/state"));
    assert_eq!(v["cards"][2]["state"], "offline");
    // Nothing readable at all: the cards' common code.
    std::fs::remove_file(class.join("mic0/state")).unwrap();
    std::fs::remove_file(class.join("mic2/state")).unwrap();
    assert_eq!(run_in(Some(dir.path()), &["status"]).code, 1);
}

#[test]
fn json_is_json_whatever_went_wrong() {
    let f = Fleet::start(1);
    for (args, command, streams) in [
        (&["wait", "--state", "asleep", "--json"][..], Some("wait"), true),
        (&["--json", "log", "0", "--level", "loud"][..], Some("log"), true),
        (
            &["log", "0", "--since", "yesterday", "--json"][..],
            Some("log"),
            true,
        ),
        (&["status", "--frobnicate", "--json"][..], Some("status"), false),
        (
            &["status", "--watch", "--timeout", "soon", "--json"][..],
            Some("status"),
            true,
        ),
        (
            &["reset", "--timeout", "2fortnights", "--json"][..],
            Some("reset"),
            false,
        ),
        (&["--json", "frobnicate"][..], None, false),
    ] {
        let r = f.run(args);
        assert_eq!(r.code, 2, "{args:?}: {}", r.both());
        assert!(
            r.stderr.contains("error:"),
            "clap's message stays on stderr: {}",
            r.stderr
        );
        let v = r.json();
        assert_eq!(v["error"]["kind"], "usage", "{args:?}: {v}");
        assert_eq!(v["error"]["exit_code"], 2);
        assert!(!v["error"]["message"].as_str().unwrap().is_empty());
        if streams {
            assert_eq!(v["type"], "error", "{args:?}: {v}");
        } else {
            assert_eq!(v["command"], command.map_or(Value::Null, Value::from), "{args:?}");
            assert_eq!(v["exit_code"], 2);
        }
    }
    // --help stays help.
    let r = f.run(&["--json", "status", "--help"]);
    assert_eq!(r.code, 0);
    assert!(r.stdout.contains("Usage:"), "{}", r.stdout);
}

#[test]
fn durations_compound_and_values_cut_short() {
    let f = Fleet::start(1);
    let r = f.run(&["wait", "0", "--state", "offline", "--timeout", "1h30m"]);
    assert_eq!(r.code, 0, "{}", r.both());
    let long = "x".repeat(5000);
    let r = f.run(&["boot", "0", "--firmware", &long]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.len() < 1000, "{} bytes: {}", r.stderr.len(), r.stderr);
    assert!(r.stderr.contains("…\" (5000 bytes)"), "{}", r.stderr);
    let r = f.run(&["status", &long]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.len() < 1000, "{}", r.stderr);
}

#[test]
fn non_root_reset_of_mixed_cards_is_permission_denied() {
    use std::os::unix::fs::PermissionsExt as _;
    use std::os::unix::process::CommandExt as _;
    let f = Fleet::start(2);
    let r = f.run(&["boot", "0", "--wait", "-t", "10s"]);
    assert_eq!(r.code, 0, "{}", r.both());
    // Let an unprivileged user reach the root (a temporary directory is
    // the owner's only).
    std::fs::set_permissions(f.root(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let as_nobody = |args: &[&str]| {
        let mut c = command(Some(f.root()), args);
        c.uid(65534).gid(65534);
        Run::from(c.output().unwrap())
    };
    // mic0 needs a reset and is refused; mic1 is offline already.
    let r = as_nobody(&["reset", "all"]);
    assert_eq!(r.code, 8, "{}", r.both());
    assert!(r.stderr.contains("permission denied"), "{}", r.both());
    let r = as_nobody(&["reset", "all", "--json"]);
    assert_eq!(r.code, 8, "{}", r.both());
    let v = r.json();
    assert_eq!(v["cards"][0]["exit_code"], 8);
    assert_eq!(v["cards"][1]["outcome"], "already-in-state");
    assert_eq!(f.card(0).state().unwrap(), MicState::Online);
}
