//! The runner against a real PostgreSQL, with test job types registered
//! through the embedding API. Each test has its own database.

#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use connectra_domain::job::{JobStatus, NewJob};
use connectra_jobs::{
    JobContext, JobResponse, Mode, Progress, Registry, RunReport, Runner, RunnerConfig,
};
use connectra_persistence::jobs::{CancelOutcome, Fence};
use connectra_persistence::testing::{eventually, TestDb};
use connectra_persistence::{Job, JobRepo, PgPool};
use diesel::sql_types::{BigInt, Integer, Text};
use diesel_async::RunQueryDsl;
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

async fn exec(pool: &PgPool, sql: &str) {
    let mut conn = pool.get().await.unwrap();
    diesel::sql_query(sql).execute(&mut conn).await.unwrap();
}

#[derive(diesel::QueryableByName, Debug)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    let mut conn = pool.get().await.unwrap();
    diesel::sql_query(sql)
        .get_result::<Count>(&mut conn)
        .await
        .unwrap()
        .n
}

fn job(job_type: &str, data: Value, retry_count: i32, retry_interval: i32) -> NewJob {
    NewJob {
        job_type: job_type.into(),
        data,
        retry_count,
        retry_interval,
    }
}

fn config(db: &TestDb, mode: Mode) -> RunnerConfig {
    let mut c = RunnerConfig::new(mode);
    c.listen_url = Some(db.url().to_string());
    c.lease = Duration::from_secs(3);
    c.shutdown_grace = Duration::from_secs(5);
    c.stop_timeout = Duration::from_secs(5);
    c
}

fn start(
    db: &TestDb,
    registry: Registry,
    cfg: RunnerConfig,
) -> (CancellationToken, JoinHandle<RunReport>) {
    let stop = CancellationToken::new();
    let runner = Runner::new(JobRepo::new(db.pool()), registry, cfg);
    let handle = tokio::spawn(runner.run(stop.clone()));
    (stop, handle)
}

/// Polls until `done` or fails the test after `secs`.
async fn wait_until<F, Fut>(secs: u64, what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    eventually(Duration::from_secs(secs), what, || {
        let done = done();
        async move {
            done.await
                .then_some(())
                .ok_or_else(|| "not yet".to_string())
        }
    })
    .await;
}

/// A runner of `mode` that runs whatever is due now and stops: its report
/// tells what there was to run. How these tests show that nothing runs.
async fn drain(db: &TestDb, registry: Registry, mode: Mode) -> RunReport {
    Runner::new(JobRepo::new(db.pool()), registry, config(db, mode))
        .run_until_idle()
        .await
}

async fn get(repo: &JobRepo, job: &Job) -> Job {
    repo.get(job.uuid).await.unwrap().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_runners_racing_over_2000_jobs_complete_each_exactly_once() {
    let db = TestDb::new().await;
    let pool = db.pool();
    exec(
        &pool,
        "CREATE TABLE executions (job_id BIGINT NOT NULL, attempt INT NOT NULL)",
    )
    .await;
    let repo = JobRepo::new(pool.clone());
    let jobs: Vec<NewJob> = (0..2000)
        .map(|i| job("record", json!({ "i": i }), 0, 0))
        .collect();

    let mut runners = Vec::new();
    for _ in 0..4 {
        let mut registry = Registry::new();
        let p = pool.clone();
        registry.register_fn("record", move |ctx: JobContext| {
            let p = p.clone();
            async move {
                let mut conn = p.get().await?;
                diesel::sql_query("INSERT INTO executions VALUES ($1, $2)")
                    .bind::<BigInt, _>(ctx.job().id)
                    .bind::<Integer, _>(ctx.job().attempts)
                    .execute(&mut conn)
                    .await?;
                Ok(JobResponse::default())
            }
        });
        let mut cfg = config(&db, Mode::FirstTime);
        cfg.queue_size = 50;
        runners.push(start(&db, registry, cfg));
    }
    // created after the runners listen: NOTIFY must wake them
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(repo.create_many(&jobs).await.unwrap(), 2000);

    wait_until(120, "2000 completed jobs", || async {
        count(
            &pool,
            "SELECT count(*) AS n FROM jobs WHERE status = 'completed'",
        )
        .await
            == 2000
    })
    .await;
    let mut claimed = 0;
    for (stop, handle) in runners {
        stop.cancel();
        let report = handle.await.unwrap();
        assert!(report.lost == 0 && report.failed == 0, "{report:?}");
        claimed += report.claimed;
    }
    assert_eq!(
        claimed, 2000,
        "every job claimed exactly once across runners"
    );
    assert_eq!(
        count(&pool, "SELECT count(*) AS n FROM executions").await,
        2000
    );
    assert_eq!(
        count(&pool, "SELECT count(DISTINCT job_id) AS n FROM executions").await,
        2000
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) AS n FROM jobs WHERE attempts <> 1 OR locked_by IS NOT NULL"
        )
        .await,
        0
    );
}

