//! Feast's registry protocol (`registry: {registry_type: remote, path: host:port}` in a Feast
//! repository's `feature_store.yaml`): `feast.registry.RegistryServer` over Quiver's registry.
//!
//! Reads answer from the current registry version, each Quiver definition as the Feast object
//! it corresponds to (a source is a `FileSource` with its absolute path, a view a
//! `FeatureView` with its batch source embedded, a service a `FeatureService` of one
//! projection per view), filtered by the caller's `describe` permission. An entity with
//! several join keys has no Feast counterpart and is not listed.
//!
//! Writes follow Feast's `commit` flag: objects applied or deleted with `commit: false` are
//! collected per client connection (Feast's `feast apply` sends every change that way, then
//! `Commit`), so one `feast apply` becomes one new registry version, validated exactly as a
//! repository's files are, with the same conflict rule (based on the version current when the
//! connection's first change arrived) and the same permissions. Reads on that connection see
//! its pending changes, as Feast's own registry does. Objects Quiver cannot represent
//! (on-demand, stream and label views, push and request sources, non-file sources, aliased
//! projections, Feast permissions) are refused with an error naming the object and why. Saved
//! datasets and the intervals Feast materialized into its own online stores, Feast metadata
//! with no Quiver object, are kept under `feast/` in the repository. Errors carry Feast's error detail (`{"module", "class", "message"}`), so the SDK
//! raises the exception it would raise against Feast's own registry server.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prost::Message;
use prost_types::{Duration as ProtoDuration, Timestamp};
use quiver_core::{
    Action, Definitions, Entity, Feature, FeatureRef, FeatureService, FeatureView, JoinKey,
    KeyType, ObjectKind, ScalarType, Source, Ttl, ValueType,
};
use quiver_ops::{ApplyRequest, BaseVersion, Caller, FeatureStore, Snapshot};
use tonic::{Code, Request, Response, Status};

use crate::connection::ConnectionInfo;
use crate::error::status;
use crate::gate::caller_of;
use crate::grpc::blocking;
use crate::proto::feast::core as fc;
use crate::proto::feast::registry as fr;
use crate::proto::feast::registry::registry_server_server::RegistryServer;
use crate::proto::feast::types::value_type::Enum as FeastType;

/// The entity Feast adds to every apply, for views without entities.
const DUMMY_ENTITY: &str = "__dummy";

/// How long a connection's uncommitted changes are kept.
const PENDING_TTL: Duration = Duration::from_secs(600);

/// A connection's changes sent with `commit: false`.
struct Pending {
    /// The registry version they are based on.
    base: u64,
    defs: Definitions,
    at: Instant,
}

/// The `feast.registry.RegistryServer` service.
pub struct FeastRegistry {
    store: Arc<FeatureStore>,
    /// The data root, absolute: Feast's file sources name absolute paths.
    data_root: PathBuf,
    pending: Mutex<HashMap<SocketAddr, Pending>>,
    saved: Arc<SavedDatasets>,
    intervals: Arc<Intervals>,
}

/// The windows Feast materialized into its own online stores, by feature view (Feast reads
/// them to start `materialize-incremental`; Quiver's own runs are recorded beside its online
/// data). Kept in `feast/materializations.json` in the repository, the newest
/// [`MAX_INTERVALS`] per view.
struct Intervals {
    path: PathBuf,
    lock: Mutex<()>,
}

/// Materialization intervals kept per view.
const MAX_INTERVALS: usize = 100;

/// `(start, end)` in ns since the epoch, by view.
type IntervalsByView = std::collections::BTreeMap<String, Vec<(i64, i64)>>;

impl Intervals {
    fn load(&self) -> Result<IntervalsByView, Status> {
        let io =
            |e: &dyn std::fmt::Display| Status::internal(format!("{}: {e}", self.path.display()));
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| io(&e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(IntervalsByView::new()),
            Err(e) => Err(io(&e)),
        }
    }

    fn add(&self, view: &str, interval: (i64, i64)) -> Result<(), Status> {
        let _one_writer = self
            .lock
            .lock()
            .map_err(|_| Status::internal("poisoned lock"))?;
        let mut all = self.load()?;
        let list = all.entry(view.to_owned()).or_default();
        list.push(interval);
        let excess = list.len().saturating_sub(MAX_INTERVALS);
        list.drain(..excess);
        let text = serde_json::to_vec(&all).map_err(|e| Status::internal(e.to_string()))?;
        replace_file(&self.path, &text)
    }
}

/// Writes `bytes` as `path` (its folder created if missing), replacing any file there at
/// once: readers see the old file or the new one, never part of it.
fn replace_file(path: &Path, bytes: &[u8]) -> Result<(), Status> {
    let io = |e: std::io::Error| Status::internal(format!("{}: {e}", path.display()));
    if let Some(folder) = path.parent() {
        std::fs::create_dir_all(folder).map_err(io)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, bytes).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

fn timestamp_of(ns: i64) -> Timestamp {
    Timestamp {
        seconds: ns.div_euclid(1_000_000_000),
        nanos: i32::try_from(ns.rem_euclid(1_000_000_000)).unwrap_or(0),
    }
}

fn nanos_of(t: Option<&Timestamp>) -> i64 {
    t.map_or(0, |t| {
        t.seconds
            .saturating_mul(1_000_000_000)
            .saturating_add(i64::from(t.nanos))
    })
}

/// `view` with the intervals Feast recorded for it.
fn with_intervals(mut view: fc::FeatureView, intervals: &IntervalsByView) -> fc::FeatureView {
    let name = view
        .spec
        .as_ref()
        .map(|s| s.name.clone())
        .unwrap_or_default();
    if let (Some(meta), Some(list)) = (view.meta.as_mut(), intervals.get(&name)) {
        meta.materialization_intervals = list
            .iter()
            .map(|&(start, end)| fc::MaterializationInterval {
                start_time: Some(timestamp_of(start)),
                end_time: Some(timestamp_of(end)),
            })
            .collect();
    }
    view
}

/// Feast's saved datasets: Feast's metadata about files `persist` wrote, which Quiver's
/// definitions have no object for. Each is kept as Feast sent it, in one file per dataset
/// under `feast/saved_datasets/` in the repository, written whole before it is visible.
struct SavedDatasets {
    folder: PathBuf,
}

impl SavedDatasets {
    fn path(&self, name: &str) -> Result<PathBuf, Status> {
        if quiver_registry::is_valid_name(name) {
            Ok(self.folder.join(format!("{name}.pb")))
        } else {
            Err(Status::invalid_argument(format!(
                "invalid saved dataset name '{name}'"
            )))
        }
    }

    fn put(&self, name: &str, dataset: &fc::SavedDataset) -> Result<(), Status> {
        replace_file(&self.path(name)?, &dataset.encode_to_vec())
    }

    fn get(&self, name: &str) -> Result<Option<fc::SavedDataset>, Status> {
        let path = self.path(name)?;
        match std::fs::read(&path) {
            Ok(bytes) => fc::SavedDataset::decode(bytes.as_slice())
                .map(Some)
                .map_err(|e| Status::internal(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Status::internal(format!("{}: {e}", path.display()))),
        }
    }

    fn list(&self) -> Result<Vec<fc::SavedDataset>, Status> {
        let entries = match std::fs::read_dir(&self.folder) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Status::internal(format!("{}: {e}", self.folder.display()))),
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                name.strip_suffix(".pb").map(str::to_owned)
            })
            .filter(|n| !n.starts_with('.'))
            .collect();
        names.sort();
        names
            .iter()
            .filter_map(|n| self.get(n).transpose())
            .collect()
    }

    fn delete(&self, name: &str) -> Result<bool, Status> {
        let path = self.path(name)?;
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Status::internal(format!("{}: {e}", path.display()))),
        }
    }
}

