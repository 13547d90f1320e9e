//! Snapshot tests of the main screens: the real `App` driven by scripted
//! actions (card states, attributes, log records, keys), drawn into a
//! `TestBackend`. Host facts and the clock are injected, so the screens are
//! deterministic.

use std::time::{Duration, Instant};

use libmic::debugfs::{parse_dp, parse_smpt, parse_vdev_info};
use libmic::klog::{LogEntry, LogRecord};
use libmic::{BootMode, CardInfo, MicRoot, MicState, MicStatus};
use mictop::app::{Action, App, Effect};
use mictop::config::{Config, ThemeName};
use mictop::model::{CardView, Detail, HostInfo, Mpssd, MpssdUpdate, OpEvent, OpKind};
use mictop::theme::Theme;
use mictop::ui;
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::style::Color;

const SMPT: &str = "MIC 0  |SMPT entry| SW DMA addr    RefCount  \n\
                    ====================================================\n\
                    \x20        |0         | 0              0         \n\
                    \x20        |1         | 0x400000000    4096      \n\
                    \x20        |2         | 0x45a6f0000    4096      \n\
                    ====================================================\n";
const DP: &str = "Bootparam: magic 0xc0ffee00\nBootparam: h2c_shutdown_db 3\nBootparam: h2c_config_db -1\n\
                  Bootparam: c2h_shutdown_db 1\nBootparam: shutdown_status 0\nBootparam: shutdown_card 0\n";

struct Screen {
    app: App,
    t0: Instant,
    term: Terminal<TestBackend>,
}

fn state_of(id: u32) -> MicState {
    match id % 8 {
        0 | 1 | 4 | 6 => MicState::Online,
        2 | 5 => MicState::Offline,
        3 => MicState::ShuttingDown,
        _ => MicState::ResetFailed,
    }
}

fn info(id: u32, state: MicState) -> CardInfo {
    let booted = state != MicState::Offline;
    let (family, stepping) =
        [("x100", "C0"), ("x100", "C0"), ("x100", "B1"), ("x100", "B0")][id as usize % 4];
    CardInfo {
        id,
        name: format!("mic{id}"),
        state,
        shutdown_status: Some(match state {
            MicState::ShuttingDown => MicStatus::Crashed,
            _ => MicStatus::Nop,
        }),
        family: Some(family.into()),
        stepping: Some(stepping.into()),
        cmdline: booted.then(|| libmic::lifecycle::default_cmdline(id)),
        firmware: booted.then(|| "mic/uos.img".into()),
        ramdisk: booted.then(|| format!("mic/mic{id}.image")),
        bootmode: booted.then_some(BootMode::Linux),
        log_buf_addr: booted.then_some(0xffff_ffff_81c3_d560),
        log_buf_len: booted.then_some(0xffff_ffff_81a1_b2c0),
        ipaddr: booted.then(|| format!("172.31.{}.1", id % 256).parse().unwrap()),
        problems: Vec::new(),
    }
}

impl Screen {
    /// `n` cards in a mix of states, everything read, 75 s after start.
    fn new(n: u32, w: u16, h: u16) -> Screen {
        let t0 = Instant::now();
        let root = MicRoot::new("/nonexistent");
        let cards = (0..n)
            .map(|i| CardView::new(root.card_by_id(i), Ok(state_of(i))))
            .collect();
        let config = Config::default();
        let app = App::new(
            config,
            Theme::new(ThemeName::Dark),
            "/tmp/mic-demo".into(),
            cards,
            t0,
        );
        let mut s = Screen {
            app,
            t0,
            term: Terminal::new(TestBackend::new(w, h)).unwrap(),
        };
        s.act(Action::Resize(w, h));
        s.act(Action::Host(HostInfo {
            hostname: "testhost".into(),
            cpu_percent: 12.4,
            cpus: 8,
            mem_used: 4 << 30,
            mem_total: 16 << 30,
        }));
        for id in 0..n {
            let st = state_of(id);
            let post = match (st, id % 8) {
                (MicState::Online, 6) => "23",
                (MicState::Online, _) => "FF",
                _ => "12",
            };
            s.act(Action::Info {
                id,
                info: Ok(info(id, st)),
                post: Some(post.into()),
                at: t0,
            });
        }
        // mic1 changed state 12 s after mictop started.
        if n > 1 {
            s.act(Action::State {
                id: 1,
                state: Ok(MicState::Offline),
                at: t0,
            });
            s.act(Action::State {
                id: 1,
                state: Ok(MicState::Online),
                at: t0 + Duration::from_secs(12),
            });
        }
        s.act(Action::Detail {
            id: 0,
            detail: Detail {
                smpt: Ok(parse_smpt(SMPT)),
                dp: Ok(parse_dp(DP)),
                vdevs: Ok(Vec::new()),
            },
        });
        s.act(Action::Tick(t0 + Duration::from_secs(75)));
        s
    }

