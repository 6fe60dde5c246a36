//! Quiver's own gRPC services: `quiver.v1.OnlineService` and `quiver.v1.RegistryService`.

use std::collections::BTreeMap;
use std::sync::Arc;

use quiver_core::{Definitions, ObjectKind as Kind};
use quiver_online::{Cell, FeatureValue, FieldStatus as Status_};
use quiver_registry::{Change as RegistryChange, Plan, RegistryError};
use tonic::{Request, Response, Status};

use crate::catalog::{Catalog, FeatureSpec};
use crate::error::online_status;
use crate::online::{Loose, Online, PushTarget};
use crate::proto::quiver::v1 as pb;
use crate::registry_files::validate_files;

/// `quiver.v1.OnlineService`.
pub struct OnlineGrpc {
    online: Arc<Online>,
}

impl OnlineGrpc {
    /// Serves reads and pushes through `online`.
    pub fn new(online: Arc<Online>) -> Self {
        Self { online }
    }
}

fn loose(v: &pb::Value) -> Loose {
    use pb::value::Kind as K;
    match &v.kind {
        None => Loose::Null,
        Some(K::BoolValue(b)) => Loose::Bool(*b),
        Some(K::Int32Value(i)) => Loose::Int(i64::from(*i)),
        Some(K::Int64Value(i)) => Loose::Int(*i),
        Some(K::FloatValue(f)) => Loose::Float(f64::from(*f)),
        Some(K::DoubleValue(f)) => Loose::Float(*f),
        Some(K::StringValue(s)) => Loose::String(s.clone()),
        Some(K::BytesValue(b)) => Loose::Bytes(b.clone()),
        Some(K::TimestampMicros(t)) => Loose::Timestamp(*t),
        Some(K::ListValue(l)) => Loose::List(l.values.iter().map(loose).collect()),
    }
}

fn value(v: &FeatureValue<'_>) -> pb::Value {
    use pb::value::Kind as K;
    let kind = match v {
        FeatureValue::Null => None,
        FeatureValue::Bool(b) => Some(K::BoolValue(*b)),
        FeatureValue::Int32(i) => Some(K::Int32Value(*i)),
        FeatureValue::Int64(i) => Some(K::Int64Value(*i)),
        FeatureValue::Float32(f) => Some(K::FloatValue(*f)),
        FeatureValue::Float64(f) => Some(K::DoubleValue(*f)),
        FeatureValue::String(s) => Some(K::StringValue((*s).to_owned())),
        FeatureValue::Bytes(b) => Some(K::BytesValue(b.to_vec())),
        FeatureValue::Timestamp(t) => Some(K::TimestampMicros(*t)),
        FeatureValue::List(items) => Some(K::ListValue(pb::ValueList {
            values: items.iter().map(value).collect(),
        })),
    };
    pb::Value { kind }
}

/// A protobuf timestamp of µs since the epoch.
pub(crate) fn timestamp(us: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: us.div_euclid(1_000_000),
        nanos: i32::try_from(us.rem_euclid(1_000_000) * 1000).unwrap_or(0),
    }
}

fn status(s: Status_) -> pb::FieldStatus {
    match s {
        Status_::Present => pb::FieldStatus::Present,
        Status_::NullValue => pb::FieldStatus::NullValue,
        Status_::NotFound => pb::FieldStatus::NotFound,
        Status_::OutsideMaxAge => pb::FieldStatus::OutsideMaxAge,
    }
}

/// Protocol-neutral entity columns of a request.
fn columns(list: &[pb::Column]) -> Vec<(String, Vec<Loose>)> {
    list.iter()
        .map(|c| (c.name.clone(), c.values.iter().map(loose).collect()))
        .collect()
}

