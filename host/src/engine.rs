//! The one `Engine` and `Linker` of the process, and the epoch ticker that
//! drives CPU deadlines.

use crate::config::{Config, EngineConfig, PoolConfig};
use crate::instance::InstanceState;
use anyhow::{Context, Result};
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

/// The version stamped into every compiled plugin, and hashed into the
/// code cache's file names. The vendored `wasmtime-environ` lays out the
/// `VMContext` unlike upstream 48.0.8 (`vendor/README.md`), so code compiled
/// by an unpatched wasmtime must never load here, nor ours there; bump it
/// with any vendored change to what compiled code assumes.
const CODE_VERSION: &str = "48.0.8+wasmvisor.1";

/// The engine settings that the notes in `shared/notes/wasmtime-tuning.md`
/// measured to matter: pooling, concurrency support off, no copy-on-write
/// memory images (half the memory mappings per instance), epoch
/// interruption, small explicit memory reservations.
pub(crate) fn engine(config: &Config) -> Result<Engine> {
    if config.engine.pooling {
        check_capacity(config, &Limits::read())?;
    }
    let pool = &config.pool;
    let n = pool.max_instances;
    let stack_bytes = pool.stack_kib as usize * 1024;
    let memory_bytes = config.max_memory_mb() as u64 * 1024 * 1024;

    let mut pooling = PoolingAllocationConfig::new();
    pooling
        .total_component_instances(n)
        .total_core_instances(n.saturating_mul(CORE_INSTANCES_PER_COMPONENT))
        .total_memories(n.saturating_mul(MEMORIES_PER_COMPONENT))
        .total_tables(n.saturating_mul(TABLES_PER_COMPONENT))
        .total_stacks(pool_stacks(&config.engine, &config.pool))
        .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
        .max_memories_per_component(MEMORIES_PER_COMPONENT)
        .max_tables_per_component(TABLES_PER_COMPONENT)
        .table_elements(TABLE_ELEMENTS)
        .max_memory_size(memory_bytes as usize)
        // A restart or reload lands on a freed slot; its kept pages spare it
        // the page faults (crash → serving 0.70x). The janitor gives them
        // back once churn settles (`Engine::release_unused_pool_memory`).
        .linear_memory_keep_resident(pool.keep_resident_kib as usize * 1024)
        .table_keep_resident(pool.keep_resident_kib.min(16) as usize * 1024)
        .async_stack_keep_resident(pool.keep_resident_kib.min(16) as usize * 1024)
        // A fresh slot's first instance then needs no `mprotect` (spawn
        // 0.81-0.84x in A/Bs, BENCHMARKS.md).
        .linear_memory_preopen(pool.preopen_kib as usize * 1024)
        // A component's small fixed-size tables (the shim's, often the
        // module's own) on the heap: a page and a page fault less per spawn.
        .table_heap_elements(pool.heap_table_elements as usize)
        // Shared stacks: the pool's `max_running` are the ones kept mapped;
        // a callback that finds them all held by busy instances gets one
        // mapped for it instead of waiting on them (`stacks.rs`).
        .async_stack_overflow_on_demand(config.engine.stack_per_callback)
        // One `process_madvise` (and one TLB shootdown to the other cores)
        // for a batch of freed slots instead of a `madvise` for each of
        // their regions: crash → serving p50 16–53% faster in A/Bs (BENCHMARKS.md).
        .decommit_batch_size(pool.decommit_batch as usize)
        // Reset only the pages an instance really touched (Linux 6.7+).
        .pagemap_scan(wasmtime::Enabled::Auto);

    let tuning = &config.engine;
    let mut c = wasmtime::Config::new();
    c.allocation_strategy(if tuning.pooling {
        InstanceAllocationStrategy::Pooling(pooling)
    } else {
        InstanceAllocationStrategy::OnDemand
    })
    .epoch_interruption(config.tuning.cpu_deadline)
    .concurrency_support(tuning.concurrency_support)
    .memory_init_cow(tuning.memory_cow)
    // Off, wasmtime also turns the Spectre mitigations of heap and table
    // accesses off: they rely on a load from address 0 faulting.
    .signals_based_traps(tuning.signals_based_traps)
    .memory_reservation(memory_bytes)
    .memory_guard_size(64 * 1024)
    .memory_reservation_for_growth(0)
    .async_stack_size(stack_bytes)
    // A shared stack goes to the next user as it is: zeroing it would cost
    // a `madvise` each time it changes hands, and only the
    // `max_running` stacks ever used keep pages. A stack kept for an
    // instance's life would, unzeroed, keep its pages resident for every
    // slot ever used.
    .async_stack_zeroing(!tuning.stack_per_callback)
    .max_wasm_stack(stack_bytes - 64 * 1024)
    .wasm_backtrace_max_frames(None)
    .cranelift_opt_level(wasmtime::OptLevel::Speed);
    // A new version of a plugin mostly repeats the old one's functions.
    c.enable_incremental_compilation(std::sync::Arc::new(
        crate::cache::IncrementalCache::default(),
    ))
    .map_err(anyhow::Error::from)?;
    c.module_version(wasmtime::ModuleVersionStrategy::Custom(CODE_VERSION.into()))
        .map_err(anyhow::Error::from)?;
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

/// The linker every plugin is instantiated through: WASI 0.2 (with nothing
/// granted by default) and the `wasmvisor:plugin/runtime` interface.
pub(crate) fn linker(engine: &Engine) -> Result<Linker<InstanceState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)
        .map_err(anyhow::Error::from)
        .context("cannot link WASI")?;
    // Outbound only; the policy in `outbound.rs` limits where to.
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
        .map_err(anyhow::Error::from)
        .context("cannot link WASI HTTP")?;
    crate::bindings::Plugin::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
        .map_err(anyhow::Error::from)
        .context("cannot link the wasmvisor runtime")?;
    Ok(linker)
}

