//! MLflow's tracking REST API 2.0 (`/api/2.0/mlflow/...` and the `/ajax-api/2.0/mlflow/...`
//! aliases), served over runstream's own events and views, so that MLflow's client logs to
//! runstream unchanged.
//!
//! MLflow runs are runstream runs of the token's project: params are the string attributes
//! `params/KEY`, tags the string attributes `tags/KEY`, a metric the float series `KEY` (one
//! point per step: a second value at the same step replaces the first). Experiments are kept in
//! the registry (see `runstream_views::registry`); a run belongs to an experiment by the
//! experiment's name, and runs without one belong to experiment 0, `Default`. So a run logged by
//! either API is seen by both.
//!
//! MLflow's server is strongly consistent; runstream's views trail the log. Every read here
//! first waits (bounded) until the views have applied everything this process appended, so a
//! client reads its own writes.

mod artifacts;
mod experiments;
mod history;
mod models;
mod req;
mod runs;
mod search;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::FromRef;
use axum::routing::{delete, get, patch, post};
use dashmap::{DashMap, DashSet};
use runstream_http::{ApiError, PositionToken, RegistryState};
use runstream_ingest::IngestState;
use runstream_schema::{ProjectId, Role, project_key};
use runstream_views::registry::Principal;

use req::Answer;
pub use req::MlflowError;

#[derive(Clone)]
pub struct MlflowState {
    pub ingest: IngestState,
    /// The highest offset per partition this process has appended.
    written: Arc<Mutex<BTreeMap<u32, u64>>>,
    /// Runs (project key, run id) known to exist and not be deleted, so that logging to them
    /// needs no view read.
    active_runs: Arc<DashSet<(String, String)>>,
    /// When each project's runs were last scanned for experiment names to adopt.
    adopted: Arc<DashMap<String, Instant>>,
    /// The views' applied positions as last read: views never go back, so a read whose writes
    /// this already covers needs no checkpoint query.
    applied: Arc<Mutex<runstream_views::Checkpoint>>,
    /// Runs as MLflow `Run` JSON, by (project key, run id), with the detail and experiment id
    /// they were rendered from (see [`runs::write_run_json`]).
    rendered: Arc<DashMap<(String, String), runs::Rendered>>,
}

impl FromRef<MlflowState> for RegistryState {
    fn from_ref(s: &MlflowState) -> Self {
        RegistryState(s.ingest.registry.clone())
    }
}

impl MlflowState {
    pub fn new(ingest: IngestState) -> Self {
        Self {
            ingest,
            written: Arc::default(),
            active_runs: Arc::default(),
            adopted: Arc::default(),
            applied: Arc::default(),
            rendered: Arc::default(),
        }
    }

    fn note_written(&self, position: &str) {
        if let Ok(t) = PositionToken::parse("position", position) {
            let mut w = self.written.lock().unwrap_or_else(|p| p.into_inner());
            for (p, o) in t.0 {
                let e = w.entry(p).or_insert(o);
                *e = (*e).max(o);
            }
        }
    }

