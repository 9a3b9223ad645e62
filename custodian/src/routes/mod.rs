//! The custodian's HTTP API behind mutual TLS, one module per capability. Every handler
//! receives the verified peer's SPIFFE id from the connection (never from a header) and
//! authorizes by its role; the requests and answers are [`wire::custodian`]'s.
//!
//! | module | capability | routes |
//! |---|---|---|
//! | [`shards`] | deposit, release, delete, list | `/v1/shards`, `/v1/shards/{id}` |
//! | [`epochs`] | share checks without recovery, a refresh's commit | `/v1/shards/{id}/verify`, `/v1/shards/{id}/commit` |
//! | [`signing`] | threshold signing rounds | `/v1/keys/{id}/commit`, `/v1/keys/{id}/sign` |
//! | [`dkg`] | keys born distributed, coordinated by the enroller | `/v1/dkg/{id}/round1`, `/round2`, `/finish` |
//! | [`reshare`] | a key moved to a new set of holders, coordinated by the enroller | `/v1/reshare/{id}/open`, `/deal`, `/finish` |
//! | [`peer`] | the custodian-to-custodian channel | `/v1/peer/dkg/{id}`, `/v1/peer/reshare/{id}` |
//! | [`ops`] | health and metrics | `/v1/health`, `/v1/metrics`, the plain health port |
//!
//! The next capabilities get modules of their own beside these, or grow [`epochs`]
//! (refresh, reshare, repair; their sub-shares take [`peer`] too): `gate` (the release
//! gate).

pub mod dkg;
pub mod epochs;
pub mod ops;
pub mod peer;
pub mod reshare;
pub mod shards;
pub mod signing;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use certs::{Role, SpiffeId};
use hsm::{SealContext, Sealer};
use shard::SecretId;

use crate::journal::Journal;
use crate::metrics::Metrics;
use crate::ratelimit::RateLimiter;
use crate::store::{AuditEvent, Store};
use wire::custodian::{
    Commit, CommitEpoch, Deposit, Health, Metrics as MetricsRequest, Release, Sign, Verify,
};
use wire::dkg::{DkgFinish, DkgRound1, DkgRound2, PeerDkg};
use wire::reshare::{PeerReshare, ReshareDeal, ReshareFinish, ReshareOpen};
use wire::{Reason, Refusal, Request as _};

pub(crate) const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The verified identity of the connection's peer, set by the TLS layer.
#[derive(Debug, Clone)]
pub struct Peer(pub SpiffeId);

/// Everything the handlers share.
pub struct AppState {
    /// This custodian's name.
    pub name: shard::CustodianId,
    /// This custodian's SPIFFE id.
    pub me: SpiffeId,
    /// The trust domain peers must belong to.
    pub trust_domain: certs::TrustDomain,
    /// The sealing device.
    pub sealer: Arc<dyn Sealer>,
    /// The database.
    pub store: Arc<Store>,
    /// Audit group commit.
    pub journal: Journal,
    /// Per-peer release limits.
    pub limiter: RateLimiter,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Open threshold-signing sessions (memory only).
    pub sessions: crate::sessions::Sessions,
    /// DKGs under way (memory only).
    pub dkgs: crate::dkg::Dkgs,
    /// Reshares under way (memory only).
    pub reshares: crate::reshare::Reshares,
    /// This custodian's TLS files: the peer channel presents the same certificate.
    pub tls: svc::TlsFiles,
}

/// The handlers' shared state.
pub type Shared = Arc<AppState>;

/// A refusal: status, class and reason; rendered as the JSON error body.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    reason: Reason,
    /// Peers the refusal names (a DKG's cheater).
    named: Option<Vec<wire::CustodianFailure>>,
}

impl ApiError {
    fn new(status: StatusCode, reason: Reason) -> Self {
        ApiError {
            status,
            reason,
            named: None,
        }
    }

    /// A malformed request (400).
    fn bad(reason: Reason) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, reason)
    }

    /// A failure of ours (500).
    fn ours(reason: Reason) -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, reason)
    }
}

/// Runs `work` on the blocking pool. A store error is logged as `"{what} failed"` with
/// the secret id (empty when none) and refused as [`Reason::Storage`]; a task that died is
/// refused as [`Reason::Internal`].
pub(crate) async fn blocking<T, F>(what: &'static str, secret: &str, work: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, crate::store::StoreError> + Send + 'static,
{
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            tracing::error!(error = %e, op = what, secret_id = secret, "{what} failed");
            Err(ApiError::ours(Reason::Storage))
        }
        Err(_) => Err(ApiError::ours(Reason::Internal)),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = Refusal::new(self.status.as_u16(), self.reason);
        body.custodians = self.named;
        (self.status, Json(body)).into_response()
    }
}

