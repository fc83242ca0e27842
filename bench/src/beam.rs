//! The BEAM reference: `beam/genserver_bench.erl`, an escript that runs the
//! same workloads on a plain `gen_server` under a supervisor, in the same
//! run as the host's, so that a noisy machine weighs on both alike. Skipped
//! (with a note) when Erlang's `escript` is not installed.

use serde::{Deserialize, Serialize};
use std::path::Path;
use std::process::Stdio;

/// What the escript prints: the host's keys for the workloads it shares.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Beam {
    /// µs per GenServer started under the supervisor.
    pub spawn_us: f64,
    /// Memory per GenServer process, KiB.
    pub rss_per_instance_kib: f64,
    /// Calls per second from one client.
    pub call_1c_per_s: f64,
    /// Call latency, median, µs.
    pub call_p50_us: f64,
    /// Call latency, 99th percentile, µs.
    pub call_p99_us: f64,
    /// Calls per second from 4 concurrent clients.
    pub call_4c_per_s: f64,
    /// Casts per second, until every cast was handled.
    pub cast_per_s: f64,
    /// crash → restarted → serving, median, µs.
    pub restart_p50_us: f64,
    /// crash → restarted → serving, 99th percentile, µs.
    pub restart_p99_us: f64,
    /// The Erlang/OTP release.
    pub otp_release: String,
    /// BEAM schedulers online.
    pub schedulers: u32,
}

/// Runs the escript (small sizes with `quick`); `None`, with a note on
/// stderr, when Erlang is missing or the script fails.
pub async fn run(quick: bool, only: &[String]) -> Option<Beam> {
    const SHARED: [&str; 5] = ["spawn", "calls", "calls4", "casts", "crash"];
    if !only.is_empty() && !only.iter().any(|w| SHARED.contains(&w.as_str())) {
        return None;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("beam/genserver_bench.erl");
    let mut command = tokio::process::Command::new("escript");
    command.arg(&script);
    if quick {
        command.arg("--quick");
    }
    eprintln!("bench: BEAM reference...");
    let output = command
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .await;
    let output = match output {
        Ok(output) => output,
        Err(e) => {
            eprintln!(
                "bench: no BEAM reference: cannot run escript ({e}); install Erlang (apt-get install erlang-base)"
            );
            return None;
        }
    };
    if !output.status.success() {
        eprintln!(
            "bench: no BEAM reference: {} exited with {}",
            script.display(),
            output.status
        );
        return None;
    }
    match serde_json::from_slice(&output.stdout) {
        Ok(beam) => Some(beam),
        Err(e) => {
            eprintln!(
                "bench: no BEAM reference: unreadable output from {}: {e}",
                script.display()
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_escript_output_parses() {
        let text = r#"{"spawn_us": 2.5, "rss_per_instance_kib": 2.7, "call_1c_per_s": 190000.0,
            "call_p50_us": 4.7, "call_p99_us": 9.1, "call_4c_per_s": 320000.0, "cast_per_s": 600000.0,
            "restart_p50_us": 54.0, "restart_p99_us": 250.0, "otp_release": "25", "schedulers": 2}"#;
        let beam: Beam = serde_json::from_str(text).unwrap();
        assert_eq!(beam.schedulers, 2);
        assert_eq!(beam.call_1c_per_s, 190_000.0);
    }
}
