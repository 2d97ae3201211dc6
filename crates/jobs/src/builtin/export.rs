//! `export_csv_file`: VQL query → pages of one consistent view (an OpenSearch
//! point in time, or one REPEATABLE READ snapshot in PostgreSQL) → CSV rows →
//! a streamed multipart upload to `{prefix}/{job_uuid}.csv`.
//!
//! The CSV never sits in memory: rows go through a small channel into the
//! upload. On any failure the channel carries an error instead of the end of
//! the file, the upload is aborted, and no object, partial or whole, appears.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use connectra_domain::job::{ExportCsvFileData, JobResponse};
use connectra_domain::list::join_list;
use connectra_domain::vql::Purpose;
use connectra_persistence::jobs::Progress;
use connectra_search::Document;
use futures::StreamExt;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::io::StreamReader;
use tokio_util::task::AbortOnDropHandle;

use super::BuiltinDeps;
use crate::JobContext;

/// The upload ended before the file did; the upload's own error says why.
#[derive(Debug, thiserror::Error)]
#[error("the upload stopped before the export was complete")]
struct UploadStopped;

/// The page size of an export whose VQL has no `order_by`: the largest a
/// VQL page may be.
const UNORDERED_PAGE: u32 = connectra_domain::vql::MAX_LIMIT;

/// Pages read ahead of the one being written.
const READ_AHEAD: usize = 2;

/// Progress is written at most this often (and once at the end).
const PROGRESS_EVERY: Duration = Duration::from_millis(500);

/// Characters that make a spreadsheet run a cell as a formula (OWASP).
const FORMULA_START: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

/// A cell as it is written: `null` is empty, lists are joined by
/// [`join_list`] (`, `, with `\`, `,` and `;` inside an element escaped, so
/// that the file re-imports unchanged), `extra` is its JSON; a text cell a
/// spreadsheet would run as a formula gets a leading `'` when
/// `escape_formulas` (numbers are never touched).
pub(crate) fn cell_text(value: &Value, escape_formulas: bool) -> String {
    let text = match value {
        Value::Null => return String::new(),
        Value::Number(n) => return n.to_string(),
        Value::Bool(b) => return b.to_string(),
        Value::String(s) => s.clone(),
        Value::Array(items) => join_list(items.iter().map(|i| match i {
            Value::String(s) => Cow::Borrowed(s.as_str()),
            other => Cow::Owned(other.to_string()),
        })),
        Value::Object(_) => value.to_string(),
    };
    if escape_formulas && text.starts_with(FORMULA_START) {
        format!("'{text}")
    } else {
        text
    }
}

fn csv_row(
    columns: &[&str],
    doc: &Document,
    escape: bool,
    out: &mut csv::Writer<Vec<u8>>,
) -> anyhow::Result<()> {
    out.write_record(
        columns
            .iter()
            .map(|c| cell_text(doc.get(*c).unwrap_or(&Value::Null), escape)),
    )?;
    Ok(())
}

fn take_bytes(w: &mut csv::Writer<Vec<u8>>) -> anyhow::Result<Bytes> {
    w.flush()?;
    let full = std::mem::replace(w, csv::Writer::from_writer(Vec::new()));
    let bytes = full.into_inner().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(Bytes::from(bytes))
}

/// An earlier attempt whose runner died mid-upload left its multipart upload
/// of this same key open (invisible, but its parts cost storage): abort it.
/// The key is this job's own, and only one attempt holds the job at a time,
/// so nothing else is writing it. A failure here only costs storage, so it is
/// logged, not fatal.
async fn abort_left_behind(storage: &connectra_storage::Storage, bucket: &str, key: &str) {
    let pending = match storage.pending_uploads(bucket, key).await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, key, "could not list the uploads an earlier attempt left");
            return;
        }
    };
    for upload in pending.iter().filter(|u| u.key == key) {
        match storage.abort_upload(bucket, key, &upload.upload_id).await {
            Ok(()) => tracing::info!(key, upload_id = %upload.upload_id,
                "aborted the upload an earlier attempt left unfinished"),
            Err(e) => {
                tracing::warn!(error = %e, key, "could not abort an earlier attempt's upload")
            }
        }
    }
}

