//! The write API.
//!
//! Every write is authenticated, validated in full (nothing of a bad batch is appended), and
//! acknowledged only once [`EventLog::append`] says it is durable. The answer carries the log
//! positions reached, which a later read can pass to see its own writes.
//!
//! Ingest assigns nothing but the ingest time and the actor: event ids come from the client, so
//! a retry of a batch whose answer was lost is recognised and answered again without a second
//! append (within this process's memory of recent ids; beyond it, the projector skips the
//! duplicate by id).

mod admin;
mod events;
mod files;
mod recent;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRef};
use axum::routing::{delete, post, put};
use dashmap::DashSet;
use object_store::ObjectStore;
use runstream_http::RegistryState;
use runstream_log::EventLog;
use runstream_views::ViewStore;
use runstream_views::registry::Registry;

pub use admin::{Bootstrap, append_registry_folded, bootstrap, load_registry, register_admin_token};
pub use events::AppendResponse;
pub use files::{UploadOptions, blob_key, upload_file};
pub use recent::RecentIds;

/// Appends events another front end (the MLflow-compatible API) built for `project`, which the
/// caller has authorized: each body is validated, the batch follows the rules of the events
/// endpoint (ids unique in the batch, runs exist or are created in it, retries recognised).
/// File events are refused here as there: only uploads write them.
pub async fn append_built(
    st: &IngestState,
    project: &runstream_schema::ProjectId,
    events: Vec<runstream_schema::Event>,
) -> Result<AppendResponse, runstream_http::ApiError> {
    for (i, e) in events.iter().enumerate() {
        if matches!(e.body, runstream_schema::Body::File(_)) {
            return Err(runstream_http::ApiError::invalid(
                format!("events[{i}]"),
                "file events are written by uploads",
            ));
        }
        e.body.validate().map_err(|err| err.within(&format!("events[{i}]")))?;
    }
    events::append(st, project, events.into_iter().map(|e| (e, None)).collect()).await
}

/// Limits on what one request may carry.
#[derive(Debug, Clone)]
pub struct IngestLimits {
    /// Largest event batch body, in bytes.
    pub max_batch_bytes: usize,
    /// Largest uploaded file, in bytes.
    pub max_file_bytes: u64,
}

impl Default for IngestLimits {
    fn default() -> Self {
        Self {
            max_batch_bytes: 64 << 20,
            max_file_bytes: 5 << 30,
        }
    }
}

#[derive(Clone)]
pub struct IngestState {
    pub log: Arc<dyn EventLog>,
    pub registry_log: Arc<dyn EventLog>,
    pub views: Arc<dyn ViewStore>,
    pub blobs: Arc<dyn ObjectStore>,
    pub registry: Arc<Registry>,
    pub limits: IngestLimits,
    /// Runs this process has seen created: spares a view lookup per batch.
    pub known_runs: Arc<DashSet<(String, String)>>,
    pub recent: Arc<RecentIds>,
    /// The folder of a local blob store, whose writes are synced to disk before a file event
    /// is appended (the store itself renames without syncing).
    pub blob_root: Option<std::path::PathBuf>,
    pub stats: Arc<IngestStats>,
}

/// Counters of what this process appended, for metrics.
#[derive(Debug, Default)]
pub struct IngestStats {
    pub events: std::sync::atomic::AtomicU64,
    pub points: std::sync::atomic::AtomicU64,
    pub duplicates: std::sync::atomic::AtomicU64,
}

impl FromRef<IngestState> for RegistryState {
    fn from_ref(s: &IngestState) -> Self {
        RegistryState(s.registry.clone())
    }
}

impl IngestState {
    pub fn new(
        log: Arc<dyn EventLog>,
        registry_log: Arc<dyn EventLog>,
        views: Arc<dyn ViewStore>,
        blobs: Arc<dyn ObjectStore>,
        registry: Arc<Registry>,
        limits: IngestLimits,
    ) -> Self {
        Self {
            log,
            registry_log,
            views,
            blobs,
            registry,
            limits,
            known_runs: Arc::default(),
            recent: Arc::new(RecentIds::new(1 << 20)),
            blob_root: None,
            stats: Arc::default(),
        }
    }

    /// Declares `blobs` a local store kept in `root`, so uploads are synced before they are
    /// acknowledged.
    pub fn with_blob_root(mut self, root: impl Into<std::path::PathBuf>) -> Self {
        self.blob_root = Some(root.into());
        self
    }
}

/// The write routes, to be merged into the service's router.
pub fn router(state: IngestState) -> Router {
    Router::new()
        .route("/api/v1/projects/{project}/events", post(events::append_events))
        .route(
            "/api/v1/projects/{project}/runs/{run}/files/{*path}",
            put(files::upload),
        )
        .route("/api/v1/projects", post(admin::create_project))
        .route("/api/v1/tokens", post(admin::issue_token))
        .route("/api/v1/tokens/{token_id}", delete(admin::revoke_token))
        // Bodies are read with explicit limits by each handler, which answer 413 themselves.
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
