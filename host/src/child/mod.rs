//! Layer 3, one child: its address (the registry entry that survives
//! restarts), its mailbox and supervision signals, and its task. The task
//! owns each instance for the instance's whole life: every message reaches
//! the instance through the mailbox, one at a time. It reports every exit
//! to its [`Parent`] and carries out the decision (restart, back off, fail,
//! hold, remove). A hibernated child has no task and no instance: its
//! mailbox keeps what the task needs (`sleep.rs`), and its next message
//! brings the task back.

mod address;
mod control;
mod deadline;
mod mailbox;
mod parent;
mod sleep;

pub use address::Address;
pub(crate) use address::{Cell, RemoteLink, RemoteWatcher};
pub(crate) use control::Control;
pub(crate) use deadline::tick;
pub(crate) use mailbox::Envelope;
pub(crate) use parent::{Decision, Origin, Parent};
pub(crate) use sleep::{Asleep, Awake, Clock};

use crate::config::RestartFrom;
use crate::events::{Event, EventBus};
use crate::metrics::{Metrics, Timings};
use crate::trace;
use crate::types::{
    CallError, CheckpointError, ChildError, ExitReason, StartError, StartOutcome, Status,
};
use crate::wasm::{Incarnation, Info, Init, Instance, ResumeFailure, StartFailure, Version, Wasm};
use mailbox::Sleeper;
use sleep::Dormant;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::oneshot;
use tracing::Instrument;

/// What every child's task uses: the wasm side, the event stream, the
/// counters, the count of running tasks, and what hibernation needs.
pub(crate) struct Env {
    pub(crate) wasm: Wasm,
    pub(crate) events: EventBus,
    pub(crate) metrics: Metrics,
    pub(crate) tasks: Arc<Tasks>,
    /// Where a woken child's task runs (its waker may be any thread).
    pub(crate) runtime: tokio::runtime::Handle,
    /// The serving children that may hibernate.
    pub(crate) awake: Awake,
    pub(crate) clock: Clock,
}

/// How a running instance ended.
enum Ended {
    /// On its own (trap, kill, guest stop): the parent decides.
    Exit(ExitReason),
    /// An operator (or a node that lost its cluster lease) stopped the
    /// child, with `shutdown` (or `noconnection`): remove it.
    Stop(oneshot::Sender<()>, ExitReason),
    /// An operator restarted the child: start a new instance now, and
    /// answer once it started or failed to.
    Restart(oneshot::Sender<()>),
    /// The plugin's file was removed: wait for it.
    Suspend(oneshot::Sender<()>),
    /// Its supervision group stopped it: stay down until released.
    Held(Status, oneshot::Sender<()>),
    /// It gave its instance back: put the task away with what it resumes
    /// from, showing `status` (`hibernated`, or `waiting` when its plugin is
    /// gone), and tell whoever asked once it sleeps.
    Sleep(Asleep, Status, Asked),
}

/// Who asked a child to give its instance back.
enum Asked {
    Nobody,
    /// An operator, or a full pool.
    Hibernate(oneshot::Sender<Result<(), ChildError>>),
    /// The plugin's file went away.
    Suspend(oneshot::Sender<()>),
}

impl Asked {
    fn answer(self) {
        match self {
            Asked::Nobody => {}
            Asked::Hibernate(done) => {
                let _ = done.send(Ok(()));
            }
            Asked::Suspend(done) => {
                let _ = done.send(());
            }
        }
    }
}

/// What a child that is down (backoff, failed, waiting, held, asleep) does
/// next.
enum Wake {
    Start,
    /// Its group released it, or an operator restarted it: start, and
    /// tell whoever asked once the start was tried.
    Release(oneshot::Sender<()>),
    /// It hibernated, or was never started: resume from that.
    Resume(Asleep),
    Removed,
}

/// How an attempt at an instance went.
enum Began {
    /// An instance serves, first with `handle-continue(msg)` if `init`
    /// asked for it.
    Serving(Instance, Option<Vec<u8>>),
    /// No instance: it ended like this.
    Ended(Ended),
    /// No instance, and no exit either.
    Next(Wake),
}

/// How a hot reload of one instance went.
enum Upgrade {
    /// It already runs that version.
    Unchanged,
    /// The new instance serves: it continued the child, or started it anew
    /// (then maybe with a message for `handle-continue`).
    Done(Box<Instance>, Option<Vec<u8>>),
    /// The new version failed; the old instance goes on.
    Kept(String),
    /// The old instance died (its snapshot trapped, or a kill arrived).
    Died(ExitReason),
}

/// What the next start restores after `init`, with `restart_from =
/// "checkpoint"`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Restore {
    /// Nothing: `init(args)` only.
    Nothing,
    /// The last stored state (a restart after a trap).
    Checkpoint,
    /// Nothing, and the stored state is replaced by the fresh one: the last
    /// restart from it trapped again within the intensity window.
    DropCheckpoint,
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
    parent: Box<dyn Parent>,
    /// A config child: an `init` that returns `ignore` leaves it listed as
    /// `ignored` instead of removing it.
    config: bool,
    /// What the next start restores (`restart_from = "checkpoint"`).
    restore: Restore,
    /// When a start last restored a checkpoint.
    restored_at: Option<Instant>,
    /// When the instance exited that the next start replaces, for a
    /// restart without a backoff.
    exited_at: Option<Instant>,
    /// Its plugin's call-duration histogram.
    call_duration: Timings,
    /// Counts this task among the running ones until it ends or sleeps.
    _task: TaskGuard,
}

