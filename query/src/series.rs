//! Series reads: raw points by step range (paged), or summarised into N buckets from rollups.

use axum::Json;
use axum::extract::{Query, State};
use runstream_http::{ApiError, Authenticated, UrlPath};
use runstream_schema::json::JsonF64;
use runstream_schema::{MAX_STEP, ProjectId, Role, project_key};
use runstream_views::SeriesKey;
use serde::Deserialize;

use crate::QueryState;
use crate::consistency::wait_for;
use crate::runs::query;

const DEFAULT_LIMIT: usize = 10_000;
const MAX_LIMIT: usize = 1_000_000;
const MAX_BUCKETS: usize = 100_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SeriesQuery {
    path: String,
    from_step: Option<i64>,
    to_step: Option<i64>,
    limit: Option<usize>,
    buckets: Option<usize>,
    min_position: Option<String>,
    wait_ms: Option<u64>,
}

struct Resolved {
    key: SeriesKey,
    from: i64,
    to: i64,
    limit: usize,
}

async fn resolve(
    st: &QueryState,
    project: &ProjectId,
    run: String,
    p: &runstream_views::registry::Principal,
    q: &SeriesQuery,
) -> Result<Resolved, ApiError> {
    wait_for(st.views.as_ref(), q.min_position.as_deref(), q.wait_ms).await?;
    runstream_schema::check_path(&q.path).map_err(|e| ApiError::from(e.within("path")))?;
    let from = q.from_step.unwrap_or(0);
    let to = q.to_step.unwrap_or(MAX_STEP);
    if from < 0 || to < from {
        return Err(ApiError::invalid(
            "from_step",
            format!("range {from}..={to} is empty or negative"),
        ));
    }
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::invalid(
            "limit",
            format!("{limit} is outside 1..={MAX_LIMIT}"),
        ));
    }
    let pk = project_key(&p.workspace, project);
    if !st.views.run_exists(&pk, &run).await? {
        return Err(ApiError::not_found(format!(
            "run {run:?} does not exist in project {project:?}"
        )));
    }
    Ok(Resolved {
        key: SeriesKey {
            project: pk,
            run,
            path: q.path.clone(),
        },
        from,
        to,
        limit,
    })
}

pub(crate) async fn float_series(
    State(st): State<QueryState>,
    Authenticated(p): Authenticated,
    UrlPath((project, run)): UrlPath<(String, String)>,
    q: Result<Query<SeriesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let project = st.registry.authorize(&p, &project, Role::Viewer)?;
    let q = query(q)?;
    let r = resolve(&st, &project, run, &p, &q).await?;
    if let Some(n) = q.buckets {
        if !(1..=MAX_BUCKETS).contains(&n) {
            return Err(ApiError::invalid(
                "buckets",
                format!("{n} is outside 1..={MAX_BUCKETS}"),
            ));
        }
        let buckets = st.views.read_buckets(&r.key, r.from, r.to, n).await?;
        let f = |v: Option<f64>| v.map(JsonF64);
        let out: Vec<_> = buckets
            .iter()
            .map(|b| {
                serde_json::json!({
                    "from_step": b.from_step, "to_step": b.to_step, "count": b.count,
                    "min": f(b.min), "max": f(b.max), "mean": f(b.mean),
                    "last_step": b.last_step, "last_value": JsonF64(b.last_value), "last_time_ms": b.last_time_ms,
                })
            })
            .collect();
        return Ok(Json(serde_json::json!({ "path": r.key.path, "buckets": out })));
    }
    let points = st.views.read_points(&r.key, r.from, r.to, r.limit).await?;
    let next = (points.len() == r.limit)
        .then(|| points.last().map(|p| p.step + 1))
        .flatten();
    let steps: Vec<i64> = points.iter().map(|p| p.step).collect();
    let times: Vec<i64> = points.iter().map(|p| p.time_ms).collect();
    let values: Vec<JsonF64> = points.iter().map(|p| JsonF64(p.value)).collect();
    Ok(Json(serde_json::json!({
        "path": r.key.path, "steps": steps, "times_ms": times, "values": values, "next_from_step": next,
    })))
}

pub(crate) async fn string_series(
    State(st): State<QueryState>,
    Authenticated(p): Authenticated,
    UrlPath((project, run)): UrlPath<(String, String)>,
    q: Result<Query<SeriesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let project = st.registry.authorize(&p, &project, Role::Viewer)?;
    let q = query(q)?;
    if q.buckets.is_some() {
        return Err(ApiError::invalid(
            "buckets",
            "string series cannot be bucketed; page through them with limit",
        ));
    }
    let r = resolve(&st, &project, run, &p, &q).await?;
    let lines = st.views.read_lines(&r.key, r.from, r.to, r.limit).await?;
    let next = (lines.len() == r.limit)
        .then(|| lines.last().map(|l| l.step + 1))
        .flatten();
    Ok(Json(serde_json::json!({
        "path": r.key.path,
        "steps": lines.iter().map(|l| l.step).collect::<Vec<_>>(),
        "times_ms": lines.iter().map(|l| l.time_ms).collect::<Vec<_>>(),
        "lines": lines.iter().map(|l| l.line.as_str()).collect::<Vec<_>>(),
        "next_from_step": next,
    })))
}
