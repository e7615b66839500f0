//! `experiments/...`: experiments are registry entities (a name, tags, a lifecycle) whose runs
//! are the project's runs carrying the experiment's name.

use axum::extract::State;
use runstream_ingest::append_registry_folded;
use runstream_schema::{EventId, ExperimentChange, RegistryBody, RegistryEvent, Role};
use runstream_views::registry::{DEFAULT_EXPERIMENT, Experiment};
use runstream_views::search::{Field, Filter, RunGrouping, SortValue, SystemField};
use serde_json::{Value, json};

use crate::req::{Answer, MlflowError, Req};
use crate::{Ctx, MlflowAuth, MlflowState, empty, now_ms, ok};

/// Longest experiment name, as MLflow's stores allow.
const MAX_NAME_LEN: usize = 500;
const MAX_TAG_KEY_LEN: usize = 250;
const MAX_TAG_VALUE_LEN: usize = 5000;

pub(crate) fn to_json(x: &Experiment) -> Value {
    json!({
        "experiment_id": x.id.to_string(),
        "name": x.name,
        "artifact_location": artifact_location(x),
        "lifecycle_stage": if x.deleted { "deleted" } else { "active" },
        "creation_time": x.created_ms,
        "last_update_time": x.updated_ms,
        "tags": x.tags.iter().map(|(k, v)| json!({"key": k, "value": v})).collect::<Vec<_>>(),
    })
}

/// Where the experiment's artifacts go: the location given at creation, else the tracking
/// server's proxied artifact store.
pub(crate) fn artifact_location(x: &Experiment) -> String {
    if x.artifact_location.is_empty() {
        format!("mlflow-artifacts:/{}", x.id)
    } else {
        x.artifact_location.clone()
    }
}

/// The experiment names a run of `x` may carry: its name, former names, and for the default
/// experiment also no name at all.
pub(crate) fn run_names_of(x: &Experiment) -> Vec<String> {
    let mut v = vec![x.name.clone()];
    v.extend(x.former_names.iter().cloned());
    if x.id == 0 {
        v.push(String::new());
        v.push(DEFAULT_EXPERIMENT.to_string());
    }
    v.sort();
    v.dedup();
    v
}

pub(crate) fn parse_id(raw: &str) -> Result<u64, MlflowError> {
    raw.trim()
        .parse::<u64>()
        .map_err(|_| MlflowError::not_found(format!("No Experiment with id={raw} exists")))
}

pub(crate) fn find(st: &MlflowState, ctx: &Ctx, raw_id: &str) -> Result<Experiment, MlflowError> {
    let id = parse_id(raw_id)?;
    st.ingest
        .registry
        .experiment(&ctx.principal.workspace, &ctx.project, id)
        .ok_or_else(|| MlflowError::not_found(format!("No Experiment with id={raw_id} exists")))
}

/// Appends one experiment change and folds it; returns the record's offset.
async fn change(st: &MlflowState, ctx: &Ctx, experiment: u64, change: ExperimentChange) -> Result<u64, MlflowError> {
    let event = RegistryEvent {
        id: EventId::random(),
        workspace: ctx.principal.workspace.clone(),
        time_ms: now_ms(),
        actor: ctx.principal.name.clone(),
        body: RegistryBody::Experiment {
            project: ctx.project.clone(),
            experiment,
            change,
        },
    };
    Ok(append_registry_folded(st.ingest.registry_log.as_ref(), &st.ingest.registry, vec![event]).await?)
}

fn check_name(name: &str) -> Result<(), MlflowError> {
    if name.is_empty() {
        return Err(MlflowError::missing("name"));
    }
    if name.len() > MAX_NAME_LEN || name.chars().any(char::is_control) {
        return Err(MlflowError::invalid(format!(
            "Invalid experiment name {name:?}: at most {MAX_NAME_LEN} bytes, without control characters"
        )));
    }
    Ok(())
}

fn check_tag(key: &str, value: &str) -> Result<(), MlflowError> {
    if key.is_empty() {
        return Err(MlflowError::missing("key"));
    }
    if key.len() > MAX_TAG_KEY_LEN {
        return Err(MlflowError::invalid(format!(
            "Tag key '{key}' had length {}, which exceeded length limit of {MAX_TAG_KEY_LEN}",
            key.len()
        )));
    }
    if value.len() > MAX_TAG_VALUE_LEN {
        return Err(MlflowError::invalid(format!(
            "Tag value for key '{key}' had length {}, which exceeded length limit of {MAX_TAG_VALUE_LEN}",
            value.len()
        )));
    }
    Ok(())
}

