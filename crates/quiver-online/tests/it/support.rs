//! The backends every contract test runs on ([`On`]), and a temporary repository with a
//! driver view (int64 key, ttl 1h) and a composite-key view (int32 + string keys), data
//! written by the tests, and an open store. Times are ns.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use arrow::array::{
    ArrayRef, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampNanosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use quiver_core::{Definitions, Feature, FeatureRef, KeyValue};
use quiver_online::{
    FeatureValue, FieldStatus, MaterializeOptions, OnlineStore, ReadPlan, RocksDbOptions,
    RocksDbStore, Row, RowVersion, ViewId, ViewReport, ViewTarget, Window, encode_row,
    materialize_view, read_online_features,
};
use quiver_redis::{RedisOptions, RedisStore};
use quiver_registry::{RepoConfig, load_definitions};
use quiver_source::Sources;
pub use quiver_testkit::s3::Place;
use tempfile::TempDir;

pub const HOUR: i64 = 3_600_000_000_000;
pub const MINUTE: i64 = 60_000_000_000;
/// 2024-01-01T00:00:00Z in ns.
pub const T0: i64 = 1_704_067_200_000_000_000;

const DEFINITIONS: &str = r#"
entities:
  - name: driver
    join_keys: [{name: driver_id, type: int64}]
  - name: zone
    join_keys: [{name: zone_id, type: int32}, {name: city, type: string}]
sources:
  - name: stats
    path: data/stats
    timestamp_field: event_timestamp
    created_timestamp_column: created
    field_mapping: {rate: conv_rate}
  - name: zones
    path: data/zones.parquet
    timestamp_field: ts
feature_views:
  - name: driver_stats
    entities: [driver]
    source: stats
    ttl: 1h
    features:
      - {name: conv_rate, type: float64}
      - {name: trips, type: int64}
  - name: driver_zone
    entities: [driver, zone]
    source: zones
    features:
      - {name: demand, type: float64}
"#;

/// The one feature, `x` (int64), of the rows the store tests write directly.
fn x_features() -> Vec<Feature> {
    vec![Feature {
        name: "x".into(),
        value_type: "int64".parse().unwrap(),
        description: String::new(),
    }]
}

/// A stored row of [`x_features`] with `version` and value `x`.
pub fn x_row(version: RowVersion, x: i64) -> Vec<u8> {
    encode_row(&x_features(), version, &[FeatureValue::Int64(x)])
}

/// `(version, x)` of a stored row of [`x_features`].
pub fn x_decode(bytes: &[u8]) -> (RowVersion, i64) {
    let r = Row::parse(bytes).unwrap();
    let value =
        quiver_online::row::decode_value(x_features()[0].value_type, r.feature_bytes(0).unwrap())
            .unwrap();
    match value {
        FeatureValue::Int64(x) => (r.version(), x),
        other => panic!("{other:?}"),
    }
}

/// One source row of `stats`: driver, event time, created time, rate, trips.
#[derive(Clone, Copy, Debug)]
pub struct StatRow {
    pub driver: Option<i64>,
    pub event: Option<i64>,
    pub created: i64,
    pub rate: Option<f64>,
    pub trips: i64,
}

pub fn stat(driver: i64, event: i64, created: i64, rate: f64) -> StatRow {
    StatRow {
        driver: Some(driver),
        event: Some(event),
        created,
        rate: Some(rate),
        trips: driver * 10,
    }
}

/// An online store backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The embedded store, in a temporary folder.
    RocksDb,
    /// A plain Redis server shared by the test binary.
    Redis,
    /// A Redis Cluster (three masters, three replicas) shared by the test binary.
    RedisCluster,
}

/// One test on one backend: makes stores and projects no other test sees (tests share the
/// Redis deployments, so each works in projects of its own).
pub struct On {
    pub backend: Backend,
    /// Where materialization reads the sources from.
    pub sources: Place,
    name: &'static str,
    made: AtomicU32,
}

