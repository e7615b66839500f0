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

use runstream_log::{EventLog, LogError};
use runstream_views::{ViewError, ViewStore};
use tokio::sync::watch;

pub use consume::Consumer;

#[derive(Debug, thiserror::Error)]
pub enum ProjectorError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Views(#[from] ViewError),
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
}

impl Default for ProjectorConfig {
    fn default() -> Self {
        Self {
            max_records: 256,
            max_points: 500_000,
            idle_wait: Duration::from_millis(250),
        }
    }
}

/// Counters a caller (metrics, benchmarks) can read while the projector runs.
#[derive(Debug, Default)]
pub struct ProjectorStats {
    pub events: AtomicU64,
    pub points: AtomicU64,
    pub flushes: AtomicU64,
    pub skipped_records: AtomicU64,
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
    pub async fn run(&self, mut shutdown: watch::Receiver<bool>) -> Result<(), ProjectorError> {
        let mut consumer = Consumer::new(self.log.clone(), self.config.clone());
        let mut backoff = Duration::from_millis(100);
        loop {
            if *shutdown.borrow() {
                return Ok(());
            }
            match self.step(&mut consumer).await {
                Ok(true) => backoff = Duration::from_millis(100),
                Ok(false) => {
                    let ends = consumer.known_ends().to_vec();
                    tokio::select! {
                        r = self.log.wait_for_new(&ends, self.config.idle_wait) => r?,
                        _ = shutdown.changed() => {}
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, backoff_ms = backoff.as_millis() as u64, "projector step failed; retrying");
                    consumer.reset();
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
        let mut consumer = Consumer::new(self.log.clone(), self.config.clone());
        loop {
            let cp = self.views.checkpoint().await?;
            let done = target
                .iter()
                .enumerate()
                .all(|(p, end)| cp.get(&(p as u32)).copied().unwrap_or(0) >= *end);
            if done {
                return Ok(());
            }
            self.step(&mut consumer).await?;
        }
    }

    /// One poll, fold and flush. Returns false when there was nothing to read.
    async fn step(&self, consumer: &mut Consumer) -> Result<bool, ProjectorError> {
        if !consumer.is_positioned() {
            consumer.seek(&self.views.checkpoint().await?);
        }
        let polled = consumer.poll().await?;
        if polled.records.is_empty() && polled.skipped.is_empty() {
            return Ok(false);
        }
        let started = Instant::now();
        let stats = flush::flush(self.views.as_ref(), &polled).await?;
        consumer.commit(&polled);
        self.stats.events.fetch_add(stats.events as u64, Ordering::Relaxed);
        self.stats.points.fetch_add(stats.points as u64, Ordering::Relaxed);
        self.stats.flushes.fetch_add(1, Ordering::Relaxed);
        self.stats
            .skipped_records
            .fetch_add(polled.skipped.len() as u64, Ordering::Relaxed);
        tracing::debug!(
            events = stats.events,
            points = stats.points,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "flushed"
        );
        Ok(true)
    }
}
