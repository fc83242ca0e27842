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
use crate::types::{CallError, ExitReason, StartError, StartOutcome, Status};
use crate::wasm::{Incarnation, Info, Init, Instance, StartFailure, Version, Wasm};
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
    /// The new instance serves: it continued the child, or started it anew
    /// (then maybe with a message for `handle-continue`).
    Done(Instance, Option<Vec<u8>>),
    /// The new version failed; the old instance goes on.
    Kept(String),
    /// The old instance died (its snapshot trapped, or a kill arrived).
    Died(ExitReason),
}

/// The answer to whoever started a child, once its first start was tried.
type Ready = oneshot::Sender<Result<StartOutcome, StartError>>;

/// Runs `work` unless a signal that ends incarnation `generation` arrives
/// first (a kill, or an exit signal it does not trap): then `Err` with the
/// exit. Dropping a guest call in flight unwinds the guest; the instance is
/// then discarded.
async fn interruptible<T>(
    cell: &Cell,
    generation: u64,
    work: impl Future<Output = T>,
) -> Result<T, ExitReason> {
    let work = pin!(work);
    tokio::select! {
        biased;
        reason = cell.control.interrupted(generation, &cell.trap_exits) => Err(reason),
        result = work => Ok(result),
    }
}

/// [`interruptible`] for guest calls: an interruption is one more exit.
async fn guarded<T>(
    cell: &Cell,
    generation: u64,
    work: impl Future<Output = Result<T, ExitReason>>,
) -> Result<T, ExitReason> {
    interruptible(cell, generation, work)
        .await
        .unwrap_or_else(Err)
}

pub(crate) struct Child {
    env: Arc<Env>,
    cell: Arc<Cell>,
    mailbox: Receiver,
    parent: Box<dyn Parent>,
    /// A config child: an `init` that returns `ignore` leaves it listed as
    /// `ignored` instead of removing it.
    config: bool,
    /// Counts this task among the running ones until it ends.
    _task: TaskGuard,
}

impl Child {
    /// Starts the child's task. The answer comes once its first start was
    /// tried: `Err` only for an [`Origin::Started`] child whose first start
    /// failed, which then never existed; `Ignored` when its `init` returned
    /// `ignore` (the child is then gone, unless it is a config child).
    pub(crate) fn spawn(
        env: &Arc<Env>,
        cell: Arc<Cell>,
        mailbox: Receiver,
        origin: Origin,
        parent: Box<dyn Parent>,
    ) -> oneshot::Receiver<Result<StartOutcome, StartError>> {
        let (ready, started) = oneshot::channel();
        let child = Child {
            _task: env.tasks.enter(),
            env: env.clone(),
            cell,
            mailbox,
            parent,
            config: origin == Origin::Config,
        };
        tokio::spawn(child.run(origin, ready));
        started
    }

    /// The child's life: starts, serving, restarts, until it is removed.
    async fn run(mut self, origin: Origin, ready: Ready) {
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
            tell(&mut ready, Ok(StartOutcome::Started));
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
                    return self.abandon(&mut ready, Err(error));
                }
                // The plugin's file is gone; wait for it (or an operator).
                self.cell.set_status(Status::Waiting);
                tell(&mut ready, Ok(StartOutcome::Started));
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
            let (ended, uptime) = match self.start(version).await {
                Ok(Ok((instance, Init::Ignore))) => {
                    let wake = self
                        .ignored(instance, &mut ready, strict, &mut attempted)
                        .await;
                    match wake {
                        Wake::Removed => return,
                        Wake::Start => continue,
                        Wake::Release(done) => {
                            attempted = Some(done);
                            continue;
                        }
                    }
                }
                Ok(Ok((instance, init))) => {
                    self.running(&instance.version, first);
                    first = false;
                    tell(&mut ready, Ok(StartOutcome::Started));
                    tell(&mut attempted, ());
                    let up = Instant::now();
                    let first_message = match init {
                        Init::Continue(msg) => Some(msg),
                        Init::Ready | Init::Ignore => None,
                    };
                    let ended = self.serve(instance, first_message).await;
                    (ended, up.elapsed())
                }
                Ok(Err(failure)) => {
                    if strict && ready.is_some() {
                        let error = match failure {
                            StartFailure::Init(m) => StartError::InitFailed(m),
                            StartFailure::Unavailable(m) => StartError::Unavailable(m),
                        };
                        return self.abandon(&mut ready, Err(error));
                    }
                    let (StartFailure::Init(m) | StartFailure::Unavailable(m)) = failure;
                    (Ended::Exit(ExitReason::InitFailed(m)), Duration::ZERO)
                }
                Err(reason) => {
                    if strict && ready.is_some() {
                        let error = StartError::InitFailed(reason.to_string());
                        return self.abandon(&mut ready, Err(error));
                    }
                    (Ended::Exit(reason), Duration::ZERO)
                }
            };
            tell(&mut ready, Ok(StartOutcome::Started));
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