/// A saved dataset's name and the feature views its features come from, from its encoded
/// spec.
fn dataset_head(dataset: &fc::SavedDataset) -> (String, Vec<String>) {
    let head = fc::SavedDatasetSpecHead::decode(dataset.spec.as_slice()).unwrap_or_default();
    let mut views: Vec<String> = head
        .features
        .iter()
        .filter_map(|f| f.split_once(':').map(|(view, _)| view.to_owned()))
        .collect();
    views.sort();
    views.dedup();
    (head.name, views)
}

fn validation_reference_not_found(name: &str, project: &str) -> Status {
    feast_error(
        Code::NotFound,
        "ValidationReferenceNotFound",
        format!("Validation reference {name} does not exist in project {project}"),
    )
}

fn dataset_not_found(name: &str, project: &str) -> Status {
    feast_error(
        Code::NotFound,
        "SavedDatasetNotFound",
        format!("Saved dataset {name} does not exist in project {project}"),
    )
}

impl FeastRegistry {
    /// The service over `store`'s registry.
    pub fn new(store: Arc<FeatureStore>) -> Self {
        let root = store.sources().data_root();
        let data_root = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
        let feast = store.repo().join("feast");
        let saved = Arc::new(SavedDatasets {
            folder: feast.join("saved_datasets"),
        });
        let intervals = Arc::new(Intervals {
            path: feast.join("materializations.json"),
            lock: Mutex::new(()),
        });
        Self {
            store,
            data_root,
            pending: Mutex::new(HashMap::new()),
            saved,
            intervals,
        }
    }

    /// The definitions a request on `remote` sees: its pending changes, or the current
    /// version's.
    fn definitions(&self, remote: Option<SocketAddr>) -> (Arc<Snapshot>, Definitions) {
        let snapshot = self.store.snapshot();
        let pending = remote.and_then(|r| {
            let pending = self.pending.lock().ok()?;
            pending.get(&r).map(|p| p.defs.clone())
        });
        let defs = pending.unwrap_or_else(|| snapshot.defs.clone());
        (snapshot, defs)
    }

    /// Applies `change` to the connection's pending definitions (started from the current
    /// version), then commits them if `commit` is set. A change that fails leaves them as
    /// they were.
    async fn change(
        &self,
        caller: &Caller,
        remote: Option<SocketAddr>,
        project: &str,
        commit: bool,
        change: impl FnOnce(&mut Definitions) -> Result<(), Status>,
    ) -> Result<Response<()>, Status> {
        let snapshot = self.store.snapshot();
        check_project(&snapshot.defs, project)?;
        let remote = remote.ok_or_else(|| Status::internal("no connection information"))?;
        {
            let mut pending = self
                .pending
                .lock()
                .map_err(|_| Status::internal("poisoned lock"))?;
            pending.retain(|_, p| p.at.elapsed() < PENDING_TTL);
            let entry = pending.entry(remote).or_insert_with(|| Pending {
                base: snapshot.version,
                defs: snapshot.defs.clone(),
                at: Instant::now(),
            });
            let mut defs = entry.defs.clone();
            change(&mut defs)?;
            entry.defs = defs;
            entry.at = Instant::now();
        }
        if commit {
            self.commit_pending(caller, remote).await?;
        }
        Ok(Response::new(()))
    }

    /// Validates and registers a connection's pending definitions as one new version.
    async fn commit_pending(&self, caller: &Caller, remote: SocketAddr) -> Result<(), Status> {
        let Some(pending) = self
            .pending
            .lock()
            .map_err(|_| Status::internal("poisoned lock"))?
            .remove(&remote)
        else {
            return Ok(());
        };
        let store = Arc::clone(&self.store);
        let caller = caller.clone();
        blocking(move || {
            let file = quiver_registry::definitions_file(&pending.defs);
            let definitions = quiver_registry::validate_files(
                &[("feast apply".into(), file)],
                &pending.defs.project,
                store.sources(),
            )
            .map_err(|e| feast_status(&status(&e)))?;
            store
                .apply(
                    &caller,
                    ApplyRequest {
                        definitions,
                        based_on: BaseVersion::Version(pending.base),
                        author: format!("feast ({})", caller.name()),
                    },
                )
                .map_err(|e| feast_status(&status(&e)))?;
            Ok(())
        })
        .await
    }

    /// Whether `caller` may see object `name` of `kind`.
    fn visible(snapshot: &Snapshot, caller: &Caller, kind: ObjectKind, name: &str) -> bool {
        snapshot
            .authorizer
            .decide(caller, Action::Describe, kind, name)
            .is_some()
    }

    /// The Feast form of every object of a kind the caller may see, for a project.
    fn list<T>(
        &self,
        request: &Request<fr::ListRequest>,
        kind: ObjectKind,
        all: impl Fn(&Definitions, &Path) -> Vec<(String, T)>,
    ) -> Vec<T> {
        let caller = caller_of(request.extensions());
        let (snapshot, defs) = self.definitions(remote_of(request));
        let r = request.get_ref();
        if r.project != defs.project {
            return Vec::new();
        }
        keep(all(&defs, &self.data_root), |name| {
            Self::visible(&snapshot, &caller, kind, name)
        })
    }

    /// One object by name, or Feast's "not found" for it.
    fn get<T>(
        &self,
        request: &Request<fr::GetRequest>,
        kind: ObjectKind,
        one: impl Fn(&Definitions, &Path, &str) -> Option<T>,
    ) -> Result<Response<T>, Status> {
        let caller = caller_of(request.extensions());
        let (snapshot, defs) = self.definitions(remote_of(request));
        let r = request.get_ref();
        let found = (r.project == defs.project && Self::visible(&snapshot, &caller, kind, &r.name))
            .then(|| one(&defs, &self.data_root, &r.name))
            .flatten();
        found
            .map(Response::new)
            .ok_or_else(|| not_found(kind, &r.name, &r.project))
    }
}

fn remote_of<T>(request: &Request<T>) -> Option<SocketAddr> {
    request
        .extensions()
        .get::<ConnectionInfo>()
        .map(|c| c.remote)
}

fn check_project(defs: &Definitions, project: &str) -> Result<(), Status> {
    if project.is_empty() || project == defs.project {
        Ok(())
    } else {
        Err(feast_error(
            Code::FailedPrecondition,
            "FeastError",
            format!(
                "this Quiver server serves project '{}', not '{project}'",
                defs.project
            ),
        ))
    }
}

/// A status whose message is Feast's error detail, so Feast's SDK raises `class`.
fn feast_error(code: Code, class: &str, message: impl Into<String>) -> Status {
    let detail = serde_json::json!({
        "module": "feast.errors",
        "class": class,
        "message": message.into(),
    });
    Status::new(code, detail.to_string())
}

/// A Quiver status with Feast's error detail.
fn feast_status(s: &Status) -> Status {
    feast_error(s.code(), "FeastError", s.message())
}

fn not_found(kind: ObjectKind, name: &str, project: &str) -> Status {
    let (class, what) = match kind {
        ObjectKind::Entity => ("EntityNotFoundException", "Entity"),
        ObjectKind::Source => ("DataSourceObjectNotFoundException", "Data source"),
        ObjectKind::FeatureView => ("FeatureViewNotFoundException", "Feature view"),
        ObjectKind::FeatureService => ("FeatureServiceNotFoundException", "Feature service"),
        ObjectKind::Permission => ("PermissionObjectNotFoundException", "Permission"),
    };
    feast_error(
        Code::NotFound,
        class,
        format!("{what} {name} does not exist in project {project}"),
    )
}

fn refused(what: &str, why: &str) -> Status {
    feast_error(
        Code::Unimplemented,
        "FeastError",
        format!("{what} cannot be applied to Quiver: {why}"),
    )
}

// ---- Quiver definitions as Feast objects ----

