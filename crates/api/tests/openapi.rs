//! The OpenAPI document: served, 3.1, complete against the route table
//! (`connectra_api::ENDPOINTS`, which `configure` registers), secured where
//! the server asks for a key, and its create-job example accepted.

#![allow(clippy::unwrap_used)]

mod common;

use actix_web::http::StatusCode;
use actix_web::{test, App};
use common::call;
use connectra_api::{configure, AppState, ENDPOINTS};
use connectra_domain::job::{CreateRules, EXPORT_CSV_FILE, INSERT_CSV_FILE, REINDEX_SEARCH};
use connectra_persistence::testing::TestDb;
use connectra_persistence::JobRepo;
use serde_json::Value;

const KEY: &str = "test-key-1";

fn rules(bucket: &str) -> CreateRules {
    CreateRules {
        job_types: [INSERT_CSV_FILE, EXPORT_CSV_FILE, REINDEX_SEARCH]
            .into_iter()
            .map(String::from)
            .collect(),
        allowed_buckets: [bucket.to_string()].into_iter().collect(),
        default_retry_interval: 30,
    }
}

fn state(db: &TestDb, bucket: &str) -> AppState {
    AppState::new(
        JobRepo::new(db.pool()),
        vec![KEY.into()],
        rules(bucket),
        64 * 1024,
    )
}

macro_rules! app {
    ($db:expr, $bucket:expr) => {
        test::init_service(App::new().configure(configure(state(&$db, $bucket)))).await
    };
}

