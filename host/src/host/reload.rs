//! Plugin versions over time: loading a folder at start, and applying a
//! changed, new or removed `.wasm` file to the running host (hot reload).
//!
//! A changed file is compiled off the serving path. Identical content is a
//! no-op; a file that does not compile changes nothing. A good new version
//! replaces the running instances one by one (the first is the canary: if it
//! fails, nothing else is touched and the plugin reports the error), in
//! small concurrent batches after that.

use super::Host;
use crate::child::{Cell, Control};
use crate::events::Event;
use crate::types::Status;
use crate::wasm::{self, Version};
use anyhow::{Context, Result, anyhow};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::oneshot;
use tracing::Instrument;

/// How many children move to a new version at once after the canary. Each
/// holds two instances while it moves, so the pool needs this many spare
/// slots.
pub const RELOAD_BATCH: usize = 64;

/// How loading a folder of plugins went.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// Plugins that loaded, with their versions.
    pub loaded: Vec<(String, String)>,
    /// Files that failed, with the error.
    pub failed: Vec<(PathBuf, String)>,
}

/// What applying a plugin file did.
#[derive(Debug, Clone)]
pub enum PluginChange {
    /// The content is the current version's: nothing to do.
    Unchanged,
    /// A plugin that had no version now has one (its waiting children start).
    Loaded(Arc<Version>),
    /// Running children moved to a new version.
    Reloaded {
        /// The new version.
        version: Arc<Version>,
        /// Children moved.
        instances: usize,
        /// Children that stayed on the old version, with why.
        failed: Vec<(String, String)>,
        /// From the start of the change to the last child serving it, ms.
        ms: f64,
    },
    /// The plugin's file is gone; its children wait for it.
    Removed {
        /// Children now waiting.
        instances: usize,
    },
}

impl Host {
    /// Compiles every `NAME.wasm` in `dir`, showing progress in the log. A
    /// file that fails is reported and the others still load.
    pub async fn load_dir(
        &self,
        dir: &Path,
        progress: &(dyn Fn(super::Progress) + Sync),
    ) -> Result<LoadReport> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("cannot read plugins folder {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "wasm"))
            .collect();
        files.sort();
        let mut report = LoadReport::default();
        let total = files.len();
        for (i, path) in files.into_iter().enumerate() {
            tracing::info!("[{}/{total}] compiling {}", i + 1, path.display());
            match self.apply_file(&path).await {
                Ok(PluginChange::Loaded(v) | PluginChange::Reloaded { version: v, .. }) => {
                    tracing::info!(
                        "[{}/{total}] loaded plugin {} version {} ({} KiB, {} in {:.0} ms)",
                        i + 1,
                        v.plugin,
                        v.hash,
                        v.size / 1024,
                        if v.cached {
                            "from the compile cache"
                        } else {
                            "compiled"
                        },
                        v.compile_ms
                    );
                    report.loaded.push((v.plugin.to_string(), v.hash.clone()));
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::error!("[{}/{total}] cannot load {}: {e:#}", i + 1, path.display());
                    report.failed.push((path, format!("{e:#}")));
                }
            }
            progress(super::Progress::Compiling { done: i + 1, total });
        }
        self.sup.env.wasm.evict_artifacts();
        Ok(report)
    }

