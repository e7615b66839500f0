//! `runs/...`: MLflow runs as runstream runs and events.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::extract::State;
use runstream_schema::{
    ArtifactKind, Attribute, Body, Direction, Event, EventId, FloatPoints, LineageLink, Role, RunCreated, RunId,
    RunState, RunStateChanged, SCHEMA_VERSION, Value as AttrValue,
};
use runstream_views::RunDetail;
use serde::Serialize;
use serde_json::{Value, json};

use crate::experiments::{find, id_for_run_experiment};
use crate::req::{Answer, BatchReq, MetricIn, MlflowError, Req, value_f64, value_i64};
use crate::{Ctx, MlflowAuth, MlflowState, empty, now_ms, ok};

// MLflow's limits (mlflow/utils/validation.py).
const MAX_KEY_LEN: usize = 250;
const MAX_PARAM_VALUE_LEN: usize = 6000;
const MAX_TAG_VALUE_LEN: usize = 8000;
const MAX_BATCH_METRICS: usize = 1000;
const MAX_BATCH_PARAMS: usize = 100;
const MAX_BATCH_TAGS: usize = 100;
const MAX_BATCH_ENTITIES: usize = 1000;

pub(crate) const RUN_NAME_TAG: &str = "mlflow.runName";
const USER_TAG: &str = "mlflow.user";
const PARENT_TAG: &str = "mlflow.parentRunId";
const NOTE_TAG: &str = "mlflow.note.content";

pub(crate) fn status_of(state: &str) -> &'static str {
    match state {
        "finished" => "FINISHED",
        "failed" => "FAILED",
        "aborted" => "KILLED",
        _ => "RUNNING",
    }
}

fn state_of(status: &str) -> Result<RunState, MlflowError> {
    Ok(match status.to_ascii_uppercase().as_str() {
        "RUNNING" | "1" => RunState::Running,
        "FINISHED" | "3" => RunState::Finished,
        "FAILED" | "4" => RunState::Failed,
        "KILLED" | "5" => RunState::Aborted,
        other => {
            return Err(MlflowError::invalid(format!(
                "Invalid value {other:?} for parameter 'status': expected RUNNING, FINISHED, FAILED or KILLED"
            )));
        }
    })
}

/// An attribute value as MLflow's string params and tags show it (Python's spelling for bools).
pub(crate) fn text_of(v: &AttrValue) -> String {
    match v {
        AttrValue::String(s) => s.clone(),
        AttrValue::Int(i) => i.to_string(),
        AttrValue::Float(f) => f.to_string(),
        AttrValue::Bool(true) => "True".into(),
        AttrValue::Bool(false) => "False".into(),
        AttrValue::Datetime(ms) => ms.to_string(),
        AttrValue::StringSet(s) => serde_json::to_string(s).unwrap_or_default(),
    }
}

fn prefixed<'a>(d: &'a RunDetail, prefix: &'a str) -> impl Iterator<Item = (&'a str, &'a AttrValue)> + 'a {
    d.attributes
        .iter()
        .filter_map(move |(p, v)| p.strip_prefix(prefix).map(|k| (k, v)))
}

pub(crate) fn tags_of(d: &RunDetail) -> BTreeMap<String, String> {
    let mut tags: BTreeMap<String, String> = prefixed(d, "tags/").map(|(k, v)| (k.to_string(), text_of(v))).collect();
    tags.entry(RUN_NAME_TAG.into()).or_insert_with(|| d.run.name.clone());
    tags.entry(USER_TAG.into()).or_insert_with(|| d.run.owner.clone());
    if let Some(parent) = &d.run.parent_run {
        tags.entry(PARENT_TAG.into()).or_insert_with(|| parent.clone());
    }
    tags
}

pub(crate) fn params_of(d: &RunDetail) -> BTreeMap<String, String> {
    prefixed(d, "params/")
        .map(|(k, v)| (k.to_string(), text_of(v)))
        .collect()
}

/// A run's `RunInfo` message.
#[derive(Serialize)]
pub(crate) struct InfoOut<'a> {
    run_id: &'a str,
    run_uuid: &'a str,
    run_name: String,
    experiment_id: String,
    user_id: String,
    status: &'static str,
    start_time: i64,
    artifact_uri: String,
    lifecycle_stage: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    end_time: Option<i64>,
}

