//! Accepting connections on every port the same way: a cap on open connections, TLS when
//! configured, and a deadline on connections with no request in flight.
//!
//! A connection with no request in flight is closed once it has been so for
//! [`ConnectionLimits::idle_timeout`], or for [`ConnectionLimits::header_timeout`] before its
//! first request (a TLS handshake included): bytes trickling in do not count, so neither idle
//! nor half-sent connections hold a slot. Requests are counted by [`Activity::start`], which
//! the request layer calls with the [`ConnectionInfo`] found in the request's extensions.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Sleep;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// Limits on the connections of one port.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Most connections open at once; more wait to be accepted.
    pub max_connections: usize,
    /// How long a new connection may take to send its first request (TLS handshake included).
    pub header_timeout: Duration,
    /// How long a connection may stay open with no request in flight.
    pub idle_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
        }
    }
}

impl ConnectionLimits {
    /// The connection cap for each of `ports` ports, kept under the process's open-file limit
    /// (with room for the files and sockets the server itself needs), so a flood of
    /// connections never starves the registry poller or the store of file descriptors.
    pub fn per_port(self, ports: usize) -> Self {
        let files = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .map_or(u64::MAX, |n| n);
        let spare = usize::try_from(files.saturating_sub(64)).unwrap_or(usize::MAX);
        Self {
            max_connections: self.max_connections.min(spare / ports.max(1)).max(1),
            ..self
        }
    }
}

/// Milliseconds since the process's first call: a clock that fits an atomic.
fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    u64::try_from(START.get_or_init(Instant::now).elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// What a connection is doing: its requests in flight and since when it has had none.
#[derive(Debug)]
pub struct Activity {
    in_flight: AtomicUsize,
    /// `now_ms()` when the last request ended (or the connection opened).
    idle_since: AtomicU64,
    /// Requests started on this connection so far.
    requests: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(now_ms()),
            requests: AtomicU64::new(0),
        }
    }

    /// Counts a request in flight until the guard is dropped.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.requests.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(self))
    }

    /// When the connection must close if it is still idle then; `None` while busy.
    fn deadline(&self, limits: &ConnectionLimits) -> Option<u64> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let timeout = if self.requests.load(Ordering::Relaxed) == 0 {
            limits.header_timeout
        } else {
            limits.idle_timeout
        };
        let timeout = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        Some(
            self.idle_since
                .load(Ordering::Acquire)
                .saturating_add(timeout),
        )
    }
}

/// A request in flight on a connection (see [`Activity::start`]).
#[derive(Debug)]
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.idle_since.store(now_ms(), Ordering::Release);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a request knows of its connection (in its extensions, from tonic and axum alike).
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    /// The client's address.
    pub remote: SocketAddr,
    /// The connection's requests.
    pub activity: Arc<Activity>,
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// An accepted connection: counted against the port's cap until dropped, closed once idle
/// past its deadline.
pub struct Connection {
    stream: Stream,
    info: ConnectionInfo,
    limits: ConnectionLimits,
    timer: Pin<Box<Sleep>>,
    _permit: OwnedSemaphorePermit,
}

