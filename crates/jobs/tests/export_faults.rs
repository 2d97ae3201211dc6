//! An export is all or nothing, whichever way its handler ends: an error, a
//! panic, a user's cancel, a lost lease, or an abort after the stop timeout
//! all leave no object and no unfinished multipart upload. The faults are
//! injected into the real PostgreSQL search backend's scroll, mid-file, once
//! the upload is already multipart (past its first 8 MiB part).

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{bucket, exec, Harness};
use connectra_domain::job::{JobStatus, NewJob};
use connectra_domain::vql::ValidQuery;
use connectra_domain::Service;
use connectra_persistence::testing::{eventually, job_until};
use connectra_persistence::Job;
use connectra_search::{
    Document, JsonDocument, Page, PostgresBackend, RejectedDocument, SearchBackend, SearchError,
};
use futures::future::BoxFuture;
use futures::stream::{BoxStream, StreamExt};
use serde_json::json;

/// Rows seeded: about 16 MiB of CSV, so the upload is multipart well
/// before the fault.
const ROWS: i64 = 150_000;
/// Rows per page; the fault comes with page [`FAULT_AT`], about 11 MiB in.
const PAGE: i64 = 1_000;
const FAULT_AT: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// The page is an error.
    Error,
    /// Reading the page panics.
    Panic,
    /// The page never comes, whatever the handler is asked.
    Hang,
    /// From this page on, each page takes 200 ms (time to cancel or steal).
    Slow,
}

/// The real backend, with one fault in its scroll.
#[derive(Debug)]
struct Faulty {
    inner: PostgresBackend,
    fault: Fault,
}

impl SearchBackend for Faulty {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn searches_the_database(&self) -> bool {
        self.inner.searches_the_database()
    }

    fn ensure_indices(&self) -> BoxFuture<'_, Result<(), SearchError>> {
        self.inner.ensure_indices()
    }

    fn index<'a>(
        &'a self,
        service: Service,
        docs: &'a [Document],
    ) -> BoxFuture<'a, Result<(), SearchError>> {
        self.inner.index(service, docs)
    }

    fn index_json(
        &self,
        service: Service,
        docs: Vec<JsonDocument>,
    ) -> BoxFuture<'_, Result<Vec<RejectedDocument>, SearchError>> {
        self.inner.index_json(service, docs)
    }

    fn delete(
        &self,
        service: Service,
        uuids: Vec<uuid::Uuid>,
    ) -> BoxFuture<'_, Result<(), SearchError>> {
        self.inner.delete(service, uuids)
    }

    fn refresh(&self, service: Service) -> BoxFuture<'_, Result<(), SearchError>> {
        self.inner.refresh(service)
    }

    fn search<'a>(
        &'a self,
        service: Service,
        query: &'a ValidQuery,
    ) -> BoxFuture<'a, Result<Page, SearchError>> {
        self.inner.search(service, query)
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), SearchError>> {
        self.inner.ping()
    }

    fn scroll(
        &self,
        service: Service,
        query: ValidQuery,
    ) -> BoxStream<'static, Result<Page, SearchError>> {
        let fault = self.fault;
        self.inner
            .scroll(service, query)
            .enumerate()
            .then(move |(i, page)| async move {
                let n = i + 1;
                match fault {
                    Fault::Error if n == FAULT_AT => Err(SearchError::InvalidDocument(format!(
                        "injected failure on page {n}"
                    ))),
                    #[allow(clippy::panic)]
                    Fault::Panic if n == FAULT_AT => panic!("injected panic on page {n}"),
                    Fault::Hang if n == FAULT_AT => std::future::pending().await,
                    Fault::Slow if n >= FAULT_AT => {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        page
                    }
                    _ => page,
                }
            })
            .boxed()
    }
}

/// A harness whose exports read through `fault`, with `ROWS` contacts.
async fn harness(fault: Fault) -> Harness {
    let mut h = Harness::new(false).await;
    h.search = Arc::new(Faulty {
        inner: PostgresBackend::new(h.pool()),
        fault,
    });
    exec(
        &h.pool(),
        &format!(
            "INSERT INTO contacts (uuid, email, first_name, last_name, title)
             SELECT gen_random_uuid(), 'person' || i || '@example.com', 'First' || i, 'Last' || i,
                    'A title long enough to make the file grow quickly ' || i
             FROM generate_series(1, {ROWS}) i"
        ),
    )
    .await;
    h
}

async fn export(h: &Harness) -> (Job, String) {
    let job = h
        .repo
        .create(&NewJob {
            job_type: "export_csv_file".into(),
            data: json!({"service": "contact", "vql": {
                "select_columns": ["uuid", "email", "first_name", "last_name", "title"],
                // an order asked for: pages of `limit` (without one an export
                // reads the largest pages)
                "order_by": [{"order_by": "uuid", "order_direction": "asc"}],
                "limit": PAGE}}),
            retry_count: 0,
            retry_interval: 0,
        })
        .await
        .unwrap();
    let key = format!("{}/{}.csv", h.prefix, job.uuid);
    (job, key)
}

