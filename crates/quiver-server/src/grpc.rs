//! Quiver's own gRPC services: `quiver.v1.OnlineService`, `RegistryService`,
//! `MaterializationService` and `OnlineStoreService`. Each only translates messages; the
//! operations are `quiver-ops`'.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use quiver_core::{Action, Definitions, EngineKind, ObjectKind as Kind, TimestampUnit};
use quiver_online::{Progress, Window};
use quiver_ops::{
    ApplyRequest, BaseVersion, Caller, FeatureStore, InputValue, MaterializeRequest, PushRequest,
    PushTarget, Snapshot,
};
use quiver_registry::Change as RegistryChange;
use tonic::{Request, Response, Status};

use crate::error::{join_status, status};
use crate::gate::caller_of;
use crate::messages::{run_message, view_report_message};
use crate::proto::quiver::v1 as pb;
use crate::registry_files::validate_files;

/// Runs `work` on the blocking pool: operations do file and store IO, never on the runtime.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Status> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| join_status(&e))?
}

/// `quiver.v1.OnlineService`.
pub struct OnlineGrpc {
    store: Arc<FeatureStore>,
}

impl OnlineGrpc {
    /// Serves reads and pushes of `store`.
    pub fn new(store: Arc<FeatureStore>) -> Self {
        Self { store }
    }
}

fn input(v: &pb::Value) -> InputValue {
    use pb::value::Kind as K;
    match &v.kind {
        None => InputValue::Null,
        Some(K::BoolValue(b)) => InputValue::Bool(*b),
        Some(K::Int32Value(i)) => InputValue::Int(i64::from(*i)),
        Some(K::Int64Value(i)) => InputValue::Int(*i),
        Some(K::FloatValue(f)) => InputValue::Float(f64::from(*f)),
        Some(K::DoubleValue(f)) => InputValue::Float(*f),
        Some(K::StringValue(s)) => InputValue::String(s.clone()),
        Some(K::BytesValue(b)) => InputValue::Bytes(b.clone()),
        Some(K::TimestampMicros(t)) => InputValue::Timestamp(t.saturating_mul(1_000)),
        Some(K::ListValue(l)) => InputValue::List(l.values.iter().map(input).collect()),
    }
}

/// A protobuf timestamp of ns since the epoch.
pub(crate) fn timestamp(ns: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ns.div_euclid(1_000_000_000),
        nanos: i32::try_from(ns.rem_euclid(1_000_000_000)).unwrap_or(0),
    }
}

/// Protocol-neutral columns of a request, once every column's length is within the row
/// limit.
pub(crate) fn columns(
    store: &FeatureStore,
    list: &[pb::Column],
) -> Result<Vec<(String, Vec<InputValue>)>, Status> {
    store
        .options()
        .limits
        .check_rows(list.iter().map(|c| (c.name.as_str(), c.values.len())))
        .map_err(|e| status(&e))?;
    Ok(list
        .iter()
        .map(|c| (c.name.clone(), c.values.iter().map(input).collect()))
        .collect())
}

fn timestamp_unit(unit: i32) -> Option<TimestampUnit> {
    match pb::TimestampUnit::try_from(unit).unwrap_or(pb::TimestampUnit::Unspecified) {
        pb::TimestampUnit::Unspecified => None,
        pb::TimestampUnit::Seconds => Some(TimestampUnit::Seconds),
        pb::TimestampUnit::Milliseconds => Some(TimestampUnit::Millis),
        pb::TimestampUnit::Microseconds => Some(TimestampUnit::Micros),
        pb::TimestampUnit::Nanoseconds => Some(TimestampUnit::Nanos),
    }
}

