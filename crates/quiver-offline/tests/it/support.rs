//! Test fixtures: definitions built in code, Parquet sources and entity tables written from rows.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
    TimestampNanosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use quiver_core::{
    Definitions, Entity, Feature, FeatureRef, FeatureView, JoinKey, KeyType, ResolvedFeature,
    ScalarType, Source, Ttl, ValueType,
};
use quiver_offline::{JoinOptions, PointInTimeJoin, TrainingSet};
use quiver_source::Sources;

/// One second in µs (source times are µs, entity times ns).
pub const SEC: i64 = 1_000_000;
/// 2024-01-01T00:00:00Z in µs.
pub const T0: i64 = 1_704_067_200_000_000;

/// A source row: key, event time and created time (seconds after T0), and a value.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub id: Option<i64>,
    pub zone: Option<String>,
    pub ts: Option<i64>,
    pub created: Option<i64>,
    pub value: Option<i64>,
}

pub fn row(id: i64, ts: i64, created: i64, value: i64) -> Row {
    Row {
        id: Some(id),
        zone: Some("z".into()),
        ts: Some(ts),
        created: Some(created),
        value: Some(value),
    }
}

/// An entity row: key, zone and time (seconds after T0), plus a label.
#[derive(Clone, Debug, PartialEq)]
pub struct EntityRow {
    pub id: Option<i64>,
    pub zone: Option<String>,
    pub t: Option<i64>,
}

pub fn at(id: i64, t: i64) -> EntityRow {
    EntityRow {
        id: Some(id),
        zone: Some("z".into()),
        t: Some(t),
    }
}

fn key(name: &str, key_type: KeyType) -> JoinKey {
    JoinKey {
        name: name.into(),
        key_type,
    }
}

fn int_feature(name: &str) -> Feature {
    Feature {
        name: name.into(),
        value_type: ValueType::Scalar(ScalarType::Int64),
        description: String::new(),
    }
}

/// Definitions: view `stats` (key `id: int64`, feature `value`, source `stats/`, created
/// column), view `zones` (composite key `id` + `zone: string`, feature `demand` mapped from
/// `value`, source `zones.parquet`), with the given ttls in seconds.
pub fn definitions(stats_ttl: i64, zones_ttl: i64) -> Definitions {
    let mut d = Definitions {
        project: "test".into(),
        ..Default::default()
    };
    let entity = |name: &str, keys: Vec<JoinKey>| Entity {
        name: name.into(),
        join_keys: keys,
        description: String::new(),
        owner: String::new(),
        tags: Default::default(),
    };
    d.entities.insert(
        "driver".into(),
        entity("driver", vec![key("id", KeyType::Int64)]),
    );
    d.entities.insert(
        "zone".into(),
        entity("zone", vec![key("zone", KeyType::String)]),
    );
    let source = |name: &str, path: &str, mapping: &[(&str, &str)]| Source {
        name: name.into(),
        path: path.into(),
        timestamp_field: "ts".into(),
        created_timestamp_column: Some("created".into()),
        field_mapping: mapping
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect(),
        description: String::new(),
        owner: String::new(),
        tags: Default::default(),
    };
    d.sources
        .insert("stats".into(), source("stats", "stats", &[]));
    d.sources.insert(
        "zones".into(),
        source("zones", "zones.parquet", &[("value", "demand")]),
    );
    let view = |name: &str, entities: &[&str], source: &str, feature: &str, ttl: i64| FeatureView {
        name: name.into(),
        entities: entities.iter().map(|e| (*e).to_owned()).collect(),
        source: source.into(),
        features: vec![int_feature(feature), int_feature("constant")],
        ttl: Ttl::new(std::time::Duration::from_secs(ttl.unsigned_abs())),
        online: true,
        offline: true,
        description: String::new(),
        owner: String::new(),
        tags: Default::default(),
        materialization: None,
        freshness: None,
        monitoring: None,
    };
    d.feature_views.insert(
        "stats".into(),
        view("stats", &["driver"], "stats", "value", stats_ttl),
    );
    d.feature_views.insert(
        "zones".into(),
        view("zones", &["driver", "zone"], "zones", "demand", zones_ttl),
    );
    d
}

/// Writes rows as a Parquet file with small row groups (so pruning and several groups are
/// exercised): `id`, `zone`, `ts` and `created` (µs, UTC), `value`, `constant` (always 7).
pub fn write_source(path: &Path, rows: &[Row], row_group_rows: usize) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let secs = |v: &Option<i64>| v.map(|s| T0 + s * SEC);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.id))),
        Arc::new(StringArray::from_iter(rows.iter().map(|r| r.zone.clone()))),
        Arc::new(
            TimestampMicrosecondArray::from_iter(rows.iter().map(|r| secs(&r.ts)))
                .with_timezone("UTC"),
        ),
        Arc::new(
            TimestampMicrosecondArray::from_iter(rows.iter().map(|r| secs(&r.created)))
                .with_timezone("UTC"),
        ),
        Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.value))),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|_| 7))),
    ];
    let utc = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("zone", DataType::Utf8, true),
        Field::new("ts", utc.clone(), true),
        Field::new("created", utc, true),
        Field::new("value", DataType::Int64, true),
        Field::new("constant", DataType::Int64, false),
    ]));
    let batch = RecordBatch::try_new(schema.clone(), columns).unwrap();
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(row_group_rows.max(1)))
        .build();
    let mut w = ArrowWriter::try_new(File::create(path).unwrap(), schema, Some(props)).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

