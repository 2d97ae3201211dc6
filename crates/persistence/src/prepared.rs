//! Statements that each connection prepares once and runs again: the
//! runner's hot statements (claim, start, lease renewal, completion), run
//! thousands of times a second with the same text.
//!
//! `diesel::sql_query` is never kept prepared (diesel cannot know that its
//! text is not built anew each time), so every run was parsed, analysed and
//! planned again: 12 % of the database's time under `runner_bench`. A
//! [`Prepared`] statement is plain SQL with `$n` placeholders, like an
//! `sql_query`, whose binds diesel places in its own AST pass; its text is
//! fixed per statement, so diesel-async's per-connection statement cache
//! keeps it prepared (keyed by the text and the bind types).

use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{Array, BigInt, Double, Integer, Jsonb, Text, Untyped};
use diesel::QueryResult;
use serde_json::Value;

/// One bind value of a [`Prepared`] statement, with its SQL type.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Bind<'a> {
    Text(&'a str),
    Double(f64),
    BigInt(i64),
    Texts(&'a [String]),
    BigInts(&'a [i64]),
    Integers(&'a [i32]),
    Jsonbs(&'a [Value]),
}

impl<'a> Bind<'a> {
    /// The bind's SQL type, as `PREPARE` names it.
    #[cfg(test)]
    fn sql_type(&self) -> &'static str {
        match self {
            Bind::Text(_) => "text",
            Bind::Double(_) => "float8",
            Bind::BigInt(_) => "int8",
            Bind::Texts(_) => "text[]",
            Bind::BigInts(_) => "int8[]",
            Bind::Integers(_) => "int4[]",
            Bind::Jsonbs(_) => "jsonb[]",
        }
    }

    /// The bind's value as an SQL literal (for `EXECUTE`).
    #[cfg(test)]
    fn literal(&self) -> String {
        fn quoted(s: &str) -> String {
            format!("'{}'", s.replace('\'', "''"))
        }
        fn array<T: ToString>(items: &[T], ty: &str) -> String {
            let items: Vec<String> = items.iter().map(|i| quoted(&i.to_string())).collect();
            format!("ARRAY[{}]::{ty}", items.join(", "))
        }
        match self {
            Bind::Text(v) => quoted(v),
            Bind::Double(v) => format!("{v}::float8"),
            Bind::BigInt(v) => format!("{v}::int8"),
            Bind::Texts(v) => array(v, "text[]"),
            Bind::BigInts(v) => array(v, "int8[]"),
            Bind::Integers(v) => array(v, "int4[]"),
            Bind::Jsonbs(v) => array(v, "jsonb[]"),
        }
    }

    fn push<'b>(&'b self, out: &mut AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        match self {
            Bind::Text(v) => out.push_bind_param::<Text, _>(v),
            Bind::Double(v) => out.push_bind_param::<Double, _>(v),
            Bind::BigInt(v) => out.push_bind_param::<BigInt, _>(v),
            Bind::Texts(v) => out.push_bind_param::<Array<Text>, _>(v),
            Bind::BigInts(v) => out.push_bind_param::<Array<BigInt>, _>(v),
            Bind::Integers(v) => out.push_bind_param::<Array<Integer>, _>(v),
            Bind::Jsonbs(v) => out.push_bind_param::<Array<Jsonb>, _>(v),
        }
    }
}

/// SQL with `$1`, `$2`, … placeholders (each may appear more than once)
/// and its binds, `binds[n - 1]` for `$n`.
#[derive(Debug, Clone)]
pub(crate) struct Prepared<'a> {
    sql: String,
    binds: Vec<Bind<'a>>,
}

impl<'a> Prepared<'a> {
    pub(crate) fn new(sql: String, binds: Vec<Bind<'a>>) -> Self {
        Self { sql, binds }
    }

    /// The same statement under `EXPLAIN (ANALYZE, FORMAT JSON)`: run, and
    /// answering with its plan (a custom plan, for these values).
    #[cfg(test)]
    pub(crate) fn explained(self) -> Self {
        Self {
            sql: format!("EXPLAIN (ANALYZE, FORMAT JSON) {}", self.sql),
            binds: self.binds,
        }
    }

    /// The statement `PREPARE`d as `name`, and an `EXPLAIN (ANALYZE,
    /// FORMAT JSON) EXECUTE` of it with these values: under
    /// `plan_cache_mode = force_generic_plan`, the plan that a connection
    /// that keeps the statement prepared may settle on, whatever the values.
    #[cfg(test)]
    pub(crate) fn prepare_and_explain(&self, name: &str) -> (String, String) {
        let types: Vec<&str> = self.binds.iter().map(Bind::sql_type).collect();
        let values: Vec<String> = self.binds.iter().map(Bind::literal).collect();
        (
            format!("PREPARE {name} ({}) AS {}", types.join(", "), self.sql),
            format!(
                "EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE {name} ({})",
                values.join(", ")
            ),
        )
    }
}

/// The pieces of `sql` between placeholders, each with the bind number
/// (1-based) that follows it, and the text after the last one. A `$` not
/// followed by digits is text.
fn pieces(sql: &str) -> (Vec<(&str, usize)>, &str) {
    let mut out = Vec::new();
    let mut rest = sql;
    let mut from = 0;
    while let Some(at) = rest[from..].find('$').map(|i| from + i) {
        let digits = rest[at + 1..]
            .bytes()
            .take_while(u8::is_ascii_digit)
            .count();
        match rest[at + 1..at + 1 + digits].parse::<usize>() {
            Ok(n) => {
                out.push((&rest[..at], n));
                rest = &rest[at + 1 + digits..];
                from = 0;
            }
            Err(_) => from = at + 1,
        }
    }
    (out, rest)
}

impl QueryFragment<Pg> for Prepared<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        let (pieces, tail) = pieces(&self.sql);
        for (text, n) in pieces {
            out.push_sql(text);
            let bind = n
                .checked_sub(1)
                .and_then(|i| self.binds.get(i))
                .ok_or_else(|| {
                    diesel::result::Error::QueryBuilderError(
                        format!("${n} has no bind value ({} given)", self.binds.len()).into(),
                    )
                })?;
            bind.push(&mut out)?;
        }
        out.push_sql(tail);
        Ok(())
    }
}

