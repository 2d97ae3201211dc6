//! The dashboard's pages and form handlers.

use std::collections::BTreeSet;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use connectra_domain::job::{parse_create_request, JobStatus, INSERT_CSV_FILE};
use connectra_persistence::dashboard;
use connectra_persistence::jobs::{CancelOutcome, RetryOutcome};
use serde::Deserialize;
use serde_json::json;
use time::OffsetDateTime;
use uuid::Uuid;

use super::session::{self, Session};
use super::view::{self, JobDetail, JobRow, ProgressView, TimeView};
use super::{html, see_other, UiError, ASSET_VERSION};
use crate::AppState;

/// Jobs per page of the list.
pub const PAGE_SIZE: i64 = 25;
/// The highest page number accepted (the offset stays bounded).
const MAX_PAGE: i64 = 10_000;
/// Rejected lines shown on a job's page; the report has them all.
const REJECTIONS_SHOWN: i64 = 50;
/// How long the presigned URLs of the dashboard's links stay valid.
const LINK_EXPIRES_SECS: u32 = 600;

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

fn uuid_of(raw: &str) -> Result<Uuid, UiError> {
    Uuid::parse_str(raw)
        .map_err(|_| UiError::BadRequest(format!("'{raw}' is not a valid job uuid")))
}

async fn job_of(state: &AppState, raw: &str) -> Result<connectra_persistence::Job, UiError> {
    let uuid = uuid_of(raw)?;
    state
        .inner
        .repo
        .get(uuid)
        .await?
        .ok_or_else(|| UiError::NotFound(format!("no job with uuid '{uuid}'")))
}

#[derive(Template)]
#[template(path = "progress.html")]
struct ProgressFragment<'a> {
    p: &'a ProgressView,
}

fn progress_html(job: &connectra_persistence::Job, now: OffsetDateTime) -> String {
    ProgressFragment {
        p: &ProgressView::of(job, now),
    }
    .render()
    .unwrap_or_default()
}

// ---------------------------------------------------------------- login

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    error: Option<String>,
    logged_in: bool,
    csrf: String,
    v: &'static str,
}

pub async fn login_page() -> HttpResponse {
    let page = LoginPage {
        error: None,
        logged_in: false,
        csrf: String::new(),
        v: ASSET_VERSION,
    };
    html(StatusCode::OK, page.render())
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    api_key: String,
}

pub async fn login(
    state: web::Data<AppState>,
    req: HttpRequest,
    form: web::Form<LoginForm>,
) -> Result<HttpResponse, UiError> {
    session::check_same_origin(&req)?;
    let key = form.api_key.trim();
    if key.is_empty() || !state.key_matches(key) {
        tracing::warn!("dashboard login refused: wrong API key");
        let page = LoginPage {
            error: Some("That API key is not valid.".into()),
            logged_in: false,
            csrf: String::new(),
            v: ASSET_VERSION,
        };
        return Ok(html(StatusCode::UNAUTHORIZED, page.render()));
    }
    let token = session::random_token()?;
    let csrf = session::random_token()?;
    dashboard::create_session(
        state.inner.repo.pool(),
        &session::token_hash(&token),
        &csrf,
        session::SESSION_TTL_SECS as f64,
    )
    .await?;
    tracing::info!("dashboard session started");
    let mut response = see_other("/ui");
    response
        .add_cookie(&session::session_cookie(&req, token))
        .map_err(|_| UiError::Internal)?;
    Ok(response)
}

#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    csrf: Option<String>,
}

