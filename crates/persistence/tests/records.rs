//! The import's record writer on a real database: every batch is fenced by
//! the claim that writes it.

#![allow(clippy::unwrap_used)]

use connectra_domain::import::{import_columns, Cell};
use connectra_domain::Service;
use connectra_persistence::records::{RecordBatch, RecordWriter};
use connectra_persistence::testing::TestDb;
use connectra_persistence::Error;
use diesel::sql_types::BigInt;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

#[derive(diesel::QueryableByName)]
struct N {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

async fn query_n(url: &str, sql: &str) -> i64 {
    let mut conn = AsyncPgConnection::establish(url).await.unwrap();
    diesel::sql_query(sql)
        .get_result::<N>(&mut conn)
        .await
        .unwrap()
        .n
}

fn batch(n: u128) -> RecordBatch {
    let columns = import_columns(Service::Company);
    let name = columns.position("name").unwrap();
    let mut batch = RecordBatch::default();
    let uuid = uuid::Uuid::from_u128(n);
    let mut cells = columns.empty_cells();
    cells[name] = Some(Cell::Text(format!("Co{n}")));
    batch.push(2, b"x", columns.row(uuid, cells), None);
    batch
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_an_attempt_that_lost_its_job_writes_nothing() {
    let db = TestDb::new().await;
    let url = db.url().to_string();
    let id = query_n(
        &url,
        "INSERT INTO jobs (uuid, job_type, data, status, attempts, locked_by, locked_until)
         VALUES (gen_random_uuid(), 'insert_csv_file', '{}', 'processing', 2, 'runner-a', now() + interval '1 minute')
         RETURNING id AS n",
    )
    .await;
    // the attempt that holds the job writes
    let mut holder = RecordWriter::connect(&url, id)
        .await
        .unwrap()
        .fenced(2, "runner-a");
    holder.write(Service::Company, &batch(1)).await.unwrap();
    // an earlier attempt, and another runner, write nothing
    for (attempt, runner) in [(1, "runner-a"), (2, "runner-b")] {
        let mut stale = RecordWriter::connect(&url, id)
            .await
            .unwrap()
            .fenced(attempt, runner);
        let err = stale.write(Service::Company, &batch(2)).await.unwrap_err();
        assert!(matches!(err, Error::LeaseLost { .. }), "{err}");
    }
    // once the job is rescued, its old attempt writes nothing either
    query_n(
        &url,
        &format!(
            "UPDATE jobs SET status = 'open', locked_by = NULL WHERE id = {id} RETURNING id AS n"
        ),
    )
    .await;
    let err = holder.write(Service::Company, &batch(3)).await.unwrap_err();
    assert!(matches!(err, Error::LeaseLost { .. }), "{err}");
    assert_eq!(
        query_n(&url, "SELECT count(*) AS n FROM companies").await,
        1
    );
    assert_eq!(
        query_n(
            &url,
            "SELECT count(*) AS n FROM companies WHERE uuid = '00000000-0000-0000-0000-000000000001'"
        )
        .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_or_refused_connection_is_a_lost_connection_and_a_lost_lease_is_not() {
    let db = TestDb::new().await;
    // nothing listens on port 1
    let refused = RecordWriter::connect("postgres://postgres@127.0.0.1:1/x", 1)
        .await
        .unwrap_err();
    assert!(refused.is_connection_lost(), "{refused}");

    let mut writer = RecordWriter::connect(db.url(), 1).await.unwrap();
    writer.write(Service::Company, &batch(1)).await.unwrap();
    let cut = query_n(
        db.url(),
        &format!(
            "SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity \
             WHERE datname = current_database() AND application_name = '{}'",
            connectra_persistence::records::APPLICATION_NAME
        ),
    )
    .await;
    assert_eq!(
        cut, 1,
        "the writer's connection carries its application_name"
    );
    let lost = writer.write(Service::Company, &batch(2)).await.unwrap_err();
    assert!(lost.is_connection_lost(), "{lost}");

    // a fence that no longer holds is an answer, not a broken connection
    let mut fenced = RecordWriter::connect(db.url(), 1)
        .await
        .unwrap()
        .fenced(1, "nobody");
    let fenced_out = fenced.write(Service::Company, &batch(3)).await.unwrap_err();
    assert!(
        matches!(fenced_out, Error::LeaseLost { .. }),
        "{fenced_out}"
    );
    assert!(!fenced_out.is_connection_lost());
}

/// A contact with the given cells (by field name); `None` is an empty cell.
fn contact(n: u128, cells: &[(&str, Cell)]) -> connectra_domain::import::Row {
    let columns = import_columns(Service::Contact);
    let mut row = columns.empty_cells();
    for (name, cell) in cells {
        row[columns.position(name).unwrap()] = Some(cell.clone());
    }
    columns.row(uuid::Uuid::from_u128(n), row)
}

fn contacts(rows: Vec<connectra_domain::import::Row>) -> RecordBatch {
    let mut batch = RecordBatch::default();
    for (i, row) in rows.into_iter().enumerate() {
        batch.push(i as i64 + 2, b"x", row, None);
    }
    batch
}

fn text(s: &str) -> Cell {
    Cell::Text(s.to_string())
}

async fn query_s(url: &str, sql: &str) -> String {
    #[derive(diesel::QueryableByName)]
    struct S {
        #[diesel(sql_type = diesel::sql_types::Text)]
        s: String,
    }
    let mut conn = AsyncPgConnection::establish(url).await.unwrap();
    diesel::sql_query(sql)
        .get_result::<S>(&mut conn)
        .await
        .unwrap()
        .s
}

/// A batch of new records is inserted without the upsert (straight COPY,
/// or a plain INSERT when documents are wanted); one that meets a stored
/// record falls back to the upsert. Either way the rows end as the upsert
/// makes them, and the filter values of every committed batch are stored,
/// also those that a rolled-back batch held first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_and_partly_stored_batches_end_as_the_upsert_makes_them() {
    let db = TestDb::new().await;
    let url = db.url().to_string();
    for want_documents in [false, true] {
        query_n(
            &url,
            "WITH d AS (DELETE FROM contacts RETURNING 1) SELECT count(*) AS n FROM d",
        )
        .await;
        query_n(
            &url,
            "WITH d AS (DELETE FROM filters_data RETURNING 1) SELECT count(*) AS n FROM d",
        )
        .await;
        let mut writer = RecordWriter::connect(&url, 1).await.unwrap();
        let first = contacts(vec![
            contact(1, &[("title", text("CTO")), ("country", text("Germany"))]),
            contact(2, &[("departments", Cell::List(vec!["Sales".into()]))]),
            contact(3, &[("title", text("VP")), ("country", text("France"))]),
        ]);
        let (staged, docs) = writer
            .stage(Service::Contact, &first, want_documents)
            .await
            .unwrap();
        staged.commit(&[]).await.unwrap();
        assert_eq!(docs.len(), if want_documents { 3 } else { 0 });
        // the empty list and object cells hold their empty values, as the
        // upsert's coalesce would have stored them
        assert_eq!(
            query_s(
                &url,
                "SELECT string_agg(concat_ws('|', uuid, title, departments::text, extra::text, version > 0), ',' ORDER BY uuid) AS s FROM contacts"
            )
            .await,
            "00000000-0000-0000-0000-000000000001|CTO|{}|{}|t,\
             00000000-0000-0000-0000-000000000002|{Sales}|{}|t,\
             00000000-0000-0000-0000-000000000003|VP|{}|{}|t"
        );
        // a batch rolled back: its filter value is not taken as stored
        let lost = contacts(vec![contact(9, &[("country", text("Atlantis"))])]);
        let (staged, _) = writer
            .stage(Service::Contact, &lost, want_documents)
            .await
            .unwrap();
        staged.rollback().await.unwrap();
        // new records around a stored one (3): the insert meets it, and the
        // batch is upserted; the next batch too, and it is all new
        let second = contacts(vec![
            contact(4, &[("country", text("Atlantis"))]),
            // an empty title keeps the stored one; a new country replaces it
            contact(3, &[("country", text("Spain"))]),
            contact(5, &[("title", text("CEO"))]),
        ]);
        let third = contacts(vec![contact(6, &[("country", text("Germany"))])]);
        for batch in [&second, &third] {
            let (staged, docs) = writer
                .stage(Service::Contact, batch, want_documents)
                .await
                .unwrap();
            staged.commit(&[]).await.unwrap();
            assert_eq!(
                docs.len(),
                if want_documents {
                    batch.records.len()
                } else {
                    0
                }
            );
            if want_documents && std::ptr::eq(batch, &second) {
                let three = docs
                    .iter()
                    .find(|d| d.uuid == uuid::Uuid::from_u128(3))
                    .unwrap();
                assert!(
                    three.json.contains("\"Spain\"") && three.json.contains("\"VP\""),
                    "{}",
                    three.json
                );
            }
        }
        assert_eq!(
            query_s(
                &url,
                "SELECT string_agg(concat_ws('|', uuid, title, country), ',' ORDER BY uuid) AS s FROM contacts"
            )
            .await,
            "00000000-0000-0000-0000-000000000001|CTO|Germany,\
             00000000-0000-0000-0000-000000000002,\
             00000000-0000-0000-0000-000000000003|VP|Spain,\
             00000000-0000-0000-0000-000000000004|Atlantis,\
             00000000-0000-0000-0000-000000000005|CEO,\
             00000000-0000-0000-0000-000000000006|Germany",
            "want_documents: {want_documents}"
        );
        assert_eq!(
            query_s(
                &url,
                "SELECT string_agg(filter_key || '=' || value, ',' ORDER BY filter_key, value) AS s FROM filters_data"
            )
            .await,
            "country=Atlantis,country=France,country=Germany,country=Spain,departments=Sales",
            "want_documents: {want_documents}"
        );
    }
}
