//! Every job a runner holds, queued or running, under one lock: the leases
//! it renews, the handlers it can stop, and cancel requests that arrived
//! before a handler was registered.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use tokio::sync::Notify;
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// A job this runner holds. It is held from its claim until its outcome is
/// written, or could not be, so that a job this runner lost track of
/// expires and is rescued.
#[derive(Default)]
struct Holding {
    /// A cancel request that came after the job's start in the database but
    /// before its handler was registered; taken when it is.
    cancel_pending: bool,
    running: Option<Running>,
}

/// A job a worker is running.
struct Running {
    attempt: i32,
    since: Instant,
    token: CancellationToken,
    user_cancelled: bool,
    lost: bool,
    abort: Option<AbortHandle>,
}

impl Running {
    /// Someone asked for the job to be cancelled: stop the handler (once).
    fn cancel_by_request(&mut self, id: i64) {
        if !self.user_cancelled {
            tracing::info!(job_id = id, "cancellation requested; stopping the handler");
            self.user_cancelled = true;
            self.token.cancel();
        }
    }
}

/// How a handler's run ended, as far as the runner's own state knows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct RunFlags {
    pub user_cancelled: bool,
    pub lost: bool,
}

/// What a lease renewal found for one job: its attempt, and whether a
/// cancel was requested.
pub(super) struct Renewed {
    pub attempt: i32,
    pub cancel_requested: bool,
}

#[derive(Default)]
pub(super) struct Holdings {
    jobs: Mutex<HashMap<i64, Holding>>,
    /// Notified each time the last held job is let go.
    emptied: Notify,
}

impl Holdings {
    fn lock(&self) -> MutexGuard<'_, HashMap<i64, Holding>> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Claimed jobs: their leases are renewed from now on.
    pub fn hold(&self, ids: impl IntoIterator<Item = i64>) {
        let mut jobs = self.lock();
        for id in ids {
            jobs.entry(id).or_default();
        }
    }

    /// The ids of every job held, for the lease renewal.
    pub fn ids(&self) -> Vec<i64> {
        self.lock().keys().copied().collect()
    }

    /// Whether this runner holds no job.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Returns once this runner holds no job (at once if it holds none).
    pub async fn until_empty(&self) {
        loop {
            let emptied = self.emptied.notified();
            if self.lock().is_empty() {
                return;
            }
            emptied.await;
        }
    }

    #[cfg(test)]
    pub fn holds(&self, id: i64) -> bool {
        self.lock().contains_key(&id)
    }

    /// A cancel request for job `id` arrived: stop its handler if it runs
    /// here, or keep the request for its handler if it is about to start.
    /// (A job with a cancel request is never claimed again, so whichever
    /// attempt runs here is the one to stop.)
    pub fn cancel_requested(&self, id: i64) {
        if let Some(h) = self.lock().get_mut(&id) {
            match &mut h.running {
                Some(r) => r.cancel_by_request(id),
                None => h.cancel_pending = true,
            }
        }
    }

    /// Registers a started job's handler, taking a cancel request that
    /// arrived between its start in the database and now.
    pub fn register_running(&self, id: i64, attempt: i32, token: CancellationToken) {
        let mut jobs = self.lock();
        let h = jobs.entry(id).or_default();
        let mut running = Running {
            attempt,
            since: Instant::now(),
            token,
            user_cancelled: false,
            lost: false,
            abort: None,
        };
        if std::mem::take(&mut h.cancel_pending) {
            running.cancel_by_request(id);
        }
        h.running = Some(running);
    }

    /// Where to abort the handler of job `id` if it ignores a stop request.
    pub fn set_abort(&self, id: i64, abort: AbortHandle) {
        if let Some(r) = self.lock().get_mut(&id).and_then(|h| h.running.as_mut()) {
            r.abort = Some(abort);
        }
    }

    /// The handler of job `id` returned: forget it, keeping the job held
    /// until its outcome is written.
    pub fn handler_returned(&self, id: i64) -> RunFlags {
        self.lock()
            .get_mut(&id)
            .and_then(|h| h.running.take())
            .map_or(RunFlags::default(), |r| RunFlags {
                user_cancelled: r.user_cancelled,
                lost: r.lost,
            })
    }

    /// The jobs' outcomes are written (or given up on): stop renewing their
    /// leases, and drop any pending cancel request.
    pub fn let_go(&self, ids: impl IntoIterator<Item = i64>) {
        let mut jobs = self.lock();
        let before = jobs.len();
        for id in ids {
            jobs.remove(&id);
        }
        if jobs.is_empty() && before > 0 {
            self.emptied.notify_waiters();
        }
    }

