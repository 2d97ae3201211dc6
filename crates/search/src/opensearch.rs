//! The OpenSearch backend: index definitions, the VQL → search body
//! compiler, bulk writes, and cursor conversion.

use std::borrow::Cow;
use std::time::Duration;

use connectra_domain::catalogue::{self, FieldDef, FieldKind};
use connectra_domain::limits;
use connectra_domain::retry::RetryPolicy;
use connectra_domain::vql::{Bound, CursorValue, RangeBounds, SortDirection, ValidQuery};
use connectra_domain::Service;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use opensearch::http::headers::HeaderMap;
use opensearch::http::response::Response;
use opensearch::http::transport::TransportBuilder;
use opensearch::http::Method;
use opensearch::indices::{
    IndicesCreateParts, IndicesDeleteParts, IndicesExistsParts, IndicesRefreshParts,
};
use opensearch::{BulkParts, OpenSearch, SearchParts};
use serde_json::{json, Map, Value};

use crate::document::{
    check_cursor, cursor_from_sort_value, epoch_millis, fold_case, format_timestamp_full,
};
use crate::nodes::{parse_node_urls, NodePool};
use crate::page::{self, Hit};
use crate::scroll::{scroll, View};
use crate::{Document, JsonDocument, Page, RejectedDocument, SearchBackend, SearchError};

mod indices;

pub use indices::{IndexLayout, IndexVersion, VersionPage};

const BACKEND: &str = "opensearch";

/// Index names are `{prefix}_contacts` and `{prefix}_companies`.
pub const DEFAULT_INDEX_PREFIX: &str = "connectra";

/// The largest bulk request body this backend sends. OpenSearch's default
/// `http.max_content_length` is 100 MB and proxies commonly cap at 10 MB;
/// 5 MiB stays well clear of both while keeping requests efficient.
/// How long a point in time stays open between two pages of an export.
const PIT_KEEP_ALIVE: &str = "5m";

/// The refresh interval of an index while an import loads it. Finite, not
/// `-1`: should the import's process die before it restores the default,
/// what it indexed still becomes searchable within this long.
pub const LOAD_REFRESH_INTERVAL: &str = "30s";

pub const DEFAULT_BULK_MAX_BYTES: usize = 5 * 1024 * 1024;

/// The custom normalizer every keyword (sub)field uses.
const NORMALIZER: &str = "connectra_lowercase";

/// How many times a bulk request is sent while items keep coming back 429.
const BULK_MAX_ATTEMPTS: u32 = 6;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a bulk write keeps trying while OpenSearch is unreachable, times
/// out or answers 5xx as a whole (a node restarting, a pause), before the
/// batch fails; the job's own retries take over from there.
const BULK_RIDE_OUT: Duration = Duration::from_secs(180);

fn index_suffix(service: Service) -> &'static str {
    match service {
        Service::Contact => "contacts",
        Service::Company => "companies",
    }
}

// ---------------------------------------------------------------------------
// Index definition
// ---------------------------------------------------------------------------

/// The `PUT /{index}` body for `service`: settings (one shard, `replicas`
/// replicas, the lower-case normalizer) and a strict mapping derived from the
/// catalogue. A single node needs 0 replicas to be green; with `n` nodes up
/// to `n - 1` replicas keep every document on another node too.
pub fn index_definition(service: Service, replicas: u32) -> Value {
    let properties: Map<String, Value> = catalogue::fields(service)
        .iter()
        .map(|f| (f.name.to_owned(), field_mapping(f)))
        .collect();
    json!({
        "settings": {
            "number_of_shards": 1,
            "number_of_replicas": replicas,
            "analysis": {
                "normalizer": {
                    NORMALIZER: { "type": "custom", "char_filter": [], "filter": ["lowercase"] }
                }
            }
        },
        "mappings": {
            "dynamic": "strict",
            "properties": properties
        }
    })
}

fn field_mapping(field: &FieldDef) -> Value {
    match field.kind {
        FieldKind::Keyword | FieldKind::KeywordList => {
            json!({ "type": "keyword", "normalizer": NORMALIZER })
        }
        FieldKind::Text => json!({
            "type": "text",
            "fields": { "keyword": {
                "type": "keyword",
                "normalizer": NORMALIZER,
                "ignore_above": limits::TEXT_KEYWORD_MAX_CHARS
            } }
        }),
        FieldKind::Integer => json!({ "type": "integer" }),
        FieldKind::BigInt => json!({ "type": "long" }),
        FieldKind::Uuid => json!({ "type": "keyword" }),
        FieldKind::Timestamp => {
            json!({ "type": "date", "format": "strict_date_optional_time||epoch_millis" })
        }
        FieldKind::Json => json!({ "type": "object", "enabled": false }),
    }
}

/// The field that exact matches and sorts use: a text field's `.keyword`
/// subfield, otherwise the field itself.
fn exact_field(field: &FieldDef) -> Cow<'static, str> {
    match field.kind {
        FieldKind::Text => Cow::Owned(format!("{}.keyword", field.name)),
        _ => Cow::Borrowed(field.name),
    }
}

// ---------------------------------------------------------------------------
// Query compilation
// ---------------------------------------------------------------------------

/// The full `_search` body for `query`: `query`, `sort`, `size`,
/// `search_after` and `_source`. Pure; field names come only from the
/// query's catalogue entries.
///
/// - `keyword_match` → `terms` on the exact (sub)field, values lower-cased
///   (the fields' normalizer lower-cases the indexed side);
/// - `text_match` → `match` with `operator: and`;
/// - `range_query` → `range`, integers as numbers and timestamps as RFC 3339
///   with all nine fraction digits (so that OpenSearch does not round a
///   `gt`/`lte` bound up over omitted fields);
/// - `must` clauses go to `bool.filter` (results are sorted, never scored),
///   `must_not` to `bool.must_not`; no filter at all is `match_all`;
/// - every sort key has `missing: _last`, in both directions.
pub fn to_opensearch_query(service: Service, query: &ValidQuery) -> Value {
    debug_assert!(
        query
            .select_columns
            .iter()
            .copied()
            .chain(query.order_by.iter().map(|(f, _)| *f))
            .all(|f| catalogue::field(service, f.name) == Some(f)),
        "the query's fields belong to another service than {service}"
    );
    let mut filter = Vec::new();
    let mut must_not = Vec::new();
    for (field, values) in &query.keyword_must {
        filter.push(terms(field, values));
    }
    for (field, values) in &query.keyword_must_not {
        must_not.push(terms(field, values));
    }
    for (field, text) in &query.text_must {
        filter.push(text_match(field, text));
    }
    for (field, text) in &query.text_must_not {
        must_not.push(text_match(field, text));
    }
    for (field, bounds) in &query.range_must {
        filter.push(range(field, bounds));
    }
    for (field, bounds) in &query.range_must_not {
        must_not.push(range(field, bounds));
    }
    let os_query = if filter.is_empty() && must_not.is_empty() {
        json!({ "match_all": {} })
    } else {
        let mut bool_query = Map::new();
        if !filter.is_empty() {
            bool_query.insert("filter".to_owned(), Value::Array(filter));
        }
        if !must_not.is_empty() {
            bool_query.insert("must_not".to_owned(), Value::Array(must_not));
        }
        json!({ "bool": bool_query })
    };
    let sort: Vec<Value> = query
        .order_by
        .iter()
        .map(|(field, direction)| {
            json!({ exact_field(field): { "order": direction.as_str(), "missing": "_last" } })
        })
        .collect();
    let includes: Vec<&str> = query.select_columns.iter().map(|f| f.name).collect();
    let mut body = json!({
        "query": os_query,
        "sort": sort,
        "size": query.limit,
        "_source": { "includes": includes },
        "track_total_hits": false
    });
    if let (Some(cursor), Some(object)) = (&query.search_after, body.as_object_mut()) {
        let after: Vec<Value> = cursor
            .iter()
            .zip(&query.order_by)
            .map(|(value, (field, direction))| search_after_value(field, *direction, value))
            .collect();
        object.insert("search_after".to_owned(), Value::Array(after));
    }
    body
}

fn terms(field: &FieldDef, values: &[String]) -> Value {
    let values: Vec<String> = values.iter().map(|v| fold_case(v)).collect();
    json!({ "terms": { exact_field(field): values } })
}

