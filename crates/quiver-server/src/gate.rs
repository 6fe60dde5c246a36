//! The layer every request of every port passes first: it counts the request in flight on
//! its connection (see `connection`) for as long as its response is being sent, and
//! authenticates it, answering a request without valid credentials itself (gRPC
//! `UNAUTHENTICATED`, HTTP 401). The [`Caller`] goes into the request's extensions:
//! [`Caller::Trusted`] without authentication, else the verified principal.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use quiver_ops::{AuditLog, Authenticator, Caller};
use tower::{Layer, Service};

use crate::connection::{ConnectionInfo, InFlight};
use crate::error::http_status;

/// Which protocol a port speaks, for answering refused requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// gRPC (and Arrow Flight).
    Grpc,
    /// HTTP/JSON.
    Http,
}

/// The request layer of one port.
#[derive(Debug, Clone)]
pub struct Gate {
    auth: Arc<Authenticator>,
    audit: Arc<AuditLog>,
    protocol: Protocol,
}

impl Gate {
    /// A gate for a port speaking `protocol`, recording refusals in `audit`.
    pub fn new(auth: Arc<Authenticator>, audit: Arc<AuditLog>, protocol: Protocol) -> Self {
        Self {
            auth,
            audit,
            protocol,
        }
    }
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
#[derive(Debug, Clone)]
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
    S: Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
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
        let caller = if !self.gate.auth.is_required() {
            Caller::Trusted
        } else if is_probe(request.uri().path()) {
            Caller::Principal(quiver_ops::Principal::anonymous())
        } else {
            let header = request
                .headers()
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            match self.gate.auth.authenticate(header, chrono::Utc::now()) {
                Ok(p) => Caller::Principal(p),
                Err(e) => {
                    self.gate.audit.record(
                        "unknown",
                        "authenticate",
                        request.uri().path(),
                        "unauthenticated",
                        &e.to_string(),
                    );
                    let refusal = self.gate.refusal(&e);
                    return Box::pin(std::future::ready(Ok(refusal)));
                }
            }
        };
        request.extensions_mut().insert(caller);
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|body| GateBody {
                inner: Some(body),
                full: None,
                _in_flight: in_flight,
            }))
        })
    }
}

/// A response body that keeps its request counted in flight until it is sent or dropped;
/// or the gate's own answer.
#[derive(Debug)]
pub struct GateBody<B> {
    inner: Option<B>,
    full: Option<Bytes>,
    _in_flight: Option<InFlight>,
}

impl<B> GateBody<B> {
    fn full(bytes: Bytes) -> Self {
        Self {
            inner: None,
            full: (!bytes.is_empty()).then_some(bytes),
            _in_flight: None,
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
        match &mut self.inner {
            Some(inner) => Pin::new(inner).poll_frame(cx),
            None => Poll::Ready(self.full.take().map(|b| Ok(Frame::data(b)))),
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
