//! Black-box tests with dirty input, against real PostgreSQL and OpenSearch:
//! no client mistake gets a 5xx, and every answer is JSON in the guide's
//! error shape (`{"success": false, "error": "ERR_CODE: message"}`).
//!
//! The fixed cases each pin one limit (timestamps past year 9999 in UTC, the
//! keyword_match and text_match caps, NUL characters, over-long strings, the
//! retry bounds, cursors); the last test throws a few hundred generated
//! bodies at the search and job endpoints. Set `DIRTY_INPUT_SEED` to replay
//! a run and `DIRTY_INPUT_CASES` to change how many bodies it generates.

#![allow(clippy::unwrap_used)]

mod common;

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use actix_web::body::MessageBody;
use actix_web::dev::ServiceResponse;
use actix_web::http::StatusCode;
use actix_web::{test, App};
use common::{call, error_code};
use connectra_api::{configure, AppState};
use connectra_domain::catalogue;
use connectra_domain::job::{CreateRules, EXPORT_CSV_FILE, INSERT_CSV_FILE};
use connectra_domain::Service;
use connectra_persistence::testing::TestDb;
use connectra_persistence::{JobRepo, PgPool};
use connectra_search::{Document, OpenSearchBackend, SearchBackend};
use diesel_async::RunQueryDsl;
use futures::FutureExt;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::{json, Value};

const KEY: &str = "dirty-key";
/// Big enough that the large bodies below reach validation instead of 413.
const BODY_LIMIT: usize = 8 * 1024 * 1024;

type Req = actix_http::Request;

// ---------------------------------------------------------------------------
// Fixture
// ---------------------------------------------------------------------------

fn rules() -> CreateRules {
    CreateRules {
        job_types: [INSERT_CSV_FILE, EXPORT_CSV_FILE]
            .into_iter()
            .map(String::from)
            .collect(),
        allowed_buckets: ["connectra".to_string()].into_iter().collect(),
        default_retry_interval: 30,
    }
}

/// The PostgreSQL search backend (the default).
fn pg_state(db: &TestDb) -> AppState {
    AppState::new(
        JobRepo::new(db.pool()),
        vec![KEY.into()],
        rules(),
        BODY_LIMIT,
    )
}

/// The same database for jobs, OpenSearch for the search endpoints.
fn os_state(db: &TestDb, os: &OsIndices) -> AppState {
    pg_state(db).with_search(os.backend.clone())
}

macro_rules! app {
    ($state:expr) => {
        test::init_service(App::new().configure(configure($state))).await
    };
}

fn opensearch_url() -> String {
    common::env_or("OPENSEARCH_URL", "http://127.0.0.1:9200")
}

/// An OpenSearch backend on indices of its own, deleted on drop.
#[derive(Debug)]
struct OsIndices {
    backend: Arc<OpenSearchBackend>,
    prefix: String,
}

impl OsIndices {
    async fn new() -> Self {
        let prefix = format!("test-dirty-{}", uuid::Uuid::new_v4().simple());
        let backend = OpenSearchBackend::new(&opensearch_url())
            .unwrap()
            .with_index_prefix(&prefix);
        backend.ensure_indices().await.unwrap_or_else(|e| {
            panic!(
                "OpenSearch at {} is needed ({e}); start it with `scripts/stack.sh up`",
                opensearch_url()
            )
        });
        Self {
            backend: Arc::new(backend),
            prefix,
        }
    }
}

impl Drop for OsIndices {
    fn drop(&mut self) {
        let prefix = self.prefix.clone();
        // A client of its own: the test's client has pooled connections tied
        // to the test's runtime, which is blocked right here.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            let Ok(backend) = OpenSearchBackend::new(&opensearch_url()) else {
                return;
            };
            let _ = rt.block_on(backend.with_index_prefix(&prefix).delete_indices());
        })
        .join();
    }
}

async fn exec(pool: &PgPool, sql: &str) {
    let mut conn = pool.get().await.unwrap();
    diesel::sql_query(sql).execute(&mut conn).await.unwrap();
}

