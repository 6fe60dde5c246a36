//! Registering definitions: a new registry version with the conflict rule, then its
//! activation.

use quiver_core::{Action, Definitions};
use quiver_registry::{Action as PlanAction, Plan, Registry, RegistryVersion};

use crate::FeatureStore;
use crate::auth::Caller;
use crate::error::{OpsError, Result};

/// The version an apply is based on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BaseVersion {
    /// Whatever is latest now.
    Latest,
    /// This version (0: nothing applied yet). If another version was committed since, the
    /// apply is a conflict.
    Version(u64),
}

/// What to register.
#[derive(Debug, Clone)]
pub struct ApplyRequest {
    /// The project's complete, validated definitions.
    pub definitions: Definitions,
    /// The version the definitions were planned against.
    pub based_on: BaseVersion,
    /// Recorded with the version.
    pub author: String,
}

/// What [`commit`] did.
#[derive(Debug, Clone)]
pub struct Committed {
    /// The changes from the base version.
    pub plan: Plan,
    /// The new version, or `None` when nothing changed.
    pub version: Option<RegistryVersion>,
    /// The version the apply was based on (`None`: nothing applied before).
    pub base: Option<RegistryVersion>,
}

/// What [`FeatureStore::apply`] did.
#[derive(Debug, Clone)]
pub struct ApplyOutcome {
    /// The registry side.
    pub committed: Committed,
    /// Online views whose rows were deleted when the version became current.
    pub deleted_views: Vec<String>,
}

/// Commits `request` to `registry` as the version after its base, unless nothing changed.
/// Fails with a conflict if another version was committed after the base, and with a failed
/// precondition for a base the registry does not have.
pub fn commit(registry: &Registry, request: ApplyRequest) -> Result<Committed> {
    let latest = registry.latest_version()?;
    let based_on = match request.based_on {
        BaseVersion::Latest => latest,
        BaseVersion::Version(0) => None,
        BaseVersion::Version(v) => Some(v),
    };
    let base = match based_on {
        Some(v) if Some(v) <= latest => Some(registry.get(v)?),
        _ => None,
    };
    let empty = Definitions::default();
    let plan = Plan::between(
        base.as_ref().map_or(&empty, |v| &v.definitions),
        &request.definitions,
    );
    if plan.is_empty() && based_on == latest {
        return Ok(Committed {
            plan,
            version: None,
            base,
        });
    }
    let version = registry.commit(based_on, request.definitions, &request.author)?;
    Ok(Committed {
        plan,
        version: Some(version),
        base,
    })
}

/// The online views of `old` whose rows `new` no longer serves: removed, taken offline, or
/// with new join keys or features (a new online generation).
pub fn views_leaving(old: &RegistryVersion, new: &RegistryVersion) -> Vec<String> {
    old.generations
        .iter()
        .filter(|(view, generation)| new.generations.get(*view) != Some(generation))
        .map(|(view, _)| view.clone())
        .collect()
}

impl FeatureStore {
    /// Commits `request` (see [`commit`]) and makes the latest version current, deleting the
    /// online rows of views it no longer serves.
    /// `caller` needs `create`, `update` or `delete` on every object the apply adds, changes
    /// or removes, by the permissions of the current version.
    pub fn apply(&self, caller: &Caller, request: ApplyRequest) -> Result<ApplyOutcome> {
        let snapshot = self.snapshot();
        let plan = Plan::between(&snapshot.defs, &request.definitions);
        for change in &plan.changes {
            let action = match change.action {
                PlanAction::Added => Action::Create,
                PlanAction::Changed => Action::Update,
                PlanAction::Removed => Action::Delete,
            };
            let tags = match change.action {
                PlanAction::Removed => snapshot.defs.tags_of(change.kind, &change.name),
                _ => request.definitions.tags_of(change.kind, &change.name),
            };
            if snapshot
                .authorizer
                .decide_new(caller, action, change.kind, &change.name, tags)
                .is_none()
            {
                let e = OpsError::PermissionDenied(format!(
                    "'{}' may not {action} {} '{}'",
                    caller.name(),
                    change.kind,
                    change.name
                ));
                self.audit.record(
                    caller.name(),
                    action.name(),
                    &format!("{}:{}", change.kind.key(), change.name),
                    "denied",
                    &e.to_string(),
                );
                return Err(e);
            }
        }
        let author = request.author.clone();
        let committed = commit(&self.registry, request)?;
        if let Some(version) = &committed.version {
            self.audit.record(
                caller.name(),
                "apply",
                &format!("registry:{}", version.version),
                "ok",
                &format!("{} changes, author {author}", version.changes.len()),
            );
        }
        let activation = self.refresh()?;
        let mut deleted_views: Vec<String> = activation
            .into_iter()
            .flat_map(|a| a.deleted)
            .map(|id| id.view().to_owned())
            .collect();
        deleted_views.dedup();
        Ok(ApplyOutcome {
            committed,
            deleted_views,
        })
    }
}
