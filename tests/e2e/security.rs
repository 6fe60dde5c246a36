//! Confinement and limits of `quiver serve`: what a client can name, send and hold.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use arrow_flight::{FlightClient, Ticket};
use futures::TryStreamExt;
use quiver_e2e::{Server, example_repo, quiver_ok, runtime};
use quiver_server::proto::quiver::v1 as pb;
use tonic::Code;

/// Appends a `server:` section (`settings`, indented) to the repository's quiver.yaml.
fn set_server(repo: &Path, settings: &str) {
    let config = repo.join("quiver.yaml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{text}server:\n{settings}")).unwrap();
}

fn flight_client(server: &Server) -> FlightClient {
    let channel =
        tonic::transport::Channel::from_shared(server.flight.replace("grpc://", "http://"))
            .unwrap()
            .connect_lazy();
    FlightClient::new(channel)
}

/// The server's health check, unless it takes more than `seconds`.
async fn health_within(
    server: &Server,
    seconds: u64,
) -> Result<
    Result<tonic::Response<tonic_health::pb::HealthCheckResponse>, tonic::Status>,
    tokio::time::error::Elapsed,
> {
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel());
    tokio::time::timeout(
        Duration::from_secs(seconds),
        health.check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        }),
    )
    .await
}

/// A DoGet of the example's features onto the entity file `entities`.
async fn do_get(client: &mut FlightClient, entities: &str) -> Result<usize, tonic::Status> {
    let ticket = serde_json::json!({
        "features": ["driver_hourly_stats:conv_rate"],
        "entities": entities,
    });
    let stream = client
        .do_get(Ticket::new(ticket.to_string()))
        .await
        .map_err(into_status)?;
    let batches: Vec<arrow::array::RecordBatch> =
        stream.try_collect().await.map_err(into_status)?;
    Ok(batches
        .iter()
        .map(arrow::array::RecordBatch::num_rows)
        .sum())
}

fn into_status(e: arrow_flight::error::FlightError) -> tonic::Status {
    match e {
        arrow_flight::error::FlightError::Tonic(s) => *s,
        other => tonic::Status::unknown(other.to_string()),
    }
}

/// An entity file for the example's drivers.
fn write_entities(path: &Path) {
    let now = quiver_e2e::now_micros() * 1_000;
    quiver_e2e::write_parquet(
        path,
        &arrow::array::RecordBatch::try_from_iter([
            (
                "driver_id",
                std::sync::Arc::new(arrow::array::Int64Array::from(vec![1001, 1002]))
                    as arrow::array::ArrayRef,
            ),
            (
                "event_timestamp",
                std::sync::Arc::new(
                    arrow::array::TimestampNanosecondArray::from(vec![now, now])
                        .with_timezone("UTC"),
                ),
            ),
        ])
        .unwrap(),
    );
}

#[test]
fn paths_a_client_names_stay_under_the_data_root() {
    let repo_dir = example_repo();
    let repo = repo_dir.path();
    quiver_ok(repo, &["apply"]);
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("secret.parquet");
    write_entities(&secret);
    write_entities(&repo.join("entities.parquet"));
    std::os::unix::fs::symlink(&secret, repo.join("link.parquet")).unwrap();
    std::os::unix::fs::symlink(outside.path(), repo.join("outside")).unwrap();
    let relative = format!(
        "../{}/secret.parquet",
        outside.path().file_name().unwrap().to_str().unwrap()
    );
    let server = Server::start(repo);
    runtime().block_on(async {
        let mut client = flight_client(&server);
        assert_eq!(do_get(&mut client, "entities.parquet").await.unwrap(), 2);
        // Escapes, existing or not, get the same answer, which says nothing about the file.
        let secret_path = secret.to_str().unwrap().to_owned();
        for path in [
            secret_path.as_str(),
            "/etc/passwd",
            "/etc/shadow",
            "/nonexistent/x.parquet",
            relative.as_str(),
            "../../../../etc/passwd",
            "link.parquet",
            "outside/secret.parquet",
        ] {
            let e = do_get(&mut client, path).await.unwrap_err();
            assert_eq!(e.code(), Code::PermissionDenied, "{path}: {e:?}");
            assert!(
                e.message().contains("not a file or folder under the data root")
                    && !e.message().contains("footer")
                    && !e.message().contains("Size is")
                    && !e.message().contains("No such")
                    && !e.message().contains("os error"),
                "{path}: {}",
                e.message()
            );
        }

        // A remote apply cannot make a source of a folder outside the data root, so no push
        // can write there.
        let mut registry =
            pb::registry_service_client::RegistryServiceClient::new(server.channel());
        let before = registry
            .list_objects(pb::ListObjectsRequest { kind: 0 })
            .await
            .unwrap()
            .into_inner()
            .version;
        for path in [outside.path().to_str().unwrap(), relative.as_str(), "outside"] {
            let mut files = HashMap::new();
            for name in ["entities.yaml", "features.yaml"] {
                files.insert(
                    name.to_owned(),
                    std::fs::read_to_string(repo.join(name)).unwrap(),
                );
            }
            files.insert(
                "escape.yaml".into(),
                format!(
                    "sources:\n  - name: escape\n    path: {path}\n    timestamp_field: event_timestamp\nfeature_views:\n  - name: escaped\n    entities: [driver]\n    source: escape\n    features: []\n"
                ),
            );
            let e = registry
                .apply(pb::ApplyRequest {
                    files,
                    based_on: None,
                    author: "e2e".into(),
                })
                .await
                .unwrap_err();
            assert!(
                e.message().contains("not a file or folder under the data root"),
                "{path}: {}",
                e.message()
            );
        }
        let after = registry
            .list_objects(pb::ListObjectsRequest { kind: 0 })
            .await
            .unwrap()
            .into_inner()
            .version;
        assert_eq!(before, after, "nothing was registered");
    });
}

