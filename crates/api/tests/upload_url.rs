//! Black-box tests of `GET /common/upload-url` and the S3 part of `/ready`,
//! against a real PostgreSQL (a database per test) and a real S3 (SeaweedFS;
//! `S3_ENDPOINT`, `S3_REGION`, `S3_ACCESS_KEY_ID`, `S3_SECRET_ACCESS_KEY`,
//! `S3_PATH_STYLE`, `S3_BUCKET`, defaulting to the local stack's values).

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use actix_web::http::StatusCode;
use actix_web::{test, App};
use common::{bucket, call, error_code, storage};
use connectra_api::{configure, AppState};
use connectra_domain::job::{CreateRules, INSERT_CSV_FILE};
use connectra_persistence::testing::TestDb;
use connectra_persistence::JobRepo;
use connectra_storage::{S3Config, Storage};
use serde_json::json;

const KEY: &str = "test-key-1";

fn base_state(db: &TestDb) -> AppState {
    let rules = CreateRules {
        job_types: [INSERT_CSV_FILE.to_string()].into_iter().collect(),
        allowed_buckets: [bucket()].into_iter().collect(),
        default_retry_interval: 30,
    };
    AppState::new(JobRepo::new(db.pool()), vec![KEY.into()], rules, 4096)
}

/// Uploads go under a fresh prefix per test, so tests never see each other's keys.
fn state(db: &TestDb, prefix: &str) -> AppState {
    base_state(db).with_storage(storage(), bucket(), prefix.to_string())
}

/// `GET /ready` on an app made from `st`.
async fn ready_of(st: AppState) -> (StatusCode, serde_json::Value) {
    let app = test::init_service(App::new().configure(configure(st))).await;
    call(&app, test::TestRequest::get().uri("/ready").to_request()).await
}

/// A client of an S3 endpoint other than the test stack's.
fn storage_at(endpoint: &str) -> Storage {
    Storage::new(&S3Config {
        endpoint: Some(endpoint.into()),
        region: "us-east-1".into(),
        access_key_id: Some("x".into()),
        secret_access_key: Some("y".into()),
        path_style: true,
    })
    .unwrap()
}

fn test_prefix() -> String {
    format!("api-tests/{}/uploads", uuid::Uuid::new_v4())
}

fn get(uri: &str) -> test::TestRequest {
    test::TestRequest::get()
        .uri(uri)
        .insert_header(("X-API-Key", KEY))
}