#[tonic::async_trait]
impl pb::online_service_server::OnlineService for OnlineGrpc {
    /// The server answers this route with [`crate::OnlineService`], which encodes the
    /// response without building it; this is the same answer as a message, for callers of
    /// the trait.
    async fn get_online_features(
        &self,
        request: Request<pb::GetOnlineFeaturesRequest>,
    ) -> Result<Response<pb::GetOnlineFeaturesResponse>, Status> {
        use prost::Message;
        let (metadata, extensions, r) = request.into_parts();
        let r = crate::online_wire::wire_request(&r)?;
        let request = Request::from_parts(metadata, extensions, r);
        let encoded = crate::online_wire::get_online_features(&self.store, request)
            .await?
            .into_inner();
        pb::GetOnlineFeaturesResponse::decode(encoded.0.as_slice())
            .map(Response::new)
            .map_err(|e| Status::internal(format!("cannot decode an encoded response: {e}")))
    }

    async fn push_features(
        &self,
        request: Request<pb::PushFeaturesRequest>,
    ) -> Result<Response<pb::PushFeaturesResponse>, Status> {
        let caller = caller_of(request.extensions());
        let r = request.into_inner();
        let to = match pb::PushTarget::try_from(r.to).unwrap_or(pb::PushTarget::Unspecified) {
            pb::PushTarget::Unspecified | pb::PushTarget::Online => PushTarget::Online,
            pb::PushTarget::OnlineAndOffline => PushTarget::OnlineAndOffline,
        };
        let push = PushRequest {
            name: r.feature_view,
            columns: columns(&self.store, &r.columns)?,
            to,
            timestamp_unit: timestamp_unit(r.timestamp_unit),
        };
        let store = Arc::clone(&self.store);
        let pushed = blocking(move || store.push(&caller, &push).map_err(|e| status(&e))).await?;
        Ok(Response::new(pb::PushFeaturesResponse {
            rows_written: pushed.rows as u64,
            offline_file: pushed
                .offline_file
                .map(|f| f.to_string())
                .unwrap_or_default(),
            feature_views: pushed.views,
        }))
    }
}

/// `quiver.v1.RegistryService`.
pub struct RegistryGrpc {
    store: Arc<FeatureStore>,
}

impl RegistryGrpc {
    /// Serves the registry of `store`.
    pub fn new(store: Arc<FeatureStore>) -> Self {
        Self { store }
    }
}

fn kind_of(k: pb::ObjectKind) -> Option<Kind> {
    match k {
        pb::ObjectKind::Unspecified => None,
        pb::ObjectKind::Entity => Some(Kind::Entity),
        pb::ObjectKind::Source => Some(Kind::Source),
        pb::ObjectKind::FeatureView => Some(Kind::FeatureView),
        pb::ObjectKind::FeatureService => Some(Kind::FeatureService),
        pb::ObjectKind::Permission => Some(Kind::Permission),
    }
}

