#![doc = include_str!("../README.md")]

mod error;
mod upload;
mod xml;

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use s3::creds::Credentials;
use s3::error::S3Error;
use s3::{Bucket, BucketConfiguration, Region};
use tokio::io::AsyncReadExt;
use tokio_util::io::StreamReader;

pub use error::StorageError;

/// A readable object body: bytes arrive as S3 sends them, one network chunk
/// held at a time.
pub type ByteStream = Box<dyn tokio::io::AsyncRead + Send + Unpin>;

/// How to reach S3. Built by the binaries from `Settings`.
#[derive(Debug, Clone)]
pub struct S3Config {
    /// `http(s)://host:port` of an S3-compatible server; `None` means AWS S3
    /// in `region`.
    pub endpoint: Option<String>,
    /// For example `us-east-1`.
    pub region: String,
    /// With `secret_access_key`; when both are `None`, `rust-s3` looks for the
    /// AWS standard variables and profile.
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`), which most
    /// S3-compatible servers need; otherwise virtual-host style.
    pub path_style: bool,
}

/// What [`Storage::head`] reports about an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub size: u64,
    pub content_type: Option<String>,
}

/// A multipart upload that was started and neither completed nor aborted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingUpload {
    pub key: String,
    pub upload_id: String,
}

/// How long one request may take before S3 has answered, and how long a
/// streamed download may wait for its next chunk.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The S3 client. Cheap to clone: clones share one HTTP connection pool.
#[derive(Clone)]
pub struct Storage {
    inner: Arc<Inner>,
}

struct Inner {
    endpoint: Option<String>,
    region: Region,
    credentials: Credentials,
    path_style: bool,
    /// One `Bucket` (and so one HTTP client) per bucket name, made on first use.
    buckets: Mutex<HashMap<String, Arc<Bucket>>>,
}

impl fmt::Debug for Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the credentials.
        f.debug_struct("Storage")
            .field("endpoint", &self.inner.endpoint)
            .field("region", &self.inner.region.to_string())
            .field("path_style", &self.inner.path_style)
            .finish_non_exhaustive()
    }
}

impl Storage {
    /// Builds the client. Sends no request; see [`Storage::bucket_exists`] for
    /// a readiness check.
    pub fn new(cfg: &S3Config) -> Result<Self, StorageError> {
        let region_name = cfg.region.trim();
        if region_name.is_empty() {
            return Err(StorageError::Config("the region is empty".into()));
        }
        let region = match cfg.endpoint.as_deref().map(str::trim) {
            Some(endpoint) => {
                let rest = endpoint
                    .strip_prefix("http://")
                    .or_else(|| endpoint.strip_prefix("https://"));
                match rest {
                    Some(host) if !host.is_empty() => Region::Custom {
                        region: region_name.to_string(),
                        endpoint: endpoint.trim_end_matches('/').to_string(),
                    },
                    _ => {
                        return Err(StorageError::Config(format!(
                            "the endpoint '{endpoint}' must be an http:// or https:// URL"
                        )))
                    }
                }
            }
            None => region_name.parse::<Region>().map_err(|e| {
                StorageError::Config(format!("unknown region '{region_name}': {e}"))
            })?,
        };
        let credentials = match (
            cfg.access_key_id.as_deref(),
            cfg.secret_access_key.as_deref(),
        ) {
            (Some(ak), Some(sk)) => Credentials::new(Some(ak), Some(sk), None, None, None),
            (None, None) => Credentials::new(None, None, None, None, None),
            _ => {
                return Err(StorageError::Config(
                    "the access key id and the secret access key must be given together".into(),
                ))
            }
        }
        .map_err(|e| StorageError::Config(format!("no usable credentials: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                endpoint: cfg.endpoint.clone(),
                region,
                credentials,
                path_style: cfg.path_style,
                buckets: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// S3's naming rules: 3 to 63 characters of lower-case letters, digits,
    /// `.` and `-`, starting and ending with a letter or digit, no `..`, and
    /// not an IP address. S3 answers a bad name only with a broken pipe, so
    /// every method checks the name before sending anything.
    pub fn validate_bucket_name(bucket: &str) -> Result<(), StorageError> {
        let bytes = bucket.as_bytes();
        let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        let valid = (3..=63).contains(&bytes.len())
            && bytes.iter().all(|b| alnum(b) || *b == b'.' || *b == b'-')
            && bytes.first().is_some_and(alnum)
            && bytes.last().is_some_and(alnum)
            && !bucket.contains("..")
            && !bucket.contains(".-")
            && !bucket.contains("-.")
            && bucket.parse::<std::net::Ipv4Addr>().is_err();
        if valid {
            Ok(())
        } else {
            Err(StorageError::InvalidBucketName(bucket.to_string()))
        }
    }

    fn validate_key(key: &str) -> Result<(), StorageError> {
        if key.is_empty() || key.len() > 1024 {
            return Err(StorageError::InvalidKey(key.to_string()));
        }
        Ok(())
    }

    /// The `Bucket` handle for `name`, made once per name.
    fn bucket(&self, name: &str) -> Result<Arc<Bucket>, StorageError> {
        Self::validate_bucket_name(name)?;
        let mut buckets = self
            .inner
            .buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(bucket) = buckets.get(name) {
            return Ok(bucket.clone());
        }
        let bucket = Bucket::new(
            name,
            self.inner.region.clone(),
            self.inner.credentials.clone(),
        )
        .map_err(|e| {
            StorageError::Config(format!("cannot make a client for bucket '{name}': {e}"))
        })?;
        let mut bucket = if self.inner.path_style {
            *bucket.with_path_style()
        } else {
            *bucket
        };
        bucket.set_request_timeout(Some(REQUEST_TIMEOUT));
        let bucket = Arc::new(bucket);
        buckets.insert(name.to_string(), bucket.clone());
        Ok(bucket)
    }

    fn object(&self, bucket: &str, key: &str) -> Result<Arc<Bucket>, StorageError> {
        let handle = self.bucket(bucket)?;
        Self::validate_key(key)?;
        Ok(handle)
    }

    /// Whether `bucket` exists (and these credentials may list it).
    pub async fn bucket_exists(&self, bucket: &str) -> Result<bool, StorageError> {
        let handle = self.bucket(bucket)?;
        match handle
            .list_page(String::new(), None, None, None, Some(1))
            .await
        {
            Ok(_) => Ok(true),
            Err(e) => match error::map(e, "checking", bucket, None) {
                StorageError::NoSuchBucket(_) => Ok(false),
                other => Err(other),
            },
        }
    }

    /// Creates `bucket` unless it exists already.
    pub async fn ensure_bucket(&self, bucket: &str) -> Result<(), StorageError> {
        Self::validate_bucket_name(bucket)?;
        if self.bucket_exists(bucket).await? {
            return Ok(());
        }
        let region = self.inner.region.clone();
        let credentials = self.inner.credentials.clone();
        let config = BucketConfiguration::default();
        let created = if self.inner.path_style {
            Bucket::create_with_path_style(bucket, region, credentials, config).await
        } else {
            Bucket::create(bucket, region, credentials, config).await
        };
        match created {
            Ok(_) => Ok(()),
            // Created meanwhile by someone else using these credentials.
            Err(S3Error::HttpFailWithBody(_, body))
                if xml::ErrorBody::parse(&body).code.as_deref()
                    == Some("BucketAlreadyOwnedByYou") =>
            {
                Ok(())
            }
            Err(e) => Err(error::map(e, "creating", bucket, None)),
        }
    }

    /// The object's size and content type; `Ok(None)` when the bucket exists
    /// but the object does not, [`StorageError::NoSuchBucket`] when the bucket
    /// does not.
    pub async fn head(&self, bucket: &str, key: &str) -> Result<Option<ObjectMeta>, StorageError> {
        let handle = self.object(bucket, key)?;
        match handle.head_object(key).await {
            Ok((head, _status)) => {
                let size = head
                    .content_length
                    .and_then(|len| u64::try_from(len).ok())
                    .ok_or_else(|| {
                        StorageError::S3(format!(
                            "reading the metadata of 's3://{bucket}/{key}' failed: S3 sent no Content-Length"
                        ))
                    })?;
                Ok(Some(ObjectMeta {
                    size,
                    content_type: head.content_type,
                }))
            }
            // A HEAD response has no body, so a missing object and a missing
            // bucket look alike: ask about the bucket.
            Err(e) if error::http_status(&e) == Some(404) => {
                if self.bucket_exists(bucket).await? {
                    Ok(None)
                } else {
                    Err(StorageError::NoSuchBucket(bucket.to_string()))
                }
            }
            Err(e) => Err(error::map(e, "reading the metadata of", bucket, Some(key))),
        }
    }

    /// Streams the whole object.
    pub async fn get_stream(&self, bucket: &str, key: &str) -> Result<ByteStream, StorageError> {
        self.get_stream_from(bucket, key, 0).await
    }

    /// Streams the object from byte `offset` to its end, to resume a read.
    /// `offset` equal to the size gives an empty stream; beyond it, an error.
    pub async fn get_stream_from(
        &self,
        bucket: &str,
        key: &str,
        offset: u64,
    ) -> Result<ByteStream, StorageError> {
        let handle = self.object(bucket, key)?;
        // A clone shares the HTTP client. It has no overall deadline, which
        // would cut off a long download; `idle_timeout` guards each chunk.
        let mut streaming = (*handle).clone();
        streaming.set_request_timeout(None);
        if offset > 0 {
            streaming.add_header("range", &format!("bytes={offset}-"));
        }
        let response =
            match tokio::time::timeout(REQUEST_TIMEOUT, streaming.get_object_stream(key)).await {
                Ok(Ok(response)) => response,
                Ok(Err(e)) if offset > 0 && error::http_status(&e) == Some(416) => {
                    return self.past_the_end(bucket, key, offset).await;
                }
                Ok(Err(e)) => return Err(error::map(e, "reading", bucket, Some(key))),
                Err(_) => {
                    return Err(StorageError::S3(format!(
                        "reading 's3://{bucket}/{key}' failed: S3 did not answer within {} s",
                        REQUEST_TIMEOUT.as_secs()
                    )))
                }
            };
        let status = response.status_code;
        let what = format!("reading 's3://{bucket}/{key}'");
        let mut reader = idle_timeout(response.bytes, what);
        if offset > 0 && status == 200 {
            // The server ignored the range and sent the whole object: skip.
            let skipped =
                tokio::io::copy(&mut (&mut reader).take(offset), &mut tokio::io::sink()).await?;
            if skipped < offset {
                return self.past_the_end(bucket, key, offset).await;
            }
        }
        Ok(reader)
    }

    /// A range starting at `offset` could not be served: empty when `offset`
    /// is exactly the object's size, an error otherwise.
    async fn past_the_end(
        &self,
        bucket: &str,
        key: &str,
        offset: u64,
    ) -> Result<ByteStream, StorageError> {
        match self.head(bucket, key).await? {
            Some(meta) if meta.size == offset => Ok(Box::new(tokio::io::empty())),
            Some(meta) => Err(StorageError::S3(format!(
                "reading 's3://{bucket}/{key}' from byte {offset} failed: the object has only {} bytes",
                meta.size
            ))),
            None => Err(StorageError::NotFound {
                bucket: bucket.to_string(),
                key: key.to_string(),
            }),
        }
    }

    /// Uploads everything `reader` yields and returns the number of bytes
    /// written. Up to 8 MiB goes up in one PUT; more becomes a multipart upload
    /// of 8 MiB parts, two in flight while the next is read (at most three part
    /// buffers in memory). All or nothing: if the reader fails, a part or the
    /// completion fails, or this future is dropped, the multipart upload is
    /// aborted and no object (partial or complete) becomes visible.
    pub async fn put_stream(
        &self,
        bucket: &str,
        key: &str,
        reader: &mut (dyn tokio::io::AsyncRead + Send + Unpin),
        content_type: &str,
    ) -> Result<u64, StorageError> {
        let handle = self.object(bucket, key)?;
        upload::put_stream(&handle, bucket, key, reader, content_type).await
    }

    /// Uploads `bytes` in one PUT.
    pub async fn put_bytes(
        &self,
        bucket: &str,
        key: &str,
        bytes: &[u8],
        content_type: &str,
    ) -> Result<(), StorageError> {
        let handle = self.object(bucket, key)?;
        handle
            .put_object_with_content_type(key, bytes, content_type)
            .await
            .map(drop)
            .map_err(|e| error::map(e, "writing", bucket, Some(key)))
    }

    /// Deletes the object. Deleting a missing object succeeds; a missing
    /// bucket is [`StorageError::NoSuchBucket`].
    pub async fn delete(&self, bucket: &str, key: &str) -> Result<(), StorageError> {
        let handle = self.object(bucket, key)?;
        match handle.delete_object(key).await {
            Ok(_) => Ok(()),
            Err(e) => match error::map(e, "deleting", bucket, Some(key)) {
                StorageError::NotFound { .. } => Ok(()),
                other => Err(other),
            },
        }
    }

    /// A URL that lets anyone holding it PUT this object (for example
    /// `curl -X PUT --upload-file f URL`) for `expires_secs` seconds (at most
    /// 604800, a week). Async because `rust-s3` 0.38 may refresh credentials
    /// first; no request is sent to S3.
    pub async fn presign_put(
        &self,
        bucket: &str,
        key: &str,
        expires_secs: u32,
    ) -> Result<String, StorageError> {
        let handle = self.object(bucket, key)?;
        handle
            .presign_put(key, expires_secs, None, None)
            .await
            .map_err(|e| error::map(e, "presigning a PUT of", bucket, Some(key)))
    }

    /// A URL that lets anyone holding it GET this object for `expires_secs`
    /// seconds (at most 604800). Async for the same reason as
    /// [`Storage::presign_put`].
    pub async fn presign_get(
        &self,
        bucket: &str,
        key: &str,
        expires_secs: u32,
    ) -> Result<String, StorageError> {
        let handle = self.object(bucket, key)?;
        handle
            .presign_get(key, expires_secs, None)
            .await
            .map_err(|e| error::map(e, "presigning a GET of", bucket, Some(key)))
    }

    /// Multipart uploads under `prefix` that were started and neither
    /// completed nor aborted (they cost storage but are invisible as objects).
    pub async fn pending_uploads(
        &self,
        bucket: &str,
        prefix: &str,
    ) -> Result<Vec<PendingUpload>, StorageError> {
        use s3::command::Command;
        use s3::request::tokio_backend::ReqwestRequest;
        use s3::request::Request as _;

        // `rust-s3`'s own listing insists on a `StorageClass` that SeaweedFS
        // leaves out, so the XML is read by `xml::uploads_page`.
        let handle = self.bucket(bucket)?;
        let failed = |e| error::map(e, "listing the multipart uploads of", bucket, None);
        let mut found = Vec::new();
        let (mut key_marker, mut upload_id_marker) = (None, None);
        loop {
            let command = Command::ListMultipartUploads {
                prefix: Some(prefix),
                delimiter: None,
                key_marker: key_marker.take(),
                upload_id_marker: upload_id_marker.take(),
                max_uploads: None,
            };
            let request = ReqwestRequest::new(&handle, "/", command)
                .await
                .map_err(failed)?;
            let response = request.response_data(false).await.map_err(failed)?;
            let body = String::from_utf8_lossy(response.as_slice());
            let page = xml::uploads_page(&body).map_err(|e| {
                StorageError::S3(format!(
                    "listing the multipart uploads of bucket '{bucket}' failed: \
                     S3 answered with a listing that cannot be read ({e})"
                ))
            })?;
            let progressed = !page.uploads.is_empty();
            found.extend(page.uploads);
            match page.next {
                Some((key, upload_id)) if progressed => {
                    key_marker = Some(key);
                    upload_id_marker = upload_id;
                }
                _ => break,
            }
        }
        Ok(found)
    }

    /// Starts a multipart upload of `key` and leaves it unfinished, as a
    /// process killed mid-upload does. Returns its upload id. For tests.
    #[cfg(feature = "testing")]
    pub async fn start_unfinished_upload(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<String, StorageError> {
        let handle = self.object(bucket, key)?;
        handle
            .initiate_multipart_upload(key, "application/octet-stream")
            .await
            .map(|started| started.upload_id)
            .map_err(|e| error::map(e, "starting an upload of", bucket, Some(key)))
    }

    /// Deletes an empty bucket. For tests.
    #[cfg(feature = "testing")]
    pub async fn delete_bucket(&self, bucket: &str) -> Result<(), StorageError> {
        let handle = self.bucket(bucket)?;
        handle
            .delete()
            .await
            .map(drop)
            .map_err(|e| error::map(e, "deleting", bucket, None))?;
        self.inner
            .buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(bucket);
        Ok(())
    }

    /// Aborts a pending multipart upload, freeing its parts.
    pub async fn abort_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<(), StorageError> {
        let handle = self.object(bucket, key)?;
        handle
            .abort_upload(key, upload_id)
            .await
            .map_err(|e| error::map(e, "aborting the upload of", bucket, Some(key)))
    }
}

/// Wraps the chunk stream into an `AsyncRead` that fails with `TimedOut` when
/// the next chunk takes longer than [`REQUEST_TIMEOUT`] to arrive. Time spent
/// by the caller between reads does not count.
fn idle_timeout(bytes: s3::request::DataStream, what: String) -> ByteStream {
    let what: Arc<str> = what.into();
    let stream = futures::stream::unfold(Some(bytes), move |state| {
        let what = what.clone();
        async move {
            let mut bytes = state?;
            match tokio::time::timeout(REQUEST_TIMEOUT, bytes.next()).await {
                Ok(Some(Ok(chunk))) => Some((Ok(chunk), Some(bytes))),
                Ok(Some(Err(e))) => {
                    Some((Err(io::Error::other(format!("{what} failed: {e}"))), None))
                }
                Ok(None) => None,
                Err(_) => Some((
                    Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("{what} failed: no data for {} s", REQUEST_TIMEOUT.as_secs()),
                    )),
                    None,
                )),
            }
        }
    });
    Box::new(StreamReader::new(Box::pin(stream)))
}
