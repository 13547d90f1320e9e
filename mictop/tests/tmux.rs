//! End to end: mictop in a real terminal (tmux) against a live emulated
//! fleet. Keys go in with `send-keys`, the screen comes out with
//! `capture-pane`, re-read until a condition holds or a deadline passes.
//!
//! Needs root, `/dev/fuse` (micemu) and `tmux`.

mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// A tmux server on its own socket, killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn new(tag: &str) -> Tmux {
        Tmux {
            socket: format!("mictop-test-{tag}-{}", std::process::id()),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("running tmux (install the tmux package)")
    }

    fn start(&self, cmd: &str) {
        let out = self.run(&["new-session", "-d", "-s", "t", "-x", "200", "-y", "50", cmd]);
        assert!(
            out.status.success(),
            "tmux new-session: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn keys(&self, keys: &[&str]) {
        for k in keys {
            let out = self.run(&["send-keys", "-t", "t", k]);
            assert!(
                out.status.success(),
                "tmux send-keys: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    /// The screen, or `None` once the session has ended.
    fn screen(&self) -> Option<String> {
        let out = self.run(&["capture-pane", "-p", "-t", "t"]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Re-reads the screen until `cond` holds; panics with the last screen
    /// after `within`.
    fn wait_for(&self, what: &str, within: Duration, cond: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + within;
        let mut last = String::new();
        while Instant::now() < deadline {
            match self.screen() {
                Some(s) if cond(&s) => return s,
                Some(s) => last = s,
                None => panic!("the mictop session ended while waiting for {what}; last screen:\n{last}"),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("timed out waiting for {what}; screen:\n{last}");
    }
}

impl Tmux {
    /// Re-reads until the session has ended; panics with `what` after
    /// `within`.
    fn wait_gone(&self, what: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while self.screen().is_some() {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

/// The table row of a card.
fn row<'a>(screen: &'a str, card: &str) -> &'a str {
    screen
        .lines()
        .find(|l| {
            l.trim_start_matches(['│', ' ', '*'])
                .starts_with(&format!("{card} "))
        })
        .unwrap_or("")
}

fn mictop_cmd(root: &Path, config: &Path) -> String {
    format!(
        "{} --root {} --config {} --no-mouse --interval 100ms",
        env!("CARGO_BIN_EXE_mictop"),
        root.display(),
        config.display()
    )
}

#[test]
fn boots_a_card_from_the_ui_and_shows_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = support::fast_fleet(dir.path(), 2);
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "").unwrap();

    let tmux = Tmux::new("boot");
    tmux.start(&mictop_cmd(fleet.root(), &config));
    let t = Duration::from_secs(20);
    tmux.wait_for("both cards offline", t, |s| {
        row(s, "mic0").contains("offline") && row(s, "mic1").contains("offline")
    });

    // Select mic1, boot it, confirm.
    tmux.keys(&["j"]);
    tmux.wait_for("mic1 selected", t, |s| s.contains("log mic1"));
    tmux.keys(&["b"]);
    tmux.wait_for("the confirmation", t, |s| {
        s.contains("confirm boot") && s.contains("Boot mic1?")
    });
    tmux.keys(&["y"]);
    let screen = tmux.wait_for("mic1 online with its banner in the log", t, |s| {
        row(s, "mic1").contains("online") && s.contains("Linux version")
    });
    assert!(row(&screen, "mic0").contains("offline"), "{screen}");
    tmux.wait_for("the boot to complete", t, |s| {
        row(s, "mic1").contains("card OS up")
    });
    let sysfs = libmic::MicRoot::new(fleet.root()).card("mic1").unwrap();
    assert_eq!(sysfs.state().unwrap(), libmic::MicState::Online, "sysfs agrees");

    // Quit: the session ends.
    tmux.keys(&["q"]);
    tmux.wait_gone("mictop did not quit", t);
}

#[test]
fn reports_a_failed_action_without_crashing() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = support::fast_fleet(dir.path(), 1);
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "").unwrap();
    let tmux = Tmux::new("fail");
    tmux.start(&mictop_cmd(fleet.root(), &config));
    let t = Duration::from_secs(20);
    tmux.wait_for("mic0 offline", t, |s| row(s, "mic0").contains("offline"));
    tmux.keys(&["b"]);
    tmux.wait_for("the confirmation", t, |s| s.contains("confirm boot"));
    tmux.keys(&["y"]);
    tmux.wait_for("mic0 up", t, |s| row(s, "mic0").contains("card OS up"));
    // The next reset never completes: reset_failed, reported as an error.
    fleet.inject(0, &micemu::Fault::FailReset).unwrap();
    tmux.keys(&["r"]);
    tmux.wait_for("the confirmation", t, |s| s.contains("confirm reset"));
    tmux.keys(&["y"]);
    // The action's error and the state change arrive on separate paths;
    // the screen must come to show both.
    tmux.wait_for("the error and the state", t, |s| {
        s.contains("error(s)") && s.contains("reset failed") && row(s, "mic0").contains("reset_failed")
    });
    tmux.keys(&["Enter"]);
    tmux.wait_for("the error dismissed", t, |s| !s.contains("error(s)"));
    tmux.keys(&["q"]);
}

#[test]
fn notices_the_driver_going_and_shows_the_truth_when_it_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let config = || micemu::Config {
        cards: 2,
        timing: micemu::Timing::FAST,
        ..Default::default()
    };
    let fleet = micemu::Instance::start(&root, config()).expect("starting micemu (needs root and /dev/fuse)");
    let conf = dir.path().join("config.toml");
    std::fs::write(&conf, "").unwrap();
    let tmux = Tmux::new("restart");
    tmux.start(&mictop_cmd(fleet.root(), &conf));
    let t = Duration::from_secs(20);
    tmux.wait_for("both cards offline", t, |s| {
        row(s, "mic0").contains("offline") && row(s, "mic1").contains("offline")
    });
    // Boot mic1 behind mictop's back: it sees the change through poll.
    let mic_root = libmic::MicRoot::new(fleet.root());
    let mic1 = mic_root.card("mic1").unwrap();
    mic1.boot_with(
        &libmic::BootRequest::defaults_for(&mic1),
        Some(&mic_root.system_map()),
    )
    .unwrap();
    tmux.wait_for("mic1 online", t, |s| row(s, "mic1").contains("online"));

    // The emulator goes away (its open files answer ENOTCONN).
    fleet.stop().unwrap();
    let screen = tmux.wait_for("the banner", t, |s| s.contains("driver gone — reconnecting"));
    assert!(
        !row(&screen, "mic1").contains("online"),
        "no stale state: {screen}"
    );

    // It comes back on the same root, its cards offline: mictop shows them
    // as they are, and keeps watching the new files.
    let fleet = micemu::Instance::start(&root, config()).unwrap();
    shows_the_new_instance(&tmux, fleet.root(), t);
}

/// A fleet back on the root, its cards offline: mictop shows them as they
/// are, and follows the new files (mic0 booted shows online).
fn shows_the_new_instance(tmux: &Tmux, root: &Path, t: Duration) {
    tmux.wait_for("the cards back, as they are", t, |s| {
        !s.contains("driver gone") && row(s, "mic0").contains("offline") && row(s, "mic1").contains("offline")
    });
    boot_card(root, "mic0");
    tmux.wait_for("mic0 online on the new instance", t, |s| {
        row(s, "mic0").contains("online")
    });
    tmux.keys(&["q"]);
}

/// Boots card `name` under `root` with micctrl's defaults.
fn boot_card(root: &Path, name: &str) -> libmic::Card {
    let mic_root = libmic::MicRoot::new(root);
    let card = mic_root.card(name).unwrap();
    card.boot_with(
        &libmic::BootRequest::defaults_for(&card),
        Some(&mic_root.system_map()),
    )
    .unwrap();
    card
}

#[test]
fn reloads_its_configuration_and_shows_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = support::fast_fleet(dir.path(), 2);
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "").unwrap();
    let tmux = Tmux::new("reload");
    tmux.start(&mictop_cmd(fleet.root(), &config));
    let t = Duration::from_secs(20);
    tmux.wait_for("the full table", t, |s| {
        s.contains("· full ") || s.contains("· auto ")
    });

    // A good edit: the grid layout and `x` to quit.
    std::fs::write(&config, "layout = \"compact\"\n[keys]\nquit = \"x\"\n").unwrap();
    tmux.wait_for("the compact layout", t, |s| s.contains("· compact "));

    // A bad edit: said in the footer; the compact layout stays.
    std::fs::write(&config, "layout = \"diagonal\"\n").unwrap();
    let screen = tmux.wait_for("the error", t, |s| s.contains("config not loaded"));
    assert!(screen.contains("key `layout`"), "{screen}");
    assert!(screen.contains("· compact "), "{screen}");

    // `q` no longer quits (the good edit is still in force): the help,
    // asked for after it, comes up and lists `x` for quit; `x` quits.
    tmux.keys(&["q", "?"]);
    tmux.wait_for("the help with the edited binding", t, |s| {
        s.lines().any(|l| {
            let l = l.trim_matches(|c: char| c == '│' || c.is_whitespace());
            l.starts_with("x ") && l.ends_with(" quit")
        })
    });
    // (One key at a time: ESC and x in one burst read as alt-x.)
    tmux.keys(&["Escape"]);
    tmux.wait_for("the help closed", t, |s| !s.contains("mictop help"));
    tmux.keys(&["x"]);
    tmux.wait_gone("mictop did not quit on x", t);
}

/// The processes whose command line mentions `path`: (pid, command line).
fn processes_mentioning(path: &Path) -> Vec<(u32, String)> {
    let needle = path.display().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            cmd.contains(&needle).then_some((pid, cmd))
        })
        .collect()
}

