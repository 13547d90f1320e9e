//! mpssd as a service: the command line and its exit codes, the systemd
//! unit (`systemd-analyze verify`), sd_notify (READY, STATUS, WATCHDOG),
//! journald priority prefixes, and the Prometheus endpoint checked by
//! `promtool` and scraped by a real Prometheus server.

mod common;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, Daemon, Fleet, HANG, to_state, wait_event};
use libmic::mpssd::SupervisorState as S;

fn tool(name: &str) -> String {
    for dir in ["/usr/bin", "/usr/local/bin", "/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p.display().to_string();
        }
    }
    panic!("{name} is not installed (.ci/run installs it)");
}

#[test]
fn version_check_config_and_exit_codes() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("mpssd {}\n", env!("CARGO_PKG_VERSION"))
    );
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[defaults]\n\nreset_timeout = \"-1s\"\n").unwrap();
    let out = Command::new(BIN)
        .args(["--check-config", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.starts_with(&format!(
            "mpssd: {}:3: defaults.reset_timeout: bad duration",
            bad.display()
        )),
        "{err}"
    );
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "[cards.mic3]\nrestart_on_crash = false\n").unwrap();
    let out = Command::new(BIN)
        .args(["--check-config", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("{}: ok\n", good.display())
    );
    // No driver under the root: 3, as the original ("MIC module not loaded").
    let out = Command::new(BIN)
        .arg("--root")
        .arg(dir.path())
        .env_remove("MIC_ROOT")
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("sys/class/mic does not exist"));
    // A named config file that is missing is an error (4), not defaults.
    let out = Command::new(BIN)
        .arg("--root")
        .arg(dir.path())
        .arg("--config")
        .arg(dir.path().join("nope.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    let out = Command::new(BIN).arg("--bogus").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn the_unit_verifies() {
    let unit = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/mpssd.service")).unwrap();
    assert!(unit.contains("Type=notify"));
    assert!(unit.contains("ExecStart=/usr/sbin/mpssd --root /\n"));
    // Verify the unit as shipped, pointing only ExecStart at this build
    // (verify checks that the binary exists).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mpssd.service");
    std::fs::write(&path, unit.replace("/usr/sbin/mpssd", BIN)).unwrap();
    let out = Command::new(tool("systemd-analyze"))
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify failed: {err}");
    let ours: Vec<&str> = err.lines().filter(|l| l.contains("mpssd.service")).collect();
    assert!(ours.is_empty(), "warnings about the unit: {ours:#?}");
}

#[test]
fn notify_ready_status_watchdog_and_priorities() {
    let fleet = Fleet::start(2);
    fleet.boot(1);
    // WatchdogSec=200ms: pings every 100 ms.
    let mut d = Daemon::start_env(fleet.root(), &[], &[("WATCHDOG_USEC", "200000")]);
    // The READY=1 came with a status line naming every card.
    let ready_log = d.wait_log("ready: ");
    assert!(
        ready_log.ends_with("ready: 2 cards: mic0 idle, mic1 running"),
        "{ready_log}"
    );
    d.wait_notify(|m| m == "WATCHDOG=1");
    d.wait_notify(|m| m == "WATCHDOG=1");
    // A state change updates STATUS=.
    let mut ev = d.events();
    fleet.boot(0);
    wait_event(&mut ev, "running", to_state(0, S::Running));
    d.wait_notify(|m| m == "STATUS=2 cards: mic0 running, mic1 running");
    // journald priorities: <6> info, <3> error, one record a line.
    let info = d.wait_log("control socket ");
    assert!(info.starts_with("<6>"), "{info}");
    assert!(
        d.log
            .lock()
            .unwrap()
            .iter()
            .all(|l| l.starts_with('<') && l.as_bytes()[2] == b'>')
    );
    let pid = d.pid();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    d.wait_notify(|m| m.starts_with("STOPPING=1"));
    assert_eq!(d.stop(), 0);
}

/// Kills and reaps a child when dropped.
struct Kill(std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// GET `path` from `addr`; the head and the body.
fn http_get(addr: &str, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(HANG)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    (head.to_owned(), body.to_owned())
}

fn metrics_addr(d: &Daemon) -> String {
    let line = d.wait_log("metrics at http://");
    let url = line.split("metrics at http://").nth(1).unwrap();
    url.trim_end_matches("/metrics").to_owned()
}

#[test]
fn metrics_pass_promtool_and_a_real_prometheus_scrapes_them() {
    let fleet = Fleet::start(2);
    let d = Daemon::start(fleet.root(), &["--metrics", "127.0.0.1:0"]);
    let mut ev = d.events();
    fleet.boot(0);
    wait_event(&mut ev, "running", to_state(0, S::Running));
    let addr = metrics_addr(&d);
    let (head, body) = http_get(&addr, "/metrics");
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(head.contains("Content-Type: text/plain; version=0.0.4"), "{head}");
    assert!(
        body.contains("mpssd_card_state{card=\"mic0\",state=\"online\"} 1\n"),
        "{body}"
    );
    assert!(body.contains("mpssd_supervisor_state{card=\"mic1\",state=\"idle\"} 1\n"));
    assert!(
        body.contains("mpssd_card_boots_total{card=\"mic0\"} 0\n"),
        "an operator boot is not mpssd's"
    );
    assert!(body.contains("mpssd_control_clients 1\n"));
    let (head, _) = http_get(&addr, "/nope");
    assert!(head.starts_with("HTTP/1.1 404"));

    let mut promtool = Command::new(tool("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    promtool.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // A real Prometheus, on loopback, scraping every 200 ms.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 200ms\n  scrape_timeout: 200ms\nscrape_configs:\n  - job_name: mpssd\n    \
             static_configs:\n      - targets: ['{addr}']\n"
        ),
    )
    .unwrap();
    let web = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let web_addr = web.local_addr().unwrap().to_string();
    drop(web);
    let prom_guard = Kill(
        Command::new(tool("prometheus"))
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={web_addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Ask it until it has scraped us (its start-up and first scrape take a
    // moment; the answer, not a sleep, ends the wait).
    let start = Instant::now();
    let query = "/api/v1/query?query=mpssd_card_state%7Bcard%3D%22mic0%22%2Cstate%3D%22online%22%7D";
    loop {
        let got = TcpStream::connect(&web_addr)
            .ok()
            .map(|_| http_get(&web_addr, query).1);
        if let Some(body) = got {
            if body.contains("\"value\":[") && body.contains("\"1\"]") {
                assert!(body.contains("\"job\":\"mpssd\""), "{body}");
                break;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "Prometheus never scraped mpssd"
        );
        std::thread::yield_now();
    }
    let (_, up) = http_get(&web_addr, "/api/v1/query?query=up%7Bjob%3D%22mpssd%22%7D");
    assert!(up.contains("\"1\"]"), "{up}");
    drop(prom_guard);
    assert_eq!(d.stop(), 0);
}

#[test]
fn metrics_off_switch_and_loopback_rule() {
    let fleet = Fleet::start(1);
    fleet.write_config("[metrics]\nenabled = false\n");
    let d = Daemon::start(fleet.root(), &["--metrics", "127.0.0.1:0"]);
    d.wait_log("--metrics ignored: metrics.enabled = false");
    assert!(!d.log_text().contains("metrics at http://"));
    assert_eq!(d.stop(), 0);
    fleet.write_config("");
    let mut s = common::spawn(fleet.root(), &["--metrics", "0.0.0.0:0"], &[]);
    assert_eq!(s.child.wait().unwrap().code(), Some(4));
}
