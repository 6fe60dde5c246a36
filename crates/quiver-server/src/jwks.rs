//! Fetching an OpenID Connect provider's keys for [`OidcVerifier`]: the discovery document,
//! then its `jwks_uri`, again every `jwks_cache_lifespan_seconds` and whenever a token names
//! a key the verifier does not have (at most once every few seconds).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use quiver_ops::OidcVerifier;
use tokio::sync::Mutex;

/// Refetches at most this often when tokens name unknown keys.
const MIN_REFRESH: Duration = Duration::from_secs(5);
/// How long one fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest discovery document or key set accepted.
const MAX_DOCUMENT_BYTES: usize = 1 << 20;

/// Keeps an [`OidcVerifier`]'s keys fresh.
pub struct KeyFetcher {
    verifier: Arc<OidcVerifier>,
    discovery_url: String,
    tls: tokio_rustls::TlsConnector,
    /// When a token naming an unknown key last made us fetch the keys.
    last_forced: Mutex<Option<Instant>>,
}

impl KeyFetcher {
    /// A fetcher for `verifier`'s provider, trusting the system's CAs or `ca_file`.
    pub fn new(verifier: Arc<OidcVerifier>, repo: &Path) -> Result<Option<Self>, String> {
        let config = verifier.config();
        let Some(discovery_url) = config.auth_discovery_url.clone() else {
            return Ok(None);
        };
        let mut roots = rustls::RootCertStore::empty();
        match &config.ca_cert_path {
            Some(file) => {
                use rustls::pki_types::CertificateDer;
                use rustls::pki_types::pem::PemObject;
                let path = repo.join(file);
                for cert in CertificateDer::pem_file_iter(&path)
                    .map_err(|e| format!("{}: {e}", path.display()))?
                {
                    let cert = cert.map_err(|e| format!("{}: {e}", path.display()))?;
                    roots
                        .add(cert)
                        .map_err(|e| format!("{}: {e}", path.display()))?;
                }
            }
            None => {
                for cert in rustls_native_certs::load_native_certs().certs {
                    let _ = roots.add(cert);
                }
            }
        }
        let tls = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Some(Self {
            verifier,
            discovery_url,
            tls: tokio_rustls::TlsConnector::from(Arc::new(tls)),
            last_forced: Mutex::new(None),
        }))
    }

    /// Fetches the keys now because a token names one we do not have, unless such a fetch
    /// ran less than `MIN_REFRESH` ago (then waits for that one instead).
    pub async fn refresh(&self) {
        let mut last = self.last_forced.lock().await;
        if last.is_some_and(|at| at.elapsed() < MIN_REFRESH) {
            return;
        }
        *last = Some(Instant::now());
        if let Err(e) = self.fetch().await {
            tracing::warn!("cannot fetch the OIDC provider's keys: {e}");
        }
    }

    /// Fetches the keys now and then every cache lifespan (every 10 s until it works).
    pub fn spawn(self: Arc<Self>) {
        tokio::spawn(async move {
            let lifespan =
                Duration::from_secs(self.verifier.config().jwks_cache_lifespan_seconds.max(1));
            loop {
                let ok = match self.fetch().await {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::warn!("cannot fetch the OIDC provider's keys: {e}");
                        false
                    }
                };
                tokio::time::sleep(if ok {
                    lifespan
                } else {
                    Duration::from_secs(10)
                })
                .await;
            }
        });
    }

    async fn fetch(&self) -> Result<(), String> {
        let discovery: serde_json::Value =
            serde_json::from_slice(&self.get(&self.discovery_url).await?)
                .map_err(|e| format!("{}: not JSON: {e}", self.discovery_url))?;
        if let Some(issuer) = discovery["issuer"].as_str() {
            self.verifier.set_discovered_issuer(issuer);
        }
        let jwks_uri = discovery["jwks_uri"]
            .as_str()
            .ok_or_else(|| format!("{}: no jwks_uri", self.discovery_url))?;
        let jwks = self.get(jwks_uri).await?;
        self.verifier
            .set_keys(&jwks)
            .map_err(|e| format!("{jwks_uri}: {e}"))?;
        Ok(())
    }

    /// The body of a GET of `url` (`http` or `https`).
    async fn get(&self, url: &str) -> Result<Bytes, String> {
        tokio::time::timeout(FETCH_TIMEOUT, self.get_now(url))
            .await
            .map_err(|_| format!("{url}: no answer within {} s", FETCH_TIMEOUT.as_secs()))?
    }

    async fn get_now(&self, url: &str) -> Result<Bytes, String> {
        let fail = |e: &dyn std::fmt::Display| format!("{url}: {e}");
        let uri: http::Uri = url.parse().map_err(|e| fail(&e))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(fail(&"not an http or https URL")),
        };
        let host = uri.host().ok_or_else(|| fail(&"no host"))?.to_owned();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| fail(&e))?;
        let request = http::Request::get(uri.path_and_query().map_or("/", |p| p.as_str()))
            .header(
                http::header::HOST,
                uri.authority().map_or(host.as_str(), |a| a.as_str()),
            )
            .header(http::header::ACCEPT, "application/json")
            .body(Empty::<Bytes>::new())
            .map_err(|e| fail(&e))?;
        let response = if https {
            let name =
                rustls::pki_types::ServerName::try_from(host.clone()).map_err(|e| fail(&e))?;
            let tls = self.tls.connect(name, tcp).await.map_err(|e| fail(&e))?;
            send(TokioIo::new(tls), request).await
        } else {
            send(TokioIo::new(tcp), request).await
        }
        .map_err(|e| fail(&e))?;
        if !response.status().is_success() {
            return Err(fail(&format!("HTTP {}", response.status())));
        }
        Limited::new(response.into_body(), MAX_DOCUMENT_BYTES)
            .collect()
            .await
            .map(http_body_util::Collected::to_bytes)
            .map_err(|e| fail(&e))
    }
}

async fn send<IO>(
    io: IO,
    request: http::Request<Empty<Bytes>>,
) -> Result<http::Response<hyper::body::Incoming>, hyper::Error>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(connection);
    sender.send_request(request).await
}
