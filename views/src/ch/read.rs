//! Reads from the ClickHouse views. Every read takes the latest version of each key
//! (`argMax(column, ver)` grouped by the key), so answers are right whether or not the server
//! has merged the parts yet.

use std::fmt::Write as _;

use clickhouse::Row;
use serde::Deserialize;

use runstream_schema::{ArtifactKind, Direction, EventId, Value};

use super::write::{AGG_LATEST, AttrRec, RUN_LATEST, RunRec};
use super::{ClickHouseViews, storage};
use crate::rollup::{self, Agg, LEVELS};
use crate::search::Catalog;
use crate::*;

pub(super) fn run_row(r: RunRec) -> RunRow {
    RunRow {
        run: r.run,
        name: r.name,
        experiment: r.experiment,
        parent_run: r.parent_run,
        description: r.description,
        owner: r.owner,
        state: r.state,
        state_message: r.state_message,
        created_ms: r.created_ms,
        updated_ms: r.updated_ms,
        finished_ms: r.finished_ms,
        heartbeat_ms: r.heartbeat_ms,
        deleted: r.deleted != 0,
    }
}

pub(super) fn value_of(a: &AttrRec) -> Result<Value, ViewError> {
    Ok(match a.vtype.as_str() {
        "int" => Value::Int(a.i),
        "float" => Value::Float(a.f),
        "bool" => Value::Bool(a.i != 0),
        "string" => Value::String(a.s.clone()),
        "datetime" => Value::Datetime(a.i),
        "string_set" => Value::StringSet(
            serde_json::from_str(&a.s).map_err(|e| ViewError::Corrupt(format!("string set {:?}: {e}", a.s)))?,
        ),
        other => return Err(ViewError::Corrupt(format!("unknown attribute type {other:?}"))),
    })
}

const ATTR_LATEST: &str = "project, run, path, argMax(vtype, ver), argMax(i, ver), argMax(f, ver), argMax(s, ver),
    argMax(deleted, ver) AS gone, max(ver)";

#[derive(Row, Deserialize)]
struct PathType {
    path: String,
    vtype: String,
}

pub(super) async fn catalog(v: &ClickHouseViews, project: &str) -> Result<Catalog, ViewError> {
    let rows: Vec<PathType> = v
        .sql("SELECT DISTINCT path, vtype FROM {t}attribute_keys WHERE project = ? ORDER BY path, vtype")
        .bind(project)
        .fetch_all()
        .await
        .map_err(storage)?;
    let mut attributes: Vec<(String, Vec<String>)> = Vec::new();
    for r in rows {
        match attributes.last_mut() {
            Some((p, types)) if *p == r.path => types.push(r.vtype),
            _ => attributes.push((r.path, vec![r.vtype])),
        }
    }
    let metrics: Vec<String> = v
        .sql("SELECT DISTINCT path FROM {t}series_keys WHERE project = ? AND kind = 'float' ORDER BY path")
        .bind(project)
        .fetch_all()
        .await
        .map_err(storage)?;
    Ok(Catalog { attributes, metrics })
}

#[derive(Row, Deserialize)]
struct LineageRec {
    run: String,
    direction: String,
    kind: String,
    name: String,
    version: String,
    digest: String,
    uri: String,
    time_ms: i64,
}

const LINEAGE_LATEST: &str =
    "run, direction, kind, name, version, argMax(digest, ver), argMax(uri, ver), argMax(time_ms, ver)";

