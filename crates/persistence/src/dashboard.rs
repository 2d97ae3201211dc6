//! The dashboard's (`/ui`) reads and its login sessions: a page of jobs with
//! an offset, the overview's aggregates, a job's first rejected lines, and
//! the `ui_sessions` table.
//!
//! Nothing here changes a job: the dashboard's cancel and retry go through
//! [`JobRepo`](crate::JobRepo) like the API's.

use connectra_domain::job::JobStatus;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Binary, Double, Nullable, Text, Timestamptz};
use diesel_async::RunQueryDsl;
use time::OffsetDateTime;

use crate::jobs::Job;
use crate::schema::jobs;
use crate::status::{is_one_of, statuses};
use crate::{PgPool, Result};

/// One page of the job list: newest first, filtered by type and status.
#[derive(Debug, Clone, PartialEq)]
pub struct JobPage {
    pub jobs: Vec<Job>,
    /// Whether a job follows the last one of this page.
    pub has_more: bool,
}

/// Jobs newest first, `limit` of them after skipping `offset`.
pub async fn list_page(
    pool: &PgPool,
    job_type: Option<&str>,
    status: Option<JobStatus>,
    limit: i64,
    offset: i64,
) -> Result<JobPage> {
    let mut conn = pool.get().await?;
    let mut query = jobs::table.select(Job::as_select()).into_boxed();
    if let Some(t) = job_type {
        query = query.filter(jobs::job_type.eq(t.to_string()));
    }
    if let Some(s) = status {
        query = query.filter(jobs::status.eq(s.as_str()));
    }
    let mut rows: Vec<Job> = query
        .order((jobs::created_at.desc(), jobs::id.desc()))
        .limit(limit + 1)
        .offset(offset)
        .load(&mut conn)
        .await?;
    let has_more = rows.len() as i64 > limit;
    rows.truncate(usize::try_from(limit).unwrap_or(0));
    Ok(JobPage {
        jobs: rows,
        has_more,
    })
}

/// The job types that exist in the table, for the list's filter.
pub async fn job_types(pool: &PgPool) -> Result<Vec<String>> {
    let mut conn = pool.get().await?;
    let types = jobs::table
        .select(jobs::job_type)
        .distinct()
        .order(jobs::job_type)
        .load(&mut conn)
        .await?;
    Ok(types)
}

/// A runner that holds jobs right now.
#[derive(Debug, Clone, PartialEq, QueryableByName)]
pub struct RunnerHolding {
    #[diesel(sql_type = Text)]
    pub runner_id: String,
    #[diesel(sql_type = BigInt)]
    pub jobs: i64,
    /// When the longest-held of its running jobs started (none while all
    /// are only queued).
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub oldest_started: Option<OffsetDateTime>,
    /// The first of its leases to expire.
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub next_lease_expiry: Option<OffsetDateTime>,
}

/// Jobs finished in one 5-minute bucket.
#[derive(Debug, Clone, PartialEq, QueryableByName)]
pub struct ThroughputBucket {
    /// The bucket's start.
    #[diesel(sql_type = Timestamptz)]
    pub start: OffsetDateTime,
    #[diesel(sql_type = BigInt)]
    pub completed: i64,
    #[diesel(sql_type = BigInt)]
    pub failed: i64,
    /// Rows processed by the jobs that finished in the bucket.
    #[diesel(sql_type = BigInt)]
    pub rows: i64,
}

