//! The `wasmvisor` command line: `run` starts a host; the other commands are
//! clients of a running host's HTTP API.

pub mod client;
mod commands;
mod dev;
mod logging;
mod progress;
mod run;
pub mod scaffold;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Supervise WebAssembly plugins the way Erlang/OTP supervises processes.
#[derive(Parser, Debug)]
#[command(name = "wasmvisor", version, about)]
pub struct Cli {
    /// The host to talk to (client commands).
    #[arg(
        long,
        global = true,
        env = "WASMVISOR_ADDR",
        default_value = "127.0.0.1:7070"
    )]
    pub addr: String,
    /// The API token: `run` requires it from clients, client commands send it.
    #[arg(long, global = true, env = "WASMVISOR_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// How log lines are written to stderr: text, or json (one object per
    /// line, with the span fields).
    #[arg(
        long,
        global = true,
        value_enum,
        env = "WASMVISOR_LOG_FORMAT",
        default_value = "text"
    )]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// How log lines are written.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// For a person at a terminal.
    Text,
    /// One JSON object per line, for a log collector.
    Json,
}

/// The commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the host: load the plugins folder and serve the HTTP API.
    Run(RunArgs),
    /// Create a plugin NAME/ in the current folder that answers "ping" with
    /// "pong", ready to build: a Rust crate for wasm32-wasip2, or a Python or
    /// JavaScript project with the WIT package and a pinned toolchain.
    New {
        /// The plugin name (letters, digits and _): the build makes NAME.wasm.
        name: String,
        /// The plugin's language.
        #[arg(long, value_enum, default_value = "rust")]
        lang: scaffold::Lang,
        /// The guest-sdk folder a Rust plugin depends on [default: the
        /// checkout's, when run inside one].
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// Build a Rust plugin crate on every change of its sources and place
    /// each new .wasm into a plugins folder, where the host hot-reloads it;
    /// a failed build keeps the running version. Without --plugins it runs
    /// a host of its own on PATH/.wasmvisor-dev/plugins.
    Dev {
        /// The plugin crate [default: the current folder].
        #[arg(default_value = ".")]
        path: PathBuf,
        /// The plugins folder of a running host to place builds into.
        #[arg(long)]
        plugins: Option<PathBuf>,
        /// Where the host dev starts listens [default: 127.0.0.1:7070].
        #[arg(long, conflicts_with = "plugins")]
        listen: Option<String>,
    },
    /// Print a completion script for a shell, e.g. `wasmvisor completions
    /// bash > /etc/bash_completion.d/wasmvisor`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the WIT package plugins are built against (wasmvisor:plugin),
    /// or write it as DIR/plugin.wit, to generate bindings in any language.
    Wit {
        /// The folder to write plugin.wit into (created if missing).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// List the children.
    Ps {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print the supervision tree: groups with their strategy and restart
    /// intensity, members in start order, and the dynamic children.
    Tree {
        /// Print JSON instead of the indented tree.
        #[arg(long)]
        json: bool,
    },
    /// List the cluster's nodes (a host started with --cluster).
    Nodes {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Drain a cluster node before a planned shutdown: it starts nothing
    /// more, and its dynamic children move to the other nodes.
    Drain {
        /// The node's name (as `wasmvisor nodes` lists it).
        node: String,
    },
    /// List the plugins.
    Plugins {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Start a child.
    Start {
        /// The child id.
        id: String,
        /// The plugin.
        plugin: String,
        /// Init args (JSON).
        #[arg(long, default_value = "null")]
        args: String,
        /// permanent, transient or temporary.
        #[arg(long, default_value = "permanent")]
        restart: String,
        /// Register it without an instance; `init` runs at its first message.
        #[arg(long)]
        lazy: bool,
        /// In a cluster: local (the node asked) or least_loaded (the live
        /// node that runs the fewest children).
        #[arg(long, default_value = "local")]
        placement: String,
    },
    /// Stop a child (terminate with shutdown) and remove it.
    Stop {
        /// The child id.
        id: String,
    },
    /// Restart a child with its init args; revives backoff or failed.
    Restart {
        /// The child id.
        id: String,
    },
    /// Kill a child now (exit reason killed); restarted per its policy.
    Kill {
        /// The child id.
        id: String,
    },
    /// Hibernate a child now: keep its state, give its instance back; the
    /// next message wakes it.
    Hibernate {
        /// The child id.
        id: String,
    },
    /// Call a child and print its reply.
    Call {
        /// The child id.
        id: String,
        /// The message (JSON).
        msg: String,
        /// How long to wait, ms.
        #[arg(long, default_value_t = crate::api::DEFAULT_TIMEOUT_MS)]
        timeout: u64,
    },
    /// Cast to a child.
    Cast {
        /// The child id.
        id: String,
        /// The message (JSON).
        msg: String,
    },
    /// Stream the host's events (one JSON line each) until interrupted.
    Events {
        /// Only events of this topic.
        #[arg(long)]
        topic: Option<String>,
        /// Also child_hibernated and child_woken, which are left out by default.
        #[arg(long)]
        hibernation: bool,
    },
}

/// `wasmvisor run`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct RunArgs {
    /// The plugins folder [default: ./plugins, or plugins_dir in the config].
    #[arg(long)]
    pub plugins: Option<PathBuf>,
    /// The config file [default: ./wasmvisor.toml if it exists].
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Where the API listens [default: 127.0.0.1:7070]; port 0 picks one.
    #[arg(long)]
    pub listen: Option<String>,
    /// The data folder [default: .wasmvisor].
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Keep no state on disk.
    #[arg(long)]
    pub ephemeral: bool,
    /// Join a cluster through this NATS server (nats://HOST:PORT); the
    /// config's [cluster] section holds the other settings.
    #[arg(long, value_name = "NATS_URL")]
    pub cluster: Option<String>,
    /// This node's name in the cluster [default: HOSTNAME-PORT].
    #[arg(long, requires = "cluster")]
    pub node: Option<String>,
}

/// The binary's entry point.
pub fn main() -> ExitCode {
    // A guest trap is an expected event here; capturing a native backtrace
    // for each one would cost more than the restart (see the tuning notes).
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        // SAFETY: no other thread exists yet.
        unsafe { std::env::set_var("RUST_LIB_BACKTRACE", "0") };
    }
    let cli = Cli::parse();
    let default_level = if matches!(cli.command, Command::Run(_)) {
        "info"
    } else {
        "warn"
    };
    let traces = match logging::init(default_level, cli.log_format) {
        Ok(traces) => traces,
        Err(e) => {
            eprintln!("error: {}", one_line(&format!("{e:#}")));
            return ExitCode::FAILURE;
        }
    };
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
    let outcome = runtime.block_on(dispatch(cli));
    // Spans still in the batch go out before the process ends.
    if let Some(Err(e)) = traces.map(|t| t.shutdown()) {
        eprintln!("warning: the last spans may not have been exported: {e}");
    }
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}

/// A failure as the one line scripts expect: the first line of its message
/// (the rest, such as a trap's wasm backtrace, stays in the child's
/// `last_exit`).
fn one_line(message: &str) -> String {
    let mut lines = message.lines();
    let first = lines.next().unwrap_or_default();
    match lines.count() {
        0 => first.to_string(),
        more => {
            format!("{first} ({more} more lines: `wasmvisor ps --json`, the child's last_exit)")
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    let client = || client::Client::new(&cli.addr, cli.token.clone());
    match cli.command {
        Command::Run(args) => run::run(args, cli.token).await,
        Command::New { name, lang, sdk } => {
            let dir = scaffold::create(&std::env::current_dir()?, &name, lang, sdk.as_deref())?;
            println!("created {}", dir.display());
            println!("{}", scaffold::build_hint(&name, lang));
            Ok(())
        }
        Command::Wit { out } => scaffold::write_wit(out.as_deref()),
        Command::Dev {
            path,
            plugins,
            listen,
        } => {
            let args = dev::Dev {
                path,
                plugins,
                listen,
            };
            dev::dev(args, cli.token.clone()).await
        }
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut command = Cli::command();
            clap_complete::generate(shell, &mut command, "wasmvisor", &mut std::io::stdout());
            Ok(())
        }
        Command::Ps { json } => commands::ps(&client(), json).await,
        Command::Plugins { json } => commands::plugins(&client(), json).await,
        Command::Nodes { json } => commands::nodes(&client(), json).await,
        Command::Tree { json } => commands::tree(&client(), json).await,
        Command::Start {
            id,
            plugin,
            args,
            restart,
            lazy,
            placement,
        } => commands::start(&client(), &id, &plugin, &args, &restart, lazy, &placement).await,
        Command::Drain { node } => commands::drain(&client(), &node).await,
        Command::Stop { id } => commands::stop(&client(), &id).await,
        Command::Restart { id } => commands::restart(&client(), &id).await,
        Command::Kill { id } => commands::kill(&client(), &id).await,
        Command::Hibernate { id } => commands::hibernate(&client(), &id).await,
        Command::Call { id, msg, timeout } => commands::call(&client(), &id, &msg, timeout).await,
        Command::Cast { id, msg } => commands::cast(&client(), &id, &msg).await,
        Command::Events { topic, hibernation } => {
            commands::events(&client(), topic.as_deref(), hibernation).await
        }
    }
}
