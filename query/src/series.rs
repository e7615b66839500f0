//! Series reads: raw points by step range (paged), or summarised into N buckets from rollups.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures::{StreamExt, TryStreamExt};
use runstream_http::{ApiError, Authenticated, UrlPath};
use runstream_schema::json::JsonF64;
use runstream_schema::{MAX_STEP, ProjectId, Role, project_key};
use runstream_views::{Bucket, PointFrom, PointRow, SeriesKey};
use serde::{Deserialize, Serialize};

use crate::QueryState;
use crate::consistency::wait_for;
use crate::runs::{in_range, query};

const DEFAULT_LIMIT: usize = 10_000;
const MAX_LIMIT: usize = 1_000_000;
const MAX_BUCKETS: usize = 100_000;
/// Reads of one many-series request in flight at once.
const SERIES_IN_FLIGHT: usize = 8;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SeriesQuery {
    path: String,
    from_step: Option<i64>,
    /// Float series: where in `from_step` to start, a step holding several points (a page's
    /// `next_from_time_ms`).
    from_time_ms: Option<i64>,
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
    project: ProjectId,
    key: SeriesKey,
    from: PointFrom,
    to: i64,
    limit: usize,
}

impl Resolved {
    /// Runs `read`, and asks whether the run exists only when it found nothing: a run's points,
    /// lines and rollups are written with its row, so a read that found any needs no second
    /// query (each costs a distributed store milliseconds). A run that does not exist is a 404.
    async fn read<T>(
        &self,
        st: &QueryState,
        read: impl std::future::Future<Output = Result<Vec<T>, runstream_views::ViewError>>,
    ) -> Result<Vec<T>, ApiError> {
        let found = read.await?;
        if found.is_empty() && !st.views.run_exists(&self.key.project, &self.key.run).await? {
            return Err(ApiError::not_found(format!(
                "run {:?} does not exist in project {:?}",
                self.key.run, self.project
            )));
        }
        Ok(found)
    }
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
    Ok(Resolved {
        project: project.clone(),
        key: SeriesKey {
            project: pk,
            run,
            path: q.path.clone(),
        },
        from: PointFrom {
            step: from,
            time_ms: q.from_time_ms.unwrap_or(i64::MIN),
        },
        to,
        limit,
    })
}

pub(crate) async fn float_series(
    State(st): State<QueryState>,
    Authenticated(p): Authenticated,
    UrlPath((project, run)): UrlPath<(String, String)>,
    q: Result<Query<SeriesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let project = st.registry.authorize(&p, &project, Role::Viewer)?;
    let q = query(q)?;
    let r = resolve(&st, &project, run, &p, &q).await?;
    let body = if let Some(n) = q.buckets {
        in_range("buckets", n, MAX_BUCKETS)?;
        SeriesBody::buckets(&r.read(&st, st.views.read_buckets(&r.key, r.from.step, r.to, n)).await?)
    } else {
        SeriesBody::points(
            r.read(&st, st.views.read_points(&r.key, r.from, r.to, r.limit + 1))
                .await?,
            r.limit,
        )
    };
    let hint = body.size_hint();
    json_response(
        &SeriesJson {
            run: None,
            path: r.key.path,
            body,
        },
        hint,
    )
}

/// One bucket as JSON: serialized straight from the struct, not through a `Value` tree (a chart
/// answer holds thousands of numbers).
#[derive(Serialize)]
struct BucketJson {
    from_step: i64,
    to_step: i64,
    count: u64,
    min: Option<JsonF64>,
    max: Option<JsonF64>,
    mean: Option<JsonF64>,
    last_step: i64,
    last_value: JsonF64,
    last_time_ms: i64,
}

impl From<&Bucket> for BucketJson {
    fn from(b: &Bucket) -> Self {
        BucketJson {
            from_step: b.from_step,
            to_step: b.to_step,
            count: b.count,
            min: b.min.map(JsonF64),
            max: b.max.map(JsonF64),
            mean: b.mean.map(JsonF64),
            last_step: b.last_step,
            last_value: JsonF64(b.last_value),
            last_time_ms: b.last_time_ms,
        }
    }
}

/// A series' answer: raw points as columns, or buckets.
#[derive(Serialize)]
#[serde(untagged)]
enum SeriesBody {
    Points {
        steps: Vec<i64>,
        times_ms: Vec<i64>,
        values: Vec<JsonF64>,
        /// Where the next page starts, when more points follow: its step, and its time when the
        /// page ends inside a step (a step may hold several points, one per time).
        next_from_step: Option<i64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        next_from_time_ms: Option<i64>,
    },
    Buckets {
        buckets: Vec<BucketJson>,
    },
}

impl SeriesBody {
    /// A page of at most `limit` points, from a read of up to `limit + 1`: the one more point,
    /// if there is one, is where the next page starts.
    fn points(mut points: Vec<PointRow>, limit: usize) -> Self {
        let next = points.get(limit).copied();
        points.truncate(limit);
        let inside_step = next.is_some_and(|n| points.last().is_some_and(|l| l.step == n.step));
        SeriesBody::Points {
            steps: points.iter().map(|p| p.step).collect(),
            times_ms: points.iter().map(|p| p.time_ms).collect(),
            values: points.iter().map(|p| JsonF64(p.value)).collect(),
            next_from_step: next.map(|n| n.step),
            next_from_time_ms: next.filter(|_| inside_step).map(|n| n.time_ms),
        }
    }

