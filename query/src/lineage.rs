//! The lineage graph around a run or an artifact: upstream (what it was made from), downstream
//! (what was made from it), or both, to a depth.
//!
//! Nodes are runs and artifacts (kind, name, version). A run's `input` link is an edge from the
//! artifact to the run, an `output` link an edge from the run to the artifact; a link whose kind
//! is `run` joins two runs directly. Upstream and downstream are walked separately, so the graph
//! holds a run's ancestors and descendants, not its siblings (other users of the same dataset).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use axum::Json;
use axum::extract::{Query, State};
use runstream_http::{ApiError, Authenticated, UrlPath};
use runstream_schema::{ArtifactKind, Direction, Role, project_key};
use runstream_views::search::{Field, Filter, Literal, RunSearch, Sort, SystemField};
use runstream_views::{LineageOf, LineageRow};
use serde::Deserialize;

use crate::QueryState;
use crate::consistency::wait_for;
use crate::runs::{in_range, query};

const DEFAULT_DEPTH: usize = 3;
const MAX_DEPTH: usize = 20;
/// Most nodes in one answer; past it the answer says it is truncated.
const MAX_NODES: usize = 1000;
/// Most links read for one node.
const MAX_LINKS: usize = 1000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LineageQuery {
    run: Option<String>,
    kind: Option<String>,
    name: Option<String>,
    version: Option<String>,
    direction: Option<String>,
    depth: Option<usize>,
    min_position: Option<String>,
    wait_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Node {
    Run(String),
    Artifact {
        kind: ArtifactKind,
        name: String,
        version: String,
    },
}

impl Node {
    fn id(&self) -> String {
        match self {
            Node::Run(r) => format!("run:{r}"),
            Node::Artifact { kind, name, version } if version.is_empty() => format!("{}:{name}", kind.as_str()),
            Node::Artifact { kind, name, version } => format!("{}:{name}@{version}", kind.as_str()),
        }
    }

    /// The far end of a link from its run: an artifact, or a run for links of kind `run`.
    fn of_link(l: &LineageRow) -> Node {
        if l.kind == ArtifactKind::Run {
            Node::Run(l.name.clone())
        } else {
            Node::Artifact {
                kind: l.kind,
                name: l.name.clone(),
                version: l.version.clone(),
            }
        }
    }
}

/// An edge `from -> to`: `from` went into making `to`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Edge {
    from: Node,
    to: Node,
    time_ms: i64,
}

/// The edges at a node: every link that touches it, oriented.
async fn edges_at(st: &QueryState, pk: &str, node: &Node) -> Result<Vec<Edge>, ApiError> {
    let mut out = Vec::new();
    let mut add = |links: Vec<LineageRow>| {
        for l in links {
            let (run, other) = (Node::Run(l.run.clone()), Node::of_link(&l));
            let (from, to) = match l.direction {
                Direction::Input => (other, run),
                Direction::Output => (run, other),
            };
            out.push(Edge {
                from,
                to,
                time_ms: l.time_ms,
            });
        }
    };
    match node {
        Node::Run(r) => {
            add(st.views.lineage(pk, &LineageOf::Run(r.clone()), MAX_LINKS).await?);
            let by_others = LineageOf::Artifact {
                kind: ArtifactKind::Run,
                name: r.clone(),
                version: None,
            };
            add(st.views.lineage(pk, &by_others, MAX_LINKS).await?);
        }
        Node::Artifact { kind, name, version } => {
            let of = LineageOf::Artifact {
                kind: *kind,
                name: name.clone(),
                version: Some(version.clone()),
            };
            add(st.views.lineage(pk, &of, MAX_LINKS).await?);
        }
    }
    Ok(out)
}

struct Graph {
    nodes: BTreeSet<Node>,
    edges: BTreeSet<Edge>,
    truncated: bool,
}

/// Walks from `start` against (`upstream`) or along the edges, to `depth` hops.
async fn walk(
    st: &QueryState,
    pk: &str,
    start: &[Node],
    upstream: bool,
    depth: usize,
    g: &mut Graph,
) -> Result<(), ApiError> {
    let mut seen: BTreeSet<Node> = start.iter().cloned().collect();
    let mut queue: VecDeque<(Node, usize)> = start.iter().map(|n| (n.clone(), 0)).collect();
    while let Some((node, d)) = queue.pop_front() {
        if d >= depth {
            continue;
        }
        for e in edges_at(st, pk, &node).await? {
            let next = match (upstream, &e) {
                (true, Edge { to, from, .. }) if *to == node => from.clone(),
                (false, Edge { from, to, .. }) if *from == node => to.clone(),
                _ => continue,
            };
            if !seen.contains(&next) {
                if g.nodes.len() >= MAX_NODES && !g.nodes.contains(&next) {
                    g.truncated = true;
                    continue;
                }
                seen.insert(next.clone());
                g.nodes.insert(next.clone());
                queue.push_back((next, d + 1));
            }
            g.edges.insert(e);
        }
    }
    Ok(())
}

