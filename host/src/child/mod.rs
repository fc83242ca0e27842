//! Layer 3, one child: its address (the registry entry that survives
//! restarts), its mailbox and supervision signals, and its task. The task
//! owns the mailbox for the child's whole life and each instance for the
//! instance's whole life: every message reaches the instance through the
//! mailbox, one at a time. It reports every exit to its [`Parent`] and
//! carries out the decision (restart, back off, fail, hold, remove).

mod address;
mod control;
mod deadline;
mod mailbox;
mod parent;

pub use address::Address;
pub(crate) use address::Cell;
pub(crate) use control::Control;
pub(crate) use deadline::tick;
pub(crate) use mailbox::{Envelope, Receiver, mailbox};
pub(crate) use parent::{Decision, Origin, Parent};

use crate::events::{Event, EventBus};
use crate::metrics::Metrics;
use crate::types::{CallError, ExitReason, StartError, Status};
use crate::wasm::{Instance, StartFailure, Version, Wasm};
use control::ControlSlot;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::oneshot;

/// What every child's task uses: the wasm side, the event stream, the
/// counters, and the count of running tasks.
pub(crate) struct Env {
    pub(crate) wasm: Wasm,
    pub(crate) events: EventBus,
    pub(crate) metrics: Metrics,
    pub(crate) tasks: Arc<Tasks>,
}

/// How a running instance ended.
enum Ended {
    /// On its own (trap, kill, guest stop): the parent decides.
    Exit(ExitReason),
    /// An operator stopped the child: remove it.
    Stop(oneshot::Sender<()>),
    /// An operator restarted the child: start a new instance now, and
    /// answer once it started or failed to.
    Restart(oneshot::Sender<()>),
    /// The plugin's file was removed: wait for it.
    Suspend(oneshot::Sender<()>),
    /// Its supervision group stopped it: stay down until released.
    Held(Status, oneshot::Sender<()>),
}

/// What a child that is down (backoff, failed, waiting, held) does next.
enum Wake {
    Start,
    /// Its group released it, or an operator restarted it: start, and
    /// tell whoever asked once the start was tried.
    Release(oneshot::Sender<()>),
    Removed,
}

/// How a hot reload of one instance went.
enum Upgrade {
    /// It already runs that version.
    Unchanged,
    /// The new instance serves, with the old one's state.
    Done(Instance),
    /// The new version failed; the old instance goes on, untouched.
    Kept(String),
    /// The old instance died (its snapshot trapped, or a kill arrived).
    Died(ExitReason),
}

/// Runs `work` unless a kill arrives first (then `Err(reason)`). A kill
/// drops the guest call in flight, which unwinds the guest; the instance is
/// then discarded.
async fn unless_killed<T>(
    control: &ControlSlot,
    work: impl Future<Output = T>,
) -> Result<T, String> {
    let work = pin!(work);
    tokio::select! {
        biased;
        reason = control.killed() => Err(reason),
        result = work => Ok(result),
    }
}

/// [`unless_killed`] for guest calls: a kill is one more way to exit.
async fn guarded<T>(
    control: &ControlSlot,
    work: impl Future<Output = Result<T, ExitReason>>,
) -> Result<T, ExitReason> {
    unless_killed(control, work)
        .await
        .unwrap_or_else(|reason| Err(ExitReason::Killed(reason)))
}

pub(crate) struct Child {
    env: Arc<Env>,
    cell: Arc<Cell>,
    mailbox: Receiver,
    parent: Box<dyn Parent>,
    /// Counts this task among the running ones until it ends.
    _task: TaskGuard,
}

impl Child {
    /// Starts the child's task. The answer comes once its first start was
    /// tried: `Err` only for an [`Origin::Started`] child whose first start
    /// failed, which then never existed.
    pub(crate) fn spawn(
        env: &Arc<Env>,
        cell: Arc<Cell>,
        mailbox: Receiver,
        origin: Origin,
        parent: Box<dyn Parent>,
    ) -> oneshot::Receiver<Result<(), StartError>> {
        let (ready, started) = oneshot::channel();
        let child = Child {
            _task: env.tasks.enter(),
            env: env.clone(),
            cell,
            mailbox,
            parent,
        };
        tokio::spawn(child.run(origin, ready));
        started
    }

