//! The embedded views: one SQLite file in WAL mode.
//!
//! One writer connection (the projector's flushes) and a pool of reader connections, so queries
//! never wait on a flush. `synchronous=NORMAL` is enough here: the checkpoint commits in the same
//! transaction as the rows, so whatever a power cut rolls back is replayed from the log.
//! Schema changes are numbered migrations tracked in `PRAGMA user_version`.

mod cache;
mod read;
mod search;
mod sql;
mod write;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use runstream_schema::EventId;
use rusqlite::Connection;

use crate::*;

/// Migrations, applied in order; index + 1 is the schema version they bring the file to.
///
/// Floats: SQLite stores NaN as NULL and -0.0 as 0, so float attributes also keep their exact
/// bits in `attributes.i`, read back in preference to the REAL column; points keep theirs in
/// their blocks.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE checkpoints (partition INTEGER PRIMARY KEY, next_offset INTEGER NOT NULL);
CREATE TABLE runs (
    project TEXT NOT NULL, run TEXT NOT NULL,
    name TEXT NOT NULL DEFAULT '', experiment TEXT NOT NULL DEFAULT '', parent_run TEXT,
    description TEXT NOT NULL DEFAULT '', owner TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL DEFAULT 'running', state_message TEXT NOT NULL DEFAULT '',
    created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL,
    finished_ms INTEGER, heartbeat_ms INTEGER, deleted INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (project, run)) WITHOUT ROWID;
CREATE INDEX runs_by_created ON runs (project, created_ms DESC, run);
CREATE TABLE attributes (
    project TEXT NOT NULL, run TEXT NOT NULL, path TEXT NOT NULL,
    type TEXT NOT NULL, i INTEGER, f REAL, s TEXT,
    PRIMARY KEY (project, run, path)) WITHOUT ROWID;
CREATE TABLE tags (
    project TEXT NOT NULL, run TEXT NOT NULL, tag TEXT NOT NULL,
    PRIMARY KEY (project, run, tag)) WITHOUT ROWID;
CREATE TABLE series (
    id INTEGER PRIMARY KEY, project TEXT NOT NULL, run TEXT NOT NULL, path TEXT NOT NULL,
    kind TEXT NOT NULL, count INTEGER NOT NULL DEFAULT 0, n_values INTEGER NOT NULL DEFAULT 0,
    min REAL, max REAL, sum REAL, first_step INTEGER, last_step INTEGER, last_value REAL,
    last_time_ms INTEGER,
    UNIQUE (project, run, path, kind));
CREATE TABLE points (
    series INTEGER NOT NULL, step INTEGER NOT NULL, time_ms INTEGER NOT NULL, value REAL, bits INTEGER,
    PRIMARY KEY (series, step)) WITHOUT ROWID;
CREATE TABLE lines (
    series INTEGER NOT NULL, step INTEGER NOT NULL, time_ms INTEGER NOT NULL, line TEXT NOT NULL,
    PRIMARY KEY (series, step)) WITHOUT ROWID;
CREATE TABLE rollups (
    series INTEGER NOT NULL, level INTEGER NOT NULL, bucket INTEGER NOT NULL,
    count INTEGER NOT NULL, n_values INTEGER NOT NULL, min REAL, max REAL, sum REAL,
    first_step INTEGER NOT NULL, last_step INTEGER NOT NULL, last_value REAL, last_time_ms INTEGER NOT NULL,
    PRIMARY KEY (series, level, bucket)) WITHOUT ROWID;
CREATE TABLE files (
    project TEXT NOT NULL, run TEXT NOT NULL, path TEXT NOT NULL, step INTEGER NOT NULL,
    blob_key TEXT NOT NULL, size INTEGER NOT NULL, sha256 TEXT NOT NULL, media_type TEXT NOT NULL,
    time_ms INTEGER NOT NULL,
    PRIMARY KEY (project, run, path, step)) WITHOUT ROWID;
