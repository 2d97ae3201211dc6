//! The `connectra` binary against the real service: each test starts
//! `connectra_api::serve` on a port of its own, on a database of its own
//! (`connectra_persistence::testing`), with the local stack's S3, and runs
//! the CLI as a user would, with `assert_cmd`.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeSet, HashMap};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use assert_cmd::cargo::cargo_bin;
use connectra_config::Settings;
use connectra_persistence::testing::{eventually, TestDb};
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const KEY: &str = "cli-test-key";

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| default.to_string())
}

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name)
}

/// A running service on its own database.
struct Server {
    base: String,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), connectra_api::ServeError>>,
    _db: TestDb,
}

impl Server {
    /// `serve` with the PostgreSQL search backend; with `runners` both
    /// runners run in-process, without them jobs stay `open`.
    async fn start(runners: bool) -> Self {
        let db = TestDb::new().await;
        let vars: HashMap<String, String> = [
            ("DATABASE_URL", db.url().to_string()),
            ("API_KEYS", KEY.to_string()),
            (
                "S3_ENDPOINT",
                env_or("S3_ENDPOINT", "http://127.0.0.1:8333"),
            ),
            ("S3_REGION", env_or("S3_REGION", "us-east-1")),
            ("S3_ACCESS_KEY_ID", env_or("S3_ACCESS_KEY_ID", "testaccess")),
            (
                "S3_SECRET_ACCESS_KEY",
                env_or("S3_SECRET_ACCESS_KEY", "testsecret123"),
            ),
            ("S3_PATH_STYLE", env_or("S3_PATH_STYLE", "true")),
            ("S3_BUCKET", env_or("S3_BUCKET", "connectra")),
            // unique keys per test run: uploads land under their own prefix
            (
                "S3_UPLOAD_FILE_PATH_PREFIX",
                format!("cli-test/{}", uuid::Uuid::new_v4()),
            ),
            ("RUN_JOBS_IN_PROCESS", runners.to_string()),
            ("TICKER_INTERVAL_SECONDS", "1".to_string()),
            ("SHUTDOWN_GRACE_SECONDS", "2".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let env = config::Environment::default().source(Some(vars));
        let settings = Settings::load_from(None, env).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let task =
            tokio::spawn(async move { connectra_api::serve(&settings, listener, token).await });
        let server = Self {
            base,
            shutdown,
            task,
            _db: db,
        };
        eventually(Duration::from_secs(60), "the server to answer", || async {
            assert!(!server.task.is_finished(), "serve stopped before it served");
            match tokio::net::TcpStream::connect(server.base.trim_start_matches("http://")).await {
                Ok(_) => Ok(()),
                Err(e) => Err(e.to_string()),
            }
        })
        .await;
        // the port accepts before the migrations end: wait for an answer
        let cli = server.cli();
        eventually(Duration::from_secs(60), "the API to answer", || {
            let cli = cli.clone();
            async move {
                let out = run(cli, &["jobs", "list", "--json"]).await;
                if out.status.success() {
                    Ok(())
                } else {
                    Err(String::from_utf8_lossy(&out.stderr).into_owned())
                }
            }
        })
        .await;
        server
    }

    fn cli(&self) -> Cli {
        Cli {
            base: self.base.clone(),
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(30), self.task).await;
    }
}

/// How to run the binary against one server.
#[derive(Clone)]
struct Cli {
    base: String,
}

impl Cli {
    fn command(&self) -> std::process::Command {
        let mut cmd = std::process::Command::new(cargo_bin("connectra"));
        cmd.env("CONNECTRA_URL", &self.base)
            .env("CONNECTRA_API_KEY", KEY)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        cmd
    }
}

/// Runs the CLI to its end (at most 120 s) off the runtime's threads.
async fn run(cli: Cli, args: &[&str]) -> std::process::Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let mut cmd = assert_cmd::Command::from_std(cli.command());
        cmd.args(&args).timeout(Duration::from_secs(120));
        cmd.output().unwrap()
    })
    .await
    .unwrap()
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json_out(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}\n{}", stdout(out), stderr(out)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn importing_the_sample_exits_0_with_a_true_summary_and_search_finds_it() {
    let server = Server::start(true).await;
    let cli = server.cli();
    let file = example("contacts.csv");
    let out = run(cli.clone(), &["import", file.to_str().unwrap(), "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let summary = json_out(&out);
    assert_eq!(summary["success"], true, "{summary}");
    assert_eq!(summary["outcome"], "completed");
    assert_eq!(summary["rows_processed"], 3000, "{summary}");
    assert_eq!(summary["rows_rejected"], 0, "{summary}");
    assert_eq!(summary["error_report"], Value::Null);
    assert_eq!(summary["job"]["status"], "completed");
    // not a terminal: plain progress lines on stderr, never bar escapes
    let err = stderr(&out);
    assert!(err.contains("upload: "), "{err}");
    assert!(
        !err.contains('\u{1b}'),
        "no terminal escapes in logs: {err:?}"
    );

    // the first contact of the file is found by its email, in a table
    let first = std::fs::read_to_string(&file).unwrap();
    let first = first.lines().nth(1).unwrap();
    let email = first.split(',').nth(2).unwrap();
    let filter = format!(r#"{{"keyword_match": {{"must": {{"email": ["{email}"]}}}}}}"#);
    let out = run(
        cli.clone(),
        &[
            "search",
            "--service",
            "contact",
            "--where",
            &filter,
            "--columns",
            "email,first_name,last_name",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("email"), "{text}");
    assert!(lines[2].starts_with(email), "{text}");
    assert_eq!(lines[3], "1 row", "{text}");

    // and as JSON, one page of the companies the contacts named
    let out = run(
        cli,
        &[
            "search",
            "--service",
            "company",
            "--columns",
            "name",
            "--limit",
            "5",
            "--json",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let page = json_out(&out);
    assert_eq!(page["data"].as_array().unwrap().len(), 5, "{page}");
    assert!(!page["next_search_after"].is_null(), "{page}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_with_bad_lines_completes_and_shows_the_rejected_lines() {
    let server = Server::start(true).await;
    let file = example("bad_lines.csv");
    let out = run(server.cli(), &["import", file.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains(" completed\n"), "{text}");
    assert!(text.contains("rows imported:   10\n"), "{text}");
    assert!(text.contains("rows rejected:   3\n"), "{text}");
    assert!(
        text.contains("error report:    s3://"),
        "the report's location is shown: {text}"
    );
    assert!(text.contains("first rejected lines:"), "{text}");
    assert!(
        text.contains("line 12: expected 16 fields, found 3"),
        "{text}"
    );
    assert!(text.contains("line 13: "), "{text}");
    assert!(text.contains("'company_employees_count'"), "{text}");
    assert!(
        text.contains("line 14: cannot identify the contact"),
        "{text}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_exits_non_zero_with_a_clear_message_and_creates_nothing() {
    let server = Server::start(false).await;
    let cli = server.cli();
    let missing = format!("/tmp/connectra-missing-{}.csv", uuid::Uuid::new_v4());
    let out = run(cli.clone(), &["import", &missing]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out).trim(),
        format!("error: cannot read {missing}: No such file or directory (os error 2)")
    );
    assert!(stdout(&out).is_empty());

    // --json: the error is JSON on stdout
    let out = run(cli.clone(), &["import", &missing, "--json"]).await;
    assert_eq!(out.status.code(), Some(1));
    let answer = json_out(&out);
    assert_eq!(answer["success"], false);
    assert_eq!(answer["exit_code"], 1);
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .starts_with("cannot read "),
        "{answer}"
    );

    // the server's ERR_ sentence, never a debug dump
    let out = run(
        cli.clone(),
        &[
            "search",
            "--service",
            "contact",
            "--where",
            r#"{"keyword_match": {"must": {"shoe_size": ["42"]}}}"#,
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.starts_with("error: ERR_"), "{err}");
    assert!(err.contains("shoe_size"), "{err}");
    assert!(!err.contains("Failure {"), "{err}");

    // a wrong key: the server's 401
    let mut cmd = cli.command();
    cmd.env("CONNECTRA_API_KEY", "wrong").args(["jobs", "list"]);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with("error: ERR_UNAUTHORIZED: "),
        "{}",
        stderr(&out)
    );

    // bad arguments: exit 2
    let out = run(
        cli.clone(),
        &["export", "--service", "contact", "-o", "/tmp/x.csv"],
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--columns"), "{}", stderr(&out));

    // none of these made a job
    let out = run(cli, &["jobs", "list", "--json"]).await;
    assert_eq!(json_out(&out), Value::Array(vec![]));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_downloads_exactly_the_matching_rows() {
    let server = Server::start(true).await;
    let cli = server.cli();
    let file = example("companies.csv");
    let out = run(cli.clone(), &["import", file.to_str().unwrap(), "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(json_out(&out)["rows_processed"], 1000);

    // what the export must hold: the German companies' name and country
    let mut reader = csv_rows(&std::fs::read_to_string(&file).unwrap());
    let header = reader.remove(0);
    let (name, country) = (
        header.iter().position(|h| h == "name").unwrap(),
        header.iter().position(|h| h == "country").unwrap(),
    );
    let expected: BTreeSet<Vec<String>> = reader
        .iter()
        .filter(|r| r[country] == "Germany")
        .map(|r| vec![r[name].clone(), r[country].clone()])
        .collect();
    assert!(expected.len() > 10, "the sample has German companies");

    let dir = std::env::temp_dir().join(format!("connectra-cli-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let dest = dir.join("germany.csv");
    let out = run(
        cli,
        &[
            "export",
            "--service",
            "company",
            "--where",
            r#"{"keyword_match": {"must": {"country": ["Germany"]}}}"#,
            "--columns",
            "name,country",
            "-o",
            dest.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains(&format!("rows exported:   {}\n", expected.len())),
        "{text}"
    );
    let mut got = csv_rows(&std::fs::read_to_string(&dest).unwrap());
    assert_eq!(got.remove(0), ["name", "country"]);
    assert_eq!(got.len(), expected.len());
    let got: BTreeSet<Vec<String>> = got.into_iter().collect();
    assert_eq!(got, expected);
    assert!(!dir.join("germany.csv.part").exists());
    std::fs::remove_dir_all(&dir).unwrap();
    server.stop().await;
}

/// A small CSV reader for the tests (quotes and doubled quotes).
fn csv_rows(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => row.push(std::mem::take(&mut field)),
            ('\r', false) => {}
            ('\n', false) => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (c, _) => field.push(c),
        }
    }
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push(row);
    }
    rows
}

/// The uuid of the only job, once there is one.
async fn only_job(cli: &Cli) -> String {
    eventually(Duration::from_secs(30), "the job to be created", || async {
        let out = run(cli.clone(), &["jobs", "list", "--json"]).await;
        let jobs = json_out(&out);
        match jobs.as_array().map(Vec::as_slice) {
            Some([job]) => Ok(job["uuid"].as_str().unwrap().to_string()),
            _ => Err(jobs.to_string()),
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_import_exits_4_and_ctrl_c_only_stops_watching() {
    // no runner: the job waits in `open` until we act
    let server = Server::start(false).await;
    let cli = server.cli();
    let file = example("bad_lines.csv");
    let mut import = cli.command();
    import
        .args(["import", file.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let import = import.spawn().unwrap();
    let uuid = only_job(&cli).await;

    // Ctrl-C without a terminal: `jobs watch` stops watching, exit 130, and
    // says how to cancel; the job is untouched
    let mut watch = cli.command();
    watch
        .args(["jobs", "watch", &uuid])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let watch = watch.spawn().unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let status = std::process::Command::new("kill")
        .args(["-INT", &watch.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = tokio::task::spawn_blocking(move || watch.wait_with_output().unwrap())
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("cancel it: connectra jobs cancel {uuid}")),
        "{}",
        stderr(&out)
    );
    let out = run(cli.clone(), &["jobs", "show", &uuid, "--json"]).await;
    assert_eq!(json_out(&out)["status"], "open");

    // retry of a job that has not failed: the server says no (409 once the
    // retry endpoint exists, 404 before), and the CLI shows its sentence
    let out = run(cli.clone(), &["jobs", "retry", &uuid]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).starts_with("error: ERR_"), "{}", stderr(&out));

    // cancel: the import that was watching it ends, exit 4
    let out = run(cli.clone(), &["jobs", "cancel", &uuid]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with("Job cancelled"),
        "{}",
        stdout(&out)
    );
    let out = tokio::task::spawn_blocking(move || import.wait_with_output().unwrap())
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!("import {uuid} cancelled")),
        "{}",
        stdout(&out)
    );

    // the list shows it cancelled; cancelling again is the server's 409
    let out = run(cli.clone(), &["jobs", "list"]).await;
    assert!(
        stdout(&out).contains("failed (cancelled)"),
        "{}",
        stdout(&out)
    );
    let out = run(cli, &["jobs", "cancel", &uuid]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with("error: ERR_CONFLICT: "),
        "{}",
        stderr(&out)
    );
    server.stop().await;
}
