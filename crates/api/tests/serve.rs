//! Black-box tests of the whole service: `connectra_api::serve` on port 0
//! against the real PostgreSQL and S3, driven over HTTP.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use connectra_api::{serve, ServeError};
use connectra_config::Settings;
use connectra_persistence::testing::{eventually, TestDb};
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const KEY: &str = "serve-test-key";

/// Settings for `database_url` with the local stack's S3 and the
/// PostgreSQL search backend; `extra` overrides.
fn settings(database_url: &str, extra: &[(&str, &str)]) -> Result<Settings, String> {
    let mut vars: HashMap<String, String> = [
        ("DATABASE_URL", database_url.to_string()),
        ("API_KEYS", KEY.to_string()),
        (
            "S3_ENDPOINT",
            common::env_or("S3_ENDPOINT", "http://127.0.0.1:8333"),
        ),
        ("S3_REGION", common::env_or("S3_REGION", "us-east-1")),
        (
            "S3_ACCESS_KEY_ID",
            common::env_or("S3_ACCESS_KEY_ID", "testaccess"),
        ),
        (
            "S3_SECRET_ACCESS_KEY",
            common::env_or("S3_SECRET_ACCESS_KEY", "testsecret123"),
        ),
        ("S3_PATH_STYLE", common::env_or("S3_PATH_STYLE", "true")),
        ("S3_BUCKET", common::bucket()),
        ("SHUTDOWN_GRACE_SECONDS", "2".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    for (k, v) in extra {
        vars.insert(k.to_string(), v.to_string());
    }
    let env = config::Environment::default().source(Some(vars));
    Settings::load_from(None, env).map_err(|e| e.to_string())
}

/// A running server: its address, its shutdown, and `serve`'s result.
struct Server {
    base: String,
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), ServeError>>,
}

impl Server {
    /// `serve` on a port the OS picks.
    fn start(settings: Settings) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let task = tokio::spawn(async move { serve(&settings, listener, token).await });
        Self {
            base: format!("http://{addr}"),
            addr,
            shutdown,
            task,
        }
    }

    /// Cancels the shutdown token; `serve` must then return `Ok` in time.
    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("serve returns after shutdown")
            .unwrap()
            .unwrap();
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let resp = reqwest::Client::new()
            .get(format!("{}{path}", self.base))
            .header("X-API-Key", KEY)
            .send()
            .await
            .unwrap();
        read(resp).await
    }

    async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let resp = reqwest::Client::new()
            .post(format!("{}{path}", self.base))
            .header("X-API-Key", KEY)
            .header("Content-Type", "application/json")
            .body(serde_json::to_vec(body).unwrap())
            .send()
            .await
            .unwrap();
        read(resp).await
    }

    /// Waits (at most 60 s) until `GET /health` answers: `serve` migrates
    /// before it serves, so the port may queue connections for a while.
    async fn ready(&self) {
        eventually(Duration::from_secs(60), "the server to answer", || async {
            let answer = reqwest::Client::new()
                .get(format!("{}/health", self.base))
                .send()
                .await;
            assert!(!self.task.is_finished(), "serve stopped before it served");
            match &answer {
                Ok(r) if r.status().as_u16() == 200 => Ok(()),
                _ => Err(format!("{answer:?}")),
            }
        })
        .await;
    }
}

async fn read(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let body = resp.bytes().await.unwrap();
    (status, serde_json::from_slice(&body).unwrap())
}

/// An import of an object that does not exist: a runner fails it at once.
fn missing_import() -> Value {
    json!({"job_type": "insert_csv_file",
           "job_data": {"s3_key": format!("serve-test/{}.csv", uuid::Uuid::new_v4()),
                        "s3_bucket": common::bucket()},
           "retry_count": 0})
}

