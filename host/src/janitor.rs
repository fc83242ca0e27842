//! Gives the memory of stopped instances back to the system.
//!
//! Each instance's host-side state (its `Store`, WASI context, mailbox and
//! task) lives on the Rust heap. glibc's malloc keeps what thousands of
//! stopped children freed in its per-thread arenas for reuse, so a host that
//! started and stopped 10,000 children keeps their peak in RSS for good.
//! `malloc_trim` returns the free pages; it walks every arena under its lock,
//! so it runs only once churn has settled, never during a restart storm.

use crate::host::Host;
use std::time::Duration;

/// How often the janitor looks.
const TICK: Duration = Duration::from_secs(1);
/// Fewer dropped instances than this since the last trim are not worth one.
const MIN_EXITS: u64 = 256;

/// Spawns the janitor; it ends when the host's last handle is dropped.
pub fn spawn(host: &Host) {
    if !trim_supported() {
        return;
    }
    let weak = std::sync::Arc::downgrade(host.inner());
    tokio::spawn(async move {
        let mut trimmed_at = 0u64;
        let mut last_seen = 0u64;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(inner) = weak.upgrade() else { return };
            let exits = inner.metrics.instances_dropped();
            drop(inner);
            let settled = exits == last_seen;
            last_seen = exits;
            if settled && exits.saturating_sub(trimmed_at) >= MIN_EXITS {
                trimmed_at = exits;
                let _ = tokio::task::spawn_blocking(trim).await;
            }
        }
    });
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim_supported() -> bool {
    true
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim_supported() -> bool {
    false
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    let started = std::time::Instant::now();
    // SAFETY: malloc_trim only takes the allocator's own locks; it is safe
    // to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
    tracing::debug!(
        "returned free heap to the system in {:?}",
        started.elapsed()
    );
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}
