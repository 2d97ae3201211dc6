//! An import rides out faults within its attempt, against real PostgreSQL,
//! SeaweedFS and OpenSearch: its database connections are cut under it and
//! it connects again, rewrites the batches that were in flight, and ends
//! `completed` on its first attempt with every row in both stores.

#![cfg(feature = "builtin")]
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{assert_same_records, count, Harness};
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
