#![doc = include_str!("../README.md")]

mod body;
mod error;
pub mod openapi;
mod query;
mod serve;
pub mod ui;

use std::sync::Arc;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, HttpRequest, HttpResponse};
use connectra_domain::job::{parse_create_request, parse_list_request, CreateRules, JobStatus};
use connectra_domain::ErrorCode;
use connectra_persistence::jobs::{CancelOutcome, RetryOutcome};
use connectra_persistence::JobRepo;
use connectra_search::{PostgresBackend, SearchBackend};
use connectra_storage::Storage;
use serde_json::json;
use subtle::ConstantTimeEq;
use uuid::Uuid;

pub use error::ApiError;
pub use serve::{migrate, serve, Listen, ServeError};

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    inner: Arc<Inner>,
    /// Set by [`AppState::with_storage`]; without it the S3 endpoints answer 503.
    s3: Option<Arc<S3Part>>,
    /// The VQL backend of the search endpoints: PostgreSQL unless
    /// [`AppState::with_search`] says otherwise.
    search: Arc<dyn SearchBackend>,
}

/// S3 as the handlers use it.
#[derive(Debug)]
struct S3Part {
    storage: Storage,
    default_bucket: String,
    /// Without leading or trailing `/`; may be empty.
    upload_prefix: String,
}

#[derive(Debug)]
struct Inner {
    repo: JobRepo,
    api_keys: Vec<String>,
    rules: CreateRules,
    max_body_bytes: usize,
}

impl AppState {
    /// `rules.job_types` must list every job type some runner can execute.
    pub fn new(
        repo: JobRepo,
        api_keys: Vec<String>,
        rules: CreateRules,
        max_body_bytes: usize,
    ) -> Self {
        let search: Arc<dyn SearchBackend> = Arc::new(PostgresBackend::new(repo.pool().clone()));
        Self {
            search,
            inner: Arc::new(Inner {
                repo,
                api_keys,
                rules,
                max_body_bytes,
            }),
            s3: None,
        }
    }

    /// What the create endpoint checks a job against.
    pub fn rules(&self) -> &CreateRules {
        &self.inner.rules
    }

    /// Adds S3: `GET /common/upload-url` presigns uploads into
    /// `default_bucket` under `upload_prefix`, and `/ready` also checks that
    /// the bucket answers.
    pub fn with_storage(
        mut self,
        storage: Storage,
        default_bucket: String,
        upload_prefix: String,
    ) -> Self {
        self.s3 = Some(Arc::new(S3Part {
            storage,
            default_bucket,
            upload_prefix: upload_prefix.trim_matches('/').to_string(),
        }));
        self
    }

    /// Uses `search` (e.g. OpenSearch) for the search endpoints; `/ready`
    /// then checks it too.
    pub fn with_search(mut self, search: Arc<dyn SearchBackend>) -> Self {
        self.search = search;
        self
    }

    /// Compares `given` with every configured key in constant time: the time
    /// taken depends on neither where a key differs nor which key matched
    /// (only on the keys' lengths, which are not secret).
    fn key_matches(&self, given: &str) -> bool {
        self.inner.api_keys.iter().fold(false, |found, key| {
            found | constant_time_eq(key.as_bytes(), given.as_bytes())
        })
    }
}

/// `subtle`'s slice comparison: every byte is compared whatever the first
/// difference; slices of different lengths are unequal at once.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// One route: its method, full path, whether it needs the API key, and its
/// handler. [`configure`] registers exactly these, so this list is the route
/// table that `tests/openapi.rs` checks the OpenAPI document against.
#[derive(Debug, Clone, Copy)]
pub struct Endpoint {
    pub method: &'static str,
    pub path: &'static str,
    /// Without the `X-API-Key` header.
    pub public: bool,
    route: fn() -> actix_web::Route,
}

const fn endpoint(
    method: &'static str,
    path: &'static str,
    public: bool,
    route: fn() -> actix_web::Route,
) -> Endpoint {
    Endpoint {
        method,
        path,
        public,
        route,
    }
}

