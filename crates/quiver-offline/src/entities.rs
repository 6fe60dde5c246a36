//! The entity table of a training-set request: which column is the event time, and checks
//! that it carries every join key the requested views need.

use std::fs::File;
use std::path::Path;

use arrow::array::{RecordBatch, RecordBatchReader};
use arrow::compute::concat_batches;
use arrow::datatypes::{DataType, Schema};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::error::{OfflineError, Result};

/// Reads an entity table from a Parquet file into one batch; errors name the file.
pub fn read_entity_file(path: &Path) -> Result<RecordBatch> {
    let unreadable = |e: &dyn std::fmt::Display| {
        OfflineError::invalid(format!("entity file {}: {e}", path.display()))
    };
    let file = File::open(path).map_err(|e| unreadable(&e))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| unreadable(&e))?
        .build()
        .map_err(|e| unreadable(&e))?;
    let schema = reader.schema();
    let batches = reader
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| unreadable(&e))?;
    concat_batches(&schema, &batches).map_err(|e| unreadable(&e))
}

/// The preferred name of the entity table's event-time column (Feast's).
pub const EVENT_TIMESTAMP: &str = "event_timestamp";

/// The event-time column of an entity table: `event_timestamp` if there is one, else the only
/// timestamp column.
pub fn event_timestamp_column(schema: &Schema) -> Result<usize> {
    if let Ok(i) = schema.index_of(EVENT_TIMESTAMP) {
        return match schema.field(i).data_type() {
            DataType::Timestamp(_, _) => Ok(i),
            other => Err(OfflineError::invalid(format!(
                "entity table column '{EVENT_TIMESTAMP}' has type {other}, expected a timestamp"
            ))),
        };
    }
    let mut candidates = schema
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| matches!(f.data_type(), DataType::Timestamp(_, _)));
    match (candidates.next(), candidates.next()) {
        (Some((i, _)), None) => Ok(i),
        (None, _) => Err(OfflineError::invalid(format!(
            "entity table has no timestamp column (expected '{EVENT_TIMESTAMP}')"
        ))),
        (Some((_, a)), Some((_, b))) => Err(OfflineError::invalid(format!(
            "entity table has several timestamp columns ('{}', '{}', ...) and none is named '{EVENT_TIMESTAMP}'",
            a.name(),
            b.name()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{Field, TimeUnit};

    fn ts(name: &str) -> Field {
        Field::new(name, DataType::Timestamp(TimeUnit::Nanosecond, None), true)
    }

    #[test]
    fn picks_event_timestamp_then_the_only_timestamp() {
        let s = Schema::new(vec![ts("a"), ts(EVENT_TIMESTAMP)]);
        assert_eq!(event_timestamp_column(&s).unwrap(), 1);
        let s = Schema::new(vec![Field::new("id", DataType::Int64, true), ts("when")]);
        assert_eq!(event_timestamp_column(&s).unwrap(), 1);
    }

    #[test]
    fn explains_missing_or_ambiguous_times() {
        let none = Schema::new(vec![Field::new("id", DataType::Int64, true)]);
        assert!(
            event_timestamp_column(&none)
                .unwrap_err()
                .to_string()
                .contains("no timestamp")
        );
        let two = Schema::new(vec![ts("a"), ts("b")]);
        assert!(
            event_timestamp_column(&two)
                .unwrap_err()
                .to_string()
                .contains("several")
        );
        let wrong = Schema::new(vec![Field::new(EVENT_TIMESTAMP, DataType::Utf8, true)]);
        assert!(
            event_timestamp_column(&wrong)
                .unwrap_err()
                .to_string()
                .contains("Utf8")
        );
    }
}
