//! `export_csv_file` end to end in-process, against real PostgreSQL,
//! SeaweedFS and OpenSearch.

#![cfg(feature = "builtin")]
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{bucket, count, env, exec, Harness};
use connectra_domain::job::JobStatus;
use connectra_domain::list::join_list;
use connectra_domain::vql::{parse_vql, Purpose};
use connectra_domain::Service;
use connectra_persistence::testing::eventually;
use connectra_search::Document;
use connectra_storage::{S3Config, Storage};
use diesel_async::RunQueryDsl;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// `n` contacts with varied countries (mixed case), departments and titles.
fn contacts_csv(n: usize) -> String {
    let countries = ["USA", "usa", "Germany", "France", "germany", ""];
    let mut csv = String::from("email,first_name,last_name,title,departments,country,seniority\n");
    for i in 0..n {
        csv.push_str(&format!(
            "p{i}@example.com,First{i},Last{:03},Title {},Dept{};Ops,{},{}\n",
            i % 37,
            i % 5,
            i % 3,
            countries[i % countries.len()],
            if i % 4 == 0 { "" } else { "senior" }
        ));
    }
    csv
}

fn cell(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(items) => join_list(items.iter().map(|i| i.as_str().unwrap())),
        other => other.to_string(),
    }
}

async fn all_pages(h: &Harness, service: Service, vql: &Value) -> Vec<Document> {
    let mut query = parse_vql(vql)
        .unwrap()
        .validate(service, Purpose::Export)
        .unwrap();
    let mut docs = Vec::new();
    loop {
        let page = h.search.search(service, &query).await.unwrap();
        docs.extend(page.data);
        match page.next_search_after {
            Some(next) => query = query.after(&next).unwrap(),
            None => return docs,
        }
    }
}