fn doc(value: Value) -> Document {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

/// Three contacts and two companies, in PostgreSQL and (when given) in the
/// OpenSearch indices, so that searches have rows to sort and page through.
async fn seed(db: &TestDb, os: Option<&OsIndices>) {
    exec(
        &db.pool(),
        "INSERT INTO contacts (uuid, email, first_name, title, country, departments, created_at) VALUES
        ('00000000-0000-0000-0000-000000000001', 'a@x.io', 'Ann', 'Sales Director', 'USA', '{Sales}', '2024-01-31T09:30:00Z'),
        ('00000000-0000-0000-0000-000000000002', 'b@x.io', 'Bob', 'Staff Engineer', 'usa', '{Engineering,Sales}', '2024-02-01T00:00:00Z'),
        ('00000000-0000-0000-0000-000000000003', 'c@x.io', 'Cid', 'Engineer', 'Germany', '{}', '2024-03-01T00:00:00Z')",
    )
    .await;
    exec(
        &db.pool(),
        "INSERT INTO companies (uuid, name, country, employees_count, created_at) VALUES
        ('00000000-0000-0000-0000-000000000011', 'Acme', 'USA', 10, '2024-01-31T09:30:00Z'),
        ('00000000-0000-0000-0000-000000000012', 'Globex', 'Germany', 500, '2024-02-01T00:00:00Z')",
    )
    .await;
    let Some(os) = os else { return };
    // the documents are the rows as PostgreSQL holds them, as an import indexes them
    for service in [Service::Contact, Service::Company] {
        let docs = read_rows(db, service).await;
        os.backend.index(service, &docs).await.unwrap();
        os.backend.refresh(service).await.unwrap();
    }
}

#[derive(diesel::QueryableByName)]
struct JsonRow {
    #[diesel(sql_type = diesel::sql_types::Jsonb)]
    doc: Value,
}

/// Every row of `service`'s table as a document: `to_jsonb(t)`.
async fn read_rows(db: &TestDb, service: Service) -> Vec<Document> {
    let table = service.table();
    let mut conn = db.pool().get().await.unwrap();
    let rows: Vec<JsonRow> = diesel::sql_query(format!(
        "SELECT to_jsonb(t) - 'version' AS doc FROM {table} t ORDER BY id"
    ))
    .load(&mut *conn)
    .await
    .unwrap();
    rows.into_iter().map(|r| doc(r.doc)).collect()
}

fn post(uri: &str, body: &Value) -> Req {
    common::post_as(KEY, uri, body)
}

fn get(uri: &str) -> Req {
    common::get_as(KEY, uri)
}

/// What is wrong with an answer's shape, if anything: a 5xx, a 2xx without
/// `success: true`, or an error without `success: false` and an
/// `"ERR_UPPER_SNAKE: message"` string.
fn shape_problem(status: StatusCode, body: &Value) -> Option<String> {
    if status.is_server_error() {
        return Some(format!("a {status} answer: {body}"));
    }
    if status.is_success() {
        return (body["success"] != json!(true))
            .then(|| format!("a {status} answer without success: true: {body}"));
    }
    if body["success"] != json!(false) {
        return Some(format!("a {status} answer without success: false: {body}"));
    }
    let Some(error) = body["error"].as_str() else {
        return Some(format!("a {status} answer without an error string: {body}"));
    };
    let well_formed = error.split_once(": ").is_some_and(|(code, message)| {
        code.starts_with("ERR_")
            && code.len() > 4
            && code
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
            && !message.trim().is_empty()
    });
    (!well_formed)
        .then(|| format!("a {status} answer whose error is not 'ERR_CODE: message': {body}"))
}

/// Asserts a 400 with `code` whose message mentions every needle.
fn assert_400(status: StatusCode, body: &Value, code: &str, needles: &[&str], what: &str) {
    assert_eq!(status, StatusCode::BAD_REQUEST, "{what}: {body}");
    assert_eq!(shape_problem(status, body), None, "{what}");
    assert_eq!(error_code(body), code, "{what}: {body}");
    let message = body["error"].as_str().unwrap();
    for needle in needles {
        assert!(
            message.contains(needle),
            "{what}: {message:?} does not mention {needle:?}"
        );
    }
}

fn assert_200(status: StatusCode, body: &Value, what: &str) {
    assert_eq!(status, StatusCode::OK, "{what}: {body}");
    assert_eq!(body["success"], json!(true), "{what}: {body}");
}

/// The uuids of a search page's records, in order.
fn uuids(body: &Value) -> Vec<String> {
    body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["uuid"].as_str().unwrap().to_string())
        .collect()
}

fn contact_uuid(n: u32) -> String {
    format!("00000000-0000-0000-0000-{n:012}")
}

// ---------------------------------------------------------------------------
// 1. Timestamps past the end of time
// ---------------------------------------------------------------------------

#[actix_web::test]
async fn range_bounds_beyond_year_9999_in_utc_are_400s_naming_the_field_on_both_backends() {
    let db = TestDb::new().await;
    let os = OsIndices::new().await;
    seed(&db, Some(&os)).await;
    let apps = [
        ("postgres", app!(pg_state(&db))),
        ("opensearch", app!(os_state(&db, &os))),
    ];
    let range = |spec: Value| json!({"where": {"range_query": {"must": {"created_at": spec}}}});
    for (backend, app) in &apps {
        for spec in [
            // 10000-01-01T00:30Z once in UTC: the old code panicked converting it
            json!({"gte": "9999-12-31T23:30:00-01:00"}),
            // its next millisecond is in year 10000: the old code panicked adding it
            json!({"lte": "9999-12-31T23:59:59.999Z"}),
            json!({"gt": "9999-12-31T23:59:59.999Z"}),
            // year 0 once in UTC
            json!({"lt": "0001-01-01T00:00:00+00:01"}),
        ] {
            let what = format!("{backend}: created_at {spec}");
            let (status, body) = call(app, post("/contacts/search", &range(spec))).await;
            assert_400(
                status,
                &body,
                "ERR_INVALID_VQL",
                &["'created_at'", "year 1 to 9999"],
                &what,
            );
        }
        // in must_not too
        let q = json!({"where": {"range_query": {"must_not": {"created_at": {"gte": "9999-12-31T23:30:00-01:00"}}}}});
        let (status, body) = call(app, post("/contacts/search", &q)).await;
        assert_400(status, &body, "ERR_INVALID_VQL", &["'created_at'"], backend);

        // a far but representable bound is an ordinary query
        let (status, body) = call(
            app,
            post(
                "/contacts/search",
                &range(json!({"gte": "9999-06-01T00:00:00Z"})),
            ),
        )
        .await;
        assert_200(status, &body, backend);
        assert_eq!(body["data"], json!([]), "{backend}");
        let (status, body) = call(
            app,
            post(
                "/contacts/search",
                &range(json!({"lte": "9999-06-01T00:00:00Z"})),
            ),
        )
        .await;
        assert_200(status, &body, backend);
        assert_eq!(
            uuids(&body),
            [contact_uuid(1), contact_uuid(2), contact_uuid(3)],
            "{backend}"
        );
    }
}

