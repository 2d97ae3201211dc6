//! Reading JSON bodies ourselves, so that every failure (wrong content type,
//! oversized, malformed) gets the guide's JSON error shape.

use actix_web::http::header;
use actix_web::{web, HttpRequest};
use connectra_domain::ErrorCode;
use futures::StreamExt;
use serde_json::Value;

use crate::error::ApiError;

/// Reads the body as a JSON value. An empty body, or `null`, reads as `{}`
/// when `empty_is_object` (the list and search endpoints); otherwise an
/// empty body is an error.
pub async fn json_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
    empty_is_object: bool,
) -> Result<Value, ApiError> {
    let too_large = || {
        ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("the request body is larger than the limit of {limit} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::new(
                ErrorCode::InvalidBody,
                format!("cannot read the request body: {e}"),
            )
        })?;
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        if empty_is_object {
            return Ok(Value::Object(Default::default()));
        }
        return Err(ApiError::new(
            ErrorCode::InvalidBody,
            "the request body is empty; send a JSON object",
        ));
    }
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = content_type.split(';').next().unwrap_or("").trim();
    if !(mime.eq_ignore_ascii_case("application/json")
        || mime.to_ascii_lowercase().ends_with("+json"))
    {
        let shown = if mime.is_empty() { "none" } else { mime };
        return Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            format!("the body must be sent with 'Content-Type: application/json', not '{shown}'"),
        ));
    }
    let value: Value = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidBody,
            format!("the request body is not valid JSON: {e}"),
        )
    })?;
    // where no body means {}, so does `null`
    if empty_is_object && value.is_null() {
        return Ok(Value::Object(Default::default()));
    }
    Ok(value)
}
