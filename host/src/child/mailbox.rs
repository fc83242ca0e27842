//! A child's mailbox: calls, casts and notifications in arrival order, with a
//! bound on what callers may queue. A `VecDeque` behind a mutex and one
//! waker, the child's task's, held inline in the child's address: an idle
//! child's mailbox costs a few words and no allocation.
//!
//! A hibernated child has no task. Its mailbox holds a [`Sleeper`] instead,
//! and the first message (or supervision signal) that arrives takes it and
//! wakes it; the check and the hand-over happen under the mailbox's lock, so
//! a message can never arrive unseen between a child's last look and its
//! going to sleep.

use crate::wasm::{Info, ReplyTx};
use futures_util::task::AtomicWaker;
use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use std::task::Poll;
use std::time::Instant;
use tracing::Span;

/// One entry of a mailbox.
pub(crate) enum Envelope {
    /// A request; the reply goes to `reply`. `sent`: when it was queued;
    /// `parent`: the sender's span, when traced.
    Call {
        msg: Vec<u8>,
        reply: ReplyTx,
        sent: Instant,
        parent: Span,
    },
    /// A message without a reply.
    Cast {
        msg: Vec<u8>,
        sent: Instant,
        parent: Span,
    },
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

/// What a hibernated child leaves in its mailbox: whatever brings its task
/// back. Woken at most once, outside the mailbox's lock.
pub(crate) trait Sleeper: Send {
    fn wake(self: Box<Self>);
}

pub(crate) struct Mailbox {
    state: Mutex<QueueState>,
    /// The child's task, when it waits for a message.
    waker: AtomicWaker,
    /// The most callers may queue.
    bound: u32,
}

struct QueueState {
    items: VecDeque<Envelope>,
    /// The child is gone: nothing is queued any more.
    closed: bool,
    /// Set while the child hibernates.
    sleeper: Option<Box<dyn Sleeper>>,
}

impl Mailbox {
    /// A mailbox for at most `bound` messages from callers.
    pub(crate) fn new(bound: u32) -> Mailbox {
        Mailbox {
            state: Mutex::new(QueueState {
                items: VecDeque::new(),
                closed: false,
                sleeper: None,
            }),
            waker: AtomicWaker::new(),
            bound,
        }
    }

    fn lock(&self) -> MutexGuard<'_, QueueState> {
        // Nothing panics while holding the lock; a poisoned lock still
        // holds a consistent queue.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `envelope` if the mailbox is open and holds fewer than
    /// `bound`, and wakes the child (its task, or the child itself when it
    /// hibernates).
    fn push(&self, envelope: Envelope, bound: usize) -> Result<(), Refused> {
        let sleeper = {
            let mut state = self.lock();
            if state.closed {
                return Err(Refused::Closed);
            }
            if state.items.len() >= bound {
                return Err(Refused::Full);
            }
            state.items.push_back(envelope);
            state.sleeper.take()
        };
        match sleeper {
            Some(sleeper) => sleeper.wake(),
            None => self.waker.wake(),
        }
        Ok(())
    }

    /// Queues a caller's message unless the mailbox is full or closed.
    pub(crate) fn try_send(&self, envelope: Envelope) -> Result<(), Refused> {
        self.push(envelope, self.bound as usize)
    }

    /// Queues a runtime notification: never refused for a full mailbox.
    /// The bound is there to push back on callers, and a notification has
    /// no caller to push back on.
    pub(crate) fn send_notification(&self, envelope: Envelope) {
        let _ = self.push(envelope, usize::MAX);
    }

    /// Wakes the child if it hibernates (a supervision signal came); its
    /// task, if it runs, is woken by the signal itself.
    pub(crate) fn rouse(&self) {
        let sleeper = self.lock().sleeper.take();
        if let Some(sleeper) = sleeper {
            sleeper.wake();
        }
    }

    /// Leaves `sleeper` in the mailbox if nothing is queued and `idle` (read
    /// under the mailbox's lock) still says so; otherwise hands it back.
    /// From then on the next message or [`Mailbox::rouse`] wakes it.
    pub(crate) fn sleep<S: Sleeper + 'static>(
        &self,
        sleeper: Box<S>,
        idle: impl FnOnce() -> bool,
    ) -> Result<(), Box<S>> {
        let mut state = self.lock();
        if state.closed || !state.items.is_empty() || !idle() {
            return Err(sleeper);
        }
        state.sleeper = Some(sleeper);
        Ok(())
    }

