//! Writing imported records: per batch, one transaction that COPYs the rows
//! (binary COPY, `tokio_postgres::binary_copy`) into a temporary staging table and upserts them from there with one
//! set-based statement (spec §2: keyed on uuid; a non-empty cell overwrites,
//! an empty one leaves the stored value alone), adds new filter values, and
//! records rejected lines.
//!
//! diesel-async has no COPY, so this uses the `tokio-postgres` client that
//! diesel-async itself runs on.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use bytes::BytesMut;
use connectra_domain::catalogue::FieldKind;
use connectra_domain::import::{filter_fields, import_columns, Cell, ImportColumns, Row};
use connectra_domain::limits::{storable, MAX_FILTER_VALUE_BYTES};
use connectra_domain::Service;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{to_sql_checked, IsNull, Json, Kind, ToSql, Type};
use tokio_postgres::{Client, NoTls, Statement, Transaction};
use uuid::Uuid;

use crate::Result;

/// The `application_name` of an import's connections, as
/// `pg_stat_activity` shows them.
pub const APPLICATION_NAME: &str = "connectra-import";

/// A line the import rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub line: i64,
    pub reason: String,
    pub raw: String,
}

/// A record as stored after an upsert (its merged row, not just the file's
/// cells), as a JSON object's text: what the search index gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    pub service: Service,
    pub uuid: Uuid,
    /// The row's `version` (from `record_version_seq`, new on every write);
    /// not part of `json`.
    pub version: i64,
    pub json: String,
}

/// The columns every query that reads records for the index selects, in
/// the order [`StoredRecord::from_row`] reads them; `t` is the table.
pub(crate) const STORED_COLUMNS: &str = "t.uuid, (to_jsonb(t.*) - 'version')::text, t.version";

impl StoredRecord {
    /// A row of [`STORED_COLUMNS`].
    pub(crate) fn from_row(service: Service, row: &tokio_postgres::Row) -> Result<Self> {
        Ok(Self {
            service,
            uuid: row.try_get(0)?,
            json: row.try_get(1)?,
            version: row.try_get(2)?,
        })
    }
}

/// One batch of an import.
#[derive(Debug, Clone, Default)]
pub struct RecordBatch {
    /// Contacts or companies, as the file's service says.
    pub records: Vec<Row>,
    /// Companies described by contacts' `company_` columns.
    pub companies: Vec<Row>,
    /// For each of `companies`, the position in `records` of the line that
    /// described it.
    pub company_sources: Vec<usize>,
    /// For each of `records`, its line and original text: should the search
    /// index refuse the record, the line is rejected like any other.
    pub sources: Sources,
    pub rejections: Vec<Rejection>,
}

/// The lines and original bytes of a batch's records, in one buffer.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    lines: Vec<i64>,
    text: Vec<u8>,
    ends: Vec<usize>,
}

impl Sources {
    pub fn push(&mut self, line: i64, raw: &[u8]) {
        self.lines.push(line);
        self.text.extend_from_slice(raw);
        self.ends.push(self.text.len());
    }

    /// The bytes of original text held.
    pub fn text_bytes(&self) -> usize {
        self.text.len()
    }

    /// The `i`-th record's line and original text.
    pub fn get(&self, i: usize) -> Option<(i64, &[u8])> {
        let start = if i == 0 { 0 } else { *self.ends.get(i - 1)? };
        Some((
            *self.lines.get(i)?,
            self.text.get(start..*self.ends.get(i)?)?,
        ))
    }
}

impl RecordBatch {
    /// Adds one accepted line: its record, and the company it describes.
    pub fn push(&mut self, line: i64, raw: &[u8], record: Row, company: Option<Row>) {
        if let Some(c) = company {
            self.companies.push(c);
            self.company_sources.push(self.records.len());
        }
        self.records.push(record);
        self.sources.push(line, raw);
    }

