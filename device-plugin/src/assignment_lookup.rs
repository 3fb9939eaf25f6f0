//! What `GetPreferredAllocation` does when the pods on its node cannot be read
//! from the API server: retry with backoff for a bounded time, then refuse.
//! Pure: the gRPC service sleeps and calls, this decides.
//!
//! Why refuse rather than fall back to the topology-best GPUs: kubelet counts
//! whole GPUs (`nvidia.com/gpu`) and shares (`phalanx.dev/gpu-milli`) as two
//! unrelated resources, so only the scheduler's per-GPU accounting keeps a
//! whole-GPU pod off a GPU that shares already use. A container given other
//! GPUs than the scheduler counted makes that accounting wrong, and the next
//! placement can over-commit a GPU. A refusal instead fails the pod's
//! admission with this message (kubelet: `UnexpectedAdmissionError`); the pod
//! turns `Failed`, which the scheduler's mirror counts as holding nothing, and
//! its controller creates a replacement that is placed again. Nothing is
//! allocated against a choice nobody could read.
//!
//! The bound is short because kubelet admits pods one at a time and waits for
//! this answer: a brief API hiccup is ridden out, a long outage is not.

use std::time::Duration;

use thiserror::Error;

/// Backoff between attempts and the total time allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LookupRetry {
    /// Wait after the first failed attempt; doubled after each further one.
    pub first_delay: Duration,
    /// The longest wait between two attempts.
    pub max_delay: Duration,
    /// The longest one attempt may take: a connection that hangs (a
    /// partition drops packets rather than refusing them) must leave time
    /// for another attempt on a fresh one.
    pub attempt_limit: Duration,
    /// After this long since the first attempt began, refuse.
    pub budget: Duration,
}

impl Default for LookupRetry {
    /// 250 ms, doubling up to 2 s, attempts of at most 3 s, for at most 10 s.
    fn default() -> Self {
        LookupRetry::within(Duration::from_secs(10))
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupStep {
    /// Try again after this pause.
    RetryAfter(Duration),
    /// The budget is spent: refuse the allocation.
    Refuse,
}

impl LookupRetry {
    /// The default backoff with `budget` as the total time allowed.
    pub fn within(budget: Duration) -> Self {
        LookupRetry {
            first_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(2),
            attempt_limit: Duration::from_secs(3),
            budget,
        }
    }

    /// After `failures` failed attempts (the first is 1), `elapsed` after the
    /// first attempt began. The last retry is timed to the budget's end, so a
    /// server back just before it is still used.
    pub fn after_failure(&self, failures: u32, elapsed: Duration) -> LookupStep {
        let Some(left) = self.budget.checked_sub(elapsed).filter(|l| !l.is_zero()) else {
            return LookupStep::Refuse;
        };
        // 2^16 times any sane first delay is past any sane cap.
        let doublings = failures.saturating_sub(1).min(16);
        let backoff = self
            .first_delay
            .saturating_mul(1u32 << doublings)
            .min(self.max_delay);
        LookupStep::RetryAfter(backoff.min(left))
    }

    /// How long one attempt may take when it starts `elapsed` after the first:
    /// what is left of the budget up to `attempt_limit`, but at least
    /// `first_delay`, so that the attempt at the deadline is a real one.
    pub fn attempt_timeout(&self, elapsed: Duration) -> Duration {
        self.budget
            .saturating_sub(elapsed)
            .min(self.attempt_limit)
            .max(self.first_delay)
    }
}

/// The refusal: which node, how long it tried, and what the API said last.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "{resource}: cannot read the pods bound to node {node} from the API server \
     ({attempts} attempts over {waited_ms} ms; last error: {last_error}), so the scheduler's \
     GPU assignment for the pod being admitted is unknown; refusing to allocate rather than \
     give it GPUs the scheduler did not count (its controller re-creates the pod, which is \
     placed again)"
)]
pub struct AssignmentUnreadable {
    pub resource: String,
    pub node: String,
    pub attempts: u32,
    pub waited_ms: u128,
    pub last_error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    #[test]
    fn backoff_doubles_up_to_its_cap_and_refuses_when_the_budget_is_spent() {
        let retry = LookupRetry::within(Duration::from_secs(10));
        assert_eq!(
            retry.after_failure(1, ms(0)),
            LookupStep::RetryAfter(ms(250))
        );
        assert_eq!(
            retry.after_failure(2, ms(300)),
            LookupStep::RetryAfter(ms(500))
        );
        assert_eq!(
            retry.after_failure(3, ms(900)),
            LookupStep::RetryAfter(ms(1000))
        );
        assert_eq!(
            retry.after_failure(4, ms(2000)),
            LookupStep::RetryAfter(ms(2000))
        );
        assert_eq!(
            retry.after_failure(9, ms(5000)),
            LookupStep::RetryAfter(ms(2000))
        );
        // The last pause ends at the deadline, and one more attempt is made there.
        assert_eq!(
            retry.after_failure(7, ms(9400)),
            LookupStep::RetryAfter(ms(600))
        );
        assert_eq!(retry.after_failure(8, ms(10_000)), LookupStep::Refuse);
        assert_eq!(retry.after_failure(8, ms(15_000)), LookupStep::Refuse);
    }

    #[test]
    fn absurd_inputs_neither_overflow_nor_wait_forever() {
        let retry = LookupRetry::within(Duration::from_secs(10));
        assert_eq!(
            retry.after_failure(u32::MAX, ms(0)),
            LookupStep::RetryAfter(ms(2000))
        );
        assert_eq!(
            retry.after_failure(0, ms(0)),
            LookupStep::RetryAfter(ms(250))
        );
        assert_eq!(retry.after_failure(1, Duration::MAX), LookupStep::Refuse);
        let huge = LookupRetry {
            first_delay: Duration::MAX,
            max_delay: Duration::MAX,
            attempt_limit: Duration::MAX,
            budget: Duration::from_secs(1),
        };
        assert_eq!(
            huge.after_failure(3, ms(0)),
            LookupStep::RetryAfter(ms(1000))
        );
    }

    #[test]
    fn a_zero_budget_refuses_after_the_first_attempt() {
        let retry = LookupRetry::within(Duration::ZERO);
        assert_eq!(retry.after_failure(1, Duration::ZERO), LookupStep::Refuse);
        // That one attempt still gets time to answer.
        assert_eq!(retry.attempt_timeout(Duration::ZERO), ms(250));
    }

    #[test]
    fn an_attempt_is_cut_at_its_limit_or_the_budget() {
        let retry = LookupRetry::within(Duration::from_secs(10));
        // A hung first attempt leaves 7 s for fresh ones.
        assert_eq!(retry.attempt_timeout(ms(0)), ms(3000));
        assert_eq!(retry.attempt_timeout(ms(9000)), ms(1000));
        assert_eq!(retry.attempt_timeout(ms(9900)), ms(250));
        assert_eq!(retry.attempt_timeout(ms(60_000)), ms(250));
    }

    #[test]
    fn the_refusal_says_what_failed_and_what_happens_to_the_pod() {
        let message = AssignmentUnreadable {
            resource: "nvidia.com/gpu".into(),
            node: "gpu-1".into(),
            attempts: 8,
            waited_ms: 10_012,
            last_error: "connection refused".into(),
        }
        .to_string();
        for needle in [
            "nvidia.com/gpu",
            "node gpu-1",
            "8 attempts over 10012 ms",
            "connection refused",
            "refusing to allocate",
            "re-creates the pod",
        ] {
            assert!(
                message.contains(needle),
                "{needle:?} missing from {message}"
            );
        }
    }
}
