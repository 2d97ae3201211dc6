//! `insert_csv_file`: S3 stream → parse → batch → writes → checkpoint → progress.
//!
//! - The object is streamed; parsing runs on a blocking thread (CPU work stays
//!   off the async workers) and hands batches over a channel of two, so the
//!   next batch is parsed while the previous one is written.
//! - Each batch is one PostgreSQL transaction (new filter values, then the
//!   records: COPYed or inserted when all are new, else staged and upserted;
//!   rejected lines), then its documents are indexed
//!   into the search backend; a few batches are written at once, each on a
//!   connection of its own.
//! - The checkpoint (the next line and byte offset after the last written
//!   batch) advances in file order, once a batch and all before it are
//!   written and indexed, so a retried or rescued job resumes after it with a
//!   ranged GET, and redoes at most the batches in flight (upserts make that
//!   harmless).
//! - Rejected lines never stop the job: they are kept in `job_rejections`,
//!   the first 100 go into `runtime_errors`, and all of them into an error
//!   report CSV on S3.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::BufReader;
use std::sync::Arc;

use anyhow::Context;
use backon::Retryable;
use connectra_domain::import::{FatalImportError, HeaderPlan};
use connectra_domain::job::{InsertCsvFileData, JobResponse, MAX_RUNTIME_ERRORS};
use connectra_domain::limits::MAX_FILTER_VALUE_BYTES;
use connectra_domain::retry::RetryPolicy;
use connectra_domain::Service;
use connectra_persistence::jobs::Progress;
use connectra_persistence::records::{RecordBatch, RecordWriter, Rejection, StoredRecord};
use connectra_search::{JsonDocument, SearchBackend};
use connectra_storage::{ByteStream, StorageError};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_util::io::SyncIoBridge;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use super::records::{Next, RecordReader};
use super::BuiltinDeps;
use crate::JobContext;

/// Where a resumed import starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Checkpoint {
    /// Line number (1-based) at which the next unwritten record starts.
    next_line: u64,
    /// Byte offset at which the next unwritten record starts.
    next_byte: u64,
    rows_processed: i64,
    rows_rejected: i64,
    /// Loaded rows whose `uuid`/`company_uuid` cell was not a uuid (keyed by
    /// their natural key instead).
    #[serde(default)]
    uuids_replaced: i64,
    /// Loaded rows with a filter value too long for `filters_data`.
    #[serde(default)]
    filter_values_skipped: i64,
}

/// A parsed batch and where the file stands after it.
#[derive(Debug)]
struct Parsed {
    service: Service,
    batch: RecordBatch,
    accepted: i64,
    uuids_replaced: i64,
    filter_values_skipped: i64,
    after: (u64, u64),
}

const READ_BUFFER: usize = 256 * 1024;

/// How long an import rides out a dependency that stopped answering (a
/// lost database connection, a search index that does not refresh) before
/// the attempt fails and the job's retries take over. The attempt's cancel
/// token (a cancel, a lost lease, a shutdown) ends the wait sooner.
const RIDE_OUT: std::time::Duration = std::time::Duration::from_secs(120);

/// How the import's record writers connect, each fenced by this attempt;
/// and a new connection when one is lost.
#[derive(Debug, Clone)]
struct Connector {
    database_url: String,
    job_id: i64,
    attempt: i32,
    runner_id: String,
    cancel: CancellationToken,
}

/// Whether `e` is a database connection that broke (see
/// [`connectra_persistence::Error::is_connection_lost`]).
fn connection_lost(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<connectra_persistence::Error>()
            .is_some_and(connectra_persistence::Error::is_connection_lost)
    })
}

