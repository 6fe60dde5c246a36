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
    let views = quiver_ok(repo, &["--json", "list", "views"]).json();
    let names: Vec<&str> = views
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["driver_customer_trips", "driver_hourly_stats"]);
    // The schema Feast inferred through Quiver is what Quiver registered.
    assert_eq!(views[0]["features"][0]["name"], "trips_together");
    let log = quiver_ok(repo, &["registry", "log"]).stdout;
    let feast_versions = log.lines().filter(|l| l.contains("feast (")).count();
    // Two `feast apply`s (the second with a change); the refused one registered nothing.
    assert_eq!(feast_versions, 2, "{log}");
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
    let tags = quiver_ok(repo, &["--json", "list", "views"]).json();
    assert_eq!(tags[1]["tags"], serde_json::json!({"team": "drivers"}));
    // Objects Quiver cannot represent are refused by name, with the reason.
    let refused = report["refused"].as_str().unwrap();
    assert!(
        refused.contains("data source 'vals' cannot be applied to Quiver: request sources"),
        "{refused}"
    );
}