    fn buckets(buckets: &[Bucket]) -> Self {
        SeriesBody::Buckets {
            buckets: buckets.iter().map(BucketJson::from).collect(),
        }
    }
}

/// Serializes an answer into a buffer sized for it up front: a series answer runs to hundreds of
/// kilobytes, and growing the buffer from empty copies it over and over.
fn json_response<T: Serialize>(v: &T, size_hint: usize) -> Result<Response, ApiError> {
    let mut buf = Vec::with_capacity(size_hint);
    serde_json::to_writer(&mut buf, v).map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], buf).into_response())
}

impl SeriesBody {
    /// About how many bytes the answer takes as JSON.
    fn size_hint(&self) -> usize {
        match self {
            SeriesBody::Points { steps, .. } => 64 + steps.len() * 48,
            SeriesBody::Buckets { buckets } => 64 + buckets.len() * 200,
        }
    }
}

#[derive(Serialize)]
struct SeriesJson {
    #[serde(skip_serializing_if = "Option::is_none")]
    run: Option<String>,
    path: String,
    #[serde(flatten)]
    body: SeriesBody,
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
    /// Live mode: only points after this step (the last step the chart has) ...
    after_step: Option<i64>,
    /// ... or, with it, after the point at this time in it (the last point the chart has, for a
    /// series that logs a step again).
    after_time_ms: Option<i64>,
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

#[derive(Serialize)]
struct ManyJson {
    series: Vec<SeriesJson>,
}

/// Many float series in one request, raw or bucketed: the series of a chart comparing runs.
/// A series that does not exist comes back empty, so a chart of many runs needs no prior check.
pub(crate) async fn many_series(
    State(st): State<QueryState>,
    Authenticated(p): Authenticated,
    UrlPath(project): UrlPath<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let project = st.registry.authorize(&p, &project, Role::Viewer)?;
    let mut q: ManySeries = runstream_http::parse_json(&body)?;
    wait_for(st.views.as_ref(), q.min_position.as_deref(), q.wait_ms).await?;
    for run in &q.runs {
        for path in &q.paths {
            q.series.push(SeriesRef {
                run: run.clone(),
                path: path.clone(),
                after_step: None,
                after_time_ms: None,
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
    let mut reads = Vec::with_capacity(q.series.len());
    for (i, s) in q.series.iter().enumerate() {
        runstream_schema::check_path(&s.path).map_err(|e| ApiError::from(e.within(&format!("series[{i}].path"))))?;
        let from = match (s.after_step, s.after_time_ms) {
            (Some(a), _) if a < 0 => {
                return Err(ApiError::invalid(
                    format!("series[{i}].after_step"),
                    "must be 0 or more",
                ));
            }
            (None, Some(_)) => {
                return Err(ApiError::invalid(
                    format!("series[{i}].after_time_ms"),
                    "goes with after_step: the time of the last point read at that step",
                ));
            }
            (Some(a), Some(t)) => PointFrom {
                step: a,
                time_ms: t.saturating_add(1),
            }
            .max(PointFrom::step(from)),
            (Some(a), None) => PointFrom::step(from.max(a.saturating_add(1))),
            (None, None) => PointFrom::step(from),
        };
        let key = SeriesKey {
            project: pk.clone(),
            run: s.run.clone(),
            path: s.path.clone(),
        };
        reads.push((key, from));
    }
    // Several reads in flight (in order): a chart of many runs waits for the slowest few
    // rather than for the sum of all, which on ClickHouse is a round trip each.
    let (views, buckets) = (&st.views, q.buckets);
    let out: Vec<SeriesJson> = futures::stream::iter(reads)
        .map(|(key, from)| async move {
            let body = if from.step > to {
                SeriesBody::points(Vec::new(), limit)
            } else if let Some(n) = buckets {
                SeriesBody::buckets(&views.read_buckets(&key, from.step, to, n).await?)
            } else {
                SeriesBody::points(views.read_points(&key, from, to, limit + 1).await?, limit)
            };
            Ok::<_, ApiError>(SeriesJson {
                run: Some(key.run),
                path: key.path,
                body,
            })
        })
        .buffered(SERIES_IN_FLIGHT)
        .try_collect()
        .await?;
    let hint = out.iter().map(|s| s.body.size_hint()).sum();
    json_response(&ManyJson { series: out }, hint)
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
    if q.from_time_ms.is_some() {
        return Err(ApiError::invalid(
            "from_time_ms",
            "a string series holds one line per step: page through it with from_step",
        ));
    }
    let r = resolve(&st, &project, run, &p, &q).await?;
    let lines = r
        .read(&st, st.views.read_lines(&r.key, r.from.step, r.to, r.limit))
        .await?;
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