/// Creates an experiment named `name`; fails when another holds or once held the name.
async fn create_named(
    st: &MlflowState,
    ctx: &Ctx,
    name: &str,
    artifact_location: String,
    tags: Vec<(String, String)>,
) -> Result<Experiment, MlflowError> {
    let registry = &st.ingest.registry;
    let exists = || MlflowError::exists(format!("Experiment '{name}' already exists."));
    if registry
        .experiment_answering_to(&ctx.principal.workspace, &ctx.project, name)
        .is_some()
    {
        return Err(exists());
    }
    let created = ExperimentChange::Created {
        name: name.to_string(),
        artifact_location,
        tags,
    };
    let id = change(st, ctx, 0, created).await?;
    // Folded in log order: when another process claimed the name first, this record had no effect.
    registry
        .experiment(&ctx.principal.workspace, &ctx.project, id)
        .ok_or_else(exists)
}

/// The id of the experiment a run carrying the experiment name `name` belongs to. A name only
/// runstream's own API has used so far becomes an experiment here, so MLflow sees its runs.
pub(crate) async fn id_for_run_experiment(st: &MlflowState, ctx: &Ctx, name: &str) -> Result<u64, MlflowError> {
    if name.is_empty() {
        return Ok(0);
    }
    let registry = &st.ingest.registry;
    if let Some(x) = registry.experiment_answering_to(&ctx.principal.workspace, &ctx.project, name) {
        return Ok(x.id);
    }
    match create_named(st, ctx, name, String::new(), Vec::new()).await {
        Ok(x) => Ok(x.id),
        // Adopted by a concurrent request meanwhile.
        Err(_) => registry
            .experiment_answering_to(&ctx.principal.workspace, &ctx.project, name)
            .map(|x| x.id)
            .ok_or_else(|| MlflowError::invalid(format!("experiment name {name:?} cannot be adopted"))),
    }
}

/// Adopts the experiment names of the project's runs that no experiment answers to yet.
/// Grouping every run of a big project takes seconds: a project's runs are scanned for new
/// experiment names at most this often (names MLflow asks for by name are adopted at once).
const ADOPT_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

async fn adopt_run_experiments(st: &MlflowState, ctx: &Ctx) -> Result<(), MlflowError> {
    let now = std::time::Instant::now();
    if let Some(last) = st.adopted.get(&ctx.key)
        && now.duration_since(*last) < ADOPT_EVERY
    {
        return Ok(());
    }
    st.adopted.insert(ctx.key.clone(), now);
    st.caught_up().await?;
    let groups = st
        .ingest
        .views
        .group_runs(RunGrouping {
            project: ctx.key.clone(),
            filter: Filter::True,
            include_deleted: true,
            by: Field::System(SystemField::Experiment),
            aggregates: Vec::new(),
            limit: 10_000,
        })
        .await?;
    for g in groups.groups {
        if let Some(SortValue::Str(name)) = g.key {
            id_for_run_experiment(st, ctx, &name).await?;
        }
    }
    Ok(())
}

pub(crate) async fn create(State(st): State<MlflowState>, MlflowAuth(p): MlflowAuth, req: Req) -> Answer {
    let ctx = Ctx::of(&st, p, Role::Writer)?;
    let name = req.str("name")?.unwrap_or_default();
    check_name(&name)?;
    let mut tags = Vec::new();
    for t in req.list("tags") {
        let key = t.get("key").and_then(Value::as_str).unwrap_or_default().to_string();
        let value = t.get("value").and_then(Value::as_str).unwrap_or_default().to_string();
        check_tag(&key, &value)?;
        tags.push((key, value));
    }
    let location = req.str("artifact_location")?.unwrap_or_default();
    let x = create_named(&st, &ctx, &name, location, tags).await?;
    ok(json!({ "experiment_id": x.id.to_string() }))
}

pub(crate) async fn get(State(st): State<MlflowState>, MlflowAuth(p): MlflowAuth, req: Req) -> Answer {
    let ctx = Ctx::of(&st, p, Role::Viewer)?;
    let x = find(&st, &ctx, &req.required_str("experiment_id")?)?;
    ok(json!({ "experiment": to_json(&x) }))
}

