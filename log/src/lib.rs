//! The event log: the system of record.
//!
//! An [`EventLog`] is a set of partitions, each an append-only sequence of opaque records
//! (encoded event batches) numbered by offset. Records with the same key go to the same
//! partition, so the events of one run keep their order. [`EventLog::append`] returns only once
//! the records are durable: a SQLite commit with `synchronous=FULL`, or (distributed) a Kafka
//! write with `acks=all`. Nothing in a log is ever rewritten.
//!
//! Implementations are chosen by URL ([`open`]); every one passes the contract suite in
//! `tests/contract.rs`.

mod kafka;
mod sqlite;

use std::sync::Arc;
use std::time::Duration;

pub use kafka::{KafkaLog, KafkaUrl};
pub use sqlite::SqliteLog;

/// Where a record sits in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    pub partition: u32,
    pub offset: u64,
}

/// A record to append: `key` picks the partition.
#[derive(Debug, Clone)]
pub struct AppendRecord {
    pub key: String,
    pub payload: Vec<u8>,
}

/// A record read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    pub position: Position,
    pub payload: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("log storage failed: {0}")]
    Storage(String),
    #[error("log is unavailable: {0}")]
    Unavailable(String),
    #[error("invalid log request: {0}")]
    Invalid(String),
    /// A record the log can never take (nothing of the append was written).
    #[error("{0}")]
    TooLarge(String),
    #[error("log url {0:?} is not supported (expected sqlite://PATH or kafka://HOST:PORT)")]
    UnsupportedUrl(String),
    #[error("the log is shut down")]
    Closed,
}

impl From<rusqlite::Error> for LogError {
    fn from(e: rusqlite::Error) -> Self {
        LogError::Storage(e.to_string())
    }
}

#[async_trait::async_trait]
pub trait EventLog: Send + Sync + 'static {
    /// Number of partitions; fixed for the life of the log.
    fn partitions(&self) -> u32;

    /// Appends records and returns their positions, in order, once all of them are durable.
    /// Either every record is appended or the call fails; a failed call may have appended a
    /// prefix, which is why records carry idempotency keys.
    async fn append(&self, records: Vec<AppendRecord>) -> Result<Vec<Position>, LogError>;

    /// Reads up to `max_records` records of `partition`, from offset `from` on.
    async fn read(&self, partition: u32, from: u64, max_records: usize) -> Result<Vec<LogRecord>, LogError>;

    /// The next offset each partition will be given (its high watermark).
    async fn end_offsets(&self) -> Result<Vec<u64>, LogError>;

    /// Returns when some partition's end offset differs from `known`, or after `timeout`.
    async fn wait_for_new(&self, known: &[u64], timeout: Duration) -> Result<(), LogError>;

    /// Joins the readers named `group`, who share the partitions between them: each partition
    /// belongs to one member at a time, and the shares change as members come and go. Reading
    /// stays free ([`EventLog::read`]); a member reads only its own partitions by choice. Leaving
    /// is dropping the [`Membership`]. A member joining under a `name` (stable across restarts)
    /// is the same member when it comes back: a process that crashed and restarts under its
    /// name takes its share back at once, without the group first waiting for it to time out.
    /// A log with one process only (SQLite) gives every partition to every member.
    async fn join(&self, group: &str, name: Option<&str>) -> Result<Membership, LogError> {
        let _ = (group, name);
        Ok(Membership::fixed((0..self.partitions()).collect()))
    }
}

/// A place in a group of readers: the partitions that are this member's now.
pub struct Membership {
    assigned: tokio::sync::watch::Receiver<Vec<u32>>,
    /// Keeps the member in the group (a broker session, a sender); dropping it leaves.
    _session: Box<dyn Send + Sync>,
}

impl Membership {
    /// A membership whose partitions never change.
    pub fn fixed(partitions: Vec<u32>) -> Self {
        let (tx, rx) = tokio::sync::watch::channel(partitions);
        Membership {
            assigned: rx,
            _session: Box::new(tx),
        }
    }

    pub fn new(assigned: tokio::sync::watch::Receiver<Vec<u32>>, session: Box<dyn Send + Sync>) -> Self {
        Membership {
            assigned,
            _session: session,
        }
    }

    /// This member's partitions, in order, as last assigned.
    pub fn partitions(&mut self) -> Vec<u32> {
        self.assigned.borrow_and_update().clone()
    }

    /// Returns when the assignment changes (never, for a fixed one).
    pub async fn changed(&mut self) {
        if self.assigned.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// The partition a key belongs to: FNV-1a, stable across processes and releases.
pub fn partition_for(key: &str, partitions: u32) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % u64::from(partitions.max(1))) as u32
}

/// Opens a log by URL: `sqlite://PATH` (a file, created if missing) or
/// `kafka://HOST:PORT[,HOST:PORT...][/PREFIX][?replication=N]` (see [`KafkaLog`]). `topic` names the stream
/// (`events`, `registry`); `partitions` is used when the topic is created.
pub async fn open(url: &str, topic: &str, partitions: u32) -> Result<Arc<dyn EventLog>, LogError> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        let log = SqliteLog::open(path, topic, partitions).await?;
        return Ok(Arc::new(log));
    }
    if url.starts_with("kafka://") {
        return Ok(Arc::new(KafkaLog::open(url, topic, partitions).await?));
    }
    Err(LogError::UnsupportedUrl(url.to_string()))
}

/// Checks a group member's name: 1 to 200 characters of letters, digits and `._-`.
pub fn check_member_name(name: &str) -> Result<(), LogError> {
    let ok = (1..=200).contains(&name.len()) && name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(LogError::Invalid(format!(
            "member name {name:?}: 1 to 200 letters, digits, '.', '_' or '-'"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitioning_is_stable_and_spreads() {
        assert_eq!(partition_for("run-1", 8), partition_for("run-1", 8));
        let used: std::collections::HashSet<u32> = (0..100).map(|i| partition_for(&format!("run-{i}"), 8)).collect();
        assert_eq!(used.len(), 8);
        assert_eq!(partition_for("x", 1), 0);
    }
}
