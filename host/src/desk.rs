//! Where an idle child leaves its instance for callers to run a call on it
//! themselves (`direct.rs`), and how the child gets it back.
//!
//! The desk sits beside the mailbox's queue, under the same lock: a caller
//! takes the instance only while nothing is queued, so a call run this way
//! never overtakes a message sent before it, and whatever comes meanwhile is
//! queued behind it. Generic over what it holds so that the state machine
//! is tested without wasm.

use std::task::Waker;

/// Where the instance is.
#[derive(Default)]
pub(crate) enum Desk<I> {
    /// With the child's task, which is running it or about to.
    #[default]
    Child,
    /// Left by the idle child: a caller may take it.
    Parked(I),
    /// A caller runs a call on it.
    Lent {
        /// The child woke meanwhile and waits for it.
        child_waits: bool,
        /// A kill the child received meanwhile, for the caller to act on.
        kill: Option<String>,
        /// The caller's task, woken for a kill.
        lender: Option<Waker>,
    },
    /// Given back for the child only: it died in the call, a guest asked to
    /// stop, or the child waits for it.
    Back(I),
    /// The child's task is gone (it ended, or its runtime dropped it): an
    /// instance is never parked or lent again, and one given back is
    /// dropped. An instance left here would hold its host alive through
    /// the registry that holds this desk.
    Closed,
}

/// What a caller's give-back asks of the child.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum GivenBack {
    /// Nothing: parked again for the next caller.
    Parked,
    /// The child waits for the instance: wake it.
    WakeTheChild,
    /// The child sleeps and must act on the instance: tell it.
    TellTheChild,
}

/// What the child found when it came for its instance.
pub(crate) enum Reclaim<I> {
    /// It is the child's again.
    Ready(I),
    /// A caller has it; the child is woken when it comes back.
    Wait,
    /// The child already had it.
    Held,
}

impl<I> Desk<I> {
    /// The idle child leaves the instance, unless messages are `queued`
    /// (then it is handed back: the child has work).
    pub(crate) fn park(&mut self, instance: I, queued: bool) -> Result<(), I> {
        if queued || !matches!(self, Desk::Child) {
            return Err(instance);
        }
        *self = Desk::Parked(instance);
        Ok(())
    }

    /// A caller takes the parked instance, if nothing is `queued`.
    pub(crate) fn lend(&mut self, queued: bool) -> Option<I> {
        if queued || !matches!(self, Desk::Parked(_)) {
            return None;
        }
        let lent = Desk::Lent {
            child_waits: false,
            kill: None,
            lender: None,
        };
        match std::mem::replace(self, lent) {
            Desk::Parked(instance) => Some(instance),
            _ => unreachable!("matched as parked above"),
        }
    }

    /// The caller gives the instance back. Parked again for the next caller
    /// when it is fine and the child does not wait; otherwise for the child.
    /// Handed back to be dropped when the child is gone.
    pub(crate) fn give_back(&mut self, instance: I, for_the_child: bool) -> Result<GivenBack, I> {
        let waits = match self {
            Desk::Lent { child_waits, .. } => *child_waits,
            Desk::Closed => return Err(instance),
            // Only a lender gives back, and only once.
            _ => true,
        };
        Ok(if waits {
            *self = Desk::Back(instance);
            GivenBack::WakeTheChild
        } else if for_the_child {
            *self = Desk::Back(instance);
            GivenBack::TellTheChild
        } else {
            *self = Desk::Parked(instance);
            GivenBack::Parked
        })
    }

    /// The child's task is gone: returns the instance left here, if any, for
    /// the caller to drop outside the lock.
    pub(crate) fn close(&mut self) -> Option<I> {
        match std::mem::replace(self, Desk::Closed) {
            Desk::Parked(instance) | Desk::Back(instance) => Some(instance),
            _ => None,
        }
    }

    /// The child took a message: the parked instance is no longer lent to
    /// callers, who would otherwise overtake that message in the moment
    /// before the child takes the instance back.
    pub(crate) fn claim(&mut self) {
        *self = match std::mem::take(self) {
            Desk::Parked(instance) => Desk::Back(instance),
            other => other,
        };
    }

    /// The child comes for its instance (it woke for a message or signal).
    pub(crate) fn reclaim(&mut self) -> Reclaim<I> {
        match std::mem::take(self) {
            Desk::Parked(instance) | Desk::Back(instance) => Reclaim::Ready(instance),
            Desk::Lent {
                kill, lender: l, ..
            } => {
                *self = Desk::Lent {
                    child_waits: true,
                    kill,
                    lender: l,
                };
                Reclaim::Wait
            }
            Desk::Child => Reclaim::Held,
            Desk::Closed => {
                *self = Desk::Closed;
                Reclaim::Held
            }
        }
    }

