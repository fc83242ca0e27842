//! Counters for `/metrics`, in the Prometheus text exposition format
//! (version 0.0.4). The hot paths touch only relaxed atomics.

use crate::types::ExitReason;
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
    call_errors: [AtomicU64; 6],
    restarts: AtomicU64,
    exits: [AtomicU64; 5],
    plugin_loads: AtomicU64,
    memory_grows: AtomicU64,
    stack_waits: AtomicU64,
    stack_overflows: AtomicU64,
    direct_calls: AtomicU64,
    instances_dropped: AtomicU64,
    plugin_load_failures: AtomicU64,
}

const CALL_ERROR_CODES: [&str; 6] = [
    "not_found",
    "timeout",
    "trapped",
    "killed",
    "mailbox_full",
    "failed",
];
const EXIT_CODES: [&str; 5] = ["normal", "shutdown", "trap", "killed", "init_failed"];

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

    pub(crate) fn call_error(&self, code: &str) {
        if let Some(i) = CALL_ERROR_CODES.iter().position(|c| *c == code) {
            inc(&self.call_errors[i]);
        }
    }

    pub(crate) fn restart(&self) {
        inc(&self.restarts);
    }

    pub(crate) fn exit(&self, reason: &ExitReason) {
        if let Some(i) = EXIT_CODES.iter().position(|c| *c == reason.code()) {
            inc(&self.exits[i]);
        }
    }

    pub(crate) fn instance_dropped(&self) {
        inc(&self.instances_dropped);
    }

    /// Stores dropped (stop, crash, restart, reload) since the host started.
    pub(crate) fn instances_dropped(&self) -> u64 {
        self.instances_dropped.load(Ordering::Relaxed)
    }

    pub(crate) fn memory_grow(&self) {
        inc(&self.memory_grows);
    }

    pub(crate) fn stack_wait(&self) {
        inc(&self.stack_waits);
    }

    pub(crate) fn stack_overflow(&self) {
        inc(&self.stack_overflows);
    }

    pub(crate) fn direct_call(&self) {
        inc(&self.direct_calls);
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
            "wasmvisor_memory_grows_total",
            "counter",
            "memory.grow calls by guests (none are needed on the init path).",
            &[(String::new(), load(&self.memory_grows))],
        );
        family(
            "wasmvisor_stack_waits_total",
            "counter",
            "Callbacks that waited for an idle instance's native stack ([engine] stack_per_callback).",
            &[(String::new(), load(&self.stack_waits))],
        );
        family(
            "wasmvisor_stack_overflows_total",
            "counter",
            "Callbacks that found every native stack of the pool held by a busy instance and ran \
             on one mapped for them alone ([engine] stack_per_callback).",
            &[(String::new(), load(&self.stack_overflows))],
        );
        family(
            "wasmvisor_direct_calls_total",
            "counter",
            "Calls run on the caller's task because the child was idle with nothing queued.",
            &[(String::new(), load(&self.direct_calls))],
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
        m.call_error("timeout");
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
