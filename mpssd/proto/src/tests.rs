use std::sync::OnceLock;

use super::*;

fn schema() -> &'static jsonschema::Validator {
    static V: OnceLock<jsonschema::Validator> = OnceLock::new();
    V.get_or_init(|| {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../schema/protocol.schema.json");
        let text = std::fs::read_to_string(path).unwrap();
        let schema: serde_json::Value = serde_json::from_str(&text).unwrap();
        jsonschema::validator_for(&schema).unwrap()
    })
}

/// Encodes, checks the line against the schema, decodes it back.
fn valid(line: &[u8]) {
    assert_eq!(line.last(), Some(&b'\n'));
    let v: serde_json::Value = serde_json::from_slice(line).unwrap();
    let errors: Vec<String> = schema().iter_errors(&v).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{v}: {errors:#?}");
}

fn card() -> CardStatus {
    CardStatus {
        card: 3,
        name: "mic3".into(),
        state: Some(MicState::ShuttingDown),
        shutdown_status: Some(MicStatus::Crashed),
        supervisor: SupervisorState::Backoff,
        since_ms: 1_700_000_000_000,
        adopted: true,
        boots: 2,
        crashes: 1,
        recent_crashes: 1,
        next_boot_ms: Some(1_700_000_001_000),
        devices: vec![DeviceStatus {
            kind: "console".into(),
            target: "/dev/pts/3".into(),
            state: "up".into(),
            counters: [("rx_bytes".to_owned(), 5)].into(),
        }],
        last_crash: Some(CrashSummary {
            ts_ms: 1,
            bundle: Some("/var/lib/mpssd/crash/mic3-x".into()),
        }),
        last_error: None,
    }
}

fn requests() -> Vec<Request> {
    vec![
        Request::Status,
        Request::CardStatus { card: 1 },
        Request::Subscribe,
        Request::ReloadConfig,
        Request::ConsoleAttach {
            card: 0,
            mode: ConsoleMode::ReadOnly,
        },
        Request::ConsoleDetach { card: 0 },
        Request::BlockSwap {
            card: 2,
            path: Some("/img".into()),
        },
        Request::BlockSwap { card: 2, path: None },
    ]
}

fn server_frames() -> Vec<ServerFrame> {
    let mut idle = card();
    idle.state = None;
    idle.shutdown_status = None;
    idle.next_boot_ms = None;
    idle.last_crash = None;
    idle.devices.clear();
    idle.last_error = Some("reset timed out".into());
    let kinds = vec![
        EventKind::CardState {
            from: None,
            to: MicState::Online,
        },
        EventKind::Supervisor {
            from: SupervisorState::Idle,
            to: SupervisorState::Running,
            reason: "booted by an operator".into(),
        },
        EventKind::ShutdownStatus {
            status: Some(MicStatus::Restart),
            waited_ms: 3,
        },
        EventKind::ShutdownStatus {
            status: None,
            waited_ms: 60_000,
        },
        EventKind::Crash {
            bundle: Some("b".into()),
            recent_crashes: 2,
        },
        EventKind::Reset {
            outcome: ResetOutcome::ResetFailed,
            waited_ms: 9,
        },
        EventKind::Boot {
            reason: "restart".into(),
            error: Some("EINVAL".into()),
        },
        EventKind::Backoff {
            delay_ms: 1000,
            attempt: 2,
        },
        EventKind::CrashLoop {
            crashes: 5,
            window_secs: 600,
        },
        EventKind::DevicesAdded {
            devices: vec!["console".into()],
        },
        EventKind::DevicesRemoved { devices: vec![] },
        EventKind::ConfigReloaded {
            source: ReloadSource::Sighup,
            ok: false,
            changed: false,
            error: Some("x".into()),
        },
        EventKind::Daemon {
            what: DaemonStep::Ready,
        },
        EventKind::Error { message: "m".into() },
        EventKind::Lagged { missed: 7 },
    ];
    let mut frames: Vec<ServerFrame> = kinds
        .into_iter()
        .enumerate()
        .map(|(i, kind)| {
            ServerFrame::event(Event {
                ts_ms: 5,
                card: (i % 2 == 0).then_some(1),
                kind,
            })
        })
        .collect();
    frames.extend([
        ServerFrame::ok(
            Some(1),
            Response::Status(DaemonStatus {
                version: "0.1.0".into(),
                protocol: VERSION,
                pid: 42,
                root: "/".into(),
                config_file: "/etc/mpss/mpssd.toml".into(),
                config_loaded_ms: 1,
                started_ms: 1,
                clients: 1,
                cards: vec![card(), idle.clone()],
            }),
        ),
        ServerFrame::ok(None, Response::Card(idle)),
        ServerFrame::ok(Some(2), Response::Subscribed),
        ServerFrame::ok(Some(3), Response::Reloaded(ReloadResult { changed: true })),
        ServerFrame::error(
            Some(4),
            ErrorBody::new(ErrorCode::NotAvailable, "no console backend"),
        ),
        ServerFrame::error(None, ErrorBody::new(ErrorCode::TooManyClients, "full")),
    ]);
    frames
}

#[test]
fn requests_round_trip_and_match_the_schema() {
    for (i, r) in requests().into_iter().enumerate() {
        let frame = ClientFrame::new((i % 2 == 0).then_some(i as u64), r);
        let line = encode(&frame);
        valid(&line);
        let back = decode_request(&line[..line.len() - 1]).unwrap();
        assert_eq!(back, frame);
    }
}

#[test]
fn server_frames_round_trip_and_match_the_schema() {
    for frame in server_frames() {
        let line = encode(&frame);
        valid(&line);
        assert_eq!(decode_server(&line[..line.len() - 1]).unwrap(), frame);
    }
}

#[test]
fn wire_shape_is_as_documented() {
    let line = encode(&ClientFrame::new(Some(7), Request::CardStatus { card: 2 }));
    assert_eq!(
        line,
        b"{\"v\":1,\"id\":7,\"request\":\"card_status\",\"card\":2}\n"
    );
    let line = encode(&ServerFrame::ok(Some(7), Response::Subscribed));
    assert_eq!(line, b"{\"v\":1,\"id\":7,\"ok\":{\"response\":\"subscribed\"}}\n");
    let line = encode(&ServerFrame::event(Event {
        ts_ms: 1,
        card: Some(0),
        kind: EventKind::Lagged { missed: 2 },
    }));
    assert_eq!(
        line,
        b"{\"v\":1,\"event\":{\"ts_ms\":1,\"card\":0,\"kind\":\"lagged\",\"missed\":2}}\n"
    );
}

#[test]
fn the_schema_is_not_vacuous() {
    for bad in [
        r#"{"v":2,"request":"status"}"#,
        r#"{"request":"status"}"#,
        r#"{"v":1,"request":"card_status"}"#,
        r#"{"v":1,"request":"status","extra":1}"#,
        r#"{"v":1,"ok":{"response":"card","card":0}}"#,
        r#"{"v":1,"event":{"ts_ms":1,"kind":"card_state","from":null,"to":"banana"}}"#,
        r#"{"v":1,"error":{"code":"nope","message":""}}"#,
    ] {
        let v: serde_json::Value = serde_json::from_str(bad).unwrap();
        assert!(!schema().is_valid(&v), "accepted {bad}");
    }
}

#[test]
fn unknown_versions_are_refused_first() {
    let (id, e) = decode_request(br#"{"v":2,"id":9,"request":"no_such_thing"}"#).unwrap_err();
    assert_eq!(id, Some(9));
    assert_eq!(e.code(), ErrorCode::UnsupportedVersion);
    assert_eq!(
        e.to_string(),
        "protocol version 2 is not supported: this mpssd speaks version 1"
    );
    let (_, e) = decode_request(br#"{"v":"1","request":"status"}"#).unwrap_err();
    assert_eq!(e.code(), ErrorCode::UnsupportedVersion);
    let (_, e) = decode_request(br#"{"request":"status"}"#).unwrap_err();
    assert_eq!(e, DecodeError::NoVersion);
    assert!(decode_server(br#"{"v":3,"event":{}}"#).is_err());
}

#[test]
fn garbage_is_a_bad_request() {
    for (bad, want) in [
        (&b"hello"[..], "not a JSON object"),
        (b"[1,2]", "not a JSON object: found an array"),
        (b"\xff\xfe", "not a JSON object"),
        (br#"{"v":1,"request":"launch_missiles"}"#, "bad request"),
        (br#"{"v":1,"request":"card_status","card":-1}"#, "bad request"),
        (br#"{"v":1,"request":"card_status","card":"x"}"#, "bad request"),
    ] {
        let (_, e) = decode_request(bad).unwrap_err();
        assert_eq!(e.code(), ErrorCode::BadRequest, "{e}");
        assert!(e.to_string().starts_with(want), "{e}");
    }
    let (id, _) = decode_request(br#"{"v":1,"id":5,"request":"nope"}"#).unwrap_err();
    assert_eq!(id, Some(5));
}

#[test]
fn supervisor_state_names_match_serde() {
    for s in SupervisorState::ALL {
        assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{}\"", s.as_str()));
    }
}

#[test]
fn every_event_kind_is_named_and_described() {
    let mut seen = Vec::new();
    for frame in server_frames() {
        let ServerBody::Event(e) = frame.body else {
            continue;
        };
        let name = e.kind.name();
        assert!(EventKind::NAMES.contains(&name), "{name} not in NAMES");
        let wire = serde_json::to_value(&e).unwrap();
        assert_eq!(wire["kind"], name);
        let (_, text) = e.describe();
        assert!(!text.is_empty());
        if e.card == Some(1) {
            assert!(text.starts_with("mic1: "), "{text}");
        }
        if !seen.contains(&name) {
            seen.push(name);
        }
    }
    assert_eq!(seen, EventKind::NAMES, "the fixture has every kind, in order");
}
