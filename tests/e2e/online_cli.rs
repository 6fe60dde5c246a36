//! Materialization and the online store through the real binary, including a SIGKILL mid-run.

use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Float32Array, Int64Array, RecordBatch, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use parquet::arrow::ArrowWriter;
use quiver_e2e::{example_repo, quiver, quiver_bin, quiver_ok};

#[test]
fn materialize_then_read_backup_and_restore() {
    let dir = example_repo();
    let repo = dir.path();
    quiver_ok(repo, &["apply"]);
    let run = quiver_ok(repo, &["--json", "materialize-incremental", "now"]).json();
    let views = run["views"].as_array().unwrap();
    assert_eq!(views.len(), 3);
    for v in views {
        assert!(v["rows_written"].as_u64().unwrap() > 0, "{v}");
    }

    let got = driver_1001(repo);
    let features = got["features"].as_array().unwrap();
    assert_eq!(features.len(), 3);
    assert!(
        features
            .iter()
            .all(|f| f["status"] == "PRESENT" || f["status"] == "NULL_VALUE"),
        "{got}"
    );
    let composite = quiver_ok(
        repo,
        &[
            "online",
            "get",
            "--view",
            "driver_customer_trips",
            "--key",
            "customer_id=C1001",
            "--key",
            "driver_id=1001",
        ],
    );
    assert!(
        composite.stdout.contains("trips_together"),
        "{}",
        composite.stdout
    );
    let missing = quiver_ok(
        repo,
        &[
            "--json",
            "online",
            "get",
            "--view",
            "driver_hourly_stats",
            "--key",
            "driver_id=9",
        ],
    )
    .json();
    assert_eq!(missing["features"][0]["status"], "NOT_FOUND");
    let bad = quiver(
        repo,
        &[
            "online",
            "get",
            "--view",
            "driver_hourly_stats",
            "--key",
            "driver_id=abc",
        ],
    );
    assert!(
        !bad.ok
            && bad
                .stderr
                .contains("join key 'driver_id' is int64, got 'abc'"),
        "{}",
        bad.stderr
    );

    let stats = quiver_ok(repo, &["--json", "online", "stats"]).json();
    assert!(
        stats["watermarks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|w| w["watermark"].is_string()),
        "{stats}"
    );

    let backup = repo.join("backup");
    quiver_ok(repo, &["online", "backup", backup.to_str().unwrap()]);
    // A restore brings back what the backup holds.
    quiver_ok(repo, &["materialize", "2000-01-01", "2000-01-02"]);
    let stats_before = quiver_ok(repo, &["--json", "online", "stats"]).json();
    std::fs::remove_dir_all(repo.join("online_store")).unwrap();
    assert_eq!(driver_1001(repo)["features"][0]["status"], "NOT_FOUND");
    quiver_ok(repo, &["online", "restore", backup.to_str().unwrap()]);
    assert_eq!(driver_1001(repo), got, "restored");
    assert_eq!(
        quiver_ok(repo, &["--json", "online", "stats"]).json()["watermarks"],
        stats_before["watermarks"]
    );
    // Taking the view offline deletes its online data on apply.
    let features = std::fs::read_to_string(repo.join("features.yaml")).unwrap();
    std::fs::write(
        repo.join("features.yaml"),
        features.replace("    ttl: 1d\n", "    ttl: 1d\n    online: false\n"),
    )
    .unwrap();
    let apply = quiver_ok(repo, &["apply"]);
    assert!(
        apply
            .stdout
            .contains("Deleted the online data of feature view 'driver_hourly_stats'"),
        "{}",
        apply.stdout
    );
    std::fs::write(repo.join("features.yaml"), features).unwrap();
    quiver_ok(repo, &["apply"]);
    let gone = driver_1001(repo);
    assert_eq!(gone["features"][0]["status"], "NOT_FOUND");

    // The view was re-created after the backup: its backed-up rows belong to the earlier
    // incarnation and are not served again.
    let restore = quiver_ok(repo, &["online", "restore", backup.to_str().unwrap()]);
    assert!(
        restore
            .stdout
            .contains("Dropped the backup's rows of feature view 'driver_hourly_stats'"),
        "{}",
        restore.stdout
    );
    assert_eq!(driver_1001(repo)["features"][0]["status"], "NOT_FOUND");
    let customers = quiver_ok(
        repo,
        &[
            "--json",
            "online",
            "get",
            "--view",
            "customer_profile",
            "--key",
            "customer_id=C1001",
        ],
    )
    .json();
    assert_ne!(
        customers["features"][0]["status"], "NOT_FOUND",
        "views that stayed keep the backup's rows: {customers}"
    );
}

/// `quiver online get` of driver 1001's hourly stats, as JSON.
fn driver_1001(repo: &Path) -> serde_json::Value {
    quiver_ok(
        repo,
        &[
            "--json",
            "online",
            "get",
            "--view",
            "driver_hourly_stats",
            "--key",
            "driver_id=1001",
        ],
    )
    .json()
}

const DRIVERS: i64 = 50_000;
const HOURS: i64 = 96;

/// Replaces the example's driver data with DRIVERS x HOURS rows whose features are functions
/// of (driver, event time), so a torn or mixed row is detectable.
fn write_big_driver_stats(repo: &Path, end_us: i64) {
    let tz = Some("UTC".into());
    let schema = Arc::new(Schema::new(vec![
        Field::new("driver_id", DataType::Int64, false),
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
        Field::new("acc_rate", DataType::Float32, true),
        Field::new("trips", DataType::Int64, false),
    ]));
    let path = repo.join("data/driver_hourly_stats.parquet");
    let mut w = ArrowWriter::try_new(File::create(path).unwrap(), schema.clone(), None).unwrap();
    for h in 0..HOURS {
        let event = end_us - (HOURS - 1 - h) * 3_600_000_000;
        let ids: Vec<i64> = (0..DRIVERS).collect();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(ids.clone())),
                Arc::new(
                    TimestampMicrosecondArray::from(vec![event; ids.len()]).with_timezone("UTC"),
                ),
                Arc::new(
                    TimestampMicrosecondArray::from(vec![event; ids.len()]).with_timezone("UTC"),
                ),
                Arc::new(Float32Array::from(
                    ids.iter()
                        .map(|d| (d % 100) as f32 + h as f32)
                        .collect::<Vec<_>>(),
                )),
                Arc::new(Float32Array::from(vec![h as f32; ids.len()])),
                Arc::new(Int64Array::from(
                    ids.iter().map(|d| d * 1000 + h).collect::<Vec<_>>(),
                )),
            ],
        )
        .unwrap();
        w.write(&batch).unwrap();
    }
    w.close().unwrap();
}