    fn act(&mut self, a: Action) -> Vec<Effect> {
        self.app.update(a)
    }

    fn key(&mut self, code: KeyCode) -> Vec<Effect> {
        self.act(Action::Key(KeyEvent::new(code, KeyModifiers::NONE)))
    }

    fn keys(&mut self, s: &str) {
        for c in s.chars() {
            self.key(KeyCode::Char(c));
        }
    }

    fn log(&mut self, id: u32, n: u64) {
        let texts = [
            (
                5,
                "Linux version 3.10.0-micemu (build@micemu) (gcc version 4.7.0)",
            ),
            (6, "Command line: mem=8192M clocksource=tsc highres=off"),
            (6, "smpboot: Total of 244 processors activated"),
            (4, "mic_card: virtio config change ignored"),
            (3, "mic0: eth: link down"),
            (7, "mic_card: doorbell 3 allocated"),
            (6, "Run /sbin/init as init process"),
        ];
        let entries = (0..n)
            .map(|i| {
                let (level, text) = texts[i as usize % texts.len()];
                LogEntry::Record(LogRecord {
                    ts_nsec: 1_000_000 * (i + 1) * 37,
                    level,
                    facility: 0,
                    text: text.into(),
                    dict: None,
                })
            })
            .collect();
        self.act(Action::Log { id, entries });
    }

    fn render(&mut self) -> &TestBackend {
        let app = &self.app;
        self.term.draw(|f| ui::draw(f, app)).unwrap();
        self.term.backend()
    }
}

#[test]
fn fleet_view() {
    let mut s = Screen::new(8, 110, 30);
    s.log(0, 5);
    insta::assert_snapshot!("fleet", s.render());
    // The state column is coloured by state.
    let buf = s.term.backend().buffer().clone();
    let row = (0..buf.area.height)
        .find(|&y| {
            (0..buf.area.width)
                .map(|x| buf[(x, y)].symbol())
                .collect::<String>()
                .contains("mic7 ")
        })
        .unwrap();
    let x = (0..buf.area.width)
        .find(|&x| buf[(x, row)].symbol() == "r" && buf[(x + 1, row)].symbol() == "e")
        .unwrap();
    assert_eq!(buf[(x, row)].fg, Color::Red);
}

#[test]
fn sorted_by_state() {
    let mut s = Screen::new(8, 110, 30);
    s.keys("o");
    s.act(Action::Tick(s.t0 + Duration::from_secs(76)));
    insta::assert_snapshot!("sorted_by_state", s.render());
}

#[test]
fn compact_view_for_many_cards() {
    let mut s = Screen::new(256, 160, 48);
    assert!(s.app.compact());
    // Move into the grid: down two rows, right three cards, mark it.
    s.key(KeyCode::Down);
    s.key(KeyCode::Down);
    for _ in 0..3 {
        s.key(KeyCode::Right);
    }
    s.key(KeyCode::Char(' '));
    insta::assert_snapshot!("compact", s.render());
    // Paging far down scrolls the grid.
    s.key(KeyCode::End);
    insta::assert_snapshot!("compact_end", s.render());
}

#[test]
fn detail_zoom() {
    let mut s = Screen::new(4, 100, 40);
    let effects = s.key(KeyCode::Enter);
    assert!(effects.is_empty());
    insta::assert_snapshot!("detail", s.render());
}

#[test]
fn log_pane_follow_search_and_filter() {
    let mut s = Screen::new(4, 100, 30);
    s.log(0, 40);
    s.key(KeyCode::Tab);
    s.key(KeyCode::Enter);
    insta::assert_snapshot!("log_follow", s.render());
    // Search, which pauses on the most recent match.
    s.key(KeyCode::Char('/'));
    s.keys("link down");
    insta::assert_snapshot!("log_search_input", s.render());
    s.key(KeyCode::Enter);
    s.key(KeyCode::Char('N'));
    // New records while paused do not move the view.
    s.log(0, 3);
    insta::assert_snapshot!("log_search_paused", s.render());
    // Errors and worse only; follow again.
    s.keys("vvvvf");
    insta::assert_snapshot!("log_errors_only", s.render());
}