/// The job's status, polled over HTTP until it is not `open`, `in_queue` or
/// `processing` (at most 60 s).
async fn settled_status(server: &Server, uuid: &str) -> String {
    eventually(Duration::from_secs(60), "the job to settle", || async {
        let (code, body) = server.get(&format!("/common/jobs/{uuid}")).await;
        assert_eq!(code, 200, "{body}");
        let status = body["data"]["status"].as_str().unwrap().to_string();
        if ["open", "in_queue", "processing"].contains(&status.as_str()) {
            Err(format!("job {uuid} is {status}"))
        } else {
            Ok(status)
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_created_over_http_is_read_back_and_serve_returns_on_shutdown() {
    let db = TestDb::new().await;
    let server = Server::start(settings(db.url(), &[]).unwrap());
    server.ready().await;

    let (code, created) = server.post("/common/jobs/create", &missing_import()).await;
    assert_eq!(code, 201, "{created}");
    let job = &created["data"];
    assert_eq!(job["status"], "open");
    let uuid = job["uuid"].as_str().unwrap();
    let (code, got) = server.get(&format!("/common/jobs/{uuid}")).await;
    assert_eq!(code, 200, "{got}");
    assert_eq!(&got["data"], job);

    // the keys of the settings guard the routes
    let resp = reqwest::Client::new()
        .get(format!("{}/common/jobs/{uuid}", server.base))
        .header("X-API-Key", "not-the-key")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);

    let addr = server.addr;
    server.stop().await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "nothing listens after shutdown"
    );
    // without RUN_JOBS_IN_PROCESS nothing ran the job
    assert_eq!(stored(db.url(), uuid).await, ("open".to_string(), 0, false));
}

/// The job's stored status, attempts, and whether some runner holds it.
async fn stored(database_url: &str, uuid: &str) -> (String, i32, bool) {
    let (client, conn) = tokio_postgres::connect(database_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    let row = client
        .query_one(
            "SELECT status, attempts, locked_by IS NOT NULL FROM jobs WHERE uuid::text = $1",
            &[&uuid],
        )
        .await
        .unwrap();
    drop(client);
    let _ = conn.await;
    (row.get(0), row.get(1), row.get(2))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_runners_run_the_jobs_created_over_http_and_stop_with_the_server() {
    let db = TestDb::new().await;
    let server = Server::start(settings(db.url(), &[("RUN_JOBS_IN_PROCESS", "true")]).unwrap());
    server.ready().await;
    let import = missing_import();
    let (code, created) = server.post("/common/jobs/create", &import).await;
    assert_eq!(code, 201, "{created}");
    let uuid = created["data"]["uuid"].as_str().unwrap();
    assert_eq!(settled_status(&server, uuid).await, "failed");
    assert_eq!(
        stored(db.url(), uuid).await,
        ("failed".to_string(), 1, false)
    );

    // the manual retry of a job that used up its retries (retry_count 0):
    // once the file is there, the in-process retry runner completes it
    let key = import["job_data"]["s3_key"].as_str().unwrap();
    common::storage()
        .put_bytes(&common::bucket(), key, b"name\nAcme\n", "text/csv")
        .await
        .unwrap();
    let (code, retried) = server
        .post(&format!("/common/jobs/{uuid}/retry"), &json!({}))
        .await;
    assert_eq!(code, 200, "{retried}");
    let done = eventually(
        Duration::from_secs(60),
        "the retried job to complete",
        || async {
            match stored(db.url(), uuid).await {
                (status, attempts, false) if status == "completed" => Ok(attempts),
                other => Err(format!("job {uuid} is {other:?}")),
            }
        },
    )
    .await;
    assert_eq!(done, 2, "attempts go on counting");
    let (code, again) = server
        .post(&format!("/common/jobs/{uuid}/retry"), &json!({}))
        .await;
    assert_eq!(code, 409, "a completed job is not retried: {again}");
    server.stop().await;
}

/// An empty database of its own (no migrations), dropped at the end.
struct EmptyDb {
    admin: tokio_postgres::Client,
    name: String,
    url: String,
}

fn server_url() -> String {
    common::env_or(
        "DATABASE_URL",
        "postgres://postgres@127.0.0.1:5433/connectra",
    )
}

/// `url` with its database replaced by `db` (query parameters dropped).
fn on_database(url: &str, db: &str) -> String {
    let base = url.split('?').next().unwrap();
    let (server, _) = base.rsplit_once('/').unwrap();
    format!("{server}/{db}")
}

impl EmptyDb {
    async fn new() -> Self {
        let (admin, conn) = tokio_postgres::connect(
            &on_database(&server_url(), "postgres"),
            tokio_postgres::NoTls,
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        let name = format!("connectra_serve_{}", uuid::Uuid::new_v4().simple());
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        let url = on_database(&server_url(), &name);
        Self { admin, name, url }
    }

    /// The tables of its `public` schema.
    async fn tables(&self) -> Vec<String> {
        let (client, conn) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
            .await
            .unwrap();
        let conn = tokio::spawn(conn);
        let rows = client
            .query(
                "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
                &[],
            )
            .await
            .unwrap();
        drop(client);
        let _ = conn.await;
        rows.iter().map(|r| r.get(0)).collect()
    }

    async fn drop_it(self) {
        self.admin
            .batch_execute(&format!("DROP DATABASE {} WITH (FORCE)", self.name))
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_settings_are_refused_before_any_migration_runs() {
    let db = EmptyDb::new().await;

    let no_keys = settings(&db.url, &[("API_KEYS", " , ")]).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let e = serve(&no_keys, listener, CancellationToken::new())
        .await
        .unwrap_err();
    assert!(matches!(e, ServeError::Config(_)), "{e:?}");
    assert!(e.to_string().contains("API_KEYS"), "{e}");
    assert_eq!(db.tables().await, Vec::<String>::new());

    let bad_bucket = settings(&db.url, &[("S3_BUCKET", "Not_A_Bucket!")]).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let e = serve(&bad_bucket, listener, CancellationToken::new())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("S3_BUCKET"), "{e}");
    assert_eq!(db.tables().await, Vec::<String>::new());

    // the same database with good settings is migrated: the checks above
    // would have seen the tables
    let ran = connectra_api::migrate(&settings(&db.url, &[]).unwrap())
        .await
        .unwrap();
    assert!(ran > 0);
    assert!(db.tables().await.contains(&"jobs".to_string()));
    db.drop_it().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_clash_fails_before_any_runner_claims_a_job() {
    let db = TestDb::new().await;
    // the first server holds the port and creates the job; it runs no runners
    let holder = Server::start(settings(db.url(), &[]).unwrap());
    holder.ready().await;
    let (code, created) = holder.post("/common/jobs/create", &missing_import()).await;
    assert_eq!(code, 201, "{created}");
    let uuid = created["data"]["uuid"].as_str().unwrap().to_string();

    // a second one, with runners, on the same port
    let clash = settings(db.url(), &[("RUN_JOBS_IN_PROCESS", "true")]).unwrap();
    let e = serve(&clash, holder.addr, CancellationToken::new())
        .await
        .unwrap_err();
    assert!(matches!(e, ServeError::Bind { .. }), "{e:?}");
    assert!(e.to_string().contains("HTTP_ADDR"), "{e}");
    let (_, got) = holder.get(&format!("/common/jobs/{uuid}")).await;
    assert_eq!(got["data"]["status"], "open", "{got}");
    assert_eq!(
        stored(db.url(), &uuid).await,
        ("open".to_string(), 0, false),
        "never claimed, held by no runner"
    );

    // the job was claimable: runners that do start run it
    let runners = Server::start(clash);
    runners.ready().await;
    assert_eq!(settled_status(&runners, &uuid).await, "failed");
    runners.stop().await;
    holder.stop().await;
}

/// `/metrics` read by Prometheus's own parser (`scripts/parse_metrics.py`,
/// prometheus-client; `CONNECTRA_PYTHON` names the interpreter that has it):
/// each sample as (name, labels, value).
async fn scrape(server: &Server) -> Vec<(String, serde_json::Map<String, Value>, f64)> {
    let resp = reqwest::Client::new()
        .get(format!("{}/metrics", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let text = resp.text().await.unwrap();
    let python = std::env::var("CONNECTRA_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../scripts/parse_metrics.py"
    );
    let mut child = std::process::Command::new(&python)
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{python}: {e}"));
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Prometheus parser refused /metrics (or {python} lacks prometheus-client; scripts/test.sh installs it): {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                v["name"].as_str().unwrap().to_string(),
                v["labels"].as_object().unwrap().clone(),
                v["value"].as_f64().unwrap(),
            )
        })
        .collect()
}

/// The sum of the samples named `name` whose labels include `labels`.
fn sample(
    samples: &[(String, serde_json::Map<String, Value>, f64)],
    name: &str,
    labels: &[(&str, &str)],
) -> f64 {
    samples
        .iter()
        .filter(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).and_then(Value::as_str) == Some(*v))
        })
        .map(|s| s.2)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_prometheus_text_and_move_when_jobs_run() {
    let db = TestDb::new().await;
    let server = Server::start(settings(db.url(), &[("RUN_JOBS_IN_PROCESS", "true")]).unwrap());
    server.ready().await;
    let before = scrape(&server).await;
    let imported = "connectra_jobs_rows_imported_total";
    let ran = "connectra_jobs_job_duration_seconds_count";
    let insert = [("job_type", "insert_csv_file")];

    let key = format!("serve-test/{}.csv", uuid::Uuid::new_v4());
    common::storage()
        .put_bytes(
            &common::bucket(),
            &key,
            b"name\nAcme\nGlobex\nInitech\n",
            "text/csv",
        )
        .await
        .unwrap();
    let good = json!({"job_type": "insert_csv_file",
                      "job_data": {"s3_key": key, "s3_bucket": common::bucket()}});
    let (code, created) = server.post("/common/jobs/create", &good).await;
    assert_eq!(code, 201, "{created}");
    let uuid = created["data"]["uuid"].as_str().unwrap();
    assert_eq!(settled_status(&server, uuid).await, "completed");
    let (code, created) = server.post("/common/jobs/create", &missing_import()).await;
    assert_eq!(code, 201, "{created}");
    let failed = created["data"]["uuid"].as_str().unwrap();
    assert_eq!(settled_status(&server, failed).await, "failed");

    let after = scrape(&server).await;
    // counters of this process (other tests' jobs may add to them too)
    assert!(
        sample(&after, imported, &insert) >= sample(&before, imported, &insert) + 3.0,
        "{imported} did not move by the 3 rows"
    );
    let completed = [("job_type", "insert_csv_file"), ("outcome", "completed")];
    let failed_run = [("job_type", "insert_csv_file"), ("outcome", "failed")];
    assert!(sample(&after, ran, &completed) >= sample(&before, ran, &completed) + 1.0);
    assert!(sample(&after, ran, &failed_run) >= sample(&before, ran, &failed_run) + 1.0);
    assert!(
        sample(
            &after,
            "connectra_jobs_pickup_latency_seconds_count",
            &insert
        ) >= sample(
            &before,
            "connectra_jobs_pickup_latency_seconds_count",
            &insert
        ) + 2.0
    );
    // the gauge comes from this test's database
    for (status, want) in [("completed", 1.0), ("failed", 1.0), ("open", 0.0)] {
        assert_eq!(
            sample(
                &after,
                "connectra_jobs_jobs",
                &[("job_type", "insert_csv_file"), ("status", status)]
            ),
            want,
            "{status}"
        );
    }
    server.stop().await;
}