fn text_match(field: &FieldDef, text: &str) -> Value {
    json!({ "match": { field.name: { "query": text, "operator": "and" } } })
}

fn range(field: &FieldDef, bounds: &RangeBounds) -> Value {
    let mut spec = Map::new();
    for (op, bound) in [
        ("gt", bounds.gt),
        ("gte", bounds.gte),
        ("lt", bounds.lt),
        ("lte", bounds.lte),
    ] {
        if let Some(bound) = bound {
            let value = match bound {
                Bound::Int(n) => Value::from(n),
                Bound::Timestamp(t) => Value::String(format_timestamp_full(t)),
            };
            spec.insert(op.to_owned(), value);
        }
    }
    json!({ "range": { field.name: spec } })
}

/// The sort value OpenSearch reports for a document that lacks a numeric
/// or date field sorted with `missing: _last`: the type's largest value when
/// ascending, its smallest when descending. Keyword fields report `null`.
fn missing_sort_value(kind: FieldKind, direction: SortDirection) -> Option<i64> {
    match (kind, direction) {
        (FieldKind::Integer, SortDirection::Asc) => Some(i64::from(i32::MAX)),
        (FieldKind::Integer, SortDirection::Desc) => Some(i64::from(i32::MIN)),
        (FieldKind::BigInt | FieldKind::Timestamp, SortDirection::Asc) => Some(i64::MAX),
        (FieldKind::BigInt | FieldKind::Timestamp, SortDirection::Desc) => Some(i64::MIN),
        _ => None,
    }
}

/// A cursor value as OpenSearch's `search_after` wants it: strings
/// lower-cased (sort values are normalised; `search_after` is not), dates as
/// epoch milliseconds, and `null` as the missing-value sentinel of numeric
/// and date fields.
fn search_after_value(field: &FieldDef, direction: SortDirection, value: &CursorValue) -> Value {
    match value {
        CursorValue::Null => {
            missing_sort_value(field.kind, direction).map_or(Value::Null, Value::from)
        }
        CursorValue::Int(n) => Value::from(*n),
        CursorValue::Str(s) => Value::String(fold_case(s)),
        CursorValue::Uuid(u) => Value::String(u.hyphenated().to_string()),
        CursorValue::Timestamp(t) => Value::from(epoch_millis(*t)),
    }
}

/// Reads one of a hit's `sort` values back into a typed cursor value.
fn cursor_value(
    field: &FieldDef,
    direction: SortDirection,
    value: &Value,
) -> Result<CursorValue, SearchError> {
    // OpenSearch sorts a missing number or date as the type's extreme value
    if let Some(n) = value.as_i64() {
        if field.nullable() && missing_sort_value(field.kind, direction) == Some(n) {
            return Ok(CursorValue::Null);
        }
    }
    cursor_from_sort_value(BACKEND, field, value)
}

/// A search response's `hits.hits` item.
impl Hit for Value {
    const BACKEND: &'static str = BACKEND;
    const WITHOUT_SORT: &'static str = "hit without matching 'sort' values";

    fn source(&self) -> Option<&Map<String, Value>> {
        self.get("_source").and_then(Value::as_object)
    }

    fn sort_values(&self) -> Option<&[Value]> {
        self.get("sort")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
    }
}

// ---------------------------------------------------------------------------
// Bulk bodies
// ---------------------------------------------------------------------------

/// One document's two bulk lines, and its id.
#[derive(Debug)]
struct BulkItem {
    uuid: uuid::Uuid,
    id: String,
    lines: Vec<u8>,
}

fn bulk_item(doc: &Document) -> Result<BulkItem, SearchError> {
    let raw = doc.get("uuid").and_then(Value::as_str).ok_or_else(|| {
        SearchError::InvalidDocument("a document has no 'uuid' string".to_owned())
    })?;
    let uuid = uuid::Uuid::parse_str(raw)
        .map_err(|_| SearchError::InvalidDocument(format!("'uuid' {raw:?} is not a uuid")))?;
    let id = uuid.hyphenated().to_string();
    // the document as indexed carries the canonical form of its uuid
    let json = if raw == id {
        serde_json::to_string(doc)
    } else {
        let mut canonical = doc.clone();
        canonical.insert("uuid".to_owned(), Value::String(id));
        serde_json::to_string(&canonical)
    }
    .map_err(|e| SearchError::InvalidDocument(e.to_string()))?;
    bulk_item_json(JsonDocument {
        uuid,
        json,
        version: None,
    })
}

/// A document already serialised, as its two bulk lines: its text is copied
/// in as it is, never parsed. [`bulk_item`] ends here too.
fn bulk_item_json(doc: JsonDocument) -> Result<BulkItem, SearchError> {
    let id = doc.uuid.hyphenated().to_string();
    if !doc.json.trim_start().starts_with('{') {
        return Err(SearchError::InvalidDocument(format!(
            "the document of {id} is not a JSON object"
        )));
    }
    let action = match doc.version {
        None => format!("{{\"index\":{{\"_id\":\"{id}\"}}}}\n"),
        Some(v) => format!(
            "{{\"index\":{{\"_id\":\"{id}\",\"version\":{v},\"version_type\":\"external_gte\"}}}}\n"
        ),
    };
    let mut lines = Vec::with_capacity(action.len() + doc.json.len() + 1);
    lines.extend_from_slice(action.as_bytes());
    lines.extend_from_slice(doc.json.as_bytes());
    lines.push(b'\n');
    Ok(BulkItem {
        uuid: doc.uuid,
        id,
        lines,
    })
}