impl Child {
    fn new(env: &Arc<Env>, cell: Arc<Cell>, parent: Box<dyn Parent>, config: bool) -> Child {
        let call_duration = env.metrics.call_duration(&cell.spec.plugin);
        Child {
            _task: env.tasks.enter(),
            env: env.clone(),
            cell,
            parent,
            config,
            restore: Restore::Nothing,
            restored_at: None,
            exited_at: None,
            call_duration,
        }
    }

    /// Starts the child's task. The answer comes once its first start was
    /// tried: `Err` only for an [`Origin::Started`] child whose first start
    /// failed, which then never existed; `Ignored` when its `init` returned
    /// `ignore` (the child is then gone, unless it is a config child).
    pub(crate) fn spawn(
        env: &Arc<Env>,
        cell: Arc<Cell>,
        origin: Origin,
        parent: Box<dyn Parent>,
    ) -> oneshot::Receiver<Result<StartOutcome, StartError>> {
        let (ready, started) = oneshot::channel();
        let child = Child::new(env, cell, parent, origin == Origin::Config);
        tokio::spawn(child.run(origin, ready));
        started
    }

    /// Registers a child without an instance or a task (a lazy start, or a
    /// child brought back from the state database): shown `hibernated`, it
    /// is *started* at its first message.
    pub(crate) fn dormant(
        env: &Arc<Env>,
        cell: &Arc<Cell>,
        parent: Box<dyn Parent>,
        origin: &Origin,
    ) {
        cell.set_status(Status::Hibernated);
        let dormant = Box::new(Dormant {
            env: env.clone(),
            cell: Arc::downgrade(cell),
            parent,
            config: *origin == Origin::Config,
            asleep: Asleep::Unstarted,
        });
        // The cell may already be reachable: a signal that came first is
        // seen here (the child wakes at once for it), one that comes later
        // finds the sleeper.
        let control = &cell.control;
        if let Err(dormant) = cell.mailbox.sleep(dormant, || !control.is_pending()) {
            dormant.wake();
        }
    }

    /// The child's life: starts, serving, restarts, until it is removed.
    async fn run(mut self, origin: Origin, ready: Ready) {
        // `strict`: a failed first start means the child never existed.
        let strict = origin == Origin::Started;
        let mut ready = Some(ready);
        let mut next = Wake::Start;
        if let Origin::Restored {
            failed: Some(reason),
        } = origin
        {
            self.cell.exited(&reason, Status::Failed);
            tell(&mut ready, Ok(StartOutcome::Started));
            next = self.wait(None).await;
        }
        self.drive(next, ready, strict).await;
    }

    /// A hibernated child's task, back for a message or a signal.
    async fn woken(self, asleep: Asleep) {
        self.drive(Wake::Resume(asleep), None, false).await;
    }

