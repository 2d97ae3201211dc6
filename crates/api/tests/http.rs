//! Black-box HTTP tests of the Jobs API against a real PostgreSQL: each test
//! gets its own database cloned from the migrated template.

#![allow(clippy::unwrap_used)]

mod common;

use actix_web::dev::Service;
use actix_web::http::StatusCode;
use actix_web::{test, App};
use common::{call, error_code};
use connectra_api::{configure, AppState};
use connectra_domain::job::{CreateRules, EXPORT_CSV_FILE, INSERT_CSV_FILE, REINDEX_SEARCH};
use connectra_persistence::testing::TestDb;
use connectra_persistence::JobRepo;
use serde_json::{json, Value};

const KEY: &str = "test-key-1";
const LIMIT: usize = 4096;

fn state(db: &TestDb) -> AppState {
    let rules = CreateRules {
        job_types: [INSERT_CSV_FILE, EXPORT_CSV_FILE, REINDEX_SEARCH]
            .into_iter()
            .map(String::from)
            .collect(),
        allowed_buckets: ["connectra".to_string()].into_iter().collect(),
        default_retry_interval: 30,
    };
    AppState::new(
        JobRepo::new(db.pool()),
        vec!["other-key".into(), KEY.into()],
        rules,
        LIMIT,
    )
}

macro_rules! app {
    ($db:expr) => {
        test::init_service(App::new().configure(configure(state(&$db)))).await
    };
}

fn post(uri: &str, body: Value) -> test::TestRequest {
    test::TestRequest::post()
        .uri(uri)
        .insert_header(("X-API-Key", KEY))
        .set_json(body)
}

fn insert_job() -> Value {
    json!({"job_type": "insert_csv_file",
           "job_data": {"s3_key": "uploads/contacts.csv", "s3_bucket": "connectra"},
           "retry_count": 3})
}

#[actix_web::test]
async fn creating_a_job_returns_201_with_the_guides_message_and_the_new_job() {
    let db = TestDb::new().await;
    let app = app!(db);
    let (status, body) = call(&app, post("/common/jobs/create", insert_job()).to_request()).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(body["message"], "Job created successfully");
    assert_eq!(body["success"], true);
    let job = &body["data"];
    assert_eq!(job["status"], "open");
    assert_eq!(job["job_type"], "insert_csv_file");
    assert_eq!(job["retry_count"], 3);
    assert_eq!(job["retry_interval"], 30);
    assert_eq!(job["data"]["s3_key"], "uploads/contacts.csv");
    uuid::Uuid::parse_str(job["uuid"].as_str().unwrap()).unwrap();

    // it is really stored: fetch it back by uuid
    let uri = format!("/common/jobs/{}", job["uuid"].as_str().unwrap());
    let req = test::TestRequest::get()
        .uri(&uri)
        .insert_header(("X-API-Key", KEY))
        .to_request();
    let (status, got) = call(&app, req).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&got["data"], job);
}

#[actix_web::test]
async fn list_returns_every_field_of_the_guides_table_newest_first_and_filtered() {
    let db = TestDb::new().await;
    let app = app!(db);
    for i in 0..3 {
        let mut j = insert_job();
        j["job_data"]["s3_key"] = json!(format!("k{i}.csv"));
        let resp = app
            .call(post("/common/jobs/create", j).to_request())
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED);
    }
    let export = json!({"job_type": "export_csv_file", "job_data": {"service": "company",
        "vql": {"select_columns": ["name"]}}});
    let resp = app
        .call(post("/common/jobs/create", export).to_request())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);

    let (status, body) = call(&app, post("/common/jobs", json!({})).to_request()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["success"], true);
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), 4);
    assert_eq!(data[0]["job_type"], "export_csv_file", "newest first");
    assert_eq!(data[1]["data"]["s3_key"], "k2.csv");
    for field in [
        "id",
        "uuid",
        "job_type",
        "data",
        "status",
        "job_response",
        "retry_count",
        "retry_interval",
        "run_after",
        "created_at",
        "updated_at",
    ] {
        assert!(
            data[0].get(field).is_some(),
            "list item lacks '{field}': {}",
            data[0]
        );
    }

    let (_, body) = call(
        &app,
        post(
            "/common/jobs",
            json!({"job_type": "insert_csv_file", "status": ["open"], "limit": 2}),
        )
        .to_request(),
    )
    .await;
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert!(data.iter().all(|j| j["job_type"] == "insert_csv_file"));

    let (_, body) = call(
        &app,
        post("/common/jobs", json!({"status": ["completed"]})).to_request(),
    )
    .await;
    assert_eq!(body["data"].as_array().unwrap().len(), 0);

    // an empty body (no content type at all) lists everything
    let req = test::TestRequest::post()
        .uri("/common/jobs")
        .insert_header(("X-API-Key", KEY))
        .to_request();
    let (status, body) = call(&app, req).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"].as_array().unwrap().len(), 4);
}

