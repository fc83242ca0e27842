//! The host's metrics, kept by `prometheus-client` and written for
//! `/metrics` in the OpenMetrics text format. Counters are relaxed atomics;
//! a histogram takes its own short lock per observation. Gauges are set
//! from the host's state at scrape time.

use crate::types::{CallError, ExitReason, Status};
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::{Registry, Unit};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Label = [(&'static str, &'static str); 1];
type PluginLabel = [(&'static str, String); 1];
type Histograms = Family<PluginLabel, Timings, fn() -> Timings>;

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
const EXIT_CODES: [&str; 7] = [
    "normal",
    "shutdown",
    "trap",
    "killed",
    "init_failed",
    "linked",
    "noconnection",
];
/// Every status a child can have, as `wasmvisor_children` counts them.
pub(crate) const STATUSES: [Status; 8] = [
    Status::Starting,
    Status::Running,
    Status::Restarting,
    Status::Backoff,
    Status::Failed,
    Status::Waiting,
    Status::Ignored,
    Status::Hibernated,
];
/// The kinds of pool memory `wasmvisor_pool_unused_resident_bytes` shows.
pub(crate) const POOL_KINDS: [&str; 3] = ["memory", "table", "stack"];

/// From 1 µs to about 4 s, by fours: a call takes microseconds, but a
/// callback may run up to its CPU deadline.
fn call_buckets() -> Timings {
    Timings::new(1_000, 12)
}

pub(crate) struct Metrics {
    registry: Registry,
    calls: Counter,
    casts: Counter,
    call_errors: [Counter; 8],
    exits: [Counter; 7],
    restarts: Counter,
    hibernations: Counter,
    wakes: Counter,
    plugin_loads: Counter,
    plugin_load_failures: Counter,
    call_duration: Histograms,
    mailbox_wait: Timings,
    restart_duration: Timings,
    reload_duration: Timings,
    children: [Gauge; 8],
    plugins: Gauge,
    instances: Gauge,
    on_demand_instances: Gauge,
    pool_unused: [Gauge; 3],
}

/// One counter of `family` per label value, created up front so that every
/// value shows, zero or not, and so that the hot path skips the family's
/// lookup.
fn per_label<M: Clone + Default, const N: usize>(
    family: &Family<Label, M>,
    key: &'static str,
    values: [&'static str; N],
) -> [M; N] {
    values.map(|v| family.get_or_create(&[(key, v)]).clone())
}

impl Default for Metrics {
    fn default() -> Self {
        let mut r = Registry::default();
        let counter = |r: &mut Registry, name: &str, help: &str| {
            let c = Counter::default();
            r.register(name, help, c.clone());
            c
        };
        let gauge = |r: &mut Registry, name: &str, help: &str| {
            let g = Gauge::default();
            r.register(name, help, g.clone());
            g
        };
        // Counter names leave out `_total`: the encoder adds it.
        let calls = counter(&mut r, "wasmvisor_calls", "Calls sent to children");
        let casts = counter(&mut r, "wasmvisor_casts", "Casts sent to children");
        let errors = Family::<Label, Counter>::default();
        r.register(
            "wasmvisor_call_errors",
            "Calls and casts that failed, by error code",
            errors.clone(),
        );
        let exits = Family::<Label, Counter>::default();
        r.register(
            "wasmvisor_exits",
            "Instance exits that the supervisor decided on, by reason",
            exits.clone(),
        );
        let restarts = counter(
            &mut r,
            "wasmvisor_restarts",
            "Instances started to replace an exited one",
        );
        let hibernations = counter(
            &mut r,
            "wasmvisor_hibernations",
            "Children that gave their instance back and kept their state",
        );
        let wakes = counter(
            &mut r,
            "wasmvisor_wakes",
            "Children without an instance woken by a message or a signal",
        );
        let plugin_loads = counter(
            &mut r,
            "wasmvisor_plugin_loads",
            "Plugin versions compiled and installed",
        );
        let plugin_load_failures = counter(
            &mut r,
            "wasmvisor_plugin_load_failures",
            "Plugin files that failed to load",
        );
        let call_duration = Histograms::new_with_constructor(call_buckets);
        r.register_with_unit(
            "wasmvisor_call_duration",
            "Time a child took to handle a call (its handle-call), by plugin",
            Unit::Seconds,
            call_duration.clone(),
        );
        let mailbox_wait = call_buckets();
        r.register_with_unit(
            "wasmvisor_mailbox_wait",
            "Time a call or cast waited in a child's mailbox",
            Unit::Seconds,
            mailbox_wait.clone(),
        );
        // From 10 µs to about 2.6 s: a restart is an instantiation and an
        // init, unless init does real work.
        let restart_duration = Timings::new(10_000, 10);
        r.register_with_unit(
            "wasmvisor_restart_duration",
            "From an instance's exit to its replacement serving, for restarts without a backoff",
            Unit::Seconds,
            restart_duration.clone(),
        );
        // From 1 ms to about 65 s: a reload compiles, then moves every
        // child of the plugin.
        let reload_duration = Timings::new(1_000_000, 9);
        r.register_with_unit(
            "wasmvisor_reload_duration",
            "From a plugin file change being noticed to the last child serving the new version",
            Unit::Seconds,
            reload_duration.clone(),
        );
        let children = Family::<Label, Gauge>::default();
        r.register("wasmvisor_children", "Children by status", children.clone());
        let plugins = gauge(&mut r, "wasmvisor_plugins", "Plugins with a loaded version");
        let instances = gauge(
            &mut r,
            "wasmvisor_instances",
            "Live wasm instances in the pool ([pool] max_instances at most)",
        );
        let on_demand_instances = gauge(
            &mut r,
            "wasmvisor_on_demand_instances",
            "Live instances of plugins too large for the pool ([pool] on_demand_instances at most)",
        );
        let pool_unused = Family::<Label, Gauge>::default();
        r.register(
            "wasmvisor_pool_unused_resident_bytes",
            "Bytes freed pool slots keep resident for the next instance ([pool] keep_resident_kib)",
            pool_unused.clone(),
        );
        Metrics {
            calls,
            casts,
            call_errors: per_label(&errors, "code", CALL_ERROR_CODES),
            exits: per_label(&exits, "reason", EXIT_CODES),
            restarts,
            hibernations,
            wakes,
            plugin_loads,
            plugin_load_failures,
            call_duration,
            mailbox_wait,
            restart_duration,
            reload_duration,
            children: per_label(&children, "status", STATUSES.map(Status::as_str)),
            plugins,
            instances,
            on_demand_instances,
            pool_unused: per_label(&pool_unused, "kind", POOL_KINDS),
            registry: r,
        }
    }
}

/// The gauges, as sampled from the host's state at scrape time.
pub(crate) struct Sample {
    /// Children per status, in the order of [`STATUSES`].
    pub children: [u64; 8],
    pub plugins: u64,
    pub instances: u64,
    pub on_demand_instances: u64,
    /// Bytes per kind, in the order of [`POOL_KINDS`].
    pub pool_unused: [u64; 3],
}

fn set(gauge: &Gauge, value: u64) {
    gauge.set(i64::try_from(value).unwrap_or(i64::MAX));
}

impl Metrics {
    pub(crate) fn call(&self) {
        self.calls.inc();
    }

    pub(crate) fn cast(&self) {
        self.casts.inc();
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
        self.call_errors[i].inc();
    }

    pub(crate) fn restart(&self) {
        self.restarts.inc();
    }

    pub(crate) fn hibernation(&self) {
        self.hibernations.inc();
    }

    pub(crate) fn wake(&self) {
        self.wakes.inc();
    }

    pub(crate) fn exit(&self, reason: &ExitReason) {
        let i = match reason {
            ExitReason::Normal => 0,
            ExitReason::Shutdown => 1,
            ExitReason::Trap(_) => 2,
            ExitReason::Killed(_) => 3,
            ExitReason::InitFailed(_) => 4,
            ExitReason::Linked(_) => 5,
            ExitReason::NoConnection => 6,
            // Only ever in `down` notifications, never an instance's exit.
            ExitReason::Noproc => return,
        };
        self.exits[i].inc();
    }

    pub(crate) fn plugin_load(&self, ok: bool) {
        match ok {
            true => self.plugin_loads.inc(),
            false => self.plugin_load_failures.inc(),
        };
    }

    /// The call-duration histogram of `plugin`, for its children to keep.
    pub(crate) fn call_duration(&self, plugin: &str) -> Timings {
        self.call_duration
            .get_or_create(&[("plugin", plugin.to_string())])
            .clone()
    }

    pub(crate) fn mailbox_wait(&self, wait: Duration) {
        self.mailbox_wait.observe(wait);
    }

    pub(crate) fn restart_duration(&self, took: Duration) {
        self.restart_duration.observe(took);
    }

    pub(crate) fn reload_duration(&self, took: Duration) {
        self.reload_duration.observe(took);
    }

    /// Every metric, with the gauges set from `sample`.
    pub(crate) fn render(&self, sample: &Sample) -> String {
        for (g, n) in self.children.iter().zip(sample.children) {
            set(g, n);
        }
        set(&self.plugins, sample.plugins);
        set(&self.instances, sample.instances);
        set(&self.on_demand_instances, sample.on_demand_instances);
        for (g, n) in self.pool_unused.iter().zip(sample.pool_unused) {
            set(g, n);
        }
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// A histogram of durations that takes no lock: each thread adds to its
/// own shard of relaxed counters, and a scrape sums the shards.
/// (`prometheus_client`'s `Histogram` takes a lock per observation, which
/// every core's children contend for; see BENCHMARKS.md.)
#[derive(Clone, Debug)]
pub(crate) struct Timings(Arc<TimingsInner>);

#[derive(Debug)]
struct TimingsInner {
    /// Upper bounds, ns, ascending; the last bucket (+Inf) is implicit.
    bounds: Vec<u64>,
    shards: Box<[Shard]>,
}

/// Most buckets a [`Timings`] has, +Inf included.
const MAX_BUCKETS: usize = 15;
const SHARDS: usize = 8;

/// One thread's counts, on cache lines of their own.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard {
    counts: [AtomicU64; MAX_BUCKETS],
    sum_ns: AtomicU64,
}

/// Which shard this thread adds to.
fn shard_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    INDEX.with(|i| *i)
}

impl Timings {
    /// `buckets` bounds from `first_ns`, by fours, then +Inf.
    pub(crate) fn new(first_ns: u64, buckets: u32) -> Timings {
        let bounds: Vec<u64> = (0..buckets)
            .map(|i| first_ns.saturating_mul(4u64.saturating_pow(i)))
            .take(MAX_BUCKETS - 1)
            .collect();
        let shards = (0..SHARDS).map(|_| Shard::default()).collect();
        Timings(Arc::new(TimingsInner { bounds, shards }))
    }

    pub(crate) fn observe(&self, took: Duration) {
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let bucket = self.0.bounds.partition_point(|b| *b < ns);
        let shard = &self.0.shards[shard_index()];
        shard.counts[bucket].fetch_add(1, Ordering::Relaxed);
        shard.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }
}

impl TypedMetric for Timings {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Timings {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let inner = &self.0;
        let mut counts = [0u64; MAX_BUCKETS];
        let mut sum_ns = 0u64;
        for shard in inner.shards.iter() {
            for (total, c) in counts.iter_mut().zip(&shard.counts) {
                *total += c.load(Ordering::Relaxed);
            }
            sum_ns = sum_ns.wrapping_add(shard.sum_ns.load(Ordering::Relaxed));
        }
        let buckets: Vec<(f64, u64)> = inner
            .bounds
            .iter()
            .map(|b| *b as f64 / 1e9)
            .chain(std::iter::once(f64::INFINITY))
            .zip(counts)
            .collect();
        let count = buckets.iter().map(|(_, c)| c).sum();
        encoder.encode_histogram::<NoLabelSet>(sum_ns as f64 / 1e9, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_gauges_and_histograms() {
        let m = Metrics::default();
        m.call();
        m.call_error(&CallError::Timeout);
        m.exit(&ExitReason::Trap("x".into()));
        m.call_duration("echo").observe(Duration::from_micros(3));
        m.mailbox_wait(Duration::from_micros(2));
        let text = m.render(&Sample {
            children: [0, 2, 0, 0, 0, 0, 0, 0],
            plugins: 1,
            instances: 2,
            on_demand_instances: 0,
            pool_unused: [4096, 0, 0],
        });
        assert!(text.contains("# TYPE wasmvisor_calls counter\nwasmvisor_calls_total 1\n"));
        assert!(text.contains("wasmvisor_call_errors_total{code=\"timeout\"} 1\n"));
        assert!(text.contains("wasmvisor_call_errors_total{code=\"not_found\"} 0\n"));
        assert!(text.contains("wasmvisor_exits_total{reason=\"trap\"} 1\n"));
        assert!(text.contains("wasmvisor_children{status=\"running\"} 2\n"));
        assert!(text.contains("wasmvisor_pool_unused_resident_bytes{kind=\"memory\"} 4096\n"));
        assert!(text.contains("# TYPE wasmvisor_call_duration_seconds histogram\n"));
        assert!(
            text.contains(
                "wasmvisor_call_duration_seconds_bucket{le=\"0.000004\",plugin=\"echo\"} 1\n"
            ),
            "{text}"
        );
        assert!(text.contains("wasmvisor_mailbox_wait_seconds_count 1\n"));
        assert!(text.ends_with("# EOF\n"));
    }
}