// ---------------------------------------------------------------------------
// 2. The keyword_match and text_match caps
// ---------------------------------------------------------------------------

#[actix_web::test]
async fn keyword_values_and_text_words_over_their_caps_are_400s_on_both_backends() {
    let db = TestDb::new().await;
    let os = OsIndices::new().await;
    seed(&db, Some(&os)).await;
    let apps = [
        ("postgres", app!(pg_state(&db))),
        ("opensearch", app!(os_state(&db, &os))),
    ];
    let values = |n: usize| -> Vec<String> { (0..n).map(|i| format!("c{i}")).collect() };
    // one-letter words, so that even 3,000 of them stay under the 8,191-byte
    // limit of one value and it is the word cap that answers
    let words = |n: usize| -> String {
        (0..n)
            .map(|i| char::from(b'a' + (i % 26) as u8).to_string())
            .collect::<Vec<_>>()
            .join(" ")
    };
    for (backend, app) in &apps {
        // OpenSearch refuses a terms query of more than 65,536 values: the
        // old code answered 500
        let q = json!({"where": {"keyword_match": {"must": {"country": values(70_000)}}}});
        let (status, body) = call(app, post("/contacts/search", &q)).await;
        assert_400(
            status,
            &body,
            "ERR_INVALID_VQL",
            &["70000 values", "at most 1000"],
            &format!("{backend}: 70,000 keyword values"),
        );
        // the cap counts every list of the query
        let q = json!({"where": {"keyword_match": {"must": {"country": values(600)},
                                                   "must_not": {"city": values(401)}}}});
        let (status, body) = call(app, post("/contacts/search", &q)).await;
        assert_400(
            status,
            &body,
            "ERR_INVALID_VQL",
            &["1001 values", "at most 1000"],
            &format!("{backend}: 600 + 401 keyword values"),
        );
        // and 1,000 is allowed
        let mut thousand = values(999);
        thousand.push("usa".into());
        let q = json!({"where": {"keyword_match": {"must": {"country": thousand}}}, "select_columns": ["uuid"]});
        let (status, body) = call(app, post("/contacts/search", &q)).await;
        assert_200(status, &body, &format!("{backend}: 1,000 keyword values"));
        assert_eq!(
            uuids(&body),
            [contact_uuid(1), contact_uuid(2)],
            "{backend}"
        );

        // more words than OpenSearch's 1,024 boolean clauses: the old code answered 500
        let q = json!({"where": {"text_match": {"must": {"title": words(3_000)}}}});
        let (status, body) = call(app, post("/contacts/search", &q)).await;
        assert_400(
            status,
            &body,
            "ERR_INVALID_VQL",
            &["3000 words", "at most 256"],
            &format!("{backend}: 3,000 text words"),
        );
        let q = json!({"where": {"text_match": {"must": {"title": words(200)},
                                                "must_not": {"first_name": words(57)}}}});
        let (status, body) = call(app, post("/contacts/search", &q)).await;
        assert_400(
            status,
            &body,
            "ERR_INVALID_VQL",
            &["257 words", "at most 256"],
            &format!("{backend}: 200 + 57 text words"),
        );
        let q = json!({"where": {"text_match": {"must": {"title": words(256)}}}});
        let (status, body) = call(app, post("/contacts/search", &q)).await;
        assert_200(status, &body, &format!("{backend}: 256 text words"));
        assert_eq!(body["data"], json!([]), "{backend}");
        let q = json!({"where": {"text_match": {"must": {"title": "engineer"}}}, "select_columns": ["uuid"]});
        let (status, body) = call(app, post("/contacts/search", &q)).await;
        assert_200(status, &body, backend);
        assert_eq!(
            uuids(&body),
            [contact_uuid(2), contact_uuid(3)],
            "{backend}"
        );
    }
}

// ---------------------------------------------------------------------------
// 3. NUL characters and over-long strings
// ---------------------------------------------------------------------------