    /// The child's life: starts, serving, restarts, until it is removed.
    async fn run(mut self, origin: Origin, ready: oneshot::Sender<Result<(), StartError>>) {
        // Told once the first start was tried; `strict`: a failed first
        // start means the child never existed.
        let strict = origin == Origin::Started;
        let mut ready = Some(ready);
        // Told once a start an operator or the group asked for was tried.
        let mut attempted = None;
        if let Origin::Restored {
            failed: Some(reason),
        } = origin
        {
            self.cell.exited(&reason, Status::Failed);
            tell(&mut ready, Ok(()));
            match self.wait(None).await {
                Wake::Removed => return,
                Wake::Start => {}
                Wake::Release(done) => attempted = Some(done),
            }
        }
        let mut first = true;
        loop {
            let Some(version) = self.env.wasm.catalog.current(&self.cell.spec.plugin) else {
                if strict && ready.is_some() {
                    let error = StartError::UnknownPlugin(self.cell.spec.plugin.clone());
                    return self.abandon(&mut ready, error);
                }
                // The plugin's file is gone; wait for it (or an operator).
                self.cell.set_status(Status::Waiting);
                tell(&mut ready, Ok(()));
                tell(&mut attempted, ());
                match self.wait(None).await {
                    Wake::Start => continue,
                    Wake::Release(done) => {
                        attempted = Some(done);
                        continue;
                    }
                    Wake::Removed => return,
                }
            };
            let started = self.start(version).await;
            let (ended, uptime) = match started {
                Ok(Ok(instance)) => {
                    self.running(&instance.version, first);
                    first = false;
                    tell(&mut ready, Ok(()));
                    tell(&mut attempted, ());
                    let up = Instant::now();
                    let ended = self.serve(instance).await;
                    (ended, up.elapsed())
                }
                Ok(Err(failure)) => {
                    if strict && ready.is_some() {
                        let error = match failure {
                            StartFailure::Init(m) => StartError::InitFailed(m),
                            StartFailure::Unavailable(m) => StartError::Unavailable(m),
                        };
                        return self.abandon(&mut ready, error);
                    }
                    let (StartFailure::Init(m) | StartFailure::Unavailable(m)) = failure;
                    (Ended::Exit(ExitReason::InitFailed(m)), Duration::ZERO)
                }
                Err(killed) => {
                    let reason = ExitReason::Killed(killed);
                    if strict && ready.is_some() {
                        return self
                            .abandon(&mut ready, StartError::InitFailed(reason.to_string()));
                    }
                    (Ended::Exit(reason), Duration::ZERO)
                }
            };
            tell(&mut ready, Ok(()));
            tell(&mut attempted, ());
            let wake = match ended {
                Ended::Stop(done) => {
                    self.cell.exited(&ExitReason::Shutdown, Status::Restarting);
                    self.remove().await;
                    let _ = done.send(());
                    return;
                }
                Ended::Restart(done) => {
                    self.cell.exited(&ExitReason::Shutdown, Status::Restarting);
                    self.parent.revived(&self.cell, false);
                    // Answered once the new instance has started (or its
                    // start failed), as OTP's `restart_child` returns.
                    Wake::Release(done)
                }
                Ended::Suspend(done) => {
                    self.cell.exited(&ExitReason::Shutdown, Status::Waiting);
                    let _ = done.send(());
                    Wake::Start
                }
                Ended::Held(status, done) => {
                    self.cell.exited(&ExitReason::Shutdown, status);
                    self.announce_exit(&ExitReason::Shutdown);
                    let _ = done.send(());
                    self.held().await
                }
                Ended::Exit(reason) => self.after_exit(reason, uptime).await,
            };
            match wake {
                Wake::Removed => return,
                Wake::Start => {}
                Wake::Release(done) => attempted = Some(done),
            }
        }
    }

    /// A new instance of `version`, unless a kill cuts it short (then
    /// `Err(reason)`).
    async fn start(
        &mut self,
        version: Arc<Version>,
    ) -> Result<Result<Instance, StartFailure>, String> {
        let generation = self.cell.next_generation();
        let port = self.parent.port(&self.cell, generation);
        let args = self.cell.spec.args.to_vec();
        let start = Instance::start(&self.env.wasm.engine, version, port, generation, &args);
        unless_killed(&self.cell.control, start).await
    }

    /// The first start of a child that must start or never exist failed:
    /// the starter hears why (and frees the id); the task ends.
    fn abandon(
        &self,
        ready: &mut Option<oneshot::Sender<Result<(), StartError>>>,
        error: StartError,
    ) {
        self.cell.control.close();
        tell(ready, Err(error));
    }

