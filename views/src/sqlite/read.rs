//! Reads for ingest and the query service, and the canonical dump.

use std::fmt::Write as _;

use runstream_schema::{ArtifactKind, Direction, EventId, Value};
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::write::{AGG_COLUMNS, exact, read_aggs, real};
use crate::block;
use crate::rollup::{self, Agg};
use crate::*;

const RUN_COLUMNS: &str = "run, name, experiment, parent_run, description, owner, state, state_message, \
                           created_ms, updated_ms, finished_ms, heartbeat_ms, deleted";
/// The same columns of the runs table aliased `r`.
pub(super) const RUN_COLUMNS_R: &str = "r.run, r.name, r.experiment, r.parent_run, r.description, r.owner, r.state, \
                                        r.state_message, r.created_ms, r.updated_ms, r.finished_ms, r.heartbeat_ms, r.deleted";

pub(super) fn run_row(r: &Row<'_>) -> rusqlite::Result<RunRow> {
    Ok(RunRow {
        run: r.get(0)?,
        name: r.get(1)?,
        experiment: r.get(2)?,
        parent_run: r.get(3)?,
        description: r.get(4)?,
        owner: r.get(5)?,
        state: r.get(6)?,
        state_message: r.get(7)?,
        created_ms: r.get(8)?,
        updated_ms: r.get(9)?,
        finished_ms: r.get(10)?,
        heartbeat_ms: r.get(11)?,
        deleted: r.get(12)?,
    })
}

pub(super) fn value_from_columns(
    t: &str,
    i: Option<i64>,
    f: Option<f64>,
    s: Option<String>,
) -> Result<Value, ViewError> {
    let missing = || ViewError::Corrupt(format!("attribute of type {t} lacks its value"));
    Ok(match t {
        "int" => Value::Int(i.ok_or_else(missing)?),
        "float" => Value::Float(exact(f, i)),
        "bool" => Value::Bool(i.ok_or_else(missing)? != 0),
        "string" => Value::String(s.ok_or_else(missing)?),
        "datetime" => Value::Datetime(i.ok_or_else(missing)?),
        "string_set" => {
            let s = s.ok_or_else(missing)?;
            Value::StringSet(
                serde_json::from_str(&s).map_err(|e| ViewError::Corrupt(format!("string set {s:?}: {e}")))?,
            )
        }
        other => return Err(ViewError::Corrupt(format!("unknown attribute type {other:?}"))),
    })
}

const LINEAGE_COLUMNS: &str = "run, direction, kind, name, version, digest, uri, time_ms";

fn lineage_row(r: &Row<'_>, project: &str) -> rusqlite::Result<LineageRow> {
    let (d, k): (String, String) = (r.get(1)?, r.get(2)?);
    Ok(LineageRow {
        project: project.to_string(),
        run: r.get(0)?,
        direction: Direction::parse(&d).unwrap_or(Direction::Input),
        kind: ArtifactKind::parse(&k).unwrap_or(ArtifactKind::Other),
        name: r.get(3)?,
        version: r.get(4)?,
        digest: r.get(5)?,
        uri: r.get(6)?,
        time_ms: r.get(7)?,
    })
}

pub(super) fn lineage(
    c: &Connection,
    project: &str,
    of: &LineageOf,
    limit: usize,
) -> Result<Vec<LineageRow>, ViewError> {
    let row = |r: &Row<'_>| lineage_row(r, project);
    // Limits are applied by reading no further (or written into the statement): a bound LIMIT
    // makes SQLite prepare the statement again at every execution.
    let rows = match of {
        LineageOf::Run(run) => c
            .prepare_cached(&format!(
                "SELECT {LINEAGE_COLUMNS} FROM lineage WHERE project = ?1 AND run = ?2
                 ORDER BY direction, kind, name, version"
            ))?
            .query_map(params![project, run], row)?
            .take(limit)
            .collect::<Result<Vec<_>, _>>()?,
        LineageOf::Artifact { kind, name, version } => c
            .prepare_cached(&format!(
                "SELECT {LINEAGE_COLUMNS} FROM lineage WHERE project = ?1 AND kind = ?2 AND name = ?3
                 AND (?4 IS NULL OR version = ?4) ORDER BY run, direction, version LIMIT {}",
                i64::try_from(limit).unwrap_or(i64::MAX)
            ))?
            .query_map(params![project, kind.as_str(), name, version], row)?
            .collect::<Result<Vec<_>, _>>()?,
    };
    Ok(rows)
}

