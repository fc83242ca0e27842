//! One instance: a fresh `Store` serving its child's incarnation, the
//! component instance in it, and the calls into its exports. An instance
//! that trapped or was killed is never called again; its owner, the child's
//! task, ends its incarnation and drops it.

use super::bindings;
use super::bindings::wasmvisor::plugin::types as wit;
use super::catalog::Version;
use super::engine::EPOCH_TICK;
use super::incarnation::{Incarnation, MAX_PENDING, ReplyTx};
use super::info::{Info, to_wit_reason};
use super::state::{InstanceState, Interrupted};
use super::symbols::Symbols;
use super::tier::Slot;
use crate::types::{CallError, ExitReason};
use std::fmt::Write as _;
use std::sync::Arc;
use wasmtime::{PoolConcurrencyLimitError, Store, UpdateDeadline};

/// What a successful `init` asked for.
#[derive(Debug, PartialEq)]
pub(crate) enum Init {
    /// Serve messages.
    Ready,
    /// Run `handle-continue` with this message first.
    Continue(Vec<u8>),
    /// Keep no child.
    Ignore,
}

impl Init {
    /// The message for `handle-continue`, if `init` asked for one.
    pub(crate) fn into_continue(self) -> Option<Vec<u8>> {
        match self {
            Init::Continue(msg) => Some(msg),
            Init::Ready | Init::Ignore => None,
        }
    }
}

/// Why an instance could not continue a child.
#[derive(Debug)]
pub(crate) enum ResumeFailure {
    /// The pool has no slot free now.
    Unavailable(String),
    /// The version did not instantiate, refused the state, or trapped in
    /// `restore`.
    Refused(String),
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
    pub(crate) version: Arc<Version>,
    /// Its place among the on-demand tier's live instances; the pool counts
    /// its own.
    _slot: Option<Slot>,
}

impl Instance {
    /// A fresh `Store` serving `incarnation`, instantiated from the
    /// version's `InstancePre`. On failure the incarnation comes back.
    async fn instantiate(
        version: Arc<Version>,
        incarnation: Box<Incarnation>,
    ) -> Result<Instance, (StartFailure, Box<Incarnation>)> {
        let slot = match version.tier.take_slot() {
            Ok(slot) => slot,
            Err(why) => return Err((StartFailure::Unavailable(why), incarnation)),
        };
        let cpu_budget = version
            .limits
            .cpu_ms
            .div_ceil(EPOCH_TICK.as_millis() as u32);
        let state = InstanceState::new(incarnation, &version.plugin, &version.limits, cpu_budget)
            .map_err(|(why, incarnation)| (StartFailure::Init(why), incarnation))?;
        let mut store = Store::new(&version.tier.engine, state);
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
        match version.pre.instantiate_async(&mut store).await {
            Ok(exports) => Ok(Instance {
                store,
                exports,
                version,
                _slot: slot,
            }),
            Err(e) => {
                let failure = start_failure(e, store.data_mut(), version.symbols.as_deref());
                let incarnation = store
                    .data_mut()
                    .take_incarnation()
                    .expect("a store keeps its incarnation until it is taken");
                Err((failure, incarnation))
            }
        }
    }

    /// *Starts* the child: a new instance serving the new `incarnation`,
    /// then `init(args)`. A failed start drops the incarnation, which ends
    /// what `init` set up.
    pub(crate) async fn start(
        version: Arc<Version>,
        incarnation: Box<Incarnation>,
        args: &Vec<u8>,
    ) -> Result<(Instance, Init), StartFailure> {
        let mut instance = Self::instantiate(version, incarnation)
            .await
            .map_err(|(failure, _)| failure)?;
        instance.begin();
        match instance.exports.call_init(&mut instance.store, args).await {
            Ok(Ok(outcome)) => {
                let init = match outcome {
                    wit::InitOutcome::Ready => Init::Ready,
                    wit::InitOutcome::Continue(msg) => Init::Continue(msg),
                    wit::InitOutcome::Ignore => Init::Ignore,
                };
                Ok((instance, init))
            }
            Ok(Err(message)) => Err(StartFailure::Init(message)),
            Err(e) => {
                let symbols = instance.version.symbols.clone();
                Err(start_failure(
                    e,
                    instance.store.data_mut(),
                    symbols.as_deref(),
                ))
            }
        }
    }