#[actix_web::test]
async fn the_upload_url_accepts_a_plain_curl_put_of_the_file() {
    let db = TestDb::new().await;
    let prefix = test_prefix();
    let app = test::init_service(App::new().configure(configure(state(&db, &prefix)))).await;
    let (status, body) = call(
        &app,
        get("/common/upload-url?filename=my%20contacts.csv").to_request(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["success"], true);
    assert_eq!(body["expires_in"], 3600);
    assert_eq!(body["s3_bucket"], bucket());
    let key = body["s3_key"].as_str().unwrap().to_string();
    let file_part = key
        .strip_prefix(&format!("{prefix}/"))
        .unwrap_or_else(|| panic!("'{key}' is not under '{prefix}/'"));
    let (uuid, name) = file_part.split_at(36);
    uuid::Uuid::parse_str(uuid).unwrap();
    assert_eq!(name, "-my_contacts.csv");
    let url = body["upload_url"].as_str().unwrap();

    // As the guide's Example 1 does it: curl -X PUT --upload-file.
    let content = b"first_name,last_name,email\nAda,Lovelace,ada@example.com\n".repeat(500);
    let file = std::env::temp_dir().join(format!("connectra-upload-{}.csv", uuid::Uuid::new_v4()));
    std::fs::write(&file, &content).unwrap();
    let out = Command::new("curl")
        .args(["--silent", "--show-error", "--fail", "-X", "PUT"])
        .args(["-H", "Content-Type: text/csv", "--upload-file"])
        .arg(&file)
        .arg(url)
        .output()
        .unwrap();
    std::fs::remove_file(&file).unwrap();
    assert!(
        out.status.success(),
        "curl PUT failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let s = storage();
    let meta = s.head(&bucket(), &key).await.unwrap().unwrap();
    assert_eq!(meta.size, content.len() as u64);

    // Two requests for the same name never share a key.
    let (_, again) = call(
        &app,
        get("/common/upload-url?filename=my%20contacts.csv").to_request(),
    )
    .await;
    assert_ne!(again["s3_key"], body["s3_key"]);

    s.delete(&bucket(), &key).await.unwrap();
}

#[actix_web::test]
async fn the_upload_url_needs_an_api_key() {
    let db = TestDb::new().await;
    let app = test::init_service(App::new().configure(configure(state(&db, &test_prefix())))).await;
    for req in [
        test::TestRequest::get().uri("/common/upload-url?filename=a.csv"),
        test::TestRequest::get()
            .uri("/common/upload-url?filename=a.csv")
            .insert_header(("X-API-Key", "wrong")),
    ] {
        let (status, body) = call(&app, req.to_request()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(error_code(&body), "ERR_UNAUTHORIZED");
    }
}

#[actix_web::test]
async fn bad_filenames_get_400_json() {
    let db = TestDb::new().await;
    let app = test::init_service(App::new().configure(configure(state(&db, &test_prefix())))).await;
    let long = "a".repeat(256);
    let cases = [
        "/common/upload-url".to_string(),
        "/common/upload-url?filename=".to_string(),
        "/common/upload-url?other=x".to_string(),
        format!("/common/upload-url?filename={long}"),
        "/common/upload-url?filename=../etc/passwd".to_string(),
        "/common/upload-url?filename=dir%2Fa.csv".to_string(),
        "/common/upload-url?filename=dir%5Ca.csv".to_string(),
        "/common/upload-url?filename=a%0Ab.csv".to_string(),
        "/common/upload-url?filename=a%00b.csv".to_string(),
        "/common/upload-url?filename=..".to_string(),
    ];
    for uri in cases {
        let (status, body) = call(&app, get(&uri).to_request()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
        assert_eq!(error_code(&body), "ERR_INVALID_FILENAME", "{uri}: {body}");
    }
    // 255 characters is still fine.
    let ok = format!("/common/upload-url?filename={}", "a".repeat(255));
    let (status, _) = call(&app, get(&ok).to_request()).await;
    assert_eq!(status, StatusCode::OK);
}

#[actix_web::test]
async fn without_s3_the_upload_url_is_503_and_ready_checks_only_the_database() {
    let db = TestDb::new().await;
    let app = test::init_service(App::new().configure(configure(base_state(&db)))).await;
    let (status, body) = call(&app, get("/common/upload-url?filename=a.csv").to_request()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"], "ERR_UNAVAILABLE: S3 is not configured");
    let (status, body) = call(&app, test::TestRequest::get().uri("/ready").to_request()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["checks"], json!({"database": "ok"}));
}

#[actix_web::test]
async fn ready_checks_s3_when_it_is_configured() {
    let db = TestDb::new().await;
    let (status, body) = ready_of(state(&db, &test_prefix())).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["checks"], json!({"database": "ok", "s3": "ok"}));

    // A bucket that does not exist makes the service unready.
    let missing = format!("connectra-missing-{}", uuid::Uuid::new_v4().simple());
    let st = base_state(&db).with_storage(storage(), missing.clone(), "uploads".into());
    let (status, body) = ready_of(st).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        body["checks"],
        json!({"database": "ok", "s3": "unavailable"})
    );
    assert_eq!(error_code(&body), "ERR_UNAVAILABLE");
    assert!(body["error"].as_str().unwrap().contains(&missing), "{body}");

    // So does an S3 that does not answer.
    let st =
        base_state(&db).with_storage(storage_at("http://127.0.0.1:1"), bucket(), "uploads".into());
    let (status, body) = ready_of(st).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["checks"]["s3"], "unavailable");

    // And one that accepts connections but never answers: the probe gives up
    // after its own short timeout, long before the S3 client's.
    let hanging = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", hanging.local_addr().unwrap());
    let st = base_state(&db).with_storage(storage_at(&endpoint), bucket(), "uploads".into());
    let (status, body) = ready_of(st).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        body["checks"],
        json!({"database": "ok", "s3": "unavailable"})
    );
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("S3 did not answer within 3 s"),
        "{body}"
    );
    drop(hanging);
}
