//! Layer 5, the host: the library's entry point. [`Host`] builds the layers
//! below (the wasm engine, the supervisor and its registry) and offers what
//! the HTTP API, the command line and embedders use: the dynamic
//! supervisor's operations, calls and casts, plugins and their hot reload,
//! events and metrics.

mod info;
mod reload;
mod watch;

pub use crate::cluster::{NodeInfo, NodeStatus};
pub use crate::supervisor::{GroupTree, Tree, TreeChild, TreeMember};
pub use info::{ChildInfo, PluginInfo};
pub use reload::{LoadReport, PluginChange, RELOAD_BATCH};
pub use watch::{SETTLE, Watcher};

use crate::child::{Address, Env, Tasks};
use crate::cluster::{Adopt, Answer, Cluster, Inbound, Op};
use crate::config::{Config, Placement};
use crate::events::{Event, EventBus};
use crate::metrics::Metrics;
use crate::names;
use crate::supervisor::Supervisor;
use crate::trace;
use crate::types::{CallError, ChildError, ChildSpec, ExitReason, StartError, StartPlacement};
use crate::wasm::Wasm;
use anyhow::Result;
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;
use tracing::Instrument;

/// A running wasmvisor host. Cheap to clone; all clones are the same host.
///
/// Every child's task holds the host's supervisor, so dropping the last
/// `Host` handle does not stop the children: call [`Host::shutdown`] to stop
/// them (and release the engine and its instance pool).
#[derive(Clone)]
pub struct Host {
    sup: Arc<Supervisor>,
    /// Plugin loads, reloads and removals happen one at a time.
    plugin_changes: Arc<tokio::sync::Mutex<()>>,
    /// The cluster's heartbeat and request tasks, ended by `shutdown`.
    cluster_tasks: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

/// What a drain did: how many children moved, and those that did not
/// (they run on the drained node still).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct DrainReport {
    /// The drained node.
    pub node: String,
    /// Children now on other nodes.
    pub moved: usize,
    /// Children that stayed, and why.
    pub failed: Vec<DrainFailure>,
}

/// A child a drain could not move.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct DrainFailure {
    /// The child.
    pub id: String,
    /// Why it stayed.
    pub why: String,
}

/// How many stored children a cluster node checks against the registry at
/// once when it starts, and how many children it takes over at once.
const RECONCILE_BATCH: usize = 64;

/// Up to this many stored children, each one restored gets a log line.
const RESTORE_LINES: usize = 500;

/// How a host start goes: each step is reported once done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// `done` of `total` plugin files compiled (or loaded from the cache).
    Compiling {
        /// Files done.
        done: usize,
        /// Files in the plugins folder.
        total: usize,
    },
    /// `done` of `total` stored children restored.
    Restoring {
        /// Children done.
        done: usize,
        /// Children in the state database.
        total: usize,
    },
}

impl Host {
    /// Creates the engine, the linker and the epoch ticker, loads every
    /// plugin in `config.plugins_dir` (a file that fails is reported and
    /// skipped), starts the config's children and groups, and brings back
    /// the stored children. Must run inside a multi-threaded tokio runtime.
    pub async fn new(config: Config) -> Result<Host> {
        Host::start(config, &|_| {}).await
    }