impl On {
    pub fn new(backend: Backend, name: &'static str) -> Self {
        Self {
            backend,
            sources: Place::Disk,
            name,
            made: AtomicU32::new(0),
        }
    }

    /// The same, with the sources read from S3.
    pub fn with_sources_on_s3(self) -> Self {
        Self {
            sources: Place::S3,
            ..self
        }
    }

    /// A project name of this test's own.
    pub fn project(&self) -> String {
        format!(
            "{}-{}",
            self.name,
            self.made.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// A store: RocksDB in `dir`, or a client of the shared Redis deployment.
    pub fn store(&self, dir: &Path) -> Arc<dyn OnlineStore> {
        match self.backend {
            Backend::RocksDb => Arc::new(
                RocksDbStore::open(&dir.join("online"), &RocksDbOptions::default()).unwrap(),
            ),
            Backend::Redis => Arc::new(redis_store(vec![
                quiver_testkit::redis::shared_server().address(),
            ])),
            Backend::RedisCluster => {
                Arc::new(redis_store(quiver_testkit::redis::shared_cluster().seeds()))
            }
        }
    }
}

/// A client of the Redis deployment at `nodes`.
pub fn redis_store(nodes: Vec<String>) -> RedisStore {
    RedisStore::open(&RedisOptions {
        nodes,
        ..RedisOptions::default()
    })
    .unwrap()
}

pub struct Repo {
    pub dir: TempDir,
    /// Where materialization reads the sources from.
    pub place: Place,
    pub project: String,
    pub defs: Definitions,
    pub sources: Sources,
    pub store: Arc<dyn OnlineStore>,
}

impl Repo {
    /// A repository on `on`'s backend whose `stats` source is `files` (each a list of rows, in
    /// about four row groups) and whose `zones` source has one row per driver 1..=3.
    pub fn new(on: &On, files: &[Vec<StatRow>]) -> Self {
        let dir = TempDir::new().unwrap();
        let project = on.project();
        std::fs::write(
            dir.path().join("quiver.yaml"),
            format!("project: {project}\n"),
        )
        .unwrap();
        std::fs::write(dir.path().join("defs.yaml"), DEFINITIONS).unwrap();
        std::fs::create_dir_all(dir.path().join("data/stats")).unwrap();
        for (i, rows) in files.iter().enumerate() {
            write_stats(
                &dir.path().join(format!("data/stats/part-{i}.parquet")),
                rows,
                (rows.len() / 4).max(4),
            );
        }
        write_zones(&dir.path().join("data/zones.parquet"));
        let config = RepoConfig::load(dir.path()).unwrap();
        let sources = Sources::new(dir.path());
        let defs = load_definitions(dir.path(), &config, &sources).unwrap();
        let store = on.store(dir.path());
        Self {
            dir,
            place: on.sources,
            project,
            defs,
            sources,
            store,
        }
    }

    /// Where the rows of `view` are (generation 1, as if registered at version 1).
    pub fn id(&self, view: &str) -> ViewId {
        ViewId::new(&self.project, view, 1)
    }

    /// Every online view at generation 1.
    pub fn generations(&self) -> BTreeMap<String, u64> {
        self.defs
            .feature_views
            .keys()
            .map(|v| (v.clone(), 1))
            .collect()
    }

    pub fn stats_file(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("data/stats/part-{i}.parquet"))
    }

    /// Materializes `views` (every online view when empty).
    pub fn try_materialize(
        &self,
        views: &[&str],
        window: Window,
    ) -> quiver_online::Result<Vec<ViewReport>> {
        let all: Vec<&str> = self
            .defs
            .feature_views
            .values()
            .filter(|v| v.online)
            .map(|v| v.name.as_str())
            .collect();
        let views = if views.is_empty() { &all[..] } else { views };
        // On S3, the data folder as it is now, uploaded under a new prefix.
        let uploaded = (self.place == Place::S3).then(|| {
            let server = quiver_testkit::s3::shared_server();
            let storage = Arc::new(server.storage());
            let prefix = server.upload(&storage, &self.dir.path().join("data"), "materialize");
            let mut defs = self.defs.clone();
            for source in defs.sources.values_mut() {
                source.path = format!("{prefix}/{}", source.path.trim_start_matches("data/"));
            }
            (defs, Sources::with_storage(self.dir.path(), storage))
        });
        let (defs, sources) = match &uploaded {
            Some((defs, sources)) => (defs, sources),
            None => (&self.defs, &self.sources),
        };
        views
            .iter()
            .map(|v| {
                let view = defs.view(v)?;
                materialize_view(
                    self.store.as_ref(),
                    sources,
                    &ViewTarget {
                        view,
                        source: &defs.sources[&view.source],
                        keys: defs.join_keys(view)?,
                        id: self.id(v),
                    },
                    window,
                    MaterializeOptions::default(),
                    &|_| {},
                )
            })
            .collect()
    }

    pub fn materialize(&self, views: &[&str], window: Window) -> Vec<ViewReport> {
        self.try_materialize(views, window).unwrap()
    }

    /// `(conv_rate, status, event time)` of drivers at time `now`.
    pub fn rates(&self, drivers: &[i64], now: i64) -> Vec<(Option<f64>, FieldStatus, Option<i64>)> {
        let features = self
            .defs
            .resolve(
                &[FeatureRef::parse("driver_stats:conv_rate").unwrap()],
                false,
            )
            .unwrap();
        let keys = vec![(
            "driver_id".to_owned(),
            drivers.iter().map(|d| KeyValue::Int(*d)).collect(),
        )];
        let plan = ReadPlan::new(&self.defs, &self.generations(), features).unwrap();
        let result = futures::executor::block_on(read_online_features(
            self.store.as_ref(),
            &plan,
            &keys,
            now,
        ))
        .unwrap();
        (0..drivers.len())
            .map(|row| {
                let cell = result.cell(0, row).unwrap();
                let value = match cell.value {
                    FeatureValue::Float64(v) => Some(v),
                    FeatureValue::Null => None,
                    other => panic!("unexpected {other:?}"),
                };
                (value, cell.status, cell.event_ts)
            })
            .collect()
    }
}

fn ts(values: Vec<Option<i64>>) -> ArrayRef {
    Arc::new(TimestampNanosecondArray::from(values).with_timezone("UTC"))
}

pub fn write_stats(path: &Path, rows: &[StatRow], group: usize) {
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
            false,
        ),
        Field::new("rate", DataType::Float64, true),
        Field::new("trips", DataType::Int64, false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from(
                rows.iter().map(|r| r.driver).collect::<Vec<_>>(),
            )),
            ts(rows.iter().map(|r| r.event).collect()),
            ts(rows.iter().map(|r| Some(r.created)).collect()),
            Arc::new(Float64Array::from(
                rows.iter().map(|r| r.rate).collect::<Vec<_>>(),
            )),
            Arc::new(Int64Array::from(
                rows.iter().map(|r| r.trips).collect::<Vec<_>>(),
            )),
        ],
    )
    .unwrap();
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(group))
        .build();
    let mut w = ArrowWriter::try_new(File::create(path).unwrap(), schema, Some(props)).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

fn write_zones(path: &Path) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("driver_id", DataType::Int64, false),
        Field::new("zone_id", DataType::Int32, false),
        Field::new("city", DataType::Utf8, false),
        Field::new("ts", DataType::Timestamp(TimeUnit::Nanosecond, None), false),
        Field::new("demand", DataType::Float64, true),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from(vec![1, 2, 3])),
            Arc::new(Int32Array::from(vec![7, 7, 8])),
            Arc::new(StringArray::from(vec!["paris", "rome", "paris"])),
            Arc::new(TimestampNanosecondArray::from(vec![T0; 3])),
            Arc::new(Float64Array::from(vec![Some(1.5), None, Some(3.5)])),
        ],
    )
    .unwrap();
    let mut w = ArrowWriter::try_new(File::create(path).unwrap(), schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}
