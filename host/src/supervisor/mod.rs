//! Layer 4, supervision: the dynamic supervisor (start, stop, restore
//! children), the restart policy, restart intensity, supervision groups,
//! the state database, and the port every instance reaches the host by.
//! Restarts are decided here, and only here: a child's task reports its
//! exits to its [`Parent`] and carries out the decision.

mod durable;
mod group;
mod intensity;
mod policy;
mod port;
mod remote;
mod state;

pub use group::{GroupTree, TreeChild, TreeMember};

use crate::child::{Cell, Child, Control, Decision, Env, Origin, Parent};
use crate::cluster::{Cluster, Op};
use crate::config::Placement;
use crate::config::{Config, StaticChild};
use crate::events::Event;
use crate::names;
use crate::registry::{Registry, Topics};
use crate::types::{
    Activate, CallError, CheckpointError, ChildError, ChildSpec, ExitReason, StartError,
    StartOutcome,
};
use crate::wasm::Port;
use anyhow::Result;
use bytes::Bytes;
use durable::{Durable, Record};
use futures_util::future::BoxFuture;
use group::GroupHandle;
use intensity::Intensity;
use port::GuestPort;
use serde::Serialize;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// The supervision tree under the root.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Tree {
    /// The config's `[[groups]]`, in start order.
    pub groups: Vec<GroupTree>,
    /// The config's top-level `[[children]]`, in start order.
    pub children: Vec<TreeChild>,
    /// The dynamic children (started through the API, the CLI or a guest),
    /// by id.
    pub dynamic: Vec<TreeChild>,
}

/// The dynamic supervisor and what its children share: the registry and
/// topics they are found by, the environment their tasks run in, the
/// config, and the state database.
pub(crate) struct Supervisor {
    pub(crate) env: Arc<Env>,
    pub(crate) registry: Registry,
    pub(crate) topics: Topics,
    pub(crate) config: Config,
    /// Dynamic children, durably (none when ephemeral).
    durable: Option<Arc<Durable>>,
    /// Set by `shutdown`: children stop without being forgotten.
    shutting_down: AtomicBool,
    /// This node's monitors of children on other nodes.
    remote: remote::RemoteWatches,
    /// Dynamic children that exist, for `[supervisor] max_children`.
    dynamic: AtomicUsize,
    /// The config's top-level supervision groups, in start order.
    groups: Mutex<Vec<GroupHandle>>,
    /// The singleton groups the cluster placed on this node, by id.
    singleton_groups: Mutex<Vec<(String, GroupHandle)>>,
    /// The cluster this node belongs to, if any: dynamic ids are claimed
    /// there.
    pub(crate) cluster: Option<Arc<Cluster>>,
}

impl Supervisor {
    /// The supervisor over `env`, with the state database under the data
    /// dir unless the config is ephemeral; and the stored children to bring
    /// back with [`Supervisor::restore`].
    pub(crate) fn open(
        config: Config,
        env: Arc<Env>,
        cluster: Option<Arc<Cluster>>,
    ) -> Result<(Arc<Supervisor>, Vec<Record>)> {
        let (durable, stored) = match config.ephemeral {
            true => (None, Vec::new()),
            false => {
                let (d, stored) = Durable::open(&config.data_dir)?;
                (Some(Arc::new(d)), stored)
            }
        };
        let sup = Arc::new(Supervisor {
            env,
            registry: Registry::default(),
            topics: Topics::default(),
            config,
            durable,
            shutting_down: AtomicBool::new(false),
            remote: Default::default(),
            dynamic: AtomicUsize::new(0),
            groups: Mutex::default(),
            singleton_groups: Mutex::default(),
            cluster,
        });
        Ok((sup, stored))
    }

    /// Whether dynamic children are stored (not ephemeral).
    pub(crate) fn is_durable(&self) -> bool {
        self.durable.is_some()
    }