    /// Marks the child running on `version` and announces it.
    fn running(&self, version: &Arc<Version>, first: bool) {
        let restarts = {
            let mut state = self.cell.state();
            state.status = Status::Running;
            state.started_at = SystemTime::now();
            state.backoff_until = None;
            state.version = Some(version.clone());
            if !first {
                state.restarts += 1;
            }
            state.restarts
        };
        let (id, version) = (self.cell.id.to_string(), version.hash.clone());
        if first {
            self.env.events.emit(Event::ChildStarted {
                id,
                plugin: self.cell.spec.plugin.clone(),
                version,
            });
        } else {
            self.env.metrics.restart();
            self.env.events.emit(Event::ChildRestarted {
                id,
                restarts,
                version,
            });
        }
    }

    fn announce_exit(&self, reason: &ExitReason) {
        self.env.metrics.exit(reason);
        tracing::info!(child = %self.cell.id, "exited: {reason}");
        self.env.events.emit(Event::ChildExited {
            id: self.cell.id.to_string(),
            reason: reason.clone(),
        });
    }

    /// An instance ended on its own: ask the parent and act on it.
    async fn after_exit(&mut self, reason: ExitReason, uptime: Duration) -> Wake {
        self.cell.exited(&reason, Status::Restarting);
        self.announce_exit(&reason);
        match self.parent.exited(&self.cell, &reason, uptime) {
            Decision::Restart => Wake::Start,
            Decision::Remove => {
                self.remove().await;
                Wake::Removed
            }
            Decision::Hold => self.held().await,
            Decision::Backoff(delay) => {
                {
                    let mut state = self.cell.state();
                    state.status = Status::Backoff;
                    state.backoff_until = Some(SystemTime::now() + delay);
                }
                tracing::warn!(child = %self.cell.id, "restart intensity exceeded; next restart in {delay:?}");
                self.env.events.emit(Event::ChildBackoff {
                    id: self.cell.id.to_string(),
                    delay_ms: delay.as_millis() as u64,
                    reason,
                });
                self.wait(Some(Instant::now() + delay)).await
            }
            Decision::Fail => {
                self.cell.set_status(Status::Failed);
                tracing::error!(child = %self.cell.id, "restart intensity exceeded; failed: {reason}");
                self.env.events.emit(Event::ChildFailed {
                    id: self.cell.id.to_string(),
                    reason,
                });
                self.wait(None).await
            }
        }
    }

    /// Serves the mailbox with `instance` until it ends. Supervision signals
    /// come first; a kill also interrupts the message being handled.
    async fn serve(&mut self, mut instance: Instance) -> Ended {
        loop {
            let next = tokio::select! {
                biased;
                control = self.cell.control.next() => Err(control),
                envelope = self.mailbox.recv() => Ok(envelope),
            };
            match next {
                Err(Control::Kill { reason }) => return Ended::Exit(ExitReason::Killed(reason)),
                Err(Control::Stop { done }) => {
                    self.terminate(&mut instance, &ExitReason::Shutdown).await;
                    return Ended::Stop(done);
                }
                Err(Control::Restart { done }) => {
                    self.terminate(&mut instance, &ExitReason::Shutdown).await;
                    return Ended::Restart(done);
                }
                Err(Control::Suspend { done }) => {
                    self.terminate(&mut instance, &ExitReason::Shutdown).await;
                    return Ended::Suspend(done);
                }
                Err(Control::Hold { status, done }) => {
                    self.terminate(&mut instance, &ExitReason::Shutdown).await;
                    return Ended::Held(status, done);
                }
                Err(Control::Release { done }) => {
                    let _ = done.send(());
                }
                Err(Control::Reload { version, done }) => {
                    match self.upgrade(&mut instance, version).await {
                        Upgrade::Unchanged => {
                            let _ = done.send(Ok(()));
                        }
                        Upgrade::Done(new) => {
                            instance = new;
                            let _ = done.send(Ok(()));
                        }
                        Upgrade::Kept(why) => {
                            let _ = done.send(Err(why));
                        }
                        Upgrade::Died(reason) => {
                            let _ = done.send(Err(format!("the old instance exited: {reason}")));
                            return Ended::Exit(reason);
                        }
                    }
                }
                // The cell holds the sender for as long as this task runs.
                Ok(None) => return Ended::Exit(ExitReason::Shutdown),
                Ok(Some(envelope)) => {
                    if let Err(reason) = self.dispatch(&mut instance, envelope).await {
                        return Ended::Exit(reason);
                    }
                    if let Some(reason) = instance.take_stop_request() {
                        self.terminate(&mut instance, &reason).await;
                        return Ended::Exit(reason);
                    }
                }
            }
        }
    }

