//! The address of a child: what the registry maps an id to. It owns the
//! mailbox, so it outlives every instance that serves it: messages that wait
//! while an instance restarts or reloads go to the next instance.

use crate::catalog::Version;
use crate::control::ControlSlot;
use crate::mailbox::{Refused, Sender};
use crate::types::{CallError, ChildSpec, ExitReason, Status};
use bytes::Bytes;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime};
use tokio::sync::oneshot;

/// Woken at every epoch tick (see `engine::start_epoch_ticker`). A call
/// waits on it before it registers a timer: a tokio timer per call costs a
/// lock on the timer wheel that the parking workers contend for, and wakes
/// the worker parked on the timer driver whenever the wheel was empty. The
/// tick runs while any child task runs, since each holds the engine, so a
/// call that is still waiting at a tick always gets its own timer. Sharded
/// by callee, so that concurrent callers do not contend for one waiter list.
pub(crate) static CALL_TICK: [tokio::sync::Notify; TICK_SHARDS] =
    [const { tokio::sync::Notify::const_new() }; TICK_SHARDS];
const TICK_SHARDS: usize = 16;

/// What a caller waits on.
pub(crate) type ReplyTx = oneshot::Sender<Result<Vec<u8>, CallError>>;

/// One entry of a mailbox.
pub(crate) enum Envelope {
    /// A request; the reply goes to `reply`.
    Call { msg: Vec<u8>, reply: ReplyTx },
    /// A message without a reply.
    Cast { msg: Vec<u8> },
    /// A runtime notification for instance generation `generation` only:
    /// timers, monitors and subscriptions die with the instance that made
    /// them, so a notification for an earlier instance is dropped.
    Info { generation: u64, info: InfoMsg },
}

/// A runtime notification.
pub(crate) enum InfoMsg {
    Timer { timer: u64, msg: Vec<u8> },
    Down { id: Arc<str>, reason: ExitReason },
    Event { topic: Arc<str>, msg: Bytes },
}

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
    /// How the other instances ask for this child's idle stack, with
    /// `[engine] stack_per_callback` (`stacks.rs`); also for the callers
    /// that run its calls (`direct.rs`).
    pub(crate) lease: std::sync::OnceLock<Arc<crate::stacks::Lease>>,
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
            lease: std::sync::OnceLock::new(),
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

    /// The spec it was started with.
    pub fn spec(&self) -> &ChildSpec {
        &self.spec
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, CellState> {
        // Every critical section is a few assignments; a panic inside one
        // cannot leave the state half-written in a way that matters.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new incarnation: a restart (not a reload) starts one. Timers,
    /// monitors and subscriptions belong to an incarnation.
    /// The current (or last) instance's generation.
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

    /// Sends a request and waits for the reply, at most `timeout`.
    pub async fn call(&self, msg: Vec<u8>, timeout: Duration) -> Result<Vec<u8>, CallError> {
        self.call_within(msg, Some(timeout)).await
    }

    /// A call that waits `timeout` at most, or (the benchmark's A/B of the
    /// per-call timer) as long as it takes.
    pub(crate) async fn call_within(
        &self,
        msg: Vec<u8>,
        timeout: Option<Duration>,
    ) -> Result<Vec<u8>, CallError> {
        let (reply, mut rx) = oneshot::channel();
        self.post(Envelope::Call { msg, reply })?;
        match self.within(Pin::new(&mut rx), timeout).await {
            Some(Ok(answer)) => answer,
            Some(Err(_)) => Err(CallError::Failed(
                "the child was stopped before it handled the message".into(),
            )),
            None => Err(CallError::Timeout),
        }
    }

    /// Waits for `answer`, at most `timeout` (`None` once it passed).
    pub(crate) async fn within<F: Future + ?Sized>(
        &self,
        mut answer: Pin<&mut F>,
        timeout: Option<Duration>,
    ) -> Option<F::Output> {
        let Some(timeout) = timeout else {
            return Some(answer.await);
        };
        // Most calls are answered within microseconds. Until the next epoch
        // tick a call waits on the tick, which every pending call shares,
        // and only then on a timer of its own.
        let started = std::time::Instant::now();
        let first = tokio::select! {
            biased;
            answer = answer.as_mut() => Some(answer),
            () = self.tick().notified() => None,
        };
        match first {
            Some(answer) => Some(answer),
            None => {
                let left = timeout.saturating_sub(started.elapsed());
                tokio::time::timeout(left, answer).await.ok()
            }
        }
    }

    fn tick(&self) -> &'static tokio::sync::Notify {
        // Cells are heap allocations of a few hundred bytes: the address
        // above the low bits spreads them over the shards.
        &CALL_TICK[(self as *const Cell as usize >> 8) % TICK_SHARDS]
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
    pub(crate) fn post_info(&self, generation: u64, info: InfoMsg) {
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
                InfoMsg::Down {
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
                    InfoMsg::Down {
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