    /// Waits until the views have applied every event this process appended.
    async fn caught_up(&self) -> Result<(), MlflowError> {
        let token = PositionToken(self.written.lock().unwrap_or_else(|p| p.into_inner()).clone());
        if token.0.is_empty() {
            return Ok(());
        }
        if token.reached_by(&self.applied.lock().unwrap_or_else(|p| p.into_inner())) {
            return Ok(());
        }
        let start = Instant::now();
        let mut pause = Duration::from_millis(1);
        loop {
            let applied = self.ingest.views.checkpoint().await?;
            let reached = token.reached_by(&applied);
            *self.applied.lock().unwrap_or_else(|p| p.into_inner()) = applied;
            if reached {
                return Ok(());
            }
            if start.elapsed() >= READ_WAIT {
                return Err(ApiError::timeout(format!(
                    "views have not applied this server's writes (up to {token}) within {} s; retry later",
                    READ_WAIT.as_secs()
                ))
                .into());
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }
}

const READ_WAIT: Duration = Duration::from_secs(30);

/// The principal of a request, authenticated as everywhere else, with failures in MLflow's error
/// shape (`UNAUTHENTICATED`, 401).
pub(crate) struct MlflowAuth(pub Principal);

impl<S> axum::extract::FromRequestParts<S> for MlflowAuth
where
    S: Send + Sync,
    RegistryState: FromRef<S>,
{
    type Rejection = MlflowError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, Self::Rejection> {
        runstream_http::Authenticated::from_request_parts(parts, state)
            .await
            .map(|a| MlflowAuth(a.0))
            .map_err(MlflowError::from)
    }
}

/// A request's project, as the token chooses it, and who acts.
pub(crate) struct Ctx {
    pub principal: Principal,
    pub project: ProjectId,
    /// The key views store the project under.
    pub key: String,
}

impl Ctx {
    /// The project MLflow's client works in: the one project the token is granted, or else the
    /// workspace's `default` project. `need` is the role the request needs on it.
    fn of(st: &MlflowState, principal: Principal, need: Role) -> Result<Ctx, MlflowError> {
        let granted = principal.granted_projects();
        let name = match granted.as_slice() {
            [only] => only.to_string(),
            _ => "default".to_string(),
        };
        let project = st.ingest.registry.authorize(&principal, &name, need)?;
        let key = project_key(&principal.workspace, &project);
        Ok(Ctx {
            principal,
            project,
            key,
        })
    }
}

/// The MLflow routes, to be merged into the service's router.
pub fn router(state: MlflowState) -> Router {
    let api = Router::new()
        .route("/experiments/create", post(experiments::create))
        .route("/experiments/get", get(experiments::get))
        .route("/experiments/get-by-name", get(experiments::get_by_name))
        .route(
            "/experiments/search",
            post(experiments::search).get(experiments::search),
        )
        .route("/experiments/update", post(experiments::update))
        .route("/experiments/delete", post(experiments::delete))
        .route("/experiments/restore", post(experiments::restore))
        .route("/experiments/set-experiment-tag", post(experiments::set_tag))
        .route("/experiments/delete-experiment-tag", post(experiments::delete_tag))
        .route("/runs/create", post(runs::create))
        .route("/runs/get", get(runs::get))
        .route("/runs/update", post(runs::update))
        .route("/runs/delete", post(runs::delete))
        .route("/runs/restore", post(runs::restore))
        .route("/runs/log-metric", post(runs::log_metric))
        .route("/runs/log-parameter", post(runs::log_param))
        .route("/runs/set-tag", post(runs::set_tag))
        .route("/runs/delete-tag", post(runs::delete_tag))
        .route("/runs/log-batch", post(runs::log_batch))
        .route("/runs/log-inputs", post(runs::log_inputs))
        .route("/runs/search", post(search::search_runs))
        .route("/metrics/get-history", get(history::get_history))
        .route(
            "/metrics/get-history-bulk-interval",
            get(history::get_history_bulk_interval),
        )
        .route("/artifacts/list", get(artifacts::list))
        .route("/runs/outputs", post(models::log_outputs))
        .route("/logged-models", post(models::create))
        .route("/logged-models/search", post(models::search))
        .route(
            "/logged-models/{model_id}",
            get(models::get).patch(models::finalize).delete(models::delete),
        )
        .route("/logged-models/{model_id}/tags", patch(models::set_tags))
        .route("/logged-models/{model_id}/tags/{key}", delete(models::delete_tag))
        .route("/logged-models/{model_id}/params", post(models::log_params))
        .route(
            "/logged-models/{model_id}/artifacts/directories",
            get(models::list_artifacts),
        )
        .fallback(not_found);
    let proxied = Router::new()
        .route("/", get(artifacts::proxied_list))
        .route(
            "/{*path}",
            get(artifacts::download)
                .put(artifacts::upload)
                .delete(artifacts::delete),
        )
        .fallback(not_found);
    Router::new()
        .nest("/api/2.0/mlflow", api.clone())
        .nest("/ajax-api/2.0/mlflow", api)
        .nest("/api/2.0/mlflow-artifacts/artifacts", proxied.clone())
        .nest("/ajax-api/2.0/mlflow-artifacts/artifacts", proxied)
        // Artifact bodies are bounded by the ingest limits the upload applies itself.
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(state)
}

async fn not_found(method: axum::http::Method, uri: axum::http::Uri) -> MlflowError {
    // Tells an operator which MLflow endpoints the clients in use need.
    tracing::info!(%method, path = uri.path(), "an MLflow client called an endpoint runstream does not serve");
    MlflowError::new(
        axum::http::StatusCode::NOT_FOUND,
        "ENDPOINT_NOT_FOUND",
        format!("runstream does not serve MLflow's {method} {}", uri.path()),
    )
}

/// Milliseconds since the epoch.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub(crate) fn ok(v: serde_json::Value) -> Answer {
    Ok(axum::Json(v))
}

pub(crate) fn empty() -> Answer {
    ok(serde_json::json!({}))
}
