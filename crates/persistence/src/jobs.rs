//! The job repository.
//!
//! The runner's safety rules live in these queries:
//! - claims are one `UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED) RETURNING`,
//!   so concurrent runners never claim the same row;
//! - a claim sets `locked_by`/`locked_until` and increments `attempts`;
//! - every later write is fenced by [`Fence`]: the job, its attempt, the runner
//!   holding it, and a leased status. A runner that lost its lease matches no
//!   row, so it can never overwrite the outcome of a newer attempt;
//! - statements that update several rows that may already be claimed lock
//!   them in id order first (`… ORDER BY id FOR UPDATE`), so two of them never
//!   deadlock; the claim and the rescue skip locked rows and never wait;
//! - those statements decide whether the runner still holds each row in the
//!   locking read (`… AS holds`, evaluated on the row as locked, after any
//!   concurrent change) and update by id alone. A fence condition on the
//!   update itself let the planner drive it from a status index: with stale
//!   statistics, a nested loop over every running job per row written.
//!
//! Every status a statement reads or writes comes from [`JobStatus`]: the
//! status changes from the tables in [`moves`], built of [`Transition`]s
//! that [`JobStatus::can_become`] allows, and the conditions from its
//! predicates. No status is spelled out in SQL text here.

use std::time::Duration;

use connectra_domain::job::{JobResponse, JobStatus, ListFilter, NewJob, Transition};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool, Integer, Jsonb, Nullable, Text};
use diesel_async::RunQueryDsl;
use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::prepared::{Bind, Prepared};
use crate::schema::jobs;
use crate::status::{is_one_of, literal, next_status, sources, sources_of, statuses, StatusColumn};
use crate::{PgPool, Result};

/// The channel on which runners `LISTEN`. The `jobs` trigger notifies it when a
/// job becomes claimable.
pub const JOBS_CHANNEL: &str = "connectra_jobs";

/// The channel on which runners `LISTEN` for cancel requests. The `jobs`
/// trigger notifies it, with the job's id as payload, when a running job is
/// asked to stop.
pub const CANCEL_CHANNEL: &str = "connectra_jobs_cancel";

/// One row of `jobs`, as the API shows it.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, QueryableByName, Serialize)]
#[diesel(table_name = jobs, check_for_backend(diesel::pg::Pg))]
pub struct Job {
    pub id: i64,
    pub uuid: Uuid,
    pub job_type: String,
    pub data: Value,
    /// Read through [`StatusColumn`]: a status the enum does not know fails
    /// the query instead of being guessed.
    #[diesel(deserialize_as = StatusColumn)]
    pub status: JobStatus,
    pub job_response: Value,
    pub retry_count: i32,
    pub retry_interval: i32,
    #[serde(with = "time::serde::rfc3339::option")]
    pub run_after: Option<OffsetDateTime>,
    pub attempts: i32,
    pub rescues: i32,
    pub locked_by: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub locked_until: Option<OffsetDateTime>,
    pub cancel_requested: bool,
    pub rows_processed: i64,
    pub rows_rejected: i64,
    pub bytes_read: i64,
    pub bytes_total: Option<i64>,
    pub checkpoint: Option<Value>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// The columns of [`Job`] (prefixed with `prefix`), for the `RETURNING` of
/// a statement that a connection keeps prepared: named, not `*`, so that a
/// column a later migration adds does not change its result type, which
/// PostgreSQL refuses ("cached plan must not change result type").
fn job_columns(prefix: &str) -> String {
    const COLUMNS: [&str; 23] = [
        "id",
        "uuid",
        "job_type",
        "data",
        "status",
        "job_response",
        "retry_count",
        "retry_interval",
        "run_after",
        "attempts",
        "rescues",
        "locked_by",
        "locked_until",
        "cancel_requested",
        "rows_processed",
        "rows_rejected",
        "bytes_read",
        "bytes_total",
        "checkpoint",
        "started_at",
        "finished_at",
        "created_at",
        "updated_at",
    ];
    let named: Vec<String> = COLUMNS.iter().map(|c| format!("{prefix}{c}")).collect();
    named.join(", ")
}

impl Job {
    /// The typed `job_response`; unknown keys are kept in `extra`.
    pub fn response(&self) -> JobResponse {
        serde_json::from_value(self.job_response.clone()).unwrap_or_default()
    }

    /// The fence for writes by the runner that claimed this row.
    pub fn fence<'a>(&self, runner_id: &'a str) -> Fence<'a> {
        Fence {
            id: self.id,
            attempt: self.attempts,
            runner_id,
        }
    }
}

/// Identifies one claim of one job: writes conditioned on it succeed only while
/// that claim still holds the job.
#[derive(Debug, Clone, Copy)]
pub struct Fence<'a> {
    pub id: i64,
    pub attempt: i32,
    pub runner_id: &'a str,
}

/// Counters a handler reports after each batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    pub rows_processed: i64,
    pub rows_rejected: i64,
    pub bytes_read: i64,
    pub bytes_total: Option<i64>,
}

/// What a cancel request did.
#[derive(Debug, Clone, PartialEq)]
pub enum CancelOutcome {
    /// The job had not started (or was waiting for a retry): it is now failed for good.
    Cancelled(Job),
    /// The job is running: its handler is asked to stop at the next batch boundary.
    Requested(Job),
    /// The job had already finished; nothing changed.
    AlreadyFinished(Job),
}

/// What a manual retry request did.
#[derive(Debug, Clone, PartialEq)]
pub enum RetryOutcome {
    /// The failed job is due for a retry now; the retry runner takes it.
    Scheduled(Job),
    /// The job is not failed, or was cancelled; nothing changed.
    NotRetryable(Job),
}

