//! Call deadlines without a timer per call. Most calls are answered within
//! microseconds, and a tokio timer for each would cost a lock on the timer
//! wheel and, whenever the wheel was empty, a wake-up of the worker that
//! sleeps on the timer driver. So a call first waits on the host's 1 ms
//! tick, which every pending call shares, and only a call still unanswered
//! at a tick gets a timer of its own.

use std::future::Future;
use std::pin::pin;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Waiters are spread over shards so that concurrent callers seldom share
/// a waiter list.
const SHARDS: usize = 16;

static TICKS: [Notify; SHARDS] = [const { Notify::const_new() }; SHARDS];

/// Wakes every call waiting for the next tick. The host calls it from the
/// wasm engine's epoch ticker, every millisecond; with several hosts in one
/// process, ticks only come more often.
pub(crate) fn tick() {
    for shard in &TICKS {
        shard.notify_waiters();
    }
}

/// `answer`, unless `timeout` passes first (then `None`). `shard` spreads
/// callers over the tick's waiter lists.
pub(crate) async fn within<F: Future>(
    answer: F,
    timeout: Duration,
    shard: usize,
) -> Option<F::Output> {
    let started = Instant::now();
    let mut answer = pin!(answer);
    tokio::select! {
        biased;
        answer = answer.as_mut() => return Some(answer),
        () = TICKS[shard % SHARDS].notified() => {}
    }
    let left = timeout.saturating_sub(started.elapsed());
    tokio::time::timeout(left, answer).await.ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_answer_comes_through_and_a_late_one_times_out() {
        assert_eq!(
            within(async { 7 }, Duration::from_secs(1), 0).await,
            Some(7)
        );
        let ticker = tokio::spawn(async {
            loop {
                tick();
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        });
        let never = std::future::pending::<()>();
        let started = Instant::now();
        assert_eq!(within(never, Duration::from_millis(20), 3).await, None);
        assert!(started.elapsed() >= Duration::from_millis(20));
        ticker.abort();
    }
}
