//! Logs to stderr, one line a record, with the `<N>` syslog priority
//! prefix that journald (and systemd's stderr capture) reads as the
//! record's level (sd-daemon(3)). On a terminal the prefix is left out.

use std::io::{IsTerminal as _, Write as _};

use log::{Level, LevelFilter, Log, Metadata, Record};

/// The environment variable with the level (`error`, `warn`, `info`,
/// `debug`, `trace`); default `info`.
pub const LOG_ENV: &str = "MPSSD_LOG";

struct Stderr {
    prefix: bool,
}

/// The syslog priority of a level (sd-daemon's `SD_ERR` ... `SD_DEBUG`).
#[must_use]
pub fn priority(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

/// One record as written.
#[must_use]
pub fn format_line(prefix: bool, level: Level, msg: &str) -> String {
    // One record, one line: embedded newlines would be read as new records
    // without a priority.
    let msg = msg.replace('\n', " / ");
    if prefix {
        format!("<{}>{msg}\n", priority(level))
    } else {
        let tag = match level {
            Level::Error => "error: ",
            Level::Warn => "warning: ",
            _ => "",
        };
        format!("mpssd: {tag}{msg}\n")
    }
}

impl Log for Stderr {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &Record<'_>) {
        if !record.target().starts_with("mpssd") && record.level() > Level::Warn {
            return;
        }
        let line = format_line(self.prefix, record.level(), &record.args().to_string());
        // One write per record, so lines from several threads never mix.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

/// Installs the logger (once; later calls do nothing).
pub fn init() {
    let level = std::env::var(LOG_ENV)
        .ok()
        .and_then(|v| v.parse::<LevelFilter>().ok())
        .unwrap_or(LevelFilter::Info);
    let prefix = !std::io::stderr().is_terminal();
    // Leaked once: the logger lives as long as the process.
    if log::set_logger(Box::leak(Box::new(Stderr { prefix }))).is_ok() {
        log::set_max_level(level);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_syslog_priorities() {
        assert_eq!(format_line(true, Level::Error, "boom"), "<3>boom\n");
        assert_eq!(format_line(true, Level::Warn, "hm"), "<4>hm\n");
        assert_eq!(format_line(true, Level::Info, "a\nb"), "<6>a / b\n");
        assert_eq!(format_line(true, Level::Debug, "d"), "<7>d\n");
        assert_eq!(format_line(false, Level::Warn, "hm"), "mpssd: warning: hm\n");
    }
}
