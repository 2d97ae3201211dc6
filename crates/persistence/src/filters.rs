//! Reading `filters_data`: the distinct values of each filterable field.

use connectra_domain::Service;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde::Serialize;

use crate::schema::filters_data;
use crate::{PgPool, Result};

/// One filter value.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Serialize)]
pub struct FilterValue {
    pub filter_key: String,
    pub value: String,
}

/// Values of `service`'s filters, optionally of one `filter_key` and starting
/// with `prefix` (case-insensitively), in key then value order.
pub async fn list_filters(
    pool: &PgPool,
    service: Service,
    filter_key: Option<&str>,
    prefix: Option<&str>,
    limit: i64,
) -> Result<Vec<FilterValue>> {
    let mut conn = pool.get().await?;
    let mut query = filters_data::table
        .filter(filters_data::service.eq(service.as_str()))
        .select((filters_data::filter_key, filters_data::value))
        .into_boxed();
    if let Some(key) = filter_key {
        query = query.filter(filters_data::filter_key.eq(key));
    }
    if let Some(prefix) = prefix.filter(|p| !p.is_empty()) {
        let escaped = prefix
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        query = query.filter(filters_data::value.ilike(format!("{escaped}%")));
    }
    let rows = query
        .order((filters_data::filter_key, filters_data::value))
        .limit(limit)
        .load(&mut conn)
        .await?;
    Ok(rows)
}