pub(super) async fn run(ctx: JobContext, deps: Arc<BuiltinDeps>) -> anyhow::Result<JobResponse> {
    let data: ExportCsvFileData = serde_json::from_value(ctx.data().clone())
        .context("invalid job_data for export_csv_file")?;
    // checked again at run time: ERR_MISSING_SELECT_COLUMNS and the rest
    let mut query = data
        .vql
        .validate(data.service, Purpose::Export)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if data.vql.order_by.is_none() {
        // no order asked for: the default uuid order, read in the largest
        // pages (the file is the same; only the round trips are fewer)
        query.limit = UNORDERED_PAGE;
    }
    let bucket = data
        .s3_bucket
        .clone()
        .unwrap_or_else(|| deps.default_bucket.clone());
    let key = format!(
        "{}/{}.csv",
        deps.upload_prefix.trim_end_matches('/'),
        ctx.job().uuid
    );
    let columns: Vec<&'static str> = query.select_columns.iter().map(|f| f.name).collect();
    if ctx.job().attempts > 1 {
        abort_left_behind(&deps.storage, &bucket, &key).await;
    }

    let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(4);
    let finished = Arc::new(AtomicBool::new(false));
    let mut reader = StreamReader::new(body_until_end(rx, finished.clone()));
    let storage = deps.storage.clone();
    let (upload_bucket, upload_key) = (bucket.clone(), key.clone());
    let upload = tokio::spawn(async move {
        storage
            .put_stream(&upload_bucket, &upload_key, &mut reader, "text/csv")
            .await
    });

    let produced = produce(&ctx, &deps, data.service, query, &columns, &tx).await;
    match &produced {
        Ok(_) => {
            // the end of the file: only now does the upload complete
            finished.store(true, Ordering::SeqCst);
            drop(tx);
        }
        Err(e) => {
            // an error instead of the end: the upload aborts
            let _ = tx.send(Err(std::io::Error::other(format!("{e:#}")))).await;
            drop(tx);
        }
    }
    let uploaded = upload
        .await
        .context("the upload task stopped unexpectedly")?;
    let upload_failed = |e: connectra_storage::StorageError| {
        anyhow::anyhow!("uploading the export to s3://{bucket}/{key} failed: {e}")
    };
    let rows = match (produced, uploaded) {
        (Ok(rows), Ok(_)) => rows,
        // S3 went away first: its error is the cause, not the closed channel
        (Err(e), Err(u)) if e.is::<UploadStopped>() => return Err(upload_failed(u)),
        (Err(e), _) => return Err(e),
        (Ok(_), Err(u)) => return Err(upload_failed(u)),
    };
    Ok(JobResponse {
        messages: Some(format!("exported {rows} rows to s3://{bucket}/{key}")),
        s3_key: Some(key),
        extra: [("rows_exported".to_string(), Value::from(rows))]
            .into_iter()
            .collect(),
        ..JobResponse::default()
    })
}

/// The upload's body: the chunks the producer sends, then the end of the
/// file only if the producer said it finished. A channel closed without
/// that (the handler was aborted after its stop timeout, panicked, or was
/// dropped) is an error, so the upload aborts instead of completing a
/// truncated object.
fn body_until_end(
    mut rx: mpsc::Receiver<std::io::Result<Bytes>>,
    finished: Arc<AtomicBool>,
) -> impl futures::Stream<Item = std::io::Result<Bytes>> {
    futures::stream::poll_fn(move |cx| match rx.poll_recv(cx) {
        std::task::Poll::Ready(None) if !finished.load(Ordering::SeqCst) => {
            // once: the error ends the upload
            finished.store(true, Ordering::SeqCst);
            std::task::Poll::Ready(Some(Err(std::io::Error::other(
                "the export stopped before its end",
            ))))
        }
        other => other,
    })
}

/// Pages through every match and sends CSV bytes; returns the row count.
async fn produce(
    ctx: &JobContext,
    deps: &BuiltinDeps,
    service: connectra_domain::Service,
    query: connectra_domain::vql::ValidQuery,
    columns: &[&str],
    tx: &mpsc::Sender<std::io::Result<Bytes>>,
) -> anyhow::Result<i64> {
    let send = |bytes: Bytes| async move {
        tx.send(Ok(bytes))
            .await
            .map_err(|_| anyhow::Error::from(UploadStopped))
    };
    let mut out = csv::Writer::from_writer(Vec::new());
    out.write_record(columns)?;
    send(take_bytes(&mut out)?).await?;
    let mut pages = read_ahead(deps.search.scroll(service, query), READ_AHEAD);
    let mut rows = 0i64;
    // when progress was last written, and what it said
    let mut recorded = (Instant::now(), 0i64);
    let progress = |rows| Progress {
        rows_processed: rows,
        ..Progress::default()
    };
    loop {
        let next = tokio::select! {
            page = pages.next() => page,
            () = tokio::time::sleep_until(recorded.0 + PROGRESS_EVERY), if rows > recorded.1 => {
                // the next page is slow to come: what is sent so far is progress
                ctx.record_progress(&progress(rows), None).await?;
                recorded = (Instant::now(), rows);
                continue;
            }
        };
        let Some(page) = next else { break };
        if ctx.is_cancelled() {
            return Err(ctx.stopped());
        }
        let page = page?.with_context(|| format!("reading matches from {}", deps.search.name()))?;
        for doc in &page.data {
            csv_row(columns, doc, deps.escape_formulas, &mut out)?;
        }
        rows += page.data.len() as i64;
        send(take_bytes(&mut out)?).await?;
        if recorded.0.elapsed() >= PROGRESS_EVERY {
            ctx.record_progress(&progress(rows), None).await?;
            recorded = (Instant::now(), rows);
        }
    }
    ctx.record_progress(&progress(rows), None).await?;
    Ok(rows)
}

