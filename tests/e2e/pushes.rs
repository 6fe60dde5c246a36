//! Pushes through the real server: Feast's usual push to a shared source, every check made
//! before anything is written, a full disk that loses nothing, compaction of pushed files,
//! temporary files swept at start-up.

use std::path::{Path, PathBuf};

use quiver_e2e::{Server, example_repo, http, now_micros, quiver_ok, wait_for};
use quiver_testkit::SmallDisk;
use serde_json::{Value, json};

/// A second view on the example's trips source, with a feature of its own: Feast's usual
/// push shape is the union of both views' columns.
const RATINGS: &str = "feature_views:\n  - name: trip_ratings\n    entities: [driver, customer]\n    source: driver_customer_source\n    features:\n      - {name: last_rating, type: float32}\n";

fn iso(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

fn minutes_ago(m: i64) -> String {
    iso(now_micros() - m * 60_000_000)
}

fn served_with_ratings() -> (tempfile::TempDir, Server) {
    let dir = example_repo();
    std::fs::write(dir.path().join("ratings.yaml"), RATINGS).unwrap();
    quiver_ok(dir.path(), &["apply"]);
    let server = Server::start(dir.path());
    (dir, server)
}

/// `view:feature` of (driver, customer) over HTTP: `(value, status)`.
fn read(server: &Server, feature: &str, driver: i64, customer: &str) -> (Value, String) {
    let body = json!({"features": [feature], "entities": {"driver_id": [driver], "customer_id": [customer]}});
    let (code, text) = http(
        &server.http,
        "POST",
        "/get-online-features",
        Some(&body.to_string()),
    );
    assert_eq!(code, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    (
        v["results"][2]["values"][0].clone(),
        v["results"][2]["statuses"][0].as_str().unwrap().to_owned(),
    )
}

fn push(server: &Server, body: &Value) -> (u16, String) {
    http(&server.http, "POST", "/push", Some(&body.to_string()))
}

fn pushed_files(repo: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo.join("data/driver_customer_trips"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("push-")
        })
        .collect();
    files.sort();
    files
}

#[test]
fn feasts_usual_push_to_a_shared_source_reaches_every_view() {
    let (dir, server) = served_with_ratings();
    let body = json!({
        "push_source_name": "driver_customer_source",
        "df": {
            "driver_id": [8001, 8002],
            "customer_id": ["C8001", "C8002"],
            "event_timestamp": [minutes_ago(5), minutes_ago(5)],
            "trips_together": [3, 4],
            "last_rating": [4.5, 3.5],
        },
        "to": "online_and_offline",
    });
    let (code, text) = push(&server, &body);
    assert_eq!(code, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        v["feature_views"],
        json!(["driver_customer_trips", "trip_ratings"])
    );
    assert_eq!(
        read(
            &server,
            "driver_customer_trips:trips_together",
            8002,
            "C8002"
        ),
        (json!(4), "PRESENT".to_owned())
    );
    assert_eq!(
        read(&server, "trip_ratings:last_rating", 8001, "C8001"),
        (json!(4.5), "PRESENT".to_owned())
    );
    assert_eq!(pushed_files(dir.path()).len(), 1);
}

#[test]
fn a_push_with_a_bad_row_writes_nothing_anywhere() {
    let (dir, server) = served_with_ratings();
    let cases = [
        (
            json!({"last_rating": [4.5, 1e308]}),
            "does not fit in float32",
        ),
        (json!({"trips_together": [1, "many"]}), "expected int64"),
    ];
    for (change, needle) in cases {
        let mut df = json!({
            "driver_id": [8101, 8102],
            "customer_id": ["C8101", "C8102"],
            "event_timestamp": [minutes_ago(5), minutes_ago(5)],
            "trips_together": [3, 4],
            "last_rating": [4.5, 3.5],
        });
        for (k, v) in change.as_object().unwrap() {
            df[k] = v.clone();
        }
        let body = json!({"push_source_name": "driver_customer_source", "df": df, "to": "online_and_offline"});
        let (code, text) = push(&server, &body);
        assert_eq!(code, 400, "{needle}: {text}");
        assert!(text.contains(needle), "{needle}: {text}");
        assert!(
            pushed_files(dir.path()).is_empty(),
            "{needle}: no offline file"
        );
        for feature in [
            "driver_customer_trips:trips_together",
            "trip_ratings:last_rating",
        ] {
            assert_eq!(
                read(&server, feature, 8101, "C8101").1,
                "NOT_FOUND",
                "{needle}: the good row is not written either"
            );
        }
    }
}

/// Pushes one row of `driver_customer_trips` with `df` fields changed; returns the answer.
fn push_trip(server: &Server, change: &Value, extra: &Value) -> (u16, String) {
    let mut df = json!({
        "driver_id": [8201],
        "customer_id": ["C8201"],
        "event_timestamp": [minutes_ago(5)],
        "trips_together": [3],
        "last_rating": [4.5],
    });
    for (k, v) in change.as_object().unwrap() {
        df[k] = v.clone();
    }
    let mut body = json!({"push_source_name": "driver_customer_trips", "df": df});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    push(server, &body)
}

fn assert_refused(server: &Server, (code, text): (u16, String), needle: &str) {
    assert_eq!(code, 400, "{needle}: {text}");
    assert!(text.contains(needle), "{needle}: {text}");
    assert_eq!(
        read(
            server,
            "driver_customer_trips:trips_together",
            8201,
            "C8201"
        )
        .1,
        "NOT_FOUND",
        "{needle}: nothing written"
    );
}

#[test]
fn a_push_dated_far_in_the_future_is_refused() {
    let (_dir, server) = served_with_ratings();
    let far = push_trip(
        &server,
        &json!({"event_timestamp": ["9999-12-31T00:00:00Z"]}),
        &json!({}),
    );
    assert_refused(&server, far, "outside the range");
    let ahead = push_trip(
        &server,
        &json!({"event_timestamp": [minutes_ago(-180)]}),
        &json!({}),
    );
    assert_refused(&server, ahead, "in the future");
}

#[test]
fn a_value_that_does_not_fit_its_type_is_refused() {
    let (_dir, server) = served_with_ratings();
    let answer = push_trip(&server, &json!({"last_rating": [1e308]}), &json!({}));
    assert_refused(&server, answer, "does not fit in float32");
}

#[test]
fn integer_times_need_their_unit() {
    let (_dir, server) = served_with_ratings();
    let secs = now_micros() / 1_000_000 - 300;
    let without = push_trip(&server, &json!({"event_timestamp": [secs]}), &json!({}));
    assert_refused(&server, without, "timestamp_unit");
    let (code, text) = push_trip(
        &server,
        &json!({"event_timestamp": [secs]}),
        &json!({"timestamp_unit": "s"}),
    );
    assert_eq!(code, 200, "{text}");
    let (code, text) = http(
        &server.http,
        "POST",
        "/get-online-features",
        Some(&json!({"features": ["driver_customer_trips:trips_together"], "entities": {"driver_id": [8201], "customer_id": ["C8201"]}}).to_string()),
    );
    assert_eq!(code, 200);
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        v["results"][2]["event_timestamps"][0],
        iso(secs * 1_000_000),
        "{v}"
    );
}

