//! Conversions between the private protobuf types and the domain types. Decoding validates:
//! a record that decodes is a record the projector can fold.

use prost::Message;

use crate::event::*;
use crate::wire;
use crate::{DecodeError, EventId, ProjectId, RunId, ValidationError, WorkspaceId};

/// Encodes run events as one `EventBatch`, the payload of one log record.
pub fn encode_batch<'a>(events: impl IntoIterator<Item = &'a Event>) -> Vec<u8> {
    let batch = wire::EventBatch {
        events: events.into_iter().map(to_wire).collect(),
    };
    batch.encode_to_vec()
}

/// Decodes and validates a log record written by [`encode_batch`].
pub fn decode_batch(bytes: &[u8]) -> Result<Vec<Event>, DecodeError> {
    let batch = wire::EventBatch::decode(bytes)?;
    batch
        .events
        .into_iter()
        .enumerate()
        .map(|(i, e)| from_wire(e).map_err(|err| DecodeError::Invalid(err.within(&format!("events[{i}]")))))
        .collect()
}

/// An `EventBatch` seen only as the encoded bytes of each event: field 1 is length-delimited
/// whether read as a message or as bytes, so this decodes any batch by slicing, without copying.
#[derive(Clone, PartialEq, prost::Message)]
struct SplitBatch {
    #[prost(bytes = "bytes", repeated, tag = "1")]
    events: Vec<prost::bytes::Bytes>,
}

/// One event exactly as the client encoded it, so that a log record can carry the client's
/// bytes instead of a re-encoding of them (see [`encode_batch_reusing`]).
#[derive(Debug, Clone)]
pub struct ClientBytes(prost::bytes::Bytes);

/// Encodes events as one `EventBatch` that decodes to exactly what [`encode_batch`] would give,
/// reusing each event's bytes from the client's batch and appending the envelope fields the
/// server completed. In protobuf the last occurrence of a singular field wins, so the appended
/// fields are the ones a reader sees; re-encoding every point of a large batch is what this saves.
pub fn encode_batch_reusing(events: &[(&Event, &ClientBytes)]) -> Vec<u8> {
    let patches: Vec<Vec<u8>> = events
        .iter()
        .map(|(e, _)| {
            wire::Event {
                workspace: e.workspace.to_string(),
                project: e.project.to_string(),
                ingest_time_ms: e.ingest_time_ms,
                actor: e.actor.clone(),
                schema_version: e.schema_version,
                ..Default::default()
            }
            .encode_to_vec()
        })
        .collect();
    let total: usize = events
        .iter()
        .zip(&patches)
        .map(|((_, raw), patch)| {
            let len = raw.0.len() + patch.len();
            1 + prost::encoding::encoded_len_varint(len as u64) + len
        })
        .sum();
    let mut out = Vec::with_capacity(total);
    for ((_, raw), patch) in events.iter().zip(&patches) {
        prost::encoding::encode_key(1, prost::encoding::WireType::LengthDelimited, &mut out);
        prost::encoding::encode_varint((raw.0.len() + patch.len()) as u64, &mut out);
        out.extend_from_slice(&raw.0);
        out.extend_from_slice(patch);
    }
    out
}

/// A protobuf `EventBatch` as a client sent it, before the server has filled in the envelope.
pub struct WireBatch {
    batch: wire::EventBatch,
    raw: Vec<prost::bytes::Bytes>,
}

impl WireBatch {
    pub fn decode(bytes: prost::bytes::Bytes) -> Result<Self, DecodeError> {
        let batch = wire::EventBatch::decode(bytes.clone())?;
        let raw = SplitBatch::decode(bytes)?.events;
        debug_assert_eq!(raw.len(), batch.events.len());
        Ok(Self { batch, raw })
    }

    pub fn len(&self) -> usize {
        self.batch.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.batch.events.is_empty()
    }