#[actix_web::test]
async fn a_missing_or_wrong_api_key_gets_401_on_every_protected_route() {
    let db = TestDb::new().await;
    let app = app!(db);
    let routes = [
        ("POST", "/common/jobs/create"),
        ("POST", "/common/jobs"),
        ("GET", "/common/jobs/7f1c3f34-7c39-4d62-8e0c-1c5b3f0e8f5e"),
        (
            "POST",
            "/common/jobs/7f1c3f34-7c39-4d62-8e0c-1c5b3f0e8f5e/cancel",
        ),
    ];
    for (method, uri) in routes {
        for key in [None, Some("wrong"), Some("test-key-"), Some("test-key-11")] {
            let mut req = match method {
                "GET" => test::TestRequest::get(),
                _ => test::TestRequest::post().set_json(insert_job()),
            }
            .uri(uri);
            if let Some(k) = key {
                req = req.insert_header(("X-API-Key", k));
            }
            let (status, body) = call(&app, req.to_request()).await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{method} {uri} with {key:?}"
            );
            assert_eq!(error_code(&body), "ERR_UNAUTHORIZED");
        }
    }
    // nothing was created by the rejected calls
    let (_, body) = call(&app, post("/common/jobs", json!({})).to_request()).await;
    assert_eq!(body["data"].as_array().unwrap().len(), 0);
    // the second configured key works too
    let req = test::TestRequest::post()
        .uri("/common/jobs")
        .insert_header(("X-API-Key", "other-key"))
        .to_request();
    assert_eq!(app.call(req).await.unwrap().status(), StatusCode::OK);
}

#[actix_web::test]
async fn each_bad_create_body_gets_its_own_error_code() {
    let db = TestDb::new().await;
    let app = app!(db);
    let cases = [
        (
            json!({"job_data": {"s3_key": "a.csv"}}),
            "ERR_MISSING_JOB_TYPE",
        ),
        (
            json!({"job_type": "insert_csv_file"}),
            "ERR_MISSING_JOB_DATA",
        ),
        (
            json!({"job_type": "insert_csv_file", "job_data": {"s3_key": "a.csv"}, "retry_count": -1}),
            "ERR_INVALID_RETRY_COUNT",
        ),
        (
            json!({"job_type": "insert_csv_file", "job_data": {"s3_key": "a.csv"}, "retry_count": 2.5}),
            "ERR_INVALID_RETRY_COUNT",
        ),
        (
            json!({"job_type": "insert_csv_file", "job_data": {"s3_key": "a.csv"}, "retry_count": "three"}),
            "ERR_INVALID_RETRY_COUNT",
        ),
        (
            json!({"job_type": "export_csv_file", "job_data": {"service": "contact", "vql": {"where": {"keyword_match": {"must": {"country": ["USA"]}}}}}}),
            "ERR_MISSING_SELECT_COLUMNS",
        ),
        (
            json!({"job_type": "export_csv_file", "job_data": {"service": "contact", "vql": {"select_columns": []}}}),
            "ERR_MISSING_SELECT_COLUMNS",
        ),
        (
            json!({"job_type": "delete_everything", "job_data": {}}),
            "ERR_INVALID_JOB_TYPE",
        ),
        (
            json!({"job_type": "insert_csv_file", "job_data": {}}),
            "ERR_MISSING_S3_KEY",
        ),
        (
            json!({"job_type": "insert_csv_file", "job_data": {"s3_key": "a.csv", "s3_bucket": "someone-elses"}}),
            "ERR_BUCKET_NOT_ALLOWED",
        ),
        (
            json!({"job_type": "export_csv_file", "job_data": {"service": "contact", "s3_bucket": "someone-elses", "vql": {"select_columns": ["email"]}}}),
            "ERR_BUCKET_NOT_ALLOWED",
        ),
        (
            json!({"job_type": "export_csv_file", "job_data": {"service": "people", "vql": {"select_columns": ["email"]}}}),
            "ERR_UNKNOWN_SERVICE",
        ),
        (
            json!({"job_type": "export_csv_file", "job_data": {"service": "contact", "vql": {"select_columns": ["shoe_size"]}}}),
            "ERR_UNKNOWN_FIELD",
        ),
        (
            json!({"job_type": "export_csv_file", "job_data": {"service": "contact", "vql": {"select_columns": ["email"], "where": {"keyword_match": {"must": {"shoe_size": ["9"]}}}}}}),
            "ERR_UNKNOWN_FIELD",
        ),
        (
            json!({"job_type": "insert_csv_file", "job_data": {"s3_key": "a.csv"}, "priority": 1}),
            "ERR_INVALID_BODY",
        ),
        (json!([1, 2]), "ERR_INVALID_BODY"),
        (
            json!({"job_type": "reindex_search", "job_data": {"service": "people"}}),
            "ERR_UNKNOWN_SERVICE",
        ),
        (
            json!({"job_type": "reindex_search", "job_data": {"service": "contact", "force": true}}),
            "ERR_INVALID_JOB_DATA",
        ),
    ];
    for (body, want) in cases {
        let (status, got) =
            call(&app, post("/common/jobs/create", body.clone()).to_request()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(error_code(&got), want, "{body} -> {got}");
    }
    // the guide's exact sentence
    let (_, got) = call(&app, post("/common/jobs/create", json!({})).to_request()).await;
    assert_eq!(got["error"], "ERR_MISSING_JOB_TYPE: the 'job_type' field is required; specify a valid job type such as 'insert_csv_file' or 'export_csv_file'");
    // and none of them created a job
    let (_, listed) = call(&app, post("/common/jobs", json!({})).to_request()).await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 0);
}

