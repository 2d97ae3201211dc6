#![doc = include_str!("../README.md")]

mod document;
mod nodes;
mod opensearch;
mod page;
mod postgres;
mod scroll;

use std::fmt;

use connectra_domain::vql::ValidQuery;
use connectra_domain::Service;
use futures::future::BoxFuture;
use serde::Serialize;

pub use crate::document::fold_case;
pub use crate::nodes::parse_node_urls;
pub use crate::opensearch::{
    index_definition, to_opensearch_query, IndexLayout, IndexVersion, OpenSearchBackend,
    VersionPage, DEFAULT_BULK_MAX_BYTES, DEFAULT_INDEX_PREFIX, LOAD_REFRESH_INTERVAL,
};
pub use crate::postgres::{compile_sql, CompiledSql, PostgresBackend, SqlBind};

/// One record as a search returns it, and as [`SearchBackend::index`] takes it.
///
/// Keys are catalogue field names. Values are typed by the field's kind:
/// text, keyword and uuid fields are strings, keyword lists arrays of strings,
/// integer and bigint fields numbers, timestamps RFC 3339 strings (in UTC, `Z`,
/// when a backend returns them), `extra` an object; a missing value is `null`.
pub type Document = serde_json::Map<String, serde_json::Value>;

/// A record already serialised: a JSON object (of the same shape as a
/// [`Document`]) and the uuid it holds. What an import hands to
/// [`SearchBackend::index_json`], straight from PostgreSQL's
/// `to_jsonb(row)::text`: a batch held as `serde_json` maps takes several
/// times the memory of its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonDocument {
    pub uuid: uuid::Uuid,
    pub json: String,
    /// The record's version in PostgreSQL. With one, the index keeps the
    /// document only if no newer version is there (OpenSearch
    /// `version_type=external_gte`); an older one arriving late is ignored,
    /// which is success, not an error.
    pub version: Option<i64>,
}

impl From<connectra_persistence::records::StoredRecord> for JsonDocument {
    /// A record as PostgreSQL stored it, versioned by its row's `version`.
    fn from(r: connectra_persistence::records::StoredRecord) -> Self {
        Self {
            uuid: r.uuid,
            json: r.json,
            version: Some(r.version),
        }
    }
}

/// A document the index refused for good (not a transient failure): the
/// record stays out of the index, so its import rejects the row instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedDocument {
    pub uuid: uuid::Uuid,
    /// The backend's status for the item (OpenSearch: 400 for a value its
    /// mapping cannot parse).
    pub status: u16,
    pub reason: String,
}

impl From<RejectedDocument> for SearchError {
    fn from(r: RejectedDocument) -> Self {
        Self::DocumentRejected {
            id: r.uuid.to_string(),
            status: r.status,
            reason: r.reason,
        }
    }
}

/// One page of results.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Page {
    /// The matching records, in sort order. Each holds exactly the query's
    /// `select_columns` (inserted in that order; a missing value is `null`).
    pub data: Vec<Document>,
    /// The cursor of the next page: one value per sort field (the query's
    /// `order_by` plus the `uuid` tie-breaker), to send back unchanged as
    /// `search_after`. `None` when this page is the last one, that is when it
    /// holds fewer than `limit` records.
    pub next_search_after: Option<Vec<serde_json::Value>>,
}

/// What can go wrong in a search or an indexing call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SearchError {
    /// The backend could not be reached, timed out, answered with a server
    /// error, or kept rejecting writes as overloaded (HTTP 429). Worth a retry
    /// later; readiness probes report it.
    #[error("{backend} is unavailable: {message}")]
    Unavailable {
        backend: &'static str,
        message: String,
    },
    /// The backend refused a request (an OpenSearch 4xx other than 429).
    #[error("{backend} rejected the request (status {status}): {reason}")]
    Rejected {
        backend: &'static str,
        status: u16,
        reason: String,
    },
    /// A bulk write failed for one document; `id` is its uuid and `reason`
    /// the backend's explanation (e.g. a value the mapping cannot parse).
    #[error("document '{id}' was rejected (status {status}): {reason}")]
    DocumentRejected {
        id: String,
        status: u16,
        reason: String,
    },
    /// A document handed to [`SearchBackend::index`] cannot be indexed, e.g.
    /// it has no `uuid` string.
    #[error("invalid document: {0}")]
    InvalidDocument(String),
    /// A [`ValidQuery`] whose parts disagree (e.g. a cursor with the wrong
    /// number of values). [`connectra_domain::vql::VqlQuery::validate`] never
    /// produces one.
    #[error("invalid query: {0}")]
    InvalidQuery(String),
    /// A bad backend setting, e.g. an unparsable OpenSearch URL.
    #[error("invalid search configuration: {0}")]
    Config(String),
    /// PostgreSQL failed to run a query.
    #[error("search query failed: {0}")]
    Database(#[source] diesel::result::Error),
    /// The backend answered with something this crate cannot read.
    #[error("unexpected response from {backend}: {message}")]
    Protocol {
        backend: &'static str,
        message: String,
    },
}

