//! Every validation error, with its file, line, object and message.

use quiver_core::{KeyType, ValueType};

use crate::support::{TestRepo, VALID, assert_error};

#[test]
fn valid_repository_with_composite_keys_loads() {
    let repo = TestRepo::new();
    repo.write("features.yaml", VALID);
    let defs = repo.load().unwrap();
    let view = defs.view("driver_place").unwrap();
    let keys = defs.join_keys(view).unwrap();
    let names: Vec<_> = keys.iter().map(|k| (k.name.as_str(), k.key_type)).collect();
    assert_eq!(
        names,
        [
            ("driver_id", KeyType::Int64),
            ("region", KeyType::String),
            ("zone", KeyType::Int32)
        ]
    );
    assert_eq!(view.ttl.to_string(), "1d12h");
    assert_eq!(
        defs.view("driver_stats").unwrap().features[1].value_type,
        "int64".parse::<ValueType>().unwrap()
    );
    // `conv_rate` is in both views: only full feature names tell them apart.
    assert!(defs.resolve_service("model_a", false).is_err());
    assert_eq!(defs.resolve_service("model_a", true).unwrap().len(), 3);
}

#[test]
fn objects_may_be_split_across_files_and_folders() {
    let repo = TestRepo::new();
    let (entities, rest) = VALID.split_at(VALID.find("sources:").unwrap());
    repo.write("entities.yaml", entities)
        .write("defs/rest.yml", rest);
    let defs = repo.load().unwrap();
    assert_eq!(defs.entities.len(), 2);
    assert_eq!(defs.feature_services.len(), 1);
}

#[test]
fn unknown_entity_source_and_view_are_named_with_lines() {
    let repo = TestRepo::new();
    repo.write(
        "features.yaml",
        &VALID
            .replace("entities: [driver]", "entities: [drivr]")
            .replace(
                "    source: stats\n    ttl: 36h",
                "    source: statz\n    ttl: 36h",
            )
            .replace("\"driver_place:conv_rate\"", "\"driver_plaec:conv_rate\""),
    );
    let errors = repo.errors();
    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert_error(
        &errors,
        &[
            "features.yaml:17",
            "feature view 'driver_stats'",
            "unknown entity 'drivr'",
        ],
    );
    assert_error(
        &errors,
        &[
            "features.yaml:25",
            "feature view 'driver_place'",
            "unknown source 'statz'",
        ],
    );
    assert_error(
        &errors,
        &[
            "features.yaml:31",
            "feature service 'model_a'",
            "unknown feature view 'driver_plaec'",
        ],
    );
}

#[test]
fn duplicate_names_point_to_the_first_definition() {
    let repo = TestRepo::new();
    repo.write("features.yaml", VALID).write(
        "more.yaml",
        "entities:\n  - name: driver\n    join_keys: [{name: driver_id, type: int64}]\n",
    );
    let errors = repo.errors();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_error(
        &errors,
        &[
            "more.yaml:2",
            "entity 'driver'",
            "duplicate entity name (first defined at features.yaml:3)",
        ],
    );
}

#[test]
fn bad_types_and_durations_are_reported() {
    let repo = TestRepo::new();
    repo.write(
        "features.yaml",
        &VALID
            .replace(
                "{name: driver_id, type: int64}",
                "{name: driver_id, type: float64}",
            )
            .replace(
                "{name: conv_rate, type: float32}",
                "{name: conv_rate, type: float}",
            )
            .replace("ttl: 1d\n", "ttl: 1 day\n"),
    );
    let errors = repo.errors();
    assert_error(
        &errors,
        &[
            "features.yaml:4",
            "entity 'driver'",
            "invalid join key type 'float64'",
        ],
    );
    assert_error(
        &errors,
        &[
            "features.yaml:21",
            "feature view 'driver_stats'",
            "feature 'conv_rate': unknown type 'float'",
        ],
    );
    assert_error(
        &errors,
        &[
            "features.yaml:19",
            "feature view 'driver_stats'",
            "ttl: invalid duration '1 day'",
        ],
    );
}

#[test]
fn a_freshness_must_be_a_positive_duration() {
    let repo = TestRepo::new();
    repo.write(
        "features.yaml",
        &VALID.replacen("ttl: 1d\n", "ttl: 1d\n    freshness: 0s\n", 1),
    );
    assert_error(
        &repo.errors(),
        &[
            "features.yaml:20",
            "feature view 'driver_stats'",
            "freshness must be more than 0",
        ],
    );
    repo.write(
        "features.yaml",
        &VALID.replacen("ttl: 1d\n", "ttl: 1d\n    freshness: soon\n", 1),
    );
    assert_error(
        &repo.errors(),
        &["features.yaml:20", "freshness: invalid duration 'soon'"],
    );
    repo.write(
        "features.yaml",
        &VALID.replacen("ttl: 1d\n", "ttl: 1d\n    freshness: 90m\n", 1),
    );
    let defs = repo.load().expect("valid");
    assert_eq!(
        defs.feature_views["driver_stats"].freshness.map(|f| f.0),
        Some(std::time::Duration::from_secs(5400))
    );
}