/// A `Metric` message (the latest point of a series).
#[derive(Serialize)]
pub(crate) struct MetricOut<'a> {
    key: &'a str,
    #[serde(serialize_with = "crate::history::non_finite_as_string")]
    value: f64,
    timestamp: i64,
    step: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    model_id: Option<&'a str>,
}

#[derive(Serialize)]
struct KeyValue<'a> {
    key: Cow<'a, str>,
    value: Cow<'a, str>,
}

#[derive(Serialize)]
struct DataOut<'a> {
    metrics: Vec<MetricOut<'a>>,
    params: Vec<KeyValue<'a>>,
    tags: Vec<KeyValue<'a>>,
}

#[derive(Serialize)]
struct DatasetOut<'a> {
    name: &'a str,
    digest: &'a str,
    source_type: &'static str,
    source: &'a str,
}

#[derive(Serialize)]
struct DatasetInputOut<'a> {
    dataset: DatasetOut<'a>,
    tags: [(); 0],
}

#[derive(Serialize)]
struct InputsOut<'a> {
    dataset_inputs: Vec<DatasetInputOut<'a>>,
}

/// A `Run` message, serialized straight from the views' rows (a search returns many: no JSON
/// tree is built for them).
#[derive(Serialize)]
pub(crate) struct RunOut<'a> {
    info: InfoOut<'a>,
    data: DataOut<'a>,
    inputs: InputsOut<'a>,
}

pub(crate) async fn info_out<'a>(
    st: &MlflowState,
    ctx: &Ctx,
    d: &'a RunDetail,
    tags: &BTreeMap<String, String>,
) -> Result<InfoOut<'a>, MlflowError> {
    let experiment = id_for_run_experiment(st, ctx, &d.run.experiment).await?;
    let r = &d.run;
    Ok(InfoOut {
        run_id: &r.run,
        run_uuid: &r.run,
        run_name: tags.get(RUN_NAME_TAG).cloned().unwrap_or_else(|| r.name.clone()),
        experiment_id: experiment.to_string(),
        user_id: tags.get(USER_TAG).cloned().unwrap_or_else(|| r.owner.clone()),
        status: status_of(&r.state),
        start_time: r.created_ms,
        artifact_uri: format!("mlflow-artifacts:/{experiment}/{}/artifacts", r.run),
        lifecycle_stage: if r.deleted { "deleted" } else { "active" },
        end_time: r.finished_ms,
    })
}

/// The latest value of each float series, as MLflow's metrics (of a logged model when `model`).
pub(crate) fn latest_metrics<'a>(d: &'a RunDetail, model: Option<&'a str>) -> Vec<MetricOut<'a>> {
    d.series
        .iter()
        .filter(|s| s.kind == "float")
        .filter_map(|s| {
            Some(MetricOut {
                key: &s.path,
                value: s.last_value?,
                timestamp: s.last_time_ms.unwrap_or(0),
                step: s.last_step.unwrap_or(0),
                model_id: model,
            })
        })
        .collect()
}

/// A run rendered as MLflow JSON: the detail it came from (held, so that the same `Arc` means
/// the same, unchanged detail), its experiment's id, the JSON.
pub(crate) type Rendered = (Arc<RunDetail>, u64, Vec<u8>);

/// Most runs kept rendered; past it the memory starts afresh.
const RENDERED: usize = 10_000;

/// A run as MLflow's `Run` JSON, rendered once per version of its detail: a search answers the
/// same runs again and again, and the SQLite views hand out the same shared detail for a run
/// until a flush changes it, so an unchanged run (same `Arc`, same experiment id) is copied, not
/// rendered again. A run that changed comes with a new detail and is rendered anew.
pub(crate) async fn write_run_json(
    st: &MlflowState,
    ctx: &Ctx,
    d: &Arc<RunDetail>,
    out: &mut Vec<u8>,
) -> Result<(), MlflowError> {
    let experiment = id_for_run_experiment(st, ctx, &d.run.experiment).await?;
    let key = (ctx.key.clone(), d.run.run.clone());
    if let Some(r) = st.rendered.get(&key)
        && Arc::ptr_eq(&r.0, d)
        && r.1 == experiment
    {
        out.extend_from_slice(&r.2);
        return Ok(());
    }
    let json = serde_json::to_vec(&run_out(st, ctx, d).await?)
        .map_err(|e| MlflowError::from(runstream_http::ApiError::internal(e.to_string())))?;
    out.extend_from_slice(&json);
    if st.rendered.len() >= RENDERED {
        st.rendered.clear();
    }
    st.rendered.insert(key, (d.clone(), experiment, json));
    Ok(())
}

