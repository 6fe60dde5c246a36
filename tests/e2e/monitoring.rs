//! Monitoring through the real binary: `/metrics` scraped and parsed by the Prometheus
//! client library after reads, pushes, materializations and a training set; request ids on
//! every answer; `quiver status` and its exit code.

use std::path::Path;

use quiver_e2e::{Server, example_repo, http, http_exchange, python_json, quiver_exit, quiver_ok};
use serde_json::{Value, json};

/// Every sample of a scrape of `url` (and, with a ticket, after a training set read over
/// Flight by pyarrow): `(scrape, training rows)`.
fn scrape(url: &str, flight: Option<(&str, &Value)>) -> (Value, Option<u64>) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/scrape_metrics.py");
    let mut args = vec![url.to_owned()];
    if let Some((address, ticket)) = flight {
        args.push(address.to_owned());
        args.push(ticket.to_string());
    }
    let out = python_json(&script, &args);
    let rows = out["training_rows"].as_u64();
    (out, rows)
}

/// Replaces the first `from` in the file at `path` with `to`.
fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{} has no {from:?}", path.display());
    std::fs::write(path, text.replacen(from, to, 1)).unwrap();
}

/// Appends `settings` to the repository's `quiver.yaml`.
fn append_settings(repo: &Path, settings: &str) {
    let config = repo.join("quiver.yaml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text + settings).unwrap();
}

/// The value of the sample `name` with exactly `labels`.
fn sample(scrape: &Value, name: &str, labels: &Value) -> Option<f64> {
    scrape["samples"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name && s["labels"] == *labels)
        .and_then(|s| s["value"].as_f64())
}

#[test]
fn metrics_follow_reads_pushes_materializations_and_training_sets() {
    let dir = example_repo();
    let repo = dir.path();
    quiver_ok(repo, &["apply"]);
    let server = Server::start_with(repo, &["--metrics-port", "0"]);
    let metrics = server.metrics.clone().expect("a metrics port");
    // Through the server, which holds the store.
    quiver_ok(repo, &["materialize-incremental", "now"]);
    let read = |driver: i64| {
        let body = json!({"features": ["driver_hourly_stats:conv_rate", "driver_hourly_stats:avg_daily_trips"], "entities": {"driver_id": [driver]}});
        let (code, body) = http(
            &server.http,
            "POST",
            "/get-online-features",
            Some(&body.to_string()),
        );
        assert_eq!(code, 200, "{body}");
    };
    read(1001);
    read(999_999);
    let (before, _) = scrape(&metrics, None);
    let view = json!({"feature_view": "driver_hourly_stats"});
    let age_before = sample(
        &before,
        "quiver_feature_view_newest_event_age_seconds",
        &view,
    )
    .expect("the view's newest event age");
    // A row newer than anything materialized: the view's freshness follows it.
    let push = json!({
        "push_source_name": "driver_hourly_stats",
        "df": {"driver_id": [6001], "event_timestamp": [quiver_e2e::rfc3339_ago(1)], "avg_daily_trips": [3]},
        "to": "online",
    });
    let (code, body) = http(&server.http, "POST", "/push", Some(&push.to_string()));
    assert_eq!(code, 200, "{body}");
    let ticket = json!({"features": ["driver_hourly_stats:conv_rate"], "full_feature_names": true, "entities": "data/driver_hourly_stats.parquet"});
    let (after, training_rows) = scrape(&metrics, Some((&server.flight, &ticket)));
    assert!(
        after["content_type"]
            .as_str()
            .unwrap()
            .starts_with("application/openmetrics-text"),
        "{}",
        after["content_type"]
    );

    let value = |name: &str, labels: Value| sample(&after, name, &labels);
    assert_eq!(
        value("feast_online_features_request_total", json!({})),
        Some(2.0)
    );
    let status = |s: &str| {
        value(
            "feast_online_features_status_total",
            json!({"feature_view": "driver_hourly_stats", "status": s}),
        )
    };
    // Two features for a known driver, two for an unknown one.
    assert_eq!(
        status("present").unwrap_or(0.0) + status("null_value").unwrap_or(0.0),
        2.0
    );
    assert_eq!(status("not_found"), Some(2.0));
    let pushed = json!({"push_source": "driver_hourly_stats", "mode": "online"});
    assert_eq!(value("feast_push_request_total", pushed.clone()), Some(1.0));
    assert_eq!(value("quiver_push_rows_total", pushed), Some(1.0));
    assert_eq!(
        value(
            "feast_materialization_result_total",
            json!({"feature_view": "driver_hourly_stats", "status": "success"})
        ),
        Some(1.0)
    );
    assert!(value("quiver_materialization_rows_total", view.clone()).unwrap() > 0.0);
    assert_eq!(
        value("feast_materialization_duration_seconds_count", view.clone()),
        Some(1.0)
    );
    let training = json!({"method": "get_historical_features"});
    assert_eq!(
        value(
            "feast_offline_store_request_total",
            json!({"method": "get_historical_features", "status": "success"})
        ),
        Some(1.0)
    );
    assert_eq!(
        value("feast_offline_store_row_count_sum", training),
        training_rows.map(|r| r as f64)
    );
    // Freshness: the push made the newest event a second old; Feast's gauge follows the end
    // of the run's window (now, at the run).
    let age_after = value("quiver_feature_view_newest_event_age_seconds", view.clone()).unwrap();
    assert!(
        age_after < 60.0 && age_after < age_before + 1.0,
        "{age_before} -> {age_after}"
    );
    let feast_freshness = value(
        "feast_feature_freshness_seconds",
        json!({"feature_view": "driver_hourly_stats", "project": "demo"}),
    )
    .unwrap();
    assert!((0.0..600.0).contains(&feast_freshness), "{feast_freshness}");
    assert!(value("quiver_materialization_last_success_age_seconds", view).unwrap() < 600.0);
    assert!(value("quiver_online_store_estimated_rows", json!({})).unwrap() > 0.0);
    assert!(value("quiver_online_store_block_cache_hits_total", json!({})).is_some());
    // The HTTP port serves the same metrics (its own scrape included).
    let (code, text) = http(&server.http, "GET", "/metrics", None);
    assert_eq!(code, 200);
    assert!(
        text.contains(
            "feast_push_request_total{push_source=\"driver_hourly_stats\",mode=\"online\"} 1"
        ),
        "{text}"
    );
}

#[test]
fn every_answer_carries_a_request_id() {
    let dir = example_repo();
    quiver_ok(dir.path(), &["apply"]);
    let server = Server::start(dir.path());
    let header = |headers: &[(String, String)]| {
        headers
            .iter()
            .find(|(n, _)| n == "x-request-id")
            .map(|(_, v)| v.clone())
    };
    let (code, headers, _) = http_exchange(
        &server.http,
        "POST",
        "/get-online-features",
        Some("{nope"),
        &[],
    );
    assert_eq!(code, 400);
    let first = header(&headers).expect("a request id on an error");
    let health_id = |sent: &[(&str, &str)]| {
        header(&http_exchange(&server.http, "GET", "/health", None, sent).1)
    };
    let second = health_id(&[]).expect("a request id");
    assert_ne!(first, second);
    // A client's own id is kept; one that could inject anything into logs is replaced.
    let own = [("x-request-id", "trace-42.a_b")];
    assert_eq!(health_id(&own).as_deref(), Some("trace-42.a_b"));
    let hostile = [("x-request-id", "a b\"}")];
    assert_ne!(health_id(&hostile).as_deref(), Some("a b\"}"));
    quiver_e2e::runtime().block_on(async {
        use quiver_server::proto::quiver::v1 as pb;
        let mut client = pb::online_service_client::OnlineServiceClient::new(server.channel());
        let e = client
            .get_online_features(pb::GetOnlineFeaturesRequest {
                features: Some(pb::get_online_features_request::Features::FeatureRefs(
                    pb::FeatureList {
                        refs: vec!["driver_hourly_stats:nope".into()],
                    },
                )),
                entities: Vec::new(),
                full_feature_names: false,
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound);
        assert!(
            e.metadata().get("x-request-id").is_some(),
            "{:?}",
            e.metadata()
        );
    });
}

#[test]
fn status_reports_freshness_and_fails_while_a_view_is_stale() {
    let dir = example_repo();
    let repo = dir.path();
    // customer_profile (daily rows) may be a month old; driver_hourly_stats two hours (init).
    edit(
        &repo.join("features.yaml"),
        "    source: customer_profile_source\n    ttl: 2d\n",
        "    source: customer_profile_source\n    ttl: 2d\n    freshness: 30d\n",
    );
    quiver_ok(repo, &["apply"]);
    let status = |expected_exit: i32| {
        let report = quiver_exit(repo, &["status", "--json"], expected_exit).json();
        let views: Vec<(String, Value)> = report["views"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| (v["view"].as_str().unwrap().to_owned(), v.clone()))
            .collect();
        views
    };
    let state = |views: &[(String, Value)], view: &str| {
        views.iter().find(|(v, _)| v == view).unwrap().1["state"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    // Nothing online yet: the views that declare a freshness are stale.
    let views = status(2);
    assert_eq!(state(&views, "driver_hourly_stats"), "stale");
    assert_eq!(state(&views, "customer_profile"), "stale");
    assert_eq!(state(&views, "driver_customer_trips"), "unchecked");

    quiver_ok(
        repo,
        &[
            "materialize-incremental",
            "now",
            "--views",
            "driver_hourly_stats",
        ],
    );
    let views = status(2);
    assert_eq!(state(&views, "driver_hourly_stats"), "fresh");
    assert_eq!(state(&views, "customer_profile"), "stale");

    // Through the server that holds the store, the same answer.
    let _server = Server::start(repo);
    quiver_ok(
        repo,
        &[
            "materialize-incremental",
            "now",
            "--views",
            "customer_profile",
        ],
    );
    let views = status(0);
    let profile = &views
        .iter()
        .find(|(v, _)| v == "customer_profile")
        .unwrap()
        .1;
    assert_eq!(profile["state"], "fresh");
    assert_eq!(profile["last_run"]["outcome"], "succeeded");
    // A first run writes each key once: the online rows are what it wrote.
    let runs = quiver_e2e::runs_of(repo, "customer_profile");
    assert_eq!(profile["rows"], runs[0]["rows_written"], "{runs:?}");
    assert!(profile["age_seconds"].as_f64().unwrap() < 3.0 * 86_400.0);
    let table = quiver_ok(repo, &["status"]).stdout;
    assert!(
        table.contains("VIEW") && table.contains("customer_profile") && table.contains("fresh"),
        "{table}"
    );
}

#[test]
fn feature_logging_records_what_was_served_as_a_valid_source() {
    let dir = logging_repo();
    let repo = dir.path();
    let server = Server::start_with(repo, &["--metrics-port", "0"]);
    let read = json!({
        "feature_service": "driver_activity",
        "entities": {"driver_id": [1001, 999_999], "customer_id": ["C1001", "C1"]},
    });
    let (code, _, served) = http_exchange(
        &server.http,
        "POST",
        "/get-online-features",
        Some(&read.to_string()),
        &[("x-request-id", "logged-1")],
    );
    assert_eq!(code, 200, "{served}");
    // A read of plain feature references is not a service's: not logged.
    let plain =
        json!({"features": ["driver_hourly_stats:conv_rate"], "entities": {"driver_id": [1001]}});
    assert_eq!(
        http(
            &server.http,
            "POST",
            "/get-online-features",
            Some(&plain.to_string())
        )
        .0,
        200
    );
    let folder = repo.join("feature_logs/driver_activity");
    let files = || quiver_e2e::parquet_files(&folder);
    quiver_e2e::wait_for("the feature log's file", 20, || !files().is_empty());
    let (scraped, _) = scrape(server.metrics.as_deref().unwrap(), None);
    assert_eq!(
        sample(
            &scraped,
            "quiver_feature_log_rows_total",
            &json!({"feature_service": "driver_activity"})
        ),
        Some(2.0)
    );
    assert!(server.stop());
    let files = files();
    assert_eq!(files.len(), 1, "{files:?}");
    let log = quiver_e2e::read_parquet(&files[0]);
    assert_eq!(log.num_rows(), 2);
    let names: Vec<String> = log
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    for name in [
        "driver_id",
        "customer_id",
        "driver_hourly_stats__conv_rate",
        "driver_hourly_stats__conv_rate__timestamp",
        "driver_hourly_stats__conv_rate__status",
        "customer_profile__current_balance",
        "driver_customer_trips__trips_together__status",
        "__log_timestamp",
        "__log_date",
        "__request_id",
    ] {
        assert!(names.iter().any(|n| n == name), "{name} missing: {names:?}");
    }
    use arrow::array::{Array, AsArray};
    let column = |name: &str| log.column_by_name(name).unwrap().clone();
    let ids = column("__request_id");
    let ids = ids.as_string::<i32>();
    assert_eq!((ids.value(0), ids.value(1)), ("logged-1", "logged-1"));
    let drivers = column("driver_id");
    let drivers = drivers.as_primitive::<arrow::datatypes::Int64Type>();
    assert_eq!(drivers.values(), &[1001, 999_999]);
    // Feast's status numbers: what was served, row by row (1 present or 2 null; 3 not found).
    let status = column("driver_hourly_stats__avg_daily_trips__status");
    let status = status.as_primitive::<arrow::datatypes::Int32Type>();
    assert!(matches!(status.value(0), 1 | 2), "{status:?}");
    assert_eq!(status.value(1), 3);
    // The served values are the ones logged.
    let served: Value = serde_json::from_str(&served).unwrap();
    let names = served["metadata"]["feature_names"].as_array().unwrap();
    let at = names.iter().position(|n| n == "avg_daily_trips").unwrap();
    let trips = column("driver_hourly_stats__avg_daily_trips");
    let trips = trips.as_primitive::<arrow::datatypes::Int64Type>();
    assert_eq!(
        served["results"][at]["values"][0].as_i64(),
        trips.is_valid(0).then(|| trips.value(0))
    );

    // Logged features have statistics like any data.
    let profile = quiver_ok(
        repo,
        &[
            "--json",
            "monitor",
            "profile",
            "--view",
            "driver_hourly_stats",
            "--data",
            "feature_logs/driver_activity",
        ],
    )
    .json();
    assert_eq!(profile["rows"], 2);
    let logged = profile["features"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "avg_daily_trips")
        .unwrap();
    assert_eq!(logged["nulls"], trips.null_count(), "{logged}");

    // The folder is a source like any other.
    let more = repo.join("logged.yaml");
    std::fs::write(
        &more,
        "sources:\n  - name: driver_activity_log\n    path: feature_logs/driver_activity\n    timestamp_field: __log_timestamp\nfeature_views:\n  - name: served_trips\n    entities: [driver]\n    source: driver_activity_log\n    online: false\n    features:\n      - {name: driver_hourly_stats__avg_daily_trips, type: int64}\n",
    )
    .unwrap();
    quiver_ok(repo, &["apply"]);
}

/// A repository whose `driver_activity` service logs every read, rolled every second.
fn logging_repo() -> tempfile::TempDir {
    let dir = example_repo();
    let repo = dir.path();
    edit(
        &repo.join("features.yaml"),
        "  - name: driver_activity\n",
        "  - name: driver_activity\n    logging: {sample_rate: 1.0, destination: feature_logs/driver_activity}\n",
    );
    append_settings(repo, "server:\n  feature_log: {roll_every: 1s}\n");
    quiver_ok(repo, &["apply"]);
    quiver_ok(repo, &["materialize-incremental", "now"]);
    dir
}

#[test]
fn skew_finds_exactly_the_keys_and_features_changed_behind_the_offline_data() {
    let dir = logging_repo();
    let repo = dir.path();
    let server = Server::start(repo);
    let read = |id: &str| {
        let body = json!({
            "feature_service": "driver_activity",
            "entities": {"driver_id": [1001, 1002, 1003, 999_999], "customer_id": ["C1001", "C1002", "C1003", "C1"]},
        });
        let (code, _, body) = http_exchange(
            &server.http,
            "POST",
            "/get-online-features",
            Some(&body.to_string()),
            &[("x-request-id", id)],
        );
        assert_eq!(code, 200, "{body}");
    };
    read("before");
    let skew = |expected_exit: i32| {
        quiver_exit(
            repo,
            &["--json", "monitor", "skew", "--service", "driver_activity"],
            expected_exit,
        )
        .json()
    };
    // The first published log file (a hidden temporary file is there before it is whole).
    let logs = repo.join("feature_logs/driver_activity");
    quiver_e2e::wait_for("the first log file", 20, || {
        !quiver_e2e::parquet_files(&logs).is_empty()
    });
    // Served exactly what training sees.
    let report = skew(0);
    assert_eq!(report["rows"], 4);
    for f in report["features"].as_array().unwrap() {
        assert_eq!(f["match_rate"], 1.0, "{f}");
    }
    // Driver 1002's online row changes behind the offline data's back.
    let push = json!({
        "push_source_name": "driver_hourly_stats",
        "df": {"driver_id": [1002], "event_timestamp": [quiver_e2e::rfc3339_ago(1)], "conv_rate": [0.25], "acc_rate": [0.5], "avg_daily_trips": [999]},
        "to": "online",
    });
    let (code, body) = http(&server.http, "POST", "/push", Some(&push.to_string()));
    assert_eq!(code, 200, "{body}");
    read("after");
    assert!(server.stop(), "the server drains and writes its log");
    let report = skew(2);
    assert_eq!(report["rows"], 8);
    let mut skewed = Vec::new();
    for f in report["features"].as_array().unwrap() {
        let name = f["feature"].as_str().unwrap();
        if f["matches"] == 8 {
            continue;
        }
        skewed.push(name.to_owned());
        // One row of eight: the second read of driver 1002.
        assert_eq!(f["matches"], 7, "{f}");
        let examples = f["examples"].as_array().unwrap();
        assert_eq!(examples.len(), 1, "{f}");
        assert!(examples[0][0].as_str().unwrap().starts_with("1002,"), "{f}");
    }
    skewed.sort();
    assert_eq!(
        skewed,
        [
            "driver_hourly_stats__acc_rate",
            "driver_hourly_stats__avg_daily_trips",
            "driver_hourly_stats__conv_rate"
        ]
    );
    let trips = report["features"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["feature"] == "driver_hourly_stats__avg_daily_trips")
        .unwrap();
    assert_eq!(trips["examples"][0][1], "999");
    let q = trips["difference_quantiles"].as_array().unwrap();
    assert_eq!(q[0], q[3], "one difference: {q:?}");
    // A clear error for a service that logs nothing.
    let run = quiver_exit(repo, &["monitor", "skew", "--service", "nope"], 1);
    assert!(
        run.stderr.contains("no feature service 'nope'"),
        "{}",
        run.stderr
    );
}

#[test]
fn scheduled_runs_export_drift_scores_against_the_declared_reference() {
    let dir = example_repo();
    let repo = dir.path();
    edit(
        &repo.join("features.yaml"),
        "    freshness: 2h",
        "    materialization: {every: 1h}\n    monitoring: {reference: now-30d..now-1d}\n    freshness: 2h",
    );
    quiver_ok(repo, &["apply"]);
    let server = Server::start_with(repo, &["--metrics-port", "0"]);
    let url = server.metrics.clone().unwrap();
    let feature = |statistic: Option<&str>| {
        let mut labels = json!({"feature_view": "driver_hourly_stats", "feature": "conv_rate"});
        if let Some(s) = statistic {
            labels["statistic"] = json!(s);
        }
        labels
    };
    let mut scraped = Value::Null;
    // The first scheduled run covers the whole history, which holds the reference.
    quiver_e2e::wait_for("the first scheduled run's drift scores", 60, || {
        scraped = scrape(&url, None).0;
        sample(
            &scraped,
            "quiver_feature_drift_score",
            &feature(Some("psi")),
        )
        .is_some()
    });
    let ks = sample(
        &scraped,
        "quiver_feature_drift_score",
        &feature(Some("kolmogorov_smirnov")),
    );
    assert!(ks.is_some_and(|v| (0.0..=1.0).contains(&v)), "{ks:?}");
    let drifted = sample(&scraped, "quiver_feature_drifted", &feature(None));
    assert!(matches!(drifted, Some(0.0 | 1.0)), "{drifted:?}");
    assert!(server.stop());
}

#[test]
fn metrics_can_be_turned_off() {
    let dir = example_repo();
    let repo = dir.path();
    append_settings(repo, "server:\n  metrics: false\n");
    quiver_ok(repo, &["apply"]);
    let server = Server::start(repo);
    assert_eq!(http(&server.http, "GET", "/metrics", None).0, 404);
    let read =
        json!({"features": ["driver_hourly_stats:conv_rate"], "entities": {"driver_id": [1001]}});
    assert_eq!(
        http(
            &server.http,
            "POST",
            "/get-online-features",
            Some(&read.to_string())
        )
        .0,
        200
    );
    assert!(server.stop());
    let refused = quiver_exit(
        repo,
        &[
            "serve",
            "--grpc-port",
            "0",
            "--http-port",
            "0",
            "--flight-port",
            "0",
            "--metrics-port",
            "0",
        ],
        1,
    );
    assert!(
        refused.stderr.contains("server.metrics is false"),
        "{}",
        refused.stderr
    );
}