    /// Moves this child to `version` (OTP's `code_change`): the mailbox waits
    /// meanwhile; the old instance's `snapshot()` goes to the new instance's
    /// `restore()` after its `init(args)`. Any failure of the new version
    /// leaves the old instance serving with its state.
    async fn upgrade(&mut self, old: &mut Instance, version: Arc<Version>) -> Upgrade {
        if old.version.hash == version.hash {
            return Upgrade::Unchanged;
        }
        let control = &self.cell.control;
        let state = match guarded(control, old.snapshot()).await {
            Ok(state) => state,
            Err(reason) => return Upgrade::Died(reason),
        };
        let port = self.parent.port(&self.cell, old.generation());
        let args = self.cell.spec.args.to_vec();
        let start = Instance::start(
            &self.env.wasm.engine,
            version.clone(),
            port,
            old.generation(),
            &args,
        );
        let mut new = match unless_killed(control, start).await {
            Ok(Ok(new)) => new,
            Ok(Err(StartFailure::Init(m) | StartFailure::Unavailable(m))) => {
                return Upgrade::Kept(format!("the new version did not start: {m}"));
            }
            Err(kill) => return Upgrade::Died(ExitReason::Killed(kill)),
        };
        if let Some(state) = state {
            let why = match unless_killed(control, new.restore(&state)).await {
                Ok(Ok(Ok(()))) => None,
                Ok(Ok(Err(refused))) => {
                    Some(format!("the new version refused the state: {refused}"))
                }
                Ok(Err(failed)) => Some(format!("the new version failed in restore: {failed}")),
                Err(kill) => {
                    new.discard_beside(old);
                    return Upgrade::Died(ExitReason::Killed(kill));
                }
            };
            if let Some(why) = why {
                new.discard_beside(old);
                return Upgrade::Kept(why);
            }
        }
        new.take_over(old);
        self.cell.state().version = Some(version);
        Upgrade::Done(new)
    }

    async fn dispatch(
        &mut self,
        instance: &mut Instance,
        envelope: Envelope,
    ) -> Result<(), ExitReason> {
        let control = &self.cell.control;
        match envelope {
            Envelope::Call { msg, reply } => {
                match guarded(control, instance.handle_call(&msg)).await {
                    Ok(out) => {
                        let _ = reply.send(Ok(out));
                        Ok(())
                    }
                    Err(reason) => {
                        let _ = reply.send(Err(reason.to_call_error()));
                        Err(reason)
                    }
                }
            }
            Envelope::Cast { msg } => guarded(control, instance.handle_cast(&msg)).await,
            Envelope::Info { generation, info } => {
                guarded(control, instance.handle_info(generation, info)).await
            }
        }
    }

    /// `terminate(reason)`, given `shutdown_ms` at most, and cut short by a
    /// kill.
    async fn terminate(&self, instance: &mut Instance, reason: &ExitReason) {
        let limit = Duration::from_millis(self.cell.spec.shutdown_ms.into());
        let work = unless_killed(&self.cell.control, instance.terminate(reason));
        if tokio::time::timeout(limit, work).await.is_err() {
            tracing::warn!(child = %self.cell.id, "terminate took longer than {limit:?}; killed");
        }
    }

