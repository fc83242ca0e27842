#![deny(missing_docs)]
//! Write wasmvisor plugins in Rust.
//!
//! A plugin is a GenServer compiled to a WebAssembly component: the host
//! starts one isolated instance per child, keeps its registry id stable
//! across restarts, restarts it with the same init args when it traps, and
//! hot-reloads it when its `.wasm` file changes. This crate hides the WIT
//! bindings: implement [`Plugin`] (every method has a default) and call
//! [`export!`] once.
//!
//! # A complete plugin
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use wasmvisor_sdk::{ExitReason, Info, Message, Plugin};
//!
//! /// A counter that can also count down on a timer.
//! #[derive(Default, Serialize, Deserialize)]
//! struct Counter {
//!     name: String,
//!     count: i64,
//! }
//!
//! #[derive(Deserialize)]
//! struct Args {
//!     name: String,
//! }
//!
//! /// Requests: `"get"`, `{"add": n}`, `{"decrement_in": ms}`.
//! #[derive(Deserialize)]
//! #[serde(rename_all = "snake_case")]
//! enum Call {
//!     Get,
//!     Add(i64),
//!     DecrementIn(u64),
//! }
//!
//! #[derive(Serialize)]
//! struct Reply {
//!     name: String,
//!     count: i64,
//! }
//!
//! impl Plugin for Counter {
//!     type Args = Args;
//!     type Call = Call;
//!     type Reply = Reply;
//!     type Cast = ();
//!
//!     fn init(&mut self, args: Args) -> Result<(), String> {
//!         self.name = args.name;
//!         wasmvisor_sdk::subscribe("counters");
//!         Ok(())
//!     }
//!
//!     fn handle_call(&mut self, msg: Call) -> Reply {
//!         match msg {
//!             Call::Get => {}
//!             Call::Add(n) => self.count += n,
//!             Call::DecrementIn(ms) => {
//!                 wasmvisor_sdk::send_after(ms, &"decrement");
//!             }
//!         }
//!         Reply { name: self.name.clone(), count: self.count }
//!     }
//!
//!     fn handle_info(&mut self, info: Info) {
//!         match info {
//!             Info::Timer(_) => self.count -= 1,
//!             Info::Event { msg, .. } => {
//!                 if let Ok(n) = msg.decode::<i64>() {
//!                     self.count += n;
//!                 }
//!             }
//!             _ => {}
//!         }
//!     }
//!
//!     fn terminate(&mut self, reason: ExitReason) {
//!         wasmvisor_sdk::log(wasmvisor_sdk::Level::Info, &format!("stopping: {reason}"));
//!     }
//!
//!     // A hot reload continues the child without `init`: carry over
//!     // everything `init` set up too (the name). Its subscription and
//!     // pending timers carry over by themselves.
//!     fn snapshot(&self) -> Option<Message> {
//!         Some(Message::encode(self))
//!     }
//!
//!     fn restore(&mut self, state: Message) -> Result<(), String> {
//!         *self = state.decode().map_err(|e| e.to_string())?;
//!         Ok(())
//!     }
//! }
//!
//! wasmvisor_sdk::export!(Counter);
//! # fn main() {}
//! ```
//!
//! Build it with `cargo build --target wasm32-wasip2 --release` (crate type
//! `cdylib`) and drop `target/wasm32-wasip2/release/NAME.wasm` into the
//! host's plugins folder. `wasmvisor new NAME` scaffolds such a crate.
//!
//! # Messages
//!
//! Messages are JSON. A unit enum variant is a string (`"get"`), a variant
//! with data is an object (`{"add": 1}`): serde's default external tagging
//! with `rename_all = "snake_case"`. A call whose JSON does not decode as
//! [`Plugin::Call`] never reaches the plugin; the caller gets
//! `{"error": "bad_message", "message": ...}`.
//!
//! # Start or continue
//!
//! A new instance either *starts* its child or *continues* it. A first
//! start, a restart and a hot reload of a plugin without a snapshot start
//! it: [`Plugin::init`] runs with the preserved args, and the instance has
//! no timers, monitors, links, subscriptions or unanswered calls from
//! before. A hot reload with a snapshot continues it: only
//! [`Plugin::restore`] runs (on a `Default` plugin), and everything the child
//! had pending carries over. So a snapshot holds all that `init` set up and
//! later messages read.
//!
//! # Failure
//!
//! A panic traps the instance. The host reports the panic message as the
//! trap, answers the call being handled with `trapped`, and restarts the
//! child with its init args according to its restart policy. Messages queued
//! behind the crashing one are delivered to the new instance.

extern crate self as wasmvisor_sdk;

#[doc(hidden)]
pub mod bindings;
mod exit;
mod export;
pub mod http;
mod message;
mod plugin;
mod runtime;

pub use exit::ExitReason;
pub use export::{continue_with, ignore};
pub use message::{DecodeError, Message};
pub use plugin::{Info, Plugin};
pub use runtime::{
    CallError, CheckpointError, ChildSpec, DEFAULT_CALL_TIMEOUT_MS, Level, MonitorRef, ReplyTo,
    Restart, StartError, Started, StopError, TimerRef, call, call_raw, call_timeout, cancel_timer,
    cast, checkpoint, demonitor, hibernate, link, log, monitor, publish, reply, self_id,
    send_after, start_child, stop, stop_child, subscribe, trap_exits, unlink, unsubscribe,
};
pub use serde_json::{Value, json};

#[doc(hidden)]
pub mod __private {
    pub use crate::export::{
        Slot, handle_call, handle_cast, handle_continue, handle_info, init, restore, snapshot,
        terminate,
    };
    pub use wit_bindgen::rt as wit_bindgen;
}
