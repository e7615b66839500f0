//! The embedded log: one SQLite file in WAL mode, a table per topic.
//!
//! One writer thread owns the write connection and commits whatever appends are waiting in one
//! transaction (group commit), so concurrent clients share each fsync. `synchronous=FULL` makes
//! the commit durable before any caller is answered. Offsets are read from the table inside the
//! write transaction, so several processes can append to one file safely. Readers use their own
//! connections and never block the writer.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::{mpsc, oneshot, watch};

use crate::{AppendRecord, EventLog, LogError, LogRecord, Position, partition_for};

type Reply = oneshot::Sender<Result<Vec<Position>, LogError>>;

pub struct SqliteLog {
    path: PathBuf,
    table: String,
    partitions: u32,
    writer: mpsc::Sender<(Vec<AppendRecord>, Reply)>,
    readers: Arc<Mutex<Vec<Connection>>>,
    ends: watch::Receiver<Vec<u64>>,
}

fn connect(path: &Path) -> Result<Connection, LogError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(30))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(conn)
}

impl SqliteLog {
    pub async fn open(path: impl AsRef<Path>, topic: &str, partitions: u32) -> Result<Self, LogError> {
        if topic.is_empty() || !topic.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(LogError::Invalid(format!(
                "topic {topic:?} must be letters, digits and '_'"
            )));
        }
        if partitions == 0 {
            return Err(LogError::Invalid("a topic needs at least one partition".into()));
        }
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| LogError::Storage(format!("creating {}: {e}", dir.display())))?;
        }
        let table = format!("log_{topic}");
        let mut conn = connect(&path)?;
        create_or_upgrade(&mut conn, &table)?;
        conn.execute(
            "INSERT OR IGNORE INTO topics (name, partitions) VALUES (?1, ?2)",
            params![topic, partitions],
        )?;
        let stored: u32 = conn.query_row("SELECT partitions FROM topics WHERE name = ?1", [topic], |r| r.get(0))?;
        let partitions = stored;
        let ends = read_ends(&conn, &table, partitions)?;
        let (ends_tx, ends_rx) = watch::channel(ends);
        let (tx, rx) = mpsc::channel(1024);
        let writer_table = table.clone();
        // Commits only append to the write-ahead log; copying it into the database file (a
        // checkpoint, with its own fsync) happens on another thread, off the path of an append.
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        let checkpointer = connect(&path)?;
        let (committed_tx, committed_rx) = std::sync::mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name(format!("log-checkpoint-{topic}"))
            .spawn(move || checkpoint_loop(checkpointer, committed_rx, WAL_RESTART_FRAMES))
            .map_err(|e| LogError::Storage(format!("starting the log checkpointer: {e}")))?;
        std::thread::Builder::new()
            .name(format!("log-writer-{topic}"))
            .spawn(move || writer_loop(conn, writer_table, partitions, rx, ends_tx, committed_tx))
            .map_err(|e| LogError::Storage(format!("starting the log writer: {e}")))?;
        Ok(Self {
            path,
            table,
            partitions,
            writer: tx,
            readers: Arc::new(Mutex::new(Vec::new())),
            ends: ends_rx,
        })
    }

    async fn with_reader<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection, &str) -> Result<T, LogError> + Send + 'static,
    ) -> Result<T, LogError> {
        let pool = self.readers.clone();
        let path = self.path.clone();
        let table = self.table.clone();
        tokio::task::spawn_blocking(move || {
            let conn = pool.lock().expect("reader pool").pop();
            let conn = match conn {
                Some(c) => c,
                None => connect(&path)?,
            };
            let out = f(&conn, &table);
            pool.lock().expect("reader pool").push(conn);
            out
        })
        .await
        .map_err(|e| LogError::Storage(format!("log reader panicked: {e}")))?
    }
}

/// Creates the topic's table, or moves an older file's table to the current layout.
///
/// Records are kept in a rowid table with a separate index on (partition, offset), so finding a
/// partition's end or a reader's start walks a small index and never the payloads. Files written
/// before kept records in a `WITHOUT ROWID` table, whose b-tree holds the payloads themselves;
/// those are copied over once, in one transaction, keeping every position.
fn create_or_upgrade(conn: &mut Connection, table: &str) -> Result<(), LogError> {
    let layout = |name: &str| {
        format!(
            "CREATE TABLE {name} (
                 partition INTEGER NOT NULL, offset INTEGER NOT NULL, payload BLOB NOT NULL,
                 UNIQUE (partition, offset))"
        )
    };
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    tx.execute_batch("CREATE TABLE IF NOT EXISTS topics (name TEXT PRIMARY KEY, partitions INTEGER NOT NULL)")?;
    let existing: Option<String> = tx
        .query_row(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?1",
            [table],
            |r| r.get(0),
        )
        .optional()?;
    match existing {
        None => tx.execute_batch(&layout(table))?,
        Some(sql) if sql.to_ascii_uppercase().contains("WITHOUT ROWID") => {
            tracing::info!(table, "moving log records to the indexed layout");
            tx.execute_batch(&format!(
                "{};
                 INSERT INTO {table}_new (partition, offset, payload)
                   SELECT partition, offset, payload FROM {table} ORDER BY partition, offset;
                 DROP TABLE {table};
                 ALTER TABLE {table}_new RENAME TO {table};",
                layout(&format!("{table}_new"))
            ))?;
        }
        Some(_) => {}
    }
    tx.commit()?;
    Ok(())
}

