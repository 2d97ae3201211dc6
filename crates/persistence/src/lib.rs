#![doc = include_str!("../README.md")]

pub mod dashboard;
pub mod filters;
pub mod jobs;
mod pool;
mod prepared;
pub mod records;
pub mod scan;
pub mod schema;
pub mod status;
#[cfg(feature = "testing")]
pub mod testing;

pub use jobs::{Job, JobRepo};
pub use pool::{
    build_pool, build_pool_with_statement_timeout, connection_url, run_migrations, PgPool,
    MIGRATIONS,
};
pub use status::StatusColumn;

/// Errors of this crate. Diesel's `NotFound` is returned as `Ok(None)` by lookups instead.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("database query failed: {0}")]
    Query(#[from] diesel::result::Error),
    #[error("cannot connect to the database: {0}")]
    Connection(#[from] diesel::ConnectionError),
    #[error("no database connection available: {0}")]
    Pool(#[from] diesel_async::pooled_connection::deadpool::PoolError),
    #[error("migration failed: {0}")]
    Migration(String),
    #[error("database error: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// A fenced write found that this attempt no longer holds its job (the
    /// lease expired and the job was rescued, or another attempt runs it).
    #[error("job {job_id}: attempt {attempt} of runner '{runner_id}' no longer holds the job; nothing was written")]
    LeaseLost {
        job_id: i64,
        attempt: i32,
        runner_id: String,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whether the connection broke (closed or reset, refused, timed out, or
    /// the server shutting down or restarting) rather than a statement
    /// failing on a working connection: worth a new connection and another
    /// try, whereas a statement's own error would only fail again.
    pub fn is_connection_lost(&self) -> bool {
        match self {
            Self::Postgres(e) => postgres_connection_lost(e),
            Self::Connection(_) | Self::Pool(_) => true,
            Self::Query(_) | Self::Migration(_) | Self::LeaseLost { .. } => false,
        }
    }
}

fn postgres_connection_lost(e: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    if e.is_closed() {
        return true;
    }
    if let Some(state) = e.code() {
        // class 08: connection exception
        return state.code().starts_with("08")
            || [
                SqlState::ADMIN_SHUTDOWN,
                SqlState::CRASH_SHUTDOWN,
                SqlState::CANNOT_CONNECT_NOW,
            ]
            .contains(state);
    }
    // connecting, or the socket failing under a statement
    std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>())
}
