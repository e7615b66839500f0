//! One flush into ClickHouse: rows first, then event ids, then the checkpoint (see the module
//! documentation for why that order makes a crash at any point harmless).

use std::collections::{BTreeMap, HashMap};

use clickhouse::{Row, RowWrite};
use serde::{Deserialize, Serialize};

use runstream_schema::Value;

use super::{CheckpointRec, ClickHouseViews, IdRec, id_halves, native, storage};
use crate::rollup::{self, Agg, LEVELS};
use crate::*;

/// A row version from a log position: the offset, then the index of the event in its record.
pub(super) fn version(offset: u64, seq: u32) -> u64 {
    (offset << 20) | u64::from(seq.min((1 << 20) - 1))
}

#[derive(Row, Serialize, Deserialize, Clone, Debug, Default)]
pub(super) struct RunRec {
    pub project: String,
    pub run: String,
    pub name: String,
    pub experiment: String,
    pub parent_run: Option<String>,
    pub description: String,
    pub owner: String,
    pub state: String,
    pub state_message: String,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub finished_ms: Option<i64>,
    pub heartbeat_ms: Option<i64>,
    pub deleted: u8,
    pub created_seen: u8,
    pub ver: u64,
}

/// The latest version of each run's columns.
/// `argMax` skips NULLs, so a nullable column goes through a tuple: a run finished and then
/// running again must read back unfinished.
pub(super) const RUN_LATEST: &str = "project, run, argMax(name, ver), argMax(experiment, ver),
    tupleElement(argMax(tuple(parent_run), ver), 1), argMax(description, ver), argMax(owner, ver),
    argMax(state, ver), argMax(state_message, ver), argMax(created_ms, ver), argMax(updated_ms, ver),
    tupleElement(argMax(tuple(finished_ms), ver), 1), tupleElement(argMax(tuple(heartbeat_ms), ver), 1),
    argMax(deleted, ver), argMax(created_seen, ver), max(ver)";

#[derive(Row, Serialize, Deserialize, Clone, Debug)]
pub(super) struct AttrRec {
    pub project: String,
    pub run: String,
    pub path: String,
    pub vtype: String,
    pub i: i64,
    pub f: f64,
    pub s: String,
    pub deleted: u8,
    pub ver: u64,
}

#[derive(Row, Serialize, Deserialize)]
struct AttrKeyRec<'a> {
    project: &'a str,
    path: &'a str,
    vtype: &'a str,
}

#[derive(Row, Serialize, Deserialize)]
struct TagRec<'a> {
    project: &'a str,
    run: &'a str,
    tag: &'a str,
    present: u8,
    ver: u64,
}

/// The latest version of a bucket's columns, in [`Agg`] field order.
pub(super) const AGG_LATEST: &str = "argMax(count, ver), argMax(n_values, ver), argMax(min, ver), argMax(max, ver),
    argMax(sum, ver), argMax(first_step, ver), argMax(last_step, ver), argMax(last_value, ver),
    argMax(last_time_ms, ver)";

#[derive(Row, Serialize)]
struct SeriesRec<'a> {
    project: &'a str,
    run: &'a str,
    path: &'a str,
    kind: &'a str,
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

impl<'a> SeriesRec<'a> {
    fn new(project: &'a str, run: &'a str, path: &'a str, kind: &'a str, a: &Agg, ver: u64) -> Self {
        Self {
            project,
            run,
            path,
            kind,
            count: a.count,
            n_values: a.n_values,
            min: a.min,
            max: a.max,
            sum: a.sum,
            first_step: a.first_step,
            last_step: a.last_step,
            last_value: a.last_value,
            last_time_ms: a.last_time_ms,
            ver,
        }
    }
}

#[derive(Row, Serialize)]
struct SeriesKeyRec<'a> {
    project: &'a str,
    path: &'a str,
    kind: &'a str,
}

#[derive(Row, Serialize)]
struct RollupRec<'a> {
    project: &'a str,
    run: &'a str,
    path: &'a str,
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

