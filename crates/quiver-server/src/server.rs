//! Starting the server: bind every port, serve until a shutdown signal, then drain.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use arrow_flight::flight_service_server::FlightServiceServer;
use quiver_offline::JoinOptions;
use quiver_ops::{Endpoint, FeatureStore};
use tokio::net::TcpListener;

use crate::connection::{ConnectionInfo, ConnectionLimits, Incoming, TlsFiles};
use crate::error::{Result, ServerError};
use crate::feast::{FeastServing, http_router};
use crate::feast_registry::FeastRegistry;
use crate::flight::{TrainingSetService, UploadLimits};
use crate::gate::{Gate, Protocol};
use crate::grpc::{MaterializationGrpc, OnlineStoreGrpc, RegistryGrpc};
use crate::jwks::KeyFetcher;
use crate::metrics::{Metrics, metrics_router};
use crate::online_wire::OnlineService;
use crate::proto::feast::registry::registry_server_server::RegistryServerServer;
use crate::proto::feast::serving::serving_service_server::ServingServiceServer;
use crate::proto::quiver::v1::materialization_service_server::MaterializationServiceServer;
use crate::proto::quiver::v1::online_store_service_server::OnlineStoreServiceServer;
use crate::proto::quiver::v1::registry_service_server::RegistryServiceServer;

/// Default port of the Arrow Flight training-set service (Feast's `serve_offline` port).
pub const DEFAULT_FLIGHT_PORT: u16 = 8815;
/// Default port of the online gRPC services (Quiver's and Feast's).
pub const DEFAULT_GRPC_PORT: u16 = 6565;
/// Default port of the HTTP/JSON service (Feast's `feast serve` port).
pub const DEFAULT_HTTP_PORT: u16 = 6566;

/// Largest Flight message accepted (an entity table streams in many messages, and the whole
/// table is bounded by [`UploadLimits`]).
const MAX_FLIGHT_MESSAGE_BYTES: usize = 64 << 20;

/// Where and how to serve.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Address to listen on (loopback by default).
    pub host: IpAddr,
    /// Arrow Flight port (0 picks a free port).
    pub flight_port: u16,
    /// Online gRPC port (0 picks a free port).
    pub grpc_port: u16,
    /// HTTP port (0 picks a free port).
    pub http_port: u16,
    /// A port of its own for `GET /metrics` (0 picks a free port), without authentication,
    /// for scrapers; `/metrics` on the HTTP port is there either way.
    pub metrics_port: Option<u16>,
    /// Longest time a gRPC request may take.
    pub request_timeout: Duration,
    /// After a shutdown signal, how long in-flight requests may take before the server exits.
    pub shutdown_grace: Duration,
    /// How training sets are joined (memory limit, spill folder, threads).
    pub join: JoinOptions,
    /// How often the registry is checked for a new version.
    pub registry_poll: Duration,
    /// Whether views are materialized on their schedules.
    pub schedule: bool,
    /// Connection cap and timeouts of every port.
    pub connections: ConnectionLimits,
    /// Entity tables uploaded over Arrow Flight.
    pub uploads: UploadLimits,
    /// TLS on every port, when set.
    pub tls: Option<TlsFiles>,
    /// How requests are authenticated.
    pub auth: Arc<quiver_ops::Authenticator>,
}

impl Default for ServeOptions {
    /// Loopback, default ports, schedules on.
    fn default() -> Self {
        Self {
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            flight_port: DEFAULT_FLIGHT_PORT,
            grpc_port: DEFAULT_GRPC_PORT,
            http_port: DEFAULT_HTTP_PORT,
            metrics_port: None,
            request_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(10),
            join: JoinOptions::default(),
            registry_poll: Duration::from_millis(500),
            schedule: true,
            connections: ConnectionLimits::default(),
            uploads: UploadLimits::default(),
            tls: None,
            auth: Arc::default(),
        }
    }
}

/// The addresses a running server listens on.
#[derive(Debug, Clone, Copy)]
pub struct BoundAddresses {
    /// Arrow Flight.
    pub flight: SocketAddr,
    /// Online gRPC (Quiver's and Feast's services, health, reflection).
    pub grpc: SocketAddr,
    /// HTTP/JSON (Feast's feature server endpoints).
    pub http: SocketAddr,
    /// The metrics port, when one was asked for.
    pub metrics: Option<SocketAddr>,
}

async fn bind(host: IpAddr, port: u16) -> Result<TcpListener> {
    let address = SocketAddr::new(host, port);
    TcpListener::bind(address)
        .await
        .map_err(|source| ServerError::Bind {
            address: address.to_string(),
            source,
        })
}

