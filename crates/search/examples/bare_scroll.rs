//! The baseline of the export benchmark: a bare `search_after` scroll over a
//! point in time, straight through the `opensearch` client, with the same
//! sort (uuid), page size and `_source` columns as the export, and no CSV or
//! upload. Prints `rows seconds`.
//!
//! Usage: bare_scroll <opensearch-url> <index> <page-size> <column>...

use std::time::Instant;

use opensearch::http::headers::HeaderMap;
use opensearch::http::request::JsonBody;
use opensearch::http::transport::{SingleNodeConnectionPool, TransportBuilder};
use opensearch::http::{Method, Url};
use opensearch::{OpenSearch, SearchParts};
use serde_json::{json, Value};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, index, size, columns @ ..] = args.as_slice() else {
        anyhow::bail!("usage: bare_scroll <opensearch-url> <index> <page-size> <column>...");
    };
    let size: usize = size.parse()?;
    let transport = TransportBuilder::new(SingleNodeConnectionPool::new(Url::parse(url)?))
        .disable_proxy()
        .build()?;
    let client = OpenSearch::new(transport);
    let started = Instant::now();
    let pit: Value = client
        .send::<(), ()>(
            Method::Post,
            &format!("/{index}/_search/point_in_time?keep_alive=5m"),
            HeaderMap::new(),
            None,
            None,
            None,
        )
        .await?
        .json()
        .await?;
    let mut pit_id = pit["pit_id"].as_str().unwrap_or_default().to_string();
    let mut after: Option<Value> = None;
    let mut rows = 0usize;
    loop {
        let mut body = json!({
            "size": size, "_source": columns, "sort": [{"uuid": "asc"}],
            "pit": {"id": pit_id, "keep_alive": "5m"}, "track_total_hits": false
        });
        if let Some(a) = &after {
            body["search_after"] = a.clone();
        }
        let page: Value = client
            .search(SearchParts::None)
            .body(body)
            .send()
            .await?
            .json()
            .await?;
        if let Some(id) = page["pit_id"].as_str() {
            pit_id = id.to_string();
        }
        let hits = page["hits"]["hits"].as_array().cloned().unwrap_or_default();
        rows += hits.len();
        if hits.len() < size {
            break;
        }
        after = hits.last().map(|h| h["sort"].clone());
    }
    let seconds = started.elapsed().as_secs_f64();
    client
        .send::<_, ()>(
            Method::Delete,
            "/_search/point_in_time",
            HeaderMap::new(),
            None,
            Some(JsonBody::new(json!({"pit_id": [pit_id]}))),
            None,
        )
        .await?;
    println!("{rows} {seconds}");
    Ok(())
}
