//! `logged-models/...`: MLflow 3's logged models, which `log_model` and autologging create.
//!
//! A logged model is kept as a runstream run nested under the run that produced it (its source
//! run), carrying the model's name, status, params, tags, metrics and artifact files, and marked
//! by the attribute `logged_model/status`. The source run records the model as a lineage output
//! (kind `model`, version = model id), so `produced(model, NAME)` finds the runs that trained it.
//! MLflow's run search leaves model runs out.

use axum::extract::{Path, State};
use runstream_schema::{ArtifactKind, Body, Direction, LineageLink, Role, RunCreated, RunId};
use runstream_views::RunDetail;
use runstream_views::search::{Field, Filter, RunSearch, SystemField};
use serde_json::{Value, json};

use crate::experiments::{find, id_for_run_experiment};
use crate::req::{Answer, MlflowError, Req};
use crate::runs::{
    append, check_param_value, check_tag_value, detail, event, latest_metrics, new_params, params_of, run_id,
    set_strings, string_attr, tag_pair,
};
use crate::search::{Kind, Resolved, field_of, in_experiments, page_token, parse_filter_with, parse_page_token};
use crate::{Ctx, MlflowAuth, MlflowState, now_ms, ok};

/// The attribute that marks a run as a logged model, holding its status.
pub(crate) const STATUS_ATTR: &str = "logged_model/status";
const TYPE_ATTR: &str = "logged_model/model_type";
const PENDING: &str = "LOGGED_MODEL_PENDING";

/// The filter that leaves logged models out of a run search.
pub(crate) fn not_a_model() -> Filter {
    Filter::Not(Box::new(Filter::Exists(Field::Attr(STATUS_ATTR.into()))))
}

fn attr_text(d: &RunDetail, path: &str) -> Option<String> {
    d.attributes.iter().find(|(p, _)| p == path).map(|(_, v)| match v {
        runstream_schema::Value::String(s) => s.clone(),
        other => format!("{other:?}"),
    })
}

fn is_model(d: &RunDetail) -> bool {
    d.attributes.iter().any(|(p, _)| p == STATUS_ATTR)
}

async fn model_json(st: &MlflowState, ctx: &Ctx, d: &RunDetail) -> Result<Value, MlflowError> {
    let experiment = id_for_run_experiment(st, ctx, &d.run.experiment).await?;
    let id = &d.run.run;
    let tags: Vec<Value> = d
        .attributes
        .iter()
        .filter_map(|(p, v)| Some((p.strip_prefix("tags/")?, v)))
        .map(|(k, v)| {
            let v = match v {
                runstream_schema::Value::String(s) => s.clone(),
                other => format!("{other:?}"),
            };
            json!({"key": k, "value": v})
        })
        .collect();
    let metrics = latest_metrics(d, Some(id));
    let mut info = json!({
        "model_id": id,
        "experiment_id": experiment.to_string(),
        "name": d.run.name,
        "creation_timestamp_ms": d.run.created_ms,
        "last_updated_timestamp_ms": d.run.updated_ms,
        "artifact_uri": format!("mlflow-artifacts:/{experiment}/models/{id}/artifacts"),
        "status": attr_text(d, STATUS_ATTR).unwrap_or_else(|| PENDING.into()),
        "tags": tags,
    });
    if let Some(t) = attr_text(d, TYPE_ATTR) {
        info["model_type"] = t.into();
    }
    if let Some(src) = &d.run.parent_run {
        info["source_run_id"] = src.clone().into();
    }
    Ok(json!({
        "info": info,
        "data": {
            "params": params_of(d).into_iter().map(|(k, v)| json!({"key": k, "value": v})).collect::<Vec<_>>(),
            "metrics": metrics,
        },
    }))
}

async fn model_detail(st: &MlflowState, ctx: &Ctx, raw: &str) -> Result<RunDetail, MlflowError> {
    let missing = || MlflowError::not_found(format!("Logged model with ID '{raw}' not found."));
    let id = RunId::new(raw).map_err(|_| missing())?;
    let d = detail(st, ctx, &id).await.map_err(|_| missing())?;
    if !is_model(&d) || d.run.deleted {
        return Err(missing());
    }
    Ok(d)
}