fn feast_type(t: ValueType) -> i32 {
    use ScalarType as S;
    let e = match t {
        ValueType::Scalar(s) => match s {
            S::Bool => FeastType::Bool,
            S::Int32 => FeastType::Int32,
            S::Int64 => FeastType::Int64,
            S::Float32 => FeastType::Float,
            S::Float64 => FeastType::Double,
            S::String => FeastType::String,
            S::Bytes => FeastType::Bytes,
            S::Timestamp => FeastType::UnixTimestamp,
        },
        ValueType::List(s) => match s {
            S::Bool => FeastType::BoolList,
            S::Int32 => FeastType::Int32List,
            S::Int64 => FeastType::Int64List,
            S::Float32 => FeastType::FloatList,
            S::Float64 => FeastType::DoubleList,
            S::String => FeastType::StringList,
            S::Bytes => FeastType::BytesList,
            S::Timestamp => FeastType::UnixTimestampList,
        },
    };
    e as i32
}

fn quiver_type(e: i32, what: &str) -> Result<ValueType, Status> {
    use ScalarType as S;
    let t = match FeastType::try_from(e).unwrap_or(FeastType::Invalid) {
        FeastType::Bool => ValueType::Scalar(S::Bool),
        FeastType::Int32 => ValueType::Scalar(S::Int32),
        FeastType::Int64 => ValueType::Scalar(S::Int64),
        FeastType::Float => ValueType::Scalar(S::Float32),
        FeastType::Double => ValueType::Scalar(S::Float64),
        FeastType::String => ValueType::Scalar(S::String),
        FeastType::Bytes => ValueType::Scalar(S::Bytes),
        FeastType::UnixTimestamp => ValueType::Scalar(S::Timestamp),
        FeastType::BoolList => ValueType::List(S::Bool),
        FeastType::Int32List => ValueType::List(S::Int32),
        FeastType::Int64List => ValueType::List(S::Int64),
        FeastType::FloatList => ValueType::List(S::Float32),
        FeastType::DoubleList => ValueType::List(S::Float64),
        FeastType::StringList => ValueType::List(S::String),
        FeastType::BytesList => ValueType::List(S::Bytes),
        FeastType::UnixTimestampList => ValueType::List(S::Timestamp),
        other => {
            return Err(refused(
                what,
                &format!(
                    "its type {} has no Quiver counterpart (declare its dtype)",
                    other.as_str_name()
                ),
            ));
        }
    };
    Ok(t)
}

fn tags(t: &quiver_core::Tags) -> HashMap<String, String> {
    t.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// A Quiver source as Feast's `FileSource` (its path absolute, its times as file columns).
fn data_source(project: &str, root: &Path, s: &Source) -> fc::DataSource {
    use fc::data_source::{FileOptions, Options, SourceType};
    fc::DataSource {
        r#type: SourceType::BatchFile as i32,
        field_mapping: s
            .field_mapping
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        timestamp_field: s.column_for(&s.timestamp_field).to_owned(),
        created_timestamp_column: s
            .created_timestamp_column
            .as_deref()
            .map(|c| s.column_for(c).to_owned())
            .unwrap_or_default(),
        data_source_class_type: "feast.infra.offline_stores.file_source.FileSource".into(),
        name: s.name.clone(),
        project: project.to_owned(),
        description: s.description.clone(),
        tags: tags(&s.tags),
        owner: s.owner.clone(),
        // No file format: Feast's default, Parquet.
        options: Some(Options::FileOptions(FileOptions {
            file_format: None,
            uri: root.join(&s.path).to_string_lossy().into_owned(),
            s3_endpoint_override: String::new(),
        })),
        ..Default::default()
    }
}

/// A Quiver entity as Feast's, if it has one join key (Feast's entities have exactly one).
fn entity(project: &str, e: &Entity) -> Option<fc::Entity> {
    let [key] = e.join_keys.as_slice() else {
        return None;
    };
    Some(fc::Entity {
        spec: Some(fc::EntitySpecV2 {
            name: e.name.clone(),
            value_type: feast_type(key.key_type.value_type()),
            description: e.description.clone(),
            join_key: key.name.clone(),
            tags: tags(&e.tags),
            project: project.to_owned(),
            owner: e.owner.clone(),
        }),
        meta: None,
    })
}

fn feature_spec(f: &Feature) -> fc::FeatureSpecV2 {
    fc::FeatureSpecV2 {
        name: f.name.clone(),
        value_type: feast_type(f.value_type),
        tags: HashMap::new(),
        description: f.description.clone(),
    }
}

fn feature_view(defs: &Definitions, root: &Path, v: &FeatureView) -> fc::FeatureView {
    let ttl = v.ttl.as_duration();
    let entity_columns = defs
        .join_keys(v)
        .unwrap_or_default()
        .into_iter()
        .map(|k| fc::FeatureSpecV2 {
            name: k.name,
            value_type: feast_type(k.key_type.value_type()),
            ..Default::default()
        })
        .collect();
    fc::FeatureView {
        spec: Some(fc::FeatureViewSpec {
            name: v.name.clone(),
            project: defs.project.clone(),
            entities: v.entities.clone(),
            features: v.features.iter().map(feature_spec).collect(),
            tags: tags(&v.tags),
            ttl: Some(ProtoDuration {
                seconds: i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX),
                nanos: i32::try_from(ttl.subsec_nanos()).unwrap_or(0),
            }),
            batch_source: defs
                .sources
                .get(&v.source)
                .map(|s| data_source(&defs.project, root, s)),
            online: v.online,
            stream_source: None,
            description: v.description.clone(),
            owner: v.owner.clone(),
            entity_columns,
            // Feast's `offline` is whether pushed rows also go to the offline store, not
            // Quiver's (whether training sets may read the view): left at Feast's default.
            offline: false,
        }),
        meta: Some(fc::FeatureViewMeta::default()),
    }
}

/// A Quiver feature service as Feast's: one projection per view, in first-reference order,
/// `view:*` expanded, with the batch source fields Feast's own projections carry.
fn feature_service(defs: &Definitions, root: &Path, s: &FeatureService) -> fc::FeatureService {
    let mut projections: Vec<fc::FeatureViewProjection> = Vec::new();
    for r in &s.features {
        let Some(view) = defs.feature_views.get(&r.view) else {
            continue;
        };
        let columns = view
            .features
            .iter()
            .filter(|f| r.feature == "*" || f.name == r.feature)
            .map(feature_spec);
        match projections
            .iter_mut()
            .find(|p| p.feature_view_name == r.view)
        {
            Some(p) => p.feature_columns.extend(columns),
            None => {
                let source = defs.sources.get(&view.source);
                let created = source
                    .and_then(|s| {
                        s.created_timestamp_column
                            .as_deref()
                            .map(|c| s.column_for(c))
                    })
                    .unwrap_or_default()
                    .to_owned();
                projections.push(fc::FeatureViewProjection {
                    feature_view_name: r.view.clone(),
                    feature_columns: columns.collect(),
                    // As Feast fills it: the created column.
                    timestamp_field: created.clone(),
                    created_timestamp_column: created,
                    batch_source: source.map(|s| data_source(&defs.project, root, s)),
                    view_type: "featureView".into(),
                    ..Default::default()
                });
            }
        }
    }
    fc::FeatureService {
        spec: Some(fc::FeatureServiceSpec {
            name: s.name.clone(),
            project: defs.project.clone(),
            features: projections,
            tags: tags(&s.tags),
            description: s.description.clone(),
            owner: s.owner.clone(),
            logging_config: None,
        }),
        meta: None,
    }
}

fn project(defs: &Definitions) -> fc::Project {
    fc::Project {
        spec: Some(fc::ProjectSpec {
            name: defs.project.clone(),
            ..Default::default()
        }),
        meta: Some(fc::ProjectMeta::default()),
    }
}

fn entities(defs: &Definitions) -> Vec<(String, fc::Entity)> {
    defs.entities
        .values()
        .filter_map(|e| Some((e.name.clone(), entity(&defs.project, e)?)))
        .collect()
}

fn sources(defs: &Definitions, root: &Path) -> Vec<(String, fc::DataSource)> {
    defs.sources
        .values()
        .map(|s| (s.name.clone(), data_source(&defs.project, root, s)))
        .collect()
}

