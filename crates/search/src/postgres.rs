//! The PostgreSQL backend: VQL compiled to one parameterised `SELECT` over
//! `contacts` or `companies`.

use connectra_domain::catalogue::{FieldDef, FieldKind};
use connectra_domain::limits;
use connectra_domain::vql::{Bound, CursorValue, RangeBounds, SortDirection, ValidQuery};
use connectra_domain::Service;
use connectra_persistence::PgPool;
use diesel::pg::Pg;
use diesel::query_builder::{BoxedSqlQuery, SqlQuery};
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::sql_types;
use diesel::QueryableByName;
use diesel_async::pooled_connection::deadpool::Object;
use diesel_async::{AnsiTransactionManager, AsyncPgConnection, RunQueryDsl, TransactionManager};
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use serde_json::Value;
use time::OffsetDateTime;

use crate::document::{check_cursor, cursor_from_sort_value, floor_millis, fold_case, MILLISECOND};
use crate::page::{self, Hit};
use crate::scroll::{scroll, View};
use crate::{Document, JsonDocument, Page, RejectedDocument, SearchBackend, SearchError};

const BACKEND: &str = "postgres";

/// One bind parameter of a [`CompiledSql`], with its SQL type.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SqlBind {
    /// `text`
    Text(String),
    /// `text[]`
    TextArray(Vec<String>),
    /// `uuid`
    Uuid(uuid::Uuid),
    /// `uuid[]`
    UuidArray(Vec<uuid::Uuid>),
    /// `int8`
    Int8(i64),
    /// `timestamptz`
    Timestamptz(OffsetDateTime),
}

impl SqlBind {
    fn cast(&self) -> &'static str {
        match self {
            Self::Text(_) => "text",
            Self::TextArray(_) => "text[]",
            Self::Uuid(_) => "uuid",
            Self::UuidArray(_) => "uuid[]",
            Self::Int8(_) => "int8",
            Self::Timestamptz(_) => "timestamptz",
        }
    }
}

/// A query compiled for PostgreSQL: SQL whose only identifiers are catalogue
/// names and whose every value is a `$n` placeholder, with the values in
/// `binds` (`binds[n - 1]` for `$n`).
///
/// The statement returns two `jsonb` columns per row: `doc`, an object of the
/// selected columns, and `sort_key`, an array of the row's sort values (the
/// `next_search_after` cursor when the row ends a page).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledSql {
    pub sql: String,
    pub binds: Vec<SqlBind>,
}

impl CompiledSql {
    /// The statement as a diesel query, every value bound as a parameter.
    pub fn into_query(self) -> BoxedSqlQuery<'static, Pg, SqlQuery> {
        let mut query = diesel::sql_query(self.sql).into_boxed::<Pg>();
        for bind in self.binds {
            query = match bind {
                SqlBind::Text(v) => query.bind::<sql_types::Text, _>(v),
                SqlBind::TextArray(v) => query.bind::<sql_types::Array<sql_types::Text>, _>(v),
                SqlBind::Uuid(v) => query.bind::<sql_types::Uuid, _>(v),
                SqlBind::UuidArray(v) => query.bind::<sql_types::Array<sql_types::Uuid>, _>(v),
                SqlBind::Int8(v) => query.bind::<sql_types::BigInt, _>(v),
                SqlBind::Timestamptz(v) => query.bind::<sql_types::Timestamptz, _>(v),
            };
        }
        query
    }
}

/// Accumulates bind values and hands out their placeholders.
#[derive(Debug, Default)]
struct Binds(Vec<SqlBind>);

impl Binds {
    /// Adds `value` and returns its typed placeholder, e.g. `$3::text[]`.
    fn add(&mut self, value: SqlBind) -> String {
        let placeholder = format!("${}::{}", self.0.len() + 1, value.cast());
        self.0.push(value);
        placeholder
    }
}