pub(crate) async fn run_out<'a>(st: &MlflowState, ctx: &Ctx, d: &'a RunDetail) -> Result<RunOut<'a>, MlflowError> {
    let tags = tags_of(d);
    let info = info_out(st, ctx, d, &tags).await?;
    // Params are borrowed from the run's attributes (already in path order, as MLflow sorts).
    let params = prefixed(d, "params/")
        .map(|(k, v)| KeyValue {
            key: Cow::Borrowed(k),
            value: match v {
                AttrValue::String(s) => Cow::Borrowed(s.as_str()),
                other => Cow::Owned(text_of(other)),
            },
        })
        .collect();
    let tags = tags
        .into_iter()
        .map(|(k, v)| KeyValue {
            key: Cow::Owned(k),
            value: Cow::Owned(v),
        })
        .collect();
    let dataset_inputs = d
        .lineage
        .iter()
        .filter(|l| l.direction == Direction::Input && l.kind == ArtifactKind::Dataset)
        .map(|l| DatasetInputOut {
            dataset: DatasetOut {
                name: &l.name,
                digest: &l.digest,
                source_type: "",
                source: &l.uri,
            },
            tags: [],
        })
        .collect();
    Ok(RunOut {
        info,
        data: DataOut {
            metrics: latest_metrics(d, None),
            params,
            tags,
        },
        inputs: InputsOut { dataset_inputs },
    })
}

pub(crate) async fn run_json(st: &MlflowState, ctx: &Ctx, d: &RunDetail) -> Result<Value, MlflowError> {
    Ok(json!(run_out(st, ctx, d).await?))
}

pub(crate) fn run_id(raw: &str) -> Result<RunId, MlflowError> {
    RunId::new(raw).map_err(|_| MlflowError::not_found(format!("Run with id={raw} not found")))
}

/// The run as the views hold it after this process's writes.
pub(crate) async fn detail(st: &MlflowState, ctx: &Ctx, run: &RunId) -> Result<RunDetail, MlflowError> {
    st.caught_up().await?;
    st.ingest
        .views
        .get_run(&ctx.key, run.as_str())
        .await?
        .ok_or_else(|| MlflowError::not_found(format!("Run with id={run} not found")))
}

pub(crate) fn check_active(d: &RunDetail) -> Result<(), MlflowError> {
    if d.run.deleted {
        return Err(MlflowError::invalid(format!(
            "The run {} must be in the 'active' state. Current state is deleted.",
            d.run.run
        )));
    }
    Ok(())
}

/// Checks that a run exists and is active before a write that does not read it otherwise. The
/// answer is remembered: logging metrics then costs no view read per request.
async fn writable(st: &MlflowState, ctx: &Ctx, run: &RunId) -> Result<(), MlflowError> {
    let key = (ctx.key.clone(), run.to_string());
    if st.active_runs.contains(&key) {
        return Ok(());
    }
    let d = detail(st, ctx, run).await?;
    check_active(&d)?;
    st.active_runs.insert(key);
    Ok(())
}

pub(crate) fn event(ctx: &Ctx, run: &RunId, time_ms: i64, body: Body) -> Event {
    Event {
        id: EventId::random(),
        workspace: ctx.principal.workspace.clone(),
        project: ctx.project.clone(),
        run: run.clone(),
        client_time_ms: time_ms,
        ingest_time_ms: now_ms(),
        actor: ctx.principal.name.clone(),
        schema_version: SCHEMA_VERSION,
        body,
    }
}

