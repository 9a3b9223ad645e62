//! The HTTP API behind mutual TLS. Every handler receives the verified peer's SPIFFE
//! id from the connection (never from a header) and authorizes by its role.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Extension, Json, Router};
use base64::Engine;
use certs::{Role, SpiffeId};
use hsm::{SealContext, Sealer};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use shard::{SecretId, ShardEnvelope};

use crate::journal::Journal;
use crate::metrics::Metrics;
use crate::ratelimit::RateLimiter;
use crate::store::{AuditEvent, DepositOutcome, NewShard, Store};
use crate::wire::*;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

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
}

type Shared = Arc<AppState>;

/// A refusal: status, class and reason; rendered as the JSON error body.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    reason: &'static str,
}

impl ApiError {
    fn new(status: StatusCode, reason: &'static str) -> Self {
        ApiError { status, reason }
    }
}

fn class(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "bad_request",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        409 => "conflict",
        413 => "payload_too_large",
        429 => "rate_limited",
        503 => "unavailable",
        _ => "internal",
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: class(self.status).into(),
            reason: self.reason.into(),
        };
        (self.status, Json(body)).into_response()
    }
}

/// Builds the router for the mutual-TLS listener.
pub fn router(state: Shared, max_body: usize) -> Router {
    Router::new()
        .route("/v1/shards", put(deposit).get(list))
        .route("/v1/shards/{id}", get(release).delete(delete))
        .route("/v1/health", get(health))
        .route("/v1/metrics", get(metrics))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no_such_route") })
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

/// Builds the router for the optional loopback plain-HTTP health port.
pub fn health_router(state: Shared) -> Router {
    Router::new()
        .route("/health", get(plain_health))
        .route("/metrics", get(plain_metrics))
        .with_state(state)
}

async fn observe(State(s): State<Shared>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = match (req.method().as_str(), req.uri().path()) {
        ("PUT", "/v1/shards") => "deposit",
        ("GET", "/v1/shards") => "list",
        ("GET", p) if p.starts_with("/v1/shards/") => "release",
        ("DELETE", _) => "delete",
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
        resp = ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large").into_response();
    }
    s.metrics
        .observe(route, resp.status().as_u16(), started.elapsed());
    resp
}

fn event(
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
    }
}

/// Refuses, audits and logs in one step.
async fn refuse(
    s: &AppState,
    peer: &Peer,
    what: &'static str,
    secret: &str,
    index: i64,
    err: ApiError,
) -> ApiError {
    tracing::warn!(peer = %peer.0, op = what, secret_id = secret, reason = err.reason, status = err.status.as_u16(), "refused");
    s.journal
        .record(event(peer, what, secret, index, "refused", err.reason))
        .await;
    err
}

fn require(s: &AppState, peer: &Peer, roles: &[Role]) -> Result<(), ApiError> {
    if peer.0.trust_domain() != &s.trust_domain {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "wrong_trust_domain"));
    }
    if !roles.contains(&peer.0.role()) {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "role_not_allowed"));
    }
    Ok(())
}

fn parse_id(raw: &str) -> Result<SecretId, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "invalid_secret_id"))
}

fn ctx(s: &AppState, env_id: SecretId, index: u8, epoch: u32) -> SealContext {
    SealContext {
        custodian_id: s.name.as_str().to_owned(),
        secret_id: env_id,
        index,
        epoch,
    }
}

fn device_error(e: &hsm::Error) -> ApiError {
    match e {
        hsm::Error::DeviceUnavailable(_) | hsm::Error::TokenNotFound(_) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "device_unavailable")
        }
        hsm::Error::Integrity => {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "sealed_blob_integrity")
        }
        hsm::Error::ContextMismatch => {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "sealed_blob_context")
        }
        hsm::Error::ForeignDevice => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "sealed_blob_foreign_device",
        ),
        hsm::Error::Malformed(_) => {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "sealed_blob_malformed")
        }
        hsm::Error::UnknownKeyVersion(_) => {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "sealed_blob_key_version")
        }
        _ => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "device_error"),
    }
}

