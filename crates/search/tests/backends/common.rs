//! The seeded dataset, the fixture that loads it into PostgreSQL and
//! OpenSearch, paging helpers, and a model of the expected results.

use std::cmp::Ordering;
use std::collections::BTreeSet;

use connectra_domain::catalogue::{self, FieldKind};
use connectra_domain::vql::{parse_vql, Bound, Purpose, SortDirection, ValidQuery};
use connectra_domain::Service;
use connectra_persistence::testing::TestDb;
use connectra_search::{
    fold_case, Document, OpenSearchBackend, Page, PostgresBackend, SearchBackend,
};
use diesel::sql_types::Jsonb;
use diesel::QueryableByName;
use diesel_async::RunQueryDsl;
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

// ---------------------------------------------------------------------------
// A deterministic random source
// ---------------------------------------------------------------------------

/// SplitMix64: tiny, seedable, good enough for test data.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// True `percent` % of the time.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    pub fn uuid(&mut self) -> uuid::Uuid {
        let mut bytes = [0_u8; 16];
        bytes[..8].copy_from_slice(&self.next_u64().to_le_bytes());
        bytes[8..].copy_from_slice(&self.next_u64().to_le_bytes());
        uuid::Builder::from_random_bytes(bytes).into_uuid()
    }

    /// Up to `max` distinct picks from `items`, in pick order.
    pub fn subset(&mut self, items: &[&str], max: usize) -> Vec<String> {
        let n = self.below(max + 1);
        let mut out: Vec<String> = Vec::new();
        for _ in 0..n {
            let v = (*self.pick(items)).to_owned();
            if !out.contains(&v) {
                out.push(v);
            }
        }
        out
    }
}

// ---------------------------------------------------------------------------
// The dataset
// ---------------------------------------------------------------------------

pub const CONTACTS: usize = 300;
pub const COMPANIES: usize = 100;

const COUNTRIES: &[Option<&str>] = &[
    Some("USA"),
    Some("usa"),
    Some("Usa"),
    Some("Germany"),
    Some("GERMANY"),
    Some("germany"),
    Some("France"),
    Some("Österreich"),
    Some("ÖSTERREICH"),
    None,
];
const STATES: &[Option<&str>] = &[
    Some("CA"),
    Some("ca"),
    Some("NY"),
    Some("Bavaria"),
    Some("bavaria"),
    None,
    None,
];
const CITIES: &[Option<&str>] = &[
    Some("Berlin"),
    Some("berlin"),
    Some("New York"),
    Some("new york"),
    Some("Zürich"),
    Some("ZÜRICH"),
    Some("Austin"),
    Some(""),
    None,
];

fn opt(value: Option<&str>) -> Value {
    value.map_or(Value::Null, |s| Value::String(s.to_owned()))
}

/// Timestamps with deliberate ties: many share a second, and several differ
/// only below the millisecond, where OpenSearch (and so the PostgreSQL
/// backend) cannot tell them apart.
fn timestamp(rng: &mut Rng) -> String {
    let base = OffsetDateTime::parse("2024-01-01T00:00:00Z", &Rfc3339).unwrap();
    let seconds = rng.below(40) as i64 * 3600;
    let micros = *rng.pick(&[0_i64, 100, 999, 1000, 1500, 123_456, 123_999]);
    let t = base + Duration::seconds(seconds) + Duration::microseconds(micros);
    t.format(&Rfc3339).unwrap()
}

