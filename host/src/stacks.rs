//! Native stacks for running instances. wasmtime runs every async callback on
//! a fiber stack from the pool, and a `Store` keeps its last stack between
//! calls, so by default the pool holds a stack per instance. With
//! `[engine] stack_per_callback` the pool holds `[pool] max_running` stacks
//! and instances share them: an instance whose mailbox runs dry keeps its
//! stack, *lent*, until a callback of another instance finds none free and
//! asks for it back. A child that holds a lent stack is woken by a control
//! signal, hands the stack back and waits again. The pool then needs a stack
//! per running instance, which frees the two memory mappings and the
//! resident page each idle instance's stack costs, and messages pay nothing
//! for it until the stacks run short: then a callback that needs one costs
//! the lender a wake-up.
//!
//! A permit is held for as long as the store may hold a stack. A callback
//! that finds all permits taken asks an idle instance (the first listed) for
//! its stack and waits for a permit. If no instance is idle, every stack is
//! held by one that runs or waits inside a call of its own (on a callee that
//! may be the very one that needs a stack now), so the callback does not
//! wait: wasmtime maps it a stack past the pool
//! (`async_stack_overflow_on_demand`, vendored), two more memory mappings
//! until its instance goes idle and hands it back. `max_running` is then the
//! number of stacks kept mapped, not a cap on guests waiting in calls.

use crate::address::Cell;
use crate::control::Control;
use crate::metrics::Metrics;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, Weak};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The permits of one host's stack pool; `None` when every instance keeps
/// its stack for life (`[engine] stack_per_callback = false`).
pub(crate) struct Stacks {
    permits: Option<Arc<Semaphore>>,
    total: u32,
    /// Instances that went idle holding a stack, in the order they were
    /// listed. An entry may have gone busy again since (its lease says); one
    /// that goes idle again keeps its place, so the first idle entry is the
    /// one listed longest ago, not always the one idle longest: listing anew
    /// at every burst would take this lock at every burst.
    lent: Mutex<VecDeque<Arc<Lease>>>,
    /// Callbacks waiting for a permit now: an instance that goes idle while
    /// one waits hands its stack back at once instead of lending it.
    waiting: AtomicUsize,
}

/// The right to hold one of the pool's stacks. Kept in the instance's store
/// data, so a store dropped mid-callback returns its stack (store teardown
/// flushes it) before this permit.
pub(crate) struct StackPermit {
    _permit: Option<OwnedSemaphorePermit>,
    /// A callback that found every stack held by a busy instance: its stack
    /// is mapped past the pool's (wasmtime's `async_stack_overflow_on_demand`)
    /// and handed back as soon as the instance is idle, never lent.
    overflow: bool,
}

impl StackPermit {
    /// Whether the stack may be lent while the instance is idle: not one
    /// mapped past the pool, which costs memory mappings while it is held.
    pub(crate) fn lendable(&self) -> bool {
        !self.overflow
    }
}

/// One child's lent stack, as the other instances see it: whether it is
/// idle (and may be asked), listed in [`Stacks::lent`], or asked to hand the
/// stack back. The three flags are one atomic so that a lender going idle and
/// a callback asking for its stack cannot miss each other.
pub(crate) struct Lease {
    flags: AtomicU8,
    cell: Weak<Cell>,
}

/// The child waits for its next message holding a stack.
const IDLE: u8 = 1;
/// The lease is in [`Stacks::lent`].
const LISTED: u8 = 2;
/// A callback asked for the stack: the child hands it back when it wakes.
const ASKED: u8 = 4;

/// More entries than this many per stack, and going idle sweeps out the
/// entries of children no longer idle, so that the list stays short without
/// pressure (children that go busy again stay listed).
const LISTED_PER_STACK: usize = 2;

/// Fewer free stacks than one in this many of the pool, and an instance
/// going idle hands its stack back instead of lending it. With fewer than
/// this many stacks in all only a waiting callback makes it do so.
const SHORT_PER_STACKS: usize = 8;

impl Lease {
    /// The lease of `cell`'s child, which is sent [`Control::ReturnStack`]
    /// when its stack is wanted.
    pub(crate) fn new(cell: &Arc<Cell>) -> Arc<Lease> {
        Arc::new(Lease {
            flags: AtomicU8::new(0),
            cell: Arc::downgrade(cell),
        })
    }