/// Which runner mode a claim is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimKind {
    /// `open → in_queue`
    FirstTime,
    /// `failed → retry_in_queued`, for failed jobs whose `run_after` has passed
    Retry,
}

impl ClaimKind {
    /// What [`JobRepo::claim`] does to a claimable job.
    pub const fn claim(self) -> Transition {
        match self {
            Self::FirstTime => moves::CLAIM_FIRST_TIME,
            Self::Retry => moves::CLAIM_RETRY,
        }
    }

    /// What [`JobRepo::start_many`] does to a claimed job.
    pub const fn start(self) -> Transition {
        match self {
            Self::FirstTime => moves::START_FIRST_TIME,
            Self::Retry => moves::START_RETRY,
        }
    }

    pub const fn queued_status(self) -> JobStatus {
        self.claim().to()
    }

    pub const fn running_status(self) -> JobStatus {
        self.start().to()
    }
}

/// The status changes of each [`JobRepo`] method, as tables of
/// [`Transition`]s: a pair that [`JobStatus::can_become`] refuses does not
/// compile here. The methods' SQL is generated from these tables; the
/// state-machine test (`tests/state_machine.rs`) runs every method from
/// every status against them.
pub mod moves {
    use connectra_domain::job::JobStatus::{self, *};
    use connectra_domain::job::Transition;

    const fn t(from: JobStatus, to: JobStatus) -> Transition {
        Transition::new(from, to)
    }

    /// [`ClaimKind::FirstTime`](super::ClaimKind) claims: `open → in_queue`.
    pub const CLAIM_FIRST_TIME: Transition = t(Open, InQueue);
    /// [`ClaimKind::Retry`](super::ClaimKind) claims, of failed jobs whose
    /// `run_after` has passed: `failed → retry_in_queued`.
    pub const CLAIM_RETRY: Transition = t(Failed, RetryInQueued);
    /// `start_many` of first-time claims: `in_queue → processing`.
    pub const START_FIRST_TIME: Transition = t(InQueue, Processing);
    /// `start_many` of retry claims: `retry_in_queued → retrying`.
    pub const START_RETRY: Transition = t(RetryInQueued, Retrying);
    /// The one status [`COMPLETE`] leads to.
    pub const COMPLETED: JobStatus = Completed;
    /// `complete` and `complete_many`: a running handler succeeded.
    pub const COMPLETE: &[Transition] = &[t(Processing, Completed), t(Retrying, Completed)];
    /// The one status [`FAIL`] leads to.
    pub const FAILED: JobStatus = Failed;
    /// `fail`: a held job failed, or was cancelled, before or while it ran.
    pub const FAIL: &[Transition] = &[
        t(InQueue, Failed),
        t(Processing, Failed),
        t(RetryInQueued, Failed),
        t(Retrying, Failed),
    ];
    /// `release`, and `rescue_expired` of a job it does not give up on: a
    /// first run goes back to `open`, a retry to `failed` (due at once).
    pub const RELEASE: &[Transition] = &[
        t(InQueue, Open),
        t(Processing, Open),
        t(RetryInQueued, Failed),
        t(Retrying, Failed),
    ];
    /// `rescue_expired` of a job rescued too often, or whose cancel was
    /// requested: failed for good.
    pub const GIVE_UP: &[Transition] = FAIL;
    /// The one status [`CANCEL`] leads to.
    pub const CANCELLED: JobStatus = Failed;
    /// `cancel` of a job that is not running: failed for good. (A failed job
    /// waiting for a retry stays failed, its retry dropped; a running job
    /// only gets `cancel_requested`; neither is a status change.)
    pub const CANCEL: &[Transition] = &[
        t(Open, Failed),
        t(InQueue, Failed),
        t(RetryInQueued, Failed),
    ];
}

/// What a rescue pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RescueReport {
    /// Jobs returned to `open` or to `failed` with `run_after = now`.
    pub released: usize,
    /// Jobs failed for good because they were rescued too often.
    pub failed_for_good: usize,
}

/// `{column} IN (…)` of the statuses in which a runner holds a job.
fn leased(column: &str) -> String {
    is_one_of(column, statuses(JobStatus::is_leased))
}

/// `{column} IN (…)` of the statuses in which a handler runs.
fn running(column: &str) -> String {
    is_one_of(column, statuses(JobStatus::is_running))
}

/// `{column} = 'failed' AND run_after IS NOT NULL`: a failed job that waits
/// for a retry (due or not).
fn waiting_for_retry(column: &str, run_after: &str) -> String {
    format!(
        "{} AND {run_after} IS NOT NULL",
        is_one_of(column, [moves::CLAIM_RETRY.from()])
    )
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Queries over `jobs`. Cheap to clone; holds the pool.
#[derive(Clone)]
pub struct JobRepo {
    pool: PgPool,
}

impl std::fmt::Debug for JobRepo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobRepo")
            .field("pool", &self.pool.status())
            .finish()
    }
}

impl JobRepo {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Inserts a new `open` job. The table's trigger sends the `NOTIFY`.
    pub async fn create(&self, new: &NewJob) -> Result<Job> {
        let mut conn = self.pool.get().await?;
        let job = diesel::insert_into(jobs::table)
            .values((
                jobs::uuid.eq(Uuid::new_v4()),
                jobs::job_type.eq(&new.job_type),
                jobs::data.eq(&new.data),
                jobs::retry_count.eq(new.retry_count),
                jobs::retry_interval.eq(new.retry_interval),
            ))
            .returning(Job::as_returning())
            .get_result(&mut conn)
            .await?;
        Ok(job)
    }