#[tonic::async_trait]
impl pb::online_service_server::OnlineService for OnlineGrpc {
    async fn get_online_features(
        &self,
        request: Request<pb::GetOnlineFeaturesRequest>,
    ) -> Result<Response<pb::GetOnlineFeaturesResponse>, Status> {
        let r = request.into_inner();
        let spec = match r.features {
            Some(pb::get_online_features_request::Features::FeatureRefs(l)) => {
                FeatureSpec::Refs(l.refs)
            }
            Some(pb::get_online_features_request::Features::FeatureService(s)) => {
                FeatureSpec::Service(s)
            }
            None => {
                return Err(Status::invalid_argument(
                    "set feature_refs or feature_service",
                ));
            }
        };
        let entities = columns(&r.entities);
        let response =
            self.online
                .read(spec, &entities, r.full_feature_names, |snapshot, read| {
                    let rows = read.num_rows();
                    let mut features = Vec::with_capacity(read.features().len());
                    for (col, f) in read.features().iter().enumerate() {
                        let mut column = pb::FeatureColumn {
                            name: f.output_name.clone(),
                            values: Vec::with_capacity(rows),
                            statuses: Vec::with_capacity(rows),
                            event_timestamps_micros: Vec::with_capacity(rows),
                        };
                        for row in 0..rows {
                            let Cell {
                                value: v,
                                status: s,
                                event_ts,
                            } = read.cell(col, row).map_err(|e| online_status(&e))?;
                            column.values.push(value(&v));
                            column.statuses.push(status(s) as i32);
                            column.event_timestamps_micros.push(event_ts.unwrap_or(0));
                        }
                        features.push(column);
                    }
                    Ok(pb::GetOnlineFeaturesResponse {
                        registry_version: snapshot.version,
                        row_count: u32::try_from(rows).unwrap_or(u32::MAX),
                        features,
                    })
                })?;
        Ok(Response::new(response))
    }

    async fn push_features(
        &self,
        request: Request<pb::PushFeaturesRequest>,
    ) -> Result<Response<pb::PushFeaturesResponse>, Status> {
        let r = request.into_inner();
        let to = match pb::PushTarget::try_from(r.to).unwrap_or(pb::PushTarget::Unspecified) {
            pb::PushTarget::Unspecified | pb::PushTarget::Online => PushTarget::Online,
            pb::PushTarget::OnlineAndOffline => PushTarget::OnlineAndOffline,
        };
        let pushed = self
            .online
            .push_blocking(r.feature_view, columns(&r.columns), to)
            .await?;
        Ok(Response::new(pb::PushFeaturesResponse {
            rows_written: pushed.rows as u64,
            offline_file: pushed.offline_file.unwrap_or_default(),
        }))
    }
}

/// `quiver.v1.RegistryService`.
pub struct RegistryGrpc {
    catalog: Arc<Catalog>,
    /// The repository's `quiver.yaml` settings (definitions are validated against its data).
    repo: crate::registry_files::RepoContext,
}

impl RegistryGrpc {
    /// Serves the registry that `catalog` follows.
    pub fn new(catalog: Arc<Catalog>, repo: crate::registry_files::RepoContext) -> Self {
        Self { catalog, repo }
    }
}

fn kind_of(k: pb::ObjectKind) -> Option<Kind> {
    match k {
        pb::ObjectKind::Unspecified => None,
        pb::ObjectKind::Entity => Some(Kind::Entity),
        pb::ObjectKind::Source => Some(Kind::Source),
        pb::ObjectKind::FeatureView => Some(Kind::FeatureView),
        pb::ObjectKind::FeatureService => Some(Kind::FeatureService),
    }
}

fn pb_kind(k: Kind) -> pb::ObjectKind {
    match k {
        Kind::Entity => pb::ObjectKind::Entity,
        Kind::Source => pb::ObjectKind::Source,
        Kind::FeatureView => pb::ObjectKind::FeatureView,
        Kind::FeatureService => pb::ObjectKind::FeatureService,
    }
}

fn change(c: &RegistryChange) -> pb::Change {
    pb::Change {
        action: format!("{:?}", c.action).to_lowercase(),
        kind: pb_kind(c.kind) as i32,
        name: c.name.clone(),
        breaking: c.breaking.clone(),
    }
}

