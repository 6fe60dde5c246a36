//! Prometheus metrics of the server, exposed at `GET /metrics` on the HTTP port in the
//! OpenMetrics text format. Names follow Feast's where Feast has the same metric
//! (`feast_feature_server_request_total`, `…_request_latency_seconds`), so its dashboards
//! carry over. Every endpoint's counters are found when the server starts (a route table of
//! every HTTP path and gRPC method it serves, and `other`): recording a request is a lookup
//! in that immutable table and atomic increments, once per request, when its response has
//! been sent (or abandoned).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use prost::Message;

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
    status: Cow<'static, str>,
}

/// The labels of a request's latency.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    protocol: &'static str,
    endpoint: String,
}

/// How a request ended, as counted: a gRPC code or an HTTP status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Status {
    /// A gRPC status code (0 to 16).
    Grpc(u8),
    /// An HTTP status code.
    Http(u16),
}

impl Status {
    /// The status of a `grpc-status` value (`UNKNOWN` for one that is not a code).
    pub(crate) fn grpc(code: &[u8]) -> Self {
        let code = std::str::from_utf8(code)
            .ok()
            .and_then(|c| c.parse::<u8>().ok())
            .filter(|c| usize::from(*c) < GRPC_STATUS.len());
        Self::Grpc(code.unwrap_or(2))
    }

    /// The status label: gRPC's name, or the HTTP code.
    fn label(self) -> Cow<'static, str> {
        match self {
            Self::Grpc(c) => Cow::Borrowed(GRPC_STATUS[usize::from(c)]),
            Self::Http(c) => Cow::Owned(c.to_string()),
        }
    }

    /// Whether the request succeeded.
    fn succeeded(self) -> bool {
        matches!(self, Self::Grpc(0) | Self::Http(200 | 201 | 204))
    }

    /// Its slot in a route's counters.
    fn slot(self) -> usize {
        match self {
            Self::Grpc(c) => usize::from(c),
            Self::Http(c) => usize::from(c),
        }
    }
}

/// Counter slots of a route: every gRPC code, or HTTP codes below 600.
const HTTP_SLOTS: usize = 600;

/// One endpoint's request metrics: made when first used, then atomic increments.
struct Route {
    protocol: Protocol,
    endpoint: String,
    latency: OnceLock<Histogram>,
    /// A counter per status, by [`Status::slot`].
    statuses: Box<[OnceLock<Counter>]>,
}

impl Route {
    fn new(protocol: Protocol, endpoint: String) -> Self {
        let slots = match protocol {
            Protocol::Grpc => GRPC_STATUS.len(),
            Protocol::Http => HTTP_SLOTS,
        };
        Self {
            protocol,
            endpoint,
            latency: OnceLock::new(),
            statuses: (0..slots).map(|_| OnceLock::new()).collect(),
        }
    }
}

/// The paths of the HTTP endpoints; anything else is `other`.
const HTTP_PATHS: [&str; 7] = [
    "/get-online-features",
    "/push",
    "/write-to-online-store",
    "/materialize",
    "/materialize-incremental",
    "/health",
    "/metrics",
];

/// Methods of the Arrow Flight service (its descriptor is not part of arrow-flight's API).
const FLIGHT_METHODS: [&str; 10] = [
    "Handshake",
    "ListFlights",
    "GetFlightInfo",
    "PollFlightInfo",
    "GetSchema",
    "DoGet",
    "DoPut",
    "DoExchange",
    "DoAction",
    "ListActions",
];

/// Every gRPC method path the server serves: Quiver's and Feast's services, health,
/// reflection and Flight.
fn grpc_paths() -> Vec<String> {
    let mut paths = Vec::new();
    for set in [
        crate::proto::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
    ] {
        let Ok(set) = prost_types::FileDescriptorSet::decode(set) else {
            continue;
        };
        for file in &set.file {
            for service in &file.service {
                for method in &service.method {
                    paths.push(format!(
                        "/{}.{}/{}",
                        file.package(),
                        service.name(),
                        method.name()
                    ));
                }
            }
        }
    }
    paths.extend(
        FLIGHT_METHODS
            .iter()
            .map(|m| format!("/arrow.flight.protocol.FlightService/{m}")),
    );
    for version in ["v1", "v1alpha"] {
        paths.push(format!(
            "/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo"
        ));
    }
    paths
}

/// Where a request is counted: an index in the route table.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RouteId(usize);

/// The server's metrics; one per process, shared by every port.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<EndpointLabels, Histogram, fn() -> Histogram>,
    routes: Vec<Route>,
    /// Route of each known path, per protocol; unknown paths go to `other`.
    grpc: HashMap<String, usize>,
    http: HashMap<String, usize>,
    /// Whether requests are recorded (`server.metrics`).
    on: bool,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("routes", &self.routes.len())
            .field("on", &self.on)
            .finish_non_exhaustive()
    }
}