fn company_row(rng: &mut Rng, i: usize) -> Value {
    let names = [
        Some("Acme"),
        Some("acme"),
        Some("ACME Labs"),
        Some("Globex"),
        Some("globex corp"),
        Some("Initech"),
        Some("Über Systems"),
        Some("über systems"),
        None,
    ];
    let domains = [
        Some("acme.com"),
        Some("globex.io"),
        Some("initech.de"),
        None,
    ];
    json!({
        "uuid": rng.uuid().to_string(),
        "name": opt(*rng.pick(&names)),
        "website": opt(rng.pick(&domains).map(|d| format!("https://www.{d}")).as_deref()),
        "domain": opt(*rng.pick(&domains)),
        "industries": rng.subset(&["Software", "software", "Retail", "FINANCE", "Health"], 3),
        "keywords": rng.subset(&["b2b", "SaaS", "saas", "AI", "ai"], 3),
        "technologies": rng.subset(&["Rust", "rust", "Postgres", "OpenSearch", "AWS"], 3),
        "employees_count": if rng.chance(15) { Value::Null } else { json!(*rng.pick(&[0, 1, 5, 10, 50, 50, 100, 250, 999, 1000, 5000, 20000])) },
        "annual_revenue": if rng.chance(20) { Value::Null } else { json!(*rng.pick(&[0_i64, 1_000_000, 2_500_000_000, 3_000_000_000, 9_000_000_000, 9_000_000_000])) },
        "total_funding": if rng.chance(30) { Value::Null } else { json!(rng.below(5) as i64 * 1_000_000_000) },
        "founded_year": if rng.chance(10) { Value::Null } else { json!(1950 + rng.below(75) as i64) },
        "country": opt(*rng.pick(COUNTRIES)),
        "state": opt(*rng.pick(STATES)),
        "city": opt(*rng.pick(CITIES)),
        "phone": if rng.chance(50) { Value::Null } else { json!(format!("+1 555 {:04}", rng.below(30))) },
        "linkedin_url": if rng.chance(50) { Value::Null } else { json!(format!("https://linkedin.com/company/c{i}")) },
        "extra": { "seed": i, "note": "generated" },
        "created_at": timestamp(rng),
        "updated_at": timestamp(rng),
    })
}

fn contact_row(rng: &mut Rng, i: usize, companies: &[Value]) -> Value {
    let first = [
        Some("Anna"),
        Some("anna"),
        Some("ANNA"),
        Some("Bob"),
        Some("bob"),
        Some("Élodie"),
        Some("élodie"),
        Some("Zoë"),
        None,
    ];
    let last = [
        Some("Smith"),
        Some("smith"),
        Some("Müller"),
        Some("MÜLLER"),
        Some("O'Brien"),
        None,
    ];
    let titles = [
        Some("Software Engineer"),
        Some("software engineer"),
        Some("Senior Software Engineer"),
        Some("VP Sales"),
        Some("Sales Engineer"),
        Some("Intern"),
        None,
    ];
    let first_name = *rng.pick(&first);
    let company_id = if rng.chance(20) {
        Value::Null
    } else {
        rng.pick(companies)["uuid"].clone()
    };
    json!({
        "uuid": rng.uuid().to_string(),
        "first_name": opt(first_name),
        "last_name": opt(*rng.pick(&last)),
        "email": if rng.chance(10) { Value::Null } else { json!(format!("{}{i}@example.com", first_name.unwrap_or("x").to_lowercase())) },
        "title": opt(*rng.pick(&titles)),
        "seniority": opt(*rng.pick(&[Some("Senior"), Some("senior"), Some("SENIOR"), Some("Intern"), Some("intern"), Some("Manager"), None])),
        "departments": rng.subset(&["Engineering", "engineering", "Sales", "SALES", "HR", "Marketing"], 3),
        "phone": if rng.chance(60) { Value::Null } else { json!(format!("+49 30 {:04}", rng.below(50))) },
        "linkedin_url": if rng.chance(50) { Value::Null } else { json!(format!("https://linkedin.com/in/p{i}")) },
        "email_status": opt(*rng.pick(&[Some("verified"), Some("Verified"), Some("unverified"), None])),
        "country": opt(*rng.pick(COUNTRIES)),
        "state": opt(*rng.pick(STATES)),
        "city": opt(*rng.pick(CITIES)),
        "company_id": company_id,
        "extra": if rng.chance(50) { json!({}) } else { json!({ "seed": i, "tags": ["a", "b"] }) },
        "created_at": timestamp(rng),
        "updated_at": timestamp(rng),
    })
}

/// The rows to insert: companies, then contacts (each without `id`).
pub fn dataset(seed: u64) -> (Vec<Value>, Vec<Value>) {
    let mut rng = Rng::new(seed);
    let companies: Vec<Value> = (0..COMPANIES).map(|i| company_row(&mut rng, i)).collect();
    let contacts: Vec<Value> = (0..CONTACTS)
        .map(|i| contact_row(&mut rng, i, &companies))
        .collect();
    (companies, contacts)
}

