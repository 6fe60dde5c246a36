//! The objects of a feature repository: entities, sources, feature views and feature services.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::duration::{Period, Ttl};
use crate::error::{CoreError, Result};
use crate::types::{KeyType, ValueType};

/// Free-form labels attached to an object.
pub type Tags = BTreeMap<String, String>;

/// A typed join key of an entity, e.g. `driver_id: int64`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinKey {
    /// Column name of the key in sources and entity tables.
    pub name: String,
    /// Declared type; requests are canonicalized to it.
    #[serde(rename = "type")]
    pub key_type: KeyType,
}

/// A named thing that features describe (a driver, a customer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entity {
    /// Unique name within the project.
    pub name: String,
    /// One or more join keys; several make a composite key.
    pub join_keys: Vec<JoinKey>,
    /// Human description.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Owner (a team or an e-mail).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub owner: String,
    /// Labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: Tags,
}

/// Batch data in Parquet: a file, a folder of files, or a glob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// Unique name within the project.
    pub name: String,
    /// Path of a Parquet file, folder or glob, relative to the repository's data root.
    pub path: String,
    /// Event-time column (after `field_mapping`).
    pub timestamp_field: String,
    /// Optional write-time column that breaks ties between equal event times.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_timestamp_column: Option<String>,
    /// Source column → feature or key name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub field_mapping: BTreeMap<String, String>,
    /// Human description.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Owner (a team or an e-mail).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub owner: String,
    /// Labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: Tags,
}

impl Source {
    /// The source column that `field_mapping` renames to `name` (or `name` itself).
    pub fn column_for<'a>(&'a self, name: &'a str) -> &'a str {
        self.field_mapping
            .iter()
            .find(|(_, to)| *to == name)
            .map_or(name, |(from, _)| from.as_str())
    }
}

/// A typed feature of a feature view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Feature {
    /// Name, unique within its view.
    pub name: String,
    /// Declared type.
    #[serde(rename = "type")]
    pub value_type: ValueType,
    /// Human description.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

/// A set of typed features from one source, keyed by one or more entities.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeatureView {
    /// Unique name within the project.
    pub name: String,
    /// Entities whose join keys key this view (several give a composite key).
    pub entities: Vec<String>,
    /// Name of the source the features are read from.
    pub source: String,
    /// Features, in declaration order (the order of `view:*`).
    pub features: Vec<Feature>,
    /// Time to live; zero is no limit.
    #[serde(default)]
    pub ttl: Ttl,
    /// Whether the view is materialized to and served from the online store.
    pub online: bool,
    /// Whether the view may be used in training sets.
    pub offline: bool,
    /// Human description.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Owner (a team or an e-mail).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub owner: String,
    /// Labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: Tags,
    /// When `quiver serve` materializes the view on its own (the repository's default when
    /// unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub materialization: Option<Schedule>,
    /// How old the newest online row may be before `quiver status` calls the view stale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freshness: Option<Period>,
    /// What drift monitoring compares the view's data with, and its thresholds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitoring: Option<crate::Monitoring>,
}

/// A materialization schedule: incremental runs every `every`, re-reading `lookback` before
/// the watermark for late data. `every: 0` turns scheduling off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// Time between the starts of two runs.
    pub every: Period,
    /// How far before the watermark each run starts.
    #[serde(default)]
    pub lookback: Period,
}

impl Schedule {
    /// Whether runs are scheduled at all.
    pub fn is_on(&self) -> bool {
        !self.every.0.is_zero()
    }
}

impl FeatureView {
    /// The feature with this name.
    pub fn feature(&self, name: &str) -> Option<&Feature> {
        self.features.iter().find(|f| f.name == name)
    }
}

/// A named list of feature references that a model consumes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeatureService {
    /// Unique name within the project.
    pub name: String,
    /// References, `view:feature` or `view:*`.
    pub features: Vec<FeatureRef>,
    /// Human description.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Owner (a team or an e-mail).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub owner: String,
    /// Labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: Tags,
    /// Where the server logs what it served for this service, if anywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logging: Option<FeatureLogging>,
}

/// `logging:` of a feature service: a sample of the online reads of the service, with every
/// value and status served, written as Parquet files under `destination`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureLogging {
    /// The share of reads logged.
    pub sample_rate: SampleRate,
    /// A folder under the data root.
    pub destination: String,
}

/// A share of requests in (0, 1], kept in millionths so definitions compare exactly;
/// written as a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "f64", try_from = "f64")]
pub struct SampleRate(u32);

impl SampleRate {
    /// Every request.
    pub const ALL: Self = Self(1_000_000);

    /// The rate as a number in (0, 1].
    pub fn get(self) -> f64 {
        f64::from(self.0) / 1e6
    }

    /// Whether a request drawing `draw` (uniform in [0, 1)) is sampled.
    pub fn samples(self, draw: f64) -> bool {
        draw < self.get()
    }
}

impl From<SampleRate> for f64 {
    fn from(rate: SampleRate) -> Self {
        rate.get()
    }
}

impl TryFrom<f64> for SampleRate {
    type Error = String;

