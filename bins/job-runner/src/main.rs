//! `job-runner`: the guide's `first_time` runner, for `open` jobs.

use connectra_config::Settings;
use connectra_jobs::process::{init_tracing, run_runner, shutdown_on_signal};
use connectra_jobs::Mode;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::load()?;
    init_tracing(settings.log_format);
    run_runner(&settings, Mode::FirstTime, shutdown_on_signal()?).await?;
    Ok(())
}
