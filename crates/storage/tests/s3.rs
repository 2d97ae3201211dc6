//! Tests against a real S3 server (SeaweedFS from `scripts/stack.sh up s3`),
//! configured by `S3_ENDPOINT`, `S3_REGION`, `S3_ACCESS_KEY_ID`,
//! `S3_SECRET_ACCESS_KEY`, `S3_PATH_STYLE` and `S3_BUCKET`, with the local
//! stack's values as defaults. Every test works under its own random prefix
//! and removes what it wrote.

#![allow(clippy::unwrap_used)]

use std::pin::Pin;
use std::process::Command;
use std::task::{Context, Poll};
use std::time::Duration;

use connectra_storage::{ObjectMeta, S3Config, Storage, StorageError};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

const MIB: usize = 1024 * 1024;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| default.to_string())
}

fn config() -> S3Config {
    S3Config {
        endpoint: Some(env_or("S3_ENDPOINT", "http://127.0.0.1:8333")),
        region: env_or("S3_REGION", "us-east-1"),
        access_key_id: Some(env_or("S3_ACCESS_KEY_ID", "testaccess")),
        secret_access_key: Some(env_or("S3_SECRET_ACCESS_KEY", "testsecret123")),
        path_style: env_or("S3_PATH_STYLE", "true") != "false",
    }
}

fn storage() -> Storage {
    Storage::new(&config()).unwrap()
}

fn bucket() -> String {
    env_or("S3_BUCKET", "connectra")
}

/// A fresh prefix for one test.
fn prefix() -> String {
    format!("storage-tests/{}/", uuid::Uuid::new_v4())
}

/// A bucket name that exists nowhere.
fn missing_bucket() -> String {
    format!("connectra-missing-{}", uuid::Uuid::new_v4().simple())
}

/// Deterministic bytes that differ from part to part (xorshift).
fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

async fn read_all(mut reader: connectra_storage::ByteStream) -> Vec<u8> {
    let mut out = Vec::new();
    reader.read_to_end(&mut out).await.unwrap();
    out
}

/// Removes every object and pending upload the test left under `prefix`.
async fn clean(s: &Storage, keys: &[&str], prefix: &str) {
    for key in keys {
        s.delete(&bucket(), key).await.unwrap();
    }
    for upload in s.pending_uploads(&bucket(), prefix).await.unwrap() {
        s.abort_upload(&bucket(), &upload.key, &upload.upload_id)
            .await
            .unwrap();
    }
}

/// Yields `good` bytes of `data`, then fails with an I/O error (or, when
/// `hang` is set, never yields again).
struct FailingReader {
    data: Vec<u8>,
    pos: usize,
    good: usize,
    hang: bool,
}

impl FailingReader {
    fn new(good: usize) -> Self {
        Self {
            data: data(good, 99),
            pos: 0,
            good,
            hang: false,
        }
    }
}

impl AsyncRead for FailingReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.pos >= self.good {
            if self.hang {
                return Poll::Pending;
            }
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "the source went away",
            )));
        }
        let n = (self.good - self.pos).min(buf.remaining()).min(64 * 1024);
        let start = self.pos;
        buf.put_slice(&self.data[start..start + n]);
        self.pos += n;
        Poll::Ready(Ok(()))
    }
}

