//! The host: one engine, one linker, the plugin catalog, the registry, topics
//! and events, and the dynamic supervisor's operations on them. [`Host`] is
//! the library's entry point; the HTTP API and the benchmark use only it.

use crate::address::{Address, Cell};
use crate::cache::ArtifactCache;
use crate::catalog::Catalog;
use crate::child::{Child, Origin};
use crate::config::Config;
use crate::control::Control;
use crate::durable::{Durable, Record};
use crate::events::{Event, EventBus};
use crate::instance::InstanceState;
use crate::mailbox::mailbox;
use crate::metrics::{Gauge, Metrics};
use crate::registry::Registry;
use crate::supervisor::group::GroupHandle;
use crate::topics::Topics;
use crate::types::{CallError, ChildError, ChildSpec, ExitReason, Restart, StartError, Status};
use crate::{engine, names, supervisor};
use anyhow::Result;
use bytes::Bytes;
use serde::Serialize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{broadcast, oneshot};
use wasmtime::Engine;
use wasmtime::component::Linker;

/// State shared by every part of the host.
pub struct HostInner {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<InstanceState>,
    pub(crate) catalog: Catalog,
    pub(crate) registry: Registry,
    pub(crate) topics: Topics,
    pub(crate) events: EventBus,
    pub(crate) metrics: Metrics,
    pub(crate) config: Config,
    /// Compiled artifacts on disk (none when ephemeral).
    pub(crate) cache: Option<Arc<ArtifactCache>>,
    /// Durable children (none when ephemeral).
    pub(crate) durable: Option<Durable>,
    /// Set by `shutdown`: children stop without being forgotten.
    pub(crate) shutting_down: AtomicBool,
    /// Child tasks that have not ended yet.
    pub(crate) children: Arc<Tasks>,
    /// Plugin loads, reloads and removals happen one at a time.
    pub(crate) plugin_changes: tokio::sync::Mutex<()>,
    /// The pool's native stacks, counted per running instance.
    pub(crate) stacks: crate::stacks::Stacks,
    /// The config's top-level supervision groups, in start order.
    groups: std::sync::Mutex<Vec<GroupHandle>>,
    this: Weak<HostInner>,
}

/// A running wasmvisor host. Cheap to clone; all clones are the same host.
///
/// Every child's task holds the host, so dropping the last `Host` handle
/// does not stop the children: call [`Host::shutdown`] to stop them (and
/// release the engine and its instance pool).
#[derive(Clone)]
pub struct Host {
    inner: Arc<HostInner>,
}

/// What `ps` and `GET /v1/children/{id}` show about a child.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ChildInfo {
    /// The registry id.
    pub id: String,
    /// The plugin.
    pub plugin: String,
    /// `starting`, `running`, `restarting`, `backoff`, `failed` or `waiting`.
    pub status: Status,
    /// The version (short content hash) of the current or last instance.
    pub version: Option<String>,
    /// How many times a new instance replaced an exited one.
    pub restarts: u64,
    /// Why the last instance exited, if one did.
    pub last_exit: Option<ExitReason>,
    /// The restart policy.
    pub restart: Restart,
    /// The init args.
    pub args: serde_json::Value,
    /// Messages waiting in its mailbox (calls, casts and notifications).
    pub queued: usize,
    /// Whether it was brought back from the state database at host start.
    pub restored: bool,
    /// The supervision group it belongs to (config children only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// When the current instance started (Unix ms).
    pub started_at_ms: u64,
    /// In backoff: when the next restart happens (Unix ms).
    pub backoff_until_ms: Option<u64>,
}

