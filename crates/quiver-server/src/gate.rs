//! The layer every request of every port passes first: it counts the request in flight on
//! its connection (see `connection`) for as long as its response is being sent, and
//! authenticates it, answering a request without valid credentials itself (gRPC
//! `UNAUTHENTICATED`, HTTP 401). The [`Caller`] goes into the request's extensions:
//! [`Caller::Trusted`] without authentication, else the verified principal. Every request
//! gets a [`RequestId`] (the client's `x-request-id` when it sent a usable one), answered in
//! the `x-request-id` header of every response, errors included, and named in its log line.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use quiver_ops::{AuditLog, Authenticator, Caller};
use tower::{Layer, Service};

use crate::connection::{ConnectionInfo, InFlight};
use crate::error::http_status;
use crate::jwks::KeyFetcher;
use crate::metrics::{Metrics, Outcome, Status};

/// Which protocol a port speaks, for answering refused requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// gRPC (and Arrow Flight).
    Grpc,
    /// HTTP/JSON.
    Http,
}

/// The id of one request: the client's `x-request-id` when it is 1 to 64 characters of
/// `[A-Za-z0-9._-]`, else one made here (unique within the process, random across them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(Arc<str>);

/// The header a request id travels in, both ways.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

impl RequestId {
    fn of<B>(request: &http::Request<B>) -> Self {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        static PROCESS: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
        let sent = request
            .headers()
            .get(REQUEST_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|v| {
                (1..=64).contains(&v.len())
                    && v.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            });
        match sent {
            Some(id) => Self(id.into()),
            None => {
                let process = PROCESS.get_or_init(|| {
                    use std::hash::BuildHasher;
                    // Random per process: the standard library's hash keys.
                    std::collections::hash_map::RandomState::new().hash_one(std::process::id())
                        as u32
                });
                let n = NEXT.fetch_add(1, Ordering::Relaxed);
                Self(format!("{process:08x}-{n:x}").into())
            }
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The request layer of one port.
#[derive(Clone)]
pub struct Gate {
    auth: Arc<Authenticator>,
    /// Fetches the OIDC provider's keys when a token names one we do not have.
    keys: Option<Arc<KeyFetcher>>,
    audit: Arc<AuditLog>,
    metrics: Arc<Metrics>,
    protocol: Protocol,
}

impl Gate {
    /// A gate for a port speaking `protocol`, recording refusals in `audit` and every request
    /// in `metrics`.
    pub fn new(
        auth: Arc<Authenticator>,
        keys: Option<Arc<KeyFetcher>>,
        audit: Arc<AuditLog>,
        metrics: Arc<Metrics>,
        protocol: Protocol,
    ) -> Self {
        Self {
            auth,
            keys,
            audit,
            metrics,
            protocol,
        }
    }

    /// What to record of a request to `path` whose response is `response`.
    fn outcome<R>(
        &self,
        path: &str,
        id: RequestId,
        started: std::time::Instant,
        response: &http::Response<R>,
    ) -> Outcome {
        let status = match self.protocol {
            Protocol::Http => Status::Http(response.status().as_u16()),
            // An error answered at once carries its status in the headers; a stream's comes
            // in its trailers (see `GateBody::poll_frame`).
            Protocol::Grpc => Status::grpc(
                response
                    .headers()
                    .get("grpc-status")
                    .map_or(b"0", |v| v.as_bytes()),
            ),
        };
        Outcome {
            metrics: Arc::clone(&self.metrics),
            route: self.metrics.route(self.protocol, path),
            request_id: id,
            started,
            status,
        }
    }
}

/// The id of a request, set by the gate (empty for a request that did not pass it).
pub(crate) fn request_id_of(extensions: &http::Extensions) -> String {
    extensions
        .get::<RequestId>()
        .map_or_else(String::new, |id| id.as_str().to_owned())
}

/// The caller of a request: set by the gate; a request that did not pass it is an anonymous
/// principal, never trusted.
pub(crate) fn caller_of(extensions: &http::Extensions) -> Caller {
    extensions
        .get::<Caller>()
        .cloned()
        .unwrap_or_else(|| Caller::Principal(quiver_ops::Principal::anonymous()))
}

impl<S> Layer<S> for Gate {
    type Service = GateService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GateService {
            inner,
            gate: self.clone(),
        }
    }
}

/// [`Gate`] around a service.
#[derive(Clone)]
pub struct GateService<S> {
    inner: S,
    gate: Gate,
}

/// The connection a request came on: tonic puts it in the extensions as is, axum wrapped.
fn connection<B>(request: &http::Request<B>) -> Option<&ConnectionInfo> {
    let extensions = request.extensions();
    extensions.get::<ConnectionInfo>().or_else(|| {
        extensions
            .get::<axum::extract::ConnectInfo<ConnectionInfo>>()
            .map(|c| &c.0)
    })
}

/// Liveness probes answer without credentials (they carry no data).
fn is_probe(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.Health/") || path == "/health"
}

impl Gate {
    /// The answer to a request whose credentials were refused.
    fn refusal<R>(&self, error: &quiver_ops::OpsError) -> http::Response<GateBody<R>> {
        match self.protocol {
            Protocol::Grpc => crate::error::status(error)
                .into_http::<()>()
                .map(|()| GateBody::full(Bytes::new())),
            Protocol::Http => {
                let body = serde_json::json!({"error": error.to_string()}).to_string();
                let mut response = http::Response::new(GateBody::full(Bytes::from(body)));
                *response.status_mut() = http_status(quiver_core::HasKind::kind(error));
                let headers = response.headers_mut();
                headers.insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/json"),
                );
                headers.insert(
                    http::header::WWW_AUTHENTICATE,
                    http::HeaderValue::from_static("Bearer"),
                );
                response
            }
        }
    }
}

impl<S, B, R> Service<http::Request<B>> for GateService<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
    R: Send + 'static,
{
    type Response = http::Response<GateBody<R>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let in_flight = connection(&request).map(|c| c.activity.start());
        let started = std::time::Instant::now();
        let path = request.uri().path().to_owned();
        let gate = self.gate.clone();
        let id = RequestId::of(&request);
        request.extensions_mut().insert(id.clone());
        let caller = match gate.caller(&request) {
            Ok(caller) => caller,
            // Signed by a key we do not have: fetch the provider's keys, then look again.
            Err(e)
                if gate.keys.is_some()
                    && gate
                        .auth
                        .names_unknown_key(header(&request), chrono::Utc::now()) =>
            {
                // The ready service goes into the future; a clone takes its place.
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                return Box::pin(async move {
                    if let Some(keys) = &gate.keys {
                        keys.refresh().await;
                    }
                    let response = match gate.caller(&request) {
                        Ok(caller) => {
                            request.extensions_mut().insert(caller);
                            inner
                                .call(request)
                                .await?
                                .map(|body| GateBody::of(body, in_flight))
                        }
                        Err(_) => gate.refuse(&request, &e),
                    };
                    Ok(gate.recorded(&path, id, started, response))
                });
            }
            Err(e) => {
                let response = gate.refuse(&request, &e);
                return Box::pin(std::future::ready(Ok(
                    gate.recorded(&path, id, started, response)
                )));
            }
        };
        request.extensions_mut().insert(caller);
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?.map(|body| GateBody::of(body, in_flight));
            Ok(gate.recorded(&path, id, started, response))
        })
    }
}

