//! `wasmvisor run`: the host process.

use super::RunArgs;
use crate::config::Config;
use crate::host::Host;
use anyhow::{Context, Result};
use std::io::Write;
use std::path::Path;

/// The config file used when `--config` is not given, if it exists.
const DEFAULT_CONFIG: &str = "wasmvisor.toml";

/// The configuration `run` uses: the file, then the flags on top.
pub fn effective_config(args: &RunArgs) -> Result<Config> {
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None if Path::new(DEFAULT_CONFIG).is_file() => Config::load(Path::new(DEFAULT_CONFIG))?,
        None => Config::default(),
    };
    if let Some(dir) = &args.plugins {
        config.plugins_dir = dir.clone();
    }
    if let Some(listen) = &args.listen {
        config.listen = listen.clone();
    }
    if let Some(data) = &args.data {
        config.data_dir = data.clone();
    }
    config.ephemeral |= args.ephemeral;
    if let Some(nats) = &args.cluster {
        let cluster = config.cluster.get_or_insert_with(Default::default);
        cluster.nats = nats.clone();
    }
    if let Some(node) = &args.node {
        crate::config::validate_cluster_name("--node", node)?;
        if let Some(cluster) = config.cluster.as_mut() {
            cluster.node = Some(node.clone());
        }
    }
    if let Some(cluster) = &config.cluster {
        anyhow::ensure!(
            !cluster.nats.is_empty(),
            "[cluster] needs nats = \"nats://HOST:PORT\" (or --cluster)"
        );
    }
    Ok(config)
}

pub(super) async fn run(args: RunArgs, token: Option<String>) -> Result<()> {
    let mut config = effective_config(&args)?;
    let listen = config.listen.clone();
    // Bound first: a cluster node is named after its port by default.
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    if let Some(cluster) = config.cluster.as_mut() {
        cluster.api = Some(addr.to_string());
        if cluster.node.is_none() {
            cluster.node = Some(format!("{}-{}", hostname(), addr.port()));
        }
    }
    let plugins_dir = config.plugins_dir.clone();
    if !plugins_dir.exists() {
        std::fs::create_dir_all(&plugins_dir).with_context(|| {
            format!("cannot create the plugins folder {}", plugins_dir.display())
        })?;
        tracing::info!(
            "created the plugins folder {}; drop NAME.wasm files into it",
            plugins_dir.display()
        );
    }
    let bar = super::progress::StartBar::default();
    let host = Host::start(config, &|p| bar.update(p)).await;
    bar.finish();
    let host = host?;
    let _watch = match host.watch(&plugins_dir) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!("hot reload is off: {e:#}");
            None
        }
    };
    if token.is_none() && !addr.ip().is_loopback() {
        tracing::warn!(
            "the API listens on {addr} without a token; anyone who can reach it controls the host"
        );
    }
    let app = crate::api::router(host.clone(), token);
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "wasmvisor listening on http://{addr}")?;
        out.flush()?;
    }
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("the API server failed")?;
    tracing::info!("stopping every child");
    host.shutdown().await;
    Ok(())
}

/// The machine's name as a node name takes it (letters, digits, _ and -).
fn hostname() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let name: String = name
        .trim()
        .chars()
        .map(
            |c| match c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                true => c,
                false => '-',
            },
        )
        .take(50)
        .collect();
    match name.is_empty() {
        true => "node".into(),
        false => name,
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}
