//! Operations: health (any peer of the trust domain, and the loopback plain port) and
//! Prometheus metrics (admin, and the loopback plain port).

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use certs::Role;
use wire::custodian::HealthResponse;
use wire::Reason;

use super::{device_error, refuse, require, ApiError, AppState, Peer, Shared};

/// Device and database checks, shared by both health routes.
pub async fn check_health(s: &AppState) -> (StatusCode, HealthResponse) {
    let sealer = s.sealer.clone();
    let store = s.store.clone();
    let (device, info, database) = tokio::task::spawn_blocking(move || {
        let device = match sealer.health() {
            Ok(()) => "ok".to_owned(),
            Err(e) => device_error(&e).reason.as_str().to_owned(),
        };
        let info = sealer.describe().ok().map(|d| {
            format!(
                "{} {} key {} v{} {}",
                d.backend, d.device, d.key_label, d.key_version, d.mechanism
            )
        });
        let database = match store.writable() {
            Ok(()) => "ok".to_owned(),
            Err(_) => "unwritable".to_owned(),
        };
        (device, info, database)
    })
    .await
    .unwrap_or_else(|_| ("internal".into(), None, "internal".into()));
    let ok = device == "ok" && database == "ok";
    let body = HealthResponse {
        status: if ok { "ok" } else { "degraded" }.into(),
        custodian: s.me.to_string(),
        version: env!("CARGO_PKG_VERSION").into(),
        device,
        database,
        device_info: info,
    };
    let status = match ok {
        true => StatusCode::OK,
        false => StatusCode::SERVICE_UNAVAILABLE,
    };
    (status, body)
}

pub(crate) async fn health(
    State(s): State<Shared>,
    Extension(peer): Extension<Peer>,
) -> Result<Response, ApiError> {
    if peer.0.trust_domain() != &s.trust_domain {
        let err = ApiError::new(StatusCode::FORBIDDEN, Reason::WrongTrustDomain);
        return Err(refuse(&s, &peer, "health", "", -1, err).await);
    }
    let (status, body) = check_health(&s).await;
    Ok((status, Json(body)).into_response())
}

pub(crate) async fn plain_health(State(s): State<Shared>) -> Response {
    let (status, body) = check_health(&s).await;
    (status, Json(body)).into_response()
}

async fn render_metrics(s: &AppState) -> Response {
    let store = s.store.clone();
    let count = tokio::task::spawn_blocking(move || store.count().ok())
        .await
        .ok()
        .flatten();
    let mut text = s.metrics.render(count);
    text.push_str(&format!(
        "# TYPE custodian_signing_sessions_open gauge\ncustodian_signing_sessions_open {}\n\
         # TYPE custodian_dkgs_open gauge\ncustodian_dkgs_open {}\n\
         # TYPE custodian_reshares_open gauge\ncustodian_reshares_open {}\n",
        s.sessions.open_count(),
        s.dkgs.open_count(),
        s.reshares.open_count()
    ));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

pub(crate) async fn metrics(
    State(s): State<Shared>,
    Extension(peer): Extension<Peer>,
) -> Result<Response, ApiError> {
    if let Err(e) = require(&s, &peer, &[Role::Admin]) {
        return Err(refuse(&s, &peer, "metrics", "", -1, e).await);
    }
    Ok(render_metrics(&s).await)
}

pub(crate) async fn plain_metrics(State(s): State<Shared>) -> Response {
    render_metrics(&s).await
}