    /// Moves every line whose record or company is in `refused` (uuid →
    /// reason) to the rejections, and returns how many lines that was.
    pub fn reject(&mut self, refused: &HashMap<uuid::Uuid, String>) -> usize {
        let mut by_record: Vec<Option<&String>> =
            self.records.iter().map(|r| refused.get(&r.uuid)).collect();
        for (company, &source) in self.companies.iter().zip(&self.company_sources) {
            if let (Some(reason), Some(slot)) =
                (refused.get(&company.uuid), by_record.get_mut(source))
            {
                slot.get_or_insert(reason);
            }
        }
        let dropped: HashSet<usize> = by_record
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.map(|_| i))
            .collect();
        if dropped.is_empty() {
            return 0;
        }
        let mut kept = RecordBatch {
            rejections: std::mem::take(&mut self.rejections),
            ..RecordBatch::default()
        };
        let mut company_of: HashMap<usize, Row> = std::mem::take(&mut self.company_sources)
            .into_iter()
            .zip(std::mem::take(&mut self.companies))
            .collect();
        for (i, record) in std::mem::take(&mut self.records).into_iter().enumerate() {
            let Some((line, raw)) = self.sources.get(i) else {
                continue;
            };
            let company = company_of.remove(&i);
            match by_record[i] {
                Some(reason) => kept.rejections.push(Rejection {
                    line,
                    reason: format!("the search index refused the record: {reason}"),
                    raw: String::from_utf8_lossy(raw).into_owned(),
                }),
                None => kept.push(line, raw, record, company),
            }
        }
        kept.rejections.sort_by_key(|r| r.line);
        *self = kept;
        dropped.len()
    }
}

/// A dedicated connection that writes import batches. Several writers may
/// run at once: rows are upserted and filter values inserted in key order, so
/// two batches that touch the same records take their locks in the same
/// order and never deadlock.
#[derive(Debug)]
pub struct RecordWriter {
    client: Client,
    job_id: i64,
    /// The claim whose batches these are: (attempt, runner id).
    fence: Option<(i32, String)>,
    /// The batch statements, prepared once per connection: parsed and
    /// planned once, not once per batch.
    prepared: HashMap<String, Statement>,
}

/// The staging column type of a field of `kind`: what a binary COPY row
/// encodes the field's cells as. Timestamps are staged as text (the import
/// writes none: `created_at` and `updated_at` are the database's).
fn column_type(kind: FieldKind) -> Type {
    match kind {
        FieldKind::Text | FieldKind::Keyword | FieldKind::Timestamp => Type::TEXT,
        FieldKind::KeywordList => Type::TEXT_ARRAY,
        FieldKind::Integer => Type::INT4,
        FieldKind::BigInt => Type::INT8,
        FieldKind::Uuid => Type::UUID,
        FieldKind::Json => Type::JSONB,
    }
}

/// A column type as SQL: `text`, `text[]`, `int4`, …
fn type_sql(ty: &Type) -> String {
    match ty.kind() {
        Kind::Array(member) => format!("{}[]", member.name()),
        _ => ty.name().to_string(),
    }
}

/// `CREATE TEMP TABLE` for a service's staging rows.
fn staging_ddl(service: Service) -> String {
    let cols: Vec<String> = import_columns(service)
        .iter()
        .map(|f| format!("{} {}", f.name, type_sql(&column_type(f.kind))))
        .collect();
    format!(
        "CREATE TEMP TABLE IF NOT EXISTS stage_{} ({}) ON COMMIT DELETE ROWS",
        service.table(),
        cols.join(", ")
    )
}

/// The set-based upsert from the staging table.
fn upsert_sql(service: Service, returning: bool) -> String {
    let cols = import_columns(service);
    let names: Vec<&str> = cols.iter().map(|f| f.name).collect();
    let select: Vec<String> = cols
        .iter()
        .map(|f| match f.kind {
            FieldKind::KeywordList => format!("coalesce({0}, '{{}}')", f.name),
            FieldKind::Json => format!("coalesce({0}, '{{}}'::jsonb)", f.name),
            _ => f.name.to_string(),
        })
        .collect();
    let set: Vec<String> = cols
        .iter()
        .filter(|f| f.name != "uuid")
        .map(|f| match f.kind {
            FieldKind::KeywordList => format!(
                "{0} = CASE WHEN cardinality(EXCLUDED.{0}) = 0 THEN t.{0} ELSE EXCLUDED.{0} END",
                f.name
            ),
            FieldKind::Json => format!("{0} = t.{0} || EXCLUDED.{0}", f.name),
            _ => format!("{0} = coalesce(EXCLUDED.{0}, t.{0})", f.name),
        })
        .collect();
    let t = service.table();
    format!(
        "INSERT INTO {t} AS t ({}) SELECT {} FROM stage_{t} ORDER BY uuid \
         ON CONFLICT (uuid) DO UPDATE SET {}, updated_at = now(), \
         version = nextval('record_version_seq'){}",
        names.join(", "),
        select.join(", "),
        set.join(", "),
        if returning {
            format!(" RETURNING {STORED_COLUMNS}")
        } else {
            String::new()
        }
    )
}