#[derive(QueryableByName)]
struct JsonRow {
    #[diesel(sql_type = Jsonb)]
    doc: Value,
}

/// Inserts `rows` with one plain `INSERT … SELECT … FROM
/// jsonb_populate_recordset(…)`.
pub async fn insert_rows(db: &TestDb, service: Service, rows: &[Value]) {
    let columns: Vec<&str> = catalogue::fields(service)
        .iter()
        .map(|f| f.name)
        .filter(|n| *n != "id")
        .collect();
    let columns = columns.join(", ");
    let table = service.table();
    let sql = format!(
        "INSERT INTO {table} ({columns}) SELECT {columns} FROM jsonb_populate_recordset(NULL::{table}, $1)"
    );
    let mut conn = db.pool().get().await.unwrap();
    diesel::sql_query(sql)
        .bind::<Jsonb, _>(Value::Array(rows.to_vec()))
        .execute(&mut *conn)
        .await
        .unwrap();
}

/// Every row of `service`'s table as a document: `to_jsonb(t)`.
pub async fn read_rows(db: &TestDb, service: Service) -> Vec<Document> {
    let mut conn = db.pool().get().await.unwrap();
    let rows: Vec<JsonRow> = diesel::sql_query(format!(
        "SELECT to_jsonb(t) - 'version' AS doc FROM {} t ORDER BY id",
        service.table()
    ))
    .load(&mut *conn)
    .await
    .unwrap();
    rows.into_iter()
        .map(|r| match r.doc {
            Value::Object(o) => o,
            other => panic!("not an object: {other}"),
        })
        .collect()
}

// ---------------------------------------------------------------------------
// The fixture
// ---------------------------------------------------------------------------

pub fn opensearch_url() -> String {
    std::env::var("OPENSEARCH_URL").unwrap_or_else(|_| "http://127.0.0.1:9200".to_owned())
}

/// An OpenSearch backend on indices of its own, deleted on drop.
#[derive(Debug)]
pub struct OsIndices(pub OpenSearchBackend, String);

impl OsIndices {
    pub async fn new() -> Self {
        let prefix = format!("test_{}", uuid::Uuid::new_v4().simple());
        let backend = OpenSearchBackend::new(&opensearch_url())
            .unwrap()
            .with_index_prefix(&prefix);
        backend.ensure_indices().await.unwrap_or_else(|e| {
            panic!(
                "OpenSearch at {} is needed ({e}); start it with `scripts/stack.sh up`",
                opensearch_url()
            )
        });
        Self(backend, prefix)
    }
}

impl Drop for OsIndices {
    fn drop(&mut self) {
        let prefix = self.1.clone();
        // A client of its own: the test's client has pooled connections tied
        // to the test's runtime, which is blocked right here.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            let Ok(backend) = OpenSearchBackend::new(&opensearch_url()) else {
                return;
            };
            let _ = rt.block_on(backend.with_index_prefix(&prefix).delete_indices());
        })
        .join();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Postgres,
    OpenSearch,
}

/// A fresh database with the seeded dataset and, if asked for, the same
/// rows indexed into fresh OpenSearch indices.
pub struct Fixture {
    /// The fixture's database (dropped with the fixture).
    pub db: TestDb,
    pub pg: PostgresBackend,
    pub os: Option<OsIndices>,
    pub companies: Vec<Document>,
    pub contacts: Vec<Document>,
}

pub const SEED: u64 = 0x5EED_C0DE;

impl Fixture {
    pub async fn new(which: Which) -> Self {
        Self::build(which == Which::OpenSearch).await
    }

    pub async fn both() -> Self {
        Self::build(true).await
    }

