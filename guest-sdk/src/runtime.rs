//! Safe wrappers over the host's `runtime` imports.

use crate::bindings::wasmvisor::plugin::runtime as rt;
use crate::bindings::wasmvisor::plugin::types as wit;
use crate::exit::ExitReason;
use crate::message::{DecodeError, Message};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt;

/// The default `call` timeout, as OTP's `GenServer.call/2`.
pub const DEFAULT_CALL_TIMEOUT_MS: u32 = 5_000;

/// Why a [`call`] or [`cast`] did not produce a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// No child is registered under that id.
    NotFound,
    /// No reply within the timeout.
    Timeout,
    /// The callee trapped while handling the message.
    Trapped(String),
    /// The callee was killed while handling the message.
    Killed(String),
    /// The callee's mailbox is full.
    MailboxFull,
    /// The callee failed permanently, is stopping, or the call was refused.
    Failed(String),
    /// A lazily started callee's `init` failed when this message woke it.
    InitFailed(String),
    /// The host has no instance for a hibernated callee now (its pool is
    /// full of busy children); the callee's state is kept.
    Unavailable(String),
    /// A reply arrived but did not decode as the expected type.
    Decode(DecodeError),
}

impl CallError {
    /// The stable error code, as the HTTP API spells it (`not_found`, ...).
    pub fn code(&self) -> &'static str {
        match self {
            CallError::NotFound => "not_found",
            CallError::Timeout => "timeout",
            CallError::Trapped(_) => "trapped",
            CallError::Killed(_) => "killed",
            CallError::MailboxFull => "mailbox_full",
            CallError::Failed(_) => "failed",
            CallError::InitFailed(_) => "init_failed",
            CallError::Unavailable(_) => "unavailable",
            CallError::Decode(_) => "bad_reply",
        }
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Trapped(m)
            | CallError::Killed(m)
            | CallError::Failed(m)
            | CallError::InitFailed(m)
            | CallError::Unavailable(m) => {
                write!(f, "{}: {m}", self.code())
            }
            CallError::Decode(e) => write!(f, "{}: {e}", self.code()),
            _ => f.write_str(self.code()),
        }
    }
}

impl std::error::Error for CallError {}

impl From<wit::CallError> for CallError {
    fn from(e: wit::CallError) -> CallError {
        match e {
            wit::CallError::NotFound => CallError::NotFound,
            wit::CallError::Timeout => CallError::Timeout,
            wit::CallError::Trapped(m) => CallError::Trapped(m),
            wit::CallError::Killed(m) => CallError::Killed(m),
            wit::CallError::MailboxFull => CallError::MailboxFull,
            wit::CallError::Failed(m) => CallError::Failed(m),
            wit::CallError::InitFailed(m) => CallError::InitFailed(m),
            wit::CallError::Unavailable(m) => CallError::Unavailable(m),
        }
    }
}

/// The registry id of this instance; stable across restarts and reloads.
pub fn self_id() -> String {
    rt::self_id()
}

/// Calls child `to` with `msg` and decodes its reply, waiting up to
/// [`DEFAULT_CALL_TIMEOUT_MS`].
///
/// While it waits, this instance handles nothing else (as in OTP), so two
/// children calling each other end in a timeout, and calling oneself fails.
pub fn call<R: DeserializeOwned>(to: &str, msg: &impl Serialize) -> Result<R, CallError> {
    call_timeout(to, msg, DEFAULT_CALL_TIMEOUT_MS)
}

/// [`call`] with an explicit timeout in milliseconds.
pub fn call_timeout<R: DeserializeOwned>(
    to: &str,
    msg: &impl Serialize,
    timeout_ms: u32,
) -> Result<R, CallError> {
    call_raw(to, &Message::encode(msg), timeout_ms)?
        .decode()
        .map_err(CallError::Decode)
}

/// [`call`] without encoding or decoding: the reply's bytes as they came.
pub fn call_raw(to: &str, msg: &Message, timeout_ms: u32) -> Result<Message, CallError> {
    rt::call(to, msg.as_bytes(), timeout_ms)
        .map(Message::from_bytes)
        .map_err(CallError::from)
}

/// Sends `msg` to child `to` without waiting for it to be handled.
pub fn cast(to: &str, msg: &impl Serialize) -> Result<(), CallError> {
    rt::cast(to, Message::encode(msg).as_bytes()).map_err(CallError::from)
}

/// A pending timer, returned by [`send_after`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerRef(pub u64);

