//! The whole service as one call, [`serve`]: what `api-server` runs and what
//! the black-box tests start on port 0.

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener};

use actix_web::{App, HttpServer};
use connectra_config::{ConfigError, Settings};
use connectra_domain::job::{CreateRules, EXPORT_CSV_FILE, INSERT_CSV_FILE, REINDEX_SEARCH};
use connectra_jobs::builtin::{register, search_from_settings, storage_from_settings, BuiltinDeps};
use connectra_jobs::process::{pool_from_settings, SetupError};
use connectra_jobs::{Mode, Registry, Runner, RunnerConfig};
use connectra_persistence::{run_migrations, JobRepo};
use tokio_util::sync::CancellationToken;

use crate::{configure, AppState};

/// Why [`serve`] or [`migrate`] stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Setup(#[from] SetupError),
    #[error("HTTP_ADDR: cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("running migrations")]
    Migrate(#[source] connectra_persistence::Error),
    #[error("the HTTP server failed")]
    Http(#[source] std::io::Error),
    #[error("an in-process runner panicked")]
    Runner(#[source] tokio::task::JoinError),
}

/// Where [`serve`] listens: an address it binds (`HTTP_ADDR`), or a listener
/// the caller bound (tests bind port 0 and read the port back).
#[derive(Debug)]
pub enum Listen {
    Addr(SocketAddr),
    Bound(TcpListener),
}

impl From<SocketAddr> for Listen {
    fn from(addr: SocketAddr) -> Self {
        Self::Addr(addr)
    }
}

impl From<TcpListener> for Listen {
    fn from(listener: TcpListener) -> Self {
        Self::Bound(listener)
    }
}

/// Runs the pending migrations (`api-server migrate`, and [`serve`] before it
/// serves); returns how many ran.
pub async fn migrate(settings: &Settings) -> Result<usize, ServeError> {
    let ran = run_migrations(settings.database_url.expose())
        .await
        .map_err(ServeError::Migrate)?;
    tracing::info!(migrations = ran, "database schema is up to date");
    Ok(ran)
}

/// The Jobs API until `shutdown` is cancelled. In order: checks the settings
/// (`API_KEYS`, the `S3_*` and the pool's) before anything touches the
/// database, binds `listen`, runs the migrations, builds storage, search and
/// the built-in handlers, starts both runners in-process when
/// `RUN_JOBS_IN_PROCESS` is set (only now, so a port clash leaves no job
/// claimed), and serves. After `shutdown` the server drains its requests
/// (`SHUTDOWN_GRACE_SECONDS`) and the runners stop; this returns once all
/// have.
///
/// The API accepts the job types of the built-in handlers even when S3 is not
/// configured (their jobs then wait in `open` for a runner that has it).
pub async fn serve(
    settings: &Settings,
    listen: impl Into<Listen>,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    settings.validate_for_api()?;
    // before anything runs, so `/metrics` counts from the start
    connectra_jobs::metrics::install();
    let s3 = storage_from_settings(settings)?;
    let pool = pool_from_settings(settings)?;
    let listener = match listen.into() {
        Listen::Bound(listener) => listener,
        Listen::Addr(addr) => {
            TcpListener::bind(addr).map_err(|source| ServeError::Bind { addr, source })?
        }
    };
    let addr = listener.local_addr().map_err(ServeError::Http)?;
    migrate(settings).await?;

    let repo = JobRepo::new(pool.clone());
    let search = search_from_settings(settings, pool).await?;
    let mut registry = Registry::new();
    if let Some((storage, bucket)) = &s3 {
        let deps =
            BuiltinDeps::from_settings(settings, storage.clone(), bucket.clone(), search.clone());
        register(&mut registry, deps);
    }
    let state = app_state(settings, repo.clone(), &registry).with_search(search);
    let state = match s3 {
        Some((storage, bucket)) => {
            tracing::info!(?storage, %bucket, "S3 configured: upload URLs on, /ready checks the bucket");
            state.with_storage(
                storage,
                bucket,
                settings.s3_upload_file_path_prefix().to_string(),
            )
        }
        None => {
            tracing::warn!("S3_BUCKET is not set: GET /common/upload-url answers 503");
            state
        }
    };

    let server = HttpServer::new(move || App::new().configure(configure(state.clone())))
        .listen(listener)
        .map_err(|source| ServeError::Bind { addr, source })?
        .disable_signals()
        .shutdown_timeout(settings.shutdown_grace_seconds)
        .run();
    // The runners stop with `shutdown`, and also when the server ends on its own.
    let stop = shutdown.child_token();
    let runners: Vec<_> = if settings.run_jobs_in_process {
        [Mode::FirstTime, Mode::Retry]
            .into_iter()
            .map(|mode| {
                let config = RunnerConfig::from_settings(settings, mode);
                let runner = Runner::new(repo.clone(), registry.clone(), config);
                tokio::spawn(runner.run(stop.clone()))
            })
            .collect()
    } else {
        Vec::new()
    };
    tracing::info!(%addr, in_process_runners = runners.len(), "api-server listening");
    let handle = server.handle();
    let stopping = stop.clone();
    tokio::spawn(async move {
        stopping.cancelled().await;
        handle.stop(true).await;
    });
    let served = server.await.map_err(ServeError::Http);
    stop.cancel();
    for runner in runners {
        runner.await.map_err(ServeError::Runner)?;
    }
    served
}

/// The handlers' state: the job types the API accepts (those of `registry`
/// and the built-ins), the buckets, the keys and the limits of `settings`.
fn app_state(settings: &Settings, repo: JobRepo, registry: &Registry) -> AppState {
    let mut job_types: BTreeSet<String> = registry.job_types().into_iter().collect();
    job_types.extend([
        INSERT_CSV_FILE.to_string(),
        EXPORT_CSV_FILE.to_string(),
        REINDEX_SEARCH.to_string(),
    ]);
    let rules = CreateRules {
        job_types,
        allowed_buckets: settings.s3_allowed_buckets.iter().cloned().collect(),
        default_retry_interval: settings.retry_interval_seconds,
    };
    let keys = settings
        .api_keys
        .iter()
        .map(|k| k.expose().trim().to_string())
        .collect();
    AppState::new(repo, keys, rules, settings.max_body_bytes)
}
