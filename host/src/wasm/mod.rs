//! Layer 2, WebAssembly: one engine and linker, the catalog of compiled
//! plugin versions, the compile cache, one instance (a `Store` and its
//! component instance), and the host functions guests import. What a guest
//! may ask of the rest of the host goes through its child's [`Port`], which
//! the layers above implement; nothing here imports them.

mod bindings;
mod cache;
mod catalog;
mod engine;
mod imports;
mod incarnation;
mod info;
mod instance;
mod outbound;
mod port;
mod state;
mod stdio;

pub(crate) use catalog::Catalog;
pub use catalog::Version;
pub use catalog::{WIT_SOURCE, WIT_VERSION};
pub(crate) use catalog::{content_hash, plugin_name};
pub(crate) use incarnation::{Incarnation, ReplyTx};
pub(crate) use info::Info;
pub(crate) use instance::{Init, Instance, ResumeFailure, StartFailure};
pub(crate) use port::Port;

use crate::config::Config;
use anyhow::Result;
use cache::ArtifactCache;
use state::InstanceState;
use std::sync::Arc;
use wasmtime::Engine;
use wasmtime::component::Linker;

/// What the instance pool holds at one moment.
#[derive(Debug, Default)]
pub(crate) struct PoolUsage {
    /// Live component instances.
    pub(crate) instances: u64,
    /// Bytes freed slots keep resident, by kind (memory, table, stack).
    pub(crate) kept: Vec<(&'static str, u64)>,
}

/// The wasm side of a host: what every child's instances are made with.
pub(crate) struct Wasm {
    pub(crate) engine: Engine,
    linker: Linker<InstanceState>,
    pub(crate) catalog: Catalog,
    /// Compiled artifacts on disk (none when ephemeral).
    cache: Option<Arc<ArtifactCache>>,
}

impl Wasm {
    /// The engine (with its epoch ticker, which calls `on_tick` every
    /// millisecond), the linker, an empty catalog and, unless the config is
    /// ephemeral, the compile cache under the data dir.
    pub(crate) fn new(config: &Config, on_tick: fn()) -> Result<Wasm> {
        let engine = engine::engine(config)?;
        let linker = engine::linker(&engine)?;
        engine::start_epoch_ticker(&engine, on_tick)?;
        let cache = match config.ephemeral {
            true => None,
            false => Some(Arc::new(ArtifactCache::open(&config.data_dir, &engine)?)),
        };
        Ok(Wasm {
            engine,
            linker,
            catalog: Catalog::default(),
            cache,
        })
    }

    /// Compiles plugin `name` (or loads it from the compile cache) and checks
    /// it against the `plugin` world. Blocking: run it off the serving path.
    pub(crate) fn compile(
        &self,
        name: &str,
        bytes: &[u8],
        limits: crate::config::PluginConfig,
    ) -> Result<Version> {
        catalog::compile(
            &self.engine,
            &self.linker,
            name,
            bytes,
            limits,
            self.cache.as_deref(),
        )
    }

    /// What the instance pool holds now: live component instances, and the
    /// bytes freed slots keep resident by kind (`[pool] keep_resident_kib`).
    pub(crate) fn pool_usage(&self) -> PoolUsage {
        match self.engine.pooling_allocator_metrics() {
            Some(pool) => PoolUsage {
                instances: pool.component_instances(),
                kept: vec![
                    ("memory", pool.unused_memory_bytes_resident() as u64),
                    ("table", pool.unused_table_bytes_resident() as u64),
                    (
                        "stack",
                        pool.unused_stack_bytes_resident().unwrap_or(0) as u64,
                    ),
                ],
            },
            None => PoolUsage::default(),
        }
    }

    /// Writes a freshly compiled version to the compile cache, on a blocking
    /// thread, off the serving path.
    pub(crate) fn store_artifact(&self, version: &Arc<Version>) {
        if version.cached {
            return;
        }
        if let Some(cache) = self.cache.clone() {
            let version = version.clone();
            tokio::task::spawn_blocking(move || {
                cache.store(&version.content_hash, &version.component)
            });
        }
    }
}