impl<'a> RollupRec<'a> {
    fn new(key: &'a SeriesKey, level: u8, bucket: i64, a: &Agg, ver: u64) -> Self {
        Self {
            project: &key.project,
            run: &key.run,
            path: &key.path,
            level,
            bucket,
            count: a.count,
            n_values: a.n_values,
            min: a.min,
            max: a.max,
            sum: a.sum,
            first_step: a.first_step,
            last_step: a.last_step,
            last_value: a.last_value,
            last_time_ms: a.last_time_ms,
            ver,
        }
    }
}

#[derive(Row, Serialize)]
struct FileRec<'a> {
    project: &'a str,
    run: &'a str,
    path: &'a str,
    step: i64,
    blob_key: &'a str,
    size: u64,
    sha256: &'a str,
    media_type: &'a str,
    time_ms: i64,
    ver: u64,
}

#[derive(Row, Serialize)]
struct LineageRec<'a> {
    project: &'a str,
    run: &'a str,
    direction: &'a str,
    kind: &'a str,
    name: &'a str,
    version: &'a str,
    digest: &'a str,
    uri: &'a str,
    time_ms: i64,
    ver: u64,
}

#[derive(Row, Serialize)]
struct LineageIndexRec<'a> {
    project: &'a str,
    kind: &'a str,
    name: &'a str,
    version: &'a str,
    run: &'a str,
    direction: &'a str,
    ver: u64,
}

#[derive(Row, Serialize)]
struct EventRec<'a> {
    id_hi: u64,
    id_lo: u64,
    project: &'a str,
    run: &'a str,
    partition: u32,
    offset: u64,
    seq: u32,
    kind: &'a str,
}

/// Splits a typed value over the (type, i, f, s) columns, as the SQLite views do.
pub(super) fn value_columns(v: &Value) -> (&'static str, i64, f64, String) {
    match v {
        Value::Int(i) => ("int", *i, 0.0, String::new()),
        Value::Float(f) => ("float", 0, *f, String::new()),
        Value::Bool(b) => ("bool", i64::from(*b), 0.0, String::new()),
        Value::String(s) => ("string", 0, 0.0, s.clone()),
        Value::Datetime(t) => ("datetime", *t, 0.0, String::new()),
        Value::StringSet(s) => ("string_set", 0, 0.0, serde_json::to_string(s).unwrap_or_default()),
    }
}

/// Writes every row of `rows` in one INSERT (one part as long as it stays under the server's
/// block size of about a million rows; a replay writes any part again, so nothing relies on it).
async fn insert_all<'r, T: Row + RowWrite>(
    views: &ClickHouseViews,
    table: &str,
    rows: Vec<T::Value<'r>>,
) -> Result<(), ViewError> {
    insert_rows::<T>(views, table, &rows).await
}

async fn insert_rows<'r, T: Row + RowWrite>(
    views: &ClickHouseViews,
    table: &str,
    rows: &[T::Value<'r>],
) -> Result<(), ViewError> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut insert = views.client.insert::<T>(&views.table(table)).await.map_err(storage)?;
    for row in rows {
        insert.write(row).await.map_err(storage)?;
    }
    insert.end().await.map_err(storage)
}

/// The version of every row of a run: the position of its run's last event in the flush.
struct Versions {
    /// Project, then run.
    runs: HashMap<String, HashMap<String, u64>>,
    /// For a row whose run has no event in the flush, which the fold never produces.
    fallback: u64,
}

impl Versions {
    fn of(batch: &RowBatch) -> Self {
        let mut runs: HashMap<String, HashMap<String, u64>> = HashMap::new();
        for e in &batch.events {
            let v = runs
                .entry(e.project.clone())
                .or_default()
                .entry(e.run.clone())
                .or_insert(0);
            *v = (*v).max(version(e.offset, e.seq));
        }
        let fallback = batch
            .checkpoint
            .iter()
            .map(|(_, next)| version(*next, 0))
            .max()
            .unwrap_or(0);
        Self { runs, fallback }
    }

