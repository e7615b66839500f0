//! Runs as last read, kept until a flush touches them.
//!
//! A run's detail (its row, attributes, tags, series summaries, files, lineage) takes six
//! statements to read, and the same runs are read again and again: a search page refreshed by a
//! dashboard, MLflow's client asking for a run after each call. Reads are served from here
//! while no flush has touched the run since.
//!
//! Correctness rests on an epoch that every flush advances after it commits, and the epoch of
//! each run's last change. A read notes the epoch before it starts; what it read is served only
//! while no change of the run is newer than that note. A flush that commits while a read is
//! under way is newer than the read's note, whichever snapshot the read saw, so a detail that
//! may predate a change is never served.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;

use crate::{RowBatch, RunDetail};

/// The runs kept at most; past it the cache starts afresh.
const CAPACITY: usize = 20_000;

type Key = (String, String);

#[derive(Default)]
pub(super) struct DetailCache {
    epoch: AtomicU64,
    /// Entries read before this epoch are not served (the cache was emptied then).
    floor: AtomicU64,
    /// The epoch of each run's last change.
    changed: DashMap<Key, u64>,
    /// Each run's detail and the epoch noted before it was read.
    entries: DashMap<Key, (u64, Arc<RunDetail>)>,
}

impl DetailCache {
    /// The epoch to note before a read.
    pub fn begin(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// The run's detail, if it was read after its last change.
    pub fn get(&self, project: &str, run: &str) -> Option<Arc<RunDetail>> {
        let key = (project.to_string(), run.to_string());
        let entry = self.entries.get(&key)?;
        let (read_at, detail) = &*entry;
        let changed = self.changed.get(&key).map_or(0, |c| *c);
        (*read_at >= changed.max(self.floor.load(Ordering::SeqCst))).then(|| detail.clone())
    }

    /// Keeps a detail read after noting `read_at`.
    pub fn put(&self, project: &str, read_at: u64, detail: Arc<RunDetail>) {
        if self.entries.len() >= CAPACITY {
            // Reads noted before now are refused by the floor, as the changes they may
            // predate are forgotten.
            let epoch = self.epoch.fetch_add(1, Ordering::SeqCst) + 1;
            self.floor.store(epoch, Ordering::SeqCst);
            self.entries.clear();
            self.changed.clear();
            return;
        }
        let key = (project.to_string(), detail.run.run.clone());
        self.entries.insert(key, (read_at, detail));
    }

    /// The runs a flush touches: its events' runs, and every row's, should one come without
    /// its event.
    pub fn touched(batch: &RowBatch) -> Vec<Key> {
        let mut keys: Vec<Key> = Vec::new();
        let mut add = |project: &str, run: &str| keys.push((project.to_string(), run.to_string()));
        batch.events.iter().for_each(|e| add(&e.project, &e.run));
        batch.runs.iter().for_each(|r| add(&r.project, &r.run));
        batch.attributes.iter().for_each(|a| add(&a.project, &a.run));
        batch.tags.iter().for_each(|t| add(&t.project, &t.run));
        batch.float_series.iter().for_each(|s| add(&s.key.project, &s.key.run));
        batch.string_series.iter().for_each(|s| add(&s.key.project, &s.key.run));
        batch.files.iter().for_each(|f| add(&f.project, &f.run));
        batch.lineage.iter().for_each(|l| add(&l.project, &l.run));
        keys.sort_unstable();
        keys.dedup();
        keys
    }

    /// After a flush of `touched` runs has committed (or failed): their details are stale.
    pub fn changed(&self, touched: Vec<Key>) {
        let epoch = self.epoch.fetch_add(1, Ordering::SeqCst) + 1;
        for key in touched {
            self.entries.remove(&key);
            self.changed.insert(key, epoch);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{RunRow, StoredEvent};
    use runstream_schema::EventId;

    fn detail(run: &str, name: &str) -> RunDetail {
        RunDetail {
            run: RunRow {
                run: run.into(),
                name: name.into(),
                experiment: String::new(),
                parent_run: None,
                description: String::new(),
                owner: String::new(),
                state: "running".into(),
                state_message: String::new(),
                created_ms: 0,
                updated_ms: 0,
                finished_ms: None,
                heartbeat_ms: None,
                deleted: false,
            },
            attributes: Vec::new(),
            tags: Vec::new(),
            series: Vec::new(),
            files: Vec::new(),
            lineage: Vec::new(),
        }
    }

    fn touching(run: &str) -> RowBatch {
        RowBatch {
            events: vec![StoredEvent {
                project: "w/p".into(),
                run: run.into(),
                id: EventId(1),
                partition: 0,
                offset: 0,
                seq: 0,
                kind: "run_created".into(),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn a_detail_is_served_until_a_flush_touches_its_run() {
        let c = DetailCache::default();
        let at = c.begin();
        c.put("w/p", at, Arc::new(detail("r1", "one")));
        c.put("w/p", at, Arc::new(detail("r2", "two")));
        assert_eq!(c.get("w/p", "r1").map(|d| d.run.name.clone()), Some("one".into()));
        assert!(c.get("w/other", "r1").is_none());
        c.changed(DetailCache::touched(&touching("r1")));
        assert!(c.get("w/p", "r1").is_none());
        assert_eq!(c.get("w/p", "r2").map(|d| d.run.name.clone()), Some("two".into()));
    }

    #[test]
    fn a_read_overtaken_by_a_flush_is_not_kept() {
        let c = DetailCache::default();
        // A read notes the epoch, a flush of its run commits, then the read puts what it saw.
        let at = c.begin();
        c.changed(DetailCache::touched(&touching("r1")));
        c.put("w/p", at, Arc::new(detail("r1", "maybe old")));
        assert!(c.get("w/p", "r1").is_none());
        // Read again after the flush: served.
        let at = c.begin();
        c.put("w/p", at, Arc::new(detail("r1", "new")));
        assert_eq!(c.get("w/p", "r1").map(|d| d.run.name.clone()), Some("new".into()));
    }

    #[test]
    fn starting_afresh_keeps_no_read_from_before() {
        let c = DetailCache::default();
        let early = c.begin();
        c.changed(DetailCache::touched(&touching("r1")));
        for i in 0..CAPACITY {
            c.put("w/p", c.begin(), Arc::new(detail(&format!("x{i}"), "x")));
        }
        // Full: the next put empties it and forgets the changes, so a read noted before the
        // change is refused by the floor instead.
        c.put("w/p", early, Arc::new(detail("r1", "old")));
        assert!(c.get("w/p", "x0").is_none());
        c.put("w/p", early, Arc::new(detail("r1", "old")));
        assert!(c.get("w/p", "r1").is_none(), "a read from before the change was served");
        let now = c.begin();
        c.put("w/p", now, Arc::new(detail("r1", "new")));
        assert_eq!(c.get("w/p", "r1").map(|d| d.run.name.clone()), Some("new".into()));
    }
}
