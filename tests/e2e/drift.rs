//! Statistics and drift through the real binary: `quiver monitor profile` against exact
//! statistics of the generated data, and `quiver monitor drift` on weeks of synthetic rides
//! where exactly one numeric and one categorical feature shift.

use std::path::Path;
use std::sync::Arc;

use arrow::array::TimestampMicrosecondArray;
use arrow::array::{BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use quiver_e2e::{example_repo, quiver_exit, quiver_ok, write_parquet};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

/// Riders per week (each has one ride a week).
const RIDERS: i64 = 5000;
/// 2026-01-01T00:00:00Z in µs.
const JAN_1: i64 = 1_767_225_600_000_000;
const WEEK: i64 = 7 * 86_400_000_000;

const DEFINITIONS: &str = "
entities:
  - name: rider
    join_keys: [{name: rider_id, type: int64}]
sources:
  - name: rides_source
    path: data/rides
    timestamp_field: event_timestamp
feature_views:
  - name: rides
    entities: [rider]
    source: rides_source
    online: false
    monitoring:
      chi_squared_p_value: 0.001
      features:
        distance: {psi: 0.25}
    features:
      - {name: fare, type: float64}
      - {name: distance, type: float64}
      - {name: city, type: string}
      - {name: premium, type: bool}
      - {name: passengers, type: int64}
";

/// One week of rides: the fare's mean and the cities' weights are what `shifted` changes.
struct Week {
    fare: Vec<f64>,
    distance: Vec<Option<f64>>,
    city: Vec<&'static str>,
    premium: Vec<bool>,
    passengers: Vec<i64>,
}

fn normal(rng: &mut StdRng, mean: f64, sd: f64) -> f64 {
    let (u, v): (f64, f64) = (rng.random_range(1e-12..1.0), rng.random());
    mean + sd * (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
}

fn write_week(repo: &Path, index: i64, shifted: bool, seed: u64) -> Week {
    let mut rng = StdRng::seed_from_u64(seed);
    let n = RIDERS as usize;
    let weights = if shifted {
        [0.2, 0.3, 0.5]
    } else {
        [0.5, 0.3, 0.2]
    };
    let mut week = Week {
        fare: Vec::with_capacity(n),
        distance: Vec::with_capacity(n),
        city: Vec::with_capacity(n),
        premium: Vec::with_capacity(n),
        passengers: Vec::with_capacity(n),
    };
    for _ in 0..n {
        week.fare
            .push(normal(&mut rng, if shifted { 25.0 } else { 20.0 }, 5.0));
        let d = normal(&mut rng, 5.0, 2.0);
        week.distance.push(rng.random_bool(0.95).then_some(d));
        let u: f64 = rng.random();
        week.city.push(if u < weights[0] {
            "lisbon"
        } else if u < weights[0] + weights[1] {
            "porto"
        } else {
            "faro"
        });
        week.premium.push(rng.random_bool(0.3));
        week.passengers.push(rng.random_range(1..=4));
    }
    let start = JAN_1 + index * WEEK;
    // Rides spread over the week, never on its last microsecond's edge.
    let times: Vec<i64> = (0..RIDERS).map(|i| start + i * (WEEK / RIDERS)).collect();
    let schema = Arc::new(Schema::new(vec![
        Field::new("rider_id", DataType::Int64, false),
        Field::new(
            "event_timestamp",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("fare", DataType::Float64, false),
        Field::new("distance", DataType::Float64, true),
        Field::new("city", DataType::Utf8, false),
        Field::new("premium", DataType::Boolean, false),
        Field::new("passengers", DataType::Int64, false),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from_iter_values(0..RIDERS)),
            Arc::new(TimestampMicrosecondArray::from(times).with_timezone("UTC")),
            Arc::new(Float64Array::from(week.fare.clone())),
            Arc::new(Float64Array::from(week.distance.clone())),
            Arc::new(StringArray::from(week.city.clone())),
            Arc::new(BooleanArray::from(week.premium.clone())),
            Arc::new(Int64Array::from(week.passengers.clone())),
        ],
    )
    .unwrap();
    std::fs::create_dir_all(repo.join("data/rides")).unwrap();
    write_parquet(
        &repo.join(format!("data/rides/week-{index}.parquet")),
        &batch,
    );
    week
}

/// A repository with weeks 0 and 2 alike and week 1 shifted.
fn rides_repo() -> (tempfile::TempDir, Week) {
    let dir = example_repo();
    let repo = dir.path();
    let reference = write_week(repo, 0, false, 1);
    write_week(repo, 1, true, 2);
    write_week(repo, 2, false, 3);
    std::fs::write(repo.join("rides.yaml"), DEFINITIONS).unwrap();
    quiver_ok(repo, &["apply"]);
    (dir, reference)
}

const WEEK_0: &str = "2026-01-01..2026-01-08";
const WEEK_1: &str = "2026-01-08..2026-01-15";
const WEEK_2: &str = "2026-01-15..2026-01-22";

fn feature<'a>(report: &'a Value, name: &str, key: &str) -> &'a Value {
    report[key]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["feature"] == name || f["name"] == name)
        .unwrap_or_else(|| panic!("{name} missing: {report}"))
}