impl Connector {
    /// `writer`, or a new connection (fenced by this attempt) when it is `None`.
    async fn writer<'w>(
        &self,
        writer: &'w mut Option<RecordWriter>,
    ) -> anyhow::Result<&'w mut RecordWriter> {
        match writer {
            Some(w) => Ok(w),
            None => {
                let w = RecordWriter::connect(&self.database_url, self.job_id)
                    .await?
                    .fenced(self.attempt, &self.runner_id);
                Ok(writer.insert(w))
            }
        }
    }

    /// A retry of work on a record writer, after lost connections.
    fn retry(&self) -> Reconnect<'_> {
        Reconnect {
            connector: self,
            started: tokio::time::Instant::now(),
            pauses: RetryPolicy::QUICK.pauses(),
        }
    }
}

/// Runs work on a record writer again after its connection was lost: on
/// the way, or under the work (whose transaction then rolled back). The
/// work must be safe to run again; a batch is (its upsert is keyed, its
/// rejected lines are kept once). Every new connection is fenced, so a try
/// after a lost lease writes nothing.
#[derive(Debug)]
struct Reconnect<'a> {
    connector: &'a Connector,
    started: tokio::time::Instant,
    pauses: connectra_domain::retry::Pauses,
}

impl Reconnect<'_> {
    /// After `e`, the one retry policy's pause, then `Ok` to try again with
    /// a new connection (`writer` is emptied); `Err(e)` when `e` is not a
    /// lost connection, [`RIDE_OUT`] has passed, or the attempt is cancelled.
    async fn after(
        &mut self,
        e: anyhow::Error,
        writer: &mut Option<RecordWriter>,
        what: &str,
    ) -> anyhow::Result<()> {
        *writer = None;
        let cancel = &self.connector.cancel;
        if !connection_lost(&e) || cancel.is_cancelled() || self.started.elapsed() >= RIDE_OUT {
            return Err(e);
        }
        let pause = self.pauses.next_pause();
        tracing::warn!(error = %format!("{e:#}"), retry_in_ms = pause.as_millis() as u64,
            "the import's database connection was lost {what}; connecting again");
        tokio::select! {
            () = tokio::time::sleep(pause) => Ok(()),
            () = cancel.cancelled() => Err(e),
        }
    }
}

/// While alive, the search backend indexes in its bulk-load mode
/// ([`SearchBackend::set_loading`]). An import that completes restores the
/// normal mode itself, before its final refresh, and calls
/// [`LoadMode::ended`]; dropped without that (the import failed or was
/// stopped), the guard restores it in a task of its own.
struct LoadMode {
    search: Arc<dyn SearchBackend>,
    on: bool,
}

impl LoadMode {
    /// Failing to switch only costs speed: logged, not fatal.
    async fn begin(search: &Arc<dyn SearchBackend>) -> Self {
        for service in Service::ALL {
            if let Err(e) = search.set_loading(service, true).await {
                tracing::warn!(error = %e, %service, "could not put the index in its bulk-load mode");
            }
        }
        Self {
            search: search.clone(),
            on: true,
        }
    }

    fn ended(mut self) {
        self.on = false;
    }
}

impl Drop for LoadMode {
    fn drop(&mut self) {
        if !self.on {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let search = self.search.clone();
        runtime.spawn(async move {
            for service in Service::ALL {
                if let Err(e) = search.set_loading(service, false).await {
                    tracing::warn!(error = %e, %service,
                        "could not end the index's bulk-load mode; it refreshes every 30 s meanwhile");
                }
            }
        });
    }
}

fn storage_error(e: StorageError) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}