    /// Registers `spec` under its id and starts its child's task; resolves
    /// once the first start was tried. `Err` when the id is taken, or when
    /// an [`Origin::Started`] child's first start failed (its id is free
    /// again by then). With the cell, whether `init` returned `ignore` (a
    /// config child is kept, listed `ignored`; any other is gone).
    async fn spawn(
        self: &Arc<Self>,
        spec: ChildSpec,
        origin: Origin,
        parent: Box<dyn Parent>,
        group: Option<Arc<str>>,
    ) -> Result<(Arc<Cell>, StartOutcome), StartError> {
        let cell = self.new_cell(spec, &origin, group);
        if self.registry.insert_new(cell.clone()).is_err() {
            return Err(StartError::AlreadyStarted(cell.id.to_string()));
        }
        let strict = origin == Origin::Started;
        let started = Child::spawn(&self.env, cell.clone(), origin, parent).await;
        let failed = match started {
            Ok(Ok(StartOutcome::Ignored)) if strict => {
                self.registry.remove(&cell);
                return Ok((cell, StartOutcome::Ignored));
            }
            Ok(Ok(outcome)) => return Ok((cell, outcome)),
            Ok(Err(e)) => e,
            Err(_) => StartError::Unavailable("the child's task ended during start".into()),
        };
        self.registry.remove(&cell);
        Err(failed)
    }

    fn new_cell(&self, spec: ChildSpec, origin: &Origin, group: Option<Arc<str>>) -> Arc<Cell> {
        let bound = self.config.mailbox_bound(&spec.plugin);
        let cell = Arc::new(Cell::new(spec, bound));
        {
            let mut state = cell.state();
            state.group = group;
            state.restored = matches!(origin, Origin::Restored { .. });
            state.dynamic = matches!(origin, Origin::Started | Origin::Restored { .. });
        }
        cell
    }

    /// Registers a child with no instance and no task: it is *started* at
    /// its first message (a lazy start, or a stored child brought back).
    fn register_dormant(
        self: &Arc<Self>,
        spec: ChildSpec,
        origin: Origin,
    ) -> Result<Arc<Cell>, StartError> {
        let stored = origin != Origin::Config;
        let cell = self.new_cell(spec, &origin, None);
        if self.registry.insert_new(cell.clone()).is_err() {
            return Err(StartError::AlreadyStarted(cell.id.to_string()));
        }
        Child::dormant(
            &self.env,
            &cell,
            DynamicParent::boxed(self, stored),
            &origin,
        );
        Ok(cell)
    }

    /// The dynamic supervisor's `start_child`: starts the child, waits until
    /// its first `init` returned, and stores it before answering. `None`
    /// when `init` returned `ignore`: no child is kept.
    pub(crate) async fn start_child(
        self: &Arc<Self>,
        spec: ChildSpec,
    ) -> Result<Option<Arc<Cell>>, StartError> {
        names::validate_id(&spec.id).map_err(StartError::Invalid)?;
        names::validate_plugin(&spec.plugin).map_err(StartError::Invalid)?;
        if self.env.wasm.catalog.current(&spec.plugin).is_none() {
            return Err(StartError::UnknownPlugin(spec.plugin));
        }
        if self.cluster.as_ref().is_some_and(|c| c.fenced()) {
            return Err(StartError::Unavailable(
                "this node lost its cluster lease (no heartbeat renewed); it starts nothing until it is back".into(),
            ));
        }
        if self.cluster.as_ref().is_some_and(|c| c.draining()) {
            return Err(StartError::Unavailable(
                "this node is drained; start the child on another node".into(),
            ));
        }
        let slot = self.dynamic_slot()?;
        if let Some(cluster) = &self.cluster {
            // A local id (a config child's too) is refused here, before the
            // cluster is asked.
            if self.registry.get(&spec.id).is_some() {
                return Err(StartError::AlreadyStarted(spec.id));
            }
            cluster.claim(&spec).await?;
        }
        let id = spec.id.clone();
        let started = if spec.activate == Activate::Lazy {
            self.register_dormant(spec, Origin::Started).map(Some)
        } else {
            let parent = DynamicParent::boxed(self, true);
            match self.spawn(spec, Origin::Started, parent, None).await {
                Ok((cell, StartOutcome::Started)) => Ok(Some(cell)),
                Ok((_, StartOutcome::Ignored)) => Ok(None),
                Err(e) => Err(e),
            }
        };
        let cell = match started {
            Ok(Some(cell)) => cell,
            other => {
                if let Some(cluster) = &self.cluster {
                    cluster.release(&id).await;
                }
                return other;
            }
        };
        slot.keep();
        if let Err(e) = self.persist(&cell).await {
            // Not durable means not acknowledged: undo the start.
            let _ = self.stop_here(&cell.id).await;
            return Err(StartError::Unavailable(format!(
                "cannot store the child: {e:#}"
            )));
        }
        Ok(Some(cell))
    }

