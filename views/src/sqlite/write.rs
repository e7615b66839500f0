//! One flush: every row of a batch, the rollups it dirties and its checkpoint, in one transaction.

use std::collections::{BTreeSet, HashMap, HashSet};

use runstream_schema::Value;
use rusqlite::{Connection, Transaction, params};

use crate::block;
use crate::rollup::{self, Agg, LEVELS};
use crate::*;

pub(super) fn apply(conn: &mut Connection, batch: &RowBatch) -> Result<(), ViewError> {
    let tx = conn.transaction()?;
    write_events(&tx, &batch.events)?;
    for patch in &batch.runs {
        write_run(&tx, patch)?;
    }
    write_attributes(&tx, &batch.attributes)?;
    write_tags(&tx, &batch.tags)?;
    let mut ids = SeriesIds::default();
    for s in &batch.float_series {
        let id = ids.get(&tx, &s.key, "float")?;
        write_float_series(&tx, id, s)?;
        update_float_summary(&tx, id)?;
    }
    for s in &batch.string_series {
        let id = ids.get(&tx, &s.key, "string")?;
        write_lines(&tx, id, s)?;
    }
    write_files(&tx, &batch.files)?;
    write_lineage(&tx, &batch.lineage)?;
    {
        let mut stmt = tx.prepare_cached(
            "INSERT INTO checkpoints (partition, next_offset) VALUES (?1, ?2)
             ON CONFLICT (partition) DO UPDATE SET next_offset = MAX(next_offset, excluded.next_offset)",
        )?;
        for (p, o) in &batch.checkpoint {
            stmt.execute(params![p, *o as i64])?;
        }
    }
    tx.commit()?;
    Ok(())
}

fn write_events(tx: &Transaction, events: &[StoredEvent]) -> Result<(), ViewError> {
    let mut stmt = tx.prepare_cached(
        "INSERT OR IGNORE INTO events (id, project, run, partition, offset, seq, kind)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    for e in events {
        stmt.execute(params![
            &e.id.to_bytes()[..],
            e.project,
            e.run,
            e.partition,
            e.offset as i64,
            e.seq,
            e.kind
        ])?;
    }
    Ok(())
}

fn write_run(tx: &Transaction, p: &RunPatch) -> Result<(), ViewError> {
    let created_ms = p.created.as_ref().map_or(p.updated_ms, |c| c.created_ms);
    tx.prepare_cached(
        "INSERT INTO runs (project, run, created_ms, updated_ms) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (project, run) DO UPDATE SET updated_ms = MAX(updated_ms, excluded.updated_ms)",
    )?
    .execute(params![p.project, p.run, created_ms, p.updated_ms])?;
    if let Some(c) = &p.created {
        tx.prepare_cached(
            "UPDATE runs SET name = ?3, experiment = ?4, parent_run = ?5, description = ?6, owner = ?7,
             created_ms = ?8, created_seen = 1 WHERE project = ?1 AND run = ?2 AND created_seen = 0",
        )?
        .execute(params![
            p.project,
            p.run,
            c.name,
            c.experiment,
            c.parent_run,
            c.description,
            c.owner,
            c.created_ms
        ])?;
    }
    if let Some((state, message, at)) = &p.state {
        let finished = state.is_terminal().then_some(*at);
        tx.prepare_cached(
            "UPDATE runs SET state = ?3, state_message = ?4, finished_ms = ?5 WHERE project = ?1 AND run = ?2",
        )?
        .execute(params![p.project, p.run, state.as_str(), message, finished])?;
    }
    if let Some(h) = p.heartbeat_ms {
        tx.prepare_cached(
            "UPDATE runs SET heartbeat_ms = MAX(COALESCE(heartbeat_ms, 0), ?3) WHERE project = ?1 AND run = ?2",
        )?
        .execute(params![p.project, p.run, h])?;
    }
    if let Some(d) = p.deleted {
        tx.prepare_cached("UPDATE runs SET deleted = ?3 WHERE project = ?1 AND run = ?2")?
            .execute(params![p.project, p.run, d])?;
    }
    Ok(())
}

