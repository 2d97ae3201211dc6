//! VQL: the JSON query language of searches and exports.
//!
//! A query arrives as JSON and is read in two steps:
//!
//! 1. [`parse_vql`] reads the wire shape into a [`VqlQuery`]. Unknown keys and
//!    wrong JSON types are rejected here, with the path of the offending value.
//! 2. [`VqlQuery::validate`] checks every field name against the service's
//!    [`catalogue`] and every operator and value against the
//!    field's kind, and yields a [`ValidQuery`].
//!
//! Search backends compile only from a [`ValidQuery`]: it names fields by
//! `&'static FieldDef`, never by the request's strings.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::catalogue::{self, FieldDef, FieldKind};
use crate::error::{DomainError, ErrorCode};
use crate::limits::{self, MAX_KEYWORD_BYTES, MAX_KEYWORD_VALUES, MAX_TEXT_TERMS};
use crate::service::Service;

/// The page size when a query gives no `limit`.
pub const DEFAULT_LIMIT: u32 = 500;
/// The largest page size a query may ask for.
pub const MAX_LIMIT: u32 = 5000;

// ---------------------------------------------------------------------------
// Wire types
// ---------------------------------------------------------------------------
//
// The wire structs implement `Serialize` and `Deserialize` by hand (see
// `objects_only!` below); their serde attributes live on private mirrors in
// `mod wire`, which the compiler checks field by field against these.

/// A VQL query as it arrives on the wire. Every key is optional; unknown keys
/// are rejected.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct VqlQuery {
    /// `where`: the filters. Absent means every record matches.
    pub where_: Option<WhereClause>,
    /// The fields to return, in order.
    pub select_columns: Option<Vec<String>>,
    /// The sort, most significant first. `uuid` is always appended.
    pub order_by: Option<Vec<OrderBy>>,
    /// The page size. Kept signed on the wire so that a negative value gets
    /// the message that names the bounds.
    pub limit: Option<i64>,
    /// The previous page's `next_search_after`: one value per sort field.
    pub search_after: Option<Vec<Value>>,
}

/// The `where` object: up to three kinds of filter, AND-ed together.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WhereClause {
    pub keyword_match: Option<KeywordMatch>,
    pub text_match: Option<TextMatch>,
    pub range_query: Option<RangeQuery>,
}

/// A filter section's `must` (all must hold) and `must_not` (none may hold),
/// each a map from field name to that field's condition.
#[derive(Debug, Clone, PartialEq)]
pub struct Clauses<T> {
    pub must: Option<BTreeMap<String, T>>,
    pub must_not: Option<BTreeMap<String, T>>,
}

impl<T> Default for Clauses<T> {
    fn default() -> Self {
        Self {
            must: None,
            must_not: None,
        }
    }
}

/// `keyword_match`: field → the values it may equal (case-insensitively).
pub type KeywordMatch = Clauses<Vec<String>>;
/// `text_match`: text field → the terms that must all match.
pub type TextMatch = Clauses<String>;
/// `range_query`: numeric or timestamp field → its bounds.
pub type RangeQuery = Clauses<RangeSpec>;

/// One field's bounds in a `range_query`, as given. The values are checked
/// against the field's kind by [`VqlQuery::validate`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RangeSpec {
    pub gt: Option<Value>,
    pub gte: Option<Value>,
    pub lt: Option<Value>,
    pub lte: Option<Value>,
}

/// One `order_by` entry; `order_direction` defaults to `asc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderBy {
    pub order_by: String,
    pub order_direction: SortDirection,
}

/// A sort direction: `asc` (the default) or `desc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SortDirection {
    #[default]
    Asc,
    Desc,
}

impl SortDirection {
    /// `asc` or `desc`, as on the wire (and as SQL and OpenSearch spell it).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Asc => "asc",
            Self::Desc => "desc",
        }
    }
}

/// Serde's `remote` mirrors of the wire structs: the derived code, with every
/// serde attribute, lives here as private functions.
mod wire {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Serialize};
    use serde_json::Value;

    use super::{KeywordMatch, RangeQuery, SortDirection, TextMatch};

    #[derive(Serialize, Deserialize)]
    #[serde(remote = "super::VqlQuery", deny_unknown_fields)]
    pub(super) struct VqlQuery {
        #[serde(rename = "where", default, skip_serializing_if = "Option::is_none")]
        where_: Option<super::WhereClause>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        select_columns: Option<Vec<String>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        order_by: Option<Vec<super::OrderBy>>,
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            deserialize_with = "whole_number"
        )]
        limit: Option<i64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        search_after: Option<Vec<Value>>,
    }

    /// `limit`: 500 or 500.0, as JSON has no integer type; the bounds are
    /// checked with a message of their own.
    fn whole_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        let Some(n) = Option::<serde_json::Number>::deserialize(d)? else {
            return Ok(None);
        };
        crate::limits::whole_number(&n).map(Some).ok_or_else(|| {
            serde::de::Error::custom(format!("invalid value: {n}, expected a whole number"))
        })
    }

    #[derive(Serialize, Deserialize)]
    #[serde(remote = "super::WhereClause", deny_unknown_fields)]
    pub(super) struct WhereClause {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        keyword_match: Option<KeywordMatch>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text_match: Option<TextMatch>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        range_query: Option<RangeQuery>,
    }

    #[derive(Serialize, Deserialize)]
    #[serde(remote = "super::Clauses", deny_unknown_fields)]
    pub(super) struct Clauses<T> {
        // No `default`: on a generic field it would demand `T: Default`. A
        // missing `Option` field reads as `None` anyway.
        #[serde(skip_serializing_if = "Option::is_none")]
        must: Option<BTreeMap<String, T>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        must_not: Option<BTreeMap<String, T>>,
    }

    #[derive(Serialize, Deserialize)]
    #[serde(remote = "super::RangeSpec", deny_unknown_fields)]
    pub(super) struct RangeSpec {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        gt: Option<Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        gte: Option<Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lt: Option<Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lte: Option<Value>,
    }

    #[derive(Serialize, Deserialize)]
    #[serde(remote = "super::OrderBy", deny_unknown_fields)]
    pub(super) struct OrderBy {
        order_by: String,
        #[serde(default)]
        order_direction: SortDirection,
    }
}

/// Serde's derived structs also accept a JSON array (fields by position), so
/// `"where": []` or `"order_by": [["city", "asc"]]` would slip through. The
/// trait impls therefore ask the deserializer for a map only, and hand that
/// map to the mirror's derived code. Reading the map in place (not through a
/// buffered `Value`) keeps the caller's deserializer underneath, so that
/// `serde_path_to_error` in [`parse_vql`] sees every level.
trait FromObject<'de>: Sized {
    /// What the error message says was expected instead.
    const EXPECTING: &'static str;
    fn from_map<A: MapAccess<'de>>(map: A) -> Result<Self, A::Error>;
}

struct ObjectVisitor<T>(PhantomData<fn() -> T>);

impl<'de, T: FromObject<'de>> Visitor<'de> for ObjectVisitor<T> {
    type Value = T;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(T::EXPECTING)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::from_map(map)
    }
}

macro_rules! objects_only {
    ($ty:ident $(<$g:ident>)?, $expecting:literal) => {
        impl<'de $(, $g: Deserialize<'de>)?> FromObject<'de> for $ty $(<$g>)? {
            const EXPECTING: &'static str = $expecting;

            fn from_map<A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
                wire::$ty::deserialize(MapAccessDeserializer::new(map))
            }
        }

        impl<'de $(, $g: Deserialize<'de>)?> Deserialize<'de> for $ty $(<$g>)? {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserializer.deserialize_map(ObjectVisitor(PhantomData))
            }
        }

        impl $(<$g: Serialize>)? Serialize for $ty $(<$g>)? {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                wire::$ty::serialize(self, serializer)
            }
        }
    };
}

objects_only!(VqlQuery, "a vql query object");
objects_only!(
    WhereClause,
    "an object with 'keyword_match', 'text_match' and/or 'range_query'"
);
objects_only!(Clauses<T>, "an object with 'must' and/or 'must_not'");
objects_only!(RangeSpec, "an object with 'gt', 'gte', 'lt' and/or 'lte'");
objects_only!(
    OrderBy,
    "an object with 'order_by' and an optional 'order_direction'"
);

// ---------------------------------------------------------------------------
// Validated types
// ---------------------------------------------------------------------------

/// What the query is for. Exports must name their columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Purpose {
    Search,
    Export,
}

