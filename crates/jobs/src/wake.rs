//! When the claimer looks for work: on a `NOTIFY`, on the safety-net ticker,
//! when a retry falls due, or never again once shutdown starts.

use tokio::sync::Notify;
use tokio::time::{Instant, Interval};
use tokio_util::sync::CancellationToken;

/// Why [`wait_for_work`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wake {
    Notified,
    Tick,
    Due,
    Shutdown,
}

/// Waits for the first reason to look for work. A `NOTIFY` that arrived while
/// the claimer was busy is kept by `Notify` as a permit, so none is lost.
pub(crate) async fn wait_for_work(
    notify: &Notify,
    ticker: &mut Interval,
    due: Option<Instant>,
    shutdown: &CancellationToken,
) -> Wake {
    let due_sleep = async {
        match due {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        biased;
        _ = shutdown.cancelled() => Wake::Shutdown,
        _ = notify.notified() => Wake::Notified,
        _ = due_sleep => Wake::Due,
        _ = ticker.tick() => Wake::Tick,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::time::{interval, MissedTickBehavior};

    async fn ticker(every: Duration) -> Interval {
        let mut t = interval(every);
        t.set_missed_tick_behavior(MissedTickBehavior::Delay);
        t.tick().await; // the first tick is immediate
        t
    }

    #[tokio::test(start_paused = true)]
    async fn without_notifications_the_ticker_fires_exactly_once_per_interval() {
        let notify = Notify::new();
        let shutdown = CancellationToken::new();
        let mut t = ticker(Duration::from_secs(300)).await;
        let start = Instant::now();
        for n in 1..=3u32 {
            assert_eq!(
                wait_for_work(&notify, &mut t, None, &shutdown).await,
                Wake::Tick
            );
            assert_eq!(start.elapsed(), Duration::from_secs(300) * n);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_notification_wakes_at_once_even_if_it_came_before_the_wait() {
        let notify = Arc::new(Notify::new());
        let shutdown = CancellationToken::new();
        let mut t = ticker(Duration::from_secs(300)).await;
        notify.notify_one();
        let start = Instant::now();
        assert_eq!(
            wait_for_work(&notify, &mut t, None, &shutdown).await,
            Wake::Notified
        );
        assert_eq!(start.elapsed(), Duration::ZERO);

        let n2 = notify.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(7)).await;
            n2.notify_one();
        });
        assert_eq!(
            wait_for_work(&notify, &mut t, None, &shutdown).await,
            Wake::Notified
        );
        assert_eq!(start.elapsed(), Duration::from_secs(7));
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_falling_due_before_the_tick_wakes_at_its_time() {
        let notify = Notify::new();
        let shutdown = CancellationToken::new();
        let mut t = ticker(Duration::from_secs(300)).await;
        let start = Instant::now();
        let due = Some(start + Duration::from_secs(42));
        assert_eq!(
            wait_for_work(&notify, &mut t, due, &shutdown).await,
            Wake::Due
        );
        assert_eq!(start.elapsed(), Duration::from_secs(42));
        // a due time after the tick does not delay the tick
        let late = Some(start + Duration::from_secs(10_000));
        assert_eq!(
            wait_for_work(&notify, &mut t, late, &shutdown).await,
            Wake::Tick
        );
        assert_eq!(start.elapsed(), Duration::from_secs(300));
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_wins_over_everything_else() {
        let notify = Notify::new();
        notify.notify_one();
        let shutdown = CancellationToken::new();
        shutdown.cancel();
        let mut t = ticker(Duration::from_secs(1)).await;
        assert_eq!(
            wait_for_work(&notify, &mut t, None, &shutdown).await,
            Wake::Shutdown
        );
    }
}
