//! CSV import rules (spec §2 and §3), as pure functions: header
//! normalisation, service inference, the mapping of columns to fields, typed
//! cell parsing, natural keys and record uuids.
//!
//! The import handler reads bytes and writes rows; everything it decides about
//! a row is decided here.

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use uuid::Uuid;

use crate::catalogue::{self, FieldDef, FieldKind};
use crate::limits::{self, quote_cell, MAX_FILTER_VALUE_BYTES, MAX_KEYWORD_BYTES};
use crate::list::split_list;
use crate::service::Service;

/// The namespace of record uuids derived from natural keys (UUIDv5).
pub const RECORD_NAMESPACE: Uuid = Uuid::from_u128(0x6c0e_a3f1_2b5d_4e8a_9f37_c1d2_e4b5_a697);

/// Columns that the system maintains; a CSV's values for them are ignored,
/// so that an export of every column re-imports unchanged.
const SYSTEM_COLUMNS: [&str; 3] = ["id", "created_at", "updated_at"];

/// Fields whose distinct values go into `filters_data`: the keyword fields a
/// UI filters on. Identifiers (email, phone, URLs, domain) are unique per
/// record and are not filter values, so they are left out.
pub fn filter_fields(service: Service) -> &'static [&'static str] {
    match service {
        Service::Contact => &[
            "seniority",
            "departments",
            "email_status",
            "country",
            "state",
            "city",
        ],
        Service::Company => &[
            "industries",
            "keywords",
            "technologies",
            "country",
            "state",
            "city",
        ],
    }
}

/// The columns an import writes for `service`: see [`ImportColumns`].
pub fn import_columns(service: Service) -> ImportColumns {
    ImportColumns::new(service)
}

/// The columns an import writes for one service, in catalogue order: `uuid`
/// first, `extra` last; `id`, `created_at` and `updated_at` are the
/// database's. A [`Row`]'s cells follow these columns, one cell a column,
/// and this is the one place that knows where its `uuid` and `extra` cells
/// are: code finds every other cell by its field's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportColumns {
    fields: Vec<&'static FieldDef>,
}

impl ImportColumns {
    /// The `uuid` cell's place: the catalogue's first field after `id`.
    const UUID: usize = 0;

    pub fn new(service: Service) -> Self {
        Self {
            fields: catalogue::fields(service)
                .iter()
                .filter(|f| !SYSTEM_COLUMNS.contains(&f.name))
                .collect(),
        }
    }

    /// The columns, in order.
    pub fn fields(&self) -> &[&'static FieldDef] {
        &self.fields
    }

    /// The columns, in order.
    pub fn iter(&self) -> std::slice::Iter<'_, &'static FieldDef> {
        self.fields.iter()
    }

    /// How many columns (and so cells a row) there are.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// Whether there are no columns (never, for a catalogue service).
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The place of the column called `name`, if there is one.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|f| f.name == name)
    }

    /// The place of the `uuid` cell: the first.
    pub fn uuid_cell(&self) -> usize {
        Self::UUID
    }

    /// The place of the `extra` cell: the last.
    pub fn extra_cell(&self) -> usize {
        self.fields.len().saturating_sub(1)
    }

    /// A row's cells, all empty.
    pub fn empty_cells(&self) -> Vec<Option<Cell>> {
        vec![None; self.fields.len()]
    }

    /// The record of `uuid` with `cells` (which follow these columns); its
    /// uuid cell is set to `uuid`.
    pub fn row(&self, uuid: Uuid, mut cells: Vec<Option<Cell>>) -> Row {
        if let Some(slot) = cells.get_mut(Self::UUID) {
            *slot = Some(Cell::Uuid(uuid));
        }
        Row { uuid, cells }
    }

    /// The uuid that `cells` (which follow these columns) hold in their
    /// uuid cell, if any.
    pub fn uuid_of(&self, cells: &[Option<Cell>]) -> Option<Uuid> {
        match cells.get(Self::UUID) {
            Some(Some(Cell::Uuid(u))) => Some(*u),
            _ => None,
        }
    }
}

