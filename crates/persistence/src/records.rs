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
use connectra_domain::import::{
    filter_cell_values, filter_fields, fits_filters_data, import_columns, Cell, ImportColumns, Row,
};
use connectra_domain::limits::storable;
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
/// run at once: each batch inserts its filter values in key order, then
/// writes its rows (COPYed, inserted or upserted) in uuid order, so two
/// batches that touch the same records take their locks in the same order
/// and never deadlock.
#[derive(Debug)]
pub struct RecordWriter {
    client: Client,
    job_id: i64,
    /// The claim whose batches these are: (attempt, runner id).
    fence: Option<(i32, String)>,
    /// The batch statements, prepared once per connection: parsed and
    /// planned once, not once per batch.
    prepared: HashMap<String, Statement>,
    filters_seen: FilterValuesSeen,
    /// Per service, how many more batches go straight to the upsert: set
    /// when a batch's plain insert met a stored record ([`insert_sql`]).
    upserts_ahead: HashMap<Service, u32>,
}

/// After a batch's plain insert met a stored record, the next this many
/// batches of its service are upserted without trying it: a file of
/// records that are partly stored pays for at most one failed insert in
/// this many batches.
const UPSERTS_AFTER_A_CONFLICT: u32 = 16;

/// The savepoint before a batch's plain insert.
const PLAIN_INSERT: &str = "plain_insert";