pub async fn logout(
    state: web::Data<AppState>,
    req: HttpRequest,
    session: Session,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, UiError> {
    session.check_csrf(form.csrf.as_deref())?;
    dashboard::delete_session(state.inner.repo.pool(), session.token_hash()).await?;
    let mut response = see_other("/ui/login");
    response
        .add_cookie(&session::removal_cookie(&req))
        .map_err(|_| UiError::Internal)?;
    Ok(response)
}

// ---------------------------------------------------------------- overview

struct TypeCounts {
    job_type: String,
    counts: Vec<i64>,
    total: i64,
}

struct Bar {
    start: TimeView,
    completed: i64,
    failed: i64,
    rows: String,
    x: usize,
    height: i64,
    y: i64,
}

struct RunnerRow {
    runner_id: String,
    jobs: i64,
    oldest: Option<TimeView>,
    oldest_age: Option<String>,
    expiry: Option<TimeView>,
}

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewPage {
    logged_in: bool,
    csrf: String,
    v: &'static str,
    statuses: Vec<&'static str>,
    types: Vec<TypeCounts>,
    status_totals: Vec<i64>,
    total: i64,
    queue_depth: i64,
    runners: Vec<RunnerRow>,
    bars: Vec<Bar>,
    finished_last_hour: i64,
    rows_last_hour: String,
}

const CHART_HEIGHT: i64 = 80;

pub async fn overview(
    state: web::Data<AppState>,
    session: Session,
) -> Result<HttpResponse, UiError> {
    let o = dashboard::overview(&state.inner.repo).await?;
    let mut names: BTreeSet<String> = state.inner.rules.job_types.iter().cloned().collect();
    names.extend(o.counts.iter().map(|(t, _, _)| t.clone()));
    let types: Vec<TypeCounts> = names
        .into_iter()
        .map(|job_type| {
            let counts: Vec<i64> = JobStatus::ALL
                .iter()
                .map(|s| {
                    o.counts
                        .iter()
                        .find(|(t, st, _)| *t == job_type && st == s)
                        .map_or(0, |c| c.2)
                })
                .collect();
            let total = counts.iter().sum();
            TypeCounts {
                job_type,
                counts,
                total,
            }
        })
        .collect();
    let status_totals: Vec<i64> = (0..JobStatus::ALL.len())
        .map(|i| types.iter().map(|t| t.counts[i]).sum())
        .collect();
    let now = now();
    let max_jobs = o
        .throughput
        .iter()
        .map(|b| b.completed + b.failed)
        .max()
        .unwrap_or(0)
        .max(1);
    let bars = o
        .throughput
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let height = (b.completed + b.failed) * CHART_HEIGHT / max_jobs;
            Bar {
                start: TimeView::new(b.start),
                completed: b.completed,
                failed: b.failed,
                rows: view::count(b.rows),
                x: i * 25,
                height,
                y: CHART_HEIGHT - height,
            }
        })
        .collect();
    let page = OverviewPage {
        logged_in: true,
        csrf: session.csrf_token,
        v: ASSET_VERSION,
        statuses: JobStatus::ALL.iter().map(|s| s.as_str()).collect(),
        total: status_totals.iter().sum(),
        types,
        status_totals,
        queue_depth: o.queue_depth,
        runners: o
            .runners
            .iter()
            .map(|r| RunnerRow {
                runner_id: r.runner_id.clone(),
                jobs: r.jobs,
                oldest: TimeView::opt(r.oldest_started),
                oldest_age: r
                    .oldest_started
                    .map(|s| view::duration((now - s).as_seconds_f64())),
                expiry: TimeView::opt(r.next_lease_expiry),
            })
            .collect(),
        finished_last_hour: o.throughput.iter().map(|b| b.completed + b.failed).sum(),
        rows_last_hour: view::count(o.throughput.iter().map(|b| b.rows).sum()),
        bars,
    };
    Ok(html(StatusCode::OK, page.render()))
}

// ---------------------------------------------------------------- job list

#[derive(Debug, Deserialize)]
struct ListQuery {
    #[serde(rename = "type")]
    job_type: Option<String>,
    status: Option<String>,
    page: Option<String>,
}

#[derive(Template)]
#[template(path = "jobs.html")]
struct JobsPage {
    logged_in: bool,
    csrf: String,
    v: &'static str,
    jobs: Vec<JobRow>,
    types: Vec<String>,
    statuses: Vec<&'static str>,
    job_type: String,
    status: String,
    page: i64,
    prev_url: Option<String>,
    next_url: Option<String>,
}

