//! One instance: a fresh `Store` with its host state, the component instance
//! in it, and the calls into its exports. An instance that trapped or was
//! killed is never called again; its owner, the child's task, drops it.

use super::bindings;
use super::bindings::wasmvisor::plugin::types as wit;
use super::catalog::Version;
use super::engine::EPOCH_TICK;
use super::port::Port;
use super::state::{InstanceState, Interrupted};
use crate::types::ExitReason;
use bytes::Bytes;
use std::sync::Arc;
use wasmtime::{Engine, PoolConcurrencyLimitError, Store, UpdateDeadline};

/// A runtime notification for `handle-info`.
pub(crate) enum Info {
    Timer { timer: u64, msg: Vec<u8> },
    Down { id: Arc<str>, reason: ExitReason },
    Event { topic: Arc<str>, msg: Bytes },
}

/// Why an instance could not be created.
#[derive(Debug)]
pub(crate) enum StartFailure {
    /// Instantiation or `init` failed, trapped or was killed: `init_failed`.
    Init(String),
    /// The host could not create the instance at all (the pool is full, or
    /// the operating system refused): `unavailable`.
    Unavailable(String),
}

/// A live instance.
pub(crate) struct Instance {
    store: Store<InstanceState>,
    exports: bindings::Plugin,
    /// The child's incarnation it serves: notifications for another are
    /// stale.
    generation: u64,
    pub(crate) version: Arc<Version>,
}

impl Instance {
    /// A fresh `Store` for `port`'s child, instantiated from the version's
    /// `InstancePre`, then `init(args)`.
    pub(crate) async fn start(
        engine: &Engine,
        version: Arc<Version>,
        port: Box<dyn Port>,
        generation: u64,
        args: &Vec<u8>,
    ) -> Result<Instance, StartFailure> {
        let cpu_budget = version
            .limits
            .cpu_ms
            .div_ceil(EPOCH_TICK.as_millis() as u32);
        let state = InstanceState::new(port, &version.plugin, &version.limits, cpu_budget)
            .map_err(StartFailure::Init)?;
        let mut store = Store::new(engine, state);
        store.limiter(|s| s);
        store.epoch_deadline_callback(|mut ctx| {
            let s = ctx.data_mut();
            s.cpu_ticks += 1;
            if s.cpu_ticks >= s.cpu_budget {
                s.kill = Some(format!(
                    "CPU deadline of {} ms per message exceeded",
                    s.cpu_budget * EPOCH_TICK.as_millis() as u32
                ));
                return Err(wasmtime::Error::new(Interrupted));
            }
            // Yield at every tick so that a busy guest shares its thread;
            // tokio's own yield puts the task behind the others that wait.
            Ok(UpdateDeadline::YieldCustom(
                1,
                Box::pin(tokio::task::yield_now()),
            ))
        });
        store.set_epoch_deadline(1);
        let exports = match version.pre.instantiate_async(&mut store).await {
            Ok(exports) => exports,
            Err(e) => return Err(start_failure(e, store.data_mut())),
        };
        let mut instance = Instance {
            store,
            exports,
            generation,
            version,
        };
        instance.begin();
        match instance.exports.call_init(&mut instance.store, args).await {
            Ok(Ok(())) => Ok(instance),
            Ok(Err(message)) => Err(StartFailure::Init(message)),
            Err(e) => Err(start_failure(e, instance.store.data_mut())),
        }
    }

    /// Resets the per-callback budget and context.
    fn begin(&mut self) {
        let s = self.store.data_mut();
        s.cpu_ticks = 0;
        s.last_error_log = None;
        self.store.set_epoch_deadline(1);
    }

    fn fail(&mut self, error: wasmtime::Error) -> ExitReason {
        classify(error, self.store.data_mut())
    }