    /// The child woke (a message or a control signal): true if its stack was
    /// asked for, which it must then hand back before anything else.
    pub(crate) fn wake(&self) -> bool {
        self.flags.fetch_and(!(IDLE | ASKED), SeqCst) & ASKED != 0
    }

    /// Asks an idle lender for its stack; false if it is not idle (any more).
    /// Called with the list locked, having taken the lease off it.
    fn ask(&self) -> bool {
        let before = self.update(|flags| {
            Some(if flags & IDLE != 0 {
                flags & !(IDLE | LISTED) | ASKED
            } else {
                flags & !LISTED
            })
        });
        let (Ok(before) | Err(before)) = before;
        if before & IDLE == 0 {
            return false;
        }
        // A child that is gone holds no stack to hand back.
        let Some(cell) = self.cell.upgrade() else {
            return false;
        };
        cell.control.push(Control::ReturnStack);
        true
    }

    /// Whether a listed lease stays on the list while it is swept: only if
    /// its child is idle (else it is taken off and lists itself anew when
    /// next idle). Called with the list locked.
    fn stays_listed(&self) -> bool {
        self.update(|flags| (flags & IDLE == 0).then_some(flags & !LISTED))
            .is_err()
    }

    /// Takes the lease back from idle if nobody asked for it yet: true if
    /// the child should hand its stack back itself.
    fn withdraw(&self) -> bool {
        self.update(|flags| (flags & IDLE != 0).then_some(flags & !IDLE))
            .is_ok()
    }

    /// Changes the flags as `change` says (`None`: leave them), atomically
    /// against the child's own changes; the flags before, `Err` if left.
    fn update(&self, change: impl FnMut(u8) -> Option<u8>) -> Result<u8, u8> {
        self.flags.fetch_update(SeqCst, SeqCst, change)
    }
}

impl Stacks {
    /// `stacks` permits, or none to count when stacks are kept for life.
    pub(crate) fn new(per_callback: bool, stacks: u32) -> Stacks {
        Stacks {
            permits: per_callback.then(|| Arc::new(Semaphore::new(stacks as usize))),
            total: stacks,
            lent: Mutex::new(VecDeque::new()),
            waiting: AtomicUsize::new(0),
        }
    }

    fn lent(&self) -> std::sync::MutexGuard<'_, VecDeque<Arc<Lease>>> {
        self.lent.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stacks held by instances now, when they are counted.
    pub(crate) fn in_use(&self) -> Option<u64> {
        let permits = self.permits.as_ref()?;
        Some(u64::from(self.total).saturating_sub(permits.available_permits() as u64))
    }

    /// Whether instances share the pool's stacks.
    pub(crate) fn per_callback(&self) -> bool {
        self.permits.is_some()
    }

