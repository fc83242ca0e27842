//! The library's public vocabulary: restart policies, exit reasons, child
//! specs and the typed errors of every operation.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// When a child is restarted after it exits (OTP restart values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Restart {
    /// Always restarted.
    #[default]
    Permanent,
    /// Restarted unless it exited `normal` or `shutdown`.
    Transient,
    /// Never restarted; removed on any exit.
    Temporary,
}

impl Restart {
    /// The policy's name as the CLI, API and config spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Restart::Permanent => "permanent",
            Restart::Transient => "transient",
            Restart::Temporary => "temporary",
        }
    }
}

impl FromStr for Restart {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "permanent" => Ok(Restart::Permanent),
            "transient" => Ok(Restart::Transient),
            "temporary" => Ok(Restart::Temporary),
            other => Err(format!(
                "unknown restart policy {other:?} (expected permanent, transient or temporary)"
            )),
        }
    }
}

impl fmt::Display for Restart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Activate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "eager" => Ok(Activate::Eager),
            "lazy" => Ok(Activate::Lazy),
            other => Err(format!(
                "unknown activation {other:?} (expected eager or lazy)"
            )),
        }
    }
}

/// Why an instance stopped. Serialised as `"normal"` or `{"trap": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitReason {
    /// The guest asked to stop.
    Normal,
    /// An operator, a reload or the host stopped it.
    Shutdown,
    /// A wasm trap; its message.
    Trap(String),
    /// A deadline, a memory limit, an operator's kill or a host failure; which.
    Killed(String),
    /// `init` returned an error or trapped.
    InitFailed(String),
    /// Only in `down` notifications: the monitored id was not running.
    Noproc,
    /// A linked child exited with a reason other than `normal` and this
    /// one does not trap exits; the linked child's id.
    Linked(String),
    /// In a cluster: the child's node lost its lease, so the child stopped
    /// there (and moves to another node unless `temporary`); in a `down`
    /// or an `exit`, the other side's node was lost.
    #[serde(rename = "noconnection")]
    NoConnection,
}

impl ExitReason {
    /// `normal` and `shutdown`: the exits a `transient` child is not
    /// restarted after.
    pub fn is_clean(&self) -> bool {
        matches!(self, ExitReason::Normal | ExitReason::Shutdown)
    }

    /// The reason's code: `normal`, `shutdown`, `trap`, `killed`,
    /// `init_failed`, `noproc` or `linked`.
    pub fn code(&self) -> &'static str {
        match self {
            ExitReason::Normal => "normal",
            ExitReason::Shutdown => "shutdown",
            ExitReason::Trap(_) => "trap",
            ExitReason::Killed(_) => "killed",
            ExitReason::InitFailed(_) => "init_failed",
            ExitReason::Noproc => "noproc",
            ExitReason::Linked(_) => "linked",
            ExitReason::NoConnection => "noconnection",
        }
    }

    /// What a caller whose message was being handled, or whose reply was
    /// deferred, when the instance exited is told.
    pub(crate) fn to_call_error(&self) -> CallError {
        match self {
            ExitReason::Trap(m) => CallError::Trapped(m.clone()),
            ExitReason::Killed(m) => CallError::Killed(m.clone()),
            other => CallError::Failed(format!("instance exited: {other}")),
        }
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitReason::Trap(m)
            | ExitReason::Killed(m)
            | ExitReason::InitFailed(m)
            | ExitReason::Linked(m) => write!(f, "{}: {m}", self.code()),
            other => f.write_str(other.code()),
        }
    }
}

/// How to start a child (an OTP child spec).
#[derive(Debug, Clone, PartialEq)]
pub struct ChildSpec {
    /// The registry id; unique on the host.
    pub id: String,
    /// The plugin that runs it.
    pub plugin: String,
    /// The init args as JSON bytes, passed to `init` on every (re)start.
    pub args: Bytes,
    /// The restart policy.
    pub restart: Restart,
    /// How long `terminate` may take on a shutdown before the instance is
    /// killed.
    pub shutdown_ms: u32,
    /// When its first instance is made: at the start, or at its first
    /// message.
    pub activate: Activate,
}

/// When a child's first instance is made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activate {
    /// At the start: `init` has run when the start answers.
    #[default]
    Eager,
    /// At the child's first message (Orleans' activation): the start only
    /// registers it, and `init` runs when a message comes.
    Lazy,
}

/// The default time `terminate` gets on a shutdown.
pub const DEFAULT_SHUTDOWN_MS: u32 = 5_000;

impl ChildSpec {
    /// A permanent child of `plugin` with `args` given as a JSON value.
    pub fn new(id: impl Into<String>, plugin: impl Into<String>, args: &serde_json::Value) -> Self {
        ChildSpec {
            id: id.into(),
            plugin: plugin.into(),
            // A `Value` always serialises.
            args: Bytes::from(serde_json::to_vec(args).unwrap_or_default()),
            restart: Restart::Permanent,
            shutdown_ms: DEFAULT_SHUTDOWN_MS,
            activate: Activate::Eager,
        }
    }

