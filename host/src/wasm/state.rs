//! The data of one instance's `Store`: its child's port, what the instance
//! set up for itself (timers, subscriptions), its WASI and HTTP contexts,
//! and the limits it runs under, with the hooks that enforce them.

use super::outbound::HttpPolicy;
use super::port::Port;
use super::stdio::GuestOutput;
use crate::config::PluginConfig;
use crate::types::ExitReason;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::task::AbortHandle;
use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
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

/// The data of one instance's `Store`: its child's port, what the instance
/// set up for itself, and the limits it runs under.
pub(crate) struct InstanceState {
    pub(super) port: Box<dyn Port>,
    /// Timers this instance set, by reference: they die with it.
    pub(super) timers: HashMap<u64, AbortHandle>,
    /// Topics this instance subscribed to: the subscriptions end with it.
    pub(super) subscriptions: Vec<Arc<str>>,
    wasi: WasiCtx,
    table: ResourceTable,
    http: wasmtime_wasi_http::WasiHttpCtx,
    http_policy: HttpPolicy,
    memory_cap: usize,
    /// Epoch ticks one callback may run, and how many it has run.
    pub(super) cpu_budget: u32,
    pub(super) cpu_ticks: u32,
    /// Set by a host hook (CPU deadline, memory cap, abuse) that stopped the
    /// guest; the exit is then `killed`, not `trap`.
    pub(super) kill: Option<String>,
    /// `runtime.stop` was called: exit after the current callback.
    pub(super) stop_request: Option<ExitReason>,
    /// The last error-level log line of the current callback: a panicking
    /// guest logs its panic message there before it traps.
    pub(super) last_error_log: Option<String>,
}

impl InstanceState {
    /// The state of a new instance of `plugin` for `port`'s child, under
    /// `limits`, with `cpu_budget` epoch ticks per callback. Fails only
    /// when a folder the config grants cannot be opened.
    pub(super) fn new(
        port: Box<dyn Port>,
        plugin: &Arc<str>,
        limits: &Arc<PluginConfig>,
        cpu_budget: u32,
    ) -> Result<InstanceState, String> {
        let wasi = wasi_ctx(port.id(), limits)?;
        let http_policy = HttpPolicy {
            child: port.id().clone(),
            plugin: plugin.clone(),
            limits: limits.clone(),
        };
        Ok(InstanceState {
            port,
            timers: HashMap::new(),
            subscriptions: Vec::new(),
            wasi,
            table: ResourceTable::new(),
            http: wasmtime_wasi_http::WasiHttpCtx::new(),
            http_policy,
            memory_cap: limits.memory_mb as usize * 1024 * 1024,
            cpu_budget,
            cpu_ticks: 0,
            kill: None,
            stop_request: None,
            last_error_log: None,
        })
    }
}

impl Drop for InstanceState {
    fn drop(&mut self) {
        for (_, timer) in self.timers.drain() {
            timer.abort();
        }
        self.port.unsubscribe(&self.subscriptions);
    }
}

impl WasiView for InstanceState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
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
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
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

/// The guest's view of the system: its stdout and stderr go to the log, and
/// it sees no files, environment, arguments or sockets beyond what its
/// plugin config grants.
fn wasi_ctx(id: &Arc<str>, limits: &PluginConfig) -> Result<WasiCtx, String> {
    use wasmtime_wasi::FsPerms;
    let mut b = WasiCtx::builder();
    b.stdout(GuestOutput::new(id.clone(), "stdout"))
        .stderr(GuestOutput::new(id.clone(), "stderr"));
    for (k, v) in &limits.env {
        b.env(k, v);
    }
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