type Running = (CancellationToken, JoinHandle<RunReport>);

/// A `runs` table and a first-time and a retry runner of [`flaky`] jobs.
async fn flaky_runners(db: &TestDb, fail_first: i32) -> Vec<Running> {
    let pool = db.pool();
    exec(
        &pool,
        "CREATE TABLE runs (job_id BIGINT, attempt INT, at TIMESTAMPTZ)",
    )
    .await;
    [Mode::FirstTime, Mode::Retry]
        .into_iter()
        .map(|mode| start(db, flaky(fail_first, pool.clone()), config(db, mode)))
        .collect()
}

async fn stop_all(runners: Vec<Running>) {
    for (stop, h) in runners {
        stop.cancel();
        h.await.unwrap();
    }
}

/// Counts runs and fails the first `fail_first` attempts.
fn flaky(fail_first: i32, pool: PgPool) -> Registry {
    let mut registry = Registry::new();
    registry.register_fn("flaky", move |ctx: JobContext| {
        let pool = pool.clone();
        async move {
            let mut conn = pool.get().await?;
            diesel::sql_query("INSERT INTO runs VALUES ($1, $2, clock_timestamp())")
                .bind::<BigInt, _>(ctx.job().id)
                .bind::<Integer, _>(ctx.job().attempts)
                .execute(&mut conn)
                .await?;
            if ctx.job().attempts <= fail_first {
                anyhow::bail!("flaky failure number {}", ctx.job().attempts);
            }
            Ok(JobResponse {
                messages: Some("finally".into()),
                ..JobResponse::default()
            })
        }
    });
    registry
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_failing_twice_then_succeeding_with_retry_count_3_completes_on_attempt_3() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let repo = JobRepo::new(pool.clone());
    let runners = flaky_runners(&db, 2).await;
    let created = repo.create(&job("flaky", json!({}), 3, 1)).await.unwrap();

    wait_until(30, "completion after retries", || async {
        get(&repo, &created).await.status == JobStatus::Completed
    })
    .await;
    let done = get(&repo, &created).await;
    assert_eq!(done.attempts, 3);
    assert_eq!(done.run_after, None);
    let response = done.response();
    assert_eq!(response.messages.as_deref(), Some("finally"));
    assert_eq!(
        response.runtime_errors.len(),
        2,
        "{:?}",
        response.runtime_errors
    );
    assert!(response.runtime_errors[0].contains("flaky failure number 1"));
    // run_after was respected: each retry started at least retry_interval after the failure
    let gaps = count(
        &pool,
        "SELECT count(*) AS n FROM runs a JOIN runs b ON b.attempt = a.attempt + 1
                             WHERE b.at - a.at < interval '1 second'",
    )
    .await;
    assert_eq!(gaps, 0, "a retry ran before its run_after");
    assert_eq!(count(&pool, "SELECT count(*) AS n FROM runs").await, 3);
    stop_all(runners).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_retry_count_0_a_failure_is_final_and_run_after_is_null() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let repo = JobRepo::new(pool.clone());
    let runners = flaky_runners(&db, 5).await;
    let created = repo.create(&job("flaky", json!({}), 0, 0)).await.unwrap();
    wait_until(30, "failure", || async {
        get(&repo, &created).await.status == JobStatus::Failed
    })
    .await;
    stop_all(runners).await;
    // neither kind of runner finds anything left to run
    for mode in [Mode::Retry, Mode::FirstTime] {
        let report = drain(&db, flaky(5, pool.clone()), mode).await;
        assert_eq!(report.claimed, 0, "{mode:?}: {report:?}");
    }
    let failed = get(&repo, &created).await;
    assert_eq!(failed.status, JobStatus::Failed);
    assert_eq!(failed.attempts, 1);
    assert_eq!(failed.run_after, None);
    assert_eq!(count(&pool, "SELECT count(*) AS n FROM runs").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_job_is_not_retried_before_its_run_after() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let repo = JobRepo::new(pool.clone());
    let runners = flaky_runners(&db, 1).await;
    let created = repo
        .create(&job("flaky", json!({}), 1, 3600))
        .await
        .unwrap();
    wait_until(30, "first failure", || async {
        get(&repo, &created).await.status == JobStatus::Failed
    })
    .await;
    // a retry runner finds nothing due
    let report = drain(&db, flaky(1, pool.clone()), Mode::Retry).await;
    assert_eq!(report.claimed, 0, "{report:?}");
    let waiting = get(&repo, &created).await;
    assert_eq!(waiting.status, JobStatus::Failed);
    assert_eq!(waiting.attempts, 1);
    let run_after = waiting.run_after.expect("a retry is scheduled");
    let wait = run_after - waiting.finished_at.unwrap();
    assert!(
        (wait.whole_seconds() - 3600).abs() <= 1,
        "run_after = now + retry_interval, got {wait}"
    );
    // bring run_after forward: the retry runner takes it
    exec(&pool, "UPDATE jobs SET run_after = now()").await;
    wait_until(30, "retry", || async {
        get(&repo, &created).await.status == JobStatus::Completed
    })
    .await;
    assert_eq!(get(&repo, &created).await.attempts, 2);
    stop_all(runners).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_fails_the_job_with_the_panic_message() {
    let db = TestDb::new().await;
    let repo = JobRepo::new(db.pool());
    let mut registry = Registry::new();
    registry.register_fn("boom", |_ctx: JobContext| async {
        if true {
            panic!("the flux capacitor overheated");
        }
        Ok(JobResponse::default())
    });
    let (stop, h) = start(&db, registry, config(&db, Mode::FirstTime));
    let created = repo.create(&job("boom", json!({}), 0, 0)).await.unwrap();
    wait_until(30, "failure", || async {
        get(&repo, &created).await.status == JobStatus::Failed
    })
    .await;
    let failed = get(&repo, &created).await;
    let errors = failed.response().runtime_errors;
    assert!(
        errors[0].contains("panicked: the flux capacitor overheated"),
        "{errors:?}"
    );
    stop.cancel();
    assert_eq!(h.await.unwrap().failed, 1);
}

fn sleeper(started: Arc<AtomicUsize>) -> Registry {
    let mut registry = Registry::new();
    registry.register_fn("sleep", move |ctx: JobContext| {
        let started = started.clone();
        async move {
            started.fetch_add(1, Ordering::SeqCst);
            let mut step = ctx
                .checkpoint()
                .and_then(|c| c["step"].as_i64())
                .unwrap_or(0);
            loop {
                if ctx.is_cancelled() {
                    return Err(ctx.stopped());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                step += 1;
                ctx.record_progress(
                    &Progress {
                        rows_processed: step,
                        ..Progress::default()
                    },
                    Some(&json!({ "step": step })),
                )
                .await?;
            }
        }
    });
    registry
}

/// Creates a job, lets a runner start it, asks for its cancellation, and
/// checks it stops for good. `cfg` decides how the request reaches the runner.
async fn cancel_a_running_job(cfg: impl Fn(&TestDb, Mode) -> RunnerConfig) {
    let db = TestDb::new().await;
    let repo = JobRepo::new(db.pool());
    let started = Arc::new(AtomicUsize::new(0));
    let created = repo.create(&job("sleep", json!({}), 5, 0)).await.unwrap();
    let first = start(&db, sleeper(started.clone()), cfg(&db, Mode::FirstTime));
    let retry = start(&db, sleeper(started.clone()), cfg(&db, Mode::Retry));
    wait_until(30, "processing", || async {
        get(&repo, &created).await.status == JobStatus::Processing
    })
    .await;
    let outcome = repo.cancel(created.uuid).await.unwrap().unwrap();
    assert!(
        matches!(outcome, CancelOutcome::Requested(_)),
        "{outcome:?}"
    );
    wait_until(30, "cancelled", || async {
        get(&repo, &created).await.status == JobStatus::Failed
    })
    .await;
    // neither kind of runner finds it to run again
    for mode in [Mode::Retry, Mode::FirstTime] {
        let report = drain(&db, sleeper(started.clone()), mode).await;
        assert_eq!(report.claimed, 0, "{mode:?}: {report:?}");
    }
    let cancelled = get(&repo, &created).await;
    assert_eq!(cancelled.status, JobStatus::Failed);
    assert_eq!(
        cancelled.run_after, None,
        "retries remained, but a cancelled job never runs again"
    );
    assert_eq!(cancelled.job_response["cancelled"], json!(true));
    assert_eq!(AtomicUsize::load(&started, Ordering::SeqCst), 1);
    stop_all(vec![first, retry]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_request_reaches_the_running_handler_at_once_through_notify() {
    // The next lease renewal is 200 s away: only the notification can stop
    // the handler within the 30 s the scenario waits.
    cancel_a_running_job(|db, mode| {
        let mut c = config(db, mode);
        c.lease = Duration::from_secs(600);
        c
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_notify_a_cancel_request_reaches_the_handler_at_the_next_lease_renewal() {
    cancel_a_running_job(|db, mode| {
        let mut c = config(db, mode);
        c.listen_url = None;
        c
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_hands_back_queued_and_running_jobs_with_their_checkpoint() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let repo = JobRepo::new(pool.clone());
    let started = Arc::new(AtomicUsize::new(0));
    let mut cfg = config(&db, Mode::FirstTime);
    cfg.workers = 2;
    cfg.queue_size = 5;
    cfg.shutdown_grace = Duration::from_millis(300);
    let (stop, h) = start(&db, sleeper(started.clone()), cfg);
    let jobs: Vec<NewJob> = (0..10).map(|_| job("sleep", json!({}), 0, 0)).collect();
    repo.create_many(&jobs).await.unwrap();
    wait_until(30, "2 running and a refilled queue", || async {
        count(
            &pool,
            "SELECT count(*) AS n FROM jobs WHERE status = 'processing' AND rows_processed > 0",
        )
        .await
            == 2
            && refilled(queued(&pool).await, 5)
    })
    .await;
    let in_queue = queued(&pool).await;
    stop.cancel();
    let report = h.await.unwrap();
    assert_eq!(report.released as i64, 2 + in_queue, "{report:?}");
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) AS n FROM jobs WHERE status <> 'open' OR locked_by IS NOT NULL"
        )
        .await,
        0
    );
    // the two that ran kept their checkpoint and their attempt; the queued ones got theirs back
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) AS n FROM jobs WHERE checkpoint IS NOT NULL AND attempts = 1"
        )
        .await,
        2
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) AS n FROM jobs WHERE checkpoint IS NULL AND attempts = 0"
        )
        .await,
        8
    );
    // and a new runner resumes from the checkpoint
    let mut registry = Registry::new();
    registry.register_fn("sleep", |ctx: JobContext| async move {
        let step = ctx
            .checkpoint()
            .and_then(|c| c["step"].as_i64())
            .unwrap_or(0);
        Ok(JobResponse {
            messages: Some(format!("resumed at {step}")),
            ..JobResponse::default()
        })
    });
    let (stop, h) = start(&db, registry, config(&db, Mode::FirstTime));
    wait_until(30, "all completed", || async {
        count(
            &pool,
            "SELECT count(*) AS n FROM jobs WHERE status = 'completed'",
        )
        .await
            == 10
    })
    .await;
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) AS n FROM jobs WHERE job_response->>'messages' <> 'resumed at 0'"
        )
        .await,
        2
    );
    stop.cancel();
    h.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_runner_keeps_dying_fails_for_good_after_the_rescue_limit() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let repo = JobRepo::new(pool.clone());
    let created = repo.create(&job("sleep", json!({}), 9, 0)).await.unwrap();
    for round in 1..=3 {
        exec(
            &pool,
            "UPDATE jobs SET status = 'processing', attempts = attempts + 1, locked_by = 'dead',
                     locked_until = now() - interval '1 second'",
        )
        .await;
        let report = repo.rescue_expired(2).await.unwrap();
        let j = get(&repo, &created).await;
        if round <= 2 {
            assert_eq!((report.released, report.failed_for_good), (1, 0));
            assert_eq!(j.status, JobStatus::Open);
            assert_eq!(j.rescues, round);
        } else {
            assert_eq!((report.released, report.failed_for_good), (0, 1));
            assert_eq!(j.status, JobStatus::Failed);
            assert_eq!(j.run_after, None);
            let errors = j.response().runtime_errors;
            assert!(
                errors
                    .last()
                    .unwrap()
                    .contains("stopped responding 3 times"),
                "{errors:?}"
            );
        }
    }
    // a retrying job whose runner died goes back to failed, due now
    let other = repo.create(&job("sleep", json!({}), 9, 0)).await.unwrap();
    exec(
        &pool,
        &format!(
            "UPDATE jobs SET status = 'retrying', attempts = 2, locked_by = 'dead',
                  locked_until = now() - interval '1 second' WHERE id = {}",
            other.id
        ),
    )
    .await;
    repo.rescue_expired(2).await.unwrap();
    let j = get(&repo, &other).await;
    assert_eq!(j.status, JobStatus::Failed);
    assert!(j.run_after.is_some());
}

