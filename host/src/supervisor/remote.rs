//! Monitors and links across the nodes of a cluster. A guest's `monitor`
//! of an id that runs on another node is kept here, on the watcher's node,
//! under a key of its own, and set on the child's node for that key; the
//! child's node tells this one the exit reason. A link with a child on
//! another node has an end on each node, under the key of the node that
//! made it; each end tells the other how it ended. When the other node is
//! lost (its heartbeat gone, or it cannot be reached), the `down` fires, or
//! the exit signal comes, with `noconnection`, as in Erlang; and the
//! monitors it had set on this node's children fire `noconnection` towards
//! it (one try) and are dropped.

use super::Supervisor;
use crate::child::{Cell, Control, RemoteLink, RemoteWatcher};
use crate::cluster::Cluster;
use crate::cluster::Op;
use crate::types::CallError;
use crate::types::ExitReason;
use crate::wasm::Info;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// A monitor of a child on another node, as the watcher's node keeps it.
struct Watch {
    node: String,
    id: Arc<str>,
    watcher: Weak<Cell>,
    generation: u64,
    reference: u64,
}

/// This node's end of a link with a child on another node.
struct LinkEnd {
    cell: Weak<Cell>,
    node: String,
    partner: Arc<str>,
}

/// A link's key: the node that made it, and its number there.
type LinkKey = (Arc<str>, u64);

/// A monitor another node set on a child here: that node and its key.
type MonitorKey = (Arc<str>, u64);

/// The monitors other nodes set on this node's children: the child, and
/// when the monitor was set.
type Monitored = Mutex<HashMap<MonitorKey, (Weak<Cell>, Instant)>>;

/// How a monitor set from another node tells that node the exit reason.
type Tell = Box<dyn FnOnce(ExitReason) + Send + Sync>;

/// This node's monitors of children on other nodes, and its ends of links
/// with them, by key; and the monitors other nodes set on its children.
pub(crate) struct RemoteWatches {
    next: AtomicU64,
    watches: Mutex<HashMap<u64, Watch>>,
    links: Mutex<HashMap<LinkKey, LinkEnd>>,
    /// Kept on the child's cell (which tells the watcher's node when it
    /// exits) and here, so that a lost node's monitors can be found
    /// without visiting every child.
    monitored: Arc<Monitored>,
}

impl Default for RemoteWatches {
    /// Keys start from the time: a node that restarts does not take a key
    /// another node may still send a `down` or an exit for.
    fn default() -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        RemoteWatches {
            next: AtomicU64::new(now << 20),
            watches: Mutex::default(),
            links: Mutex::default(),
            monitored: Arc::default(),
        }
    }
}

impl RemoteWatches {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Watch>> {
        self.watches.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn links(&self) -> std::sync::MutexGuard<'_, HashMap<LinkKey, LinkEnd>> {
        self.links.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn monitored(&self) -> std::sync::MutexGuard<'_, HashMap<MonitorKey, (Weak<Cell>, Instant)>> {
        lock_monitored(&self.monitored)
    }

    /// Sets a monitor from `node` under `key` on `cell`, which tells that
    /// node the exit reason through `tell`; `false` (and no monitor) when
    /// the child does not run.
    fn watch_from(&self, cell: &Arc<Cell>, node: Arc<str>, key: u64, tell: Tell) -> bool {
        let index: MonitorKey = (node.clone(), key);
        // Indexed before it is set: the child may exit, and tell, at once.
        self.monitored()
            .insert(index.clone(), (Arc::downgrade(cell), Instant::now()));
        let monitored = Arc::downgrade(&self.monitored);
        let told = index.clone();
        let tell = Box::new(move |reason: ExitReason| {
            if let Some(monitored) = monitored.upgrade() {
                lock_monitored(&monitored).remove(&told);
            }
            tell(reason);
        });
        if cell.monitor_remote(RemoteWatcher { node, key, tell }) {
            return true;
        }
        self.monitored().remove(&index);
        false
    }