#[actix_web::test]
async fn nul_characters_and_over_long_prefixes_are_400s_and_nothing_is_stored() {
    let db = TestDb::new().await;
    seed(&db, None).await;
    let app = app!(pg_state(&db));

    // jsonb cannot hold \u0000: the old code answered 500
    for data in [
        json!({"s3_key": "uploads/a\u{0}.csv", "s3_bucket": "connectra"}),
        json!({"s3_key": "uploads/a.csv", "note\u{0}": "x"}),
        json!({"s3_key": "uploads/a.csv", "deep": [{"x": ["\u{0}"]}]}),
    ] {
        let body = json!({"job_type": "insert_csv_file", "job_data": data});
        let (status, got) = call(&app, post("/common/jobs/create", &body)).await;
        assert_400(
            status,
            &got,
            "ERR_INVALID_JOB_DATA",
            &["NUL"],
            &body.to_string(),
        );
    }
    let (status, listed) = call(&app, post("/common/jobs", &json!({}))).await;
    assert_200(status, &listed, "list");
    assert_eq!(listed["data"], json!([]), "no job was created");

    // the job list's job_type
    let (status, got) = call(&app, post("/common/jobs", &json!({"job_type": "a\u{0}"}))).await;
    assert_400(
        status,
        &got,
        "ERR_INVALID_FILTER",
        &["NUL"],
        "list job_type",
    );

    // filter prefixes
    let (status, got) = call(
        &app,
        get("/common/filters?service=contact&filter_key=country&prefix=%00"),
    )
    .await;
    assert_400(status, &got, "ERR_INVALID_FILTER", &["NUL"], "prefix %00");
    let long = "a".repeat(2_000);
    let (status, got) = call(
        &app,
        get(&format!(
            "/common/filters?service=contact&filter_key=country&prefix={long}"
        )),
    )
    .await;
    assert_400(
        status,
        &got,
        "ERR_INVALID_FILTER",
        &["2000 bytes", "at most 1024"],
        "a 2,000-byte prefix",
    );
    // bytes, not characters: 600 × 'é' is 1,200 bytes
    let (status, got) = call(
        &app,
        get(&format!(
            "/common/filters?service=contact&prefix={}",
            "%C3%A9".repeat(600)
        )),
    )
    .await;
    assert_400(
        status,
        &got,
        "ERR_INVALID_FILTER",
        &["1200 bytes"],
        "a 1,200-byte prefix",
    );
    let (status, got) = call(
        &app,
        get(&format!(
            "/common/filters?service=contact&filter_key=country&prefix={}",
            "a".repeat(1_024)
        )),
    )
    .await;
    assert_200(status, &got, "a 1,024-byte prefix");
    assert_eq!(got["data"], json!([]));

    // VQL values: PostgreSQL text cannot hold NUL, so the old code answered 500
    for (q, field) in [
        (
            json!({"where": {"keyword_match": {"must": {"country": ["US\u{0}A"]}}}}),
            "'country'",
        ),
        (
            json!({"where": {"keyword_match": {"must_not": {"departments": ["\u{0}"]}}}}),
            "'departments'",
        ),
        (
            json!({"where": {"text_match": {"must": {"title": "sales\u{0}"}}}}),
            "'title'",
        ),
    ] {
        let (status, got) = call(&app, post("/contacts/search", &q)).await;
        assert_400(
            status,
            &got,
            "ERR_INVALID_VQL",
            &["NUL", field],
            &q.to_string(),
        );
    }
    // and values longer than any stored keyword
    let q = json!({"where": {"keyword_match": {"must": {"country": ["x".repeat(8_192)]}}}});
    let (status, got) = call(&app, post("/contacts/search", &q)).await;
    assert_400(
        status,
        &got,
        "ERR_INVALID_VQL",
        &["8192 bytes", "at most 8191"],
        "an 8,192-byte keyword",
    );
    let q = json!({"where": {"keyword_match": {"must": {"country": ["x".repeat(8_191)]}}}});
    let (status, got) = call(&app, post("/contacts/search", &q)).await;
    assert_200(status, &got, "an 8,191-byte keyword");
}

// ---------------------------------------------------------------------------
// 4. Retry bounds
// ---------------------------------------------------------------------------

