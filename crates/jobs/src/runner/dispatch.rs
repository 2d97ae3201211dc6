//! Dispatching: takes claimed jobs off the queue as worker slots free up,
//! starts them in batches (one `UPDATE` for all that fit the free slots),
//! and runs each handler in a task of its own, sending how it ended to the
//! finisher.

use std::collections::HashSet;
use std::sync::Arc;

use connectra_domain::job::JobResponse;
use connectra_persistence::jobs::ClaimKind;
use connectra_persistence::Job;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{finish, Counters, Shared};
use crate::handler::{JobContext, Stopped};

/// Jobs started together in one statement, at most.
const MAX_START_BATCH: usize = 256;

/// Start statements in flight at once, each for a batch of its own. One:
/// the next start waits for this one's round trip and takes every slot
/// freed meanwhile. Two overlapping starts made batches half as large and
/// cost 12–18 % of the no-op jobs/s at 4, 16 and 64 workers
/// (`runner_bench throughput`, alternating runs).
const START_IN_FLIGHT: usize = 1;

/// Jobs started and not yet written (running, or waiting for the finisher
/// with their outcome), at most; never fewer than the workers. A worker's
/// slot frees when its handler returns, so without this bound a slow
/// database would let outcomes pile up in memory while new jobs kept
/// starting, and every lease renewal carry them all.
const MAX_UNWRITTEN: usize = 512;

/// How a handler run ended, decided once when it returns.
pub(super) enum Ending {
    Completed(JobResponse),
    NotCompleted(Setback),
}

/// Every ending but completion: each is written one job at a time.
pub(super) enum Setback {
    /// The handler returned an error or panicked: the job fails (and may
    /// be retried).
    Failed(String),
    /// Stopped on a user's cancel request: the job fails, marked cancelled.
    Cancelled,
    /// Stopped by shutdown (or aborted after the stop timeout): the job is
    /// handed back with its checkpoint.
    Stopped,
    /// The lease went to another attempt while it ran: nothing is written.
    Lost,
}

/// A handler run that ended, waiting for its outcome to be written.
pub(super) struct Finished {
    pub job: Job,
    pub ending: Ending,
    /// Held until the outcome is written: see [`MAX_UNWRITTEN`].
    pub unwritten: OwnedSemaphorePermit,
}

/// Runs until `shutdown`, then returns the queue (what is still in it is
/// handed back) and the running tasks.
pub(super) async fn dispatch(
    s: Arc<Shared>,
    mut rx: mpsc::Receiver<Job>,
    done: mpsc::UnboundedSender<Finished>,
    shutdown: CancellationToken,
) -> (mpsc::Receiver<Job>, JoinSet<()>) {
    let kind = s.config.mode.claim_kind();
    let slots = Arc::new(Semaphore::new(s.config.workers.max(1)));
    let unwritten = Arc::new(Semaphore::new(MAX_UNWRITTEN.max(s.config.workers)));
    let starting = Arc::new(Semaphore::new(START_IN_FLIGHT));
    let mut tasks = JoinSet::new();
    loop {
        while tasks.try_join_next().is_some() {}
        // The start and the handlers of each batch run in a task of their
        // own; at most START_IN_FLIGHT starts are in flight at once.
        let start_slot = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            p = starting.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let first = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            p = async {
                let slot = slots.clone().acquire_owned().await?;
                Ok::<_, tokio::sync::AcquireError>((slot, unwritten.clone().acquire_owned().await?))
            } => match p { Ok(p) => p, Err(_) => break },
        };
        // let handlers that are about to return free their slots too, so
        // that the batch is as large as what is free
        tokio::task::yield_now().await;
        let mut permits = vec![first];
        while permits.len() < MAX_START_BATCH {
            match (
                unwritten.clone().try_acquire_owned(),
                slots.clone().try_acquire_owned(),
            ) {
                (Ok(u), Ok(p)) => permits.push((p, u)),
                _ => break,
            }
        }
        let first_job = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            job = rx.recv() => match job { Some(j) => j, None => break },
        };
        let mut jobs = vec![first_job];
        while jobs.len() < permits.len() {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        permits.truncate(jobs.len());
        let s = s.clone();
        let done = done.clone();
        tasks.spawn(
            async move {
                let mut running = start_batch(&s, kind, jobs, permits, &done).await;
                drop(start_slot);
                while running.join_next().await.is_some() {}
            }
            .in_current_span(),
        );
    }
    (rx, tasks)
}

