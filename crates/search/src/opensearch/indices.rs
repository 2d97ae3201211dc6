//! The physical indices behind each service's alias, and what rebuilding one
//! takes: a new `{alias}_v{N}` with the current definition, bulk writes into
//! it by name, the atomic alias swap, and a scan of its `(uuid, _version)`
//! pairs in uuid order for the verification.
//!
//! Layout: `{prefix}_contacts` is an alias of exactly one physical index
//! `{prefix}_contacts_v{N}` (likewise companies). Everyone searches and
//! writes through the alias; only a rebuild names a physical index.

use std::time::Duration;

use opensearch::http::request::JsonBody;

use super::*;

/// How long a request of a rebuild (not a bulk write, which has its own
/// bound) keeps being sent again while OpenSearch is unavailable.
const ADMIN_RIDE_OUT: Duration = Duration::from_secs(60);

/// What the name [`OpenSearchBackend::index_name`] is today.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexLayout {
    /// Nothing of that name: [`SearchBackend::ensure_indices`] creates it.
    Missing,
    /// A concrete index of that name (a deployment older than aliases).
    Concrete(String),
    /// An alias, and the physical indices it points to (sorted; normally one).
    Alias(Vec<String>),
}

impl IndexLayout {
    /// The physical indices that searches through the name read.
    pub fn physical(&self) -> Vec<String> {
        match self {
            Self::Missing => Vec::new(),
            Self::Concrete(name) => vec![name.clone()],
            Self::Alias(targets) => targets.clone(),
        }
    }
}

/// One document's id and `_version`, as the verification reads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexVersion {
    pub uuid: uuid::Uuid,
    pub version: i64,
}

/// Every document of one physical index as `(uuid, _version)`, in uuid
/// order, page by page from one point in time (`_source: false`). Close it
/// with [`VersionPage::close`]; a dropped one's point in time expires by
/// itself after its keep-alive.
#[derive(Debug)]
pub struct VersionPage {
    backend: OpenSearchBackend,
    pit: String,
    after: Option<String>,
    size: usize,
    done: bool,
}

impl VersionPage {
    /// The next page (at most the page size), or `None` after the last.
    pub async fn next_page(&mut self) -> Result<Option<Vec<IndexVersion>>, SearchError> {
        if self.done {
            return Ok(None);
        }
        let mut body = json!({
            "size": self.size,
            "sort": [{ "uuid": { "order": "asc" } }],
            "_source": false,
            "version": true,
            "track_total_hits": false,
            "pit": { "id": self.pit, "keep_alive": PIT_KEEP_ALIVE },
        });
        if let Some(after) = &self.after {
            body["search_after"] = json!([after]);
        }
        let backend = self.backend.clone();
        let answer = retried("reading document versions", || {
            backend.call(Method::Post, "/_search", Some(body.clone()))
        })
        .await?;
        if let Some(id) = answer.get("pit_id").and_then(Value::as_str) {
            id.clone_into(&mut self.pit);
        }
        let hits = answer
            .pointer("/hits/hits")
            .and_then(Value::as_array)
            .ok_or_else(|| SearchError::protocol(BACKEND, "search response without hits.hits"))?;
        let mut page = Vec::with_capacity(hits.len());
        for hit in hits {
            let id = hit.get("_id").and_then(Value::as_str).unwrap_or("");
            let uuid = uuid::Uuid::parse_str(id).map_err(|_| {
                SearchError::protocol(
                    BACKEND,
                    format!("a document whose _id '{id}' is not a uuid"),
                )
            })?;
            let version = hit.get("_version").and_then(Value::as_i64).ok_or_else(|| {
                SearchError::protocol(BACKEND, format!("document {id} without _version"))
            })?;
            page.push(IndexVersion { uuid, version });
        }
        if hits.len() < self.size {
            self.done = true;
        }
        match hits
            .last()
            .and_then(|h| h.pointer("/sort/0"))
            .and_then(Value::as_str)
        {
            Some(last) => self.after = Some(last.to_owned()),
            None => self.done = true,
        }
        Ok(if page.is_empty() { None } else { Some(page) })
    }

    /// Releases the point in time.
    pub async fn close(self) {
        self.backend.close_pit(&self.pit).await;
    }
}

/// Sends `request` again while OpenSearch is unavailable, for up to
/// [`ADMIN_RIDE_OUT`], with the one retry policy's pauses.
async fn retried<T, F, Fut>(what: &str, mut request: F) -> Result<T, SearchError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, SearchError>>,
{
    let started = tokio::time::Instant::now();
    let mut pauses = RetryPolicy::QUICK.pauses();
    loop {
        match request().await {
            Err(e) if e.is_unavailable() && started.elapsed() < ADMIN_RIDE_OUT => {
                tracing::warn!(error = %e, what, "OpenSearch is unavailable; trying again");
                metrics::counter!(connectra_domain::retry::OPENSEARCH_RETRIES_METRIC).increment(1);
                tokio::time::sleep(pauses.next_pause()).await;
            }
            other => return other,
        }
    }
}

