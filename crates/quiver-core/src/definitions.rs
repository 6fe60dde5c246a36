//! [`Definitions`]: every object of one project at one registry version, and feature resolution.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::entity_key::canonical_order;
use crate::error::{CoreError, Result};
use crate::model::{
    Entity, Feature, FeatureRef, FeatureService, FeatureView, JoinKey, ObjectKind, Permission,
    Source, Tags,
};
use crate::types::ValueType;

/// Every object of one project, keyed by name. Produced by validation, stored in the registry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Definitions {
    /// The project these objects belong to.
    pub project: String,
    /// Entities by name.
    #[serde(default)]
    pub entities: BTreeMap<String, Entity>,
    /// Sources by name.
    #[serde(default)]
    pub sources: BTreeMap<String, Source>,
    /// Feature views by name.
    #[serde(default)]
    pub feature_views: BTreeMap<String, FeatureView>,
    /// Feature services by name.
    #[serde(default)]
    pub feature_services: BTreeMap<String, FeatureService>,
    /// Permissions by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub permissions: BTreeMap<String, Permission>,
}

/// A requested feature after resolution: which view, which feature, and its output column name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedFeature {
    /// The feature view.
    pub view: String,
    /// The feature's definition.
    pub feature: Feature,
    /// Position of the feature in its view's feature list.
    pub index: usize,
    /// Output column name: `feature`, or `view__feature` with full feature names.
    pub output_name: String,
}

/// What the stored online rows of a view depend on: its join keys (in canonical order) and
/// its features' names and types, in order. Rows stored under one layout are never served
/// under another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnlineLayout {
    /// Join keys, canonical order.
    pub keys: Vec<JoinKey>,
    /// `(name, type)` of every feature, in view order.
    pub features: Vec<(String, ValueType)>,
}

impl Definitions {
    /// The tags of object `name` of `kind`, or `None` if there is no such object.
    pub fn tags_of(&self, kind: ObjectKind, name: &str) -> Option<&Tags> {
        match kind {
            ObjectKind::Entity => self.entities.get(name).map(|o| &o.tags),
            ObjectKind::Source => self.sources.get(name).map(|o| &o.tags),
            ObjectKind::FeatureView => self.feature_views.get(name).map(|o| &o.tags),
            ObjectKind::FeatureService => self.feature_services.get(name).map(|o| &o.tags),
            ObjectKind::Permission => self.permissions.get(name).map(|o| &o.tags),
        }
    }

    /// The online layout of view `name`, or `None` if there is no such view or it is not
    /// online.
    pub fn online_layout(&self, name: &str) -> Option<OnlineLayout> {
        let view = self.feature_views.get(name).filter(|v| v.online)?;
        Some(OnlineLayout {
            keys: canonical_order(self.join_keys(view).ok()?),
            features: view
                .features
                .iter()
                .map(|f| (f.name.clone(), f.value_type))
                .collect(),
        })
    }

    /// The feature view with this name, or a `NotFound`-style error naming it.
    pub fn view(&self, name: &str) -> Result<&FeatureView> {
        self.feature_views
            .get(name)
            .ok_or_else(|| CoreError::UnknownFeatureView(name.to_owned()))
    }

    /// The feature service with this name.
    pub fn service(&self, name: &str) -> Result<&FeatureService> {
        self.feature_services
            .get(name)
            .ok_or_else(|| CoreError::UnknownFeatureService(name.to_owned()))
    }

    /// The join keys of a view: the keys of its entities, in entity order.
    pub fn join_keys(&self, view: &FeatureView) -> Result<Vec<JoinKey>> {
        let mut keys = Vec::new();
        for name in &view.entities {
            let entity = self
                .entities
                .get(name)
                .ok_or_else(|| CoreError::UnknownEntity(name.clone()))?;
            keys.extend(entity.join_keys.iter().cloned());
        }
        Ok(keys)
    }