    /// The child's incarnation this instance serves.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    pub(crate) async fn handle_call(&mut self, msg: &Vec<u8>) -> Result<Vec<u8>, ExitReason> {
        self.begin();
        self.exports
            .call_handle_call(&mut self.store, msg)
            .await
            .map_err(|e| self.fail(e))
    }

    pub(crate) async fn handle_cast(&mut self, msg: &Vec<u8>) -> Result<(), ExitReason> {
        self.begin();
        self.exports
            .call_handle_cast(&mut self.store, msg)
            .await
            .map_err(|e| self.fail(e))
    }

    /// Delivers a notification, unless it belongs to another incarnation
    /// or is a timer that was cancelled meanwhile.
    pub(crate) async fn handle_info(
        &mut self,
        generation: u64,
        info: Info,
    ) -> Result<(), ExitReason> {
        if generation != self.generation {
            return Ok(());
        }
        let info = match info {
            Info::Timer { timer, msg } => {
                if self.store.data_mut().timers.remove(&timer).is_none() {
                    return Ok(());
                }
                wit::Info::Timer(msg)
            }
            Info::Down { id, reason } => wit::Info::Down(wit::Down {
                id: id.to_string(),
                reason: to_wit_reason(&reason),
            }),
            Info::Event { topic, msg } => wit::Info::Event(wit::Event {
                topic: topic.to_string(),
                msg: msg.to_vec(),
            }),
        };
        self.begin();
        self.exports
            .call_handle_info(&mut self.store, &info)
            .await
            .map_err(|e| self.fail(e))
    }

    /// `terminate(reason)`; its failure only matters for the log, since the
    /// instance is going away anyway.
    pub(crate) async fn terminate(&mut self, reason: &ExitReason) {
        self.begin();
        if let Err(e) = self
            .exports
            .call_terminate(&mut self.store, &to_wit_reason(reason))
            .await
        {
            let why = self.fail(e);
            let id = self.store.data().port.id().clone();
            tracing::warn!(child = %id, "terminate failed: {why}");
        }
    }

    /// `snapshot()`: the state to carry into a new version.
    pub(crate) async fn snapshot(&mut self) -> Result<Option<Vec<u8>>, ExitReason> {
        self.begin();
        self.exports
            .call_snapshot(&mut self.store)
            .await
            .map_err(|e| self.fail(e))
    }

    /// `restore(state)` on a freshly started instance: the guest's refusal
    /// inside, an exit outside.
    pub(crate) async fn restore(
        &mut self,
        state: &Vec<u8>,
    ) -> Result<Result<(), String>, ExitReason> {
        self.begin();
        self.exports
            .call_restore(&mut self.store, state)
            .await
            .map_err(|e| self.fail(e))
    }

    /// Hot reload succeeded: this new instance continues `old`'s incarnation
    /// and takes over its pending timers and its subscriptions (its own
    /// `init` may have subscribed to some of them again; they are one
    /// subscription). `old` is left owning nothing, so dropping it cancels
    /// nothing.
    pub(crate) fn take_over(&mut self, old: &mut Instance) {
        let (new, old) = (self.store.data_mut(), old.store.data_mut());
        new.timers.extend(old.timers.drain());
        for topic in old.subscriptions.drain(..) {
            if !new.subscriptions.contains(&topic) {
                new.subscriptions.push(topic);
            }
        }
    }

    /// Hot reload failed: this new instance is dropped while `old` goes on.
    /// It shares `old`'s incarnation, so it must not end the subscriptions
    /// they have in common; its own timers and new subscriptions do end.
    pub(crate) fn discard_beside(mut self, old: &Instance) {
        let kept = &old.store.data().subscriptions;
        self.store
            .data_mut()
            .subscriptions
            .retain(|t| !kept.contains(t));
    }

    /// The exit the guest asked for with `runtime.stop`, if it did.
    pub(crate) fn take_stop_request(&mut self) -> Option<ExitReason> {
        self.store.data_mut().stop_request.take()
    }
}

