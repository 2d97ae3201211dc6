//! `jobs.status` between Rust and SQL.
//!
//! Reading: [`StatusColumn`] turns the text column into a [`JobStatus`], and
//! a status the enum does not know is an error. Writing: the statements in
//! [`crate::jobs`] are generated from tables of [`Transition`]s (see
//! [`crate::jobs::moves`]) with the helpers here, so no status is spelled
//! out in SQL text.

use connectra_domain::job::{JobStatus, Transition};
use diesel::deserialize::{self, FromSql, FromSqlRow};
use diesel::pg::{Pg, PgValue};
use diesel::sql_types::Text;

/// How diesel reads `jobs.status`. `JobStatus` lives in the domain crate,
/// which knows nothing of diesel, so the orphan rule wants this wrapper:
/// use it as `#[diesel(deserialize_as = StatusColumn)]` on a `JobStatus` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromSqlRow)]
pub struct StatusColumn(pub JobStatus);

impl FromSql<Text, Pg> for StatusColumn {
    fn from_sql(value: PgValue<'_>) -> deserialize::Result<Self> {
        let text = std::str::from_utf8(value.as_bytes())?;
        JobStatus::ALL
            .into_iter()
            .find(|s| s.as_str() == text)
            .map(StatusColumn)
            .ok_or_else(|| format!("jobs.status holds '{text}', which is not a job status").into())
    }
}

impl From<StatusColumn> for JobStatus {
    fn from(column: StatusColumn) -> Self {
        column.0
    }
}

/// `'open'`: a status as an SQL literal. Statuses are fixed lower-case names,
/// so quoting them needs no escaping. They are inlined rather than bound so
/// that the planner sees them and uses the partial indexes on status.
pub(crate) fn literal(status: JobStatus) -> String {
    format!("'{}'", status.as_str())
}

/// `status IN ('in_queue', 'processing')`, or `status = 'open'` for one status.
/// `column` is the (possibly qualified) column, e.g. `j.status`.
///
/// # Panics
///
/// When `statuses` is empty: a condition that matches no status is a mistake
/// in a table, found by the first test that runs the statement.
pub(crate) fn is_one_of(column: &str, statuses: impl IntoIterator<Item = JobStatus>) -> String {
    let mut names: Vec<String> = statuses.into_iter().map(literal).collect();
    names.dedup();
    assert!(!names.is_empty(), "a status condition needs a status");
    if names.len() == 1 {
        format!("{column} = {}", names[0])
    } else {
        format!("{column} IN ({})", names.join(", "))
    }
}

/// The statuses `moves` start from.
pub(crate) fn sources(moves: &[Transition]) -> impl Iterator<Item = JobStatus> + '_ {
    moves.iter().map(|t| t.from())
}

/// The statuses from which `moves` lead to `to`.
pub(crate) fn sources_of(
    moves: &[Transition],
    to: JobStatus,
) -> impl Iterator<Item = JobStatus> + '_ {
    moves.iter().filter(move |t| t.to() == to).map(|t| t.from())
}

/// The statuses with `pred`, e.g. [`JobStatus::is_leased`].
pub(crate) fn statuses(pred: fn(JobStatus) -> bool) -> impl Iterator<Item = JobStatus> {
    JobStatus::ALL.into_iter().filter(move |s| pred(*s))
}

/// `CASE status WHEN 'in_queue' THEN 'open' … END`: the new status of a row
/// that `moves` applies to. Rows outside `sources(moves)` get NULL, which the
/// NOT NULL column refuses, so every statement also filters on the sources.
pub(crate) fn next_status(column: &str, moves: &[Transition]) -> String {
    let arms: Vec<String> = moves
        .iter()
        .map(|t| format!("WHEN {} THEN {}", literal(t.from()), literal(t.to())))
        .collect();
    format!("CASE {column} {} END", arms.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use JobStatus::*;

    #[test]
    fn conditions_and_cases_name_the_tables_statuses() {
        assert_eq!(is_one_of("status", [Open]), "status = 'open'");
        assert_eq!(
            is_one_of("j.status", statuses(JobStatus::is_running)),
            "j.status IN ('processing', 'retrying')"
        );
        let moves = [
            Transition::new(InQueue, Open),
            Transition::new(RetryInQueued, Failed),
        ];
        assert_eq!(
            next_status("status", &moves),
            "CASE status WHEN 'in_queue' THEN 'open' WHEN 'retry_in_queued' THEN 'failed' END"
        );
        assert_eq!(
            sources_of(&moves, Failed).collect::<Vec<_>>(),
            [RetryInQueued]
        );
        assert_eq!(
            sources(&moves).collect::<Vec<_>>(),
            [InQueue, RetryInQueued]
        );
    }
}