/// The binary COPY into a service's staging table.
fn copy_sql(service: Service) -> String {
    let names: Vec<&str> = import_columns(service).iter().map(|f| f.name).collect();
    format!(
        "COPY stage_{} ({}) FROM STDIN (FORMAT binary)",
        service.table(),
        names.join(", ")
    )
}

/// Adds the batch's distinct filter values.
fn filters_sql(service: Service) -> String {
    let t = service.table();
    let columns = import_columns(service);
    let parts: Vec<String> = filter_fields(service)
        .iter()
        .filter_map(|name| columns.iter().find(|f| f.name == *name))
        .map(|f| match f.kind {
            FieldKind::KeywordList => {
                format!("SELECT '{0}', unnest({0}) FROM stage_{t}", f.name)
            }
            _ => format!("SELECT '{0}', {0} FROM stage_{t}", f.name),
        })
        .collect();
    format!(
        "INSERT INTO filters_data (service, filter_key, value) \
         SELECT '{}', k, v FROM ({}) x(k, v) \
         WHERE v IS NOT NULL AND v <> '' AND octet_length(v) <= {MAX_FILTER_VALUE_BYTES} ORDER BY k, v \
         ON CONFLICT DO NOTHING",
        service.as_str(),
        parts.join(" UNION ")
    )
}

/// One cell of a row as a binary COPY value of its staging column's type
/// ([`column_type`]): `None` is the cell of a column the row does not
/// reach, an encoding error rather than a value. Each value is encoded by
/// `tokio-postgres` straight into the COPY buffer: no text form and no
/// escaping, and no allocation of its own (a JSON object is serialised into
/// the buffer too).
#[derive(Debug)]
struct CopyCell<'a>(Option<&'a Option<Cell>>);

impl ToSql for CopyCell<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        let Some(cell) = self.0 else {
            return Err("the row has fewer cells than its service has import columns".into());
        };
        // each checked against the column's type: a cell of the wrong kind
        // is an error, never a misencoded value
        match cell {
            None => Ok(IsNull::Yes),
            Some(Cell::Text(s)) => s.as_str().to_sql_checked(ty, out),
            Some(Cell::List(items)) => items.as_slice().to_sql_checked(ty, out),
            Some(Cell::Int(n)) if *ty == Type::INT4 => i32::try_from(*n)?.to_sql_checked(ty, out),
            Some(Cell::Int(n)) => n.to_sql_checked(ty, out),
            Some(Cell::Uuid(u)) => u.to_sql_checked(ty, out),
            Some(Cell::Json(m)) => Json(m.as_ref()).to_sql_checked(ty, out),
        }
    }

    fn accepts(ty: &Type) -> bool {
        [
            Type::TEXT,
            Type::TEXT_ARRAY,
            Type::INT4,
            Type::INT8,
            Type::UUID,
            Type::JSONB,
        ]
        .contains(ty)
    }

    to_sql_checked!();
}

/// COPYs `rows` (cells following `columns`) into `table` in the binary
/// format.
async fn copy_rows<R: std::borrow::Borrow<Row>>(
    tx: &Transaction<'_>,
    copy: &Statement,
    columns: &ImportColumns,
    rows: &[R],
) -> Result<()> {
    let types: Vec<Type> = columns.iter().map(|f| column_type(f.kind)).collect();
    let sink = tx.copy_in(copy).await?;
    let writer = BinaryCopyInWriter::new(sink, &types);
    futures::pin_mut!(writer);
    for row in rows {
        let cells = &row.borrow().cells;
        // one value a column; cells beyond the columns are none of COPY's business
        let values = (0..types.len()).map(|i| CopyCell(cells.get(i)));
        writer.as_mut().write_raw(values).await?;
    }
    writer.finish().await?;
    Ok(())
}