impl<'a> IntoIterator for &'a ImportColumns {
    type Item = &'a &'static FieldDef;
    type IntoIter = std::slice::Iter<'a, &'static FieldDef>;

    fn into_iter(self) -> Self::IntoIter {
        self.fields.iter()
    }
}

/// A typed cell value.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Text(String),
    List(Vec<String>),
    Int(i64),
    Uuid(Uuid),
    /// Boxed: the rare `extra` object would otherwise make every cell large.
    Json(Box<Map<String, Value>>),
}

/// One record to upsert: `cells` follow its service's [`ImportColumns`]
/// (which also make rows, with [`ImportColumns::row`]); `None` is an empty
/// cell, which leaves the stored value alone.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub uuid: Uuid,
    pub cells: Vec<Option<Cell>>,
}

/// What one CSV line becomes: its record, and for contacts the company that
/// its `company_` columns describe.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedLine {
    pub record: Row,
    pub company: Option<Row>,
    /// A `uuid` or `company_uuid` cell was not a uuid, so the natural key
    /// gave the uuid instead (spec §2). Imports count these lines.
    pub uuid_replaced: bool,
    /// A filter field (of the record or its company) held a value longer
    /// than [`MAX_FILTER_VALUE_BYTES`]: it is stored and indexed, but not
    /// added to `filters_data`. Imports count these lines.
    pub filter_value_skipped: bool,
}

/// A problem that stops the whole import.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FatalImportError(pub String);

/// `First Name` → `first_name`: trimmed (and a BOM dropped), lower-cased,
/// runs of spaces or hyphens made one `_`.
pub fn normalise_header(raw: &str) -> String {
    let trimmed = raw.trim_start_matches('\u{feff}').trim().to_lowercase();
    let mut out = String::with_capacity(trimmed.len());
    let mut in_run = false;
    for c in trimmed.chars() {
        if c == ' ' || c == '-' || c == '\t' {
            if !in_run {
                out.push('_');
            }
            in_run = true;
        } else {
            out.push(c);
            in_run = false;
        }
    }
    out
}

/// Any contact column makes a file a contacts file.
pub fn infer_service(headers: &[String]) -> Service {
    let contact = ["first_name", "last_name", "email", "title"];
    if headers.iter().any(|h| contact.contains(&h.as_str())) {
        Service::Contact
    } else {
        Service::Company
    }
}

/// The lower-cased host of a website, without `www.`: `https://WWW.Acme.io/x` → `acme.io`.
pub fn domain_of(website: &str) -> Option<String> {
    let w = website.trim();
    let rest = w.split_once("://").map_or(w, |(_, r)| r);
    let host = rest
        .split(['/', '?', '#'])
        .next()
        .unwrap_or("")
        .rsplit('@')
        .next()
        .unwrap_or("");
    let host = host.split(':').next().unwrap_or("").to_lowercase();
    let host = host
        .strip_prefix("www.")
        .unwrap_or(&host)
        .trim_end_matches('.');
    (!host.is_empty() && host.contains('.')).then(|| host.to_string())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// index into the record's import columns
    Field(usize),
    /// index into the company's import columns (contacts' `company_` columns)
    CompanyField(usize),
    /// the `extra` column: a JSON object merged into `extra`
    Extra,
    /// unknown column: kept in `extra` under its header
    Unknown,
    /// a system column (`id`, `created_at`, `updated_at`)
    Ignored,
}

/// How a file's columns map to fields, decided once from its header row.
#[derive(Debug, Clone)]
pub struct HeaderPlan {
    pub service: Service,
    pub headers: Vec<String>,
    targets: Vec<Target>,
    columns: ImportColumns,
    company_columns: ImportColumns,
    has_company: bool,
}