/// Every route of the API. The protected ones live under the scopes of
/// [`PROTECTED_SCOPES`].
pub const ENDPOINTS: &[Endpoint] = &[
    endpoint("GET", "/health", true, || web::get().to(health)),
    endpoint("GET", "/ready", true, || web::get().to(ready)),
    endpoint("GET", "/metrics", true, || web::get().to(metrics)),
    endpoint("GET", "/openapi.json", true, || {
        web::get().to(openapi::openapi_json_handler)
    }),
    endpoint("POST", "/common/jobs/create", false, || {
        web::post().to(create_job)
    }),
    endpoint("POST", "/common/jobs", false, || web::post().to(list_jobs)),
    endpoint("GET", "/common/jobs/{uuid}", false, || {
        web::get().to(get_job)
    }),
    endpoint("POST", "/common/jobs/{uuid}/cancel", false, || {
        web::post().to(cancel_job)
    }),
    endpoint("POST", "/common/jobs/{uuid}/retry", false, || {
        web::post().to(retry_job)
    }),
    endpoint("GET", "/common/upload-url", false, || {
        web::get().to(upload_url)
    }),
    endpoint("GET", "/common/jobs/{uuid}/download-url", false, || {
        web::get().to(query::download_url)
    }),
    endpoint("GET", "/common/filters", false, || {
        web::get().to(query::filters)
    }),
    endpoint("POST", "/contacts/search", false, || {
        web::post().to(query::search_contacts)
    }),
    endpoint("POST", "/companies/search", false, || {
        web::post().to(query::search_companies)
    }),
];

/// The scopes behind the API key; every non-public endpoint is in one.
pub const PROTECTED_SCOPES: &[&str] = &["/common", "/contacts", "/companies"];

/// Registers the routes and shared state on an actix `App`:
/// `App::new().configure(connectra_api::configure(state))`.
pub fn configure(state: AppState) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(web::Data::new(state))
            .app_data(web::PathConfig::default().error_handler(|e, _| {
                ApiError::new(ErrorCode::InvalidBody, format!("invalid path: {e}")).into()
            }));
        for e in ENDPOINTS.iter().filter(|e| e.public) {
            cfg.route(e.path, (e.route)());
        }
        for prefix in PROTECTED_SCOPES {
            let mut scope = web::scope(prefix).wrap(from_fn(require_api_key));
            for e in ENDPOINTS.iter().filter(|e| !e.public) {
                if let Some(rest) = e
                    .path
                    .strip_prefix(prefix)
                    .filter(|rest| rest.starts_with('/'))
                {
                    scope = scope.route(rest, (e.route)());
                }
            }
            cfg.service(scope.default_service(web::to(not_found)));
        }
        // the HTML dashboard: not part of the JSON API nor of ENDPOINTS
        cfg.service(ui::scope());
        cfg.default_service(web::to(not_found));
    }
}

async fn require_api_key(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let allowed = match (
        req.app_data::<web::Data<AppState>>(),
        req.headers().get("x-api-key").and_then(|v| v.to_str().ok()),
    ) {
        (Some(state), Some(key)) => state.key_matches(key),
        _ => false,
    };
    if !allowed {
        let response = actix_web::ResponseError::error_response(&ApiError::unauthorized());
        return Ok(req.into_response(response).map_into_right_body());
    }
    next.call(req)
        .await
        .map(ServiceResponse::map_into_left_body)
}

/// Whether `path` is an instance of the route `pattern` (`{name}` stands for
/// one non-empty segment).
fn path_matches(pattern: &str, path: &str) -> bool {
    let (mut p, mut s) = (pattern.split('/'), path.split('/'));
    loop {
        match (p.next(), s.next()) {
            (None, None) => return true,
            (Some(want), Some(got)) if want == got => {}
            (Some(want), Some(got)) if want.starts_with('{') && !got.is_empty() => {}
            _ => return false,
        }
    }
}

