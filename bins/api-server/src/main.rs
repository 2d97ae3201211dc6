//! `api-server`: the Jobs API over HTTP, optionally hosting both runners
//! (`RUN_JOBS_IN_PROCESS=true`). `api-server migrate` only runs migrations.

use std::collections::BTreeSet;

use actix_web::{App, HttpServer};
use anyhow::Context;
use connectra_api::{configure, AppState};
use connectra_config::Settings;
use connectra_domain::job::{CreateRules, EXPORT_CSV_FILE, INSERT_CSV_FILE};
use connectra_jobs::builtin::{register, search_from_settings, storage_from_settings, BuiltinDeps};
use connectra_jobs::process::{init_tracing, shutdown_on_signal};
use connectra_jobs::{Mode, Registry, Runner, RunnerConfig};
use connectra_persistence::{build_pool_with_statement_timeout, run_migrations, JobRepo};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::load()?;
    init_tracing();
    let url = settings.database_url.expose();
    let ran = run_migrations(url).await.context("running migrations")?;
    tracing::info!(migrations = ran, "database schema is up to date");
    if std::env::args().nth(1).as_deref() == Some("migrate") {
        return Ok(());
    }
    settings.validate_for_api()?;
    let s3 = storage_from_settings(&settings)?;
    let pool = build_pool_with_statement_timeout(
        url,
        settings.database_pool_size,
        settings.statement_timeout(),
    )?;
    let repo = JobRepo::new(pool.clone());
    let shutdown = shutdown_on_signal()?;
    let search = search_from_settings(&settings, pool).await?;

    let mut registry = Registry::new();
    if let Some((storage, bucket)) = &s3 {
        let deps =
            BuiltinDeps::from_settings(&settings, storage.clone(), bucket.clone(), search.clone());
        register(&mut registry, deps);
    }
    let mut job_types: BTreeSet<String> = registry.job_types().into_iter().collect();
    job_types.extend([INSERT_CSV_FILE.to_string(), EXPORT_CSV_FILE.to_string()]);
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
    let state = AppState::new(repo.clone(), keys, rules, settings.max_body_bytes)
        .with_search(search.clone());
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

    let runners: Vec<_> = if settings.run_jobs_in_process {
        [Mode::FirstTime, Mode::Retry]
            .into_iter()
            .map(|mode| {
                let config = RunnerConfig::from_settings(&settings, mode);
                let runner = Runner::new(repo.clone(), registry.clone(), config);
                tokio::spawn(runner.run(shutdown.clone()))
            })
            .collect()
    } else {
        Vec::new()
    };

    let server = HttpServer::new(move || App::new().configure(configure(state.clone())))
        .bind(settings.http_addr)
        .with_context(|| format!("HTTP_ADDR: cannot listen on {}", settings.http_addr))?
        .disable_signals()
        .shutdown_timeout(settings.shutdown_grace_seconds)
        .run();
    tracing::info!(addr = %settings.http_addr, in_process_runners = runners.len(), "api-server listening");
    let handle = server.handle();
    tokio::spawn(async move {
        shutdown.cancelled().await;
        handle.stop(true).await;
    });
    server.await?;
    for runner in runners {
        runner.await?;
    }
    Ok(())
}
