//! Pushes: checked against every receiving view before anything is written, each view gets
//! its own columns, online and offline agree, small pushed files are compacted.

use quiver_core::{TimestampUnit, format_nanos, now_nanos};
use quiver_online::FieldStatus;
use quiver_ops::{InputValue, PushRequest, PushTarget};

use crate::support::{HOUR, LABELS, RATES, Repo, hour_ago};

fn time(ns: i64) -> InputValue {
    InputValue::String(format_nanos(ns))
}

/// A push to the shared source `stats` with Feast's usual shape: the union of both views'
/// columns.
fn shared(drivers: &[i64], rates: &[f64], to: PushTarget) -> PushRequest {
    let n = drivers.len();
    PushRequest {
        name: "stats".into(),
        columns: vec![
            (
                "driver_id".into(),
                drivers.iter().map(|d| InputValue::Int(*d)).collect(),
            ),
            ("event_timestamp".into(), vec![time(hour_ago()); n]),
            (
                "rate".into(),
                rates.iter().map(|r| InputValue::Float(*r)).collect(),
            ),
            ("trips".into(), vec![InputValue::Int(9); n]),
            ("label".into(), vec![InputValue::Float(0.25); n]),
        ],
        to,
        timestamp_unit: None,
    }
}

#[test]
fn a_push_to_a_shared_source_gives_every_view_its_own_columns() {
    let repo = Repo::new(&[RATES, LABELS], &[(1, hour_ago() - HOUR, 0.5, 3, 1.0)]);
    let files = repo.stats_files().len();
    let pushed = repo
        .store
        .push(
            &quiver_ops::Caller::Trusted,
            &shared(&[7, 8], &[0.5, 0.75], PushTarget::OnlineAndOffline),
        )
        .unwrap();
    assert_eq!(pushed.rows, 2);
    assert_eq!(pushed.views, ["labels", "rates"]);
    assert_eq!(
        repo.stats_files().len(),
        files + 1,
        "one offline file for both views"
    );
    assert_eq!(
        repo.read("rates:rate", &[7, 8]),
        [
            (Some(0.5), FieldStatus::Present),
            (Some(0.75), FieldStatus::Present)
        ]
    );
    assert_eq!(
        repo.read("labels:label", &[8]),
        [(Some(0.25), FieldStatus::Present)]
    );
}

#[test]
fn a_push_with_one_bad_row_writes_nothing_anywhere() {
    let repo = Repo::new(&[RATES, LABELS], &[(1, hour_ago() - HOUR, 0.5, 3, 1.0)]);
    let files = repo.stats_files();
    // 1e308 does not fit in a float32: refused, not stored as inf.
    let err = repo
        .store
        .push(
            &quiver_ops::Caller::Trusted,
            &shared(&[7, 8], &[0.5, 1e308], PushTarget::OnlineAndOffline),
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("feature 'rates:rate', row 1") && err.contains("does not fit in float32"),
        "{err}"
    );
    assert_eq!(repo.stats_files(), files, "no offline file");
    assert_eq!(
        repo.read("rates:rate", &[7]),
        [(None, FieldStatus::NotFound)],
        "no online row, not even the good one"
    );
    assert_eq!(
        repo.read("labels:label", &[7]),
        [(None, FieldStatus::NotFound)]
    );
}

