//! What every runner process does the same way: tracing, signals, and the
//! mapping from `Settings` to a runner's configuration.

use connectra_config::Settings;
use tokio_util::sync::CancellationToken;

use crate::{Mode, RunnerConfig};

/// Structured logs to stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
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

impl RunnerConfig {
    /// The runner of `mode` as `Settings` describe it. The retry runner has
    /// one worker, as the guide says.
    pub fn from_settings(settings: &Settings, mode: Mode) -> Self {
        let mut c = Self::new(mode);
        c.workers = match mode {
            Mode::FirstTime => settings.parallel_jobs,
            Mode::Retry => 1,
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
