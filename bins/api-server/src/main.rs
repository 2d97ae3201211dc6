//! `api-server`: the Jobs API over HTTP, optionally hosting both runners
//! (`RUN_JOBS_IN_PROCESS=true`); see `connectra_api::serve`.
//! `api-server migrate` only runs migrations.

use connectra_config::Settings;
use connectra_jobs::process::{init_tracing, shutdown_on_signal};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::load()?;
    init_tracing(settings.log_format);
    if std::env::args().nth(1).as_deref() == Some("migrate") {
        connectra_api::migrate(&settings).await?;
        return Ok(());
    }
    let shutdown = shutdown_on_signal()?;
    connectra_api::serve(&settings, settings.http_addr, shutdown).await?;
    Ok(())
}
