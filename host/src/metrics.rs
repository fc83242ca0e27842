//! Counters for `/metrics`, in the Prometheus text exposition format
//! (version 0.0.4). The hot paths touch only relaxed atomics.

use crate::types::{CallError, ExitReason};
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// A gauge sampled at scrape time: its samples are (labels, value), labels
/// written as `{k="v"}` or empty.
pub(crate) struct Gauge<'a> {
    pub name: &'a str,
    pub help: &'a str,
    pub samples: Vec<(String, u64)>,
}

#[derive(Default)]
pub(crate) struct Metrics {
    calls: AtomicU64,
    casts: AtomicU64,
    call_errors: [AtomicU64; 8],
    restarts: AtomicU64,
    exits: [AtomicU64; 6],
    plugin_loads: AtomicU64,
    plugin_load_failures: AtomicU64,
    hibernations: AtomicU64,
    wakes: AtomicU64,
}

const CALL_ERROR_CODES: [&str; 8] = [
    "not_found",
    "timeout",
    "trapped",
    "killed",
    "mailbox_full",
    "failed",
    "init_failed",
    "unavailable",
];
const EXIT_CODES: [&str; 6] = [
    "normal",
    "shutdown",
    "trap",
    "killed",
    "init_failed",
    "linked",
];

fn inc(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Metrics {
    pub(crate) fn call(&self) {
        inc(&self.calls);
    }

    pub(crate) fn cast(&self) {
        inc(&self.casts);
    }

    pub(crate) fn call_error(&self, error: &CallError) {
        let i = match error {
            CallError::NotFound => 0,
            CallError::Timeout => 1,
            CallError::Trapped(_) => 2,
            CallError::Killed(_) => 3,
            CallError::MailboxFull => 4,
            CallError::Failed(_) => 5,
            CallError::InitFailed(_) => 6,
            CallError::Unavailable(_) => 7,
        };
        inc(&self.call_errors[i]);
    }

    pub(crate) fn restart(&self) {
        inc(&self.restarts);
    }

    pub(crate) fn hibernation(&self) {
        inc(&self.hibernations);
    }

    pub(crate) fn wake(&self) {
        inc(&self.wakes);
    }

    pub(crate) fn exit(&self, reason: &ExitReason) {
        let i = match reason {
            ExitReason::Normal => 0,
            ExitReason::Shutdown => 1,
            ExitReason::Trap(_) => 2,
            ExitReason::Killed(_) => 3,
            ExitReason::InitFailed(_) => 4,
            ExitReason::Linked(_) => 5,
            // Only ever in `down` notifications, never an instance's exit.
            ExitReason::Noproc => return,
        };
        inc(&self.exits[i]);
    }

    pub(crate) fn plugin_load(&self, ok: bool) {
        inc(if ok {
            &self.plugin_loads
        } else {
            &self.plugin_load_failures
        });
    }

    /// Renders every metric; `gauges` are sampled by the caller at scrape
    /// time.
    pub(crate) fn render(&self, gauges: &[Gauge<'_>]) -> String {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut out = String::new();
        let mut family = |name: &str, kind: &str, help: &str, samples: &[(String, u64)]| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        family(
            "wasmvisor_calls_total",
            "counter",
            "Calls sent to children.",
            &[(String::new(), load(&self.calls))],
        );
        family(
            "wasmvisor_casts_total",
            "counter",
            "Casts sent to children.",
            &[(String::new(), load(&self.casts))],
        );
        let errors: Vec<_> = CALL_ERROR_CODES
            .iter()
            .zip(&self.call_errors)
            .map(|(code, c)| (format!("{{code=\"{code}\"}}"), load(c)))
            .collect();
        family(
            "wasmvisor_call_errors_total",
            "counter",
            "Calls and casts that failed, by error code.",
            &errors,
        );
        let exits: Vec<_> = EXIT_CODES
            .iter()
            .zip(&self.exits)
            .map(|(code, c)| (format!("{{reason=\"{code}\"}}"), load(c)))
            .collect();
        family(
            "wasmvisor_exits_total",
            "counter",
            "Instance exits that the supervisor decided on, by reason.",
            &exits,
        );
        family(
            "wasmvisor_restarts_total",
            "counter",
            "Instances started to replace an exited one.",
            &[(String::new(), load(&self.restarts))],
        );
        family(
            "wasmvisor_hibernations_total",
            "counter",
            "Children that gave their instance back and kept their state.",
            &[(String::new(), load(&self.hibernations))],
        );
        family(
            "wasmvisor_wakes_total",
            "counter",
            "Children without an instance woken by a message or a signal.",
            &[(String::new(), load(&self.wakes))],
        );
        family(
            "wasmvisor_plugin_loads_total",
            "counter",
            "Plugin versions compiled and installed.",
            &[(String::new(), load(&self.plugin_loads))],
        );
        family(
            "wasmvisor_plugin_load_failures_total",
            "counter",
            "Plugin files that failed to load.",
            &[(String::new(), load(&self.plugin_load_failures))],
        );
        for g in gauges {
            family(g.name, "gauge", g.help, &g.samples);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_help_type_and_samples() {
        let m = Metrics::default();
        m.call();
        m.call_error(&CallError::Timeout);
        m.exit(&ExitReason::Trap("x".into()));
        let text = m.render(&[Gauge {
            name: "wasmvisor_children",
            help: "Children.",
            samples: vec![(String::new(), 2)],
        }]);
        assert!(text.contains("# TYPE wasmvisor_calls_total counter\nwasmvisor_calls_total 1\n"));
        assert!(text.contains("wasmvisor_call_errors_total{code=\"timeout\"} 1\n"));
        assert!(text.contains("wasmvisor_exits_total{reason=\"trap\"} 1\n"));
        assert!(text.contains("# TYPE wasmvisor_children gauge\nwasmvisor_children 2\n"));
    }
}
