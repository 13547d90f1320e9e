//! The console pane: the real `App` attached to consoles whose bytes the
//! tests script (a fake source: the events a source sends), drawn into a
//! `TestBackend` and snapshotted — colours, cursor movement, a full-screen
//! program, scrollback, typing with the write side, several consoles.

use std::fmt::Write as _;
use std::time::Instant;

use libmic::{MicRoot, MicState};
use mictop::app::{Action, App, Effect, Focus};
use mictop::components::console::ConsoleOp;
use mictop::config::{Config, ThemeName};
use mictop::console::{Access, ConsoleEvent, TermSize};
use mictop::model::CardView;
use mictop::theme::Theme;
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::style::{Color, Modifier};

struct Screen {
    app: App,
    term: Terminal<TestBackend>,
}

impl Screen {
    fn new(cards: u32) -> Screen {
        let root = MicRoot::new("/nonexistent");
        let views = (0..cards)
            .map(|i| CardView::new(root.card_by_id(i), Ok(MicState::Online)))
            .collect();
        let app = App::new(
            Config::default(),
            Theme::new(ThemeName::Dark),
            "/r".into(),
            views,
            Instant::now(),
        );
        let mut s = Screen {
            app,
            term: Terminal::new(TestBackend::new(100, 30)).unwrap(),
        };
        s.app.update(Action::Resize(100, 30));
        s
    }

    fn key(&mut self, code: KeyCode) -> Vec<Effect> {
        self.key_mod(code, KeyModifiers::NONE)
    }

    fn key_mod(&mut self, code: KeyCode, m: KeyModifiers) -> Vec<Effect> {
        self.app.update(Action::Key(KeyEvent::new(code, m)))
    }

    fn chars(&mut self, s: &str) -> Vec<Effect> {
        s.chars().flat_map(|c| self.key(KeyCode::Char(c))).collect()
    }

    fn out(&mut self, card: u32, bytes: &[u8]) {
        self.app.update(Action::Console {
            card,
            event: ConsoleEvent::Output(bytes.to_vec()),
        });
    }

    fn event(&mut self, card: u32, event: ConsoleEvent) -> Vec<Effect> {
        self.app.update(Action::Console { card, event })
    }

    fn render(&mut self) -> &Buffer {
        let app = &self.app;
        self.term.draw(|f| mictop::ui::draw(f, app)).unwrap();
        self.term.backend().buffer()
    }

    fn text(&mut self) -> String {
        self.render();
        self.term.backend().to_string()
    }

    /// Attaches the selected card's console (c) and checks what is asked.
    fn attach(&mut self, card: u32) -> TermSize {
        let effects = self.key(KeyCode::Char('c'));
        let size = effects
            .iter()
            .find_map(|e| match e {
                Effect::Console(ConsoleOp::Attach {
                    card: c,
                    access,
                    size,
                }) if *c == card => {
                    assert_eq!(*access, Access::ReadOnly, "attached read-only by default");
                    Some(*size)
                }
                _ => None,
            })
            .unwrap_or_else(|| panic!("no attach of mic{card}: {effects:?}"));
        self.event(
            card,
            ConsoleEvent::Access {
                access: Access::ReadOnly,
                writer: None,
            },
        );
        size
    }
}

/// Where the console pane's inside starts on the 100×30 screen (the
/// bottom right pane's border, then the inside).
fn inside_origin(buf: &Buffer) -> (u16, u16) {
    let y = (0..buf.area.height)
        .find(|&y| {
            (0..buf.area.width)
                .map(|x| buf[(x, y)].symbol())
                .collect::<String>()
                .contains("console mic")
        })
        .expect("the console pane's title");
    let x = (0..buf.area.width)
        .rev()
        .find(|&x| buf[(x, y + 1)].symbol() == "│" && x < buf.area.width - 1)
        .expect("the pane's left border")
        + 1;
    (x, y + 1)
}

