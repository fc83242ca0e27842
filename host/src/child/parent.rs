//! What a child's task asks of its supervisor and reports to it. The
//! supervisor layer implements [`Parent`] (for a dynamic child, for a
//! group's member); the child layer knows nothing above it.

use super::address::Cell;
use crate::types::{CheckpointError, ExitReason};
use crate::wasm::Port;
use futures_util::future::BoxFuture;
use std::sync::Arc;
use std::time::Duration;

/// What a child does after its instance exited on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Start a new instance now.
    Restart,
    /// Start a new instance after this delay (restart intensity exceeded).
    Backoff(Duration),
    /// Stay down, `failed`, until an operator or a reload revives it.
    Fail,
    /// Stay down until its group says what to do.
    Hold,
    /// Not restarted: remove the child and free its id.
    Remove,
}

/// How a child came to be, which decides what a failed first start means.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Origin {
    /// A dynamic start: if the first start fails, the child never existed.
    Started,
    /// A config child: it exists whatever its first start does (a failure
    /// is an exit like any other).
    Config,
    /// Brought back from the state database: it exists whatever its first
    /// start does, and a child that was `failed` comes back `failed`.
    Restored { failed: Option<ExitReason> },
}

/// A child's supervisor, as the child sees it.
pub(crate) trait Parent: Send + Sync + 'static {
    /// The narrow handle a new instance of `cell`, incarnation `generation`,
    /// gets for its imports.
    fn port(&self, cell: &Arc<Cell>, generation: u64) -> Box<dyn Port>;

    /// An instance exited on its own after running for `uptime`.
    fn exited(&mut self, cell: &Cell, reason: &ExitReason, uptime: Duration) -> Decision;

    /// An operator or a reload brought back a child that was down.
    fn revived(&mut self, cell: &Cell, was_failed: bool);

    /// The child is gone for good: free its id, forget it.
    fn removed(&self, cell: &Arc<Cell>) -> BoxFuture<'static, ()>;

    /// The restart intensity window: a restart from a checkpoint that traps
    /// again within it drops the checkpoint.
    fn window(&self) -> Duration;

    /// Whether the host is stopping (a `durable_state` child then stores
    /// its state before it stops).
    fn host_stopping(&self) -> bool {
        false
    }

    /// Stores the child's state durably; resolves once it is on disk.
    fn store_state(
        &self,
        cell: &Arc<Cell>,
        state: Vec<u8>,
    ) -> BoxFuture<'static, Result<(), CheckpointError>> {
        let _ = (cell, state);
        Box::pin(std::future::ready(Err(CheckpointError::NotDurable)))
    }

    /// Forgets the child's stored state (its record stays); resolves once
    /// that is on disk.
    fn forget_state(&self, cell: &Arc<Cell>) -> BoxFuture<'static, ()> {
        let _ = cell;
        Box::pin(std::future::ready(()))
    }

    /// The child's last stored state, if it has one; `Err` when the store
    /// cannot say.
    fn stored_state(
        &self,
        cell: &Arc<Cell>,
    ) -> BoxFuture<'static, Result<Option<Vec<u8>>, CheckpointError>> {
        let _ = cell;
        Box::pin(std::future::ready(Ok(None)))
    }
}
