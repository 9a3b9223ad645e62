//! Serving the API over mutual TLS: the accept loop, the TLS handshake with the
//! peer's identity handed to the handlers, certificate reloading, the optional
//! loopback health port, and graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::api::{AppState, Peer};
use crate::store::AuditEvent;

/// How long in-flight requests get to finish after a shutdown signal.
const DRAIN: Duration = Duration::from_secs(20);

/// Server start-up failures.
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

/// The three TLS files and the configuration built from them.
pub struct TlsFiles {
    /// CA PEM path.
    pub ca: PathBuf,
    /// Certificate chain PEM path.
    pub cert: PathBuf,
    /// Private key PEM path.
    pub key: PathBuf,
}

impl TlsFiles {
    /// Reads the files and builds a TLS 1.3, client-certificate-required configuration.
    pub fn load(&self) -> Result<ServerConfig, ServeError> {
        let read = |p: &PathBuf| {
            std::fs::read(p)
                .map_err(|e| ServeError::Tls(format!("cannot read {}: {e}", p.display())))
        };
        let ca = read(&self.ca)?;
        let cert = read(&self.cert)?;
        let key = zeroize::Zeroizing::new(read(&self.key)?);
        let mut cfg = certs::tls::server_config(&ca, &cert, &key)
            .map_err(|e| ServeError::Tls(e.to_string()))?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(cfg)
    }

    fn stamp(&self) -> Vec<Option<SystemTime>> {
        [&self.ca, &self.cert, &self.key]
            .iter()
            .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
            .collect()
    }
}

/// Why a handshake was refused, as an audit and metrics reason.
fn handshake_reason(e: &std::io::Error) -> &'static str {
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

/// Runs the service until `shutdown` resolves, then drains in-flight requests.
pub async fn serve(
    state: Arc<AppState>,
    listen: SocketAddr,
    health_listen: Option<SocketAddr>,
    files: TlsFiles,
    reload: Duration,
    limits: &crate::config::Limits,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let tls = Arc::new(RwLock::new(Arc::new(files.load()?)));
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: listen,
            source,
        })?;
    let health = match health_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|source| ServeError::Bind { addr, source })?,
        ),
        None => None,
    };
    tracing::info!(addr = %listener.local_addr().unwrap_or(listen), custodian = %state.me, "listening (mutual TLS 1.3)");

    if !reload.is_zero() {
        let tls = tls.clone();
        tokio::spawn(async move {
            let mut seen = files.stamp();
            loop {
                tokio::time::sleep(reload).await;
                let now = files.stamp();
                if now == seen {
                    continue;
                }
                seen = now;
                match files.load() {
                    Ok(cfg) => {
                        *tls.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(cfg);
                        tracing::info!("TLS certificate, key or CA reloaded");
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "TLS files changed but do not load; keeping the previous ones")
                    }
                }
            }
        });
    }

    let router = crate::api::router(state.clone(), limits.max_body_bytes);
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let handshake_timeout = Duration::from_millis(limits.handshake_timeout_ms);

    if let Some(h) = health {
        let app = crate::api::health_router(state.clone());
        tracing::info!(addr = %h.local_addr().unwrap_or(listen), "plain health port (loopback)");
        tokio::spawn(async move {
            if let Err(e) = axum::serve(h, app).await {
                tracing::error!(error = %e, "health port stopped");
            }
        });
    }

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
        let state = state.clone();
        let router = router.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _permit = permit;
            let stream = match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    let reason = handshake_reason(&e);
                    refuse_handshake(&state, remote, reason).await;
                    return;
                }
                Err(_) => {
                    refuse_handshake(&state, remote, "handshake_timeout").await;
                    return;
                }
            };
            let peer = match certs::tls::peer_spiffe_id(stream.get_ref().1) {
                Ok(id) => Peer(id),
                Err(_) => {
                    refuse_handshake(&state, remote, "no_spiffe_id").await;
                    return;
                }
            };
            let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(peer.clone());
                router.clone().oneshot(req)
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

async fn refuse_handshake(state: &AppState, remote: SocketAddr, reason: &'static str) {
    tracing::warn!(remote = %remote, reason, "TLS handshake refused");
    state.metrics.handshake_refused(reason);
    if reason == "connection_error" {
        return; // a peer that hung up mid-handshake; counted, not audited
    }
    state
        .journal
        .record(AuditEvent {
            event: "handshake",
            peer: format!("tcp:{}", remote.ip()),
            secret_id: String::new(),
            index: -1,
            outcome: "refused",
            reason: reason.into(),
        })
        .await;
}