    /// Looked up per row, so without allocating.
    fn get(&self, project: &str, run: &str) -> u64 {
        self.runs
            .get(project)
            .and_then(|r| r.get(run))
            .copied()
            .unwrap_or(self.fallback)
    }
}

/// Writes a flush. The tables' inserts are independent of each other and run concurrently
/// (separate connections: the server parses them on its cores while this process encodes the
/// next); only the order rows, then event ids, then checkpoint matters, and it is kept.
pub(super) async fn apply(views: &ClickHouseViews, batch: &RowBatch) -> Result<(), ViewError> {
    let versions = Versions::of(batch);
    let ver = &versions;
    futures::try_join!(
        write_runs(views, batch, ver),
        write_attributes(views, batch, ver),
        write_tags(views, batch, ver),
        write_float_series(views, batch, ver),
        write_string_series(views, batch, ver),
        write_files(views, batch, ver),
        write_lineage(views, batch, ver),
    )?;

    // Every row is in: now the events count as applied, and then the checkpoint moves.
    futures::try_join!(
        insert_all::<EventRec<'_>>(
            views,
            "events",
            batch
                .events
                .iter()
                .map(|e| {
                    let (id_hi, id_lo) = id_halves(e.id);
                    EventRec {
                        id_hi,
                        id_lo,
                        project: &e.project,
                        run: &e.run,
                        partition: e.partition,
                        offset: e.offset,
                        seq: e.seq,
                        kind: &e.kind,
                    }
                })
                .collect(),
        ),
        insert_all::<IdRec>(
            views,
            "event_ids",
            batch
                .events
                .iter()
                .map(|e| {
                    let (id_hi, id_lo) = id_halves(e.id);
                    IdRec { id_hi, id_lo }
                })
                .collect(),
        ),
    )?;
    insert_all::<CheckpointRec>(
        views,
        "checkpoints",
        batch
            .checkpoint
            .iter()
            .map(|&(partition, next_offset)| CheckpointRec { partition, next_offset })
            .collect(),
    )
    .await
}

/// Attributes under both keyings, and the project's attribute keys.
async fn write_attributes(views: &ClickHouseViews, batch: &RowBatch, ver: &Versions) -> Result<(), ViewError> {
    let attributes: Vec<AttrRec> = batch
        .attributes
        .iter()
        .map(|a| {
            let (vtype, i, f, s) = a.value.as_ref().map_or(("", 0, 0.0, String::new()), value_columns);
            AttrRec {
                project: a.project.clone(),
                run: a.run.clone(),
                path: a.path.clone(),
                vtype: vtype.to_string(),
                i,
                f,
                s,
                deleted: u8::from(a.value.is_none()),
                ver: ver.get(&a.project, &a.run),
            }
        })
        .collect();
    // Both keyings of the attributes (see the migrations); a crash that leaves one without the
    // other is repaired by the replay, which writes both again.
    let mut keys: Vec<(&str, &str, &str)> = batch
        .attributes
        .iter()
        .filter_map(|a| {
            a.value
                .as_ref()
                .map(|v| (a.project.as_str(), a.path.as_str(), value_columns(v).0))
        })
        .collect();
    keys.sort_unstable();
    keys.dedup();
    futures::try_join!(
        insert_rows::<AttrRec>(views, "attributes", &attributes),
        insert_rows::<AttrRec>(views, "attributes_by_path", &attributes),
        insert_keys(views, KeyTable::Attributes, keys),
    )?;
    Ok(())
}

async fn write_tags(views: &ClickHouseViews, batch: &RowBatch, ver: &Versions) -> Result<(), ViewError> {
    insert_all::<TagRec<'_>>(
        views,
        "tags",
        batch
            .tags
            .iter()
            .map(|t| TagRec {
                project: &t.project,
                run: &t.run,
                tag: &t.tag,
                present: u8::from(t.present),
                ver: ver.get(&t.project, &t.run),
            })
            .collect(),
    )
    .await
}

