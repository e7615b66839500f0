//! Artifacts: MLflow's proxied artifact service (`/api/2.0/mlflow-artifacts/artifacts/...`)
//! and `artifacts/list`, over runstream's run files.
//!
//! A run's artifact URI is `mlflow-artifacts:/EXPERIMENT/RUN/artifacts`; the client turns it into
//! `PUT`, `GET` and list requests under the proxied service. An artifact `dir/model.pkl` is the
//! run's file `dir/model.pkl`, stored content-addressed in the blob store like every upload, so
//! files uploaded through runstream's own API are MLflow artifacts too.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use futures::TryStreamExt;
use runstream_ingest::UploadOptions;
use runstream_schema::{Role, RunId};
use runstream_views::registry::Principal;
use serde_json::{Value, json};

use crate::req::{Answer, MlflowError, Req};
use crate::{Ctx, MlflowAuth, MlflowState, ok};

/// `EXPERIMENT/RUN/artifacts[/PATH]` split into the run and the artifact path ("" for the root).
fn locate(full: &str) -> Result<(RunId, String), MlflowError> {
    let bad = || {
        MlflowError::invalid(format!(
            "Invalid artifact path '{full}': runstream serves artifacts at EXPERIMENT_ID/RUN_ID/artifacts/PATH"
        ))
    };
    // EXPERIMENT/RUN/artifacts/PATH, or EXPERIMENT/models/MODEL/artifacts/PATH for a logged
    // model (kept as a run of its own).
    let (_experiment, rest) = full.trim_matches('/').split_once('/').ok_or_else(bad)?;
    let rest = rest.strip_prefix("models/").unwrap_or(rest);
    let (run, rest) = rest.split_once('/').ok_or_else(bad)?;
    let (root, path) = rest.split_once('/').unwrap_or((rest, ""));
    if root != "artifacts" {
        return Err(bad());
    }
    let path = path.trim_end_matches('/').to_string();
    if path.split('/').any(|s| s == "..") {
        return Err(MlflowError::invalid(format!(
            "Invalid artifact path '{full}': '..' is not allowed"
        )));
    }
    let run = RunId::new(run).map_err(|_| MlflowError::not_found(format!("Run with id={run} not found")))?;
    Ok((run, path))
}

/// The entries directly under `dir` ("" for the root) among a run's file paths, with their
/// sizes (`None` for a directory), by path.
pub(crate) fn entries_under(files: &[(String, u64)], dir: &str) -> BTreeMap<String, Option<u64>> {
    let mut out = BTreeMap::new();
    for (path, size) in files {
        let rest = if dir.is_empty() {
            Some(path.as_str())
        } else {
            path.strip_prefix(dir).and_then(|r| r.strip_prefix('/'))
        };
        let Some(rest) = rest.filter(|r| !r.is_empty()) else {
            continue;
        };
        match rest.split_once('/') {
            Some((sub, _)) => {
                out.insert(sub.to_string(), None);
            }
            None => {
                out.entry(rest.to_string()).or_insert(Some(*size));
            }
        }
    }
    out
}

async fn run_files(st: &MlflowState, ctx: &Ctx, run: &RunId) -> Result<Vec<(String, u64)>, MlflowError> {
    st.caught_up().await?;
    let d = st
        .ingest
        .views
        .get_run(&ctx.key, run.as_str())
        .await?
        .ok_or_else(|| MlflowError::not_found(format!("Run with id={run} not found")))?;
    Ok(d.files.into_iter().map(|f| (f.path, f.size)).collect())
}

pub(crate) fn file_json(path: String, size: Option<u64>) -> Value {
    match size {
        Some(n) => json!({"path": path, "is_dir": false, "file_size": n}),
        None => json!({"path": path, "is_dir": true}),
    }
}

/// `GET /api/2.0/mlflow-artifacts/artifacts?path=EXPERIMENT/RUN/artifacts/DIR`: the entries of a
/// directory, named relative to it.
pub(crate) async fn proxied_list(State(st): State<MlflowState>, MlflowAuth(p): MlflowAuth, req: Req) -> Answer {
    let ctx = Ctx::of(&st, p, Role::Viewer)?;
    let full = req.str("path")?.unwrap_or_default();
    if full.trim_matches('/').is_empty() {
        return ok(json!({ "files": [] }));
    }
    let (run, dir) = locate(&full)?;
    let files = run_files(&st, &ctx, &run).await?;
    let listed: Vec<Value> = entries_under(&files, &dir)
        .into_iter()
        .map(|(name, size)| file_json(name, size))
        .collect();
    ok(json!({ "files": listed }))
}

