//! Run search, grouping and the field catalog.
//!
//! `POST /runs:search` (a custom method in the resource style, so no run id can shadow it) takes a filter in the filter language (docs/filter-language.md), a sort,
//! a page size, a cursor and the columns to return with each run; `GET /runs` takes the same
//! filter, sort, limit and cursor as query parameters. `POST /runs:groups` counts the matching
//! runs per value of a field, with count, min, max and mean of numeric fields. `GET /fields`
//! lists what a filter can name, for completion in an editor.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use runstream_http::{ApiError, Authenticated, UrlPath, parse_json};
use runstream_schema::json::{JsonF64, value_to_json};
use runstream_schema::{Role, project_key};
use runstream_views::search::{
    Catalog, Field, FoundRun, Literal, Number, RunGrouping, RunSearch, SearchCursor, Sort, SortValue, SystemField,
};
use serde::{Deserialize, Serialize};

use crate::QueryState;
use crate::consistency::wait_for;
use crate::filter::{Checker, FilterError, display_field};
use crate::runs::{in_range, query};

const MAX_LIMIT: usize = 1000;
const MAX_COLUMNS: usize = 200;

fn bad(field: &str) -> impl Fn(FilterError) -> ApiError + '_ {
    move |e| ApiError::invalid_at(field, e.position, e.to_string())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SearchRequest {
    #[serde(default)]
    filter: String,
    sort: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
    #[serde(default)]
    columns: Vec<String>,
    #[serde(default)]
    include_deleted: bool,
    min_position: Option<String>,
    wait_ms: Option<u64>,
}

/// What a cursor carries: the sort it belongs to, and where the page ended.
#[derive(Serialize, Deserialize)]
struct CursorData {
    sort: String,
    #[serde(flatten)]
    at: SearchCursor,
}

fn sort_text(s: &Sort) -> String {
    format!(
        "{} {}",
        display_field(&s.field),
        if s.descending { "desc" } else { "asc" }
    )
}

fn encode_cursor(sort: &Sort, at: SearchCursor) -> String {
    hex::encode(
        serde_json::to_vec(&CursorData {
            sort: sort_text(sort),
            at,
        })
        .unwrap_or_default(),
    )
}

fn decode_cursor(sort: &Sort, raw: &str) -> Result<SearchCursor, ApiError> {
    let bad = || ApiError::invalid("cursor", format!("{raw:?} is not a cursor this API returned"));
    let bytes = hex::decode(raw).map_err(|_| bad())?;
    let c: CursorData = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    if c.sort != sort_text(sort) {
        return Err(ApiError::invalid(
            "cursor",
            format!(
                "this cursor belongs to a search sorted by {:?}, not {:?}",
                c.sort,
                sort_text(sort)
            ),
        ));
    }
    Ok(c.at)
}

fn sort_value_json(v: &SortValue) -> serde_json::Value {
    match v {
        SortValue::Int(i) => (*i).into(),
        SortValue::Float(f) => serde_json::to_value(JsonF64(*f)).unwrap_or_default(),
        SortValue::Str(s) => s.clone().into(),
    }
}

fn literal_json(l: &Literal) -> serde_json::Value {
    match l {
        Literal::Number(Number::Int(i)) | Literal::Datetime(i) => (*i).into(),
        Literal::Number(Number::Float(f)) => serde_json::to_value(JsonF64(*f)).unwrap_or_default(),
        Literal::Str(s) => s.clone().into(),
        Literal::Bool(b) => (*b).into(),
    }
}

fn run_json(f: &FoundRun, columns: &[(String, Field)]) -> Result<serde_json::Value, ApiError> {
    let mut v = serde_json::to_value(&f.run).map_err(|e| ApiError::internal(e.to_string()))?;
    if !columns.is_empty() {
        let mut cols = serde_json::Map::new();
        for ((name, field), value) in columns.iter().zip(&f.columns) {
            let json = match (field, value) {
                (Field::System(s), _) => s.value(&f.run).as_ref().map(literal_json),
                (_, Some(v)) => Some(value_to_json(v)),
                (_, None) => None,
            };
            cols.insert(name.clone(), json.unwrap_or(serde_json::Value::Null));
        }
        v["columns"] = serde_json::Value::Object(cols);
    }
    Ok(v)
}

async fn catalog(st: &QueryState, project: &str) -> Result<Catalog, ApiError> {
    Ok(st.views.catalog(project).await?)
}

async fn search(st: &QueryState, pk: String, req: SearchRequest) -> Result<serde_json::Value, ApiError> {
    wait_for(st.views.as_ref(), req.min_position.as_deref(), req.wait_ms).await?;
    let limit = in_range("limit", req.limit.unwrap_or(50), MAX_LIMIT)?;
    if req.columns.len() > MAX_COLUMNS {
        return Err(ApiError::invalid(
            "columns",
            format!(
                "{} columns asked for, at most {MAX_COLUMNS} are allowed",
                req.columns.len()
            ),
        ));
    }
    let cat = catalog(st, &pk).await?;
    let checker = Checker::new(&cat);
    let filter = checker.filter(&req.filter).map_err(bad("filter"))?;
    let sort = match req.sort.as_deref() {
        None | Some("") => Sort::default(),
        Some(s) => checker.sort(s).map_err(bad("sort"))?,
    };
    let mut columns = Vec::with_capacity(req.columns.len());
    for (i, c) in req.columns.iter().enumerate() {
        let f = checker
            .field(c)
            .map_err(|e| ApiError::invalid_at(format!("columns[{i}]"), e.position, e.to_string()))?;
        columns.push((display_field(&f), f));
    }
    let after = match req.cursor.as_deref() {
        None | Some("") => None,
        Some(c) => Some(decode_cursor(&sort, c)?),
    };
    let page = st
        .views
        .search_runs(RunSearch {
            project: pk,
            filter,
            include_deleted: req.include_deleted,
            sort: sort.clone(),
            after,
            limit,
            columns: columns.iter().map(|(_, f)| f.clone()).collect(),
        })
        .await?;
    let runs = page
        .runs
        .iter()
        .map(|r| run_json(r, &columns))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(serde_json::json!({
        "runs": runs,
        "next_cursor": page.next.map(|c| encode_cursor(&sort, c)),
    }))
}

