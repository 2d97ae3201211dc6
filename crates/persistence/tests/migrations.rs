//! Migrations run up, all the way down, and up again on a real database, and
//! leave the same schema.

#![allow(clippy::unwrap_used)]

use connectra_persistence::testing::TestDb;
use connectra_persistence::MIGRATIONS;
use diesel::sql_types::Text;
use diesel_async::{AsyncConnection, AsyncMigrationHarness, AsyncPgConnection, RunQueryDsl};
use diesel_migrations::MigrationHarness;

#[derive(diesel::QueryableByName)]
struct Line {
    #[diesel(sql_type = Text)]
    line: String,
}

async fn schema(url: &str) -> Vec<String> {
    let mut conn = AsyncPgConnection::establish(url).await.unwrap();
    diesel::sql_query(
        "SELECT table_name || '.' || column_name || ':' || data_type || ':' || is_nullable AS line
         FROM information_schema.columns WHERE table_schema = 'public'
         UNION ALL SELECT 'index ' || indexdef FROM pg_indexes WHERE schemaname = 'public'
         UNION ALL SELECT 'trigger ' || tgname FROM pg_trigger WHERE NOT tgisinternal
         ORDER BY 1",
    )
    .load::<Line>(&mut conn)
    .await
    .unwrap()
    .into_iter()
    .map(|l| l.line)
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_go_down_completely_and_up_again_to_the_same_schema() {
    let db = TestDb::new().await; // already migrated, from the template
    let before = schema(db.url()).await;
    assert!(before.iter().any(|l| l.starts_with("jobs.attempts:")));
    let url = db.url().to_string();
    // the harness blocks in place: fine on this multi-thread runtime
    let conn = AsyncPgConnection::establish(&url).await.unwrap();
    let mut harness = AsyncMigrationHarness::new(conn);
    harness.revert_all_migrations(MIGRATIONS).unwrap();
    drop(harness);
    let empty: Vec<String> = schema(&url)
        .await
        .into_iter()
        .filter(|l| !l.contains("__diesel_schema_migrations"))
        .collect();
    assert!(empty.is_empty(), "left behind: {empty:?}");
    connectra_persistence::run_migrations(&url).await.unwrap();
    assert_eq!(schema(&url).await, before);
}