pub(crate) async fn append(st: &MlflowState, ctx: &Ctx, events: Vec<Event>) -> Result<(), MlflowError> {
    if events.is_empty() {
        return Ok(());
    }
    let answer = runstream_ingest::append_built(&st.ingest, &ctx.project, events).await?;
    st.note_written(&answer.position);
    Ok(())
}

fn check_key(kind: &str, key: &str) -> Result<(), MlflowError> {
    if key.is_empty() {
        return Err(MlflowError::missing("key"));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(MlflowError::invalid(format!(
            "{kind} '{key}' had length {}, which exceeded length limit of {MAX_KEY_LEN}",
            key.len()
        )));
    }
    runstream_schema::check_path(key)
        .map_err(|e| MlflowError::invalid(format!("Invalid {} name: '{key}': {}", kind.to_lowercase(), e.message)))
}

/// Sets string attributes `PREFIX/KEY` of a run (params, tags), if there are any.
pub(crate) async fn set_strings(
    st: &MlflowState,
    ctx: &Ctx,
    run: &RunId,
    prefix: &str,
    pairs: Vec<(String, String)>,
) -> Result<(), MlflowError> {
    if pairs.is_empty() {
        return Ok(());
    }
    let attrs = pairs
        .into_iter()
        .map(|(k, v)| string_attr(format!("{prefix}/{k}"), v))
        .collect();
    append(st, ctx, vec![event(ctx, run, now_ms(), Body::AttributesSet(attrs))]).await
}

pub(crate) fn string_attr(path: String, value: String) -> Attribute {
    Attribute {
        path,
        value: AttrValue::String(value),
    }
}

pub(crate) fn tag_pair(v: &Value, field: &str) -> Result<(String, String), MlflowError> {
    let key = v.get("key").and_then(Value::as_str).unwrap_or_default().to_string();
    let value = match v.get("value") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    check_key(field, &key)?;
    Ok((key, value))
}

pub(crate) fn check_tag_value(key: &str, value: &str) -> Result<(), MlflowError> {
    if value.len() > MAX_TAG_VALUE_LEN {
        return Err(MlflowError::invalid(format!(
            "Tag value '{}...' for key '{key}' had length {}, which exceeded length limit of {MAX_TAG_VALUE_LEN}",
            value.chars().take(20).collect::<String>(),
            value.len()
        )));
    }
    Ok(())
}

pub(crate) fn check_param_value(key: &str, value: &str) -> Result<(), MlflowError> {
    if value.len() > MAX_PARAM_VALUE_LEN {
        return Err(MlflowError::invalid(format!(
            "Param value '{}...' for key '{key}' had length {}, which exceeded length limit of {MAX_PARAM_VALUE_LEN}",
            value.chars().take(20).collect::<String>(),
            value.len()
        )));
    }
    Ok(())
}

/// A name for a run created without one, as MLflow gives: `adjective-noun-NNN`.
fn generated_name() -> String {
    use rand::seq::IndexedRandom;
    const ADJ: [&str; 12] = [
        "bold", "calm", "eager", "fast", "gentle", "keen", "lucky", "merry", "quiet", "sharp", "tidy", "wise",
    ];
    const NOUN: [&str; 12] = [
        "ant", "bat", "cat", "deer", "eel", "fox", "gnu", "hawk", "ibis", "lynx", "owl", "yak",
    ];
    let mut rng = rand::rng();
    format!(
        "{}-{}-{}",
        ADJ.choose(&mut rng).unwrap_or(&"new"),
        NOUN.choose(&mut rng).unwrap_or(&"run"),
        rand::Rng::random_range(&mut rng, 100..1000)
    )
}