async fn write_files(views: &ClickHouseViews, batch: &RowBatch, ver: &Versions) -> Result<(), ViewError> {
    insert_all::<FileRec<'_>>(
        views,
        "files",
        batch
            .files
            .iter()
            .map(|f| FileRec {
                project: &f.project,
                run: &f.run,
                path: &f.path,
                step: f.step.unwrap_or(-1),
                blob_key: &f.blob_key,
                size: f.size,
                sha256: &f.sha256,
                media_type: &f.media_type,
                time_ms: f.time_ms,
                ver: ver.get(&f.project, &f.run),
            })
            .collect(),
    )
    .await
}

/// Lineage rows and their index by artifact.
async fn write_lineage(views: &ClickHouseViews, batch: &RowBatch, ver: &Versions) -> Result<(), ViewError> {
    futures::try_join!(
        insert_all::<LineageRec<'_>>(
            views,
            "lineage",
            batch
                .lineage
                .iter()
                .map(|l| LineageRec {
                    project: &l.project,
                    run: &l.run,
                    direction: l.direction.as_str(),
                    kind: l.kind.as_str(),
                    name: &l.name,
                    version: &l.version,
                    digest: &l.digest,
                    uri: &l.uri,
                    time_ms: l.time_ms,
                    ver: ver.get(&l.project, &l.run),
                })
                .collect(),
        ),
        insert_all::<LineageIndexRec<'_>>(
            views,
            "lineage_by_artifact",
            batch
                .lineage
                .iter()
                .map(|l| LineageIndexRec {
                    project: &l.project,
                    kind: l.kind.as_str(),
                    name: &l.name,
                    version: &l.version,
                    run: &l.run,
                    direction: l.direction.as_str(),
                    ver: ver.get(&l.project, &l.run),
                })
                .collect(),
        ),
    )?;
    Ok(())
}

/// `(a, b) IN ((?, ?), ...)` for `n` pairs.
fn pairs(n: usize) -> String {
    vec!["(?, ?)"; n].join(", ")
}

/// Reads the runs a batch patches, applies the patches as the SQLite views do, writes them whole.
async fn write_runs(views: &ClickHouseViews, batch: &RowBatch, ver: &Versions) -> Result<(), ViewError> {
    if batch.runs.is_empty() {
        return Ok(());
    }
    let mut current: HashMap<(String, String), RunRec> = HashMap::new();
    for chunk in batch.runs.chunks(1_000) {
        let mut q = views.sql(&format!(
            "SELECT {RUN_LATEST} FROM {{t}}runs WHERE (project, run) IN ({}) GROUP BY project, run",
            pairs(chunk.len())
        ));
        for p in chunk {
            q = q.bind(&p.project).bind(&p.run);
        }
        for r in q.fetch_all::<RunRec>().await.map_err(storage)? {
            current.insert((r.project.clone(), r.run.clone()), r);
        }
    }
    let mut out = Vec::with_capacity(batch.runs.len());
    for p in &batch.runs {
        let mut r = current
            .remove(&(p.project.clone(), p.run.clone()))
            .unwrap_or_else(|| RunRec {
                project: p.project.clone(),
                run: p.run.clone(),
                state: "running".into(),
                created_ms: p.created.as_ref().map_or(p.updated_ms, |c| c.created_ms),
                updated_ms: p.updated_ms,
                ..Default::default()
            });
        r.updated_ms = r.updated_ms.max(p.updated_ms);
        if let Some(c) = &p.created
            && r.created_seen == 0
        {
            r.name = c.name.clone();
            r.experiment = c.experiment.clone();
            r.parent_run = c.parent_run.clone();
            r.description = c.description.clone();
            r.owner = c.owner.clone();
            r.created_ms = c.created_ms;
            r.created_seen = 1;
        }
        if let Some((state, message, at)) = &p.state {
            r.state = state.as_str().to_string();
            r.state_message = message.clone();
            r.finished_ms = state.is_terminal().then_some(*at);
        }
        if let Some(h) = p.heartbeat_ms {
            r.heartbeat_ms = Some(r.heartbeat_ms.unwrap_or(0).max(h));
        }
        if let Some(d) = p.deleted {
            r.deleted = u8::from(d);
        }
        r.ver = ver.get(&p.project, &p.run);
        out.push(r);
    }
    insert_all::<RunRec>(views, "runs", out).await
}