/// Every request no route took: 405 with `Allow` for a known path called
/// with another method, otherwise 404; both in the guide's error shape.
async fn not_found(req: HttpRequest) -> HttpResponse {
    // a literal route (`/common/jobs/create`) shadows a pattern (`/common/jobs/{uuid}`)
    let literal: Vec<&str> = ENDPOINTS
        .iter()
        .filter(|e| e.path == req.path())
        .map(|e| e.method)
        .collect();
    let allowed = if literal.is_empty() {
        ENDPOINTS
            .iter()
            .filter(|e| path_matches(e.path, req.path()))
            .map(|e| e.method)
            .collect()
    } else {
        literal
    };
    if allowed.is_empty() {
        return actix_web::ResponseError::error_response(&ApiError::new(
            ErrorCode::NotFound,
            format!("no route for {} {}", req.method(), req.path()),
        ));
    }
    let allow = allowed.join(", ");
    let mut response = actix_web::ResponseError::error_response(&ApiError::new(
        ErrorCode::MethodNotAllowed,
        format!("{} does not take {}; use {allow}", req.path(), req.method()),
    ));
    if let Ok(value) = actix_web::http::header::HeaderValue::from_str(&allow) {
        response
            .headers_mut()
            .insert(actix_web::http::header::ALLOW, value);
    }
    response
}

/// Where an upload of `name` goes: a fresh uuid before the name, so two
/// uploads of one file never collide, under the upload prefix.
pub(crate) fn upload_key(prefix: &str, name: &str) -> String {
    let file = format!("{}-{name}", Uuid::new_v4());
    if prefix.is_empty() {
        file
    } else {
        format!("{prefix}/{file}")
    }
}

/// Prometheus metrics (text exposition format), without an API key like
/// `/health`: the runners' counters and histograms recorded in this process,
/// and `connectra_jobs_jobs` per status and job type from the database.
async fn metrics(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let Some(handle) = connectra_jobs::metrics::install() else {
        return Err(ApiError::new(
            ErrorCode::Unavailable,
            "metrics are recorded by another recorder in this process".to_string(),
        ));
    };
    let counts = state.inner.repo.counts().await?;
    let mut types: Vec<&str> = state
        .inner
        .rules
        .job_types
        .iter()
        .map(String::as_str)
        .collect();
    types.extend(counts.iter().map(|(t, _, _)| t.as_str()));
    types.sort_unstable();
    types.dedup();
    // every (type, status) pair, so a status that emptied reads 0, not its last value
    for job_type in types {
        for status in JobStatus::ALL {
            let n = counts
                .iter()
                .find(|(t, s, _)| t == job_type && *s == status)
                .map_or(0, |c| c.2);
            metrics::gauge!(connectra_jobs::metrics::JOBS,
                "job_type" => job_type.to_string(), "status" => status.as_str())
            .set(n as f64);
        }
    }
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(handle.render()))
}

async fn health() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok", "success": true}))
}

/// How long `/ready` waits for each dependency: a probe must answer fast,
/// and a dependency that hangs is as unready as one that refuses.
const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// `check`, or a sentence naming `what` if it takes longer than [`READY_TIMEOUT`].
async fn within<T>(
    what: &str,
    check: impl std::future::Future<Output = Result<T, String>>,
) -> Result<T, String> {
    actix_web::rt::time::timeout(READY_TIMEOUT, check)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "{what} did not answer within {} s",
                READY_TIMEOUT.as_secs()
            ))
        })
}

async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let s3_check = async {
        match &state.s3 {
            None => None,
            Some(s3) => Some(
                within("S3", async {
                    match s3.storage.bucket_exists(&s3.default_bucket).await {
                        Ok(true) => Ok(()),
                        Ok(false) => Err(format!(
                            "the S3 bucket '{}' does not exist",
                            s3.default_bucket
                        )),
                        Err(e) => Err(format!("S3 does not answer: {e}")),
                    }
                })
                .await,
            ),
        }
    };
    let search_check = async {
        match state.search.name() {
            _ if state.search.searches_the_database() => None, // the database check covers it
            name => Some((
                name,
                within(name, async {
                    state.search.ping().await.map_err(|e| e.to_string())
                })
                .await,
            )),
        }
    };
    let database_check = within("the database", async {
        state
            .inner
            .repo
            .ping()
            .await
            .map_err(|e| format!("the database does not answer: {e}"))
    });
    let (database, s3, search) = futures::join!(database_check, s3_check, search_check);
    let mut checks = serde_json::Map::new();
    let mut problems = Vec::new();
    match database {
        Ok(()) => checks.insert("database".into(), json!("ok")),
        Err(problem) => {
            problems.push(problem);
            checks.insert("database".into(), json!("unavailable"))
        }
    };
    match s3 {
        None => {}
        Some(Ok(())) => {
            checks.insert("s3".into(), json!("ok"));
        }
        Some(Err(problem)) => {
            problems.push(problem);
            checks.insert("s3".into(), json!("unavailable"));
        }
    }
    match search {
        None => {}
        Some((name, Ok(()))) => {
            checks.insert(name.into(), json!("ok"));
        }
        Some((name, Err(problem))) => {
            problems.push(problem);
            checks.insert(name.into(), json!("unavailable"));
        }
    }
    if problems.is_empty() {
        HttpResponse::Ok().json(json!({"status": "ready", "checks": checks, "success": true}))
    } else {
        HttpResponse::ServiceUnavailable().json(json!({
            "error": format!("{}: {}", ErrorCode::Unavailable, problems.join("; ")),
            "checks": checks,
            "success": false
        }))
    }
}

