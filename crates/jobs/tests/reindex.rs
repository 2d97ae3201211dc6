//! `reindex_search` end to end, against real PostgreSQL and OpenSearch:
//! the alias moves to a new physical index built from PostgreSQL, drift is
//! repaired, mapping changes arrive, and searches and writes go on meanwhile.

#![cfg(feature = "builtin")]
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{count, env, exec, strings, Harness};
use connectra_domain::job::JobStatus;
use connectra_domain::vql::{parse_vql, Purpose};
use connectra_domain::Service;
use connectra_persistence::Job;
use connectra_search::{
    index_definition, IndexLayout, JsonDocument, OpenSearchBackend, SearchBackend,
};
use serde_json::{json, Value};

fn contacts_csv(n: usize, tag: &str) -> String {
    let countries = ["USA", "Germany", "France"];
    let mut csv = String::from("email,first_name,title,country,city\n");
    for i in 0..n {
        csv.push_str(&format!(
            "{tag}{i}@example.com,First{i},Title {},{},City{}\n",
            i % 7,
            countries[i % countries.len()],
            i % 11
        ));
    }
    csv
}

fn os(h: &Harness) -> OpenSearchBackend {
    h.search.as_opensearch().unwrap().clone()
}

async fn import(h: &Harness, n: usize, tag: &str) -> Job {
    let key = h
        .upload(&format!("{tag}.csv"), contacts_csv(n, tag).as_bytes())
        .await;
    let job = h.import(&key).await;
    assert_eq!(job.status, JobStatus::Completed, "{}", job.job_response);
    job
}

async fn reindex(h: &Harness, service: &str) -> Job {
    h.run("reindex_search", json!({ "service": service })).await
}

/// Every uuid that `vql` matches, in the query's order, through the alias.
async fn search_all(search: &dyn SearchBackend, vql: &Value) -> Vec<String> {
    let mut query = parse_vql(vql)
        .unwrap()
        .validate(Service::Contact, Purpose::Search)
        .unwrap();
    let mut uuids = Vec::new();
    loop {
        let page = search.search(Service::Contact, &query).await.unwrap();
        uuids.extend(
            page.data
                .iter()
                .map(|d| d["uuid"].as_str().unwrap().to_string()),
        );
        match page.next_search_after {
            Some(next) => query = query.after(&next).unwrap(),
            None => return uuids,
        }
    }
}

/// PostgreSQL's `uuid:version` pairs, in uuid order.
async fn pg_pairs(h: &Harness) -> Vec<String> {
    strings(
        &h.pool(),
        "SELECT uuid::text || ':' || version AS s FROM contacts ORDER BY uuid",
    )
    .await
}

/// The index's `uuid:_version` pairs, in uuid order, read through `name`.
async fn index_pairs(os: &OpenSearchBackend, name: &str) -> Vec<String> {
    os.refresh_named(name).await.unwrap();
    let mut pages = os.version_pages(name, 1000).await.unwrap();
    let mut pairs = Vec::new();
    while let Some(page) = pages.next_page().await.unwrap() {
        pairs.extend(page.iter().map(|v| format!("{}:{}", v.uuid, v.version)));
    }
    pages.close().await;
    pairs
}

/// The names of every `_v{n}` contact index, in `n` order.
async fn versioned_contact_indices(os: &OpenSearchBackend) -> Vec<String> {
    os.versioned_indices(Service::Contact)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, n)| n)
        .collect()
}

fn verification(job: &Job) -> &Value {
    &job.job_response["verification"]
}

