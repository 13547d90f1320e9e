//! The documented exit codes of `micctl`, and how errors and per-card
//! outcomes map to them.

use std::fmt::Write as _;
use std::process::ExitCode;

use libmic::crash::CrashError;
use libmic::mpssd::{ClientError, ErrorCode};

/// EACCES or EPERM.
fn denied(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::PermissionDenied
}

/// Every exit status `micctl` uses. The numbers are a stable interface:
/// scripts may test for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Exit {
    /// Everything asked for was done (or already so, without `--strict`).
    Ok = 0,
    /// A failure not covered below: an I/O error, a card that failed its
    /// reset (`reset_failed`) or crashed (its kernel panicked) while waited
    /// on.
    Failure = 1,
    /// Bad command line: unknown option, bad card selector, bad duration,
    /// bad state or level name, bad firmware name.
    Usage = 2,
    /// The mic driver is absent: no `sys/class/mic` (or debugfs) under the
    /// root, or the micemu serving the root has exited.
    DriverAbsent = 3,
    /// A named card does not exist, or there are no cards at all.
    NoSuchCard = 4,
    /// The driver rejected a request (its errno is explained).
    Rejected = 5,
    /// A wait ran out of time, or the driver did not answer in time.
    Timeout = 6,
    /// Several cards were involved and they did not all end the same way
    /// (cards that were already in the requested state do not count), or
    /// some cards could not be read.
    Partial = 7,
    /// Permission denied on a sysfs or debugfs file.
    PermissionDenied = 8,
    /// `--strict`: a card already was in the requested state.
    AlreadyInState = 9,
    /// mpssd is not running for this root (no control socket, or nothing
    /// listening on it) for a command that needs it (`events`), or it
    /// stopped while followed.
    MpssdAbsent = 10,
    /// No such crash bundle (or the card has none).
    NotFound = 11,
    /// `console`: the card went down (crashed, shut down, reset) while
    /// attached, or was not online to attach to.
    CardDown = 12,
    /// `console`: mpssd removed the card's console (or it has none).
    ConsoleGone = 13,
    /// `console`: another client holds the console read-write (a script
    /// cannot type), or took it over with `--force`.
    ConsoleBusy = 14,
}

impl Exit {
    /// Every code, in order: the one table the `--help` text, the JSON
    /// `kind` and the documentation (held to it by a test) come from.
    pub const ALL: [Exit; 15] = [
        Exit::Ok,
        Exit::Failure,
        Exit::Usage,
        Exit::DriverAbsent,
        Exit::NoSuchCard,
        Exit::Rejected,
        Exit::Timeout,
        Exit::Partial,
        Exit::PermissionDenied,
        Exit::AlreadyInState,
        Exit::MpssdAbsent,
        Exit::NotFound,
        Exit::CardDown,
        Exit::ConsoleGone,
        Exit::ConsoleBusy,
    ];

    #[must_use]
    pub fn code(self) -> u8 {
        self as u8
    }

    /// Short kebab-case name used in JSON (`error.kind`).
    #[must_use]
    pub fn kind(self) -> &'static str {
        match self {
            Exit::Ok => "ok",
            Exit::Failure => "failure",
            Exit::Usage => "usage",
            Exit::DriverAbsent => "driver-absent",
            Exit::NoSuchCard => "no-such-card",
            Exit::Rejected => "rejected",
            Exit::Timeout => "timeout",
            Exit::Partial => "partial",
            Exit::PermissionDenied => "permission-denied",
            Exit::AlreadyInState => "already-in-state",
            Exit::MpssdAbsent => "mpssd-absent",
            Exit::NotFound => "not-found",
            Exit::CardDown => "card-down",
            Exit::ConsoleGone => "console-gone",
            Exit::ConsoleBusy => "console-busy",
        }
    }

    /// What the code means, in one line (the `--help` table).
    #[must_use]
    pub fn meaning(self) -> &'static str {
        match self {
            Exit::Ok => "ok (including cards already in the requested state, unless --strict)",
            Exit::Failure => "failure (I/O error, card reset failed or crashed, mpssd refused a request)",
            Exit::Usage => "usage error (bad option, card selector, duration, state or level)",
            Exit::DriverAbsent => {
                "driver absent (no sys/class/mic under the root: driver not loaded or micemu not running)"
            }
            Exit::NoSuchCard => "no such card (or no cards at all)",
            Exit::Rejected => "rejected by the driver (errno explained)",
            Exit::Timeout => "timeout (a wait ran out, or the driver or mpssd did not answer in time)",
            Exit::Partial => {
                "partial failure: cards ended differently (some ok, some not), or some could not be read"
            }
            Exit::PermissionDenied => "permission denied (a sysfs or debugfs file, or mpssd's socket)",
            Exit::AlreadyInState => "already in the requested state, with --strict",
            Exit::MpssdAbsent => {
                "mpssd not running for this root (events, console), or it stopped while followed"
            }
            Exit::NotFound => "no such crash bundle (or the card has none)",
            Exit::CardDown => "console: the card went down (crashed, shut down or reset), or was not online",
            Exit::ConsoleGone => "console: mpssd removed the card's console (or it has none)",
            Exit::ConsoleBusy => {
                "console: another client holds it read-write (a script cannot type), or took it (--force)"
            }
        }
    }
}

