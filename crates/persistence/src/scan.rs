//! Reading the record tables whole, for a rebuild of the search index
//! (`reindex_search`): keyset pages in uuid order (bounded memory), the
//! rows changed since a version mark, `(uuid, version)` pairs for the
//! verification, and the wait that makes a mark safe to use.
//!
//! **Marks.** Every write gives its row `version = nextval('record_version_seq')`
//! in the same statement, but a transaction that took a version may commit
//! long after (an import batch stays open while its documents are indexed).
//! [`RecordScanner::settle`] reads the sequence's current value `M` and then
//! waits until every transaction of this database that was running when `M`
//! was read has ended. Afterwards, every row version `<= M` is final: its
//! transaction committed (the row is visible to every later statement) or
//! rolled back (it never will be). A transaction that took a version before
//! `M` was read was running then (or had already ended), so the wait covers
//! it. Transactions are tracked by their *virtual* transaction ids
//! (`pg_locks`), which every transaction holds from its start: a snapshot's
//! list of in-progress xids (`pg_current_snapshot()`) would miss a
//! transaction that took its version before it was assigned an xid.

use std::time::Duration;

use connectra_domain::Service;
use tokio_postgres::{Client, NoTls};
use uuid::Uuid;

use crate::records::{StoredRecord, STORED_COLUMNS};
use crate::Result;

/// How long one statement of the scanner may run.
const STATEMENT_TIMEOUT: &str = "300s";
/// How often [`RecordScanner::settle`] looks whether the transactions it
/// waits for have ended.
const SETTLE_POLL: Duration = Duration::from_millis(100);

/// Why [`RecordScanner::settle`] gave up.
#[derive(Debug, thiserror::Error)]
pub enum SettleError {
    #[error(transparent)]
    Database(#[from] crate::Error),
    /// Transactions older than the mark were still open after the bound.
    #[error(
        "{count} transaction(s) of this database were still open after {waited:?} (pids {pids}); \
         a rebuild waits for every transaction that may have written a record to end"
    )]
    TimedOut {
        count: usize,
        waited: Duration,
        pids: String,
    },
    /// The caller's stop signal fired.
    #[error("stopped while waiting for open transactions to end")]
    Stopped,
}

/// A dedicated connection that reads the record tables for a rebuild.
#[derive(Debug)]
pub struct RecordScanner {
    client: Client,
}