pub(super) async fn run(ctx: JobContext, deps: Arc<BuiltinDeps>) -> anyhow::Result<JobResponse> {
    let data: InsertCsvFileData = serde_json::from_value(ctx.data().clone())
        .context("invalid job_data for insert_csv_file")?;
    let bucket = data
        .s3_bucket
        .clone()
        .unwrap_or_else(|| deps.default_bucket.clone());
    let key = data.s3_key.clone();
    let location = format!("s3://{bucket}/{key}");
    let meta = deps
        .storage
        .head(&bucket, &key)
        .await
        .map_err(storage_error)?
        .ok_or_else(|| anyhow::anyhow!("object '{location}' does not exist"))?;
    if meta.size == 0 {
        anyhow::bail!("the file '{location}' is empty");
    }
    // A checkpoint this version cannot read means starting over: upserts make
    // that harmless, only slower, so it is logged rather than fatal.
    let start: Checkpoint = match ctx.checkpoint() {
        None => Checkpoint::default(),
        Some(c) => serde_json::from_value(c.clone()).unwrap_or_else(|e| {
            tracing::warn!(error = %e, checkpoint = %c, "unreadable checkpoint; importing from the start");
            Checkpoint::default()
        }),
    };

    // idempotent; here for a backend that was down when the process started
    deps.search
        .ensure_indices()
        .await
        .with_context(|| format!("preparing the {} search indices", deps.search.name()))?;
    let load_mode = LoadMode::begin(&deps.search).await;
    let connector = Connector {
        database_url: deps.database_url.clone(),
        job_id: ctx.job().id,
        attempt: ctx.job().attempts,
        runner_id: ctx.runner_id().to_string(),
        cancel: ctx.cancellation().clone(),
    };
    let mut writers = Vec::new();
    for _ in 0..writer_count(!deps.search.searches_the_database()) {
        let mut writer = None;
        let mut retry = connector.retry();
        while let Err(e) = connector.writer(&mut writer).await {
            retry.after(e, &mut writer, "connecting").await?;
        }
        writers.extend(writer);
    }
    let mut done = start;
    if start.next_byte < meta.size {
        // The header always comes from the start of the file.
        let header_stream = deps
            .storage
            .get_stream(&bucket, &key)
            .await
            .map_err(storage_error)?;
        let data_stream = if start.next_byte > 0 {
            Some(
                deps.storage
                    .get_stream_from(&bucket, &key, start.next_byte)
                    .await
                    .map_err(storage_error)?,
            )
        } else {
            None
        };
        // one parsed batch waits while the writers work: enough to keep them busy
        let (tx, rx) = mpsc::channel(1);
        let limits = ParseLimits {
            batch_size: deps.batch_size.max(1),
            group_rows: deps.group_rows,
            max_record_bytes: deps.max_record_bytes,
        };
        let service = data.service;
        let parser = tokio::task::spawn_blocking(move || {
            parse_file(header_stream, data_stream, service, start, limits, &tx)
        });
        let written = write_batches(&ctx, &deps, &connector, writers, rx, start, meta.size).await;
        let parsed = parser
            .await
            .context("the CSV parser stopped unexpectedly")?;
        (writers, done) = written?;
        if let Err(fatal) = parsed {
            if !ctx.is_cancelled() {
                return Err(fatal);
            }
        }
        if ctx.is_cancelled() {
            return Err(ctx.stopped());
        }
    }

    // Every row is committed by now: what fails from here on is reported,
    // never a reason to mark the import failed (and run it again).
    let mut afterwards: Vec<String> = Vec::new();
    // what the job wrote is searchable once it completes (an export may follow)
    for service in Service::ALL {
        let refreshed = (|| async {
            deps.search.set_loading(service, false).await?;
            deps.search.refresh(service).await
        })
        .retry(RetryPolicy::QUICK.builder(Some(RIDE_OUT)))
        .when(|e| e.is_unavailable() && !ctx.is_cancelled())
        .notify(|e, pause| {
            tracing::warn!(error = %e, %service, retry_in_ms = pause.as_millis() as u64,
                    "refreshing the index after an import failed; trying again");
        })
        .await;
        if let Err(e) = refreshed {
            tracing::warn!(error = %e, %service, "refreshing the index after an import failed");
            afterwards.push(format!(
                "refreshing the {} {service} index failed ({e}); the rows become searchable at its next refresh",
                deps.search.name()
            ));
        }
    }
    if afterwards.is_empty() {
        // every index is back in its normal mode; else the guard tries again
        load_mode.ended();
    }
    let mut writer = writers.pop();
    let half = (MAX_RUNTIME_ERRORS / 2) as i64;
    let mut retry = connector.retry();
    let (rejected, first, last) = loop {
        let read = async {
            let w = connector.writer(&mut writer).await?;
            let rejected = w.rejection_count().await?;
            // the first and the last rejected lines, so a report shows both ends
            let first = w.first_rejections(half).await?;
            let after = first.last().map_or(i64::MIN, |f| f.line);
            let last: Vec<Rejection> = w
                .last_rejections(half - 1)
                .await?
                .into_iter()
                .filter(|l| l.line > after)
                .collect();
            anyhow::Ok((rejected, first, last))
        };
        match read.await {
            Ok(read) => break read,
            Err(e) => {
                retry
                    .after(e, &mut writer, "reading the rejected lines")
                    .await?
            }
        }
    };
    let mut response = JobResponse::default();
    for r in &first {
        response.push_error(format!("line {}: {}", r.line, r.reason));
    }
    let between = rejected - (first.len() + last.len()) as i64;
    if between > 0 {
        response.push_error(format!(
            "… {between} more rejected lines; the error report lists every one"
        ));
    }
    for r in &last {
        response.push_error(format!("line {}: {}", r.line, r.reason));
    }
    if rejected > 0 {
        let report_key = format!(
            "{}/{}-errors.csv",
            deps.upload_prefix.trim_end_matches('/'),
            ctx.job().uuid
        );
        let mut retry = connector.retry();
        let report = loop {
            let written = async {
                let w = connector.writer(&mut writer).await?;
                write_error_report(&deps, w, &bucket, &report_key).await
            };
            match written.await {
                Ok(()) => break Ok(()),
                Err(e) => {
                    if let Err(e) = retry
                        .after(e, &mut writer, "writing the error report")
                        .await
                    {
                        break Err(e);
                    }
                }
            }
        };
        match report {
            Ok(()) => response.error_report_s3_key = Some(report_key),
            Err(e) => {
                tracing::warn!(error = %e, "writing the error report failed");
                afterwards.push(format!(
                    "the error report could not be written to s3://{bucket}/{report_key} ({e:#})"
                ));
            }
        }
    }
    let mut messages = format!(
        "imported {} rows from '{location}'; {rejected} rejected",
        done.rows_processed
    );
    if done.uuids_replaced > 0 {
        messages.push_str(&format!(
            "; {} had a uuid cell that is not a uuid and were keyed by their natural key",
            done.uuids_replaced
        ));
    }
    if done.filter_values_skipped > 0 {
        messages.push_str(&format!(
            "; {} had a filter value longer than {MAX_FILTER_VALUE_BYTES} bytes, stored and searchable but not added to the filters",
            done.filter_values_skipped
        ));
    }
    for note in &afterwards {
        messages.push_str("; ");
        messages.push_str(note);
    }
    response.messages = Some(messages);
    response
        .extra
        .insert("rows_uuid_replaced".into(), done.uuids_replaced.into());
    response.extra.insert(
        "rows_filter_values_skipped".into(),
        done.filter_values_skipped.into(),
    );
    response
        .extra
        .insert("rows_processed".into(), done.rows_processed.into());
    response
        .extra
        .insert("rows_rejected".into(), rejected.into());
    Ok(response)
}