/// Sorts an error from a guest call into trap or kill. A host hook that
/// stopped the guest left its reason in `state.kill`; a host failure is
/// `killed` with a message that says so; everything else is the guest's
/// fault, reported with the panic message it logged, if any.
fn classify(error: wasmtime::Error, state: &mut InstanceState) -> ExitReason {
    if let Some(reason) = state.kill.take() {
        return ExitReason::Killed(reason);
    }
    if let Some(failure) = host_failure(&error) {
        return ExitReason::Killed(failure);
    }
    let trap = match error.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => trap.to_string(),
        None => format!("{error:#}"),
    };
    match state.last_error_log.take() {
        Some(logged) => ExitReason::Trap(format!("{logged} ({trap})")),
        None => ExitReason::Trap(trap),
    }
}

/// Why a start failed with `error`: the host could not serve it (the pool
/// is full, or the operating system refused), or the guest's instantiation
/// or `init` failed (trapped, or was killed by a limit).
fn start_failure(error: wasmtime::Error, state: &mut InstanceState) -> StartFailure {
    if state.kill.is_none() {
        if error.is::<PoolConcurrencyLimitError>() {
            return StartFailure::Unavailable(format!(
                "the instance pool is full ([pool] max_instances): {error:#}"
            ));
        }
        if let Some(failure) = host_failure(&error) {
            return StartFailure::Unavailable(failure);
        }
    }
    StartFailure::Init(classify(error, state).to_string())
}

/// What the host failed at, when `error` is the host's and not the guest's:
/// the operating system refused what the call needed (memory, a mapping).
/// A guest that breaks the component ABI gets plain errors too, but never
/// an I/O error or an out-of-memory one.
fn host_failure(error: &wasmtime::Error) -> Option<String> {
    let host = error.downcast_ref::<wasmtime::Trap>().is_none()
        && (error.is::<std::io::Error>() || error.is::<wasmtime::OutOfMemory>());
    host.then(|| format!("host failure, not the guest's: {error:#}"))
}

pub(crate) fn to_wit_reason(reason: &ExitReason) -> wit::ExitReason {
    match reason {
        ExitReason::Normal => wit::ExitReason::Normal,
        ExitReason::Shutdown => wit::ExitReason::Shutdown,
        ExitReason::Trap(m) => wit::ExitReason::Trap(m.clone()),
        ExitReason::Killed(m) => wit::ExitReason::Killed(m.clone()),
        ExitReason::InitFailed(m) => wit::ExitReason::InitFailed(m.clone()),
        ExitReason::Noproc => wit::ExitReason::Noproc,
    }
}

pub(crate) fn from_wit_reason(reason: wit::ExitReason) -> ExitReason {
    match reason {
        wit::ExitReason::Normal => ExitReason::Normal,
        wit::ExitReason::Shutdown => ExitReason::Shutdown,
        wit::ExitReason::Trap(m) => ExitReason::Trap(m),
        wit::ExitReason::Killed(m) => ExitReason::Killed(m),
        wit::ExitReason::InitFailed(m) => ExitReason::InitFailed(m),
        wit::ExitReason::Noproc => ExitReason::Noproc,
    }
}

#[cfg(test)]
mod tests {
    use super::host_failure;

    #[test]
    fn an_os_refusal_is_a_host_failure_and_a_trap_or_abi_error_is_not() {
        let refused = wasmtime::Error::new(std::io::Error::from_raw_os_error(12))
            .context("allocating a fiber stack");
        let failure = host_failure(&refused).expect("an I/O error is the host's");
        assert!(failure.starts_with("host failure"), "{failure}");
        assert!(failure.contains("allocating a fiber stack"), "{failure}");
        let trap = wasmtime::Error::new(wasmtime::Trap::UnreachableCodeReached);
        assert_eq!(host_failure(&trap), None);
        let abi = wasmtime::Error::msg("invalid utf-8 in a string the guest returned");
        assert_eq!(host_failure(&abi), None);
    }
}
