//! Domain types of run events and registry events.
//!
//! Fields are public for reading; values are only built by the validating conversions in
//! `convert` (protobuf) and `json` (HTTP), which both end in [`Body::validate`].

use crate::{EventId, ProjectId, RunId, ValidationError, WorkspaceId};

/// Largest step: 2^53 - 1, the largest integer a JavaScript chart can show exactly.
pub const MAX_STEP: i64 = (1 << 53) - 1;
/// Latest time accepted, in ms since the epoch: 2200-01-01. Earlier than the epoch is refused too.
pub const MAX_TIME_MS: i64 = 7_258_118_400_000;
/// Longest attribute, series or file path, in bytes.
pub const MAX_PATH_LEN: usize = 512;
/// Longest string value, string-series line or tag, in bytes.
pub const MAX_STRING_LEN: usize = 65_536;
/// Most points, lines, attributes or tags in one event.
pub const MAX_ITEMS_PER_EVENT: usize = 1_000_000;

/// The key views store a project under: `workspace/project` (ids cannot contain '/').
pub fn project_key(workspace: &WorkspaceId, project: &ProjectId) -> String {
    format!("{workspace}/{project}")
}

/// One run event: the envelope and its body.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: EventId,
    pub workspace: WorkspaceId,
    pub project: ProjectId,
    pub run: RunId,
    pub client_time_ms: i64,
    pub ingest_time_ms: i64,
    pub actor: String,
    pub schema_version: u32,
    pub body: Body,
}

impl Event {
    /// The key views store the project under: `workspace/project` (ids cannot contain '/').
    pub fn project_key(&self) -> String {
        project_key(&self.workspace, &self.project)
    }