pub(super) async fn lineage(
    v: &ClickHouseViews,
    project: &str,
    of: &LineageOf,
    limit: usize,
) -> Result<Vec<LineageRow>, ViewError> {
    let limit = limit.min(i64::MAX as usize) as u64;
    let rows: Vec<LineageRec> = match of {
        LineageOf::Run(run) => v
            .sql(&format!(
                "SELECT {LINEAGE_LATEST} FROM {{t}}lineage WHERE project = ? AND run = ?
                 GROUP BY run, direction, kind, name, version ORDER BY direction, kind, name, version LIMIT ?"
            ))
            .bind(project)
            .bind(run)
            .bind(limit),
        LineageOf::Artifact { kind, name, version } => {
            // The artifact index narrows to the runs naming it; their links are read by key.
            let version_cond = if version.is_some() { "AND version = ?" } else { "" };
            let mut q = v
                .sql(&format!(
                    "SELECT {LINEAGE_LATEST} FROM {{t}}lineage WHERE project = ? AND kind = ? AND name = ? {version_cond}
                     AND run IN (SELECT DISTINCT run FROM {{t}}lineage_by_artifact
                                 WHERE project = ? AND kind = ? AND name = ? {version_cond})
                     GROUP BY run, direction, kind, name, version ORDER BY run, direction, version LIMIT ?"
                ))
                .bind(project)
                .bind(kind.as_str())
                .bind(name);
            if let Some(ver) = version {
                q = q.bind(ver);
            }
            q = q.bind(project).bind(kind.as_str()).bind(name);
            if let Some(ver) = version {
                q = q.bind(ver);
            }
            q.bind(limit)
        }
    }
    .fetch_all()
    .await
    .map_err(storage)?;
    Ok(rows
        .into_iter()
        .map(|r| LineageRow {
            project: project.to_string(),
            run: r.run,
            direction: Direction::parse(&r.direction).unwrap_or(Direction::Input),
            kind: ArtifactKind::parse(&r.kind).unwrap_or(ArtifactKind::Other),
            name: r.name,
            version: r.version,
            digest: r.digest,
            uri: r.uri,
            time_ms: r.time_ms,
        })
        .collect())
}

#[derive(Row, Deserialize)]
struct SeriesLatest {
    path: String,
    kind: String,
    count: u64,
    n_values: u64,
    min: f64,
    max: f64,
    sum: f64,
    first_step: i64,
    last_step: i64,
    last_value: f64,
    last_time_ms: i64,
}

#[derive(Row, Deserialize)]
struct FileRec {
    path: String,
    step: i64,
    blob_key: String,
    size: u64,
    sha256: String,
    media_type: String,
    time_ms: i64,
}

const FILE_LATEST: &str = "path, step, argMax(blob_key, ver), argMax(size, ver), argMax(sha256, ver),
    argMax(media_type, ver), argMax(time_ms, ver)";

fn file_row(r: FileRec, project: &str, run: &str) -> FileRow {
    FileRow {
        project: project.to_string(),
        run: run.to_string(),
        path: r.path,
        step: (r.step >= 0).then_some(r.step),
        blob_key: r.blob_key,
        size: r.size,
        sha256: r.sha256,
        media_type: r.media_type,
        time_ms: r.time_ms,
    }
}