    /// *Continues* the child: a new instance serving the same
    /// `incarnation`, then `restore(state)` with no `init`. When the new
    /// instance cannot start or does not take the state, the incarnation
    /// comes back with why (some of what `restore` set up may stay in it).
    pub(crate) async fn resume(
        version: Arc<Version>,
        incarnation: Box<Incarnation>,
        state: &Vec<u8>,
    ) -> Result<Instance, (ResumeFailure, Box<Incarnation>)> {
        let mut instance = match Self::instantiate(version, incarnation).await {
            Ok(instance) => instance,
            Err((StartFailure::Unavailable(m), incarnation)) => {
                return Err((ResumeFailure::Unavailable(m), incarnation));
            }
            Err((StartFailure::Init(m), incarnation)) => {
                let why = format!("the new version did not start: {m}");
                return Err((ResumeFailure::Refused(why), incarnation));
            }
        };
        instance.begin();
        let why = match instance
            .exports
            .call_restore(&mut instance.store, state)
            .await
        {
            Ok(Ok(())) => return Ok(instance),
            Ok(Err(refused)) => format!("the new version refused the state: {refused}"),
            Err(e) => format!("the new version failed in restore: {}", instance.fail(e)),
        };
        Err((ResumeFailure::Refused(why), instance.take_incarnation()))
    }

    /// Resets the per-callback budget and context.
    fn begin(&mut self) {
        let s = self.store.data_mut();
        s.cpu_ticks = 0;
        s.last_error_log = None;
        self.store.set_epoch_deadline(1);
    }

    fn fail(&mut self, error: wasmtime::Error) -> ExitReason {
        classify(
            error,
            self.store.data_mut(),
            self.version.symbols.as_deref(),
        )
    }

    /// The incarnation this instance serves.
    pub(crate) fn generation(&mut self) -> u64 {
        self.store.data_mut().incarnation().generation()
    }

    /// Takes the incarnation out, to move it to a new instance (a reload
    /// that continues the child). Put it back with
    /// [`Instance::put_incarnation`] before calling this instance again.
    pub(crate) fn take_incarnation(&mut self) -> Box<Incarnation> {
        self.store
            .data_mut()
            .take_incarnation()
            .expect("an instance serves an incarnation until it is taken")
    }

    /// Gives back the incarnation a failed reload took.
    pub(crate) fn put_incarnation(&mut self, incarnation: Box<Incarnation>) {
        self.store.data_mut().put_incarnation(incarnation);
    }

    /// The instance goes, and its incarnation (if it still has it) ends:
    /// every call still waiting for a reply hears `error`.
    pub(crate) fn end(mut self, error: &CallError) {
        if let Some(incarnation) = self.store.data_mut().take_incarnation() {
            incarnation.end(error);
        }
    }

    /// `handle-call`: the reply goes to `reply` now, or later through
    /// `runtime.reply` from any callback of this incarnation.
    pub(crate) async fn handle_call(
        &mut self,
        msg: &Vec<u8>,
        reply: ReplyTx,
    ) -> Result<(), ExitReason> {
        let incarnation = self.store.data_mut().incarnation();
        if incarnation.replies.len() >= MAX_PENDING {
            // Callers that gave up (timed out) need no answer any more.
            incarnation.replies.retain(|_, r| !r.is_closed());
        }
        let reply_to = incarnation.port.next_id();
        incarnation.replies.insert(reply_to, reply);
        // A guest that never answers must not grow host memory without
        // bound: past the cap the incarnation ends, and every waiting
        // caller (this one too) hears `killed`.
        if incarnation.replies.len() > MAX_PENDING {
            return Err(ExitReason::Killed(format!(
                "more than {MAX_PENDING} unanswered calls"
            )));
        }
        self.begin();
        let answer = self
            .exports
            .call_handle_call(&mut self.store, msg, reply_to)
            .await
            .map_err(|e| self.fail(e))?;
        if let Some(answer) = answer
            && let Some(reply) = self
                .store
                .data_mut()
                .incarnation()
                .replies
                .remove(&reply_to)
        {
            let _ = reply.send(Ok(answer));
        }
        Ok(())
    }

    pub(crate) async fn handle_cast(&mut self, msg: &Vec<u8>) -> Result<(), ExitReason> {
        self.begin();
        self.exports
            .call_handle_cast(&mut self.store, msg)
            .await
            .map_err(|e| self.fail(e))
    }

    /// `handle-continue(msg)`, the first message after an `init` that asked
    /// for it.
    pub(crate) async fn handle_continue(&mut self, msg: &Vec<u8>) -> Result<(), ExitReason> {
        self.begin();
        self.exports
            .call_handle_continue(&mut self.store, msg)
            .await
            .map_err(|e| self.fail(e))
    }

