//! Operations: health (also on the loopback plain port) and the manifest-signing key.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use certs::Role;
use svc::Peer;
use wire::enroller::HealthResponse;

use super::{blocking, require, ApiError, Shared};

pub(crate) async fn manifest_key(
    State(s): State<Shared>,
    Extension(peer): Extension<Peer>,
) -> Result<Response, ApiError> {
    require(
        &s,
        &peer,
        &[Role::User, Role::Admin, Role::Custodian, Role::Enroller],
    )?;
    Ok(crate::token::public_key_pem(&s.token.info().manifest_key).into_response())
}

pub(crate) async fn health(State(s): State<Shared>) -> Response {
    let token = s.token.clone();
    let ok = blocking(move || token.health())
        .await
        .map(|r| r.is_ok())
        .unwrap_or(false);
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = HealthResponse {
        status: if ok { "ok" } else { "degraded" }.into(),
        token: Some(if ok { "ok" } else { "unavailable" }.into()),
        version: Some(env!("CARGO_PKG_VERSION").into()),
    };
    (status, Json(body)).into_response()
}
