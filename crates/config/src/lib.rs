#![doc = include_str!("../README.md")]

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use config::{Config, Environment, File};
use serde::Deserialize;

/// A configuration problem, naming the variable.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct ConfigError(String);

/// `LOG_FORMAT`: how the binaries write their logs to stderr.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Lines for people at a terminal (the default).
    #[default]
    Text,
    /// One JSON object per line, for log collectors: the event's fields at
    /// the top level, the job's span (`job_uuid`, `job_type`, `attempt`)
    /// under `span`.
    Json,
}

/// A string that never prints (passwords, keys).
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Every setting. Field names are the lower-cased variables; the defaults are
/// in [`defaults`].
#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub database_url: Secret,
    pub database_pool_size: usize,
    /// PostgreSQL cancels any statement of the pooled connections that runs
    /// longer (0 turns the limit off).
    pub database_statement_timeout_seconds: u64,
    pub api_keys: Vec<Secret>,
    pub http_addr: SocketAddr,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,

    pub parallel_jobs: usize,
    pub batch_size_for_insertion: usize,
    /// A CSV record larger than this is rejected with its line (and one that
    /// runs to the end of the file in an open quote fails the import).
    pub csv_max_record_bytes: usize,
    pub ticker_interval_minutes: u64,
    pub ticker_interval_seconds: Option<u64>,
    pub job_in_queue_size: usize,
    pub shutdown_grace_seconds: u64,
    pub retry_interval_seconds: i32,
    /// How long a claim holds a job without a heartbeat.
    pub job_lease_seconds: u64,
    /// Rescues of a job whose runner died, before the job fails for good.
    pub job_max_rescues: i32,
    pub run_jobs_in_process: bool,

    pub s3_bucket: Option<String>,
    s3_upload_file_path_prifix: Option<String>,
    s3_upload_file_path_prefix: Option<String>,
    pub s3_endpoint: Option<String>,
    pub s3_region: String,
    pub s3_access_key_id: Option<Secret>,
    pub s3_secret_access_key: Option<Secret>,
    pub s3_path_style: bool,
    pub s3_allowed_buckets: Vec<String>,
    /// One or more node URLs of one cluster, comma-separated (the search
    /// crate parses and checks them).
    pub opensearch_url: Option<String>,
    /// Replicas of each index's shard, for the indices we create (0: a single
    /// node stays green).
    pub opensearch_replicas: u32,
    /// Indices are `{prefix}_contacts` and `{prefix}_companies`.
    pub opensearch_index_prefix: String,
    pub export_escape_formulas: bool,
    /// `METRICS_ADDR`: where job-runner and retry-runner serve Prometheus
    /// metrics (`/metrics`); unset, they serve none. api-server serves them
    /// at its own `/metrics`.
    pub metrics_addr: Option<SocketAddr>,
    /// `LOG_FORMAT`: `text` (default) or `json`.
    #[serde(default)]
    pub log_format: LogFormat,
}

/// The default of every setting that has one, and of the runner knobs that
/// are not settings: the one home of these values. [`Settings::load`] falls
/// back to them, and so does `connectra_jobs::RunnerConfig::new`.
pub mod defaults {
    use std::time::Duration;

