//! Streaming uploads that are all or nothing.
//!
//! `rust-s3`'s own `put_object_stream` (0.38) does abort after a failure, but
//! only best effort and silently, not when its future is dropped, and it
//! sizes its parallelism (up to ten 8 MiB parts) from the machine's free
//! memory. This module drives `initiate_multipart_upload`,
//! `put_multipart_chunk`, `complete_multipart_upload` and `abort_upload`
//! itself so that memory is bounded and every exit path aborts.

use std::io;
use std::time::Duration;

use backon::Retryable;
use connectra_domain::retry::RetryPolicy;
use s3::error::S3Error;
use s3::serde_types::Part;
use s3::Bucket;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::task::JoinSet;

use crate::error;
use crate::StorageError;

/// Size of every part but the last. S3 requires at least 5 MiB.
pub(crate) const PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts uploading while the next one is read: memory is at most
/// `(2 * PARTS_IN_FLIGHT + 1) * PART_SIZE` of part buffers (a part in
/// flight keeps its buffer, to send again after a transient failure, while
/// a copy of it is being sent).
const PARTS_IN_FLIGHT: usize = 2;
/// S3's limit on the number of parts of one upload.
const MAX_PARTS: u32 = 10_000;

/// How long a part (or a one-part upload) is sent again after transient
/// failures before the upload fails: a restart of S3 is ridden out, a
/// longer outage fails the upload (and aborts it) instead of hanging it.
const PART_RETRY_FOR: Duration = Duration::from_secs(60);

/// Worth sending again: S3 overloaded or failing (429, 5xx), or no answer
/// at all (refused connection, reset, timeout). PUTs of a part or of a
/// whole object are idempotent.
fn transient(e: &S3Error) -> bool {
    match e {
        S3Error::HttpFailWithBody(status, _) => *status == 429 || *status >= 500,
        S3Error::HttpFail | S3Error::Io(_) | S3Error::Reqwest(_) => true,
        _ => false,
    }
}

/// Runs an idempotent S3 request, sending it again after transient failures
/// with the one retry policy for up to [`PART_RETRY_FOR`].
async fn idempotent<T, F, Fut>(what: &str, request: F) -> Result<T, S3Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, S3Error>>,
{
    request
        .retry(RetryPolicy::QUICK.builder(Some(PART_RETRY_FOR)))
        .when(transient)
        .notify(|e, pause| {
            metrics::counter!(connectra_domain::retry::S3_RETRIES_METRIC).increment(1);
            tracing::warn!(error = %e, retry_in_ms = pause.as_millis() as u64,
                "{what} failed; sending it again");
        })
        .await
}

/// Reads up to [`PART_SIZE`] bytes; fewer only at the end of the input.
async fn read_part(reader: &mut (dyn AsyncRead + Send + Unpin)) -> io::Result<Vec<u8>> {
    let mut part = Vec::with_capacity(PART_SIZE);
    reader.take(PART_SIZE as u64).read_to_end(&mut part).await?;
    Ok(part)
}

fn reader_failed(bucket: &str, key: &str, e: &io::Error) -> StorageError {
    StorageError::Io(io::Error::new(
        e.kind(),
        format!("reading the data to upload to 's3://{bucket}/{key}' failed: {e}"),
    ))
}

/// An open multipart upload and its part uploads in flight. Unless
/// [`Upload::complete`] succeeds, it is aborted: explicitly by
/// [`Upload::abort`], or on drop (the caller dropped `put_stream`'s future: a
/// cancelled job, a shutdown). Either way the part tasks are stopped and
/// waited for first, so no part lands after the abort.
struct Upload {
    bucket: Bucket,
    key: String,
    upload_id: String,
    parts: JoinSet<Result<Part, StorageError>>,
    open: bool,
}

impl Upload {
    /// Stops the part tasks, aborts the upload and waits for S3's answer.
    /// Failures are logged: the caller's original error is the one to report.
    async fn abort(mut self) {
        self.open = false;
        let parts = std::mem::take(&mut self.parts);
        abort(
            self.bucket.clone(),
            std::mem::take(&mut self.key),
            std::mem::take(&mut self.upload_id),
            parts,
        )
        .await;
    }
}

async fn abort(
    bucket: Bucket,
    key: String,
    upload_id: String,
    mut parts: JoinSet<Result<Part, StorageError>>,
) {
    parts.shutdown().await;
    match bucket.abort_upload(&key, &upload_id).await {
        Ok(()) => tracing::debug!(%key, "multipart upload aborted"),
        Err(e) => tracing::warn!(
            bucket = %bucket.name(), %key, %upload_id, error = %e,
            "could not abort a multipart upload; its parts stay until aborted or removed by a lifecycle rule"
        ),
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if !self.open {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(key = %self.key, upload_id = %self.upload_id,
                "multipart upload dropped outside a runtime; it cannot be aborted");
            return;
        };
        tracing::info!(key = %self.key, "multipart upload cancelled; aborting it");
        runtime.spawn(abort(
            self.bucket.clone(),
            std::mem::take(&mut self.key),
            std::mem::take(&mut self.upload_id),
            std::mem::take(&mut self.parts),
        ));
    }
}