    /// Applies a lease renewal that began at `asked`: passes cancel requests
    /// to running handlers, and stops those whose lease was lost (a handler
    /// registered after `asked` was not yet visible to the renewal).
    pub fn renewed(&self, renewed: &HashMap<i64, Renewed>, asked: Instant) {
        let mut jobs = self.lock();
        for (id, h) in jobs.iter_mut() {
            let Some(r) = h.running.as_mut() else {
                continue;
            };
            match renewed.get(id) {
                Some(n) if n.attempt == r.attempt => {
                    if n.cancel_requested {
                        r.cancel_by_request(*id);
                    }
                }
                _ if r.since >= asked => {}
                _ => {
                    if !r.lost {
                        tracing::warn!(job_id = id, "lease lost; stopping the handler");
                        r.lost = true;
                        r.token.cancel();
                    }
                }
            }
        }
    }

    /// Aborts every running handler; returns the jobs (and attempts) they ran.
    pub fn abort_running(&self) -> Vec<(i64, i32)> {
        let mut jobs = self.lock();
        jobs.iter_mut()
            .filter_map(|(id, h)| {
                let r = h.running.as_mut()?;
                if let Some(a) = r.abort.take() {
                    a.abort();
                }
                Some((*id, r.attempt))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running(h: &Holdings, id: i64) -> (bool, bool) {
        let jobs = h.lock();
        let r = jobs[&id]
            .running
            .as_ref()
            .map(|r| (r.user_cancelled, r.lost));
        r.unwrap_or_default()
    }

    #[test]
    fn a_cancel_request_that_races_the_handlers_registration_is_kept() {
        let h = Holdings::default();
        h.hold([7]);
        // the NOTIFY comes after the start, before the handler is registered
        h.cancel_requested(7);
        let token = CancellationToken::new();
        h.register_running(7, 1, token.clone());
        assert!(token.is_cancelled());
        assert_eq!(running(&h, 7), (true, false));
        assert!(!h.lock()[&7].cancel_pending);
    }

    #[test]
    fn a_cancel_request_for_a_job_held_elsewhere_is_ignored() {
        let h = Holdings::default();
        h.cancel_requested(8);
        assert!(!h.holds(8));
        let token = CancellationToken::new();
        h.register_running(8, 1, token.clone());
        assert!(!token.is_cancelled());
        // and one for a running job stops it at once
        h.cancel_requested(8);
        assert!(token.is_cancelled());
        assert_eq!(running(&h, 8), (true, false));
    }

    #[test]
    fn letting_a_job_go_drops_its_pending_cancel() {
        let h = Holdings::default();
        h.hold([9]);
        h.cancel_requested(9);
        h.let_go([9]);
        assert!(!h.holds(9));
        // held again (a later claim), it starts without the old request
        h.hold([9]);
        let token = CancellationToken::new();
        h.register_running(9, 2, token.clone());
        assert!(!token.is_cancelled());
    }

    #[tokio::test(start_paused = true)]
    async fn a_renewal_stops_handlers_whose_lease_is_gone_but_not_newer_ones() {
        let h = Holdings::default();
        h.hold([1, 2, 3]);
        let (t1, t2) = (CancellationToken::new(), CancellationToken::new());
        h.register_running(1, 1, t1.clone());
        h.register_running(2, 4, t2.clone());
        tokio::time::advance(std::time::Duration::from_millis(10)).await;
        let asked = Instant::now();
        tokio::time::advance(std::time::Duration::from_millis(10)).await;
        let t3 = CancellationToken::new();
        h.register_running(3, 1, t3.clone());
        // job 1 renewed with a cancel request; job 2 now on another attempt;
        // job 3 registered after the renewal asked
        let renewed = HashMap::from([
            (
                1,
                Renewed {
                    attempt: 1,
                    cancel_requested: true,
                },
            ),
            (
                2,
                Renewed {
                    attempt: 5,
                    cancel_requested: false,
                },
            ),
        ]);
        h.renewed(&renewed, asked);
        assert_eq!(running(&h, 1), (true, false));
        assert_eq!(running(&h, 2), (false, true));
        assert_eq!(running(&h, 3), (false, false));
        assert!(t1.is_cancelled() && t2.is_cancelled() && !t3.is_cancelled());
        assert_eq!(
            h.handler_returned(2),
            RunFlags {
                user_cancelled: false,
                lost: true
            }
        );
        assert!(h.holds(2), "held until its outcome is written");
    }
}