/// The document as the server serves it.
async fn served(
    app: &impl actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
        Error = actix_web::Error,
    >,
) -> Value {
    let (status, doc) = call(
        app,
        test::TestRequest::get().uri("/openapi.json").to_request(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    doc
}

#[actix_web::test]
async fn the_document_is_openapi_3_1_and_public() {
    let db = TestDb::new().await;
    let app = app!(db, "connectra");
    let doc = served(&app).await;
    let version = doc["openapi"].as_str().unwrap_or_default();
    assert!(version.starts_with("3.1."), "openapi version {version:?}");
    // the served document is this deployment's: its buckets in s3_bucket
    assert_ne!(doc, connectra_api::openapi::document());
    assert_eq!(
        doc,
        connectra_api::openapi::document_for(Some(&rules("connectra")))
    );
    let insert = &doc["components"]["schemas"]["CreateJobRequest"]["oneOf"][0];
    assert_eq!(
        insert["properties"]["job_type"]["const"], "insert_csv_file",
        "{insert}"
    );
    assert_eq!(
        insert["properties"]["job_data"]["properties"]["s3_bucket"]["oneOf"][1]["enum"],
        serde_json::json!(["connectra"]),
        "{insert}"
    );
    assert!(
        doc["components"]["schemas"]["ErrorBody"].is_object(),
        "{doc}"
    );
}

/// Every `$ref` of the document names a schema it holds.
#[actix_web::test]
async fn every_reference_resolves() {
    fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(m) => {
                if let Some(r) = m.get("$ref").and_then(Value::as_str) {
                    out.push(r);
                }
                m.values().for_each(|v| refs(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let doc = connectra_api::openapi::document();
    let mut found = Vec::new();
    refs(&doc, &mut found);
    assert!(!found.is_empty());
    for r in found {
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("unexpected reference {r}"));
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "{r} does not resolve"
        );
    }
}

/// The document's enums are written out by hand beside the domain's: a
/// status or service added on one side only fails here; the job types are
/// the create request's alternatives.
#[actix_web::test]
async fn the_documents_enums_are_the_domains() {
    let doc = connectra_api::openapi::document();
    let values = |schema: &str| -> Vec<String> {
        let mut v: Vec<String> = doc["components"]["schemas"][schema]["enum"]
            .as_array()
            .unwrap_or_else(|| panic!("{schema} has no enum"))
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    };
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(
        values("JobStatus"),
        sorted(
            connectra_domain::job::JobStatus::ALL
                .iter()
                .map(|s| s.as_str().to_string())
                .collect()
        )
    );
    // the create request has one alternative per built-in job type
    let job_types: Vec<String> = doc["components"]["schemas"]["CreateJobRequest"]["oneOf"]
        .as_array()
        .unwrap()
        .iter()
        .map(|alt| {
            alt["properties"]["job_type"]["const"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        sorted(job_types),
        sorted(
            [INSERT_CSV_FILE, EXPORT_CSV_FILE, REINDEX_SEARCH]
                .map(String::from)
                .to_vec()
        )
    );
    assert_eq!(
        values("ServiceName"),
        sorted(
            connectra_domain::Service::ALL
                .iter()
                .map(|s| s.as_str().to_string())
                .collect()
        )
    );
}

/// A route added to `ENDPOINTS` without documentation, or documented but not
/// served, fails here.
#[actix_web::test]
async fn every_route_is_documented_with_its_method_and_nothing_else_is() {
    let db = TestDb::new().await;
    let app = app!(db, "connectra");
    let doc = served(&app).await;
    let paths = doc["paths"].as_object().unwrap();
    let mut served_ops: Vec<(String, String)> = ENDPOINTS
        .iter()
        .map(|e| (e.method.to_lowercase(), e.path.to_string()))
        .collect();
    let mut documented: Vec<(String, String)> = paths
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .filter(|k| ["get", "post", "put", "patch", "delete"].contains(&k.as_str()))
                .map(|m| (m.clone(), path.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    served_ops.sort();
    documented.sort();
    assert_eq!(documented, served_ops, "documented operations vs ENDPOINTS");
    assert_eq!(ENDPOINTS.len(), 14);

    // and the table is what the server really answers: no documented
    // operation gets the "no route" 404
    for (method, path) in &documented {
        let uri = path.replace("{uuid}", "00000000-0000-0000-0000-000000000000");
        let req = match method.as_str() {
            "get" => test::TestRequest::get(),
            _ => test::TestRequest::post().set_payload("{}"),
        }
        .uri(&uri)
        .insert_header(("X-API-Key", KEY))
        .insert_header(("content-type", "application/json"))
        .to_request();
        let resp = actix_web::dev::Service::call(&app, req).await.unwrap();
        let status = resp.status();
        let body = test::read_body(resp).await;
        let text = String::from_utf8_lossy(&body);
        assert!(
            !text.contains("no route for"),
            "{method} {path}: {status} {text}"
        );
    }
    // an unknown route does get it (so the check above can fail)
    let req = test::TestRequest::get()
        .uri("/common/nope")
        .insert_header(("X-API-Key", KEY))
        .to_request();
    let (status, body) = call(&app, req).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        body["error"].as_str().unwrap().contains("no route for"),
        "{body}"
    );
}

#[actix_web::test]
async fn protected_operations_reference_the_api_key_scheme() {
    let db = TestDb::new().await;
    let app = app!(db, "connectra");
    let doc = served(&app).await;
    let scheme = &doc["components"]["securitySchemes"]["api_key"];
    assert_eq!(scheme["type"], "apiKey", "{doc}");
    assert_eq!(scheme["in"], "header");
    assert_eq!(scheme["name"], "X-API-Key");
    for e in ENDPOINTS {
        let op = &doc["paths"][e.path][e.method.to_lowercase()];
        let secured = op["security"]
            .as_array()
            .is_some_and(|s| s.iter().any(|r| r.get("api_key").is_some()));
        assert_eq!(secured, !e.public, "{} {}: {op}", e.method, e.path);
        if !e.public {
            assert!(
                op["responses"]["401"].is_object(),
                "{} {}",
                e.method,
                e.path
            );
        }
        // the server agrees: without a key, protected routes answer 401
        let uri = e
            .path
            .replace("{uuid}", "00000000-0000-0000-0000-000000000000");
        let req = match e.method {
            "GET" => test::TestRequest::get(),
            _ => test::TestRequest::post(),
        }
        .uri(&uri)
        .to_request();
        let resp = actix_web::dev::Service::call(&app, req).await.unwrap();
        assert_eq!(
            resp.status() == StatusCode::UNAUTHORIZED,
            !e.public,
            "{} {}: {}",
            e.method,
            e.path,
            resp.status()
        );
    }
}

#[actix_web::test]
async fn the_documented_create_job_example_is_accepted() {
    let db = TestDb::new().await;
    let doc = connectra_api::openapi::document();
    let example = doc["paths"]["/common/jobs/create"]["post"]["requestBody"]["content"]
        ["application/json"]["examples"]["insert_csv_file"]["value"]
        .clone();
    assert_eq!(example["job_type"], "insert_csv_file", "{doc}");
    // without `s3_bucket` the job uses the server's own bucket
    assert!(example["job_data"]["s3_bucket"].is_null(), "{example}");
    let bucket = "connectra".to_string();
    let app = app!(db, &bucket);
    let (status, body) = call(&app, common::post_as(KEY, "/common/jobs/create", &example)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["data"]["job_type"], "insert_csv_file");
    // the response has every field the document's Job schema lists
    let props = doc["components"]["schemas"]["Job"]["properties"]
        .as_object()
        .unwrap();
    let job = body["data"].as_object().unwrap();
    let mut documented: Vec<&String> = props.keys().collect();
    let mut returned: Vec<&String> = job.keys().collect();
    documented.sort();
    returned.sort();
    assert_eq!(documented, returned);
}

/// The VQL schemas come from the field catalogue: each service's columns,
/// sortable fields and the fields each `where` section accepts.
#[actix_web::test]
async fn the_vql_schemas_name_each_services_own_fields() {
    use connectra_domain::catalogue::{fields, FieldDef};
    use connectra_domain::Service;
    let doc = connectra_api::openapi::document();
    let strings = |v: &Value| -> Vec<String> {
        let mut v: Vec<String> = match v {
            Value::Array(a) => a.iter().map(|s| s.as_str().unwrap().to_string()).collect(),
            Value::Object(m) => m.keys().cloned().collect(),
            other => panic!("not a list: {other}"),
        };
        v.sort();
        v
    };
    let names = |service: Service, keep: fn(&FieldDef) -> bool| -> Vec<String> {
        let mut v: Vec<String> = fields(service)
            .iter()
            .filter(|f| keep(f))
            .map(|f| f.name.to_string())
            .collect();
        v.sort();
        v
    };
    for (service, search, export) in [
        (Service::Contact, "ContactVql", "ContactExportVql"),
        (Service::Company, "CompanyVql", "CompanyExportVql"),
    ] {
        let schemas = &doc["components"]["schemas"];
        let vql = &schemas[search]["properties"];
        assert_eq!(
            strings(&vql["select_columns"]["oneOf"][1]["items"]["enum"]),
            names(service, |_| true),
            "{search}"
        );
        assert_eq!(
            strings(&vql["order_by"]["oneOf"][1]["items"]["properties"]["order_by"]["enum"]),
            names(service, FieldDef::sortable),
            "{search}"
        );
        let section = |name: &str| {
            strings(
                &vql["where"]["oneOf"][1]["properties"][name]["oneOf"][1]["properties"]["must"]
                    ["oneOf"][1]["properties"],
            )
        };
        assert_eq!(
            section("keyword_match"),
            names(service, FieldDef::keyword_matchable)
        );
        assert_eq!(
            section("text_match"),
            names(service, FieldDef::text_matchable)
        );
        assert_eq!(section("range_query"), names(service, FieldDef::rangeable));
        // an export must name its columns; a search need not
        assert_eq!(
            schemas[export]["required"],
            serde_json::json!(["select_columns"])
        );
        assert!(schemas[search]["required"].is_null());
        let path = if service == Service::Contact {
            "/contacts/search"
        } else {
            "/companies/search"
        };
        let body = doc["paths"][path]["post"]["requestBody"].to_string();
        assert!(
            body.contains(&format!("#/components/schemas/{search}")),
            "{body}"
        );
    }
    // the two services differ, so a shared list would have failed above
    assert_ne!(
        names(Service::Contact, |_| true),
        names(Service::Company, |_| true)
    );
}
