//! Restart decisions, as pure functions. Every exit of a child that is not
//! an operator's order (a trap, a kill, a guest `stop`, a failed init) is
//! decided here; the child's task carries the decision out.

use super::intensity::{Intensity, Verdict, backoff_delay};
use crate::child::Decision;
use crate::config::{OnExhausted, SupervisorConfig};
use crate::types::{ExitReason, Restart};
use std::time::{Duration, Instant};

/// Whether the policy restarts after this exit (OTP semantics).
pub(crate) fn wants_restart(policy: Restart, reason: &ExitReason) -> bool {
    match policy {
        Restart::Permanent => true,
        Restart::Transient => !reason.is_clean(),
        Restart::Temporary => false,
    }
}

/// The decision for a dynamic child, counting intensity per child.
pub(crate) fn decide(
    policy: Restart,
    reason: &ExitReason,
    config: &SupervisorConfig,
    intensity: &mut Intensity,
    uptime: Duration,
    now: Instant,
) -> Decision {
    if !wants_restart(policy, reason) {
        return Decision::Remove;
    }
    match intensity.record(now, uptime) {
        Verdict::Within => Decision::Restart,
        Verdict::Exceeded(n) => match config.on_exhausted {
            OnExhausted::Backoff => Decision::Backoff(backoff_delay(n)),
            OnExhausted::Fail => Decision::Fail,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reasons() -> Vec<ExitReason> {
        vec![
            ExitReason::Normal,
            ExitReason::Shutdown,
            ExitReason::Trap("t".into()),
            ExitReason::Killed("k".into()),
            ExitReason::InitFailed("i".into()),
        ]
    }

    #[test]
    fn every_policy_and_exit_reason() {
        let config = SupervisorConfig::default();
        for reason in reasons() {
            for (policy, expect_restart) in [
                (Restart::Permanent, true),
                (Restart::Transient, !reason.is_clean()),
                (Restart::Temporary, false),
            ] {
                let mut i = Intensity::new(3, 5);
                let d = decide(
                    policy,
                    &reason,
                    &config,
                    &mut i,
                    Duration::ZERO,
                    Instant::now(),
                );
                let restarted = d == Decision::Restart;
                assert_eq!(restarted, expect_restart, "{policy} after {reason}: {d:?}");
                if !expect_restart {
                    assert_eq!(d, Decision::Remove);
                }
            }
        }
    }

    #[test]
    fn exhaustion_backs_off_or_fails() {
        let now = Instant::now();
        let trap = ExitReason::Trap("t".into());
        let mut config = SupervisorConfig::default();
        let mut i = Intensity::new(3, 5);
        let decisions: Vec<_> = (0..5)
            .map(|_| {
                decide(
                    Restart::Permanent,
                    &trap,
                    &config,
                    &mut i,
                    Duration::ZERO,
                    now,
                )
            })
            .collect();
        assert_eq!(decisions[2], Decision::Restart);
        assert_eq!(decisions[3], Decision::Backoff(Duration::from_millis(100)));
        assert_eq!(decisions[4], Decision::Backoff(Duration::from_millis(200)));

        config.on_exhausted = OnExhausted::Fail;
        let mut i = Intensity::new(3, 5);
        let last = (0..4)
            .map(|_| {
                decide(
                    Restart::Permanent,
                    &trap,
                    &config,
                    &mut i,
                    Duration::ZERO,
                    now,
                )
            })
            .last();
        assert_eq!(last, Some(Decision::Fail));
    }
}