#[test]
fn times_columns_and_values_are_checked() {
    let repo = Repo::new(&[RATES], &[(1, hour_ago(), 0.5, 3, 1.0)]);
    let push = |columns: Vec<(&str, Vec<InputValue>)>, unit: Option<TimestampUnit>| {
        repo.store.push(
            &quiver_ops::Caller::Trusted,
            &PushRequest {
                name: "rates".into(),
                columns: columns
                    .into_iter()
                    .map(|(n, v)| (n.to_owned(), v))
                    .collect(),
                to: PushTarget::Online,
                timestamp_unit: unit,
            },
        )
    };
    let key = || ("driver_id", vec![InputValue::Int(5)]);
    let err = |r: quiver_ops::Result<quiver_ops::PushOutcome>| r.unwrap_err().to_string();

    // A far-future time would make the row permanent: refused.
    let e = err(push(
        vec![
            key(),
            (
                "event_timestamp",
                vec![InputValue::String("9999-12-31T00:00:00Z".into())],
            ),
        ],
        None,
    ));
    assert!(e.contains("outside the range"), "{e}");
    let e = err(push(
        vec![
            key(),
            ("event_timestamp", vec![time(now_nanos() + 3 * HOUR)]),
        ],
        None,
    ));
    assert!(
        e.contains("in the future") && e.contains("max_future"),
        "{e}"
    );

    // Integer times need their unit.
    let secs = now_nanos() / 1_000_000_000 - 60;
    let e = err(push(
        vec![key(), ("event_timestamp", vec![InputValue::Int(secs)])],
        None,
    ));
    assert!(e.contains("timestamp_unit"), "{e}");
    push(
        vec![
            key(),
            ("event_timestamp", vec![InputValue::Int(secs)]),
            ("rate", vec![InputValue::Float(0.125)]),
        ],
        Some(TimestampUnit::Seconds),
    )
    .unwrap();
    assert_eq!(
        repo.read("rates:rate", &[5]),
        [(Some(0.125), FieldStatus::Present)]
    );

    // A column given twice, and a column nobody has.
    let e = err(push(
        vec![
            key(),
            ("event_timestamp", vec![time(hour_ago())]),
            ("rate", vec![InputValue::Float(0.1)]),
            ("rate", vec![InputValue::Float(0.2)]),
        ],
        None,
    ));
    assert!(e.contains("column 'rate' is given twice"), "{e}");
    let e = err(push(
        vec![
            key(),
            ("event_timestamp", vec![time(hour_ago())]),
            ("nope", vec![InputValue::Int(1)]),
        ],
        None,
    ));
    assert!(e.contains("column 'nope'"), "{e}");
    // A source column that no view reads (label) is accepted.
    push(
        vec![
            key(),
            ("event_timestamp", vec![time(hour_ago())]),
            ("label", vec![InputValue::Float(1.0)]),
        ],
        None,
    )
    .unwrap();
    // Wrong types and out-of-range integers name the feature and row.
    let e = err(push(
        vec![
            key(),
            ("event_timestamp", vec![time(hour_ago())]),
            ("trips", vec![InputValue::String("x".into())]),
        ],
        None,
    ));
    assert!(
        e.contains("feature 'rates:trips', row 0: expected int64"),
        "{e}"
    );
}

#[test]
fn many_small_pushed_files_are_compacted_without_changing_a_training_set() {
    let repo = Repo::with_config(
        "push: {compact_after_files: 8}\n",
        &[RATES],
        &[(1, hour_ago() - HOUR, 0.5, 3, 1.0)],
    );
    let t = hour_ago();
    // Equal event and created times for driver 3 in every push: the last push must win, in
    // training sets before and after compaction.
    for i in 0..40 {
        repo.store
            .push(
                &quiver_ops::Caller::Trusted,
                &PushRequest {
                    name: "rates".into(),
                    columns: vec![
                        (
                            "driver_id".into(),
                            vec![InputValue::Int(3), InputValue::Int(100 + i)],
                        ),
                        ("event_timestamp".into(), vec![time(t), time(t)]),
                        ("created".into(), vec![time(t), time(t)]),
                        (
                            "rate".into(),
                            vec![InputValue::Float(i as f64), InputValue::Float(1.0)],
                        ),
                    ],
                    to: PushTarget::Offline,
                    timestamp_unit: None,
                },
            )
            .unwrap();
    }
    // Compaction runs in the background; wait for it to settle.
    let started = std::time::Instant::now();
    while repo.stats_files().len() > 9 && started.elapsed() < std::time::Duration::from_secs(20) {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let files = repo.stats_files();
    assert!(files.len() <= 9, "{} files: {files:?}", files.len());
    assert!(
        !files
            .iter()
            .any(|f| f.file_name().unwrap().to_string_lossy().starts_with('.')),
        "no temporary file is left: {files:?}"
    );
    let sources = quiver_source::Sources::new(repo.path());
    let snapshot = repo.store.snapshot();
    let features = snapshot
        .defs
        .resolve(&["rates:rate".parse().unwrap()], false)
        .unwrap();
    let join = quiver_offline::PointInTimeJoin::new(
        &snapshot.defs,
        &sources,
        features,
        quiver_offline::JoinOptions::default(),
    )
    .unwrap();
    let entities = join.entity_rows_in_range(t, t).unwrap();
    let set = join.run(entities, &|_| {}).unwrap();
    let batches: Vec<_> = set.collect::<quiver_offline::Result<_>>().unwrap();
    let mut rates = std::collections::BTreeMap::new();
    for b in &batches {
        use arrow::array::AsArray;
        let ids = b
            .column_by_name("driver_id")
            .unwrap()
            .as_primitive::<arrow::datatypes::Int64Type>();
        let r = b
            .column_by_name("rate")
            .unwrap()
            .as_primitive::<arrow::datatypes::Float32Type>();
        for i in 0..b.num_rows() {
            rates.insert(ids.value(i), r.value(i));
        }
    }
    assert_eq!(rates.len(), 41);
    assert_eq!(
        rates[&3], 39.0,
        "the last push wins the tie after compaction"
    );
}