pub(super) async fn get_run(v: &ClickHouseViews, project: &str, run: &str) -> Result<Option<RunDetail>, ViewError> {
    let Some(row) = v
        .sql(&format!(
            "SELECT {RUN_LATEST} FROM {{t}}runs WHERE project = ? AND run = ? GROUP BY project, run"
        ))
        .bind(project)
        .bind(run)
        .fetch_optional::<RunRec>()
        .await
        .map_err(storage)?
    else {
        return Ok(None);
    };
    let attrs: Vec<AttrRec> = v
        .sql(&format!(
            "SELECT {ATTR_LATEST} FROM {{t}}attributes WHERE project = ? AND run = ?
             GROUP BY project, run, path HAVING gone = 0 ORDER BY path"
        ))
        .bind(project)
        .bind(run)
        .fetch_all()
        .await
        .map_err(storage)?;
    let mut attributes = Vec::with_capacity(attrs.len());
    for a in &attrs {
        attributes.push((a.path.clone(), value_of(a)?));
    }
    let tags: Vec<String> = v
        .sql(
            "SELECT tag FROM {t}tags WHERE project = ? AND run = ?
             GROUP BY tag HAVING argMax(present, ver) = 1 ORDER BY tag",
        )
        .bind(project)
        .bind(run)
        .fetch_all()
        .await
        .map_err(storage)?;
    let series: Vec<SeriesLatest> = v
        .sql(&format!(
            "SELECT path, kind, {AGG_LATEST} FROM {{t}}series WHERE project = ? AND run = ?
             GROUP BY path, kind ORDER BY path, kind"
        ))
        .bind(project)
        .bind(run)
        .fetch_all()
        .await
        .map_err(storage)?;
    let files: Vec<FileRec> = v
        .sql(&format!(
            "SELECT {FILE_LATEST} FROM {{t}}files WHERE project = ? AND run = ? GROUP BY path, step ORDER BY path, step"
        ))
        .bind(project)
        .bind(run)
        .fetch_all()
        .await
        .map_err(storage)?;
    let lineage = lineage(v, project, &LineageOf::Run(run.to_string()), usize::MAX).await?;
    Ok(Some(RunDetail {
        run: run_row(row),
        attributes,
        tags,
        series: series
            .into_iter()
            .map(|s| {
                let float = s.kind == "float";
                let some = float && s.n_values > 0;
                SeriesSummary {
                    path: s.path,
                    count: s.count,
                    first_step: (s.count > 0).then_some(s.first_step),
                    last_step: (s.count > 0).then_some(s.last_step),
                    last_value: (float && s.count > 0).then_some(s.last_value),
                    min: some.then_some(s.min),
                    max: some.then_some(s.max),
                    mean: some.then(|| s.sum / s.n_values as f64),
                    last_time_ms: (s.count > 0).then_some(s.last_time_ms),
                    kind: s.kind,
                }
            })
            .collect(),
        files: files.into_iter().map(|f| file_row(f, project, run)).collect(),
        lineage,
    }))
}

pub(super) async fn file(
    v: &ClickHouseViews,
    project: &str,
    run: &str,
    path: &str,
    step: Option<i64>,
) -> Result<Option<FileRow>, ViewError> {
    let row = v
        .sql(&format!(
            "SELECT {FILE_LATEST} FROM {{t}}files WHERE project = ? AND run = ? AND path = ? AND step = ?
             GROUP BY path, step"
        ))
        .bind(project)
        .bind(run)
        .bind(path)
        .bind(step.unwrap_or(-1))
        .fetch_optional::<FileRec>()
        .await
        .map_err(storage)?;
    Ok(row.map(|r| file_row(r, project, run)))
}

pub(super) async fn points(
    v: &ClickHouseViews,
    key: &SeriesKey,
    from: PointFrom,
    to: i64,
    limit: usize,
) -> Result<Vec<PointRow>, ViewError> {
    if from.step > to || limit == 0 {
        return Ok(Vec::new());
    }
    latest_points(from, limit, |from, window| async move {
        // A read from the start of a step (most are) skips the condition on time, which costs
        // the server about a millisecond over a long series.
        let inside_step = from.time_ms > i64::MIN;
        let within_step = if inside_step {
            " AND (step > ? OR time_ms >= ?)"
        } else {
            ""
        };
        let mut q = v
            .sql(&format!(
                "SELECT step, time_ms, value, ver FROM {{t}}float_points
                 WHERE project = ? AND run = ? AND path = ? AND step BETWEEN ? AND ?{within_step}
                 ORDER BY step, time_ms LIMIT ?"
            ))
            .bind(&key.project)
            .bind(&key.run)
            .bind(&key.path)
            .bind(from.step)
            .bind(to);
        if inside_step {
            q = q.bind(from.step).bind(from.time_ms);
        }
        q.bind(window.min(i64::MAX as usize) as u64)
            .fetch_all()
            .await
            .map_err(storage)
    })
    .await
}

