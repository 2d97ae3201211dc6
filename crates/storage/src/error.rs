//! [`StorageError`] and the mapping from `rust-s3`'s errors.

use s3::error::S3Error;

use crate::xml::ErrorBody;

/// What can go wrong talking to S3. Each message is a lower-case sentence that
/// names the bucket, and the key where there is one.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The bucket exists but the object does not.
    #[error("object 's3://{bucket}/{key}' does not exist")]
    NotFound { bucket: String, key: String },
    /// The bucket does not exist.
    #[error("bucket '{0}' does not exist")]
    NoSuchBucket(String),
    /// The name breaks S3's bucket naming rules; no request was sent.
    #[error(
        "'{0}' is not a valid S3 bucket name: use 3 to 63 lower-case letters, digits, '.' or '-', \
         starting and ending with a letter or digit"
    )]
    InvalidBucketName(String),
    /// The object key is empty or too long (S3 allows 1 to 1024 bytes); no request was sent.
    #[error("'{0}' is not a valid S3 object key: it must be 1 to 1024 bytes long")]
    InvalidKey(String),
    /// The [`S3Config`](crate::S3Config) cannot be used.
    #[error("invalid S3 configuration: {0}")]
    Config(String),
    /// Reading the caller's data (an upload's reader) or the network stream failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Any other failure reported by S3 or on the way to it; the sentence says
    /// what was attempted on which object.
    #[error("{0}")]
    S3(String),
}

/// The HTTP status of a failed request, when S3 answered at all.
pub(crate) fn http_status(e: &S3Error) -> Option<u16> {
    match e {
        S3Error::HttpFailWithBody(status, _) => Some(*status),
        _ => None,
    }
}

/// Maps a `rust-s3` error into a [`StorageError`]. `what` is the action in
/// words ("reading", "writing", …) and `key` the object, if any.
pub(crate) fn map(e: S3Error, what: &str, bucket: &str, key: Option<&str>) -> StorageError {
    let target = match key {
        Some(key) => format!("'s3://{bucket}/{key}'"),
        None => format!("bucket '{bucket}'"),
    };
    match e {
        S3Error::HttpFailWithBody(status, body) => {
            let ErrorBody { code, message } = ErrorBody::parse(&body);
            match (code.as_deref(), key) {
                (Some("NoSuchBucket"), _) => StorageError::NoSuchBucket(bucket.to_string()),
                (Some("NoSuchKey"), Some(key)) => StorageError::NotFound {
                    bucket: bucket.to_string(),
                    key: key.to_string(),
                },
                (None, Some(key)) if status == 404 => StorageError::NotFound {
                    bucket: bucket.to_string(),
                    key: key.to_string(),
                },
                (None, None) if status == 404 => StorageError::NoSuchBucket(bucket.to_string()),
                (code, _) => {
                    let detail = match (code, message) {
                        (Some(code), Some(message)) => format!(" ({code}: {message})"),
                        (Some(code), None) => format!(" ({code})"),
                        _ => String::new(),
                    };
                    StorageError::S3(format!(
                        "{what} {target} failed: S3 answered HTTP {status}{detail}"
                    ))
                }
            }
        }
        S3Error::Io(io) => StorageError::Io(std::io::Error::new(
            io.kind(),
            format!("{what} {target} failed: {io}"),
        )),
        other => StorageError::S3(format!("{what} {target} failed: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_in_xml_bodies_are_recognised() {
        let body = "<?xml version=\"1.0\"?><Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message></Error>";
        assert_eq!(ErrorBody::parse(body).code.as_deref(), Some("NoSuchKey"));
        assert_eq!(ErrorBody::parse("").code, None);
        assert_eq!(ErrorBody::parse("<Code>unterminated").code, None);
        let e = map(
            S3Error::HttpFailWithBody(404, body.into()),
            "reading",
            "b",
            Some("k"),
        );
        assert_eq!(e.to_string(), "object 's3://b/k' does not exist");
        let e = map(
            S3Error::HttpFailWithBody(404, "<Error><Code>NoSuchBucket</Code></Error>".into()),
            "reading",
            "nope",
            Some("k"),
        );
        assert_eq!(e.to_string(), "bucket 'nope' does not exist");
        let e = map(
            S3Error::HttpFailWithBody(
                403,
                "<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>".into(),
            ),
            "writing",
            "b",
            Some("k"),
        );
        assert_eq!(
            e.to_string(),
            "writing 's3://b/k' failed: S3 answered HTTP 403 (AccessDenied: Access Denied)"
        );
        let e = map(
            S3Error::HttpFailWithBody(502, "<html><body>Bad Gateway</body></html>".into()),
            "reading",
            "b",
            Some("k"),
        );
        assert_eq!(
            e.to_string(),
            "reading 's3://b/k' failed: S3 answered HTTP 502"
        );
        let e = map(
            S3Error::HttpFailWithBody(404, "not xml".into()),
            "checking",
            "b",
            None,
        );
        assert_eq!(e.to_string(), "bucket 'b' does not exist");
    }
}