    /// Applies the current state of `path` (`NAME.wasm`): loads or reloads
    /// plugin `NAME` if the file exists, removes it if it does not.
    pub async fn apply_file(&self, path: &Path) -> Result<PluginChange> {
        let name = wasm::plugin_name(path).with_context(|| {
            format!(
                "{} is not NAME.wasm with a valid plugin name (letters, digits, _ and -)",
                path.display()
            )
        })?;
        match std::fs::read(path) {
            Ok(bytes) => self.apply_bytes(&name, bytes).await,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Ok(self.remove_plugin(&name).await)
            }
            Err(e) => {
                let message = format!("cannot read {}: {e}", path.display());
                self.reload_failed(&name, None, &message);
                Err(anyhow!(message))
            }
        }
    }

    /// Makes `bytes` the current version of plugin `name`: loads it, or
    /// hot-reloads every running child of it.
    pub async fn apply_bytes(&self, name: &str, bytes: Vec<u8>) -> Result<PluginChange> {
        let span = match crate::trace::enabled() {
            true => tracing::info_span!("reload", plugin = name),
            false => tracing::Span::none(),
        };
        self.apply(name, bytes).instrument(span).await
    }

    async fn apply(&self, name: &str, bytes: Vec<u8>) -> Result<PluginChange> {
        let _one_change_at_a_time = self.plugin_changes.lock().await;
        let started = Instant::now();
        crate::names::validate_plugin(name).map_err(anyhow::Error::msg)?;
        let hash = wasm::content_hash(&bytes);
        let (catalog, env) = (&self.sup.env.wasm.catalog, &self.sup.env);
        // A folder watcher may report one change more than once: the same
        // bytes, good or bad, are not applied twice.
        if catalog.seen(name, &hash) {
            return Ok(PluginChange::Unchanged);
        }
        let old = catalog.current(name);
        let version = match self.compile(name, bytes).await {
            Ok(v) => Arc::new(v),
            Err(e) => {
                let message = format!("{e:#}");
                self.reload_failed(name, Some(hash), &message);
                return Err(e);
            }
        };
        env.metrics.plugin_load(true);
        let change = match old {
            None => {
                catalog.install(version.clone());
                env.events.emit(Event::PluginLoaded {
                    plugin: name.to_string(),
                    version: version.hash.clone(),
                    compile_ms: version.compile_ms,
                    cached: version.cached,
                });
                // Children waiting for this plugin start (or resume) now;
                // hibernated ones wait for their next message.
                self.reload_children(name, &version, |s| s != Status::Hibernated)
                    .await;
                PluginChange::Loaded(version.clone())
            }
            Some(_) => self.roll_out(name, version.clone(), started).await?,
        };
        env.wasm.store_artifact(&version);
        Ok(change)
    }

    /// Compiles on a blocking thread, through the compile cache.
    async fn compile(&self, name: &str, bytes: Vec<u8>) -> Result<Version> {
        let sup = self.sup.clone();
        let plugin = name.to_string();
        tokio::task::spawn_blocking(move || {
            let limits = sup.config.plugin(&plugin);
            sup.env.wasm.compile(&plugin, &bytes, limits)
        })
        .await
        .context("the compile task panicked")?
    }

    fn reload_failed(&self, name: &str, hash: Option<String>, message: &str) {
        let env = &self.sup.env;
        tracing::error!("reload of plugin {name} failed: {message}");
        env.wasm
            .catalog
            .record_error(name, hash, message.to_string());
        env.metrics.plugin_load(false);
        env.events.emit(Event::ReloadFailed {
            plugin: name.to_string(),
            error: message.to_string(),
        });
    }

    /// Canary first, then everyone else, then anyone who started meanwhile.
    async fn roll_out(
        &self,
        name: &str,
        version: Arc<Version>,
        started: Instant,
    ) -> Result<PluginChange> {
        let env = &self.sup.env;
        let rollout = Instant::now();
        let running = self.children_of(name, |s| s == Status::Running);
        let mut moved = 0;
        // Hibernated children wake on the new version at their next
        // message; with none running, one of them is woken now as the
        // canary, so that a version that refuses their state is refused
        // for all of them.
        let canary = match running.first() {
            Some(c) => Some(c.clone()),
            None => self.hibernated_canary(name),
        };
        if let Some(canary) = &canary {
            if let Err(why) = reload_one(canary, &version).await {
                let message = format!("the canary {} rolled back: {why}", canary.id);
                self.reload_failed(name, Some(version.content_hash.clone()), &message);
                return Err(anyhow!(message));
            }
            moved += 1;
        }
        env.wasm.catalog.install(version.clone());
        let mut failed = Vec::new();
        let mut rest: Vec<_> = running.into_iter().skip(1).collect();
        let canary_id = canary.as_ref().map(|c| c.id.clone());
        loop {
            for batch in rest.chunks(RELOAD_BATCH) {
                let outcomes =
                    futures_util::future::join_all(batch.iter().map(|c| reload_one(c, &version)))
                        .await;
                for (cell, outcome) in batch.iter().zip(outcomes) {
                    match outcome {
                        Ok(()) => moved += 1,
                        Err(why) => failed.push((cell.id.to_string(), why)),
                    }
                }
            }
            // Children that started on the old version while this ran.
            rest = self.children_of(name, |s| s == Status::Running);
            rest.retain(|c| {
                let on_old = c
                    .state()
                    .version
                    .as_ref()
                    .is_some_and(|v| v.hash != version.hash);
                on_old
                    && Some(&c.id) != canary_id.as_ref()
                    && !failed.iter().any(|(id, _)| **id == *c.id)
            });
            if rest.is_empty() {
                break;
            }
        }
        // Children in backoff, failed or waiting start again on the new
        // version right away.
        self.reload_children(name, &version, |s| {
            matches!(s, Status::Backoff | Status::Failed | Status::Waiting)
        })
        .await;
        env.metrics.reload_duration(started.elapsed());
        let ms = started.elapsed().as_secs_f64() * 1e3;
        tracing::info!(
            "plugin {name} reloaded to {} in {ms:.1} ms ({} in {:.1} ms, rollout {:.1} ms): \
             {moved} children moved, {} kept the old version",
            version.hash,
            if version.cached { "loaded" } else { "compiled" },
            version.compile_ms,
            rollout.elapsed().as_secs_f64() * 1e3,
            failed.len()
        );
        env.events.emit(Event::PluginReloaded {
            plugin: name.to_string(),
            version: version.hash.clone(),
            instances: moved,
            failed: failed.clone(),
            ms,
        });
        Ok(PluginChange::Reloaded {
            version,
            instances: moved,
            failed,
            ms,
        })
    }

    /// Sends `Reload(version)` to the children of `name` whose status
    /// matches, and waits for each.
    async fn reload_children(
        &self,
        name: &str,
        version: &Arc<Version>,
        which: impl Fn(Status) -> bool,
    ) {
        let cells = self.children_of(name, which);
        futures_util::future::join_all(cells.iter().map(|c| reload_one(c, version))).await;
    }

    fn children_of(&self, name: &str, which: impl Fn(Status) -> bool) -> Vec<Arc<Cell>> {
        let mut cells = Vec::new();
        self.sup.registry.for_each(|c| {
            if c.spec.plugin == name && which(c.state().status) {
                cells.push(c.clone());
            }
        });
        cells
    }

    /// A hibernated child of `name` that has run (it has state to carry),
    /// if there is one.
    fn hibernated_canary(&self, name: &str) -> Option<Arc<Cell>> {
        let mut found = None;
        self.sup.registry.for_each(|c| {
            if found.is_none() && c.spec.plugin == name {
                let state = c.state();
                if state.status == Status::Hibernated && state.activated {
                    found = Some(c.clone());
                }
            }
        });
        found
    }

    /// The plugin's file is gone: its children stop with `shutdown` and wait,
    /// with their specs, for the file to come back.
    pub async fn remove_plugin(&self, name: &str) -> PluginChange {
        let _one_change_at_a_time = self.plugin_changes.lock().await;
        let env = &self.sup.env;
        if env.wasm.catalog.remove(name).is_none() {
            return PluginChange::Unchanged;
        }
        let cells = self.children_of(name, |_| true);
        let waits: Vec<_> = cells
            .iter()
            .map(|c| {
                let (done, suspended) = oneshot::channel();
                c.signal(Control::Suspend { done });
                suspended
            })
            .collect();
        futures_util::future::join_all(waits).await;
        tracing::info!(
            "plugin {name} removed; {} children wait for it",
            cells.len()
        );
        env.events.emit(Event::PluginRemoved {
            plugin: name.to_string(),
            instances: cells.len(),
        });
        PluginChange::Removed {
            instances: cells.len(),
        }
    }
}

/// Asks one child to move to `version` and waits for the outcome.
async fn reload_one(cell: &Cell, version: &Arc<Version>) -> Result<(), String> {
    let (done, outcome) = oneshot::channel();
    cell.signal(Control::Reload {
        version: version.clone(),
        done,
    });
    outcome
        .await
        .unwrap_or_else(|_| Err("the child went away during the reload".into()))
}
