//! Pulls against a simple reference on random data (two files, ties, nulls), and the
//! hand-written rules: both window ends inclusive, the created time then the later row break
//! ties, mapped names, clear errors.

use std::collections::BTreeMap;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Int64Type, TimestampMicrosecondType};
use proptest::prelude::*;
use quiver_offline::{PullMode, PullRequest, pull};

use crate::support::*;

fn request(mode: PullMode, start: i64, end: i64) -> PullRequest {
    PullRequest {
        keys: vec!["id".into()],
        features: vec!["value".into()],
        timestamp_field: "ts".into(),
        created_timestamp_column: Some("created".into()),
        start: (T0 + start * SEC) * 1000,
        end: (T0 + end * SEC) * 1000,
        mode,
    }
}

/// A pulled row: `(id, ts, value)`.
type Pulled = (Option<i64>, i64, Option<i64>);

/// `(id, ts, value)` of every pulled row (ids and times as given, seconds after T0), sorted.
fn pulled(data: &Data, request: &PullRequest, threads: usize) -> Vec<Pulled> {
    let (defs, sources) = data.open(&definitions(0, 0));
    let rows = pull(&sources, &defs.sources["stats"], request, threads).unwrap();
    let schema = rows.schema();
    let batches: Vec<RecordBatch> = rows.collect::<Result<_, _>>().unwrap();
    let mut out = Vec::new();
    for b in &batches {
        assert_eq!(b.schema(), schema);
        let id = b.column_by_name("id").unwrap().as_primitive::<Int64Type>();
        let value = b
            .column_by_name("value")
            .unwrap()
            .as_primitive::<Int64Type>();
        let ts = b
            .column_by_name("ts")
            .unwrap()
            .as_primitive::<TimestampMicrosecondType>();
        for i in 0..b.num_rows() {
            let get = |a: &arrow::array::Int64Array| a.is_valid(i).then(|| a.value(i));
            out.push((get(id), (ts.value(i) - T0) / SEC, get(value)));
        }
    }
    out.sort();
    out
}

/// The spec's rule, literally: rows with `start <= ts <= end`; for the latest, per non-null
/// key the greatest `(ts, created, file, row)`.
fn reference(files: &[&[Row]], mode: PullMode, start: i64, end: i64) -> Vec<Pulled> {
    let mut all = Vec::new();
    // Per key: ((event, created, file, row), value) of the newest row.
    type Newest = ((i64, i64, usize, usize), Option<i64>);
    let mut latest: BTreeMap<i64, Newest> = BTreeMap::new();
    for (f, rows) in files.iter().enumerate() {
        for (r, row) in rows.iter().enumerate() {
            let Some(ts) = row.ts.filter(|ts| (start..=end).contains(ts)) else {
                continue;
            };
            all.push((row.id, ts, row.value));
            if let Some(id) = row.id {
                let version = (ts, row.created.unwrap_or(i64::MIN), f, r);
                if latest.get(&id).is_none_or(|(v, _)| *v < version) {
                    latest.insert(id, (version, row.value));
                }
            }
        }
    }
    let mut out = match mode {
        PullMode::All => all,
        PullMode::Latest => latest
            .into_iter()
            .map(|(id, ((ts, ..), value))| (Some(id), ts, value))
            .collect(),
    };
    out.sort();
    out
}

fn source_row() -> impl Strategy<Value = Row> {
    (
        prop::option::weighted(0.9, 0i64..5),
        prop::option::weighted(0.9, 0i64..20),
        prop::option::weighted(0.8, 0i64..4),
        prop::option::weighted(0.9, -50i64..50),
    )
        .prop_map(|(id, ts, created, value)| Row {
            id,
            zone: Some("z".into()),
            ts,
            created,
            value,
        })
}