pub(crate) async fn create(State(st): State<MlflowState>, MlflowAuth(p): MlflowAuth, req: Req) -> Answer {
    let ctx = Ctx::of(&st, p, Role::Writer)?;
    let experiment = find(&st, &ctx, &req.str("experiment_id")?.unwrap_or_else(|| "0".into()))?;
    if experiment.deleted {
        return Err(MlflowError::invalid(format!(
            "The experiment {} must be in the 'active' state. Current state is deleted.",
            experiment.id
        )));
    }
    let mut tags: Vec<(String, String)> = Vec::new();
    for (i, t) in req.list("tags").iter().enumerate() {
        let (k, v) = tag_pair(t, &format!("tags[{i}].key"))?;
        check_tag_value(&k, &v)?;
        tags.push((k, v));
    }
    let tag = |k: &str| tags.iter().rev().find(|(key, _)| key == k).map(|(_, v)| v.clone());
    let name = req
        .str("run_name")?
        .filter(|n| !n.is_empty())
        .or_else(|| tag(RUN_NAME_TAG).filter(|n| !n.is_empty()))
        .unwrap_or_else(generated_name);
    if let (Some(t), Some(r)) = (tag(RUN_NAME_TAG), req.str("run_name")?)
        && !t.is_empty()
        && !r.is_empty()
        && t != r
    {
        return Err(MlflowError::invalid(format!(
            "Both 'run_name' argument and 'mlflow.runName' tag are specified, but with different values (run_name='{r}', mlflow.runName='{t}')."
        )));
    }
    let start = req.i64("start_time")?.unwrap_or_else(now_ms);
    if !(0..=runstream_schema::MAX_TIME_MS).contains(&start) {
        return Err(MlflowError::invalid(format!(
            "Invalid value {start} for parameter 'start_time'"
        )));
    }
    let parent = tag(PARENT_TAG).and_then(|p| RunId::new(p).ok());
    let run = RunId::new(uuid::Uuid::new_v4().simple().to_string()).map_err(|e| MlflowError::invalid(e.message))?;
    let mut attrs: Vec<Attribute> = tags
        .iter()
        .filter(|(k, _)| k != RUN_NAME_TAG)
        .map(|(k, v)| string_attr(format!("tags/{k}"), v.clone()))
        .collect();
    attrs.push(string_attr(format!("tags/{RUN_NAME_TAG}"), name.clone()));
    if let Some(user) = req.str("user_id")?.filter(|u| !u.is_empty())
        && tag(USER_TAG).is_none()
    {
        attrs.push(string_attr(format!("tags/{USER_TAG}"), user));
    }
    let created = RunCreated {
        name,
        experiment: if experiment.id == 0 {
            String::new()
        } else {
            experiment.name.clone()
        },
        parent_run: parent,
        description: tag(NOTE_TAG).unwrap_or_default(),
    };
    append(
        &st,
        &ctx,
        vec![
            event(&ctx, &run, start, Body::RunCreated(created)),
            event(&ctx, &run, start, Body::AttributesSet(attrs)),
        ],
    )
    .await?;
    st.active_runs.insert((ctx.key.clone(), run.to_string()));
    let d = detail(&st, &ctx, &run).await?;
    ok(json!({ "run": run_json(&st, &ctx, &d).await? }))
}

pub(crate) async fn get(State(st): State<MlflowState>, MlflowAuth(p): MlflowAuth, req: Req) -> Answer {
    let ctx = Ctx::of(&st, p, Role::Viewer)?;
    let run = run_id(&req.run_id()?)?;
    let d = detail(&st, &ctx, &run).await?;
    ok(json!({ "run": run_json(&st, &ctx, &d).await? }))
}

pub(crate) async fn update(State(st): State<MlflowState>, MlflowAuth(p): MlflowAuth, req: Req) -> Answer {
    let ctx = Ctx::of(&st, p, Role::Writer)?;
    let run = run_id(&req.run_id()?)?;
    let d = detail(&st, &ctx, &run).await?;
    check_active(&d)?;
    let mut events = Vec::new();
    if let Some(status) = req.str("status")?.filter(|s| !s.is_empty()) {
        let state = state_of(&status)?;
        let at = req.i64("end_time")?.unwrap_or_else(now_ms);
        if !(0..=runstream_schema::MAX_TIME_MS).contains(&at) {
            return Err(MlflowError::invalid(format!(
                "Invalid value {at} for parameter 'end_time'"
            )));
        }
        events.push(event(
            &ctx,
            &run,
            at,
            Body::RunState(RunStateChanged {
                state,
                message: String::new(),
            }),
        ));
    }
    if let Some(name) = req.str("run_name")?.filter(|n| !n.is_empty()) {
        check_tag_value(RUN_NAME_TAG, &name)?;
        events.push(event(
            &ctx,
            &run,
            now_ms(),
            Body::AttributesSet(vec![string_attr(format!("tags/{RUN_NAME_TAG}"), name)]),
        ));
    }
    append(&st, &ctx, events).await?;
    let d = detail(&st, &ctx, &run).await?;
    let tags = tags_of(&d);
    ok(json!({ "run_info": info_out(&st, &ctx, &d, &tags).await? }))
}

