//! Online serving under load: `quiver serve` (gRPC and HTTP) against Feast's `feast serve`
//! (HTTP, SQLite online store) on the same data, in one run, on this machine.
//!
//! `cargo build --release --workspace --bin quiver --bin online-load-bench &&
//! $CARGO_TARGET_DIR/release/online-load-bench` (the server as it is deployed; the dev build
//! works too and is slower).
//!
//! Three views keyed by `driver_id` (`stats_a` with 50 features, `stats_b` and `stats_c` with
//! 10), `--keys` drivers. Cases: 1 entity × 50 features, 100 entities × 50 features, a feature
//! service over the 3 views, and the health check (the transport's own cost, a floor for the
//! others). For each target and case: a closed loop (`--connections` concurrent requests for
//! `--seconds`, the saturation throughput) and open loops at fixed rates (latency percentiles
//! with coordinated-omission correction: latency is measured from when a request was due, not
//! when it was sent; a pacing thread sleeps to each due instant; the "generator lag" column
//! says how late the generator itself was; "server CPU µs/req" is the server process's user +
//! system time over the requests it answered). The load generator runs on one thread (plus the
//! pacer) of the same 2-core machine. Feast comes from PyPI into a venv
//! (benches/python/venv.sh).
//!
//! "Reads during materialization": the server materializes a view of `--materialize-rows`
//! rows (through its `Materialize` RPC, as `quiver materialize` does when a server holds the
//! store) while an open loop reads 1 entity × 50 features over gRPC at `--during-rate`; the
//! same run measures the reads without a materialization and the materialization without
//! reads.
//!
//! `--redis-cluster`: the same again with the online store on a Redis Cluster the benchmark
//! starts on loopback (three masters, `--redis-replicas` replicas each): Quiver on RocksDB,
//! Quiver on the cluster, and Feast with its Redis online store on the same cluster (instead
//! of SQLite), each materializing the three views first (rows/s of each, wall time of the
//! whole command or of Feast's `materialize` call).

use quiver_benches::{
    Guard, Served, cpu_seconds, feature_column, feature_definitions, feature_fields, quiver_bin,
};
use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use arrow::array::{ArrayRef, Int64Array, RecordBatch, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use clap::Parser;
use hdrhistogram::Histogram;
use parquet::arrow::ArrowWriter;
use prost::Message;
use quiver_server::proto::quiver::v1 as pb;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tonic::codec::{DecodeBuf, EncodeBuf};
use tonic::codegen::http::uri::PathAndQuery;

/// The load generator shares the machine with the server: keep its allocations cheap too.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Online load benchmark.
#[derive(Parser)]
struct Args {
    /// Distinct drivers.
    #[arg(long, default_value_t = 20_000)]
    keys: i64,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Runs of every measurement; the table shows the median of each column.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Concurrent requests in the closed loop.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// HTTP/2 connections the gRPC load is spread over.
    #[arg(long, default_value_t = 1)]
    grpc_connections: usize,
    /// Open-loop rates for Quiver (requests/s) with 1 entity per request.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    rates: Vec<u64>,
    /// Open-loop rates for Quiver (requests/s) with 100 entities per request.
    #[arg(long, value_delimiter = ',', default_value = "100,1000")]
    batch_rates: Vec<u64>,
    /// Open-loop rate for Feast (requests/s).
    #[arg(long, default_value_t = 20)]
    feast_rate: u64,
    /// Skip Feast.
    #[arg(long)]
    no_feast: bool,
    /// Only run cases whose "server / case" contains this text (or one of several, `|`
    /// between them).
    #[arg(long, default_value = "")]
    only: String,
    /// Working folder.
    #[arg(long, default_value = "/var/tmp/quiver-load-bench")]
    dir: PathBuf,
    /// Source rows materialized in "reads during materialization" (0 skips the case).
    #[arg(long, default_value_t = 10_000_000)]
    materialize_rows: usize,
    /// Open-loop rate of the reads during materialization (requests/s).
    #[arg(long, default_value_t = 2000)]
    during_rate: u64,
    /// Also measure Quiver and Feast on a Redis Cluster started by the benchmark.
    #[arg(long)]
    redis_cluster: bool,
    /// Replicas of each of the cluster's three masters.
    #[arg(long, default_value_t = 0)]
    redis_replicas: usize,
    /// Also measure Quiver's gRPC with TLS, a bearer token and a permission to check.
    #[arg(long)]
    secure: bool,
    /// Also measure Quiver with metrics off (`server.metrics: false`), the cost of metrics.
    #[arg(long)]
    metrics_off: bool,
}

impl Args {
    /// Whether `--only` selects the case named `name`.
    fn selects(&self, name: &str) -> bool {
        self.only.split('|').any(|o| name.contains(o))
    }
}

/// How a client proves itself to a secured server.
#[derive(Clone)]
struct Credentials {
    /// PEM of the CA that signed the server's certificate.
    ca: Vec<u8>,
    /// `Bearer <token>`.
    authorization: tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
}

/// The view materialized while reads are measured: 20 features, ten rows per key.
const BIG: &str = "big";
const BIG_FEATURES: usize = 20;

fn write_big(path: &Path, rows: usize) -> Result<()> {
    let mut fields = vec![
        Field::new("driver_id", DataType::Int64, false),
        Field::new(
            "event_timestamp",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
    ];
    fields.extend(feature_fields("big_f", BIG_FEATURES));
    let schema = Arc::new(Schema::new(fields));
    let mut rng = StdRng::seed_from_u64(7);
    let keys = (rows / 10).max(1) as i64;
    let mut w = ArrowWriter::try_new(File::create(path)?, schema.clone(), None)?;
    let chunk = 1_000_000;
    for start in (0..rows).step_by(chunk) {
        let n = chunk.min(rows - start);
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from_iter_values(
                (0..n).map(|_| rng.random_range(0..keys)),
            )),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(
                    (0..n).map(|_| T0 + rng.random_range(0..30 * 86_400_000_000)),
                )
                .with_timezone("UTC"),
            ),
        ];
        columns.extend((0..BIG_FEATURES).map(|i| feature_column(i, n, 0.9, &mut rng)));
        w.write(&RecordBatch::try_new(schema.clone(), columns)?)?;
    }
    w.close()?;
    Ok(())
}

