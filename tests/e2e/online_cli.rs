//! Materialization and the online store through the real binary, including a SIGKILL mid-run.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use quiver_e2e::{
    example_repo, quiver, quiver_bin, quiver_ok, sample_driver_stats, watermark_of,
    write_big_driver_stats,
};

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

fn sample(repo: &Path) -> Vec<serde_json::Value> {
    sample_driver_stats(repo, DRIVERS, 2_499)
}

#[test]
fn a_killed_materialization_resumes_to_the_same_store() {
    let (end_us, end) = quiver_e2e::this_hour();
    let end = end.as_str();
    let killed = example_repo();
    let clean = example_repo();
    for dir in [&killed, &clean] {
        write_big_driver_stats(dir.path(), DRIVERS, HOURS, end_us);
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
    let watermark = watermark_of(killed.path(), "driver_hourly_stats");
    quiver_ok(clean.path(), &args);
    if !watermark.is_null() {
        // The kill landed after the run committed (while it was exiting): a watermark is
        // only written after its rows, so they must all be there already.
        assert_eq!(
            sample(killed.path()),
            sample(clean.path()),
            "killed after {delay} ms with the watermark written, but rows missing (watermark {watermark})"
        );
    }

    quiver_ok(killed.path(), &args);
    assert_eq!(sample(killed.path()), sample(clean.path()));
}