fn read_ends(conn: &Connection, table: &str, partitions: u32) -> Result<Vec<u64>, LogError> {
    let mut stmt = conn.prepare_cached(&format!("SELECT MAX(offset) FROM {table} WHERE partition = ?1"))?;
    (0..partitions)
        .map(|p| {
            let max: Option<i64> = stmt.query_row([p], |r| r.get(0)).optional()?.flatten();
            Ok(max.map_or(0, |m| m as u64 + 1))
        })
        .collect()
}

/// Write-ahead log frames (4 KiB pages) past which the checkpointer stops being passive.
const WAL_RESTART_FRAMES: i64 = 16_384;

/// Checkpoints the write-ahead log after commits, a few commits at a time; ends when the writer
/// does. A passive checkpoint never blocks the writer or readers, and a crash at any point
/// loses nothing: committed frames stay in the write-ahead log until copied. But under a writer
/// that never pauses, passive checkpoints never catch up, the log is never restarted and grows
/// without bound (and every read slows with it); past `restart_frames` the checkpointer waits
/// for the writer, copies the rest and truncates the log, a pause of one checkpoint.
fn checkpoint_loop(conn: Connection, committed: std::sync::mpsc::Receiver<()>, restart_frames: i64) {
    while committed.recv().is_ok() {
        // Let a few more commits land, so one checkpoint and one fsync cover them.
        std::thread::sleep(Duration::from_millis(20));
        let _ = committed.try_recv();
        if let Err(e) = checkpoint(&conn, restart_frames) {
            tracing::warn!(error = %e, "log checkpoint failed; the next commit retries it");
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

fn writer_loop(
    mut conn: Connection,
    table: String,
    partitions: u32,
    mut rx: mpsc::Receiver<(Vec<AppendRecord>, Reply)>,
    ends: watch::Sender<Vec<u64>>,
    committed: std::sync::mpsc::SyncSender<()>,
) {
    while let Some(first) = rx.blocking_recv() {
        let mut group = vec![first];
        // Everything already waiting joins this commit: group commit.
        while group.len() < 256 {
            match rx.try_recv() {
                Ok(item) => group.push(item),
                Err(_) => break,
            }
        }
        let result = write_group(&mut conn, &table, partitions, &group);
        match result {
            Ok((positions, new_ends)) => {
                for ((_, reply), pos) in group.into_iter().zip(positions) {
                    let _ = reply.send(Ok(pos));
                }
                ends.send_replace(new_ends);
                // Full means a checkpoint is already due.
                let _ = committed.try_send(());
            }
            Err(e) => {
                tracing::error!(error = %e, "log append failed");
                for (_, reply) in group {
                    let _ = reply.send(Err(LogError::Storage(e.to_string())));
                }
            }
        }
    }
}

fn write_group(
    conn: &mut Connection,
    table: &str,
    partitions: u32,
    group: &[(Vec<AppendRecord>, Reply)],
) -> Result<(Vec<Vec<Position>>, Vec<u64>), LogError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    // Read inside the write transaction: another process may have appended since.
    let mut next = read_ends(&tx, table, partitions)?;
    let mut out = Vec::with_capacity(group.len());
    {
        let mut insert = tx.prepare_cached(&format!(
            "INSERT INTO {table} (partition, offset, payload) VALUES (?1, ?2, ?3)"
        ))?;
        for (records, _) in group {
            let mut positions = Vec::with_capacity(records.len());
            for r in records {
                let partition = partition_for(&r.key, partitions);
                let offset = next[partition as usize];
                insert.execute(params![partition, offset as i64, r.payload])?;
                next[partition as usize] += 1;
                positions.push(Position { partition, offset });
            }
            out.push(positions);
        }
    }
    tx.commit()?;
    Ok((out, next))
}

#[async_trait::async_trait]
impl EventLog for SqliteLog {
    fn partitions(&self) -> u32 {
        self.partitions
    }

    async fn append(&self, records: Vec<AppendRecord>) -> Result<Vec<Position>, LogError> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let (tx, rx) = oneshot::channel();
        self.writer.send((records, tx)).await.map_err(|_| LogError::Closed)?;
        rx.await.map_err(|_| LogError::Closed)?
    }

    async fn read(&self, partition: u32, from: u64, max_records: usize) -> Result<Vec<LogRecord>, LogError> {
        if partition >= self.partitions {
            return Err(LogError::Invalid(format!(
                "partition {partition} of {}",
                self.partitions
            )));
        }
        self.with_reader(move |conn, table| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT offset, payload FROM {table} WHERE partition = ?1 AND offset >= ?2 ORDER BY offset"
            ))?;
            // No LIMIT: a bound one makes SQLite prepare the statement again at every read.
            let rows = stmt.query_map(params![partition, from as i64], |r| {
                Ok(LogRecord {
                    position: Position {
                        partition,
                        offset: r.get::<_, i64>(0)? as u64,
                    },
                    payload: r.get(1)?,
                })
            })?;
            rows.take(max_records)
                .collect::<Result<Vec<_>, _>>()
                .map_err(LogError::from)
        })
        .await
    }

    async fn end_offsets(&self) -> Result<Vec<u64>, LogError> {
        let partitions = self.partitions;
        self.with_reader(move |conn, table| read_ends(conn, table, partitions))
            .await
    }

    async fn wait_for_new(&self, known: &[u64], timeout: Duration) -> Result<(), LogError> {
        let mut rx = self.ends.clone();
        if rx.borrow_and_update().as_slice() != known {
            return Ok(());
        }
        // Appends by this process wake us at once; another process's appends are seen by the
        // caller's next read after the timeout.
        let _ = tokio::time::timeout(timeout, rx.changed()).await;
        Ok(())
    }
}
