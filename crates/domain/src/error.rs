//! Error codes that users see, in the guide's `ERR_UPPER_SNAKE: sentence` form.

use std::fmt;

/// Every error code the API can return. The guide's four codes are used verbatim;
/// the others follow the same form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The guide's: `job_type` is absent.
    MissingJobType,
    /// The guide's: `job_data` is absent.
    MissingJobData,
    /// The guide's: `retry_count` is negative, fractional or not a number.
    InvalidRetryCount,
    /// The guide's: an export without `select_columns`.
    MissingSelectColumns,
    /// `job_type` names no registered job type.
    InvalidJobType,
    /// `job_data` has the wrong shape for its job type.
    InvalidJobData,
    /// An insert job without `s3_key`.
    MissingS3Key,
    /// A bucket outside `S3_ALLOWED_BUCKETS`.
    BucketNotAllowed,
    /// `service` is neither `contact` nor `company`.
    UnknownService,
    /// A VQL field that the service's catalogue does not have.
    UnknownField,
    /// A VQL query that is malformed in any other way.
    InvalidVql,
    /// `retry_interval` is negative, fractional or not a number.
    InvalidRetryInterval,
    /// A list filter (`status`, `limit`, …) that cannot be used.
    InvalidFilter,
    /// A body that is not JSON, or JSON of the wrong shape.
    InvalidBody,
    /// A request body over the size limit.
    PayloadTooLarge,
    /// A body sent with a content type other than JSON.
    UnsupportedMediaType,
    /// A known path called with a method it does not take.
    MethodNotAllowed,
    /// Missing or wrong `X-API-Key`.
    Unauthorized,
    /// No job (or other resource) with that id.
    NotFound,
    /// A path parameter that is not a uuid.
    InvalidUuid,
    /// An upload `filename` that is missing, too long, or holds a path separator or control character.
    InvalidFilename,
    /// The request conflicts with the resource's state (e.g. cancelling a finished job).
    Conflict,
    /// A dependency (database, S3, search) is unavailable.
    Unavailable,
    /// A failure that is not the client's fault.
    Internal,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MissingJobType => "ERR_MISSING_JOB_TYPE",
            Self::MissingJobData => "ERR_MISSING_JOB_DATA",
            Self::InvalidRetryCount => "ERR_INVALID_RETRY_COUNT",
            Self::MissingSelectColumns => "ERR_MISSING_SELECT_COLUMNS",
            Self::InvalidJobType => "ERR_INVALID_JOB_TYPE",
            Self::InvalidJobData => "ERR_INVALID_JOB_DATA",
            Self::MissingS3Key => "ERR_MISSING_S3_KEY",
            Self::BucketNotAllowed => "ERR_BUCKET_NOT_ALLOWED",
            Self::UnknownService => "ERR_UNKNOWN_SERVICE",
            Self::UnknownField => "ERR_UNKNOWN_FIELD",
            Self::InvalidVql => "ERR_INVALID_VQL",
            Self::InvalidRetryInterval => "ERR_INVALID_RETRY_INTERVAL",
            Self::InvalidFilter => "ERR_INVALID_FILTER",
            Self::InvalidBody => "ERR_INVALID_BODY",
            Self::PayloadTooLarge => "ERR_PAYLOAD_TOO_LARGE",
            Self::UnsupportedMediaType => "ERR_UNSUPPORTED_MEDIA_TYPE",
            Self::MethodNotAllowed => "ERR_METHOD_NOT_ALLOWED",
            Self::Unauthorized => "ERR_UNAUTHORIZED",
            Self::NotFound => "ERR_NOT_FOUND",
            Self::InvalidUuid => "ERR_INVALID_UUID",
            Self::InvalidFilename => "ERR_INVALID_FILENAME",
            Self::Conflict => "ERR_CONFLICT",
            Self::Unavailable => "ERR_UNAVAILABLE",
            Self::Internal => "ERR_INTERNAL",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validation failure: a code and a sentence that names the problem.
/// Displays as `ERR_CODE: sentence`, the guide's `error` string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct DomainError {
    pub code: ErrorCode,
    pub message: String,
}

impl DomainError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// The guide's sentence for `ERR_MISSING_JOB_TYPE`.
    pub fn missing_job_type() -> Self {
        Self::new(
            ErrorCode::MissingJobType,
            "the 'job_type' field is required; specify a valid job type such as 'insert_csv_file' or 'export_csv_file'",
        )
    }

    /// The guide's sentence for `ERR_MISSING_JOB_DATA`.
    pub fn missing_job_data() -> Self {
        Self::new(
            ErrorCode::MissingJobData,
            "the 'job_data' field is required; include the necessary payload for job execution",
        )
    }

    /// The guide's sentence for `ERR_INVALID_RETRY_COUNT`.
    pub fn invalid_retry_count() -> Self {
        Self::new(
            ErrorCode::InvalidRetryCount,
            "'retry_count' must be a non-negative integer; use 0 for no retries or a positive number for retry attempts",
        )
    }

    /// The guide's sentence for `ERR_MISSING_SELECT_COLUMNS`.
    pub fn missing_select_columns() -> Self {
        Self::new(
            ErrorCode::MissingSelectColumns,
            "'select_columns' is required for export operations; specify at least one column to include in the output",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guide_errors_display_exactly_as_the_guide_prints_them() {
        assert_eq!(
            DomainError::missing_job_type().to_string(),
            "ERR_MISSING_JOB_TYPE: the 'job_type' field is required; specify a valid job type such as 'insert_csv_file' or 'export_csv_file'"
        );
        assert_eq!(
            DomainError::invalid_retry_count().to_string(),
            "ERR_INVALID_RETRY_COUNT: 'retry_count' must be a non-negative integer; use 0 for no retries or a positive number for retry attempts"
        );
    }
}
