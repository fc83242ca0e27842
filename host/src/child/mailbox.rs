//! A child's mailbox: calls, casts and notifications in arrival order, with a
//! bound on what callers may queue. A `VecDeque` behind a mutex and one
//! waker, the child's task's: an idle child's mailbox costs a few words.

use crate::wasm::{Info, ReplyTx};
use futures_util::task::AtomicWaker;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;

/// One entry of a mailbox.
pub(crate) enum Envelope {
    /// A request; the reply goes to `reply`.
    Call { msg: Vec<u8>, reply: ReplyTx },
    /// A message without a reply.
    Cast { msg: Vec<u8> },
    /// A runtime notification for incarnation `generation` only: timers,
    /// monitors, subscriptions and requests end with the incarnation that
    /// made them, so a notification for an earlier one is dropped.
    Info { generation: u64, info: Info },
}

/// Why a message was not queued (it is dropped).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    Full,
    Closed,
}

/// The queue, shared by its one sender and its one receiver.
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
    queue: Arc<Queue>,
    /// The most callers may queue.
    bound: usize,
}

/// The receiving side, held by the child's task.
pub(crate) struct Receiver {
    queue: Arc<Queue>,
}

/// A mailbox for at most `bound` messages from callers.
pub(crate) fn mailbox(bound: usize) -> (Sender, Receiver) {
    let queue = Arc::new(Queue::default());
    (
        Sender {
            queue: queue.clone(),
            bound,
        },
        Receiver { queue },
    )
}

impl Sender {
    /// Queues a caller's message unless the mailbox is full or gone.
    pub(crate) fn try_send(&self, envelope: Envelope) -> Result<(), Refused> {
        self.queue.push(envelope, self.bound)
    }

    /// Queues a runtime notification: never refused for a full mailbox.
    /// The bound is there to push back on callers, and a notification has
    /// no caller to push back on.
    pub(crate) fn send_notification(&self, envelope: Envelope) {
        let _ = self.queue.push(envelope, usize::MAX);
    }

    /// Removes a `down` for monitor `reference` of incarnation `generation`
    /// that waits in the mailbox (a demonitor's flush); whether there was
    /// one.
    pub(crate) fn remove_down(&self, generation: u64, reference: u64) -> bool {
        let mut state = self.queue.lock();
        let before = state.items.len();
        state.items.retain(|e| {
            !matches!(e, Envelope::Info { generation: g, info: Info::Down { reference: r, .. } }
                if *g == generation && *r == reference)
        });
        state.items.len() != before
    }

    /// Messages waiting.
    pub(crate) fn queued(&self) -> usize {
        self.queue.lock().items.len()
    }
}

impl Receiver {
    /// The next message, or `None` once the sender is gone and nothing is
    /// queued.
    pub(crate) async fn recv(&mut self) -> Option<Envelope> {
        let queue = &self.queue;
        std::future::poll_fn(|cx| {
            let ready = |state: &mut QueueState| match state.items.pop_front() {
                Some(envelope) => Some(Some(envelope)),
                None if state.closed => Some(None),
                None => None,
            };
            if let Some(next) = ready(&mut queue.lock()) {
                return Poll::Ready(next);
            }
            // Register before looking again, so that a push between the two
            // looks wakes this task.
            queue.waker.register(cx.waker());
            match ready(&mut queue.lock()) {
                Some(next) => Poll::Ready(next),
                None => Poll::Pending,
            }
        })
        .await
    }

    /// The next message if one is waiting.
    #[cfg(test)]
    pub(crate) fn try_recv(&mut self) -> Option<Envelope> {
        self.queue.lock().items.pop_front()
    }
}

impl Drop for Sender {
    /// The child's task sees the end once it took what is queued.
    fn drop(&mut self) {
        self.queue.lock().closed = true;
        self.queue.waker.wake();
    }
}

impl Drop for Receiver {
    /// What is still queued is dropped, outside the lock: a queued call's
    /// caller then hears that the child is gone.
    fn drop(&mut self) {
        drop(self.queue.close());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    async fn it_refuses_past_the_bound_and_keeps_order() {
        let (tx, mut rx) = mailbox(2);
        assert!(tx.try_send(cast(1)).is_ok());
        assert!(tx.try_send(cast(2)).is_ok());
        assert!(matches!(tx.try_send(cast(3)), Err(Refused::Full)));
        assert_eq!(tx.queued(), 2);
        assert_eq!(take(rx.recv().await), 1);
        assert!(tx.try_send(cast(4)).is_ok(), "room after a take");
        assert_eq!(take(rx.recv().await), 2);
        assert_eq!(take(rx.recv().await), 4);
        assert_eq!(tx.queued(), 0);
    }

    #[tokio::test]
    async fn notifications_are_never_refused() {
        let (tx, mut rx) = mailbox(1);
        assert!(tx.try_send(cast(1)).is_ok());
        tx.send_notification(cast(2));
        assert_eq!(take(rx.recv().await), 1);
        assert_eq!(take(rx.recv().await), 2);
    }

    #[tokio::test]
    async fn the_end_comes_after_what_is_queued() {
        let (tx, mut rx) = mailbox(4);
        assert!(tx.try_send(cast(1)).is_ok());
        drop(tx);
        assert_eq!(take(rx.recv().await), 1);
        assert!(rx.recv().await.is_none());
    }

    #[tokio::test]
    async fn a_dropped_receiver_refuses_and_drops_what_was_queued() {
        let (tx, rx) = mailbox(4);
        let (reply, answer) = tokio::sync::oneshot::channel();
        assert!(tx.try_send(Envelope::Call { msg: vec![], reply }).is_ok());
        drop(rx);
        assert!(answer.await.is_err(), "the queued caller hears");
        assert!(matches!(tx.try_send(cast(0)), Err(Refused::Closed)));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_waiting_receiver_wakes_for_every_message() {
        let (tx, mut rx) = mailbox(1_000);
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
        assert_eq!(got, (0..200).collect::<Vec<u8>>());
    }
}
