//! A corpus of malformed requests. Each must be refused with the right status and an error that
//! names the problem; the server must keep serving after every one of them, and nothing of a
//! refused request may reach the data. Also: a retried batch is recognised, not appended twice.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{Server, client, event_id, get_json, post_events};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The run whose data the corpus must leave alone.
const RUN: &str = "victim";
const EVENTS: &str = "/api/v1/projects/default/events";
const RUNS: &str = "/api/v1/projects/default/runs";
/// The ingest limit on one batch body.
const BATCH_LIMIT: u64 = 64 << 20;
/// The ingest limit on one uploaded file.
const FILE_LIMIT: u64 = 5 << 30;
const MAX_STEP: i64 = (1 << 53) - 1;
/// 3000-01-01T00:00:00Z in ms since the epoch.
const YEAR_3000_MS: i64 = 32_503_680_000_000;

// ---------------------------------------------------------------------------------------------
// The table

enum Payload {
    Bytes(Vec<u8>),
    /// Only the request head is sent, declaring this Content-Length (a huge body, built cheaply).
    DeclaredLength(u64),
    /// Chunked transfer encoding without a length, streaming this many bytes.
    Chunked(u64),
}

struct Case {
    name: String,
    method: Method,
    path: String,
    content_type: Option<&'static str>,
    payload: Payload,
    status: u16,
    /// Every one of these must appear in the error message.
    message: Vec<String>,
}

fn case(
    name: &str,
    method: Method,
    path: impl Into<String>,
    content_type: Option<&'static str>,
    payload: Payload,
    status: u16,
    message: &[&str],
) -> Case {
    Case {
        name: name.to_string(),
        method,
        path: path.into(),
        content_type,
        payload,
        status,
        message: message.iter().map(|m| m.to_string()).collect(),
    }
}

/// A raw body posted to the events endpoint as JSON.
fn post_raw(name: &str, body: impl Into<Vec<u8>>, status: u16, message: &[&str]) -> Case {
    case(
        name,
        Method::POST,
        EVENTS,
        Some("application/json"),
        Payload::Bytes(body.into()),
        status,
        message,
    )
}

/// `{"events": events}` posted as JSON.
fn post_batch(name: &str, events: Vec<Value>, status: u16, message: &[&str]) -> Case {
    post_raw(name, json!({ "events": events }).to_string(), status, message)
}

/// One event posted as JSON.
fn post_one(name: &str, event: Value, status: u16, message: &[&str]) -> Case {
    post_batch(name, vec![event], status, message)
}

fn post_pb(name: &str, body: Vec<u8>, status: u16, message: &[&str]) -> Case {
    case(
        name,
        Method::POST,
        EVENTS,
        Some("application/x-protobuf"),
        Payload::Bytes(body),
        status,
        message,
    )
}

fn get(name: &str, path: impl Into<String>, status: u16, message: &[&str]) -> Case {
    case(
        name,
        Method::GET,
        path,
        None,
        Payload::Bytes(Vec::new()),
        status,
        message,
    )
}

fn put(name: &str, path: impl Into<String>, status: u16, message: &[&str]) -> Case {
    case(
        name,
        Method::PUT,
        path,
        Some("text/plain"),
        Payload::Bytes(b"some bytes".to_vec()),
        status,
        message,
    )
}

/// An event of `run` with a fresh id and the given body fields.
fn ev_for(run: &str, body: Value) -> Value {
    let mut e = json!({ "id": event_id(), "run": run });
    for (k, v) in body.as_object().expect("body is an object") {
        e[k] = v.clone();
    }
    e
}

fn ev(body: Value) -> Value {
    ev_for(RUN, body)
}

fn points(series: &str, steps: Value, values: Value) -> Value {
    json!({ "float_points": { "series": series, "steps": steps, "values": values } })
}

fn attrs(attributes: Value) -> Value {
    json!({ "attributes_set": { "attributes": attributes } })
}

/// A JSON batch text with raw bytes spliced in (for invalid UTF-8).
fn splice(before: String, raw: &[u8], after: &str) -> Vec<u8> {
    let mut b = before.into_bytes();
    b.extend_from_slice(raw);
    b.extend_from_slice(after.as_bytes());
    b
}

fn run_path(rest: &str) -> String {
    format!("{RUNS}/{RUN}{rest}")
}

