//! The projector: consume the log, fold events into rows, flush rows with their checkpoint.
//!
//! Delivery from the log is at least once; the effect is exactly once because the checkpoint
//! (next offset per partition) is written in the same view transaction as the rows, and every
//! event id is recorded so that a duplicate appended by a client retry is skipped.
//!
//! Stages, each in its own file: [`consume`] reads records from the checkpoint on and decodes
//! them, [`fold`] turns them into rows with no I/O, [`flush`] writes rows and checkpoint.

pub mod consume;
pub mod flush;
pub mod fold;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use runstream_log::{EventLog, LogError, Membership};
use runstream_views::{ViewError, ViewStore};
use tokio::sync::{mpsc, watch};

pub use consume::{Consumer, Polled};

#[derive(Debug, thiserror::Error)]
pub enum ProjectorError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Views(#[from] ViewError),
    #[error("the log reader stopped unexpectedly")]
    Reader,
}

/// How much one flush may hold.
#[derive(Debug, Clone)]
pub struct ProjectorConfig {
    /// Records read per partition per poll.
    pub max_records: usize,
    /// A flush stops taking records once it holds this many points.
    pub max_points: usize,
    /// How long to wait for new records when caught up.
    pub idle_wait: Duration,
    /// The group of projectors sharing the log's partitions.
    pub group: String,
    /// This projector's stable name in the group, if it has one ([`EventLog::join`]).
    pub member: Option<String>,
}

impl Default for ProjectorConfig {
    fn default() -> Self {
        Self {
            max_records: 256,
            max_points: 500_000,
            idle_wait: Duration::from_millis(250),
            group: "projectors".into(),
            member: None,
        }
    }
}

/// A flush into ClickHouse holds up to this many points: the server keeps an insert of up to
/// 1,048,576 rows as one part, and every flush pays a part in each table it writes (runs,
/// rollups, series, events, ids, checkpoint), so a flush twice as large pays that half as often.
pub const CLICKHOUSE_MAX_POINTS: usize = 1_000_000;

impl ProjectorConfig {
    /// The configuration for the views at `views_url`: flushes of [`CLICKHOUSE_MAX_POINTS`] into
    /// ClickHouse; the default's 500,000 elsewhere, which keeps the embedded views' write
    /// transactions, and so a read-your-writes wait, short.
    pub fn for_views(views_url: &str) -> Self {
        let mut config = Self::default();
        if views_url.starts_with("clickhouse://") {
            config.max_points = CLICKHOUSE_MAX_POINTS;
        }
        config
    }
}

/// Counters a caller (metrics, benchmarks) can read while the projector runs.
#[derive(Debug, Default)]
pub struct ProjectorStats {
    pub events: AtomicU64,
    pub points: AtomicU64,
    pub flushes: AtomicU64,
    pub skipped_records: AtomicU64,
    /// How many partitions this projector folds (its share of the group).
    pub share: AtomicU64,
    /// Time spent in flushes, in microseconds.
    pub flush_micros: AtomicU64,
    pub last_flush_points: AtomicU64,
}

pub struct Projector {
    log: Arc<dyn EventLog>,
    views: Arc<dyn ViewStore>,
    config: ProjectorConfig,
    pub stats: Arc<ProjectorStats>,
}

impl Projector {
    pub fn new(log: Arc<dyn EventLog>, views: Arc<dyn ViewStore>, config: ProjectorConfig) -> Self {
        Self {
            log,
            views,
            config,
            stats: Arc::default(),
        }
    }

