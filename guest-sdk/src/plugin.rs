//! The `Plugin` trait: the GenServer callbacks of a wasmvisor instance.

use crate::exit::ExitReason;
use crate::message::Message;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A wasmvisor plugin: the state of one instance and its callbacks.
///
/// The host creates the value with [`Default::default`], calls
/// [`init`](Plugin::init) with the child's args, then delivers one message at
/// a time. Every callback has a default, so a plugin implements only what it
/// handles. Messages are JSON; their Rust types are the associated types.
///
/// Export the implementation with [`export!`](crate::export).
pub trait Plugin: Default + 'static {
    /// The init args (JSON), given when the child is started and passed again
    /// on every restart. Use `serde_json::Value` to accept anything.
    type Args: DeserializeOwned;
    /// Requests handled by [`handle_call`](Plugin::handle_call).
    type Call: DeserializeOwned;
    /// Replies to requests.
    type Reply: Serialize;
    /// Messages handled by [`handle_cast`](Plugin::handle_cast).
    type Cast: DeserializeOwned;

    /// Initialises the child when it *starts*: at its first start, at a
    /// restart, and at a hot reload when the old version gave no snapshot.
    /// An error aborts the start: the child exits with `init_failed`. Call
    /// [`continue_with`](crate::continue_with) to have
    /// [`handle_continue`](Plugin::handle_continue) run first, or
    /// [`ignore`](crate::ignore) to keep no child. The default accepts any
    /// args and does nothing.
    ///
    /// Everything a child sets up for itself (subscriptions, monitors,
    /// links, timers) ends when it exits, so set it up here: a restarted
    /// child then sets it up again by construction. A hot reload that
    /// *continues* the child (with a snapshot) runs [`restore`](Plugin::restore)
    /// instead, and keeps all of it.
    fn init(&mut self, args: Self::Args) -> Result<(), String> {
        let _ = args;
        Ok(())
    }

    /// Handles a request and returns the reply. The default traps, as an OTP
    /// GenServer without a `handle_call` clause crashes: a child that is
    /// called but cannot answer is a bug.
    fn handle_call(&mut self, msg: Self::Call) -> Self::Reply {
        let _ = msg;
        panic!("this plugin does not handle calls (Plugin::handle_call is not implemented)")
    }

    /// Handles a request that may be answered later. Return the reply to
    /// answer now, or `None` to answer later with
    /// [`reply(from, &value)`](crate::reply) from any callback, while the
    /// child goes on handling other messages (OTP's `{:noreply, state}`).
    /// The default answers with [`handle_call`](Plugin::handle_call).
    fn handle_call_from(&mut self, msg: Self::Call, from: crate::ReplyTo) -> Option<Self::Reply> {
        let _ = from;
        Some(self.handle_call(msg))
    }

    /// Runs first, after an `init` that called
    /// [`continue_with(&msg)`](crate::continue_with), once the starter got
    /// its answer (OTP's `handle_continue`). The default does nothing.
    fn handle_continue(&mut self, msg: Message) {
        let _ = msg;
    }

    /// Handles a message that expects no reply. The default logs it at
    /// `warn` and drops it.
    fn handle_cast(&mut self, msg: Self::Cast) {
        let _ = msg;
        crate::runtime::log(
            crate::Level::Warn,
            "cast ignored: Plugin::handle_cast is not implemented",
        );
    }

    /// Handles timers, monitor `down`s and topic events. The default ignores
    /// them.
    fn handle_info(&mut self, info: Info) {
        let _ = info;
    }

    /// Called before a clean stop (`normal` or `shutdown`). Not called after a
    /// trap or a kill. The default does nothing.
    fn terminate(&mut self, reason: ExitReason) {
        let _ = reason;
    }

    /// The state to carry into a new version of the plugin on hot reload;
    /// the new version then *continues* the child: it runs
    /// [`restore`](Plugin::restore) and no `init`, so the snapshot must hold
    /// everything `init` set up that later messages read. `None` (the
    /// default) means the new version *starts* the child from `init`.
    fn snapshot(&self) -> Option<Message> {
        None
    }

    /// Takes over the state of the previous version after a hot reload,
    /// instead of `init`, on a value made with [`Default::default`]. An
    /// error rolls the reload back. The default ignores the state.
    fn restore(&mut self, state: Message) -> Result<(), String> {
        let _ = state;
        Ok(())
    }
}

/// An out-of-band message for [`Plugin::handle_info`]. New kinds may come
/// with new host versions, so a `match` needs a catch-all arm.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Info {
    /// A timer from [`send_after`](crate::send_after) fired.
    Timer(Message),
    /// A monitored id exited (see [`monitor`](crate::monitor)).
    Down {
        /// The reference [`monitor`](crate::monitor) returned.
        monitor: crate::MonitorRef,
        /// The monitored id.
        id: String,
        /// Why it exited; `Noproc` when it was not running.
        reason: ExitReason,
    },
    /// A linked child exited while this instance traps exits (see
    /// [`trap_exits`](crate::trap_exits)).
    Exit {
        /// The linked child's id.
        id: String,
        /// Why it exited.
        reason: ExitReason,
    },
    /// A request from [`http::send_async`](crate::http::send_async)
    /// finished.
    Http {
        /// The id `send_async` returned.
        id: crate::http::RequestId,
        /// The response, or why there is none.
        result: Result<crate::http::Response, String>,
    },
    /// A message was published on a subscribed topic.
    Event {
        /// The topic.
        topic: String,
        /// The message.
        msg: Message,
    },
}
