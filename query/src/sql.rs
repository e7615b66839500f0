//! Analytics SQL: `POST /api/v1/sql`.
//!
//! One read-only query over the documented views (`runs`, `attributes`, `tags`, `series`,
//! `rollups`, `lines`, `files`, `lineage`; see docs/analytics-sql.md), whose rows are those of
//! the caller's projects, or of the subset it names, whatever the query says. The query runs
//! within a row limit and a time limit; a query that is refused, fails or runs out of time is a
//! 400 naming `sql` with SQLite's or our message and, where known, the position. At most
//! [`CONCURRENT_QUERIES`] run at once; past that a query waits briefly, then gets a 503 with
//! Retry-After.

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use runstream_http::{ApiError, Authenticated, parse_json};
use runstream_schema::Role;
use runstream_schema::json::JsonF64;
use runstream_views::sql::{SqlQuery, SqlValue};
use serde::Deserialize;
use tokio::sync::Semaphore;

use crate::QueryState;
use crate::consistency::wait_for;
use crate::runs::in_range;

/// Analytics queries running at once; more wait for a slot, then get a 503. A query may hold a
/// core for its whole time limit, and the search API must keep answering meanwhile.
const CONCURRENT_QUERIES: usize = 4;
/// How long a query waits for a slot before the 503.
const SLOT_WAIT: Duration = Duration::from_secs(2);
static SLOTS: Semaphore = Semaphore::const_new(CONCURRENT_QUERIES);

const DEFAULT_ROWS: usize = 1000;
const MAX_ROWS: usize = 100_000;
const DEFAULT_TIMEOUT_MS: usize = 5_000;
const MAX_TIMEOUT_MS: usize = 60_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SqlRequest {
    sql: String,
    /// The projects whose rows the views hold; every project the caller can read if absent.
    projects: Option<Vec<String>>,
    max_rows: Option<usize>,
    timeout_ms: Option<usize>,
    min_position: Option<String>,
    wait_ms: Option<u64>,
}

fn value_json(v: SqlValue) -> serde_json::Value {
    match v {
        SqlValue::Null => serde_json::Value::Null,
        SqlValue::Int(i) => i.into(),
        SqlValue::Float(f) => serde_json::to_value(JsonF64(f)).unwrap_or_default(),
        SqlValue::Text(s) => s.into(),
        SqlValue::Blob(b) => hex::encode(b).into(),
    }
}

pub(crate) async fn sql(
    State(st): State<QueryState>,
    Authenticated(p): Authenticated,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let req: SqlRequest = parse_json(&body)?;
    let projects = match req.projects {
        Some(names) => names
            .iter()
            .map(|n| Ok(st.registry.authorize(&p, n, Role::Viewer)?.to_string()))
            .collect::<Result<Vec<_>, ApiError>>()?,
        None => st
            .registry
            .projects(&p.workspace)
            .into_iter()
            .filter(|id| p.role_on(id).is_some())
            .map(|id| id.to_string())
            .collect(),
    };
    let max_rows = in_range("max_rows", req.max_rows.unwrap_or(DEFAULT_ROWS), MAX_ROWS)?;
    let timeout_ms = in_range(
        "timeout_ms",
        req.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS),
        MAX_TIMEOUT_MS,
    )?;
    wait_for(st.views.as_ref(), req.min_position.as_deref(), req.wait_ms).await?;
    let _slot = match tokio::time::timeout(SLOT_WAIT, SLOTS.acquire()).await {
        Ok(Ok(slot)) => slot,
        _ => {
            return Err(ApiError::unavailable(
                format!("{CONCURRENT_QUERIES} analytics queries are running, the most at once; retry shortly"),
                1,
            ));
        }
    };
    let answer = st
        .views
        .sql(SqlQuery {
            workspace: p.workspace.to_string(),
            projects: projects.clone(),
            sql: req.sql,
            max_rows,
            timeout: Duration::from_millis(timeout_ms as u64),
        })
        .await?;
    let rows: Vec<serde_json::Value> = answer
        .rows
        .into_iter()
        .map(|r| serde_json::Value::Array(r.into_iter().map(value_json).collect()))
        .collect();
    Ok(Json(serde_json::json!({
        "columns": answer.columns,
        "rows": rows,
        "truncated": answer.truncated,
        "projects": projects,
    })))
}
