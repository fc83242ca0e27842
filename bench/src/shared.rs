//! What several workloads use: percentiles, timed calls, progress lines
//! and the tracker's child spec.

use anyhow::{Result, anyhow};
use std::time::{Duration, Instant};
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

/// Says on stderr what the bench does now.
pub(crate) fn progress(what: &str) {
    eprintln!("bench: {what}...");
}

/// `n` calls in a row from one client: (calls/s, p50 µs, p99 µs).
pub(crate) async fn calls_1c<F, Fut, E>(n: usize, mut one: F) -> Result<(f64, f64, f64)>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Vec<u8>, E>>,
    E: std::fmt::Display,
{
    for _ in 0..n / 10 {
        one()
            .await
            .map_err(|e| anyhow!("warm-up call failed: {e}"))?;
    }
    let mut samples = Vec::with_capacity(n);
    let t = Instant::now();
    for _ in 0..n {
        let s = Instant::now();
        one().await.map_err(|e| anyhow!("call failed: {e}"))?;
        samples.push(s.elapsed());
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    samples.sort();
    Ok((rate, percentile(&samples, 0.5), percentile(&samples, 0.99)))
}
