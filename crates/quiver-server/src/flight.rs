//! The Arrow Flight training-set service: Quiver's native protocol and Feast's.
//!
//! Native: `DoExchange` with a JSON command descriptor (`{"features": [...] |
//! "feature_service": "...", "full_feature_names": bool, "as_of_created": bool, "engine":
//! "native" | "spark"}`): the client streams the entity table in and reads the training set
//! back. `GetSchema` and
//! `GetFlightInfo` describe a command without running it, `ListFlights` lists one flight per
//! offline feature view, and `DoGet` runs a command whose entity rows are a Parquet file on
//! the server (`"entities": "path"`) or every key and time of the views' sources in a range
//! (`"start"`, `"end"`).
//!
//! Feast (`offline_store: type: remote`): a JSON command carrying `"api"`, either with
//! `DoExchange` (entity table in, training set out: what Feast 0.5x and later send) or as
//! `DoPut` of the entity table, then `GetFlightInfo` and `DoGet` with that command as the
//! ticket (the older flow the compatibility notes describe). Feast's other apis are answered
//! by `feast_offline`: its reads with `DoExchange` (a source's columns, pulls), its writes
//! with `DoPut` (validating a source, `offline_write_batch`, `write_logged_features`,
//! `persist`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::compute::concat_batches;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightEndpoint, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaAsIpc, SchemaResult, Ticket,
    decode::FlightRecordBatchStream,
};
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use quiver_core::{
    Action as Permitted, Definitions, EngineKind, FeatureRef, ObjectKind, ResolvedFeature,
    parse_time_nanos,
};
use quiver_offline::{
    EVENT_TIMESTAMP, JoinOptions, PointInTimeJoin, PullMode, TrainingSet, data_bytes,
    read_entity_file,
};
use quiver_ops::{Caller, FeatureStore, Snapshot};
use serde::Deserialize;
use tonic::{Request, Response, Status, Streaming};

use crate::error::{join_status, status};
use crate::feast_offline;
use crate::gate::caller_of;
use crate::grpc::blocking;

/// How long an entity table uploaded with Feast's `DoPut` waits for its `DoGet` (Feast asks
/// for it right after the upload).
const PENDING_TTL: Duration = Duration::from_secs(120);

/// Limits on entity tables uploaded over Arrow Flight.
#[derive(Debug, Clone, Copy)]
pub struct UploadLimits {
    /// Rows of one entity table.
    pub max_rows: usize,
    /// Bytes (in memory, as Arrow) of one entity table.
    pub max_bytes: usize,
    /// Bytes of all the tables uploaded with `DoPut` that wait for their `DoGet`.
    pub max_pending_bytes: usize,
}

impl Default for UploadLimits {
    fn default() -> Self {
        Self {
            max_rows: 100_000_000,
            max_bytes: 4 << 30,
            max_pending_bytes: 1 << 30,
        }
    }
}

fn over_limit(what: &str, value: usize, setting: &str) -> Status {
    Status::resource_exhausted(format!(
        "the entity table is over the limit of {value} {what} (server.limits.{setting})"
    ))
}

/// Quiver's native training-set command.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Command {
    #[serde(default)]
    features: Option<Vec<String>>,
    #[serde(default)]
    feature_service: Option<String>,
    #[serde(default)]
    full_feature_names: bool,
    #[serde(default)]
    as_of_created: bool,
    /// `DoGet` only: a Parquet file of entity rows readable by the server.
    #[serde(default)]
    entities: Option<String>,
    /// `DoGet` only: every key and event time of the views' sources from `start` to `end`.
    #[serde(default)]
    start: Option<String>,
    #[serde(default)]
    end: Option<String>,
    /// Write the training set to this object URL (under `object_storage.outputs`) and answer
    /// with its location and row count instead of the rows.
    #[serde(default)]
    out: Option<String>,
    /// `"native"` or `"spark"`: the engine that joins (`offline_engine` of `quiver.yaml` by
    /// default).
    #[serde(default)]
    engine: Option<String>,
}