    /// Inserts many jobs in one statement (benchmarks and tests).
    pub async fn create_many(&self, new: &[NewJob]) -> Result<usize> {
        let mut conn = self.pool.get().await?;
        let rows: Vec<_> = new
            .iter()
            .map(|n| {
                (
                    jobs::uuid.eq(Uuid::new_v4()),
                    jobs::job_type.eq(&n.job_type),
                    jobs::data.eq(&n.data),
                    jobs::retry_count.eq(n.retry_count),
                    jobs::retry_interval.eq(n.retry_interval),
                )
            })
            .collect();
        let mut total = 0;
        for chunk in rows.chunks(5000) {
            total += diesel::insert_into(jobs::table)
                .values(chunk)
                .execute(&mut conn)
                .await?;
        }
        Ok(total)
    }

    /// Newest first, filtered by type and statuses.
    pub async fn list(&self, filter: &ListFilter) -> Result<Vec<Job>> {
        let mut conn = self.pool.get().await?;
        let mut query = jobs::table.select(Job::as_select()).into_boxed();
        if let Some(t) = &filter.job_type {
            query = query.filter(jobs::job_type.eq(t));
        }
        if !filter.statuses.is_empty() {
            let names: Vec<&str> = filter.statuses.iter().map(|s| s.as_str()).collect();
            query = query.filter(jobs::status.eq_any(names));
        }
        let rows = query
            .order((jobs::created_at.desc(), jobs::id.desc()))
            .limit(filter.limit)
            .load(&mut conn)
            .await?;
        Ok(rows)
    }

    pub async fn get(&self, uuid: Uuid) -> Result<Option<Job>> {
        let mut conn = self.pool.get().await?;
        let job = jobs::table
            .filter(jobs::uuid.eq(uuid))
            .select(Job::as_select())
            .first(&mut conn)
            .await
            .optional()?;
        Ok(job)
    }

    /// Cancels a job. A job that has not started, or waits for a retry, is
    /// failed for good at once. A running job gets `cancel_requested`; its
    /// runner sees it on the next heartbeat and stops at a batch boundary.
    /// Either way `job_response.cancelled` is set and the job never runs again.
    pub async fn cancel(&self, uuid: Uuid) -> Result<Option<CancelOutcome>> {
        let mut conn = self.pool.get().await?;
        // `CANCEL`'s moves, and a failed job waiting for a retry, which
        // stays failed; both end failed for good
        let stopped: Option<Job> = diesel::sql_query(format!(
            "UPDATE jobs SET status = {failed}, run_after = NULL, cancel_requested = true,
                 locked_by = NULL, locked_until = NULL, finished_at = now(), updated_at = now(),
                 job_response = job_response || '{{\"cancelled\": true, \"messages\": \"cancelled by request\"}}'::jsonb
             WHERE uuid = $1
               AND (({from}) OR ({waiting}))
             RETURNING *",
            failed = literal(moves::CANCELLED),
            from = is_one_of("status", sources(moves::CANCEL)),
            waiting = waiting_for_retry("status", "run_after"),
        ))
        .bind::<diesel::sql_types::Uuid, _>(uuid)
        .get_result(&mut conn)
        .await
        .optional()?;
        if let Some(job) = stopped {
            return Ok(Some(CancelOutcome::Cancelled(job)));
        }
        let requested: Option<Job> = diesel::sql_query(format!(
            "UPDATE jobs SET cancel_requested = true, updated_at = now(),
                 job_response = job_response || '{{\"cancelled\": true}}'::jsonb
             WHERE uuid = $1 AND {running}
             RETURNING *",
            running = running("status"),
        ))
        .bind::<diesel::sql_types::Uuid, _>(uuid)
        .get_result(&mut conn)
        .await
        .optional()?;
        if let Some(job) = requested {
            return Ok(Some(CancelOutcome::Requested(job)));
        }
        drop(conn);
        Ok(self.get(uuid).await?.map(CancelOutcome::AlreadyFinished))
    }