/// Builds the router for the mutual-TLS listener.
pub fn router(state: Shared, max_body: usize) -> Router {
    Router::new()
        .route(Deposit::ROUTE, put(shards::deposit).get(shards::list))
        .route(Release::ROUTE, get(shards::release).delete(shards::delete))
        .route(Verify::ROUTE, post(epochs::verify))
        .route(CommitEpoch::ROUTE, post(epochs::commit_epoch))
        .route(Commit::ROUTE, post(signing::commit))
        .route(Sign::ROUTE, post(signing::sign))
        .route(DkgRound1::ROUTE, post(dkg::round1))
        .route(DkgRound2::ROUTE, post(dkg::round2))
        .route(DkgFinish::ROUTE, post(dkg::finish))
        .route(PeerDkg::ROUTE, put(peer::take_round2))
        .route(ReshareOpen::ROUTE, post(reshare::open))
        .route(ReshareDeal::ROUTE, post(reshare::deal))
        .route(ReshareFinish::ROUTE, post(reshare::finish))
        .route(PeerReshare::ROUTE, put(peer::take_sub_share))
        .route(Health::ROUTE, get(ops::health))
        .route(MetricsRequest::ROUTE, get(ops::metrics))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, Reason::NoSuchRoute) })
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

/// Builds the router for the optional loopback plain-HTTP health port.
pub fn health_router(state: Shared) -> Router {
    Router::new()
        .route("/health", get(ops::plain_health))
        .route("/metrics", get(ops::plain_metrics))
        .with_state(state)
}

async fn observe(State(s): State<Shared>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = match (req.method().as_str(), req.uri().path()) {
        ("PUT", "/v1/shards") => "deposit",
        ("GET", "/v1/shards") => "list",
        ("GET", p) if p.starts_with("/v1/shards/") => "release",
        ("POST", p) if p.starts_with("/v1/shards/") && p.ends_with("/verify") => "verify",
        ("POST", p) if p.starts_with("/v1/shards/") && p.ends_with("/commit") => "commit_epoch",
        ("DELETE", _) => "delete",
        ("POST", p) if p.starts_with("/v1/keys/") && p.ends_with("/commit") => "commit",
        ("POST", p) if p.starts_with("/v1/keys/") && p.ends_with("/sign") => "sign",
        ("POST", p) if p.starts_with("/v1/dkg/") && p.ends_with("/round1") => "dkg_round1",
        ("POST", p) if p.starts_with("/v1/dkg/") && p.ends_with("/round2") => "dkg_round2",
        ("POST", p) if p.starts_with("/v1/dkg/") && p.ends_with("/finish") => "dkg_finish",
        ("PUT", p) if p.starts_with("/v1/peer/dkg/") => "peer_dkg",
        (_, "/v1/health") => "health",
        (_, "/v1/metrics") => "metrics",
        _ => "other",
    };
    let mut resp = next.run(req).await;
    // Rejections produced by axum itself (body too large, bad JSON) become JSON errors too.
    if resp.status() == StatusCode::PAYLOAD_TOO_LARGE
        && resp
            .headers()
            .get(header::CONTENT_TYPE)
            .is_none_or(|v| v != "application/json")
    {
        resp = ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, Reason::BodyTooLarge).into_response();
    }
    s.metrics
        .observe(route, resp.status().as_u16(), started.elapsed());
    resp
}

pub(crate) fn event(
    peer: &Peer,
    what: &'static str,
    secret: &str,
    index: i64,
    outcome: &'static str,
    reason: &str,
) -> AuditEvent {
    AuditEvent {
        event: what,
        peer: peer.0.to_string(),
        secret_id: secret.to_owned(),
        index,
        outcome,
        reason: reason.to_owned(),
        detail: String::new(),
    }
}

/// Refuses, audits and logs in one step.
pub(crate) async fn refuse(
    s: &AppState,
    peer: &Peer,
    what: &'static str,
    secret: &str,
    index: i64,
    err: ApiError,
) -> ApiError {
    refuse_with(s, peer, what, secret, index, String::new(), err).await
}