/// Feast's remote offline-store command (the fields Quiver uses).
#[derive(Debug, Deserialize)]
struct FeastCommand {
    api: String,
    #[serde(default)]
    feature_refs: Vec<String>,
    #[serde(default)]
    project: Option<String>,
    #[serde(default)]
    full_feature_names: bool,
    #[serde(default)]
    start_date: Option<String>,
    #[serde(default)]
    end_date: Option<String>,
    #[serde(default)]
    entity_df_sql: Option<String>,
    /// Feast's `DataSource` proto as JSON (the data-source apis).
    #[serde(default)]
    data_source_proto: Option<String>,
    /// A data source by name (pulls), or where `persist` writes.
    #[serde(default)]
    data_source_name: Option<String>,
    #[serde(default)]
    join_key_columns: Vec<String>,
    #[serde(default)]
    feature_name_columns: Vec<String>,
    #[serde(default)]
    timestamp_field: Option<String>,
    #[serde(default)]
    created_timestamp_column: Option<String>,
    /// The view `offline_write_batch` writes to.
    #[serde(default)]
    feature_view_names: Vec<String>,
    /// The service `write_logged_features` logs for.
    #[serde(default)]
    feature_service_name: Option<String>,
    /// The retrieval `persist` saves.
    #[serde(default)]
    retrieve_func: Option<String>,
    #[serde(default)]
    allow_overwrite: bool,
}

impl FeastCommand {
    /// The pull this command asks for, if it is one.
    fn pull(&self, api: &str) -> Option<feast_offline::PullCommand> {
        let mode = match api {
            PULL_LATEST => PullMode::Latest,
            PULL_ALL => PullMode::All,
            _ => return None,
        };
        Some(feast_offline::PullCommand {
            data_source_name: self.data_source_name.clone(),
            join_key_columns: self.join_key_columns.clone(),
            feature_name_columns: self.feature_name_columns.clone(),
            timestamp_field: self.timestamp_field.clone(),
            created_timestamp_column: self.created_timestamp_column.clone(),
            start_date: self.start_date.clone(),
            end_date: self.end_date.clone(),
            mode,
        })
    }
}

/// Feast's remote offline store apis, every one of which Quiver answers.
const HISTORICAL: &str = "get_historical_features";
const VALIDATE_SOURCE: &str = "validate_data_source";
const SOURCE_COLUMNS: &str = "get_table_column_names_and_types_from_data_source";
const PULL_LATEST: &str = "pull_latest_from_table_or_query";
const PULL_ALL: &str = "pull_all_from_table_or_query";
const WRITE_BATCH: &str = "offline_write_batch";
const WRITE_LOGGED: &str = "write_logged_features";
const PERSIST: &str = "persist";
const FEAST_APIS: [&str; 8] = [
    HISTORICAL,
    VALIDATE_SOURCE,
    SOURCE_COLUMNS,
    PULL_LATEST,
    PULL_ALL,
    WRITE_BATCH,
    WRITE_LOGGED,
    PERSIST,
];

/// A parsed descriptor or ticket.
enum ParsedCommand {
    Native(Command),
    Feast(Box<FeastCommand>),
}

fn invalid(message: impl Into<String>) -> Status {
    Status::invalid_argument(message.into())
}

/// The engine a native command asks for.
fn engine_of(command: &Command) -> Result<Option<EngineKind>, Status> {
    command
        .engine
        .as_deref()
        .map(|e| {
            e.parse()
                .map_err(|e: quiver_core::CoreError| invalid(e.to_string()))
        })
        .transpose()
}

/// Sets its flag when dropped: a request future dropped mid-way cancels its blocking work.
#[derive(Default)]
struct CancelOnDrop(Arc<std::sync::atomic::AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

fn parse_command(bytes: &[u8]) -> Result<ParsedCommand, Status> {
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| invalid(format!("the command is not valid JSON: {e}")))?;
    if value.get("api").is_some() {
        let c: FeastCommand = serde_json::from_value(value)
            .map_err(|e| invalid(format!("invalid Feast command: {e}")))?;
        return Ok(ParsedCommand::Feast(Box::new(c)));
    }
    let c: Command = serde_json::from_value(value)
        .map_err(|e| invalid(format!("invalid training-set command: {e}")))?;
    Ok(ParsedCommand::Native(c))
}

/// Parses feature references, naming the bad one.
fn feature_refs(list: &[String]) -> Result<Vec<FeatureRef>, Status> {
    list.iter()
        .map(|r| r.parse::<FeatureRef>().map_err(|e| status(&e)))
        .collect()
}

fn resolve(defs: &Definitions, command: &Command) -> Result<Vec<ResolvedFeature>, Status> {
    let full = command.full_feature_names;
    match (&command.features, &command.feature_service) {
        (Some(list), None) => defs
            .resolve(&feature_refs(list)?, full)
            .map_err(|e| status(&e)),
        (None, Some(service)) => defs.resolve_service(service, full).map_err(|e| status(&e)),
        _ => Err(invalid(
            "the command needs exactly one of \"features\" and \"feature_service\"",
        )),
    }
}

