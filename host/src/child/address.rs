//! The address of a child: what the registry maps an id to. It owns the
//! mailbox, so it outlives every instance that serves it: messages that wait
//! while an instance restarts or reloads go to the next instance.

use super::control::ControlSlot;
use super::deadline;
use super::mailbox::{Envelope, Refused, Sender};
use crate::types::{CallError, ChildSpec, ExitReason, Status};
use crate::wasm::{Info, Version};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime};
use tokio::sync::oneshot;

/// A watcher that wants a `down` when this child exits.
pub(crate) struct Monitor {
    pub watcher: Weak<Cell>,
    pub generation: u64,
}

/// The mutable, rarely read part of a child: what `ps` shows.
pub(crate) struct CellState {
    pub status: Status,
    pub version: Option<Arc<Version>>,
    pub restarts: u64,
    pub last_exit: Option<ExitReason>,
    pub started_at: SystemTime,
    pub backoff_until: Option<SystemTime>,
    pub monitors: Vec<Monitor>,
    /// Brought back from the state database at host start.
    pub restored: bool,
    /// The supervision group it belongs to, if any.
    pub group: Option<Arc<str>>,
}

/// A child's address: the registry entry that survives restarts.
pub struct Cell {
    pub(crate) id: Arc<str>,
    pub(crate) spec: ChildSpec,
    pub(crate) mailbox: Sender,
    pub(crate) control: ControlSlot,
    generation: AtomicU64,
    timer_ids: AtomicU64,
    state: Mutex<CellState>,
}

impl Cell {
    pub(crate) fn new(spec: ChildSpec, mailbox: Sender) -> Cell {
        Cell {
            id: spec.id.as_str().into(),
            spec,
            mailbox,
            control: ControlSlot::default(),
            generation: AtomicU64::new(0),
            timer_ids: AtomicU64::new(0),
            state: Mutex::new(CellState {
                status: Status::Starting,
                version: None,
                restarts: 0,
                last_exit: None,
                started_at: SystemTime::now(),
                backoff_until: None,
                monitors: Vec::new(),
                restored: false,
                group: None,
            }),
        }
    }

    /// The registry id.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, CellState> {
        // Every critical section is a few assignments; a panic inside one
        // cannot leave the state half-written in a way that matters.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current (or last) instance's generation. A restart (not a
    /// reload) starts a new one; timers, monitors and subscriptions belong
    /// to one.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub(crate) fn next_generation(&self) -> u64 {
        self.generation.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Timer references are unique per child, across its instances, so a
    /// stale timer message can never pass for a live timer.
    pub(crate) fn next_timer_id(&self) -> u64 {
        self.timer_ids.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Sends a request and waits for the reply, at most `timeout`; a late
    /// reply is dropped.
    pub async fn call(&self, msg: Vec<u8>, timeout: Duration) -> Result<Vec<u8>, CallError> {
        let (reply, answer) = oneshot::channel();
        self.post(Envelope::Call { msg, reply })?;
        // Cells are heap allocations of a few hundred bytes: the address
        // above its low bits spreads callees over the shards.
        let shard = (self as *const Cell as usize) >> 8;
        match deadline::within(answer, timeout, shard).await {
            Some(Ok(answer)) => answer,
            Some(Err(_)) => Err(CallError::Failed(
                "the child was stopped before it handled the message".into(),
            )),
            None => Err(CallError::Timeout),
        }
    }

    /// Queues a message that expects no reply.
    pub fn cast(&self, msg: Vec<u8>) -> Result<(), CallError> {
        self.post(Envelope::Cast { msg })
    }

    fn post(&self, envelope: Envelope) -> Result<(), CallError> {
        self.mailbox.try_send(envelope).map_err(|e| match e {
            Refused::Full => CallError::MailboxFull,
            Refused::Closed => CallError::NotFound,
        })
    }

    /// Queues a runtime notification. Notifications are never dropped for a
    /// full mailbox.
    pub(crate) fn post_info(&self, generation: u64, info: Info) {
        self.mailbox
            .send_notification(Envelope::Info { generation, info });
    }

    /// Adds a monitor, or answers at once with `noproc` when no instance is
    /// running. Both happen under the state lock, so a monitor set while the
    /// child exits is never missed.
    pub(crate) fn monitor(&self, watcher: &Arc<Cell>, generation: u64) {
        let mut state = self.state();
        if matches!(state.status, Status::Running | Status::Starting) {
            // Drop monitors of earlier incarnations of the same watcher (they
            // died with it); one monitor per incarnation is enough, since a
            // `down` carries no reference to tell two apart.
            state.monitors.retain(|m| {
                m.watcher
                    .upgrade()
                    .is_some_and(|w| !Arc::ptr_eq(&w, watcher) || m.generation == generation)
            });
            let exists = state
                .monitors
                .iter()
                .any(|m| m.generation == generation && m.watcher.as_ptr() == Arc::as_ptr(watcher));
            if !exists {
                state.monitors.push(Monitor {
                    watcher: Arc::downgrade(watcher),
                    generation,
                });
            }
        } else {
            drop(state);
            watcher.post_info(
                generation,
                Info::Down {
                    id: self.id.clone(),
                    reason: ExitReason::Noproc,
                },
            );
        }
    }

    /// Records an exit: sets the new status and sends `down` to every
    /// monitor, atomically with respect to [`Cell::monitor`].
    pub(crate) fn exited(&self, reason: &ExitReason, status: Status) {
        let monitors = {
            let mut state = self.state();
            state.status = status;
            state.last_exit = Some(reason.clone());
            std::mem::take(&mut state.monitors)
        };
        for m in monitors {
            if let Some(watcher) = m.watcher.upgrade() {
                watcher.post_info(
                    m.generation,
                    Info::Down {
                        id: self.id.clone(),
                        reason: reason.clone(),
                    },
                );
            }
        }
    }

    pub(crate) fn set_status(&self, status: Status) {
        self.state().status = status;
    }
}

/// A handle to a child that stays valid across its restarts, like a name
/// registered with `{:via, Registry, ...}`.
#[derive(Clone)]
pub struct Address(pub(crate) Arc<Cell>);

impl Address {
    /// The child's id.
    pub fn id(&self) -> &str {
        self.0.id()
    }

    /// Sends a request and waits for the reply, at most `timeout`.
    pub async fn call(&self, msg: Vec<u8>, timeout: Duration) -> Result<Vec<u8>, CallError> {
        self.0.call(msg, timeout).await
    }

    /// Queues a message that expects no reply.
    pub fn cast(&self, msg: Vec<u8>) -> Result<(), CallError> {
        self.0.cast(msg)
    }

    /// Whether two addresses name the same child (the same start, not only
    /// the same id).
    pub fn same(&self, other: &Address) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl std::fmt::Debug for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Address({})", self.0.id)
    }
}