/// How long a presigned upload URL stays valid.
const UPLOAD_URL_EXPIRES_SECS: u32 = 3600;
/// The longest accepted `filename`, in characters.
const MAX_FILENAME_CHARS: usize = 255;

#[derive(Debug, serde::Deserialize)]
struct UploadUrlQuery {
    filename: Option<String>,
}

/// Checks a user's file name and makes it safe for an S3 key: letters,
/// digits, `.`, `-` and `_` stay, anything else becomes `_`.
fn sanitise_filename(filename: Option<&str>) -> Result<String, ApiError> {
    let invalid = |message: String| ApiError::new(ErrorCode::InvalidFilename, message);
    let name =
        match filename {
            Some(name) if !name.trim().is_empty() => name,
            _ => return Err(invalid(
                "the 'filename' query parameter is required, for example '?filename=contacts.csv'"
                    .into(),
            )),
        };
    let chars = name.chars().count();
    if chars > MAX_FILENAME_CHARS {
        return Err(invalid(format!(
            "'filename' is {chars} characters long; at most {MAX_FILENAME_CHARS} are allowed"
        )));
    }
    if name.contains(['/', '\\']) || name == "." || name == ".." {
        return Err(invalid(format!(
            "'filename' must be a bare file name without a path; got {name:?}"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(invalid(format!(
            "'filename' must not contain control characters; got {name:?}"
        )));
    }
    Ok(name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect())
}

/// `GET /common/upload-url?filename=…`: a presigned PUT URL for a new key
/// under the uploads prefix (the guide's Example 1).
async fn upload_url(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let s3 = state
        .s3
        .as_deref()
        .ok_or_else(|| ApiError::new(ErrorCode::Unavailable, "S3 is not configured"))?;
    let query = web::Query::<UploadUrlQuery>::from_query(req.query_string()).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidFilename,
            format!("the query string cannot be read: {e}"),
        )
    })?;
    let name = sanitise_filename(query.filename.as_deref())?;
    let key = upload_key(&s3.upload_prefix, &name);
    let url = s3
        .storage
        .presign_put(&s3.default_bucket, &key, UPLOAD_URL_EXPIRES_SECS)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "presigning an upload URL failed");
            ApiError::new(ErrorCode::Internal, "the upload URL could not be made")
        })?;
    Ok(HttpResponse::Ok().json(json!({
        "upload_url": url,
        "s3_key": key,
        "s3_bucket": s3.default_bucket,
        "expires_in": UPLOAD_URL_EXPIRES_SECS,
        "success": true,
    })))
}

async fn create_job(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = body::json_body(&req, payload, state.inner.max_body_bytes, false).await?;
    let new = parse_create_request(&body, &state.inner.rules)?;
    let job = state.inner.repo.create(&new).await?;
    tracing::info!(job_uuid = %job.uuid, job_type = %job.job_type, "job created");
    Ok(HttpResponse::Created().json(json!({
        "message": "Job created successfully",
        "success": true,
        "data": job,
    })))
}

async fn list_jobs(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = body::json_body(&req, payload, state.inner.max_body_bytes, true).await?;
    let filter = parse_list_request(&body)?;
    let jobs = state.inner.repo.list(&filter).await?;
    Ok(HttpResponse::Ok().json(json!({ "data": jobs, "success": true })))
}

