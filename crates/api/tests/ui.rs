//! The dashboard (`/ui`) against a real PostgreSQL: login, the session
//! cookie, redirects without a session, CSRF, the cancel form, filters and
//! paging, and HTML escaping. (The real-browser test is
//! `scripts/browser_test.sh`.)

#![allow(clippy::unwrap_used)]

use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::{test, App};
use connectra_api::{configure, AppState};
use connectra_domain::job::{
    CreateRules, JobStatus, NewJob, EXPORT_CSV_FILE, INSERT_CSV_FILE, REINDEX_SEARCH,
};
use connectra_persistence::testing::TestDb;
use connectra_persistence::JobRepo;
use serde_json::json;

const KEY: &str = "ui-test-key";

fn state(db: &TestDb) -> AppState {
    let rules = CreateRules {
        job_types: [INSERT_CSV_FILE, EXPORT_CSV_FILE, REINDEX_SEARCH]
            .into_iter()
            .map(String::from)
            .collect(),
        allowed_buckets: ["connectra".to_string()].into_iter().collect(),
        default_retry_interval: 30,
    };
    AppState::new(JobRepo::new(db.pool()), vec![KEY.into()], rules, 4096)
}

macro_rules! app {
    ($db:expr) => {
        test::init_service(App::new().configure(configure(state(&$db)))).await
    };
}

async fn body_text(resp: ServiceResponse) -> String {
    String::from_utf8(test::read_body(resp).await.to_vec()).unwrap()
}

fn login_req(key: &str) -> actix_http::Request {
    test::TestRequest::post()
        .uri("/ui/login")
        .set_form([("api_key", key)])
        .to_request()
}