/// Splits a typed value over the (type, i, f, s) columns.
pub(super) fn value_columns(v: &Value) -> (&'static str, Option<i64>, Option<f64>, Option<String>) {
    match v {
        Value::Int(i) => ("int", Some(*i), None, None),
        Value::Float(f) => ("float", special_bits(*f), Some(*f), None),
        Value::Bool(b) => ("bool", Some(i64::from(*b)), None, None),
        Value::String(s) => ("string", None, None, Some(s.clone())),
        Value::Datetime(t) => ("datetime", Some(*t), None, None),
        Value::StringSet(s) => (
            "string_set",
            None,
            None,
            Some(serde_json::to_string(s).unwrap_or_default()),
        ),
    }
}

fn write_attributes(tx: &Transaction, rows: &[AttrRow]) -> Result<(), ViewError> {
    let mut upsert = tx.prepare_cached(
        "INSERT INTO attributes (project, run, path, type, i, f, s) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (project, run, path) DO UPDATE SET type = excluded.type, i = excluded.i, f = excluded.f, s = excluded.s",
    )?;
    let mut delete = tx.prepare_cached("DELETE FROM attributes WHERE project = ?1 AND run = ?2 AND path = ?3")?;
    let mut key =
        tx.prepare_cached("INSERT OR IGNORE INTO attribute_keys (project, path, type) VALUES (?1, ?2, ?3)")?;
    let mut keys_seen = HashSet::new();
    for r in rows {
        match &r.value {
            Some(v) => {
                let (t, i, f, s) = value_columns(v);
                upsert.execute(params![r.project, r.run, r.path, t, i, f, s])?;
                if keys_seen.insert((&r.project, &r.path, t)) {
                    key.execute(params![r.project, r.path, t])?;
                }
            }
            None => {
                delete.execute(params![r.project, r.run, r.path])?;
            }
        }
    }
    Ok(())
}

fn write_tags(tx: &Transaction, rows: &[TagRow]) -> Result<(), ViewError> {
    let mut add = tx.prepare_cached("INSERT OR IGNORE INTO tags (project, run, tag) VALUES (?1, ?2, ?3)")?;
    let mut del = tx.prepare_cached("DELETE FROM tags WHERE project = ?1 AND run = ?2 AND tag = ?3")?;
    for r in rows {
        if r.present {
            add.execute(params![r.project, r.run, r.tag])?;
        } else {
            del.execute(params![r.project, r.run, r.tag])?;
        }
    }
    Ok(())
}