/// The network namespace of process `pid` (`self` for this one).
fn netns(pid: &str) -> std::path::PathBuf {
    std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap()
}

#[test]
fn the_demo_brings_up_mpssd_and_its_console_and_tears_it_all_down() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "").unwrap();
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let tmux = Tmux::new("console");
    tmux.start(&format!(
        "env TMPDIR={} {} --demo --demo-cards 1 --no-mouse --config {}",
        tmp.display(),
        env!("CARGO_BIN_EXE_mictop"),
        config.display()
    ));
    // The demo boots its card at realistic speed.
    let screen = tmux.wait_for("mic0 up", Duration::from_secs(60), |s| {
        row(s, "mic0").contains("card OS up")
    });
    assert!(screen.contains("demo: micemu, mpssd pid"), "{screen}");
    // mpssd runs for the demo's root, in a network namespace of its own.
    let mpssd: Vec<_> = processes_mentioning(&tmp)
        .into_iter()
        .filter(|(_, cmd)| cmd.starts_with("mpssd --root "))
        .collect();
    assert_eq!(mpssd.len(), 1, "{mpssd:?}");
    assert_ne!(netns(&mpssd[0].0.to_string()), netns("self"));

    let t = Duration::from_secs(20);
    tmux.keys(&["c"]);
    tmux.wait_for("the console's prompt", t, |s| {
        s.contains("console mic0 read-only") && s.contains("root@mic0:~#")
    });
    tmux.keys(&["w"]);
    tmux.wait_for("typing", t, |s| s.contains("console mic0 typing"));
    tmux.keys(&["uname -a", "Enter"]);
    tmux.wait_for("the card's answer", t, |s| s.contains("Linux mic0 3.10.0-micemu"));
    // The card's network reaches mpssd's end of its TAP (172.31.0.254, in
    // mpssd's namespace: none of it in this one).
    tmux.keys(&["ping -c 1 172.31.0.254", "Enter"]);
    tmux.wait_for("the ping's answer", t, |s| {
        s.contains("1 packets transmitted, 1 received")
    });
    assert!(
        !Path::new("/sys/class/net/mic0").exists(),
        "a TAP in the host's namespace"
    );
    // q goes to the card while typing (the shell says so), ctrl-] stops.
    tmux.keys(&["q", "Enter"]);
    tmux.wait_for("the shell's answer to q", t, |s| s.contains("sh: q: not found"));
    tmux.keys(&["C-]"]);
    tmux.wait_for("read-only again", t, |s| s.contains("console mic0 read-only"));
    tmux.keys(&["q"]);
    tmux.wait_gone("mictop did not quit", t);

    // Nothing left: no process, no mount, no root.
    assert_eq!(processes_mentioning(&tmp), vec![]);
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(!mounts.contains(&tmp.display().to_string()), "{mounts}");
    assert_eq!(
        std::fs::read_dir(&tmp).unwrap().count(),
        0,
        "the demo's root is left"
    );
}