impl HeaderPlan {
    /// Reads the header row. `service` comes from `job_data` when given.
    pub fn new(raw: &[String], service: Option<Service>) -> Result<Self, FatalImportError> {
        let headers: Vec<String> = raw.iter().map(|h| normalise_header(h)).collect();
        if headers.iter().all(String::is_empty) {
            return Err(FatalImportError("the file has no header row".into()));
        }
        let service = service.unwrap_or_else(|| infer_service(&headers));
        let columns = import_columns(service);
        let company_columns = import_columns(Service::Company);
        let mut targets = Vec::with_capacity(headers.len());
        let mut seen = BTreeMap::new();
        for (i, h) in headers.iter().enumerate() {
            if limits::has_nul(h) {
                return Err(FatalImportError(format!(
                    "the header of column {} contains a NUL byte (0x00)",
                    i + 1
                )));
            }
            if h.is_empty() {
                return Err(FatalImportError(format!(
                    "column {} has an empty header",
                    i + 1
                )));
            }
            if let Some(first) = seen.insert(h.clone(), i) {
                return Err(FatalImportError(format!(
                    "columns {} and {} are both '{h}' once normalised",
                    first + 1,
                    i + 1
                )));
            }
            let target = if SYSTEM_COLUMNS.contains(&h.as_str()) {
                Target::Ignored
            } else if h == "extra" {
                Target::Extra
            } else if let Some(pos) = columns.position(h) {
                Target::Field(pos)
            } else if let Some(pos) = h
                .strip_prefix("company_")
                .filter(|_| service == Service::Contact)
                .filter(|&name| name != "extra")
                .and_then(|name| company_columns.position(name))
            {
                Target::CompanyField(pos)
            } else {
                Target::Unknown
            };
            targets.push(target);
        }
        if !targets
            .iter()
            .any(|t| matches!(t, Target::Field(_) | Target::CompanyField(_)))
        {
            return Err(FatalImportError(format!(
                "no usable column: none of the headers ({}) is a {} field",
                headers.join(", "),
                service
            )));
        }
        let has_company = targets.iter().any(|t| matches!(t, Target::CompanyField(_)));
        Ok(Self {
            service,
            headers,
            targets,
            columns,
            company_columns,
            has_company,
        })
    }

    /// The import columns of this file's service.
    pub fn columns(&self) -> &[&'static FieldDef] {
        self.columns.fields()
    }

    /// Number of fields every row must have.
    pub fn width(&self) -> usize {
        self.targets.len()
    }

    /// Parses one data row. `Err` is the reason it is rejected.
    pub fn parse_row<'a, I>(&self, fields: I) -> Result<ParsedLine, String>
    where
        I: ExactSizeIterator<Item = &'a [u8]>,
    {
        if fields.len() != self.targets.len() {
            return Err(format!(
                "expected {} fields, found {}",
                self.targets.len(),
                fields.len()
            ));
        }
        let mut cells = self.columns.empty_cells();
        let mut company: Vec<Option<Cell>> = if self.has_company {
            self.company_columns.empty_cells()
        } else {
            Vec::new()
        };
        let mut extra = Map::new();
        // Spec §2: a record's uuid comes from its `uuid` cell only when that
        // is valid; otherwise from the natural key. The bad cell is named if
        // there is no natural key either.
        let mut bad_uuid: Option<String> = None;
        let mut bad_company_uuid: Option<String> = None;
        for ((raw, target), header) in fields.zip(&self.targets).zip(&self.headers) {
            if raw.contains(&0) {
                return Err(format!(
                    "column '{header}' contains a NUL byte (0x00), which cannot be stored"
                ));
            }
            let text = std::str::from_utf8(raw)
                .map_err(|_| format!("column '{header}' is not valid UTF-8"))?;
            if text.trim().is_empty() {
                continue;
            }
            match *target {
                Target::Field(i) => {
                    cells[i] =
                        parse_or_note_uuid(self.columns.fields()[i], header, text, &mut bad_uuid)?
                }
                Target::CompanyField(i) => {
                    company[i] = parse_or_note_uuid(
                        self.company_columns.fields()[i],
                        header,
                        text,
                        &mut bad_company_uuid,
                    )?
                }
                Target::Extra => {
                    let field = self.columns.fields()[self.columns.extra_cell()];
                    match parse_cell(field, header, text)? {
                        Cell::Json(m) => extra.extend(*m),
                        _ => return Err("column 'extra' must hold a JSON object".into()),
                    }
                }
                Target::Unknown => {
                    extra.insert(header.clone(), Value::String(text.to_string()));
                }
                Target::Ignored => {}
            }
        }
        let uuid_replaced = bad_uuid.is_some() || bad_company_uuid.is_some();
        let filter_value_skipped = has_long_filter_value(self.service, &self.columns, &cells)
            || has_long_filter_value(Service::Company, &self.company_columns, &company);
        let company = if company.iter().any(Option::is_some) {
            Some(
                finish_company(&self.company_columns, company, true)
                    .map_err(|e| naming_bad_uuid(e, bad_company_uuid))?,
            )
        } else if let Some(e) = bad_company_uuid {
            // a company column holding only an invalid uuid: nothing identifies it
            return Err(format!("cannot identify the company: {e}"));
        } else {
            None
        };
        if !extra.is_empty() {
            match &mut cells[self.columns.extra_cell()] {
                Some(Cell::Json(m)) => m.extend(extra),
                slot => *slot = Some(Cell::Json(Box::new(extra))),
            }
        }
        let record = match self.service {
            Service::Company => finish_company(&self.columns, cells, false),
            Service::Contact => finish_contact(
                &self.columns,
                cells,
                company.as_ref().map(|c| (&self.company_columns, c)),
            ),
        }
        .map_err(|e| naming_bad_uuid(e, bad_uuid))?;
        Ok(ParsedLine {
            record,
            company,
            uuid_replaced,
            filter_value_skipped,
        })
    }
}

