//! What every task of the daemon shares: the root, the running
//! configuration, the event bus and a read-only handle on each card.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::SystemTime;

use libmic::MicRoot;
use log::Level;
use mpssd_proto::{CardStatus, DaemonStatus, Event, EventKind, ReloadSource, Severity, VERSION, unix_ms};
use tokio::sync::{Mutex, broadcast, watch};

use crate::config::{Config, ConfigError};
use crate::devices::DeviceView;

/// Events kept for a subscriber that falls behind before it is told it
/// lagged.
pub const EVENT_BUFFER: usize = 1024;

/// How long reading the configuration file may take.
pub const RELOAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A card as other tasks see it.
#[derive(Clone)]
pub struct CardHandle {
    pub status: watch::Receiver<CardStatus>,
    pub view: Arc<dyn DeviceView>,
}

impl std::fmt::Debug for CardHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CardHandle")
            .field("status", &*self.status.borrow())
            .finish_non_exhaustive()
    }
}

impl CardHandle {
    /// The card's status with fresh device counters.
    #[must_use]
    pub fn snapshot(&self) -> CardStatus {
        let mut s = self.status.borrow().clone();
        s.devices = self.view.devices();
        s
    }
}

/// The daemon's shared state.
#[derive(Debug)]
pub struct Shared {
    pub root: MicRoot,
    pub config_path: PathBuf,
    config: watch::Sender<Arc<Config>>,
    config_loaded_ms: AtomicU64,
    pub started_ms: u64,
    events: broadcast::Sender<Event>,
    /// Filled once at start, before any task reads it.
    pub cards: std::sync::OnceLock<BTreeMap<u32, CardHandle>>,
    /// Connected control clients.
    pub clients: AtomicU32,
    pub reloads_ok: AtomicU64,
    pub reloads_failed: AtomicU64,
    reload_lock: Mutex<()>,
}

impl Shared {
    #[must_use]
    pub fn new(root: MicRoot, config_path: PathBuf, config: Config) -> Self {
        let now = unix_ms(SystemTime::now());
        Self {
            root,
            config_path,
            config: watch::Sender::new(Arc::new(config)),
            config_loaded_ms: AtomicU64::new(now),
            started_ms: now,
            events: broadcast::Sender::new(EVENT_BUFFER),
            cards: std::sync::OnceLock::new(),
            clients: AtomicU32::new(0),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
            reload_lock: Mutex::new(()),
        }
    }

    /// The running configuration.
    #[must_use]
    pub fn config(&self) -> Arc<Config> {
        self.config.borrow().clone()
    }

    /// Follows configuration changes.
    #[must_use]
    pub fn config_rx(&self) -> watch::Receiver<Arc<Config>> {
        self.config.subscribe()
    }

    #[must_use]
    pub fn cards(&self) -> &BTreeMap<u32, CardHandle> {
        static EMPTY: BTreeMap<u32, CardHandle> = BTreeMap::new();
        self.cards.get().unwrap_or(&EMPTY)
    }

    /// Follows events from now on.
    #[must_use]
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Logs an event and sends it to every subscriber (never blocks: a
    /// subscriber that falls behind loses the oldest and is told so).
    pub fn emit(&self, card: Option<u32>, kind: EventKind) {
        let event = Event {
            ts_ms: unix_ms(SystemTime::now()),
            card,
            kind,
        };
        let (level, text) = describe(&event);
        log::log!(target: "mpssd", level, "{text}");
        let _ = self.events.send(event);
    }

    /// The daemon's status.
    #[must_use]
    pub fn status(&self) -> DaemonStatus {
        DaemonStatus {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            protocol: VERSION,
            pid: std::process::id(),
            root: self.root.path().display().to_string(),
            config_file: self.config_path.display().to_string(),
            config_loaded_ms: self.config_loaded_ms.load(Ordering::Relaxed),
            started_ms: self.started_ms,
            clients: self.clients.load(Ordering::Relaxed),
            cards: self.cards().values().map(CardHandle::snapshot).collect(),
        }
    }

    /// Re-reads the configuration file. A refused file leaves the running
    /// configuration in force. Returns whether anything changed.
    pub async fn reload(&self, source: ReloadSource) -> Result<bool, ConfigError> {
        let _one_at_a_time = self.reload_lock.lock().await;
        let path = self.config_path.clone();
        // TIMEOUT: RELOAD_TIMEOUT (a config file on a hung filesystem).
        let job = tokio::task::spawn_blocking(move || Config::load(&path, true));
        let loaded = match tokio::time::timeout(RELOAD_TIMEOUT, job).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(ConfigError::Read {
                path: self.config_path.clone(),
                message: format!("reader failed: {e}"),
            }),
            Err(_) => Err(ConfigError::Read {
                path: self.config_path.clone(),
                message: format!("not read within {RELOAD_TIMEOUT:?}"),
            }),
        };
        match loaded {
            Ok(new) => {
                let old = self.config();
                let changed = !old.same_settings(&new);
                if changed {
                    for (what, differs) in [
                        (
                            "daemon.control_group",
                            old.daemon.control_group != new.daemon.control_group,
                        ),
                        (
                            "daemon.max_clients",
                            old.daemon.max_clients != new.daemon.max_clients,
                        ),
                        ("metrics", old.metrics != new.metrics),
                    ] {
                        if differs {
                            log::warn!(target: "mpssd", "{what} changed: takes effect when mpssd restarts");
                        }
                    }
                    self.config.send_replace(Arc::new(new));
                }
                self.config_loaded_ms
                    .store(unix_ms(SystemTime::now()), Ordering::Relaxed);
                self.reloads_ok.fetch_add(1, Ordering::Relaxed);
                self.emit(
                    None,
                    EventKind::ConfigReloaded {
                        source,
                        ok: true,
                        changed,
                        error: None,
                    },
                );
                Ok(changed)
            }
            Err(e) => {
                self.reloads_failed.fetch_add(1, Ordering::Relaxed);
                self.emit(
                    None,
                    EventKind::ConfigReloaded {
                        source,
                        ok: false,
                        changed: false,
                        error: Some(e.to_string()),
                    },
                );
                Err(e)
            }
        }
    }
}

/// The log level and line of an event: the protocol's one description of
/// it ([`Event::describe`]), at the level its severity says.
#[must_use]
pub fn describe(e: &Event) -> (Level, String) {
    let (severity, text) = e.describe();
    let level = match severity {
        Severity::Debug => Level::Debug,
        Severity::Info => Level::Info,
        Severity::Warn => Level::Warn,
        Severity::Error => Level::Error,
    };
    (level, text)
}