/// [`refuse`], with the audit row's detail (a signing session's id).
pub(crate) async fn refuse_with(
    s: &AppState,
    peer: &Peer,
    what: &'static str,
    secret: &str,
    index: i64,
    detail: String,
    err: ApiError,
) -> ApiError {
    tracing::warn!(peer = %peer.0, op = what, secret_id = secret, reason = err.reason.as_str(), status = err.status.as_u16(), "refused");
    let mut row = event(peer, what, secret, index, "refused", err.reason.as_str());
    row.detail = detail;
    s.journal.record(row).await;
    err
}

/// A JSON body, or its refusal: 413 for one over the body limit (which surfaces here as a
/// JSON rejection, not as a response the middleware could rewrite), 400 for any other.
pub(crate) fn json_body<T>(
    body: Result<Json<T>, axum::extract::rejection::JsonRejection>,
) -> Result<T, ApiError> {
    body.map(|Json(req)| req).map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, Reason::BodyTooLarge)
        } else {
            ApiError::bad(Reason::InvalidBody)
        }
    })
}

/// The refusal of a step that does not fit the DKG's state.
pub(crate) fn step_error(step: crate::dkg::Step) -> ApiError {
    let (status, reason) = match step {
        crate::dkg::Step::Unknown => (StatusCode::NOT_FOUND, Reason::DkgUnknown),
        crate::dkg::Step::Exists => (StatusCode::CONFLICT, Reason::DkgExists),
        crate::dkg::Step::OutOfOrder => (StatusCode::CONFLICT, Reason::DkgOutOfOrder),
        crate::dkg::Step::Full => (StatusCode::SERVICE_UNAVAILABLE, Reason::TooManyDkgs),
        crate::dkg::Step::Incomplete => (StatusCode::CONFLICT, Reason::DkgIncomplete),
        crate::dkg::Step::TranscriptMismatch => {
            (StatusCode::CONFLICT, Reason::DkgTranscriptMismatch)
        }
        crate::dkg::Step::Conflict => (StatusCode::CONFLICT, Reason::DkgPackageConflict),
    };
    ApiError::new(status, reason)
}

/// The checks a route on one key starts with, each refusal audited as `op`: the key id in
/// the path, the caller's role (one of `roles`), the JSON body, and `then` on the body.
pub(crate) async fn keyed_body<T, U>(
    s: &AppState,
    peer: &Peer,
    op: &'static str,
    raw_id: &str,
    roles: &[Role],
    body: Result<Json<T>, axum::extract::rejection::JsonRejection>,
    then: impl FnOnce(T) -> Result<U, ApiError>,
) -> Result<(SecretId, String, U), ApiError> {
    let id = match parse_id(raw_id) {
        Ok(id) => id,
        Err(e) => return Err(refuse(s, peer, op, "", -1, e).await),
    };
    let sid = id.to_string();
    match require(s, peer, roles)
        .and_then(|()| json_body(body))
        .and_then(then)
    {
        Ok(checked) => Ok((id, sid, checked)),
        Err(e) => Err(refuse(s, peer, op, &sid, -1, e).await),
    }
}

pub(crate) fn require(s: &AppState, peer: &Peer, roles: &[Role]) -> Result<(), ApiError> {
    if peer.0.trust_domain() != &s.trust_domain {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            Reason::WrongTrustDomain,
        ));
    }
    if !roles.contains(&peer.0.role()) {
        return Err(ApiError::new(StatusCode::FORBIDDEN, Reason::RoleNotAllowed));
    }
    Ok(())
}

pub(crate) fn parse_id(raw: &str) -> Result<SecretId, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::bad(Reason::InvalidSecretId))
}

pub(crate) fn ctx(s: &AppState, env_id: SecretId, index: u8, epoch: u32) -> SealContext {
    SealContext {
        custodian_id: s.name.as_str().to_owned(),
        secret_id: env_id,
        index,
        epoch,
    }
}

pub(crate) fn device_error(e: &hsm::Error) -> ApiError {
    let reason = match e {
        hsm::Error::DeviceUnavailable(_) | hsm::Error::TokenNotFound(_) => {
            return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, Reason::DeviceUnavailable)
        }
        hsm::Error::Integrity => Reason::SealedBlobIntegrity,
        hsm::Error::ContextMismatch => Reason::SealedBlobContext,
        hsm::Error::ForeignDevice => Reason::SealedBlobForeignDevice,
        hsm::Error::Malformed(_) => Reason::SealedBlobMalformed,
        hsm::Error::UnknownKeyVersion(_) => Reason::SealedBlobKeyVersion,
        _ => Reason::DeviceError,
    };
    ApiError::ours(reason)
}
