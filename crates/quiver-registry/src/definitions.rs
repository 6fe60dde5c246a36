//! Loading and validating a feature repository's definition files.
//!
//! A definition file is any `*.yaml` / `*.yml` in the repository (outside hidden folders and the
//! registry, data and online store folders) other than `quiver.yaml`. Its top level has up to
//! four lists:
//!
//! ```yaml
//! entities:
//!   - name: driver
//!     join_keys: [{name: driver_id, type: int64}]
//! sources:
//!   - name: driver_stats_source
//!     path: data/driver_stats.parquet        # a file, a folder, or a glob
//!     timestamp_field: event_timestamp
//!     created_timestamp_column: created      # optional
//!     field_mapping: {trips: avg_daily_trips} # optional, source column -> name
//! feature_views:
//!   - name: driver_hourly_stats
//!     entities: [driver]
//!     source: driver_stats_source
//!     ttl: 1d
//!     materialization: {every: 1h, lookback: 2h}   # optional: `quiver serve` runs it
//!     freshness: 2h                                # optional: `quiver status` checks it
//!     monitoring:                                  # optional: `quiver monitor drift`
//!       reference: 2024-01-01..2024-02-01          # a window or a training set file
//!       psi: 0.2                                   # thresholds (these are the defaults,
//!       features: {conv_rate: {psi: 0.1}}          # with KS 0.1 and JS 0.1)
//!     features:
//!       - {name: conv_rate, type: float32}
//! feature_services:
//!   - name: driver_activity
//!     features: ["driver_hourly_stats:*"]
//! ```
//!
//! [`load_definitions`] reports every problem at once, each with its file, line and object.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use marked_yaml::{Node, Spanned};
use quiver_core::{
    Action, DataSelection, Definitions, DriftThresholds, Entity, Feature, FeatureLogging,
    FeatureRef, FeatureService, FeatureView, JoinKey, KeyType, Monitoring, ObjectKind, Period,
    Permission, Policy, SampleRate, Schedule, Source, Tags, Ttl, ValueType,
};
use serde::Deserialize;

use quiver_source::{SourceSchema, Sources};

use crate::config::{CONFIG_FILE, RepoConfig};
use crate::error::{Diagnostic, RegistryError, Result};

/// A source error as a diagnostic message: the diagnostic already names the source.
fn source_problem(e: &quiver_source::SourceError) -> String {
    match e {
        quiver_source::SourceError::Data { file, message, .. } => format!("{file}: {message}"),
        other => other.to_string(),
    }
}

/// Whether `name` is a valid object name: ASCII letters, digits, `_` and `-`, starting with a
/// letter or `_`.
pub fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

pub(crate) fn load_error_line(e: &marked_yaml::LoadError) -> usize {
    use marked_yaml::LoadError as L;
    match e {
        L::TopLevelMustBeMapping(m)
        | L::TopLevelMustBeSequence(m)
        | L::UnexpectedAnchor(m)
        | L::MappingKeyMustBeScalar(m)
        | L::UnexpectedTag(m)
        | L::ScanError(m, _) => m.line(),
        L::DuplicateKey(inner) => inner
            .key
            .span()
            .start()
            .map_or(0, marked_yaml::Marker::line),
    }
}

/// Decodes a node, locating errors: serde errors carry the failing value's line, except
/// unknown fields, which are found by searching the node for the offending key.
pub(crate) fn decode_node<T: for<'de> Deserialize<'de>>(
    node: &Node,
) -> std::result::Result<T, (usize, String)> {
    marked_yaml::from_node(node).map_err(|e| {
        let mut line = e.start_mark().map_or(0, |m| m.line());
        if let marked_yaml::Error::UnknownFieldError(field, _, _) = &*e {
            line = find_key_line(node, field).unwrap_or(line);
        }
        (line, e.to_string())
    })
}