/// Batches written at the same time, each in its own transaction on its own
/// connection: while PostgreSQL works on one batch, the next is already on
/// its way, and on more than one core both run at once. With a search index
/// of its own to fill, four whatever the cores: a batch spends most of its
/// time waiting for its bulk request, so more requests in flight keep the
/// engine busy (on 2 cores, 300k contacts: 6 % more rows/s than with two,
/// for 40 MiB more memory; docs/benchmarks.md).
fn writer_count(indexing: bool) -> usize {
    if indexing {
        return 4;
    }
    std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 4))
}

/// A batch being written: its task (which hands back the writer and how many
/// of its lines the search index refused) and the checkpoint after it.
/// Aborted when dropped: a handler that is stopped (after its stop timeout,
/// or by a panic) leaves no batch task running behind it.
type InFlight = VecDeque<(
    AbortOnDropHandle<anyhow::Result<(RecordWriter, i64)>>,
    Checkpoint,
)>;

/// Writes batches as the parser sends them: each batch is written to
/// PostgreSQL and then indexed, up to [`writer_count`] batches at a time.
/// Checkpoints advance strictly in file order: a batch's checkpoint is
/// recorded once it and every batch before it are written and indexed.
/// Returns the writers (for the report) and the last checkpoint.
async fn write_batches(
    ctx: &JobContext,
    deps: &Arc<BuiltinDeps>,
    connector: &Connector,
    mut writers: Vec<RecordWriter>,
    mut rx: mpsc::Receiver<anyhow::Result<Parsed>>,
    start: Checkpoint,
    bytes_total: u64,
) -> anyhow::Result<(Vec<RecordWriter>, Checkpoint)> {
    let want_documents = !deps.search.searches_the_database();
    let mut done = start;
    let mut dispatched = start;
    let mut refused = 0i64;
    let mut in_flight: InFlight = VecDeque::new();
    let result: anyhow::Result<()> = async {
        while let Some(parsed) = rx.recv().await {
            let parsed = parsed?;
            let writer = match writers.pop() {
                Some(w) => w,
                None => {
                    finish_oldest(ctx, &mut in_flight, &mut done, &mut refused, bytes_total).await?
                }
            };
            dispatched = Checkpoint {
                next_line: parsed.after.0,
                next_byte: parsed.after.1,
                rows_processed: dispatched.rows_processed + parsed.accepted,
                rows_rejected: dispatched.rows_rejected + parsed.batch.rejections.len() as i64,
                uuids_replaced: dispatched.uuids_replaced + parsed.uuids_replaced,
                filter_values_skipped: dispatched.filter_values_skipped
                    + parsed.filter_values_skipped,
            };
            let search = deps.search.clone();
            let connector = connector.clone();
            let task = tokio::spawn(async move {
                let mut batch = parsed.batch;
                let mut passes = Passes::default();
                let mut writer = Some(writer);
                let mut retry = connector.retry();
                loop {
                    let written = async {
                        let w = connector.writer(&mut writer).await?;
                        write_batch(
                            w,
                            search.as_ref(),
                            parsed.service,
                            &mut batch,
                            want_documents,
                            &mut passes,
                        )
                        .await
                    };
                    match written.await {
                        Ok(()) => break,
                        Err(e) => retry.after(e, &mut writer, "writing a batch").await?,
                    }
                }
                let writer =
                    writer.ok_or_else(|| anyhow::anyhow!("a batch ended without its writer"))?;
                Ok((writer, passes.refused_lines))
            });
            in_flight.push_back((AbortOnDropHandle::new(task), dispatched));
            if ctx.is_cancelled() {
                break;
            }
        }
        while !in_flight.is_empty() {
            writers.push(
                finish_oldest(ctx, &mut in_flight, &mut done, &mut refused, bytes_total).await?,
            );
        }
        Ok(())
    }
    .await;
    if let Err(e) = result {
        // stop the other batches; their transactions roll back with their connections
        drop(in_flight);
        return Err(e);
    }
    Ok((writers, done))
}