fn pb_kind(k: Kind) -> pb::ObjectKind {
    match k {
        Kind::Entity => pb::ObjectKind::Entity,
        Kind::Source => pb::ObjectKind::Source,
        Kind::FeatureView => pb::ObjectKind::FeatureView,
        Kind::FeatureService => pb::ObjectKind::FeatureService,
        Kind::Permission => pb::ObjectKind::Permission,
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

/// Whether `caller` may see `object`'s definition.
fn describable(snapshot: &Snapshot, caller: &Caller, object: &pb::Object) -> bool {
    kind_of(object.kind()).is_some_and(|kind| {
        snapshot
            .authorizer
            .decide(caller, Action::Describe, kind, &object.name)
            .is_some()
    })
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
    if wants(Kind::Permission) {
        add(&mut out, Kind::Permission, &defs.permissions);
    }
    out
}

#[tonic::async_trait]
impl pb::registry_service_server::RegistryService for RegistryGrpc {
    async fn apply(
        &self,
        request: Request<pb::ApplyRequest>,
    ) -> Result<Response<pb::ApplyResponse>, Status> {
        let caller = caller_of(request.extensions());
        let r = request.into_inner();
        let store = Arc::clone(&self.store);
        let response = blocking(move || {
            let definitions = validate_files(&store, &r.files)?;
            let outcome = store
                .apply(
                    &caller,
                    ApplyRequest {
                        definitions,
                        based_on: r.based_on.map_or(BaseVersion::Latest, BaseVersion::Version),
                        author: if r.author.is_empty() {
                            "grpc".into()
                        } else {
                            r.author
                        },
                    },
                )
                .map_err(|e| status(&e))?;
            let committed = &outcome.committed;
            Ok(pb::ApplyResponse {
                version: committed
                    .version
                    .as_ref()
                    .or(committed.base.as_ref())
                    .map_or(0, |v| v.version),
                changes: committed
                    .version
                    .iter()
                    .flat_map(|v| v.changes.iter().map(change))
                    .collect(),
                online_views_deleted: outcome.deleted_views,
            })
        })
        .await?;
        Ok(Response::new(response))
    }

    async fn list_objects(
        &self,
        request: Request<pb::ListObjectsRequest>,
    ) -> Result<Response<pb::ListObjectsResponse>, Status> {
        let caller = caller_of(request.extensions());
        let kind = kind_of(request.into_inner().kind());
        let snapshot = self.store.snapshot();
        // Only the objects the caller may describe.
        let objects = objects(&snapshot.defs, kind)
            .into_iter()
            .filter(|o| describable(&snapshot, &caller, o))
            .collect();
        Ok(Response::new(pb::ListObjectsResponse {
            version: snapshot.version,
            objects,
        }))
    }

    async fn get_object(
        &self,
        request: Request<pb::GetObjectRequest>,
    ) -> Result<Response<pb::Object>, Status> {
        let caller = caller_of(request.extensions());
        let r = request.into_inner();
        let kind = kind_of(r.kind()).ok_or_else(|| Status::invalid_argument("set kind"))?;
        let snapshot = self.store.snapshot();
        let object = objects(&snapshot.defs, Some(kind))
            .into_iter()
            .find(|o| o.name == r.name)
            .ok_or_else(|| Status::not_found(format!("no {kind} named '{}'", r.name)))?;
        self.store
            .authorize(&snapshot, &caller, Action::Describe, &[(kind, &r.name)])
            .map_err(|e| status(&e))?;
        Ok(Response::new(object))
    }

    async fn history(
        &self,
        request: Request<pb::HistoryRequest>,
    ) -> Result<Response<pb::HistoryResponse>, Status> {
        let caller = caller_of(request.extensions());
        let store = Arc::clone(&self.store);
        let versions = blocking(move || store.registry().history().map_err(|e| status(&e))).await?;
        let snapshot = self.store.snapshot();
        // Each version lists only the changes to objects the caller may describe.
        let visible = |c: &RegistryChange| {
            snapshot
                .authorizer
                .decide_new(
                    &caller,
                    Action::Describe,
                    c.kind,
                    &c.name,
                    snapshot.defs.tags_of(c.kind, &c.name),
                )
                .is_some()
        };
        Ok(Response::new(pb::HistoryResponse {
            versions: versions
                .iter()
                .map(|v| pb::Version {
                    version: v.version,
                    created_at: Some(timestamp(v.created_at.timestamp_nanos_opt().unwrap_or(0))),
                    author: v.author.clone(),
                    changes: v
                        .changes
                        .iter()
                        .filter(|c| visible(c))
                        .map(change)
                        .collect(),
                })
                .collect(),
        }))
    }
}

/// `quiver.v1.MaterializationService`.
pub struct MaterializationGrpc {
    store: Arc<FeatureStore>,
}

impl MaterializationGrpc {
    /// Runs materializations of `store`.
    pub fn new(store: Arc<FeatureStore>) -> Self {
        Self { store }
    }

    /// Runs `request` on the blocking pool, streaming progress and one report per view; the
    /// run is cancelled when the client goes away.
    fn run(
        &self,
        caller: Caller,
        request: MaterializeRequest,
    ) -> BoxStream<'static, Result<pb::MaterializeEvent, Status>> {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<pb::MaterializeEvent, Status>>(64);
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || {
            let cancel = AtomicBool::new(false);
            let send = |event: pb::materialize_event::Event| {
                if tx
                    .blocking_send(Ok(pb::MaterializeEvent { event: Some(event) }))
                    .is_err()
                {
                    cancel.store(true, Ordering::Relaxed);
                }
            };
            let progress = |p: Progress<'_>| match p {
                Progress::ViewStarted { view, rows } => {
                    send(pb::materialize_event::Event::ViewStarted(pb::ViewStarted {
                        view: view.to_owned(),
                        rows,
                    }));
                }
                Progress::Rows(n) => send(pb::materialize_event::Event::RowsRead(n)),
            };
            // One view at a time, so each view's report follows its progress.
            let views = if request.views.is_empty() {
                store
                    .snapshot()
                    .online_views()
                    .map(|v| v.name.clone())
                    .collect()
            } else {
                request.views.clone()
            };
            for view in views {
                let one = MaterializeRequest {
                    views: vec![view],
                    ..request.clone()
                };
                match store.materialize(&caller, &one, &progress, Some(&cancel)) {
                    Ok(reports) => {
                        for r in reports {
                            send(pb::materialize_event::Event::ViewDone(view_report_message(
                                &r,
                            )));
                        }
                    }
                    Err(e) => {
                        let _ = tx.blocking_send(Err(status(&e)));
                        return;
                    }
                }
            }
        });
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (e, rx)) })
            .boxed()
    }
}

