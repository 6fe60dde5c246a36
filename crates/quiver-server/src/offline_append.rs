//! Appending pushed rows to a view's offline source, so training sees what serving saw.
//!
//! The rows become a new Parquet file in the source's folder, with exactly the schema of the
//! folder's existing files (so the source stays valid for `quiver apply`), written under a
//! hidden name and renamed into place: readers never see a partial file.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Float64Builder, Int64Builder, RecordBatch,
    StringBuilder, TimestampMicrosecondBuilder, new_null_array,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field};
use parquet::arrow::ArrowWriter;
use quiver_core::{Definitions, FeatureView, JoinKey};
use quiver_registry::source_files;
use tonic::Status;

use crate::online::{CREATED_COLUMNS, Loose, TIME_COLUMNS};

fn failed(message: String) -> Status {
    Status::failed_precondition(message)
}

/// Writes `columns` (named by key, feature and time names) as a new file of `view`'s source;
/// returns its path.
pub(crate) fn append_to_source(
    defs: &Definitions,
    data_root: &Path,
    view: &FeatureView,
    keys: &[JoinKey],
    columns: &[(String, Vec<Loose>)],
) -> Result<PathBuf, Status> {
    let source = defs
        .sources
        .get(&view.source)
        .ok_or_else(|| failed(format!("unknown source '{}'", view.source)))?;
    let folder = data_root.join(&source.path);
    if !folder.is_dir() {
        return Err(failed(format!(
            "source '{}' is the single file '{}'; make it a folder of Parquet files to append pushed rows offline",
            source.name, source.path
        )));
    }
    let existing = source_files(data_root, &source.path).map_err(|e| failed(e.to_string()))?;
    let schema =
        quiver_registry::source::parquet_schema(&existing[0]).map_err(|e| failed(e.to_string()))?;
    let rows = columns.first().map_or(0, |(_, v)| v.len());
    // Source column name → the pushed column it holds.
    let mapped = |source_column: &str| -> Option<&Vec<Loose>> {
        let name = source
            .field_mapping
            .get(source_column)
            .map_or(source_column, String::as_str);
        let wanted: &[&str] = if name == source.timestamp_field {
            TIME_COLUMNS
        } else if source.created_timestamp_column.as_deref() == Some(name) {
            CREATED_COLUMNS
        } else {
            &[]
        };
        columns
            .iter()
            .find(|(n, _)| n == name || wanted.contains(&n.as_str()))
            .map(|(_, v)| v)
            .filter(|_| {
                keys.iter().any(|k| k.name == name)
                    || view.feature(name).is_some()
                    || !wanted.is_empty()
            })
    };
    let arrays = schema
        .fields()
        .iter()
        .map(|field| match mapped(field.name()) {
            Some(values) => column_array(field, values),
            None => Ok(new_null_array(field.data_type(), rows)),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let batch = RecordBatch::try_new(Arc::new(schema.clone()), arrays).map_err(|e| {
        Status::invalid_argument(format!(
            "pushed rows do not fit source '{}': {e}",
            source.name
        ))
    })?;

    let stamp = quiver_online::now_micros();
    let name = format!("push-{stamp}-{}.parquet", std::process::id());
    let tmp = folder.join(format!(".{name}.tmp"));
    let path = folder.join(name);
    let io = |e: &dyn std::fmt::Display| Status::internal(format!("{}: {e}", tmp.display()));
    let file = File::create(&tmp).map_err(|e| io(&e))?;
    let mut writer = ArrowWriter::try_new(file, batch.schema(), None).map_err(|e| io(&e))?;
    writer.write(&batch).map_err(|e| io(&e))?;
    let file = writer.into_inner().map_err(|e| io(&e))?;
    file.sync_all().map_err(|e| io(&e))?;
    std::fs::rename(&tmp, &path).map_err(|e| io(&e))?;
    Ok(path)
}

/// The pushed values of one source column, converted to the column's type.
fn column_array(field: &Field, values: &[Loose]) -> Result<ArrayRef, Status> {
    let bad = |v: &Loose| {
        Status::invalid_argument(format!(
            "column '{}': cannot store {v:?} as {}",
            field.name(),
            field.data_type()
        ))
    };
    let built: ArrayRef = match field.data_type() {
        DataType::Boolean => {
            let mut b = BooleanBuilder::new();
            for v in values {
                match v {
                    Loose::Bool(x) => b.append_value(*x),
                    Loose::Null => b.append_null(),
                    other => return Err(bad(other)),
                }
            }
            Arc::new(b.finish())
        }
        t if t.is_integer() => {
            let mut b = Int64Builder::new();
            for v in values {
                match v {
                    Loose::Int(x) => b.append_value(*x),
                    Loose::Null => b.append_null(),
                    other => return Err(bad(other)),
                }
            }
            Arc::new(b.finish())
        }
        t if t.is_floating() => {
            let mut b = Float64Builder::new();
            for v in values {
                match v {
                    Loose::Float(x) => b.append_value(*x),
                    Loose::Int(x) => b.append_value(*x as f64),
                    Loose::Null => b.append_null(),
                    other => return Err(bad(other)),
                }
            }
            Arc::new(b.finish())
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            let mut b = StringBuilder::new();
            for v in values {
                match v {
                    Loose::String(x) => b.append_value(x),
                    Loose::Null => b.append_null(),
                    other => return Err(bad(other)),
                }
            }
            Arc::new(b.finish())
        }
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => {
            let mut b = BinaryBuilder::new();
            for v in values {
                match v {
                    Loose::Bytes(x) => b.append_value(x),
                    Loose::Null => b.append_null(),
                    other => return Err(bad(other)),
                }
            }
            Arc::new(b.finish())
        }
        DataType::Timestamp(_, tz) => {
            let mut b = TimestampMicrosecondBuilder::new();
            for v in values {
                match v {
                    Loose::Timestamp(x) | Loose::Int(x) => b.append_value(*x),
                    Loose::String(s) => b.append_value(
                        quiver_core::parse_time(s)
                            .map_err(|_| bad(v))?
                            .timestamp_micros(),
                    ),
                    Loose::Null => b.append_null(),
                    other => return Err(bad(other)),
                }
            }
            Arc::new(b.finish().with_timezone_opt(tz.clone()))
        }
        other => {
            return Err(Status::unimplemented(format!(
                "appending pushed values to a {other} column ('{}') is not supported",
                field.name()
            )));
        }
    };
    cast(&built, field.data_type())
        .map_err(|e| Status::invalid_argument(format!("column '{}': {e}", field.name())))
}
