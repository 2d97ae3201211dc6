//! Shared harness of the built-in handlers' tests: a database per test, the
//! real S3, a search backend, and a runner with the built-in handlers.

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use connectra_domain::job::{JobStatus, NewJob};
use connectra_domain::vql::{parse_vql, Purpose};
use connectra_domain::Service;
use connectra_jobs::builtin::{self, BuiltinDeps};
use connectra_jobs::{Mode, Registry, RunReport, Runner, RunnerConfig};
use connectra_persistence::testing::{job_until, TestDb};
use connectra_persistence::{Job, JobRepo, PgPool};
use connectra_search::{OpenSearchBackend, PostgresBackend, SearchBackend};
use connectra_storage::{S3Config, Storage};
use diesel::sql_types::{BigInt, Text};
use diesel_async::RunQueryDsl;
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

pub fn storage() -> Storage {
    Storage::new(&S3Config {
        endpoint: Some(env("S3_ENDPOINT", "http://127.0.0.1:8333")),
        region: env("S3_REGION", "us-east-1"),
        access_key_id: Some(env("S3_ACCESS_KEY_ID", "testaccess")),
        secret_access_key: Some(env("S3_SECRET_ACCESS_KEY", "testsecret123")),
        path_style: true,
    })
    .unwrap()
}

pub fn bucket() -> String {
    env("S3_BUCKET", "connectra")
}

pub struct Harness {
    pub db: TestDb,
    pub repo: JobRepo,
    pub storage: Storage,
    pub search: Arc<dyn SearchBackend>,
    pub prefix: String,
    pub escape_formulas: bool,
    /// `CSV_MAX_RECORD_BYTES` of the runner the harness starts.
    pub max_record_bytes: usize,
    /// Lines per transaction of the runner the harness starts (the
    /// production default unless a test sets it).
    pub group_rows: usize,
    /// How the runner the harness starts behaves (lease, grace, stop timeout).
    pub config: RunnerConfig,
    opensearch: Option<OpenSearchBackend>,
    runner: Option<(CancellationToken, JoinHandle<RunReport>)>,
}

impl Harness {
    pub async fn new(opensearch: bool) -> Self {
        let db = TestDb::new().await;
        let repo = JobRepo::new(db.pool());
        let storage = storage();
        storage.ensure_bucket(&bucket()).await.unwrap();
        let prefix = format!("test-import-{}", uuid::Uuid::new_v4().simple());
        let os = opensearch.then(|| {
            OpenSearchBackend::new(&env("OPENSEARCH_URL", "http://127.0.0.1:9200"))
                .unwrap()
                .with_index_prefix(&prefix)
        });
        let search: Arc<dyn SearchBackend> = match &os {
            Some(os) => Arc::new(os.clone()),
            None => Arc::new(PostgresBackend::new(db.pool())),
        };
        search.ensure_indices().await.unwrap();
        let mut config = RunnerConfig::new(Mode::FirstTime);
        config.listen_url = Some(db.url().to_string());
        Self {
            db,
            repo,
            storage,
            search,
            prefix,
            escape_formulas: true,
            max_record_bytes: 1024 * 1024,
            group_rows: connectra_jobs::builtin::DEFAULT_GROUP_ROWS,
            config,
            opensearch: os,
            runner: None,
        }
    }

    pub fn start(&mut self, batch_size: usize) {
        let storage = self.storage.clone();
        self.start_with_storage(batch_size, storage);
    }

    /// Starts a runner whose handlers reach S3 through `storage`.
    pub fn start_with_storage(&mut self, batch_size: usize, storage: Storage) {
        let mut registry = Registry::new();
        builtin::register(
            &mut registry,
            BuiltinDeps {
                storage,
                search: self.search.clone(),
                database_url: self.db.url().to_string(),
                default_bucket: bucket(),
                upload_prefix: self.prefix.clone(),
                batch_size,
                group_rows: self.group_rows,
                max_record_bytes: self.max_record_bytes,
                escape_formulas: self.escape_formulas,
            },
        );
        let stop = CancellationToken::new();
        let runner = Runner::new(self.repo.clone(), registry, self.config.clone());
        self.runner = Some((stop.clone(), tokio::spawn(runner.run(stop))));
    }

