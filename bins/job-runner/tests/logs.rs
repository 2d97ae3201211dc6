//! `LOG_FORMAT=json` on a real `job-runner`: every line of stderr is one
//! JSON object, and a job's lines carry its span.

#![allow(clippy::unwrap_used)]

use std::process::{Command, Stdio};
use std::time::Duration;

use connectra_persistence::testing::TestDb;

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_log_format_json_every_line_is_an_object_and_a_jobs_lines_carry_its_span() {
    let db = TestDb::new().await;
    let repo = connectra_persistence::JobRepo::new(db.pool());
    // an import of an object that does not exist: it fails at once, and logs
    let job = repo
        .create(&connectra_domain::job::NewJob {
            job_type: "insert_csv_file".into(),
            data: serde_json::json!({ "s3_key": format!("missing/{}.csv", uuid::Uuid::new_v4()) }),
            retry_count: 0,
            retry_interval: 0,
        })
        .await
        .unwrap();
    let child = common::job_runner(db.url())
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    connectra_persistence::testing::job_until(
        &repo,
        job.uuid,
        Duration::from_secs(60),
        "the import to fail",
        |j| j.status == connectra_domain::job::JobStatus::Failed,
    )
    .await;
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines.len() >= 2, "{log}");
    assert!(
        lines
            .iter()
            .all(|l| l["level"].is_string() && l["timestamp"].is_string()),
        "{log}"
    );
    let uuid = job.uuid.to_string();
    let of_the_job: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["span"]["job_uuid"] == uuid.as_str())
        .collect();
    assert!(
        !of_the_job.is_empty(),
        "no line carries the job's span: {log}"
    );
    assert!(
        of_the_job
            .iter()
            .any(|l| l["span"]["job_type"] == "insert_csv_file" && l["span"]["attempt"] == 1),
        "{log}"
    );
}
