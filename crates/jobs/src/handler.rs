//! Handlers, the context they run in, and the registry that maps job types to them.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use connectra_domain::job::JobResponse;
use connectra_persistence::jobs::{Fence, Progress};
use connectra_persistence::{Job, JobRepo};
use futures::future::BoxFuture;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// What a handler returns: a response for a completed job, or an error that
/// fails it (and may be retried).
pub type HandlerResult = anyhow::Result<JobResponse>;

/// Runs one job type. Implement it, or register a closure with
/// [`Registry::register_fn`].
pub trait JobHandler: Send + Sync + 'static {
    fn run(&self, ctx: JobContext) -> BoxFuture<'static, HandlerResult>;
}

impl<F, Fut> JobHandler for F
where
    F: Fn(JobContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send + 'static,
{
    fn run(&self, ctx: JobContext) -> BoxFuture<'static, HandlerResult> {
        Box::pin(self(ctx))
    }
}

/// The handlers a runner can execute, keyed by `job_type`. A runner claims
/// only jobs whose type is registered here.
#[derive(Clone, Default)]
pub struct Registry {
    handlers: BTreeMap<String, Arc<dyn JobHandler>>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.handlers.keys()).finish()
    }
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `handler` for `job_type`, replacing any earlier one.
    pub fn register(&mut self, job_type: impl Into<String>, handler: impl JobHandler) -> &mut Self {
        self.handlers.insert(job_type.into(), Arc::new(handler));
        self
    }

    /// Registers an async closure: `registry.register_fn("sleep", |ctx| async move { … })`.
    pub fn register_fn<F, Fut>(&mut self, job_type: impl Into<String>, f: F) -> &mut Self
    where
        F: Fn(JobContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        self.register(job_type, f)
    }

    pub fn job_types(&self) -> Vec<String> {
        self.handlers.keys().cloned().collect()
    }

    pub fn is_empty(&self) -> bool {
        self.handlers.is_empty()
    }

    pub(crate) fn get(&self, job_type: &str) -> Option<Arc<dyn JobHandler>> {
        self.handlers.get(job_type).cloned()
    }
}

/// The error a handler returns when it stops early because it was asked to
/// (cancellation or shutdown). See [`JobContext::stopped`].
#[derive(Debug, thiserror::Error)]
#[error("the job was stopped at a batch boundary")]
pub struct Stopped;

/// Progress writes are refused once the runner no longer holds the job.
#[derive(Debug, thiserror::Error)]
pub enum ProgressError {
    #[error("the lease on this job was lost; another attempt owns it now")]
    LeaseLost,
    #[error(transparent)]
    Database(#[from] connectra_persistence::Error),
}

/// What a handler gets: the job, a cancellation token to check at batch
/// boundaries, and a way to record progress and a checkpoint.
#[derive(Clone)]
pub struct JobContext {
    job: Arc<Job>,
    repo: JobRepo,
    runner_id: Arc<str>,
    cancel: CancellationToken,
}

impl fmt::Debug for JobContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobContext")
            .field("job", &self.job.uuid)
            .field("attempt", &self.job.attempts)
            .finish()
    }
}

impl JobContext {
    pub(crate) fn new(
        job: Arc<Job>,
        repo: JobRepo,
        runner_id: Arc<str>,
        cancel: CancellationToken,
    ) -> Self {
        Self {
            job,
            repo,
            runner_id,
            cancel,
        }
    }

    pub fn job(&self) -> &Job {
        &self.job
    }

    /// The id of the runner that holds this attempt: with the job's id and
    /// `attempts`, what a handler's own writes are fenced by.
    pub fn runner_id(&self) -> &str {
        &self.runner_id
    }

    /// `job_data`.
    pub fn data(&self) -> &Value {
        &self.job.data
    }

    /// Where a previous attempt stopped, if it recorded a checkpoint.
    pub fn checkpoint(&self) -> Option<&Value> {
        self.job.checkpoint.as_ref()
    }

    /// True once the job was cancelled, the runner is shutting down past its
    /// grace period, or the lease was lost. Check it between batches.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// The token behind [`Self::is_cancelled`], for `select!`.
    pub fn cancellation(&self) -> &CancellationToken {
        &self.cancel
    }

    /// The error to return after stopping early: `return Err(ctx.stopped())`.
    pub fn stopped(&self) -> anyhow::Error {
        Stopped.into()
    }

    /// Records progress and, when given, the checkpoint a retry resumes from.
    /// Fenced by this attempt: fails with [`ProgressError::LeaseLost`] once
    /// another attempt owns the job.
    pub async fn record_progress(
        &self,
        progress: &Progress,
        checkpoint: Option<&Value>,
    ) -> Result<(), ProgressError> {
        if self
            .repo
            .record_progress(self.fence(), progress, checkpoint)
            .await?
        {
            Ok(())
        } else {
            Err(ProgressError::LeaseLost)
        }
    }

    fn fence(&self) -> Fence<'_> {
        self.job.fence(&self.runner_id)
    }
}