/// Waits until the export's multipart upload is open (its first part is
/// being sent), so that the fault strikes an upload that must be aborted.
async fn until_multipart(h: &Harness, key: &str) {
    eventually(Duration::from_secs(120), "a multipart upload", || async {
        let pending = h.storage.pending_uploads(&bucket(), key).await.unwrap();
        if pending.is_empty() {
            Err("no upload open yet".to_string())
        } else {
            Ok(())
        }
    })
    .await;
}

/// No object, partial or whole, and (once the abort has run) no upload left
/// open.
async fn assert_nothing_left(h: &Harness, key: &str) {
    eventually(
        Duration::from_secs(30),
        "the upload to be aborted",
        || async {
            let pending = h.storage.pending_uploads(&bucket(), key).await.unwrap();
            if pending.is_empty() {
                Ok(())
            } else {
                Err(format!("{pending:?}"))
            }
        },
    )
    .await;
    assert_eq!(
        h.storage.head(&bucket(), key).await.unwrap(),
        None,
        "no object, partial or whole"
    );
}

fn first_error(job: &Job) -> String {
    job.job_response["runtime_errors"][0]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Runs an export through `fault`, which must fail it with `error`.
async fn fails_and_leaves_nothing(fault: Fault, error: &str) {
    let mut h = harness(fault).await;
    h.start(500);
    let (job, key) = export(&h).await;
    let done = h.wait(&job).await;
    assert_eq!(done.status, JobStatus::Failed, "{:?}", done.job_response);
    assert!(
        first_error(&done).contains(error),
        "{:?}",
        done.job_response
    );
    assert_nothing_left(&h, &key).await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_whose_scroll_fails_midway_leaves_nothing() {
    fails_and_leaves_nothing(Fault::Error, "injected failure on page 100").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_whose_handler_panics_midway_leaves_nothing() {
    fails_and_leaves_nothing(
        Fault::Panic,
        "the handler panicked: injected panic on page 100",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_cancelled_midway_leaves_nothing() {
    let mut h = harness(Fault::Slow).await;
    h.start(500);
    let (job, key) = export(&h).await;
    until_multipart(&h, &key).await;
    h.repo.cancel(job.uuid).await.unwrap().unwrap();
    let done = h.wait(&job).await;
    assert_eq!(done.status, JobStatus::Failed, "{:?}", done.job_response);
    assert_eq!(done.job_response["cancelled"], json!(true));
    assert_nothing_left(&h, &key).await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_whose_lease_is_lost_midway_leaves_nothing_and_writes_nothing() {
    let mut h = harness(Fault::Slow).await;
    h.config.lease = Duration::from_secs(3); // renewed every second
    h.start(500);
    let (job, key) = export(&h).await;
    until_multipart(&h, &key).await;
    // another runner takes the job over
    exec(
        &h.pool(),
        &format!(
            "UPDATE jobs SET locked_by = 'thief', locked_until = now() + interval '1 hour'
             WHERE id = {}",
            job.id
        ),
    )
    .await;
    let report = h.stop_runner().await;
    assert_eq!(report.lost, 1, "{report:?}");
    assert_eq!((report.completed, report.failed), (0, 0), "{report:?}");
    let after = h.repo.get(job.uuid).await.unwrap().unwrap();
    assert_eq!(
        after.status,
        JobStatus::Processing,
        "the thief's, untouched"
    );
    assert_eq!(after.job_response, job.job_response, "nothing written");
    assert_nothing_left(&h, &key).await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_that_ignores_the_stop_request_is_aborted_and_leaves_nothing() {
    let mut h = harness(Fault::Hang).await;
    h.config.shutdown_grace = Duration::from_secs(1);
    h.config.stop_timeout = Duration::from_secs(1);
    h.start(500);
    let (job, key) = export(&h).await;
    until_multipart(&h, &key).await;
    job_until(
        &h.repo,
        job.uuid,
        Duration::from_secs(120),
        "the export to reach the hanging page",
        |j| j.rows_processed >= (FAULT_AT as i64 - 1) * PAGE,
    )
    .await;
    let report = h.stop_runner().await;
    assert_eq!(
        report.released, 1,
        "handed back after the abort: {report:?}"
    );
    let after = h.repo.get(job.uuid).await.unwrap().unwrap();
    assert_eq!(after.status, JobStatus::Open, "{after:?}");
    assert_nothing_left(&h, &key).await;
    h.stop().await;
}