/// Nanoseconds since the epoch of a time in a request.
fn nanos(text: &str, field: &str) -> Result<i64, Status> {
    parse_time_nanos(text).map_err(|e| invalid(format!("{field}: {e}")))
}

/// What a training set is joined onto.
enum EntityRows {
    Table(RecordBatch),
    /// A Parquet file under the data root, as the client named it; resolved and read on the
    /// blocking pool.
    File(String),
    Range {
        start: i64,
        end: i64,
    },
}

/// The Flight service.
pub struct TrainingSetService {
    store: Arc<FeatureStore>,
    options: JoinOptions,
    uploads: UploadLimits,
    /// Entity tables uploaded by Feast's `DoPut`, by command.
    pending: Mutex<HashMap<Bytes, (Instant, RecordBatch)>>,
}

impl TrainingSetService {
    /// A service answering from `store`'s snapshot and sources.
    pub fn new(store: Arc<FeatureStore>, options: JoinOptions, uploads: UploadLimits) -> Self {
        Self {
            store,
            options,
            uploads,
            pending: Mutex::new(HashMap::new()),
        }
    }

    /// Checks that `caller` may read offline every view of `features` (and the feature
    /// service they come from).
    fn authorize(
        &self,
        caller: &Caller,
        snapshot: &Snapshot,
        features: &[ResolvedFeature],
        service: Option<&str>,
    ) -> Result<(), Status> {
        let mut objects: Vec<(ObjectKind, &str)> = service
            .map(|s| (ObjectKind::FeatureService, s))
            .into_iter()
            .collect();
        for f in features {
            if !objects.contains(&(ObjectKind::FeatureView, f.view.as_str())) {
                objects.push((ObjectKind::FeatureView, f.view.as_str()));
            }
        }
        self.store
            .authorize(snapshot, caller, Permitted::ReadOffline, &objects)
            .map_err(|e| status(&e))
    }

    /// Runs a join of `features` (resolved against `snapshot`) on a blocking thread once
    /// `caller` may read them: the training set's schema and batches, recorded in the
    /// metrics once the batches end.
    async fn training_set(
        &self,
        caller: &Caller,
        snapshot: Arc<Snapshot>,
        features: (Vec<ResolvedFeature>, Option<&str>),
        as_of_created: bool,
        engine: Option<EngineKind>,
        rows: EntityRows,
    ) -> Result<(SchemaRef, Batches), Status> {
        let record = TrainingSetRecord {
            store: Arc::clone(&self.store),
            started: Instant::now(),
            rows: 0,
            failed: false,
            finished: false,
        };
        let (schema, batches) = self
            .join(caller, snapshot, features, as_of_created, engine, rows)
            .await?;
        Ok((schema, record.measure(batches)))
    }

    async fn join(
        &self,
        caller: &Caller,
        snapshot: Arc<Snapshot>,
        (features, service): (Vec<ResolvedFeature>, Option<&str>),
        as_of_created: bool,
        engine: Option<EngineKind>,
        rows: EntityRows,
    ) -> Result<(SchemaRef, Batches), Status> {
        self.authorize(caller, &snapshot, &features, service)?;
        let sources = Arc::clone(self.store.sources());
        let options = JoinOptions {
            as_of_created,
            ..self.options.clone()
        };
        let spark = self.store.spark(engine).map_err(|e| status(&e))?;
        let entities = match rows {
            EntityRows::Range { start, end } => {
                if engine == Some(EngineKind::Spark) {
                    return Err(Status::unimplemented(
                        "training sets of a time range run on the native engine only",
                    ));
                }
                return stream_range(snapshot, sources, features, options, start, end).await;
            }
            EntityRows::Table(t) => Ok(t),
            EntityRows::File(path) => Err(path),
        };
        // A request dropped while Spark works (the client went away) interrupts its jobs.
        let cancel = CancelOnDrop::default();
        let cancelled = Arc::clone(&cancel.0);
        let set = tokio::task::spawn_blocking(move || -> Result<TrainingSet, Status> {
            let join = PointInTimeJoin::new(&snapshot.defs, &sources, features, options)
                .map_err(|e| status(&e))?;
            let entities = match entities {
                Ok(table) => table,
                Err(path) => sources
                    .client_file(&path)
                    .map_err(quiver_offline::OfflineError::from)
                    .and_then(|file| read_entity_file(&file))
                    .map_err(|e| status(&e))?,
            };
            match spark {
                Some(spark) => spark
                    .training_set(&join, entities, Some(&cancelled))
                    .map_err(|e| status(&e)),
                None => join.run(entities, &|_| {}).map_err(|e| status(&e)),
            }
        })
        .await
        .map_err(|e| join_status(&e))??;
        drop(cancel);
        let schema = set.schema();
        let (tx, batches) = batch_channel();
        tokio::task::spawn_blocking(move || {
            for batch in set {
                let item = batch.map_err(|e| FlightError::Tonic(Box::new(status(&e))));
                if tx.blocking_send(item).is_err() {
                    break;
                }
            }
        });
        Ok((schema, batches))
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        self.store.snapshot()
    }