#[test]
fn the_pane_attaches_read_only_at_its_own_size() {
    let mut s = Screen::new(2);
    let size = s.attach(0);
    // 100 wide: the detail pane takes 46, the console the rest, borders off.
    assert_eq!(size, TermSize { cols: 52, rows: 20 });
    assert_eq!(s.app.focus(), Focus::Console);
    s.out(
        0,
        b"\r\nIntel(R) Xeon Phi(TM) coprocessor mic0 (hvc0)\r\n\r\nroot@mic0:~# ",
    );
    insta::assert_snapshot!("console_attached", s.text());
    // Read-only: keys are mictop's, nothing is typed.
    let effects = s.chars("ls");
    assert!(
        !effects
            .iter()
            .any(|e| matches!(e, Effect::Console(ConsoleOp::Send { .. }))),
        "{effects:?}"
    );
    // A resize reaches the console.
    let effects = s.app.update(Action::Resize(120, 40));
    assert!(
        effects.contains(&Effect::Console(ConsoleOp::Resize {
            card: 0,
            size: TermSize { cols: 72, rows: 30 }
        })),
        "{effects:?}"
    );
}

#[test]
fn colours_and_attributes_render_as_the_card_set_them() {
    let mut s = Screen::new(1);
    s.attach(0);
    s.out(
        0,
        b"\x1b[31mred\x1b[0m \x1b[1;32mbold\x1b[0m \x1b[44mbluebg\x1b[0m \
          \x1b[38;5;208morange\x1b[0m \x1b[38;2;10;20;30mrgb\x1b[0m \x1b[7mrev\x1b[0m \x1b[4mul\x1b[0m\r\n",
    );
    insta::assert_snapshot!("console_colours", s.text());
    let buf = s.render().clone();
    let (x, y) = inside_origin(&buf);
    let at = |dx: u16| &buf[(x + dx, y)];
    assert_eq!((at(0).symbol(), at(0).fg), ("r", Color::Red));
    assert_eq!(at(4).fg, Color::Green);
    assert!(at(4).modifier.contains(Modifier::BOLD));
    assert_eq!(at(9).bg, Color::Blue);
    assert_eq!(at(16).fg, Color::Indexed(208));
    assert_eq!(at(23).fg, Color::Rgb(10, 20, 30));
    assert!(at(27).modifier.contains(Modifier::REVERSED));
    assert!(at(31).modifier.contains(Modifier::UNDERLINED));
    // After the reset: the terminal's own colours.
    assert_eq!(at(3).fg, Color::Reset);
}

#[test]
fn cursor_movement_and_erasing() {
    let mut s = Screen::new(1);
    s.attach(0);
    s.out(
        0,
        b"line one\r\nline two\r\nline three\
          \x1b[2A\x1b[5G>>\
          \x1b[5;10Hat 5,10\
          \x1b[3;1H\x1b[Kreplaced\
          \x1b[2;6H\x1b[1P\
          \x1b[7;3H",
    );
    insta::assert_snapshot!("console_cursor", s.text());
    // The cursor is drawn where the card left it (row 7, column 3).
    let buf = s.render().clone();
    let (x, y) = inside_origin(&buf);
    assert!(buf[(x + 2, y + 6)].modifier.contains(Modifier::REVERSED));
    assert!(!buf[(x + 3, y + 6)].modifier.contains(Modifier::REVERSED));
}