    /// Validates each event, completing its envelope from the request's context, and keeps the
    /// client's bytes of each. Envelope fields that belong to the server must be left unset.
    pub fn into_events(self, ctx: &crate::json::IngestContext) -> Result<Vec<(Event, ClientBytes)>, ValidationError> {
        self.batch
            .events
            .into_iter()
            .zip(self.raw)
            .enumerate()
            .map(|(i, (mut e, raw))| {
                let at = format!("events[{i}]");
                if e.ingest_time_ms != 0 {
                    return Err(ValidationError::new(
                        format!("{at}.ingest_time_ms"),
                        "is set by the server",
                    ));
                }
                if !e.actor.is_empty() {
                    return Err(ValidationError::new(format!("{at}.actor"), "is set by the server"));
                }
                for (name, v, want) in [
                    ("workspace", &e.workspace, ctx.workspace.as_str()),
                    ("project", &e.project, ctx.project.as_str()),
                ] {
                    if !v.is_empty() && v != want {
                        return Err(ValidationError::new(
                            format!("{at}.{name}"),
                            format!("{v:?} differs from the request's {name} {want:?}"),
                        ));
                    }
                }
                if e.schema_version > crate::SCHEMA_VERSION {
                    return Err(ValidationError::new(
                        format!("{at}.schema_version"),
                        format!(
                            "{} is newer than this server's {}",
                            e.schema_version,
                            crate::SCHEMA_VERSION
                        ),
                    ));
                }
                check_client_time(e.client_time_ms).map_err(|err| err.within(&at))?;
                e.workspace = ctx.workspace.to_string();
                e.project = ctx.project.to_string();
                e.ingest_time_ms = ctx.ingest_time_ms;
                e.actor = ctx.actor.clone();
                e.schema_version = crate::SCHEMA_VERSION;
                Ok((from_wire(e).map_err(|err| err.within(&at))?, ClientBytes(raw)))
            })
            .collect()
    }
}

fn to_wire(e: &Event) -> wire::Event {
    use wire::event::Body as B;
    let body = match &e.body {
        Body::RunCreated(c) => B::RunCreated(wire::RunCreated {
            name: c.name.clone(),
            experiment: c.experiment.clone(),
            parent_run: c.parent_run.as_ref().map(|r| r.to_string()).unwrap_or_default(),
            description: c.description.clone(),
        }),
        Body::RunState(s) => B::RunState(wire::RunStateChanged {
            state: match s.state {
                RunState::Running => wire::RunState::Running,
                RunState::Finished => wire::RunState::Finished,
                RunState::Failed => wire::RunState::Failed,
                RunState::Aborted => wire::RunState::Aborted,
                RunState::Heartbeat => wire::RunState::Heartbeat,
            } as i32,
            message: s.message.clone(),
        }),
        Body::AttributesSet(attrs) => B::AttributesSet(wire::AttributesSet {
            attributes: attrs
                .iter()
                .map(|a| wire::Attribute {
                    path: a.path.clone(),
                    value: Some(value_to_wire(&a.value)),
                })
                .collect(),
        }),
        Body::AttributesDeleted(p) => B::AttributesDeleted(wire::AttributesDeleted { paths: p.clone() }),
        Body::TagsAdded(t) => B::TagsAdded(wire::TagsAdded { tags: t.clone() }),
        Body::TagsRemoved(t) => B::TagsRemoved(wire::TagsRemoved { tags: t.clone() }),
        Body::FloatPoints(p) => B::FloatPoints(wire::FloatPoints {
            series: p.series.clone(),
            steps: p.steps.clone(),
            times_ms: p.times_ms.clone(),
            values: p.values.clone(),
        }),
        Body::StringLines(l) => B::StringLines(wire::StringLines {
            series: l.series.clone(),
            steps: l.steps.clone(),
            times_ms: l.times_ms.clone(),
            lines: l.lines.clone(),
        }),
        Body::File(f) => B::File(wire::FileRef {
            path: f.path.clone(),
            blob_key: f.blob_key.clone(),
            size: f.size,
            sha256: f.sha256.clone(),
            media_type: f.media_type.clone(),
            has_step: f.step.is_some(),
            step: f.step.unwrap_or(0),
        }),
        Body::Lineage(l) => B::Lineage(wire::LineageLink {
            direction: match l.direction {
                Direction::Input => wire::LineageDirection::Input,
                Direction::Output => wire::LineageDirection::Output,
            } as i32,
            kind: kind_to_wire(l.kind) as i32,
            name: l.name.clone(),
            version: l.version.clone(),
            digest: l.digest.clone(),
            uri: l.uri.clone(),
        }),
        Body::RunDeleted => B::RunDeleted(wire::RunDeleted {}),
        Body::RunRestored => B::RunRestored(wire::RunRestored {}),
    };
    wire::Event {
        id: e.id.to_bytes().to_vec(),
        workspace: e.workspace.to_string(),
        project: e.project.to_string(),
        run: e.run.to_string(),
        client_time_ms: e.client_time_ms,
        ingest_time_ms: e.ingest_time_ms,
        actor: e.actor.clone(),
        schema_version: e.schema_version,
        body: Some(body),
    }
}