    /// A stack for a callback: a free one of the pool's, else the one an
    /// idle lender hands back when asked (the wait is counted in `metrics`),
    /// else, with every stack held by a busy instance (running, or waiting
    /// inside a call of its own), one mapped for this callback alone
    /// (counted too). Waiting for a busy instance instead could wait on the
    /// very callee that instance waits for.
    pub(crate) async fn acquire(&self, metrics: &Metrics) -> StackPermit {
        let Some(permits) = &self.permits else {
            return StackPermit {
                _permit: None,
                overflow: false,
            };
        };
        let permit = match permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                // Counted before asking: a lender that goes idle from now on
                // sees it and hands its stack back unasked.
                self.waiting.fetch_add(1, SeqCst);
                let _waiting = Waiting(&self.waiting);
                if !self.ask_a_lender() {
                    metrics.stack_overflow();
                    tracing::debug!(
                        "every native stack of the pool is held by a busy instance; \
                         a callback runs on one mapped for it"
                    );
                    return StackPermit {
                        _permit: None,
                        overflow: true,
                    };
                }
                metrics.stack_wait();
                // Boxed: every callback's future has room for this wait,
                // and each child keeps one for its life; a box is a word.
                // The semaphore lives as long as the host and is never closed.
                match Box::pin(permits.clone().acquire_owned()).await {
                    Ok(permit) => permit,
                    Err(_) => unreachable!("the stack semaphore is never closed"),
                }
            }
        };
        StackPermit {
            _permit: Some(permit),
            overflow: false,
        }
    }

    /// Asks the first idle lender on the list for its stack; false if none
    /// is idle. A child that goes idle while this callback waits hands its
    /// stack back too, so a waiter may free two stacks: only a wasted
    /// wake-up, never a lost one.
    fn ask_a_lender(&self) -> bool {
        let mut lent = self.lent();
        while let Some(lease) = lent.pop_front() {
            if lease.ask() {
                return true;
            }
        }
        false
    }

    /// The child of `lease` waits for its next message holding a stack:
    /// lends it (true), or returns false if the child should hand it back
    /// now, because a callback waits for one or few are left. With few left,
    /// lending would cost the next callback a wake-up of the lender, and a
    /// set of busy instances larger than the pool would pass stacks around
    /// that way at every message.
    pub(crate) fn lend(&self, lease: &Arc<Lease>) -> bool {
        let Some(permits) = &self.permits else {
            return true;
        };
        if permits.available_permits() < self.total as usize / SHORT_PER_STACKS {
            return false;
        }
        if lease.flags.fetch_or(IDLE, SeqCst) & LISTED == 0 {
            let mut lent = self.lent();
            if lent.len() >= self.total as usize * LISTED_PER_STACK {
                // Children that went busy again: they list themselves anew
                // when next idle.
                lent.retain(|l| l.stays_listed());
            }
            lease.flags.fetch_or(LISTED, SeqCst);
            lent.push_back(lease.clone());
        }
        !(self.waiting.load(SeqCst) > 0 && lease.withdraw())
    }

    /// Permits not taken now.
    #[cfg(test)]
    fn available(&self) -> usize {
        self.permits.as_ref().map_or(0, |p| p.available_permits())
    }
}

