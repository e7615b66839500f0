//! `POST /api/v1/projects/{project}/events`: a batch of run events, as JSON or protobuf.

use std::collections::{HashMap, HashSet};

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use runstream_http::{ApiError, Authenticated, PositionToken, UrlPath, parse_json};
use runstream_log::AppendRecord;
use runstream_schema::json::{BatchJson, IngestContext};
use runstream_schema::{
    Body as EventBody, ClientBytes, Event, EventId, ProjectId, Role, WireBatch, encode_batch, encode_batch_reusing,
};
use serde::Serialize;

use crate::{IngestState, now_ms};

#[derive(Debug, Serialize)]
pub struct AppendResponse {
    /// Events appended by this request.
    pub accepted: usize,
    /// Events already appended by an earlier request with the same ids, not appended again.
    pub duplicates: usize,
    /// Pass as `min_position` to a read to see these events.
    pub position: String,
}

pub(crate) async fn append_events(
    State(st): State<IngestState>,
    Authenticated(principal): Authenticated,
    UrlPath(project): UrlPath<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<AppendResponse>, ApiError> {
    let project = st.registry.authorize(&principal, &project, Role::Writer)?;
    let bytes = read_body(&headers, body, st.limits.max_batch_bytes).await?;
    let ctx = IngestContext {
        workspace: principal.workspace.clone(),
        project: project.clone(),
        actor: principal.name.clone(),
        ingest_time_ms: now_ms(),
    };
    let events = match content_kind(&headers)? {
        Kind::Json => {
            let batch: BatchJson = parse_json(&bytes)?;
            batch
                .events
                .into_iter()
                .enumerate()
                .map(|(i, e)| {
                    e.into_event(&ctx)
                        .map(|e| (e, None))
                        .map_err(|err| err.within(&format!("events[{i}]")))
                })
                .collect::<Result<Vec<_>, _>>()?
        }
        Kind::Protobuf => WireBatch::decode(bytes)?
            .into_events(&ctx)?
            .into_iter()
            .map(|(e, raw)| (e, Some(raw)))
            .collect(),
    };
    // A file event may only name a blob this deployment stored for this project, so clients
    // cannot write them directly: the upload endpoint stores the blob and writes the event.
    if let Some(i) = events.iter().position(|(e, _)| matches!(e.body, EventBody::File(_))) {
        return Err(ApiError::invalid(
            format!("events[{i}].file"),
            "file events are written by the upload endpoint (PUT /api/v1/projects/{project}/runs/{run}/files/{path})",
        ));
    }
    append(&st, &project, events).await.map(Json)
}

enum Kind {
    Json,
    Protobuf,
}

fn content_kind(headers: &HeaderMap) -> Result<Kind, ApiError> {
    let Some(ct) = headers.get(header::CONTENT_TYPE) else {
        return Ok(Kind::Json);
    };
    let ct = ct
        .to_str()
        .map_err(|_| ApiError::unsupported_media_type("content type is not visible ASCII"))?
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match ct.as_str() {
        "application/json" | "" => Ok(Kind::Json),
        "application/x-protobuf" | "application/protobuf" | "application/vnd.google.protobuf" => Ok(Kind::Protobuf),
        other => Err(ApiError::unsupported_media_type(format!(
            "content type {other:?} is not accepted; send application/json or application/x-protobuf"
        ))),
    }
}

/// Reads a whole body, refusing it with 413 past `limit` bytes.
pub(crate) async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<bytes::Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let too_large = || {
        ApiError::too_large(format!(
            "request body exceeds the limit of {limit} bytes; send smaller batches"
        ))
    };
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        if std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>()) {
            too_large()
        } else {
            ApiError::invalid("body", format!("reading the request body failed: {e}"))
        }
    })
}

/// An event ready to append, with the client's protobuf bytes of it when it came as protobuf.
pub(crate) type Incoming = (Event, Option<ClientBytes>);