fn kind_to_wire(k: ArtifactKind) -> wire::ArtifactKind {
    match k {
        ArtifactKind::Dataset => wire::ArtifactKind::Dataset,
        ArtifactKind::Model => wire::ArtifactKind::Model,
        ArtifactKind::Code => wire::ArtifactKind::Code,
        ArtifactKind::Run => wire::ArtifactKind::Run,
        ArtifactKind::Other => wire::ArtifactKind::Other,
    }
}

fn value_to_wire(v: &Value) -> wire::Value {
    use wire::value::Kind as K;
    let kind = match v {
        Value::Int(i) => K::Int(*i),
        Value::Float(f) => K::Float(*f),
        Value::Bool(b) => K::Bool(*b),
        Value::String(s) => K::String(s.clone()),
        Value::Datetime(t) => K::DatetimeMs(*t),
        Value::StringSet(s) => K::StringSet(wire::StringSet { values: s.clone() }),
    };
    wire::Value { kind: Some(kind) }
}

fn field<T>(name: &str, r: Result<T, ValidationError>) -> Result<T, ValidationError> {
    r.map_err(|e| e.within(name))
}

fn from_wire(e: wire::Event) -> Result<Event, ValidationError> {
    use wire::event::Body as B;
    let id = field("id", EventId::from_bytes(&e.id))?;
    let workspace = field("workspace", WorkspaceId::new(e.workspace))?;
    let project = field("project", ProjectId::new(e.project))?;
    let run = field("run", RunId::new(e.run))?;
    let body = match e.body {
        None => return Err(ValidationError::new("body", "event has no body")),
        Some(B::RunCreated(c)) => Body::RunCreated(RunCreated {
            name: c.name,
            experiment: c.experiment,
            parent_run: if c.parent_run.is_empty() {
                None
            } else {
                Some(field("run_created.parent_run", RunId::new(c.parent_run))?)
            },
            description: c.description,
        }),
        Some(B::RunState(s)) => Body::RunState(RunStateChanged {
            state: match wire::RunState::try_from(s.state) {
                Ok(wire::RunState::Running) => RunState::Running,
                Ok(wire::RunState::Finished) => RunState::Finished,
                Ok(wire::RunState::Failed) => RunState::Failed,
                Ok(wire::RunState::Aborted) => RunState::Aborted,
                Ok(wire::RunState::Heartbeat) => RunState::Heartbeat,
                _ => {
                    return Err(ValidationError::new(
                        "run_state.state",
                        format!("unknown state {}", s.state),
                    ));
                }
            },
            message: s.message,
        }),
        Some(B::AttributesSet(a)) => Body::AttributesSet(
            a.attributes
                .into_iter()
                .enumerate()
                .map(|(i, a)| {
                    let value = a.value.and_then(|v| v.kind).ok_or_else(|| {
                        ValidationError::new(format!("attributes_set.attributes[{i}].value"), "value is missing")
                    })?;
                    Ok(Attribute {
                        path: a.path,
                        value: value_from_wire(value),
                    })
                })
                .collect::<Result<_, ValidationError>>()?,
        ),
        Some(B::AttributesDeleted(d)) => Body::AttributesDeleted(d.paths),
        Some(B::TagsAdded(t)) => Body::TagsAdded(t.tags),
        Some(B::TagsRemoved(t)) => Body::TagsRemoved(t.tags),
        Some(B::FloatPoints(p)) => Body::FloatPoints(FloatPoints {
            series: p.series,
            steps: p.steps,
            times_ms: p.times_ms,
            values: p.values,
        }),
        Some(B::StringLines(l)) => Body::StringLines(StringLines {
            series: l.series,
            steps: l.steps,
            times_ms: l.times_ms,
            lines: l.lines,
        }),
        Some(B::File(f)) => Body::File(FileRef {
            path: f.path,
            blob_key: f.blob_key,
            size: f.size,
            sha256: f.sha256,
            media_type: f.media_type,
            step: f.has_step.then_some(f.step),
        }),
        Some(B::Lineage(l)) => Body::Lineage(LineageLink {
            direction: match wire::LineageDirection::try_from(l.direction) {
                Ok(wire::LineageDirection::Input) => Direction::Input,
                Ok(wire::LineageDirection::Output) => Direction::Output,
                _ => {
                    return Err(ValidationError::new(
                        "lineage.direction",
                        format!("unknown direction {}", l.direction),
                    ));
                }
            },
            kind: match wire::ArtifactKind::try_from(l.kind) {
                Ok(wire::ArtifactKind::Dataset) => ArtifactKind::Dataset,
                Ok(wire::ArtifactKind::Model) => ArtifactKind::Model,
                Ok(wire::ArtifactKind::Code) => ArtifactKind::Code,
                Ok(wire::ArtifactKind::Run) => ArtifactKind::Run,
                Ok(wire::ArtifactKind::Other) => ArtifactKind::Other,
                _ => return Err(ValidationError::new("lineage.kind", format!("unknown kind {}", l.kind))),
            },
            name: l.name,
            version: l.version,
            digest: l.digest,
            uri: l.uri,
        }),
        Some(B::RunDeleted(_)) => Body::RunDeleted,
        Some(B::RunRestored(_)) => Body::RunRestored,
        Some(B::ProjectCreated(_) | B::TokenIssued(_) | B::TokenRevoked(_) | B::Experiment(_)) => {
            return Err(ValidationError::new("body", "registry events are not run events"));
        }
    };
    body.validate()?;
    Ok(Event {
        id,
        workspace,
        project,
        run,
        client_time_ms: e.client_time_ms,
        ingest_time_ms: e.ingest_time_ms,
        actor: e.actor,
        schema_version: e.schema_version,
        body,
    })
}