    /// Removes the monitor `node` set under `key` on `cell`.
    fn unwatch_from(&self, cell: Option<&Cell>, node: &str, key: u64) {
        self.monitored().remove(&(node.into(), key));
        if let Some(cell) = cell {
            cell.demonitor_remote(node, key);
        }
    }

    /// The monitors set from nodes that `live` says are gone, at least
    /// `grace` ago (a node that has just joined may not be seen yet): each
    /// fires `noconnection` towards its node (which gets it if it is only
    /// cut off from this one) and is dropped. Those of children that are
    /// gone are forgotten.
    fn drop_lost_monitors(&self, live: impl Fn(&str) -> bool, grace: Duration) {
        let dropped: Vec<(MonitorKey, Weak<Cell>)> = {
            let mut monitored = self.monitored();
            monitored.retain(|_, (cell, _)| cell.strong_count() > 0);
            let lost: Vec<MonitorKey> = monitored
                .iter()
                .filter(|((node, _), (_, set))| set.elapsed() >= grace && !live(node))
                .map(|(k, _)| k.clone())
                .collect();
            lost.into_iter()
                .filter_map(|k| monitored.remove_entry(&k).map(|(k, (cell, _))| (k, cell)))
                .collect()
        };
        // Outside the index's lock, which a monitor's `tell` takes.
        for ((node, key), cell) in dropped {
            let watcher = cell
                .upgrade()
                .and_then(|c| c.take_remote_monitor(&node, key));
            if let Some(watcher) = watcher {
                (watcher.tell)(ExitReason::NoConnection);
            }
        }
    }
}

fn lock_monitored(
    monitored: &Monitored,
) -> std::sync::MutexGuard<'_, HashMap<MonitorKey, (Weak<Cell>, Instant)>> {
    monitored.lock().unwrap_or_else(|p| p.into_inner())
}

/// Tells node `node` how one of its monitors or links of child `id` ended
/// (`op`, with the reason): tried again while the node is alive, as a lost
/// message would leave a `down` or an exit signal never delivered.
async fn tell_node(cluster: &Cluster, node: &str, id: &str, op: Op, reason: Vec<u8>) {
    let mut tries = 0;
    loop {
        match cluster.ask(node, id, op.clone(), reason.clone()).await {
            Ok(_) => return,
            Err((code, message)) => {
                tries += 1;
                if tries == 3 || !cluster.is_live(node) {
                    tracing::warn!(
                        child = id,
                        "cannot tell node {node} how a monitor or link ended: {code}: {message}"
                    );
                    return;
                }
            }
        }
    }
}

/// Tells `watch`'s watcher (if its incarnation still runs) that the child
/// exited with `reason`.
fn fire(watch: Watch, reason: ExitReason) {
    if let Some(watcher) = watch.watcher.upgrade() {
        watcher.post_info(
            watch.generation,
            Info::Down {
                reference: watch.reference,
                id: watch.id,
                reason,
            },
        );
    }
}

impl Supervisor {
    /// `watcher`'s incarnation `generation` monitors `id`, which does not
    /// run on this node: on the node that runs it, or `noproc` when none
    /// does. The answer (and any `down`) arrives as a message.
    pub(crate) fn monitor_remote(
        self: &Arc<Self>,
        watcher: &Arc<Cell>,
        generation: u64,
        id: &str,
        reference: u64,
    ) {
        let sup = self.clone();
        let watch = Watch {
            node: String::new(),
            id: id.into(),
            watcher: Arc::downgrade(watcher),
            generation,
            reference,
        };
        tokio::spawn(async move {
            let Some(cluster) = sup.cluster.clone() else {
                return fire(watch, ExitReason::Noproc);
            };
            let Some(node) = cluster.locate(&watch.id).await else {
                return fire(watch, ExitReason::Noproc);
            };
            let key = sup.remote.next.fetch_add(1, Ordering::Relaxed);
            let id = watch.id.clone();
            sup.remote.lock().insert(
                key,
                Watch {
                    node: node.clone(),
                    ..watch
                },
            );
            let asked = cluster
                .ask(
                    &node,
                    &id,
                    Op::Monitor(cluster.node_name().to_string(), key),
                    Vec::new(),
                )
                .await;
            let failed = match asked {
                Ok(_) => return,
                Err((code, _)) if code == "noproc" || code == "not_found" => ExitReason::Noproc,
                Err(_) => ExitReason::NoConnection,
            };
            // A `down` may have come first.
            let watch = sup.remote.lock().remove(&key);
            if let Some(watch) = watch {
                fire(watch, failed);
            }
        });
    }

