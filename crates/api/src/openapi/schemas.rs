//! The request schemas that depend on the field catalogue and on the
//! deployment, written as JSON Schema from the same constants the server
//! validates with, so that the document and the server cannot drift apart:
//!
//! - `ContactVql` / `CompanyVql` (searches) and `ContactExportVql` /
//!   `CompanyExportVql` (an export's `job_data.vql`): each service's field
//!   names in `select_columns`, `order_by` and every `where` section, with the
//!   value shape of each field's kind;
//! - `CreateJobRequest`: one alternative per job type, each with its own
//!   `job_data`, and `s3_bucket` limited to this deployment's buckets;
//! - the `filter_key` parameter of `GET /common/filters`.
//!
//! What JSON Schema cannot say is left to the server's 400s, and named in the
//! schemas' descriptions: a `search_after` must match the sort it pages, a
//! field may appear once in `order_by`, a `filter_key` must be one of *its
//! service's* filters, a string is measured in bytes (the schema counts
//! characters), and a query holds at most 1,000 keyword values and 256 text
//! words in all.

use connectra_domain::catalogue::{self, FieldDef, FieldKind};
use connectra_domain::import::filter_fields;
use connectra_domain::job::{CreateRules, EXPORT_CSV_FILE, INSERT_CSV_FILE, REINDEX_SEARCH};
use connectra_domain::limits::{
    MAX_KEYWORD_BYTES, MAX_KEYWORD_VALUES, MAX_RETRY_COUNT, MAX_RETRY_INTERVAL_SECS,
    MIN_RETRY_INTERVAL_SECS,
};
use connectra_domain::vql::MAX_LIMIT;
use connectra_domain::Service;
use serde_json::{json, Map, Value};

/// No NUL character: no record can hold one, so the server refuses it.
const NO_NUL: &str = r"^[^\x00]*$";

/// The component name of a service's schema: `Contact` + `Vql`, …
fn name(service: Service, suffix: &str) -> String {
    let s = service.as_str();
    format!("{}{}{suffix}", s[..1].to_uppercase(), &s[1..])
}

fn reference(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn nullable(schema: Value) -> Value {
    json!({ "oneOf": [{ "type": "null" }, schema] })
}

fn names(service: Service, keep: impl Fn(&FieldDef) -> bool) -> Vec<&'static str> {
    catalogue::fields(service)
        .iter()
        .filter(|f| keep(f))
        .map(|f| f.name)
        .collect()
}

/// A query string: at most as many characters as the server allows bytes.
fn query_string() -> Value {
    json!({ "type": "string", "maxLength": MAX_KEYWORD_BYTES, "pattern": NO_NUL })
}

fn keyword_values(field: &FieldDef) -> Value {
    let item = if field.kind == FieldKind::Uuid {
        json!({ "type": "string", "format": "uuid" })
    } else {
        query_string()
    };
    json!({ "type": "array", "minItems": 1, "maxItems": MAX_KEYWORD_VALUES, "items": item })
}

fn text_terms(_: &FieldDef) -> Value {
    json!({
        "type": "string", "maxLength": MAX_KEYWORD_BYTES,
        "pattern": r"^[^\x00]*\S[^\x00]*$",
        "description": "Words that must all match; not blank",
    })
}

/// `{gt|gte, lt|lte}` with the field's value type; at least one bound, and
/// not both of a pair. A `null` bound counts as absent, as on the server.
fn range_bounds(field: &FieldDef) -> Value {
    let value = match field.kind {
        FieldKind::Integer => {
            json!({ "type": "integer", "minimum": i32::MIN, "maximum": i32::MAX })
        }
        FieldKind::BigInt => json!({ "type": "integer", "minimum": i64::MIN, "maximum": i64::MAX }),
        _ => json!({ "type": "string", "format": "date-time" }),
    };
    let given = |ops: &[&str]| {
        let props: Map<String, Value> = ops
            .iter()
            .map(|op| (op.to_string(), value.clone()))
            .collect();
        json!({ "required": ops, "properties": props })
    };
    let bound = json!({ "oneOf": [{ "type": "null" }, value.clone()] });
    json!({
        "type": "object", "additionalProperties": false,
        "properties": { "gt": bound, "gte": bound, "lt": bound, "lte": bound },
        "anyOf": [given(&["gt"]), given(&["gte"]), given(&["lt"]), given(&["lte"])],
        "not": { "anyOf": [given(&["gt", "gte"]), given(&["lt", "lte"])] },
    })
}