    /// Whether the child hibernates (its sleeper waits here).
    #[cfg(test)]
    pub(crate) fn is_asleep(&self) -> bool {
        self.lock().sleeper.is_some()
    }

    /// Whether the mailbox was closed for good.
    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Closes the mailbox if, and only if, the child sleeps in it now (one
    /// lock, so that no message can wake it in between): its sleeper is
    /// dropped and nothing is queued. Whether it did.
    pub(crate) fn close_if_asleep(&self) -> bool {
        let sleeper = {
            let mut state = self.lock();
            if state.sleeper.is_none() {
                return false;
            }
            state.closed = true;
            state.sleeper.take()
        };
        drop(sleeper);
        true
    }

    /// Closes the mailbox for good: what was queued is returned (callers
    /// hear that the child is gone when it is dropped), later messages are
    /// refused, and a waiting sleeper is dropped.
    pub(crate) fn close(&self) -> (VecDeque<Envelope>, Option<Box<dyn Sleeper>>) {
        let taken = {
            let mut state = self.lock();
            state.closed = true;
            (std::mem::take(&mut state.items), state.sleeper.take())
        };
        self.waker.wake();
        taken
    }

    /// Removes a `down` for monitor `reference` of incarnation `generation`
    /// that waits in the mailbox (a demonitor's flush); whether there was
    /// one.
    pub(crate) fn remove_down(&self, generation: u64, reference: u64) -> bool {
        let mut state = self.lock();
        let before = state.items.len();
        state.items.retain(|e| {
            !matches!(e, Envelope::Info { generation: g, info: Info::Down { reference: r, .. } }
                if *g == generation && *r == reference)
        });
        state.items.len() != before
    }

    /// Messages waiting.
    pub(crate) fn queued(&self) -> usize {
        self.lock().items.len()
    }

    /// Whether no message waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.lock().items.is_empty()
    }

    /// The next message, or `None` once the mailbox is closed and empty.
    /// Only the child's task receives.
    pub(crate) async fn recv(&self) -> Option<Envelope> {
        std::future::poll_fn(|cx| {
            let ready = |state: &mut QueueState| match state.items.pop_front() {
                Some(envelope) => Some(Some(envelope)),
                None if state.closed => Some(None),
                None => None,
            };
            if let Some(next) = ready(&mut self.lock()) {
                return Poll::Ready(next);
            }
            // Register before looking again, so that a push between the two
            // looks wakes this task.
            self.waker.register(cx.waker());
            match ready(&mut self.lock()) {
                Some(next) => Poll::Ready(next),
                None => Poll::Pending,
            }
        })
        .await
    }

    /// The next message if one is waiting.
    pub(crate) fn try_recv(&self) -> Option<Envelope> {
        self.lock().items.pop_front()
    }

    /// Takes the first queued call out (other messages stay in order).
    pub(crate) fn take_first_call(&self) -> Option<ReplyTx> {
        let mut state = self.lock();
        let i = state
            .items
            .iter()
            .position(|e| matches!(e, Envelope::Call { .. }))?;
        match state.items.remove(i) {
            Some(Envelope::Call { reply, .. }) => Some(reply),
            _ => None,
        }
    }