#[test]
fn help_overlay() {
    let mut s = Screen::new(4, 100, 40);
    s.key(KeyCode::Char('?'));
    insta::assert_snapshot!("help", s.render());
    s.key(KeyCode::Esc);
    assert_eq!(*s.app.overlay(), mictop::components::dialogs::Overlay::None);
}

#[test]
fn confirmation_dialog() {
    let mut s = Screen::new(4, 100, 30);
    // Mark mic0 and mic1 (space marks and moves down), then reboot.
    s.keys("  ");
    assert!(s.keys_effects('R').is_empty());
    insta::assert_snapshot!("confirm", s.render());
    let effects = s.key(KeyCode::Char('y'));
    assert_eq!(
        effects,
        vec![Effect::Run {
            kind: OpKind::Reboot,
            ids: vec![0, 1]
        }]
    );
    s.act(Action::Op {
        id: 0,
        kind: OpKind::Reboot,
        event: OpEvent::Progress("waiting for the card OS to halt".into()),
    });
    insta::assert_snapshot!("action_progress", s.render());
}

#[test]
fn error_message() {
    let mut s = Screen::new(4, 100, 30);
    s.act(Action::Op {
        id: 3,
        kind: OpKind::Reset,
        event: OpEvent::Failed(
            "the reset failed: the card's bootstrap did not come back (reset_failed)".into(),
        ),
    });
    insta::assert_snapshot!("error", s.render());
    s.key(KeyCode::Enter);
    assert!(s.app.errors().is_empty());
    insta::assert_snapshot!("error_dismissed", s.render());
}

#[test]
fn resize_redraws_the_layout() {
    let mut s = Screen::new(8, 110, 30);
    s.act(Action::Resize(70, 20));
    s.term.backend_mut().resize(70, 20);
    insta::assert_snapshot!("small_terminal", s.render());
}

impl Screen {
    fn keys_effects(&mut self, c: char) -> Vec<Effect> {
        self.key(KeyCode::Char(c))
    }
}

#[test]
fn mouse_selects_and_scrolls() {
    use ratatui::crossterm::event::{MouseButton, MouseEvent, MouseEventKind};
    let mut s = Screen::new(8, 110, 30);
    let click = |kind, column, row| {
        Action::Mouse(MouseEvent {
            kind,
            column,
            row,
            modifiers: KeyModifiers::NONE,
        })
    };
    // Row of mic3: header (2 lines), border, column header, mic0..mic2.
    let effects = s.act(click(MouseEventKind::Down(MouseButton::Left), 10, 2 + 1 + 1 + 3));
    assert_eq!(s.app.selected_id(), Some(3));
    assert_eq!(effects, vec![Effect::FollowLog(Some(3)), Effect::LoadDetail(3)]);
    s.act(click(MouseEventKind::ScrollDown, 10, 6));
    assert_eq!(s.app.selected_id(), Some(4));
    // With the mouse turned off, clicks do nothing.
    s.keys("M");
    assert!(!s.app.mouse());
    s.act(click(MouseEventKind::Down(MouseButton::Left), 10, 4));
    assert_eq!(s.app.selected_id(), Some(4));
}

#[test]
fn driver_gone_then_back() {
    let mut s = Screen::new(4, 100, 24);
    s.log(0, 3);
    let effects = s.act(Action::DriverGone(
        "/r/sys/class/mic/mic0/state: Transport endpoint is not connected (os error 107)".into(),
    ));
    assert_eq!(effects, vec![Effect::Reconnect]);
    // Told again (every watcher notices): nothing more to do.
    assert!(s.act(Action::DriverGone("again".into())).is_empty());
    let screen = s.render().to_string();
    assert!(screen.contains("driver gone — reconnecting"), "{screen}");
    assert!(
        !screen.contains("online"),
        "no card shows a state it may no longer be in: {screen}"
    );
    insta::assert_snapshot!("driver_gone", screen);

    assert_eq!(s.act(Action::DriverBack), vec![Effect::Reenumerate]);
    // The driver is back with three cards, all offline; mic1 stays selected.
    s.key(KeyCode::Down);
    let root = MicRoot::new("/nonexistent");
    let views = (0..3)
        .map(|i| CardView::new(root.card_by_id(i), Ok(MicState::Offline)))
        .collect();
    let effects = s.act(Action::Fleet(views));
    assert!(
        effects.contains(&Effect::RefreshInfo(vec![0, 1, 2])),
        "{effects:?}"
    );
    assert!(effects.contains(&Effect::FollowLog(Some(1))), "{effects:?}");
    assert_eq!(s.app.selected_id(), Some(1));
    assert!(s.app.driver_gone().is_none());
    let screen = s.render().to_string();
    assert!(!screen.contains("driver gone"), "{screen}");
    for card in ["mic0", "mic1", "mic2"] {
        let row = screen
            .lines()
            .find(|l| l.contains(&format!(" {card} ")))
            .unwrap_or_default();
        assert!(row.contains("offline"), "{row}");
        // Seen just now: its state is at least that old, not as old as mictop.
        assert!(row.contains("≥0s"), "{row}");
    }
}

