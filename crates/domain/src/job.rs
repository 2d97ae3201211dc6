//! Jobs: types, the seven states and their transitions, typed `job_data`,
//! `JobResponse`, and the validation of create and list requests.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{DomainError, ErrorCode};
use crate::limits::{self, MAX_RETRY_COUNT, MAX_RETRY_INTERVAL_SECS, MIN_RETRY_INTERVAL_SECS};
use crate::service::Service;
use crate::vql::{self, Purpose};

/// The built-in job type that imports a CSV from S3.
pub const INSERT_CSV_FILE: &str = "insert_csv_file";
/// The built-in job type that exports a VQL query's matches to S3.
pub const EXPORT_CSV_FILE: &str = "export_csv_file";
/// The built-in job type that rebuilds a service's OpenSearch index from
/// PostgreSQL behind its alias.
pub const REINDEX_SEARCH: &str = "reindex_search";

/// Default seconds between a failure and the next retry (the guide's default).
pub const DEFAULT_RETRY_INTERVAL_SECONDS: i32 = 30;
/// At most this many entries are kept in `job_response.runtime_errors`.
pub const MAX_RUNTIME_ERRORS: usize = 100;
/// Default and maximum page sizes of the job list.
pub const DEFAULT_LIST_LIMIT: i64 = 25;
pub const MAX_LIST_LIMIT: i64 = 100;

/// The seven job states of the guide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Open,
    InQueue,
    Processing,
    Completed,
    Failed,
    RetryInQueued,
    Retrying,
}

impl JobStatus {
    pub const ALL: [JobStatus; 7] = [
        Self::Open,
        Self::InQueue,
        Self::Processing,
        Self::Completed,
        Self::Failed,
        Self::RetryInQueued,
        Self::Retrying,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::InQueue => "in_queue",
            Self::Processing => "processing",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::RetryInQueued => "retry_in_queued",
            Self::Retrying => "retrying",
        }
    }

    /// States in which a runner holds the job under a lease.
    pub const fn is_leased(self) -> bool {
        matches!(
            self,
            Self::InQueue | Self::Processing | Self::RetryInQueued | Self::Retrying
        )
    }

    /// States in which a handler is running.
    pub const fn is_running(self) -> bool {
        matches!(self, Self::Processing | Self::Retrying)
    }

    /// The one table of allowed transitions.
    ///
    /// - first run: `open → in_queue → processing → completed | failed`
    /// - retry: `failed → retry_in_queued → retrying → completed | failed`
    /// - release (shutdown, or rescue of an expired lease): `in_queue → open`,
    ///   `processing → open`, `retry_in_queued → failed`, `retrying → failed`
    /// - cancellation: any state but `completed` → `failed`
    ///
    /// A status never "becomes" itself: writes that keep the status (a lease
    /// renewal, progress, a cancel request) are not transitions.
    pub const fn can_become(self, next: JobStatus) -> bool {
        use JobStatus::*;
        matches!(
            (self, next),
            (Open, InQueue)
                | (InQueue, Processing)
                | (InQueue, Open)
                | (Processing, Completed)
                | (Processing, Failed)
                | (Processing, Open)
                | (Failed, RetryInQueued)
                | (RetryInQueued, Retrying)
                | (RetryInQueued, Failed)
                | (Retrying, Completed)
                | (Retrying, Failed)
                | (Open, Failed)
                | (InQueue, Failed)
        )
    }
}

/// One status change that [`JobStatus::can_become`] allows. There is no way
/// to build one the table refuses, so a `const` table of transitions that
/// breaks the state machine does not compile. The persistence layer generates
/// its SQL from such tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Transition {
    from: JobStatus,
    to: JobStatus,
}

impl Transition {
    /// `from → to`.
    ///
    /// # Panics
    ///
    /// When `from` cannot become `to`; in a `const` that is a compile error.
    pub const fn new(from: JobStatus, to: JobStatus) -> Self {
        assert!(
            from.can_become(to),
            "not a transition of JobStatus::can_become"
        );
        Self { from, to }
    }

