//! What reaches a guest's `handle-info`, and exit reasons in the WIT's
//! terms.

use super::bindings::wasmvisor::plugin::types as wit;
use super::outbound;
use crate::types::ExitReason;
use bytes::Bytes;
use std::sync::Arc;

/// A runtime notification for `handle-info`.
pub(crate) enum Info {
    Timer {
        timer: u64,
        msg: Vec<u8>,
    },
    Down {
        reference: u64,
        id: Arc<str>,
        reason: ExitReason,
    },
    Event {
        topic: Arc<str>,
        msg: Bytes,
    },
    /// A linked child exited, and this one traps exits.
    Exit {
        id: Arc<str>,
        reason: ExitReason,
    },
    Http {
        id: u64,
        result: Result<outbound::Reply, String>,
    },
}

pub(crate) fn to_wit_reason(reason: &ExitReason) -> wit::ExitReason {
    match reason {
        ExitReason::Normal => wit::ExitReason::Normal,
        ExitReason::Shutdown => wit::ExitReason::Shutdown,
        ExitReason::Trap(m) => wit::ExitReason::Trap(m.clone()),
        ExitReason::Killed(m) => wit::ExitReason::Killed(m.clone()),
        ExitReason::InitFailed(m) => wit::ExitReason::InitFailed(m.clone()),
        ExitReason::Noproc => wit::ExitReason::Noproc,
        ExitReason::Linked(id) => wit::ExitReason::Linked(id.clone()),
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