#[derive(Row, Deserialize)]
struct StoredPoint {
    project: String,
    run: String,
    path: String,
    step: i64,
    time_ms: i64,
    value: f64,
}

#[derive(Row, Deserialize)]
struct StoredAgg {
    project: String,
    run: String,
    path: String,
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
}

impl StoredAgg {
    fn agg(&self) -> Agg {
        Agg {
            count: self.count,
            n_values: self.n_values,
            min: self.min,
            max: self.max,
            sum: self.sum,
            first_step: self.first_step,
            last_step: self.last_step,
            last_value: self.last_value,
            last_time_ms: self.last_time_ms,
        }
    }
}

type Key = (String, String, String);

fn key_of(k: &SeriesKey) -> Key {
    (k.project.clone(), k.run.clone(), k.path.clone())
}

/// Runs of consecutive values of a sorted set, as inclusive ranges.
fn runs_of(set: &std::collections::BTreeSet<i64>) -> Vec<(i64, i64)> {
    let mut out: Vec<(i64, i64)> = Vec::new();
    for &b in set {
        match out.last_mut() {
            Some((_, hi)) if *hi + 1 == b => *hi = b,
            _ => out.push((b, b)),
        }
    }
    out
}

/// The rows of a series as the points and lines tables hold them.
trait StepRows {
    fn key(&self) -> &SeriesKey;
    fn steps(&self) -> &[i64];
    fn times_ms(&self) -> &[i64];
}

macro_rules! step_rows {
    ($($t:ty),*) => {$(
        impl StepRows for $t {
            fn key(&self) -> &SeriesKey {
                &self.key
            }
            fn steps(&self) -> &[i64] {
                &self.steps
            }
            fn times_ms(&self) -> &[i64] {
                &self.times_ms
            }
        }
    )*};
}

step_rows!(FloatSeriesRows, StringSeriesRows);

/// Inserts every row of `series` into `table` (project, run, path, step, time_ms, the value
/// column `value` writes, ver) in Native blocks.
async fn insert_series<T: StepRows>(
    views: &ClickHouseViews,
    table: &str,
    series: &[T],
    ver: &Versions,
    value: impl Fn(&mut native::NativeBlock, &[(&T, std::ops::Range<usize>)]),
) -> Result<(), ViewError> {
    let mut insert = native::Insert::new(views, table);
    for pieces in blocks(series, |s| s.steps().len()) {
        let rows = pieces.iter().map(|(_, r)| r.len()).sum();
        let mut block = native::NativeBlock::new(7, rows, 64);
        block.repeated(
            "project",
            pieces.iter().map(|(s, r)| (s.key().project.as_str(), r.len())),
        );
        block.repeated("run", pieces.iter().map(|(s, r)| (s.key().run.as_str(), r.len())));
        block.repeated("path", pieces.iter().map(|(s, r)| (s.key().path.as_str(), r.len())));
        block.slices("step", pieces.iter().map(|(s, r)| &s.steps()[r.clone()]));
        block.slices("time_ms", pieces.iter().map(|(s, r)| &s.times_ms()[r.clone()]));
        value(&mut block, &pieces);
        block.fixed(
            "ver",
            pieces
                .iter()
                .flat_map(|(s, r)| std::iter::repeat_n(ver.get(&s.key().project, &s.key().run), r.len())),
        );
        insert.send(views, block).await?;
    }
    insert.end().await
}

/// Rows sent in one Native block: small enough that the server reads a block while the next
/// is encoded, large enough that a block's overhead does not count.
const BLOCK_ROWS: usize = 1 << 16;

