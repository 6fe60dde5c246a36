//! Materialization: windows, newest-wins across runs, watermarks, late data, bad input.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{ArrayRef, Float64Array, Int64Array};
use quiver_core::KeyColumns;
use quiver_online::{ComputedRun, FieldStatus, ScanFacts, ViewTarget, Window};
use quiver_source::VersionedRows;

use crate::support::{HOUR, MINUTE, On, Place, Repo, StatRow, T0, stat, write_stats};

/// Hourly rows for drivers 1..=3 over 10 hours, rate = driver + hour / 100, in two files with
/// small row groups.
fn hourly() -> Vec<Vec<StatRow>> {
    let rows: Vec<StatRow> = (0..10)
        .flat_map(|h| {
            (1..=3).map(move |d| stat(d, T0 + h * HOUR, T0 + h * HOUR, d as f64 + h as f64 / 100.0))
        })
        .collect();
    let (a, b) = rows.split_at(15);
    vec![a.to_vec(), b.to_vec()]
}

fn latest_row_per_key_within_the_window(on: &On) {
    let repo = Repo::new(on, &hourly());
    let reports = repo.materialize(
        &["driver_stats"],
        Window::Range {
            start: T0,
            end: T0 + 4 * HOUR,
        },
    );
    let r = &reports[0];
    assert_eq!((r.rows_in_window, r.files), (15, 2));
    assert!(
        r.row_groups_read < 8,
        "row groups past the window are skipped: {r:?}"
    );
    let got = repo.rates(&[1, 2, 3], T0 + 4 * HOUR);
    assert_eq!(
        got.iter().map(|g| g.0.unwrap()).collect::<Vec<_>>(),
        [1.04, 2.04, 3.04]
    );
}

fn out_of_order_and_repeated_windows_give_the_same_store(on: &On) {
    let ordered = Repo::new(on, &hourly());
    ordered.materialize(
        &[],
        Window::Range {
            start: T0,
            end: T0 + 4 * HOUR,
        },
    );
    ordered.materialize(
        &[],
        Window::Range {
            start: T0 + 5 * HOUR,
            end: T0 + 9 * HOUR,
        },
    );

    let shuffled = Repo::new(on, &hourly());
    shuffled.materialize(
        &[],
        Window::Range {
            start: T0 + 5 * HOUR,
            end: T0 + 9 * HOUR,
        },
    );
    shuffled.materialize(
        &[],
        Window::Range {
            start: T0,
            end: T0 + 4 * HOUR,
        },
    );
    shuffled.materialize(
        &[],
        Window::Range {
            start: T0 + 5 * HOUR,
            end: T0 + 9 * HOUR,
        },
    );

    let now = T0 + 9 * HOUR;
    assert_eq!(
        ordered.rates(&[1, 2, 3], now),
        shuffled.rates(&[1, 2, 3], now)
    );
    assert_eq!(
        shuffled.rates(&[2], now)[0],
        (Some(2.09), FieldStatus::Present, Some(T0 + 9 * HOUR))
    );
}

fn ties_go_to_the_greater_created_time_then_to_the_later_row(on: &On) {
    let repo = Repo::new(
        on,
        &[
            vec![
                stat(1, T0, T0 + 5, 0.5),
                stat(1, T0, T0 + 9, 0.9),
                stat(1, T0, T0 + 1, 0.1),
            ],
            vec![stat(2, T0, T0, 0.1), stat(2, T0, T0, 0.2)],
            vec![stat(2, T0, T0, 0.3)],
        ],
    );
    repo.materialize(&[], Window::Range { start: T0, end: T0 });
    let got = repo.rates(&[1, 2], T0);
    assert_eq!(got[0].0, Some(0.9));
    assert_eq!(
        got[1].0,
        Some(0.3),
        "equal (event, created): the last row in file order wins"
    );
}

