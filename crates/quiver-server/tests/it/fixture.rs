//! A repository with one online view `stats` (driver key, `rate` feature, a folder source)
//! and one view on a single-file source, served in-process on free ports.

use std::sync::Arc;

use arrow::array::{Float64Array, Int64Array, RecordBatch, TimestampNanosecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use quiver_ops::{ApplyRequest, BaseVersion, FeatureStore, StoreOptions};
use quiver_registry::{RepoConfig, load_definitions};
use quiver_server::{BoundAddresses, ServeOptions, serve};
use quiver_source::Sources;
use tempfile::TempDir;

const DEFINITIONS: &str = "entities:\n  - name: driver\n    join_keys: [{name: driver_id, type: int64}]\nsources:\n  - name: stats\n    path: data/stats\n    timestamp_field: event_timestamp\n  - name: single\n    path: data/single.parquet\n    timestamp_field: event_timestamp\nfeature_views:\n  - name: stats\n    entities: [driver]\n    source: stats\n    features:\n      - {name: rate, type: float64}\n  - name: single\n    entities: [driver]\n    source: single\n    features:\n      - {name: rate, type: float64}\n";

pub struct TestServer {
    pub runtime: tokio::runtime::Runtime,
    pub addresses: BoundAddresses,
    pub dir: TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<quiver_server::Result<()>>>,
}

fn write_rows(path: &std::path::Path, rows: &[(i64, f64)]) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("driver_id", DataType::Int64, false),
        Field::new(
            "event_timestamp",
            DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
            false,
        ),
        Field::new("rate", DataType::Float64, true),
    ]));
    let now = quiver_core::now_nanos() - 60_000_000_000;
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(TimestampNanosecondArray::from(vec![now; rows.len()]).with_timezone("UTC")),
            Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.1))),
        ],
    )
    .unwrap();
    let mut w =
        parquet::arrow::ArrowWriter::try_new(std::fs::File::create(path).unwrap(), schema, None)
            .unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

impl TestServer {
    pub fn start() -> Self {
        let dir = TempDir::new().unwrap();
        let root = dir.path();
        std::fs::write(root.join("quiver.yaml"), "project: p\n").unwrap();
        std::fs::write(root.join("defs.yaml"), DEFINITIONS).unwrap();
        std::fs::create_dir_all(root.join("data/stats")).unwrap();
        let rows: Vec<(i64, f64)> = (1..=100).map(|d| (d, d as f64 / 10.0)).collect();
        write_rows(&root.join("data/stats/part-0.parquet"), &rows);
        write_rows(&root.join("data/single.parquet"), &rows);
        let config = RepoConfig::load(root).unwrap();
        let definitions = load_definitions(root, &config, &Sources::new(root)).unwrap();
        let store = Arc::new(FeatureStore::open(root, StoreOptions::default()).unwrap());
        store
            .apply(
                &quiver_ops::Caller::Trusted,
                ApplyRequest {
                    definitions,
                    based_on: BaseVersion::Latest,
                    author: "test".into(),
                },
            )
            .unwrap();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (bound_tx, bound_rx) = std::sync::mpsc::channel();
        let options = ServeOptions {
            grpc_port: 0,
            flight_port: 0,
            http_port: 0,
            schedule: false,
            ..ServeOptions::default()
        };
        let handle = runtime.spawn(serve(
            store,
            options,
            move |bound| {
                let _ = bound_tx.send(bound);
            },
            async {
                let _ = stopped.await;
            },
        ));
        let addresses = bound_rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("the server binds its ports");
        Self {
            runtime,
            addresses,
            dir,
            stop: Some(stop),
            handle: Some(handle),
        }
    }

    pub fn channel(&self) -> tonic::transport::Channel {
        tonic::transport::Channel::from_shared(format!("http://{}", self.addresses.grpc))
            .unwrap()
            .connect_lazy()
    }

    pub fn flight(&self) -> arrow_flight::FlightClient {
        let channel =
            tonic::transport::Channel::from_shared(format!("http://{}", self.addresses.flight))
                .unwrap()
                .connect_lazy();
        arrow_flight::FlightClient::new(channel)
    }

    /// Sends `body` over HTTP/1.1; returns the status and body.
    pub fn http(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        use std::io::{Read, Write};
        let host = self.addresses.http.to_string();
        let mut stream = std::net::TcpStream::connect(&host).unwrap();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let status = response
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (status, body)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(handle) = self.handle.take() {
            let _ = self.runtime.block_on(handle);
        }
    }
}