async fn deposit(
    State(s): State<Shared>,
    Extension(peer): Extension<Peer>,
    body: Result<Json<DepositRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    if let Err(e) = require(&s, &peer, &[Role::Enroller]) {
        return Err(refuse(&s, &peer, "deposit", "", -1, e).await);
    }
    let Json(req) = match body {
        Ok(b) => b,
        Err(rejection) => {
            // The body limit surfaces here as a JSON rejection, not as a response
            // the middleware could rewrite: keep its 413.
            let err = if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large")
            } else {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_body")
            };
            return Err(refuse(&s, &peer, "deposit", "", -1, err).await);
        }
    };
    let owner: SpiffeId = match req.owner.parse::<SpiffeId>() {
        Ok(o) if o.role() == Role::User && o.trust_domain() == &s.trust_domain => o,
        _ => {
            return Err(refuse(
                &s,
                &peer,
                "deposit",
                "",
                -1,
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_owner"),
            )
            .await)
        }
    };
    let raw = match B64.decode(req.envelope.as_bytes()) {
        Ok(r) => zeroize::Zeroizing::new(r),
        Err(_) => {
            return Err(refuse(
                &s,
                &peer,
                "deposit",
                "",
                -1,
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_envelope"),
            )
            .await)
        }
    };
    let env = match ShardEnvelope::decode(&raw) {
        Ok(e) => e,
        Err(_) => {
            return Err(refuse(
                &s,
                &peer,
                "deposit",
                "",
                -1,
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_envelope"),
            )
            .await)
        }
    };
    let sid = env.secret_id.to_string();
    let context = ctx(&s, env.secret_id, env.index, env.epoch);
    let sealer = s.sealer.clone();
    let raw_for_seal = raw.clone();
    let sealed = tokio::task::spawn_blocking(move || sealer.seal(&context, &raw_for_seal)).await;
    let blob = match sealed {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            tracing::error!(error = %e, secret_id = %sid, "seal failed");
            return Err(refuse(
                &s,
                &peer,
                "deposit",
                &sid,
                i64::from(env.index),
                device_error(&e),
            )
            .await);
        }
        Err(_) => return Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal")),
    };
    let key_version = hsm::BlobHeader::decode(&blob)
        .map(|(h, _)| h.key_version)
        .unwrap_or(0);
    let row = NewShard {
        secret_id: env.secret_id,
        epoch: env.epoch,
        index: env.index,
        owner: owner.to_string(),
        blob,
        digest: Sha256::digest(&*raw).into(),
        key_version,
        // Invariant: a decoded envelope is at most MAX_ENVELOPE_LEN bytes.
        size: raw.len() as u32,
    };
    let store = s.store.clone();
    let audit = event(&peer, "deposit", &sid, i64::from(env.index), "ok", "");
    let outcome = tokio::task::spawn_blocking(move || store.deposit(&row, audit)).await;
    let resp = |already_stored| DepositResponse {
        secret_id: sid.clone(),
        epoch: env.epoch,
        index: env.index,
        key_version,
        already_stored,
    };
    match outcome {
        Ok(Ok(DepositOutcome::Stored)) => {
            tracing::info!(peer = %peer.0, secret_id = %sid, index = env.index, epoch = env.epoch, "deposit stored");
            Ok((StatusCode::CREATED, Json(resp(false))).into_response())
        }
        Ok(Ok(DepositOutcome::AlreadyStored)) => {
            Ok((StatusCode::OK, Json(resp(true))).into_response())
        }
        Ok(Ok(DepositOutcome::Conflict)) => {
            tracing::warn!(peer = %peer.0, secret_id = %sid, "deposit conflicts with the stored shard");
            Err(ApiError::new(
                StatusCode::CONFLICT,
                "different_shard_stored",
            ))
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, secret_id = %sid, "deposit not stored");
            Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "storage"))
        }
        Err(_) => Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal")),
    }
}

/// What the blocking half of a release found.
enum Lookup {
    /// No shard for this id (and epoch).
    Missing,
    /// A shard of another owner; not unsealed.
    NotOwner,
    /// The owner's shard, and what unsealing it gave.
    Found {
        index: u8,
        epoch: u32,
        unsealed: Result<zeroize::Zeroizing<Vec<u8>>, hsm::Error>,
    },
}

/// Query of release and delete.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EpochQuery {
    epoch: Option<u32>,
}