/// Every object of `defs` of `kind` (all kinds when `None`) as JSON.
fn objects(defs: &Definitions, kind: Option<Kind>) -> Vec<pb::Object> {
    fn add<T: serde::Serialize>(out: &mut Vec<pb::Object>, k: Kind, map: &BTreeMap<String, T>) {
        for (name, o) in map {
            out.push(pb::Object {
                kind: pb_kind(k) as i32,
                name: name.clone(),
                json: serde_json::to_string(o).unwrap_or_default(),
            });
        }
    }
    let mut out = Vec::new();
    let wants = |k: Kind| kind.is_none_or(|x| x == k);
    if wants(Kind::Entity) {
        add(&mut out, Kind::Entity, &defs.entities);
    }
    if wants(Kind::Source) {
        add(&mut out, Kind::Source, &defs.sources);
    }
    if wants(Kind::FeatureView) {
        add(&mut out, Kind::FeatureView, &defs.feature_views);
    }
    if wants(Kind::FeatureService) {
        add(&mut out, Kind::FeatureService, &defs.feature_services);
    }
    out
}

fn registry_status(e: &RegistryError) -> Status {
    match e {
        RegistryError::Conflict { .. } => Status::aborted(e.to_string()),
        RegistryError::Invalid(_) => Status::invalid_argument(e.to_string()),
        _ => Status::internal(e.to_string()),
    }
}

#[tonic::async_trait]
impl pb::registry_service_server::RegistryService for RegistryGrpc {
    async fn apply(
        &self,
        request: Request<pb::ApplyRequest>,
    ) -> Result<Response<pb::ApplyResponse>, Status> {
        let r = request.into_inner();
        let catalog = Arc::clone(&self.catalog);
        let repo = self.repo.clone();
        let response = tokio::task::spawn_blocking(move || -> Result<pb::ApplyResponse, Status> {
            let defs = validate_files(&repo, &r.files)?;
            let registry = catalog.registry();
            let current = registry.latest().map_err(|e| registry_status(&e))?;
            let latest = current.as_ref().map(|v| v.version);
            let based_on = match r.based_on {
                Some(0) => None,
                Some(v) => Some(v),
                None => latest,
            };
            let empty = Definitions::default();
            let plan = Plan::between(current.as_ref().map_or(&empty, |v| &v.definitions), &defs);
            if plan.is_empty() && based_on == latest {
                return Ok(pb::ApplyResponse {
                    version: latest.unwrap_or(0),
                    changes: Vec::new(),
                });
            }
            let author = if r.author.is_empty() {
                "grpc"
            } else {
                &r.author
            };
            let version = registry
                .commit(based_on, defs, author)
                .map_err(|e| registry_status(&e))?;
            catalog
                .refresh()
                .map_err(|e| Status::internal(e.to_string()))?;
            Ok(pb::ApplyResponse {
                version: version.version,
                changes: version.changes.iter().map(change).collect(),
            })
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))??;
        Ok(Response::new(response))
    }

    async fn list_objects(
        &self,
        request: Request<pb::ListObjectsRequest>,
    ) -> Result<Response<pb::ListObjectsResponse>, Status> {
        let kind = kind_of(request.into_inner().kind());
        let snapshot = self.catalog.current();
        Ok(Response::new(pb::ListObjectsResponse {
            version: snapshot.version,
            objects: objects(&snapshot.defs, kind),
        }))
    }

    async fn get_object(
        &self,
        request: Request<pb::GetObjectRequest>,
    ) -> Result<Response<pb::Object>, Status> {
        let r = request.into_inner();
        let kind = kind_of(r.kind()).ok_or_else(|| Status::invalid_argument("set kind"))?;
        let snapshot = self.catalog.current();
        objects(&snapshot.defs, Some(kind))
            .into_iter()
            .find(|o| o.name == r.name)
            .map(Response::new)
            .ok_or_else(|| Status::not_found(format!("no {kind} named '{}'", r.name)))
    }

    async fn history(
        &self,
        _request: Request<pb::HistoryRequest>,
    ) -> Result<Response<pb::HistoryResponse>, Status> {
        let catalog = Arc::clone(&self.catalog);
        let versions = tokio::task::spawn_blocking(move || catalog.registry().history())
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| registry_status(&e))?;
        Ok(Response::new(pb::HistoryResponse {
            versions: versions
                .iter()
                .map(|v| pb::Version {
                    version: v.version,
                    created_at: Some(timestamp(v.created_at.timestamp_micros())),
                    author: v.author.clone(),
                    changes: v.changes.iter().map(change).collect(),
                })
                .collect(),
        }))
    }
}
