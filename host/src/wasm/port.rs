//! The one door out of an instance: what a guest's `runtime` imports may ask
//! of the rest of the host. Each incarnation holds a `Port` for its child
//! and nothing else of the host (WASI and outbound HTTP aside, which the
//! plugin's config limits). The supervisor layer implements it; this layer
//! never sees the registry, the supervisor or the state database.

use super::info::Info;
use crate::types::{CallError, CheckpointError, ChildError, ChildSpec, StartError, StartOutcome};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::AbortHandle;

/// What one incarnation may ask of the host, on behalf of its child.
pub(crate) trait Port: Send + Sync + 'static {
    /// The child's registry id.
    fn id(&self) -> &Arc<str>;

    /// The incarnation this port serves.
    fn generation(&self) -> u64;

    /// A reference (timer, monitor, reply-to, request) never used before by
    /// this child.
    fn next_id(&self) -> u64;

    /// Calls child `to` and waits at most `timeout` for the reply.
    fn call(
        &self,
        to: &str,
        msg: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Vec<u8>, CallError>>;

    /// Queues `msg` for child `to`.
    fn cast(&self, to: &str, msg: Vec<u8>) -> BoxFuture<'static, Result<(), CallError>>;

    /// Starts a dynamic child and resolves once its `init` returned.
    fn start_child(&self, spec: ChildSpec) -> BoxFuture<'static, Result<StartOutcome, StartError>>;

    /// Stops child `id` and resolves once it is gone.
    fn stop_child(&self, id: &str) -> BoxFuture<'static, Result<(), ChildError>>;

    /// Runs `info` on a task of its own and delivers what it resolves to as
    /// a notification to this incarnation (timers, HTTP responses). Aborting
    /// the task cancels the delivery.
    fn deliver_later(&self, info: BoxFuture<'static, Info>) -> AbortHandle;

    /// A `down` with `reference` for this incarnation when `id` exits (at
    /// once if it is not running).
    fn monitor(&self, id: &str, reference: u64);

    /// Removes the monitor `reference` of `id`, and a `down` for it that
    /// waits in this child's mailbox; true when the monitor was still set.
    fn demonitor(&self, id: &str, reference: u64) -> bool;

    /// Links this incarnation with child `id`'s current one, both ways
    /// (async: the child may run on another node of a cluster).
    fn link(&self, id: &str) -> BoxFuture<'static, Result<(), CallError>>;

    /// Removes the link with `id`, both ways, if there is one.
    fn unlink(&self, id: &str);

    /// Whether exit signals from linked children arrive as notifications
    /// instead of ending this incarnation.
    fn trap_exits(&self, on: bool);

    /// Publishes `msg` on `topic` to subscribers and event streams.
    fn publish(&self, topic: &str, msg: Bytes);

    /// Subscribes this incarnation to `topic`; returns the topic's interned
    /// name, which [`Port::unsubscribe`] takes back.
    fn subscribe(&self, topic: &str) -> Arc<str>;

    /// Ends this incarnation's subscriptions to `topics`.
    fn unsubscribe(&self, topics: &[Arc<str>]);

    /// Stores `state` as the child's checkpoint, durably; resolves once it
    /// is on disk.
    fn checkpoint(&self, state: Vec<u8>) -> BoxFuture<'static, Result<(), CheckpointError>>;
}
