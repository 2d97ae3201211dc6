//! Shared by the `job-runner` binary's tests.

#![allow(dead_code)]

use std::process::Command;

pub fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

/// The real `job-runner` on `database_url`, with the local stack's S3.
pub fn job_runner(database_url: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_job-runner"));
    cmd.env("DATABASE_URL", database_url)
        .env("S3_ENDPOINT", env("S3_ENDPOINT", "http://127.0.0.1:8333"))
        .env("S3_REGION", env("S3_REGION", "us-east-1"))
        .env("S3_ACCESS_KEY_ID", env("S3_ACCESS_KEY_ID", "testaccess"))
        .env(
            "S3_SECRET_ACCESS_KEY",
            env("S3_SECRET_ACCESS_KEY", "testsecret123"),
        )
        .env("S3_BUCKET", env("S3_BUCKET", "connectra"))
        .env("RUST_LOG", "warn");
    cmd
}
