//! Service plumbing shared by the custodian and the enroller: serving an axum router
//! over TLS 1.3 with the verified peer's SPIFFE id handed to handlers (never taken
//! from a header), certificate reloading without a restart, a bounded number of
//! connections, graceful shutdown that drains in-flight requests, and logging set-up.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod probe;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use axum::Router;
use certs::{Role, SpiffeId};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;
use wire::{Reason, Refusal};

/// How long in-flight requests get to finish after a shutdown signal.
pub const DRAIN: Duration = Duration::from_secs(20);

/// The verified identity of a connection's peer, set by the TLS layer. `None` only on
/// listeners that accept clients without a certificate (the enroller's).
#[derive(Debug, Clone)]
pub struct Peer(pub Option<SpiffeId>);

/// Start-up failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// A TLS file could not be read or used.
    #[error("TLS: {0}")]
    Tls(String),
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
}

/// Whether clients must present a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// Every client presents a certificate of the trust domain (custodians).
    Required,
    /// A certificate is verified when presented, and may be absent (the enroller, for
    /// registration and login).
    Optional,
}

/// The TLS files of a listener.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// CA PEM path: peers must chain to it.
    pub ca: PathBuf,
    /// Certificate chain PEM path.
    pub cert: PathBuf,
    /// Private key PEM path.
    pub key: PathBuf,
    /// Client certificates required or optional.
    pub client_auth: ClientAuth,
}

impl TlsFiles {
    /// Reads the files and builds the TLS 1.3 configuration.
    pub fn load(&self) -> Result<ServerConfig, ServeError> {
        let read = |p: &PathBuf| {
            std::fs::read(p)
                .map_err(|e| ServeError::Tls(format!("cannot read {}: {e}", p.display())))
        };
        let ca = read(&self.ca)?;
        let cert = read(&self.cert)?;
        let key = zeroize::Zeroizing::new(read(&self.key)?);
        let mut cfg = match self.client_auth {
            ClientAuth::Required => certs::tls::server_config(&ca, &cert, &key),
            ClientAuth::Optional => certs::tls::server_config_optional_client(&ca, &cert, &key),
        }
        .map_err(|e| ServeError::Tls(e.to_string()))?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        // No session resumption: a resumed TLS 1.3 session skips client-certificate
        // verification, so a login certificate would keep working after it expired (and
        // after the CA file changed). Every connection makes a full handshake instead.
        cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        cfg.send_tls13_tickets = 0;
        Ok(cfg)
    }

    fn stamp(&self) -> Vec<Option<SystemTime>> {
        [&self.ca, &self.cert, &self.key]
            .iter()
            .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
            .collect()
    }
}

/// Connection limits.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Concurrent connections; more wait in the accept queue.
    pub max_connections: usize,
    /// TLS handshake deadline.
    pub handshake_timeout: Duration,
    /// Seconds between checks of the TLS files (zero: never reload).
    pub reload: Duration,
    /// How long one request, body included, may take before it is answered 408.
    pub request_timeout: Duration,
}

/// Why a handshake or identity check was refused: reported to [`Hooks::refused`].
pub type RefusalReason = &'static str;

/// What the service wants to hear about connections it refuses.
pub trait Hooks: Send + Sync + 'static {
    /// A handshake or identity check refused a connection from `remote`. Called once per
    /// refusal (audit and count it here); `connection_error` (peer hung up) included.
    fn refused(&self, remote: SocketAddr, reason: RefusalReason)
        -> impl Future<Output = ()> + Send;
}

/// Why a handshake was refused, as an audit and metrics reason.
pub fn handshake_reason(e: &std::io::Error) -> RefusalReason {
    use rustls::{CertificateError, Error as TlsError};
    let Some(tls) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<TlsError>())
    else {
        return if e.kind() == std::io::ErrorKind::TimedOut {
            "handshake_timeout"
        } else {
            "connection_error"
        };
    };
    match tls {
        TlsError::NoCertificatesPresented => "no_client_certificate",
        TlsError::InvalidCertificate(CertificateError::UnknownIssuer) => "unknown_ca",
        TlsError::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        ) => "expired_certificate",
        TlsError::InvalidCertificate(
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. },
        ) => "certificate_not_yet_valid",
        TlsError::InvalidCertificate(_) => "invalid_certificate",
        TlsError::PeerIncompatible(_) => "incompatible_peer",
        _ => "handshake_failed",
    }
}

/// The identity of a verified peer chain, or the reason to refuse it: every role but
/// `user` must come straight from the trust domain's CA ([`certs::tls::issued_directly_by`]).
pub fn peer_identity(
    chain: &[rustls::pki_types::CertificateDer<'_>],
    ca_pem: &[u8],
) -> Result<SpiffeId, RefusalReason> {
    let id = certs::tls::chain_spiffe_id(chain).map_err(|_| "no_spiffe_id")?;
    if id.role() != Role::User && !certs::tls::issued_directly_by(chain, ca_pem) {
        return Err("service_identity_not_from_ca");
    }
    Ok(id)
}

/// Binds a listener, or says which address could not be bound.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })
}

/// Binds the optional loopback plain-HTTP health port and serves `router` on it in the
/// background (no TLS: it answers health and metrics only).
pub async fn serve_plain_health(addr: SocketAddr, router: Router) -> Result<(), ServeError> {
    let listener = bind(addr).await?;
    tracing::info!(%addr, "plain health port (loopback)");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "health port stopped");
        }
    });
    Ok(())
}