    /// The time a point without its own time is stamped with: the client's, else ingest's.
    pub fn default_time_ms(&self) -> i64 {
        if self.client_time_ms > 0 {
            self.client_time_ms
        } else {
            self.ingest_time_ms
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    RunCreated(RunCreated),
    RunState(RunStateChanged),
    AttributesSet(Vec<Attribute>),
    AttributesDeleted(Vec<String>),
    TagsAdded(Vec<String>),
    TagsRemoved(Vec<String>),
    FloatPoints(FloatPoints),
    StringLines(StringLines),
    File(FileRef),
    Lineage(LineageLink),
    RunDeleted,
    RunRestored,
}

impl Body {
    /// The snake_case name of the body, as in the protobuf oneof and the JSON form.
    pub fn kind(&self) -> &'static str {
        match self {
            Body::RunCreated(_) => "run_created",
            Body::RunState(_) => "run_state",
            Body::AttributesSet(_) => "attributes_set",
            Body::AttributesDeleted(_) => "attributes_deleted",
            Body::TagsAdded(_) => "tags_added",
            Body::TagsRemoved(_) => "tags_removed",
            Body::FloatPoints(_) => "float_points",
            Body::StringLines(_) => "string_lines",
            Body::File(_) => "file",
            Body::Lineage(_) => "lineage",
            Body::RunDeleted => "run_deleted",
            Body::RunRestored => "run_restored",
        }
    }

    /// Checks every rule a body must follow. Errors name the field below the body
    /// (`float_points.steps[3]`).
    pub fn validate(&self) -> Result<(), ValidationError> {
        let k = self.kind();
        self.validate_fields().map_err(|e| e.within(k))
    }

    fn validate_fields(&self) -> Result<(), ValidationError> {
        match self {
            Body::RunCreated(c) => {
                check_text("name", &c.name, 1024)?;
                check_text("experiment", &c.experiment, 1024)?;
                check_text("description", &c.description, MAX_STRING_LEN)
            }
            Body::RunState(s) => check_text("message", &s.message, MAX_STRING_LEN),
            Body::AttributesSet(attrs) => {
                check_count("attributes", attrs.len())?;
                for (i, a) in attrs.iter().enumerate() {
                    check_path(&a.path).map_err(|e| e.within(&format!("attributes[{i}].path")))?;
                    a.value
                        .validate()
                        .map_err(|e| e.within(&format!("attributes[{i}].value")))?;
                }
                Ok(())
            }
            Body::AttributesDeleted(paths) => {
                check_count("paths", paths.len())?;
                for (i, p) in paths.iter().enumerate() {
                    check_path(p).map_err(|e| e.within(&format!("paths[{i}]")))?;
                }
                Ok(())
            }
            Body::TagsAdded(tags) | Body::TagsRemoved(tags) => {
                check_count("tags", tags.len())?;
                for (i, t) in tags.iter().enumerate() {
                    if t.is_empty() {
                        return Err(ValidationError::new(format!("tags[{i}]"), "tag is empty"));
                    }
                    check_text(&format!("tags[{i}]"), t, 256)?;
                }
                Ok(())
            }
            Body::FloatPoints(p) => {
                check_path(&p.series).map_err(|e| e.within("series"))?;
                check_columns(
                    p.steps.len(),
                    &[("times_ms", p.times_ms.len()), ("values", p.values.len())],
                )?;
                check_steps_times(&p.steps, &p.times_ms)
            }
            Body::StringLines(l) => {
                check_path(&l.series).map_err(|e| e.within("series"))?;
                check_columns(
                    l.steps.len(),
                    &[("times_ms", l.times_ms.len()), ("lines", l.lines.len())],
                )?;
                check_steps_times(&l.steps, &l.times_ms)?;
                for (i, s) in l.lines.iter().enumerate() {
                    check_text(&format!("lines[{i}]"), s, MAX_STRING_LEN)?;
                }
                Ok(())
            }
            Body::File(f) => {
                check_path(&f.path).map_err(|e| e.within("path"))?;
                if f.blob_key.is_empty() || f.blob_key.len() > 1024 {
                    return Err(ValidationError::new("blob_key", "blob key must be 1 to 1024 bytes"));
                }
                if f.sha256.len() != 64
                    || !f
                        .sha256
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                {
                    return Err(ValidationError::new("sha256", "must be 64 lower-case hex digits"));
                }
                check_text("media_type", &f.media_type, 255)?;
                if let Some(s) = f.step {
                    check_step("step", s)?;
                }
                Ok(())
            }
            Body::Lineage(l) => {
                if l.name.is_empty() {
                    return Err(ValidationError::new("name", "lineage name is empty"));
                }
                check_text("name", &l.name, 1024)?;
                check_text("version", &l.version, 1024)?;
                check_text("digest", &l.digest, 1024)?;
                check_text("uri", &l.uri, 4096)
            }
            Body::RunDeleted | Body::RunRestored => Ok(()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct RunCreated {
    pub name: String,
    pub experiment: String,
    pub parent_run: Option<RunId>,
    pub description: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunState {
    Running,
    Finished,
    Failed,
    Aborted,
    /// A sign of life from a running run; it does not change the state.
    Heartbeat,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Finished => "finished",
            RunState::Failed => "failed",
            RunState::Aborted => "aborted",
            RunState::Heartbeat => "heartbeat",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "running" => RunState::Running,
            "finished" => RunState::Finished,
            "failed" => RunState::Failed,
            "aborted" => RunState::Aborted,
            "heartbeat" => RunState::Heartbeat,
            _ => return None,
        })
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, RunState::Finished | RunState::Failed | RunState::Aborted)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RunStateChanged {
    pub state: RunState,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Attribute {
    pub path: String,
    pub value: Value,
}

/// A typed attribute value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(i64),
    Float(f64),
    Bool(bool),
    String(String),
    /// Milliseconds since the Unix epoch.
    Datetime(i64),
    StringSet(Vec<String>),
}

impl Value {
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Bool(_) => "bool",
            Value::String(_) => "string",
            Value::Datetime(_) => "datetime",
            Value::StringSet(_) => "string_set",
        }
    }

    fn validate(&self) -> Result<(), ValidationError> {
        match self {
            Value::String(s) => check_text("", s, MAX_STRING_LEN),
            Value::Datetime(t) => check_time("", *t),
            Value::StringSet(v) => {
                check_count("", v.len())?;
                for (i, s) in v.iter().enumerate() {
                    check_text(&format!("[{i}]"), s, MAX_STRING_LEN)?;
                }
                Ok(())
            }
            Value::Int(_) | Value::Float(_) | Value::Bool(_) => Ok(()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct FloatPoints {
    pub series: String,
    pub steps: Vec<i64>,
    /// Empty when the client sent no times: every point takes the event's time.
    pub times_ms: Vec<i64>,
    pub values: Vec<f64>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct StringLines {
    pub series: String,
    pub steps: Vec<i64>,
    pub times_ms: Vec<i64>,
    pub lines: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FileRef {
    pub path: String,
    pub blob_key: String,
    pub size: u64,
    pub sha256: String,
    pub media_type: String,
    /// Set for a file series (images logged per step).
    pub step: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    Input,
    Output,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Input => "input",
            Direction::Output => "output",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "input" => Some(Direction::Input),
            "output" => Some(Direction::Output),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ArtifactKind {
    Dataset,
    Model,
    Code,
    Run,
    Other,
}

impl ArtifactKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ArtifactKind::Dataset => "dataset",
            ArtifactKind::Model => "model",
            ArtifactKind::Code => "code",
            ArtifactKind::Run => "run",
            ArtifactKind::Other => "other",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "dataset" => ArtifactKind::Dataset,
            "model" => ArtifactKind::Model,
            "code" => ArtifactKind::Code,
            "run" => ArtifactKind::Run,
            "other" => ArtifactKind::Other,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct LineageLink {
    pub direction: Direction,
    pub kind: ArtifactKind,
    pub name: String,
    pub version: String,
    pub digest: String,
    pub uri: String,
}

/// Registry events: workspaces, projects, tokens and roles.
#[derive(Debug, Clone, PartialEq)]
pub struct RegistryEvent {
    pub id: EventId,
    pub workspace: WorkspaceId,
    pub time_ms: i64,
    pub actor: String,
    pub body: RegistryBody,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RegistryBody {
    ProjectCreated {
        project: ProjectId,
        description: String,
    },
    TokenIssued {
        token_id: String,
        secret_sha256: [u8; 32],
        principal: String,
        grants: Vec<Grant>,
    },
    TokenRevoked {
        token_id: String,
    },
    /// A change to an experiment of `project`; see [`ExperimentChange`].
    Experiment {
        project: ProjectId,
        /// The experiment changed; unused by [`ExperimentChange::Created`], whose experiment takes
        /// the offset of its registry record as id.
        experiment: u64,
        change: ExperimentChange,
    },
}

/// What happens to an experiment. Experiments are named groups of a project's runs with tags
/// and a lifecycle, as MLflow's clients expect them; a run belongs to one by its name.
#[derive(Debug, Clone, PartialEq)]
pub enum ExperimentChange {
    Created {
        name: String,
        artifact_location: String,
        tags: Vec<(String, String)>,
    },
    Renamed(String),
    Deleted,
    Restored,
    TagSet(String, String),
    TagDeleted(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Viewer,
    Writer,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Writer => "writer",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "viewer" => Role::Viewer,
            "writer" => Role::Writer,
            "admin" => Role::Admin,
            _ => return None,
        })
    }
}

/// A role on one project, or on every project of the workspace (`project == None`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Grant {
    pub project: Option<ProjectId>,
    pub role: Role,
}

// ---- rule helpers, shared by the conversions ----

pub(crate) fn check_text(field: &str, s: &str, max: usize) -> Result<(), ValidationError> {
    if s.len() > max {
        return Err(ValidationError::new(
            field,
            format!("{} bytes long, at most {max} are allowed", s.len()),
        ));
    }
    if s.contains('\0') {
        return Err(ValidationError::new(field, "must not contain NUL characters"));
    }
    Ok(())
}

/// A slash-separated path: no empty segment, no control characters.
pub fn check_path(p: &str) -> Result<(), ValidationError> {
    if p.is_empty() {
        return Err(ValidationError::new("", "path is empty"));
    }
    if p.len() > MAX_PATH_LEN {
        return Err(ValidationError::new(
            "",
            format!("path is {} bytes long, at most {MAX_PATH_LEN} are allowed", p.len()),
        ));
    }
    if let Some(c) = p.chars().find(|c| c.is_control()) {
        return Err(ValidationError::new(
            "",
            format!("path {p:?} holds the control character {c:?}"),
        ));
    }
    if p.split('/').any(|seg| seg.is_empty()) {
        return Err(ValidationError::new("", format!("path {p:?} has an empty segment")));
    }
    Ok(())
}

fn check_count(field: &str, n: usize) -> Result<(), ValidationError> {
    if n == 0 {
        return Err(ValidationError::new(field, "is empty"));
    }
    if n > MAX_ITEMS_PER_EVENT {
        return Err(ValidationError::new(
            field,
            format!("holds {n} items, at most {MAX_ITEMS_PER_EVENT} per event"),
        ));
    }
    Ok(())
}

fn check_columns(steps: usize, others: &[(&str, usize)]) -> Result<(), ValidationError> {
    check_count("steps", steps)?;
    for (name, n) in others {
        // times_ms may be left out altogether: the points then take the event's time.
        if *n != steps && !(*name == "times_ms" && *n == 0) {
            return Err(ValidationError::new(
                *name,
                format!("has {n} items but steps has {steps}"),
            ));
        }
    }
    Ok(())
}

pub(crate) fn check_step(field: &str, s: i64) -> Result<(), ValidationError> {
    if !(0..=MAX_STEP).contains(&s) {
        return Err(ValidationError::new(
            field,
            format!("step {s} is outside 0..={MAX_STEP}"),
        ));
    }
    Ok(())
}

pub(crate) fn check_time(field: &str, t: i64) -> Result<(), ValidationError> {
    if !(0..=MAX_TIME_MS).contains(&t) {
        return Err(ValidationError::new(
            field,
            format!("time {t} ms is outside 1970-01-01..2200-01-01 (0..={MAX_TIME_MS} ms since the epoch)"),
        ));
    }
    Ok(())
}

fn check_steps_times(steps: &[i64], times: &[i64]) -> Result<(), ValidationError> {
    // Name the field only for the first bad value: formatting it per point would cost more than
    // the check itself on batches of thousands of points.
    if let Some(i) = steps.iter().position(|s| !(0..=MAX_STEP).contains(s)) {
        check_step(&format!("steps[{i}]"), steps[i])?;
    }
    if let Some(i) = times.iter().position(|t| !(0..=MAX_TIME_MS).contains(t)) {
        check_time(&format!("times_ms[{i}]"), times[i])?;
    }
    Ok(())
}

/// Checks the envelope fields a client sets.
pub fn check_client_time(t: i64) -> Result<(), ValidationError> {
    if t == 0 {
        return Ok(());
    }
    check_time("client_time_ms", t)
}
