//! wasmvisor: a host that supervises WebAssembly component plugins the way
//! Erlang/OTP supervises processes.
//!
//! Each child is one isolated instance of a plugin (a `wasm32-wasip2`
//! component implementing the `wasmvisor:plugin` world), owned by one task
//! that handles one message at a time. Children are addressed by a registry
//! id that stays valid across restarts; a child that traps is restarted with
//! its init args according to its restart policy.
//!
//! The code is in layers, each importing only those below it:
//!
//! 1. `types`, `names`, `config`, `events`, `metrics`, `tls`: the
//!    vocabulary, the event stream and counters every layer reports into,
//!    and the process's one TLS crypto provider;
//! 2. `wasm`: the engine, plugin catalog, compile cache, one instance, and
//!    the host functions guests import (through a narrow `Port`);
//! 3. `child`: one child's address, mailbox, supervision signals and task;
//! 4. `registry` (ids and topics) and `cluster` (NATS JetStream: node
//!    membership and cluster-wide id claims), then `supervisor` (restart decisions,
//!    intensity, groups, the dynamic supervisor, the state database, and the
//!    port each instance reaches the host by);
//! 5. `host`: [`Host`], the entry point, with plugin loading and hot reload;
//! 6. `api` and `cli`.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use std::time::Duration;
//! use wasmvisor::{ChildSpec, Config, Host};
//!
//! let host = Host::new(Config::default()).await?;
//! host.start_child(ChildSpec::new("t1", "tracker", &serde_json::json!({"transaction_id": "txn_1"})))
//!     .await?;
//! let reply = host.call("t1", br#"{"observe": 1}"#.to_vec(), Duration::from_secs(5)).await?;
//! assert_eq!(reply, b"1");
//! # Ok(()) }
//! ```

pub mod config;
pub mod events;
pub(crate) mod metrics;
pub mod names;
pub(crate) mod tls;
pub mod trace;
pub mod types;

pub(crate) mod wasm;

pub(crate) mod child;

pub(crate) mod cluster;
pub(crate) mod registry;
pub(crate) mod supervisor;

pub mod host;

pub mod api;
pub mod cli;

pub use child::Address;
pub use config::Config;
pub use events::Event;
pub use host::{
    ChildInfo, DrainFailure, DrainReport, GroupTree, Host, LoadReport, PluginChange, PluginInfo,
    Tree, TreeChild, TreeMember,
};
pub use types::{
    Activate, CallError, CheckpointError, ChildError, ChildSpec, ExitReason, Restart, StartError,
    StartOutcome, StartPlacement, Status,
};
pub use wasm::{Version, WIT_SOURCE, WIT_VERSION};
