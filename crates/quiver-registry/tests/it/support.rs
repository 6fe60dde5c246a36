//! A throwaway feature repository with one Parquet file of every column type the tests need.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float32Array, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use parquet::arrow::ArrowWriter;
use quiver_core::Definitions;
use quiver_registry::{RegistryError, RepoConfig, load_definitions};
use tempfile::TempDir;

pub struct TestRepo {
    dir: TempDir,
}

/// Definitions that are valid against [`TestRepo`]'s data: a driver view, a composite-key view
/// (driver + an entity with two join keys), and a service.
pub const VALID: &str = r#"
entities:
  - name: driver
    join_keys: [{name: driver_id, type: int64}]
  - name: place
    join_keys:
      - {name: region, type: string}
      - {name: zone, type: int32}
sources:
  - name: stats
    path: data/stats.parquet
    timestamp_field: event_timestamp
    created_timestamp_column: created
    field_mapping: {trips: avg_daily_trips}
feature_views:
  - name: driver_stats
    entities: [driver]
    source: stats
    ttl: 1d
    features:
      - {name: conv_rate, type: float32}
      - {name: avg_daily_trips, type: int64}
  - name: driver_place
    entities: [driver, place]
    source: stats
    ttl: 36h
    features:
      - {name: conv_rate, type: float64}
feature_services:
  - name: model_a
    features: ["driver_stats:*", "driver_place:conv_rate"]
"#;

impl TestRepo {
    pub fn new() -> Self {
        let dir = TempDir::new().unwrap();
        std::fs::write(dir.path().join("quiver.yaml"), "project: test\n").unwrap();
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        write_stats(&dir.path().join("data/stats.parquet"));
        Self { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, name: &str, text: &str) -> &Self {
        let path: PathBuf = self.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
        self
    }

    pub fn load(&self) -> Result<Definitions, RegistryError> {
        let config = RepoConfig::load(self.path())?;
        let sources = quiver_source::Sources::new(config.data_root(self.path()));
        load_definitions(self.path(), &config, &sources)
    }

    /// The rendered diagnostics of an invalid repository.
    pub fn errors(&self) -> Vec<String> {
        match self.load() {
            Err(RegistryError::Invalid(diags)) => diags.iter().map(ToString::to_string).collect(),
            other => panic!("expected validation errors, got {other:?}"),
        }
    }
}

/// Asserts that exactly one of `errors` contains every fragment.
#[track_caller]
pub fn assert_error(errors: &[String], fragments: &[&str]) {
    let hits: Vec<_> = errors
        .iter()
        .filter(|e| fragments.iter().all(|f| e.contains(f)))
        .collect();
    assert_eq!(
        hits.len(),
        1,
        "expected one error containing {fragments:?}, got:\n{}",
        errors.join("\n")
    );
}

fn write_stats(path: &Path) {
    let ts = |v: Vec<i64>| -> ArrayRef {
        Arc::new(TimestampMicrosecondArray::from(v).with_timezone("UTC"))
    };
    let tz = Some("UTC".into());
    let schema = Schema::new(vec![
        Field::new("driver_id", DataType::Int64, false),
        Field::new("region", DataType::Utf8, false),
        Field::new("zone", DataType::Int32, false),
        Field::new(
            "event_timestamp",
            DataType::Timestamp(TimeUnit::Microsecond, tz.clone()),
            false,
        ),
        Field::new(
            "created",
            DataType::Timestamp(TimeUnit::Microsecond, tz),
            false,
        ),
        Field::new("conv_rate", DataType::Float32, true),
        Field::new("trips", DataType::Int64, false),
        Field::new("label", DataType::Utf8, true),
        Field::new("ts_as_int", DataType::Int64, false),
    ]);
    let batch = RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(Int64Array::from(vec![1, 2])),
            Arc::new(StringArray::from(vec!["eu", "us"])),
            Arc::new(Int32Array::from(vec![1, 2])),
            ts(vec![1_000_000, 2_000_000]),
            ts(vec![1_000_000, 2_000_000]),
            Arc::new(Float32Array::from(vec![Some(0.5), None])),
            Arc::new(Int64Array::from(vec![3, 4])),
            Arc::new(StringArray::from(vec![Some("a"), None])),
            Arc::new(Int64Array::from(vec![1, 2])),
        ],
    )
    .unwrap();
    let mut w = ArrowWriter::try_new(File::create(path).unwrap(), batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}
