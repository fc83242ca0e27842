//! The cluster workloads, on a `nats-server -js` of their own on loopback:
//! a call from one node's library API to a child on another node beside a
//! local call to the same child, and the children of a node killed with
//! `kill -9` serving again on the survivors. Without `nats-server` on the
//! PATH they are skipped and say why.

use crate::shared::percentile;
use crate::shared::{calls_1c, progress};
use anyhow::{Context, Result, anyhow, bail, ensure};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use wasmvisor::config::{ClusterConfig, Config, PluginConfig, PoolConfig};
use wasmvisor::{ChildSpec, Host, Restart};

/// What the cluster workloads measured; zero where one did not run.
#[derive(Debug, Default)]
pub struct Figures {
    /// Calls timed per side (remote and local).
    pub calls: usize,
    pub remote: Calls,
    pub local: Calls,
    pub rehome: Option<Rehome>,
}

/// One client calling one child in a loop.
#[derive(Debug, Default, Clone, Copy)]
pub struct Calls {
    pub per_s: f64,
    pub p50_us: f64,
    pub p99_us: f64,
}

/// A node killed with `kill -9`, and its children serving again.
#[derive(Debug, Default, Clone)]
pub struct Rehome {
    /// The killed node's children.
    pub children: usize,
    /// `kill -9` until the last of them answered a call through a
    /// survivor, ms.
    pub ms: f64,
    /// `kill -9` until both survivors saw the node gone, ms.
    pub detected_ms: f64,
    /// How old the node's last heartbeat was when it was killed, ms.
    pub heartbeat_age_ms: u64,
    /// The half of the children that answered first, ms after the kill.
    pub p50_ms: f64,
    /// Children each survivor runs afterwards, by node.
    pub per_survivor: BTreeMap<String, usize>,
    /// How many times both survivors' children were compared.
    pub checks: usize,
}

/// The sizes: calls timed per side, and the killed node's children.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    pub calls: usize,
    pub rehome: usize,
}

pub const FULL: Sizes = Sizes {
    calls: 20_000,
    rehome: 300,
};

pub const QUICK: Sizes = Sizes {
    calls: 1_000,
    rehome: 300,
};

/// Each call's timeout; a call that misses it fails the workload.
const TIMEOUT: Duration = Duration::from_secs(10);
/// How long the killed node's children may take to serve again before the
/// workload gives up and fails.
const REHOME_DEADLINE: Duration = Duration::from_secs(60);
/// The killed node's start: compiling the plugin and starting its children.
const READY_DEADLINE: Duration = Duration::from_secs(120);
/// The cluster's name, different per run so that a leftover server's
/// buckets cannot be mistaken for this run's.
fn cluster_name() -> String {
    format!("bench{}", std::process::id())
}

/// Why the cluster workloads cannot run here, if they cannot.
pub fn unavailable() -> Option<String> {
    match std::process::Command::new("nats-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(_) => None,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(
            "nats-server is not on the PATH (apt-get install nats-server measures the cluster)"
                .into(),
        ),
        Err(e) => Some(format!("nats-server cannot run: {e}")),
    }
}

/// What the cluster workloads run with.
pub struct Wanted {
    /// The folder with `chaos.wasm`.
    pub plugins: std::path::PathBuf,
    /// The hosts' pool settings.
    pub pool: PoolConfig,
    /// Run the `cluster` workload (calls).
    pub calls: bool,
    /// Run the `rehome` workload.
    pub rehome: bool,
}

/// Runs the cluster workloads `opts` asks for, in `dir`.
pub async fn run(opts: &Wanted, dir: &Path, sizes: Sizes) -> Result<Figures> {
    std::fs::create_dir_all(dir)?;
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins)?;
    let from = opts.plugins.join("chaos.wasm");
    std::fs::copy(&from, plugins.join("chaos.wasm")).with_context(|| {
        format!(
            "{} is missing; build the example plugins first: (cd plugins && cargo build --release --target wasm32-wasip2)",
            from.display()
        )
    })?;
    let nats = Nats::start(&dir.join("nats")).await?;
    let result = async {
        let mut figures = Figures::default();
        if opts.calls {
            progress("cluster calls (2 nodes, NATS on loopback)");
            (figures.remote, figures.local) =
                calls(&nats.url, &plugins, &opts.pool, sizes.calls).await?;
            figures.calls = sizes.calls;
        }
        if opts.rehome {
            progress("re-homing after kill -9");
            figures.rehome =
                Some(rehome(&nats.url, &plugins, dir, &opts.pool, sizes.rehome).await?);
        }
        Ok(figures)
    }
    .await;
    nats.stop().await;
    result
}

/// A `nats-server -js` on a free loopback port with a store in a folder of
/// its own; killed when dropped.
struct Nats {
    url: String,
    process: tokio::process::Child,
}

