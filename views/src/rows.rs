//! Row types: what the fold produces and what reads return.

use runstream_schema::{ArtifactKind, Direction, EventId, RunState, Value};
use serde::Serialize;

/// Everything one flush writes, and the checkpoint it reaches.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct RowBatch {
    pub runs: Vec<RunPatch>,
    pub attributes: Vec<AttrRow>,
    pub tags: Vec<TagRow>,
    pub float_series: Vec<FloatSeriesRows>,
    pub string_series: Vec<StringSeriesRows>,
    pub files: Vec<FileRow>,
    pub lineage: Vec<LineageRow>,
    pub events: Vec<StoredEvent>,
    /// Next offset per partition once this batch is applied.
    pub checkpoint: Vec<(u32, u64)>,
}

impl RowBatch {
    pub fn point_count(&self) -> usize {
        self.float_series.iter().map(|s| s.steps.len()).sum::<usize>()
            + self.string_series.iter().map(|s| s.steps.len()).sum::<usize>()
    }
}

/// A change to a run's row. `None` leaves a column as it is.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RunPatch {
    pub project: String,
    pub run: String,
    pub created: Option<RunCreatedRow>,
    pub state: Option<(RunState, String, i64)>,
    pub heartbeat_ms: Option<i64>,
    pub deleted: Option<bool>,
    /// Time of the latest event folded into this patch.
    pub updated_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct RunCreatedRow {
    pub name: String,
    pub experiment: String,
    pub parent_run: Option<String>,
    pub description: String,
    pub owner: String,
    pub created_ms: i64,
}

/// `value: None` deletes the attribute.
#[derive(Debug, Clone, PartialEq)]
pub struct AttrRow {
    pub project: String,
    pub run: String,
    pub path: String,
    pub value: Option<Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TagRow {
    pub project: String,
    pub run: String,
    pub tag: String,
    pub present: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesKey {
    pub project: String,
    pub run: String,
    pub path: String,
}

/// Points of one series in (step, time) order, one per (step, time) (the fold keeps the last
/// write of each).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FloatSeriesRows {
    pub key: SeriesKey,
    pub steps: Vec<i64>,
    pub times_ms: Vec<i64>,
    pub values: Vec<f64>,
}

impl FloatSeriesRows {
    /// The points in `range`, borrowed as block columns.
    pub fn slices(&self, range: std::ops::Range<usize>) -> crate::block::Slices<'_> {
        crate::block::Slices {
            steps: &self.steps[range.clone()],
            times: &self.times_ms[range.clone()],
            values: &self.values[range],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct StringSeriesRows {
    pub key: SeriesKey,
    pub steps: Vec<i64>,
    pub times_ms: Vec<i64>,
    pub lines: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FileRow {
    #[serde(skip)]
    pub project: String,
    #[serde(skip)]
    pub run: String,
    pub path: String,
    pub step: Option<i64>,
    pub blob_key: String,
    pub size: u64,
    pub sha256: String,
    pub media_type: String,
    pub time_ms: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LineageRow {
    pub project: String,
    pub run: String,
    pub direction: Direction,
    pub kind: ArtifactKind,
    pub name: String,
    pub version: String,
    pub digest: String,
    pub uri: String,
    pub time_ms: i64,
}

/// What lineage links are asked for: those of a run, or those naming an artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineageOf {
    Run(String),
    Artifact {
        kind: ArtifactKind,
        name: String,
        version: Option<String>,
    },
}

/// One event as the history view indexes it: its id, and where it sits in the log (record
/// position and index within the record). The event itself is read back from the log, the
/// system of record, so the views never hold a second copy of every point.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub project: String,
    pub run: String,
    pub id: EventId,
    pub partition: u32,
    pub offset: u64,
    pub seq: u32,
    pub kind: String,
}

// ---- read results ----

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunRow {
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
    pub deleted: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RunDetail {
    pub run: RunRow,
    pub attributes: Vec<(String, Value)>,
    pub tags: Vec<String>,
    pub series: Vec<SeriesSummary>,
    pub files: Vec<FileRow>,
    pub lineage: Vec<LineageRow>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeriesSummary {
    pub path: String,
    /// `float` or `string`.
    pub kind: String,
    pub count: u64,
    pub first_step: Option<i64>,
    pub last_step: Option<i64>,
    #[serde(skip)]
    pub last_value: Option<f64>,
    #[serde(skip)]
    pub min: Option<f64>,
    #[serde(skip)]
    pub max: Option<f64>,
    #[serde(skip)]
    pub mean: Option<f64>,
    pub last_time_ms: Option<i64>,
}

/// One float point. A series holds at most one point per (step, time); a step may hold several
/// at different times (a value logged again at a step), kept in time order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PointRow {
    pub step: i64,
    pub time_ms: i64,
    pub value: f64,
}

/// Where a read of float points starts: the points at `step` from `time_ms` on, then the later
/// steps. A page that ends inside a step resumes at the step and time of the first point it
/// left out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PointFrom {
    pub step: i64,
    pub time_ms: i64,
}

impl PointFrom {
    /// Every point of `step` and on.
    pub const fn step(step: i64) -> Self {
        PointFrom {
            step,
            time_ms: i64::MIN,
        }
    }

    /// Whether a point at (`step`, `time_ms`) is at or after this start.
    pub fn admits(&self, step: i64, time_ms: i64) -> bool {
        (step, time_ms) >= (self.step, self.time_ms)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LineRow {
    pub step: i64,
    pub time_ms: i64,
    pub line: String,
}

/// A summary of the points whose steps fall in `from_step..=to_step`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    pub from_step: i64,
    pub to_step: i64,
    pub count: u64,
    /// Over the values that are not NaN; `None` when all are NaN.
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub mean: Option<f64>,
    pub last_step: i64,
    pub last_value: f64,
    pub last_time_ms: i64,
}