/// A text column, borrowed from the row.
fn text<'r>(r: &'r Row<'_>, i: usize) -> Result<&'r str, ViewError> {
    r.get_ref(i)?
        .as_str()
        .map_err(|e| ViewError::Corrupt(format!("column {i}: {e}")))
}

pub(super) fn get_run(c: &Connection, project: &str, run: &str) -> Result<Option<RunDetail>, ViewError> {
    Ok(get_runs(c, project, &[run.to_string()])?.pop())
}

/// Several runs in the order asked (missing ones left out), read with one statement per table
/// whatever their number: a search's page costs six statements, not six per run.
pub(super) fn get_runs(c: &Connection, project: &str, runs: &[String]) -> Result<Vec<RunDetail>, ViewError> {
    use std::collections::HashMap;
    if runs.is_empty() {
        return Ok(Vec::new());
    }
    // Several ids travel as one JSON array parameter, so the statements stay the same (and
    // cached) for any number of runs; one run is looked up directly.
    let (ids, in_runs) = match runs {
        [one] => (one.clone(), "project = ?1 AND run = ?2"),
        _ => (
            serde_json::to_string(runs).map_err(|e| ViewError::Storage(e.to_string()))?,
            "project = ?1 AND run IN (SELECT value FROM json_each(?2))",
        ),
    };
    let mut details: HashMap<String, RunDetail> = HashMap::with_capacity(runs.len());
    {
        let mut stmt = c.prepare_cached(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE {in_runs}"))?;
        let rows = stmt.query_map(params![project, ids], run_row)?;
        for row in rows {
            let row = row?;
            details.insert(
                row.run.clone(),
                RunDetail {
                    run: row,
                    attributes: Vec::new(),
                    tags: Vec::new(),
                    series: Vec::new(),
                    files: Vec::new(),
                    lineage: Vec::new(),
                },
            );
        }
    }
    if details.is_empty() {
        return Ok(Vec::new());
    }
    {
        let mut stmt = c.prepare_cached(&format!(
            "SELECT run, path, type, i, f, s FROM attributes WHERE {in_runs} ORDER BY run, path"
        ))?;
        let mut rows = stmt.query(params![project, ids])?;
        while let Some(r) = rows.next()? {
            // Rows come grouped by run: no key is allocated to find each one's run.
            let (run, t) = (text(r, 0)?, text(r, 2)?);
            let value = value_from_columns(t, r.get(3)?, r.get(4)?, r.get(5)?)?;
            if let Some(d) = details.get_mut(run) {
                d.attributes.push((r.get(1)?, value));
            }
        }
    }
    {
        let mut stmt = c.prepare_cached(&format!("SELECT run, tag FROM tags WHERE {in_runs} ORDER BY run, tag"))?;
        let mut rows = stmt.query(params![project, ids])?;
        while let Some(r) = rows.next()? {
            if let Some(d) = details.get_mut(text(r, 0)?) {
                d.tags.push(r.get(1)?);
            }
        }
    }
    {
        let mut stmt = c.prepare_cached(&format!(
            "SELECT run, path, kind, count, first_step, last_step, last_value, min, max, sum, n_values, last_time_ms, last_bits
             FROM series WHERE {in_runs} ORDER BY run, path, kind"
        ))?;
        let mut rows = stmt.query(params![project, ids])?;
        while let Some(r) = rows.next()? {
            let run = text(r, 0)?;
            let kind: String = r.get(2)?;
            let n_values: i64 = r.get(10)?;
            let sum: Option<f64> = r.get(9)?;
            let float = kind == "float";
            let summary = SeriesSummary {
                path: r.get(1)?,
                count: r.get::<_, i64>(3)? as u64,
                first_step: r.get(4)?,
                last_step: r.get(5)?,
                last_value: float.then(|| exact(r.get(6).ok().flatten(), r.get(12).ok().flatten())),
                min: r.get(7)?,
                max: r.get(8)?,
                mean: (float && n_values > 0).then(|| real(sum) / n_values as f64),
                last_time_ms: r.get(11)?,
                kind,
            };
            if let Some(d) = details.get_mut(run) {
                d.series.push(summary);
            }
        }
    }
    {
        let mut stmt = c.prepare_cached(&format!(
            "SELECT path, step, blob_key, size, sha256, media_type, time_ms, run FROM files
             WHERE {in_runs} ORDER BY run, path, step"
        ))?;
        let mut rows = stmt.query(params![project, ids])?;
        while let Some(r) = rows.next()? {
            let run: String = r.get(7)?;
            let file = file_row(r, project, &run)?;
            if let Some(d) = details.get_mut(&run) {
                d.files.push(file);
            }
        }
    }
    {
        let mut stmt = c.prepare_cached(&format!(
            "SELECT {LINEAGE_COLUMNS} FROM lineage WHERE {in_runs} ORDER BY run, direction, kind, name, version"
        ))?;
        let rows = stmt.query_map(params![project, ids], |r| lineage_row(r, project))?;
        for row in rows {
            let row = row?;
            if let Some(d) = details.get_mut(&row.run) {
                d.lineage.push(row);
            }
        }
    }
    Ok(runs.iter().filter_map(|r| details.remove(r)).collect())
}

fn file_row(r: &Row<'_>, project: &str, run: &str) -> rusqlite::Result<FileRow> {
    let step: i64 = r.get(1)?;
    Ok(FileRow {
        project: project.to_string(),
        run: run.to_string(),
        path: r.get(0)?,
        step: (step >= 0).then_some(step),
        blob_key: r.get(2)?,
        size: r.get::<_, i64>(3)? as u64,
        sha256: r.get(4)?,
        media_type: r.get(5)?,
        time_ms: r.get(6)?,
    })
}

pub(super) fn file(
    c: &Connection,
    project: &str,
    run: &str,
    path: &str,
    step: Option<i64>,
) -> Result<Option<FileRow>, ViewError> {
    Ok(c.prepare_cached(
        "SELECT path, step, blob_key, size, sha256, media_type, time_ms FROM files
         WHERE project = ?1 AND run = ?2 AND path = ?3 AND step = ?4",
    )?
    .query_row(params![project, run, path, step.unwrap_or(-1)], |r| {
        file_row(r, project, run)
    })
    .optional()?)
}

pub(super) fn series_id(c: &Connection, key: &SeriesKey, kind: &str) -> Result<Option<i64>, ViewError> {
    Ok(
        c.prepare_cached("SELECT id FROM series WHERE project = ?1 AND run = ?2 AND path = ?3 AND kind = ?4")?
            .query_row(params![key.project, key.run, key.path, kind], |r| r.get(0))
            .optional()?,
    )
}

pub(super) fn points(
    c: &Connection,
    id: i64,
    from: PointFrom,
    to: i64,
    limit: usize,
) -> Result<Vec<PointRow>, ViewError> {
    let mut out = Vec::new();
    if from.step > to || limit == 0 {
        return Ok(out);
    }
    // From the block holding `from` (the last one starting at or before it) to the last block
    // starting within the range.
    let mut stmt = c.prepare_cached(
        "SELECT count, data FROM point_blocks WHERE series = ?1
           AND first_step >= COALESCE((SELECT MAX(first_step) FROM point_blocks WHERE series = ?1 AND first_step <= ?2), ?2)
           AND first_step <= ?3
         ORDER BY first_step",
    )?;
    let mut rows = stmt.query(params![id, from.step, to])?;
    let mut cols = block::Columns::default();
    while let Some(r) = rows.next()? {
        cols.clear();
        let data = r.get_ref(1)?.as_blob().map_err(|e| ViewError::Corrupt(e.to_string()))?;
        block::decode_into(data, r.get::<_, i64>(0)? as usize, &mut cols)?;
        for i in 0..cols.len() {
            let step = cols.steps[i];
            if !from.admits(step, cols.times[i]) {
                continue;
            }
            if step > to || out.len() >= limit {
                return Ok(out);
            }
            out.push(PointRow {
                step,
                time_ms: cols.times[i],
                value: cols.values[i],
            });
        }
    }
    Ok(out)
}

pub(super) fn lines(c: &Connection, id: i64, from: i64, to: i64, limit: usize) -> Result<Vec<LineRow>, ViewError> {
    let mut stmt = c.prepare_cached(
        "SELECT step, time_ms, line FROM lines WHERE series = ?1 AND step BETWEEN ?2 AND ?3 ORDER BY step",
    )?;
    let rows = stmt.query_map(params![id, from, to], |r| {
        Ok(LineRow {
            step: r.get(0)?,
            time_ms: r.get(1)?,
            line: r.get(2)?,
        })
    })?;
    Ok(rows.take(limit).collect::<Result<Vec<_>, _>>()?)
}

fn raw_aggs(c: &Connection, id: i64, from: i64, to: i64) -> Result<Vec<Agg>, ViewError> {
    Ok(points(c, id, PointFrom::step(from), to, usize::MAX >> 1)?
        .into_iter()
        .map(|p| {
            let mut a = Agg::EMPTY;
            a.add(p.step, p.time_ms, p.value);
            a
        })
        .collect())
}

/// Buckets over `from..=to`: whole rollup buckets inside the range from the rollups, the partial
/// buckets at either edge from finer levels and raw points, so the answer is exact for any range.
pub(super) fn buckets(c: &Connection, id: i64, from: i64, to: i64, n: usize) -> Result<Vec<Bucket>, ViewError> {
    // Buckets span the steps the series has within the range, not the whole range asked for:
    // a chart that asks for 100 buckets of "everything" gets 100, not one.
    let span: Option<(Option<i64>, Option<i64>)> = c
        .prepare_cached("SELECT first_step, last_step FROM series WHERE id = ?1")?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let (from, to) = match span {
        Some((Some(first), Some(last))) => (from.max(first), to.min(last)),
        _ => return Ok(Vec::new()),
    };
    if from > to {
        return Ok(Vec::new());
    }
    let parts = cover(c, id, rollup::choose_level(from, to, n), from, to)?;
    Ok(rollup::regroup(from, to, n, parts))
}

/// The aggregates of `from..=to`, in step order, read as [`rollup::cover`] plans it.
fn cover(c: &Connection, id: i64, level: Option<usize>, from: i64, to: i64) -> Result<Vec<Agg>, ViewError> {
    let mut parts = Vec::new();
    for piece in rollup::cover(level, from, to) {
        match piece {
            rollup::Piece::Raw { from, to } => parts.extend(raw_aggs(c, id, from, to)?),
            rollup::Piece::Level { level, first, last } => {
                parts.extend(read_aggs(c, id, level, first, last)?.into_iter().map(|(_, a)| a))
            }
        }
    }
    Ok(parts)
}

pub(super) fn events(
    c: &Connection,
    project: &str,
    run: &str,
    after: Option<(u32, u64, u32)>,
    limit: usize,
) -> Result<Vec<StoredEvent>, ViewError> {
    let (p, o, s) = after.map_or((-1i64, -1i64, -1i64), |(p, o, s)| (p.into(), o as i64, s.into()));
    let mut stmt = c.prepare_cached(
        "SELECT id, partition, offset, seq, kind FROM events
         WHERE project = ?1 AND run = ?2 AND (partition, offset, seq) > (?3, ?4, ?5)
         ORDER BY partition, offset, seq",
    )?;
    let rows = stmt.query_map(params![project, run, p, o, s], |r| {
        let id: Vec<u8> = r.get(0)?;
        Ok((
            id,
            r.get::<_, u32>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, u32>(3)?,
            r.get::<_, String>(4)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows.take(limit) {
        let (id, partition, offset, seq, kind) = row?;
        out.push(StoredEvent {
            project: project.to_string(),
            run: run.to_string(),
            id: EventId::from_bytes(&id).map_err(|e| ViewError::Corrupt(e.to_string()))?,
            partition,
            offset: offset as u64,
            seq,
            kind,
        });
    }
    Ok(out)
}

/// Every view as sorted text lines. Series are named by (project, run, path, kind), never by
/// their internal id, so two stores built in different orders compare equal.
pub(super) fn dump(c: &Connection) -> Result<String, ViewError> {
    let mut out = String::new();
    let tables: &[(&str, &str)] = &[
        ("checkpoints", "SELECT partition, next_offset FROM checkpoints ORDER BY 1"),
        ("runs", &format!("SELECT project, {RUN_COLUMNS} FROM runs ORDER BY project, run")),
        ("attributes", "SELECT project, run, path, type, i, f, s FROM attributes ORDER BY 1, 2, 3"),
        ("tags", "SELECT project, run, tag FROM tags ORDER BY 1, 2, 3"),
        (
            "series",
            "SELECT project, run, path, kind, count, n_values, min, max, sum, first_step, last_step, last_value, last_time_ms,
               last_bits FROM series ORDER BY 1, 2, 3, 4",
        ),
        (
            "lines",
            "SELECT s.project, s.run, s.path, l.step, l.time_ms, l.line FROM lines l JOIN series s ON s.id = l.series
             ORDER BY 1, 2, 3, 4",
        ),
        (
            "rollups",
            &format!(
                "SELECT s.project, s.run, s.path, r.level, r.bucket, {} FROM rollups r JOIN series s ON s.id = r.series
                 ORDER BY 1, 2, 3, 4, 5",
                AGG_COLUMNS.split(", ").map(|c| format!("r.{c}")).collect::<Vec<_>>().join(", ")
            ),
        ),
        ("files", "SELECT * FROM files ORDER BY 1, 2, 3, 4"),
        ("lineage", "SELECT * FROM lineage ORDER BY 1, 2, 3, 4, 5, 6"),
        ("events", "SELECT hex(id), project, run, partition, offset, seq, kind FROM events ORDER BY 4, 5, 6"),
    ];
    for (name, sql) in tables {
        let mut stmt = c.prepare(sql)?;
        let cols = stmt.column_count();
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            out.push_str(name);
            for i in 0..cols {
                out.push('\t');
                match r.get_ref(i)? {
                    rusqlite::types::ValueRef::Null => out.push_str("NULL"),
                    rusqlite::types::ValueRef::Integer(v) => write!(out, "{v}").expect("write to string"),
                    rusqlite::types::ValueRef::Real(v) => write!(out, "{v:?}").expect("write to string"),
                    rusqlite::types::ValueRef::Text(t) => out.push_str(&String::from_utf8_lossy(t)),
                    rusqlite::types::ValueRef::Blob(b) => write!(out, "blob:{}", b.len()).expect("write to string"),
                }
            }
            out.push('\n');
        }
    }
    // Points one per line, never per block: two stores cut the same points into different
    // blocks depending on how their flushes fell.
    let mut stmt = c.prepare(
        "SELECT s.project, s.run, s.path, b.count, b.data FROM point_blocks b JOIN series s ON s.id = b.series
         ORDER BY s.project, s.run, s.path, b.first_step",
    )?;
    let mut rows = stmt.query([])?;
    let mut cols = block::Columns::default();
    while let Some(r) = rows.next()? {
        cols.clear();
        let data = r.get_ref(4)?.as_blob().map_err(|e| ViewError::Corrupt(e.to_string()))?;
        block::decode_into(data, r.get::<_, i64>(3)? as usize, &mut cols)?;
        let (project, run, path): (String, String, String) = (r.get(0)?, r.get(1)?, r.get(2)?);
        for i in 0..cols.len() {
            writeln!(
                out,
                "points\t{project}\t{run}\t{path}\t{}\t{}\t{:?}\t{:016x}",
                cols.steps[i],
                cols.times[i],
                cols.values[i],
                cols.values[i].to_bits()
            )
            .expect("write to string");
        }
    }
    Ok(out)
}
