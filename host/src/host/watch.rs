//! Watching the plugins folder: every settled change to a `NAME.wasm` file
//! (created, written, renamed into place, removed) is applied to the host.
//!
//! A file renamed into place is complete by the time it appears (that is why
//! tools write a temp file and rename it), so it is applied at once instead
//! of after the settle time. The debouncer reports it again once settled;
//! by then its content is the current version and nothing happens.

use super::{Host, PluginChange};
use crate::wasm;
use anyhow::{Context, Result};
use notify::event::{ModifyKind, RenameMode};
use notify::{EventKind, RecursiveMode, Watcher as _};
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;

/// How long a file must be quiet before it is read: a file copied in many
/// writes is read only after its last write. A file that is still incomplete after this fails to
/// compile, changes nothing, and is read again on its next write.
pub const SETTLE: Duration = Duration::from_millis(20);

/// A running watch; dropping it stops watching.
pub struct Watcher {
    _debouncer: Debouncer<notify::RecommendedWatcher, RecommendedCache>,
    _renames: notify::RecommendedWatcher,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Host {
    /// Watches `dir` and applies every change of a `NAME.wasm` in it: load,
    /// hot reload, or removal. Other files are ignored.
    pub fn watch(&self, dir: &Path) -> Result<Watcher> {
        let (tx, mut rx) = mpsc::unbounded_channel::<PathBuf>();
        let renamed = tx.clone();
        let mut renames =
            notify::recommended_watcher(move |result: notify::Result<notify::Event>| {
                // inotify reports a rename as `From`, `To` and then `Both`;
                // `To` alone names each destination once.
                if let Ok(event) = result
                    && let EventKind::Modify(ModifyKind::Name(RenameMode::To)) = event.kind
                    && let Some(path) = event.paths.last()
                    && path.extension().is_some_and(|e| e == "wasm")
                {
                    let _ = renamed.send(path.clone());
                }
            })
            .context("cannot start watching the plugins folder")?;
        renames
            .watch(dir, RecursiveMode::NonRecursive)
            .with_context(|| format!("cannot watch {}", dir.display()))?;
        let mut debouncer = new_debouncer(
            SETTLE,
            Some(SETTLE / 4),
            move |result: DebounceEventResult| match result {
                Ok(events) => {
                    for event in events {
                        for path in &event.paths {
                            if path.extension().is_some_and(|e| e == "wasm") {
                                let _ = tx.send(path.clone());
                            }
                        }
                    }
                }
                Err(errors) => {
                    for e in errors {
                        tracing::warn!("watching the plugins folder: {e}");
                    }
                }
            },
        )
        .context("cannot start watching the plugins folder")?;
        debouncer
            .watch(dir, RecursiveMode::NonRecursive)
            .with_context(|| format!("cannot watch {}", dir.display()))?;
        let host = self.clone();
        let task = tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                // One batch of events can name a file several times.
                let mut paths = vec![first];
                while let Ok(p) = rx.try_recv() {
                    if !paths.contains(&p) {
                        paths.push(p);
                    }
                }
                for path in paths {
                    if wasm::plugin_name(&path).is_none() {
                        tracing::debug!("ignoring {}", path.display());
                        continue;
                    }
                    match host.apply_file(&path).await {
                        Ok(PluginChange::Unchanged) => {
                            tracing::debug!("{} is unchanged", path.display());
                        }
                        Ok(_) => {}
                        // Already reported (log, event, plugin status).
                        Err(e) => tracing::debug!("{}: {e:#}", path.display()),
                    }
                }
            }
        });
        tracing::info!("watching {} for plugin changes", dir.display());
        Ok(Watcher {
            _debouncer: debouncer,
            _renames: renames,
            task,
        })
    }
}