#[test]
fn monitoring_thresholds_are_checked_and_kept() {
    let repo = TestRepo::new();
    let with = |monitoring: &str| {
        VALID.replacen(
            "ttl: 1d\n",
            &format!("ttl: 1d\n    monitoring: {monitoring}\n"),
            1,
        )
    };
    repo.write("features.yaml", &with("{psi: 0, chi_squared_p_value: 1.5}"));
    let errors = repo.errors();
    assert_error(
        &errors,
        &[
            "features.yaml:20",
            "feature view 'driver_stats'",
            "monitoring.psi must be more than 0",
        ],
    );
    assert_error(
        &errors,
        &["monitoring.chi_squared_p_value must be more than 0 and below 1, got 1.5"],
    );
    repo.write("features.yaml", &with("{features: {nope: {psi: 0.1}}}"));
    assert_error(
        &repo.errors(),
        &["monitoring.features: 'nope' is not a feature of this view"],
    );
    repo.write("features.yaml", &with("{reference: /etc/passwd}"));
    assert_error(
        &repo.errors(),
        &["monitoring.reference: invalid data selection '/etc/passwd'"],
    );
    repo.write("features.yaml", &with("{pis: 0.1}"));
    assert_error(&repo.errors(), &["features.yaml:20", "pis"]);
    repo.write(
        "features.yaml",
        &with("{reference: 2024-01-01..2024-02-01, jensen_shannon: 0.2, features: {conv_rate: {psi: 0.05}}}"),
    );
    let defs = repo.load().expect("valid");
    let m = defs.feature_views["driver_stats"]
        .monitoring
        .clone()
        .unwrap();
    assert_eq!(
        m.reference.as_ref().map(ToString::to_string).as_deref(),
        Some("2024-01-01..2024-02-01")
    );
    let t = m.thresholds_for("conv_rate");
    assert_eq!(
        (t.psi, t.jensen_shannon, t.kolmogorov_smirnov),
        (Some(0.05), Some(0.2), Some(0.1))
    );
    // Written back as a definition file and read again: the same.
    let text = quiver_registry::definitions_file(&defs);
    repo.write("features.yaml", &text);
    assert_eq!(
        repo.load().expect("valid").feature_views["driver_stats"].monitoring,
        defs.feature_views["driver_stats"].monitoring
    );
}

#[test]
fn a_service_logs_a_share_of_reads_to_a_folder_under_the_data_root() {
    let repo = TestRepo::new();
    let with = |logging: &str| {
        VALID.replacen(
            "  - name: model_a\n",
            &format!("  - name: model_a\n    logging: {logging}\n"),
            1,
        )
    };
    repo.write(
        "features.yaml",
        &with("{sample_rate: 0, destination: logs}"),
    );
    assert_error(
        &repo.errors(),
        &[
            "feature service 'model_a'",
            "logging.sample_rate must be a number in (0, 1]",
        ],
    );
    repo.write(
        "features.yaml",
        &with("{sample_rate: 0.5, destination: ../logs}"),
    );
    assert_error(
        &repo.errors(),
        &["logging.destination '../logs' must be a folder under the data root"],
    );
    repo.write(
        "features.yaml",
        &with("{sample_rate: 0.25, destination: /var/log}"),
    );
    assert_error(&repo.errors(), &["logging.destination '/var/log'"]);
    repo.write(
        "features.yaml",
        &with("{sample_rate: 0.25, destination: logs/model_a}"),
    );
    let defs = repo.load().expect("valid");
    let logging = defs.feature_services["model_a"]
        .logging
        .clone()
        .expect("logging");
    assert_eq!(logging.destination, "logs/model_a");
    assert!((logging.sample_rate.get() - 0.25).abs() < 1e-9);
    let file = quiver_registry::definitions_file(&defs);
    let again = quiver_registry::validate_files(
        &[("definitions.json".into(), file.clone())],
        "test",
        &quiver_source::Sources::new(repo.path()),
    )
    .unwrap();
    assert_eq!(again, defs, "{file}");
}

#[test]
fn service_naming_a_missing_feature_lists_the_view_features() {
    let repo = TestRepo::new();
    repo.write(
        "features.yaml",
        &VALID.replace("\"driver_place:conv_rate\"", "\"driver_place:acc_rate\""),
    );
    let errors = repo.errors();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_error(
        &errors,
        &[
            "features.yaml:31",
            "feature service 'model_a'",
            "feature view 'driver_place' has no feature 'acc_rate' (features: conv_rate)",
        ],
    );
}