#[actix_web::test]
async fn retry_count_and_retry_interval_outside_their_bounds_are_400s_and_the_bounds_are_201s() {
    let db = TestDb::new().await;
    let app = app!(pg_state(&db));
    let job = |extra: Value| {
        let mut body = json!({"job_type": "insert_csv_file",
                              "job_data": {"s3_key": "uploads/contacts.csv", "s3_bucket": "connectra"}});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    for (extra, code, needles) in [
        (
            json!({"retry_count": 101}),
            "ERR_INVALID_RETRY_COUNT",
            &["at most 100", "101"][..],
        ),
        (
            json!({"retry_count": 2_147_483_647}),
            "ERR_INVALID_RETRY_COUNT",
            &["at most 100"][..],
        ),
        (
            json!({"retry_interval": 0}),
            "ERR_INVALID_RETRY_INTERVAL",
            &["from 1 to 604800"][..],
        ),
        (
            json!({"retry_interval": 604_801}),
            "ERR_INVALID_RETRY_INTERVAL",
            &["from 1 to 604800"][..],
        ),
        (
            json!({"retry_interval": -1}),
            "ERR_INVALID_RETRY_INTERVAL",
            &[][..],
        ),
    ] {
        let body = job(extra);
        let (status, got) = call(&app, post("/common/jobs/create", &body)).await;
        assert_400(status, &got, code, needles, &body.to_string());
    }
    let (_, listed) = call(&app, post("/common/jobs", &json!({}))).await;
    assert_eq!(listed["data"], json!([]), "no job was created");

    for (extra, count, interval) in [
        (json!({"retry_count": 100}), 100, 30),
        (json!({"retry_count": 0, "retry_interval": 1}), 0, 1),
        (json!({"retry_interval": 604_800}), 0, 604_800),
    ] {
        let body = job(extra);
        let (status, got) = call(&app, post("/common/jobs/create", &body)).await;
        assert_eq!(status, StatusCode::CREATED, "{body}: {got}");
        assert_eq!(got["data"]["retry_count"], json!(count), "{body}");
        assert_eq!(got["data"]["retry_interval"], json!(interval), "{body}");
    }
}

// ---------------------------------------------------------------------------
// 5. Cursors
// ---------------------------------------------------------------------------

#[actix_web::test]
async fn cursors_that_no_page_could_have_produced_are_400s_on_both_backends() {
    let db = TestDb::new().await;
    let os = OsIndices::new().await;
    seed(&db, Some(&os)).await;
    let apps = [
        ("postgres", app!(pg_state(&db))),
        ("opensearch", app!(os_state(&db, &os))),
    ];
    let u1 = contact_uuid(1);
    for (backend, app) in &apps {
        let cases = [
            (
                json!({"search_after": [u1, "extra"]}),
                &["has 2 value(s)", "1 field(s)"][..],
            ),
            (
                json!({"order_by": [{"order_by": "title"}], "search_after": [u1]}),
                &["has 1 value(s)", "2 field(s)"][..],
            ),
            (
                json!({"search_after": [5]}),
                &["'search_after[0]'", "uuid field 'uuid'"][..],
            ),
            (
                json!({"search_after": [null]}),
                &["'uuid'", "cannot be null"][..],
            ),
            // longer than any sortable value: the old code sent it to the backend
            (
                json!({"order_by": [{"order_by": "title"}], "search_after": ["x".repeat(40_000), u1]}),
                &["'search_after[0]'", "'title'"][..],
            ),
            // NUL, which PostgreSQL text cannot bind: the old code answered 500
            (
                json!({"order_by": [{"order_by": "email"}], "search_after": ["a\u{0}", u1]}),
                &["'search_after[0]'", "'email'"][..],
            ),
            (
                json!({"order_by": [{"order_by": "created_at"}], "search_after": ["9999-12-31T23:30:00-01:00", u1]}),
                &["'search_after[0]'", "'created_at'"][..],
            ),
        ];
        for (q, needles) in cases {
            let (status, body) = call(app, post("/contacts/search", &q)).await;
            assert_400(
                status,
                &body,
                "ERR_INVALID_VQL",
                needles,
                &format!(
                    "{backend}: {}",
                    &q.to_string()[..q.to_string().len().min(300)]
                ),
            );
        }
        // a real cursor still pages
        let q = json!({"order_by": [{"order_by": "title", "order_direction": "desc"}],
                       "select_columns": ["uuid"], "limit": 2});
        let (status, page1) = call(app, post("/contacts/search", &q)).await;
        assert_200(status, &page1, backend);
        assert_eq!(
            uuids(&page1),
            [contact_uuid(2), contact_uuid(1)],
            "{backend}"
        );
        let mut q2 = q.clone();
        q2["search_after"] = page1["next_search_after"].clone();
        let (status, page2) = call(app, post("/contacts/search", &q2)).await;
        assert_200(status, &page2, backend);
        assert_eq!(uuids(&page2), [contact_uuid(3)], "{backend}");
    }
}

// ---------------------------------------------------------------------------
// 6. Generated bodies
// ---------------------------------------------------------------------------

/// Every catalogue field of both services, and a few names that are none.
fn field_names() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = Service::ALL
        .iter()
        .flat_map(|s| catalogue::fields(*s).iter().map(|f| f.name))
        .collect();
    names.sort_unstable();
    names.dedup();
    names.extend(["shoe_size", "Country", "", "uuid\u{0}"]);
    names
}

const WIRE_KEYS: &[&str] = &[
    "where",
    "keyword_match",
    "text_match",
    "range_query",
    "must",
    "must_not",
    "order_by",
    "order_direction",
    "search_after",
    "limit",
    "select_columns",
    "gt",
    "gte",
    "lt",
    "lte",
    "job_type",
    "job_data",
    "retry_count",
    "retry_interval",
    "s3_key",
    "s3_bucket",
    "service",
    "vql",
    "status",
];

fn field_name() -> BoxedStrategy<String> {
    prop_oneof![
        6 => prop::sample::select(field_names()).prop_map(String::from),
        1 => hostile_string(),
    ]
    .boxed()
}

fn hostile_string() -> BoxedStrategy<String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "",
            " ",
            "\u{0}",
            "a\u{0}b",
            "USA",
            "usa",
            "Germany",
            "ÖSTERREICH",
            "engineer",
            "sales director",
            "9999-12-31T23:59:59-23:59",
            "9999-12-31T23:59:59.999Z",
            "9999-12-31T23:59:59.999999999Z",
            "0000-01-01T00:00:00+23:59",
            "0001-01-01T00:00:00+00:01",
            "2024-01-31T09:30:00Z",
            "2024-02-30T00:00:00Z",
            "2016-12-31T23:59:60Z",
            "00000000-0000-0000-0000-000000000001",
            "00000000-0000-0000-0000-00000000000G",
            "contact",
            "company",
            "connectra",
            "insert_csv_file",
            "export_csv_file",
            "open",
            "failed",
            "asc",
            "desc",
            "'; DROP TABLE jobs; --",
            "%00",
            "\\u0000",
            "\u{feff}",
            "\u{fffd}",
            "\u{10ffff}",
            "😀🏳️‍🌈",
            "a\tb\nc\r",
            "* OR 1=1",
            "uploads/../../etc/passwd",
        ])
        .prop_map(String::from),
        2 => prop::sample::select(field_names()).prop_map(String::from),
        2 => prop::collection::vec(any::<char>(), 0..16).prop_map(|c| c.into_iter().collect()),
        2 => "[a-zA-Z0-9 ]{0,24}",
        1 => (prop::sample::select(vec!["x", "é", "ß ", "w ", "\u{0}", "😀"]), 1_usize..12_000)
            .prop_map(|(s, n)| s.repeat(n)),
        1 => prop::sample::select(vec![8_191_usize, 8_192, 32_764, 32_765, 40_000])
            .prop_map(|n| "x".repeat(n)),
        2 => timestamp(),
    ]
    .boxed()
}

