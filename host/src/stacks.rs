//! Native stacks for running instances. wasmtime runs every async callback on
//! a fiber stack from the pool, and a `Store` keeps its last stack between
//! calls, so by default the pool holds a stack per instance. With
//! `[engine] stack_per_callback` an instance hands its stack back whenever its
//! mailbox runs dry: the pool then needs a stack per running instance
//! (`[pool] max_running`), which frees the two memory mappings and the
//! resident page each idle instance's stack costs, at the price of a trip
//! through the pool's allocator per burst of messages.
//!
//! A permit is held for as long as the store may hold a stack, so the pool
//! never runs out under a callback: one that finds all permits taken waits.

use crate::metrics::Metrics;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The permits of one host's stack pool; `None` when every instance keeps
/// its stack for life (`[engine] stack_per_callback = false`).
pub(crate) struct Stacks {
    permits: Option<Arc<Semaphore>>,
    total: u32,
}

/// The right to hold one of the pool's stacks. Kept in the instance's store
/// data, so a store dropped mid-callback returns its stack (store teardown
/// flushes it) before this permit.
pub(crate) struct StackPermit {
    _permit: Option<OwnedSemaphorePermit>,
}

impl Stacks {
    /// `stacks` permits, or none to count when stacks are kept for life.
    pub(crate) fn new(per_callback: bool, stacks: u32) -> Stacks {
        Stacks {
            permits: per_callback.then(|| Arc::new(Semaphore::new(stacks as usize))),
            total: stacks,
        }
    }

    /// Stacks held by instances now, when they are counted.
    pub(crate) fn in_use(&self) -> Option<u64> {
        let permits = self.permits.as_ref()?;
        Some(u64::from(self.total).saturating_sub(permits.available_permits() as u64))
    }

    /// Whether stores hand their stack back after each callback.
    pub(crate) fn per_callback(&self) -> bool {
        self.permits.is_some()
    }

    /// Waits until a stack is free; a wait is counted in `metrics`.
    pub(crate) async fn acquire(&self, metrics: &Metrics) -> StackPermit {
        let Some(permits) = &self.permits else {
            return StackPermit { _permit: None };
        };
        let permit = match permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                metrics.stack_wait();
                tracing::debug!("every native stack is in use; a callback waits for one");
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
        }
    }

    /// Permits not taken now.
    #[cfg(test)]
    fn available(&self) -> usize {
        self.permits.as_ref().map_or(0, |p| p.available_permits())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_callback_waits_for_a_stack_and_gets_the_one_handed_back() {
        let stacks = Arc::new(Stacks::new(true, 1));
        let metrics = Arc::new(Metrics::default());
        let first = stacks.acquire(&metrics).await;
        assert_eq!(stacks.available(), 0);
        assert_eq!(stacks.in_use(), Some(1));
        let waiting = tokio::spawn({
            let (stacks, metrics) = (stacks.clone(), metrics.clone());
            async move {
                let _second = stacks.acquire(&metrics).await;
            }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "no stack is free yet");
        drop(first);
        tokio::time::timeout(std::time::Duration::from_secs(10), waiting)
            .await
            .expect("the waiting callback got the stack")
            .expect("the waiting task did not panic");
        assert_eq!(stacks.available(), 1);
        assert!(
            metrics
                .render(&[])
                .contains("wasmvisor_stack_waits_total 1")
        );
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
}
