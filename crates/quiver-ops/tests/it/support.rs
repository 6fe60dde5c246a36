//! A temporary repository: drivers (int64 key), a folder source `stats` read by two views with
//! different features (`rates`: rate, trips; `labels`: label), and an open feature store.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Float32Array, Float64Array, Int64Array, RecordBatch, TimestampNanosecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use parquet::arrow::ArrowWriter;
use quiver_core::now_nanos;
use quiver_online::{FeatureValue, FieldStatus};
use quiver_ops::{
    ApplyOutcome, ApplyRequest, BaseVersion, FeatureSpec, FeatureStore, InputValue, StoreOptions,
};
use quiver_registry::{RepoConfig, load_definitions};
use quiver_source::Sources;
use tempfile::TempDir;

pub const HOUR: i64 = 3_600_000_000_000;

pub const ENTITIES: &str =
    "entities:\n  - name: driver\n    join_keys: [{name: driver_id, type: int64}]\n";
pub const SOURCES: &str = "sources:\n  - name: stats\n    path: data/stats\n    timestamp_field: event_timestamp\n    created_timestamp_column: created\n";
pub const RATES: &str = "  - name: rates\n    entities: [driver]\n    source: stats\n    features:\n      - {name: rate, type: float32}\n      - {name: trips, type: int64}\n";
pub const LABELS: &str = "  - name: labels\n    entities: [driver]\n    source: stats\n    features:\n      - {name: label, type: float64}\n";

/// One source row: driver, event time (ns), rate, trips, label.
pub type StatRow = (i64, i64, f32, i64, f64);

pub struct Repo {
    pub dir: TempDir,
    pub store: FeatureStore,
}

impl Repo {
    /// A repository with `views` (YAML list items) defined and applied, `rows` as its first
    /// source file.
    pub fn new(views: &[&str], rows: &[StatRow]) -> Self {
        Self::with_config("", views, rows)
    }

    /// As [`Repo::new`], with extra `quiver.yaml` settings.
    pub fn with_config(extra_config: &str, views: &[&str], rows: &[StatRow]) -> Self {
        let dir = TempDir::new().unwrap();
        std::fs::write(
            dir.path().join("quiver.yaml"),
            format!("project: p\n{extra_config}"),
        )
        .unwrap();
        std::fs::create_dir_all(dir.path().join("data/stats")).unwrap();
        write_stats(&dir.path().join("data/stats/part-0.parquet"), rows);
        let store = FeatureStore::open(dir.path(), StoreOptions::default()).unwrap();
        let repo = Self { dir, store };
        repo.define(views);
        repo.apply();
        repo
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes the definition file with these views.
    pub fn define(&self, views: &[&str]) {
        std::fs::write(
            self.path().join("defs.yaml"),
            format!("{ENTITIES}{SOURCES}feature_views:\n{}", views.concat()),
        )
        .unwrap();
    }

    /// Validates the definition files and applies them.
    pub fn apply(&self) -> ApplyOutcome {
        let config = RepoConfig::load(self.path()).unwrap();
        let definitions =
            load_definitions(self.path(), &config, &Sources::new(self.path())).unwrap();
        self.store
            .apply(
                &quiver_ops::Caller::Trusted,
                ApplyRequest {
                    definitions,
                    based_on: BaseVersion::Latest,
                    author: "test".into(),
                },
            )
            .unwrap()
    }

    /// `(feature value, status)` of `view:feature` for each driver.
    pub fn read(&self, reference: &str, drivers: &[i64]) -> Vec<(Option<f64>, FieldStatus)> {
        let entities = vec![(
            "driver_id".to_owned(),
            drivers.iter().map(|d| InputValue::Int(*d)).collect(),
        )];
        futures::executor::block_on(self.store.read_online(
            &quiver_ops::Caller::Trusted,
            "test",
            FeatureSpec::Refs(vec![reference.to_owned()]),
            false,
            &entities,
            |_, read| {
                (0..drivers.len())
                    .map(|row| {
                        let cell = read.cell(0, row)?;
                        let value = match cell.value {
                            FeatureValue::Float32(v) => Some(f64::from(v)),
                            FeatureValue::Float64(v) => Some(v),
                            FeatureValue::Int64(v) => Some(v as f64),
                            _ => None,
                        };
                        Ok((value, cell.status))
                    })
                    .collect()
            },
        ))
        .unwrap()
    }

    /// The same repository on a RocksDB store this test also holds (to compact it).
    pub fn reopen_with_rocks(self) -> (Self, Arc<quiver_online::RocksDbStore>) {
        let Self { dir, store } = self;
        drop(store);
        let rocks = Arc::new(
            quiver_online::RocksDbStore::open(
                &dir.path().join("online_store"),
                &quiver_online::RocksDbOptions::default(),
            )
            .unwrap(),
        );
        let config = RepoConfig::load(dir.path()).unwrap();
        let store = FeatureStore::with_store(
            dir.path(),
            config,
            Arc::clone(&rocks) as Arc<dyn quiver_online::OnlineStore>,
            StoreOptions::default(),
        )
        .unwrap();
        (Self { dir, store }, rocks)
    }

    /// The Parquet files of the `stats` source folder.
    pub fn stats_files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.path().join("data/stats"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        files
    }
}

pub fn write_stats(path: &Path, rows: &[StatRow]) {
    let ts = |v: Vec<i64>| Arc::new(TimestampNanosecondArray::from(v).with_timezone("UTC"));
    let tz = Some("UTC".into());
    let schema = Arc::new(Schema::new(vec![
        Field::new("driver_id", DataType::Int64, true),
        Field::new(
            "event_timestamp",
            DataType::Timestamp(TimeUnit::Nanosecond, tz.clone()),
            true,
        ),
        Field::new(
            "created",
            DataType::Timestamp(TimeUnit::Nanosecond, tz),
            true,
        ),
        Field::new("rate", DataType::Float32, true),
        Field::new("trips", DataType::Int64, true),
        Field::new("label", DataType::Float64, true),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
            ts(rows.iter().map(|r| r.1).collect()),
            ts(rows.iter().map(|r| r.1).collect()),
            Arc::new(Float32Array::from_iter_values(rows.iter().map(|r| r.2))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.3))),
            Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.4))),
        ],
    )
    .unwrap();
    let mut w = ArrowWriter::try_new(File::create(path).unwrap(), schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

/// An hour ago, in ns.
pub fn hour_ago() -> i64 {
    now_nanos() - HOUR
}