    /// The guide's "Manual Retry": a failed job, including one that has used
    /// up its `retry_count`, becomes due at once (`run_after = now()`), and
    /// the retry runners are woken. It resumes from its checkpoint and
    /// `attempts` goes on counting; should this attempt fail too, the usual
    /// rule applies (a retry only while `attempts <= retry_count`). A
    /// cancelled job never runs again, so it is not retryable.
    pub async fn retry(&self, uuid: Uuid) -> Result<Option<RetryOutcome>> {
        let mut conn = self.pool.get().await?;
        let scheduled: Option<Job> = diesel::sql_query(format!(
            "WITH retried AS (
                 UPDATE jobs SET run_after = now(), updated_at = now()
                 WHERE uuid = $1 AND {failed} AND NOT cancel_requested
                   AND (job_response->>'cancelled') IS DISTINCT FROM 'true'
                 RETURNING *)
             SELECT retried.*, pg_notify('{JOBS_CHANNEL}', retried.status)::text AS notified
             FROM retried",
            failed = is_one_of("status", [moves::CLAIM_RETRY.from()]),
        ))
        .bind::<diesel::sql_types::Uuid, _>(uuid)
        .get_result(&mut conn)
        .await
        .optional()?;
        if let Some(job) = scheduled {
            return Ok(Some(RetryOutcome::Scheduled(job)));
        }
        drop(conn);
        Ok(self.get(uuid).await?.map(RetryOutcome::NotRetryable))
    }

    /// Atomically claims up to `max` claimable jobs of the given types for
    /// `runner_id`, oldest first, under a lease of `lease`.
    pub async fn claim(
        &self,
        kind: ClaimKind,
        runner_id: &str,
        job_types: &[String],
        max: i64,
        lease: Duration,
    ) -> Result<Vec<Job>> {
        if max <= 0 || job_types.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.pool.get().await?;
        let mut claimed: Vec<Job> = sql::claim(kind, runner_id, job_types, max, lease)
            .load(&mut conn)
            .await?;
        claimed.sort_by_key(|j| j.id);
        Ok(claimed)
    }

    /// `in_queue → processing` (or `retry_in_queued → retrying`) for a batch
    /// of claims by `runner_id`, renewing their leases. Returns the jobs that
    /// started; a claim missing from the answer no longer holds (the job was
    /// cancelled or rescued meanwhile).
    pub async fn start_many(
        &self,
        kind: ClaimKind,
        runner_id: &str,
        claims: &[(i64, i32)],
        lease: Duration,
    ) -> Result<Vec<Job>> {
        let (ids, attempts): (Vec<i64>, Vec<i32>) = claims.iter().copied().unzip();
        let mut conn = self.pool.get().await?;
        let mut started: Vec<Job> = sql::start_many(kind, &ids, &attempts, runner_id, lease)
            .load(&mut conn)
            .await?;
        started.sort_by_key(|j| j.id);
        Ok(started)
    }

    /// Renews the leases of the given jobs, as far as `runner_id` still holds
    /// them. Returns those it holds, with whether a cancel was requested; a
    /// job missing from the answer is no longer held by this runner.
    pub async fn renew_leases(
        &self,
        runner_id: &str,
        ids: &[i64],
        lease: Duration,
    ) -> Result<Vec<Held>> {
        let mut conn = self.pool.get().await?;
        let held = sql::renew_leases(runner_id, ids, lease)
            .load(&mut conn)
            .await?;
        Ok(held)
    }

    /// Records progress and the checkpoint. `false` when the claim was lost.
    pub async fn record_progress(
        &self,
        fence: Fence<'_>,
        progress: &Progress,
        checkpoint: Option<&Value>,
    ) -> Result<bool> {
        let mut conn = self.pool.get().await?;
        let n = diesel::sql_query(format!(
            "UPDATE jobs SET rows_processed = $4, rows_rejected = $5, bytes_read = $6,
                 bytes_total = coalesce($7, bytes_total), checkpoint = coalesce($8, checkpoint),
                 updated_at = now()
             WHERE id = $1 AND attempts = $2 AND locked_by = $3 AND {leased}",
            leased = leased("status"),
        ))
        .bind::<BigInt, _>(fence.id)
        .bind::<Integer, _>(fence.attempt)
        .bind::<Text, _>(fence.runner_id)
        .bind::<BigInt, _>(progress.rows_processed)
        .bind::<BigInt, _>(progress.rows_rejected)
        .bind::<BigInt, _>(progress.bytes_read)
        .bind::<Nullable<BigInt>, _>(progress.bytes_total)
        .bind::<Nullable<Jsonb>, _>(checkpoint)
        .execute(&mut conn)
        .await?;
        Ok(n == 1)
    }

    /// Completes a batch of jobs held by `runner_id`: `(id, attempt, response)`.
    /// Returns the ids written; the others had lost their claim.
    pub async fn complete_many(
        &self,
        runner_id: &str,
        done: &[(i64, i32, &JobResponse)],
    ) -> Result<Vec<i64>> {
        let ids: Vec<i64> = done.iter().map(|d| d.0).collect();
        let attempts: Vec<i32> = done.iter().map(|d| d.1).collect();
        let responses: Vec<Value> = done.iter().map(|d| to_json(d.2)).collect();
        let mut conn = self.pool.get().await?;
        let written: Vec<Id> = sql::complete_many(&ids, &attempts, &responses, runner_id)
            .load(&mut conn)
            .await?;
        Ok(written.into_iter().map(|w| w.id).collect())
    }

    /// The handler succeeded: `completed`. `false` when the claim was lost.
    pub async fn complete(&self, fence: Fence<'_>, response: &JobResponse) -> Result<bool> {
        let mut conn = self.pool.get().await?;
        let n = diesel::sql_query(format!(
            "UPDATE jobs SET status = {completed}, job_response = job_response || $4,
                 run_after = NULL, locked_by = NULL, locked_until = NULL,
                 finished_at = now(), updated_at = now()
             WHERE id = $1 AND attempts = $2 AND locked_by = $3 AND {from}",
            completed = literal(moves::COMPLETED),
            from = is_one_of("status", sources_of(moves::COMPLETE, moves::COMPLETED)),
        ))
        .bind::<BigInt, _>(fence.id)
        .bind::<Integer, _>(fence.attempt)
        .bind::<Text, _>(fence.runner_id)
        .bind::<Jsonb, _>(to_json(response))
        .execute(&mut conn)
        .await?;
        Ok(n == 1)
    }

    /// The handler failed (or was cancelled): `failed`. While retries remain
    /// (`attempts <= retry_count`) and the job was not cancelled,
    /// `run_after = now + retry_interval`; otherwise `run_after = NULL` and the
    /// failure is final. `runtime_errors` accumulate across attempts, bounded.
    pub async fn fail(&self, fence: Fence<'_>, response: &JobResponse) -> Result<bool> {
        let mut conn = self.pool.get().await?;
        let n = diesel::sql_query(format!(
            "UPDATE jobs SET status = {failed},
                 job_response = (job_response || ($4 - 'runtime_errors')) || jsonb_build_object(
                     'runtime_errors',
                     (SELECT coalesce(jsonb_agg(e), '[]'::jsonb) FROM (
                         SELECT e FROM jsonb_array_elements(
                             coalesce(job_response -> 'runtime_errors', '[]'::jsonb)
                             || coalesce($4 -> 'runtime_errors', '[]'::jsonb)) AS t(e)
                         LIMIT $5) s)),
                 run_after = CASE WHEN attempts <= retry_count AND NOT cancel_requested
                                  THEN now() + make_interval(secs => retry_interval)
                                  ELSE NULL END,
                 locked_by = NULL, locked_until = NULL, finished_at = now(), updated_at = now()
             WHERE id = $1 AND attempts = $2 AND locked_by = $3 AND {from}",
            failed = literal(moves::FAILED),
            from = is_one_of("status", sources_of(moves::FAIL, moves::FAILED)),
        ))
        .bind::<BigInt, _>(fence.id)
        .bind::<Integer, _>(fence.attempt)
        .bind::<Text, _>(fence.runner_id)
        .bind::<Jsonb, _>(to_json(response))
        .bind::<BigInt, _>(connectra_domain::job::MAX_RUNTIME_ERRORS as i64)
        .execute(&mut conn)
        .await?;
        Ok(n == 1)
    }

    /// Gives a claimed job back, keeping its checkpoint: `in_queue`/`processing`
    /// return to `open`, `retry_in_queued`/`retrying` to `failed` with
    /// `run_after = now`. A job that never started gets its attempt back.
    pub async fn release(&self, fence: Fence<'_>) -> Result<bool> {
        let mut conn = self.pool.get().await?;
        let n = diesel::sql_query(format!(
            "UPDATE jobs SET
                 status = {next},
                 run_after = CASE WHEN {to_open} THEN run_after ELSE now() END,
                 attempts = CASE WHEN {running} THEN attempts ELSE attempts - 1 END,
                 locked_by = NULL, locked_until = NULL, updated_at = now()
             WHERE id = $1 AND attempts = $2 AND locked_by = $3 AND {from}",
            next = next_status("status", moves::RELEASE),
            to_open = is_one_of("status", sources_of(moves::RELEASE, JobStatus::Open)),
            running = running("status"),
            from = is_one_of("status", sources(moves::RELEASE)),
        ))
        .bind::<BigInt, _>(fence.id)
        .bind::<Integer, _>(fence.attempt)
        .bind::<Text, _>(fence.runner_id)
        .execute(&mut conn)
        .await?;
        Ok(n == 1)
    }

    /// Takes back every job whose lease expired (its runner died), keeping the
    /// checkpoint. A job that was running when its lease expired counts a
    /// rescue; past `max_rescues` it fails for good with a `runtime_errors` entry.
    pub async fn rescue_expired(&self, max_rescues: i32) -> Result<RescueReport> {
        let mut conn = self.pool.get().await?;
        let rows: Vec<Flag> = diesel::sql_query(format!(
            "WITH expired AS (
                 SELECT id, status, ({running}) AS was_running,
                        ({running} AND rescues + 1 > $1) AS give_up
                 FROM jobs
                 WHERE {from} AND locked_until < now()
                 FOR UPDATE SKIP LOCKED)
             UPDATE jobs j SET
                 status = CASE WHEN e.give_up OR j.cancel_requested THEN {give_up}
                               ELSE {next} END,
                 run_after = CASE WHEN e.give_up OR j.cancel_requested THEN NULL
                                  WHEN {to_open} THEN j.run_after
                                  ELSE now() END,
                 rescues = j.rescues + CASE WHEN e.was_running THEN 1 ELSE 0 END,
                 attempts = j.attempts - CASE WHEN e.was_running THEN 0 ELSE 1 END,
                 finished_at = CASE WHEN e.give_up OR j.cancel_requested THEN now() ELSE j.finished_at END,
                 job_response = CASE WHEN e.give_up THEN jsonb_set(j.job_response, '{{runtime_errors}}',
                         coalesce(j.job_response -> 'runtime_errors', '[]'::jsonb)
                         || to_jsonb(format('job abandoned: its runner stopped responding %s times (more than the limit of %s rescues)',
                                            j.rescues + 1, $1)))
                     ELSE j.job_response END,
                 locked_by = NULL, locked_until = NULL, updated_at = now()
             FROM expired e
             WHERE j.id = e.id
             RETURNING e.give_up AS flag",
            running = running("status"),
            from = is_one_of("status", sources(moves::RELEASE)),
            give_up = next_status("e.status", moves::GIVE_UP),
            next = next_status("e.status", moves::RELEASE),
            to_open = is_one_of("e.status", sources_of(moves::RELEASE, JobStatus::Open)),
        ))
        .bind::<Integer, _>(max_rescues)
        .load(&mut conn)
        .await?;
        let failed_for_good = rows.iter().filter(|r| r.flag).count();
        Ok(RescueReport {
            released: rows.len() - failed_for_good,
            failed_for_good,
        })
    }

    /// How long until the earliest `run_after` of a failed job of one of
    /// `job_types` still waiting for a retry, by the database's clock (zero
    /// when one is already due); `None` when no such job waits. Job types a
    /// runner cannot run are not its business: a due job of another type
    /// would otherwise wake it again and again.
    pub async fn next_retry_due(
        &self,
        job_types: &[String],
    ) -> Result<Option<std::time::Duration>> {
        #[derive(QueryableByName)]
        struct Due {
            #[diesel(sql_type = diesel::sql_types::Nullable<BigInt>)]
            ms: Option<i64>,
        }
        if job_types.is_empty() {
            return Ok(None);
        }
        let mut conn = self.pool.get().await?;
        let due: Due = diesel::sql_query(format!(
            "SELECT ceil(extract(epoch FROM (min(run_after) - now())) * 1000)::int8 AS ms
             FROM jobs
             WHERE {waiting} AND NOT cancel_requested
               AND job_type = ANY($1)",
            waiting = waiting_for_retry("status", "run_after"),
        ))
        .bind::<diesel::sql_types::Array<Text>, _>(job_types)
        .get_result(&mut conn)
        .await?;
        Ok(due
            .ms
            .map(|ms| std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0))))
    }

    /// How many jobs there are of each `(job_type, status)`: one `GROUP BY`
    /// over the `(job_type, status)` index.
    pub async fn counts(&self) -> Result<Vec<(String, JobStatus, i64)>> {
        #[derive(QueryableByName)]
        struct Count {
            #[diesel(sql_type = Text)]
            job_type: String,
            #[diesel(sql_type = Text, deserialize_as = StatusColumn)]
            status: JobStatus,
            #[diesel(sql_type = BigInt)]
            n: i64,
        }
        let mut conn = self.pool.get().await?;
        let rows: Vec<Count> = diesel::sql_query(
            "SELECT job_type, status::text AS status, count(*) AS n FROM jobs GROUP BY 1, 2",
        )
        .load(&mut conn)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| (r.job_type, r.status, r.n))
            .collect())
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<()> {
        let mut conn = self.pool.get().await?;
        diesel::sql_query("SELECT 1").execute(&mut conn).await?;
        Ok(())
    }
}