/// 2024-01-01T00:00:00Z in µs.
const T0: i64 = 1_704_067_200_000_000;

const VIEWS: [(&str, usize); 3] = [("stats_a", 50), ("stats_b", 10), ("stats_c", 10)];

fn write_view(path: &Path, name: &str, features: usize, keys: i64) -> Result<()> {
    let mut fields = vec![
        Field::new("driver_id", DataType::Int64, false),
        Field::new(
            "event_timestamp",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
    ];
    fields.extend(feature_fields(&format!("{name}_f"), features));
    let schema = Arc::new(Schema::new(fields));
    let mut rng = StdRng::seed_from_u64(features as u64);
    let n = usize::try_from(keys)?;
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(0..keys)),
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(
                (0..n).map(|_| T0 + rng.random_range(0..86_400_000_000)),
            )
            .with_timezone("UTC"),
        ),
    ];
    columns.extend((0..features).map(|i| feature_column(i, n, 1.0, &mut rng)));
    let mut w = ArrowWriter::try_new(File::create(path)?, schema.clone(), None)?;
    w.write(&RecordBatch::try_new(schema, columns)?)?;
    w.close()?;
    Ok(())
}

fn definitions(big: bool) -> String {
    let mut views: Vec<(&str, usize)> = VIEWS.to_vec();
    if big {
        views.push((BIG, BIG_FEATURES));
    }
    let mut d = String::from(
        "entities:\n  - name: driver\n    join_keys: [{name: driver_id, type: int64}]\nsources:\n",
    );
    for (v, _) in &views {
        d.push_str(&format!(
            "  - {{name: {v}, path: data/{v}.parquet, timestamp_field: event_timestamp}}\n"
        ));
    }
    d.push_str("feature_views:\n");
    for (v, n) in views {
        d.push_str(&format!(
            "  - name: {v}\n    entities: [driver]\n    source: {v}\n    features:\n"
        ));
        d.push_str(&feature_definitions(&format!("{v}_f"), n));
    }
    d.push_str("feature_services:\n  - name: three_views\n    features: [stats_a:*, stats_b:*, stats_c:*]\n");
    // The same service with every read logged (feature logging's cost on the serving path).
    d.push_str("  - name: three_views_logged\n    features: [stats_a:*, stats_b:*, stats_c:*]\n    logging: {sample_rate: 1.0, destination: feature_logs/three_views}\n");
    d
}

/// A benchmark case.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Case {
    /// 1 entity x the 50 features of `stats_a`, named one by one.
    Single,
    /// 100 entities x the 50 features of `stats_a`.
    Batch,
    /// 1 entity x the feature service over the 3 views (70 features).
    Service,
    /// The same service with every read written to its feature log.
    LoggedService,
    /// The health check: what the transport alone costs on this machine.
    Health,
}

const CASES: [Case; 5] = [
    Case::Single,
    Case::Batch,
    Case::Service,
    Case::LoggedService,
    Case::Health,
];

impl Case {
    fn name(self) -> &'static str {
        match self {
            Self::Single => "1 entity x 50 features",
            Self::Batch => "100 entities x 50 features",
            Self::Service => "3-view service, 1 entity",
            Self::LoggedService => "3-view service, every read logged",
            Self::Health => "health check (transport floor)",
        }
    }

    fn entities(self) -> usize {
        if self == Self::Batch { 100 } else { 1 }
    }
}

