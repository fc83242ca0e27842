//! Layer 2, WebAssembly: two engines with their linkers (the pool, and on
//! demand for guests too large for it), the catalog of compiled plugin
//! versions, the compile cache, one instance (a `Store` and its component
//! instance), and the host functions guests import. What a guest
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
mod symbols;
mod tier;

pub(crate) use catalog::Catalog;
pub use catalog::Version;
pub use catalog::{WIT_SOURCE, WIT_VERSION};
pub(crate) use catalog::{content_hash, plugin_name};
pub(crate) use incarnation::{Incarnation, ReplyTx};
pub(crate) use info::Info;
pub(crate) use instance::{Init, Instance, ResumeFailure, StartFailure};
pub(crate) use port::Port;
pub use tier::Allocation;

use crate::config::Config;
use anyhow::Result;
use cache::ArtifactCache;
use std::sync::Arc;
use tier::Tier;

/// What the instance pool holds at one moment.
#[derive(Debug, Default)]
pub(crate) struct PoolUsage {
    /// Live component instances in the pool.
    pub(crate) instances: u64,
    /// Live instances allocated on demand.
    pub(crate) on_demand: u64,
    /// Bytes freed slots keep resident, by kind, in the order of
    /// [`crate::metrics::POOL_KINDS`] (memory, table, stack).
    pub(crate) kept: [u64; 3],
}

/// The wasm side of a host: what every child's instances are made with.
pub(crate) struct Wasm {
    pool: Arc<Tier>,
    on_demand: Arc<Tier>,
    pub(crate) catalog: Catalog,
    /// The compile cache's folder and size cap (none when ephemeral).
    cache: Option<(std::path::PathBuf, u64)>,
}

impl Wasm {
    /// The two engines (with the epoch ticker, which calls `on_tick` every
    /// millisecond), their linkers, an empty catalog and, unless the config
    /// is ephemeral, the compile cache under the data dir.
    pub(crate) fn new(config: &Config, on_tick: fn()) -> Result<Wasm> {
        let pool = engine::pooled(config)?;
        let on_demand = engine::on_demand(config)?;
        engine::start_epoch_ticker([&pool, &on_demand], on_tick)?;
        let tier = |allocation, engine, max| -> Result<Arc<Tier>> {
            let linker = engine::linker(&engine)?;
            let cache = match config.ephemeral {
                true => None,
                false => Some(ArtifactCache::open(&config.cache_dir(), &engine)?),
            };
            Ok(Arc::new(Tier::new(allocation, engine, linker, cache, max)))
        };
        let max_on_demand = u64::from(config.pool.on_demand_instances);
        Ok(Wasm {
            pool: tier(Allocation::Pool, pool, None)?,
            on_demand: tier(Allocation::OnDemand, on_demand, Some(max_on_demand))?,
            catalog: Catalog::default(),
            cache: (!config.ephemeral)
                .then(|| (config.cache_dir(), u64::from(config.cache.max_mb) << 20)),
        })
    }

    /// Compiles plugin `name` (or loads it from the compile cache) for the
    /// engine it fits, and checks it against the `plugin` world. Blocking:
    /// run it off the serving path.
    pub(crate) fn compile(
        &self,
        name: &str,
        bytes: &[u8],
        limits: crate::config::PluginConfig,
    ) -> Result<Version> {
        catalog::compile(&self.pool, &self.on_demand, name, bytes, limits)
    }

    /// What the instance pool holds now: live component instances, and the
    /// bytes freed slots keep resident by kind (`[pool] keep_resident_kib`).
    pub(crate) fn pool_usage(&self) -> PoolUsage {
        let on_demand = self.on_demand.live().unwrap_or(0);
        match self.pool.engine.pooling_allocator_metrics() {
            Some(pool) => PoolUsage {
                instances: pool.component_instances(),
                on_demand,
                kept: [
                    pool.unused_memory_bytes_resident() as u64,
                    pool.unused_table_bytes_resident() as u64,
                    pool.unused_stack_bytes_resident().unwrap_or(0) as u64,
                ],
            },
            None => PoolUsage {
                on_demand,
                ..PoolUsage::default()
            },
        }
    }

    /// Writes a freshly compiled version to the compile cache, then keeps
    /// the cache under `[cache] max_mb`, on a blocking thread, off the
    /// serving path.
    pub(crate) fn store_artifact(&self, version: &Arc<Version>) {
        if version.cached {
            return;
        }
        let evict = self.eviction(Some(&version.content_hash));
        let version = version.clone();
        tokio::task::spawn_blocking(move || {
            if let Some(cache) = &version.tier.cache {
                cache.store(&version.content_hash, &version.component)
            }
            evict();
        });
    }

    /// Keeps the compile cache under `[cache] max_mb`, off the serving
    /// path: what the plugins folder no longer holds goes first.
    pub(crate) fn evict_artifacts(&self) {
        tokio::task::spawn_blocking(self.eviction(None));
    }

    /// Deleting the artifacts of versions other than the current ones (and
    /// `also`), oldest first, down to the cap.
    fn eviction(&self, also: Option<&str>) -> impl FnOnce() + Send + 'static {
        let cache = self.cache.clone();
        let mut keep: std::collections::HashSet<String> = self
            .catalog
            .list()
            .into_iter()
            .filter_map(|(_, entry)| entry.current.map(|v| v.content_hash.clone()))
            .collect();
        keep.extend(also.map(str::to_string));
        move || {
            let Some((dir, max_bytes)) = cache else {
                return;
            };
            for path in cache::evict(&dir, &keep, max_bytes) {
                tracing::info!(
                    "removed {} from the compile cache ([cache] max_mb)",
                    path.display()
                );
            }
        }
    }
}
