//! An embedding example: a service that runs `connectra-jobs` with job types
//! of its own. The crate's tests spawn it as a real runner process (and kill it).
//!
//! Job types: `sleep` (`{"ms": 5000}`: sleeps in 50 ms steps, checking for
//! cancellation and recording a checkpoint after each step, resuming from it)
//! and `noop` (completes at once).
//!
//! Configured from the environment, as a service embedding the crate would do
//! with its own settings: `DATABASE_URL`, `MODE` (`first_time`|`retry`),
//! `PARALLEL_JOBS`, `JOB_IN_QUEUE_SIZE`, `JOB_LEASE_SECONDS`,
//! `SHUTDOWN_GRACE_SECONDS`.

use std::time::Duration;

use anyhow::Context;
use connectra_jobs::{JobContext, JobResponse, Mode, Progress, Registry, Runner, RunnerConfig};
use connectra_persistence::{build_pool, JobRepo};
use serde_json::json;
use tokio_util::sync::CancellationToken;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .map_err(|_| anyhow::anyhow!("{name} has an invalid value '{v}'")),
        Err(_) => Ok(default),
    }
}

async fn sleep_job(ctx: JobContext) -> anyhow::Result<JobResponse> {
    let total_ms = ctx
        .data()
        .get("ms")
        .and_then(|v| v.as_u64())
        .unwrap_or(1000);
    let mut done_ms = ctx
        .checkpoint()
        .and_then(|c| c.get("done_ms"))
        .and_then(|v| v.as_u64())
        .unwrap_or(0);
    while done_ms < total_ms {
        if ctx.is_cancelled() {
            return Err(ctx.stopped());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        done_ms = (done_ms + 50).min(total_ms);
        let progress = Progress {
            rows_processed: (done_ms / 50) as i64,
            ..Progress::default()
        };
        ctx.record_progress(&progress, Some(&json!({ "done_ms": done_ms })))
            .await?;
    }
    Ok(JobResponse {
        messages: Some(format!("slept {total_ms} ms")),
        ..JobResponse::default()
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let url = std::env::var("DATABASE_URL").context("DATABASE_URL is required")?;
    let mode = match std::env::var("MODE").as_deref() {
        Ok("retry") => Mode::Retry,
        Ok("first_time") | Err(_) => Mode::FirstTime,
        Ok(other) => anyhow::bail!("MODE has an invalid value '{other}'"),
    };
    let mut config = RunnerConfig::new(mode);
    config.workers = env_or("PARALLEL_JOBS", config.workers)?;
    config.queue_size = env_or("JOB_IN_QUEUE_SIZE", config.queue_size)?;
    config.lease = Duration::from_secs(env_or("JOB_LEASE_SECONDS", 30)?);
    config.shutdown_grace = Duration::from_secs(env_or("SHUTDOWN_GRACE_SECONDS", 30)?);
    config.listen_url = Some(url.clone());

    let mut registry = Registry::new();
    registry.register_fn("sleep", sleep_job);
    registry.register_fn("noop", |_ctx: JobContext| async {
        Ok(JobResponse::default())
    });

    let pool = build_pool(&url, config.workers + 4)?;
    let runner = Runner::new(JobRepo::new(pool), registry, config);
    println!("runner {}", runner.id());

    let shutdown = CancellationToken::new();
    let trigger = shutdown.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        trigger.cancel();
    });
    let report = runner.run(shutdown).await;
    println!("stopped {report:?}");
    Ok(())
}