/// The values a filter field's cell holds: its text, or its list's items.
pub fn filter_cell_values(cell: Option<&Cell>) -> &[String] {
    match cell {
        Some(Cell::Text(v)) => std::slice::from_ref(v),
        Some(Cell::List(items)) => items,
        _ => &[],
    }
}

/// Whether a filter value is short enough for `filters_data`'s unique index.
pub fn fits_filters_data(value: &str) -> bool {
    value.len() <= MAX_FILTER_VALUE_BYTES
}

/// Whether a filter field of `service` holds a value too long for `filters_data`.
fn has_long_filter_value(
    service: Service,
    columns: &ImportColumns,
    cells: &[Option<Cell>],
) -> bool {
    columns.iter().zip(cells).any(|(f, cell)| {
        filter_fields(service).contains(&f.name)
            && filter_cell_values(cell.as_ref())
                .iter()
                .any(|v| !fits_filters_data(v))
    })
}

/// A keyword value longer than [`MAX_KEYWORD_BYTES`] rejects its row.
fn check_keyword(header: &str, value: &str) -> Result<(), String> {
    if value.len() > MAX_KEYWORD_BYTES {
        return Err(format!(
            "column '{header}': a value of {} bytes is longer than the {MAX_KEYWORD_BYTES} bytes a keyword may hold ({})",
            value.len(),
            quote_cell(value)
        ));
    }
    Ok(())
}

