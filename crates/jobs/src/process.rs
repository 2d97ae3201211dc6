//! What every runner process does the same way: tracing, signals, the
//! mapping from `Settings` to a runner's configuration, and (with the
//! `builtin` feature) a runner binary's whole life, [`run_runner`].

use connectra_config::{defaults, Settings};
use connectra_persistence::{build_pool_with_statement_timeout, PgPool};
use tokio_util::sync::CancellationToken;

use crate::{Mode, RunnerConfig};

/// Why a process could not start: a setting its resources reject. Each
/// variant names the variables to look at; the source says what failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    #[error("DATABASE_URL / DATABASE_POOL_SIZE: cannot build the database pool")]
    Pool(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[cfg(feature = "builtin")]
    #[error("S3_BUCKET is invalid")]
    Bucket(#[source] connectra_storage::StorageError),
    #[cfg(feature = "builtin")]
    #[error("S3_ENDPOINT / S3_REGION / S3_ACCESS_KEY_ID / S3_SECRET_ACCESS_KEY")]
    Storage(#[source] connectra_storage::StorageError),
    #[cfg(feature = "builtin")]
    #[error("METRICS_ADDR {addr}: cannot serve metrics")]
    Metrics {
        addr: std::net::SocketAddr,
        #[source]
        source: metrics_exporter_prometheus::BuildError,
    },
    #[cfg(feature = "builtin")]
    #[error("OPENSEARCH_URL")]
    SearchUrl(#[source] connectra_search::SearchError),
    #[cfg(feature = "builtin")]
    #[error("preparing the {backend} search indices")]
    SearchIndices {
        backend: &'static str,
        #[source]
        source: connectra_search::SearchError,
    },
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`), as text lines
/// or, with `LOG_FORMAT=json`, one JSON object per line: the event's fields
/// (`rows`, `batch`, `error`, …) at the top level, the current span's
/// (`job_uuid`, `job_type`, `attempt`) under `span`, and every open span
/// (the runner's `runner_id` and `mode` too) under `spans`.
pub fn init_tracing(format: connectra_config::LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        connectra_config::LogFormat::Text => builder.try_init(),
        connectra_config::LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .try_init(),
    };
}

/// A token cancelled on the first SIGTERM or SIGINT.
pub fn shutdown_on_signal() -> std::io::Result<CancellationToken> {
    let token = CancellationToken::new();
    let trigger = token.clone();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received; shutting down"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received; shutting down"),
        }
        trigger.cancel();
    });
    Ok(token)
}

/// The pool of a process as `Settings` describe it: `DATABASE_URL`,
/// `DATABASE_POOL_SIZE` and `DATABASE_STATEMENT_TIMEOUT_SECONDS`.
pub fn pool_from_settings(settings: &Settings) -> Result<PgPool, SetupError> {
    build_pool_with_statement_timeout(
        settings.database_url.expose(),
        settings.database_pool_size,
        settings.statement_timeout(),
    )
    .map_err(|e| SetupError::Pool(Box::new(e)))
}

/// A runner binary's whole life (`job-runner`, `retry-runner`): the pool,
/// the built-in handlers (see [`crate::builtin::registry_from_settings`]),
/// and the runner of `mode` until `shutdown` is cancelled and it has
/// stopped.
#[cfg(feature = "builtin")]
pub async fn run_runner(
    settings: &Settings,
    mode: Mode,
    shutdown: CancellationToken,
) -> Result<crate::RunReport, SetupError> {
    let config = RunnerConfig::from_settings(settings, mode);
    if let Some(addr) = settings.metrics_addr {
        crate::metrics::serve_on(addr).map_err(|source| SetupError::Metrics { addr, source })?;
        tracing::info!(%addr, "serving Prometheus metrics at /metrics");
    }
    let pool = pool_from_settings(settings)?;
    let registry = crate::builtin::registry_from_settings(settings, pool.clone()).await?;
    let runner = crate::Runner::new(connectra_persistence::JobRepo::new(pool), registry, config);
    Ok(runner.run(shutdown).await)
}

impl RunnerConfig {
    /// The runner of `mode` as `Settings` describe it. The retry runner has
    /// one worker, as the guide says.
    pub fn from_settings(settings: &Settings, mode: Mode) -> Self {
        let mut c = Self::new(mode);
        c.workers = match mode {
            Mode::FirstTime => settings.parallel_jobs,
            Mode::Retry => defaults::RETRY_RUNNER_WORKERS,
        };
        c.queue_size = settings.job_in_queue_size;
        c.ticker = settings.ticker_interval();
        c.lease = settings.job_lease();
        c.shutdown_grace = settings.shutdown_grace();
        c.max_rescues = settings.job_max_rescues;
        c.listen_url = Some(settings.database_url.expose().to_string());
        c
    }
}
