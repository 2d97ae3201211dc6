//! Dirty files never fail an import, and PostgreSQL and OpenSearch always end
//! up holding the same records: NUL bytes, 40 KB cells, invalid UTF-8,
//! oversized records, unclosed quotes and documents the index refuses,
//! against real PostgreSQL, SeaweedFS and OpenSearch.

#![cfg(feature = "builtin")]
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use common::{assert_same_records, count, strings, Harness};
use connectra_domain::job::JobStatus;
use connectra_domain::limits::{MAX_FILTER_VALUE_BYTES, MAX_KEYWORD_BYTES};
use connectra_domain::vql::{parse_vql, Purpose};
use connectra_domain::Service;
use connectra_search::{index_definition, OpenSearchBackend};
use serde_json::{json, Value};

async fn rejections(h: &Harness) -> Vec<(i64, String)> {
    strings(
        &h.pool(),
        "SELECT line::text || ' ' || reason AS s FROM job_rejections ORDER BY line",
    )
    .await
    .into_iter()
    .map(|s| {
        let (line, reason) = s.split_once(' ').unwrap();
        (line.parse().unwrap(), reason.to_string())
    })
    .collect()
}

/// A line of `n` well-formed contacts columns.
fn good(i: usize) -> String {
    format!("Ann{i},Lee,ann{i}@acme.io,Engineer,Engineering; Sales,USA,Paris,{{\"n\": {i}}}\n")
}

const HEADER: &str = "first_name,last_name,email,title,departments,country,city,extra\n";

