//! Feast's remote offline store apis other than `get_historical_features`, answered from
//! Quiver's sources (the commands and answers of Feast 0.67's `remote.py` and
//! `offline_server.py`):
//! - `validate_data_source` and `get_table_column_names_and_types_from_data_source` (what
//!   `feast apply` sends to infer a view's schema): the data source is Feast's `DataSource`
//!   proto as JSON; file sources under the data root are answered;
//! - `pull_latest_from_table_or_query` and `pull_all_from_table_or_query` (what
//!   `feast materialize` reads): a Quiver source by name, or a file under the data root by path
//!   (a saved dataset's), rows in an inclusive window ([`quiver_offline::pull`]);
//! - `offline_write_batch`: rows shaped like a view's source files, appended to it by the
//!   offline push path ([`FeatureStore::append_batch`]);
//! - `write_logged_features`: a feature service's logged rows, a new Parquet file of its
//!   `logging.destination`, else of `feature_logs/<service>/`, in the data root;
//! - `persist`: a retrieval written whole as one Parquet file, the saved dataset's storage
//!   (a Quiver source's file, or a path under the data root).

use std::fs::File;
use std::sync::Arc;

use arrow::array::{RecordBatch, StringArray};
use arrow::datatypes::{DataType, Schema, SchemaRef, TimeUnit};
use arrow_flight::error::FlightError;
use futures::StreamExt;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use quiver_core::{Action, ObjectKind, parse_time_nanos};
use quiver_offline::{PullMode, PullRequest};
use quiver_ops::{Caller, FeatureStore};
use tonic::Status;

use crate::error::{join_status, status};
use crate::flight::{Batches, batch_channel};
use crate::grpc::blocking;

/// Where `write_logged_features` writes, under the data root: one folder per feature service.
const FEATURE_LOGS: &str = "feature_logs";

/// The fields of a Feast pull command (`pull_latest_from_table_or_query`,
/// `pull_all_from_table_or_query`).
#[derive(Debug, Clone)]
pub(crate) struct PullCommand {
    pub(crate) data_source_name: Option<String>,
    pub(crate) join_key_columns: Vec<String>,
    pub(crate) feature_name_columns: Vec<String>,
    pub(crate) timestamp_field: Option<String>,
    pub(crate) created_timestamp_column: Option<String>,
    pub(crate) start_date: Option<String>,
    pub(crate) end_date: Option<String>,
    pub(crate) mode: PullMode,
}

/// Nanoseconds since the epoch of a window end (`None`: open).
fn window_end(text: Option<&str>, field: &str, open: i64) -> Result<i64, Status> {
    text.map_or(Ok(open), |t| {
        parse_time_nanos(t).map_err(|e| Status::invalid_argument(format!("{field}: {e}")))
    })
}

/// The rows of a pull from a Quiver source, once `caller` may read it offline: its schema,
/// and its batches produced on the blocking pool.
pub(crate) async fn pull(
    store: &Arc<FeatureStore>,
    caller: &Caller,
    command: PullCommand,
    threads: usize,
) -> Result<(SchemaRef, Batches), Status> {
    let name = command
        .data_source_name
        .ok_or_else(|| Status::invalid_argument("data_source_name is missing"))?;
    let snapshot = store.snapshot();
    let source = match snapshot.defs.sources.get(&name) {
        Some(source) => source.clone(),
        // Feast names a saved dataset's file source by its path.
        None => path_source(store, &name, command.timestamp_field.as_deref())
            .ok_or_else(|| {
                Status::not_found(format!(
                    "no data source '{name}' in project '{}', and no file or folder of that name under the data root",
                    snapshot.defs.project
                ))
            })?,
    };
    authorize(
        store,
        &snapshot,
        caller,
        Action::ReadOffline,
        (ObjectKind::Source, &name),
    )?;
    let request = PullRequest {
        keys: command.join_key_columns,
        features: command.feature_name_columns,
        timestamp_field: command
            .timestamp_field
            .unwrap_or_else(|| source.timestamp_field.clone()),
        created_timestamp_column: command.created_timestamp_column,
        start: window_end(command.start_date.as_deref(), "start_date", i64::MIN)?,
        end: window_end(command.end_date.as_deref(), "end_date", i64::MAX)?,
        mode: command.mode,
    };
    let sources = Arc::clone(store.sources());
    let (schema_tx, schema_rx) = tokio::sync::oneshot::channel();
    let (tx, batches) = batch_channel();
    tokio::task::spawn_blocking(move || {
        let rows = match quiver_offline::pull(&sources, &source, &request, threads) {
            Ok(rows) => {
                let _ = schema_tx.send(Ok(rows.schema()));
                rows
            }
            Err(e) => {
                let _ = schema_tx.send(Err(status(&e)));
                return;
            }
        };
        for batch in rows {
            let item = batch.map_err(|e| FlightError::Tonic(Box::new(status(&e))));
            if tx.blocking_send(item).is_err() {
                break;
            }
        }
    });
    let schema = schema_rx
        .await
        .map_err(|_| Status::internal("the pull's task ended early"))??;
    Ok((schema, batches))
}

