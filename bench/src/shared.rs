//! What several workloads use: percentiles and the tracker's child spec.

use std::time::Duration;
use wasmvisor::{ChildSpec, Restart};

/// The `q` quantile of sorted durations, µs.
pub(crate) fn percentile(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

/// A permanent, eager tracker child with its transaction id as args.
pub(crate) fn tracker_spec(id: String) -> ChildSpec {
    let args = format!(r#"{{"transaction_id":"{id}"}}"#);
    ChildSpec {
        id,
        plugin: "tracker".into(),
        args: args.into_bytes().into(),
        restart: Restart::Permanent,
        shutdown_ms: wasmvisor::types::DEFAULT_SHUTDOWN_MS,
        activate: wasmvisor::types::Activate::Eager,
    }
}
