//! The control socket against bad and hostile clients: garbage, unknown
//! versions, huge frames, unfinished frames, slow readers, a thousand
//! connections. Each time another client must still be served at once,
//! and every answer must match the protocol's JSON Schema.

mod common;

use std::io::{BufRead as _, BufReader, ErrorKind, Read as _, Write as _};
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::os::unix::net::UnixStream;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{Daemon, Fleet, HANG};
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use serde_json::Value;

fn schema() -> &'static jsonschema::Validator {
    static V: OnceLock<jsonschema::Validator> = OnceLock::new();
    V.get_or_init(|| {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/schema/protocol.schema.json");
        let s: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        jsonschema::validator_for(&s).unwrap()
    })
}

fn valid(line: &str) -> Value {
    let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    let errors: Vec<String> = schema().iter_errors(&v).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{line}: {errors:#?}");
    v
}

struct Raw {
    w: UnixStream,
    r: BufReader<UnixStream>,
}

impl Raw {
    fn connect(d: &Daemon) -> Raw {
        let s = UnixStream::connect(d.root.join("run/mpssd/control.sock")).unwrap();
        s.set_read_timeout(Some(HANG)).unwrap();
        s.set_write_timeout(Some(HANG)).unwrap();
        Raw {
            w: s.try_clone().unwrap(),
            r: BufReader::new(s),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.w.write_all(bytes).unwrap();
    }

    /// The next line, validated; `None` at EOF.
    fn line(&mut self) -> Option<Value> {
        let mut l = String::new();
        match self.r.read_line(&mut l) {
            Ok(0) => None,
            Ok(_) => Some(valid(l.trim_end())),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => None,
            Err(e) => panic!("read: {e}"),
        }
    }

    fn eof(&mut self) -> bool {
        let mut rest = Vec::new();
        match self.r.read_to_end(&mut rest) {
            Ok(_) => true,
            Err(e) => e.kind() == ErrorKind::ConnectionReset,
        }
    }
}

fn code(v: &Value) -> &str {
    v["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("not an error: {v}"))
}

/// Another client is answered at once.
fn others_fine(d: &Daemon) {
    let t = Instant::now();
    let st = d.client().status().unwrap();
    assert_eq!(st.cards.len(), 1);
    assert!(t.elapsed() < HANG);
}

#[test]
fn garbage_versions_and_unknown_requests() {
    let fleet = Fleet::start(1);
    let d = Daemon::start(fleet.root(), &[]);
    let mut c = Raw::connect(&d);
    c.send(b"hello there\n");
    let v = c.line().unwrap();
    assert_eq!(code(&v), "bad_request");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("not a JSON object")
    );
    c.send(b"\xff\xfe\x00\n[1,2,3]\n");
    assert_eq!(code(&c.line().unwrap()), "bad_request");
    assert_eq!(code(&c.line().unwrap()), "bad_request");
    c.send(br#"{"v":2,"id":5,"request":"status"}"#);
    c.send(b"\n");
    let v = c.line().unwrap();
    assert_eq!((code(&v), v["id"].as_u64()), ("unsupported_version", Some(5)));
    assert_eq!(
        v["error"]["message"],
        "protocol version 2 is not supported: this mpssd speaks version 1"
    );
    c.send(b"{\"v\":1,\"id\":6,\"request\":\"self_destruct\"}\n{\"v\":1,\"id\":7,\"request\":\"card_status\",\"card\":9}\n");
    assert_eq!(code(&c.line().unwrap()), "bad_request");
    let v = c.line().unwrap();
    assert_eq!((code(&v), v["id"].as_u64()), ("no_such_card", Some(7)));
    // What the card does not have is refused in words: no image is
    // configured, so there is no disk to swap.
    c.send(b"{\"v\":1,\"id\":9,\"request\":\"block_swap\",\"card\":0}\n");
    let v = c.line().unwrap();
    assert_eq!(code(&v), "not_available");
    assert_eq!(
        v["error"]["message"],
        "mic0 has no disk: neither the request, mpssd.toml nor mpssd000.conf names an image"
    );
    // Console requests of a connection that is not attached.
    c.send(b"{\"v\":1,\"id\":8,\"request\":\"console_input\",\"card\":0,\"data\":\"eA==\"}\n");
    assert_eq!(code(&c.line().unwrap()), "not_attached");
    // The same connection still works, and so does everyone else.
    c.send(b"\n{\"v\":1,\"id\":10,\"request\":\"status\"}\r\n");
    let v = c.line().unwrap();
    assert_eq!(v["id"], 10);
    assert_eq!(v["ok"]["response"], "status");
    assert_eq!(v["ok"]["cards"][0]["name"], "mic0");
    assert_eq!(v["ok"]["clients"], 1);
    others_fine(&d);
    assert_eq!(d.stop(), 0);
}

#[test]
fn huge_and_unfinished_frames() {
    let fleet = Fleet::start(1);
    fleet.write_config("[daemon]\nclient_timeout = \"300ms\"\n");
    let d = Daemon::start(fleet.root(), &[]);
    // A frame over 64 KiB: refused, connection closed.
    let mut c = Raw::connect(&d);
    let big = vec![b'x'; 200 * 1024];
    // The daemon stops reading once it has refused; the rest may not go.
    let _ = c.w.write_all(&big);
    let v = c.line().unwrap();
    assert_eq!(code(&v), "frame_too_large");
    assert!(c.eof());
    others_fine(&d);
    // Half a frame, then silence: timed out, closed.
    let mut c = Raw::connect(&d);
    c.send(br#"{"v":1,"request":"sta"#);
    let v = c.line().unwrap();
    assert_eq!(code(&v), "timeout");
    assert!(c.eof());
    others_fine(&d);
    assert_eq!(d.stop(), 0);
}

#[test]
fn a_client_that_does_not_read_is_dropped_not_waited_for() {
    let fleet = Fleet::start(1);
    fleet.write_config("[daemon]\nclient_timeout = \"300ms\"\n");
    let d = Daemon::start(fleet.root(), &[]);
    let slow = UnixStream::connect(d.root.join("run/mpssd/control.sock")).unwrap();
    slow.set_write_timeout(Some(Duration::from_millis(100))).unwrap();
    let mut w = &slow;
    let req = b"{\"v\":1,\"request\":\"status\"}\n".repeat(1000);
    let start = Instant::now();
    let mut dropped = false;
    // Pipeline requests and never read an answer. Between batches, another
    // client must be answered at once.
    while start.elapsed() < HANG {
        match w.write_all(&req) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {}
            Err(_) => {
                // EPIPE / ECONNRESET: the daemon hung up on us.
                dropped = true;
                break;
            }
        }
        others_fine(&d);
    }
    assert!(dropped, "the slow client was never disconnected");
    others_fine(&d);
    assert_eq!(d.stop(), 0);
}

#[test]
fn a_thousand_connections() {
    let fleet = Fleet::start(1);
    fleet.write_config("[daemon]\nmax_clients = 16\n");
    let d = Daemon::start(fleet.root(), &[]);
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    let path = d.root.join("run/mpssd/control.sock");
    let mut conns = Vec::new();
    for _ in 0..1000 {
        let s = UnixStream::connect(&path).unwrap();
        s.set_read_timeout(Some(HANG)).unwrap();
        conns.push(s);
    }
    // The first 16 hold the slots; every other one is told and closed.
    let mut refused = 0;
    for s in &conns[16..] {
        let mut r = BufReader::new(s);
        let mut l = String::new();
        r.read_line(&mut l).unwrap();
        let v = valid(l.trim_end());
        assert_eq!(code(&v), "too_many_clients");
        refused += 1;
    }
    assert_eq!(refused, 984);
    // A held slot still works.
    let mut held = &conns[0];
    held.write_all(b"{\"v\":1,\"id\":1,\"request\":\"status\"}\n")
        .unwrap();
    let mut l = String::new();
    BufReader::new(held).read_line(&mut l).unwrap();
    assert_eq!(valid(l.trim_end())["ok"]["clients"], 16);
    drop(conns);
    // Slots come back once the daemon has seen the closes.
    let start = Instant::now();
    loop {
        match libmic::mpssd::Client::connect_path(&path).and_then(|mut c| c.status()) {
            Ok(st) => {
                assert!(st.clients >= 1);
                break;
            }
            Err(e) => {
                assert_eq!(e.code(), Some(mpssd_proto::ErrorCode::TooManyClients), "{e}");
                assert!(start.elapsed() < HANG, "slots never freed");
            }
        }
    }
    assert_eq!(d.stop(), 0);
}

#[test]
fn socket_mode_group_and_events_on_stop() {
    let fleet = Fleet::start(1);
    // A group other than root's own, if the system has one.
    let group = ["daemon", "nogroup", "adm"]
        .into_iter()
        .find_map(|g| nix::unistd::Group::from_name(g).ok().flatten())
        .expect("a daemon, nogroup or adm group");
    fleet.write_config(&format!("[daemon]\ncontrol_group = \"{}\"\n", group.name));
    let d = Daemon::start(fleet.root(), &[]);
    let meta = std::fs::metadata(fleet.root().join("run/mpssd/control.sock")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!(meta.gid(), group.gid.as_raw());
    let mut ev = d.events();
    d.signal(nix::sys::signal::Signal::SIGTERM);
    common::wait_event(&mut ev, "stopping", |e| {
        matches!(
            e.kind,
            libmic::mpssd::EventKind::Daemon {
                what: mpssd_proto::DaemonStep::Stopping
            }
        )
    });
    // Then the connection is told and closed.
    match ev.next_event() {
        Err(libmic::mpssd::ClientError::Refused(e)) => {
            assert_eq!(e.code, mpssd_proto::ErrorCode::ShuttingDown);
        }
        Err(libmic::mpssd::ClientError::Closed) => {}
        other => {
            // Supervisor events of the stop may come first.
            let mut last = other;
            while let Ok(_e) = last {
                last = ev.next_event();
            }
            assert!(matches!(
                last,
                Err(libmic::mpssd::ClientError::Refused(_) | libmic::mpssd::ClientError::Closed)
            ));
        }
    }
    assert_eq!(d.stop(), 0);
}
