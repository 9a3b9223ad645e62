//! Shards: deposit (enroller), release (the owner), delete (enroller, admin) and the
//! admin listing.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use base64::Engine;
use certs::{Role, SpiffeId};
use hsm::SealContext;
use sha2::{Digest, Sha256};
use shard::{SecretId, ShardEnvelope};
use wire::custodian::{
    DeleteResponse, Deposit, DepositResponse, EpochQuery, List, ListResponse, ReleaseResponse,
    ShardInfo,
};
use wire::Reason;

use super::{
    ctx, device_error, event, parse_id, refuse, require, ApiError, AppState, Peer, Shared, B64,
};
use crate::store::{DepositOutcome, NewShard};

pub(crate) async fn deposit(
    State(s): State<Shared>,
    Extension(peer): Extension<Peer>,
    body: Result<Json<Deposit>, axum::extract::rejection::JsonRejection>,
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
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, Reason::BodyTooLarge)
            } else {
                ApiError::new(StatusCode::BAD_REQUEST, Reason::InvalidBody)
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
                ApiError::new(StatusCode::BAD_REQUEST, Reason::InvalidOwner),
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
                ApiError::new(StatusCode::BAD_REQUEST, Reason::InvalidEnvelope),
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
                ApiError::new(StatusCode::BAD_REQUEST, Reason::InvalidEnvelope),
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
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                Reason::Internal,
            ))
        }
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
                Reason::DifferentShardStored,
            ))
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, secret_id = %sid, "deposit not stored");
            Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                Reason::Storage,
            ))
        }
        Err(_) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            Reason::Internal,
        )),
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

/// What the routes on one secret check first, each refusal audited as `op`: the secret
/// id, the caller's role and the epoch query.
async fn one_secret(
    s: &AppState,
    peer: &Peer,
    op: &'static str,
    raw_id: &str,
    roles: &[Role],
    query: Result<Query<EpochQuery>, QueryRejection>,
) -> Result<(SecretId, String, EpochQuery), ApiError> {
    let id = match parse_id(raw_id) {
        Ok(id) => id,
        Err(e) => return Err(refuse(s, peer, op, "", -1, e).await),
    };
    let sid = id.to_string();
    if let Err(e) = require(s, peer, roles) {
        return Err(refuse(s, peer, op, &sid, -1, e).await);
    }
    let Ok(Query(q)) = query else {
        let e = ApiError::new(StatusCode::BAD_REQUEST, Reason::InvalidQuery);
        return Err(refuse(s, peer, op, &sid, -1, e).await);
    };
    Ok((id, sid, q))
}

pub(crate) async fn release(
    State(s): State<Shared>,
    Extension(peer): Extension<Peer>,
    Path(raw_id): Path<String>,
    query: Result<Query<EpochQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let (id, sid, q) = one_secret(&s, &peer, "release", &raw_id, &[Role::User], query).await?;
    if let Err(wait) = s.limiter.check(&peer.0.to_string()) {
        let err = refuse(
            &s,
            &peer,
            "release",
            &sid,
            -1,
            ApiError::new(StatusCode::TOO_MANY_REQUESTS, Reason::RateLimited),
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
            return Err(ApiError::new(StatusCode::NOT_FOUND, Reason::NotFound));
        }
        Ok(Ok(Lookup::Missing)) => {
            return Err(refuse(
                &s,
                &peer,
                "release",
                &sid,
                -1,
                ApiError::new(StatusCode::NOT_FOUND, Reason::NotFound),
            )
            .await)
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "release lookup failed");
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                Reason::Storage,
            ));
        }
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                Reason::Internal,
            ))
        }
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
                    err.reason.as_str(),
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
                    Reason::StoredEnvelopeInvalid.as_str(),
                ))
                .await;
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                Reason::StoredEnvelopeInvalid,
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
            Reason::AuditUnavailable,
        ));
    }
    tracing::info!(peer = %peer.0, secret_id = %sid, index, epoch, "released");
    let body = ReleaseResponse {
        secret_id: sid,
        epoch,
        index,
        envelope: zeroize::Zeroizing::new(B64.encode(&*envelope)),
    };
    Ok(Json(body).into_response())
}

pub(crate) async fn delete(
    State(s): State<Shared>,
    Extension(peer): Extension<Peer>,
    Path(raw_id): Path<String>,
    query: Result<Query<EpochQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let (id, sid, q) = one_secret(
        &s,
        &peer,
        "delete",
        &raw_id,
        &[Role::Enroller, Role::Admin],
        query,
    )
    .await?;
    let store = s.store.clone();
    let audit = event(&peer, "delete", &sid, -1, "ok", "");
    match tokio::task::spawn_blocking(move || store.delete(&id, q.epoch, audit)).await {
        Ok(Ok(0)) => Err(ApiError::new(StatusCode::NOT_FOUND, Reason::NotFound)),
        Ok(Ok(n)) => {
            tracing::info!(peer = %peer.0, secret_id = %sid, rows = n, "deleted");
            Ok(Json(DeleteResponse { deleted: n }).into_response())
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "delete failed");
            Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                Reason::Storage,
            ))
        }
        Err(_) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            Reason::Internal,
        )),
    }
}

pub(crate) async fn list(
    State(s): State<Shared>,
    Extension(peer): Extension<Peer>,
    query: Result<Query<List>, axum::extract::rejection::QueryRejection>,
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
            ApiError::new(StatusCode::BAD_REQUEST, Reason::InvalidQuery),
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
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                Reason::Storage,
            ));
        }
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                Reason::Internal,
            ))
        }
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
