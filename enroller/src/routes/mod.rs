//! The enroller's HTTP API, one module per capability. Registration and login are the
//! only calls a client may make without a certificate; everything else is authorized by
//! the verified peer's SPIFFE id. The requests, answers and refusal reasons are
//! [`wire::enroller`]'s and [`wire::Reason`]'s; the table of routes is in [`wire::enroller`].
//!
//! | module | capability |
//! |---|---|
//! | [`accounts`] | registration, login certificates, invitations, the user list, unlock |
//! | [`enrollment`] | enroll (key, split, distribute, manifest), the owner's enrollments |
//! | [`ops`] | health and the manifest-signing key |
//!
//! Scheduled work (share checks, refresh) gets a `jobs` module beside these.
//! The distribution of shards to the custodians is [`crate::distribute`], not a handler.

pub mod accounts;
pub mod enrollment;
pub mod ops;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use certs::{Role, SpiffeId};
use mtls::Client;
use shard::{CustodianId, Threshold};
use svc::Peer;
use wire::enroller::{
    Enroll, Enrollment, Enrollments, Health, Invite, Login, ManifestKey, Refresh, Register,
    Reshare, Unlock, Users,
};
use wire::{CustodianFailure, Reason, Refusal, Request as _};

use crate::token::Token;
use crate::users::Db;

pub(crate) const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
/// Everything the handlers share.
pub struct AppState {
    /// Trust domain.
    pub trust_domain: certs::TrustDomain,
    /// The token.
    pub token: Arc<Token>,
    /// The database.
    pub db: Arc<Db>,
    /// User CA certificate PEM (sent with every login certificate as its chain).
    pub user_ca_pem: String,
    /// Threshold.
    pub threshold: Threshold,
    /// The custodians in index order, with clients that present the enroller's certificate.
    pub custodians: Vec<(CustodianId, Arc<Client>)>,
    /// The same custodians as their peers reach them, for a DKG's peer channel.
    pub peers: Vec<wire::dkg::DkgPeer>,
    /// Every custodian of the configuration, standby ones too: a secret's operations go
    /// to the ones its manifest names.
    pub known: Vec<crate::set::Known>,
    /// Login certificate validity.
    pub login_validity: Duration,
    /// Invitation lifetime, seconds.
    pub invitation_ttl: i64,
    /// Cap of the per-user back-off, seconds.
    pub backoff_max: i64,
}

/// The handlers' shared state.
pub type Shared = Arc<AppState>;

/// A refusal.
#[derive(Debug)]
pub struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) reason: Reason,
    pub(crate) custodians: Option<Vec<CustodianFailure>>,
    pub(crate) retry_after: Option<i64>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, reason: Reason) -> Self {
        ApiError {
            status,
            reason,
            custodians: None,
            retry_after: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = Refusal::new(self.status.as_u16(), self.reason);
        body.custodians = self.custodians;
        let mut resp = (self.status, Json(body)).into_response();
        if let Some(s) = self.retry_after {
            if let Ok(v) = axum::http::HeaderValue::from_str(&s.max(1).to_string()) {
                resp.headers_mut()
                    .insert(axum::http::header::RETRY_AFTER, v);
            }
        }
        resp
    }
}

/// An internal failure of the step `what`: logged with its cause, answered 500 with the
/// step's reason only.
pub(crate) fn internal(what: Reason, e: impl std::fmt::Display) -> ApiError {
    let step = what.as_str().replace('_', " ");
    tracing::error!(error = %e, "{step} failed");
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, what)
}

pub(crate) fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The router.
pub fn router(state: Shared, max_body: usize) -> Router {
    Router::new()
        .route(Register::ROUTE, post(accounts::register))
        .route(Login::ROUTE, post(accounts::login))
        .route(Invite::ROUTE, post(accounts::invite))
        .route(Users::ROUTE, get(accounts::users))
        .route(Unlock::ROUTE, post(accounts::unlock))
        .route(Enroll::ROUTE, post(enrollment::enroll))
        .route(Enrollments::ROUTE, get(enrollment::enrollments))
        .route(Enrollment::ROUTE, get(enrollment::enrollment))
        .route(Refresh::ROUTE, post(enrollment::refresh))
        .route(Reshare::ROUTE, post(enrollment::reshare))
        .route(ManifestKey::ROUTE, get(ops::manifest_key))
        .route(Health::ROUTE, get(ops::health))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, Reason::NoSuchRoute) })
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

/// The router of the optional loopback plain-HTTP health port: `GET /health` only.
pub fn health_router(state: Shared) -> Router {
    Router::new()
        .route(wire::enroller::PLAIN_HEALTH_PATH, get(ops::health))
        .with_state(state)
}

/// The peer's identity if it has one of `roles` in our trust domain.
pub(crate) fn require(s: &AppState, peer: &Peer, roles: &[Role]) -> Result<SpiffeId, ApiError> {
    let Some(id) = &peer.0 else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            Reason::ClientCertificateRequired,
        ));
    };
    if id.trust_domain() != &s.trust_domain {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            Reason::WrongTrustDomain,
        ));
    }
    if !roles.contains(&id.role()) {
        return Err(ApiError::new(StatusCode::FORBIDDEN, Reason::RoleNotAllowed));
    }
    Ok(id.clone())
}

pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| internal(Reason::Worker, e))
}

/// A JSON body, or why axum rejected it.
pub(crate) type JsonBody<T> = Result<Json<T>, axum::extract::rejection::JsonRejection>;

pub(crate) fn body<T>(b: JsonBody<T>) -> Result<T, ApiError> {
    b.map(|Json(v)| v).map_err(|e| match e {
        axum::extract::rejection::JsonRejection::BytesRejection(_) => {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, Reason::BodyTooLarge)
        }
        _ => ApiError::new(StatusCode::BAD_REQUEST, Reason::InvalidBody),
    })
}
