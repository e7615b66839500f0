//! Registry writes: projects and tokens. Each appends a registry event, then applies it to this
//! process's registry at once so the caller can use the result straight away; other processes
//! pick it up by following the registry log.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use rand::RngCore;
use runstream_http::{ApiError, Authenticated, UrlPath, parse_json};
use runstream_log::{AppendRecord, EventLog, LogError};
use runstream_schema::{
    EventId, Grant, ProjectId, RegistryBody, RegistryEvent, Role, WorkspaceId, decode_registry, encode_registry,
};
use runstream_views::registry::{Registry, token_digest};
use serde::Deserialize;

use crate::events::read_body;
use crate::{IngestState, now_ms};

const ADMIN_BODY_LIMIT: usize = 64 << 10;

/// Folds the registry records this process has not folded yet, up to the log's end, in order.
pub async fn load_registry(log: &dyn EventLog, registry: &Registry) -> Result<(), LogError> {
    loop {
        let from = registry.next_offset();
        let records = log.read(0, from, 1024).await?;
        if records.is_empty() {
            return Ok(());
        }
        for r in records {
            match decode_registry(&r.payload) {
                Ok(events) => registry.apply_record(r.position.offset, &events),
                Err(e) => {
                    tracing::error!(offset = r.position.offset, error = %e, "undecodable registry record");
                    registry.apply_record(r.position.offset, &[]);
                }
            }
        }
    }
}