/// Delivers [`Info::Timer`](crate::Info::Timer) with `msg` to this instance
/// after `delay_ms`. The timer ends with the incarnation: an exit cancels
/// it, a hot reload that continues the child does not.
pub fn send_after(delay_ms: u64, msg: &impl Serialize) -> TimerRef {
    TimerRef(rt::send_after(delay_ms, Message::encode(msg).as_bytes()))
}

/// Cancels a timer; true when it was still pending (its message will not
/// arrive).
pub fn cancel_timer(timer: TimerRef) -> bool {
    rt::cancel_timer(timer.0)
}

/// When a child is restarted (OTP restart values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Restart {
    /// Always restarted (the default).
    #[default]
    Permanent,
    /// Restarted unless it exited `normal` or `shutdown`.
    Transient,
    /// Never restarted.
    Temporary,
}

/// How to start a child with [`start_child`].
#[derive(Debug, Clone, PartialEq)]
pub struct ChildSpec {
    /// The registry id.
    pub id: String,
    /// The plugin name.
    pub plugin: String,
    /// The init args.
    pub args: Message,
    /// The restart policy.
    pub restart: Restart,
    /// How long `terminate` may take on shutdown; 0 means the host default.
    pub shutdown_ms: u32,
}

impl ChildSpec {
    /// A permanent child of `plugin` registered as `id`, with `null` args.
    pub fn new(id: impl Into<String>, plugin: impl Into<String>) -> ChildSpec {
        ChildSpec {
            id: id.into(),
            plugin: plugin.into(),
            args: Message::encode(&()),
            restart: Restart::Permanent,
            shutdown_ms: 0,
        }
    }

    /// Sets the init args.
    pub fn args(mut self, args: &impl Serialize) -> ChildSpec {
        self.args = Message::encode(args);
        self
    }

    /// Sets the restart policy.
    pub fn restart(mut self, restart: Restart) -> ChildSpec {
        self.restart = restart;
        self
    }
}

/// What [`start_child`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Started {
    /// The child runs.
    Running,
    /// Its `init` asked to be ignored: no child is kept and its id is free.
    Ignored,
}

/// Why [`start_child`] did not start a child.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartError {
    /// A child with that id exists.
    AlreadyStarted,
    /// No plugin of that name is loaded.
    UnknownPlugin,
    /// The host runs its `max_children` dynamic children already.
    MaxChildren,
    /// The spec is invalid (its id or plugin name); why.
    Invalid(String),
    /// The new child's `init` returned an error or trapped; why.
    InitFailed(String),
    /// The host cannot create an instance now (for example its instance
    /// pool is full); why.
    Unavailable(String),
}

impl StartError {
    /// The stable error code, as the HTTP API spells it (`already_started`,
    /// ...).
    pub fn code(&self) -> &'static str {
        match self {
            StartError::AlreadyStarted => "already_started",
            StartError::UnknownPlugin => "unknown_plugin",
            StartError::MaxChildren => "max_children",
            StartError::Invalid(_) => "bad_request",
            StartError::InitFailed(_) => "init_failed",
            StartError::Unavailable(_) => "unavailable",
        }
    }
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Invalid(m) | StartError::InitFailed(m) | StartError::Unavailable(m) => {
                write!(f, "{}: {m}", self.code())
            }
            _ => f.write_str(self.code()),
        }
    }
}

impl std::error::Error for StartError {}

/// Why [`stop_child`] did not stop a child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopError {
    /// No child is registered under that id.
    NotFound,
    /// A child cannot stop itself with [`stop_child`] (it would wait for its
    /// own current message to end); it calls [`stop`] instead.
    CallingSelf,
}

impl StopError {
    /// The stable error code (`not_found`, `calling_self`).
    pub fn code(&self) -> &'static str {
        match self {
            StopError::NotFound => "not_found",
            StopError::CallingSelf => "calling_self",
        }
    }
}

impl fmt::Display for StopError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl std::error::Error for StopError {}