/// The first `limit` points from `from`, each at its latest version, from `fetch(from, window)`,
/// which answers at most `window` stored rows from `from` on in (step, time) order, the versions
/// of a point together in any order.
///
/// Every stored version is read and the latest picked here: a point has more than one only
/// until merges (a replay, or a point written again), and grouping in the server costs it more
/// than the rows do. A window that comes back full may have cut the last point's versions short,
/// so that point is left to the next window.
async fn latest_points<F, Fut>(from: PointFrom, limit: usize, mut fetch: F) -> Result<Vec<PointRow>, ViewError>
where
    F: FnMut(PointFrom, usize) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<VersionedPoint>, ViewError>>,
{
    let mut out: Vec<PointRow> = Vec::with_capacity(limit.min(1 << 16));
    let mut from = from;
    let mut slack: usize = 64;
    while out.len() < limit {
        let window = (limit - out.len()).saturating_add(slack);
        let rows = fetch(from, window).await?;
        let full = rows.len() >= window;
        let mut read = latest_points_of(rows);
        if full {
            let cut = read.pop().expect("a full window holds a point");
            if read.is_empty() {
                // One point's versions fill the window: read it again with room for them all.
                slack = slack.saturating_mul(4);
                continue;
            }
            from = PointFrom {
                step: cut.step,
                time_ms: cut.time_ms,
            };
        }
        read.truncate(limit - out.len());
        out.extend(read);
        if !full {
            break;
        }
    }
    Ok(out)
}

/// The latest version of each point of `rows`, in (step, time) order. The rows come in any
/// order; a history read's come sorted already, which the sort passes over in one scan.
fn latest_points_of(mut rows: Vec<VersionedPoint>) -> Vec<PointRow> {
    rows.sort_unstable_by_key(|p| (p.step, p.time_ms));
    let mut out: Vec<(PointRow, u64)> = Vec::with_capacity(rows.len());
    for p in rows {
        match out.last_mut() {
            Some((last, ver)) if last.step == p.step && last.time_ms == p.time_ms => {
                if p.ver > *ver {
                    (last.value, *ver) = (p.value, p.ver);
                }
            }
            _ => out.push((
                PointRow {
                    step: p.step,
                    time_ms: p.time_ms,
                    value: p.value,
                },
                p.ver,
            )),
        }
    }
    out.into_iter().map(|(p, _)| p).collect()
}

#[derive(Row, Deserialize)]
struct LineRec {
    step: i64,
    time_ms: i64,
    line: String,
}

pub(super) async fn lines(
    v: &ClickHouseViews,
    key: &SeriesKey,
    from: i64,
    to: i64,
    limit: usize,
) -> Result<Vec<LineRow>, ViewError> {
    if from > to || limit == 0 {
        return Ok(Vec::new());
    }
    let rows: Vec<LineRec> = v
        .sql(
            "SELECT step, argMax(time_ms, ver), argMax(line, ver) FROM {t}lines
             WHERE project = ? AND run = ? AND path = ? AND step BETWEEN ? AND ?
             GROUP BY step ORDER BY step LIMIT ?",
        )
        .bind(&key.project)
        .bind(&key.run)
        .bind(&key.path)
        .bind(from)
        .bind(to)
        .bind(limit.min(i64::MAX as usize) as u64)
        .fetch_all()
        .await
        .map_err(storage)?;
    Ok(rows
        .into_iter()
        .map(|l| LineRow {
            step: l.step,
            time_ms: l.time_ms,
            line: l.line,
        })
        .collect())
}

#[derive(Row, Deserialize)]
struct LevelAgg {
    level: u8,
    bucket: i64,
    count: u64,
    n_values: u64,
    min: f64,
    max: f64,
    sum: f64,
    first_step: i64,
    last_step: i64,
    last_value: f64,
    last_time_ms: i64,
    ver: u64,
}

/// Of rows keyed by `key`, each key's row of the largest version (rows of one version are
/// copies: a replay writes the same row under the same version).
fn latest<K: Ord, T>(rows: impl IntoIterator<Item = (K, u64, T)>) -> std::collections::BTreeMap<K, T> {
    let mut out: std::collections::BTreeMap<K, (u64, T)> = std::collections::BTreeMap::new();
    for (key, ver, row) in rows {
        if out.get(&key).is_none_or(|(kept, _)| ver > *kept) {
            out.insert(key, (ver, row));
        }
    }
    out.into_iter().map(|(k, (_, row))| (k, row)).collect()
}