fn is_unique_violation(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
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

/// The columns an import writes and the `INSERT … SELECT` from the staging
/// table, in uuid order (writers running at once take their locks in one
/// order), up to its `ON CONFLICT`.
fn insert_from_stage(service: Service) -> String {
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
    let t = service.table();
    format!(
        "INSERT INTO {t} AS t ({}) SELECT {} FROM stage_{t} ORDER BY uuid",
        names.join(", "),
        select.join(", "),
    )
}

fn returning(returning: bool) -> String {
    if returning {
        format!(" RETURNING {STORED_COLUMNS}")
    } else {
        String::new()
    }
}

/// The set-based upsert from the staging table.
fn upsert_sql(service: Service, returning_rows: bool) -> String {
    let set: Vec<String> = import_columns(service)
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
    format!(
        "{} ON CONFLICT (uuid) DO UPDATE SET {}, updated_at = now(), \
         version = nextval('record_version_seq'){}",
        insert_from_stage(service),
        set.join(", "),
        returning(returning_rows)
    )
}

/// The same rows inserted with no `ON CONFLICT`: what a batch of records
/// that are all new costs without the speculative insertion (a probe of the
/// uuid index before each row, and a second WAL record after it). Any
/// record already stored fails it with a unique violation, and the batch
/// falls back to [`upsert_sql`]; either way the rows end the same.
fn insert_sql(service: Service, returning_rows: bool) -> String {
    format!(
        "{}{}",
        insert_from_stage(service),
        returning(returning_rows)
    )
}

/// The binary COPY into a service's staging table, or with `direct`
/// straight into its records' table: a batch of records that are all new
/// costs no staging and no `INSERT … SELECT` (any record already stored
/// fails it with a unique violation, and the batch falls back to staging
/// and [`upsert_sql`]).
fn copy_sql(service: Service, direct: bool) -> String {
    let names: Vec<&str> = import_columns(service).iter().map(|f| f.name).collect();
    format!(
        "COPY {}{} ({}) FROM STDIN (FORMAT binary)",
        if direct { "" } else { "stage_" },
        service.table(),
        names.join(", ")
    )
}

/// Adds filter values (`$2` the fields, `$3` their values, `$1` the
/// service), in key order: writers running at once lock them in one order.
const FILTERS_SQL: &str = "INSERT INTO filters_data (service, filter_key, value) \
     SELECT $1, k, v FROM unnest($2::text[], $3::text[]) x(k, v) ORDER BY k, v \
     ON CONFLICT DO NOTHING";

/// Whether `value` belongs in `filters_data`: not empty, and short enough
/// for its unique index (the rule the parser counts skipped values by).
fn is_filter_value(value: &str) -> bool {
    !value.is_empty() && fits_filters_data(value)
}

/// A batch's filter values that `seen` does not hold, each once.
fn new_filter_values(
    service: Service,
    columns: &ImportColumns,
    rows: &[Cow<'_, Row>],
    seen: &FilterValuesSeen,
) -> Vec<(Service, &'static str, String)> {
    let mut new: foldhash::HashSet<(&'static str, &str)> = foldhash::HashSet::default();
    for name in filter_fields(service) {
        let Some(at) = columns.position(name) else {
            continue;
        };
        let known = seen.known(service, name);
        for row in rows {
            for v in filter_cell_values(row.cells.get(at).and_then(Option::as_ref)) {
                if is_filter_value(v) && !known.is_some_and(|k| k.contains(v.as_str())) {
                    new.insert((name, v));
                }
            }
        }
    }
    new.into_iter()
        .map(|(k, v)| (service, k, v.to_string()))
        .collect()
}

/// The filter values that this writer's committed batches added: a batch
/// sends only the values not in here, so that most batches send none.
/// Filled at commit (a batch that rolls back adds nothing), and bounded:
/// past [`FILTER_VALUES_SEEN_BYTES`] values are no longer remembered, and
/// batches send them again (`ON CONFLICT DO NOTHING` keeps one of each).
#[derive(Debug, Default)]
struct FilterValuesSeen {
    /// Hashed with foldhash: every filter cell of every row is looked up
    /// here, and SipHash made that the runner's costliest step.
    values: HashMap<(Service, &'static str), foldhash::HashSet<String>>,
    bytes: usize,
}

/// What [`FilterValuesSeen`] may hold, in value bytes.
const FILTER_VALUES_SEEN_BYTES: usize = 4 << 20;

impl FilterValuesSeen {
    /// The values of `service`'s field `key` that it holds.
    fn known(&self, service: Service, key: &'static str) -> Option<&foldhash::HashSet<String>> {
        self.values.get(&(service, key))
    }

    fn add(&mut self, committed: Vec<(Service, &'static str, String)>) {
        for (service, key, value) in committed {
            let bytes = value.len();
            if self.bytes + bytes > FILTER_VALUES_SEEN_BYTES {
                return;
            }
            if self.values.entry((service, key)).or_default().insert(value) {
                self.bytes += bytes;
            }
        }
    }
}

/// One cell of a row as a binary COPY value of its staging column's type
/// ([`column_type`]): `None` is the cell of a column the row does not
/// reach, an encoding error rather than a value. Each value is encoded by
/// `tokio-postgres` straight into the COPY buffer: no text form and no
/// escaping, and no allocation of its own (a JSON object is serialised into
/// the buffer too).
///
/// With `defaults`, an empty cell of a list or JSON column is its empty
/// value rather than NULL: what the upsert's `coalesce` makes of it, for a
/// COPY straight into the records' table (whose such columns are NOT NULL).
#[derive(Debug)]
struct CopyCell<'a> {
    cell: Option<&'a Option<Cell>>,
    defaults: bool,
}

impl ToSql for CopyCell<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        let Some(cell) = self.cell else {
            return Err("the row has fewer cells than its service has import columns".into());
        };
        if cell.is_none() && self.defaults {
            if *ty == Type::TEXT_ARRAY {
                return (&[] as &[&str]).to_sql_checked(ty, out);
            }
            if *ty == Type::JSONB {
                return Json(&serde_json::Map::new()).to_sql_checked(ty, out);
            }
        }
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

/// COPYs `rows` (cells following `columns`) with the binary `copy`
/// statement; `defaults` as in [`CopyCell`].
async fn copy_rows<R: std::borrow::Borrow<Row>>(
    tx: &Transaction<'_>,
    copy: &Statement,
    columns: &ImportColumns,
    rows: &[R],
    defaults: bool,
) -> Result<()> {
    let types: Vec<Type> = columns.iter().map(|f| column_type(f.kind)).collect();
    let sink = tx.copy_in(copy).await?;
    let writer = BinaryCopyInWriter::new(sink, &types);
    futures::pin_mut!(writer);
    for row in rows {
        let cells = &row.borrow().cells;
        // one value a column; cells beyond the columns are none of COPY's business
        let values = (0..types.len()).map(|i| CopyCell {
            cell: cells.get(i),
            defaults,
        });
        writer.as_mut().write_raw(values).await?;
    }
    writer.finish().await?;
    Ok(())
}

/// One service's records of a batch and the statements that write them.
struct Step<'r> {
    service: Service,
    rows: &'r [Row],
    /// COPY into the staging table.
    stage: Statement,
    /// COPY straight into the records' table.
    direct: Statement,
    /// [`insert_sql`] and [`upsert_sql`].
    insert: Statement,
    upsert: Statement,
}

/// COPYs a step's rows into its staging table. A staging table is emptied
/// at commit; used twice in one transaction (a companies file whose rows
/// name companies, or a plain insert rolled back), it is emptied first.
async fn stage_rows(
    tx: &Transaction<'_>,
    step: &Step<'_>,
    columns: &ImportColumns,
    rows: &[Cow<'_, Row>],
    staged_before: &mut HashSet<Service>,
) -> Result<()> {
    if !staged_before.insert(step.service) {
        tx.execute(&format!("TRUNCATE stage_{}", step.service.table()), &[])
            .await?;
    }
    copy_rows(tx, &step.stage, columns, rows, false).await
}

/// Runs a batch's insert or upsert from the staging table; with
/// `want_documents`, the stored records it returns, each turned into a
/// document as it arrives.
async fn write_rows(
    tx: &Transaction<'_>,
    statement: &Statement,
    service: Service,
    want_documents: bool,
) -> Result<Vec<StoredRecord>> {
    if !want_documents {
        tx.execute(statement, &[]).await?;
        return Ok(Vec::new());
    }
    let no_params: [&(dyn ToSql + Sync); 0] = [];
    let stored = tx.query_raw(statement, no_params).await?;
    futures::pin_mut!(stored);
    let mut docs = Vec::new();
    while let Some(row) = futures::TryStreamExt::try_next(&mut stored).await? {
        docs.push(StoredRecord::from_row(service, &row)?);
    }
    Ok(docs)
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
    /// The writer's filter values, which learn the batch's new ones when
    /// it commits.
    seen: &'a mut FilterValuesSeen,
    new_values: Vec<(Service, &'static str, String)>,
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
        self.seen.add(self.new_values);
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
            filters_seen: FilterValuesSeen::default(),
            upserts_ahead: HashMap::new(),
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
        let filters = self.statement(FILTERS_SQL.to_string()).await?;
        let mut steps = Vec::new();
        for (svc, rows) in groups {
            if rows.is_empty() {
                continue;
            }
            steps.push(Step {
                service: svc,
                rows,
                stage: self.statement(copy_sql(svc, false)).await?,
                direct: self.statement(copy_sql(svc, true)).await?,
                insert: self.statement(insert_sql(svc, want_documents)).await?,
                upsert: self.statement(upsert_sql(svc, want_documents)).await?,
            });
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
        let mut new_values = Vec::new();
        let mut staged_before: HashSet<Service> = HashSet::new();
        for step in steps {
            let svc = step.service;
            let columns = import_columns(svc);
            let mut rows = merge_duplicates(step.rows);
            let values = new_filter_values(svc, &columns, &rows, &self.filters_seen);
            // before the records, in every batch alike (one lock order)
            if !values.is_empty() {
                let keys: Vec<&str> = values.iter().map(|(_, k, _)| *k).collect();
                let texts: Vec<&str> = values.iter().map(|(_, _, v)| v.as_str()).collect();
                tx.execute(&filters, &[&svc.as_str(), &keys, &texts])
                    .await?;
            }
            new_values.extend(values);
            // in uuid order, as the INSERT … SELECT sorts: one lock order
            rows.sort_unstable_by_key(|r| r.uuid);
            let ahead = self.upserts_ahead.entry(svc).or_default();
            if *ahead == 0 {
                tx.batch_execute(&format!("SAVEPOINT {PLAIN_INSERT}"))
                    .await?;
                let inserted = if want_documents {
                    stage_rows(&tx, &step, &columns, &rows, &mut staged_before).await?;
                    write_rows(&tx, &step.insert, svc, true).await
                } else {
                    copy_rows(&tx, &step.direct, &columns, &rows, true)
                        .await
                        .map(|()| Vec::new())
                };
                match inserted {
                    Ok(stored) => {
                        docs.extend(stored);
                        continue;
                    }
                    Err(crate::Error::Postgres(e)) if is_unique_violation(&e) => {
                        tx.batch_execute(&format!("ROLLBACK TO SAVEPOINT {PLAIN_INSERT}"))
                            .await?;
                        *ahead = UPSERTS_AFTER_A_CONFLICT;
                    }
                    Err(e) => return Err(e),
                }
            } else {
                *ahead -= 1;
            }
            stage_rows(&tx, &step, &columns, &rows, &mut staged_before).await?;
            docs.extend(write_rows(&tx, &step.upsert, svc, want_documents).await?);
        }
        Ok((
            StagedBatch {
                tx,
                job_id: self.job_id,
                seen: &mut self.filters_seen,
                new_values,
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
    use connectra_domain::limits::MAX_FILTER_VALUE_BYTES;

    fn encode(cell: Option<&Option<Cell>>, ty: &Type) -> Option<Vec<u8>> {
        let mut out = BytesMut::new();
        match (CopyCell {
            cell,
            defaults: false,
        })
        .to_sql_checked(ty, &mut out)
        {
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
    fn filter_values_are_new_non_empty_short_and_each_sent_once() {
        let columns = import_columns(Service::Contact);
        let at = |name: &str| columns.position(name).unwrap_or(usize::MAX);
        let long = "x".repeat(MAX_FILTER_VALUE_BYTES + 1);
        let mut a = columns.empty_cells();
        a[at("country")] = Some(Cell::Text("Germany".into()));
        a[at("city")] = Some(Cell::Text(long.clone()));
        a[at("departments")] = Some(Cell::List(vec!["Sales".into(), "Legal".into()]));
        // not a filter field: never a filter value
        a[at("email")] = Some(Cell::Text("a@example.com".into()));
        let mut b = columns.empty_cells();
        b[at("country")] = Some(Cell::Text("Germany".into()));
        b[at("state")] = Some(Cell::Text(String::new()));
        b[at("departments")] = Some(Cell::List(vec!["Sales".into()]));
        let rows = [
            Cow::Owned(columns.row(uuid::Uuid::from_u128(1), a)),
            Cow::Owned(columns.row(uuid::Uuid::from_u128(2), b)),
        ];
        let sorted = |v: Vec<(Service, &'static str, String)>| {
            let mut v: Vec<_> = v.into_iter().map(|(_, k, v)| (k, v)).collect();
            v.sort();
            v
        };
        let mut seen = FilterValuesSeen::default();
        let first = new_filter_values(Service::Contact, &columns, &rows, &seen);
        assert_eq!(
            sorted(first.clone()),
            [
                ("country", "Germany".to_string()),
                ("departments", "Legal".to_string()),
                ("departments", "Sales".to_string()),
            ]
        );
        // a value as long as the limit is one
        assert!(is_filter_value(&long[1..]));
        seen.add(first[..1].to_vec());
        let second = new_filter_values(Service::Contact, &columns, &rows, &seen);
        assert_eq!(second.len(), 2);
        assert!(!second.contains(&first[0]));
        // another service's value of the same field is another value
        assert!(seen.known(Service::Company, first[0].1).is_none());
    }

    #[test]
    fn the_filter_values_seen_stay_within_their_bytes() {
        let mut seen = FilterValuesSeen::default();
        let big = |i: usize| (Service::Contact, "city", format!("{i:0>1000}"));
        seen.add((0..10_000).map(big).collect());
        assert!(seen.bytes <= FILTER_VALUES_SEEN_BYTES, "{}", seen.bytes);
        assert!(
            seen.bytes > FILTER_VALUES_SEEN_BYTES - 1000,
            "{}",
            seen.bytes
        );
        // one value twice counts once
        let before = seen.bytes;
        seen.add(vec![big(0)]);
        assert_eq!(seen.bytes, before);
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