CREATE TABLE lineage (
    project TEXT NOT NULL, run TEXT NOT NULL, direction TEXT NOT NULL, kind TEXT NOT NULL,
    name TEXT NOT NULL, version TEXT NOT NULL, digest TEXT NOT NULL, uri TEXT NOT NULL,
    time_ms INTEGER NOT NULL,
    PRIMARY KEY (project, run, direction, kind, name, version)) WITHOUT ROWID;
CREATE INDEX lineage_by_artifact ON lineage (project, kind, name, version);
CREATE TABLE events (
    id BLOB PRIMARY KEY, project TEXT NOT NULL, run TEXT NOT NULL, partition INTEGER NOT NULL,
    offset INTEGER NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL, payload BLOB NOT NULL);
CREATE INDEX events_by_run ON events (project, run, partition, offset, seq);
"#,
    // Float points move from one row per point into packed blocks (see `block`), and last values
    // keep their exact bits. The event history keeps positions in the log, not copies of events.
    // Only a run's first creation sets its name and creation time (`created_seen`). Views are
    // derived data: rather than convert rows, this empties every view and its checkpoint, and the
    // projector replays the log, the system of record, into the new layout.
    r#"
DROP TABLE points;
CREATE TABLE point_blocks (
    series INTEGER NOT NULL, first_step INTEGER NOT NULL, last_step INTEGER NOT NULL,
    count INTEGER NOT NULL, data BLOB NOT NULL);
CREATE UNIQUE INDEX point_blocks_by_step ON point_blocks (series, first_step);
ALTER TABLE rollups ADD COLUMN last_bits INTEGER;
ALTER TABLE series ADD COLUMN last_bits INTEGER;
ALTER TABLE runs ADD COLUMN created_seen INTEGER NOT NULL DEFAULT 0;
DELETE FROM checkpoints; DELETE FROM runs; DELETE FROM attributes; DELETE FROM tags; DELETE FROM series;
DELETE FROM lines; DELETE FROM rollups; DELETE FROM files; DELETE FROM lineage;
DROP TABLE events;
CREATE TABLE events (
    id BLOB PRIMARY KEY, project TEXT NOT NULL, run TEXT NOT NULL, partition INTEGER NOT NULL,
    offset INTEGER NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL);
CREATE INDEX events_by_run ON events (project, run, partition, offset, seq);
"#,
    // Run search: the attribute paths and metric paths each project has seen, with every type
    // (filters are typed against them), and indexes on (project, field, value, run) for sorting,
    // which a page walks in either direction from its cursor. `attributes_by_value` holds the
    // expression the search compiles for an attribute's sort value (search::ATTR_KEY).
    r#"
CREATE TABLE attribute_keys (
    project TEXT NOT NULL, path TEXT NOT NULL, type TEXT NOT NULL,
    PRIMARY KEY (project, path, type)) WITHOUT ROWID;
INSERT OR IGNORE INTO attribute_keys SELECT DISTINCT project, path, type FROM attributes;
CREATE TABLE series_keys (
    project TEXT NOT NULL, path TEXT NOT NULL, kind TEXT NOT NULL,
    PRIMARY KEY (project, path, kind)) WITHOUT ROWID;
INSERT OR IGNORE INTO series_keys SELECT DISTINCT project, path, kind FROM series;
CREATE INDEX attributes_by_value ON attributes (project, path,
    (CASE type WHEN 'float' THEN f WHEN 'string' THEN s WHEN 'string_set' THEN NULL ELSE i END));
CREATE INDEX series_by_last ON series (project, path, kind, last_value, run);
CREATE INDEX series_by_min ON series (project, path, kind, min, run);
CREATE INDEX series_by_max ON series (project, path, kind, max, run);
CREATE INDEX series_by_mean ON series (project, path, kind, (sum / n_values), run);
DROP INDEX runs_by_created;
CREATE INDEX runs_by_created ON runs (project, created_ms, run);
CREATE INDEX runs_by_updated ON runs (project, updated_ms, run);
CREATE INDEX runs_by_finished ON runs (project, finished_ms, run);
CREATE INDEX runs_by_name ON runs (project, name, run);
"#,
];

