//! Why an instance exited, as a plugin sees it.

use serde::Serialize;
use std::fmt;

/// Why an instance exited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitReason {
    /// It asked to stop: an expected exit.
    Normal,
    /// An operator, a reload or the host stopped it.
    Shutdown,
    /// It trapped; the trap message.
    Trap(String),
    /// The host cut it off (deadline, memory, operator kill); why.
    Killed(String),
    /// Its `init` failed; the error.
    InitFailed(String),
    /// Only in [`Info::Down`](crate::Info::Down): the monitored id was not running.
    Noproc,
    /// A linked child exited abnormally and this one does not trap exits;
    /// the linked child's id.
    Linked(String),
    /// In a cluster: this child's node lost its lease (it could not reach
    /// the cluster) and stopped it; in a `down` or an `exit`, the other
    /// side's node was lost (Erlang's `noconnection`).
    #[serde(rename = "noconnection")]
    NoConnection,
}

impl ExitReason {
    /// `normal` and `shutdown` are clean exits; everything else is abnormal.
    pub fn is_clean(&self) -> bool {
        matches!(self, ExitReason::Normal | ExitReason::Shutdown)
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitReason::Normal => f.write_str("normal"),
            ExitReason::Shutdown => f.write_str("shutdown"),
            ExitReason::Trap(m) => write!(f, "trap: {m}"),
            ExitReason::Killed(m) => write!(f, "killed: {m}"),
            ExitReason::InitFailed(m) => write!(f, "init_failed: {m}"),
            ExitReason::Noproc => f.write_str("noproc"),
            ExitReason::Linked(id) => write!(f, "linked: {id}"),
            ExitReason::NoConnection => f.write_str("noconnection"),
        }
    }
}