    /// Takes every queued call out (other messages stay in order).
    pub(crate) fn take_calls(&self) -> Vec<ReplyTx> {
        let mut state = self.lock();
        let mut calls = Vec::new();
        let mut kept = VecDeque::with_capacity(state.items.len());
        for envelope in state.items.drain(..) {
            match envelope {
                Envelope::Call { reply, .. } => calls.push(reply),
                other => kept.push_back(other),
            }
        }
        state.items = kept;
        calls
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn cast(n: u8) -> Envelope {
        Envelope::Cast {
            msg: vec![n],
            sent: Instant::now(),
            parent: Span::none(),
        }
    }

    fn take(e: Option<Envelope>) -> u8 {
        match e {
            Some(Envelope::Cast { msg, .. }) => msg[0],
            _ => panic!("not a cast"),
        }
    }

    struct Counter(Arc<AtomicUsize>);

    impl Sleeper for Counter {
        fn wake(self: Box<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn it_refuses_past_the_bound_and_keeps_order() {
        let mailbox = Mailbox::new(2);
        assert!(mailbox.try_send(cast(1)).is_ok());
        assert!(mailbox.try_send(cast(2)).is_ok());
        assert!(matches!(mailbox.try_send(cast(3)), Err(Refused::Full)));
        assert_eq!(mailbox.queued(), 2);
        assert_eq!(take(mailbox.recv().await), 1);
        assert!(mailbox.try_send(cast(4)).is_ok(), "room after a take");
        assert_eq!(take(mailbox.recv().await), 2);
        assert_eq!(take(mailbox.recv().await), 4);
        assert_eq!(mailbox.queued(), 0);
    }

    #[tokio::test]
    async fn notifications_are_never_refused() {
        let mailbox = Mailbox::new(1);
        assert!(mailbox.try_send(cast(1)).is_ok());
        mailbox.send_notification(cast(2));
        assert_eq!(take(mailbox.recv().await), 1);
        assert_eq!(take(mailbox.recv().await), 2);
    }

    #[tokio::test]
    async fn a_closed_mailbox_refuses_and_hands_back_what_was_queued() {
        let mailbox = Mailbox::new(4);
        let (reply, answer) = tokio::sync::oneshot::channel();
        assert!(
            mailbox
                .try_send(Envelope::Call {
                    msg: vec![],
                    reply,
                    sent: Instant::now(),
                    parent: Span::none(),
                })
                .is_ok()
        );
        let (queued, _) = mailbox.close();
        drop(queued);
        assert!(answer.await.is_err(), "the queued caller hears");
        assert!(matches!(mailbox.try_send(cast(0)), Err(Refused::Closed)));
        assert!(mailbox.recv().await.is_none());
    }

    #[test]
    fn a_sleeper_is_woken_once_by_the_next_message_or_signal() {
        let woken = Arc::new(AtomicUsize::new(0));
        let mailbox = Mailbox::new(4);
        let sleeper = Box::new(Counter(woken.clone()));
        assert!(mailbox.sleep(sleeper, || true).is_ok());
        assert!(mailbox.is_asleep());
        mailbox.send_notification(cast(1));
        mailbox.send_notification(cast(2));
        assert_eq!(woken.load(Ordering::SeqCst), 1, "woken once");
        assert!(!mailbox.is_asleep());

        // Not while something is queued, nor while `idle` says no.
        let sleeper = Box::new(Counter(woken.clone()));
        let sleeper = mailbox.sleep(sleeper, || true).expect_err("refused");
        assert_eq!(take(mailbox.try_recv()), 1);
        assert_eq!(take(mailbox.try_recv()), 2);
        let sleeper = mailbox.sleep(sleeper, || false).expect_err("refused");
        assert!(mailbox.sleep(sleeper, || true).is_ok());
        mailbox.rouse();
        assert_eq!(woken.load(Ordering::SeqCst), 2);
        mailbox.rouse();
        assert_eq!(woken.load(Ordering::SeqCst), 2, "nothing to wake");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_waiting_receiver_wakes_for_every_message() {
        let mailbox = Arc::new(Mailbox::new(1_000));
        let reader = tokio::spawn({
            let mailbox = mailbox.clone();
            async move {
                let mut got = Vec::new();
                while let Some(e) = mailbox.recv().await {
                    got.push(take(Some(e)));
                }
                got
            }
        });
        for i in 0..200u8 {
            while mailbox.try_send(cast(i)).is_err() {
                tokio::task::yield_now().await;
            }
            if i % 7 == 0 {
                tokio::task::yield_now().await;
            }
        }
        // Closed once everything was taken.
        while mailbox.queued() > 0 {
            tokio::task::yield_now().await;
        }
        mailbox.close();
        let got = reader.await.unwrap();
        assert_eq!(got, (0..200).collect::<Vec<u8>>());
    }
}