impl OpenSearchBackend {
    /// One request; its JSON answer, or the error [`read_json`] makes of it.
    pub(super) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, SearchError> {
        let response = self
            .nodes
            .send(REQUEST_TIMEOUT, || {
                self.client.send::<JsonBody<Value>, ()>(
                    method,
                    path,
                    HeaderMap::new(),
                    None,
                    body.clone().map(JsonBody::new),
                    None,
                )
            })
            .await
            .map_err(unreachable)?;
        read_json(response).await
    }

    /// The physical index `{alias}_v{n}` of `service`.
    pub fn versioned_name(&self, service: Service, n: u32) -> String {
        format!("{}_v{n}", self.index_name(service))
    }

    /// What [`Self::index_name`] is now: missing, a concrete index, or an
    /// alias and its physical indices.
    pub async fn layout(&self, service: Service) -> Result<IndexLayout, SearchError> {
        let alias = self.index_name(service);
        let path = format!("/_alias/{alias}");
        let answer = retried("resolving the alias", || {
            self.call(Method::Get, &path, None)
        })
        .await;
        match answer {
            Ok(body) => {
                let mut targets: Vec<String> = body
                    .as_object()
                    .map(|o| o.keys().cloned().collect())
                    .unwrap_or_default();
                targets.sort();
                if targets.is_empty() {
                    Ok(IndexLayout::Missing)
                } else {
                    Ok(IndexLayout::Alias(targets))
                }
            }
            Err(SearchError::Rejected { status: 404, .. }) => {
                if retried("looking the index up", || self.name_exists(&alias)).await? {
                    Ok(IndexLayout::Concrete(alias))
                } else {
                    Ok(IndexLayout::Missing)
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Every physical index `{alias}_v{n}` of `service` (whether the alias
    /// points to it or not), by `n`. Listed by a pattern; never deleted by one.
    pub async fn versioned_indices(
        &self,
        service: Service,
    ) -> Result<Vec<(u32, String)>, SearchError> {
        let stem = format!("{}_v", self.index_name(service));
        let path = format!("/_cat/indices/{stem}*?format=json&h=index&expand_wildcards=all");
        let body = retried("listing the indices", || {
            self.call(Method::Get, &path, None)
        })
        .await?;
        let mut found: Vec<(u32, String)> = body
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|row| row.get("index").and_then(Value::as_str))
            .filter_map(|name| {
                let n = name.strip_prefix(&stem)?;
                // `_v12` only: not `_v12x` nor another alias's `_v1_…`
                if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                Some((n.parse().ok()?, name.to_owned()))
            })
            .collect();
        found.sort();
        Ok(found)
    }

    /// Creates the physical index `name` for a rebuild of `service`: the
    /// current [`index_definition`] (so a mapping change reaches it), with
    /// refreshes off and no replicas while it is loaded.
    pub async fn create_rebuild_index(
        &self,
        service: Service,
        name: &str,
    ) -> Result<(), SearchError> {
        let mut definition = index_definition(service, self.replicas);
        definition["settings"]["refresh_interval"] = json!("-1");
        definition["settings"]["number_of_replicas"] = json!(0);
        let path = format!("/{name}");
        retried("creating the index", || {
            self.call(Method::Put, &path, Some(definition.clone()))
        })
        .await
        .map(drop)
    }

    /// Gives the rebuilt index `name` the definition's settings back (the
    /// default refresh interval, its replicas) and refreshes it, so that it
    /// answers searches as soon as the alias points to it.
    pub async fn finish_rebuild_index(
        &self,
        service: Service,
        name: &str,
    ) -> Result<(), SearchError> {
        let replicas =
            index_definition(service, self.replicas)["settings"]["number_of_replicas"].clone();
        let body = json!({ "index": { "refresh_interval": null, "number_of_replicas": replicas } });
        let path = format!("/{name}/_settings");
        retried("restoring the index settings", || {
            self.call(Method::Put, &path, Some(body.clone()))
        })
        .await?;
        self.refresh_named(name).await
    }

    /// Makes everything indexed into `name` (an index or the alias) visible.
    pub async fn refresh_named(&self, name: &str) -> Result<(), SearchError> {
        let path = format!("/{name}/_refresh");
        retried("refreshing", || self.call(Method::Post, &path, None))
            .await
            .map(drop)
    }

    /// Points `service`'s alias at `to` instead of what `from` (read before)
    /// says, in one `_aliases` request, so every search and write goes
    /// either to the old index or to the new one, never to neither:
    ///
    /// - from an alias: `remove` (with `must_exist`, so the swap fails if
    ///   someone moved the alias since `from` was read) and `add`;
    /// - from an older deployment's concrete index: `remove_index` of it and
    ///   `add` of the alias of that name;
    /// - from nothing: `add`.
    pub async fn swap_alias(
        &self,
        service: Service,
        from: &IndexLayout,
        to: &str,
    ) -> Result<(), SearchError> {
        let alias = self.index_name(service);
        let mut actions: Vec<Value> = match from {
            IndexLayout::Missing => Vec::new(),
            IndexLayout::Concrete(name) => vec![json!({ "remove_index": { "index": name } })],
            IndexLayout::Alias(targets) => targets
                .iter()
                .map(|t| json!({ "remove": { "index": t, "alias": alias, "must_exist": true } }))
                .collect(),
        };
        actions.push(json!({ "add": { "index": to, "alias": alias } }));
        let body = json!({ "actions": actions });
        let started = tokio::time::Instant::now();
        let mut pauses = RetryPolicy::QUICK.pauses();
        loop {
            match self
                .call(Method::Post, "/_aliases", Some(body.clone()))
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) if e.is_unavailable() && started.elapsed() < ADMIN_RIDE_OUT => {
                    // the swap may have been applied before the answer was lost
                    tracing::warn!(error = %e, "the alias swap got no answer; checking");
                    tokio::time::sleep(pauses.next_pause()).await;
                    if let Ok(IndexLayout::Alias(now)) = self.layout(service).await {
                        if now == [to] {
                            return Ok(());
                        }
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Deletes the physical index `name` (missing is no error). Never given
    /// an alias: OpenSearch refuses to delete through one.
    pub async fn delete_index(&self, name: &str) -> Result<(), SearchError> {
        let path = format!("/{name}?ignore_unavailable=true");
        retried("deleting the index", || {
            self.call(Method::Delete, &path, None)
        })
        .await
        .map(drop)
    }

    /// [`SearchBackend::index_json`] into the index (or alias) named
    /// `index`: what a rebuild loads its new physical index with.
    pub async fn index_json_into(
        &self,
        index: &str,
        docs: Vec<JsonDocument>,
    ) -> Result<Vec<RejectedDocument>, SearchError> {
        let items = docs
            .into_iter()
            .map(bulk_item_json)
            .collect::<Result<Vec<_>, _>>()?;
        self.bulk_into(index, items).await
    }

    /// The `_version` of each of `uuids` that `index` holds.
    pub async fn versions_of(
        &self,
        index: &str,
        uuids: &[uuid::Uuid],
    ) -> Result<Vec<IndexVersion>, SearchError> {
        if uuids.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = uuids.iter().map(|u| u.hyphenated().to_string()).collect();
        let path = format!("/{index}/_mget?_source=false&realtime=true");
        let body = json!({ "ids": ids });
        let answer = retried("reading documents", || {
            self.call(Method::Post, &path, Some(body.clone()))
        })
        .await?;
        let docs = answer
            .get("docs")
            .and_then(Value::as_array)
            .ok_or_else(|| SearchError::protocol(BACKEND, "mget response without docs"))?;
        Ok(docs
            .iter()
            .filter(|d| d.get("found").and_then(Value::as_bool) == Some(true))
            .filter_map(|d| {
                Some(IndexVersion {
                    uuid: uuid::Uuid::parse_str(d.get("_id")?.as_str()?).ok()?,
                    version: d.get("_version")?.as_i64()?,
                })
            })
            .collect())
    }

    /// Every document of the physical index `index` as `(uuid, _version)`,
    /// `page_size` a page, in uuid order, from a point in time opened now.
    pub async fn version_pages(
        &self,
        index: &str,
        page_size: usize,
    ) -> Result<VersionPage, SearchError> {
        let pit = self.open_pit_on(index).await?;
        Ok(VersionPage {
            backend: self.clone(),
            pit,
            after: None,
            size: page_size.max(1),
            done: false,
        })
    }

    /// The mapping of the index (or the one index behind the alias) `name`.
    pub async fn mapping(&self, name: &str) -> Result<Value, SearchError> {
        let body = self
            .call(Method::Get, &format!("/{name}/_mapping"), None)
            .await?;
        first_value(body, "mappings")
    }

    /// The `index` settings of the index (or the one index behind the alias)
    /// `name`, as OpenSearch reports them (values are strings).
    pub async fn index_settings(&self, name: &str) -> Result<Value, SearchError> {
        let body = self
            .call(Method::Get, &format!("/{name}/_settings"), None)
            .await?;
        let settings = first_value(body, "settings")?;
        Ok(settings.get("index").cloned().unwrap_or(Value::Null))
    }
}

/// `key` of the only index an answer keyed by index name holds.
fn first_value(body: Value, key: &str) -> Result<Value, SearchError> {
    body.as_object()
        .and_then(|o| o.values().next())
        .and_then(|v| v.get(key))
        .cloned()
        .ok_or_else(|| SearchError::protocol(BACKEND, format!("an answer without {key}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_physical_indices_are_what_searches_read() {
        assert!(IndexLayout::Missing.physical().is_empty());
        assert_eq!(
            IndexLayout::Concrete("p_contacts".into()).physical(),
            ["p_contacts"]
        );
        assert_eq!(
            IndexLayout::Alias(vec!["p_contacts_v2".into()]).physical(),
            ["p_contacts_v2"]
        );
    }

    #[test]
    fn answers_keyed_by_index_give_their_one_value() {
        let body = json!({ "p_contacts_v3": { "mappings": { "dynamic": "strict" } } });
        assert_eq!(
            first_value(body, "mappings").ok(),
            Some(json!({ "dynamic": "strict" }))
        );
        assert!(first_value(json!({}), "mappings").is_err());
    }
}