/// [`parse_cell`], except that a `uuid` cell that is not a uuid does not
/// reject the row: its reason goes to `bad_uuid` and the cell stays empty,
/// so the natural key gives the uuid (spec §2).
fn parse_or_note_uuid(
    field: &FieldDef,
    header: &str,
    text: &str,
    bad_uuid: &mut Option<String>,
) -> Result<Option<Cell>, String> {
    match parse_cell(field, header, text) {
        Ok(cell) => Ok(Some(cell)),
        Err(e) if field.name == "uuid" => {
            *bad_uuid = Some(e);
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Adds the reason a `uuid` cell was not used to a row's rejection.
fn naming_bad_uuid(reason: String, bad_uuid: Option<String>) -> String {
    match bad_uuid {
        Some(bad) => format!("{reason} ({bad})"),
        None => reason,
    }
}

fn parse_cell(field: &FieldDef, header: &str, text: &str) -> Result<Cell, String> {
    let t = text.trim();
    Ok(match field.kind {
        FieldKind::Text => Cell::Text(text.to_string()),
        FieldKind::Keyword => {
            check_keyword(header, text)?;
            match field.name {
                "email" | "domain" => Cell::Text(t.to_lowercase()),
                _ => Cell::Text(text.to_string()),
            }
        }
        FieldKind::KeywordList => {
            let items = split_list(text);
            for item in &items {
                check_keyword(header, item)?;
            }
            Cell::List(items)
        }
        FieldKind::Integer => Cell::Int(
            t.parse::<i32>()
                .map_err(|_| {
                    format!(
                        "column '{header}': {} is not a whole number in the 32-bit range",
                        quote_cell(t)
                    )
                })?
                .into(),
        ),
        FieldKind::BigInt => {
            Cell::Int(t.parse::<i64>().map_err(|_| {
                format!("column '{header}': {} is not a whole number", quote_cell(t))
            })?)
        }
        FieldKind::Uuid => Cell::Uuid(
            Uuid::parse_str(t)
                .map_err(|_| format!("column '{header}': {} is not a uuid", quote_cell(t)))?,
        ),
        FieldKind::Json => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(m))
                if m.iter()
                    .any(|(k, v)| limits::has_nul(k) || limits::json_has_nul(v)) =>
            {
                return Err(format!(
                    "column '{header}' holds a NUL character (\\u0000), which cannot be stored"
                ))
            }
            Ok(Value::Object(m)) => Cell::Json(Box::new(m)),
            _ => return Err(format!("column '{header}' must hold a JSON object")),
        },
        FieldKind::Timestamp => Cell::Text(t.to_string()),
    })
}

fn text_of<'a>(columns: &ImportColumns, cells: &'a [Option<Cell>], name: &str) -> Option<&'a str> {
    match cells.get(columns.position(name)?)? {
        Some(Cell::Text(s)) => Some(s.as_str()),
        _ => None,
    }
}

fn set(columns: &ImportColumns, cells: &mut [Option<Cell>], name: &str, cell: Cell) {
    if let Some(slot) = columns.position(name).and_then(|i| cells.get_mut(i)) {
        *slot = Some(cell);
    }
}

fn v5(kind: &str, key: &str) -> Uuid {
    Uuid::new_v5(&RECORD_NAMESPACE, format!("{kind}:{key}").as_bytes())
}

/// The company's natural key: its domain, or failing that its lower-cased name.
fn company_key(columns: &ImportColumns, cells: &[Option<Cell>]) -> Option<String> {
    text_of(columns, cells, "domain")
        .map(|d| format!("domain:{d}"))
        .or_else(|| {
            text_of(columns, cells, "name").map(|n| format!("name:{}", n.trim().to_lowercase()))
        })
}

fn finish_company(
    columns: &ImportColumns,
    mut cells: Vec<Option<Cell>>,
    from_contact: bool,
) -> Result<Row, String> {
    if text_of(columns, &cells, "domain").is_none() {
        if let Some(d) = text_of(columns, &cells, "website").and_then(domain_of) {
            set(columns, &mut cells, "domain", Cell::Text(d));
        }
    }
    let uuid = match columns.uuid_of(&cells) {
        Some(u) => u,
        None => {
            let key = company_key(columns, &cells).ok_or_else(|| {
                if from_contact {
                    "cannot identify the company: company columns are given but no company_uuid, company_domain, company_website or company_name".to_string()
                } else {
                    "cannot identify the company: no uuid, domain, website or name".to_string()
                }
            })?;
            v5("company", &key)
        }
    };
    Ok(columns.row(uuid, cells))
}

