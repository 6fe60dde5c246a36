//! The registry version a process works with: an in-memory snapshot of the latest version,
//! swapped when a newer one becomes current, so requests never read the registry from disk.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use quiver_core::{Definitions, FeatureRef, FeatureView, ResolvedFeature};
use quiver_online::{ReadPlan, ViewId};
use quiver_registry::RegistryVersion;

use crate::error::{OpsError, Result};
use crate::feature_log::LogTarget;
use crate::metrics::{Metrics, ValueCounters};

/// The features an online read names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FeatureSpec {
    /// `view:feature` references.
    Refs(Vec<String>),
    /// `view:feature` references as a protocol received them, still encoded.
    EncodedRefs(EncodedRefs),
    /// A feature service.
    Service(String),
}

/// `view:feature` references still in the bytes a protocol received them as. Plans are kept
/// by these bytes, so a repeated list is neither decoded nor resolved again: `decode` runs
/// only the first time.
#[derive(Debug, Clone)]
pub struct EncodedRefs {
    /// The encoding's name (e.g. `quiver.v1.FeatureList`): equal bytes of two encodings
    /// are different lists.
    pub encoding: &'static str,
    /// The encoded list.
    pub bytes: bytes::Bytes,
    /// The references the bytes encode.
    pub decode: fn(&[u8]) -> Result<Vec<String>>,
}

impl PartialEq for EncodedRefs {
    fn eq(&self, other: &Self) -> bool {
        self.encoding == other.encoding && self.bytes == other.bytes
    }
}

impl Eq for EncodedRefs {}

impl std::hash::Hash for EncodedRefs {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.encoding.hash(state);
        self.bytes.hash(state);
    }
}

/// Read plans kept per snapshot; past this many distinct feature lists the cache starts over,
/// so clients inventing feature lists cannot grow the process without bound.
const MAX_PLANS: usize = 1024;

type PlanKey = (FeatureSpec, bool);

/// A read plan and the counters of the values it answers, kept per feature list.
#[derive(Debug)]
pub struct PlannedRead {
    /// The plan.
    pub plan: ReadPlan,
    /// The counters of its views' answered values.
    pub(crate) counters: ValueCounters,
    /// Where its reads are logged (a feature service with `logging:`).
    pub(crate) log: Option<Arc<LogTarget>>,
}

/// The definitions of one registry version and what serving them needs.
#[derive(Debug)]
pub struct Snapshot {
    /// Registry version number (0 before the first apply).
    pub version: u64,
    /// The project's definitions at that version.
    pub defs: Definitions,
    /// The online generation of every online view at that version.
    pub generations: BTreeMap<String, u64>,
    /// The version's permissions, compiled.
    pub authorizer: crate::auth::Authorizer,
    /// Read plans of the feature lists asked for at this version.
    plans: RwLock<HashMap<PlanKey, Arc<PlannedRead>, foldhash::fast::RandomState>>,
}

impl Snapshot {
    /// The snapshot of a registry version.
    pub fn of(version: RegistryVersion) -> Self {
        Self {
            version: version.version,
            authorizer: crate::auth::Authorizer::new(&version.definitions),
            defs: version.definitions,
            generations: version.generations,
            plans: RwLock::default(),
        }
    }

    /// The snapshot of a project with nothing applied yet.
    pub fn empty(project: &str) -> Self {
        Self {
            version: 0,
            defs: Definitions {
                project: project.to_owned(),
                ..Definitions::default()
            },
            generations: BTreeMap::new(),
            authorizer: crate::auth::Authorizer::default(),
            plans: RwLock::default(),
        }
    }

    /// Where the online rows of `view` live at this version.
    pub fn view_id(&self, view: &str) -> ViewId {
        ViewId::new(
            &self.defs.project,
            view,
            self.generations.get(view).copied().unwrap_or(0),
        )
    }

    /// The online views, in name order.
    pub fn online_views(&self) -> impl Iterator<Item = &FeatureView> {
        self.defs.feature_views.values().filter(|v| v.online)
    }