/// An entity table: `id`, `zone`, `event_timestamp` (ns, naive), `label` (the row number).
pub fn entity_table(rows: &[EntityRow]) -> RecordBatch {
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.id))),
        Arc::new(StringArray::from_iter(rows.iter().map(|r| r.zone.clone()))),
        Arc::new(TimestampNanosecondArray::from_iter(
            rows.iter().map(|r| r.t.map(|s| (T0 + s * SEC) * 1000)),
        )),
        Arc::new(Float64Array::from_iter_values(
            (0..rows.len()).map(|i| i as f64),
        )),
    ];
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("zone", DataType::Utf8, true),
        Field::new(
            "event_timestamp",
            DataType::Timestamp(TimeUnit::Nanosecond, None),
            true,
        ),
        Field::new("label", DataType::Float64, false),
    ]));
    RecordBatch::try_new(schema, columns).unwrap()
}

pub fn refs(list: &[&str]) -> Vec<FeatureRef> {
    list.iter().map(|r| r.parse().unwrap()).collect()
}

pub fn resolve(defs: &Definitions, list: &[&str], full: bool) -> Vec<ResolvedFeature> {
    defs.resolve(&refs(list), full).unwrap()
}

pub use quiver_testkit::s3::Place;

/// Where a test's sources are and which engine joins them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setup {
    /// Sources on disk, the native engine.
    Disk,
    /// Sources on a real S3 server, the native engine.
    S3,
    /// Sources on disk, joined on a real Spark cluster (Spark Connect).
    Spark,
}

impl From<Place> for Setup {
    fn from(place: Place) -> Self {
        match place {
            Place::Disk => Self::Disk,
            Place::S3 => Self::S3,
        }
    }
}

/// Runs the tests of `everywhere` in modules `disk`, `s3` and `spark`, and those of `native`
/// (APIs only the native engine has) in `disk` and `s3`: one suite, every setup.
#[macro_export]
macro_rules! each_setup {
    (everywhere: [$($test:ident),* $(,)?], native: [$($native:ident),* $(,)?] $(,)?) => {
        mod disk {
            $(#[test]
            fn $test() {
                super::$test($crate::support::Setup::Disk);
            })*
            $(#[test]
            fn $native() {
                super::$native($crate::support::Setup::Disk);
            })*
        }
        mod s3 {
            $(#[test]
            fn $test() {
                super::$test($crate::support::Setup::S3);
            })*
            $(#[test]
            fn $native() {
                super::$native($crate::support::Setup::S3);
            })*
        }
        mod spark {
            $(#[test]
            fn $test() {
                super::$test($crate::support::Setup::Spark);
            })*
        }
    };
}

pub struct Data {
    dir: tempfile::TempDir,
    setup: Setup,
}

impl Data {
    pub fn new(setup: impl Into<Setup>) -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            setup: setup.into(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn open(&self, defs: &Definitions) -> (Definitions, Sources) {
        match self.setup {
            Setup::Disk | Setup::Spark => (defs.clone(), Sources::new(self.path())),
            Setup::S3 => {
                let server = quiver_testkit::s3::shared_server();
                let storage = Arc::new(server.storage());
                let prefix = server.upload(&storage, self.path(), "offline");
                let mut defs = defs.clone();
                for source in defs.sources.values_mut() {
                    source.path = format!("{prefix}/{}", source.path);
                }
                let root = self.path().to_path_buf();
                (defs, Sources::with_storage(root, storage))
            }
        }
    }
}

/// The Spark engine of the binary's shared cluster.
pub fn spark() -> &'static quiver_spark::SparkEngine {
    static ENGINE: std::sync::OnceLock<quiver_spark::SparkEngine> = std::sync::OnceLock::new();
    ENGINE.get_or_init(|| {
        let cluster = quiver_testkit::spark::shared_cluster();
        quiver_spark::SparkEngine::new(quiver_core::SparkSettings {
            connect: cluster.url(),
            conf: Default::default(),
            staging: None,
        })
        .unwrap()
    })
}

pub fn join(
    defs: &Definitions,
    data: &Data,
    features: &[&str],
    entities: RecordBatch,
    options: JoinOptions,
) -> quiver_offline::Result<RecordBatch> {
    let (defs, sources) = data.open(defs);
    let defs = &defs;
    let join = PointInTimeJoin::new(defs, &sources, resolve(defs, features, false), options)?;
    match data.setup {
        Setup::Disk | Setup::S3 => collect(join.run(entities, &|_| {})?),
        // Spark's training set must be the native engine's, table for table.
        Setup::Spark => match spark().training_set(&join, entities.clone(), None) {
            Ok(set) => {
                let got = collect(set)?;
                let native = collect(join.run(entities, &|_| {})?)?;
                assert_eq!(got, native, "Spark and the native engine differ");
                Ok(got)
            }
            Err(quiver_spark::SparkError::Offline(e)) => Err(e),
            Err(e) => panic!("Spark: {e}"),
        },
    }
}

pub fn collect(set: TrainingSet) -> quiver_offline::Result<RecordBatch> {
    let schema = set.schema();
    let batches: Vec<RecordBatch> = set.collect::<quiver_offline::Result<_>>()?;
    Ok(arrow::compute::concat_batches(&schema, &batches)?)
}

/// The int64 column `name` as options.
pub fn ints(batch: &RecordBatch, name: &str) -> Vec<Option<i64>> {
    use arrow::array::AsArray;
    batch
        .column_by_name(name)
        .unwrap()
        .as_primitive::<arrow::datatypes::Int64Type>()
        .iter()
        .collect()
}
