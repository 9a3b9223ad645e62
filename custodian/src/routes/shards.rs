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

use zeroize::Zeroizing;

use super::{
    blocking, ctx, device_error, event, json_body, parse_id, refuse, require, ApiError, AppState,
    Peer, Shared, B64,
};
use crate::store::{DepositOutcome, NewShard};

pub(crate) async fn deposit(
    State(s): State<Shared>,
    Extension(peer): Extension<Peer>,
    body: Result<Json<Deposit>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let (owner, raw, env) = match check_deposit(&s, &peer, body) {
        Ok(checked) => checked,
        Err(e) => return Err(refuse(&s, &peer, "deposit", "", -1, e).await),
    };
    let sid = env.secret_id.to_string();
    let audit = event(&peer, "deposit", &sid, i64::from(env.index), "ok", "");
    let (outcome, key_version) =
        match seal_and_store(&s, owner.to_string(), raw, &env, false, audit).await {
            Ok(stored) => stored,
            Err(e) => return Err(refuse(&s, &peer, "deposit", &sid, i64::from(env.index), e).await),
        };
    let resp = |already_stored| DepositResponse {
        secret_id: sid.clone(),
        epoch: env.epoch,
        index: env.index,
        key_version,
        already_stored,
    };
    match outcome {
        DepositOutcome::Stored => {
            tracing::info!(peer = %peer.0, secret_id = %sid, index = env.index, epoch = env.epoch, "deposit stored");
            Ok((StatusCode::CREATED, Json(resp(false))).into_response())
        }
        DepositOutcome::AlreadyStored => Ok((StatusCode::OK, Json(resp(true))).into_response()),
        DepositOutcome::Conflict => {
            tracing::warn!(peer = %peer.0, secret_id = %sid, "deposit conflicts with the stored shard");
            Err(ApiError::new(
                StatusCode::CONFLICT,
                Reason::DifferentShardStored,
            ))
        }
    }
}

/// Seals `raw` (an encoded envelope bound to `env`) with the device and stores it for
/// `owner` with the audit row `audit`, in one transaction: a deposit's, or a DKG's key
/// package. Answers the store's outcome and the sealing key version; a device failure
/// is refused with its reason (to be audited by the caller), a store failure as
/// [`Reason::Storage`].
pub(crate) async fn seal_and_store(
    s: &AppState,
    owner: String,
    raw: Zeroizing<Vec<u8>>,
    env: &Deposited,
    pending: bool,
    audit: crate::store::AuditEvent,
) -> Result<(DepositOutcome, u32), ApiError> {
    let sid = env.secret_id.to_string();
    let context = ctx(s, env.secret_id, env.index, env.epoch);
    let sealer = s.sealer.clone();
    let raw_for_seal = raw.clone();
    let sealed = tokio::task::spawn_blocking(move || sealer.seal(&context, &raw_for_seal)).await;
    let blob = match sealed {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            tracing::error!(error = %e, secret_id = %sid, "seal failed");
            return Err(device_error(&e));
        }
        Err(_) => return Err(ApiError::ours(Reason::Internal)),
    };
    let key_version = hsm::BlobHeader::decode(&blob)
        .map(|(h, _)| h.key_version)
        .unwrap_or(0);
    let row = NewShard {
        secret_id: env.secret_id,
        epoch: env.epoch,
        index: env.index,
        owner,
        blob,
        digest: Sha256::digest(&*raw).into(),
        key_version,
        // Invariant: an envelope is at most MAX_ENVELOPE_LEN (or MAX_KEY_ENVELOPE_LEN) bytes.
        size: raw.len() as u32,
        kind: env.kind.to_owned(),
        pending,
    };
    let store = s.store.clone();
    let what = audit.event;
    let outcome = blocking(what, &sid, move || store.deposit(&row, audit)).await?;
    Ok((outcome, key_version))
}

/// What a deposited envelope is bound to: a shard's, or a signing key's.
pub(crate) struct Deposited {
    pub secret_id: SecretId,
    pub index: u8,
    pub epoch: u32,
    /// `shard`, or the signing key's kind.
    pub kind: &'static str,
}