    /// Counts one more dynamic child, unless `[supervisor] max_children`
    /// are running; the count goes back down unless the slot is kept.
    fn dynamic_slot(&self) -> Result<Slot<'_>, StartError> {
        let taken = self.dynamic.fetch_add(1, Ordering::AcqRel);
        let slot = Slot {
            count: &self.dynamic,
            kept: false,
        };
        match self.config.supervisor.max_children {
            Some(max) if taken >= max as usize => Err(StartError::MaxChildren(max)),
            _ => Ok(slot),
        }
    }

    /// The dynamic supervisor's `terminate_child`: `terminate(shutdown)`,
    /// then the child is removed and its id is free. A child on another
    /// node of the cluster is stopped there.
    pub(crate) async fn stop_child(&self, id: &str) -> Result<(), ChildError> {
        match self.route_child(id, Op::Stop).await {
            Some(answer) => answer,
            None => {
                self.order(id, |done| Control::Stop {
                    done,
                    reason: ExitReason::Shutdown,
                    keep: false,
                })
                .await
            }
        }
    }

    /// A fresh instance with the same args, once the old one's
    /// `terminate(shutdown)` ran; revives a child in `backoff` or `failed`.
    /// Resolves once the new instance started or failed to.
    pub(crate) async fn restart_child(&self, id: &str) -> Result<(), ChildError> {
        match self.route_child(id, Op::Restart).await {
            Some(answer) => answer,
            None => self.restart_here(id).await,
        }
    }

    /// Stops child `id` on this node only (`terminate(shutdown)`, then
    /// removed); `not_found` when this node has no such child, whichever
    /// node of the cluster may run it.
    pub(crate) async fn stop_here(&self, id: &str) -> Result<(), ChildError> {
        self.order(id, |done| Control::Stop {
            done,
            reason: ExitReason::Shutdown,
            keep: false,
        })
        .await
    }

    /// Restarts child `id` on this node only (see
    /// [`Supervisor::restart_child`]).
    pub(crate) async fn restart_here(&self, id: &str) -> Result<(), ChildError> {
        self.order(id, |done| Control::Restart { done }).await
    }

    /// `kill_child`, on whichever node of the cluster runs the child.
    pub(crate) async fn kill_anywhere(&self, id: &str, reason: &str) -> Result<(), ChildError> {
        match self.route_child(id, Op::Kill(reason.to_string())).await {
            Some(answer) => answer,
            None => self.kill_child(id, reason),
        }
    }

    /// `op` on a child that is not on this node but on another of the
    /// cluster: its answer. `None` for a child of this node (or of none).
    async fn route_child(&self, id: &str, op: Op) -> Option<Result<(), ChildError>> {
        let cluster = self.cluster.as_ref()?;
        if self.registry.get(id).is_some() {
            return None;
        }
        let answer = cluster.route(id, op, Vec::new()).await?;
        Some(
            answer
                .map(drop)
                .map_err(|(code, message)| ChildError::from_code(&code, id, message)),
        )
    }

    /// Calls child `id`, on this node or, in a cluster, on the node that
    /// runs it.
    pub(crate) async fn call(
        &self,
        id: &str,
        msg: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, CallError> {
        if let Some(cell) = self.registry.get(id) {
            return cell.call(msg, timeout).await;
        }
        match &self.cluster {
            Some(cluster) => match cluster.route(id, Op::Call(timeout), msg).await {
                Some(answer) => answer.map_err(|(code, m)| CallError::from_code(&code, m)),
                None => Err(CallError::NotFound),
            },
            None => Err(CallError::NotFound),
        }
    }

    /// Casts to child `id`, on this node or, in a cluster, on the node that
    /// runs it.
    pub(crate) async fn cast(&self, id: &str, msg: Vec<u8>) -> Result<(), CallError> {
        if let Some(cell) = self.registry.get(id) {
            return cell.cast(msg);
        }
        match &self.cluster {
            Some(cluster) => match cluster.route(id, Op::Cast, msg).await {
                Some(answer) => answer
                    .map(drop)
                    .map_err(|(code, m)| CallError::from_code(&code, m)),
                None => Err(CallError::NotFound),
            },
            None => Err(CallError::NotFound),
        }
    }

    /// Child `id`'s info as another node of the cluster reports it (JSON),
    /// when this node does not run it.
    pub(crate) async fn remote_child(&self, id: &str) -> Option<Result<Vec<u8>, ChildError>> {
        let cluster = self.cluster.as_ref()?;
        let answer = cluster.route(id, Op::Get, Vec::new()).await?;
        Some(answer.map_err(|(code, message)| ChildError::from_code(&code, id, message)))
    }

    /// Ends child `id`'s instance now with `killed(reason)`.
    pub(crate) fn kill_child(&self, id: &str, reason: &str) -> Result<(), ChildError> {
        let cell = self.child(id)?;
        cell.signal(Control::Kill {
            reason: reason.to_string(),
        });
        Ok(())
    }

    /// Hibernates child `id` now (OTP's `:hibernate`, asked from outside):
    /// `Ok` once it gave its instance back or if it already sleeps, or why
    /// it cannot (no snapshot, work owed, no instance).
    pub(crate) async fn hibernate_child(&self, id: &str) -> Result<(), ChildError> {
        let cell = self.child(id)?;
        let (done, carried_out) = oneshot::channel();
        cell.signal(Control::Hibernate { done });
        carried_out
            .await
            .unwrap_or_else(|_| Err(ChildError::NotFound(id.into())))
    }

    fn child(&self, id: &str) -> Result<Arc<Cell>, ChildError> {
        self.registry
            .get(id)
            .ok_or_else(|| ChildError::NotFound(id.into()))
    }

    /// Sends child `id` the signal `order` makes and waits until the child
    /// carried it out.
    async fn order(
        &self,
        id: &str,
        order: impl FnOnce(oneshot::Sender<()>) -> Control,
    ) -> Result<(), ChildError> {
        let cell = self.child(id)?;
        let (done, carried_out) = oneshot::channel();
        cell.signal(order(done));
        let _ = carried_out.await;
        Ok(())
    }

    /// Brings back a stored child. Its first start is awaited so that
    /// children come back in start order; a failure is an exit like any
    /// other.
    pub(crate) async fn restore(self: &Arc<Self>, record: Record) {
        self.bring_back(record, false).await;
    }

    /// [`Supervisor::restore`]; a child `moved` from another node of the
    /// cluster also comes back without an instance when its plugin
    /// hibernates idle children.
    async fn bring_back(self: &Arc<Self>, record: Record, moved: bool) {
        let id = record.spec.id.clone();
        // Brought back whatever `max_children` says now.
        self.dynamic.fetch_add(1, Ordering::AcqRel);
        // A lazy child, or one whose state is stored, comes back without an
        // instance and is started (then restored) at its first message.
        let plugin = self.config.plugins.get(&record.spec.plugin);
        let dormant = record.failed.is_none()
            && (record.spec.activate == Activate::Lazy
                || plugin.is_some_and(|p| p.durable_state)
                || moved && plugin.is_some_and(|p| p.hibernate_after_ms > 0));
        if dormant {
            let origin = Origin::Restored { failed: None };
            if let Err(e) = self.register_dormant(record.spec, origin) {
                self.dynamic.fetch_sub(1, Ordering::AcqRel);
                tracing::error!("stored child {id} was not brought back: {e}");
            }
            return;
        }
        let origin = Origin::Restored {
            failed: record.failed,
        };
        let parent = DynamicParent::boxed(self, true);
        match self.spawn(record.spec, origin, parent, None).await {
            Ok((_, StartOutcome::Started)) => {}
            // The child removed itself (and was uncounted).
            Ok((_, StartOutcome::Ignored)) => {}
            Err(e) => {
                self.dynamic.fetch_sub(1, Ordering::AcqRel);
                tracing::error!("stored child {id} was not brought back: {e}");
            }
        }
    }

    /// Starts a config child (top-level, or a member of a group) and waits
    /// until its first start was tried. It is not stored: the config brings
    /// it back.
    async fn start_config_child(
        self: &Arc<Self>,
        child: &StaticChild,
        parent: Box<dyn Parent>,
        group: Option<Arc<str>>,
    ) -> Option<Arc<Cell>> {
        let spec = ChildSpec::new(&child.id, &child.plugin, &child.args)
            .restart(child.restart)
            .activate(child.activate);
        if child.activate == Activate::Lazy {
            // Config validation allows `lazy` only outside groups, whose
            // members start in order under their group.
            if self.env.wasm.catalog.current(&spec.plugin).is_none() {
                tracing::error!(
                    "config child {} was not registered: no plugin {:?} is loaded",
                    child.id,
                    spec.plugin
                );
                return None;
            }
            return match self.register_dormant(spec, Origin::Config) {
                Ok(cell) => Some(cell),
                Err(e) => {
                    tracing::error!("config child {} was not registered: {e}", child.id);
                    None
                }
            };
        }
        match self.spawn(spec, Origin::Config, parent, group).await {
            Ok((cell, _)) => Some(cell),
            Err(e) => {
                tracing::error!("config child {} was not started: {e}", child.id);
                None
            }
        }
    }

    /// Starts the config's `[[children]]`, then its `[[groups]]`, in order.
    pub(crate) async fn start_config(self: &Arc<Self>) {
        for child in &self.config.children {
            // In a cluster, a singleton starts where the cluster places it.
            if self.cluster.is_some() && child.placement == Placement::Singleton {
                continue;
            }
            let parent = DynamicParent::boxed(self, false);
            self.start_config_child(child, parent, None).await;
        }
        for config in &self.config.groups {
            // In a cluster, a singleton group starts where the cluster
            // places it.
            if self.cluster.is_some() && config.placement == Placement::Singleton {
                continue;
            }
            let handle = group::start_top(self, config).await;
            self.groups
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(handle);
        }
    }

    /// The supervision tree: the config's groups (nested, members in start
    /// order), its top-level children, and the dynamic children by id.
    pub(crate) async fn tree(&self) -> Tree {
        let groups: Vec<GroupHandle> = self
            .groups
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let singletons: Vec<GroupHandle> = self
            .singleton_groups
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(_, g)| g.clone())
            .collect();
        let mut trees = Vec::with_capacity(groups.len());
        for g in groups.into_iter().chain(singletons) {
            if let Some(tree) = g.describe().await {
                trees.push(tree);
            }
        }
        let children = self
            .config
            .children
            .iter()
            .filter_map(|c| self.registry.get(&c.id))
            .map(|cell| TreeChild::of(&cell))
            .collect();
        let mut dynamic: Vec<TreeChild> = self
            .registry
            .all()
            .iter()
            .filter(|cell| cell.state().dynamic)
            .map(|cell| TreeChild::of(cell))
            .collect();
        dynamic.sort_by(|a, b| a.id.cmp(&b.id));
        Tree {
            groups: trees,
            children,
            dynamic,
        }
    }

    /// Publishes `msg` on `topic`, to subscribers and event streams, on
    /// every node of the cluster.
    pub(crate) fn publish(&self, topic: &str, msg: Bytes) {
        if let Some(cluster) = &self.cluster {
            cluster.broadcast(topic, &msg);
        }
        self.deliver(topic, msg);
    }

    /// Hands a publish to this node's subscribers and event streams.
    pub(crate) fn deliver(&self, topic: &str, msg: Bytes) {
        if self.env.events.has_listeners() {
            self.env.events.emit(Event::Topic {
                topic: topic.to_string(),
                msg: msg.clone(),
            });
        }
        self.topics.publish(topic, &msg);
    }

    /// Stores a started child, on disk before it returns.
    async fn persist(&self, cell: &Cell) -> Result<()> {
        let Some(durable) = self.durable.clone() else {
            return Ok(());
        };
        let record = Record {
            spec: cell.spec.clone(),
            seq: durable.next_seq(),
            failed: None,
        };
        durable.put(&record).await
    }

    /// Forgets a removed child durably; while the host shuts down, children
    /// stop without being forgotten.
    pub(crate) async fn forget(&self, id: &str) {
        let Some(durable) = self.durable.clone() else {
            return;
        };
        if self.shutting_down.load(Ordering::Acquire) {
            return;
        }
        if let Err(e) = durable.remove(id).await {
            tracing::error!("cannot forget a removed child in the state database: {e:#}");
        }
    }

    /// The config's singleton children (placed by the cluster).
    pub(crate) fn singletons(&self) -> Vec<StaticChild> {
        self.config
            .children
            .iter()
            .filter(|c| c.placement == Placement::Singleton)
            .cloned()
            .collect()
    }

    /// The config's singleton groups (placed by the cluster).
    pub(crate) fn singleton_groups(&self) -> Vec<crate::config::GroupConfig> {
        self.config
            .groups
            .iter()
            .filter(|g| g.placement == Placement::Singleton)
            .cloned()
            .collect()
    }

    /// Whether singleton group `id` runs on this node.
    pub(crate) fn runs_group(&self, id: &str) -> bool {
        self.singleton_groups
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|(g, _)| g == id)
    }

    /// Starts a singleton group the cluster placed here.
    pub(crate) async fn start_singleton_group(
        self: &Arc<Self>,
        config: &crate::config::GroupConfig,
    ) {
        // Its members are claimed too, so that every node routes to them.
        if let Some(cluster) = &self.cluster {
            for member in group_members(config) {
                let spec = Supervisor::singleton_spec(member);
                if let Err(e) = cluster.claim_member(&spec).await {
                    // Tried again at the next placement round.
                    tracing::warn!(child = %member.id, "cannot claim a singleton group's member; the group does not start yet: {e:#}");
                    return;
                }
            }
        }
        let handle = group::start_top(self, config).await;
        self.singleton_groups
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((config.id.clone(), handle));
    }

    /// Stops singleton group `id` on this node with `reason`; with
    /// `shutdown` (its home is another node now), gives its claim up for
    /// that node.
    pub(crate) async fn stop_singleton_group(&self, id: &str, reason: ExitReason) {
        let handle = {
            let mut groups = self
                .singleton_groups
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let at = groups.iter().position(|(g, _)| g == id);
            at.map(|i| groups.remove(i).1)
        };
        let Some(handle) = handle else {
            return;
        };
        let released = reason != ExitReason::NoConnection;
        handle.shutdown_with(reason).await;
        if let (true, Some(cluster)) = (released, &self.cluster) {
            let config = self.config.groups.iter().find(|g| g.id == id);
            for member in config.map(group_members).unwrap_or_default() {
                cluster.release(&member.id).await;
            }
            cluster.release(id).await;
        }
    }

    /// The spec a singleton group is claimed with (it has no plugin or
    /// args of its own).
    pub(crate) fn singleton_group_spec(id: &str) -> ChildSpec {
        ChildSpec::new(id, "(group)", &serde_json::Value::Null)
    }

    /// The spec a singleton is claimed with.
    pub(crate) fn singleton_spec(child: &StaticChild) -> ChildSpec {
        ChildSpec::new(&child.id, &child.plugin, &child.args)
            .restart(child.restart)
            .activate(child.activate)
    }

    /// Starts a singleton the cluster placed here.
    pub(crate) async fn start_singleton(self: &Arc<Self>, child: &StaticChild) {
        let parent = DynamicParent::boxed(self, false);
        self.start_config_child(child, parent, None).await;
    }

    /// Stops a singleton whose home is another node now, and gives its
    /// claim up for that node.
    pub(crate) async fn stop_singleton(&self, id: &str) {
        let _ = self.stop_here(id).await;
        if let Some(cluster) = &self.cluster {
            cluster.release(id).await;
        }
    }

    /// Stops dynamic child `id` to hand it to another node (a drain),
    /// keeping its record and claim: a `durable_state` child stores its
    /// state as at a host shutdown, then it stops (`terminate(shutdown)`).
    /// `false` when the child left otherwise meanwhile (an operator stop,
    /// its own exit): then there is nothing to hand over.
    pub(crate) async fn hand_off(&self, id: &str) -> Result<(ChildSpec, bool), ChildError> {
        let cell = self.child(id)?;
        self.order(id, |done| Control::Stop {
            done,
            reason: ExitReason::Shutdown,
            keep: true,
        })
        .await?;
        Ok((cell.spec.clone(), cell.control.kept()))
    }

    /// Forgets a child handed to another node: the state database no
    /// longer brings it back here.
    pub(crate) async fn forget_handed(&self, id: &str) {
        if let Some(durable) = self.durable.clone()
            && let Err(e) = durable.remove(id).await
        {
            tracing::error!(
                child = id,
                "cannot forget a child handed to another node: {e:#}"
            );
        }
    }

    /// A lost lease: stops every dynamic child and singleton with
    /// `noconnection`, all at once, keeping their records and claims, which
    /// other nodes take over.
    pub(crate) async fn fence(&self) {
        let singletons: Vec<String> = self.singletons().into_iter().map(|c| c.id).collect();
        let dynamic: Vec<_> = self
            .registry
            .all()
            .into_iter()
            .filter(|c| c.state().dynamic || singletons.iter().any(|s| **s == *c.id))
            .collect();
        let waits: Vec<_> = dynamic
            .iter()
            .map(|cell| {
                let (done, stopped) = oneshot::channel();
                cell.signal(Control::Stop {
                    done,
                    reason: ExitReason::NoConnection,
                    keep: true,
                });
                stopped
            })
            .collect();
        for stopped in waits {
            let _ = stopped.await;
        }
        for group in self.singleton_groups() {
            self.stop_singleton_group(&group.id, ExitReason::NoConnection)
                .await;
        }
    }

    /// Starts a child this node took over from a dead one (or one of its
    /// own claims that ran nowhere), as a restart with `reason`
    /// (`noconnection`; `shutdown` for a child a drained node handed over):
    /// without an instance where its plugin is `durable_state` (then from
    /// its stored state), hibernates idle children, or the child is lazy;
    /// else at once with its args; `waiting` while its plugin is missing.
    /// It is stored here from now.
    pub(crate) async fn rehome(self: &Arc<Self>, spec: ChildSpec, reason: ExitReason) {
        let id = spec.id.clone();
        let seq = self.durable.as_ref().map_or(0, |d| d.next_seq());
        let record = Record {
            spec,
            seq,
            failed: None,
        };
        self.bring_back(record, true).await;
        if let Some(cell) = self.registry.get(&id) {
            // Why it left the node it ran on: `noconnection`, or
            // `shutdown` for a drain.
            cell.state().last_exit = Some(reason);
            if let Err(e) = self.persist(&cell).await {
                tracing::error!(child = %id, "cannot store a re-homed child: {e:#}");
            }
        }
    }

    /// Gives up the cluster's claim on a removed dynamic child's id, unless
    /// the host is stopping and keeps the child stored: it brings it back
    /// under the same claim.
    async fn release_claim(&self, id: &str) {
        let Some(cluster) = &self.cluster else {
            return;
        };
        if self.shutting_down.load(Ordering::Acquire) && self.durable.is_some() {
            return;
        }
        cluster.release(id).await;
    }

    /// Records durably whether a child is `failed`. Not synced to disk (see
    /// `Durable::set_failed`), so cheap enough to do in place.
    fn remember_failed(&self, id: &str, failed: Option<ExitReason>) {
        if let Some(d) = &self.durable {
            d.set_failed(id, failed);
        }
    }

    /// Stops every child (`terminate(shutdown)`): the groups' members in
    /// reverse order, the last group first, then the rest. Children stay
    /// stored, so a restarted host brings them back.
    pub(crate) async fn shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
        let groups = std::mem::take(&mut *self.groups.lock().unwrap_or_else(|p| p.into_inner()));
        let singletons = std::mem::take(
            &mut *self
                .singleton_groups
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        for group in singletons.iter().map(|(_, g)| g).chain(groups.iter()).rev() {
            group.shutdown().await;
        }
        let waits: Vec<_> = self
            .registry
            .all()
            .into_iter()
            .filter_map(|cell| {
                // A child without an instance has nothing to run at the
                // end (its state, if durable, is stored): it is put away
                // as it is rather than woken.
                if cell.mailbox.close_if_asleep() {
                    return None;
                }
                let (done, stopped) = oneshot::channel();
                cell.signal(Control::Stop {
                    done,
                    reason: ExitReason::Shutdown,
                    keep: false,
                });
                Some(stopped)
            })
            .collect();
        for w in waits {
            let _ = w.await;
        }
        self.env.tasks.idle().await;
    }
}

