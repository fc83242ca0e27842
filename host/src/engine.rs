//! The one `Engine` and `Linker` of the process, and the epoch ticker that
//! drives CPU deadlines.

use crate::config::Config;
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

/// The engine settings that the notes in `shared/notes/wasmtime-tuning.md`
/// measured to matter: pooling, concurrency support off, no copy-on-write
/// memory images (half the memory mappings per instance), epoch
/// interruption, small explicit memory reservations.
pub(crate) fn engine(config: &Config) -> Result<Engine> {
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
        .total_stacks(n)
        .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
        .max_memories_per_component(MEMORIES_PER_COMPONENT)
        .max_tables_per_component(TABLES_PER_COMPONENT)
        .table_elements(TABLE_ELEMENTS)
        .max_memory_size(memory_bytes as usize)
        // A freed slot keeps its first pages mapped and zeroes them with
        // memset instead of madvise: the next instance in that slot then
        // pays no page faults for its stack and initial heap.
        .linear_memory_keep_resident(256 * 1024)
        .table_keep_resident(16 * 1024)
        .async_stack_keep_resident(16 * 1024);

    let tuning = &config.engine;
    let mut c = wasmtime::Config::new();
    c.allocation_strategy(if tuning.pooling {
        InstanceAllocationStrategy::Pooling(pooling)
    } else {
        InstanceAllocationStrategy::OnDemand
    })
    .epoch_interruption(true)
    .concurrency_support(tuning.concurrency_support)
    .memory_init_cow(tuning.memory_cow)
    .memory_reservation(memory_bytes)
    .memory_guard_size(64 * 1024)
    .memory_reservation_for_growth(0)
    .async_stack_size(stack_bytes)
    .max_wasm_stack(stack_bytes - 64 * 1024)
    .wasm_backtrace_max_frames(None)
    .cranelift_opt_level(wasmtime::OptLevel::Speed);
    // A new version of a plugin mostly repeats the old one's functions.
    c.enable_incremental_compilation(std::sync::Arc::new(
        crate::cache::IncrementalCache::default(),
    ))
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
    crate::bindings::Plugin::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
        .map_err(anyhow::Error::from)
        .context("cannot link the wasmvisor runtime")?;
    Ok(linker)
}

/// Advances the engine's epoch every [`EPOCH_TICK`] on a thread of its own.
/// It holds only a weak reference, so it ends with the engine.
pub(crate) fn start_epoch_ticker(engine: &Engine) -> Result<()> {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("wasmvisor-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .context("cannot start the epoch ticker thread")?;
    Ok(())
}