/// Splits `items` into runs whose bodies stay within `max_bytes`; an item
/// larger than that on its own goes alone.
fn chunks_within<T>(items: &[T], size: impl Fn(&T) -> usize, max_bytes: usize) -> Vec<&[T]> {
    let mut chunks = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, item) in items.iter().enumerate() {
        let len = size(item);
        if i > start && bytes + len > max_bytes {
            chunks.push(&items[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += len;
    }
    if start < items.len() {
        chunks.push(&items[start..]);
    }
    chunks
}

/// An error object of OpenSearch as one line: `type: reason (caused by …)`.
fn describe_error(error: &Value) -> String {
    match error {
        Value::String(s) => s.clone(),
        Value::Object(o) => {
            let kind = o.get("type").and_then(Value::as_str).unwrap_or("error");
            let reason = o.get("reason").and_then(Value::as_str).unwrap_or("");
            let mut text = format!("{kind}: {reason}");
            if let Some(cause) = o.get("caused_by") {
                text.push_str(&format!(" (caused by {})", describe_error(cause)));
            }
            text
        }
        other => other.to_string(),
    }
}

/// What one bulk response says about its items.
#[derive(Debug, Default, PartialEq)]
struct BulkOutcome {
    /// Positions of the items to send again: rejected as overloaded (429)
    /// or with a server error (5xx).
    retry: Vec<usize>,
    /// Items the index refused for good (any other status), with the reason.
    rejected: Vec<(usize, u16, String)>,
}

/// Reads one bulk response: which items to send again and which the index
/// refused (e.g. a value its mapping cannot parse).
fn read_bulk_response(body: &Value, sent: &[&BulkItem]) -> Result<BulkOutcome, SearchError> {
    let mut outcome = BulkOutcome::default();
    if body.get("errors").and_then(Value::as_bool) == Some(false) {
        return Ok(outcome);
    }
    let items = body
        .get("items")
        .and_then(Value::as_array)
        .ok_or_else(|| SearchError::protocol(BACKEND, "bulk response without 'items'"))?;
    if items.len() != sent.len() {
        return Err(SearchError::protocol(
            BACKEND,
            format!(
                "bulk response has {} items for {} sent",
                items.len(),
                sent.len()
            ),
        ));
    }
    for (position, item) in items.iter().enumerate() {
        let result = item
            .as_object()
            .and_then(|o| o.values().next())
            .ok_or_else(|| SearchError::protocol(BACKEND, format!("bulk item {item}")))?;
        let status = result.get("status").and_then(Value::as_u64).unwrap_or(0);
        let status16 = u16::try_from(status).unwrap_or(0);
        match result.get("error") {
            None if (200..300).contains(&status) => {}
            // a newer version is already indexed: this one is not wanted
            Some(_) if status == 409 => {}
            _ if status == 429 || (500..600).contains(&status) => outcome.retry.push(position),
            None => outcome.rejected.push((
                position,
                status16,
                format!("status {status} without an error"),
            )),
            Some(error) => outcome
                .rejected
                .push((position, status16, describe_error(error))),
        }
    }
    Ok(outcome)
}

// ---------------------------------------------------------------------------
// The backend
// ---------------------------------------------------------------------------

/// VQL over OpenSearch: one index per service.
#[derive(Debug, Clone)]
pub struct OpenSearchBackend {
    client: OpenSearch,
    /// The client's nodes; requests go through [`NodePool::send`].
    nodes: NodePool,
    prefix: String,
    bulk_max_bytes: usize,
    replicas: u32,
    /// Matches per range of a scroll sorted by uuid alone ([`uuid_ranges`]).
    range_docs: u64,
}

impl OpenSearchBackend {
    /// A client for the nodes of one cluster at `urls` (e.g.
    /// `http://127.0.0.1:9200`, or several, comma-separated: requests take
    /// turns and fail over, see `nodes.rs`), using the default index prefix
    /// and no replicas. Connects lazily; see [`SearchBackend::ping`].
    pub fn new(urls: &str) -> Result<Self, SearchError> {
        let nodes = NodePool::new(parse_node_urls(urls)?)?;
        let transport = TransportBuilder::new(nodes.clone())
            .disable_proxy()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| SearchError::Config(format!("OpenSearch client: {e}")))?;
        Ok(Self {
            client: OpenSearch::new(transport),
            nodes,
            prefix: DEFAULT_INDEX_PREFIX.to_owned(),
            bulk_max_bytes: DEFAULT_BULK_MAX_BYTES,
            replicas: 0,
            range_docs: RANGE_DOCS,
        })
    }

    /// Creates indices with `replicas` replicas of their shard (default 0,
    /// so that a single node is green; `OPENSEARCH_REPLICAS`).
    pub fn with_replicas(mut self, replicas: u32) -> Self {
        self.replicas = replicas;
        self
    }

    /// Uses indices `{prefix}_contacts` and `{prefix}_companies` (tests
    /// isolate themselves with a random prefix). OpenSearch wants index names
    /// in lower case.
    pub fn with_index_prefix(mut self, prefix: &str) -> Self {
        prefix.clone_into(&mut self.prefix);
        self
    }

    /// Caps each bulk request body at `bytes` (default
    /// [`DEFAULT_BULK_MAX_BYTES`]); a single larger document is sent alone.
    pub fn with_bulk_max_bytes(mut self, bytes: usize) -> Self {
        self.bulk_max_bytes = bytes.max(1);
        self
    }

    /// Reads a scroll sorted by uuid alone in ranges of about `docs` matches
    /// (default two of the largest pages; see [`uuid_ranges`]). Tests set it
    /// low to read a small index range by range.
    pub fn with_scroll_range_docs(mut self, docs: u64) -> Self {
        self.range_docs = docs.max(1);
        self
    }

    /// The name everyone searches and writes `service`'s documents through:
    /// an alias of the physical index `{name}_v{N}` (see
    /// [`OpenSearchBackend::versioned_name`]), or, in a deployment older than
    /// aliases, a concrete index of that name, which the first
    /// `reindex_search` turns into an alias.
    pub fn index_name(&self, service: Service) -> String {
        format!("{}_{}", self.prefix, index_suffix(service))
    }

    /// Deletes both services' indices, if they exist: every physical index
    /// behind each alias (resolved, never by a wildcard delete), every
    /// `{alias}_v{N}` left by an unfinished rebuild, and an older
    /// deployment's concrete index.
    pub async fn delete_indices(&self) -> Result<(), SearchError> {
        let mut names: Vec<String> = Vec::new();
        for service in Service::ALL {
            match self.layout(service).await? {
                IndexLayout::Missing => {}
                IndexLayout::Concrete(name) => names.push(name),
                IndexLayout::Alias(targets) => names.extend(targets),
            }
            names.extend(
                self.versioned_indices(service)
                    .await?
                    .into_iter()
                    .map(|(_, name)| name),
            );
        }
        names.sort();
        names.dedup();
        if names.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let response = self
            .nodes
            .send(REQUEST_TIMEOUT, || async {
                self.client
                    .indices()
                    .delete(IndicesDeleteParts::Index(&names))
                    .ignore_unavailable(true)
                    .send()
                    .await
            })
            .await
            .map_err(unreachable)?;
        read_json(response).await.map(drop)
    }

    /// Creates `service`'s index when the name [`Self::index_name`] does not
    /// exist yet: the physical index `{name}_v1` with the alias `{name}`, in
    /// one request (so no process ever sees the one without the other). An
    /// existing alias, or an older deployment's concrete index of that name,
    /// is left as it is.
    async fn ensure_index(&self, service: Service) -> Result<(), SearchError> {
        let alias = self.index_name(service);
        if self.name_exists(&alias).await? {
            return Ok(());
        }
        let first = self.versioned_name(service, 1);
        let mut definition = index_definition(service, self.replicas);
        definition["aliases"] = json!({ alias.as_str(): {} });
        let response = self
            .nodes
            .send(REQUEST_TIMEOUT, || async {
                self.client
                    .indices()
                    .create(IndicesCreateParts::Index(&first))
                    .body(&definition)
                    .send()
                    .await
            })
            .await
            .map_err(unreachable)?;
        match read_json(response).await {
            Ok(_) => Ok(()),
            // Another process created it between our check and our create
            // (index and alias come together, so the alias is there too,
            // unless someone removed it by hand).
            Err(SearchError::Rejected { reason, .. })
                if reason.starts_with("resource_already_exists_exception") =>
            {
                if self.name_exists(&alias).await? {
                    Ok(())
                } else {
                    Err(SearchError::Config(format!(
                        "the index '{first}' exists but the alias '{alias}' that searches and imports use does not; \
                         add it (POST _aliases) or delete '{first}'"
                    )))
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Whether an index or alias named `name` exists.
    async fn name_exists(&self, name: &str) -> Result<bool, SearchError> {
        let response = self
            .nodes
            .send(REQUEST_TIMEOUT, || async {
                self.client
                    .indices()
                    .exists(IndicesExistsParts::Index(&[name]))
                    .send()
                    .await
            })
            .await
            .map_err(unreachable)?;
        match response.status_code().as_u16() {
            200 => Ok(true),
            404 => Ok(false),
            _ => read_json(response).await.map(|_| false),
        }
    }

    /// Indexes `items`; returns the documents the index refused for good.
    /// Items answered 429 or 5xx are sent again with backoff.
    async fn bulk_index(
        &self,
        service: Service,
        items: Vec<BulkItem>,
    ) -> Result<Vec<RejectedDocument>, SearchError> {
        self.bulk_into(&self.index_name(service), items).await
    }

    /// [`Self::bulk_index`] into the index or alias named `index`.
    async fn bulk_into(
        &self,
        index: &str,
        items: Vec<BulkItem>,
    ) -> Result<Vec<RejectedDocument>, SearchError> {
        let mut refused = Vec::new();
        for chunk in chunks_within(&items, |i| i.lines.len(), self.bulk_max_bytes) {
            let mut pending: Vec<&BulkItem> = chunk.iter().collect();
            let mut attempt = 1;
            let mut rejected_pauses = RetryPolicy::QUICK.pauses();
            let mut unavailable_pauses = RetryPolicy::QUICK.pauses();
            let mut unavailable_since: Option<tokio::time::Instant> = None;
            let mut unavailable_tries = 0;
            loop {
                let outcome = match self.send_bulk(index, &pending).await {
                    Ok(outcome) => outcome,
                    Err(e)
                        if e.is_unavailable()
                            && unavailable_since
                                .get_or_insert_with(tokio::time::Instant::now)
                                .elapsed()
                                < BULK_RIDE_OUT =>
                    {
                        unavailable_tries += 1;
                        metrics::counter!(connectra_domain::retry::OPENSEARCH_RETRIES_METRIC)
                            .increment(1);
                        tracing::warn!(index, error = %e, tries = unavailable_tries,
                            "OpenSearch is unavailable for a bulk write; trying again");
                        tokio::time::sleep(unavailable_pauses.next_pause()).await;
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                unavailable_since = None;
                unavailable_tries = 0;
                unavailable_pauses.reset();
                refused.extend(outcome.rejected.iter().filter_map(|(p, status, reason)| {
                    pending.get(*p).map(|item| RejectedDocument {
                        uuid: item.uuid,
                        status: *status,
                        reason: reason.clone(),
                    })
                }));
                if outcome.retry.is_empty() {
                    break;
                }
                if attempt >= BULK_MAX_ATTEMPTS {
                    return Err(SearchError::unavailable(
                        BACKEND,
                        format!(
                            "{} document(s) still rejected as overloaded or failing after {attempt} attempts, first '{}'",
                            outcome.retry.len(),
                            outcome.retry.first().and_then(|&p| pending.get(p)).map_or("", |i| i.id.as_str())
                        ),
                    ));
                }
                tracing::debug!(
                    index,
                    retried = outcome.retry.len(),
                    attempt,
                    "bulk items rejected with 429 or 5xx, backing off"
                );
                metrics::counter!(connectra_domain::retry::OPENSEARCH_RETRIES_METRIC)
                    .increment(outcome.retry.len() as u64);
                pending = outcome
                    .retry
                    .iter()
                    .filter_map(|&p| pending.get(p).copied())
                    .collect();
                tokio::time::sleep(rejected_pauses.next_pause()).await;
                attempt += 1;
            }
        }
        Ok(refused)
    }

    /// Sends one bulk request and reads what became of each item (all of
    /// them to be sent again when the whole request was answered 429).
    async fn send_bulk(
        &self,
        index: &str,
        items: &[&BulkItem],
    ) -> Result<BulkOutcome, SearchError> {
        let mut body = Vec::with_capacity(items.iter().map(|i| i.lines.len()).sum());
        for item in items {
            body.extend_from_slice(&item.lines);
        }
        // one try: a failed node is marked down, and bulk_index sends the
        // request again (to another node) after its pause
        let response = self
            .nodes
            .send(Duration::ZERO, || {
                self.client
                    .bulk(BulkParts::Index(index))
                    .body(vec![body.as_slice()])
                    .send()
            })
            .await
            .map_err(unreachable)?;
        if response.status_code().as_u16() == 429 {
            return Ok(BulkOutcome {
                retry: (0..items.len()).collect(),
                rejected: Vec::new(),
            });
        }
        if !response.status_code().is_success() {
            // read_json turns every non-2xx answer into its error
            return read_json(response).await.map(|_| BulkOutcome::default());
        }
        let text = response.bytes().await.map_err(unreachable)?;
        // The usual answer, `"errors": false`, is read without building the
        // whole item list as JSON values (a batch's list is megabytes of them).
        #[derive(serde::Deserialize)]
        struct Summary {
            errors: bool,
        }
        match serde_json::from_slice::<Summary>(&text) {
            Ok(Summary { errors: false }) => Ok(BulkOutcome::default()),
            _ => {
                let body: Value = serde_json::from_slice(&text).map_err(|_| {
                    SearchError::protocol(BACKEND, "a bulk response that is not JSON".to_owned())
                })?;
                read_bulk_response(&body, items)
            }
        }
    }

    async fn run_search(&self, service: Service, query: &ValidQuery) -> Result<Page, SearchError> {
        self.run_search_in(service, query, None, None)
            .await
            .map(|(page, _)| page)
    }

    /// One page, from the index or, with `pit`, from that point in time,
    /// restricted to `span` of the uuid space when given. Returns the page
    /// and the point in time's (possibly renewed) id.
    async fn run_search_in(
        &self,
        service: Service,
        query: &ValidQuery,
        pit: Option<&str>,
        span: Option<UuidSpan>,
    ) -> Result<(Page, Option<String>), SearchError> {
        check_cursor(query)?;
        let mut body = to_opensearch_query(service, query);
        if let Some(span) = span {
            span.restrict(&mut body);
        }
        let body = self
            .search_body(service, body, pit, SEARCH_FILTER_PATH)
            .await?;
        let pit_id = body.get("pit_id").and_then(Value::as_str).map(String::from);
        // `filter_path` leaves `hits` out of a response without hits; `took`
        // is in every real search response
        let hits: &[Value] = match body.pointer("/hits/hits") {
            Some(hits) => hits.as_array().map(Vec::as_slice),
            None if body.get("took").is_some() => Some(&[][..]),
            None => None,
        }
        .ok_or_else(|| SearchError::protocol(BACKEND, "search response without hits.hits"))?;
        Ok((page::assemble(query, hits, cursor_value)?, pit_id))
    }

    /// Sends a search `body`, in the point in time `pit` or else on
    /// `service`'s index, and returns the response's fields `filter_path`
    /// keeps. A response in which some shards failed is an error: its hits
    /// would be short of theirs (a page, an export, silently missing rows).
    async fn search_body(
        &self,
        service: Service,
        mut body: Value,
        pit: Option<&str>,
        filter_path: &[&str],
    ) -> Result<Value, SearchError> {
        let index = self.index_name(service);
        let indices = [index.as_str()];
        let parts = match pit {
            Some(id) => {
                body["pit"] = json!({ "id": id, "keep_alive": PIT_KEEP_ALIVE });
                SearchParts::None
            }
            None => SearchParts::Index(&indices),
        };
        let mut filter_path = filter_path.to_vec();
        filter_path.push("_shards.failed");
        let response = self
            .nodes
            .send(REQUEST_TIMEOUT, || {
                self.client
                    .search(parts.clone())
                    .filter_path(&filter_path)
                    .body(&body)
                    .send()
            })
            .await
            .map_err(unreachable)?;
        let body = read_json(response).await?;
        match body.pointer("/_shards/failed").and_then(Value::as_u64) {
            Some(0) | None => Ok(body),
            Some(failed) => Err(SearchError::unavailable(
                BACKEND,
                format!(
                    "{failed} shard(s) failed to answer the search; its hits would be incomplete"
                ),
            )),
        }
    }

    /// How many documents of `service` match `query` in the point in time
    /// `pit`.
    async fn count_in(
        &self,
        service: Service,
        query: &ValidQuery,
        pit: &str,
    ) -> Result<u64, SearchError> {
        let mut body = to_opensearch_query(service, query);
        if let Some(object) = body.as_object_mut() {
            for key in ["sort", "_source", "search_after"] {
                object.remove(key);
            }
            object.insert("size".to_owned(), Value::from(0));
            object.insert("track_total_hits".to_owned(), Value::Bool(true));
        }
        let body = self
            .search_body(service, body, Some(pit), &["hits.total.value"])
            .await?;
        body.pointer("/hits/total/value")
            .and_then(Value::as_u64)
            .ok_or_else(|| SearchError::protocol(BACKEND, "count response without hits.total"))
    }

    /// Opens a point in time on `service`'s index.
    async fn open_pit(&self, service: Service) -> Result<String, SearchError> {
        self.open_pit_on(&self.index_name(service)).await
    }

    /// Opens a point in time on the index or alias `index`.
    async fn open_pit_on(&self, index: &str) -> Result<String, SearchError> {
        let path = format!("/{index}/_search/point_in_time?keep_alive={PIT_KEEP_ALIVE}");
        // any node can open it, and any node can search it later
        let body = self.call(Method::Post, &path, None).await?;
        body.get("pit_id")
            .and_then(Value::as_str)
            .map(String::from)
            .ok_or_else(|| SearchError::protocol(BACKEND, "point-in-time response without pit_id"))
    }

    /// Closes a point in time; failures only cost the node memory until the
    /// keep-alive runs out, so they are logged, not returned.
    async fn close_pit(&self, id: &str) {
        let body = json!({ "pit_id": [id] });
        let sent = self
            .nodes
            .send(REQUEST_TIMEOUT, || {
                self.client.send::<_, ()>(
                    Method::Delete,
                    "/_search/point_in_time",
                    HeaderMap::new(),
                    None,
                    Some(opensearch::http::request::JsonBody::new(&body)),
                    None,
                )
            })
            .await;
        if let Err(e) = sent {
            tracing::warn!(error = %e, "closing an OpenSearch point in time failed");
        }
    }

    async fn refresh_index(&self, service: Service) -> Result<(), SearchError> {
        let name = self.index_name(service);
        let response = self
            .nodes
            .send(REQUEST_TIMEOUT, || async {
                self.client
                    .indices()
                    .refresh(IndicesRefreshParts::Index(&[&name]))
                    .send()
                    .await
            })
            .await
            .map_err(unreachable)?;
        read_json(response).await.map(drop)
    }

    /// Sets the `refresh_interval` of `service`'s index (through its alias).
    async fn put_refresh_interval(
        &self,
        service: Service,
        interval: Value,
    ) -> Result<(), SearchError> {
        let path = format!("/{}/_settings", self.index_name(service));
        let body = json!({ "index": { "refresh_interval": interval } });
        self.call(Method::Put, &path, Some(body)).await.map(drop)
    }

    /// The `refresh_interval` set on `service`'s index; `None` when it has
    /// the default (1 s).
    pub async fn refresh_interval(&self, service: Service) -> Result<Option<String>, SearchError> {
        let path = format!(
            "/{}/_settings/index.refresh_interval",
            self.index_name(service)
        );
        let body = self.call(Method::Get, &path, None).await?;
        // one entry per physical index behind the alias
        Ok(body
            .as_object()
            .into_iter()
            .flat_map(|indices| indices.values())
            .find_map(|index| index.pointer("/settings/index/refresh_interval"))
            .and_then(Value::as_str)
            .map(String::from))
    }

    async fn ping_node(&self) -> Result<(), SearchError> {
        let response = self
            .nodes
            .send(REQUEST_TIMEOUT, || self.client.ping().send())
            .await
            .map_err(unreachable)?;
        let status = response.status_code();
        if status.is_success() {
            Ok(())
        } else {
            Err(SearchError::unavailable(
                BACKEND,
                format!("ping answered {status}"),
            ))
        }
    }
}

fn unreachable(error: opensearch::Error) -> SearchError {
    SearchError::unavailable(BACKEND, error)
}

/// The JSON body of a successful response; a 429 or 5xx is
/// [`SearchError::Unavailable`], another failure [`SearchError::Rejected`].
async fn read_json(response: Response) -> Result<Value, SearchError> {
    let status = response.status_code();
    let text = response.text().await.map_err(unreachable)?;
    let body: Option<Value> = serde_json::from_str(&text).ok();
    if status.is_success() {
        return body.ok_or_else(|| {
            SearchError::protocol(BACKEND, format!("a {status} response that is not JSON"))
        });
    }
    let reason = body
        .as_ref()
        .and_then(|b| b.get("error"))
        .map(describe_error)
        .unwrap_or_else(|| text.chars().take(500).collect());
    let code = status.as_u16();
    if code == 429 || status.is_server_error() {
        Err(SearchError::unavailable(
            BACKEND,
            format!("status {code}: {reason}"),
        ))
    } else {
        Err(SearchError::Rejected {
            backend: BACKEND,
            status: code,
            reason,
        })
    }
}

impl SearchBackend for OpenSearchBackend {
    fn name(&self) -> &'static str {
        BACKEND
    }

    fn searches_the_database(&self) -> bool {
        false
    }

    fn as_opensearch(&self) -> Option<&OpenSearchBackend> {
        Some(self)
    }

    fn ensure_indices(&self) -> BoxFuture<'_, Result<(), SearchError>> {
        Box::pin(async move {
            for service in Service::ALL {
                self.ensure_index(service).await?;
            }
            Ok(())
        })
    }

    fn index<'a>(
        &'a self,
        service: Service,
        docs: &'a [Document],
    ) -> BoxFuture<'a, Result<(), SearchError>> {
        Box::pin(async move {
            let items = docs.iter().map(bulk_item).collect::<Result<Vec<_>, _>>()?;
            match self.bulk_index(service, items).await?.into_iter().next() {
                None => Ok(()),
                Some(r) => Err(r.into()),
            }
        })
    }

    fn index_json(
        &self,
        service: Service,
        docs: Vec<JsonDocument>,
    ) -> BoxFuture<'_, Result<Vec<RejectedDocument>, SearchError>> {
        Box::pin(async move {
            // each text is dropped as soon as it is copied into its bulk lines
            let items = docs
                .into_iter()
                .map(bulk_item_json)
                .collect::<Result<Vec<_>, _>>()?;
            self.bulk_index(service, items).await
        })
    }

    fn delete(
        &self,
        service: Service,
        uuids: Vec<uuid::Uuid>,
    ) -> BoxFuture<'_, Result<(), SearchError>> {
        Box::pin(async move {
            let items = uuids
                .into_iter()
                .map(|uuid| {
                    let id = uuid.hyphenated().to_string();
                    let lines = format!("{{\"delete\":{{\"_id\":\"{id}\"}}}}\n").into_bytes();
                    BulkItem { uuid, id, lines }
                })
                .collect();
            // a document that is not there (404) is as good as deleted
            match self
                .bulk_index(service, items)
                .await?
                .into_iter()
                .find(|r| r.status != 404)
            {
                None => Ok(()),
                Some(r) => Err(r.into()),
            }
        })
    }

    fn refresh(&self, service: Service) -> BoxFuture<'_, Result<(), SearchError>> {
        Box::pin(self.refresh_index(service))
    }

    fn set_loading(
        &self,
        service: Service,
        loading: bool,
    ) -> BoxFuture<'_, Result<(), SearchError>> {
        // `null` is the index's default again (1 s)
        let interval = if loading {
            Value::from(LOAD_REFRESH_INTERVAL)
        } else {
            Value::Null
        };
        Box::pin(self.put_refresh_interval(service, interval))
    }

    fn search<'a>(
        &'a self,
        service: Service,
        query: &'a ValidQuery,
    ) -> BoxFuture<'a, Result<Page, SearchError>> {
        Box::pin(self.run_search(service, query))
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), SearchError>> {
        Box::pin(self.ping_node())
    }

    fn scroll(
        &self,
        service: Service,
        query: ValidQuery,
    ) -> BoxStream<'static, Result<Page, SearchError>> {
        use futures::StreamExt;
        let backend = self.clone();
        let open = async move {
            let pit = backend.open_pit(service).await?;
            let spans = if sorted_by_uuid_alone(&query) {
                match backend.count_in(service, &query, &pit).await {
                    Ok(matches) => uuid_ranges(&query, matches, backend.range_docs),
                    Err(e) => {
                        backend.close_pit(&pit).await;
                        return Err(e);
                    }
                }
            } else {
                None
            };
            Ok(match spans {
                Some(spans) => ranged_scroll(backend, service, query, pit, spans),
                None => {
                    let view = PointInTime {
                        backend,
                        service,
                        pit,
                    };
                    scroll(Box::pin(async move { Ok(view) }), query)
                }
            })
        };
        futures::stream::once(open)
            .flat_map(|opened| match opened {
                Ok(pages) => pages,
                Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
            })
            .boxed()
    }
}