async fn set_deleted(st: MlflowState, p: runstream_views::registry::Principal, req: Req, deleted: bool) -> Answer {
    let ctx = Ctx::of(&st, p, Role::Writer)?;
    let run = run_id(&req.run_id()?)?;
    detail(&st, &ctx, &run).await?;
    let body = if deleted { Body::RunDeleted } else { Body::RunRestored };
    append(&st, &ctx, vec![event(&ctx, &run, now_ms(), body)]).await?;
    let key = (ctx.key.clone(), run.to_string());
    if deleted {
        st.active_runs.remove(&key);
    } else {
        st.active_runs.insert(key);
    }
    empty()
}

pub(crate) async fn delete(State(st): State<MlflowState>, MlflowAuth(p): MlflowAuth, req: Req) -> Answer {
    set_deleted(st, p, req, true).await
}

pub(crate) async fn restore(State(st): State<MlflowState>, MlflowAuth(p): MlflowAuth, req: Req) -> Answer {
    set_deleted(st, p, req, false).await
}

/// One metric of a request, checked: (key, value, timestamp, step).
pub(crate) fn metric_of(v: &Value, index: Option<usize>) -> Result<(String, f64, i64, i64), MlflowError> {
    metric_from(
        &MetricIn {
            key: v.get("key").cloned(),
            value: v.get("value").cloned(),
            timestamp: v.get("timestamp").cloned(),
            step: v.get("step").cloned(),
            model_id: None,
        },
        index,
    )
}

/// One metric of a request, checked: (key, value, timestamp, step).
fn metric_from(v: &MetricIn, index: Option<usize>) -> Result<(String, f64, i64, i64), MlflowError> {
    // Field names are spelled out (`metrics[7].step`) only for an error: a log-batch checks a
    // thousand metrics, and formatting three names each cost more than the rest of the check.
    let at = |field: &str| index.map_or_else(|| field.to_string(), |i| format!("metrics[{i}].{field}"));
    let key = v.key.as_ref().and_then(Value::as_str).unwrap_or_default().to_string();
    check_key("Metric name", &key)?;
    let f64_field =
        |x: Option<&Value>, field: &str| value_f64(x, field).map_err(|_| value_f64(x, &at(field)).unwrap_err());
    let i64_field =
        |x: Option<&Value>, field: &str| value_i64(x, field).map_err(|_| value_i64(x, &at(field)).unwrap_err());
    let value = f64_field(v.value.as_ref(), "value")?.ok_or_else(|| MlflowError::missing(&at("value")))?;
    let timestamp = i64_field(v.timestamp.as_ref(), "timestamp")?.unwrap_or_else(now_ms);
    let step = i64_field(v.step.as_ref(), "step")?.unwrap_or(0);
    if !(0..=runstream_schema::MAX_STEP).contains(&step) {
        return Err(MlflowError::invalid(format!(
            "Invalid value {step} for parameter '{}': runstream keeps steps from 0 to 2^53-1",
            at("step")
        )));
    }
    if !(0..=runstream_schema::MAX_TIME_MS).contains(&timestamp) {
        return Err(MlflowError::invalid(format!(
            "Invalid value {timestamp} for parameter '{}': expected milliseconds since the epoch",
            at("timestamp")
        )));
    }
    Ok((key, value, timestamp, step))
}

/// Metrics as one float-points event per key.
pub(crate) fn metric_events(ctx: &Ctx, run: &RunId, metrics: Vec<(String, f64, i64, i64)>) -> Vec<Event> {
    let mut by_key: Vec<FloatPoints> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for (key, value, ts, step) in metrics {
        let i = match index.get(key.as_str()) {
            Some(&i) => i,
            None => {
                by_key.push(FloatPoints {
                    series: key.clone(),
                    ..FloatPoints::default()
                });
                index.insert(key, by_key.len() - 1);
                by_key.len() - 1
            }
        };
        let p = &mut by_key[i];
        p.steps.push(step);
        p.times_ms.push(ts);
        p.values.push(value);
    }
    let now = now_ms();
    by_key
        .into_iter()
        .map(|p| event(ctx, run, now, Body::FloatPoints(p)))
        .collect()
}

