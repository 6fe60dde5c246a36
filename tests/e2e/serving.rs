//! Online serving end to end: apply → materialize → `quiver serve` → reads over Quiver's gRPC
//! API, Feast's gRPC API and Feast's HTTP API; pushes; registry applies over gRPC; and every
//! kind of bad request.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use quiver_e2e::{Server, example_repo, http, python_json, quiver_ok, runtime};
use quiver_server::proto::feast::serving as fs;
use quiver_server::proto::feast::types as ft;
use quiver_server::proto::quiver::v1 as pb;
use serde_json::{Value, json};
use tonic::Code;

fn int64(v: i64) -> pb::Value {
    pb::Value {
        kind: Some(pb::value::Kind::Int64Value(v)),
    }
}

fn string(v: &str) -> pb::Value {
    pb::Value {
        kind: Some(pb::value::Kind::StringValue(v.into())),
    }
}

fn column(name: &str, values: Vec<pb::Value>) -> pb::Column {
    pb::Column {
        name: name.into(),
        values,
    }
}

fn refs(list: &[&str]) -> Option<pb::get_online_features_request::Features> {
    Some(pb::get_online_features_request::Features::FeatureRefs(
        pb::FeatureList {
            refs: list.iter().map(|s| (*s).to_owned()).collect(),
        },
    ))
}

fn statuses(c: &pb::FeatureColumn) -> Vec<pb::FieldStatus> {
    c.statuses
        .iter()
        .map(|s| pb::FieldStatus::try_from(*s).unwrap())
        .collect()
}

/// A served example repository, materialized.
fn served(extra: &[&str]) -> (tempfile::TempDir, Server) {
    let dir = example_repo();
    quiver_ok(dir.path(), &["apply"]);
    quiver_ok(dir.path(), &["materialize-incremental", "now"]);
    let server = Server::start_with(dir.path(), extra);
    (dir, server)
}

fn now_iso(hours_ago: i64) -> String {
    quiver_e2e::rfc3339_ago(hours_ago * 3600)
}

