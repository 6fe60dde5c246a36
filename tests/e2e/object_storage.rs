//! A repository whose sources and registry are in S3 (a real SeaweedFS server): the real
//! binary gives the same training set and the same online rows as the same repository on
//! local disk, and S3 failures are clear errors naming the bucket.

use std::path::Path;

use quiver_e2e::*;
use quiver_testkit::s3::{BUCKET, S3Server};

/// Runs `quiver` with the credentials of `server`; asserts success.
fn quiver_s3(server: &S3Server, repo: &Path, args: &[&str]) -> Run {
    let run = quiver_env(repo, args, &server.env());
    assert!(
        run.ok,
        "quiver {args:?} failed:\n{}\n{}",
        run.stdout, run.stderr
    );
    run
}

/// Moves an example repository's data and registry to S3: uploads `data/`, removes it, and
/// points `quiver.yaml` and the source paths at the bucket. Returns the prefix.
fn move_to_s3(server: &S3Server, repo: &Path, settings: &str) -> String {
    let storage = server.storage();
    let prefix = server.upload(&storage, &repo.join("data"), "e2e");
    std::fs::remove_dir_all(repo.join("data")).unwrap();
    let features = std::fs::read_to_string(repo.join("features.yaml")).unwrap();
    std::fs::write(
        repo.join("features.yaml"),
        features.replace("path: data/", &format!("path: {prefix}/")),
    )
    .unwrap();
    let config = std::fs::read_to_string(repo.join("quiver.yaml")).unwrap();
    std::fs::write(
        repo.join("quiver.yaml"),
        config.replace(
            "registry: registry",
            &format!("registry: {prefix}/registry"),
        ) + settings,
    )
    .unwrap();
    prefix
}

fn endpoint_settings(server: &S3Server) -> String {
    format!(
        "object_storage:\n  s3:\n    endpoint: {}\n    region: us-east-1\n",
        server.endpoint()
    )
}

#[test]
fn a_repository_on_s3_answers_exactly_as_on_disk() {
    let server = quiver_testkit::s3::shared_server();
    let (local_dir, s3_dir) = (example_repo(), example_repo());
    let (local, remote) = (local_dir.path(), s3_dir.path());
    // The same generated data in both.
    std::fs::remove_dir_all(remote.join("data")).unwrap();
    copy_folder(&local.join("data"), &remote.join("data"));
    let prefix = move_to_s3(server, remote, &endpoint_settings(server));

    quiver_ok(local, &["apply"]);
    let applied = quiver_s3(server, remote, &["apply"]);
    assert!(
        applied
            .stdout
            .contains(&format!("registry: {prefix}/registry")),
        "{}",
        applied.stdout
    );
    assert!(!remote.join("registry").exists(), "no local registry");
    let log = quiver_s3(server, remote, &["registry", "log"]).stdout;
    assert!(log.contains("e2e"), "{log}");

    let entities = local.join("entities.parquet");
    let rows: Vec<(i64, String)> = (1001..1011)
        .flat_map(|d| [(d, format!("C{d}")), (d, "C1001".to_owned())])
        .collect();
    let rows: Vec<(i64, &str)> = rows.iter().map(|(d, c)| (*d, c.as_str())).collect();
    write_trip_entities(&entities, &rows);
    let features = "driver_hourly_stats:conv_rate,driver_hourly_stats:avg_daily_trips,customer_profile:current_balance,driver_customer_trips:trips_together";
    // Both repositories run with the S3 server's credentials (the local one ignores them).
    let train = |repo: &Path, out: &Path| {
        let args = [
            "training-set",
            "--entities",
            entities.to_str().unwrap(),
            "--features",
            features,
            "--out",
            out.to_str().unwrap(),
        ];
        quiver_s3(server, repo, &args);
        read_parquet(out)
    };
    let on_disk = train(local, &local.join("train.parquet"));
    let on_s3 = train(remote, &remote.join("train.parquet"));
    assert_eq!(on_disk.num_rows(), 20);
    assert_eq!(on_s3, on_disk);

    quiver_ok(local, &["materialize", "2000-01-01", "now"]);
    quiver_s3(server, remote, &["materialize", "2000-01-01", "now"]);
    for driver in ["driver_id=1001", "driver_id=1002", "driver_id=1005"] {
        let get = |repo: &Path| {
            let args = [
                "--json",
                "online",
                "get",
                "--view",
                "driver_hourly_stats",
                "--key",
                driver,
            ];
            quiver_s3(server, repo, &args).json()
        };
        let (on_s3, on_disk) = (get(remote), get(local));
        assert!(on_disk["features"][0]["value"].is_number(), "{on_disk}");
        assert_eq!(on_s3, on_disk, "driver {driver}");
    }
}