/// The statements of the runner's hot path, built once per call from the
/// status tables. Apart so that their plans can be tested (`plans` below).
mod sql {
    use super::*;

    pub(super) fn claim<'a>(
        kind: ClaimKind,
        runner_id: &'a str,
        job_types: &'a [String],
        max: i64,
        lease: Duration,
    ) -> Prepared<'a> {
        let claim = kind.claim();
        let queued = literal(claim.to());
        let claimable = match kind {
            ClaimKind::FirstTime => is_one_of("status", [claim.from()]),
            ClaimKind::Retry => format!(
                "{} AND run_after <= now()",
                waiting_for_retry("status", "run_after")
            ),
        };
        // the claim order, inside each type's read and over their union
        let (order, c_order) = match kind {
            ClaimKind::FirstTime => ("id", "c.id"),
            ClaimKind::Retry => ("run_after, id", "c.run_after, c.id"),
        };
        // One ordered read per job type (jobs_claim_idx, jobs_retry_claim_idx:
        // (job_type, <order>)), the oldest `max` of them all taken. A single
        // read over `job_type = ANY(…)` would have to sort every claimable job,
        // and was planned so whenever the statistics were stale. Rows a
        // type's read locks but the final LIMIT drops are unlocked at commit.
        let sql = format!(
            "UPDATE jobs SET status = {queued}, locked_by = $1,
                 locked_until = now() + make_interval(secs => $2),
                 attempts = attempts + 1, updated_at = now()
             WHERE id IN (
                 SELECT c.id
                 FROM unnest($3::text[]) AS t(job_type)
                 CROSS JOIN LATERAL (
                     SELECT {order} FROM jobs
                     WHERE {claimable} AND NOT cancel_requested AND job_type = t.job_type
                     ORDER BY {order}
                     LIMIT $4
                     FOR UPDATE SKIP LOCKED) AS c
                 ORDER BY {c_order}
                 LIMIT $4)
             RETURNING {columns}",
            columns = job_columns(""),
        );
        let binds = vec![
            Bind::Text(runner_id),
            Bind::Double(secs(lease)),
            Bind::Texts(job_types),
            Bind::BigInt(max),
        ];
        Prepared::new(sql, binds)
    }

    pub(super) fn start_many<'a>(
        kind: ClaimKind,
        ids: &'a [i64],
        attempts: &'a [i32],
        runner_id: &'a str,
        lease: Duration,
    ) -> Prepared<'a> {
        let start = kind.start();
        let sql = format!(
            "WITH locked AS (
                 SELECT j.id, (j.attempts = c.attempt AND j.locked_by = $3
                               AND {from} AND NOT j.cancel_requested) AS holds
                 FROM unnest($1::bigint[], $2::int4[]) AS c(id, attempt)
                 JOIN jobs j ON j.id = c.id
                 ORDER BY j.id FOR UPDATE OF j)
             UPDATE jobs j SET status = {to}, started_at = coalesce(j.started_at, now()),
                 locked_until = now() + make_interval(secs => $4), updated_at = now()
             FROM locked
             WHERE j.id = locked.id AND locked.holds
             RETURNING {columns}",
            columns = job_columns("j."),
            to = literal(start.to()),
            from = is_one_of("j.status", [start.from()]),
        );
        let binds = vec![
            Bind::BigInts(ids),
            Bind::Integers(attempts),
            Bind::Text(runner_id),
            Bind::Double(secs(lease)),
        ];
        Prepared::new(sql, binds)
    }

    pub(super) fn renew_leases<'a>(
        runner_id: &'a str,
        ids: &'a [i64],
        lease: Duration,
    ) -> Prepared<'a> {
        let sql = format!(
            "WITH locked AS (
                 SELECT id, (locked_by = $1 AND {leased}) AS holds
                 FROM jobs WHERE id = ANY($3) ORDER BY id FOR UPDATE)
             UPDATE jobs j SET locked_until = now() + make_interval(secs => $2)
             FROM locked
             WHERE j.id = locked.id AND locked.holds
             RETURNING j.id, j.attempts, j.cancel_requested",
            leased = leased("status"),
        );
        let binds = vec![
            Bind::Text(runner_id),
            Bind::Double(secs(lease)),
            Bind::BigInts(ids),
        ];
        Prepared::new(sql, binds)
    }

    pub(super) fn complete_many<'a>(
        ids: &'a [i64],
        attempts: &'a [i32],
        responses: &'a [Value],
        runner_id: &'a str,
    ) -> Prepared<'a> {
        let sql = format!(
            "WITH locked AS (
                 SELECT j.id, c.response,
                        (j.attempts = c.attempt AND j.locked_by = $4 AND {from}) AS holds
                 FROM unnest($1::bigint[], $2::int4[], $3::jsonb[]) AS c(id, attempt, response)
                 JOIN jobs j ON j.id = c.id
                 ORDER BY j.id FOR UPDATE OF j)
             UPDATE jobs j SET status = {completed}, job_response = j.job_response || locked.response,
                 run_after = NULL, locked_by = NULL, locked_until = NULL,
                 finished_at = now(), updated_at = now()
             FROM locked
             WHERE j.id = locked.id AND locked.holds
             RETURNING j.id",
            completed = literal(moves::COMPLETED),
            from = is_one_of("j.status", sources_of(moves::COMPLETE, moves::COMPLETED)),
        );
        let binds = vec![
            Bind::BigInts(ids),
            Bind::Integers(attempts),
            Bind::Jsonbs(responses),
            Bind::Text(runner_id),
        ];
        Prepared::new(sql, binds)
    }
}

