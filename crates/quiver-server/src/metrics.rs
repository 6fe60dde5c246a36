//! Prometheus metrics of the server, exposed at `GET /metrics` on the HTTP port in the
//! OpenMetrics text format. Names follow Feast's where Feast has the same metric
//! (`feast_feature_server_request_total`, `…_request_latency_seconds`), so its dashboards
//! carry over. Recording is a hash lookup and atomic increments, once per request, when its
//! response has been sent (or abandoned).

use std::sync::Arc;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::exponential_buckets;
use prometheus_client::registry::Registry;
use quiver_ops::metrics::Histogram;

use crate::gate::{Protocol, RequestId};

/// The labels of a finished request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    protocol: &'static str,
    endpoint: String,
    status: String,
}

/// The labels of a request's latency.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    protocol: &'static str,
    endpoint: String,
}

/// The server's metrics; one per process, shared by every port.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<EndpointLabels, Histogram>,
    /// Whether requests are recorded (`server.metrics`).
    on: bool,
}

/// Latency buckets: 50 µs to about 13 s, doubling.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 19))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<EndpointLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "feast_feature_server_request",
            "Requests by protocol, endpoint and status",
            requests.clone(),
        );
        registry.register(
            "feast_feature_server_request_latency_seconds",
            "Time from a request's arrival until its response was sent, in seconds",
            latency.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            on: true,
        }
    }
}

impl Metrics {
    /// The request metrics, and those of `store`'s operations.
    pub fn new(store: &Arc<quiver_ops::FeatureStore>) -> Self {
        let mut metrics = Self::default();
        store.register_metrics(&mut metrics.registry);
        metrics
    }

    /// Metrics turned off: nothing recorded.
    pub fn off() -> Self {
        Self {
            on: false,
            ..Self::default()
        }
    }

    /// Records a request to `endpoint` that ended with `status` after `started`.
    pub(crate) fn record(
        &self,
        protocol: Protocol,
        endpoint: &str,
        status: &str,
        started: Instant,
    ) {
        if !self.on {
            return;
        }
        let protocol = match protocol {
            Protocol::Grpc => "grpc",
            Protocol::Http => "http",
        };
        self.requests
            .get_or_create(&RequestLabels {
                protocol,
                endpoint: endpoint.to_owned(),
                status: status.to_owned(),
            })
            .inc();
        self.latency
            .get_or_create(&EndpointLabels {
                protocol,
                endpoint: endpoint.to_owned(),
            })
            .observe(started.elapsed().as_secs_f64());
    }

    /// Every metric in the OpenMetrics text format (reads the store's figures: call from a
    /// thread that may block).
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// `GET /metrics`: every metric, in the OpenMetrics text format.
pub(crate) fn metrics_router(metrics: Arc<Metrics>) -> axum::Router {
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let metrics = Arc::clone(&metrics);
            async move {
                let text = tokio::task::spawn_blocking(move || metrics.encode())
                    .await
                    .unwrap_or_default();
                (
                    [(
                        http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    text,
                )
            }
        }),
    )
}

/// What the gate records of one request once its response is done: kept in the response
/// body, recorded (and logged: failures at `info`, the rest at `debug`) when the body is
/// dropped.
pub(crate) struct Outcome {
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) protocol: Protocol,
    pub(crate) endpoint: String,
    pub(crate) request_id: RequestId,
    pub(crate) started: Instant,
    /// The status so far: the HTTP status, or gRPC's `grpc-status` from the headers, until
    /// trailers say otherwise.
    pub(crate) status: String,
}

impl Drop for Outcome {
    fn drop(&mut self) {
        // Unknown gRPC methods are answered UNIMPLEMENTED: one label for all of them.
        let endpoint = match (self.protocol, self.status.as_str()) {
            (Protocol::Grpc, "UNIMPLEMENTED") => "other",
            _ => &self.endpoint,
        };
        self.metrics
            .record(self.protocol, endpoint, &self.status, self.started);
        let failed = !matches!(self.status.as_str(), "OK" | "200" | "201" | "204");
        let (request_id, status) = (self.request_id.as_str(), self.status.as_str());
        let ms = self.started.elapsed().as_secs_f64() * 1e3;
        let path = self.endpoint.as_str();
        if failed {
            tracing::info!(target: "quiver::request", request_id, path, status, ms, "request failed");
        } else {
            tracing::debug!(target: "quiver::request", request_id, path, status, ms, "request");
        }
    }
}

/// The endpoint label of a request path: the path of a known route, or `other` (so a client
/// cannot grow the label set with made-up paths).
pub(crate) fn endpoint(protocol: Protocol, path: &str) -> String {
    let known = match protocol {
        // gRPC paths are `/<package.Service>/<Method>`; unknown ones are answered
        // UNIMPLEMENTED and relabelled by the gate.
        Protocol::Grpc => path.len() <= 128 && path.matches('/').count() == 2,
        Protocol::Http => matches!(
            path,
            "/get-online-features"
                | "/push"
                | "/write-to-online-store"
                | "/materialize"
                | "/materialize-incremental"
                | "/health"
                | "/metrics"
        ),
    };
    if known {
        path.to_owned()
    } else {
        "other".to_owned()
    }
}

/// gRPC's status names, by code.
const GRPC_STATUS: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// The name of a `grpc-status` value (`UNKNOWN` for one that is not a code).
pub(crate) fn grpc_status_name(code: &[u8]) -> &'static str {
    std::str::from_utf8(code)
        .ok()
        .and_then(|c| c.parse::<usize>().ok())
        .and_then(|c| GRPC_STATUS.get(c).copied())
        .unwrap_or("UNKNOWN")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_endpoint_and_status_with_bounded_labels() {
        let metrics = Metrics::default();
        let started = Instant::now();
        let path = endpoint(Protocol::Http, "/get-online-features");
        metrics.record(Protocol::Http, &path, "200", started);
        metrics.record(
            Protocol::Http,
            &endpoint(Protocol::Http, "/no/such/path"),
            "404",
            started,
        );
        metrics.record(
            Protocol::Grpc,
            "/feast.serving.ServingService/GetOnlineFeatures",
            grpc_status_name(b"5"),
            started,
        );
        let text = metrics.encode();
        assert!(
            text.contains("feast_feature_server_request_total{protocol=\"http\",endpoint=\"/get-online-features\",status=\"200\"} 1"),
            "{text}"
        );
        assert!(text.contains("endpoint=\"other\",status=\"404\""), "{text}");
        assert!(text.contains("status=\"NOT_FOUND\""), "{text}");
        assert!(text.contains("feast_feature_server_request_latency_seconds_count{protocol=\"http\",endpoint=\"/get-online-features\"} 1"), "{text}");
        assert_eq!(grpc_status_name(b"99"), "UNKNOWN");
    }
}
