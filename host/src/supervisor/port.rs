//! The port each instance reaches the host by ([`Port`]): its child's own
//! address, for timers, monitors and subscriptions, and the supervisor, for
//! finding, starting and stopping other children.

use super::Supervisor;
use crate::child::Cell;
use crate::types::{CallError, ChildError, ChildSpec, ExitReason, StartError};
use crate::wasm::{Info, Port};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use std::sync::Arc;
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

    fn call(
        &self,
        to: &str,
        msg: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Vec<u8>, CallError>> {
        let target = self.sup.registry.get(to);
        Box::pin(async move {
            match target {
                Some(target) => target.call(msg, timeout).await,
                None => Err(CallError::NotFound),
            }
        })
    }

    fn cast(&self, to: &str, msg: Vec<u8>) -> Result<(), CallError> {
        match self.sup.registry.get(to) {
            Some(target) => target.cast(msg),
            None => Err(CallError::NotFound),
        }
    }

    fn start_child(&self, spec: ChildSpec) -> BoxFuture<'static, Result<(), StartError>> {
        let sup = self.sup.clone();
        Box::pin(async move { sup.start_child(spec).await.map(|_| ()) })
    }

    fn stop_child(&self, id: &str) -> BoxFuture<'static, Result<(), ChildError>> {
        let (sup, id) = (self.sup.clone(), id.to_string());
        Box::pin(async move { sup.stop_child(&id).await })
    }

    fn send_after(&self, timer: u64, delay: Duration, msg: Vec<u8>) -> AbortHandle {
        let (cell, generation) = (self.cell.clone(), self.generation);
        let task = tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            cell.post_info(generation, Info::Timer { timer, msg });
        });
        task.abort_handle()
    }

    fn next_timer(&self) -> u64 {
        self.cell.next_timer_id()
    }

    fn monitor(&self, id: &str) {
        match self.sup.registry.get(id) {
            Some(target) => target.monitor(&self.cell, self.generation),
            None => self.cell.post_info(
                self.generation,
                Info::Down {
                    id: id.into(),
                    reason: ExitReason::Noproc,
                },
            ),
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
}