/// Series spans remembered at most; past it the memory starts afresh.
const SPANS: usize = 10_000;

/// The top rollup level, whose rows cover a series whole: their span is the series' span.
const TOP: u8 = (LEVELS.len() - 1) as u8;

/// Buckets over `from..=to`, read as [`rollup::cover`] plans it: the rollup rows of every
/// level in one query, the raw points at the edges in another.
///
/// The plan depends on the series' span (the request is clamped to it, and the clamped width
/// picks the level), and each query costs the server a few milliseconds however small. So the
/// pieces are planned with the span this process saw last, and the rollup query also reads the
/// top level's rows, which give the current span: when it has not moved (a finished run, a run
/// between flushes) the reads are the answer, else the pieces are read again for the new span.
pub(super) async fn buckets(
    v: &ClickHouseViews,
    key: &SeriesKey,
    from: i64,
    to: i64,
    n: usize,
) -> Result<Vec<Bucket>, ViewError> {
    let id = (key.project.clone(), key.run.clone(), key.path.clone());
    let seen = v.spans.lock().unwrap_or_else(|e| e.into_inner()).get(&id).copied();
    let span = match seen {
        Some(seen) => {
            let (answer, span) = planned_read(v, key, from, to, n, seen).await?;
            if span == Some(seen) {
                return Ok(answer);
            }
            span
        }
        None => span_of(&rollup_rows(v, key, &[]).await?),
    };
    {
        let mut spans = v.spans.lock().unwrap_or_else(|e| e.into_inner());
        match span {
            Some(s) => {
                if spans.len() >= SPANS {
                    spans.clear();
                }
                spans.insert(id, s);
            }
            None => {
                spans.remove(&id);
            }
        }
    }
    match span {
        Some(s) => Ok(planned_read(v, key, from, to, n, s).await?.0),
        None => Ok(Vec::new()),
    }
}

/// The first and last step of the series whose top-level rollup rows are among `rows`, if it
/// has points.
fn span_of(rows: &std::collections::BTreeMap<(u8, i64), Agg>) -> Option<(i64, i64)> {
    let top = rows.range((TOP, i64::MIN)..=(TOP, i64::MAX)).map(|(_, a)| a);
    top.filter(|a| a.count > 0).fold(None, |span, a| match span {
        None => Some((a.first_step, a.last_step)),
        Some((first, last)) => Some((a.first_step.min(first), a.last_step.max(last))),
    })
}

#[derive(Row, Deserialize)]
struct VersionedPoint {
    step: i64,
    time_ms: i64,
    value: f64,
    ver: u64,
}

/// Every point in `from..=to`, in (step, time) order, for a range the plan keeps short (an edge of a
/// bucket read, finer than the finest rollup).
async fn edge_points(v: &ClickHouseViews, key: &SeriesKey, from: i64, to: i64) -> Result<Vec<PointRow>, ViewError> {
    // Every stored version of each point (a few until merges), the latest picked here: a
    // query that groups in the server costs it more than the rows do.
    let rows: Vec<VersionedPoint> = v
        .sql(
            "SELECT step, time_ms, value, ver FROM {t}float_points
             WHERE project = ? AND run = ? AND path = ? AND step BETWEEN ? AND ?",
        )
        .bind(&key.project)
        .bind(&key.run)
        .bind(&key.path)
        .bind(from)
        .bind(to)
        .fetch_all()
        .await
        .map_err(storage)?;
    Ok(latest_points_of(rows))
}

