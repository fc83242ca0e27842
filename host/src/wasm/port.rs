//! The one door out of an instance: what a guest's `runtime` imports may ask
//! of the rest of the host. Each instance's store holds a `Port` for its
//! child and nothing else of the host (WASI and outbound HTTP aside, which
//! the plugin's config limits). The supervisor layer implements it; this
//! layer never sees the registry, the supervisor or the state database.

use crate::types::{CallError, ChildError, ChildSpec, StartError};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::AbortHandle;

/// What one instance may ask of the host, on behalf of its child.
pub(crate) trait Port: Send + Sync + 'static {
    /// The child's registry id.
    fn id(&self) -> &Arc<str>;

    /// Calls child `to` and waits at most `timeout` for the reply.
    fn call(
        &self,
        to: &str,
        msg: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Vec<u8>, CallError>>;

    /// Queues `msg` for child `to`.
    fn cast(&self, to: &str, msg: Vec<u8>) -> Result<(), CallError>;

    /// Starts a dynamic child and resolves once its `init` returned.
    fn start_child(&self, spec: ChildSpec) -> BoxFuture<'static, Result<(), StartError>>;

    /// Stops child `id` and resolves once it is gone.
    fn stop_child(&self, id: &str) -> BoxFuture<'static, Result<(), ChildError>>;

    /// Delivers timer `timer` with `msg` to this instance after `delay`
    /// (unless aborted first); `timer` comes from [`Port::next_timer`].
    fn send_after(&self, timer: u64, delay: Duration, msg: Vec<u8>) -> AbortHandle;

    /// A timer reference never used before by this child.
    fn next_timer(&self) -> u64;

    /// A `down` for this instance when `id` exits (at once if it is not
    /// running).
    fn monitor(&self, id: &str);

    /// Publishes `msg` on `topic` to subscribers and event streams.
    fn publish(&self, topic: &str, msg: Bytes);

    /// Subscribes this instance to `topic`; returns the topic's interned
    /// name, which [`Port::unsubscribe`] takes back.
    fn subscribe(&self, topic: &str) -> Arc<str>;

    /// Ends this instance's subscriptions to `topics`.
    fn unsubscribe(&self, topics: &[Arc<str>]);
}