#[actix_web::test]
async fn malformed_json_wrong_content_type_and_oversized_bodies_get_json_errors() {
    let db = TestDb::new().await;
    let app = app!(db);
    let raw = |body: Vec<u8>, ct: Option<&str>| {
        let mut r = test::TestRequest::post()
            .uri("/common/jobs/create")
            .insert_header(("X-API-Key", KEY))
            .set_payload(body);
        if let Some(ct) = ct {
            r = r.insert_header(("Content-Type", ct));
        }
        r.to_request()
    };
    let (status, body) = call(
        &app,
        raw(b"{\"job_type\": ".to_vec(), Some("application/json")),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&body), "ERR_INVALID_BODY");

    let (status, body) = call(
        &app,
        raw(
            b"job_type=x".to_vec(),
            Some("application/x-www-form-urlencoded"),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(error_code(&body), "ERR_UNSUPPORTED_MEDIA_TYPE");

    let (status, body) = call(&app, raw(insert_job().to_string().into_bytes(), None)).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(error_code(&body), "ERR_UNSUPPORTED_MEDIA_TYPE");

    let mut big = insert_job();
    big["job_data"]["s3_key"] = json!("x".repeat(LIMIT + 1));
    let (status, body) = call(
        &app,
        raw(big.to_string().into_bytes(), Some("application/json")),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error_code(&body), "ERR_PAYLOAD_TOO_LARGE");

    let (status, body) = call(&app, raw(Vec::new(), Some("application/json"))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&body), "ERR_INVALID_BODY");

    let (status, body) = call(&app, raw(b"\xff\xfe".to_vec(), Some("application/json"))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&body), "ERR_INVALID_BODY");

    let (status, body) = call(
        &app,
        post("/common/jobs", json!({"limit": 101})).to_request(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&body), "ERR_INVALID_FILTER");
}

#[actix_web::test]
async fn unknown_jobs_bad_uuids_and_unknown_routes_are_json_404s_and_400s() {
    let db = TestDb::new().await;
    let app = app!(db);
    let get = |uri: &str| {
        test::TestRequest::get()
            .uri(uri)
            .insert_header(("X-API-Key", KEY))
            .to_request()
    };
    let (status, body) = call(
        &app,
        get("/common/jobs/7f1c3f34-7c39-4d62-8e0c-1c5b3f0e8f5e"),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&body), "ERR_NOT_FOUND");
    let (status, body) = call(&app, get("/common/jobs/not-a-uuid")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&body), "ERR_INVALID_UUID");
    let (status, body) = call(&app, get("/nowhere")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&body), "ERR_NOT_FOUND");
}