    fn try_from(rate: f64) -> std::result::Result<Self, String> {
        let millionths = (rate * 1e6).round();
        if rate.is_finite() && rate > 0.0 && rate <= 1.0 && millionths >= 1.0 {
            Ok(Self(millionths as u32))
        } else {
            Err(format!(
                "sample_rate must be a number in (0, 1] (at least 0.000001), not {rate}"
            ))
        }
    }
}

/// A reference to a feature (`view:feature`) or to all features of a view (`view:*`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FeatureRef {
    /// The feature view.
    pub view: String,
    /// The feature, or `*` for all of them.
    pub feature: String,
}

impl FeatureRef {
    /// Parses `view:feature` or `view:*`.
    pub fn parse(text: &str) -> Result<Self> {
        match text.split_once(':') {
            Some((v, f)) if !v.is_empty() && !f.is_empty() && !f.contains(':') => Ok(Self {
                view: v.to_owned(),
                feature: f.to_owned(),
            }),
            _ => Err(CoreError::InvalidFeatureRef(text.to_owned())),
        }
    }

    /// Whether this reference names every feature of its view.
    pub fn is_wildcard(&self) -> bool {
        self.feature == "*"
    }
}

impl std::str::FromStr for FeatureRef {
    type Err = CoreError;

    fn from_str(text: &str) -> Result<Self> {
        Self::parse(text)
    }
}

impl fmt::Display for FeatureRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.view, self.feature)
    }
}

impl Serialize for FeatureRef {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for FeatureRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Self::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// An action a [`Permission`] can grant (Feast's `AuthzedAction`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Register a new object.
    Create,
    /// See an object's definition (list, get, history, plan).
    Describe,
    /// Change an object's definition.
    Update,
    /// Remove an object.
    Delete,
    /// Read online features.
    ReadOnline,
    /// Read training sets.
    ReadOffline,
    /// Write online rows (pushes, materialization).
    WriteOnline,
    /// Append offline rows (offline pushes).
    WriteOffline,
}

impl Action {
    /// Every action.
    pub const ALL: [Action; 8] = [
        Self::Create,
        Self::Describe,
        Self::Update,
        Self::Delete,
        Self::ReadOnline,
        Self::ReadOffline,
        Self::WriteOnline,
        Self::WriteOffline,
    ];

    /// The actions a name stands for: an action, or one of the aliases `read`, `write`,
    /// `crud` and `all`.
    pub fn expand(name: &str) -> Option<Vec<Action>> {
        Some(match name {
            "all" => Self::ALL.to_vec(),
            "read" => vec![Self::ReadOnline, Self::ReadOffline],
            "write" => vec![Self::WriteOnline, Self::WriteOffline],
            "crud" => vec![Self::Create, Self::Describe, Self::Update, Self::Delete],
            one => vec![Self::ALL.into_iter().find(|a| a.name() == one)?],
        })
    }

    /// The action's name in definitions and messages (`read_online`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Describe => "describe",
            Self::Update => "update",
            Self::Delete => "delete",
            Self::ReadOnline => "read_online",
            Self::ReadOffline => "read_offline",
            Self::WriteOnline => "write_online",
            Self::WriteOffline => "write_offline",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Who a [`Permission`] grants its actions to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// Principals with any of these roles.
    Roles(Vec<String>),
    /// Principals in any of these groups.
    Groups(Vec<String>),
}

impl Policy {
    /// Whether a principal with `roles` and `groups` is admitted.
    pub fn admits(&self, roles: &[String], groups: &[String]) -> bool {
        match self {
            Self::Roles(wanted) => wanted.iter().any(|r| roles.contains(r)),
            Self::Groups(wanted) => wanted.iter().any(|g| groups.contains(g)),
        }
    }
}

/// A grant of actions on the objects it selects, to the principals its policy admits
/// (Feast's `Permission`). Once any permission exists, what none grants is denied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permission {
    /// Unique name within the project.
    pub name: String,
    /// Kinds of object it covers (every kind when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub types: Vec<ObjectKind>,
    /// Regular expressions, one of which an object's whole name must match (every name when
    /// empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub name_patterns: Vec<String>,
    /// Tags an object must carry, with these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub required_tags: Tags,
    /// What it grants (aliases expanded).
    pub actions: Vec<Action>,
    /// To whom.
    pub policy: Policy,
    /// Labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: Tags,
}

/// The kinds of objects in a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectKind {
    /// An [`Entity`].
    Entity,
    /// A [`Source`].
    Source,
    /// A [`FeatureView`].
    FeatureView,
    /// A [`FeatureService`].
    FeatureService,
    /// A [`Permission`].
    Permission,
}

impl ObjectKind {
    /// All kinds, in dependency order.
    pub const ALL: [ObjectKind; 5] = [
        Self::Entity,
        Self::Source,
        Self::FeatureView,
        Self::FeatureService,
        Self::Permission,
    ];

    /// The kind's name in definitions (`feature_view`).
    pub fn key(self) -> &'static str {
        match self {
            Self::Entity => "entity",
            Self::Source => "source",
            Self::FeatureView => "feature_view",
            Self::FeatureService => "feature_service",
            Self::Permission => "permission",
        }
    }

    /// Human name, as used in messages ("feature view").
    pub fn label(self) -> &'static str {
        match self {
            Self::Entity => "entity",
            Self::Source => "source",
            Self::FeatureView => "feature view",
            Self::FeatureService => "feature service",
            Self::Permission => "permission",
        }
    }
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}
