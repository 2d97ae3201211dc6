//! `insert_csv_file` end to end in-process, against real PostgreSQL, SeaweedFS
//! and (where named) OpenSearch.

#![cfg(feature = "builtin")]
#![allow(clippy::unwrap_used)]

mod common;

use common::{bucket, count, exec, strings, Harness};
use connectra_domain::job::JobStatus;
use connectra_search::{PostgresBackend, SearchBackend};
use serde_json::{json, Value};

const CONTACTS: &str = "\
First Name,Last Name,Email,Title,Departments,Country,Company Name,Company Website,Company Industries,Favourite Colour
Ann,Lee,ann@acme.io,CTO,Engineering; Leadership,USA,Acme,https://www.acme.io,SaaS;Software,teal
Bob,Ray,BOB@acme.io,Engineer,Engineering,usa,Acme,acme.io,,
Cid,Moe,cid@globex.com,Sales Lead,Sales,Germany,Globex,globex.com,Manufacturing,red
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contacts_file_with_company_columns_creates_linked_contacts_companies_and_filters() {
    let mut h = Harness::new(false).await;
    h.start(2);
    let key = h.upload("contacts.csv", CONTACTS.as_bytes()).await;
    let job = h.import(&key).await;
    assert_eq!(job.status, JobStatus::Completed, "{:?}", job.job_response);
    assert_eq!(job.rows_processed, 3);
    assert_eq!(job.rows_rejected, 0);
    assert_eq!(job.bytes_total, Some(CONTACTS.len() as i64));
    assert_eq!(job.bytes_read, CONTACTS.len() as i64);
    let p = h.pool();
    assert_eq!(count(&p, "SELECT count(*) AS n FROM contacts").await, 3);
    assert_eq!(count(&p, "SELECT count(*) AS n FROM companies").await, 2);
    assert_eq!(
        count(&p, "SELECT count(*) AS n FROM contacts c JOIN companies co ON co.uuid = c.company_id WHERE co.domain = 'acme.io'").await,
        2
    );
    // the second Acme row's empty industries cell left the first one's values alone
    assert_eq!(
        strings(
            &p,
            "SELECT array_to_string(industries, '|') AS s FROM companies WHERE domain = 'acme.io'"
        )
        .await,
        ["SaaS|Software"]
    );
    assert_eq!(
        strings(&p, "SELECT email AS s FROM contacts ORDER BY email").await,
        ["ann@acme.io", "bob@acme.io", "cid@globex.com"]
    );
    assert_eq!(
        strings(
            &p,
            "SELECT extra->>'favourite_colour' AS s FROM contacts WHERE email = 'ann@acme.io'"
        )
        .await,
        ["teal"]
    );
    let filters = strings(
        &p,
        "SELECT service || ':' || filter_key || ':' || value AS s FROM filters_data ORDER BY 1",
    )
    .await;
    for want in [
        "contact:country:USA",
        "contact:country:usa",
        "contact:departments:Leadership",
        "company:industries:SaaS",
        "company:industries:Manufacturing",
    ] {
        assert!(
            filters.contains(&want.to_string()),
            "{want} missing from {filters:?}"
        );
    }
    assert!(job.job_response["messages"]
        .as_str()
        .unwrap()
        .contains("imported 3 rows"));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_companies_file_is_imported_with_typed_columns() {
    let mut h = Harness::new(false).await;
    h.start(500);
    let csv = "name,website,employees_count,annual_revenue,industries,founded_year\n\
               Initech,initech.com,250,12000000,Software,1999\n\
               Umbrella,https://umbrella.example,,, ,\n";
    let key = h.upload("companies.csv", csv.as_bytes()).await;
    let job = h.import(&key).await;
    assert_eq!(job.status, JobStatus::Completed, "{:?}", job.job_response);
    let p = h.pool();
    assert_eq!(count(&p, "SELECT count(*) AS n FROM companies").await, 2);
    assert_eq!(
        count(
            &p,
            "SELECT annual_revenue AS n FROM companies WHERE domain = 'initech.com'"
        )
        .await,
        12_000_000
    );
    assert_eq!(count(&p, "SELECT count(*) AS n FROM companies WHERE domain = 'umbrella.example' AND employees_count IS NULL").await, 1);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn importing_the_same_file_twice_duplicates_nothing_in_postgres_or_opensearch() {
    let mut h = Harness::new(true).await;
    h.start(2);
    let key = h.upload("contacts.csv", CONTACTS.as_bytes()).await;
    for _ in 0..2 {
        let job = h.import(&key).await;
        assert_eq!(job.status, JobStatus::Completed, "{:?}", job.job_response);
        let p = h.pool();
        assert_eq!(count(&p, "SELECT count(*) AS n FROM contacts").await, 3);
        assert_eq!(count(&p, "SELECT count(*) AS n FROM companies").await, 2);
        for (service, want) in [
            (connectra_domain::Service::Contact, 3),
            (connectra_domain::Service::Company, 2),
        ] {
            h.search.refresh(service).await.unwrap();
            let q = connectra_domain::vql::parse_vql(&json!({"limit": 100}))
                .unwrap()
                .validate(service, connectra_domain::vql::Purpose::Search)
                .unwrap();
            let page = h.search.search(service, &q).await.unwrap();
            assert_eq!(page.data.len(), want, "{service} documents in OpenSearch");
        }
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rows_are_reported_line_by_line_and_every_good_row_is_loaded() {
    let mut h = Harness::new(false).await;
    h.start(3);
    let mut csv = String::from("name,employees_count,website\n");
    let mut bad_lines = Vec::new();
    for i in 0..20 {
        let line = i + 2;
        match i % 5 {
            1 => {
                csv.push_str(&format!("Co{i},abc,co{i}.com\n"));
                bad_lines.push((line, "employees_count"));
            }
            3 => {
                csv.push_str(&format!("Co{i},5\n"));
                bad_lines.push((line, "expected 3 fields"));
            }
            _ => csv.push_str(&format!("Co{i},{i},co{i}.com\n")),
        }
    }
    let mut bytes = csv.into_bytes();
    bytes.extend_from_slice(b"Bad\xffName,1,bad.com\n");
    bad_lines.push((22, "UTF-8"));
    let key = h.upload("bad.csv", &bytes).await;
    let job = h.import(&key).await;
    assert_eq!(job.status, JobStatus::Completed, "{:?}", job.job_response);
    assert_eq!(job.rows_processed, 12);
    assert_eq!(job.rows_rejected, 9);
    assert_eq!(
        count(&h.pool(), "SELECT count(*) AS n FROM companies").await,
        12
    );
    let errors: Vec<String> =
        serde_json::from_value(job.job_response["runtime_errors"].clone()).unwrap();
    assert_eq!(errors.len(), bad_lines.len());
    for ((line, why), err) in bad_lines.iter().zip(&errors) {
        assert!(
            err.starts_with(&format!("line {line}: ")) && err.contains(why),
            "{err} vs line {line} {why}"
        );
    }
    // the full report on S3
    let report_key = job.job_response["error_report_s3_key"].as_str().unwrap();
    let mut stream = h.storage.get_stream(&bucket(), report_key).await.unwrap();
    let mut report = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut stream, &mut report)
        .await
        .unwrap();
    let mut rdr = csv::Reader::from_reader(report.as_bytes());
    let rows: Vec<csv::StringRecord> = rdr.records().map(|r| r.unwrap()).collect();
    assert_eq!(rows.len(), bad_lines.len());
    assert_eq!(&rows[0][0], "3");
    assert_eq!(&rows[0][2], "Co1,abc,co1.com");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_uuid_cell_falls_back_to_the_natural_key_and_is_counted() {
    let mut h = Harness::new(false).await;
    h.start(2); // the count crosses batches
    let given = "0b7e4a54-3f0c-4d51-a2b1-5c9d7e1f2a3b";
    let csv = format!(
        "uuid,email,title\n\
         {given},given@example.com,CEO\n\
         not-a-uuid,ann@example.com,CTO\n\
         ,bob@example.com,CFO\n\
         12345,cy@example.com,COO\n\
         also-bad,,VP\n"
    );
    let key = h.upload("uuids.csv", csv.as_bytes()).await;
    let job = h.import(&key).await;
    assert_eq!(job.status, JobStatus::Completed, "{:?}", job.job_response);
    assert_eq!(job.rows_processed, 4);
    assert_eq!(job.rows_rejected, 1, "no uuid and no natural key");
    assert_eq!(job.job_response["rows_uuid_replaced"], 2);
    let messages = job.job_response["messages"].as_str().unwrap();
    assert!(
        messages.contains("2 had a uuid cell that is not a uuid"),
        "{messages}"
    );
    let errors = job.job_response["runtime_errors"].to_string();
    assert!(
        errors.contains("line 6") && errors.contains("'also-bad' is not a uuid"),
        "{errors}"
    );
    // the valid uuid was kept; the invalid ones got the same uuid an import
    // without a uuid column gives (the natural key's)
    assert_eq!(
        count(
            &h.pool(),
            &format!("SELECT count(*) AS n FROM contacts WHERE uuid = '{given}' AND email = 'given@example.com'")
        )
        .await,
        1
    );
    let again = h
        .upload(
            "no-uuids.csv",
            b"email,title\nann@example.com,CTO\ncy@example.com,COO\n",
        )
        .await;
    assert_eq!(h.import(&again).await.status, JobStatus::Completed);
    assert_eq!(
        count(&h.pool(), "SELECT count(*) AS n FROM contacts").await,
        4,
        "re-importing by natural key duplicates nothing"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_resumes_from_a_checkpoint_written_before_uuid_counting_existed() {
    let mut h = Harness::new(false).await;
    let head = "uuid,email,title\nnope-1,a@example.com,A\n,b@example.com,B\n";
    let tail = "nope-3,c@example.com,C\n,d@example.com,D\n";
    let key = h
        .upload("resume.csv", format!("{head}{tail}").as_bytes())
        .await;
    let job = h.create("insert_csv_file", json!({ "s3_key": key })).await;
    // as a runner that died after the first two rows would have left it,
    // in the checkpoint's earlier shape (no `uuids_replaced`)
    let checkpoint = json!({
        "next_line": 4, "next_byte": head.len(), "rows_processed": 2, "rows_rejected": 0
    });
    exec(
        &h.pool(),
        &format!(
            "UPDATE jobs SET checkpoint = '{checkpoint}'::jsonb WHERE id = {}",
            job.id
        ),
    )
    .await;
    h.start(500);
    let done = h.wait(&job).await;
    assert_eq!(done.status, JobStatus::Completed, "{:?}", done.job_response);
    assert_eq!(done.rows_processed, 4);
    // only the rows after the checkpoint were read: the first two are not in
    // the database, and only the third row's bad uuid is counted
    assert_eq!(
        strings(&h.pool(), "SELECT email AS s FROM contacts ORDER BY email").await,
        ["c@example.com", "d@example.com"]
    );
    assert_eq!(done.job_response["rows_uuid_replaced"], 1);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bom_quoted_newlines_and_non_latin_names_survive_byte_exact() {
    let mut h = Harness::new(false).await;
    h.start(500);
    let csv = "\u{feff}email,first_name,last_name,title\n\
               zoe@example.com,Zoë,\"Ōtsuka, 大塚\",\"Head of R&D\nEurope, \"\"North\"\"\"\n\
               ivan@example.com,Иван,Петров,Инженер\n";
    let key = h.upload("bom.csv", csv.as_bytes()).await;
    let job = h.import(&key).await;
    assert_eq!(job.status, JobStatus::Completed, "{:?}", job.job_response);
    let p = h.pool();
    assert_eq!(
        strings(&p, "SELECT first_name || '|' || last_name || '|' || title AS s FROM contacts ORDER BY email DESC").await,
        ["Zoë|Ōtsuka, 大塚|Head of R&D\nEurope, \"North\"", "Иван|Петров|Инженер"]
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_object_or_an_empty_or_headerless_file_fails_with_a_clear_message() {
    let mut h = Harness::new(false).await;
    h.start(500);
    let missing = format!("{}/nope.csv", h.prefix);
    let job = h.import(&missing).await;
    assert_eq!(job.status, JobStatus::Failed);
    let err = job.job_response["runtime_errors"][0]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        err.contains("does not exist") && err.contains(&missing),
        "{err}"
    );

    let empty = h.upload("empty.csv", b"").await;
    let job = h.import(&empty).await;
    assert!(
        job.job_response["runtime_errors"][0]
            .as_str()
            .unwrap()
            .contains("is empty"),
        "{:?}",
        job.job_response
    );

    let useless = h.upload("useless.csv", b"colour,size\nred,9\n").await;
    let job = h.import(&useless).await;
    assert_eq!(job.status, JobStatus::Failed);
    assert!(
        job.job_response["runtime_errors"][0]
            .as_str()
            .unwrap()
            .contains("no usable column"),
        "{:?}",
        job.job_response
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_search_backends_agree_on_what_an_import_indexed() {
    // PostgreSQL is the record; the OpenSearch index must hold the same uuids
    let mut h = Harness::new(true).await;
    h.start(2);
    let key = h.upload("contacts.csv", CONTACTS.as_bytes()).await;
    assert_eq!(h.import(&key).await.status, JobStatus::Completed);
    let pg = PostgresBackend::new(h.pool());
    for service in connectra_domain::Service::ALL {
        h.search.refresh(service).await.unwrap();
        let q =
            connectra_domain::vql::parse_vql(&json!({"select_columns": ["uuid"], "limit": 100}))
                .unwrap()
                .validate(service, connectra_domain::vql::Purpose::Search)
                .unwrap();
        let a: Vec<Value> = h
            .search
            .search(service, &q)
            .await
            .unwrap()
            .data
            .into_iter()
            .map(|d| d["uuid"].clone())
            .collect();
        let b: Vec<Value> = pg
            .search(service, &q)
            .await
            .unwrap()
            .data
            .into_iter()
            .map(|d| d["uuid"].clone())
            .collect();
        assert!(!a.is_empty());
        assert_eq!(a, b, "{service}");
    }
    h.stop().await;
}

/// An import loads with the indices refreshing every 30 s, and every way it
/// ends gives them their default interval back: completed, or failed after
/// the load began (a header without a usable column).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_restores_the_indices_refresh_interval_however_it_ends() {
    use connectra_domain::Service;
    let mut h = Harness::new(true).await;
    let os = h.opensearch().clone();
    for service in Service::ALL {
        os.set_loading(service, true).await.unwrap();
        assert_eq!(
            os.refresh_interval(service).await.unwrap().as_deref(),
            Some(connectra_search::LOAD_REFRESH_INTERVAL)
        );
    }
    h.start(2);
    let key = h.upload("contacts.csv", CONTACTS.as_bytes()).await;
    let job = h.import(&key).await;
    assert_eq!(job.status, JobStatus::Completed, "{:?}", job.job_response);
    for service in Service::ALL {
        assert_eq!(
            os.refresh_interval(service).await.unwrap(),
            None,
            "{service} after a completed import"
        );
        os.set_loading(service, true).await.unwrap();
    }

    let useless = h.upload("useless.csv", b"colour,size\nred,9\n").await;
    let job = h.import(&useless).await;
    assert_eq!(job.status, JobStatus::Failed, "{:?}", job.job_response);
    // the failed import's guard restores it in a task of its own
    for service in Service::ALL {
        let mut interval = os.refresh_interval(service).await.unwrap();
        for _ in 0..50 {
            if interval.is_none() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            interval = os.refresh_interval(service).await.unwrap();
        }
        assert_eq!(interval, None, "{service} after a failed import");
    }
    h.stop().await;
}