/// Advances the engine's epoch every [`EPOCH_TICK`] on a thread of its own,
/// and wakes the calls waiting for their first tick (`address::CALL_TICK`).
/// It holds only a weak reference, so it ends with the engine.
pub(crate) fn start_epoch_ticker(engine: &Engine) -> Result<()> {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("wasmvisor-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                for tick in &crate::address::CALL_TICK {
                    tick.notify_waiters();
                }
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .context("cannot start the epoch ticker thread")?;
    Ok(())
}

/// Bytes that freed pool slots keep resident for the next instance
/// (`[pool] keep_resident_kib`), by kind; empty without the pooling
/// allocator. Stacks are counted only when they are zeroed on release.
pub(crate) fn pool_kept_bytes(engine: &Engine) -> Vec<(&'static str, u64)> {
    let Some(pool) = engine.pooling_allocator_metrics() else {
        return Vec::new();
    };
    let mut kept = vec![
        ("memory", pool.unused_memory_bytes_resident() as u64),
        ("table", pool.unused_table_bytes_resident() as u64),
    ];
    if let Some(stack) = pool.unused_stack_bytes_resident() {
        kept.push(("stack", stack as u64));
    }
    kept
}

/// Memory mappings a live instance's linear memory takes: its accessible
/// part and the reserved rest. Measured by the benchmark (`maps_per_instance`).
const MAPPINGS_PER_INSTANCE: u64 = 2;
/// Memory mappings per fiber stack in the pool: the stack and its guard
/// page, all mapped at start.
pub(crate) const MAPPINGS_PER_STACK: u64 = 2;
/// Mappings the process has besides the pool (code, heap, threads).
const MAPPINGS_BASE: u64 = 2_000;

/// The fiber stacks the pool holds: one per running instance when idle
/// instances hand theirs back, else one per instance.
pub(crate) fn pool_stacks(engine: &EngineConfig, pool: &PoolConfig) -> u32 {
    if engine.stack_per_callback {
        pool.max_running.min(pool.max_instances)
    } else {
        pool.max_instances
    }
}