/// Starts a batch of claimed jobs (one statement) and runs the handlers of
/// those that started, each with its worker slot, in tasks of their own.
async fn start_batch(
    s: &Arc<Shared>,
    kind: ClaimKind,
    jobs: Vec<Job>,
    permits: Vec<(OwnedSemaphorePermit, OwnedSemaphorePermit)>,
    done: &mpsc::UnboundedSender<Finished>,
) -> JoinSet<()> {
    let mut running = JoinSet::new();
    let claims: Vec<(i64, i32)> = jobs.iter().map(|j| (j.id, j.attempts)).collect();
    let started = match s
        .repo
        .start_many(kind, &s.id, &claims, s.config.lease)
        .await
    {
        Ok(started) => started,
        Err(e) => {
            tracing::error!(error = %e, jobs = jobs.len(), "could not start jobs; handing them back");
            for job in &jobs {
                finish::release(s, job).await;
            }
            return running;
        }
    };
    let skipped = jobs.len() - started.len();
    if skipped > 0 {
        let started_ids: HashSet<i64> = started.iter().map(|j| j.id).collect();
        s.holdings.let_go(
            jobs.iter()
                .map(|j| j.id)
                .filter(|id| !started_ids.contains(id)),
        );
        tracing::info!(skipped, "jobs cancelled or taken back before they started");
        Counters::add(&s.counters.lost, skipped);
    }
    for (job, (slot, unwritten)) in started.into_iter().zip(permits) {
        let span = tracing::info_span!("job", job_uuid = %job.uuid, job_type = %job.job_type,
            attempt = job.attempts);
        let (s, done) = (s.clone(), done.clone());
        running.spawn(
            async move {
                let (job, ending) = run_started(&s, job).await;
                let _ = done.send(Finished {
                    job,
                    ending,
                    unwritten,
                });
                drop(slot);
            }
            .instrument(span),
        );
    }
    running
}

/// Runs a started job's handler in a task of its own (so a panic is caught
/// and an abort reaches it), and decides how it ended.
async fn run_started(s: &Arc<Shared>, job: Job) -> (Job, Ending) {
    let Some(handler) = s.registry.get(&job.job_type) else {
        // claims filter on registered types, so this cannot happen
        return (job, Ending::NotCompleted(Setback::Stopped));
    };
    let token = s.stop_handlers.child_token();
    s.holdings
        .register_running(job.id, job.attempts, token.clone());
    let due = job.run_after.unwrap_or(job.created_at);
    let waited = time::OffsetDateTime::now_utc() - due;
    crate::metrics::picked_up(
        &job.job_type,
        waited.try_into().unwrap_or(std::time::Duration::ZERO),
    );
    let started = tokio::time::Instant::now();
    let job = Arc::new(job);
    let ctx = JobContext::new(job.clone(), s.repo.clone(), s.id.clone(), token);
    let task = tokio::spawn(handler.run(ctx));
    s.holdings.set_abort(job.id, task.abort_handle());
    let returned = task.await;
    let flags = s.holdings.handler_returned(job.id);
    let ending = match returned {
        _ if flags.lost => Ending::NotCompleted(Setback::Lost),
        Ok(Ok(response)) => Ending::Completed(response),
        Ok(Err(e)) if e.is::<Stopped>() => Ending::NotCompleted(stopped(flags.user_cancelled)),
        Ok(Err(e)) => Ending::NotCompleted(Setback::Failed(format!("{e:#}"))),
        Err(join) if join.is_panic() => {
            let panic = join.into_panic();
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a non-string panic payload".to_string());
            Ending::NotCompleted(Setback::Failed(format!("the handler panicked: {msg}")))
        }
        // aborted at shutdown
        Err(_) => Ending::NotCompleted(stopped(flags.user_cancelled)),
    };
    let outcome = match &ending {
        Ending::Completed(_) => "completed",
        Ending::NotCompleted(Setback::Failed(_)) => "failed",
        Ending::NotCompleted(Setback::Cancelled) => "cancelled",
        Ending::NotCompleted(Setback::Stopped) => "stopped",
        Ending::NotCompleted(Setback::Lost) => "lost",
    };
    crate::metrics::job_ran(&job.job_type, outcome, started.elapsed());
    let job = Arc::try_unwrap(job).unwrap_or_else(|arc| (*arc).clone());
    (job, ending)
}

fn stopped(user_cancelled: bool) -> Setback {
    if user_cancelled {
        Setback::Cancelled
    } else {
        Setback::Stopped
    }
}