/// `GET /api/2.0/mlflow/artifacts/list?run_id=&path=`: the entries of a run's directory, named
/// from the run's artifact root.
pub(crate) async fn list(State(st): State<MlflowState>, MlflowAuth(p): MlflowAuth, req: Req) -> Answer {
    let ctx = Ctx::of(&st, p, Role::Viewer)?;
    let raw = req.run_id()?;
    let run = RunId::new(raw.as_str()).map_err(|_| MlflowError::not_found(format!("Run with id={raw} not found")))?;
    let dir = req.str("path")?.unwrap_or_default().trim_matches('/').to_string();
    let files = run_files(&st, &ctx, &run).await?;
    let d = st.ingest.views.get_run(&ctx.key, run.as_str()).await?;
    let experiment = match d {
        Some(d) => crate::experiments::id_for_run_experiment(&st, &ctx, &d.run.experiment).await?,
        None => 0,
    };
    let listed: Vec<Value> = entries_under(&files, &dir)
        .into_iter()
        .map(|(name, size)| {
            let path = if dir.is_empty() { name } else { format!("{dir}/{name}") };
            file_json(path, size)
        })
        .collect();
    ok(json!({
        "root_uri": format!("mlflow-artifacts:/{experiment}/{run}/artifacts"),
        "files": listed,
    }))
}

/// `GET /api/2.0/mlflow-artifacts/artifacts/EXPERIMENT/RUN/artifacts/PATH`: a file's bytes.
pub(crate) async fn download(
    State(st): State<MlflowState>,
    MlflowAuth(p): MlflowAuth,
    Path(full): Path<String>,
) -> Result<Response, MlflowError> {
    let ctx = Ctx::of(&st, p, Role::Viewer)?;
    let (run, path) = locate(&full)?;
    st.caught_up().await?;
    let missing = || MlflowError::not_found(format!("Artifact '{path}' of run {run} does not exist"));
    if path.is_empty() {
        return Err(missing());
    }
    let f = st
        .ingest
        .views
        .get_file(&ctx.key, run.as_str(), &path, None)
        .await?
        .ok_or_else(missing)?;
    let got = st
        .ingest
        .blobs
        .get(&object_store::path::Path::from(f.blob_key.clone()))
        .await
        .map_err(|e| runstream_http::ApiError::unavailable(format!("blob {}: {e}", f.blob_key), 1))?;
    let stream = got.into_stream().map_err(std::io::Error::other);
    let mut resp = Body::from_stream(stream).into_response();
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&f.media_type) {
        h.insert(header::CONTENT_TYPE, v);
    }
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(f.size));
    Ok(resp)
}

/// `PUT /api/2.0/mlflow-artifacts/artifacts/EXPERIMENT/RUN/artifacts/PATH`: stores a file.
pub(crate) async fn upload(
    State(st): State<MlflowState>,
    MlflowAuth(p): MlflowAuth,
    Path(full): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Answer {
    let ctx = Ctx::of(&st, p, Role::Writer)?;
    let (run, path) = locate(&full)?;
    if path.is_empty() {
        return Err(MlflowError::invalid(format!(
            "Invalid artifact path '{full}': name a file"
        )));
    }
    let Ctx { principal, project, .. } = &ctx;
    let answer = upload_as(&st, principal, project, run, path, &headers, body).await?;
    if let Some(pos) = answer.get("position").and_then(Value::as_str) {
        st.note_written(pos);
    }
    ok(json!({}))
}

async fn upload_as(
    st: &MlflowState,
    principal: &Principal,
    project: &runstream_schema::ProjectId,
    run: RunId,
    path: String,
    headers: &HeaderMap,
    body: Body,
) -> Result<Value, MlflowError> {
    Ok(runstream_ingest::upload_file(
        &st.ingest,
        principal,
        project,
        run,
        path,
        UploadOptions::default(),
        headers,
        body,
    )
    .await?)
}

/// Artifacts are immutable in runstream: a run's files are events of its history.
pub(crate) async fn delete(MlflowAuth(_): MlflowAuth) -> MlflowError {
    MlflowError::new(
        axum::http::StatusCode::NOT_IMPLEMENTED,
        "NOT_IMPLEMENTED",
        "runstream keeps every artifact a run logged: artifacts cannot be deleted",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_paths_name_a_run_and_a_path_under_its_root() {
        let (run, path) = locate("1/abc/artifacts/model/MLmodel").unwrap();
        assert_eq!((run.as_str(), path.as_str()), ("abc", "model/MLmodel"));
        let (_, path) = locate("1/abc/artifacts").unwrap();
        assert_eq!(path, "");
        assert!(locate("1/abc/other/x").is_err());
        assert!(locate("1/abc/artifacts/../x").is_err());
        assert_eq!(locate("1/a b/artifacts/x").unwrap_err().code, "RESOURCE_DOES_NOT_EXIST");
        let (run, path) = locate("1/models/m-abc/artifacts/MLmodel").unwrap();
        assert_eq!((run.as_str(), path.as_str()), ("m-abc", "MLmodel"));
    }

    #[test]
    fn a_listing_shows_files_and_directories_directly_under_a_path() {
        let files = vec![
            ("model/MLmodel".to_string(), 10),
            ("model/data/w.bin".to_string(), 20),
            ("notes.txt".to_string(), 3),
            ("modelx".to_string(), 1),
        ];
        let root = entries_under(&files, "");
        assert_eq!(root.get("model"), Some(&None));
        assert_eq!(root.get("notes.txt"), Some(&Some(3)));
        assert_eq!(root.len(), 3);
        let model = entries_under(&files, "model");
        assert_eq!(
            model.into_iter().collect::<Vec<_>>(),
            [("MLmodel".to_string(), Some(10)), ("data".to_string(), None)]
        );
    }
}