impl Nats {
    async fn start(store: &Path) -> Result<Nats> {
        std::fs::create_dir_all(store)?;
        // The port is free now; the server binds it a moment later.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context("no free loopback port for nats-server")?
            .port();
        let mut process = tokio::process::Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(store)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start nats-server")?;
        let addr = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if tokio::net::TcpStream::connect(&addr).await.is_ok() {
                break;
            }
            if let Some(status) = process.try_wait()? {
                let mut log = String::new();
                if let Some(mut err) = process.stderr.take() {
                    let _ = err.read_to_string(&mut log).await;
                }
                bail!("nats-server exited ({status}) before it listened on {addr}:\n{log}");
            }
            ensure!(
                Instant::now() < deadline,
                "nats-server did not listen on {addr} within 20 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Nats {
            url: format!("nats://{addr}"),
            process,
        })
    }

    async fn stop(mut self) {
        let _ = self.process.kill().await;
    }
}

fn config(plugins: &Path, nats: &str, node: &str, pool: &PoolConfig, children: usize) -> Config {
    let mut config = Config {
        plugins_dir: plugins.to_path_buf(),
        ephemeral: true,
        // The cluster's defaults (heartbeat_ms, node_timeout_ms): the
        // re-homing figure is the one a default cluster gives.
        cluster: Some(ClusterConfig {
            nats: nats.to_string(),
            node: Some(node.to_string()),
            name: cluster_name(),
            ..ClusterConfig::default()
        }),
        ..Config::default()
    };
    config.pool = PoolConfig {
        max_instances: children as u32 + 100,
        ..*pool
    };
    config.plugins.insert(
        "chaos".into(),
        PluginConfig {
            cpu_ms: 60_000,
            ..PluginConfig::default()
        },
    );
    config
}

async fn node(
    plugins: &Path,
    nats: &str,
    name: &str,
    pool: &PoolConfig,
    children: usize,
) -> Result<Host> {
    let host = Host::new(config(plugins, nats, name, pool, children))
        .await
        .with_context(|| format!("node {name} cannot join the cluster at {nats}"))?;
    ensure!(
        host.plugins().iter().all(|p| p.version.is_some()),
        "a plugin failed to load on node {name}: {:?}",
        host.plugins()
    );
    Ok(host)
}