/// Waits for the oldest batch in flight, records its checkpoint and progress,
/// and hands its writer back. `refused` adds up, in file order, the lines
/// that the search index refused: they were counted as loaded when their
/// batch was sent, and are rejected lines instead.
async fn finish_oldest(
    ctx: &JobContext,
    in_flight: &mut InFlight,
    done: &mut Checkpoint,
    refused: &mut i64,
    bytes_total: u64,
) -> anyhow::Result<RecordWriter> {
    let (task, mut next) = in_flight
        .pop_front()
        .ok_or_else(|| anyhow::anyhow!("no batch in flight"))?;
    let (writer, batch_refused) = task
        .await
        .context("a batch writer stopped unexpectedly")??;
    *refused += batch_refused;
    next.rows_processed -= *refused;
    next.rows_rejected += *refused;
    let progress = Progress {
        rows_processed: next.rows_processed,
        rows_rejected: next.rows_rejected,
        bytes_read: i64::try_from(next.next_byte).unwrap_or(i64::MAX),
        bytes_total: Some(i64::try_from(bytes_total).unwrap_or(i64::MAX)),
    };
    ctx.record_progress(&progress, Some(&serde_json::to_value(next)?))
        .await?;
    tracing::debug!(
        rows = next.rows_processed,
        rejected = next.rows_rejected,
        next_line = next.next_line,
        bytes = next.next_byte,
        batch_refused,
        "batch written, indexed and checkpointed"
    );
    *done = next;
    Ok(writer)
}

