//! Monitors across the nodes of a cluster. A guest's `monitor` of an id
//! that runs on another node is kept here, on the watcher's node, under a
//! key of its own, and set on the child's node for that key; the child's
//! node tells this one the exit reason. When the other node is lost (its
//! heartbeat gone, or it cannot be reached), the `down` fires here with
//! `noconnection`, as in Erlang.

use super::Supervisor;
use crate::child::Cell;
use crate::cluster::Op;
use crate::types::ExitReason;
use crate::wasm::Info;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// A monitor of a child on another node, as the watcher's node keeps it.
struct Watch {
    node: String,
    id: Arc<str>,
    watcher: Weak<Cell>,
    generation: u64,
    reference: u64,
}

/// This node's monitors of children on other nodes, by key.
#[derive(Default)]
pub(crate) struct RemoteWatches {
    next: AtomicU64,
    watches: Mutex<HashMap<u64, Watch>>,
}

impl RemoteWatches {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Watch>> {
        self.watches.lock().unwrap_or_else(|p| p.into_inner())
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
            if let Some(watch) = sup.remote.lock().remove(&key) {
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

    /// Fires `noconnection` for every monitor of a child on a node that
    /// `live` says is gone, and forgets those whose watcher is gone.
    pub(crate) fn remote_nodes_lost(&self, live: impl Fn(&str) -> bool) {
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
    }
}