/// A query checked against a service's catalogue: what every backend compiles.
///
/// Filter lists are in field-name order (the wire maps are `BTreeMap`s), so the
/// same query always compiles to the same SQL or search request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidQuery {
    /// `keyword_match.must`: each field equals one of its values (ignoring
    /// case; for a list field, any element does). Uuid values are canonical
    /// (lower-case, hyphenated).
    pub keyword_must: Vec<(&'static FieldDef, Vec<String>)>,
    /// `keyword_match.must_not`: no field equals any of its values.
    pub keyword_must_not: Vec<(&'static FieldDef, Vec<String>)>,
    /// `text_match.must`: full-text match, all terms required.
    pub text_must: Vec<(&'static FieldDef, String)>,
    /// `text_match.must_not`.
    pub text_must_not: Vec<(&'static FieldDef, String)>,
    /// `range_query.must`.
    pub range_must: Vec<(&'static FieldDef, RangeBounds)>,
    /// `range_query.must_not`.
    pub range_must_not: Vec<(&'static FieldDef, RangeBounds)>,
    /// The columns to return, in order; never empty.
    pub select_columns: Vec<&'static FieldDef>,
    /// The sort, most significant first; always contains `uuid` exactly once,
    /// last unless the user placed it earlier.
    pub order_by: Vec<(&'static FieldDef, SortDirection)>,
    /// The page size, `1..=MAX_LIMIT`.
    pub limit: u32,
    /// Where the page starts: one value per `order_by` entry.
    pub search_after: Option<Vec<CursorValue>>,
}

/// One field's range. At least one bound is set, and never both `gt` and
/// `gte`, nor both `lt` and `lte`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RangeBounds {
    pub gt: Option<Bound>,
    pub gte: Option<Bound>,
    pub lt: Option<Bound>,
    pub lte: Option<Bound>,
}

/// A range bound, typed by its field: `Int` for integer and bigint fields
/// (within `i32` for integer fields), `Timestamp` for timestamp fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    Int(i64),
    Timestamp(OffsetDateTime),
}

/// One value of a `search_after` cursor, typed by its sort field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CursorValue {
    /// The record has no value for a nullable sort field.
    Null,
    /// An integer or bigint field.
    Int(i64),
    /// A keyword or text field.
    Str(String),
    /// A uuid field.
    Uuid(uuid::Uuid),
    /// A timestamp field.
    Timestamp(OffsetDateTime),
}

impl CursorValue {
    /// The value as it appears in `search_after` / `next_search_after`:
    /// `null`, a number, or a string (uuids hyphenated lower-case, timestamps
    /// RFC 3339). [`VqlQuery::validate`] reads back exactly what this writes.
    pub fn to_json(&self) -> Value {
        match self {
            Self::Null => Value::Null,
            Self::Int(n) => Value::from(*n),
            Self::Str(s) => Value::String(s.clone()),
            Self::Uuid(u) => Value::String(u.hyphenated().to_string()),
            // RFC 3339 cannot write years outside 0..=9999; such a value
            // cannot have come from a cursor, and its fallback text would be
            // rejected if sent back, which is the honest outcome.
            Self::Timestamp(t) => {
                Value::String(t.format(&Rfc3339).unwrap_or_else(|_| t.to_string()))
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------

/// Reads a VQL query from JSON. Unknown keys and wrong JSON types are
/// `ERR_INVALID_VQL`, with serde's message and the path of the offending value
/// as `serde_path_to_error` finds it (e.g. `where.keyword_match.must.country`,
/// `order_by[0].order_direction`; for an unknown key, the path ends in that
/// key).
pub fn parse_vql(value: &Value) -> Result<VqlQuery, DomainError> {
    if !value.is_object() {
        return Err(invalid(format!(
            "a vql query must be a json object, got {}",
            json_kind(value)
        )));
    }
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path();
        if path.iter().next().is_none() {
            invalid(format!("invalid vql: {}", err.inner()))
        } else {
            invalid(format!("invalid vql at '{path}': {}", err.inner()))
        }
    })
}

/// "a string", "an array", …: a JSON value's kind, for error messages.
pub(crate) fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

// ---------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------

fn invalid(message: impl Into<String>) -> DomainError {
    DomainError::new(ErrorCode::InvalidVql, message)
}

fn lookup(service: Service, name: &str, place: &str) -> Result<&'static FieldDef, DomainError> {
    catalogue::field(service, name).ok_or_else(|| {
        DomainError::new(
            ErrorCode::UnknownField,
            format!("unknown field '{name}' for service '{service}' in '{place}'"),
        )
    })
}

impl VqlQuery {
    /// Checks the query against `service`'s catalogue. Errors are
    /// `ERR_UNKNOWN_FIELD` for a field the service does not have,
    /// `ERR_MISSING_SELECT_COLUMNS` for an export without columns, and
    /// `ERR_INVALID_VQL` for anything else; each message names the field or
    /// key at fault.
    pub fn validate(&self, service: Service, purpose: Purpose) -> Result<ValidQuery, DomainError> {
        let mut query = ValidQuery {
            keyword_must: Vec::new(),
            keyword_must_not: Vec::new(),
            text_must: Vec::new(),
            text_must_not: Vec::new(),
            range_must: Vec::new(),
            range_must_not: Vec::new(),
            select_columns: Vec::new(),
            order_by: Vec::new(),
            limit: DEFAULT_LIMIT,
            search_after: None,
        };
        if let Some(where_) = &self.where_ {
            validate_where(where_, service, &mut query)?;
        }
        query.select_columns = validate_select(self.select_columns.as_deref(), service, purpose)?;
        query.order_by = validate_order(self.order_by.as_deref(), service)?;
        query.limit = validate_limit(self.limit)?;
        query.search_after = match &self.search_after {
            None => None,
            Some(values) => Some(validate_cursor(values, &query.order_by)?),
        };
        Ok(query)
    }
}

impl ValidQuery {
    /// The same query, starting after `cursor` (a page's `next_search_after`),
    /// checked against the sort like a user's `search_after`.
    pub fn after(&self, cursor: &[Value]) -> Result<ValidQuery, DomainError> {
        Ok(ValidQuery {
            search_after: Some(validate_cursor(cursor, &self.order_by)?),
            ..self.clone()
        })
    }
}

fn validate_where(
    where_: &WhereClause,
    service: Service,
    query: &mut ValidQuery,
) -> Result<(), DomainError> {
    if where_.keyword_match.is_none() && where_.text_match.is_none() && where_.range_query.is_none()
    {
        return Err(invalid(
            "'where' is empty; omit it to match every record, or give it keyword_match, text_match or range_query",
        ));
    }
    if let Some(section) = &where_.keyword_match {
        check_section_not_empty(section, "keyword_match")?;
        query.keyword_must = clause(
            section.must.as_ref(),
            service,
            "where.keyword_match.must",
            |f, v: &Vec<String>| keyword_values(f, v),
        )?;
        query.keyword_must_not = clause(
            section.must_not.as_ref(),
            service,
            "where.keyword_match.must_not",
            |f, v: &Vec<String>| keyword_values(f, v),
        )?;
    }
    if let Some(section) = &where_.text_match {
        check_section_not_empty(section, "text_match")?;
        query.text_must = clause(
            section.must.as_ref(),
            service,
            "where.text_match.must",
            |f, v: &String| text_value(f, v),
        )?;
        query.text_must_not = clause(
            section.must_not.as_ref(),
            service,
            "where.text_match.must_not",
            |f, v: &String| text_value(f, v),
        )?;
    }
    let values: usize = query
        .keyword_must
        .iter()
        .chain(&query.keyword_must_not)
        .map(|(_, v)| v.len())
        .sum();
    if values > MAX_KEYWORD_VALUES {
        return Err(invalid(format!(
            "keyword_match holds {values} values in all; at most {MAX_KEYWORD_VALUES} are allowed in one query"
        )));
    }
    let terms: usize = query
        .text_must
        .iter()
        .chain(&query.text_must_not)
        .map(|(_, v)| v.split_whitespace().count())
        .sum();
    if terms > MAX_TEXT_TERMS {
        return Err(invalid(format!(
            "text_match holds {terms} words in all; at most {MAX_TEXT_TERMS} are allowed in one query"
        )));
    }
    if let Some(section) = &where_.range_query {
        check_section_not_empty(section, "range_query")?;
        query.range_must = clause(
            section.must.as_ref(),
            service,
            "where.range_query.must",
            range_bounds,
        )?;
        query.range_must_not = clause(
            section.must_not.as_ref(),
            service,
            "where.range_query.must_not",
            range_bounds,
        )?;
    }
    Ok(())
}

/// A section must hold at least one field under `must` or `must_not`. An
/// empty map beside a non-empty one is allowed: the spec's own example writes
/// `"must_not": {}` next to a real `must`.
fn check_section_not_empty<T>(section: &Clauses<T>, name: &str) -> Result<(), DomainError> {
    let has_fields =
        |map: &Option<BTreeMap<String, T>>| map.as_ref().is_some_and(|m| !m.is_empty());
    if has_fields(&section.must) || has_fields(&section.must_not) {
        return Ok(());
    }
    let what = match (&section.must, &section.must_not) {
        (Some(_), Some(_)) => format!("'where.{name}.must' and 'where.{name}.must_not' are empty"),
        (Some(_), None) => format!("'where.{name}.must' is empty"),
        (None, Some(_)) => format!("'where.{name}.must_not' is empty"),
        (None, None) => format!("'where.{name}' is empty"),
    };
    Err(invalid(format!(
        "{what}; give 'where.{name}' at least one field under 'must' or 'must_not', or leave it out"
    )))
}

fn clause<T, R>(
    map: Option<&BTreeMap<String, T>>,
    service: Service,
    place: &str,
    check: impl Fn(&'static FieldDef, &T) -> Result<R, DomainError>,
) -> Result<Vec<(&'static FieldDef, R)>, DomainError> {
    let Some(map) = map else {
        return Ok(Vec::new());
    };
    map.iter()
        .map(|(name, value)| {
            let field = lookup(service, name, place)?;
            Ok((field, check(field, value)?))
        })
        .collect()
}

fn keyword_values(field: &'static FieldDef, values: &[String]) -> Result<Vec<String>, DomainError> {
    if !field.keyword_matchable() {
        return Err(invalid(format!(
            "keyword_match cannot be used on {} field '{}'; it works only on keyword, text, keyword list and uuid fields",
            field.kind, field.name
        )));
    }
    if values.is_empty() {
        return Err(invalid(format!(
            "keyword_match on field '{}' needs at least one value",
            field.name
        )));
    }
    for value in values {
        check_string(
            value,
            &format!("keyword_match value for field '{}'", field.name),
        )?;
    }
    if field.kind != FieldKind::Uuid {
        return Ok(values.to_vec());
    }
    values
        .iter()
        .map(|value| {
            uuid::Uuid::parse_str(value)
                .map(|u| u.hyphenated().to_string())
                .map_err(|_| {
                    invalid(format!(
                        "keyword_match value '{value}' for uuid field '{}' is not a valid uuid",
                        field.name
                    ))
                })
        })
        .collect()
}

fn text_value(field: &'static FieldDef, value: &str) -> Result<String, DomainError> {
    if !field.text_matchable() {
        return Err(invalid(format!(
            "text_match cannot be used on {} field '{}'; it works only on text fields",
            field.kind, field.name
        )));
    }
    if value.trim().is_empty() {
        return Err(invalid(format!(
            "text_match on field '{}' needs a non-empty string",
            field.name
        )));
    }
    check_string(
        value,
        &format!("text_match value for field '{}'", field.name),
    )?;
    Ok(value.to_owned())
}

/// A query string must be storable and matchable: no NUL character, and at
/// most [`MAX_KEYWORD_BYTES`] bytes (no stored keyword is longer).
fn check_string(value: &str, what: &str) -> Result<(), DomainError> {
    if limits::has_nul(value) {
        return Err(invalid(format!(
            "{what} contains a NUL character (\\u0000), which no record can hold"
        )));
    }
    if value.len() > MAX_KEYWORD_BYTES {
        return Err(invalid(format!(
            "{what} is {} bytes; at most {MAX_KEYWORD_BYTES} are allowed",
            value.len()
        )));
    }
    Ok(())
}

fn range_bounds(field: &'static FieldDef, spec: &RangeSpec) -> Result<RangeBounds, DomainError> {
    let name = field.name;
    if !field.rangeable() {
        return Err(invalid(format!(
            "range_query cannot be used on {} field '{name}'; it works only on integer, bigint and timestamp fields",
            field.kind
        )));
    }
    if spec.gt.is_none() && spec.gte.is_none() && spec.lt.is_none() && spec.lte.is_none() {
        return Err(invalid(format!(
            "range_query on field '{name}' needs at least one of 'gt', 'gte', 'lt' or 'lte'"
        )));
    }
    if spec.gt.is_some() && spec.gte.is_some() {
        return Err(invalid(format!(
            "range_query on field '{name}' cannot combine 'gt' and 'gte'"
        )));
    }
    if spec.lt.is_some() && spec.lte.is_some() {
        return Err(invalid(format!(
            "range_query on field '{name}' cannot combine 'lt' and 'lte'"
        )));
    }
    let bound = |op: &str, value: &Option<Value>| {
        value
            .as_ref()
            .map(|v| range_bound(field, op, v))
            .transpose()
    };
    Ok(RangeBounds {
        gt: bound("gt", &spec.gt)?,
        gte: bound("gte", &spec.gte)?,
        lt: bound("lt", &spec.lt)?,
        lte: bound("lte", &spec.lte)?,
    })
}

fn range_bound(field: &FieldDef, op: &str, value: &Value) -> Result<Bound, DomainError> {
    let parsed = match field.kind {
        FieldKind::Integer => as_i32(value).map(Bound::Int),
        FieldKind::BigInt => value.as_i64().map(Bound::Int),
        FieldKind::Timestamp => value
            .as_str()
            .and_then(parse_timestamp)
            .map(Bound::Timestamp),
        _ => None,
    };
    parsed.ok_or_else(|| {
        invalid(format!(
            "range_query '{op}' on {} field '{}' must be {}, got {value}",
            field.kind,
            field.name,
            expected(field.kind)
        ))
    })
}

fn as_i32(value: &Value) -> Option<i64> {
    value.as_i64().filter(|n| i32::try_from(*n).is_ok())
}

/// An RFC 3339 timestamp, as UTC. It must lie in the years 1 to 9999 in UTC
/// (an offset can push a year-9999 time past that) with a millisecond to
/// spare, so that both backends can hold it and compare with it.
fn parse_timestamp(text: &str) -> Option<OffsetDateTime> {
    let utc = OffsetDateTime::parse(text, &Rfc3339)
        .ok()?
        .checked_to_offset(time::UtcOffset::UTC)?;
    (utc.year() >= 1 && utc.checked_add(time::Duration::MILLISECOND).is_some()).then_some(utc)
}

/// What a value for a field of `kind` must look like, for messages.
fn expected(kind: FieldKind) -> &'static str {
    match kind {
        FieldKind::Integer => "a whole number from -2147483648 to 2147483647",
        FieldKind::BigInt => "a whole number from -9223372036854775808 to 9223372036854775807",
        FieldKind::Timestamp => {
            "an rfc 3339 timestamp string from year 1 to 9999 in UTC, such as '2024-01-31T09:30:00Z'"
        }
        FieldKind::Uuid => "a uuid string",
        FieldKind::Keyword | FieldKind::Text => "a string",
        FieldKind::KeywordList | FieldKind::Json => "absent: the field cannot be sorted",
    }
}

/// A cursor string is a sort value: no longer than the longest indexed
/// keyword term, and without NUL.
fn check_cursor_string(index: usize, field: &FieldDef, s: &str) -> Result<(), DomainError> {
    if limits::has_nul(s) || s.len() > 4 * limits::TEXT_KEYWORD_MAX_CHARS {
        return Err(invalid(format!(
            "'search_after[{index}]' for field '{}' is not a value this sort can produce; send back the previous page's next_search_after unchanged",
            field.name
        )));
    }
    Ok(())
}

fn validate_select(
    columns: Option<&[String]>,
    service: Service,
    purpose: Purpose,
) -> Result<Vec<&'static FieldDef>, DomainError> {
    let columns = match (columns, purpose) {
        (None, Purpose::Search) => return Ok(catalogue::fields(service).iter().collect()),
        (None | Some([]), Purpose::Export) => return Err(DomainError::missing_select_columns()),
        (Some([]), Purpose::Search) => return Err(invalid(
            "'select_columns' is empty; omit it to select every field, or name at least one field",
        )),
        (Some(columns), _) => columns,
    };
    let mut selected: Vec<&'static FieldDef> = Vec::with_capacity(columns.len());
    for name in columns {
        let field = lookup(service, name, "select_columns")?;
        if selected.iter().any(|f| f.name == field.name) {
            return Err(invalid(format!(
                "field '{name}' appears more than once in 'select_columns'"
            )));
        }
        selected.push(field);
    }
    Ok(selected)
}

fn validate_order(
    items: Option<&[OrderBy]>,
    service: Service,
) -> Result<Vec<(&'static FieldDef, SortDirection)>, DomainError> {
    let items = items.unwrap_or_default();
    let mut order: Vec<(&'static FieldDef, SortDirection)> = Vec::with_capacity(items.len() + 1);
    for item in items {
        let field = lookup(service, &item.order_by, "order_by")?;
        if !field.sortable() {
            return Err(invalid(format!(
                "order_by cannot use {} field '{}'; only single-valued fields can be sorted",
                field.kind, field.name
            )));
        }
        if order.iter().any(|(f, _)| f.name == field.name) {
            return Err(invalid(format!(
                "field '{}' appears more than once in 'order_by'",
                field.name
            )));
        }
        order.push((field, item.order_direction));
    }
    if !order.iter().any(|(f, _)| f.name == "uuid") {
        order.push((lookup(service, "uuid", "order_by")?, SortDirection::Asc));
    }
    Ok(order)
}

fn validate_limit(limit: Option<i64>) -> Result<u32, DomainError> {
    let Some(limit) = limit else {
        return Ok(DEFAULT_LIMIT);
    };
    u32::try_from(limit)
        .ok()
        .filter(|n| (1..=MAX_LIMIT).contains(n))
        .ok_or_else(|| {
            invalid(format!(
                "'limit' must be between 1 and {MAX_LIMIT}, got {limit}"
            ))
        })
}

fn validate_cursor(
    values: &[Value],
    order: &[(&'static FieldDef, SortDirection)],
) -> Result<Vec<CursorValue>, DomainError> {
    if values.len() != order.len() {
        let names: Vec<&str> = order.iter().map(|(f, _)| f.name).collect();
        return Err(invalid(format!(
            "'search_after' has {} value(s) but the sort has {} field(s) ({}, with uuid as the tie-breaker); send back the previous page's next_search_after unchanged",
            values.len(),
            order.len(),
            names.join(", ")
        )));
    }
    values
        .iter()
        .zip(order)
        .enumerate()
        .map(|(index, (value, (field, _)))| cursor_value(index, field, value))
        .collect()
}

fn cursor_value(index: usize, field: &FieldDef, value: &Value) -> Result<CursorValue, DomainError> {
    if value.is_null() {
        return if field.nullable() {
            Ok(CursorValue::Null)
        } else {
            Err(invalid(format!(
                "'search_after[{index}]' for field '{}' cannot be null",
                field.name
            )))
        };
    }
    let parsed = match field.kind {
        FieldKind::Integer => as_i32(value).map(CursorValue::Int),
        FieldKind::BigInt => value.as_i64().map(CursorValue::Int),
        FieldKind::Keyword | FieldKind::Text => match value.as_str() {
            Some(s) => {
                check_cursor_string(index, field, s)?;
                Some(CursorValue::Str(s.to_owned()))
            }
            None => None,
        },
        FieldKind::Uuid => value
            .as_str()
            .and_then(|s| uuid::Uuid::parse_str(s).ok())
            .map(CursorValue::Uuid),
        FieldKind::Timestamp => value
            .as_str()
            .and_then(parse_timestamp)
            .map(CursorValue::Timestamp),
        FieldKind::KeywordList | FieldKind::Json => None,
    };
    parsed.ok_or_else(|| {
        invalid(format!(
            "'search_after[{index}]' for {} field '{}' must be {}, got {value}",
            field.kind,
            field.name,
            expected(field.kind)
        ))
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ts(text: &str) -> OffsetDateTime {
        OffsetDateTime::parse(text, &Rfc3339).unwrap()
    }

    fn def(service: Service, name: &str) -> &'static FieldDef {
        catalogue::field(service, name).unwrap()
    }

    fn check(service: Service, purpose: Purpose, query: &Value) -> Result<ValidQuery, DomainError> {
        parse_vql(query)?.validate(service, purpose)
    }

    fn company(query: &Value) -> Result<ValidQuery, DomainError> {
        check(Service::Company, Purpose::Search, query)
    }

    fn contact(query: &Value) -> Result<ValidQuery, DomainError> {
        check(Service::Contact, Purpose::Search, query)
    }

    /// Asserts the error's code, that its message mentions every needle, and
    /// that it is a lower-case sentence without a trailing period.
    fn assert_error(result: Result<ValidQuery, DomainError>, code: ErrorCode, needles: &[&str]) {
        let err = result.unwrap_err();
        assert_eq!(err.code, code, "wrong code for: {err}");
        for needle in needles {
            assert!(
                err.message.contains(needle),
                "{:?} does not mention {needle:?}",
                err.message
            );
        }
        assert!(
            !err.message.ends_with('.'),
            "trailing period: {:?}",
            err.message
        );
        let first = err.message.chars().next().unwrap();
        assert!(!first.is_uppercase(), "not lower-case: {:?}", err.message);
    }

    fn where_(clause: Value) -> Value {
        Value::Object(serde_json::Map::from_iter([("where".to_owned(), clause)]))
    }

    // --- the full query -----------------------------------------------------

    #[test]
    fn the_guides_company_export_query_validates_to_the_expected_query() {
        let query = json!({
            "where": {
                "keyword_match": { "must": { "industries": ["Software", "SaaS"], "country": ["USA"] } },
                "range_query": { "must": {
                    "employees_count": { "gte": 50, "lte": 1000 },
                    "annual_revenue": { "gte": 1_000_000 }
                } }
            },
            "select_columns": ["id", "name", "employees_count", "annual_revenue", "industries", "country", "website"],
            "order_by": [{ "order_by": "uuid", "order_direction": "desc" }],
            "limit": 500
        });
        let valid = check(Service::Company, Purpose::Export, &query).unwrap();
        let c = |name| def(Service::Company, name);
        let expected = ValidQuery {
            keyword_must: vec![
                (c("country"), vec!["USA".to_owned()]),
                (
                    c("industries"),
                    vec!["Software".to_owned(), "SaaS".to_owned()],
                ),
            ],
            keyword_must_not: vec![],
            text_must: vec![],
            text_must_not: vec![],
            range_must: vec![
                (
                    c("annual_revenue"),
                    RangeBounds {
                        gte: Some(Bound::Int(1_000_000)),
                        ..RangeBounds::default()
                    },
                ),
                (
                    c("employees_count"),
                    RangeBounds {
                        gte: Some(Bound::Int(50)),
                        lte: Some(Bound::Int(1000)),
                        ..RangeBounds::default()
                    },
                ),
            ],
            range_must_not: vec![],
            select_columns: [
                "id",
                "name",
                "employees_count",
                "annual_revenue",
                "industries",
                "country",
                "website",
            ]
            .into_iter()
            .map(c)
            .collect(),
            order_by: vec![(c("uuid"), SortDirection::Desc)],
            limit: 500,
            search_after: None,
        };
        assert_eq!(valid, expected);
    }

    #[test]
    fn a_spec_shaped_contact_query_with_every_section_validates_to_the_expected_query() {
        let query = json!({
            "where": {
                "keyword_match": { "must": { "country": ["USA"] }, "must_not": { "seniority": ["intern"] } },
                "text_match": { "must": { "title": "software engineer" }, "must_not": { "first_name": "bob" } },
                "range_query": {
                    "must": { "created_at": { "gte": "2024-01-01T00:00:00Z" } },
                    "must_not": {}
                }
            },
            "select_columns": ["uuid", "first_name", "email"],
            "order_by": [{ "order_by": "last_name", "order_direction": "desc" }],
            "limit": 50,
            "search_after": ["smith", "0b7e4a54-3f0c-4d51-a2b1-5c9d7e1f2a3b"]
        });
        let valid = contact(&query).unwrap();
        let c = |name| def(Service::Contact, name);
        let expected = ValidQuery {
            keyword_must: vec![(c("country"), vec!["USA".to_owned()])],
            keyword_must_not: vec![(c("seniority"), vec!["intern".to_owned()])],
            text_must: vec![(c("title"), "software engineer".to_owned())],
            text_must_not: vec![(c("first_name"), "bob".to_owned())],
            range_must: vec![(
                c("created_at"),
                RangeBounds {
                    gte: Some(Bound::Timestamp(ts("2024-01-01T00:00:00Z"))),
                    ..RangeBounds::default()
                },
            )],
            range_must_not: vec![],
            select_columns: vec![c("uuid"), c("first_name"), c("email")],
            order_by: vec![
                (c("last_name"), SortDirection::Desc),
                (c("uuid"), SortDirection::Asc),
            ],
            limit: 50,
            search_after: Some(vec![
                CursorValue::Str("smith".to_owned()),
                CursorValue::Uuid(
                    uuid::Uuid::parse_str("0b7e4a54-3f0c-4d51-a2b1-5c9d7e1f2a3b").unwrap(),
                ),
            ]),
        };
        assert_eq!(valid, expected);
    }

    #[test]
    fn the_specs_literal_example_mixes_services_and_fails_on_its_first_foreign_field() {
        // Section 4's example uses contact fields (seniority, title) and
        // company fields (employees_count, name) at once.
        let query = json!({
            "where": {
                "keyword_match": { "must": {"country": ["USA"]}, "must_not": {"seniority": ["intern"]} },
                "text_match": { "must": {"title": "software engineer"} },
                "range_query": { "must": {"employees_count": {"gte": 50, "lte": 1000}}, "must_not": {} }
            },
            "select_columns": ["uuid", "name", "employees_count"],
            "order_by": [{"order_by": "employees_count", "order_direction": "desc"}],
            "limit": 500
        });
        assert_error(
            contact(&query),
            ErrorCode::UnknownField,
            &["'employees_count'", "'contact'"],
        );
        assert_error(
            company(&query),
            ErrorCode::UnknownField,
            &["'seniority'", "'company'"],
        );
    }

    #[test]
    fn a_query_round_trips_through_serde_unchanged() {
        let query = json!({
            "where": {
                "keyword_match": { "must": { "country": ["USA"] } },
                "range_query": { "must_not": { "employees_count": { "gt": 10 } } }
            },
            "select_columns": ["uuid"],
            "order_by": [{ "order_by": "name", "order_direction": "asc" }],
            "limit": 10,
            "search_after": ["acme", "0b7e4a54-3f0c-4d51-a2b1-5c9d7e1f2a3b"]
        });
        let parsed = parse_vql(&query).unwrap();
        assert_eq!(serde_json::to_value(&parsed).unwrap(), query);
    }

    #[test]
    fn an_empty_query_matches_everything_with_defaults() {
        let valid = company(&json!({})).unwrap();
        assert!(
            valid.keyword_must.is_empty()
                && valid.text_must.is_empty()
                && valid.range_must.is_empty()
        );
        assert_eq!(
            valid.select_columns.len(),
            catalogue::fields(Service::Company).len()
        );
        assert_eq!(
            valid.order_by,
            vec![(def(Service::Company, "uuid"), SortDirection::Asc)]
        );
        assert_eq!(valid.limit, DEFAULT_LIMIT);
        assert_eq!(valid.search_after, None);
    }

    // --- unknown fields -----------------------------------------------------

    #[test]
    fn unknown_field_is_rejected_with_its_name() {
        assert_error(
            contact(&where_(
                json!({ "keyword_match": { "must": { "foo": ["x"] } } }),
            )),
            ErrorCode::UnknownField,
            &[
                "unknown field 'foo' for service 'contact'",
                "where.keyword_match.must",
            ],
        );
    }

    #[test]
    fn unknown_fields_are_rejected_in_every_place_that_names_a_field() {
        let cases = [
            (
                where_(json!({ "keyword_match": { "must_not": { "foo": ["x"] } } })),
                "where.keyword_match.must_not",
            ),
            (
                where_(json!({ "text_match": { "must": { "foo": "x" } } })),
                "where.text_match.must",
            ),
            (
                where_(json!({ "range_query": { "must": { "foo": { "gt": 1 } } } })),
                "where.range_query.must",
            ),
            (
                json!({ "select_columns": ["uuid", "foo"] }),
                "select_columns",
            ),
            (json!({ "order_by": [{ "order_by": "foo" }] }), "order_by"),
        ];
        for (query, place) in cases {
            assert_error(
                company(&query),
                ErrorCode::UnknownField,
                &["'foo'", "'company'", place],
            );
        }
    }

    #[test]
    fn a_field_of_the_other_service_is_unknown() {
        assert_error(
            company(&where_(
                json!({ "keyword_match": { "must": { "email": ["a@b.c"] } } }),
            )),
            ErrorCode::UnknownField,
            &["'email'", "'company'"],
        );
        assert_error(
            contact(&json!({ "select_columns": ["domain"] })),
            ErrorCode::UnknownField,
            &["'domain'", "'contact'"],
        );
    }

    #[test]
    fn field_names_are_case_sensitive() {
        assert_error(
            contact(&json!({ "select_columns": ["Email"] })),
            ErrorCode::UnknownField,
            &["'Email'"],
        );
    }

    // --- keyword_match ------------------------------------------------------

    #[test]
    fn keyword_match_works_on_keyword_text_list_and_uuid_fields() {
        let valid = company(&where_(json!({ "keyword_match": { "must": {
            "country": ["USA"], "name": ["Acme"], "industries": ["SaaS"], "uuid": ["0b7e4a54-3f0c-4d51-a2b1-5c9d7e1f2a3b"]
        } } })))
        .unwrap();
        let names: Vec<_> = valid.keyword_must.iter().map(|(f, _)| f.name).collect();
        assert_eq!(names, ["country", "industries", "name", "uuid"]);
    }

    #[test]
    fn keyword_match_on_a_field_of_another_kind_names_the_field_and_operator() {
        for (field, kind) in [
            ("employees_count", "integer"),
            ("created_at", "timestamp"),
            ("extra", "json"),
        ] {
            assert_error(
                company(&where_(
                    json!({ "keyword_match": { "must": { field: ["1"] } } }),
                )),
                ErrorCode::InvalidVql,
                &["keyword_match", &format!("{kind} field '{field}'")],
            );
        }
    }

    #[test]
    fn keyword_match_needs_at_least_one_value() {
        assert_error(
            company(&where_(
                json!({ "keyword_match": { "must": { "country": [] } } }),
            )),
            ErrorCode::InvalidVql,
            &["keyword_match", "'country'", "at least one value"],
        );
    }

    #[test]
    fn keyword_match_values_must_be_a_list_of_strings() {
        assert_error(
            company(&where_(
                json!({ "keyword_match": { "must": { "country": "USA" } } }),
            )),
            ErrorCode::InvalidVql,
            &["where.keyword_match.must.country", "expected a sequence"],
        );
        assert_error(
            company(&where_(
                json!({ "keyword_match": { "must": { "country": ["USA", 1] } } }),
            )),
            ErrorCode::InvalidVql,
            &["'where.keyword_match.must.country[1]'", "expected a string"],
        );
    }

    #[test]
    fn keyword_match_on_a_uuid_field_needs_valid_uuids_and_canonicalises_them() {
        assert_error(
            contact(&where_(
                json!({ "keyword_match": { "must": { "company_id": ["not-a-uuid"] } } }),
            )),
            ErrorCode::InvalidVql,
            &["'not-a-uuid'", "'company_id'", "not a valid uuid"],
        );
        let valid = contact(&where_(json!({ "keyword_match": { "must": {
            "company_id": ["0B7E4A54-3F0C-4D51-A2B1-5C9D7E1F2A3B"]
        } } })))
        .unwrap();
        assert_eq!(
            valid.keyword_must[0].1,
            ["0b7e4a54-3f0c-4d51-a2b1-5c9d7e1f2a3b"]
        );
    }

    #[test]
    fn keyword_values_of_non_uuid_fields_are_kept_as_given() {
        let valid = contact(&where_(
            json!({ "keyword_match": { "must_not": { "seniority": ["Intern", "VP"] } } }),
        ))
        .unwrap();
        assert_eq!(
            valid.keyword_must_not,
            vec![(
                def(Service::Contact, "seniority"),
                vec!["Intern".to_owned(), "VP".to_owned()]
            )]
        );
    }

    // --- text_match ---------------------------------------------------------

    #[test]
    fn text_match_works_only_on_text_fields() {
        assert!(contact(&where_(
            json!({ "text_match": { "must": { "last_name": "smith" } } })
        ))
        .is_ok());
        for (field, kind) in [
            ("email", "keyword"),
            ("departments", "keyword list"),
            ("company_id", "uuid"),
        ] {
            assert_error(
                contact(&where_(json!({ "text_match": { "must": { field: "x" } } }))),
                ErrorCode::InvalidVql,
                &[
                    "text_match",
                    &format!("{kind} field '{field}'"),
                    "only on text fields",
                ],
            );
        }
    }

    #[test]
    fn text_match_needs_a_non_blank_string() {
        for value in ["", "   "] {
            assert_error(
                contact(&where_(
                    json!({ "text_match": { "must": { "title": value } } }),
                )),
                ErrorCode::InvalidVql,
                &["text_match", "'title'", "non-empty string"],
            );
        }
    }

    #[test]
    fn text_match_value_must_be_a_string() {
        assert_error(
            contact(&where_(
                json!({ "text_match": { "must": { "title": ["engineer"] } } }),
            )),
            ErrorCode::InvalidVql,
            &["where.text_match.must.title", "expected a string"],
        );
    }

    // --- range_query --------------------------------------------------------

    #[test]
    fn range_query_works_only_on_integer_bigint_and_timestamp_fields() {
        for (field, kind) in [("country", "keyword"), ("name", "text"), ("uuid", "uuid")] {
            assert_error(
                company(&where_(
                    json!({ "range_query": { "must": { field: { "gt": 1 } } } }),
                )),
                ErrorCode::InvalidVql,
                &["range_query", &format!("{kind} field '{field}'")],
            );
        }
    }

    #[test]
    fn range_query_needs_at_least_one_bound() {
        for spec in [json!({}), json!({ "gt": null })] {
            assert_error(
                company(&where_(
                    json!({ "range_query": { "must": { "founded_year": spec } } }),
                )),
                ErrorCode::InvalidVql,
                &["range_query", "'founded_year'", "at least one of"],
            );
        }
    }

    #[test]
    fn range_query_rejects_gt_with_gte_and_lt_with_lte() {
        assert_error(
            company(&where_(
                json!({ "range_query": { "must": { "founded_year": { "gt": 1, "gte": 2 } } } }),
            )),
            ErrorCode::InvalidVql,
            &["'founded_year'", "'gt' and 'gte'"],
        );
        assert_error(
            company(&where_(
                json!({ "range_query": { "must_not": { "founded_year": { "lt": 1, "lte": 2 } } } }),
            )),
            ErrorCode::InvalidVql,
            &["'founded_year'", "'lt' and 'lte'"],
        );
    }

    #[test]
    fn a_range_with_both_ends_keeps_each_bound() {
        let valid = company(&where_(json!({ "range_query": { "must_not": {
            "total_funding": { "gt": -5, "lt": 9_000_000_000_i64 }
        } } })))
        .unwrap();
        assert_eq!(
            valid.range_must_not,
            vec![(
                def(Service::Company, "total_funding"),
                RangeBounds {
                    gt: Some(Bound::Int(-5)),
                    lt: Some(Bound::Int(9_000_000_000)),
                    ..RangeBounds::default()
                }
            )]
        );
    }

    #[test]
    fn integer_range_bounds_must_be_whole_numbers_that_fit_in_32_bits() {
        for bad in [
            json!(1.5),
            json!("50"),
            json!(2_147_483_648_i64),
            json!(true),
        ] {
            assert_error(
                company(&where_(
                    json!({ "range_query": { "must": { "employees_count": { "gte": bad } } } }),
                )),
                ErrorCode::InvalidVql,
                &["'gte'", "integer field 'employees_count'", "whole number"],
            );
        }
        let valid = company(&where_(
            json!({ "range_query": { "must": { "employees_count": { "lte": 2_147_483_647 } } } }),
        ))
        .unwrap();
        assert_eq!(
            valid.range_must[0].1.lte,
            Some(Bound::Int(i64::from(i32::MAX)))
        );
    }

    #[test]
    fn bigint_range_bounds_must_fit_in_64_bits() {
        let valid = company(&where_(
            json!({ "range_query": { "must": { "annual_revenue": { "gt": i64::MAX } } } }),
        ))
        .unwrap();
        assert_eq!(valid.range_must[0].1.gt, Some(Bound::Int(i64::MAX)));
        assert_error(
            company(&where_(
                json!({ "range_query": { "must": { "annual_revenue": { "gt": u64::MAX } } } }),
            )),
            ErrorCode::InvalidVql,
            &["'gt'", "bigint field 'annual_revenue'"],
        );
    }

    #[test]
    fn timestamp_range_bounds_must_be_rfc_3339_strings() {
        let valid = contact(&where_(json!({ "range_query": { "must": {
            "updated_at": { "lt": "2024-03-01T12:30:00.5+02:00" }
        } } })))
        .unwrap();
        assert_eq!(
            valid.range_must[0].1.lt,
            Some(Bound::Timestamp(ts("2024-03-01T10:30:00.500Z")))
        );
        for bad in [
            json!("2024-03-01"),
            json!("yesterday"),
            json!(1_700_000_000),
        ] {
            assert_error(
                contact(&where_(
                    json!({ "range_query": { "must": { "updated_at": { "lt": bad } } } }),
                )),
                ErrorCode::InvalidVql,
                &["'lt'", "timestamp field 'updated_at'", "rfc 3339"],
            );
        }
    }

    #[test]
    fn range_query_rejects_an_unknown_operator() {
        assert_error(
            company(&where_(
                json!({ "range_query": { "must": { "founded_year": { "between": [1, 2] } } } }),
            )),
            ErrorCode::InvalidVql,
            &[
                "where.range_query.must.founded_year",
                "unknown field `between`",
            ],
        );
    }

    // --- empty sections -----------------------------------------------------

    #[test]
    fn an_empty_where_is_rejected() {
        assert_error(
            company(&where_(json!({}))),
            ErrorCode::InvalidVql,
            &["'where' is empty"],
        );
        assert_error(
            company(&where_(json!({ "keyword_match": null }))),
            ErrorCode::InvalidVql,
            &["'where' is empty"],
        );
    }

    #[test]
    fn an_empty_section_is_rejected() {
        for section in ["keyword_match", "text_match", "range_query"] {
            assert_error(
                company(&where_(json!({ section: {} }))),
                ErrorCode::InvalidVql,
                &[&format!("'where.{section}' is empty")],
            );
        }
    }

    #[test]
    fn a_section_whose_only_map_is_empty_is_rejected() {
        assert_error(
            company(&where_(json!({ "keyword_match": { "must": {} } }))),
            ErrorCode::InvalidVql,
            &["'where.keyword_match.must' is empty"],
        );
        assert_error(
            company(&where_(json!({ "text_match": { "must_not": {} } }))),
            ErrorCode::InvalidVql,
            &["'where.text_match.must_not' is empty"],
        );
        assert_error(
            company(&where_(
                json!({ "range_query": { "must": {}, "must_not": {} } }),
            )),
            ErrorCode::InvalidVql,
            &["'where.range_query.must' and 'where.range_query.must_not' are empty"],
        );
    }

    #[test]
    fn an_empty_map_beside_a_non_empty_one_is_accepted_as_in_the_specs_example() {
        let valid = company(&where_(json!({ "range_query": {
            "must": { "employees_count": { "gte": 50 } }, "must_not": {}
        } })))
        .unwrap();
        assert_eq!(valid.range_must.len(), 1);
        assert!(valid.range_must_not.is_empty());
    }

    #[test]
    fn sections_are_validated_even_when_another_section_is_fine() {
        assert_error(
            company(&where_(json!({
                "keyword_match": { "must": { "country": ["USA"] } },
                "text_match": {}
            }))),
            ErrorCode::InvalidVql,
            &["'where.text_match' is empty"],
        );
    }

    // --- select_columns -----------------------------------------------------

    #[test]
    fn search_without_select_columns_selects_every_field_in_catalogue_order() {
        let valid = contact(&json!({})).unwrap();
        let all: Vec<_> = catalogue::fields(Service::Contact).iter().collect();
        assert_eq!(valid.select_columns, all);
    }

    #[test]
    fn export_requires_select_columns() {
        for query in [json!({}), json!({ "select_columns": [] })] {
            let err = check(Service::Contact, Purpose::Export, &query).unwrap_err();
            assert_eq!(err, DomainError::missing_select_columns());
            assert_eq!(err.code, ErrorCode::MissingSelectColumns);
        }
    }

    #[test]
    fn search_with_an_empty_select_columns_is_rejected() {
        assert_error(
            contact(&json!({ "select_columns": [] })),
            ErrorCode::InvalidVql,
            &["'select_columns' is empty"],
        );
    }

    #[test]
    fn select_columns_keep_the_requested_order() {
        let valid = check(
            Service::Company,
            Purpose::Export,
            &json!({ "select_columns": ["city", "uuid", "extra", "industries"] }),
        )
        .unwrap();
        let names: Vec<_> = valid.select_columns.iter().map(|f| f.name).collect();
        assert_eq!(names, ["city", "uuid", "extra", "industries"]);
    }

    #[test]
    fn duplicate_select_columns_are_rejected() {
        assert_error(
            company(&json!({ "select_columns": ["name", "city", "name"] })),
            ErrorCode::InvalidVql,
            &["'name'", "more than once", "'select_columns'"],
        );
    }

    #[test]
    fn select_columns_must_be_strings() {
        assert_error(
            company(&json!({ "select_columns": ["name", 3] })),
            ErrorCode::InvalidVql,
            &["'select_columns[1]'", "expected a string"],
        );
        assert_error(
            company(&json!({ "select_columns": "name" })),
            ErrorCode::InvalidVql,
            &["'select_columns'", "expected a sequence"],
        );
    }

    // --- order_by -----------------------------------------------------------

    #[test]
    fn uuid_is_appended_as_the_last_tie_breaker() {
        let valid = company(&json!({ "order_by": [
            { "order_by": "employees_count", "order_direction": "desc" },
            { "order_by": "name" }
        ] }))
        .unwrap();
        let c = |name| def(Service::Company, name);
        assert_eq!(
            valid.order_by,
            vec![
                (c("employees_count"), SortDirection::Desc),
                (c("name"), SortDirection::Asc),
                (c("uuid"), SortDirection::Asc),
            ]
        );
    }

    #[test]
    fn a_user_sort_on_uuid_is_kept_and_not_appended_twice() {
        let valid =
            company(&json!({ "order_by": [{ "order_by": "uuid", "order_direction": "desc" }] }))
                .unwrap();
        assert_eq!(
            valid.order_by,
            vec![(def(Service::Company, "uuid"), SortDirection::Desc)]
        );

        let valid = company(&json!({ "order_by": [
            { "order_by": "uuid", "order_direction": "desc" },
            { "order_by": "city" }
        ] }))
        .unwrap();
        let names: Vec<_> = valid.order_by.iter().map(|(f, _)| f.name).collect();
        assert_eq!(names, ["uuid", "city"]);
    }

    #[test]
    fn without_order_by_the_sort_is_uuid_ascending() {
        for query in [json!({}), json!({ "order_by": [] })] {
            let valid = contact(&query).unwrap();
            assert_eq!(
                valid.order_by,
                vec![(def(Service::Contact, "uuid"), SortDirection::Asc)]
            );
        }
    }

    #[test]
    fn order_by_rejects_fields_that_cannot_be_sorted() {
        for (field, kind) in [("industries", "keyword list"), ("extra", "json")] {
            assert_error(
                company(&json!({ "order_by": [{ "order_by": field }] })),
                ErrorCode::InvalidVql,
                &["order_by", &format!("{kind} field '{field}'")],
            );
        }
    }

    #[test]
    fn order_by_rejects_the_same_field_twice() {
        assert_error(
            company(
                &json!({ "order_by": [{ "order_by": "city" }, { "order_by": "city", "order_direction": "desc" }] }),
            ),
            ErrorCode::InvalidVql,
            &["'city'", "more than once", "'order_by'"],
        );
    }

    #[test]
    fn order_direction_must_be_asc_or_desc() {
        assert_error(
            company(&json!({ "order_by": [{ "order_by": "city", "order_direction": "up" }] })),
            ErrorCode::InvalidVql,
            &["invalid vql at 'order_by[0].order_direction': unknown variant `up`, expected `asc` or `desc`"],
        );
    }

    #[test]
    fn an_order_by_entry_needs_its_field() {
        assert_error(
            company(&json!({ "order_by": [{ "order_by": "city" }, { "order_direction": "asc" }] })),
            ErrorCode::InvalidVql,
            &["'order_by[1]'", "missing field `order_by`"],
        );
    }

    // --- limit --------------------------------------------------------------

    #[test]
    fn limit_defaults_to_500_and_accepts_1_to_5000() {
        assert_eq!(company(&json!({})).unwrap().limit, 500);
        assert_eq!(DEFAULT_LIMIT, 500);
        assert_eq!(MAX_LIMIT, 5000);
        assert_eq!(company(&json!({ "limit": 1 })).unwrap().limit, 1);
        assert_eq!(company(&json!({ "limit": 5000 })).unwrap().limit, 5000);
    }

    #[test]
    fn limit_outside_its_bounds_is_rejected_naming_the_bounds() {
        for bad in [0_i64, -1, 5001, i64::MAX] {
            assert_error(
                company(&json!({ "limit": bad })),
                ErrorCode::InvalidVql,
                &["'limit'", "between 1 and 5000", &bad.to_string()],
            );
        }
    }

    #[test]
    fn limit_must_be_a_whole_number() {
        assert_error(
            company(&json!({ "limit": 2.5 })),
            ErrorCode::InvalidVql,
            &["'limit'", "2.5", "expected a whole number"],
        );
        assert_error(
            company(&json!({ "limit": "10" })),
            ErrorCode::InvalidVql,
            &["'limit'", "invalid type"],
        );
        // JSON has no integer type: 470.0 is 470
        assert_eq!(company(&json!({ "limit": 470.0 })).unwrap().limit, 470);
        assert_error(
            company(&json!({ "limit": 1e300 })),
            ErrorCode::InvalidVql,
            &["'limit'", "expected a whole number"],
        );
    }

    // --- search_after -------------------------------------------------------

    #[test]
    fn search_after_needs_one_value_per_sort_field_including_the_uuid() {
        let sorted = |cursor: Value| {
            company(
                &json!({ "order_by": [{ "order_by": "employees_count" }], "search_after": cursor }),
            )
        };
        assert_error(
            sorted(json!([10])),
            ErrorCode::InvalidVql,
            &[
                "'search_after' has 1 value(s)",
                "2 field(s)",
                "employees_count, uuid",
            ],
        );
        assert_error(
            sorted(json!([10, "0b7e4a54-3f0c-4d51-a2b1-5c9d7e1f2a3b", 3])),
            ErrorCode::InvalidVql,
            &["has 3 value(s)"],
        );
        assert_error(
            company(&json!({ "search_after": [] })),
            ErrorCode::InvalidVql,
            &["has 0 value(s)"],
        );
        let valid = sorted(json!([10, "0b7e4a54-3f0c-4d51-a2b1-5c9d7e1f2a3b"])).unwrap();
        assert_eq!(valid.search_after.map(|v| v.len()), Some(2));
    }

    #[test]
    fn search_after_values_are_typed_by_their_sort_field() {
        let query = json!({
            "order_by": [
                { "order_by": "founded_year" },
                { "order_by": "total_funding" },
                { "order_by": "created_at" },
                { "order_by": "name" },
                { "order_by": "city" }
            ],
            "search_after": [1999, 9_000_000_000_i64, "2024-01-31T09:30:00Z", "Acme", null, "0b7e4a54-3f0c-4d51-a2b1-5c9d7e1f2a3b"]
        });
        let valid = company(&query).unwrap();
        assert_eq!(
            valid.search_after,
            Some(vec![
                CursorValue::Int(1999),
                CursorValue::Int(9_000_000_000),
                CursorValue::Timestamp(ts("2024-01-31T09:30:00+00:00")),
                CursorValue::Str("Acme".to_owned()),
                CursorValue::Null,
                CursorValue::Uuid(
                    uuid::Uuid::parse_str("0b7e4a54-3f0c-4d51-a2b1-5c9d7e1f2a3b").unwrap()
                ),
            ])
        );
    }

    #[test]
    fn search_after_values_of_the_wrong_type_are_rejected_naming_the_field() {
        let uuid = "0b7e4a54-3f0c-4d51-a2b1-5c9d7e1f2a3b";
        let cases = [
            (
                "founded_year",
                json!("1999"),
                "integer field 'founded_year'",
            ),
            (
                "founded_year",
                json!(3_000_000_000_i64),
                "integer field 'founded_year'",
            ),
            (
                "annual_revenue",
                json!(1.5),
                "bigint field 'annual_revenue'",
            ),
            (
                "created_at",
                json!(1_700_000_000),
                "timestamp field 'created_at'",
            ),
            ("city", json!(5), "keyword field 'city'"),
            ("name", json!(["Acme"]), "text field 'name'"),
        ];
        for (field, bad, needle) in cases {
            assert_error(
                company(
                    &json!({ "order_by": [{ "order_by": field }], "search_after": [bad, uuid] }),
                ),
                ErrorCode::InvalidVql,
                &["'search_after[0]'", needle, "must be"],
            );
        }
        assert_error(
            company(&json!({ "search_after": ["not-a-uuid"] })),
            ErrorCode::InvalidVql,
            &["'search_after[0]'", "uuid field 'uuid'", "a uuid string"],
        );
    }

    #[test]
    fn search_after_rejects_null_for_fields_that_are_never_null() {
        assert_error(
            company(&json!({ "search_after": [null] })),
            ErrorCode::InvalidVql,
            &["'uuid'", "cannot be null"],
        );
        assert_error(
            contact(
                &json!({ "order_by": [{ "order_by": "created_at" }], "search_after": [null, "0b7e4a54-3f0c-4d51-a2b1-5c9d7e1f2a3b"] }),
            ),
            ErrorCode::InvalidVql,
            &["'created_at'", "cannot be null"],
        );
    }

    #[test]
    fn search_after_must_be_a_list() {
        assert_error(
            company(&json!({ "search_after": "abc" })),
            ErrorCode::InvalidVql,
            &["'search_after'", "expected a sequence"],
        );
    }

    #[test]
    fn cursor_values_written_by_to_json_validate_back_to_the_same_values() {
        let cursor = vec![
            CursorValue::Int(-42),
            CursorValue::Timestamp(ts("2024-05-06T07:08:09.123456+02:00")),
            CursorValue::Str("Ünïcode \"quoted\"".to_owned()),
            CursorValue::Null,
            CursorValue::Uuid(
                uuid::Uuid::parse_str("0B7E4A54-3F0C-4D51-A2B1-5C9D7E1F2A3B").unwrap(),
            ),
        ];
        let json: Vec<Value> = cursor.iter().map(CursorValue::to_json).collect();
        assert_eq!(json[0], json!(-42));
        assert_eq!(json[1], json!("2024-05-06T07:08:09.123456+02:00"));
        assert_eq!(json[3], Value::Null);
        assert_eq!(json[4], json!("0b7e4a54-3f0c-4d51-a2b1-5c9d7e1f2a3b"));
        let query = json!({
            "order_by": [
                { "order_by": "employees_count" },
                { "order_by": "updated_at", "order_direction": "desc" },
                { "order_by": "name" },
                { "order_by": "state" }
            ],
            "search_after": json
        });
        assert_eq!(company(&query).unwrap().search_after, Some(cursor));
    }

    // --- wire shape ---------------------------------------------------------

    #[test]
    fn unknown_keys_are_rejected_at_every_level() {
        let cases = [
            (json!({ "wehre": {} }), "at 'wehre': unknown field `wehre`"),
            (
                where_(json!({ "keyword": {} })),
                "at 'where.keyword': unknown field `keyword`",
            ),
            (
                where_(json!({ "keyword_match": { "should": {} } })),
                "at 'where.keyword_match.should': unknown field `should`",
            ),
            (
                where_(json!({ "range_query": { "must": { "founded_year": { "eq": 1 } } } })),
                "at 'where.range_query.must.founded_year.eq': unknown field `eq`",
            ),
            (
                json!({ "order_by": [{ "order_by": "city", "direction": "asc" }] }),
                "at 'order_by[0].direction': unknown field `direction`",
            ),
        ];
        for (query, needle) in cases {
            assert_error(company(&query), ErrorCode::InvalidVql, &[needle]);
        }
    }

    #[test]
    fn errors_name_the_path_of_the_bad_value() {
        assert_error(
            company(&where_(json!({ "keyword_match": { "should": {} } }))),
            ErrorCode::InvalidVql,
            &["invalid vql at 'where.keyword_match.should': unknown field `should`, expected `must` or `must_not`"],
        );
        assert_error(
            company(&where_(
                json!({ "range_query": { "must": { "founded_year": 1999 } } }),
            )),
            ErrorCode::InvalidVql,
            &[
                "'where.range_query.must.founded_year'",
                "'gt', 'gte', 'lt' and/or 'lte'",
            ],
        );
    }

    #[test]
    fn wrong_json_types_are_rejected() {
        let cases = [
            (where_(json!([])), "'where'"),
            (
                where_(json!({ "keyword_match": "country" })),
                "'where.keyword_match'",
            ),
            (
                where_(json!({ "text_match": { "must": ["title"] } })),
                "'where.text_match.must'",
            ),
            (json!({ "order_by": { "order_by": "city" } }), "'order_by'"),
            (json!({ "order_by": ["city"] }), "'order_by[0]'"),
        ];
        for (query, path) in cases {
            assert_error(
                company(&query),
                ErrorCode::InvalidVql,
                &[path, "invalid type"],
            );
        }
    }

    #[test]
    fn a_query_that_is_not_an_object_is_rejected() {
        for (value, kind) in [
            (json!([]), "an array"),
            (json!(null), "null"),
            (json!("q"), "a string"),
        ] {
            let err = parse_vql(&value).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidVql);
            assert!(
                err.message.contains("json object") && err.message.contains(kind),
                "{}",
                err.message
            );
        }
    }

    #[test]
    fn null_top_level_keys_mean_absent() {
        let valid = company(&json!({ "where": null, "select_columns": null, "order_by": null, "limit": null, "search_after": null }))
            .unwrap();
        assert_eq!(valid, company(&json!({})).unwrap());
    }

    #[test]
    fn errors_display_with_their_code() {
        let err = parse_vql(&json!({ "select_columns": ["nope"] }))
            .unwrap()
            .validate(Service::Contact, Purpose::Export)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "ERR_UNKNOWN_FIELD: unknown field 'nope' for service 'contact' in 'select_columns'"
        );
    }

    #[test]
    fn sort_direction_names_match_the_wire() {
        assert_eq!(SortDirection::Asc.as_str(), "asc");
        assert_eq!(SortDirection::Desc.as_str(), "desc");
        assert_eq!(
            serde_json::to_value(SortDirection::Desc).unwrap(),
            json!("desc")
        );
    }

    #[test]
    fn arrays_are_not_accepted_in_place_of_objects() {
        // Serde's derived structs would otherwise read an array by position.
        let cases = [
            (
                where_(json!([])),
                "'where'",
                "'keyword_match', 'text_match' and/or 'range_query'",
            ),
            (
                where_(json!({ "keyword_match": [{ "country": ["USA"] }] })),
                "'where.keyword_match'",
                "'must' and/or 'must_not'",
            ),
            (
                where_(json!({ "range_query": { "must": { "founded_year": [1990, 2000] } } })),
                "'where.range_query.must.founded_year'",
                "'gt', 'gte', 'lt' and/or 'lte'",
            ),
            (
                json!({ "order_by": [["city", "desc"]] }),
                "'order_by[0]'",
                "'order_by' and an optional 'order_direction'",
            ),
        ];
        for (query, path, expected) in cases {
            assert_error(
                company(&query),
                ErrorCode::InvalidVql,
                &[path, "invalid type: sequence", expected],
            );
        }
    }

    #[test]
    fn plain_serde_deserialization_applies_the_same_shape_rules() {
        // A job_data struct that embeds VqlQuery goes through serde directly.
        let err = serde_json::from_value::<VqlQuery>(json!({ "where": [] })).unwrap_err();
        assert!(err.to_string().contains("invalid type: sequence"), "{err}");
        let err =
            serde_json::from_value::<VqlQuery>(json!({ "limit": 5, "extra": 1 })).unwrap_err();
        assert!(err.to_string().contains("unknown field `extra`"), "{err}");
        // and so does a streaming deserializer, as when job_data is read from text
        let err =
            serde_json::from_str::<VqlQuery>(r#"{ "order_by": [["city", "desc"]] }"#).unwrap_err();
        assert!(
            err.to_string()
                .contains("invalid type: sequence, expected an object with 'order_by'"),
            "{err}"
        );
        let parsed: VqlQuery = serde_json::from_str(
            r#"{ "where": { "text_match": { "must": { "title": "cto" } } } }"#,
        )
        .unwrap();
        assert_eq!(
            parsed
                .where_
                .and_then(|w| w.text_match)
                .and_then(|t| t.must),
            Some(BTreeMap::from([("title".to_owned(), "cto".to_owned())]))
        );
        let parsed: VqlQuery = serde_json::from_value(json!({ "limit": 5 })).unwrap();
        assert_eq!(
            parsed,
            VqlQuery {
                limit: Some(5),
                ..VqlQuery::default()
            }
        );
    }
}
