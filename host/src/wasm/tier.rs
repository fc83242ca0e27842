//! A tier: one engine with its linker and compile cache. A host has two,
//! the pool for small guests and on-demand allocation for guests too large
//! for a pool slot; each plugin version is compiled once, for the tier it
//! runs on, and keeps a handle to it.

use super::cache::ArtifactCache;
use super::state::InstanceState;
use anyhow::Result;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use wasmtime::Engine;
use wasmtime::component::{Component, Linker};

/// How the instances of a plugin version are allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allocation {
    /// A slot of the instance pool (`[pool]`).
    Pool,
    /// Allocated when it starts, for plugins that do not fit a pool slot
    /// (`[pool] on_demand_instances` of them at once).
    OnDemand,
}

impl Allocation {
    /// The name the API and the CLI show.
    pub fn as_str(self) -> &'static str {
        match self {
            Allocation::Pool => "pool",
            Allocation::OnDemand => "on_demand",
        }
    }
}

/// One engine, its linker and its compiled artifacts on disk.
pub(crate) struct Tier {
    pub(crate) allocation: Allocation,
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<InstanceState>,
    pub(crate) cache: Option<ArtifactCache>,
    /// Live instances, and how many may live at once; the pool counts (and
    /// bounds) its own.
    slots: Option<Arc<Slots>>,
}

impl Tier {
    pub(crate) fn new(
        allocation: Allocation,
        engine: Engine,
        linker: Linker<InstanceState>,
        cache: Option<ArtifactCache>,
        max_instances: Option<u64>,
    ) -> Tier {
        let slots = max_instances.map(|max| {
            Arc::new(Slots {
                live: AtomicU64::new(0),
                max,
            })
        });
        Tier {
            allocation,
            engine,
            linker,
            cache,
            slots,
        }
    }

    /// This tier's compilation of the plugin whose content hash is
    /// `content_hash`, if the compile cache holds a valid one.
    pub(crate) fn cached(&self, content_hash: &str) -> Option<Component> {
        self.cache.as_ref()?.load(&self.engine, content_hash)
    }

    /// Compiles `bytes` for this tier's engine.
    pub(crate) fn compile(&self, bytes: &[u8]) -> Result<Component> {
        Component::new(&self.engine, bytes).map_err(anyhow::Error::from)
    }

    /// A slot for one more instance, or why there is none. The slot is
    /// given back when it is dropped.
    pub(crate) fn take_slot(&self) -> Result<Option<Slot>, String> {
        let Some(slots) = &self.slots else {
            return Ok(None);
        };
        let taken = slots.live.fetch_add(1, Ordering::Relaxed);
        if taken >= slots.max {
            slots.live.fetch_sub(1, Ordering::Relaxed);
            return Err(format!(
                "{} instances of plugins too large for the pool are live, the most \
                 allowed ([pool] on_demand_instances)",
                slots.max
            ));
        }
        Ok(Some(Slot(slots.clone())))
    }

    /// Live instances, where this tier counts them.
    pub(crate) fn live(&self) -> Option<u64> {
        self.slots.as_ref().map(|s| s.live.load(Ordering::Relaxed))
    }
}

/// The live-instance count of a tier and its bound.
struct Slots {
    live: AtomicU64,
    max: u64,
}

/// One live instance's place in its tier's count.
pub(crate) struct Slot(Arc<Slots>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::Relaxed);
    }
}