    async fn build(opensearch: bool) -> Self {
        let db = TestDb::new().await;
        let (companies, contacts) = dataset(SEED);
        insert_rows(&db, Service::Company, &companies).await;
        insert_rows(&db, Service::Contact, &contacts).await;
        let companies = read_rows(&db, Service::Company).await;
        let contacts = read_rows(&db, Service::Contact).await;
        let os = if opensearch {
            let os = OsIndices::new().await;
            os.0.index(Service::Company, &companies).await.unwrap();
            os.0.index(Service::Contact, &contacts).await.unwrap();
            os.0.refresh(Service::Company).await.unwrap();
            os.0.refresh(Service::Contact).await.unwrap();
            Some(os)
        } else {
            None
        };
        let pg = PostgresBackend::new(db.pool());
        Self {
            db,
            pg,
            os,
            companies,
            contacts,
        }
    }

    pub fn backend(&self, which: Which) -> &dyn SearchBackend {
        match which {
            Which::Postgres => &self.pg,
            Which::OpenSearch => &self.os.as_ref().expect("fixture without OpenSearch").0,
        }
    }

    pub fn rows(&self, service: Service) -> &[Document] {
        match service {
            Service::Contact => &self.contacts,
            Service::Company => &self.companies,
        }
    }
}

// ---------------------------------------------------------------------------
// Queries and paging
// ---------------------------------------------------------------------------

pub fn valid(service: Service, query: &Value) -> ValidQuery {
    parse_vql(query)
        .and_then(|q| q.validate(service, Purpose::Search))
        .unwrap_or_else(|e| panic!("{e} in {query}"))
}

/// Every page of `query`, following `next_search_after` (sent back through
/// JSON and `VqlQuery::validate`, as a client would).
#[derive(Debug, Clone, PartialEq)]
pub struct Paged {
    pub docs: Vec<Document>,
    pub cursors: Vec<Vec<Value>>,
    pub pages: usize,
}

impl Paged {
    pub fn uuids(&self) -> Vec<String> {
        uuids(&self.docs)
    }
}

pub fn uuids(docs: &[Document]) -> Vec<String> {
    docs.iter()
        .map(|d| d["uuid"].as_str().expect("uuid selected").to_owned())
        .collect()
}

pub async fn page_all(backend: &dyn SearchBackend, service: Service, query: &Value) -> Paged {
    let mut query = query.clone();
    let limit = valid(service, &query).limit as usize;
    let mut out = Paged {
        docs: Vec::new(),
        cursors: Vec::new(),
        pages: 0,
    };
    loop {
        let q = valid(service, &query);
        let Page {
            data,
            next_search_after,
        } = backend
            .search(service, &q)
            .await
            .unwrap_or_else(|e| panic!("{}: {e} for {query}", backend.name()));
        out.pages += 1;
        assert!(
            data.len() <= limit,
            "{} returned more than limit",
            backend.name()
        );
        out.docs.extend(data.iter().cloned());
        let Some(cursor) = next_search_after else {
            assert!(
                data.len() < limit,
                "{}: a full page without a cursor",
                backend.name()
            );
            break;
        };
        assert_eq!(
            data.len(),
            limit,
            "{}: a short page with a cursor",
            backend.name()
        );
        out.cursors.push(cursor.clone());
        query["search_after"] = Value::Array(cursor);
        assert!(out.pages <= 2000, "runaway paging for {query}");
    }
    out
}

pub async fn search(backend: &dyn SearchBackend, service: Service, query: &Value) -> Page {
    backend
        .search(service, &valid(service, query))
        .await
        .unwrap_or_else(|e| panic!("{}: {e} for {query}", backend.name()))
}

// ---------------------------------------------------------------------------
// The model: what a query must return
// ---------------------------------------------------------------------------

fn strings(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

fn millis(text: &str) -> i64 {
    let t = OffsetDateTime::parse(text, &Rfc3339).unwrap();
    (t.unix_timestamp_nanos().div_euclid(1_000_000)) as i64
}

/// A field's value for ranges and sorting: numbers as they are, timestamps
/// as epoch milliseconds (rounded down).
fn number(row: &Document, field: &catalogue::FieldDef) -> Option<i64> {
    let value = row.get(field.name)?;
    match field.kind {
        FieldKind::Timestamp => value.as_str().map(millis),
        _ => value.as_i64(),
    }
}

fn bound_number(bound: &Bound) -> i64 {
    match bound {
        Bound::Int(n) => *n,
        Bound::Timestamp(t) => (t.unix_timestamp_nanos().div_euclid(1_000_000)) as i64,
    }
}

fn keyword_hit(row: &Document, field: &catalogue::FieldDef, values: &[String]) -> bool {
    let wanted: BTreeSet<String> = values.iter().map(|v| fold_case(v)).collect();
    strings(row.get(field.name))
        .iter()
        .any(|v| wanted.contains(&fold_case(v)))
}

fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(fold_case)
        .collect()
}