    /// Projects until `shutdown` turns true, then returns after the flush in progress. Errors of
    /// the log or the views are retried with backoff: the checkpoint makes a retry safe.
    ///
    /// Projectors form a group on the log ([`EventLog::join`]) and each folds only the
    /// partitions the group gives it. When the shares change, a projector finishes its flush and
    /// starts again from the views' checkpoint with its new share. A partition may for a moment
    /// be folded by two projectors (one still flushing what it read before losing it, or one
    /// that stopped answering): that is the replay every flush is built to take, writing the
    /// same rows under the same versions, so nothing is lost or counted twice.
    pub async fn run(&self, mut shutdown: watch::Receiver<bool>) -> Result<(), ProjectorError> {
        let mut backoff = Duration::from_millis(100);
        let mut membership = loop {
            match self.log.join(&self.config.group, self.config.member.as_deref()).await {
                Ok(m) => break m,
                Err(e) => {
                    tracing::warn!(error = %e, backoff_ms = backoff.as_millis() as u64, "cannot join the projector group; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.changed() => {}
                    }
                    if *shutdown.borrow() {
                        return Ok(());
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        };
        loop {
            if *shutdown.borrow() {
                return Ok(());
            }
            match self
                .pipeline(None, Some(&mut membership), &mut shutdown, &mut backoff)
                .await
            {
                Ok(()) if *shutdown.borrow() => return Ok(()),
                // The share changed: start again from the checkpoint with the new one.
                Ok(()) => {}
                Err(e) => {
                    tracing::warn!(error = %e, backoff_ms = backoff.as_millis() as u64, "projector failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.changed() => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    /// Projects everything in the log when called, then returns. Used by `rebuild` and tests.
    pub async fn catch_up(&self) -> Result<(), ProjectorError> {
        let target = self.log.end_offsets().await?;
        let (_never, mut shutdown) = watch::channel(false);
        let mut backoff = Duration::from_millis(100);
        self.pipeline(Some(target), None, &mut shutdown, &mut backoff).await
    }

    /// Reads ahead in one task (log reads and protobuf decoding) while this one dedupes, folds
    /// and writes the previous poll, so the two halves of the work use two cores. Starts from
    /// the views' checkpoint; returns at shutdown, once `until` is reached, or at the first
    /// error (the caller restarts from the checkpoint, which the failed flush did not move).
    async fn pipeline(
        &self,
        until: Option<Vec<u64>>,
        mut membership: Option<&mut Membership>,
        shutdown: &mut watch::Receiver<bool>,
        backoff: &mut Duration,
    ) -> Result<(), ProjectorError> {
        let mut consumer = Consumer::new(self.log.clone(), self.config.clone());
        consumer.seek(&self.views.checkpoint().await?);
        if let Some(m) = membership.as_deref_mut() {
            let share = m.partitions();
            tracing::info!(partitions = ?share, "projecting a share of the log");
            self.stats.share.store(share.len() as u64, Ordering::Relaxed);
            consumer.own(&share);
        }
        // What the flushes below have covered; the consumer itself runs ahead of them.
        let mut next = consumer.positions().to_vec();
        let reached = |next: &[u64]| {
            until.as_ref().is_some_and(|t| {
                t.iter()
                    .enumerate()
                    .all(|(p, end)| next.get(p).copied().unwrap_or(0) >= *end)
            })
        };
        if reached(&next) {
            return Ok(());
        }
        let (tx, mut rx) = mpsc::channel::<Result<Polled, LogError>>(1);
        let reader = AbortOnDrop(tokio::spawn(read_ahead(consumer, self.config.idle_wait, tx)));
        loop {
            // Between flushes only: a share change or a shutdown never cuts one short.
            let reshared = async {
                match membership.as_deref_mut() {
                    Some(m) => m.changed().await,
                    None => std::future::pending().await,
                }
            };
            let polled = tokio::select! {
                p = rx.recv() => p,
                _ = shutdown.changed() => None,
                _ = reshared => return Ok(()),
            };
            let Some(polled) = polled else {
                drop(reader);
                if *shutdown.borrow() {
                    return Ok(());
                }
                // The reader always says why it stops; ending silently means it panicked.
                return Err(ProjectorError::Reader);
            };
            let polled = polled?;
            let started = Instant::now();
            let stats = flush::flush(self.views.as_ref(), &polled).await?;
            *backoff = Duration::from_millis(100);
            for pos in polled.positions() {
                let n = &mut next[pos.partition as usize];
                *n = (*n).max(pos.offset + 1);
            }
            self.stats.events.fetch_add(stats.events as u64, Ordering::Relaxed);
            self.stats.points.fetch_add(stats.points as u64, Ordering::Relaxed);
            self.stats.flushes.fetch_add(1, Ordering::Relaxed);
            self.stats
                .flush_micros
                .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
            self.stats
                .last_flush_points
                .store(stats.points as u64, Ordering::Relaxed);
            self.stats
                .skipped_records
                .fetch_add(polled.skipped.len() as u64, Ordering::Relaxed);
            tracing::debug!(
                events = stats.events,
                points = stats.points,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "flushed"
            );
            if reached(&next) || *shutdown.borrow() {
                return Ok(());
            }
        }
    }
}

/// Aborts a task when dropped, so an early return never leaves a reader running.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Polls the log and hands each non-empty poll over, waiting for new records when caught up.
/// The consumer moves on as soon as a poll is handed over: the flush side owns what happens to
/// it, and on error the pipeline restarts from the views' checkpoint.
async fn read_ahead(mut consumer: Consumer, idle_wait: Duration, tx: mpsc::Sender<Result<Polled, LogError>>) {
    loop {
        match consumer.poll().await {
            Ok(polled) if polled.records.is_empty() && polled.skipped.is_empty() => {
                if let Err(e) = consumer.wait_for_new(idle_wait).await {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            }
            Ok(polled) => {
                consumer.commit(&polled);
                if tx.send(Ok(polled)).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        }
    }
}