/// An RFC 3339-looking timestamp from arbitrary parts, valid or not.
fn timestamp() -> BoxedStrategy<String> {
    (
        prop_oneof![
            Just(0_u32),
            Just(1),
            Just(9999),
            Just(10_000),
            1_u32..10_000
        ],
        0_u32..14,
        0_u32..33,
        0_u32..25,
        0_u32..61,
        0_u32..62,
        prop::option::of(0_u32..1_000_000_000),
        prop_oneof![
            Just("Z".to_string()),
            (-24_i32..=24, 0_u32..60).prop_map(|(h, m)| {
                let sign = if h < 0 { '-' } else { '+' };
                format!("{sign}{:02}:{m:02}", h.abs())
            }),
        ],
    )
        .prop_map(|(y, mo, d, h, mi, s, frac, off)| {
            let frac = frac.map(|f| format!(".{f:09}")).unwrap_or_default();
            format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}{frac}{off}")
        })
        .boxed()
}

fn number() -> BoxedStrategy<Value> {
    prop_oneof![
        3 => prop::sample::select(vec![
            0_i64,
            1,
            -1,
            2,
            3,
            100,
            101,
            500,
            5_000,
            5_001,
            604_800,
            604_801,
            i64::from(i32::MAX),
            i64::from(i32::MAX) + 1,
            i64::from(i32::MIN),
            i64::from(i32::MIN) - 1,
            i64::MAX,
            i64::MIN,
        ])
        .prop_map(Value::from),
        1 => any::<i64>().prop_map(Value::from),
        1 => any::<u64>().prop_map(Value::from),
        1 => prop::sample::select(vec![0.5, -0.0, 2.5, 3.0, 100.0, 1e15, 1e19, 1e300, -1e300, 1e-300])
            .prop_map(Value::from),
        1 => any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f).map(Value::Number)),
    ]
    .boxed()
}

fn json_key() -> BoxedStrategy<String> {
    prop_oneof![
        2 => prop::sample::select(WIRE_KEYS).prop_map(String::from),
        2 => field_name(),
        1 => hostile_string(),
    ]
    .boxed()
}

/// Any JSON value, nested up to four levels.
fn json_value() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        hostile_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((json_key(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
    .boxed()
}

/// An object of the keys that are `Some`.
fn object(pairs: Vec<(&str, Option<Value>)>) -> Value {
    Value::Object(
        pairs
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k.to_string(), v)))
            .collect(),
    )
}

/// `(key, value)` added to an object, to test unknown keys.
fn with_extra(mut value: Value, extra: Option<(String, Value)>) -> Value {
    if let (Value::Object(map), Some((k, v))) = (&mut value, extra) {
        map.insert(k, v);
    }
    value
}

fn field_map(values: BoxedStrategy<Value>) -> BoxedStrategy<Value> {
    prop::collection::btree_map(field_name(), values, 0..4)
        .prop_map(|m| Value::Object(m.into_iter().collect()))
        .boxed()
}

/// `{"must": {...}, "must_not": {...}}`, or now and then anything.
fn clauses(values: BoxedStrategy<Value>) -> BoxedStrategy<Value> {
    prop_oneof![
        6 => (
            prop::option::of(field_map(values.clone())),
            prop::option::of(field_map(values)),
        )
            .prop_map(|(must, must_not)| object(vec![("must", must), ("must_not", must_not)])),
        1 => json_value(),
    ]
    .boxed()
}

