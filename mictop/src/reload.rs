//! The configuration read again when its file changes: the `notify` crate
//! watches the file's directory (so an editor that writes a new file and
//! renames it over the old one is seen too), a burst of changes is read
//! once after [`DEBOUNCE`] of quiet, and the result arrives as
//! [`Action::Config`]. A file that does not load is reported; the
//! configuration in force stays.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecursiveMode, Watcher as _};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::app::Action;
use crate::cli::Cli;
use crate::config::{Config, ConfigError, ThemeName};
use crate::event::Tx;
use crate::theme::Theme;

/// Quiet time after the last change before the file is read (an editor's
/// save is several events).
pub const DEBOUNCE: Duration = Duration::from_millis(200);

/// The longest one read of the file may take (a file on a hung network
/// file system fails the reload, not mictop).
pub const READ_LIMIT: Duration = Duration::from_secs(5);

/// What the command line and the environment override in the file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `--interval`.
    pub interval: Option<Duration>,
    /// `--no-mouse`.
    pub no_mouse: bool,
    /// `NO_COLOR` set and not empty: the mono theme.
    pub no_color: bool,
}

impl Overrides {
    /// The file's configuration with the overrides applied, and its theme.
    #[must_use]
    pub fn apply(&self, mut config: Config) -> (Config, Theme) {
        if let Some(i) = self.interval {
            config.interval = i;
        }
        if self.no_mouse {
            config.mouse = false;
        }
        let theme = Theme::new(if self.no_color {
            ThemeName::Mono
        } else {
            config.theme
        });
        (config, theme)
    }
}

/// Where the configuration comes from: a file (`--config`, else the
/// default), then the overrides.
#[derive(Debug, Clone, Default)]
pub struct ConfigSource {
    /// `--config FILE`; `None`: the default file, if it exists.
    pub explicit: Option<PathBuf>,
    pub overrides: Overrides,
}

/// Why the configuration file cannot be watched.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("no configuration file to watch (no $XDG_CONFIG_HOME or $HOME)")]
    NoFile,
    #[error("cannot watch {}", dir.display())]
    Watch {
        dir: PathBuf,
        #[source]
        source: notify::Error,
    },
}

impl ConfigSource {
    /// The file and overrides the command line and environment name.
    #[must_use]
    pub fn from_cli(cli: &Cli) -> Self {
        Self {
            explicit: cli.config.clone(),
            overrides: Overrides {
                interval: cli.interval,
                no_mouse: cli.no_mouse,
                no_color: std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty()),
            },
        }
    }

    /// The file read.
    #[must_use]
    pub fn path(&self) -> Option<PathBuf> {
        Config::path(self.explicit.as_deref())
    }

    /// Reads the configuration (as at start: a default file that does not
    /// exist is the defaults).
    pub fn load(&self) -> Result<(Config, Theme), ConfigError> {
        Ok(self.overrides.apply(Config::load(self.explicit.as_deref())?))
    }

    /// Starts watching the file: each change is read (debounced) and sent
    /// as [`Action::Config`]. Must run inside a tokio runtime. Dropping the
    /// watch stops it.
    pub fn watch(&self, tx: Tx) -> Result<ConfigWatch, WatchError> {
        let path = self.path().ok_or(WatchError::NoFile)?;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
            _ => PathBuf::from("."),
        };
        let name = path.file_name().ok_or(WatchError::NoFile)?.to_owned();
        let (changed_tx, changed) = mpsc::unbounded_channel::<()>();
        let handler = move |res: notify::Result<notify::Event>| {
            if let Ok(ev) = res {
                if !ev.kind.is_access() && ev.paths.iter().any(|p| p.file_name() == Some(&name)) {
                    let _ = changed_tx.send(());
                }
            }
        };
        let watch_err = |source| WatchError::Watch {
            dir: dir.clone(),
            source,
        };
        let mut watcher = notify::recommended_watcher(handler).map_err(watch_err)?;
        watcher
            .watch(Path::new(&dir), RecursiveMode::NonRecursive)
            .map_err(watch_err)?;
        let task = tokio::spawn(reload_on_change(self.clone(), changed, tx));
        Ok(ConfigWatch {
            _watcher: watcher,
            task,
        })
    }
}

/// A running watch of the configuration file; dropping it stops it.
#[derive(Debug)]
pub struct ConfigWatch {
    _watcher: notify::RecommendedWatcher,
    task: JoinHandle<()>,
}

impl Drop for ConfigWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn reload_on_change(source: ConfigSource, mut changed: mpsc::UnboundedReceiver<()>, tx: Tx) {
    while changed.recv().await.is_some() {
        // TIMEOUT: DEBOUNCE of quiet after the last change.
        loop {
            match tokio::time::timeout(DEBOUNCE, changed.recv()).await {
                Ok(Some(())) => {}
                Ok(None) => return,
                Err(_) => break,
            }
        }
        let reader = source.clone();
        let read = tokio::task::spawn_blocking(move || reader.load());
        // TIMEOUT: READ_LIMIT for one read of the file.
        let result = match tokio::time::timeout(READ_LIMIT, read).await {
            Ok(Ok(loaded)) => loaded.map_err(|e| e.to_string()),
            Ok(Err(_)) => Err("reading the configuration failed".to_owned()),
            Err(_) => Err(format!(
                "{}: not read within {} s",
                source.path().unwrap_or_default().display(),
                READ_LIMIT.as_secs()
            )),
        };
        if tx.send(Action::Config(Box::new(result))).is_err() {
            return;
        }
    }
}