#[test]
fn an_attribute_snapshot_older_than_the_state_does_not_override_it() {
    let mut s = Screen::new(1, 100, 24);
    let before = s.t0 + Duration::from_secs(80);
    let t = before + Duration::from_millis(5);
    // The watcher read reset_failed; a snapshot that began before that read
    // (and so read the card still online) arrives after it.
    s.act(Action::State {
        id: 0,
        state: Ok(MicState::ResetFailed),
        at: t,
    });
    s.act(Action::Info {
        id: 0,
        info: Ok(info(0, MicState::Online)),
        post: Some("01".into()),
        at: before,
    });
    assert_eq!(s.app.cards()[0].state, Some(MicState::ResetFailed));
    // A snapshot begun after it is believed.
    s.act(Action::Info {
        id: 0,
        info: Ok(info(0, MicState::Offline)),
        post: Some("12".into()),
        at: t + Duration::from_millis(5),
    });
    assert_eq!(s.app.cards()[0].state, Some(MicState::Offline));
}

// ---- mpssd's view ----------------------------------------------------------

/// A device page with a console and a net device, as mic-core dumps it.
const DP_DEVICES: &str = "Bootparam: magic 0xc0ffee00\n\
    Device type 3 num_vq 2 feature_len 4 config_len 8 status 0xf at offset 0x10\n\
    \x20 host features: 01 00 00 00\n\
    \x20 guest features: 01 00 00 00\n\
    Device type 1 num_vq 2 feature_len 4 config_len 12 status 0x3 at offset 0x60\n\
    \x20 host features: 83 4f 00 00\n\
    \x20 guest features: 00 00 00 00\n";

/// The host driver's record of them: the console up and busy, net not
/// taken up by the card's driver.
const VDEV_INFO: &str = "VDEV type 3 (console) state UP in 1204 out 8811 slot 0x10 c2h_db 4 doorbells 93 resets 0 status 0xf\n\
    \x20 vring 0: num 128 last_avail 42 last_used 41 held 1 used card@0x90000 chains 42 completed 41 notifies 40 errors 0\n\
    \x20 vring 1: num 128 last_avail 17 last_used 17 held 0 used host chains 17 completed 17 notifies 17 errors 0\n\
    VDEV type 1 (net) state DOWN in 0 out 0 slot 0x60 c2h_db 5 doorbells 0 resets 0 status 0x3\n";

fn device(kind: &str, target: &str, state: &str, counters: &[(&str, u64)]) -> libmic::mpssd::DeviceStatus {
    libmic::mpssd::DeviceStatus {
        kind: kind.into(),
        target: target.into(),
        state: state.into(),
        counters: counters.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
    }
}

fn supervised(id: u32, supervisor: libmic::mpssd::SupervisorState) -> libmic::mpssd::CardStatus {
    libmic::mpssd::CardStatus {
        card: id,
        name: format!("mic{id}"),
        state: Some(state_of(id)),
        shutdown_status: Some(MicStatus::Nop),
        supervisor,
        since_ms: 1_764_590_400_000,
        adopted: id == 0,
        boots: u64::from(id),
        crashes: 0,
        recent_crashes: 0,
        next_boot_ms: None,
        devices: Vec::new(),
        last_crash: None,
        last_error: None,
    }
}

