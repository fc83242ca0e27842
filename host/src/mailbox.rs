//! A child's mailbox: calls, casts and notifications in arrival order, with a
//! bound on what callers may queue.
//!
//! The default is a `VecDeque` behind a mutex with one waker for the
//! child's task: an idle child's mailbox then costs about 100 bytes, where
//! a tokio channel allocates a 32-message block and a cache-padded channel
//! up front (3.5 KiB per child, measured with heaptrack). The tokio channels
//! stay as alternatives; `wasmvisor bench --ab mailbox=counted` and
//! `--ab mailbox=bounded` compare them (BENCHMARKS.md has the figures).

use crate::address::Envelope;
use crate::desk::{Desk, GivenBack, Reclaim};
use crate::direct::Seat;
use crate::instance::Instance;
use futures_util::task::AtomicWaker;
use serde::Deserialize;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;
use tokio::sync::mpsc;

/// How mailboxes are built (a benchmark setting; not a config file key).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MailboxImpl {
    /// A `VecDeque` behind a mutex, and a waker.
    #[default]
    Deque,
    /// An unbounded tokio channel plus an atomic length that enforces the
    /// bound.
    Counted,
    /// A bounded tokio channel (a semaphore permit per message).
    Bounded,
    /// An unbounded channel that counts but never refuses: what the bound
    /// itself costs, for measurement only.
    Unbounded,
}

/// Why a message was not queued (it is dropped).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    Full,
    Closed,
}

enum Tx {
    Deque(Arc<Queue>),
    Bounded(mpsc::Sender<Envelope>),
    /// `len`: messages queued and not yet taken.
    Counted(mpsc::UnboundedSender<Envelope>, Arc<AtomicUsize>),
}

enum Rx {
    Deque(Arc<Queue>),
    Bounded(mpsc::Receiver<Envelope>),
    Counted(mpsc::UnboundedReceiver<Envelope>, Arc<AtomicUsize>),
}

/// The deque mailbox, shared by its one sender and its one receiver.
#[derive(Default)]
struct Queue {
    state: Mutex<QueueState>,
    /// The child's task, when it waits for a message.
    waker: AtomicWaker,
}

#[derive(Default)]
struct QueueState {
    items: VecDeque<Envelope>,
    /// The sender or the receiver is gone.
    closed: bool,
    /// The idle child's instance, for callers (`direct.rs`).
    desk: Desk<Seat>,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        // Nothing panics while holding the lock; a poisoned lock still
        // holds a consistent queue.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `envelope` if the queue is open and holds fewer than `bound`.
    fn push(&self, envelope: Envelope, bound: usize) -> Result<(), Refused> {
        {
            let mut state = self.lock();
            if state.closed {
                return Err(Refused::Closed);
            }
            if state.items.len() >= bound {
                return Err(Refused::Full);
            }
            state.items.push_back(envelope);
        }
        self.waker.wake();
        Ok(())
    }

    fn close(&self) -> VecDeque<Envelope> {
        let mut state = self.lock();
        state.closed = true;
        std::mem::take(&mut state.items)
    }
}

/// The sending side, held by the child's address.
pub(crate) struct Sender {
    tx: Tx,
    /// The most callers may queue; `usize::MAX` when unbounded.
    bound: usize,
}

/// The receiving side, held by the child's task.
pub(crate) struct Receiver {
    rx: Rx,
}

/// A mailbox for at most `bound` messages from callers.
pub(crate) fn mailbox(kind: MailboxImpl, bound: usize) -> (Sender, Receiver) {
    let (tx, rx, bound) = match kind {
        MailboxImpl::Deque => {
            let queue = Arc::new(Queue::default());
            (Tx::Deque(queue.clone()), Rx::Deque(queue), bound)
        }
        MailboxImpl::Bounded => {
            let (tx, rx) = mpsc::channel(bound.max(1));
            (Tx::Bounded(tx), Rx::Bounded(rx), bound)
        }
        MailboxImpl::Counted | MailboxImpl::Unbounded => {
            let (tx, rx) = mpsc::unbounded_channel();
            let len = Arc::new(AtomicUsize::new(0));
            let bound = if kind == MailboxImpl::Counted {
                bound
            } else {
                usize::MAX
            };
            (Tx::Counted(tx, len.clone()), Rx::Counted(rx, len), bound)
        }
    };
    (Sender { tx, bound }, Receiver { rx })
}