/// Memory mappings a pool of `instances` live instances and `stacks` fiber
/// stacks needs, the rest of the process included.
pub(crate) fn mappings_needed(instances: u64, stacks: u64) -> u64 {
    instances * MAPPINGS_PER_INSTANCE + stacks * MAPPINGS_PER_STACK + MAPPINGS_BASE
}

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
    let stacks = u64::from(pool_stacks(&config.engine, &config.pool));
    if let Some(max) = limits.max_map_count {
        let needed = mappings_needed(n, stacks);
        if needed > max {
            let fits = if config.engine.stack_per_callback {
                max.saturating_sub(mappings_needed(0, stacks)) / MAPPINGS_PER_INSTANCE
            } else {
                max.saturating_sub(MAPPINGS_BASE) / (MAPPINGS_PER_INSTANCE + MAPPINGS_PER_STACK)
            };
            anyhow::bail!(
                "[pool] max_instances = {n} needs about {needed} memory mappings, but \
                 vm.max_map_count is {max}: lower max_instances to {fits} or less, or raise the \
                 limit (as root: sysctl -w vm.max_map_count={}){}",
                needed.next_power_of_two(),
                if config.engine.stack_per_callback {
                    ""
                } else {
                    ", or set [engine] stack_per_callback = true (a stack per running \
                     instance, not per instance: about half the mappings)"
                }
            );
        }
    }
    if let Some(limit) = limits.address_space {
        let memory = u64::from(config.max_memory_mb()) * 1024 * 1024 + 64 * 1024;
        let stack = u64::from(config.pool.stack_kib) * 1024 + 4096;
        let tables = TABLE_ELEMENTS as u64 * 8 * u64::from(TABLES_PER_COMPONENT);
        let needed = n * (memory + tables) + stacks * stack;
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
    fn the_engine_takes_the_trap_setting() {
        let mut config = Config::default();
        config.engine.pooling = false;
        assert!(engine(&config).unwrap().get_signals_based_traps());
        config.engine.signals_based_traps = false;
        assert!(!engine(&config).unwrap().get_signals_based_traps());
    }

    #[test]
    fn a_pool_the_map_count_cannot_hold_is_refused_with_what_to_change() {
        let mut config = Config::default();
        config.pool.max_instances = 100_000;
        let limits = Limits {
            max_map_count: Some(65_530),
            address_space: None,
        };
        config.engine.stack_per_callback = true;
        let err = check_capacity(&config, &limits).unwrap_err().to_string();
        assert!(err.contains("vm.max_map_count is 65530"), "{err}");
        // 2 mappings per instance, 2 per stack for 1,000 stacks, 2,000 more.
        assert!(err.contains("lower max_instances to 30765"), "{err}");
        assert!(err.contains("sysctl -w vm.max_map_count=262144"), "{err}");
        config.pool.max_instances = 30_000;
        assert!(check_capacity(&config, &limits).is_ok());
    }

    #[test]
    fn stacks_kept_for_life_cost_mappings_per_instance() {
        let mut config = Config::default();
        config.engine.stack_per_callback = false;
        config.pool.max_instances = 30_000;
        let limits = Limits {
            max_map_count: Some(65_530),
            address_space: None,
        };
        let err = check_capacity(&config, &limits).unwrap_err().to_string();
        assert!(err.contains("lower max_instances to 15882"), "{err}");
        assert!(err.contains("sysctl -w vm.max_map_count=131072"), "{err}");
        assert!(err.contains("stack_per_callback = true"), "{err}");
        assert_eq!(pool_stacks(&config.engine, &config.pool), 30_000);
        config.engine.stack_per_callback = true;
        assert_eq!(pool_stacks(&config.engine, &config.pool), 1_000);
        config.pool.max_running = 50_000;
        assert_eq!(
            pool_stacks(&config.engine, &config.pool),
            30_000,
            "never more stacks than instances"
        );
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