pub struct SqliteViews {
    path: PathBuf,
    writer: Arc<Mutex<Connection>>,
    readers: Arc<Mutex<Vec<Connection>>>,
    /// Tells the checkpoint thread a flush committed; dropping it ends the thread.
    committed: std::sync::mpsc::SyncSender<()>,
    /// Runs as last read, until a flush touches them.
    details: Arc<cache::DetailCache>,
}

fn connect(path: &Path) -> Result<Connection, ViewError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(30))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "cache_size", -65536)?;
    // A run's read alone takes six statements and searches add their own: rusqlite's default of
    // 16 cached statements would have them evict each other and be prepared again.
    conn.set_prepared_statement_cache_capacity(128);
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> Result<(), ViewError> {
    let current: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let supported = MIGRATIONS.len() as i64;
    if current > supported {
        return Err(ViewError::SchemaTooNew {
            found: current,
            supported,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i as i64 + 1)?;
        tx.commit()?;
        tracing::info!(version = i + 1, "views migrated");
    }
    Ok(())
}

/// Write-ahead log frames (4 KiB pages) past which the checkpointer stops being passive.
const WAL_RESTART_FRAMES: i64 = 16_384;

/// Passively checkpoints the write-ahead log once commits have come in, a few at a time. A crash
/// at any point loses nothing: committed frames stay in the write-ahead log until copied. Under
/// a projector that never pauses, passive checkpoints never catch up and the log would grow
/// without bound, slowing every read; past `restart_frames` the checkpointer waits for the
/// writer, copies the rest and truncates the log, a pause of one checkpoint.
fn checkpoint_after_commits(conn: Connection, committed: std::sync::mpsc::Receiver<()>, restart_frames: i64) {
    while committed.recv().is_ok() {
        std::thread::sleep(Duration::from_millis(20));
        let _ = committed.try_recv();
        if let Err(e) = checkpoint(&conn, restart_frames) {
            tracing::warn!(error = %e, "views checkpoint failed; the next flush retries it");
        }
    }
}

/// One checkpoint: passive, then truncating when the log holds more than `restart_frames`.
fn checkpoint(conn: &Connection, restart_frames: i64) -> rusqlite::Result<()> {
    let frames: i64 = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(1))?;
    if frames > restart_frames {
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    }
    Ok(())
}

impl SqliteViews {
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, ViewError> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| ViewError::Storage(format!("creating {}: {e}", dir.display())))?;
        }
        let p = path.clone();
        let (conn, checkpointer) = tokio::task::spawn_blocking(move || -> Result<_, ViewError> {
            let mut conn = connect(&p)?;
            migrate(&mut conn)?;
            // Flushes only append to the write-ahead log; a thread copies it into the database
            // file, so the projector's commits do not wait for that copy and its fsync.
            conn.pragma_update(None, "wal_autocheckpoint", 0)?;
            Ok((conn, connect(&p)?))
        })
        .await
        .map_err(|e| ViewError::Storage(e.to_string()))??;
        let (committed, committed_rx) = std::sync::mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("views-checkpoint".into())
            .spawn(move || checkpoint_after_commits(checkpointer, committed_rx, WAL_RESTART_FRAMES))
            .map_err(|e| ViewError::Storage(format!("starting the views checkpointer: {e}")))?;
        Ok(Self {
            path,
            writer: Arc::new(Mutex::new(conn)),
            readers: Arc::new(Mutex::new(Vec::new())),
            committed,
            details: Arc::default(),
        })
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, ViewError> + Send + 'static,
    ) -> Result<T, ViewError> {
        let pool = self.readers.clone();
        let path = self.path.clone();
        let read = move || {
            let conn = pool.lock().expect("reader pool").pop();
            let conn = match conn {
                Some(c) => c,
                None => connect(&path)?,
            };
            let out = f(&conn);
            pool.lock().expect("reader pool").push(conn);
            out
        };
        // On a multi-threaded runtime the read runs on this thread, which hands its other tasks
        // to another worker meanwhile: a page read takes a fraction of a millisecond, about what
        // waking a blocking-pool thread and being woken by it again costs. A single-threaded
        // runtime has no worker to hand them to, so its reads go to the blocking pool.
        if tokio::runtime::Handle::current().runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread {
            tokio::task::block_in_place(|| std::panic::catch_unwind(std::panic::AssertUnwindSafe(read))).unwrap_or_else(
                |p| {
                    let text = (p.downcast_ref::<&str>().copied())
                        .or_else(|| p.downcast_ref::<String>().map(String::as_str))
                        .unwrap_or("no message");
                    Err(ViewError::Storage(format!("view reader panicked: {text}")))
                },
            )
        } else {
            tokio::task::spawn_blocking(read)
                .await
                .map_err(|e| ViewError::Storage(format!("view reader panicked: {e}")))?
        }
    }
}