#[test]
fn storage_failures_name_the_bucket_and_what_failed() {
    let server = quiver_testkit::s3::shared_server();
    let dir = example_repo();
    let repo = dir.path();
    let prefix = move_to_s3(server, repo, &endpoint_settings(server));

    // A source in a bucket that does not exist.
    let features = std::fs::read_to_string(repo.join("features.yaml")).unwrap();
    let missing = prefix.replace(BUCKET, "no-such-bucket");
    std::fs::write(
        repo.join("features.yaml"),
        features.replacen(&format!("path: {prefix}/"), &format!("path: {missing}/"), 1),
    )
    .unwrap();
    let run = quiver_env(repo, &["plan"], &server.env());
    assert!(!run.ok);
    assert!(
        run.stderr.contains("no-such-bucket") && run.stderr.contains("the bucket does not exist"),
        "{}",
        run.stderr
    );
    std::fs::write(repo.join("features.yaml"), &features).unwrap();

    // Nothing listening at the endpoint: refused quickly, after the retries.
    let config = std::fs::read_to_string(repo.join("quiver.yaml")).unwrap();
    let closed = format!("http://127.0.0.1:{}", quiver_testkit::free_port());
    std::fs::write(
        repo.join("quiver.yaml"),
        config.replace(&server.endpoint(), &closed) + "  max_retries: 1\n  timeout: 2s\n",
    )
    .unwrap();
    let started = std::time::Instant::now();
    let run = quiver_env(repo, &["plan"], &server.env());
    assert!(!run.ok);
    assert!(
        run.stderr.contains("could not be reached") && run.stderr.contains(BUCKET),
        "{}",
        run.stderr
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
}

#[test]
fn pushes_land_in_s3_and_training_sets_are_written_there() {
    let server = quiver_testkit::s3::shared_server();
    let dir = example_repo();
    let repo = dir.path();
    let prefix = move_to_s3(server, repo, &endpoint_settings(server));
    quiver_s3(server, repo, &["apply"]);
    let serving = Server::start_with_env(repo, &server.env());
    let body = serde_json::json!({
        "push_source_name": "driver_customer_source",
        "df": {
            "driver_id": [8001],
            "customer_id": ["C8001"],
            "event_timestamp": [rfc3339_ago(60)],
            "trips_together": [42],
            "last_rating": [4.5],
        },
        "to": "offline",
    });
    let (code, text) = http(&serving.http, "POST", "/push", Some(&body.to_string()));
    assert_eq!(code, 200, "{text}");
    drop(serving);

    let storage = server.storage();
    let folder = quiver_storage::ObjectUrl::parse(&format!("{prefix}/driver_customer_trips/"))
        .unwrap()
        .unwrap();
    let pushed: Vec<_> = storage
        .list(&folder)
        .unwrap()
        .into_iter()
        .filter(|o| o.url.file_name().starts_with("push-"))
        .collect();
    assert_eq!(pushed.len(), 1, "one new object per push: {pushed:?}");

    // The next training set sees the pushed row, and is itself written to S3.
    let entities = repo.join("entities.parquet");
    write_trip_entities(&entities, &[(8001, "C8001")]);
    let out = format!("{prefix}/training/sets/with-push.parquet");
    quiver_s3(
        server,
        repo,
        &[
            "training-set",
            "--entities",
            entities.to_str().unwrap(),
            "--features",
            "driver_customer_trips:trips_together",
            "--out",
            &out,
        ],
    );
    let url = quiver_storage::ObjectUrl::parse(&out).unwrap().unwrap();
    let bytes = storage.get(&url).unwrap().expect("the training set object");
    let local = repo.join("downloaded.parquet");
    std::fs::write(&local, &bytes).unwrap();
    let set = read_parquet(&local);
    let trips = set.column_by_name("trips_together").unwrap();
    assert_eq!(
        trips
            .as_any()
            .downcast_ref::<arrow::array::Int64Array>()
            .unwrap()
            .value(0),
        42
    );
}

#[test]
fn a_killed_training_set_upload_leaves_no_partial_object() {
    let server = quiver_testkit::s3::shared_server();
    let dir = example_repo();
    let repo = dir.path();
    let prefix = move_to_s3(server, repo, &endpoint_settings(server));
    quiver_s3(server, repo, &["apply"]);
    let entities = repo.join("entities.parquet");
    let customers: Vec<String> = (0..200_000)
        .map(|i| format!("C{}", 1001 + i % 50))
        .collect();
    let rows: Vec<(i64, &str)> = customers
        .iter()
        .enumerate()
        .map(|(i, c)| (1001 + (i as i64 % 10), c.as_str()))
        .collect();
    write_trip_entities(&entities, &rows);
    let args = |out: &str| {
        [
            "--repo".to_owned(),
            repo.display().to_string(),
            "training-set".into(),
            "--entities".into(),
            entities.display().to_string(),
            "--features".into(),
            "driver_hourly_stats:conv_rate,customer_profile:current_balance,driver_customer_trips:trips_together".into(),
            "--out".into(),
            out.to_owned(),
        ]
    };
    let run = |out: &str| {
        std::process::Command::new(quiver_bin())
            .args(args(out))
            .envs(server.env())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let storage = server.storage();
    let object = |out: &str| {
        storage
            .head(&quiver_storage::ObjectUrl::parse(out).unwrap().unwrap())
            .unwrap()
    };
    let whole = format!("{prefix}/whole.parquet");
    let started = std::time::Instant::now();
    assert!(run(&whole).wait().unwrap().success());
    let took = started.elapsed();
    let size = object(&whole).expect("a whole training set").size;
    // Killed at several points of a run: the object is absent or whole, never a part.
    for (i, fraction) in [0.3, 0.6, 0.9, 0.97].into_iter().enumerate() {
        let out = format!("{prefix}/killed-{i}.parquet");
        let mut child = run(&out);
        std::thread::sleep(took.mul_f64(fraction));
        let _ = child.kill();
        let _ = child.wait();
        if let Some(seen) = object(&out) {
            assert_eq!(
                seen.size, size,
                "a visible object is the whole training set"
            );
        }
    }
}

#[test]
fn flight_writes_a_training_set_to_an_allowed_prefix_only() {
    use futures::TryStreamExt;
    let server = quiver_testkit::s3::shared_server();
    let dir = example_repo();
    let repo = dir.path();
    let prefix = move_to_s3(server, repo, &endpoint_settings(server));
    let config = std::fs::read_to_string(repo.join("quiver.yaml")).unwrap();
    std::fs::write(
        repo.join("quiver.yaml"),
        config + &format!("  outputs: [{prefix}/training]\n"),
    )
    .unwrap();
    quiver_s3(server, repo, &["apply"]);
    let serving = Server::start_with_env(repo, &server.env());
    let entities = repo.join("entities.parquet");
    write_trip_entities(&entities, &[(1001, "C1001"), (1002, "C1002"), (9999, "C9")]);
    let table = read_parquet(&entities);
    let exchange = |out: String| {
        let command = serde_json::json!({
            "features": ["driver_hourly_stats:conv_rate"],
            "out": out,
        })
        .to_string();
        let table = table.clone();
        let flight = serving.flight.replace("grpc://", "http://");
        runtime().block_on(async move {
            let channel = tonic::transport::Channel::from_shared(flight)
                .unwrap()
                .connect_lazy();
            let mut client = arrow_flight::FlightClient::new(channel);
            let input = arrow_flight::encode::FlightDataEncoderBuilder::new()
                .with_flight_descriptor(Some(arrow_flight::FlightDescriptor::new_cmd(command)))
                .build(futures::stream::iter([Ok(table)]));
            let stream = client.do_exchange(input).await?;
            stream.try_collect::<Vec<_>>().await
        })
    };
    let out = format!("{prefix}/training/flight.parquet");
    let answer = exchange(out.clone()).unwrap();
    assert_eq!(answer.len(), 1);
    let row = &answer[0];
    let location = row
        .column_by_name("location")
        .unwrap()
        .as_any()
        .downcast_ref::<arrow::array::StringArray>()
        .unwrap()
        .value(0)
        .to_owned();
    assert_eq!(location, out);
    let storage = server.storage();
    let url = quiver_storage::ObjectUrl::parse(&out).unwrap().unwrap();
    let local = repo.join("flight.parquet");
    std::fs::write(&local, storage.get(&url).unwrap().unwrap()).unwrap();
    assert_eq!(read_parquet(&local).num_rows(), 3);

    let outside = format!("{prefix}/elsewhere/flight.parquet");
    let err = exchange(outside.clone()).unwrap_err().to_string();
    assert!(
        err.contains("PermissionDenied") || err.contains("permission"),
        "{err}"
    );
    assert!(err.contains("object_storage.outputs"), "{err}");
    let url = quiver_storage::ObjectUrl::parse(&outside).unwrap().unwrap();
    assert!(storage.head(&url).unwrap().is_none());
}

/// Copies a folder tree.
fn copy_folder(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_folder(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}