/// The latest rollup rows of `levels` (level, first bucket, last bucket) and of the top level.
/// Bounded by the plan: a few rows per bucket asked for, and a handful at the top.
async fn rollup_rows(
    v: &ClickHouseViews,
    key: &SeriesKey,
    levels: &[(u8, i64, i64)],
) -> Result<std::collections::BTreeMap<(u8, i64), Agg>, ViewError> {
    let mut conds = vec!["(level = ? AND bucket BETWEEN ? AND ?)"; levels.len()];
    conds.push("level = ?");
    let mut q = v
        .sql(&format!(
            "SELECT level, bucket, count, n_values, min, max, sum, first_step, last_step, last_value,
             last_time_ms, ver FROM {{t}}rollups WHERE project = ? AND run = ? AND path = ? AND ({})",
            conds.join(" OR ")
        ))
        .bind(&key.project)
        .bind(&key.run)
        .bind(&key.path);
    for (level, first, last) in levels {
        q = q.bind(level).bind(first).bind(last);
    }
    let rows = q.bind(TOP).fetch_all::<LevelAgg>().await.map_err(storage)?;
    Ok(latest(rows.into_iter().map(|r| {
        let agg = Agg {
            count: r.count,
            n_values: r.n_values,
            min: r.min,
            max: r.max,
            sum: r.sum,
            first_step: r.first_step,
            last_step: r.last_step,
            last_value: r.last_value,
            last_time_ms: r.last_time_ms,
        };
        ((r.level, r.bucket), r.ver, agg)
    })))
}

/// The buckets over `from..=to` planned for a series spanning `first..=last`, and the span the
/// series has now.
async fn planned_read(
    v: &ClickHouseViews,
    key: &SeriesKey,
    from: i64,
    to: i64,
    n: usize,
    (first, last): (i64, i64),
) -> Result<(Vec<Bucket>, Option<(i64, i64)>), ViewError> {
    let (from, to) = (from.max(first), to.min(last));
    let plan = if from <= to {
        rollup::cover(rollup::choose_level(from, to, n), from, to)
    } else {
        Vec::new()
    };
    let mut levels = Vec::new();
    for piece in &plan {
        if let rollup::Piece::Level { level, first, last } = *piece {
            levels.push((level as u8, first, last));
        }
    }
    // The rollup rows and the raw edges are independent reads: in flight together.
    let rollups = rollup_rows(v, key, &levels);
    let edges = futures::future::try_join_all(plan.iter().filter_map(|piece| match *piece {
        rollup::Piece::Raw { from, to } => Some(edge_points(v, key, from, to)),
        rollup::Piece::Level { .. } => None,
    }));
    let (stored, edges) = futures::try_join!(rollups, edges)?;
    let mut edges = edges.into_iter();
    let mut parts = Vec::new();
    for piece in plan {
        match piece {
            rollup::Piece::Level { level, first, last } => {
                parts.extend(
                    stored
                        .range((level as u8, first)..=(level as u8, last))
                        .map(|(_, a)| *a),
                );
            }
            rollup::Piece::Raw { .. } => {
                for p in edges.next().unwrap_or_default() {
                    let mut a = Agg::EMPTY;
                    a.add(p.step, p.time_ms, p.value);
                    parts.push(a);
                }
            }
        }
    }
    let span = span_of(&stored);
    if from > to {
        return Ok((Vec::new(), span));
    }
    Ok((rollup::regroup(from, to, n, parts), span))
}

#[derive(Row, Deserialize)]
struct EventRec {
    id_hi: u64,
    id_lo: u64,
    partition: u32,
    offset: u64,
    seq: u32,
    kind: String,
}

pub(super) async fn events(
    v: &ClickHouseViews,
    project: &str,
    run: &str,
    after: Option<(u32, u64, u32)>,
    limit: usize,
) -> Result<Vec<StoredEvent>, ViewError> {
    // Positions start at zero, so "after nothing" is "at or after the first".
    let (cmp, (p, o, s)) = match after {
        Some(a) => (">", a),
        None => (">=", (0, 0, 0)),
    };
    let rows: Vec<EventRec> = v
        .sql(&format!(
            "SELECT id_hi, id_lo, partition, offset, seq, any(kind) FROM {{t}}events
             WHERE project = ? AND run = ? AND (partition, offset, seq) {cmp} (?, ?, ?)
             GROUP BY id_hi, id_lo, partition, offset, seq ORDER BY partition, offset, seq LIMIT ?"
        ))
        .bind(project)
        .bind(run)
        .bind(p)
        .bind(o)
        .bind(s)
        .bind(limit.min(i64::MAX as usize) as u64)
        .fetch_all()
        .await
        .map_err(storage)?;
    Ok(rows
        .into_iter()
        .map(|r| StoredEvent {
            project: project.to_string(),
            run: run.to_string(),
            id: EventId((u128::from(r.id_hi) << 64) | u128::from(r.id_lo)),
            partition: r.partition,
            offset: r.offset,
            seq: r.seq,
            kind: r.kind,
        })
        .collect())
}