/// The details of `runs` in their order (those that exist): from the cache where it has them,
/// the others read with `read` (whose reads began after `read_at` was noted) and kept.
fn cached_runs(
    cache: &cache::DetailCache,
    read_at: u64,
    project: &str,
    runs: &[String],
    read: impl FnOnce(&[String]) -> Result<Vec<RunDetail>, ViewError>,
) -> Result<Vec<Arc<RunDetail>>, ViewError> {
    let mut found: Vec<Option<Arc<RunDetail>>> = runs.iter().map(|r| cache.get(project, r)).collect();
    let missing: Vec<String> = runs
        .iter()
        .zip(&found)
        .filter(|(_, f)| f.is_none())
        .map(|(r, _)| r.clone())
        .collect();
    if !missing.is_empty() {
        let mut read = read(&missing)?.into_iter().peekable();
        for (slot, run) in found.iter_mut().zip(runs) {
            if slot.is_none() && read.peek().is_some_and(|d| &d.run.run == run) {
                let d = Arc::new(read.next().expect("peeked"));
                cache.put(project, read_at, d.clone());
                *slot = Some(d);
            }
        }
    }
    Ok(found.into_iter().flatten().collect())
}

#[async_trait::async_trait]
impl ViewStore for SqliteViews {
    async fn checkpoint(&self) -> Result<Checkpoint, ViewError> {
        self.read(|c| {
            let mut stmt = c.prepare_cached("SELECT partition, next_offset FROM checkpoints")?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, u32>(0)?, r.get::<_, i64>(1)? as u64)))?;
            Ok(rows.collect::<Result<BTreeMap<_, _>, _>>()?)
        })
        .await
    }

    async fn known_events(&self, ids: Vec<EventId>) -> Result<HashSet<EventId>, ViewError> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached("SELECT 1 FROM events WHERE id = ?1")?;
            let mut known = HashSet::new();
            for id in ids {
                if stmt.exists([&id.to_bytes()[..]])? {
                    known.insert(id);
                }
            }
            Ok(known)
        })
        .await
    }

    async fn apply(&self, batch: RowBatch) -> Result<(), ViewError> {
        let writer = self.writer.clone();
        let touched = cache::DetailCache::touched(&batch);
        let applied = tokio::task::spawn_blocking(move || {
            let mut conn = writer.lock().expect("view writer");
            write::apply(&mut conn, &batch)
        })
        .await;
        // Committed or not, what was read of these runs may be stale now.
        self.details.changed(touched);
        applied.map_err(|e| ViewError::Storage(format!("view writer panicked: {e}")))??;
        // Full means a checkpoint is already due.
        let _ = self.committed.try_send(());
        Ok(())
    }

    async fn run_exists(&self, project: &str, run: &str) -> Result<bool, ViewError> {
        let (p, r) = (project.to_string(), run.to_string());
        self.read(move |c| {
            Ok(c.prepare_cached("SELECT 1 FROM runs WHERE project = ?1 AND run = ?2")?
                .exists([p, r])?)
        })
        .await
    }

    async fn search_runs(&self, search: RunSearch) -> Result<SearchPage, ViewError> {
        self.read(move |c| search::search(c, &search)).await
    }

    async fn search_run_details(&self, search: RunSearch) -> Result<(SearchPage, Vec<Arc<RunDetail>>), ViewError> {
        // One read and one snapshot for the page and the runs not cached.
        let details = self.details.clone();
        self.read(move |c| {
            let read_at = details.begin();
            let tx = c.unchecked_transaction()?;
            let page = search::search(&tx, &search)?;
            let ids: Vec<String> = page.runs.iter().map(|f| f.run.run.clone()).collect();
            let found = cached_runs(&details, read_at, &search.project, &ids, |missing| {
                read::get_runs(&tx, &search.project, missing)
            })?;
            tx.finish()?;
            Ok((page, found))
        })
        .await
    }

    async fn group_runs(&self, grouping: RunGrouping) -> Result<Groups, ViewError> {
        self.read(move |c| search::group(c, &grouping)).await
    }

    async fn catalog(&self, project: &str) -> Result<Catalog, ViewError> {
        let p = project.to_string();
        self.read(move |c| search::catalog(c, &p)).await
    }

    async fn lineage(&self, project: &str, of: &LineageOf, limit: usize) -> Result<Vec<LineageRow>, ViewError> {
        let (p, of) = (project.to_string(), of.clone());
        self.read(move |c| read::lineage(c, &p, &of, limit)).await
    }

    async fn get_run(&self, project: &str, run: &str) -> Result<Option<RunDetail>, ViewError> {
        if let Some(d) = self.details.get(project, run) {
            return Ok(Some(RunDetail::clone(&d)));
        }
        let (p, r) = (project.to_string(), run.to_string());
        let details = self.details.clone();
        self.read(move |c| {
            let read_at = details.begin();
            let found = read::get_run(c, &p, &r)?;
            if let Some(d) = &found {
                details.put(&p, read_at, Arc::new(d.clone()));
            }
            Ok(found)
        })
        .await
    }

    async fn get_runs(&self, project: &str, runs: &[String]) -> Result<Vec<RunDetail>, ViewError> {
        let (p, rs) = (project.to_string(), runs.to_vec());
        let details = self.details.clone();
        self.read(move |c| {
            let read_at = details.begin();
            // One read transaction: the six statements see one snapshot.
            let tx = c.unchecked_transaction()?;
            let out = cached_runs(&details, read_at, &p, &rs, |missing| read::get_runs(&tx, &p, missing))?;
            tx.finish()?;
            Ok(out.into_iter().map(Arc::unwrap_or_clone).collect())
        })
        .await
    }

    async fn read_points(
        &self,
        key: &SeriesKey,
        from: PointFrom,
        to: i64,
        limit: usize,
    ) -> Result<Vec<PointRow>, ViewError> {
        let key = key.clone();
        self.read(move |c| match read::series_id(c, &key, "float")? {
            Some(id) => read::points(c, id, from, to, limit),
            None => Ok(Vec::new()),
        })
        .await
    }

    async fn read_lines(&self, key: &SeriesKey, from: i64, to: i64, limit: usize) -> Result<Vec<LineRow>, ViewError> {
        let key = key.clone();
        self.read(move |c| match read::series_id(c, &key, "string")? {
            Some(id) => read::lines(c, id, from, to, limit),
            None => Ok(Vec::new()),
        })
        .await
    }

    async fn read_buckets(
        &self,
        key: &SeriesKey,
        from: i64,
        to: i64,
        buckets: usize,
    ) -> Result<Vec<Bucket>, ViewError> {
        let key = key.clone();
        self.read(move |c| match read::series_id(c, &key, "float")? {
            Some(id) => read::buckets(c, id, from, to, buckets),
            None => Ok(Vec::new()),
        })
        .await
    }

    async fn get_file(
        &self,
        project: &str,
        run: &str,
        path: &str,
        step: Option<i64>,
    ) -> Result<Option<FileRow>, ViewError> {
        let (p, r, f) = (project.to_string(), run.to_string(), path.to_string());
        self.read(move |c| read::file(c, &p, &r, &f, step)).await
    }

    async fn run_events(
        &self,
        project: &str,
        run: &str,
        after: Option<(u32, u64, u32)>,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, ViewError> {
        let (p, r) = (project.to_string(), run.to_string());
        self.read(move |c| read::events(c, &p, &r, after, limit)).await
    }

    async fn sql(&self, query: crate::sql::SqlQuery) -> Result<crate::sql::SqlAnswer, ViewError> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || sql::run(&path, &query))
            .await
            .map_err(|e| ViewError::Storage(format!("analytics query panicked: {e}")))?
    }

    async fn dump(&self) -> Result<String, ViewError> {
        self.read(read::dump).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads run on the calling thread under a multi-threaded runtime and in the blocking pool
    /// under a single-threaded one; either way a read answers, and a read that panics is an
    /// error naming the panic, not a crash of the request.
    async fn reads_answer_and_panics_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let views = SqliteViews::open(dir.path().join("v.db")).await.unwrap();
        assert!(views.checkpoint().await.unwrap().is_empty());
        assert!(!views.run_exists("w/p", "r").await.unwrap());
        let e = views
            .read::<()>(|_| panic!("reader fell over"))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("view reader panicked") && e.contains("reader fell over"),
            "{e}"
        );
        // The pool is intact after the panic: the next read answers.
        assert!(views.checkpoint().await.unwrap().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_on_a_multi_threaded_runtime() {
        reads_answer_and_panics_are_errors().await;
    }

    #[tokio::test]
    async fn reads_on_a_single_threaded_runtime() {
        reads_answer_and_panics_are_errors().await;
    }

    /// Past its limit a checkpoint truncates the write-ahead log (passive checkpoints alone
    /// never do, so under a projector that never pauses the log would grow without bound);
    /// below it, the checkpoint stays passive and leaves the file alone.
    #[test]
    fn checkpoints_past_the_limit_truncate_the_write_ahead_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db");
        let writer = connect(&path).unwrap();
        writer.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        writer
            .execute_batch("CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB)")
            .unwrap();
        let checkpointer = connect(&path).unwrap();
        let wal = dir.path().join("w.db-wal");
        let wal_len = || std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
        for i in 0..20i64 {
            writer
                .execute("INSERT INTO t VALUES (?1, zeroblob(60000))", [i])
                .unwrap();
        }
        let written = wal_len();
        assert!(written > 200 * 4096, "{written}");
        checkpoint(&checkpointer, i64::MAX).unwrap();
        assert_eq!(wal_len(), written, "a passive checkpoint leaves the log as it is");
        checkpoint(&checkpointer, 100).unwrap();
        assert_eq!(wal_len(), 0, "past the limit the log is truncated");
        let n: i64 = writer.query_row("SELECT count(*) FROM t", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 20);
    }

    /// A views file of schema 1 (a point per row) opens as schema 2 with every view and its
    /// checkpoint emptied, so the projector replays the log into blocks.
    #[tokio::test]
    async fn views_of_schema_1_are_emptied_for_replay() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            conn.execute_batch(
                "INSERT INTO checkpoints VALUES (0, 42);
                 INSERT INTO runs (project, run, created_ms, updated_ms) VALUES ('w/p', 'r', 1, 1);
                 INSERT INTO series (id, project, run, path, kind) VALUES (1, 'w/p', 'r', 'loss', 'float');
                 INSERT INTO points VALUES (1, 0, 5, 0.5, NULL);",
            )
            .unwrap();
        }
        let views = SqliteViews::open(&path).await.unwrap();
        assert!(views.checkpoint().await.unwrap().is_empty());
        assert!(!views.run_exists("w/p", "r").await.unwrap());
        let version: i64 = Connection::open(&path)
            .unwrap()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
        assert_eq!(views.dump().await.unwrap(), "");
    }
}