async fn release(
    State(s): State<Shared>,
    Extension(peer): Extension<Peer>,
    Path(raw_id): Path<String>,
    query: Result<Query<EpochQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let id = match parse_id(&raw_id) {
        Ok(id) => id,
        Err(e) => return Err(refuse(&s, &peer, "release", "", -1, e).await),
    };
    let sid = id.to_string();
    if let Err(e) = require(&s, &peer, &[Role::User]) {
        return Err(refuse(&s, &peer, "release", &sid, -1, e).await);
    }
    let Ok(Query(q)) = query else {
        return Err(refuse(
            &s,
            &peer,
            "release",
            &sid,
            -1,
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_query"),
        )
        .await);
    };
    if let Err(wait) = s.limiter.check(&peer.0.to_string()) {
        let err = refuse(
            &s,
            &peer,
            "release",
            &sid,
            -1,
            ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
        )
        .await;
        let mut resp = err.into_response();
        if let Ok(v) = HeaderValue::from_str(&format!("{}", wait.ceil().max(1.0) as u64)) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return Ok(resp);
    }
    // One trip to the blocking pool for both the lookup and the unseal: under load
    // each trip (two thread hand-offs) cost more than the SQLite read it carried.
    let store = s.store.clone();
    let sealer = s.sealer.clone();
    let custodian_id = s.name.as_str().to_owned();
    let owner = peer.0.to_string();
    let epoch = q.epoch;
    let found = tokio::task::spawn_blocking(move || -> Result<Lookup, crate::store::StoreError> {
        let Some(row) = store.fetch(&id, epoch)? else {
            return Ok(Lookup::Missing);
        };
        // Only the owner's shard is ever unsealed.
        if row.owner != owner {
            return Ok(Lookup::NotOwner);
        }
        let context = SealContext {
            custodian_id,
            secret_id: id,
            index: row.index,
            epoch: row.epoch,
        };
        let unsealed = sealer.unseal(&context, &row.blob);
        Ok(Lookup::Found {
            index: row.index,
            epoch: row.epoch,
            unsealed,
        })
    })
    .await;
    let (index, epoch, unsealed) = match found {
        Ok(Ok(Lookup::Found {
            index,
            epoch,
            unsealed,
        })) => (index, epoch, unsealed),
        // Another user's secret is answered exactly like a missing one, so that ids
        // cannot be probed; the audit row records the difference.
        Ok(Ok(Lookup::NotOwner)) => {
            tracing::warn!(peer = %peer.0, secret_id = %sid, "release refused: not the owner");
            s.journal
                .record(event(&peer, "release", &sid, -1, "refused", "not_owner"))
                .await;
            return Err(ApiError::new(StatusCode::NOT_FOUND, "not_found"));
        }
        Ok(Ok(Lookup::Missing)) => {
            return Err(refuse(
                &s,
                &peer,
                "release",
                &sid,
                -1,
                ApiError::new(StatusCode::NOT_FOUND, "not_found"),
            )
            .await)
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "release lookup failed");
            return Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "storage"));
        }
        Err(_) => return Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal")),
    };
    let envelope = match unsealed {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(error = %e, secret_id = %sid, index, "unseal failed");
            let err = device_error(&e);
            s.journal
                .record(event(
                    &peer,
                    "release",
                    &sid,
                    i64::from(index),
                    "failed",
                    err.reason,
                ))
                .await;
            return Err(err);
        }
    };
    // The sealed context already binds id, index and epoch; decoding once more
    // guarantees only a well-formed envelope ever leaves.
    match ShardEnvelope::decode(&envelope) {
        Ok(env) if env.secret_id == id && env.index == index && env.epoch == epoch => {}
        _ => {
            s.journal
                .record(event(
                    &peer,
                    "release",
                    &sid,
                    i64::from(index),
                    "failed",
                    "stored_envelope_invalid",
                ))
                .await;
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "stored_envelope_invalid",
            ));
        }
    }
    if !s
        .journal
        .record(event(&peer, "release", &sid, i64::from(index), "ok", ""))
        .await
    {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "audit_unavailable",
        ));
    }
    tracing::info!(peer = %peer.0, secret_id = %sid, index, epoch, "released");
    let body = ReleaseResponse {
        secret_id: sid,
        epoch,
        index,
        envelope: B64.encode(&*envelope),
    };
    Ok(Json(body).into_response())
}

