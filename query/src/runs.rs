//! Runs: list, one run in full, its event history, its files.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use futures::TryStreamExt;
use runstream_http::{ApiError, Authenticated, UrlPath};
use runstream_schema::json::{EventJson, JsonF64, value_to_json};
use runstream_schema::{Role, decode_batch, project_key};
use serde::Deserialize;

use crate::QueryState;
use crate::consistency::wait_for;

pub(crate) fn query<T: serde::de::DeserializeOwned>(
    q: Result<Query<T>, axum::extract::rejection::QueryRejection>,
) -> Result<T, ApiError> {
    q.map(|Query(v)| v)
        .map_err(|e| ApiError::invalid("query", e.body_text()))
}

pub(crate) async fn list_projects(
    State(st): State<QueryState>,
    Authenticated(p): Authenticated,
) -> Result<Json<serde_json::Value>, ApiError> {
    let projects: Vec<_> = st
        .registry
        .projects(&p.workspace)
        .into_iter()
        .filter_map(|id| {
            p.role_on(&id)
                .map(|r| serde_json::json!({ "project": id, "role": r.as_str() }))
        })
        .collect();
    Ok(Json(
        serde_json::json!({ "workspace": p.workspace, "projects": projects }),
    ))
}

/// `value` if it lies in `1..=max`, else a 400 naming `field`.
pub(crate) fn in_range(field: &str, value: usize, max: usize) -> Result<usize, ApiError> {
    if (1..=max).contains(&value) {
        Ok(value)
    } else {
        Err(ApiError::invalid(field, format!("{value} is outside 1..={max}")))
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReadOpts {
    min_position: Option<String>,
    wait_ms: Option<u64>,
}

pub(crate) async fn get_run(
    State(st): State<QueryState>,
    Authenticated(p): Authenticated,
    UrlPath((project, run)): UrlPath<(String, String)>,
    q: Result<Query<ReadOpts>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let project = st.registry.authorize(&p, &project, Role::Viewer)?;
    let q = query(q)?;
    wait_for(st.views.as_ref(), q.min_position.as_deref(), q.wait_ms).await?;
    let pk = project_key(&p.workspace, &project);
    let d = st
        .views
        .get_run(&pk, &run)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("run {run:?} does not exist in project {project:?}")))?;
    let attributes: BTreeMap<_, _> = d
        .attributes
        .iter()
        .map(|(k, v)| (k.clone(), value_to_json(v)))
        .collect();
    let metrics: BTreeMap<_, _> = d
        .series
        .iter()
        .filter(|s| s.kind == "float")
        .map(|s| {
            let f = |v: Option<f64>| v.map(|x| serde_json::to_value(JsonF64(x)).unwrap_or_default());
            (
                s.path.clone(),
                serde_json::json!({
                    "last": f(s.last_value), "last_step": s.last_step, "min": f(s.min), "max": f(s.max),
                    "mean": f(s.mean), "count": s.count,
                }),
            )
        })
        .collect();
    let lineage: Vec<_> = d
        .lineage
        .iter()
        .map(|l| {
            serde_json::json!({
                "direction": l.direction.as_str(), "kind": l.kind.as_str(), "name": l.name,
                "version": l.version, "digest": l.digest, "uri": l.uri, "time_ms": l.time_ms,
            })
        })
        .collect();
    Ok(Json(serde_json::json!({
        "run": d.run, "attributes": attributes, "tags": d.tags, "metrics": metrics,
        "series": d.series, "files": d.files, "lineage": lineage,
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventsQuery {
    after: Option<String>,
    limit: Option<usize>,
    min_position: Option<String>,
    wait_ms: Option<u64>,
}

pub(crate) async fn run_events(
    State(st): State<QueryState>,
    Authenticated(p): Authenticated,
    UrlPath((project, run)): UrlPath<(String, String)>,
    q: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let project = st.registry.authorize(&p, &project, Role::Viewer)?;
    let q = query(q)?;
    wait_for(st.views.as_ref(), q.min_position.as_deref(), q.wait_ms).await?;
    let limit = in_range("limit", q.limit.unwrap_or(100), 10_000)?;
    let after = match q.after.as_deref() {
        None | Some("") => None,
        Some(a) => {
            let parts: Vec<_> = a.split(':').collect();
            let parsed = (parts.len() == 3)
                .then(|| Some((parts[0].parse().ok()?, parts[1].parse().ok()?, parts[2].parse().ok()?)))
                .flatten();
            Some(parsed.ok_or_else(|| ApiError::invalid("after", format!("{a:?} is not a cursor this API returned")))?)
        }
    };
    let pk = project_key(&p.workspace, &project);
    if !st.views.run_exists(&pk, &run).await? {
        return Err(ApiError::not_found(format!(
            "run {run:?} does not exist in project {project:?}"
        )));
    }
    let stored = st.views.run_events(&pk, &run, after, limit).await?;
    let next = (stored.len() == limit)
        .then(|| stored.last().map(|e| format!("{}:{}:{}", e.partition, e.offset, e.seq)))
        .flatten();
    let mut events = Vec::with_capacity(stored.len());
    // Consecutive events of a run mostly share a log record (one per run per write): read and
    // decode each record once.
    let mut record: Option<((u32, u64), Vec<runstream_schema::Event>)> = None;
    for s in &stored {
        let at = (s.partition, s.offset);
        if record.as_ref().is_none_or(|(p, _)| *p != at) {
            let read = st.log.read(s.partition, s.offset, 1).await.map_err(|e| {
                ApiError::unavailable(format!("reading the log at {}:{}: {e}", s.partition, s.offset), 1)
            })?;
            let raw = read
                .into_iter()
                .find(|r| r.position.offset == s.offset)
                .ok_or_else(|| ApiError::internal(format!("log record {}:{} is missing", s.partition, s.offset)))?;
            let decoded = decode_batch(&raw.payload)
                .map_err(|e| ApiError::internal(format!("log record {}:{}: {e}", s.partition, s.offset)))?;
            record = Some((at, decoded));
        }
        let (_, decoded) = record.as_ref().expect("just read");
        let e = decoded
            .get(s.seq as usize)
            .filter(|e| e.id == s.id)
            .ok_or_else(|| ApiError::internal(format!("event {} is not in log record {}:{}", s.id, at.0, at.1)))?;
        let mut v = serde_json::to_value(EventJson::from_event(e)).map_err(|e| ApiError::internal(e.to_string()))?;
        v["position"] = serde_json::json!(format!("{}:{}", s.partition, s.offset));
        events.push(v);
    }
    Ok(Json(serde_json::json!({ "events": events, "next": next })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileQuery {
    step: Option<i64>,
    min_position: Option<String>,
    wait_ms: Option<u64>,
}

pub(crate) async fn download_file(
    State(st): State<QueryState>,
    Authenticated(p): Authenticated,
    UrlPath((project, run, path)): UrlPath<(String, String, String)>,
    q: Result<Query<FileQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let project = st.registry.authorize(&p, &project, Role::Viewer)?;
    let q = query(q)?;
    wait_for(st.views.as_ref(), q.min_position.as_deref(), q.wait_ms).await?;
    let pk = project_key(&p.workspace, &project);
    let f = st.views.get_file(&pk, &run, &path, q.step).await?.ok_or_else(|| {
        ApiError::not_found(format!(
            "file {path:?}{} of run {run:?} does not exist",
            q.step.map(|s| format!(" at step {s}")).unwrap_or_default()
        ))
    })?;
    let got = st
        .blobs
        .get(&object_store::path::Path::from(f.blob_key.clone()))
        .await
        .map_err(|e| ApiError::unavailable(format!("blob {}: {e}", f.blob_key), 1))?;
    let stream = got.into_stream().map_err(std::io::Error::other);
    let mut resp = Body::from_stream(stream).into_response();
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&f.media_type) {
        h.insert(header::CONTENT_TYPE, v);
    }
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(f.size));
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", f.sha256)) {
        h.insert(header::ETAG, v);
    }
    Ok(resp)
}
