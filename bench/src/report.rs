//! The benchmark's results: the JSON keys of ARCHITECTURE.md and a table
//! with the targets, each a ratio to a reference measured in the same run.

use crate::beam::Beam;
use crate::system::System;
use serde::Serialize;
use std::fmt::Write;

/// Every figure the benchmark produces. The first keys are the ones
/// ARCHITECTURE.md documents; the rest give context.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// µs per tracker spawned (start_child until init returned), 10,000 spawned.
    pub spawn_us: f64,
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
    /// The 1e7-iteration CPU loop in a guest, ms.
    pub cpu_1e7_ms: f64,
    /// Resident memory per spawned tracker, KiB.
    pub rss_per_instance_kib: f64,
    /// Instances that ran at once in the density run.
    pub max_live_instances: usize,
    /// Hot reload of 1,000 running instances, file renamed → all serving, ms.
    pub reload_1000_ms: f64,
    /// Native baseline: µs per actor spawned.
    pub native_spawn_us: f64,
    /// Native baseline: calls/s from one client.
    pub native_call_1c_per_s: f64,
    /// Native baseline: median call, µs.
    pub native_call_p50_us: f64,
    /// Native baseline: p99 call, µs.
    pub native_call_p99_us: f64,
    /// Native baseline: calls/s from 4 clients.
    pub native_call_4c_per_s: f64,
    /// Native baseline: casts/s.
    pub native_cast_per_s: f64,
    /// Native baseline: crash (state reset) → serving, median, µs.
    pub native_restart_p50_us: f64,
    /// Native baseline: p99, µs.
    pub native_restart_p99_us: f64,
    /// Native baseline: the CPU loop, ms.
    pub native_cpu_1e7_ms: f64,
    /// Native baseline: resident memory per actor, KiB.
    pub native_rss_per_instance_kib: f64,
    /// Resident memory per idle instance at each density step: (instances, KiB).
    pub rss_per_idle_instance_kib: Vec<(usize, f64)>,
    /// What a stopped tracker's pool slot keeps resident for the next
    /// instance (`[pool] keep_resident_kib`), KiB: an idle host holds this
    /// for every slot that was in use at once.
    pub kept_per_freed_instance_kib: f64,
    /// Page tables per spawned tracker, KiB: kernel memory outside RSS.
    pub page_tables_per_instance_kib: f64,
    /// Page tables per idle instance at each density step: (instances, KiB).
    pub page_tables_per_idle_instance_kib: Vec<(usize, f64)>,
    /// Memory mappings per live instance: what its pool slot took when the
    /// pool was created (its fiber stack and guard page) plus what a spawn
    /// added (its linear memory), measured in the spawn run.
    pub maps_per_instance: f64,
    /// CPU time per spawn, µs, all threads: (user, system). Wall time per
    /// spawn cannot fall below their sum divided by the cores.
    pub spawn_cpu_us: (f64, f64),
    /// CPU time per crash → serving cycle, µs, all threads: (user, system).
    pub restart_cpu_us: (f64, f64),
    /// The kernel's price of one fresh anonymous page (fault, allocation,
    /// zeroing), µs: every page a new instance touches costs this.
    pub fresh_page_us: f64,
    /// Children in the virtual-actor run (1,000,000, or fewer with --quick).
    pub virtual_children: usize,
    /// Lazy starts per second through the library API, durable (each
    /// acknowledged once its spec is on disk), up to `virtual_children`.
    pub lazy_start_per_s: f64,
    /// Host RSS per child without an instance at `virtual_children`, beyond
    /// its init args (and snapshot), bytes.
    pub hibernated_bytes_per_child: f64,
    /// Running trackers hibernated per second (snapshot stored, instance
    /// given back), from 64 tasks.
    pub hibernate_per_s: f64,
    /// A call to a hibernated tracker until its reply, median, µs.
    pub wake_p50_us: f64,
    /// The same, 99th percentile, µs.
    pub wake_p99_us: f64,
    /// A host starting with `virtual_children` stored children, until the
    /// last one stored answers a call, s.
    pub restore_1m_s: f64,
    /// The chaos plugin in Rust, Python and JavaScript: compile, spawn,
    /// memory and calls.
    pub languages: Vec<crate::languages::Figures>,
    /// What ended the density run.
    pub density_limit: String,
    /// Iterations of the CPU loop (1e7, or fewer with --quick).
    pub cpu_iterations: u64,
    /// Instances in the reload run (1,000, or fewer with --quick).
    pub reload_instances: usize,
    /// Calls per second from one client of node A's library API to a
    /// child on node B (2 nodes in one process, NATS on loopback).
    pub cluster_call_1c_per_s: f64,
    /// That call's latency, median, µs.
    pub cluster_call_p50_us: f64,
    /// That call's latency, 99th percentile, µs.
    pub cluster_call_p99_us: f64,
    /// Beside it, in the same run: calls/s from B's own library API to the
    /// same child (a local call on a node in cluster mode).
    pub local_call_1c_per_s: f64,
    /// The local call's latency, median, µs.
    pub local_call_p50_us: f64,
    /// The local call's latency, 99th percentile, µs.
    pub local_call_p99_us: f64,
    /// Calls timed per side in the cluster run.
    pub cluster_calls: usize,
    /// A node running 300 permanent children killed with `kill -9`: ms
    /// until the last of them answered a call through a survivor.
    pub rehome_300_ms: f64,
    /// The killed node's children (300).
    pub rehome_children: usize,
    /// `kill -9` until both survivors saw the node gone, ms: the
    /// `node_timeout_ms` part of the figure.
    pub rehome_detected_ms: f64,
    /// How old the killed node's last heartbeat was at the kill, as the
    /// survivors saw it, ms: the survivors see it gone `node_timeout_ms`
    /// after that heartbeat, so a kill just after one is the slow case.
    pub rehome_heartbeat_age_ms: u64,
    /// `kill -9` until half of the children answered, ms.
    pub rehome_p50_ms: f64,
    /// The killed node's children each survivor runs afterwards.
    pub rehome_per_survivor: std::collections::BTreeMap<String, usize>,
    /// How often the survivors' children were compared during and after
    /// the re-homing; an id on both at once fails the run.
    pub rehome_checks: usize,
    /// Why the cluster workloads did not run (empty when they ran or were
    /// not asked for).
    pub cluster_skipped: String,
    /// The small sizes of `--quick`.
    pub quick: bool,
    /// The machine.
    pub system: System,
    /// The BEAM GenServer reference, when Erlang is installed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub beam: Option<Beam>,
}