/// `pages`, read up to `depth` pages ahead by a task of its own, so that the
/// search engine works on the next pages while this one is written and
/// uploaded. Dropping the stream stops the task (and so drops the scroll,
/// which releases its view).
///
/// The stream ends only after the scroll's own end: should the task stop
/// before it, the stream does not end (a truncated file would complete) but
/// carries the task's panic on into the handler, or fails.
fn read_ahead<T: Send + 'static>(
    mut pages: futures::stream::BoxStream<'static, T>,
    depth: usize,
) -> impl futures::Stream<Item = anyhow::Result<T>> {
    use std::future::Future;
    use std::task::Poll;
    // `Some(page)`, then `None` for the end of the scroll
    let (tx, mut rx) = mpsc::channel::<Option<T>>(depth);
    let reader = tokio::spawn(async move {
        while let Some(page) = pages.next().await {
            if tx.send(Some(page)).await.is_err() {
                return;
            }
        }
        let _ = tx.send(None).await;
    });
    let mut reader = AbortOnDropHandle::new(reader);
    let mut ended = false;
    futures::stream::poll_fn(move |cx| {
        if ended {
            return Poll::Ready(None);
        }
        match rx.poll_recv(cx) {
            Poll::Ready(Some(Some(page))) => Poll::Ready(Some(Ok(page))),
            Poll::Ready(Some(None)) => {
                ended = true;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
            // closed before the end: the task stopped early; say why
            Poll::Ready(None) => match std::pin::Pin::new(&mut reader).poll(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Poll::Ready(outcome) => {
                    ended = true;
                    let why = outcome.err().map_or_else(String::new, |e| format!(": {e}"));
                    Poll::Ready(Some(Err(anyhow::anyhow!(
                        "reading the matches stopped before their end{why}"
                    ))))
                }
            },
        }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    async fn read_body(finish: bool) -> std::io::Result<String> {
        use tokio::io::AsyncReadExt;
        let (tx, rx) = mpsc::channel(4);
        let finished = Arc::new(AtomicBool::new(false));
        let mut reader = StreamReader::new(body_until_end(rx, finished.clone()));
        tx.send(Ok(Bytes::from_static(b"uuid\n"))).await.ok();
        tx.send(Ok(Bytes::from_static(b"a\n"))).await.ok();
        if finish {
            finished.store(true, Ordering::SeqCst);
        }
        drop(tx); // the producer ends, or is dropped mid-export
        let mut text = String::new();
        reader.read_to_string(&mut text).await.map(|_| text)
    }

    #[tokio::test]
    async fn a_producer_dropped_before_its_end_makes_the_body_fail_not_end() {
        assert_eq!(read_body(true).await.unwrap(), "uuid\na\n");
        let err = read_body(false).await.unwrap_err();
        assert!(err.to_string().contains("stopped before its end"), "{err}");
    }

    #[test]
    fn formulas_are_neutralised_in_text_but_numbers_are_left_alone() {
        for bad in ["=SUM(A1)", "+1-555", "-cmd", "@import", "\tx", "\rx"] {
            assert_eq!(cell_text(&json!(bad), true), format!("'{bad}"));
            assert_eq!(cell_text(&json!(bad), false), bad);
        }
        assert_eq!(cell_text(&json!(-5), true), "-5");
        assert_eq!(cell_text(&json!("safe"), true), "safe");
    }

    #[test]
    fn lists_join_with_comma_space_and_nulls_are_empty() {
        assert_eq!(
            cell_text(&json!(["SaaS", "Software"]), true),
            "SaaS, Software"
        );
        assert_eq!(
            cell_text(&json!(["R&D, Europe", "Sales"]), true),
            "R&D\\, Europe, Sales",
            "an element's comma is escaped"
        );
        assert_eq!(cell_text(&json!(null), true), "");
        assert_eq!(cell_text(&json!({"a": 1}), true), "{\"a\":1}");
    }
}