async fn delete(
    State(s): State<Shared>,
    Extension(peer): Extension<Peer>,
    Path(raw_id): Path<String>,
    query: Result<Query<EpochQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let id = match parse_id(&raw_id) {
        Ok(id) => id,
        Err(e) => return Err(refuse(&s, &peer, "delete", "", -1, e).await),
    };
    let sid = id.to_string();
    if let Err(e) = require(&s, &peer, &[Role::Enroller, Role::Admin]) {
        return Err(refuse(&s, &peer, "delete", &sid, -1, e).await);
    }
    let Ok(Query(q)) = query else {
        return Err(refuse(
            &s,
            &peer,
            "delete",
            &sid,
            -1,
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_query"),
        )
        .await);
    };
    let store = s.store.clone();
    let audit = event(&peer, "delete", &sid, -1, "ok", "");
    match tokio::task::spawn_blocking(move || store.delete(&id, q.epoch, audit)).await {
        Ok(Ok(0)) => Err(ApiError::new(StatusCode::NOT_FOUND, "not_found")),
        Ok(Ok(n)) => {
            tracing::info!(peer = %peer.0, secret_id = %sid, rows = n, "deleted");
            Ok(Json(DeleteResponse { deleted: n }).into_response())
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "delete failed");
            Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "storage"))
        }
        Err(_) => Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal")),
    }
}

/// Query of the admin listing.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    after: Option<String>,
    limit: Option<u32>,
}

async fn list(
    State(s): State<Shared>,
    Extension(peer): Extension<Peer>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    if let Err(e) = require(&s, &peer, &[Role::Admin]) {
        return Err(refuse(&s, &peer, "list", "", -1, e).await);
    }
    let Ok(Query(q)) = query else {
        return Err(refuse(
            &s,
            &peer,
            "list",
            "",
            -1,
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_query"),
        )
        .await);
    };
    let after = match q.after.as_deref().map(parse_id).transpose() {
        Ok(a) => a,
        Err(e) => return Err(refuse(&s, &peer, "list", "", -1, e).await),
    };
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let store = s.store.clone();
    let rows = match tokio::task::spawn_blocking(move || store.list(after.as_ref(), limit)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "list failed");
            return Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "storage"));
        }
        Err(_) => return Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal")),
    };
    let next_after = (rows.len() == limit as usize)
        .then(|| rows.last().map(|r| r.secret_id.clone()))
        .flatten();
    let shards = rows
        .into_iter()
        .map(|r| ShardInfo {
            secret_id: r.secret_id,
            epoch: r.epoch,
            index: r.index,
            owner: r.owner,
            size: r.size,
            sealed_size: r.sealed_size,
            key_version: r.key_version,
            created_at: r.created_at,
        })
        .collect();
    s.journal
        .record(event(&peer, "list", "", -1, "ok", ""))
        .await;
    Ok(Json(ListResponse { shards, next_after }).into_response())
}

/// Device and database checks, shared by both health routes.
pub async fn check_health(s: &AppState) -> (StatusCode, HealthResponse) {
    let sealer = s.sealer.clone();
    let store = s.store.clone();
    let (device, info, database) = tokio::task::spawn_blocking(move || {
        let device = match sealer.health() {
            Ok(()) => "ok".to_owned(),
            Err(e) => device_error(&e).reason.to_owned(),
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
    (
        if ok {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        body,
    )
}

async fn health(
    State(s): State<Shared>,
    Extension(peer): Extension<Peer>,
) -> Result<Response, ApiError> {
    if peer.0.trust_domain() != &s.trust_domain {
        let err = ApiError::new(StatusCode::FORBIDDEN, "wrong_trust_domain");
        return Err(refuse(&s, &peer, "health", "", -1, err).await);
    }
    let (status, body) = check_health(&s).await;
    Ok((status, Json(body)).into_response())
}

async fn plain_health(State(s): State<Shared>) -> Response {
    let (status, body) = check_health(&s).await;
    (status, Json(body)).into_response()
}

async fn render_metrics(s: &AppState) -> Response {
    let store = s.store.clone();
    let count = tokio::task::spawn_blocking(move || store.count().ok())
        .await
        .ok()
        .flatten();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(count),
    )
        .into_response()
}

async fn metrics(
    State(s): State<Shared>,
    Extension(peer): Extension<Peer>,
) -> Result<Response, ApiError> {
    if let Err(e) = require(&s, &peer, &[Role::Admin]) {
        return Err(refuse(&s, &peer, "metrics", "", -1, e).await);
    }
    Ok(render_metrics(&s).await)
}

async fn plain_metrics(State(s): State<Shared>) -> Response {
    render_metrics(&s).await
}