fn incremental_runs_advance_the_watermark_and_lookback_picks_up_late_data(on: &On) {
    let repo = Repo::new(on, &hourly());
    // First run: from end - ttl (1h).
    let r = repo.materialize(
        &["driver_stats"],
        Window::Incremental {
            end: T0 + 4 * HOUR,
            lookback: Duration::ZERO,
        },
    );
    assert_eq!((r[0].start, r[0].end), (T0 + 3 * HOUR, T0 + 4 * HOUR));
    assert_eq!(
        repo.store.watermark(&repo.id("driver_stats")).unwrap(),
        Some(T0 + 4 * HOUR)
    );
    let r = repo.materialize(
        &["driver_stats"],
        Window::Incremental {
            end: T0 + 6 * HOUR,
            lookback: Duration::ZERO,
        },
    );
    assert_eq!((r[0].start, r[0].end), (T0 + 4 * HOUR, T0 + 6 * HOUR));
    assert_eq!(repo.rates(&[1], T0 + 6 * HOUR)[0].0, Some(1.06));

    // A late row for hour 5 of driver 1 lands in a new file after the watermark passed it.
    write_stats(
        &repo.stats_file(2),
        &[stat(1, T0 + 5 * HOUR + 30 * MINUTE, T0 + 7 * HOUR, 7.0)],
        4,
    );
    let r = repo.materialize(
        &["driver_stats"],
        Window::Incremental {
            end: T0 + 6 * HOUR,
            lookback: Duration::ZERO,
        },
    );
    assert_eq!(r[0].rows_in_window, 3, "only rows at the watermark itself");
    assert_eq!(
        repo.rates(&[1], T0 + 6 * HOUR)[0].0,
        Some(1.06),
        "the late row is older than the stored one"
    );

    write_stats(
        &repo.stats_file(3),
        &[stat(3, T0 + 6 * HOUR, T0 + 8 * HOUR, 9.0)],
        4,
    );
    let r = repo.materialize(
        &["driver_stats"],
        Window::Incremental {
            end: T0 + 6 * HOUR,
            lookback: Duration::from_secs(7200),
        },
    );
    assert_eq!(r[0].start, T0 + 4 * HOUR);
    assert_eq!(
        repo.rates(&[3], T0 + 6 * HOUR)[0].0,
        Some(9.0),
        "a correction with a later created time wins"
    );
    assert_eq!(
        repo.store.watermark(&repo.id("driver_stats")).unwrap(),
        Some(T0 + 6 * HOUR)
    );
}

fn null_keys_and_timestamps_are_skipped_and_counted(on: &On) {
    let repo = Repo::new(
        on,
        &[vec![
            stat(1, T0, T0, 0.1),
            StatRow {
                driver: None,
                ..stat(0, T0, T0, 0.2)
            },
            StatRow {
                event: None,
                ..stat(2, T0, T0, 0.3)
            },
        ]],
    );
    let r = repo.materialize(&["driver_stats"], Window::Range { start: T0, end: T0 });
    assert_eq!(
        (
            r[0].rows_in_window,
            r[0].skipped_null_key,
            r[0].skipped_null_timestamp
        ),
        (1, 1, 1)
    );
    assert_eq!(repo.rates(&[2], T0)[0].1, FieldStatus::NotFound);
}

fn bad_source_data_fails_clearly_and_keeps_the_watermark(on: &On) {
    let repo = Repo::new(on, &hourly());
    let run = |repo: &Repo| {
        repo.try_materialize(
            &["driver_stats"],
            Window::Incremental {
                end: T0 + 9 * HOUR,
                lookback: Duration::ZERO,
            },
        )
    };
    run(&repo).unwrap();

    // A file whose `rate` column is a string.
    let bad = repo.stats_file(1);
    let schema = Arc::new(arrow::datatypes::Schema::new(vec![
        arrow::datatypes::Field::new("driver_id", arrow::datatypes::DataType::Int64, false),
        arrow::datatypes::Field::new(
            "event_timestamp",
            arrow::datatypes::DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, None),
            false,
        ),
        arrow::datatypes::Field::new(
            "created",
            arrow::datatypes::DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, None),
            false,
        ),
        arrow::datatypes::Field::new("rate", arrow::datatypes::DataType::Utf8, false),
        arrow::datatypes::Field::new("trips", arrow::datatypes::DataType::Int64, false),
    ]));
    let batch = arrow::array::RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from(vec![1])),
            Arc::new(arrow::array::TimestampMicrosecondArray::from(vec![
                T0 + 20 * HOUR,
            ])),
            Arc::new(arrow::array::TimestampMicrosecondArray::from(vec![
                T0 + 20 * HOUR,
            ])),
            Arc::new(arrow::array::StringArray::from(vec!["high"])),
            Arc::new(Int64Array::from(vec![1])),
        ],
    )
    .unwrap();
    let mut w =
        parquet::arrow::ArrowWriter::try_new(std::fs::File::create(&bad).unwrap(), schema, None)
            .unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    let err = run(&repo).unwrap_err().to_string();
    assert!(
        err.contains("part-1.parquet")
            && err.contains("feature column 'rate' has type Utf8, expected float64"),
        "{err}"
    );
    assert_eq!(
        repo.store.watermark(&repo.id("driver_stats")).unwrap(),
        Some(T0 + 9 * HOUR)
    );

    // A source whose files vanished.
    std::fs::remove_dir_all(repo.dir.path().join("data/stats")).unwrap();
    let err = run(&repo).unwrap_err().to_string();
    let named = match repo.place {
        Place::Disk => err.contains("data/stats") && err.contains("not found"),
        Place::S3 => err.contains("/stats: no Parquet objects match"),
    };
    assert!(named, "{err}");
    assert_eq!(
        repo.store.watermark(&repo.id("driver_stats")).unwrap(),
        Some(T0 + 9 * HOUR)
    );
}

fn offline_only_views_are_refused_by_name(on: &On) {
    let mut repo = Repo::new(on, &hourly());
    repo.defs
        .feature_views
        .get_mut("driver_stats")
        .unwrap()
        .online = false;
    let err = repo
        .try_materialize(&["driver_stats"], Window::Range { start: T0, end: T0 })
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("feature view 'driver_stats' is not online"),
        "{err}"
    );
}