/// The `filter_path` of a page's search: only what [`page::assemble`] reads
/// (and `took`, which tells an empty page from a response without hits).
const SEARCH_FILTER_PATH: &[&str] = &["took", "pit_id", "hits.hits._source", "hits.hits.sort"];

/// How many matches one range of a ranged scroll holds on average: two of
/// the largest pages.
const RANGE_DOCS: u64 = 2 * connectra_domain::vql::MAX_LIMIT as u64;

/// The most ranges a scroll is cut into.
const MAX_RANGES: u64 = 1 << 16;

/// Ranges of a ranged scroll read at the same time.
const RANGES_IN_FLIGHT: usize = 2;

/// A part of the uuid space, `[low, high)`; `None` leaves that end open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct UuidSpan {
    low: Option<u128>,
    high: Option<u128>,
}

impl UuidSpan {
    /// Restricts a search body's query to the span, with a `range` filter on
    /// `uuid` (a plain keyword: its byte order is the uuids' numeric order,
    /// the order the sort uses).
    fn restrict(self, body: &mut Value) {
        let mut bounds = Map::new();
        if let Some(low) = self.low {
            bounds.insert("gte".to_owned(), Value::String(uuid_text(low)));
        }
        if let Some(high) = self.high {
            bounds.insert("lt".to_owned(), Value::String(uuid_text(high)));
        }
        if bounds.is_empty() {
            return;
        }
        let query = body
            .get_mut("query")
            .map(Value::take)
            .unwrap_or_else(|| json!({ "match_all": {} }));
        body["query"] = json!({ "bool": { "filter": [query, { "range": { "uuid": bounds } }] } });
    }