/// Two files of random rows and a random window.
fn pull_case() -> impl Strategy<Value = (Vec<Row>, Vec<Row>, i64, i64, usize, usize, bool)> {
    (
        prop::collection::vec(source_row(), 0..30),
        prop::collection::vec(source_row(), 0..30),
        0i64..12,
        0i64..12,
        1usize..6,
        1usize..3,
        any::<bool>(),
    )
}

fn pulls_match_the_reference(
    place: Place,
    (a, b, start, len, row_group, threads, latest): (
        Vec<Row>,
        Vec<Row>,
        i64,
        i64,
        usize,
        usize,
        bool,
    ),
) -> Result<(), TestCaseError> {
    let data = Data::new(place);
    write_source(&data.path().join("stats/a.parquet"), &a, row_group);
    write_source(&data.path().join("stats/b.parquet"), &b, row_group);
    let mode = if latest {
        PullMode::Latest
    } else {
        PullMode::All
    };
    let got = pulled(&data, &request(mode, start, start + len), threads);
    prop_assert_eq!(got, reference(&[&a, &b], mode, start, start + len));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn pulls_match_the_reference_on_disk(case in pull_case()) {
        pulls_match_the_reference(Place::Disk, case)?;
    }

    #[test]
    fn pulls_match_the_reference_on_s3(case in pull_case()) {
        pulls_match_the_reference(Place::S3, case)?;
    }
}

fn both_ends_are_inclusive_and_ties_go_to_created_then_the_later_row(place: Place) {
    let dir = Data::new(place);
    let rows = [
        row(1, 2, 0, 10),
        row(1, 5, 3, 11),
        row(1, 5, 9, 12), // greatest created at ts 5: wins
        row(1, 5, 9, 13), // same version, later row: wins
        row(1, 6, 0, 14), // after the window
        row(2, 1, 0, 20), // before the window
        row(2, 2, 0, 21), // at the start: inside
    ];
    write_source(&dir.path().join("stats/a.parquet"), &rows, 2);
    let latest = pulled(&dir, &request(PullMode::Latest, 2, 5), 2);
    assert_eq!(latest, vec![(Some(1), 5, Some(13)), (Some(2), 2, Some(21))]);
    let all = pulled(&dir, &request(PullMode::All, 2, 5), 1);
    assert_eq!(all.len(), 5);
}

fn mapped_names_and_bad_columns(place: Place) {
    let dir = Data::new(place);
    write_source(&dir.path().join("zones.parquet"), &[row(1, 1, 0, 5)], 4);
    let (defs, sources) = dir.open(&definitions(0, 0));
    let zones = &defs.sources["zones"];
    let mut r = request(PullMode::Latest, 0, 9);
    r.features = vec!["demand".into()];
    let batches: Vec<RecordBatch> = pull(&sources, zones, &r, 1)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let demand = batches[0].column_by_name("demand").unwrap();
    assert_eq!(demand.as_primitive::<Int64Type>().value(0), 5);
    // Feast names the file's column.
    r.features = vec!["value".into()];
    let batches: Vec<RecordBatch> = pull(&sources, zones, &r, 1)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let value = batches[0].column_by_name("value").unwrap();
    assert_eq!(value.as_primitive::<Int64Type>().value(0), 5);

    let message = |r: &PullRequest| pull(&sources, zones, r, 1).unwrap_err().to_string();
    let mut bad = r.clone();
    bad.features = vec!["nope".into()];
    assert!(
        message(&bad).contains("no feature column 'nope'"),
        "{}",
        message(&bad)
    );
    let mut bad = r.clone();
    bad.timestamp_field = "created".into();
    assert!(message(&bad).contains("the timestamp_field is 'ts', not 'created'"));
    let mut bad = r;
    bad.keys = vec!["id".into(), "id".into()];
    assert!(
        message(&bad).contains("asked for twice"),
        "{}",
        message(&bad)
    );
}

quiver_testkit::on_disk_and_s3!(
    both_ends_are_inclusive_and_ties_go_to_created_then_the_later_row,
    mapped_names_and_bad_columns,
);