    /// As [`Host::new`], telling `progress` how compiling the plugins and
    /// restoring the stored children goes (the CLI draws a bar from it).
    pub async fn start(config: Config, progress: &(dyn Fn(Progress) + Sync)) -> Result<Host> {
        crate::tls::install_crypto_provider();
        let env = Arc::new(Env {
            // The engine's millisecond clock also bounds calls' waits.
            wasm: Wasm::new(&config, crate::child::tick)?,
            events: EventBus::default(),
            metrics: Metrics::default(),
            tasks: Arc::new(Tasks::default()),
            runtime: tokio::runtime::Handle::current(),
            awake: Default::default(),
            clock: Default::default(),
        });
        let cluster = match &config.cluster {
            Some(c) => {
                let children = config.children.iter();
                let singletons = children
                    .filter(|c| c.placement == Placement::Singleton)
                    .map(|c| c.id.clone())
                    .chain(
                        config
                            .groups
                            .iter()
                            .filter(|g| g.placement == Placement::Singleton)
                            .map(|g| g.id.clone()),
                    )
                    .collect();
                Some(Arc::new(Cluster::join(c, singletons).await?))
            }
            None => None,
        };
        let (sup, stored) = Supervisor::open(config, env, cluster)?;
        let host = Host {
            sup,
            plugin_changes: Arc::default(),
            cluster_tasks: Arc::default(),
        };
        let dir = host.sup.config.plugins_dir.clone();
        if dir.is_dir() {
            host.load_dir(&dir, progress).await?;
        } else {
            tracing::warn!(
                "plugins folder {} does not exist; no plugins loaded",
                dir.display()
            );
        }
        host.sup.start_config().await;
        let total = stored.len();
        // In a cluster, each stored child is checked against the registry
        // (one read each), many at once, in order: children still come
        // back in start order.
        let cluster = host.sup.cluster.clone();
        let checked = futures_util::stream::iter(stored.into_iter().enumerate())
            .map(|(i, record)| {
                let cluster = cluster.clone();
                async move {
                    let adopt = match &cluster {
                        Some(c) => Some(c.adopt(&record.spec).await),
                        None => None,
                    };
                    (i, record, adopt)
                }
            })
            .buffered(RECONCILE_BATCH);
        let mut checked = std::pin::pin!(checked);
        while let Some((i, record, adopt)) = checked.next().await {
            // One line per child up to a few hundred; past that, the first,
            // every 100,000th and the last (a million lines would be the
            // slowest part of the start).
            let n = i + 1;
            if total <= RESTORE_LINES || n == 1 || n % 100_000 == 0 || n == total {
                tracing::info!(
                    "[{n}/{total}] restoring child {} ({})",
                    record.spec.id,
                    record.spec.plugin
                );
            } else {
                tracing::debug!("[{n}/{total}] restoring child {}", record.spec.id);
            }
            if let Some(adopt) = adopt {
                match adopt {
                    Ok(Adopt::Mine) => {}
                    Ok(other) => {
                        let why = match other {
                            Adopt::Elsewhere(owner) => format!("runs on node {owner} now"),
                            _ => "was stopped on another node since".to_string(),
                        };
                        tracing::info!("stored child {} {why}; forgotten here", record.spec.id);
                        host.sup.forget(&record.spec.id).await;
                        progress(Progress::Restoring { done: n, total });
                        continue;
                    }
                    Err(e) => anyhow::bail!(
                        "cannot reconcile stored child {} with the cluster: {e:#}",
                        record.spec.id
                    ),
                }
            }
            host.sup.restore(record).await;
            progress(Progress::Restoring { done: n, total });
        }
        if total > 0 {
            tracing::info!("restored {total} children from the state database");
        }
        if let Some(cluster) = &host.sup.cluster {
            let sample = host.clone();
            let lost = host.sup.clone();
            let heartbeat = cluster.heartbeat(
                move || sample.node_sample(),
                move || {
                    let sup = lost.clone();
                    Box::pin(async move { sup.fence().await })
                },
            );
            let rehome = tokio::spawn(rehome(host.sup.clone(), cluster.clone()));
            let requests = cluster.serve(Arc::new(Local(host.clone()))).await?;
            let sup = Arc::downgrade(&host.sup);
            let topics = cluster
                .serve_topics(move |topic, msg| {
                    if let Some(sup) = sup.upgrade() {
                        sup.deliver(topic, msg);
                    }
                })
                .await?;
            let mut tasks = vec![
                heartbeat.abort_handle(),
                requests.abort_handle(),
                rehome.abort_handle(),
            ];
            // A child of this node whose claim another node holds now (it
            // was taken over while this node could not tell) stops here.
            if let Some(mut moved) = cluster.claims_held_elsewhere() {
                let (sup, cluster) = (host.sup.clone(), cluster.clone());
                let sweep = tokio::spawn(async move {
                    while let Some((id, revision)) = moved.recv().await {
                        if sup.registry.get(&id).is_some() && cluster.moved_on(&id, revision) {
                            sup.moved_away(&id);
                        }
                    }
                });
                tasks.push(sweep.abort_handle());
            }
            tasks.extend(topics.iter().map(|t| t.abort_handle()));
            *host.cluster_tasks.lock().unwrap_or_else(|e| e.into_inner()) = tasks;
        }
        Ok(host)
    }

    /// The configuration the host runs with.
    pub fn config(&self) -> &Config {
        &self.sup.config
    }