/// The features a report calls drifted, and for each the statistics that breached.
fn breaches(report: &Value) -> Vec<(String, Vec<String>)> {
    report["features"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["verdict"] == "drifted")
        .map(|f| {
            let stats = f["scores"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|s| s["breached"] == true)
                .map(|s| s["statistic"].as_str().unwrap().to_owned())
                .collect();
            (f["feature"].as_str().unwrap().to_owned(), stats)
        })
        .collect()
}

#[test]
fn drift_flags_exactly_the_shifted_features_at_each_statistic() {
    let (dir, _) = rides_repo();
    let repo = dir.path();
    let html = repo.join("drift.html");
    let drift = |reference: &str, current: &str, code: i32| {
        quiver_exit(
            repo,
            &[
                "--json",
                "monitor",
                "drift",
                "--view",
                "rides",
                "--reference",
                reference,
                "--current",
                current,
                "--html",
                html.to_str().unwrap(),
            ],
            code,
        )
        .json()
    };
    let report = drift(WEEK_0, WEEK_1, 2);
    assert_eq!(
        breaches(&report),
        [
            (
                "fare".to_owned(),
                vec!["psi".to_owned(), "kolmogorov_smirnov".to_owned()]
            ),
            (
                "city".to_owned(),
                vec![
                    "psi".to_owned(),
                    "jensen_shannon".to_owned(),
                    "chi_squared_p_value".to_owned()
                ]
            ),
        ],
        "{report}"
    );
    // Every statistic that applies was computed, and the declared thresholds were used.
    let distance = feature(&report, "distance", "features");
    assert_eq!(distance["verdict"], "stable");
    assert_eq!(distance["scores"][0]["threshold"], 0.25);
    let premium = feature(&report, "premium", "features");
    let statistics: Vec<&str> = premium["scores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["statistic"].as_str().unwrap())
        .collect();
    assert_eq!(statistics, ["psi", "jensen_shannon", "chi_squared_p_value"]);
    // A one-sigma shift of the fare: a KS distance of 2 Phi(0.5) - 1 = 0.383.
    let ks = &feature(&report, "fare", "features")["scores"][1]["value"];
    assert!((ks.as_f64().unwrap() - 0.383).abs() < 0.03, "{ks}");

    // The page: self-contained, drifted features first, a chart per feature.
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.starts_with("<!DOCTYPE html>"));
    assert!(!page.contains("<script") && !page.contains("src=\"http"));
    assert_eq!(page.matches("<svg xmlns").count(), 5);
    let at = |name: &str| page.find(&format!("<section id=\"{name}\"")).unwrap();
    assert!(at("fare") < at("distance") && at("city") < at("premium"));

    // Alike weeks: nothing drifted, exit 0; a window without rows: no data, not drifted.
    assert_eq!(breaches(&drift(WEEK_0, WEEK_2, 0)), []);
    let empty = drift(WEEK_0, "2027-01-01..2027-01-08", 0);
    assert!(
        empty["features"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["verdict"] == "no_data"),
        "{empty}"
    );

    // The table names every feature and its verdict.
    let table = quiver_exit(
        repo,
        &[
            "monitor",
            "drift",
            "--view",
            "rides",
            "--reference",
            WEEK_0,
            "--current",
            WEEK_1,
        ],
        2,
    );
    assert!(
        table.stdout.contains("fare") && table.stdout.contains("drifted"),
        "{}",
        table.stdout
    );

    // Bad input: a clear error naming what is wrong.
    let bad = quiver_exit(
        repo,
        &["monitor", "drift", "--view", "rides", "--current", WEEK_1],
        1,
    );
    assert!(
        bad.stderr.contains("monitoring.reference"),
        "{}",
        bad.stderr
    );
    let bad = quiver_exit(
        repo,
        &[
            "monitor",
            "drift",
            "--view",
            "rides",
            "--reference",
            "2026-01-08..2026-01-01",
            "--current",
            WEEK_1,
        ],
        1,
    );
    assert!(bad.stderr.contains("is empty"), "{}", bad.stderr);
}