#[derive(Default)]
struct SeriesIds(HashMap<(SeriesKey, &'static str), i64>);

impl SeriesIds {
    fn get(&mut self, tx: &Transaction, key: &SeriesKey, kind: &'static str) -> Result<i64, ViewError> {
        if let Some(id) = self.0.get(&(key.clone(), kind)) {
            return Ok(*id);
        }
        tx.prepare_cached("INSERT OR IGNORE INTO series (project, run, path, kind) VALUES (?1, ?2, ?3, ?4)")?
            .execute(params![key.project, key.run, key.path, kind])?;
        tx.prepare_cached("INSERT OR IGNORE INTO series_keys (project, path, kind) VALUES (?1, ?2, ?3)")?
            .execute(params![key.project, key.path, kind])?;
        let id: i64 = tx
            .prepare_cached("SELECT id FROM series WHERE project = ?1 AND run = ?2 AND path = ?3 AND kind = ?4")?
            .query_row(params![key.project, key.run, key.path, kind], |r| r.get(0))?;
        self.0.insert((key.clone(), kind), id);
        Ok(id)
    }
}

fn write_lines(tx: &Transaction, id: i64, s: &StringSeriesRows) -> Result<(), ViewError> {
    {
        let mut stmt =
            tx.prepare_cached("INSERT OR REPLACE INTO lines (series, step, time_ms, line) VALUES (?1, ?2, ?3, ?4)")?;
        for i in 0..s.steps.len() {
            stmt.execute(params![id, s.steps[i], s.times_ms[i], s.lines[i]])?;
        }
    }
    tx.prepare_cached(
        "UPDATE series SET (count, first_step, last_step, last_time_ms) =
           (SELECT COUNT(*), MIN(step), MAX(step), (SELECT time_ms FROM lines WHERE series = ?1 ORDER BY step DESC LIMIT 1)
            FROM lines WHERE series = ?1)
         WHERE id = ?1",
    )?
    .execute([id])?;
    Ok(())
}

/// The exact bits of a float SQLite would not keep as it is (NaN, -0.0).
pub(super) fn special_bits(v: f64) -> Option<i64> {
    (v.is_nan() || (v == 0.0 && v.is_sign_negative())).then_some(v.to_bits() as i64)
}

/// A float read back: its kept bits if any, else the REAL column (NULL is NaN).
pub(super) fn exact(value: Option<f64>, bits: Option<i64>) -> f64 {
    bits.map_or_else(|| real(value), |b| f64::from_bits(b as u64))
}

pub(super) fn real(v: Option<f64>) -> f64 {
    v.unwrap_or(f64::NAN)
}

fn agg_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Agg> {
    Ok(Agg {
        count: r.get::<_, i64>(0)? as u64,
        n_values: r.get::<_, i64>(1)? as u64,
        min: real(r.get(2)?),
        max: real(r.get(3)?),
        sum: real(r.get(4)?),
        first_step: r.get(5)?,
        last_step: r.get(6)?,
        last_value: exact(r.get(7)?, r.get(9)?),
        last_time_ms: r.get(8)?,
    })
}

/// A bucket's columns; `last_bits` keeps the exact bits of a last value REAL would not (NaN, -0.0).
pub(super) const AGG_COLUMNS: &str =
    "count, n_values, min, max, sum, first_step, last_step, last_value, last_time_ms, last_bits";

pub(super) fn read_aggs(
    conn: &Connection,
    series: i64,
    level: usize,
    from_bucket: i64,
    to_bucket: i64,
) -> Result<Vec<(i64, Agg)>, ViewError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {AGG_COLUMNS}, bucket FROM rollups WHERE series = ?1 AND level = ?2 AND bucket BETWEEN ?3 AND ?4 ORDER BY bucket"
    ))?;
    let rows = stmt.query_map(params![series, level as i64, from_bucket, to_bucket], |r| {
        Ok((r.get::<_, i64>(10)?, agg_from_row(r)?))
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// A stored block of points, as its row says.
struct BlockRow {
    first: i64,
    last: i64,
    count: usize,
    data: Vec<u8>,
}

/// The blocks a flush reads, merges with its points and writes back, and the step ranges
/// (whole level-0 rollup buckets) its points dirty.
#[derive(Default)]
struct Group {
    ranges: Vec<(i64, i64)>,
    blocks: Vec<BlockRow>,
}

/// Writes the points of one series and recomputes the rollup buckets they touch.
///
/// Points are merged into packed blocks ([`block`]): for every run of dirty level-0 buckets, the
/// blocks overlapping it are read (plus the block just before it when that one has room, so a
/// series that keeps appending fills its last block instead of leaving small ones), overlaid
/// with the new points (a step written again at the same time takes its new value), cut into blocks again and
/// written back. Runs of buckets that share a block are merged into one group first, so the
/// blocks written never overlap a block left alone. Level-0 rollups are computed from the merged
/// points, which hold every point of each dirty bucket; coarser levels from the level below.
fn write_float_series(tx: &Transaction, id: i64, s: &FloatSeriesRows) -> Result<(), ViewError> {
    let dirty = rollup::dirty_buckets(&s.steps);
    let mut groups: Vec<Group> = Vec::new();
    {
        // Blocks starting from the last one that starts at or before `lo`, up to `hi`.
        let mut stmt = tx.prepare_cached(
            "SELECT first_step, last_step, count, data FROM point_blocks WHERE series = ?1
               AND first_step >= COALESCE((SELECT MAX(first_step) FROM point_blocks WHERE series = ?1 AND first_step <= ?2), ?2)
               AND first_step <= ?3
             ORDER BY first_step",
        )?;
        for (lo_bucket, hi_bucket) in runs_of(&dirty[0]) {
            let (lo, _) = rollup::bucket_range(0, lo_bucket);
            let (_, hi) = rollup::bucket_range(0, hi_bucket);
            let mut found: Vec<BlockRow> = stmt
                .query_map(params![id, lo, hi], |r| {
                    Ok(BlockRow {
                        first: r.get(0)?,
                        last: r.get(1)?,
                        count: r.get::<_, i64>(2)? as usize,
                        data: r.get(3)?,
                    })
                })?
                .collect::<Result<_, _>>()?;
            // The block before the range joins only when it has room to grow.
            if found
                .first()
                .is_some_and(|b| b.last < lo && b.count >= block::BLOCK_POINTS)
            {
                found.remove(0);
            }
            let joins_previous = match (groups.last(), found.first()) {
                (Some(g), Some(b)) => g.blocks.last().is_some_and(|l| l.first == b.first),
                _ => false,
            };
            if joins_previous {
                let g = groups.last_mut().expect("checked above");
                g.ranges.push((lo, hi));
                g.blocks.extend(found.into_iter().skip(1));
            } else {
                groups.push(Group {
                    ranges: vec![(lo, hi)],
                    blocks: found,
                });
            }
        }
    }
    let mut delete = tx.prepare_cached("DELETE FROM point_blocks WHERE series = ?1 AND first_step = ?2")?;
    let mut insert = tx.prepare_cached(
        "INSERT INTO point_blocks (series, first_step, last_step, count, data) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    let mut put = tx.prepare_cached(&format!(
        "INSERT OR REPLACE INTO rollups (series, level, bucket, {AGG_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
    ))?;
    let mut write = |level: usize, bucket: i64, a: &Agg| -> Result<(), ViewError> {
        put.execute(params![
            id,
            level as i64,
            bucket,
            a.count as i64,
            a.n_values as i64,
            a.min,
            a.max,
            a.sum,
            a.first_step,
            a.last_step,
            a.last_value,
            a.last_time_ms,
            special_bits(a.last_value)
        ])?;
        Ok(())
    };
    let mut next_new = 0usize;
    for g in &groups {
        let mut stored = block::Columns::default();
        for b in &g.blocks {
            block::decode_into(&b.data, b.count, &mut stored)?;
        }
        // The new points of this group: those within its ranges (both are in step order).
        let (_, group_hi) = *g.ranges.last().expect("a group has a range");
        let start = next_new + s.steps[next_new..].partition_point(|&st| st < g.ranges[0].0);
        let end = start + s.steps[start..].partition_point(|&st| st <= group_hi);
        next_new = end;
        let merged = stored.as_slices().overlay(s.slices(start..end));
        for b in &g.blocks {
            delete.execute(params![id, b.first])?;
        }
        let mut chunk_start = 0;
        for chunk_end in merged.block_ends() {
            insert.execute(params![
                id,
                merged.steps[chunk_start],
                merged.steps[chunk_end - 1],
                (chunk_end - chunk_start) as i64,
                block::encode(&merged, chunk_start..chunk_end)
            ])?;
            chunk_start = chunk_end;
        }
        // Level 0: every dirty bucket lies within the group's ranges, whose points are all here.
        let mut current: Option<(i64, Agg)> = None;
        let mut range = 0usize;
        for i in 0..merged.len() {
            let step = merged.steps[i];
            while range < g.ranges.len() && g.ranges[range].1 < step {
                range += 1;
            }
            if range == g.ranges.len() {
                break;
            }
            if step < g.ranges[range].0 {
                continue;
            }
            let b = step >> LEVELS[0];
            match &mut current {
                Some((cb, agg)) if *cb == b => agg.add(step, merged.times[i], merged.values[i]),
                _ => {
                    if let Some((cb, agg)) = current.take() {
                        write(0, cb, &agg)?;
                    }
                    let mut agg = Agg::EMPTY;
                    agg.add(step, merged.times[i], merged.values[i]);
                    current = Some((b, agg));
                }
            }
        }
        if let Some((cb, agg)) = current {
            write(0, cb, &agg)?;
        }
    }
    for level in 1..LEVELS.len() {
        let d = LEVELS[level] - LEVELS[level - 1];
        for (lo, hi) in runs_of(&dirty[level]) {
            let finer = read_aggs(tx, id, level - 1, lo << d, ((hi + 1) << d) - 1)?;
            let mut current: Option<(i64, Agg)> = None;
            for (fb, agg) in finer {
                let b = fb >> d;
                match &mut current {
                    Some((cb, acc)) if *cb == b => acc.merge(&agg),
                    _ => {
                        if let Some((cb, acc)) = current.take() {
                            write(level, cb, &acc)?;
                        }
                        current = Some((b, agg));
                    }
                }
            }
            if let Some((cb, acc)) = current {
                write(level, cb, &acc)?;
            }
        }
    }
    Ok(())
}

/// Consecutive runs `(first, last)` in a sorted set.
fn runs_of(set: &BTreeSet<i64>) -> Vec<(i64, i64)> {
    let mut out: Vec<(i64, i64)> = Vec::new();
    for &b in set {
        match out.last_mut() {
            Some((_, hi)) if *hi + 1 == b => *hi = b,
            _ => out.push((b, b)),
        }
    }
    out
}

/// The series row's summary (count, min, max, sum, last) from its coarsest rollup level.
fn update_float_summary(tx: &Transaction, id: i64) -> Result<(), ViewError> {
    let top = LEVELS.len() - 1;
    let mut total = Agg::EMPTY;
    for (_, a) in read_aggs(tx, id, top, i64::MIN, i64::MAX)? {
        total.merge(&a);
    }
    tx.prepare_cached(
        "UPDATE series SET count = ?2, n_values = ?3, min = ?4, max = ?5, sum = ?6, first_step = ?7,
         last_step = ?8, last_value = ?9, last_time_ms = ?10, last_bits = ?11 WHERE id = ?1",
    )?
    .execute(params![
        id,
        total.count as i64,
        total.n_values as i64,
        total.min_opt(),
        total.max_opt(),
        total.sum,
        total.first_step,
        total.last_step,
        total.last_value,
        total.last_time_ms,
        special_bits(total.last_value)
    ])?;
    Ok(())
}

fn write_files(tx: &Transaction, rows: &[FileRow]) -> Result<(), ViewError> {
    let mut stmt = tx.prepare_cached(
        "INSERT OR REPLACE INTO files (project, run, path, step, blob_key, size, sha256, media_type, time_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?;
    for f in rows {
        stmt.execute(params![
            f.project,
            f.run,
            f.path,
            f.step.unwrap_or(-1),
            f.blob_key,
            f.size as i64,
            f.sha256,
            f.media_type,
            f.time_ms
        ])?;
    }
    Ok(())
}

fn write_lineage(tx: &Transaction, rows: &[LineageRow]) -> Result<(), ViewError> {
    let mut stmt = tx.prepare_cached(
        "INSERT OR REPLACE INTO lineage (project, run, direction, kind, name, version, digest, uri, time_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?;
    for l in rows {
        stmt.execute(params![
            l.project,
            l.run,
            l.direction.as_str(),
            l.kind.as_str(),
            l.name,
            l.version,
            l.digest,
            l.uri,
            l.time_ms
        ])?;
    }
    Ok(())
}