fn views(defs: &Definitions, root: &Path) -> Vec<(String, fc::FeatureView)> {
    defs.feature_views
        .values()
        .map(|v| (v.name.clone(), feature_view(defs, root, v)))
        .collect()
}

fn services(defs: &Definitions, root: &Path) -> Vec<(String, fc::FeatureService)> {
    defs.feature_services
        .values()
        .map(|s| (s.name.clone(), feature_service(defs, root, s)))
        .collect()
}

// ---- Feast objects as Quiver definitions ----

/// Adds or replaces an entity.
fn apply_entity(defs: &mut Definitions, e: fc::Entity) -> Result<(), Status> {
    let spec = e
        .spec
        .ok_or_else(|| Status::invalid_argument("entity without a spec"))?;
    let what = format!("entity '{}'", spec.name);
    if spec.name == DUMMY_ENTITY {
        // Feast's bookkeeping for views without entities, applied with every `feast apply`;
        // such views are refused, so there is nothing to keep.
        return Ok(());
    }
    let key_type = match FeastType::try_from(spec.value_type).unwrap_or(FeastType::Invalid) {
        FeastType::Int32 => KeyType::Int32,
        FeastType::Int64 => KeyType::Int64,
        FeastType::String => KeyType::String,
        FeastType::Bytes => KeyType::Bytes,
        other => {
            return Err(refused(
                &what,
                &format!(
                    "its value type {} is not a key type (int32, int64, string or bytes; declare value_type)",
                    other.as_str_name()
                ),
            ));
        }
    };
    let join_key = if spec.join_key.is_empty() {
        spec.name.clone()
    } else {
        spec.join_key
    };
    defs.entities.insert(
        spec.name.clone(),
        Entity {
            name: spec.name,
            join_keys: vec![JoinKey {
                name: join_key,
                key_type,
            }],
            description: spec.description,
            owner: spec.owner,
            tags: spec.tags.into_iter().collect(),
        },
    );
    Ok(())
}