#[test]
fn profiles_agree_with_exact_statistics_and_are_kept_beside_the_data() {
    let (dir, reference) = rides_repo();
    let repo = dir.path();
    let args = [
        "--json", "monitor", "profile", "--view", "rides", "--data", WEEK_0,
    ];
    let profile = quiver_ok(repo, &args).json();
    assert_eq!(profile["rows"], RIDERS);
    assert_eq!(profile["stored"], false);

    let n = RIDERS as f64;
    let fare = feature(&profile, "fare", "features");
    let mut sorted = reference.fare.clone();
    sorted.sort_by(f64::total_cmp);
    let mean = sorted.iter().sum::<f64>() / n;
    let sd = (sorted.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
    let num = &fare["numeric"];
    assert_eq!(num["min"].as_f64(), Some(sorted[0]));
    assert_eq!(num["max"].as_f64(), sorted.last().copied());
    assert!((num["mean"].as_f64().unwrap() - mean).abs() < 1e-9);
    assert!((num["stddev"].as_f64().unwrap() - sd).abs() < 1e-9);
    // Quantiles within the sketch's stated rank error (1%).
    for q in num["quantiles"].as_array().unwrap() {
        let (q, v) = (q[0].as_f64().unwrap(), q[1].as_f64().unwrap());
        let rank = sorted.partition_point(|&x| x <= v) as f64 / n;
        assert!(
            (rank - q).abs() <= 0.01 + 1.0 / n,
            "q={q}: value {v} has rank {rank}"
        );
    }
    assert!((fare["distinct"].as_f64().unwrap() - n).abs() <= 0.065 * n);

    let distance = feature(&profile, "distance", "features");
    let missing = reference.distance.iter().filter(|d| d.is_none()).count();
    assert_eq!(distance["nulls"], missing);
    let city = feature(&profile, "city", "features");
    let count = |c: &str| reference.city.iter().filter(|x| **x == c).count();
    assert_eq!(
        city["top"][0],
        serde_json::json!(["lisbon", count("lisbon")])
    );
    assert_eq!(city["distinct"], 3);
    let premium = feature(&profile, "premium", "features");
    let yes = reference.premium.iter().filter(|p| **p).count();
    assert!(
        premium["top"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!(["true", yes]))
    );
    let passengers = feature(&profile, "passengers", "features");
    assert_eq!(passengers["distinct"], 4);
    assert_eq!(passengers["numeric"]["min"], 1.0);

    // Kept beside the data: asked again, it is read back, not recomputed.
    let stored = std::fs::read_dir(repo.join("_profiles/rides"))
        .unwrap()
        .count();
    assert_eq!(stored, 1);
    let again = quiver_ok(repo, &args).json();
    assert_eq!(again["stored"], true);
    assert_eq!(again["features"], profile["features"]);
    // A changed file is read again.
    write_week(repo, 0, false, 9);
    assert_eq!(quiver_ok(repo, &args).json()["stored"], false);
}

#[test]
fn a_training_set_profile_is_a_reference() {
    let (dir, _) = rides_repo();
    let repo = dir.path();
    // Every rider just before week 0 ends: the training set holds week 0's rows.
    let entities = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("rider_id", DataType::Int64, false),
            Field::new(
                "event_timestamp",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
        ])),
        vec![
            Arc::new(Int64Array::from_iter_values(0..RIDERS)),
            Arc::new(
                TimestampMicrosecondArray::from(vec![JAN_1 + WEEK - 1; RIDERS as usize])
                    .with_timezone("UTC"),
            ),
        ],
    )
    .unwrap();
    write_parquet(&repo.join("entities.parquet"), &entities);
    std::fs::create_dir_all(repo.join("training")).unwrap();
    quiver_ok(
        repo,
        &[
            "training-set",
            "--entities",
            repo.join("entities.parquet").to_str().unwrap(),
            "--features",
            "rides:*",
            "--full-feature-names",
            "--out",
            repo.join("training/rides.parquet").to_str().unwrap(),
        ],
    );
    let drift = |current: &str, code: i32| {
        let args = [
            "--json",
            "monitor",
            "drift",
            "--view",
            "rides",
            "--reference",
            "training/rides.parquet",
            "--current",
            current,
        ];
        quiver_exit(repo, &args, code).json()
    };
    // The same rows as week 0 (sketched in another order): every score near 0.
    let same = drift(WEEK_0, 0);
    for f in same["features"].as_array().unwrap() {
        assert_eq!(f["verdict"], "stable");
        assert!(f["scores"][0]["value"].as_f64().unwrap() < 0.01, "{f}");
    }
    let shifted = drift(WEEK_1, 2);
    let drifted: Vec<String> = breaches(&shifted).into_iter().map(|(f, _)| f).collect();
    assert_eq!(drifted, ["fare", "city"]);
    // A file without any of the view's features is refused by name.
    let bad = quiver_exit(
        repo,
        &[
            "monitor",
            "profile",
            "--view",
            "rides",
            "--data",
            "entities.parquet",
        ],
        1,
    );
    assert!(
        bad.stderr
            .contains("no column of a feature of view 'rides'"),
        "{}",
        bad.stderr
    );
}