    pub const DATABASE_POOL_SIZE: usize = 16;
    pub const DATABASE_STATEMENT_TIMEOUT_SECONDS: u64 = 30;
    pub const HTTP_ADDR: &str = "127.0.0.1:8080";
    pub const MAX_BODY_BYTES: usize = 1024 * 1024;
    /// The first-time runner's concurrent handlers.
    pub const PARALLEL_JOBS: usize = 4;
    /// The retry runner's concurrent handlers: one, as the guide says (not a
    /// setting).
    pub const RETRY_RUNNER_WORKERS: usize = 1;
    pub const BATCH_SIZE_FOR_INSERTION: usize = 500;
    pub const CSV_MAX_RECORD_BYTES: usize = 1024 * 1024;
    pub const TICKER_INTERVAL_MINUTES: u64 = 5;
    /// [`TICKER_INTERVAL_MINUTES`] as a duration.
    pub const TICKER_INTERVAL: Duration = Duration::from_secs(TICKER_INTERVAL_MINUTES * 60);
    pub const JOB_IN_QUEUE_SIZE: usize = 100;
    pub const SHUTDOWN_GRACE_SECONDS: u64 = 30;
    /// [`SHUTDOWN_GRACE_SECONDS`] as a duration.
    pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(SHUTDOWN_GRACE_SECONDS);
    pub const RETRY_INTERVAL_SECONDS: i32 = 30;
    pub const JOB_LEASE_SECONDS: u64 = 30;
    /// [`JOB_LEASE_SECONDS`] as a duration.
    pub const JOB_LEASE: Duration = Duration::from_secs(JOB_LEASE_SECONDS);
    pub const JOB_MAX_RESCUES: i32 = 3;
    pub const RUN_JOBS_IN_PROCESS: bool = false;
    pub const S3_REGION: &str = "us-east-1";
    pub const S3_PATH_STYLE: bool = true;
    /// The export prefix when neither spelling of the variable is set.
    pub const S3_UPLOAD_FILE_PATH_PREFIX: &str = "uploads";
    pub const OPENSEARCH_INDEX_PREFIX: &str = "connectra";
    pub const OPENSEARCH_REPLICAS: u32 = 0;
    pub const EXPORT_ESCAPE_FORMULAS: bool = true;
}

const LIST_KEYS: [&str; 2] = ["api_keys", "s3_allowed_buckets"];

impl Settings {
    /// Loads [`defaults`], then the optional TOML file (`CONNECTRA_CONFIG`,
    /// else `connectra.toml` if present), then the process environment.
    pub fn load() -> Result<Self, ConfigError> {
        let file = std::env::var("CONNECTRA_CONFIG").ok();
        Self::load_from(file.as_deref(), Environment::default())
    }

    /// Loads from the given sources; tests pass a custom `Environment`. The
    /// file's format follows its extension (`.toml`); keys are the
    /// lower-cased variables, lists are arrays.
    pub fn load_from(file: Option<&str>, env: Environment) -> Result<Self, ConfigError> {
        let mut env = env.try_parsing(true).list_separator(",");
        for key in LIST_KEYS {
            env = env.with_list_parse_key(key);
        }
        let built = Config::builder()
            .set_default("database_pool_size", defaults::DATABASE_POOL_SIZE as u64)
            .and_then(|b| {
                b.set_default(
                    "database_statement_timeout_seconds",
                    defaults::DATABASE_STATEMENT_TIMEOUT_SECONDS,
                )
            })
            .and_then(|b| b.set_default("api_keys", Vec::<String>::new()))
            .and_then(|b| b.set_default("http_addr", defaults::HTTP_ADDR))
            .and_then(|b| b.set_default("max_body_bytes", defaults::MAX_BODY_BYTES as u64))
            .and_then(|b| b.set_default("parallel_jobs", defaults::PARALLEL_JOBS as u64))
            .and_then(|b| {
                b.set_default(
                    "batch_size_for_insertion",
                    defaults::BATCH_SIZE_FOR_INSERTION as u64,
                )
            })
            .and_then(|b| {
                b.set_default(
                    "csv_max_record_bytes",
                    defaults::CSV_MAX_RECORD_BYTES as u64,
                )
            })
            .and_then(|b| {
                b.set_default("ticker_interval_minutes", defaults::TICKER_INTERVAL_MINUTES)
            })
            .and_then(|b| b.set_default("job_in_queue_size", defaults::JOB_IN_QUEUE_SIZE as u64))
            .and_then(|b| b.set_default("shutdown_grace_seconds", defaults::SHUTDOWN_GRACE_SECONDS))
            .and_then(|b| b.set_default("retry_interval_seconds", defaults::RETRY_INTERVAL_SECONDS))
            .and_then(|b| b.set_default("job_lease_seconds", defaults::JOB_LEASE_SECONDS))
            .and_then(|b| b.set_default("job_max_rescues", defaults::JOB_MAX_RESCUES))
            .and_then(|b| b.set_default("run_jobs_in_process", defaults::RUN_JOBS_IN_PROCESS))
            .and_then(|b| b.set_default("s3_region", defaults::S3_REGION))
            .and_then(|b| b.set_default("s3_path_style", defaults::S3_PATH_STYLE))
            .and_then(|b| b.set_default("s3_allowed_buckets", Vec::<String>::new()))
            .and_then(|b| b.set_default("export_escape_formulas", defaults::EXPORT_ESCAPE_FORMULAS))
            .and_then(|b| {
                b.set_default("opensearch_index_prefix", defaults::OPENSEARCH_INDEX_PREFIX)
            })
            .and_then(|b| b.set_default("opensearch_replicas", defaults::OPENSEARCH_REPLICAS))
            .map_err(|e| ConfigError(e.to_string()))?
            .add_source(File::with_name(file.unwrap_or("connectra.toml")).required(file.is_some()))
            .add_source(env)
            .build()
            .map_err(name_variable)?;
        let mut settings: Settings = built.try_deserialize().map_err(name_variable)?;
        settings.normalise()?;
        Ok(settings)
    }

