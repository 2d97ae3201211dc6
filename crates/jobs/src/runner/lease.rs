//! Lease keeping: renews the lease of every job this runner holds, every
//! third of the lease, and passes cancel requests and lost leases to the
//! running handlers.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::holdings::Renewed;
use super::Shared;

pub(super) async fn keep_leases(s: Arc<Shared>, stop: CancellationToken) {
    let mut every = tokio::time::interval(s.config.lease / 3);
    every.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        let asked = Instant::now();
        let ids = s.holdings.ids();
        if ids.is_empty() {
            continue;
        }
        let renewed = match s.repo.renew_leases(&s.id, &ids, s.config.lease).await {
            Ok(renewed) => renewed,
            Err(e) => {
                tracing::error!(error = %e, "renewing leases failed");
                continue;
            }
        };
        let renewed: HashMap<i64, Renewed> = renewed
            .into_iter()
            .map(|h| {
                let r = Renewed {
                    attempt: h.attempts,
                    cancel_requested: h.cancel_requested,
                };
                (h.id, r)
            })
            .collect();
        s.holdings.renewed(&renewed, asked);
    }
}
