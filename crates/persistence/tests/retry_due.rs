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

/// The runner's statements stay prepared on their connection; a column that
/// a later migration adds to `jobs` must not break them (PostgreSQL refuses
/// a kept plan whose result type changed: they name their columns).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_statements_survive_a_column_added_to_jobs() {
    use connectra_domain::job::NewJob;
    use connectra_persistence::jobs::ClaimKind;
    let db = TestDb::new().await;
    // one connection: the second claim runs the statement the first prepared
    let repo = JobRepo::new(connectra_persistence::build_pool(db.url(), 1).unwrap());
    let job = |_| NewJob {
        job_type: "kept".into(),
        data: serde_json::json!({}),
        retry_count: 0,
        retry_interval: 0,
    };
    repo.create_many(&(0..20).map(job).collect::<Vec<_>>())
        .await
        .unwrap();
    let types = vec!["kept".to_string()];
    let lease = std::time::Duration::from_secs(60);
    // past the first few runs, when PostgreSQL may settle on a generic plan
    for _ in 0..8 {
        let claimed = repo
            .claim(ClaimKind::FirstTime, "r", &types, 1, lease)
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1);
    }
    let mut conn = AsyncPgConnection::establish(db.url()).await.unwrap();
    diesel::sql_query("ALTER TABLE jobs ADD COLUMN added_later int")
        .execute(&mut conn)
        .await
        .unwrap();
    let claimed = repo
        .claim(ClaimKind::FirstTime, "r", &types, 5, lease)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 5);
    let started = repo
        .start_many(
            ClaimKind::FirstTime,
            "r",
            &claimed
                .iter()
                .map(|j| (j.id, j.attempts))
                .collect::<Vec<_>>(),
            lease,
        )
        .await
        .unwrap();
    assert_eq!(started.len(), 5);
}