/// Checks that `caller` may do `action` on one object.
fn authorize(
    store: &FeatureStore,
    snapshot: &quiver_ops::Snapshot,
    caller: &Caller,
    action: Action,
    object: (ObjectKind, &str),
) -> Result<(), Status> {
    store
        .authorize(snapshot, caller, action, &[object])
        .map_err(|e| status(&e))
}

/// A source for a file or folder `name` under the data root that no source is defined for,
/// with `timestamp_field` as its event time.
fn path_source(
    store: &FeatureStore,
    name: &str,
    timestamp_field: Option<&str>,
) -> Option<quiver_core::Source> {
    let path = name.strip_prefix("file://").unwrap_or(name);
    store
        .sources()
        .resolve(path)
        .ok()?
        .try_exists()
        .ok()?
        .then_some(())?;
    Some(quiver_core::Source {
        name: name.to_owned(),
        path: path.to_owned(),
        timestamp_field: timestamp_field?.to_owned(),
        created_timestamp_column: None,
        field_mapping: Default::default(),
        description: String::new(),
        owner: String::new(),
        tags: Default::default(),
    })
}

/// `offline_write_batch`: appends `table` to feature view `view`'s source.
pub(crate) async fn write_batch(
    store: &Arc<FeatureStore>,
    caller: &Caller,
    views: &[String],
    table: RecordBatch,
) -> Result<(), Status> {
    let [view] = views else {
        return Err(Status::invalid_argument(
            "feature_view_names must name exactly one feature view",
        ));
    };
    let (store, caller, view) = (Arc::clone(store), caller.clone(), view.clone());
    blocking(move || {
        store
            .append_batch(&caller, &view, &table)
            .map_err(|e| status(&e))
    })
    .await?;
    Ok(())
}

/// `write_logged_features`: `table` as a new file of `feature_logs/<service>/`.
pub(crate) async fn write_logged_features(
    store: &Arc<FeatureStore>,
    caller: &Caller,
    service: Option<&str>,
    table: RecordBatch,
) -> Result<(), Status> {
    let service =
        service.ok_or_else(|| Status::invalid_argument("feature_service_name is missing"))?;
    let snapshot = store.snapshot();
    let Some(declared) = snapshot.defs.feature_services.get(service) else {
        return Err(Status::not_found(format!(
            "no feature service '{service}' in project '{}'",
            snapshot.defs.project
        )));
    };
    // Beside what Quiver's own server logs for the service, when it declares a destination.
    let folder = declared.logging.as_ref().map_or_else(
        || format!("{FEATURE_LOGS}/{service}"),
        |l| l.destination.clone(),
    );
    authorize(
        store,
        &snapshot,
        caller,
        Action::WriteOffline,
        (ObjectKind::FeatureService, service),
    )?;
    let store = Arc::clone(store);
    blocking(move || {
        let sources = store.sources();
        let dir = sources.resolve(&folder).map_err(|e| status(&e))?;
        std::fs::create_dir_all(&dir)
            .map_err(|e| Status::internal(format!("{}: {e}", dir.display())))?;
        sources.write_file(&dir, &table).map_err(|e| status(&e))
    })
    .await?;
    Ok(())
}

/// `persist`: writes a retrieval's batches as the saved dataset's file. `target` names a
/// Quiver source (its file) or is a path under the data root (what Feast sends for a
/// `SavedDatasetFileStorage`); the caller needs `write_offline` on it as a source.
pub(crate) async fn persist(
    store: &Arc<FeatureStore>,
    caller: &Caller,
    target: Option<&str>,
    allow_overwrite: bool,
    (schema, batches): (SchemaRef, Batches),
) -> Result<(), Status> {
    let target = target.ok_or_else(|| Status::invalid_argument("data_source_name is missing"))?;
    let snapshot = store.snapshot();
    let path = snapshot
        .defs
        .sources
        .get(target)
        .map_or(target, |s| s.path.as_str());
    let path = path.strip_prefix("file://").unwrap_or(path).to_owned();
    authorize(
        store,
        &snapshot,
        caller,
        Action::WriteOffline,
        (ObjectKind::Source, target),
    )?;
    let store = Arc::clone(store);
    let name = path.clone();
    write_batches(batches, name, move |rows| {
        store
            .sources()
            .write_dataset(&path, &schema, rows, allow_overwrite)
    })
    .await
    .map(|_| ())
}

/// Runs `write` on a blocking thread over `batches` as they arrive. When the stream's own
/// error is what stopped the write, that error is the answer (not the writer's report of it);
/// `name` names the data in the writer's message.
pub(crate) async fn write_batches<T: Send + 'static>(
    mut batches: Batches,
    name: String,
    write: impl FnOnce(
        &mut dyn Iterator<Item = quiver_source::Result<RecordBatch>>,
    ) -> quiver_source::Result<T>
    + Send
    + 'static,
) -> Result<T, Status> {
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let mut failed: Option<Status> = None;
        let mut rows = std::iter::from_fn(|| match runtime.block_on(batches.next())? {
            Ok(batch) => Some(Ok(batch)),
            Err(e) => {
                let message = e.to_string();
                failed = Some(match e {
                    FlightError::Tonic(s) => *s,
                    other => Status::internal(other.to_string()),
                });
                Some(Err(quiver_source::SourceError::InvalidRows {
                    source_name: name.clone(),
                    message,
                }))
            }
        });
        let written = write(&mut rows);
        match (written, failed) {
            (Ok(value), _) => Ok(value),
            (Err(_), Some(s)) => Err(s),
            (Err(e), None) => Err(status(&e)),
        }
    })
    .await
    .map_err(|e| join_status(&e))?
}