pub(crate) async fn get_by_name(State(st): State<MlflowState>, MlflowAuth(p): MlflowAuth, req: Req) -> Answer {
    let ctx = Ctx::of(&st, p, Role::Viewer)?;
    let name = req.required_str("experiment_name")?;
    let registry = &st.ingest.registry;
    let ws = &ctx.principal.workspace;
    if let Some(x) = registry.experiment_by_name(ws, &ctx.project, &name) {
        return ok(json!({ "experiment": to_json(&x) }));
    }
    // Runs logged through runstream's own API under this name make it an experiment.
    st.caught_up().await?;
    let page = st
        .ingest
        .views
        .search_runs(runstream_views::search::RunSearch {
            project: ctx.key.clone(),
            filter: Filter::Compare {
                field: Field::System(SystemField::Experiment),
                op: runstream_views::search::Cmp::Eq,
                value: runstream_views::search::Literal::Str(name.clone()),
            },
            include_deleted: true,
            sort: Default::default(),
            after: None,
            limit: 1,
            columns: Vec::new(),
        })
        .await?;
    if !page.runs.is_empty() {
        let id = id_for_run_experiment(&st, &ctx, &name).await?;
        if let Some(x) = registry.experiment(ws, &ctx.project, id).filter(|x| x.name == name) {
            return ok(json!({ "experiment": to_json(&x) }));
        }
    }
    Err(MlflowError::not_found(format!(
        "Could not find experiment with name '{name}'"
    )))
}

#[derive(Clone, Copy, PartialEq)]
enum ViewType {
    Active,
    Deleted,
    All,
}

fn view_type(raw: Option<String>, field: &str) -> Result<ViewType, MlflowError> {
    match raw.as_deref().map(str::to_ascii_uppercase).as_deref() {
        None | Some("") | Some("ACTIVE_ONLY") | Some("1") => Ok(ViewType::Active),
        Some("DELETED_ONLY") | Some("2") => Ok(ViewType::Deleted),
        Some("ALL") | Some("3") => Ok(ViewType::All),
        Some(other) => Err(MlflowError::invalid(format!(
            "Invalid value {other:?} for parameter '{field}': expected ACTIVE_ONLY, DELETED_ONLY or ALL"
        ))),
    }
}

fn view_type_includes(v: ViewType, deleted: bool) -> bool {
    match v {
        ViewType::Active => !deleted,
        ViewType::Deleted => deleted,
        ViewType::All => true,
    }
}

pub(crate) fn view_type_of_runs(raw: Option<String>) -> Result<(bool, Option<bool>), MlflowError> {
    // (include deleted runs, only runs of this deleted state)
    Ok(match view_type(raw, "run_view_type")? {
        ViewType::Active => (false, None),
        ViewType::Deleted => (true, Some(true)),
        ViewType::All => (true, None),
    })
}

/// One condition of an experiment filter: `name` or `tags.KEY` against a string.
struct Cond {
    tag: Option<String>,
    op: String,
    value: String,
}

fn parse_experiment_filter(text: &str) -> Result<Vec<Cond>, MlflowError> {
    let tokens = crate::search::tokenize(text)?;
    let mut out = Vec::new();
    for clause in crate::search::split_and(&tokens)? {
        let bad = || MlflowError::invalid(format!("Invalid experiment filter '{text}'"));
        let [key, op, value] = clause.as_slice() else {
            return Err(bad());
        };
        let key = key.ident().ok_or_else(bad)?;
        let (entity, name) = crate::search::split_key(&key);
        let tag = match (entity.as_deref(), name.as_str()) {
            (None | Some("attribute") | Some("attributes"), "name") => None,
            (Some("tag") | Some("tags"), k) => Some(k.to_string()),
            _ => {
                return Err(MlflowError::invalid(format!(
                    "Invalid attribute key '{key}' in experiment filter: only name and tags.KEY can be searched"
                )));
            }
        };
        let op = op.op().ok_or_else(bad)?.to_ascii_uppercase();
        if !matches!(op.as_str(), "=" | "!=" | "LIKE" | "ILIKE") {
            return Err(MlflowError::invalid(format!(
                "Invalid comparator '{op}' in experiment filter"
            )));
        }
        let value = value.string().ok_or_else(bad)?;
        out.push(Cond { tag, op, value });
    }
    Ok(out)
}

fn holds(c: &Cond, x: &Experiment) -> bool {
    let subject = match &c.tag {
        None => Some(x.name.as_str()),
        Some(k) => x.tags.get(k).map(String::as_str),
    };
    let Some(s) = subject else { return false };
    match c.op.as_str() {
        "=" => s == c.value,
        "!=" => s != c.value,
        "LIKE" => crate::search::like(s, &c.value, false),
        _ => crate::search::like(s, &c.value, true),
    }
}

