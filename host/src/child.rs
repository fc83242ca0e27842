//! The driver of one child: a task that owns the child's mailbox for the
//! child's whole life and runs one instance after another in it. It handles
//! one message at a time, reports every exit to the supervisor, and carries
//! out the decision (restart, back off, fail, remove).

use crate::address::{Cell, Envelope};
use crate::control::{Control, ControlSlot};
use crate::direct::Seat;
use crate::events::Event;
use crate::host::{HostInner, TaskGuard};
use crate::instance::{Instance, StartFailure};
use crate::mailbox::Receiver;
use crate::stacks::Lease;
use crate::supervisor::group::GroupLink;
use crate::supervisor::intensity::Intensity;
use crate::supervisor::{self, Decision};
use crate::types::{CallError, ExitReason, StartError, Status};
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::oneshot;

/// How a running instance ended.
enum Ended {
    /// On its own (trap, kill, guest stop): the supervisor decides.
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

/// What a child that is down (backoff, failed, waiting) does next.
enum Wake {
    Start,
    /// Its group released it, or an operator restarted it: start, and
    /// tell whoever asked once the start was tried.
    Release(oneshot::Sender<()>),
    Removed,
}

/// How a child came to be, which decides what a failed first start means.
pub(crate) enum Origin {
    /// `start_child`: the starter waits for `init`; if the first start
    /// fails, the child never existed.
    New(oneshot::Sender<Result<(), StartError>>),
    /// Brought back from the database: it exists whatever its first start
    /// does (a failure is an exit like any other), and a child that was
    /// `failed` comes back `failed`. `attempted` is told once the first
    /// start was tried, so that stored children come back in order.
    Restored {
        failed: Option<ExitReason>,
        attempted: oneshot::Sender<()>,
    },
}

pub(crate) struct Child {
    host: Arc<HostInner>,
    cell: Arc<Cell>,
    mailbox: Receiver,
    intensity: Intensity,
    /// Its supervision group, which decides its restarts instead of its own
    /// intensity.
    group: Option<GroupLink>,
    /// How other instances ask for the native stack its idle instance holds
    /// (`[engine] stack_per_callback`).
    lease: Option<Arc<Lease>>,
    /// Whether callers may run calls on its idle instance (`direct.rs`): not
    /// with shared stacks, whose lending has its own way of waking.
    direct: bool,
    /// Counts the child's task among the host's running ones until the
    /// child ends (dropped last).
    _task: TaskGuard,
}

/// Runs `work` unless a kill arrives first (then `Err(reason)`). A kill
/// drops the guest call in flight, which unwinds the guest; the instance is
/// then discarded.
///
/// The caller pins `work`: a future passed by value is stored again in
/// every async fn it passes through, and the child's task is as large as
/// its largest await (a guest call through `guarded` took 4.4 KiB instead
/// of 1.4 KiB in every child's task).
async fn unless_killed<T>(
    control: &ControlSlot,
    work: Pin<&mut impl Future<Output = T>>,
) -> Result<T, String> {
    tokio::select! {
        biased;
        reason = control.killed() => Err(reason),
        result = work => Ok(result),
    }
}

/// The next control signal (first) or message.
async fn next_message(
    control: &ControlSlot,
    mailbox: &mut Receiver,
) -> Result<Option<Envelope>, Control> {
    tokio::select! {
        biased;
        control = control.next() => Err(control),
        envelope = mailbox.recv() => Ok(envelope),
    }
}

/// [`next_message`], lending the instance's native stack to the other
/// instances (stacks.rs) if it has to wait for it: a burst of messages keeps
/// the stack and pays nothing. A stack asked for meanwhile is handed back as
/// the child wakes.
async fn next_lending_stack(
    control: &ControlSlot,
    mailbox: &mut Receiver,
    instance: &mut Instance,
    lease: &Arc<Lease>,
) -> Result<Option<Envelope>, Control> {
    let mut next = pin!(next_message(control, mailbox));
    if let Some(next) = poll_once(next.as_mut()).await {
        return next;
    }
    if !instance.rest(lease) {
        return next.await;
    }
    let next = next.await;
    instance.wake(lease);
    next
}

/// Polls `future` once: its output if it is ready, `None` if it would wait
/// (its wakers are then registered for this task).
async fn poll_once<F: Future>(mut future: Pin<&mut F>) -> Option<F::Output> {
    std::future::poll_fn(|cx| {
        std::task::Poll::Ready(match future.as_mut().poll(cx) {
            std::task::Poll::Ready(output) => Some(output),
            std::task::Poll::Pending => None,
        })
    })
    .await
}

/// What the child woke for while its instance was on the desk.
struct Woken {
    next: Result<Option<Envelope>, Control>,
    /// The instance, taken back; `None` if it was lost, which the desk's
    /// rules exclude.
    seat: Option<Seat>,
    /// A kill that came while a caller still ran a call on the instance, and
    /// was passed on to it.
    killed: Option<String>,
}

/// [`next_message`], with the idle instance left on the desk meanwhile for
/// callers to run calls on (`direct.rs`). The instance comes back with the
/// message or signal, once any call on it has finished; a kill that arrives
/// before then is passed on to that call.
async fn next_with_desk(
    control: &ControlSlot,
    mailbox: &mut Receiver,
    instance: Box<Instance>,
) -> Woken {
    let kept = |next, instance| Woken {
        next,
        seat: Some(Seat {
            instance,
            died: None,
        }),
        killed: None,
    };
    if control.pending() {
        return kept(next_message(control, mailbox).await, instance);
    }
    if let Err(instance) = mailbox.park(instance) {
        return kept(next_message(control, mailbox).await, instance);
    }
    let next = next_message(control, mailbox).await;
    let mailbox = &*mailbox;
    let mut kill = match &next {
        Err(Control::Kill { reason }) => Some(reason.clone()),
        _ => None,
    };
    let woke_for_a_kill = kill.is_some();
    let seat = loop {
        tokio::select! {
            biased;
            seat = mailbox.reclaim(kill.as_deref()) => break seat,
            reason = control.killed(), if kill.is_none() => kill = Some(reason),
        }
    };
    let killed = kill.filter(|_| !woke_for_a_kill);
    Woken { next, seat, killed }
}

/// [`unless_killed`] for guest calls: a kill is one more way to exit.
async fn guarded<T>(
    control: &ControlSlot,
    work: Pin<&mut impl Future<Output = Result<T, ExitReason>>>,
) -> Result<T, ExitReason> {
    unless_killed(control, work)
        .await
        .unwrap_or_else(|reason| Err(ExitReason::Killed(reason)))
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

impl Child {
    /// Starts the child's task.
    pub(crate) fn spawn(
        host: Arc<HostInner>,
        cell: Arc<Cell>,
        mailbox: Receiver,
        origin: Origin,
        group: Option<GroupLink>,
    ) {
        let s = host.config.supervisor;
        let running = host.children.enter();
        let lease = (host.stacks.per_callback())
            .then(|| cell.lease.get_or_init(|| Lease::new(&cell)).clone());
        let direct = host.config.tuning.direct_calls && mailbox.has_desk();
        let child = Child {
            host,
            cell,
            mailbox,
            intensity: Intensity::new(s.max_restarts, s.max_seconds),
            group,
            lease,
            direct,
            _task: running,
        };
        tokio::spawn(child.run(origin));
    }

    /// The child's life: starts, serving, restarts, until it is removed.
    ///
    /// An `async` block, not an `async fn`: an `async fn` moves its
    /// arguments into locals and its state keeps both copies (184 bytes
    /// more in every child's task).
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn would keep its arguments twice (above)"
    )]
    fn run(mut self, origin: Origin) -> impl Future<Output = ()> + Send {
        async move {
            let mut ready = None;
            let mut attempted = None;
            match origin {
                Origin::New(tx) => ready = Some(tx),
                Origin::Restored {
                    failed: Some(reason),
                    attempted: tx,
                } => {
                    self.cell.exited(&reason, Status::Failed);
                    let _ = tx.send(());
                    match Box::pin(self.wait(None)).await {
                        Wake::Removed => return,
                        Wake::Start => {}
                        Wake::Release(tx) => attempted = Some(tx),
                    }
                }
                Origin::Restored {
                    failed: None,
                    attempted: tx,
                } => attempted = Some(tx),
            }
            let mut first = true;
            loop {
                let Some(version) = self.host.catalog.current(&self.cell.spec.plugin) else {
                    if let Some(ready) = ready.take() {
                        let error = StartError::UnknownPlugin(self.cell.spec.plugin.clone());
                        return self.abandon_start(ready, error);
                    }
                    // The plugin's file is gone; wait for it (or an operator).
                    self.cell.set_status(Status::Waiting);
                    if let Some(tx) = attempted.take() {
                        let _ = tx.send(());
                    }
                    match Box::pin(self.wait(None)).await {
                        Wake::Start => continue,
                        Wake::Release(tx) => {
                            attempted = Some(tx);
                            continue;
                        }
                        Wake::Removed => return,
                    }
                };
                let generation = self.cell.next_generation();
                // The instance is boxed where it is made: serving awaits hold
                // only its pointer.
                let mut start = Box::pin(async {
                    Ok(Instance::start(&self.host, &self.cell, version, generation)
                        .await
                        .map(Box::new))
                });
                let started = guarded(&self.cell.control, start.as_mut()).await;
                // The boxed start borrows `self`; serving needs it mutably.
                drop(start);
                let (ended, uptime) = match started {
                    Ok(Ok(instance)) => {
                        self.running(&instance, ready.take(), first);
                        first = false;
                        if let Some(tx) = attempted.take() {
                            let _ = tx.send(());
                        }
                        let up = Instant::now();
                        let ended = self.serve(instance).await;
                        (ended, up.elapsed())
                    }
                    Ok(Err(failure)) => {
                        if let Some(ready) = ready.take() {
                            let error = match failure {
                                StartFailure::Init(m) => StartError::InitFailed(m),
                                StartFailure::Unavailable(m) => StartError::Unavailable(m),
                            };
                            return self.abandon_start(ready, error);
                        }
                        if let Some(tx) = attempted.take() {
                            let _ = tx.send(());
                        }
                        let message = match failure {
                            StartFailure::Init(m) | StartFailure::Unavailable(m) => m,
                        };
                        (Ended::Exit(ExitReason::InitFailed(message)), Duration::ZERO)
                    }
                    Err(killed) => {
                        if let Some(ready) = ready.take() {
                            return self
                                .abandon_start(ready, StartError::InitFailed(killed.to_string()));
                        }
                        if let Some(tx) = attempted.take() {
                            let _ = tx.send(());
                        }
                        (Ended::Exit(killed), Duration::ZERO)
                    }
                };
                match ended {
                    Ended::Stop(done) => {
                        self.cell.exited(&ExitReason::Shutdown, Status::Restarting);
                        self.remove().await;
                        let _ = done.send(());
                        return;
                    }
                    Ended::Restart(done) => {
                        self.cell.exited(&ExitReason::Shutdown, Status::Restarting);
                        self.intensity.reset();
                        // Answered once the new instance has started (or its
                        // start failed), as OTP's `restart_child` returns.
                        attempted = Some(done);
                    }
                    Ended::Suspend(done) => {
                        self.cell.exited(&ExitReason::Shutdown, Status::Waiting);
                        let _ = done.send(());
                    }
                    Ended::Held(status, done) => {
                        self.cell.exited(&ExitReason::Shutdown, status);
                        self.announce_exit(&ExitReason::Shutdown);
                        let _ = done.send(());
                        match Box::pin(self.held()).await {
                            Wake::Removed => return,
                            Wake::Start => {}
                            Wake::Release(tx) => attempted = Some(tx),
                        }
                    }
                    Ended::Exit(reason) => match Box::pin(self.after_exit(reason, uptime)).await {
                        Wake::Removed => return,
                        Wake::Start => {}
                        Wake::Release(tx) => attempted = Some(tx),
                    },
                }
            }
        }
    }