/// A VQL-shaped object with random contents.
fn vql() -> BoxedStrategy<Value> {
    let keyword_values = prop_oneof![
        6 => prop::collection::vec(hostile_string(), 0..6).prop_map(|v| json!(v)),
        1 => prop::collection::vec(Just("v".to_string()), 990..1_010).prop_map(|v| json!(v)),
        1 => json_value(),
    ]
    .boxed();
    let text_value = prop_oneof![
        6 => hostile_string().prop_map(Value::String),
        1 => (1_usize..300).prop_map(|n| Value::String("w ".repeat(n))),
        1 => json_value(),
    ]
    .boxed();
    let bound = prop_oneof![
        3 => timestamp().prop_map(Value::String),
        3 => number(),
        1 => json_value(),
    ];
    let range_spec = prop_oneof![
        6 => (
            prop::option::of(bound.clone()),
            prop::option::of(bound.clone()),
            prop::option::of(bound.clone()),
            prop::option::of(bound),
        )
            .prop_map(|(gt, gte, lt, lte)| {
                object(vec![("gt", gt), ("gte", gte), ("lt", lt), ("lte", lte)])
            }),
        1 => json_value(),
    ]
    .boxed();
    let where_ = prop_oneof![
        6 => (
            prop::option::of(clauses(keyword_values)),
            prop::option::of(clauses(text_value)),
            prop::option::of(clauses(range_spec)),
            prop::option::of((json_key(), json_value())),
        )
            .prop_map(|(k, t, r, extra)| with_extra(
                object(vec![("keyword_match", k), ("text_match", t), ("range_query", r)]),
                extra
            )),
        1 => json_value(),
    ];
    let direction = prop_oneof![
        3 => prop::sample::select(vec!["asc", "desc"]).prop_map(|d| json!(d)),
        1 => json_value(),
    ];
    let order_item = prop_oneof![
        6 => (field_name(), prop::option::of(direction))
            .prop_map(|(f, d)| object(vec![("order_by", Some(json!(f))), ("order_direction", d)])),
        1 => json_value(),
    ];
    let order_by = prop_oneof![
        6 => prop::collection::vec(order_item, 0..4).prop_map(Value::Array),
        1 => json_value(),
    ];
    let select = prop_oneof![
        6 => prop::collection::vec(field_name(), 0..5).prop_map(|v| json!(v)),
        1 => json_value(),
    ];
    let cursor_value = prop_oneof![
        2 => prop::sample::select(vec![
            "00000000-0000-0000-0000-000000000001",
            "00000000-0000-0000-0000-000000000003",
        ])
        .prop_map(|u| json!(u)),
        1 => Just(Value::Null),
        2 => number(),
        3 => hostile_string().prop_map(Value::String),
        1 => json_value(),
    ];
    let search_after = prop_oneof![
        6 => prop::collection::vec(cursor_value, 0..5).prop_map(Value::Array),
        1 => json_value(),
    ];
    (
        prop::option::of(where_),
        prop::option::of(select),
        prop::option::of(order_by),
        prop::option::of(prop_oneof![4 => number(), 1 => json_value()]),
        prop::option::of(search_after),
        prop::option::weighted(0.1, (json_key(), json_value())),
    )
        .prop_map(|(w, s, o, l, a, extra)| {
            with_extra(
                object(vec![
                    ("where", w),
                    ("select_columns", s),
                    ("order_by", o),
                    ("limit", l),
                    ("search_after", a),
                ]),
                extra,
            )
        })
        .boxed()
}

fn bucket() -> BoxedStrategy<Value> {
    prop_oneof![
        3 => Just(json!("connectra")),
        2 => hostile_string().prop_map(Value::String),
        1 => json_value(),
    ]
    .boxed()
}

/// A `POST /common/jobs/create` body with random contents.
fn job_body() -> BoxedStrategy<Value> {
    let job_type = prop_oneof![
        4 => prop::sample::select(vec![INSERT_CSV_FILE, EXPORT_CSV_FILE]).prop_map(|t| json!(t)),
        1 => hostile_string().prop_map(Value::String),
        1 => json_value(),
    ];
    let insert_data = (
        prop::option::weighted(
            0.9,
            prop_oneof![
                4 => hostile_string().prop_map(Value::String),
                1 => json_value()
            ],
        ),
        prop::option::of(bucket()),
        prop::option::weighted(0.05, (json_key(), json_value())),
    )
        .prop_map(|(key, bucket, extra)| {
            with_extra(object(vec![("s3_key", key), ("s3_bucket", bucket)]), extra)
        });
    let export_data = (
        prop::option::weighted(
            0.9,
            prop_oneof![
                4 => prop::sample::select(vec!["contact", "company"]).prop_map(|s| json!(s)),
                1 => hostile_string().prop_map(Value::String),
                1 => json_value(),
            ],
        ),
        prop::option::weighted(0.9, vql()),
        prop::option::of(bucket()),
        prop::option::weighted(0.05, (json_key(), json_value())),
    )
        .prop_map(|(service, vql, bucket, extra)| {
            with_extra(
                object(vec![
                    ("service", service),
                    ("vql", vql),
                    ("s3_bucket", bucket),
                ]),
                extra,
            )
        });
    let job_data = prop_oneof![
        3 => insert_data,
        3 => export_data,
        1 => json_value(),
    ];
    // mostly in bounds, so that many bodies get as far as the insert
    let retry = prop_oneof![
        4 => (0_i64..=200).prop_map(Value::from),
        3 => number(),
        1 => json_value(),
    ]
    .boxed();
    prop_oneof![
        8 => (
            prop::option::weighted(0.9, job_type),
            prop::option::weighted(0.9, job_data),
            prop::option::of(retry.clone()),
            prop::option::of(retry),
            prop::option::weighted(0.1, (json_key(), json_value())),
        )
            .prop_map(|(t, d, c, i, extra)| {
                with_extra(
                    object(vec![
                        ("job_type", t),
                        ("job_data", d),
                        ("retry_count", c),
                        ("retry_interval", i),
                    ]),
                    extra,
                )
            }),
        1 => json_value(),
    ]
    .boxed()
}