pub(crate) async fn log_metric(State(st): State<MlflowState>, MlflowAuth(p): MlflowAuth, req: Req) -> Answer {
    let ctx = Ctx::of(&st, p, Role::Writer)?;
    let run = run_id(&req.run_id()?)?;
    let metric = metric_of(&Value::Object(req.0.clone()), None)?;
    writable(&st, &ctx, &run).await?;
    append(&st, &ctx, metric_events(&ctx, &run, vec![metric])).await?;
    empty()
}

/// Params not logged yet; an error for a key already logged with another value.
pub(crate) fn new_params(d: &RunDetail, params: Vec<(String, String)>) -> Result<Vec<(String, String)>, MlflowError> {
    let have = params_of(d);
    let mut seen: HashMap<String, String> = HashMap::new();
    let mut out = Vec::new();
    for (k, v) in params {
        if let Some(prev) = seen.get(&k) {
            if *prev != v {
                return Err(MlflowError::invalid(format!(
                    "Duplicate parameter keys have been submitted: '{k}' with values '{prev}' and '{v}'"
                )));
            }
            continue;
        }
        seen.insert(k.clone(), v.clone());
        match have.get(&k) {
            Some(old) if *old == v => {}
            Some(old) => {
                return Err(MlflowError::invalid(format!(
                    "Changing param values is not allowed. Param with key='{k}' was already logged with value='{old}' for run ID='{}'. Attempted logging new value '{v}'.",
                    d.run.run
                )));
            }
            None => out.push((k, v)),
        }
    }
    Ok(out)
}

pub(crate) async fn log_param(State(st): State<MlflowState>, MlflowAuth(p): MlflowAuth, req: Req) -> Answer {
    let ctx = Ctx::of(&st, p, Role::Writer)?;
    let run = run_id(&req.run_id()?)?;
    let (key, value) = tag_pair(&Value::Object(req.0.clone()), "Param name")?;
    check_param_value(&key, &value)?;
    let d = detail(&st, &ctx, &run).await?;
    check_active(&d)?;
    let fresh = new_params(&d, vec![(key, value)])?;
    set_strings(&st, &ctx, &run, "params", fresh).await?;
    empty()
}

pub(crate) async fn set_tag(State(st): State<MlflowState>, MlflowAuth(p): MlflowAuth, req: Req) -> Answer {
    let ctx = Ctx::of(&st, p, Role::Writer)?;
    let run = run_id(&req.run_id()?)?;
    let (key, value) = tag_pair(&Value::Object(req.0.clone()), "Tag name")?;
    check_tag_value(&key, &value)?;
    writable(&st, &ctx, &run).await?;
    set_strings(&st, &ctx, &run, "tags", vec![(key, value)]).await?;
    empty()
}

pub(crate) async fn delete_tag(State(st): State<MlflowState>, MlflowAuth(p): MlflowAuth, req: Req) -> Answer {
    let ctx = Ctx::of(&st, p, Role::Writer)?;
    let run = run_id(&req.run_id()?)?;
    let key = req.required_str("key")?;
    let d = detail(&st, &ctx, &run).await?;
    check_active(&d)?;
    let path = format!("tags/{key}");
    if !d.attributes.iter().any(|(p, _)| *p == path) {
        return Err(MlflowError::not_found(format!(
            "No tag with name: {key} in run with id {run}"
        )));
    }
    append(
        &st,
        &ctx,
        vec![event(&ctx, &run, now_ms(), Body::AttributesDeleted(vec![path]))],
    )
    .await?;
    empty()
}

