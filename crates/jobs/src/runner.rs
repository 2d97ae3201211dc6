//! The runner: a claimer that fills a bounded queue, a pool of workers, a
//! lease keeper, a rescuer, and a graceful shutdown.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use connectra_domain::job::JobResponse;
use connectra_persistence::jobs::ClaimKind;
use connectra_persistence::{Job, JobRepo};
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::handler::{JobContext, Registry, Stopped};
use crate::listen::{spawn_listener, OnCancel};
use crate::wake::{next_backoff, wait_for_work, Wake};

/// Which jobs a runner takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `open` jobs: `open → in_queue → processing → completed | failed`.
    FirstTime,
    /// failed jobs whose `run_after` has passed:
    /// `failed → retry_in_queued → retrying → completed | failed`.
    Retry,
}

impl Mode {
    fn claim_kind(self) -> ClaimKind {
        match self {
            Self::FirstTime => ClaimKind::FirstTime,
            Self::Retry => ClaimKind::Retry,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::FirstTime => "first_time",
            Self::Retry => "retry",
        }
    }
}

/// How a runner behaves. Binaries fill it from `Settings`.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    pub mode: Mode,
    /// Concurrent handlers (`PARALLEL_JOBS`; the retry runner uses 1).
    pub workers: usize,
    /// Jobs claimed but not yet started (`JOB_IN_QUEUE_SIZE`): the backpressure.
    pub queue_size: usize,
    /// The safety-net poll (`TICKER_INTERVAL_*`); `NOTIFY` does the real waking.
    pub ticker: Duration,
    /// How long a claim holds a job without renewal. Renewed every third of it.
    pub lease: Duration,
    /// Running jobs get this long to finish after a shutdown signal.
    pub shutdown_grace: Duration,
    /// After the grace period, handlers get this long to stop at a batch
    /// boundary before they are aborted and their jobs released anyway.
    pub stop_timeout: Duration,
    /// Rescues of a job whose runner died before the job fails for good.
    pub max_rescues: i32,
    /// Where to `LISTEN` for new jobs and cancel requests (the database's
    /// URL). `None` relies on the ticker for new jobs and on lease renewals
    /// (every third of `lease`) for cancel requests.
    pub listen_url: Option<String>,
}

impl RunnerConfig {
    /// Defaults of the guide, for the given mode.
    pub fn new(mode: Mode) -> Self {
        Self {
            mode,
            workers: match mode {
                Mode::FirstTime => 4,
                Mode::Retry => 1,
            },
            queue_size: 100,
            ticker: Duration::from_secs(300),
            lease: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(30),
            stop_timeout: Duration::from_secs(30),
            max_rescues: 3,
            listen_url: None,
        }
    }
}

/// What a runner did, returned when it stops.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunReport {
    pub claimed: u64,
    pub completed: u64,
    pub failed: u64,
    /// Jobs handed back (queued at shutdown, or stopped after the grace period).
    pub released: u64,
    /// Jobs whose lease this runner lost; it wrote nothing for them.
    pub lost: u64,
    /// Claims that failed (the database could not be reached or answered
    /// with an error); each is retried after a short backoff.
    pub claim_failures: u64,
}

#[derive(Default)]
struct Counters {
    claimed: AtomicU64,
    completed: AtomicU64,
    failed: AtomicU64,
    released: AtomicU64,
    lost: AtomicU64,
    claim_failures: AtomicU64,
}

impl Counters {
    fn report(&self) -> RunReport {
        RunReport {
            claimed: self.claimed.load(Ordering::Relaxed),
            completed: self.completed.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            released: self.released.load(Ordering::Relaxed),
            lost: self.lost.load(Ordering::Relaxed),
            claim_failures: self.claim_failures.load(Ordering::Relaxed),
        }
    }
}

/// A job a worker is running.
struct Running {
    attempt: i32,
    since: Instant,
    token: CancellationToken,
    user_cancelled: bool,
    lost: bool,
    abort: Option<AbortHandle>,
}

impl Running {
    /// Someone asked for the job to be cancelled: stop the handler (once).
    fn cancel_by_request(&mut self, id: i64) {
        if !self.user_cancelled {
            tracing::info!(job_id = id, "cancellation requested; stopping the handler");
            self.user_cancelled = true;
            self.token.cancel();
        }
    }
}