    /// Removes `watcher`'s monitor `reference` of a child on another node;
    /// whether it was still set.
    pub(crate) fn demonitor_remote(&self, watcher: &Cell, reference: u64) -> bool {
        let found = {
            let mut watches = self.remote.lock();
            let key = watches
                .iter()
                .find(|(_, w)| {
                    w.reference == reference && std::ptr::eq(w.watcher.as_ptr(), watcher)
                })
                .map(|(k, _)| *k);
            key.and_then(|k| watches.remove(&k).map(|w| (k, w)))
        };
        let Some((key, watch)) = found else {
            return false;
        };
        if let Some(cluster) = self.cluster.clone() {
            tokio::spawn(async move {
                let _ = cluster
                    .ask(
                        &watch.node,
                        &watch.id,
                        Op::Demonitor(cluster.node_name().to_string(), key),
                        Vec::new(),
                    )
                    .await;
            });
        }
        true
    }

    /// Another node says the child this node's monitor `key` watches
    /// exited with `reason`.
    pub(crate) fn remote_down(&self, key: u64, reason: ExitReason) {
        let watch = self.remote.lock().remove(&key);
        if let Some(watch) = watch {
            fire(watch, reason);
        }
    }

    /// Node `from` monitors this node's child `id` under its `key`: that
    /// node is told the exit reason; `not_found` (which it takes as
    /// `noproc`) when the child does not run here.
    pub(crate) fn monitored_from(
        self: &Arc<Self>,
        id: &str,
        from: &str,
        key: u64,
    ) -> Result<(), CallError> {
        let (Some(cell), Some(cluster)) = (self.registry.get(id), self.cluster.clone()) else {
            return Err(CallError::NotFound);
        };
        let node: Arc<str> = from.into();
        let (to, child) = (node.to_string(), id.to_string());
        let tell = Box::new(move |reason: ExitReason| {
            let reason = serde_json::to_vec(&reason).unwrap_or_default();
            tokio::spawn(
                async move { tell_node(&cluster, &to, &child, Op::Down(key), reason).await },
            );
        });
        match self.remote.watch_from(&cell, node, key, tell) {
            true => Ok(()),
            false => Err(CallError::NotFound),
        }
    }

    /// Node `from` removes the monitor it set under `key` on child `id`.
    pub(crate) fn demonitored_from(&self, id: &str, from: &str, key: u64) {
        let cell = self.registry.get(id);
        self.remote.unwatch_from(cell.as_deref(), from, key);
    }

    /// How this node's end `key` of a link with `partner` on `node` tells
    /// that node it ended.
    fn link_teller(
        self: &Arc<Self>,
        key: LinkKey,
        node: String,
        partner: Arc<str>,
    ) -> Box<dyn FnOnce(ExitReason) + Send + Sync> {
        let sup = Arc::downgrade(self);
        Box::new(move |reason| {
            let Some(sup) = sup.upgrade() else {
                return;
            };
            sup.remote.links().remove(&key);
            let Some(cluster) = sup.cluster.clone() else {
                return;
            };
            let reason = serde_json::to_vec(&reason).unwrap_or_default();
            tokio::spawn(async move {
                let op = Op::LinkExit(key.0.to_string(), key.1);
                tell_node(&cluster, &node, &partner, op, reason).await;
            });
        })
    }

