//! The virtual-actor workload: lazy starts into a durable host up to a
//! million children, the memory each one costs while it has no instance,
//! hibernating and waking trackers, and a host coming back with every
//! stored child.

use crate::system;
use anyhow::{Context, Result, ensure};
use std::path::Path;
use std::time::{Duration, Instant};
use wasmvisor::config::{Config, PluginConfig, PoolConfig};
use wasmvisor::types::Activate;
use wasmvisor::{ChildSpec, Host};

/// What the workload measured.
#[derive(Debug, Default)]
pub struct Virtual {
    pub children: usize,
    pub lazy_start_per_s: f64,
    pub hibernated_bytes_per_child: f64,
    pub hibernate_per_s: f64,
    pub wake_p50_us: f64,
    pub wake_p99_us: f64,
    pub restore_s: f64,
}

/// The sizes: lazily started children, trackers hibernated and woken, and
/// wakes timed one at a time.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    pub children: usize,
    pub hibernated: usize,
    pub wakes: usize,
}

pub const FULL: Sizes = Sizes {
    children: 1_000_000,
    hibernated: 10_000,
    wakes: 5_000,
};

pub const QUICK: Sizes = Sizes {
    children: 10_000,
    hibernated: 500,
    wakes: 500,
};

/// Tasks starting children at once: enough for the state database's group
/// commit to gather many starts into one write.
const STARTERS: usize = 256;
const TIMEOUT: Duration = Duration::from_secs(60);

fn config(plugins: &Path, dir: &Path, pool: &PoolConfig, hibernated: usize) -> Config {
    let mut config = Config {
        plugins_dir: plugins.to_path_buf(),
        data_dir: dir.join("data"),
        ..Config::default()
    };
    config.pool = PoolConfig {
        max_instances: hibernated as u32 + 100,
        ..*pool
    };
    // Durable: specs are stored, and a hibernated tracker's state too.
    config.plugins.insert(
        "tracker".into(),
        PluginConfig {
            durable_state: true,
            ..PluginConfig::default()
        },
    );
    config.supervisor.max_children = None;
    config
}

/// The id of the `i`-th child, fixed width so that id order is start order.
fn id(i: usize) -> String {
    format!("v{i:07}")
}

fn lazy_tracker(i: usize) -> ChildSpec {
    crate::shared::tracker_spec(id(i)).activate(Activate::Lazy)
}

/// The average init-args bytes of a child: not counted as the host's cost.
fn args_bytes(n: usize) -> f64 {
    (0..n.min(1_000))
        .map(|i| lazy_tracker(i).args.len())
        .sum::<usize>() as f64
        / n.min(1_000) as f64
}

pub async fn run(plugins: &Path, dir: &Path, pool: &PoolConfig, sizes: Sizes) -> Result<Virtual> {
    let folder = dir.join("plugins");
    std::fs::create_dir_all(&folder)?;
    std::fs::copy(plugins.join("tracker.wasm"), folder.join("tracker.wasm"))
        .context("tracker.wasm is missing; build the example plugins first")?;
    let config = config(&folder, dir, pool, sizes.hibernated);
    let host = Host::new(config.clone()).await?;
    ensure!(host.is_durable(), "the host must store its children here");
    let mut v = Virtual {
        children: sizes.children,
        ..Virtual::default()
    };

    // Lazy starts, each acknowledged once its spec is on disk.
    let rss_before = system::rss_bytes();
    let t = Instant::now();
    let starters: Vec<_> = (0..STARTERS)
        .map(|k| {
            let host = host.clone();
            tokio::spawn(async move {
                for i in (k..sizes.children).step_by(STARTERS) {
                    host.start_child(lazy_tracker(i)).await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for s in starters {
        s.await??;
    }
    v.lazy_start_per_s = sizes.children as f64 / t.elapsed().as_secs_f64();
    let grown = system::rss_bytes().saturating_sub(rss_before) as f64;
    v.hibernated_bytes_per_child = grown / sizes.children as f64 - args_bytes(sizes.children);

    // Activate some (init), then hibernate them all at once: each takes a
    // snapshot and stores it (group commit) before it gives its instance back.
    let sample: Vec<String> = (0..sizes.hibernated)
        .map(|k| id(k * (sizes.children / sizes.hibernated)))
        .collect();
    let event = br#""version""#;
    for id in &sample {
        host.call(id, event.to_vec(), TIMEOUT).await?;
    }
    let t = Instant::now();
    let hibernators: Vec<_> = sample
        .chunks(sample.len().div_ceil(64))
        .map(|ids| {
            let (host, ids) = (host.clone(), ids.to_vec());
            tokio::spawn(async move {
                for id in ids {
                    host.hibernate_child(&id).await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for h in hibernators {
        h.await??;
    }
    v.hibernate_per_s = sample.len() as f64 / t.elapsed().as_secs_f64();

    // Wakes, one at a time: a call to a hibernated tracker until its reply.
    let mut wakes = Vec::with_capacity(sizes.wakes);
    for id in sample.iter().cycle().take(sizes.wakes) {
        if host.child(id).map(|c| c.status) != Some(wasmvisor::Status::Hibernated) {
            host.hibernate_child(id).await?;
        }
        let t = Instant::now();
        host.call(id, event.to_vec(), TIMEOUT).await?;
        wakes.push(t.elapsed());
    }
    wakes.sort();
    v.wake_p50_us = crate::shared::percentile(&wakes, 0.5);
    v.wake_p99_us = crate::shared::percentile(&wakes, 0.99);

    // A host starting with every stored child, until the last one started
    // answers a call.
    host.shutdown().await;
    drop(host);
    let t = Instant::now();
    let host = Host::new(config).await?;
    host.call(&id(sizes.children - 1), event.to_vec(), TIMEOUT)
        .await?;
    v.restore_s = t.elapsed().as_secs_f64();
    ensure!(
        host.count_children() == sizes.children,
        "{} of {} children came back",
        host.count_children(),
        sizes.children
    );
    host.shutdown().await;
    Ok(v)
}