fn list_url(job_type: &str, status: &str, page: i64) -> String {
    let mut parts = Vec::new();
    if !job_type.is_empty() {
        parts.push(format!("type={job_type}"));
    }
    if !status.is_empty() {
        parts.push(format!("status={status}"));
    }
    parts.push(format!("page={page}"));
    format!("/ui/jobs?{}", parts.join("&"))
}

pub async fn job_list(
    state: web::Data<AppState>,
    session: Session,
    req: HttpRequest,
) -> Result<HttpResponse, UiError> {
    let q = web::Query::<ListQuery>::from_query(req.query_string())
        .map_err(|e| UiError::BadRequest(format!("the filters cannot be read: {e}")))?;
    let pool = state.inner.repo.pool();
    let mut types: BTreeSet<String> = state.inner.rules.job_types.iter().cloned().collect();
    types.extend(dashboard::job_types(pool).await?);
    let job_type = q.job_type.clone().unwrap_or_default();
    if !job_type.is_empty() && !types.contains(&job_type) {
        return Err(UiError::BadRequest(format!(
            "'{job_type}' is not a job type; use one of {}",
            types.iter().cloned().collect::<Vec<_>>().join(", ")
        )));
    }
    let status_text = q.status.clone().unwrap_or_default();
    let status = if status_text.is_empty() {
        None
    } else {
        Some(
            status_text
                .parse::<JobStatus>()
                .map_err(|e| UiError::BadRequest(e.message))?,
        )
    };
    let page = match q.page.as_deref() {
        None | Some("") => 1,
        Some(raw) => raw
            .parse::<i64>()
            .ok()
            .filter(|p| (1..=MAX_PAGE).contains(p))
            .ok_or_else(|| {
                UiError::BadRequest(format!(
                    "the page number must be an integer from 1 to {MAX_PAGE}; got '{raw}'"
                ))
            })?,
    };
    let result = dashboard::list_page(
        pool,
        (!job_type.is_empty()).then_some(job_type.as_str()),
        status,
        PAGE_SIZE,
        (page - 1) * PAGE_SIZE,
    )
    .await?;
    let now = now();
    let jobs = result
        .jobs
        .iter()
        .map(|j| JobRow::of(j, progress_html(j, now)))
        .collect();
    let page_view = JobsPage {
        logged_in: true,
        csrf: session.csrf_token,
        v: ASSET_VERSION,
        jobs,
        types: types.into_iter().collect(),
        statuses: JobStatus::ALL.iter().map(|s| s.as_str()).collect(),
        prev_url: (page > 1).then(|| list_url(&job_type, &status_text, page - 1)),
        next_url: result
            .has_more
            .then(|| list_url(&job_type, &status_text, page + 1)),
        job_type,
        status: status_text,
        page,
    };
    Ok(html(StatusCode::OK, page_view.render()))
}

// ---------------------------------------------------------------- job detail

#[derive(Debug, Deserialize)]
struct DetailQuery {
    notice: Option<String>,
}

/// The sentence of a `?notice=` a form's redirect carries; unknown ones show nothing.
fn notice_text(code: &str) -> Option<&'static str> {
    Some(match code {
        "cancelled" => "The job was cancelled; it will not run again.",
        "cancel-requested" => "Cancellation requested: the job stops at its next batch boundary.",
        "already-finished" => "The job had already finished; nothing changed.",
        "retried" => "The job is scheduled for a retry; it resumes from its checkpoint.",
        "not-retryable" => "Only a failed job that was not cancelled can be retried.",
        "created" => "Import created; a runner picks it up shortly.",
        _ => return None,
    })
}

#[derive(Template)]
#[template(path = "job.html")]
struct JobPage {
    logged_in: bool,
    csrf: String,
    v: &'static str,
    job: JobDetail,
    rejections: Vec<dashboard::Rejection>,
    rows_rejected: i64,
    notice: Option<&'static str>,
}