    /// Sets the restart policy.
    pub fn restart(mut self, restart: Restart) -> Self {
        self.restart = restart;
        self
    }

    /// Sets when its first instance is made.
    pub fn activate(mut self, activate: Activate) -> Self {
        self.activate = activate;
        self
    }
}

/// Why a `call` or `cast` got no reply. The same codes as the WIT
/// `call-error` and the HTTP API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// No child has that id.
    #[error("not_found: no child with that id")]
    NotFound,
    /// No reply within the timeout.
    #[error("timeout: no reply in time")]
    Timeout,
    /// The callee trapped while handling this message.
    #[error("trapped: {0}")]
    Trapped(String),
    /// The callee was killed while handling this message.
    #[error("killed: {0}")]
    Killed(String),
    /// The callee's mailbox is full.
    #[error("mailbox_full: the child's mailbox is full")]
    MailboxFull,
    /// The callee failed permanently, is stopping, or the call was refused.
    #[error("failed: {0}")]
    Failed(String),
    /// A lazily started callee's `init` failed when this message woke it.
    #[error("init_failed: {0}")]
    InitFailed(String),
    /// No instance can be made for a hibernated callee now (the pool is
    /// full of busy children); its state is kept.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

impl CallError {
    /// The stable error code.
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
        }
    }

    /// The error of `code` (as [`CallError::code`] spells it): how another
    /// node's answer comes back. An unknown code is `failed`.
    pub fn from_code(code: &str, message: String) -> CallError {
        match code {
            "not_found" => CallError::NotFound,
            "timeout" => CallError::Timeout,
            "trapped" => CallError::Trapped(message),
            "killed" => CallError::Killed(message),
            "mailbox_full" => CallError::MailboxFull,
            "init_failed" => CallError::InitFailed(message),
            "unavailable" => CallError::Unavailable(message),
            _ => CallError::Failed(message),
        }
    }

    /// The message a [`CallError::from_code`] takes back.
    pub fn message(&self) -> String {
        match self {
            CallError::Trapped(m)
            | CallError::Killed(m)
            | CallError::Failed(m)
            | CallError::InitFailed(m)
            | CallError::Unavailable(m) => m.clone(),
            other => other.to_string(),
        }
    }
}

/// Why `runtime.checkpoint` stored nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// The state is larger than the plugin's `max_state_kib` (the cap, KiB).
    #[error("too_large: the state is larger than max_state_kib = {0}")]
    TooLarge(u32),
    /// The plugin has no `durable_state = true`, or the host has no state
    /// database.
    #[error("not_durable: the plugin has no durable_state, or the host runs ephemeral")]
    NotDurable,
    /// The state database could not write it.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// In a cluster: the child runs on another node now (its claim moved
    /// on), so this node's write is stale and refused.
    #[error("unavailable: the child runs on another node now; this node's write is stale")]
    Moved,
}

/// What a start did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StartOutcome {
    /// The child runs.
    Started,
    /// Its `init` returned `ignore`: no child is kept and its id is free.
    Ignored,
}

/// Where a dynamic start puts the child in a cluster.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartPlacement {
    /// On the node that received the start.
    #[default]
    Local,
    /// On the live node that runs the fewest children.
    LeastLoaded,
}

impl std::str::FromStr for StartPlacement {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "local" => Ok(StartPlacement::Local),
            "least_loaded" => Ok(StartPlacement::LeastLoaded),
            other => Err(format!(
                "unknown placement {other:?} (expected local or least_loaded)"
            )),
        }
    }
}

/// Why a child could not be started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartError {
    /// A child with that id exists.
    #[error("already_started: a child with id {0:?} exists")]
    AlreadyStarted(String),
    /// No plugin of that name is loaded.
    #[error("unknown_plugin: no plugin named {0:?} is loaded")]
    UnknownPlugin(String),
    /// The host runs `[supervisor] max_children` dynamic children already.
    #[error("max_children: the host runs {0} dynamic children, its [supervisor] max_children")]
    MaxChildren(u32),
    /// The spec is invalid (id, plugin name, args).
    #[error("bad_request: {0}")]
    Invalid(String),
    /// `init` returned an error or trapped.
    #[error("init_failed: {0}")]
    InitFailed(String),
    /// The host could not create an instance (for example the instance pool
    /// is exhausted).
    #[error("unavailable: {0}")]
    Unavailable(String),
}