fn concurrent_readers_never_see_a_torn_row(on: &On) {
    const DRIVERS: i64 = 5_000;
    let rows: Vec<StatRow> = (0..20)
        .flat_map(|h| {
            (1..=DRIVERS).map(move |d| stat(d, T0 + h * HOUR, T0, d as f64 + h as f64 / 100.0))
        })
        .collect();
    let files: Vec<Vec<StatRow>> = rows.chunks(20_000).map(<[StatRow]>::to_vec).collect();
    let repo = Repo::new(on, &files);
    let done = std::sync::atomic::AtomicBool::new(false);
    let mut checked = 0;
    std::thread::scope(|s| {
        s.spawn(|| {
            repo.materialize(
                &["driver_stats"],
                Window::Range {
                    start: i64::MIN,
                    end: i64::MAX,
                },
            );
            done.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        let drivers: Vec<i64> = (1..=DRIVERS).step_by(7).collect();
        while !done.load(std::sync::atomic::Ordering::SeqCst) {
            for (d, (rate, _, event)) in drivers.iter().zip(repo.rates(&drivers, T0)) {
                if let (Some(rate), Some(event)) = (rate, event) {
                    let hour = ((rate - *d as f64) * 100.0).round() as i64;
                    assert_eq!(
                        event,
                        T0 + hour * HOUR,
                        "driver {d}: value and event time from different rows"
                    );
                    checked += 1;
                }
            }
        }
    });
    assert!(checked > 0, "the reader ran while rows were being written");
    assert_eq!(repo.rates(&[DRIVERS], T0)[0].0, Some(DRIVERS as f64 + 0.19));
}

/// Rows computed elsewhere (a Spark cluster): written newest-wins whatever order they arrive
/// in, the watermark moved only when the run finishes.
fn computed_rows_are_written_newest_wins_and_commit_at_finish(on: &On) {
    let repo = Repo::new(on, &hourly());
    let store = repo.store.as_ref();
    let view = repo.defs.view("driver_stats").unwrap();
    let target = ViewTarget {
        view,
        source: &repo.defs.sources[&view.source],
        keys: repo.defs.join_keys(view).unwrap(),
        id: repo.id("driver_stats"),
    };
    let rows = |drivers: Vec<i64>, events: Vec<i64>, rates: Vec<f64>| {
        let keys: ArrayRef = Arc::new(Int64Array::from(drivers));
        let trips: ArrayRef = Arc::new(Int64Array::from(vec![7; rates.len()]));
        VersionedRows {
            keys: KeyColumns::new(&target.keys, &[&keys]).unwrap(),
            versions: events.into_iter().map(|e| (e, 0, 0)).collect(),
            features: vec![Arc::new(Float64Array::from(rates)), trips],
        }
    };
    let window = Window::Incremental {
        end: T0 + 4 * HOUR,
        lookback: Duration::ZERO,
    };
    let run = ComputedRun::start(store, &target, window).unwrap();
    run.write(
        store,
        &rows(
            vec![2, 1],
            vec![T0 + 3 * HOUR, T0 + 2 * HOUR],
            vec![2.5, 1.5],
        ),
    )
    .unwrap();
    // An older row of driver 1 arriving later does not replace the newer one.
    run.write(store, &rows(vec![1], vec![T0 + HOUR], vec![9.9]))
        .unwrap();
    let mut short = rows(vec![3], vec![T0], vec![3.5]);
    short.features.pop();
    let err = run.write(store, &short).unwrap_err();
    assert!(err.to_string().contains("driver_stats"), "{err}");
    assert_eq!(store.watermark(&target.id).unwrap(), None);
    let facts = ScanFacts {
        files: 2,
        row_groups_read: 3,
        rows_scanned: 30,
        rows_in_window: 12,
        skipped_null_key: 1,
        skipped_null_timestamp: 2,
    };
    let report = run.finish(store, facts).unwrap();
    assert_eq!(
        (
            report.rows_written,
            report.rows_in_window,
            report.skipped_null_key
        ),
        (3, 12, 1)
    );
    assert_eq!(report.newest_event_ts, Some(T0 + 3 * HOUR));
    assert_eq!(store.watermark(&target.id).unwrap(), Some(T0 + 4 * HOUR));
    let got = repo.rates(&[1, 2], T0 + 3 * HOUR);
    assert_eq!((got[0].0, got[1].0), (Some(1.5), Some(2.5)));
}

on_every_backend_and_s3_sources!(
    computed_rows_are_written_newest_wins_and_commit_at_finish,
    latest_row_per_key_within_the_window,
    out_of_order_and_repeated_windows_give_the_same_store,
    ties_go_to_the_greater_created_time_then_to_the_later_row,
    incremental_runs_advance_the_watermark_and_lookback_picks_up_late_data,
    null_keys_and_timestamps_are_skipped_and_counted,
    bad_source_data_fails_clearly_and_keeps_the_watermark,
    offline_only_views_are_refused_by_name,
    concurrent_readers_never_see_a_torn_row,
);
