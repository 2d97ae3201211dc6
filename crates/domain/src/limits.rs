//! The limits every value must fit, defined once: an import applies them to
//! each cell before any write, VQL validation to each query value, and the
//! search backends build their mappings and sorts from them, so PostgreSQL
//! and the search index always accept, match and sort the same rows.
//!
//! Why these numbers:
//! - PostgreSQL `text` and `jsonb` cannot hold the NUL character (0x00).
//! - A Lucene term (an OpenSearch `keyword` value) is at most 32,766 bytes.
//!   Keyword values are lower-cased when indexed, which can grow a character
//!   from 2 to 3 bytes, so [`MAX_KEYWORD_BYTES`] keeps even a fully grown
//!   value well inside that.
//! - A text field's `.keyword` sub-field (exact match, sort) ignores values
//!   longer than [`TEXT_KEYWORD_MAX_CHARS`] characters (OpenSearch
//!   `ignore_above` counts characters): 8,191 characters of at most 4 bytes
//!   each stay under 32,766 bytes. The full text is still stored, exported
//!   and found by `text_match`.
//! - A `filters_data` row is indexed by a btree, whose entries are limited
//!   to about 2,700 bytes; [`MAX_FILTER_VALUE_BYTES`] keeps well under it.
//! - OpenSearch limits a `terms` query to 65,536 values and a query to 1,024
//!   boolean clauses; [`MAX_KEYWORD_VALUES`] and [`MAX_TEXT_TERMS`] keep well
//!   below both.

/// The longest keyword value (including each element of a keyword list), in
/// bytes of UTF-8. A longer cell rejects its row; a longer `keyword_match`
/// value is a 400.
pub const MAX_KEYWORD_BYTES: usize = 8_191;

/// Values of text fields longer than this many characters are stored, found
/// by `text_match` and exported, but not matched by `keyword_match` and
/// sorted as if missing (last), on both backends.
pub const TEXT_KEYWORD_MAX_CHARS: usize = 8_191;

/// Filter values longer than this (in bytes) are not added to `filters_data`;
/// an import counts the rows that had one (`rows_filter_values_skipped`).
pub const MAX_FILTER_VALUE_BYTES: usize = 1_024;

/// How many values all the `keyword_match` lists of one query may hold.
pub const MAX_KEYWORD_VALUES: usize = 1_000;

/// How many terms (whitespace-separated words) all the `text_match` values
/// of one query may hold.
pub const MAX_TEXT_TERMS: usize = 256;

/// The longest `/common/filters` prefix, in bytes.
pub const MAX_FILTER_PREFIX_BYTES: usize = MAX_FILTER_VALUE_BYTES;

/// The bounds of a job's `retry_count`.
pub const MAX_RETRY_COUNT: i32 = 100;
/// The bounds of a job's `retry_interval`, in seconds: 1 s to 7 days.
pub const MIN_RETRY_INTERVAL_SECS: i32 = 1;
pub const MAX_RETRY_INTERVAL_SECS: i32 = 7 * 24 * 3600;

/// How many characters of a cell a rejection reason quotes.
pub const MAX_QUOTED_CHARS: usize = 200;

/// A cell as a rejection reason quotes it: `'value'`, or its first
/// [`MAX_QUOTED_CHARS`] characters and its length when it is longer, so that
/// a report of many bad rows stays small.
pub fn quote_cell(value: &str) -> String {
    match value.char_indices().nth(MAX_QUOTED_CHARS) {
        None => format!("'{value}'"),
        Some((cut, _)) => format!("'{}…' ({} bytes)", &value[..cut], value.len()),
    }
}

/// Whether `s` holds the NUL character, which PostgreSQL text cannot store.
/// A JSON number as a whole number: `3` and `3.0` (JSON has no integer type),
/// not `3.5` nor a float too large to be exact.
pub fn whole_number(n: &serde_json::Number) -> Option<i64> {
    n.as_i64().or_else(|| {
        n.as_f64()
            .filter(|f| f.fract() == 0.0 && f.abs() < 1e15)
            .map(|f| f as i64)
    })
}

pub fn has_nul(s: &str) -> bool {
    s.as_bytes().contains(&0)
}

/// Whether any string in a JSON value (keys included) holds a NUL character,
/// which `jsonb` cannot store even escaped as `\u0000`.
pub fn json_has_nul(value: &serde_json::Value) -> bool {
    use serde_json::Value;
    match value {
        Value::String(s) => has_nul(s),
        Value::Array(items) => items.iter().any(json_has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| has_nul(k) || json_has_nul(v)),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

/// `s` as PostgreSQL text can hold it: each NUL replaced by U+FFFD, as
/// invalid UTF-8 is. For reports and messages, never for record values
/// (a record with a NUL is rejected instead).
pub fn storable(s: &str) -> std::borrow::Cow<'_, str> {
    if has_nul(s) {
        std::borrow::Cow::Owned(s.replace('\0', "\u{FFFD}"))
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

/// Whether a text value is short enough for its `.keyword` sub-field.
pub fn text_is_keyword_sized(value: &str) -> bool {
    // byte length bounds character count from above: the cheap test first
    value.len() <= TEXT_KEYWORD_MAX_CHARS || value.chars().count() <= TEXT_KEYWORD_MAX_CHARS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_cells_are_quoted_short() {
        assert_eq!(quote_cell("abc"), "'abc'");
        let long = "é".repeat(40_000);
        let q = quote_cell(&long);
        assert!(q.starts_with(&format!("'{}…'", "é".repeat(MAX_QUOTED_CHARS))));
        assert!(q.ends_with("(80000 bytes)"), "{q}");
        assert!(q.chars().count() < MAX_QUOTED_CHARS + 30);
    }

    #[test]
    fn nul_is_found_in_strings_and_in_json_keys_and_values() {
        assert!(has_nul("a\0b"));
        assert!(!has_nul("ab"));
        let j: serde_json::Value =
            serde_json::from_str(r#"{"a": [1, {"b\u0000": 2}]}"#).expect("valid JSON");
        assert!(json_has_nul(&j));
        let j: serde_json::Value =
            serde_json::from_str(r#"{"a": [1, {"b": "x\u0000"}]}"#).expect("valid JSON");
        assert!(json_has_nul(&j));
        let j: serde_json::Value =
            serde_json::from_str(r#"{"a": [1, {"b": "x"}]}"#).expect("valid JSON");
        assert!(!json_has_nul(&j));
        assert_eq!(storable("a\0b"), "a\u{FFFD}b");
        assert!(matches!(storable("ab"), std::borrow::Cow::Borrowed("ab")));
    }

    #[test]
    fn the_keyword_limits_fit_a_lucene_term_even_lower_cased() {
        // a lower-cased character grows by at most half (2 → 3 bytes)
        const { assert!(MAX_KEYWORD_BYTES * 3 / 2 < 32_766) };
        const { assert!(TEXT_KEYWORD_MAX_CHARS * 4 <= 32_766) };
        const { assert!(MAX_FILTER_VALUE_BYTES < 2_700) };
        assert!(text_is_keyword_sized(&"ß".repeat(TEXT_KEYWORD_MAX_CHARS)));
        assert!(!text_is_keyword_sized(
            &"a".repeat(TEXT_KEYWORD_MAX_CHARS + 1)
        ));
    }
}
