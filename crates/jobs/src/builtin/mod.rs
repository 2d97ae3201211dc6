//! The built-in job types: `insert_csv_file` and `export_csv_file` (the user's
//! guide's two) and `reindex_search`. Behind the `builtin` feature, so a
//! service embedding the runner core pulls in neither S3 nor the search engine.

mod export;
mod import;
mod records;
mod reindex;

use std::sync::Arc;

use connectra_domain::job::{EXPORT_CSV_FILE, INSERT_CSV_FILE, REINDEX_SEARCH};
use connectra_search::SearchBackend;
use connectra_storage::Storage;

use crate::process::SetupError;
use crate::Registry;

/// What the built-in handlers need.
/// Lines an import writes per transaction by default ([`BuiltinDeps::group_rows`]):
/// at the guide's batches of 500, ten batches per round trip.
pub const DEFAULT_GROUP_ROWS: usize = 5000;

#[derive(Clone)]
pub struct BuiltinDeps {
    pub storage: Storage,
    pub search: Arc<dyn SearchBackend>,
    /// Imports write through a connection of their own (COPY).
    pub database_url: String,
    /// `S3_BUCKET`: used when `job_data` names no bucket.
    pub default_bucket: String,
    /// `S3_UPLOAD_FILE_PATH_PRIFIX`: where reports and exports go.
    pub upload_prefix: String,
    /// `BATCH_SIZE_FOR_INSERTION`: an import's unit of checkpoints (a
    /// checkpoint always falls after a whole batch).
    pub batch_size: usize,
    /// How many lines an import writes in one transaction: consecutive
    /// batches are coalesced into groups of at least this many lines
    /// ([`DEFAULT_GROUP_ROWS`]); a batch larger than this is a group of its own.
    pub group_rows: usize,
    /// `CSV_MAX_RECORD_BYTES`.
    pub max_record_bytes: usize,
    /// `EXPORT_ESCAPE_FORMULAS`: neutralise cells a spreadsheet would run.
    pub escape_formulas: bool,
}

impl std::fmt::Debug for BuiltinDeps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuiltinDeps")
            .field("search", &self.search.name())
            .field("default_bucket", &self.default_bucket)
            .field("batch_size", &self.batch_size)
            .finish()
    }
}

/// Registers the built-in handlers.
pub fn register(registry: &mut Registry, deps: BuiltinDeps) {
    let deps = Arc::new(deps);
    let import_deps = deps.clone();
    registry.register_fn(INSERT_CSV_FILE, move |ctx| {
        import::run(ctx, import_deps.clone())
    });
    let export_deps = deps.clone();
    registry.register_fn(EXPORT_CSV_FILE, move |ctx| {
        export::run(ctx, export_deps.clone())
    });
    // registered whatever the backend: with PostgreSQL's the job fails at
    // once, saying why, rather than waiting in `open` for ever
    registry.register_fn(REINDEX_SEARCH, move |ctx| reindex::run(ctx, deps.clone()));
}

/// S3 and the default bucket from the `S3_*` variables; `None` when
/// `S3_BUCKET` is unset. A bad bucket name stops start-up here: S3 itself
/// would only answer "broken pipe".
pub fn storage_from_settings(
    settings: &connectra_config::Settings,
) -> Result<Option<(Storage, String)>, SetupError> {
    let Some(bucket) = settings
        .s3_bucket
        .as_deref()
        .map(str::trim)
        .filter(|b| !b.is_empty())
    else {
        return Ok(None);
    };
    Storage::validate_bucket_name(bucket).map_err(SetupError::Bucket)?;
    let storage = Storage::new(&connectra_storage::S3Config {
        endpoint: settings.s3_endpoint.clone(),
        region: settings.s3_region.clone(),
        access_key_id: settings
            .s3_access_key_id
            .as_ref()
            .map(|s| s.expose().to_string()),
        secret_access_key: settings
            .s3_secret_access_key
            .as_ref()
            .map(|s| s.expose().to_string()),
        path_style: settings.s3_path_style,
    })
    .map_err(SetupError::Storage)?;
    Ok(Some((storage, bucket.to_string())))
}

/// The search backend: OpenSearch when `OPENSEARCH_URL` is set (its indices
/// are created if missing), otherwise PostgreSQL. OpenSearch need not be up
/// for the process to start: when it does not answer, this says so and
/// returns the backend anyway (`/ready` reports it, imports create the
/// indices when they start, and bulk writes wait for it).
pub async fn search_from_settings(
    settings: &connectra_config::Settings,
    pool: connectra_persistence::PgPool,
) -> Result<Arc<dyn SearchBackend>, SetupError> {
    let search: Arc<dyn SearchBackend> = match &settings.opensearch_url {
        Some(url) => Arc::new(
            connectra_search::OpenSearchBackend::new(url)
                .map_err(SetupError::SearchUrl)?
                .with_index_prefix(&settings.opensearch_index_prefix)
                .with_replicas(settings.opensearch_replicas),
        ),
        None => Arc::new(connectra_search::PostgresBackend::new(pool)),
    };
    match search.ensure_indices().await {
        Ok(()) => {}
        Err(e) if e.is_unavailable() => tracing::warn!(error = %e,
            "the search backend does not answer yet; starting anyway, its indices are created when it does"),
        Err(source) => {
            return Err(SetupError::SearchIndices {
                backend: search.name(),
                source,
            })
        }
    }
    Ok(search)
}

impl BuiltinDeps {
    /// The handlers' dependencies: S3 and the default bucket (see
    /// [`storage_from_settings`]), the search backend (see
    /// [`search_from_settings`]), and the rest from `Settings`.
    pub fn from_settings(
        settings: &connectra_config::Settings,
        storage: Storage,
        default_bucket: String,
        search: Arc<dyn SearchBackend>,
    ) -> Self {
        Self {
            storage,
            search,
            database_url: settings.database_url.expose().to_string(),
            default_bucket,
            upload_prefix: settings.s3_upload_file_path_prefix().to_string(),
            batch_size: settings.batch_size_for_insertion,
            group_rows: DEFAULT_GROUP_ROWS,
            max_record_bytes: settings.csv_max_record_bytes,
            escape_formulas: settings.export_escape_formulas,
        }
    }
}

/// The registry of a runner binary: the built-in handlers when S3 is
/// configured, otherwise none (with a warning: their jobs wait in `open`).
pub async fn registry_from_settings(
    settings: &connectra_config::Settings,
    pool: connectra_persistence::PgPool,
) -> Result<Registry, SetupError> {
    let mut registry = Registry::new();
    match storage_from_settings(settings)? {
        Some((storage, bucket)) => {
            let search = search_from_settings(settings, pool).await?;
            register(&mut registry, BuiltinDeps::from_settings(settings, storage, bucket, search));
        }
        None => tracing::warn!(
            "S3_BUCKET is not set: insert_csv_file and export_csv_file jobs will not be run by this process"
        ),
    }
    Ok(registry)
}