pub(crate) fn find_key_line(node: &Node, key: &str) -> Option<usize> {
    match node {
        Node::Mapping(m) => m.iter().find_map(|(k, v)| {
            if k.as_str() == key {
                k.span().start().map(marked_yaml::Marker::line)
            } else {
                find_key_line(v, key)
            }
        }),
        Node::Sequence(s) => s.iter().find_map(|n| find_key_line(n, key)),
        Node::Scalar(_) => None,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJoinKey {
    name: Spanned<String>,
    #[serde(rename = "type")]
    key_type: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntity {
    name: Spanned<String>,
    join_keys: Vec<RawJoinKey>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    owner: String,
    #[serde(default)]
    tags: Tags,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    name: Spanned<String>,
    path: Spanned<String>,
    timestamp_field: Spanned<String>,
    created_timestamp_column: Option<Spanned<String>>,
    #[serde(default)]
    field_mapping: BTreeMap<String, String>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    owner: String,
    #[serde(default)]
    tags: Tags,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFeature {
    name: Spanned<String>,
    #[serde(rename = "type")]
    value_type: Spanned<String>,
    #[serde(default)]
    description: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFeatureView {
    name: Spanned<String>,
    entities: Vec<Spanned<String>>,
    source: Spanned<String>,
    features: Vec<RawFeature>,
    ttl: Option<Spanned<String>>,
    #[serde(default)]
    materialization: Option<RawSchedule>,
    freshness: Option<Spanned<String>>,
    monitoring: Option<RawMonitoring>,
    #[serde(default = "yes")]
    online: bool,
    #[serde(default = "yes")]
    offline: bool,
    #[serde(default)]
    description: String,
    #[serde(default)]
    owner: String,
    #[serde(default)]
    tags: Tags,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMonitoring {
    reference: Option<Spanned<String>>,
    psi: Option<Spanned<f64>>,
    kolmogorov_smirnov: Option<Spanned<f64>>,
    jensen_shannon: Option<Spanned<f64>>,
    chi_squared_p_value: Option<Spanned<f64>>,
    #[serde(default)]
    features: HashMap<Spanned<String>, RawThresholds>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawThresholds {
    psi: Option<Spanned<f64>>,
    kolmogorov_smirnov: Option<Spanned<f64>>,
    jensen_shannon: Option<Spanned<f64>>,
    chi_squared_p_value: Option<Spanned<f64>>,
}

/// Drift thresholds (PSI, KS, JS, chi-squared p-value), each checked to be in its range;
/// problems go to `report` as `monitoring.<at>name: ...`.
fn check_thresholds(
    at: &str,
    [psi, ks, js, chi]: [&Option<Spanned<f64>>; 4],
    report: &mut impl FnMut(usize, String),
) -> DriftThresholds {
    let mut take = |name: &str, v: &Option<Spanned<f64>>, max: f64, open_max: bool| {
        let v = v.as_ref()?;
        let x = **v;
        let fits = x > 0.0 && if open_max { x < max } else { x <= max };
        if !fits {
            let range = if open_max { "below" } else { "at most" };
            report(
                line_of(v),
                format!("monitoring.{at}{name} must be more than 0 and {range} {max}, got {x}"),
            );
        }
        fits.then_some(x)
    };
    DriftThresholds {
        psi: take("psi", psi, f64::MAX, false),
        kolmogorov_smirnov: take("kolmogorov_smirnov", ks, 1.0, false),
        jensen_shannon: take("jensen_shannon", js, 1.0, false),
        chi_squared_p_value: take("chi_squared_p_value", chi, 1.0, true),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchedule {
    every: Spanned<String>,
    lookback: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFeatureService {
    name: Spanned<String>,
    features: Vec<Spanned<String>>,
    logging: Option<RawLogging>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    owner: String,
    #[serde(default)]
    tags: Tags,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLogging {
    sample_rate: Spanned<f64>,
    destination: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPermission {
    name: Spanned<String>,
    #[serde(default)]
    types: Vec<Spanned<String>>,
    #[serde(default)]
    name_patterns: Vec<Spanned<String>>,
    #[serde(default)]
    required_tags: Tags,
    actions: Vec<Spanned<String>>,
    policy: RawPolicy,
    #[serde(default)]
    tags: Tags,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default)]
    roles: Option<Vec<String>>,
    #[serde(default)]
    groups: Option<Vec<String>>,
}

/// Where an object was defined.
#[derive(Debug, Clone)]
struct Location {
    file: PathBuf,
    line: usize,
}

/// `monitoring:` as a definition file writes it.
fn monitoring_json(m: &Monitoring) -> serde_json::Value {
    use serde_json::{Value, json};
    let thresholds = |t: &DriftThresholds| -> serde_json::Map<String, Value> {
        t.declared()
            .map(|(n, v)| (n.to_owned(), json!(v)))
            .collect()
    };
    let mut out = thresholds(&m.thresholds);
    if let Some(r) = &m.reference {
        out.insert("reference".into(), json!(r.to_string()));
    }
    if !m.features.is_empty() {
        let features: serde_json::Map<String, Value> = m
            .features
            .iter()
            .map(|(f, t)| (f.clone(), Value::Object(thresholds(t))))
            .collect();
        out.insert("features".into(), Value::Object(features));
    }
    Value::Object(out)
}

fn line_of<T>(s: &Spanned<T>) -> usize {
    s.span().start().map_or(0, marked_yaml::Marker::line)
}

/// Collects diagnostics for one repository.
struct Diagnostics(Vec<Diagnostic>);

impl Diagnostics {
    fn push(&mut self, file: &Path, line: usize, object: Option<String>, message: String) {
        self.0.push(Diagnostic {
            file: file.to_path_buf(),
            line,
            object,
            message,
        });
    }
}

/// Parsed, not yet validated, objects of all files.
#[derive(Default)]
struct RawRepo {
    entities: Vec<(PathBuf, RawEntity)>,
    sources: Vec<(PathBuf, RawSource)>,
    views: Vec<(PathBuf, RawFeatureView)>,
    services: Vec<(PathBuf, RawFeatureService)>,
    permissions: Vec<(PathBuf, RawPermission)>,
}

/// Lists the definition files of a repository, sorted, relative to it.
pub fn definition_files(repo: &Path, config: &RepoConfig) -> Result<Vec<PathBuf>> {
    let skip: HashSet<PathBuf> = [
        Some(config.registry_path(repo)),
        config.online_store_path(repo),
    ]
    .into_iter()
    .flatten()
    .filter_map(|p| p.canonicalize().ok())
    .collect();
    let mut out = Vec::new();
    let mut stack = vec![repo.to_path_buf()];
    // Each folder is searched once, whatever symlinks lead to it (a loop would never end).
    let mut seen = HashSet::new();
    while let Some(dir) = stack.pop() {
        if !dir.canonicalize().is_ok_and(|c| seen.insert(c)) {
            continue;
        }
        let entries = std::fs::read_dir(&dir).map_err(RegistryError::io(&dir))?;
        for entry in entries {
            let path = entry.map_err(RegistryError::io(&dir))?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.starts_with('.') {
                continue;
            }
            if path.is_dir() {
                if !path.canonicalize().is_ok_and(|p| skip.contains(&p)) {
                    stack.push(path);
                }
            } else if (name.ends_with(".yaml") || name.ends_with(".yml"))
                && !(dir == repo && name == CONFIG_FILE)
            {
                out.push(path.strip_prefix(repo).unwrap_or(&path).to_path_buf());
            }
        }
    }
    out.sort();
    Ok(out)
}

fn parse_file(file: &Path, text: &str, raw: &mut RawRepo, diags: &mut Diagnostics) {
    let root = match marked_yaml::parse_yaml(0, text) {
        Ok(root) => root,
        Err(e) => {
            diags.push(
                file,
                load_error_line(&e),
                None,
                format!("invalid YAML: {e}"),
            );
            return;
        }
    };
    let Some(mapping) = root.as_mapping() else {
        diags.push(file, 1, None, "expected a mapping at the top level".into());
        return;
    };
    for (key, value) in mapping.iter() {
        let key_line = key.span().start().map_or(0, marked_yaml::Marker::line);
        let kind = match key.as_str() {
            "entities" => ObjectKind::Entity,
            "sources" => ObjectKind::Source,
            "feature_views" => ObjectKind::FeatureView,
            "feature_services" => ObjectKind::FeatureService,
            "permissions" => ObjectKind::Permission,
            other => {
                diags.push(
                    file,
                    key_line,
                    None,
                    format!(
                        "unknown top-level key '{other}' (expected entities, sources, feature_views, feature_services or permissions)"
                    ),
                );
                continue;
            }
        };
        let Some(items) = value.as_sequence() else {
            diags.push(
                file,
                key_line,
                None,
                format!("'{}' must be a list", key.as_str()),
            );
            continue;
        };
        for item in items.iter() {
            parse_object(file, kind, item, raw, diags);
        }
    }
}

fn parse_object(
    file: &Path,
    kind: ObjectKind,
    item: &Node,
    raw: &mut RawRepo,
    diags: &mut Diagnostics,
) {
    let result = match kind {
        ObjectKind::Entity => decode_node(item).map(|o| raw.entities.push((file.into(), o))),
        ObjectKind::Source => decode_node(item).map(|o| raw.sources.push((file.into(), o))),
        ObjectKind::FeatureView => decode_node(item).map(|o| raw.views.push((file.into(), o))),
        ObjectKind::FeatureService => {
            decode_node(item).map(|o| raw.services.push((file.into(), o)))
        }
        ObjectKind::Permission => decode_node(item).map(|o| raw.permissions.push((file.into(), o))),
    };
    if let Err((line, message)) = result {
        let item_line = item.span().start().map_or(0, marked_yaml::Marker::line);
        let name = item
            .as_mapping()
            .and_then(|m| m.get_scalar("name"))
            .map(|n| format!("{kind} '{}'", n.as_str()));
        let line = if line == 0 { item_line } else { line };
        diags.push(file, line, name.or_else(|| Some(kind.to_string())), message);
    }
}

/// Loads and validates every definition file of a repository, checking each source against
/// its Parquet data (resolved by `sources`). Returns every problem found at once.
pub fn load_definitions(
    repo: &Path,
    config: &RepoConfig,
    sources: &Sources,
) -> Result<Definitions> {
    let mut files = Vec::new();
    for file in definition_files(repo, config)? {
        let path = repo.join(&file);
        let text = std::fs::read_to_string(&path).map_err(RegistryError::io(&path))?;
        files.push((file, text));
    }
    validate_files(&files, &config.project, sources)
}

/// Validates definition files given as `(name, text)` as the complete definitions of
/// `project`, exactly as [`load_definitions`] validates a repository's files.
pub fn validate_files(
    files: &[(PathBuf, String)],
    project: &str,
    sources: &Sources,
) -> Result<Definitions> {
    let mut diags = Diagnostics(Vec::new());
    let mut raw = RawRepo::default();
    for (file, text) in files {
        parse_file(file, text, &mut raw, &mut diags);
    }
    let defs = Validator {
        project: project.to_owned(),
        sources,
        diags: &mut diags,
        locations: HashMap::new(),
        schemas: HashMap::new(),
    }
    .validate(raw);
    if diags.0.is_empty() {
        Ok(defs)
    } else {
        Err(RegistryError::Invalid(diags.0))
    }
}

/// `defs` as the text of one definition file (JSON, which is YAML) that [`validate_files`]
/// reads back as the same definitions: for definitions built by a program (another
/// protocol's objects) to be validated exactly as a repository's files are.
pub fn definitions_file(defs: &Definitions) -> String {
    use serde_json::{Value, json};
    let text = |s: &str| (!s.is_empty()).then(|| json!(s));
    let object = |pairs: Vec<(&str, Option<Value>)>| {
        Value::Object(
            pairs
                .into_iter()
                .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v)))
                .collect(),
        )
    };
    let common = |description: &str, owner: &str, tags: &Tags| {
        vec![
            ("description", text(description)),
            ("owner", text(owner)),
            ("tags", (!tags.is_empty()).then(|| json!(tags))),
        ]
    };
    let entities: Vec<Value> = defs
        .entities
        .values()
        .map(|e| {
            let keys: Vec<Value> = e
                .join_keys
                .iter()
                .map(|k| json!({"name": k.name, "type": k.key_type.to_string()}))
                .collect();
            let mut pairs = vec![
                ("name", Some(json!(e.name))),
                ("join_keys", Some(json!(keys))),
            ];
            pairs.extend(common(&e.description, &e.owner, &e.tags));
            object(pairs)
        })
        .collect();
    let sources: Vec<Value> = defs
        .sources
        .values()
        .map(|s| {
            let mut pairs = vec![
                ("name", Some(json!(s.name))),
                ("path", Some(json!(s.path))),
                ("timestamp_field", Some(json!(s.timestamp_field))),
                (
                    "created_timestamp_column",
                    s.created_timestamp_column.as_ref().map(|c| json!(c)),
                ),
                (
                    "field_mapping",
                    (!s.field_mapping.is_empty()).then(|| json!(s.field_mapping)),
                ),
            ];
            pairs.extend(common(&s.description, &s.owner, &s.tags));
            object(pairs)
        })
        .collect();
    let views: Vec<Value> = defs
        .feature_views
        .values()
        .map(|v| {
            let features: Vec<Value> = v
                .features
                .iter()
                .map(|f| {
                    object(vec![
                        ("name", Some(json!(f.name))),
                        ("type", Some(json!(f.value_type.to_string()))),
                        ("description", text(&f.description)),
                    ])
                })
                .collect();
            let mut pairs = vec![
                ("name", Some(json!(v.name))),
                ("entities", Some(json!(v.entities))),
                ("source", Some(json!(v.source))),
                ("features", Some(json!(features))),
                ("ttl", Some(json!(v.ttl.to_string()))),
                (
                    "materialization",
                    v.materialization.as_ref().map(|m| {
                        json!({"every": m.every.to_string(), "lookback": m.lookback.to_string()})
                    }),
                ),
                ("freshness", v.freshness.map(|f| json!(f.to_string()))),
                ("monitoring", v.monitoring.as_ref().map(monitoring_json)),
                ("online", Some(json!(v.online))),
                ("offline", Some(json!(v.offline))),
            ];
            pairs.extend(common(&v.description, &v.owner, &v.tags));
            object(pairs)
        })
        .collect();
    let services: Vec<Value> = defs
        .feature_services
        .values()
        .map(|s| {
            let features: Vec<String> = s.features.iter().map(ToString::to_string).collect();
            let mut pairs = vec![
                ("name", Some(json!(s.name))),
                ("features", Some(json!(features))),
                (
                    "logging",
                    s.logging.as_ref().map(|l| {
                        json!({"sample_rate": l.sample_rate.get(), "destination": l.destination})
                    }),
                ),
            ];
            pairs.extend(common(&s.description, &s.owner, &s.tags));
            object(pairs)
        })
        .collect();
    let permissions: Vec<Value> = defs
        .permissions
        .values()
        .map(|p| {
            let types: Vec<&str> = p.types.iter().map(|k| k.key()).collect();
            let actions: Vec<String> = p.actions.iter().map(ToString::to_string).collect();
            object(vec![
                ("name", Some(json!(p.name))),
                ("types", (!types.is_empty()).then(|| json!(types))),
                (
                    "name_patterns",
                    (!p.name_patterns.is_empty()).then(|| json!(p.name_patterns)),
                ),
                (
                    "required_tags",
                    (!p.required_tags.is_empty()).then(|| json!(p.required_tags)),
                ),
                ("actions", Some(json!(actions))),
                ("policy", Some(json!(p.policy))),
                ("tags", (!p.tags.is_empty()).then(|| json!(p.tags))),
            ])
        })
        .collect();
    let file = object(vec![
        ("entities", (!entities.is_empty()).then(|| json!(entities))),
        ("sources", (!sources.is_empty()).then(|| json!(sources))),
        ("feature_views", (!views.is_empty()).then(|| json!(views))),
        (
            "feature_services",
            (!services.is_empty()).then(|| json!(services)),
        ),
        (
            "permissions",
            (!permissions.is_empty()).then(|| json!(permissions)),
        ),
    ]);
    serde_json::to_string_pretty(&file).unwrap_or_default()
}

struct Validator<'a> {
    project: String,
    sources: &'a Sources,
    diags: &'a mut Diagnostics,
    locations: HashMap<(ObjectKind, String), Location>,
    /// Schemas of sources that could be read.
    schemas: HashMap<String, SourceSchema>,
}

impl Validator<'_> {
    fn validate(mut self, raw: RawRepo) -> Definitions {
        let mut defs = Definitions {
            project: self.project.clone(),
            ..Default::default()
        };
        for (file, e) in raw.entities {
            if let Some(entity) = self.entity(&file, e) {
                defs.entities.insert(entity.name.clone(), entity);
            }
        }
        for (file, s) in raw.sources {
            if let Some(source) = self.source(&file, s) {
                defs.sources.insert(source.name.clone(), source);
            }
        }
        for (file, v) in raw.views {
            if let Some(view) = self.view(&file, v, &defs) {
                defs.feature_views.insert(view.name.clone(), view);
            }
        }
        for (file, s) in raw.services {
            if let Some(service) = self.service(&file, s, &defs) {
                defs.feature_services.insert(service.name.clone(), service);
            }
        }
        for (file, p) in raw.permissions {
            if let Some(permission) = self.permission(&file, p) {
                defs.permissions.insert(permission.name.clone(), permission);
            }
        }
        defs
    }

    fn permission(&mut self, file: &Path, p: RawPermission) -> Option<Permission> {
        let mut ok = self.claim_name(file, ObjectKind::Permission, &p.name);
        let object = Some(format!("permission '{}'", p.name.as_str()));
        let mut problem = |line, message: String| {
            self.diags.push(file, line, object.clone(), message);
            false
        };
        let mut types = Vec::new();
        for t in &p.types {
            match ObjectKind::ALL.into_iter().find(|k| k.key() == t.as_str()) {
                Some(k) => types.push(k),
                None => {
                    ok &= problem(
                        line_of(t),
                        format!(
                            "unknown type '{}' (expected entity, source, feature_view, feature_service or permission)",
                            t.as_str()
                        ),
                    );
                }
            }
        }
        for pattern in &p.name_patterns {
            if let Err(e) = regex::Regex::new(&format!("^(?:{})$", pattern.as_str())) {
                ok &= problem(
                    line_of(pattern),
                    format!("invalid name pattern '{}': {e}", pattern.as_str()),
                );
            }
        }
        let mut actions = Vec::new();
        for a in &p.actions {
            match Action::expand(a) {
                Some(more) => actions.extend(more),
                None => {
                    ok &= problem(
                        line_of(a),
                        format!(
                            "unknown action '{}' (expected create, describe, update, delete, read_online, read_offline, write_online, write_offline, or read, write, crud, all)",
                            a.as_str()
                        ),
                    );
                }
            }
        }
        actions.sort();
        actions.dedup();
        if p.actions.is_empty() {
            ok &= problem(line_of(&p.name), "needs at least one action".into());
        }
        let policy = match (p.policy.roles, p.policy.groups) {
            (Some(roles), None) => Some(Policy::Roles(roles)),
            (None, Some(groups)) => Some(Policy::Groups(groups)),
            _ => {
                ok &= problem(
                    line_of(&p.name),
                    "policy needs exactly one of 'roles' and 'groups'".into(),
                );
                None
            }
        };
        let policy = policy?;
        ok.then(|| Permission {
            name: p.name.to_string(),
            types,
            name_patterns: p.name_patterns.iter().map(|n| n.to_string()).collect(),
            required_tags: p.required_tags,
            actions,
            policy,
            tags: p.tags,
        })
    }

    /// Checks the name is valid and unique within its kind; records where it was defined.
    fn claim_name(&mut self, file: &Path, kind: ObjectKind, name: &Spanned<String>) -> bool {
        let line = line_of(name);
        let object = Some(format!("{kind} '{}'", name.as_str()));
        if !is_valid_name(name) {
            self.diags.push(
                file,
                line,
                object,
                "invalid name: use letters, digits, '_' and '-', starting with a letter or '_'"
                    .into(),
            );
            return false;
        }
        let key = (kind, name.to_string());
        if let Some(first) = self.locations.get(&key) {
            let message = format!(
                "duplicate {kind} name (first defined at {}:{})",
                first.file.display(),
                first.line
            );
            self.diags.push(file, line, object, message);
            return false;
        }
        self.locations.insert(
            key,
            Location {
                file: file.into(),
                line,
            },
        );
        true
    }

    fn entity(&mut self, file: &Path, e: RawEntity) -> Option<Entity> {
        let ok = self.claim_name(file, ObjectKind::Entity, &e.name);
        let object = Some(format!("entity '{}'", e.name.as_str()));
        let mut errors = 0;
        if e.join_keys.is_empty() {
            self.diags.push(
                file,
                line_of(&e.name),
                object.clone(),
                "needs at least one join key".into(),
            );
            errors += 1;
        }
        let mut join_keys = Vec::new();
        let mut seen = HashSet::new();
        for k in e.join_keys {
            if !is_valid_name(&k.name) {
                self.diags.push(
                    file,
                    line_of(&k.name),
                    object.clone(),
                    format!("invalid join key name '{}'", k.name.as_str()),
                );
                errors += 1;
            } else if !seen.insert(k.name.to_string()) {
                self.diags.push(
                    file,
                    line_of(&k.name),
                    object.clone(),
                    format!("duplicate join key '{}'", k.name.as_str()),
                );
                errors += 1;
            }
            match k.key_type.parse::<KeyType>() {
                Ok(key_type) => join_keys.push(JoinKey {
                    name: k.name.to_string(),
                    key_type,
                }),
                Err(err) => {
                    self.diags.push(
                        file,
                        line_of(&k.key_type),
                        object.clone(),
                        format!("join key '{}': {err}", k.name.as_str()),
                    );
                    errors += 1;
                }
            }
        }
        (ok && errors == 0).then(|| Entity {
            name: e.name.to_string(),
            join_keys,
            description: e.description,
            owner: e.owner,
            tags: e.tags,
        })
    }

    fn source(&mut self, file: &Path, s: RawSource) -> Option<Source> {
        let ok = self.claim_name(file, ObjectKind::Source, &s.name);
        let object = Some(format!("source '{}'", s.name.as_str()));
        let source = Source {
            name: s.name.to_string(),
            path: s.path.to_string(),
            timestamp_field: s.timestamp_field.to_string(),
            created_timestamp_column: s
                .created_timestamp_column
                .as_ref()
                .map(|c| c.as_str().to_owned()),
            field_mapping: s.field_mapping,
            description: s.description,
            owner: s.owner,
            tags: s.tags,
        };
        let schema = match self.sources.schema(&source) {
            Ok(schema) => schema,
            Err(err) => {
                self.diags
                    .push(file, line_of(&s.path), object, source_problem(&err));
                return None;
            }
        };
        let mut errors = 0;
        let mut check_timestamp =
            |name: &Spanned<String>, what: &str, diags: &mut Diagnostics| match schema.column(name)
            {
                None => {
                    diags.push(
                        file,
                        line_of(name),
                        object.clone(),
                        format!(
                            "{what} '{}' is not a column of {} (columns: {})",
                            name.as_str(),
                            schema.describe_files(),
                            schema.column_names().join(", ")
                        ),
                    );
                    errors += 1;
                }
                Some(field)
                    if !matches!(
                        field.data_type(),
                        arrow::datatypes::DataType::Timestamp(_, _)
                    ) =>
                {
                    diags.push(
                        file,
                        line_of(name),
                        object.clone(),
                        format!(
                            "{what} '{}' has type {} in {}, expected a timestamp",
                            name.as_str(),
                            field.data_type(),
                            schema.describe_files()
                        ),
                    );
                    errors += 1;
                }
                Some(_) => {}
            };
        check_timestamp(&s.timestamp_field, "timestamp_field", self.diags);
        if let Some(created) = &s.created_timestamp_column {
            check_timestamp(created, "created_timestamp_column", self.diags);
        }
        if !ok || errors > 0 {
            return None;
        }
        self.schemas.insert(source.name.clone(), schema);
        Some(source)
    }

    fn view(&mut self, file: &Path, v: RawFeatureView, defs: &Definitions) -> Option<FeatureView> {
        let named = self.claim_name(file, ObjectKind::FeatureView, &v.name);
        // Problems of this view; `dependency_failed` when a referenced object is itself invalid
        // (its own error says why).
        let mut errors: Vec<(usize, String)> = Vec::new();
        let mut dependency_failed = false;
        let mut report = |line, message: String| errors.push((line, message));

        let ttl = match &v.ttl {
            None => Ttl::UNLIMITED,
            Some(t) => t.parse::<Ttl>().unwrap_or_else(|e| {
                report(line_of(t), format!("ttl: {e}"));
                Ttl::UNLIMITED
            }),
        };
        let materialization = v.materialization.as_ref().and_then(|m| {
            let every = m
                .every
                .parse::<Period>()
                .map_err(|e| report(line_of(&m.every), format!("materialization.every: {e}")))
                .ok()?;
            let lookback = match &m.lookback {
                None => Period::default(),
                Some(l) => l
                    .parse::<Period>()
                    .map_err(|e| report(line_of(l), format!("materialization.lookback: {e}")))
                    .ok()?,
            };
            let schedule = Schedule { every, lookback };
            if schedule.is_on() && every.0 < std::time::Duration::from_secs(1) {
                report(
                    line_of(&m.every),
                    "materialization.every must be at least 1s (or 0 for no schedule)".into(),
                );
            }
            if schedule.is_on() && !v.online {
                report(
                    line_of(&m.every),
                    "a materialization schedule needs an online view (online: false here)".into(),
                );
            }
            Some(schedule)
        });
        let freshness = v.freshness.as_ref().and_then(|f| {
            let period = f
                .parse::<Period>()
                .map_err(|e| report(line_of(f), format!("freshness: {e}")))
                .ok()?;
            // Checked on the online store: an offline view's is kept for when it comes back.
            if period.0.is_zero() {
                report(line_of(f), "freshness must be more than 0".into());
            }
            Some(period)
        });

        let monitoring = v.monitoring.as_ref().map(|m| {
            let reference = m.reference.as_ref().and_then(|r| {
                r.parse::<DataSelection>()
                    .map_err(|e| report(line_of(r), format!("monitoring.reference: {e}")))
                    .ok()
            });
            let thresholds = check_thresholds(
                "",
                [
                    &m.psi,
                    &m.kolmogorov_smirnov,
                    &m.jensen_shannon,
                    &m.chi_squared_p_value,
                ],
                &mut report,
            );
            let features = m
                .features
                .iter()
                .map(|(name, t)| {
                    if !v.features.iter().any(|f| *f.name == **name) {
                        report(
                            line_of(name),
                            format!(
                                "monitoring.features: '{}' is not a feature of this view",
                                name.as_str()
                            ),
                        );
                    }
                    let t = check_thresholds(
                        &format!("features.{}.", name.as_str()),
                        [
                            &t.psi,
                            &t.kolmogorov_smirnov,
                            &t.jensen_shannon,
                            &t.chi_squared_p_value,
                        ],
                        &mut report,
                    );
                    (name.to_string(), t)
                })
                .collect();
            Monitoring {
                reference,
                thresholds,
                features,
            }
        });

        // Entities and their join keys.
        let mut join_keys: Vec<(JoinKey, usize)> = Vec::new();
        let mut seen_entities = HashSet::new();
        if v.entities.is_empty() {
            report(line_of(&v.name), "needs at least one entity".into());
        }
        for e in &v.entities {
            if !seen_entities.insert(e.to_string()) {
                report(line_of(e), format!("entity '{}' listed twice", e.as_str()));
                continue;
            }
            match defs.entities.get(e.as_str()) {
                Some(entity) => {
                    for k in &entity.join_keys {
                        if join_keys.iter().any(|(j, _)| j.name == k.name) {
                            report(
                                line_of(e),
                                format!(
                                    "join key '{}' of entity '{}' is also a join key of another entity of this view",
                                    k.name,
                                    e.as_str()
                                ),
                            );
                        }
                        join_keys.push((k.clone(), line_of(e)));
                    }
                }
                None if self
                    .locations
                    .contains_key(&(ObjectKind::Entity, e.to_string())) =>
                {
                    dependency_failed = true;
                }
                None => report(line_of(e), format!("unknown entity '{}'", e.as_str())),
            }
        }

        // Features.
        let mut features = Vec::new();
        let mut seen_features = HashSet::new();
        if v.features.is_empty() {
            report(line_of(&v.name), "needs at least one feature".into());
        }
        for f in &v.features {
            if !is_valid_name(&f.name) {
                report(
                    line_of(&f.name),
                    format!("invalid feature name '{}'", f.name.as_str()),
                );
            } else if !seen_features.insert(f.name.to_string()) {
                report(
                    line_of(&f.name),
                    format!("duplicate feature '{}'", f.name.as_str()),
                );
            } else if join_keys.iter().any(|(k, _)| k.name == *f.name) {
                report(
                    line_of(&f.name),
                    format!("feature '{}' has the name of a join key", f.name.as_str()),
                );
            }
            match f.value_type.parse::<ValueType>() {
                Ok(value_type) => features.push((
                    Feature {
                        name: f.name.to_string(),
                        value_type,
                        description: f.description.clone(),
                    },
                    line_of(&f.name),
                )),
                Err(e) => report(
                    line_of(&f.value_type),
                    format!("feature '{}': {e}", f.name.as_str()),
                ),
            }
        }

        // The source and its columns.
        match (
            defs.sources.get(v.source.as_str()),
            self.schemas.get(v.source.as_str()),
        ) {
            (Some(source), Some(schema)) => {
                let columns = join_keys
                    .iter()
                    .map(|(k, line)| ("join key", k.name.as_str(), k.key_type.value_type(), *line))
                    .chain(
                        features
                            .iter()
                            .map(|(f, line)| ("feature", f.name.as_str(), f.value_type, *line)),
                    );
                for (what, name, value_type, line) in columns {
                    match schema.column(name) {
                        None => report(
                            line,
                            format!(
                                "{what} '{name}' is not a column of source '{}' ({}; columns after field_mapping: {})",
                                source.name,
                                schema.describe_files(),
                                schema.column_names().join(", ")
                            ),
                        ),
                        Some(field) if !value_type.accepts(field.data_type()) => report(
                            line,
                            format!(
                                "{what} '{name}' is declared {value_type} but source '{}' has {} in {}",
                                source.name,
                                field.data_type(),
                                schema.describe_files()
                            ),
                        ),
                        Some(_) => {}
                    }
                }
                for (k, line) in &join_keys {
                    if *k.name == source.timestamp_field
                        || source.created_timestamp_column.as_deref() == Some(&k.name)
                    {
                        report(
                            *line,
                            format!(
                                "join key '{}' is a timestamp column of source '{}'",
                                k.name, source.name
                            ),
                        );
                    }
                }
            }
            (None, _)
                if !self
                    .locations
                    .contains_key(&(ObjectKind::Source, v.source.to_string())) =>
            {
                report(
                    line_of(&v.source),
                    format!("unknown source '{}'", v.source.as_str()),
                );
            }
            _ => dependency_failed = true,
        }

        let ok = named && errors.is_empty() && !dependency_failed;
        let object = Some(format!("feature view '{}'", v.name.as_str()));
        for (line, message) in errors {
            self.diags.push(file, line, object.clone(), message);
        }
        ok.then(|| FeatureView {
            name: v.name.to_string(),
            entities: v.entities.iter().map(|e| e.as_str().to_owned()).collect(),
            source: v.source.to_string(),
            features: features.into_iter().map(|(f, _)| f).collect(),
            ttl,
            online: v.online,
            offline: v.offline,
            description: v.description,
            owner: v.owner,
            tags: v.tags,
            materialization,
            freshness,
            monitoring,
        })
    }

    fn service(
        &mut self,
        file: &Path,
        s: RawFeatureService,
        defs: &Definitions,
    ) -> Option<FeatureService> {
        let mut ok = self.claim_name(file, ObjectKind::FeatureService, &s.name);
        let object = Some(format!("feature service '{}'", s.name.as_str()));
        let mut refs = Vec::new();
        let mut seen = HashSet::new();
        if s.features.is_empty() {
            self.diags.push(
                file,
                line_of(&s.name),
                object.clone(),
                "needs at least one feature".into(),
            );
            ok = false;
        }
        for text in &s.features {
            let line = line_of(text);
            let r = match FeatureRef::parse(text) {
                Ok(r) => r,
                Err(e) => {
                    self.diags.push(file, line, object.clone(), e.to_string());
                    ok = false;
                    continue;
                }
            };
            if !seen.insert(r.clone()) {
                self.diags.push(
                    file,
                    line,
                    object.clone(),
                    format!("feature '{r}' listed twice"),
                );
                ok = false;
            }
            match defs.feature_views.get(&r.view) {
                Some(view) if r.is_wildcard() || view.feature(&r.feature).is_some() => {}
                Some(view) => {
                    let available: Vec<_> = view.features.iter().map(|f| f.name.as_str()).collect();
                    self.diags.push(
                        file,
                        line,
                        object.clone(),
                        format!(
                            "feature view '{}' has no feature '{}' (features: {})",
                            r.view,
                            r.feature,
                            available.join(", ")
                        ),
                    );
                    ok = false;
                }
                None if self
                    .locations
                    .contains_key(&(ObjectKind::FeatureView, r.view.clone())) =>
                {
                    ok = false;
                }
                None => {
                    self.diags.push(
                        file,
                        line,
                        object.clone(),
                        format!("unknown feature view '{}' in '{r}'", r.view),
                    );
                    ok = false;
                }
            }
            refs.push(r);
        }
        let logging = s.logging.as_ref().and_then(|l| {
            let rate = SampleRate::try_from(*l.sample_rate)
                .map_err(|e| {
                    self.diags
                        .push(file, line_of(&l.sample_rate), object.clone(), format!("logging.{e}"));
                })
                .ok();
            let destination = l.destination.as_str();
            let confined = !destination.is_empty()
                && Path::new(destination)
                    .components()
                    .all(|c| matches!(c, std::path::Component::Normal(_)));
            if !confined {
                self.diags.push(
                    file,
                    line_of(&l.destination),
                    object.clone(),
                    format!("logging.destination '{destination}' must be a folder under the data root (a relative path without '..')"),
                );
            }
            Some(FeatureLogging {
                sample_rate: rate?,
                destination: confined.then(|| destination.to_owned())?,
            })
        });
        ok &= s.logging.is_none() || logging.is_some();
        ok.then(|| FeatureService {
            name: s.name.to_string(),
            features: refs,
            description: s.description,
            owner: s.owner,
            tags: s.tags,
            logging,
        })
    }
}