/// The series' rows cut into blocks of [`BLOCK_ROWS`]: each block the pieces of the series
/// (and the range of each one's rows) it holds, in order.
fn blocks<T>(series: &[T], len: impl Fn(&T) -> usize) -> Vec<Vec<(&T, std::ops::Range<usize>)>> {
    let mut out = Vec::new();
    let mut block = Vec::new();
    let mut rows = 0;
    for s in series {
        let (mut from, n) = (0, len(s));
        while from < n {
            let take = (BLOCK_ROWS - rows).min(n - from);
            block.push((s, from..from + take));
            rows += take;
            from += take;
            if rows == BLOCK_ROWS {
                out.push(std::mem::take(&mut block));
                rows = 0;
            }
        }
    }
    if !block.is_empty() {
        out.push(block);
    }
    out
}

/// Reads what the recomputation needs (stored points of the dirty finest buckets, stored rows of
/// the finer levels under dirty coarser buckets, and every top-level row for the summary) in two
/// queries for the whole batch, then writes points, rollups and series summaries.
async fn write_float_series(views: &ClickHouseViews, batch: &RowBatch, ver: &Versions) -> Result<(), ViewError> {
    if batch.float_series.is_empty() {
        return Ok(());
    }
    // The points go in while the rollups are read back and recomputed: what the read-back
    // sees of them is what the overlay writes again, so either order gives the same rows.
    let points = insert_series(views, "float_points", &batch.float_series, ver, |block, pieces| {
        block.slices("value", pieces.iter().map(|(s, r)| &s.values[r.clone()]));
    });
    let rollups = async {
        let dirty: Vec<Vec<std::collections::BTreeSet<i64>>> = batch
            .float_series
            .iter()
            .map(|s| rollup::dirty_buckets(&s.steps))
            .collect();

        // Stored points of the dirty level-0 buckets.
        let read_points = async {
            let mut stored_points: HashMap<Key, block::Columns> = HashMap::new();
            let mut conds = Vec::new();
            let mut binds: Vec<(String, String, String, i64, i64)> = Vec::new();
            for (s, d) in batch.float_series.iter().zip(&dirty) {
                for (lo, hi) in runs_of(&d[0]) {
                    conds.push("(project = ? AND run = ? AND path = ? AND step BETWEEN ? AND ?)");
                    binds.push((
                        s.key.project.clone(),
                        s.key.run.clone(),
                        s.key.path.clone(),
                        rollup::bucket_range(0, lo).0,
                        rollup::bucket_range(0, hi).1,
                    ));
                }
            }
            for (conds, binds) in conds.chunks(500).zip(binds.chunks(500)) {
                let mut q = views.sql(&format!(
                    "SELECT project, run, path, step, time_ms, argMax(value, ver) FROM {{t}}float_points
                     WHERE {} GROUP BY project, run, path, step, time_ms ORDER BY project, run, path, step, time_ms",
                    conds.join(" OR ")
                ));
                for (p, r, path, lo, hi) in binds {
                    q = q.bind(p).bind(r).bind(path).bind(lo).bind(hi);
                }
                for p in q.fetch_all::<StoredPoint>().await.map_err(storage)? {
                    let cols = stored_points.entry((p.project, p.run, p.path)).or_default();
                    cols.steps.push(p.step);
                    cols.times.push(p.time_ms);
                    cols.values.push(p.value);
                }
            }
            Ok::<_, ViewError>(stored_points)
        };

        // Stored rows of levels 0..top-1 under dirty buckets of the level above, and every row of
        // the top level (the series summary merges them).
        let top = LEVELS.len() - 1;
        let read_aggs = async {
            let mut stored_aggs: HashMap<Key, BTreeMap<(usize, i64), Agg>> = HashMap::new();
            let mut conds = Vec::new();
            let mut binds: Vec<(String, String, String, u8, i64, i64)> = Vec::new();
            for (s, d) in batch.float_series.iter().zip(&dirty) {
                for level in 1..LEVELS.len() {
                    let shift = LEVELS[level] - LEVELS[level - 1];
                    for (lo, hi) in runs_of(&d[level]) {
                        conds.push("(project = ? AND run = ? AND path = ? AND level = ? AND bucket BETWEEN ? AND ?)");
                        binds.push((
                            s.key.project.clone(),
                            s.key.run.clone(),
                            s.key.path.clone(),
                            (level - 1) as u8,
                            lo << shift,
                            ((hi + 1) << shift) - 1,
                        ));
                    }
                }
                conds.push("(project = ? AND run = ? AND path = ? AND level = ? AND bucket BETWEEN ? AND ?)");
                binds.push((
                    s.key.project.clone(),
                    s.key.run.clone(),
                    s.key.path.clone(),
                    top as u8,
                    i64::MIN,
                    i64::MAX,
                ));
            }
            for (conds, binds) in conds.chunks(500).zip(binds.chunks(500)) {
                let mut q = views.sql(&format!(
                    "SELECT project, run, path, level, bucket, {AGG_LATEST} FROM {{t}}rollups
                     WHERE {} GROUP BY project, run, path, level, bucket",
                    conds.join(" OR ")
                ));
                for (p, r, path, level, lo, hi) in binds {
                    q = q.bind(p).bind(r).bind(path).bind(level).bind(lo).bind(hi);
                }
                for a in q.fetch_all::<StoredAgg>().await.map_err(storage)? {
                    stored_aggs
                        .entry((a.project.clone(), a.run.clone(), a.path.clone()))
                        .or_default()
                        .insert((usize::from(a.level), a.bucket), a.agg());
                }
            }
            Ok::<_, ViewError>(stored_aggs)
        };
        // The two read-backs are independent: one round trip's wait, not two.
        let (mut stored_points, stored_aggs) = futures::try_join!(read_points, read_aggs)?;

        let mut rollup_rows: Vec<(usize, usize, i64, Agg)> = Vec::new();
        let mut summaries: Vec<(usize, Agg)> = Vec::new();
        let empty = BTreeMap::new();
        for (i, (s, d)) in batch.float_series.iter().zip(&dirty).enumerate() {
            let key = key_of(&s.key);
            let old = stored_points.remove(&key).unwrap_or_default();
            let merged = old.as_slices().overlay(s.slices(0..s.steps.len()));
            let stored = stored_aggs.get(&key).unwrap_or(&empty);
            let fresh = rollup::recompute(d, merged.points(), stored);
            let mut summary = Agg::EMPTY;
            let mut top_rows: BTreeMap<i64, Agg> = stored
                .range((top, i64::MIN)..=(top, i64::MAX))
                .map(|(&(_, b), a)| (b, *a))
                .collect();
            for (&b, a) in &fresh[top] {
                top_rows.insert(b, *a);
            }
            for a in top_rows.values() {
                summary.merge(a);
            }
            summaries.push((i, summary));
            for (level, rows) in fresh.into_iter().enumerate() {
                rollup_rows.extend(rows.into_iter().map(|(b, a)| (i, level, b, a)));
            }
        }

        // Rows of different tables: no order among them matters.
        futures::try_join!(
            insert_all::<RollupRec<'_>>(
                views,
                "rollups",
                rollup_rows
                    .iter()
                    .map(|(i, level, bucket, a)| {
                        let k = &batch.float_series[*i].key;
                        RollupRec::new(k, *level as u8, *bucket, a, ver.get(&k.project, &k.run))
                    })
                    .collect(),
            ),
            insert_summaries(
                views,
                summaries
                    .iter()
                    .map(|(i, a)| {
                        let s = &batch.float_series[*i];
                        SeriesRec::new(
                            &s.key.project,
                            &s.key.run,
                            &s.key.path,
                            "float",
                            a,
                            ver.get(&s.key.project, &s.key.run),
                        )
                    })
                    .collect(),
            ),
            insert_keys(
                views,
                KeyTable::Series,
                series_keys(batch.float_series.iter().map(|s| &s.key), "float")
            ),
        )?;
        Ok(())
    };
    futures::try_join!(points, rollups)?;
    Ok(())
}

