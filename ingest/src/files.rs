//! `PUT /api/v1/projects/{project}/runs/{run}/files/{path}`: a file, streamed into the blob store.
//!
//! The body is written to a temporary object while it is hashed, then moved to its
//! content-addressed key `sha256/ab/abcd...`, so equal files are stored once and a half-written
//! upload never becomes visible. The file event is appended only after the blob is in place.
//! Its id is derived from (run, path, step, content) unless the client sends one, so a retried
//! upload of the same file is recognised as a duplicate.

use axum::Json;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use futures::StreamExt;
use object_store::WriteMultipart;
use object_store::path::Path as ObjectPath;
use runstream_http::{ApiError, Authenticated, UrlPath};
use runstream_schema::json::IngestContext;
use runstream_schema::{Body as EventBody, Event, EventId, FileRef, MAX_STEP, RunId, SCHEMA_VERSION, check_path};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::events::{append, run_exists};
use crate::{IngestState, now_ms};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UploadQuery {
    step: Option<i64>,
    media_type: Option<String>,
    event_id: Option<String>,
}

/// The blob key of a content hash.
pub fn blob_key(sha256_hex: &str) -> String {
    format!("sha256/{}/{}", &sha256_hex[..2], sha256_hex)
}

pub(crate) async fn upload(
    State(st): State<IngestState>,
    Authenticated(principal): Authenticated,
    UrlPath((project, run, path)): UrlPath<(String, String, String)>,
    query: Result<Query<UploadQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    let project = st
        .registry
        .authorize(&principal, &project, runstream_schema::Role::Writer)?;
    let Query(q) = query.map_err(|e| ApiError::invalid("query", e.body_text()))?;
    let run = RunId::new(run).map_err(|e| ApiError::from(e.within("run")))?;
    upload_file(&st, &principal, &project, run, path, q.into(), &headers, body)
        .await
        .map(Json)
}

/// What an upload may say besides its bytes.
#[derive(Debug, Default)]
pub struct UploadOptions {
    pub step: Option<i64>,
    pub media_type: Option<String>,
    pub event_id: Option<String>,
}

impl From<UploadQuery> for UploadOptions {
    fn from(q: UploadQuery) -> Self {
        UploadOptions {
            step: q.step,
            media_type: q.media_type,
            event_id: q.event_id,
        }
    }
}

/// Stores an uploaded file of a run of `project` (which the caller has authorized for writing)
/// and appends its file event; answers what the upload endpoint answers.
#[allow(clippy::too_many_arguments)]
pub async fn upload_file(
    st: &IngestState,
    principal: &runstream_views::registry::Principal,
    project: &runstream_schema::ProjectId,
    run: RunId,
    path: String,
    q: UploadOptions,
    headers: &HeaderMap,
    body: Body,
) -> Result<serde_json::Value, ApiError> {
    check_path(&path).map_err(|e| ApiError::from(e.within("path")))?;
    if let Some(s) = q.step.filter(|s| !(0..=MAX_STEP).contains(s)) {
        return Err(ApiError::invalid("step", format!("step {s} is outside 0..={MAX_STEP}")));
    }
    let event_id = q
        .event_id
        .as_deref()
        .map(EventId::parse)
        .transpose()
        .map_err(|e| ApiError::from(e.within("event_id")))?;
    let ctx = IngestContext {
        workspace: principal.workspace.clone(),
        project: project.clone(),
        actor: principal.name.clone(),
        ingest_time_ms: now_ms(),
    };
    let project_key = runstream_schema::project_key(&ctx.workspace, project);
    if !run_exists(st, &project_key, run.as_str()).await? {
        return Err(ApiError::not_found(format!(
            "run {run:?} does not exist in project {project:?}; create it first with a run_created event"
        )));
    }

    let limit = st.limits.max_file_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::too_large(format!("file exceeds the limit of {limit} bytes")));
    }
    let (sha, size) = store_blob(st, body, limit).await?;
    let media_type = q
        .media_type
        .or_else(|| {
            headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        })
        .filter(|m| !m.is_empty() && m != "application/octet-stream" && m != "application/x-www-form-urlencoded")
        .unwrap_or_else(|| guess_media_type(&path).to_string());
    let id = match event_id {
        Some(id) => id,
        None => {
            let mut h = Sha256::new();
            for part in [
                project_key.as_str(),
                run.as_str(),
                path.as_str(),
                &format!("{:?}", q.step),
                &sha,
            ] {
                h.update(part.as_bytes());
                h.update([0]);
            }
            let d = h.finalize();
            EventId::from_bytes(&d[..16]).map_err(ApiError::from)?
        }
    };
    let file = FileRef {
        path: path.clone(),
        blob_key: blob_key(&sha),
        size,
        sha256: sha.clone(),
        media_type,
        step: q.step,
    };
    let event = Event {
        id,
        workspace: ctx.workspace,
        project: project.clone(),
        run,
        client_time_ms: 0,
        ingest_time_ms: ctx.ingest_time_ms,
        actor: ctx.actor,
        schema_version: SCHEMA_VERSION,
        body: EventBody::File(file.clone()),
    };
    event.body.validate().map_err(ApiError::from)?;
    let resp = append(st, project, vec![(event, None)]).await?;
    Ok(serde_json::json!({
        "path": file.path, "step": file.step, "sha256": file.sha256, "size": file.size,
        "blob_key": file.blob_key, "media_type": file.media_type, "event_id": id.to_string(),
        "duplicate": resp.duplicates > 0, "position": resp.position,
    }))
}