/// The table printed after `--help` (and so in the man page), from
/// [`Exit::ALL`].
#[must_use]
pub fn help() -> String {
    let mut s = String::from("Exit codes:");
    for e in Exit::ALL {
        let _ = write!(s, "\n  {:<2} {}", e.code(), e.meaning());
    }
    s
}

impl Exit {
    /// The exit code that describes `err` (the first typed error in its
    /// chain decides).
    #[must_use]
    pub fn of_error(err: &anyhow::Error) -> Exit {
        for cause in err.chain() {
            if let Some(e) = cause.downcast_ref::<libmic::Error>() {
                return Exit::of_libmic(e);
            }
            if let Some(e) = cause.downcast_ref::<crate::UsageError>() {
                let _ = e;
                return Exit::Usage;
            }
            if cause.downcast_ref::<clap::Error>().is_some() {
                return Exit::Usage;
            }
            if let Some(e) = cause.downcast_ref::<ClientError>() {
                return Exit::of_mpssd(e);
            }
            if let Some(e) = cause.downcast_ref::<CrashError>() {
                return match e {
                    CrashError::Io { source, .. } if denied(source) => Exit::PermissionDenied,
                    _ => Exit::Failure,
                };
            }
            if let Some(e) = cause.downcast_ref::<crate::cmd::console::AttachError>() {
                return e.exit();
            }
            if cause.downcast_ref::<crate::NotFound>().is_some() {
                return Exit::NotFound;
            }
        }
        Exit::Failure
    }

    /// The exit code for a failure to talk to mpssd.
    #[must_use]
    pub fn of_mpssd(e: &ClientError) -> Exit {
        match e {
            ClientError::NotRunning { .. } | ClientError::Closed => Exit::MpssdAbsent,
            ClientError::NoAnswer { .. } => Exit::Timeout,
            ClientError::Refused(b) => match b.code {
                ErrorCode::NoSuchCard => Exit::NoSuchCard,
                ErrorCode::ShuttingDown => Exit::MpssdAbsent,
                ErrorCode::Timeout => Exit::Timeout,
                _ => Exit::Failure,
            },
            e if e.os_error().is_some_and(denied) => Exit::PermissionDenied,
            _ => Exit::Failure,
        }
    }

    /// The exit code for a library error. Exhaustive: a new error variant
    /// does not compile until it has its code.
    #[must_use]
    pub fn of_libmic(e: &libmic::Error) -> Exit {
        use libmic::Error as E;
        match e {
            E::DriverAbsent { .. } | E::DebugfsAbsent { .. } | E::EmulatorGone { .. } => Exit::DriverAbsent,
            E::NoSuchCard { .. } => Exit::NoSuchCard,
            E::Rejected { .. } | E::ShutdownIgnored { .. } => Exit::Rejected,
            E::InvalidValue { .. } | E::BadFirmwareName { .. } => Exit::Usage,
            E::PermissionDenied { .. } => Exit::PermissionDenied,
            E::Timeout { .. } | E::NoAnswer { .. } => Exit::Timeout,
            E::Parse { .. }
            | E::ResetFailed { .. }
            | E::CardCrashed { .. }
            | E::PollUnsupported { .. }
            | E::SystemMap { .. }
            | E::Io { .. } => Exit::Failure,
        }
    }

    /// Combines the exit codes of the cards of one command: all the same →
    /// that code; a mixture → [`Exit::Partial`]; no cards → ok. See
    /// [`Exit::combine_needed`] for outcomes where some cards had nothing
    /// to do.
    #[must_use]
    pub fn combine(codes: impl IntoIterator<Item = Exit>) -> Exit {
        let mut it = codes.into_iter();
        let Some(first) = it.next() else { return Exit::Ok };
        if it.all(|c| c == first) {
            first
        } else {
            Exit::Partial
        }
    }
}

