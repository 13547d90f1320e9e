//! What the test binaries share: in-process micemu fleets, running the
//! micctl binary, its output validated against the JSON schema, reading a
//! child's lines until a deadline.

#![allow(dead_code, unreachable_pub)]

pub mod console;
pub mod mpssd;

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use libmic::MicRoot;
use micemu::{Config, Fault, Instance, Timing};
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_micctl");
/// Upper bound for anything a test waits on; only reached if something hangs.
pub const HANG: Duration = Duration::from_secs(20);

pub struct Fleet {
    pub inst: Instance,
    _dir: tempfile::TempDir,
}

impl Fleet {
    pub fn start(cards: u32) -> Self {
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
        .unwrap();
        Self { inst, _dir: dir }
    }

    pub fn root(&self) -> &Path {
        self.inst.root()
    }

    pub fn run(&self, args: &[&str]) -> Run {
        run_in(Some(self.root()), args)
    }

    pub fn spawn(&self, args: &[&str]) -> Child {
        command(Some(self.root()), args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    pub fn card(&self, id: u32) -> libmic::Card {
        MicRoot::new(self.root()).card_by_id(id)
    }

    pub fn inject(&self, id: u32, f: &Fault) {
        self.inst.inject(id, f).unwrap();
    }

    /// Filters for snapshots: this fleet's root, times and durations.
    pub fn settings(&self) -> insta::Settings {
        let mut s = insta::Settings::clone_current();
        s.add_filter(&regex_escape(&self.root().display().to_string()), "[ROOT]");
        add_time_filters(&mut s);
        s
    }
}

pub fn regex_escape(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '/' || c == '_' {
                c.to_string()
            } else {
                format!("\\{c}")
            }
        })
        .collect()
}

pub fn add_time_filters(s: &mut insta::Settings) {
    s.add_filter(r"\[\s*\d+\.\d{6}\]", "[TS]");
    s.add_filter(
        r#""(elapsed_secs|seconds|timestamp|ts_nsec)": [0-9.e+-]+"#,
        r#""$1": "[N]""#,
    );
    s.add_filter(r"\b\d+(\.\d+)?(ms|s)\b", "[DUR]");
    s.add_filter(r"\b\d+m\d\ds\b", "[DUR]");
}

pub fn command(root: Option<&Path>, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    if let Some(r) = root {
        c.arg("--root").arg(r);
    }
    c.args(args)
        .env_remove("MIC_ROOT")
        .env_remove("NO_COLOR")
        .env("TERM", "dumb")
        .env("COLUMNS", "100");
    c
}

#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn from(o: Output) -> Self {
        Self {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8(o.stdout).unwrap(),
            stderr: String::from_utf8(o.stderr).unwrap(),
        }
    }

    /// stdout and stderr, for one snapshot.
    pub fn both(&self) -> String {
        format!(
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }

    /// The single JSON document on stdout, validated.
    pub fn json(&self) -> Value {
        let lines = self.json_lines();
        assert_eq!(lines.len(), 1, "expected one document: {}", self.stdout);
        lines.into_iter().next().unwrap()
    }

    /// Every JSON Lines record on stdout, each validated.
    pub fn json_lines(&self) -> Vec<Value> {
        self.stdout.lines().map(validated).collect()
    }
}

pub fn run_in(root: Option<&Path>, args: &[&str]) -> Run {
    Run::from(command(root, args).output().unwrap())
}

pub fn schema() -> &'static jsonschema::Validator {
    static V: OnceLock<jsonschema::Validator> = OnceLock::new();
    V.get_or_init(|| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/micctl.schema.json");
        let schema: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        jsonschema::validator_for(&schema).unwrap()
    })
}

/// Parses one line of JSON and validates it against the schema.
pub fn validated(line: &str) -> Value {
    let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    let errors: Vec<String> = schema()
        .iter_errors(&v)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "schema violations {errors:#?} in {line}");
    v
}

pub fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap()
}

/// Lines of a child's stdout, as they arrive.
pub fn lines_of(child: &mut Child) -> Receiver<String> {
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Reads lines until one satisfies `pred`; returns every line read.
pub fn read_until(rx: &Receiver<String>, pred: impl Fn(&str) -> bool) -> Vec<String> {
    let deadline = Instant::now() + HANG;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => {
                let done = pred(&l);
                seen.push(l);
                if done {
                    return seen;
                }
            }
            Err(e) => panic!("{e:?} waiting for a line; got {seen:#?}"),
        }
    }
}

pub fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Runs micctl commands at once; each must end within [`HANG`].
pub fn run_all(root: &Path, commands: &[&[&str]]) -> Vec<Run> {
    let rxs: Vec<_> = commands
        .iter()
        .map(|args| {
            let child = command(Some(root), args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                let _ = tx.send(Run::from(child.wait_with_output().unwrap()));
            });
            rx
        })
        .collect();
    rxs.iter()
        .zip(commands)
        .map(|(rx, args)| {
            rx.recv_timeout(HANG)
                .unwrap_or_else(|_| panic!("micctl {args:?} still blocked after {HANG:?}"))
        })
        .collect()
}

/// Stops a child process as a hung driver or daemon would be: returns once
/// it has stopped (the signal is asynchronous, and a thread could still
/// answer one more request; the kernel reports the stop to the parent once
/// every thread has stopped).
pub fn sigstop(child: &Child) {
    let pid = child.id() as i32;
    let st = Command::new("kill")
        .arg("-STOP")
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(st.success(), "kill -STOP");
    let mut status = 0;
    // SAFETY: waitpid on our own child with a valid pointer to a local;
    // WUNTRACED reports the stop without reaping the child.
    let r = unsafe { libc::waitpid(pid, &raw mut status, libc::WUNTRACED) };
    assert!(r == pid && libc::WIFSTOPPED(status), "the process did not stop");
}

/// This test binary run again to run only the (ignored) test `name`: the
/// body of a child process (a fleet, an mpssd) a test starts.
pub fn this_test(name: &str) -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args([name, "--exact", "--ignored", "--nocapture", "--test-threads=1"]);
    c
}