/// What `GET /v1/plugins` shows about a plugin.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PluginInfo {
    /// The plugin name.
    pub name: String,
    /// The current version (short content hash), if one is loaded.
    pub version: Option<String>,
    /// When it was loaded (Unix ms).
    pub loaded_at_ms: Option<u64>,
    /// How long compiling it took, ms.
    pub compile_ms: Option<f64>,
    /// The `.wasm` size, bytes.
    pub size: Option<usize>,
    /// Whether the current version came from the compile cache.
    pub cached: Option<bool>,
    /// How many children run this plugin.
    pub instances: usize,
    /// Why the last load failed, if it did.
    pub last_error: Option<String>,
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl HostInner {
    /// The dynamic supervisor's `start_child`: registers the id, starts the
    /// child's task and waits until its first `init` returned.
    pub(crate) async fn start_child(
        self: &Arc<Self>,
        spec: ChildSpec,
    ) -> Result<Address, StartError> {
        names::validate_id(&spec.id).map_err(StartError::Invalid)?;
        names::validate_plugin(&spec.plugin).map_err(StartError::Invalid)?;
        let version = self
            .catalog
            .current(&spec.plugin)
            .ok_or_else(|| StartError::UnknownPlugin(spec.plugin.clone()))?;
        let (tx, rx) = mailbox(self.config.tuning.mailbox, version.limits.mailbox as usize);
        let cell = Arc::new(Cell::new(spec, tx));
        if self.registry.insert_new(cell.clone()).is_err() {
            return Err(StartError::AlreadyStarted(cell.id.to_string()));
        }
        let (ready, started) = oneshot::channel();
        Child::spawn(self.clone(), cell.clone(), rx, Origin::New(ready), None);
        match started.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(StartError::Unavailable(
                    "the child's task ended during start".into(),
                ));
            }
        }
        if let Err(e) = self.persist(&cell).await {
            // Not durable means not acknowledged: undo the start.
            let _ = self.stop_child(&cell.id).await;
            return Err(StartError::Unavailable(format!(
                "cannot store the child: {e:#}"
            )));
        }
        Ok(Address(cell))
    }

    /// Stores a started child, on disk before it returns.
    async fn persist(&self, cell: &Cell) -> Result<()> {
        let Some(durable) = &self.durable else {
            return Ok(());
        };
        let record = Record {
            spec: cell.spec.clone(),
            seq: durable.next_seq(),
            failed: None,
        };
        let inner = self.myself();
        tokio::task::spawn_blocking(move || match &inner.durable {
            Some(d) => d.put(&record),
            None => Ok(()),
        })
        .await?
    }

    /// Forgets a removed child durably; while the host shuts down, children
    /// stop without being forgotten.
    pub(crate) async fn forget(&self, id: &str) {
        if self.durable.is_none() || self.shutting_down.load(Ordering::Acquire) {
            return;
        }
        let (inner, id) = (self.myself(), id.to_string());
        let result = tokio::task::spawn_blocking(move || match &inner.durable {
            Some(d) => d.remove(&id),
            None => Ok(()),
        })
        .await;
        if let Ok(Err(e)) | Err(e) = result.map_err(anyhow::Error::from) {
            tracing::error!("cannot forget a removed child in the state database: {e:#}");
        }
    }

    /// Records durably whether a child is `failed`. Not synced to disk (see
    /// `Durable::set_failed`), so cheap enough to do in place.
    pub(crate) fn remember_failed(&self, id: &str, failed: Option<ExitReason>) {
        if let Some(d) = &self.durable
            && let Err(e) = d.set_failed(id, failed)
        {
            tracing::error!("cannot record a failed child in the state database: {e:#}");
        }
    }

    fn myself(&self) -> Arc<HostInner> {
        // Every HostInner lives in an Arc: `Host` creates it so.
        self.this
            .upgrade()
            .expect("the host is alive while it runs")
    }

    /// Brings back a stored child (in start order). Its first start is
    /// awaited so that children come back in order; a failure is an exit
    /// like any other.
    async fn restore(self: &Arc<Self>, record: Record) {
        let bound = self.config.plugin(&record.spec.plugin).mailbox as usize;
        let (tx, rx) = mailbox(self.config.tuning.mailbox, bound);
        let cell = Arc::new(Cell::new(record.spec, tx));
        cell.state().restored = true;
        if self.registry.insert_new(cell.clone()).is_err() {
            tracing::error!("stored child {} is already running; skipped", cell.id);
            return;
        }
        let (attempted, done) = oneshot::channel();
        let failed = record.failed;
        Child::spawn(
            self.clone(),
            cell,
            rx,
            Origin::Restored { failed, attempted },
            None,
        );
        let _ = done.await;
    }

    /// The dynamic supervisor's `terminate_child`: `terminate(shutdown)`,
    /// then the child is removed and its id is free.
    pub(crate) async fn stop_child(&self, id: &str) -> Result<(), ChildError> {
        let cell = self
            .registry
            .get(id)
            .ok_or_else(|| ChildError::NotFound(id.into()))?;
        let (done, stopped) = oneshot::channel();
        cell.control.push(Control::Stop { done });
        let _ = stopped.await;
        Ok(())
    }

    pub(crate) fn publish(&self, topic: &str, msg: Bytes) {
        if self.events.has_listeners() {
            self.events.emit(Event::Topic {
                topic: topic.to_string(),
                msg: msg.clone(),
            });
        }
        self.topics.publish(topic, &msg);
    }

    fn info(&self, cell: &Cell) -> ChildInfo {
        let state = cell.state();
        ChildInfo {
            id: cell.id.to_string(),
            plugin: cell.spec.plugin.clone(),
            status: state.status,
            version: state.version.as_ref().map(|v| v.hash.clone()),
            restarts: state.restarts,
            last_exit: state.last_exit.clone(),
            restart: cell.spec.restart,
            args: serde_json::from_slice(&cell.spec.args).unwrap_or_else(|_| {
                serde_json::Value::String(String::from_utf8_lossy(&cell.spec.args).into_owned())
            }),
            queued: cell.mailbox.queued(),
            restored: state.restored,
            group: state.group.as_deref().map(str::to_string),
            started_at_ms: unix_ms(state.started_at),
            backoff_until_ms: state.backoff_until.map(unix_ms),
        }
    }
}