#[test]
fn a_fifo_named_by_a_client_never_stalls_the_server() {
    let repo_dir = example_repo();
    let repo = repo_dir.path();
    quiver_ok(repo, &["apply"]);
    let fifo = repo.join("entities.fifo");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let server = Server::start(repo);
    runtime().block_on(async {
        // Several at once: more than the runtime has worker threads.
        let gets: Vec<_> = (0..4)
            .map(|_| {
                let mut client = flight_client(&server);
                tokio::spawn(async move { do_get(&mut client, "entities.fifo").await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let check = health_within(&server, 5).await;
        assert!(
            matches!(check, Ok(Ok(_))),
            "the health check was not answered: {check:?}"
        );
        for get in gets {
            let answer = tokio::time::timeout(Duration::from_secs(5), get)
                .await
                .expect("a DoGet of a FIFO is answered")
                .unwrap();
            let e = answer.unwrap_err();
            assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
        }
    });
    // Nothing was read from the FIFO: it is still there and untouched.
    assert!(fifo.exists());
}

fn string_column(name: &str, values: impl Iterator<Item = String>) -> pb::Column {
    pb::Column {
        name: name.into(),
        values: values
            .map(|s| pb::Value {
                kind: Some(pb::value::Kind::StringValue(s)),
            })
            .collect(),
    }
}

fn read_request(entities: Vec<pb::Column>) -> pb::GetOnlineFeaturesRequest {
    pb::GetOnlineFeaturesRequest {
        features: Some(pb::get_online_features_request::Features::FeatureRefs(
            pb::FeatureList {
                refs: vec!["driver_hourly_stats:conv_rate".into()],
            },
        )),
        entities,
        full_feature_names: false,
    }
}

/// The server's peak resident memory, MiB.
fn peak_rss_mb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap()
        >> 10
}

#[test]
fn oversized_online_requests_are_refused_before_they_are_decoded() {
    let repo_dir = example_repo();
    let repo = repo_dir.path();
    quiver_ok(repo, &["apply"]);
    let server = Server::start_with(repo, &["--max-rows", "100"]);
    runtime().block_on(async {
        let mut client = pb::online_service_client::OnlineServiceClient::new(server.channel())
            .max_encoding_message_size(usize::MAX);
        // Every column is checked against the row limit, not only the first.
        let e = client
            .get_online_features(read_request(vec![
                string_column("driver_id", std::iter::once("1001".into())),
                string_column("customer_id", (0..5_000).map(|i| format!("C{i}"))),
            ]))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
        assert!(
            e.message().contains("'customer_id'") && e.message().contains("server.limits.max_rows"),
            "{}",
            e.message()
        );

        // A 62 MB request is refused from its length, quickly and without the memory.
        let big = "x".repeat(620_000);
        let started = std::time::Instant::now();
        let e = client
            .get_online_features(read_request(vec![string_column(
                "driver_id",
                (0..100).map(|_| big.clone()),
            )]))
            .await
            .unwrap_err();
        // tonic's code for a message over the decoding limit.
        assert_eq!(e.code(), Code::OutOfRange, "{e:?}");
        assert!(e.message().contains("too large"), "{}", e.message());
        let body = format!(
            "{{\"features\": [\"driver_hourly_stats:conv_rate\"], \"entities\": {{\"driver_id\": [{}]}}}}",
            (0..100).map(|_| format!("\"{big}\"")).collect::<Vec<_>>().join(",")
        );
        let answer = refused_http_post(&server.http, "/get-online-features", &body);
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
        let peak = peak_rss_mb(server.pid());
        assert!(peak < 400, "the server's memory peaked at {peak} MiB");
        // And it keeps serving.
        client
            .get_online_features(read_request(vec![pb::Column {
                name: "driver_id".into(),
                values: vec![pb::Value {
                    kind: Some(pb::value::Kind::Int64Value(1001)),
                }],
            }]))
            .await
            .unwrap();
    });
}

/// POSTs `body`, which the server may refuse before it is all sent; returns the answer.
fn refused_http_post(base: &str, path: &str, body: &str) -> String {
    use std::io::{Read, Write};
    let host = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(host).unwrap();
    let _ = write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
}

fn entity_table(rows: usize) -> arrow::array::RecordBatch {
    let now = quiver_e2e::now_micros() * 1_000;
    arrow::array::RecordBatch::try_from_iter([
        (
            "driver_id",
            std::sync::Arc::new(arrow::array::Int64Array::from_iter_values(
                (0..rows as i64).map(|i| 1001 + i % 5),
            )) as arrow::array::ArrayRef,
        ),
        (
            "event_timestamp",
            std::sync::Arc::new(
                arrow::array::TimestampNanosecondArray::from_iter_values((0..rows).map(|_| now))
                    .with_timezone("UTC"),
            ),
        ),
    ])
    .unwrap()
}

fn upload(
    command: &str,
    table: arrow::array::RecordBatch,
) -> arrow_flight::encode::FlightDataEncoder {
    arrow_flight::encode::FlightDataEncoderBuilder::new()
        .with_flight_descriptor(Some(arrow_flight::FlightDescriptor::new_cmd(
            command.to_owned(),
        )))
        .build(futures::stream::iter([Ok(table)]))
}

#[test]
fn flight_uploads_are_capped_in_rows_and_waiting_bytes() {
    let repo_dir = example_repo();
    let repo = repo_dir.path();
    set_server(
        repo,
        "  limits:\n    max_upload_rows: 50000\n    max_pending_upload_mb: 1\n",
    );
    quiver_ok(repo, &["apply"]);
    let server = Server::start(repo);
    runtime().block_on(async {
        let mut client = flight_client(&server);
        let native = serde_json::json!({"features": ["driver_hourly_stats:conv_rate"]}).to_string();
        let e = match client
            .do_exchange(upload(&native, entity_table(60_000)))
            .await
        {
            Ok(answer) => answer
                .try_collect::<Vec<arrow::array::RecordBatch>>()
                .await
                .map(|_| ())
                .map_err(into_status),
            Err(e) => Err(into_status(e)),
        };
        let Err(e) = e else {
            panic!("an upload over the row limit was taken")
        };
        assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
        assert!(e.message().contains("max_upload_rows"), "{}", e.message());

        // Feast's DoPut flow: tables wait for their DoGet, within the byte limit.
        let feast = |n: usize| {
            serde_json::json!({"api": "get_historical_features", "feature_refs": ["driver_hourly_stats:conv_rate"], "n": n})
                .to_string()
        };
        let put = |command: String, rows: usize| {
            let stream = upload(&command, entity_table(rows));
            let mut client = flight_client(&server);
            async move {
                match client.do_put(stream).await {
                    Ok(results) => results.try_collect::<Vec<_>>().await.map(|_| ()).map_err(into_status),
                    Err(e) => Err(into_status(e)),
                }
            }
        };
        put(feast(1), 40_000).await.unwrap();
        let e = put(feast(2), 40_000).await.unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
        assert!(e.message().contains("max_pending_upload_mb"), "{}", e.message());
        // The first upload is still there for its DoGet; fetching it frees the room.
        let rows: usize = client
            .do_get(Ticket::new(feast(1)))
            .await
            .unwrap()
            .try_collect::<Vec<arrow::array::RecordBatch>>()
            .await
            .unwrap()
            .iter()
            .map(arrow::array::RecordBatch::num_rows)
            .sum();
        assert_eq!(rows, 40_000);
        put(feast(2), 40_000).await.unwrap();
    });
}

#[test]
fn idle_and_half_sent_connections_are_closed() {
    use std::io::{Read, Write};
    let repo_dir = example_repo();
    let repo = repo_dir.path();
    set_server(repo, "  limits:\n    header_timeout: 1s\n");
    quiver_ok(repo, &["apply"]);
    // A small open-file limit: the idle sockets alone would exhaust it.
    let server = Server::start_with_files_limit(repo, 128);
    let port = |address: &str| {
        address
            .rsplit(':')
            .next()
            .unwrap()
            .trim_end_matches('/')
            .to_owned()
    };
    let addresses: Vec<String> = [&server.grpc, &server.http, &server.flight]
        .iter()
        .map(|a| format!("127.0.0.1:{}", port(a)))
        .collect();
    let mut idle = Vec::new();
    for i in 0..230 {
        let mut s = std::net::TcpStream::connect(&addresses[i % 3]).unwrap();
        if i % 10 == 0 {
            // Half a request, never finished.
            let _ = s.write_all(b"POST /get-online-features HTTP/1.1\r\nHost: x\r\nContent-Le");
        }
        idle.push(s);
    }
    runtime().block_on(async {
        // New clients are served once idle connections are closed (after the header
        // timeout), and the server keeps following the registry.
        let check = health_within(&server, 30).await;
        assert!(matches!(check, Ok(Ok(_))), "{check:?}");
    });
    let extra = "feature_views:\n  - name: trips_again\n    entities: [driver]\n    source: driver_stats_source\n    features:\n      - {name: avg_daily_trips, type: int64}\n";
    std::fs::write(repo.join("extra.yaml"), extra).unwrap();
    quiver_ok(repo, &["apply"]);
    runtime().block_on(async {
        let mut registry =
            pb::registry_service_client::RegistryServiceClient::new(server.channel());
        let mut version = 0;
        for _ in 0..100 {
            version = registry
                .list_objects(pb::ListObjectsRequest { kind: 0 })
                .await
                .unwrap()
                .into_inner()
                .version;
            if version == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            version, 2,
            "the server did not pick up the new registry version"
        );
    });
    // Every idle socket was closed by the server (after what it sent first, such as HTTP/2
    // settings).
    for mut s in idle {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut sent = Vec::new();
        let read = s.read_to_end(&mut sent);
        assert!(
            !matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut),
            "an idle connection is still open: {read:?}"
        );
    }
}

/// A token made by `quiver token create`, and its tokens-file entry.
fn create_token(
    repo: &Path,
    principal: &str,
    expires_in: Option<&str>,
) -> (String, serde_json::Value) {
    let mut args = vec![
        "--json",
        "token",
        "create",
        "--principal",
        principal,
        "--roles",
        "reader",
    ];
    if let Some(e) = expires_in {
        args.extend(["--expires-in", e]);
    }
    let out = quiver_ok(repo, &args).json();
    (
        out["token"].as_str().unwrap().to_owned(),
        out["entry"].clone(),
    )
}

fn tls_channel(
    server: &Server,
    address: &str,
    ca: &Path,
    identity: Option<&quiver_testkit::Certificates>,
) -> tonic::transport::Channel {
    let _ = server;
    let mut tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(
            std::fs::read(ca).unwrap(),
        ))
        .domain_name("127.0.0.1");
    if let Some(c) = identity {
        tls = tls.identity(tonic::transport::Identity::from_pem(
            std::fs::read(&c.cert).unwrap(),
            std::fs::read(&c.key).unwrap(),
        ));
    }
    tonic::transport::Channel::from_shared(format!("https://{address}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect_lazy()
}

fn with_token<T>(message: T, header: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(h) = header {
        request
            .metadata_mut()
            .insert("authorization", h.parse().unwrap());
    }
    request
}

/// A `ListServices` over server reflection: "OK" or the gRPC code.
async fn tonic_reflection_list(channel: tonic::transport::Channel, header: Option<&str>) -> String {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_request::MessageRequest,
    };
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut client = ServerReflectionClient::new(channel);
    let answer = client
        .server_reflection_info(with_token(futures::stream::iter([request]), header))
        .await;
    match answer {
        Ok(r) => match r.into_inner().message().await {
            Ok(_) => "OK".to_owned(),
            Err(s) => format!("{:?}", s.code()),
        },
        Err(s) => format!("{:?}", s.code()),
    }
}

/// Every endpoint kind of every port, with one set of credentials: the gRPC codes (or HTTP
/// statuses) they got.
async fn call_every_port(server: &Server, ca: &Path, header: Option<&str>) -> Vec<String> {
    let grpc = tls_channel(server, &server.grpc, ca, None);
    let flight_address = server.flight.trim_start_matches("grpc+tls://").to_owned();
    let flight = tls_channel(server, &flight_address, ca, None);
    let code = |r: Result<(), tonic::Status>| match r {
        Ok(()) => "OK".to_owned(),
        Err(s) => format!("{:?}", s.code()),
    };
    let mut out = Vec::new();
    let mut online = pb::online_service_client::OnlineServiceClient::new(grpc.clone());
    out.push(code(
        online
            .get_online_features(with_token(
                read_request(vec![pb::Column {
                    name: "driver_id".into(),
                    values: vec![pb::Value {
                        kind: Some(pb::value::Kind::Int64Value(1001)),
                    }],
                }]),
                header,
            ))
            .await
            .map(|_| ()),
    ));
    let mut registry = pb::registry_service_client::RegistryServiceClient::new(grpc.clone());
    out.push(code(
        registry
            .list_objects(with_token(pb::ListObjectsRequest { kind: 0 }, header))
            .await
            .map(|_| ()),
    ));
    let mut runs =
        pb::materialization_service_client::MaterializationServiceClient::new(grpc.clone());
    out.push(code(
        runs.list_runs(with_token(pb::ListRunsRequest::default(), header))
            .await
            .map(|_| ()),
    ));
    let mut admin = pb::online_store_service_client::OnlineStoreServiceClient::new(grpc.clone());
    out.push(code(
        admin
            .get_stats(with_token(pb::GetStatsRequest {}, header))
            .await
            .map(|_| ()),
    ));
    // Reflection is behind the gate too; only health checks are not.
    out.push(tonic_reflection_list(grpc.clone(), header).await);
    let mut feast =
        quiver_server::proto::feast::serving::serving_service_client::ServingServiceClient::new(
            grpc,
        );
    out.push(code(
        feast
            .get_feast_serving_info(with_token(
                quiver_server::proto::feast::serving::GetFeastServingInfoRequest {},
                header,
            ))
            .await
            .map(|_| ()),
    ));
    let mut flight = arrow_flight::flight_service_client::FlightServiceClient::new(flight);
    out.push(code(
        match flight
            .list_flights(with_token(arrow_flight::Criteria::default(), header))
            .await
        {
            Ok(r) => r.into_inner().message().await.map(|_| ()),
            Err(e) => Err(e),
        },
    ));
    let command = serde_json::json!({"features": ["driver_hourly_stats:conv_rate"]}).to_string();
    out.push(code(
        flight
            .get_schema(with_token(
                arrow_flight::FlightDescriptor::new_cmd(command),
                header,
            ))
            .await
            .map(|_| ()),
    ));
    // HTTP, through curl trusting the CA.
    let mut curl = std::process::Command::new("curl");
    curl.args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
        .arg(ca)
        .args(["-X", "POST", "-H", "Content-Type: application/json", "-d"])
        .arg(
            r#"{"features": ["driver_hourly_stats:conv_rate"], "entities": {"driver_id": [1001]}}"#,
        );
    if let Some(h) = header {
        curl.arg("-H").arg(format!("Authorization: {h}"));
    }
    let status = curl
        .arg(format!("{}/get-online-features", server.http))
        .output()
        .unwrap();
    let code = String::from_utf8_lossy(&status.stdout).into_owned();
    assert_ne!(
        code,
        "000",
        "curl: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    out.push(code);
    out
}

#[test]
fn tls_and_tokens_on_every_port() {
    let repo_dir = example_repo();
    let repo = repo_dir.path();
    let certs = quiver_testkit::Certificates::generate(repo);
    let (token, entry) = create_token(repo, "alice", Some("30d"));
    let (expired, mut expired_entry) = create_token(repo, "bob", None);
    expired_entry["expires"] = "2020-01-01T00:00:00Z".into();
    std::fs::write(
        repo.join("tokens.json"),
        serde_json::json!({"tokens": [entry, expired_entry]}).to_string(),
    )
    .unwrap();
    let config = repo.join("quiver.yaml");
    set_server(
        repo,
        &format!(
            "  tls: {{cert_file: {}, key_file: {}}}\n  auth: {{type: token, tokens_file: tokens.json}}\n",
            certs.cert.display(),
            certs.key.display()
        ),
    );
    quiver_ok(repo, &["apply"]);
    let server = Server::start(repo);
    assert!(server.http.starts_with("https://"), "{}", server.banner);
    runtime().block_on(async {
        let unauthenticated = ["Unauthenticated"; 8].map(str::to_owned).to_vec();
        for header in [
            None,
            Some("Basic YWxpY2U6eA==".to_owned()),
            Some(format!("Bearer {token}x")),
            Some(format!("Bearer {expired}")),
        ] {
            let mut got = call_every_port(&server, &certs.ca, header.as_deref()).await;
            assert_eq!(got.pop().unwrap(), "401", "{header:?}");
            assert_eq!(got, unauthenticated, "{header:?}");
        }
        let good = format!("Bearer {token}");
        let got = call_every_port(&server, &certs.ca, Some(&good)).await;
        assert_eq!(got, ["OK", "OK", "OK", "OK", "OK", "OK", "OK", "OK", "200"]);

        // A plaintext client gets nothing.
        let plain = tonic::transport::Channel::from_shared(format!("http://{}", server.grpc))
            .unwrap()
            .connect_lazy();
        let e = pb::registry_service_client::RegistryServiceClient::new(plain)
            .list_objects(with_token(pb::ListObjectsRequest { kind: 0 }, Some(&good)))
            .await
            .unwrap_err();
        assert_ne!(e.code(), Code::Ok);
    });
    // The CLI reaches the server over TLS with its token: a read, and a materialization run
    // by the server that holds the store.
    let cli = |args: &[&str], token: Option<&str>| {
        let mut command = std::process::Command::new(quiver_e2e::quiver_bin());
        command
            .arg("--repo")
            .arg(repo)
            .args(args)
            .env("QUIVER_TLS_CA", &certs.ca);
        if let Some(t) = token {
            command.env("QUIVER_TOKEN", t);
        }
        let out = command.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let grpc_url = format!("https://{}", server.grpc);
    let read = [
        "--server",
        grpc_url.as_str(),
        "get-online",
        "--features",
        "driver_hourly_stats:conv_rate",
        "--entity",
        "driver_id=1001",
    ];
    assert!(cli(&read, Some(&token)).0);
    let (ok, stderr) = cli(&read, None);
    assert!(!ok && stderr.contains("unauthenticated"), "{stderr}");
    let (ok, stderr) = cli(&["materialize-incremental", "now"], Some(&token));
    assert!(ok, "{stderr}");
    drop(server);

    // Mutual TLS: a client without a certificate the CA signed is refused.
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace(
            "key_file:",
            &format!("client_ca_file: {}, key_file:", certs.ca.display()),
        ),
    )
    .unwrap();
    let server = Server::start(repo);
    runtime().block_on(async {
        let good = format!("Bearer {token}");
        let list = |channel| async {
            pb::registry_service_client::RegistryServiceClient::new(channel)
                .list_objects(with_token(pb::ListObjectsRequest { kind: 0 }, Some(&good)))
                .await
                .map(|_| ())
        };
        let anonymous = tls_channel(&server, &server.grpc, &certs.ca, None);
        assert!(list(anonymous).await.is_err());
        let known = tls_channel(&server, &server.grpc, &certs.ca, Some(&certs));
        list(known).await.unwrap();
    });
}

fn int64(v: i64) -> pb::Value {
    pb::Value {
        kind: Some(pb::value::Kind::Int64Value(v)),
    }
}

/// A repository with token authentication and permissions: `reader` may read and describe
/// the drivers' view (tagged `team: drivers`), `admin` may do everything.
fn repo_with_permissions() -> (tempfile::TempDir, HashMap<&'static str, String>) {
    let repo_dir = example_repo();
    let repo = repo_dir.path();
    let mut tokens = HashMap::new();
    let mut entries = Vec::new();
    for (who, role) in [("alice", "reader"), ("eve", "visitor"), ("root", "admin")] {
        let out = quiver_ok(
            repo,
            &[
                "--json",
                "token",
                "create",
                "--principal",
                who,
                "--roles",
                role,
            ],
        )
        .json();
        tokens.insert(who, out["token"].as_str().unwrap().to_owned());
        entries.push(out["entry"].clone());
    }
    std::fs::write(
        repo.join("tokens.json"),
        serde_json::json!({ "tokens": entries }).to_string(),
    )
    .unwrap();
    set_server(repo, "  auth: {type: token, tokens_file: tokens.json}\n");
    std::fs::write(
        repo.join("permissions.yaml"),
        "permissions:\n  - name: drivers_readers\n    types: [feature_view]\n    required_tags: {team: drivers}\n    actions: [read, describe]\n    policy: {roles: [reader]}\n  - name: admins\n    actions: [all]\n    policy: {roles: [admin]}\n",
    )
    .unwrap();
    quiver_ok(repo, &["apply"]);
    (repo_dir, tokens)
}

#[test]
fn permissions_decide_every_action() {
    let (repo_dir, tokens) = repo_with_permissions();
    let repo = repo_dir.path();
    quiver_ok(repo, &["materialize-incremental", "now"]);
    let server = Server::start(repo);
    let bearer = |who: &str| format!("Bearer {}", tokens[who]);
    runtime().block_on(async {
        let read = |features: &[&str]| {
            let mut r = read_request(vec![pb::Column {
                name: "driver_id".into(),
                values: vec![int64(1001)],
            }]);
            r.features = Some(pb::get_online_features_request::Features::FeatureRefs(
                pb::FeatureList {
                    refs: features.iter().map(|f| (*f).to_owned()).collect(),
                },
            ));
            r
        };
        let mut online = pb::online_service_client::OnlineServiceClient::new(server.channel());
        let stats = ["driver_hourly_stats:conv_rate"];
        // A permitted read.
        online
            .get_online_features(with_token(read(&stats), Some(&bearer("alice"))))
            .await
            .unwrap();
        // No permission for this principal, or for this view (untagged), or this action.
        for (who, features) in [("eve", &stats[..]), ("alice", &["customer_profile:current_balance"][..])] {
            let e = online
                .get_online_features(with_token(read(features), Some(&bearer(who))))
                .await
                .unwrap_err();
            assert_eq!(e.code(), Code::PermissionDenied, "{who}: {e:?}");
            assert!(e.message().contains("may not read_online"), "{}", e.message());
        }
        let push = |who: &str| {
            with_token(
                pb::PushFeaturesRequest {
                    feature_view: "driver_hourly_stats".into(),
                    columns: vec![
                        pb::Column { name: "driver_id".into(), values: vec![int64(7)] },
                        pb::Column {
                            name: "event_timestamp".into(),
                            values: vec![pb::Value {
                                kind: Some(pb::value::Kind::TimestampMicros(quiver_e2e::now_micros())),
                            }],
                        },
                        pb::Column { name: "avg_daily_trips".into(), values: vec![int64(3)] },
                    ],
                    to: 0,
                    timestamp_unit: 0,
                },
                Some(&bearer(who)),
            )
        };
        let e = online.push_features(push("alice")).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
        online.push_features(push("root")).await.unwrap();

        // Training sets: every view read needs read_offline.
        let mut flight = flight_client(&server);
        flight.add_header("authorization", &bearer("eve")).unwrap();
        let e = do_get(&mut flight, "entities.parquet").await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
        let flight = arrow_flight::flight_service_client::FlightServiceClient::new(
            tonic::transport::Channel::from_shared(server.flight.replace("grpc://", "http://"))
                .unwrap()
                .connect_lazy(),
        );
        let listed = |who: &'static str| {
            let mut flight = flight.clone();
            let header = bearer(who);
            async move {
                let mut stream = flight
                    .list_flights(with_token(arrow_flight::Criteria::default(), Some(&header)))
                    .await
                    .unwrap()
                    .into_inner();
                let mut names = Vec::new();
                while let Some(info) = stream.message().await.unwrap() {
                    names.push(info.flight_descriptor.unwrap().path.join("/"));
                }
                names
            }
        };
        assert_eq!(listed("alice").await, ["driver_hourly_stats"]);
        assert!(listed("eve").await.is_empty());

        // The registry: listing shows what the caller may describe; applying needs the
        // actions on every changed object.
        let mut registry = pb::registry_service_client::RegistryServiceClient::new(server.channel());
        let names = |who: &str| {
            let mut registry = registry.clone();
            let header = bearer(who);
            async move {
                registry
                    .list_objects(with_token(pb::ListObjectsRequest { kind: 0 }, Some(&header)))
                    .await
                    .unwrap()
                    .into_inner()
                    .objects
                    .into_iter()
                    .map(|o| o.name)
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(names("alice").await, ["driver_hourly_stats"]);
        assert!(names("eve").await.is_empty());
        assert!(names("root").await.len() > 5);
        let mut files = HashMap::new();
        for name in ["entities.yaml", "features.yaml", "permissions.yaml"] {
            files.insert(name.to_owned(), std::fs::read_to_string(repo.join(name)).unwrap());
        }
        files.insert(
            "extra.yaml".into(),
            "feature_views:\n  - name: more_trips\n    entities: [driver]\n    source: driver_stats_source\n    tags: {team: drivers}\n    features:\n      - {name: avg_daily_trips, type: int64}\n".into(),
        );
        let apply = |who: &str| {
            with_token(
                pb::ApplyRequest { files: files.clone(), based_on: None, author: who.into() },
                Some(&bearer(who)),
            )
        };
        let e = registry.apply(apply("alice")).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
        assert!(e.message().contains("may not create feature view 'more_trips'"), "{}", e.message());
        registry.apply(apply("root")).await.unwrap();

        // Materialization writes online.
        let mut materialize =
            pb::materialization_service_client::MaterializationServiceClient::new(server.channel());
        let e = match materialize
            .materialize_incremental(with_token(
                pb::MaterializeIncrementalRequest {
                    views: vec!["driver_hourly_stats".into()],
                    end_nanos: quiver_e2e::now_micros() * 1_000,
                    lookback_nanos: 0,
                    ..Default::default()
                },
                Some(&bearer("alice")),
            ))
            .await
        {
            Ok(r) => r.into_inner().message().await.unwrap_err(),
            Err(e) => e,
        };
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    });
    // HTTP answers 403 the same way.
    let body =
        r#"{"features": ["driver_hourly_stats:conv_rate"], "entities": {"driver_id": [1001]}}"#;
    let curl = |who: &str| {
        let out = std::process::Command::new("curl")
            .args([
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-d",
                body,
                "-H",
            ])
            .arg(format!("Authorization: {}", bearer(who)))
            .arg(format!("{}/get-online-features", server.http))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(curl("alice"), "200");
    assert_eq!(curl("eve"), "403");

    // `quiver permissions check` explains a decision.
    let check = |roles: &str, object: &str| {
        quiver_e2e::quiver(
            repo,
            &[
                "permissions",
                "check",
                "--principal",
                "p",
                "--roles",
                roles,
                "--action",
                "read_online",
                "--object",
                object,
            ],
        )
    };
    let allowed = check("reader", "feature_view:driver_hourly_stats");
    assert!(
        allowed.ok
            && allowed
                .stdout
                .contains("allowed by permission 'drivers_readers'"),
        "{allowed:?}"
    );
    let denied = check("reader", "feature_view:customer_profile");
    assert!(
        !denied.ok
            && denied
                .stdout
                .contains("denied: no permission grants read_online"),
        "{denied:?}"
    );

    // Every write and every denial is in the audit log (written in the background), and no
    // token is.
    let expected = [
        ("eve", "read_online", "denied"),
        ("alice", "write_online", "denied"),
        ("root", "push", "ok"),
        ("root", "apply", "ok"),
    ];
    let mut audit = String::new();
    let recorded = |audit: &str| {
        let lines: Vec<serde_json::Value> = audit
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        expected.iter().all(|(principal, action, outcome)| {
            lines.iter().any(|l| {
                l["principal"] == *principal && l["action"] == *action && l["outcome"] == *outcome
            })
        })
    };
    for _ in 0..50 {
        audit = std::fs::read_to_string(repo.join("audit.log")).unwrap_or_default();
        if recorded(&audit) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(recorded(&audit), "{audit}");
    for token in tokens.values() {
        assert!(!audit.contains(token.as_str()));
    }
}

/// The tests' OpenID Connect provider (`tests/python/oidc_provider.py`), stopped when dropped.
struct Provider {
    child: std::process::Child,
    base: String,
}

impl Provider {
    fn start(accounts: &serde_json::Value, dir: &Path) -> Self {
        use std::io::BufRead;
        let file = dir.join("accounts.json");
        std::fs::write(&file, accounts.to_string()).unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/oidc_provider.py");
        let mut child = std::process::Command::new(quiver_e2e::examples_python())
            .arg(script)
            .arg(&file)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port: u16 = line.trim().parse().expect("the provider prints its port");
        Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    fn post(&self, path: &str, body: &serde_json::Value) -> serde_json::Value {
        let out = std::process::Command::new("curl")
            .args(["-sS", "-X", "POST", "-d"])
            .arg(body.to_string())
            .arg(format!("{}{path}", self.base))
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn mint(&self, ask: &serde_json::Value) -> String {
        self.post("/mint", ask)["token"]
            .as_str()
            .unwrap()
            .to_owned()
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn oidc_tokens_on_every_port_and_the_feast_sdk() {
    let repo_dir = example_repo();
    let repo = repo_dir.path();
    let provider = Provider::start(
        &serde_json::json!({
            "audience": "quiver",
            "client_id": "quiver",
            "clients": {"trainer": {"secret": "trainer-secret", "roles": ["reader"]},
                        "stranger": {"secret": "stranger-secret", "roles": []}},
            "users": {"alice": {"password": "alice-pw", "roles": ["reader"]}},
        }),
        repo,
    );
    set_server(
        repo,
        &format!(
            "  auth:\n    type: oidc\n    auth_discovery_url: {}/.well-known/openid-configuration\n    client_id: quiver\n    audience: quiver\n",
            provider.base
        ),
    );
    std::fs::write(
        repo.join("permissions.yaml"),
        "permissions:\n  - name: readers\n    actions: [read, describe]\n    policy: {roles: [reader]}\n",
    )
    .unwrap();
    quiver_ok(repo, &["apply"]);
    quiver_ok(repo, &["materialize-incremental", "now"]);
    write_entities(&repo.join("entities.parquet"));
    let server = Server::start(repo);

    let now = quiver_e2e::now_micros() / 1_000_000;
    let reader = serde_json::json!({"roles": ["reader"]});
    let cases = [
        ("no token", None, Code::Unauthenticated),
        (
            "malformed",
            Some("Bearer not.a.jwt".to_owned()),
            Code::Unauthenticated,
        ),
        (
            "bad signature",
            Some(provider.mint(&serde_json::json!({"roles": ["reader"], "stranger": true}))),
            Code::Unauthenticated,
        ),
        (
            "expired",
            Some(
                provider
                    .mint(&serde_json::json!({"roles": ["reader"], "claims": {"exp": now - 600}})),
            ),
            Code::Unauthenticated,
        ),
        (
            "wrong audience",
            Some(provider.mint(
                &serde_json::json!({"roles": ["reader"], "claims": {"aud": "someone-else"}}),
            )),
            Code::Unauthenticated,
        ),
        (
            "no role",
            Some(provider.mint(&serde_json::json!({}))),
            Code::PermissionDenied,
        ),
        ("permitted", Some(provider.mint(&reader)), Code::Ok),
    ];
    runtime().block_on(async {
        for (case, token, expected) in &cases {
            let header = token.as_ref().map(|t| {
                if t.starts_with("Bearer ") {
                    t.clone()
                } else {
                    format!("Bearer {t}")
                }
            });
            let header = header.as_deref();
            let code = |r: Result<(), tonic::Status>| r.err().map_or(Code::Ok, |s| s.code());
            let mut online = pb::online_service_client::OnlineServiceClient::new(server.channel());
            let got = code(
                online
                    .get_online_features(with_token(
                        read_request(vec![pb::Column {
                            name: "driver_id".into(),
                            values: vec![int64(1001)],
                        }]),
                        header,
                    ))
                    .await
                    .map(|_| ()),
            );
            assert_eq!(got, *expected, "gRPC, {case}");
            let mut feast = quiver_server::proto::feast::serving::serving_service_client::ServingServiceClient::new(server.channel());
            let got = code(
                feast
                    .get_online_features(with_token(
                        quiver_server::proto::feast::serving::GetOnlineFeaturesRequest {
                            kind: Some(quiver_server::proto::feast::serving::get_online_features_request::Kind::Features(
                                quiver_server::proto::feast::serving::FeatureList {
                                    val: vec!["driver_hourly_stats:conv_rate".into()],
                                },
                            )),
                            entities: [(
                                "driver_id".to_owned(),
                                quiver_server::proto::feast::types::RepeatedValue {
                                    val: vec![quiver_server::proto::feast::types::Value {
                                        val: Some(quiver_server::proto::feast::types::value::Val::Int64Val(1001)),
                                    }],
                                },
                            )]
                            .into(),
                            ..Default::default()
                        },
                        header,
                    ))
                    .await
                    .map(|_| ()),
            );
            assert_eq!(got, *expected, "Feast gRPC, {case}");
            let mut flight = flight_client(&server);
            if let Some(h) = header {
                flight.add_header("authorization", h).unwrap();
            }
            let got = code(do_get(&mut flight, "entities.parquet").await.map(|_| ()));
            assert_eq!(got, *expected, "Flight, {case}");
            let mut registry =
                pb::registry_service_client::RegistryServiceClient::new(server.channel());
            let listed = registry
                .list_objects(with_token(pb::ListObjectsRequest { kind: 0 }, header))
                .await;
            match expected {
                Code::Unauthenticated => {
                    assert_eq!(listed.unwrap_err().code(), Code::Unauthenticated, "registry, {case}");
                }
                // Listing shows only what the caller may describe.
                Code::PermissionDenied => assert!(listed.unwrap().into_inner().objects.is_empty()),
                _ => assert!(!listed.unwrap().into_inner().objects.is_empty()),
            }
            let mut curl = std::process::Command::new("curl");
            curl.args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-d"])
                .arg(r#"{"features": ["driver_hourly_stats:conv_rate"], "entities": {"driver_id": [1001]}}"#);
            if let Some(h) = header {
                curl.arg("-H").arg(format!("Authorization: {h}"));
            }
            let status = curl
                .arg(format!("{}/get-online-features", server.http))
                .output()
                .unwrap();
            let http = match expected {
                Code::Unauthenticated => "401",
                Code::PermissionDenied => "403",
                _ => "200",
            };
            assert_eq!(String::from_utf8_lossy(&status.stdout), http, "HTTP, {case}");
        }

        // The provider rotates its key: a token signed with the new one is accepted (the
        // server fetches the keys again).
        provider.post("/rotate", &serde_json::json!({}));
        let mut online = pb::online_service_client::OnlineServiceClient::new(server.channel());
        let fresh = format!("Bearer {}", provider.mint(&reader));
        online
            .get_online_features(with_token(
                read_request(vec![pb::Column {
                    name: "driver_id".into(),
                    values: vec![int64(1001)],
                }]),
                Some(&fresh),
            ))
            .await
            .unwrap();
    });

    // Feast's SDK gets its own tokens from the provider and reads through Quiver, online and
    // offline; a client without the role is refused.
    let (host, port) = server.flight_host_port();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/feast_oidc.py");
    let discovery = format!("{}/.well-known/openid-configuration", provider.base);
    let run = |client: &str, secret: &str, user: &[&str]| {
        let mut args: Vec<std::ffi::OsString> = vec![
            repo.as_os_str().to_owned(),
            server.http.clone().into(),
            host.into(),
            port.into(),
            discovery.clone().into(),
            client.into(),
            secret.into(),
        ];
        args.extend(user.iter().map(Into::into));
        quiver_e2e::python_json(&script, args)
    };
    let trainer = run("trainer", "trainer-secret", &[]);
    assert_eq!(
        trainer["online"]["avg_daily_trips"]
            .as_array()
            .map(Vec::len),
        Some(2),
        "{trainer}"
    );
    assert!(
        trainer["online"]["avg_daily_trips"][0].is_number(),
        "{trainer}"
    );
    assert_eq!(trainer["offline_rows"], 2, "{trainer}");
    let alice = run("quiver", "quiver-secret", &["alice", "alice-pw"]);
    assert_eq!(alice["offline_rows"], 2, "password grant: {alice}");
    let stranger = run("stranger", "stranger-secret", &[]);
    assert!(stranger.get("online").is_none(), "{stranger}");
    assert!(stranger.get("offline_rows").is_none(), "{stranger}");
    let errors = format!("{} {}", stranger["online_error"], stranger["offline_error"]);
    assert!(
        errors.contains("read_online") || errors.contains("403") || errors.contains("ermission"),
        "{stranger}"
    );
}

#[test]
fn the_secure_example_runs() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(quiver_e2e::examples_dir().join("secure.sh"))
        .arg(dir.path().join("repo"))
        .env("QUIVER_BIN", quiver_e2e::quiver_bin())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "read,  no token:   401",
        "read,  analyst:    200",
        "push,  analyst:    403",
        "push,  platform:   200",
        "denied: no permission grants write_online",
    ] {
        assert!(stdout.contains(line), "{line}: {stdout}");
    }
}
