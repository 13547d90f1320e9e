//! End-to-end supervision: micemu cards, mpssd as a real process.

mod common;

use common::{Daemon, Fleet, to_state, wait_event};
use libmic::mpssd::{EventKind, SupervisorState as S};
use libmic::{MicState, MicStatus};
use micemu::Fault;
use mpssd_proto::{ReloadSource, ResetOutcome};

const FAST_CRASH: &str = "[defaults]\ncrash_backoff = \"100ms\"\ncrash_backoff_max = \"200ms\"\n";

#[test]
fn adopts_offline_and_online_cards() {
    let fleet = Fleet::start(2);
    // An operator booted mic1 with a cmdline of their own before mpssd ran.
    let c1 = fleet.card(1);
    c1.set_cmdline("ifcfg=static;address,10.9.9.9;netmask,255.255.255.0 quiet")
        .unwrap();
    fleet.boot(1);
    let d = Daemon::start(fleet.root(), &[]);
    let st = d.client().status().unwrap();
    assert_eq!(st.cards.len(), 2);
    let (m0, m1) = (&st.cards[0], &st.cards[1]);
    assert_eq!(
        (m0.supervisor, m0.state, m0.adopted),
        (S::Idle, Some(MicState::Offline), false)
    );
    assert_eq!(
        (m1.supervisor, m1.state, m1.adopted),
        (S::Running, Some(MicState::Online), true)
    );
    // A console and a network each (no image configured: no disk).
    for m in [m0, m1] {
        let kinds: Vec<&str> = m.devices.iter().map(|d| d.kind.as_str()).collect();
        assert_eq!(kinds, ["console", "net"], "{m:?}");
    }
    // As the original: log_buf from System.map, the cmdline only where unset.
    let c0 = fleet.card(0);
    let map = libmic::SystemMap::parse(
        &std::fs::read_to_string(libmic::MicRoot::new(fleet.root()).system_map()).unwrap(),
    );
    let (addr, len) = map.log_buf_symbols().unwrap();
    assert_eq!(c0.log_buf_addr().unwrap(), Some(addr));
    assert_eq!(c0.log_buf_len().unwrap(), Some(len));
    assert_eq!(c0.cmdline().unwrap(), Some(libmic::lifecycle::default_cmdline(0)));
    assert_eq!(c0.ipaddr().unwrap(), Some("172.31.0.1".parse().unwrap()));
    assert_eq!(
        c1.cmdline().unwrap().as_deref(),
        Some("ifcfg=static;address,10.9.9.9;netmask,255.255.255.0 quiet")
    );
    // An operator boot of the idle card is seen.
    let mut ev = d.events();
    fleet.boot(0);
    wait_event(&mut ev, "mic0 running", to_state(0, S::Running));
    assert_eq!(d.client().card_status(0).unwrap().supervisor, S::Running);
    assert_eq!(d.stop(), 0);
}

