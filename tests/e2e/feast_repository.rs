//! A Feast repository run against one `quiver serve` with `registry`, `offline_store` and
//! `online_store` all pointed at it (Feast 0.67's CLI and SDK, unchanged).

use std::path::Path;

use quiver_e2e::{Server, example_repo, python_json, quiver_ok};

#[test]
fn a_feast_repository_runs_against_quiver_unchanged() {
    let dir = example_repo();
    let repo = dir.path();
    quiver_ok(repo, &["apply"]);
    let server = Server::start(repo);
    let (host, port) = server.flight_host_port();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/feast_registry.py");
    let report = python_json(
        &script,
        [
            repo.as_os_str(),
            server.grpc.as_ref(),
            host.as_ref(),
            port.as_ref(),
            server.http.as_ref(),
        ],
    );
    // Every Quiver definition is visible to Feast's SDK as the Feast object it is.
    let before = &report["before"];
    assert_eq!(
        before["views"],
        serde_json::json!([
            "customer_profile",
            "driver_customer_trips",
            "driver_hourly_stats"
        ]),
        "{report}"
    );
    assert_eq!(before["services"], serde_json::json!(["driver_activity"]));
    assert_eq!(
        before["entities"],
        serde_json::json!(["customer", "driver"])
    );
    assert_eq!(
        before["driver"],
        serde_json::json!(["driver_id", "ValueType.INT64"])
    );
    // `feast apply` makes Feast's repository the registry's content: one new version.
    let apply = report["apply"].as_str().unwrap();
    assert!(
        apply.contains("Removing infrastructure for customer_profile"),
        "{apply}"
    );
    assert_eq!(
        report["after"]["views"],
        serde_json::json!(["driver_customer_trips", "driver_hourly_stats"])
    );
    let dump = report["dump"].as_str().unwrap();
    assert!(dump.contains("\"driver_stats_source\""), "{dump}");
    let unchanged = report["plan_unchanged"].as_str().unwrap();
    assert!(unchanged.contains("No changes to registry"), "{unchanged}");
    // What Feast applied is what Quiver registered (the schema Feast inferred through Quiver
    // included), in the version after Quiver's own.
    let applied = quiver_ok(repo, &["--json", "registry", "show", "2"]).json();
    let views = &applied["definitions"]["feature_views"];
    assert_eq!(
        views.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["driver_customer_trips", "driver_hourly_stats"],
        "{applied}"
    );
    assert_eq!(
        views["driver_customer_trips"]["features"][0]["name"],
        "trips_together"
    );
    let log = quiver_ok(repo, &["registry", "log"]).stdout;
    let feast_versions = log.lines().filter(|l| l.contains("feast (")).count();
    // Two `feast apply`s (the second with a change) and `feast teardown`; the refused apply
    // registered nothing.
    assert_eq!(feast_versions, 3, "{log}");
    // `feast materialize` ran Quiver's materialization; the SDK reads through Quiver.
    let online = &report["online"];
    assert!(
        online["conv_rate"]
            .as_array()
            .unwrap()
            .iter()
            .all(serde_json::Value::is_number),
        "{report}"
    );
    assert_eq!(report["historical"], online["conv_rate"], "{report}");
    // Materialization intervals Feast records are what it reads back.
    assert_eq!(
        report["most_recent_end_time"], report["materialized_until"],
        "{report}"
    );
    // A saved dataset is registered and read back through Quiver.
    let saved = &report["saved"];
    assert_eq!(
        saved["listed"],
        serde_json::json!(["driver_training"]),
        "{report}"
    );
    assert_eq!(
        saved["features"],
        serde_json::json!(["driver_hourly_stats:conv_rate"])
    );
    assert_eq!(saved["conv_rate"], online["conv_rate"], "{report}");
    assert!(repo.join("saved/driver_training.parquet").is_file());
    // `feast plan` shows a change, and the next `feast apply` registers it.
    let plan = report["plan"].as_str().unwrap();
    assert!(
        plan.contains("Updated feature view driver_hourly_stats"),
        "{plan}"
    );
    assert_eq!(
        report["tags_after_apply"],
        serde_json::json!({"team": "drivers"})
    );
    let changed = quiver_ok(repo, &["--json", "registry", "show", "3"]).json();
    assert_eq!(
        changed["definitions"]["feature_views"]["driver_hourly_stats"]["tags"],
        serde_json::json!({"team": "drivers"})
    );
    // Objects Quiver cannot represent are refused by name, with the reason.
    let refused = report["refused"].as_str().unwrap();
    assert!(
        refused.contains("data source 'vals' cannot be applied to Quiver: request sources"),
        "{refused}"
    );
    // `feast teardown` leaves the project without definitions, in one more version.
    let views = quiver_ok(repo, &["--json", "list", "views"]).json();
    assert_eq!(views, serde_json::json!([]), "{}", report["teardown"]);
}
