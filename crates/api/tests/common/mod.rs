//! Helpers shared by the API's black-box tests.

#![allow(dead_code, clippy::unwrap_used)]

use actix_web::body::MessageBody;
use actix_web::dev::ServiceResponse;
use actix_web::http::StatusCode;
use actix_web::test;
use connectra_storage::{S3Config, Storage};
use serde_json::{json, Value};

/// The status and JSON body of a response; asserts that it is JSON.
pub async fn read(resp: ServiceResponse<impl MessageBody>) -> (StatusCode, Value) {
    let status = resp.status();
    let ct = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string());
    let body = test::read_body(resp).await;
    assert_eq!(
        ct.as_deref(),
        Some("application/json"),
        "every response is JSON; body was {body:?}"
    );
    (status, serde_json::from_slice(&body).unwrap())
}

/// Sends `req` to `app` and reads the answer with [`read`].
pub async fn call<S, B>(app: &S, req: actix_http::Request) -> (StatusCode, Value)
where
    S: actix_web::dev::Service<
        actix_http::Request,
        Response = ServiceResponse<B>,
        Error = actix_web::Error,
    >,
    B: MessageBody,
{
    read(app.call(req).await.unwrap()).await
}

/// A `POST` of `body` as JSON, authenticated with `key`.
pub fn post_as(key: &str, uri: &str, body: &Value) -> actix_http::Request {
    test::TestRequest::post()
        .uri(uri)
        .insert_header(("X-API-Key", key))
        .set_json(body)
        .to_request()
}

/// A `GET`, authenticated with `key`.
pub fn get_as(key: &str, uri: &str) -> actix_http::Request {
    test::TestRequest::get()
        .uri(uri)
        .insert_header(("X-API-Key", key))
        .to_request()
}

/// The `ERR_…` code of an error body; asserts `success: false`.
pub fn error_code(body: &Value) -> &str {
    assert_eq!(body["success"], json!(false), "{body}");
    body["error"].as_str().unwrap().split(':').next().unwrap()
}

pub fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| default.to_string())
}

/// The local stack's S3, or the one the `S3_*` variables name.
pub fn storage() -> Storage {
    Storage::new(&S3Config {
        endpoint: Some(env_or("S3_ENDPOINT", "http://127.0.0.1:8333")),
        region: env_or("S3_REGION", "us-east-1"),
        access_key_id: Some(env_or("S3_ACCESS_KEY_ID", "testaccess")),
        secret_access_key: Some(env_or("S3_SECRET_ACCESS_KEY", "testsecret123")),
        path_style: env_or("S3_PATH_STYLE", "true") != "false",
    })
    .unwrap()
}

pub fn bucket() -> String {
    env_or("S3_BUCKET", "connectra")
}
