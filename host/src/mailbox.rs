//! A child's mailbox: calls, casts and notifications in arrival order, with a
//! bound on what callers may queue.
//!
//! The default keeps an unbounded tokio channel and enforces the bound with
//! one atomic counter. A bounded tokio channel does the same job with a
//! semaphore permit per message; `wasmvisor bench --ab mailbox=bounded`
//! compares the two (BENCHMARKS.md has the figures).

use crate::address::Envelope;
use serde::Deserialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::mpsc;

/// How mailboxes are built (a benchmark setting; not a config file key).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MailboxImpl {
    /// An unbounded channel plus an atomic length that enforces the bound.
    #[default]
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
    Bounded(mpsc::Sender<Envelope>),
    Counted(mpsc::UnboundedSender<Envelope>),
}

enum Rx {
    Bounded(mpsc::Receiver<Envelope>),
    Counted(mpsc::UnboundedReceiver<Envelope>),
}

/// The sending side, held by the child's address.
pub(crate) struct Sender {
    tx: Tx,
    /// Messages queued and not yet taken (counted mailboxes only).
    len: Arc<AtomicUsize>,
    /// The most callers may queue; `usize::MAX` when unbounded.
    bound: usize,
}

/// The receiving side, held by the child's task.
pub(crate) struct Receiver {
    rx: Rx,
    len: Arc<AtomicUsize>,
}

/// A mailbox for at most `bound` messages from callers.
pub(crate) fn mailbox(kind: MailboxImpl, bound: usize) -> (Sender, Receiver) {
    let len = Arc::new(AtomicUsize::new(0));
    let (tx, rx, bound) = match kind {
        MailboxImpl::Bounded => {
            let (tx, rx) = mpsc::channel(bound.max(1));
            (Tx::Bounded(tx), Rx::Bounded(rx), bound)
        }
        MailboxImpl::Counted | MailboxImpl::Unbounded => {
            let (tx, rx) = mpsc::unbounded_channel();
            let bound = if kind == MailboxImpl::Counted {
                bound
            } else {
                usize::MAX
            };
            (Tx::Counted(tx), Rx::Counted(rx), bound)
        }
    };
    (
        Sender {
            tx,
            len: len.clone(),
            bound,
        },
        Receiver { rx, len },
    )
}

impl Sender {
    /// Queues a caller's message unless the mailbox is full or gone.
    pub(crate) fn try_send(&self, envelope: Envelope) -> Result<(), Refused> {
        match &self.tx {
            Tx::Bounded(tx) => tx.try_send(envelope).map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => Refused::Full,
                mpsc::error::TrySendError::Closed(_) => Refused::Closed,
            }),
            Tx::Counted(tx) => {
                // Reserve a place first, so that concurrent senders can never
                // overshoot the bound together.
                if self.len.fetch_add(1, Ordering::AcqRel) >= self.bound {
                    self.len.fetch_sub(1, Ordering::AcqRel);
                    return Err(Refused::Full);
                }
                tx.send(envelope).map_err(|_| {
                    self.len.fetch_sub(1, Ordering::AcqRel);
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
            Tx::Bounded(tx) => match tx.try_send(envelope) {
                Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
                Err(mpsc::error::TrySendError::Full(envelope)) => {
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        let _ = tx.send(envelope).await;
                    });
                }
            },
            Tx::Counted(tx) => {
                self.len.fetch_add(1, Ordering::AcqRel);
                if tx.send(envelope).is_err() {
                    self.len.fetch_sub(1, Ordering::AcqRel);
                }
            }
        }
    }

    /// Messages waiting.
    pub(crate) fn queued(&self) -> usize {
        match &self.tx {
            Tx::Bounded(tx) => tx.max_capacity() - tx.capacity(),
            Tx::Counted(_) => self.len.load(Ordering::Acquire),
        }
    }
}

impl Receiver {
    /// The next message, or `None` once every sender is gone.
    pub(crate) async fn recv(&mut self) -> Option<Envelope> {
        match &mut self.rx {
            Rx::Bounded(rx) => rx.recv().await,
            Rx::Counted(rx) => {
                let envelope = rx.recv().await;
                if envelope.is_some() {
                    self.len.fetch_sub(1, Ordering::AcqRel);
                }
                envelope
            }
        }
    }

    /// The next message if one is waiting.
    #[cfg(test)]
    pub(crate) fn try_recv(&mut self) -> Option<Envelope> {
        let envelope = match &mut self.rx {
            Rx::Bounded(rx) => rx.try_recv().ok(),
            Rx::Counted(rx) => rx.try_recv().ok(),
        };
        if envelope.is_some() && matches!(self.rx, Rx::Counted(_)) {
            self.len.fetch_sub(1, Ordering::AcqRel);
        }
        envelope
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
    async fn both_implementations_refuse_past_the_bound_and_keep_order() {
        for kind in [MailboxImpl::Counted, MailboxImpl::Bounded] {
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
        for kind in [MailboxImpl::Counted, MailboxImpl::Bounded] {
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
}
