//! The `languages` workload: the `chaos` plugin in Rust, Python and
//! JavaScript side by side (`plugins/python`, `plugins/js`), through the
//! same host: compile time cold and from the compile cache, spawn time,
//! resident memory per instance, and calls from one client.

use crate::shared::percentile;
use crate::system;
use anyhow::{Context, Result, ensure};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use wasmvisor::config::Config;
use wasmvisor::{ChildSpec, Host};

/// One plugin's figures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Figures {
    /// The plugin (`chaos`, `chaos_py`, `chaos_js`).
    pub plugin: String,
    /// The `.wasm` size, KiB.
    pub size_kib: f64,
    /// `pool` or `on_demand`.
    pub allocation: String,
    /// A host start with an empty compile cache: compiling it, ms.
    pub compile_cold_ms: f64,
    /// A host start with it in the compile cache: loading it, ms.
    pub compile_cached_ms: f64,
    /// µs per child started (start_child until init returned), one at a
    /// time, in an ephemeral host, median.
    pub spawn_p50_us: f64,
    /// µs per child started, 99th percentile.
    pub spawn_p99_us: f64,
    /// Resident memory per started child (after one call each), KiB.
    pub rss_per_instance_kib: f64,
    /// Calls per second from one client (`{"add": 1}`).
    pub call_per_s: f64,
    /// Median call, µs.
    pub call_p50_us: f64,
}

/// The sizes: children spawned and calls made per plugin.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    pub children: usize,
    pub calls: usize,
}

pub const FULL: Sizes = Sizes {
    children: 200,
    calls: 20_000,
};

pub const QUICK: Sizes = Sizes {
    children: 10,
    calls: 500,
};

/// Where the tests' build script puts the Python and JS example plugins.
pub fn default_folder() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/target/languages")
}

/// The plugins to measure: the Rust `chaos` from `rust_plugins` and the
/// Python and JS ones from `languages`, with a message naming how to build
/// any that is missing.
pub fn plugins(rust_plugins: &Path, languages: &Path) -> Result<Vec<(String, PathBuf)>> {
    let all = [
        (
            "chaos",
            rust_plugins.join("chaos.wasm"),
            "(cd plugins && cargo build --release --target wasm32-wasip2)",
        ),
        (
            "chaos_py",
            languages.join("chaos_py.wasm"),
            "plugins/python/build.sh plugins/target/languages/chaos_py.wasm",
        ),
        (
            "chaos_js",
            languages.join("chaos_js.wasm"),
            "plugins/js/build.sh plugins/target/languages/chaos_js.wasm",
        ),
    ];
    all.into_iter()
        .map(|(name, path, build)| {
            ensure!(
                path.is_file(),
                "{} is missing; build it: {build}",
                path.display()
            );
            Ok((name.to_string(), path))
        })
        .collect()
}

/// Measures each plugin in hosts of its own under `dir`.
pub async fn run(plugins: &[(String, PathBuf)], dir: &Path, sizes: Sizes) -> Result<Vec<Figures>> {
    let mut all = Vec::new();
    for (name, path) in plugins {
        all.push(
            measure(name, path, &dir.join(name), sizes)
                .await
                .with_context(|| format!("the languages workload on {name}"))?,
        );
    }
    Ok(all)
}

/// A host on `dir` with plugin `name` from `wasm`: ephemeral (no compile
/// cache, no state database, so a start is not a write to disk), or with
/// its compile cache in `dir/cache`.
async fn host(name: &str, wasm: &Path, dir: &Path, ephemeral: bool) -> Result<Host> {
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins)?;
    std::fs::copy(wasm, plugins.join(format!("{name}.wasm")))
        .with_context(|| format!("cannot copy {}", wasm.display()))?;
    let mut config = Config {
        plugins_dir: plugins,
        data_dir: dir.join("data"),
        ephemeral,
        ..Config::default()
    };
    config.cache.dir = Some(dir.join("cache"));
    config.pool.max_instances = 1_000;
    let host = Host::new(config).await?;
    Ok(host)
}

fn info(host: &Host, name: &str) -> Result<wasmvisor::PluginInfo> {
    host.plugins()
        .into_iter()
        .find(|p| p.name == name)
        .filter(|p| p.version.is_some())
        .with_context(|| format!("{name} did not load: {:?}", host.plugins()))
}

/// The compile time with an empty cache and from the cache: a host that
/// compiles and stores the artifact, then one that loads it.
async fn compile_times(name: &str, wasm: &Path, dir: &Path) -> Result<(f64, f64)> {
    let first = host(name, wasm, dir, false).await?;
    let cold = info(&first, name)?;
    ensure!(cold.cached == Some(false), "the cache was not empty");
    first.shutdown().await;
    drop(first);
    // The artifact is written off the serving path; wait until it is there.
    let cache = dir.join("cache");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_dir(&cache)?
        .flatten()
        .any(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
    {
        ensure!(
            Instant::now() < deadline,
            "the compiled artifact was never stored"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let second = host(name, wasm, dir, false).await?;
    let cached = info(&second, name)?;
    ensure!(cached.cached == Some(true), "{name} was compiled again");
    second.shutdown().await;
    Ok((
        cold.compile_ms.unwrap_or(0.0),
        cached.compile_ms.unwrap_or(0.0),
    ))
}

async fn measure(name: &str, wasm: &Path, dir: &Path, sizes: Sizes) -> Result<Figures> {
    let _ = std::fs::remove_dir_all(dir);
    let (compile_cold_ms, compile_cached_ms) = compile_times(name, wasm, dir).await?;
    let host = host(name, wasm, &dir.join("ephemeral"), true).await?;
    let allocation = info(&host, name)?.allocation.unwrap_or("-").to_string();

    let add = br#"{"add":1}"#.to_vec();
    let mut spawns = Vec::with_capacity(sizes.children);
    // One child first, so the RSS below counts children, not the first
    // use of the compiled code.
    host.start_child(ChildSpec::new("warm", name, &serde_json::Value::Null))
        .await?;
    host.call("warm", add.clone(), Duration::from_secs(30))
        .await?;
    let rss_before = system::rss_bytes();
    for i in 0..sizes.children {
        let id = format!("s{i}");
        let started = Instant::now();
        host.start_child(ChildSpec::new(id.clone(), name, &serde_json::Value::Null))
            .await?;
        spawns.push(started.elapsed());
        host.call(&id, add.clone(), Duration::from_secs(30)).await?;
    }
    let rss_per_instance_kib =
        system::rss_bytes().saturating_sub(rss_before) as f64 / 1024.0 / sizes.children as f64;
    spawns.sort();

    let mut calls = Vec::with_capacity(sizes.calls);
    let began = Instant::now();
    for _ in 0..sizes.calls {
        let started = Instant::now();
        host.call("warm", add.clone(), Duration::from_secs(30))
            .await?;
        calls.push(started.elapsed());
    }
    let call_per_s = sizes.calls as f64 / began.elapsed().as_secs_f64();
    calls.sort();
    host.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
    Ok(Figures {
        plugin: name.to_string(),
        size_kib: std::fs::metadata(wasm)?.len() as f64 / 1024.0,
        allocation,
        compile_cold_ms,
        compile_cached_ms,
        spawn_p50_us: percentile(&spawns, 0.5),
        spawn_p99_us: percentile(&spawns, 0.99),
        rss_per_instance_kib,
        call_per_s,
        call_p50_us: percentile(&calls, 0.5),
    })
}