    /// Answers a Feast command with the entity table it came with (`DoExchange`) or that was
    /// uploaded for it (`DoPut`). Feast sends a one-column `key` placeholder table when the
    /// rows are a time range (`start_date`, `end_date`).
    async fn feast_training_set(
        &self,
        caller: &Caller,
        command: FeastCommand,
        uploaded: Option<RecordBatch>,
    ) -> Result<(SchemaRef, Batches), Status> {
        let snapshot = self.snapshot();
        check_feast(&command, &snapshot.defs)?;
        let features = snapshot
            .defs
            .resolve(
                &feature_refs(&command.feature_refs)?,
                command.full_feature_names,
            )
            .map_err(|e| status(&e))?;
        let placeholder = |t: &RecordBatch| {
            t.num_columns() == 0 || (t.num_columns() == 1 && t.schema().field(0).name() == "key")
        };
        let rows = match (uploaded, &command.start_date, &command.end_date) {
            (Some(t), _, _) if !placeholder(&t) => EntityRows::Table(t),
            (_, Some(start), Some(end)) => EntityRows::Range {
                start: nanos(start, "start_date")?,
                end: nanos(end, "end_date")?,
            },
            _ => {
                return Err(invalid(
                    "no entity table was sent with this command, and no start_date and end_date",
                ));
            }
        };
        self.training_set(caller, snapshot, (features, None), false, None, rows)
            .await
    }

