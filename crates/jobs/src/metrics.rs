//! The runner's Prometheus metrics, recorded through the `metrics` facade.
//! Without an installed recorder they cost next to nothing; a process that
//! wants them calls [`install`] once (api-server at start, to serve
//! `/metrics`; job-runner and retry-runner when `METRICS_ADDR` is set, with
//! a listener of their own). The search and storage crates count their
//! retries under [`OPENSEARCH_RETRIES`] and [`S3_RETRIES`].

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Gauge: jobs in the database by `status` and `job_type` (api-server sets
/// it from one `GROUP BY` at each scrape).
pub const JOBS: &str = "connectra_jobs_jobs";
/// Histogram: how long a handler ran, by `job_type` and `outcome`
/// (`completed`, `failed`, `cancelled`, `stopped`, `lost`).
pub const JOB_DURATION: &str = "connectra_jobs_job_duration_seconds";
/// Histogram: from a job being due (created, or its `run_after`) to its
/// start, by `job_type`.
pub const PICKUP_LATENCY: &str = "connectra_jobs_pickup_latency_seconds";
/// Counters of rows, from completed jobs' responses.
pub const ROWS_IMPORTED: &str = "connectra_jobs_rows_imported_total";
pub const ROWS_REJECTED: &str = "connectra_jobs_rows_rejected_total";
pub const ROWS_EXPORTED: &str = "connectra_jobs_rows_exported_total";
/// Counter: jobs taken back from expired leases (`outcome`: `released` or
/// `failed_for_good`).
pub const RESCUES: &str = "connectra_jobs_rescues_total";
/// Counter: claims that failed (the database did not answer).
pub const CLAIM_FAILURES: &str = "connectra_jobs_claim_failures_total";
/// Counter: jobs whose lease this process lost (nothing was written).
pub const LEASE_LOSSES: &str = "connectra_jobs_lease_losses_total";
/// Counter: OpenSearch requests sent again (search crate).
pub const OPENSEARCH_RETRIES: &str = connectra_domain::retry::OPENSEARCH_RETRIES_METRIC;
/// Counter: S3 requests sent again (storage crate).
pub const S3_RETRIES: &str = connectra_domain::retry::S3_RETRIES_METRIC;

/// Buckets of the `_seconds` histograms: 5 ms to an hour.
const SECONDS_BUCKETS: &[f64] = &[
    0.005, 0.025, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

fn builder() -> PrometheusBuilder {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
        .unwrap_or_else(|_| PrometheusBuilder::new())
}

/// Installs the process-wide Prometheus recorder (once; later calls return
/// the same handle) and returns the handle that renders it. `None` when
/// another recorder was installed first (an embedding service's own).
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| match builder().install_recorder() {
            Ok(handle) => {
                describe();
                Some(handle)
            }
            Err(e) => {
                tracing::warn!(error = %e, "a metrics recorder is already installed; not installing ours");
                None
            }
        })
        .as_ref()
}

/// Installs the recorder and serves it at `http://{addr}/metrics` (a runner
/// binary's `METRICS_ADDR`).
pub fn serve_on(addr: SocketAddr) -> Result<(), metrics_exporter_prometheus::BuildError> {
    if HANDLE.get().is_some() {
        return Ok(());
    }
    builder().with_http_listener(addr).install()?;
    describe();
    let _ = HANDLE.set(None);
    Ok(())
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_gauge!(JOBS, "Jobs in the database by status and job type");
    describe_histogram!(
        JOB_DURATION,
        Unit::Seconds,
        "Handler run time by job type and outcome"
    );
    describe_histogram!(
        PICKUP_LATENCY,
        Unit::Seconds,
        "From a job being due to its start"
    );
    describe_counter!(ROWS_IMPORTED, "Rows imported by completed imports");
    describe_counter!(ROWS_REJECTED, "Lines rejected by completed imports");
    describe_counter!(ROWS_EXPORTED, "Rows written by completed exports");
    describe_counter!(RESCUES, "Jobs taken back from expired leases");
    describe_counter!(CLAIM_FAILURES, "Claims that failed");
    describe_counter!(LEASE_LOSSES, "Jobs whose lease this process lost");
    describe_counter!(OPENSEARCH_RETRIES, "OpenSearch requests sent again");
    describe_counter!(S3_RETRIES, "S3 requests sent again");
}

/// A handler run ended.
pub(crate) fn job_ran(job_type: &str, outcome: &'static str, ran: Duration) {
    metrics::histogram!(JOB_DURATION, "job_type" => job_type.to_string(), "outcome" => outcome)
        .record(ran.as_secs_f64());
}

/// A job started `latency` after it was due.
pub(crate) fn picked_up(job_type: &str, latency: Duration) {
    metrics::histogram!(PICKUP_LATENCY, "job_type" => job_type.to_string())
        .record(latency.as_secs_f64());
}

/// A completed job's rows, from its response's `rows_processed`,
/// `rows_rejected` and `rows_exported`.
pub(crate) fn rows(job_type: &str, response: &connectra_domain::job::JobResponse) {
    for (key, name) in [
        ("rows_processed", ROWS_IMPORTED),
        ("rows_rejected", ROWS_REJECTED),
        ("rows_exported", ROWS_EXPORTED),
    ] {
        if let Some(n) = response.extra.get(key).and_then(serde_json::Value::as_u64) {
            metrics::counter!(name, "job_type" => job_type.to_string()).increment(n);
        }
    }
}
