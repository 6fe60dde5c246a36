//! init → plan → apply → list/describe → remove → history, through the real binary.

use quiver_e2e::{example_repo, quiver, quiver_ok, quiver_within};
use tempfile::TempDir;

#[test]
fn init_plan_apply_list_describe() {
    let dir = example_repo();
    let repo = dir.path();
    for file in [
        "quiver.yaml",
        "entities.yaml",
        "features.yaml",
        "data/driver_hourly_stats.parquet",
        "data/customer_profile.parquet",
        "data/driver_customer_trips/part-0.parquet",
    ] {
        assert!(repo.join(file).exists(), "{file} missing");
    }

    let plan = quiver_ok(repo, &["plan"]);
    assert!(
        plan.stdout
            .contains("+ feature view     driver_customer_trips"),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout.contains("9 to add, 0 to change, 0 to remove."),
        "{}",
        plan.stdout
    );
    let plan_json = quiver_ok(repo, &["--json", "plan"]).json();
    assert_eq!(plan_json["changes"].as_array().unwrap().len(), 9);
    assert!(plan_json["based_on"].is_null());

    let apply = quiver_ok(repo, &["apply"]);
    assert!(
        apply
            .stdout
            .contains("Applied registry version 1 of project 'demo'"),
        "{}",
        apply.stdout
    );
    let again = quiver_ok(repo, &["apply"]);
    assert!(
        again
            .stdout
            .contains("No changes; project 'demo' stays at registry version 1."),
        "{}",
        again.stdout
    );

    let views = quiver_ok(repo, &["list", "views"]);
    let lines: Vec<&str> = views.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{}", views.stdout);
    assert!(lines[0].starts_with("NAME") && lines[0].contains("TTL"));
    let composite = lines
        .iter()
        .find(|l| l.starts_with("driver_customer_trips"))
        .unwrap();
    assert!(
        composite.contains("driver, customer") && composite.contains("7d"),
        "{composite}"
    );

    let listed = quiver_ok(repo, &["--json", "list", "entities"]).json();
    assert_eq!(listed[0]["name"], "customer");
    assert_eq!(listed[0]["join_keys"][0]["type"], "string");

    let described = quiver_ok(repo, &["describe", "view", "driver_hourly_stats"]);
    assert!(described.stdout.contains("ttl: 1d"), "{}", described.stdout);
    assert!(
        described.stdout.contains("  - name: conv_rate"),
        "{}",
        described.stdout
    );
    let service = quiver_ok(repo, &["--json", "describe", "service", "driver_activity"]).json();
    assert_eq!(service["features"][0], "driver_hourly_stats:*");

    let missing = quiver(repo, &["describe", "view", "nope"]);
    assert!(!missing.ok);
    assert!(
        missing
            .stderr
            .contains("project 'demo' has no feature view named 'nope'"),
        "{}",
        missing.stderr
    );
}

#[test]
fn removing_a_definition_is_planned_applied_and_kept_in_history() {
    let dir = example_repo();
    let repo = dir.path();
    quiver_ok(repo, &["apply"]);

    let features = std::fs::read_to_string(repo.join("features.yaml")).unwrap();
    let cut = features.find("feature_services:").unwrap();
    let edited = features[..cut].replace("ttl: 2d", "ttl: 3d");
    std::fs::write(repo.join("features.yaml"), edited).unwrap();

    let plan = quiver_ok(repo, &["plan"]);
    assert!(
        plan.stdout.contains("- feature service  driver_activity"),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout.contains("~ feature view     customer_profile"),
        "{}",
        plan.stdout
    );
    assert!(plan.stdout.contains("ttl: 2d -> 3d"), "{}", plan.stdout);
    assert!(
        plan.stdout.contains("0 to add, 1 to change, 1 to remove."),
        "{}",
        plan.stdout
    );
    quiver_ok(repo, &["apply"]);

    let services = quiver_ok(repo, &["--json", "list", "services"]).json();
    assert_eq!(services.as_array().unwrap().len(), 0);

    let log = quiver_ok(repo, &["registry", "log"]);
    let lines: Vec<&str> = log.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", log.stdout);
    assert!(
        lines[1].starts_with('2') && lines[1].contains("e2e") && lines[1].contains("+0 ~1 -1"),
        "{}",
        log.stdout
    );
    assert!(
        lines[2].starts_with('1') && lines[2].contains("+9 ~0 -0"),
        "{}",
        log.stdout
    );

    let v1 = quiver_ok(repo, &["--json", "registry", "show", "1"]).json();
    assert_eq!(v1["version"], 1);
    assert_eq!(v1["author"], "e2e");
    assert!(v1["definitions"]["feature_services"]["driver_activity"].is_object());
    let shown = quiver_ok(repo, &["registry", "show", "2"]);
    assert!(shown.stdout.starts_with("version: 2\n"), "{}", shown.stdout);

    let diff = quiver_ok(repo, &["registry", "diff", "1", "2"]);
    assert!(
        diff.stdout.contains("- feature service  driver_activity"),
        "{}",
        diff.stdout
    );
    let back = quiver_ok(repo, &["--json", "registry", "diff", "2", "1"]).json();
    assert_eq!(back["changes"][1]["action"], "added");

    let unknown = quiver(repo, &["registry", "show", "9"]);
    assert!(
        !unknown.ok && unknown.stderr.contains("no registry version 9"),
        "{}",
        unknown.stderr
    );
}

