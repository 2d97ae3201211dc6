//! The query surface: one VQL page (`POST /contacts/search`,
//! `POST /companies/search`), filter values (`GET /common/filters`), and the
//! download URL of a finished export.

use actix_web::{web, HttpRequest, HttpResponse};
use connectra_domain::import::filter_fields;
use connectra_domain::job::{JobStatus, EXPORT_CSV_FILE};
use connectra_domain::limits::MAX_FILTER_PREFIX_BYTES;
use connectra_domain::vql::{parse_vql, Purpose};
use connectra_domain::{ErrorCode, Service};
use connectra_search::SearchError;
use serde_json::json;

use crate::{body, find_job, ApiError, AppState};

/// How long a presigned download URL stays valid.
const DOWNLOAD_URL_EXPIRES_SECS: u32 = 3600;
const DEFAULT_FILTER_LIMIT: i64 = 100;
const MAX_FILTER_LIMIT: i64 = 1000;

fn search_error(e: SearchError) -> ApiError {
    match e {
        SearchError::Unavailable { .. } => {
            tracing::warn!(error = %e, "search backend unavailable");
            ApiError::new(ErrorCode::Unavailable, format!("{e}"))
        }
        // a query the backend cannot run as given is the client's to change
        SearchError::InvalidQuery(message) => ApiError::new(ErrorCode::InvalidVql, message),
        SearchError::Rejected {
            status: 400,
            reason,
            ..
        } => {
            tracing::warn!(%reason, "the search backend refused a validated query");
            ApiError::new(
                ErrorCode::InvalidVql,
                format!("the search engine refused this query: {reason}"),
            )
        }
        other => {
            tracing::error!(error = %other, "search failed");
            ApiError::new(ErrorCode::Internal, "the search failed on the server")
        }
    }
}

async fn search(
    service: Service,
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = body::json_body(&req, payload, state.inner.max_body_bytes, true).await?;
    let query = parse_vql(&body)?.validate(service, Purpose::Search)?;
    let page = state
        .search
        .search(service, &query)
        .await
        .map_err(search_error)?;
    Ok(HttpResponse::Ok().json(json!({
        "data": page.data,
        "next_search_after": page.next_search_after,
        "success": true,
    })))
}

pub(crate) async fn search_contacts(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    search(Service::Contact, state, req, payload).await
}

pub(crate) async fn search_companies(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    search(Service::Company, state, req, payload).await
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FiltersQuery {
    service: Option<String>,
    filter_key: Option<String>,
    prefix: Option<String>,
    limit: Option<String>,
}

/// `GET /common/filters?service=&filter_key=&prefix=&limit=`
pub(crate) async fn filters(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let q = web::Query::<FiltersQuery>::from_query(req.query_string()).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidFilter,
            format!("the query string cannot be read: {e}"),
        )
    })?;
    let service: Service = q
        .service
        .as_deref()
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::UnknownService,
                "the 'service' query parameter is required; use 'contact' or 'company'",
            )
        })?
        .parse()?;
    let keys = filter_fields(service);
    let filter_key = match q.filter_key.as_deref().filter(|k| !k.is_empty()) {
        Some(k) if !keys.contains(&k) => {
            return Err(ApiError::new(
                ErrorCode::UnknownField,
                format!(
                    "'{k}' is not a filter of service '{service}'; use one of {}",
                    keys.join(", ")
                ),
            ))
        }
        other => other,
    };
    let limit = match q.limit.as_deref() {
        None | Some("") => DEFAULT_FILTER_LIMIT,
        Some(raw) => raw
            .parse::<i64>()
            .ok()
            .filter(|l| (1..=MAX_FILTER_LIMIT).contains(l))
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::InvalidFilter,
                    format!("'limit' must be an integer from 1 to {MAX_FILTER_LIMIT}"),
                )
            })?,
    };
    if let Some(prefix) = q.prefix.as_deref() {
        if connectra_domain::limits::has_nul(prefix) {
            return Err(ApiError::new(
                ErrorCode::InvalidFilter,
                "'prefix' contains a NUL character (%00); no filter value has one",
            ));
        }
        if prefix.len() > MAX_FILTER_PREFIX_BYTES {
            return Err(ApiError::new(
                ErrorCode::InvalidFilter,
                format!(
                    "'prefix' is {} bytes; at most {MAX_FILTER_PREFIX_BYTES} are allowed",
                    prefix.len()
                ),
            ));
        }
    }
    let values = connectra_persistence::filters::list_filters(
        state.inner.repo.pool(),
        service,
        filter_key,
        q.prefix.as_deref(),
        limit,
    )
    .await?;
    Ok(HttpResponse::Ok().json(json!({ "data": values, "success": true })))
}

/// `GET /common/jobs/{uuid}/download-url`: a presigned GET of a completed
/// export's file.
pub(crate) async fn download_url(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let job = find_job(&state, &path).await?;
    let uuid = job.uuid;
    let conflict = |why: String| ApiError::new(ErrorCode::Conflict, why);
    if job.job_type != EXPORT_CSV_FILE {
        return Err(conflict(format!(
            "job '{uuid}' is a {} job, not an export",
            job.job_type
        )));
    }
    if job.status != JobStatus::Completed {
        return Err(conflict(format!(
            "job '{uuid}' is '{}'; its file can be downloaded once it is completed",
            job.status
        )));
    }
    let key = job
        .response()
        .s3_key
        .ok_or_else(|| conflict(format!("job '{uuid}' recorded no s3_key")))?;
    let s3 = state
        .s3
        .as_deref()
        .ok_or_else(|| ApiError::new(ErrorCode::Unavailable, "S3 is not configured"))?;
    let bucket = job
        .data
        .get("s3_bucket")
        .and_then(|b| b.as_str())
        .unwrap_or(&s3.default_bucket)
        .to_string();
    let url = s3
        .storage
        .presign_get(&bucket, &key, DOWNLOAD_URL_EXPIRES_SECS)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "presigning a download URL failed");
            ApiError::new(ErrorCode::Internal, "the download URL could not be made")
        })?;
    Ok(HttpResponse::Ok().json(json!({
        "download_url": url,
        "s3_key": key,
        "s3_bucket": bucket,
        "expires_in": DOWNLOAD_URL_EXPIRES_SECS,
        "success": true,
    })))
}
