//! `retry-runner`: the guide's `retry` runner, for failed jobs whose `run_after` has passed.

use connectra_config::Settings;
use connectra_jobs::process::{init_tracing, run_runner, shutdown_on_signal};
use connectra_jobs::Mode;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::load()?;
    init_tracing(settings.log_format);
    run_runner(&settings, Mode::Retry, shutdown_on_signal()?).await?;
    Ok(())
}
