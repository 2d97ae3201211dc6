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