    /// Links `cell`'s incarnation `generation` with `id`, which runs on
    /// another node; `not_found` when no node runs it.
    pub(crate) async fn link_remote(
        self: &Arc<Self>,
        cell: &Arc<Cell>,
        generation: u64,
        id: &str,
    ) -> Result<(), CallError> {
        let Some(cluster) = self.cluster.clone() else {
            return Err(CallError::NotFound);
        };
        let node = cluster.locate(id).await.ok_or(CallError::NotFound)?;
        let number = self.remote.next.fetch_add(1, Ordering::Relaxed);
        let key: LinkKey = (cluster.node_name().into(), number);
        // This end first: an exit from the other end may come before the
        // answer.
        if !self.add_link_end(cell, Some(generation), key.clone(), &node, id) {
            return Err(CallError::Failed("this incarnation has ended".into()));
        }
        let op = Op::Link(cluster.node_name().to_string(), number);
        match cluster
            .ask(&node, id, op, cell.id.as_bytes().to_vec())
            .await
        {
            Ok(_) => Ok(()),
            Err((code, message)) => {
                self.remote.links().remove(&key);
                cell.forget_remote_link(&key);
                Err(match code.as_str() {
                    "not_found" | "noproc" => CallError::NotFound,
                    _ => CallError::from_code(&code, message),
                })
            }
        }
    }

    /// Node `from` links its child `partner` with this node's child `id`,
    /// under `from`'s link number `number`.
    pub(crate) fn linked_from(
        self: &Arc<Self>,
        id: &str,
        from: &str,
        number: u64,
        partner: &str,
    ) -> Result<(), CallError> {
        let cell = self.registry.get(id).ok_or(CallError::NotFound)?;
        match self.add_link_end(&cell, None, (from.into(), number), from, partner) {
            true => Ok(()),
            false => Err(CallError::NotFound),
        }
    }

    /// Adds this node's end `key` of a link between `cell`'s incarnation
    /// `generation` (the current one when `None`) and `partner` on `node`:
    /// in this node's table and on the cell. `false` (and nothing added)
    /// when that incarnation does not run.
    fn add_link_end(
        self: &Arc<Self>,
        cell: &Arc<Cell>,
        generation: Option<u64>,
        key: LinkKey,
        node: &str,
        partner: &str,
    ) -> bool {
        let partner: Arc<str> = partner.into();
        self.remote.links().insert(
            key.clone(),
            LinkEnd {
                cell: Arc::downgrade(cell),
                node: node.to_string(),
                partner: partner.clone(),
            },
        );
        let tell = self.link_teller(key.clone(), node.to_string(), partner.clone());
        let end = RemoteLink {
            key: key.clone(),
            partner,
            tell,
        };
        if cell.link_remote(generation, end).is_some() {
            return true;
        }
        self.remote.links().remove(&key);
        false
    }

    /// The other end of link `key` ended with `reason`: this end goes, and
    /// unless the reason is `normal` its child gets the exit signal (and
    /// exits with `linked`, or gets an `exit` info if it traps exits).
    pub(crate) fn remote_link_exit(&self, key: (Arc<str>, u64), reason: ExitReason) {
        let Some(end) = self.remote.links().remove(&key) else {
            return;
        };
        let Some(cell) = end.cell.upgrade() else {
            return;
        };
        let Some(generation) = cell.forget_remote_link(&key) else {
            return;
        };
        if reason != ExitReason::Normal && cell.generation() == generation {
            cell.signal(Control::Exit {
                from: end.partner,
                reason,
                generation,
            });
        }
    }