    /// The training set of a native `DoGet` ticket.
    async fn run_ticket(
        &self,
        caller: &Caller,
        command: Command,
    ) -> Result<BoxStream<'static, Result<FlightData, Status>>, Status> {
        let snapshot = self.snapshot();
        let features = resolve(&snapshot.defs, &command)?;
        let rows = match (&command.entities, &command.start, &command.end) {
            (Some(path), None, None) => EntityRows::File(path.clone()),
            (None, Some(start), Some(end)) => EntityRows::Range {
                start: nanos(start, "start")?,
                end: nanos(end, "end")?,
            },
            _ => {
                return Err(invalid(
                    "a DoGet ticket needs \"entities\" (a Parquet file on the server) or both \"start\" and \"end\"; stream an entity table with DoExchange instead",
                ));
            }
        };
        let service = command.feature_service.as_deref();
        let (schema, batches) = self
            .training_set(
                caller,
                snapshot,
                (features, service),
                command.as_of_created,
                engine_of(&command)?,
                rows,
            )
            .await?;
        let (schema, batches) = self.maybe_write_out(command.out, schema, batches).await?;
        Ok(encode(schema, batches))
    }

    /// With an `out` URL, writes the training set there and answers with one row of its
    /// `location` and `rows`; otherwise the training set itself.
    async fn maybe_write_out(
        &self,
        out: Option<String>,
        schema: SchemaRef,
        batches: Batches,
    ) -> Result<(SchemaRef, Batches), Status> {
        let Some(out) = out else {
            return Ok((schema, batches));
        };
        let sources = Arc::clone(self.store.sources());
        let settings = sources.storage().settings();
        if !settings.is_output(&out) {
            return Err(Status::permission_denied(format!(
                "'{out}' is not under object_storage.outputs ({}); the server writes training sets only there",
                if settings.outputs.is_empty() {
                    "none declared".to_owned()
                } else {
                    settings.outputs.join(", ")
                }
            )));
        }
        let location = out.clone();
        let rows = feast_offline::write_batches(batches, "training set".into(), move |rows| {
            sources.write_output(&out, &schema, rows)
        })
        .await?;
        let answer = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("location", DataType::Utf8, false),
                Field::new("rows", DataType::Int64, false),
            ])),
            vec![
                Arc::new(arrow::array::StringArray::from(vec![location])),
                Arc::new(arrow::array::Int64Array::from(vec![rows as i64])),
            ],
        )
        .map_err(|e| Status::internal(e.to_string()))?;
        Ok((answer.schema(), futures::stream::iter([Ok(answer)]).boxed()))
    }

    /// The schema of a command's training set for the minimal entity table (join keys and
    /// `event_timestamp`); the entity table's other columns come before the features. Reads
    /// the sources' footers, so it runs on the blocking pool.
    async fn command_schema(&self, caller: &Caller, command: Command) -> Result<SchemaRef, Status> {
        let snapshot = self.snapshot();
        let features = resolve(&snapshot.defs, &command)?;
        self.authorize(
            caller,
            &snapshot,
            &features,
            command.feature_service.as_deref(),
        )?;
        let sources = Arc::clone(self.store.sources());
        blocking(move || {
            let join =
                PointInTimeJoin::new(&snapshot.defs, &sources, features, JoinOptions::default())
                    .map_err(|e| status(&e))?;
            let keys = join.join_keys().map_err(|e| status(&e))?;
            let entity = minimal_entity_schema(
                keys.iter()
                    .map(|k| Field::new(&k.name, k.key_type.value_type().to_arrow(), true)),
            );
            join.output_schema(&entity).map_err(|e| status(&e))
        })
        .await
    }

    /// Holds an entity table Feast uploaded with `DoPut` for the `DoGet` that follows.
    fn hold_upload(
        &self,
        caller: &Caller,
        snapshot: &Snapshot,
        command: &FeastCommand,
        key: Bytes,
        table: RecordBatch,
    ) -> Result<(), Status> {
        // Only a caller who may read the training set may leave its entity table here.
        let features = snapshot
            .defs
            .resolve(&feature_refs(&command.feature_refs)?, false)
            .map_err(|e| status(&e))?;
        self.authorize(caller, snapshot, &features, None)?;
        let mut pending = self
            .pending
            .lock()
            .map_err(|_| Status::internal("poisoned lock"))?;
        pending.retain(|_, (at, _)| at.elapsed() < PENDING_TTL);
        let held: usize = pending.values().map(|(_, t)| data_bytes(t)).sum();
        if held + data_bytes(&table) > self.uploads.max_pending_bytes {
            return Err(Status::resource_exhausted(format!(
                "uploaded entity tables waiting for their DoGet are over the limit of {} MiB (server.limits.max_pending_upload_mb); fetch them, or retry after {} s",
                self.uploads.max_pending_bytes >> 20,
                PENDING_TTL.as_secs()
            )));
        }
        pending.insert(key, (Instant::now(), table));
        Ok(())
    }

    /// Feast's `persist`: runs the retrieval the command names (`retrieve_func`, with the
    /// uploaded entity table for a training set) and writes it as the saved dataset's file.
    async fn persist(
        &self,
        caller: &Caller,
        command: FeastCommand,
        table: RecordBatch,
    ) -> Result<(), Status> {
        let target = command.data_source_name.clone();
        let overwrite = command.allow_overwrite;
        let retrieval = match command.retrieve_func.as_deref() {
            Some(HISTORICAL) => {
                self.feast_training_set(caller, command, Some(table))
                    .await?
            }
            Some(api) => match command.pull(api) {
                Some(pull) => {
                    feast_offline::pull(&self.store, caller, pull, self.options.threads).await?
                }
                None => return Err(invalid(format!("persist: '{api}' is not a retrieval"))),
            },
            None => return Err(invalid("persist: retrieve_func is missing")),
        };
        feast_offline::persist(&self.store, caller, target.as_deref(), overwrite, retrieval).await
    }

    /// Reads a client's entity-table stream; the first message carries the descriptor. The
    /// table is refused as soon as it is over the upload limits.
    async fn read_upload(
        &self,
        stream: Streaming<FlightData>,
    ) -> Result<(FlightDescriptor, RecordBatch), Status> {
        let mut stream = stream;
        let first = stream
            .message()
            .await?
            .ok_or_else(|| invalid("empty stream: expected a descriptor and an entity table"))?;
        let descriptor = first
            .flight_descriptor
            .clone()
            .ok_or_else(|| invalid("the first message must carry a command descriptor"))?;
        let rest = stream.map_err(|s| FlightError::Tonic(Box::new(s)));
        // pyarrow sends the descriptor alone in a message of its own, before the schema.
        let first = (!first.data_header.is_empty()).then_some(Ok(first));
        let data = futures::stream::iter(first).chain(rest);
        let mut decoder = FlightRecordBatchStream::new_from_flight_data(data);
        let mut batches = Vec::new();
        let (mut rows, mut bytes) = (0usize, 0usize);
        while let Some(batch) = decoder.next().await {
            let batch = batch.map_err(|e| invalid(format!("unreadable entity table: {e}")))?;
            rows += batch.num_rows();
            bytes += data_bytes(&batch);
            if rows > self.uploads.max_rows {
                return Err(over_limit("rows", self.uploads.max_rows, "max_upload_rows"));
            }
            if bytes > self.uploads.max_bytes {
                return Err(over_limit(
                    "MiB",
                    self.uploads.max_bytes >> 20,
                    "max_upload_mb",
                ));
            }
            batches.push(batch);
        }
        let schema = decoder
            .schema()
            .cloned()
            .or_else(|| batches.first().map(RecordBatch::schema))
            .unwrap_or_else(|| Arc::new(Schema::empty()));
        let table = concat_batches(&schema, &batches)
            .map_err(|e| invalid(format!("unreadable entity table: {e}")))?;
        Ok((descriptor, table))
    }
}