/// Logs in; returns the cookie's `name=value` and the page's CSRF token.
async fn login<S>(app: &S) -> (String, String)
where
    S: Service<actix_http::Request, Response = ServiceResponse, Error = actix_web::Error>,
{
    let resp = app.call(login_req(KEY)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let set = resp
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let pair = set.split(';').next().unwrap().to_string();
    let page = app.call(get(&pair, "/ui")).await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = body_text(page).await;
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    assert_eq!(csrf.len(), 64);
    (pair, csrf)
}

fn get(cookie: &str, uri: &str) -> actix_http::Request {
    test::TestRequest::get()
        .uri(uri)
        .insert_header(("Cookie", cookie.to_string()))
        .to_request()
}

fn post_form(cookie: &str, uri: &str, form: &[(&str, &str)]) -> actix_http::Request {
    test::TestRequest::post()
        .uri(uri)
        .insert_header(("Cookie", cookie.to_string()))
        .set_form(form)
        .to_request()
}

async fn new_job(repo: &JobRepo, job_type: &str, data: serde_json::Value) -> uuid::Uuid {
    repo.create(&NewJob {
        job_type: job_type.into(),
        data,
        retry_count: 0,
        retry_interval: 30,
    })
    .await
    .unwrap()
    .uuid
}

#[actix_web::test]
async fn a_wrong_key_is_refused_and_gets_no_cookie() {
    let db = TestDb::new().await;
    let app = app!(db);
    for key in ["wrong", "", "ui-test-ke", "ui-test-key2"] {
        let resp = app.call(login_req(key)).await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{key:?}");
        assert!(resp.headers().get("set-cookie").is_none());
        assert!(body_text(resp).await.contains("That API key is not valid."));
    }
}

#[actix_web::test]
async fn the_session_cookie_holds_a_random_token_with_strict_flags_and_the_table_only_its_hash() {
    let db = TestDb::new().await;
    let app = app!(db);
    let resp = app.call(login_req(KEY)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(resp.headers().get("location").unwrap(), "/ui");
    let set = resp.headers().get("set-cookie").unwrap().to_str().unwrap();
    let attrs: Vec<&str> = set.split(';').map(str::trim).collect();
    let token = attrs[0].strip_prefix("connectra_ui_session=").unwrap();
    assert_eq!(token.len(), 64);
    assert!(token.chars().all(|c| c.is_ascii_hexdigit()));
    assert!(!set.contains(KEY), "the cookie never holds the key: {set}");
    for want in ["HttpOnly", "SameSite=Strict", "Path=/ui"] {
        assert!(attrs.contains(&want), "{want} missing from {set}");
    }
    assert!(
        !attrs.contains(&"Secure"),
        "plain http gets no Secure: {set}"
    );
    // the table has one session, and not the token itself
    let (client, conn) = tokio_postgres::connect(db.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let rows = client
        .query("SELECT encode(token_hash, 'hex') FROM ui_sessions", &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    let stored: String = rows[0].get(0);
    assert_ne!(stored, token);
    // a second login is another token
    let (pair2, _) = login(&app).await;
    assert_ne!(pair2, attrs[0]);
}

#[actix_web::test]
async fn pages_without_a_valid_session_redirect_to_the_login() {
    let db = TestDb::new().await;
    let app = app!(db);
    let fake = format!("connectra_ui_session={}", "ab".repeat(32));
    for uri in ["/ui", "/ui/jobs", "/ui/imports/new"] {
        for cookie in ["", "connectra_ui_session=short", fake.as_str()] {
            let resp = app.call(get(cookie, uri)).await.unwrap();
            assert_eq!(resp.status(), StatusCode::SEE_OTHER, "{uri} {cookie}");
            assert_eq!(resp.headers().get("location").unwrap(), "/ui/login");
        }
    }
    // a form post without a session is not carried out
    let repo = JobRepo::new(db.pool());
    let uuid = new_job(&repo, INSERT_CSV_FILE, json!({"s3_key": "a.csv"})).await;
    let resp = app
        .call(post_form(
            "",
            &format!("/ui/jobs/{uuid}/cancel"),
            &[("csrf", "x")],
        ))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        repo.get(uuid).await.unwrap().unwrap().status,
        JobStatus::Open
    );
    // the login page itself is open
    let resp = app.call(get("", "/ui/login")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[actix_web::test]
async fn cancel_needs_the_sessions_csrf_token_and_then_cancels() {
    let db = TestDb::new().await;
    let app = app!(db);
    let repo = JobRepo::new(db.pool());
    let uuid = new_job(&repo, INSERT_CSV_FILE, json!({"s3_key": "a.csv"})).await;
    let (cookie, csrf) = login(&app).await;
    let uri = format!("/ui/jobs/{uuid}/cancel");
    let wrong = "0".repeat(64);
    for form in [vec![], vec![("csrf", "")], vec![("csrf", wrong.as_str())]] {
        let resp = app.call(post_form(&cookie, &uri, &form)).await.unwrap();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{form:?}");
        assert!(body_text(resp).await.contains("CSRF"));
        assert_eq!(
            repo.get(uuid).await.unwrap().unwrap().status,
            JobStatus::Open
        );
    }
    let resp = app
        .call(post_form(&cookie, &uri, &[("csrf", &csrf)]))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        resp.headers().get("location").unwrap().to_str().unwrap(),
        format!("/ui/jobs/{uuid}?notice=cancelled")
    );
    let job = repo.get(uuid).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(job.response().cancelled, Some(true));
    // the detail page says so, and offers neither cancel nor retry any more
    let html = body_text(
        app.call(get(&cookie, &format!("/ui/jobs/{uuid}?notice=cancelled")))
            .await
            .unwrap(),
    )
    .await;
    assert!(html.contains("The job was cancelled"));
    assert!(!html.contains("id=\"cancel\""));
    assert!(!html.contains("id=\"retry\""));
}

#[actix_web::test]
async fn a_login_posted_from_another_site_is_refused() {
    let db = TestDb::new().await;
    let app = app!(db);
    for (name, value) in [
        ("Sec-Fetch-Site", "cross-site"),
        ("Origin", "http://evil.example"),
    ] {
        let req = test::TestRequest::post()
            .uri("/ui/login")
            .insert_header((name, value))
            .set_form([("api_key", KEY)])
            .to_request();
        let resp = app.call(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{name}: {value}");
        assert!(resp.headers().get("set-cookie").is_none());
    }
}

#[actix_web::test]
async fn logout_ends_the_session() {
    let db = TestDb::new().await;
    let app = app!(db);
    let (cookie, csrf) = login(&app).await;
    let resp = app
        .call(post_form(&cookie, "/ui/logout", &[("csrf", "nope")]))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let resp = app
        .call(post_form(&cookie, "/ui/logout", &[("csrf", &csrf)]))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(resp.headers().get("location").unwrap(), "/ui/login");
    let resp = app.call(get(&cookie, "/ui")).await.unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::SEE_OTHER,
        "the old cookie is dead"
    );
}

/// The uuids of the list page's rows, in order.
fn row_uuids(html: &str) -> Vec<String> {
    html.split("<tr data-uuid=\"")
        .skip(1)
        .map(|s| s.split('"').next().unwrap().to_string())
        .collect()
}

#[actix_web::test]
async fn the_list_filters_by_type_and_status_pages_newest_first_and_refuses_bad_filters() {
    let db = TestDb::new().await;
    let app = app!(db);
    let repo = JobRepo::new(db.pool());
    let mut imports = Vec::new();
    for i in 0..30 {
        imports.push(
            new_job(
                &repo,
                INSERT_CSV_FILE,
                json!({"s3_key": format!("{i}.csv")}),
            )
            .await,
        );
    }
    let export = new_job(&repo, EXPORT_CSV_FILE, json!({"service": "contact"})).await;
    repo.cancel(imports[0]).await.unwrap();
    let (cookie, _) = login(&app).await;
    let page = |uri: &'static str| {
        let req = get(&cookie, uri);
        let app = &app;
        async move {
            let resp = app.call(req).await.unwrap();
            (resp.status(), body_text(resp).await)
        }
    };
    let (status, html) = page("/ui/jobs").await;
    assert_eq!(status, StatusCode::OK);
    let first = row_uuids(&html);
    assert_eq!(first.len(), 25);
    assert_eq!(first[0], export.to_string(), "newest first");
    assert_eq!(first[1], imports[29].to_string());
    assert!(html.contains("id=\"next-page\""));
    let (_, html) = page("/ui/jobs?page=2").await;
    let second = row_uuids(&html);
    assert_eq!(second.len(), 6);
    assert_eq!(second.last().unwrap(), &imports[0].to_string());
    assert!(!html.contains("id=\"next-page\""));
    let (_, html) = page("/ui/jobs?type=export_csv_file").await;
    assert_eq!(row_uuids(&html), vec![export.to_string()]);
    let (_, html) = page("/ui/jobs?status=failed").await;
    assert_eq!(row_uuids(&html), vec![imports[0].to_string()]);
    let (_, html) = page("/ui/jobs?type=reindex_search").await;
    assert!(html.contains("No jobs match these filters."));
    let (_, html) = page("/ui/jobs?page=9").await;
    assert!(html.contains("No more jobs on page 9."));
    // client mistakes are readable 400 pages, never 500
    for uri in [
        "/ui/jobs?status=running",
        "/ui/jobs?type=nope",
        "/ui/jobs?page=0",
        "/ui/jobs?page=x",
        "/ui/jobs?page=99999999999999999999",
        "/ui/jobs/not-a-uuid",
        "/ui/jobs/not-a-uuid/progress",
    ] {
        let (status, html) = page(uri).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
        assert!(html.contains("id=\"error-message\""), "{uri}: {html}");
    }
    let (status, _) = page("/ui/jobs/00000000-0000-0000-0000-000000000000").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, html) = page("/ui/overview-typo").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(html.contains("<html"));
    // the overview counts them
    let (status, html) = page("/ui").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        html.contains("<span class=\"big\" id=\"total-jobs\">31</span>"),
        "{html}"
    );
    assert!(html.contains("<span class=\"big\" id=\"queue-depth\">30</span>"));
}

#[actix_web::test]
async fn job_data_is_escaped_in_html() {
    let db = TestDb::new().await;
    let app = app!(db);
    let repo = JobRepo::new(db.pool());
    let evil = "<script>alert(1)</script>";
    let uuid = new_job(
        &repo,
        INSERT_CSV_FILE,
        json!({"s3_key": evil, "note": "\"><img src=x onerror=alert(2)>"}),
    )
    .await;
    let (cookie, _) = login(&app).await;
    let resp = app
        .call(get(&cookie, &format!("/ui/jobs/{uuid}")))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let csp = resp
        .headers()
        .get("content-security-policy")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    let html = body_text(resp).await;
    assert!(!html.contains(evil), "unescaped job_data: {html}");
    assert!(!html.contains("<img src=x"));
    assert!(html.contains("&#60;script&#62;alert(1)"), "{html}");
}

#[actix_web::test]
async fn assets_are_served_with_a_long_cache() {
    let db = TestDb::new().await;
    let app = app!(db);
    for (name, ct) in [
        ("htmx.min.js", "text/javascript"),
        ("ui.js", "text/javascript"),
        ("ui.css", "text/css"),
    ] {
        let resp = app
            .call(get("", &format!("/ui/assets/{name}")))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{name}");
        let h = resp.headers();
        assert!(h
            .get("content-type")
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with(ct));
        assert!(h
            .get("cache-control")
            .unwrap()
            .to_str()
            .unwrap()
            .contains("max-age=604800"));
        assert!(!body_text(resp).await.is_empty());
    }
    let resp = app.call(get("", "/ui/assets/nope.js")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

#[actix_web::test]
async fn the_progress_fragment_polls_while_the_job_may_change_and_shows_rate_and_eta() {
    let db = TestDb::new().await;
    let app = app!(db);
    let repo = JobRepo::new(db.pool());
    let running = new_job(&repo, INSERT_CSV_FILE, json!({"s3_key": "a.csv"})).await;
    let done = new_job(&repo, INSERT_CSV_FILE, json!({"s3_key": "b.csv"})).await;
    let (client, conn) = tokio_postgres::connect(db.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    // 10 s in, a quarter of 4 MB read: 100 rows/s, about 30 s to go
    client
        .execute(
            "UPDATE jobs SET status = 'processing', locked_by = 'r1', locked_until = now() + interval '1 minute',
                 started_at = now() - interval '10 seconds', rows_processed = 1000,
                 bytes_read = 1000000, bytes_total = 4000000 WHERE uuid = $1",
            &[&running],
        )
        .await
        .unwrap();
    client
        .execute(
            "UPDATE jobs SET status = 'completed', started_at = now() - interval '2 seconds',
                 finished_at = now(), rows_processed = 10 WHERE uuid = $1",
            &[&done],
        )
        .await
        .unwrap();
    let (cookie, _) = login(&app).await;
    let html = body_text(
        app.call(get(&cookie, &format!("/ui/jobs/{running}/progress")))
            .await
            .unwrap(),
    )
    .await;
    assert!(
        html.contains(&format!("hx-get=\"/ui/jobs/{running}/progress\"")),
        "{html}"
    );
    assert!(html.contains("data-rows=\"1000\""));
    assert!(html.contains("data-percent=\"25.0\""));
    assert!(html.contains("100 rows/s"), "{html}");
    assert!(html.contains("ETA 30s"), "{html}");
    assert!(html.contains("1.0 MB of 4.0 MB"));
    let html = body_text(
        app.call(get(&cookie, &format!("/ui/jobs/{done}/progress")))
            .await
            .unwrap(),
    )
    .await;
    assert!(
        !html.contains("hx-get"),
        "a finished job stops polling: {html}"
    );
    assert!(html.contains("data-status=\"completed\""));
    // the overview lists the runner that holds the running job
    let html = body_text(app.call(get(&cookie, "/ui")).await.unwrap()).await;
    assert!(html.contains("<code>r1</code>"), "{html}");
}
