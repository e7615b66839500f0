//! Series reads: raw points by step range (paged), or summarised into N buckets from rollups.

use axum::Json;
use axum::extract::{Query, State};
use runstream_http::{ApiError, Authenticated, UrlPath};
use runstream_schema::json::JsonF64;
use runstream_schema::{MAX_STEP, ProjectId, Role, project_key};
use runstream_views::{Bucket, PointRow, SeriesKey};
use serde::Deserialize;

use crate::QueryState;
use crate::consistency::wait_for;
use crate::runs::{in_range, query};

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

/// The steps `from_step..=to_step` asked for (all when left out), if not empty or negative.
fn step_range(from: Option<i64>, to: Option<i64>) -> Result<(i64, i64), ApiError> {
    let (from, to) = (from.unwrap_or(0), to.unwrap_or(MAX_STEP));
    if from < 0 || to < from {
        return Err(ApiError::invalid(
            "from_step",
            format!("range {from}..={to} is empty or negative"),
        ));
    }
    Ok((from, to))
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
    let (from, to) = step_range(q.from_step, q.to_step)?;
    let limit = in_range("limit", q.limit.unwrap_or(DEFAULT_LIMIT), MAX_LIMIT)?;
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
        in_range("buckets", n, MAX_BUCKETS)?;
        let buckets = st.views.read_buckets(&r.key, r.from, r.to, n).await?;
        return Ok(Json(
            serde_json::json!({ "path": r.key.path, "buckets": buckets_json(&buckets) }),
        ));
    }
    let points = st.views.read_points(&r.key, r.from, r.to, r.limit).await?;
    let mut out = points_json(&points, r.limit);
    out["path"] = r.key.path.into();
    Ok(Json(out))
}

fn buckets_json(buckets: &[Bucket]) -> Vec<serde_json::Value> {
    let f = |v: Option<f64>| v.map(JsonF64);
    buckets
        .iter()
        .map(|b| {
            serde_json::json!({
                "from_step": b.from_step, "to_step": b.to_step, "count": b.count,
                "min": f(b.min), "max": f(b.max), "mean": f(b.mean),
                "last_step": b.last_step, "last_value": JsonF64(b.last_value), "last_time_ms": b.last_time_ms,
            })
        })
        .collect()
}

/// Points as columns, with where the next page starts when this one is full.
fn points_json(points: &[PointRow], limit: usize) -> serde_json::Value {
    let next = (points.len() == limit)
        .then(|| points.last().map(|p| p.step + 1))
        .flatten();
    let steps: Vec<i64> = points.iter().map(|p| p.step).collect();
    let times: Vec<i64> = points.iter().map(|p| p.time_ms).collect();
    let values: Vec<JsonF64> = points.iter().map(|p| JsonF64(p.value)).collect();
    serde_json::json!({ "steps": steps, "times_ms": times, "values": values, "next_from_step": next })
}

/// Most series one request may read.
const MAX_SERIES: usize = 1000;
/// Most points one request may return, over all its series.
const MAX_TOTAL_POINTS: usize = 1_000_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SeriesRef {
    run: String,
    path: String,
    /// Live mode: only points after this step (the last step the chart has).
    after_step: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ManySeries {
    /// Series by (run, path) ...
    #[serde(default)]
    series: Vec<SeriesRef>,
    /// ... and/or every path of `paths` in every run of `runs`.
    #[serde(default)]
    runs: Vec<String>,
    #[serde(default)]
    paths: Vec<String>,
    from_step: Option<i64>,
    to_step: Option<i64>,
    /// Points per series (raw reads).
    limit: Option<usize>,
    buckets: Option<usize>,
    min_position: Option<String>,
    wait_ms: Option<u64>,
}

/// Many float series in one request, raw or bucketed: the series of a chart comparing runs.
/// A series that does not exist comes back empty, so a chart of many runs needs no prior check.
pub(crate) async fn many_series(
    State(st): State<QueryState>,
    Authenticated(p): Authenticated,
    UrlPath(project): UrlPath<String>,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let project = st.registry.authorize(&p, &project, Role::Viewer)?;
    let mut q: ManySeries = runstream_http::parse_json(&body)?;
    wait_for(st.views.as_ref(), q.min_position.as_deref(), q.wait_ms).await?;
    for run in &q.runs {
        for path in &q.paths {
            q.series.push(SeriesRef {
                run: run.clone(),
                path: path.clone(),
                after_step: None,
            });
        }
    }
    if q.series.is_empty() {
        return Err(ApiError::invalid(
            "series",
            "name at least one series, or runs and paths",
        ));
    }
    if q.series.len() > MAX_SERIES {
        return Err(ApiError::invalid(
            "series",
            format!("{} series asked for, at most {MAX_SERIES} are allowed", q.series.len()),
        ));
    }
    let (from, to) = step_range(q.from_step, q.to_step)?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT.min(MAX_TOTAL_POINTS / q.series.len()));
    if limit == 0 || limit.saturating_mul(q.series.len()) > MAX_TOTAL_POINTS {
        return Err(ApiError::invalid(
            "limit",
            format!(
                "{limit} points for each of {} series is outside 1..={MAX_TOTAL_POINTS} points in all",
                q.series.len()
            ),
        ));
    }
    if let Some(n) = q.buckets {
        in_range("buckets", n, MAX_BUCKETS)?;
    }
    let pk = project_key(&p.workspace, &project);
    let mut out = Vec::with_capacity(q.series.len());
    for (i, s) in q.series.iter().enumerate() {
        runstream_schema::check_path(&s.path).map_err(|e| ApiError::from(e.within(&format!("series[{i}].path"))))?;
        let from = match s.after_step {
            Some(a) if a < 0 => {
                return Err(ApiError::invalid(
                    format!("series[{i}].after_step"),
                    "must be 0 or more",
                ));
            }
            Some(a) => from.max(a.saturating_add(1)),
            None => from,
        };
        let key = SeriesKey {
            project: pk.clone(),
            run: s.run.clone(),
            path: s.path.clone(),
        };
        let mut v = if from > to {
            points_json(&[], limit)
        } else if let Some(n) = q.buckets {
            serde_json::json!({ "buckets": buckets_json(&st.views.read_buckets(&key, from, to, n).await?) })
        } else {
            points_json(&st.views.read_points(&key, from, to, limit).await?, limit)
        };
        v["run"] = s.run.clone().into();
        v["path"] = s.path.clone().into();
        out.push(v);
    }
    Ok(Json(serde_json::json!({ "series": out })))
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