pub(crate) async fn lineage(
    State(st): State<QueryState>,
    Authenticated(p): Authenticated,
    UrlPath(project): UrlPath<String>,
    q: Result<Query<LineageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let project = st.registry.authorize(&p, &project, Role::Viewer)?;
    let q = query(q)?;
    wait_for(st.views.as_ref(), q.min_position.as_deref(), q.wait_ms).await?;
    let depth = in_range("depth", q.depth.unwrap_or(DEFAULT_DEPTH), MAX_DEPTH)?;
    let (up, down) = match q.direction.as_deref().unwrap_or("both") {
        "upstream" => (true, false),
        "downstream" => (false, true),
        "both" => (true, true),
        other => {
            return Err(ApiError::invalid(
                "direction",
                format!("{other:?} is not upstream, downstream or both"),
            ));
        }
    };
    let pk = project_key(&p.workspace, &project);
    let start: Vec<Node> = match (&q.run, &q.kind, &q.name) {
        (Some(run), None, None) if q.version.is_none() => {
            if !st.views.run_exists(&pk, run).await? {
                return Err(ApiError::not_found(format!(
                    "run {run:?} does not exist in project {project:?}"
                )));
            }
            vec![Node::Run(run.clone())]
        }
        (None, Some(kind), Some(name)) => {
            let kind = ArtifactKind::parse(kind).ok_or_else(|| {
                ApiError::invalid("kind", format!("{kind:?} is not dataset, model, code, run or other"))
            })?;
            if kind == ArtifactKind::Run {
                vec![Node::Run(name.clone())]
            } else {
                // Without a version, start from every version of the artifact the links name.
                let of = LineageOf::Artifact {
                    kind,
                    name: name.clone(),
                    version: q.version.clone(),
                };
                let versions: BTreeSet<String> = st
                    .views
                    .lineage(&pk, &of, MAX_LINKS)
                    .await?
                    .into_iter()
                    .map(|l| l.version)
                    .collect();
                if versions.is_empty() {
                    return Err(ApiError::not_found(format!(
                        "no run of project {project:?} links {} {name:?}{}",
                        kind.as_str(),
                        q.version
                            .as_ref()
                            .map(|v| format!(" at version {v:?}"))
                            .unwrap_or_default()
                    )));
                }
                versions
                    .into_iter()
                    .map(|version| Node::Artifact {
                        kind,
                        name: name.clone(),
                        version,
                    })
                    .collect()
            }
        }
        _ => {
            return Err(ApiError::invalid(
                "run",
                "give either run, or kind and name (and optionally version) of an artifact",
            ));
        }
    };
    let mut g = Graph {
        nodes: start.iter().cloned().collect(),
        edges: BTreeSet::new(),
        truncated: false,
    };
    if up {
        walk(&st, &pk, &start, true, depth, &mut g).await?;
    }
    if down {
        walk(&st, &pk, &start, false, depth, &mut g).await?;
    }
    // Edges to nodes left out by the node limit are left out too.
    let edges: Vec<&Edge> = g
        .edges
        .iter()
        .filter(|e| g.nodes.contains(&e.from) && g.nodes.contains(&e.to))
        .collect();

    // Run nodes carry their name and state; a run named by a link but never created has none.
    let run_ids: Vec<Literal> = g
        .nodes
        .iter()
        .filter_map(|n| match n {
            Node::Run(r) => Some(Literal::Str(r.clone())),
            _ => None,
        })
        .collect();
    let mut runs = BTreeMap::new();
    if !run_ids.is_empty() {
        let page = st
            .views
            .search_runs(RunSearch {
                project: pk.clone(),
                filter: Filter::In {
                    field: Field::System(SystemField::Run),
                    values: run_ids.clone(),
                    negated: false,
                },
                include_deleted: true,
                sort: Sort {
                    field: Field::System(SystemField::Run),
                    descending: false,
                },
                after: None,
                limit: run_ids.len(),
                columns: Vec::new(),
            })
            .await?;
        for f in page.runs {
            runs.insert(f.run.run.clone(), f.run);
        }
    }
    let nodes: Vec<serde_json::Value> = g
        .nodes
        .iter()
        .map(|n| match n {
            Node::Run(r) => {
                let row = runs.get(r);
                serde_json::json!({
                    "id": n.id(), "type": "run", "run": r,
                    "name": row.map(|x| x.name.clone()), "state": row.map(|x| x.state.clone()),
                    "deleted": row.map(|x| x.deleted), "exists": row.is_some(),
                })
            }
            Node::Artifact { kind, name, version } => serde_json::json!({
                "id": n.id(), "type": "artifact", "kind": kind.as_str(), "name": name, "version": version,
            }),
        })
        .collect();
    let edges: Vec<serde_json::Value> = edges
        .iter()
        .map(|e| serde_json::json!({ "from": e.from.id(), "to": e.to.id(), "time_ms": e.time_ms }))
        .collect();
    let roots: Vec<String> = start.iter().map(Node::id).collect();
    Ok(Json(serde_json::json!({
        "roots": roots, "nodes": nodes, "edges": edges, "truncated": g.truncated,
    })))
}
