//! The product on a Redis Cluster: every command on a repository whose online store is Redis,
//! several servers sharing it (reads and pushes anywhere, one of them running the schedule,
//! taken over when it dies), and a master failover during a materialization and during reads.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use quiver_e2e::{
    Server, example_repo, http, now_micros, online_get, quiver, quiver_ok, runs_of,
    sample_driver_stats, wait_for, watermark_of, write_big_driver_stats,
};
use quiver_testkit::StopOnDrop;
use quiver_testkit::redis::{RedisCluster, shared_cluster};
use serde_json::{Value, json};

/// The example repository with its online store on the Redis nodes `seeds`, under a project
/// of its own (tests share one cluster).
fn repo_on_redis(seeds: &[String]) -> tempfile::TempDir {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let dir = example_repo();
    let project = format!(
        "e2e_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let nodes = seeds.join(", ");
    std::fs::write(
        dir.path().join("quiver.yaml"),
        format!(
            "project: {project}\nregistry: registry\ndata_root: .\nonline_store:\n  type: redis\n  nodes: [{nodes}]\n  timeout: 1s\n"
        ),
    )
    .unwrap();
    dir
}

fn with_schedule(repo: &Path, view_source: &str, every: &str) {
    let features = std::fs::read_to_string(repo.join("features.yaml")).unwrap();
    let line = format!("    source: {view_source}\n");
    std::fs::write(
        repo.join("features.yaml"),
        features.replace(
            &line,
            &format!("{line}    materialization: {{every: {every}, lookback: 1h}}\n"),
        ),
    )
    .unwrap();
}

/// `view:feature` of entities over HTTP: the response's feature results.
fn read(server: &Server, feature: &str, entities: &Value) -> (u16, Value) {
    let body = json!({"features": [feature], "entities": entities});
    let (code, text) = http(
        &server.http,
        "POST",
        "/get-online-features",
        Some(&body.to_string()),
    );
    (code, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn trips(server: &Server, driver: i64, customer: &str) -> Value {
    let (code, v) = read(
        server,
        "driver_customer_trips:trips_together",
        &json!({"driver_id": [driver], "customer_id": [customer]}),
    );
    assert_eq!(code, 200, "{v}");
    v["results"][2]["values"][0].clone()
}

#[test]
fn a_repository_on_redis_cluster_runs_every_command_and_servers_share_it() {
    let dir = repo_on_redis(&shared_cluster().seeds());
    let repo = dir.path();
    quiver_ok(repo, &["apply"]);
    quiver_ok(repo, &["materialize-incremental", "now"]);
    let got = online_get(
        repo,
        "driver_customer_trips",
        &["customer_id=C1001", "driver_id=1001"],
    );
    assert_eq!(got["features"][0]["status"], "PRESENT", "{got}");
    let expected = got["features"][0]["value"].clone();
    assert!(
        !watermark_of(repo, "driver_customer_trips").is_null(),
        "the watermark is kept in Redis"
    );
    assert_eq!(
        runs_of(repo, "driver_customer_trips")[0]["outcome"],
        "succeeded"
    );

    // Two servers on the one store: what the CLI wrote, both serve; a push to one, the other
    // serves at once.
    let a = Server::start(repo);
    let b = Server::start(repo);
    assert_eq!(trips(&a, 1001, "C1001"), expected);
    assert_eq!(trips(&b, 1001, "C1001"), expected);
    let minute_ago = chrono::DateTime::from_timestamp_micros(now_micros() - 60_000_000)
        .unwrap()
        .to_rfc3339();
    let push = json!({
        "push_source_name": "driver_customer_source",
        "df": {
            "driver_id": [8001], "customer_id": ["C8001"],
            "event_timestamp": [minute_ago], "trips_together": [77], "last_rating": [4.5],
        },
        "to": "online",
    });
    let (code, text) = http(&a.http, "POST", "/push", Some(&push.to_string()));
    assert_eq!(code, 200, "{text}");
    assert_eq!(trips(&b, 8001, "C8001"), json!(77));

    // A view removed through one server is gone in the other once it polls the registry.
    let features = std::fs::read_to_string(repo.join("features.yaml")).unwrap();
    let (kept, _) = features
        .split_once("  - name: driver_customer_trips")
        .unwrap();
    let (_, services) = features.split_once("feature_services:").unwrap();
    std::fs::write(
        repo.join("features.yaml"),
        format!(
            "{kept}feature_services:{}",
            services.replace("      - driver_customer_trips:trips_together\n", "")
        ),
    )
    .unwrap();
    quiver_ok(repo, &["apply"]);
    wait_for("the other server to drop the view", 30, || {
        let (code, _) = read(
            &b,
            "driver_customer_trips:trips_together",
            &json!({"driver_id": [1001], "customer_id": ["C1001"]}),
        );
        code == 404
    });

    // Backups are Redis's own business (RDB/AOF): the command says so.
    let backup = quiver(
        repo,
        &["online", "backup", repo.join("b").to_str().unwrap()],
    );
    assert!(!backup.ok);
    assert!(backup.stderr.contains("Redis"), "{}", backup.stderr);
    assert!(a.stop() && b.stop());
}

#[test]
fn of_two_servers_one_runs_the_schedule_and_the_other_takes_over_when_it_dies() {
    let dir = repo_on_redis(&shared_cluster().seeds());
    let repo = dir.path();
    with_schedule(repo, "driver_customer_source", "1s");
    quiver_ok(repo, &["apply"]);
    let first = Server::start(repo);
    let runs_by = |pid: u32| {
        let by = format!("/{pid}/");
        move |r: &Value| r["holder"].as_str().unwrap().contains(&by)
    };
    wait_for("a scheduled run by the first server", 30, || {
        runs_of(repo, "driver_customer_trips")
            .iter()
            .any(runs_by(first.pid()))
    });
    let second = Server::start(repo);
    let second_pid = second.pid();
    std::thread::sleep(Duration::from_secs(4));
    let runs = runs_of(repo, "driver_customer_trips");
    assert!(runs.len() >= 3, "{runs:?}");
    assert!(
        runs.iter().all(runs_by(first.pid())),
        "one server runs the schedule: {runs:?}"
    );

    let killed = Instant::now();
    first.kill();
    wait_for("the second server to take the schedule over", 40, || {
        runs_of(repo, "driver_customer_trips")
            .iter()
            .any(|r| runs_by(second_pid)(r) && r["outcome"] == "succeeded")
    });
    let took = killed.elapsed();
    assert!(
        took < Duration::from_secs(25),
        "taken over {took:?} after the holder died"
    );
    // The first server's last run never finished: the new holder marked it interrupted.
    let runs = runs_of(repo, "driver_customer_trips");
    assert!(
        runs.iter()
            .all(|r| r["outcome"] != "running" || runs_by(second_pid)(r)),
        "{runs:?}"
    );
    assert!(second.stop());
}

const DRIVERS: i64 = 300_000;
const HOURS: i64 = 4;
const STEP: usize = 9_999;

#[test]
fn a_master_failover_during_a_materialization_and_reads_loses_nothing() {
    let cluster = RedisCluster::start(3, 1);
    let end = (now_micros() / 3_600_000_000) * 3_600_000_000;
    let dir = repo_on_redis(&cluster.seeds());
    let repo = dir.path();
    let clean = example_repo();
    for r in [repo, clean.path()] {
        write_big_driver_stats(r, DRIVERS, HOURS, end);
        quiver_ok(r, &["apply"]);
    }
    let incremental = [
        "materialize-incremental",
        "now",
        "--views",
        "driver_hourly_stats",
    ];
    quiver_ok(clean.path(), &incremental);
    let expected = sample_driver_stats(clean.path(), DRIVERS, STEP);

    let server = Server::start(repo);
    let drivers: Vec<i64> = (0..DRIVERS).step_by(1_200).collect();
    let stop = AtomicBool::new(false);
    let (outcomes, run) = std::thread::scope(|s| {
        // Reads of 50 drivers (every master) over HTTP all along: each answers or fails
        // fast with 503, and they recover on their own.
        let reader = s.spawn(|| {
            let mut outcomes = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let (code, v) = read(
                    &server,
                    "driver_hourly_stats:acc_rate",
                    &json!({ "driver_id": drivers }),
                );
                outcomes.push((code, started.elapsed(), v));
                std::thread::sleep(Duration::from_millis(20));
            }
            outcomes
        });
        let _stop = StopOnDrop(&stop);
        let mut materialize = std::process::Command::new(quiver_e2e::quiver_bin())
            .arg("--repo")
            .arg(repo)
            .args(incremental)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        wait_for("the materialization to be running", 60, || {
            runs_of(repo, "driver_hourly_stats")
                .first()
                .is_some_and(|r| r["outcome"] == "running")
        });
        assert!(
            materialize.try_wait().unwrap().is_none(),
            "the materialization ran until the failover"
        );
        let master = cluster.masters()[0];
        let replica = cluster.replica_of(master).expect("a replica");
        master.kill();
        cluster.wait_promoted(replica);
        let run = materialize.wait_with_output().unwrap();
        wait_for("reads to recover", 30, || {
            let feature = "driver_hourly_stats:acc_rate";
            read(&server, feature, &json!({ "driver_id": [0] })).0 == 200
        });
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::Relaxed);
        (reader.join().unwrap(), run)
    });
    assert!(
        outcomes.iter().any(|(code, ..)| *code == 200),
        "reads were served"
    );
    for (code, took, v) in &outcomes {
        assert!(
            *code == 200 || *code == 503,
            "a read during the failover answered {code}: {v}"
        );
        assert!(
            *took < Duration::from_secs(4),
            "a read during the failover took {took:?}"
        );
    }

    // Either the run completed (its watermark and every row there) or it failed without
    // advancing its watermark; a rerun completes it.
    let stderr = String::from_utf8_lossy(&run.stderr);
    let marked = watermark_of(repo, "driver_hourly_stats");
    if run.status.success() {
        assert!(!marked.is_null(), "a successful run sets its watermark");
        assert_eq!(sample_driver_stats(repo, DRIVERS, STEP), expected);
    } else {
        assert!(
            marked.is_null(),
            "a failed run advanced its watermark: {stderr}"
        );
        assert!(stderr.contains("online store"), "{stderr}");
    }
    cluster.wait_healthy();
    quiver_ok(repo, &incremental);
    assert_eq!(sample_driver_stats(repo, DRIVERS, STEP), expected);
    assert!(server.stop());
}
