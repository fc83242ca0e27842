//! The host's two engines (pooled for small guests, on demand for those too
//! large for a pool slot), the linker each gets, and the epoch ticker that
//! drives CPU deadlines. wasmtime is used as published: every setting here
//! is a public `Config` or `PoolingAllocationConfig` option.

use super::bindings::Plugin;
use super::cache::IncrementalCache;
use super::state::InstanceState;
use crate::config::Config;
use anyhow::{Context, Result};
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch advances. CPU deadlines are counted in ticks, and a
/// running guest yields to the scheduler at every tick.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(1);

/// Core instances, tables and memories one plugin component may use. A Rust
/// `wasm32-wasip2` component has one memory, about three core instances
/// (the module plus the canonical-ABI shims) and two tables.
const CORE_INSTANCES_PER_COMPONENT: u32 = 8;
const TABLES_PER_COMPONENT: u32 = 4;
const MEMORIES_PER_COMPONENT: u32 = 1;
/// Elements per table; Rust guests use a few hundred.
const TABLE_ELEMENTS: usize = 10_000;
/// The guard region after each linear memory, for the static offsets of
/// loads and stores; bounds are checked explicitly below it.
const MEMORY_GUARD: u64 = 64 * 1024;
/// Freed slots whose pages go back to the kernel in one `madvise` batch
/// instead of one call each.
const DECOMMIT_BATCH: usize = 32;

/// Native stack for the calls of guests too large for the pool: their
/// interpreters (Python, JavaScript) nest many wasm frames per guest call.
const ON_DEMAND_STACK_KIB: u32 = 1024;

/// The pooled engine: the pooling allocator sized by `[pool]`, and linear
/// memories initialised by copying rather than mapped copy-on-write (half
/// the memory mappings per instance, see [`MAPPINGS_PER_INSTANCE`]). Small
/// guests start fastest and pack densest here.
pub(crate) fn pooled(config: &Config) -> Result<Engine> {
    check_capacity(config, &Limits::read())?;
    let pool = &config.pool;
    let n = pool.max_instances;
    let memory_bytes = config.max_memory_mb() as u64 * 1024 * 1024;
    let keep = pool.keep_resident_kib as usize * 1024;

    let mut pooling = PoolingAllocationConfig::new();
    pooling
        .total_component_instances(n)
        .total_core_instances(n.saturating_mul(CORE_INSTANCES_PER_COMPONENT))
        .total_memories(n.saturating_mul(MEMORIES_PER_COMPONENT))
        .total_tables(n.saturating_mul(TABLES_PER_COMPONENT))
        // Every store keeps the fiber stack of its first async call.
        .total_stacks(n)
        .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
        .max_memories_per_component(MEMORIES_PER_COMPONENT)
        .max_tables_per_component(TABLES_PER_COMPONENT)
        .table_elements(TABLE_ELEMENTS)
        .max_memory_size(memory_bytes as usize)
        .linear_memory_keep_resident(keep)
        .table_keep_resident(keep)
        .async_stack_keep_resident(keep)
        .decommit_batch_size(DECOMMIT_BATCH)
        // Keep (and reset) only the pages an instance really touched.
        .pagemap_scan(wasmtime::Enabled::Auto);

    let mut c = common(config, pool.stack_kib)?;
    c.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling))
        .memory_init_cow(false);
    Engine::new(&c)
        .map_err(anyhow::Error::from)
        .with_context(|| {
            format!(
                "cannot create the wasm engine for {n} instances of up to {} MiB; \
             lower [pool] max_instances or the plugins' memory_mb",
                config.max_memory_mb()
            )
        })
}

/// The on-demand engine, for plugins that do not belong in a pool slot
/// (see [`fits_pool`]: Python and JavaScript components). Each instance is allocated when it starts, and
/// linear memories are mapped copy-on-write from the compiled image, so an
/// instance neither copies nor keeps resident the pages of a large
/// pre-initialised heap it does not write.
pub(crate) fn on_demand(config: &Config) -> Result<Engine> {
    let stack_kib = config.pool.stack_kib.max(ON_DEMAND_STACK_KIB);
    let mut c = common(config, stack_kib)?;
    c.allocation_strategy(InstanceAllocationStrategy::OnDemand)
        .memory_init_cow(true);
    Engine::new(&c)
        .map_err(anyhow::Error::from)
        .context("cannot create the on-demand wasm engine")
}

