//! Serving the custodian: the mutual-TLS listener runs on the shared `svc` plumbing
//! (accept loop, TLS 1.3 with required client certificates, the peer's identity
//! handed to the handlers, certificate reloading, drain on shutdown); here refused
//! handshakes are audited and counted, and the optional loopback plain-HTTP health
//! port is served.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
pub use svc::{ServeError, TlsFiles};

use crate::routes::{AppState, Peer};
use crate::store::AuditEvent;
use wire::Refusal;

struct AuditHooks(Arc<AppState>);

impl svc::Hooks for AuditHooks {
    async fn refused(&self, remote: SocketAddr, reason: svc::RefusalReason) {
        refuse_handshake(&self.0, remote, reason).await;
    }
}

/// Hands the handlers the verified identity as [`Peer`]. The listener requires client
/// certificates, so an anonymous connection cannot get here; refuse it anyway.
async fn identity(mut req: Request, next: Next) -> Response {
    let id = req
        .extensions()
        .get::<svc::Peer>()
        .and_then(|p| p.0.clone());
    match id {
        Some(id) => {
            req.extensions_mut().insert(Peer(id));
            next.run(req).await
        }
        None => (
            StatusCode::UNAUTHORIZED,
            axum::Json(Refusal::new(401, wire::Reason::ClientCertificateRequired)),
        )
            .into_response(),
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
    let listener = svc::bind(listen).await?;
    if let Some(addr) = health_listen {
        svc::serve_plain_health(addr, crate::routes::health_router(state.clone())).await?;
    }
    tracing::info!(custodian = %state.me, "serving");
    let router = crate::routes::router(state.clone(), limits.max_body_bytes)
        .layer(middleware::from_fn(identity));
    let conn = svc::ConnLimits {
        max_connections: limits.max_connections,
        handshake_timeout: Duration::from_millis(limits.handshake_timeout_ms),
        reload,
        request_timeout: Duration::from_millis(limits.request_timeout_ms.max(100)),
    };
    svc::serve(
        router,
        listener,
        files,
        conn,
        Arc::new(AuditHooks(state)),
        shutdown,
    )
    .await
}

async fn refuse_handshake(state: &AppState, remote: SocketAddr, reason: &'static str) {
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
            detail: String::new(),
        })
        .await;
}
