//! The read API.
//!
//! Reads are served from the views, which trail the log. A read that must see a given write
//! passes the position token the write returned as `min_position`; the handler then waits
//! (at most `wait_ms`, default 10 s) until the views' checkpoint has passed it, and answers
//! 504 with Retry-After if they have not — it never answers with data older than asked for.

mod compare;
mod consistency;
pub mod filter;
mod lineage;
mod runs;
mod search;
mod series;
mod sql;

use std::sync::Arc;

use axum::Router;
use axum::extract::FromRef;
use axum::routing::{get, post};
use object_store::ObjectStore;
use runstream_http::RegistryState;
use runstream_log::EventLog;
use runstream_views::ViewStore;
use runstream_views::registry::Registry;

#[derive(Clone)]
pub struct QueryState {
    pub views: Arc<dyn ViewStore>,
    /// The event log, from which a run's history is read: the views index it, not copy it.
    pub log: Arc<dyn EventLog>,
    pub blobs: Arc<dyn ObjectStore>,
    pub registry: Arc<Registry>,
}

impl FromRef<QueryState> for RegistryState {
    fn from_ref(s: &QueryState) -> Self {
        RegistryState(s.registry.clone())
    }
}

/// The OpenAPI document of the whole HTTP API (query and ingest), served as it is.
pub const OPENAPI: &str = include_str!("../api/openapi.json");

async fn openapi() -> impl axum::response::IntoResponse {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], OPENAPI)
}

pub fn router(state: QueryState) -> Router {
    Router::new()
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/projects", get(runs::list_projects))
        .route("/api/v1/sql", post(sql::sql))
        .route("/api/v1/projects/{project}/runs", get(search::list_runs))
        .route("/api/v1/projects/{project}/runs:search", post(search::search_runs))
        .route("/api/v1/projects/{project}/runs:groups", post(search::group_runs))
        .route("/api/v1/projects/{project}/runs:compare", post(compare::compare))
        .route("/api/v1/projects/{project}/fields", get(search::fields))
        .route("/api/v1/projects/{project}/lineage", get(lineage::lineage))
        .route("/api/v1/projects/{project}/series:query", post(series::many_series))
        .route("/api/v1/projects/{project}/runs/{run}", get(runs::get_run))
        .route("/api/v1/projects/{project}/runs/{run}/events", get(runs::run_events))
        .route(
            "/api/v1/projects/{project}/runs/{run}/series",
            get(series::float_series),
        )
        .route(
            "/api/v1/projects/{project}/runs/{run}/lines",
            get(series::string_series),
        )
        .route(
            "/api/v1/projects/{project}/runs/{run}/files/{*path}",
            get(runs::download_file),
        )
        .with_state(state)
}