/// What the passes over one batch have done so far (a batch is written
/// again after the index refuses some of its records, or after its
/// connection is lost).
#[derive(Debug, Default)]
struct Passes {
    /// Lines whose records the index refused: rejected lines now.
    refused_lines: i64,
    /// Documents that rolled-back passes indexed.
    indexed_before: HashSet<(Service, uuid::Uuid)>,
}

/// Writes one batch: its records go to PostgreSQL in a transaction that
/// commits only once the search index holds their documents. Should the
/// index refuse some (a value its mapping cannot take), the transaction is
/// rolled back, their lines become rejected lines, and the rest is written
/// again: the two stores always hold the same records. Safe to run again
/// after a failure: `passes` carries what earlier passes did, so documents
/// indexed by a pass that did not commit are brought back to what
/// PostgreSQL holds.
async fn write_batch(
    writer: &mut RecordWriter,
    search: &dyn SearchBackend,
    service: Service,
    batch: &mut RecordBatch,
    want_documents: bool,
    passes: &mut Passes,
) -> anyhow::Result<()> {
    loop {
        let (staged, docs) = writer.stage(service, batch, want_documents).await?;
        let this_pass: Vec<(Service, uuid::Uuid)> =
            docs.iter().map(|d| (d.service, d.uuid)).collect();
        let refused = index_documents(search, docs).await?;
        // indexed, and to be restored should this pass not commit
        passes.indexed_before.extend(
            this_pass
                .iter()
                .filter(|(_, u)| !refused.contains_key(u))
                .copied(),
        );
        if refused.is_empty() {
            staged.commit(&batch.rejections).await?;
            let now: HashSet<_> = this_pass.into_iter().collect();
            let stale: Vec<_> = passes.indexed_before.difference(&now).copied().collect();
            if !stale.is_empty() {
                restore_documents(writer, search, stale).await?;
            }
            passes.indexed_before.clear();
            return Ok(());
        }
        staged.rollback().await?;
        let dropped = batch.reject(&refused);
        if dropped == 0 {
            anyhow::bail!(
                "the search index refused {} records that the batch does not hold",
                refused.len()
            );
        }
        passes.refused_lines += dropped as i64;
        tracing::warn!(
            refused = refused.len(),
            lines = dropped,
            "the search index refused records; their lines are rejected and the batch is written again"
        );
    }
}

/// Brings documents that a rolled-back pass indexed back to what PostgreSQL
/// holds: re-indexed as stored, or deleted when PostgreSQL has no such record.
async fn restore_documents(
    writer: &RecordWriter,
    search: &dyn SearchBackend,
    stale: Vec<(Service, uuid::Uuid)>,
) -> anyhow::Result<()> {
    for service in Service::ALL {
        let uuids: Vec<uuid::Uuid> = stale
            .iter()
            .filter(|(s, _)| *s == service)
            .map(|(_, u)| *u)
            .collect();
        if uuids.is_empty() {
            continue;
        }
        let stored = writer.restamped(service, &uuids).await?;
        let kept: HashSet<uuid::Uuid> = stored.iter().map(|d| d.uuid).collect();
        let refused = index_documents(search, stored).await?;
        let gone: Vec<uuid::Uuid> = uuids
            .into_iter()
            .filter(|u| !kept.contains(u) || refused.contains_key(u))
            .collect();
        if !gone.is_empty() {
            search.delete(service, gone).await.with_context(|| {
                format!("removing {service} records rolled back from the index")
            })?;
        }
    }
    Ok(())
}