impl Sender {
    /// Queues a caller's message unless the mailbox is full or gone.
    pub(crate) fn try_send(&self, envelope: Envelope) -> Result<(), Refused> {
        match &self.tx {
            Tx::Deque(queue) => queue.push(envelope, self.bound),
            Tx::Bounded(tx) => tx.try_send(envelope).map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => Refused::Full,
                mpsc::error::TrySendError::Closed(_) => Refused::Closed,
            }),
            Tx::Counted(tx, len) => {
                // Reserve a place first, so that concurrent senders can never
                // overshoot the bound together.
                if len.fetch_add(1, Ordering::AcqRel) >= self.bound {
                    len.fetch_sub(1, Ordering::AcqRel);
                    return Err(Refused::Full);
                }
                tx.send(envelope).map_err(|_| {
                    len.fetch_sub(1, Ordering::AcqRel);
                    Refused::Closed
                })
            }
        }
    }

    /// Queues a runtime notification: never refused for a full mailbox.
    /// Over the bound it waits for room (bounded channel) or goes past the
    /// bound (counted): the bound is there to push back on callers, and a
    /// notification has no caller to push back on.
    pub(crate) fn send_notification(&self, envelope: Envelope) {
        match &self.tx {
            Tx::Deque(queue) => {
                let _ = queue.push(envelope, usize::MAX);
            }
            Tx::Bounded(tx) => match tx.try_send(envelope) {
                Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
                Err(mpsc::error::TrySendError::Full(envelope)) => {
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        let _ = tx.send(envelope).await;
                    });
                }
            },
            Tx::Counted(tx, len) => {
                len.fetch_add(1, Ordering::AcqRel);
                if tx.send(envelope).is_err() {
                    len.fetch_sub(1, Ordering::AcqRel);
                }
            }
        }
    }

    /// Takes the idle child's instance for a call run on the caller's task
    /// (`direct.rs`): only if the child parked it, nothing is queued and the
    /// mailbox is a deque.
    pub(crate) fn lend(&self) -> Option<Box<Instance>> {
        let Tx::Deque(queue) = &self.tx else {
            return None;
        };
        let mut state = queue.lock();
        let queued = !state.items.is_empty() || state.closed;
        state.desk.lend(queued).map(|seat| seat.instance)
    }

    /// Gives a lent instance back. Wakes the child if it waits for it;
    /// `true` when the child sleeps and must be told (`for_the_child`).
    pub(crate) fn give_back(&self, seat: Seat, for_the_child: bool) -> bool {
        let Tx::Deque(queue) = &self.tx else {
            return false;
        };
        let given = queue.lock().desk.give_back(seat, for_the_child);
        match given {
            Ok(GivenBack::WakeTheChild) => {
                queue.waker.wake();
                false
            }
            Ok(GivenBack::TellTheChild) => true,
            Ok(GivenBack::Parked) => false,
            // The child is gone; dropped here, outside the lock.
            Err(seat) => {
                drop(seat);
                false
            }
        }
    }

    /// Resolves with the reason once the child received a kill for the
    /// instance lent out; never for other mailboxes.
    pub(crate) async fn killed(&self) -> String {
        std::future::poll_fn(|cx| match &self.tx {
            Tx::Deque(queue) => match queue.lock().desk.killed(cx.waker()) {
                Some(reason) => Poll::Ready(reason),
                None => Poll::Pending,
            },
            _ => Poll::Pending,
        })
        .await
    }

    /// Messages waiting.
    pub(crate) fn queued(&self) -> usize {
        match &self.tx {
            Tx::Deque(queue) => queue.lock().items.len(),
            Tx::Bounded(tx) => tx.max_capacity() - tx.capacity(),
            Tx::Counted(_, len) => len.load(Ordering::Acquire),
        }
    }
}