impl Exit {
    /// [`Exit::combine`] over the cards that needed something done: cards
    /// that were already in the requested state (and are fine with that,
    /// without `--strict`) do not make a refusal of the others partial. If
    /// no card needed anything, ok.
    #[must_use]
    pub fn combine_needed(outcomes: impl IntoIterator<Item = (Exit, bool)>) -> Exit {
        Exit::combine(
            outcomes
                .into_iter()
                .filter(|&(exit, already)| !(already && exit == Exit::Ok))
                .map(|(exit, _)| exit),
        )
    }
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> Self {
        ExitCode::from(e.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combine() {
        assert_eq!(Exit::combine([]), Exit::Ok);
        assert_eq!(Exit::combine([Exit::Ok, Exit::Ok]), Exit::Ok);
        assert_eq!(Exit::combine([Exit::Timeout, Exit::Timeout]), Exit::Timeout);
        assert_eq!(Exit::combine([Exit::Ok, Exit::Timeout]), Exit::Partial);
        assert_eq!(Exit::combine([Exit::Rejected, Exit::Timeout]), Exit::Partial);
    }

    #[test]
    fn cards_already_there_do_not_make_it_partial() {
        // Non-root `reset all`: mic0 refused, mic1 already offline.
        assert_eq!(
            Exit::combine_needed([(Exit::PermissionDenied, false), (Exit::Ok, true)]),
            Exit::PermissionDenied
        );
        assert_eq!(
            Exit::combine_needed([(Exit::Ok, true), (Exit::Ok, true)]),
            Exit::Ok
        );
        assert_eq!(
            Exit::combine_needed([(Exit::Ok, false), (Exit::Ok, true)]),
            Exit::Ok
        );
        assert_eq!(
            Exit::combine_needed([(Exit::Ok, false), (Exit::Timeout, false), (Exit::Ok, true)]),
            Exit::Partial
        );
        // With --strict an already-there card is a failure of its own.
        assert_eq!(
            Exit::combine_needed([(Exit::PermissionDenied, false), (Exit::AlreadyInState, true)]),
            Exit::Partial
        );
    }

    /// Every library error, one of each variant, with the exit code the
    /// documentation (the help table, README) gives its kind of failure.
    #[test]
    #[expect(clippy::too_many_lines, reason = "one row per error variant")]
    fn every_library_error_has_its_documented_code() {
        use libmic::Error as E;
        use std::path::PathBuf;
        use std::time::Duration;
        let p = || PathBuf::from("/r/sys/class/mic/mic0/state");
        let table: Vec<(E, Exit)> = vec![
            (E::DriverAbsent { looked_in: p() }, Exit::DriverAbsent),
            (E::DebugfsAbsent { looked_in: p() }, Exit::DriverAbsent),
            (E::EmulatorGone { path: p() }, Exit::DriverAbsent),
            (
                E::NoSuchCard {
                    name: "mic9".into(),
                    known: vec![],
                },
                Exit::NoSuchCard,
            ),
            (
                E::Rejected {
                    card: "mic0".into(),
                    attr: libmic::Attr::State,
                    value: "boot".into(),
                    errno: libc::EINVAL,
                    meaning: "m".into(),
                },
                Exit::Rejected,
            ),
            (E::ShutdownIgnored { card: "mic0".into() }, Exit::Rejected),
            (
                E::InvalidValue {
                    card: "mic0".into(),
                    attr: libmic::Attr::Cmdline,
                    value: "x".into(),
                    reason: "r",
                },
                Exit::Usage,
            ),
            (
                E::BadFirmwareName {
                    name: "../x".into(),
                    reason: "r",
                },
                Exit::Usage,
            ),
            (
                E::PermissionDenied {
                    path: p(),
                    hint: libmic::error::HINT_SYSFS,
                },
                Exit::PermissionDenied,
            ),
            (
                E::Timeout {
                    card: "mic0".into(),
                    waited: Duration::from_secs(1),
                    last_state: libmic::MicState::Online,
                },
                Exit::Timeout,
            ),
            (
                E::NoAnswer {
                    path: p(),
                    waited: Duration::from_secs(2),
                },
                Exit::Timeout,
            ),
            (
                E::Parse {
                    path: p(),
                    value: "banana".into(),
                    expected: "a state",
                },
                Exit::Failure,
            ),
            (E::ResetFailed { card: "mic0".into() }, Exit::Failure),
            (
                E::CardCrashed {
                    card: "mic0".into(),
                    line: "Kernel panic - not syncing: x".into(),
                },
                Exit::Failure,
            ),
            (E::PollUnsupported { path: p() }, Exit::Failure),
            (
                E::SystemMap {
                    path: p(),
                    missing: vec!["__log_buf".into()],
                },
                Exit::Failure,
            ),
            (
                E::Io {
                    path: p(),
                    source: std::io::Error::from_raw_os_error(libc::EIO),
                },
                Exit::Failure,
            ),
        ];
        for (e, want) in table {
            assert_eq!(Exit::of_libmic(&e), want, "{e:?}");
            // And through an anyhow chain, as commands return them.
            let wrapped = anyhow::Error::new(e).context("while doing something");
            assert_eq!(Exit::of_error(&wrapped), want, "{wrapped:#}");
            assert!(
                help().contains(&format!("\n  {:<2} ", want.code())),
                "{want:?} documented"
            );
        }
    }

    #[test]
    fn help_table_lists_every_code() {
        let h = help();
        for (i, e) in Exit::ALL.iter().enumerate() {
            assert_eq!(usize::from(e.code()), i, "ALL is in code order");
            assert!(
                h.contains(&format!("\n  {:<2} {}", e.code(), e.meaning())),
                "{e:?}"
            );
        }
    }

    /// README.md and JSON.md have a row for every code with its meaning's
    /// kind: the documentation cannot fall behind the one table.
    #[test]
    fn the_documentation_lists_every_code() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
        let json = std::fs::read_to_string(dir.join("JSON.md")).unwrap();
        for e in Exit::ALL {
            let row = format!("\n| {} |", e.code());
            assert!(readme.contains(&row), "README.md has no row for {e:?}");
            let row = format!("\n| {} | {} |", e.code(), e.kind());
            assert!(json.contains(&row), "JSON.md has no row {row:?}");
        }
    }

    /// The schema's lists are the one table's: exit codes, error kinds
    /// (every code but ok), and the event kinds of mpssd's protocol.
    #[test]
    fn the_schema_lists_every_code_and_kind() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/micctl.schema.json");
        let schema: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let defs = &schema["$defs"];
        let codes: Vec<u64> = Exit::ALL.iter().map(|e| u64::from(e.code())).collect();
        assert_eq!(defs["exit_code"]["enum"], serde_json::json!(codes));
        let kinds: Vec<&str> = Exit::ALL[1..].iter().map(|e| e.kind()).collect();
        assert_eq!(
            defs["error"]["properties"]["kind"]["enum"],
            serde_json::json!(kinds)
        );
        assert_eq!(
            defs["event_record"]["properties"]["kind"]["enum"],
            serde_json::json!(mpssd_proto::EventKind::NAMES)
        );
        let states: Vec<&str> = mpssd_proto::SupervisorState::ALL
            .iter()
            .map(|s| s.as_str())
            .collect();
        assert_eq!(defs["supervisor_state"]["enum"], serde_json::json!(states));
    }