/// Every view as sorted text lines, latest version of each key only; points in the same form
/// as the SQLite views' dump.
pub(super) async fn dump(v: &ClickHouseViews) -> Result<String, ViewError> {
    let mut out = String::new();
    let tables: &[(&str, &str)] = &[
        (
            "checkpoints",
            "SELECT toString(partition), toString(max(next_offset)) FROM {t}checkpoints GROUP BY partition ORDER BY partition",
        ),
        (
            "runs",
            "SELECT project, run, toString(argMax(tuple(name, experiment, parent_run, description, owner, state,
                state_message, created_ms, updated_ms, finished_ms, heartbeat_ms, deleted), ver))
             FROM {t}runs GROUP BY project, run ORDER BY project, run",
        ),
        (
            "attributes",
            "SELECT project, run, path, toString(argMax(tuple(vtype, i, f, s), ver)) FROM {t}attributes
             GROUP BY project, run, path HAVING argMax(deleted, ver) = 0 ORDER BY project, run, path",
        ),
        (
            "tags",
            "SELECT project, run, tag FROM {t}tags GROUP BY project, run, tag HAVING argMax(present, ver) = 1
             ORDER BY project, run, tag",
        ),
        (
            "series",
            "SELECT project, run, path, kind, toString(argMax(tuple(count, n_values, min, max, sum, first_step,
                last_step, last_value, last_time_ms), ver))
             FROM {t}series GROUP BY project, run, path, kind ORDER BY project, run, path, kind",
        ),
        (
            "lines",
            "SELECT project, run, path, toString(step), toString(argMax(tuple(time_ms, line), ver)) FROM {t}lines
             GROUP BY project, run, path, step ORDER BY project, run, path, step",
        ),
        (
            "rollups",
            "SELECT project, run, path, toString(level), toString(bucket), toString(argMax(tuple(count, n_values, min,
                max, sum, first_step, last_step, last_value, last_time_ms), ver))
             FROM {t}rollups GROUP BY project, run, path, level, bucket ORDER BY project, run, path, level, bucket",
        ),
        (
            "files",
            "SELECT project, run, path, toString(step), toString(argMax(tuple(blob_key, size, sha256, media_type,
                time_ms), ver))
             FROM {t}files GROUP BY project, run, path, step ORDER BY project, run, path, step",
        ),
        (
            "lineage",
            "SELECT project, run, direction, kind, name, version, toString(argMax(tuple(digest, uri, time_ms), ver))
             FROM {t}lineage GROUP BY project, run, direction, kind, name, version
             ORDER BY project, run, direction, kind, name, version",
        ),
        (
            "events",
            "SELECT hex(id_hi), hex(id_lo), project, run, toString(partition), toString(offset), toString(seq), any(kind)
             FROM {t}events GROUP BY id_hi, id_lo, project, run, partition, offset, seq ORDER BY partition, offset, seq",
        ),
    ];
    for (name, sql) in tables {
        let mut cursor = v.sql(sql).fetch_bytes("TabSeparated").map_err(storage)?;
        let bytes = cursor.collect().await.map_err(storage)?;
        for line in String::from_utf8_lossy(&bytes).lines() {
            writeln!(out, "{name}\t{line}").expect("write to string");
        }
    }
    let mut cursor = v
        .sql(
            "SELECT project, run, path, step, time_ms, argMax(value, ver) FROM {t}float_points
             GROUP BY project, run, path, step, time_ms ORDER BY project, run, path, step, time_ms",
        )
        .fetch::<DumpPoint>()
        .map_err(storage)?;
    while let Some(p) = cursor.next().await.map_err(storage)? {
        writeln!(
            out,
            "points\t{}\t{}\t{}\t{}\t{}\t{:?}\t{:016x}",
            p.project,
            p.run,
            p.path,
            p.step,
            p.time_ms,
            p.value,
            p.value.to_bits()
        )
        .expect("write to string");
    }
    Ok(out)
}

