//! The connection pool and the embedded migrations.

use diesel_async::pooled_connection::deadpool::{BuildError, Pool};
use diesel_async::pooled_connection::AsyncDieselConnectionManager;
use diesel_async::{AsyncConnection, AsyncMigrationHarness, AsyncPgConnection};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

/// A pool of async PostgreSQL connections.
pub type PgPool = Pool<AsyncPgConnection>;

/// Every migration under the repository's `migrations/`, compiled in.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations");

/// Builds a pool of at most `max_size` connections. Connections are opened lazily.
pub fn build_pool(database_url: &str, max_size: usize) -> Result<PgPool, BuildError> {
    let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new(database_url);
    Pool::builder(manager).max_size(max_size).build()
}

/// Runs the pending migrations on a fresh connection and returns how many ran.
///
/// Needs tokio's multi-thread runtime (the harness uses `block_in_place`).
pub async fn run_migrations(database_url: &str) -> Result<usize, crate::Error> {
    let conn = AsyncPgConnection::establish(database_url).await?;
    let mut harness = AsyncMigrationHarness::new(conn);
    let ran = harness
        .run_pending_migrations(MIGRATIONS)
        .map_err(|e| crate::Error::Migration(e.to_string()))?;
    Ok(ran.len())
}