/// Starts a dynamic child and waits until its `init` returned.
pub fn start_child(spec: &ChildSpec) -> Result<Started, StartError> {
    let spec = wit::ChildSpec {
        id: spec.id.clone(),
        plugin: spec.plugin.clone(),
        args: spec.args.as_bytes().to_vec(),
        restart: match spec.restart {
            Restart::Permanent => wit::Restart::Permanent,
            Restart::Transient => wit::Restart::Transient,
            Restart::Temporary => wit::Restart::Temporary,
        },
        shutdown_ms: spec.shutdown_ms,
    };
    let started = rt::start_child(&spec).map_err(|e| match e {
        wit::StartError::AlreadyStarted => StartError::AlreadyStarted,
        wit::StartError::UnknownPlugin => StartError::UnknownPlugin,
        wit::StartError::MaxChildren => StartError::MaxChildren,
        wit::StartError::Invalid(m) => StartError::Invalid(m),
        wit::StartError::InitFailed(m) => StartError::InitFailed(m),
        wit::StartError::Unavailable(m) => StartError::Unavailable(m),
    })?;
    Ok(match started {
        wit::StartOutcome::Started => Started::Running,
        wit::StartOutcome::Ignored => Started::Ignored,
    })
}

/// Stops child `id` with `shutdown` and removes it, waiting until it is
/// gone.
pub fn stop_child(id: &str) -> Result<(), StopError> {
    rt::stop_child(id).map_err(|e| match e {
        wit::StopError::NotFound => StopError::NotFound,
        wit::StopError::CallingSelf => StopError::CallingSelf,
    })
}

/// A monitor, returned by [`monitor`]; its `down` carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MonitorRef(pub u64);

/// Monitors `id`: [`Info::Down`](crate::Info::Down) with the returned
/// reference arrives once when it exits, or at once (with `Noproc`) if it
/// is not running. Monitors end with this instance's incarnation.
pub fn monitor(id: &str) -> MonitorRef {
    MonitorRef(rt::monitor(id))
}

/// Removes a monitor, and its `down` if one already waits in the mailbox
/// (OTP's `demonitor(ref, [:flush])`): no `down` for it arrives after this.
/// True when the monitor was still set; false once it fired (its `down`,
/// if queued, is removed all the same).
pub fn demonitor(monitor: MonitorRef) -> bool {
    rt::demonitor(monitor.0)
}

/// Links this child with `id`, both ways (OTP's `Process.link`): when either
/// exits with a reason other than `Normal`, the other exits too, with
/// [`ExitReason::Linked`], unless it traps exits ([`trap_exits`]). Fails
/// with `NotFound` when `id` is not running.
pub fn link(id: &str) -> Result<(), CallError> {
    rt::link(id).map_err(CallError::from)
}

/// Removes the link with `id`, if there is one.
pub fn unlink(id: &str) {
    rt::unlink(id)
}

/// With true, a linked child's exit arrives as
/// [`Info::Exit`](crate::Info::Exit) instead of ending this instance. Reset
/// whenever the child starts.
pub fn trap_exits(on: bool) {
    rt::trap_exits(on)
}

/// The handle of a call that [`Plugin::handle_call_from`](crate::Plugin::handle_call_from)
/// left unanswered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReplyTo(pub u64);

/// Answers a call left unanswered (OTP's `GenServer.reply/2`), from any
/// callback of the same incarnation. False when that call no longer waits
/// (answered already, or the incarnation ended). A reply after the caller's
/// timeout is dropped.
pub fn reply(to: ReplyTo, value: &impl Serialize) -> bool {
    rt::reply(to.0, Message::encode(value).as_bytes())
}

/// Publishes `msg` on `topic` to every subscriber and event stream.
pub fn publish(topic: &str, msg: &impl Serialize) {
    rt::publish(topic, Message::encode(msg).as_bytes())
}

/// Subscribes this instance to `topic`; events arrive as
/// [`Info::Event`](crate::Info::Event). Subscribe in `init`.
pub fn subscribe(topic: &str) {
    rt::subscribe(topic)
}

/// Ends this instance's subscription to `topic`.
pub fn unsubscribe(topic: &str) {
    rt::unsubscribe(topic)
}

/// Hibernates this child once the current callback returns (OTP's
/// `:hibernate`): the host takes [`Plugin::snapshot`](crate::Plugin::snapshot)
/// and gives the instance back; the next message wakes it with
/// [`Plugin::restore`](crate::Plugin::restore), no `init`. Nothing happens
/// while the child owes a deferred reply or waits for an HTTP response, or
/// when `snapshot` returns `None`.
pub fn hibernate() {
    rt::hibernate()
}

/// Why [`checkpoint`] stored nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckpointError {
    /// The state is larger than the plugin's `max_state_kib` (the cap, KiB).
    /// Nothing is stored: a state is never truncated.
    TooLarge(u32),
    /// The plugin has no `durable_state = true`, the child is not stored
    /// (a child from the config), or the host runs `--ephemeral`.
    NotDurable,
    /// The state database could not write it; why.
    Unavailable(String),
}

