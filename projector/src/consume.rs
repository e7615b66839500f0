//! Reading the log from the checkpoint on, and decoding records.
//!
//! A record that does not decode was written by a newer or broken client and cannot be folded;
//! it is reported loudly and stepped over (its position still advances the checkpoint), so one
//! bad record never stalls a partition.

use std::collections::BTreeMap;
use std::sync::Arc;

use runstream_log::{EventLog, LogError, Position};
use runstream_schema::decode_batch;

use crate::ProjectorConfig;
use crate::fold::DecodedRecord;

/// What one poll brought: decoded records and the positions of any that could not be decoded.
pub struct Polled {
    pub records: Vec<DecodedRecord>,
    pub skipped: Vec<Position>,
}

impl Polled {
    /// Every position this poll covers, decoded or not.
    pub fn positions(&self) -> impl Iterator<Item = Position> + '_ {
        self.records
            .iter()
            .map(|r| r.position)
            .chain(self.skipped.iter().copied())
    }
}

pub struct Consumer {
    log: Arc<dyn EventLog>,
    config: ProjectorConfig,
    /// Next offset to read per partition; empty until positioned from the checkpoint.
    next: Vec<u64>,
    /// The partitions this consumer reads (its share of a group); all unless told otherwise.
    owned: Vec<bool>,
    ends: Vec<u64>,
    first: usize,
}

impl Consumer {
    pub fn new(log: Arc<dyn EventLog>, config: ProjectorConfig) -> Self {
        Self {
            log,
            config,
            next: Vec::new(),
            owned: Vec::new(),
            ends: Vec::new(),
            first: 0,
        }
    }

    /// Positions the consumer at the views' checkpoint.
    pub fn seek(&mut self, checkpoint: &BTreeMap<u32, u64>) {
        self.next = (0..self.log.partitions())
            .map(|p| checkpoint.get(&p).copied().unwrap_or(0))
            .collect();
    }

    /// Reads only `partitions` from now on (a member's share of the log).
    pub fn own(&mut self, partitions: &[u32]) {
        self.owned = (0..self.log.partitions()).map(|p| partitions.contains(&p)).collect();
    }

    /// The next offset to read per partition.
    pub fn positions(&self) -> &[u64] {
        &self.next
    }

    /// The end offsets seen by the last poll, for waiting on new data.
    pub fn known_ends(&self) -> &[u64] {
        &self.ends
    }

    /// Waits up to `timeout` for new records in a partition this consumer reads. Records
    /// appended to other members' partitions do not wake it (they would make a projector with a
    /// small or empty share poll in a loop).
    pub async fn wait_for_new(&mut self, timeout: std::time::Duration) -> Result<(), LogError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            self.log.wait_for_new(&self.ends, left).await?;
            let ends = self.log.end_offsets().await?;
            let mine_moved = ends
                .iter()
                .enumerate()
                .any(|(p, e)| self.owned.get(p).copied().unwrap_or(true) && self.ends.get(p) != Some(e));
            self.ends = ends;
            if mine_moved {
                return Ok(());
            }
        }
    }

    pub async fn poll(&mut self) -> Result<Polled, LogError> {
        self.ends = self.log.end_offsets().await?;
        let mut records = Vec::new();
        let mut skipped = Vec::new();
        let mut points = 0usize;
        // Start from a different partition each poll, so a busy one cannot starve the rest.
        let n = self.next.len();
        self.first = (self.first + 1) % n.max(1);
        for p in (0..n).map(|i| (self.first + i) % n) {
            if points >= self.config.max_points {
                break;
            }
            if self.next[p] >= self.ends.get(p).copied().unwrap_or(0) || !self.owned.get(p).copied().unwrap_or(true) {
                continue;
            }
            let raw = self.log.read(p as u32, self.next[p], self.config.max_records).await?;
            for r in raw {
                match decode_batch(&r.payload) {
                    Ok(events) => {
                        points += events.iter().map(point_count).sum::<usize>();
                        records.push(DecodedRecord {
                            position: r.position,
                            events,
                        });
                    }
                    Err(e) => {
                        tracing::error!(partition = r.position.partition, offset = r.position.offset, error = %e,
                            "undecodable log record stepped over");
                        skipped.push(r.position);
                    }
                }
                if points >= self.config.max_points {
                    break;
                }
            }
        }
        Ok(Polled { records, skipped })
    }

    /// Moves past what a poll returned, once it has been flushed.
    pub fn commit(&mut self, polled: &Polled) {
        for pos in polled.positions() {
            let n = &mut self.next[pos.partition as usize];
            *n = (*n).max(pos.offset + 1);
        }
    }
}

fn point_count(e: &runstream_schema::Event) -> usize {
    match &e.body {
        runstream_schema::Body::FloatPoints(p) => p.steps.len(),
        runstream_schema::Body::StringLines(l) => l.steps.len(),
        _ => 1,
    }
}