#[test]
fn crash_bundle_reset_reboot_by_policy() {
    let fleet = Fleet::start(1);
    fleet.write_config(FAST_CRASH);
    let d = Daemon::start(fleet.root(), &[]);
    let mut ev = d.events();
    fleet.boot(0);
    wait_event(&mut ev, "running", to_state(0, S::Running));
    fleet.inject(0, &Fault::Panic("forensics please".into()));
    let status = wait_event(&mut ev, "shutdown status", |e| {
        matches!(e.kind, EventKind::ShutdownStatus { .. })
    });
    assert!(matches!(
        status.kind,
        EventKind::ShutdownStatus {
            status: Some(MicStatus::Crashed),
            ..
        }
    ));
    let crash = wait_event(&mut ev, "crash", |e| matches!(e.kind, EventKind::Crash { .. }));
    let EventKind::Crash {
        bundle: Some(bundle),
        recent_crashes: 1,
    } = crash.kind
    else {
        panic!("{crash:?}")
    };
    let reset = wait_event(&mut ev, "reset", |e| matches!(e.kind, EventKind::Reset { .. }));
    assert!(matches!(
        reset.kind,
        EventKind::Reset {
            outcome: ResetOutcome::Offline,
            ..
        }
    ));
    wait_event(&mut ev, "backoff", |e| {
        matches!(e.kind, EventKind::Backoff { attempt: 1, .. })
    });
    let boot = wait_event(&mut ev, "boot", |e| matches!(e.kind, EventKind::Boot { .. }));
    assert!(
        matches!(&boot.kind, EventKind::Boot { error: None, reason } if reason == "restart after a crash")
    );
    wait_event(&mut ev, "running again", to_state(0, S::Running));
    fleet.wait_os_up(0);

    // The bundle: everything the card could tell, before its reset.
    let bundle = std::path::PathBuf::from(bundle);
    assert!(bundle.starts_with(fleet.root().join("var/lib/mpssd/crash")));
    assert!(bundle.file_name().unwrap().to_str().unwrap().starts_with("mic0-"));
    let log = std::fs::read_to_string(bundle.join("card.log")).unwrap();
    assert!(
        log.contains("Kernel panic - not syncing: forensics please"),
        "{log}"
    );
    assert_eq!(
        std::fs::read_to_string(bundle.join("shutdown_status")).unwrap(),
        "crashed\n"
    );
    assert!(
        std::fs::read_to_string(bundle.join("dp.txt"))
            .unwrap()
            .contains("magic")
    );
    assert!(
        std::fs::read_to_string(bundle.join("smpt.txt"))
            .unwrap()
            .contains("SMPT")
    );
    let timeline = std::fs::read_to_string(bundle.join("timeline.txt")).unwrap();
    assert!(timeline.contains("shutdown status crashed"), "{timeline}");
    assert!(bundle.join("console.log").exists());
    assert!(!bundle.join("errors.txt").exists());

    let st = d.client().card_status(0).unwrap();
    assert_eq!((st.crashes, st.boots), (1, 1));
    assert_eq!(
        st.last_crash.unwrap().bundle.unwrap(),
        bundle.display().to_string()
    );
    assert_eq!(d.stop(), 0);
}

#[test]
fn a_crash_loop_leaves_the_card_down_until_an_operator_boots_it() {
    let fleet = Fleet::start(1);
    fleet.write_config(&format!(
        "{FAST_CRASH}crash_loop_limit = 1\ncrash_loop_window = \"10m\"\n"
    ));
    let d = Daemon::start(fleet.root(), &[]);
    let mut ev = d.events();
    fleet.boot(0);
    wait_event(&mut ev, "running", to_state(0, S::Running));
    fleet.inject(0, &Fault::Panic("one".into()));
    wait_event(&mut ev, "backoff", |e| {
        matches!(e.kind, EventKind::Backoff { .. })
    });
    wait_event(&mut ev, "running again", to_state(0, S::Running));
    fleet.wait_os_up(0);
    fleet.inject(0, &Fault::Panic("two".into()));
    let lp = wait_event(&mut ev, "crash loop", |e| {
        matches!(e.kind, EventKind::CrashLoop { .. })
    });
    assert!(matches!(
        lp.kind,
        EventKind::CrashLoop {
            crashes: 2,
            window_secs: 600
        }
    ));
    wait_event(&mut ev, "left down", to_state(0, S::CrashLoop));
    let st = d.client().card_status(0).unwrap();
    assert_eq!(
        (st.supervisor, st.state, st.crashes, st.boots),
        (S::CrashLoop, Some(MicState::Offline), 2, 1)
    );
    d.wait_log("crash loop, the card is left down");
    // Nothing more happens by itself; an operator's boot clears it.
    fleet.boot(0);
    let e = wait_event(&mut ev, "running", to_state(0, S::Running));
    assert!(
        matches!(&e.kind, EventKind::Supervisor { reason, .. } if reason.contains("crash history cleared"))
    );
    assert_eq!(d.client().card_status(0).unwrap().recent_crashes, 0);
    assert_eq!(d.stop(), 0);
}

#[test]
fn restart_reboots_halt_stays_down() {
    let fleet = Fleet::start(1);
    let d = Daemon::start(fleet.root(), &[]);
    let mut ev = d.events();
    fleet.boot(0);
    wait_event(&mut ev, "running", to_state(0, S::Running));
    fleet.inject(0, &Fault::Reboot);
    let b = wait_event(&mut ev, "boot", |e| matches!(e.kind, EventKind::Boot { .. }));
    assert!(
        matches!(&b.kind, EventKind::Boot { reason, error: None } if reason == "the card asked to restart")
    );
    wait_event(&mut ev, "running", to_state(0, S::Running));
    fleet.wait_os_up(0);
    fleet.inject(0, &Fault::Halt);
    let e = wait_event(&mut ev, "idle", to_state(0, S::Idle));
    assert!(matches!(&e.kind, EventKind::Supervisor { reason, .. } if reason == "card shut down (halted)"));
    assert_eq!(fleet.card(0).state().unwrap(), MicState::Offline);
    let st = d.client().card_status(0).unwrap();
    assert_eq!((st.boots, st.crashes), (1, 0));
    assert!(
        std::fs::read_dir(fleet.root().join("var/lib/mpssd/crash")).is_err(),
        "no bundle without a crash"
    );
    assert_eq!(d.stop(), 0);
}

