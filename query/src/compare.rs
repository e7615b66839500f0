//! Runs side by side: every attribute with its value in each run and whether they differ, metric
//! summaries, tags, and float series aligned by step (one row per step, a value or null per run).

use std::collections::{BTreeMap, BTreeSet};

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use runstream_http::{ApiError, Authenticated, UrlPath, parse_json};
use runstream_schema::json::{JsonF64, value_to_json};
use runstream_schema::{MAX_STEP, Role, project_key};
use runstream_views::{PointFrom, RunDetail, SeriesKey};
use serde::Deserialize;

use crate::QueryState;
use crate::consistency::wait_for;

const MAX_RUNS: usize = 50;
const MAX_SERIES_PATHS: usize = 20;
/// Most aligned steps per series (the first ones; the answer says where the next page starts).
const MAX_STEPS: usize = 10_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CompareRequest {
    runs: Vec<String>,
    /// Float series to align by step.
    #[serde(default)]
    series: Vec<String>,
    from_step: Option<i64>,
    /// Only the attributes whose values differ between the runs.
    #[serde(default)]
    only_differences: bool,
    min_position: Option<String>,
    wait_ms: Option<u64>,
}

pub(crate) async fn compare(
    State(st): State<QueryState>,
    Authenticated(p): Authenticated,
    UrlPath(project): UrlPath<String>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let project = st.registry.authorize(&p, &project, Role::Viewer)?;
    let req: CompareRequest = parse_json(&body)?;
    wait_for(st.views.as_ref(), req.min_position.as_deref(), req.wait_ms).await?;
    if req.runs.is_empty() || req.runs.len() > MAX_RUNS {
        return Err(ApiError::invalid("runs", format!("name 1 to {MAX_RUNS} runs")));
    }
    if req.runs.iter().collect::<BTreeSet<_>>().len() != req.runs.len() {
        return Err(ApiError::invalid("runs", "a run is named twice"));
    }
    if req.series.len() > MAX_SERIES_PATHS {
        return Err(ApiError::invalid(
            "series",
            format!("at most {MAX_SERIES_PATHS} series"),
        ));
    }
    for (i, path) in req.series.iter().enumerate() {
        runstream_schema::check_path(path).map_err(|e| ApiError::from(e.within(&format!("series[{i}]"))))?;
    }
    let from = req.from_step.unwrap_or(0);
    if from < 0 {
        return Err(ApiError::invalid("from_step", "must be 0 or more"));
    }
    let pk = project_key(&p.workspace, &project);
    let mut details: Vec<RunDetail> = Vec::with_capacity(req.runs.len());
    for run in &req.runs {
        details.push(
            st.views
                .get_run(&pk, run)
                .await?
                .ok_or_else(|| ApiError::not_found(format!("run {run:?} does not exist in project {project:?}")))?,
        );
    }

    // Attributes: one row per path, a value (or null) per run.
    let paths: BTreeSet<&str> = details
        .iter()
        .flat_map(|d| d.attributes.iter().map(|(p, _)| p.as_str()))
        .collect();
    let mut attributes = serde_json::Map::new();
    for path in paths {
        let values: Vec<serde_json::Value> = details
            .iter()
            .map(|d| {
                d.attributes
                    .iter()
                    .find(|(p, _)| p == path)
                    .map_or(serde_json::Value::Null, |(_, v)| value_to_json(v))
            })
            .collect();
        let differs = values.iter().any(|v| *v != values[0]);
        if differs || !req.only_differences {
            attributes.insert(
                path.to_string(),
                serde_json::json!({ "values": values, "differs": differs }),
            );
        }
    }

    // Metric summaries and tags, per run.
    let f = |v: Option<f64>| v.map(|x| serde_json::to_value(JsonF64(x)).unwrap_or_default());
    let metric_paths: BTreeSet<&str> = details
        .iter()
        .flat_map(|d| d.series.iter().filter(|s| s.kind == "float").map(|s| s.path.as_str()))
        .collect();
    let mut metrics = serde_json::Map::new();
    for path in metric_paths {
        let per_run: Vec<serde_json::Value> = details
            .iter()
            .map(|d| {
                d.series
                    .iter()
                    .find(|s| s.path == path && s.kind == "float")
                    .map_or(serde_json::Value::Null, |s| {
                        serde_json::json!({
                            "last": f(s.last_value), "min": f(s.min), "max": f(s.max), "mean": f(s.mean),
                            "count": s.count, "last_step": s.last_step,
                        })
                    })
            })
            .collect();
        metrics.insert(path.to_string(), serde_json::Value::Array(per_run));
    }
    let tags: Vec<&Vec<String>> = details.iter().map(|d| &d.tags).collect();
    let runs: Vec<&runstream_views::RunRow> = details.iter().map(|d| &d.run).collect();

    // Series aligned by step: the union of the runs' steps, a value or null per run.
    let mut series = serde_json::Map::new();
    for path in &req.series {
        let mut by_step: BTreeMap<i64, Vec<Option<f64>>> = BTreeMap::new();
        // A run whose read was cut short knows nothing past its last step read: rows stop there.
        let mut complete_to = MAX_STEP;
        for (i, run) in req.runs.iter().enumerate() {
            let key = SeriesKey {
                project: pk.clone(),
                run: run.clone(),
                path: path.clone(),
            };
            let points = st
                .views
                .read_points(&key, PointFrom::step(from), MAX_STEP, MAX_STEPS)
                .await?;
            if points.len() == MAX_STEPS {
                complete_to = complete_to.min(points.last().map_or(MAX_STEP, |p| p.step));
            }
            // A step logged more than once shows its last value (the latest in time).
            for pt in points {
                by_step.entry(pt.step).or_insert_with(|| vec![None; req.runs.len()])[i] = Some(pt.value);
            }
        }
        let mut rows: Vec<(i64, Vec<Option<f64>>)> = by_step.into_iter().collect();
        let keep = rows
            .iter()
            .take_while(|(s, _)| *s <= complete_to)
            .count()
            .min(MAX_STEPS);
        let next_from_step = rows.get(keep).map(|(s, _)| *s);
        rows.truncate(keep);
        let steps: Vec<i64> = rows.iter().map(|(s, _)| *s).collect();
        let values: Vec<Vec<Option<JsonF64>>> = (0..req.runs.len())
            .map(|i| rows.iter().map(|(_, v)| v[i].map(JsonF64)).collect())
            .collect();
        series.insert(
            path.clone(),
            serde_json::json!({ "steps": steps, "values": values, "next_from_step": next_from_step }),
        );
    }
    Ok(Json(serde_json::json!({
        "runs": runs, "tags": tags, "attributes": attributes, "metrics": metrics, "series": series,
    })))
}