/// Folds rows with the same uuid into one, in file order, with the same rule
/// as the upsert: a later non-empty cell overwrites, an empty one keeps the
/// earlier value, and `extra` objects merge. (One statement may not touch a
/// row twice: "ON CONFLICT DO UPDATE cannot affect row a second time".)
fn merge_duplicates(rows: &[Row]) -> Vec<Cow<'_, Row>> {
    let mut at: HashMap<uuid::Uuid, usize> = HashMap::with_capacity(rows.len());
    let mut out: Vec<Cow<'_, Row>> = Vec::with_capacity(rows.len());
    for row in rows {
        match at.get(&row.uuid) {
            None => {
                at.insert(row.uuid, out.len());
                out.push(Cow::Borrowed(row));
            }
            Some(&i) => {
                for (kept, new) in out[i].to_mut().cells.iter_mut().zip(&row.cells) {
                    match (kept, new) {
                        (_, None) => {}
                        (_, Some(Cell::List(l))) if l.is_empty() => {}
                        (Some(Cell::Json(a)), Some(Cell::Json(b))) => {
                            a.extend(b.iter().map(|(k, v)| (k.clone(), v.clone())))
                        }
                        (slot, new) => *slot = new.clone(),
                    }
                }
            }
        }
    }
    out
}

/// A batch written but not yet committed: the search index gets its
/// documents first, so that a record the index refuses is never committed
/// to PostgreSQL either. Dropping it rolls the batch back.
pub struct StagedBatch<'a> {
    tx: Transaction<'a>,
    job_id: i64,
}

impl std::fmt::Debug for StagedBatch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StagedBatch")
            .field("job_id", &self.job_id)
            .finish()
    }
}

impl StagedBatch<'_> {
    /// Records the batch's rejected lines and commits.
    pub async fn commit(self, rejections: &[Rejection]) -> Result<()> {
        if !rejections.is_empty() {
            let lines: Vec<i64> = rejections.iter().map(|r| r.line).collect();
            let reasons: Vec<Cow<'_, str>> =
                rejections.iter().map(|r| storable(&r.reason)).collect();
            let raws: Vec<Cow<'_, str>> = rejections.iter().map(|r| storable(&r.raw)).collect();
            let reasons: Vec<&str> = reasons.iter().map(AsRef::as_ref).collect();
            let raws: Vec<&str> = raws.iter().map(AsRef::as_ref).collect();
            self.tx
                .execute(
                    "INSERT INTO job_rejections (job_id, line, reason, raw)
                     SELECT $1, * FROM unnest($2::int8[], $3::text[], $4::text[])
                     ON CONFLICT DO NOTHING",
                    &[&self.job_id, &lines, &reasons, &raws],
                )
                .await?;
        }
        self.tx.commit().await?;
        Ok(())
    }

    /// Undoes the batch.
    pub async fn rollback(self) -> Result<()> {
        self.tx.rollback().await?;
        Ok(())
    }
}

fn rejection(row: &tokio_postgres::Row) -> Result<Rejection> {
    Ok(Rejection {
        line: row.try_get(0)?,
        reason: row.try_get(1)?,
        raw: row.try_get(2)?,
    })
}

