//! Where a `durable_state` child's state is kept: the node's state database,
//! or, in a cluster, the cluster's store, where whichever node runs the
//! child next finds it and a node the child moved away from cannot write.

use super::Supervisor;
use super::durable::Durable;
use crate::child::Cell;
use crate::cluster::Cluster;
use crate::types::CheckpointError;
use futures_util::future::BoxFuture;
use std::sync::Arc;

/// The store a child's state goes to.
enum Home {
    Local(Arc<Durable>),
    Cluster(Arc<Cluster>),
}

impl Supervisor {
    /// Where `cell`'s state belongs, if anywhere: a dynamic child of a
    /// `durable_state` plugin, on a durable host or in a cluster.
    fn state_home(&self, cell: &Cell) -> Option<Home> {
        let wanted = self.config.plugin(&cell.spec.plugin).durable_state && cell.state().dynamic;
        if !wanted {
            return None;
        }
        match (&self.cluster, &self.durable) {
            (Some(cluster), _) => Some(Home::Cluster(cluster.clone())),
            (None, Some(durable)) => Some(Home::Local(durable.clone())),
            (None, None) => None,
        }
    }

    /// Stores `state` as the last state of child `cell`; resolves once it
    /// is durable. In a cluster, a write from a node the child moved away
    /// from is refused, and the child stops here.
    pub(crate) fn store_state(
        self: &Arc<Self>,
        cell: &Cell,
        state: Vec<u8>,
    ) -> BoxFuture<'static, Result<(), CheckpointError>> {
        let limits = self.config.plugin(&cell.spec.plugin);
        let refused = |e| Box::pin(std::future::ready(Err(e)));
        let Some(home) = self.state_home(cell) else {
            return refused(CheckpointError::NotDurable);
        };
        if state.len() > limits.max_state_kib as usize * 1024 {
            return refused(CheckpointError::TooLarge(limits.max_state_kib));
        }
        let (sup, id) = (self.clone(), cell.id.to_string());
        match home {
            Home::Local(durable) => {
                let write = durable.put_state(&id, state);
                Box::pin(async move {
                    write
                        .await
                        .map_err(|e| CheckpointError::Unavailable(format!("{e:#}")))
                })
            }
            Home::Cluster(cluster) => Box::pin(async move {
                let written = cluster.put_state(&id, state).await;
                if written == Err(CheckpointError::Moved) {
                    sup.moved_away(&id);
                }
                written
            }),
        }
    }

    /// A child's last stored state, if any; `Err` when the store cannot be
    /// read (the child does not start without a state it may have).
    pub(crate) fn stored_state(
        self: &Arc<Self>,
        cell: &Cell,
    ) -> BoxFuture<'static, Result<Option<Vec<u8>>, CheckpointError>> {
        let Some(home) = self.state_home(cell) else {
            return Box::pin(std::future::ready(Ok(None)));
        };
        let (sup, id) = (self.clone(), cell.id.to_string());
        Box::pin(async move {
            match home {
                Home::Local(durable) => tokio::task::spawn_blocking(move || durable.state(&id))
                    .await
                    .map_err(|e| CheckpointError::Unavailable(e.to_string()))?
                    .map_err(|e| CheckpointError::Unavailable(format!("{e:#}"))),
                Home::Cluster(cluster) => {
                    let state = cluster.state(&id).await;
                    if state == Err(CheckpointError::Moved) {
                        sup.moved_away(&id);
                    }
                    state
                }
            }
        })
    }

    /// Drops a child's stored state (its record stays).
    pub(crate) fn forget_state(self: &Arc<Self>, cell: &Cell) -> BoxFuture<'static, ()> {
        let Some(home) = self.state_home(cell) else {
            return Box::pin(std::future::ready(()));
        };
        let id = cell.id.to_string();
        Box::pin(async move {
            let forgotten = match home {
                Home::Local(durable) => durable
                    .remove_state(&id)
                    .await
                    .map_err(|e| CheckpointError::Unavailable(format!("{e:#}"))),
                Home::Cluster(cluster) => cluster.clear_state(&id).await,
            };
            if let Err(e) = forgotten {
                tracing::error!(child = %id, "cannot forget its stored state: {e}");
            }
        })
    }

    /// Child `id` runs on another node now (its claim moved on while this
    /// node could not tell, e.g. while it was paused): it stops here. Its
    /// record here is forgotten; the claim is not this node's to give up.
    pub(crate) fn moved_away(self: &Arc<Self>, id: &str) {
        tracing::error!(
            child = id,
            "the child's claim moved to another node while this node could not tell; \
             stopping it here"
        );
        let (sup, id) = (self.clone(), id.to_string());
        // This node's copy only: a stop by id would go to the node that
        // holds the claim now once the copy here is gone.
        tokio::spawn(async move {
            let _ = sup.stop_here(&id).await;
        });
    }
}
