//! The one retry policy: exponential backoff with jitter, from a first
//! pause up to a cap, for as long as the caller allows (a job's lease, a
//! deadline, its cancel token). Every retry in the workspace takes its
//! pauses from here; the backoff itself is `backon`'s.
//!
//! With jitter a pause is between the current step and twice it, so that
//! runners that failed together do not retry together.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

/// The Prometheus counter of OpenSearch requests sent again (bulk items
/// answered 429/5xx, bulk requests to an unavailable cluster, requests
/// moved to another node).
pub const OPENSEARCH_RETRIES_METRIC: &str = "connectra_jobs_opensearch_retries_total";
/// The Prometheus counter of S3 requests sent again.
pub const S3_RETRIES_METRIC: &str = "connectra_jobs_s3_retries_total";

/// Where a retry's pauses start and how far they grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The first step.
    pub first: Duration,
    /// The step stops doubling here.
    pub cap: Duration,
}

impl RetryPolicy {
    /// Every retry against a service (PostgreSQL claims, reconnects and
    /// outcome writes, OpenSearch bulk writes, S3 requests): steps of 100 ms
    /// doubling to 5 s. How long to keep trying is the caller's bound.
    pub const QUICK: Self = Self::new(Duration::from_millis(100), Duration::from_secs(5));

    pub const fn new(first: Duration, cap: Duration) -> Self {
        Self { first, cap }
    }

    /// The builder for `backon::Retryable::retry`: pauses until their sum
    /// would pass `total` (`None`: for ever; bound it by `.when`).
    pub fn builder(self, total: Option<Duration>) -> ExponentialBuilder {
        ExponentialBuilder::new()
            .with_jitter()
            .with_factor(2.0)
            .with_min_delay(self.first)
            .with_max_delay(self.cap)
            .without_max_times()
            .with_total_delay(total)
    }

    /// An endless sequence of pauses, for a loop that keeps running after a
    /// failure and starts over after a success ([`Pauses::reset`]).
    pub fn pauses(self) -> Pauses {
        Pauses {
            policy: self,
            steps: self.builder(None).build(),
        }
    }
}

/// The pauses of a [`RetryPolicy`], one per failure in a row.
#[derive(Debug)]
pub struct Pauses {
    policy: RetryPolicy,
    steps: ExponentialBackoff,
}

impl Pauses {
    /// The pause after one more failure.
    pub fn next_pause(&mut self) -> Duration {
        self.steps.next().unwrap_or(self.policy.cap)
    }

    /// A success: the next failure starts from the first step again.
    pub fn reset(&mut self) {
        self.steps = self.policy.builder(None).build();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_from_the_first_step_to_the_cap_with_jitter_below_twice_the_step() {
        let mut p = RetryPolicy::QUICK.pauses();
        let steps = [100u64, 200, 400, 800, 1600, 3200, 5000, 5000, 5000];
        for step in steps {
            let pause = p.next_pause();
            let step = Duration::from_millis(step);
            assert!(
                pause >= step && pause < step * 2,
                "{pause:?} is not in [{step:?}, {:?})",
                step * 2
            );
        }
        p.reset();
        assert!(p.next_pause() < Duration::from_millis(200));
    }

    #[test]
    fn jitter_spreads_runners_that_failed_together() {
        let firsts: std::collections::HashSet<Duration> = (0..20)
            .map(|_| RetryPolicy::QUICK.pauses().next_pause())
            .collect();
        assert!(firsts.len() > 1, "twenty runners paused alike: {firsts:?}");
    }

    #[test]
    fn a_bounded_builder_stops_before_its_total() {
        let total = Duration::from_secs(10);
        let pauses: Vec<Duration> = RetryPolicy::QUICK.builder(Some(total)).build().collect();
        assert!(!pauses.is_empty());
        assert!(pauses.iter().sum::<Duration>() <= total);
    }
}
