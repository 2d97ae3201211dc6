#![doc = include_str!("../README.md")]

mod body;
mod error;

use std::sync::Arc;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, HttpRequest, HttpResponse};
use connectra_domain::job::{parse_create_request, parse_list_request, CreateRules};
use connectra_domain::ErrorCode;
use connectra_persistence::jobs::CancelOutcome;
use connectra_persistence::JobRepo;
use serde_json::json;
use uuid::Uuid;

pub use error::ApiError;

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    inner: Arc<Inner>,
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
        Self {
            inner: Arc::new(Inner {
                repo,
                api_keys,
                rules,
                max_body_bytes,
            }),
        }
    }

    /// Compares `given` with every configured key in constant time: the time
    /// taken depends on neither where a key differs nor which key matched.
    fn key_matches(&self, given: &str) -> bool {
        self.inner.api_keys.iter().fold(false, |found, key| {
            found | constant_time_eq(key.as_bytes(), given.as_bytes())
        })
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0xff);
    }
    diff == 0
}

/// Registers the routes and shared state on an actix `App`:
/// `App::new().configure(connectra_api::configure(state))`.
pub fn configure(state: AppState) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(web::Data::new(state))
            .app_data(web::PathConfig::default().error_handler(|e, _| {
                ApiError::new(ErrorCode::InvalidBody, format!("invalid path: {e}")).into()
            }))
            .route("/health", web::get().to(health))
            .route("/ready", web::get().to(ready))
            .service(
                web::scope("/common")
                    .wrap(from_fn(require_api_key))
                    .route("/jobs/create", web::post().to(create_job))
                    .route("/jobs", web::post().to(list_jobs))
                    .route("/jobs/{uuid}", web::get().to(get_job))
                    .route("/jobs/{uuid}/cancel", web::post().to(cancel_job))
                    .default_service(web::to(not_found)),
            )
            .default_service(web::to(not_found));
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

async fn not_found(req: HttpRequest) -> HttpResponse {
    actix_web::ResponseError::error_response(&ApiError::new(
        ErrorCode::NotFound,
        format!("no route for {} {}", req.method(), req.path()),
    ))
}

async fn health() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok", "success": true}))
}

async fn ready(state: web::Data<AppState>) -> HttpResponse {
    match state.inner.repo.ping().await {
        Ok(()) => HttpResponse::Ok().json(json!({
            "status": "ready", "checks": {"database": "ok"}, "success": true
        })),
        Err(e) => HttpResponse::ServiceUnavailable().json(json!({
            "error": format!("{}: the database does not answer: {e}", ErrorCode::Unavailable),
            "checks": {"database": "unavailable"},
            "success": false
        })),
    }
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

fn parse_uuid(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| {
        ApiError::new(
            ErrorCode::InvalidUuid,
            format!("'{raw}' is not a valid job uuid"),
        )
    })
}

async fn get_job(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let uuid = parse_uuid(&path)?;
    let job = state
        .inner
        .repo
        .get(uuid)
        .await?
        .ok_or_else(|| ApiError::job_not_found(&uuid))?;
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

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn constant_time_eq_compares_exactly() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret1"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }
}