/// Streams the body into the blob store; returns its sha256 (hex) and size.
async fn store_blob(st: &IngestState, body: Body, limit: u64) -> Result<(String, u64), ApiError> {
    let tmp = ObjectPath::from(format!("tmp/{}", uuid::Uuid::new_v4()));
    let upload = st
        .blobs
        .put_multipart(&tmp)
        .await
        .map_err(|e| ApiError::unavailable(format!("blob store: {e}"), 1))?;
    let mut writer = WriteMultipart::new_with_chunk_size(upload, 8 << 20);
    let mut hasher = Sha256::new();
    let mut size: u64 = 0;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                let _ = writer.abort().await;
                return Err(ApiError::invalid("body", format!("reading the upload failed: {e}")));
            }
        };
        size += chunk.len() as u64;
        if size > limit {
            let _ = writer.abort().await;
            return Err(ApiError::too_large(format!("file exceeds the limit of {limit} bytes")));
        }
        hasher.update(&chunk);
        writer
            .wait_for_capacity(4)
            .await
            .map_err(|e| ApiError::unavailable(format!("blob store: {e}"), 1))?;
        writer.put(chunk);
    }
    writer
        .finish()
        .await
        .map_err(|e| ApiError::unavailable(format!("blob store: {e}"), 1))?;
    let sha = hex::encode(hasher.finalize());
    let key = ObjectPath::from(blob_key(&sha));
    st.blobs
        .rename(&tmp, &key)
        .await
        .map_err(|e| ApiError::unavailable(format!("blob store: {e}"), 1))?;
    if let Some(root) = st.blob_root.clone() {
        let k = key.to_string();
        tokio::task::spawn_blocking(move || sync_blob(&root, &k))
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?
            .map_err(|e| ApiError::unavailable(format!("blob store: syncing {key}: {e}"), 1))?;
    }
    Ok((sha, size))
}

/// Makes a blob of a local store durable before its file event is acknowledged: the file's data
/// and the directory entries naming it, up to the store's folder. The local store writes and
/// renames without syncing, so a power loss could otherwise leave an acknowledged file event
/// whose blob is empty or gone.
fn sync_blob(root: &std::path::Path, key: &str) -> std::io::Result<()> {
    let file = root.join(key);
    std::fs::File::open(&file)?.sync_all()?;
    let mut dir = file.parent();
    while let Some(d) = dir {
        std::fs::File::open(d)?.sync_all()?;
        if d == root {
            break;
        }
        dir = d.parent();
    }
    Ok(())
}

fn guess_media_type(path: &str) -> &'static str {
    let ext = path
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "svg" => "image/svg+xml",
        "json" => "application/json",
        "txt" | "log" => "text/plain",
        "csv" => "text/csv",
        "html" => "text/html",
        "yaml" | "yml" => "application/yaml",
        "pt" | "pth" | "bin" | "ckpt" | "safetensors" | "onnx" | "pkl" => "application/octet-stream",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syncing_a_blob_reaches_its_file_and_folders() {
        let root = tempfile::tempdir().unwrap();
        let key = blob_key(&"ab".repeat(32));
        let path = root.path().join(&key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"data").unwrap();
        sync_blob(root.path(), &key).unwrap();
        // A blob that is not there is an error, never a silent success.
        let missing = blob_key(&"cd".repeat(32));
        assert!(sync_blob(root.path(), &missing).is_err());
    }
}