    /// The first start failed: the child never existed for anyone but the
    /// starter. Its id is free before the starter hears why.
    fn abandon_start(&self, ready: oneshot::Sender<Result<(), StartError>>, error: StartError) {
        self.host.registry.remove(&self.cell);
        let _ = ready.send(Err(error));
    }

    /// Marks the child running on `instance` and announces it.
    fn running(
        &self,
        instance: &Instance,
        ready: Option<oneshot::Sender<Result<(), StartError>>>,
        first: bool,
    ) {
        let version = instance.version.clone();
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
        if let Some(ready) = ready {
            let _ = ready.send(Ok(()));
        }
        let (id, version) = (self.cell.id.to_string(), version.hash.clone());
        match first {
            true => {
                self.host.events.emit(Event::ChildStarted {
                    id,
                    plugin: self.cell.spec.plugin.clone(),
                    version,
                });
            }
            false => {
                self.host.metrics.restart();
                self.host.events.emit(Event::ChildRestarted {
                    id,
                    restarts,
                    version,
                });
            }
        }
    }

    fn announce_exit(&self, reason: &ExitReason) {
        self.host.metrics.exit(reason);
        tracing::info!(child = %self.cell.id, "exited: {reason}");
        self.host.events.emit(Event::ChildExited {
            id: self.cell.id.to_string(),
            reason: reason.clone(),
        });
    }

