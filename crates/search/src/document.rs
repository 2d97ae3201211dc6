//! What both backends share: case folding, millisecond timestamps, the
//! document shape of a result, and the cursor checks.

use connectra_domain::catalogue::{FieldDef, FieldKind};
use connectra_domain::vql::{CursorValue, ValidQuery};
use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime, UtcOffset};

use crate::{Document, SearchError};

/// Lower-cases `text` one character at a time, with Unicode's simple
/// (one-to-one) mapping: what OpenSearch's `lowercase` normalizer (Java's
/// `Character.toLowerCase`) and PostgreSQL's `lower()` under a UTF-8 locale
/// do. Unlike [`str::to_lowercase`] it never changes the length in
/// characters: `İ` becomes `i`, and a final `Σ` becomes `σ`.
pub fn fold_case(text: &str) -> String {
    text.chars()
        .map(|c| c.to_lowercase().next().unwrap_or(c))
        .collect()
}

/// Milliseconds since the epoch, rounded down: what OpenSearch's `date`
/// type keeps of a timestamp.
pub(crate) fn epoch_millis(t: OffsetDateTime) -> i64 {
    let millis = t.unix_timestamp_nanos().div_euclid(1_000_000);
    // An OffsetDateTime spans about ±10^4 years: far inside i64 milliseconds.
    i64::try_from(millis).unwrap_or(if millis < 0 { i64::MIN } else { i64::MAX })
}

/// The timestamp at `millis` since the epoch, in UTC.
pub(crate) fn from_epoch_millis(millis: i64) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000).ok()
}

/// `t` rounded down to the millisecond, in UTC.
pub(crate) fn floor_millis(t: OffsetDateTime) -> OffsetDateTime {
    from_epoch_millis(epoch_millis(t)).unwrap_or(t)
}

/// One millisecond.
pub(crate) const MILLISECOND: Duration = Duration::milliseconds(1);

/// `t` as RFC 3339 in UTC (`…Z`), the one timestamp format of results and
/// cursors.
pub(crate) fn format_timestamp(t: OffsetDateTime) -> String {
    // a value outside UTC's years (never one VQL validation passes) keeps its offset
    let utc = t.checked_to_offset(UtcOffset::UTC).unwrap_or(t);
    utc.format(&Rfc3339).unwrap_or_else(|_| utc.to_string())
}

/// `t` in UTC with all nine fraction digits, for OpenSearch range bounds.
/// OpenSearch rounds a `gt` or `lte` date bound *up* over the fields it
/// omits (`lte 23:00:00Z` means `lte 23:00:00.999`); with every field
/// present nothing is rounded, and the bound is just cut to milliseconds.
pub(crate) fn format_timestamp_full(t: OffsetDateTime) -> String {
    let utc = t.checked_to_offset(UtcOffset::UTC).unwrap_or(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z",
        utc.year(),
        u8::from(utc.month()),
        utc.day(),
        utc.hour(),
        utc.minute(),
        utc.second(),
        utc.nanosecond()
    )
}

pub(crate) fn parse_timestamp(text: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(text, &Rfc3339).ok()
}