impl QueryId for Prepared<'_> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl Query for Prepared<'_> {
    type SqlType = Untyped;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn placeholders_split_the_text_and_name_their_binds() {
        let (split, tail) = pieces("SELECT $1, $12 || '$x', $1 WHERE a = $2");
        assert_eq!(
            split,
            [
                ("SELECT ", 1),
                (", ", 12),
                (" || '$x', ", 1),
                (" WHERE a = ", 2)
            ]
        );
        assert_eq!(tail, "");
        let (none, all) = pieces("SELECT 1");
        assert!(none.is_empty());
        assert_eq!(all, "SELECT 1");
    }

    fn sql_of(q: &Prepared<'_>) -> QueryResult<String> {
        let mut qb = diesel::pg::PgQueryBuilder::default();
        q.to_sql(&mut qb, &Pg)?;
        Ok(diesel::query_builder::QueryBuilder::finish(qb))
    }

    #[test]
    fn each_placeholder_becomes_a_bind_of_its_own() {
        let q = Prepared::new(
            "SELECT $1, $2 || '$x', $1".into(),
            vec![Bind::BigInt(1), Bind::Text("a")],
        );
        assert_eq!(sql_of(&q).unwrap(), "SELECT $1, $2 || '$x', $3");
    }

    #[test]
    fn a_placeholder_without_its_bind_is_an_error_not_a_panic() {
        let q = Prepared::new("SELECT $1, $2".into(), vec![Bind::BigInt(1)]);
        let err = sql_of(&q).unwrap_err().to_string();
        assert!(err.contains("$2 has no bind value"), "{err}");
        let zero = Prepared::new("SELECT $0".into(), vec![Bind::BigInt(1)]);
        assert!(sql_of(&zero).is_err());
    }
}
