//! The connection pool and the embedded migrations.

use diesel_async::pooled_connection::deadpool::{BuildError, Pool};
use diesel_async::pooled_connection::AsyncDieselConnectionManager;
use diesel_async::{AsyncConnection, AsyncMigrationHarness, AsyncPgConnection};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

/// A pool of async PostgreSQL connections.
pub type PgPool = Pool<AsyncPgConnection>;

/// Every migration under the repository's `migrations/`, compiled in.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations");

use std::time::Duration;

/// How long a connection may take to open (`connect_timeout`).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a caller waits for a free pooled connection, and for a new one.
pub const POOL_WAIT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long checking a pooled connection before reuse may take.
pub const POOL_RECYCLE_TIMEOUT: Duration = Duration::from_secs(10);
/// TCP keepalives: a black-holed server is noticed after about this idle time.
const KEEPALIVES_IDLE_SECS: u64 = 30;

/// `database_url` with a connect timeout and TCP keepalives, unless it sets
/// them itself: every connection of this workspace is opened with it, so no
/// connect and no idle connection waits forever on a server that vanished.
pub fn connection_url(database_url: &str) -> String {
    let mut url = database_url.to_string();
    for (key, value) in [
        ("connect_timeout", CONNECT_TIMEOUT.as_secs()),
        ("keepalives", 1),
        ("keepalives_idle", KEEPALIVES_IDLE_SECS),
    ] {
        if !url.contains(&format!("{key}=")) {
            push_param(&mut url, key, &value.to_string());
        }
    }
    url
}

/// Adds `key=value` to a `postgres://` URL's query (percent-encoding the
/// value's spaces and `=`) or to a `key=value` connection string (quoted).
pub(crate) fn push_param(url: &mut String, key: &str, value: &str) {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(&format!(
            "{key}={}",
            value.replace(' ', "%20").replace('=', "%3D")
        ));
    } else if value.contains(' ') {
        url.push_str(&format!(" {key}='{value}'"));
    } else {
        url.push_str(&format!(" {key}={value}"));
    }
}

/// Builds a pool of at most `max_size` connections. Connections are opened
/// lazily, with [`connection_url`]'s timeouts; a caller waits at most
/// [`POOL_WAIT_TIMEOUT`] for one.
pub fn build_pool(database_url: &str, max_size: usize) -> Result<PgPool, BuildError> {
    build(connection_url(database_url), max_size)
}

/// [`build_pool`], and every statement on its connections is cancelled by
/// PostgreSQL after `statement_timeout` (`DATABASE_STATEMENT_TIMEOUT_SECONDS`).
pub fn build_pool_with_statement_timeout(
    database_url: &str,
    max_size: usize,
    statement_timeout: Option<Duration>,
) -> Result<PgPool, BuildError> {
    let mut url = connection_url(database_url);
    if let Some(timeout) = statement_timeout {
        let option = format!("-c statement_timeout={}", timeout.as_millis());
        push_param(&mut url, "options", &option);
    }
    build(url, max_size)
}

fn build(url: String, max_size: usize) -> Result<PgPool, BuildError> {
    let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new(url);
    Pool::builder(manager)
        .max_size(max_size)
        .runtime(deadpool::Runtime::Tokio1)
        .wait_timeout(Some(POOL_WAIT_TIMEOUT))
        .create_timeout(Some(POOL_WAIT_TIMEOUT))
        .recycle_timeout(Some(POOL_RECYCLE_TIMEOUT))
        .build()
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

#[cfg(test)]
mod tests {
    use super::{connection_url, push_param};

    #[test]
    fn every_connection_gets_a_connect_timeout_and_keepalives_unless_it_sets_them() {
        assert_eq!(
            connection_url("postgres://u@h:5/db"),
            "postgres://u@h:5/db?connect_timeout=10&keepalives=1&keepalives_idle=30"
        );
        assert_eq!(
            connection_url("postgres://u@h/db?sslmode=disable&connect_timeout=3"),
            "postgres://u@h/db?sslmode=disable&connect_timeout=3&keepalives=1&keepalives_idle=30"
        );
        assert_eq!(
            connection_url("host=h user=u"),
            "host=h user=u connect_timeout=10 keepalives=1 keepalives_idle=30"
        );
        let mut url = "postgres://u@h/db?a=1".to_string();
        push_param(&mut url, "options", "-c statement_timeout=5");
        assert_eq!(
            url,
            "postgres://u@h/db?a=1&options=-c%20statement_timeout%3D5"
        );
        let mut dsn = "host=h".to_string();
        push_param(&mut dsn, "options", "-c statement_timeout=5");
        assert_eq!(dsn, "host=h options='-c statement_timeout=5'");
    }
}
