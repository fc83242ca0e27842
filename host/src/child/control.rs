//! Supervision signals for a child (stop, restart, kill, a linked child's
//! exit, reload, and a group's hold and release). They bypass the
//! mailbox, so a kill reaches a child whose mailbox is full or whose guest is
//! spinning, and they cost nothing until used: an idle child holds an empty
//! queue and no waker.

use crate::types::ExitReason;
use crate::wasm::Version;
use futures_util::task::AtomicWaker;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::sync::oneshot;

/// What an operator, a supervisor or the reloader asks of a child.
pub(crate) enum Control {
    /// Remove the child for good: with `shutdown`, after `terminate`; with
    /// `noconnection` (its node lost its cluster lease), at once, cutting
    /// short what it is doing, and without `terminate`. With `keep`, the
    /// child leaves this node but not the cluster: its record and claim
    /// stay (a lost lease, or a drain, which stores a durable state first).
    Stop {
        done: oneshot::Sender<()>,
        reason: ExitReason,
        keep: bool,
    },
    /// Run `terminate(shutdown)` and start a fresh instance with the same
    /// args; also revives a child in backoff or failed.
    Restart { done: oneshot::Sender<()> },
    /// End the instance now with `killed(reason)`; restarted per policy.
    Kill { reason: String },
    /// Linked child `from` exited with `reason` (not `normal`), while
    /// linked to this child's incarnation `generation`: that incarnation
    /// ends with `linked(from)` unless it traps exits, when the signal
    /// becomes an `exit` notification instead.
    Exit {
        from: Arc<str>,
        reason: ExitReason,
        generation: u64,
    },
    /// The plugin's file is gone: run `terminate(shutdown)` and wait for it
    /// (status `waiting`), keeping the spec.
    Suspend { done: oneshot::Sender<()> },
    /// Move to `version`, carrying state through snapshot/restore (or, for a
    /// child that is down, start on it now); the outcome goes to `done`.
    Reload {
        version: Arc<Version>,
        done: oneshot::Sender<Result<(), String>>,
    },
    /// From the child's supervision group: run `terminate(shutdown)` and stay
    /// down, showing `status`, until the group releases it.
    Hold {
        status: crate::types::Status,
        done: oneshot::Sender<()>,
    },
    /// From the child's supervision group: start now; `done` is told once
    /// the start was tried (at once if the child already runs).
    Release { done: oneshot::Sender<()> },
    /// Hibernate now (an operator, or a full pool that needs the instance):
    /// `Ok` once the child gave its instance back, or why it cannot.
    Hibernate {
        done: oneshot::Sender<Result<(), crate::types::ChildError>>,
    },
}

/// The signals queued for one child. Only the child's task waits on them,
/// so one waker is enough.
#[derive(Default)]
pub(crate) struct ControlSlot {
    pending: AtomicBool,
    /// A `Stop` with `keep` was taken: the child leaves with its record and
    /// claim kept.
    kept: AtomicBool,
    queue: Mutex<Queue>,
    waker: AtomicWaker,
}

#[derive(Default)]
struct Queue {
    signals: VecDeque<Control>,
    /// The child is gone: a signal pushed now is dropped at once, so whoever
    /// waits on its `done` hears about it instead of waiting forever.
    closed: bool,
}

impl ControlSlot {
    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn push(&self, control: Control) {
        let mut queue = self.queue();
        if queue.closed {
            return;
        }
        queue.signals.push_back(control);
        drop(queue);
        self.pending.store(true, Ordering::Release);
        self.waker.wake();
    }

    fn take(&self, pick: impl Fn(&Control) -> bool) -> Option<Control> {
        if !self.pending.load(Ordering::Acquire) {
            return None;
        }
        let mut queue = self.queue();
        let signals = &mut queue.signals;
        let found = signals
            .iter()
            .position(pick)
            .and_then(|i| signals.remove(i));
        self.pending.store(!signals.is_empty(), Ordering::Release);
        if let Some(Control::Stop { keep: true, .. }) = &found {
            self.kept.store(true, Ordering::Release);
        }
        found
    }

    /// Whether the child was stopped to leave this node only (see
    /// [`Control::Stop`]): its record and claim stay.
    pub(crate) fn kept(&self) -> bool {
        self.kept.load(Ordering::Acquire)
    }

    /// Ready with `take`'s signal once there is one; the caller's task is
    /// woken by the next push otherwise.
    fn poll<T>(&self, cx: &mut Context<'_>, take: impl Fn() -> Option<T>) -> Poll<T> {
        if let Some(found) = take() {
            return Poll::Ready(found);
        }
        // Register before looking again, so that a push between the two
        // looks wakes this task.
        self.waker.register(cx.waker());
        match take() {
            Some(found) => Poll::Ready(found),
            None => Poll::Pending,
        }
    }

    /// The next signal, in arrival order.
    pub(crate) async fn next(&self) -> Control {
        poll_fn(|cx| self.poll(cx, || self.take(|_| true))).await
    }