#[derive(diesel::QueryableByName)]
struct Status {
    #[diesel(sql_type = Text, deserialize_as = connectra_persistence::StatusColumn)]
    status: JobStatus,
}

async fn statuses(pool: &PgPool) -> Vec<JobStatus> {
    let mut conn = pool.get().await.unwrap();
    diesel::sql_query("SELECT status FROM jobs ORDER BY id")
        .load::<Status>(&mut conn)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.status)
        .collect()
}

/// Jobs claimed into a runner's queue and not yet started.
async fn queued(pool: &PgPool) -> i64 {
    count(
        pool,
        "SELECT count(*) AS n FROM jobs WHERE status = 'in_queue'",
    )
    .await
}

/// Whether a queue of `size` holds as many jobs as the claimer keeps in it
/// while the database has work: once full, it claims again only when half of
/// it is free (claims stay batched), so it may rest just short of full. More
/// than `size` would break the backpressure.
fn refilled(in_queue: i64, size: i64) -> bool {
    let refill_at = (size / 2).max(1);
    (size - refill_at + 1..=size).contains(&in_queue)
}

/// Sends SIGTERM and waits for the process to exit.
async fn terminate(child: std::process::Child) -> std::process::Output {
    let pid = child.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap()
}

fn demo(db: &TestDb, extra: &[(&str, &str)]) -> std::process::Child {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_demo-runner"));
    cmd.env("DATABASE_URL", db.url())
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_killed_mid_job_is_rescued_by_another_and_its_late_write_is_rejected() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let repo = JobRepo::new(pool.clone());
    let created = repo
        .create(&job("sleep", json!({ "ms": 600000 }), 0, 0))
        .await
        .unwrap();
    let mut child = demo(&db, &[("JOB_LEASE_SECONDS", "2")]);
    wait_until(60, "the process to run the job", || async {
        let j = get(&repo, &created).await;
        j.status == JobStatus::Processing && j.rows_processed > 2
    })
    .await;
    let stale = get(&repo, &created).await;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    // another runner (this process) rescues it once the lease expires, and finishes it
    let mut registry = Registry::new();
    registry.register_fn("sleep", |ctx: JobContext| async move {
        let resumed = ctx
            .checkpoint()
            .and_then(|c| c["done_ms"].as_u64())
            .unwrap_or(0);
        Ok(JobResponse {
            messages: Some(format!("resumed after {resumed} ms")),
            ..JobResponse::default()
        })
    });
    let mut cfg = config(&db, Mode::FirstTime);
    cfg.lease = Duration::from_secs(2);
    let (stop, h) = start(&db, registry, cfg);
    wait_until(60, "rescue and completion", || async {
        get(&repo, &created).await.status == JobStatus::Completed
    })
    .await;
    let done = get(&repo, &created).await;
    assert_eq!(done.attempts, 2);
    assert_eq!(done.rescues, 1);
    assert_ne!(
        done.response().messages.as_deref(),
        Some("resumed after 0 ms"),
        "checkpoint kept"
    );

    // the dead runner's late writes carry the stale attempt: all rejected
    let fence = Fence {
        id: stale.id,
        attempt: stale.attempts,
        runner_id: stale.locked_by.as_deref().unwrap(),
    };
    assert!(!repo.complete(fence, &JobResponse::default()).await.unwrap());
    assert!(!repo.fail(fence, &JobResponse::default()).await.unwrap());
    assert!(!repo.release(fence).await.unwrap());
    assert!(!repo
        .record_progress(fence, &Progress::default(), None)
        .await
        .unwrap());
    assert_eq!(get(&repo, &created).await, done, "nothing changed");
    stop.cancel();
    h.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_leaves_no_job_queued_or_running_and_the_process_exits_0() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let repo = JobRepo::new(pool.clone());
    let jobs: Vec<NewJob> = (0..12)
        .map(|_| job("sleep", json!({ "ms": 600000 }), 0, 0))
        .collect();
    repo.create_many(&jobs).await.unwrap();
    let child = demo(
        &db,
        &[
            ("PARALLEL_JOBS", "2"),
            ("JOB_IN_QUEUE_SIZE", "4"),
            ("SHUTDOWN_GRACE_SECONDS", "1"),
        ],
    );
    wait_until(60, "2 running jobs and a refilled queue", || async {
        let s = statuses(&pool).await;
        s.iter().filter(|s| **s == JobStatus::Processing).count() == 2
            && refilled(queued(&pool).await, 4)
    })
    .await;
    let out = terminate(child).await;
    assert!(out.status.success(), "exit status {:?}", out.status);
    let s = statuses(&pool).await;
    assert!(s.iter().all(|s| *s == JobStatus::Open), "{s:?}");
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) AS n FROM jobs WHERE checkpoint IS NOT NULL"
        )
        .await,
        2
    );

    // the same for the retry runner: jobs go back to failed, due now
    exec(
        &pool,
        "UPDATE jobs SET status = 'failed', run_after = now()",
    )
    .await;
    let child = demo(
        &db,
        &[
            ("MODE", "retry"),
            ("PARALLEL_JOBS", "1"),
            ("JOB_IN_QUEUE_SIZE", "3"),
            ("SHUTDOWN_GRACE_SECONDS", "1"),
        ],
    );
    wait_until(60, "a retrying job", || async {
        let s = statuses(&pool).await;
        s.iter().filter(|s| **s == JobStatus::Retrying).count() == 1
            && s.iter().filter(|s| **s == JobStatus::RetryInQueued).count() == 3
    })
    .await;
    let out = terminate(child).await;
    assert!(out.status.success());
    assert_eq!(count(&pool, "SELECT count(*) AS n FROM jobs WHERE status IN ('in_queue','processing','retry_in_queued','retrying')").await, 0);
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) AS n FROM jobs WHERE status = 'failed' AND run_after <= now()"
        )
        .await,
        12
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_claim_is_tried_again_soon_without_a_notify_or_the_ticker() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let repo = JobRepo::new(pool.clone());
    let created = repo.create(&job("noop", json!({}), 0, 0)).await.unwrap();
    // every claim fails while the table is away
    exec(&pool, "ALTER TABLE jobs RENAME TO jobs_away").await;
    let mut registry = Registry::new();
    registry.register_fn("noop", |_ctx: JobContext| async {
        Ok(JobResponse::default())
    });
    let mut cfg = config(&db, Mode::FirstTime);
    cfg.listen_url = None;
    cfg.ticker = Duration::from_secs(3600);
    let (stop, h) = start(&db, registry, cfg);
    tokio::time::sleep(Duration::from_millis(500)).await;
    exec(&pool, "ALTER TABLE jobs_away RENAME TO jobs").await;
    wait_until(30, "the job to complete", || async {
        get(&repo, &created).await.status == JobStatus::Completed
    })
    .await;
    stop.cancel();
    let report = h.await.unwrap();
    assert!(report.claim_failures >= 1, "{report:?}");
    assert_eq!(report.completed, 1, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_listen_connection_is_reopened_and_new_jobs_still_wake_the_runner_at_once() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let repo = JobRepo::new(pool.clone());
    let mut registry = Registry::new();
    registry.register_fn("noop", |_ctx: JobContext| async {
        Ok(JobResponse::default())
    });
    // the ticker is an hour away: only NOTIFY can wake the runner in time
    let mut cfg = config(&db, Mode::FirstTime);
    cfg.ticker = Duration::from_secs(3600);
    let (stop, h) = start(&db, registry, cfg);
    let listening = "SELECT count(*) AS n FROM pg_stat_activity
                     WHERE datname = current_database() AND query ILIKE 'LISTEN%'";
    wait_until(30, "the LISTEN connection", || async {
        count(&pool, listening).await == 1
    })
    .await;
    let first = repo.create(&job("noop", json!({}), 0, 0)).await.unwrap();
    wait_until(10, "the first job", || async {
        get(&repo, &first).await.status == JobStatus::Completed
    })
    .await;

    exec(
        &pool,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE datname = current_database() AND query ILIKE 'LISTEN%'",
    )
    .await;
    wait_until(30, "a new LISTEN connection", || async {
        count(&pool, listening).await == 1
    })
    .await;
    let second = repo.create(&job("noop", json!({}), 0, 0)).await.unwrap();
    wait_until(10, "the second job", || async {
        get(&repo, &second).await.status == JobStatus::Completed
    })
    .await;
    stop.cancel();
    assert_eq!(h.await.unwrap().completed, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_until_idle_runs_what_is_due_waits_for_its_outcomes_and_stops() {
    let db = TestDb::new().await;
    let repo = JobRepo::new(db.pool());
    let jobs: Vec<NewJob> = (0..30).map(|_| job("noop", json!({}), 0, 0)).collect();
    repo.create_many(&jobs).await.unwrap();
    let mut registry = Registry::new();
    registry.register_fn("noop", |_ctx: JobContext| async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        Ok(JobResponse::default())
    });
    let mut cfg = config(&db, Mode::FirstTime);
    cfg.queue_size = 8; // more jobs than the queue holds: several claims
    cfg.ticker = Duration::from_secs(3600);
    let report = Runner::new(JobRepo::new(db.pool()), registry.clone(), cfg)
        .run_until_idle()
        .await;
    assert_eq!((report.claimed, report.completed), (30, 30), "{report:?}");
    assert_eq!(statuses(&db.pool()).await, vec![JobStatus::Completed; 30]);
    // and with nothing due, it stops at once having claimed nothing
    let again = drain(&db, registry, Mode::FirstTime).await;
    assert_eq!(again, RunReport::default());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_start_batches_never_run_more_handlers_than_workers() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let repo = JobRepo::new(pool.clone());
    let jobs: Vec<NewJob> = (0..400)
        .map(|i| job("busy", json!({ "i": i }), 0, 0))
        .collect();
    assert_eq!(repo.create_many(&jobs).await.unwrap(), 400);
    let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut registry = Registry::new();
    let (n, m) = (now.clone(), most.clone());
    registry.register_fn("busy", move |_ctx: JobContext| {
        let (n, m) = (n.clone(), m.clone());
        async move {
            let running = n.fetch_add(1, Ordering::SeqCst) + 1;
            m.fetch_max(running, Ordering::SeqCst);
            // short and uneven, so slots free up while a start is in flight
            tokio::time::sleep(Duration::from_millis(1 + (running as u64 % 3))).await;
            n.fetch_sub(1, Ordering::SeqCst);
            Ok(JobResponse::default())
        }
    });
    let mut cfg = config(&db, Mode::FirstTime);
    cfg.workers = 8;
    let report = Runner::new(repo, registry, cfg).run_until_idle().await;
    assert_eq!(
        (report.completed, report.lost, report.failed),
        (400, 0, 0),
        "{report:?}"
    );
    let most = AtomicUsize::load(&most, Ordering::SeqCst);
    assert!(
        (2..=8).contains(&most),
        "at most 8 handlers at once, and more than one: {most}"
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) AS n FROM jobs WHERE status = 'completed' AND attempts = 1 AND locked_by IS NULL"
        )
        .await,
        400
    );
}