    fn normalise(&mut self) -> Result<(), ConfigError> {
        self.api_keys.retain(|k| !k.expose().trim().is_empty());
        self.s3_allowed_buckets.retain(|b| !b.trim().is_empty());
        for b in &mut self.s3_allowed_buckets {
            *b = b.trim().to_string();
        }
        if self.s3_allowed_buckets.is_empty() {
            self.s3_allowed_buckets.extend(self.s3_bucket.clone());
        }
        positive("PARALLEL_JOBS", self.parallel_jobs)?;
        positive("JOB_IN_QUEUE_SIZE", self.job_in_queue_size)?;
        positive("BATCH_SIZE_FOR_INSERTION", self.batch_size_for_insertion)?;
        positive("CSV_MAX_RECORD_BYTES", self.csv_max_record_bytes)?;
        positive("DATABASE_POOL_SIZE", self.database_pool_size)?;
        positive("MAX_BODY_BYTES", self.max_body_bytes)?;
        if self.ticker_interval() == Duration::ZERO {
            return Err(ConfigError(
                "TICKER_INTERVAL_SECONDS (or TICKER_INTERVAL_MINUTES) must be greater than 0"
                    .into(),
            ));
        }
        if self.job_lease_seconds < 2 {
            return Err(ConfigError("JOB_LEASE_SECONDS must be at least 2".into()));
        }
        if self.retry_interval_seconds < 0 {
            return Err(ConfigError(
                "RETRY_INTERVAL_SECONDS must not be negative".into(),
            ));
        }
        if self.job_max_rescues < 0 {
            return Err(ConfigError("JOB_MAX_RESCUES must not be negative".into()));
        }
        // With the PostgreSQL search backend a running export holds a pooled
        // connection for its whole scroll; the progress writes, claims and
        // lease renewals need others. Both runners may share one pool (the
        // api-server with RUN_JOBS_IN_PROCESS), so a smaller pool can hang.
        let needed = 2 * self.parallel_jobs + 4;
        if self.opensearch_url.is_none() && self.database_pool_size < needed {
            return Err(ConfigError(format!(
                "DATABASE_POOL_SIZE {} is too small for PARALLEL_JOBS {} with the PostgreSQL search backend: \
                 each running export holds one connection for its scroll; use at least {needed}",
                self.database_pool_size, self.parallel_jobs
            )));
        }
        if !self.database_url.expose().starts_with("postgres://")
            && !self.database_url.expose().starts_with("postgresql://")
        {
            return Err(ConfigError("DATABASE_URL must be a postgres:// URL".into()));
        }
        Ok(())
    }