fn text_hit(row: &Document, field: &catalogue::FieldDef, text: &str) -> bool {
    let have = words(row.get(field.name).and_then(Value::as_str).unwrap_or(""));
    words(text).iter().all(|w| have.contains(w))
}

fn range_hit(
    row: &Document,
    field: &catalogue::FieldDef,
    bounds: &connectra_domain::vql::RangeBounds,
) -> bool {
    let Some(v) = number(row, field) else {
        return false;
    };
    bounds.gt.is_none_or(|b| v > bound_number(&b))
        && bounds.gte.is_none_or(|b| v >= bound_number(&b))
        && bounds.lt.is_none_or(|b| v < bound_number(&b))
        && bounds.lte.is_none_or(|b| v <= bound_number(&b))
}

pub fn matches(row: &Document, q: &ValidQuery) -> bool {
    q.keyword_must.iter().all(|(f, v)| keyword_hit(row, f, v))
        && !q
            .keyword_must_not
            .iter()
            .any(|(f, v)| keyword_hit(row, f, v))
        && q.text_must.iter().all(|(f, t)| text_hit(row, f, t))
        && !q.text_must_not.iter().any(|(f, t)| text_hit(row, f, t))
        && q.range_must.iter().all(|(f, b)| range_hit(row, f, b))
        && !q.range_must_not.iter().any(|(f, b)| range_hit(row, f, b))
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    Int(i64),
    Str(String),
}

fn sort_key(row: &Document, field: &catalogue::FieldDef) -> Option<Key> {
    match field.kind {
        FieldKind::Keyword | FieldKind::Text => row
            .get(field.name)
            .and_then(Value::as_str)
            .map(|s| Key::Str(fold_case(s))),
        FieldKind::Uuid => row
            .get(field.name)
            .and_then(Value::as_str)
            .map(|s| Key::Str(s.to_owned())),
        _ => number(row, field).map(Key::Int),
    }
}

/// The order both backends must produce: per key, NULLs last in either
/// direction; strings lower-cased in byte order; timestamps by millisecond.
pub fn compare(a: &Document, b: &Document, q: &ValidQuery) -> Ordering {
    for (field, direction) in &q.order_by {
        let ord = match (sort_key(a, field), sort_key(b, field)) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Greater,
            (Some(_), None) => Ordering::Less,
            (Some(x), Some(y)) => match direction {
                SortDirection::Asc => x.cmp(&y),
                SortDirection::Desc => y.cmp(&x),
            },
        };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    Ordering::Equal
}

/// The uuids `query` must return over all its pages, in order.
pub fn expected(rows: &[Document], q: &ValidQuery) -> Vec<String> {
    let mut hits: Vec<&Document> = rows.iter().filter(|r| matches(r, q)).collect();
    hits.sort_by(|a, b| compare(a, b, q));
    hits.iter()
        .map(|r| r["uuid"].as_str().unwrap().to_owned())
        .collect()
}

/// A seeded row as a search must return it, projected on `columns`.
pub fn expected_doc(row: &Document, columns: &[&str]) -> Value {
    let mut doc = serde_json::Map::new();
    for name in columns {
        let value = row.get(*name).cloned().unwrap_or(Value::Null);
        let value = match value {
            Value::String(s) if name.ends_with("_at") => {
                let t = OffsetDateTime::parse(&s, &Rfc3339).unwrap();
                Value::String(t.to_offset(time::UtcOffset::UTC).format(&Rfc3339).unwrap())
            }
            other => other,
        };
        doc.insert((*name).to_owned(), value);
    }
    Value::Object(doc)
}