    /// *Starts* the child on `version` (a new incarnation, then `init`),
    /// unless a kill cuts it short (then `Err` with the exit).
    async fn start(
        &mut self,
        version: Arc<Version>,
    ) -> Result<Result<(Instance, Init), StartFailure>, ExitReason> {
        let generation = self.cell.next_generation();
        let incarnation = Incarnation::new(self.parent.port(&self.cell, generation));
        let args = self.cell.spec.args.to_vec();
        let start = Instance::start(&self.env.wasm.engine, version, incarnation, &args);
        interruptible(&self.cell, generation, start).await
    }

    /// `init` returned `ignore`: a child being started for its starter is
    /// dropped before anyone saw it; a config child stays listed as
    /// `ignored` until an operator restarts it; any other is removed.
    async fn ignored(
        &mut self,
        instance: Instance,
        ready: &mut Option<Ready>,
        strict: bool,
        attempted: &mut Option<oneshot::Sender<()>>,
    ) -> Wake {
        let generation = self.cell.generation();
        instance.end(&CallError::Failed(
            "the child's init returned ignore".into(),
        ));
        self.cell.unlink(generation, None);
        tracing::info!(child = %self.cell.id, "init returned ignore");
        tell(attempted, ());
        if strict && ready.is_some() {
            self.abandon(ready, Ok(StartOutcome::Ignored));
            return Wake::Removed;
        }
        tell(ready, Ok(StartOutcome::Ignored));
        if self.config {
            self.cell.set_status(Status::Ignored);
            return self.wait(None).await;
        }
        self.cell.exited(&ExitReason::Normal, Status::Restarting);
        self.remove().await;
        Wake::Removed
    }