impl RecordScanner {
    /// Opens a connection of its own (statements bounded by
    /// [`STATEMENT_TIMEOUT`]).
    pub async fn connect(database_url: &str) -> Result<Self> {
        let (client, connection) =
            tokio_postgres::connect(&crate::connection_url(database_url), NoTls).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "scan connection closed with an error");
            }
        });
        client
            .batch_execute(&format!("SET statement_timeout = '{STATEMENT_TIMEOUT}'"))
            .await?;
        Ok(Self { client })
    }

    /// Takes the session-level advisory lock that only one rebuild of
    /// `service` holds at a time; `false` when another session holds it. It
    /// is released when this scanner's connection closes.
    pub async fn try_lock_rebuild(&self, service: Service) -> Result<bool> {
        let key: i64 = match service {
            Service::Contact => 0x636f_6e6e_7200_0001,
            Service::Company => 0x636f_6e6e_7200_0002,
        };
        let row = self
            .client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
            .await?;
        Ok(row.try_get(0)?)
    }

    /// The last version `record_version_seq` handed out (0 before the first).
    pub async fn current_version(&self) -> Result<i64> {
        let row = self
            .client
            .query_one(
                "SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END FROM record_version_seq",
                &[],
            )
            .await?;
        Ok(row.try_get(0)?)
    }

    /// The virtual transaction ids (and pids) of the transactions running
    /// in this database now, other than this connection's.
    async fn running(&self) -> Result<Vec<(String, i32)>> {
        let rows = self
            .client
            .query(
                "SELECT l.virtualxid, l.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
                 WHERE l.locktype = 'virtualxid' AND l.mode = 'ExclusiveLock' AND l.granted \
                 AND a.datname = current_database() AND l.pid <> pg_backend_pid()",
                &[],
            )
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    /// Reads the current version `M`, then waits until every transaction
    /// running at that moment has ended (at most `bound`, and only until
    /// `stop` resolves); returns `M`. See the module documentation.
    pub async fn settle(
        &self,
        bound: Duration,
        stop: impl std::future::Future<Output = ()>,
    ) -> std::result::Result<i64, SettleError> {
        let mark = self.current_version().await?;
        let mut waiting = self.running().await?;
        let started = tokio::time::Instant::now();
        tokio::pin!(stop);
        while !waiting.is_empty() {
            if started.elapsed() >= bound {
                let pids: Vec<String> = waiting.iter().map(|(_, p)| p.to_string()).collect();
                return Err(SettleError::TimedOut {
                    count: waiting.len(),
                    waited: bound,
                    pids: pids.join(", "),
                });
            }
            tokio::select! {
                () = tokio::time::sleep(SETTLE_POLL) => {}
                () = &mut stop => return Err(SettleError::Stopped),
            }
            let now = self.running().await?;
            waiting.retain(|w| now.contains(w));
        }
        Ok(mark)
    }

    /// Up to `limit` rows of `service` after `after` in uuid order, as the
    /// index gets them: `(to_jsonb(row) - 'version')::text` and the version.
    /// With `newer_than`, only rows whose version is greater.
    pub async fn records(
        &self,
        service: Service,
        after: Option<Uuid>,
        newer_than: Option<i64>,
        limit: i64,
    ) -> Result<Vec<StoredRecord>> {
        let (filter, params) = keyset(&limit, after.as_ref(), newer_than.as_ref());
        let sql = format!(
            "SELECT {STORED_COLUMNS} FROM {} t {filter} \
             ORDER BY t.uuid LIMIT $1",
            service.table(),
        );
        let rows = self.client.query(&sql, &params).await?;
        rows.iter()
            .map(|row| StoredRecord::from_row(service, row))
            .collect()
    }

    /// Up to `limit` `(uuid, version)` pairs of `service` after `after`, in
    /// uuid order.
    pub async fn versions(
        &self,
        service: Service,
        after: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<(Uuid, i64)>> {
        let (filter, params) = keyset(&limit, after.as_ref(), None);
        let sql = format!(
            "SELECT t.uuid, t.version FROM {} t {filter} ORDER BY t.uuid LIMIT $1",
            service.table()
        );
        let rows = self.client.query(&sql, &params).await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    /// The versions of those of `uuids` that exist.
    pub async fn versions_of(&self, service: Service, uuids: &[Uuid]) -> Result<Vec<(Uuid, i64)>> {
        let rows = self
            .client
            .query(
                &format!(
                    "SELECT uuid, version FROM {} WHERE uuid = ANY($1)",
                    service.table()
                ),
                &[&uuids],
            )
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }
}

type Param<'a> = &'a (dyn tokio_postgres::types::ToSql + Sync);

/// The `WHERE` of a keyset page (`$1` is the limit): rows after `after` in
/// uuid order, with a version above `newer_than`; and its parameters.
fn keyset<'a>(
    limit: &'a i64,
    after: Option<&'a Uuid>,
    newer_than: Option<&'a i64>,
) -> (String, Vec<Param<'a>>) {
    let mut params: Vec<Param<'a>> = vec![limit];
    let mut conditions = Vec::new();
    if let Some(after) = after {
        params.push(after);
        conditions.push(format!("t.uuid > ${}", params.len()));
    }
    if let Some(version) = newer_than {
        params.push(version);
        conditions.push(format!("t.version > ${}", params.len()));
    }
    let filter = if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    };
    (filter, params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyset_pages_bind_only_what_they_filter_on() {
        let (limit, after, version) = (10_i64, Uuid::from_u128(1), 7_i64);
        let (filter, params) = keyset(&limit, None, None);
        assert_eq!((filter.as_str(), params.len()), ("", 1));
        let (filter, params) = keyset(&limit, Some(&after), None);
        assert_eq!((filter.as_str(), params.len()), ("WHERE t.uuid > $2", 2));
        let (filter, params) = keyset(&limit, None, Some(&version));
        assert_eq!((filter.as_str(), params.len()), ("WHERE t.version > $2", 2));
        let (filter, params) = keyset(&limit, Some(&after), Some(&version));
        assert_eq!(
            (filter.as_str(), params.len()),
            ("WHERE t.uuid > $2 AND t.version > $3", 3)
        );
    }
}