    /// What the API server additionally requires.
    pub fn validate_for_api(&self) -> Result<(), ConfigError> {
        if self.api_keys.is_empty() {
            return Err(ConfigError(
                "API_KEYS is empty: set at least one key (comma-separated)".into(),
            ));
        }
        Ok(())
    }

    /// The export prefix: `S3_UPLOAD_FILE_PATH_PRIFIX` (the guide's spelling),
    /// else `S3_UPLOAD_FILE_PATH_PREFIX`, else `uploads`.
    pub fn s3_upload_file_path_prefix(&self) -> &str {
        self.s3_upload_file_path_prifix
            .as_deref()
            .or(self.s3_upload_file_path_prefix.as_deref())
            .unwrap_or(defaults::S3_UPLOAD_FILE_PATH_PREFIX)
    }

    /// The ticker: `TICKER_INTERVAL_SECONDS` when set, else `TICKER_INTERVAL_MINUTES`.
    /// `DATABASE_STATEMENT_TIMEOUT_SECONDS`, `None` when 0.
    pub fn statement_timeout(&self) -> Option<Duration> {
        (self.database_statement_timeout_seconds > 0)
            .then(|| Duration::from_secs(self.database_statement_timeout_seconds))
    }

    pub fn ticker_interval(&self) -> Duration {
        match self.ticker_interval_seconds {
            Some(s) => Duration::from_secs(s),
            None => Duration::from_secs(self.ticker_interval_minutes * 60),
        }
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_seconds)
    }

    pub fn job_lease(&self) -> Duration {
        Duration::from_secs(self.job_lease_seconds)
    }
}

fn positive(name: &str, v: usize) -> Result<(), ConfigError> {
    if v == 0 {
        return Err(ConfigError(format!("{name} must be greater than 0")));
    }
    Ok(())
}