#[test]
fn the_console_pane_waits_for_mpssd_watches_read_only_and_takes_the_write_side() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = support::fast_fleet(dir.path(), 1);
    let root = libmic::MicRoot::new(fleet.root());
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "").unwrap();
    let tmux = Tmux::new("broker");
    tmux.start(&mictop_cmd(fleet.root(), &config));
    let t = Duration::from_secs(20);
    tmux.wait_for("mic0 offline", t, |s| row(s, "mic0").contains("offline"));

    // No mpssd: the pane says so, and attaches once mpssd runs.
    tmux.keys(&["c"]);
    tmux.wait_for("waiting for mpssd", t, |s| {
        s.contains("console mic0 waiting: mpssd is not running")
            && s.contains("consoles come from its broker")
    });
    let daemon = support::mpssd(fleet.root(), 1);
    tmux.wait_for("attached", t, |s| s.contains("console mic0 read-only"));
    let card = root.card_by_id(0);
    card.boot_with(
        &libmic::BootRequest::defaults_for(&card),
        Some(&root.system_map()),
    )
    .unwrap();
    tmux.wait_for("the prompt", t, |s| s.contains("root@mic0:~#"));

    // Another client holds the write side: attached again, the pane says
    // who.
    let other = libmic::mpssd::Client::connect(&root)
        .unwrap()
        .attach_console(
            0,
            &libmic::mpssd::AttachOptions::read_write()
                .replay(libmic::mpssd::Replay::Bytes(0))
                .named("test writer"),
        )
        .unwrap();
    let (_, mut other_out, mut other_in) = other.split();
    other_out.set_timeout(Some(t)).unwrap();
    tmux.keys(&["C"]);
    tmux.wait_for("detached", t, |s| !s.contains("console mic0"));
    tmux.keys(&["c"]);
    tmux.wait_for("the writer named", t, |s| {
        s.contains("console mic0 read-only, \"test writer\" (pid")
    });
    // Read-only, the keys are mictop's (x, y, z are bound to nothing; the
    // help after them shows they were all taken): none reaches the card,
    // whose next line is the other writer's alone.
    tmux.keys(&["x", "y", "z", "?"]);
    tmux.wait_for("the keys taken", t, |s| s.contains("mictop help"));
    tmux.keys(&["Escape"]);
    tmux.wait_for("the help closed", t, |s| !s.contains("mictop help"));
    other_in.send(b"echo marker\r").unwrap();
    let screen = tmux.wait_for("the other writer's line", t, |s| {
        s.lines()
            .any(|l| l.trim_end_matches([' ', '│']).ends_with("│marker"))
    });
    assert!(
        screen.contains("root@mic0:~# echo marker") && !screen.contains("xyz"),
        "{screen}"
    );

    // w takes the write side (forced), naming whose it was; the other
    // client is told mictop took it.
    tmux.keys(&["w"]);
    tmux.wait_for("typing, and whose it was", t, |s| {
        s.contains("console mic0 typing") && s.contains("took the write side from \"test writer\"")
    });
    let by = loop {
        match other_out.next_item().unwrap() {
            libmic::mpssd::ConsoleItem::Ended(libmic::mpssd::ConsoleEnd::TakenOver { by, .. }) => break by,
            libmic::mpssd::ConsoleItem::Ended(e) => panic!("{e:?}"),
            _ => {}
        }
    };
    assert_eq!(by.and_then(|b| b.name).as_deref(), Some("mictop"));
    tmux.keys(&["uname -a", "Enter"]);
    tmux.wait_for("the card's answer", t, |s| s.contains("Linux mic0 3.10.0-micemu"));

    // Taken over in turn: typing stops, and the pane says by whom.
    let _again = libmic::mpssd::Client::connect(&root)
        .unwrap()
        .attach_console(
            0,
            &libmic::mpssd::AttachOptions::read_write()
                .force()
                .replay(libmic::mpssd::Replay::Bytes(0))
                .named("second writer"),
        )
        .unwrap();
    tmux.wait_for("taken over", t, |s| {
        s.contains("typing stopped: \"second writer\"")
            && s.contains("console mic0 read-only, \"second writer\"")
    });

    // mpssd stops: the pane says so.
    daemon.stop().unwrap();
    tmux.wait_for("the end", t, |s| s.contains("console mic0 ended: mpssd stopped"));
    tmux.keys(&["q"]);
    tmux.wait_gone("mictop did not quit", t);
}