    /// The cursor after the last uuid of the span, in `direction`: a scroll
    /// that goes on from it starts in the next span.
    fn end_cursor(self, direction: SortDirection) -> Option<Vec<Value>> {
        let end = match direction {
            // strictly after high - 1 is from high on
            SortDirection::Asc => self.high?.checked_sub(1)?,
            // strictly before low
            SortDirection::Desc => self.low?,
        };
        Some(vec![Value::String(uuid_text(end))])
    }
}

fn uuid_text(n: u128) -> String {
    uuid::Uuid::from_u128(n).hyphenated().to_string()
}

fn sorted_by_uuid_alone(query: &ValidQuery) -> bool {
    matches!(query.order_by.as_slice(), [(field, _)] if field.kind == FieldKind::Uuid)
}

/// The ranges a scroll of `query`, sorted by uuid alone, over `matches`
/// documents reads, in sort order: equal parts of the uuid space, about
/// `range_docs` matches each, from the one that holds the query's cursor.
/// `None` when one range would do, or the query is sorted otherwise.
///
/// Why: Lucene cannot skip the documents that sort before a keyword
/// `search_after`, so each page of a plain scroll visits every match after
/// its cursor, and a scroll of N matches costs O(N²). Filtered to its range
/// as well, a page visits only the rest of that range, and ranges can be
/// read side by side. The rows and their order are the plain scroll's: the
/// ranges partition the uuid space in order, and within one the sort and
/// the cursor are the same. Random (v4) uuids spread evenly; skewed ones
/// make some ranges larger (slower), never wrong.
fn uuid_ranges(query: &ValidQuery, matches: u64, range_docs: u64) -> Option<Vec<UuidSpan>> {
    let [(_, direction)] = query.order_by.as_slice() else {
        return None;
    };
    if !sorted_by_uuid_alone(query) {
        return None;
    }
    let count = (matches / range_docs.max(1)).min(MAX_RANGES);
    if count < 2 {
        return None;
    }
    let count = u128::from(count);
    let step = u128::MAX / count + 1;
    let span = |i: u128| UuidSpan {
        low: (i > 0).then(|| i * step),
        high: (i + 1 < count).then(|| (i + 1) * step),
    };
    // a scroll that starts after a cursor starts in the cursor's range
    let from = match query.search_after.as_deref() {
        Some([CursorValue::Uuid(after)]) => Some(after.as_u128() / step),
        _ => None,
    };
    Some(match direction {
        SortDirection::Asc => (from.unwrap_or(0)..count).map(span).collect(),
        SortDirection::Desc => (0..=from.unwrap_or(count - 1)).rev().map(span).collect(),
    })
}