fn pairs(req: &Req, field: &str) -> Result<Vec<(String, String)>, MlflowError> {
    req.list(field)
        .iter()
        .enumerate()
        .map(|(i, v)| tag_pair(v, &format!("{field}[{i}].key")))
        .collect()
}

fn status_of(raw: &str) -> Result<&'static str, MlflowError> {
    Ok(match raw {
        "LOGGED_MODEL_PENDING" | "1" => "LOGGED_MODEL_PENDING",
        "LOGGED_MODEL_READY" | "2" => "LOGGED_MODEL_READY",
        "LOGGED_MODEL_UPLOAD_FAILED" | "3" => "LOGGED_MODEL_UPLOAD_FAILED",
        other => {
            return Err(MlflowError::invalid(format!(
                "Invalid value {other:?} for parameter 'status': expected LOGGED_MODEL_PENDING, LOGGED_MODEL_READY or LOGGED_MODEL_UPLOAD_FAILED"
            )));
        }
    })
}

/// `POST logged-models`.
pub(crate) async fn create(State(st): State<MlflowState>, MlflowAuth(p): MlflowAuth, req: Req) -> Answer {
    let ctx = Ctx::of(&st, p, Role::Writer)?;
    let experiment = find(&st, &ctx, &req.required_str("experiment_id")?)?;
    let source = match req.str("source_run_id")?.filter(|s| !s.is_empty()) {
        Some(raw) => Some(detail(&st, &ctx, &run_id(&raw)?).await?),
        None => None,
    };
    let name = req
        .str("name")?
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "model".to_string());
    let tags = pairs(&req, "tags")?;
    let params = pairs(&req, "params")?;
    for (k, v) in &tags {
        check_tag_value(k, v)?;
    }
    for (k, v) in &params {
        check_param_value(k, v)?;
    }
    let id = RunId::new(format!("m-{}", uuid::Uuid::new_v4().simple())).map_err(|e| MlflowError::invalid(e.message))?;
    let now = now_ms();
    let mut attrs = vec![string_attr(STATUS_ATTR.into(), PENDING.into())];
    if let Some(t) = req.str("model_type")?.filter(|t| !t.is_empty()) {
        attrs.push(string_attr(TYPE_ATTR.into(), t));
    }
    attrs.extend(tags.into_iter().map(|(k, v)| string_attr(format!("tags/{k}"), v)));
    attrs.extend(params.into_iter().map(|(k, v)| string_attr(format!("params/{k}"), v)));
    let mut events = vec![
        event(
            &ctx,
            &id,
            now,
            Body::RunCreated(RunCreated {
                name: name.clone(),
                experiment: if experiment.id == 0 {
                    String::new()
                } else {
                    experiment.name.clone()
                },
                parent_run: source.as_ref().and_then(|s| RunId::new(s.run.run.clone()).ok()),
                description: String::new(),
            }),
        ),
        event(&ctx, &id, now, Body::AttributesSet(attrs)),
    ];
    if let Some(src) = &source {
        let src_id = run_id(&src.run.run)?;
        events.push(event(&ctx, &src_id, now, produced(&name, &id)));
    }
    append(&st, &ctx, events).await?;
    let d = detail(&st, &ctx, &id).await?;
    ok(json!({ "model": model_json(&st, &ctx, &d).await? }))
}

fn produced(name: &str, model: &RunId) -> Body {
    Body::Lineage(LineageLink {
        direction: Direction::Output,
        kind: ArtifactKind::Model,
        name: name.to_string(),
        version: model.to_string(),
        digest: String::new(),
        uri: format!("models:/{model}"),
    })
}

/// `GET logged-models/{model_id}`.
pub(crate) async fn get(State(st): State<MlflowState>, MlflowAuth(p): MlflowAuth, Path(id): Path<String>) -> Answer {
    let ctx = Ctx::of(&st, p, Role::Viewer)?;
    let d = model_detail(&st, &ctx, &id).await?;
    ok(json!({ "model": model_json(&st, &ctx, &d).await? }))
}

