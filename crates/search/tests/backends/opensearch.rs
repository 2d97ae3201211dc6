//! What only the OpenSearch backend does: indices, bulk writes, errors.
//! Documents come straight from the seeded dataset; no database needed.

use connectra_domain::Service;
use connectra_search::{Document, OpenSearchBackend, PostgresBackend, SearchBackend, SearchError};
use serde_json::{json, Value};

use crate::common::{dataset, opensearch_url, page_all, search, OsIndices, SEED};

fn docs(rows: &[Value]) -> Vec<Document> {
    rows.iter()
        .map(|r| r.as_object().unwrap().clone())
        .collect()
}

async fn count(backend: &dyn SearchBackend, service: Service) -> usize {
    page_all(
        backend,
        service,
        &json!({ "select_columns": ["uuid"], "limit": 5000 }),
    )
    .await
    .docs
    .len()
}

#[tokio::test]
async fn indexing_the_same_documents_again_changes_nothing() {
    let os = OsIndices::new().await;
    let (companies, _) = dataset(SEED);
    let mut companies = docs(&companies);
    os.0.index(Service::Company, &companies).await.unwrap();
    os.0.refresh(Service::Company).await.unwrap();
    assert_eq!(count(&os.0, Service::Company).await, companies.len());

    os.0.index(Service::Company, &companies).await.unwrap();
    os.0.refresh(Service::Company).await.unwrap();
    assert_eq!(count(&os.0, Service::Company).await, companies.len());

    // An upsert replaces the whole document.
    companies[5].insert("city".to_owned(), json!("Lisbon"));
    companies[5].insert("employees_count".to_owned(), Value::Null);
    os.0.index(Service::Company, &companies[5..6])
        .await
        .unwrap();
    os.0.refresh(Service::Company).await.unwrap();
    assert_eq!(count(&os.0, Service::Company).await, companies.len());
    let page = search(
        &os.0,
        Service::Company,
        &json!({
            "where": { "keyword_match": { "must": { "city": ["LISBON"] } } },
            "select_columns": ["uuid", "city", "employees_count"]
        }),
    )
    .await;
    assert_eq!(
        Value::Array(page.data.into_iter().map(Value::Object).collect()),
        json!([{ "uuid": companies[5]["uuid"], "city": "Lisbon", "employees_count": null }])
    );
}

#[tokio::test]
async fn a_document_the_mapping_rejects_fails_the_bulk_naming_the_reason() {
    let os = OsIndices::new().await;
    let (companies, _) = dataset(SEED);
    let mut companies = docs(&companies[..10]);
    companies[6].insert("employees_count".to_owned(), json!("many"));
    let bad = companies[6]["uuid"].as_str().unwrap().to_owned();
    let err = os.0.index(Service::Company, &companies).await.unwrap_err();
    match &err {
        SearchError::DocumentRejected { id, status, reason } => {
            assert_eq!(id, &bad);
            assert_eq!(*status, 400);
            assert!(
                reason.contains("mapper_parsing_exception") && reason.contains("employees_count"),
                "{reason}"
            );
        }
        other => panic!("expected DocumentRejected, got {other:?}"),
    }
    assert!(err.to_string().contains(&bad), "{err}");
    assert!(!err.is_unavailable());

    // The strict mapping refuses unknown fields too.
    let mut stray = docs(&dataset(SEED).0[..1]);
    stray[0].insert("colour".to_owned(), json!("red"));
    let err = os.0.index(Service::Company, &stray).await.unwrap_err();
    assert!(
        matches!(&err, SearchError::DocumentRejected { reason, .. } if reason.contains("strict_dynamic_mapping_exception")),
        "{err:?}"
    );

    // A document without a uuid never reaches OpenSearch.
    let mut anonymous = docs(&dataset(SEED).0[..1]);
    anonymous[0].remove("uuid");
    assert!(matches!(
        os.0.index(Service::Company, &anonymous).await,
        Err(SearchError::InvalidDocument(_))
    ));
}

#[tokio::test]
async fn small_bulk_requests_still_index_everything() {
    let os = OsIndices::new().await;
    let backend = os.0.clone().with_bulk_max_bytes(4096);
    let (_, contacts) = dataset(SEED);
    let contacts = docs(&contacts);
    backend.index(Service::Contact, &contacts).await.unwrap();
    backend.refresh(Service::Contact).await.unwrap();
    assert_eq!(count(&backend, Service::Contact).await, contacts.len());
}

#[tokio::test]
async fn indices_are_created_once_and_deleted_on_request() {
    let os = OsIndices::new().await;
    os.0.ensure_indices().await.unwrap();
    os.0.ping().await.unwrap();
    assert_eq!(os.0.name(), "opensearch");
    assert!(
        !os.0.searches_the_database(),
        "OpenSearch keeps its own index"
    );
    assert!(os.0.index_name(Service::Contact).ends_with("_contacts"));
    assert!(os.0.index_name(Service::Company).ends_with("_companies"));
    os.0.delete_indices().await.unwrap();
    os.0.delete_indices().await.unwrap();
    let err =
        os.0.search(
            Service::Contact,
            &crate::common::valid(Service::Contact, &json!({})),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, SearchError::Rejected { status: 404, reason, .. } if reason.contains("index_not_found")),
        "{err:?}"
    );
    os.0.ensure_indices().await.unwrap();
    assert_eq!(count(&os.0, Service::Contact).await, 0);
    assert_eq!(
        OpenSearchBackend::new(&opensearch_url())
            .unwrap()
            .index_name(Service::Company),
        "connectra_companies"
    );
}