/// Checks a Feast command's api and project.
fn check_feast(command: &FeastCommand, defs: &Definitions) -> Result<(), Status> {
    if !FEAST_APIS.contains(&command.api.as_str()) {
        return Err(Status::unimplemented(format!(
            "Feast offline api '{}' is not supported by Quiver (it answers {})",
            command.api,
            FEAST_APIS.join(", ")
        )));
    }
    if command.entity_df_sql.is_some() {
        return Err(Status::unimplemented(
            "entity_df_sql is not supported: Quiver runs no SQL; send the entity rows as a DataFrame, or a start_date and end_date",
        ));
    }
    match &command.project {
        Some(p) if *p != defs.project => Err(Status::not_found(format!(
            "unknown project '{p}' (this server serves '{}')",
            defs.project
        ))),
        _ => Ok(()),
    }
}

fn minimal_entity_schema(keys: impl Iterator<Item = Field>) -> Schema {
    let mut fields: Vec<Field> = keys.collect();
    fields.push(Field::new(
        EVENT_TIMESTAMP,
        DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
        true,
    ));
    Schema::new(fields)
}

/// A training set's batches, or the error that ended it.
pub(crate) type Batches = BoxStream<'static, Result<RecordBatch, FlightError>>;

/// A training set in progress, recorded in the metrics when it is dropped: it succeeded if
/// its batches ended without an error.
struct TrainingSetRecord {
    store: Arc<FeatureStore>,
    started: Instant,
    rows: u64,
    failed: bool,
    finished: bool,
}

impl TrainingSetRecord {
    /// `batches`, counting their rows; the record is dropped with the stream.
    fn measure(self, batches: Batches) -> Batches {
        futures::stream::unfold((batches, self), |(mut batches, mut record)| async move {
            let item = batches.next().await;
            match &item {
                Some(Ok(batch)) => record.rows += batch.num_rows() as u64,
                Some(Err(_)) => record.failed = true,
                None => record.finished = true,
            }
            item.map(|item| (item, (batches, record)))
        })
        .boxed()
    }
}

impl Drop for TrainingSetRecord {
    fn drop(&mut self) {
        self.store.metrics().training_set(
            self.finished && !self.failed,
            self.rows,
            self.started.elapsed(),
        );
    }
}

/// Batches produced on a blocking thread (`blocking_send`), as a stream.
pub(crate) fn batch_channel() -> (
    tokio::sync::mpsc::Sender<Result<RecordBatch, FlightError>>,
    Batches,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let batches = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    (tx, batches.boxed())
}

/// A training set's batches as Flight data.
fn encode(schema: SchemaRef, batches: Batches) -> BoxStream<'static, Result<FlightData, Status>> {
    FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .with_max_flight_data_size(4 << 20)
        .build(batches)
        .map_err(|e| match e {
            FlightError::Tonic(status) => *status,
            other => Status::internal(other.to_string()),
        })
        .boxed()
}

