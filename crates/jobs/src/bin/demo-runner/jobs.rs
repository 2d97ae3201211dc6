//! The demo's job types and its configuration.
//!
//! Job types: `sleep` (`{"ms": 5000}`: sleeps in 50 ms steps, checking for
//! cancellation and recording a checkpoint after each step, resuming from it)
//! and `noop` (completes at once).

use std::time::Duration;

use anyhow::Context;
use connectra_jobs::{JobContext, JobResponse, Mode, Progress, Registry, RunnerConfig};
use serde_json::json;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .map_err(|_| anyhow::anyhow!("{name} has an invalid value '{v}'")),
        Err(_) => Ok(default),
    }
}

/// `DATABASE_URL` and the runner's configuration from the variables the
/// binary's doc lists (it also `LISTEN`s on `DATABASE_URL`).
pub fn config_from_env() -> anyhow::Result<(String, RunnerConfig)> {
    let url = std::env::var("DATABASE_URL").context("DATABASE_URL is required")?;
    let mode = match std::env::var("MODE").as_deref() {
        Ok("retry") => Mode::Retry,
        Ok("first_time") | Err(_) => Mode::FirstTime,
        Ok(other) => anyhow::bail!("MODE has an invalid value '{other}'"),
    };
    let mut config = RunnerConfig::new(mode);
    config.workers = env_or("PARALLEL_JOBS", config.workers)?;
    config.queue_size = env_or("JOB_IN_QUEUE_SIZE", config.queue_size)?;
    config.lease = Duration::from_secs(env_or("JOB_LEASE_SECONDS", config.lease.as_secs())?);
    config.shutdown_grace = Duration::from_secs(env_or(
        "SHUTDOWN_GRACE_SECONDS",
        config.shutdown_grace.as_secs(),
    )?);
    config.listen_url = Some(url.clone());
    Ok((url, config))
}

/// `sleep` and `noop`.
pub fn registry() -> Registry {
    let mut registry = Registry::new();
    registry.register_fn("sleep", sleep_job);
    registry.register_fn("noop", |_ctx: JobContext| async {
        Ok(JobResponse::default())
    });
    registry
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
