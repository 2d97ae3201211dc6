//! Graceful shutdown, once the claimer has stopped: hand back what is still
//! queued, give running jobs the grace period, then ask them to stop at a
//! batch boundary, and after the stop timeout abort them and hand their
//! jobs back anyway.

use connectra_persistence::jobs::Fence;
use connectra_persistence::Job;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::{finish, Counters, Shared};

pub(super) async fn shut_down(s: &Shared, mut queue: mpsc::Receiver<Job>, mut tasks: JoinSet<()>) {
    let cfg = &s.config;
    tracing::info!("shutdown: no more claims; releasing queued jobs");
    queue.close();
    while let Ok(job) = queue.try_recv() {
        finish::release(s, &job).await;
    }
    if tokio::time::timeout(cfg.shutdown_grace, drain(&mut tasks))
        .await
        .is_ok()
    {
        return;
    }
    tracing::warn!(
        grace_s = cfg.shutdown_grace.as_secs_f64(),
        "grace period over; stopping running jobs at a batch boundary"
    );
    s.stop_handlers.cancel();
    if tokio::time::timeout(cfg.stop_timeout, drain(&mut tasks))
        .await
        .is_err()
    {
        tracing::error!("handlers ignored the stop request; aborting them");
        abort_running(s).await;
        tasks.abort_all();
        drain(&mut tasks).await;
    }
}

async fn drain(workers: &mut JoinSet<()>) {
    while workers.join_next().await.is_some() {}
}

/// Aborts handlers that ignored the stop request and hands their jobs back.
async fn abort_running(s: &Shared) {
    for (id, attempt) in s.holdings.abort_running() {
        let fence = Fence {
            id,
            attempt,
            runner_id: &s.id,
        };
        let released = s.repo.release(fence).await;
        s.holdings.let_go([id]);
        if matches!(released, Ok(true)) {
            Counters::add(&s.counters.released, 1);
        }
    }
}