/// Two nodes in this process; a child on node b, called `n` times in a row
/// from node a's library API (over NATS), then `n` times from b's own:
/// (remote, local).
async fn calls(nats: &str, plugins: &Path, pool: &PoolConfig, n: usize) -> Result<(Calls, Calls)> {
    let a = node(plugins, nats, "a", pool, 10).await?;
    let b = node(plugins, nats, "b", pool, 10).await?;
    b.start_child(ChildSpec::new("r0", "chaos", &serde_json::Value::Null))
        .await?;
    ensure!(a.child("r0").is_none(), "node a runs r0 itself");
    let owner = a.child_anywhere("r0").await?;
    ensure!(owner["node"] == "b", "node a sees r0 on {}", owner["node"]);
    let add = br#"{"add":1}"#;
    let remote = calls_1c(n, || a.call("r0", add.to_vec(), TIMEOUT)).await?;
    let local = calls_1c(n, || b.call("r0", add.to_vec(), TIMEOUT)).await?;
    // Every call reached the one child: the warm-up tenth and the timed
    // calls of both sides.
    let state: serde_json::Value =
        serde_json::from_slice(&a.call("r0", br#""state""#.to_vec(), TIMEOUT).await?)?;
    let expected = 2 * (n + n / 10);
    ensure!(
        state["count"] == expected,
        "r0 counted {} calls, not {expected}",
        state["count"]
    );
    a.shutdown().await;
    b.shutdown().await;
    let figures = |(per_s, p50_us, p99_us)| Calls {
        per_s,
        p50_us,
        p99_us,
    };
    Ok((figures(remote), figures(local)))
}

const VICTIM: &str = "v";
const SURVIVORS: [&str; 2] = ["s1", "s2"];

fn rehome_id(i: usize) -> String {
    format!("h{i:03}")
}

/// Two survivor nodes in this process and a third in a child process that
/// starts `n` permanent children and is then killed with SIGKILL: the time
/// until every one of its children answers a call through a survivor
/// again, watching that no id runs on both survivors at once.
async fn rehome(
    nats: &str,
    plugins: &Path,
    dir: &Path,
    pool: &PoolConfig,
    n: usize,
) -> Result<Rehome> {
    let survivors = [
        node(plugins, nats, SURVIVORS[0], pool, n).await?,
        node(plugins, nats, SURVIVORS[1], pool, n).await?,
    ];
    let log = dir.join("victim.log");
    let mut victim = spawn_victim(nats, plugins, &log, n).await?;
    let result = measure_rehome(&survivors, &mut victim, &log, n).await;
    // Whatever happened, the victim is gone and the survivors stop.
    let _ = victim.kill().await;
    for s in &survivors {
        s.shutdown().await;
    }
    result
}

/// The node to be killed: this binary in its hidden `--serve-node` mode,
/// once it printed `ready`.
async fn spawn_victim(
    nats: &str,
    plugins: &Path,
    log: &Path,
    n: usize,
) -> Result<tokio::process::Child> {
    let exe = std::env::current_exe().context("cannot find this benchmark's binary")?;
    let stderr = std::fs::File::create(log)?;
    let mut child = tokio::process::Command::new(exe)
        .arg("--serve-node")
        .arg(VICTIM)
        .arg("--nats")
        .arg(nats)
        .arg("--cluster-name")
        .arg(cluster_name())
        .arg("--children")
        .arg(n.to_string())
        .arg("--plugins")
        .arg(plugins)
        // Its stdin closing (this process gone) ends it.
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .context("cannot start the node to be killed")?;
    let stdout = child
        .stdout
        .take()
        .context("the node's stdout is not piped")?;
    let mut lines = BufReader::new(stdout).lines();
    let ready = tokio::time::timeout(READY_DEADLINE, lines.next_line()).await;
    match ready {
        Ok(Ok(Some(line))) if line == "ready" => Ok(child),
        Ok(answer) => {
            let _ = child.kill().await;
            bail!(
                "the node to be killed did not start ({answer:?}); its log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            )
        }
        Err(_) => {
            let _ = child.kill().await;
            bail!(
                "the node to be killed was not ready within {READY_DEADLINE:?}; its log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            )
        }
    }
}

async fn measure_rehome(
    survivors: &[Host; 2],
    victim: &mut tokio::process::Child,
    log: &Path,
    n: usize,
) -> Result<Rehome> {
    // Both survivors see the victim alive and its children on it.
    wait_until("the survivors to see the node to be killed", || {
        survivors.iter().all(|s| alive(s, VICTIM) == Some(true))
    })
    .await?;
    for s in survivors {
        let listed = s.children_anywhere(None, n + 100).await;
        let on_victim = listed.iter().filter(|c| c["node"] == VICTIM).count();
        ensure!(
            listed.len() == n && on_victim == n,
            "node {} lists {} children, {on_victim} on the node to be killed, not {n}",
            s.nodes()
                .and_then(|ns| ns.into_iter().find(|n| n.this_node))
                .map_or_else(String::new, |n| n.info.node),
            listed.len()
        );
    }
    let ids: Vec<String> = (0..n).map(rehome_id).collect();
    let mut checks = 0;
    let mut on_two_nodes = BTreeSet::new();
    check_one_node(survivors, &mut checks, &mut on_two_nodes);

    // Where in its heartbeat period the node dies: the survivors see it
    // gone node_timeout_ms after its last heartbeat, not after the kill.
    let heartbeat_age_ms = survivors
        .iter()
        .filter_map(|s| s.nodes()?.into_iter().find(|n| n.info.node == VICTIM))
        .map(|n| n.heartbeat_age_ms)
        .max()
        .unwrap_or(0);
    let killed = Instant::now();
    // SIGKILL (and reaped): the node gets no chance to give anything back.
    victim
        .kill()
        .await
        .context("cannot kill the node with SIGKILL")?;
    wait_until("the survivors to see the killed node gone", || {
        survivors.iter().all(|s| alive(s, VICTIM) != Some(true))
    })
    .await?;
    let detected = killed.elapsed();

    // Rounds: each child a survivor runs and has not answered yet is
    // called once, half through one survivor and half through the other
    // (a call to a child the other one runs goes over NATS). A child no
    // survivor runs is not called: only the dead node could answer it.
    let mut answered: Vec<Option<Duration>> = vec![None; n];
    let expected: Vec<Vec<u8>> = (0..n)
        .map(|i| serde_json::to_vec(&serde_json::json!({"i": i})))
        .collect::<Result<_, _>>()?;
    loop {
        let running = check_one_node(survivors, &mut checks, &mut on_two_nodes);
        let mut round = tokio::task::JoinSet::new();
        for (i, id) in ids.iter().enumerate() {
            if answered[i].is_some() || !running.contains(id) {
                continue;
            }
            let through = survivors[i % 2].clone();
            let id = id.clone();
            round.spawn(async move {
                let reply = through
                    .call(&id, br#""state""#.to_vec(), Duration::from_secs(2))
                    .await;
                (i, reply, killed.elapsed())
            });
        }
        while let Some(done) = round.join_next().await {
            let (i, reply, at) = done?;
            if let Ok(reply) = reply {
                let state: serde_json::Value = serde_json::from_slice(&reply)?;
                let args = serde_json::to_vec(&state["args"])?;
                ensure!(
                    args == expected[i],
                    "{} serves again with other args: {state}",
                    ids[i]
                );
                answered[i] = Some(at);
            }
        }
        let served = answered.iter().filter(|a| a.is_some()).count();
        if served == n {
            break;
        }
        if killed.elapsed() > REHOME_DEADLINE {
            bail!(
                "{} s after kill -9, {served} of the killed node's {n} children serve again \
                 (the survivors saw it gone after {:.1} s); its log:\n{}",
                REHOME_DEADLINE.as_secs(),
                detected.as_secs_f64(),
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut times: Vec<Duration> = answered.into_iter().flatten().collect();
    times.sort();
    let last = times.last().copied().unwrap_or_default();

    // Afterwards, the cluster lists each id once, on a survivor, as both
    // survivors see it.
    check_one_node(survivors, &mut checks, &mut on_two_nodes);
    let mut per_survivor = BTreeMap::new();
    for s in survivors {
        let listed = s.children_anywhere(None, n + 100).await;
        let unique: BTreeSet<&str> = listed.iter().filter_map(|c| c["id"].as_str()).collect();
        ensure!(
            listed.len() == n && unique.len() == n,
            "after the re-homing, {} ids listed, {} distinct, for {n} children",
            listed.len(),
            unique.len()
        );
        per_survivor.clear();
        for c in &listed {
            let node = c["node"].as_str().unwrap_or("?").to_string();
            ensure!(
                SURVIVORS.contains(&node.as_str()),
                "{} is listed on node {node} after the re-homing",
                c["id"]
            );
            *per_survivor.entry(node).or_insert(0) += 1;
        }
    }
    ensure!(
        on_two_nodes.is_empty(),
        "ids ran on both survivors at once: {on_two_nodes:?}"
    );
    Ok(Rehome {
        children: n,
        ms: last.as_secs_f64() * 1e3,
        detected_ms: detected.as_secs_f64() * 1e3,
        heartbeat_age_ms,
        p50_ms: percentile(&times, 0.5) / 1e3,
        per_survivor,
        checks,
    })
}

/// Whether `host` sees node `name` alive; `None` when it does not list it.
fn alive(host: &Host, name: &str) -> Option<bool> {
    host.nodes()?
        .into_iter()
        .find(|n| n.info.node == name)
        .map(|n| n.alive)
}

/// The ids the survivors run now; those both run are added to
/// `on_two_nodes`.
fn check_one_node(
    survivors: &[Host; 2],
    checks: &mut usize,
    on_two_nodes: &mut BTreeSet<String>,
) -> BTreeSet<String> {
    let first: BTreeSet<String> = survivors[0].children().into_iter().map(|c| c.id).collect();
    let second: BTreeSet<String> = survivors[1].children().into_iter().map(|c| c.id).collect();
    *checks += 1;
    on_two_nodes.extend(first.intersection(&second).cloned());
    first.into_iter().chain(second).collect()
}

/// Polls `done` every 10 ms for at most 30 s.
async fn wait_until(what: &str, mut done: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        if Instant::now() > deadline {
            return Err(anyhow!("gave up waiting for {what} after 30 s"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// The hidden `--serve-node` mode: one node of the cluster at `nats`, with
/// `children` permanent chaos children `h000`, `h001`, ... (args
/// `{"i": i}`) that it starts itself. Prints `ready` once they all run,
/// then serves until its stdin closes; the benchmark kills it with
/// SIGKILL before that.
pub async fn serve_node(
    plugins: &Path,
    nats: &str,
    cluster: &str,
    name: &str,
    children: usize,
) -> Result<()> {
    let mut config = config(plugins, nats, name, &PoolConfig::default(), children);
    if let Some(c) = &mut config.cluster {
        c.name = cluster.to_string();
    }
    let host = Host::new(config)
        .await
        .with_context(|| format!("node {name} cannot join the cluster at {nats}"))?;
    // A few at a time: each start claims its id in NATS first.
    let starters: Vec<_> = (0..8)
        .map(|k| {
            let host = host.clone();
            tokio::spawn(async move {
                for i in (k..children).step_by(8) {
                    let spec = ChildSpec::new(rehome_id(i), "chaos", &serde_json::json!({"i": i}))
                        .restart(Restart::Permanent);
                    host.start_child(spec)
                        .await
                        .with_context(|| format!("cannot start {}", rehome_id(i)))?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for s in starters {
        s.await??;
    }
    println!("ready");
    // Until the benchmark is gone: an orphaned node would hold its claims.
    let mut sink = Vec::new();
    let _ = tokio::io::stdin().read_to_end(&mut sink).await;
    std::process::exit(0)
}