/// A job a runner holds, as its lease renewal reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, QueryableByName)]
pub struct Held {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = Integer)]
    pub attempts: i32,
    #[diesel(sql_type = Bool)]
    pub cancel_requested: bool,
}

#[derive(QueryableByName)]
struct Id {
    #[diesel(sql_type = BigInt)]
    id: i64,
}

#[derive(QueryableByName)]
struct Flag {
    #[diesel(sql_type = Bool)]
    flag: bool,
}

fn to_json(response: &JobResponse) -> Value {
    serde_json::to_value(response).unwrap_or_else(|_| Value::Object(Default::default()))
}

#[cfg(test)]
mod tests {
    use super::moves::*;
    use super::*;

    #[test]
    fn the_returned_columns_are_those_a_job_is_read_from() {
        let select =
            diesel::debug_query::<diesel::pg::Pg, _>(&jobs::table.select(Job::as_select()))
                .to_string();
        let diesel_columns = select
            .trim_start_matches("SELECT ")
            .split(" FROM")
            .next()
            .unwrap_or_default()
            .replace("\"jobs\".", "")
            .replace('"', "");
        assert_eq!(job_columns(""), diesel_columns);
        assert!(job_columns("j.").starts_with("j.id, j.uuid, "));
    }

    fn sorted(it: impl Iterator<Item = JobStatus>) -> Vec<JobStatus> {
        let mut v: Vec<_> = it.collect();
        v.sort();
        v
    }