    /// Waits while the child is down (backoff until `until`, or failed or
    /// waiting with no deadline). Calls are answered `failed` meanwhile when
    /// there is no deadline; with one, they wait for the restart.
    async fn wait(&mut self, until: Option<Instant>) -> Wake {
        let sleep = async {
            match until {
                Some(t) => tokio::time::sleep_until(t.into()).await,
                None => std::future::pending().await,
            }
        };
        let mut sleep = pin!(sleep);
        loop {
            tokio::select! {
                biased;
                control = self.cell.control.next() => match control {
                    Control::Stop { done } => {
                        self.remove().await;
                        let _ = done.send(());
                        return Wake::Removed;
                    }
                    Control::Restart { done } => {
                        self.revive();
                        return Wake::Release(done);
                    }
                    Control::Reload { done, .. } => {
                        self.revive();
                        let _ = done.send(Ok(()));
                        return Wake::Start;
                    }
                    // Already down; the plugin's current version (if any)
                    // is what the next start uses.
                    Control::Suspend { done } | Control::Hold { done, .. } => {
                        let _ = done.send(());
                    }
                    // Down for its own reasons (its plugin is gone): the
                    // group's order changes nothing.
                    Control::Release { done } => {
                        let _ = done.send(());
                    }
                    Control::Kill { .. } => {}
                },
                () = &mut sleep => return Wake::Start,
                envelope = self.mailbox.recv(), if until.is_none() => {
                    if let Some(Envelope::Call { reply, .. }) = envelope {
                        let state = self.cell.state();
                        let why = match &state.last_exit {
                            Some(exit) => format!("the child is {}: {exit}", state.status),
                            None => format!("the child is {}", state.status),
                        };
                        drop(state);
                        let _ = reply.send(Err(CallError::Failed(why)));
                    }
                }
            }
        }
    }

    /// Down, held by its group, until the group releases it. Calls wait for
    /// the restart, unless the group gave up (`failed`).
    async fn held(&mut self) -> Wake {
        loop {
            let failed = self.cell.state().status == Status::Failed;
            tokio::select! {
                biased;
                control = self.cell.control.next() => match control {
                    Control::Release { done } => return Wake::Release(done),
                    Control::Hold { status, done } => {
                        self.cell.set_status(status);
                        let _ = done.send(());
                    }
                    Control::Stop { done } => {
                        self.remove().await;
                        let _ = done.send(());
                        return Wake::Removed;
                    }
                    // An operator's order overrides the group's.
                    Control::Restart { done } => return Wake::Release(done),
                    // The next start uses the plugin's current version.
                    Control::Reload { done, .. } => {
                        let _ = done.send(Ok(()));
                    }
                    Control::Suspend { done } => {
                        let _ = done.send(());
                    }
                    Control::Kill { .. } => {}
                },
                envelope = self.mailbox.recv(), if failed => {
                    if let Some(Envelope::Call { reply, .. }) = envelope {
                        let group = self.cell.state().group.clone();
                        let why = format!("the child's group {} gave up", group.as_deref().unwrap_or(""));
                        let _ = reply.send(Err(CallError::Failed(why)));
                    }
                }
            }
        }
    }

    /// An operator or a reload brings a down child back.
    fn revive(&mut self) {
        let was_failed = self.cell.state().status == Status::Failed;
        self.parent.revived(&self.cell, was_failed);
    }

    /// The child is gone for good: its parent frees its id and forgets it.
    /// Queued calls are answered `failed` when this task ends and drops the
    /// mailbox; queued signals are released.
    async fn remove(&mut self) {
        self.parent.removed(&self.cell).await;
        for control in self.cell.control.close() {
            match control {
                Control::Stop { done }
                | Control::Restart { done }
                | Control::Suspend { done }
                | Control::Hold { done, .. }
                | Control::Release { done } => {
                    let _ = done.send(());
                }
                Control::Reload { done, .. } => {
                    let _ = done.send(Err("the child was removed".into()));
                }
                Control::Kill { .. } => {}
            }
        }
        tracing::info!(child = %self.cell.id, "removed");
        self.env.events.emit(Event::ChildRemoved {
            id: self.cell.id.to_string(),
        });
    }
}

/// Sends `value` on the channel in `slot`, if there is one still.
fn tell<T>(slot: &mut Option<oneshot::Sender<T>>, value: T) {
    if let Some(tx) = slot.take() {
        let _ = tx.send(value);
    }
}

/// Counts running tasks (children, groups), and wakes whoever waits for
/// none to be left.
#[derive(Default)]
pub(crate) struct Tasks {
    running: AtomicUsize,
    idle: tokio::sync::Notify,
}

/// One running task; dropping it ends it.
pub(crate) struct TaskGuard(Arc<Tasks>);

impl Tasks {
    pub(crate) fn enter(self: &Arc<Tasks>) -> TaskGuard {
        self.running.fetch_add(1, Ordering::AcqRel);
        TaskGuard(self.clone())
    }

    /// Resolves once no task is running.
    pub(crate) async fn idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.running.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        if self.0.running.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}
