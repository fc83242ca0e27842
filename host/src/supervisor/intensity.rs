//! Restart intensity (OTP's `max_restarts` within `max_seconds`) and the
//! exponential backoff a dynamic child enters when it exceeds it.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The first backoff delay.
pub(crate) const BACKOFF_START: Duration = Duration::from_millis(100);
/// The longest backoff delay.
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// What the restart history says about one more restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Within intensity: restart now.
    Within,
    /// Intensity exceeded, for the n-th time in a row (1-based).
    Exceeded(u32),
}

/// The restart history of one child (or one group).
#[derive(Debug, Clone)]
pub(crate) struct Intensity {
    max_restarts: u32,
    window: Duration,
    restarts: VecDeque<Instant>,
    exceeded: u32,
}

impl Intensity {
    pub(crate) fn new(max_restarts: u32, max_seconds: u32) -> Self {
        Intensity {
            max_restarts,
            window: Duration::from_secs(max_seconds.into()),
            restarts: VecDeque::new(),
            exceeded: 0,
        }
    }

    /// Records a restart at `now` of something that had been up for
    /// `uptime`. Once exceeded, every further restart stays exceeded (and
    /// backs off longer) until the child stays up for a whole window.
    pub(crate) fn record(&mut self, now: Instant, uptime: Duration) -> Verdict {
        if uptime >= self.window {
            self.reset();
        }
        if self.exceeded > 0 {
            self.exceeded = self.exceeded.saturating_add(1);
            return Verdict::Exceeded(self.exceeded);
        }
        while let Some(&first) = self.restarts.front() {
            if now.duration_since(first) > self.window {
                self.restarts.pop_front();
            } else {
                break;
            }
        }
        self.restarts.push_back(now);
        if self.restarts.len() > self.max_restarts as usize {
            self.exceeded = 1;
            Verdict::Exceeded(1)
        } else {
            Verdict::Within
        }
    }

    /// The restarts allowed within the window.
    pub(crate) fn max_restarts(&self) -> u32 {
        self.max_restarts
    }

    /// The window.
    pub(crate) fn window(&self) -> Duration {
        self.window
    }

    /// Restarts within the window that ends `now`.
    pub(crate) fn used(&self, now: Instant) -> usize {
        self.restarts
            .iter()
            .filter(|t| now.duration_since(**t) <= self.window)
            .count()
    }

    /// Forgets the history (an operator restart or a reload revived it).
    pub(crate) fn reset(&mut self) {
        self.restarts.clear();
        self.exceeded = 0;
    }
}

/// The delay before the n-th restart past the intensity: 100 ms doubling,
/// at most 30 s.
pub(crate) fn backoff_delay(n: u32) -> Duration {
    let doublings = n.saturating_sub(1).min(16);
    (BACKOFF_START * 2u32.pow(doublings)).min(BACKOFF_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_restarts_in_five_seconds_are_fine_the_fourth_is_not() {
        let mut i = Intensity::new(3, 5);
        let t0 = Instant::now();
        let quick = Duration::from_millis(1);
        for k in 0..3 {
            assert_eq!(
                i.record(t0 + Duration::from_millis(k), quick),
                Verdict::Within
            );
        }
        assert_eq!(
            i.record(t0 + Duration::from_millis(3), quick),
            Verdict::Exceeded(1)
        );
        assert_eq!(
            i.record(t0 + Duration::from_millis(4), quick),
            Verdict::Exceeded(2)
        );
    }

    #[test]
    fn old_restarts_leave_the_window() {
        let mut i = Intensity::new(3, 5);
        let t0 = Instant::now();
        let quick = Duration::from_millis(1);
        for k in 0..3 {
            i.record(t0 + Duration::from_secs(k), quick);
        }
        // At t0+7s the restarts at 0 and 1 s are older than 5 s.
        assert_eq!(
            i.record(t0 + Duration::from_secs(7), quick),
            Verdict::Within
        );
    }

    #[test]
    fn staying_up_a_whole_window_ends_the_backoff() {
        let mut i = Intensity::new(0, 5);
        let t0 = Instant::now();
        assert_eq!(i.record(t0, Duration::ZERO), Verdict::Exceeded(1));
        assert_eq!(i.record(t0, Duration::from_secs(1)), Verdict::Exceeded(2));
        assert_eq!(i.record(t0, Duration::from_secs(5)), Verdict::Exceeded(1));
        let mut i = Intensity::new(1, 5);
        i.record(t0, Duration::ZERO);
        i.record(t0, Duration::ZERO);
        assert_eq!(i.record(t0, Duration::from_secs(6)), Verdict::Within);
    }

    #[test]
    fn backoff_doubles_from_100ms_to_30s() {
        assert_eq!(backoff_delay(1), Duration::from_millis(100));
        assert_eq!(backoff_delay(2), Duration::from_millis(200));
        assert_eq!(backoff_delay(5), Duration::from_millis(1600));
        assert_eq!(
            backoff_delay(9),
            Duration::from_secs(25) + Duration::from_millis(600)
        );
        assert_eq!(backoff_delay(10), BACKOFF_MAX);
        assert_eq!(backoff_delay(u32::MAX), BACKOFF_MAX);
    }
}