fn rows(csv_text: &str) -> Vec<Vec<String>> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(csv_text.as_bytes())
        .records()
        .map(|r| r.unwrap().iter().map(String::from).collect())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_matches_the_search_pages_row_for_row_on_both_backends() {
    for opensearch in [false, true] {
        let mut h = Harness::new(opensearch).await;
        h.start(250);
        let key = h
            .upload("contacts.csv", contacts_csv(1200).as_bytes())
            .await;
        assert_eq!(h.import(&key).await.status, JobStatus::Completed);
        h.search.refresh(Service::Contact).await.unwrap();
        let vql = json!({
            "where": {"keyword_match": {"must": {"country": ["USA", "GERMANY"]}, "must_not": {"departments": ["dept0"]}}},
            "select_columns": ["uuid", "email", "last_name", "departments", "country", "seniority"],
            "order_by": [{"order_by": "seniority", "order_direction": "desc"}, {"order_by": "last_name", "order_direction": "asc"}],
            "limit": 97
        });
        let job = h.export(vql.clone(), "contact").await;
        assert_eq!(job.status, JobStatus::Completed, "{:?}", job.job_response);
        let key = job.job_response["s3_key"].as_str().unwrap().to_string();
        assert_eq!(key, format!("{}/{}.csv", h.prefix, job.uuid));
        let exported = rows(&h.read_object(&key).await);
        assert_eq!(
            exported[0],
            [
                "uuid",
                "email",
                "last_name",
                "departments",
                "country",
                "seniority"
            ]
        );
        let pages = all_pages(&h, Service::Contact, &vql).await;
        assert!(
            pages.len() > 300,
            "the filter should match many rows, got {}",
            pages.len()
        );
        assert_eq!(
            exported.len() - 1,
            pages.len(),
            "backend {}",
            h.search.name()
        );
        for (row, doc) in exported[1..].iter().zip(&pages) {
            let want: Vec<String> = exported[0].iter().map(|c| cell(&doc[c.as_str()])).collect();
            assert_eq!(row, &want);
        }
        assert_eq!(job.rows_processed, pages.len() as i64);
        assert!(job.job_response["messages"]
            .as_str()
            .unwrap()
            .contains(&format!("exported {} rows", pages.len())));
        h.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_with_no_matches_is_a_header_only_file_and_formulas_are_neutralised() {
    let mut h = Harness::new(false).await;
    h.start(500);
    let job = h.export(json!({"where": {"keyword_match": {"must": {"country": ["Atlantis"]}}}, "select_columns": ["email", "title"]}), "contact").await;
    assert_eq!(job.status, JobStatus::Completed, "{:?}", job.job_response);
    assert_eq!(
        h.read_object(job.job_response["s3_key"].as_str().unwrap())
            .await,
        "email,title\n"
    );

    let key = h
        .upload(
            "evil.csv",
            b"email,title\nx@evil.io,=HYPERLINK(\"http://evil\")\n",
        )
        .await;
    assert_eq!(h.import(&key).await.status, JobStatus::Completed);
    let job = h
        .export(json!({"select_columns": ["email", "title"]}), "contact")
        .await;
    let text = h
        .read_object(job.job_response["s3_key"].as_str().unwrap())
        .await;
    assert_eq!(
        rows(&text)[1],
        ["x@evil.io", "'=HYPERLINK(\"http://evil\")"]
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_export_aborts_the_upload_its_dead_attempt_left_unfinished() {
    let mut h = Harness::new(false).await;
    let job = h
        .create(
            "export_csv_file",
            json!({ "service": "contact", "vql": { "select_columns": ["email"] } }),
        )
        .await;
    let key = format!("{}/{}.csv", h.prefix, job.uuid);
    // what a first attempt killed mid-upload leaves behind
    exec(
        &h.pool(),
        &format!("UPDATE jobs SET attempts = 1 WHERE id = {}", job.id),
    )
    .await;
    let orphan = h
        .storage
        .start_unfinished_upload(&bucket(), &key)
        .await
        .unwrap();
    let pending = h.storage.pending_uploads(&bucket(), &key).await.unwrap();
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0].upload_id, orphan);

    h.start(500);
    let done = h.wait(&job).await;
    assert_eq!(done.status, JobStatus::Completed, "{:?}", done.job_response);
    assert_eq!(done.attempts, 2);
    assert_eq!(
        h.storage.pending_uploads(&bucket(), &key).await.unwrap(),
        vec![]
    );
    assert_eq!(h.read_object(&key).await, "email\n");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_without_select_columns_fails_at_run_time_with_the_guides_code() {
    let mut h = Harness::new(false).await;
    h.start(500);
    // created behind the API's back, so only the handler can catch it
    let job = h
        .export(
            json!({"where": {"keyword_match": {"must": {"country": ["USA"]}}}}),
            "contact",
        )
        .await;
    assert_eq!(job.status, JobStatus::Failed);
    assert!(
        job.job_response["runtime_errors"][0]
            .as_str()
            .unwrap()
            .contains("ERR_MISSING_SELECT_COLUMNS"),
        "{:?}",
        job.job_response
    );
    h.stop().await;
}

/// A TCP proxy to the real S3 that can be cut: afterwards every connection
/// through it is reset and new ones are refused.
async fn cuttable_proxy(target: String) -> (String, CancellationToken) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cut = CancellationToken::new();
    let stop = cut.clone();
    tokio::spawn(async move {
        loop {
            let (mut inbound, _) = tokio::select! {
                _ = stop.cancelled() => return,
                conn = listener.accept() => conn.unwrap(),
            };
            let (target, stop) = (target.clone(), stop.clone());
            tokio::spawn(async move {
                let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else {
                    return;
                };
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                }
            });
        }
    });
    (format!("http://{addr}"), cut)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_that_loses_s3_midway_fails_and_leaves_no_object() {
    let mut h = Harness::new(false).await;
    let s3 = env("S3_ENDPOINT", "http://127.0.0.1:8333");
    let (endpoint, cut) = cuttable_proxy(s3.trim_start_matches("http://").to_string()).await;
    let through_proxy = Storage::new(&S3Config {
        endpoint: Some(endpoint),
        region: env("S3_REGION", "us-east-1"),
        access_key_id: Some(env("S3_ACCESS_KEY_ID", "testaccess")),
        secret_access_key: Some(env("S3_SECRET_ACCESS_KEY", "testsecret123")),
        path_style: true,
    })
    .unwrap();
    h.start_with_storage(500, through_proxy);
    {
        let mut conn = h.pool().get().await.unwrap();
        diesel::sql_query(
            "INSERT INTO contacts (uuid, email, first_name, last_name, title)
             SELECT gen_random_uuid(), 'person' || i || '@example.com', 'First' || i, 'Last' || i,
                    'A title long enough to make the file grow quickly ' || i
             FROM generate_series(1, 150000) i",
        )
        .execute(&mut conn)
        .await
        .unwrap();
    }
    let job = h
        .repo
        .create(&connectra_domain::job::NewJob {
            job_type: "export_csv_file".into(),
            data: json!({"service": "contact", "vql": {"select_columns": ["uuid", "email", "first_name", "last_name", "title"], "limit": 1000}}),
            retry_count: 0,
            retry_interval: 0,
        })
        .await
        .unwrap();
    eventually(
        Duration::from_secs(120),
        "the export to get going",
        || async {
            let j = h.repo.get(job.uuid).await.unwrap().unwrap();
            assert_ne!(
                j.status,
                JobStatus::Completed,
                "the export finished before S3 could be cut"
            );
            if j.rows_processed >= 100_000 {
                Ok(())
            } else {
                Err(format!("{j:?}"))
            }
        },
    )
    .await;
    cut.cancel();
    let failed = h.wait(&job).await;
    assert_eq!(
        failed.status,
        JobStatus::Failed,
        "{:?}",
        failed.job_response
    );
    let error = failed.job_response["runtime_errors"][0].as_str().unwrap();
    assert!(
        error.contains("uploading the export to s3://"),
        "the cause is named: {error}"
    );
    let key = format!("{}/{}.csv", h.prefix, job.uuid);
    assert_eq!(
        h.storage.head(&bucket(), &key).await.unwrap(),
        None,
        "no object, partial or whole"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_export_reimport_round_trips_every_column_unchanged() {
    let csv_in = "\
uuid,email,first_name,last_name,title,seniority,departments,phone,linkedin_url,email_status,country,state,city,company_name,company_website,company_industries,company_employees_count,notes
,ann@acme.io,Ann,Lee,\"CTO, \"\"Founder\"\"\",c_suite,Engineering;Leadership,555 0100,https://linkedin.com/in/ann,verified,USA,CA,San Francisco,Acme,https://acme.io,SaaS;Software,120,likes tea
7d3c8a1e-4b2f-4c6d-9e8f-0a1b2c3d4e5f,bob@acme.io,Bob,Ray,Engineer,senior,Engineering,,,unverified,USA,CA,Oakland,Acme,acme.io,,,
,zoe@globex.com,Zoë,Ōtsuka 大塚,\"Head of R&D\nEurope\",vp,,,,,Germany,,Berlin,Globex,globex.com,Manufacturing,5000,
";
    let mut first = Harness::new(false).await;
    first.escape_formulas = false;
    first.start(2);
    let key = first.upload("in.csv", csv_in.as_bytes()).await;
    assert_eq!(first.import(&key).await.status, JobStatus::Completed);
    let mut exports = Vec::new();
    for (service, columns) in [
        (
            "company",
            connectra_domain::catalogue::fields(Service::Company),
        ),
        (
            "contact",
            connectra_domain::catalogue::fields(Service::Contact),
        ),
    ] {
        let select: Vec<&str> = columns.iter().map(|f| f.name).collect();
        let job = first
            .export(json!({"select_columns": select}), service)
            .await;
        assert_eq!(job.status, JobStatus::Completed, "{:?}", job.job_response);
        exports.push(
            first
                .read_object(job.job_response["s3_key"].as_str().unwrap())
                .await,
        );
    }

    let mut second = Harness::new(false).await;
    second.start(2);
    for (i, text) in exports.iter().enumerate() {
        let key = second
            .upload(&format!("export{i}.csv"), text.as_bytes())
            .await;
        let job = second.import(&key).await;
        assert_eq!(job.status, JobStatus::Completed, "{:?}", job.job_response);
        assert_eq!(job.rows_rejected, 0);
    }
    for table in ["companies", "contacts"] {
        let sql = format!("SELECT (to_jsonb(t) - 'id' - 'created_at' - 'updated_at' - 'version')::text AS s FROM {table} t ORDER BY uuid");
        let a = common::strings(&first.pool(), &sql).await;
        let b = common::strings(&second.pool(), &sql).await;
        assert!(!a.is_empty());
        assert_eq!(a, b, "{table} differ after the round trip");
    }
    assert_eq!(
        count(
            &second.pool(),
            "SELECT count(*) AS n FROM contacts WHERE extra->>'notes' = 'likes tea'"
        )
        .await,
        1
    );
    first.stop().await;
    second.stop().await;
}
