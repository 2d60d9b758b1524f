//! Watching the snapshot file. The directory is watched, not the file:
//! editors save by writing a new file and renaming it over the old one,
//! which a watch on the old inode would miss. Any event re-reads the file;
//! unchanged text is ignored, so event storms cost nothing.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::core::Core;
use crate::snapshot::Snapshot;
use crate::Error;

/// Editors write in several steps; wait for the burst to settle.
const SETTLE: Duration = Duration::from_millis(150);

pub(crate) fn spawn(path: PathBuf, core: Arc<Core>) -> Result<JoinHandle<()>, Error> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let wake = Arc::new(Notify::new());
    let w = wake.clone();
    let mut watcher = notify::recommended_watcher(move |_res: notify::Result<notify::Event>| {
        w.notify_one();
    })
    .map_err(|e| Error::Watch(format!("cannot watch {}: {e}", dir.display())))?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(|e| Error::Watch(format!("cannot watch {}: {e}", dir.display())))?;
    let mut last = std::fs::read_to_string(&path).ok();
    let mut shutdown = core.shutdown.subscribe();
    Ok(tokio::spawn(async move {
        // The watcher lives as long as the task.
        let _watcher = watcher;
        let name = path.display().to_string();
        loop {
            tokio::select! {
                _ = wake.notified() => {}
                _ = shutdown.changed() => break,
            }
            tokio::time::sleep(SETTLE).await;
            let text = match tokio::fs::read_to_string(&path).await {
                Ok(t) => t,
                // Mid-rename the file may briefly not exist; the next event
                // brings it back.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => {
                    let err = Error::Io {
                        what: format!("cannot read {name}"),
                        source,
                    };
                    core.rejected(&name, &err);
                    continue;
                }
            };
            if last.as_deref() == Some(text.as_str()) {
                continue;
            }
            last = Some(text.clone());
            // Decoding 10,000 resources takes a while: off the runtime.
            let parsed = tokio::task::spawn_blocking(move || Snapshot::from_yaml(&text)).await;
            match parsed {
                Ok(Ok(snapshot)) => {
                    let p = core.publish(snapshot, &name);
                    tracing::info!("{name}: published version {}", p.version);
                }
                Ok(Err(e)) => core.rejected(&name, &e.in_file(&name)),
                Err(e) => core.rejected(&name, &Error::Invalid(format!("decoder task failed: {e}"))),
            }
        }
    }))
}