/// `PATCH logged-models/{model_id}`: finalize with a status.
pub(crate) async fn finalize(
    State(st): State<MlflowState>,
    MlflowAuth(p): MlflowAuth,
    Path(id): Path<String>,
    req: Req,
) -> Answer {
    let ctx = Ctx::of(&st, p, Role::Writer)?;
    let d = model_detail(&st, &ctx, &id).await?;
    let status = status_of(&req.required_str("status")?)?;
    let run = run_id(&d.run.run)?;
    let attr = string_attr(STATUS_ATTR.into(), status.into());
    append(
        &st,
        &ctx,
        vec![event(&ctx, &run, now_ms(), Body::AttributesSet(vec![attr]))],
    )
    .await?;
    let d = detail(&st, &ctx, &run).await?;
    ok(json!({ "model": model_json(&st, &ctx, &d).await? }))
}

/// `DELETE logged-models/{model_id}`.
pub(crate) async fn delete(State(st): State<MlflowState>, MlflowAuth(p): MlflowAuth, Path(id): Path<String>) -> Answer {
    let ctx = Ctx::of(&st, p, Role::Writer)?;
    let d = model_detail(&st, &ctx, &id).await?;
    let run = run_id(&d.run.run)?;
    append(&st, &ctx, vec![event(&ctx, &run, now_ms(), Body::RunDeleted)]).await?;
    ok(json!({}))
}

/// `PATCH logged-models/{model_id}/tags`.
pub(crate) async fn set_tags(
    State(st): State<MlflowState>,
    MlflowAuth(p): MlflowAuth,
    Path(id): Path<String>,
    req: Req,
) -> Answer {
    let ctx = Ctx::of(&st, p, Role::Writer)?;
    let d = model_detail(&st, &ctx, &id).await?;
    let tags = pairs(&req, "tags")?;
    for (k, v) in &tags {
        check_tag_value(k, v)?;
    }
    set_strings(&st, &ctx, &run_id(&d.run.run)?, "tags", tags).await?;
    ok(json!({}))
}

/// `DELETE logged-models/{model_id}/tags/{key}`.
pub(crate) async fn delete_tag(
    State(st): State<MlflowState>,
    MlflowAuth(p): MlflowAuth,
    Path((id, key)): Path<(String, String)>,
) -> Answer {
    let ctx = Ctx::of(&st, p, Role::Writer)?;
    let d = model_detail(&st, &ctx, &id).await?;
    let path = format!("tags/{key}");
    if !d.attributes.iter().any(|(p, _)| *p == path) {
        return Err(MlflowError::not_found(format!(
            "No tag with key '{key}' on logged model '{id}'"
        )));
    }
    let run = run_id(&d.run.run)?;
    append(
        &st,
        &ctx,
        vec![event(&ctx, &run, now_ms(), Body::AttributesDeleted(vec![path]))],
    )
    .await?;
    ok(json!({}))
}

/// `POST logged-models/{model_id}/params`.
pub(crate) async fn log_params(
    State(st): State<MlflowState>,
    MlflowAuth(p): MlflowAuth,
    Path(id): Path<String>,
    req: Req,
) -> Answer {
    let ctx = Ctx::of(&st, p, Role::Writer)?;
    let d = model_detail(&st, &ctx, &id).await?;
    let params = pairs(&req, "params")?;
    for (k, v) in &params {
        check_param_value(k, v)?;
    }
    let fresh = new_params(&d, params)?;
    set_strings(&st, &ctx, &run_id(&d.run.run)?, "params", fresh).await?;
    ok(json!({}))
}