/// The config crate names keys in lower case ("for key `parallel_jobs`",
/// "missing configuration field \"database_url\""); users set upper-case
/// variables, so name those.
fn name_variable(e: config::ConfigError) -> ConfigError {
    let text = e.to_string();
    let is_key = |k: &&str| {
        !k.is_empty()
            && k.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    };
    let quoted = |q: char| text.split(q).skip(1).step_by(2).find(is_key);
    let key = quoted('`').or_else(|| quoted('"'));
    match key {
        Some(key) => {
            let var = key.to_uppercase();
            if text.starts_with("missing configuration field") {
                ConfigError(format!("{var} is required but not set"))
            } else {
                let rest = text.replace(&format!(" for key `{key}`"), "");
                ConfigError(format!("{var} is invalid: {rest}"))
            }
        }
        None => ConfigError(text),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> Environment {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Environment::default().source(Some(map))
    }

    const DB: (&str, &str) = ("DATABASE_URL", "postgres://u@127.0.0.1:5433/db");

    #[test]
    fn defaults_follow_the_guide() {
        let s = Settings::load_from(None, env(&[DB])).unwrap();
        assert_eq!(s.parallel_jobs, 4);
        assert_eq!(s.batch_size_for_insertion, 500);
        assert_eq!(s.job_in_queue_size, 100);
        assert_eq!(s.ticker_interval(), Duration::from_secs(300));
        assert_eq!(s.s3_upload_file_path_prefix(), "uploads");
        assert_eq!(s.http_addr.to_string(), "127.0.0.1:8080");
        assert!(s.api_keys.is_empty());
    }

    #[test]
    fn unset_settings_take_the_named_defaults() {
        let s = Settings::load_from(None, env(&[DB])).unwrap();
        assert_eq!(s.database_pool_size, defaults::DATABASE_POOL_SIZE);
        assert_eq!(s.parallel_jobs, defaults::PARALLEL_JOBS);
        assert_eq!(s.job_in_queue_size, defaults::JOB_IN_QUEUE_SIZE);
        assert_eq!(s.ticker_interval(), defaults::TICKER_INTERVAL);
        assert_eq!(s.job_lease(), defaults::JOB_LEASE);
        assert_eq!(s.shutdown_grace(), defaults::SHUTDOWN_GRACE);
        assert_eq!(s.job_max_rescues, defaults::JOB_MAX_RESCUES);
        assert_eq!(s.retry_interval_seconds, defaults::RETRY_INTERVAL_SECONDS);
        assert_eq!(s.http_addr.to_string(), defaults::HTTP_ADDR);
        assert_eq!(s.s3_region, defaults::S3_REGION);
        assert_eq!(s.opensearch_index_prefix, defaults::OPENSEARCH_INDEX_PREFIX);
        assert_eq!(s.opensearch_replicas, defaults::OPENSEARCH_REPLICAS);
        assert_eq!(s.log_format, LogFormat::Text);
    }

    #[test]
    fn log_format_is_text_or_json_and_anything_else_names_the_variable() {
        let s = Settings::load_from(None, env(&[DB, ("LOG_FORMAT", "json")])).unwrap();
        assert_eq!(s.log_format, LogFormat::Json);
        let s = Settings::load_from(None, env(&[DB, ("LOG_FORMAT", "text")])).unwrap();
        assert_eq!(s.log_format, LogFormat::Text);
        let e = Settings::load_from(None, env(&[DB, ("LOG_FORMAT", "xml")])).unwrap_err();
        assert!(e.to_string().to_lowercase().contains("log_format"), "{e}");
    }

    #[test]
    fn opensearch_takes_several_nodes_and_a_replica_count() {
        let s = Settings::load_from(
            None,
            env(&[
                DB,
                (
                    "OPENSEARCH_URL",
                    "http://127.0.0.1:9200, http://127.0.0.1:9201",
                ),
                ("OPENSEARCH_REPLICAS", "1"),
            ]),
        )
        .unwrap();
        // kept whole: the search crate splits and checks the node list
        assert_eq!(
            s.opensearch_url.as_deref(),
            Some("http://127.0.0.1:9200, http://127.0.0.1:9201")
        );
        assert_eq!(s.opensearch_replicas, 1);
        let e = Settings::load_from(None, env(&[DB, ("OPENSEARCH_REPLICAS", "-1")])).unwrap_err();
        assert!(e.to_string().contains("OPENSEARCH_REPLICAS"), "{e}");
        let e = Settings::load_from(None, env(&[DB, ("OPENSEARCH_REPLICAS", "one")])).unwrap_err();
        assert!(e.to_string().contains("OPENSEARCH_REPLICAS"), "{e}");
    }

    /// A file of its own under the temporary directory, removed on drop.
    struct TempFile(std::path::PathBuf);

    impl TempFile {
        fn new(name: &str, text: &str) -> Self {
            let path = std::env::temp_dir()
                .join(format!("connectra-config-{}-{name}", std::process::id()));
            std::fs::write(&path, text).unwrap();
            Self(path)
        }

        fn path(&self) -> &str {
            self.0.to_str().unwrap()
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn a_toml_file_is_loaded_and_the_environment_overrides_it() {
        let file = TempFile::new(
            "settings.toml",
            r#"
database_url = "postgres://file@127.0.0.1:5433/db"
api_keys = ["k1", "k2"]
http_addr = "127.0.0.1:9999"
parallel_jobs = 2
s3_bucket = "from-file"
"#,
        );
        let s = Settings::load_from(Some(file.path()), env(&[("PARALLEL_JOBS", "3")])).unwrap();
        assert_eq!(s.database_url.expose(), "postgres://file@127.0.0.1:5433/db");
        let keys: Vec<&str> = s.api_keys.iter().map(Secret::expose).collect();
        assert_eq!(keys, ["k1", "k2"]);
        assert_eq!(s.http_addr.to_string(), "127.0.0.1:9999");
        assert_eq!(s.parallel_jobs, 3, "the environment wins over the file");
        assert_eq!(s.s3_allowed_buckets, ["from-file"]);
        assert_eq!(
            s.batch_size_for_insertion,
            defaults::BATCH_SIZE_FOR_INSERTION
        );
        s.validate_for_api().unwrap();

        let bad = TempFile::new("bad.toml", "parallel_jobs = \"many\"\n");
        let e = Settings::load_from(Some(bad.path()), env(&[DB])).unwrap_err();
        assert!(e.to_string().contains("PARALLEL_JOBS"), "{e}");
        let e = Settings::load_from(Some("/nonexistent/connectra.toml"), env(&[DB])).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/connectra.toml"), "{e}");
    }

    #[test]
    fn lists_split_on_commas_and_seconds_override_minutes() {
        let s = Settings::load_from(
            None,
            env(&[
                DB,
                ("API_KEYS", "a, b,,c"),
                ("S3_BUCKET", "main"),
                ("TICKER_INTERVAL_SECONDS", "2"),
                ("S3_UPLOAD_FILE_PATH_PREFIX", "exports"),
            ]),
        )
        .unwrap();
        let keys: Vec<&str> = s.api_keys.iter().map(|k| k.expose().trim()).collect();
        assert_eq!(keys, ["a", "b", "c"]);
        assert_eq!(s.s3_allowed_buckets, ["main"]);
        assert_eq!(s.ticker_interval(), Duration::from_secs(2));
        assert_eq!(s.s3_upload_file_path_prefix(), "exports");
    }

    #[test]
    fn a_bad_value_names_its_variable() {
        let e = Settings::load_from(None, env(&[DB, ("PARALLEL_JOBS", "many")])).unwrap_err();
        assert!(e.to_string().contains("PARALLEL_JOBS"), "{e}");
        let e = Settings::load_from(None, env(&[DB, ("HTTP_ADDR", "nowhere")])).unwrap_err();
        assert!(e.to_string().contains("HTTP_ADDR"), "{e}");
        let e = Settings::load_from(None, env(&[DB, ("PARALLEL_JOBS", "0")])).unwrap_err();
        assert!(e.to_string().contains("PARALLEL_JOBS"), "{e}");
        let e = Settings::load_from(None, env(&[])).unwrap_err();
        assert!(e.to_string().contains("DATABASE_URL"), "{e}");
    }

    #[test]
    fn the_pool_must_fit_the_exports_of_the_postgres_backend() {
        let e = Settings::load_from(
            None,
            env(&[DB, ("PARALLEL_JOBS", "8"), ("DATABASE_POOL_SIZE", "16")]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("use at least 20"), "{e}");
        let s = Settings::load_from(
            None,
            env(&[DB, ("PARALLEL_JOBS", "8"), ("DATABASE_POOL_SIZE", "20")]),
        );
        assert!(s.is_ok());
        // OpenSearch scrolls hold no database connection
        let s = Settings::load_from(
            None,
            env(&[
                DB,
                ("PARALLEL_JOBS", "8"),
                ("DATABASE_POOL_SIZE", "16"),
                ("OPENSEARCH_URL", "http://127.0.0.1:9200"),
            ]),
        );
        assert!(s.is_ok());
    }

    #[test]
    fn the_api_needs_keys_and_secrets_never_print() {
        let s = Settings::load_from(None, env(&[DB])).unwrap();
        assert!(s
            .validate_for_api()
            .unwrap_err()
            .to_string()
            .contains("API_KEYS"));
        let s = Settings::load_from(None, env(&[DB, ("API_KEYS", "hunter2")])).unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