struct Shared {
    repo: JobRepo,
    registry: Registry,
    config: RunnerConfig,
    id: Arc<str>,
    running: Mutex<HashMap<i64, Running>>,
    /// Every job this runner holds (queued or running), by id: the leases it
    /// renews. A job leaves it once its outcome is written, or could not be,
    /// so that a job this runner lost track of expires and is rescued.
    held: Mutex<std::collections::HashSet<i64>>,
    /// Cancel requests for held jobs that were started in the database but
    /// whose handler is not registered in `running` yet; taken when it is.
    early_cancels: Mutex<std::collections::HashSet<i64>>,
    /// Cancelled when the grace period ends: every handler's token is a child.
    stop_handlers: CancellationToken,
    counters: Counters,
}

impl Shared {
    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Running>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn held(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<i64>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A cancel request for job `id` arrived: stop its handler if it runs here.
    /// (A job with a cancel request is never claimed again, so whichever
    /// attempt runs here is the one to stop.)
    ///
    /// Locks are taken in the order `running`, `held`, `early_cancels`, so a
    /// request that races the handler's registration is never lost.
    fn cancel_requested(&self, id: i64) {
        let mut running = self.running();
        if let Some(r) = running.get_mut(&id) {
            r.cancel_by_request(id);
        } else if self.held().contains(&id) {
            // started a moment ago: `run_started` takes it on registering
            self.early_cancels().insert(id);
        }
    }

    /// Registers a started job's handler, taking a cancel request that
    /// arrived between its start in the database and now.
    fn register_running(&self, id: i64, attempt: i32, token: CancellationToken) {
        let mut running = self.running();
        let mut entry = Running {
            attempt,
            since: Instant::now(),
            token,
            user_cancelled: false,
            lost: false,
            abort: None,
        };
        if self.early_cancels().remove(&id) {
            entry.cancel_by_request(id);
        }
        running.insert(id, entry);
    }

    fn early_cancels(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<i64>> {
        self.early_cancels.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The job's outcome is written (or given up on): stop renewing its lease.
    fn let_go(&self, ids: impl IntoIterator<Item = i64>) {
        let mut held = self.held();
        let mut early = self.early_cancels();
        for id in ids {
            held.remove(&id);
            early.remove(&id);
        }
    }
}

/// Runs `write` until it succeeds, backing off from 100 ms to 5 s, for up
/// to `for_up_to` (the lease: past it the write is fenced out anyway, and
/// the job is rescued). A failover of a few seconds therefore costs a
/// finished job nothing, where a handful of quick retries would leave it to
/// be rescued and run again.
async fn with_retries<T, F, Fut>(
    what: &str,
    for_up_to: Duration,
    mut write: F,
) -> connectra_persistence::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = connectra_persistence::Result<T>>,
{
    let deadline = Instant::now() + for_up_to;
    let mut pause = None;
    let mut attempt = 1;
    loop {
        match write().await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() < deadline => {
                let wait = crate::wake::next_backoff(pause);
                pause = Some(wait);
                tracing::warn!(error = %e, attempt, "{what} failed; trying again");
                tokio::time::sleep(wait.min(deadline.saturating_duration_since(Instant::now())))
                    .await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// A runner of one [`Mode`]. Any number of runners, in any number of
/// processes, may share one database.
pub struct Runner {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("id", &self.shared.id)
            .field("mode", &self.shared.config.mode)
            .field("job_types", &self.shared.registry)
            .finish()
    }
}

impl Runner {
    pub fn new(repo: JobRepo, registry: Registry, config: RunnerConfig) -> Self {
        let id = format!(
            "{}-{}-{}",
            config.mode.as_str(),
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        Self {
            shared: Arc::new(Shared {
                repo,
                registry,
                config,
                id: id.into(),
                running: Mutex::new(HashMap::new()),
                held: Mutex::new(std::collections::HashSet::new()),
                early_cancels: Mutex::new(std::collections::HashSet::new()),
                stop_handlers: CancellationToken::new(),
                counters: Counters::default(),
            }),
        }
    }

    /// Unique to this runner instance (and so to each process start).
    pub fn id(&self) -> &str {
        &self.shared.id
    }

    /// Runs until `shutdown` is cancelled, then shuts down gracefully: stops
    /// claiming, hands queued jobs back, gives running jobs the grace period,
    /// then stops them at a batch boundary and hands them back with their
    /// checkpoint.
    pub async fn run(self, shutdown: CancellationToken) -> RunReport {
        let s = self.shared;
        let span = tracing::info_span!("runner", runner_id = %s.id, mode = s.config.mode.as_str());
        async move {
            let cfg = &s.config;
            tracing::info!(job_types = ?s.registry.job_types(), workers = cfg.workers,
                queue_size = cfg.queue_size, "runner started");
            let (tx, rx) = mpsc::channel::<Job>(cfg.queue_size.max(1));
            let wake = Arc::new(Notify::new());
            let background = CancellationToken::new();

            let listener = cfg.listen_url.clone().map(|url| {
                let shared = s.clone();
                let on_cancel: OnCancel = Arc::new(move |id| shared.cancel_requested(id));
                spawn_listener(url, wake.clone(), on_cancel, background.clone())
            });
            let keeper = tokio::spawn(keep_leases(s.clone(), background.clone()));
            let rescuer = tokio::spawn(rescue(s.clone(), wake.clone(), background.clone()));

            let (done_tx, done_rx) = mpsc::unbounded_channel::<Finished>();
            let finisher = tokio::spawn(finish_loop(s.clone(), done_rx));
            let dispatcher = tokio::spawn(
                dispatch(s.clone(), rx, done_tx, shutdown.clone())
                    .instrument(tracing::Span::current()),
            );

            claim_loop(&s, &tx, &wake, &shutdown).await;

            // Shutdown. The dispatcher starts nothing more; hand back what is still queued.
            tracing::info!("shutdown: no more claims; releasing queued jobs");
            let (mut rx, mut tasks) = match dispatcher.await {
                Ok(parts) => parts,
                Err(e) => {
                    tracing::error!(error = %e, "the dispatcher failed");
                    return s.counters.report();
                }
            };
            rx.close();
            while let Ok(job) = rx.try_recv() {
                release(&s, &job).await;
            }
            let grace = tokio::time::timeout(cfg.shutdown_grace, drain(&mut tasks)).await;
            if grace.is_err() {
                tracing::warn!(
                    grace_s = cfg.shutdown_grace.as_secs_f64(),
                    "grace period over; stopping running jobs at a batch boundary"
                );
                s.stop_handlers.cancel();
                if tokio::time::timeout(cfg.stop_timeout, drain(&mut tasks))
                    .await
                    .is_err()
                {
                    tracing::error!("handlers ignored the stop request; aborting them");
                    abort_running(&s).await;
                    tasks.abort_all();
                    drain(&mut tasks).await;
                }
            }
            // every outcome is written before the runner reports
            let _ = finisher.await;
            background.cancel();
            let _ = keeper.await;
            let _ = rescuer.await;
            if let Some(l) = listener {
                let _ = l.await;
            }
            let report = s.counters.report();
            tracing::info!(?report, "runner stopped");
            report
        }
        .instrument(span)
        .await
    }
}

async fn drain(workers: &mut JoinSet<()>) {
    while workers.join_next().await.is_some() {}
}

/// Claims while the queue has room, then waits for a reason to look again.
async fn claim_loop(
    s: &Arc<Shared>,
    tx: &mpsc::Sender<Job>,
    wake: &Notify,
    shutdown: &CancellationToken,
) {
    let cfg = &s.config;
    let kind = cfg.mode.claim_kind();
    let job_types = s.registry.job_types();
    let mut ticker = tokio::time::interval(cfg.ticker);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ticker.tick().await;
    // Refill once at least this much room is free, so claims stay batched.
    let refill_at = (cfg.queue_size / 2).max(1);
    // After a failed claim, look again after this long (doubling), rather than
    // waiting for a NOTIFY or the ticker while the database has work.
    let mut retry_in: Option<Duration> = None;
    loop {
        // Claim until the database has nothing more for us or the queue is full.
        loop {
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
                    retry_in = None;
                    let got = jobs.len();
                    s.counters.claimed.fetch_add(got as u64, Ordering::Relaxed);
                    s.held().extend(jobs.iter().map(|j| j.id));
                    for job in jobs {
                        tracing::debug!(job_uuid = %job.uuid, attempt = job.attempts, "claimed");
                        if tx.send(job).await.is_err() {
                            return;
                        }
                    }
                    if got < room {
                        break;
                    }
                }
                Err(e) => {
                    let wait = next_backoff(retry_in);
                    retry_in = Some(wait);
                    s.counters.claim_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(error = %e, retry_in_ms = wait.as_millis() as u64,
                        "claiming jobs failed; trying again");
                    break;
                }
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

/// When the earliest waiting retry falls due, as a tokio instant.
async fn next_due(s: &Shared, job_types: &[String]) -> Option<Instant> {
    // measured by the database's clock, which run_after was set by
    let wait = s.repo.next_retry_due(job_types).await.ok().flatten()?;
    // a little slack so the database's now() has passed run_after; a time
    // beyond what an Instant holds is simply not waited for
    Instant::now().checked_add(wait.saturating_add(Duration::from_millis(5)))
}

/// Jobs started together in one statement, at most.
const MAX_START_BATCH: usize = 256;
/// Outcomes written together in one statement, at most.
const MAX_FINISH_BATCH: usize = 1024;

/// Takes claimed jobs off the queue as worker slots free up, starts them in
/// batches (one `UPDATE` for all the jobs that fit the free slots), and runs
/// each handler in a task of its own. Returns the queue and the running
/// tasks when shutdown starts.
async fn dispatch(
    s: Arc<Shared>,
    mut rx: mpsc::Receiver<Job>,
    done: mpsc::UnboundedSender<Finished>,
    shutdown: CancellationToken,
) -> (mpsc::Receiver<Job>, JoinSet<()>) {
    let kind = s.config.mode.claim_kind();
    let slots = Arc::new(Semaphore::new(s.config.workers.max(1)));
    let mut tasks = JoinSet::new();
    loop {
        while tasks.try_join_next().is_some() {}
        let first = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let mut permits = vec![first];
        while permits.len() < MAX_START_BATCH {
            match slots.clone().try_acquire_owned() {
                Ok(p) => permits.push(p),
                Err(_) => break,
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
                    release(&s, job).await;
                }
                continue;
            }
        };
        let skipped = jobs.len() - started.len();
        if skipped > 0 {
            let started_ids: std::collections::HashSet<i64> =
                started.iter().map(|j| j.id).collect();
            s.let_go(
                jobs.iter()
                    .map(|j| j.id)
                    .filter(|id| !started_ids.contains(id)),
            );
            tracing::info!(skipped, "jobs cancelled or taken back before they started");
            s.counters.lost.fetch_add(skipped as u64, Ordering::Relaxed);
        }
        for (job, permit) in started.into_iter().zip(permits) {
            let span = tracing::info_span!("job", job_uuid = %job.uuid, job_type = %job.job_type,
                attempt = job.attempts);
            let (s, done) = (s.clone(), done.clone());
            tasks.spawn(
                async move {
                    let finished = run_started(&s, job).await;
                    let _ = done.send(finished);
                    drop(permit);
                }
                .instrument(span),
            );
        }
    }
    (rx, tasks)
}

/// The outcome of one handler run, before it is written.
enum Outcome {
    Completed(JobResponse),
    Failed(String),
    Stopped,
}

/// A handler run that ended, waiting for its outcome to be written.
struct Finished {
    job: Job,
    outcome: Outcome,
    user_cancelled: bool,
    lost: bool,
}

async fn run_started(s: &Arc<Shared>, job: Job) -> Finished {
    let Some(handler) = s.registry.get(&job.job_type) else {
        // claims filter on registered types, so this cannot happen
        return Finished {
            job,
            outcome: Outcome::Stopped,
            user_cancelled: false,
            lost: false,
        };
    };
    let token = s.stop_handlers.child_token();
    s.register_running(job.id, job.attempts, token.clone());
    let job = Arc::new(job);
    let ctx = JobContext::new(job.clone(), s.repo.clone(), s.id.clone(), token);
    let task = tokio::spawn(handler.run(ctx));
    if let Some(r) = s.running().get_mut(&job.id) {
        r.abort = Some(task.abort_handle());
    }
    let outcome = match task.await {
        Ok(Ok(response)) => Outcome::Completed(response),
        Ok(Err(e)) if e.is::<Stopped>() => Outcome::Stopped,
        Ok(Err(e)) => Outcome::Failed(format!("{e:#}")),
        Err(join) if join.is_panic() => {
            let panic = join.into_panic();
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a non-string panic payload".to_string());
            Outcome::Failed(format!("the handler panicked: {msg}"))
        }
        Err(_) => Outcome::Stopped, // aborted at shutdown
    };
    let state = s.running().remove(&job.id);
    let (user_cancelled, lost) = state.map_or((false, false), |r| (r.user_cancelled, r.lost));
    let job = Arc::try_unwrap(job).unwrap_or_else(|arc| (*arc).clone());
    Finished {
        job,
        outcome,
        user_cancelled,
        lost,
    }
}

/// Writes outcomes: completions in batches (one `UPDATE` for all that are
/// waiting), everything else one by one. Runs until every sender is gone.
async fn finish_loop(s: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<Finished>) {
    let mut batch = Vec::new();
    while rx.recv_many(&mut batch, MAX_FINISH_BATCH).await > 0 {
        let (completions, others): (Vec<Finished>, Vec<Finished>) = batch
            .drain(..)
            .partition(|f| !f.lost && matches!(f.outcome, Outcome::Completed(_)));
        if !completions.is_empty() {
            let rows: Vec<(i64, i32, &JobResponse)> = completions
                .iter()
                .filter_map(|f| match &f.outcome {
                    Outcome::Completed(r) => Some((f.job.id, f.job.attempts, r)),
                    _ => None,
                })
                .collect();
            let written = with_retries("writing completions", s.config.lease, || {
                s.repo.complete_many(&s.id, &rows)
            })
            .await;
            s.let_go(rows.iter().map(|r| r.0));
            match written {
                Ok(written) => {
                    s.counters
                        .completed
                        .fetch_add(written.len() as u64, Ordering::Relaxed);
                    let lost = rows.len() - written.len();
                    if lost > 0 {
                        tracing::warn!(
                            lost,
                            "outcomes not written: their leases were lost meanwhile"
                        );
                        s.counters.lost.fetch_add(lost as u64, Ordering::Relaxed);
                    }
                    tracing::debug!(completed = written.len(), "jobs completed");
                }
                Err(e) => tracing::error!(error = %e, jobs = rows.len(),
                    "writing completions failed; the leases will expire and the jobs be rescued"),
            }
        }
        for f in others {
            finish(&s, &f.job, f.outcome, f.user_cancelled, f.lost).await;
        }
    }
}

async fn finish(s: &Shared, job: &Job, outcome: Outcome, user_cancelled: bool, lost: bool) {
    let span = tracing::info_span!("job", job_uuid = %job.uuid, attempt = job.attempts);
    write_outcome(s, job, outcome, user_cancelled, lost)
        .instrument(span)
        .await;
    s.let_go([job.id]);
}

async fn write_outcome(s: &Shared, job: &Job, outcome: Outcome, user_cancelled: bool, lost: bool) {
    let fence = job.fence(&s.id);
    if lost {
        tracing::warn!("lease lost while running; another attempt owns the job, writing nothing");
        s.counters.lost.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let written = match outcome {
        Outcome::Completed(response) => {
            let r = with_retries("writing the outcome", s.config.lease, || {
                s.repo.complete(fence, &response)
            })
            .await;
            if matches!(r, Ok(true)) {
                s.counters.completed.fetch_add(1, Ordering::Relaxed);
            }
            r
        }
        Outcome::Stopped if user_cancelled => {
            let mut response = JobResponse {
                cancelled: Some(true),
                messages: Some("cancelled by request".into()),
                ..JobResponse::default()
            };
            response.push_error(format!("attempt {}: cancelled by request", job.attempts));
            fail(s, fence, &response).await
        }
        Outcome::Stopped => {
            release(s, job).await;
            return;
        }
        Outcome::Failed(message) => {
            tracing::warn!(error = %message, "job failed");
            let mut response = JobResponse::default();
            response.push_error(format!("attempt {}: {message}", job.attempts));
            fail(s, fence, &response).await
        }
    };
    match written {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!("the outcome was not written: the lease was lost meanwhile");
            s.counters.lost.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => {
            tracing::error!(error = %e, "writing the outcome failed; the lease will expire and the job be rescued")
        }
    }
}

async fn fail(
    s: &Shared,
    fence: connectra_persistence::jobs::Fence<'_>,
    response: &JobResponse,
) -> connectra_persistence::Result<bool> {
    let r = with_retries("writing the failure", s.config.lease, || {
        s.repo.fail(fence, response)
    })
    .await;
    if matches!(r, Ok(true)) {
        s.counters.failed.fetch_add(1, Ordering::Relaxed);
    }
    r
}

async fn release(s: &Shared, job: &Job) {
    let released = with_retries("handing a job back", s.config.lease, || {
        s.repo.release(job.fence(&s.id))
    })
    .await;
    s.let_go([job.id]);
    match released {
        Ok(true) => {
            s.counters.released.fetch_add(1, Ordering::Relaxed);
            tracing::info!(job_uuid = %job.uuid, "job handed back");
        }
        Ok(false) => {}
        Err(e) => tracing::error!(job_uuid = %job.uuid, error = %e,
            "handing the job back failed; its lease will expire and it will be rescued"),
    }
}

/// Aborts handlers that ignored the stop request and hands their jobs back.
async fn abort_running(s: &Shared) {
    let held: Vec<(i64, i32)> = {
        let mut running = s.running();
        running
            .iter_mut()
            .map(|(id, r)| {
                if let Some(a) = r.abort.take() {
                    a.abort();
                }
                (*id, r.attempt)
            })
            .collect()
    };
    for (id, attempt) in held {
        let fence = connectra_persistence::jobs::Fence {
            id,
            attempt,
            runner_id: &s.id,
        };
        let released = s.repo.release(fence).await;
        s.let_go([id]);
        if matches!(released, Ok(true)) {
            s.counters.released.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Renews the lease of every job this runner holds, every third of the lease,
/// and passes cancellation requests and lost leases to the running handlers.
async fn keep_leases(s: Arc<Shared>, stop: CancellationToken) {
    let mut every = tokio::time::interval(s.config.lease / 3);
    every.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        let asked = Instant::now();
        let ids: Vec<i64> = s.held().iter().copied().collect();
        if ids.is_empty() {
            continue;
        }
        let held = match s.repo.renew_leases(&s.id, &ids, s.config.lease).await {
            Ok(held) => held,
            Err(e) => {
                tracing::error!(error = %e, "renewing leases failed");
                continue;
            }
        };
        let held: HashMap<i64, (i32, bool)> = held
            .into_iter()
            .map(|h| (h.id, (h.attempts, h.cancel_requested)))
            .collect();
        let mut running = s.running();
        for (id, r) in running.iter_mut() {
            match held.get(id) {
                Some((attempt, cancel)) if *attempt == r.attempt => {
                    if *cancel {
                        r.cancel_by_request(*id);
                    }
                }
                // Registered after the renewal query began: not yet visible to it.
                _ if r.since >= asked => {}
                _ => {
                    if !r.lost {
                        tracing::warn!(job_id = id, "lease lost; stopping the handler");
                        r.lost = true;
                        r.token.cancel();
                    }
                }
            }
        }
    }
}

/// Takes back jobs whose runner died (expired leases), every half lease.
async fn rescue(s: Arc<Shared>, wake: Arc<Notify>, stop: CancellationToken) {
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
                wake.notify_one();
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "rescuing expired jobs failed"),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn shared() -> Arc<Shared> {
        // the pool connects lazily; these tests never reach a database
        let pool = connectra_persistence::build_pool("postgres://x@127.0.0.1:1/none", 1).unwrap();
        Runner::new(
            JobRepo::new(pool),
            Registry::new(),
            RunnerConfig::new(Mode::FirstTime),
        )
        .shared
    }

    #[test]
    fn a_cancel_request_that_races_the_handlers_registration_is_kept() {
        let s = shared();
        s.held().insert(7);
        // the NOTIFY comes after the start, before the handler is registered
        s.cancel_requested(7);
        let token = CancellationToken::new();
        s.register_running(7, 1, token.clone());
        assert!(token.is_cancelled());
        assert!(s.running()[&7].user_cancelled);
        assert!(s.early_cancels().is_empty());
    }

    #[test]
    fn a_cancel_request_for_a_job_held_elsewhere_is_ignored() {
        let s = shared();
        s.cancel_requested(8);
        assert!(s.early_cancels().is_empty());
        let token = CancellationToken::new();
        s.register_running(8, 1, token.clone());
        assert!(!token.is_cancelled());
        // and one for a running job stops it at once
        s.cancel_requested(8);
        assert!(token.is_cancelled());
        assert!(s.running()[&8].user_cancelled);
    }

    #[test]
    fn letting_a_job_go_drops_its_pending_cancel() {
        let s = shared();
        s.held().insert(9);
        s.cancel_requested(9);
        s.let_go([9]);
        assert!(s.early_cancels().is_empty());
        assert!(!s.held().contains(&9));
    }
}