/// Every page of `query` in the point in time `pit`, read range by range of
/// `spans` ([`uuid_ranges`]), [`RANGES_IN_FLIGHT`] ranges at a time, and
/// handed on in order. The first range starts at the query's cursor, the
/// others at their beginning. The point in time is closed after the last
/// page or an error.
fn ranged_scroll(
    backend: OpenSearchBackend,
    service: Service,
    query: ValidQuery,
    pit: String,
    spans: Vec<UuidSpan>,
) -> BoxStream<'static, Result<Page, SearchError>> {
    use futures::StreamExt;
    let direction = query
        .order_by
        .first()
        .map_or(SortDirection::Asc, |(_, d)| *d);
    let from_start = ValidQuery {
        search_after: None,
        ..query.clone()
    };
    let last = spans.len().saturating_sub(1);
    let reader = backend.clone();
    let read_pit = pit.clone();
    let ranges = futures::stream::iter(spans.into_iter().enumerate())
        .map(move |(i, span)| {
            let (backend, pit) = (reader.clone(), read_pit.clone());
            let query = if i == 0 {
                query.clone()
            } else {
                from_start.clone()
            };
            async move {
                let mut pages = backend.scan_span(service, query, &pit, span).await?;
                if i < last {
                    if let Some(page) = pages.last_mut() {
                        page.next_search_after = span.end_cursor(direction);
                    }
                }
                Ok::<_, SearchError>(pages)
            }
        })
        .buffered(RANGES_IN_FLIGHT)
        .boxed();
    struct State {
        ranges: BoxStream<'static, Result<Vec<Page>, SearchError>>,
        ready: std::collections::VecDeque<Page>,
        open: Option<(OpenSearchBackend, String)>,
    }
    let state = State {
        ranges,
        ready: std::collections::VecDeque::new(),
        open: Some((backend, pit)),
    };
    futures::stream::unfold(state, |mut state| async move {
        loop {
            if let Some(page) = state.ready.pop_front() {
                return Some((Ok(page), state));
            }
            let (backend, pit) = state.open.take()?;
            match state.ranges.next().await {
                Some(Ok(pages)) => {
                    state.ready.extend(pages);
                    state.open = Some((backend, pit));
                }
                Some(Err(e)) => {
                    backend.close_pit(&pit).await;
                    return Some((Err(e), state));
                }
                None => {
                    backend.close_pit(&pit).await;
                    return None;
                }
            }
        }
    })
    .boxed()
}

impl OpenSearchBackend {
    /// Every non-empty page of `query` within `span` of the point in time
    /// `pit`.
    async fn scan_span(
        &self,
        service: Service,
        mut query: ValidQuery,
        pit: &str,
        span: UuidSpan,
    ) -> Result<Vec<Page>, SearchError> {
        let mut pages = Vec::new();
        loop {
            // an OpenSearch point in time keeps its id; ranges read side by side share it
            let (page, _) = self
                .run_search_in(service, &query, Some(pit), Some(span))
                .await?;
            let next = page.next_search_after.clone();
            if !page.data.is_empty() {
                pages.push(page);
            }
            match next {
                None => return Ok(pages),
                Some(cursor) => {
                    query = query
                        .after(&cursor)
                        .map_err(|e| SearchError::InvalidQuery(e.to_string()))?;
                }
            }
        }
    }
}

/// An open point in time on one service's index.
struct PointInTime {
    backend: OpenSearchBackend,
    service: Service,
    pit: String,
}

impl View for PointInTime {
    fn page<'a>(&'a mut self, query: &'a ValidQuery) -> BoxFuture<'a, Result<Page, SearchError>> {
        Box::pin(async move {
            let (page, renewed) = self
                .backend
                .run_search_in(self.service, query, Some(&self.pit), None)
                .await?;
            if let Some(id) = renewed {
                self.pit = id;
            }
            Ok(page)
        })
    }