#[test]
fn a_full_screen_program_and_back() {
    let mut s = Screen::new(1);
    s.attach(0);
    s.out(0, b"root@mic0:~# top\r\n");
    // What a top-like program does: the alternate screen, a cleared
    // screen, absolute positioning, a reverse-video header, a scroll
    // region, the cursor hidden.
    let mut top = Vec::new();
    top.extend_from_slice(b"\x1b[?1049h\x1b[?25l\x1b[H\x1b[2J");
    top.extend_from_slice(b"\x1b[1;1H\x1b[7m top - 12:00:00 up 3 min,  1 user   load 0.00 \x1b[K\x1b[0m");
    top.extend_from_slice(b"\x1b[2;1HTasks:  12 total,   1 running");
    top.extend_from_slice(b"\x1b[4;1H\x1b[1m  PID USER      %CPU COMMAND\x1b[0m");
    for (i, (pid, cmd)) in [(1, "init"), (212, "sh"), (230, "top")].iter().enumerate() {
        top.extend_from_slice(format!("\x1b[{};1H{pid:5} root       0.0 {cmd}", 5 + i).as_bytes());
    }
    top.extend_from_slice(b"\x1b[5;18r\x1b[18;1H\n\x1b[r\x1b[18;1H\x1b[33m-- q quits --\x1b[0m");
    s.out(0, &top);
    insta::assert_snapshot!("console_fullscreen", s.text());
    let buf = s.render().clone();
    let (x, y) = inside_origin(&buf);
    assert!(
        buf[(x + 1, y)].modifier.contains(Modifier::REVERSED),
        "the header"
    );
    // The cursor stays hidden while the program hides it.
    assert!(
        !(0..18).any(|r| (0..52).any(|c| buf[(x + c, y + r)].modifier.contains(Modifier::REVERSED) && r > 0)),
        "no cursor drawn"
    );
    // Leaving the alternate screen gives the shell's screen back.
    s.out(0, b"\x1b[?1049l\x1b[?25hroot@mic0:~# ");
    let text = s.text();
    assert!(
        text.contains("root@mic0:~# top") && !text.contains("PID USER"),
        "{text}"
    );
}

#[test]
fn scrollback_pages_back_and_stays_put_while_output_arrives() {
    let mut s = Screen::new(1);
    s.attach(0);
    let mut lines = String::new();
    for i in 1..=200 {
        write!(lines, "output line {i}\r\n").unwrap();
    }
    s.out(0, lines.as_bytes());
    let live = s.text();
    assert!(live.contains("output line 200") && !live.contains("output line 150\n"));
    s.key(KeyCode::PageUp);
    s.key(KeyCode::PageUp);
    insta::assert_snapshot!("console_scrollback", s.text());
    let top = |t: &str| {
        t.lines()
            .find(|l| l.contains("output line"))
            .unwrap_or("")
            .to_owned()
    };
    let before = top(&s.text());
    assert!(before.contains("output line 139 "), "{before}");
    // New output does not move a view scrolled back.
    s.out(0, b"output line 201\r\n");
    let back = s.text();
    assert_eq!(top(&back), before);
    assert!(!back.contains("output line 201"), "{back}");
    // To the oldest line kept, then live again.
    s.key(KeyCode::Home);
    assert!(s.text().contains("output line 1 "));
    s.key(KeyCode::End);
    let text = s.text();
    assert!(
        text.contains("output line 201") && !text.contains(" lines "),
        "{text}"
    );
}