    /// Resolves feature references to features and output names, in request order.
    ///
    /// `view:*` expands to every feature of the view in declaration order. Two features with the
    /// same output name are an error, as are unknown views and features.
    pub fn resolve(
        &self,
        refs: &[FeatureRef],
        full_feature_names: bool,
    ) -> Result<Vec<ResolvedFeature>> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        for r in refs {
            let view = self.view(&r.view)?;
            let features: Vec<(usize, &Feature)> = if r.is_wildcard() {
                view.features.iter().enumerate().collect()
            } else {
                let index = view
                    .features
                    .iter()
                    .position(|f| f.name == r.feature)
                    .ok_or_else(|| CoreError::UnknownFeature {
                        view: r.view.clone(),
                        feature: r.feature.clone(),
                    })?;
                vec![(index, &view.features[index])]
            };
            for (index, feature) in features {
                let output_name = if full_feature_names {
                    format!("{}__{}", view.name, feature.name)
                } else {
                    feature.name.clone()
                };
                if !seen.insert(output_name.clone()) {
                    return Err(CoreError::DuplicateOutputName(output_name));
                }
                out.push(ResolvedFeature {
                    view: view.name.clone(),
                    feature: feature.clone(),
                    index,
                    output_name,
                });
            }
        }
        Ok(out)
    }

    /// Resolves the features of a feature service.
    pub fn resolve_service(
        &self,
        service: &str,
        full_feature_names: bool,
    ) -> Result<Vec<ResolvedFeature>> {
        self.resolve(&self.service(service)?.features, full_feature_names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{KeyType, ScalarType};

    fn defs() -> Definitions {
        let mut d = Definitions {
            project: "p".into(),
            ..Default::default()
        };
        d.entities.insert(
            "driver".into(),
            Entity {
                name: "driver".into(),
                join_keys: vec![JoinKey {
                    name: "driver_id".into(),
                    key_type: KeyType::Int64,
                }],
                description: String::new(),
                owner: String::new(),
                tags: Default::default(),
            },
        );
        for view in ["a", "b"] {
            d.feature_views.insert(
                view.into(),
                FeatureView {
                    name: view.into(),
                    entities: vec!["driver".into()],
                    source: "s".into(),
                    features: ["x", "y"]
                        .iter()
                        .map(|n| Feature {
                            name: (*n).into(),
                            value_type: ValueType::Scalar(ScalarType::Float64),
                            description: String::new(),
                        })
                        .collect(),
                    ttl: Default::default(),
                    online: true,
                    offline: true,
                    description: String::new(),
                    owner: String::new(),
                    tags: Default::default(),
                    materialization: None,
                    freshness: None,
                    monitoring: None,
                },
            );
        }
        d
    }

    fn refs(r: &[&str]) -> Vec<FeatureRef> {
        r.iter().map(|s| FeatureRef::parse(s).unwrap()).collect()
    }

    #[test]
    fn resolves_in_request_order_with_wildcards() {
        let d = defs();
        let got = d.resolve(&refs(&["b:y", "a:*"]), true).unwrap();
        let names: Vec<_> = got.iter().map(|f| f.output_name.as_str()).collect();
        assert_eq!(names, ["b__y", "a__x", "a__y"]);
        assert_eq!(
            d.join_keys(d.view("a").unwrap()).unwrap()[0].name,
            "driver_id"
        );
    }

    #[test]
    fn same_output_name_is_an_error_unless_full_names() {
        let d = defs();
        let err = d.resolve(&refs(&["a:x", "b:x"]), false).unwrap_err();
        assert!(err.to_string().contains("'x'"), "{err}");
        assert!(d.resolve(&refs(&["a:x", "b:x"]), true).is_ok());
    }

    #[test]
    fn unknown_views_and_features_are_named() {
        let d = defs();
        let err = d.resolve(&refs(&["nope:x"]), false).unwrap_err();
        assert!(err.to_string().contains("'nope'"), "{err}");
        let err = d.resolve(&refs(&["a:zz"]), false).unwrap_err();
        assert!(err.to_string().contains("'a:zz'"), "{err}");
        assert!(FeatureRef::parse("a").is_err());
        assert!(FeatureRef::parse("a:b:c").is_err());
        assert!(FeatureRef::parse(":b").is_err());
    }
}
