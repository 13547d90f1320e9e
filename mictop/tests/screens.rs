//! Snapshot tests of the main screens: the real `App` driven by scripted
//! actions (card states, attributes, log records, keys), drawn into a
//! `TestBackend`. Host facts and the clock are injected, so the screens are
//! deterministic.

use std::time::{Duration, Instant};

use libmic::debugfs::{parse_dp, parse_smpt};
use libmic::klog::{LogEntry, LogRecord};
use libmic::{BootMode, CardInfo, MicRoot, MicState, MicStatus};
use mictop::app::{Action, App, Effect};
use mictop::config::{Config, ThemeName};
use mictop::model::{CardView, Detail, HostInfo, OpEvent, OpKind};
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
