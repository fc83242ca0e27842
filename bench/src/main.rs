//! `wasmvisor-bench`: the workloads of ARCHITECTURE.md "Benchmark", run
//! through the same path a user's calls take (`Host` → registry → mailbox →
//! the child's task → wasm), each beside a plain tokio actor baseline and,
//! when Erlang is installed, a BEAM GenServer measured in the same run.

mod ab;
mod actors;
mod beam;
mod cluster;
mod languages;
mod native;
mod report;
mod shared;
mod system;
mod workloads;

use anyhow::Result;
use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;

/// Measure wasmvisor against a native tokio baseline and a BEAM GenServer.
#[derive(Parser, Debug)]
#[command(name = "wasmvisor-bench", version, about)]
struct Cli {
    /// A folder with chaos.wasm and tracker.wasm [default: the example
    /// plugins built in this checkout].
    #[arg(long)]
    plugins: Option<PathBuf>,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// Small sizes (seconds, for CI); the comparisons are for the full run.
    #[arg(long)]
    quick: bool,
    /// Only these workloads (spawn, calls, calls4, casts, crash, cpu,
    /// reload, density, virtual, languages, cluster, rehome), e.g. to
    /// profile one. cluster and rehome need nats-server on the PATH.
    #[arg(long, value_delimiter = ',', value_parser = clap::builder::PossibleValuesParser::new(workloads::WORKLOADS))]
    only: Vec<String>,
    /// Skip the BEAM reference even when `escript` is installed.
    #[arg(long)]
    no_beam: bool,
    /// Measure a `[pool]` setting against the defaults in the same run
    /// (repeatable): keep_resident_kib=N, stack_kib=N. Runs spawn, calls,
    /// calls4, casts, crash and cpu unless --only says otherwise.
    #[arg(long, value_parser = parse_ab)]
    ab: Vec<ab::Setting>,
    /// Rounds per side of an --ab run [default: 3, 1 with --quick].
    #[arg(long)]
    rounds: Option<usize>,
    /// Internal (the rehome workload): run as cluster node NODE, start the
    /// children, print `ready`, serve until stdin closes.
    #[arg(long, hide = true, value_name = "NODE", requires_all = ["nats", "cluster_name"])]
    serve_node: Option<String>,
    /// Internal: the NATS URL of --serve-node.
    #[arg(long, hide = true)]
    nats: Option<String>,
    /// Internal: the cluster name of --serve-node.
    #[arg(long, hide = true)]
    cluster_name: Option<String>,
    /// Internal: the children --serve-node starts.
    #[arg(long, hide = true, default_value_t = 300)]
    children: usize,
}

fn parse_ab(text: &str) -> Result<ab::Setting, String> {
    ab::Setting::parse(text).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    // A guest trap is an expected event here, as in the `wasmvisor` binary.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        // SAFETY: no other thread exists yet.
        unsafe { std::env::set_var("RUST_LIB_BACKTRACE", "0") };
    }
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // On a runtime worker, like every task of a real host: the thread that
    // `block_on` parks is not one.
    match runtime.block_on(async { tokio::spawn(run(cli)).await }) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: the benchmark panicked: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    if let Some(node) = &cli.serve_node {
        let plugins = cli.plugins.unwrap_or_else(workloads::default_plugins);
        let nats = cli.nats.unwrap_or_default();
        let cluster = cli.cluster_name.unwrap_or_default();
        return cluster::serve_node(&plugins, &nats, &cluster, node, cli.children).await;
    }
    let options = workloads::Options {
        plugins: cli.plugins.unwrap_or_else(workloads::default_plugins),
        quick: cli.quick,
        only: cli.only,
        ..workloads::Options::default()
    };
    if !cli.ab.is_empty() {
        let rounds = cli.rounds.unwrap_or(if cli.quick { 1 } else { 3 }).max(1);
        let report = ab::run(options, &cli.ab, rounds).await?;
        if cli.json {
            println!("{}", serde_json::to_string(&report)?);
        } else {
            print!("{}", report.table());
        }
        return Ok(());
    }
    let mut report = workloads::run(options.clone()).await?;
    if !cli.no_beam {
        report.beam = beam::run(options.quick, &options.only).await;
    }
    if cli.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(())
}