/// The training set of a time range, joined slice by slice on a blocking thread
/// ([`PointInTimeJoin::run_range`]) and produced as a stream.
async fn stream_range(
    snapshot: Arc<Snapshot>,
    sources: Arc<quiver_source::Sources>,
    features: Vec<ResolvedFeature>,
    options: JoinOptions,
    start: i64,
    end: i64,
) -> Result<(SchemaRef, Batches), Status> {
    let (schema_tx, schema_rx) = tokio::sync::oneshot::channel();
    let (tx, batches) = batch_channel();
    tokio::task::spawn_blocking(move || {
        let fail = |e: &quiver_offline::OfflineError| FlightError::Tonic(Box::new(status(e)));
        let join = match PointInTimeJoin::new(&snapshot.defs, &sources, features, options)
            .and_then(|join| Ok((join.range_schema()?, join)))
        {
            Ok((schema, join)) => {
                let _ = schema_tx.send(Ok(schema));
                join
            }
            Err(e) => {
                let _ = schema_tx.send(Err(status(&e)));
                return;
            }
        };
        let outcome = join.run_range(start, end, &mut |batch| tx.blocking_send(Ok(batch)).is_ok());
        if let Err(e) = outcome {
            let _ = tx.blocking_send(Err(fail(&e)));
        }
    });
    let schema = schema_rx
        .await
        .map_err(|_| Status::internal("the join's task ended early"))??;
    Ok((schema, batches))
}

fn schema_result(schema: &Schema) -> Result<SchemaResult, Status> {
    SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(|e: arrow::error::ArrowError| Status::internal(e.to_string()))
}

fn flight_info(
    schema: &Schema,
    descriptor: FlightDescriptor,
    ticket: Bytes,
) -> Result<FlightInfo, Status> {
    FlightInfo::new()
        .try_with_schema(schema)
        .map_err(|e| Status::internal(e.to_string()))
        .map(|info| {
            info.with_descriptor(descriptor)
                .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(ticket)))
                .with_ordered(true)
        })
}

#[tonic::async_trait]
impl FlightService for TrainingSetService {
    type HandshakeStream = BoxStream<'static, Result<HandshakeResponse, Status>>;
    type ListFlightsStream = BoxStream<'static, Result<FlightInfo, Status>>;
    type DoGetStream = BoxStream<'static, Result<FlightData, Status>>;
    type DoPutStream = BoxStream<'static, Result<PutResult, Status>>;
    type DoActionStream = BoxStream<'static, Result<arrow_flight::Result, Status>>;
    type ListActionsStream = BoxStream<'static, Result<ActionType, Status>>;
    type DoExchangeStream = BoxStream<'static, Result<FlightData, Status>>;

    async fn handshake(
        &self,
        _request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        Err(Status::unimplemented(
            "no authentication: handshake is not needed",
        ))
    }

    async fn list_flights(
        &self,
        request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        let caller = caller_of(request.extensions());
        let snapshot = self.snapshot();
        let mut infos = Vec::new();
        // Only the views the caller may read.
        let readable = |name: &str| {
            snapshot
                .authorizer
                .decide(
                    &caller,
                    Permitted::ReadOffline,
                    ObjectKind::FeatureView,
                    name,
                )
                .is_some()
        };
        for view in snapshot
            .defs
            .feature_views
            .values()
            .filter(|v| v.offline && readable(&v.name))
        {
            let command = Command {
                features: Some(vec![format!("{}:*", view.name)]),
                feature_service: None,
                full_feature_names: false,
                as_of_created: false,
                entities: None,
                start: None,
                end: None,
                out: None,
                engine: None,
            };
            let schema = self.command_schema(&caller, command).await?;
            let ticket = serde_json::json!({"features": [format!("{}:*", view.name)]}).to_string();
            infos.push(Ok(flight_info(
                &schema,
                FlightDescriptor::new_path(vec![view.name.clone()]),
                Bytes::from(ticket),
            )?));
        }
        Ok(Response::new(futures::stream::iter(infos).boxed()))
    }

