//! `metrics/get-history` and `metrics/get-history-bulk-interval`: a metric's points, read from
//! the series views.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use runstream_schema::{MAX_STEP, Role, RunId};
use runstream_views::{PointFrom, PointRow, SeriesKey};
use serde::{Serialize, Serializer};
use serde_json::Value;

use crate::req::{MlflowError, Req};
use crate::{Ctx, MlflowAuth, MlflowState};

/// Points per page when the client names no `max_results`.
const DEFAULT_PAGE: usize = 25_000;
const MAX_PAGE: usize = 1_000_000;
/// Runs one bulk-interval request may name, and its largest sample per run.
const MAX_BULK_RUNS: usize = 100;
const MAX_BULK_RESULTS: usize = 2_500;

/// One point as MLflow's `Metric` message, serialized straight from the row (histories are
/// long: no intermediate JSON tree per point).
#[derive(Serialize)]
struct MetricOut<'a> {
    key: &'a str,
    #[serde(serialize_with = "non_finite_as_string")]
    value: f64,
    timestamp: i64,
    step: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    run_id: Option<&'a str>,
}

impl<'a> MetricOut<'a> {
    fn of(key: &'a str, p: &PointRow, run_id: Option<&'a str>) -> Self {
        MetricOut {
            key,
            value: p.value,
            timestamp: p.time_ms,
            step: p.step,
            run_id,
        }
    }
}

#[derive(Serialize)]
struct Page<'a> {
    metrics: Vec<MetricOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_page_token: Option<String>,
}

/// A double as protobuf's JSON mapping writes it: NaN and the infinities as strings.
pub(crate) fn non_finite_as_string<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    match crate::req::double(*v) {
        Value::String(text) => s.serialize_str(&text),
        _ => s.serialize_f64(*v),
    }
}

async fn check_run(st: &MlflowState, ctx: &Ctx, raw: &str) -> Result<String, MlflowError> {
    let missing = || MlflowError::not_found(format!("Run with id={raw} not found"));
    let run = RunId::new(raw).map_err(|_| missing())?;
    if !st.ingest.views.run_exists(&ctx.key, run.as_str()).await? {
        return Err(missing());
    }
    Ok(run.to_string())
}

pub(crate) async fn get_history(
    State(st): State<MlflowState>,
    MlflowAuth(p): MlflowAuth,
    req: Req,
) -> Result<Response, MlflowError> {
    let ctx = Ctx::of(&st, p, Role::Viewer)?;
    let raw = req.run_id()?;
    let key = req.required_str("metric_key")?;
    let limit = match req.i64("max_results")? {
        None => DEFAULT_PAGE,
        Some(n) if (1..=MAX_PAGE as i64).contains(&n) => n as usize,
        Some(n) => {
            return Err(MlflowError::invalid(format!(
                "Invalid value {n} for parameter 'max_results' supplied: it must be from 1 to {MAX_PAGE}"
            )));
        }
    };
    let from = match req.str("page_token")?.filter(|t| !t.is_empty()) {
        None => PointFrom::step(0),
        Some(t) => parse_token(&t).ok_or_else(|| MlflowError::invalid(format!("Invalid page token '{t}'")))?,
    };
    st.caught_up().await?;
    let run = check_run(&st, &ctx, &raw).await?;
    let series = SeriesKey {
        project: ctx.key.clone(),
        run,
        path: key.clone(),
    };
    // One point more than the page tells whether another page follows, and where it starts.
    let mut points = st.ingest.views.read_points(&series, from, MAX_STEP, limit + 1).await?;
    let next = points.get(limit).map(|p| token(p.step, p.time_ms));
    points.truncate(limit);
    let page = Page {
        metrics: points.iter().map(|p| MetricOut::of(&key, p, None)).collect(),
        next_page_token: next,
    };
    Ok(Json(page).into_response())
}

/// A history page token: the step and time of the page's first point (a step logged again holds
/// several points, so a page may start inside one).
fn token(step: i64, time_ms: i64) -> String {
    format!("{step}:{time_ms}")
}