pub(crate) async fn search(State(st): State<MlflowState>, MlflowAuth(p): MlflowAuth, req: Req) -> Answer {
    let ctx = Ctx::of(&st, p, Role::Viewer)?;
    let view = view_type(req.str("view_type")?, "view_type")?;
    let max = req.i64("max_results")?.unwrap_or(1000);
    if !(1..=50_000).contains(&max) {
        return Err(MlflowError::invalid(format!(
            "Invalid value {max} for parameter 'max_results' supplied. It must be at least 1 and at most 50000"
        )));
    }
    let conds = parse_experiment_filter(&req.str("filter")?.unwrap_or_default())?;
    let offset = match req.str("page_token")?.filter(|t| !t.is_empty()) {
        None => 0,
        Some(t) => t
            .parse::<usize>()
            .map_err(|_| MlflowError::invalid(format!("Invalid page token '{t}'")))?,
    };
    adopt_run_experiments(&st, &ctx).await?;
    let mut found: Vec<Experiment> = st
        .ingest
        .registry
        .experiments(&ctx.principal.workspace, &ctx.project)
        .into_iter()
        .filter(|x| view_type_includes(view, x.deleted) && conds.iter().all(|c| holds(c, x)))
        .collect();
    sort_experiments(&mut found, req.list("order_by"))?;
    let max = max as usize;
    let page: Vec<Value> = found.iter().skip(offset).take(max).map(to_json).collect();
    let mut answer = json!({ "experiments": page });
    if offset + max < found.len() {
        answer["next_page_token"] = (offset + max).to_string().into();
    }
    ok(answer)
}

/// MLflow's experiment orders: by `name`, `experiment_id`, `creation_time` or
/// `last_update_time`, each ASC or DESC; newest first by default.
fn sort_experiments(v: &mut [Experiment], order_by: &[Value]) -> Result<(), MlflowError> {
    let mut keys = Vec::new();
    for o in order_by {
        let text = o.as_str().unwrap_or_default().trim();
        let mut parts = text.split_whitespace();
        let field = parts.next().unwrap_or_default();
        let field = field.strip_prefix("attributes.").unwrap_or(field);
        let desc = match parts.next().map(str::to_ascii_uppercase).as_deref() {
            None | Some("ASC") => false,
            Some("DESC") => true,
            Some(d) => {
                return Err(MlflowError::invalid(format!(
                    "Invalid order_by clause '{text}': {d:?} is not ASC or DESC"
                )));
            }
        };
        if !matches!(field, "name" | "experiment_id" | "creation_time" | "last_update_time") {
            return Err(MlflowError::invalid(format!(
                "Invalid order_by clause '{text}': experiments sort by name, experiment_id, creation_time or last_update_time"
            )));
        }
        keys.push((field.to_string(), desc));
    }
    if keys.is_empty() {
        keys.push(("creation_time".into(), true));
    }
    v.sort_by(|a, b| {
        for (field, desc) in &keys {
            let o = match field.as_str() {
                "name" => a.name.cmp(&b.name),
                "experiment_id" => a.id.cmp(&b.id),
                "creation_time" => a.created_ms.cmp(&b.created_ms),
                _ => a.updated_ms.cmp(&b.updated_ms),
            };
            let o = if *desc { o.reverse() } else { o };
            if o.is_ne() {
                return o;
            }
        }
        a.id.cmp(&b.id)
    });
    Ok(())
}

pub(crate) async fn update(State(st): State<MlflowState>, MlflowAuth(p): MlflowAuth, req: Req) -> Answer {
    let ctx = Ctx::of(&st, p, Role::Writer)?;
    let x = find(&st, &ctx, &req.required_str("experiment_id")?)?;
    let Some(name) = req.str("new_name")?.filter(|n| !n.is_empty()) else {
        return empty();
    };
    check_name(&name)?;
    if name == x.name {
        return empty();
    }
    if x.deleted {
        return Err(MlflowError::invalid(format!(
            "Cannot rename a non-active experiment. Experiment {} is deleted.",
            x.id
        )));
    }
    let taken = || MlflowError::exists(format!("Experiment '{name}' already exists."));
    let registry = &st.ingest.registry;
    if registry
        .experiment_answering_to(&ctx.principal.workspace, &ctx.project, &name)
        .is_some_and(|other| other.id != x.id)
    {
        return Err(taken());
    }
    change(&st, &ctx, x.id, ExperimentChange::Renamed(name.clone())).await?;
    match registry.experiment(&ctx.principal.workspace, &ctx.project, x.id) {
        Some(now) if now.name == name => empty(),
        _ => Err(taken()),
    }
}