/// The job that a path's `{uuid}` names: 400 for a malformed uuid, 404 for
/// an unknown one.
pub(crate) async fn find_job(
    state: &AppState,
    raw: &str,
) -> Result<connectra_persistence::Job, ApiError> {
    let uuid = parse_uuid(raw)?;
    state
        .inner
        .repo
        .get(uuid)
        .await?
        .ok_or_else(|| ApiError::job_not_found(&uuid))
}

pub(crate) fn parse_uuid(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| {
        ApiError::new(
            ErrorCode::InvalidUuid,
            format!("'{raw}' is not a valid job uuid"),
        )
    })
}

async fn get_job(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    // `GET /common/jobs/create` is the literal route called with another
    // method, not a job uuid: 405 with `Allow`, like every other such call
    if ENDPOINTS.iter().any(|e| e.path == req.path()) {
        return Ok(not_found(req).await);
    }
    let job = find_job(&state, &path).await?;
    Ok(HttpResponse::Ok().json(json!({ "data": job, "success": true })))
}

async fn cancel_job(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let uuid = parse_uuid(&path)?;
    let outcome = state
        .inner
        .repo
        .cancel(uuid)
        .await?
        .ok_or_else(|| ApiError::job_not_found(&uuid))?;
    match outcome {
        CancelOutcome::Cancelled(job) => Ok(HttpResponse::Ok().json(json!({
            "message": "Job cancelled", "success": true, "data": job
        }))),
        CancelOutcome::Requested(job) => Ok(HttpResponse::Accepted().json(json!({
            "message": "Cancellation requested; the job stops at its next batch boundary",
            "success": true, "data": job
        }))),
        CancelOutcome::AlreadyFinished(job) => Err(ApiError::new(
            ErrorCode::Conflict,
            format!(
                "job '{}' has already finished with status '{}'",
                job.uuid, job.status
            ),
        )),
    }
}

/// The guide's "Manual Retry" as an endpoint: a failed job runs again,
/// from its checkpoint, as soon as a retry runner takes it.
async fn retry_job(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let uuid = parse_uuid(&path)?;
    let outcome = state
        .inner
        .repo
        .retry(uuid)
        .await?
        .ok_or_else(|| ApiError::job_not_found(&uuid))?;
    match outcome {
        RetryOutcome::Scheduled(job) => Ok(HttpResponse::Ok().json(json!({
            "message": "Job scheduled for a retry; it resumes from its checkpoint",
            "success": true, "data": job
        }))),
        RetryOutcome::NotRetryable(job) if job.status == JobStatus::Failed => Err(ApiError::new(
            ErrorCode::Conflict,
            format!("job '{}' was cancelled; a cancelled job never runs again (create a new job with the same data instead)", job.uuid),
        )),
        RetryOutcome::NotRetryable(job) => Err(ApiError::new(
            ErrorCode::Conflict,
            format!(
                "job '{}' is '{}'; only a failed job can be retried",
                job.uuid, job.status
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::{constant_time_eq, sanitise_filename};

    #[test]
    fn filenames_are_checked_and_made_safe_for_keys() {
        assert_eq!(
            sanitise_filename(Some("contacts.csv")).ok().as_deref(),
            Some("contacts.csv")
        );
        assert_eq!(
            sanitise_filename(Some("my contacts (2024) é.csv"))
                .ok()
                .as_deref(),
            Some("my_contacts__2024___.csv")
        );
        for bad in [
            None,
            Some(""),
            Some("  "),
            Some("a/b.csv"),
            Some("a\\b.csv"),
            Some(".."),
            Some("a\nb"),
        ] {
            let message = sanitise_filename(bad).err().map(|e| e.to_string());
            assert!(
                message
                    .as_deref()
                    .is_some_and(|m| m.starts_with("ERR_INVALID_FILENAME: ")),
                "{bad:?}: {message:?}"
            );
        }
        assert!(sanitise_filename(Some(&"a".repeat(255))).is_ok());
        assert!(sanitise_filename(Some(&"a".repeat(256))).is_err());
    }

    #[test]
    fn constant_time_eq_compares_exactly() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret1"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }
}