/// Indexes a batch's stored records; returns the ones the index refused,
/// with the reason.
async fn index_documents(
    search: &dyn SearchBackend,
    docs: Vec<StoredRecord>,
) -> anyhow::Result<HashMap<uuid::Uuid, String>> {
    // moved, not copied: a batch's documents are the import's largest allocation
    let (companies, contacts): (Vec<_>, Vec<_>) = docs
        .into_iter()
        .partition(|d| d.service == Service::Company);
    let mut refused = HashMap::new();
    for (service, docs) in [(Service::Company, companies), (Service::Contact, contacts)] {
        let batch: Vec<JsonDocument> = docs.into_iter().map(JsonDocument::from).collect();
        let n = batch.len();
        if n > 0 {
            let rejected = search.index_json(service, batch).await.with_context(|| {
                format!("indexing {n} {service} records into {}", search.name())
            })?;
            refused.extend(rejected.into_iter().map(|r| {
                let reason = connectra_domain::limits::quote_cell(&r.reason);
                (r.uuid, format!("status {} {reason}", r.status))
            }));
        }
    }
    Ok(refused)
}

/// How a file is cut into batches and groups, and how large one record may be.
#[derive(Debug, Clone, Copy)]
struct ParseLimits {
    batch_size: usize,
    /// Consecutive batches are sent as one group (one transaction) until it
    /// holds this many lines (or [`GROUP_MAX_BYTES`] of text).
    group_rows: usize,
    max_record_bytes: usize,
}

/// A group of batches ends, whatever its line count, once its lines hold
/// this much original text (wide rows): it bounds a group's memory.
const GROUP_MAX_BYTES: usize = 4 * 1024 * 1024;

fn record_reader(
    stream: ByteStream,
    max_record_bytes: usize,
) -> RecordReader<impl std::io::BufRead> {
    RecordReader::new(
        BufReader::with_capacity(READ_BUFFER, SyncIoBridge::new(stream)),
        max_record_bytes,
    )
}

/// Runs on a blocking thread: reads the header from `header_stream`, then the
/// data from `data_stream` (a ranged read when resuming) or from the rest of
/// `header_stream`, and sends batches.
fn parse_file(
    header_stream: ByteStream,
    data_stream: Option<ByteStream>,
    service: Option<Service>,
    start: Checkpoint,
    limits: ParseLimits,
    tx: &mpsc::Sender<anyhow::Result<Parsed>>,
) -> anyhow::Result<()> {
    let result = parse_inner(header_stream, data_stream, service, start, limits, tx);
    if let Err(e) = &result {
        let _ = tx.blocking_send(Err(anyhow::anyhow!("{e:#}")));
    }
    result
}