    pub async fn upload(&self, name: &str, body: &[u8]) -> String {
        let key = format!("{}/{name}", self.prefix);
        self.storage
            .put_bytes(&bucket(), &key, body, "text/csv")
            .await
            .unwrap();
        key
    }

    pub async fn import(&self, key: &str) -> Job {
        self.run("insert_csv_file", json!({ "s3_key": key })).await
    }

    pub async fn export(&self, vql: Value, service: &str) -> Job {
        self.run("export_csv_file", json!({ "service": service, "vql": vql }))
            .await
    }

    /// Creates a job and waits until it is completed or failed.
    pub async fn run(&self, job_type: &str, data: Value) -> Job {
        let job = self.create(job_type, data).await;
        self.wait(&job).await
    }

    /// Creates a job without retries.
    pub async fn create(&self, job_type: &str, data: Value) -> Job {
        self.repo
            .create(&NewJob {
                job_type: job_type.into(),
                data,
                retry_count: 0,
                retry_interval: 0,
            })
            .await
            .unwrap()
    }

    /// Waits until `job` is completed or failed.
    pub async fn wait(&self, job: &Job) -> Job {
        job_until(
            &self.repo,
            job.uuid,
            Duration::from_secs(180),
            "the job to finish",
            |j| matches!(j.status, JobStatus::Completed | JobStatus::Failed),
        )
        .await
    }

    /// The content of an object in the test bucket.
    pub async fn read_object(&self, key: &str) -> String {
        let mut stream = self.storage.get_stream(&bucket(), key).await.unwrap();
        let mut text = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut stream, &mut text)
            .await
            .unwrap();
        text
    }

    pub fn pool(&self) -> PgPool {
        self.db.pool()
    }

    /// Shuts the runner down; returns its report (the default if none ran).
    pub async fn stop_runner(&mut self) -> RunReport {
        match self.runner.take() {
            Some((stop, h)) => {
                stop.cancel();
                h.await.unwrap()
            }
            None => RunReport::default(),
        }
    }

    /// The harness's OpenSearch backend; panics for a harness without one.
    pub fn opensearch(&self) -> &OpenSearchBackend {
        self.opensearch.as_ref().expect("a harness with OpenSearch")
    }

    pub async fn stop(mut self) {
        self.stop_runner().await;
        if let Some(os) = self.opensearch.take() {
            os.delete_indices().await.unwrap();
        }
    }
}

#[derive(diesel::QueryableByName)]
pub struct N {
    #[diesel(sql_type = BigInt)]
    pub n: i64,
}

/// Runs a statement that returns nothing.
pub async fn exec(pool: &PgPool, sql: &str) {
    let mut conn = pool.get().await.unwrap();
    diesel::sql_query(sql).execute(&mut conn).await.unwrap();
}

pub async fn count(pool: &PgPool, sql: &str) -> i64 {
    let mut conn = pool.get().await.unwrap();
    diesel::sql_query(sql)
        .get_result::<N>(&mut conn)
        .await
        .unwrap()
        .n
}

#[derive(diesel::QueryableByName)]
pub struct S {
    #[diesel(sql_type = Text)]
    pub s: String,
}

pub async fn strings(pool: &PgPool, sql: &str) -> Vec<String> {
    let mut conn = pool.get().await.unwrap();
    diesel::sql_query(sql)
        .load::<S>(&mut conn)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.s)
        .collect()
}

/// Every uuid of `service` that `backend` holds, read with one scroll.
pub async fn uuids(backend: &dyn SearchBackend, service: Service) -> BTreeSet<String> {
    backend.refresh(service).await.unwrap();
    let q = parse_vql(&json!({"select_columns": ["uuid"], "limit": 1000}))
        .unwrap()
        .validate(service, Purpose::Search)
        .unwrap();
    let mut pages = backend.scroll(service, q);
    let mut out = BTreeSet::new();
    while let Some(page) = pages.next().await {
        for doc in page.unwrap().data {
            out.insert(doc["uuid"].as_str().unwrap().to_string());
        }
    }
    out
}

/// Asserts that the search backend holds exactly PostgreSQL's records.
pub async fn assert_same_records(h: &Harness) {
    let pg = PostgresBackend::new(h.pool());
    for service in Service::ALL {
        let truth = uuids(&pg, service).await;
        let copy = uuids(h.search.as_ref(), service).await;
        assert_eq!(copy, truth, "{service}: the index and PostgreSQL differ");
    }
}
