//! wasmvisor: a host that supervises WebAssembly component plugins the way
//! Erlang/OTP supervises processes.
//!
//! Each child is one isolated instance of a plugin (a `wasm32-wasip2`
//! component implementing the `wasmvisor:plugin` world), driven by one task
//! that handles one message at a time (a call to an idle child runs on the
//! caller's task, still one at a time and in order). Children are addressed by a registry
//! id that stays valid across restarts; a child that traps is restarted with
//! its init args according to its restart policy.
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

pub mod address;
pub mod api;
pub mod bench;
pub(crate) mod bindings;
pub(crate) mod cache;
pub mod catalog;
pub(crate) mod child;
pub mod cli;
pub mod config;
pub(crate) mod control;
pub(crate) mod desk;
pub(crate) mod direct;
pub(crate) mod durable;
pub(crate) mod engine;
pub mod events;
pub mod heap;
pub mod host;
pub(crate) mod instance;
pub(crate) mod janitor;
pub mod mailbox;
pub(crate) mod metrics;
pub mod names;
pub(crate) mod outbound;
pub(crate) mod registry;
pub mod reload;
pub(crate) mod runtime;
pub(crate) mod stacks;
pub(crate) mod stdio;
pub(crate) mod supervisor;
pub(crate) mod timers;
pub(crate) mod topics;
pub mod types;
pub mod watch;

pub use address::Address;
pub use config::Config;
pub use events::Event;
pub use host::{ChildInfo, Host, PluginInfo};
pub use instance::InstanceState;
pub use reload::{LoadReport, PluginChange};
pub use types::{CallError, ChildError, ChildSpec, ExitReason, Restart, StartError, Status};