    /// Starts a dynamic child and waits until its `init` returned; `None`
    /// when `init` returned `ignore` (no child is kept, the id stays free),
    /// like OTP's `:ignore`.
    pub async fn start_child(&self, spec: ChildSpec) -> Result<Option<Address>, StartError> {
        Ok(self.sup.start_child(spec).await?.map(Address))
    }

    /// Starts a dynamic child where `placement` says: on this node, or, in
    /// a cluster with [`StartPlacement::LeastLoaded`], on the live node that
    /// runs the fewest children (by their last heartbeats, and the starts
    /// this node placed on it in the last two heartbeats). The child as
    /// JSON (with its `node` in a cluster), or `None` when its `init`
    /// returned `ignore`.
    pub async fn start_placed(
        &self,
        spec: ChildSpec,
        placement: StartPlacement,
    ) -> Result<Option<serde_json::Value>, StartError> {
        let target = match (&self.sup.cluster, placement) {
            (Some(cluster), StartPlacement::LeastLoaded) => cluster
                .least_loaded()
                .filter(|node| node != cluster.node_name()),
            _ => None,
        };
        let (Some(node), Some(cluster)) = (target, &self.sup.cluster) else {
            let id = spec.id.clone();
            let started = self.start_child(spec).await?;
            // Gone already (it stopped itself at once): its id alone.
            return Ok(started.map(|_| match self.child(&id) {
                Some(info) => self.with_node(info),
                None => serde_json::json!({"id": id}),
            }));
        };
        names::validate_id(&spec.id).map_err(StartError::Invalid)?;
        let payload = crate::cluster::encode_spec(&spec);
        let answer = cluster.ask(&node, &spec.id, Op::Start, payload).await;
        let child: serde_json::Value = match answer {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| StartError::Unavailable(format!("node {node}'s answer: {e}")))?,
            Err((code, detail)) => return Err(StartError::from_code(&code, detail)),
        };
        Ok((child.get("ignored").is_none()).then_some(child))
    }

    /// Drains node `node` (this one or another of the cluster): it starts
    /// and inherits nothing from now on, and each of its dynamic children
    /// is stopped there and started on another live node (hibernated
    /// first where its plugin keeps a durable state, which goes with it).
    /// Resolves once every child has moved.
    pub async fn drain(&self, node: &str) -> Result<DrainReport, ChildError> {
        let Some(cluster) = &self.sup.cluster else {
            return Err(ChildError::Unavailable(
                "this host runs alone; there is no other node to drain to".into(),
            ));
        };
        if node == cluster.node_name() {
            return self.drain_here().await;
        }
        if !cluster
            .nodes()
            .iter()
            .any(|n| n.info.node == node && n.alive)
        {
            return Err(ChildError::NotFound(format!("node {node}")));
        }
        let bytes = cluster
            .ask(node, "", Op::Drain, Vec::new())
            .await
            .map_err(|(code, message)| ChildError::from_code(&code, node, message))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| ChildError::Unavailable(format!("node {node}'s answer: {e}")))
    }

    /// Drains this node (see [`Host::drain`]).
    async fn drain_here(&self) -> Result<DrainReport, ChildError> {
        let Some(cluster) = self.sup.cluster.clone() else {
            return Err(ChildError::Unavailable("this host runs alone".into()));
        };
        cluster.start_draining();
        tracing::info!("draining this node: its children move to the other nodes");
        let mut ids: Vec<String> = self
            .sup
            .registry
            .all()
            .into_iter()
            .filter(|c| c.state().dynamic)
            .map(|c| c.id.to_string())
            .collect();
        ids.sort();
        let moves = futures_util::stream::iter(ids.into_iter().map(|id| {
            let host = self.clone();
            async move {
                let moved = host.hand_over(&id).await;
                (id, moved)
            }
        }))
        .buffer_unordered(crate::host::RELOAD_BATCH);
        let results: Vec<(String, Result<String, String>)> = moves.collect().await;
        let mut report = DrainReport {
            node: cluster.node_name().to_string(),
            moved: 0,
            failed: Vec::new(),
        };
        for (id, result) in results {
            match result {
                Ok(_) => report.moved += 1,
                Err(why) => {
                    tracing::error!(child = %id, "not moved: {why}");
                    report.failed.push(DrainFailure { id, why });
                }
            }
        }
        // Singletons go to their new home (the other nodes see this one
        // draining at its next heartbeat).
        for child in self.sup.singletons() {
            if self.sup.registry.get(&child.id).is_some() {
                self.sup.stop_singleton(&child.id).await;
            }
        }
        for group in self.sup.singleton_groups() {
            self.sup
                .stop_singleton_group(&group.id, ExitReason::Shutdown)
                .await;
        }
        report.failed.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(report)
    }

    /// Moves dynamic child `id` from this (draining) node to the node the
    /// drain picks for it: stopped here, claimed there. The node it went
    /// to, or why it stays here (then it runs here again).
    async fn hand_over(&self, id: &str) -> Result<String, String> {
        let Some(cluster) = self.sup.cluster.clone() else {
            return Err("no cluster".into());
        };
        let target = cluster
            .drain_target(id)
            .ok_or("no other live node takes children")?;
        let (spec, kept) = self.sup.hand_off(id).await.map_err(|e| e.to_string())?;
        if !kept {
            return Err("it stopped on its own meanwhile".into());
        }
        let asked = cluster
            .ask(
                &target,
                id,
                Op::Adopt(cluster.node_name().to_string()),
                Vec::new(),
            )
            .await;
        // The claim says who runs it now, whatever the answer (a lost
        // answer, or a node that died meanwhile): the target's
        // compare-and-set, or this node's own below, wins.
        let owner = cluster.owner_of(id).await;
        if let Ok(Some(owner)) = &owner
            && owner != cluster.node_name()
        {
            self.sup.forget_handed(id).await;
            return Ok(owner.clone());
        }
        let why = match asked {
            Err((code, message)) => format!("node {target} did not take it: {code}: {message}"),
            Ok(_) => format!("node {target} did not take it"),
        };
        match cluster.reclaim(id).await {
            Ok(true) => {
                // Still this node's: it runs here again.
                self.sup.rehome(spec, ExitReason::Shutdown).await;
                Err(format!("{why}; it runs on this node again"))
            }
            Ok(false) => {
                self.sup.forget_handed(id).await;
                Err(format!("{why}; its claim moved or is gone"))
            }
            Err(e) => Err(format!(
                "{why}; its claim cannot be read ({e:#}): it stays stored and claimed here, \
                 and runs again when this node restarts"
            )),
        }
    }

    /// Takes over child `id`, which node `from` stopped for this node (it
    /// is drained), and starts it here.
    async fn adopt_handed(&self, id: &str, from: &str) -> Answer {
        let Some(cluster) = &self.sup.cluster else {
            return Err(("unavailable".into(), "this host runs alone".into()));
        };
        if cluster.draining() || cluster.fenced() {
            return Err((
                "unavailable".into(),
                "this node takes no children now (drained or cut off)".into(),
            ));
        }
        match cluster.take_handed(id, from).await {
            Ok(Some(spec)) => {
                tracing::info!(child = id, "taking the child over from drained node {from}");
                self.sup.rehome(spec, ExitReason::Shutdown).await;
                Ok(Vec::new())
            }
            Ok(None) => Err((
                "not_found".into(),
                format!("node {from} holds no claim on {id}"),
            )),
            Err(e) => Err(("unavailable".into(), format!("{e:#}"))),
        }
    }

    /// The address registered under `id`.
    pub fn lookup(&self, id: &str) -> Option<Address> {
        self.sup.registry.get(id).map(Address)
    }

    /// Calls child `id` and waits at most `timeout` for the reply.
    pub async fn call(
        &self,
        id: &str,
        msg: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, CallError> {
        let metrics = &self.sup.env.metrics;
        metrics.call();
        // On this node, or on the one of the cluster that runs it.
        let call = self.sup.call(id, msg, timeout);
        let result = match trace::enabled() {
            true => {
                call.instrument(tracing::info_span!("call", child = id))
                    .await
            }
            false => call.await,
        };
        if let Err(e) = &result {
            metrics.call_error(e);
        }
        result
    }

    /// Casts to child `id` on whichever node of the cluster runs it (on a
    /// host that runs alone, as [`Host::cast`]).
    pub async fn cast_anywhere(&self, id: &str, msg: Vec<u8>) -> Result<(), CallError> {
        if self.sup.cluster.is_none() || self.sup.registry.get(id).is_some() {
            return self.cast(id, msg);
        }
        let metrics = &self.sup.env.metrics;
        metrics.cast();
        let result = self.sup.cast(id, msg).await;
        if let Err(e) = &result {
            metrics.call_error(e);
        }
        result
    }

    /// Kills child `id` on whichever node of the cluster runs it (on a
    /// host that runs alone, as [`Host::kill_child`]).
    pub async fn kill_anywhere(&self, id: &str, reason: &str) -> Result<(), ChildError> {
        self.sup.kill_anywhere(id, reason).await
    }

    /// A child of this node as JSON, with this node's name in `node` when
    /// in a cluster.
    fn with_node(&self, info: ChildInfo) -> serde_json::Value {
        let mut value = serde_json::to_value(info).unwrap_or_default();
        if let Some(cluster) = &self.sup.cluster {
            value["node"] = cluster.node_name().into();
        }
        value
    }

    /// This node's page of children, as [`Host::with_node`] writes them.
    fn local_page(&self, after: Option<&str>, limit: usize) -> Vec<serde_json::Value> {
        self.children_page(after, limit)
            .into_iter()
            .map(|info| self.with_node(info))
            .collect()
    }

    /// At most `limit` children in id order after `after`, of every live
    /// node of the cluster (each with its `node`); on a host that runs
    /// alone, as [`Host::children_page`]. A node that does not answer is
    /// left out, with a warning in the log.
    pub async fn children_anywhere(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Vec<serde_json::Value> {
        let mut page = self.local_page(after, limit);
        let Some(cluster) = &self.sup.cluster else {
            return page;
        };
        // A node cut off from the cluster lists what it has.
        let others = match cluster.reachable() {
            true => cluster.others(),
            false => Vec::new(),
        };
        let asks = others.iter().map(|node| {
            let op = Op::List(after.map(str::to_string), limit);
            cluster.ask(node, "", op, Vec::new())
        });
        for (node, answer) in others
            .iter()
            .zip(futures_util::future::join_all(asks).await)
        {
            match answer.map(|bytes| serde_json::from_slice::<Vec<serde_json::Value>>(&bytes)) {
                Ok(Ok(theirs)) => page.extend(theirs),
                Ok(Err(e)) => tracing::warn!("node {node} listed its children unreadably: {e}"),
                Err((code, message)) => {
                    tracing::warn!("node {node} did not list its children: {code}: {message}")
                }
            }
        }
        page.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
        page.truncate(limit);
        page
    }

    /// Child `id` as JSON, from whichever node of the cluster runs it,
    /// with the node's name in `node`.
    pub async fn child_anywhere(&self, id: &str) -> Result<serde_json::Value, ChildError> {
        if let Some(info) = self.child(id) {
            return Ok(self.with_node(info));
        }
        match self.sup.remote_child(id).await {
            Some(answer) => serde_json::from_slice(&answer?)
                .map_err(|e| ChildError::Unavailable(format!("the other node's answer: {e}"))),
            None => Err(ChildError::NotFound(id.to_string())),
        }
    }

    /// Casts to child `id`.
    pub fn cast(&self, id: &str, msg: Vec<u8>) -> Result<(), CallError> {
        let metrics = &self.sup.env.metrics;
        metrics.cast();
        let result = match self.sup.registry.get(id) {
            Some(cell) if trace::enabled() => {
                tracing::info_span!("cast", child = id).in_scope(|| cell.cast(msg))
            }
            Some(cell) => cell.cast(msg),
            None => Err(CallError::NotFound),
        };
        if let Err(e) = &result {
            metrics.call_error(e);
        }
        result
    }

    /// Stops child `id` (`terminate(shutdown)`) and removes it.
    pub async fn stop_child(&self, id: &str) -> Result<(), ChildError> {
        self.sup.stop_child(id).await
    }

    /// Restarts child `id` with a fresh instance and the same args; revives
    /// a child in `backoff` or `failed`. Returns once the new instance has
    /// started (its `init` returned) or failed to, as OTP's
    /// `supervisor:restart_child` does; a failed start goes on per the
    /// child's restart policy.
    pub async fn restart_child(&self, id: &str) -> Result<(), ChildError> {
        self.sup.restart_child(id).await
    }

    /// Kills child `id` now: exit reason `killed(reason)`, restarted per its
    /// policy, like `Process.exit(pid, :kill)`.
    pub fn kill_child(&self, id: &str, reason: &str) -> Result<(), ChildError> {
        self.sup.kill_child(id, reason)
    }

    /// Hibernates child `id` now: its state is kept and its instance given
    /// back; the next message wakes it. A child that already sleeps stays
    /// asleep; one that cannot hibernate (its plugin has no snapshot, it
    /// owes a deferred reply, it has no instance) is
    /// [`ChildError::CannotHibernate`].
    pub async fn hibernate_child(&self, id: &str) -> Result<(), ChildError> {
        self.sup.hibernate_child(id).await
    }

    /// How many children exist.
    pub fn count_children(&self) -> usize {
        self.sup.registry.len()
    }

    /// Whether dynamic children are stored (not `--ephemeral`).
    pub fn is_durable(&self) -> bool {
        self.sup.is_durable()
    }

    /// Publishes `msg` on `topic`, to subscribers and event streams.
    pub fn publish(&self, topic: &str, msg: Vec<u8>) {
        self.sup.publish(topic, Bytes::from(msg));
    }

    /// Subscribes to the host's events (lifecycle and topics).
    pub fn events(&self) -> broadcast::Receiver<Arc<Event>> {
        self.sup.env.events.subscribe()
    }

    /// The last lifecycle events (at most [`crate::events::RECENT`], oldest
    /// first; no topic or hibernation events).
    pub fn recent_events(&self) -> Vec<Arc<Event>> {
        self.sup.env.events.recent()
    }

    /// Subscribes to hibernation events (`child_hibernated`,
    /// `child_woken`), which [`Host::events`] leaves out.
    pub fn hibernation_events(&self) -> broadcast::Receiver<Arc<Event>> {
        self.sup.env.events.subscribe_hibernation()
    }

    /// Stops every child (`terminate(shutdown)`), as the host does when it
    /// exits. Stored children stay stored.
    pub async fn shutdown(&self) {
        self.sup.shutdown().await;
        let tasks =
            std::mem::take(&mut *self.cluster_tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for task in tasks {
            task.abort();
        }
        if let Some(cluster) = &self.sup.cluster {
            cluster.leave().await;
        }
    }

    /// The cluster's nodes; `None` when the host runs alone.
    pub fn nodes(&self) -> Option<Vec<NodeStatus>> {
        self.sup.cluster.as_ref().map(|c| c.nodes())
    }

    /// What the heartbeat tells the cluster: children, and plugin
    /// versions.
    fn node_sample(&self) -> (usize, std::collections::BTreeMap<String, String>) {
        let plugins = self
            .sup
            .env
            .wasm
            .catalog
            .list()
            .into_iter()
            .filter_map(|(name, e)| Some((name, e.current?.hash.clone())))
            .collect();
        (self.sup.registry.len(), plugins)
    }
}

/// What this node does for the other nodes of its cluster: operations on
/// its own children, never routed on.
struct Local(Host);

impl Inbound for Local {
    fn handle(&self, op: Op, id: String, msg: Vec<u8>) -> BoxFuture<'static, Answer> {
        let host = self.0.clone();
        Box::pin(async move {
            let call_error = |e: CallError| (e.code().to_string(), e.message());
            let child_error = |e: ChildError| (e.code().to_string(), e.to_string());
            let json = |v: &serde_json::Value| serde_json::to_vec(v).unwrap_or_default();
            // Only a child of this node: an operation is never routed on.
            let not_found = || {
                let why = format!("no child with id {id:?} on this node");
                ("not_found".to_string(), why)
            };
            let local = || host.sup.registry.get(&id).ok_or_else(not_found);
            let done = match op {
                Op::List(after, limit) => {
                    return Ok(json(&host.local_page(after.as_deref(), limit).into()));
                }
                Op::Call(timeout) => return local()?.call(msg, timeout).await.map_err(call_error),
                Op::Cast => return local()?.cast(msg).map(|()| Vec::new()).map_err(call_error),
                Op::Get => {
                    let info = host.child(&id).ok_or_else(not_found)?;
                    return Ok(json(&host.with_node(info)));
                }
                Op::Stop => host.sup.stop_here(&id).await,
                Op::Restart => host.sup.restart_here(&id).await,
                Op::Kill(reason) => {
                    local()?;
                    host.sup.kill_child(&id, &reason)
                }
                Op::Start => {
                    let spec = crate::cluster::decode_spec(&id, &msg)
                        .ok_or_else(|| ("bad_request".to_string(), "an unreadable spec".into()))?;
                    let started = host.start_child(spec).await;
                    return match started {
                        Ok(Some(_)) => host
                            .child(&id)
                            .map(|info| json(&host.with_node(info)))
                            .ok_or_else(not_found),
                        Ok(None) => Ok(json(&serde_json::json!({"ignored": id}))),
                        Err(e) => Err((e.code().to_string(), e.detail())),
                    };
                }
                Op::Adopt(from) => return host.adopt_handed(&id, &from).await,
                Op::Monitor(from, key) => {
                    return host
                        .sup
                        .monitored_from(&id, &from, key)
                        .map(|()| Vec::new())
                        .map_err(call_error);
                }
                Op::Demonitor(from, key) => {
                    host.sup.demonitored_from(&id, &from, key);
                    return Ok(Vec::new());
                }
                Op::Link(from, number) => {
                    let partner = String::from_utf8_lossy(&msg);
                    return host
                        .sup
                        .linked_from(&id, &from, number, &partner)
                        .map(|()| Vec::new())
                        .map_err(call_error);
                }
                Op::LinkExit(initiator, number) => {
                    let reason = serde_json::from_slice(&msg)
                        .map_err(|e| ("bad_request".to_string(), format!("the reason: {e}")))?;
                    host.sup
                        .remote_link_exit((initiator.into(), number), reason);
                    return Ok(Vec::new());
                }
                Op::Down(key) => {
                    let reason = serde_json::from_slice(&msg)
                        .map_err(|e| ("bad_request".to_string(), format!("the reason: {e}")))?;
                    host.sup.remote_down(key, reason);
                    return Ok(Vec::new());
                }
                Op::Drain => {
                    return host
                        .drain_here()
                        .await
                        .map(|report| json(&serde_json::to_value(report).unwrap_or_default()))
                        .map_err(child_error);
                }
            };
            done.map(|()| Vec::new()).map_err(child_error)
        })
    }
}

/// Takes over the children of nodes that are gone, and restarts this
/// node's own claims that run nowhere, every `heartbeat_ms`.
async fn rehome(sup: Arc<Supervisor>, cluster: Arc<Cluster>) {
    let every = Duration::from_millis(sup.config.cluster.as_ref().map_or(500, |c| c.heartbeat_ms));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // Monitors of children on nodes that are gone fire `noconnection`.
        sup.remote_nodes_lost(|node| cluster.is_live(node));
        if cluster.fenced() {
            continue;
        }
        let orphans = cluster.orphans(|id| sup.registry.get(id).is_some());
        let takeovers = futures_util::stream::iter(orphans)
            .map(|orphan| {
                let (sup, cluster) = (sup.clone(), cluster.clone());
                async move {
                    match cluster.take_over(&orphan).await {
                        Ok(true) => {
                            tracing::info!(child = %orphan.spec.id, "taking the child over");
                            sup.rehome(orphan.spec, ExitReason::NoConnection).await;
                        }
                        Ok(false) => {}
                        Err(e) => {
                            tracing::warn!(child = %orphan.spec.id, "cannot take the child over: {e:#}")
                        }
                    }
                }
            })
            .buffer_unordered(RECONCILE_BATCH);
        takeovers.collect::<()>().await;
        // Singletons run where their home is, and only there.
        for child in sup.singletons() {
            let here = sup.registry.get(&child.id).is_some();
            let home = cluster.home_of(&child.id);
            if here && home.as_deref().is_some_and(|h| h != cluster.node_name()) {
                tracing::info!(child = %child.id, "the singleton's home is node {home:?} now; stopping it here");
                sup.stop_singleton(&child.id).await;
            } else if !here {
                match cluster
                    .singleton_here(&Supervisor::singleton_spec(&child))
                    .await
                {
                    Ok(true) => {
                        tracing::info!(child = %child.id, "starting the singleton here");
                        sup.start_singleton(&child).await;
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(child = %child.id, "cannot place the singleton: {e:#}")
                    }
                }
            }
        }
        for group in sup.singleton_groups() {
            let here = sup.runs_group(&group.id);
            let home = cluster.home_of(&group.id);
            if here && home.as_deref().is_some_and(|h| h != cluster.node_name()) {
                tracing::info!(group = %group.id, "the singleton group's home is node {home:?} now; stopping it here");
                sup.stop_singleton_group(&group.id, ExitReason::Shutdown)
                    .await;
            } else if !here {
                let spec = Supervisor::singleton_group_spec(&group.id);
                match cluster.singleton_here(&spec).await {
                    Ok(true) => {
                        tracing::info!(group = %group.id, "starting the singleton group here");
                        sup.start_singleton_group(&group).await;
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(group = %group.id, "cannot place the singleton group: {e:#}")
                    }
                }
            }
        }
    }
}
