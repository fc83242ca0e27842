//! One instance: a fresh `Store` with its host state, the component instance
//! in it, and the calls into its exports. An instance that trapped or was
//! killed is never called again; its owner drops it.

use crate::address::{Cell, InfoMsg};
use crate::bindings;
use crate::bindings::wasmvisor::plugin::types as wit;
use crate::catalog::Version;
use crate::host::HostInner;
use crate::stacks::{Lease, StackPermit};
use crate::stdio::GuestOutput;
use crate::types::ExitReason;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::task::AbortHandle;
use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, Store, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// Pending timers one instance may hold; setting one more kills it.
pub(crate) const MAX_TIMERS: usize = 10_000;

/// The error a host hook returns to stop the guest: the reason is in
/// [`InstanceState::kill`].
#[derive(Debug)]
pub(crate) struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted by the host")
    }
}

impl std::error::Error for Interrupted {}

/// The data of one instance's `Store`: everything the runtime imports need.
pub struct InstanceState {
    pub(crate) host: Arc<HostInner>,
    pub(crate) cell: Arc<Cell>,
    pub(crate) generation: u64,
    /// Built on the guest's first WASI call: most guests make none, and a
    /// context is about 0.8 KiB per instance. Built at start when it can
    /// fail (folders to open), so that the start reports it.
    wasi: Option<Box<WasiCtx>>,
    table: ResourceTable,
    memory_cap: usize,
    cpu_budget: u32,
    cpu_ticks: u32,
    /// Set by a host hook (CPU deadline, memory cap, abuse) that stopped the
    /// guest; the exit is then `killed`, not `trap`.
    pub(crate) kill: Option<String>,
    /// `runtime.stop` was called: exit after the current callback.
    pub(crate) stop_request: Option<ExitReason>,
    /// The last error-level log line of the current callback: a panicking
    /// guest logs its panic message there before it traps.
    pub(crate) last_error_log: Option<String>,
    pub(crate) timers: HashMap<u64, AbortHandle>,
    pub(crate) subscriptions: Vec<Arc<str>>,
    http: wasmtime_wasi_http::WasiHttpCtx,
    http_policy: crate::outbound::HttpPolicy,
    /// Held while the store may hold a native stack (`stacks.rs`).
    stack: Option<StackPermit>,
}

impl Drop for InstanceState {
    fn drop(&mut self) {
        for (_, timer) in self.timers.drain() {
            timer.abort();
        }
        self.host.topics.unsubscribe(
            &self.subscriptions,
            Arc::as_ptr(&self.cell),
            self.generation,
        );
        self.host.metrics.instance_dropped();
    }
}

impl WasiView for InstanceState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        let limits = &self.http_policy.version.limits;
        let ctx =
            (self.wasi).get_or_insert_with(|| Box::new(wasi_base(&self.cell, limits).build()));
        WasiCtxView {
            ctx,
            table: &mut self.table,
        }
    }
}

impl wasmtime_wasi_http::WasiHttpView for InstanceState {
    fn http(&mut self) -> wasmtime_wasi_http::WasiHttpCtxView<'_> {
        wasmtime_wasi_http::WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.http_policy,
        }
    }
}

impl ResourceLimiter for InstanceState {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if current > 0 {
            // Instantiation asks for the initial size (from 0); anything
            // else is a `memory.grow`, which costs page faults and a limit
            // check on a path that should not need it.
            self.host.metrics.memory_grow();
        }
        if desired > self.memory_cap {
            self.kill = Some(format!(
                "memory limit of {} MiB exceeded (asked for {} KiB)",
                self.memory_cap / (1024 * 1024),
                desired / 1024
            ));
            return Err(wasmtime::Error::new(Interrupted));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        _desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // The pool's table_elements bounds tables.
        Ok(true)
    }
}

/// Why an instance could not be created.
pub(crate) enum StartFailure {
    /// `init` failed, trapped or was killed: `init_failed`.
    Init(String),
    /// The host could not create the instance at all (pool exhausted).
    Unavailable(String),
}

/// A live instance.
pub(crate) struct Instance {
    store: Store<InstanceState>,
    exports: bindings::Plugin,
    pub(crate) version: Arc<Version>,
}