fn value_from_wire(k: wire::value::Kind) -> Value {
    use wire::value::Kind as K;
    match k {
        K::Int(i) => Value::Int(i),
        K::Float(f) => Value::Float(f),
        K::Bool(b) => Value::Bool(b),
        K::String(s) => Value::String(s),
        K::DatetimeMs(t) => Value::Datetime(t),
        K::StringSet(s) => Value::StringSet(s.values),
    }
}

// ---- registry events ----

/// Encodes registry events as one log record.
pub fn encode_registry(events: &[RegistryEvent]) -> Vec<u8> {
    use wire::event::Body as B;
    let events = events
        .iter()
        .map(|e| {
            let (project, body) = match &e.body {
                RegistryBody::ProjectCreated { project, description } => (
                    project.to_string(),
                    B::ProjectCreated(wire::ProjectCreated {
                        description: description.clone(),
                    }),
                ),
                RegistryBody::TokenIssued {
                    token_id,
                    secret_sha256,
                    principal,
                    grants,
                } => (
                    String::new(),
                    B::TokenIssued(wire::TokenIssued {
                        token_id: token_id.clone(),
                        secret_sha256: secret_sha256.to_vec(),
                        principal: principal.clone(),
                        grants: grants
                            .iter()
                            .map(|g| wire::Grant {
                                project: g.project.as_ref().map_or_else(|| "*".to_string(), |p| p.to_string()),
                                role: match g.role {
                                    Role::Viewer => wire::Role::Viewer,
                                    Role::Writer => wire::Role::Writer,
                                    Role::Admin => wire::Role::Admin,
                                } as i32,
                            })
                            .collect(),
                    }),
                ),
                RegistryBody::TokenRevoked { token_id } => (
                    String::new(),
                    B::TokenRevoked(wire::TokenRevoked {
                        token_id: token_id.clone(),
                    }),
                ),
                RegistryBody::Experiment {
                    project,
                    experiment,
                    change,
                } => (
                    project.to_string(),
                    B::Experiment(experiment_to_wire(*experiment, change)),
                ),
            };
            wire::Event {
                id: e.id.to_bytes().to_vec(),
                workspace: e.workspace.to_string(),
                project,
                run: String::new(),
                client_time_ms: e.time_ms,
                ingest_time_ms: e.time_ms,
                actor: e.actor.clone(),
                schema_version: crate::SCHEMA_VERSION,
                body: Some(body),
            }
        })
        .collect();
    wire::EventBatch { events }.encode_to_vec()
}

