//! Rescue: takes back jobs whose runner died (their leases expired), every
//! half lease, in whichever runner notices first.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::Shared;

pub(super) async fn rescue(s: Arc<Shared>, wake: Arc<Notify>, stop: CancellationToken) {
    let mut every = tokio::time::interval((s.config.lease / 2).max(Duration::from_millis(500)));
    every.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        match s.repo.rescue_expired(s.config.max_rescues).await {
            Ok(report) if report.released + report.failed_for_good > 0 => {
                tracing::warn!(
                    released = report.released,
                    failed_for_good = report.failed_for_good,
                    "rescued jobs whose runner stopped responding"
                );
                for (outcome, n) in [
                    ("released", report.released),
                    ("failed_for_good", report.failed_for_good),
                ] {
                    metrics::counter!(crate::metrics::RESCUES, "outcome" => outcome)
                        .increment(n as u64);
                }
                wake.notify_one();
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "rescuing expired jobs failed"),
        }
    }
}
