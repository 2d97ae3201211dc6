//! A real `job-runner` starts while OpenSearch does not answer: it keeps
//! running (and would create the indices once OpenSearch answers) instead of
//! refusing to start.

#![allow(clippy::unwrap_used)]

use std::process::{Command, Stdio};
use std::time::Duration;

use connectra_persistence::testing::TestDb;

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runner_starts_and_stays_up_while_opensearch_is_down() {
    let db = TestDb::new().await;
    let mut child = common::job_runner(db.url())
        // nothing listens on port 1
        .env("OPENSEARCH_URL", "http://127.0.0.1:1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let status = child.try_wait().unwrap();
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        status.is_none(),
        "the runner exited while OpenSearch was down: {log}"
    );
    assert!(out.status.success(), "SIGTERM ends it cleanly: {log}");
    assert!(
        log.contains("does not answer yet"),
        "it says why it started anyway: {log}"
    );
}
