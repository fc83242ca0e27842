//! The workloads of ARCHITECTURE.md "Benchmark", run through the same path a
//! user's calls take (`Host` → registry → mailbox → the child's task →
//! wasm), each beside a plain tokio actor baseline where one applies.

use crate::native::{self, NativeHost};
use crate::report::Report;
use crate::shared::{calls_1c, percentile, progress, tracker_spec};
use crate::system;
use anyhow::{Context, Result, anyhow, bail, ensure};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use wasmvisor::config::{Config, PluginConfig, PoolConfig};
use wasmvisor::{CallError, ChildSpec, Event, Host, StartError};

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// A folder with `chaos.wasm` and `tracker.wasm`.
    pub plugins: PathBuf,
    /// Small sizes, for CI.
    pub quick: bool,
    /// Run only these workloads (for profiling); all when empty.
    pub only: Vec<String>,
    /// Pool settings to compare against the defaults (`max_instances` is
    /// the bench's own: each host is sized for its workload).
    pub pool: PoolConfig,
    /// Run the native baseline beside each workload (on by default).
    pub native: bool,
}

impl Default for Options {
    /// The defaults, with the example plugins of this checkout.
    fn default() -> Options {
        Options {
            plugins: default_plugins(),
            quick: false,
            only: Vec::new(),
            pool: PoolConfig::default(),
            native: true,
        }
    }
}

impl Options {
    pub fn wants(&self, workload: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|w| w == workload)
    }
}

/// The workload names `--only` accepts.
pub const WORKLOADS: &[&str] = &[
    "spawn",
    "calls",
    "calls4",
    "casts",
    "crash",
    "cpu",
    "reload",
    "density",
    "virtual",
    "languages",
    "cluster",
    "rehome",
];

/// The sizes of every workload.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    spawn: usize,
    calls: usize,
    calls_4c: usize,
    casts: usize,
    cast_children: usize,
    crashes: usize,
    spin: u64,
    reload: usize,
    density: [usize; 2],
}

const FULL: Sizes = Sizes {
    spawn: 10_000,
    calls: 100_000,
    calls_4c: 200_000,
    casts: 1_000_000,
    cast_children: 1_000,
    crashes: 1_000,
    spin: 10_000_000,
    reload: 1_000,
    density: [10_000, 100_000],
};

const QUICK: Sizes = Sizes {
    spawn: 500,
    calls: 5_000,
    calls_4c: 8_000,
    casts: 20_000,
    cast_children: 100,
    crashes: 100,
    spin: 1_000_000,
    reload: 100,
    density: [1_000, 2_000],
};

/// How many tasks start children at once in the spawn workload.
const SPAWNERS: usize = 4;
const TIMEOUT: Duration = Duration::from_secs(30);

/// The default plugins folder: the example plugins built in this checkout.
pub fn default_plugins() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/target/wasm32-wasip2/release")
}

/// A host on a temp plugins folder holding chaos and tracker.
async fn host(opts: &Options, dir: &Path, max_instances: u32) -> Result<Host> {
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins)?;
    for name in ["chaos", "tracker"] {
        let from = opts.plugins.join(format!("{name}.wasm"));
        std::fs::copy(&from, plugins.join(format!("{name}.wasm"))).with_context(|| {
            format!(
                "{} is missing; build the example plugins first: (cd plugins && cargo build --release --target wasm32-wasip2)",
                from.display()
            )
        })?;
    }
    let mut config = Config {
        plugins_dir: plugins,
        data_dir: dir.join("data"),
        ephemeral: true,
        ..Config::default()
    };
    config.pool = PoolConfig {
        max_instances,
        ..opts.pool
    };
    // Crash cycles are the point here, not a reason to back off.
    config.supervisor.max_restarts = u32::MAX;
    let generous = PluginConfig {
        cpu_ms: 60_000,
        ..PluginConfig::default()
    };
    config.plugins.insert("chaos".into(), generous.clone());
    config.plugins.insert("tracker".into(), generous);
    let host = Host::new(config).await?;
    ensure!(
        host.plugins().iter().all(|p| p.version.is_some()),
        "a plugin failed to load: {:?}",
        host.plugins()
    );
    Ok(host)
}

async fn call(host: &Host, id: &str, msg: &[u8]) -> Result<Vec<u8>, CallError> {
    host.call(id, msg.to_vec(), TIMEOUT).await
}

