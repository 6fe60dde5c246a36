//! Training sets and materialization on a real Spark cluster (standalone master, two
//! workers, Spark Connect) through the real binary: `quiver training-set` and `quiver
//! serve`'s Flight service give exactly the native engine's table, `quiver materialize` the
//! native engine's online store (in process and through the server), and a cluster that
//! cannot be reached is a clear error.

use std::path::Path;

use quiver_e2e::{
    Server, example_repo, quiver, quiver_ok, read_parquet, sample_driver_stats,
    write_big_driver_stats, write_parquet,
};
use tonic::Code;

use crate::flight::{FEATURES, client, entities, exchange};

/// Points the repository's `offline_engine` at `connect`.
fn use_spark(repo: &Path, connect: &str) {
    let config = std::fs::read_to_string(repo.join("quiver.yaml")).unwrap();
    std::fs::write(
        repo.join("quiver.yaml"),
        format!("{config}offline_engine:\n  type: spark\n  connect: {connect}\n  conf:\n    spark.sql.shuffle.partitions: \"4\"\n"),
    )
    .unwrap();
}

fn train(repo: &Path, out: &str, engine: Option<&str>) -> arrow::array::RecordBatch {
    let entities = repo.join("entities.parquet");
    let out = repo.join(out);
    let mut args = vec![
        "training-set",
        "--entities",
        entities.to_str().unwrap(),
        "--features",
        FEATURES,
        "--out",
        out.to_str().unwrap(),
    ];
    if let Some(e) = engine {
        args.extend(["--engine", e]);
    }
    quiver_ok(repo, &args);
    read_parquet(&out)
}

#[test]
fn spark_gives_the_native_training_set_from_the_cli_and_flight() {
    let cluster = quiver_testkit::spark::shared_cluster();
    let dir = example_repo();
    let repo = dir.path();
    use_spark(repo, &cluster.url());
    quiver_ok(repo, &["apply"]);
    let table = entities();
    write_parquet(&repo.join("entities.parquet"), &table);

    // offline_engine: spark is the default; --engine native overrides it.
    let on_spark = train(repo, "spark.parquet", None);
    let native = train(repo, "native.parquet", Some("native"));
    assert_eq!(native.num_rows(), 4);
    assert!(native.column_by_name("conv_rate").unwrap().null_count() < 4);
    assert_eq!(on_spark, native);

    let server = Server::start(repo);
    quiver_e2e::runtime().block_on(async {
        let mut c = client(&server);
        let features: Vec<&str> = FEATURES.split(',').collect();
        for engine in [None, Some("spark"), Some("native")] {
            let mut command = serde_json::json!({"features": features});
            if let Some(e) = engine {
                command["engine"] = e.into();
            }
            let got = exchange(&mut c, &command.to_string(), table.clone())
                .await
                .unwrap();
            assert_eq!(got, native, "engine {engine:?}");
        }
        let bad = serde_json::json!({"features": features, "engine": "hive"});
        let e = exchange(&mut c, &bad.to_string(), table.clone())
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e}");
        assert!(e.message().contains("hive"), "{e}");
    });
    assert!(server.stop(), "the server exits cleanly on SIGTERM");
}

#[test]
fn an_unreachable_or_unconfigured_cluster_is_a_clear_error() {
    let dir = example_repo();
    let repo = dir.path();
    quiver_ok(repo, &["apply"]);
    write_parquet(&repo.join("entities.parquet"), &entities());
    let entities = repo.join("entities.parquet");
    let args = |out: &'static str| {
        vec![
            "training-set".to_owned(),
            "--entities".into(),
            entities.display().to_string(),
            "--features".into(),
            FEATURES.into(),
            "--out".into(),
            out.into(),
            "--engine".into(),
            "spark".into(),
        ]
    };
    let run = |out| {
        let a = args(out);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        quiver(repo, &a)
    };
    // No offline_engine: Spark is not configured.
    let r = run("a.parquet");
    assert!(!r.ok && r.stderr.contains("not configured"), "{}", r.stderr);

    // A port nobody listens on.
    let port = quiver_testkit::free_port();
    use_spark(repo, &format!("sc://127.0.0.1:{port}"));
    let r = run("b.parquet");
    assert!(!r.ok, "{}", r.stdout);
    assert!(
        r.stderr.contains(&format!("127.0.0.1:{port}")) && r.stderr.contains("unreachable"),
        "{}",
        r.stderr
    );
    assert!(!repo.join("b.parquet").exists(), "nothing written");
    let r = quiver(repo, &["materialize-incremental", "now"]);
    assert!(!r.ok, "{}", r.stdout);
    assert!(
        r.stderr.contains(&format!("127.0.0.1:{port}")) && r.stderr.contains("unreachable"),
        "{}",
        r.stderr
    );
}

#[test]
fn spark_materializes_the_native_store_in_process_and_through_the_server() {
    const DRIVERS: i64 = 3_000;
    let (end_us, end) = quiver_e2e::this_hour();
    let end = end.as_str();
    let (spark, native) = (example_repo(), example_repo());
    for dir in [&spark, &native] {
        write_big_driver_stats(dir.path(), DRIVERS, 24, end_us);
        quiver_ok(dir.path(), &["apply"]);
    }
    use_spark(spark.path(), &quiver_testkit::spark::shared_cluster().url());
    let args = ["--json", "materialize-incremental", end];
    // offline_engine: spark is the default.
    let on_spark = quiver_ok(spark.path(), &args).json();
    let natively = quiver_ok(native.path(), &args).json();
    let written = |report: &serde_json::Value| -> Vec<(String, u64)> {
        report["views"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                let view = v["view"].as_str().unwrap().to_owned();
                (view, v["rows_written"].as_u64().unwrap())
            })
            .collect()
    };
    assert_eq!(written(&on_spark), written(&natively));
    assert!(
        written(&on_spark).contains(&("driver_hourly_stats".to_owned(), DRIVERS as u64)),
        "{on_spark}"
    );
    assert_eq!(
        sample_driver_stats(spark.path(), DRIVERS, 97),
        sample_driver_stats(native.path(), DRIVERS, 97)
    );

    // With a server holding the store the CLI goes through it, and --engine with it.
    let day_before = quiver_e2e::rfc3339(end_us - 86_400_000_000);
    let server = Server::start(spark.path());
    for engine in ["spark", "native"] {
        let run = quiver_ok(
            spark.path(),
            &[
                "--json",
                "materialize",
                &day_before,
                end,
                "--views",
                "driver_hourly_stats",
                "--engine",
                engine,
            ],
        )
        .json();
        assert_eq!(run["views"][0]["rows_written"], DRIVERS, "{engine}: {run}");
    }
    assert!(server.stop(), "the server exits cleanly on SIGTERM");
}