fn assert_clean(job: &Job, rows: i64) {
    assert_eq!(job.status, JobStatus::Completed, "{}", job.job_response);
    let v = verification(job);
    assert_eq!(v["differences"], json!(0), "{v}");
    assert_eq!(v["postgres"]["rows"], json!(rows), "{v}");
    assert_eq!(v["index"]["documents"], json!(rows), "{v}");
    assert_eq!(v["checksums_match"], json!(true), "{v}");
    assert_eq!(v["first_differences"], json!([]), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reindex_moves_the_alias_to_a_new_index_with_the_same_records() {
    let mut h = Harness::new(true).await;
    h.start(100);
    import(&h, 450, "a").await;
    let os = os(&h);
    let alias = os.index_name(Service::Contact);
    assert_eq!(
        os.layout(Service::Contact).await.unwrap(),
        IndexLayout::Alias(vec![format!("{alias}_v1")]),
        "a fresh cluster gets v1 behind the alias"
    );
    let usa = json!({ "where": { "keyword_match": { "must": { "country": ["usa"] } } },
                      "select_columns": ["uuid"], "order_by": [{ "order_by": "first_name" }], "limit": 100 });
    let before = search_all(h.search.as_ref(), &usa).await;
    assert_eq!(before.len(), 150);
    let pg_before = pg_pairs(&h).await;

    let job = reindex(&h, "contact").await;
    assert_clean(&job, 450);
    assert_eq!(job.job_response["rows_indexed"], json!(450));
    assert_eq!(job.job_response["index"], json!(format!("{alias}_v2")));
    assert_eq!(job.rows_processed, 450, "progress counts the rows indexed");
    assert_eq!(
        os.layout(Service::Contact).await.unwrap(),
        IndexLayout::Alias(vec![format!("{alias}_v2")])
    );
    let left = versioned_contact_indices(&os).await;
    assert_eq!(left, [format!("{alias}_v2")], "the old index is deleted");
    let settings = os.index_settings(&format!("{alias}_v2")).await.unwrap();
    assert!(
        settings.get("refresh_interval").is_none(),
        "refreshes are back on: {settings}"
    );
    assert_eq!(search_all(h.search.as_ref(), &usa).await, before);
    assert_eq!(
        pg_pairs(&h).await,
        pg_before,
        "a reindex writes nothing to PostgreSQL"
    );
    assert_eq!(index_pairs(&os, &alias).await, pg_before);

    // again: v3, and imports keep going through the alias
    let job = reindex(&h, "contact").await;
    assert_clean(&job, 450);
    assert_eq!(job.job_response["index"], json!(format!("{alias}_v3")));
    import(&h, 30, "b").await;
    assert_eq!(index_pairs(&os, &alias).await, pg_pairs(&h).await);
    assert_eq!(pg_pairs(&h).await.len(), 480);
    // companies have their own alias, untouched
    assert_eq!(
        os.layout(Service::Company).await.unwrap(),
        IndexLayout::Alias(vec![format!("{}_v1", os.index_name(Service::Company))])
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drifted_index_is_repaired() {
    let mut h = Harness::new(true).await;
    h.start(100);
    import(&h, 200, "d").await;
    let os = os(&h);
    let alias = os.index_name(Service::Contact);
    let pg = pg_pairs(&h).await;
    let uuid_of = |pair: &String| uuid::Uuid::parse_str(&pair[..36]).unwrap();
    // drift: three documents gone, one stray, one overwritten without a version
    let gone: Vec<uuid::Uuid> = pg[..3].iter().map(uuid_of).collect();
    h.search.delete(Service::Contact, gone).await.unwrap();
    let stray = uuid::Uuid::new_v4();
    let bumped = uuid_of(&pg[10]);
    let refused = h
        .search
        .index_json(
            Service::Contact,
            vec![
                JsonDocument {
                    uuid: stray,
                    json: json!({ "uuid": stray, "email": "stray@example.com" }).to_string(),
                    version: Some(1),
                },
                JsonDocument {
                    uuid: bumped,
                    json: json!({ "uuid": bumped, "email": "wrong@example.com" }).to_string(),
                    version: None,
                },
            ],
        )
        .await
        .unwrap();
    assert!(refused.is_empty(), "{refused:?}");
    assert_ne!(index_pairs(&os, &alias).await, pg, "the index has drifted");

    let job = reindex(&h, "contact").await;
    assert_clean(&job, 200);
    assert_eq!(index_pairs(&os, &alias).await, pg);
    let stray_found = search_all(
        h.search.as_ref(),
        &json!({ "where": { "keyword_match": { "must": { "email": ["stray@example.com", "wrong@example.com"] } } },
                 "select_columns": ["uuid"] }),
    )
    .await;
    assert!(stray_found.is_empty(), "{stray_found:?}");
    let email = strings(
        &h.pool(),
        &format!("SELECT email AS s FROM contacts WHERE uuid = '{bumped}'"),
    )
    .await;
    let found = search_all(
        h.search.as_ref(),
        &json!({ "where": { "keyword_match": { "must": { "email": [email[0]] } } }, "select_columns": ["uuid"] }),
    )
    .await;
    assert_eq!(found, [bumped.to_string()]);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mapping_change_reaches_an_older_deployments_concrete_index() {
    let mut h = Harness::new(true).await;
    let os = os(&h);
    let alias = os.index_name(Service::Contact);
    // an older deployment: a concrete index of the alias's name, whose
    // `city` is text without the `.keyword` subfield's normalizer
    os.delete_indices().await.unwrap();
    let mut old = index_definition(Service::Contact, 0);
    old["mappings"]["properties"]["city"] = json!({ "type": "text" });
    let url = env("OPENSEARCH_URL", "http://127.0.0.1:9200");
    let put = std::process::Command::new("curl")
        .args(["-sf", "-X", "PUT", "-H", "Content-Type: application/json"])
        .arg(format!("{url}/{alias}"))
        .arg("-d")
        .arg(old.to_string())
        .output()
        .unwrap();
    assert!(put.status.success(), "{put:?}");
    h.search.ensure_indices().await.unwrap();
    assert_eq!(
        os.layout(Service::Contact).await.unwrap(),
        IndexLayout::Concrete(alias.clone()),
        "ensure_indices leaves an older deployment's index as it is"
    );
    h.start(100);
    import(&h, 60, "m").await;
    let mapping = os.mapping(&alias).await.unwrap();
    assert_eq!(mapping["properties"]["city"], json!({ "type": "text" }));

    let job = reindex(&h, "contact").await;
    assert_clean(&job, 60);
    assert_eq!(job.job_response["index"], json!(format!("{alias}_v1")));
    assert_eq!(
        os.layout(Service::Contact).await.unwrap(),
        IndexLayout::Alias(vec![format!("{alias}_v1")]),
        "the concrete index became the alias"
    );
    let mapping = os.mapping(&alias).await.unwrap();
    assert_eq!(
        mapping["properties"]["city"],
        index_definition(Service::Contact, 0)["mappings"]["properties"]["city"]
    );
    // the new mapping answers: `city` is a keyword field now
    let found = search_all(
        h.search.as_ref(),
        &json!({ "where": { "keyword_match": { "must": { "city": ["CITY3"] } } }, "select_columns": ["uuid"] }),
    )
    .await;
    assert_eq!(found.len(), 6);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_during_a_reindex_are_not_lost_and_searches_keep_answering() {
    let mut h = Harness::new(true).await;
    h.config.workers = 4;
    h.start(50);
    // many rows in PostgreSQL, indexed once by a first reindex
    exec(
        &h.pool(),
        "INSERT INTO contacts (uuid, email, first_name, country) \
         SELECT gen_random_uuid(), 'bulk' || i || '@example.com', 'Bulk' || i, 'USA' \
         FROM generate_series(1, 40000) i",
    )
    .await;
    let first = reindex(&h, "contact").await;
    assert_clean(&first, 40000);
    let os = os(&h);
    let alias = os.index_name(Service::Contact);

    // searches all through the next reindex: never an error, never empty
    let stop = Arc::new(AtomicBool::new(false));
    let (searches, failures) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let poller = {
        let (search, stop, searches, failures) = (
            h.search.clone(),
            stop.clone(),
            searches.clone(),
            failures.clone(),
        );
        tokio::spawn(async move {
            let query = parse_vql(
                &json!({ "where": { "keyword_match": { "must": { "country": ["usa"] } } },
                                           "select_columns": ["uuid"], "limit": 10 }),
            )
            .unwrap()
            .validate(Service::Contact, Purpose::Search)
            .unwrap();
            let mut problems = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match search.search(Service::Contact, &query).await {
                    Ok(page) if page.data.len() == 10 => {}
                    Ok(page) => problems.push(format!("{} hits", page.data.len())),
                    Err(e) => problems.push(e.to_string()),
                }
                searches.fetch_add(1, Ordering::Relaxed);
                failures.store(problems.len(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            problems
        })
    };
    let job = h
        .create("reindex_search", json!({ "service": "contact" }))
        .await;
    // imports while it runs: new rows, and rows that change
    let mut imports = 0;
    let mut during = 0;
    loop {
        import(&h, 300, &format!("w{}-", imports % 2)).await;
        imports += 1;
        let now = h.repo.get(job.uuid).await.unwrap().unwrap();
        if matches!(now.status, JobStatus::Completed | JobStatus::Failed) || imports >= 60 {
            break;
        }
        during += 1;
    }
    eprintln!("{during} imports completed while the reindex ran");
    assert!(during >= 1, "no import overlapped the reindex");
    let job = h.wait(&job).await;
    stop.store(true, Ordering::Relaxed);
    let problems = poller.await.unwrap();
    assert!(problems.is_empty(), "searches failed: {problems:?}");
    assert!(searches.load(Ordering::Relaxed) > 10);
    assert_eq!(failures.load(Ordering::Relaxed), 0);
    assert_eq!(job.status, JobStatus::Completed, "{}", job.job_response);
    assert_eq!(
        verification(&job)["differences"],
        json!(0),
        "{}",
        job.job_response
    );
    assert_eq!(job.job_response["index"], json!(format!("{alias}_v3")));
    let rows = count(&h.pool(), "SELECT count(*) AS n FROM contacts").await;
    assert_eq!(rows, 40000 + 600.min(300 * imports as i64));
    // both stores hold the same uuids at the same versions
    let pg = pg_pairs(&h).await;
    assert_eq!(index_pairs(&os, &alias).await, pg);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reindex_on_the_postgres_backend_fails_at_once_saying_why() {
    let mut h = Harness::new(false).await;
    h.start(100);
    let job = reindex(&h, "company").await;
    assert_eq!(job.status, JobStatus::Failed, "{}", job.job_response);
    let errors = job.job_response["runtime_errors"].to_string();
    assert!(errors.contains("needs the OpenSearch backend"), "{errors}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_reindex_deletes_its_half_built_index_and_leaves_the_alias() {
    let mut h = Harness::new(true).await;
    h.start(100);
    exec(
        &h.pool(),
        "INSERT INTO contacts (uuid, email) \
         SELECT gen_random_uuid(), 'c' || i || '@example.com' FROM generate_series(1, 60000) i",
    )
    .await;
    let os = os(&h);
    let alias = os.index_name(Service::Contact);
    let job = h
        .create("reindex_search", json!({ "service": "contact" }))
        .await;
    connectra_persistence::testing::job_until(
        &h.repo,
        job.uuid,
        Duration::from_secs(60),
        "the reindex to index its first page",
        |j| j.rows_processed > 0,
    )
    .await;
    h.repo.cancel(job.uuid).await.unwrap().unwrap();
    let job = h.wait(&job).await;
    assert_eq!(job.status, JobStatus::Failed, "{}", job.job_response);
    assert_eq!(
        job.job_response["cancelled"],
        json!(true),
        "{}",
        job.job_response
    );
    assert_eq!(
        os.layout(Service::Contact).await.unwrap(),
        IndexLayout::Alias(vec![format!("{alias}_v1")])
    );
    let left = versioned_contact_indices(&os).await;
    assert_eq!(left, [format!("{alias}_v1")], "the half-built v2 is gone");
    h.stop().await;
}