/// Uncounts a waiting callback, also when its future is dropped (a kill).
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A callback's task that waits for a stack.
    fn waiter(stacks: &Arc<Stacks>, metrics: &Arc<Metrics>) -> tokio::task::JoinHandle<()> {
        let (stacks, metrics) = (stacks.clone(), metrics.clone());
        tokio::spawn(async move {
            let _stack = stacks.acquire(&metrics).await;
        })
    }

    async fn gets_a_stack(waiting: tokio::task::JoinHandle<()>, what: &str) {
        tokio::time::timeout(std::time::Duration::from_secs(10), waiting)
            .await
            .expect(what)
            .expect("the waiting task did not panic");
    }

    #[tokio::test]
    async fn a_callback_that_finds_every_stack_busy_runs_on_one_of_its_own() {
        let stacks = Arc::new(Stacks::new(true, 1));
        let metrics = Arc::new(Metrics::default());
        let first = stacks.acquire(&metrics).await;
        assert!(first.lendable());
        assert_eq!(stacks.in_use(), Some(1));
        // The only stack's holder is busy (it never lent it): waiting for it
        // could wait on the very callee that holder waits for.
        let second =
            tokio::time::timeout(std::time::Duration::from_secs(10), stacks.acquire(&metrics))
                .await
                .expect("a callback with every stack busy does not wait");
        assert!(
            !second.lendable(),
            "a stack mapped past the pool is not lent"
        );
        assert_eq!(stacks.in_use(), Some(1), "it holds no permit of the pool");
        let text = metrics.render(&[]);
        assert!(text.contains("wasmvisor_stack_overflows_total 1"), "{text}");
        assert!(text.contains("wasmvisor_stack_waits_total 0"), "{text}");
        drop((first, second));
        assert_eq!(stacks.available(), 1);
    }

    #[tokio::test]
    async fn stacks_kept_for_life_are_not_counted() {
        let stacks = Stacks::new(false, 1);
        let metrics = Metrics::default();
        assert!(!stacks.per_callback());
        assert_eq!(stacks.in_use(), None);
        let _a = stacks.acquire(&metrics).await;
        let _b = stacks.acquire(&metrics).await;
    }

    fn cell(id: &str) -> Arc<Cell> {
        let (tx, _rx) = crate::mailbox::mailbox(crate::mailbox::MailboxImpl::default(), 8);
        let spec = crate::types::ChildSpec::new(id, "p", &serde_json::Value::Null);
        Arc::new(Cell::new(spec, tx))
    }

    #[tokio::test]
    async fn an_idle_lender_is_asked_for_its_stack_and_a_busy_one_is_not() {
        let stacks = Arc::new(Stacks::new(true, 2));
        let metrics = Arc::new(Metrics::default());
        let (busy, idle) = (cell("busy"), cell("idle"));
        let (busy_lease, idle_lease) = (Lease::new(&busy), Lease::new(&idle));
        let _busy_stack = stacks.acquire(&metrics).await;
        let idle_stack = stacks.acquire(&metrics).await;
        // "busy" lent its stack, then got a message: it is listed but not idle.
        assert!(stacks.lend(&busy_lease));
        assert!(!busy_lease.wake());
        assert!(stacks.lend(&idle_lease));
        assert_eq!(stacks.lent().len(), 2);

        let waiting = waiter(&stacks, &metrics);
        // The idle one (listed second) is asked; the busy one, listed first,
        // is only taken off the list.
        let asked = tokio::time::timeout(std::time::Duration::from_secs(10), idle.control.next())
            .await
            .expect("the idle lender was asked");
        assert!(matches!(asked, Control::ReturnStack));
        assert!(stacks.lent().is_empty());
        assert!(!waiting.is_finished(), "no stack was handed back yet");
        assert!(idle_lease.wake(), "the lender sees it was asked");
        drop(idle_stack);
        gets_a_stack(waiting, "the waiting callback got the lent stack").await;
        assert!(!busy_lease.wake(), "the busy child was not asked");
    }

    #[tokio::test]
    async fn a_child_going_idle_while_a_callback_waits_hands_its_stack_back() {
        let stacks = Arc::new(Stacks::new(true, 2));
        let metrics = Arc::new(Metrics::default());
        let (lender, busy) = (cell("lender"), cell("busy"));
        let (lender_lease, busy_lease) = (Lease::new(&lender), Lease::new(&busy));
        let lent_stack = stacks.acquire(&metrics).await;
        let busy_stack = stacks.acquire(&metrics).await;
        assert!(stacks.lend(&lender_lease));
        // The callback asks "lender" and waits for its stack.
        let waiting = waiter(&stacks, &metrics);
        for _ in 0..1000 {
            if stacks.waiting.load(SeqCst) == 1 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(stacks.waiting.load(SeqCst), 1);
        assert!(lender.control.pending(), "the lender was asked");
        // Before the asked lender wakes, the busy child runs dry.
        assert!(
            !stacks.lend(&busy_lease),
            "hand it back instead of lending it"
        );
        assert!(
            !busy_lease.wake(),
            "not asked: it handed the stack back itself"
        );
        drop(busy_stack);
        gets_a_stack(waiting, "the waiting callback got the stack").await;
        assert_eq!(stacks.waiting.load(SeqCst), 0);
        assert!(lender_lease.wake(), "the lender sees it was asked");
        drop(lent_stack);
        assert!(
            metrics
                .render(&[])
                .contains("wasmvisor_stack_waits_total 1")
        );
    }

    #[test]
    fn the_list_of_lenders_stays_short_without_pressure() {
        let stacks = Stacks::new(true, 2);
        let cells: Vec<_> = (0..50).map(|i| cell(&i.to_string())).collect();
        let leases: Vec<_> = cells.iter().map(Lease::new).collect();
        for _round in 0..3 {
            for lease in &leases {
                assert!(stacks.lend(lease));
                assert!(!lease.wake());
            }
        }
        assert!(stacks.lent().len() <= stacks.total as usize * LISTED_PER_STACK);
        // Swept leases list themselves anew: once all are idle, each is on
        // the list exactly once and can be asked.
        for lease in &leases {
            assert!(stacks.lend(lease));
        }
        for lease in &leases {
            let listed = stacks
                .lent()
                .iter()
                .filter(|l| Arc::ptr_eq(l, lease))
                .count();
            assert_eq!(listed, 1);
        }
        for cell in &cells {
            assert!(stacks.ask_a_lender());
            assert!(cell.control.pending(), "asked in the order listed");
        }
        assert!(!stacks.ask_a_lender(), "every lender was asked once");
    }
}
