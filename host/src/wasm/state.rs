//! The data of one instance's `Store`: its child's incarnation, its WASI
//! and HTTP contexts, and the limits it runs under, with the hooks that
//! enforce them.

use super::incarnation::Incarnation;
use super::outbound::HttpPolicy;
use super::stdio::GuestOutput;
use crate::config::PluginConfig;
use crate::types::ExitReason;
use std::sync::Arc;
use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

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

/// The data of one instance's `Store`: its child's incarnation, and the
/// limits it runs under.
pub(crate) struct InstanceState {
    /// Always there while guest code runs; out only while a reload moves it
    /// to the next instance.
    incarnation: Option<Box<Incarnation>>,
    /// The child's id, for log lines.
    pub(super) id: Arc<str>,
    wasi: WasiCtx,
    table: ResourceTable,
    http: wasmtime_wasi_http::WasiHttpCtx,
    http_policy: HttpPolicy,
    memory_cap: usize,
    /// Bytes of linear memory the instance has, summed over its memories.
    pub(super) memory: usize,
    /// Epoch ticks one callback may run, and how many it has run.
    pub(super) cpu_budget: u32,
    pub(super) cpu_ticks: u32,
    /// Set by a host hook (CPU deadline, memory cap, abuse) that stopped the
    /// guest; the exit is then `killed`, not `trap`.
    pub(super) kill: Option<String>,
    /// `runtime.stop` was called: exit after the current callback.
    pub(super) stop_request: Option<ExitReason>,
    /// `runtime.hibernate` was called: hibernate after the current
    /// callback, if the child can.
    pub(super) hibernate_request: bool,
    /// The last error-level log line of the current callback: a panicking
    /// guest logs its panic message there before it traps.
    pub(super) last_error_log: Option<String>,
}

impl InstanceState {
    /// The state of a new instance of `plugin` serving `incarnation`, under
    /// `limits`, with `cpu_budget` epoch ticks per callback. Fails only
    /// when a folder the config grants cannot be opened.
    pub(super) fn new(
        incarnation: Box<Incarnation>,
        plugin: &Arc<str>,
        limits: &Arc<PluginConfig>,
        cpu_budget: u32,
    ) -> Result<InstanceState, (String, Box<Incarnation>)> {
        let id = incarnation.port.id().clone();
        let wasi = match wasi_ctx(&id, limits) {
            Ok(wasi) => wasi,
            Err(why) => return Err((why, incarnation)),
        };
        let http_policy = HttpPolicy {
            child: id.clone(),
            plugin: plugin.clone(),
            limits: limits.clone(),
        };
        Ok(InstanceState {
            incarnation: Some(incarnation),
            id,
            wasi,
            table: ResourceTable::new(),
            http: wasmtime_wasi_http::WasiHttpCtx::new(),
            http_policy,
            memory_cap: limits.memory_mb as usize * 1024 * 1024,
            memory: 0,
            cpu_budget,
            cpu_ticks: 0,
            kill: None,
            stop_request: None,
            hibernate_request: false,
            last_error_log: None,
        })
    }

    /// The child's incarnation.
    pub(super) fn incarnation(&mut self) -> &mut Incarnation {
        // `Instance` puts it back before any guest code runs again.
        self.incarnation
            .as_mut()
            .expect("an instance runs guest code only with its incarnation")
    }

    /// Takes the incarnation out (an exit, or a reload moving it on).
    pub(super) fn take_incarnation(&mut self) -> Option<Box<Incarnation>> {
        self.incarnation.take()
    }

    /// Puts an incarnation back (a reload that failed gives it back).
    pub(super) fn put_incarnation(&mut self, incarnation: Box<Incarnation>) {
        self.incarnation = Some(incarnation);
    }

    /// The limits HTTP requests from this instance run under.
    pub(super) fn http_policy(&self) -> &HttpPolicy {
        &self.http_policy
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
        current: usize,
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
        self.memory += desired.saturating_sub(current);
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