#[test]
fn columns_are_checked_after_field_mapping() {
    let repo = TestRepo::new();
    // Without the mapping, `avg_daily_trips` is not a column (the file calls it `trips`).
    repo.write(
        "features.yaml",
        &VALID.replace("    field_mapping: {trips: avg_daily_trips}\n", ""),
    );
    let errors = repo.errors();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_error(
        &errors,
        &[
            "features.yaml:21",
            "feature view 'driver_stats'",
            "feature 'avg_daily_trips' is not a column of source 'stats'",
            "trips",
        ],
    );
}

#[test]
fn incompatible_column_types_are_reported() {
    let repo = TestRepo::new();
    repo.write(
        "features.yaml",
        &VALID
            .replace(
                "{name: avg_daily_trips, type: int64}",
                "{name: avg_daily_trips, type: int32}",
            )
            .replace("{name: zone, type: int32}", "{name: zone, type: string}"),
    );
    let errors = repo.errors();
    assert_error(
        &errors,
        &[
            "feature view 'driver_stats'",
            "feature 'avg_daily_trips' is declared int32 but source 'stats' has Int64",
        ],
    );
    assert_error(
        &errors,
        &[
            "feature view 'driver_place'",
            "join key 'zone' is declared string but source 'stats' has Int32",
        ],
    );
}

#[test]
fn timestamp_columns_must_exist_and_be_timestamps() {
    let repo = TestRepo::new();
    repo.write(
        "features.yaml",
        &VALID
            .replace(
                "timestamp_field: event_timestamp",
                "timestamp_field: ts_as_int",
            )
            .replace(
                "created_timestamp_column: created",
                "created_timestamp_column: written_at",
            ),
    );
    let errors = repo.errors();
    assert_error(
        &errors,
        &[
            "features.yaml:12",
            "source 'stats'",
            "timestamp_field 'ts_as_int' has type Int64",
            "expected a timestamp",
        ],
    );
    assert_error(
        &errors,
        &[
            "features.yaml:13",
            "source 'stats'",
            "created_timestamp_column 'written_at' is not a column",
        ],
    );
}

#[test]
fn unreadable_sources_name_the_path() {
    let repo = TestRepo::new();
    repo.write(
        "features.yaml",
        &VALID.replace("data/stats.parquet", "data/missing.parquet"),
    );
    let errors = repo.errors();
    assert_eq!(
        errors.len(),
        1,
        "views over an unreadable source are not reported twice: {errors:#?}"
    );
    assert_error(
        &errors,
        &[
            "features.yaml:11",
            "source 'stats'",
            "data/missing.parquet",
            "not found",
        ],
    );

    repo.write("data/broken.parquet", "this is not parquet");
    repo.write(
        "features.yaml",
        &VALID.replace("data/stats.parquet", "data/broken.parquet"),
    );
    assert_error(
        &repo.errors(),
        &[
            "source 'stats'",
            "data/broken.parquet",
            "not a readable Parquet file",
        ],
    );

    repo.write(
        "features.yaml",
        &VALID.replace("data/stats.parquet", "data/*.parq"),
    );
    assert_error(
        &repo.errors(),
        &["source 'stats'", "no Parquet files match"],
    );
}

#[test]
fn folder_and_glob_sources_are_read() {
    let repo = TestRepo::new();
    std::fs::create_dir_all(repo.path().join("data/part")).unwrap();
    std::fs::copy(
        repo.path().join("data/stats.parquet"),
        repo.path().join("data/part/a.parquet"),
    )
    .unwrap();
    std::fs::copy(
        repo.path().join("data/stats.parquet"),
        repo.path().join("data/part/b.parquet"),
    )
    .unwrap();
    repo.write(
        "features.yaml",
        &VALID.replace("data/stats.parquet", "data/part"),
    );
    repo.load().unwrap();
    repo.write(
        "features.yaml",
        &VALID.replace("data/stats.parquet", "data/part/*.parquet"),
    );
    repo.load().unwrap();
}

#[test]
fn unknown_fields_and_yaml_syntax_errors_have_lines() {
    let repo = TestRepo::new();
    repo.write(
        "features.yaml",
        &VALID.replace("    ttl: 36h", "    tll: 36h"),
    );
    let errors = repo.errors();
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert_error(
        &errors,
        &[
            "features.yaml:26",
            "feature view 'driver_place'",
            "Unknown field `tll`",
        ],
    );
    // The service that uses the broken view reports the reference rather than hiding it.
    assert_error(
        &errors,
        &[
            "feature service 'model_a'",
            "unknown feature view 'driver_place'",
        ],
    );

    repo.write("features.yaml", "entities:\n  - name: [unclosed\n");
    assert_error(&repo.errors(), &["features.yaml:", "invalid YAML"]);

    repo.write("features.yaml", "entitys: []\n");
    assert_error(
        &repo.errors(),
        &["features.yaml:1", "unknown top-level key 'entitys'"],
    );

    repo.write(
        "features.yaml",
        "entities:\n  - join_keys: [{name: id, type: int64}]\n",
    );
    assert_error(
        &repo.errors(),
        &["features.yaml:2", "entity", "missing field `name`"],
    );
}