/// mpssd supervising mic0 (running, its net device down), mic1 (running,
/// everything up), mic2 (waiting to boot again after a crash) and mic3 (in
/// a crash loop).
fn mpssd_status() -> libmic::mpssd::DaemonStatus {
    use libmic::mpssd::SupervisorState as S;
    let mut m0 = supervised(0, S::Running);
    m0.devices = vec![
        device(
            "console",
            "/dev/pts/3",
            "up",
            &[("rx_bytes", 8811), ("tx_bytes", 1204)],
        ),
        device(
            "net",
            "mic0 172.31.0.254/24",
            "down",
            &[("ring_full", 2), ("rx_packets", 0)],
        ),
    ];
    let mut m1 = supervised(1, S::Running);
    m1.devices = vec![device("console", "/dev/pts/4", "up", &[])];
    let mut m2 = supervised(2, S::Backoff);
    m2.crashes = 1;
    m2.recent_crashes = 1;
    m2.next_boot_ms = Some(1_764_590_402_000);
    m2.last_crash = Some(libmic::mpssd::CrashSummary {
        ts_ms: 1_764_590_400_000,
        bundle: Some("/var/lib/mpssd/crash/mic2-20251201T120000.000Z".into()),
    });
    let mut m3 = supervised(3, S::CrashLoop);
    m3.crashes = 6;
    m3.last_error = Some("6 crashes within 1800 s: left down".into());
    libmic::mpssd::DaemonStatus {
        version: "0.1.0".into(),
        protocol: 1,
        pid: 4242,
        root: "/tmp/mic-demo".into(),
        config_file: "/tmp/mic-demo/etc/mpss/mpssd.toml".into(),
        config_loaded_ms: 0,
        started_ms: 0,
        clients: 1,
        cards: vec![m0, m1, m2, m3],
    }
}

#[test]
fn mpssd_supervision_devices_and_marks() {
    let mut s = Screen::new(4, 120, 56);
    s.act(Action::Mpssd(MpssdUpdate::Status(Box::new(mpssd_status()))));
    s.act(Action::Detail {
        id: 0,
        detail: Detail {
            smpt: Ok(parse_smpt(SMPT)),
            dp: Ok(parse_dp(DP_DEVICES)),
            vdevs: Ok(parse_vdev_info(VDEV_INFO)),
        },
    });
    // The table has the mpssd column: mic0's net is down.
    insta::assert_snapshot!("mpssd_fleet", s.render());
    s.key(KeyCode::Enter);
    insta::assert_snapshot!("mpssd_detail", s.render());
    // mic2: the supervisor waits to boot it again; its last crash and bundle.
    s.key(KeyCode::Esc);
    s.key(KeyCode::Down);
    s.key(KeyCode::Down);
    s.key(KeyCode::Enter);
    insta::assert_snapshot!("mpssd_detail_backoff", s.render());
}

#[test]
fn a_crash_is_an_event_with_its_bundle() {
    let mut s = Screen::new(4, 110, 30);
    s.act(Action::Mpssd(MpssdUpdate::Status(Box::new(mpssd_status()))));
    s.log(0, 4);
    let bundle = "/var/lib/mpssd/crash/mic0-20251201T120005.123Z";
    s.act(Action::Mpssd(MpssdUpdate::Event(libmic::mpssd::Event {
        ts_ms: 1_764_590_405_123,
        card: Some(0),
        kind: libmic::mpssd::EventKind::Crash {
            bundle: Some(bundle.into()),
            recent_crashes: 1,
        },
    })));
    // A line among mic0's log lines (cut to the pane), the footer whole.
    insta::assert_snapshot!("mpssd_crash_event", s.render());
    let want = format!("── mic0 crashed at 2025-12-01T12:00:05.123Z; forensics: {bundle} ──");
    assert!(
        s.app
            .log()
            .lines
            .iter()
            .any(|(_, l)| *l == mictop::components::log::LogLine::Marker(want.clone())),
        "{want}"
    );
    assert_eq!(
        s.app.status(),
        Some(format!("mic0 crashed; forensics: {bundle}").as_str())
    );
    // Another card's crash is not in mic0's log, only in the footer.
    let lines = s.app.log().lines.len();
    s.act(Action::Mpssd(MpssdUpdate::Event(libmic::mpssd::Event {
        ts_ms: 1_764_590_406_000,
        card: Some(1),
        kind: libmic::mpssd::EventKind::Crash {
            bundle: None,
            recent_crashes: 1,
        },
    })));
    assert_eq!(s.app.log().lines.len(), lines);
    assert_eq!(s.app.status(), Some("mic1 crashed; no forensics bundle written"));
}

#[test]
fn without_mpssd_the_detail_says_so_and_the_marks_go() {
    let mut s = Screen::new(4, 110, 40);
    s.act(Action::Mpssd(MpssdUpdate::Status(Box::new(mpssd_status()))));
    s.act(Action::Mpssd(MpssdUpdate::Gone(Mpssd::NotRunning(
        "mpssd is not running (no /tmp/mic-demo/run/mpssd/control.sock)".into(),
    ))));
    assert!(s.app.cards().iter().all(|c| c.supervision.is_none()));
    s.key(KeyCode::Enter);
    insta::assert_snapshot!("mpssd_not_running", s.render());
}