#[derive(Row, Deserialize)]
struct DumpPoint {
    project: String,
    run: String,
    path: String,
    step: i64,
    time_ms: i64,
    value: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(step: i64, time_ms: i64, value: f64, ver: u64) -> VersionedPoint {
        VersionedPoint {
            step,
            time_ms,
            value,
            ver,
        }
    }

    #[test]
    fn the_latest_version_of_each_point_in_order() {
        // Versions of a point come together but in any order; copies share a version.
        let rows = vec![
            p(0, 5, 1.0, 3),
            p(0, 5, 2.0, 7),
            p(0, 5, 1.5, 4),
            p(0, 9, 3.0, 2),
            p(1, 0, 4.0, 8),
            p(1, 0, 4.0, 8),
            p(2, 1, 6.0, 9),
            p(2, 1, 5.0, 1),
        ];
        let got: Vec<(i64, i64, f64)> = latest_points_of(rows)
            .into_iter()
            .map(|r| (r.step, r.time_ms, r.value))
            .collect();
        assert_eq!(got, vec![(0, 5, 2.0), (0, 9, 3.0), (1, 0, 4.0), (2, 1, 6.0)]);
        assert!(latest_points_of(Vec::new()).is_empty());
    }

    /// Stored rows in (step, time) order with a point's versions oldest first (`latest`) or
    /// newest first, answered a window at a time like the server.
    fn stored(newest_first: bool) -> Vec<VersionedPoint> {
        let mut rows = Vec::new();
        for step in 0..8i64 {
            // Step 3 has 300 versions, more than any first window; others have one or two.
            let versions = match step {
                3 => 300,
                5 => 2,
                _ => 1,
            };
            let mut of_step: Vec<VersionedPoint> = (1..=versions)
                .map(|v| p(step, 10, (step * 1000 + v) as f64, v as u64))
                .collect();
            if newest_first {
                of_step.reverse();
            }
            rows.extend(of_step);
        }
        rows
    }

    async fn read(rows: &[VersionedPoint], from: PointFrom, limit: usize) -> (Vec<(i64, f64)>, usize) {
        let mut fetches = 0;
        let got = latest_points(from, limit, |from, window| {
            fetches += 1;
            let answer: Vec<VersionedPoint> = rows
                .iter()
                .filter(|r| (r.step, r.time_ms) >= (from.step, from.time_ms))
                .take(window)
                .map(|r| p(r.step, r.time_ms, r.value, r.ver))
                .collect();
            async move { Ok(answer) }
        })
        .await
        .unwrap();
        (got.into_iter().map(|r| (r.step, r.value)).collect(), fetches)
    }

    #[tokio::test]
    async fn windows_never_cut_a_points_versions() {
        let latest = |step: i64| {
            let versions = match step {
                3 => 300,
                5 => 2,
                _ => 1,
            };
            (step, (step * 1000 + versions) as f64)
        };
        for newest_first in [false, true] {
            let rows = stored(newest_first);
            for limit in [1, 2, 3, 4, 5, 8, 100] {
                for start in 0..8 {
                    let (got, _) = read(&rows, PointFrom::step(start), limit).await;
                    let want: Vec<(i64, f64)> = (start..8).take(limit).map(latest).collect();
                    assert_eq!(got, want, "from {start}, limit {limit}, newest first {newest_first}");
                }
            }
        }
        // Few versions: one read.
        let (_, fetches) = read(&stored(false), PointFrom::step(4), 4).await;
        assert_eq!(fetches, 1);
    }
}