/// Adds or replaces a file source; returns its name.
fn apply_source(defs: &mut Definitions, root: &Path, s: fc::DataSource) -> Result<String, Status> {
    use fc::data_source::{Options, SourceType};
    let what = format!("data source '{}'", s.name);
    if s.name.is_empty() {
        return Err(refused(
            "a data source without a name",
            "Quiver's sources are named",
        ));
    }
    let kind = SourceType::try_from(s.r#type).unwrap_or(SourceType::Invalid);
    let file = match (kind, s.options) {
        (SourceType::BatchFile | SourceType::Invalid, Some(Options::FileOptions(f))) => f,
        (SourceType::PushSource, _) => {
            return Err(refused(
                &what,
                "push sources have no Quiver counterpart (pushes name the batch source or a feature view)",
            ));
        }
        (SourceType::RequestSource, _) => {
            return Err(refused(
                &what,
                "request sources feed on-demand feature views, which Quiver does not have",
            ));
        }
        (other, _) => {
            return Err(refused(
                &what,
                &format!(
                    "it is a {} source; Quiver reads Parquet file sources",
                    other.as_str_name()
                ),
            ));
        }
    };
    if matches!(
        file.file_format.and_then(|f| f.format),
        Some(fc::file_format::Format::DeltaFormat(_))
    ) {
        return Err(refused(&what, "it is a Delta table; Quiver reads Parquet"));
    }
    let uri = file.uri.strip_prefix("file://").unwrap_or(&file.uri);
    let path = match Path::new(uri).strip_prefix(root) {
        Ok(relative) => relative.to_string_lossy().into_owned(),
        Err(_) if Path::new(uri).is_absolute() => {
            return Err(refused(
                &what,
                &format!("'{uri}' is not under Quiver's data root {}", root.display()),
            ));
        }
        Err(_) => uri.to_owned(),
    };
    if s.timestamp_field.is_empty() {
        return Err(refused(&what, "it has no timestamp_field"));
    }
    let mapped = |c: &str| {
        s.field_mapping
            .get(c)
            .cloned()
            .unwrap_or_else(|| c.to_owned())
    };
    let source = Source {
        name: s.name.clone(),
        path,
        timestamp_field: mapped(&s.timestamp_field),
        created_timestamp_column: (!s.created_timestamp_column.is_empty())
            .then(|| mapped(&s.created_timestamp_column)),
        field_mapping: s.field_mapping.into_iter().collect(),
        description: s.description,
        owner: s.owner,
        tags: s.tags.into_iter().collect(),
    };
    defs.sources.insert(s.name.clone(), source);
    Ok(s.name)
}

/// Adds or replaces a feature view and its batch source; a view Quiver already has keeps its
/// materialization schedule and `offline` flag (Feast has neither).
fn apply_view(defs: &mut Definitions, root: &Path, v: fc::FeatureView) -> Result<(), Status> {
    let spec = v
        .spec
        .ok_or_else(|| Status::invalid_argument("feature view without a spec"))?;
    let what = format!("feature view '{}'", spec.name);
    if spec.stream_source.is_some() {
        return Err(refused(
            &what,
            "it has a stream (or push) source; Quiver's views read batch sources",
        ));
    }
    let batch = spec
        .batch_source
        .ok_or_else(|| refused(&what, "it has no batch source"))?;
    if spec.entities.is_empty() || spec.entities.iter().any(|e| e == DUMMY_ENTITY) {
        return Err(refused(
            &what,
            "it has no entities; Quiver's views are keyed by at least one",
        ));
    }
    let source = apply_source(defs, root, batch)?;
    let features = spec
        .features
        .iter()
        .map(|f| {
            Ok(Feature {
                name: f.name.clone(),
                value_type: quiver_type(f.value_type, &format!("{what}, feature '{}'", f.name))?,
                description: f.description.clone(),
            })
        })
        .collect::<Result<Vec<_>, Status>>()?;
    let ttl = spec.ttl.map_or(Duration::ZERO, |d| {
        Duration::new(
            u64::try_from(d.seconds).unwrap_or(0),
            u32::try_from(d.nanos).unwrap_or(0),
        )
    });
    let existing = defs.feature_views.get(&spec.name);
    let view = FeatureView {
        name: spec.name.clone(),
        entities: spec.entities,
        source,
        features,
        ttl: Ttl::new(ttl),
        online: spec.online,
        offline: existing.is_none_or(|v| v.offline),
        description: spec.description,
        owner: spec.owner,
        tags: spec.tags.into_iter().collect(),
        materialization: existing.and_then(|v| v.materialization),
        freshness: existing.and_then(|v| v.freshness),
        monitoring: existing.and_then(|v| v.monitoring.clone()),
    };
    defs.feature_views.insert(spec.name, view);
    Ok(())
}

/// Adds or replaces a feature service: each projection's columns (all of the view's when it
/// lists none) as feature references.
fn apply_service(defs: &mut Definitions, s: fc::FeatureService) -> Result<(), Status> {
    let spec = s
        .spec
        .ok_or_else(|| Status::invalid_argument("feature service without a spec"))?;
    let what = format!("feature service '{}'", spec.name);
    let mut features = Vec::new();
    for p in spec.features {
        if !p.feature_view_name_alias.is_empty() || !p.join_key_map.is_empty() {
            return Err(refused(
                &what,
                &format!(
                    "its projection of '{}' renames the view or its join keys, which Quiver does not",
                    p.feature_view_name
                ),
            ));
        }
        if p.feature_columns.is_empty() {
            features.push(FeatureRef {
                view: p.feature_view_name.clone(),
                feature: "*".into(),
            });
        }
        features.extend(p.feature_columns.into_iter().map(|f| FeatureRef {
            view: p.feature_view_name.clone(),
            feature: f.name,
        }));
    }
    defs.feature_services.insert(
        spec.name.clone(),
        FeatureService {
            logging: defs
                .feature_services
                .get(&spec.name)
                .and_then(|s| s.logging.clone()),
            name: spec.name,
            features,
            description: spec.description,
            owner: spec.owner,
            tags: spec.tags.into_iter().collect(),
        },
    );
    Ok(())
}

/// Removes an object, or Feast's "not found" for it.
fn delete(
    defs: &mut Definitions,
    kind: ObjectKind,
    name: &str,
    project: &str,
) -> Result<(), Status> {
    let removed = match kind {
        ObjectKind::Entity if name == DUMMY_ENTITY => true,
        ObjectKind::Entity => defs.entities.remove(name).is_some(),
        ObjectKind::Source => defs.sources.remove(name).is_some(),
        ObjectKind::FeatureView => defs.feature_views.remove(name).is_some(),
        ObjectKind::FeatureService => defs.feature_services.remove(name).is_some(),
        ObjectKind::Permission => defs.permissions.remove(name).is_some(),
    };
    if removed {
        Ok(())
    } else {
        Err(not_found(kind, name, project))
    }
}

type Reply<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl RegistryServer for FeastRegistry {
    async fn apply_entity(&self, request: Request<fr::ApplyEntityRequest>) -> Reply<()> {
        let (caller, remote) = (caller_of(request.extensions()), remote_of(&request));
        let r = request.into_inner();
        let entity = r
            .entity
            .ok_or_else(|| Status::invalid_argument("no entity"))?;
        self.change(&caller, remote, &r.project, r.commit, |d| {
            apply_entity(d, entity)
        })
        .await
    }

    async fn get_entity(&self, request: Request<fr::GetRequest>) -> Reply<fc::Entity> {
        self.get(&request, ObjectKind::Entity, |d, _, name| {
            entity(&d.project, d.entities.get(name)?)
        })
    }

    async fn list_entities(
        &self,
        request: Request<fr::ListRequest>,
    ) -> Reply<fr::ListEntitiesResponse> {
        let entities = self.list(&request, ObjectKind::Entity, |d, _| entities(d));
        Ok(Response::new(fr::ListEntitiesResponse { entities }))
    }

    async fn delete_entity(&self, request: Request<fr::DeleteRequest>) -> Reply<()> {
        self.delete(request, ObjectKind::Entity).await
    }

    async fn apply_data_source(&self, request: Request<fr::ApplyDataSourceRequest>) -> Reply<()> {
        let (caller, remote) = (caller_of(request.extensions()), remote_of(&request));
        let r = request.into_inner();
        let source = r
            .data_source
            .ok_or_else(|| Status::invalid_argument("no data source"))?;
        let root = self.data_root.clone();
        self.change(&caller, remote, &r.project, r.commit, |d| {
            apply_source(d, &root, source).map(|_| ())
        })
        .await
    }

    async fn get_data_source(&self, request: Request<fr::GetRequest>) -> Reply<fc::DataSource> {
        self.get(&request, ObjectKind::Source, |d, root, name| {
            Some(data_source(&d.project, root, d.sources.get(name)?))
        })
    }

    async fn list_data_sources(
        &self,
        request: Request<fr::ListRequest>,
    ) -> Reply<fr::ListDataSourcesResponse> {
        let data_sources = self.list(&request, ObjectKind::Source, sources);
        Ok(Response::new(fr::ListDataSourcesResponse { data_sources }))
    }

    async fn delete_data_source(&self, request: Request<fr::DeleteRequest>) -> Reply<()> {
        self.delete(request, ObjectKind::Source).await
    }

    async fn apply_feature_view(&self, request: Request<fr::ApplyFeatureViewRequest>) -> Reply<()> {
        use fr::apply_feature_view_request::BaseFeatureView as Base;
        let (caller, remote) = (caller_of(request.extensions()), remote_of(&request));
        let r = request.into_inner();
        let name = |spec: Option<fc::NamedSpec>| spec.map(|s| s.name).unwrap_or_default();
        let view = match r.base_feature_view {
            Some(Base::FeatureView(v)) => v,
            Some(Base::OnDemandFeatureView(v)) => {
                return Err(refused(
                    &format!("on-demand feature view '{}'", name(v.spec)),
                    "Quiver runs no transformations at read time",
                ));
            }
            Some(Base::StreamFeatureView(v)) => {
                return Err(refused(
                    &format!("stream feature view '{}'", name(v.spec)),
                    "Quiver's views read batch sources (push rows to a view instead)",
                ));
            }
            Some(Base::LabelView(v)) => {
                return Err(refused(
                    &format!("label view '{}'", name(v.spec)),
                    "Quiver has no label views (keep labels in the entity table)",
                ));
            }
            None => return Err(Status::invalid_argument("no feature view")),
        };
        let root = self.data_root.clone();
        self.change(&caller, remote, &r.project, r.commit, |d| {
            apply_view(d, &root, view)
        })
        .await
    }

    async fn delete_feature_view(&self, request: Request<fr::DeleteRequest>) -> Reply<()> {
        self.delete(request, ObjectKind::FeatureView).await
    }

    async fn get_any_feature_view(
        &self,
        request: Request<fr::GetRequest>,
    ) -> Reply<fr::GetAnyFeatureViewResponse> {
        let view = self.get_feature_view(request).await?;
        Ok(Response::new(fr::GetAnyFeatureViewResponse {
            any_feature_view: Some(any(view.into_inner())),
        }))
    }

    async fn list_all_feature_views(
        &self,
        request: Request<fr::ListRequest>,
    ) -> Reply<fr::ListAllFeatureViewsResponse> {
        let views = self.list_feature_views(request).await?.into_inner();
        Ok(Response::new(fr::ListAllFeatureViewsResponse {
            feature_views: views.feature_views.into_iter().map(any).collect(),
        }))
    }

    async fn get_feature_view(&self, request: Request<fr::GetRequest>) -> Reply<fc::FeatureView> {
        let intervals = self.load_intervals().await?;
        self.get(&request, ObjectKind::FeatureView, |d, root, name| {
            let view = feature_view(d, root, d.feature_views.get(name)?);
            Some(with_intervals(view, &intervals))
        })
    }

    async fn list_feature_views(
        &self,
        request: Request<fr::ListRequest>,
    ) -> Reply<fr::ListFeatureViewsResponse> {
        let intervals = self.load_intervals().await?;
        let feature_views = self.list(&request, ObjectKind::FeatureView, |d, root| {
            views(d, root)
                .into_iter()
                .map(|(name, v)| (name, with_intervals(v, &intervals)))
                .collect()
        });
        Ok(Response::new(fr::ListFeatureViewsResponse {
            feature_views,
        }))
    }

    async fn get_stream_feature_view(
        &self,
        request: Request<fr::GetRequest>,
    ) -> Reply<fc::StreamFeatureView> {
        let r = request.into_inner();
        Err(absent("StreamFeatureView", &r.name, &r.project))
    }

    async fn list_stream_feature_views(
        &self,
        _request: Request<fr::ListRequest>,
    ) -> Reply<fr::ListStreamFeatureViewsResponse> {
        Ok(Response::new(fr::ListStreamFeatureViewsResponse::default()))
    }

    async fn get_on_demand_feature_view(
        &self,
        request: Request<fr::GetRequest>,
    ) -> Reply<fc::OnDemandFeatureView> {
        let r = request.into_inner();
        Err(absent("OnDemandFeatureView", &r.name, &r.project))
    }

    async fn list_on_demand_feature_views(
        &self,
        _request: Request<fr::ListRequest>,
    ) -> Reply<fr::ListOnDemandFeatureViewsResponse> {
        Ok(Response::new(
            fr::ListOnDemandFeatureViewsResponse::default(),
        ))
    }

    async fn get_label_view(&self, request: Request<fr::GetRequest>) -> Reply<fc::LabelView> {
        let r = request.into_inner();
        Err(absent("LabelView", &r.name, &r.project))
    }

    async fn list_label_views(
        &self,
        _request: Request<fr::ListRequest>,
    ) -> Reply<fr::ListLabelViewsResponse> {
        Ok(Response::new(fr::ListLabelViewsResponse::default()))
    }

    async fn apply_feature_service(
        &self,
        request: Request<fr::ApplyFeatureServiceRequest>,
    ) -> Reply<()> {
        let (caller, remote) = (caller_of(request.extensions()), remote_of(&request));
        let r = request.into_inner();
        let service = r
            .feature_service
            .ok_or_else(|| Status::invalid_argument("no feature service"))?;
        self.change(&caller, remote, &r.project, r.commit, |d| {
            apply_service(d, service)
        })
        .await
    }

    async fn get_feature_service(
        &self,
        request: Request<fr::GetRequest>,
    ) -> Reply<fc::FeatureService> {
        self.get(&request, ObjectKind::FeatureService, |d, root, name| {
            Some(feature_service(d, root, d.feature_services.get(name)?))
        })
    }

    async fn list_feature_services(
        &self,
        request: Request<fr::ListRequest>,
    ) -> Reply<fr::ListFeatureServicesResponse> {
        let feature_services = self.list(&request, ObjectKind::FeatureService, services);
        Ok(Response::new(fr::ListFeatureServicesResponse {
            feature_services,
        }))
    }

    async fn delete_feature_service(&self, request: Request<fr::DeleteRequest>) -> Reply<()> {
        self.delete(request, ObjectKind::FeatureService).await
    }

    async fn apply_saved_dataset(
        &self,
        request: Request<fr::ApplySavedDatasetRequest>,
    ) -> Reply<()> {
        let caller = caller_of(request.extensions());
        let r = request.into_inner();
        check_project(&self.store.snapshot().defs, &r.project)?;
        let dataset = r
            .saved_dataset
            .ok_or_else(|| Status::invalid_argument("no saved dataset"))?;
        let (name, views) = dataset_head(&dataset);
        self.may_write_dataset(&caller, &views)?;
        let saved = Arc::clone(&self.saved);
        blocking(move || saved.put(&name, &dataset)).await?;
        Ok(Response::new(()))
    }

    async fn get_saved_dataset(&self, request: Request<fr::GetRequest>) -> Reply<fc::SavedDataset> {
        let caller = caller_of(request.extensions());
        let r = request.into_inner();
        let saved = Arc::clone(&self.saved);
        let name = r.name.clone();
        let found = blocking(move || saved.get(&name)).await?;
        found
            .filter(|d| {
                r.project == self.store.snapshot().defs.project && self.may_see_dataset(&caller, d)
            })
            .map(Response::new)
            .ok_or_else(|| dataset_not_found(&r.name, &r.project))
    }

    async fn list_saved_datasets(
        &self,
        request: Request<fr::ListRequest>,
    ) -> Reply<fr::ListSavedDatasetsResponse> {
        let caller = caller_of(request.extensions());
        if request.get_ref().project != self.store.snapshot().defs.project {
            return Ok(Response::new(fr::ListSavedDatasetsResponse::default()));
        }
        let saved = Arc::clone(&self.saved);
        let mut saved_datasets = blocking(move || saved.list()).await?;
        saved_datasets.retain(|d| self.may_see_dataset(&caller, d));
        Ok(Response::new(fr::ListSavedDatasetsResponse {
            saved_datasets,
        }))
    }

    async fn delete_saved_dataset(&self, request: Request<fr::DeleteRequest>) -> Reply<()> {
        let caller = caller_of(request.extensions());
        let r = request.into_inner();
        let saved = Arc::clone(&self.saved);
        let name = r.name.clone();
        let found = blocking(move || saved.get(&name)).await?;
        let Some(dataset) = found else {
            return Err(dataset_not_found(&r.name, &r.project));
        };
        self.may_write_dataset(&caller, &dataset_head(&dataset).1)?;
        let saved = Arc::clone(&self.saved);
        blocking(move || saved.delete(&r.name)).await?;
        Ok(Response::new(()))
    }

    async fn apply_permission(&self, request: Request<fr::ApplyPermissionRequest>) -> Reply<()> {
        let name = request
            .into_inner()
            .permission
            .and_then(|p| p.spec)
            .map(|s| s.name)
            .unwrap_or_default();
        Err(refused(
            &format!("permission '{name}'"),
            "Quiver's permissions are declared in its definitions (`permissions:`), where they are validated and versioned",
        ))
    }

    async fn get_permission(&self, request: Request<fr::GetRequest>) -> Reply<fc::Permission> {
        let r = request.into_inner();
        Err(not_found(ObjectKind::Permission, &r.name, &r.project))
    }

    async fn list_permissions(
        &self,
        _request: Request<fr::ListRequest>,
    ) -> Reply<fr::ListPermissionsResponse> {
        // Quiver's permissions are its own; Feast neither sees nor deletes them.
        Ok(Response::new(fr::ListPermissionsResponse::default()))
    }

    async fn delete_permission(&self, request: Request<fr::DeleteRequest>) -> Reply<()> {
        let r = request.into_inner();
        Err(not_found(ObjectKind::Permission, &r.name, &r.project))
    }

    async fn apply_project(&self, request: Request<fr::ApplyProjectRequest>) -> Reply<()> {
        let name = request
            .into_inner()
            .project
            .and_then(|p| p.spec)
            .map(|s| s.name)
            .unwrap_or_default();
        check_project(&self.store.snapshot().defs, &name)?;
        Ok(Response::new(()))
    }

    async fn get_project(&self, request: Request<fr::GetProjectRequest>) -> Reply<fc::Project> {
        let defs = &self.store.snapshot().defs;
        let name = request.into_inner().name;
        if name == defs.project {
            Ok(Response::new(project(defs)))
        } else {
            Err(feast_error(
                Code::NotFound,
                "ProjectObjectNotFoundException",
                format!("Project {name} does not exist"),
            ))
        }
    }

    async fn list_projects(
        &self,
        _request: Request<fr::ListProjectsRequest>,
    ) -> Reply<fr::ListProjectsResponse> {
        Ok(Response::new(fr::ListProjectsResponse {
            projects: vec![project(&self.store.snapshot().defs)],
        }))
    }

    async fn delete_project(&self, request: Request<fr::DeleteProjectRequest>) -> Reply<()> {
        let (caller, remote) = (caller_of(request.extensions()), remote_of(&request));
        let r = request.into_inner();
        // Every definition goes (Quiver's own permissions stay): what `feast teardown` asks.
        self.change(&caller, remote, &r.name, r.commit, |d| {
            *d = Definitions {
                project: d.project.clone(),
                permissions: std::mem::take(&mut d.permissions),
                ..Definitions::default()
            };
            Ok(())
        })
        .await
    }

    async fn apply_materialization(
        &self,
        request: Request<fr::ApplyMaterializationRequest>,
    ) -> Reply<()> {
        let caller = caller_of(request.extensions());
        let r = request.into_inner();
        let snapshot = self.store.snapshot();
        check_project(&snapshot.defs, &r.project)?;
        let name = r
            .feature_view
            .and_then(|v| v.spec)
            .map(|s| s.name)
            .unwrap_or_default();
        if !snapshot.defs.feature_views.contains_key(&name) {
            return Err(not_found(ObjectKind::FeatureView, &name, &r.project));
        }
        // Feast materialized into its own online store: a write of the view's online rows.
        self.store
            .authorize(
                &snapshot,
                &caller,
                Action::WriteOnline,
                &[(ObjectKind::FeatureView, &name)],
            )
            .map_err(|e| feast_status(&status(&e)))?;
        let interval = (
            nanos_of(r.start_date.as_ref()),
            nanos_of(r.end_date.as_ref()),
        );
        let intervals = Arc::clone(&self.intervals);
        blocking(move || intervals.add(&name, interval)).await?;
        Ok(Response::new(()))
    }

    async fn list_project_metadata(
        &self,
        _request: Request<fr::ListProjectMetadataRequest>,
    ) -> Reply<fr::ListProjectMetadataResponse> {
        let project = self.store.snapshot().defs.project.clone();
        Ok(Response::new(fr::ListProjectMetadataResponse {
            project_metadata: vec![fc::ProjectMetadata {
                project_uuid: format!("quiver:{project}"),
                project,
            }],
        }))
    }

    async fn update_infra(&self, _request: Request<fr::UpdateInfraRequest>) -> Reply<()> {
        // Infrastructure is the online store's, which Quiver manages itself.
        Ok(Response::new(()))
    }

    async fn get_infra(&self, _request: Request<fr::GetInfraRequest>) -> Reply<fc::Infra> {
        Ok(Response::new(fc::Infra {}))
    }

    async fn list_features(
        &self,
        request: Request<fr::ListFeaturesRequest>,
    ) -> Reply<fr::ListFeaturesResponse> {
        let caller = caller_of(request.extensions());
        let (snapshot, defs) = self.definitions(remote_of(&request));
        let r = request.into_inner();
        let features = if r.project == defs.project {
            features(&defs)
                .filter(|f| r.feature_view.is_empty() || f.feature_view == r.feature_view)
                .filter(|f| r.name.is_empty() || f.name == r.name)
                .filter(|f| {
                    Self::visible(&snapshot, &caller, ObjectKind::FeatureView, &f.feature_view)
                })
                .collect()
        } else {
            Vec::new()
        };
        Ok(Response::new(fr::ListFeaturesResponse { features }))
    }

    async fn get_feature(&self, request: Request<fr::GetFeatureRequest>) -> Reply<fr::Feature> {
        let caller = caller_of(request.extensions());
        let (snapshot, defs) = self.definitions(remote_of(&request));
        let r = request.into_inner();
        let visible = Self::visible(&snapshot, &caller, ObjectKind::FeatureView, &r.feature_view);
        features(&defs)
            .find(|f| visible && f.feature_view == r.feature_view && f.name == r.name)
            .filter(|_| r.project == defs.project)
            .map(Response::new)
            .ok_or_else(|| {
                feast_error(
                    Code::NotFound,
                    "FeastObjectNotFoundException",
                    format!(
                        "Feature {} does not exist in feature view {} of project {}",
                        r.name, r.feature_view, r.project
                    ),
                )
            })
    }

    async fn apply_validation_reference(&self, _request: Request<fr::Ignored>) -> Reply<()> {
        Err(refused(
            "a validation reference",
            "Quiver keeps no validation references (data-quality checks are not part of its registry)",
        ))
    }

    async fn get_validation_reference(
        &self,
        request: Request<fr::GetRequest>,
    ) -> Reply<fc::ValidationReference> {
        let r = request.into_inner();
        Err(validation_reference_not_found(&r.name, &r.project))
    }

    async fn list_validation_references(
        &self,
        _request: Request<fr::ListRequest>,
    ) -> Reply<fr::ListValidationReferencesResponse> {
        Ok(Response::new(
            fr::ListValidationReferencesResponse::default(),
        ))
    }

    async fn delete_validation_reference(&self, request: Request<fr::DeleteRequest>) -> Reply<()> {
        let r = request.into_inner();
        Err(validation_reference_not_found(&r.name, &r.project))
    }

    async fn create_dataset_from_retrieval(&self, _request: Request<fr::Ignored>) -> Reply<()> {
        Err(unsupported(
            "CreateDatasetFromRetrieval",
            "create the dataset with the SDK's create_saved_dataset",
        ))
    }

    async fn get_dataset_data(&self, _request: Request<fr::Ignored>) -> Reply<()> {
        Err(unsupported(
            "GetDatasetData",
            "read the saved dataset with the SDK (get_saved_dataset(...).to_df())",
        ))
    }

    async fn get_dataset_job_status(&self, _request: Request<fr::Ignored>) -> Reply<()> {
        Err(unsupported(
            "GetDatasetJobStatus",
            "Quiver runs no dataset jobs",
        ))
    }

    async fn list_dataset_jobs(&self, _request: Request<fr::Ignored>) -> Reply<()> {
        Err(unsupported(
            "ListDatasetJobs",
            "Quiver runs no dataset jobs",
        ))
    }

    async fn get_registry_lineage(&self, _request: Request<fr::Ignored>) -> Reply<()> {
        Err(unsupported(
            "GetRegistryLineage",
            "`quiver list` and `quiver registry show` describe how objects refer to each other",
        ))
    }

    async fn get_object_relationships(&self, _request: Request<fr::Ignored>) -> Reply<()> {
        Err(unsupported(
            "GetObjectRelationships",
            "`quiver list` and `quiver registry show` describe how objects refer to each other",
        ))
    }

    async fn commit(&self, request: Request<()>) -> Reply<()> {
        let caller = caller_of(request.extensions());
        if let Some(remote) = remote_of(&request) {
            self.commit_pending(&caller, remote).await?;
        }
        Ok(Response::new(()))
    }

    async fn refresh(&self, _request: Request<fr::RefreshRequest>) -> Reply<()> {
        let store = Arc::clone(&self.store);
        blocking(move || {
            store
                .refresh()
                .map(|_| ())
                .map_err(|e| feast_status(&status(&e)))
        })
        .await?;
        Ok(Response::new(()))
    }

    async fn proto(&self, request: Request<()>) -> Reply<fc::Registry> {
        let caller = caller_of(request.extensions());
        let (snapshot, defs) = self.definitions(remote_of(&request));
        let saved = Arc::clone(&self.saved);
        let mut saved_datasets = blocking(move || saved.list()).await?;
        saved_datasets.retain(|d| self.may_see_dataset(&caller, d));
        let intervals = self.load_intervals().await?;
        let root = &self.data_root;
        let (snapshot, caller) = (&snapshot, &caller);
        let only = |kind: ObjectKind| move |name: &str| Self::visible(snapshot, caller, kind, name);
        Ok(Response::new(fc::Registry {
            entities: keep(entities(&defs), only(ObjectKind::Entity)),
            data_sources: keep(sources(&defs, root), only(ObjectKind::Source)),
            feature_views: keep(views(&defs, root), only(ObjectKind::FeatureView))
                .into_iter()
                .map(|v| with_intervals(v, &intervals))
                .collect(),
            feature_services: keep(services(&defs, root), only(ObjectKind::FeatureService)),
            saved_datasets,
            projects: vec![project(&defs)],
            project_metadata: vec![fc::ProjectMetadata {
                project: defs.project.clone(),
                project_uuid: format!("quiver:{}", defs.project),
            }],
            infra: Some(fc::Infra {}),
            registry_schema_version: "1".into(),
            version_id: snapshot.version.to_string(),
            last_updated: Some(Timestamp::default()),
            ..Default::default()
        }))
    }
}

impl FeastRegistry {
    /// Registering or deleting a saved dataset takes `write_offline` on every view its
    /// features come from (who may write training data of them).
    fn may_write_dataset(&self, caller: &Caller, views: &[String]) -> Result<(), Status> {
        let objects: Vec<(ObjectKind, &str)> = views
            .iter()
            .map(|v| (ObjectKind::FeatureView, v.as_str()))
            .collect();
        self.store
            .authorize(
                &self.store.snapshot(),
                caller,
                Action::WriteOffline,
                &objects,
            )
            .map_err(|e| feast_status(&status(&e)))
    }

    /// A saved dataset is visible to who may see every view its features come from.
    fn may_see_dataset(&self, caller: &Caller, dataset: &fc::SavedDataset) -> bool {
        let snapshot = self.store.snapshot();
        dataset_head(dataset)
            .1
            .iter()
            .all(|v| Self::visible(&snapshot, caller, ObjectKind::FeatureView, v))
    }

    async fn load_intervals(&self) -> Result<IntervalsByView, Status> {
        let intervals = Arc::clone(&self.intervals);
        blocking(move || intervals.load()).await
    }

    /// A `Delete<Object>` request.
    async fn delete(&self, request: Request<fr::DeleteRequest>, kind: ObjectKind) -> Reply<()> {
        let (caller, remote) = (caller_of(request.extensions()), remote_of(&request));
        let r = request.into_inner();
        let project = r.project.clone();
        self.change(&caller, remote, &r.project, r.commit, |d| {
            delete(d, kind, &r.name, &project)
        })
        .await
    }
}

/// The objects whose names `visible` accepts.
fn keep<T>(objects: Vec<(String, T)>, visible: impl Fn(&str) -> bool) -> Vec<T> {
    objects
        .into_iter()
        .filter(|(name, _)| visible(name))
        .map(|(_, object)| object)
        .collect()
}

fn any(view: fc::FeatureView) -> fr::AnyFeatureView {
    fr::AnyFeatureView {
        any_feature_view: Some(fr::any_feature_view::AnyFeatureView::FeatureView(view)),
    }
}

/// A registry call Quiver does not answer, and what to do instead.
fn unsupported(call: &str, instead: &str) -> Status {
    feast_error(
        Code::Unimplemented,
        "FeastError",
        format!("{call} is not supported by Quiver's registry: {instead}"),
    )
}

/// Feast's name of a type (`str(dtype)` in its SDK).
fn feast_dtype(t: ValueType) -> String {
    let scalar = |s: ScalarType| match s {
        ScalarType::Bool => "Bool",
        ScalarType::Int32 => "Int32",
        ScalarType::Int64 => "Int64",
        ScalarType::Float32 => "Float32",
        ScalarType::Float64 => "Float64",
        ScalarType::String => "String",
        ScalarType::Bytes => "Bytes",
        ScalarType::Timestamp => "UnixTimestamp",
    };
    match t {
        ValueType::Scalar(s) => scalar(s).to_owned(),
        ValueType::List(s) => format!("Array({})", scalar(s)),
    }
}

/// Every feature of every view, as Feast's registry lists them.
fn features(defs: &Definitions) -> impl Iterator<Item = fr::Feature> + '_ {
    defs.feature_views.values().flat_map(|v| {
        v.features.iter().map(|f| fr::Feature {
            name: f.name.clone(),
            feature_view: v.name.clone(),
            r#type: feast_dtype(f.value_type),
            description: f.description.clone(),
            owner: v.owner.clone(),
            tags: HashMap::new(),
            kind: "feature".into(),
        })
    })
}