#[test]
fn invalid_definitions_fail_with_every_located_error_and_register_nothing() {
    let dir = example_repo();
    let repo = dir.path();
    let features = std::fs::read_to_string(repo.join("features.yaml")).unwrap();
    let broken = features
        .replace("ttl: 1d", "ttl: one day")
        .replace(
            "{name: acc_rate, type: float32}",
            "{name: acc_rate, type: float128}",
        )
        .replace(
            "customer_profile:current_balance",
            "customer_profile:balance",
        );
    std::fs::write(repo.join("features.yaml"), broken).unwrap();

    let apply = quiver(repo, &["apply"]);
    assert!(!apply.ok);
    assert!(apply.stderr.contains("3 error(s)"), "{}", apply.stderr);
    assert!(
        apply.stderr.contains(
            "features.yaml:22: feature view 'driver_hourly_stats': ttl: invalid duration 'one day'"
        ),
        "{}",
        apply.stderr
    );
    assert!(
        apply.stderr.contains("unknown type 'float128'"),
        "{}",
        apply.stderr
    );
    assert!(
        apply
            .stderr
            .contains("feature view 'customer_profile' has no feature 'balance'"),
        "{}",
        apply.stderr
    );
    let log = quiver(repo, &["registry", "log"]);
    assert!(
        !log.ok && log.stderr.contains("no registry version yet"),
        "{}",
        log.stderr
    );
}

#[test]
fn every_command_has_help_and_usage_errors_fail() {
    let dir = TempDir::new().unwrap();
    for args in [
        &["--help"][..],
        &["init", "--help"],
        &["plan", "--help"],
        &["apply", "--help"],
        &["list", "--help"],
        &["describe", "--help"],
        &["registry", "--help"],
        &["registry", "log", "--help"],
        &["registry", "show", "--help"],
        &["registry", "diff", "--help"],
    ] {
        let run = quiver_ok(dir.path(), args);
        assert!(run.stdout.contains("Usage:"), "{args:?}: {}", run.stdout);
    }
    assert!(!quiver(dir.path(), &["list", "widgets"]).ok);
    let not_repo = quiver(dir.path(), &["plan"]);
    assert!(
        !not_repo.ok && not_repo.stderr.contains("is not a feature repository"),
        "{}",
        not_repo.stderr
    );
}

#[cfg(unix)]
#[test]
fn symlink_loops_in_a_source_folder_are_reported_not_followed() {
    let dir = example_repo();
    let repo = dir.path();
    let folder = repo.join("data/driver_customer_trips");
    std::os::unix::fs::symlink(".", folder.join("x")).unwrap();
    std::os::unix::fs::symlink(".", folder.join("y")).unwrap();
    let plan = quiver_within(repo, &["plan"], 20);
    assert!(!plan.ok);
    assert!(
        plan.stderr.contains("driver_customer_trips/x") && plan.stderr.contains("same folder"),
        "{}",
        plan.stderr
    );
    // One loop is an error too, not the data read again and again.
    std::fs::remove_file(folder.join("y")).unwrap();
    let plan = quiver_within(repo, &["plan"], 20);
    assert!(
        !plan.ok && plan.stderr.contains("same folder"),
        "{}",
        plan.stderr
    );
}

#[test]
fn files_the_registry_did_not_write_are_ignored() {
    let dir = example_repo();
    let repo = dir.path();
    quiver_ok(repo, &["apply"]);
    let versions = repo.join("registry/projects/demo/versions");
    std::fs::write(versions.join("2.json"), "{not a version}").unwrap();
    std::fs::write(versions.join("notes.txt"), "hello").unwrap();
    quiver_ok(repo, &["plan"]);
    let log = quiver_ok(repo, &["registry", "log"]);
    assert_eq!(log.stdout.lines().count(), 2, "{}", log.stdout);
    std::fs::write(
        repo.join("later.yaml"),
        "feature_views:\n  - name: later\n    entities: [driver]\n    source: driver_stats_source\n    features:\n      - {name: conv_rate, type: float32}\n",
    )
    .unwrap();
    let apply = quiver_ok(repo, &["apply"]);
    assert!(
        apply.stdout.contains("Applied registry version 2"),
        "{}",
        apply.stdout
    );
}

#[test]
fn plan_exit_codes_gate_a_pipeline() {
    let dir = example_repo();
    let repo = dir.path();
    let code = |args: &[&str]| {
        std::process::Command::new(quiver_e2e::quiver_bin())
            .arg("--repo")
            .arg(repo)
            .args(args)
            .output()
            .unwrap()
            .status
            .code()
    };
    // Everything is new: a change.
    assert_eq!(code(&["plan", "--exit-code"]), Some(2));
    quiver_ok(repo, &["apply"]);
    assert_eq!(code(&["plan", "--exit-code"]), Some(0));
    assert_eq!(
        code(&["plan", "--exit-code", "--fail-on-breaking"]),
        Some(0)
    );
    // A feature's type changes: breaking.
    let features = repo.join("features.yaml");
    let text = std::fs::read_to_string(&features).unwrap();
    std::fs::write(
        &features,
        text.replace(
            "{name: acc_rate, type: float32}",
            "{name: acc_rate, type: float64}",
        ),
    )
    .unwrap();
    assert_eq!(code(&["plan", "--exit-code"]), Some(2));
    assert_eq!(
        code(&["plan", "--exit-code", "--fail-on-breaking"]),
        Some(3)
    );
    // Invalid definitions: an error.
    std::fs::write(&features, "feature_views: [{name: x}]\n").unwrap();
    assert_eq!(code(&["plan", "--exit-code"]), Some(1));
}