    /// The read plan of `spec` at this version: resolved on first use (with its value
    /// counters in `metrics`), then shared, so the hot path does no registry or metric lookups.
    pub fn plan(
        &self,
        spec: FeatureSpec,
        full_names: bool,
        metrics: &Metrics,
    ) -> Result<Arc<PlannedRead>> {
        let key = (spec, full_names);
        if let Some(plan) = self.plans.read().ok().and_then(|p| p.get(&key).cloned()) {
            return Ok(plan);
        }
        let features = match &key.0 {
            FeatureSpec::Refs(list) => self.resolve_refs(list, full_names)?,
            FeatureSpec::EncodedRefs(e) => self.resolve_refs(&(e.decode)(&e.bytes)?, full_names)?,
            FeatureSpec::Service(name) => self.defs.resolve_service(name, full_names)?,
        };
        let plan = ReadPlan::new(&self.defs, &self.generations, features)?;
        let counters = metrics.value_counters(plan.view_names());
        let log = match &key.0 {
            FeatureSpec::Service(name) => LogTarget::of(&self.defs, name).map(Arc::new),
            FeatureSpec::Refs(_) | FeatureSpec::EncodedRefs(_) => None,
        };
        let plan = Arc::new(PlannedRead {
            plan,
            counters,
            log,
        });
        // Encoded bytes are often a slice of the whole request: the key keeps a copy of its own.
        let key = match key {
            (FeatureSpec::EncodedRefs(e), full_names) => (
                FeatureSpec::EncodedRefs(EncodedRefs {
                    bytes: bytes::Bytes::copy_from_slice(&e.bytes),
                    ..e
                }),
                full_names,
            ),
            key => key,
        };
        if let Ok(mut plans) = self.plans.write() {
            if plans.len() >= MAX_PLANS {
                plans.clear();
            }
            plans.insert(key, Arc::clone(&plan));
        }
        Ok(plan)
    }

    fn resolve_refs(&self, list: &[String], full_names: bool) -> Result<Vec<ResolvedFeature>> {
        if list.is_empty() {
            return Err(OpsError::invalid("no features requested"));
        }
        let refs = list
            .iter()
            .map(|r| r.parse::<FeatureRef>())
            .collect::<Result<Vec<_>, _>>()?;
        Ok(self.defs.resolve(&refs, full_names)?)
    }
}

/// The current snapshot, shared by every request of a process.
#[derive(Debug)]
pub(crate) struct Current(RwLock<Arc<Snapshot>>);

impl Current {
    pub(crate) fn new(snapshot: Snapshot) -> Self {
        Self(RwLock::new(Arc::new(snapshot)))
    }

    /// The current snapshot (a cheap `Arc` clone).
    pub(crate) fn get(&self) -> Arc<Snapshot> {
        self.0
            .read()
            .map_or_else(|p| p.into_inner().clone(), |s| s.clone())
    }

