//! `job-runner`: the guide's `first_time` runner, for `open` jobs.

use connectra_config::Settings;
use connectra_jobs::builtin::registry_from_settings;
use connectra_jobs::process::{init_tracing, shutdown_on_signal};
use connectra_jobs::{Mode, Runner, RunnerConfig};
use connectra_persistence::{build_pool_with_statement_timeout, JobRepo};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::load()?;
    init_tracing();
    let config = RunnerConfig::from_settings(&settings, Mode::FirstTime);
    let pool = build_pool_with_statement_timeout(
        settings.database_url.expose(),
        settings.database_pool_size,
        settings.statement_timeout(),
    )?;
    let registry = registry_from_settings(&settings, pool.clone()).await?;
    let runner = Runner::new(JobRepo::new(pool), registry, config);
    runner.run(shutdown_on_signal()?).await;
    Ok(())
}
