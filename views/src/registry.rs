//! The registry view: workspaces, projects, tokens and roles, held in memory.
//!
//! Every process folds the registry events into these maps at start and keeps following them,
//! so checking a token costs a hash and a map lookup, never a round trip. Tokens are stored only
//! as their sha256; the secret is shown once, when issued.

use dashmap::DashMap;
use runstream_schema::{Grant, ProjectId, RegistryBody, RegistryEvent, Role, WorkspaceId};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone)]
struct TokenInfo {
    token_id: String,
    workspace: WorkspaceId,
    principal: String,
    grants: Vec<Grant>,
    revoked: bool,
}

/// Who a request acts as.
#[derive(Debug, Clone)]
pub struct Principal {
    pub name: String,
    pub token_id: String,
    pub workspace: WorkspaceId,
    grants: Vec<Grant>,
}

impl Principal {
    /// The strongest role this principal holds on `project` (workspace-wide grants included).
    pub fn role_on(&self, project: &ProjectId) -> Option<Role> {
        self.grants
            .iter()
            .filter(|g| g.project.as_ref().is_none_or(|p| p == project))
            .map(|g| g.role)
            .max()
    }

    /// Whether the principal administers the whole workspace.
    pub fn is_workspace_admin(&self) -> bool {
        self.grants.iter().any(|g| g.project.is_none() && g.role == Role::Admin)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("unknown token")]
    UnknownToken,
    #[error("token {0} has been revoked")]
    Revoked(String),
    #[error("project {0:?} does not exist in workspace {1:?}")]
    NoSuchProject(String, String),
    #[error("token {token_id} has no {need} role on project {project:?}")]
    Forbidden {
        token_id: String,
        project: String,
        need: &'static str,
    },
}

#[derive(Default)]
pub struct Registry {
    tokens: DashMap<[u8; 32], TokenInfo>,
    token_ids: DashMap<String, [u8; 32]>,
    projects: DashMap<(WorkspaceId, ProjectId), String>,
}

/// The sha256 a token is known by.
pub fn token_digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Folds one registry event in. Applying an event twice has no further effect.
    pub fn apply(&self, e: &RegistryEvent) {
        match &e.body {
            RegistryBody::ProjectCreated { project, description } => {
                self.projects
                    .insert((e.workspace.clone(), project.clone()), description.clone());
            }
            RegistryBody::TokenIssued {
                token_id,
                secret_sha256,
                principal,
                grants,
            } => {
                if self.token_ids.contains_key(token_id) {
                    return;
                }
                self.token_ids.insert(token_id.clone(), *secret_sha256);
                self.tokens.insert(
                    *secret_sha256,
                    TokenInfo {
                        token_id: token_id.clone(),
                        workspace: e.workspace.clone(),
                        principal: principal.clone(),
                        grants: grants.clone(),
                        revoked: false,
                    },
                );
            }
            RegistryBody::TokenRevoked { token_id } => {
                let digest = self.token_ids.get(token_id).map(|d| *d);
                if let Some(mut t) = digest.and_then(|d| self.tokens.get_mut(&d)) {
                    t.revoked = true;
                }
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.projects.is_empty() && self.tokens.is_empty()
    }

    /// The workspace a token id belongs to, if it exists.
    pub fn token_workspace(&self, token_id: &str) -> Option<WorkspaceId> {
        let digest = *self.token_ids.get(token_id)?;
        self.tokens.get(&digest).map(|t| t.workspace.clone())
    }

    pub fn project_exists(&self, workspace: &WorkspaceId, project: &ProjectId) -> bool {
        self.projects.contains_key(&(workspace.clone(), project.clone()))
    }

    pub fn projects(&self, workspace: &WorkspaceId) -> Vec<ProjectId> {
        let mut v: Vec<ProjectId> = self
            .projects
            .iter()
            .filter(|e| &e.key().0 == workspace)
            .map(|e| e.key().1.clone())
            .collect();
        v.sort();
        v
    }

    pub fn authenticate(&self, token: &str) -> Result<Principal, AuthError> {
        let info = self.tokens.get(&token_digest(token)).ok_or(AuthError::UnknownToken)?;
        if info.revoked {
            return Err(AuthError::Revoked(info.token_id.clone()));
        }
        Ok(Principal {
            name: info.principal.clone(),
            token_id: info.token_id.clone(),
            workspace: info.workspace.clone(),
            grants: info.grants.clone(),
        })
    }

    /// Checks that `p` may act with role `need` on `project` of its workspace.
    pub fn authorize(&self, p: &Principal, project: &str, need: Role) -> Result<ProjectId, AuthError> {
        let forbidden = || AuthError::Forbidden {
            token_id: p.token_id.clone(),
            project: project.to_string(),
            need: need.as_str(),
        };
        // An id that is not even well formed names no project this token can reach.
        let id = ProjectId::new(project).map_err(|_| forbidden())?;
        match p.role_on(&id) {
            Some(r) if r >= need => {}
            _ => return Err(forbidden()),
        }
        if !self.project_exists(&p.workspace, &id) {
            return Err(AuthError::NoSuchProject(project.to_string(), p.workspace.to_string()));
        }
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use runstream_schema::EventId;

    fn ev(body: RegistryBody) -> RegistryEvent {
        RegistryEvent {
            id: EventId::random(),
            workspace: WorkspaceId::new("w").unwrap(),
            time_ms: 0,
            actor: "t".into(),
            body,
        }
    }

    #[test]
    fn tokens_grant_roles_per_project_and_can_be_revoked() {
        let r = Registry::new();
        let a = ProjectId::new("a").unwrap();
        let b = ProjectId::new("b").unwrap();
        for p in [&a, &b] {
            r.apply(&ev(RegistryBody::ProjectCreated {
                project: p.clone(),
                description: String::new(),
            }));
        }
        r.apply(&ev(RegistryBody::TokenIssued {
            token_id: "t1".into(),
            secret_sha256: token_digest("secret-1"),
            principal: "bob".into(),
            grants: vec![Grant {
                project: Some(a.clone()),
                role: Role::Writer,
            }],
        }));
        let p = r.authenticate("secret-1").unwrap();
        assert_eq!(p.name, "bob");
        assert!(r.authorize(&p, "a", Role::Writer).is_ok());
        assert!(r.authorize(&p, "a", Role::Admin).is_err());
        assert!(matches!(
            r.authorize(&p, "b", Role::Viewer),
            Err(AuthError::Forbidden { .. })
        ));
        assert_eq!(r.authenticate("wrong").unwrap_err(), AuthError::UnknownToken);
        r.apply(&ev(RegistryBody::TokenRevoked { token_id: "t1".into() }));
        assert!(matches!(r.authenticate("secret-1"), Err(AuthError::Revoked(_))));
    }

    #[test]
    fn workspace_admins_reach_every_project_that_exists() {
        let r = Registry::new();
        r.apply(&ev(RegistryBody::ProjectCreated {
            project: ProjectId::new("a").unwrap(),
            description: String::new(),
        }));
        r.apply(&ev(RegistryBody::TokenIssued {
            token_id: "root".into(),
            secret_sha256: token_digest("s"),
            principal: "admin".into(),
            grants: vec![Grant {
                project: None,
                role: Role::Admin,
            }],
        }));
        let p = r.authenticate("s").unwrap();
        assert!(p.is_workspace_admin());
        assert!(r.authorize(&p, "a", Role::Writer).is_ok());
        assert!(matches!(
            r.authorize(&p, "zzz", Role::Viewer),
            Err(AuthError::NoSuchProject(..))
        ));
    }
}