/// Decodes a deposited envelope: a shard envelope, or a key envelope, which is decoded
/// only when its key package passes Feldman's check against the group's commitment.
fn decode_deposit(raw: &[u8]) -> Result<Deposited, ApiError> {
    if threshold::is_key_envelope(raw) {
        let key = threshold::KeyEnvelope::decode(raw).map_err(|e| match e {
            // Decoded parts that do not agree (another dealing's package, another kind,
            // holder or holder set) are a mismatch; bytes that do not decode are not an
            // envelope.
            threshold::Error::ShareMismatch
            | threshold::Error::KindMismatch { .. }
            | threshold::Error::InvalidHolder(_)
            | threshold::Error::Participants(_) => ApiError::bad(Reason::KeyPackageMismatch),
            _ => ApiError::bad(Reason::InvalidEnvelope),
        })?;
        // Invariant: a key has at most MAX_HOLDERS (16) holders, so a holder fits in u8.
        let index =
            u8::try_from(key.holder().get()).map_err(|_| ApiError::bad(Reason::InvalidEnvelope))?;
        return Ok(Deposited {
            secret_id: SecretId::from_bytes(key.secret_id),
            index,
            epoch: key.epoch,
            kind: key.kind().as_str(),
        });
    }
    let env = ShardEnvelope::decode(raw).map_err(|_| ApiError::bad(Reason::InvalidEnvelope))?;
    Ok(Deposited {
        secret_id: env.secret_id,
        index: env.index,
        epoch: env.epoch,
        kind: SHARD,
    })
}

/// The `kind` of a stored shard (a signing key's row names its kind instead).
pub(crate) const SHARD: &str = "shard";

/// What a deposit is checked for before anything is sealed: the caller's role, the
/// body, the owner and the envelope.
fn check_deposit(
    s: &AppState,
    peer: &Peer,
    body: Result<Json<Deposit>, axum::extract::rejection::JsonRejection>,
) -> Result<(SpiffeId, Zeroizing<Vec<u8>>, Deposited), ApiError> {
    require(s, peer, &[Role::Enroller])?;
    let req = json_body(body)?;
    let owner = match req.owner.parse::<SpiffeId>() {
        Ok(o) if o.role() == Role::User && o.trust_domain() == &s.trust_domain => o,
        _ => return Err(ApiError::bad(Reason::InvalidOwner)),
    };
    let raw = B64
        .decode(req.envelope.as_bytes())
        .map(Zeroizing::new)
        .map_err(|_| ApiError::bad(Reason::InvalidEnvelope))?;
    let env = decode_deposit(&raw)?;
    Ok((owner, raw, env))
}

/// What a route that uses a stored row asks for: a shard (to release it) or a signing
/// key's package (to sign with it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Want {
    Shard,
    SigningKey,
    /// Either (a share check).
    Any,
}

/// What the blocking half of a lookup found.
enum Lookup {
    Missing,
    /// A row of another owner; not unsealed.
    NotOwner,
    /// The owner's row of the other kind; not unsealed.
    WrongKind,
    Found(Unsealed),
}

/// The owner's row of the kind asked for, and what unsealing it gave.
pub(crate) struct Unsealed {
    pub index: u8,
    pub epoch: u32,
    /// `shard`, or the signing key's kind.
    pub kind: String,
    pub unsealed: Result<Zeroizing<Vec<u8>>, hsm::Error>,
}

/// Finds the caller's row of `id` (at `epoch`, or the newest) and unseals it, in one trip
/// to the blocking pool: under load each trip (two thread hand-offs) cost more than the
/// SQLite read it carried. Only the owner's row of the wanted kind is ever unsealed. A
/// missing row, another owner's (answered exactly like a missing one, so that ids cannot
/// be probed; the audit row records the difference) and the other kind are refused and
/// audited as `op`.
pub(crate) async fn unseal_owned(
    s: &AppState,
    peer: &Peer,
    op: &'static str,
    id: SecretId,
    sid: &str,
    epoch: Option<u32>,
    want: Want,
) -> Result<Unsealed, ApiError> {
    let owner = peer.0.to_string();
    unseal_row(s, peer, op, id, sid, epoch, want, Some(owner)).await
}

