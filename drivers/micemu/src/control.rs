//! The run-time control interface: fault injection and card-side actions,
//! over a Unix socket at `<root>/run/micemu.sock`.
//!
//! Protocol: one request line `micN VERB [ARGS...]`, one reply line `ok` or
//! `error: MESSAGE`. New verbs (hostile virtio behaviour, later) are new
//! [`Fault`] variants; the transport does not change.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

/// Something injected into a card from outside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// The card kernel panics (shutdown_status crashed).
    Panic(String),
    /// The card OS halts itself (`halt` inside the card).
    Halt,
    /// The card OS powers itself off.
    Poweroff,
    /// The card OS reboots itself (shutdown_status restart).
    Reboot,
    /// The next (or current) boot stops making progress.
    HangBoot,
    /// The next reset never brings the bootstrap back (→ reset_failed).
    FailReset,
    /// Random bytes are written over part of the card's log buffer.
    GarbageLog,
    /// The card kernel prints a message (at the given syslog level).
    Log { level: u8, text: String },
    /// A hostile card: writes this byte as its shutdown status and rings
    /// the host's shutdown doorbell.
    BadStatus(u8),
}

impl Fault {
    /// Every verb with a one-line description, for `--help` and errors.
    pub const VERBS: &'static [(&'static str, &'static str)] = &[
        (
            "panic [MSG]",
            "card kernel panics: shutdown_status becomes crashed",
        ),
        ("halt", "card OS halts: shutdown_status halted"),
        ("poweroff", "card OS powers off: shutdown_status poweroff"),
        ("reboot", "card OS reboots: shutdown_status restart"),
        ("hang", "the current or next boot stops making progress"),
        ("fail-reset", "the next reset never completes: state reset_failed"),
        (
            "garbage-log",
            "random bytes overwrite part of the card log buffer",
        ),
        (
            "log [LEVEL] TEXT",
            "the card kernel prints TEXT (level 0-7, default 6)",
        ),
    ];

    /// Parses the words after the card name.
    pub fn parse(words: &[&str]) -> Result<Fault, String> {
        let (verb, rest) = words.split_first().ok_or_else(|| "missing verb".to_owned())?;
        let text = rest.join(" ");
        let no_args = |f: Fault| {
            if rest.is_empty() {
                Ok(f)
            } else {
                Err(format!("{verb} takes no arguments"))
            }
        };
        match *verb {
            "panic" => Ok(Fault::Panic(if text.is_empty() {
                "Fatal exception (injected by micemu)".to_owned()
            } else {
                text
            })),
            "halt" => no_args(Fault::Halt),
            "poweroff" => no_args(Fault::Poweroff),
            "reboot" => no_args(Fault::Reboot),
            "hang" => no_args(Fault::HangBoot),
            "fail-reset" => no_args(Fault::FailReset),
            "garbage-log" => no_args(Fault::GarbageLog),
            "bad-status" => match rest {
                [v] => v
                    .parse::<u8>()
                    .map(Fault::BadStatus)
                    .map_err(|_| format!("bad-status takes a byte (0-255), not {v:?}")),
                _ => Err("bad-status takes one byte (0-255)".to_owned()),
            },
            "log" => {
                let (level, words) = match rest.first().and_then(|w| w.parse::<u8>().ok()) {
                    Some(l) if l <= 7 && rest.len() > 1 => (l, &rest[1..]),
                    _ => (6, rest),
                };
                if words.is_empty() {
                    return Err("log needs a message".to_owned());
                }
                Ok(Fault::Log {
                    level,
                    text: words.join(" "),
                })
            }
            other => Err(format!(
                "unknown verb {other:?}; known: {}",
                Fault::VERBS
                    .iter()
                    .map(|(v, _)| v.split(' ').next().unwrap_or(v))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }
}

/// What serves control requests: the emulator.
pub trait Handler: Send + Sync + 'static {
    fn inject(&self, card: &str, fault: Fault) -> Result<(), String>;
}

/// Path of the control socket under a root.
#[must_use]
pub fn socket_path(root: &Path) -> PathBuf {
    root.join("run/micemu.sock")
}

/// The control socket being served; [`Server::stop`] (or drop) ends the
/// listener thread, so the handler it holds is released.
#[derive(Debug)]
pub struct Server {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Server {
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops accepting, waits for the listener thread and removes the
    /// socket file. Connections already accepted finish on their own.
    pub fn stop(&mut self) {
        let Some(thread) = self.thread.take() else { return };
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocked accept(2) with a connection of our own.
        if UnixStream::connect(&self.path).is_ok() {
            let _ = thread.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Binds the control socket (replacing a stale socket file) and serves it on
/// a background thread, one thread per connection.
pub fn serve(root: &Path, handler: Arc<dyn Handler>) -> io::Result<Server> {
    let path = socket_path(root);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(&path)?;
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = Arc::clone(&stop);
    let thread = thread::Builder::new().name("control".into()).spawn(move || {
        for conn in listener.incoming() {
            if stopping.load(Ordering::SeqCst) {
                return;
            }
            let Ok(conn) = conn else { continue };
            let handler = Arc::clone(&handler);
            let _ = thread::Builder::new()
                .name("control-conn".into())
                .spawn(move || serve_conn(&conn, &*handler));
        }
    })?;
    Ok(Server {
        path,
        stop,
        thread: Some(thread),
    })
}

fn serve_conn(conn: &UnixStream, handler: &dyn Handler) {
    let Ok(read) = conn.try_clone() else { return };
    let mut out = conn;
    for line in BufReader::new(read).lines() {
        let Ok(line) = line else { return };
        let words: Vec<&str> = line.split_whitespace().collect();
        let reply = match words.split_first() {
            None => continue,
            Some((card, rest)) => Fault::parse(rest).and_then(|f| handler.inject(card, f)),
        };
        let text = match reply {
            Ok(()) => "ok\n".to_owned(),
            Err(e) => format!("error: {e}\n"),
        };
        if out.write_all(text.as_bytes()).is_err() {
            return;
        }
    }
}

/// Client side: sends one request and returns the emulator's answer.
pub fn request(root: &Path, card: &str, words: &[String]) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let path = socket_path(root);
    let mut conn = UnixStream::connect(&path).with_context(|| {
        format!(
            "cannot reach micemu's control socket {} (is `micemu --root {}` running?)",
            path.display(),
            root.display()
        )
    })?;
    writeln!(conn, "{card} {}", words.join(" "))?;
    let mut reply = String::new();
    BufReader::new(&conn).read_line(&mut reply)?;
    match reply.trim_end().strip_prefix("error: ") {
        None if reply.trim_end() == "ok" => Ok(()),
        None => anyhow::bail!("unexpected reply from micemu: {reply:?}"),
        Some(e) => anyhow::bail!("{card}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_verb() {
        assert_eq!(Fault::parse(&["halt"]), Ok(Fault::Halt));
        assert_eq!(
            Fault::parse(&["panic", "oops", "here"]),
            Ok(Fault::Panic("oops here".into()))
        );
        assert_eq!(
            Fault::parse(&["log", "3", "disk", "on", "fire"]),
            Ok(Fault::Log {
                level: 3,
                text: "disk on fire".into()
            })
        );
        assert_eq!(
            Fault::parse(&["log", "hello"]),
            Ok(Fault::Log {
                level: 6,
                text: "hello".into()
            })
        );
        assert_eq!(Fault::parse(&["bad-status", "200"]), Ok(Fault::BadStatus(200)));
        assert!(Fault::parse(&["bad-status", "300"]).is_err());
        assert!(Fault::parse(&["halt", "now"]).is_err());
        assert!(Fault::parse(&["log"]).is_err());
        assert!(Fault::parse(&[]).is_err());
        let err = Fault::parse(&["explode"]).unwrap_err();
        assert!(err.contains("panic") && err.contains("fail-reset"), "{err}");
    }

    struct Echo;

    impl Handler for Echo {
        fn inject(&self, card: &str, fault: Fault) -> Result<(), String> {
            if card == "mic0" {
                Ok(())
            } else {
                Err(format!("no card {card} for {fault:?}"))
            }
        }
    }

    #[test]
    fn serves_requests_and_stops_releasing_the_handler() {
        let dir = tempfile::tempdir().unwrap();
        let handler: Arc<dyn Handler> = Arc::new(Echo);
        let mut server = serve(dir.path(), Arc::clone(&handler)).unwrap();
        request(dir.path(), "mic0", &["halt".to_owned()]).unwrap();
        let err = request(dir.path(), "mic7", &["halt".to_owned()]).unwrap_err();
        assert!(err.to_string().contains("no card mic7"), "{err}");
        let err = request(dir.path(), "mic0", &["explode".to_owned()]).unwrap_err();
        assert!(err.to_string().contains("unknown verb"), "{err}");
        server.stop();
        assert!(!socket_path(dir.path()).exists());
        // Connection threads end with their connections; the listener has
        // gone, so nothing but the test holds the handler any more.
        let start = std::time::Instant::now();
        while Arc::strong_count(&handler) > 1 {
            assert!(
                start.elapsed() < std::time::Duration::from_secs(10),
                "handler still held"
            );
            std::thread::yield_now();
        }
    }
}