/// The overview's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Overview {
    /// `(job_type, status, count)` of every pair that has jobs.
    pub counts: Vec<(String, JobStatus, i64)>,
    /// Jobs a runner could claim now: open ones and failed ones due for a retry.
    pub queue_depth: i64,
    pub runners: Vec<RunnerHolding>,
    /// The twelve 5-minute buckets of the last hour, oldest first, empty
    /// ones included.
    pub throughput: Vec<ThroughputBucket>,
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Everything the overview shows, read in a few aggregate queries.
pub async fn overview(repo: &crate::JobRepo) -> Result<Overview> {
    let counts = repo.counts().await?;
    let mut conn = repo.pool().get().await?;
    let open = is_one_of("status", [JobStatus::Open]);
    let failed = is_one_of("status", [JobStatus::Failed]);
    let depth: Count = diesel::sql_query(format!(
        "SELECT count(*) AS n FROM jobs
         WHERE {open} OR ({failed} AND run_after <= now() AND NOT cancel_requested)"
    ))
    .get_result(&mut conn)
    .await?;
    let runners: Vec<RunnerHolding> = diesel::sql_query(format!(
        "SELECT locked_by AS runner_id, count(*) AS jobs,
                min(started_at) FILTER (WHERE {running}) AS oldest_started,
                min(locked_until) AS next_lease_expiry
         FROM jobs WHERE locked_by IS NOT NULL AND {leased}
         GROUP BY locked_by ORDER BY count(*) DESC, locked_by",
        running = is_one_of("status", statuses(JobStatus::is_running)),
        leased = is_one_of("status", statuses(JobStatus::is_leased)),
    ))
    .load(&mut conn)
    .await?;
    let throughput: Vec<ThroughputBucket> = diesel::sql_query(format!(
        "WITH buckets AS (
             SELECT generate_series(0, 11) AS i,
                    to_timestamp(floor(extract(epoch FROM now()) / 300) * 300 - 300 * 11) AS first)
         SELECT b.first + b.i * interval '5 minutes' AS start,
                count(j.id) FILTER (WHERE j.{completed}) AS completed,
                count(j.id) FILTER (WHERE j.{failed}) AS failed,
                coalesce(sum(j.rows_processed), 0)::int8 AS rows
         FROM buckets b
         LEFT JOIN jobs j ON j.finished_at >= b.first + b.i * interval '5 minutes'
                         AND j.finished_at < b.first + (b.i + 1) * interval '5 minutes'
         GROUP BY b.i, b.first ORDER BY b.i",
        completed = is_one_of("status", [JobStatus::Completed]),
    ))
    .load(&mut conn)
    .await?;
    Ok(Overview {
        counts,
        queue_depth: depth.n,
        runners,
        throughput,
    })
}

/// One rejected line of an import.
#[derive(Debug, Clone, PartialEq, QueryableByName)]
pub struct Rejection {
    #[diesel(sql_type = BigInt)]
    pub line: i64,
    #[diesel(sql_type = Text)]
    pub reason: String,
    #[diesel(sql_type = Text)]
    pub raw: String,
}

/// The first `limit` rejected lines of job `job_id`, in line order.
pub async fn rejections(pool: &PgPool, job_id: i64, limit: i64) -> Result<Vec<Rejection>> {
    let mut conn = pool.get().await?;
    let rows = diesel::sql_query(
        "SELECT line, reason, raw FROM job_rejections WHERE job_id = $1 ORDER BY line LIMIT $2",
    )
    .bind::<BigInt, _>(job_id)
    .bind::<BigInt, _>(limit)
    .load(&mut conn)
    .await?;
    Ok(rows)
}

/// A live dashboard session.
#[derive(Debug, Clone, PartialEq, QueryableByName)]
pub struct UiSession {
    #[diesel(sql_type = Text)]
    pub csrf_token: String,
    #[diesel(sql_type = Timestamptz)]
    pub expires_at: OffsetDateTime,
}

/// Stores a new session under the hash of its token, valid for `ttl_secs`.
/// Also deletes sessions that expired, so the table stays small.
pub async fn create_session(
    pool: &PgPool,
    token_hash: &[u8],
    csrf_token: &str,
    ttl_secs: f64,
) -> Result<()> {
    let mut conn = pool.get().await?;
    diesel::sql_query("DELETE FROM ui_sessions WHERE expires_at < now()")
        .execute(&mut conn)
        .await?;
    diesel::sql_query(
        "INSERT INTO ui_sessions (token_hash, csrf_token, expires_at)
         VALUES ($1, $2, now() + make_interval(secs => $3))",
    )
    .bind::<Binary, _>(token_hash)
    .bind::<Text, _>(csrf_token)
    .bind::<Double, _>(ttl_secs)
    .execute(&mut conn)
    .await?;
    Ok(())
}

/// The unexpired session of `token_hash`, marking it seen now.
pub async fn touch_session(pool: &PgPool, token_hash: &[u8]) -> Result<Option<UiSession>> {
    let mut conn = pool.get().await?;
    let session = diesel::sql_query(
        "UPDATE ui_sessions SET last_seen = now()
         WHERE token_hash = $1 AND expires_at > now()
         RETURNING csrf_token, expires_at",
    )
    .bind::<Binary, _>(token_hash)
    .get_result(&mut conn)
    .await
    .optional()?;
    Ok(session)
}

/// Ends a session (logout); whether there was one.
pub async fn delete_session(pool: &PgPool, token_hash: &[u8]) -> Result<bool> {
    let mut conn = pool.get().await?;
    let n = diesel::sql_query("DELETE FROM ui_sessions WHERE token_hash = $1")
        .bind::<Binary, _>(token_hash)
        .execute(&mut conn)
        .await?;
    Ok(n > 0)
}
