//! One suite, run against both backends: each check seeds its own database
//! (and, for OpenSearch, its own indices) and compares the results with the
//! model in `common`.

use std::collections::BTreeSet;

use connectra_domain::Service;
use connectra_search::fold_case;
use serde_json::{json, Value};

use crate::common::{expected, expected_doc, page_all, search, uuids, valid, Fixture, Which};

/// Runs each named check as `postgres::<name>` and `opensearch::<name>`.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(crate::common::Which::Postgres).await;
                }
            )*
        }
        mod opensearch {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(crate::common::Which::OpenSearch).await;
                }
            )*
        }
    };
}

conformance!(
    keyword_match_ignores_case,
    must_not_keeps_records_without_the_field,
    list_fields_match_any_element,
    uuid_fields_match_exactly,
    ranges_on_numbers_and_timestamps,
    select_columns_projects_and_types_values,
    pagination_covers_every_match_once,
    a_full_last_page_is_followed_by_an_empty_one,
    text_match_requires_every_term,
    no_match_is_an_empty_last_page,
    a_scroll_reads_one_consistent_view,
    a_scroll_returns_every_match_in_sort_order,
);

/// A scroll that started before a write does not see it: a record added
/// (and, in PostgreSQL, one deleted) between two pages changes nothing.
async fn a_scroll_reads_one_consistent_view(which: Which) {
    use futures::StreamExt;
    let f = Fixture::new(which).await;
    let query = json!({"select_columns": ["uuid", "email"], "limit": 40});
    let want = expected(f.rows(Service::Contact), &valid(Service::Contact, &query));
    let backend = f.backend(which);
    let mut pages = backend.scroll(Service::Contact, valid(Service::Contact, &query));
    let mut got = uuids(&pages.next().await.unwrap().unwrap().data);
    assert_eq!(got.len(), 40);

    // a new record that sorts last, so a non-consistent view would include it
    let mut added = f.rows(Service::Contact)[0].clone();
    added.insert("uuid".into(), json!("ffffffff-ffff-4fff-bfff-ffffffffffff"));
    added.insert("email".into(), json!("late@example.com"));
    match which {
        Which::Postgres => {
            crate::common::insert_rows(&f.db, Service::Contact, &[Value::Object(added)]).await;
            let mut conn = f.db.pool().get().await.unwrap();
            diesel_async::RunQueryDsl::execute(
                diesel::sql_query(format!("DELETE FROM contacts WHERE uuid = '{}'", want[100])),
                &mut *conn,
            )
            .await
            .unwrap();
        }
        Which::OpenSearch => {
            backend.index(Service::Contact, &[added]).await.unwrap();
            backend.refresh(Service::Contact).await.unwrap();
        }
    }
    while let Some(page) = pages.next().await {
        got.extend(uuids(&page.unwrap().data));
    }
    assert_eq!(
        got, want,
        "{which:?}: the scroll saw a write made after it began"
    );
    // while a fresh search does see it
    let after = page_all(backend, Service::Contact, &query).await;
    assert!(after
        .uuids()
        .contains(&"ffffffff-ffff-4fff-bfff-ffffffffffff".to_string()));
}

/// A scroll returns exactly the model's matches in the model's order, in
/// both uuid directions, with and without a filter, from the start or after
/// a cursor, with ranges so small that OpenSearch reads the uuid space range
/// by range (ranges of about 20 matches: 300 contacts make 15).
async fn a_scroll_returns_every_match_in_sort_order(which: Which) {
    use futures::StreamExt;
    let f = Fixture::new(which).await;
    let s = Service::Contact;
    let ranged;
    let backend: &dyn connectra_search::SearchBackend = match &f.os {
        Some(os) => {
            ranged = os.0.clone().with_scroll_range_docs(20);
            &ranged
        }
        None => f.backend(which),
    };
    let filter = json!({ "keyword_match": { "must_not": { "country": ["France"] } } });
    for direction in ["asc", "desc"] {
        for limit in [2, 3, 7] {
            for filtered in [false, true] {
                let mut query = json!({
                    "select_columns": ["uuid"],
                    "order_by": [{ "order_by": "uuid", "order_direction": direction }],
                    "limit": limit,
                });
                if filtered {
                    query["where"] = filter.clone();
                }
                let want = expected(f.rows(s), &valid(s, &query));
                assert!(
                    want.len() > 100 && (!filtered || want.len() < f.rows(s).len()),
                    "the filter leaves most contacts, not all"
                );
                for start in [None, Some(want.len() / 3)] {
                    if let Some(at) = start {
                        query["search_after"] = json!([want[at]]);
                    }
                    let mut got = Vec::new();
                    let mut pages = backend.scroll(s, valid(s, &query));
                    while let Some(page) = pages.next().await {
                        let page = page.unwrap_or_else(|e| panic!("{which:?}: {e} for {query}"));
                        assert!(page.data.len() <= limit, "{which:?}: a page over its limit");
                        got.extend(uuids(&page.data));
                    }
                    let from = start.map_or(0, |at| at + 1);
                    assert_eq!(got, want[from..], "{which:?}: scroll of {query}");
                }
            }
        }
    }
}