impl Host {
    /// Creates the engine, the linker and the epoch ticker, then loads every
    /// plugin in `config.plugins_dir` (a file that fails is reported and
    /// skipped). Must run inside a multi-threaded tokio runtime.
    pub async fn new(config: Config) -> Result<Host> {
        let (host, stored) = Host::build(config)?;
        let dir = host.inner.config.plugins_dir.clone();
        if dir.is_dir() {
            host.load_dir(&dir).await?;
        } else {
            tracing::warn!(
                "plugins folder {} does not exist; no plugins loaded",
                dir.display()
            );
        }
        host.start_static().await;
        let total = stored.len();
        for (i, record) in stored.into_iter().enumerate() {
            tracing::info!(
                "[{}/{total}] restoring child {} ({})",
                i + 1,
                record.spec.id,
                record.spec.plugin
            );
            host.inner.restore(record).await;
        }
        if total > 0 {
            tracing::info!("restored {total} children from the state database");
        }
        Ok(host)
    }

    /// Starts the config's `[[children]]`, then its `[[groups]]`, in order.
    async fn start_static(&self) {
        let inner = &self.inner;
        for child in &inner.config.children {
            supervisor::group::start_static(inner, child, None).await;
        }
        for group in &inner.config.groups {
            let handle = supervisor::group::start_top(inner, group).await;
            inner
                .groups
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(handle);
        }
    }

    /// The engine, linker, caches and database, with no plugins loaded; and
    /// the stored children to bring back.
    fn build(config: Config) -> Result<(Host, Vec<Record>)> {
        let engine = engine::engine(&config)?;
        let linker = engine::linker(&engine)?;
        engine::start_epoch_ticker(&engine)?;
        let cache = match config.ephemeral {
            true => None,
            false => Some(Arc::new(ArtifactCache::open(&config.data_dir, &engine)?)),
        };
        let (durable, stored) = match config.ephemeral {
            true => (None, Vec::new()),
            false => {
                let (d, stored) = Durable::open(&config.data_dir)?;
                (Some(d), stored)
            }
        };
        let stacks = crate::stacks::Stacks::new(
            config.engine.stack_per_callback,
            engine::pool_stacks(&config.engine, &config.pool),
        );
        let inner = Arc::new_cyclic(|this| HostInner {
            this: this.clone(),
            stacks,
            engine,
            linker,
            catalog: Catalog::default(),
            registry: Registry::default(),
            topics: Topics::default(),
            events: EventBus::default(),
            metrics: Metrics::default(),
            config,
            cache,
            durable,
            shutting_down: AtomicBool::new(false),
            children: Arc::default(),
            plugin_changes: tokio::sync::Mutex::new(()),
            groups: std::sync::Mutex::default(),
        });
        Ok((Host { inner }, stored))
    }

    pub(crate) fn inner(&self) -> &Arc<HostInner> {
        &self.inner
    }

    /// The configuration the host runs with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Starts a dynamic child and waits until its `init` returned.
    pub async fn start_child(&self, spec: ChildSpec) -> Result<Address, StartError> {
        self.inner.start_child(spec).await
    }

    /// The address registered under `id`.
    pub fn lookup(&self, id: &str) -> Option<Address> {
        self.inner.registry.get(id).map(Address)
    }

