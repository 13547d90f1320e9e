//! The run-time control interface: fault injection and card-side actions,
//! over a Unix socket at `<root>/run/micemu.sock`.
//!
//! Protocol: one request line `micN VERB [ARGS...]`, one reply line `ok` or
//! `error: MESSAGE`. The verbs are [`Fault`]s ([`crate::faults`]); the
//! transport does not know them.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use crate::faults::{Fault, FaultParseError, InjectError};

/// Why a control request failed; its Display is the reply's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error(transparent)]
    Parse(#[from] FaultParseError),
    #[error(transparent)]
    Inject(#[from] InjectError),
}

/// What serves control requests: the emulator.
pub trait Handler: Send + Sync + 'static {
    fn inject(&self, card: &str, fault: Fault) -> Result<(), InjectError>;
}

impl Handler for crate::emu::Emulator {
    fn inject(&self, card: &str, fault: Fault) -> Result<(), InjectError> {
        self.inject_named(card, &fault)
    }
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
    // Fault injection is the emulator owner's (it can crash every card):
    // the socket is theirs alone, whatever the umask.
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
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
            Some((card, rest)) => Fault::parse(rest)
                .map_err(ControlError::from)
                .and_then(|f| handler.inject(card, f).map_err(ControlError::from)),
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
    let path = socket_path(root);
    let mut conn = UnixStream::connect(&path).map_err(|e| connect_error(&path, root, e))?;
    writeln!(conn, "{card} {}", words.join(" "))?;
    let mut reply = String::new();
    BufReader::new(&conn).read_line(&mut reply)?;
    match reply.trim_end().strip_prefix("error: ") {
        None if reply.trim_end() == "ok" => Ok(()),
        None => anyhow::bail!("unexpected reply from micemu: {reply:?}"),
        Some(e) => anyhow::bail!("{card}: {e}"),
    }
}

/// What a failed connect to the control socket means, in words.
fn connect_error(path: &Path, root: &Path, e: io::Error) -> anyhow::Error {
    let what = if e.kind() == io::ErrorKind::PermissionDenied {
        format!(
            "permission denied on micemu's control socket {}: fault injection is for the user \
             running micemu (normally root); run `micemu inject` as that user",
            path.display()
        )
    } else {
        format!(
            "cannot reach micemu's control socket {} (is `micemu --root {}` running?)",
            path.display(),
            root.display()
        )
    };
    anyhow::Error::new(e).context(what)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_connection_is_a_permission_problem() {
        let e = connect_error(
            Path::new("/r/run/micemu.sock"),
            Path::new("/r"),
            io::Error::from_raw_os_error(libc::EACCES),
        );
        let text = format!("{e:#}");
        assert!(
            text.starts_with("permission denied on micemu's control socket"),
            "{text}"
        );
        assert!(!text.contains("running?"), "{text}");
    }

    struct Echo;

    impl Handler for Echo {
        fn inject(&self, card: &str, _fault: Fault) -> Result<(), InjectError> {
            if card == "mic0" {
                Ok(())
            } else {
                Err(InjectError::NoCard(7))
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
        // The socket is the owner's only, whatever the umask.
        let mode = std::fs::metadata(socket_path(dir.path())).unwrap().permissions();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o600);
        server.stop();
        assert!(!socket_path(dir.path()).exists());
        let gone = request(dir.path(), "mic0", &["halt".to_owned()]).unwrap_err();
        assert!(format!("{gone:#}").contains("is `micemu --root"), "{gone:#}");
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