/// A catalogue name as a quoted identifier. The catalogue's names are plain
/// lower-case identifiers (its tests check that); this re-checks, so that not
/// even a future catalogue mistake can reach the SQL text.
fn ident(field: &FieldDef) -> Result<String, SearchError> {
    if field.name.is_empty()
        || !field
            .name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(SearchError::InvalidQuery(format!(
            "field name {:?} is not a plain identifier",
            field.name
        )));
    }
    Ok(format!("\"{}\"", field.name))
}

fn wrong_kind(field: &FieldDef, what: &str) -> SearchError {
    SearchError::InvalidQuery(format!(
        "{what} cannot be used on {} field '{}'",
        field.kind, field.name
    ))
}

/// The expression a field sorts by, matching OpenSearch's sort: keyword and
/// text fields by their lower-cased value in byte order (`COLLATE "C"`),
/// timestamps at millisecond resolution, numbers and uuids as they are. A
/// text value longer than [`limits::TEXT_KEYWORD_MAX_CHARS`] sorts as
/// missing, as its `.keyword` sub-field ignores it.
fn sort_expr(field: &FieldDef) -> Result<String, SearchError> {
    let col = ident(field)?;
    Ok(match field.kind {
        FieldKind::Keyword => format!("lower({col}) COLLATE \"C\""),
        FieldKind::Text => format!(
            "(CASE WHEN char_length({col}) <= {} THEN lower({col}) END) COLLATE \"C\"",
            limits::TEXT_KEYWORD_MAX_CHARS
        ),
        FieldKind::Integer | FieldKind::BigInt | FieldKind::Uuid => col,
        FieldKind::Timestamp => format!("date_trunc('milliseconds', {col})"),
        FieldKind::KeywordList | FieldKind::Json => return Err(wrong_kind(field, "order_by")),
    })
}

/// The sort value as the `sort_key` array reports it: like [`sort_expr`],
/// but timestamps as epoch milliseconds, the form OpenSearch reports.
fn sort_key_expr(field: &FieldDef) -> Result<String, SearchError> {
    match field.kind {
        FieldKind::Timestamp => Ok(format!(
            "floor(extract(epoch FROM {}) * 1000)::int8",
            ident(field)?
        )),
        _ => sort_expr(field),
    }
}

