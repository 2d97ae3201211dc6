//! The `LISTEN` connection: wakes the claimer within milliseconds of a job
//! becoming claimable, passes cancel requests for running jobs on at once,
//! and reconnects when the connection drops.

use std::sync::Arc;
use std::time::Duration;

use connectra_persistence::jobs::{CANCEL_CHANNEL, JOBS_CHANNEL};
use futures::StreamExt;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_postgres::{AsyncMessage, NoTls};
use tokio_util::sync::CancellationToken;

use connectra_domain::retry::RetryPolicy;

/// How often the listener proves its connection is alive.
const PING_EVERY: Duration = Duration::from_secs(15);

/// Called with the id of a job whose cancellation was requested.
pub(crate) type OnCancel = Arc<dyn Fn(i64) + Send + Sync>;

/// Spawns the listener. Every notification on the jobs channel, and every
/// (re)connection, wakes `wake`, so work that arrived while disconnected is
/// picked up as soon as the connection is back. Every notification on the
/// cancel channel calls `on_cancel` with the job's id.
pub(crate) fn spawn_listener(
    database_url: String,
    wake: Arc<Notify>,
    on_cancel: OnCancel,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut pauses = RetryPolicy::QUICK.pauses();
        while !shutdown.is_cancelled() {
            let mut listening_since = None;
            let lost = listen(
                &database_url,
                &wake,
                &on_cancel,
                &shutdown,
                &mut listening_since,
            )
            .await;
            let Err(e) = lost else { return };
            // A connection that worked for a while makes this a new outage:
            // the backoff starts over. One dropped at once (a flapping server
            // or proxy) keeps backing off.
            if listening_since.is_some_and(|t: std::time::Instant| t.elapsed() >= PING_EVERY) {
                pauses.reset();
            }
            let wait = pauses.next_pause();
            tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64,
                "LISTEN connection lost; reconnecting");
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    })
}

#[derive(Debug, thiserror::Error)]
enum ListenError {
    #[error(transparent)]
    Postgres(#[from] tokio_postgres::Error),
    #[error("the server closed the LISTEN connection")]
    Closed,
    #[error("the LISTEN connection did not answer within {0:?}")]
    Timeout(std::time::Duration),
}

/// How long a LISTEN or a ping may take before the connection counts as lost.
const ANSWER_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);

/// `sql` on the LISTEN connection, given [`ANSWER_WITHIN`] to answer.
async fn within(client: &tokio_postgres::Client, sql: &str) -> Result<(), ListenError> {
    tokio::time::timeout(ANSWER_WITHIN, client.batch_execute(sql))
        .await
        .map_err(|_| ListenError::Timeout(ANSWER_WITHIN))?
        .map_err(ListenError::from)
}

async fn listen(
    url: &str,
    wake: &Notify,
    on_cancel: &OnCancel,
    shutdown: &CancellationToken,
    listening_since: &mut Option<std::time::Instant>,
) -> Result<(), ListenError> {
    let url = connectra_persistence::connection_url(url);
    let (client, mut connection) =
        tokio::time::timeout(ANSWER_WITHIN, tokio_postgres::connect(&url, NoTls))
            .await
            .map_err(|_| ListenError::Timeout(ANSWER_WITHIN))??;
    // The connection object yields notifications; poll it in this task.
    let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
    let listen_sql = format!("LISTEN {JOBS_CHANNEL}; LISTEN {CANCEL_CHANNEL}");
    let mut pending: Option<futures::future::BoxFuture<'_, Result<(), ListenError>>> =
        Some(Box::pin(within(&client, &listen_sql)));
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            done = async { pending.as_mut().expect("guarded").await }, if pending.is_some() => {
                pending = None;
                done?;
                listening_since.get_or_insert_with(std::time::Instant::now);
                tracing::debug!(channel = JOBS_CHANNEL, "listening for new jobs");
                // catch up on anything that arrived while we were not listening
                wake.notify_one();
            }
            _ = ping.tick(), if pending.is_none() => {
                pending = Some(Box::pin(within(&client, "SELECT 1")));
            }
            msg = messages.next() => match msg {
                Some(Ok(AsyncMessage::Notification(n))) if n.channel() == CANCEL_CHANNEL => {
                    match n.payload().parse::<i64>() {
                        Ok(id) => on_cancel(id),
                        Err(_) => tracing::warn!(payload = n.payload(), "ignoring a cancel notification without a job id"),
                    }
                }
                Some(Ok(AsyncMessage::Notification(_))) => wake.notify_one(),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => return Err(ListenError::Closed),
            },
        }
    }
}
