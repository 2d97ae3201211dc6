//! A real `job-runner` process killed with SIGKILL in the middle of a CSV
//! import; a second process rescues the job and resumes after the checkpoint.

#![allow(clippy::unwrap_used)]

use std::process::{Child, Stdio};
use std::time::Duration;

use connectra_domain::job::{JobStatus, NewJob};
use connectra_persistence::testing::{job_until, TestDb};
use connectra_persistence::{Job, JobRepo};
use connectra_storage::{S3Config, Storage};
use diesel::sql_types::BigInt;
use diesel_async::RunQueryDsl;
use serde_json::json;

const ROWS: usize = 30_000;
const BATCH: usize = 500;

mod common;

use common::env;

fn runner(db: &TestDb) -> Child {
    common::job_runner(db.url())
        .env_remove("OPENSEARCH_URL")
        .env("BATCH_SIZE_FOR_INSERTION", BATCH.to_string())
        .env("JOB_LEASE_SECONDS", "2")
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

async fn get(repo: &JobRepo, job: &Job) -> Job {
    repo.get(job.uuid).await.unwrap().unwrap()
}

#[derive(diesel::QueryableByName)]
struct N {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_killed_mid_file_is_rescued_and_ends_with_exactly_the_files_rows() {
    let db = TestDb::new().await;
    let repo = JobRepo::new(db.pool());
    let storage = Storage::new(&S3Config {
        endpoint: Some(env("S3_ENDPOINT", "http://127.0.0.1:8333")),
        region: env("S3_REGION", "us-east-1"),
        access_key_id: Some(env("S3_ACCESS_KEY_ID", "testaccess")),
        secret_access_key: Some(env("S3_SECRET_ACCESS_KEY", "testsecret123")),
        path_style: true,
    })
    .unwrap();
    let bucket = env("S3_BUCKET", "connectra");
    storage.ensure_bucket(&bucket).await.unwrap();
    let mut csv = String::from("email,first_name,last_name,country,departments\n");
    for i in 0..ROWS {
        csv.push_str(&format!(
            "person{i}@example.com,First{i},Last{i},C{},Dept{};Ops\n",
            i % 50,
            i % 7
        ));
    }
    let key = format!("test-rescue-{}/contacts.csv", uuid::Uuid::new_v4().simple());
    storage
        .put_bytes(&bucket, &key, csv.as_bytes(), "text/csv")
        .await
        .unwrap();
    let job = repo
        .create(&NewJob {
            job_type: "insert_csv_file".into(),
            data: json!({"s3_key": key}),
            retry_count: 0,
            retry_interval: 0,
        })
        .await
        .unwrap();

    let mut first = runner(&db);
    job_until(
        &repo,
        job.uuid,
        Duration::from_secs(120),
        "the import to get going",
        |j| {
            assert!(
                j.status != JobStatus::Completed,
                "the import finished before it could be killed; make the file bigger"
            );
            j.rows_processed >= 3 * BATCH as i64
        },
    )
    .await;
    first.kill().unwrap();
    first.wait().unwrap();
    let at_kill = get(&repo, &job).await;
    assert_eq!(at_kill.status, JobStatus::Processing);
    let checkpoint_rows = at_kill.checkpoint.as_ref().unwrap()["rows_processed"]
        .as_i64()
        .unwrap();
    assert!(checkpoint_rows < ROWS as i64);

    let mut second = runner(&db);
    let done = job_until(
        &repo,
        job.uuid,
        Duration::from_secs(180),
        "the rescue",
        |j| matches!(j.status, JobStatus::Completed | JobStatus::Failed),
    )
    .await;
    second.kill().unwrap();
    second.wait().unwrap();
    assert_eq!(done.status, JobStatus::Completed, "{:?}", done.job_response);
    assert_eq!(done.attempts, 2);
    assert_eq!(done.rescues, 1);
    assert_eq!(done.rows_processed, ROWS as i64);
    let mut conn = db.pool().get().await.unwrap();
    let n = |sql: &'static str| diesel::sql_query(sql);
    assert_eq!(
        n("SELECT count(*) AS n FROM contacts")
            .get_result::<N>(&mut conn)
            .await
            .unwrap()
            .n,
        ROWS as i64
    );
    assert_eq!(
        n("SELECT count(DISTINCT email) AS n FROM contacts")
            .get_result::<N>(&mut conn)
            .await
            .unwrap()
            .n,
        ROWS as i64
    );
    // committed batches were not rewritten: at most what was in flight at the
    // kill was redone, a group (one transaction of at least 5,000 lines,
    // whose checkpoint is written after its commit) per writer connection
    let in_flight = 2 * connectra_jobs::builtin::DEFAULT_GROUP_ROWS.max(BATCH);
    let rewritten = n("SELECT count(*) AS n FROM contacts WHERE updated_at > created_at")
        .get_result::<N>(&mut conn)
        .await
        .unwrap()
        .n;
    assert!(
        rewritten <= in_flight as i64,
        "{rewritten} rows were written twice (at most {in_flight} may be)"
    );
}