/// A `POST /common/jobs` body with random contents.
fn list_body() -> BoxedStrategy<Value> {
    let status = prop_oneof![
        3 => prop::sample::select(vec![
            "open",
            "in_queue",
            "processing",
            "completed",
            "failed",
            "retry_in_queued",
            "retrying",
        ])
        .prop_map(|s| json!(s)),
        1 => hostile_string().prop_map(Value::String),
        1 => json_value(),
    ];
    prop_oneof![
        8 => (
            prop::option::of(prop_oneof![
                3 => prop::sample::select(vec![INSERT_CSV_FILE, EXPORT_CSV_FILE]).prop_map(|t| json!(t)),
                2 => hostile_string().prop_map(Value::String),
                1 => json_value(),
            ]),
            prop::option::of(prop_oneof![
                4 => prop::collection::vec(status, 0..4).prop_map(Value::Array),
                1 => json_value(),
            ]),
            prop::option::of(prop_oneof![4 => number(), 1 => json_value()]),
            prop::option::weighted(0.1, (json_key(), json_value())),
        )
            .prop_map(|(t, s, l, extra)| {
                with_extra(
                    object(vec![("job_type", t), ("status", s), ("limit", l)]),
                    extra,
                )
            }),
        1 => json_value(),
    ]
    .boxed()
}

/// The input as printed in a failure: whole, unless it is huge.
fn shown(body: &Value) -> String {
    let text = body.to_string();
    if text.len() <= 2_000 {
        text
    } else {
        let cut = (0..=20_000)
            .rev()
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        format!("{}… ({} bytes in all)", &text[..cut], text.len())
    }
}

/// Sends `body` and records what is wrong with the answer, including a panic
/// in the handler or an answer that is not JSON (`call` asserts that).
async fn probe<S, B>(
    app: &S,
    backend: &str,
    uri: &str,
    body: &Value,
    failures: &mut Vec<String>,
) -> Option<StatusCode>
where
    S: actix_web::dev::Service<Req, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let outcome = AssertUnwindSafe(call(app, post(uri, body)))
        .catch_unwind()
        .await;
    let status = outcome.as_ref().ok().map(|(status, _)| *status);
    let problem = match outcome {
        Err(panic) => Some(format!(
            "panicked: {}",
            panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)")
        )),
        Ok((status, answer)) => shape_problem(status, &answer),
    };
    if let Some(problem) = problem {
        failures.push(format!(
            "[{backend}] POST {uri}: {problem}\n    input: {}",
            shown(body)
        ));
    }
    status
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

#[actix_web::test]
async fn generated_bodies_never_get_a_5xx_and_every_answer_has_the_guides_shape() {
    let db = TestDb::new().await;
    let os = OsIndices::new().await;
    seed(&db, Some(&os)).await;
    let pg = app!(pg_state(&db));
    let osa = app!(os_state(&db, &os));

    let seed =
        env_number("DIRTY_INPUT_SEED").unwrap_or_else(|| uuid::Uuid::new_v4().as_u64_pair().0);
    let cases = env_number("DIRTY_INPUT_CASES").unwrap_or(300);
    let mut seed_bytes = [0_u8; 32];
    for chunk in seed_bytes.chunks_mut(8) {
        chunk.copy_from_slice(&seed.to_le_bytes());
    }
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes);
    let mut runner = TestRunner::new_with_rng(Config::default(), rng);
    let (vql, job, list, any) = (vql(), job_body(), list_body(), json_value());

    let mut failures = Vec::new();
    // How many generated searches and job bodies were accepted: the
    // generators must reach the backends, not only the validators.
    let (mut searches_ok, mut jobs_created) = (0_u64, 0_u64);
    for _ in 0..cases {
        let query = vql.new_tree(&mut runner).unwrap().current();
        for uri in ["/contacts/search", "/companies/search"] {
            let on_pg = probe(&pg, "postgres", uri, &query, &mut failures).await;
            let on_os = probe(&osa, "opensearch", uri, &query, &mut failures).await;
            searches_ok += u64::from(on_pg.is_some_and(|s| s.is_success()));
            // validation comes first, so both backends accept and refuse alike
            if on_pg.map(|s| s.is_success()) != on_os.map(|s| s.is_success()) {
                failures.push(format!(
                    "POST {uri}: postgres answered {on_pg:?}, opensearch {on_os:?}\n    input: {}",
                    shown(&query)
                ));
            }
        }
        let body = job.new_tree(&mut runner).unwrap().current();
        let created = probe(&pg, "postgres", "/common/jobs/create", &body, &mut failures).await;
        jobs_created += u64::from(created == Some(StatusCode::CREATED));
        let body = list.new_tree(&mut runner).unwrap().current();
        probe(&pg, "postgres", "/common/jobs", &body, &mut failures).await;
        let body = any.new_tree(&mut runner).unwrap().current();
        for uri in [
            "/contacts/search",
            "/companies/search",
            "/common/jobs/create",
            "/common/jobs",
        ] {
            probe(&pg, "postgres", uri, &body, &mut failures).await;
        }
    }
    eprintln!(
        "DIRTY_INPUT_SEED={seed}: {cases} cases; {searches_ok} of {} searches and {jobs_created} of {cases} job bodies were accepted",
        2 * cases
    );
    assert!(
        failures.is_empty(),
        "{} bad answer(s) with DIRTY_INPUT_SEED={seed} (replay with that variable):\n{}",
        failures.len(),
        failures
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}
