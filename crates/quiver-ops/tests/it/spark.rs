//! Materialization on a real Spark cluster (the binary's shared one): the same online store,
//! reports and watermarks as the native engine, and clear failures.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Float32Array, Float64Array, Int64Array, RecordBatch, TimestampNanosecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use parquet::arrow::ArrowWriter;
use proptest::prelude::*;
use quiver_core::{EngineKind, ErrorKind, HasKind};
use quiver_online::{FieldStatus, RunOutcome, ViewReport, Window};
use quiver_ops::{FeatureStore, MaterializeRequest, StoreOptions};
use tempfile::TempDir;

use crate::support::{HOUR, LABELS, RATES, Repo};

/// One source row: driver, event time and created time (hours after a base), rate, trips,
/// label.
type Row = (Option<i64>, Option<i64>, Option<i64>, f32, i64, f64);

/// `quiver.yaml` settings naming the shared cluster.
fn on_spark() -> String {
    format!(
        "offline_engine: {{type: spark, connect: '{}'}}\n",
        quiver_testkit::spark::shared_cluster().url()
    )
}

/// A repository whose `stats` source is `files` (part-0, part-1, … in that order), with
/// `rates` and `labels` applied.
fn repo(config: &str, files: &[Vec<Row>]) -> Repo {
    let dir = TempDir::new().unwrap();
    std::fs::write(
        dir.path().join("quiver.yaml"),
        format!("project: p\n{config}"),
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("data/stats")).unwrap();
    for (i, rows) in files.iter().enumerate() {
        write_rows(
            &dir.path().join(format!("data/stats/part-{i}.parquet")),
            rows,
        );
    }
    let store = FeatureStore::open(dir.path(), StoreOptions::default()).unwrap();
    let repo = Repo { dir, store };
    repo.define(&[RATES, LABELS]);
    repo.apply();
    repo
}

/// The hour the rows' times count from (2026-01-01T00:00:00Z).
const BASE: i64 = 1_767_225_600_000_000_000;