fn experiment_to_wire(id: u64, change: &ExperimentChange) -> wire::ExperimentChanged {
    use wire::experiment_changed::Change as C;
    let tag = |k: &String, v: &String| wire::ExperimentTag {
        key: k.clone(),
        value: v.clone(),
    };
    let change = match change {
        ExperimentChange::Created {
            name,
            artifact_location,
            tags,
        } => C::Created(wire::ExperimentCreated {
            name: name.clone(),
            artifact_location: artifact_location.clone(),
            tags: tags.iter().map(|(k, v)| tag(k, v)).collect(),
        }),
        ExperimentChange::Renamed(name) => C::Renamed(name.clone()),
        ExperimentChange::Deleted => C::Deleted(true),
        ExperimentChange::Restored => C::Deleted(false),
        ExperimentChange::TagSet(k, v) => C::TagSet(tag(k, v)),
        ExperimentChange::TagDeleted(k) => C::TagDeleted(k.clone()),
    };
    wire::ExperimentChanged {
        experiment_id: id,
        change: Some(change),
    }
}

fn experiment_from_wire(change: Option<wire::experiment_changed::Change>) -> Result<ExperimentChange, ValidationError> {
    use wire::experiment_changed::Change as C;
    Ok(match change {
        Some(C::Created(c)) => ExperimentChange::Created {
            name: c.name,
            artifact_location: c.artifact_location,
            tags: c.tags.into_iter().map(|t| (t.key, t.value)).collect(),
        },
        Some(C::Renamed(name)) => ExperimentChange::Renamed(name),
        Some(C::Deleted(true)) => ExperimentChange::Deleted,
        Some(C::Deleted(false)) => ExperimentChange::Restored,
        Some(C::TagSet(t)) => ExperimentChange::TagSet(t.key, t.value),
        Some(C::TagDeleted(k)) => ExperimentChange::TagDeleted(k),
        None => return Err(ValidationError::new("experiment.change", "no change")),
    })
}