    /// Makes `snapshot` current unless a newer one already is.
    pub(crate) fn set(&self, snapshot: Arc<Snapshot>) {
        let mut current = self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if snapshot.version > current.version {
            *current = snapshot;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_core::{ErrorKind, HasKind};

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
        Snapshot {
            version: 1,
            authorizer: crate::auth::Authorizer::new(&defs),
            defs,
            generations: BTreeMap::from([("stats".to_owned(), 1)]),
            plans: RwLock::default(),
        }
    }

    fn refs(list: &[&str]) -> FeatureSpec {
        FeatureSpec::Refs(list.iter().map(|r| (*r).to_owned()).collect())
    }

    #[test]
    fn plans_are_resolved_once_per_feature_list() {
        let s = snapshot(3);
        let m = Metrics::default();
        let a = s
            .plan(refs(&["stats:f0", "stats:f2"]), false, &m)
            .expect("plan");
        let b = s
            .plan(refs(&["stats:f0", "stats:f2"]), false, &m)
            .expect("plan");
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(a.plan.features()[1].output_name, "f2");
        let full = s
            .plan(refs(&["stats:f0", "stats:f2"]), true, &m)
            .expect("plan");
        assert_eq!(full.plan.features()[1].output_name, "stats__f2");
    }

    #[test]
    fn encoded_lists_are_decoded_once_and_plan_like_their_references() {
        fn comma_separated(bytes: &[u8]) -> Result<Vec<String>> {
            DECODED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let text = std::str::from_utf8(bytes).map_err(|e| OpsError::invalid(e.to_string()))?;
            Ok(text.split(',').map(str::to_owned).collect())
        }
        static DECODED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let encoded = |text: &'static str| {
            FeatureSpec::EncodedRefs(EncodedRefs {
                encoding: "test.CommaSeparated",
                bytes: bytes::Bytes::from_static(text.as_bytes()),
                decode: comma_separated,
            })
        };
        let s = snapshot(3);
        let m = Metrics::default();
        let a = s
            .plan(encoded("stats:f2,stats:f0"), false, &m)
            .expect("plan");
        let b = s
            .plan(encoded("stats:f2,stats:f0"), false, &m)
            .expect("plan");
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(DECODED.load(std::sync::atomic::Ordering::Relaxed), 1);
        // The kept key is a copy, not a slice of the request that sent it.
        let request = bytes::Bytes::from(b"stats:f1,stats:f0 and the rest of a request".to_vec());
        let list = request.slice(..17);
        let spec = FeatureSpec::EncodedRefs(EncodedRefs {
            encoding: "test.CommaSeparated",
            bytes: list.clone(),
            decode: comma_separated,
        });
        s.plan(spec.clone(), false, &m).expect("plan");
        let plans = s.plans.read().expect("plans");
        let (kept, _) = plans.get_key_value(&(spec, false)).expect("kept");
        let FeatureSpec::EncodedRefs(kept) = &kept.0 else {
            panic!("encoded key");
        };
        assert_eq!(kept.bytes, list);
        assert_ne!(kept.bytes.as_ptr(), list.as_ptr());
        drop(plans);
        let names = |p: &PlannedRead| -> Vec<String> {
            p.plan
                .features()
                .iter()
                .map(|f| f.output_name.clone())
                .collect()
        };
        let decoded = s
            .plan(refs(&["stats:f2", "stats:f0"]), false, &m)
            .expect("plan");
        assert_eq!(names(&a), names(&decoded));
        let err = s
            .plan(encoded("stats:f0,stats:nope"), false, &m)
            .expect_err("unknown");
        assert_eq!(err.kind(), ErrorKind::NotFound);
        assert!(err.to_string().contains("nope"), "{err}");
    }

    #[test]
    fn bad_feature_lists_are_errors_and_not_kept() {
        let s = snapshot(3);
        let m = Metrics::default();
        let err = s
            .plan(refs(&["stats:nope"]), false, &m)
            .expect_err("unknown");
        assert_eq!(err.kind(), ErrorKind::NotFound);
        assert!(err.to_string().contains("nope"), "{err}");
        let err = s.plan(refs(&[]), false, &m).expect_err("empty");
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        let err = s
            .plan(FeatureSpec::Service("missing".into()), false, &m)
            .expect_err("service");
        assert_eq!(err.kind(), ErrorKind::NotFound);
        assert_eq!(s.plans.read().expect("lock").len(), 0);
    }

    #[test]
    fn the_plan_cache_is_bounded() {
        let s = snapshot(40);
        let m = Metrics::default();
        for i in 0..40 {
            for j in (0..40).filter(|j| *j != i) {
                s.plan(
                    refs(&[&format!("stats:f{i}"), &format!("stats:f{j}")]),
                    false,
                    &m,
                )
                .expect("plan");
                assert!(s.plans.read().expect("lock").len() <= MAX_PLANS);
            }
        }
    }
}