    async fn drive(mut self, mut next: Wake, mut ready: Option<Ready>, strict: bool) {
        // Told once a start an operator or the group asked for was tried.
        let mut attempted = None;
        loop {
            let began = match next {
                Wake::Removed => return,
                Wake::Release(done) => {
                    attempted = Some(done);
                    next = Wake::Start;
                    continue;
                }
                Wake::Start => self.begin(&mut ready, &mut attempted, strict).await,
                Wake::Resume(asleep) => self.resume(asleep).await,
            };
            let (ended, uptime) = match began {
                Began::Serving(instance, first) => {
                    tell(&mut ready, Ok(StartOutcome::Started));
                    tell(&mut attempted, ());
                    let up = Instant::now();
                    let ended = self.serve(instance, first).await;
                    (ended, up.elapsed())
                }
                Began::Ended(ended) => (ended, Duration::ZERO),
                Began::Next(Wake::Removed) if strict && ready.is_some() => return,
                Began::Next(wake) => {
                    tell(&mut attempted, ());
                    next = wake;
                    continue;
                }
            };
            tell(&mut ready, Ok(StartOutcome::Started));
            tell(&mut attempted, ());
            next = match ended {
                Ended::Stop(done, reason) => {
                    self.cell.exited(&reason, Status::Restarting);
                    self.remove().await;
                    let _ = done.send(());
                    return;
                }
                Ended::Restart(done) => {
                    self.exited_at = Some(Instant::now());
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
                // Its node lost its cluster lease: the child goes (it
                // moves to another node), whatever its restart policy. (A
                // guest's own `stop(noconnection)` is an exit like others.)
                Ended::Exit(ExitReason::NoConnection) if self.cell.control.kept() => {
                    let reason = ExitReason::NoConnection;
                    self.cell.exited(&reason, Status::Restarting);
                    self.announce_exit(&reason);
                    self.remove().await;
                    return;
                }
                Ended::Exit(reason) => self.after_exit(reason, uptime).await,
                Ended::Sleep(asleep, status, asked) => match self.sleep(asleep, status, asked) {
                    None => return,
                    // A message came while it went to sleep: wake at once.
                    Some((me, asleep)) => {
                        self = me;
                        Wake::Resume(asleep)
                    }
                },
            };
        }
    }

    /// Puts the task away in the child's mailbox, unless a message or a
    /// signal is waiting: then the task comes back with `asleep`.
    fn sleep(self, asleep: Asleep, status: Status, asked: Asked) -> Option<(Child, Asleep)> {
        let Child {
            env,
            cell,
            parent,
            config,
            restore,
            restored_at,
            exited_at: _,
            call_duration,
            _task,
        } = self;
        let hibernated = matches!(asleep, Asleep::Hibernated { .. });
        cell.set_status(status);
        let dormant = Box::new(Dormant {
            env: env.clone(),
            cell: Arc::downgrade(&cell),
            parent,
            config,
            asleep,
        });
        // Announced before the sleeper is set: from then on a message may
        // wake the child, and its `child_woken` must come after this.
        if hibernated && status == Status::Hibernated {
            env.metrics.hibernation();
            env.events.emit(Event::ChildHibernated {
                id: cell.id.to_string(),
            });
        }
        let control = &cell.control;
        match cell.mailbox.sleep(dormant, || !control.is_pending()) {
            Ok(()) => {
                asked.answer();
                None
            }
            Err(dormant) => {
                let dormant = *dormant;
                if cell.mailbox.is_closed() {
                    // The host shut down (or the child was removed) while
                    // it went to sleep: nothing is left to serve.
                    end_asleep(dormant.asleep, &ExitReason::Shutdown);
                    asked.answer();
                    return None;
                }
                let child = Child {
                    env: dormant.env,
                    cell,
                    parent: dormant.parent,
                    config: dormant.config,
                    restore,
                    restored_at,
                    exited_at: None,
                    call_duration,
                    _task,
                };
                // It did give its instance back; it takes a new one now.
                asked.answer();
                Some((child, dormant.asleep))
            }
        }
    }

    /// *Starts* the child on its plugin's current version: `init`, then,
    /// for a restart from a checkpoint, the stored state.
    async fn begin(
        &mut self,
        ready: &mut Option<Ready>,
        attempted: &mut Option<oneshot::Sender<()>>,
        strict: bool,
    ) -> Began {
        let Some(version) = self.env.wasm.catalog.current(&self.cell.spec.plugin) else {
            if strict && ready.is_some() {
                let error = StartError::UnknownPlugin(self.cell.spec.plugin.clone());
                self.abandon(ready, Err(error));
                return Began::Next(Wake::Removed);
            }
            // The plugin's file is gone; wait for it (or an operator).
            self.cell.set_status(Status::Waiting);
            tell(ready, Ok(StartOutcome::Started));
            tell(attempted, ());
            return Began::Next(self.wait(None).await);
        };
        let restart = self.exited_at.take();
        let span = match restart.is_some() && trace::enabled() {
            true => tracing::info_span!("restart", child = &*self.cell.id),
            false => tracing::Span::none(),
        };
        let started = self.start(version.clone(), false).instrument(span).await;
        match started {
            Ok(Ok((instance, Init::Ignore))) => {
                Began::Next(self.ignored(instance, ready, strict, attempted).await)
            }
            Ok(Ok((mut instance, init))) => {
                if let Err(reason) = self.after_init(&mut instance).await {
                    return Began::Ended(Ended::Exit(reason));
                }
                self.running(&version);
                if let Some(exited) = restart {
                    self.env.metrics.restart_duration(exited.elapsed());
                }
                Began::Serving(instance, init.into_continue())
            }
            Ok(Err(failure)) => {
                let (StartFailure::Init(m) | StartFailure::Unavailable(m)) = &failure;
                let m = m.clone();
                if strict && ready.is_some() {
                    let error = match failure {
                        StartFailure::Init(m) => StartError::InitFailed(m),
                        StartFailure::Unavailable(m) => StartError::Unavailable(m),
                    };
                    self.abandon(ready, Err(error));
                    return Began::Next(Wake::Removed);
                }
                Began::Ended(Ended::Exit(ExitReason::InitFailed(m)))
            }
            Err(reason) => {
                if strict && ready.is_some() {
                    let error = StartError::InitFailed(reason.to_string());
                    self.abandon(ready, Err(error));
                    return Began::Next(Wake::Removed);
                }
                Began::Ended(Ended::Exit(reason))
            }
        }
    }

    /// What a start does after `init`: restore the stored state (a restart
    /// from a checkpoint, or the first start of a child brought back from
    /// the state database), or replace it with the fresh state.
    async fn after_init(&mut self, instance: &mut Instance) -> Result<(), ExitReason> {
        let restore = std::mem::replace(&mut self.restore, Restore::Nothing);
        let generation = instance.generation();
        match restore {
            Restore::Nothing => Ok(()),
            Restore::Checkpoint => {
                // Starting without a state the child may have would lose
                // it at its next checkpoint: the start fails instead, and
                // the restart policy tries again.
                let state = self.parent.stored_state(&self.cell).await.map_err(|e| {
                    ExitReason::Killed(format!(
                        "host failure, not the guest's: cannot read the stored state: {e}"
                    ))
                })?;
                let Some(state) = state else {
                    return Ok(());
                };
                self.restored_at = Some(Instant::now());
                match guarded(&self.cell, generation, instance.restore(&state)).await? {
                    Ok(()) => Ok(()),
                    Err(refused) => {
                        tracing::warn!(child = %self.cell.id, "the stored state was refused: {refused}");
                        Ok(())
                    }
                }
            }
            Restore::DropCheckpoint => {
                self.restored_at = None;
                let fresh = guarded(&self.cell, generation, instance.snapshot()).await?;
                match fresh {
                    Some(state) => {
                        if let Err(e) = self.parent.store_state(&self.cell, state).await {
                            tracing::error!(child = %self.cell.id, "cannot replace the dropped checkpoint: {e}");
                        }
                    }
                    // Nothing to replace it with: it goes all the same.
                    None => self.parent.forget_state(&self.cell).await,
                }
                tracing::warn!(child = %self.cell.id, "trapped again after a restart from its checkpoint; the checkpoint was dropped");
                self.env.events.emit(Event::ChildCheckpointDropped {
                    id: self.cell.id.to_string(),
                });
                Ok(())
            }
        }
    }

    /// *Starts* the child on `version` (a new incarnation, then `init`),
    /// unless a kill cuts it short (then `Err` with the exit). A full pool
    /// first asks the least recently active idle child to hibernate.
    /// `first`: the first start of a child that never had an instance
    /// (lazy, or brought back from the state database). It takes the
    /// generation the child has had since it was registered, so that links
    /// made to it meanwhile hold; any other start begins a new one.
    async fn start(
        &mut self,
        version: Arc<Version>,
        first: bool,
    ) -> Result<Result<(Instance, Init), StartFailure>, ExitReason> {
        loop {
            let generation = if first {
                self.cell.generation()
            } else {
                self.cell.next_generation()
            };
            let incarnation = Incarnation::new(self.parent.port(&self.cell, generation));
            let args = self.cell.spec.args.to_vec();
            let start = Instance::start(version.clone(), incarnation, &args);
            match interruptible(&self.cell, generation, start).await? {
                Err(StartFailure::Unavailable(m)) => {
                    if !self.env.awake.evict_one(&self.cell).await {
                        return Ok(Err(StartFailure::Unavailable(m)));
                    }
                }
                other => return Ok(other),
            }
        }
    }

    /// Brings back a child without an instance: the supervision signals
    /// that came while it slept first, then, if a message waits, a new
    /// instance: it *continues* a hibernated child (`restore`, no `init`)
    /// and *starts* an unstarted one.
    async fn resume(&mut self, mut asleep: Asleep) -> Began {
        let mut backoff = Duration::from_millis(10);
        loop {
            let mut reload = None;
            while let Some(control) = self.cell.control.try_next() {
                match self.while_asleep(control, asleep).await {
                    Ok((back, r)) => {
                        asleep = back;
                        if r.is_some() {
                            reload = r;
                        }
                    }
                    Err(began) => return began,
                }
            }
            if reload.is_none() && self.cell.mailbox.is_empty() {
                let status = self.cell.state().status;
                return Began::Ended(Ended::Sleep(asleep, status, Asked::Nobody));
            }
            let current = self.env.wasm.catalog.current(&self.cell.spec.plugin);
            let (version, done) = match reload {
                Some((version, done)) => (version, Some(done)),
                None => match current {
                    Some(version) => (version, None),
                    None => {
                        // Its plugin is gone: it waits, as a child without an
                        // instance, and keeps what it resumes from.
                        self.refuse_while_waiting();
                        return Began::Ended(Ended::Sleep(asleep, Status::Waiting, Asked::Nobody));
                    }
                },
            };
            asleep = match asleep {
                Asleep::Hibernated {
                    version: old,
                    state,
                    incarnation,
                } => match self
                    .continue_on(version, old, state, incarnation, done)
                    .await
                {
                    Ok(began) => return began,
                    Err(back) => back,
                },
                Asleep::Unstarted => {
                    if let Some(done) = done {
                        let _ = done.send(Ok(()));
                    }
                    match self.start_woken(version).await {
                        Ok(began) => return began,
                        Err(back) => back,
                    }
                }
            };
            // No instance to be had: calls hear `unavailable`, casts and
            // notifications wait, and the child tries again shortly.
            self.answer_calls(|| {
                CallError::Unavailable(
                    "the instance pool is full of busy children; the child's state is kept".into(),
                )
            });
            let control = self.cell.control.next();
            tokio::select! {
                biased;
                control = control => self.cell.control.put_back(control),
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }

    /// A signal that came while the child had no instance. `Ok` with what
    /// it still resumes from (and a reload's version to resume on), or
    /// `Err` with how the wake ends.
    #[allow(clippy::type_complexity)]
    async fn while_asleep(
        &mut self,
        control: Control,
        asleep: Asleep,
    ) -> Result<
        (
            Asleep,
            Option<(Arc<Version>, oneshot::Sender<Result<(), String>>)>,
        ),
        Began,
    > {
        match control {
            Control::Stop { done, reason, .. } => {
                end_asleep(asleep, &reason);
                self.cell.exited(&reason, Status::Restarting);
                self.remove().await;
                let _ = done.send(());
                Err(Began::Next(Wake::Removed))
            }
            Control::Restart { done } => {
                end_asleep(asleep, &ExitReason::Shutdown);
                self.cell.exited(&ExitReason::Shutdown, Status::Restarting);
                self.parent.revived(&self.cell, false);
                Err(Began::Next(Wake::Release(done)))
            }
            Control::Kill { reason } => {
                let reason = ExitReason::Killed(reason);
                end_asleep(asleep, &reason);
                Err(Began::Ended(Ended::Exit(reason)))
            }
            Control::Exit {
                from,
                reason,
                generation,
            } => {
                if generation != self.cell.generation() {
                    return Ok((asleep, None));
                }
                if !self.cell.trap_exits.load(Ordering::Acquire) {
                    let reason = ExitReason::Linked(from.to_string());
                    end_asleep(asleep, &reason);
                    return Err(Began::Ended(Ended::Exit(reason)));
                }
                self.cell
                    .post_info(generation, Info::Exit { id: from, reason });
                Ok((asleep, None))
            }
            Control::Suspend { done } => {
                self.cell.set_status(Status::Waiting);
                let _ = done.send(());
                Ok((asleep, None))
            }
            Control::Reload { version, done } => Ok((asleep, Some((version, done)))),
            Control::Hold { status, done } => {
                end_asleep(asleep, &ExitReason::Shutdown);
                self.cell.exited(&ExitReason::Shutdown, status);
                self.announce_exit(&ExitReason::Shutdown);
                let _ = done.send(());
                Err(Began::Next(self.held().await))
            }
            Control::Release { done } => {
                let _ = done.send(());
                Ok((asleep, None))
            }
            Control::Hibernate { done } => {
                let _ = done.send(Ok(()));
                Ok((asleep, None))
            }
        }
    }

    /// *Continues* a hibernated child on `version` (a new instance, then
    /// `restore`). If `version` is newer and refuses the state, the child
    /// stays on `old` and `reload_failed` names it. `Err` with what it
    /// resumes from when no instance can be had now.
    async fn continue_on(
        &mut self,
        version: Arc<Version>,
        old: Arc<Version>,
        state: Vec<u8>,
        incarnation: Option<Box<Incarnation>>,
        done: Option<oneshot::Sender<Result<(), String>>>,
    ) -> Result<Began, Asleep> {
        let generation = self.cell.generation();
        let mut incarnation = incarnation
            .unwrap_or_else(|| Incarnation::new(self.parent.port(&self.cell, generation)));
        let mut attempt = version.clone();
        let mut refused = None;
        loop {
            let resume = Instance::resume(attempt.clone(), incarnation, &state);
            let outcome = match interruptible(&self.cell, generation, resume).await {
                Ok(outcome) => outcome,
                // The incarnation went with the dropped restore.
                Err(reason) => return Ok(Began::Ended(Ended::Exit(reason))),
            };
            match outcome {
                Ok(instance) => {
                    // Running before the reload hears back, so that what
                    // the reload's caller reads next is current.
                    self.woke(&instance.version);
                    if let Some(done) = done {
                        let _ = done.send(match refused {
                            None => Ok(()),
                            Some(why) => Err(why),
                        });
                    }
                    return Ok(Began::Serving(instance, None));
                }
                Err((ResumeFailure::Unavailable(_), back)) => {
                    incarnation = back;
                    if !self.env.awake.evict_one(&self.cell).await {
                        if let Some(done) = done {
                            let _ = done.send(Err("the instance pool is full".into()));
                        }
                        return Err(Asleep::Hibernated {
                            version: old,
                            state,
                            incarnation: Some(incarnation),
                        });
                    }
                }
                Err((ResumeFailure::Refused(why), back)) => {
                    incarnation = back;
                    if attempt.hash != old.hash {
                        let why = format!("child {} stays on {}: {why}", self.cell.id, old.hash);
                        tracing::error!("reload of plugin {} failed: {why}", self.cell.spec.plugin);
                        self.env.events.emit(Event::ReloadFailed {
                            plugin: self.cell.spec.plugin.clone(),
                            error: why.clone(),
                        });
                        refused = Some(why);
                        attempt = old.clone();
                        continue;
                    }
                    if let Some(done) = done {
                        let _ = done.send(Err(why.clone()));
                    }
                    let reason = ExitReason::InitFailed(format!("cannot resume: {why}"));
                    incarnation.end(&reason.to_call_error());
                    return Ok(Began::Ended(Ended::Exit(reason)));
                }
            }
        }
    }

    /// *Starts* a child that was never started (or was brought back from
    /// the state database) at its first message: `init`, then its stored
    /// state. A failed `init` answers the first waiting call with
    /// `init_failed`; casts stay queued for the next start.
    async fn start_woken(&mut self, version: Arc<Version>) -> Result<Began, Asleep> {
        self.restore = Restore::Checkpoint;
        Ok(match self.start(version.clone(), true).await {
            Ok(Ok((instance, Init::Ignore))) => {
                Began::Next(self.ignored(instance, &mut None, false, &mut None).await)
            }
            Ok(Ok((mut instance, init))) => {
                if let Err(reason) = self.after_init(&mut instance).await {
                    return Ok(Began::Ended(Ended::Exit(reason)));
                }
                self.restored_at = None;
                self.running(&version);
                Began::Serving(instance, init.into_continue())
            }
            // No instance to be had: it stays unstarted, and its calls hear
            // `unavailable` (not an exit, and not `init_failed`).
            Ok(Err(StartFailure::Unavailable(_))) => return Err(Asleep::Unstarted),
            Ok(Err(StartFailure::Init(m))) => {
                // `restore` stays `Checkpoint`: the restart that follows is
                // a start too, and brings the stored state back.
                if let Some(reply) = self.cell.mailbox.take_first_call() {
                    let _ = reply.send(Err(CallError::InitFailed(m.clone())));
                }
                Began::Ended(Ended::Exit(ExitReason::InitFailed(m)))
            }
            Err(reason) => Began::Ended(Ended::Exit(reason)),
        })
    }

    /// Answers every queued call with `error()`; other messages stay.
    fn answer_calls(&self, error: impl Fn() -> CallError) {
        for reply in self.cell.mailbox.take_calls() {
            let _ = reply.send(Err(error()));
        }
    }

    /// A child without an instance whose plugin is gone: calls hear
    /// `failed`, the rest is dropped, as for any waiting child.
    fn refuse_while_waiting(&self) {
        while let Some(envelope) = self.cell.mailbox.try_recv() {
            if let Envelope::Call { reply, .. } = envelope {
                let why = "the child is waiting: its plugin's file is gone".to_string();
                let _ = reply.send(Err(CallError::Failed(why)));
            }
        }
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
        if self.config {
            // Listed `ignored` before the starter hears back, so that what
            // it reads next is current.
            self.cell.set_status(Status::Ignored);
            tell(ready, Ok(StartOutcome::Ignored));
            return self.wait(None).await;
        }
        tell(ready, Ok(StartOutcome::Ignored));
        self.cell.exited(&ExitReason::Normal, Status::Restarting);
        self.remove().await;
        Wake::Removed
    }

    /// The first start of a child that must start or never exist failed
    /// (or was ignored): the starter hears it (and frees the id); the task
    /// ends, and queued calls hear that the child is gone.
    fn abandon(&self, ready: &mut Option<Ready>, outcome: Result<StartOutcome, StartError>) {
        self.cell.control.close();
        drop(self.cell.mailbox.close());
        tell(ready, outcome);
    }

    /// Marks the child running on `version` after a start and announces it:
    /// its first (`child_started`) or a restart (`child_restarted`).
    fn running(&self, version: &Arc<Version>) {
        let (first, restarts) = {
            let mut state = self.cell.state();
            state.status = Status::Running;
            state.started_at = SystemTime::now();
            state.backoff_until = None;
            state.version = Some(version.clone());
            let first = !state.activated;
            state.activated = true;
            if !first {
                state.restarts += 1;
            }
            (first, state.restarts)
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

    /// Marks a hibernated child running again on `version`.
    fn woke(&self, version: &Arc<Version>) {
        {
            let mut state = self.cell.state();
            state.status = Status::Running;
            state.version = Some(version.clone());
        }
        self.env.metrics.wake();
        self.env.events.emit(Event::ChildWoken {
            id: self.cell.id.to_string(),
        });
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
        let exited_at = Instant::now();
        self.cell.exited(&reason, Status::Restarting);
        self.announce_exit(&reason);
        let decision = self.parent.exited(&self.cell, &reason, uptime);
        if matches!(reason, ExitReason::Trap(_))
            && matches!(decision, Decision::Restart | Decision::Backoff(_))
            && self.restart_from() == RestartFrom::Checkpoint
        {
            // A restart from the checkpoint that traps again within the
            // intensity window means the checkpoint is poisoned.
            let window = self.parent.window();
            self.restore = match self.restored_at {
                Some(at) if at.elapsed() < window => Restore::DropCheckpoint,
                _ => Restore::Checkpoint,
            };
        }
        match decision {
            Decision::Restart => {
                self.exited_at = Some(exited_at);
                Wake::Start
            }
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

    /// The plugin's `restart_from`.
    fn restart_from(&self) -> RestartFrom {
        match self.env.wasm.catalog.current(&self.cell.spec.plugin) {
            Some(v) => v.limits.restart_from,
            None => RestartFrom::Init,
        }
    }

    /// Serves the mailbox with `instance` until it ends, first with
    /// `handle-continue(first)` if `init` asked for it; then the
    /// incarnation ends with the exit, and every call still waiting for a
    /// deferred reply hears it (a child that hibernates keeps its
    /// incarnation).
    async fn serve(&mut self, mut instance: Instance, first: Option<Vec<u8>>) -> Ended {
        let hibernates = instance.version.limits.hibernate_after_ms > 0;
        if hibernates {
            self.env.awake.insert(&self.cell);
        }
        self.cell
            .memory
            .store(instance.memory_bytes(), Ordering::Relaxed);
        let ended = self.serving(&mut instance, first).await;
        self.cell.memory.store(0, Ordering::Relaxed);
        if hibernates {
            self.env.awake.remove(&self.cell);
        }
        let reason = match &ended {
            Ended::Exit(reason) => reason.clone(),
            _ => ExitReason::Shutdown,
        };
        instance.end(&reason.to_call_error());
        ended
    }

    /// Supervision signals come first; a kill (or an exit signal the
    /// incarnation does not trap) also interrupts the message being handled.
    /// A child whose plugin has `hibernate_after_ms` hibernates once it has
    /// been idle that long.
    async fn serving(&mut self, instance: &mut Instance, mut first: Option<Vec<u8>>) -> Ended {
        let idle_after = Duration::from_millis(instance.version.limits.hibernate_after_ms);
        // One timer per idle period, not per message: when it fires early
        // (messages came meanwhile) it is set again from the last one.
        let mut idle = (!idle_after.is_zero()).then(|| Box::pin(tokio::time::sleep(idle_after)));
        loop {
            if let Some(msg) = first.take() {
                let generation = instance.generation();
                let work = instance.handle_continue(&msg);
                if let Err(reason) = guarded(&self.cell, generation, work).await {
                    return Ended::Exit(reason);
                }
                if let Some(ended) = self.after_callback(instance).await {
                    return ended;
                }
            }
            let idle_timer = async {
                match idle.as_mut() {
                    Some(timer) => timer.as_mut().await,
                    None => std::future::pending().await,
                }
            };
            let next = tokio::select! {
                biased;
                control = self.cell.control.next() => Err(Some(control)),
                envelope = self.cell.mailbox.recv() => Ok(envelope),
                () = idle_timer => Err(None),
            };
            let control = match next {
                Ok(None) => {
                    // Closed: the host stops and takes the child away.
                    self.terminate(instance, &ExitReason::Shutdown).await;
                    return Ended::Exit(ExitReason::Shutdown);
                }
                Ok(Some(envelope)) => {
                    // Only a child that can hibernate reads it (its idle
                    // timer, and eviction): others pay no clock read.
                    if idle.is_some() {
                        self.cell
                            .last_active
                            .store(self.env.clock.now_ms(), Ordering::Relaxed);
                    }
                    if let Err(reason) = self.dispatch(instance, envelope).await {
                        return Ended::Exit(reason);
                    }
                    if let Some(ended) = self.after_callback(instance).await {
                        return ended;
                    }
                    continue;
                }
                Err(None) => {
                    let last = self.cell.last_active.load(Ordering::Relaxed);
                    let quiet = Duration::from_millis(self.env.clock.now_ms().saturating_sub(last));
                    if quiet >= idle_after && self.cell.mailbox.is_empty() {
                        match self.hibernation(instance).await {
                            Ok(Ok(asleep)) => {
                                return Ended::Sleep(asleep, Status::Hibernated, Asked::Nobody);
                            }
                            Ok(Err(_)) => {}
                            Err(reason) => return Ended::Exit(reason),
                        }
                    }
                    let wait = idle_after
                        .saturating_sub(quiet)
                        .max(Duration::from_millis(1));
                    if let Some(timer) = idle.as_mut() {
                        timer
                            .as_mut()
                            .reset(tokio::time::Instant::now() + wait.max(idle_after / 2));
                    }
                    continue;
                }
                Err(Some(control)) => control,
            };
            match control {
                Control::Kill { reason } => return Ended::Exit(ExitReason::Killed(reason)),
                Control::Exit {
                    from,
                    reason,
                    generation,
                } => {
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
                Control::Stop { done, reason, keep } => {
                    // A durable state is stored before the host stops, and
                    // before the child moves to another node (a drain).
                    let moves = keep && reason != ExitReason::NoConnection;
                    if self.parent.host_stopping() || moves {
                        self.store_on_shutdown(instance).await;
                    }
                    // A node cut off from its cluster runs no more guest
                    // code (as an Erlang process dies of `noconnection`).
                    if reason != ExitReason::NoConnection {
                        self.terminate(instance, &reason).await;
                    }
                    return Ended::Stop(done, reason);
                }
                Control::Restart { done } => {
                    self.terminate(instance, &ExitReason::Shutdown).await;
                    return Ended::Restart(done);
                }
                Control::Suspend { done } => {
                    // A child that can keep its state waits with it and
                    // resumes from it when the file returns.
                    match self.hibernation(instance).await {
                        Ok(Ok(asleep)) => {
                            return Ended::Sleep(asleep, Status::Waiting, Asked::Suspend(done));
                        }
                        Ok(Err(_)) => {}
                        Err(reason) => {
                            let _ = done.send(());
                            return Ended::Exit(reason);
                        }
                    }
                    self.terminate(instance, &ExitReason::Shutdown).await;
                    return Ended::Suspend(done);
                }
                Control::Hold { status, done } => {
                    self.terminate(instance, &ExitReason::Shutdown).await;
                    return Ended::Held(status, done);
                }
                Control::Release { done } => {
                    let _ = done.send(());
                }
                Control::Hibernate { done } => match self.hibernation(instance).await {
                    Ok(Ok(asleep)) => {
                        return Ended::Sleep(asleep, Status::Hibernated, Asked::Hibernate(done));
                    }
                    Ok(Err(why)) => {
                        let _ = done.send(sleep::refused(why));
                    }
                    Err(reason) => {
                        let _ = done.send(sleep::refused("its snapshot failed"));
                        return Ended::Exit(reason);
                    }
                },
                Control::Reload { version, done } => match self.upgrade(instance, version).await {
                    Upgrade::Unchanged => {
                        let _ = done.send(Ok(()));
                    }
                    Upgrade::Done(new, continued) => {
                        *instance = *new;
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
                },
            }
        }
    }

    /// What the guest asked for during its last callback: to stop, or to
    /// hibernate.
    async fn after_callback(&mut self, instance: &mut Instance) -> Option<Ended> {
        self.cell
            .memory
            .store(instance.memory_bytes(), Ordering::Relaxed);
        if let Some(reason) = instance.take_stop_request() {
            self.terminate(instance, &reason).await;
            return Some(Ended::Exit(reason));
        }
        if instance.take_hibernate_request() && self.cell.mailbox.is_empty() {
            match self.hibernation(instance).await {
                Ok(Ok(asleep)) => {
                    return Some(Ended::Sleep(asleep, Status::Hibernated, Asked::Nobody));
                }
                Ok(Err(why)) => {
                    tracing::debug!(child = %self.cell.id, "asked to hibernate, but {why}");
                }
                Err(reason) => return Some(Ended::Exit(reason)),
            }
        }
        None
    }

    /// Takes what a hibernating child keeps: its snapshot (stored first for
    /// a `durable_state` plugin) and its incarnation. `Ok(Err)` says why it
    /// cannot hibernate now; `Err` is an exit (the snapshot trapped). On
    /// `Ok(Ok)` the instance no longer serves its incarnation and must be
    /// dropped.
    async fn hibernation(
        &mut self,
        instance: &mut Instance,
    ) -> Result<Result<Asleep, String>, ExitReason> {
        if instance.owes_work() {
            return Ok(Err(
                "it owes a deferred reply or waits for an HTTP response".into(),
            ));
        }
        let generation = instance.generation();
        let Some(state) = guarded(&self.cell, generation, instance.snapshot()).await? else {
            return Ok(Err("its snapshot returns none".into()));
        };
        if instance.version.limits.durable_state
            && let Err(e) = self.parent.store_state(&self.cell, state.clone()).await
            && e != CheckpointError::NotDurable
        {
            tracing::warn!(child = %self.cell.id, "not hibernated: {e}");
            return Ok(Err(format!("its state was not stored: {e}")));
        }
        let incarnation = instance.take_incarnation();
        Ok(Ok(Asleep::Hibernated {
            version: instance.version.clone(),
            state,
            incarnation: (!incarnation.is_empty()).then_some(incarnation),
        }))
    }

    /// At a clean host shutdown, a `durable_state` child stores its state.
    async fn store_on_shutdown(&mut self, instance: &mut Instance) {
        if !instance.version.limits.durable_state || instance.owes_work() {
            return;
        }
        let generation = instance.generation();
        if let Ok(Some(state)) = guarded(&self.cell, generation, instance.snapshot()).await
            && let Err(e) = self.parent.store_state(&self.cell, state).await
            && e != CheckpointError::NotDurable
        {
            tracing::error!(child = %self.cell.id, "its state was not stored at shutdown: {e}");
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
        let state = match guarded(&self.cell, generation, old.snapshot()).await {
            Ok(state) => state,
            Err(reason) => return Upgrade::Died(reason),
        };
        let upgrade = match state {
            Some(state) => {
                let incarnation = old.take_incarnation();
                let resume = Instance::resume(version.clone(), incarnation, &state);
                match interruptible(&self.cell, generation, resume).await {
                    Ok(Ok(new)) => Upgrade::Done(Box::new(new), None),
                    Ok(Err((failure, incarnation))) => {
                        old.put_incarnation(incarnation);
                        return Upgrade::Kept(match failure {
                            ResumeFailure::Refused(why) => why,
                            ResumeFailure::Unavailable(m) => {
                                format!("no instance slot was free for the new version: {m}")
                            }
                        });
                    }
                    // The incarnation went with the dropped restore.
                    Err(reason) => return Upgrade::Died(reason),
                }
            }
            None => {
                let trapping = self.cell.trap_exits.load(Ordering::Acquire);
                let started = self.start(version.clone(), false).await;
                let fresh = self.cell.generation();
                let why = match started {
                    Ok(Ok((new, Init::Ignore))) => {
                        new.end(&CallError::Failed(
                            "the new version's init returned ignore".into(),
                        ));
                        "the new version's init returned ignore".to_string()
                    }
                    Ok(Ok((new, init))) => {
                        let first = init.into_continue();
                        // The old incarnation ends without an exit.
                        let old_end = CallError::Failed(
                            "the child was started anew by a hot reload before it replied".into(),
                        );
                        old.take_incarnation().end(&old_end);
                        self.cell.unlink(generation, None);
                        self.cell.state().version = Some(version);
                        return Upgrade::Done(Box::new(new), first);
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
            Envelope::Call {
                msg,
                reply,
                sent,
                parent,
            } => {
                let start = Instant::now();
                self.env.metrics.mailbox_wait(start.duration_since(sent));
                let work = guarded(&self.cell, generation, instance.handle_call(&msg, reply));
                let handled = if trace::enabled() {
                    let id = &*self.cell.id;
                    work.instrument(tracing::info_span!(parent: &parent, "handle-call", child = id))
                        .await
                } else {
                    work.await
                };
                self.call_duration.observe(start.elapsed());
                handled
            }
            Envelope::Cast { msg, sent, parent } => {
                self.env.metrics.mailbox_wait(sent.elapsed());
                let work = guarded(&self.cell, generation, instance.handle_cast(&msg));
                if trace::enabled() {
                    let id = &*self.cell.id;
                    work.instrument(tracing::info_span!(parent: &parent, "handle-cast", child = id))
                        .await
                } else {
                    work.await
                }
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
                    Control::Stop { done, reason, .. } => {
                        if reason == ExitReason::NoConnection {
                            self.cell.state().last_exit = Some(reason);
                        }
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
                    Control::Hibernate { done } => {
                        let _ = done.send(sleep::refused("it has no instance"));
                    }
                    Control::Kill { .. } | Control::Exit { .. } => {}
                },
                () = &mut sleep => return Wake::Start,
                envelope = self.cell.mailbox.recv(), if until.is_none() => {
                    // A closed mailbox: the host is shutting down and the
                    // child has nothing more to wait for.
                    let Some(envelope) = envelope else {
                        return Wake::Removed;
                    };
                    if let Envelope::Call { reply, .. } = envelope {
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
                    Control::Stop { done, reason, .. } => {
                        if reason == ExitReason::NoConnection {
                            self.cell.state().last_exit = Some(reason);
                        }
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
                    Control::Hibernate { done } => {
                        let _ = done.send(sleep::refused("it has no instance"));
                    }
                    Control::Kill { .. } | Control::Exit { .. } => {}
                },
                envelope = self.cell.mailbox.recv(), if failed => {
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
    /// Queued calls hear that the child is gone (its mailbox closes), and
    /// queued signals are released.
    async fn remove(&mut self) {
        self.parent.removed(&self.cell).await;
        drop(self.cell.mailbox.close());
        for control in self.cell.control.close() {
            match control {
                Control::Stop { done, .. }
                | Control::Restart { done }
                | Control::Suspend { done }
                | Control::Hold { done, .. }
                | Control::Release { done } => {
                    let _ = done.send(());
                }
                Control::Reload { done, .. } => {
                    let _ = done.send(Err("the child was removed".into()));
                }
                Control::Hibernate { done } => {
                    let _ = done.send(sleep::refused("the child was removed"));
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

/// Ends the incarnation a child without an instance kept.
fn end_asleep(asleep: Asleep, reason: &ExitReason) {
    if let Asleep::Hibernated {
        incarnation: Some(incarnation),
        ..
    } = asleep
    {
        incarnation.end(&reason.to_call_error());
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
