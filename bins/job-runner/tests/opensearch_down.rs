//! A real `job-runner` starts while OpenSearch does not answer: it keeps
//! running (and would create the indices once OpenSearch answers) instead of
//! refusing to start.

#![allow(clippy::unwrap_used)]

use std::process::{Command, Stdio};
use std::time::Duration;

use connectra_persistence::testing::TestDb;

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runner_starts_and_stays_up_while_opensearch_is_down() {
    let db = TestDb::new().await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_job-runner"))
        .env("DATABASE_URL", db.url())
        .env("S3_ENDPOINT", env("S3_ENDPOINT", "http://127.0.0.1:8333"))
        .env("S3_REGION", env("S3_REGION", "us-east-1"))
        .env("S3_ACCESS_KEY_ID", env("S3_ACCESS_KEY_ID", "testaccess"))
        .env(
            "S3_SECRET_ACCESS_KEY",
            env("S3_SECRET_ACCESS_KEY", "testsecret123"),
        )
        .env("S3_BUCKET", env("S3_BUCKET", "connectra"))
        // nothing listens on port 1
        .env("OPENSEARCH_URL", "http://127.0.0.1:1")
        .env("RUST_LOG", "warn")
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