    fn finish(self) -> BoxFuture<'static, Result<(), SearchError>> {
        Box::pin(async move {
            self.backend.close_pit(&self.pit).await;
            Ok(())
        })
    }

    fn abandon(self) -> BoxFuture<'static, ()> {
        Box::pin(async move { self.backend.close_pit(&self.pit).await })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::document::cursor_json;
    use connectra_domain::vql::{parse_vql, Purpose};

    fn valid(service: Service, query: Value) -> ValidQuery {
        parse_vql(&query)
            .unwrap()
            .validate(service, Purpose::Search)
            .unwrap()
    }

    #[test]
    fn no_where_is_match_all_sorted_by_uuid() {
        let q = valid(
            Service::Contact,
            json!({ "select_columns": ["uuid", "email"], "limit": 10 }),
        );
        assert_eq!(
            to_opensearch_query(Service::Contact, &q),
            json!({
                "query": { "match_all": {} },
                "sort": [{ "uuid": { "order": "asc", "missing": "_last" } }],
                "size": 10,
                "_source": { "includes": ["uuid", "email"] },
                "track_total_hits": false
            })
        );
    }

    #[test]
    fn filters_compile_to_terms_match_and_range() {
        let q = valid(
            Service::Company,
            json!({
                "where": {
                    "keyword_match": {
                        "must": { "country": ["USA", "Über"], "name": ["ACME Inc"], "industries": ["Software"] },
                        "must_not": { "state": ["CA"] }
                    },
                    "text_match": { "must": { "name": "acme labs" }, "must_not": { "name": "old" } },
                    "range_query": {
                        "must": {
                            "employees_count": { "gte": 50, "lt": 1000 },
                            "created_at": { "gt": "2024-01-31T10:30:00.123456+01:00" }
                        },
                        "must_not": { "annual_revenue": { "lte": 9000000000_i64 } }
                    }
                },
                "select_columns": ["uuid"]
            }),
        );
        let body = to_opensearch_query(Service::Company, &q);
        assert_eq!(
            body["query"],
            json!({ "bool": {
                "filter": [
                    { "terms": { "country": ["usa", "über"] } },
                    { "terms": { "industries": ["software"] } },
                    { "terms": { "name.keyword": ["acme inc"] } },
                    { "match": { "name": { "query": "acme labs", "operator": "and" } } },
                    { "range": { "created_at": { "gt": "2024-01-31T09:30:00.123456000Z" } } },
                    { "range": { "employees_count": { "gte": 50, "lt": 1000 } } }
                ],
                "must_not": [
                    { "terms": { "state": ["ca"] } },
                    { "match": { "name": { "query": "old", "operator": "and" } } },
                    { "range": { "annual_revenue": { "lte": 9000000000_i64 } } }
                ]
            }})
        );
    }

    #[test]
    fn uuid_keyword_match_uses_the_plain_keyword_field() {
        let q = valid(
            Service::Contact,
            json!({ "where": { "keyword_match": { "must": { "company_id": ["0B7E4A54-3F0C-4D51-A2B1-5C9D7E1F2A3B"] } } } }),
        );
        assert_eq!(
            to_opensearch_query(Service::Contact, &q)["query"],
            json!({ "bool": { "filter": [
                { "terms": { "company_id": ["0b7e4a54-3f0c-4d51-a2b1-5c9d7e1f2a3b"] } }
            ] } })
        );
    }

    #[test]
    fn sort_and_search_after_use_exact_fields_and_sentinels() {
        let q = valid(
            Service::Company,
            json!({
                "order_by": [
                    { "order_by": "name", "order_direction": "desc" },
                    { "order_by": "employees_count" },
                    { "order_by": "annual_revenue", "order_direction": "desc" },
                    { "order_by": "created_at" }
                ],
                "search_after": ["ACME", null, null, "2024-01-01T00:00:00.123999Z", "0b7e4a54-3f0c-4d51-a2b1-5c9d7e1f2a3b"],
                "limit": 25
            }),
        );
        let body = to_opensearch_query(Service::Company, &q);
        assert_eq!(
            body["sort"],
            json!([
                { "name.keyword": { "order": "desc", "missing": "_last" } },
                { "employees_count": { "order": "asc", "missing": "_last" } },
                { "annual_revenue": { "order": "desc", "missing": "_last" } },
                { "created_at": { "order": "asc", "missing": "_last" } },
                { "uuid": { "order": "asc", "missing": "_last" } }
            ])
        );
        assert_eq!(
            body["search_after"],
            json!([
                "acme",
                i32::MAX,
                i64::MIN,
                1_704_067_200_123_i64,
                "0b7e4a54-3f0c-4d51-a2b1-5c9d7e1f2a3b"
            ])
        );
        assert_eq!(body["size"], json!(25));
        assert_eq!(
            body["_source"]["includes"].as_array().map(Vec::len),
            Some(20)
        );
    }

    #[test]
    fn sort_values_read_back_into_cursors_that_validate() {
        let q = valid(
            Service::Company,
            json!({ "order_by": [
                { "order_by": "city" },
                { "order_by": "employees_count", "order_direction": "desc" },
                { "order_by": "total_funding" },
                { "order_by": "updated_at", "order_direction": "desc" }
            ] }),
        );
        let sort = [
            json!(null),
            json!(i32::MIN),
            json!(i64::MAX),
            json!(1_704_067_200_120_i64),
            json!("0b7e4a54-3f0c-4d51-a2b1-5c9d7e1f2a3b"),
        ];
        let cursor: Vec<CursorValue> = sort
            .iter()
            .zip(&q.order_by)
            .map(|(v, (f, d))| cursor_value(f, *d, v).unwrap())
            .collect();
        let json = cursor_json(&cursor);
        assert_eq!(
            json,
            vec![
                json!(null),
                json!(null),
                json!(null),
                json!("2024-01-01T00:00:00.12Z"),
                json!("0b7e4a54-3f0c-4d51-a2b1-5c9d7e1f2a3b")
            ]
        );
        let mut again = parse_vql(&json!({ "order_by": [
            { "order_by": "city" },
            { "order_by": "employees_count", "order_direction": "desc" },
            { "order_by": "total_funding" },
            { "order_by": "updated_at", "order_direction": "desc" }
        ] }))
        .unwrap();
        again.search_after = Some(json);
        let again = again.validate(Service::Company, Purpose::Search).unwrap();
        assert_eq!(again.search_after, Some(cursor));
        // Sent back, the nulls become the sentinels again.
        let body = to_opensearch_query(Service::Company, &again);
        assert_eq!(body["search_after"], json!(sort));
    }

    #[test]
    fn mapping_follows_the_catalogue() {
        let def = index_definition(Service::Contact, 0);
        assert_eq!(def["settings"]["number_of_replicas"], json!(0));
        let replicated = index_definition(Service::Contact, 1);
        assert_eq!(replicated["settings"]["number_of_replicas"], json!(1));
        assert_eq!(replicated["mappings"], def["mappings"]);
        assert_eq!(def["mappings"]["dynamic"], json!("strict"));
        let props = &def["mappings"]["properties"];
        assert_eq!(
            props["email"],
            json!({ "type": "keyword", "normalizer": NORMALIZER })
        );
        assert_eq!(
            props["departments"],
            json!({ "type": "keyword", "normalizer": NORMALIZER })
        );
        assert_eq!(props["title"]["type"], json!("text"));
        assert_eq!(
            props["title"]["fields"]["keyword"]["normalizer"],
            json!(NORMALIZER)
        );
        assert_eq!(props["company_id"], json!({ "type": "keyword" }));
        assert_eq!(props["id"], json!({ "type": "long" }));
        assert_eq!(props["created_at"]["type"], json!("date"));
        assert_eq!(
            props["extra"],
            json!({ "type": "object", "enabled": false })
        );
        let company = index_definition(Service::Company, 0);
        assert_eq!(
            company["mappings"]["properties"]["employees_count"],
            json!({ "type": "integer" })
        );
        assert_eq!(
            company["mappings"]["properties"].as_object().map(Map::len),
            Some(catalogue::fields(Service::Company).len())
        );
    }

    #[test]
    fn serialised_documents_go_into_bulk_lines_unchanged() {
        let uuid = uuid::Uuid::parse_str("0b7e4a54-3f0c-4d51-a2b1-5c9d7e1f2a3b").unwrap();
        // PostgreSQL's jsonb text, spaces and all
        let json = r#"{"name": "Acme, \"Inc\"", "uuid": "0b7e4a54-3f0c-4d51-a2b1-5c9d7e1f2a3b"}"#;
        let item = bulk_item_json(JsonDocument {
            uuid,
            json: json.to_owned(),
            version: None,
        })
        .unwrap();
        assert_eq!(item.id, "0b7e4a54-3f0c-4d51-a2b1-5c9d7e1f2a3b");
        let text = String::from_utf8(item.lines).unwrap();
        assert!(text.ends_with('\n'));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(
            serde_json::from_str::<Value>(lines[0]).unwrap(),
            json!({ "index": { "_id": "0b7e4a54-3f0c-4d51-a2b1-5c9d7e1f2a3b" } })
        );
        assert_eq!(lines[1], json);
        // a versioned document keeps only the newest version
        let versioned = bulk_item_json(JsonDocument {
            uuid,
            json: json.to_owned(),
            version: Some(42),
        })
        .unwrap();
        let text = String::from_utf8(versioned.lines).unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(text.lines().next().unwrap()).unwrap(),
            json!({ "index": {
                "_id": "0b7e4a54-3f0c-4d51-a2b1-5c9d7e1f2a3b",
                "version": 42,
                "version_type": "external_gte"
            } })
        );
        for bad in ["", "[1]", "\"x\""] {
            assert!(matches!(
                bulk_item_json(JsonDocument {
                    uuid,
                    json: bad.to_owned(),
                    version: None,
                }),
                Err(SearchError::InvalidDocument(_))
            ));
        }
    }

    #[test]
    fn bulk_items_use_the_canonical_uuid_as_id() {
        let doc = json!({ "uuid": "0B7E4A54-3F0C-4D51-A2B1-5C9D7E1F2A3B", "name": "Acme" });
        let item = bulk_item(doc.as_object().unwrap()).unwrap();
        assert_eq!(item.id, "0b7e4a54-3f0c-4d51-a2b1-5c9d7e1f2a3b");
        let text = String::from_utf8(item.lines).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(
            serde_json::from_str::<Value>(lines[0]).unwrap(),
            json!({ "index": { "_id": "0b7e4a54-3f0c-4d51-a2b1-5c9d7e1f2a3b" } })
        );
        assert_eq!(
            serde_json::from_str::<Value>(lines[1]).unwrap(),
            json!({ "uuid": "0b7e4a54-3f0c-4d51-a2b1-5c9d7e1f2a3b", "name": "Acme" })
        );
        for bad in [
            json!({ "name": "x" }),
            json!({ "uuid": 5 }),
            json!({ "uuid": "nope" }),
        ] {
            assert!(matches!(
                bulk_item(bad.as_object().unwrap()),
                Err(SearchError::InvalidDocument(_))
            ));
        }
    }

    #[test]
    fn chunks_stay_within_the_byte_cap() {
        let sizes = [4, 4, 4, 9, 1, 1, 12, 3];
        let chunks = chunks_within(&sizes, |s| *s, 10);
        let got: Vec<Vec<usize>> = chunks.iter().map(|c| c.to_vec()).collect();
        assert_eq!(
            got,
            vec![vec![4, 4], vec![4], vec![9, 1], vec![1], vec![12], vec![3]]
        );
        assert!(chunks_within(&[] as &[usize], |s| *s, 10).is_empty());
    }

    #[test]
    fn bulk_responses_yield_items_to_retry_and_documents_refused() {
        let items: Vec<BulkItem> = (1..=5_u128)
            .map(|n| BulkItem {
                uuid: uuid::Uuid::from_u128(n),
                id: n.to_string(),
                lines: Vec::new(),
            })
            .collect();
        let sent: Vec<&BulkItem> = items.iter().collect();
        let ok = json!({ "errors": false, "items": [] });
        assert_eq!(
            read_bulk_response(&ok, &sent).unwrap(),
            BulkOutcome::default()
        );
        let mixed = json!({ "errors": true, "items": [
            { "index": { "_id": "1", "status": 201 } },
            { "index": { "_id": "2", "status": 429, "error": { "type": "es_rejected_execution_exception", "reason": "queue full" } } },
            { "index": { "_id": "3", "status": 400, "error": {
                "type": "mapper_parsing_exception",
                "reason": "failed to parse field [employees_count] of type [integer]",
                "caused_by": { "type": "number_format_exception", "reason": "For input string: \"many\"" }
            } } },
            { "index": { "_id": "4", "status": 503, "error": { "type": "unavailable_shards_exception", "reason": "primary not active" } } },
            { "index": { "_id": "5", "status": 409, "error": { "type": "version_conflict_engine_exception", "reason": "current version [9] is higher" } } }
        ]});
        let outcome = read_bulk_response(&mixed, &sent).unwrap();
        assert_eq!(outcome.retry, vec![1, 3]);
        assert_eq!(
            outcome.rejected,
            vec![(2, 400, "mapper_parsing_exception: failed to parse field [employees_count] of type [integer] (caused by number_format_exception: For input string: \"many\")".to_owned())]
        );
        let short = json!({ "errors": true, "items": [] });
        assert!(matches!(
            read_bulk_response(&short, &sent),
            Err(SearchError::Protocol { .. })
        ));
    }

    fn uuid_sorted(direction: &str, limit: u32) -> ValidQuery {
        valid(
            Service::Contact,
            json!({
                "select_columns": ["uuid"],
                "order_by": [{ "order_by": "uuid", "order_direction": direction }],
                "limit": limit,
            }),
        )
    }

    #[test]
    fn uuid_ranges_tile_the_uuid_space_in_sort_order() {
        let asc = uuid_ranges(&uuid_sorted("asc", 500), 1_000_000, RANGE_DOCS).unwrap();
        assert_eq!(asc.len(), 100, "10,000 matches a range");
        assert_eq!(asc[0].low, None, "the first range is open below");
        assert_eq!(asc[99].high, None, "the last range is open above");
        for pair in asc.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            assert_eq!(a.high, b.low, "ranges meet without a gap or overlap");
            assert!(a.low < b.low);
            // search_after is strict: after high - 1 is from high on
            let cursor = a.end_cursor(SortDirection::Asc).unwrap();
            assert_eq!(cursor, [json!(uuid_text(b.low.unwrap() - 1))]);
        }
        assert_eq!(asc[99].end_cursor(SortDirection::Asc), None);

        let desc = uuid_ranges(&uuid_sorted("desc", 500), 1_000_000, RANGE_DOCS).unwrap();
        let mut reversed = asc.clone();
        reversed.reverse();
        assert_eq!(desc, reversed);
        for pair in desc.windows(2) {
            let cursor = pair[0].end_cursor(SortDirection::Desc).unwrap();
            // descending, search_after low is everything below low
            assert_eq!(cursor, [json!(uuid_text(pair[0].low.unwrap()))]);
            assert_eq!(pair[0].low, pair[1].high);
        }
    }

    #[test]
    fn uuid_ranges_only_for_a_uuid_sort_over_several_ranges() {
        assert_eq!(
            uuid_ranges(&uuid_sorted("asc", 500), 19_999, RANGE_DOCS),
            None
        );
        assert_eq!(
            uuid_ranges(&uuid_sorted("asc", 500), 20_000, RANGE_DOCS).map(|r| r.len()),
            Some(2)
        );
        // whatever the page size
        assert_eq!(
            uuid_ranges(&uuid_sorted("asc", 5000), 100_000, RANGE_DOCS).map(|r| r.len()),
            Some(10)
        );
        let by_name = valid(
            Service::Contact,
            json!({
                "select_columns": ["uuid"],
                "order_by": [{ "order_by": "last_name", "order_direction": "asc" }],
            }),
        );
        assert!(!sorted_by_uuid_alone(&by_name));
        assert_eq!(uuid_ranges(&by_name, 10_000_000, RANGE_DOCS), None);
        let most = uuid_ranges(&uuid_sorted("asc", 1), u64::MAX, RANGE_DOCS).unwrap();
        assert_eq!(most.len() as u64, MAX_RANGES);
    }

    #[test]
    fn a_scroll_after_a_cursor_starts_in_the_cursors_range() {
        let at = "c0000000-0000-4000-8000-000000000000";
        let cursor = uuid::Uuid::parse_str(at).unwrap().as_u128();
        for direction in ["asc", "desc"] {
            let query = uuid_sorted(direction, 500).after(&[json!(at)]).unwrap();
            let ranges = uuid_ranges(&query, 1_000_000, RANGE_DOCS).unwrap();
            let first = ranges[0];
            assert!(first.low.unwrap() <= cursor && cursor < first.high.unwrap());
            let expected = if direction == "asc" { 100 - 75 } else { 76 };
            assert_eq!(
                ranges.len(),
                expected,
                "{direction}: the cursor's range and those after it"
            );
        }
    }

    #[test]
    fn a_span_is_a_range_filter_beside_the_query() {
        let q = valid(
            Service::Contact,
            json!({
                "where": { "keyword_match": { "must": { "country": ["USA"] } } },
                "select_columns": ["uuid"],
            }),
        );
        let mut body = to_opensearch_query(Service::Contact, &q);
        let original = body["query"].clone();
        UuidSpan {
            low: Some(1 << 124),
            high: None,
        }
        .restrict(&mut body);
        assert_eq!(
            body["query"],
            json!({ "bool": { "filter": [original, { "range": { "uuid": {
                "gte": "10000000-0000-0000-0000-000000000000"
            } } }] } })
        );
        let before = body.clone();
        UuidSpan {
            low: None,
            high: None,
        }
        .restrict(&mut body);
        assert_eq!(body, before, "an open span filters nothing");
    }
}