/// Runs every workload and returns the report.
pub async fn run(opts: Options) -> Result<Report> {
    let sizes = if opts.quick { QUICK } else { FULL };
    let dir = tempfile_dir()?;
    let mut r = Report::new(opts.quick);
    let system = system::System::read();
    let main_pool = (sizes.spawn + sizes.cast_children + sizes.reload + 200) as u32;
    let maps_before_host = system::map_count();
    let host = host(&opts, &dir, main_pool).await?;
    // The pool maps each slot's fiber stack (and its guard page) when it is
    // created: counted per slot here, and what a spawn adds on top below.
    let maps_per_slot =
        system::map_count().saturating_sub(maps_before_host) as f64 / main_pool as f64;
    let native = NativeHost::default();

    if opts.wants("spawn") {
        progress("spawn");
        let maps_before = system::map_count();
        let rss_before = system::rss_bytes();
        let page_tables_before = system::page_table_bytes();
        let cpu_before = system::cpu_time();
        r.spawn_us = spawn(&host, sizes.spawn).await?;
        r.spawn_cpu_us = system::cpu_per_op_us(cpu_before, sizes.spawn);
        r.rss_per_instance_kib = kib_per(system::rss_bytes(), rss_before, sizes.spawn);
        r.page_tables_per_instance_kib =
            kib_per(system::page_table_bytes(), page_tables_before, sizes.spawn);
        r.maps_per_instance = maps_per_slot
            + (system::map_count().saturating_sub(maps_before)) as f64 / sizes.spawn as f64;
        if opts.native {
            let rss_before = system::rss_bytes();
            r.native_spawn_us = native_spawn(&native, sizes.spawn).await;
            r.native_rss_per_instance_kib = kib_per(system::rss_bytes(), rss_before, sizes.spawn);
        }
        for i in 0..sizes.spawn {
            host.stop_child(&format!("s{i}")).await?;
        }
        r.kept_per_freed_instance_kib =
            kept_resident_bytes(&host) as f64 / 1024.0 / sizes.spawn as f64;
        native.clear();
    }

    progress("calls");
    host.start_child(ChildSpec::new("c0", "chaos", &serde_json::Value::Null))
        .await?;
    native.spawn("c0", b"null").await;
    let add = br#"{"add":1}"#;
    if opts.wants("calls") {
        let (rate, p50, p99) = calls_1c(sizes.calls, || call(&host, "c0", add)).await?;
        (r.call_1c_per_s, r.call_p50_us, r.call_p99_us) = (rate, p50, p99);
        if opts.native {
            let (rate, p50, p99) =
                calls_1c(sizes.calls, || native.call("c0", add.to_vec())).await?;
            (
                r.native_call_1c_per_s,
                r.native_call_p50_us,
                r.native_call_p99_us,
            ) = (rate, p50, p99);
        }
    }

    for i in 1..4 {
        host.start_child(ChildSpec::new(
            format!("c{i}"),
            "chaos",
            &serde_json::Value::Null,
        ))
        .await?;
        native.spawn(&format!("c{i}"), b"null").await;
    }
    if opts.wants("calls4") {
        progress("calls from 4 clients");
        r.call_4c_per_s = calls_4c(sizes.calls_4c, {
            let host = host.clone();
            move |i| {
                let host = host.clone();
                async move {
                    call(&host, &format!("c{i}"), add)
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                }
            }
        })
        .await?;
    }
    if opts.wants("calls4") && opts.native {
        r.native_call_4c_per_s = calls_4c(sizes.calls_4c, {
            let native = native.clone();
            move |i| {
                let native = native.clone();
                async move {
                    native
                        .call(&format!("c{i}"), add.to_vec())
                        .await
                        .map(|_| ())
                }
            }
        })
        .await?;
    }

    if opts.wants("casts") {
        progress("casts");
        r.cast_per_s = casts(&host, sizes).await?;
        if opts.native {
            r.native_cast_per_s = native_casts(&native, sizes).await?;
        }
    }
    if opts.wants("crash") {
        progress("crash cycles");
        let cpu_before = system::cpu_time();
        (r.restart_p50_us, r.restart_p99_us) = crash_cycles(&host, sizes.crashes).await?;
        r.restart_cpu_us = system::cpu_per_op_us(cpu_before, sizes.crashes);
        if opts.native {
            (r.native_restart_p50_us, r.native_restart_p99_us) =
                native_crash_cycles(&native, sizes.crashes).await?;
        }
    }
    if opts.wants("cpu") {
        progress("CPU-bound call");
        (r.cpu_1e7_ms, r.native_cpu_1e7_ms) = cpu(&host, sizes.spin).await?;
        r.cpu_iterations = sizes.spin;
    }
    if opts.wants("reload") {
        progress("hot reload");
        r.reload_1000_ms = reload(&host, &dir, sizes.reload).await?;
        r.reload_instances = sizes.reload;
    }
    // Children hold the host (and its instance pool) until they stop.
    host.shutdown().await;
    drop(host);
    native.clear();

    if opts.wants("density") {
        progress("density");
        let per_live = if r.maps_per_instance > 0.0 {
            r.maps_per_instance
        } else {
            4.0
        };
        let density = {
            let (opts, dir, system) = (opts.clone(), dir.clone(), system.clone());
            on_own_runtime("density", async move {
                density(&opts, &dir, sizes.density, &system, per_live).await
            })
            .await?
        };
        r.rss_per_idle_instance_kib = density.rss;
        r.page_tables_per_idle_instance_kib = density.page_tables;
        r.max_live_instances = density.max_live;
        r.density_limit = density.limit;
    }
    if opts.wants("virtual") {
        progress("virtual actors");
        let sizes = if opts.quick {
            crate::actors::QUICK
        } else {
            crate::actors::FULL
        };
        let v = {
            let (opts, dir) = (opts.clone(), dir.join("virtual"));
            on_own_runtime("virtual", async move {
                crate::actors::run(&opts.plugins, &dir, &opts.pool, sizes).await
            })
            .await?
        };
        r.virtual_children = v.children;
        r.lazy_start_per_s = v.lazy_start_per_s;
        r.hibernated_bytes_per_child = v.hibernated_bytes_per_child;
        r.hibernate_per_s = v.hibernate_per_s;
        r.wake_p50_us = v.wake_p50_us;
        r.wake_p99_us = v.wake_p99_us;
        r.restore_1m_s = v.restore_s;
    }
    if opts.wants("languages") {
        match crate::languages::plugins(&opts.plugins, &crate::languages::default_folder()) {
            Ok(plugins) => {
                progress("Rust, Python and JavaScript plugins");
                let sizes = if opts.quick {
                    crate::languages::QUICK
                } else {
                    crate::languages::FULL
                };
                let dir = dir.join("languages");
                r.languages = on_own_runtime("languages", async move {
                    crate::languages::run(&plugins, &dir, sizes).await
                })
                .await?;
            }
            // Asked for by name, it must run; in a full run it needs what
            // the tests build, and says so.
            Err(e) if !opts.only.is_empty() => return Err(e),
            Err(e) => eprintln!("skipping the languages workload: {e:#}"),
        }
    }
    if opts.wants("cluster") || opts.wants("rehome") {
        match crate::cluster::unavailable() {
            // Not installed is not a failure: the rest of the run stands.
            Some(reason) => {
                eprintln!("skipping the cluster workloads: {reason}");
                r.cluster_skipped = reason;
            }
            None => {
                let sizes = if opts.quick {
                    crate::cluster::QUICK
                } else {
                    crate::cluster::FULL
                };
                let c = {
                    let wanted = crate::cluster::Wanted {
                        plugins: opts.plugins.clone(),
                        pool: opts.pool,
                        calls: opts.wants("cluster"),
                        rehome: opts.wants("rehome"),
                    };
                    let dir = dir.join("cluster");
                    // On a runtime worker, as the calls workload's client
                    // is (see main).
                    on_own_runtime("cluster", async move {
                        tokio::spawn(async move { crate::cluster::run(&wanted, &dir, sizes).await })
                            .await?
                    })
                    .await?
                };
                r.cluster_calls = c.calls;
                (
                    r.cluster_call_1c_per_s,
                    r.cluster_call_p50_us,
                    r.cluster_call_p99_us,
                ) = (c.remote.per_s, c.remote.p50_us, c.remote.p99_us);
                (
                    r.local_call_1c_per_s,
                    r.local_call_p50_us,
                    r.local_call_p99_us,
                ) = (c.local.per_s, c.local.p50_us, c.local.p99_us);
                if let Some(h) = c.rehome {
                    r.rehome_300_ms = h.ms;
                    r.rehome_children = h.children;
                    r.rehome_detected_ms = h.detected_ms;
                    r.rehome_heartbeat_age_ms = h.heartbeat_age_ms;
                    r.rehome_p50_ms = h.p50_ms;
                    r.rehome_per_survivor = h.per_survivor;
                    r.rehome_checks = h.checks;
                }
            }
        }
    }
    r.system = system;
    r.fresh_page_us = system::fresh_page_us();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(r)
}