/// Series summaries into both keyings (see the migrations); a crash that leaves one without
/// the other is repaired by the replay, which writes both again.
async fn insert_summaries(views: &ClickHouseViews, rows: Vec<SeriesRec<'_>>) -> Result<(), ViewError> {
    futures::try_join!(
        insert_rows::<SeriesRec>(views, "series", &rows),
        insert_rows::<SeriesRec>(views, "series_by_path", &rows),
    )?;
    Ok(())
}

/// The distinct (project, path, kind) of the series.
fn series_keys<'a>(keys: impl Iterator<Item = &'a SeriesKey>, kind: &'a str) -> Vec<(&'a str, &'a str, &'a str)> {
    let mut seen: Vec<(&str, &str, &str)> = keys.map(|k| (k.project.as_str(), k.path.as_str(), kind)).collect();
    seen.sort_unstable();
    seen.dedup();
    seen
}

enum KeyTable {
    Attributes,
    Series,
}

/// Writes the rows of a key table (project, path, type) that this process has not written to
/// the generation yet (see [`ClickHouseViews::unwritten_keys`]).
async fn insert_keys(views: &ClickHouseViews, table: KeyTable, keys: Vec<(&str, &str, &str)>) -> Result<(), ViewError> {
    let name = match table {
        KeyTable::Attributes => "attribute_keys",
        KeyTable::Series => "series_keys",
    };
    let keys = views.unwritten_keys(name, keys);
    match table {
        KeyTable::Attributes => {
            let rows = keys
                .iter()
                .map(|&(project, path, vtype)| AttrKeyRec { project, path, vtype });
            insert_all::<AttrKeyRec<'_>>(views, name, rows.collect()).await?;
        }
        KeyTable::Series => {
            let rows = keys
                .iter()
                .map(|&(project, path, kind)| SeriesKeyRec { project, path, kind });
            insert_all::<SeriesKeyRec<'_>>(views, name, rows.collect()).await?;
        }
    }
    views.keys_written(name, &keys);
    Ok(())
}