fn sample(repo: &Path) -> Vec<serde_json::Value> {
    (0..DRIVERS)
        .step_by(2_499)
        .map(|d| {
            let key = format!("driver_id={d}");
            let got = quiver_ok(
                repo,
                &[
                    "--json",
                    "online",
                    "get",
                    "--view",
                    "driver_hourly_stats",
                    "--key",
                    &key,
                ],
            )
            .json();
            let f = &got["features"];
            // Every stored row is whole: its three features come from the same source row.
            let h = f[1]["value"].as_f64().unwrap() as i64;
            assert_eq!(
                f[0]["value"].as_f64().unwrap() as i64,
                d % 100 + h,
                "torn row for {d}: {got}"
            );
            assert_eq!(
                f[2]["value"].as_i64().unwrap(),
                d * 1000 + h,
                "torn row for {d}: {got}"
            );
            got
        })
        .collect()
}

#[test]
fn a_killed_materialization_resumes_to_the_same_store() {
    let end = "2024-03-01T00:00:00Z";
    let end_us = 1_709_251_200_000_000;
    let killed = example_repo();
    let clean = example_repo();
    for dir in [&killed, &clean] {
        write_big_driver_stats(dir.path(), end_us);
        quiver_ok(dir.path(), &["apply"]);
    }
    let args = [
        "--json",
        "materialize-incremental",
        end,
        "--views",
        "driver_hourly_stats",
    ];

    // Kill the run part-way (trying shorter delays if a run finishes first), then check
    // the watermark does not run ahead of the data.
    let mut killed_after = None;
    for delay_ms in [200, 100, 50, 25, 10, 5] {
        let mut child = Command::new(quiver_bin())
            .arg("--repo")
            .arg(killed.path())
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let running = child.try_wait().unwrap().is_none();
        child.kill().unwrap();
        child.wait().unwrap();
        if running {
            killed_after = Some(delay_ms);
            break;
        }
        // It finished: start again from an empty store.
        std::fs::remove_dir_all(killed.path().join("online_store")).unwrap();
    }
    let delay = killed_after.expect("every run finished before it could be killed; grow the data");
    let stats = quiver_ok(killed.path(), &["--json", "online", "stats"]).json();
    let wm = stats["watermarks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["view"] == "driver_hourly_stats")
        .unwrap()
        .clone();
    quiver_ok(clean.path(), &args);
    if !wm["watermark"].is_null() {
        // The kill landed after the run committed (while it was exiting): a watermark is
        // only written after its rows, so they must all be there already.
        assert_eq!(
            sample(killed.path()),
            sample(clean.path()),
            "killed after {delay} ms with the watermark written, but rows missing: {stats}"
        );
    }

    quiver_ok(killed.path(), &args);
    assert_eq!(sample(killed.path()), sample(clean.path()));
}