#[test]
fn a_column_given_twice_is_refused() {
    let (_dir, server) = served_with_ratings();
    let text = r#"{"push_source_name": "driver_customer_trips", "df": {"driver_id": [8201], "customer_id": ["C8201"], "event_timestamp": ["2024-01-01T00:00:00Z"], "trips_together": [1], "trips_together": [2]}}"#;
    let answer = http(&server.http, "POST", "/push", Some(text));
    assert_refused(&server, answer, "column 'trips_together' is given twice");
}

const PUSHES: i64 = 100;

#[test]
fn many_small_offline_pushes_are_compacted() {
    let dir = example_repo();
    let repo = dir.path();
    quiver_ok(repo, &["apply"]);
    let server = Server::start(repo);
    for i in 0..PUSHES {
        let body = json!({
            "push_source_name": "driver_customer_trips",
            "df": {"driver_id": [9000 + i], "customer_id": ["C9"], "event_timestamp": [minutes_ago(10)], "trips_together": [i]},
            "to": "offline",
        });
        let (code, text) = push(&server, &body);
        assert_eq!(code, 200, "{text}");
    }
    // The default is to merge once 64 small pushed files are there.
    wait_for("compaction", 30, || pushed_files(repo).len() < 64);
    // Every pushed row is still there exactly once: a training set over them finds them all.
    let entities = repo.join("e.parquet");
    let rows: Vec<(i64, &str)> = (0..PUSHES).map(|i| (9000 + i, "C9")).collect();
    quiver_e2e::write_trip_entities(&entities, &rows);
    let out = repo.join("out.parquet");
    quiver_ok(
        repo,
        &[
            "training-set",
            "--entities",
            entities.to_str().unwrap(),
            "--features",
            "driver_customer_trips:trips_together",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    let table = quiver_e2e::read_parquet(&out);
    use arrow::array::{Array, AsArray};
    let got = table
        .column_by_name("trips_together")
        .unwrap()
        .as_primitive::<arrow::datatypes::Int64Type>();
    assert_eq!(got.null_count(), 0);
    assert_eq!(
        (0..80).map(|i| got.value(i)).collect::<Vec<_>>(),
        (0..80).collect::<Vec<i64>>()
    );
}

#[test]
fn temporary_files_of_failed_writers_are_swept_at_start_up() {
    let dir = example_repo();
    let repo = dir.path();
    quiver_ok(repo, &["apply"]);
    let stale = [
        repo.join("data/driver_customer_trips/.push-999999999-1.tmp"),
        repo.join("registry/projects/demo/versions/.tmp-999999999-1"),
    ];
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
    for path in &stale {
        std::fs::write(path, b"partial").unwrap();
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
    let server = Server::start(repo);
    for path in &stale {
        assert!(!path.exists(), "{} was not swept", path.display());
    }
    assert!(server.stop());
}

#[test]
fn a_full_disk_loses_nothing_and_the_server_recovers_on_its_own() {
    let Some(disk) = SmallDisk::mount(48) else {
        return;
    };
    let repo = disk.path().join("repo");
    quiver_ok(
        &repo,
        &["init", repo.to_str().unwrap(), "--project", "demo"],
    );
    quiver_ok(&repo, &["apply"]);
    let server = Server::start(&repo);
    let row = |driver: i64| {
        json!({
            "push_source_name": "driver_customer_trips",
            "df": {"driver_id": [driver], "customer_id": ["C1"], "event_timestamp": [minutes_ago(1)], "trips_together": [driver]},
            "to": "online_and_offline",
        })
    };
    let (code, text) = push(&server, &row(1));
    assert_eq!(code, 200, "{text}");
    let filler = disk.fill();
    let before = pushed_files(&repo);
    // Pushes fail as "out of space" (not an internal error), leaving no file behind.
    for driver in 2..5 {
        let (code, text) = push(&server, &row(driver));
        assert_eq!(code, 507, "{text}");
        assert!(
            text.contains("No space left") || text.contains("no space left"),
            "{text}"
        );
    }
    assert_eq!(
        pushed_files(&repo),
        before,
        "no offline row without its online row"
    );
    let hidden: Vec<_> = std::fs::read_dir(repo.join("data/driver_customer_trips"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(hidden.is_empty(), "temporary files left: {hidden:?}");
    for driver in 2..5 {
        assert_eq!(
            read(
                &server,
                "driver_customer_trips:trips_together",
                driver,
                "C1"
            )
            .1,
            "NOT_FOUND"
        );
    }
    // Space comes back: pushes work again without a restart.
    std::fs::remove_file(filler).unwrap();
    wait_for("pushes to work again", 20, || {
        push(&server, &row(5)).0 == 200
    });
    assert_eq!(
        read(&server, "driver_customer_trips:trips_together", 5, "C1"),
        (json!(5), "PRESENT".to_owned())
    );
    assert_eq!(
        read(&server, "driver_customer_trips:trips_together", 1, "C1"),
        (json!(1), "PRESENT".to_owned()),
        "nothing written before was lost"
    );
    assert_eq!(pushed_files(&repo).len(), before.len() + 1);
    assert!(server.stop());
}
