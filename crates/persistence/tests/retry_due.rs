//! When the retry runner wakes: only for job types it runs, by the database's clock.

#![allow(clippy::unwrap_used)]

use connectra_persistence::testing::TestDb;
use connectra_persistence::JobRepo;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_retry_is_due_only_for_the_runners_job_types_by_the_databases_clock() {
    let db = TestDb::new().await;
    let repo = JobRepo::new(db.pool());
    let types = |t: &[&str]| t.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let mut conn = AsyncPgConnection::establish(db.url()).await.unwrap();
    // a due failed job of a type this runner lacks
    diesel::sql_query(
        "INSERT INTO jobs (uuid, job_type, data, status, run_after)
         VALUES (gen_random_uuid(), 'other', '{}', 'failed', now() - interval '1 minute')",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    assert_eq!(repo.next_retry_due(&types(&["mine"])).await.unwrap(), None);
    assert_eq!(
        repo.next_retry_due(&types(&["mine", "other"]))
            .await
            .unwrap(),
        Some(std::time::Duration::ZERO)
    );
    // one of its own, an hour away by the database's clock
    diesel::sql_query(
        "INSERT INTO jobs (uuid, job_type, data, status, run_after)
         VALUES (gen_random_uuid(), 'mine', '{}', 'failed', now() + interval '1 hour')",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let wait = repo
        .next_retry_due(&types(&["mine"]))
        .await
        .unwrap()
        .unwrap();
    assert!(
        wait > std::time::Duration::from_secs(3590) && wait <= std::time::Duration::from_secs(3600),
        "{wait:?}"
    );
    assert_eq!(repo.next_retry_due(&[]).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_statements_are_cancelled_after_the_statement_timeout() {
    let db = TestDb::new().await;
    let pool = connectra_persistence::build_pool_with_statement_timeout(
        db.url(),
        2,
        Some(std::time::Duration::from_millis(200)),
    )
    .unwrap();
    let mut conn = pool.get().await.unwrap();
    let started = std::time::Instant::now();
    let err = diesel::sql_query("SELECT pg_sleep(5)")
        .execute(&mut conn)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("statement timeout"), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(4));
    // a short statement is unaffected
    diesel::sql_query("SELECT pg_sleep(0.01)")
        .execute(&mut conn)
        .await
        .unwrap();
}