pub(crate) async fn put_stream(
    handle: &Bucket,
    bucket: &str,
    key: &str,
    reader: &mut (dyn AsyncRead + Send + Unpin),
    content_type: &str,
) -> Result<u64, StorageError> {
    let first = read_part(reader)
        .await
        .map_err(|e| reader_failed(bucket, key, &e))?;
    if first.len() < PART_SIZE {
        // The whole input fits one part: one PUT, nothing to abort.
        let len = first.len() as u64;
        idempotent("writing an object", || {
            handle.put_object_with_content_type(key, &first, content_type)
        })
        .await
        .map_err(|e| error::map(e, "writing", bucket, Some(key)))?;
        return Ok(len);
    }

    // a retry after a lost answer can leave an upload without parts behind,
    // which `pending_uploads` lists and `abort_pending` removes
    let started = idempotent("starting a multipart upload", || {
        handle.initiate_multipart_upload(key, content_type)
    })
    .await
    .map_err(|e| error::map(e, "starting a multipart upload of", bucket, Some(key)))?;
    let mut upload = Upload {
        bucket: handle.clone(),
        key: key.to_string(),
        upload_id: started.upload_id,
        parts: JoinSet::new(),
        open: true,
    };
    match upload_parts(&mut upload, bucket, reader, first, content_type).await {
        Ok(total) => {
            upload.open = false;
            Ok(total)
        }
        Err(e) => {
            tracing::info!(%bucket, %key, error = %e, "multipart upload failed; aborting it");
            upload.abort().await;
            Err(e)
        }
    }
}

/// Uploads `first` and the rest of `reader` as parts, then completes the
/// upload. Returns the number of bytes written.
async fn upload_parts(
    upload: &mut Upload,
    bucket: &str,
    reader: &mut (dyn AsyncRead + Send + Unpin),
    first: Vec<u8>,
    content_type: &str,
) -> Result<u64, StorageError> {
    let key = upload.key.clone();
    let mut done: Vec<Part> = Vec::new();
    let mut total = 0u64;
    let mut next_part: u32 = 1;
    let mut pending = Some(first);
    let mut done_reading = false;
    loop {
        if let Some(chunk) = pending.take() {
            if next_part > MAX_PARTS {
                return Err(StorageError::S3(format!(
                    "writing 's3://{bucket}/{key}' failed: the data exceeds S3's limit of {MAX_PARTS} parts of {} MiB",
                    PART_SIZE / (1024 * 1024)
                )));
            }
            total += chunk.len() as u64;
            let part_number = next_part;
            next_part += 1;
            // Each part uploads in its own task, so it progresses while the
            // next part is read.
            let handle = upload.bucket.clone();
            let (bucket, key) = (bucket.to_string(), key.clone());
            let (upload_id, content_type) = (upload.upload_id.clone(), content_type.to_string());
            upload.parts.spawn(async move {
                idempotent("uploading a part", || {
                    handle.put_multipart_chunk(
                        chunk.clone(),
                        &key,
                        part_number,
                        &upload_id,
                        &content_type,
                    )
                })
                .await
                .map_err(|e| {
                    error::map(
                        e,
                        &format!("uploading part {part_number} of"),
                        &bucket,
                        Some(&key),
                    )
                })
            });
        }
        if !done_reading && upload.parts.len() < PARTS_IN_FLIGHT {
            let chunk = read_part(reader)
                .await
                .map_err(|e| reader_failed(bucket, &key, &e))?;
            done_reading = chunk.len() < PART_SIZE;
            if !chunk.is_empty() {
                pending = Some(chunk);
            }
            continue;
        }
        match upload.parts.join_next().await {
            Some(Ok(part)) => done.push(part?),
            Some(Err(e)) => {
                return Err(StorageError::S3(format!(
                "uploading a part of 's3://{bucket}/{key}' failed: the task ended abnormally: {e}"
            )))
            }
            None => break,
        }
    }
    done.sort_by_key(|part| part.part_number);
    let mut tries = 0u32;
    let completed = idempotent("completing a multipart upload", || {
        tries += 1;
        upload
            .bucket
            .complete_multipart_upload(&key, &upload.upload_id, done.clone())
    })
    .await;
    match completed {
        Ok(_) => Ok(total),
        // An earlier try completed the upload but its answer was lost: the
        // upload is gone and the object is there, whole.
        Err(S3Error::HttpFailWithBody(404, _))
            if tries > 1 && object_size(&upload.bucket, &key).await == Some(total) =>
        {
            Ok(total)
        }
        Err(e) => Err(error::map(
            e,
            "completing the multipart upload of",
            bucket,
            Some(&key),
        )),
    }
}

/// The size of `key`, if it exists and S3 answers.
async fn object_size(handle: &Bucket, key: &str) -> Option<u64> {
    let (head, status) = handle.head_object(key).await.ok()?;
    (status == 200)
        .then_some(head.content_length)
        .flatten()
        .and_then(|n| u64::try_from(n).ok())
}