impl SearchError {
    /// Whether the backend is down or overloaded rather than the request bad.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }

    pub(crate) fn unavailable(backend: &'static str, message: impl fmt::Display) -> Self {
        Self::Unavailable {
            backend,
            message: message.to_string(),
        }
    }

    pub(crate) fn protocol(backend: &'static str, message: impl fmt::Display) -> Self {
        Self::Protocol {
            backend,
            message: message.to_string(),
        }
    }
}

/// A VQL search backend. Object safe: callers keep an `Arc<dyn SearchBackend>`.
///
/// On keyword and range queries every backend returns the same records in
/// the same order, and the same `next_search_after` cursors (see the crate
/// documentation for the exact sort and cursor rules).
pub trait SearchBackend: Send + Sync + fmt::Debug {
    /// `"opensearch"` or `"postgres"`: for messages and logs. What a caller
    /// does differently for a backend follows from its capabilities, such as
    /// [`SearchBackend::searches_the_database`], never from its name.
    fn name(&self) -> &'static str;

    /// Whether the backend searches PostgreSQL's record tables themselves
    /// (the PostgreSQL backend). Such a backend is always current, so an
    /// import has no documents to hand it, and it answers whenever the
    /// database does, so a readiness check of the database covers it. A
    /// backend with an index of its own (OpenSearch) says `false`.
    fn searches_the_database(&self) -> bool;

    /// The OpenSearch backend behind this one, for what only an index of its
    /// own can do: rebuilding it behind its alias (`reindex_search`). `None`
    /// for a backend without such an index (PostgreSQL).
    fn as_opensearch(&self) -> Option<&OpenSearchBackend> {
        None
    }

    /// Creates whatever the backend needs before indexing (OpenSearch: both
    /// indices with explicit mappings, when missing). Idempotent.
    fn ensure_indices(&self) -> BoxFuture<'_, Result<(), SearchError>>;

    /// Upserts whole documents, keyed by their `uuid`. Idempotent. A no-op
    /// for PostgreSQL, which is the record of truth and always current.
    fn index<'a>(
        &'a self,
        service: Service,
        docs: &'a [Document],
    ) -> BoxFuture<'a, Result<(), SearchError>>;

    /// [`SearchBackend::index`] for documents already serialised. Each
    /// `json` must be an object whose `uuid` is the document's `uuid`.
    /// Returns the documents the index refused for good (the others are
    /// indexed); the call fails only when the backend itself does.
    fn index_json(
        &self,
        service: Service,
        docs: Vec<JsonDocument>,
    ) -> BoxFuture<'_, Result<Vec<RejectedDocument>, SearchError>>;

    /// Removes the documents of `uuids` (those missing are no error). A
    /// no-op for PostgreSQL.
    fn delete(
        &self,
        service: Service,
        uuids: Vec<uuid::Uuid>,
    ) -> BoxFuture<'_, Result<(), SearchError>>;

    /// Makes everything indexed so far visible to searches (tests, exports
    /// right after an import). A no-op for PostgreSQL.
    fn refresh(&self, service: Service) -> BoxFuture<'_, Result<(), SearchError>>;

    /// Says that a bulk load into `service` begins (`true`) or has ended
    /// (`false`), so that the backend may index more cheaply meanwhile
    /// (OpenSearch: the index refreshes every 30 s instead of every second).
    /// Loads that overlap simply share the mode: the first to end restores
    /// the normal one, which costs the others speed, never correctness. A
    /// no-op for PostgreSQL.
    fn set_loading(
        &self,
        _service: Service,
        _loading: bool,
    ) -> BoxFuture<'_, Result<(), SearchError>> {
        Box::pin(async { Ok(()) })
    }

    /// One page of `query`'s matches, starting after `query.search_after`.
    fn search<'a>(
        &'a self,
        service: Service,
        query: &'a ValidQuery,
    ) -> BoxFuture<'a, Result<Page, SearchError>>;

    /// Checks that the backend answers.
    fn ping(&self) -> BoxFuture<'_, Result<(), SearchError>>;

    /// Every match of `query`, page by page (`query.limit` records each), all
    /// from one consistent view of the data: an OpenSearch point in time, or
    /// one REPEATABLE READ READ ONLY transaction in PostgreSQL. Writes that
    /// commit meanwhile are not seen. The stream ends after the last page; a
    /// dropped stream releases its view.
    fn scroll(
        &self,
        service: Service,
        query: ValidQuery,
    ) -> futures::stream::BoxStream<'static, Result<Page, SearchError>>;
}