    /// `from → to` when the table allows it.
    pub const fn checked(from: JobStatus, to: JobStatus) -> Option<Self> {
        if from.can_become(to) {
            Some(Self { from, to })
        } else {
            None
        }
    }

    pub const fn from(self) -> JobStatus {
        self.from
    }

    pub const fn to(self) -> JobStatus {
        self.to
    }
}

impl fmt::Display for Transition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> {}", self.from, self.to)
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobStatus {
    type Err = DomainError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                DomainError::new(
                    ErrorCode::InvalidFilter,
                    format!(
                        "unknown status '{s}'; use one of open, in_queue, processing, completed, failed, retry_in_queued, retrying"
                    ),
                )
            })
    }
}

/// `job_data` of `insert_csv_file`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InsertCsvFileData {
    pub s3_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_bucket: Option<String>,
    /// Inferred from the headers when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<Service>,
}

/// `job_data` of `export_csv_file`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportCsvFileData {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_bucket: Option<String>,
    pub service: Service,
    pub vql: vql::VqlQuery,
}

/// `job_data` of `reindex_search`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReindexSearchData {
    pub service: Service,
}

/// What `job_response` holds: the guide's keys, plus our own.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobResponse {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runtime_errors: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_report_s3_key: Option<String>,
    /// Set when a user cancelled the job; a cancelled job never runs again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled: Option<bool>,
    /// Keys that handlers add of their own.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl JobResponse {
    /// Adds an error, keeping at most [`MAX_RUNTIME_ERRORS`].
    /// NUL characters, which a `jsonb` column cannot hold, become U+FFFD.
    pub fn push_error(&mut self, error: impl Into<String>) {
        if self.runtime_errors.len() < MAX_RUNTIME_ERRORS {
            let error = error.into();
            self.runtime_errors.push(match limits::storable(&error) {
                std::borrow::Cow::Borrowed(_) => error,
                std::borrow::Cow::Owned(clean) => clean,
            });
        }
    }
}

/// What the create endpoint needs to know about the deployment to validate a job.
#[derive(Debug, Clone)]
pub struct CreateRules {
    /// Job types that a runner can execute: the built-ins plus any that an
    /// embedding service registered.
    pub job_types: BTreeSet<String>,
    /// Buckets a job may name (`S3_ALLOWED_BUCKETS`).
    pub allowed_buckets: BTreeSet<String>,
    /// `retry_interval` when the request gives none.
    pub default_retry_interval: i32,
}

/// A validated create request, ready to insert.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    pub job_type: String,
    pub data: Value,
    pub retry_count: i32,
    pub retry_interval: i32,
}

const CREATE_FIELDS: [&str; 4] = ["job_type", "job_data", "retry_count", "retry_interval"];