pub async fn job_detail(
    state: web::Data<AppState>,
    session: Session,
    path: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, UiError> {
    let job = job_of(&state, &path).await?;
    let q = web::Query::<DetailQuery>::from_query(req.query_string())
        .map_err(|e| UiError::BadRequest(format!("the query cannot be read: {e}")))?;
    let rejections =
        dashboard::rejections(state.inner.repo.pool(), job.id, REJECTIONS_SHOWN).await?;
    let page = JobPage {
        logged_in: true,
        csrf: session.csrf_token,
        v: ASSET_VERSION,
        job: JobDetail::of(&job, progress_html(&job, now())),
        rejections,
        rows_rejected: job.rows_rejected,
        notice: q.notice.as_deref().and_then(notice_text),
    };
    Ok(html(StatusCode::OK, page.render()))
}

/// The progress bar alone, which htmx polls while the job runs.
pub async fn progress(
    state: web::Data<AppState>,
    _session: Session,
    path: web::Path<String>,
) -> Result<HttpResponse, UiError> {
    let job = job_of(&state, &path).await?;
    Ok(html(StatusCode::OK, Ok(progress_html(&job, now()))))
}

// ---------------------------------------------------------------- actions

pub async fn cancel(
    state: web::Data<AppState>,
    session: Session,
    path: web::Path<String>,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, UiError> {
    job_action(
        &session,
        &form,
        &path,
        "cancel",
        |uuid| state.inner.repo.cancel(uuid),
        |outcome| match outcome {
            CancelOutcome::Cancelled(_) => "cancelled",
            CancelOutcome::Requested(_) => "cancel-requested",
            CancelOutcome::AlreadyFinished(_) => "already-finished",
        },
    )
    .await
}

pub async fn retry(
    state: web::Data<AppState>,
    session: Session,
    path: web::Path<String>,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, UiError> {
    job_action(
        &session,
        &form,
        &path,
        "retry",
        |uuid| state.inner.repo.retry(uuid),
        |outcome| match outcome {
            RetryOutcome::Scheduled(_) => "retried",
            RetryOutcome::NotRetryable(_) => "not-retryable",
        },
    )
    .await
}

/// A job action posted from the dashboard: the CSRF check, the job's uuid,
/// the repository's `act` on it, and a 303 back to the job with a notice
/// of how it went (`notice_of` its outcome).
async fn job_action<T, Fut>(
    session: &Session,
    form: &CsrfForm,
    path: &str,
    action: &str,
    act: impl FnOnce(Uuid) -> Fut,
    notice_of: impl FnOnce(T) -> &'static str,
) -> Result<HttpResponse, UiError>
where
    Fut: std::future::Future<Output = connectra_persistence::Result<Option<T>>>,
{
    session.check_csrf(form.csrf.as_deref())?;
    let uuid = uuid_of(path)?;
    let outcome = act(uuid)
        .await?
        .ok_or_else(|| UiError::NotFound(format!("no job with uuid '{uuid}'")))?;
    let notice = notice_of(outcome);
    tracing::info!(job_uuid = %uuid, notice, "{action} from the dashboard");
    Ok(see_other(&format!("/ui/jobs/{uuid}?notice={notice}")))
}

/// A 303 to a presigned GET of `key` in the job's bucket.
async fn presigned_redirect(
    state: &AppState,
    job: &connectra_persistence::Job,
    key: &str,
) -> Result<HttpResponse, UiError> {
    let s3 = state
        .s3
        .as_deref()
        .ok_or_else(|| UiError::Unavailable("S3 is not configured".into()))?;
    let bucket = job
        .data
        .get("s3_bucket")
        .and_then(|b| b.as_str())
        .unwrap_or(&s3.default_bucket);
    let url = s3
        .storage
        .presign_get(bucket, key, LINK_EXPIRES_SECS)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "presigning a dashboard link failed");
            UiError::Internal
        })?;
    Ok(see_other(&url))
}