    /// An instance ended on its own: ask the supervisor (the child's group,
    /// if it has one) and act on it.
    async fn after_exit(&mut self, reason: ExitReason, uptime: Duration) -> Wake {
        self.announce_exit(&reason);
        if let Some(group) = &self.group {
            if !supervisor::wants_restart(self.cell.spec.restart, &reason) {
                self.cell.exited(&reason, Status::Restarting);
                self.remove().await;
                return Wake::Removed;
            }
            self.cell.exited(&reason, Status::Restarting);
            group.exited(self.cell.generation());
            return self.held().await;
        }
        let decision = supervisor::decide(
            self.cell.spec.restart,
            &reason,
            &self.host.config.supervisor,
            &mut self.intensity,
            uptime,
            Instant::now(),
        );
        match decision {
            Decision::Remove => {
                self.cell.exited(&reason, Status::Restarting);
                self.remove().await;
                Wake::Removed
            }
            Decision::Restart { delay } if delay.is_zero() => {
                self.cell.exited(&reason, Status::Restarting);
                Wake::Start
            }
            Decision::Restart { delay } => {
                self.cell.exited(&reason, Status::Backoff);
                self.cell.state().backoff_until = Some(SystemTime::now() + delay);
                tracing::warn!(child = %self.cell.id, "restart intensity exceeded; next restart in {delay:?}");
                self.host.events.emit(Event::ChildBackoff {
                    id: self.cell.id.to_string(),
                    delay_ms: delay.as_millis() as u64,
                    reason,
                });
                self.wait(Some(Instant::now() + delay)).await
            }
            Decision::Fail => {
                self.cell.exited(&reason, Status::Failed);
                self.host
                    .remember_failed(&self.cell.id, Some(reason.clone()));
                tracing::error!(child = %self.cell.id, "restart intensity exceeded; failed: {reason}");
                self.host.events.emit(Event::ChildFailed {
                    id: self.cell.id.to_string(),
                    reason,
                });
                self.wait(None).await
            }
        }
    }

