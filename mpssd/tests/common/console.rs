//! Driving a card's shell through a broker client: typed lines, the
//! output they bring, waits bounded by [`HANG`].

#![allow(dead_code, unreachable_pub)]

use std::time::Instant;

use libmic::mpssd::{Console, ConsoleItem, ConsoleOutput};

use super::HANG;

/// A line that makes the shell print `mark-N` and its prompt: that text
/// is not in the echo of the line (the quotes are), so once it arrives
/// everything typed before has been answered and nothing is pending.
pub fn marker() -> (String, String) {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    (
        format!("echo \"ma\"rk-{n}\r"),
        format!("mark-{n}\r\nroot@mic0:~# "),
    )
}

/// Waits until the shell has answered everything typed so far.
pub fn shell_ready(c: &mut Console) {
    let (line, answer) = marker();
    c.input.send(line.as_bytes()).unwrap();
    until(&mut c.output, &answer);
}

/// Live output until it contains `needle` (what came before it too).
pub fn until(out: &mut ConsoleOutput, needle: &str) -> String {
    let start = Instant::now();
    let mut seen = Vec::new();
    loop {
        assert!(
            start.elapsed() < HANG,
            "{needle:?} never came; got {:?}",
            String::from_utf8_lossy(&seen)
        );
        match out.next_item().unwrap() {
            ConsoleItem::Output { data, .. } => {
                seen.extend_from_slice(&data);
                let text = String::from_utf8_lossy(&seen);
                if text.contains(needle) {
                    return text.into_owned();
                }
            }
            ConsoleItem::Ended(e) => panic!("ended ({e}) waiting for {needle:?}"),
            ConsoleItem::Refused(e) => panic!("refused ({e:?}) waiting for {needle:?}"),
            ConsoleItem::Lagged { .. } | ConsoleItem::Device { .. } => {}
        }
    }
}

/// The next item that is not output.
pub fn next_notice(out: &mut ConsoleOutput) -> ConsoleItem {
    let start = Instant::now();
    loop {
        assert!(start.elapsed() < HANG, "no notice");
        match out.next_item().unwrap() {
            ConsoleItem::Output { .. } => {}
            other => return other,
        }
    }
}

/// Runs `cmd` in the shell; its output (with the echo), once the shell
/// has answered a marker typed after it.
pub fn shell(c: &mut Console, cmd: &str) -> String {
    let (line, answer) = marker();
    c.input.send(format!("{cmd}\r{line}").as_bytes()).unwrap();
    let out = until(&mut c.output, &answer);
    let at = out.find(cmd).unwrap_or(0);
    out[at..].to_owned()
}
