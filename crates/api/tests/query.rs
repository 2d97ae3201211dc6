//! Black-box tests of the query surface: `POST /contacts/search`,
//! `POST /companies/search`, `GET /common/filters` and
//! `GET /common/jobs/{uuid}/download-url`, against real PostgreSQL and S3.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use actix_web::http::StatusCode;
use actix_web::{test, App};
use common::{bucket, call, error_code, storage};
use connectra_api::{configure, AppState};
use connectra_domain::job::{CreateRules, EXPORT_CSV_FILE};
use connectra_persistence::testing::TestDb;
use connectra_persistence::{JobRepo, PgPool};
use diesel_async::RunQueryDsl;
use serde_json::{json, Value};

const KEY: &str = "k";

type Req = actix_http::Request;

fn state(db: &TestDb) -> AppState {
    let rules = CreateRules {
        job_types: [EXPORT_CSV_FILE.to_string()].into_iter().collect(),
        allowed_buckets: Default::default(),
        default_retry_interval: 30,
    };
    AppState::new(JobRepo::new(db.pool()), vec![KEY.into()], rules, 4096).with_storage(
        storage(),
        bucket(),
        "uploads".into(),
    )
}

async fn exec(pool: &PgPool, sql: &str) {
    let mut conn = pool.get().await.unwrap();
    diesel::sql_query(sql).execute(&mut conn).await.unwrap();
}

fn post(uri: &str, body: Value) -> Req {
    common::post_as(KEY, uri, &body)
}

fn get(uri: &str) -> Req {
    common::get_as(KEY, uri)
}

async fn seed(pool: &PgPool) {
    exec(
        pool,
        "INSERT INTO contacts (uuid, email, first_name, country, departments) VALUES
        ('00000000-0000-0000-0000-000000000001', 'a@x.io', 'Ann', 'USA', '{Sales}'),
        ('00000000-0000-0000-0000-000000000002', 'b@x.io', 'Bob', 'usa', '{Engineering,Sales}'),
        ('00000000-0000-0000-0000-000000000003', 'c@x.io', 'Cid', 'Germany', '{}'),
        ('00000000-0000-0000-0000-000000000004', 'd@x.io', 'Dee', NULL, '{}')",
    )
    .await;
}

#[actix_web::test]
async fn search_pages_through_matches_with_search_after_and_honours_select_columns() {
    let db = TestDb::new().await;
    seed(&db.pool()).await;
    let app = test::init_service(App::new().configure(configure(state(&db)))).await;
    let q = json!({"where": {"keyword_match": {"must": {"country": ["USA"]}}},
                   "select_columns": ["email", "first_name"], "order_by": [{"order_by": "email", "order_direction": "desc"}],
                   "limit": 1});
    let (status, page1) = call(&app, post("/contacts/search", q.clone())).await;
    assert_eq!(status, StatusCode::OK, "{page1}");
    assert_eq!(
        page1["data"],
        json!([{"email": "b@x.io", "first_name": "Bob"}])
    );
    let mut q2 = q.clone();
    q2["search_after"] = page1["next_search_after"].clone();
    let (_, page2) = call(&app, post("/contacts/search", q2.clone())).await;
    assert_eq!(
        page2["data"],
        json!([{"email": "a@x.io", "first_name": "Ann"}])
    );
    q2["search_after"] = page2["next_search_after"].clone();
    let (_, page3) = call(&app, post("/contacts/search", q2)).await;
    assert_eq!(page3["data"], json!([]));
    assert_eq!(page3["next_search_after"], Value::Null);
    // list any-of, and the company endpoint answers for its own service
    let (_, sales) = call(&app, post("/contacts/search", json!({"where": {"keyword_match": {"must": {"departments": ["sales"]}}}, "select_columns": ["uuid"]}))).await;
    assert_eq!(sales["data"].as_array().unwrap().len(), 2);
    let (status, _) = call(&app, post("/companies/search", json!({}))).await;
    assert_eq!(status, StatusCode::OK);
}

