//! Claiming: fills the bounded queue from the database while it has room,
//! then waits for a reason to look again (a `NOTIFY`, the ticker, a retry
//! falling due, or a failed claim's backoff).

use std::sync::Arc;
use std::time::Duration;

use connectra_domain::retry::RetryPolicy;
use connectra_persistence::Job;
use tokio::sync::{mpsc, Notify};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::{Counters, Mode, Shared};
use crate::wake::{wait_for_work, Wake};

/// When the claimer stops of its own accord.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Until {
    /// Only when shutdown is asked for.
    Shutdown,
    /// Also once a claim finds nothing due and no job is held any more.
    Idle,
}

/// Claims while the queue has room, then waits for a reason to look again.
/// Returns when `shutdown` is cancelled, or (with [`Until::Idle`]) when
/// nothing is left to do now.
pub(super) async fn claim_loop(
    s: &Arc<Shared>,
    tx: &mpsc::Sender<Job>,
    wake: &Notify,
    shutdown: &CancellationToken,
    until: Until,
) {
    let cfg = &s.config;
    let kind = cfg.mode.claim_kind();
    let job_types = s.registry.job_types();
    let mut ticker = tokio::time::interval(cfg.ticker);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ticker.tick().await;
    // Refill once at least this much room is free, so claims stay batched.
    let refill_at = (cfg.queue_size / 2).max(1);
    // After a failed claim, look again after a backoff, rather than waiting
    // for a NOTIFY or the ticker while the database has work.
    let mut pauses = RetryPolicy::QUICK.pauses();
    loop {
        // Claim until the database has nothing more for us or the queue is
        // full; after a failed claim, `retry_in` is when to look again.
        let retry_in: Option<Duration> = loop {
            if shutdown.is_cancelled() {
                return;
            }
            let room = tx.capacity();
            if room == 0 {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    permits = tx.reserve_many(refill_at) => if permits.is_err() { return },
                }
                continue;
            }
            match s
                .repo
                .claim(kind, &s.id, &job_types, room as i64, cfg.lease)
                .await
            {
                Ok(jobs) => {
                    pauses.reset();
                    let got = jobs.len();
                    Counters::add(&s.counters.claimed, got);
                    s.holdings.hold(jobs.iter().map(|j| j.id));
                    for job in jobs {
                        tracing::debug!(job_uuid = %job.uuid, attempt = job.attempts, "claimed");
                        if tx.send(job).await.is_err() {
                            return;
                        }
                    }
                    if got < room {
                        break None;
                    }
                }
                Err(e) => {
                    let wait = pauses.next_pause();
                    Counters::add(&s.counters.claim_failures, 1);
                    metrics::counter!(crate::metrics::CLAIM_FAILURES).increment(1);
                    tracing::error!(error = %e, retry_in_ms = wait.as_millis() as u64,
                        "claiming jobs failed; trying again");
                    break Some(wait);
                }
            }
        };
        if until == Until::Idle && retry_in.is_none() {
            // Nothing more to claim now. Once every held job is settled,
            // claim once more: a handler may have created work.
            if s.holdings.is_empty() {
                return;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = s.holdings.until_empty() => continue,
            }
        }
        let due = match cfg.mode {
            Mode::Retry => next_due(s, &job_types).await,
            Mode::FirstTime => None,
        };
        // whichever comes first: a retry falling due, or the next claim attempt
        let due = [due, retry_in.map(|w| Instant::now() + w)]
            .into_iter()
            .flatten()
            .min();
        if wait_for_work(wake, &mut ticker, due, shutdown).await == Wake::Shutdown {
            return;
        }
    }
}

/// When the earliest waiting retry of a job type this runner has falls
/// due, as a tokio instant.
async fn next_due(s: &Shared, job_types: &[String]) -> Option<Instant> {
    // measured by the database's clock, which run_after was set by
    let wait = s.repo.next_retry_due(job_types).await.ok().flatten()?;
    // a little slack so the database's now() has passed run_after; a time
    // beyond what an Instant holds is simply not waited for
    Instant::now().checked_add(wait.saturating_add(Duration::from_millis(5)))
}