/// The requests of a case, built once; each call only fills in random driver ids, so the
/// load generator spends its time on the network, not on building requests.
struct Payload {
    case: Case,
    /// The encoded gRPC request without its entities. Protobuf messages concatenate, so an
    /// encoded `entities` field appended to it makes the whole request.
    grpc: Bytes,
    /// The HTTP body around the ids: `{..., "entities": {"driver_id": [` and `]}}`.
    http: (String, &'static str),
}

impl Payload {
    fn new(case: Case) -> Self {
        let refs: Vec<String> = (0..50).map(|i| format!("stats_a:stats_a_f{i}")).collect();
        let service = match case {
            Case::Service => Some("three_views"),
            Case::LoggedService => Some("three_views_logged"),
            _ => None,
        };
        let (features, spec) = if let Some(service) = service {
            (
                pb::get_online_features_request::Features::FeatureService(service.into()),
                serde_json::json!({"feature_service": service}),
            )
        } else {
            (
                pb::get_online_features_request::Features::FeatureRefs(pb::FeatureList {
                    refs: refs.clone(),
                }),
                serde_json::json!({"features": refs}),
            )
        };
        let spec = spec.to_string();
        let grpc = pb::GetOnlineFeaturesRequest {
            features: Some(features),
            entities: Vec::new(),
            full_feature_names: false,
        };
        Self {
            case,
            grpc: grpc.encode_to_vec().into(),
            http: (
                format!("{},\"entities\":{{\"driver_id\":[", &spec[..spec.len() - 1]),
                "]}}",
            ),
        }
    }

    fn grpc_request(&self, rng: &mut StdRng, keys: i64) -> Bytes {
        let entities = pb::GetOnlineFeaturesRequest {
            features: None,
            entities: vec![pb::Column {
                name: "driver_id".into(),
                values: (0..self.case.entities())
                    .map(|_| pb::Value {
                        kind: Some(pb::value::Kind::Int64Value(rng.random_range(0..keys))),
                    })
                    .collect(),
            }],
            full_feature_names: false,
        };
        let mut request = BytesMut::with_capacity(self.grpc.len() + entities.encoded_len());
        request.extend_from_slice(&self.grpc);
        entities.encode_raw(&mut request);
        request.freeze()
    }

    fn http_body(&self, rng: &mut StdRng, keys: i64) -> String {
        let mut body = self.http.0.clone();
        for i in 0..self.case.entities() {
            if i > 0 {
                body.push(',');
            }
            body.push_str(&rng.random_range(0..keys).to_string());
        }
        body.push_str(self.http.1);
        body
    }

    /// Checks one answer in full (run once per case, before measuring): every entity row
    /// answered, every feature there, values present.
    fn check(&self, target: &Target, answer: &[u8]) -> Result<()> {
        let features = if matches!(self.case, Case::Service | Case::LoggedService) {
            70
        } else {
            50
        };
        let rows = self.case.entities();
        match (target, self.case) {
            (_, Case::Health) => {}
            (Target::Grpc { .. }, _) => {
                let r = pb::GetOnlineFeaturesResponse::decode(answer)?;
                let present = r.features.iter().all(|f| {
                    f.values.len() == rows
                        && f.statuses
                            .iter()
                            .all(|s| *s == pb::FieldStatus::Present as i32)
                });
                if r.features.len() != features || r.row_count as usize != rows || !present {
                    bail!("unexpected gRPC answer for {}", self.case.name());
                }
            }
            (Target::Http { .. }, _) => {
                let r: serde_json::Value = serde_json::from_slice(answer)?;
                let results = r["results"].as_array().context("results")?;
                // Join-key column first, then the features.
                let present = results[1..].iter().all(|f| {
                    f["statuses"]
                        .as_array()
                        .is_some_and(|s| s.len() == rows && s.iter().all(|x| x == "PRESENT"))
                });
                if results.len() != features + 1 || !present {
                    bail!("unexpected HTTP answer for {}", self.case.name());
                }
            }
        }
        Ok(())
    }
}

/// gRPC messages as bytes: the load generator sends prebuilt requests and leaves answers
/// undecoded (as its HTTP client leaves JSON unparsed), so it takes little of the machine.
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = Self;
    type Decoder = Self;

    fn encoder(&mut self) -> Self {
        Self
    }

    fn decoder(&mut self) -> Self {
        Self
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put(item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, tonic::Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// A keep-alive HTTP/1.1 connection (enough for JSON POSTs with Content-Length answers).
struct HttpConn {
    stream: BufReader<TcpStream>,
    host: String,
}

impl HttpConn {
    async fn connect(host: &str) -> Result<Self> {
        let stream = TcpStream::connect(host).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream: BufReader::new(stream),
            host: host.to_owned(),
        })
    }

    /// Sends `method path` with a JSON `body` (none when empty); returns the answer's body.
    async fn send(&mut self, method: &str, path: &str, body: &str) -> Result<Vec<u8>> {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.host,
            body.len()
        );
        let s = self.stream.get_mut();
        s.write_all(head.as_bytes()).await?;
        s.write_all(body.as_bytes()).await?;
        let mut line = String::new();
        self.stream.read_line(&mut line).await?;
        let status: u16 = line.split_whitespace().nth(1).context("status")?.parse()?;
        let mut length = 0usize;
        loop {
            line.clear();
            self.stream.read_line(&mut line).await?;
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse()?;
            }
        }
        let mut body = vec![0; length];
        self.stream.read_exact(&mut body).await?;
        if status != 200 {
            bail!("HTTP {status}: {}", String::from_utf8_lossy(&body));
        }
        Ok(body)
    }
}