    /// Delivers a notification, unless it belongs to another incarnation,
    /// or to a timer, monitor or request that ended meanwhile.
    pub(crate) async fn handle_info(
        &mut self,
        generation: u64,
        info: Info,
    ) -> Result<(), ExitReason> {
        let incarnation = self.store.data_mut().incarnation();
        if generation != incarnation.generation() {
            return Ok(());
        }
        let info = match info {
            Info::Timer { timer, msg } => {
                if incarnation.timers.remove(&timer).is_none() {
                    return Ok(());
                }
                wit::Info::Timer(msg)
            }
            Info::Down {
                reference,
                id,
                reason,
            } => {
                if incarnation.monitors.remove(&reference).is_none() {
                    return Ok(());
                }
                wit::Info::Down(wit::Down {
                    ref_: reference,
                    id: id.to_string(),
                    reason: to_wit_reason(&reason),
                })
            }
            Info::Event { topic, msg } => wit::Info::Event(wit::Event {
                topic: topic.to_string(),
                msg: msg.to_vec(),
            }),
            Info::Exit { id, reason } => wit::Info::Exit(wit::ExitSignal {
                id: id.to_string(),
                reason: to_wit_reason(&reason),
            }),
            Info::Http { id, result } => {
                if incarnation.requests.remove(&id).is_none() {
                    return Ok(());
                }
                wit::Info::HttpResponse(wit::HttpResponse {
                    id,
                    result: result.map(|r| wit::HttpReply {
                        status: r.status,
                        headers: r.headers,
                        body: r.body,
                    }),
                })
            }
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
            let id = self.store.data().id.clone();
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

    /// The exit the guest asked for with `runtime.stop`, if it did.
    /// Whether its incarnation owes an answer to a deferred call or waits
    /// for an HTTP response.
    pub(crate) fn owes_work(&mut self) -> bool {
        self.store.data_mut().incarnation().owes_work()
    }

    /// `restore(state)` after `init`: a child *started* with a stored state
    /// (after a host crash, or a restart from a checkpoint). `Ok(Err)` when
    /// the plugin refused the state.
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

    /// Whether the guest asked to hibernate during its last callback.
    pub(crate) fn take_hibernate_request(&mut self) -> bool {
        std::mem::take(&mut self.store.data_mut().hibernate_request)
    }

    /// Bytes of linear memory the instance has.
    pub(crate) fn memory_bytes(&self) -> u64 {
        self.store.data().memory as u64
    }

    pub(crate) fn take_stop_request(&mut self) -> Option<ExitReason> {
        self.store.data_mut().stop_request.take()
    }
}

/// Sorts an error from a guest call into trap or kill. A host hook that
/// stopped the guest left its reason in `state.kill`; a host failure is
/// `killed` with a message that says so; everything else is the guest's
/// fault, reported with the panic message it logged, if any.
fn classify(
    error: wasmtime::Error,
    state: &mut InstanceState,
    symbols: Option<&Symbols>,
) -> ExitReason {
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
    let trap = match state.last_error_log.take() {
        Some(logged) => format!("{logged} ({trap})"),
        None => trap,
    };
    // wasmtime records the guest's frames with every trap; naming them
    // (and, for a `debug` plugin, placing them in its sources) costs only
    // here.
    match error.downcast_ref::<wasmtime::WasmBacktrace>() {
        Some(backtrace) if !backtrace.frames().is_empty() => ExitReason::Trap(format!(
            "{trap}\nwasm backtrace:\n{}",
            frames(backtrace, symbols)
        )),
        _ => ExitReason::Trap(trap),
    }
}

/// One line per frame, innermost first: `module!function`, demangled, and
/// ` at file:line` where the plugin's debug info says.
fn frames(backtrace: &wasmtime::WasmBacktrace, symbols: Option<&Symbols>) -> String {
    let mut out = String::new();
    for (i, frame) in backtrace.frames().iter().enumerate() {
        let module = frame.module().name();
        let function = match frame.func_name() {
            Some(name) => format!("{:#}", rustc_demangle::demangle(name)),
            None => format!("<wasm function {}>", frame.func_index()),
        };
        let _ = write!(
            out,
            "{}{i:>4}: {}!{function}",
            if i == 0 { "" } else { "\n" },
            module.unwrap_or("<unknown>")
        );
        let located = symbols.zip(frame.module_offset());
        if let Some(place) = located.and_then(|(s, offset)| s.locate(module, offset)) {
            let _ = write!(out, " at {place}");
        }
    }
    out
}

/// Why a start failed with `error`: the host could not serve it (the pool
/// is full, or the operating system refused), or the guest's instantiation
/// or `init` failed (trapped, or was killed by a limit).
fn start_failure(
    error: wasmtime::Error,
    state: &mut InstanceState,
    symbols: Option<&Symbols>,
) -> StartFailure {
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
    StartFailure::Init(classify(error, state, symbols).to_string())
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