#[actix_web::test]
async fn bad_queries_get_400s_that_name_the_problem_and_search_needs_a_key() {
    let db = TestDb::new().await;
    let app = test::init_service(App::new().configure(configure(state(&db)))).await;
    let (status, body) = call(
        &app,
        post(
            "/contacts/search",
            json!({"where": {"keyword_match": {"must": {"shoe_size": ["9"]}}}}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&body), "ERR_UNKNOWN_FIELD");
    assert!(body["error"].as_str().unwrap().contains("shoe_size"));
    let (status, body) = call(&app, post("/companies/search", json!({"limit": 9000}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&body), "ERR_INVALID_VQL");
    let req = test::TestRequest::post()
        .uri("/contacts/search")
        .set_json(json!({}))
        .to_request();
    let (status, _) = call(&app, req).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[actix_web::test]
async fn filters_list_values_by_service_key_and_prefix() {
    let db = TestDb::new().await;
    exec(&db.pool(), "INSERT INTO filters_data (service, filter_key, value) VALUES
        ('contact', 'country', 'USA'), ('contact', 'country', 'Uganda'), ('contact', 'country', 'Germany'),
        ('contact', 'seniority', 'vp'), ('company', 'country', 'Uruguay')").await;
    let app = test::init_service(App::new().configure(configure(state(&db)))).await;
    let (status, body) = call(
        &app,
        get("/common/filters?service=contact&filter_key=country&prefix=u"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["data"],
        json!([{"filter_key": "country", "value": "USA"}, {"filter_key": "country", "value": "Uganda"}])
    );
    let (_, body) = call(&app, get("/common/filters?service=contact&limit=2")).await;
    assert_eq!(body["data"].as_array().unwrap().len(), 2);
    for (uri, want) in [
        ("/common/filters", "ERR_UNKNOWN_SERVICE"),
        ("/common/filters?service=people", "ERR_UNKNOWN_SERVICE"),
        (
            "/common/filters?service=contact&filter_key=email",
            "ERR_UNKNOWN_FIELD",
        ),
        (
            "/common/filters?service=contact&limit=0",
            "ERR_INVALID_FILTER",
        ),
        (
            "/common/filters?service=contact&colour=red",
            "ERR_INVALID_FILTER",
        ),
    ] {
        let (status, body) = call(&app, get(uri)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
        assert_eq!(error_code(&body), want, "{uri}");
    }
}

#[actix_web::test]
async fn a_completed_export_has_a_download_url_that_curl_can_fetch() {
    let db = TestDb::new().await;
    let app = test::init_service(App::new().configure(configure(state(&db)))).await;
    let bucket = bucket();
    let key = format!("api-tests/{}/export.csv", uuid::Uuid::new_v4());
    storage()
        .put_bytes(&bucket, &key, b"email\na@x.io\n", "text/csv")
        .await
        .unwrap();
    let job = uuid::Uuid::new_v4();
    exec(
        &db.pool(),
        &format!(
            "INSERT INTO jobs (uuid, job_type, data, status, job_response) VALUES
        ('{job}', 'export_csv_file', '{{}}', 'completed', '{{\"s3_key\": \"{key}\"}}')"
        ),
    )
    .await;
    let (status, body) = call(&app, get(&format!("/common/jobs/{job}/download-url"))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["s3_key"], json!(key));
    let out = Command::new("curl")
        .args(["-fsS", body["download_url"].as_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout, b"email\na@x.io\n");

    // not an export, not completed, unknown
    let open = uuid::Uuid::new_v4();
    exec(
        &db.pool(),
        &format!(
            "INSERT INTO jobs (uuid, job_type, data) VALUES ('{open}', 'export_csv_file', '{{}}')"
        ),
    )
    .await;
    let (status, body) = call(&app, get(&format!("/common/jobs/{open}/download-url"))).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(body["error"].as_str().unwrap().contains("'open'"));
    let (status, _) = call(
        &app,
        get(&format!(
            "/common/jobs/{}/download-url",
            uuid::Uuid::new_v4()
        )),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