impl Instance {
    /// A fresh `Store`, instantiated from the version's cached `InstancePre`,
    /// then `init(args)`.
    pub(crate) async fn start(
        host: &Arc<HostInner>,
        cell: &Arc<Cell>,
        version: Arc<Version>,
        generation: u64,
    ) -> Result<Instance, StartFailure> {
        let limits = &version.limits;
        let wasi = match limits.dirs.is_empty() {
            true => None,
            false => Some(Box::new(
                wasi_ctx(cell, limits).map_err(StartFailure::Init)?,
            )),
        };
        let state = InstanceState {
            host: host.clone(),
            cell: cell.clone(),
            generation,
            wasi,
            table: ResourceTable::new(),
            memory_cap: limits.memory_mb as usize * 1024 * 1024,
            cpu_budget: limits
                .cpu_ms
                .div_ceil(crate::engine::EPOCH_TICK.as_millis() as u32),
            cpu_ticks: 0,
            kill: None,
            stop_request: None,
            last_error_log: None,
            timers: HashMap::new(),
            subscriptions: Vec::new(),
            http: wasmtime_wasi_http::WasiHttpCtx::new(),
            http_policy: crate::outbound::HttpPolicy {
                child: cell.id.clone(),
                version: version.clone(),
            },
            stack: None,
        };
        let mut store = Store::new(&host.engine, state);
        if host.config.tuning.memory_limit {
            store.limiter(|s| s);
        }
        store.epoch_deadline_callback(|mut ctx| {
            let s = ctx.data_mut();
            s.cpu_ticks += 1;
            if s.cpu_ticks >= s.cpu_budget {
                s.kill = Some(format!(
                    "CPU deadline of {} ms per message exceeded",
                    s.cpu_budget * crate::engine::EPOCH_TICK.as_millis() as u32
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

        if host.stacks.per_callback() {
            store.data_mut().stack = Some(host.stacks.acquire(&host.metrics).await);
        }
        let exports = match version.pre.instantiate_async(&mut store).await {
            Ok(exports) => exports,
            Err(e) => return Err(start_failure(e, store.data_mut())),
        };
        let mut instance = Instance {
            store,
            exports,
            version,
        };
        let args = cell.spec.args.to_vec();
        instance.begin().await;
        let result = instance.exports.call_init(&mut instance.store, &args).await;
        // What comes after `init` (a group's other starts, a reload's
        // `restore`) may wait; an instance holds no stack meanwhile.
        instance.release_stack();
        match result {
            Ok(Ok(())) => Ok(instance),
            Ok(Err(message)) => Err(StartFailure::Init(message)),
            Err(e) => Err(start_failure(e, instance.store.data_mut())),
        }
    }

    /// Takes a native stack (if the store has none) and resets the
    /// per-callback budget and context.
    async fn begin(&mut self) {
        if self.store.data().stack.is_none() && self.store.data().host.stacks.per_callback() {
            let host = self.store.data().host.clone();
            let permit = host.stacks.acquire(&host.metrics).await;
            self.store.data_mut().stack = Some(permit);
        }
        let s = self.store.data_mut();
        s.cpu_ticks = 0;
        s.last_error_log = None;
        self.store.set_epoch_deadline(1);
    }

    /// Gives the store's native stack back to the pool, then the permit for
    /// it. The child calls this when another instance's callback wants the
    /// stack its idle instance holds (`stacks.rs`).
    pub(crate) fn release_stack(&mut self) {
        if self.holds_stack() {
            self.store.release_fiber_stack();
            self.store.data_mut().stack = None;
        }
    }

    /// Whether the store holds a stack it should hand back before waiting
    /// (only with `[engine] stack_per_callback`).
    pub(crate) fn holds_stack(&self) -> bool {
        self.store.data().stack.is_some()
    }

    /// The instance is about to sit idle: lends its stack (true), or hands
    /// it back now (false) when it holds none the others may ask for (none
    /// at all, or one mapped past the pool) or the pool is short
    /// (`Stacks::lend`).
    pub(crate) fn rest(&mut self, lease: &Arc<Lease>) -> bool {
        let lendable = self
            .store
            .data()
            .stack
            .as_ref()
            .is_some_and(|s| s.lendable());
        if lendable && self.store.data().host.stacks.lend(lease) {
            return true;
        }
        self.release_stack();
        false
    }

    /// The instance's child (or a caller running its call) woke it: takes
    /// its lease off idle and hands back a stack that was asked for
    /// meanwhile, before anything else runs on it.
    pub(crate) fn wake(&mut self, lease: &Lease) {
        if lease.wake() {
            self.release_stack();
        }
    }

    fn fail(&mut self, error: wasmtime::Error) -> ExitReason {
        classify(error, self.store.data_mut())
    }

    pub(crate) fn generation(&self) -> u64 {
        self.store.data().generation
    }

    pub(crate) async fn handle_call(&mut self, msg: &Vec<u8>) -> Result<Vec<u8>, ExitReason> {
        self.begin().await;
        self.exports
            .call_handle_call(&mut self.store, msg)
            .await
            .map_err(|e| self.fail(e))
    }

    pub(crate) async fn handle_cast(&mut self, msg: &Vec<u8>) -> Result<(), ExitReason> {
        self.begin().await;
        self.exports
            .call_handle_cast(&mut self.store, msg)
            .await
            .map_err(|e| self.fail(e))
    }

    /// Delivers a notification, unless it belongs to an earlier instance or
    /// is a timer that was cancelled meanwhile.
    pub(crate) async fn handle_info(
        &mut self,
        generation: u64,
        info: InfoMsg,
    ) -> Result<(), ExitReason> {
        if generation != self.generation() {
            return Ok(());
        }
        let info = match info {
            InfoMsg::Timer { timer, msg } => {
                if self.store.data_mut().timers.remove(&timer).is_none() {
                    return Ok(());
                }
                wit::Info::Timer(msg)
            }
            InfoMsg::Down { id, reason } => wit::Info::Down(wit::Down {
                id: id.to_string(),
                reason: to_wit_reason(&reason),
            }),
            InfoMsg::Event { topic, msg } => wit::Info::Event(wit::Event {
                topic: topic.to_string(),
                msg: msg.to_vec(),
            }),
        };
        self.begin().await;
        self.exports
            .call_handle_info(&mut self.store, &info)
            .await
            .map_err(|e| self.fail(e))
    }

    /// `terminate(reason)`; its failure only matters for the log, since the
    /// instance is going away anyway.
    pub(crate) async fn terminate(&mut self, reason: &ExitReason) {
        self.begin().await;
        if let Err(e) = self
            .exports
            .call_terminate(&mut self.store, &to_wit_reason(reason))
            .await
        {
            let why = self.fail(e);
            tracing::warn!(child = %self.store.data().cell.id, "terminate failed: {why}");
        }
    }

    /// `snapshot()`: the state to carry into a new version.
    pub(crate) async fn snapshot(&mut self) -> Result<Option<Vec<u8>>, ExitReason> {
        self.begin().await;
        let result = self.exports.call_snapshot(&mut self.store).await;
        // The new version's instance starts next and needs a stack too.
        self.release_stack();
        result.map_err(|e| self.fail(e))
    }

    /// `restore(state)` on a freshly started instance.
    pub(crate) async fn restore(
        &mut self,
        state: &Vec<u8>,
    ) -> Result<Result<(), String>, ExitReason> {
        self.begin().await;
        let result = self.exports.call_restore(&mut self.store, state).await;
        self.release_stack();
        result.map_err(|e| self.fail(e))
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

    /// Whether the guest asked to exit with `runtime.stop`.
    pub(crate) fn stop_requested(&self) -> bool {
        self.store.data().stop_request.is_some()
    }

    /// The exit the guest asked for with `runtime.stop`, if it did.
    pub(crate) fn take_stop_request(&mut self) -> Option<ExitReason> {
        self.store.data_mut().stop_request.take()
    }
}

/// The guest's view of the system: its stdout and stderr go to the log, and
/// it sees no files, environment, arguments or sockets beyond what its
/// plugin config grants.
fn wasi_ctx(cell: &Cell, limits: &crate::config::PluginConfig) -> Result<WasiCtx, String> {
    use wasmtime_wasi::FsPerms;
    let mut b = wasi_base(cell, limits);
    for d in &limits.dirs {
        let perms = match d.writable {
            true => FsPerms::ReadWrite,
            false => FsPerms::ReadOnly,
        };
        b.preopened_dir(&d.host, &d.guest, perms)
            .map_err(|e| format!("cannot grant {} as {}: {e}", d.host.display(), d.guest))?;
    }
    Ok(b.build())
}

/// [`wasi_ctx`] without the folders, the only part that can fail.
fn wasi_base(cell: &Cell, limits: &crate::config::PluginConfig) -> wasmtime_wasi::WasiCtxBuilder {
    let mut b = WasiCtx::builder();
    b.stdout(GuestOutput::new(cell.id.clone(), "stdout"))
        .stderr(GuestOutput::new(cell.id.clone(), "stderr"));
    for (k, v) in &limits.env {
        b.env(k, v);
    }
    b
}

/// Sorts an error from a guest call into trap or kill. A host hook that
/// stopped the guest left its reason in `state.kill`; everything else is the
/// guest's fault, reported with the panic message it logged, if any.
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

/// Why a start failed with `error`: the host could not serve it (the
/// operating system refused, or the pool is full), or the guest's
/// instantiation or `init` failed (trapped, or was killed by a limit).
fn start_failure(error: wasmtime::Error, state: &mut InstanceState) -> StartFailure {
    if state.kill.is_none()
        && let Some(failure) = host_failure(&error)
    {
        return StartFailure::Unavailable(failure);
    }
    match classify(error, state) {
        ExitReason::Trap(m) if is_resource_exhaustion(&m) => StartFailure::Unavailable(m),
        other => StartFailure::Init(other.to_string()),
    }
}

/// What the host failed at, when `error` is the host's and not the guest's:
/// the operating system refused what the call needed (a native stack mapped
/// past the pool, memory). A guest that breaks the component ABI gets plain
/// errors too, but never an I/O error or an out-of-memory one.
fn host_failure(error: &wasmtime::Error) -> Option<String> {
    let host = error.downcast_ref::<wasmtime::Trap>().is_none()
        && (error.is::<std::io::Error>() || error.is::<wasmtime::error::OutOfMemory>());
    host.then(|| format!("host failure, not the guest's: {error:#}"))
}

fn is_resource_exhaustion(message: &str) -> bool {
    message.contains("maximum concurrent") || message.contains("pooling allocator")
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
