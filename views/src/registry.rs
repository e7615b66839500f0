//! The registry view: workspaces, projects, tokens and roles, held in memory.
//!
//! Every process folds the registry events into these maps at start and keeps following them,
//! so checking a token costs a hash and a map lookup, never a round trip. Tokens are stored only
//! as their sha256; the secret is shown once, when issued.
//!
//! Experiments live here too: few per project, read on most MLflow requests. An experiment takes
//! the offset of the registry record that created it as id, and a name a record claims when
//! another experiment holds (or once held) it leaves the record without effect, so records must
//! be folded in log order, through [`Registry::apply_record`], for every process to agree.

use std::collections::BTreeMap;
use std::sync::Mutex;

use dashmap::DashMap;
use runstream_schema::{ExperimentChange, Grant, ProjectId, RegistryBody, RegistryEvent, Role, WorkspaceId};
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

    /// The projects granted by name (workspace-wide grants left out), each once, sorted.
    pub fn granted_projects(&self) -> Vec<ProjectId> {
        let mut v: Vec<ProjectId> = self.grants.iter().filter_map(|g| g.project.clone()).collect();
        v.sort();
        v.dedup();
        v
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

/// The name of every project's experiment 0, which always exists.
pub const DEFAULT_EXPERIMENT: &str = "Default";

/// An experiment of a project.
#[derive(Debug, Clone, PartialEq)]
pub struct Experiment {
    pub id: u64,
    pub name: String,
    /// Names it held before renames: its runs may still carry them.
    pub former_names: Vec<String>,
    pub artifact_location: String,
    pub deleted: bool,
    pub tags: BTreeMap<String, String>,
    pub created_ms: i64,
    pub updated_ms: i64,
}

impl Experiment {
    fn default_of_project() -> Self {
        Experiment {
            id: 0,
            name: DEFAULT_EXPERIMENT.to_string(),
            former_names: Vec::new(),
            artifact_location: String::new(),
            deleted: false,
            tags: BTreeMap::new(),
            created_ms: 0,
            updated_ms: 0,
        }
    }

    /// Whether the experiment holds or once held `name`.
    pub fn answers_to(&self, name: &str) -> bool {
        self.name == name || self.former_names.iter().any(|n| n == name)
    }
}

type ProjectKey = (WorkspaceId, ProjectId);

#[derive(Default)]
pub struct Registry {
    tokens: DashMap<[u8; 32], TokenInfo>,
    token_ids: DashMap<String, [u8; 32]>,
    projects: DashMap<ProjectKey, String>,
    experiments: DashMap<ProjectKey, BTreeMap<u64, Experiment>>,
    /// The next registry log offset to fold; held while a record is folded.
    next_offset: Mutex<u64>,
}

/// The sha256 a token is known by.
pub fn token_digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Folds the events of the registry log record at `offset`, once: records must come in log
    /// order, and one already folded is skipped.
    pub fn apply_record(&self, offset: u64, events: &[RegistryEvent]) {
        let mut next = self.next_offset.lock().unwrap_or_else(|p| p.into_inner());
        if offset < *next {
            return;
        }
        for e in events {
            match &e.body {
                RegistryBody::Experiment {
                    project,
                    experiment,
                    change,
                } => self.apply_experiment(offset, e, project, *experiment, change),
                _ => self.apply(e),
            }
        }
        *next = offset + 1;
    }

    /// The offset of the first registry record not folded yet.
    pub fn next_offset(&self) -> u64 {
        *self.next_offset.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn apply_experiment(
        &self,
        offset: u64,
        e: &RegistryEvent,
        project: &ProjectId,
        id: u64,
        change: &ExperimentChange,
    ) {
        let mut all = self
            .experiments
            .entry((e.workspace.clone(), project.clone()))
            .or_default();
        let taken = |all: &BTreeMap<u64, Experiment>, name: &str, by: u64| {
            (name == DEFAULT_EXPERIMENT && by != 0 && !all.contains_key(&0))
                || all.values().any(|x| x.id != by && x.answers_to(name))
        };
        if let ExperimentChange::Created {
            name,
            artifact_location,
            tags,
        } = change
        {
            if !all.contains_key(&offset) && !taken(&all, name, offset) {
                all.insert(
                    offset,
                    Experiment {
                        id: offset,
                        name: name.clone(),
                        former_names: Vec::new(),
                        artifact_location: artifact_location.clone(),
                        deleted: false,
                        tags: tags.iter().cloned().collect(),
                        created_ms: e.time_ms,
                        updated_ms: e.time_ms,
                    },
                );
            }
            return;
        }
        if id == 0 && !all.contains_key(&0) {
            all.insert(0, Experiment::default_of_project());
        }
        let name_taken = match change {
            ExperimentChange::Renamed(name) => taken(&all, name, id),
            _ => false,
        };
        let Some(x) = all.get_mut(&id) else { return };
        match change {
            ExperimentChange::Created { .. } => {}
            ExperimentChange::Renamed(name) => {
                if name_taken || *name == x.name {
                    return;
                }
                let old = std::mem::replace(&mut x.name, name.clone());
                if !x.former_names.contains(&old) {
                    x.former_names.push(old);
                }
            }
            ExperimentChange::Deleted => x.deleted = true,
            ExperimentChange::Restored => x.deleted = false,
            ExperimentChange::TagSet(k, v) => {
                x.tags.insert(k.clone(), v.clone());
            }
            ExperimentChange::TagDeleted(k) => {
                x.tags.remove(k);
            }
        }
        x.updated_ms = e.time_ms;
    }

    /// The experiments of a project, by id, the default experiment (0) first.
    pub fn experiments(&self, workspace: &WorkspaceId, project: &ProjectId) -> Vec<Experiment> {
        let mut out = self
            .experiments
            .get(&(workspace.clone(), project.clone()))
            .map(|m| m.values().cloned().collect::<Vec<_>>())
            .unwrap_or_default();
        if out.first().is_none_or(|x| x.id != 0) {
            out.insert(0, Experiment::default_of_project());
        }
        out
    }

    pub fn experiment(&self, workspace: &WorkspaceId, project: &ProjectId, id: u64) -> Option<Experiment> {
        let found = self
            .experiments
            .get(&(workspace.clone(), project.clone()))
            .and_then(|m| m.get(&id).cloned());
        found.or_else(|| (id == 0).then(Experiment::default_of_project))
    }

    /// The experiment named `name` now.
    pub fn experiment_by_name(&self, workspace: &WorkspaceId, project: &ProjectId, name: &str) -> Option<Experiment> {
        self.experiments(workspace, project)
            .into_iter()
            .find(|x| x.name == name)
    }

    /// The experiment that holds or once held `name`, which no other may take.
    pub fn experiment_answering_to(
        &self,
        workspace: &WorkspaceId,
        project: &ProjectId,
        name: &str,
    ) -> Option<Experiment> {
        self.experiments(workspace, project)
            .into_iter()
            .find(|x| x.answers_to(name))
    }

    /// Folds one registry event in. Applying an event twice has no further effect. Experiment
    /// changes need their record's offset: they are folded by [`Registry::apply_record`] only.
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
            RegistryBody::Experiment { .. } => {}
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

    fn exp(project: &str, experiment: u64, change: ExperimentChange) -> RegistryEvent {
        ev(RegistryBody::Experiment {
            project: ProjectId::new(project).unwrap(),
            experiment,
            change,
        })
    }

    fn created(name: &str) -> ExperimentChange {
        ExperimentChange::Created {
            name: name.into(),
            artifact_location: String::new(),
            tags: vec![("k".into(), "v".into())],
        }
    }

    #[test]
    fn experiments_take_their_record_offset_as_id_and_names_stay_unique() {
        let r = Registry::new();
        let (w, p) = (WorkspaceId::new("w").unwrap(), ProjectId::new("p").unwrap());
        // Only the default experiment before anything is created.
        assert_eq!(r.experiments(&w, &p).iter().map(|x| x.id).collect::<Vec<_>>(), [0]);
        r.apply_record(3, &[exp("p", 0, created("a"))]);
        // A second claim on the name, folded later, has no effect; nor has "Default".
        r.apply_record(4, &[exp("p", 0, created("a"))]);
        r.apply_record(5, &[exp("p", 0, created(DEFAULT_EXPERIMENT))]);
        r.apply_record(6, &[exp("p", 0, created("b"))]);
        let ids: Vec<u64> = r.experiments(&w, &p).iter().map(|x| x.id).collect();
        assert_eq!(ids, [0, 3, 6]);
        assert_eq!(
            r.experiment(&w, &p, 3).unwrap().tags.get("k").map(String::as_str),
            Some("v")
        );
        // Records are folded once and in order: an old offset is skipped.
        r.apply_record(2, &[exp("p", 0, created("late"))]);
        assert!(r.experiment_by_name(&w, &p, "late").is_none());
        assert_eq!(r.next_offset(), 7);

        // A rename keeps the old name for the runs that carry it; nobody else may take it.
        r.apply_record(7, &[exp("p", 3, ExperimentChange::Renamed("a2".into()))]);
        let a = r.experiment(&w, &p, 3).unwrap();
        assert_eq!((a.name.as_str(), a.former_names.clone()), ("a2", vec!["a".to_string()]));
        assert_eq!(r.experiment_answering_to(&w, &p, "a").unwrap().id, 3);
        r.apply_record(8, &[exp("p", 0, created("a"))]);
        r.apply_record(9, &[exp("p", 6, ExperimentChange::Renamed("a2".into()))]);
        assert_eq!(r.experiments(&w, &p).len(), 3);
        assert_eq!(r.experiment(&w, &p, 6).unwrap().name, "b");

        r.apply_record(10, &[exp("p", 6, ExperimentChange::Deleted)]);
        assert!(r.experiment(&w, &p, 6).unwrap().deleted);
        r.apply_record(11, &[exp("p", 6, ExperimentChange::Restored)]);
        r.apply_record(12, &[exp("p", 0, ExperimentChange::TagSet("t".into(), "1".into()))]);
        r.apply_record(13, &[exp("p", 3, ExperimentChange::TagDeleted("k".into()))]);
        assert!(!r.experiment(&w, &p, 6).unwrap().deleted);
        assert_eq!(
            r.experiment(&w, &p, 0).unwrap().tags.get("t").map(String::as_str),
            Some("1")
        );
        assert!(r.experiment(&w, &p, 3).unwrap().tags.is_empty());
        // Another project has experiments of its own.
        assert_eq!(r.experiments(&w, &ProjectId::new("q").unwrap()).len(), 1);
    }
}