    /// The child received a kill: the caller running a call is told to
    /// stop it. Returns the caller's task to wake.
    pub(crate) fn kill(&mut self, reason: &str) -> Option<Waker> {
        match self {
            Desk::Lent { kill, lender, .. } => {
                kill.get_or_insert_with(|| reason.to_string());
                lender.take()
            }
            _ => None,
        }
    }

    /// The caller looks for a kill; `waker` is woken when one comes.
    pub(crate) fn killed(&mut self, waker: &Waker) -> Option<String> {
        match self {
            Desk::Lent {
                kill: Some(reason), ..
            } => Some(reason.clone()),
            Desk::Lent { lender, .. } => {
                match lender {
                    Some(l) if l.will_wake(waker) => {}
                    _ => *lender = Some(waker.clone()),
                }
                None
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parked_instance_is_lent_only_while_nothing_is_queued() {
        let mut desk = Desk::default();
        assert_eq!(
            desk.park(1, true),
            Err(1),
            "queued work: the child keeps it"
        );
        assert!(desk.park(1, false).is_ok());
        assert!(desk.lend(true).is_none(), "a queued message goes first");
        assert_eq!(desk.lend(false), Some(1));
        assert!(desk.lend(false).is_none(), "one caller at a time");
        assert_eq!(
            desk.give_back(1, false).unwrap(),
            GivenBack::Parked,
            "parked again, nobody to wake"
        );
        assert_eq!(desk.lend(false), Some(1));
    }

    #[test]
    fn a_message_taken_by_the_child_closes_the_desk() {
        let mut desk = Desk::default();
        desk.claim();
        assert!(matches!(desk, Desk::Child), "nothing parked: no change");
        desk.park(2, false).unwrap();
        desk.claim();
        assert!(desk.lend(false).is_none(), "claimed: no caller gets it");
        assert!(matches!(desk.reclaim(), Reclaim::Ready(2)));
    }

    #[test]
    fn a_child_that_woke_meanwhile_waits_and_is_woken() {
        let mut desk = Desk::default();
        desk.park(7, false).unwrap();
        assert_eq!(desk.lend(false), Some(7));
        assert!(matches!(desk.reclaim(), Reclaim::Wait));
        assert!(matches!(desk.reclaim(), Reclaim::Wait), "still lent");
        assert_eq!(
            desk.give_back(7, false).unwrap(),
            GivenBack::WakeTheChild,
            "wake the waiting child"
        );
        assert!(
            desk.lend(false).is_none(),
            "back for the child, not lendable"
        );
        assert!(matches!(desk.reclaim(), Reclaim::Ready(7)));
        assert!(matches!(desk.reclaim(), Reclaim::Held));
    }

    #[test]
    fn an_instance_that_needs_the_child_is_kept_for_it() {
        let mut desk = Desk::default();
        desk.park(3, false).unwrap();
        desk.lend(false).unwrap();
        assert_eq!(
            desk.give_back(3, true).unwrap(),
            GivenBack::TellTheChild,
            "tell the sleeping child"
        );
        assert!(desk.lend(false).is_none());
        assert!(matches!(desk.reclaim(), Reclaim::Ready(3)));
    }

    #[test]
    fn a_kill_reaches_the_caller_once_it_looks() {
        let waker = std::task::Waker::noop();
        let mut desk = Desk::default();
        assert!(desk.kill("early").is_none(), "nothing lent: the child acts");
        desk.park(5, false).unwrap();
        desk.lend(false).unwrap();
        assert_eq!(desk.killed(waker), None);
        assert!(desk.kill("stop").is_some(), "the lender's task is woken");
        assert!(desk.kill("again").is_none(), "the first reason stands");
        assert_eq!(desk.killed(waker).as_deref(), Some("stop"));
        assert_eq!(desk.give_back(5, true), Ok(GivenBack::TellTheChild));
    }

    #[test]
    fn a_closed_desk_hands_out_nothing_and_drops_what_comes_back() {
        let mut desk = Desk::default();
        desk.park(4, false).unwrap();
        assert_eq!(desk.close(), Some(4), "the parked instance, to drop");
        assert!(desk.park(4, false).is_err());
        assert!(desk.lend(false).is_none());
        assert!(matches!(desk.reclaim(), Reclaim::Held));
        assert!(desk.lend(false).is_none(), "still closed");

        let mut desk = Desk::default();
        desk.park(6, false).unwrap();
        desk.lend(false).unwrap();
        assert_eq!(desk.close(), None, "lent: the caller has it");
        assert_eq!(desk.give_back(6, false), Err(6), "given back to be dropped");
        assert_eq!(desk.close(), None);
    }
}
