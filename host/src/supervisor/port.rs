//! The port each incarnation reaches the host by ([`Port`]): its child's own
//! address, for notifications, monitors, links and subscriptions, and the
//! supervisor, for finding, starting and stopping other children.

use super::Supervisor;
use crate::child::Cell;
use crate::types::{CallError, CheckpointError, ChildError, ChildSpec, StartError, StartOutcome};
use crate::wasm::{Info, Port};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::task::AbortHandle;

pub(super) struct GuestPort {
    sup: Arc<Supervisor>,
    cell: Arc<Cell>,
    generation: u64,
}

impl GuestPort {
    pub(super) fn boxed(sup: &Arc<Supervisor>, cell: &Arc<Cell>, generation: u64) -> Box<dyn Port> {
        Box::new(GuestPort {
            sup: sup.clone(),
            cell: cell.clone(),
            generation,
        })
    }
}

impl Port for GuestPort {
    fn id(&self) -> &Arc<str> {
        &self.cell.id
    }

    fn generation(&self) -> u64 {
        self.generation
    }

    fn next_id(&self) -> u64 {
        self.cell.next_id()
    }

    fn call(
        &self,
        to: &str,
        msg: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Vec<u8>, CallError>> {
        match self.sup.registry.get(to) {
            Some(target) => Box::pin(async move { target.call(msg, timeout).await }),
            // On another node of the cluster, or nowhere.
            None => {
                let (sup, to) = (self.sup.clone(), to.to_string());
                Box::pin(async move { sup.call(&to, msg, timeout).await })
            }
        }
    }

    fn cast(&self, to: &str, msg: Vec<u8>) -> BoxFuture<'static, Result<(), CallError>> {
        match self.sup.registry.get(to) {
            Some(target) => Box::pin(std::future::ready(target.cast(msg))),
            None => {
                let (sup, to) = (self.sup.clone(), to.to_string());
                Box::pin(async move { sup.cast(&to, msg).await })
            }
        }
    }

    fn start_child(&self, spec: ChildSpec) -> BoxFuture<'static, Result<StartOutcome, StartError>> {
        let sup = self.sup.clone();
        Box::pin(async move {
            sup.start_child(spec).await.map(|cell| match cell {
                Some(_) => StartOutcome::Started,
                None => StartOutcome::Ignored,
            })
        })
    }

    fn stop_child(&self, id: &str) -> BoxFuture<'static, Result<(), ChildError>> {
        let (sup, id) = (self.sup.clone(), id.to_string());
        Box::pin(async move { sup.stop_child(&id).await })
    }

    fn deliver_later(&self, info: BoxFuture<'static, Info>) -> AbortHandle {
        let (cell, generation) = (self.cell.clone(), self.generation);
        let task = tokio::spawn(async move {
            let info = info.await;
            cell.post_info(generation, info);
        });
        task.abort_handle()
    }

    fn monitor(&self, id: &str, reference: u64) {
        match self.sup.registry.get(id) {
            Some(target) => target.monitor(&self.cell, self.generation, reference),
            None if self.sup.cluster.is_some() => {
                self.sup
                    .monitor_remote(&self.cell, self.generation, id, reference)
            }
            None => self.cell.post_info(
                self.generation,
                Info::Down {
                    reference,
                    id: id.into(),
                    reason: crate::types::ExitReason::Noproc,
                },
            ),
        }
    }

    fn demonitor(&self, id: &str, reference: u64) -> bool {
        let active = match self.sup.registry.get(id) {
            Some(target) => target.demonitor(&self.cell, reference),
            None => self.sup.demonitor_remote(&self.cell, reference),
        };
        // A `down` already sent waits in this child's own mailbox.
        self.cell.mailbox.remove_down(self.generation, reference);
        active
    }

    fn link(&self, id: &str) -> BoxFuture<'static, Result<(), CallError>> {
        match self.sup.registry.get(id) {
            Some(partner) => Box::pin(std::future::ready(
                self.cell.link(self.generation, &partner),
            )),
            None if self.sup.cluster.is_some() => {
                let (sup, cell, generation) =
                    (self.sup.clone(), self.cell.clone(), self.generation);
                let id = id.to_string();
                Box::pin(async move { sup.link_remote(&cell, generation, &id).await })
            }
            None => Box::pin(std::future::ready(Err(CallError::NotFound))),
        }
    }

    fn unlink(&self, id: &str) {
        match self.sup.registry.get(id) {
            Some(partner) => self.cell.unlink(self.generation, Some(&partner)),
            None => self.cell.unlink_remote(self.generation, id),
        }
    }

    fn trap_exits(&self, on: bool) {
        if self.cell.generation() == self.generation {
            self.cell.trap_exits.store(on, Ordering::Release);
        }
    }

    fn publish(&self, topic: &str, msg: Bytes) {
        self.sup.publish(topic, msg);
    }

    fn subscribe(&self, topic: &str) -> Arc<str> {
        self.sup
            .topics
            .subscribe(topic, &self.cell, self.generation)
    }

    fn unsubscribe(&self, topics: &[Arc<str>]) {
        self.sup
            .topics
            .unsubscribe(topics, Arc::as_ptr(&self.cell), self.generation);
    }

    fn checkpoint(&self, state: Vec<u8>) -> BoxFuture<'static, Result<(), CheckpointError>> {
        self.sup.store_state(&self.cell, state)
    }
}