/// `company`: the contact's company, with the columns its cells follow.
fn finish_contact(
    columns: &ImportColumns,
    mut cells: Vec<Option<Cell>>,
    company: Option<(&ImportColumns, &Row)>,
) -> Result<Row, String> {
    if let Some((_, c)) = company {
        if text_of(columns, &cells, "company_id").is_none()
            && !matches!(
                columns.position("company_id").and_then(|i| cells.get(i)),
                Some(Some(Cell::Uuid(_)))
            )
        {
            set(columns, &mut cells, "company_id", Cell::Uuid(c.uuid));
        }
    }
    let uuid = match columns.uuid_of(&cells) {
        Some(u) => u,
        None => {
            if let Some(email) = text_of(columns, &cells, "email") {
                v5("contact", &format!("email:{email}"))
            } else {
                let first = text_of(columns, &cells, "first_name").map(|s| s.trim().to_lowercase());
                let last = text_of(columns, &cells, "last_name").map(|s| s.trim().to_lowercase());
                if first.is_none() && last.is_none() {
                    return Err("cannot identify the contact: no uuid, email or name".into());
                }
                let company = company
                    .and_then(|(cols, c)| company_key(cols, &c.cells))
                    .unwrap_or_default();
                v5(
                    "contact",
                    &format!(
                        "name:{}|{}|{company}",
                        first.unwrap_or_default(),
                        last.unwrap_or_default()
                    ),
                )
            }
        }
    };
    Ok(columns.row(uuid, cells))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn plan(headers: &[&str]) -> HeaderPlan {
        let h: Vec<String> = headers.iter().map(|s| s.to_string()).collect();
        HeaderPlan::new(&h, None).unwrap()
    }

    fn parse(p: &HeaderPlan, row: &[&str]) -> Result<ParsedLine, String> {
        p.parse_row(row.iter().map(|s| s.as_bytes()))
    }

    fn cell<'a>(p: &HeaderPlan, row: &'a Row, name: &str) -> Option<&'a Cell> {
        let i = p.columns().iter().position(|f| f.name == name).unwrap();
        row.cells[i].as_ref()
    }

    #[test]
    fn headers_are_normalised() {
        assert_eq!(normalise_header("\u{feff} First Name "), "first_name");
        assert_eq!(normalise_header("Employees - Count"), "employees_count");
        assert_eq!(normalise_header("LinkedIn-URL"), "linkedin_url");
    }

    #[test]
    fn the_service_is_inferred_from_contact_columns() {
        assert_eq!(plan(&["Email", "Country"]).service, Service::Contact);
        assert_eq!(plan(&["Name", "Website"]).service, Service::Company);
        let h = vec!["name".to_string()];
        assert!(
            HeaderPlan::new(&h, Some(Service::Contact)).is_err(),
            "name is no contact field"
        );
    }

    #[test]
    fn the_uuid_cell_is_first_and_the_extra_cell_last() {
        for service in Service::ALL {
            let columns = import_columns(service);
            assert_eq!(columns.fields()[columns.uuid_cell()].name, "uuid");
            assert_eq!(columns.fields()[columns.extra_cell()].name, "extra");
            assert_eq!(columns.position("uuid"), Some(columns.uuid_cell()));
            assert_eq!(columns.position("extra"), Some(columns.extra_cell()));
            for system in SYSTEM_COLUMNS {
                assert_eq!(columns.position(system), None, "{system}");
            }
            let u = Uuid::from_u128(9);
            let row = columns.row(u, columns.empty_cells());
            assert_eq!(row.uuid, u);
            assert_eq!(columns.uuid_of(&row.cells), Some(u));
            assert_eq!(row.cells.iter().filter(|c| c.is_some()).count(), 1);
        }
    }

    #[test]
    fn domains_come_from_websites() {
        assert_eq!(
            domain_of("https://WWW.Acme.io/about?x=1").as_deref(),
            Some("acme.io")
        );
        assert_eq!(domain_of("acme.co.uk").as_deref(), Some("acme.co.uk"));
        assert_eq!(
            domain_of("http://user@Example.com:8080").as_deref(),
            Some("example.com")
        );
        assert_eq!(domain_of("localhost"), None);
    }

    #[test]
    fn typed_cells_that_do_not_parse_reject_the_row_naming_the_column() {
        let p = plan(&["name", "employees_count"]);
        let err = parse(&p, &["Acme", "abc"]).unwrap_err();
        assert!(
            err.contains("employees_count") && err.contains("'abc'"),
            "{err}"
        );
        let err = parse(&p, &["Acme"]).unwrap_err();
        assert_eq!(err, "expected 2 fields, found 1");
        let err = p
            .parse_row([b"Ac\xffme".as_slice(), b"3"].into_iter())
            .unwrap_err();
        assert!(err.contains("UTF-8"), "{err}");
    }

    #[test]
    fn uuids_are_explicit_or_derived_from_natural_keys() {
        let p = plan(&["email", "first_name"]);
        let a = parse(&p, &[" Ann@Example.COM ", "Ann"]).unwrap().record;
        let b = parse(&p, &["ann@example.com", "Annie"]).unwrap().record;
        assert_eq!(
            a.uuid, b.uuid,
            "email is the contact's key, case-insensitively"
        );
        assert_eq!(
            cell(&p, &a, "email"),
            Some(&Cell::Text("ann@example.com".into()))
        );
        let p2 = plan(&["uuid", "email"]);
        let u = "0b6f8c9e-1d2a-4b3c-8d4e-5f6a7b8c9d0e";
        assert_eq!(
            parse(&p2, &[u, "ann@example.com"])
                .unwrap()
                .record
                .uuid
                .to_string(),
            u
        );
        // an invalid uuid falls back to the natural key (spec §2), and says so ...
        let replaced = parse(&p2, &["nope", "ann@example.com"]).unwrap();
        assert_eq!(replaced.record.uuid, a.uuid);
        assert!(replaced.uuid_replaced);
        assert!(!parse(&p2, &[u, "ann@example.com"]).unwrap().uuid_replaced);
        // ... and without one the rejection names both reasons
        let p4 = plan(&["uuid", "title"]);
        let err = parse(&p4, &["nope", "CTO"]).unwrap_err();
        assert!(err.contains("cannot identify the contact"), "{err}");
        assert!(err.contains("'nope' is not a uuid"), "{err}");
        // the same for a contact's company
        let p5 = plan(&["email", "company_uuid", "company_name"]);
        let row = parse(&p5, &["ann@example.com", "nope", "ACME"]).unwrap();
        assert!(row.uuid_replaced);
        assert_eq!(row.company.unwrap().uuid, v5("company", "name:acme"));
        let p6 = plan(&["email", "company_uuid"]);
        let err = parse(&p6, &["ann@example.com", "nope"]).unwrap_err();
        assert!(err.contains("cannot identify the company"), "{err}");
        // a company_id that is not a uuid is an unparsable value: rejected
        let p7 = plan(&["email", "company_id"]);
        let err = parse(&p7, &["ann@example.com", "nope"]).unwrap_err();
        assert!(err.contains("company_id"), "{err}");
        let p3 = plan(&["first_name", "seniority"]);
        assert!(parse(&p3, &["", "vp"])
            .unwrap_err()
            .contains("cannot identify the contact"));
    }

    #[test]
    fn company_columns_describe_and_link_the_contacts_company() {
        let p = plan(&[
            "email",
            "Company Name",
            "company_website",
            "company_industries",
            "company_id",
        ]);
        let line = parse(
            &p,
            &[
                "a@x.io",
                "Acme",
                "https://www.acme.io",
                "SaaS; Software",
                "",
            ],
        )
        .unwrap();
        let company = line.company.unwrap();
        let cols = import_columns(Service::Company);
        let dom = cols.iter().position(|f| f.name == "domain").unwrap();
        assert_eq!(company.cells[dom], Some(Cell::Text("acme.io".into())));
        assert_eq!(company.uuid, v5("company", "domain:acme.io"));
        assert_eq!(
            cell(&p, &line.record, "company_id"),
            Some(&Cell::Uuid(company.uuid))
        );
        // the same company from a companies file gets the same uuid
        let pc = plan(&["name", "website"]);
        assert_eq!(
            parse(&pc, &["ACME", "acme.io"]).unwrap().record.uuid,
            company.uuid
        );
    }

    #[test]
    fn unknown_columns_and_the_extra_column_land_in_extra_and_system_columns_are_ignored() {
        let p = plan(&["name", "Favourite Colour", "extra", "created_at", "id"]);
        let line = parse(
            &p,
            &[
                "Acme",
                "teal",
                "{\"tier\": 2}",
                "2020-01-01T00:00:00Z",
                "17",
            ],
        )
        .unwrap();
        let Some(Cell::Json(extra)) = cell(&p, &line.record, "extra") else {
            panic!("no extra")
        };
        assert_eq!(extra["favourite_colour"], "teal");
        assert_eq!(extra["tier"], 2);
        assert!(parse(&p, &["Acme", "", "[1]", "", ""])
            .unwrap_err()
            .contains("JSON object"));
    }

    #[test]
    fn non_latin_text_is_kept_byte_exact() {
        let p = plan(&["first_name", "last_name", "title"]);
        let line = parse(
            &p,
            &["Zoë", "Ōtsuka 大塚", "Line one\nline two, \"quoted\""],
        )
        .unwrap();
        assert_eq!(
            cell(&p, &line.record, "last_name"),
            Some(&Cell::Text("Ōtsuka 大塚".into()))
        );
        assert_eq!(
            cell(&p, &line.record, "title"),
            Some(&Cell::Text("Line one\nline two, \"quoted\"".into()))
        );
    }

    #[test]
    fn values_no_store_can_hold_reject_their_row_naming_the_column() {
        let p = plan(&["email", "title", "country", "departments", "extra"]);
        let err = parse(&p, &["a@x.io", "CT\0O", "", "", ""]).unwrap_err();
        assert!(
            err.contains("column 'title'") && err.contains("NUL"),
            "{err}"
        );
        let err = parse(&p, &["a@x.io", "", "", "", "{\"k\": \"v\\u0000\"}"]).unwrap_err();
        assert!(
            err.contains("column 'extra'") && err.contains("NUL"),
            "{err}"
        );
        let long = "x".repeat(MAX_KEYWORD_BYTES + 1);
        let err = parse(&p, &["a@x.io", "", &long, "", ""]).unwrap_err();
        assert!(
            err.contains("column 'country'") && err.contains("8192 bytes"),
            "{err}"
        );
        assert!(err.len() < 400, "the reason quotes only the start: {err}");
        let err = parse(&p, &["a@x.io", "", "", &format!("Sales; {long}"), ""]).unwrap_err();
        assert!(err.contains("column 'departments'"), "{err}");
        // text fields keep long values; a keyword at the limit is fine
        let ok = parse(
            &p,
            &[
                "a@x.io",
                &"t".repeat(40_000),
                &"c".repeat(MAX_KEYWORD_BYTES),
                "",
                "",
            ],
        );
        assert!(ok.is_ok(), "{ok:?}");
        // a filter value too long for filters_data is stored, and said so
        let line = parse(
            &p,
            &[
                "a@x.io",
                "",
                &"c".repeat(MAX_FILTER_VALUE_BYTES + 1),
                "",
                "",
            ],
        )
        .unwrap();
        assert!(line.filter_value_skipped);
        let line = parse(&p, &["a@x.io", "", "USA", "", ""]).unwrap();
        assert!(!line.filter_value_skipped);
        // quoted cells are cut short
        let p2 = plan(&["name", "employees_count"]);
        let err = parse(&p2, &["Acme", &"9".repeat(50_000)]).unwrap_err();
        assert!(err.len() < 400 && err.contains("(50000 bytes)"), "{err}");
        let h = vec!["email".to_string(), "b\0".to_string()];
        assert!(HeaderPlan::new(&h, None).unwrap_err().0.contains("NUL"));
    }

    #[test]
    fn fatal_headers_are_named() {
        let h = |v: &[&str]| {
            HeaderPlan::new(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>(), None)
        };
        assert!(h(&["colour", "size"])
            .unwrap_err()
            .0
            .contains("no usable column"));
        assert!(h(&["Email", "email"])
            .unwrap_err()
            .0
            .contains("both 'email'"));
        assert!(h(&[""]).unwrap_err().0.contains("no header"));
    }
}