/// What a hostile line is expected to become.
enum Want {
    /// stored, with this email, and this title byte for byte
    Stored { email: String, title: String },
    /// rejected, the reason naming this
    Rejected(&'static str),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_lines_among_thousands_of_good_ones_are_stored_byte_exact_or_reported_by_number() {
    for opensearch in [false, true] {
        let mut h = Harness::new(opensearch).await;
        h.max_record_bytes = 64 * 1024;
        h.start(500);
        let long_title = "alpha beta gamma ".repeat(2_400); // about 40 KB
        let long_country = "x".repeat(40_000);
        let long_city = "c".repeat(MAX_FILTER_VALUE_BYTES + 500);
        let long_department = "d".repeat(MAX_KEYWORD_BYTES + 1);
        let huge = "h".repeat(100 * 1024);
        let hostile: Vec<(Vec<u8>, Want)> = vec![
            (
                b"Nul,Lee,nul@acme.io,C\0TO,Sales,USA,Paris,\n".to_vec(),
                Want::Rejected("column 'title' contains a NUL byte"),
            ),
            (
                format!("Long,Title,long@acme.io,\"{long_title}\",Sales,USA,Paris,\n").into_bytes(),
                Want::Stored {
                    email: "long@acme.io".into(),
                    title: long_title.clone(),
                },
            ),
            (
                format!("Long,Country,country@acme.io,CTO,Sales,{long_country},Paris,\n")
                    .into_bytes(),
                Want::Rejected("column 'country': a value of 40000 bytes"),
            ),
            (
                format!("Long,Dept,dept@acme.io,CTO,\"Sales; {long_department}\",USA,Paris,\n")
                    .into_bytes(),
                Want::Rejected("column 'departments'"),
            ),
            (
                format!("Long,City,city@acme.io,CTO,Sales,USA,{long_city},\n").into_bytes(),
                Want::Stored {
                    email: "city@acme.io".into(),
                    title: "CTO".into(),
                },
            ),
            (
                b"Bad,Utf,utf@acme.io,C\xffO,Sales,USA,Paris,\n".to_vec(),
                Want::Rejected("column 'title' is not valid UTF-8"),
            ),
            (
                b"Json,Nul,json@acme.io,CTO,Sales,USA,Paris,\"{\"\"k\"\": \"\"v\\u0000\"\"}\"\n"
                    .to_vec(),
                Want::Rejected("column 'extra' holds a NUL character"),
            ),
            (
                b"Too,Few,few@acme.io\n".to_vec(),
                Want::Rejected("expected 8 fields, found 3"),
            ),
            (
                format!("Huge,Cell,huge@acme.io,\"{huge}\",Sales,USA,Paris,\n").into_bytes(),
                Want::Rejected("larger than CSV_MAX_RECORD_BYTES (65536)"),
            ),
            (
                "Quo,Ted,quoted@acme.io,\"Line one\nline \"\"two\"\", 大塚\",Sales,USA,Paris,\n"
                    .as_bytes()
                    .to_vec(),
                Want::Stored {
                    email: "quoted@acme.io".into(),
                    title: "Line one\nline \"two\", 大塚".into(),
                },
            ),
        ];
        let mut file = HEADER.as_bytes().to_vec();
        let mut line = 2i64; // the next line number
        let mut goods = 0i64;
        let mut placed = Vec::new(); // (line, want)
        let mut hostile = hostile.into_iter();
        for i in 0..3_000 {
            if i % 300 == 150 {
                if let Some((bytes, want)) = hostile.next() {
                    placed.push((line, want));
                    line += bytes.iter().filter(|&&b| b == b'\n').count() as i64;
                    file.extend_from_slice(&bytes);
                }
            }
            file.extend_from_slice(good(i).as_bytes());
            goods += 1;
            line += 1;
        }
        assert!(hostile.next().is_none(), "every hostile line is placed");
        let key = h.upload("hostile.csv", &file).await;
        let job = h.import(&key).await;
        assert_eq!(job.status, JobStatus::Completed, "{}", job.job_response);
        let stored: Vec<_> = placed
            .iter()
            .filter(|(_, w)| matches!(w, Want::Stored { .. }))
            .collect();
        let expected_rejected = placed.len() - stored.len();
        assert_eq!(job.rows_processed, goods + stored.len() as i64);
        assert_eq!(job.rows_rejected, expected_rejected as i64);
        let p = h.pool();
        assert_eq!(
            count(&p, "SELECT count(*) AS n FROM contacts").await,
            goods + stored.len() as i64
        );
        let got = rejections(&h).await;
        assert_eq!(got.len(), expected_rejected, "{got:?}");
        for (at, want) in &placed {
            match want {
                Want::Rejected(reason) => {
                    let r = got.iter().find(|(l, _)| l == at);
                    assert!(
                        r.is_some_and(|(_, text)| text.contains(reason)),
                        "line {at}: want a rejection naming {reason:?}, got {r:?}"
                    );
                    assert!(
                        r.unwrap().1.len() < 600,
                        "a reason stays short: {} bytes",
                        r.unwrap().1.len()
                    );
                }
                Want::Stored { email, title } => {
                    let t = strings(
                        &p,
                        &format!("SELECT title AS s FROM contacts WHERE email = '{email}'"),
                    )
                    .await;
                    assert_eq!(t.len(), 1, "line {at} ({email}) is stored");
                    assert!(&t[0] == title, "line {at} is stored byte for byte");
                }
            }
        }
        // the over-long city is stored, but kept out of filters_data, and counted
        assert_eq!(
            count(
                &p,
                &format!(
                    "SELECT count(*) AS n FROM filters_data WHERE octet_length(value) > {MAX_FILTER_VALUE_BYTES}"
                )
            )
            .await,
            0
        );
        assert_eq!(job.job_response["rows_filter_values_skipped"], json!(1));
        assert_same_records(&h).await;
        // the long title is still found by full-text search
        h.search.refresh(Service::Contact).await.unwrap();
        let q = parse_vql(&json!({
            "where": {"text_match": {"must": {"title": "gamma"}}},
            "select_columns": ["email"]
        }))
        .unwrap()
        .validate(Service::Contact, Purpose::Search)
        .unwrap();
        let found: Vec<Value> = h
            .search
            .search(Service::Contact, &q)
            .await
            .unwrap()
            .data
            .into_iter()
            .map(|d| d["email"].clone())
            .collect();
        assert_eq!(found, [json!("long@acme.io")], "opensearch: {opensearch}");
        // the error report keeps every rejected line, NUL made visible
        let report = h
            .read_object(job.job_response["error_report_s3_key"].as_str().unwrap())
            .await;
        assert_eq!(
            csv::Reader::from_reader(report.as_bytes())
                .records()
                .count(),
            expected_rejected
        );
        assert!(
            report.contains("C\u{FFFD}TO"),
            "the NUL line is in the report"
        );
        h.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_byte_in_one_cell_rejects_only_its_row() {
    // before: PostgreSQL refused the whole batch's COPY and the job failed
    let mut h = Harness::new(false).await;
    h.start(500);
    let mut file = HEADER.as_bytes().to_vec();
    for i in 0..10 {
        file.extend_from_slice(good(i).as_bytes());
    }
    file.extend_from_slice(b"Nul,Lee,nul@acme.io,CTO,Sales,US\0A,Paris,\n");
    let key = h.upload("nul.csv", &file).await;
    let job = h.import(&key).await;
    assert_eq!(job.status, JobStatus::Completed, "{}", job.job_response);
    assert_eq!((job.rows_processed, job.rows_rejected), (10, 1));
    assert_eq!(
        job.job_response["runtime_errors"],
        json!(["line 12: column 'country' contains a NUL byte (0x00), which cannot be stored"])
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_kilobyte_keyword_and_text_cells_leave_postgres_and_opensearch_alike() {
    // before: OpenSearch refused the document ("immense term") after the
    // batch had committed: the job failed and the two stores differed
    let mut h = Harness::new(true).await;
    h.start(500);
    let big = "y".repeat(40_000);
    let file = format!(
        "{HEADER}A,B,a@x.io,{big},Sales,USA,Paris,\nC,D,c@x.io,CTO,Sales,{big},Paris,\nE,F,e@x.io,CTO,Sales,USA,Paris,\n"
    );
    let key = h.upload("big.csv", file.as_bytes()).await;
    let job = h.import(&key).await;
    assert_eq!(job.status, JobStatus::Completed, "{}", job.job_response);
    assert_eq!((job.rows_processed, job.rows_rejected), (2, 1));
    let errors = job.job_response["runtime_errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1);
    let e = errors[0].as_str().unwrap();
    assert!(e.starts_with("line 3: column 'country'"), "{e}");
    assert!(
        e.len() < 500,
        "the reason quotes only the start of the cell"
    );
    assert_same_records(&h).await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unclosed_quote_that_swallows_the_file_fails_naming_the_line_it_began_on() {
    let mut h = Harness::new(false).await;
    h.max_record_bytes = 64 * 1024;
    h.start(500);
    let mut file = HEADER.to_string();
    for i in 0..10 {
        file.push_str(&good(i));
    }
    file.push_str("Open,Quote,open@x.io,\"CTO,Sales,USA,Paris,\n");
    for i in 10..40_000 {
        file.push_str(&format!(
            "Ann{i},Lee,ann{i}@acme.io,Engineer,Sales,USA,Paris,\n"
        ));
    }
    let key = h.upload("unclosed.csv", file.as_bytes()).await;
    let job = h.import(&key).await;
    assert_eq!(job.status, JobStatus::Failed, "{}", job.job_response);
    let errors = job.job_response["runtime_errors"].to_string();
    assert!(
        errors
            .contains("line 12: a quoted field opened in the record starting here is never closed"),
        "{errors}"
    );
    h.stop().await;
}

/// Replaces the test's indices by ones where each `(service, field)` is an
/// integer: a record whose value there is not a number is refused by the
/// index, as a mapping nobody foresaw would.
async fn with_integer_fields(h: &Harness, fields: &[(Service, &str)]) {
    let url = common::env("OPENSEARCH_URL", "http://127.0.0.1:9200");
    let os = OpenSearchBackend::new(&url)
        .unwrap()
        .with_index_prefix(&h.prefix);
    // the indices behind the aliases; the names become concrete indices
    os.delete_indices().await.unwrap();
    for (service, field) in fields {
        let mut def = index_definition(*service, 0);
        def["mappings"]["properties"][*field] = json!({ "type": "integer" });
        let put = Command::new("curl")
            .args(["-sf", "-X", "PUT", "-H", "Content-Type: application/json"])
            .arg(format!("{url}/{}", os.index_name(*service)))
            .arg("-d")
            .arg(def.to_string())
            .output()
            .unwrap();
        assert!(put.status.success(), "{put:?}");
    }
    h.search.ensure_indices().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_company_a_rolled_back_pass_indexed_goes_back_to_what_postgres_holds() {
    let mut h = Harness::new(true).await;
    with_integer_fields(&h, &[(Service::Contact, "city")]).await;
    h.start(500);
    let first = "email,first_name,city,company_name,company_country\nann@x.io,Ann,1,Acme,Germany\n";
    let key = h.upload("first.csv", first.as_bytes()).await;
    let job = h.import(&key).await;
    assert_eq!(job.status, JobStatus::Completed, "{}", job.job_response);
    // Bob's contact is refused (city), so his line and its change to Acme
    // are not kept; the first pass had indexed Acme with France all the same
    let second = "email,first_name,city,company_name,company_country\nbob@x.io,Bob,Paris,Acme,France\ncid@x.io,Cid,2,Globex,\n";
    let key = h.upload("second.csv", second.as_bytes()).await;
    let job = h.import(&key).await;
    assert_eq!(job.status, JobStatus::Completed, "{}", job.job_response);
    assert_eq!((job.rows_processed, job.rows_rejected), (1, 1));
    let p = h.pool();
    assert_eq!(
        strings(&p, "SELECT country AS s FROM companies WHERE name = 'Acme'").await,
        ["Germany"]
    );
    h.search.refresh(Service::Company).await.unwrap();
    let q = parse_vql(&json!({"select_columns": ["name", "country"], "limit": 10}))
        .unwrap()
        .validate(Service::Company, Purpose::Search)
        .unwrap();
    let page = h.search.search(Service::Company, &q).await.unwrap();
    let acme: Vec<_> = page.data.iter().filter(|d| d["name"] == "Acme").collect();
    assert_eq!(acme.len(), 1, "{:?}", page.data);
    assert_eq!(
        acme[0]["country"], "Germany",
        "the index kept the rolled-back company"
    );
    assert_same_records(&h).await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_the_index_refuses_become_rejected_lines_and_are_not_kept_in_postgres() {
    let mut h = Harness::new(true).await;
    // a mapping nobody foresaw: city and a company's state as integers
    with_integer_fields(
        &h,
        &[(Service::Contact, "city"), (Service::Company, "state")],
    )
    .await;
    h.start(500);
    let file = "\
email,first_name,city,company_name,company_state
ann@x.io,Ann,12,Acme,
bob@x.io,Bob,Paris,Acme,
cid@x.io,Cid,7,Globex,Bavaria
dan@x.io,Dan,,Globex,
";
    let key = h.upload("refused.csv", file.as_bytes()).await;
    let job = h.import(&key).await;
    assert_eq!(job.status, JobStatus::Completed, "{}", job.job_response);
    // Bob's contact was refused; Globex, as Cid's and Dan's lines made it in
    // this batch, was refused, so both lines that wrote it are rejected
    assert_eq!((job.rows_processed, job.rows_rejected), (1, 3));
    let got = rejections(&h).await;
    let lines: Vec<i64> = got.iter().map(|(l, _)| *l).collect();
    assert_eq!(lines, [3, 4, 5], "{got:?}");
    assert!(
        got[0].1.starts_with("the search index refused the record"),
        "{got:?}"
    );
    assert!(got[0].1.contains("city"), "{got:?}");
    assert!(got[1].1.contains("state"), "{got:?}");
    assert!(got[2].1.contains("state"), "{got:?}");
    let p = h.pool();
    assert_eq!(
        strings(&p, "SELECT email AS s FROM contacts ORDER BY email").await,
        ["ann@x.io"]
    );
    assert_eq!(
        strings(&p, "SELECT name AS s FROM companies ORDER BY name").await,
        ["Acme"]
    );
    assert_same_records(&h).await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_errors_show_the_first_and_the_last_rejections_and_stay_bounded() {
    let mut h = Harness::new(false).await;
    h.start(500);
    let big = "9".repeat(40_000);
    let mut file = String::from("name,employees_count\n");
    for i in 0..300 {
        file.push_str(&format!("Co{i},{big}\n"));
    }
    let key = h.upload("bad.csv", file.as_bytes()).await;
    let job = h.import(&key).await;
    assert_eq!(job.status, JobStatus::Completed, "{}", job.job_response);
    assert_eq!(job.rows_rejected, 300);
    let errors: Vec<&str> = job.job_response["runtime_errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert_eq!(errors.len(), 100);
    assert!(errors[0].starts_with("line 2: "), "{}", errors[0]);
    assert!(errors[49].starts_with("line 51: "), "{}", errors[49]);
    assert_eq!(
        errors[50],
        "… 201 more rejected lines; the error report lists every one"
    );
    assert!(errors[51].starts_with("line 253: "), "{}", errors[51]);
    assert!(errors[99].starts_with("line 301: "), "{}", errors[99]);
    assert!(
        errors.iter().all(|e| e.len() < 400),
        "reasons quote at most 200 characters"
    );
    assert!(job.job_response.to_string().len() < 40_000);
    h.stop().await;
}
