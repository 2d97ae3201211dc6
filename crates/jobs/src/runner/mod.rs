//! The runner: a claimer that fills a bounded queue, a dispatcher that
//! starts claimed jobs on a pool of workers, a finisher that writes their
//! outcomes, a lease keeper, a rescuer, and a graceful shutdown. One module
//! per role; they share one [`Shared`] state, whose only lock is
//! [`Holdings`]'.

mod claim;
mod dispatch;
mod finish;
mod holdings;
mod lease;
mod rescue;
mod shutdown;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use connectra_persistence::jobs::ClaimKind;
use connectra_persistence::{Job, JobRepo};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::handler::Registry;
use crate::listen::{spawn_listener, OnCancel};
use holdings::Holdings;

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
    /// The defaults (`connectra_config::defaults`, the one home of every
    /// setting's default), for the given mode, without `LISTEN`.
    pub fn new(mode: Mode) -> Self {
        use connectra_config::defaults;
        Self {
            mode,
            workers: match mode {
                Mode::FirstTime => defaults::PARALLEL_JOBS,
                Mode::Retry => defaults::RETRY_RUNNER_WORKERS,
            },
            queue_size: defaults::JOB_IN_QUEUE_SIZE,
            ticker: defaults::TICKER_INTERVAL,
            lease: defaults::JOB_LEASE,
            shutdown_grace: defaults::SHUTDOWN_GRACE,
            // not a setting: how long a stopped handler may take to reach
            // its next batch boundary
            stop_timeout: Duration::from_secs(30),
            max_rescues: defaults::JOB_MAX_RESCUES,
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
    fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }

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

/// What every role of one runner shares.
struct Shared {
    repo: JobRepo,
    registry: Registry,
    config: RunnerConfig,
    id: Arc<str>,
    /// Every job this runner holds, queued or running: the one lock.
    holdings: Holdings,
    /// Cancelled when the grace period ends: every handler's token is a child.
    stop_handlers: CancellationToken,
    counters: Counters,
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
                holdings: Holdings::default(),
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
        self.run_until(shutdown, claim::Until::Shutdown).await
    }

    /// Runs what is due now, then stops: claims until a claim finds nothing
    /// and every job it took has its outcome written, then shuts down as
    /// [`Runner::run`] does. What tests use to show that nothing was left
    /// to run (its report's `claimed`), instead of sleeping; also a
    /// one-shot drain for tools. Retries that fall due later are not
    /// waited for.
    pub async fn run_until_idle(self) -> RunReport {
        self.run_until(CancellationToken::new(), claim::Until::Idle)
            .await
    }

    async fn run_until(self, shutdown: CancellationToken, until: claim::Until) -> RunReport {
        // cancelled by the caller, or by the claimer running out of work
        let shutdown = shutdown.child_token();
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
                let on_cancel: OnCancel = Arc::new(move |id| shared.holdings.cancel_requested(id));
                spawn_listener(url, wake.clone(), on_cancel, background.clone())
            });
            let keeper = tokio::spawn(lease::keep_leases(s.clone(), background.clone()));
            let rescuer = tokio::spawn(rescue::rescue(s.clone(), wake.clone(), background.clone()));

            let (done_tx, done_rx) = mpsc::unbounded_channel();
            let finisher = tokio::spawn(finish::finish_loop(s.clone(), done_rx));
            let dispatcher = tokio::spawn(
                dispatch::dispatch(s.clone(), rx, done_tx, shutdown.clone())
                    .instrument(tracing::Span::current()),
            );

            claim::claim_loop(&s, &tx, &wake, &shutdown, until).await;
            // the claimer may have stopped because it ran out of work
            shutdown.cancel();

            match dispatcher.await {
                Ok((queue, tasks)) => shutdown::shut_down(&s, queue, tasks).await,
                Err(e) => {
                    tracing::error!(error = %e, "the dispatcher failed");
                    return s.counters.report();
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
