//! One owner of the online store: with `quiver serve` running, the CLI's materializations and
//! online commands go through it, applies take effect in it wherever they are made, views
//! refresh on their schedules, and a server killed mid-run leaves a store the next run
//! completes.

use std::collections::HashMap;
use std::path::Path;

use quiver_e2e::{
    Server, example_repo, now_micros, online_get, quiver, quiver_ok, runs_of, runtime,
    sample_driver_stats, wait_for, watermark_of, write_big_driver_stats, write_trips,
};
use quiver_server::proto::quiver::v1 as pb;
use serde_json::Value;

fn value(kind: pb::value::Kind) -> pb::Value {
    pb::Value { kind: Some(kind) }
}

/// `trips_together` of (driver, customer) over gRPC: value and status.
fn trips(server: &Server, driver: i64, customer: &str) -> (Option<i64>, pb::FieldStatus) {
    trips_of(server, "driver_customer_trips", driver, customer)
}

fn trips_of(
    server: &Server,
    view: &str,
    driver: i64,
    customer: &str,
) -> (Option<i64>, pb::FieldStatus) {
    let response = runtime().block_on(async {
        let mut client = pb::online_service_client::OnlineServiceClient::new(server.channel());
        client
            .get_online_features(pb::GetOnlineFeaturesRequest {
                features: Some(pb::get_online_features_request::Features::FeatureRefs(
                    pb::FeatureList {
                        refs: vec![format!("{view}:trips_together")],
                    },
                )),
                entities: vec![
                    pb::Column {
                        name: "driver_id".into(),
                        values: vec![value(pb::value::Kind::Int64Value(driver))],
                    },
                    pb::Column {
                        name: "customer_id".into(),
                        values: vec![value(pb::value::Kind::StringValue(customer.into()))],
                    },
                ],
                full_feature_names: false,
            })
            .await
            .unwrap()
            .into_inner()
    });
    let column = &response.features[0];
    let v = match &column.values[0].kind {
        Some(pb::value::Kind::Int64Value(v)) => Some(*v),
        _ => None,
    };
    (v, pb::FieldStatus::try_from(column.statuses[0]).unwrap())
}

/// A second view of the example's trips, to remove and add again.
const TRIPS_AGAIN: &str = "feature_views:\n  - name: trips_again\n    entities: [driver, customer]\n    source: driver_customer_source\n    ttl: 7d\n    features:\n      - {name: trips_together, type: int64}\n";