#[derive(Row, Deserialize)]
struct LineSummary {
    project: String,
    run: String,
    path: String,
    count: u64,
    first_step: i64,
    last_step: i64,
    last_time_ms: i64,
}

async fn write_string_series(views: &ClickHouseViews, batch: &RowBatch, ver: &Versions) -> Result<(), ViewError> {
    if batch.string_series.is_empty() {
        return Ok(());
    }
    insert_series(views, "lines", &batch.string_series, ver, |block, pieces| {
        block.strings(
            "line",
            pieces
                .iter()
                .flat_map(|(s, r)| s.lines[r.clone()].iter().map(String::as_str)),
        );
    })
    .await?;
    // Summaries from the stored lines, now that this flush's are among them.
    // In chunks, so that a flush touching many series keeps each statement small.
    let mut rows = Vec::new();
    for chunk in batch.string_series.chunks(500) {
        let mut q = views.sql(&format!(
            "SELECT project, run, path, uniqExact(step), min(step), max(step), argMax(time_ms, (step, ver))
             FROM {{t}}lines WHERE (project, run, path) IN ({}) GROUP BY project, run, path",
            vec!["(?, ?, ?)"; chunk.len()].join(", ")
        ));
        for s in chunk {
            q = q.bind(&s.key.project).bind(&s.key.run).bind(&s.key.path);
        }
        rows.extend(q.fetch_all::<LineSummary>().await.map_err(storage)?);
    }
    insert_summaries(
        views,
        rows.iter()
            .map(|r| {
                let agg = Agg {
                    count: r.count,
                    first_step: r.first_step,
                    last_step: r.last_step,
                    last_time_ms: r.last_time_ms,
                    ..Agg::EMPTY
                };
                SeriesRec::new(&r.project, &r.run, &r.path, "string", &agg, ver.get(&r.project, &r.run))
            })
            .collect(),
    )
    .await?;
    insert_keys(
        views,
        KeyTable::Series,
        series_keys(batch.string_series.iter().map(|s| &s.key), "string"),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_order_like_log_positions() {
        assert!(version(1, 0) > version(0, 999_999));
        assert!(version(7, 3) > version(7, 2));
        assert_eq!(version(0, u32::MAX), (1 << 20) - 1, "an index past 2^20 saturates");
    }
}