    async fn get_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let caller = caller_of(request.extensions());
        let descriptor = request.into_inner();
        match parse_command(&descriptor.cmd)? {
            ParsedCommand::Native(command) => {
                let schema = self.command_schema(&caller, command).await?;
                let ticket = descriptor.cmd.clone();
                Ok(Response::new(flight_info(&schema, descriptor, ticket)?))
            }
            ParsedCommand::Feast(command) => {
                check_feast(&command, &self.snapshot().defs)?;
                // Feast reads the schema from the stream; the ticket is the command itself.
                let ticket = descriptor.cmd.clone();
                Ok(Response::new(flight_info(
                    &Schema::empty(),
                    descriptor,
                    ticket,
                )?))
            }
        }
    }

    async fn poll_flight_info(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        Err(Status::unimplemented(
            "poll_flight_info: use get_flight_info",
        ))
    }

    async fn get_schema(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        let caller = caller_of(request.extensions());
        match parse_command(&request.into_inner().cmd)? {
            ParsedCommand::Native(command) => {
                let schema = self.command_schema(&caller, command).await?;
                Ok(Response::new(schema_result(&schema)?))
            }
            ParsedCommand::Feast(_) => Err(Status::unimplemented(
                "get_schema is not part of Feast's protocol",
            )),
        }
    }

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        let caller = caller_of(request.extensions());
        let ticket = request.into_inner().ticket;
        let stream = match parse_command(&ticket)? {
            ParsedCommand::Native(command) => self.run_ticket(&caller, command).await?,
            ParsedCommand::Feast(command) => {
                let uploaded = self
                    .pending
                    .lock()
                    .map_err(|_| Status::internal("poisoned lock"))?
                    .remove(&ticket)
                    .map(|(_, t)| t);
                let (schema, batches) =
                    self.feast_training_set(&caller, *command, uploaded).await?;
                encode(schema, batches)
            }
        };
        Ok(Response::new(stream))
    }

    async fn do_put(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        let caller = caller_of(request.extensions());
        let (descriptor, table) = self.read_upload(request.into_inner()).await?;
        let ParsedCommand::Feast(command) = parse_command(&descriptor.cmd)? else {
            return Err(invalid(
                "DoPut takes Feast commands; use DoExchange for Quiver's training-set command",
            ));
        };
        let snapshot = self.snapshot();
        check_feast(&command, &snapshot.defs)?;
        match command.api.as_str() {
            VALIDATE_SOURCE => {
                feast_offline::source_schema(
                    &self.store,
                    &caller,
                    command.data_source_proto.as_deref(),
                )
                .await?;
            }
            WRITE_BATCH => {
                feast_offline::write_batch(
                    &self.store,
                    &caller,
                    &command.feature_view_names,
                    table,
                )
                .await?;
            }
            WRITE_LOGGED => {
                feast_offline::write_logged_features(
                    &self.store,
                    &caller,
                    command.feature_service_name.as_deref(),
                    table,
                )
                .await?;
            }
            PERSIST => self.persist(&caller, *command, table).await?,
            HISTORICAL => {
                self.hold_upload(&caller, &snapshot, &command, descriptor.cmd, table)?;
            }
            api => {
                return Err(invalid(format!(
                    "Feast's '{api}' is sent with DoExchange, not DoPut"
                )));
            }
        }
        Ok(Response::new(futures::stream::empty().boxed()))
    }

    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        Err(Status::unimplemented(format!(
            "action '{}' is not supported",
            request.into_inner().r#type
        )))
    }

    async fn list_actions(
        &self,
        _request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        Ok(Response::new(futures::stream::empty().boxed()))
    }

    async fn do_exchange(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        let caller = caller_of(request.extensions());
        let (descriptor, table) = self.read_upload(request.into_inner()).await?;
        let command = match parse_command(&descriptor.cmd)? {
            ParsedCommand::Native(command) => command,
            // Feast's remote offline store (0.5x and later) sends its reads this way.
            ParsedCommand::Feast(command) => {
                check_feast(&command, &self.snapshot().defs)?;
                let (schema, batches) = match command.api.as_str() {
                    SOURCE_COLUMNS => {
                        let schema = feast_offline::source_schema(
                            &self.store,
                            &caller,
                            command.data_source_proto.as_deref(),
                        )
                        .await?;
                        let table = feast_offline::columns_table(&schema)?;
                        (table.schema(), futures::stream::iter([Ok(table)]).boxed())
                    }
                    HISTORICAL => {
                        self.feast_training_set(&caller, *command, Some(table))
                            .await?
                    }
                    api => match command.pull(api) {
                        Some(pull) => {
                            feast_offline::pull(&self.store, &caller, pull, self.options.threads)
                                .await?
                        }
                        None => {
                            return Err(invalid(format!(
                                "Feast's '{api}' is sent with DoPut, not DoExchange"
                            )));
                        }
                    },
                };
                return Ok(Response::new(encode(schema, batches)));
            }
        };
        if command.entities.is_some() || command.start.is_some() || command.end.is_some() {
            return Err(invalid(
                "DoExchange joins onto the streamed entity table; \"entities\", \"start\" and \"end\" belong to DoGet",
            ));
        }
        let snapshot = self.snapshot();
        let features = resolve(&snapshot.defs, &command)?;
        let (schema, batches) = self
            .training_set(
                &caller,
                snapshot,
                (features, command.feature_service.as_deref()),
                command.as_of_created,
                engine_of(&command)?,
                EntityRows::Table(table),
            )
            .await?;
        let (schema, batches) = self.maybe_write_out(command.out, schema, batches).await?;
        Ok(Response::new(encode(schema, batches)))
    }
}
