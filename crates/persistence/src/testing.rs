//! Per-test databases on a real PostgreSQL server.
//!
//! The migrations run once into a template database whose name carries a hash
//! of the migration names, so a new migration gets a new template (landed
//! migrations are never edited; see `migrations/README.md`). Each test then
//! gets its own `CREATE DATABASE … TEMPLATE …` copy, dropped when the
//! [`TestDb`] is dropped. Tests never share state and never run migrations.
//!
//! The server comes from `DATABASE_URL` (default: the local stack's
//! `postgres://postgres@127.0.0.1:5433/connectra`); only its host, port and
//! credentials are used.

use std::hash::{Hash, Hasher};

use diesel::migration::MigrationSource;
use tokio_postgres::NoTls;

use crate::{build_pool, run_migrations, PgPool};

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5433/connectra";

/// A fresh, migrated database for one test.
pub struct TestDb {
    name: String,
    url: String,
    admin_url: String,
    pool: PgPool,
}

fn server_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.to_string())
}

/// `url` with its database name replaced.
fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    let mut out = format!("{}/{}", &base[..path_start], db);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

fn template_name() -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let migrations = MigrationSource::<diesel::pg::Pg>::migrations(&crate::MIGRATIONS)
        .expect("embedded migrations are readable");
    for m in migrations {
        m.name().to_string().hash(&mut h);
    }
    format!("connectra_template_{:016x}", h.finish())
}

async fn admin(admin_url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(admin_url, NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "cannot reach PostgreSQL at {admin_url} ({e}); start it with `scripts/stack.sh up`"
            )
        });
    tokio::spawn(conn);
    client
}

/// Creates the template once per server; an advisory lock serialises test
/// processes that race to create it.
async fn ensure_template(admin_url: &str, template: &str) {
    let client = admin(admin_url).await;
    client
        .execute("SELECT pg_advisory_lock(727274)", &[])
        .await
        .expect("advisory lock");
    let exists = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&template])
        .await
        .expect("query pg_database")
        .is_some();
    if !exists {
        let building = format!("{template}_building");
        client
            .batch_execute(&format!("DROP DATABASE IF EXISTS {building}"))
            .await
            .expect("drop half-built template");
        client
            .batch_execute(&format!("CREATE DATABASE {building}"))
            .await
            .expect("create template");
        // The migration harness needs a multi-thread runtime; tests may run on
        // a current-thread one, so migrate on a thread of its own.
        let url = with_database(admin_url, &building);
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("runtime for migrations")
                .block_on(run_migrations(&url))
        })
        .join()
        .expect("migration thread")
        .expect("migrations run on the template");
        client
            .batch_execute(&format!(
                "ALTER DATABASE {building} RENAME TO {template}; ALTER DATABASE {template} IS_TEMPLATE true"
            ))
            .await
            .expect("publish template");
    }
    client
        .execute("SELECT pg_advisory_unlock(727274)", &[])
        .await
        .expect("advisory unlock");
}

impl std::fmt::Debug for TestDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestDb").field("name", &self.name).finish()
    }
}

impl TestDb {
    /// A new database cloned from the migrated template.
    pub async fn new() -> Self {
        let server = server_url();
        let admin_url = with_database(&server, "postgres");
        let template = template_name();
        ensure_template(&admin_url, &template).await;
        let name = format!("connectra_test_{}", uuid::Uuid::new_v4().simple());
        let client = admin(&admin_url).await;
        client
            .batch_execute(&format!("CREATE DATABASE {name} TEMPLATE {template}"))
            .await
            .expect("clone the template");
        let url = with_database(&server, &name);
        let pool = build_pool(&url, 16).expect("pool");
        Self {
            name,
            url,
            admin_url,
            pool,
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn pool(&self) -> PgPool {
        self.pool.clone()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        self.pool.close();
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // Drop runs outside async context; use a short-lived thread and runtime.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok((client, conn)) = tokio_postgres::connect(&admin_url, NoTls).await {
                    tokio::spawn(conn);
                    let _ = client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            });
        })
        .join();
    }
}

/// How often [`eventually`] looks again.
const POLL_EVERY: std::time::Duration = std::time::Duration::from_millis(20);

/// The one polling loop of the tests: calls `probe` until it returns `Ok`,
/// and fails the test after `within`, naming `what` and the last `Err` it
/// gave (say, the job as it was). A probe may also assert, to fail at once
/// on a state that must never be seen.
///
/// Polling is for waiting on something to happen. To show that nothing
/// happens, drain a runner instead (`Runner::run_until_idle`).
pub async fn eventually<T, F, Fut>(within: std::time::Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match probe().await {
            Ok(v) => return v,
            Err(last) => assert!(
                tokio::time::Instant::now() < deadline,
                "timed out after {within:?} waiting for {what}; last seen: {last}"
            ),
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// Waits until job `uuid` satisfies `done`; returns it as it was then.
pub async fn job_until(
    repo: &crate::JobRepo,
    uuid: uuid::Uuid,
    within: std::time::Duration,
    what: &str,
    done: impl Fn(&crate::Job) -> bool,
) -> crate::Job {
    eventually(within, what, || async {
        match repo.get(uuid).await {
            Ok(Some(job)) if done(&job) => Ok(job),
            Ok(Some(job)) => Err(format!("{job:?}")),
            Ok(None) => Err(format!("no job {uuid}")),
            Err(e) => Err(format!("reading job {uuid} failed: {e}")),
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn database_name_is_replaced_and_query_kept() {
        assert_eq!(
            with_database("postgres://u@h:5433/connectra?sslmode=disable", "x"),
            "postgres://u@h:5433/x?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://u@h:5433", "x"),
            "postgres://u@h:5433/x"
        );
    }
}