fn corpus() -> Vec<Case> {
    let mut c = Vec::new();
    let id = event_id();

    // ---- JSON syntax and shape ----
    c.push(post_raw(
        "truncated JSON",
        r#"{"events": [{"id": "#,
        400,
        &["EOF while parsing"],
    ));
    c.push(post_raw(
        "trailing garbage",
        r#"{"events": []} and more"#,
        400,
        &["trailing characters"],
    ));
    // A complete, valid batch followed by more text is not a JSON document either: refused whole.
    c.push(post_raw(
        "trailing garbage after a valid batch",
        format!(
            "{} {{\"more\": true}}",
            json!({"events": [ev(json!({"tags_added": {"tags": ["trailing"]}}))]})
        ),
        400,
        &["trailing characters"],
    ));
    c.push(post_raw(
        "two batches in one body",
        format!(
            "{}\n{}",
            json!({"events": [ev(json!({"tags_added": {"tags": ["first"]}}))]}),
            json!({"events": [ev(json!({"tags_added": {"tags": ["second"]}}))]})
        ),
        400,
        &["trailing characters"],
    ));
    c.push(post_raw("not JSON at all", "hello", 400, &["body", "expected"]));
    c.push(post_raw("empty body", "", 400, &["EOF while parsing"]));
    c.push(post_raw(
        "single quotes",
        "{'events': []}",
        400,
        &["key must be a string"],
    ));
    c.push(post_raw("top level is an array", "[]", 400, &["body", "BatchJson"]));
    c.push(post_raw(
        "events is an object",
        r#"{"events": {}}"#,
        400,
        &["events", "invalid type: map"],
    ));
    c.push(post_raw("events missing", "{}", 400, &["missing field `events`"]));
    c.push(post_raw(
        "unknown top-level field",
        json!({"events": [ev(json!({"run_deleted": {}}))], "extra": 1}).to_string(),
        400,
        &["unknown field `extra`"],
    ));
    c.push(post_raw(
        "event is a string",
        r#"{"events": ["run_created"]}"#,
        400,
        &["events[0]", "invalid type: string"],
    ));

    // ---- wrong types ----
    c.push(post_one(
        "steps is a string",
        ev(points("loss", json!("0,1"), json!([1.0, 2.0]))),
        400,
        &["events[0].float_points.steps", "invalid type: string"],
    ));
    c.push(post_one(
        "values is an object",
        ev(points("loss", json!([0]), json!({"a": 1.0}))),
        400,
        &["events[0].float_points.values", "invalid type: map"],
    ));
    c.push(post_one(
        "value is a word",
        ev(points("loss", json!([0, 1]), json!([1.0, "fast"]))),
        400,
        &["events[0].float_points.values[1]", "fast"],
    ));
    c.push(post_one(
        "step is fractional",
        ev(points("loss", json!([0.5]), json!([1.0]))),
        400,
        &["events[0].float_points.steps[0]", "floating point"],
    ));
    c.push(post_one(
        "run is a number",
        json!({"id": event_id(), "run": 5, "run_deleted": {}}),
        400,
        &["events[0].run", "invalid type: integer"],
    ));
    c.push(post_one(
        "tags is a string",
        ev(json!({"tags_added": {"tags": "a,b"}})),
        400,
        &["events[0].tags_added.tags", "invalid type: string"],
    ));
    c.push(post_one(
        "client_time_ms is a word",
        ev(json!({"client_time_ms": "now", "run_deleted": {}})),
        400,
        &["events[0].client_time_ms", "invalid type: string"],
    ));
    c.push(post_one(
        "attributes is a list",
        ev(attrs(json!([["lr", 0.1]]))),
        400,
        &["events[0].attributes_set.attributes", "invalid type: sequence"],
    ));
    c.push(post_one(
        "file size is negative",
        ev(json!({"file": {"path": "f.bin", "blob_key": "k", "size": -1, "sha256": "a".repeat(64)}})),
        400,
        &["events[0].file.size", "-1"],
    ));
    c.push(post_one(
        "run_deleted is a bool",
        ev(json!({"run_deleted": true})),
        400,
        &["events[0].run_deleted", "invalid type: boolean"],
    ));

    // ---- unknown fields ----
    c.push(post_one(
        "unknown field in an event",
        ev(json!({"colour": "red", "run_deleted": {}})),
        400,
        &["events[0]", "unknown field `colour`"],
    ));
    c.push(post_one(
        "unknown field in a body",
        ev(json!({"float_points": {"series": "loss", "steps": [0], "values": [1.0], "unit": "s"}})),
        400,
        &["events[0].float_points", "unknown field `unit`"],
    ));
    c.push(post_one(
        "unknown field in run_deleted",
        ev(json!({"run_deleted": {"reason": "x"}})),
        400,
        &["events[0].run_deleted", "unknown field `reason`"],
    ));

    c.push(post_raw(
        "duplicate key in an event",
        format!(
            r#"{{"events": [{{"id": "{}", "id": "{}", "run": "{RUN}", "run_deleted": {{}}}}]}}"#,
            event_id(),
            event_id()
        ),
        400,
        &["events[0]", "duplicate field `id`"],
    ));
    c.push(post_raw(
        "value out of the f64 range",
        format!(r#"{{"events": [{{"id": "{}", "run": "{RUN}", "float_points": {{"series": "loss", "steps": [0], "values": [1e400]}}}}]}}"#, event_id()),
        400,
        &["events[0].float_points.values", "out of range"],
    ));
    c.push(post_raw(
        "attributes nested 5000 deep",
        format!(
            r#"{{"events": [{{"id": "{}", "run": "{RUN}", "attributes_set": {{"attributes": {}1{}}}}}]}}"#,
            event_id(),
            r#"{"a": "#.repeat(5000),
            "}".repeat(5000)
        ),
        400,
        &["events[0].attributes_set.attributes", "recursion limit"],
    ));

    // ---- event ids ----
    c.push(post_one(
        "missing id",
        json!({"run": RUN, "tags_added": {"tags": ["x"]}}),
        400,
        &["events[0]", "missing field `id`"],
    ));
    c.push(post_one(
        "id is not a uuid",
        json!({"id": "not-a-uuid", "run": RUN, "tags_added": {"tags": ["x"]}}),
        400,
        &["events[0].id", "not a UUID"],
    ));
    c.push(post_one(
        "id is a number",
        json!({"id": 12345, "run": RUN, "tags_added": {"tags": ["x"]}}),
        400,
        &["events[0].id", "invalid type: integer"],
    ));
    c.push(post_one(
        "zero uuid",
        json!({"id": "00000000-0000-0000-0000-000000000000", "run": RUN, "tags_added": {"tags": ["x"]}}),
        400,
        &["events[0].id", "must not be zero"],
    ));
    c.push(post_batch(
        "duplicate ids in one batch",
        vec![
            json!({"id": id, "run": RUN, "tags_added": {"tags": ["x"]}}),
            json!({"id": id, "run": RUN, "tags_added": {"tags": ["y"]}}),
        ],
        400,
        &["events[1].id", "appears twice", "events[0]"],
    ));
    let dup = uuid::Uuid::new_v4();
    c.push(post_batch(
        "duplicate ids in two spellings",
        vec![
            json!({"id": dup.hyphenated().to_string(), "run": RUN, "tags_added": {"tags": ["x"]}}),
            json!({"id": dup.simple().to_string(), "run": RUN, "tags_added": {"tags": ["y"]}}),
        ],
        400,
        &["events[1].id", "appears twice"],
    ));

    // ---- runs ----
    c.push(post_one(
        "unknown run",
        ev_for("ghost-run", json!({"tags_added": {"tags": ["x"]}})),
        404,
        &["events[0].run", "ghost-run", "does not exist"],
    ));
    c.push(post_batch(
        "run created after its first use",
        vec![
            ev_for("ghost-late", json!({"tags_added": {"tags": ["x"]}})),
            ev_for("ghost-late", json!({"run_created": {"name": "late"}})),
        ],
        404,
        &["events[0].run", "ghost-late"],
    ));
    c.push(post_one(
        "run id with a space",
        ev_for("bad run", json!({"run_created": {}})),
        400,
        &["events[0].run", "' '"],
    ));
    c.push(post_one(
        "run id too long",
        ev_for(&"r".repeat(129), json!({"run_created": {}})),
        400,
        &["events[0].run", "129 bytes", "at most 128"],
    ));
    c.push(post_one(
        "empty run id",
        ev_for("", json!({"run_created": {}})),
        400,
        &["events[0].run", "is empty"],
    ));
    c.push(post_one(
        "run id with a slash",
        ev_for("a/b", json!({"run_created": {}})),
        400,
        &["events[0].run", "'/'"],
    ));
    c.push(post_one(
        "run id with a non-ASCII letter",
        ev_for("r\u{fc}n", json!({"run_created": {}})),
        400,
        &["events[0].run", "'\u{fc}'"],
    ));
    c.push(post_one(
        "run id starting with a dash",
        ev_for("-x", json!({"run_created": {}})),
        400,
        &["events[0].run", "must start with a letter or digit"],
    ));
    c.push(post_one(
        "invalid parent run",
        ev_for("ghost-child", json!({"run_created": {"parent_run": "no good"}})),
        400,
        &["events[0].run_created.parent_run"],
    ));

    // ---- steps and times ----
    c.push(post_one(
        "negative step",
        ev(points("loss", json!([1, -5]), json!([1.0, 2.0]))),
        400,
        &["events[0].float_points.steps[1]", "step -5 is outside"],
    ));
    c.push(post_one(
        "step past 2^53",
        ev(points("loss", json!([MAX_STEP + 1]), json!([1.0]))),
        400,
        &["events[0].float_points.steps[0]", "9007199254740992"],
    ));
    c.push(post_one(
        "step past i64",
        ev(points("loss", json!([9_223_372_036_854_775_808u64]), json!([1.0]))),
        400,
        &["events[0].float_points.steps[0]", "9223372036854775808"],
    ));
    c.push(post_one(
        "negative line step",
        ev(json!({"string_lines": {"series": "log", "steps": [-1], "lines": ["x"]}})),
        400,
        &["events[0].string_lines.steps[0]", "step -1 is outside"],
    ));
    c.push(post_one(
        "negative point time",
        ev(json!({"float_points": {"series": "loss", "steps": [1], "times_ms": [-1], "values": [1.0]}})),
        400,
        &["events[0].float_points.times_ms[0]", "time -1 ms is outside"],
    ));
    c.push(post_one(
        "point time in the year 3000",
        ev(json!({"float_points": {"series": "loss", "steps": [1], "times_ms": [YEAR_3000_MS], "values": [1.0]}})),
        400,
        &["events[0].float_points.times_ms[0]", "32503680000000"],
    ));
    c.push(post_one(
        "negative client time",
        ev(json!({"client_time_ms": -4, "tags_added": {"tags": ["x"]}})),
        400,
        &["events[0].client_time_ms", "-4"],
    ));
    c.push(post_one(
        "client time in the year 3000",
        ev(json!({"client_time_ms": YEAR_3000_MS, "tags_added": {"tags": ["x"]}})),
        400,
        &["events[0].client_time_ms", "outside"],
    ));
    c.push(post_one(
        "datetime attribute in the year 3000",
        ev(attrs(json!({"ended": {"$datetime": "3000-01-01T00:00:00Z"}}))),
        400,
        &["events[0].attributes_set.attributes[0].value", "outside"],
    ));

    // ---- columns ----
    c.push(post_one(
        "values shorter than steps",
        ev(points("loss", json!([0, 1]), json!([1.0]))),
        400,
        &["events[0].float_points.values", "has 1 items but steps has 2"],
    ));
    c.push(post_one(
        "times shorter than steps",
        ev(json!({"float_points": {"series": "loss", "steps": [0, 1], "times_ms": [5], "values": [1.0, 2.0]}})),
        400,
        &["events[0].float_points.times_ms", "has 1 items but steps has 2"],
    ));
    c.push(post_one(
        "lines longer than steps",
        ev(json!({"string_lines": {"series": "log", "steps": [0], "lines": ["a", "b"]}})),
        400,
        &["events[0].string_lines.lines", "has 2 items but steps has 1"],
    ));

    // ---- empty things ----
    c.push(post_raw("empty batch", r#"{"events": []}"#, 400, &["events", "empty"]));
    c.push(post_one(
        "no points",
        ev(points("loss", json!([]), json!([]))),
        400,
        &["events[0].float_points.steps", "is empty"],
    ));
    c.push(post_one(
        "no tags",
        ev(json!({"tags_added": {"tags": []}})),
        400,
        &["events[0].tags_added.tags", "is empty"],
    ));
    c.push(post_one(
        "no attributes",
        ev(attrs(json!({}))),
        400,
        &["events[0].attributes_set.attributes", "empty"],
    ));
    c.push(post_one(
        "no paths to delete",
        ev(json!({"attributes_deleted": {"paths": []}})),
        400,
        &["events[0].attributes_deleted.paths", "is empty"],
    ));
    c.push(post_one(
        "empty tag",
        ev(json!({"tags_added": {"tags": ["ok", ""]}})),
        400,
        &["events[0].tags_added.tags[1]", "tag is empty"],
    ));
    c.push(post_one(
        "empty tag to remove",
        ev(json!({"tags_removed": {"tags": [""]}})),
        400,
        &["events[0].tags_removed.tags[0]", "tag is empty"],
    ));
    c.push(post_one(
        "tag with NUL",
        ev(json!({"tags_added": {"tags": ["a\u{0}b"]}})),
        400,
        &["events[0].tags_added.tags[0]", "NUL"],
    ));
    c.push(post_one(
        "tag too long",
        ev(json!({"tags_added": {"tags": ["t".repeat(257)]}})),
        400,
        &["events[0].tags_added.tags[0]", "at most 256"],
    ));
    c.push(post_one(
        "empty lineage name",
        ev(json!({"lineage": {"direction": "input", "kind": "dataset", "name": ""}})),
        400,
        &["events[0].lineage.name", "empty"],
    ));

    // ---- bodies ----
    c.push(post_one(
        "two bodies",
        ev(json!({"tags_added": {"tags": ["x"]}, "run_deleted": {}})),
        400,
        &["events[0].body", "exactly one body", "has 2"],
    ));
    c.push(post_one(
        "no body",
        ev(json!({})),
        400,
        &["events[0].body", "exactly one body", "has 0"],
    ));
    c.push(post_one(
        "unknown run state",
        ev(json!({"run_state": {"state": "sleeping"}})),
        400,
        &["events[0].run_state.state", "sleeping"],
    ));
    c.push(post_one(
        "run state in capitals",
        ev(json!({"run_state": {"state": "FINISHED"}})),
        400,
        &["events[0].run_state.state", "FINISHED"],
    ));
    c.push(post_one(
        "unknown lineage kind",
        ev(json!({"lineage": {"direction": "input", "kind": "weights", "name": "w"}})),
        400,
        &["events[0].lineage.kind", "weights"],
    ));
    c.push(post_one(
        "unknown lineage direction",
        ev(json!({"lineage": {"direction": "sideways", "kind": "model", "name": "m"}})),
        400,
        &["events[0].lineage.direction", "sideways"],
    ));
    c.push(post_one(
        "file with a bad sha256",
        ev(json!({"file": {"path": "f.bin", "blob_key": "k", "size": 1, "sha256": "ABC"}})),
        400,
        &["events[0].file.sha256", "64 lower-case hex"],
    ));
    c.push(post_one(
        "file with an empty blob key",
        ev(json!({"file": {"path": "f.bin", "blob_key": "", "size": 1, "sha256": "a".repeat(64)}})),
        400,
        &["events[0].file.blob_key"],
    ));
    c.push(post_one(
        "file with a negative step",
        ev(json!({"file": {"path": "f.bin", "blob_key": "k", "size": 1, "sha256": "a".repeat(64), "step": -3}})),
        400,
        &["events[0].file.step", "step -3 is outside"],
    ));

    // ---- series and attribute paths ----
    c.push(post_one(
        "control character in a series path",
        ev(points("lo\u{7}ss", json!([0]), json!([1.0]))),
        400,
        &["events[0].float_points.series", "control character"],
    ));
    c.push(post_one(
        "empty segment in a series path",
        ev(points("train//loss", json!([0]), json!([1.0]))),
        400,
        &["events[0].float_points.series", "empty segment"],
    ));
    c.push(post_one(
        "leading slash in a series path",
        ev(points("/loss", json!([0]), json!([1.0]))),
        400,
        &["events[0].float_points.series", "empty segment"],
    ));
    c.push(post_one(
        "trailing slash in a series path",
        ev(points("loss/", json!([0]), json!([1.0]))),
        400,
        &["events[0].float_points.series", "empty segment"],
    ));
    c.push(post_one(
        "empty series path",
        ev(points("", json!([0]), json!([1.0]))),
        400,
        &["events[0].float_points.series", "path is empty"],
    ));
    c.push(post_one(
        "series path too long",
        ev(points(&"s".repeat(513), json!([0]), json!([1.0]))),
        400,
        &["events[0].float_points.series", "at most 512"],
    ));
    c.push(post_one(
        "newline in a line series path",
        ev(json!({"string_lines": {"series": "log\nx", "steps": [0], "lines": ["a"]}})),
        400,
        &["events[0].string_lines.series", "control character"],
    ));
    c.push(post_one(
        "empty segment in a deleted attribute path",
        ev(json!({"attributes_deleted": {"paths": ["a//b"]}})),
        400,
        &["events[0].attributes_deleted.paths[0]", "empty segment"],
    ));

    // ---- attribute values ----
    c.push(post_one(
        "null attribute",
        ev(attrs(json!({"lr": null}))),
        400,
        &["events[0].attributes_set.attributes.lr", "is null"],
    ));
    c.push(post_one(
        "nested null attribute",
        ev(attrs(json!({"params": {"optimizer": {"lr": null}}}))),
        400,
        &["params/optimizer/lr", "is null"],
    ));
    c.push(post_one(
        "list attribute holding a number",
        ev(attrs(json!({"layers": ["a", 3]}))),
        400,
        &["events[0].attributes_set.attributes.layers", "strings only"],
    ));
    c.push(post_one(
        "string set holding null",
        ev(attrs(json!({"labels": {"$set": ["a", null]}}))),
        400,
        &["labels", "strings only"],
    ));
    c.push(post_one(
        "unknown typed value",
        ev(attrs(json!({"x": {"$decimal": "1.5"}}))),
        400,
        &["events[0].attributes_set.attributes.x", "unknown typed value"],
    ));
    c.push(post_one(
        "unparseable datetime",
        ev(attrs(json!({"when": {"$datetime": "yesterday"}}))),
        400,
        &["events[0].attributes_set.attributes.when", "RFC 3339"],
    ));
    c.push(post_one(
        "integer attribute past i64",
        ev(attrs(json!({"big": 18_446_744_073_709_551_615u64}))),
        400,
        &["events[0].attributes_set.attributes.big", "64-bit signed integer"],
    ));
    c.push(post_one(
        "empty attribute key",
        ev(attrs(json!({"params": {"": 1}}))),
        400,
        &["events[0].attributes_set.attributes.params", "empty key"],
    ));
    c.push(post_one(
        "empty object attribute",
        ev(attrs(json!({"params": {}}))),
        400,
        &["events[0].attributes_set.attributes.params", "empty object"],
    ));
    c.push(post_one(
        "attribute path with an empty segment",
        ev(attrs(json!({"a//b": 1}))),
        400,
        &["events[0].attributes_set.attributes[0].path", "empty segment"],
    ));

    // ---- fields the server owns ----
    c.push(post_one(
        "actor sent by the client",
        ev(json!({"actor": "mallory", "run_deleted": {}})),
        400,
        &["events[0].actor", "set by the server"],
    ));
    c.push(post_one(
        "ingest time sent by the client",
        ev(json!({"ingest_time_ms": 1_700_000_000_000i64, "run_deleted": {}})),
        400,
        &["events[0].ingest_time_ms", "set by the server"],
    ));
    c.push(post_one(
        "another workspace",
        ev(json!({"workspace": "elsewhere", "run_deleted": {}})),
        400,
        &["events[0].workspace"],
    ));
    c.push(post_one(
        "another project",
        ev(json!({"project": "elsewhere", "run_deleted": {}})),
        400,
        &["events[0].project"],
    ));
    c.push(post_one(
        "schema version from the future",
        ev(json!({"schema_version": 99, "run_deleted": {}})),
        400,
        &["events[0].schema_version", "99"],
    ));

    // ---- invalid UTF-8 and escapes in JSON strings ----
    c.push(post_raw(
        "invalid UTF-8 in a tag",
        splice(
            format!(
                r#"{{"events": [{{"id": "{}", "run": "{RUN}", "tags_added": {{"tags": ["ok"#,
                event_id()
            ),
            b"\xff\xfe",
            r#""]}}]}"#,
        ),
        400,
        &["events[0].tags_added.tags[0]", "unicode"],
    ));
    c.push(post_raw(
        "invalid UTF-8 in a run name",
        splice(
            format!(
                r#"{{"events": [{{"id": "{}", "run": "ghost-utf8", "run_created": {{"name": "na"#,
                event_id()
            ),
            b"\xc3\x28",
            r#"me"}}]}"#,
        ),
        400,
        &["events[0].run_created.name", "unicode"],
    ));
    c.push(post_raw(
        "invalid UTF-8 in a series path",
        splice(
            format!(
                r#"{{"events": [{{"id": "{}", "run": "{RUN}", "float_points": {{"series": "lo"#,
                event_id()
            ),
            b"\xed\xa0\x80",
            r#"ss", "steps": [0], "values": [1.0]}}]}"#,
        ),
        400,
        &["events[0].float_points.series", "unicode"],
    ));
    c.push(post_raw(
        "invalid UTF-8 in a run id",
        splice(
            format!(r#"{{"events": [{{"id": "{}", "run": "vic"#, event_id()),
            b"\x80",
            r#"tim", "run_deleted": {}}]}"#,
        ),
        400,
        &["events[0].run", "unicode"],
    ));
    c.push(post_raw(
        "lone surrogate escape in a series path",
        format!(
            r#"{{"events": [{{"id": "{}", "run": "{RUN}", "float_points": {{"series": "lo\ud800\u0041ss", "steps": [0], "values": [1.0]}}}}]}}"#,
            event_id()
        ),
        400,
        &["events[0].float_points.series", "surrogate"],
    ));

    // ---- a bad batch is refused whole ----
    c.push(post_batch(
        "new run then a bad point",
        vec![
            ev_for("ghost-atomic", json!({"run_created": {"name": "must not exist"}})),
            ev_for("ghost-atomic", points("loss", json!([-1]), json!([1.0]))),
        ],
        400,
        &["events[1].float_points.steps[0]"],
    ));
    c.push(post_batch(
        "good points then a bad event",
        vec![
            ev(points("loss", json!([1000]), json!([42.0]))),
            ev(json!({"tags_added": {"tags": ["injected"]}})),
            ev(json!({"tags_added": {"tags": [""]}})),
        ],
        400,
        &["events[2].tags_added.tags[0]"],
    ));
    c.push(post_batch(
        "good points then an unknown run",
        vec![
            ev(points("loss", json!([1001]), json!([43.0]))),
            ev_for("ghost-later", json!({"run_deleted": {}})),
        ],
        404,
        &["events[1].run", "ghost-later"],
    ));

    // ---- content types ----
    for ct in [
        "text/plain",
        "application/xml",
        "multipart/form-data; boundary=x",
        "application/jsonx",
    ] {
        let events = json!({"events": [ev(json!({"tags_added": {"tags": ["ct"]}}))]}).to_string();
        c.push(case(
            &format!("content type {ct}"),
            Method::POST,
            EVENTS,
            Some(ct),
            Payload::Bytes(events.into_bytes()),
            415,
            &[ct.split(';').next().unwrap_or(ct)],
        ));
    }

    // A Content-Type that is not visible ASCII is no media type this API takes; it must not be
    // taken for JSON.
    c.push(case(
        "non-ASCII content type",
        Method::POST,
        EVENTS,
        Some("text/plain; charset=\u{e9}"),
        Payload::Bytes(
            json!({"events": [ev(json!({"tags_added": {"tags": ["non-ascii-ct"]}}))]})
                .to_string()
                .into_bytes(),
        ),
        415,
        &["content type"],
    ));
    c.push(post_pb(
        "JSON sent as protobuf",
        json!({"events": [ev(json!({"tags_added": {"tags": ["json-as-pb"]}}))]})
            .to_string()
            .into_bytes(),
        400,
        &["body", "malformed protobuf"],
    ));

    // ---- protobuf ----
    c.push(post_pb(
        "garbage protobuf",
        vec![0xff; 12],
        400,
        &["body", "malformed protobuf"],
    ));
    let mut truncated = pb_batch(vec![
        pb_event(&new_id(), RUN).msg(26, pb_points(b"loss", &[1, 2], &[1.0, 2.0])),
    ]);
    truncated.truncate(truncated.len() - 5);
    c.push(post_pb(
        "truncated protobuf",
        truncated,
        400,
        &["body", "malformed protobuf"],
    ));
    c.push(post_pb("empty protobuf batch", Vec::new(), 400, &["events", "empty"]));
    c.push(post_pb(
        "protobuf: invalid UTF-8 in the run id",
        pb_batch(vec![
            Pb::default()
                .bytes(1, &new_id())
                .bytes(4, b"vic\xfftim")
                .msg(30, Pb::default()),
        ]),
        400,
        &["malformed protobuf", "run", "UTF-8"],
    ));
    c.push(post_pb(
        "protobuf: invalid UTF-8 in a series path",
        pb_batch(vec![
            pb_event(&new_id(), RUN).msg(26, pb_points(b"lo\xc3\x28ss", &[1], &[1.0])),
        ]),
        400,
        &["malformed protobuf", "series", "UTF-8"],
    ));
    c.push(post_pb(
        "protobuf: invalid UTF-8 in a tag",
        pb_batch(vec![pb_event(&new_id(), RUN).msg(24, Pb::default().bytes(1, b"\x80"))]),
        400,
        &["malformed protobuf", "tags", "UTF-8"],
    ));
    c.push(post_pb(
        "protobuf: missing id",
        pb_batch(vec![Pb::default().str(4, RUN).msg(30, Pb::default())]),
        400,
        &["events[0].id", "0 bytes"],
    ));
    c.push(post_pb(
        "protobuf: short id",
        pb_batch(vec![pb_event(&[1, 2, 3], RUN).msg(30, Pb::default())]),
        400,
        &["events[0].id", "3 bytes"],
    ));
    c.push(post_pb(
        "protobuf: zero id",
        pb_batch(vec![pb_event(&[0; 16], RUN).msg(30, Pb::default())]),
        400,
        &["events[0].id", "must not be zero"],
    ));
    let pid = new_id();
    c.push(post_pb(
        "protobuf: duplicate ids",
        pb_batch(vec![
            pb_event(&pid, RUN).msg(24, tags(&["a"])),
            pb_event(&pid, RUN).msg(24, tags(&["b"])),
        ]),
        400,
        &["events[1].id", "appears twice"],
    ));
    c.push(post_pb(
        "protobuf: no body",
        pb_batch(vec![pb_event(&new_id(), RUN)]),
        400,
        &["events[0].body", "no body"],
    ));
    c.push(post_pb(
        "protobuf: registry body",
        pb_batch(vec![pb_event(&new_id(), RUN).msg(40, Pb::default())]),
        400,
        &["events[0].body", "registry events"],
    ));
    c.push(post_pb(
        "protobuf: actor set",
        pb_batch(vec![pb_event(&new_id(), RUN).str(7, "mallory").msg(30, Pb::default())]),
        400,
        &["events[0].actor", "set by the server"],
    ));
    c.push(post_pb(
        "protobuf: ingest time set",
        pb_batch(vec![pb_event(&new_id(), RUN).uint(6, 5).msg(30, Pb::default())]),
        400,
        &["events[0].ingest_time_ms", "set by the server"],
    ));
    c.push(post_pb(
        "protobuf: another project",
        pb_batch(vec![
            pb_event(&new_id(), RUN).str(3, "elsewhere").msg(30, Pb::default()),
        ]),
        400,
        &["events[0].project", "elsewhere"],
    ));
    c.push(post_pb(
        "protobuf: unknown run state",
        pb_batch(vec![pb_event(&new_id(), RUN).msg(21, Pb::default().uint(1, 99))]),
        400,
        &["events[0].run_state.state", "99"],
    ));
    c.push(post_pb(
        "protobuf: unspecified run state",
        pb_batch(vec![pb_event(&new_id(), RUN).msg(21, Pb::default())]),
        400,
        &["events[0].run_state.state"],
    ));
    c.push(post_pb(
        "protobuf: unspecified lineage direction",
        pb_batch(vec![
            pb_event(&new_id(), RUN).msg(29, Pb::default().uint(2, 1).str(3, "data")),
        ]),
        400,
        &["events[0].lineage.direction"],
    ));
    c.push(post_pb(
        "protobuf: unknown lineage kind",
        pb_batch(vec![
            pb_event(&new_id(), RUN).msg(29, Pb::default().uint(1, 1).uint(2, 77).str(3, "data")),
        ]),
        400,
        &["events[0].lineage.kind", "77"],
    ));
    c.push(post_pb(
        "protobuf: step past 2^53",
        pb_batch(vec![
            pb_event(&new_id(), RUN).msg(26, pb_points(b"loss", &[0, MAX_STEP + 1], &[1.0, 2.0])),
        ]),
        400,
        &["events[0].float_points.steps[1]", "9007199254740992"],
    ));
    c.push(post_pb(
        "protobuf: negative client time",
        pb_batch(vec![
            pb_event(&new_id(), RUN).uint(5, (-7i64) as u64).msg(30, Pb::default()),
        ]),
        400,
        &["events[0].client_time_ms", "-7"],
    ));
    c.push(post_pb(
        "protobuf: mismatched columns",
        pb_batch(vec![
            pb_event(&new_id(), RUN).msg(26, pb_points(b"loss", &[0, 1, 2], &[1.0])),
        ]),
        400,
        &["events[0].float_points.values", "has 1 items but steps has 3"],
    ));
    let mut overlong = pb_event(&new_id(), RUN).0;
    overlong.extend_from_slice(&[0x28]); // field 5 (client_time_ms), varint
    overlong.extend_from_slice(&[0xff; 11]); // a varint longer than 10 bytes
    overlong.extend_from_slice(&Pb::default().msg(30, Pb::default()).0);
    c.push(post_pb(
        "protobuf: overlong varint",
        Pb::default().bytes(1, &overlong).0,
        400,
        &["body", "malformed protobuf"],
    ));
    c.push(post_pb(
        "protobuf: unknown run",
        pb_batch(vec![pb_event(&new_id(), "ghost-pb").msg(24, tags(&["x"]))]),
        404,
        &["events[0].run", "ghost-pb"],
    ));

    // ---- oversized bodies ----
    c.push(case(
        "declared body past 64 MiB",
        Method::POST,
        EVENTS,
        Some("application/json"),
        Payload::DeclaredLength(BATCH_LIMIT + 1),
        413,
        &["exceeds the limit"],
    ));
    c.push(case(
        "chunked body past 64 MiB",
        Method::POST,
        EVENTS,
        Some("application/json"),
        Payload::Chunked(BATCH_LIMIT + (1 << 20)),
        413,
        &["exceeds the limit"],
    ));
    c.push(case(
        "declared protobuf body past 64 MiB",
        Method::POST,
        EVENTS,
        Some("application/x-protobuf"),
        Payload::DeclaredLength(u64::MAX / 2),
        413,
        &["exceeds the limit"],
    ));
    c.push(case(
        "declared upload past the file limit",
        Method::PUT,
        run_path("/files/huge.bin"),
        Some("application/octet-stream"),
        Payload::DeclaredLength(FILE_LIMIT + 1),
        413,
        &["exceeds the limit"],
    ));

    // ---- uploads ----
    c.push(put(
        "upload with a negative step",
        run_path("/files/img.png?step=-1"),
        400,
        &["step", "step -1 is outside"],
    ));
    c.push(put(
        "upload with a step past 2^53",
        run_path(&format!("/files/img.png?step={}", MAX_STEP + 1)),
        400,
        &["step", "9007199254740992"],
    ));
    c.push(put(
        "upload with a word for a step",
        run_path("/files/img.png?step=ten"),
        400,
        &["query", "step"],
    ));
    c.push(put(
        "upload with a fractional step",
        run_path("/files/img.png?step=1.5"),
        400,
        &["query", "step"],
    ));
    c.push(put(
        "upload with a bad event id",
        run_path("/files/img.png?event_id=nope"),
        400,
        &["event_id", "UUID"],
    ));
    c.push(put(
        "upload with a zero event id",
        run_path("/files/img.png?event_id=00000000000000000000000000000000"),
        400,
        &["event_id", "must not be zero"],
    ));
    c.push(put(
        "upload with an unknown parameter",
        run_path("/files/img.png?colour=red"),
        400,
        &["query", "colour"],
    ));
    c.push(put(
        "upload to an empty path segment",
        run_path("/files/a//b.png"),
        400,
        &["path", "empty segment"],
    ));
    c.push(put(
        "upload to a path with a control char",
        run_path("/files/a%01b.png"),
        400,
        &["path", "control character"],
    ));
    c.push(put(
        "upload with a media type too long",
        run_path(&format!("/files/x.bin?media_type={}", "m".repeat(300))),
        400,
        &["media_type", "at most 255"],
    ));
    c.push(put(
        "upload to an unknown run",
        format!("{RUNS}/ghost-up/files/a.png"),
        404,
        &["ghost-up", "does not exist"],
    ));
    c.push(put(
        "upload to an invalid run id",
        format!("{RUNS}/bad%20run/files/a.png"),
        400,
        &["run", "' '"],
    ));

    // ---- reads with bad parameters ----
    c.push(get(
        "runs: limit 0",
        format!("{RUNS}?limit=0"),
        400,
        &["limit", "0 is outside"],
    ));
    c.push(get(
        "runs: limit 1001",
        format!("{RUNS}?limit=1001"),
        400,
        &["limit", "1001 is outside"],
    ));
    c.push(get(
        "runs: negative limit",
        format!("{RUNS}?limit=-1"),
        400,
        &["query", "limit"],
    ));
    c.push(get(
        "runs: bad cursor",
        format!("{RUNS}?cursor=garbage"),
        400,
        &["cursor", "garbage"],
    ));
    c.push(get(
        "runs: cursor with a bad time",
        format!("{RUNS}?cursor=x:victim"),
        400,
        &["cursor"],
    ));
    c.push(get(
        "runs: bad min_position",
        format!("{RUNS}?min_position=soon"),
        400,
        &["min_position", "soon"],
    ));
    c.push(get(
        "runs: negative offset",
        format!("{RUNS}?min_position=0:-1"),
        400,
        &["min_position"],
    ));
    c.push(get(
        "runs: empty token part",
        format!("{RUNS}?min_position=0:1,,1:2"),
        400,
        &["min_position"],
    ));
    c.push(get(
        "runs: negative wait",
        format!("{RUNS}?wait_ms=-5"),
        400,
        &["query", "wait_ms"],
    ));
    c.push(get(
        "runs: unknown parameter",
        format!("{RUNS}?colour=red"),
        400,
        &["query", "colour"],
    ));
    c.push(get(
        "run: bad min_position",
        run_path("?min_position=1;2"),
        400,
        &["min_position"],
    ));
    c.push(get(
        "run: unreachable min_position",
        run_path("?min_position=0:999999999&wait_ms=200"),
        504,
        &["have not reached", "0:999999999"],
    ));
    c.push(get(
        "run: unknown run",
        format!("{RUNS}/ghost-read"),
        404,
        &["ghost-read", "does not exist"],
    ));
    c.push(get(
        "events: limit 0",
        run_path("/events?limit=0"),
        400,
        &["limit", "0 is outside"],
    ));
    c.push(get(
        "events: limit 10001",
        run_path("/events?limit=10001"),
        400,
        &["limit", "10001 is outside"],
    ));
    c.push(get(
        "events: short cursor",
        run_path("/events?after=1:2"),
        400,
        &["after", "1:2"],
    ));
    c.push(get(
        "events: cursor of words",
        run_path("/events?after=a:b:c"),
        400,
        &["after"],
    ));
    c.push(get(
        "events: bad min_position",
        run_path("/events?min_position=-1:0"),
        400,
        &["min_position"],
    ));
    c.push(get(
        "events: unknown run",
        format!("{RUNS}/ghost-read/events"),
        404,
        &["ghost-read"],
    ));
    for (what, tail) in [
        ("series: unknown run", "series?path=loss"),
        ("series: unknown run, bucketed", "series?path=loss&buckets=10"),
        ("lines: unknown run", "lines?path=log"),
    ] {
        c.push(get(
            what,
            format!("{RUNS}/ghost-read/{tail}"),
            404,
            &["ghost-read", "does not exist"],
        ));
    }
    c.push(get("series: no path", run_path("/series"), 400, &["query", "path"]));
    c.push(get(
        "series: 0 buckets",
        run_path("/series?path=loss&buckets=0"),
        400,
        &["buckets", "0 is outside"],
    ));
    c.push(get(
        "series: too many buckets",
        run_path("/series?path=loss&buckets=100001"),
        400,
        &["buckets"],
    ));
    c.push(get(
        "series: negative buckets",
        run_path("/series?path=loss&buckets=-2"),
        400,
        &["query", "buckets"],
    ));
    c.push(get(
        "series: empty segment",
        run_path("/series?path=train//loss"),
        400,
        &["path", "empty segment"],
    ));
    c.push(get(
        "series: control char",
        run_path("/series?path=lo%07ss"),
        400,
        &["path", "control character"],
    ));
    c.push(get(
        "series: empty path",
        run_path("/series?path="),
        400,
        &["path", "path is empty"],
    ));
    c.push(get(
        "series: negative from_step",
        run_path("/series?path=loss&from_step=-1"),
        400,
        &["from_step"],
    ));
    c.push(get(
        "series: reversed range",
        run_path("/series?path=loss&from_step=10&to_step=5"),
        400,
        &["from_step", "10..=5"],
    ));
    c.push(get(
        "series: word for a step",
        run_path("/series?path=loss&to_step=end"),
        400,
        &["query", "to_step"],
    ));
    c.push(get(
        "series: limit 0",
        run_path("/series?path=loss&limit=0"),
        400,
        &["limit", "0 is outside"],
    ));
    c.push(get(
        "series: limit too big",
        run_path("/series?path=loss&limit=1000001"),
        400,
        &["limit"],
    ));
    c.push(get(
        "series: bad min_position",
        run_path("/series?path=loss&min_position=x"),
        400,
        &["min_position"],
    ));
    c.push(get(
        "series: unknown run",
        format!("{RUNS}/ghost-read/series?path=loss"),
        404,
        &["ghost-read"],
    ));
    c.push(get(
        "lines: buckets",
        run_path("/lines?path=log&buckets=4"),
        400,
        &["buckets"],
    ));
    c.push(get(
        "lines: empty segment",
        run_path("/lines?path=a//b"),
        400,
        &["path", "empty segment"],
    ));
    c.push(get(
        "lines: limit 0",
        run_path("/lines?path=log&limit=0"),
        400,
        &["limit"],
    ));
    c.push(get(
        "file: word for a step",
        run_path("/files/notes.txt?step=two"),
        400,
        &["query", "step"],
    ));
    // Path segments of the URL are names too: invalid UTF-8 there is a 400 in the API's error shape.
    c.push(get(
        "URL: invalid UTF-8 in the project",
        "/api/v1/projects/%FF/runs",
        400,
        &["project", "UTF-8"],
    ));
    c.push(get(
        "URL: invalid UTF-8 in the run",
        format!("{RUNS}/%C3%28"),
        400,
        &["run", "UTF-8"],
    ));
    c.push(put(
        "URL: invalid UTF-8 in a file path",
        run_path("/files/a%FF.txt"),
        400,
        &["path", "UTF-8"],
    ));
    c.push(case(
        "URL: invalid UTF-8 in the events project",
        Method::POST,
        "/api/v1/projects/%80/events",
        Some("application/json"),
        Payload::Bytes(
            json!({"events": [ev(json!({"run_deleted": {}}))]})
                .to_string()
                .into_bytes(),
        ),
        400,
        &["project", "UTF-8"],
    ));
    c.push(get(
        "URL: unknown route",
        "/api/v1/projects/default/nothing",
        404,
        &["/api/v1/projects/default/nothing"],
    ));
    c.push(get(
        "file: unknown file",
        run_path("/files/missing.txt"),
        404,
        &["missing.txt"],
    ));

    // ---- registry writes ----
    let admin = |name: &str, method: Method, path: &str, body: Value, status: u16, message: &[&str]| {
        case(
            name,
            method,
            path,
            Some("application/json"),
            Payload::Bytes(body.to_string().into_bytes()),
            status,
            message,
        )
    };
    c.push(admin(
        "project: bad name",
        Method::POST,
        "/api/v1/projects",
        json!({"name": "no good"}),
        400,
        &["name"],
    ));
    c.push(admin(
        "project: empty name",
        Method::POST,
        "/api/v1/projects",
        json!({"name": ""}),
        400,
        &["name", "empty"],
    ));
    c.push(case(
        "project: trailing garbage",
        Method::POST,
        "/api/v1/projects",
        Some("application/json"),
        Payload::Bytes(br#"{"name": "trailing"} garbage"#.to_vec()),
        400,
        &["trailing characters"],
    ));
    c.push(admin(
        "project: no name",
        Method::POST,
        "/api/v1/projects",
        json!({}),
        400,
        &["missing field `name`"],
    ));
    c.push(admin(
        "project: unknown field",
        Method::POST,
        "/api/v1/projects",
        json!({"name": "p1", "owner": "x"}),
        400,
        &["unknown field `owner`"],
    ));
    c.push(admin(
        "project: exists",
        Method::POST,
        "/api/v1/projects",
        json!({"name": "default"}),
        409,
        &["default"],
    ));
    c.push(case(
        "project: declared body past 64 KiB",
        Method::POST,
        "/api/v1/projects",
        Some("application/json"),
        Payload::DeclaredLength((64 << 10) + 1),
        413,
        &["exceeds the limit"],
    ));
    c.push(admin(
        "token: no grants",
        Method::POST,
        "/api/v1/tokens",
        json!({"principal": "x", "grants": []}),
        400,
        &["grants", "at least one grant"],
    ));
    c.push(admin(
        "token: unknown role",
        Method::POST,
        "/api/v1/tokens",
        json!({"principal": "x", "grants": [{"project": "default", "role": "owner"}]}),
        400,
        &["grants[0].role", "owner"],
    ));
    c.push(admin(
        "token: empty principal",
        Method::POST,
        "/api/v1/tokens",
        json!({"principal": "", "grants": [{"project": "default", "role": "viewer"}]}),
        400,
        &["principal"],
    ));
    c.push(admin(
        "token: unknown project",
        Method::POST,
        "/api/v1/tokens",
        json!({"principal": "x", "grants": [{"project": "nope", "role": "viewer"}]}),
        404,
        &["grants[0].project", "nope"],
    ));
    c.push(admin(
        "token: invalid project",
        Method::POST,
        "/api/v1/tokens",
        json!({"principal": "x", "grants": [{"project": "a b", "role": "viewer"}]}),
        400,
        &["grants[0].project"],
    ));
    c.push(case(
        "token: revoke unknown",
        Method::DELETE,
        "/api/v1/tokens/tok_doesnotexist",
        None,
        Payload::Bytes(Vec::new()),
        404,
        &["tok_doesnotexist"],
    ));
    c
}

// ---------------------------------------------------------------------------------------------
// A hand-written protobuf encoder, enough for EventBatch (schema/proto/runstream/v1/events.proto).

#[derive(Default, Clone)]
struct Pb(Vec<u8>);

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

impl Pb {
    fn key(mut self, field: u32, wire_type: u8) -> Self {
        put_varint(&mut self.0, (u64::from(field) << 3) | u64::from(wire_type));
        self
    }

    fn uint(self, field: u32, v: u64) -> Self {
        let mut s = self.key(field, 0);
        put_varint(&mut s.0, v);
        s
    }

    fn bytes(self, field: u32, b: &[u8]) -> Self {
        let mut s = self.key(field, 2);
        put_varint(&mut s.0, b.len() as u64);
        s.0.extend_from_slice(b);
        s
    }

    fn str(self, field: u32, v: &str) -> Self {
        self.bytes(field, v.as_bytes())
    }

    fn msg(self, field: u32, m: Pb) -> Self {
        self.bytes(field, &m.0)
    }

    fn packed_i64(self, field: u32, v: &[i64]) -> Self {
        let mut b = Vec::new();
        for x in v {
            put_varint(&mut b, *x as u64);
        }
        self.bytes(field, &b)
    }

    fn packed_f64(self, field: u32, v: &[f64]) -> Self {
        let b: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.bytes(field, &b)
    }
}

fn new_id() -> [u8; 16] {
    *uuid::Uuid::new_v4().as_bytes()
}

/// An Event with its id (field 1) and run (field 4); add a body with `.msg(20.., ...)`.
fn pb_event(id: &[u8], run: &str) -> Pb {
    Pb::default().bytes(1, id).str(4, run)
}

/// FloatPoints: series 1, steps 2, values 4.
fn pb_points(series: &[u8], steps: &[i64], values: &[f64]) -> Pb {
    Pb::default()
        .bytes(1, series)
        .packed_i64(2, steps)
        .packed_f64(4, values)
}

/// TagsAdded / TagsRemoved: tags 1.
fn tags(t: &[&str]) -> Pb {
    t.iter().fold(Pb::default(), |p, t| p.str(1, t))
}

fn pb_batch(events: Vec<Pb>) -> Vec<u8> {
    events.into_iter().fold(Pb::default(), |b, e| b.msg(1, e)).0
}

// ---------------------------------------------------------------------------------------------
// Running a case

async fn run_case(s: &Server, c: &Case) -> Result<(), String> {
    let (status, body) = match &c.payload {
        Payload::Bytes(b) => {
            let mut r = client().request(c.method.clone(), s.url(&c.path)).bearer_auth(&s.token);
            if let Some(ct) = c.content_type {
                r = r.header(reqwest::header::CONTENT_TYPE, ct);
            }
            if c.method != Method::GET {
                r = r.body(b.clone());
            }
            let resp = r.send().await.map_err(|e| format!("request failed: {e}"))?;
            let status = resp.status().as_u16();
            (
                status,
                resp.bytes()
                    .await
                    .map_err(|e| format!("reading the answer failed: {e}"))?
                    .to_vec(),
            )
        }
        Payload::DeclaredLength(n) => {
            raw_exchange(
                s,
                &head(s, c, &format!("Content-Length: {n}")),
                None,
                Duration::from_secs(30),
            )
            .await?
        }
        Payload::Chunked(n) => {
            raw_exchange(
                s,
                &head(s, c, "Transfer-Encoding: chunked"),
                Some(*n),
                Duration::from_secs(60),
            )
            .await?
        }
    };
    let text = String::from_utf8_lossy(&body);
    if status != c.status {
        return Err(format!("answered {status}, expected {}: {text}", c.status));
    }
    let v: Value = serde_json::from_slice(&body).map_err(|e| format!("error body is not JSON ({e}): {text}"))?;
    let want_code = match c.status {
        400 => "invalid_argument",
        404 => "not_found",
        409 => "already_exists",
        413 => "too_large",
        415 => "unsupported_media_type",
        504 => "deadline_exceeded",
        other => return Err(format!("no error code known for status {other}")),
    };
    let err = &v["error"];
    if err["code"] != want_code {
        return Err(format!("code {}, expected {want_code}: {text}", err["code"]));
    }
    let message = err["message"]
        .as_str()
        .ok_or_else(|| format!("no error.message: {text}"))?;
    for m in &c.message {
        if !message.contains(m.as_str()) {
            return Err(format!("message {message:?} does not mention {m:?}"));
        }
    }
    match &err["field"] {
        Value::Null => {}
        Value::String(f) if message.starts_with(&format!("{f}: ")) => {}
        other => {
            return Err(format!(
                "error.field {other} is not where the message {message:?} starts"
            ));
        }
    }
    Ok(())
}

fn head(s: &Server, c: &Case, length: &str) -> String {
    let host = s.base.trim_start_matches("http://");
    let ct = c
        .content_type
        .map(|ct| format!("Content-Type: {ct}\r\n"))
        .unwrap_or_default();
    format!(
        "{} {} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {}\r\n{ct}{length}\r\nConnection: close\r\n\r\n",
        c.method, c.path, s.token
    )
}

/// Sends a request head (and, for `chunked`, that many body bytes in 1 MiB chunks) over a plain
/// TCP connection and reads the answer while still sending: a server that refuses a huge body
/// answers without reading it.
async fn raw_exchange(
    s: &Server,
    head: &str,
    chunked: Option<u64>,
    timeout: Duration,
) -> Result<(u16, Vec<u8>), String> {
    let addr = s.base.trim_start_matches("http://").to_string();
    let stream = tokio::net::TcpStream::connect(&addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut rd, mut wr) = stream.into_split();
    let head = head.to_string();
    let writer = tokio::spawn(async move {
        wr.write_all(head.as_bytes()).await?;
        if let Some(total) = chunked {
            let chunk = vec![b' '; 1 << 20];
            let mut sent = 0u64;
            while sent < total {
                wr.write_all(format!("{:x}\r\n", chunk.len()).as_bytes()).await?;
                wr.write_all(&chunk).await?;
                wr.write_all(b"\r\n").await?;
                sent += chunk.len() as u64;
            }
            wr.write_all(b"0\r\n\r\n").await?;
        }
        // Keep the connection open for writing until the answer has been read.
        std::future::pending::<()>().await;
        Ok::<_, std::io::Error>(())
    });
    let answer = tokio::time::timeout(timeout, read_answer(&mut rd)).await;
    writer.abort();
    answer.map_err(|_| "no answer in time".to_string())?
}

/// Reads one HTTP/1.1 answer with a Content-Length (or ending with the connection).
async fn read_answer(rd: &mut tokio::net::tcp::OwnedReadHalf) -> Result<(u16, Vec<u8>), String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = rd
            .read(&mut chunk)
            .await
            .map_err(|e| format!("reading the answer: {e} (read so far: {buf:?})"))?;
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let status: u16 = head
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| format!("bad status line in {head:?}"))?;
            let length = head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse::<usize>().ok())
                    .flatten()
            });
            let body = &buf[end + 4..];
            match length {
                Some(len) if body.len() >= len => return Ok((status, body[..len].to_vec())),
                None if n == 0 => return Ok((status, body.to_vec())),
                _ => {}
            }
        }
        if n == 0 {
            return Err(format!(
                "connection closed before a whole answer: {:?}",
                String::from_utf8_lossy(&buf)
            ));
        }
    }
}