/// Makes `fleet_process_child` serve two cards under this root.
const FLEET_ROOT_ENV: &str = "MICTOP_TEST_FLEET_ROOT";

/// The body of the killed fleet (this test binary, run again): serves two
/// cards, mic1 booted, until killed. Without the variable it does nothing.
#[test]
#[ignore = "the child process of a test's fleet; runs only when one starts it"]
fn fleet_process_child() {
    use std::io::{Read as _, Write as _};
    let Some(root) = std::env::var_os(FLEET_ROOT_ENV) else {
        return;
    };
    let config = micemu::Config {
        cards: 2,
        timing: micemu::Timing::FAST,
        ..Default::default()
    };
    let inst = micemu::Instance::start(Path::new(&root), config).unwrap();
    let mic1 = boot_card(inst.root(), "mic1");
    mic1.wait_os_up(Some(Duration::from_secs(20))).unwrap();
    println!("fleet-ready");
    std::io::stdout().flush().unwrap();
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    drop(inst);
}

#[test]
fn recovers_from_a_killed_emulator_restarted_with_force() {
    use std::io::{BufRead as _, BufReader};
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "fleet_process_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(FLEET_ROOT_ENV, &root)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    // libtest prints its own lines first; EOF means the child failed.
    while !line.trim_end().ends_with("fleet-ready") {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "the fleet did not start");
    }
    let conf = dir.path().join("config.toml");
    std::fs::write(&conf, "").unwrap();
    let tmux = Tmux::new("killed");
    tmux.start(&mictop_cmd(&root, &conf));
    let t = Duration::from_secs(20);
    tmux.wait_for("mic1 online", t, |s| {
        row(s, "mic0").contains("offline") && row(s, "mic1").contains("online")
    });

    // kill -9: nothing unmounts; the mount stays, dead (ENOTCONN).
    child.kill().unwrap();
    child.wait().unwrap();
    let screen = tmux.wait_for("the banner", t, |s| s.contains("driver gone — reconnecting"));
    assert!(
        !row(&screen, "mic1").contains("online"),
        "no stale state: {screen}"
    );

    // `micemu --force` proves the mount dead, detaches it and serves again.
    let fleet = micemu::Instance::start_with(
        &root,
        micemu::Config {
            cards: 2,
            timing: micemu::Timing::FAST,
            ..Default::default()
        },
        micemu::StartOptions { force: true },
    )
    .unwrap();
    shows_the_new_instance(&tmux, fleet.root(), t);
}