fn curl(args: &[&str]) -> Vec<u8> {
    let out = Command::new("curl")
        .args(["--silent", "--show-error", "--fail"])
        .args(args)
        .output()
        .expect("curl runs");
    assert!(
        out.status.success(),
        "curl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[tokio::test]
async fn a_12_mib_multipart_upload_reads_back_byte_for_byte_and_from_an_offset() {
    let s = storage();
    let p = prefix();
    let key = format!("{p}big.csv");
    let body = data(12 * MIB + 12_345, 1);

    let mut reader = std::io::Cursor::new(body.clone());
    let written = s
        .put_stream(&bucket(), &key, &mut reader, "text/csv")
        .await
        .unwrap();
    assert_eq!(written, body.len() as u64);

    assert_eq!(
        s.head(&bucket(), &key).await.unwrap(),
        Some(ObjectMeta {
            size: body.len() as u64,
            content_type: Some("text/csv".into())
        })
    );
    let got = read_all(s.get_stream(&bucket(), &key).await.unwrap()).await;
    assert!(
        got == body,
        "the object read back differs from what was written"
    );

    // Resume from an offset inside the second part.
    let offset = 9 * MIB as u64 + 7;
    let tail = read_all(s.get_stream_from(&bucket(), &key, offset).await.unwrap()).await;
    assert!(tail == body[offset as usize..], "the tail differs");
    // Offset 0 is the whole object; offset == size is empty, not an error.
    let all = read_all(s.get_stream_from(&bucket(), &key, 0).await.unwrap()).await;
    assert_eq!(all.len(), body.len());
    let end = s
        .get_stream_from(&bucket(), &key, body.len() as u64)
        .await
        .unwrap();
    assert!(read_all(end).await.is_empty());
    // Beyond the end is an error that says so.
    let err = s
        .get_stream_from(&bucket(), &key, body.len() as u64 + 1)
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("has only"), "{err}");

    assert!(s.pending_uploads(&bucket(), &p).await.unwrap().is_empty());
    clean(&s, &[&key], &p).await;
    assert_eq!(s.head(&bucket(), &key).await.unwrap(), None);
}

#[tokio::test]
async fn small_streams_and_byte_puts_round_trip_with_their_content_type() {
    let s = storage();
    let p = prefix();
    let (a, b, empty) = (format!("{p}a.csv"), format!("{p}b.json"), format!("{p}e"));
    let small = data(100_000, 2);
    let written = s
        .put_stream(&bucket(), &a, &mut small.as_slice(), "text/csv")
        .await
        .unwrap();
    assert_eq!(written, 100_000);
    assert!(read_all(s.get_stream(&bucket(), &a).await.unwrap()).await == small);

    s.put_bytes(&bucket(), &b, br#"{"ok":true}"#, "application/json")
        .await
        .unwrap();
    let meta = s.head(&bucket(), &b).await.unwrap().unwrap();
    assert_eq!(meta.size, 11);
    assert_eq!(meta.content_type.as_deref(), Some("application/json"));
    assert_eq!(
        read_all(s.get_stream(&bucket(), &b).await.unwrap()).await,
        br#"{"ok":true}"#
    );

    // An empty input is an empty object.
    let written = s
        .put_stream(&bucket(), &empty, &mut tokio::io::empty(), "text/plain")
        .await
        .unwrap();
    assert_eq!(written, 0);
    assert_eq!(s.head(&bucket(), &empty).await.unwrap().unwrap().size, 0);
    assert!(read_all(s.get_stream(&bucket(), &empty).await.unwrap())
        .await
        .is_empty());
    assert!(
        read_all(s.get_stream_from(&bucket(), &empty, 0).await.unwrap())
            .await
            .is_empty()
    );

    clean(&s, &[&a, &b, &empty], &p).await;
}

#[tokio::test]
async fn head_tells_present_missing_object_and_missing_bucket_apart() {
    let s = storage();
    let p = prefix();
    let key = format!("{p}here.txt");
    s.put_bytes(&bucket(), &key, b"hello", "text/plain")
        .await
        .unwrap();
    assert_eq!(
        s.head(&bucket(), &key).await.unwrap(),
        Some(ObjectMeta {
            size: 5,
            content_type: Some("text/plain".into())
        })
    );
    assert_eq!(
        s.head(&bucket(), &format!("{p}nothere.txt")).await.unwrap(),
        None
    );
    let nb = missing_bucket();
    match s.head(&nb, "a.csv").await {
        Err(StorageError::NoSuchBucket(b)) => assert_eq!(b, nb),
        other => panic!("expected NoSuchBucket, got {other:?}"),
    }
    clean(&s, &[&key], &p).await;
}

#[tokio::test]
async fn reading_a_missing_object_or_bucket_gives_typed_errors_with_sentences() {
    let s = storage();
    let p = prefix();
    let key = format!("{p}a.csv");
    let err = s.get_stream(&bucket(), &key).await.err().unwrap();
    match &err {
        StorageError::NotFound { bucket: b, key: k } => {
            assert_eq!((b.as_str(), k.as_str()), (bucket().as_str(), key.as_str()))
        }
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        format!("object 's3://{}/{key}' does not exist", bucket())
    );
    let err = s.get_stream_from(&bucket(), &key, 10).await.err().unwrap();
    assert!(matches!(err, StorageError::NotFound { .. }), "{err:?}");

    let nb = missing_bucket();
    let err = s.get_stream(&nb, "a.csv").await.err().unwrap();
    assert!(
        matches!(&err, StorageError::NoSuchBucket(b) if *b == nb),
        "{err:?}"
    );
    assert_eq!(err.to_string(), format!("bucket '{nb}' does not exist"));
    assert!(!s.bucket_exists(&nb).await.unwrap());
    assert!(s.bucket_exists(&bucket()).await.unwrap());

    // Deleting a missing object is fine; in a missing bucket it is not.
    s.delete(&bucket(), &key).await.unwrap();
    let err = s.delete(&nb, "a.csv").await.err().unwrap();
    assert!(matches!(err, StorageError::NoSuchBucket(_)), "{err:?}");
    // (No write into the missing bucket: SeaweedFS creates buckets on PUT.)
    assert!(!s.bucket_exists(&nb).await.unwrap());
}

async fn assert_failed_upload_leaves_nothing(good: usize) {
    let s = storage();
    let p = prefix();
    let key = format!("{p}broken.csv");
    let mut reader = FailingReader::new(good);
    let err = s
        .put_stream(&bucket(), &key, &mut reader, "text/csv")
        .await
        .err()
        .unwrap();
    match &err {
        StorageError::Io(io) => assert_eq!(io.kind(), std::io::ErrorKind::ConnectionReset),
        other => panic!("expected Io, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("'s3://{}/{key}'", bucket())) && msg.contains("the source went away"),
        "{msg}"
    );
    assert_eq!(s.head(&bucket(), &key).await.unwrap(), None);
    assert_eq!(s.pending_uploads(&bucket(), &p).await.unwrap(), vec![]);
    clean(&s, &[], &p).await;
}

#[tokio::test]
async fn a_reader_failing_after_6_mib_leaves_no_object_and_no_pending_upload() {
    assert_failed_upload_leaves_nothing(6 * MIB).await;
}

#[tokio::test]
async fn a_reader_failing_after_parts_were_uploaded_aborts_the_multipart_upload() {
    // Two full 8 MiB parts are uploaded before the reader fails in the third.
    assert_failed_upload_leaves_nothing(20 * MIB).await;
}

#[tokio::test]
async fn dropping_an_upload_midway_aborts_it() {
    let s = storage();
    let p = prefix();
    let key = format!("{p}cancelled.csv");
    let mut reader = FailingReader::new(17 * MIB);
    reader.hang = true;
    let b = bucket();
    let upload = s.put_stream(&b, &key, &mut reader, "text/csv");
    assert!(tokio::time::timeout(Duration::from_secs(3), upload)
        .await
        .is_err());
    // The abort runs in a spawned task: give it a moment.
    let mut pending = s.pending_uploads(&bucket(), &p).await.unwrap();
    for _ in 0..50 {
        if pending.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        pending = s.pending_uploads(&bucket(), &p).await.unwrap();
    }
    assert_eq!(pending, vec![]);
    assert_eq!(s.head(&bucket(), &key).await.unwrap(), None);
    clean(&s, &[], &p).await;
}

#[tokio::test]
async fn pending_uploads_lists_an_unfinished_upload_until_it_is_aborted() {
    // Proves that the "no pending upload" checks above can see one.
    let s = storage();
    let p = prefix();
    let key = format!("{p}unfinished.csv");
    let upload_id = s.start_unfinished_upload(&bucket(), &key).await.unwrap();
    let pending = s.pending_uploads(&bucket(), &p).await.unwrap();
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0].key, key);
    assert_eq!(pending[0].upload_id, upload_id);
    s.abort_upload(&bucket(), &key, &upload_id).await.unwrap();
    assert_eq!(s.pending_uploads(&bucket(), &p).await.unwrap(), vec![]);
}

#[tokio::test]
async fn a_presigned_put_accepts_a_plain_curl_upload_and_a_presigned_get_serves_it() {
    let s = storage();
    let p = prefix();
    let key = format!("{p}contacts.csv");
    let content = b"first_name,email\nAda,ada@example.com\n".repeat(1000);
    let file = std::env::temp_dir().join(format!("connectra-presign-{}.csv", uuid::Uuid::new_v4()));
    std::fs::write(&file, &content).unwrap();

    let put_url = s.presign_put(&bucket(), &key, 3600).await.unwrap();
    assert!(put_url.contains("X-Amz-Signature="), "{put_url}");
    assert!(!put_url.contains("testsecret123"));
    curl(&[
        "-X",
        "PUT",
        "-H",
        "Content-Type: text/csv",
        "--upload-file",
        file.to_str().unwrap(),
        &put_url,
    ]);
    std::fs::remove_file(&file).unwrap();

    assert_eq!(
        s.head(&bucket(), &key).await.unwrap().unwrap().size,
        content.len() as u64
    );
    assert!(read_all(s.get_stream(&bucket(), &key).await.unwrap()).await == content);

    let get_url = s.presign_get(&bucket(), &key, 600).await.unwrap();
    assert!(curl(&[&get_url]) == content);

    // A tampered signature is refused.
    let bad = get_url.replace("X-Amz-Signature=", "X-Amz-Signature=0");
    let status = Command::new("curl")
        .args(["--silent", "--fail", "-o", "/dev/null", &bad])
        .status()
        .unwrap();
    assert!(!status.success());

    // More than a week is refused before anything is signed.
    assert!(s.presign_get(&bucket(), &key, 604_801).await.is_err());
    clean(&s, &[&key], &p).await;
}

#[tokio::test]
async fn invalid_bucket_names_are_rejected_without_a_request() {
    for ok in ["connectra", "abc", "my-bucket.v2", "a1b", &"a".repeat(63)] {
        Storage::validate_bucket_name(ok).unwrap();
    }
    for bad in [
        "",
        "ab",
        &"a".repeat(64),
        "Connectra",
        "my_bucket",
        "-bucket",
        "bucket-",
        ".bucket",
        "bu..cket",
        "bu.-cket",
        "192.168.1.1",
        "buck et",
        "bücket",
        "s3://connectra",
    ] {
        let err = Storage::validate_bucket_name(bad).err().unwrap();
        assert!(
            matches!(&err, StorageError::InvalidBucketName(b) if b == bad),
            "{bad}: {err:?}"
        );
        assert!(err.to_string().contains("is not a valid S3 bucket name"));
    }
    // Every operation checks the name first.
    let s = storage();
    let err = s.head("Bad_Bucket", "a.csv").await.err().unwrap();
    assert!(matches!(err, StorageError::InvalidBucketName(_)), "{err:?}");
    let err = s.presign_put("UPPER", "a.csv", 60).await.err().unwrap();
    assert!(matches!(err, StorageError::InvalidBucketName(_)), "{err:?}");
    let err = s.ensure_bucket("x").await.err().unwrap();
    assert!(matches!(err, StorageError::InvalidBucketName(_)), "{err:?}");
    // And keys must not be empty.
    let err = s.get_stream(&bucket(), "").await.err().unwrap();
    assert!(matches!(err, StorageError::InvalidKey(_)), "{err:?}");
}

#[tokio::test]
async fn ensure_bucket_creates_once_and_is_idempotent() {
    let s = storage();
    s.ensure_bucket(&bucket()).await.unwrap();
    s.ensure_bucket(&bucket()).await.unwrap();

    let fresh = format!(
        "connectra-test-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    assert!(!s.bucket_exists(&fresh).await.unwrap());
    s.ensure_bucket(&fresh).await.unwrap();
    assert!(s.bucket_exists(&fresh).await.unwrap());
    s.ensure_bucket(&fresh).await.unwrap();
    s.put_bytes(&fresh, "k", b"v", "text/plain").await.unwrap();
    assert_eq!(s.head(&fresh, "k").await.unwrap().unwrap().size, 1);
    s.delete(&fresh, "k").await.unwrap();

    s.delete_bucket(&fresh).await.unwrap();
    assert!(!s.bucket_exists(&fresh).await.unwrap());
}

#[test]
fn debug_output_shows_no_secret_and_config_errors_are_sentences() {
    let s = storage();
    let shown = format!("{s:?}");
    assert!(shown.contains("Storage"), "{shown}");
    assert!(
        !shown.contains(&config().secret_access_key.unwrap()),
        "{shown}"
    );
    assert!(!shown.contains(&config().access_key_id.unwrap()), "{shown}");

    let mut cfg = config();
    cfg.secret_access_key = None;
    let err = Storage::new(&cfg).err().unwrap();
    assert!(matches!(err, StorageError::Config(_)), "{err:?}");
    let mut cfg = config();
    cfg.endpoint = Some("127.0.0.1:8333".into());
    let err = Storage::new(&cfg).err().unwrap();
    assert!(err.to_string().contains("http://"), "{err}");
}