/// Serves `router` on `listener` (see [`bind`]) until `shutdown` resolves, then drains
/// in-flight requests (at most [`DRAIN`]). Every request carries a [`Peer`] extension.
pub async fn serve<H: Hooks>(
    router: Router,
    listener: TcpListener,
    files: TlsFiles,
    limits: ConnLimits,
    hooks: Arc<H>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let tls = Arc::new(RwLock::new(Arc::new(files.load()?)));
    let ca_pem = Arc::new(RwLock::new(Arc::new(std::fs::read(&files.ca).map_err(
        |e| ServeError::Tls(format!("cannot read {}: {e}", files.ca.display())),
    )?)));
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "listening (TLS 1.3, client certificates {:?})", files.client_auth);
    }
    if !limits.reload.is_zero() {
        let (tls, ca_pem, files) = (tls.clone(), ca_pem.clone(), files.clone());
        tokio::spawn(async move {
            let mut seen = files.stamp();
            loop {
                tokio::time::sleep(limits.reload).await;
                let now = files.stamp();
                if now == seen {
                    continue;
                }
                seen = now;
                match (files.load(), std::fs::read(&files.ca)) {
                    (Ok(cfg), Ok(ca)) => {
                        *tls.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(cfg);
                        *ca_pem.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(ca);
                        tracing::info!("TLS certificate, key or CA reloaded");
                    }
                    (Err(e), _) => {
                        tracing::error!(error = %e, "TLS files changed but do not load; keeping the previous ones")
                    }
                    (_, Err(e)) => {
                        tracing::error!(error = %e, "CA file changed but cannot be read; keeping the previous one")
                    }
                }
            }
        });
    }

    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let (tcp, remote) = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = TlsAcceptor::from(tls.read().unwrap_or_else(|p| p.into_inner()).clone());
        let ca = ca_pem.read().unwrap_or_else(|p| p.into_inner()).clone();
        let router = router.clone();
        let hooks = hooks.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _permit = permit;
            let stream = match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp))
                .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    let reason = handshake_reason(&e);
                    tracing::warn!(%remote, reason, "TLS handshake refused");
                    hooks.refused(remote, reason).await;
                    return;
                }
                Err(_) => {
                    tracing::warn!(%remote, reason = "handshake_timeout", "TLS handshake refused");
                    hooks.refused(remote, "handshake_timeout").await;
                    return;
                }
            };
            let (peer, not_after) = match stream.get_ref().1.peer_certificates() {
                None | Some([]) => (Peer(None), None),
                Some(chain) => match peer_identity(chain, &ca) {
                    // Fails closed: a leaf rustls accepted always parses.
                    Ok(id) => (
                        Peer(Some(id)),
                        Some(leaf_not_after(chain).unwrap_or(i64::MIN)),
                    ),
                    Err(reason) => {
                        tracing::warn!(%remote, reason, "peer identity refused");
                        hooks.refused(remote, reason).await;
                        return;
                    }
                },
            };
            let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(peer.clone());
                req.extensions_mut()
                    .insert(axum::extract::ConnectInfo(remote));
                let router = router.clone();
                let hooks = hooks.clone();
                async move {
                    // The handshake checked the certificate once; a kept-alive connection
                    // must not outlive it (login certificates last minutes).
                    if not_after.is_some_and(|t| unix_now() > t) {
                        tracing::warn!(%remote, reason = "expired_certificate", "request refused");
                        hooks.refused(remote, "expired_certificate").await;
                        return Ok(expired_response());
                    }
                    // A request (body included) gets a bounded time, so a client that
                    // trickles its body cannot hold a connection slot for long.
                    match tokio::time::timeout(limits.request_timeout, router.oneshot(req)).await {
                        Ok(answer) => answer,
                        Err(_) => {
                            tracing::warn!(%remote, reason = "request_timeout", "request refused");
                            Ok(json_refusal(408, Reason::RequestTimeout))
                        }
                    }
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(30))
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), svc);
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    tracing::info!("shutting down: no new connections, draining in-flight requests");
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("all connections drained"),
        _ = tokio::time::sleep(DRAIN) => tracing::warn!("drain deadline passed; closing remaining connections"),
    }
    Ok(())
}

/// The `notAfter` of a chain's leaf, Unix seconds.
fn leaf_not_after(chain: &[rustls::pki_types::CertificateDer<'_>]) -> Option<i64> {
    let (_, leaf) = x509_parser::parse_x509_certificate(chain.first()?).ok()?;
    Some(leaf.validity().not_after.timestamp())
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(i64::MAX)
}

/// 401 `certificate_expired`, and the connection closes.
fn expired_response() -> axum::response::Response {
    json_refusal(401, Reason::CertificateExpired)
}

/// A refusal body of `reason` that also closes the connection.
fn json_refusal(status: u16, reason: Reason) -> axum::response::Response {
    use axum::http::{header, HeaderValue, StatusCode};
    let body = serde_json::to_vec(&Refusal::new(status, reason)).unwrap_or_default();
    let mut resp = axum::response::Response::new(axum::body::Body::from(body));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

/// Structured logs to stderr: `format` is `text` or `json`, `level` a tracing filter.
pub fn init_logging(format: &str, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}