impl Connection {
    /// `Ready` once the connection has been idle past its deadline (and arms the timer
    /// otherwise).
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            let now = now_ms();
            let wake_at = match self.info.activity.deadline(&self.limits) {
                Some(deadline) if deadline <= now => return true,
                Some(deadline) => deadline,
                // Busy: look again after a while (the request may end without a read).
                None => now.saturating_add(
                    u64::try_from(self.limits.header_timeout.as_millis()).unwrap_or(u64::MAX),
                ),
            };
            let at = tokio::time::Instant::now() + Duration::from_millis(wake_at - now);
            self.timer.as_mut().reset(at);
            if self.timer.as_mut().poll(cx).is_pending() {
                return false;
            }
        }
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let read = match &mut this.stream {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        };
        if read.is_pending() && this.expired(cx) {
            // End of stream: the server closes the connection.
            return Poll::Ready(Ok(()));
        }
        read
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.stream {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.stream {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.stream {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.stream {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.stream {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

impl tonic::transport::server::Connected for Connection {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> ConnectionInfo {
        self.info.clone()
    }
}

/// Connections of one port, ready to serve (accepted, under the cap, TLS handshake done).
pub struct Incoming {
    ready: mpsc::Receiver<Connection>,
    local: SocketAddr,
}

impl Incoming {
    /// Accepts on `listener` until the returned value is dropped.
    pub fn new(
        listener: TcpListener,
        limits: ConnectionLimits,
        tls: Option<TlsAcceptor>,
    ) -> io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        let slots = Arc::new(Semaphore::new(limits.max_connections));
        tokio::spawn(async move {
            loop {
                let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
                    return;
                };
                let (tcp, remote) = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok(a) => a,
                        // Out of file descriptors or a connection reset before accept: wait
                        // a little rather than spin.
                        Err(_) => {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                    () = tx.closed() => return,
                };
                let _ = tcp.set_nodelay(true);
                let tx = tx.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let stream = match tls {
                        None => Stream::Plain(tcp),
                        Some(acceptor) => {
                            match tokio::time::timeout(limits.header_timeout, acceptor.accept(tcp))
                                .await
                            {
                                Ok(Ok(s)) => Stream::Tls(Box::new(s)),
                                // A failed or slow handshake: the connection is dropped.
                                _ => return,
                            }
                        }
                    };
                    let connection = Connection {
                        stream,
                        info: ConnectionInfo {
                            remote,
                            activity: Arc::new(Activity::new()),
                        },
                        limits,
                        timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
                        _permit: permit,
                    };
                    let _ = tx.send(connection).await;
                });
            }
        });
        Ok(Self { ready, local })
    }

    /// The connections, as tonic's `serve_with_incoming` takes them.
    pub fn into_stream(self) -> impl futures::Stream<Item = io::Result<Connection>> {
        futures::stream::unfold(self.ready, |mut ready| async move {
            ready.recv().await.map(|c| (Ok(c), ready))
        })
    }
}

impl axum::serve::Listener for Incoming {
    type Io = Connection;
    type Addr = ConnectionInfo;

    async fn accept(&mut self) -> (Connection, ConnectionInfo) {
        match self.ready.recv().await {
            Some(c) => {
                let info = c.info.clone();
                (c, info)
            }
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<ConnectionInfo> {
        Ok(ConnectionInfo {
            remote: self.local,
            activity: Arc::new(Activity::new()),
        })
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, Incoming>>
    for ConnectionInfo
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, Incoming>) -> Self {
        stream.remote_addr().clone()
    }
}

/// The certificate files of a TLS port.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// PEM certificate chain.
    pub cert: std::path::PathBuf,
    /// PEM private key.
    pub key: std::path::PathBuf,
    /// PEM CA certificates clients must present a certificate of (mutual TLS), if any.
    pub client_ca: Option<std::path::PathBuf>,
}

impl TlsFiles {
    /// A TLS acceptor offering `alpn` protocols (`h2` for gRPC, `http/1.1` for HTTP).
    pub fn acceptor(&self, alpn: &[&[u8]]) -> Result<TlsAcceptor, String> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let read = |path: &std::path::Path, what: &str, e: &dyn std::fmt::Display| {
            format!("TLS {what} {}: {e}", path.display())
        };
        let certs =
            |path: &std::path::Path, what: &str| -> Result<Vec<CertificateDer<'static>>, String> {
                let certs: Vec<_> = CertificateDer::pem_file_iter(path)
                    .and_then(Iterator::collect)
                    .map_err(|e| read(path, what, &e))?;
                if certs.is_empty() {
                    return Err(read(path, what, &"no PEM certificate in it"));
                }
                Ok(certs)
            };
        let chain = certs(&self.cert, "certificate")?;
        let key =
            PrivateKeyDer::from_pem_file(&self.key).map_err(|e| read(&self.key, "key", &e))?;
        let builder = rustls::ServerConfig::builder();
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(path) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in certs(path, "client CA")? {
                    roots.add(cert).map_err(|e| read(path, "client CA", &e))?;
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
                    .build()
                    .map_err(|e| read(path, "client CA", &e))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder
            .with_single_cert(chain, key)
            .map_err(|e| read(&self.cert, "certificate", &e))?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}
