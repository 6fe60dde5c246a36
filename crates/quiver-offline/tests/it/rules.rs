//! One hand-written case per rule of the point-in-time join, plus request errors.

use std::sync::Arc;

use arrow::array::{Array, AsArray, Int32Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use quiver_core::Definitions;
use quiver_offline::{JoinOptions, PointInTimeJoin};
use quiver_source::Sources;

use crate::support::*;

struct Case {
    dir: Data,
    defs: Definitions,
}

/// `stats` rows in one file (a second file when `later` is given), zones empty.
fn case(setup: Setup, ttl: i64, rows: &[Row], later: &[Row]) -> Case {
    let dir = Data::new(setup);
    write_source(&dir.path().join("stats/a.parquet"), rows, 2);
    if !later.is_empty() {
        write_source(&dir.path().join("stats/b.parquet"), later, 2);
    }
    write_source(&dir.path().join("zones.parquet"), &[], 2);
    Case {
        dir,
        defs: definitions(ttl, 0),
    }
}

impl Case {
    fn values(&self, entities: &[EntityRow], options: JoinOptions) -> Vec<Option<i64>> {
        let out = join(
            &self.defs,
            &self.dir,
            &["stats:value"],
            entity_table(entities),
            options,
        )
        .unwrap();
        ints(&out, "value")
    }

    fn error(&self, features: &[&str], entities: RecordBatch) -> String {
        join(
            &self.defs,
            &self.dir,
            features,
            entities,
            JoinOptions::default(),
        )
        .unwrap_err()
        .to_string()
    }
}

fn a_row_at_exactly_t_counts_and_a_later_row_never_leaks(setup: Setup) {
    let c = case(setup, 0, &[row(1, 10, 0, 100), row(1, 11, 0, 110)], &[]);
    let got = c.values(&[at(1, 10), at(1, 9), at(1, 11)], JoinOptions::default());
    assert_eq!(got, vec![Some(100), None, Some(110)]);
}

fn ttl_bounds_are_inclusive(setup: Setup) {
    let c = case(setup, 5, &[row(1, 10, 0, 100)], &[]);
    let got = c.values(&[at(1, 15), at(1, 16), at(1, 10)], JoinOptions::default());
    assert_eq!(got, vec![Some(100), None, Some(100)]);
}

fn a_newer_row_outside_nothing_older_inside_ttl_is_not_used(setup: Setup) {
    // The newest row before T decides; an older row is never used when the newest is stale.
    let c = case(setup, 5, &[row(1, 1, 0, 1), row(1, 3, 0, 3)], &[]);
    assert_eq!(c.values(&[at(1, 9)], JoinOptions::default()), vec![None]);
}

fn ties_go_to_the_greatest_created_time_then_the_later_row(setup: Setup) {
    let c = case(
        setup,
        0,
        &[
            row(1, 10, 5, 1),
            row(1, 10, 7, 2),
            row(1, 10, 6, 3),
            row(2, 10, 1, 4),
        ],
        &[row(2, 10, 1, 5)],
    );
    let got = c.values(&[at(1, 10), at(2, 10)], JoinOptions::default());
    assert_eq!(got, vec![Some(2), Some(5)]);
}

fn as_of_created_ignores_rows_written_after_t(setup: Setup) {
    // Row at ts 5 was backfilled at 20: invisible at T=10 with as_of_created.
    let c = case(setup, 0, &[row(1, 2, 2, 20), row(1, 5, 20, 50)], &[]);
    let plain = c.values(&[at(1, 10), at(1, 20)], JoinOptions::default());
    assert_eq!(plain, vec![Some(50), Some(50)]);
    let strict = JoinOptions {
        as_of_created: true,
        ..JoinOptions::default()
    };
    assert_eq!(
        c.values(&[at(1, 10), at(1, 20)], strict),
        vec![Some(20), Some(50)]
    );
}

fn rows_are_kept_in_input_order_with_duplicates_and_nulls(setup: Setup) {
    let c = case(setup, 0, &[row(1, 1, 0, 10), row(2, 1, 0, 20)], &[]);
    let null_key = EntityRow {
        id: None,
        zone: None,
        t: Some(5),
    };
    let null_time = EntityRow {
        id: Some(1),
        zone: None,
        t: None,
    };
    let entities = [at(2, 5), at(1, 5), at(2, 5), null_key, null_time, at(9, 5)];
    let got = c.values(&entities, JoinOptions::default());
    assert_eq!(got, vec![Some(20), Some(10), Some(20), None, None, None]);
}

fn output_is_input_columns_then_features_in_request_order(setup: Setup) {
    let c = case(setup, 0, &[row(1, 1, 0, 10)], &[]);
    let features = ["stats:constant", "zones:demand", "stats:value"];
    let out = join(
        &c.defs,
        &c.dir,
        &features,
        entity_table(&[at(1, 5)]),
        JoinOptions::default(),
    )
    .unwrap();
    let names: Vec<&str> = out
        .schema_ref()
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect();
    assert_eq!(
        names,
        [
            "id",
            "zone",
            "event_timestamp",
            "label",
            "constant",
            "demand",
            "value"
        ]
    );
    assert_eq!(ints(&out, "constant"), vec![Some(7)]);
    assert_eq!(ints(&out, "demand"), vec![None]);

    let (defs, sources) = c.dir.open(&c.defs);

    let full = PointInTimeJoin::new(
        &defs,
        &sources,
        resolve(&defs, &["stats:value"], true),
        JoinOptions::default(),
    )
    .unwrap();
    let out = collect(full.run(entity_table(&[at(1, 5)]), &|_| {}).unwrap()).unwrap();
    assert_eq!(ints(&out, "stats__value"), vec![Some(10)]);
}

fn int32_entity_columns_match_int64_keys(setup: Setup) {
    let c = case(setup, 0, &[row(1001, 1, 0, 10)], &[]);
    let base = entity_table(&[at(1001, 5)]);
    let mut columns = base.columns().to_vec();
    columns[0] = Arc::new(Int32Array::from(vec![1001]));
    let mut fields: Vec<Field> = base
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields[0] = Field::new("id", DataType::Int32, true);
    let entities = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();
    let out = join(
        &c.defs,
        &c.dir,
        &["stats:value"],
        entities,
        JoinOptions::default(),
    )
    .unwrap();
    assert_eq!(ints(&out, "value"), vec![Some(10)]);
}

fn spilling_gives_the_same_answer_as_memory(setup: Setup) {
    let rows: Vec<Row> = (0..400).map(|i| row(i % 37, i % 50, i % 7, i)).collect();
    let c = case(setup, 20, &rows, &[]);
    let entities: Vec<EntityRow> = (0..500).map(|i| at((i * 7) % 41, (i * 13) % 60)).collect();
    let in_memory = c.values(&entities, JoinOptions::default());
    let spilled = c.values(
        &entities,
        JoinOptions {
            memory_limit: 4 * 1024,
            batch_rows: 64,
            ..JoinOptions::default()
        },
    );
    assert_eq!(in_memory, spilled);
    assert!(in_memory.iter().filter(|v| v.is_some()).count() > 100);
}

fn bad_requests_name_the_column_view_or_feature(setup: Setup) {
    let c = case(setup, 0, &[row(1, 1, 0, 10)], &[]);
    let good = entity_table(&[at(1, 5)]);

    let no_key = good.project(&[1, 2, 3]).unwrap();
    let e = c.error(&["stats:value"], no_key);
    assert!(e.contains("no column 'id'") && e.contains("'stats'"), "{e}");

    let no_time = good.project(&[0, 1, 3]).unwrap();
    assert!(
        c.error(&["stats:value"], no_time)
            .contains("no timestamp column")
    );

    let mut columns = good.columns().to_vec();
    columns[0] = Arc::new(StringArray::from(vec!["1"]));
    let mut fields: Vec<Field> = good
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields[0] = Field::new("id", DataType::Utf8, true);
    let wrong = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();
    let e = c.error(&["stats:value"], wrong);
    assert!(
        e.contains("'id' has type Utf8") && e.contains("int64"),
        "{e}"
    );

    let (mut defs, sources) = c.dir.open(&c.defs);
    defs.feature_views.get_mut("stats").unwrap().offline = false;
    let e = PointInTimeJoin::new(
        &defs,
        &sources,
        resolve(&defs, &["stats:value"], false),
        JoinOptions::default(),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("'stats' is not offline"), "{e}");
}

fn a_feature_named_like_an_entity_column_is_refused(setup: Setup) {
    let c = case(setup, 0, &[row(1, 1, 0, 10)], &[]);
    let good = entity_table(&[at(1, 5)]);
    let mut fields: Vec<Field> = good
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields[3] = Field::new("value", DataType::Float64, false);
    let clash =
        RecordBatch::try_new(Arc::new(Schema::new(fields)), good.columns().to_vec()).unwrap();
    let e = c.error(&["stats:value"], clash);
    assert!(e.contains("already a column"), "{e}");
}

fn entity_rows_in_range_are_the_distinct_source_rows(setup: Setup) {
    let c = case(
        setup,
        0,
        &[
            row(1, 1, 0, 10),
            row(1, 1, 0, 11),
            row(2, 3, 0, 20),
            row(3, 9, 0, 30),
        ],
        &[],
    );
    let (defs, sources) = c.dir.open(&c.defs);
    let join = PointInTimeJoin::new(
        &defs,
        &sources,
        resolve(&defs, &["stats:value"], false),
        JoinOptions::default(),
    )
    .unwrap();
    let ns = |s: i64| (T0 + s * SEC) * 1000;
    let rows = join.entity_rows_in_range(ns(0), ns(5)).unwrap();
    assert_eq!(rows.num_rows(), 2);
    let out = collect(join.run(rows, &|_| {}).unwrap()).unwrap();
    assert_eq!(ints(&out, "id"), vec![Some(1), Some(2)]);
    assert_eq!(ints(&out, "value"), vec![Some(11), Some(20)]);
    let ts = out.column_by_name("event_timestamp").unwrap();
    assert_eq!(
        ts.as_primitive::<arrow::datatypes::TimestampNanosecondType>()
            .value(0),
        ns(1)
    );
    assert!(ts.is_valid(1));

    // The rows of a range are held in memory: beyond a third of the memory limit, refused.
    let small = PointInTimeJoin::new(
        &defs,
        &sources,
        resolve(&defs, &["stats:value"], false),
        JoinOptions {
            memory_limit: 64,
            ..JoinOptions::default()
        },
    )
    .unwrap();
    let e = small.entity_rows_in_range(ns(0), ns(5)).unwrap_err();
    assert_eq!(
        quiver_core::HasKind::kind(&e),
        quiver_core::ErrorKind::LimitExceeded
    );
    assert!(e.to_string().contains("memory limit"), "{e}");
}

fn a_long_time_range_is_joined_slice_by_slice_with_the_same_answer(setup: Setup) {
    let rows: Vec<_> = (0..400).map(|i| row(i % 37, i / 3, 0, i)).collect();
    let c = case(setup, 0, &rows, &[]);
    let (defs, sources) = c.dir.open(&c.defs);
    let join = |memory_limit| {
        PointInTimeJoin::new(
            &defs,
            &sources,
            resolve(&defs, &["stats:value"], false),
            JoinOptions {
                memory_limit,
                ..JoinOptions::default()
            },
        )
        .unwrap()
    };
    let ns = |s: i64| (T0 + s * SEC) * 1000;
    let whole = join(1 << 30);
    let expected = collect(
        whole
            .run(whole.entity_rows_in_range(ns(0), ns(200)).unwrap(), &|_| {})
            .unwrap(),
    )
    .unwrap();
    // Too small for the whole range's entity rows, large enough for a few seconds of them.
    let small = join(6_000);
    assert!(small.entity_rows_in_range(ns(0), ns(200)).is_err());
    let mut batches = Vec::new();
    small
        .run_range(ns(0), ns(200), &mut |b| {
            batches.push(b);
            true
        })
        .unwrap();
    assert!(batches.len() > 1, "the range was split");
    let got = arrow::compute::concat_batches(&small.range_schema().unwrap(), &batches).unwrap();
    assert_eq!(got, expected);
}

fn a_large_entity_table_gives_the_same_answer(setup: Setup) {
    // Beyond 16 MiB, so Spark gets the entity rows as uploaded chunks, not inline.
    let rows: Vec<Row> = (0..300).map(|i| row(i % 50, i % 90, i % 3, i)).collect();
    let c = case(setup, 30, &rows, &[]);
    let entities: Vec<EntityRow> = (0..1_000_000).map(|i| at(i % 53, i % 100)).collect();
    let got = c.values(&entities, JoinOptions::default());
    assert_eq!(got.len(), entities.len());
    assert!(got.iter().filter(|v| v.is_some()).count() > entities.len() / 2);
}

/// 300 rows over 50 keys, on Spark.
fn spark_case() -> Case {
    let rows: Vec<Row> = (0..300).map(|i| row(i % 50, i % 90, i % 3, i)).collect();
    case(Setup::Spark, 30, &rows, &[])
}

/// The join of `stats:value`.
fn value_join<'a>(defs: &'a Definitions, sources: &'a Sources) -> PointInTimeJoin<'a> {
    PointInTimeJoin::new(
        defs,
        sources,
        resolve(defs, &["stats:value"], false),
        JoinOptions::default(),
    )
    .unwrap()
}

#[test]
fn a_large_entity_table_staged_for_spark_gives_the_native_answer() {
    let c = spark_case();
    let (defs, sources) = c.dir.open(&c.defs);
    let join = value_join(&defs, &sources);
    let entities: Vec<EntityRow> = (0..1_000_000).map(|i| at(i % 53, i % 100)).collect();
    let staging = tempfile::tempdir().unwrap();
    let spark = quiver_spark::SparkEngine::new(quiver_core::SparkSettings {
        connect: quiver_testkit::spark::shared_cluster().url(),
        conf: Default::default(),
        staging: Some(staging.path().join("entities")),
    })
    .unwrap();
    let all = |set: quiver_offline::TrainingSet| {
        let schema = set.schema();
        let batches: Vec<RecordBatch> = set.map(Result::unwrap).collect();
        arrow::compute::concat_batches(&schema, &batches).unwrap()
    };
    let staged = all(spark
        .training_set(&join, entity_table(&entities), None)
        .unwrap());
    let native = all(join.run(entity_table(&entities), &|_| {}).unwrap());
    assert_eq!(staged, native);
    let left: Vec<_> = std::fs::read_dir(staging.path().join("entities"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "the staged file is removed: {left:?}");
}

#[test]
fn a_cancelled_spark_join_stops_promptly() {
    let c = spark_case();
    let (defs, sources) = c.dir.open(&c.defs);
    let join = value_join(&defs, &sources);
    let entities: Vec<EntityRow> = (0..2_000_000).map(|i| at(i % 53, i % 100)).collect();
    let entities = entity_table(&entities);
    let cancel = std::sync::atomic::AtomicBool::new(false);
    let spark = spark();
    std::thread::scope(|s| {
        let running = s.spawn(|| spark.training_set(&join, entities, Some(&cancel)));
        std::thread::sleep(std::time::Duration::from_secs(3));
        let asked = std::time::Instant::now();
        cancel.store(true, std::sync::atomic::Ordering::Relaxed);
        let result = running.join().unwrap();
        assert!(
            matches!(result, Err(quiver_spark::SparkError::Cancelled)),
            "{:?}",
            result.map(|s| s.num_rows())
        );
        let waited = asked.elapsed();
        assert!(
            waited < std::time::Duration::from_secs(5),
            "returned {waited:?} after the cancel"
        );
    });
    // The cluster still answers afterwards.
    assert_eq!(c.values(&[at(1, 89)], JoinOptions::default()).len(), 1);
}

#[test]
fn a_cancelled_spark_join_leaves_the_other_requests_on_its_session_running() {
    let c = spark_case();
    let (defs, sources) = c.dir.open(&c.defs);
    let join = value_join(&defs, &sources);
    let all = |set: quiver_offline::TrainingSet| {
        let schema = set.schema();
        let batches: Vec<RecordBatch> = set.map(Result::unwrap).collect();
        arrow::compute::concat_batches(&schema, &batches).unwrap()
    };
    // Both inline (under 16 MiB), so both run in the engine's one session.
    let cancelled: Vec<EntityRow> = (0..500_000).map(|i| at(i % 53, i % 100)).collect();
    let other: Vec<EntityRow> = (0..300_000).map(|i| at(i % 47, i % 90)).collect();
    let native = all(join.run(entity_table(&other), &|_| {}).unwrap());
    let cancel = std::sync::atomic::AtomicBool::new(false);
    let spark = spark();
    std::thread::scope(|s| {
        let running =
            s.spawn(|| spark.training_set(&join, entity_table(&cancelled), Some(&cancel)));
        let other = s.spawn(|| spark.training_set(&join, entity_table(&other), None));
        std::thread::sleep(std::time::Duration::from_millis(1500));
        cancel.store(true, std::sync::atomic::Ordering::Relaxed);
        let result = running.join().unwrap();
        assert!(
            matches!(result, Err(quiver_spark::SparkError::Cancelled)),
            "{:?}",
            result.map(|s| s.num_rows())
        );
        let other = other
            .join()
            .unwrap()
            .expect("the other request is not interrupted");
        assert_eq!(all(other), native);
    });
}

crate::each_setup!(
    everywhere: [
        a_row_at_exactly_t_counts_and_a_later_row_never_leaks,
        ttl_bounds_are_inclusive,
        a_newer_row_outside_nothing_older_inside_ttl_is_not_used,
        ties_go_to_the_greatest_created_time_then_the_later_row,
        as_of_created_ignores_rows_written_after_t,
        rows_are_kept_in_input_order_with_duplicates_and_nulls,
        output_is_input_columns_then_features_in_request_order,
        int32_entity_columns_match_int64_keys,
        spilling_gives_the_same_answer_as_memory,
        bad_requests_name_the_column_view_or_feature,
        a_feature_named_like_an_entity_column_is_refused,
        a_large_entity_table_gives_the_same_answer,
    ],
    native: [
        entity_rows_in_range_are_the_distinct_source_rows,
        a_long_time_range_is_joined_slice_by_slice_with_the_same_answer,
    ],
);