/// Validates batch-level rules, drops events already appended, and appends the rest.
pub(crate) async fn append(
    st: &IngestState,
    project: &ProjectId,
    events: Vec<Incoming>,
) -> Result<AppendResponse, ApiError> {
    if events.is_empty() {
        return Err(ApiError::invalid(
            "events",
            "the batch is empty; send at least one event",
        ));
    }
    let mut first_seen: HashMap<EventId, usize> = HashMap::with_capacity(events.len());
    for (i, (e, _)) in events.iter().enumerate() {
        if let Some(j) = first_seen.insert(e.id, i) {
            return Err(ApiError::invalid(
                format!("events[{i}].id"),
                format!("event id {} appears twice in the batch (first at events[{j}])", e.id),
            ));
        }
    }
    let project_key = events[0].0.project_key();
    ensure_runs_exist(st, &project_key, project, events.iter().map(|(e, _)| e)).await?;

    let mut duplicates = Vec::new();
    let mut fresh = Vec::with_capacity(events.len());
    for e in events {
        match st.recent.get(&e.0.id) {
            Some(pos) => duplicates.push(pos),
            None => fresh.push(e),
        }
    }
    let accepted = fresh.len();
    let points: usize = fresh
        .iter()
        .map(|(e, _)| match &e.body {
            EventBody::FloatPoints(p) => p.steps.len(),
            EventBody::StringLines(l) => l.steps.len(),
            _ => 0,
        })
        .sum();
    let mut positions = duplicates.clone();
    if !fresh.is_empty() {
        // One record per run keeps a run's events in order on one partition.
        let mut by_run: Vec<(String, Vec<Incoming>)> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        for e in fresh {
            let key = format!("{project_key}/{}", e.0.run);
            let i = *index.entry(key.clone()).or_insert_with(|| {
                by_run.push((key, Vec::new()));
                by_run.len() - 1
            });
            by_run[i].1.push(e);
        }
        let records: Vec<AppendRecord> = by_run
            .iter()
            .map(|(key, evs)| AppendRecord {
                key: key.clone(),
                payload: encode_record(evs),
            })
            .collect();
        let written = st.log.append(records).await?;
        st.recent.insert_all(
            by_run
                .iter()
                .zip(&written)
                .flat_map(|((_, evs), pos)| evs.iter().map(move |(e, _)| (e.id, *pos))),
        );
        for (_, evs) in &by_run {
            for (e, _) in evs.iter().filter(|(e, _)| matches!(e.body, EventBody::RunCreated(_))) {
                st.known_runs.insert((project_key.clone(), e.run.to_string()));
            }
        }
        positions.extend(written);
    }
    use std::sync::atomic::Ordering::Relaxed;
    st.stats.events.fetch_add(accepted as u64, Relaxed);
    st.stats.points.fetch_add(points as u64, Relaxed);
    st.stats.duplicates.fetch_add(duplicates.len() as u64, Relaxed);
    Ok(AppendResponse {
        accepted,
        duplicates: duplicates.len(),
        position: PositionToken::from_positions(positions).to_string(),
    })
}

/// One log record's payload: the client's bytes of each event when it sent protobuf (a batch of
/// points is then copied, not encoded again), else an encoding of the events.
fn encode_record(events: &[Incoming]) -> Vec<u8> {
    let reusable: Option<Vec<(&Event, &ClientBytes)>> =
        events.iter().map(|(e, raw)| raw.as_ref().map(|r| (e, r))).collect();
    match reusable {
        Some(pairs) => encode_batch_reusing(&pairs),
        None => encode_batch(events.iter().map(|(e, _)| e)),
    }
}

/// Every event must belong to a run that exists or is created earlier in the same batch.
pub(crate) async fn ensure_runs_exist<'a>(
    st: &IngestState,
    project_key: &str,
    project: &ProjectId,
    events: impl Iterator<Item = &'a Event>,
) -> Result<(), ApiError> {
    let mut ok: HashSet<&str> = HashSet::new();
    for (i, e) in events.enumerate() {
        let run = e.run.as_str();
        if matches!(e.body, EventBody::RunCreated(_)) {
            ok.insert(run);
            continue;
        }
        if ok.contains(run) {
            continue;
        }
        if run_exists(st, project_key, run).await? {
            ok.insert(run);
            continue;
        }
        return Err(ApiError::not_found(format!(
            "events[{i}].run: run {run:?} does not exist in project {project:?}; create it first with a run_created event"
        )));
    }
    Ok(())
}

/// Whether a run exists: known to this process, or in the views once they have caught up.
pub(crate) async fn run_exists(st: &IngestState, project_key: &str, run: &str) -> Result<bool, ApiError> {
    let key = (project_key.to_string(), run.to_string());
    if st.known_runs.contains(&key) {
        return Ok(true);
    }
    let exists = run_exists_in_log(st, project_key, run).await?;
    if exists {
        st.known_runs.insert(key);
    }
    Ok(exists)
}

/// Whether a run exists, as of everything in the log when asked: the views may trail the log
/// (just after a restart, say), so on a miss wait, bounded, until they have applied the run's
/// partition up to its current end, then look again.
async fn run_exists_in_log(st: &IngestState, project_key: &str, run: &str) -> Result<bool, ApiError> {
    if st.views.run_exists(project_key, run).await? {
        return Ok(true);
    }
    let partition = runstream_log::partition_for(&format!("{project_key}/{run}"), st.log.partitions());
    let end = st
        .log
        .end_offsets()
        .await?
        .get(partition as usize)
        .copied()
        .unwrap_or(0);
    let deadline = std::time::Instant::now() + RUN_LOOKUP_WAIT;
    loop {
        let applied = st.views.checkpoint().await?.get(&partition).copied().unwrap_or(0);
        if applied >= end {
            return Ok(st.views.run_exists(project_key, run).await?);
        }
        if std::time::Instant::now() >= deadline {
            return Err(ApiError::unavailable(
                format!("views are catching up with the log; cannot yet tell whether run {run:?} exists"),
                1,
            ));
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

const RUN_LOOKUP_WAIT: std::time::Duration = std::time::Duration::from_secs(10);