/// A request's `engine` (empty: `offline_engine`'s).
fn engine(name: &str) -> Result<Option<EngineKind>, Status> {
    if name.is_empty() {
        return Ok(None);
    }
    name.parse().map(Some).map_err(|e| status(&e))
}

fn views(list: Vec<String>) -> Vec<String> {
    list.into_iter().filter(|v| !v.is_empty()).collect()
}

#[tonic::async_trait]
impl pb::materialization_service_server::MaterializationService for MaterializationGrpc {
    type MaterializeStream = BoxStream<'static, Result<pb::MaterializeEvent, Status>>;
    type MaterializeIncrementalStream = BoxStream<'static, Result<pb::MaterializeEvent, Status>>;

    async fn materialize(
        &self,
        request: Request<pb::MaterializeRequest>,
    ) -> Result<Response<Self::MaterializeStream>, Status> {
        let caller = caller_of(request.extensions());
        let r = request.into_inner();
        if r.start_nanos > r.end_nanos {
            return Err(Status::invalid_argument("start_nanos is after end_nanos"));
        }
        let engine = engine(&r.engine)?;
        Ok(Response::new(self.run(
            caller,
            MaterializeRequest {
                engine,
                ..MaterializeRequest::manual(
                    views(r.views),
                    Window::Range {
                        start: r.start_nanos,
                        end: r.end_nanos,
                    },
                )
            },
        )))
    }

    async fn materialize_incremental(
        &self,
        request: Request<pb::MaterializeIncrementalRequest>,
    ) -> Result<Response<Self::MaterializeIncrementalStream>, Status> {
        let caller = caller_of(request.extensions());
        let r = request.into_inner();
        let lookback = u64::try_from(r.lookback_nanos)
            .map_err(|_| Status::invalid_argument("lookback_nanos is negative"))?;
        let engine = engine(&r.engine)?;
        Ok(Response::new(self.run(
            caller,
            MaterializeRequest {
                engine,
                ..MaterializeRequest::manual(
                    views(r.views),
                    Window::Incremental {
                        end: r.end_nanos,
                        lookback: Duration::from_nanos(lookback),
                    },
                )
            },
        )))
    }

