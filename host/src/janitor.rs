//! Gives the memory of stopped instances back to the system once children
//! stop coming and going.
//!
//! Two kinds of memory outlive a stopped instance on purpose. Freed pool
//! slots keep `[pool] keep_resident_kib` of zeroed pages so the next
//! instance on the slot (a restart, a reload, a new child of the same
//! plugin) takes no page faults. And each instance's host-side state (its
//! `Store`, WASI context, mailbox and task) lives on the Rust heap, whose
//! freed pages the allocator keeps for reuse (`heap.rs`). Both help
//! while children churn and are waste after it, so the janitor returns them
//! once a whole tick passes with no instance dropped. Churn that never
//! settles still gets the pool's pages back every `MAX_KEEP`; the heap trim,
//! which takes the allocator's locks, waits for a quiet tick.

use crate::host::Host;
use std::time::Duration;

/// How often the janitor looks.
const TICK: Duration = Duration::from_secs(1);
/// Fewer dropped instances than this since the last trim are not worth
/// one: it walks the allocator's arenas.
const MIN_EXITS: u64 = 256;
/// The longest freed pool slots keep their pages when churn never settles
/// (a crash loop, a steady stream of short-lived children), counted from
/// the first tick that found pages kept.
const MAX_KEEP: Duration = Duration::from_secs(10);

/// Spawns the janitor; it ends when the host's last handle is dropped.
pub fn spawn(host: &Host) {
    let weak = std::sync::Arc::downgrade(host.inner());
    tokio::spawn(async move {
        let mut trimmed_at = 0u64;
        let mut last_seen = 0u64;
        let mut kept_since: Option<tokio::time::Instant> = None;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(inner) = weak.upgrade() else { return };
            let exits = inner.metrics.instances_dropped();
            let settled = exits == last_seen;
            last_seen = exits;
            let keeps_pages = crate::engine::pool_kept_bytes(&inner.engine)
                .iter()
                .any(|&(_, bytes)| bytes > 0);
            // The clock runs from when pages were first seen kept, not from
            // the last release: a storm after a long quiet spell is not cut
            // into at once.
            kept_since = keeps_pages.then(|| kept_since.unwrap_or_else(tokio::time::Instant::now));
            let overdue = kept_since.is_some_and(|t| t.elapsed() >= MAX_KEEP);
            if keeps_pages && (settled || overdue) {
                kept_since = None;
                let engine = inner.engine.clone();
                drop(inner);
                let _ = tokio::task::spawn_blocking(move || release_pool_pages(&engine)).await;
            } else {
                drop(inner);
            }
            if settled && exits.saturating_sub(trimmed_at) >= MIN_EXITS {
                trimmed_at = exits;
                let _ = tokio::task::spawn_blocking(trim).await;
            }
        }
    });
}

fn release_pool_pages(engine: &wasmtime::Engine) {
    let started = std::time::Instant::now();
    // What `Host::release_unused_pool_memory` does, without a `Host` handle
    // that would keep the host alive.
    let bytes = engine.release_unused_pool_memory();
    tracing::debug!(
        "gave back {} KiB kept by freed pool slots in {:?}",
        bytes / 1024,
        started.elapsed()
    );
}

fn trim() {
    let started = std::time::Instant::now();
    crate::heap::give_back();
    tracing::debug!(
        "returned free heap to the system in {:?}",
        started.elapsed()
    );
}