/// The rejected-lines report of an import.
pub async fn report(
    state: web::Data<AppState>,
    _session: Session,
    path: web::Path<String>,
) -> Result<HttpResponse, UiError> {
    let job = job_of(&state, &path).await?;
    let key = job.response().error_report_s3_key.ok_or_else(|| {
        UiError::NotFound(format!("job '{}' has no rejected-lines report", job.uuid))
    })?;
    presigned_redirect(&state, &job, &key).await
}

/// The file of a completed export.
pub async fn download(
    state: web::Data<AppState>,
    _session: Session,
    path: web::Path<String>,
) -> Result<HttpResponse, UiError> {
    let job = job_of(&state, &path).await?;
    let detail = JobDetail::of(&job, String::new());
    let key = job
        .response()
        .s3_key
        .filter(|_| detail.has_download)
        .ok_or_else(|| {
            UiError::NotFound(format!("job '{}' is not a completed export", job.uuid))
        })?;
    presigned_redirect(&state, &job, &key).await
}

// ---------------------------------------------------------------- new import

#[derive(Template)]
#[template(path = "new_import.html")]
struct NewImportPage {
    logged_in: bool,
    csrf: String,
    v: &'static str,
    s3: bool,
}

pub async fn new_import(state: web::Data<AppState>, session: Session) -> HttpResponse {
    let page = NewImportPage {
        logged_in: true,
        csrf: session.csrf_token,
        v: ASSET_VERSION,
        s3: state.s3.is_some(),
    };
    html(StatusCode::OK, page.render())
}

#[derive(Debug, Deserialize)]
struct UploadQuery {
    filename: Option<String>,
}

/// Like the API's `GET /common/upload-url`, for the session: the browser
/// PUTs the file to S3 itself, then posts the create form with the key.
pub async fn upload_url(
    state: web::Data<AppState>,
    _session: Session,
    req: HttpRequest,
) -> Result<HttpResponse, UiError> {
    let s3 = state
        .s3
        .as_deref()
        .ok_or_else(|| UiError::Unavailable("S3 is not configured".into()))?;
    let q = web::Query::<UploadQuery>::from_query(req.query_string())
        .map_err(|e| UiError::BadRequest(format!("the query cannot be read: {e}")))?;
    let name = crate::sanitise_filename(q.filename.as_deref())?;
    let key = crate::upload_key(&s3.upload_prefix, &name);
    let url = s3
        .storage
        .presign_put(&s3.default_bucket, &key, crate::UPLOAD_URL_EXPIRES_SECS)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "presigning a dashboard upload failed");
            UiError::Internal
        })?;
    Ok(HttpResponse::Ok().json(json!({"upload_url": url, "s3_key": key, "success": true})))
}

#[derive(Debug, Deserialize)]
pub struct ImportForm {
    csrf: Option<String>,
    #[serde(default)]
    s3_key: String,
    #[serde(default)]
    retry_count: String,
}

pub async fn create_import(
    state: web::Data<AppState>,
    session: Session,
    form: web::Form<ImportForm>,
) -> Result<HttpResponse, UiError> {
    session.check_csrf(form.csrf.as_deref())?;
    let retry_count: i64 = match form.retry_count.trim() {
        "" => 0,
        raw => raw.parse().map_err(|_| {
            UiError::BadRequest(format!("retries must be a whole number; got '{raw}'"))
        })?,
    };
    let body = json!({
        "job_type": INSERT_CSV_FILE,
        "job_data": {"s3_key": form.s3_key.trim()},
        "retry_count": retry_count,
    });
    let new = parse_create_request(&body, &state.inner.rules).map_err(crate::ApiError::from)?;
    let job = state.inner.repo.create(&new).await?;
    tracing::info!(job_uuid = %job.uuid, "import created from the dashboard");
    Ok(see_other(&format!("/ui/jobs/{}?notice=created", job.uuid)))
}