/// A selected column as a `jsonb_build_object` value: timestamps as UTC
/// text, everything else as PostgreSQL converts it.
fn doc_expr(field: &FieldDef) -> Result<String, SearchError> {
    let col = ident(field)?;
    Ok(match field.kind {
        FieldKind::Timestamp => {
            format!("to_char({col} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
        }
        _ => col,
    })
}

fn keyword_predicate(
    binds: &mut Binds,
    field: &FieldDef,
    values: &[String],
) -> Result<String, SearchError> {
    let col = ident(field)?;
    let folded = || values.iter().map(|v| fold_case(v)).collect::<Vec<_>>();
    Ok(match field.kind {
        FieldKind::Keyword | FieldKind::Text => {
            let p = binds.add(SqlBind::TextArray(folded()));
            format!("lower({col}) = ANY({p})")
        }
        FieldKind::KeywordList => {
            let p = binds.add(SqlBind::TextArray(folded()));
            format!("EXISTS (SELECT 1 FROM unnest({col}) AS e(v) WHERE lower(e.v) = ANY({p}))")
        }
        FieldKind::Uuid => {
            let uuids = values
                .iter()
                .map(|v| {
                    uuid::Uuid::parse_str(v).map_err(|_| {
                        SearchError::InvalidQuery(format!(
                            "'{v}' for uuid field '{}' is not a uuid",
                            field.name
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let p = binds.add(SqlBind::UuidArray(uuids));
            format!("{col} = ANY({p})")
        }
        _ => return Err(wrong_kind(field, "keyword_match")),
    })
}

fn text_predicate(binds: &mut Binds, field: &FieldDef, text: &str) -> Result<String, SearchError> {
    if field.kind != FieldKind::Text {
        return Err(wrong_kind(field, "text_match"));
    }
    let col = ident(field)?;
    let p = binds.add(SqlBind::Text(text.to_owned()));
    Ok(format!(
        "to_tsvector('simple', coalesce({col}, '')) @@ plainto_tsquery('simple', {p})"
    ))
}

/// A range over integers compares directly. A range over timestamps compares
/// at millisecond resolution, as OpenSearch's `date` type does: both the
/// stored value and the bound are rounded down to the millisecond, which
/// for a column `c` and a bound `b` rounded down to `b'` reads
/// `c > b` → `c >= b' + 1ms`, `c >= b` → `c >= b'`, `c < b` → `c < b'`,
/// `c <= b` → `c < b' + 1ms` (index-friendly: the column is left bare).
fn range_predicate(
    binds: &mut Binds,
    field: &FieldDef,
    bounds: &RangeBounds,
) -> Result<String, SearchError> {
    let col = ident(field)?;
    let mut parts = Vec::new();
    for (op, bound) in [
        (">", bounds.gt),
        (">=", bounds.gte),
        ("<", bounds.lt),
        ("<=", bounds.lte),
    ] {
        let Some(bound) = bound else { continue };
        let part = match (field.kind, bound) {
            (FieldKind::Integer | FieldKind::BigInt, Bound::Int(n)) => {
                format!("{col} {op} {}", binds.add(SqlBind::Int8(n)))
            }
            (FieldKind::Timestamp, Bound::Timestamp(t)) => {
                let floor = floor_millis(t);
                let next = || {
                    floor.checked_add(MILLISECOND).ok_or_else(|| {
                        SearchError::InvalidQuery(format!(
                            "the range_query bound on '{}' is at the end of time",
                            field.name
                        ))
                    })
                };
                let (op, at) = match op {
                    ">" => (">=", next()?),
                    ">=" => (">=", floor),
                    "<" => ("<", floor),
                    _ => ("<", next()?),
                };
                format!("{col} {op} {}", binds.add(SqlBind::Timestamptz(at)))
            }
            _ => return Err(wrong_kind(field, "this range_query bound")),
        };
        parts.push(part);
    }
    if parts.is_empty() {
        return Err(SearchError::InvalidQuery(format!(
            "range_query on '{}' has no bound",
            field.name
        )));
    }
    Ok(format!("({})", parts.join(" AND ")))
}

/// A `must_not` condition. `coalesce` keeps rows whose field is NULL: they
/// do not match the condition, so they are not excluded (as in OpenSearch,
/// where a document without the field never matches a clause on it).
fn negate(predicate: &str) -> String {
    format!("NOT coalesce(({predicate}), false)")
}

/// The keyset condition "the row sorts after the cursor", for a sort with
/// mixed directions and NULLs placed last in both. A row-value comparison
/// `(a, b) > (x, y)` cannot express either, so it is spelled out as an OR of
/// ANDs: for each key `i`, the keys before `i` equal the cursor's and key `i`
/// is past it. Past a value means greater (asc) or smaller (desc), or NULL;
/// nothing is past a NULL, which sorts last; equal to NULL means `IS NULL`.
fn keyset_predicate(
    binds: &mut Binds,
    order: &[(&'static FieldDef, SortDirection)],
    cursor: &[CursorValue],
) -> Result<String, SearchError> {
    let mut keys = Vec::with_capacity(order.len());
    for ((field, direction), value) in order.iter().zip(cursor) {
        let placeholder = match value {
            CursorValue::Null => None,
            CursorValue::Str(s) => Some(binds.add(SqlBind::Text(fold_case(s)))),
            CursorValue::Int(n) => Some(binds.add(SqlBind::Int8(*n))),
            CursorValue::Uuid(u) => Some(binds.add(SqlBind::Uuid(*u))),
            CursorValue::Timestamp(t) => Some(binds.add(SqlBind::Timestamptz(floor_millis(*t)))),
        };
        keys.push((sort_expr(field)?, *direction, field.nullable(), placeholder));
    }
    let mut branches = Vec::new();
    for (i, (expr, direction, nullable, placeholder)) in keys.iter().enumerate() {
        let Some(p) = placeholder else { continue };
        let mut parts: Vec<String> = keys[..i]
            .iter()
            .map(|(e, _, _, q)| match q {
                Some(q) => format!("{e} = {q}"),
                None => format!("{e} IS NULL"),
            })
            .collect();
        let op = match direction {
            SortDirection::Asc => ">",
            SortDirection::Desc => "<",
        };
        parts.push(if *nullable {
            format!("({expr} {op} {p} OR {expr} IS NULL)")
        } else {
            format!("{expr} {op} {p}")
        });
        branches.push(format!("({})", parts.join(" AND ")));
    }
    Ok(if branches.is_empty() {
        "false".to_owned()
    } else {
        format!("({})", branches.join(" OR "))
    })
}

/// Compiles `query` to one `SELECT` over `service`'s table. Identifiers come
/// only from the query's `&'static FieldDef`s; every value is a bind.
///
/// ```text
/// SELECT jsonb_build_object('uuid', "uuid", …) AS doc,
///        jsonb_build_array(lower("country") COLLATE "C", "uuid") AS sort_key
/// FROM "contacts"
/// WHERE lower("country") = ANY($1::text[]) AND (<keyset>)
/// ORDER BY lower("country") COLLATE "C" DESC NULLS LAST, "uuid" ASC NULLS LAST
/// LIMIT $4::int8
/// ```
pub fn compile_sql(service: Service, query: &ValidQuery) -> Result<CompiledSql, SearchError> {
    check_cursor(query)?;
    let mut binds = Binds::default();
    let doc_fields = query
        .select_columns
        .iter()
        .map(|f| Ok(format!("'{}', {}", f.name, doc_expr(f)?)))
        .collect::<Result<Vec<_>, SearchError>>()?;
    let sort_key = query
        .order_by
        .iter()
        .map(|(f, _)| sort_key_expr(f))
        .collect::<Result<Vec<_>, _>>()?;

    let mut conditions = Vec::new();
    for (field, values) in &query.keyword_must {
        conditions.push(keyword_predicate(&mut binds, field, values)?);
    }
    for (field, values) in &query.keyword_must_not {
        conditions.push(negate(&keyword_predicate(&mut binds, field, values)?));
    }
    for (field, text) in &query.text_must {
        conditions.push(text_predicate(&mut binds, field, text)?);
    }
    for (field, text) in &query.text_must_not {
        conditions.push(negate(&text_predicate(&mut binds, field, text)?));
    }
    for (field, bounds) in &query.range_must {
        conditions.push(range_predicate(&mut binds, field, bounds)?);
    }
    for (field, bounds) in &query.range_must_not {
        conditions.push(negate(&range_predicate(&mut binds, field, bounds)?));
    }
    if let Some(cursor) = &query.search_after {
        conditions.push(keyset_predicate(&mut binds, &query.order_by, cursor)?);
    }
    let order = query
        .order_by
        .iter()
        .map(|(f, d)| {
            let direction = match d {
                SortDirection::Asc => "ASC",
                SortDirection::Desc => "DESC",
            };
            Ok(format!("{} {direction} NULLS LAST", sort_expr(f)?))
        })
        .collect::<Result<Vec<_>, SearchError>>()?;

    let mut sql = format!(
        "SELECT jsonb_build_object({}) AS doc, jsonb_build_array({}) AS sort_key FROM \"{}\"",
        doc_fields.join(", "),
        sort_key.join(", "),
        service.table()
    );
    if !conditions.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conditions.join(" AND "));
    }
    sql.push_str(" ORDER BY ");
    sql.push_str(&order.join(", "));
    let limit = binds.add(SqlBind::Int8(i64::from(query.limit)));
    sql.push_str(&format!(" LIMIT {limit}"));
    Ok(CompiledSql {
        sql,
        binds: binds.0,
    })
}

/// One result row of a [`CompiledSql`].
#[derive(Debug, QueryableByName)]
struct Row {
    #[diesel(sql_type = sql_types::Jsonb)]
    doc: Value,
    #[diesel(sql_type = sql_types::Jsonb)]
    sort_key: Value,
}

impl Hit for Row {
    const BACKEND: &'static str = BACKEND;
    const WITHOUT_SORT: &'static str = "row without its sort key";

    fn source(&self) -> Option<&serde_json::Map<String, Value>> {
        self.doc.as_object()
    }

    fn sort_values(&self) -> Option<&[Value]> {
        self.sort_key.as_array().map(Vec::as_slice)
    }
}

/// Reads one `sort_key` value back into a typed cursor value.
fn cursor_value(field: &FieldDef, value: &Value) -> Result<CursorValue, SearchError> {
    cursor_from_sort_value(BACKEND, field, value)
}

fn database_error(error: DieselError) -> SearchError {
    match error {
        DieselError::DatabaseError(DatabaseErrorKind::ClosedConnection, info) => {
            SearchError::unavailable(BACKEND, info.message())
        }
        other => SearchError::Database(other),
    }
}

/// VQL over PostgreSQL, the record of truth: nothing to index or refresh.
#[derive(Clone)]
pub struct PostgresBackend {
    pool: PgPool,
}

impl std::fmt::Debug for PostgresBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let status = self.pool.status();
        f.debug_struct("PostgresBackend")
            .field("pool_size", &status.size)
            .field("pool_max_size", &status.max_size)
            .finish()
    }
}

impl PostgresBackend {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    async fn run_search(&self, service: Service, query: &ValidQuery) -> Result<Page, SearchError> {
        let mut conn = self
            .pool
            .get()
            .await
            .map_err(|e| SearchError::unavailable(BACKEND, e))?;
        page_on(&mut conn, service, query).await
    }

    async fn ping_db(&self) -> Result<(), SearchError> {
        let mut conn = self
            .pool
            .get()
            .await
            .map_err(|e| SearchError::unavailable(BACKEND, e))?;
        diesel::sql_query("SELECT 1")
            .execute(&mut *conn)
            .await
            .map_err(|e| SearchError::unavailable(BACKEND, e))?;
        Ok(())
    }
}

/// A REPEATABLE READ READ ONLY transaction on a pooled connection. It is
/// opened through diesel's transaction manager, so a scroll dropped half way
/// leaves a connection that the pool sees as in a transaction and discards
/// rather than reuses.
struct Snapshot {
    conn: Object<AsyncPgConnection>,
    service: Service,
}

impl Snapshot {
    async fn open(pool: PgPool, service: Service) -> Result<Self, SearchError> {
        let mut conn = pool
            .get()
            .await
            .map_err(|e| SearchError::unavailable(BACKEND, e))?;
        AnsiTransactionManager::begin_transaction_sql(
            &mut *conn,
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
        )
        .await
        .map_err(database_error)?;
        Ok(Self { conn, service })
    }
}

impl View for Snapshot {
    fn page<'a>(&'a mut self, query: &'a ValidQuery) -> BoxFuture<'a, Result<Page, SearchError>> {
        Box::pin(page_on(&mut self.conn, self.service, query))
    }

    fn finish(mut self) -> BoxFuture<'static, Result<(), SearchError>> {
        Box::pin(async move {
            <AnsiTransactionManager as TransactionManager<AsyncPgConnection>>::commit_transaction(
                &mut *self.conn,
            )
            .await
            .map_err(database_error)
        })
    }

    fn abandon(self) -> BoxFuture<'static, ()> {
        // dropped inside its transaction: the pool discards the connection
        Box::pin(async move { drop(self) })
    }
}

/// One page of `query` on `conn`.
async fn page_on(
    conn: &mut AsyncPgConnection,
    service: Service,
    query: &ValidQuery,
) -> Result<Page, SearchError> {
    let compiled = compile_sql(service, query)?;
    let rows: Vec<Row> = compiled
        .into_query()
        .load(conn)
        .await
        .map_err(database_error)?;
    page::assemble(query, &rows, |field, _, value| cursor_value(field, value))
}

impl SearchBackend for PostgresBackend {
    fn name(&self) -> &'static str {
        BACKEND
    }

    fn searches_the_database(&self) -> bool {
        true
    }

    fn ensure_indices(&self) -> BoxFuture<'_, Result<(), SearchError>> {
        Box::pin(async { Ok(()) })
    }

    fn index<'a>(
        &'a self,
        _service: Service,
        _docs: &'a [Document],
    ) -> BoxFuture<'a, Result<(), SearchError>> {
        Box::pin(async { Ok(()) })
    }

    fn index_json(
        &self,
        _service: Service,
        _docs: Vec<JsonDocument>,
    ) -> BoxFuture<'_, Result<Vec<RejectedDocument>, SearchError>> {
        Box::pin(async { Ok(Vec::new()) })
    }

    fn delete(
        &self,
        _service: Service,
        _uuids: Vec<uuid::Uuid>,
    ) -> BoxFuture<'_, Result<(), SearchError>> {
        Box::pin(async { Ok(()) })
    }

    fn refresh(&self, _service: Service) -> BoxFuture<'_, Result<(), SearchError>> {
        Box::pin(async { Ok(()) })
    }

    fn search<'a>(
        &'a self,
        service: Service,
        query: &'a ValidQuery,
    ) -> BoxFuture<'a, Result<Page, SearchError>> {
        Box::pin(self.run_search(service, query))
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), SearchError>> {
        Box::pin(self.ping_db())
    }

    fn scroll(
        &self,
        service: Service,
        query: ValidQuery,
    ) -> BoxStream<'static, Result<Page, SearchError>> {
        scroll(Box::pin(Snapshot::open(self.pool.clone(), service)), query)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use connectra_domain::catalogue;
    use connectra_domain::vql::{parse_vql, Purpose};
    use serde_json::json;
    use time::format_description::well_known::Rfc3339;

    fn valid(service: Service, query: Value) -> ValidQuery {
        parse_vql(&query)
            .unwrap()
            .validate(service, Purpose::Search)
            .unwrap()
    }

    fn ts(text: &str) -> OffsetDateTime {
        OffsetDateTime::parse(text, &Rfc3339).unwrap()
    }

    /// Every double-quoted identifier in `sql` is a catalogue field of
    /// `service`, the table, or the collation "C".
    fn assert_identifiers_from_catalogue(service: Service, sql: &str) {
        let mut rest = sql;
        while let Some(start) = rest.find('"') {
            let after = &rest[start + 1..];
            let end = after.find('"').unwrap();
            let name = &after[..end];
            assert!(
                name == "C"
                    || name == service.table()
                    || catalogue::field(service, name).is_some()
                    // the `"T"` and `"Z"` literals inside to_char's pattern
                    || name == "T"
                    || name == "Z",
                "identifier {name:?} is not from the catalogue in {sql}"
            );
            rest = &after[end + 1..];
        }
    }

    #[test]
    fn a_plain_query_selects_orders_and_limits() {
        let q = valid(
            Service::Contact,
            json!({ "select_columns": ["uuid", "email", "created_at"], "limit": 20 }),
        );
        let c = compile_sql(Service::Contact, &q).unwrap();
        assert_eq!(
            c.sql,
            "SELECT jsonb_build_object('uuid', \"uuid\", 'email', \"email\", 'created_at', \
             to_char(\"created_at\" AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')) AS doc, \
             jsonb_build_array(\"uuid\") AS sort_key FROM \"contacts\" \
             ORDER BY \"uuid\" ASC NULLS LAST LIMIT $1::int8"
        );
        assert_eq!(c.binds, vec![SqlBind::Int8(20)]);
        assert_identifiers_from_catalogue(Service::Contact, &c.sql);
    }

    #[test]
    fn filters_bind_every_value_and_fold_case() {
        let q = valid(
            Service::Company,
            json!({
                "where": {
                    "keyword_match": {
                        "must": { "country": ["USA", "Ü'; DROP TABLE companies; --"], "industries": ["Software"], "name": ["Acme"] },
                        "must_not": { "state": ["CA"] }
                    },
                    "text_match": { "must": { "name": "acme labs" } },
                    "range_query": {
                        "must": { "employees_count": { "gte": 50, "lt": 1000 } },
                        "must_not": { "founded_year": { "gt": 2000 } }
                    }
                },
                "select_columns": ["uuid"]
            }),
        );
        let c = compile_sql(Service::Company, &q).unwrap();
        let where_ = &c.sql[c.sql.find(" WHERE ").unwrap()..c.sql.find(" ORDER BY ").unwrap()];
        assert_eq!(
            where_,
            " WHERE lower(\"country\") = ANY($1::text[]) \
             AND EXISTS (SELECT 1 FROM unnest(\"industries\") AS e(v) WHERE lower(e.v) = ANY($2::text[])) \
             AND lower(\"name\") = ANY($3::text[]) \
             AND NOT coalesce((lower(\"state\") = ANY($4::text[])), false) \
             AND to_tsvector('simple', coalesce(\"name\", '')) @@ plainto_tsquery('simple', $5::text) \
             AND (\"employees_count\" >= $6::int8 AND \"employees_count\" < $7::int8) \
             AND NOT coalesce(((\"founded_year\" > $8::int8)), false)"
        );
        assert_eq!(
            c.binds,
            vec![
                SqlBind::TextArray(vec!["usa".into(), "ü'; drop table companies; --".into()]),
                SqlBind::TextArray(vec!["software".into()]),
                SqlBind::TextArray(vec!["acme".into()]),
                SqlBind::TextArray(vec!["ca".into()]),
                SqlBind::Text("acme labs".into()),
                SqlBind::Int8(50),
                SqlBind::Int8(1000),
                SqlBind::Int8(2000),
                SqlBind::Int8(500),
            ]
        );
        assert!(!c.sql.contains("DROP") && !c.sql.contains("USA") && !c.sql.contains("50"));
        assert_identifiers_from_catalogue(Service::Company, &c.sql);
    }

    #[test]
    fn uuid_keyword_match_binds_a_uuid_array() {
        let q = valid(
            Service::Contact,
            json!({ "where": { "keyword_match": { "must": { "company_id": ["0B7E4A54-3F0C-4D51-A2B1-5C9D7E1F2A3B"] } } } }),
        );
        let c = compile_sql(Service::Contact, &q).unwrap();
        assert!(
            c.sql
                .contains(" WHERE \"company_id\" = ANY($1::uuid[]) ORDER BY"),
            "{}",
            c.sql
        );
        assert_eq!(
            c.binds[0],
            SqlBind::UuidArray(vec![uuid::Uuid::parse_str(
                "0b7e4a54-3f0c-4d51-a2b1-5c9d7e1f2a3b"
            )
            .unwrap()])
        );
    }

    #[test]
    fn timestamp_ranges_compare_at_millisecond_resolution() {
        let q = valid(
            Service::Contact,
            json!({ "where": { "range_query": { "must": {
                "created_at": { "gt": "2024-01-01T00:00:00.123456Z", "lte": "2024-02-01T01:00:00.5+01:00" },
                "updated_at": { "gte": "2024-01-01T00:00:00.1239Z", "lt": "2024-03-01T00:00:00Z" }
            } } } }),
        );
        let c = compile_sql(Service::Contact, &q).unwrap();
        assert!(
            c.sql.contains(
                "(\"created_at\" >= $1::timestamptz AND \"created_at\" < $2::timestamptz) \
                 AND (\"updated_at\" >= $3::timestamptz AND \"updated_at\" < $4::timestamptz)"
            ),
            "{}",
            c.sql
        );
        assert_eq!(
            c.binds[..4],
            [
                SqlBind::Timestamptz(ts("2024-01-01T00:00:00.124Z")),
                SqlBind::Timestamptz(ts("2024-02-01T00:00:00.501Z")),
                SqlBind::Timestamptz(ts("2024-01-01T00:00:00.123Z")),
                SqlBind::Timestamptz(ts("2024-03-01T00:00:00Z")),
            ]
        );
    }

    #[test]
    fn sort_expressions_follow_opensearch() {
        let q = valid(
            Service::Company,
            json!({ "order_by": [
                { "order_by": "name", "order_direction": "desc" },
                { "order_by": "employees_count" },
                { "order_by": "created_at", "order_direction": "desc" }
            ] }),
        );
        let c = compile_sql(Service::Company, &q).unwrap();
        assert!(
            c.sql.contains(
                "jsonb_build_array((CASE WHEN char_length(\"name\") <= 8191 THEN lower(\"name\") END) COLLATE \"C\", \"employees_count\", \
                 floor(extract(epoch FROM \"created_at\") * 1000)::int8, \"uuid\") AS sort_key"
            ),
            "{}",
            c.sql
        );
        assert!(
            c.sql.ends_with(
                "ORDER BY (CASE WHEN char_length(\"name\") <= 8191 THEN lower(\"name\") END) COLLATE \"C\" DESC NULLS LAST, \"employees_count\" ASC NULLS LAST, \
                 date_trunc('milliseconds', \"created_at\") DESC NULLS LAST, \"uuid\" ASC NULLS LAST \
                 LIMIT $1::int8"
            ),
            "{}",
            c.sql
        );
    }

    #[test]
    fn search_after_expands_to_an_or_of_ands_with_nulls_last() {
        let q = valid(
            Service::Company,
            json!({
                "order_by": [
                    { "order_by": "city", "order_direction": "desc" },
                    { "order_by": "employees_count" },
                    { "order_by": "created_at" }
                ],
                "search_after": ["Berlin", null, "2024-01-01T00:00:00.123999Z", "0b7e4a54-3f0c-4d51-a2b1-5c9d7e1f2a3b"]
            }),
        );
        let c = compile_sql(Service::Company, &q).unwrap();
        let city = "lower(\"city\") COLLATE \"C\"";
        let created = "date_trunc('milliseconds', \"created_at\")";
        let expected = format!(
            " WHERE ((({city} < $1::text OR {city} IS NULL)) \
             OR ({city} = $1::text AND \"employees_count\" IS NULL AND {created} > $2::timestamptz) \
             OR ({city} = $1::text AND \"employees_count\" IS NULL AND {created} = $2::timestamptz AND \"uuid\" > $3::uuid)) \
             ORDER BY"
        );
        assert!(c.sql.contains(&expected), "{}\n{expected}", c.sql);
        assert_eq!(
            c.binds,
            vec![
                SqlBind::Text("berlin".into()),
                SqlBind::Timestamptz(ts("2024-01-01T00:00:00.123Z")),
                SqlBind::Uuid(
                    uuid::Uuid::parse_str("0b7e4a54-3f0c-4d51-a2b1-5c9d7e1f2a3b").unwrap()
                ),
                SqlBind::Int8(500),
            ]
        );
        assert_identifiers_from_catalogue(Service::Company, &c.sql);
    }

    #[test]
    fn a_cursor_that_does_not_fit_the_sort_is_rejected() {
        let mut q = valid(Service::Company, json!({}));
        q.search_after = Some(vec![CursorValue::Int(1)]);
        assert!(matches!(
            compile_sql(Service::Company, &q),
            Err(SearchError::InvalidQuery(_))
        ));
        q.search_after = Some(vec![CursorValue::Null, CursorValue::Null]);
        assert!(matches!(
            compile_sql(Service::Company, &q),
            Err(SearchError::InvalidQuery(_))
        ));
    }
}
