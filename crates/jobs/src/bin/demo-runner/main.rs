//! An embedding example: a service that runs `connectra-jobs` with job types
//! of its own (see `jobs.rs`). The crate's tests spawn it as a real runner
//! process (and kill it).
//!
//! Configured from the environment, as a service embedding the crate would do
//! with its own settings: `DATABASE_URL`, `MODE` (`first_time`|`retry`),
//! `PARALLEL_JOBS`, `JOB_IN_QUEUE_SIZE`, `JOB_LEASE_SECONDS`,
//! `SHUTDOWN_GRACE_SECONDS`. Tracing and signals are the crate's own
//! (`connectra_jobs::process`).

mod jobs;

use connectra_jobs::process::{init_tracing, shutdown_on_signal};
use connectra_jobs::Runner;
use connectra_persistence::{build_pool, JobRepo};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_tracing(connectra_config::LogFormat::default());
    let (url, config) = jobs::config_from_env()?;
    let pool = build_pool(&url, config.workers + 4)?;
    let runner = Runner::new(JobRepo::new(pool), jobs::registry(), config);
    println!("runner {}", runner.id());
    let report = runner.run(shutdown_on_signal()?).await;
    println!("stopped {report:?}");
    Ok(())
}