    /// Fires `noconnection` for every monitor of a child on a node that
    /// `live` says is gone, and forgets those whose watcher is gone; ends
    /// the links with children there the same way; and drops the monitors
    /// such a node set on children here (telling it `noconnection`), as
    /// Erlang does at a `nodedown`.
    pub(crate) fn remote_nodes_lost(&self, live: impl Fn(&str) -> bool) {
        let grace = self
            .config
            .cluster
            .as_ref()
            .map_or(0, |c| c.node_timeout_ms);
        self.remote
            .drop_lost_monitors(&live, Duration::from_millis(grace));
        let lost: Vec<Watch> = {
            let mut watches = self.remote.lock();
            watches.retain(|_, w| w.watcher.strong_count() > 0);
            let keys: Vec<u64> = watches
                .iter()
                .filter(|(_, w)| !live(&w.node))
                .map(|(k, _)| *k)
                .collect();
            keys.iter().filter_map(|k| watches.remove(k)).collect()
        };
        for watch in lost {
            fire(watch, ExitReason::NoConnection);
        }
        let broken: Vec<LinkKey> = {
            let mut links = self.remote.links();
            links.retain(|_, l| l.cell.strong_count() > 0);
            links
                .iter()
                .filter(|(_, l)| !live(&l.node))
                .map(|(k, _)| k.clone())
                .collect()
        };
        for key in broken {
            self.remote_link_exit(key, ExitReason::NoConnection);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{ChildSpec, Status};

    fn running(id: &str) -> Arc<Cell> {
        let cell = Arc::new(Cell::new(
            ChildSpec::new(id, "p", &serde_json::Value::Null),
            8,
        ));
        cell.set_status(Status::Running);
        cell
    }

    /// A `tell` that records the reasons it was given.
    fn recorder() -> (Arc<Mutex<Vec<ExitReason>>>, Tell) {
        let told = Arc::new(Mutex::new(Vec::new()));
        let to = told.clone();
        let tell = Box::new(move |reason| to.lock().unwrap().push(reason));
        (told, tell)
    }

    #[test]
    fn a_lost_nodes_monitors_say_noconnection_and_are_dropped_the_others_kept() {
        let remote = RemoteWatches::default();
        let (a, b) = (running("a"), running("b"));
        let (gone_a, tell) = recorder();
        assert!(remote.watch_from(&a, "gone".into(), 1, tell));
        let (alive_a, tell) = recorder();
        assert!(remote.watch_from(&a, "alive".into(), 2, tell));
        let (gone_b, tell) = recorder();
        assert!(remote.watch_from(&b, "gone".into(), 3, tell));
        // Too recent: a node that has just joined may not be seen yet.
        remote.drop_lost_monitors(|node| node == "alive", Duration::from_secs(60));
        assert_eq!(remote.monitored().len(), 3);
        remote.drop_lost_monitors(|node| node == "alive", Duration::ZERO);
        let left = |cell: &Cell| cell.state().monitors.len();
        assert_eq!((left(&a), left(&b)), (1, 0));
        assert_eq!(remote.monitored().len(), 1);
        assert_eq!(*gone_a.lock().unwrap(), [ExitReason::NoConnection]);
        assert_eq!(*gone_b.lock().unwrap(), [ExitReason::NoConnection]);
        assert!(alive_a.lock().unwrap().is_empty());
        // The child exits: the monitor tells, and leaves the index.
        a.exited(&ExitReason::Normal, Status::Restarting);
        assert_eq!(*alive_a.lock().unwrap(), [ExitReason::Normal]);
        assert!(remote.monitored().is_empty());
    }

    #[test]
    fn a_monitor_of_a_child_that_does_not_run_is_not_indexed_and_demonitor_unindexes() {
        let remote = RemoteWatches::default();
        let idle = running("i");
        idle.set_status(Status::Failed);
        let (_, tell) = recorder();
        assert!(!remote.watch_from(&idle, "n".into(), 1, tell));
        assert!(remote.monitored().is_empty());
        let a = running("a");
        let (told, tell) = recorder();
        assert!(remote.watch_from(&a, "n".into(), 2, tell));
        remote.unwatch_from(Some(&a), "n", 2);
        assert!(remote.monitored().is_empty());
        assert!(a.state().monitors.is_empty());
        a.exited(&ExitReason::Normal, Status::Restarting);
        assert!(told.lock().unwrap().is_empty());
        // A child that is gone leaves the index at the next look.
        assert!(remote.watch_from(&running("b"), "n".into(), 3, recorder().1));
        remote.drop_lost_monitors(|_| true, Duration::ZERO);
        assert!(remote.monitored().is_empty());
    }
}
