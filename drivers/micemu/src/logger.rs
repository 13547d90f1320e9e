//! micemu's own log lines (the host driver's `dev_warn`s: a ring the card
//! broke, a handshake it never answered) on stderr, one line each:
//! `micemu: warning: mic0: ...`. Only micemu's records are shown, at the
//! level `--log-level` asks (default `warn`).

use log::{Level, LevelFilter, Log, Metadata, Record};

struct Stderr;

impl Log for Stderr {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        m.target().starts_with("micemu")
    }

    fn log(&self, r: &Record<'_>) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let level = match r.level() {
            Level::Error => "error",
            Level::Warn => "warning",
            Level::Info => "info",
            Level::Debug => "debug",
            Level::Trace => "trace",
        };
        // eprintln! holds stderr's lock for the line: threads never interleave.
        eprintln!("micemu: {level}: {}", r.args());
    }

    fn flush(&self) {}
}

static LOGGER: Stderr = Stderr;

/// Sends micemu's log records at `level` and above to stderr. A second
/// call (another logger already installed) only changes the level.
pub fn init(level: LevelFilter) {
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}