#[test]
fn typing_needs_the_write_side_and_ctrl_bracket_gives_it_back() {
    let mut s = Screen::new(1);
    s.attach(0);
    let effects = s.key(KeyCode::Char('w'));
    assert_eq!(
        effects,
        vec![Effect::Console(ConsoleOp::Access {
            card: 0,
            access: Access::ReadWrite
        })]
    );
    // Keys before the write side is given are not sent.
    assert!(s.chars("x").is_empty());
    assert!(s.text().contains("waiting for the write side"));
    s.event(
        0,
        ConsoleEvent::Access {
            access: Access::ReadWrite,
            writer: None,
        },
    );
    // Every key is the card's now, q and tab included.
    let sent: Vec<u8> = s
        .chars("q\t")
        .into_iter()
        .chain(s.key(KeyCode::Enter))
        .chain(s.key(KeyCode::Up))
        .chain(s.key_mod(KeyCode::Char('c'), KeyModifiers::CONTROL))
        .flat_map(|e| match e {
            Effect::Console(ConsoleOp::Send { card: 0, bytes }) => bytes,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(sent, b"q\t\r\x1b[A\x03");
    assert!(!s.app.quitting());
    insta::assert_snapshot!("console_typing", s.text());
    // ctrl-] (which terminals send as ctrl-5) stops typing and gives the
    // write side back; q is mictop's again.
    let effects = s.key_mod(KeyCode::Char('5'), KeyModifiers::CONTROL);
    assert_eq!(
        effects,
        vec![Effect::Console(ConsoleOp::Access {
            card: 0,
            access: Access::ReadOnly
        })]
    );
    assert_eq!(s.key(KeyCode::Char('q')), vec![Effect::Quit]);
}

#[test]
fn another_writer_taking_over_stops_typing_and_says_who() {
    let mut s = Screen::new(1);
    s.attach(0);
    s.key(KeyCode::Char('w'));
    s.event(
        0,
        ConsoleEvent::Access {
            access: Access::ReadWrite,
            writer: None,
        },
    );
    s.event(
        0,
        ConsoleEvent::Access {
            access: Access::ReadOnly,
            writer: Some("micctl console (pid 4242)".into()),
        },
    );
    assert!(!s.app.consoles().typing());
    let text = s.text();
    assert!(
        text.contains("typing stopped: micctl console (pid 4242) took the write side"),
        "{text}"
    );
    assert!(text.contains("read-only, micctl console (pid"), "{text}");
}

#[test]
fn several_consoles_switch_and_detach() {
    let mut s = Screen::new(3);
    s.attach(0);
    s.out(0, b"this is mic0\r\n");
    // Back to the cards, select mic2, attach its console too.
    s.key(KeyCode::Tab);
    s.chars("jj");
    s.attach(2);
    s.out(2, b"this is mic2\r\n");
    // mic0's output arrives while mic2 is shown; it is kept.
    s.out(0, b"mic0 again\r\n");
    let text = s.text();
    assert!(
        text.contains("this is mic2") && !text.contains("this is mic0"),
        "{text}"
    );
    insta::assert_snapshot!("console_two", text);
    assert!(s.chars("[").is_empty());
    let text = s.text();
    assert!(
        text.contains("this is mic0") && text.contains("mic0 again"),
        "{text}"
    );
    // Detach the shown one (mic0): mic2's is shown.
    assert_eq!(s.chars("C"), vec![Effect::Console(ConsoleOp::Detach { card: 0 })]);
    assert!(s.text().contains("this is mic2"));
    // Events of a detached console change nothing.
    s.out(0, b"late");
    assert!(!s.text().contains("late"));
    // `c` on the shown card's console goes back to the log.
    s.chars("c");
    assert!(!s.app.consoles().visible());
    assert!(s.text().contains("log mic2"));
}

#[test]
fn an_ended_console_says_why_and_attaches_again_on_c() {
    let mut s = Screen::new(1);
    s.attach(0);
    s.event(0, ConsoleEvent::Notice("the card removed its console".into()));
    s.event(0, ConsoleEvent::Ended("mpssd stopped".into()));
    let text = s.text();
    assert!(text.contains("ended: mpssd stopped"), "{text}");
    assert!(text.contains("── the card removed its console ──"), "{text}");
    // Typing is refused, with the reason.
    s.chars("w");
    assert!(s.text().contains("mic0's console ended: mpssd stopped"));
    // c (shown and focused) goes to the log; c again attaches afresh.
    s.chars("c");
    s.attach(0);
    assert!(s.text().contains("attaching again"));
}

#[test]
fn the_card_cannot_reach_the_real_terminal() {
    let mut s = Screen::new(1);
    s.attach(0);
    // Title, clipboard and resize requests, a bell: none has any effect
    // outside the pane, and nothing of them is drawn.
    let effects = {
        s.out(0, b"\x1b]0;owned\x07\x1b]52;c;aGk=\x07\x1b[8;100;300t\x07ok");
        s.app.update(Action::Tick(Instant::now()))
    };
    assert!(
        !effects.iter().any(|e| matches!(e, Effect::Console(_))),
        "{effects:?}"
    );
    let text = s.text();
    assert!(
        text.contains("ok") && !text.contains("owned") && !text.contains("aGk"),
        "{text}"
    );
}

/// The pane in each state mpssd's broker puts it in, as the broker source
/// words them.
#[test]
fn the_pane_through_mpssds_broker() {
    use libmic::mpssd::ConsoleEnd;
    use mictop::console::broker::{end_text, not_running_text};
    let holder = "\"micctl console\" (pid 4242, uid 0)";

    // mpssd not running: said, and waited for.
    let mut s = Screen::new(1);
    s.key(KeyCode::Char('c'));
    s.event(0, ConsoleEvent::Waiting(not_running_text(&MicRoot::new("/r"))));
    let text = s.text();
    assert!(
        text.contains("console mic0 waiting: mpssd is not running for /r"),
        "{text}"
    );
    insta::assert_snapshot!("console_mpssd_not_running", text);

    // Attached read-only while another client writes: the title says who.
    s.event(
        0,
        ConsoleEvent::Access {
            access: Access::ReadOnly,
            writer: Some(holder.into()),
        },
    );
    s.out(0, b"root@mic0:~# echo hi\r\nhi\r\nroot@mic0:~# ");
    let text = s.text();
    assert!(!text.contains("waiting"), "{text}");
    // (The title is cut at the pane's width.)
    assert!(
        text.contains("read-only, \"micctl console\" (pid 4242,"),
        "{text}"
    );
    assert_eq!(
        s.app.consoles().shown().and_then(|c| c.writer.as_deref()),
        Some(holder)
    );
    insta::assert_snapshot!("console_read_only_beside_a_writer", text);

    // w takes it (forced): typing, and whose it was, in the pane.
    s.key(KeyCode::Char('w'));
    s.event(
        0,
        ConsoleEvent::Access {
            access: Access::ReadWrite,
            writer: None,
        },
    );
    s.event(
        0,
        ConsoleEvent::Notice(format!("took the write side from {holder}")),
    );
    let text = s.text();
    assert!(text.contains("console mic0 typing"), "{text}");
    insta::assert_snapshot!("console_write_side_taken", text);

    // Taken over in turn: read-only, and by whom.
    s.event(
        0,
        ConsoleEvent::Notice(format!("{holder} took mic0's console read-write (forced)")),
    );
    s.event(
        0,
        ConsoleEvent::Access {
            access: Access::ReadOnly,
            writer: Some(holder.into()),
        },
    );
    let text = s.text();
    assert!(
        text.contains(&format!("typing stopped: {holder} took the write side")),
        "{text}"
    );
    insta::assert_snapshot!("console_taken_over", text);

    // The card down for good: the console ends, saying why.
    s.event(
        0,
        ConsoleEvent::Ended(end_text(&ConsoleEnd::CardDown {
            message: "mic0 is down (halted); mpssd is not booting it again".into(),
        })),
    );
    let text = s.text();
    assert!(text.contains("ended: card down: mic0 is down (halted)"), "{text}");
    insta::assert_snapshot!("console_ended_card_down", text);
}

/// A key typed into a console draws nothing until the card's echo: the
/// echo's frame is not held back behind a frame of the key's own.
#[test]
fn a_typed_key_waits_for_its_echo_to_be_drawn() {
    let mut s = Screen::new(1);
    s.attach(0);
    s.key(KeyCode::Char('w'));
    s.event(
        0,
        ConsoleEvent::Access {
            access: Access::ReadWrite,
            writer: None,
        },
    );
    s.render();
    s.app.drawn();
    let effects = s.chars("x");
    assert_eq!(
        effects,
        vec![Effect::Console(ConsoleOp::Send {
            card: 0,
            bytes: b"x".to_vec()
        })]
    );
    assert!(!s.app.needs_redraw(), "a frame for the key itself");
    s.out(0, b"x");
    assert!(s.app.needs_redraw(), "no frame for the echo");
}
