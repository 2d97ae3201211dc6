//! The one error type that users see.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use connectra_domain::{DomainError, ErrorCode};
use serde_json::json;

/// An error rendered as `{"error": "ERR_CODE: sentence", "success": false}`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ApiError(pub DomainError);

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self(DomainError::new(code, message))
    }

    pub fn unauthorized() -> Self {
        Self::new(
            ErrorCode::Unauthorized,
            "a valid 'X-API-Key' header is required",
        )
    }

    pub fn job_not_found(uuid: &uuid::Uuid) -> Self {
        Self::new(ErrorCode::NotFound, format!("no job with uuid '{uuid}'"))
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        Self(e)
    }
}

impl From<connectra_persistence::Error> for ApiError {
    fn from(e: connectra_persistence::Error) -> Self {
        use connectra_persistence::Error as E;
        tracing::error!(error = %e, "database error while serving a request");
        match e {
            E::Pool(_) | E::Connection(_) => Self::new(
                ErrorCode::Unavailable,
                "the database is unavailable; try again shortly",
            ),
            _ => Self::new(ErrorCode::Internal, "the request failed on the server"),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self.0.code {
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::Conflict => StatusCode::CONFLICT,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status_code())
            .json(json!({ "error": self.0.to_string(), "success": false }))
    }
}