async fn assert_healthy(s: &Server, after: &str) {
    let r = client()
        .get(s.url("/healthz"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("/healthz failed after case {after:?}: {e}"));
    let status = r.status().as_u16();
    let body = r.text().await.unwrap_or_default();
    assert!(
        status == 200 && body.trim() == "ok",
        "/healthz answered {status} {body:?} after case {after:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Data before and after

/// Logs a run with points, lines, attributes, tags and a file; returns the position of the last
/// write.
async fn seed(s: &Server) -> String {
    let steps: Vec<i64> = (0..10).collect();
    let values: Vec<f64> = steps.iter().map(|s| 1.0 / (1.0 + *s as f64)).collect();
    let batch = json!({"events": [
        ev(json!({"run_created": {"name": "victim", "experiment": "bad-input"}})),
        ev(attrs(json!({"params": {"lr": 0.01, "optimizer": "adam"}, "labels": ["a", "b"]}))),
        ev(json!({"tags_added": {"tags": ["baseline"]}})),
        ev(json!({"float_points": {"series": "loss", "steps": steps, "values": values}})),
        ev(json!({"string_lines": {"series": "log", "steps": [0, 1], "lines": ["start", "epoch 1"]}})),
    ]});
    let (st, v) = post_events(s, "default", &batch).await;
    assert_eq!(st, 200, "seeding: {v}");
    assert_eq!(v["accepted"], 5, "seeding: {v}");

    // The same encoder the protobuf cases use must produce a batch the server takes.
    let pb = pb_batch(vec![
        pb_event(&new_id(), RUN).msg(26, pb_points(b"pb/loss", &[0, 1], &[0.5, 0.25])),
    ]);
    let r = client()
        .post(s.url(EVENTS))
        .bearer_auth(&s.token)
        .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf")
        .body(pb)
        .send()
        .await
        .expect("post protobuf");
    let st = r.status().as_u16();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    assert_eq!(
        (st, &v["accepted"]),
        (200, &json!(1)),
        "a valid hand-encoded protobuf batch was refused: {v}"
    );

    let r = client()
        .put(s.url(&run_path("/files/notes.txt")))
        .bearer_auth(&s.token)
        .body("the notes")
        .send()
        .await
        .expect("upload");
    let st = r.status().as_u16();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    assert_eq!(st, 200, "upload: {v}");
    v["position"].as_str().expect("position").to_string()
}

fn partitions(token: &str) -> HashSet<String> {
    token
        .split(',')
        .filter_map(|p| p.split_once(':'))
        .map(|(p, _)| p.to_string())
        .collect()
}

/// Appends run_created events of fresh runs, one log record each, until they reach every
/// partition `token` names; returns a token a read can wait for to see everything appended
/// before it on those partitions.
async fn barrier(s: &Server, token: &str) -> String {
    let want = partitions(token);
    for _ in 0..20 {
        let events: Vec<Value> = (0..64)
            .map(|_| {
                ev_for(
                    &format!("sentinel-{}", uuid::Uuid::new_v4().simple()),
                    json!({"run_created": {}}),
                )
            })
            .collect();
        let (st, v) = post_events(s, "default", &json!({ "events": events })).await;
        assert_eq!(st, 200, "sentinel write: {v}");
        let pos = v["position"].as_str().expect("position").to_string();
        if want.is_subset(&partitions(&pos)) {
            return pos;
        }
    }
    panic!("sentinel runs never reached the partitions of {token}");
}

/// Everything a client can read about the project's data (sentinel runs left out).
async fn snapshot(s: &Server, pos: &str) -> Vec<(String, Value)> {
    let q = format!("min_position={pos}");
    let reads = [
        ("run", run_path(&format!("?{q}"))),
        ("loss", run_path(&format!("/series?path=loss&{q}"))),
        ("pb/loss", run_path(&format!("/series?path=pb/loss&{q}"))),
        ("loss buckets", run_path(&format!("/series?path=loss&buckets=3&{q}"))),
        ("log", run_path(&format!("/lines?path=log&{q}"))),
        ("events", run_path(&format!("/events?limit=10000&{q}"))),
        ("runs", format!("{RUNS}?limit=1000&{q}")),
        ("projects", "/api/v1/projects".to_string()),
    ];
    let mut out = Vec::new();
    for (name, path) in reads {
        let (st, mut v) = get_json(s, &path).await;
        assert_eq!(st, 200, "reading {name}: {v}");
        if name == "runs" {
            let runs = v["runs"].as_array_mut().expect("runs");
            runs.retain(|r| !r["run"].as_str().unwrap_or("").starts_with("sentinel-"));
            v["next_cursor"] = Value::Null;
        }
        out.push((name.to_string(), v));
    }
    let r = client()
        .get(s.url(&run_path("/files/notes.txt")))
        .bearer_auth(&s.token)
        .send()
        .await
        .expect("file");
    assert_eq!(r.status().as_u16(), 200);
    out.push(("notes.txt".into(), json!(r.text().await.expect("file body"))));
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_requests_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path());
    let pos = seed(&s).await;
    let before = snapshot(&s, &pos).await;
    assert_eq!(before[0].1["run"]["run"], RUN, "{}", before[0].1);
    assert_eq!(
        before[1].1["steps"].as_array().map(Vec::len),
        Some(10),
        "{}",
        before[1].1
    );

    let cases = corpus();
    assert!(cases.len() >= 50, "only {} cases", cases.len());
    let mut problems = Vec::new();
    for c in &cases {
        if let Err(e) = run_case(&s, c).await {
            problems.push(format!(
                "case {:?} ({} {}): {e}",
                c.name,
                c.method,
                c.path.chars().take(120).collect::<String>()
            ));
        }
        assert_healthy(&s, &c.name).await;
    }

    let pos = barrier(&s, &pos).await;
    let after = snapshot(&s, &pos).await;
    for ((name, b), (_, a)) in before.iter().zip(&after) {
        if a != b {
            problems.push(format!("{name} changed:\n  before: {b}\n  after:  {a}"));
        }
    }
    assert!(
        problems.is_empty(),
        "{} problem(s) with {} cases:\n{}",
        problems.len(),
        cases.len(),
        problems.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// Retries

fn event_ids(events: &Value) -> Vec<String> {
    events["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["id"].as_str().expect("id").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn resending_an_accepted_batch_is_idempotent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path());
    let points_id = uuid::Uuid::new_v4();
    let created_id = uuid::Uuid::new_v4();
    let batch = json!({"events": [
        {"id": created_id.to_string(), "run": RUN, "run_created": {"name": "retried"}},
        ev(attrs(json!({"lr": 0.1}))),
        ev(json!({"tags_added": {"tags": ["t"]}})),
        {"id": points_id.to_string(), "run": RUN, "float_points": {"series": "loss", "steps": [0, 1, 2], "values": [3.0, 2.0, 1.0]}},
        ev(json!({"string_lines": {"series": "log", "steps": [0], "lines": ["hello"]}})),
    ]});
    let n = 5;
    let (st, first) = post_events(&s, "default", &batch).await;
    assert_eq!(st, 200, "{first}");
    assert_eq!(
        (first["accepted"].as_u64(), first["duplicates"].as_u64()),
        (Some(n), Some(0)),
        "{first}"
    );
    let pos = first["position"].as_str().expect("position").to_string();
    let before = snapshot_run(&s, &pos).await;
    let ids = event_ids(&before[3].1);
    assert_eq!(ids.len(), n as usize, "{}", before[3].1);

    for attempt in 0..2 {
        let (st, again) = post_events(&s, "default", &batch).await;
        assert_eq!(st, 200, "resend {attempt}: {again}");
        assert_eq!(
            (again["accepted"].as_u64(), again["duplicates"].as_u64()),
            (Some(0), Some(n)),
            "resend {attempt}: {again}"
        );
        assert_eq!(
            again["position"], first["position"],
            "a retry is answered with the first answer's position"
        );
    }

    // The same events again, now encoded as protobuf.
    let pb = pb_batch(vec![
        Pb::default()
            .bytes(1, created_id.as_bytes())
            .str(4, RUN)
            .msg(20, Pb::default().str(1, "retried")),
        Pb::default()
            .bytes(1, points_id.as_bytes())
            .str(4, RUN)
            .msg(26, pb_points(b"loss", &[0, 1, 2], &[3.0, 2.0, 1.0])),
    ]);
    let r = client()
        .post(s.url(EVENTS))
        .bearer_auth(&s.token)
        .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf")
        .body(pb)
        .send()
        .await
        .expect("post protobuf");
    let st = r.status().as_u16();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        (v["accepted"].as_u64(), v["duplicates"].as_u64()),
        (Some(0), Some(2)),
        "{v}"
    );

    // Whatever was appended before the sentinels is visible once they are.
    let seen = barrier(&s, &pos).await;
    let after = snapshot_run(&s, &seen).await;
    for ((name, b), (_, a)) in before.iter().zip(&after) {
        assert_eq!(a, b, "{name} changed after resending the batch");
    }
    let ids = event_ids(&after[3].1);
    let unique: HashSet<_> = ids.iter().collect();
    assert_eq!(
        (ids.len(), unique.len()),
        (n as usize, n as usize),
        "event history: {}",
        after[3].1
    );

    // A batch mixing an old event and a new one appends only the new one.
    let fresh = ev(json!({"float_points": {"series": "loss", "steps": [3], "values": [0.5]}}));
    let mixed = json!({"events": [batch["events"][3].clone(), fresh.clone()]});
    let (st, v) = post_events(&s, "default", &mixed).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        (v["accepted"].as_u64(), v["duplicates"].as_u64()),
        (Some(1), Some(1)),
        "{v}"
    );
    let pos = v["position"].as_str().expect("position");
    let (st, series) = get_json(&s, &run_path(&format!("/series?path=loss&min_position={pos}"))).await;
    assert_eq!(st, 200, "{series}");
    assert_eq!(series["steps"], json!([0, 1, 2, 3]), "{series}");
    assert_eq!(series["values"], json!([3.0, 2.0, 1.0, 0.5]), "{series}");
    let (st, events) = get_json(&s, &run_path(&format!("/events?limit=10000&min_position={pos}"))).await;
    assert_eq!(st, 200, "{events}");
    let ids = event_ids(&events);
    let unique: HashSet<_> = ids.iter().collect();
    assert_eq!(
        (ids.len(), unique.len()),
        (n as usize + 1, n as usize + 1),
        "event history: {events}"
    );
    assert!(ids.contains(&fresh["id"].as_str().expect("id").to_string()));
}

/// The run, its series, its lines and its event history.
async fn snapshot_run(s: &Server, pos: &str) -> Vec<(String, Value)> {
    let q = format!("min_position={pos}");
    let mut out = Vec::new();
    for (name, path) in [
        ("run", run_path(&format!("?{q}"))),
        ("loss", run_path(&format!("/series?path=loss&{q}"))),
        ("log", run_path(&format!("/lines?path=log&{q}"))),
        ("events", run_path(&format!("/events?limit=10000&{q}"))),
    ] {
        let (st, v) = get_json(s, &path).await;
        assert_eq!(st, 200, "reading {name}: {v}");
        out.push((name.to_string(), v));
    }
    out
}