fn write_rows(path: &Path, rows: &[Row]) {
    let time = |t: Option<i64>| t.map(|h| BASE + h * HOUR);
    let ts = |v: Vec<Option<i64>>| Arc::new(TimestampNanosecondArray::from(v).with_timezone("UTC"));
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
            Arc::new(Int64Array::from(
                rows.iter().map(|r| r.0).collect::<Vec<_>>(),
            )),
            ts(rows.iter().map(|r| time(r.1)).collect()),
            ts(rows.iter().map(|r| time(r.2)).collect()),
            Arc::new(Float32Array::from_iter_values(rows.iter().map(|r| r.3))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.4))),
            Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.5))),
        ],
    )
    .unwrap();
    let mut w = ArrowWriter::try_new(File::create(path).unwrap(), schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

fn materialize(
    repo: &Repo,
    engine: EngineKind,
    window: Window,
) -> quiver_ops::Result<Vec<ViewReport>> {
    repo.store.materialize(
        &quiver_ops::Caller::Trusted,
        &MaterializeRequest {
            engine: Some(engine),
            ..MaterializeRequest::manual(Vec::new(), window)
        },
        &|_| {},
        None,
    )
}

/// Every feature of drivers 0..10 as read online.
fn online(repo: &Repo) -> Vec<Vec<(Option<f64>, FieldStatus)>> {
    let drivers: Vec<i64> = (0..10).collect();
    ["rates:rate", "rates:trips", "labels:label"]
        .iter()
        .map(|r| repo.read(r, &drivers))
        .collect()
}

/// A report without what differs between runs (wall time) or between engines by design
/// (null event times are counted in the row groups the native engine reads, in every file
/// on Spark).
fn comparable(mut r: ViewReport) -> ViewReport {
    r.elapsed_ms = 0;
    r.skipped_null_timestamp = 0;
    r
}

fn row() -> impl Strategy<Value = Row> {
    (
        prop::option::weighted(0.9, 0..10i64),
        prop::option::weighted(0.9, 0..24i64),
        prop::option::weighted(0.8, 0..3i64),
        -5.0f32..5.0,
        0..100i64,
        -1.0f64..1.0,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]

    /// Random rows over up to three files (ties of event and created time within and across
    /// files, null keys and times) and a random window: Spark leaves the store the native
    /// engine leaves.
    #[test]
    fn spark_materializes_exactly_what_the_native_engine_does(
        files in prop::collection::vec(prop::collection::vec(row(), 0..40), 1..4),
        (from, to) in (0..24i64, 0..24i64),
    ) {
        let (from, to) = (from.min(to), from.max(to));
        let window = Window::Range { start: BASE + from * HOUR, end: BASE + to * HOUR };
        let native = repo(&on_spark(), &files);
        let spark = repo(&on_spark(), &files);
        let expected = materialize(&native, EngineKind::Native, window).unwrap();
        let got = materialize(&spark, EngineKind::Spark, window).unwrap();
        prop_assert_eq!(
            got.iter().cloned().map(comparable).collect::<Vec<_>>(),
            expected.into_iter().map(comparable).collect::<Vec<_>>()
        );
        let null_times = files.iter().flatten().filter(|r| r.1.is_none()).count() as u64;
        prop_assert!(got.iter().all(|r| r.skipped_null_timestamp == null_times));
        prop_assert_eq!(online(&spark), online(&native));
    }
}

#[test]
fn ties_go_to_the_greater_created_time_then_to_the_later_file_and_row() {
    let files = vec![
        vec![
            (Some(1), Some(5), Some(2), 1.0, 1, 0.1),
            (Some(1), Some(5), Some(1), 2.0, 2, 0.2),
            (Some(2), Some(5), Some(0), 3.0, 3, 0.3),
            (Some(2), Some(5), Some(0), 4.0, 4, 0.4),
        ],
        vec![
            (Some(3), Some(5), None, 5.0, 5, 0.5),
            (Some(2), Some(4), Some(9), 6.0, 6, 0.6),
        ],
        vec![(Some(3), Some(5), None, 7.0, 7, 0.7)],
    ];
    let spark = repo(&on_spark(), &files);
    let window = Window::Range {
        start: i64::MIN,
        end: i64::MAX,
    };
    let reports = materialize(&spark, EngineKind::Spark, window).unwrap();
    assert_eq!(reports[0].rows_written, 3, "{reports:?}");
    assert_eq!(reports[0].rows_in_window, 7);
    let rates = spark.read("rates:trips", &[1, 2, 3]);
    // Driver 1: the greater created time; 2: the later row of a file (the later event time
    // wins over a greater created time); 3: the later file.
    let trips: Vec<Option<f64>> = rates.iter().map(|(v, _)| *v).collect();
    assert_eq!(trips, vec![Some(1.0), Some(4.0), Some(7.0)]);
}

#[test]
fn incremental_runs_on_spark_advance_the_watermark_and_pick_up_new_files() {
    let spark = repo(
        &on_spark(),
        &[vec![(Some(1), Some(1), Some(0), 1.0, 10, 0.1)]],
    );
    let incremental = |end: i64| Window::Incremental {
        end,
        lookback: Duration::ZERO,
    };
    let first = materialize(&spark, EngineKind::Spark, incremental(BASE + 2 * HOUR)).unwrap();
    assert_eq!((first[0].start, first[0].rows_written), (i64::MIN, 1));
    write_rows(
        &spark.path().join("data/stats/part-1.parquet"),
        &[
            (Some(1), Some(3), Some(0), 2.0, 20, 0.2),
            // Before the watermark: not read again.
            (Some(2), Some(1), Some(0), 3.0, 30, 0.3),
        ],
    );
    let second = materialize(&spark, EngineKind::Spark, incremental(BASE + 4 * HOUR)).unwrap();
    assert_eq!(second[0].start, BASE + 2 * HOUR);
    assert_eq!(second[0].rows_written, 1);
    let trips: Vec<Option<f64>> = spark
        .read("rates:trips", &[1, 2])
        .into_iter()
        .map(|(v, _)| v)
        .collect();
    assert_eq!(trips, vec![Some(20.0), None]);
    let runs = spark.store.runs(Some("rates"), 10).unwrap();
    assert!(runs.iter().all(|r| r.outcome == RunOutcome::Succeeded));
    assert_eq!(runs[0].window_end, BASE + 4 * HOUR);
}

#[test]
fn an_unreachable_cluster_fails_the_run_and_keeps_the_watermark() {
    let port = quiver_testkit::free_port();
    let config = format!("offline_engine: {{type: spark, connect: 'sc://127.0.0.1:{port}'}}\n");
    let repo = repo(&config, &[vec![(Some(1), Some(1), Some(0), 1.0, 10, 0.1)]]);
    let window = Window::Incremental {
        end: BASE + 2 * HOUR,
        lookback: Duration::ZERO,
    };
    // The default engine is the configured one.
    let err = repo
        .store
        .materialize(
            &quiver_ops::Caller::Trusted,
            &MaterializeRequest::manual(vec!["rates".into()], window),
            &|_| {},
            None,
        )
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
    let run = &repo.store.runs(Some("rates"), 1).unwrap()[0];
    assert_eq!(run.outcome, RunOutcome::Failed);
    // No watermark: the next run starts from the beginning again.
    let native = materialize(&repo, EngineKind::Native, window).unwrap();
    assert_eq!(native[0].start, i64::MIN);
}

#[test]
fn spark_asked_for_without_a_cluster_is_refused_before_any_run() {
    let repo = repo("", &[vec![(Some(1), Some(1), Some(0), 1.0, 10, 0.1)]]);
    let window = Window::Range {
        start: i64::MIN,
        end: i64::MAX,
    };
    let err = materialize(&repo, EngineKind::Spark, window).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
    assert!(err.to_string().contains("offline_engine"), "{err}");
    assert!(repo.store.runs(None, 10).unwrap().is_empty());
}

#[test]
fn a_cancelled_spark_run_stops_promptly_and_keeps_the_watermark() {
    let rows: Vec<Row> = (0..1_500_000)
        .map(|i| (Some(i % 200_000), Some(i % 24), Some(0), 0.5, i, 0.1))
        .collect();
    let spark = repo(&on_spark(), &[rows]);
    let cancel = std::sync::atomic::AtomicBool::new(false);
    let request = MaterializeRequest {
        engine: Some(EngineKind::Spark),
        ..MaterializeRequest::manual(
            vec!["rates".into()],
            Window::Incremental {
                end: BASE + 24 * HOUR,
                lookback: Duration::ZERO,
            },
        )
    };
    std::thread::scope(|s| {
        let running = s.spawn(|| {
            spark.store.materialize(
                &quiver_ops::Caller::Trusted,
                &request,
                &|_| {},
                Some(&cancel),
            )
        });
        std::thread::sleep(Duration::from_secs(2));
        let asked = std::time::Instant::now();
        cancel.store(true, std::sync::atomic::Ordering::Relaxed);
        let err = running.join().unwrap().unwrap_err();
        assert!(asked.elapsed() < Duration::from_secs(5), "{err}");
        assert_eq!(err.kind(), ErrorKind::Cancelled, "{err}");
    });
    let run = &spark.store.runs(Some("rates"), 1).unwrap()[0];
    assert_eq!(run.outcome, RunOutcome::Cancelled);
    // The cluster still answers, and the next run starts where none had ended.
    let again = spark
        .store
        .materialize(&quiver_ops::Caller::Trusted, &request, &|_| {}, None)
        .unwrap();
    assert_eq!((again[0].start, again[0].rows_written), (i64::MIN, 200_000));
}
