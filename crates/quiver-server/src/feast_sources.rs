//! Feast's remote offline store asking about a data source: `validate_data_source` and
//! `get_table_column_names_and_types_from_data_source` (what `feast apply` sends to infer a
//! view's schema). The data source is Feast's `DataSource` proto as JSON; only file sources
//! under the data root are answered.

use std::fs::File;
use std::sync::Arc;

use arrow::array::{RecordBatch, StringArray};
use arrow::datatypes::{DataType, Schema, TimeUnit};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use quiver_core::{Action, ObjectKind};
use quiver_ops::{Caller, FeatureStore};
use tonic::Status;

use crate::error::status;
use crate::grpc::blocking;

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
    store
        .authorize(
            &snapshot,
            caller,
            Action::ReadOffline,
            &[(ObjectKind::Source, &name)],
        )
        .map_err(|e| status(&e))?;
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