/// Every child of `group` and its nested groups.
fn group_members(group: &crate::config::GroupConfig) -> Vec<&StaticChild> {
    let mut out: Vec<&StaticChild> = group.children.iter().collect();
    for nested in &group.groups {
        out.extend(group_members(nested));
    }
    out
}

/// The parent of a dynamic child, or of a config child outside any group:
/// the child's own restart intensity decides.
struct DynamicParent {
    sup: Arc<Supervisor>,
    intensity: Intensity,
    /// Whether the child is in the state database (dynamic children are,
    /// config children are not).
    stored: bool,
}

impl DynamicParent {
    fn boxed(sup: &Arc<Supervisor>, stored: bool) -> Box<dyn Parent> {
        let s = &sup.config.supervisor;
        Box::new(DynamicParent {
            intensity: Intensity::new(s.max_restarts, s.max_seconds),
            sup: sup.clone(),
            stored,
        })
    }
}

impl Parent for DynamicParent {
    fn port(&self, cell: &Arc<Cell>, generation: u64) -> Box<dyn Port> {
        GuestPort::boxed(&self.sup, cell, generation)
    }

    fn exited(&mut self, cell: &Cell, reason: &ExitReason, uptime: Duration) -> Decision {
        let decision = policy::decide(
            cell.spec.restart,
            reason,
            &self.sup.config.supervisor,
            &mut self.intensity,
            uptime,
            Instant::now(),
        );
        if decision == Decision::Fail && self.stored {
            self.sup.remember_failed(&cell.id, Some(reason.clone()));
        }
        decision
    }