    /// The next signal if one is queued.
    pub(crate) fn try_next(&self) -> Option<Control> {
        self.take(|_| true)
    }

    /// Queues `control` again, first.
    pub(crate) fn put_back(&self, control: Control) {
        let mut queue = self.queue();
        if queue.closed {
            return;
        }
        queue.signals.push_front(control);
        drop(queue);
        self.pending.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Whether a signal is queued.
    pub(crate) fn is_pending(&self) -> bool {
        self.pending.load(Ordering::Acquire)
    }

    /// Resolves when a signal arrives that ends incarnation `generation`
    /// at once: a kill, or an exit signal for it that it does not trap
    /// (`trapping` is read when the signal is taken). Other signals stay
    /// queued for [`ControlSlot::next`]. Used while a guest callback runs,
    /// which only these interrupt.
    pub(crate) async fn interrupted(&self, generation: u64, trapping: &AtomicBool) -> ExitReason {
        let interrupt = || {
            let ends = |c: &Control| match c {
                // A node that lost its lease stops its children now, not
                // after what they are doing.
                Control::Kill { .. }
                | Control::Stop {
                    reason: ExitReason::NoConnection,
                    keep: true,
                    ..
                } => true,
                Control::Exit { generation: g, .. } => {
                    *g == generation && !trapping.load(Ordering::Acquire)
                }
                _ => false,
            };
            match self.take(ends)? {
                Control::Kill { reason } => Some(ExitReason::Killed(reason)),
                Control::Stop { reason, .. } => Some(reason),
                Control::Exit { from, .. } => Some(ExitReason::Linked(from.to_string())),
                _ => None,
            }
        };
        poll_fn(|cx| self.poll(cx, interrupt)).await
    }

    /// Takes everything queued and refuses what comes later (the child is
    /// going away).
    pub(crate) fn close(&self) -> Vec<Control> {
        let mut queue = self.queue();
        queue.closed = true;
        self.pending.store(false, Ordering::Release);
        queue.signals.drain(..).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn kill_overtakes_queued_signals() {
        let slot = ControlSlot::default();
        let (done, _rx) = oneshot::channel();
        slot.push(Control::Stop {
            done,
            reason: ExitReason::Shutdown,
            keep: false,
        });
        slot.push(Control::Kill {
            reason: "operator".into(),
        });
        let trapping = AtomicBool::new(false);
        assert_eq!(
            slot.interrupted(1, &trapping).await,
            ExitReason::Killed("operator".into())
        );
        assert!(matches!(slot.next().await, Control::Stop { .. }));
    }

    #[tokio::test]
    async fn a_signal_to_a_closed_slot_is_dropped_at_once() {
        let slot = ControlSlot::default();
        assert!(slot.close().is_empty());
        let (done, stopped) = oneshot::channel();
        slot.push(Control::Stop {
            done,
            reason: ExitReason::Shutdown,
            keep: false,
        });
        assert!(stopped.await.is_err());
    }

    #[tokio::test]
    async fn a_signal_sent_before_waiting_is_not_lost() {
        let slot = Arc::new(ControlSlot::default());
        slot.push(Control::Kill {
            reason: "early".into(),
        });
        let got = tokio::time::timeout(Duration::from_secs(5), slot.next()).await;
        assert!(matches!(got, Ok(Control::Kill { .. })));
    }

    #[tokio::test]
    async fn a_waiter_is_woken() {
        let slot = Arc::new(ControlSlot::default());
        let waiter = tokio::spawn({
            let slot = slot.clone();
            async move { slot.interrupted(1, &AtomicBool::new(false)).await }
        });
        tokio::task::yield_now().await;
        slot.push(Control::Kill {
            reason: "late".into(),
        });
        let got = tokio::time::timeout(Duration::from_secs(5), waiter).await;
        assert_eq!(got.unwrap().unwrap(), ExitReason::Killed("late".into()));
    }

    #[tokio::test]
    async fn an_exit_signal_interrupts_only_an_incarnation_that_does_not_trap_it() {
        let slot = ControlSlot::default();
        let exit = |generation| Control::Exit {
            from: "partner".into(),
            reason: ExitReason::Trap("boom".into()),
            generation,
        };
        slot.push(exit(1));
        slot.push(exit(2));
        let trapping = AtomicBool::new(true);
        let mut trapped = std::pin::pin!(slot.interrupted(2, &trapping));
        let first = poll_fn(|cx| Poll::Ready(trapped.as_mut().poll(cx))).await;
        assert!(first.is_pending(), "a trapped exit does not interrupt");
        trapping.store(false, Ordering::Release);
        assert_eq!(
            slot.interrupted(2, &trapping).await,
            ExitReason::Linked("partner".into())
        );
        // The signal for an earlier incarnation is left for `next`, whose
        // caller drops it.
        assert!(matches!(
            slot.next().await,
            Control::Exit { generation: 1, .. }
        ));
    }
}