/// The re-homing target: a dead node's children serve again within 5 s.
const REHOME_TARGET_MS: f64 = 5_000.0;

/// One figure of the table: wasmvisor's, the references', and the target
/// it is held to, if any.
struct Row {
    name: &'static str,
    value: f64,
    native: Option<f64>,
    beam: Option<f64>,
    unit: &'static str,
    goal: Goal,
}

/// What a figure is held to.
enum Goal {
    /// Information only.
    None,
    /// At least the BEAM's (a rate).
    AtLeastBeam,
    /// At most the BEAM's (a latency).
    AtMostBeam,
    /// At most this many times the native baseline.
    RatioToNativeAtMost(f64),
    /// At least this (a fixed target).
    AtLeast(f64),
    /// At most this (a fixed target; 0 when what it is derived from was
    /// not measured).
    AtMost(f64),
}

impl Report {
    pub fn new(quick: bool) -> Report {
        Report {
            quick,
            ..Report::default()
        }
    }

    fn rows(&self) -> Vec<Row> {
        let b = self.beam.as_ref();
        let row = |name, value, native, beam: Option<f64>, unit, goal| Row {
            name,
            value,
            native,
            beam,
            unit,
            goal,
        };
        vec![
            row(
                "spawn per tracker",
                self.spawn_us,
                Some(self.native_spawn_us),
                b.map(|b| b.spawn_us),
                "µs",
                Goal::None,
            ),
            row(
                "calls, 1 client",
                self.call_1c_per_s,
                Some(self.native_call_1c_per_s),
                b.map(|b| b.call_1c_per_s),
                "/s",
                Goal::AtLeastBeam,
            ),
            row(
                "call p50",
                self.call_p50_us,
                Some(self.native_call_p50_us),
                b.map(|b| b.call_p50_us),
                "µs",
                Goal::AtMostBeam,
            ),
            row(
                "call p99",
                self.call_p99_us,
                Some(self.native_call_p99_us),
                b.map(|b| b.call_p99_us),
                "µs",
                Goal::None,
            ),
            row(
                "calls, 4 clients",
                self.call_4c_per_s,
                Some(self.native_call_4c_per_s),
                b.map(|b| b.call_4c_per_s),
                "/s",
                Goal::AtLeastBeam,
            ),
            row(
                "casts",
                self.cast_per_s,
                Some(self.native_cast_per_s),
                b.map(|b| b.cast_per_s),
                "/s",
                Goal::AtLeastBeam,
            ),
            row(
                "crash → serving p50",
                self.restart_p50_us,
                Some(self.native_restart_p50_us),
                b.map(|b| b.restart_p50_us),
                "µs",
                Goal::AtMostBeam,
            ),
            row(
                "crash → serving p99",
                self.restart_p99_us,
                Some(self.native_restart_p99_us),
                b.map(|b| b.restart_p99_us),
                "µs",
                Goal::AtMostBeam,
            ),
            row(
                "CPU loop",
                self.cpu_1e7_ms,
                Some(self.native_cpu_1e7_ms),
                None,
                "ms",
                Goal::RatioToNativeAtMost(1.3),
            ),
            row(
                "RSS per spawned instance",
                self.rss_per_instance_kib,
                Some(self.native_rss_per_instance_kib),
                b.map(|b| b.rss_per_instance_kib),
                "KiB",
                Goal::None,
            ),
            row(
                "live instances",
                self.max_live_instances as f64,
                None,
                None,
                "",
                Goal::None,
            ),
            row(
                "hot reload",
                self.reload_1000_ms,
                None,
                None,
                "ms",
                Goal::None,
            ),
            row(
                "lazy starts (durable)",
                self.lazy_start_per_s,
                None,
                None,
                "/s",
                Goal::AtLeast(100_000.0),
            ),
            row(
                "bytes per hibernated child",
                self.hibernated_bytes_per_child,
                None,
                None,
                "B",
                Goal::AtMost(1_024.0),
            ),
            row(
                "hibernations",
                self.hibernate_per_s,
                None,
                None,
                "/s",
                Goal::None,
            ),
            row(
                "wake p50",
                self.wake_p50_us,
                None,
                None,
                "µs",
                Goal::AtMost(2.0 * self.spawn_us),
            ),
            row("wake p99", self.wake_p99_us, None, None, "µs", Goal::None),
            row(
                "restore of all stored",
                self.restore_1m_s,
                None,
                None,
                "s",
                Goal::AtMost(30.0),
            ),
        ]
    }

    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let s = &self.system;
        let _ = writeln!(
            out,
            "wasmvisor-bench{} on {} ({} cores, {:.0} GiB, vm.max_map_count {})\n",
            if self.quick {
                " --quick (small sizes; targets are for the full run)"
            } else {
                ""
            },
            s.cpu,
            s.cores,
            s.memory_gib,
            s.max_map_count
        );
        let _ = writeln!(
            out,
            "{:<26} {:>13} {:>13} {:>13} {:>8}  target",
            "workload", "wasmvisor", "native tokio", "BEAM", "vs BEAM"
        );
        let (rows, skipped): (Vec<_>, Vec<_>) =
            self.rows().into_iter().partition(|r| r.value > 0.0);
        for r in rows {
            let shown = |v: Option<f64>| {
                v.filter(|v| *v > 0.0)
                    .map_or("-".to_string(), |v| fmt(v, r.unit))
            };
            let beam = r.beam.filter(|b| *b > 0.0);
            let vs_beam = beam.map_or("-".to_string(), |b| format!("{:.2}x", r.value / b));
            let (goal, met) = match r.goal {
                Goal::None => ("-".to_string(), None),
                Goal::AtLeastBeam => ("≥ BEAM".to_string(), beam.map(|b| r.value >= b)),
                Goal::AtMostBeam => ("≤ BEAM".to_string(), beam.map(|b| r.value <= b)),
                Goal::AtLeast(g) => (format!("≥ {}", fmt(g, r.unit)), Some(r.value >= g)),
                Goal::AtMost(g) if g > 0.0 => (format!("≤ {}", fmt(g, r.unit)), Some(r.value <= g)),
                Goal::AtMost(_) => ("-".to_string(), None),
                Goal::RatioToNativeAtMost(g) => (
                    format!("≤ {g}x native"),
                    r.native.filter(|n| *n > 0.0).map(|n| r.value / n <= g),
                ),
            };
            let mark = match (met, self.quick) {
                (_, true) | (None, _) => "",
                (Some(true), false) => "met",
                (Some(false), false) => "MISSED",
            };
            let _ = writeln!(
                out,
                "{:<26} {:>13} {:>13} {:>13} {:>8}  {:<14} {mark}",
                r.name,
                fmt(r.value, r.unit),
                shown(r.native),
                shown(beam),
                vs_beam,
                goal
            );
        }
        if self.beam.is_none() {
            let _ = writeln!(
                out,
                "no BEAM reference (install Erlang, e.g. apt-get install erlang-base, for the ≥/≤ BEAM targets)"
            );
        }
        if !skipped.is_empty() {
            let names: Vec<_> = skipped.iter().map(|r| r.name).collect();
            let _ = writeln!(out, "not run (--only): {}", names.join(", "));
        }
        let _ = writeln!(out);
        for (n, kib) in &self.rss_per_idle_instance_kib {
            let _ = writeln!(out, "RSS per idle instance at {n} instances: {kib:.1} KiB");
        }
        if self.kept_per_freed_instance_kib > 0.0 {
            let _ = writeln!(
                out,
                "kept resident by a stopped tracker's pool slot: {:.1} KiB (keep_resident_kib)",
                self.kept_per_freed_instance_kib
            );
        }
        if self.page_tables_per_instance_kib > 0.0 {
            let _ = writeln!(
                out,
                "page tables per spawned instance: {:.1} KiB (kernel memory, not in RSS)",
                self.page_tables_per_instance_kib
            );
        }
        for (n, kib) in &self.page_tables_per_idle_instance_kib {
            let _ = writeln!(
                out,
                "page tables per idle instance at {n} instances: {kib:.1} KiB (not in RSS)"
            );
        }
        if self.maps_per_instance > 0.0 {
            let _ = writeln!(
                out,
                "memory mappings per live instance (its memory and fiber stack): {:.1}",
                self.maps_per_instance
            );
        }
        if !self.languages.is_empty() {
            let _ = writeln!(
                out,
                "\n{:<10} {:>9} {:>10} {:>13} {:>12} {:>10} {:>10} {:>11} {:>9} {:>9}",
                "plugin",
                "size",
                "allocated",
                "compile cold",
                "from cache",
                "spawn p50",
                "spawn p99",
                "RSS/inst",
                "calls/s",
                "call p50"
            );
            for l in &self.languages {
                let _ = writeln!(
                    out,
                    "{:<10} {:>6.0} KiB {:>10} {:>10.0} ms {:>9.1} ms {:>7.0} µs {:>7.0} µs \
                     {:>7.0} KiB {:>9.0} {:>6.1} µs",
                    l.plugin,
                    l.size_kib,
                    l.allocation,
                    l.compile_cold_ms,
                    l.compile_cached_ms,
                    l.spawn_p50_us,
                    l.spawn_p99_us,
                    l.rss_per_instance_kib,
                    l.call_per_s,
                    l.call_p50_us
                );
            }
        }
        if self.cluster_calls > 0 {
            let _ = writeln!(
                out,
                "\n{:<26} {:>15} {:>15}",
                "2 nodes, NATS on loopback", "A → B's child", "B → own child"
            );
            for (name, remote, local, unit) in [
                (
                    "calls, 1 client",
                    self.cluster_call_1c_per_s,
                    self.local_call_1c_per_s,
                    "/s",
                ),
                (
                    "call p50",
                    self.cluster_call_p50_us,
                    self.local_call_p50_us,
                    "µs",
                ),
                (
                    "call p99",
                    self.cluster_call_p99_us,
                    self.local_call_p99_us,
                    "µs",
                ),
            ] {
                let _ = writeln!(
                    out,
                    "{name:<26} {:>15} {:>15}",
                    fmt(remote, unit),
                    fmt(local, unit)
                );
            }
        }
        if self.rehome_children > 0 {
            let mark = match (self.quick, self.rehome_300_ms <= REHOME_TARGET_MS) {
                (true, _) => "",
                (false, true) => ": met",
                (false, false) => ": MISSED",
            };
            let on: Vec<String> = self
                .rehome_per_survivor
                .iter()
                .map(|(node, n)| format!("{n} on {node}"))
                .collect();
            let _ = writeln!(
                out,
                "\nre-homing: {} permanent children of a node killed with kill -9 serve again \
                 through a survivor after {:.2} s (target ≤ {:.0} s{mark}), half of them after \
                 {:.2} s; the survivors saw the node gone after {:.2} s (its last heartbeat \
                 was {} ms old at the kill); now {}; no id ran on two nodes at once in {} checks",
                self.rehome_children,
                self.rehome_300_ms / 1e3,
                REHOME_TARGET_MS / 1e3,
                self.rehome_p50_ms / 1e3,
                self.rehome_detected_ms / 1e3,
                self.rehome_heartbeat_age_ms,
                on.join(", "),
                self.rehome_checks
            );
        }
        if !self.cluster_skipped.is_empty() {
            let _ = writeln!(out, "cluster and rehome not run: {}", self.cluster_skipped);
        }
        if !self.density_limit.is_empty() {
            let _ = writeln!(out, "density run: {}", self.density_limit);
        }
        for (what, (user, sys)) in [
            ("spawn", self.spawn_cpu_us),
            ("crash → serving cycle", self.restart_cpu_us),
        ] {
            if user + sys == 0.0 {
                continue;
            }
            let _ = writeln!(
                out,
                "CPU per {what}: {user:.1} µs user + {sys:.1} µs system (all threads)"
            );
        }
        if self.fresh_page_us > 0.0 {
            let _ = writeln!(
                out,
                "a fresh page of memory costs {:.2} µs here (first write after madvise)",
                self.fresh_page_us
            );
        }
        if self.cpu_iterations > 0 {
            let _ = writeln!(out, "CPU loop: {} iterations", self.cpu_iterations);
        }
        if self.virtual_children > 0 {
            let _ = writeln!(
                out,
                "virtual actors: {} lazily started children; wake p50 is held to 2x the spawn figure",
                self.virtual_children
            );
        }
        if self.reload_instances > 0 {
            let _ = writeln!(out, "hot reload: {} instances", self.reload_instances);
        }
        out
    }
}