#[test]
fn with_the_server_running_the_cli_materializes_and_reads_through_it() {
    let dir = example_repo();
    let repo = dir.path();
    quiver_ok(repo, &["apply"]);
    quiver_ok(repo, &["materialize-incremental", "now"]);
    let server = Server::start(repo);

    // New rows land after the last run; the CLI's run goes through the server.
    write_trips(
        &repo.join("data/driver_customer_trips/part-9.parquet"),
        &[(1001, "C1001", now_micros(), 777)],
    );
    let run = quiver_ok(repo, &["--json", "materialize-incremental", "now"]).json();
    let trips_report = run["views"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["view"] == "driver_customer_trips")
        .unwrap()
        .clone();
    assert_eq!(trips_report["rows_in_window"], 1, "{run}");
    assert_eq!(
        trips(&server, 1001, "C1001"),
        (Some(777), pb::FieldStatus::Present),
        "read at once"
    );

    // `online get`, `online stats`, `materialize status` and `online backup` go through it.
    let got = online_get(
        repo,
        "driver_customer_trips",
        &["driver_id=1001", "customer_id=C1001"],
    );
    assert_eq!(got["features"][0]["value"], 777, "{got}");
    let stats = quiver_ok(repo, &["--json", "online", "stats"]).json();
    assert!(
        stats["watermarks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|w| w["watermark"].is_string()),
        "{stats}"
    );
    let status = quiver_ok(repo, &["--json", "materialize", "status"]).json();
    let runs = status["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 6, "two runs of three views: {status}");
    assert!(
        runs.iter()
            .all(|r| r["outcome"] == "succeeded" && r["trigger"] == "manual"),
        "{status}"
    );
    let human = quiver_ok(
        repo,
        &["materialize", "status", "--view", "driver_customer_trips"],
    );
    assert!(human.stdout.contains("succeeded"), "{}", human.stdout);
    let backup = repo.join("backup");
    quiver_ok(repo, &["online", "backup", backup.to_str().unwrap()]);
    assert!(backup.join("CURRENT").exists());

    // Nothing replaces the store under the server, and no second server opens it.
    let restore = quiver(repo, &["online", "restore", backup.to_str().unwrap()]);
    assert!(!restore.ok, "{}", restore.stdout);
    assert!(
        restore.stderr.contains("holds the online store") && restore.stderr.contains("stop it"),
        "{}",
        restore.stderr
    );
    assert_eq!(
        trips(&server, 1001, "C1001").0,
        Some(777),
        "the store is untouched"
    );
    let second = std::process::Command::new(quiver_e2e::quiver_bin())
        .arg("--repo")
        .arg(repo)
        .args([
            "serve",
            "--grpc-port",
            "0",
            "--http-port",
            "0",
            "--flight-port",
            "0",
        ])
        .output()
        .unwrap();
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        err.contains("held by another process") && err.contains("quiver serve, pid"),
        "{err}"
    );
    assert!(server.stop());
}

/// Applies the example's files (plus `extra`) over gRPC; returns the deleted views.
fn grpc_apply(server: &Server, repo: &Path, extra: Option<&str>) -> pb::ApplyResponse {
    let mut files = HashMap::new();
    for name in ["entities.yaml", "features.yaml"] {
        files.insert(
            name.to_owned(),
            std::fs::read_to_string(repo.join(name)).unwrap(),
        );
    }
    if let Some(text) = extra {
        files.insert("extra.yaml".to_owned(), text.to_owned());
    }
    runtime().block_on(async {
        pb::registry_service_client::RegistryServiceClient::new(server.channel())
            .apply(pb::ApplyRequest {
                files,
                based_on: None,
                author: "e2e".into(),
            })
            .await
            .unwrap()
            .into_inner()
    })
}

#[test]
fn a_view_removed_over_grpc_loses_its_online_data_and_comes_back_empty() {
    let dir = example_repo();
    let repo = dir.path();
    std::fs::write(repo.join("extra.yaml"), TRIPS_AGAIN).unwrap();
    quiver_ok(repo, &["apply"]);
    quiver_ok(repo, &["materialize-incremental", "now"]);
    std::fs::remove_file(repo.join("extra.yaml")).unwrap();
    let server = Server::start(repo);
    let (stored, status) = trips_of(&server, "trips_again", 1001, "C1001");
    assert_eq!(status, pb::FieldStatus::Present, "{stored:?}");

    let removed = grpc_apply(&server, repo, None);
    assert_eq!(removed.online_views_deleted, ["trips_again"]);
    let added = grpc_apply(&server, repo, Some(TRIPS_AGAIN));
    assert!(added.online_views_deleted.is_empty());
    assert_eq!(
        trips_of(&server, "trips_again", 1001, "C1001"),
        (None, pb::FieldStatus::NotFound),
        "the re-added view never serves the removed view's rows"
    );
    assert_eq!(
        trips(&server, 1001, "C1001").1,
        pb::FieldStatus::Present,
        "other views keep theirs"
    );
}

#[test]
fn a_cli_apply_while_the_server_runs_takes_effect_in_the_server() {
    let dir = example_repo();
    let repo = dir.path();
    std::fs::write(repo.join("extra.yaml"), TRIPS_AGAIN).unwrap();
    quiver_ok(repo, &["apply"]);
    quiver_ok(repo, &["materialize-incremental", "now"]);
    let server = Server::start(repo);
    assert_eq!(
        trips_of(&server, "trips_again", 1001, "C1001").1,
        pb::FieldStatus::Present
    );

    std::fs::remove_file(repo.join("extra.yaml")).unwrap();
    let apply = quiver_ok(repo, &["apply"]);
    assert!(
        apply
            .stdout
            .contains("Deleted the online data of feature view 'trips_again'")
            && apply.stdout.contains("made the version current"),
        "{}",
        apply.stdout
    );
    std::fs::write(repo.join("extra.yaml"), TRIPS_AGAIN).unwrap();
    quiver_ok(repo, &["apply"]);
    assert_eq!(
        trips_of(&server, "trips_again", 1001, "C1001"),
        (None, pb::FieldStatus::NotFound)
    );
}

#[test]
fn a_scheduled_view_refreshes_on_its_own() {
    let dir = example_repo();
    let repo = dir.path();
    let features = std::fs::read_to_string(repo.join("features.yaml")).unwrap();
    std::fs::write(
        repo.join("features.yaml"),
        features.replace(
            "    source: driver_customer_source\n",
            "    source: driver_customer_source\n    materialization: {every: 1s, lookback: 1h}\n",
        ),
    )
    .unwrap();
    quiver_ok(repo, &["apply"]);
    let server = Server::start(repo);
    wait_for("the first scheduled run", 30, || {
        trips(&server, 1001, "C1001").1 != pb::FieldStatus::NotFound
    });
    write_trips(
        &repo.join("data/driver_customer_trips/part-9.parquet"),
        &[(1001, "C1001", now_micros(), 4242)],
    );
    wait_for("the new rows", 30, || {
        trips(&server, 1001, "C1001").0 == Some(4242)
    });
    let status = quiver_ok(
        repo,
        &[
            "--json",
            "materialize",
            "status",
            "--view",
            "driver_customer_trips",
        ],
    )
    .json();
    let runs = status["runs"].as_array().unwrap();
    assert!(runs.len() >= 2, "{status}");
    assert!(runs.iter().all(|r| r["trigger"] == "schedule"), "{status}");
    assert!(
        runs.iter()
            .any(|r| r["outcome"] == "succeeded" && r["rows_written"].as_u64().unwrap() >= 1),
        "{status}"
    );
    let others = quiver_ok(
        repo,
        &[
            "--json",
            "materialize",
            "status",
            "--view",
            "customer_profile",
        ],
    )
    .json();
    assert_eq!(
        others["runs"],
        Value::Array(Vec::new()),
        "views without a schedule are left alone"
    );
    assert!(server.stop(), "a clean stop cancels the schedule");
}

const DRIVERS: i64 = 100_000;
const HOURS: i64 = 30;

fn sample(repo: &Path) -> Vec<Value> {
    sample_driver_stats(repo, DRIVERS, 1_999)
}

#[test]
fn a_server_killed_mid_run_leaves_a_store_the_next_run_completes() {
    let end = (now_micros() / 3_600_000_000) * 3_600_000_000;
    let killed = example_repo();
    let clean = example_repo();
    for dir in [&killed, &clean] {
        write_big_driver_stats(dir.path(), DRIVERS, HOURS, end);
        let features = std::fs::read_to_string(dir.path().join("features.yaml")).unwrap();
        std::fs::write(
            dir.path().join("features.yaml"),
            features.replace(
                "    source: driver_stats_source\n",
                "    source: driver_stats_source\n    materialization: {every: 1h}\n",
            ),
        )
        .unwrap();
        quiver_ok(dir.path(), &["apply"]);
    }
    let repo = killed.path();
    // The first scheduled run starts at once; kill the server while it is running.
    let server = Server::start(repo);
    let running = |r: &Value| r["outcome"] == "running";
    wait_for("a scheduled run in progress", 60, || {
        runs_of(repo, "driver_hourly_stats").iter().any(running)
    });
    server.kill();
    // The kill can land after the run committed its watermark (while it was recording its
    // outcome): a written watermark must then mean every row is there.
    let watermark = watermark_of(repo, "driver_hourly_stats");
    let runs = runs_of(repo, "driver_hourly_stats");
    assert!(
        runs[0]["outcome"] == "interrupted" || runs[0]["outcome"] == "succeeded",
        "a run the server did not finish is interrupted: {runs:?}"
    );
    quiver_ok(
        clean.path(),
        &[
            "materialize-incremental",
            "now",
            "--views",
            "driver_hourly_stats",
        ],
    );
    let expected = sample(clean.path());
    if !watermark.is_null() {
        assert_eq!(
            sample(repo),
            expected,
            "a watermark was written without its rows"
        );
    }

    // Restarted, the server runs again (the interrupted run is not a success) and completes
    // the window: the store equals one materialized without a kill.
    let server = Server::start(repo);
    wait_for("the run after the restart", 120, || {
        runs_of(repo, "driver_hourly_stats")
            .iter()
            .any(|r| r["outcome"] == "succeeded")
    });
    assert!(server.stop());
    assert_eq!(sample(repo), expected);
}