/// What both engines share: epoch interruption for CPU deadlines,
/// component-model concurrency off (no plugin needs it, and it costs every
/// call), memories reserved up to the largest `memory_mb` (the store's
/// limiter holds each plugin to its own), and zeroed fiber stacks.
fn common(config: &Config, stack_kib: u32) -> Result<wasmtime::Config> {
    let stack_bytes = stack_kib as usize * 1024;
    let memory_bytes = config.max_memory_mb() as u64 * 1024 * 1024;
    let mut c = wasmtime::Config::new();
    c.epoch_interruption(true)
        .concurrency_support(false)
        .memory_reservation(memory_bytes)
        .memory_guard_size(MEMORY_GUARD)
        .memory_reservation_for_growth(0)
        .async_stack_size(stack_bytes)
        // A freed stack goes to the next instance, maybe another plugin's,
        // with nothing of the last one's left on it.
        .async_stack_zeroing(true)
        .max_wasm_stack(stack_bytes - 64 * 1024)
        .cranelift_opt_level(wasmtime::OptLevel::Speed);
    // A new version of a plugin mostly repeats the old one's functions.
    c.enable_incremental_compilation(Arc::new(IncrementalCache::default()))
        .map_err(anyhow::Error::from)?;
    Ok(c)
}

/// Initial data above which a component runs on demand even when it fits a
/// slot: pre-initialised interpreters (Python, JavaScript) carry megabytes
/// of heap image, which the on-demand engine maps copy-on-write and the
/// pool would copy into every instance. Rust guests carry kilobytes.
const POOL_MAX_DATA: u64 = 1024 * 1024;

/// Whether a component belongs in a pool slot, judged from its binary
/// before compiling it (so that each version is compiled once, for the
/// engine it runs on): the core instances it creates and the memories and
/// tables its core modules define fit a slot's limits, and its data
/// segments are small. The count is a lower bound of what wasmtime counts
/// (it adds adapter instances), so a `true` can still be refused by the
/// pool; [`super::catalog::compile`] then compiles it on demand.
pub(crate) fn fits_pool(bytes: &[u8]) -> bool {
    use wasmparser::{Instance, Parser, Payload};
    let (mut instances, mut memories, mut tables, mut data) = (0u32, 0u32, 0u32, 0u64);
    for payload in Parser::new(0).parse_all(bytes) {
        let Ok(payload) = payload else {
            // Not for this check to judge; the compiler reports it.
            return true;
        };
        match payload {
            Payload::InstanceSection(reader) => {
                let created = reader
                    .into_iter()
                    .flatten()
                    .filter(|i| matches!(i, Instance::Instantiate { .. }));
                instances += created.count() as u32;
            }
            Payload::MemorySection(reader) => memories += reader.count(),
            Payload::TableSection(reader) => tables += reader.count(),
            Payload::DataSection(reader) => {
                data += reader
                    .into_iter()
                    .flatten()
                    .map(|d| d.data.len() as u64)
                    .sum::<u64>();
            }
            _ => {}
        }
    }
    instances <= CORE_INSTANCES_PER_COMPONENT
        && memories <= MEMORIES_PER_COMPONENT
        && tables <= TABLES_PER_COMPONENT
        && data <= POOL_MAX_DATA
}

/// The linker every plugin is instantiated through: WASI 0.2 (with nothing
/// granted by default), outbound HTTP (limited in `outbound.rs`) and the
/// `wasmvisor:plugin/runtime` interface.
pub(crate) fn linker(engine: &Engine) -> Result<Linker<InstanceState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)
        .map_err(anyhow::Error::from)
        .context("cannot link WASI")?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
        .map_err(anyhow::Error::from)
        .context("cannot link WASI HTTP")?;
    Plugin::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
        .map_err(anyhow::Error::from)
        .context("cannot link the wasmvisor runtime")?;
    Ok(linker)
}