/// Appends registry events as one record and waits until this process has folded it (and every
/// record before it), so the caller reads the registry as the log decides it: the answer to a
/// write whose effect depends on what came first (an experiment's name) is the same everywhere.
/// Returns the record's offset.
pub async fn append_registry_folded(
    log: &dyn EventLog,
    registry: &Registry,
    events: Vec<RegistryEvent>,
) -> Result<u64, LogError> {
    let written = log
        .append(vec![AppendRecord {
            key: "registry".into(),
            payload: encode_registry(&events),
        }])
        .await?;
    let offset = written.first().map_or(0, |p| p.offset);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        load_registry(log, registry).await?;
        if registry.next_offset() > offset {
            return Ok(offset);
        }
        if std::time::Instant::now() >= deadline {
            return Err(LogError::Unavailable(format!(
                "registry record {offset} was acknowledged but is not readable yet"
            )));
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

async fn append_registry(log: &dyn EventLog, registry: &Registry, events: Vec<RegistryEvent>) -> Result<(), LogError> {
    log.append(vec![AppendRecord {
        key: "registry".into(),
        payload: encode_registry(&events),
    }])
    .await?;
    for e in &events {
        registry.apply(e);
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateProject {
    name: String,
    #[serde(default)]
    description: String,
}

pub(crate) async fn create_project(
    State(st): State<IngestState>,
    Authenticated(p): Authenticated,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    if !p.is_workspace_admin() {
        return Err(ApiError::forbidden(format!(
            "token {} is not a workspace admin",
            p.token_id
        )));
    }
    let req: CreateProject = parse_json(&read_body(&headers, body, ADMIN_BODY_LIMIT).await?)?;
    let project = ProjectId::new(req.name).map_err(|e| ApiError::from(e.within("name")))?;
    if st.registry.project_exists(&p.workspace, &project) {
        return Err(ApiError::conflict(format!("project {project:?} already exists")));
    }
    let event = RegistryEvent {
        id: EventId::random(),
        workspace: p.workspace.clone(),
        time_ms: now_ms(),
        actor: p.name.clone(),
        body: RegistryBody::ProjectCreated {
            project: project.clone(),
            description: req.description,
        },
    };
    append_registry(st.registry_log.as_ref(), &st.registry, vec![event]).await?;
    Ok((StatusCode::CREATED, Json(serde_json::json!({ "project": project }))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IssueToken {
    principal: String,
    grants: Vec<GrantJson>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantJson {
    /// A project id, or `*` for every project of the workspace.
    project: String,
    role: String,
}

pub(crate) async fn issue_token(
    State(st): State<IngestState>,
    Authenticated(p): Authenticated,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let req: IssueToken = parse_json(&read_body(&headers, body, ADMIN_BODY_LIMIT).await?)?;
    if req.principal.is_empty() || req.principal.len() > 256 {
        return Err(ApiError::invalid("principal", "must be 1 to 256 bytes"));
    }
    if req.grants.is_empty() {
        return Err(ApiError::invalid("grants", "a token needs at least one grant"));
    }
    let mut grants = Vec::new();
    for (i, g) in req.grants.iter().enumerate() {
        let role = Role::parse(&g.role).ok_or_else(|| {
            ApiError::invalid(
                format!("grants[{i}].role"),
                format!("{:?} is not viewer, writer or admin", g.role),
            )
        })?;
        let project = if g.project == "*" {
            None
        } else {
            let id = ProjectId::new(g.project.clone())
                .map_err(|e| ApiError::from(e.within(&format!("grants[{i}].project"))))?;
            if !st.registry.project_exists(&p.workspace, &id) {
                return Err(ApiError::not_found(format!(
                    "grants[{i}].project: project {id:?} does not exist"
                )));
            }
            Some(id)
        };
        // Only an admin of what is granted may grant it.
        let allowed = match &project {
            None => p.is_workspace_admin(),
            Some(id) => p.role_on(id) == Some(Role::Admin),
        };
        if !allowed {
            return Err(ApiError::forbidden(format!(
                "grants[{i}]: token {} is not an admin of {}",
                p.token_id,
                project
                    .as_ref()
                    .map_or("the workspace".to_string(), |id| format!("project {id:?}"))
            )));
        }
        grants.push(Grant { project, role });
    }
    let (token_id, token) = new_token();
    let event = RegistryEvent {
        id: EventId::random(),
        workspace: p.workspace.clone(),
        time_ms: now_ms(),
        actor: p.name.clone(),
        body: RegistryBody::TokenIssued {
            token_id: token_id.clone(),
            secret_sha256: token_digest(&token),
            principal: req.principal.clone(),
            grants,
        },
    };
    append_registry(st.registry_log.as_ref(), &st.registry, vec![event]).await?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({ "token": token, "token_id": token_id, "principal": req.principal })),
    ))
}

pub(crate) async fn revoke_token(
    State(st): State<IngestState>,
    Authenticated(p): Authenticated,
    UrlPath(token_id): UrlPath<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let same_workspace = st.registry.token_workspace(&token_id).is_some_and(|w| w == p.workspace);
    if !same_workspace {
        return Err(ApiError::not_found(format!("token {token_id:?} does not exist")));
    }
    if !(p.is_workspace_admin() || p.token_id == token_id) {
        return Err(ApiError::forbidden(format!(
            "token {} may not revoke other tokens",
            p.token_id
        )));
    }
    let event = RegistryEvent {
        id: EventId::random(),
        workspace: p.workspace.clone(),
        time_ms: now_ms(),
        actor: p.name.clone(),
        body: RegistryBody::TokenRevoked {
            token_id: token_id.clone(),
        },
    };
    append_registry(st.registry_log.as_ref(), &st.registry, vec![event]).await?;
    Ok(Json(serde_json::json!({ "revoked": token_id })))
}

/// A fresh token: a public id and the secret the client sends.
fn new_token() -> (String, String) {
    let mut id = [0u8; 8];
    let mut secret = [0u8; 24];
    rand::rng().fill_bytes(&mut id);
    rand::rng().fill_bytes(&mut secret);
    (
        format!("tok_{}", hex::encode(id)),
        format!("rs_{}", hex::encode(secret)),
    )
}

/// What the first start of a deployment creates.
pub struct Bootstrap {
    pub workspace: WorkspaceId,
    pub project: ProjectId,
    pub token: String,
    pub token_id: String,
}

/// Creates a workspace's first project and an admin token for it (`token` when given, else a
/// fresh one), if the registry is empty. Returns what it created, or `None` if there was a
/// registry already.
pub async fn bootstrap(
    log: Arc<dyn EventLog>,
    registry: &Registry,
    workspace: WorkspaceId,
    project: ProjectId,
    token: Option<String>,
) -> Result<Option<Bootstrap>, LogError> {
    if !registry.is_empty() {
        return Ok(None);
    }
    let (token_id, fresh) = new_token();
    let token = token.unwrap_or(fresh);
    let now = now_ms();
    let events = vec![
        RegistryEvent {
            id: EventId::random(),
            workspace: workspace.clone(),
            time_ms: now,
            actor: "runstream".into(),
            body: RegistryBody::ProjectCreated {
                project: project.clone(),
                description: "created on first start".into(),
            },
        },
        RegistryEvent {
            id: EventId::random(),
            workspace: workspace.clone(),
            time_ms: now,
            actor: "runstream".into(),
            body: RegistryBody::TokenIssued {
                token_id: token_id.clone(),
                secret_sha256: token_digest(&token),
                principal: "admin".into(),
                grants: vec![Grant {
                    project: None,
                    role: Role::Admin,
                }],
            },
        },
    ];
    append_registry(log.as_ref(), registry, events).await?;
    Ok(Some(Bootstrap {
        workspace,
        project,
        token,
        token_id,
    }))
}

/// Registers `token` as an admin of the `default` workspace (RUNSTREAM_ADMIN_TOKEN on a
/// deployment whose registry already exists).
pub async fn register_admin_token(log: Arc<dyn EventLog>, registry: &Registry, token: &str) -> Result<(), LogError> {
    let (token_id, _) = new_token();
    let event = RegistryEvent {
        id: EventId::random(),
        workspace: WorkspaceId::new("default").expect("valid id"),
        time_ms: now_ms(),
        actor: "runstream".into(),
        body: RegistryBody::TokenIssued {
            token_id,
            secret_sha256: token_digest(token),
            principal: "admin".into(),
            grants: vec![Grant {
                project: None,
                role: Role::Admin,
            }],
        },
    };
    append_registry(log.as_ref(), registry, vec![event]).await
}
