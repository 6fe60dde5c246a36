//! How a command reaches the online store: in this process, or through the `quiver serve`
//! that holds it.
//!
//! One process owns an embedded store at a time. A command that needs the store goes to the
//! server named by `--server`, else to the server whose endpoint file is beside the store (if
//! it answers), else opens the store itself, which fails clearly if some other process holds
//! it. A shared store (Redis) is opened by each command itself, beside the servers using it.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use quiver_online::OnlineError;
use quiver_ops::{Endpoint, FeatureStore, OpsError, StoreOptions};
use quiver_registry::RepoConfig;
use quiver_server::proto::quiver::v1 as pb;
use tonic::transport::Channel;

/// Where a command runs.
pub enum Access {
    /// In this process, holding the store.
    Local(Box<FeatureStore>),
    /// Through a running server.
    Remote(Server),
}

/// A running `quiver serve`, reached over gRPC.
pub struct Server {
    /// Its gRPC address, for messages.
    pub address: String,
    /// The connection.
    pub channel: Credentialed,
    /// Its process id, when known from the endpoint file.
    pub pid: Option<u32>,
}

/// A channel that sends the caller's bearer token (`QUIVER_TOKEN`) with every call.
#[derive(Clone)]
pub struct Credentialed {
    inner: Channel,
    authorization: Option<http::HeaderValue>,
}

impl tower::Service<http::Request<tonic::body::Body>> for Credentialed {
    type Response = http::Response<tonic::body::Body>;
    type Error = tonic::transport::Error;
    type Future = tonic::transport::channel::ResponseFuture;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        tower::Service::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, mut request: http::Request<tonic::body::Body>) -> Self::Future {
        if let Some(value) = &self.authorization {
            request
                .headers_mut()
                .insert(http::header::AUTHORIZATION, value.clone());
        }
        tower::Service::call(&mut self.inner, request)
    }
}

/// TLS to the server: `https://` addresses, trusting `QUIVER_TLS_CA` (and presenting
/// `QUIVER_TLS_CERT` / `QUIVER_TLS_KEY` to a server that asks for a client certificate).
fn tls_config(url: &str) -> Result<Option<tonic::transport::ClientTlsConfig>> {
    if !url.starts_with("https://") {
        return Ok(None);
    }
    let read = |var: &str| -> Result<Option<Vec<u8>>> {
        std::env::var_os(var)
            .map(|path| {
                std::fs::read(&path)
                    .with_context(|| format!("{var}: cannot read {}", Path::new(&path).display()))
            })
            .transpose()
    };
    let ca = read("QUIVER_TLS_CA")?.with_context(|| {
        format!("{url} speaks TLS: set QUIVER_TLS_CA to the PEM file of the CA that signed its certificate")
    })?;
    let mut tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(ca));
    if let (Some(cert), Some(key)) = (read("QUIVER_TLS_CERT")?, read("QUIVER_TLS_KEY")?) {
        tls = tls.identity(tonic::transport::Identity::from_pem(cert, key));
    }
    Ok(Some(tls))
}

impl Server {
    /// A runtime for the calls of one command.
    pub fn runtime() -> Result<tokio::runtime::Runtime> {
        Ok(tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?)
    }

    /// Connects to the server at `address` (`host:port` or a URL).
    pub fn connect(
        runtime: &tokio::runtime::Runtime,
        address: &str,
        pid: Option<u32>,
    ) -> Result<Self> {
        let url = if address.contains("://") {
            address.to_owned()
        } else {
            format!("http://{address}")
        };
        let mut endpoint = tonic::transport::Endpoint::from_shared(url.clone())?
            .connect_timeout(Duration::from_secs(3));
        if let Some(tls) = tls_config(&url)? {
            endpoint = endpoint.tls_config(tls)?;
        }
        let inner = runtime.block_on(async {
            endpoint
                .connect()
                .await
                .with_context(|| format!("cannot reach quiver serve at {url} (is it running?)"))
        })?;
        let authorization = match std::env::var("QUIVER_TOKEN") {
            Ok(token) if !token.is_empty() => Some(
                http::HeaderValue::from_str(&format!("Bearer {token}"))
                    .context("QUIVER_TOKEN is not a valid header value")?,
            ),
            _ => None,
        };
        Ok(Self {
            address: address.to_owned(),
            channel: Credentialed {
                inner,
                authorization,
            },
            pid,
        })
    }

    /// "quiver serve at ADDR (pid N)", for messages.
    pub fn describe(&self) -> String {
        match self.pid {
            Some(pid) => format!("quiver serve at {} (pid {pid})", self.address),
            None => format!("quiver serve at {}", self.address),
        }
    }
}

/// The server that holds the repository's embedded store, if one answers at the address in
/// its endpoint file (a shared store has no holder).
pub fn running_server(
    runtime: &tokio::runtime::Runtime,
    repo: &Path,
    config: &RepoConfig,
) -> Option<Server> {
    let ours = config.online_store_path(repo)?;
    let endpoint = Endpoint::read(&ours)?;
    let server = Server::connect(runtime, &endpoint.grpc, Some(endpoint.pid)).ok()?;
    // A stale file can name an address another process now listens on: ask it.
    let mut client =
        pb::online_store_service_client::OnlineStoreServiceClient::new(server.channel.clone());
    let stats = runtime
        .block_on(client.get_stats(pb::GetStatsRequest {}))
        .ok()?
        .into_inner();
    let same = Path::new(&stats.location).canonicalize().ok() == ours.canonicalize().ok();
    same.then_some(server)
}

impl Access {
    /// The store of the repository at `repo`: through `server` when given, else through the
    /// server holding it, else in this process.
    pub fn open(
        runtime: &tokio::runtime::Runtime,
        repo: &Path,
        server: Option<&str>,
    ) -> Result<Self> {
        if let Some(address) = server {
            return Ok(Self::Remote(Server::connect(runtime, address, None)?));
        }
        let config = RepoConfig::load(repo).with_context(|| {
            format!(
                "{} is not a feature repository (see `quiver init`)",
                repo.display()
            )
        })?;
        if let Some(server) = running_server(runtime, repo, &config) {
            return Ok(Self::Remote(server));
        }
        match FeatureStore::open(repo, StoreOptions::default()) {
            Ok(store) => Ok(Self::Local(Box::new(store))),
            Err(OpsError::Online(OnlineError::Locked { path })) => bail!(
                "the online store {} is held by another process that is not a quiver serve this command can reach; stop it, or pass --server ADDRESS",
                path.display()
            ),
            Err(e) => Err(e.into()),
        }
    }
}

/// A gRPC status as an error message.
pub fn status_error(s: &tonic::Status) -> anyhow::Error {
    let what = match s.code() {
        tonic::Code::InvalidArgument => "invalid request",
        tonic::Code::NotFound => "not found",
        tonic::Code::FailedPrecondition => "failed precondition",
        tonic::Code::Unavailable => "server unavailable",
        tonic::Code::Aborted => "conflict",
        tonic::Code::ResourceExhausted => "out of space",
        tonic::Code::Cancelled => "cancelled",
        tonic::Code::Unauthenticated => "unauthenticated (set QUIVER_TOKEN)",
        tonic::Code::PermissionDenied => "permission denied",
        _ => "server error",
    };
    anyhow::anyhow!("{what}: {}", s.message())
}