/// Feast's "not found" for a kind of object Quiver does not have.
fn absent(kind: &str, name: &str, project: &str) -> Status {
    feast_error(
        Code::NotFound,
        "FeastObjectNotFoundException",
        format!("{kind} {name} does not exist in project {project} (Quiver has none)"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn definitions() -> Definitions {
        let mut d = Definitions {
            project: "demo".into(),
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
                description: "A driver.".into(),
                owner: "ml@example.com".into(),
                tags: [("team".to_owned(), "a".to_owned())].into(),
            },
        );
        d.sources.insert(
            "stats".into(),
            Source {
                name: "stats".into(),
                path: "data/stats.parquet".into(),
                timestamp_field: "event_timestamp".into(),
                created_timestamp_column: Some("created".into()),
                field_mapping: [("trips".to_owned(), "avg_trips".to_owned())].into(),
                description: String::new(),
                owner: String::new(),
                tags: Default::default(),
            },
        );
        d.feature_views.insert(
            "stats".into(),
            FeatureView {
                name: "stats".into(),
                entities: vec!["driver".into()],
                source: "stats".into(),
                features: vec![
                    Feature {
                        name: "avg_trips".into(),
                        value_type: ValueType::Scalar(ScalarType::Int64),
                        description: "Trips.".into(),
                    },
                    Feature {
                        name: "ratings".into(),
                        value_type: ValueType::List(ScalarType::Float32),
                        description: String::new(),
                    },
                ],
                ttl: Ttl::new(Duration::from_secs(86_400)),
                online: true,
                offline: true,
                description: "Hourly.".into(),
                owner: String::new(),
                tags: Default::default(),
                materialization: None,
                freshness: None,
                monitoring: None,
            },
        );
        d.feature_services.insert(
            "model".into(),
            FeatureService {
                name: "model".into(),
                features: vec![
                    FeatureRef {
                        view: "stats".into(),
                        feature: "avg_trips".into(),
                    },
                    FeatureRef {
                        view: "stats".into(),
                        feature: "ratings".into(),
                    },
                ],
                description: String::new(),
                owner: String::new(),
                tags: Default::default(),
                logging: None,
            },
        );
        d
    }

    #[test]
    fn definitions_survive_the_trip_through_feast_objects() {
        let root = Path::new("/srv/repo");
        let defs = definitions();
        let mut back = Definitions {
            project: "demo".into(),
            ..Default::default()
        };
        for (_, e) in entities(&defs) {
            apply_entity(&mut back, e).unwrap();
        }
        for (_, v) in views(&defs, root) {
            let spec = v.spec.as_ref().unwrap();
            assert_eq!(spec.entity_columns[0].name, "driver_id");
            let source = spec.batch_source.as_ref().unwrap();
            assert_eq!(source.timestamp_field, "event_timestamp");
            apply_view(&mut back, root, v).unwrap();
        }
        for (_, s) in services(&defs, root) {
            apply_service(&mut back, s).unwrap();
        }
        assert_eq!(back, defs);
    }

    #[test]
    fn what_quiver_cannot_represent_is_refused_by_name() {
        let root = Path::new("/srv/repo");
        let mut defs = definitions();
        let outside = fc::DataSource {
            name: "elsewhere".into(),
            timestamp_field: "ts".into(),
            options: Some(fc::data_source::Options::FileOptions(
                fc::data_source::FileOptions {
                    uri: "/etc/data.parquet".into(),
                    ..Default::default()
                },
            )),
            ..Default::default()
        };
        let e = apply_source(&mut defs, root, outside).unwrap_err();
        assert!(e.message().contains("data source 'elsewhere'"), "{e:?}");
        assert!(
            e.message().contains("not under Quiver's data root"),
            "{e:?}"
        );
        assert!(e.message().contains("\"class\":\"FeastError\""), "{e:?}");
        let push = fc::DataSource {
            name: "pushed".into(),
            r#type: fc::data_source::SourceType::PushSource as i32,
            ..Default::default()
        };
        let e = apply_source(&mut defs, root, push).unwrap_err();
        assert!(e.message().contains("push sources"), "{e:?}");
        let mut view = feature_view(&defs, root, &defs.feature_views["stats"]);
        view.spec.as_mut().unwrap().features[0].value_type = FeastType::Null as i32;
        let e = apply_view(&mut defs, root, view).unwrap_err();
        assert!(
            e.message()
                .contains("feature view 'stats', feature 'avg_trips'"),
            "{e:?}"
        );
        let e = delete(&mut defs, ObjectKind::FeatureView, "nope", "demo").unwrap_err();
        assert_eq!(e.code(), Code::NotFound);
        assert!(
            e.message().contains("FeatureViewNotFoundException"),
            "{e:?}"
        );
        // Nothing was changed by the refusals.
        assert_eq!(defs, definitions());
    }

    #[test]
    fn saved_datasets_are_kept_as_sent_under_safe_names() {
        let dir = tempfile::tempdir().unwrap();
        let saved = SavedDatasets {
            folder: dir.path().join("feast_saved_datasets"),
        };
        assert!(saved.list().unwrap().is_empty());
        let spec = fc::SavedDatasetSpecHead {
            name: "train".into(),
            project: "demo".into(),
            features: vec!["stats:rate".into(), "stats:count".into(), "zones:x".into()],
        };
        let dataset = fc::SavedDataset {
            spec: spec.encode_to_vec(),
            meta: vec![1, 2, 3],
        };
        assert_eq!(
            dataset_head(&dataset),
            (
                "train".to_owned(),
                vec!["stats".to_owned(), "zones".to_owned()]
            )
        );
        saved.put("train", &dataset).unwrap();
        assert_eq!(saved.get("train").unwrap(), Some(dataset.clone()));
        assert_eq!(saved.list().unwrap(), vec![dataset]);
        assert!(
            saved
                .put("../escape", &fc::SavedDataset::default())
                .is_err()
        );
        assert!(saved.delete("train").unwrap());
        assert!(!saved.delete("train").unwrap());
        assert_eq!(saved.get("train").unwrap(), None);
    }
}