    /// Serves the mailbox with `instance` until it ends.
    async fn serve(&mut self, mut instance: Box<Instance>) -> Ended {
        loop {
            let next = match &self.lease {
                _ if self.direct => {
                    if let Some(lease) = &self.lease {
                        instance.rest(lease);
                    }
                    let (control, mailbox) = (&self.cell.control, &mut self.mailbox);
                    let Woken { next, seat, killed } =
                        next_with_desk(control, mailbox, instance).await;
                    let Some(seat) = seat else {
                        let lost = "the host lost track of its instance".to_string();
                        return Ended::Exit(ExitReason::Killed(lost));
                    };
                    // A call that ended the instance, or a kill for it that
                    // the call finished before it saw.
                    let died = seat.died.or(killed.map(ExitReason::Killed));
                    if let Some(reason) = died {
                        self.put_back(next, true);
                        return Ended::Exit(reason);
                    }
                    instance = seat.instance;
                    // Asked for while on the desk: a call in progress then
                    // finished first (`next_with_desk` waits for it).
                    if let Some(lease) = &self.lease {
                        instance.wake(lease);
                    }
                    if let Some(reason) = instance.take_stop_request() {
                        self.put_back(next, false);
                        Box::pin(self.terminate(&mut instance, &reason)).await;
                        return Ended::Exit(reason);
                    }
                    next
                }
                Some(lease) if instance.holds_stack() => {
                    next_lending_stack(&self.cell.control, &mut self.mailbox, &mut instance, lease)
                        .await
                }
                _ => next_message(&self.cell.control, &mut self.mailbox).await,
            };
            match next {
                Err(Control::Kill { reason }) => return Ended::Exit(ExitReason::Killed(reason)),
                Err(Control::Stop { done }) => {
                    Box::pin(self.terminate(&mut instance, &ExitReason::Shutdown)).await;
                    return Ended::Stop(done);
                }
                Err(Control::Restart { done }) => {
                    Box::pin(self.terminate(&mut instance, &ExitReason::Shutdown)).await;
                    return Ended::Restart(done);
                }
                Err(Control::Suspend { done }) => {
                    Box::pin(self.terminate(&mut instance, &ExitReason::Shutdown)).await;
                    return Ended::Suspend(done);
                }
                Err(Control::Hold { status, done }) => {
                    Box::pin(self.terminate(&mut instance, &ExitReason::Shutdown)).await;
                    return Ended::Held(status, done);
                }
                Err(Control::Release { done }) => {
                    let _ = done.send(());
                }
                // Handed back as the child woke (`next_lending_stack`), or
                // taken back from a caller (`next_with_desk`).
                Err(Control::ReturnStack | Control::Returned) => {}
                Err(Control::Reload { version, done }) => {
                    match Box::pin(self.upgrade(&mut instance, version)).await {
                        Upgrade::Unchanged => {
                            let _ = done.send(Ok(()));
                        }
                        Upgrade::Done(new) => {
                            *instance = new;
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
                // The cell holds a sender for as long as this task runs.
                Ok(None) => return Ended::Exit(ExitReason::Shutdown),
                Ok(Some(envelope)) => {
                    // Boxed: a guest call's future is 1.6 KiB, and inline it
                    // would sit in every idle child's task (3.2 instead of
                    // 1.6 KiB). One allocation per message is the price.
                    if let Err(reason) = Box::pin(self.dispatch(&mut instance, envelope)).await {
                        return Ended::Exit(reason);
                    }
                    if let Some(reason) = instance.take_stop_request() {
                        Box::pin(self.terminate(&mut instance, &reason)).await;
                        return Ended::Exit(reason);
                    }
                }
            }
        }
    }

    /// What the child woke for, when the instance it took back from a caller
    /// cannot serve it: for the next instance. A kill is dropped when the
    /// instance `died` already, since it ended that instance.
    fn put_back(&self, next: Result<Option<Envelope>, Control>, died: bool) {
        match next {
            Ok(Some(envelope)) => self.mailbox.put_back(envelope),
            Ok(None) | Err(Control::Returned) => {}
            Err(Control::Kill { .. }) if died => {}
            Err(control) => self.cell.control.put_back(control),
        }
    }

    /// Moves this child to `version` (OTP's `code_change`): the mailbox waits
    /// meanwhile; the old instance's `snapshot()` goes to the new instance's
    /// `restore()` after its `init(args)`. Any failure of the new version
    /// leaves the old instance serving with its state.
    async fn upgrade(
        &mut self,
        old: &mut Instance,
        version: Arc<crate::catalog::Version>,
    ) -> Upgrade {
        if old.version.hash == version.hash {
            return Upgrade::Unchanged;
        }
        let control = &self.cell.control;
        let state = match guarded(control, pin!(old.snapshot())).await {
            Ok(state) => state,
            Err(reason) => return Upgrade::Died(reason),
        };
        let start = Instance::start(&self.host, &self.cell, version.clone(), old.generation());
        let mut new = match unless_killed(control, pin!(start)).await {
            Ok(Ok(new)) => new,
            Ok(Err(StartFailure::Init(m) | StartFailure::Unavailable(m))) => {
                return Upgrade::Kept(format!("the new version did not start: {m}"));
            }
            Err(kill) => return Upgrade::Died(ExitReason::Killed(kill)),
        };
        if let Some(state) = state {
            let restored = unless_killed(control, pin!(new.restore(&state))).await;
            let why = match restored {
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
                match guarded(control, pin!(instance.handle_call(&msg))).await {
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
            Envelope::Cast { msg } => guarded(control, pin!(instance.handle_cast(&msg))).await,
            Envelope::Info { generation, info } => {
                guarded(control, pin!(instance.handle_info(generation, info))).await
            }
        }
    }

    /// `terminate(reason)`, given `shutdown_ms` at most, and cut short by a
    /// kill.
    async fn terminate(&self, instance: &mut Instance, reason: &ExitReason) {
        let limit = Duration::from_millis(self.cell.spec.shutdown_ms.into());
        let work = async {
            instance.terminate(reason).await;
            Ok(())
        };
        if tokio::time::timeout(limit, guarded(&self.cell.control, pin!(work)))
            .await
            .is_err()
        {
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
        tokio::pin!(sleep);
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
                    Control::Kill { .. } | Control::ReturnStack | Control::Returned => {}
                },
                () = &mut sleep => return Wake::Start,
                envelope = self.mailbox.recv(), if until.is_none() => {
                    if let Some(Envelope::Call { reply, .. }) = envelope {
                        let status = self.cell.state().status;
                        let why = match self.cell.state().last_exit.clone() {
                            Some(exit) => format!("the child is {status}: {exit}"),
                            None => format!("the child is {status}"),
                        };
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
                    Control::Kill { .. } | Control::ReturnStack | Control::Returned => {}
                },
                envelope = self.mailbox.recv(), if failed => {
                    if let Some(Envelope::Call { reply, .. }) = envelope {
                        let why = format!("the child's group {} gave up", self.group.as_ref().map_or("", |g| &g.group));
                        let _ = reply.send(Err(CallError::Failed(why)));
                    }
                }
            }
        }
    }

    /// An operator or a reload brings a down child back.
    fn revive(&mut self) {
        self.intensity.reset();
        if self.cell.state().status == Status::Failed {
            self.host.remember_failed(&self.cell.id, None);
        }
    }

    /// Deregisters the child and forgets it durably (unless the host is
    /// shutting down: then it comes back at the next start). Queued calls
    /// are answered `failed` when this task ends and drops the mailbox;
    /// queued signals are released.
    async fn remove(&self) {
        self.host.registry.remove(&self.cell);
        self.host.forget(&self.cell.id).await;
        if let Some(group) = &self.group {
            group.removed();
        }
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
                Control::Kill { .. } | Control::ReturnStack | Control::Returned => {}
            }
        }
        tracing::info!(child = %self.cell.id, "removed");
        self.host.events.emit(Event::ChildRemoved {
            id: self.cell.id.to_string(),
        });
    }
}