/// One `where` section: `must` and `must_not`, maps from the fields that
/// `keep` allows to `value`'s shape; at least one field in one of them.
fn section(service: Service, keep: fn(&FieldDef) -> bool, value: fn(&FieldDef) -> Value) -> Value {
    let fields: Map<String, Value> = catalogue::fields(service)
        .iter()
        .filter(|f| keep(f))
        .map(|f| (f.name.to_string(), value(f)))
        .collect();
    let clauses = json!({ "type": "object", "additionalProperties": false, "properties": fields });
    let non_empty = |key: &str| json!({ "required": [key], "properties": { key: { "type": "object", "minProperties": 1 } } });
    json!({
        "type": "object", "additionalProperties": false,
        "properties": { "must": nullable(clauses.clone()), "must_not": nullable(clauses) },
        "anyOf": [non_empty("must"), non_empty("must_not")],
    })
}

fn where_clause(service: Service) -> Value {
    let given =
        |key: &str| json!({ "required": [key], "properties": { key: { "type": "object" } } });
    json!({
        "type": "object", "additionalProperties": false,
        "description": "AND of the sections given; absent or null matches every record",
        "properties": {
            "keyword_match": nullable(section(service, FieldDef::keyword_matchable, keyword_values)),
            "text_match": nullable(section(service, FieldDef::text_matchable, text_terms)),
            "range_query": nullable(section(service, FieldDef::rangeable, range_bounds)),
        },
        "anyOf": [given("keyword_match"), given("text_match"), given("range_query")],
    })
}

/// A VQL query for `service`; an export's must name its columns.
fn vql(service: Service, export: bool) -> Value {
    let columns = json!({
        "type": "array", "minItems": 1, "uniqueItems": true,
        "items": { "type": "string", "enum": names(service, |_| true) },
    });
    let order = json!({
        "type": "array",
        "description": "Most significant first; each field at most once; uuid (ascending) is always the last tie-breaker",
        "items": {
            "type": "object", "additionalProperties": false, "required": ["order_by"],
            "properties": {
                "order_by": { "type": "string", "enum": names(service, FieldDef::sortable) },
                "order_direction": { "type": "string", "enum": ["asc", "desc"], "default": "asc" },
            },
        },
    });
    let mut schema = json!({
        "type": "object", "additionalProperties": false,
        "description": format!("A VQL query over {}s (connectra-spec.md, VQL)", service.as_str()),
        "properties": {
            "where": nullable(where_clause(service)),
            "select_columns": if export { columns } else { nullable(columns) },
            "order_by": nullable(order),
            "limit": nullable(json!({ "type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": 500 })),
            "search_after": nullable(json!({
                "type": "array",
                "description": "The previous page's next_search_after, unchanged: one value per sort field",
                "items": { "type": ["string", "integer", "null"] },
            })),
        },
    });
    if export {
        schema["required"] = json!(["select_columns"]);
        schema["description"] = json!(format!(
            "An export's VQL query over {}s: select_columns is required",
            service.as_str()
        ));
    }
    schema
}

fn bucket(rules: Option<&CreateRules>) -> Value {
    let mut schema =
        json!({ "type": "string", "description": "One of S3_ALLOWED_BUCKETS; default S3_BUCKET" });
    if let Some(rules) = rules {
        schema["enum"] = json!(rules.allowed_buckets);
    }
    nullable(schema)
}