/// Pages through `query` and checks it against the model; returns the docs.
async fn check(
    f: &Fixture,
    which: Which,
    service: Service,
    query: Value,
) -> Vec<serde_json::Map<String, Value>> {
    let got = page_all(f.backend(which), service, &query).await;
    let want = expected(f.rows(service), &valid(service, &query));
    assert_eq!(got.uuids(), want, "{which:?} for {query}");
    got.docs
}

fn texts(docs: &[serde_json::Map<String, Value>], field: &str) -> BTreeSet<String> {
    docs.iter()
        .filter_map(|d| d[field].as_str().map(str::to_owned))
        .collect()
}

async fn keyword_match_ignores_case(which: Which) {
    let f = Fixture::new(which).await;
    let s = Service::Contact;
    let query = |values: Value| {
        json!({
            "where": { "keyword_match": { "must": { "country": values } } },
            "select_columns": ["uuid", "country"],
            "limit": 5000
        })
    };
    let lower = check(&f, which, s, query(json!(["usa"]))).await;
    assert!(
        lower.len() > 30,
        "too few rows to be meaningful: {}",
        lower.len()
    );
    assert_eq!(
        texts(&lower, "country"),
        ["USA", "Usa", "usa"].map(String::from).into()
    );
    let upper = check(&f, which, s, query(json!(["USA"]))).await;
    assert_eq!(uuids(&upper), uuids(&lower));

    // Non-ASCII letters fold too.
    let umlaut = check(&f, which, s, query(json!(["ÖSTERREICH"]))).await;
    assert_eq!(
        texts(&umlaut, "country"),
        ["Österreich", "ÖSTERREICH"].map(String::from).into()
    );

    // Fields AND together; values OR.
    let both = check(
        &f,
        which,
        s,
        json!({
            "where": { "keyword_match": { "must": { "country": ["usa", "france"], "email_status": ["VERIFIED"] } } },
            "select_columns": ["uuid", "country", "email_status"],
            "limit": 5000
        }),
    )
    .await;
    assert!(!both.is_empty());
    for doc in &both {
        assert!(["usa", "france"].contains(&fold_case(doc["country"].as_str().unwrap()).as_str()));
        assert_eq!(fold_case(doc["email_status"].as_str().unwrap()), "verified");
    }

    // A text field matches its whole value, ignoring case.
    let names = check(
        &f,
        which,
        Service::Company,
        json!({
            "where": { "keyword_match": { "must": { "name": ["ACME", "über systems"] } } },
            "select_columns": ["uuid", "name"],
            "limit": 5000
        }),
    )
    .await;
    assert_eq!(
        texts(&names, "name"),
        ["Acme", "acme", "Über Systems", "über systems"]
            .map(String::from)
            .into()
    );
}

async fn must_not_keeps_records_without_the_field(which: Which) {
    let f = Fixture::new(which).await;
    let docs = check(
        &f,
        which,
        Service::Contact,
        json!({
            "where": { "keyword_match": {
                "must": { "country": ["germany"] },
                "must_not": { "seniority": ["INTERN"] }
            } },
            "select_columns": ["uuid", "seniority"],
            "limit": 5000
        }),
    )
    .await;
    assert!(
        docs.iter().any(|d| d["seniority"].is_null()),
        "NULL seniority must stay"
    );
    assert!(docs.iter().all(|d| d["seniority"]
        .as_str()
        .is_none_or(|s| fold_case(s) != "intern")));

    // must_not alone.
    let docs = check(
        &f,
        which,
        Service::Company,
        json!({
            "where": { "keyword_match": { "must_not": { "city": ["berlin", "new york"] } } },
            "select_columns": ["uuid", "city"],
            "limit": 5000
        }),
    )
    .await;
    assert!(docs.iter().any(|d| d["city"].is_null()));
    assert!(docs.iter().any(|d| d["city"] == json!("")));
}