/// The start a page token names; a bare step (as earlier releases wrote) starts at the step.
fn parse_token(t: &str) -> Option<PointFrom> {
    let (step, time_ms) = match t.split_once(':') {
        Some((s, t)) => (s.parse::<i64>().ok()?, t.parse::<i64>().ok()?),
        None => (t.parse::<i64>().ok()?, i64::MIN),
    };
    (0..=MAX_STEP).contains(&step).then_some(PointFrom { step, time_ms })
}

/// At most `n` points of `points` (in step order), evenly spread over their steps, the first
/// and last always among them.
fn sample(points: Vec<PointRow>, n: usize) -> Vec<PointRow> {
    if points.len() <= n || n == 0 {
        return points;
    }
    if n == 1 {
        return vec![points[points.len() - 1]];
    }
    let last = points.len() - 1;
    let mut picked: Vec<usize> = (0..n).map(|i| i * last / (n - 1)).collect();
    picked.dedup();
    picked.into_iter().map(|i| points[i]).collect()
}

pub(crate) async fn get_history_bulk_interval(
    State(st): State<MlflowState>,
    MlflowAuth(p): MlflowAuth,
    req: Req,
) -> Result<Response, MlflowError> {
    let ctx = Ctx::of(&st, p, Role::Viewer)?;
    let runs: Vec<String> = req
        .list("run_ids")
        .iter()
        .map(|v| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()))
        .collect();
    if runs.is_empty() {
        return Err(MlflowError::missing("run_ids"));
    }
    if runs.len() > MAX_BULK_RUNS {
        return Err(MlflowError::invalid(format!(
            "GetMetricHistoryBulkInterval request must specify at most {MAX_BULK_RUNS} run_ids. Received {} run_ids.",
            runs.len()
        )));
    }
    let key = req.required_str("metric_key")?;
    let start = req.i64("start_step")?.unwrap_or(0).max(0);
    let end = req.i64("end_step")?.unwrap_or(MAX_STEP).min(MAX_STEP);
    if start > end {
        return Err(MlflowError::invalid(format!(
            "end_step ({end}) must be greater than or equal to start_step ({start})"
        )));
    }
    let max = match req.i64("max_results")? {
        None => 320,
        Some(n) if (1..=MAX_BULK_RESULTS as i64).contains(&n) => n as usize,
        Some(n) => {
            return Err(MlflowError::invalid(format!(
                "Invalid value {n} for parameter 'max_results' supplied: it must be from 1 to {MAX_BULK_RESULTS}"
            )));
        }
    };
    st.caught_up().await?;
    let mut sampled = Vec::new();
    for raw in &runs {
        let run = check_run(&st, &ctx, raw).await?;
        let series = SeriesKey {
            project: ctx.key.clone(),
            run: run.clone(),
            path: key.clone(),
        };
        let points = st
            .ingest
            .views
            .read_points(&series, PointFrom::step(start), end, MAX_PAGE)
            .await?;
        sampled.push((run, sample(points, max)));
    }
    let metrics = sampled
        .iter()
        .flat_map(|(run, points)| points.iter().map(|p| MetricOut::of(&key, p, Some(run))))
        .collect();
    Ok(Json(Page {
        metrics,
        next_page_token: None,
    })
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_name_a_step_and_a_time_in_it() {
        assert_eq!(
            parse_token(&token(7, 1_700_000_000_123)),
            Some(PointFrom {
                step: 7,
                time_ms: 1_700_000_000_123
            })
        );
        assert_eq!(parse_token("12"), Some(PointFrom::step(12)));
        assert_eq!(parse_token(&token(0, -5)), Some(PointFrom { step: 0, time_ms: -5 }));
        for bad in ["", "x", "-1", "3:", ":4", "3:x", "1:2:3", "9007199254740992"] {
            assert_eq!(parse_token(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_sample_keeps_the_ends_and_spreads_evenly() {
        let points: Vec<PointRow> = (0..100)
            .map(|s| PointRow {
                step: s,
                time_ms: 0,
                value: s as f64,
            })
            .collect();
        let s = sample(points.clone(), 5);
        assert_eq!(s.iter().map(|p| p.step).collect::<Vec<_>>(), [0, 24, 49, 74, 99]);
        assert_eq!(sample(points.clone(), 200).len(), 100);
        assert_eq!(sample(points, 1)[0].step, 99);
    }
}
