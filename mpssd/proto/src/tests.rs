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

fn holder() -> ConsoleClient {
    ConsoleClient {
        pid: Some(4242),
        uid: Some(0),
        name: Some("mictop".into()),
        since_ms: 1_700_000_000_000,
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
            replay: None,
            force: false,
            client: None,
            size: None,
        },
        Request::ConsoleAttach {
            card: 1,
            mode: ConsoleMode::ReadWrite,
            replay: Some(Replay::Bytes(0)),
            force: true,
            client: Some("micctl console".into()),
            size: Some(WindowSize { cols: 132, rows: 43 }),
        },
        Request::ConsoleAttach {
            card: 1,
            mode: ConsoleMode::ReadOnly,
            replay: Some(Replay::Lines(50)),
            force: false,
            client: None,
            size: None,
        },
        Request::ConsoleInput {
            card: 0,
            data: Bytes(b"uname -a\r\x00\xff".to_vec()),
        },
        Request::ConsoleInput {
            card: 0,
            data: Bytes(Vec::new()),
        },
        Request::ConsoleResize {
            card: 0,
            cols: 80,
            rows: 24,
        },
        Request::ConsoleDetach { card: 0 },
        Request::BlockSwap {
            card: 2,
            path: Some("/img".into()),
        },
        Request::BlockSwap { card: 2, path: None },
    ]
}

