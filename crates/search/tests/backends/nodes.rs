//! Several nodes in `OPENSEARCH_URL`: a node that does not answer is passed
//! over, and every request still succeeds on the nodes that do.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use connectra_domain::Service;
use connectra_search::{Document, OpenSearchBackend, SearchBackend};
use futures::StreamExt;
use serde_json::{json, Value};

use crate::common::{dataset, opensearch_url, page_all, uuids, valid, OsIndices, SEED};

/// Nothing listens on port 1 of the loopback: connections are refused.
const DEAD: &str = "http://127.0.0.1:1";

/// The indices of `os` (created, and deleted on drop) through a client for
/// the nodes `urls`.
fn on_nodes(os: &OsIndices, urls: &str) -> OpenSearchBackend {
    let index = os.0.index_name(Service::Contact);
    let prefix = index.strip_suffix("_contacts").unwrap();
    OpenSearchBackend::new(urls)
        .unwrap_or_else(|e| panic!("{urls}: {e}"))
        .with_index_prefix(prefix)
}

fn contacts() -> Vec<Document> {
    dataset(SEED)
        .1
        .iter()
        .map(|r| r.as_object().unwrap().clone())
        .collect()
}

/// Indexes the contacts through `backend`, then reads them back page by page
/// and with a scroll, and checks both see exactly them.
async fn index_search_and_scroll(backend: &OpenSearchBackend) {
    let docs = contacts();
    let mut want = uuids(&docs);
    want.sort();
    backend.ensure_indices().await.unwrap();
    backend.index(Service::Contact, &docs).await.unwrap();
    backend.refresh(Service::Contact).await.unwrap();
    backend.ping().await.unwrap();

    let query = json!({ "select_columns": ["uuid", "email"], "limit": 25 });
    let paged = page_all(backend, Service::Contact, &query).await;
    assert_eq!(paged.uuids(), want, "paging through {backend:?}");
    assert!(paged.pages > 10, "{} pages", paged.pages);

    let mut scrolled = Vec::new();
    let mut pages = backend.scroll(Service::Contact, valid(Service::Contact, &query));
    while let Some(page) = pages.next().await {
        scrolled.extend(uuids(&page.unwrap().data));
    }
    assert_eq!(scrolled, want, "scrolling through {backend:?}");
}

#[tokio::test]
async fn a_dead_node_first_in_the_list_is_passed_over() {
    let os = OsIndices::new().await;
    let backend = on_nodes(&os, &format!("{DEAD}, {}", opensearch_url()));
    let started = Instant::now();
    index_search_and_scroll(&backend).await;
    // a refused connection costs nothing like a request timeout
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn the_same_node_twice_takes_turns_and_works() {
    let os = OsIndices::new().await;
    let real = opensearch_url();
    let backend = on_nodes(&os, &format!("{real},{real}"));
    index_search_and_scroll(&backend).await;
}

#[tokio::test]
async fn only_dead_nodes_fail_at_once_as_unavailable() {
    let backend = OpenSearchBackend::new(&format!("{DEAD},http://127.0.0.1:2"))
        .unwrap()
        .with_index_prefix("test_dead_nodes");
    let query = valid(Service::Contact, &json!({}));
    let started = Instant::now();
    for _ in 0..3 {
        assert!(backend.ping().await.unwrap_err().is_unavailable());
        let e = backend.search(Service::Contact, &query).await.unwrap_err();
        assert!(e.is_unavailable(), "{e:?}");
        assert!(backend.ensure_indices().await.unwrap_err().is_unavailable());
        assert!(backend
            .refresh(Service::Contact)
            .await
            .unwrap_err()
            .is_unavailable());
        let mut scroll = backend.scroll(Service::Contact, query.clone());
        assert!(scroll.next().await.unwrap().unwrap_err().is_unavailable());
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "all nodes down must fail fast, took {:?}",
        started.elapsed()
    );
}

/// A "node" that accepts connections and closes them at once, counting them:
/// a process that died mid-request, as a client sees it.
async fn closing_listener() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            drop(socket);
        }
    });
    (url, accepted)
}

#[tokio::test]
async fn a_node_that_drops_connections_is_passed_over_then_tried_again() {
    let os = OsIndices::new().await;
    let (broken, accepted) = closing_listener().await;
    let backend = on_nodes(&os, &format!("{broken},{}", opensearch_url()));
    let query = valid(
        Service::Contact,
        &json!({ "select_columns": ["uuid"], "limit": 50 }),
    );

    // the first request goes to the broken node and fails over
    let page = backend.search(Service::Contact, &query).await.unwrap();
    assert!(page.data.is_empty());
    let first = accepted.load(Ordering::SeqCst);
    assert!(first >= 1, "the broken node was never tried");

    // while it is marked down, every request goes to the other node
    for _ in 0..10 {
        backend.search(Service::Contact, &query).await.unwrap();
    }
    assert_eq!(accepted.load(Ordering::SeqCst), first);

    // after the probe interval it is tried again (and passed over again)
    tokio::time::sleep(Duration::from_millis(5_200)).await;
    for _ in 0..4 {
        let page = backend.search(Service::Contact, &query).await.unwrap();
        assert_eq!(page.data, Vec::<Document>::new());
    }
    assert!(
        accepted.load(Ordering::SeqCst) > first,
        "the node was not tried again after it had been passed over"
    );
    // the answers were right all along
    let docs = contacts();
    backend.index(Service::Contact, &docs[..20]).await.unwrap();
    backend.refresh(Service::Contact).await.unwrap();
    let page = backend.search(Service::Contact, &query).await.unwrap();
    assert_eq!(page.data.len(), 20);
    let ids: Vec<Value> = page.data.iter().map(|d| d["uuid"].clone()).collect();
    assert!(ids.iter().all(Value::is_string), "{ids:?}");
}