/// Advances the engines' epochs every [`EPOCH_TICK`] on a thread of its
/// own, and calls `on_tick` after each: the host's millisecond clock. It
/// holds only weak references, so it ends with the engines.
pub(crate) fn start_epoch_ticker(engines: [&Engine; 2], on_tick: fn()) -> Result<()> {
    let weak = engines.map(Engine::weak);
    std::thread::Builder::new()
        .name("wasmvisor-epoch".into())
        .spawn(move || {
            loop {
                let mut alive = false;
                for engine in weak.iter().filter_map(|w| w.upgrade()) {
                    engine.increment_epoch();
                    alive = true;
                }
                if !alive {
                    break;
                }
                on_tick();
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .context("cannot start the epoch ticker thread")?;
    Ok(())
}

/// Memory mappings one pool slot takes once used: its linear memory's
/// accessible part and the reserved rest, and its fiber stack with the
/// stack's guard page.
pub(crate) const MAPPINGS_PER_INSTANCE: u64 = 4;
/// Mappings the process has besides the pool (code, heap, threads).
const MAPPINGS_BASE: u64 = 2_000;

/// What the kernel allows this process.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// `vm.max_map_count`.
    pub max_map_count: Option<u64>,
    /// `ulimit -v`, bytes.
    pub address_space: Option<u64>,
}

impl Limits {
    pub(crate) fn read() -> Limits {
        let max_map_count = std::fs::read_to_string("/proc/sys/vm/max_map_count")
            .ok()
            .and_then(|s| s.trim().parse().ok());
        let address_space = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|text| {
                let line = text.lines().find(|l| l.starts_with("Max address space"))?;
                line.split_whitespace().nth(3)?.parse().ok()
            });
        Limits {
            max_map_count,
            address_space,
        }
    }
}

/// Checks that the machine can hold the configured instance pool, and says
/// what to change when it cannot, instead of failing later in the middle of
/// serving.
pub(crate) fn check_capacity(config: &Config, limits: &Limits) -> Result<()> {
    let n = u64::from(config.pool.max_instances);
    if let Some(max) = limits.max_map_count {
        let needed = n * MAPPINGS_PER_INSTANCE + MAPPINGS_BASE;
        if needed > max {
            let fits = max.saturating_sub(MAPPINGS_BASE) / MAPPINGS_PER_INSTANCE;
            anyhow::bail!(
                "[pool] max_instances = {n} needs about {needed} memory mappings, but \
                 vm.max_map_count is {max}: lower max_instances to {fits} or less, or raise the \
                 limit (as root: sysctl -w vm.max_map_count={})",
                needed.next_power_of_two(),
            );
        }
    }
    if let Some(limit) = limits.address_space {
        let memory = u64::from(config.max_memory_mb()) * 1024 * 1024 + MEMORY_GUARD;
        let stack = u64::from(config.pool.stack_kib) * 1024 + 4096;
        let tables = TABLE_ELEMENTS as u64 * 8 * u64::from(TABLES_PER_COMPONENT);
        let needed = n * (memory + tables + stack);
        if needed > limit {
            anyhow::bail!(
                "[pool] max_instances = {n} reserves {} GiB of address space ({} MiB memory \
                 slots), but `ulimit -v` allows {} GiB: lower max_instances or the plugins' \
                 memory_mb, or raise the limit",
                needed >> 30,
                config.max_memory_mb(),
                limit >> 30
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pool_the_map_count_cannot_hold_is_refused_with_what_to_change() {
        let mut config = Config::default();
        config.pool.max_instances = 30_000;
        let limits = Limits {
            max_map_count: Some(65_530),
            address_space: None,
        };
        let err = check_capacity(&config, &limits).unwrap_err().to_string();
        assert!(err.contains("vm.max_map_count is 65530"), "{err}");
        // 4 mappings per instance, 2,000 more.
        assert!(err.contains("lower max_instances to 15882"), "{err}");
        assert!(err.contains("sysctl -w vm.max_map_count=131072"), "{err}");
        config.pool.max_instances = 15_000;
        assert!(check_capacity(&config, &limits).is_ok());
    }

    #[test]
    fn the_default_pool_fits_the_default_map_count() {
        let limits = Limits {
            max_map_count: Some(65_530),
            address_space: None,
        };
        assert!(check_capacity(&Config::default(), &limits).is_ok());
    }

    #[test]
    fn a_pool_over_the_address_space_limit_is_refused() {
        let config = Config::default();
        let limits = Limits {
            max_map_count: None,
            address_space: Some(8 << 30),
        };
        let err = check_capacity(&config, &limits).unwrap_err().to_string();
        assert!(err.contains("ulimit -v"), "{err}");
    }
}
