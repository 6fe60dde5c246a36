//! The registry as the server sees it: an in-memory snapshot of the latest version, swapped
//! when a newer version appears, so requests never read the registry from disk.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use quiver_core::{Definitions, FeatureRef};
use quiver_online::ReadPlan;
use quiver_registry::Registry;
use tonic::Status;

use crate::error::{Result, core_status, online_status};

/// The features an online read names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum FeatureSpec {
    /// `view:feature` references.
    Refs(Vec<String>),
    /// A feature service.
    Service(String),
}

/// Read plans kept per snapshot; past this many distinct feature lists the cache starts over,
/// so clients inventing feature lists cannot grow the server without bound.
const MAX_PLANS: usize = 1024;

type PlanKey = (FeatureSpec, bool);

/// The definitions of one registry version.
#[derive(Debug)]
pub struct Snapshot {
    /// Registry version number (0 before the first apply).
    pub version: u64,
    /// The project's definitions at that version.
    pub defs: Definitions,
    /// Read plans of the feature lists asked for at this version.
    plans: RwLock<HashMap<PlanKey, Arc<ReadPlan>, foldhash::fast::RandomState>>,
}

impl Snapshot {
    fn new(version: u64, defs: Definitions) -> Self {
        Self {
            version,
            defs,
            plans: RwLock::default(),
        }
    }

    /// The read plan of `spec` at this version: resolved on first use, then shared, so the hot
    /// path does no registry lookups.
    pub(crate) fn plan(
        &self,
        spec: FeatureSpec,
        full_names: bool,
    ) -> Result<Arc<ReadPlan>, Status> {
        let key = (spec, full_names);
        if let Some(plan) = self.plans.read().ok().and_then(|p| p.get(&key).cloned()) {
            return Ok(plan);
        }
        let features = match &key.0 {
            FeatureSpec::Refs(list) => {
                if list.is_empty() {
                    return Err(Status::invalid_argument("no features requested"));
                }
                let refs = list
                    .iter()
                    .map(|r| r.parse::<FeatureRef>())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| core_status(&e))?;
                self.defs.resolve(&refs, full_names)
            }
            FeatureSpec::Service(name) => self.defs.resolve_service(name, full_names),
        }
        .map_err(|e| core_status(&e))?;
        let plan = Arc::new(ReadPlan::new(&self.defs, features).map_err(|e| online_status(&e))?);
        if let Ok(mut plans) = self.plans.write() {
            if plans.len() >= MAX_PLANS {
                plans.clear();
            }
            plans.insert(key, Arc::clone(&plan));
        }
        Ok(plan)
    }
}

/// The latest registry snapshot, shared by every service.
pub struct Catalog {
    registry: Registry,
    current: RwLock<Arc<Snapshot>>,
}

impl Catalog {
    /// Loads the latest version of the registry (an empty project if nothing was applied).
    pub fn open(registry: Registry) -> Result<Arc<Self>> {
        let snapshot = Self::load(&registry)?;
        Ok(Arc::new(Self {
            registry,
            current: RwLock::new(Arc::new(snapshot)),
        }))
    }

    fn load(registry: &Registry) -> Result<Snapshot> {
        Ok(match registry.latest()? {
            Some(v) => Snapshot::new(v.version, v.definitions),
            None => Snapshot::new(
                0,
                Definitions {
                    project: registry.project().to_owned(),
                    ..Definitions::default()
                },
            ),
        })
    }

    /// The current snapshot (a cheap `Arc` clone).
    pub fn current(&self) -> Arc<Snapshot> {
        self.current
            .read()
            .map_or_else(|p| p.into_inner().clone(), |s| s.clone())
    }

    /// The registry this catalog follows.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Swaps in the latest version if it is newer than the current one; returns whether it did.
    pub fn refresh(&self) -> Result<bool> {
        let latest = self.registry.latest_version()?.unwrap_or(0);
        if latest <= self.current().version {
            return Ok(false);
        }
        let snapshot = Arc::new(Self::load(&self.registry)?);
        let mut current = self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if snapshot.version > current.version {
            *current = snapshot;
        }
        Ok(true)
    }

    /// Polls the registry every `interval` on a background task until the runtime stops.
    pub fn follow(self: &Arc<Self>, interval: Duration) {
        let catalog = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            loop {
                tick.tick().await;
                let c = Arc::clone(&catalog);
                if let Ok(Err(e)) = tokio::task::spawn_blocking(move || c.refresh()).await {
                    eprintln!("quiver serve: cannot read the registry: {e}");
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A snapshot of one online view `stats` of `features` float64 features, keyed by driver.
    fn snapshot(features: usize) -> Snapshot {
        let features: Vec<_> = (0..features)
            .map(|i| serde_json::json!({"name": format!("f{i}"), "type": "float64"}))
            .collect();
        let defs = serde_json::from_value(serde_json::json!({
            "project": "p",
            "entities": {"driver": {
                "name": "driver",
                "join_keys": [{"name": "driver_id", "type": "int64"}],
            }},
            "feature_views": {"stats": {
                "name": "stats",
                "entities": ["driver"],
                "source": "s",
                "features": features,
                "online": true,
                "offline": true,
            }},
        }))
        .expect("definitions");
        Snapshot::new(1, defs)
    }

    fn refs(list: &[&str]) -> FeatureSpec {
        FeatureSpec::Refs(list.iter().map(|r| (*r).to_owned()).collect())
    }

    #[test]
    fn plans_are_resolved_once_per_feature_list() {
        let s = snapshot(3);
        let a = s
            .plan(refs(&["stats:f0", "stats:f2"]), false)
            .expect("plan");
        let b = s
            .plan(refs(&["stats:f0", "stats:f2"]), false)
            .expect("plan");
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(a.features()[1].output_name, "f2");
        let full = s.plan(refs(&["stats:f0", "stats:f2"]), true).expect("plan");
        assert_eq!(full.features()[1].output_name, "stats__f2");
    }

    #[test]
    fn bad_feature_lists_are_errors_and_not_kept() {
        let s = snapshot(3);
        let err = s.plan(refs(&["stats:nope"]), false).expect_err("unknown");
        assert_eq!(err.code(), tonic::Code::NotFound);
        assert!(err.message().contains("nope"), "{}", err.message());
        let err = s.plan(refs(&[]), false).expect_err("empty");
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        let err = s
            .plan(FeatureSpec::Service("missing".into()), false)
            .expect_err("service");
        assert_eq!(err.code(), tonic::Code::NotFound);
        assert_eq!(s.plans.read().expect("lock").len(), 0);
    }

    #[test]
    fn the_plan_cache_is_bounded() {
        let s = snapshot(40);
        for i in 0..40 {
            for j in (0..40).filter(|j| *j != i) {
                s.plan(
                    refs(&[&format!("stats:f{i}"), &format!("stats:f{j}")]),
                    false,
                )
                .expect("plan");
                assert!(s.plans.read().expect("lock").len() <= MAX_PLANS);
            }
        }
    }
}
