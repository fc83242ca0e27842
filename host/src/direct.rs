//! Calls run on the caller's own task when the child is idle.
//!
//! A call handed to the child's task costs two task wake-ups, and with one
//! client tokio moves such a ping-pong to its other worker every few round
//! trips (its LIFO slot is capped at three polls in a row, then the idle
//! worker is woken through its eventfd): a third of the calls took 6 µs
//! instead of 2. When the child sleeps with nothing queued, it leaves its
//! instance on the mailbox's desk (`desk.rs`), and a caller from outside the
//! guests takes it, runs `handle_call` itself and gives it back.
//!
//! What stays as it was:
//! - **Order.** The instance is lent only while nothing is queued, and
//!   whatever comes meanwhile waits for it.
//! - **The child's task stays in charge.** It wakes for every message and
//!   signal, takes the instance back (waiting for a call in progress), and
//!   restarts, reloads and stops it. A call that traps, is killed, or makes
//!   the guest ask to stop gives the instance back for the child to act on.
//! - **A caller that gives up does not hurt the child.** A call whose caller
//!   times out or is dropped is finished on a task of its own, as the child
//!   would have finished it, and only then given back.
//!
//! Calls between guests keep the mailbox: the caller is then a guest whose
//! native stack the nested call would run on.

use crate::address::Cell;
use crate::control::Control;
use crate::instance::Instance;
use crate::metrics::Metrics;
use crate::types::{CallError, ExitReason};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// The instance on the desk, and how its last lent call ended it.
pub(crate) struct Seat {
    pub(crate) instance: Box<Instance>,
    /// The call trapped or was killed: the instance is never called again.
    pub(crate) died: Option<ExitReason>,
}

type Work = Pin<Box<dyn Future<Output = Result<Vec<u8>, CallError>> + Send>>;

/// Runs the call on this task if `cell`'s child is idle; otherwise hands
/// `msg` back for the mailbox.
pub(crate) async fn call(
    cell: &Arc<Cell>,
    msg: Vec<u8>,
    timeout: Option<Duration>,
    metrics: &Metrics,
) -> Result<Result<Vec<u8>, CallError>, Vec<u8>> {
    // A client calling in a loop never waits on anything tokio counts, so
    // it gives way here as a channel receive would.
    tokio::task::coop::consume_budget().await;
    // A signal waiting for the child (a kill, a stop) goes first, as it
    // would in the mailbox.
    if cell.control.pending() {
        return Err(msg);
    }
    let Some(instance) = cell.mailbox.lend() else {
        return Err(msg);
    };
    metrics.direct_call();
    let loan = Loan {
        cell: cell.clone(),
        instance: Some(instance),
    };
    // Boxed (1,568 bytes, most of it wasmtime's call future) so that a call
    // its caller stops waiting for can move to a task of its own.
    let mut work = Unfinished {
        work: Box::pin(loan.run(msg)),
        finished: false,
    };
    match cell.within(work.work.as_mut(), timeout).await {
        Some(answer) => {
            work.finished = true;
            Ok(answer)
        }
        // `work` is finished on a task of its own.
        None => Ok(Err(CallError::Timeout)),
    }
}

/// A lent call, finished on a task of its own if its caller stops waiting
/// for it, so that the guest is not cut off mid-call.
struct Unfinished {
    work: Work,
    finished: bool,
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        // The placeholder is a zero-sized future: boxing it allocates nothing.
        let work = std::mem::replace(&mut self.work, Box::pin(std::future::pending()));
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) if !std::thread::panicking() => {
                runtime.spawn(work);
            }
            // Dropped, the loan gives the instance back as died.
            _ => drop(work),
        }
    }
}

/// The instance taken from the desk; given back however the call ends.
struct Loan {
    cell: Arc<Cell>,
    instance: Option<Box<Instance>>,
}

impl Loan {
    async fn run(mut self, msg: Vec<u8>) -> Result<Vec<u8>, CallError> {
        let result = {
            let Some(instance) = self.instance.as_mut() else {
                unreachable!("a loan holds its instance until it is given back");
            };
            let mailbox = &self.cell.mailbox;
            // With stacks shared, a lent call takes the instance off idle as
            // its child would on waking: its stack lent while idle is not
            // idle while the call runs, and must not be asked for, since the
            // one asking may be this call's own callee. A stack asked for
            // already is handed back first (the child, woken by the ask,
            // then finds nothing to do). Afterwards the instance rests as
            // its child would have left it (lent, or handed back).
            let lease = self.cell.lease.get();
            if let Some(lease) = lease {
                instance.wake(lease);
            }
            let result = tokio::select! {
                biased;
                reason = mailbox.killed() => Err(ExitReason::Killed(reason)),
                result = instance.handle_call(&msg) => result,
            };
            if let Some(lease) = lease {
                instance.rest(lease);
            }
            result
        };
        match result {
            Ok(reply) => {
                self.give_back(None);
                Ok(reply)
            }
            Err(reason) => {
                let error = reason.to_call_error();
                self.give_back(Some(reason));
                Err(error)
            }
        }
    }

    fn give_back(&mut self, died: Option<ExitReason>) {
        let Some(instance) = self.instance.take() else {
            return;
        };
        let for_the_child = died.is_some() || instance.stop_requested();
        let seat = Seat { instance, died };
        if self.cell.mailbox.give_back(seat, for_the_child) {
            self.cell.control.push(Control::Returned);
        }
    }
}

impl Drop for Loan {
    /// Only a call dropped mid-way (no runtime to finish it on, or a panic)
    /// gets here with the instance: the guest was cut off, so it is done.
    fn drop(&mut self) {
        self.give_back(Some(ExitReason::Killed(
            "its call was dropped before it finished".into(),
        )));
    }
}
