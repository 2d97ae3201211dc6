//! Runner benchmarks against the real local PostgreSQL (`just bench`).
//!
//! 1. Pickup latency: jobs created one at a time while a runner waits on
//!    `LISTEN`; latency is `started_at - created_at`, both taken from the
//!    database clock, so client-side scheduling does not enter it.
//! 2. Throughput: N no-op jobs drained by 1 runner, then by 4 runners (each
//!    with `PARALLEL_JOBS` workers), in fresh databases.
//!
//! Prints a Markdown table for `docs/benchmarks.md`.
//!
//! `runner_bench throughput JOBS RUNNERS WORKERS [QUEUE]` runs one
//! throughput measurement instead and prints its jobs/s alone (what
//! `scripts/bench/runner_vs_river.sh` alternates with River's bench). The
//! clock: wall time from the runners' start until a count of completed rows,
//! polled every 5 ms, reaches JOBS; River's side is timed the same way.

use std::time::{Duration, Instant};

use connectra_domain::job::NewJob;
use connectra_jobs::{JobContext, JobResponse, Mode, Registry, Runner, RunnerConfig};
use connectra_persistence::testing::TestDb;
use connectra_persistence::JobRepo;
use diesel::sql_types::{BigInt, Double};
use diesel_async::RunQueryDsl;
use tokio_util::sync::CancellationToken;

const THROUGHPUT_JOBS: usize = 20_000;
const LATENCY_JOBS: usize = 200;

fn noop_registry() -> Registry {
    let mut r = Registry::new();
    r.register_fn("noop", |_ctx: JobContext| async {
        Ok(JobResponse::default())
    });
    r
}

fn config(db: &TestDb) -> RunnerConfig {
    let mut c = RunnerConfig::new(Mode::FirstTime);
    c.listen_url = Some(db.url().to_string());
    c
}

fn noop_jobs(n: usize) -> Vec<NewJob> {
    (0..n)
        .map(|_| NewJob {
            job_type: "noop".into(),
            data: serde_json::json!({}),
            retry_count: 0,
            retry_interval: 0,
        })
        .collect()
}

#[derive(diesel::QueryableByName)]
struct N {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(diesel::QueryableByName)]
struct Ms {
    #[diesel(sql_type = Double)]
    ms: f64,
}

async fn completed(repo: &JobRepo) -> anyhow::Result<i64> {
    let mut conn = repo.pool().get().await?;
    Ok(
        diesel::sql_query("SELECT count(*) AS n FROM jobs WHERE status = 'completed'")
            .get_result::<N>(&mut conn)
            .await?
            .n,
    )
}

async fn pickup_latency() -> anyhow::Result<(f64, f64, f64)> {
    let db = TestDb::new().await;
    let repo = JobRepo::new(db.pool());
    let stop = CancellationToken::new();
    let runner = Runner::new(repo.clone(), noop_registry(), config(&db));
    let handle = tokio::spawn(runner.run(stop.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let one = noop_jobs(1);
    for _ in 0..LATENCY_JOBS {
        repo.create(&one[0]).await?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    while completed(&repo).await? < LATENCY_JOBS as i64 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    handle.await?;
    let mut conn = repo.pool().get().await?;
    let mut ms: Vec<f64> = diesel::sql_query(
        "SELECT extract(epoch FROM started_at - created_at)::float8 * 1000 AS ms FROM jobs",
    )
    .load::<Ms>(&mut conn)
    .await?
    .into_iter()
    .map(|m| m.ms)
    .collect();
    ms.sort_by(f64::total_cmp);
    let pct = |p: f64| ms[((ms.len() as f64 - 1.0) * p).round() as usize];
    Ok((pct(0.50), pct(0.95), pct(0.99)))
}

async fn throughput(
    jobs: usize,
    runners: usize,
    workers: usize,
    queue: Option<usize>,
) -> anyhow::Result<f64> {
    let db = TestDb::new().await;
    let repo = JobRepo::new(db.pool());
    repo.create_many(&noop_jobs(jobs)).await?;
    let stop = CancellationToken::new();
    let started = Instant::now();
    let handles: Vec<_> = (0..runners)
        .map(|_| {
            let mut cfg = config(&db);
            cfg.workers = workers;
            if let Some(q) = queue {
                cfg.queue_size = q;
            }
            let runner = Runner::new(
                JobRepo::new(connectra_persistence::build_pool(db.url(), 8).expect("pool")),
                noop_registry(),
                cfg,
            );
            tokio::spawn(runner.run(stop.clone()))
        })
        .collect();
    while completed(&repo).await? < jobs as i64 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed();
    stop.cancel();
    for h in handles {
        h.await?;
    }
    Ok(jobs as f64 / elapsed.as_secs_f64())
}

/// `throughput JOBS RUNNERS WORKERS [QUEUE]`: one measurement, its jobs/s.
fn one_run(args: &[String]) -> anyhow::Result<Option<[usize; 4]>> {
    let Some(first) = args.first() else {
        return Ok(None);
    };
    anyhow::ensure!(
        first == "throughput" && (4..=5).contains(&args.len()),
        "usage: runner_bench [throughput JOBS RUNNERS WORKERS [QUEUE]]"
    );
    let mut n = [0; 4];
    for (slot, arg) in n.iter_mut().zip(&args[1..]) {
        *slot = arg
            .parse()
            .ok()
            .filter(|&v| v > 0)
            .ok_or_else(|| anyhow::anyhow!("{arg:?} is not a positive number"))?;
    }
    Ok(Some(n))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some([jobs, runners, workers, queue]) = one_run(&args)? {
        let queue = (queue > 0).then_some(queue);
        println!("{:.0}", throughput(jobs, runners, workers, queue).await?);
        return Ok(());
    }
    let (p50, p95, p99) = pickup_latency().await?;
    println!("| measure | result |");
    println!("|---|---|");
    println!("| pickup latency, create → processing, {LATENCY_JOBS} jobs | p50 {p50:.1} ms, p95 {p95:.1} ms, p99 {p99:.1} ms |");
    // 4 workers is the guide's PARALLEL_JOBS default; 16 its high-throughput advice
    for workers in [4, 16] {
        for runners in [1, 4] {
            let rate = throughput(THROUGHPUT_JOBS, runners, workers, None).await?;
            println!("| no-op jobs/s, {runners} runner(s) × {workers} workers, {THROUGHPUT_JOBS} jobs | {rate:.0} |");
        }
    }
    Ok(())
}