#[test]
fn structural_rules_of_views_entities_and_services() {
    let repo = TestRepo::new();
    repo.write(
        "features.yaml",
        &VALID
            .replace("entities: [driver, place]", "entities: [driver, driver]")
            .replace(
                "{name: avg_daily_trips, type: int64}",
                "{name: conv_rate, type: float32}",
            )
            .replace(
                "features: [\"driver_stats:*\", \"driver_place:conv_rate\"]",
                "features: [\"driver_stats:*\", \"driver_stats:*\", \"nocolon\"]",
            )
            .replace("  - name: place\n", "  - name: 9place\n"),
    );
    let errors = repo.errors();
    assert_error(
        &errors,
        &[
            "feature view 'driver_place'",
            "entity 'driver' listed twice",
        ],
    );
    assert_error(
        &errors,
        &[
            "feature view 'driver_stats'",
            "duplicate feature 'conv_rate'",
        ],
    );
    assert_error(
        &errors,
        &[
            "feature service 'model_a'",
            "feature 'driver_stats:*' listed twice",
        ],
    );
    assert_error(
        &errors,
        &[
            "feature service 'model_a'",
            "invalid feature reference 'nocolon'",
        ],
    );
    assert_error(&errors, &["entity '9place'", "invalid name"]);
}

#[test]
fn all_errors_are_reported_at_once() {
    let repo = TestRepo::new();
    repo.write(
        "features.yaml",
        &VALID
            .replace("entities: [driver]", "entities: [drivr]")
            .replace("ttl: 36h", "ttl: forever")
            .replace("{name: zone, type: int32}", "{name: zone, type: uint8}"),
    );
    let errors = repo.errors();
    assert!(errors.len() >= 3, "{errors:#?}");
}

#[test]
fn permissions_are_validated_and_expanded() {
    let repo = TestRepo::new();
    repo.write("features.yaml", VALID).write(
        "permissions.yaml",
        "permissions:\n  - name: readers\n    types: [feature_view, feature_service]\n    name_patterns: ['driver_.*']\n    actions: [read, describe]\n    policy: {roles: [reader]}\n",
    );
    let defs = repo.load().unwrap();
    let readers = &defs.permissions["readers"];
    assert_eq!(
        readers.actions,
        [
            quiver_core::Action::Describe,
            quiver_core::Action::ReadOnline,
            quiver_core::Action::ReadOffline
        ]
    );
    repo.write(
        "permissions.yaml",
        "permissions:\n  - name: broken\n    types: [feature_viewz]\n    name_patterns: ['(']\n    actions: [read, fly]\n    policy: {roles: [a], groups: [b]}\n",
    );
    let errors = repo.errors();
    assert_error(
        &errors,
        &[
            "permissions.yaml:3",
            "permission 'broken'",
            "unknown type 'feature_viewz'",
        ],
    );
    assert_error(&errors, &["permissions.yaml:4", "invalid name pattern '('"]);
    assert_error(&errors, &["permissions.yaml:5", "unknown action 'fly'"]);
    assert_error(
        &errors,
        &["permissions.yaml:2", "exactly one of 'roles' and 'groups'"],
    );
}

#[test]
fn definitions_written_as_a_file_validate_back_to_the_same_definitions() {
    let repo = TestRepo::new();
    repo.write("features.yaml", VALID).write(
        "more.yaml",
        "permissions:\n  - name: readers\n    types: [feature_view]\n    name_patterns: ['driver_.*']\n    required_tags: {team: a}\n    actions: [read]\n    policy: {groups: [analysts]}\n    tags: {x: y}\n",
    );
    let mut defs = repo.load().unwrap();
    let view = defs.feature_views.get_mut("driver_stats").unwrap();
    view.description = "Driver statistics.".into();
    view.materialization = Some(quiver_core::Schedule {
        every: "1h".parse().unwrap(),
        lookback: "10m".parse().unwrap(),
    });
    view.freshness = Some("2h".parse().unwrap());
    defs.feature_views.get_mut("driver_place").unwrap().online = false;
    let file = quiver_registry::definitions_file(&defs);
    let sources = quiver_source::Sources::new(repo.path());
    let again = quiver_registry::validate_files(
        &[("definitions.json".into(), file.clone())],
        "test",
        &sources,
    )
    .unwrap();
    assert_eq!(again, defs, "{file}");
}