    async fn list_runs(
        &self,
        request: Request<pb::ListRunsRequest>,
    ) -> Result<Response<pb::ListRunsResponse>, Status> {
        let caller = caller_of(request.extensions());
        let r = request.into_inner();
        let store = Arc::clone(&self.store);
        let limit = if r.limit == 0 { 20 } else { r.limit as usize };
        let runs = blocking(move || {
            let view = (!r.view.is_empty()).then_some(r.view.as_str());
            store.runs(view, limit).map_err(|e| status(&e))
        })
        .await?;
        let snapshot = self.store.snapshot();
        Ok(Response::new(pb::ListRunsResponse {
            runs: runs
                .iter()
                .filter(|run| {
                    snapshot
                        .authorizer
                        .decide(&caller, Action::Describe, Kind::FeatureView, &run.view)
                        .is_some()
                })
                .map(run_message)
                .collect(),
        }))
    }
}

/// `quiver.v1.OnlineStoreService`.
pub struct OnlineStoreGrpc {
    store: Arc<FeatureStore>,
}

impl OnlineStoreGrpc {
    /// Serves the figures and backups of `store`'s online store.
    pub fn new(store: Arc<FeatureStore>) -> Self {
        Self { store }
    }
}

#[tonic::async_trait]
impl pb::online_store_service_server::OnlineStoreService for OnlineStoreGrpc {
    async fn get_stats(
        &self,
        request: Request<pb::GetStatsRequest>,
    ) -> Result<Response<pb::GetStatsResponse>, Status> {
        let caller = caller_of(request.extensions());
        let store = Arc::clone(&self.store);
        let response = blocking(move || {
            let (stats, watermarks) = store.stats().map_err(|e| status(&e))?;
            let snapshot = store.snapshot();
            // Watermarks of the views the caller may describe.
            let watermarks: Vec<(String, Option<i64>)> = watermarks
                .into_iter()
                .filter(|(view, _)| {
                    snapshot
                        .authorizer
                        .decide(&caller, Action::Describe, Kind::FeatureView, view)
                        .is_some()
                })
                .collect();
            Ok(pb::GetStatsResponse {
                location: store.store().location(),
                estimated_rows: stats.estimated_rows,
                disk_bytes: stats.disk_bytes,
                memory_bytes: stats.memory_bytes,
                pending_compaction_bytes: stats.pending_compaction_bytes,
                running_compactions: stats.running_compactions,
                block_cache_hits: stats.block_cache_hits,
                block_cache_misses: stats.block_cache_misses,
                watermarks: watermarks
                    .into_iter()
                    .map(|(view, watermark_nanos)| pb::ViewWatermark {
                        view,
                        watermark_nanos,
                    })
                    .collect(),
                registry_version: store.snapshot().version,
            })
        })
        .await?;
        Ok(Response::new(response))
    }

    async fn get_status(
        &self,
        request: Request<pb::GetStatusRequest>,
    ) -> Result<Response<pb::GetStatusResponse>, Status> {
        let caller = caller_of(request.extensions());
        let store = Arc::clone(&self.store);
        let report = blocking(move || store.status(&caller).map_err(|e| status(&e))).await?;
        Ok(Response::new(crate::messages::status_message(&report)))
    }

    async fn backup(
        &self,
        request: Request<pb::BackupRequest>,
    ) -> Result<Response<pb::BackupResponse>, Status> {
        // A backup holds every online row: the caller must be able to read every view.
        let caller = caller_of(request.extensions());
        let snapshot = self.store.snapshot();
        let views: Vec<(Kind, &str)> = snapshot
            .online_views()
            .map(|v| (Kind::FeatureView, v.name.as_str()))
            .collect();
        self.store
            .authorize(&snapshot, &caller, Action::ReadOnline, &views)
            .map_err(|e| status(&e))?;
        let dir = PathBuf::from(request.into_inner().dir);
        if !dir.is_absolute() {
            return Err(Status::invalid_argument(format!(
                "backup folder '{}' must be an absolute path on the server's machine",
                dir.display()
            )));
        }
        let store = Arc::clone(&self.store);
        let shown = dir.display().to_string();
        blocking(move || store.backup(&dir).map_err(|e| status(&e))).await?;
        Ok(Response::new(pb::BackupResponse { dir: shown }))
    }
}