fn parse_inner(
    header_stream: ByteStream,
    data_stream: Option<ByteStream>,
    service: Option<Service>,
    start: Checkpoint,
    limits: ParseLimits,
    tx: &mpsc::Sender<anyhow::Result<Parsed>>,
) -> anyhow::Result<()> {
    let max_record_bytes = limits.max_record_bytes;
    let mut header_reader = record_reader(header_stream, max_record_bytes);
    match header_reader.next()? {
        Next::Record => {}
        Next::End => return Err(FatalImportError("the file is empty".into()).into()),
        Next::Oversized { bytes } => {
            return Err(FatalImportError(format!(
                "the header row is {bytes} bytes, larger than CSV_MAX_RECORD_BYTES ({max_record_bytes})"
            ))
            .into())
        }
    }
    let headers: Vec<String> = header_reader
        .fields()
        .map(|h| std::str::from_utf8(h).map(str::to_string))
        .collect::<Result<_, _>>()
        .map_err(|_| FatalImportError("the header row is not valid UTF-8".into()))?;
    let plan = HeaderPlan::new(&headers, service)?;
    // positions are relative to where this reader started
    let (mut reader, line_base, byte_base) = match data_stream {
        Some(stream) => (
            record_reader(stream, max_record_bytes),
            start.next_line.saturating_sub(1),
            start.next_byte,
        ),
        None => (header_reader, 0, 0),
    };
    // `batch` holds the group being filled: whole batches of
    // `batch_size` lines, so every group ends, and every checkpoint falls,
    // on a batch boundary
    let mut batch = RecordBatch::default();
    let mut batch_lines = 0usize;
    let mut accepted = 0i64;
    let mut uuids_replaced = 0i64;
    let mut filter_values_skipped = 0i64;
    loop {
        let next = reader.next()?;
        let line = line_base.saturating_add(reader.line());
        let line = i64::try_from(line).unwrap_or(i64::MAX);
        let more = !matches!(next, Next::End);
        match next {
            Next::Record => match plan.parse_row(reader.fields()) {
                Ok(parsed) => {
                    batch.push(line, reader.raw(), parsed.record, parsed.company);
                    accepted += 1;
                    uuids_replaced += i64::from(parsed.uuid_replaced);
                    filter_values_skipped += i64::from(parsed.filter_value_skipped);
                }
                Err(reason) => batch.rejections.push(Rejection {
                    line,
                    reason,
                    raw: String::from_utf8_lossy(reader.raw()).into_owned(),
                }),
            },
            Next::Oversized { bytes } => batch.rejections.push(Rejection {
                line,
                reason: format!(
                    "the record is {bytes} bytes, larger than CSV_MAX_RECORD_BYTES ({max_record_bytes}); the report keeps its start"
                ),
                raw: format!("{}…", String::from_utf8_lossy(reader.raw())),
            }),
            Next::End => {}
        }
        if more {
            batch_lines += 1;
        }
        let batch_full = batch_lines >= limits.batch_size;
        if batch_full {
            batch_lines = 0;
        }
        let group_full = batch_full
            && (batch.records.len() + batch.rejections.len() >= limits.group_rows
                || batch.sources.text_bytes() >= GROUP_MAX_BYTES);
        if group_full || (!more && (accepted > 0 || !batch.rejections.is_empty())) {
            let (pos_line, pos_byte) = reader.position();
            let parsed = Parsed {
                service: plan.service,
                batch: std::mem::take(&mut batch),
                accepted,
                uuids_replaced,
                filter_values_skipped,
                after: (
                    line_base.saturating_add(pos_line),
                    byte_base.saturating_add(pos_byte),
                ),
            };
            accepted = 0;
            uuids_replaced = 0;
            filter_values_skipped = 0;
            if tx.blocking_send(Ok(parsed)).is_err() {
                return Ok(()); // the writer stopped (cancelled or failed)
            }
        }
        if !more {
            return Ok(());
        }
    }
}

/// Streams every rejection into `line_number,reason,original_line` CSV on S3.
async fn write_error_report(
    deps: &BuiltinDeps,
    writer: &RecordWriter,
    bucket: &str,
    key: &str,
) -> anyhow::Result<()> {
    let (mut w, mut r) = tokio::io::duplex(64 * 1024);
    let upload = async {
        deps.storage
            .put_stream(bucket, key, &mut r, "text/csv")
            .await
            .map_err(storage_error)
    };
    let produce = async {
        let mut rows = Box::pin(writer.rejections().await?);
        w.write_all(&csv_line(["line_number", "reason", "original_line"])?)
            .await?;
        while let Some(rej) = rows.next().await {
            let rej = rej?;
            w.write_all(&csv_line([
                rej.line.to_string().as_str(),
                &rej.reason,
                &rej.raw,
            ])?)
            .await?;
        }
        w.shutdown().await?;
        anyhow::Ok(())
    };
    let (uploaded, produced) = tokio::join!(upload, produce);
    produced?;
    uploaded?;
    Ok(())
}

/// One CSV line, quoted as needed.
fn csv_line<const N: usize>(fields: [&str; N]) -> anyhow::Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(fields)?;
    w.into_inner().map_err(|e| anyhow::anyhow!("{e}"))
}
