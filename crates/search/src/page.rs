//! How both backends turn the hits of one query into a [`Page`]: each hit's
//! record projected onto the query's `select_columns`, and, when the page is
//! full, the cursor read back from its last hit's sort values.

use connectra_domain::catalogue::FieldDef;
use connectra_domain::vql::{CursorValue, SortDirection, ValidQuery};
use serde_json::{Map, Value};

use crate::document::{cursor_json, project};
use crate::{Page, SearchError};

/// One hit of a backend's query, in sort order.
pub(crate) trait Hit {
    /// The backend, as [`crate::SearchBackend::name`] says.
    const BACKEND: &'static str;
    /// What a protocol error says of a hit without one sort value per sort
    /// field.
    const WITHOUT_SORT: &'static str;

    /// The stored record (OpenSearch: `_source`; PostgreSQL: `doc`).
    fn source(&self) -> Option<&Map<String, Value>>;

    /// The hit's sort values, one per sort field (OpenSearch: `sort`;
    /// PostgreSQL: `sort_key`).
    fn sort_values(&self) -> Option<&[Value]>;
}

/// The page of `query` that `hits` make. The page is full when it holds
/// `query.limit` hits: only then does it get a `next_search_after`, from the
/// last hit's sort values, each read back into its field's typed value by
/// `cursor_value`.
pub(crate) fn assemble<H: Hit>(
    query: &ValidQuery,
    hits: &[H],
    cursor_value: impl Fn(&FieldDef, SortDirection, &Value) -> Result<CursorValue, SearchError>,
) -> Result<Page, SearchError> {
    let empty = Map::new();
    let data = hits
        .iter()
        .map(|hit| project(&query.select_columns, hit.source().unwrap_or(&empty)))
        .collect();
    let limit = usize::try_from(query.limit).unwrap_or(usize::MAX);
    let next_search_after = match hits.last() {
        Some(last) if hits.len() >= limit => {
            let values = last
                .sort_values()
                .filter(|v| v.len() == query.order_by.len())
                .ok_or_else(|| SearchError::protocol(H::BACKEND, H::WITHOUT_SORT))?;
            let cursor = values
                .iter()
                .zip(&query.order_by)
                .map(|(value, (field, direction))| cursor_value(field, *direction, value))
                .collect::<Result<Vec<_>, _>>()?;
            Some(cursor_json(&cursor))
        }
        _ => None,
    };
    Ok(Page {
        data,
        next_search_after,
    })
}