impl RecordWriter {
    /// Opens a connection of its own for the import of job `job_id`.
    /// Its `application_name` is [`APPLICATION_NAME`] unless the URL sets one.
    pub async fn connect(database_url: &str, job_id: i64) -> Result<Self> {
        let mut url = crate::connection_url(database_url);
        if !url.contains("application_name=") {
            crate::pool::push_param(&mut url, "application_name", APPLICATION_NAME);
        }
        let (client, connection) = tokio_postgres::connect(&url, NoTls).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "import connection closed with an error");
            }
        });
        for service in Service::ALL {
            client.batch_execute(&staging_ddl(service)).await?;
        }
        Ok(Self {
            client,
            job_id,
            fence: None,
            prepared: HashMap::new(),
        })
    }

    /// `sql`, prepared on this connection the first time it is asked for.
    async fn statement(&mut self, sql: String) -> Result<Statement> {
        if let Some(s) = self.prepared.get(&sql) {
            return Ok(s.clone());
        }
        let s = self.client.prepare(&sql).await?;
        self.prepared.insert(sql, s.clone());
        Ok(s)
    }

    /// Fences every batch by this claim of the job: each batch's transaction
    /// first checks, inside itself, that `runner_id`'s attempt `attempt`
    /// still holds the job running (and keeps a rescue from taking it until
    /// the batch ends); otherwise the batch writes nothing and fails with
    /// [`crate::Error::LeaseLost`].
    pub fn fenced(mut self, attempt: i32, runner_id: &str) -> Self {
        self.fence = Some((attempt, runner_id.to_string()));
        self
    }

    /// Writes one batch's records in one transaction, left open: the caller
    /// indexes the returned documents (with `want_documents`: the stored
    /// records after the merge, as JSON text), then commits the batch with
    /// its rejected lines, or rolls it back.
    pub async fn stage(
        &mut self,
        service: Service,
        batch: &RecordBatch,
        want_documents: bool,
    ) -> Result<(StagedBatch<'_>, Vec<StoredRecord>)> {
        let groups = [
            (Service::Company, &batch.companies),
            (service, &batch.records),
        ];
        // prepared before the transaction opens (it borrows the connection)
        let fence = match &self.fence {
            Some(_) => Some(
                self.statement(format!(
                    "SELECT 1 FROM jobs WHERE id = $1 AND attempts = $2 AND locked_by = $3 \
                     AND {} FOR KEY SHARE",
                    crate::status::is_one_of(
                        "status",
                        crate::status::statuses(connectra_domain::job::JobStatus::is_running)
                    )
                ))
                .await?,
            ),
            None => None,
        };
        let mut steps = Vec::new();
        for (svc, rows) in groups {
            if rows.is_empty() {
                continue;
            }
            steps.push((
                svc,
                rows,
                self.statement(copy_sql(svc)).await?,
                self.statement(upsert_sql(svc, want_documents)).await?,
                self.statement(filters_sql(svc)).await?,
            ));
        }
        let tx = self.client.transaction().await?;
        if let (Some(fence), Some((attempt, runner_id))) = (fence, &self.fence) {
            // KEY SHARE: progress writes and lease renewals go on, but a
            // rescue's FOR UPDATE SKIP LOCKED passes this job by until the
            // batch commits
            let held = tx
                .query_opt(&fence, &[&self.job_id, attempt, runner_id])
                .await?;
            if held.is_none() {
                return Err(crate::Error::LeaseLost {
                    job_id: self.job_id,
                    attempt: *attempt,
                    runner_id: runner_id.clone(),
                });
            }
        }
        let mut docs = Vec::new();
        let mut staged_before: HashSet<Service> = HashSet::new();
        for (svc, rows, copy, upsert, filters) in steps {
            if !staged_before.insert(svc) {
                // a staging table is emptied at commit; used twice in one
                // transaction (a companies file whose rows name companies),
                // it is emptied in between
                tx.execute(&format!("TRUNCATE stage_{}", svc.table()), &[])
                    .await?;
            }
            let columns = import_columns(svc);
            let rows = merge_duplicates(rows);
            copy_rows(&tx, &copy, &columns, &rows).await?;
            drop(rows);
            if want_documents {
                // streamed: each returned row is turned into a document as it arrives
                let no_params: [&(dyn tokio_postgres::types::ToSql + Sync); 0] = [];
                let stored = tx.query_raw(&upsert, no_params).await?;
                futures::pin_mut!(stored);
                while let Some(row) = futures::TryStreamExt::try_next(&mut stored).await? {
                    docs.push(StoredRecord::from_row(svc, &row)?);
                }
                tx.execute(&filters, &[]).await?;
            } else {
                // pipelined: both go out at once, PostgreSQL runs them in order
                futures::try_join!(tx.execute(&upsert, &[]), tx.execute(&filters, &[]))?;
            }
        }
        Ok((
            StagedBatch {
                tx,
                job_id: self.job_id,
            },
            docs,
        ))
    }

    /// Writes one batch and commits it, without a search index in between.
    pub async fn write(&mut self, service: Service, batch: &RecordBatch) -> Result<()> {
        let (staged, _) = self.stage(service, batch, false).await?;
        staged.commit(&batch.rejections).await
    }

    /// The stored records of `uuids` (those that exist), as JSON text, each
    /// given a new `version` first. What a rolled-back pass indexed carries
    /// a version that PostgreSQL never committed (a sequence does not roll
    /// back), newer than the stored row's: re-indexed with the stored
    /// version, the record would lose to it (`external_gte`) and the index
    /// keep the rolled-back content. A fresh version always wins.
    pub async fn restamped(&self, service: Service, uuids: &[Uuid]) -> Result<Vec<StoredRecord>> {
        let rows = self
            .client
            .query(
                &format!(
                    "UPDATE {} t SET version = nextval('record_version_seq') WHERE t.uuid = ANY($1) \
                     RETURNING {STORED_COLUMNS}",
                    service.table()
                ),
                &[&uuids],
            )
            .await?;
        rows.iter()
            .map(|row| StoredRecord::from_row(service, row))
            .collect()
    }

    /// The first `limit` rejections of the job, in line order.
    pub async fn first_rejections(&self, limit: i64) -> Result<Vec<Rejection>> {
        self.rejections_at_end(limit, "ASC").await
    }

    /// The last `limit` rejections of the job, in line order.
    pub async fn last_rejections(&self, limit: i64) -> Result<Vec<Rejection>> {
        let mut last = self.rejections_at_end(limit, "DESC").await?;
        last.reverse();
        Ok(last)
    }

    async fn rejections_at_end(&self, limit: i64, order: &str) -> Result<Vec<Rejection>> {
        let rows = self
            .client
            .query(
                &format!(
                    "SELECT line, reason, raw FROM job_rejections WHERE job_id = $1 ORDER BY line {order} LIMIT $2"
                ),
                &[&self.job_id, &limit],
            )
            .await?;
        rows.iter().map(rejection).collect()
    }

    /// Every rejection of the job, in line order, as a stream (constant memory).
    pub async fn rejections(
        &self,
    ) -> Result<impl futures::Stream<Item = Result<Rejection>> + Send + '_> {
        use futures::StreamExt;
        let rows = self
            .client
            .query_raw(
                "SELECT line, reason, raw FROM job_rejections WHERE job_id = $1 ORDER BY line",
                [&self.job_id],
            )
            .await?;
        Ok(rows.map(|r| rejection(&r?)))
    }

    /// How many lines of the job were rejected so far.
    pub async fn rejection_count(&self) -> Result<i64> {
        let row = self
            .client
            .query_one(
                "SELECT count(*) FROM job_rejections WHERE job_id = $1",
                &[&self.job_id],
            )
            .await?;
        Ok(row.try_get(0)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(cell: Option<&Option<Cell>>, ty: &Type) -> Option<Vec<u8>> {
        let mut out = BytesMut::new();
        match CopyCell(cell).to_sql_checked(ty, &mut out) {
            Ok(IsNull::No) => Some(out.to_vec()),
            Ok(IsNull::Yes) => Some(b"NULL".to_vec()),
            Err(_) => None,
        }
    }

    #[test]
    fn cells_are_copied_unescaped_and_only_as_their_columns_type() {
        let text = Some(Cell::Text("A\tB\\C\nD \"é\"".into()));
        assert_eq!(
            encode(Some(&text), &Type::TEXT).as_deref(),
            Some("A\tB\\C\nD \"é\"".as_bytes()),
            "binary COPY sends the text's own bytes"
        );
        assert_eq!(
            encode(Some(&None), &Type::UUID).as_deref(),
            Some(&b"NULL"[..])
        );
        let list = Some(Cell::List(vec!["Sa,aS".into(), "Soft \"ware\"".into()]));
        assert!(encode(Some(&list), &Type::TEXT_ARRAY).is_some());
        let json = Some(Cell::Json(Box::new(serde_json::Map::from_iter([(
            "k".to_string(),
            serde_json::Value::from("v"),
        )]))));
        assert_eq!(
            encode(Some(&json), &Type::JSONB).as_deref(),
            Some(&b"\x01{\"k\":\"v\"}"[..])
        );
        // a cell of another kind than its column is an error, not a misencoded value
        assert_eq!(encode(Some(&text), &Type::INT4), None);
        assert_eq!(encode(Some(&list), &Type::TEXT), None);
        assert_eq!(encode(Some(&text), &Type::TEXT_ARRAY), None);
        let big = Some(Cell::Int(i64::from(i32::MAX) + 1));
        assert_eq!(encode(Some(&big), &Type::INT4), None);
        assert_eq!(
            encode(Some(&big), &Type::INT8).as_deref(),
            Some(&(i64::from(i32::MAX) + 1).to_be_bytes()[..])
        );
        // a row too short for its columns
        assert_eq!(encode(None, &Type::TEXT), None);
    }

    #[test]
    fn staging_columns_take_the_types_of_their_fields() {
        let ddl = staging_ddl(Service::Company);
        for column in [
            "(uuid uuid, name text,",
            "industries text[],",
            "employees_count int4,",
            "annual_revenue int8,",
            "extra jsonb)",
        ] {
            assert!(ddl.contains(column), "{column} in {ddl}");
        }
    }

    #[test]
    fn duplicates_in_a_batch_merge_like_successive_upserts() {
        let columns = import_columns(Service::Company);
        let at = |name: &str| columns.iter().position(|f| f.name == name).unwrap_or(0);
        let u = uuid::Uuid::from_u128(7);
        let mut a = columns.empty_cells();
        a[at("name")] = Some(Cell::Text("Acme".into()));
        a[at("industries")] = Some(Cell::List(vec!["SaaS".into()]));
        let mut b = columns.empty_cells();
        b[at("name")] = Some(Cell::Text("Acme Inc".into()));
        b[at("industries")] = Some(Cell::List(vec![]));
        let other = Row {
            uuid: uuid::Uuid::from_u128(8),
            cells: columns.empty_cells(),
        };
        let rows = vec![Row { uuid: u, cells: a }, other, Row { uuid: u, cells: b }];
        let merged = merge_duplicates(&rows);
        assert_eq!(merged.len(), 2);
        assert_eq!(
            merged[0].cells[at("name")],
            Some(Cell::Text("Acme Inc".into()))
        );
        assert_eq!(
            merged[0].cells[at("industries")],
            Some(Cell::List(vec!["SaaS".into()]))
        );
    }

    #[test]
    fn upsert_keeps_stored_values_for_empty_cells() {
        let sql = upsert_sql(Service::Company, false);
        assert!(
            sql.contains("name = coalesce(EXCLUDED.name, t.name)"),
            "{sql}"
        );
        assert!(sql.contains("extra = t.extra || EXCLUDED.extra"));
        assert!(sql.contains("CASE WHEN cardinality(EXCLUDED.industries) = 0 THEN t.industries"));
        assert!(!sql.contains("RETURNING"));
    }

    #[test]
    fn over_long_filter_values_stay_out_of_filters_data() {
        let sql = filters_sql(Service::Contact);
        assert!(
            sql.contains(&format!("octet_length(v) <= {MAX_FILTER_VALUE_BYTES}")),
            "{sql}"
        );
    }

    #[test]
    fn lines_whose_record_or_company_the_index_refused_become_rejections() {
        let columns = import_columns(Service::Contact);
        let row = |n: u128| Row {
            uuid: uuid::Uuid::from_u128(n),
            cells: columns.empty_cells(),
        };
        let mut batch = RecordBatch::default();
        batch.push(2, b"a,1", row(1), Some(row(100)));
        batch.push(3, b"b,2", row(2), Some(row(101)));
        batch.push(4, b"c,3", row(3), None);
        batch.push(5, b"d,4", row(4), Some(row(100)));
        batch.rejections.push(Rejection {
            line: 6,
            reason: "bad".into(),
            raw: "e".into(),
        });
        let refused: HashMap<uuid::Uuid, String> = [
            (uuid::Uuid::from_u128(100), "company refused".to_string()),
            (uuid::Uuid::from_u128(3), "contact refused".to_string()),
        ]
        .into_iter()
        .collect();
        assert_eq!(batch.reject(&refused), 3);
        let uuids: Vec<u128> = batch.records.iter().map(|r| r.uuid.as_u128()).collect();
        assert_eq!(uuids, [2]);
        assert_eq!(batch.companies.len(), 1);
        assert_eq!(batch.companies[0].uuid.as_u128(), 101);
        assert_eq!(batch.company_sources, [0]);
        assert_eq!(batch.sources.get(0), Some((3, b"b,2".as_slice())));
        let lines: Vec<(i64, &str)> = batch
            .rejections
            .iter()
            .map(|r| (r.line, r.raw.as_str()))
            .collect();
        assert_eq!(lines, [(2, "a,1"), (4, "c,3"), (5, "d,4"), (6, "e")]);
        assert!(batch.rejections[0].reason.contains("company refused"));
        assert!(batch.rejections[1].reason.contains("contact refused"));
        assert_eq!(batch.reject(&refused), 0);
    }
}