pub(crate) async fn search_runs(
    State(st): State<QueryState>,
    Authenticated(p): Authenticated,
    UrlPath(project): UrlPath<String>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let project = st.registry.authorize(&p, &project, Role::Viewer)?;
    let req: SearchRequest = if body.is_empty() {
        SearchRequest::default()
    } else {
        parse_json(&body)?
    };
    Ok(Json(search(&st, project_key(&p.workspace, &project), req).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListRuns {
    #[serde(default)]
    filter: String,
    sort: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
    #[serde(default)]
    include_deleted: bool,
    min_position: Option<String>,
    wait_ms: Option<u64>,
}

pub(crate) async fn list_runs(
    State(st): State<QueryState>,
    Authenticated(p): Authenticated,
    UrlPath(project): UrlPath<String>,
    q: Result<Query<ListRuns>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let project = st.registry.authorize(&p, &project, Role::Viewer)?;
    let q = query(q)?;
    let req = SearchRequest {
        filter: q.filter,
        sort: q.sort,
        limit: q.limit,
        cursor: q.cursor,
        columns: Vec::new(),
        include_deleted: q.include_deleted,
        min_position: q.min_position,
        wait_ms: q.wait_ms,
    };
    Ok(Json(search(&st, project_key(&p.workspace, &project), req).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GroupRequest {
    #[serde(default)]
    filter: String,
    group_by: String,
    #[serde(default)]
    aggregates: Vec<String>,
    limit: Option<usize>,
    #[serde(default)]
    include_deleted: bool,
    min_position: Option<String>,
    wait_ms: Option<u64>,
}

pub(crate) async fn group_runs(
    State(st): State<QueryState>,
    Authenticated(p): Authenticated,
    UrlPath(project): UrlPath<String>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let project = st.registry.authorize(&p, &project, Role::Viewer)?;
    let req: GroupRequest = parse_json(&body)?;
    wait_for(st.views.as_ref(), req.min_position.as_deref(), req.wait_ms).await?;
    let limit = in_range("limit", req.limit.unwrap_or(100), MAX_LIMIT)?;
    if req.aggregates.len() > MAX_COLUMNS {
        return Err(ApiError::invalid(
            "aggregates",
            format!("at most {MAX_COLUMNS} are allowed"),
        ));
    }
    let pk = project_key(&p.workspace, &project);
    let cat = catalog(&st, &pk).await?;
    let checker = Checker::new(&cat);
    let filter = checker.filter(&req.filter).map_err(bad("filter"))?;
    let by = checker.field(&req.group_by).map_err(bad("group_by"))?;
    let mut aggregates = Vec::new();
    for (i, a) in req.aggregates.iter().enumerate() {
        aggregates.push(
            checker
                .numeric_field(a)
                .map_err(|e| ApiError::invalid_at(format!("aggregates[{i}]"), e.position, e.to_string()))?,
        );
    }
    let groups = st
        .views
        .group_runs(RunGrouping {
            project: pk,
            filter,
            include_deleted: req.include_deleted,
            by: by.clone(),
            aggregates: aggregates.clone(),
            limit,
        })
        .await?;
    let f = |v: Option<f64>| v.map(|x| serde_json::to_value(JsonF64(x)).unwrap_or_default());
    let out: Vec<_> = groups
        .groups
        .iter()
        .map(|g| {
            let aggs: BTreeMap<_, _> = aggregates
                .iter()
                .zip(&g.aggregates)
                .map(|(field, s)| {
                    (
                        display_field(field),
                        serde_json::json!({ "count": s.count, "min": f(s.min), "max": f(s.max), "mean": f(s.mean) }),
                    )
                })
                .collect();
            serde_json::json!({
                "key": g.key.as_ref().map(sort_value_json),
                "runs": g.runs,
                "aggregates": aggs,
            })
        })
        .collect();
    Ok(Json(serde_json::json!({
        "group_by": display_field(&by),
        "groups": out,
        "truncated": groups.truncated,
    })))
}

/// What a filter can name in a project: system fields with their types, attribute paths with
/// every type each has had, metric paths.
pub(crate) async fn fields(
    State(st): State<QueryState>,
    Authenticated(p): Authenticated,
    UrlPath(project): UrlPath<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let project = st.registry.authorize(&p, &project, Role::Viewer)?;
    let cat = catalog(&st, &project_key(&p.workspace, &project)).await?;
    let system: Vec<_> = SystemField::ALL
        .iter()
        .map(|f| serde_json::json!({ "field": f.name(), "type": f.class().name() }))
        .collect();
    let attributes: Vec<_> = cat
        .attributes
        .iter()
        .map(|(path, types)| {
            serde_json::json!({ "field": display_field(&Field::Attr(path.clone())), "path": path, "types": types })
        })
        .collect();
    let metrics: Vec<_> = cat
        .metrics
        .iter()
        .map(|path| {
            serde_json::json!({
                "field": display_field(&Field::Metric(path.clone(), runstream_views::search::MetricAgg::Last)),
                "path": path,
            })
        })
        .collect();
    Ok(Json(
        serde_json::json!({ "system": system, "attributes": attributes, "metrics": metrics }),
    ))
}