impl CheckpointError {
    /// The stable error code (`too_large`, `not_durable`, `unavailable`).
    pub fn code(&self) -> &'static str {
        match self {
            CheckpointError::TooLarge(_) => "too_large",
            CheckpointError::NotDurable => "not_durable",
            CheckpointError::Unavailable(_) => "unavailable",
        }
    }
}

impl fmt::Display for CheckpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckpointError::TooLarge(kib) => {
                write!(f, "too_large: the state is over max_state_kib = {kib}")
            }
            CheckpointError::NotDurable => f.write_str(
                "not_durable: the plugin has no durable_state, or this child is not stored",
            ),
            CheckpointError::Unavailable(why) => write!(f, "unavailable: {why}"),
        }
    }
}

impl std::error::Error for CheckpointError {}

/// Stores `plugin`'s state (what its [`snapshot`](crate::Plugin::snapshot)
/// returns) in the host's state database now, and returns once it is on
/// disk. After a host crash the child comes back from it, and with
/// `restart_from = "checkpoint"` a restart after a trap restores it. For
/// plugins with `durable_state = true`; a plugin whose `snapshot` returns
/// `None` has nothing to store, which is `Ok`.
///
/// ```ignore
/// fn handle_call(&mut self, msg: Call) -> Value {
///     self.apply(msg);
///     wasmvisor_sdk::checkpoint(self).ok();   // durable before the reply
///     json!("ok")
/// }
/// ```
pub fn checkpoint<P: crate::Plugin>(plugin: &P) -> Result<(), CheckpointError> {
    let Some(state) = plugin.snapshot() else {
        return Ok(());
    };
    rt::checkpoint(state.as_bytes()).map_err(|e| match e {
        wit::CheckpointError::TooLarge(kib) => CheckpointError::TooLarge(kib),
        wit::CheckpointError::NotDurable => CheckpointError::NotDurable,
        wit::CheckpointError::Unavailable(why) => CheckpointError::Unavailable(why),
    })
}

/// Stops this instance with `reason` after the current callback returns.
pub fn stop(reason: ExitReason) {
    rt::stop(&to_wit_reason(reason))
}

/// Log levels for [`log`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Very detailed diagnostics.
    Trace,
    /// Diagnostics.
    Debug,
    /// Normal operation.
    Info,
    /// Something unexpected but handled.
    Warn,
    /// Something failed.
    Error,
}

/// Writes a line to the host's log, tagged with this instance's id.
pub fn log(level: Level, msg: &str) {
    let level = match level {
        Level::Trace => wit::LogLevel::Trace,
        Level::Debug => wit::LogLevel::Debug,
        Level::Info => wit::LogLevel::Info,
        Level::Warn => wit::LogLevel::Warn,
        Level::Error => wit::LogLevel::Error,
    };
    rt::log(level, msg)
}

pub(crate) fn to_wit_reason(reason: ExitReason) -> wit::ExitReason {
    match reason {
        ExitReason::Normal => wit::ExitReason::Normal,
        ExitReason::Shutdown => wit::ExitReason::Shutdown,
        ExitReason::Trap(m) => wit::ExitReason::Trap(m),
        ExitReason::Killed(m) => wit::ExitReason::Killed(m),
        ExitReason::InitFailed(m) => wit::ExitReason::InitFailed(m),
        ExitReason::Noproc => wit::ExitReason::Noproc,
        ExitReason::Linked(id) => wit::ExitReason::Linked(id),
        ExitReason::NoConnection => wit::ExitReason::Noconnection,
    }
}

pub(crate) fn from_wit_reason(reason: wit::ExitReason) -> ExitReason {
    match reason {
        wit::ExitReason::Normal => ExitReason::Normal,
        wit::ExitReason::Shutdown => ExitReason::Shutdown,
        wit::ExitReason::Trap(m) => ExitReason::Trap(m),
        wit::ExitReason::Killed(m) => ExitReason::Killed(m),
        wit::ExitReason::InitFailed(m) => ExitReason::InitFailed(m),
        wit::ExitReason::Noproc => ExitReason::Noproc,
        wit::ExitReason::Linked(id) => ExitReason::Linked(id),
        wit::ExitReason::Noconnection => ExitReason::NoConnection,
    }
}