impl Receiver {
    /// The next message, or `None` once every sender is gone.
    pub(crate) async fn recv(&mut self) -> Option<Envelope> {
        match &mut self.rx {
            Rx::Deque(queue) => {
                std::future::poll_fn(|cx| {
                    let ready = |state: &mut QueueState| {
                        let next = match state.items.pop_front() {
                            Some(envelope) => Some(Some(envelope)),
                            None if state.closed => Some(None),
                            None => None,
                        };
                        // Under the same lock as the take: a caller that
                        // finds the queue empty now must not run a call
                        // before the message just taken (`desk.rs`).
                        if next.is_some() {
                            state.desk.claim();
                        }
                        next
                    };
                    if let Some(next) = ready(&mut queue.lock()) {
                        return Poll::Ready(next);
                    }
                    // Register before looking again, so that a push between
                    // the two looks wakes this task.
                    queue.waker.register(cx.waker());
                    match ready(&mut queue.lock()) {
                        Some(next) => Poll::Ready(next),
                        None => Poll::Pending,
                    }
                })
                .await
            }
            Rx::Bounded(rx) => rx.recv().await,
            Rx::Counted(rx, len) => {
                let envelope = rx.recv().await;
                if envelope.is_some() {
                    len.fetch_sub(1, Ordering::AcqRel);
                }
                envelope
            }
        }
    }

    /// Whether callers can run calls on the idle instance (a deque
    /// mailbox).
    pub(crate) fn has_desk(&self) -> bool {
        matches!(self.rx, Rx::Deque(_))
    }

    /// Leaves the idle instance for callers (`direct.rs`); handed back if
    /// messages are queued or the mailbox has no desk.
    pub(crate) fn park(&self, instance: Box<Instance>) -> Result<(), Box<Instance>> {
        let Rx::Deque(queue) = &self.rx else {
            return Err(instance);
        };
        let mut state = queue.lock();
        let queued = !state.items.is_empty();
        let seat = Seat {
            instance,
            died: None,
        };
        state.desk.park(seat, queued).map_err(|seat| seat.instance)
    }

    /// Takes the parked instance back, waiting for a caller that runs a call
    /// on it; `None` if the child holds it already. A `kill` is passed on to
    /// that caller.
    pub(crate) async fn reclaim(&self, kill: Option<&str>) -> Option<Seat> {
        let Rx::Deque(queue) = &self.rx else {
            return None;
        };
        std::future::poll_fn(|cx| {
            // Register before looking, so that a give-back between the two
            // wakes this task.
            queue.waker.register(cx.waker());
            let mut state = queue.lock();
            let lender = kill.and_then(|reason| state.desk.kill(reason));
            let reclaimed = state.desk.reclaim();
            drop(state);
            if let Some(lender) = lender {
                lender.wake();
            }
            match reclaimed {
                Reclaim::Ready(seat) => Poll::Ready(Some(seat)),
                Reclaim::Held => Poll::Ready(None),
                Reclaim::Wait => Poll::Pending,
            }
        })
        .await
    }

    /// Puts a message taken but not handled back at the front.
    pub(crate) fn put_back(&self, envelope: Envelope) {
        if let Rx::Deque(queue) = &self.rx {
            queue.lock().items.push_front(envelope);
        }
    }

    /// The next message if one is waiting.
    #[cfg(test)]
    pub(crate) fn try_recv(&mut self) -> Option<Envelope> {
        match &mut self.rx {
            Rx::Deque(queue) => queue.lock().items.pop_front(),
            Rx::Bounded(rx) => rx.try_recv().ok(),
            Rx::Counted(rx, len) => {
                let envelope = rx.try_recv().ok();
                if envelope.is_some() {
                    len.fetch_sub(1, Ordering::AcqRel);
                }
                envelope
            }
        }
    }
}

impl Drop for Sender {
    /// The child's task sees the end once it took what is queued.
    fn drop(&mut self) {
        if let Tx::Deque(queue) = &self.tx {
            queue.lock().closed = true;
            queue.waker.wake();
        }
    }
}