#[allow(clippy::too_many_lines)] // one list of every frame the daemon sends
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
        ServerFrame::ok(
            Some(5),
            Response::ConsoleAttached(ConsoleAttached {
                card: 0,
                mode: ConsoleMode::ReadOnly,
                replay_bytes: 1234,
                pty: Some("/dev/pts/4".into()),
                device_up: true,
                writer: Some(holder()),
                taken_from: None,
            }),
        ),
        ServerFrame::ok(
            None,
            Response::ConsoleAttached(ConsoleAttached {
                card: 1,
                mode: ConsoleMode::ReadWrite,
                replay_bytes: 0,
                pty: None,
                device_up: false,
                writer: None,
                taken_from: Some(holder()),
            }),
        ),
        ServerFrame::ok(Some(6), Response::ConsoleInput { card: 0, bytes: 9 }),
        ServerFrame::ok(Some(7), Response::ConsoleResized { card: 0 }),
        ServerFrame::ok(Some(8), Response::ConsoleDetached { card: 0 }),
        ServerFrame::ok(
            Some(9),
            Response::BlockSwapped(BlockSwapped {
                card: 2,
                path: Some("/var/lib/mic/mic2.img".into()),
                read_only: true,
                sectors: 2048,
                added: true,
            }),
        ),
        ServerFrame::ok(
            Some(10),
            Response::BlockSwapped(BlockSwapped {
                card: 2,
                path: None,
                read_only: false,
                sectors: 0,
                added: false,
            }),
        ),
        ServerFrame::error(
            Some(11),
            ErrorBody::new(ErrorCode::ConsoleBusy, "held by \"micctl\" (pid 7)"),
        ),
        ServerFrame::error(Some(12), ErrorBody::new(ErrorCode::NotAttached, "x")),
        ServerFrame::error(Some(13), ErrorBody::new(ErrorCode::ReadOnly, "x")),
        ServerFrame::error(Some(14), ErrorBody::new(ErrorCode::DeviceError, "x")),
        ServerFrame::console(
            0,
            ConsoleEvent::Output {
                data: Bytes(b"\x1b[0mroot@mic0:~# \xff".to_vec()),
                replay: true,
            },
        ),
        ServerFrame::console(
            0,
            ConsoleEvent::Output {
                data: Bytes(b"x".to_vec()),
                replay: false,
            },
        ),
        ServerFrame::console(
            1,
            ConsoleEvent::Ended {
                reason: EndReason::TakenOver,
                by: Some(holder()),
                message: "\"mictop\" (pid 4242, uid 0) took mic1's console read-write (forced)".into(),
            },
        ),
        ServerFrame::console(
            0,
            ConsoleEvent::Device {
                up: false,
                reason: "the card is resetting".into(),
            },
        ),
        ServerFrame::console(0, ConsoleEvent::Lagged { missed: 4096 }),
        ServerFrame::console(
            0,
            ConsoleEvent::Ended {
                reason: EndReason::DaemonStopping,
                by: None,
                message: "mpssd is stopping".into(),
            },
        ),
        ServerFrame::console(
            0,
            ConsoleEvent::Ended {
                reason: EndReason::CardDown,
                by: None,
                message: "mic0 is down (idle)".into(),
            },
        ),
        ServerFrame::console(
            0,
            ConsoleEvent::Ended {
                reason: EndReason::ConsoleRemoved,
                by: None,
                message: "the card removed its console".into(),
            },
        ),
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
fn console_frames_are_as_documented() {
    let line = encode(&ServerFrame::console(
        3,
        ConsoleEvent::Output {
            data: Bytes(b"hi\n".to_vec()),
            replay: false,
        },
    ));
    assert_eq!(
        line,
        b"{\"v\":1,\"console\":{\"card\":3,\"kind\":\"output\",\"data\":\"aGkK\"}}\n"
    );
    let req =
        decode_request(br#"{"v":1,"id":1,"request":"console_input","card":3,"data":"bHMNCg=="}"#).unwrap();
    assert_eq!(
        req.request,
        Request::ConsoleInput {
            card: 3,
            data: Bytes(b"ls\r\n".to_vec())
        }
    );
    let req = decode_request(br#"{"v":1,"request":"console_attach","card":0,"mode":"read_write"}"#).unwrap();
    assert_eq!(
        req.request,
        Request::ConsoleAttach {
            card: 0,
            mode: ConsoleMode::ReadWrite,
            replay: None,
            force: false,
            client: None,
            size: None
        },
        "version 1's first form still decodes"
    );
    let (_, e) =
        decode_request(br#"{"v":1,"request":"console_input","card":0,"data":"not base64!"}"#).unwrap_err();
    assert_eq!(e.code(), ErrorCode::BadRequest);
    assert_eq!(holder().to_string(), "\"mictop\" (pid 4242, uid 0)");
    let req = decode_request(
        br#"{"v":1,"request":"console_attach","card":0,"mode":"read_only","replay":{"lines":20}}"#,
    )
    .unwrap();
    assert!(matches!(
        req.request,
        Request::ConsoleAttach {
            replay: Some(Replay::Lines(20)),
            ..
        }
    ));
    let (_, e) = decode_request(
        br#"{"v":1,"request":"console_attach","card":0,"mode":"read_only","replay":{"pages":2}}"#,
    )
    .unwrap_err();
    assert_eq!(e.code(), ErrorCode::BadRequest);
    let line = encode(&ServerFrame::console(
        0,
        ConsoleEvent::Ended {
            reason: EndReason::TakenOver,
            by: None,
            message: "m".into(),
        },
    ));
    assert_eq!(
        line,
        b"{\"v\":1,\"console\":{\"card\":0,\"kind\":\"ended\",\"reason\":\"taken_over\",\"message\":\"m\"}}\n"
    );
    for r in [
        EndReason::CardDown,
        EndReason::ConsoleRemoved,
        EndReason::DaemonStopping,
        EndReason::TakenOver,
    ] {
        assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
    }
}

#[test]
fn response_names_match_serde() {
    for f in server_frames() {
        if let ServerBody::Ok(r) = &f.body {
            let v = serde_json::to_value(r).unwrap();
            assert_eq!(v["response"], r.name());
        }
    }
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
        r#"{"v":1,"request":"console_input","card":0,"data":"a!=="}"#,
        r#"{"v":1,"request":"console_attach","card":0,"mode":"read_write","force":"yes"}"#,
        r#"{"v":1,"console":{"card":0,"kind":"output"}}"#,
        r#"{"v":1,"console":{"card":0,"kind":"mode","mode":"owner","reason":""}}"#,
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

/// Console output taken apart without the parser is what the parser makes
/// of it; any line changed a little is either still that or left to the
/// parser, whose verdict stands.
#[test]
fn console_output_is_decoded_quickly_as_the_parser_would() {
    let mut seed = 11u64;
    let mut next = move |n: u64| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) % n
    };
    let mut quick = 0;
    for case in 0..3000 {
        let data: Vec<u8> = (0..next(200)).map(|_| u8::try_from(next(256)).unwrap()).collect();
        let frame = ServerFrame {
            v: VERSION,
            id: None,
            body: ServerBody::Console(ConsoleFrame {
                card: u32::try_from(next(300)).unwrap(),
                event: ConsoleEvent::Output {
                    data: Bytes(data),
                    replay: case % 2 == 0,
                },
            }),
        };
        let mut line = encode(&frame);
        line.pop();
        assert_eq!(
            console_output(&line),
            Some(frame.clone()),
            "{}",
            String::from_utf8_lossy(&line)
        );
        // One byte changed, dropped or added, anywhere.
        let at = usize::try_from(next(line.len() as u64)).unwrap();
        let mut changed = line.clone();
        match case % 3 {
            0 => changed[at] = b" \"0aA=,}{:9+/x\\"[usize::try_from(next(15)).unwrap()],
            1 => {
                changed.remove(at);
            }
            _ => changed.insert(at, b"\"0 ,}\\="[usize::try_from(next(7)).unwrap()]),
        }
        if let Some(got) = console_output(&changed) {
            quick += 1;
            let parsed = serde_json::from_slice::<ServerFrame>(&changed).expect("the parser takes it too");
            assert_eq!(got, parsed, "{}", String::from_utf8_lossy(&changed));
        }
        let careful = serde_json::from_slice::<ServerFrame>(&changed)
            .ok()
            .filter(|f| f.v == VERSION);
        assert_eq!(
            decode_server(&changed).ok(),
            careful,
            "{}",
            String::from_utf8_lossy(&changed)
        );
    }
    assert!(
        quick > 100,
        "changes that leave a frame are taken quickly too: {quick}"
    );
}

#[test]
fn other_frames_and_spellings_are_left_to_the_parser() {
    for line in [
        &br#"{"v":1,"console":{"card":0,"kind":"output","data":"aGk=","replay":false},"id":3}"#[..],
        br#"{"v":1, "console":{"card":0,"kind":"output","data":"aGk=","replay":false}}"#,
        br#"{"v":1,"console":{"card":00,"kind":"output","data":"aGk=","replay":false}}"#,
        br#"{"v":2,"console":{"card":0,"kind":"output","data":"aGk=","replay":false}}"#,
        br#"{"v":1,"console":{"card":0,"kind":"output","data":"aGk\u003d","replay":false}}"#,
        br#"{"v":1,"console":{"card":4294967296,"kind":"output","data":"aGk=","replay":false}}"#,
        br#"{"v":1,"console":{"card":0,"kind":"output","data":"aGk=","replay":false}}x"#,
    ] {
        assert_eq!(console_output(line), None, "{}", String::from_utf8_lossy(line));
    }
    // The one the parser takes all the same.
    let escaped = br#"{"v":1,"console":{"card":0,"kind":"output","data":"aGk\u003d","replay":false}}"#;
    assert!(matches!(
        decode_server(escaped).unwrap().body,
        ServerBody::Console(ConsoleFrame { event: ConsoleEvent::Output { ref data, .. }, .. }) if data.0 == b"hi"
    ));
}