/// [`unseal_owned`], with the owner to require given: `None` unseals any owner's row (for
/// the enroller's share checks, which answer a verdict and never the share).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn unseal_row(
    s: &AppState,
    peer: &Peer,
    op: &'static str,
    id: SecretId,
    sid: &str,
    epoch: Option<u32>,
    want: Want,
    owner: Option<String>,
) -> Result<Unsealed, ApiError> {
    let store = s.store.clone();
    let sealer = s.sealer.clone();
    let custodian_id = s.name.as_str().to_owned();
    let found = blocking(op, sid, move || {
        let Some(row) = store.fetch(&id, epoch)? else {
            return Ok(Lookup::Missing);
        };
        if owner.is_some_and(|o| o != row.owner) {
            return Ok(Lookup::NotOwner);
        }
        let wrong_kind = match want {
            Want::Shard => row.kind != SHARD,
            Want::SigningKey => row.kind == SHARD,
            Want::Any => false,
        };
        if wrong_kind {
            return Ok(Lookup::WrongKind);
        }
        let context = SealContext {
            custodian_id,
            secret_id: id,
            index: row.index,
            epoch: row.epoch,
        };
        Ok(Lookup::Found(Unsealed {
            index: row.index,
            epoch: row.epoch,
            kind: row.kind.clone(),
            unsealed: sealer.unseal(&context, &row.blob),
        }))
    })
    .await?;
    let refusal = match found {
        Lookup::Found(unsealed) => return Ok(unsealed),
        Lookup::NotOwner => {
            tracing::warn!(peer = %peer.0, secret_id = %sid, op, "refused: not the owner");
            s.journal
                .record(event(peer, op, sid, -1, "refused", "not_owner"))
                .await;
            return Err(ApiError::new(StatusCode::NOT_FOUND, Reason::NotFound));
        }
        Lookup::Missing => ApiError::new(StatusCode::NOT_FOUND, Reason::NotFound),
        Lookup::WrongKind => ApiError::new(
            StatusCode::CONFLICT,
            match want {
                Want::Shard => Reason::SigningKeyNotReleasable,
                Want::SigningKey | Want::Any => Reason::NotASigningKey,
            },
        ),
    };
    Err(refuse(s, peer, op, sid, -1, refusal).await)
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
        let e = ApiError::bad(Reason::InvalidQuery);
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
    let Unsealed {
        index,
        epoch,
        unsealed,
        ..
    } = unseal_owned(&s, &peer, "release", id, &sid, q.epoch, Want::Shard).await?;
    let envelope = match unsealed {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(error = %e, secret_id = %sid, index, "unseal failed");
            return Err(failed(&s, &peer, &sid, index, device_error(&e)).await);
        }
    };
    // The sealed context already binds id, index and epoch; decoding once more
    // guarantees only a well-formed envelope ever leaves.
    match ShardEnvelope::decode(&envelope) {
        Ok(env) if env.secret_id == id && env.index == index && env.epoch == epoch => {}
        _ => {
            let e = ApiError::ours(Reason::StoredEnvelopeInvalid);
            return Err(failed(&s, &peer, &sid, index, e).await);
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
        envelope: Zeroizing::new(B64.encode(&*envelope)),
    };
    Ok(Json(body).into_response())
}

/// Audits a release of shard `index` that failed on our side, and returns `err`.
async fn failed(s: &AppState, peer: &Peer, sid: &str, index: u8, err: ApiError) -> ApiError {
    let row = event(
        peer,
        "release",
        sid,
        i64::from(index),
        "failed",
        err.reason.as_str(),
    );
    s.journal.record(row).await;
    err
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
    // Deleting a key also aborts a DKG of it under way: the coordinator's take-back.
    if s.dkgs.abort(&id) {
        tracing::info!(peer = %peer.0, secret_id = %sid, "DKG aborted");
    }
    if s.reshares.abort(&id) {
        tracing::info!(peer = %peer.0, secret_id = %sid, "reshare aborted");
    }
    let store = s.store.clone();
    let audit = event(&peer, "delete", &sid, -1, "ok", "");
    match blocking("delete", &sid, move || store.delete(&id, q.epoch, audit)).await? {
        0 => Err(ApiError::new(StatusCode::NOT_FOUND, Reason::NotFound)),
        n => {
            tracing::info!(peer = %peer.0, secret_id = %sid, rows = n, "deleted");
            Ok(Json(DeleteResponse { deleted: n }).into_response())
        }
    }
}

pub(crate) async fn list(
    State(s): State<Shared>,
    Extension(peer): Extension<Peer>,
    query: Result<Query<List>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let checked = require(&s, &peer, &[Role::Admin]).and_then(|()| {
        let Ok(Query(q)) = query else {
            return Err(ApiError::bad(Reason::InvalidQuery));
        };
        let after = q.after.as_deref().map(parse_id).transpose()?;
        Ok((after, q.limit.unwrap_or(100).clamp(1, 1000)))
    });
    let (after, limit) = match checked {
        Ok(c) => c,
        Err(e) => return Err(refuse(&s, &peer, "list", "", -1, e).await),
    };
    let store = s.store.clone();
    let shards: Vec<ShardInfo> =
        blocking("list", "", move || store.list(after.as_ref(), limit)).await?;
    let next_after = (shards.len() == limit as usize)
        .then(|| shards.last().map(|r| r.secret_id.clone()))
        .flatten();
    s.journal
        .record(event(&peer, "list", "", -1, "ok", ""))
        .await;
    Ok(Json(ListResponse { shards, next_after }).into_response())
}