    fn revived(&mut self, cell: &Cell, was_failed: bool) {
        self.intensity.reset();
        if was_failed && self.stored {
            self.sup.remember_failed(&cell.id, None);
        }
    }

    fn window(&self) -> Duration {
        self.intensity.window()
    }

    fn host_stopping(&self) -> bool {
        self.sup.shutting_down.load(Ordering::Acquire)
    }

    fn store_state(
        &self,
        cell: &Arc<Cell>,
        state: Vec<u8>,
    ) -> BoxFuture<'static, Result<(), CheckpointError>> {
        self.sup.store_state(cell, state)
    }

    fn forget_state(&self, cell: &Arc<Cell>) -> BoxFuture<'static, ()> {
        self.sup.forget_state(cell)
    }

    fn stored_state(
        &self,
        cell: &Arc<Cell>,
    ) -> BoxFuture<'static, Result<Option<Vec<u8>>, CheckpointError>> {
        self.sup.stored_state(cell)
    }

    fn removed(&self, cell: &Arc<Cell>) -> BoxFuture<'static, ()> {
        let (sup, cell, stored) = (self.sup.clone(), cell.clone(), self.stored);
        Box::pin(async move {
            if sup.registry.remove(&cell) && stored {
                sup.dynamic.fetch_sub(1, Ordering::AcqRel);
                // Stopped for a lost lease, or to be handed to another
                // node: it stays stored and claimed, and another node takes
                // it over.
                if cell.control.kept() {
                    return;
                }
                sup.forget(&cell.id).await;
                sup.release_claim(&cell.id).await;
            }
        })
    }
}

/// One place among the dynamic children, given back when dropped unless
/// kept.
struct Slot<'a> {
    count: &'a AtomicUsize,
    kept: bool,
}

impl Slot<'_> {
    fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if !self.kept {
            self.count.fetch_sub(1, Ordering::AcqRel);
        }
    }
}