#[test]
fn quiver_grpc_reads_statuses_composite_keys_services_and_pushes() {
    let (_dir, server) = served(&[]);
    runtime().block_on(async {
        let mut client = pb::online_service_client::OnlineServiceClient::new(server.channel());
        // Duplicate keys are answered twice; an unknown key is NOT_FOUND.
        let response = client
            .get_online_features(pb::GetOnlineFeaturesRequest {
                features: refs(&[
                    "driver_hourly_stats:avg_daily_trips",
                    "driver_hourly_stats:conv_rate",
                ]),
                entities: vec![column(
                    "driver_id",
                    vec![int64(1001), int64(1001), int64(7)],
                )],
                full_feature_names: false,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(response.row_count, 3);
        assert_eq!(response.features[0].name, "avg_daily_trips");
        let trips = &response.features[0];
        assert_eq!(statuses(trips)[2], pb::FieldStatus::NotFound);
        assert!(matches!(
            statuses(trips)[0],
            pb::FieldStatus::Present | pb::FieldStatus::NullValue
        ));
        assert_eq!(trips.values[0], trips.values[1]);
        assert!(trips.event_timestamps_micros[0] > 0);
        assert_eq!(trips.event_timestamps_micros[2], 0);

        // A composite key (int64 + string), and a feature service with full names.
        let response = client
            .get_online_features(pb::GetOnlineFeaturesRequest {
                features: Some(pb::get_online_features_request::Features::FeatureService(
                    "driver_activity".into(),
                )),
                entities: vec![
                    column("driver_id", vec![int64(1001)]),
                    column("customer_id", vec![string("C1001")]),
                ],
                full_feature_names: true,
            })
            .await
            .unwrap()
            .into_inner();
        let names: Vec<&str> = response.features.iter().map(|f| f.name.as_str()).collect();
        assert!(
            names.contains(&"driver_customer_trips__trips_together"),
            "{names:?}"
        );

        // Push: a new driver with a null feature and an old row (outside the 1d ttl).
        let ts = |hours_ago: i64| pb::Value {
            kind: Some(pb::value::Kind::TimestampMicros(
                (SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap()
                    .as_secs() as i64
                    - hours_ago * 3600)
                    * 1_000_000,
            )),
        };
        let pushed = client
            .push_features(pb::PushFeaturesRequest {
                feature_view: "driver_hourly_stats".into(),
                columns: vec![
                    column("driver_id", vec![int64(5001), int64(5002)]),
                    column("event_timestamp", vec![ts(1), ts(72)]),
                    column("avg_daily_trips", vec![int64(42), int64(7)]),
                    column(
                        "conv_rate",
                        vec![
                            pb::Value { kind: None },
                            pb::Value {
                                kind: Some(pb::value::Kind::DoubleValue(0.5)),
                            },
                        ],
                    ),
                ],
                to: pb::PushTarget::Online as i32,
                timestamp_unit: 0,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(pushed.rows_written, 2);
        let response = client
            .get_online_features(pb::GetOnlineFeaturesRequest {
                features: refs(&[
                    "driver_hourly_stats:avg_daily_trips",
                    "driver_hourly_stats:conv_rate",
                ]),
                entities: vec![column("driver_id", vec![int64(5001), int64(5002)])],
                full_feature_names: false,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(response.features[0].values[0], int64(42));
        assert_eq!(
            statuses(&response.features[0]),
            [pb::FieldStatus::Present, pb::FieldStatus::OutsideMaxAge]
        );
        assert_eq!(
            response.features[0].values[1],
            int64(7),
            "stale values are still returned"
        );
        assert_eq!(
            statuses(&response.features[1])[0],
            pb::FieldStatus::NullValue
        );

        // An older push never replaces a newer row.
        client
            .push_features(pb::PushFeaturesRequest {
                feature_view: "driver_hourly_stats".into(),
                columns: vec![
                    column("driver_id", vec![int64(5001)]),
                    column("event_timestamp", vec![ts(2)]),
                    column("avg_daily_trips", vec![int64(1)]),
                ],
                to: 0,
                timestamp_unit: 0,
            })
            .await
            .unwrap();
        let again = client
            .get_online_features(pb::GetOnlineFeaturesRequest {
                features: refs(&["driver_hourly_stats:avg_daily_trips"]),
                entities: vec![column("driver_id", vec![int64(5001)])],
                full_feature_names: false,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(again.features[0].values[0], int64(42));
    });
}

#[test]
fn bad_online_requests_get_the_right_status_and_message() {
    let (_dir, server) = served(&["--max-rows", "3"]);
    runtime().block_on(async {
        let mut client = pb::online_service_client::OnlineServiceClient::new(server.channel());
        let read = |features: &[&str], entities: Vec<pb::Column>| pb::GetOnlineFeaturesRequest {
            features: refs(features),
            entities,
            full_feature_names: false,
        };
        let cases = [
            (
                read(
                    &["driver_hourly_stats:nope"],
                    vec![column("driver_id", vec![int64(1)])],
                ),
                Code::NotFound,
                "driver_hourly_stats:nope",
            ),
            (
                read(&["nope:x"], vec![column("driver_id", vec![int64(1)])]),
                Code::NotFound,
                "'nope'",
            ),
            (
                read(
                    &["driver_hourly_stats:conv_rate"],
                    vec![column("driver_id", vec![string("x")])],
                ),
                Code::InvalidArgument,
                "driver_id",
            ),
            (
                read(
                    &["driver_hourly_stats:conv_rate"],
                    vec![column("customer_id", vec![string("x")])],
                ),
                Code::InvalidArgument,
                "missing join key 'driver_id'",
            ),
            (
                read(
                    &["driver_hourly_stats:conv_rate"],
                    vec![column("driver_id", (0..4).map(int64).collect())],
                ),
                Code::ResourceExhausted,
                "too many entity rows: 4",
            ),
            (
                read(&["bad ref"], vec![column("driver_id", vec![int64(1)])]),
                Code::InvalidArgument,
                "'bad ref'",
            ),
        ];
        for (request, code, needle) in cases {
            let e = client.get_online_features(request).await.unwrap_err();
            assert_eq!(e.code(), code, "{e:?}");
            assert!(e.message().contains(needle), "{needle}: {}", e.message());
        }
        let e = client
            .push_features(pb::PushFeaturesRequest {
                feature_view: "driver_hourly_stats".into(),
                columns: vec![column("driver_id", vec![int64(1)])],
                to: 0,
                timestamp_unit: 0,
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains("event_timestamp"), "{}", e.message());
    });
    // HTTP: malformed JSON, wrong shapes and unknown features.
    let (code, body) = http(&server.http, "POST", "/get-online-features", Some("{nope"));
    assert_eq!(code, 400);
    assert!(body.contains("malformed JSON"), "{body}");
    let (code, body) = http(
        &server.http,
        "POST",
        "/get-online-features",
        Some(r#"{"features": ["driver_hourly_stats:nope"], "entities": {"driver_id": [1]}}"#),
    );
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("driver_hourly_stats:nope"), "{body}");
    let (code, body) = http(
        &server.http,
        "POST",
        "/get-online-features",
        Some(r#"{"features": "driver_hourly_stats:conv_rate", "entities": {"driver_id": [1]}}"#),
    );
    assert_eq!(code, 400, "{body}");
}

#[test]
fn feast_grpc_and_http_protocols_answer_like_feast() {
    let (_dir, server) = served(&[]);
    // Feast's gRPC ServingService: join keys first, then features; int32 finds an int64 key.
    let grpc = runtime().block_on(async {
        let mut client = fs::serving_service_client::ServingServiceClient::new(server.channel());
        let info = client
            .get_feast_serving_info(fs::GetFeastServingInfoRequest {})
            .await
            .unwrap()
            .into_inner();
        assert!(info.version.starts_with("quiver"));
        let mut entities = HashMap::new();
        entities.insert(
            "driver_id".to_owned(),
            ft::RepeatedValue {
                val: vec![
                    ft::Value {
                        val: Some(ft::value::Val::Int32Val(1001)),
                    },
                    ft::Value {
                        val: Some(ft::value::Val::Int64Val(1001)),
                    },
                ],
            },
        );
        client
            .get_online_features(fs::GetOnlineFeaturesRequest {
                kind: Some(fs::get_online_features_request::Kind::Features(
                    fs::FeatureList {
                        val: vec!["driver_hourly_stats:avg_daily_trips".into()],
                    },
                )),
                entities,
                full_feature_names: false,
                request_context: HashMap::new(),
                include_feature_view_version_metadata: false,
            })
            .await
            .unwrap()
            .into_inner()
    });
    let names = grpc.metadata.unwrap().feature_names.unwrap().val;
    assert_eq!(names, ["driver_id", "avg_daily_trips"]);
    assert_eq!(grpc.results.len(), 2);
    let trips = &grpc.results[1];
    assert_eq!(
        trips.values[0], trips.values[1],
        "int32 and int64 keys find the same row"
    );
    assert_ne!(trips.statuses[0], fs::FieldStatus::NotFound as i32);

    // Feast's HTTP feature server.
    let (code, body) = http(&server.http, "GET", "/health", None);
    assert_eq!(code, 200, "{body}");
    let request = json!({
        "features": ["driver_hourly_stats:avg_daily_trips", "customer_profile:current_balance"],
        "entities": {"driver_id": [1001, 99], "customer_id": ["C1001", "C1002"]},
        "full_feature_names": true,
    });
    let (code, body) = http(
        &server.http,
        "POST",
        "/get-online-features",
        Some(&request.to_string()),
    );
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["metadata"]["feature_names"],
        json!([
            "driver_id",
            "customer_id",
            "driver_hourly_stats__avg_daily_trips",
            "customer_profile__current_balance"
        ])
    );
    assert_eq!(v["results"][0]["values"], json!([1001, 99]));
    assert_eq!(v["results"][2]["statuses"][1], "NOT_FOUND");
    assert!(
        v["results"][2]["event_timestamps"][0]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );

    // write-to-online-store and push (Feast's shapes), then read back.
    let write = json!({
        "feature_view_name": "driver_hourly_stats",
        "df": {"driver_id": [6001], "event_timestamp": [now_iso(1)], "created": [null], "avg_daily_trips": [11]},
        "allow_registry_cache": true,
    });
    let (code, body) = http(
        &server.http,
        "POST",
        "/write-to-online-store",
        Some(&write.to_string()),
    );
    assert_eq!(code, 200, "{body}");
    let push = json!({
        "push_source_name": "driver_hourly_stats",
        "df": {"driver_id": [6002], "event_timestamp": [now_iso(1)], "avg_daily_trips": [12]},
        "to": "online",
    });
    let (code, body) = http(&server.http, "POST", "/push", Some(&push.to_string()));
    assert_eq!(code, 200, "{body}");
    let read = json!({"features": ["driver_hourly_stats:avg_daily_trips"], "entities": {"driver_id": [6001, 6002]}});
    let (_, body) = http(
        &server.http,
        "POST",
        "/get-online-features",
        Some(&read.to_string()),
    );
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["results"][1]["values"], json!([11, 12]), "{v}");
    assert_eq!(v["results"][1]["statuses"], json!(["PRESENT", "PRESENT"]));
}

#[test]
fn push_online_and_offline_keeps_training_and_serving_consistent() {
    let (dir, server) = served(&[]);
    let repo = dir.path();
    let push = json!({
        "push_source_name": "driver_customer_trips",
        "df": {"driver_id": [7001], "customer_id": ["C7001"], "event_timestamp": [now_iso(2)], "trips_together": [5], "last_rating": [4.5]},
        "to": "online_and_offline",
    });
    let (code, body) = http(&server.http, "POST", "/push", Some(&push.to_string()));
    assert_eq!(code, 200, "{body}");
    let files: Vec<_> = std::fs::read_dir(repo.join("data/driver_customer_trips"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("push-"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    // The source stays valid and a training set now sees the pushed row.
    quiver_ok(repo, &["plan"]);
    let entities = repo.join("e.parquet");
    quiver_e2e::write_trip_entities(&entities, &[(7001, "C7001")]);
    let out = repo.join("out.parquet");
    let run = quiver_ok(
        repo,
        &[
            "--json",
            "training-set",
            "--entities",
            entities.to_str().unwrap(),
            "--features",
            "driver_customer_trips:trips_together",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(run.json()["rows"], 1);
    let table = quiver_e2e::read_parquet(&out);
    let trips = table.column_by_name("trips_together").unwrap();
    assert_eq!(
        arrow::array::AsArray::as_primitive::<arrow::datatypes::Int64Type>(trips).value(0),
        5
    );
}

#[test]
fn registry_changes_reach_the_server_without_a_restart() {
    let (dir, server) = served(&[]);
    let repo = dir.path();
    runtime().block_on(async {
        // Health checking and the registry service.
        let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel());
        let status = health
            .check(tonic_health::pb::HealthCheckRequest { service: String::new() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(status.status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);

        let mut registry = pb::registry_service_client::RegistryServiceClient::new(server.channel());
        let listed = registry
            .list_objects(pb::ListObjectsRequest { kind: pb::ObjectKind::FeatureView as i32 })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(listed.objects.len(), 3);
        let version = listed.version;

        // Apply over gRPC: the repository's files plus a new view.
        let mut files = HashMap::new();
        for name in ["entities.yaml", "features.yaml"] {
            files.insert(name.to_owned(), std::fs::read_to_string(repo.join(name)).unwrap());
        }
        files.insert(
            "extra.yaml".to_owned(),
            "feature_views:\n  - name: driver_trips_only\n    entities: [driver]\n    source: driver_stats_source\n    ttl: 1d\n    features:\n      - {name: avg_daily_trips, type: int64}\n".to_owned(),
        );
        let stale = registry
            .apply(pb::ApplyRequest { files: files.clone(), based_on: Some(0), author: "e2e".into() })
            .await
            .unwrap_err();
        assert_eq!(stale.code(), Code::Aborted, "{stale:?}");
        assert!(stale.message().contains("conflict"), "{}", stale.message());
        let applied = registry
            .apply(pb::ApplyRequest { files: files.clone(), based_on: Some(version), author: "e2e".into() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(applied.version, version + 1);
        assert!(applied.changes.iter().any(|c| c.name == "driver_trips_only" && c.action == "added"));

        // Invalid definitions are refused with the file and line.
        let mut broken = files.clone();
        broken.insert("extra.yaml".into(), "feature_views:\n  - name: x\n    entities: [nobody]\n    source: driver_stats_source\n    features: []\n".into());
        let e = registry
            .apply(pb::ApplyRequest { files: broken, based_on: None, author: String::new() })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains("extra.yaml:"), "{}", e.message());

        // The new view is served at once: push a row into it and read it.
        let mut online = pb::online_service_client::OnlineServiceClient::new(server.channel());
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros() as i64;
        online
            .push_features(pb::PushFeaturesRequest {
                feature_view: "driver_trips_only".into(),
                columns: vec![
                    column("driver_id", vec![int64(1)]),
                    column("event_timestamp", vec![pb::Value { kind: Some(pb::value::Kind::TimestampMicros(now)) }]),
                    column("avg_daily_trips", vec![int64(3)]),
                ],
                to: 0,
                timestamp_unit: 0,
            })
            .await
            .unwrap();
        let got = online
            .get_online_features(pb::GetOnlineFeaturesRequest {
                features: refs(&["driver_trips_only:avg_daily_trips"]),
                entities: vec![column("driver_id", vec![int64(1)])],
                full_feature_names: false,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got.features[0].values[0], int64(3));
        assert_eq!(got.registry_version, version + 1);

        let history = registry.history(pb::HistoryRequest {}).await.unwrap().into_inner();
        assert_eq!(history.versions.len() as u64, version + 1);
    });

    // A version applied by another process (the CLI) is picked up within a second.
    std::fs::write(
        repo.join("later.yaml"),
        "feature_views:\n  - name: from_the_cli\n    entities: [driver]\n    source: driver_stats_source\n    features:\n      - {name: conv_rate, type: float32}\n",
    )
    .unwrap();
    std::fs::remove_file(repo.join("extra.yaml")).ok();
    quiver_ok(repo, &["apply"]);
    let request =
        json!({"features": ["from_the_cli:conv_rate"], "entities": {"driver_id": [1001]}})
            .to_string();
    let started = std::time::Instant::now();
    loop {
        let (code, body) = http(&server.http, "POST", "/get-online-features", Some(&request));
        if code == 200 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "not picked up: {body}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn python_grpcio_and_feast_sdk_clients_read_online_features() {
    let (dir, server) = served(&[]);
    let repo = dir.path().to_string_lossy();
    let v = python_json(
        &quiver_e2e::examples_dir().join("python/online.py"),
        [
            "--grpc",
            &server.grpc,
            "--http",
            &server.http,
            "--repo",
            &repo,
        ],
    );
    let grpc = &v["grpc"]["avg_daily_trips"];
    assert_eq!(grpc[2][1], "NOT_FOUND", "{v}");
    assert!(grpc[0][0].is_i64() || grpc[0][1] == "NULL_VALUE", "{v}");
    // The Feast SDK gets the same values as the gRPC client.
    let feast = &v["feast_sdk"];
    assert_eq!(feast["driver_id"], json!([1001, 1002, 4242]), "{v}");
    for (i, pair) in grpc.as_array().unwrap().iter().enumerate() {
        assert_eq!(feast["avg_daily_trips"][i], pair[0], "{v}");
    }
}

#[test]
fn server_reflection_lists_and_describes_every_service() {
    let (_dir, server) = served(&[]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/reflection_list.py");
    let v = python_json(&script, [&server.grpc]);
    for service in [
        "quiver.v1.OnlineService",
        "quiver.v1.RegistryService",
        "feast.serving.ServingService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            v["services"].as_array().unwrap().contains(&json!(service)),
            "{service} missing: {v}"
        );
    }
    assert_eq!(
        v["methods"]["quiver.v1.OnlineService"],
        json!(["GetOnlineFeatures", "PushFeatures"]),
        "{v}"
    );
    assert_eq!(
        v["methods"]["quiver.v1.RegistryService"],
        json!(["Apply", "GetObject", "History", "ListObjects"]),
        "{v}"
    );
    assert_eq!(
        v["methods"]["feast.serving.ServingService"],
        json!(["GetFeastServingInfo", "GetOnlineFeatures"]),
        "{v}"
    );
}

#[test]
fn sigterm_lets_an_http_request_in_flight_finish() {
    use std::io::{Read, Write};
    let (_dir, server) = served(&[]);
    let body = json!({
        "features": ["driver_hourly_stats:conv_rate"],
        "entities": {"driver_id": [1001]},
    })
    .to_string();
    let host = server.http.trim_start_matches("http://").to_owned();
    let mut stream = std::net::TcpStream::connect(&host).unwrap();
    write!(
        stream,
        "POST /get-online-features HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    let (first, rest) = body.split_at(body.len() / 2);
    stream.write_all(first.as_bytes()).unwrap();
    // Half the body is sent: the request is in flight when the server is told to stop.
    std::thread::sleep(Duration::from_millis(200));
    server.sigterm();
    std::thread::sleep(Duration::from_millis(300));
    stream.write_all(rest.as_bytes()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"conv_rate\""), "{answer}");
    assert!(server.wait(), "the server exits cleanly after draining");
}

#[test]
fn sigterm_lets_a_grpc_call_in_flight_finish() {
    let (_dir, server) = served(&[]);
    let request = pb::GetOnlineFeaturesRequest {
        features: refs(&["driver_hourly_stats:conv_rate"]),
        entities: vec![column("driver_id", vec![int64(1001)])],
        full_feature_names: false,
    };
    runtime().block_on(async {
        let mut grpc = tonic::client::Grpc::new(server.channel());
        grpc.ready().await.unwrap();
        // The call's stream opens at once; its one message is sent only after the SIGTERM
        // (a unary call is the same HTTP/2 stream as a client stream of one message).
        let (send, sent) = tokio::sync::oneshot::channel::<()>();
        let body = futures::stream::once(async move {
            let _ = sent.await;
            request
        });
        let call = tokio::spawn(async move {
            grpc.client_streaming::<_, _, pb::GetOnlineFeaturesResponse, _>(
                tonic::Request::new(body),
                tonic::codegen::http::uri::PathAndQuery::from_static(
                    "/quiver.v1.OnlineService/GetOnlineFeatures",
                ),
                tonic_prost::ProstCodec::default(),
            )
            .await
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        server.sigterm();
        tokio::time::sleep(Duration::from_millis(300)).await;
        send.send(()).unwrap();
        let answer = call.await.unwrap().unwrap().into_inner();
        assert_eq!(answer.row_count, 1);
        assert_eq!(answer.features[0].name, "conv_rate");
    });
    assert!(server.wait(), "the server exits cleanly after draining");
}

#[test]
fn a_push_to_a_source_read_by_two_views_reaches_its_folder_once() {
    let dir = example_repo();
    let repo = dir.path();
    std::fs::write(
        repo.join("second.yaml"),
        "feature_views:\n  - name: trips_only\n    entities: [driver, customer]\n    source: driver_customer_source\n    features:\n      - {name: trips_together, type: int64}\n",
    )
    .unwrap();
    quiver_ok(repo, &["apply"]);
    let server = Server::start(repo);
    for (i, to) in ["offline", "online_and_offline"].into_iter().enumerate() {
        let push = json!({
            "push_source_name": "driver_customer_source",
            "df": {"driver_id": [7101 + i], "customer_id": ["C7101"], "event_timestamp": [now_iso(1)], "trips_together": [3]},
            "to": to,
        });
        let (code, body) = http(&server.http, "POST", "/push", Some(&push.to_string()));
        assert_eq!(code, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            v["feature_views"],
            json!(["driver_customer_trips", "trips_only"]),
            "{v}"
        );
    }
    let pushed: Vec<String> = std::fs::read_dir(repo.join("data/driver_customer_trips"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("push-"))
        .collect();
    assert_eq!(
        pushed.len(),
        2,
        "one file per push, not one per view: {pushed:?}"
    );
}

#[test]
fn undecodable_messages_and_unknown_base_versions_get_the_right_codes() {
    let (_dir, server) = served(&[]);
    runtime().block_on(async {
        let raw = |path: &'static str, bytes: Vec<u8>| {
            let channel = server.channel();
            async move {
                let mut grpc = tonic::client::Grpc::new(channel);
                grpc.ready().await.unwrap();
                grpc.unary(
                    tonic::Request::new(bytes),
                    tonic::codegen::http::uri::PathAndQuery::from_static(path),
                    quiver_e2e::RawCodec,
                )
                .await
                .unwrap_err()
            }
        };
        let garbage = raw("/quiver.v1.OnlineService/GetOnlineFeatures", vec![0xff; 4]).await;
        assert_eq!(garbage.code(), Code::InvalidArgument, "{garbage:?}");
        // feature_refs { refs: "\xc3\x28" }: not UTF-8.
        let not_utf8 = raw(
            "/quiver.v1.OnlineService/GetOnlineFeatures",
            vec![0x0a, 0x04, 0x0a, 0x02, 0xc3, 0x28],
        )
        .await;
        assert_eq!(not_utf8.code(), Code::InvalidArgument, "{not_utf8:?}");

        let mut registry =
            pb::registry_service_client::RegistryServiceClient::new(server.channel());
        let unknown = registry
            .apply(pb::ApplyRequest {
                files: HashMap::from([("features.yaml".to_owned(), "entities: []\n".to_owned())]),
                based_on: Some(99),
                author: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(unknown.code(), Code::FailedPrecondition, "{unknown:?}");
    });
}

/// `GET /metrics` counts every request by protocol, endpoint and status (Feast's metric names),
/// with one `other` label for paths no route has.
#[test]
fn metrics_count_requests_by_protocol_endpoint_and_status() {
    let (_dir, server) = served(&[]);
    let read =
        json!({"features": ["driver_hourly_stats:conv_rate"], "entities": {"driver_id": [1001]}});
    let (code, _) = http(
        &server.http,
        "POST",
        "/get-online-features",
        Some(&read.to_string()),
    );
    assert_eq!(code, 200);
    let (code, _) = http(&server.http, "POST", "/get-online-features", Some("{nope"));
    assert_eq!(code, 400);
    let (code, _) = http(&server.http, "GET", "/a/random/path", None);
    assert_eq!(code, 404);
    runtime().block_on(async {
        let mut client = pb::online_service_client::OnlineServiceClient::new(server.channel());
        let e = client
            .get_online_features(pb::GetOnlineFeaturesRequest {
                features: refs(&["driver_hourly_stats:nope"]),
                entities: vec![column("driver_id", vec![int64(1)])],
                full_feature_names: false,
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound);
    });
    let (code, text) = http(&server.http, "GET", "/metrics", None);
    assert_eq!(code, 200);
    let count = |labels: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("feast_feature_server_request_total{{{labels}}}")))
            .and_then(|l| l.rsplit(' ').next())
            .map(str::to_owned)
    };
    let http_read = "protocol=\"http\",endpoint=\"/get-online-features\"";
    assert_eq!(
        count(&format!("{http_read},status=\"200\"")).as_deref(),
        Some("1"),
        "{text}"
    );
    assert_eq!(
        count(&format!("{http_read},status=\"400\"")).as_deref(),
        Some("1"),
        "{text}"
    );
    assert_eq!(
        count("protocol=\"http\",endpoint=\"other\",status=\"404\"").as_deref(),
        Some("1"),
        "{text}"
    );
    assert_eq!(
        count("protocol=\"grpc\",endpoint=\"/quiver.v1.OnlineService/GetOnlineFeatures\",status=\"NOT_FOUND\"").as_deref(),
        Some("1"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "feast_feature_server_request_latency_seconds_count{{{http_read}}} 2"
        )),
        "{text}"
    );
}