pub(crate) async fn log_batch(State(st): State<MlflowState>, MlflowAuth(p): MlflowAuth, req: BatchReq) -> Answer {
    let ctx = Ctx::of(&st, p, Role::Writer)?;
    let run = run_id(&req.run_id()?)?;
    let (metrics, params, tags) = (
        req.metrics.as_deref().unwrap_or_default(),
        req.params.as_deref().unwrap_or_default(),
        req.tags.as_deref().unwrap_or_default(),
    );
    for (what, n, max) in [
        ("metrics", metrics.len(), MAX_BATCH_METRICS),
        ("params", params.len(), MAX_BATCH_PARAMS),
        ("tags", tags.len(), MAX_BATCH_TAGS),
    ] {
        if n > max {
            return Err(MlflowError::invalid(format!(
                "A batch logging request can contain at most {max} {what}. Got {n} {what}. Please split up {what} across multiple requests and try again."
            )));
        }
    }
    let total = metrics.len() + params.len() + tags.len();
    if total > MAX_BATCH_ENTITIES {
        return Err(MlflowError::invalid(format!(
            "A batch logging request can contain at most {MAX_BATCH_ENTITIES} metrics, params, and tags in total. Received {total} total entities."
        )));
    }
    // MLflow 3 links a metric to a logged model by `model_id`: the model (a run of its own) gets
    // the point too.
    let mut for_models: BTreeMap<String, Vec<(String, f64, i64, i64)>> = BTreeMap::new();
    let mut parsed = Vec::with_capacity(metrics.len());
    for (i, m) in metrics.iter().enumerate() {
        let metric = metric_from(m, Some(i))?;
        if let Some(model) = m.model_id.as_ref().and_then(Value::as_str).filter(|m| !m.is_empty()) {
            for_models.entry(model.to_string()).or_default().push(metric.clone());
        }
        parsed.push(metric);
    }
    let metrics = parsed;
    let mut param_pairs = Vec::new();
    for (i, p) in params.iter().enumerate() {
        let (k, v) = tag_pair(p, &format!("params[{i}].key"))?;
        check_param_value(&k, &v)?;
        param_pairs.push((k, v));
    }
    let mut tag_attrs = Vec::new();
    for (i, t) in tags.iter().enumerate() {
        let (k, v) = tag_pair(t, &format!("tags[{i}].key"))?;
        check_tag_value(&k, &v)?;
        tag_attrs.push(string_attr(format!("tags/{k}"), v));
    }
    let mut attrs = Vec::new();
    if param_pairs.is_empty() {
        writable(&st, &ctx, &run).await?;
    } else {
        let d = detail(&st, &ctx, &run).await?;
        check_active(&d)?;
        attrs.extend(
            new_params(&d, param_pairs)?
                .into_iter()
                .map(|(k, v)| string_attr(format!("params/{k}"), v)),
        );
    }
    attrs.extend(tag_attrs);
    let mut events = metric_events(&ctx, &run, metrics);
    if !attrs.is_empty() {
        events.push(event(&ctx, &run, now_ms(), Body::AttributesSet(attrs)));
    }
    for (model, points) in for_models {
        let model = RunId::new(model.as_str())
            .map_err(|_| MlflowError::not_found(format!("Logged model with ID '{model}' not found.")))?;
        writable(&st, &ctx, &model).await?;
        events.extend(metric_events(&ctx, &model, points));
    }
    append(&st, &ctx, events).await?;
    empty()
}

/// `runs/log-inputs`: datasets a run used become its lineage inputs (name, digest, source).
pub(crate) async fn log_inputs(State(st): State<MlflowState>, MlflowAuth(p): MlflowAuth, req: Req) -> Answer {
    let ctx = Ctx::of(&st, p, Role::Writer)?;
    let run = run_id(&req.run_id()?)?;
    let mut events = Vec::new();
    for (i, input) in req.list("datasets").iter().enumerate() {
        let ds = input.get("dataset").cloned().unwrap_or(Value::Null);
        let field = |k: &str| ds.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
        let name = field("name");
        if name.is_empty() {
            return Err(MlflowError::missing(&format!("datasets[{i}].dataset.name")));
        }
        let digest = field("digest");
        events.push(event(
            &ctx,
            &run,
            now_ms(),
            Body::Lineage(LineageLink {
                direction: Direction::Input,
                kind: ArtifactKind::Dataset,
                name,
                version: digest.clone(),
                digest,
                uri: field("source"),
            }),
        ));
    }
    writable(&st, &ctx, &run).await?;
    append(&st, &ctx, events).await?;
    empty()
}