/// Follows the registry: every `interval`, a newer version becomes current, with its effects
/// on the online store.
fn follow_registry(store: &Arc<FeatureStore>, interval: Duration) {
    let store = Arc::clone(store);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        loop {
            tick.tick().await;
            let s = Arc::clone(&store);
            match tokio::task::spawn_blocking(move || s.refresh()).await {
                Ok(Ok(Some(activation))) => {
                    for id in activation.deleted {
                        tracing::info!(
                            registry_version = activation.version,
                            "deleted the online data of {id}"
                        );
                    }
                }
                Ok(Err(e)) => {
                    tracing::error!("cannot make the latest registry version current: {e}");
                }
                _ => {}
            }
        }
    });
}

/// Serves `store` until `shutdown` completes; in-flight requests then finish before it
/// returns. `on_bound` is told the addresses once every port is listening; the addresses are
/// also written beside the online store, so other processes go through this server.
pub async fn serve(
    store: Arc<FeatureStore>,
    options: ServeOptions,
    on_bound: impl FnOnce(BoundAddresses),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let flight_listener = bind(options.host, options.flight_port).await?;
    let grpc_listener = bind(options.host, options.grpc_port).await?;
    let http_listener = bind(options.host, options.http_port).await?;
    let metrics_on = store.options().metrics;
    let metrics_listener = match options.metrics_port {
        Some(_) if !metrics_on => {
            return Err(ServerError::Transport(
                "a metrics port was asked for, but server.metrics is false".into(),
            ));
        }
        Some(port) => Some(bind(options.host, port).await?),
        None => None,
    };
    let address = |l: &TcpListener| {
        l.local_addr()
            .map_err(|e| ServerError::Transport(e.to_string()))
    };
    let bound = BoundAddresses {
        flight: address(&flight_listener)?,
        grpc: address(&grpc_listener)?,
        http: address(&http_listener)?,
        metrics: metrics_listener.as_ref().map(address).transpose()?,
    };
    follow_registry(&store, options.registry_poll);

    let flight = FlightServiceServer::new(TrainingSetService::new(
        Arc::clone(&store),
        options.join.clone(),
        options.uploads,
    ))
    .max_decoding_message_size(MAX_FLIGHT_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_FLIGHT_MESSAGE_BYTES);
    // The largest online request follows from the row limit.
    let max_request_bytes = store.options().limits.max_request_bytes();

    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter.set_serving::<OnlineService>().await;
    health_reporter
        .set_serving::<ServingServiceServer<FeastServing>>()
        .await;
    health_reporter
        .set_serving::<MaterializationServiceServer<MaterializationGrpc>>()
        .await;
    // Reflection v1 and v1alpha: grpcurl before 1.9 and grpcio-reflection ask v1alpha.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection()
        .build_v1()
        .map_err(|e| ServerError::Transport(e.to_string()))?;
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .map_err(|e| ServerError::Transport(e.to_string()))?;

    // One shutdown signal fans out to the three servers.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };

    let scheduler = options.schedule.then(|| {
        tokio::spawn(quiver_ops::schedule::run_schedule(
            Arc::clone(&store),
            stopped(),
        ))
    });
    // An embedded store's server says where it listens, so commands go through it; a shared
    // store is used by every process directly.
    let store_path = store.local_store_path();
    if let Some(path) = &store_path {
        let endpoint = Endpoint {
            pid: std::process::id(),
            grpc: if options.tls.is_some() {
                format!("https://{}", bound.grpc)
            } else {
                bound.grpc.to_string()
            },
            http: bound.http.to_string(),
            flight: bound.flight.to_string(),
        };
        endpoint
            .write(path)
            .map_err(|e| ServerError::Transport(format!("{}: {e}", path.display())))?;
    }
    on_bound(bound);
    let limits = options
        .connections
        .per_port(3 + usize::from(options.metrics_port.is_some()));
    let acceptor = |alpn: &[&[u8]]| {
        options
            .tls
            .as_ref()
            .map(|tls| tls.acceptor(alpn))
            .transpose()
            .map_err(ServerError::Transport)
    };
    let grpc_tls = acceptor(&[b"h2"])?;
    // HTTP/1.1 only: what Feast's HTTP clients speak.
    let http_tls = acceptor(&[b"http/1.1"])?;
    let incoming = |listener, tls| {
        Incoming::new(listener, limits, tls).map_err(|e| ServerError::Transport(e.to_string()))
    };
    let keys = match options.auth.oidc() {
        Some(verifier) => KeyFetcher::new(Arc::clone(verifier), store.repo())
            .map_err(ServerError::Transport)?
            .map(Arc::new),
        None => None,
    };
    if let Some(keys) = &keys {
        Arc::clone(keys).spawn();
    }
    let metrics = Arc::new(if metrics_on {
        Metrics::new(&store)
    } else {
        Metrics::off()
    });
    let gate = |protocol| {
        Gate::new(
            Arc::clone(&options.auth),
            keys.clone(),
            Arc::clone(store.audit_log()),
            Arc::clone(&metrics),
            protocol,
        )
    };
    let flight_server = tonic::transport::Server::builder()
        .timeout(options.request_timeout * 20)
        .layer(gate(Protocol::Grpc))
        .add_service(flight)
        .serve_with_incoming_shutdown(
            incoming(flight_listener, grpc_tls.clone())?.into_stream(),
            stopped(),
        );
    let grpc_server = tonic::transport::Server::builder()
        .timeout(options.request_timeout)
        .layer(gate(Protocol::Grpc))
        .add_service(OnlineService::new(Arc::clone(&store), max_request_bytes))
        .add_service(
            ServingServiceServer::new(FeastServing::new(Arc::clone(&store)))
                .max_decoding_message_size(max_request_bytes),
        )
        .add_service(RegistryServiceServer::new(RegistryGrpc::new(Arc::clone(
            &store,
        ))))
        .add_service(RegistryServerServer::new(FeastRegistry::new(Arc::clone(
            &store,
        ))))
        .add_service(MaterializationServiceServer::new(MaterializationGrpc::new(
            Arc::clone(&store),
        )))
        .add_service(OnlineStoreServiceServer::new(OnlineStoreGrpc::new(
            Arc::clone(&store),
        )))
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .serve_with_incoming_shutdown(incoming(grpc_listener, grpc_tls)?.into_stream(), stopped());
    let http_server = axum::serve(
        incoming(http_listener, http_tls)?,
        http_router(Arc::clone(&store))
            .merge(if metrics_on {
                metrics_router(Arc::clone(&metrics))
            } else {
                axum::Router::new()
            })
            .layer(axum::extract::DefaultBodyLimit::max(max_request_bytes))
            .layer(gate(Protocol::Http))
            .into_make_service_with_connect_info::<ConnectionInfo>(),
    )
    .with_graceful_shutdown(stopped());
    // The metrics port: plain scrapes (TLS as every port), no credentials, nothing else.
    let metrics_server = match metrics_listener {
        Some(listener) => Some(
            axum::serve(
                incoming(listener, acceptor(&[b"http/1.1"])?)?,
                metrics_router(Arc::clone(&metrics))
                    .into_make_service_with_connect_info::<ConnectionInfo>(),
            )
            .with_graceful_shutdown(stopped()),
        ),
        None => None,
    };
    let metrics_server = async move {
        match metrics_server {
            Some(server) => server.await,
            None => Ok(()),
        }
    };
    let transport = |e: &dyn std::fmt::Display| ServerError::Transport(e.to_string());
    let all = async { tokio::join!(flight_server, grpc_server, http_server, metrics_server) };
    // In-flight requests get `shutdown_grace` to finish; clients that keep idle connections
    // open do not hold the process.
    let deadline = async {
        stopped().await;
        tokio::time::sleep(options.shutdown_grace).await;
    };
    let results = tokio::select! {
        results = all => Some(results),
        () = deadline => None,
    };
    // Scheduled runs are cancelled by the stop signal; their watermarks stay where they were.
    if let Some(scheduler) = scheduler {
        let _ = scheduler.await;
    }
    // What the feature log holds is written before the process ends.
    let flushing = Arc::clone(&store);
    let _ = tokio::task::spawn_blocking(move || flushing.flush_feature_log()).await;
    if let Some(path) = &store_path {
        Endpoint::remove(path);
    }
    let Some((f, g, h, m)) = results else {
        return Ok(());
    };
    f.map_err(|e| transport(&e))?;
    g.map_err(|e| transport(&e))?;
    h.map_err(|e| transport(&e))?;
    m.map_err(|e| transport(&e))?;
    Ok(())
}

/// Completes on SIGINT or SIGTERM.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    // The handlers are installed now, before any port is bound: a SIGTERM that arrives as
    // soon as the server says it is ready must drain it, not kill it.
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let terminate = signal(SignalKind::terminate()).ok();
        let interrupt = signal(SignalKind::interrupt()).ok();
        async move {
            let wait = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = wait(terminate) => {},
                () = wait(interrupt) => {},
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}