#[tokio::test]
async fn unreachable_backends_report_unavailable() {
    assert!(matches!(
        OpenSearchBackend::new("not a url"),
        Err(SearchError::Config(_))
    ));
    let os = OpenSearchBackend::new("http://127.0.0.1:1").unwrap();
    assert!(os.ping().await.unwrap_err().is_unavailable());
    let query = crate::common::valid(Service::Company, &json!({}));
    assert!(os
        .search(Service::Company, &query)
        .await
        .unwrap_err()
        .is_unavailable());
    assert!(os.ensure_indices().await.unwrap_err().is_unavailable());

    let pool =
        connectra_persistence::build_pool("postgres://postgres@127.0.0.1:1/none", 1).unwrap();
    let pg = PostgresBackend::new(pool);
    assert_eq!(pg.name(), "postgres");
    assert!(pg.searches_the_database());
    assert!(pg.ping().await.unwrap_err().is_unavailable());
    assert!(pg
        .search(Service::Company, &query)
        .await
        .unwrap_err()
        .is_unavailable());
    // The PostgreSQL backend's writes are no-ops and need no connection.
    pg.ensure_indices().await.unwrap();
    pg.index(Service::Company, &[]).await.unwrap();
    pg.refresh(Service::Company).await.unwrap();
}

#[tokio::test]
async fn the_newest_version_wins_whatever_order_documents_arrive_in() {
    use connectra_search::JsonDocument;
    let os = OsIndices::new().await;
    let uuid = uuid::Uuid::from_u128(77);
    let doc = |name: &str, version: i64| JsonDocument {
        uuid,
        json: json!({ "uuid": uuid.to_string(), "name": name }).to_string(),
        version: Some(version),
    };
    // version 5 arrives first, the older version 3 late (a slower batch, a
    // retry or a stale attempt): the late one is no error and changes nothing
    for (name, version) in [("Newer", 5), ("Older", 3)] {
        let refused =
            os.0.index_json(Service::Company, vec![doc(name, version)])
                .await
                .unwrap();
        assert!(refused.is_empty(), "{refused:?}");
    }
    // the same version again (a resumed batch) is taken
    let refused =
        os.0.index_json(Service::Company, vec![doc("Newer again", 5)])
            .await
            .unwrap();
    assert!(refused.is_empty(), "{refused:?}");
    os.0.refresh(Service::Company).await.unwrap();
    let page = search(
        &os.0,
        Service::Company,
        &json!({ "select_columns": ["name"] }),
    )
    .await;
    assert_eq!(
        Value::Array(page.data.into_iter().map(Value::Object).collect()),
        json!([{ "name": "Newer again" }])
    );
}

/// A search that some shards fail to answer is an error, not a page short
/// of their hits: behind the contacts alias, a second index whose `country`
/// is an integer fails a `terms` query on it, while the real index answers.
#[tokio::test]
async fn a_search_that_some_shards_fail_is_an_error_not_a_short_page() {
    let os = OsIndices::new().await;
    let (_, contacts) = dataset(SEED);
    os.0.index(Service::Contact, &docs(&contacts))
        .await
        .unwrap();
    os.0.refresh(Service::Contact).await.unwrap();
    let query = json!({
        "where": { "keyword_match": { "must": { "country": ["USA"] } } },
        "select_columns": ["uuid"]
    });
    assert!(!search(&os.0, Service::Contact, &query)
        .await
        .data
        .is_empty());

    let alias = os.0.index_name(Service::Contact);
    let odd = format!("{alias}_v999");
    let url = opensearch_url();
    let curl = |args: &[&str]| {
        let out = std::process::Command::new("curl")
            .args(["-fsS", "-H", "Content-Type: application/json"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "curl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    curl(&[
        "-X",
        "PUT",
        &format!("{url}/{odd}"),
        "-d",
        r#"{"mappings": {"properties": {"country": {"type": "integer"}}}}"#,
    ]);
    curl(&[
        "-X",
        "PUT",
        &format!("{url}/{odd}/_doc/1?refresh=true"),
        "-d",
        r#"{"country": 5}"#,
    ]);
    let actions = json!({ "actions": [{ "add": { "index": odd, "alias": alias } }] }).to_string();
    curl(&["-X", "POST", &format!("{url}/_aliases"), "-d", &actions]);

    let q = crate::common::valid(Service::Contact, &query);
    let err = os.0.search(Service::Contact, &q).await.unwrap_err();
    assert!(
        err.is_unavailable() && err.to_string().contains("shard"),
        "{err}"
    );
    let mut scroll = os.0.scroll(Service::Contact, q);
    use futures::StreamExt;
    let first = scroll.next().await.unwrap();
    assert!(first.is_err(), "a scroll's page too: {first:?}");
}
