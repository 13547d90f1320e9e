//! Configuration reloads: on a change of the file (the `notify` crate,
//! watching its directory so editors that write a new file and rename it
//! are seen too; debounced) and on SIGHUP.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mpssd_proto::ReloadSource;
use notify::{RecursiveMode, Watcher as _};
use tokio::sync::mpsc;

use crate::shared::Shared;

/// Quiet time after the last change before the file is read (an editor's
/// save is several events).
pub const DEBOUNCE: Duration = Duration::from_millis(200);

/// Watches the configuration file. Returns the watcher (dropping it stops
/// the watch) or `None` if the directory cannot be watched (logged;
/// SIGHUP and the control socket still reload).
pub fn watch_file(shared: Arc<Shared>) -> Option<notify::RecommendedWatcher> {
    let path = shared.config_path.clone();
    let dir = path.parent().map_or_else(|| PathBuf::from("."), Path::to_owned);
    let name = path.file_name()?.to_owned();
    let (tx, rx) = mpsc::unbounded_channel::<()>();
    let handler = move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res {
            if ev.paths.iter().any(|p| p.file_name() == Some(&name)) && !ev.kind.is_access() {
                let _ = tx.send(());
            }
        }
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(e) => {
            log::warn!(target: "mpssd", "cannot watch the configuration: {e}; reload with SIGHUP");
            return None;
        }
    };
    if let Err(e) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
        log::warn!(
            target: "mpssd",
            "cannot watch {}: {e}; reload with SIGHUP",
            dir.display()
        );
        return None;
    }
    tokio::spawn(debounced(shared, rx));
    Some(watcher)
}

async fn debounced(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<()>) {
    while rx.recv().await.is_some() {
        // TIMEOUT: DEBOUNCE of quiet after the last event.
        loop {
            match tokio::time::timeout(DEBOUNCE, rx.recv()).await {
                Ok(Some(())) => {}
                Ok(None) => return,
                Err(_) => break,
            }
        }
        let _ = shared.reload(ReloadSource::File).await;
    }
}