impl Gate {
    /// `response` with its request id and what to record of it, recorded once its body is
    /// done.
    fn recorded<R>(
        &self,
        path: &str,
        id: RequestId,
        started: std::time::Instant,
        mut response: http::Response<GateBody<R>>,
    ) -> http::Response<GateBody<R>> {
        if let Ok(value) = http::HeaderValue::from_str(id.as_str()) {
            response.headers_mut().insert(REQUEST_ID_HEADER, value);
        }
        let outcome = self.outcome(path, id, started, &response);
        response.body_mut().outcome = Some(outcome);
        response
    }
}

/// The `authorization` header of a request.
fn header<B>(request: &http::Request<B>) -> Option<&str> {
    request
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
}

impl Gate {
    /// Who sends `request`: trusted without authentication, anonymous for a probe, else the
    /// principal of its credentials.
    fn caller<B>(&self, request: &http::Request<B>) -> Result<Caller, quiver_ops::OpsError> {
        if !self.auth.is_required() {
            return Ok(Caller::Trusted);
        }
        if is_probe(request.uri().path()) {
            return Ok(Caller::Principal(quiver_ops::Principal::anonymous()));
        }
        self.auth
            .authenticate(header(request), chrono::Utc::now())
            .map(Caller::Principal)
    }

    /// Records and answers a request whose credentials were refused.
    fn refuse<B, R>(
        &self,
        request: &http::Request<B>,
        error: &quiver_ops::OpsError,
    ) -> http::Response<GateBody<R>> {
        self.audit.record(
            "unknown",
            "authenticate",
            request.uri().path(),
            "unauthenticated",
            &error.to_string(),
        );
        self.refusal(error)
    }
}

/// A response body that keeps its request counted in flight until it is sent or dropped;
/// or the gate's own answer.
pub struct GateBody<B> {
    inner: Option<B>,
    full: Option<Bytes>,
    _in_flight: Option<InFlight>,
    /// Recorded in the metrics when the body is dropped.
    outcome: Option<Outcome>,
}

impl<B> std::fmt::Debug for GateBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GateBody").finish_non_exhaustive()
    }
}

impl<B> GateBody<B> {
    fn of(body: B, in_flight: Option<InFlight>) -> Self {
        Self {
            inner: Some(body),
            full: None,
            _in_flight: in_flight,
            outcome: None,
        }
    }

    fn full(bytes: Bytes) -> Self {
        Self {
            inner: None,
            full: (!bytes.is_empty()).then_some(bytes),
            _in_flight: None,
            outcome: None,
        }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for GateBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        match &mut this.inner {
            Some(inner) => {
                let frame = Pin::new(inner).poll_frame(cx);
                // A gRPC stream's status comes in its trailers.
                if let (Poll::Ready(Some(Ok(frame))), Some(outcome)) = (&frame, &mut this.outcome)
                    && let Some(status) = frame.trailers_ref().and_then(|t| t.get("grpc-status"))
                {
                    outcome.status = Status::grpc(status.as_bytes());
                }
                frame
            }
            None => Poll::Ready(this.full.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Some(inner) => inner.is_end_stream(),
            None => self.full.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Some(inner) => inner.size_hint(),
            None => SizeHint::with_exact(self.full.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}