impl Drop for Receiver {
    /// What is still queued is dropped, outside the lock: a queued call's
    /// caller then hears that the child is gone. So is an instance the child
    /// left on the desk: a task dropped with its runtime must not leave it
    /// there, holding the host alive.
    fn drop(&mut self) {
        if let Rx::Deque(queue) = &self.rx {
            let parked = queue.lock().desk.close();
            drop(parked);
            drop(queue.close());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every implementation that enforces the bound.
    const BOUNDED: [MailboxImpl; 3] = [
        MailboxImpl::Deque,
        MailboxImpl::Counted,
        MailboxImpl::Bounded,
    ];

    fn cast(n: u8) -> Envelope {
        Envelope::Cast { msg: vec![n] }
    }

    fn take(e: Option<Envelope>) -> u8 {
        match e {
            Some(Envelope::Cast { msg }) => msg[0],
            _ => panic!("not a cast"),
        }
    }

    #[tokio::test]
    async fn every_implementation_refuses_past_the_bound_and_keeps_order() {
        for kind in BOUNDED {
            let (tx, mut rx) = mailbox(kind, 2);
            assert!(tx.try_send(cast(1)).is_ok());
            assert!(tx.try_send(cast(2)).is_ok());
            assert!(matches!(tx.try_send(cast(3)), Err(Refused::Full)));
            assert_eq!(tx.queued(), 2, "{kind:?}");
            assert_eq!(take(rx.recv().await), 1);
            assert!(tx.try_send(cast(4)).is_ok(), "{kind:?}: room after a take");
            assert_eq!(take(rx.recv().await), 2);
            assert_eq!(take(rx.recv().await), 4);
            assert_eq!(tx.queued(), 0);
        }
    }

    #[tokio::test]
    async fn notifications_are_never_refused() {
        for kind in BOUNDED {
            let (tx, mut rx) = mailbox(kind, 1);
            assert!(tx.try_send(cast(1)).is_ok());
            tx.send_notification(cast(2));
            assert_eq!(take(rx.recv().await), 1);
            assert_eq!(take(rx.recv().await), 2, "{kind:?}");
        }
    }

    #[tokio::test]
    async fn unbounded_never_refuses_and_a_dropped_receiver_closes() {
        let (tx, rx) = mailbox(MailboxImpl::Unbounded, 1);
        for i in 0..10 {
            assert!(tx.try_send(cast(i)).is_ok());
        }
        assert_eq!(tx.queued(), 10);
        drop(rx);
        assert!(matches!(tx.try_send(cast(0)), Err(Refused::Closed)));
    }

    #[tokio::test]
    async fn the_end_comes_after_what_is_queued() {
        for kind in BOUNDED {
            let (tx, mut rx) = mailbox(kind, 4);
            assert!(tx.try_send(cast(1)).is_ok());
            drop(tx);
            assert_eq!(take(rx.recv().await), 1, "{kind:?}");
            assert!(rx.recv().await.is_none(), "{kind:?}");
        }
    }

    #[tokio::test]
    async fn a_dropped_receiver_refuses_and_drops_what_was_queued() {
        for kind in BOUNDED {
            let (tx, rx) = mailbox(kind, 4);
            let (reply, answer) = tokio::sync::oneshot::channel();
            assert!(tx.try_send(Envelope::Call { msg: vec![], reply }).is_ok());
            drop(rx);
            assert!(answer.await.is_err(), "{kind:?}: the queued caller hears");
            assert!(
                matches!(tx.try_send(cast(0)), Err(Refused::Closed)),
                "{kind:?}"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_waiting_receiver_wakes_for_every_message() {
        for kind in BOUNDED {
            let (tx, mut rx) = mailbox(kind, 1_000);
            let reader = tokio::spawn(async move {
                let mut got = Vec::new();
                while let Some(e) = rx.recv().await {
                    got.push(take(Some(e)));
                }
                got
            });
            for i in 0..200u8 {
                while tx.try_send(cast(i)).is_err() {
                    tokio::task::yield_now().await;
                }
                if i % 7 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            drop(tx);
            let got = reader.await.unwrap();
            assert_eq!(got, (0..200).collect::<Vec<u8>>(), "{kind:?}");
        }
    }
}
