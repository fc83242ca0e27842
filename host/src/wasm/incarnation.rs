//! One incarnation of a child: what it set up, from a start to its exit.
//! An instance holds its child's incarnation while it serves; a reload that
//! continues the child moves the incarnation to the new instance, and an
//! exit (or a reload that starts the child anew) ends it.

use super::port::Port;
use crate::types::CallError;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::oneshot;
use tokio::task::AbortHandle;

/// What one incarnation may hold at once of timers, monitors, unanswered
/// calls and HTTP requests each; one more kills it.
pub(crate) const MAX_PENDING: usize = 10_000;

/// Where a call's answer goes.
pub(crate) type ReplyTx = oneshot::Sender<Result<Vec<u8>, CallError>>;

/// What one incarnation set up: its port, timers, subscriptions, monitors,
/// calls waiting for a deferred reply, and HTTP requests in flight.
pub(crate) struct Incarnation {
    pub(super) port: Box<dyn Port>,
    /// Pending timers, by reference.
    pub(super) timers: HashMap<u64, AbortHandle>,
    /// Subscribed topics (interned by the port).
    pub(super) subscriptions: Vec<Arc<str>>,
    /// Active monitors: reference → the monitored id.
    pub(super) monitors: HashMap<u64, Arc<str>>,
    /// Calls not answered yet, by reply-to.
    pub(super) replies: HashMap<u64, ReplyTx>,
    /// HTTP requests in flight, by id.
    pub(super) requests: HashMap<u64, AbortHandle>,
}

impl Incarnation {
    /// A new incarnation, reaching the host through `port`.
    pub(crate) fn new(port: Box<dyn Port>) -> Box<Incarnation> {
        Box::new(Incarnation {
            port,
            timers: HashMap::new(),
            subscriptions: Vec::new(),
            monitors: HashMap::new(),
            replies: HashMap::new(),
            requests: HashMap::new(),
        })
    }

    /// The incarnation's number, which notifications carry.
    pub(crate) fn generation(&self) -> u64 {
        self.port.generation()
    }

    /// Whether it owes something that needs its instance: an answer to a
    /// deferred call, or an HTTP response to take.
    pub(crate) fn owes_work(&self) -> bool {
        !self.replies.is_empty() || !self.requests.is_empty()
    }

    /// Whether it holds nothing at all (a hibernating child then keeps no
    /// incarnation, and gets a fresh one of the same number at its wake).
    pub(crate) fn is_empty(&self) -> bool {
        self.timers.is_empty()
            && self.subscriptions.is_empty()
            && self.monitors.is_empty()
            && self.replies.is_empty()
            && self.requests.is_empty()
    }

    /// Ends the incarnation: timers and requests are cancelled, its
    /// subscriptions and monitors end, and every call still waiting gets
    /// `error`.
    pub(crate) fn end(mut self, error: &CallError) {
        self.finish(error);
    }

    fn finish(&mut self, error: &CallError) {
        for (_, task) in self.timers.drain().chain(self.requests.drain()) {
            task.abort();
        }
        self.port
            .unsubscribe(&std::mem::take(&mut self.subscriptions));
        for (reference, id) in self.monitors.drain() {
            self.port.demonitor(&id, reference);
        }
        for (_, reply) in self.replies.drain() {
            let _ = reply.send(Err(error.clone()));
        }
    }
}

impl Drop for Incarnation {
    /// An incarnation the child's task did not end (its task went away with
    /// the runtime) still cancels and releases what it holds.
    fn drop(&mut self) {
        self.finish(&CallError::Failed("the child went away".into()));
    }
}
