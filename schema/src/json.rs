//! The JSON form of events, mirroring the protobuf messages field for field: an event is an
//! object with the envelope fields and exactly one body field named as in the protobuf oneof
//! (`{"id": "...", "run": "r1", "float_points": {"series": "loss", "steps": [...], ...}}`).
//!
//! JSON cannot write NaN or infinities, so float values also accept the strings `"NaN"`,
//! `"Infinity"` and `"-Infinity"`, and are written that way.
//!
//! Attributes are written as an object from path to value. On input that object may be nested
//! (`{"params": {"optimizer": {"lr": 0.01}}}` sets `params/optimizer/lr`). A JSON integer is an
//! int, a number with a fraction or exponent a float, an array of strings a string set; the
//! tagged forms `{"$datetime": ms or "RFC 3339"}`, `{"$float": x}` and `{"$set": [...]}` say
//! the type outright.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::event::*;
use crate::{EventId, ProjectId, RunId, ValidationError, WorkspaceId};

/// What ingest knows of a request and fills into each event's envelope.
#[derive(Debug, Clone)]
pub struct IngestContext {
    pub workspace: WorkspaceId,
    pub project: ProjectId,
    pub actor: String,
    pub ingest_time_ms: i64,
}

/// A batch of events in JSON: `{"events": [...]}`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BatchJson {
    pub events: Vec<EventJson>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EventJson {
    pub id: EventId,
    pub run: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub client_time_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingest_time_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_version: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_created: Option<RunCreatedJson>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_state: Option<RunStateJson>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes_set: Option<AttributesSetJson>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes_deleted: Option<PathsJson>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags_added: Option<TagsJson>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags_removed: Option<TagsJson>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub float_points: Option<FloatPointsJson>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub string_lines: Option<StringLinesJson>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileJson>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lineage: Option<LineageJson>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_deleted: Option<Empty>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_restored: Option<Empty>,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RunCreatedJson {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub experiment: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_run: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RunStateJson {
    pub state: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AttributesSetJson {
    pub attributes: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PathsJson {
    pub paths: Vec<String>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TagsJson {
    pub tags: Vec<String>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FloatPointsJson {
    pub series: String,
    pub steps: Vec<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub times_ms: Vec<i64>,
    #[serde(serialize_with = "ser_floats", deserialize_with = "de_floats")]
    pub values: Vec<f64>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StringLinesJson {
    pub series: String,
    pub steps: Vec<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub times_ms: Vec<i64>,
    pub lines: Vec<String>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileJson {
    pub path: String,
    pub blob_key: String,
    pub size: u64,
    pub sha256: String,
    #[serde(default)]
    pub media_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<i64>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LineageJson {
    pub direction: String,
    pub kind: String,
    pub name: String,
    #[serde(default)]
    pub version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub digest: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uri: String,
}

/// Writes a float as JSON, with NaN and the infinities as strings.
pub fn float_to_json(v: f64) -> serde_json::Value {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "Infinity".into()
    } else if v == f64::NEG_INFINITY {
        "-Infinity".into()
    } else {
        serde_json::Value::from(v)
    }
}

fn parse_special_float(s: &str) -> Option<f64> {
    match s {
        "NaN" | "nan" => Some(f64::NAN),
        "Infinity" | "inf" | "+Infinity" => Some(f64::INFINITY),
        "-Infinity" | "-inf" => Some(f64::NEG_INFINITY),
        _ => None,
    }
}

/// Serializes a float, writing NaN and the infinities as strings.
pub struct JsonF64(pub f64);

impl Serialize for JsonF64 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let v = self.0;
        if v.is_finite() {
            s.serialize_f64(v)
        } else if v.is_nan() {
            s.serialize_str("NaN")
        } else if v > 0.0 {
            s.serialize_str("Infinity")
        } else {
            s.serialize_str("-Infinity")
        }
    }
}

impl<'de> Deserialize<'de> for JsonF64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = JsonF64;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number or one of \"NaN\", \"Infinity\", \"-Infinity\"")
            }
            fn visit_f64<E>(self, v: f64) -> Result<JsonF64, E> {
                Ok(JsonF64(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<JsonF64, E> {
                Ok(JsonF64(v as f64))
            }
            fn visit_u64<E>(self, v: u64) -> Result<JsonF64, E> {
                Ok(JsonF64(v as f64))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<JsonF64, E> {
                parse_special_float(v)
                    .map(JsonF64)
                    .ok_or_else(|| E::invalid_value(de::Unexpected::Str(v), &self))
            }
        }
        d.deserialize_any(V)
    }
}

fn ser_floats<S: Serializer>(v: &[f64], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(|x| JsonF64(*x)))
}

fn de_floats<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Vec<f64>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an array of numbers")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<f64>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
            while let Some(JsonF64(v)) = seq.next_element()? {
                out.push(v);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(V)
}

impl EventJson {
    /// Validates a client's event and completes its envelope.
    pub fn into_event(self, ctx: &IngestContext) -> Result<Event, ValidationError> {
        for (name, set) in [
            (
                "workspace",
                self.workspace.as_ref().is_some_and(|w| w != ctx.workspace.as_str()),
            ),
            (
                "project",
                self.project.as_ref().is_some_and(|p| p != ctx.project.as_str()),
            ),
            ("ingest_time_ms", self.ingest_time_ms.is_some()),
            ("actor", self.actor.is_some()),
        ] {
            if set {
                return Err(ValidationError::new(
                    name,
                    "is set by the server from the request and must not be sent (or must match it)",
                ));
            }
        }
        if let Some(v) = self.schema_version.filter(|v| *v > crate::SCHEMA_VERSION) {
            return Err(ValidationError::new(
                "schema_version",
                format!("{v} is newer than this server's {}", crate::SCHEMA_VERSION),
            ));
        }
        check_client_time(self.client_time_ms)?;
        let run = RunId::new(self.run).map_err(|e| e.within("run"))?;
        let mut bodies: Vec<Body> = Vec::with_capacity(1);
        if let Some(c) = self.run_created {
            let parent_run = match c.parent_run.filter(|p| !p.is_empty()) {
                Some(p) => Some(RunId::new(p).map_err(|e| e.within("run_created.parent_run"))?),
                None => None,
            };
            bodies.push(Body::RunCreated(RunCreated {
                name: c.name,
                experiment: c.experiment,
                parent_run,
                description: c.description,
            }));
        }
        if let Some(s) = self.run_state {
            let state = RunState::parse(&s.state).ok_or_else(|| {
                ValidationError::new(
                    "run_state.state",
                    format!(
                        "unknown state {:?}; expected running, finished, failed, aborted or heartbeat",
                        s.state
                    ),
                )
            })?;
            bodies.push(Body::RunState(RunStateChanged {
                state,
                message: s.message,
            }));
        }
        if let Some(a) = self.attributes_set {
            let mut out = Vec::new();
            flatten_attributes("", a.attributes, &mut out).map_err(|e| e.within("attributes_set.attributes"))?;
            bodies.push(Body::AttributesSet(out));
        }
        if let Some(p) = self.attributes_deleted {
            bodies.push(Body::AttributesDeleted(p.paths));
        }
        if let Some(t) = self.tags_added {
            bodies.push(Body::TagsAdded(t.tags));
        }
        if let Some(t) = self.tags_removed {
            bodies.push(Body::TagsRemoved(t.tags));
        }
        if let Some(p) = self.float_points {
            bodies.push(Body::FloatPoints(FloatPoints {
                series: p.series,
                steps: p.steps,
                times_ms: p.times_ms,
                values: p.values,
            }));
        }
        if let Some(l) = self.string_lines {
            bodies.push(Body::StringLines(StringLines {
                series: l.series,
                steps: l.steps,
                times_ms: l.times_ms,
                lines: l.lines,
            }));
        }
        if let Some(f) = self.file {
            bodies.push(Body::File(FileRef {
                path: f.path,
                blob_key: f.blob_key,
                size: f.size,
                sha256: f.sha256,
                media_type: f.media_type,
                step: f.step,
            }));
        }
        if let Some(l) = self.lineage {
            let direction = Direction::parse(&l.direction).ok_or_else(|| {
                ValidationError::new("lineage.direction", format!("{:?} is not input or output", l.direction))
            })?;
            let kind = ArtifactKind::parse(&l.kind).ok_or_else(|| {
                ValidationError::new(
                    "lineage.kind",
                    format!("{:?} is not dataset, model, code, run or other", l.kind),
                )
            })?;
            bodies.push(Body::Lineage(LineageLink {
                direction,
                kind,
                name: l.name,
                version: l.version,
                digest: l.digest,
                uri: l.uri,
            }));
        }
        if self.run_deleted.is_some() {
            bodies.push(Body::RunDeleted);
        }
        if self.run_restored.is_some() {
            bodies.push(Body::RunRestored);
        }
        if bodies.len() != 1 {
            return Err(ValidationError::new(
                "body",
                format!(
                    "an event holds exactly one body (run_created, run_state, attributes_set, ...), this one has {}",
                    bodies.len()
                ),
            ));
        }
        let body = bodies.pop().expect("one body");
        body.validate()?;
        Ok(Event {
            id: self.id,
            workspace: ctx.workspace.clone(),
            project: ctx.project.clone(),
            run,
            client_time_ms: self.client_time_ms,
            ingest_time_ms: ctx.ingest_time_ms,
            actor: ctx.actor.clone(),
            schema_version: crate::SCHEMA_VERSION,
            body,
        })
    }

    /// The JSON form of a stored event, envelope included.
    pub fn from_event(e: &Event) -> Self {
        let mut j = EventJson {
            id: e.id,
            run: e.run.to_string(),
            client_time_ms: e.client_time_ms,
            workspace: Some(e.workspace.to_string()),
            project: Some(e.project.to_string()),
            ingest_time_ms: Some(e.ingest_time_ms),
            actor: Some(e.actor.clone()),
            schema_version: Some(e.schema_version),
            run_created: None,
            run_state: None,
            attributes_set: None,
            attributes_deleted: None,
            tags_added: None,
            tags_removed: None,
            float_points: None,
            string_lines: None,
            file: None,
            lineage: None,
            run_deleted: None,
            run_restored: None,
        };
        match &e.body {
            Body::RunCreated(c) => {
                j.run_created = Some(RunCreatedJson {
                    name: c.name.clone(),
                    experiment: c.experiment.clone(),
                    parent_run: c.parent_run.as_ref().map(|r| r.to_string()),
                    description: c.description.clone(),
                })
            }
            Body::RunState(s) => {
                j.run_state = Some(RunStateJson {
                    state: s.state.as_str().into(),
                    message: s.message.clone(),
                })
            }
            Body::AttributesSet(a) => {
                j.attributes_set = Some(AttributesSetJson {
                    attributes: a.iter().map(|a| (a.path.clone(), value_to_json(&a.value))).collect(),
                })
            }
            Body::AttributesDeleted(p) => j.attributes_deleted = Some(PathsJson { paths: p.clone() }),
            Body::TagsAdded(t) => j.tags_added = Some(TagsJson { tags: t.clone() }),
            Body::TagsRemoved(t) => j.tags_removed = Some(TagsJson { tags: t.clone() }),
            Body::FloatPoints(p) => {
                j.float_points = Some(FloatPointsJson {
                    series: p.series.clone(),
                    steps: p.steps.clone(),
                    times_ms: p.times_ms.clone(),
                    values: p.values.clone(),
                })
            }
            Body::StringLines(l) => {
                j.string_lines = Some(StringLinesJson {
                    series: l.series.clone(),
                    steps: l.steps.clone(),
                    times_ms: l.times_ms.clone(),
                    lines: l.lines.clone(),
                })
            }
            Body::File(f) => {
                j.file = Some(FileJson {
                    path: f.path.clone(),
                    blob_key: f.blob_key.clone(),
                    size: f.size,
                    sha256: f.sha256.clone(),
                    media_type: f.media_type.clone(),
                    step: f.step,
                })
            }
            Body::Lineage(l) => {
                j.lineage = Some(LineageJson {
                    direction: l.direction.as_str().into(),
                    kind: l.kind.as_str().into(),
                    name: l.name.clone(),
                    version: l.version.clone(),
                    digest: l.digest.clone(),
                    uri: l.uri.clone(),
                })
            }
            Body::RunDeleted => j.run_deleted = Some(Empty {}),
            Body::RunRestored => j.run_restored = Some(Empty {}),
        }
        j
    }
}

/// The JSON form of a typed value: natural JSON where it is unambiguous, tagged otherwise.
pub fn value_to_json(v: &Value) -> serde_json::Value {
    use serde_json::json;
    match v {
        Value::Int(i) => json!(i),
        Value::Float(f) if f.is_finite() => json!(f),
        Value::Float(f) => json!({ "$float": float_to_json(*f) }),
        Value::Bool(b) => json!(b),
        Value::String(s) => json!(s),
        Value::Datetime(t) => json!({ "$datetime": t }),
        Value::StringSet(s) => json!({ "$set": s }),
    }
}

fn flatten_attributes(
    prefix: &str,
    map: serde_json::Map<String, serde_json::Value>,
    out: &mut Vec<Attribute>,
) -> Result<(), ValidationError> {
    use serde_json::Value as J;
    if map.is_empty() && prefix.is_empty() {
        return Err(ValidationError::new("", "is empty"));
    }
    for (k, v) in map {
        if k.is_empty() {
            return Err(ValidationError::new(prefix, "holds an empty key"));
        }
        let path = if prefix.is_empty() { k } else { format!("{prefix}/{k}") };
        let value = match v {
            J::Object(m) if m.len() == 1 && m.keys().next().is_some_and(|k| k.starts_with('$')) => {
                let (tag, inner) = m.into_iter().next().expect("one entry");
                tagged_value(&path, &tag, inner)?
            }
            J::Object(m) => {
                if m.is_empty() {
                    return Err(ValidationError::new(path, "is an empty object; nothing to set"));
                }
                flatten_attributes(&path, m, out)?;
                continue;
            }
            J::Null => {
                return Err(ValidationError::new(
                    path,
                    "is null; delete an attribute with attributes_deleted",
                ));
            }
            J::Bool(b) => Value::Bool(b),
            J::Number(n) => number_value(&path, &n)?,
            J::String(s) => Value::String(s),
            J::Array(items) => string_set(&path, items)?,
        };
        out.push(Attribute { path, value });
    }
    Ok(())
}

fn number_value(path: &str, n: &serde_json::Number) -> Result<Value, ValidationError> {
    if let Some(i) = n.as_i64() {
        Ok(Value::Int(i))
    } else if n.is_u64() {
        Err(ValidationError::new(
            path,
            format!("{n} does not fit a 64-bit signed integer"),
        ))
    } else {
        Ok(Value::Float(n.as_f64().unwrap_or(f64::NAN)))
    }
}

fn string_set(path: &str, items: Vec<serde_json::Value>) -> Result<Value, ValidationError> {
    items
        .into_iter()
        .map(|i| match i {
            serde_json::Value::String(s) => Ok(s),
            other => Err(ValidationError::new(
                path,
                format!("lists must hold strings only (a string set), found {other}; log numbers as a series"),
            )),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Value::StringSet)
}

fn tagged_value(path: &str, tag: &str, inner: serde_json::Value) -> Result<Value, ValidationError> {
    use serde_json::Value as J;
    match (tag, inner) {
        ("$float", J::Number(n)) => Ok(Value::Float(n.as_f64().unwrap_or(f64::NAN))),
        ("$float", J::String(s)) => parse_special_float(&s)
            .map(Value::Float)
            .ok_or_else(|| ValidationError::new(path, format!("{s:?} is not NaN, Infinity or -Infinity"))),
        ("$datetime", J::Number(n)) => n
            .as_i64()
            .map(Value::Datetime)
            .ok_or_else(|| ValidationError::new(path, "$datetime takes whole milliseconds since the epoch")),
        ("$datetime", J::String(s)) => parse_rfc3339_ms(&s)
            .map(Value::Datetime)
            .ok_or_else(|| ValidationError::new(path, format!("{s:?} is not an RFC 3339 time"))),
        ("$set", J::Array(items)) => string_set(path, items),
        (tag, v) => Err(ValidationError::new(
            path,
            format!("unknown typed value {{{tag:?}: {v}}}"),
        )),
    }
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)` to milliseconds since the epoch.
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> { std::str::from_utf8(&b[r]).ok()?.parse().ok() };
    let (y, mo, d, h, mi, sec) = (
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
        num(17..19)?,
    );
    let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    let month_days = match mo {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    if !(1..=12).contains(&mo) || !(1..=month_days).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut millis = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return None;
        }
        let frac = &s[start..i.min(start + 3)];
        millis = frac.parse::<i64>().ok()? * 10i64.pow(3 - frac.len() as u32);
    }
    let offset_min = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if b.len() == i + 6 && b[i + 3] == b':' => {
            let oh = num(i + 1..i + 3)?;
            let om = num(i + 4..i + 6)?;
            let m = oh * 60 + om;
            if *sign == b'+' { m } else { -m }
        }
        _ => return None,
    };
    // Days from civil (proleptic Gregorian), after H. Hinnant's well-known derivation.
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 24 + h) * 60 + mi - offset_min) * 60_000 + sec * 1000 + millis)
}

/// Flat map of a run's attributes for reading back: path to JSON value.
pub fn attributes_to_json(attrs: &[(String, Value)]) -> BTreeMap<String, serde_json::Value> {
    attrs.iter().map(|(p, v)| (p.clone(), value_to_json(v))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> IngestContext {
        IngestContext {
            workspace: WorkspaceId::new("ws").unwrap(),
            project: ProjectId::new("p").unwrap(),
            actor: "alice".into(),
            ingest_time_ms: 1_700_000_000_000,
        }
    }

    fn parse(v: serde_json::Value) -> Result<Event, String> {
        let e: EventJson = serde_json::from_value(v).map_err(|e| e.to_string())?;
        e.into_event(&ctx()).map_err(|e| e.to_string())
    }

    #[test]
    fn nested_attributes_flatten_to_typed_paths() {
        let e = parse(serde_json::json!({
            "id": "0190f3a2-7b1c-7cde-8f00-0123456789ab", "run": "r",
            "attributes_set": {"attributes": {
                "params": {"optimizer": {"lr": 0.01, "name": "adam"}, "epochs": 10, "nan": {"$float": "NaN"}},
                "tags_like": ["a", "b"], "when": {"$datetime": "2024-03-01T12:00:00.250Z"}, "ok": true
            }}
        }))
        .unwrap();
        let Body::AttributesSet(a) = e.body else { panic!() };
        let get = |p: &str| a.iter().find(|x| x.path == p).map(|x| x.value.clone());
        assert_eq!(get("params/optimizer/lr"), Some(Value::Float(0.01)));
        assert_eq!(get("params/optimizer/name"), Some(Value::String("adam".into())));
        assert_eq!(get("params/epochs"), Some(Value::Int(10)));
        assert!(matches!(get("params/nan"), Some(Value::Float(f)) if f.is_nan()));
        assert_eq!(get("tags_like"), Some(Value::StringSet(vec!["a".into(), "b".into()])));
        assert_eq!(get("when"), Some(Value::Datetime(1_709_294_400_250)));
        assert_eq!(get("ok"), Some(Value::Bool(true)));
    }

    #[test]
    fn special_floats_in_points() {
        let e = parse(serde_json::json!({
            "id": "0190f3a2-7b1c-7cde-8f00-0123456789ab", "run": "r",
            "float_points": {"series": "loss", "steps": [0, 1, 2, 3], "values": [1.5, "NaN", "Infinity", "-Infinity"]}
        }))
        .unwrap();
        let Body::FloatPoints(p) = &e.body else { panic!() };
        assert_eq!(p.values[0], 1.5);
        assert!(p.values[1].is_nan());
        assert_eq!(p.values[2], f64::INFINITY);
        assert_eq!(p.values[3], f64::NEG_INFINITY);
        let back = serde_json::to_value(EventJson::from_event(&e)).unwrap();
        assert_eq!(
            back["float_points"]["values"],
            serde_json::json!([1.5, "NaN", "Infinity", "-Infinity"])
        );
    }

    #[test]
    fn errors_name_the_field() {
        let id = "0190f3a2-7b1c-7cde-8f00-0123456789ab";
        let cases = [
            (serde_json::json!({"id": id, "run": "r"}), "body"),
            (
                serde_json::json!({"id": id, "run": "r", "tags_added": {"tags": ["a"]}, "run_deleted": {}}),
                "exactly one",
            ),
            (
                serde_json::json!({"id": id, "run": "bad run", "run_deleted": {}}),
                "run",
            ),
            (
                serde_json::json!({"id": id, "run": "r", "float_points": {"series": "s", "steps": [1, 2], "values": [1.0]}}),
                "float_points.values",
            ),
            (
                serde_json::json!({"id": id, "run": "r", "float_points": {"series": "s", "steps": [-5], "values": [1.0]}}),
                "float_points.steps[0]",
            ),
            (
                serde_json::json!({"id": id, "run": "r", "float_points": {"series": "a//b", "steps": [1], "values": [1.0]}}),
                "float_points.series",
            ),
            (
                serde_json::json!({"id": id, "run": "r", "run_state": {"state": "sleeping"}}),
                "run_state.state",
            ),
            (
                serde_json::json!({"id": id, "run": "r", "actor": "mallory", "run_deleted": {}}),
                "actor",
            ),
            (
                serde_json::json!({"id": id, "run": "r", "client_time_ms": -4, "run_deleted": {}}),
                "client_time_ms",
            ),
        ];
        for (v, want) in cases {
            let err = parse(v.clone()).unwrap_err();
            assert!(err.contains(want), "{v}: {err} should name {want}");
        }
    }

    #[test]
    fn rfc3339_parsing() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339_ms("2000-02-29T01:02:03.5+01:00"), Some(951_782_523_500));
        assert_eq!(parse_rfc3339_ms("2000-13-01T00:00:00Z"), None);
        // Days past the end of their month do not exist, leap days only in leap years.
        assert_eq!(parse_rfc3339_ms("2023-02-29T00:00:00Z"), None);
        assert_eq!(parse_rfc3339_ms("1900-02-29T00:00:00Z"), None);
        assert_eq!(parse_rfc3339_ms("2024-04-31T00:00:00Z"), None);
        assert_eq!(parse_rfc3339_ms("2024-02-29T00:00:00Z"), Some(1_709_164_800_000));
        assert_eq!(parse_rfc3339_ms("2024-12-31T00:00:00Z"), Some(1_735_603_200_000));
        assert_eq!(parse_rfc3339_ms("yesterday"), None);
    }
}