    /// Calls child `id` and waits at most `timeout` for the reply.
    pub async fn call(
        &self,
        id: &str,
        msg: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, CallError> {
        self.call_within(id, msg, Some(timeout)).await
    }

    /// [`Host::call`] without a deadline, for the benchmark's A/B of the
    /// per-call timer.
    pub(crate) async fn call_untimed(&self, id: &str, msg: Vec<u8>) -> Result<Vec<u8>, CallError> {
        self.call_within(id, msg, None).await
    }

    async fn call_within(
        &self,
        id: &str,
        msg: Vec<u8>,
        timeout: Option<Duration>,
    ) -> Result<Vec<u8>, CallError> {
        let m = &self.inner.metrics;
        m.call();
        let decode = self.inner.config.tuning.decode_messages;
        let result = match self.inner.registry.get(id) {
            Some(cell) if decode => match self.call_cell(&cell, reencode(&msg)?, timeout).await {
                Ok(reply) => reencode(&reply),
                Err(e) => Err(e),
            },
            Some(cell) => self.call_cell(&cell, msg, timeout).await,
            None => Err(CallError::NotFound),
        };
        if let Err(e) = &result {
            m.call_error(e.code());
        }
        result
    }

    /// A call from outside the guests: on this task if the child is idle
    /// (`direct.rs`), through its mailbox otherwise.
    async fn call_cell(
        &self,
        cell: &Arc<Cell>,
        msg: Vec<u8>,
        timeout: Option<Duration>,
    ) -> Result<Vec<u8>, CallError> {
        if !self.inner.config.tuning.direct_calls {
            return cell.call_within(msg, timeout).await;
        }
        match crate::direct::call(cell, msg, timeout, &self.inner.metrics).await {
            Ok(answer) => answer,
            Err(msg) => cell.call_within(msg, timeout).await,
        }
    }

    /// Casts to child `id`.
    pub fn cast(&self, id: &str, msg: Vec<u8>) -> Result<(), CallError> {
        let m = &self.inner.metrics;
        m.cast();
        let result = match self.inner.registry.get(id) {
            Some(cell) if self.inner.config.tuning.decode_messages => cell.cast(reencode(&msg)?),
            Some(cell) => cell.cast(msg),
            None => Err(CallError::NotFound),
        };
        if let Err(e) = &result {
            m.call_error(e.code());
        }
        result
    }

    /// Stops child `id` (`terminate(shutdown)`) and removes it.
    pub async fn stop_child(&self, id: &str) -> Result<(), ChildError> {
        self.inner.stop_child(id).await
    }

    /// Restarts child `id` with a fresh instance and the same args; revives
    /// a child in `backoff` or `failed`. Returns once the new instance has
    /// started (its `init` returned) or failed to, as OTP's
    /// `supervisor:restart_child` does; a failed start goes on per the
    /// child's restart policy.
    pub async fn restart_child(&self, id: &str) -> Result<(), ChildError> {
        let cell = self
            .inner
            .registry
            .get(id)
            .ok_or_else(|| ChildError::NotFound(id.into()))?;
        let (done, restarted) = oneshot::channel();
        cell.control.push(Control::Restart { done });
        let _ = restarted.await;
        Ok(())
    }

    /// Kills child `id` now: exit reason `killed(reason)`, restarted per its
    /// policy, like `Process.exit(pid, :kill)`.
    pub fn kill_child(&self, id: &str, reason: &str) -> Result<(), ChildError> {
        let cell = self
            .inner
            .registry
            .get(id)
            .ok_or_else(|| ChildError::NotFound(id.into()))?;
        cell.control.push(Control::Kill {
            reason: reason.to_string(),
        });
        Ok(())
    }

    /// Every child, sorted by id.
    pub fn children(&self) -> Vec<ChildInfo> {
        let mut all: Vec<_> = self
            .inner
            .registry
            .all()
            .iter()
            .map(|c| self.inner.info(c))
            .collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all
    }

    /// One child.
    pub fn child(&self, id: &str) -> Option<ChildInfo> {
        self.inner.registry.get(id).map(|c| self.inner.info(&c))
    }

    /// How many children exist.
    pub fn count_children(&self) -> usize {
        self.inner.registry.len()
    }

    /// Whether stored children are kept (not `--ephemeral`).
    pub fn is_durable(&self) -> bool {
        self.inner.durable.is_some()
    }

    /// Every plugin the host knows.
    pub fn plugins(&self) -> Vec<PluginInfo> {
        let children = self.inner.registry.all();
        self.inner
            .catalog
            .list()
            .into_iter()
            .map(|(name, entry)| {
                let v = entry.current.as_ref();
                PluginInfo {
                    instances: children.iter().filter(|c| c.spec.plugin == name).count(),
                    name,
                    version: v.map(|v| v.hash.clone()),
                    loaded_at_ms: v.map(|v| unix_ms(v.loaded_at)),
                    compile_ms: v.map(|v| v.compile_ms),
                    size: v.map(|v| v.size),
                    cached: v.map(|v| v.cached),
                    last_error: entry.last_error,
                }
            })
            .collect()
    }

    /// Publishes `msg` on `topic`, to subscribers and event streams.
    pub fn publish(&self, topic: &str, msg: Vec<u8>) {
        self.inner.publish(topic, Bytes::from(msg));
    }

    /// Subscribes to the host's events (lifecycle and topics).
    pub fn events(&self) -> broadcast::Receiver<Arc<Event>> {
        self.inner.events.subscribe()
    }

    /// Gives back the zeroed pages that freed pool slots keep for the next
    /// instance (`[pool] keep_resident_kib`) and returns how many bytes that
    /// was. The `wasmvisor` binary's janitor calls it 1–2 s after the last
    /// instance stopped (and every 10 s if they keep stopping). It makes a
    /// `process_madvise` call per 64 slots (per 31 at a 64 MiB memory cap),
    /// so call it from a blocking thread.
    pub fn release_unused_pool_memory(&self) -> usize {
        self.inner.engine.release_unused_pool_memory()
    }

    /// `/metrics` in the Prometheus text format.
    pub fn metrics_text(&self) -> String {
        let children = self.inner.registry.all();
        let mut by_status = std::collections::BTreeMap::new();
        for s in [
            Status::Starting,
            Status::Running,
            Status::Restarting,
            Status::Backoff,
            Status::Failed,
            Status::Waiting,
        ] {
            by_status.insert(s.as_str(), 0u64);
        }
        for c in &children {
            *by_status.entry(c.state().status.as_str()).or_default() += 1;
        }
        let plugins = self
            .inner
            .catalog
            .list()
            .iter()
            .filter(|(_, e)| e.current.is_some())
            .count();
        let mut gauges = vec![
            Gauge {
                name: "wasmvisor_children",
                help: "Children by status.",
                samples: by_status
                    .into_iter()
                    .map(|(s, n)| (format!("{{status=\"{s}\"}}"), n))
                    .collect(),
            },
            Gauge {
                name: "wasmvisor_plugins",
                help: "Plugins with a loaded version.",
                samples: vec![(String::new(), plugins as u64)],
            },
        ];
        let kept = engine::pool_kept_bytes(&self.inner.engine);
        if !kept.is_empty() {
            gauges.push(Gauge {
                name: "wasmvisor_pool_unused_resident_bytes",
                help: "Bytes freed pool slots keep resident for the next instance \
                       ([pool] keep_resident_kib) until the janitor gives them back.",
                samples: kept
                    .into_iter()
                    .map(|(kind, bytes)| (format!("{{kind=\"{kind}\"}}"), bytes))
                    .collect(),
            });
        }
        if let Some(in_use) = self.inner.stacks.in_use() {
            gauges.push(Gauge {
                name: "wasmvisor_stacks_in_use",
                help: "Native stacks held by instances, of [pool] max_running \
                       ([engine] stack_per_callback).",
                samples: vec![(String::new(), in_use)],
            });
        }
        self.inner.metrics.render(&gauges)
    }

    /// Stops every child (`terminate(shutdown)`), as the host does when it
    /// exits.
    pub async fn shutdown(&self) {
        self.inner.shutting_down.store(true, Ordering::Release);
        // Groups stop their members in reverse order, the last group first.
        let groups =
            std::mem::take(&mut *self.inner.groups.lock().unwrap_or_else(|p| p.into_inner()));
        for group in groups.iter().rev() {
            group.shutdown().await;
        }
        let children = self.inner.registry.all();
        let mut waits = Vec::with_capacity(children.len());
        for cell in children {
            let (done, stopped) = oneshot::channel();
            cell.control.push(Control::Stop { done });
            waits.push(stopped);
        }
        for w in waits {
            let _ = w.await;
        }
        // Each task holds the host; once they have all ended, dropping the
        // last `Host` releases the engine and closes the database.
        self.inner.children.idle().await;
    }
}

/// Counts running tasks, and wakes whoever waits for none to be left.
#[derive(Default)]
pub(crate) struct Tasks {
    running: std::sync::atomic::AtomicUsize,
    idle: tokio::sync::Notify,
}

/// One running task; dropping it ends it.
pub(crate) struct TaskGuard(Arc<Tasks>);

impl Tasks {
    pub(crate) fn enter(self: &Arc<Tasks>) -> TaskGuard {
        self.running.fetch_add(1, Ordering::AcqRel);
        TaskGuard(self.clone())
    }

    async fn idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.running.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        if self.0.running.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// The benchmark's typed-boundary alternative: a message decoded into a
/// value and encoded again, as a host that understood messages would.
fn reencode(bytes: &[u8]) -> Result<Vec<u8>, CallError> {
    serde_json::from_slice::<serde_json::Value>(bytes)
        .and_then(|v| serde_json::to_vec(&v))
        .map_err(|e| CallError::Failed(format!("not JSON: {e}")))
}