#[actix_web::test]
async fn cancelling_an_open_job_fails_it_for_good_and_a_second_cancel_conflicts() {
    let db = TestDb::new().await;
    let app = app!(db);
    let (_, created) = call(&app, post("/common/jobs/create", insert_job()).to_request()).await;
    let uuid = created["data"]["uuid"].as_str().unwrap().to_string();
    let cancel = || post(&format!("/common/jobs/{uuid}/cancel"), json!({})).to_request();
    let (status, body) = call(&app, cancel()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"]["status"], "failed");
    assert_eq!(
        body["data"]["run_after"],
        Value::Null,
        "a cancelled job is never retried"
    );
    assert_eq!(body["data"]["job_response"]["cancelled"], true);
    let (status, body) = call(&app, cancel()).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(error_code(&body), "ERR_CONFLICT");
}

#[actix_web::test]
async fn health_needs_no_key_and_ready_checks_the_database() {
    let db = TestDb::new().await;
    let app = app!(db);
    let (status, body) = call(&app, test::TestRequest::get().uri("/health").to_request()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "ok");
    let (status, body) = call(&app, test::TestRequest::get().uri("/ready").to_request()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["checks"]["database"], "ok");
}

#[actix_web::test]
async fn ready_reports_503_when_the_database_is_gone() {
    let pool =
        connectra_persistence::build_pool("postgres://postgres@127.0.0.1:1/none", 1).unwrap();
    let st = AppState::new(
        JobRepo::new(pool),
        vec![KEY.into()],
        CreateRules {
            job_types: Default::default(),
            allowed_buckets: Default::default(),
            default_retry_interval: 30,
        },
        LIMIT,
    );
    let app = test::init_service(App::new().configure(configure(st))).await;
    let (status, body) = call(&app, test::TestRequest::get().uri("/ready").to_request()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error_code(&body), "ERR_UNAVAILABLE");
    // and a request that needs the database is a 503, not a 500
    let (status, body) = call(&app, post("/common/jobs", json!({})).to_request()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error_code(&body), "ERR_UNAVAILABLE");
}

#[actix_web::test]
async fn only_a_failed_job_can_be_retried_and_a_retry_makes_it_due_now() {
    let db = TestDb::new().await;
    let app = app!(db);
    let (_, created) = call(&app, post("/common/jobs/create", insert_job()).to_request()).await;
    let uuid = created["data"]["uuid"].as_str().unwrap().to_string();
    let retry = |uuid: &str| post(&format!("/common/jobs/{uuid}/retry"), json!({})).to_request();

    let (status, body) = call(&app, retry(&uuid)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(error_code(&body), "ERR_CONFLICT");
    assert!(body["error"].as_str().unwrap().contains("'open'"), "{body}");

    // failed for good: its retries used up, no run_after
    let (client, conn) = tokio_postgres::connect(db.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .execute(
            "UPDATE jobs SET status = 'failed', attempts = 4, run_after = NULL WHERE uuid::text = $1",
            &[&uuid],
        )
        .await
        .unwrap();
    let (status, body) = call(&app, retry(&uuid)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["status"], "failed");
    assert_eq!(body["data"]["attempts"], 4, "attempts go on counting");
    let due: bool = client
        .query_one(
            "SELECT run_after <= now() FROM jobs WHERE uuid::text = $1",
            &[&uuid],
        )
        .await
        .unwrap()
        .get(0);
    assert!(due, "a retried job is due at once");

    // a cancelled job never runs again
    call(
        &app,
        post(&format!("/common/jobs/{uuid}/cancel"), json!({})).to_request(),
    )
    .await;
    let (status, body) = call(&app, retry(&uuid)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("cancelled"),
        "{body}"
    );

    let unknown = uuid::Uuid::new_v4().to_string();
    let (status, body) = call(&app, retry(&unknown)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = call(&app, retry("not-a-uuid")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

#[actix_web::test]
async fn a_known_path_with_another_method_is_a_json_405_naming_the_allowed_ones() {
    let db = TestDb::new().await;
    let app = app!(db);
    let req = test::TestRequest::delete().uri("/health").to_request();
    let resp = app.call(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(resp.headers().get("allow").unwrap(), "GET");
    // a literal route wins over the `{uuid}` pattern beside it
    let req = test::TestRequest::put()
        .uri("/common/jobs/create")
        .insert_header(("X-API-Key", KEY))
        .to_request();
    let resp = app.call(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(resp.headers().get("allow").unwrap(), "POST");
    // GET, the method of the `{uuid}` route, too: `create` is not a uuid
    let req = test::TestRequest::get()
        .uri("/common/jobs/create")
        .insert_header(("X-API-Key", KEY))
        .to_request();
    let resp = app.call(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(resp.headers().get("allow").unwrap(), "POST");
    let (status, body) = call(
        &app,
        test::TestRequest::delete()
            .uri(&format!("/common/jobs/{}", uuid::Uuid::new_v4()))
            .insert_header(("X-API-Key", KEY))
            .to_request(),
    )
    .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(error_code(&body), "ERR_METHOD_NOT_ALLOWED");
    // behind the key, the key comes first
    let (status, _) = call(
        &app,
        test::TestRequest::delete().uri("/common/jobs").to_request(),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // a list filter that is not an object is refused, not read as fields
    let (status, body) = call(&app, post("/common/jobs", json!([null, null])).to_request()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(error_code(&body), "ERR_INVALID_FILTER");
}