/// `GET logged-models/{model_id}/artifacts/directories`.
pub(crate) async fn list_artifacts(
    State(st): State<MlflowState>,
    MlflowAuth(p): MlflowAuth,
    Path(id): Path<String>,
    req: Req,
) -> Answer {
    let ctx = Ctx::of(&st, p, Role::Viewer)?;
    let d = model_detail(&st, &ctx, &id).await?;
    let dir = req.str("artifact_directory_path")?.unwrap_or_default();
    let dir = dir.trim_matches('/');
    let files: Vec<(String, u64)> = d.files.iter().map(|f| (f.path.clone(), f.size)).collect();
    let experiment = id_for_run_experiment(&st, &ctx, &d.run.experiment).await?;
    let listed: Vec<Value> = crate::artifacts::entries_under(&files, dir)
        .into_iter()
        .map(|(name, size)| {
            let path = if dir.is_empty() { name } else { format!("{dir}/{name}") };
            crate::artifacts::file_json(path, size)
        })
        .collect();
    ok(json!({
        "root_uri": format!("mlflow-artifacts:/{experiment}/models/{id}/artifacts"),
        "files": listed,
    }))
}

/// `POST runs/outputs`: models a run produced, as lineage outputs of the run.
pub(crate) async fn log_outputs(State(st): State<MlflowState>, MlflowAuth(p): MlflowAuth, req: Req) -> Answer {
    let ctx = Ctx::of(&st, p, Role::Writer)?;
    let run = run_id(&req.run_id()?)?;
    let mut events = Vec::new();
    for (i, m) in req.list("models").iter().enumerate() {
        let raw = m.get("model_id").and_then(Value::as_str).unwrap_or_default();
        if raw.is_empty() {
            return Err(MlflowError::missing(&format!("models[{i}].model_id")));
        }
        let d = model_detail(&st, &ctx, raw).await?;
        events.push(event(&ctx, &run, now_ms(), produced(&d.run.name, &run_id(raw)?)));
    }
    crate::runs::detail(&st, &ctx, &run).await?;
    append(&st, &ctx, events).await?;
    ok(json!({}))
}

/// `POST logged-models/search`: models of the experiments, filtered by `name`, `model_id`,
/// `source_run_id`, `status`, `params.K`, `tags.K` and `metrics.K`, newest first.
pub(crate) async fn search(State(st): State<MlflowState>, MlflowAuth(p): MlflowAuth, req: Req) -> Answer {
    let ctx = Ctx::of(&st, p, Role::Viewer)?;
    let experiments = in_experiments(&st, &ctx, &req)?;
    let max = req.i64("max_results")?.unwrap_or(100).clamp(1, 10_000) as usize;
    let mut all = vec![Filter::Exists(Field::Attr(STATUS_ATTR.into()))];
    all.extend(experiments);
    let text = req.str("filter")?.unwrap_or_default();
    all.push(parse_filter_with(&text, model_field)?);
    let after = req
        .str("page_token")?
        .filter(|t| !t.is_empty())
        .map(|t| parse_page_token(&t))
        .transpose()?;
    st.caught_up().await?;
    let (page, details) = st
        .ingest
        .views
        .search_run_details(RunSearch {
            project: ctx.key.clone(),
            filter: Filter::And(all),
            include_deleted: false,
            sort: Default::default(),
            after,
            limit: max,
            columns: Vec::new(),
        })
        .await?;
    let mut models = Vec::new();
    for d in &details {
        models.push(model_json(&st, &ctx, d).await?);
    }
    let mut answer = json!({ "models": models });
    if let Some(next) = &page.next {
        answer["next_page_token"] = page_token(next).into();
    }
    ok(answer)
}

/// The fields a logged-model filter names: `name`, `model_id`, `source_run_id` and `status` are
/// the model run's name, id, parent and status attribute; other keys are as in run filters.
fn model_field(key: &str) -> Result<Resolved, MlflowError> {
    let name = key.strip_prefix("attributes.").unwrap_or(key);
    Ok(match name {
        "name" => (Field::System(SystemField::Name), Kind::Text, None),
        "model_id" => (Field::System(SystemField::Run), Kind::Text, None),
        "source_run_id" => (Field::System(SystemField::Parent), Kind::Text, None),
        "status" => (Field::Attr(STATUS_ATTR.into()), Kind::Text, None),
        _ => field_of(key)?,
    })
}
