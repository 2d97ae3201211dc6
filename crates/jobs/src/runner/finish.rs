//! Finishing: writes each ended job's outcome, fenced by its attempt.
//! Completions go in batches (one `UPDATE` for all that are waiting),
//! everything else one job at a time. Every write is retried with the one
//! retry policy for up to the lease: past it the write is fenced out anyway
//! and the job is rescued, so a failover of a few seconds costs a finished
//! job nothing.

use std::sync::Arc;
use std::time::Duration;

use backon::Retryable;
use connectra_domain::job::JobResponse;
use connectra_domain::retry::RetryPolicy;
use connectra_persistence::jobs::Fence;
use connectra_persistence::Job;
use tokio::sync::mpsc;
use tracing::Instrument;

use super::dispatch::{Ending, Finished, Setback};
use super::{Counters, Shared};

/// Outcomes written together in one statement, at most.
const MAX_FINISH_BATCH: usize = 256;

/// Runs `write` until it succeeds, for up to `for_up_to`.
async fn persist<T, F, Fut>(
    what: &str,
    for_up_to: Duration,
    write: F,
) -> connectra_persistence::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = connectra_persistence::Result<T>>,
{
    write
        .retry(RetryPolicy::QUICK.builder(Some(for_up_to)))
        .notify(|e, pause| {
            tracing::warn!(error = %e, retry_in_ms = pause.as_millis() as u64,
                "{what} failed; trying again");
        })
        .await
}

/// Writes outcomes until every sender is gone.
pub(super) async fn finish_loop(s: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<Finished>) {
    let mut batch = Vec::new();
    while rx.recv_many(&mut batch, MAX_FINISH_BATCH).await > 0 {
        let mut completions = Vec::new();
        let mut setbacks = Vec::new();
        // released once the batch is written, not before
        let mut unwritten = Vec::with_capacity(batch.len());
        for f in batch.drain(..) {
            unwritten.push(f.unwritten);
            match f.ending {
                Ending::Completed(response) => completions.push((f.job, response)),
                Ending::NotCompleted(setback) => setbacks.push((f.job, setback)),
            }
        }
        if !completions.is_empty() {
            complete(&s, &completions).await;
        }
        for (job, setback) in setbacks {
            settle(&s, &job, setback).await;
        }
        drop(unwritten);
    }
}

async fn complete(s: &Shared, completions: &[(Job, JobResponse)]) {
    let rows: Vec<(i64, i32, &JobResponse)> = completions
        .iter()
        .map(|(job, response)| (job.id, job.attempts, response))
        .collect();
    let written = persist("writing completions", s.config.lease, || {
        s.repo.complete_many(&s.id, &rows)
    })
    .await;
    s.holdings.let_go(rows.iter().map(|r| r.0));
    match written {
        Ok(written) => {
            Counters::add(&s.counters.completed, written.len());
            for (job, response) in completions.iter().filter(|(j, _)| written.contains(&j.id)) {
                crate::metrics::rows(&job.job_type, response);
            }
            let lost = rows.len() - written.len();
            if lost > 0 {
                tracing::warn!(
                    lost,
                    "outcomes not written: their leases were lost meanwhile"
                );
                Counters::add(&s.counters.lost, lost);
                metrics::counter!(crate::metrics::LEASE_LOSSES).increment(lost as u64);
            }
            tracing::debug!(completed = written.len(), "jobs completed");
        }
        Err(e) => tracing::error!(error = %e, jobs = rows.len(),
            "writing completions failed; the leases will expire and the jobs be rescued"),
    }
}

/// Writes the outcome of a job that did not complete.
async fn settle(s: &Shared, job: &Job, setback: Setback) {
    let span = tracing::info_span!("job", job_uuid = %job.uuid, job_type = %job.job_type,
        attempt = job.attempts);
    async {
        let mut response = JobResponse::default();
        match setback {
            Setback::Lost => {
                tracing::warn!(
                    "lease lost while running; another attempt owns the job, writing nothing"
                );
                Counters::add(&s.counters.lost, 1);
                metrics::counter!(crate::metrics::LEASE_LOSSES).increment(1);
                s.holdings.let_go([job.id]);
                return;
            }
            Setback::Stopped => return release(s, job).await,
            Setback::Cancelled => {
                response.cancelled = Some(true);
                response.messages = Some("cancelled by request".into());
                response.push_error(format!("attempt {}: cancelled by request", job.attempts));
            }
            Setback::Failed(message) => {
                tracing::warn!(error = %message, "job failed");
                response.push_error(format!("attempt {}: {message}", job.attempts));
            }
        }
        fail(s, job.fence(&s.id), &response).await;
        s.holdings.let_go([job.id]);
    }
    .instrument(span)
    .await;
}

async fn fail(s: &Shared, fence: Fence<'_>, response: &JobResponse) {
    let written = persist("writing the failure", s.config.lease, || {
        s.repo.fail(fence, response)
    })
    .await;
    match written {
        Ok(true) => Counters::add(&s.counters.failed, 1),
        Ok(false) => {
            tracing::warn!("the outcome was not written: the lease was lost meanwhile");
            Counters::add(&s.counters.lost, 1);
            metrics::counter!(crate::metrics::LEASE_LOSSES).increment(1);
        }
        Err(e) => {
            tracing::error!(error = %e, "writing the outcome failed; the lease will expire and the job be rescued")
        }
    }
}

/// Hands a job back (to be claimed again, from its checkpoint).
pub(super) async fn release(s: &Shared, job: &Job) {
    let released = persist("handing a job back", s.config.lease, || {
        s.repo.release(job.fence(&s.id))
    })
    .await;
    s.holdings.let_go([job.id]);
    match released {
        Ok(true) => {
            Counters::add(&s.counters.released, 1);
            tracing::info!(job_uuid = %job.uuid, "job handed back");
        }
        Ok(false) => {}
        Err(e) => tracing::error!(job_uuid = %job.uuid, error = %e,
            "handing the job back failed; its lease will expire and it will be rescued"),
    }
}