/// A result row: exactly `columns`, in that order, each value in the
/// document typing (timestamps RFC 3339 UTC, uuids lower-case, lists as
/// arrays, `null` when missing), whatever shape `source` stored them in.
pub(crate) fn project(
    columns: &[&'static FieldDef],
    source: &serde_json::Map<String, Value>,
) -> Document {
    let mut doc = Document::new();
    for field in columns {
        let value = source.get(field.name).cloned().unwrap_or(Value::Null);
        doc.insert(field.name.to_owned(), normalise_value(field, value));
    }
    doc
}

fn normalise_value(field: &FieldDef, value: Value) -> Value {
    match (field.kind, value) {
        (FieldKind::Timestamp, Value::String(text)) => match parse_timestamp(&text) {
            Some(t) => Value::String(format_timestamp(t)),
            None => Value::String(text),
        },
        (FieldKind::Timestamp, Value::Number(n)) => match n.as_i64().and_then(from_epoch_millis) {
            Some(t) => Value::String(format_timestamp(t)),
            None => Value::Number(n),
        },
        (FieldKind::Uuid, Value::String(text)) => Value::String(text.to_ascii_lowercase()),
        (FieldKind::KeywordList, Value::String(text)) => Value::Array(vec![Value::String(text)]),
        (_, other) => other,
    }
}

/// Checks that `query.search_after`, if any, has one value per sort field,
/// each of the field's type (`null` only for nullable fields), as
/// [`connectra_domain::vql::VqlQuery::validate`] guarantees.
pub(crate) fn check_cursor(query: &ValidQuery) -> Result<(), SearchError> {
    let Some(cursor) = &query.search_after else {
        return Ok(());
    };
    if cursor.len() != query.order_by.len() {
        return Err(SearchError::InvalidQuery(format!(
            "search_after has {} value(s) but the sort has {} field(s)",
            cursor.len(),
            query.order_by.len()
        )));
    }
    for (value, (field, _)) in cursor.iter().zip(&query.order_by) {
        let fits = match value {
            CursorValue::Null => field.nullable(),
            CursorValue::Int(n) => match field.kind {
                FieldKind::Integer => i32::try_from(*n).is_ok(),
                FieldKind::BigInt => true,
                _ => false,
            },
            CursorValue::Str(_) => matches!(field.kind, FieldKind::Keyword | FieldKind::Text),
            CursorValue::Uuid(_) => field.kind == FieldKind::Uuid,
            CursorValue::Timestamp(_) => field.kind == FieldKind::Timestamp,
        };
        if !fits || !field.sortable() {
            return Err(SearchError::InvalidQuery(format!(
                "search_after value {} does not fit the {} sort field '{}'",
                value.to_json(),
                field.kind,
                field.name
            )));
        }
    }
    Ok(())
}

/// The wire form of a cursor.
pub(crate) fn cursor_json(values: &[CursorValue]) -> Vec<Value> {
    values.iter().map(CursorValue::to_json).collect()
}

/// A sort value as a backend returns it (timestamps as epoch milliseconds)
/// turned into the typed cursor value of its field.
pub(crate) fn cursor_from_sort_value(
    backend: &'static str,
    field: &FieldDef,
    value: &Value,
) -> Result<CursorValue, SearchError> {
    let bad = || {
        SearchError::protocol(
            backend,
            format!(
                "sort value {value} for {} field '{}'",
                field.kind, field.name
            ),
        )
    };
    if value.is_null() {
        return Ok(CursorValue::Null);
    }
    match field.kind {
        FieldKind::Integer | FieldKind::BigInt => {
            value.as_i64().map(CursorValue::Int).ok_or_else(bad)
        }
        FieldKind::Keyword | FieldKind::Text => value
            .as_str()
            .map(|s| CursorValue::Str(s.to_owned()))
            .ok_or_else(bad),
        FieldKind::Uuid => value
            .as_str()
            .and_then(|s| uuid::Uuid::parse_str(s).ok())
            .map(CursorValue::Uuid)
            .ok_or_else(bad),
        FieldKind::Timestamp => value
            .as_i64()
            .and_then(from_epoch_millis)
            .map(CursorValue::Timestamp)
            .ok_or_else(bad),
        FieldKind::KeywordList | FieldKind::Json => Err(bad()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use connectra_domain::catalogue::field;
    use connectra_domain::Service;
    use serde_json::json;

    #[test]
    fn fold_case_maps_one_character_to_one() {
        assert_eq!(fold_case("ÜBER Straße"), "über straße");
        assert_eq!(fold_case("İSTANBUL"), "istanbul");
        assert_eq!(fold_case("ΣΑΣ"), "σασ");
        assert_eq!(fold_case("usa"), "usa");
    }

    #[test]
    fn millis_round_down_also_before_1970() {
        let t = parse_timestamp("2024-01-01T00:00:00.123999Z").unwrap();
        assert_eq!(epoch_millis(t), 1_704_067_200_123);
        let t = parse_timestamp("1969-12-31T23:59:59.9995Z").unwrap();
        assert_eq!(epoch_millis(t), -1);
        assert_eq!(
            format_timestamp(floor_millis(t)),
            "1969-12-31T23:59:59.999Z"
        );
        assert_eq!(
            format_timestamp(from_epoch_millis(1_704_067_200_120).unwrap()),
            "2024-01-01T00:00:00.12Z"
        );
    }

    #[test]
    fn timestamps_are_written_in_utc() {
        let t = parse_timestamp("2024-05-06T07:08:09.5+02:00").unwrap();
        assert_eq!(format_timestamp(t), "2024-05-06T05:08:09.5Z");
        assert_eq!(format_timestamp_full(t), "2024-05-06T05:08:09.500000000Z");
        let t = parse_timestamp("0999-01-02T03:04:05Z").unwrap();
        assert_eq!(format_timestamp_full(t), "0999-01-02T03:04:05.000000000Z");
    }

    #[test]
    fn project_keeps_the_columns_in_order_and_types_values() {
        let f = |n| field(Service::Company, n).unwrap();
        let source = json!({
            "created_at": "2024-05-06T07:08:09.123456+02:00",
            "uuid": "0B7E4A54-3F0C-4D51-A2B1-5C9D7E1F2A3B",
            "industries": "Software",
            "employees_count": 12,
            "name": "Acme"
        });
        let doc = project(
            &[
                f("uuid"),
                f("employees_count"),
                f("industries"),
                f("created_at"),
                f("city"),
            ],
            source.as_object().unwrap(),
        );
        assert_eq!(
            Value::Object(doc),
            json!({
                "uuid": "0b7e4a54-3f0c-4d51-a2b1-5c9d7e1f2a3b",
                "employees_count": 12,
                "industries": ["Software"],
                "created_at": "2024-05-06T05:08:09.123456Z",
                "city": null
            })
        );
    }
}
