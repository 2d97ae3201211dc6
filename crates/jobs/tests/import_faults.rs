//! An import rides out faults within its attempt, against real PostgreSQL,
//! SeaweedFS and OpenSearch: its database connections are cut under it and
//! it connects again, rewrites the batches that were in flight, and ends
//! `completed` on its first attempt with every row in both stores.

#![cfg(feature = "builtin")]
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{assert_same_records, count, exec, Harness};
use connectra_domain::job::JobStatus;
use connectra_persistence::records::APPLICATION_NAME;
use connectra_persistence::testing::job_until;

const ROWS: usize = 30_000;

fn contacts_csv(n: usize) -> String {
    let mut csv = String::from("email,first_name,last_name,title\n");
    for i in 0..n {
        csv.push_str(&format!(
            "c{i}@example.com,First{i},Last{i},Title {}\n",
            i % 17
        ));
        if i % 5000 == 0 {
            // a bad row, so the rejected-lines report is written too
            csv.push_str(",,,\n");
        }
    }
    csv
}

/// Cuts every import connection to the test database; how many it cut.
async fn cut_import_connections(h: &Harness) -> i64 {
    count(
        &h.pool(),
        &format!(
            "SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity \
             WHERE datname = current_database() AND application_name = '{APPLICATION_NAME}'"
        ),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_connections_cut_mid_import_are_reopened_and_the_first_attempt_completes() {
    let mut h = Harness::new(true).await;
    h.start(500);
    let key = h
        .upload("contacts.csv", contacts_csv(ROWS).as_bytes())
        .await;
    // no retries: only a reconnect within the attempt can complete it
    let job = h
        .create("insert_csv_file", serde_json::json!({ "s3_key": key }))
        .await;
    let mut cuts = 0;
    for share in [5, 3, 2] {
        // at about 1/5, 1/3 and 1/2 of the file
        let at = (ROWS / share) as i64;
        let running = job_until(
            &h.repo,
            job.uuid,
            Duration::from_secs(120),
            "the import to pass a point",
            |j| {
                j.rows_processed >= at
                    || matches!(j.status, JobStatus::Completed | JobStatus::Failed)
            },
        )
        .await;
        if matches!(running.status, JobStatus::Completed | JobStatus::Failed) {
            break;
        }
        cuts += cut_import_connections(&h).await;
    }
    let done = h.wait(&job).await;
    assert_eq!(done.status, JobStatus::Completed, "{}", done.job_response);
    assert!(cuts >= 2, "the test cut only {cuts} import connections");
    assert_eq!(done.attempts, 1, "the import needed another attempt");
    assert_eq!(done.rows_processed, ROWS as i64);
    assert_eq!(done.rows_rejected, ROWS.div_ceil(5000) as i64);
    assert!(
        done.job_response["error_report_s3_key"].is_string(),
        "{}",
        done.job_response
    );
    assert_eq!(
        count(&h.pool(), "SELECT count(*) AS n FROM contacts").await,
        ROWS as i64
    );
    assert_same_records(&h).await;
    h.stop().await;
}

/// Batches of 10 lines coalesced into groups of 100 (one transaction each):
/// mid-file the runner is stopped while the import's connections are cut
/// under the groups in flight, whose transactions roll back. The checkpoint
/// left behind is a batch boundary that PostgreSQL holds every line of (and
/// at most the groups in flight beyond), and the next runner resumes there:
/// no line lost, none counted twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_inside_a_coalesced_group_resumes_exactly_at_a_batch_boundary() {
    const BATCH: usize = 10;
    let mut h = Harness::new(false).await;
    h.group_rows = 100;
    h.config.shutdown_grace = Duration::ZERO;
    h.start(BATCH);
    let key = h
        .upload("contacts.csv", contacts_csv(ROWS).as_bytes())
        .await;
    let job = h
        .create("insert_csv_file", serde_json::json!({ "s3_key": key }))
        .await;
    let running = job_until(
        &h.repo,
        job.uuid,
        Duration::from_secs(120),
        "the import to pass a third of the file",
        |j| {
            j.rows_processed >= (ROWS / 3) as i64
                || matches!(j.status, JobStatus::Completed | JobStatus::Failed)
        },
    )
    .await;
    assert!(running.status.is_running(), "the import ended too soon");
    let pool = h.pool();
    let cut_sql = format!(
        "SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity \
         WHERE datname = current_database() AND application_name = '{APPLICATION_NAME}'"
    );
    let (cut, _) = tokio::join!(count(&pool, &cut_sql), h.stop_runner());
    let stopped = h.repo.get(job.uuid).await.unwrap().unwrap();
    assert_ne!(
        stopped.status,
        JobStatus::Completed,
        "the stop came too late"
    );
    let checkpoint = stopped.checkpoint.clone().expect("a checkpoint");
    let next_line = checkpoint["next_line"].as_i64().unwrap();
    let lines_done = checkpoint["rows_processed"].as_i64().unwrap()
        + checkpoint["rows_rejected"].as_i64().unwrap();
    // the header is line 1; whole batches of 10 lines follow it
    assert_eq!(
        (next_line - 2) % BATCH as i64,
        0,
        "{checkpoint} after {cut} cuts"
    );
    assert_eq!(lines_done, next_line - 2, "{checkpoint}");
    // PostgreSQL holds every line the checkpoint counts. It may hold a few
    // groups more: a group that committed just before the stop, whose
    // checkpoint was never written (it waits, in file order, for the groups
    // before it). Those are whole batches, at most the groups in flight
    // (four writers), and the resume redoes them as upserts.
    let held = count(&h.pool(), "SELECT count(*) AS n FROM contacts").await
        + count(&h.pool(), "SELECT count(*) AS n FROM job_rejections").await;
    let ahead = held - lines_done;
    assert!(
        (0..=4 * h.group_rows as i64).contains(&ahead) && ahead % BATCH as i64 == 0,
        "PostgreSQL holds {held} lines, the checkpoint counts {lines_done}: {checkpoint}"
    );
    // handed back or failed by the stop: opened again, as a retry would,
    // with its checkpoint kept
    exec(
        &h.pool(),
        &format!(
            "UPDATE jobs SET status = 'open', locked_by = NULL, locked_until = NULL WHERE id = {}",
            job.id
        ),
    )
    .await;
    h.start(BATCH);
    let done = h.wait(&job).await;
    assert_eq!(done.status, JobStatus::Completed, "{}", done.job_response);
    assert_eq!(done.rows_processed, ROWS as i64);
    assert_eq!(done.rows_rejected, ROWS.div_ceil(5000) as i64);
    assert_eq!(
        count(&h.pool(), "SELECT count(*) AS n FROM contacts").await,
        ROWS as i64
    );
    // the lines redone after the resume are not reported twice
    assert_eq!(
        count(&h.pool(), "SELECT count(*) AS n FROM job_rejections").await,
        ROWS.div_ceil(5000) as i64
    );
    h.stop().await;
}