/// Latency buckets: 50 µs to about 13 s, doubling.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 19))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<EndpointLabels, Histogram, fn() -> Histogram>::new_with_constructor(
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
        let mut routes = Vec::new();
        let mut table = |protocol, paths: Vec<String>| -> HashMap<String, usize> {
            paths
                .into_iter()
                .chain(std::iter::once("other".to_owned()))
                .map(|path| {
                    routes.push(Route::new(protocol, path.clone()));
                    (path, routes.len() - 1)
                })
                .collect()
        };
        let grpc = table(Protocol::Grpc, grpc_paths());
        let http = table(
            Protocol::Http,
            HTTP_PATHS.iter().map(|p| (*p).to_owned()).collect(),
        );
        Self {
            registry,
            requests,
            latency,
            routes,
            grpc,
            http,
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

    /// Where a request to `path` is counted (`other` for a path the server does not serve,
    /// so a client cannot grow the label set).
    pub(crate) fn route(&self, protocol: Protocol, path: &str) -> RouteId {
        let table = match protocol {
            Protocol::Grpc => &self.grpc,
            Protocol::Http => &self.http,
        };
        RouteId(
            table
                .get(path)
                .or_else(|| table.get("other"))
                .copied()
                .unwrap_or(0),
        )
    }

    /// The endpoint label of a route.
    pub(crate) fn endpoint(&self, route: RouteId) -> &str {
        &self.routes[route.0].endpoint
    }

    /// Records a request counted at `route` that ended with `status` after `started`.
    pub(crate) fn record(&self, route: RouteId, status: Status, started: Instant) {
        if !self.on {
            return;
        }
        let mut r = &self.routes[route.0];
        // Methods of known services that are not implemented: one label for all of them.
        if status == Status::Grpc(12) {
            r = &self.routes[self.route(Protocol::Grpc, "other").0];
        }
        let protocol = match r.protocol {
            Protocol::Grpc => "grpc",
            Protocol::Http => "http",
        };
        let labels = || RequestLabels {
            protocol,
            endpoint: r.endpoint.clone(),
            status: status.label(),
        };
        match r.statuses.get(status.slot()) {
            Some(slot) => slot
                .get_or_init(|| self.requests.get_or_create(&labels()).clone())
                .inc(),
            None => self.requests.get_or_create(&labels()).inc(),
        };
        r.latency
            .get_or_init(|| {
                self.latency
                    .get_or_create(&EndpointLabels {
                        protocol,
                        endpoint: r.endpoint.clone(),
                    })
                    .clone()
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
    pub(crate) route: RouteId,
    pub(crate) request_id: RequestId,
    pub(crate) started: Instant,
    /// The status so far: the HTTP status, or gRPC's `grpc-status` from the headers, until
    /// trailers say otherwise.
    pub(crate) status: Status,
}

impl Drop for Outcome {
    fn drop(&mut self) {
        self.metrics.record(self.route, self.status, self.started);
        let request_id = self.request_id.as_str();
        let ms = self.started.elapsed().as_secs_f64() * 1e3;
        let path = self.metrics.endpoint(self.route);
        if self.status.succeeded() {
            tracing::debug!(target: "quiver::request", request_id, path, status = %self.status.label(), ms, "request");
        } else {
            tracing::info!(target: "quiver::request", request_id, path, status = %self.status.label(), ms, "request failed");
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_endpoint_and_status_with_bounded_labels() {
        let metrics = Metrics::default();
        let started = Instant::now();
        let read = metrics.route(Protocol::Http, "/get-online-features");
        metrics.record(read, Status::Http(200), started);
        let unknown = metrics.route(Protocol::Http, "/no/such/path");
        assert_eq!(metrics.endpoint(unknown), "other");
        metrics.record(unknown, Status::Http(404), started);
        let feast = metrics.route(
            Protocol::Grpc,
            "/feast.serving.ServingService/GetOnlineFeatures",
        );
        assert_eq!(
            metrics.endpoint(feast),
            "/feast.serving.ServingService/GetOnlineFeatures"
        );
        metrics.record(feast, Status::grpc(b"5"), started);
        for known in [
            "/quiver.v1.OnlineService/GetOnlineFeatures",
            "/arrow.flight.protocol.FlightService/DoGet",
            "/grpc.health.v1.Health/Check",
            "/feast.registry.RegistryServer/ListFeatureViews",
        ] {
            assert_eq!(
                metrics.endpoint(metrics.route(Protocol::Grpc, known)),
                known
            );
        }
        let made_up = metrics.route(Protocol::Grpc, "/a.B/C");
        assert_eq!(metrics.endpoint(made_up), "other");
        // A known method answered UNIMPLEMENTED counts as `other` too.
        metrics.record(feast, Status::grpc(b"12"), started);
        let text = metrics.encode();
        assert!(
            text.contains("feast_feature_server_request_total{protocol=\"http\",endpoint=\"/get-online-features\",status=\"200\"} 1"),
            "{text}"
        );
        assert!(text.contains("endpoint=\"other\",status=\"404\""), "{text}");
        assert!(text.contains("status=\"NOT_FOUND\""), "{text}");
        assert!(
            text.contains("protocol=\"grpc\",endpoint=\"other\",status=\"UNIMPLEMENTED\""),
            "{text}"
        );
        assert!(text.contains("feast_feature_server_request_latency_seconds_count{protocol=\"http\",endpoint=\"/get-online-features\"} 1"), "{text}");
        // Only endpoints that saw a request are exposed.
        assert!(!text.contains("DoGet"), "{text}");
        assert_eq!(Status::grpc(b"99"), Status::Grpc(2));
    }
}