    #[test]
    fn the_tables_match_what_their_statements_assume() {
        // a statement that writes one literal status needs a table with one target
        for (table, target) in [(COMPLETE, COMPLETED), (FAIL, FAILED), (CANCEL, CANCELLED)] {
            assert!(table.iter().all(|t| t.to() == target), "{table:?}");
            assert!(table.iter().all(|t| t.from().can_become(t.to())));
        }
        let leased = sorted(statuses(JobStatus::is_leased));
        // fenced writes (fail, release) and the rescue act on every leased status
        assert_eq!(sorted(sources(FAIL)), leased);
        assert_eq!(sorted(sources(RELEASE)), leased);
        // the rescue may give up on any job it takes back
        assert_eq!(sorted(sources(GIVE_UP)), leased);
        // only a running handler completes
        assert_eq!(
            sorted(sources(COMPLETE)),
            sorted(statuses(JobStatus::is_running))
        );
        // a claim leads to a leased status, a start to a running one
        for kind in [ClaimKind::FirstTime, ClaimKind::Retry] {
            assert!(kind.queued_status().is_leased() && !kind.queued_status().is_running());
            assert_eq!(kind.start().from(), kind.queued_status());
            assert!(kind.running_status().is_running());
        }
        // cancelling a running job is a request, not a status change
        assert!(sources(CANCEL).all(|s| !s.is_running()));
    }
}

/// The batch statements' plans on a real database, with statistics as stale
/// as they get after a burst of new jobs: taken before the jobs existed, or
/// while every job was still open. Each statement must read about the rows
/// it writes, never every job in a status once per row written (the plan a
/// completion had before: 120 ms for 256 jobs, in a table of 20,000).
#[cfg(all(test, feature = "testing"))]
mod plans {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::testing::TestDb;
    use diesel::sql_types::Json;

    const JOBS: usize = 20_000;
    const BATCH: usize = 256;
    const RUNNER: &str = "plans";
    const LEASE: Duration = Duration::from_secs(300);

    #[derive(QueryableByName)]
    struct IdAttempt {
        #[diesel(sql_type = BigInt)]
        id: i64,
        #[diesel(sql_type = Integer)]
        attempts: i32,
    }

    #[derive(QueryableByName)]
    struct Explained {
        #[diesel(sql_type = Json, column_name = "QUERY PLAN")]
        plan: Value,
    }