pub(crate) async fn delete(State(st): State<MlflowState>, MlflowAuth(p): MlflowAuth, req: Req) -> Answer {
    let ctx = Ctx::of(&st, p, Role::Writer)?;
    let x = find(&st, &ctx, &req.required_str("experiment_id")?)?;
    if x.id == 0 {
        return Err(MlflowError::invalid(
            "Cannot delete the default experiment '0'. This is an internally reserved experiment.",
        ));
    }
    change(&st, &ctx, x.id, ExperimentChange::Deleted).await?;
    set_runs_deleted(&st, &ctx, &x, true).await?;
    empty()
}

pub(crate) async fn restore(State(st): State<MlflowState>, MlflowAuth(p): MlflowAuth, req: Req) -> Answer {
    let ctx = Ctx::of(&st, p, Role::Writer)?;
    let x = find(&st, &ctx, &req.required_str("experiment_id")?)?;
    change(&st, &ctx, x.id, ExperimentChange::Restored).await?;
    set_runs_deleted(&st, &ctx, &x, false).await?;
    empty()
}

/// Runs marked per request; a bigger experiment takes several appends.
const CASCADE_PAGE: usize = 1000;

/// As MLflow does, deleting an experiment deletes its runs and restoring it restores them all
/// (each a run event, so runstream's own API sees the same lifecycle).
async fn set_runs_deleted(st: &MlflowState, ctx: &Ctx, x: &Experiment, deleted: bool) -> Result<(), MlflowError> {
    use runstream_schema::{Body, RunId};
    use runstream_views::search::{Cmp, Literal, RunSearch};
    let filter = Filter::And(vec![
        Filter::In {
            field: Field::System(SystemField::Experiment),
            values: run_names_of(x).into_iter().map(Literal::Str).collect(),
            negated: false,
        },
        Filter::Compare {
            field: Field::System(SystemField::Deleted),
            op: Cmp::Eq,
            value: Literal::Bool(!deleted),
        },
    ]);
    st.caught_up().await?;
    // Each page's runs change state, so the next search (from the start) no longer selects
    // them; a page that changes nothing would mean the views did not apply the change.
    loop {
        let page = st
            .ingest
            .views
            .search_runs(RunSearch {
                project: ctx.key.clone(),
                filter: filter.clone(),
                include_deleted: true,
                sort: Default::default(),
                after: None,
                limit: CASCADE_PAGE,
                columns: Vec::new(),
            })
            .await?;
        let mut events = Vec::with_capacity(page.runs.len());
        for f in &page.runs {
            let Ok(run) = RunId::new(f.run.run.as_str()) else {
                continue;
            };
            let key = (ctx.key.clone(), run.to_string());
            if deleted {
                st.active_runs.remove(&key);
            }
            let body = if deleted { Body::RunDeleted } else { Body::RunRestored };
            events.push(crate::runs::event(ctx, &run, now_ms(), body));
        }
        if events.is_empty() {
            return Ok(());
        }
        crate::runs::append(st, ctx, events).await?;
        if page.next.is_none() {
            return Ok(());
        }
        st.caught_up().await?;
    }
}

pub(crate) async fn set_tag(State(st): State<MlflowState>, MlflowAuth(p): MlflowAuth, req: Req) -> Answer {
    let ctx = Ctx::of(&st, p, Role::Writer)?;
    let x = find(&st, &ctx, &req.required_str("experiment_id")?)?;
    let key = req.required_str("key")?;
    let value = req.str("value")?.unwrap_or_default();
    check_tag(&key, &value)?;
    if x.deleted {
        return Err(MlflowError::invalid(format!(
            "The experiment {} must be in the 'active' state. Current state is deleted.",
            x.id
        )));
    }
    change(&st, &ctx, x.id, ExperimentChange::TagSet(key, value)).await?;
    empty()
}

pub(crate) async fn delete_tag(State(st): State<MlflowState>, MlflowAuth(p): MlflowAuth, req: Req) -> Answer {
    let ctx = Ctx::of(&st, p, Role::Writer)?;
    let x = find(&st, &ctx, &req.required_str("experiment_id")?)?;
    let key = req.required_str("key")?;
    if !x.tags.contains_key(&key) {
        return Err(MlflowError::not_found(format!(
            "No tag with name: {key} in experiment with id {}",
            x.id
        )));
    }
    change(&st, &ctx, x.id, ExperimentChange::TagDeleted(key)).await?;
    empty()
}