/// Where requests go.
#[derive(Clone)]
enum Target {
    /// gRPC over a few HTTP/2 connections, used in turn (as a fleet of clients would).
    Grpc {
        channels: Arc<[tonic::transport::Channel]>,
        next: Arc<AtomicUsize>,
        authorization: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    },
    Http {
        host: String,
        pool: Arc<Mutex<Vec<HttpConn>>>,
    },
}

impl Target {
    async fn grpc(
        address: &str,
        connections: usize,
        credentials: Option<&Credentials>,
    ) -> Result<Self> {
        let mut channels = Vec::with_capacity(connections);
        for _ in 0..connections.max(1) {
            let scheme = if credentials.is_some() {
                "https"
            } else {
                "http"
            };
            let mut endpoint =
                tonic::transport::Channel::from_shared(format!("{scheme}://{address}"))?
                    .tcp_nodelay(true);
            if let Some(c) = credentials {
                endpoint = endpoint.tls_config(
                    tonic::transport::ClientTlsConfig::new()
                        .ca_certificate(tonic::transport::Certificate::from_pem(&c.ca))
                        .domain_name("127.0.0.1"),
                )?;
            }
            channels.push(endpoint.connect().await?);
        }
        Ok(Self::Grpc {
            channels: channels.into(),
            next: Arc::new(AtomicUsize::new(0)),
            authorization: credentials.map(|c| c.authorization.clone()),
        })
    }

    fn http(host: &str) -> Self {
        Self::Http {
            host: host.to_owned(),
            pool: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// One request of `payload`'s case; returns the answer's undecoded body.
    async fn call(&self, payload: &Payload, rng: &mut StdRng, keys: i64) -> Result<Vec<u8>> {
        match self {
            Self::Grpc {
                channels,
                next,
                authorization,
            } => {
                let channel =
                    channels[next.fetch_add(1, Ordering::Relaxed) % channels.len()].clone();
                let (path, request) = if payload.case == Case::Health {
                    ("/grpc.health.v1.Health/Check", Bytes::new())
                } else {
                    (
                        "/quiver.v1.OnlineService/GetOnlineFeatures",
                        payload.grpc_request(rng, keys),
                    )
                };
                let mut grpc = tonic::client::Grpc::new(channel);
                grpc.ready().await?;
                let mut request = tonic::Request::new(request);
                if let Some(value) = authorization {
                    request
                        .metadata_mut()
                        .insert("authorization", value.clone());
                }
                let answer = grpc
                    .unary(request, PathAndQuery::from_static(path), RawCodec)
                    .await?;
                Ok(answer.into_inner().to_vec())
            }
            Self::Http { host, pool } => {
                let conn = pool.lock().ok().and_then(|mut p| p.pop());
                let mut conn = match conn {
                    Some(c) => c,
                    None => HttpConn::connect(host).await?,
                };
                let answer = if payload.case == Case::Health {
                    conn.send("GET", "/health", "").await?
                } else {
                    conn.send(
                        "POST",
                        "/get-online-features",
                        &payload.http_body(rng, keys),
                    )
                    .await?
                };
                if let Ok(mut p) = pool.lock() {
                    p.push(conn);
                }
                Ok(answer)
            }
        }
    }
}

struct Measured {
    requests: u64,
    errors: u64,
    seconds: f64,
    latency: Histogram<u64>,
    /// Open loop: how late the generator itself started each request (µs after it was due),
    /// part of `latency`; a large value means the machine, not the server, was busy.
    lag: Option<Histogram<u64>>,
    /// CPU seconds the server process used during the measurement, when it is known.
    server_cpu: Option<f64>,
}

impl Measured {
    fn p(&self, q: f64) -> f64 {
        self.latency.value_at_quantile(q) as f64 / 1000.0
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!()))
}

/// `connections` requests in flight at all times for `duration`.
async fn closed_loop(
    target: &Target,
    payload: &Arc<Payload>,
    keys: i64,
    connections: usize,
    duration: Duration,
) -> Measured {
    let start = Instant::now();
    let tasks: Vec<_> = (0..connections)
        .map(|c| {
            let (target, payload) = (target.clone(), Arc::clone(payload));
            tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(c as u64);
                let mut h = histogram();
                let mut errors = 0;
                while start.elapsed() < duration {
                    let t = Instant::now();
                    match target.call(&payload, &mut rng, keys).await {
                        Ok(_) => {
                            let _ = h.record(t.elapsed().as_micros() as u64);
                        }
                        Err(_) => errors += 1,
                    }
                }
                (h, errors)
            })
        })
        .collect();
    let mut latency = histogram();
    let mut errors = 0;
    for t in tasks {
        if let Ok((h, e)) = t.await {
            let _ = latency.add(h);
            errors += e;
        }
    }
    Measured {
        requests: latency.len(),
        errors,
        seconds: start.elapsed().as_secs_f64(),
        latency,
        lag: None,
        server_cpu: None,
    }
}