impl StartError {
    /// The stable error code.
    pub fn code(&self) -> &'static str {
        match self {
            StartError::AlreadyStarted(_) => "already_started",
            StartError::UnknownPlugin(_) => "unknown_plugin",
            StartError::MaxChildren(_) => "max_children",
            StartError::Invalid(_) => "bad_request",
            StartError::InitFailed(_) => "init_failed",
            StartError::Unavailable(_) => "unavailable",
        }
    }

    /// What the variant carries, as text: the inverse of
    /// [`StartError::from_code`], for sending it to another node.
    pub fn detail(&self) -> String {
        match self {
            StartError::AlreadyStarted(s)
            | StartError::UnknownPlugin(s)
            | StartError::Invalid(s)
            | StartError::InitFailed(s)
            | StartError::Unavailable(s) => s.clone(),
            StartError::MaxChildren(n) => n.to_string(),
        }
    }

    /// The error another node of the cluster answered, from its
    /// [`StartError::code`] and [`StartError::detail`].
    pub fn from_code(code: &str, detail: String) -> StartError {
        match code {
            "already_started" => StartError::AlreadyStarted(detail),
            "unknown_plugin" => StartError::UnknownPlugin(detail),
            "max_children" => match detail.parse() {
                Ok(n) => StartError::MaxChildren(n),
                Err(_) => StartError::Unavailable(detail),
            },
            "bad_request" => StartError::Invalid(detail),
            "init_failed" => StartError::InitFailed(detail),
            _ => StartError::Unavailable(detail),
        }
    }
}

/// Why an operation on an existing child failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChildError {
    /// No child has that id.
    #[error("not_found: no child with id {0:?}")]
    NotFound(String),
    /// The child cannot hibernate now; why (it owes a deferred reply or
    /// waits for an HTTP response, its `snapshot` returns none, or it has
    /// no instance to give back).
    #[error("cannot_hibernate: {0}")]
    CannotHibernate(String),
    /// The child runs on another node of the cluster, which did not
    /// answer.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

impl ChildError {
    /// The stable error code.
    pub fn code(&self) -> &'static str {
        match self {
            ChildError::NotFound(_) => "not_found",
            ChildError::CannotHibernate(_) => "cannot_hibernate",
            ChildError::Unavailable(_) => "unavailable",
        }
    }

    /// The error of `code` (as [`ChildError::code`] spells it) about child
    /// `id`: how another node's answer comes back.
    pub fn from_code(code: &str, id: &str, message: String) -> ChildError {
        match code {
            "not_found" => ChildError::NotFound(id.to_string()),
            "cannot_hibernate" => ChildError::CannotHibernate(message),
            _ => ChildError::Unavailable(message),
        }
    }
}

/// Where a child is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Its instance is being created (first start).
    Starting,
    /// An instance is serving its mailbox.
    Running,
    /// It exited and a new instance is being created.
    Restarting,
    /// It exceeded its restart intensity; the next restart waits.
    Backoff,
    /// It exceeded its restart intensity with `on_exhausted = "fail"`; it
    /// stays down until restarted, reloaded or stopped.
    Failed,
    /// Its plugin's file was removed; it starts again when the file returns.
    Waiting,
    /// A config child whose `init` returned `ignore`: it has no instance
    /// until an operator restarts it.
    Ignored,
    /// It has no instance: it gave it back while idle, keeping its snapshot
    /// and incarnation, or it was started lazily and `init` has not run
    /// yet. Its next message wakes it.
    Hibernated,
}

impl Status {
    /// The status as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Starting => "starting",
            Status::Hibernated => "hibernated",
            Status::Running => "running",
            Status::Restarting => "restarting",
            Status::Backoff => "backoff",
            Status::Failed => "failed",
            Status::Waiting => "waiting",
            Status::Ignored => "ignored",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_reasons_serialise_like_the_guest_sdk() {
        let json = serde_json::to_string(&ExitReason::Trap("boom".into())).unwrap();
        assert_eq!(json, r#"{"trap":"boom"}"#);
        assert_eq!(
            serde_json::to_string(&ExitReason::Normal).unwrap(),
            r#""normal""#
        );
        assert_eq!(
            serde_json::to_string(&ExitReason::InitFailed("x".into())).unwrap(),
            r#"{"init_failed":"x"}"#
        );
    }

    #[test]
    fn restart_parses_only_known_policies() {
        assert_eq!("transient".parse::<Restart>(), Ok(Restart::Transient));
        assert!(
            "sometimes"
                .parse::<Restart>()
                .unwrap_err()
                .contains("sometimes")
        );
    }

    #[test]
    fn only_normal_and_shutdown_are_clean() {
        assert!(ExitReason::Normal.is_clean());
        assert!(ExitReason::Shutdown.is_clean());
        assert!(!ExitReason::Trap(String::new()).is_clean());
        assert!(!ExitReason::Killed(String::new()).is_clean());
        assert!(!ExitReason::InitFailed(String::new()).is_clean());
    }
}