async fn list_fields_match_any_element(which: Which) {
    let f = Fixture::new(which).await;
    let docs = check(
        &f,
        which,
        Service::Contact,
        json!({
            "where": { "keyword_match": { "must": { "departments": ["sales", "HR"] } } },
            "select_columns": ["uuid", "departments"],
            "limit": 5000
        }),
    )
    .await;
    assert!(docs.len() > 30);
    for doc in &docs {
        let departments: Vec<String> = doc["departments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| fold_case(v.as_str().unwrap()))
            .collect();
        assert!(
            departments.iter().any(|d| d == "sales" || d == "hr"),
            "{departments:?}"
        );
    }
    let docs = check(
        &f,
        which,
        Service::Contact,
        json!({
            "where": { "keyword_match": { "must_not": { "departments": ["ENGINEERING"] } } },
            "select_columns": ["uuid", "departments"],
            "limit": 5000
        }),
    )
    .await;
    assert!(
        docs.iter().any(|d| d["departments"] == json!([])),
        "empty lists stay"
    );
    check(
        &f,
        which,
        Service::Company,
        json!({
            "where": { "keyword_match": {
                "must": { "industries": ["SOFTWARE", "finance"], "keywords": ["saas"] },
                "must_not": { "technologies": ["RUST"] }
            } },
            "select_columns": ["uuid"],
            "limit": 5000
        }),
    )
    .await;
}

async fn uuid_fields_match_exactly(which: Which) {
    let f = Fixture::new(which).await;
    let company = f.contacts[7]["company_id"]
        .as_str()
        .or_else(|| f.contacts[8]["company_id"].as_str())
        .unwrap()
        .to_owned();
    let docs = check(
        &f,
        which,
        Service::Contact,
        json!({
            "where": { "keyword_match": { "must": { "company_id": [company.to_uppercase()] } } },
            "select_columns": ["uuid", "company_id"],
            "limit": 5000
        }),
    )
    .await;
    assert!(!docs.is_empty());
    assert!(docs.iter().all(|d| d["company_id"] == json!(company)));
    let docs = check(
        &f,
        which,
        Service::Contact,
        json!({
            "where": { "keyword_match": { "must_not": { "company_id": [company] } } },
            "select_columns": ["uuid", "company_id"],
            "limit": 5000
        }),
    )
    .await;
    assert!(docs.iter().any(|d| d["company_id"].is_null()));
    let one = f.companies[3]["uuid"].as_str().unwrap();
    let docs = check(
        &f,
        which,
        Service::Company,
        json!({ "where": { "keyword_match": { "must": { "uuid": [one] } } }, "select_columns": ["uuid"] }),
    )
    .await;
    assert_eq!(uuids(&docs), [one]);
}

async fn ranges_on_numbers_and_timestamps(which: Which) {
    let f = Fixture::new(which).await;
    let docs = check(
        &f,
        which,
        Service::Company,
        json!({
            "where": { "range_query": { "must": { "employees_count": { "gte": 50, "lt": 1000 } } } },
            "select_columns": ["uuid", "employees_count"],
            "order_by": [{ "order_by": "employees_count", "order_direction": "desc" }],
            "limit": 5000
        }),
    )
    .await;
    assert!(!docs.is_empty());
    assert!(docs
        .iter()
        .all(|d| (50..1000).contains(&d["employees_count"].as_i64().unwrap())));
    // Bigint values beyond 32 bits.
    let docs = check(
        &f,
        which,
        Service::Company,
        json!({
            "where": { "range_query": { "must": { "annual_revenue": { "gt": 2_500_000_000_i64 } } } },
            "select_columns": ["uuid", "annual_revenue"],
            "limit": 5000
        }),
    )
    .await;
    assert!(!docs.is_empty());
    // must_not keeps NULLs.
    let docs = check(
        &f,
        which,
        Service::Company,
        json!({
            "where": { "range_query": { "must_not": { "founded_year": { "lt": 2000 } } } },
            "select_columns": ["uuid", "founded_year"],
            "limit": 5000
        }),
    )
    .await;
    assert!(docs.iter().any(|d| d["founded_year"].is_null()));
    // Timestamps at millisecond resolution: rows at 05:00:00.000100 and
    // .000999 share the millisecond of the bound .0005 and are included by
    // gte; rows at 20:00:00.123456/.123999 are included by lte .123.
    let docs = check(
        &f,
        which,
        Service::Contact,
        json!({
            "where": { "range_query": { "must": { "created_at": {
                "gte": "2024-01-01T05:00:00.0005Z",
                "lte": "2024-01-01T20:00:00.123Z"
            } } } },
            "select_columns": ["uuid", "created_at"],
            "limit": 5000
        }),
    )
    .await;
    assert!(docs
        .iter()
        .any(|d| d["created_at"] == json!("2024-01-01T05:00:00.0001Z")));
    // A bound without a fraction means exactly that instant: OpenSearch
    // would round `lte 23:00:00Z` up to 23:00:00.999 if it were sent as
    // written (rows at 23:00:00.123456 exist and must be excluded).
    let docs = check(
        &f,
        which,
        Service::Contact,
        json!({
            "where": { "range_query": { "must": {
                "updated_at": { "gt": "2024-01-01T05:00:00Z", "lte": "2024-01-01T23:00:00Z" }
            } } },
            "select_columns": ["uuid", "updated_at"],
            "limit": 5000
        }),
    )
    .await;
    assert!(docs
        .iter()
        .all(|d| d["updated_at"].as_str().unwrap() <= "2024-01-01T23:00:00Z"));
    assert!(f.contacts.iter().any(|r| r["updated_at"]
        .as_str()
        .unwrap()
        .starts_with("2024-01-01T23:00:00.")));
    // gt / lt exclude the bound's millisecond.
    check(
        &f,
        which,
        Service::Contact,
        json!({
            "where": { "range_query": { "must": { "created_at": {
                "gt": "2024-01-01T05:00:00.0005Z",
                "lt": "2024-01-01T20:00:00.123999Z"
            } } } },
            "select_columns": ["uuid"],
            "limit": 5000
        }),
    )
    .await;
}

async fn select_columns_projects_and_types_values(which: Which) {
    let f = Fixture::new(which).await;
    for (service, columns) in [
        (
            Service::Contact,
            vec![
                "email",
                "uuid",
                "departments",
                "created_at",
                "company_id",
                "extra",
                "first_name",
            ],
        ),
        (
            Service::Company,
            vec![
                "employees_count",
                "annual_revenue",
                "industries",
                "name",
                "uuid",
                "id",
                "updated_at",
            ],
        ),
    ] {
        let docs = check(
            &f,
            which,
            service,
            json!({ "select_columns": columns, "limit": 5000 }),
        )
        .await;
        assert_eq!(docs.len(), f.rows(service).len());
        for doc in &docs {
            let keys: BTreeSet<&str> = doc.keys().map(String::as_str).collect();
            assert_eq!(keys, columns.iter().copied().collect());
            let uuid = doc["uuid"].as_str().unwrap();
            let row = f
                .rows(service)
                .iter()
                .find(|r| r["uuid"] == json!(uuid))
                .unwrap();
            assert_eq!(Value::Object(doc.clone()), expected_doc(row, &columns));
        }
    }
    // The typing, spelled out once.
    let page = search(
        f.backend(which),
        Service::Contact,
        &json!({
            "where": { "keyword_match": { "must": { "uuid": [f.contacts[0]["uuid"]] } } },
            "select_columns": ["departments", "created_at", "extra", "uuid"]
        }),
    )
    .await;
    let doc = &page.data[0];
    assert!(doc["departments"].is_array());
    let created = doc["created_at"].as_str().unwrap();
    assert!(
        created.starts_with("2024-01-") && created.ends_with('Z'),
        "{created}"
    );
    assert!(doc["extra"].is_object());
    assert_eq!(page.next_search_after, None);
}

async fn pagination_covers_every_match_once(which: Which) {
    let f = Fixture::new(which).await;
    let queries = [
        (
            Service::Contact,
            json!({
                "select_columns": ["uuid", "country", "created_at"],
                "order_by": [
                    { "order_by": "country", "order_direction": "desc" },
                    { "order_by": "created_at" }
                ],
                "limit": 7
            }),
        ),
        (
            Service::Company,
            json!({
                "where": { "range_query": { "must": { "annual_revenue": { "gte": 0 } } } },
                "select_columns": ["uuid"],
                "order_by": [
                    { "order_by": "employees_count", "order_direction": "desc" },
                    { "order_by": "name" }
                ],
                "limit": 9
            }),
        ),
        (
            Service::Contact,
            json!({
                "select_columns": ["uuid"],
                "order_by": [
                    { "order_by": "city" },
                    { "order_by": "updated_at", "order_direction": "desc" },
                    { "order_by": "uuid", "order_direction": "desc" }
                ],
                "limit": 13
            }),
        ),
    ];
    for (service, query) in queries {
        let got = page_all(f.backend(which), service, &query).await;
        let want = expected(f.rows(service), &valid(service, &query));
        let unique: BTreeSet<&String> = want.iter().collect();
        assert_eq!(unique.len(), want.len());
        assert_eq!(got.uuids(), want, "{which:?} for {query}");
        let limit = query["limit"].as_u64().unwrap() as usize;
        assert_eq!(got.pages, want.len() / limit + 1);
        assert_eq!(got.cursors.len(), want.len() / limit);
    }
    // The cursor's form: lower-cased strings, UTC millisecond timestamps,
    // nulls for missing values, the uuid last.
    let got = page_all(f.backend(which), Service::Contact, &queries_cursor_probe()).await;
    let mut saw_null = false;
    for cursor in &got.cursors {
        assert_eq!(cursor.len(), 3);
        match &cursor[0] {
            Value::Null => saw_null = true,
            Value::String(s) => assert_eq!(*s, fold_case(s)),
            other => panic!("country cursor {other}"),
        }
        let t = cursor[1].as_str().unwrap();
        assert!(t.ends_with('Z') && (t.len() <= 24), "{t}");
        assert!(uuid::Uuid::parse_str(cursor[2].as_str().unwrap()).is_ok());
    }
    assert!(saw_null);
}

fn queries_cursor_probe() -> Value {
    json!({
        "select_columns": ["uuid"],
        "order_by": [{ "order_by": "country" }, { "order_by": "created_at", "order_direction": "desc" }],
        "limit": 4
    })
}

async fn a_full_last_page_is_followed_by_an_empty_one(which: Which) {
    let f = Fixture::new(which).await;
    let query = json!({ "select_columns": ["uuid"], "limit": 10 });
    let got = page_all(f.backend(which), Service::Contact, &query).await;
    assert_eq!(got.docs.len(), 300);
    assert_eq!(got.pages, 31, "30 full pages, then an empty one");
    let mut last = query.clone();
    last["search_after"] = Value::Array(got.cursors.last().unwrap().clone());
    let page = search(f.backend(which), Service::Contact, &last).await;
    assert!(page.data.is_empty());
    assert_eq!(page.next_search_after, None);
}

async fn text_match_requires_every_term(which: Which) {
    let f = Fixture::new(which).await;
    let docs = check(
        &f,
        which,
        Service::Contact,
        json!({
            "where": { "text_match": { "must": { "title": "Software ENGINEER" } } },
            "select_columns": ["uuid", "title"],
            "limit": 5000
        }),
    )
    .await;
    assert_eq!(
        texts(&docs, "title"),
        [
            "Senior Software Engineer",
            "Software Engineer",
            "software engineer"
        ]
        .map(String::from)
        .into()
    );
    check(
        &f,
        which,
        Service::Contact,
        json!({
            "where": { "text_match": { "must": { "title": "engineer" }, "must_not": { "title": "sales" } } },
            "select_columns": ["uuid"],
            "limit": 5000
        }),
    )
    .await;
}

async fn no_match_is_an_empty_last_page(which: Which) {
    let f = Fixture::new(which).await;
    let page = search(
        f.backend(which),
        Service::Company,
        &json!({ "where": { "keyword_match": { "must": { "country": ["Atlantis"] } } } }),
    )
    .await;
    assert!(page.data.is_empty());
    assert_eq!(page.next_search_after, None);
    f.backend(which).ping().await.unwrap();
}