#[test]
fn kill_9_then_restart_adopts_the_running_card() {
    let fleet = Fleet::start(2);
    let d = Daemon::start(fleet.root(), &[]);
    let mut ev = d.events();
    fleet.boot(0);
    wait_event(&mut ev, "running", to_state(0, S::Running));
    drop(ev);
    d.kill9();
    // The stale socket and the lock file are left behind.
    assert!(fleet.root().join("run/mpssd/control.sock").exists());
    let d = Daemon::start(fleet.root(), &[]);
    let st = d.client().status().unwrap();
    assert_eq!((st.cards[0].supervisor, st.cards[0].adopted), (S::Running, true));
    assert_eq!(st.cards[1].supervisor, S::Idle);
    assert_eq!(st.pid, d.child.id());
    // The card was never reset or rebooted.
    assert_eq!(fleet.card(0).state().unwrap(), MicState::Online);
    assert_eq!(fleet.os_up_count(0), 1);
    assert_eq!(d.stop(), 0);
    // A clean stop leaves the card running and removes the socket.
    assert_eq!(fleet.card(0).state().unwrap(), MicState::Online);
    assert!(!fleet.root().join("run/mpssd/control.sock").exists());
}

#[test]
fn a_second_mpssd_for_the_same_root_is_refused() {
    let fleet = Fleet::start(1);
    let d = Daemon::start(fleet.root(), &[]);
    let mut other = common::spawn(fleet.root(), &[], &[]).child;
    assert_eq!(other.wait().unwrap().code(), Some(5));
    // The first one is unharmed.
    assert_eq!(d.client().status().unwrap().cards.len(), 1);
    assert_eq!(d.stop(), 0);
}

#[test]
fn config_reload_good_and_bad() {
    let fleet = Fleet::start(1);
    fleet.write_config("[defaults]\nrestart_on_crash = false\n");
    let d = Daemon::start(fleet.root(), &[]);
    let mut ev = d.events();
    // Good: the file changes, the new policy is in force.
    fleet.write_config(FAST_CRASH);
    let r = wait_event(&mut ev, "reload", |e| {
        matches!(e.kind, EventKind::ConfigReloaded { .. })
    });
    assert!(matches!(
        r.kind,
        EventKind::ConfigReloaded {
            source: ReloadSource::File,
            ok: true,
            changed: true,
            error: None
        }
    ));
    let loaded = d.client().status().unwrap().config_loaded_ms;
    // Bad: refused with file, line and key; the running config stays.
    fleet.write_config("[defaults]\nrestart_on_crash = true\ncrash_backoff = \"soon\"\n");
    let r = wait_event(&mut ev, "refused", |e| {
        matches!(e.kind, EventKind::ConfigReloaded { ok: false, .. })
    });
    let EventKind::ConfigReloaded { error: Some(err), .. } = r.kind else {
        panic!()
    };
    let file = fleet.root().join("etc/mpss/mpssd.toml");
    assert!(
        err.starts_with(&format!(
            "{}:3: defaults.crash_backoff: bad duration",
            file.display()
        )),
        "{err}"
    );
    d.wait_log("configuration refused");
    let e = d.client().reload_config().unwrap_err();
    assert_eq!(e.code(), Some(mpssd_proto::ErrorCode::InvalidConfig));
    assert!(
        e.to_string().contains("the running configuration stays in force"),
        "{e}"
    );
    assert_eq!(d.client().status().unwrap().config_loaded_ms, loaded);
    // The policy loaded before the bad file still applies: a crash reboots.
    fleet.boot(0);
    wait_event(&mut ev, "running", to_state(0, S::Running));
    fleet.inject(0, &Fault::Panic("x".into()));
    wait_event(&mut ev, "backoff", |e| {
        matches!(e.kind, EventKind::Backoff { .. })
    });
    wait_event(&mut ev, "running", to_state(0, S::Running));
    // SIGHUP re-reads it too (fixed, but renamed into place without a
    // change event counting: the SIGHUP is what we wait for).
    fleet.write_config("[defaults]\nrestart_on_crash = false\n");
    wait_event(&mut ev, "reload", |e| {
        matches!(e.kind, EventKind::ConfigReloaded { ok: true, .. })
    });
    d.signal(nix::sys::signal::Signal::SIGHUP);
    wait_event(&mut ev, "sighup reload", |e| {
        matches!(
            e.kind,
            EventKind::ConfigReloaded {
                source: ReloadSource::Sighup,
                ok: true,
                changed: false,
                ..
            }
        )
    });
    assert!(!d.client().reload_config().unwrap().changed);
    assert_eq!(d.stop(), 0);
}