/// Validates the body of `POST /common/jobs/create`. Checks run in the guide's
/// order: job type, job data, retry count; then the typed `job_data`.
pub fn parse_create_request(body: &Value, rules: &CreateRules) -> Result<NewJob, DomainError> {
    let obj = body.as_object().ok_or_else(|| {
        DomainError::new(
            ErrorCode::InvalidBody,
            "the request body must be a JSON object",
        )
    })?;
    if let Some(unknown) = obj.keys().find(|k| !CREATE_FIELDS.contains(&k.as_str())) {
        return Err(DomainError::new(
            ErrorCode::InvalidBody,
            format!(
                "unknown field '{unknown}'; expected job_type, job_data, retry_count or retry_interval"
            ),
        ));
    }
    let job_type = match obj.get("job_type") {
        None | Some(Value::Null) => return Err(DomainError::missing_job_type()),
        Some(Value::String(s)) if s.trim().is_empty() => {
            return Err(DomainError::missing_job_type())
        }
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(DomainError::new(
                ErrorCode::InvalidJobType,
                format!("'job_type' must be a string, got {}", vql::json_kind(other)),
            ))
        }
    };
    if !rules.job_types.contains(&job_type) {
        let known: Vec<&str> = rules.job_types.iter().map(String::as_str).collect();
        return Err(DomainError::new(
            ErrorCode::InvalidJobType,
            format!(
                "unknown job type '{job_type}'; use one of {}",
                known.join(", ")
            ),
        ));
    }
    let data = match obj.get("job_data") {
        None | Some(Value::Null) => return Err(DomainError::missing_job_data()),
        Some(Value::Object(m)) => Value::Object(m.clone()),
        Some(other) => {
            return Err(DomainError::new(
                ErrorCode::InvalidJobData,
                format!(
                    "'job_data' must be a JSON object, got {}",
                    vql::json_kind(other)
                ),
            ))
        }
    };
    if limits::json_has_nul(&data) {
        return Err(DomainError::new(
            ErrorCode::InvalidJobData,
            "'job_data' contains a NUL character (\\u0000), which cannot be stored; remove it",
        ));
    }
    let retry_count =
        non_negative_int(obj.get("retry_count"), 0).ok_or_else(DomainError::invalid_retry_count)?;
    if retry_count > MAX_RETRY_COUNT {
        return Err(DomainError::new(
            ErrorCode::InvalidRetryCount,
            format!("'retry_count' must be at most {MAX_RETRY_COUNT}, got {retry_count}"),
        ));
    }
    let retry_interval = non_negative_int(obj.get("retry_interval"), rules.default_retry_interval)
        .filter(|i| (MIN_RETRY_INTERVAL_SECS..=MAX_RETRY_INTERVAL_SECS).contains(i))
        .ok_or_else(|| {
            DomainError::new(
                ErrorCode::InvalidRetryInterval,
                format!(
                    "'retry_interval' must be a whole number of seconds from {MIN_RETRY_INTERVAL_SECS} to {MAX_RETRY_INTERVAL_SECS} (7 days)"
                ),
            )
        })?;
    validate_job_data(&job_type, &data, rules)?;
    Ok(NewJob {
        job_type,
        data,
        retry_count,
        retry_interval,
    })
}

/// Checks a built-in job type's `job_data`. Job types registered by an
/// embedding service accept any JSON object here; their handler validates it.
pub fn validate_job_data(
    job_type: &str,
    data: &Value,
    rules: &CreateRules,
) -> Result<(), DomainError> {
    match job_type {
        INSERT_CSV_FILE => {
            let obj = data.as_object();
            let has_key = obj
                .and_then(|o| o.get("s3_key"))
                .is_some_and(|k| k.as_str().is_some_and(|s| !s.trim().is_empty()));
            if !has_key {
                return Err(DomainError::new(
                    ErrorCode::MissingS3Key,
                    "'job_data.s3_key' is required for insert_csv_file; give the key of the uploaded CSV",
                ));
            }
            let parsed: InsertCsvFileData = serde_json::from_value(data.clone())
                .map_err(|e| invalid_job_data(INSERT_CSV_FILE, &e))?;
            check_bucket(parsed.s3_bucket.as_deref(), rules)
        }
        EXPORT_CSV_FILE => {
            let obj = data.as_object();
            match obj.and_then(|o| o.get("service")) {
                None | Some(Value::Null) => {
                    return Err(DomainError::new(
                        ErrorCode::UnknownService,
                        "'job_data.service' is required for export_csv_file; use 'contact' or 'company'",
                    ))
                }
                Some(Value::String(s)) => {
                    s.parse::<Service>()?;
                }
                Some(other) => {
                    return Err(DomainError::new(
                        ErrorCode::UnknownService,
                        format!("'job_data.service' must be a string, got {}", vql::json_kind(other)),
                    ))
                }
            }
            match obj.and_then(|o| o.get("vql")) {
                None | Some(Value::Null) => return Err(DomainError::missing_select_columns()),
                Some(v) => {
                    vql::parse_vql(v)?;
                }
            }
            let parsed: ExportCsvFileData = serde_json::from_value(data.clone())
                .map_err(|e| invalid_job_data(EXPORT_CSV_FILE, &e))?;
            parsed.vql.validate(parsed.service, Purpose::Export)?;
            check_bucket(parsed.s3_bucket.as_deref(), rules)
        }
        REINDEX_SEARCH => {
            let obj = data.as_object();
            if let Some(unknown) = obj.and_then(|o| o.keys().find(|k| k.as_str() != "service")) {
                return Err(DomainError::new(
                    ErrorCode::InvalidJobData,
                    format!(
                        "unknown field 'job_data.{unknown}' for reindex_search; it takes only 'service'"
                    ),
                ));
            }
            check_service(obj.and_then(|o| o.get("service")), REINDEX_SEARCH)
        }
        _ => Ok(()),
    }
}