    #[test]
    fn mpssd_failures_have_their_codes() {
        use libmic::mpssd::ErrorBody;
        use std::path::PathBuf;
        use std::time::Duration;
        let p = || PathBuf::from("/r/run/mpssd/control.sock");
        let os = |n| std::io::Error::from_raw_os_error(n);
        let table = [
            (
                ClientError::NotRunning {
                    path: p(),
                    source: os(libc::ENOENT),
                },
                Exit::MpssdAbsent,
            ),
            (ClientError::Closed, Exit::MpssdAbsent),
            (
                ClientError::NoAnswer {
                    path: p(),
                    waited: Duration::from_secs(2),
                },
                Exit::Timeout,
            ),
            (
                ClientError::Connect {
                    path: p(),
                    source: os(libc::EACCES),
                },
                Exit::PermissionDenied,
            ),
            (
                ClientError::Refused(ErrorBody::new(ErrorCode::NoSuchCard, "no card mic9")),
                Exit::NoSuchCard,
            ),
            (
                ClientError::Refused(ErrorBody::new(ErrorCode::ShuttingDown, "stopping")),
                Exit::MpssdAbsent,
            ),
            (
                ClientError::Refused(ErrorBody::new(ErrorCode::Internal, "bug")),
                Exit::Failure,
            ),
        ];
        for (e, want) in table {
            let wrapped = anyhow::Error::new(e).context("asking mpssd");
            assert_eq!(Exit::of_error(&wrapped), want, "{wrapped:#}");
        }
        let nf = anyhow::Error::new(crate::NotFound("no bundle".into()));
        assert_eq!(Exit::of_error(&nf), Exit::NotFound);
    }
}