/// Decodes a registry log record.
pub fn decode_registry(bytes: &[u8]) -> Result<Vec<RegistryEvent>, DecodeError> {
    use wire::event::Body as B;
    let batch = wire::EventBatch::decode(bytes)?;
    let mut out = Vec::with_capacity(batch.events.len());
    for e in batch.events {
        let id = field("id", EventId::from_bytes(&e.id))?;
        let workspace = field("workspace", WorkspaceId::new(e.workspace))?;
        let body = match e.body {
            Some(B::ProjectCreated(p)) => RegistryBody::ProjectCreated {
                project: field("project", ProjectId::new(e.project))?,
                description: p.description,
            },
            Some(B::TokenIssued(t)) => RegistryBody::TokenIssued {
                token_id: t.token_id,
                secret_sha256: t
                    .secret_sha256
                    .as_slice()
                    .try_into()
                    .map_err(|_| ValidationError::new("token_issued.secret_sha256", "must be 32 bytes"))?,
                principal: t.principal,
                grants: t
                    .grants
                    .into_iter()
                    .map(|g| {
                        let project = if g.project == "*" {
                            None
                        } else {
                            Some(field("grants.project", ProjectId::new(g.project))?)
                        };
                        let role = match wire::Role::try_from(g.role) {
                            Ok(wire::Role::Viewer) => Role::Viewer,
                            Ok(wire::Role::Writer) => Role::Writer,
                            Ok(wire::Role::Admin) => Role::Admin,
                            _ => return Err(ValidationError::new("grants.role", format!("unknown role {}", g.role))),
                        };
                        Ok(Grant { project, role })
                    })
                    .collect::<Result<_, ValidationError>>()?,
            },
            Some(B::TokenRevoked(t)) => RegistryBody::TokenRevoked { token_id: t.token_id },
            Some(B::Experiment(x)) => RegistryBody::Experiment {
                project: field("project", ProjectId::new(e.project))?,
                experiment: x.experiment_id,
                change: experiment_from_wire(x.change)?,
            },
            _ => return Err(ValidationError::new("body", "not a registry event").into()),
        };
        out.push(RegistryEvent {
            id,
            workspace,
            time_ms: e.client_time_ms,
            actor: e.actor,
            body,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(body: Body) -> Event {
        Event {
            id: EventId::random(),
            workspace: WorkspaceId::new("ws").unwrap(),
            project: ProjectId::new("p").unwrap(),
            run: RunId::new("r1").unwrap(),
            client_time_ms: 1_700_000_000_000,
            ingest_time_ms: 1_700_000_000_001,
            actor: "alice".into(),
            schema_version: crate::SCHEMA_VERSION,
            body,
        }
    }

    fn every_body() -> Vec<Body> {
        vec![
            Body::RunCreated(RunCreated {
                name: "n".into(),
                experiment: "e".into(),
                parent_run: Some(RunId::new("p0").unwrap()),
                description: "d".into(),
            }),
            Body::RunState(RunStateChanged {
                state: RunState::Failed,
                message: "oom".into(),
            }),
            Body::AttributesSet(vec![
                Attribute {
                    path: "a/i".into(),
                    value: Value::Int(-3),
                },
                Attribute {
                    path: "a/f".into(),
                    value: Value::Float(f64::NEG_INFINITY),
                },
                Attribute {
                    path: "a/b".into(),
                    value: Value::Bool(true),
                },
                Attribute {
                    path: "a/s".into(),
                    value: Value::String("x".into()),
                },
                Attribute {
                    path: "a/t".into(),
                    value: Value::Datetime(5),
                },
                Attribute {
                    path: "a/set".into(),
                    value: Value::StringSet(vec!["u".into(), "v".into()]),
                },
            ]),
            Body::AttributesDeleted(vec!["a/i".into()]),
            Body::TagsAdded(vec!["t".into()]),
            Body::TagsRemoved(vec!["t".into()]),
            Body::FloatPoints(FloatPoints {
                series: "loss".into(),
                steps: vec![2, 1, 1],
                times_ms: vec![10, 11, 12],
                values: vec![0.5, f64::INFINITY, -0.0],
            }),
            Body::StringLines(StringLines {
                series: "log".into(),
                steps: vec![0],
                times_ms: vec![],
                lines: vec!["hello".into()],
            }),
            Body::File(FileRef {
                path: "img".into(),
                blob_key: "sha256/ab".into(),
                size: 3,
                sha256: "a".repeat(64),
                media_type: "image/png".into(),
                step: Some(4),
            }),
            Body::Lineage(LineageLink {
                direction: Direction::Input,
                kind: ArtifactKind::Dataset,
                name: "mnist".into(),
                version: "v1".into(),
                digest: "d".into(),
                uri: "s3://x".into(),
            }),
            Body::RunDeleted,
            Body::RunRestored,
        ]
    }

    #[test]
    fn every_body_round_trips_through_protobuf() {
        let events: Vec<Event> = every_body().into_iter().map(sample).collect();
        let back = decode_batch(&encode_batch(&events)).unwrap();
        assert_eq!(back, events);
    }

    /// A record built from the client's bytes decodes to the very events a re-encoding would,
    /// with the envelope the server completed, whatever the client left unset.
    #[test]
    fn records_reusing_client_bytes_decode_like_re_encoded_ones() {
        let client: Vec<wire::Event> = every_body()
            .into_iter()
            .enumerate()
            .map(|(i, b)| {
                let mut w = to_wire(&sample(b));
                w.ingest_time_ms = 0;
                w.actor.clear();
                w.schema_version = 0;
                // Some events name the workspace and project (as the request does), some do not.
                if i % 2 == 0 {
                    w.workspace.clear();
                    w.project.clear();
                }
                w
            })
            .collect();
        let body = wire::EventBatch { events: client }.encode_to_vec();
        let ctx = crate::json::IngestContext {
            workspace: WorkspaceId::new("ws").unwrap(),
            project: ProjectId::new("p").unwrap(),
            actor: "bob".into(),
            ingest_time_ms: 1_800_000_000_000,
        };
        let pairs = WireBatch::decode(body.into()).unwrap().into_events(&ctx).unwrap();
        let events: Vec<Event> = pairs.iter().map(|(e, _)| e.clone()).collect();
        assert!(events.iter().all(|e| e.actor == "bob"
            && e.ingest_time_ms == 1_800_000_000_000
            && e.workspace.as_str() == "ws"
            && e.schema_version == crate::SCHEMA_VERSION));
        let reused = encode_batch_reusing(&pairs.iter().map(|(e, raw)| (e, raw)).collect::<Vec<_>>());
        assert_eq!(decode_batch(&reused).unwrap(), events);
        assert_eq!(
            decode_batch(&reused).unwrap(),
            decode_batch(&encode_batch(&events)).unwrap()
        );
        // A subset, as when some events of a request were duplicates.
        let some: Vec<_> = pairs.iter().step_by(3).map(|(e, raw)| (e, raw)).collect();
        let want: Vec<Event> = events.iter().step_by(3).cloned().collect();
        assert_eq!(decode_batch(&encode_batch_reusing(&some)).unwrap(), want);
    }

    #[test]
    fn nan_survives_the_round_trip() {
        let e = sample(Body::FloatPoints(FloatPoints {
            series: "s".into(),
            steps: vec![0],
            times_ms: vec![],
            values: vec![f64::NAN],
        }));
        let back = decode_batch(&encode_batch(&[e])).unwrap();
        let Body::FloatPoints(p) = &back[0].body else {
            panic!("wrong body")
        };
        assert!(p.values[0].is_nan());
    }

    #[test]
    fn decoding_validates() {
        let e = sample(Body::FloatPoints(FloatPoints {
            series: "s".into(),
            steps: vec![-1],
            times_ms: vec![],
            values: vec![1.0],
        }));
        let err = decode_batch(&encode_batch(&[e])).unwrap_err().to_string();
        assert!(err.contains("events[0].float_points.steps[0]"), "{err}");
        assert!(decode_batch(b"\xff\xff\xff").is_err());
    }

    #[test]
    fn registry_events_round_trip() {
        let ev = vec![
            RegistryEvent {
                id: EventId::random(),
                workspace: WorkspaceId::new("ws").unwrap(),
                time_ms: 1,
                actor: "root".into(),
                body: RegistryBody::ProjectCreated {
                    project: ProjectId::new("p").unwrap(),
                    description: "d".into(),
                },
            },
            RegistryEvent {
                id: EventId::random(),
                workspace: WorkspaceId::new("ws").unwrap(),
                time_ms: 2,
                actor: "root".into(),
                body: RegistryBody::TokenIssued {
                    token_id: "t1".into(),
                    secret_sha256: [7; 32],
                    principal: "bob".into(),
                    grants: vec![
                        Grant {
                            project: None,
                            role: Role::Admin,
                        },
                        Grant {
                            project: Some(ProjectId::new("p").unwrap()),
                            role: Role::Viewer,
                        },
                    ],
                },
            },
            RegistryEvent {
                id: EventId::random(),
                workspace: WorkspaceId::new("ws").unwrap(),
                time_ms: 3,
                actor: "root".into(),
                body: RegistryBody::TokenRevoked { token_id: "t1".into() },
            },
        ];
        let changes = [
            ExperimentChange::Created {
                name: "exp".into(),
                artifact_location: "mlflow-artifacts:/7".into(),
                tags: vec![("k".into(), "v".into()), ("k2".into(), String::new())],
            },
            ExperimentChange::Renamed("exp2".into()),
            ExperimentChange::Deleted,
            ExperimentChange::Restored,
            ExperimentChange::TagSet("a".into(), "b".into()),
            ExperimentChange::TagDeleted("a".into()),
        ];
        let ev: Vec<RegistryEvent> = ev
            .into_iter()
            .chain(changes.into_iter().enumerate().map(|(i, change)| RegistryEvent {
                id: EventId::random(),
                workspace: WorkspaceId::new("ws").unwrap(),
                time_ms: 4,
                actor: "root".into(),
                body: RegistryBody::Experiment {
                    project: ProjectId::new("p").unwrap(),
                    experiment: i as u64 * 7,
                    change,
                },
            }))
            .collect();
        assert_eq!(decode_registry(&encode_registry(&ev)).unwrap(), ev);
    }
}