/// Runs `work` on a runtime of its own: its threads start with empty heaps,
/// so the RSS a memory workload reads grows by what its children take, not
/// by what the other workloads freed.
async fn on_own_runtime<T: Send + 'static>(
    what: &str,
    work: impl std::future::Future<Output = Result<T>> + Send + 'static,
) -> Result<T> {
    let what = what.to_string();
    let context = what.clone();
    tokio::task::spawn_blocking(move || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .with_context(|| format!("cannot start a runtime for the {what} workload"))?
            .block_on(work)
    })
    .await
    .with_context(|| format!("the {context} workload panicked"))?
}

/// What freed pool slots keep resident (`[pool] keep_resident_kib`), from
/// the host's `/metrics` text.
fn kept_resident_bytes(host: &Host) -> u64 {
    host.metrics_text()
        .lines()
        .filter(|l| l.starts_with("wasmvisor_pool_unused_resident_bytes{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

fn tempfile_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("wasmvisor-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// KiB per instance that a memory figure grew by, from `before` to `now`.
fn kib_per(now: u64, before: u64, n: usize) -> f64 {
    now.saturating_sub(before) as f64 / 1024.0 / n.max(1) as f64
}

/// Starts `n` trackers from [`SPAWNERS`] tasks; µs per tracker.
async fn spawn(host: &Host, n: usize) -> Result<f64> {
    let t = Instant::now();
    let tasks: Vec<_> = (0..SPAWNERS)
        .map(|k| {
            let host = host.clone();
            tokio::spawn(async move {
                for i in (k..n).step_by(SPAWNERS) {
                    host.start_child(tracker_spec(format!("s{i}"))).await?;
                }
                Ok::<_, StartError>(())
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    Ok(t.elapsed().as_secs_f64() * 1e6 / n as f64)
}

async fn native_spawn(native: &NativeHost, n: usize) -> f64 {
    let t = Instant::now();
    let tasks: Vec<_> = (0..SPAWNERS)
        .map(|k| {
            let native = native.clone();
            tokio::spawn(async move {
                for i in (k..n).step_by(SPAWNERS) {
                    let id = format!("s{i}");
                    let args = format!(r#"{{"transaction_id":"{id}"}}"#);
                    native.spawn(&id, args.as_bytes()).await;
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    t.elapsed().as_secs_f64() * 1e6 / n as f64
}

/// `n` calls split over 4 concurrent clients, each calling its own child.
async fn calls_4c<F, Fut>(n: usize, one: F) -> Result<f64>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send,
{
    let t = Instant::now();
    let tasks: Vec<_> = (0..4)
        .map(|i| {
            let one = one.clone();
            tokio::spawn(async move {
                for _ in 0..n / 4 {
                    one(i).await?;
                }
                Ok::<_, String>(())
            })
        })
        .collect();
    for t in tasks {
        t.await?.map_err(|e| anyhow!("call failed: {e}"))?;
    }
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

/// `sizes.casts` casts spread over `sizes.cast_children` children, then a
/// call to each that checks every cast was handled: casts/s.
async fn casts(host: &Host, sizes: Sizes) -> Result<f64> {
    let ids: Vec<String> = (0..sizes.cast_children).map(|i| format!("k{i}")).collect();
    for id in &ids {
        host.start_child(ChildSpec::new(
            id.clone(),
            "chaos",
            &serde_json::Value::Null,
        ))
        .await?;
    }
    let bump = br#""bump""#;
    let t = Instant::now();
    for i in 0..sizes.casts {
        let id = &ids[i % ids.len()];
        loop {
            match host.cast(id, bump.to_vec()) {
                Ok(()) => break,
                Err(CallError::MailboxFull) => tokio::task::yield_now().await,
                Err(e) => bail!("cast failed: {e}"),
            }
        }
    }
    let per_child = (sizes.casts / ids.len()) as i64;
    for id in &ids {
        let state: serde_json::Value =
            serde_json::from_slice(&call(host, id, br#""state""#).await?)?;
        ensure!(
            state["count"] == per_child,
            "{id} handled {} casts, not {per_child}",
            state["count"]
        );
    }
    let rate = sizes.casts as f64 / t.elapsed().as_secs_f64();
    for id in &ids {
        host.stop_child(id).await?;
    }
    Ok(rate)
}

async fn native_casts(native: &NativeHost, sizes: Sizes) -> Result<f64> {
    let ids: Vec<String> = (0..sizes.cast_children).map(|i| format!("k{i}")).collect();
    for id in &ids {
        native.spawn(id, b"null").await;
    }
    let t = Instant::now();
    for i in 0..sizes.casts {
        let id = &ids[i % ids.len()];
        while native.cast(id, br#""bump""#.to_vec()).is_err() {
            tokio::task::yield_now().await;
        }
    }
    let per_child = (sizes.casts / ids.len()) as i64;
    for id in &ids {
        let state: serde_json::Value = serde_json::from_slice(
            &native
                .call(id, br#""state""#.to_vec())
                .await
                .map_err(anyhow::Error::msg)?,
        )?;
        ensure!(
            state["count"] == per_child,
            "native {id} handled {} casts",
            state["count"]
        );
    }
    Ok(sizes.casts as f64 / t.elapsed().as_secs_f64())
}

/// crash → restarted → serving, `n` times, init args verified each time:
/// (p50 µs, p99 µs).
async fn crash_cycles(host: &Host, n: usize) -> Result<(f64, f64)> {
    let args = serde_json::json!({"check": 4242});
    host.start_child(ChildSpec::new("crasher", "chaos", &args))
        .await?;
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        match call(host, "crasher", br#""crash""#).await {
            Err(CallError::Trapped(_)) => {}
            other => bail!("a crash answered {other:?}"),
        }
        let state: serde_json::Value =
            serde_json::from_slice(&call(host, "crasher", br#""state""#).await?)?;
        samples.push(t.elapsed());
        ensure!(
            state["args"] == args,
            "init args lost across a restart: {state}"
        );
    }
    let restarts = host.child("crasher").map_or(0, |c| c.restarts);
    ensure!(restarts == n as u64, "{restarts} restarts for {n} crashes");
    samples.sort();
    Ok((percentile(&samples, 0.5), percentile(&samples, 0.99)))
}

async fn native_crash_cycles(native: &NativeHost, n: usize) -> Result<(f64, f64)> {
    native.spawn("crasher", br#"{"check":4242}"#).await;
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        ensure!(
            native
                .call("crasher", br#""crash""#.to_vec())
                .await
                .is_err(),
            "native crash answered"
        );
        native
            .call("crasher", br#""state""#.to_vec())
            .await
            .map_err(anyhow::Error::msg)?;
        samples.push(t.elapsed());
    }
    samples.sort();
    Ok((percentile(&samples, 0.5), percentile(&samples, 0.99)))
}

/// The spin loop in wasm and natively, best of 3 each: (wasm ms, native ms).
async fn cpu(host: &Host, n: u64) -> Result<(f64, f64)> {
    host.start_child(ChildSpec::new("cpu", "chaos", &serde_json::Value::Null))
        .await?;
    let msg = format!(r#"{{"spin":{n}}}"#).into_bytes();
    let expected = native::spin(n);
    let mut wasm = f64::MAX;
    let mut native = f64::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        let reply = call(host, "cpu", &msg).await?;
        wasm = wasm.min(t.elapsed().as_secs_f64() * 1e3);
        ensure!(
            reply == expected.to_string().into_bytes(),
            "wrong spin result"
        );
        let t = Instant::now();
        let got = std::hint::black_box(native::spin(std::hint::black_box(n)));
        native = native.min(t.elapsed().as_secs_f64() * 1e3);
        ensure!(got == expected, "wrong native spin result");
    }
    Ok((wasm, native))
}

/// Starts `n` chaos children, then renames a new `chaos.wasm` into the
/// watched folder: ms until the `plugin_reloaded` event, with every child
/// checked on the new version.
async fn reload(host: &Host, dir: &Path, n: usize) -> Result<f64> {
    let plugins = dir.join("plugins");
    for i in 0..n {
        host.start_child(ChildSpec::new(
            format!("r{i}"),
            "chaos",
            &serde_json::json!({"i": i}),
        ))
        .await?;
        call(host, &format!("r{i}"), br#"{"add":7}"#).await?;
    }
    let _watch = host.watch(&plugins)?;
    // The new version: the same code with one more custom section, as a
    // rebuild that changed no function would be. The bytes differ, so it is
    // compiled (mostly from the incremental cache) and rolled out for real.
    let mut bytes = std::fs::read(plugins.join("chaos.wasm"))?;
    append_custom_section(
        &mut bytes,
        "wasmvisor-bench",
        &std::process::id().to_le_bytes(),
    );
    let tmp = plugins.join(".chaos.wasm.new");
    std::fs::write(&tmp, &bytes)?;
    let mut events = host.events();
    let t = Instant::now();
    std::fs::rename(&tmp, plugins.join("chaos.wasm"))?;
    let version = loop {
        match tokio::time::timeout(TIMEOUT, events.recv()).await {
            Ok(Ok(e)) => match &*e {
                Event::PluginReloaded {
                    version,
                    instances,
                    failed,
                    ..
                } if failed.is_empty() => {
                    ensure!(*instances >= n, "only {instances} of {n} children reloaded");
                    break version.clone();
                }
                Event::PluginReloaded { failed, .. } => {
                    bail!("children failed to reload: {failed:?}")
                }
                Event::ReloadFailed { error, .. } => bail!("the reload failed: {error}"),
                _ => {}
            },
            Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {}
            Ok(Err(e)) => bail!("event stream: {e}"),
            Err(_) => bail!("no reload within {TIMEOUT:?}"),
        }
    };
    let ms = t.elapsed().as_secs_f64() * 1e3;
    for i in 0..n {
        let id = format!("r{i}");
        let child = host.child(&id).ok_or_else(|| anyhow!("{id} is gone"))?;
        ensure!(
            child.version.as_deref() == Some(version.as_str()),
            "{id} is not on the new version"
        );
        let state: serde_json::Value =
            serde_json::from_slice(&call(host, &id, br#""state""#).await?)?;
        ensure!(
            state["count"] == 7,
            "{id} lost its state in the reload: {state}"
        );
    }
    Ok(ms)
}

/// A custom section at the end of a component keeps it valid and leaves its
/// code unchanged.
fn append_custom_section(bytes: &mut Vec<u8>, name: &str, payload: &[u8]) {
    fn leb(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let mut content = Vec::new();
    leb(name.len(), &mut content);
    content.extend_from_slice(name.as_bytes());
    content.extend_from_slice(payload);
    bytes.push(0);
    leb(content.len(), bytes);
    bytes.extend_from_slice(&content);
}

struct Density {
    rss: Vec<(usize, f64)>,
    page_tables: Vec<(usize, f64)>,
    max_live: usize,
    limit: String,
}

/// Idle trackers on a host sized for as many as the machine's memory-map
/// limit allows: RSS per instance at each size, and how many ran at once.
async fn density(
    opts: &Options,
    dir: &Path,
    sizes: [usize; 2],
    system: &system::System,
    maps_per_instance: f64,
) -> Result<Density> {
    let (pool, limit) = system.pool_for(sizes[1], maps_per_instance);
    let host = host(opts, &dir.join("density"), pool as u32).await?;
    let rss_before = system::rss_bytes();
    let page_tables_before = system::page_table_bytes();
    let mut rss = Vec::new();
    let mut page_tables = Vec::new();
    let mut live = 0;
    let mut stopped_by = None;
    'outer: for &target in &sizes {
        let target = target.min(pool);
        if target <= live {
            break;
        }
        let tasks: Vec<_> = (0..SPAWNERS)
            .map(|k| {
                let host = host.clone();
                tokio::spawn(async move {
                    let mut started = 0;
                    for i in (live + k..target).step_by(SPAWNERS) {
                        match host.start_child(tracker_spec(format!("d{i}"))).await {
                            Ok(_) => started += 1,
                            Err(e) => return (started, Some(e)),
                        }
                    }
                    (started, None)
                })
            })
            .collect();
        let mut failure = None;
        for t in tasks {
            let (started, e) = t.await?;
            live += started;
            failure = failure.or(e);
        }
        rss.push((live, kib_per(system::rss_bytes(), rss_before, live)));
        page_tables.push((
            live,
            kib_per(system::page_table_bytes(), page_tables_before, live),
        ));
        if let Some(e) = failure {
            stopped_by = Some(e.to_string());
            break 'outer;
        }
    }
    let limit = stopped_by.unwrap_or(limit);
    host.shutdown().await;
    Ok(Density {
        rss,
        page_tables,
        max_live: live,
        limit,
    })
}
