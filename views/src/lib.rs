//! Views: the queryable state folded from the log.
//!
//! The projector hands a [`RowBatch`] to [`ViewStore::apply`], which writes its rows and the log
//! positions they reach in one transaction: after a crash the store holds either the whole batch
//! and its checkpoint or neither, so replaying from the stored checkpoint duplicates nothing.
//! Every row is keyed (run, path, step, ...) with last-writer-wins, and every event id is recorded,
//! so applying an event twice changes nothing.
//!
//! Series keep raw points plus rollups (count, min, max, sum, last) per step bucket at several
//! widths ([`rollup::LEVELS`]), so a chart of any length reads a bounded number of rows.

pub mod block;
mod ch;
pub mod registry;
pub mod rollup;
mod rows;
pub mod search;
pub mod sql;
mod sqlite;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

pub use ch::{ClickHouseUrl, ClickHouseViews, generations};
pub use rows::*;
use search::{Catalog, Groups, RunGrouping, RunSearch, SearchPage};
pub use sqlite::SqliteViews;

use runstream_schema::EventId;

#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    #[error("view storage failed: {0}")]
    Storage(String),
    #[error("views url {0:?} is not supported (expected sqlite://PATH or clickhouse://HOST:PORT/DATABASE)")]
    UnsupportedUrl(String),
    #[error("views schema version {found} is newer than this build's {supported}")]
    SchemaTooNew { found: i64, supported: i64 },
    #[error("corrupt view row: {0}")]
    Corrupt(String),
    /// An analytics query the caller must change: refused, failed or out of bounds.
    #[error("{0}")]
    Query(#[from] sql::SqlRefusal),
}

impl From<rusqlite::Error> for ViewError {
    fn from(e: rusqlite::Error) -> Self {
        ViewError::Storage(e.to_string())
    }
}

/// Next offset to read per partition.
pub type Checkpoint = BTreeMap<u32, u64>;

#[async_trait::async_trait]
pub trait ViewStore: Send + Sync + 'static {
    // ---- write side (the projector) ----

    /// The positions the views have applied: the next offset to read per partition.
    async fn checkpoint(&self) -> Result<Checkpoint, ViewError>;

    /// Of the given event ids, those already applied.
    async fn known_events(&self, ids: Vec<EventId>) -> Result<HashSet<EventId>, ViewError>;

    /// Writes the rows of a batch and its checkpoint atomically.
    async fn apply(&self, batch: RowBatch) -> Result<(), ViewError>;

    // ---- read side (ingest's run check and the query service) ----

    async fn run_exists(&self, project: &str, run: &str) -> Result<bool, ViewError>;

    /// One page of the runs a search selects, in its order.
    async fn search_runs(&self, search: RunSearch) -> Result<SearchPage, ViewError>;

    /// One page of a search with each of its runs read in full ([`ViewStore::get_runs`]), from
    /// one snapshot where the store can (MLflow's search answers whole runs). Shared, as a
    /// store may keep them to answer again.
    async fn search_run_details(&self, search: RunSearch) -> Result<(SearchPage, Vec<Arc<RunDetail>>), ViewError> {
        let project = search.project.clone();
        let page = self.search_runs(search).await?;
        let ids: Vec<String> = page.runs.iter().map(|f| f.run.run.clone()).collect();
        let details = self.get_runs(&project, &ids).await?;
        Ok((page, details.into_iter().map(Arc::new).collect()))
    }

    /// The runs a search selects, counted and summarised per value of a field.
    async fn group_runs(&self, grouping: RunGrouping) -> Result<Groups, ViewError>;

    /// The attribute and metric paths of a project.
    async fn catalog(&self, project: &str) -> Result<Catalog, ViewError>;

    /// The lineage links of a run, or those naming an artifact (at one version when given), in
    /// (run, direction, kind, name, version) order, at most `limit`.
    async fn lineage(&self, project: &str, of: &LineageOf, limit: usize) -> Result<Vec<LineageRow>, ViewError>;

    async fn get_run(&self, project: &str, run: &str) -> Result<Option<RunDetail>, ViewError>;

    /// Several runs at once (a search's page), in the order asked; runs that do not exist are
    /// left out. Stores that can read them together override this.
    async fn get_runs(&self, project: &str, runs: &[String]) -> Result<Vec<RunDetail>, ViewError> {
        let mut out = Vec::with_capacity(runs.len());
        for run in runs {
            if let Some(d) = self.get_run(project, run).await? {
                out.push(d);
            }
        }
        Ok(out)
    }

    /// Raw float points of a series from `from` (a step, and a time within it) to the step `to`,
    /// in (step, time) order.
    async fn read_points(
        &self,
        key: &SeriesKey,
        from: PointFrom,
        to: i64,
        limit: usize,
    ) -> Result<Vec<PointRow>, ViewError>;

    async fn read_lines(&self, key: &SeriesKey, from: i64, to: i64, limit: usize) -> Result<Vec<LineRow>, ViewError>;

    /// The series summarised into at most `buckets` step buckets over `from..=to`, read from
    /// the rollups.
    async fn read_buckets(&self, key: &SeriesKey, from: i64, to: i64, buckets: usize)
    -> Result<Vec<Bucket>, ViewError>;

    async fn get_file(
        &self,
        project: &str,
        run: &str,
        path: &str,
        step: Option<i64>,
    ) -> Result<Option<FileRow>, ViewError>;

    /// Events of a run in log order, after `after` (a (partition, offset, seq) keyset).
    async fn run_events(
        &self,
        project: &str,
        run: &str,
        after: Option<(u32, u64, u32)>,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, ViewError>;

    /// Runs an analytics query over the documented views ([`sql`]), confined to its projects.
    async fn sql(&self, query: sql::SqlQuery) -> Result<sql::SqlAnswer, ViewError>;

    /// A canonical text dump of every view, for comparing two stores (rebuild checks).
    async fn dump(&self) -> Result<String, ViewError>;
}

/// Opens views by URL: `sqlite://PATH` (the embedded default) or
/// `clickhouse://[USER[:PASSWORD]@]HOST:HTTP_PORT[/DATABASE][?generation=NAME]`.
pub async fn open(url: &str) -> Result<Arc<dyn ViewStore>, ViewError> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        return Ok(Arc::new(SqliteViews::open(path).await?));
    }
    if url.starts_with("clickhouse://") {
        return Ok(Arc::new(ClickHouseViews::open(url).await?));
    }
    Err(ViewError::UnsupportedUrl(url.to_string()))
}