    /// The first start of a child that must start or never exist failed
    /// (or was ignored): the starter hears it (and frees the id); the task
    /// ends.
    fn abandon(&self, ready: &mut Option<Ready>, outcome: Result<StartOutcome, StartError>) {
        self.cell.control.close();
        tell(ready, outcome);
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

    /// Serves the mailbox with `instance` until it ends, first with
    /// `handle-continue(first)` if `init` asked for it; then the
    /// incarnation ends with the exit, and every call still waiting for a
    /// deferred reply hears it.
    async fn serve(&mut self, mut instance: Instance, first: Option<Vec<u8>>) -> Ended {
        let ended = self.serving(&mut instance, first).await;
        let reason = match &ended {
            Ended::Exit(reason) => reason.clone(),
            _ => ExitReason::Shutdown,
        };
        instance.end(&reason.to_call_error());
        ended
    }

    /// Supervision signals come first; a kill (or an exit signal the
    /// incarnation does not trap) also interrupts the message being handled.
    async fn serving(&mut self, instance: &mut Instance, mut first: Option<Vec<u8>>) -> Ended {
        loop {
            if let Some(msg) = first.take() {
                let generation = instance.generation();
                let work = instance.handle_continue(&msg);
                if let Err(reason) = guarded(&self.cell, generation, work).await {
                    return Ended::Exit(reason);
                }
                if let Some(reason) = instance.take_stop_request() {
                    self.terminate(instance, &reason).await;
                    return Ended::Exit(reason);
                }
            }
            let next = tokio::select! {
                biased;
                control = self.cell.control.next() => Err(control),
                envelope = self.mailbox.recv() => Ok(envelope),
            };
            match next {
                Err(Control::Kill { reason }) => return Ended::Exit(ExitReason::Killed(reason)),
                Err(Control::Exit {
                    from,
                    reason,
                    generation,
                }) => {
                    // Meant for an incarnation that already ended.
                    if generation != instance.generation() {
                        continue;
                    }
                    if !self.cell.trap_exits.load(Ordering::Acquire) {
                        return Ended::Exit(ExitReason::Linked(from.to_string()));
                    }
                    self.cell
                        .post_info(generation, Info::Exit { id: from, reason });
                }
                Err(Control::Stop { done }) => {
                    self.terminate(instance, &ExitReason::Shutdown).await;
                    return Ended::Stop(done);
                }
                Err(Control::Restart { done }) => {
                    self.terminate(instance, &ExitReason::Shutdown).await;
                    return Ended::Restart(done);
                }
                Err(Control::Suspend { done }) => {
                    self.terminate(instance, &ExitReason::Shutdown).await;
                    return Ended::Suspend(done);
                }
                Err(Control::Hold { status, done }) => {
                    self.terminate(instance, &ExitReason::Shutdown).await;
                    return Ended::Held(status, done);
                }
                Err(Control::Release { done }) => {
                    let _ = done.send(());
                }
                Err(Control::Reload { version, done }) => {
                    match self.upgrade(instance, version).await {
                        Upgrade::Unchanged => {
                            let _ = done.send(Ok(()));
                        }
                        Upgrade::Done(new, continued) => {
                            *instance = new;
                            first = continued;
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
                    if let Err(reason) = self.dispatch(instance, envelope).await {
                        return Ended::Exit(reason);
                    }
                    if let Some(reason) = instance.take_stop_request() {
                        self.terminate(instance, &reason).await;
                        return Ended::Exit(reason);
                    }
                }
            }
        }
    }

    /// Moves this child to `version` (OTP's `code_change`) while its
    /// mailbox waits. With a snapshot from the old instance, the new one
    /// *continues* the child: the incarnation moves to it and it runs
    /// `restore(snapshot)`, no `init`. Without one, the new instance
    /// *starts* the child: a new incarnation and `init(args)`, and the old
    /// incarnation ends. Any failure of the new version leaves the old
    /// instance serving, with its incarnation.
    async fn upgrade(&mut self, old: &mut Instance, version: Arc<Version>) -> Upgrade {
        if old.version.hash == version.hash {
            return Upgrade::Unchanged;
        }
        let generation = old.generation();
        let engine = &self.env.wasm.engine;
        let state = match guarded(&self.cell, generation, old.snapshot()).await {
            Ok(state) => state,
            Err(reason) => return Upgrade::Died(reason),
        };
        let upgrade = match state {
            Some(state) => {
                let incarnation = old.take_incarnation();
                let resume = Instance::resume(engine, version.clone(), incarnation, &state);
                match interruptible(&self.cell, generation, resume).await {
                    Ok(Ok(new)) => Upgrade::Done(new, None),
                    Ok(Err((why, incarnation))) => {
                        old.put_incarnation(incarnation);
                        return Upgrade::Kept(why);
                    }
                    // The incarnation went with the dropped restore.
                    Err(reason) => return Upgrade::Died(reason),
                }
            }
            None => {
                let trapping = self.cell.trap_exits.load(Ordering::Acquire);
                let started = self.start(version.clone()).await;
                let fresh = self.cell.generation();
                let why = match started {
                    Ok(Ok((new, Init::Ignore))) => {
                        new.end(&CallError::Failed(
                            "the new version's init returned ignore".into(),
                        ));
                        "the new version's init returned ignore".to_string()
                    }
                    Ok(Ok((new, init))) => {
                        let first = match init {
                            Init::Continue(msg) => Some(msg),
                            Init::Ready | Init::Ignore => None,
                        };
                        // The old incarnation ends without an exit.
                        let old_end = CallError::Failed(
                            "the child was started anew by a hot reload before it replied".into(),
                        );
                        old.take_incarnation().end(&old_end);
                        self.cell.unlink(generation, None);
                        self.cell.state().version = Some(version);
                        return Upgrade::Done(new, first);
                    }
                    Ok(Err(StartFailure::Init(m) | StartFailure::Unavailable(m))) => {
                        format!("the new version did not start: {m}")
                    }
                    Err(reason) => return Upgrade::Died(reason),
                };
                self.cell.unlink(fresh, None);
                self.cell.resume_generation(generation, trapping);
                return Upgrade::Kept(why);
            }
        };
        self.cell.state().version = Some(version);
        upgrade
    }

    async fn dispatch(
        &mut self,
        instance: &mut Instance,
        envelope: Envelope,
    ) -> Result<(), ExitReason> {
        let generation = instance.generation();
        match envelope {
            Envelope::Call { msg, reply } => {
                guarded(&self.cell, generation, instance.handle_call(&msg, reply)).await
            }
            Envelope::Cast { msg } => {
                guarded(&self.cell, generation, instance.handle_cast(&msg)).await
            }
            Envelope::Info {
                generation: to,
                info,
            } => guarded(&self.cell, generation, instance.handle_info(to, info)).await,
        }
    }

    /// `terminate(reason)`, given `shutdown_ms` at most, and cut short by a
    /// kill.
    async fn terminate(&self, instance: &mut Instance, reason: &ExitReason) {
        let limit = Duration::from_millis(self.cell.spec.shutdown_ms.into());
        let generation = instance.generation();
        let work = interruptible(&self.cell, generation, instance.terminate(reason));
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
                    Control::Kill { .. } | Control::Exit { .. } => {}
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
                    Control::Kill { .. } | Control::Exit { .. } => {}
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
                Control::Kill { .. } | Control::Exit { .. } => {}
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
