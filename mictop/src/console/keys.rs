//! Keys as the bytes an xterm sends, for typing into a card's console.

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

/// The bytes `key` sends; `app_cursor`: the console asked for application
/// cursor keys (`ESC O A` rather than `ESC [ A`). `None`: a key that sends
/// nothing (a release, a bare modifier, media keys).
#[must_use]
pub fn encode(key: &KeyEvent, app_cursor: bool) -> Option<Vec<u8>> {
    if key.kind == KeyEventKind::Release {
        return None;
    }
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    let alt = key.modifiers.contains(KeyModifiers::ALT);
    let mut out = Vec::new();
    if alt {
        out.push(0x1b);
    }
    let csi = |s: &str| format!("\x1b[{s}").into_bytes();
    let cursor = |c: char| {
        if app_cursor {
            format!("\x1bO{c}").into_bytes()
        } else {
            format!("\x1b[{c}").into_bytes()
        }
    };
    let bytes = match key.code {
        KeyCode::Char(c) if ctrl => vec![control(c)?],
        KeyCode::Char(c) => c.to_string().into_bytes(),
        KeyCode::Enter => vec![b'\r'],
        KeyCode::Tab => vec![b'\t'],
        KeyCode::BackTab => csi("Z"),
        KeyCode::Backspace => vec![0x7f],
        KeyCode::Esc => vec![0x1b],
        KeyCode::Up => cursor('A'),
        KeyCode::Down => cursor('B'),
        KeyCode::Right => cursor('C'),
        KeyCode::Left => cursor('D'),
        KeyCode::Home => cursor('H'),
        KeyCode::End => cursor('F'),
        KeyCode::Insert => csi("2~"),
        KeyCode::Delete => csi("3~"),
        KeyCode::PageUp => csi("5~"),
        KeyCode::PageDown => csi("6~"),
        KeyCode::F(n @ 1..=4) => format!("\x1bO{}", char::from(b'P' + n - 1)).into_bytes(),
        KeyCode::F(n @ 5..=12) => {
            let code = [15, 17, 18, 19, 20, 21, 23, 24][usize::from(n - 5)];
            csi(&format!("{code}~"))
        }
        _ => return None,
    };
    out.extend(bytes);
    Some(out)
}

/// The control byte of ctrl-`c` (ctrl-a is 0x01, ctrl-] 0x1d, ctrl-space
/// NUL). Terminals report ctrl-\ to ctrl-_ as ctrl-4 to ctrl-7.
fn control(c: char) -> Option<u8> {
    let c = c.to_ascii_lowercase();
    match c {
        'a'..='z' => Some(c as u8 - b'a' + 1),
        ' ' | '@' | '2' => Some(0),
        '[' | '3' => Some(0x1b),
        '\\' | '4' => Some(0x1c),
        ']' | '5' => Some(0x1d),
        '^' | '6' => Some(0x1e),
        '_' | '7' | '/' => Some(0x1f),
        '?' | '8' => Some(0x7f),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(code: KeyCode, m: KeyModifiers) -> Option<Vec<u8>> {
        encode(&KeyEvent::new(code, m), false)
    }

    #[test]
    fn keys_send_what_an_xterm_sends() {
        let none = KeyModifiers::NONE;
        assert_eq!(k(KeyCode::Char('é'), none), Some("é".as_bytes().to_vec()));
        assert_eq!(k(KeyCode::Char('c'), KeyModifiers::CONTROL), Some(vec![3]));
        assert_eq!(k(KeyCode::Char('5'), KeyModifiers::CONTROL), Some(vec![0x1d]));
        assert_eq!(k(KeyCode::Char('x'), KeyModifiers::ALT), Some(b"\x1bx".to_vec()));
        assert_eq!(k(KeyCode::Enter, none), Some(b"\r".to_vec()));
        assert_eq!(k(KeyCode::Backspace, none), Some(vec![0x7f]));
        assert_eq!(k(KeyCode::Up, none), Some(b"\x1b[A".to_vec()));
        assert_eq!(
            encode(&KeyEvent::new(KeyCode::Up, none), true),
            Some(b"\x1bOA".to_vec())
        );
        assert_eq!(k(KeyCode::PageDown, none), Some(b"\x1b[6~".to_vec()));
        assert_eq!(k(KeyCode::F(1), none), Some(b"\x1bOP".to_vec()));
        assert_eq!(k(KeyCode::F(12), none), Some(b"\x1b[24~".to_vec()));
        assert_eq!(k(KeyCode::Char('1'), KeyModifiers::CONTROL), None);
        assert_eq!(k(KeyCode::CapsLock, none), None);
    }
}