    /// The most rows one scan of `jobs` read in the plan (returned or
    /// filtered out, over all its loops), and the rows the top node wrote.
    fn read_and_written(explained: &Value) -> (f64, f64) {
        fn most_read(node: &Value) -> f64 {
            let f = |k: &str| node[k].as_f64().unwrap_or(0.0);
            let own = if node["Relation Name"] == "jobs" {
                (f("Actual Rows") + f("Rows Removed by Filter")) * f("Actual Loops")
            } else {
                0.0
            };
            node["Plans"]
                .as_array()
                .into_iter()
                .flatten()
                .map(most_read)
                .fold(own, f64::max)
        }
        let top = &explained[0]["Plan"];
        (most_read(top), top["Actual Rows"].as_f64().unwrap())
    }

    /// `what` wrote `BATCH` rows and read at most `most` rows of `jobs` in
    /// any one scan.
    fn assert_read_at_most(what: &str, explained: &Value, most: usize) {
        let (read, written) = read_and_written(explained);
        assert_eq!(
            written, BATCH as f64,
            "{what} wrote {written} rows: {explained}"
        );
        assert!(
            read <= most as f64,
            "{what} read {read} rows of jobs to write {BATCH}: {explained:#}"
        );
    }

    /// A claim reads the rows it takes (and those a LIMIT drops), from an
    /// index range: not every claimable job.
    const CLAIM_READS: usize = 2 * BATCH;

    /// A batch update by id reads its rows by index, or the table once
    /// (the planner's fair choice on a small table): never the table once
    /// per row.
    const UPDATE_READS: usize = JOBS + 2 * BATCH;

    #[tokio::test]
    async fn batch_statements_read_their_rows_however_stale_the_statistics() {
        let db = TestDb::new().await;
        let repo = JobRepo::new(db.pool());
        let new: Vec<NewJob> = (0..JOBS)
            .map(|_| NewJob {
                job_type: "plans".into(),
                data: serde_json::json!({}),
                retry_count: 0,
                retry_interval: 0,
            })
            .collect();
        repo.create_many(&new).await.unwrap();
        let mut conn = repo.pool().get().await.unwrap();
        let types = vec!["plans".to_string(), "other".to_string()];

        // the statistics are those of the empty table the migrations made
        let claim = sql::claim(ClaimKind::FirstTime, RUNNER, &types, BATCH as i64, LEASE);
        for plan in plans_of(&mut conn, claim, "claim").await {
            assert_read_at_most("a claim after a burst", &plan, CLAIM_READS);
        }

        // statistics that say every job is open; then every job is claimed
        for sql in [
            "UPDATE jobs SET status = 'open', locked_by = NULL, locked_until = NULL, attempts = 0",
            "ANALYZE jobs",
        ] {
            diesel::sql_query(sql).execute(&mut conn).await.unwrap();
        }
        let claimed = repo
            .claim(ClaimKind::FirstTime, RUNNER, &types, JOBS as i64, LEASE)
            .await
            .unwrap();
        assert_eq!(claimed.len(), JOBS);
        let all: Vec<(i64, i32)> = diesel::sql_query("SELECT id, attempts FROM jobs ORDER BY id")
            .load::<IdAttempt>(&mut conn)
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.id, r.attempts))
            .collect();
        assert_eq!(all.len(), JOBS);
        let (ids, attempts): (Vec<i64>, Vec<i32>) = all[..BATCH].iter().copied().unzip();

        let start = sql::start_many(ClaimKind::FirstTime, &ids, &attempts, RUNNER, LEASE);
        for plan in plans_of(&mut conn, start, "start").await {
            assert_read_at_most("a start", &plan, UPDATE_READS);
        }
        for chunk in all.chunks(1_000) {
            repo.start_many(ClaimKind::FirstTime, RUNNER, chunk, LEASE)
                .await
                .unwrap();
        }

        for plan in plans_of(&mut conn, sql::renew_leases(RUNNER, &ids, LEASE), "renew").await {
            assert_read_at_most("a lease renewal", &plan, UPDATE_READS);
        }

        let responses = vec![serde_json::json!({}); BATCH];
        let complete = sql::complete_many(&ids, &attempts, &responses, RUNNER);
        for plan in plans_of(&mut conn, complete, "complete").await {
            assert_read_at_most("a completion", &plan, UPDATE_READS);
        }
    }

    /// The plans of `statement`: the custom plan for its values, and the
    /// generic plan that a connection keeping it prepared may settle on.
    /// Each is run in a transaction that is rolled back: nothing changes.
    async fn plans_of(
        conn: &mut diesel_async::AsyncPgConnection,
        statement: Prepared<'_>,
        name: &str,
    ) -> [Value; 2] {
        async fn run(conn: &mut diesel_async::AsyncPgConnection, sql: &str) {
            diesel::sql_query(sql).execute(conn).await.unwrap();
        }
        let (prepare, execute) = statement.prepare_and_explain(name);
        run(conn, "BEGIN").await;
        let custom: Explained = statement.explained().get_result(conn).await.unwrap();
        run(conn, "ROLLBACK").await;
        run(conn, &prepare).await;
        run(conn, "SET plan_cache_mode = force_generic_plan").await;
        run(conn, "BEGIN").await;
        let generic: Explained = diesel::sql_query(execute).get_result(conn).await.unwrap();
        run(conn, "ROLLBACK").await;
        run(conn, "RESET plan_cache_mode").await;
        run(conn, &format!("DEALLOCATE {name}")).await;
        [custom.plan, generic.plan]
    }
}