/// The name and Parquet schema of a Feast file data source, once `caller` may read it.
pub(crate) async fn source_schema(
    store: &Arc<FeatureStore>,
    caller: &Caller,
    data_source_proto: Option<&str>,
) -> Result<Schema, Status> {
    let proto: serde_json::Value = serde_json::from_str(data_source_proto.unwrap_or(""))
        .map_err(|e| Status::invalid_argument(format!("data_source_proto is not JSON: {e}")))?;
    let name = proto["name"].as_str().unwrap_or("").to_owned();
    let uri = proto["fileOptions"]["uri"].as_str().ok_or_else(|| {
        Status::unimplemented(format!(
            "data source '{name}': only file sources are supported by Quiver's offline store"
        ))
    })?;
    let path = uri.strip_prefix("file://").unwrap_or(uri).to_owned();
    let snapshot = store.snapshot();
    authorize(
        store,
        &snapshot,
        caller,
        Action::ReadOffline,
        (ObjectKind::Source, &name),
    )?;
    let store = Arc::clone(store);
    blocking(move || {
        let files = quiver_source::source_files(store.sources().data_root(), &path)
            .map_err(|e| status(&e))?;
        let file = File::open(&files[0]).map_err(|e| Status::internal(e.to_string()))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(|e| Status::invalid_argument(format!("data source '{name}' ({path}): {e}")))?;
        Ok(reader.schema().as_ref().clone())
    })
    .await
}

/// Feast's answer to `get_table_column_names_and_types_from_data_source`: a `name` and a
/// `type` column, the types as pyarrow writes them.
pub(crate) fn columns_table(schema: &Schema) -> Result<RecordBatch, Status> {
    let names = StringArray::from_iter_values(schema.fields().iter().map(|f| f.name().as_str()));
    let types =
        StringArray::from_iter_values(schema.fields().iter().map(|f| pyarrow_name(f.data_type())));
    RecordBatch::try_from_iter([
        ("name", Arc::new(names) as arrow::array::ArrayRef),
        ("type", Arc::new(types) as arrow::array::ArrayRef),
    ])
    .map_err(|e| Status::internal(e.to_string()))
}

/// `str(pyarrow type)`: what Feast maps to its value types.
fn pyarrow_name(t: &DataType) -> String {
    let unit = |u: &TimeUnit| match u {
        TimeUnit::Second => "s",
        TimeUnit::Millisecond => "ms",
        TimeUnit::Microsecond => "us",
        TimeUnit::Nanosecond => "ns",
    };
    match t {
        DataType::Boolean => "bool".into(),
        DataType::Int8 => "int8".into(),
        DataType::Int16 => "int16".into(),
        DataType::Int32 => "int32".into(),
        DataType::Int64 => "int64".into(),
        DataType::UInt8 => "uint8".into(),
        DataType::UInt16 => "uint16".into(),
        DataType::UInt32 => "uint32".into(),
        DataType::UInt64 => "uint64".into(),
        DataType::Float16 => "halffloat".into(),
        DataType::Float32 => "float".into(),
        DataType::Float64 => "double".into(),
        DataType::Utf8 | DataType::Utf8View => "string".into(),
        DataType::LargeUtf8 => "large_string".into(),
        DataType::Binary | DataType::BinaryView => "binary".into(),
        DataType::LargeBinary => "large_binary".into(),
        DataType::Date32 => "date32[day]".into(),
        DataType::Date64 => "date64[ms]".into(),
        DataType::Timestamp(u, None) => format!("timestamp[{}]", unit(u)),
        DataType::Timestamp(u, Some(tz)) => format!("timestamp[{}, tz={tz}]", unit(u)),
        DataType::List(f) | DataType::LargeList(f) => {
            format!("list<{}: {}>", f.name(), pyarrow_name(f.data_type()))
        }
        other => other.to_string().to_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_are_named_as_pyarrow_names_them() {
        let list = DataType::List(Arc::new(arrow::datatypes::Field::new(
            "item",
            DataType::Int64,
            true,
        )));
        for (t, name) in [
            (DataType::Int64, "int64"),
            (DataType::Float64, "double"),
            (DataType::Float32, "float"),
            (DataType::Utf8, "string"),
            (
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                "timestamp[us, tz=UTC]",
            ),
            (
                DataType::Timestamp(TimeUnit::Nanosecond, None),
                "timestamp[ns]",
            ),
            (list, "list<item: int64>"),
        ] {
            assert_eq!(pyarrow_name(&t), name);
        }
    }
}