/// Requests sent at a fixed `rate`, each timed from when it was due (so a stalled server is
/// charged for the requests it delayed). Send times come from a pacing thread sleeping to
/// each due instant, not from the runtime's 1 ms timer wheel, whose rounding would otherwise be
/// counted as server latency.
async fn open_loop(
    target: &Target,
    payload: &Arc<Payload>,
    keys: i64,
    rate: u64,
    duration: Duration,
) -> Measured {
    let total = rate * duration.as_secs();
    let (due_tx, mut due_rx) = tokio::sync::mpsc::unbounded_channel::<(u64, Instant)>();
    let start = Instant::now();
    let pacer = std::thread::spawn(move || {
        for i in 0..total {
            let due = start + Duration::from_nanos(i * 1_000_000_000 / rate);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            if due_tx.send((i, due)).is_err() {
                break;
            }
        }
    });
    let latency = Arc::new(Mutex::new(histogram()));
    let lag = Arc::new(Mutex::new(histogram()));
    let errors = Arc::new(AtomicUsize::new(0));
    let mut inflight = VecDeque::new();
    while let Some((i, due)) = due_rx.recv().await {
        let (target, payload, latency, lag, errors) = (
            target.clone(),
            Arc::clone(payload),
            latency.clone(),
            lag.clone(),
            errors.clone(),
        );
        inflight.push_back(tokio::spawn(async move {
            if let Ok(mut h) = lag.lock() {
                let _ = h.record(due.elapsed().as_micros() as u64);
            }
            let mut rng = StdRng::seed_from_u64(i);
            match target.call(&payload, &mut rng, keys).await {
                Ok(_) => {
                    if let Ok(mut h) = latency.lock() {
                        let _ = h.record(due.elapsed().as_micros() as u64);
                    }
                }
                Err(_) => {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
        while inflight
            .front()
            .is_some_and(tokio::task::JoinHandle::is_finished)
        {
            inflight.pop_front();
        }
    }
    let _ = pacer.join();
    for t in inflight {
        let _ = t.await;
    }
    let snapshot =
        |h: &Mutex<Histogram<u64>>| h.lock().map(|h| h.clone()).unwrap_or_else(|_| histogram());
    let latency = snapshot(&latency);
    Measured {
        requests: latency.len(),
        errors: errors.load(Ordering::Relaxed) as u64,
        seconds: start.elapsed().as_secs_f64(),
        latency,
        lag: Some(snapshot(&lag)),
        server_cpu: None,
    }
}

fn run_ok(cmd: &mut Command, what: &str) -> Result<()> {
    let out = cmd.output()?;
    if !out.status.success() {
        bail!("{what} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// Starts `feast serve` on Feast's SQLite online store, or its Redis online store on the
/// cluster of `redis_nodes`; returns the guard, the HTTP host, and the rows Feast
/// materialized with the seconds it took.
fn start_feast(
    data: &Path,
    work: &Path,
    redis_nodes: Option<&str>,
) -> Result<(Guard, String, (u64, f64))> {
    use std::io::{BufRead, BufReader as StdBufReader};
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/venv.sh");
    let out = Command::new(&script).output()?;
    if !out.status.success() {
        bail!(
            "{} failed: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let venv = PathBuf::from(String::from_utf8(out.stdout)?.trim());
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let _ = std::fs::remove_dir_all(work);
    let mut child = Command::new(venv.join("bin/python"))
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("python/feast_serve.py"))
        .arg(data)
        .arg(work)
        .arg(port.to_string())
        .args(redis_nodes)
        .env(
            "PATH",
            format!(
                "{}:{}",
                venv.join("bin").display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .stdout(Stdio::piped())
        .process_group(0)
        .spawn()?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut lines = StdBufReader::new(stdout).lines();
    let mut materialized = (0, 0.0);
    for line in lines.by_ref() {
        let line = line?;
        if let Some(m) = line.strip_prefix("materialized ")
            && let Some((rows, seconds)) = m.split_once(' ')
        {
            materialized = (rows.parse()?, seconds.parse()?);
        }
        if line.starts_with("ready") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    let guard = Guard(child);
    let host = format!("127.0.0.1:{port}");
    let started = Instant::now();
    while std::net::TcpStream::connect(&host).is_err() {
        if started.elapsed() > Duration::from_secs(120) {
            bail!("feast serve did not start");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok((guard, host, materialized))
}

/// Prints one table row: the median over the runs of each column (errors are summed).
fn row(target: &str, case: Case, mode: &str, runs: &[Measured]) {
    let median = |f: &dyn Fn(&Measured) -> f64| {
        let mut v: Vec<f64> = runs.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let lag = if runs.iter().all(|m| m.lag.is_some()) {
        format!(
            "{:.3}",
            median(&|m| m
                .lag
                .as_ref()
                .map_or(0.0, |h| h.value_at_quantile(0.99) as f64 / 1000.0))
        )
    } else {
        "-".into()
    };
    let cpu = if runs.iter().all(|m| m.server_cpu.is_some()) {
        format!(
            "{:.1}",
            median(&|m| m.server_cpu.unwrap_or(0.0) * 1e6 / m.requests.max(1) as f64)
        )
    } else {
        "-".into()
    };
    println!(
        "| {target} | {} | {mode} | {:.0} | {:.3} | {:.3} | {:.3} | {cpu} | {lag} | {} |",
        case.name(),
        median(&|m| m.requests as f64 / m.seconds),
        median(&|m| m.p(0.5)),
        median(&|m| m.p(0.99)),
        median(&|m| m.p(0.999)),
        runs.iter().map(|m| m.errors).sum::<u64>()
    );
}

/// Runs every selected case against `target`: a check of one answer, a warm-up, then
/// `--runs` times the closed loop and the open loop at each of `rates(case)`. With the
/// `server`'s process id, each measurement also reports the server's CPU time per request
/// (user + system, all threads): the server's cost apart from how fast the load generator,
/// which shares the machine, could send.
async fn measure(
    name: &str,
    target: &Target,
    server: Option<u32>,
    args: &Args,
    rates: impl Fn(Case) -> Vec<u64>,
) -> Result<()> {
    let timed = |measurement: Measured, before: Option<f64>| Measured {
        server_cpu: before.zip(server.and_then(cpu_seconds)).map(|(b, a)| a - b),
        ..measurement
    };
    let duration = Duration::from_secs(args.seconds);
    for case in CASES {
        // Feature logging is Quiver's own (Feast's server logs through its Go path only).
        if !args.selects(&format!("{name} / {}", case.name()))
            || (case == Case::LoggedService && name.starts_with("Feast"))
        {
            continue;
        }
        let payload = Arc::new(Payload::new(case));
        let answer = target
            .call(&payload, &mut StdRng::seed_from_u64(0), args.keys)
            .await?;
        payload.check(target, &answer)?;
        closed_loop(target, &payload, args.keys, 4, Duration::from_secs(1)).await;
        let rates = rates(case);
        let mut closed = Vec::new();
        let mut open: Vec<Vec<Measured>> = rates.iter().map(|_| Vec::new()).collect();
        for _ in 0..args.runs.max(1) {
            let before = server.and_then(cpu_seconds);
            let measured =
                closed_loop(target, &payload, args.keys, args.connections, duration).await;
            closed.push(timed(measured, before));
            for (rate, runs) in rates.iter().zip(&mut open) {
                let before = server.and_then(cpu_seconds);
                let measured = open_loop(target, &payload, args.keys, *rate, duration).await;
                runs.push(timed(measured, before));
            }
        }
        row(
            name,
            case,
            &format!("closed, {} in flight", args.connections),
            &closed,
        );
        for (rate, runs) in rates.iter().zip(&open) {
            row(name, case, &format!("open, {rate}/s"), runs);
        }
    }
    Ok(())
}

/// Materializes the big view through the server; returns its source rows per second.
async fn materialize_big(grpc: &str) -> Result<f64> {
    let channel = tonic::transport::Channel::from_shared(format!("http://{grpc}"))?
        .connect()
        .await?;
    let mut client = pb::materialization_service_client::MaterializationServiceClient::new(channel);
    let started = Instant::now();
    let mut stream = client
        .materialize(pb::MaterializeRequest {
            views: vec![BIG.into()],
            start_nanos: i64::MIN,
            end_nanos: i64::MAX,
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut rows = 0;
    while let Some(event) = stream.message().await? {
        if let Some(pb::materialize_event::Event::ViewDone(r)) = event.event {
            rows = r.rows_scanned;
        }
    }
    Ok(rows as f64 / started.elapsed().as_secs_f64())
}

/// Waits (up to two minutes) until the store has no flush or compaction running or pending,
/// so the next phase is measured on a quiet machine.
async fn settle(grpc: &str) -> Result<()> {
    let channel = tonic::transport::Channel::from_shared(format!("http://{grpc}"))?
        .connect()
        .await?;
    let mut client = pb::online_store_service_client::OnlineStoreServiceClient::new(channel);
    let started = Instant::now();
    loop {
        let stats = client.get_stats(pb::GetStatsRequest {}).await?.into_inner();
        if stats.running_compactions == 0 && stats.pending_compaction_bytes == 0 {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(120) {
            eprintln!("the store did not settle in 2 minutes: {stats:?}");
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// "Reads during materialization": for each run, reads alone, the materialization alone,
/// then both at once, each on a settled store; prints the median of each.
async fn reads_during_materialization(args: &Args, grpc: &str) -> Result<()> {
    let target = Target::grpc(grpc, args.grpc_connections, None).await?;
    let payload = Arc::new(Payload::new(Case::Single));
    let duration = Duration::from_secs(args.seconds);
    closed_loop(&target, &payload, args.keys, 4, Duration::from_secs(1)).await;
    let (mut idle, mut during) = (Vec::new(), Vec::new());
    let (mut alone, mut loaded) = (Vec::new(), Vec::new());
    for _ in 0..args.runs.max(1) {
        settle(grpc).await?;
        idle.push(open_loop(&target, &payload, args.keys, args.during_rate, duration).await);
        settle(grpc).await?;
        alone.push(materialize_big(grpc).await?);
        settle(grpc).await?;
        let grpc = grpc.to_owned();
        let run = tokio::spawn(async move { materialize_big(&grpc).await });
        // Reads until the materialization ends, at least one measurement long.
        let mut reads = open_loop(&target, &payload, args.keys, args.during_rate, duration).await;
        while !run.is_finished() {
            let more = open_loop(
                &target,
                &payload,
                args.keys,
                args.during_rate,
                Duration::from_secs(1),
            )
            .await;
            reads.requests += more.requests;
            reads.errors += more.errors;
            reads.seconds += more.seconds;
            let _ = reads.latency.add(&more.latency);
        }
        loaded.push(run.await??);
        during.push(reads);
    }
    let rate = args.during_rate;
    row(
        "Quiver gRPC",
        Case::Single,
        &format!("open, {rate}/s, idle"),
        &idle,
    );
    row(
        "Quiver gRPC",
        Case::Single,
        &format!("open, {rate}/s, during materialization"),
        &during,
    );
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!();
    println!(
        "| materialization of {} rows | rows/s (median of {}) |",
        args.materialize_rows, args.runs
    );
    println!("|---|---|");
    println!("| alone | {:.0} |", median(&mut alone));
    println!(
        "| while serving {rate} reads/s | {:.0} |",
        median(&mut loaded)
    );
    println!();
    Ok(())
}

/// Registers the definitions of `repo` afresh and materializes the three views with the
/// `quiver` command; returns the rows written and the command's wall time in seconds.
fn apply_and_materialize(repo: &Path) -> Result<(u64, f64)> {
    let _ = std::fs::remove_dir_all(repo.join("online_store"));
    let _ = std::fs::remove_dir_all(repo.join("registry"));
    let bin = quiver_bin()?;
    run_ok(
        Command::new(&bin).arg("--repo").arg(repo).arg("apply"),
        "quiver apply",
    )?;
    let started = Instant::now();
    let out = Command::new(&bin)
        .arg("--repo")
        .arg(repo)
        .args([
            "--json",
            "materialize",
            "2000-01-01",
            "now",
            "--views",
            "stats_a,stats_b,stats_c",
        ])
        .output()?;
    let seconds = started.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!(
            "quiver materialize failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let rows = report["views"]
        .as_array()
        .context("materialization report")?
        .iter()
        .filter_map(|v| v["rows_written"].as_u64())
        .sum();
    Ok((rows, seconds))
}

fn new_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// Serves `repo` and measures Quiver's gRPC and HTTP targets under the names `grpc_name` and
/// `http_name`, then (on RocksDB) reads during materialization.
fn measure_quiver(args: &Args, repo: &Path, names: [&str; 2], big: bool) -> Result<()> {
    let Served {
        guard, grpc, http, ..
    } = Served::start(repo)?;
    let server = Some(guard.0.id());
    // Dropped before the server: its connections close, so the server can drain and exit.
    let runtime = new_runtime()?;
    runtime.block_on(async {
        let targets = [
            (
                names[0],
                Target::grpc(&grpc, args.grpc_connections, None).await?,
            ),
            (names[1], Target::http(&http)),
        ];
        for (name, target) in &targets {
            measure(name, target, server, args, |case| {
                if case == Case::Batch {
                    args.batch_rates.clone()
                } else {
                    args.rates.clone()
                }
            })
            .await?;
        }
        if big && args.selects("Quiver gRPC / reads during materialization") {
            reads_during_materialization(args, &grpc).await?;
        }
        anyhow::Ok(())
    })
}

/// The same repository served with TLS, token authentication and a permission every read
/// is checked against; measured over gRPC.
fn measure_secure(args: &Args, repo: &Path) -> Result<()> {
    let tls = args.dir.join("tls");
    std::fs::create_dir_all(&tls)?;
    let certs = quiver_testkit::Certificates::generate(&tls);
    let out = Command::new(quiver_bin()?)
        .arg("--repo")
        .arg(repo)
        .args([
            "--json",
            "token",
            "create",
            "--principal",
            "bench",
            "--roles",
            "reader",
        ])
        .output()?;
    let created: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    std::fs::write(
        tls.join("tokens.json"),
        serde_json::json!({"tokens": [created["entry"]]}).to_string(),
    )?;
    let config = std::fs::read_to_string(repo.join("quiver.yaml"))?;
    std::fs::write(
        repo.join("quiver.yaml"),
        format!(
            "{config}server:\n  tls: {{cert_file: {}, key_file: {}}}\n  auth: {{type: token, tokens_file: {}}}\n",
            certs.cert.display(),
            certs.key.display(),
            tls.join("tokens.json").display()
        ),
    )?;
    std::fs::write(
        repo.join("permissions.yaml"),
        "permissions:\n  - name: readers\n    types: [feature_view, feature_service]\n    actions: [read]\n    policy: {roles: [reader]}\n",
    )?;
    let applied = Command::new(quiver_bin()?)
        .arg("--repo")
        .arg(repo)
        .arg("apply")
        .status()?;
    anyhow::ensure!(applied.success(), "apply with the permission failed");
    let credentials = Credentials {
        ca: std::fs::read(&certs.ca)?,
        authorization: format!("Bearer {}", created["token"].as_str().context("token")?).parse()?,
    };
    let result = (|| {
        let Served { guard, grpc, .. } = Served::start(repo)?;
        new_runtime()?.block_on(async {
            let target = Target::grpc(&grpc, args.grpc_connections, Some(&credentials)).await?;
            measure(
                "Quiver gRPC, TLS + token + permission",
                &target,
                Some(guard.0.id()),
                args,
                |case| {
                    if case == Case::Batch {
                        args.batch_rates.clone()
                    } else {
                        args.rates.clone()
                    }
                },
            )
            .await
        })
    })();
    std::fs::write(repo.join("quiver.yaml"), config)?;
    std::fs::remove_file(repo.join("permissions.yaml"))?;
    result
}

fn main() -> Result<()> {
    let args = Args::parse();
    // Data files are kept between runs, so each key count has its own repository.
    let repo = args.dir.join(format!("quiver-{}-keys", args.keys));
    let data = repo.join("data");
    std::fs::create_dir_all(&data)?;
    for (v, n) in VIEWS {
        let path = data.join(format!("{v}.parquet"));
        if !path.exists() {
            write_view(&path, v, n, args.keys)?;
        }
    }
    let big = args.materialize_rows > 0;
    let big_path = data.join(format!("{BIG}-{}.parquet", args.materialize_rows));
    if big && !big_path.exists() {
        write_big(&big_path, args.materialize_rows)?;
    }
    let _ = std::fs::remove_file(data.join(format!("{BIG}.parquet")));
    if big {
        std::fs::hard_link(&big_path, data.join(format!("{BIG}.parquet")))?;
    }
    std::fs::write(repo.join("quiver.yaml"), "project: bench\n")?;
    // Left by an interrupted --secure run.
    let _ = std::fs::remove_file(repo.join("permissions.yaml"));
    std::fs::write(repo.join("definitions.yaml"), definitions(big))?;
    let mut materialized = vec![("Quiver, RocksDB", apply_and_materialize(&repo)?)];

    println!(
        "| server | case | load | req/s | p50 ms | p99 ms | p99.9 ms | server CPU µs/req | generator lag p99 ms | errors |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    measure_quiver(&args, &repo, ["Quiver gRPC", "Quiver HTTP"], big)?;
    if args.metrics_off {
        std::fs::write(
            repo.join("quiver.yaml"),
            "project: bench\nserver:\n  metrics: false\n",
        )?;
        let names = ["Quiver gRPC, metrics off", "Quiver HTTP, metrics off"];
        measure_quiver(&args, &repo, names, false)?;
        std::fs::write(repo.join("quiver.yaml"), "project: bench\n")?;
    }

    let cluster = args
        .redis_cluster
        .then(|| quiver_testkit::redis::RedisCluster::start(3, args.redis_replicas));
    let nodes = cluster.as_ref().map(|c| c.seeds().join(","));
    if let Some(nodes) = &nodes {
        // The same repository, its online store on the cluster.
        std::fs::write(
            repo.join("quiver.yaml"),
            format!("project: bench\nonline_store:\n  type: redis\n  nodes: [{nodes}]\n"),
        )?;
        std::fs::write(repo.join("definitions.yaml"), definitions(false))?;
        materialized.push(("Quiver, Redis Cluster", apply_and_materialize(&repo)?));
        measure_quiver(
            &args,
            &repo,
            ["Quiver gRPC, Redis Cluster", "Quiver HTTP, Redis Cluster"],
            false,
        )?;
    }
    if args.secure {
        measure_secure(&args, &repo)?;
    }
    if !args.no_feast {
        let (_guard, host, rows) = start_feast(&data, &args.dir.join("feast"), nodes.as_deref())?;
        let (name, store) = match nodes {
            Some(_) => ("Feast HTTP, Redis Cluster", "Feast, Redis Cluster"),
            None => ("Feast HTTP", "Feast, SQLite"),
        };
        materialized.push((store, rows));
        // `feast serve` answers in gunicorn workers it forks, so its own CPU time is not shown.
        new_runtime()?.block_on(measure(name, &Target::http(&host), None, &args, |_| {
            vec![args.feast_rate]
        }))?;
    }
    println!();
    println!("| materialization of the three views | rows | seconds | rows/s |");
    println!("|---|---:|---:|---:|");
    for (name, (rows, seconds)) in materialized {
        println!(
            "| {name} | {rows} | {seconds:.2} | {:.0} |",
            rows as f64 / seconds
        );
    }
    Ok(())
}