/// `job_data.service`: present, a string, and a service's name.
fn check_service(service: Option<&Value>, job_type: &str) -> Result<(), DomainError> {
    match service {
        None | Some(Value::Null) => Err(DomainError::new(
            ErrorCode::UnknownService,
            format!("'job_data.service' is required for {job_type}; use 'contact' or 'company'"),
        )),
        Some(Value::String(s)) => s.parse::<Service>().map(drop),
        Some(other) => Err(DomainError::new(
            ErrorCode::UnknownService,
            format!(
                "'job_data.service' must be a string, got {}",
                vql::json_kind(other)
            ),
        )),
    }
}

fn check_bucket(bucket: Option<&str>, rules: &CreateRules) -> Result<(), DomainError> {
    match bucket {
        Some(b) if !rules.allowed_buckets.contains(b) => Err(DomainError::new(
            ErrorCode::BucketNotAllowed,
            format!(
                "bucket '{b}' is not allowed; allowed buckets: {}",
                rules
                    .allowed_buckets
                    .iter()
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
        _ => Ok(()),
    }
}

fn invalid_job_data(job_type: &str, e: &serde_json::Error) -> DomainError {
    DomainError::new(
        ErrorCode::InvalidJobData,
        format!("invalid 'job_data' for {job_type}: {e}"),
    )
}

/// A non-negative integer that fits i32, or the default when absent.
fn non_negative_int(v: Option<&Value>, default: i32) -> Option<i32> {
    match v {
        None | Some(Value::Null) => Some(default),
        Some(Value::Number(n)) => limits::whole_number(n)
            .filter(|i| *i >= 0)
            .and_then(|i| i32::try_from(i).ok()),
        Some(_) => None,
    }
}

/// A validated body of `POST /common/jobs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListFilter {
    pub job_type: Option<String>,
    pub statuses: Vec<JobStatus>,
    pub limit: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListBody {
    #[serde(default)]
    job_type: Option<String>,
    #[serde(default)]
    status: Option<Vec<String>>,
    #[serde(default)]
    limit: Option<Value>,
}

/// Validates the body of `POST /common/jobs`. An empty body lists everything.
pub fn parse_list_request(body: &Value) -> Result<ListFilter, DomainError> {
    // serde would read an array as the struct's fields in order
    if !body.is_object() {
        return Err(DomainError::new(
            ErrorCode::InvalidFilter,
            format!(
                "the list filter must be a JSON object such as {{\"status\": [\"open\"], \"limit\": 10}}, got {}",
                vql::json_kind(body)
            ),
        ));
    }
    let parsed: ListBody = serde_json::from_value(body.clone()).map_err(|e| {
        DomainError::new(
            ErrorCode::InvalidFilter,
            format!("invalid list filter: {e}"),
        )
    })?;
    let statuses = parsed
        .status
        .unwrap_or_default()
        .iter()
        .map(|s| s.parse())
        .collect::<Result<Vec<JobStatus>, _>>()?;
    let limit = match parsed.limit {
        None | Some(Value::Null) => DEFAULT_LIST_LIMIT,
        // JSON has no integer type: 25.0 is 25
        Some(Value::Number(n)) => limits::whole_number(&n)
            .filter(|l| (1..=MAX_LIST_LIMIT).contains(l))
            .ok_or_else(limit_error)?,
        Some(_) => return Err(limit_error()),
    };
    if parsed.job_type.as_deref().is_some_and(limits::has_nul) {
        return Err(DomainError::new(
            ErrorCode::InvalidFilter,
            "'job_type' contains a NUL character (\\u0000); no job type has one",
        ));
    }
    Ok(ListFilter {
        job_type: parsed.job_type.filter(|t| !t.is_empty()),
        statuses,
        limit,
    })
}

fn limit_error() -> DomainError {
    DomainError::new(
        ErrorCode::InvalidFilter,
        format!("'limit' must be an integer from 1 to {MAX_LIST_LIMIT}"),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules() -> CreateRules {
        CreateRules {
            job_types: [
                INSERT_CSV_FILE,
                EXPORT_CSV_FILE,
                REINDEX_SEARCH,
                "custom_sleep",
            ]
            .into_iter()
            .map(String::from)
            .collect(),
            allowed_buckets: ["connectra".to_string()].into_iter().collect(),
            default_retry_interval: 30,
        }
    }

    fn code(body: Value) -> ErrorCode {
        parse_create_request(&body, &rules()).unwrap_err().code
    }

    #[test]
    fn the_transition_table_allows_the_guides_paths_and_nothing_backwards_from_completed() {
        use JobStatus::*;
        for (a, b) in [
            (Open, InQueue),
            (InQueue, Processing),
            (Processing, Completed),
            (Processing, Failed),
            (Failed, RetryInQueued),
            (RetryInQueued, Retrying),
            (Retrying, Completed),
            (Retrying, Failed),
        ] {
            assert!(a.can_become(b), "{a} -> {b} must be allowed");
        }
        for s in JobStatus::ALL {
            assert!(!Completed.can_become(s), "completed is final, not -> {s}");
        }
        assert!(!Open.can_become(Processing));
        assert!(!Failed.can_become(Processing));
        assert!(!Retrying.can_become(Open));
    }

    #[test]
    fn transitions_exist_exactly_for_the_pairs_the_table_allows() {
        let mut allowed = 0;
        for a in JobStatus::ALL {
            assert!(!a.can_become(a), "{a} -> {a} is no transition");
            for b in JobStatus::ALL {
                let t = Transition::checked(a, b);
                assert_eq!(t.is_some(), a.can_become(b), "{a} -> {b}");
                if let Some(t) = t {
                    allowed += 1;
                    assert_eq!((t.from(), t.to()), (a, b));
                    assert_eq!(Transition::new(a, b), t);
                    assert_eq!(t.to_string(), format!("{a} -> {b}"));
                }
            }
        }
        // the thirteen pairs listed in `can_become`
        assert_eq!(allowed, 13);
    }

    #[test]
    #[should_panic(expected = "not a transition")]
    fn a_transition_the_table_refuses_cannot_be_built() {
        let _ = Transition::new(JobStatus::Completed, JobStatus::Open);
    }

    #[test]
    fn leased_and_running_statuses_are_the_ones_the_guide_names() {
        use JobStatus::*;
        let leased: Vec<_> = JobStatus::ALL
            .into_iter()
            .filter(|s| s.is_leased())
            .collect();
        assert_eq!(leased, [InQueue, Processing, RetryInQueued, Retrying]);
        let running: Vec<_> = JobStatus::ALL
            .into_iter()
            .filter(|s| s.is_running())
            .collect();
        assert_eq!(running, [Processing, Retrying]);
    }

    #[test]
    fn statuses_round_trip_through_their_names() {
        for s in JobStatus::ALL {
            assert_eq!(s.as_str().parse::<JobStatus>().unwrap(), s);
            assert_eq!(serde_json::to_value(s).unwrap(), json!(s.as_str()));
        }
        assert_eq!(
            "done".parse::<JobStatus>().unwrap_err().code,
            ErrorCode::InvalidFilter
        );
    }

    #[test]
    fn create_checks_run_in_the_guides_order() {
        assert_eq!(code(json!({})), ErrorCode::MissingJobType);
        assert_eq!(code(json!({"job_type": ""})), ErrorCode::MissingJobType);
        assert_eq!(code(json!({"job_type": 7})), ErrorCode::InvalidJobType);
        assert_eq!(
            code(json!({"job_type": "nope", "job_data": {}})),
            ErrorCode::InvalidJobType
        );
        assert_eq!(
            code(json!({"job_type": "insert_csv_file"})),
            ErrorCode::MissingJobData
        );
        assert_eq!(
            code(json!({"job_type": "insert_csv_file", "job_data": null})),
            ErrorCode::MissingJobData
        );
        assert_eq!(
            code(json!({"job_type": "insert_csv_file", "job_data": "x"})),
            ErrorCode::InvalidJobData
        );
    }

    #[test]
    fn retry_count_must_be_a_non_negative_integer() {
        for bad in [json!(-1), json!(1.5), json!("3"), json!(true), json!(1e12)] {
            let body = json!({"job_type": "custom_sleep", "job_data": {}, "retry_count": bad});
            assert_eq!(code(body), ErrorCode::InvalidRetryCount, "{bad}");
        }
        let ok = parse_create_request(
            &json!({"job_type": "custom_sleep", "job_data": {}, "retry_count": 3.0}),
            &rules(),
        )
        .unwrap();
        assert_eq!(ok.retry_count, 3);
        assert_eq!(ok.retry_interval, 30);
    }

    #[test]
    fn unknown_top_level_fields_are_named() {
        let err = parse_create_request(
            &json!({"job_type": "custom_sleep", "job_data": {}, "retries": 3}),
            &rules(),
        )
        .unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidBody);
        assert!(err.message.contains("'retries'"), "{}", err.message);
    }

    #[test]
    fn insert_jobs_need_an_s3_key_and_an_allowed_bucket() {
        assert_eq!(
            code(json!({"job_type": "insert_csv_file", "job_data": {"s3_bucket": "connectra"}})),
            ErrorCode::MissingS3Key
        );
        let err = parse_create_request(
            &json!({"job_type": "insert_csv_file", "job_data": {"s3_key": "a.csv", "s3_bucket": "other"}}),
            &rules(),
        )
        .unwrap_err();
        assert_eq!(err.code, ErrorCode::BucketNotAllowed);
        assert!(err.message.contains("'other'"));
        assert_eq!(
            code(
                json!({"job_type": "insert_csv_file", "job_data": {"s3_key": "a.csv", "colour": 1}})
            ),
            ErrorCode::InvalidJobData
        );
        assert!(parse_create_request(
            &json!({"job_type": "insert_csv_file", "job_data": {"s3_key": "a.csv"}}),
            &rules()
        )
        .is_ok());
    }

    #[test]
    fn export_jobs_need_a_service_and_select_columns() {
        assert_eq!(
            code(
                json!({"job_type": "export_csv_file", "job_data": {"vql": {"select_columns": ["email"]}}})
            ),
            ErrorCode::UnknownService
        );
        assert_eq!(
            code(
                json!({"job_type": "export_csv_file", "job_data": {"service": "people", "vql": {"select_columns": ["email"]}}})
            ),
            ErrorCode::UnknownService
        );
        assert_eq!(
            code(
                json!({"job_type": "export_csv_file", "job_data": {"service": "contact", "vql": {}}})
            ),
            ErrorCode::MissingSelectColumns
        );
        assert_eq!(
            code(json!({"job_type": "export_csv_file", "job_data": {"service": "contact"}})),
            ErrorCode::MissingSelectColumns
        );
        assert_eq!(
            code(
                json!({"job_type": "export_csv_file", "job_data": {"service": "contact", "vql": {"select_columns": ["shoe_size"]}}})
            ),
            ErrorCode::UnknownField
        );
        let ok = parse_create_request(
            &json!({"job_type": "export_csv_file", "job_data": {"service": "contact",
                "vql": {"where": {"keyword_match": {"must": {"country": ["USA"]}}},
                        "select_columns": ["first_name", "email"],
                        "order_by": [{"order_by": "uuid", "order_direction": "desc"}], "limit": 500}}}),
            &rules(),
        );
        assert!(ok.is_ok(), "{ok:?}");
    }

    #[test]
    fn reindex_jobs_take_exactly_a_service() {
        let create = |data: Value| {
            parse_create_request(
                &json!({"job_type": REINDEX_SEARCH, "job_data": data}),
                &rules(),
            )
        };
        for service in ["contact", "company"] {
            let ok = create(json!({ "service": service })).unwrap();
            assert_eq!(ok.job_type, REINDEX_SEARCH);
            let data: ReindexSearchData = serde_json::from_value(ok.data).unwrap();
            assert_eq!(data.service.as_str(), service);
        }
        let err = create(json!({})).unwrap_err();
        assert_eq!(err.code, ErrorCode::UnknownService);
        assert!(
            err.message.contains("'job_data.service' is required"),
            "{}",
            err.message
        );
        let err = create(json!({ "service": "people" })).unwrap_err();
        assert_eq!(err.code, ErrorCode::UnknownService);
        assert!(err.message.contains("people"), "{}", err.message);
        let err = create(json!({ "service": 3 })).unwrap_err();
        assert_eq!(err.code, ErrorCode::UnknownService);
        assert!(err.message.contains("must be a string"), "{}", err.message);
        let err = create(json!({ "service": "contact", "force": true })).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidJobData);
        assert!(err.message.contains("'job_data.force'"), "{}", err.message);
        assert_eq!(
            parse_create_request(
                &json!({"job_type": REINDEX_SEARCH, "job_data": "contact"}),
                &rules()
            )
            .unwrap_err()
            .code,
            ErrorCode::InvalidJobData
        );
    }

    #[test]
    fn list_filters_default_and_bound_the_limit() {
        for not_an_object in [json!([null, null]), json!("open"), json!(3)] {
            let e = parse_list_request(&not_an_object).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidFilter, "{not_an_object}");
            assert!(e.message.contains("must be a JSON object"), "{e}");
        }
        assert_eq!(
            parse_list_request(&json!({"limit": 95.0})).unwrap().limit,
            95
        );
        assert!(parse_list_request(&json!({"limit": 95.5})).is_err());
        let f = parse_list_request(&json!({})).unwrap();
        assert_eq!(f.limit, DEFAULT_LIST_LIMIT);
        assert!(f.statuses.is_empty());
        let f = parse_list_request(&json!({"status": ["open", "failed"], "limit": 100})).unwrap();
        assert_eq!(f.statuses, vec![JobStatus::Open, JobStatus::Failed]);
        for bad in [
            json!({"limit": 101}),
            json!({"limit": 0}),
            json!({"limit": "5"}),
            json!({"status": ["done"]}),
            json!({"colour": 1}),
        ] {
            assert_eq!(
                parse_list_request(&bad).unwrap_err().code,
                ErrorCode::InvalidFilter,
                "{bad}"
            );
        }
    }

    #[test]
    fn runtime_errors_are_bounded() {
        let mut r = JobResponse::default();
        for i in 0..(MAX_RUNTIME_ERRORS + 10) {
            r.push_error(format!("e{i}"));
        }
        assert_eq!(r.runtime_errors.len(), MAX_RUNTIME_ERRORS);
    }
}