fn fmt(v: f64, unit: &str) -> String {
    match unit {
        "/s" => format!("{:.0}/s", v),
        "" => format!("{v:.0}"),
        u if v >= 100.0 => format!("{v:.0} {u}"),
        u => format!("{v:.1} {u}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_latencies_are_held_to_the_beam_and_the_rest_is_information() {
        let report = Report {
            spawn_us: 50.0,
            native_spawn_us: 3.0,
            call_1c_per_s: 100_000.0,
            native_call_1c_per_s: 1_000_000.0,
            cast_per_s: 900_000.0,
            spawn_cpu_us: (40.0, 70.0),
            page_tables_per_instance_kib: 4.3,
            beam: Some(Beam {
                spawn_us: 2.0,
                call_1c_per_s: 180_000.0,
                cast_per_s: 600_000.0,
                ..Beam::default()
            }),
            ..Report::default()
        };
        let table = report.table();
        let line = |start: &str| table.lines().find(|l| l.starts_with(start)).unwrap();
        assert!(line("calls, 1 client").contains("MISSED"), "{table}");
        assert!(line("casts").contains("met"), "{table}");
        assert!(line("casts").contains("1.50x"), "{table}");
        assert!(!line("spawn").contains("MISSED"), "{table}");
        assert_eq!(table.matches("MISSED").count(), 1, "{table}");
        assert!(table.contains("not run (--only): call p50"), "{table}");
        assert!(
            table.contains("CPU per spawn: 40.0 µs user + 70.0 µs system"),
            "{table}"
        );
        assert!(!table.contains("CPU per crash"), "{table}");
        assert!(
            table.contains("page tables per spawned instance: 4.3 KiB"),
            "{table}"
        );
        assert!(!table.contains("per idle instance"), "{table}");
        assert!(!table.contains("no BEAM reference"), "{table}");
    }

    #[test]
    fn the_virtual_actor_figures_are_held_to_fixed_targets_and_to_the_spawn_figure() {
        let report = Report {
            spawn_us: 50.0,
            lazy_start_per_s: 120_000.0,
            hibernated_bytes_per_child: 1_100.0,
            wake_p50_us: 90.0,
            restore_1m_s: 4.0,
            virtual_children: 1_000_000,
            ..Report::default()
        };
        let table = report.table();
        let line = |start: &str| table.lines().find(|l| l.starts_with(start)).unwrap();
        assert!(line("lazy starts").ends_with("met"), "{table}");
        assert!(line("bytes per hibernated").contains("MISSED"), "{table}");
        assert!(line("wake p50").contains("≤ 100 µs"), "{table}");
        assert!(line("wake p50").ends_with("met"), "{table}");
        assert!(line("restore of all").ends_with("met"), "{table}");
        let unmeasured = Report {
            wake_p50_us: 90.0,
            ..Report::default()
        };
        assert!(
            !unmeasured.table().contains("MISSED"),
            "no spawn figure, no target"
        );
    }

    #[test]
    fn the_cluster_figures_stand_beside_the_local_call_and_rehoming_is_held_to_5_s() {
        let report = Report {
            cluster_calls: 20_000,
            cluster_call_1c_per_s: 9_000.0,
            cluster_call_p50_us: 105.0,
            local_call_1c_per_s: 400_000.0,
            local_call_p50_us: 1.5,
            rehome_300_ms: 5_200.0,
            rehome_children: 300,
            rehome_detected_ms: 3_000.0,
            rehome_p50_ms: 3_300.0,
            rehome_per_survivor: [("s1".to_string(), 160), ("s2".to_string(), 140)].into(),
            rehome_checks: 40,
            ..Report::default()
        };
        let table = report.table();
        let line = |start: &str| table.lines().find(|l| l.starts_with(start)).unwrap();
        let calls = table
            .lines()
            .rfind(|l| l.starts_with("calls, 1 client"))
            .unwrap();
        assert!(
            calls.contains("9000/s") && calls.contains("400000/s"),
            "{table}"
        );
        assert!(line("re-homing: 300").contains("5.20 s"), "{table}");
        assert!(line("re-homing: 300").contains("MISSED"), "{table}");
        assert!(
            line("re-homing: 300").contains("160 on s1, 140 on s2"),
            "{table}"
        );
        let skipped = Report {
            cluster_skipped: "nats-server is not on the PATH".into(),
            ..Report::default()
        };
        let table = skipped.table();
        assert!(
            table.contains("cluster and rehome not run: nats-server is not on the PATH"),
            "{table}"
        );
        assert!(!table.contains("re-homing"), "{table}");
    }

    #[test]
    fn without_erlang_the_table_says_so_and_marks_nothing_against_it() {
        let report = Report {
            call_1c_per_s: 100_000.0,
            ..Report::default()
        };
        let table = report.table();
        assert!(table.contains("no BEAM reference"), "{table}");
        assert!(!table.contains("MISSED"), "{table}");
    }
}