/// One alternative of `CreateJobRequest`: `job_type` fixed, its `job_data`.
fn create_alternative(job_type: &str, job_data: Value) -> Value {
    json!({
        "type": "object", "additionalProperties": false, "required": ["job_type", "job_data"],
        "properties": {
            "job_type": { "const": job_type },
            "job_data": job_data,
            "retry_count": nullable(json!({
                "type": "integer", "minimum": 0, "maximum": MAX_RETRY_COUNT, "default": 0,
                "description": "Retries after a failure",
            })),
            "retry_interval": nullable(json!({
                "type": "integer", "minimum": MIN_RETRY_INTERVAL_SECS, "maximum": MAX_RETRY_INTERVAL_SECS,
                "description": "Seconds before a retry; default RETRY_INTERVAL_SECONDS (30)",
            })),
        },
    })
}

fn create_request(rules: Option<&CreateRules>) -> Value {
    let services: Vec<&str> = Service::ALL.iter().map(|s| s.as_str()).collect();
    let insert = json!({
        "type": "object", "additionalProperties": false, "required": ["s3_key"],
        "properties": {
            "s3_key": { "type": "string", "pattern": r"^[^\x00]*\S[^\x00]*$", "description": "The uploaded CSV's key" },
            "s3_bucket": bucket(rules),
            "service": nullable(json!({ "type": "string", "enum": services,
                "description": "Inferred from the CSV's header when absent" })),
        },
    });
    let export = |service: Service| {
        json!({
            "type": "object", "additionalProperties": false, "required": ["service", "vql"],
            "properties": {
                "service": { "const": service.as_str() },
                "vql": reference(&name(service, "ExportVql")),
                "s3_bucket": bucket(rules),
            },
        })
    };
    let reindex = json!({
        "type": "object", "additionalProperties": false, "required": ["service"],
        "properties": { "service": { "type": "string", "enum": services } },
    });
    let mut alternatives = vec![
        create_alternative(INSERT_CSV_FILE, insert),
        create_alternative(
            EXPORT_CSV_FILE,
            json!({ "oneOf": Service::ALL.map(export) }),
        ),
        create_alternative(REINDEX_SEARCH, reindex),
    ];
    // job types an embedding service registered: their handlers validate job_data
    let builtin = [INSERT_CSV_FILE, EXPORT_CSV_FILE, REINDEX_SEARCH];
    if let Some(rules) = rules {
        alternatives.extend(
            rules
                .job_types
                .iter()
                .filter(|t| !builtin.contains(&t.as_str()))
                .map(|t| create_alternative(t, json!({ "type": "object" }))),
        );
    }
    json!({
        "description": "POST /common/jobs/create: job_data depends on job_type",
        "oneOf": alternatives,
    })
}

/// Fills in the schemas above. `rules` is the serving deployment's (its
/// buckets and job types); without it the document holds the built-in job
/// types and any bucket name.
pub(super) fn refine(doc: &mut Value, rules: Option<&CreateRules>) {
    let schemas = &mut doc["components"]["schemas"];
    for service in Service::ALL {
        schemas[name(service, "Vql")] = vql(service, false);
        schemas[name(service, "ExportVql")] = vql(service, true);
    }
    schemas["CreateJobRequest"] = create_request(rules);
    let mut keys: Vec<&str> = Service::ALL
        .iter()
        .flat_map(|s| filter_fields(*s).iter().copied())
        .collect();
    keys.sort_unstable();
    keys.dedup();
    // an empty filter_key lists every filter, as an absent one does
    keys.insert(0, "");
    if let Some(params) = doc["paths"]["/common/filters"]["get"]["parameters"].as_array_mut() {
        for param in params.iter_mut().filter(|p| p["name"] == "filter_key") {
            param["schema"] = json!({ "type": "string", "enum": keys });
            param["description"] = json!(Service::ALL
                .iter()
                .map(|s| format!("{}: {}", s.as_str(), filter_fields(*s).join(", ")))
                .collect::<Vec<_>>()
                .join("; "));
        }
    }
}