/// The state of card 0's net device in mpssd's status (`None`: it has none).
fn net_state(d: &Daemon) -> Option<String> {
    let st = d.client().card_status(0).unwrap();
    st.devices
        .into_iter()
        .find(|dev| dev.kind == "net")
        .map(|dev| dev.state)
}

/// Whether `mic0` is a link in the test's network namespace (mpssd's).
fn tap_exists() -> bool {
    std::process::Command::new("ip")
        .args(["link", "show", "dev", "mic0"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("ip (iproute2)")
        .success()
}

/// Re-reads card 0's net state until `want` (the card's driver takes a
/// device some time after it is added).
fn wait_net_state(d: &Daemon, want: Option<&str>) {
    let start = std::time::Instant::now();
    while net_state(d).as_deref() != want {
        assert!(
            start.elapsed() < common::HANG,
            "net stayed {:?}, not {want:?}",
            net_state(d)
        );
        std::thread::yield_now();
    }
}

#[test]
fn a_reload_turns_a_running_cards_network_off_and_on_and_host_tools_reach_it() {
    let fleet = Fleet::start(1);
    fleet.write_config("[defaults]\nnet = false\n");
    let d = Daemon::start(fleet.root(), &[]);
    let mut ev = d.events();
    fleet.boot(0);
    wait_event(&mut ev, "running", to_state(0, S::Running));
    assert_eq!(net_state(&d), None);
    assert!(!tap_exists(), "no TAP yet");
    // On: added at once, the card's driver takes it, the TAP is there.
    fleet.write_config("[defaults]\nnet = true\n");
    let e = wait_event(
        &mut ev,
        "net added",
        |e| matches!(&e.kind, EventKind::DevicesAdded { devices } if devices == &["net"]),
    );
    assert_eq!(e.card, Some(0));
    wait_net_state(&d, Some("up"));
    assert!(tap_exists());
    // Host tools reach the card through mpssd's TAP (set up by netlink at
    // the add): ping, and curl for the card's own view of its eth0.
    let tool = |args: &[&str]| {
        let out = std::process::Command::new("timeout")
            .arg("30")
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{args:?}: {e} (.ci/run installs it)"));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{args:?}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    };
    let ping = tool(&["ping", "-c", "2", "-i", "0.2", "-W", "5", "172.31.0.1"]);
    assert!(ping.contains("2 packets transmitted, 2 received"), "{ping}");
    let status = tool(&["curl", "-sS", "--max-time", "20", "http://172.31.0.1/"]);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["net"][0]["ipv4"], "172.31.0.1/24", "{status}");
    // Off: removed at once, the TAP goes with it; the card stays up.
    fleet.write_config("[defaults]\nnet = false\n");
    wait_event(
        &mut ev,
        "net removed",
        |e| matches!(&e.kind, EventKind::DevicesRemoved { devices } if devices == &["net"]),
    );
    assert_eq!(net_state(&d), None);
    assert!(!tap_exists(), "the TAP went");
    assert_eq!(fleet.card(0).state().unwrap(), MicState::Online);
    // Across a reset the setting in force is the one used: still off.
    fleet.card(0).reset().unwrap();
    wait_event(&mut ev, "idle", to_state(0, S::Idle));
    fleet.boot(0);
    wait_event(&mut ev, "running again", to_state(0, S::Running));
    assert_eq!(net_state(&d), None);
    assert_eq!(d.stop(), 0);
}
