//! Threshold signing with a sealed key package: round 1 (commit) and round 2 (sign),
//! both for the key's owner only.
//!
//! Round 1 unseals the owner's key package, draws fresh nonces from a generator seeded
//! for this one commitment (the operating system's randomness; FROST hedges the nonces
//! with the signing share too), keeps them in memory under the coordinator's session id
//! ([`crate::sessions`]) and answers their commitments with the public key package.
//! Round 2 takes the session out first, so its nonces are gone before anything else
//! happens, signs the package only if it carries this custodian's own commitment
//! unchanged, writes an audit row naming the message digest and the session, and only
//! then answers the signature share.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use base64::Engine;
use certs::Role;
use sha2::{Digest, Sha256};
use shard::SecretId;
use threshold::{KeyEnvelope, SeededRng, SigningPackage, Zeroizing};
use wire::custodian::{Commit, CommitResponse, Sign, SignResponse};
use wire::Reason;

use super::shards::{unseal_owned, Want};
use super::{
    device_error, event, json_body, parse_id, refuse, refuse_with, require, ApiError, AppState,
    Peer, Shared, B64,
};
use crate::sessions::{OpenError, SessionKey, Taken};

/// The checks both rounds start with, each refusal audited as `op`: the key id, the
/// caller's role, the body and its session id.
async fn start<T>(
    s: &AppState,
    peer: &Peer,
    op: &'static str,
    raw_id: &str,
    body: Result<Json<T>, JsonRejection>,
    session: impl FnOnce(&T) -> &str,
) -> Result<(SecretId, String, T, [u8; 16]), ApiError> {
    let id = match parse_id(raw_id) {
        Ok(id) => id,
        Err(e) => return Err(refuse(s, peer, op, "", -1, e).await),
    };
    let sid = id.to_string();
    let checked = require(s, peer, &[Role::User]).and_then(|()| {
        let req = json_body(body)?;
        let mut id = [0u8; 16];
        let text = session(&req);
        if text.len() != 32 || hex::decode_to_slice(text, &mut id).is_err() {
            return Err(ApiError::bad(Reason::InvalidSession));
        }
        Ok((req, id))
    });
    match checked {
        Ok((req, session)) => Ok((id, sid, req, session)),
        Err(e) => Err(refuse(s, peer, op, &sid, -1, e).await),
    }
}

/// A fresh generator for one commitment (or one DKG polynomial): SHA-256 over 32 bytes of
/// the operating system's randomness, the session (or key id), a counter of this process and the time. The OS randomness is
/// what makes the nonces secret; the rest makes two commitments differ even if a restored
/// snapshot of this machine repeated its generator's output.
pub(crate) fn fresh_rng(session: &[u8; 16]) -> Result<SeededRng, ApiError> {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut os = Zeroizing::new([0u8; 32]);
    shard::rand::TryRng::try_fill_bytes(&mut shard::rand::rngs::SysRng, &mut *os).map_err(|e| {
        tracing::error!(error = %e, "operating system random generator failed");
        ApiError::ours(Reason::Internal)
    })?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut h = Sha256::new();
    h.update(b"shard-custodians/commit-seed/v1\0");
    h.update(os.as_slice());
    h.update(session);
    h.update(
        COUNTER
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .to_be_bytes(),
    );
    h.update(now.to_be_bytes());
    let mut seed = Zeroizing::new([0u8; 32]);
    seed.copy_from_slice(&h.finalize());
    Ok(SeededRng::from_seed(seed))
}

pub(crate) async fn commit(
    State(s): State<Shared>,
    Extension(peer): Extension<Peer>,
    Path(raw_id): Path<String>,
    body: Result<Json<Commit>, JsonRejection>,
) -> Result<Response, ApiError> {
    let (id, sid, req, session) = start(&s, &peer, "commit", &raw_id, body, |r| &r.session).await?;
    let found = unseal_owned(&s, &peer, "commit", id, &sid, req.epoch, Want::SigningKey).await?;
    let bytes = match found.unsealed {
        Ok(bytes) => bytes,
        Err(e) => {
            tracing::error!(error = %e, secret_id = %sid, "unseal failed");
            let index = i64::from(found.index);
            return Err(refuse(&s, &peer, "commit", &sid, index, device_error(&e)).await);
        }
    };
    // The sealed context binds id, holder and epoch; the envelope must agree. Its Feldman
    // check ran before it was sealed, and the device has just authenticated it.
    let key = match KeyEnvelope::decode_sealed(&bytes) {
        Ok(key)
            if key.secret_id == *id.as_bytes()
                && key.epoch == found.epoch
                && key.holder().get() == u16::from(found.index) =>
        {
            key
        }
        _ => {
            let e = ApiError::ours(Reason::StoredEnvelopeInvalid);
            let index = i64::from(found.index);
            return Err(refuse(&s, &peer, "commit", &sid, index, e).await);
        }
    };
    drop(bytes);
    let mut rng = fresh_rng(&session)?;
    let (nonces, commitments) = threshold::commit(&key.key_package, &mut rng).map_err(|e| {
        tracing::error!(error = %e, secret_id = %sid, "commit failed");
        ApiError::ours(Reason::Internal)
    })?;
    drop(rng);
    let KeyEnvelope {
        epoch,
        key_package,
        public,
        ..
    } = key;
    let holder = key_package.holder().get();
    let kind = key_package.kind();
    let answer = CommitResponse {
        secret_id: sid.clone(),
        epoch,
        holder,
        kind: kind.to_string(),
        commitments: B64.encode(commitments.as_bytes()),
        public: B64.encode(public.as_bytes()),
        deadline_ms: 0,
    };
    let session_key: SessionKey = (peer.0.to_string(), id, session);
    let ttl = match s
        .sessions
        .open(session_key, key_package, nonces, commitments, epoch)
    {
        Ok(ttl) => ttl,
        Err(OpenError::Exists) => {
            let e = ApiError::new(StatusCode::CONFLICT, Reason::SessionExists);
            return Err(refuse(&s, &peer, "commit", &sid, i64::from(holder), e).await);
        }
        Err(OpenError::Full) => {
            let e = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, Reason::TooManySessions);
            return Err(refuse(&s, &peer, "commit", &sid, i64::from(holder), e).await);
        }
    };
    tracing::debug!(peer = %peer.0, secret_id = %sid, holder, "committed");
    Ok(Json(CommitResponse {
        deadline_ms: ttl.as_millis() as u64,
        ..answer
    })
    .into_response())
}

pub(crate) async fn sign(
    State(s): State<Shared>,
    Extension(peer): Extension<Peer>,
    Path(raw_id): Path<String>,
    body: Result<Json<Sign>, JsonRejection>,
) -> Result<Response, ApiError> {
    let (id, sid, req, session) = start(&s, &peer, "sign", &raw_id, body, |r| &r.session).await?;
    let session_hex = hex::encode(session);
    // The nonces leave the session map before anything else: whatever happens next,
    // they sign at most this once.
    let open = match s.sessions.take(&(peer.0.to_string(), id, session)) {
        Taken::Open(open) => open,
        other => {
            let (status, reason) = match other {
                Taken::Spent => (StatusCode::CONFLICT, Reason::SessionSpent),
                Taken::Expired => (StatusCode::CONFLICT, Reason::SessionExpired),
                _ => (StatusCode::NOT_FOUND, Reason::SessionUnknown),
            };
            let e = ApiError::new(status, reason);
            let detail = format!("session={session_hex}");
            return Err(refuse_with(&s, &peer, "sign", &sid, -1, detail, e).await);
        }
    };
    let holder = open.key.holder().get();
    let index = i64::from(holder);
    let package = match B64
        .decode(req.package.as_bytes())
        .ok()
        .and_then(|bytes| SigningPackage::decode(open.key.kind(), &bytes).ok())
    {
        Some(p) => p,
        None => {
            let e = ApiError::bad(Reason::InvalidSigningPackage);
            let detail = format!("session={session_hex}");
            return Err(refuse_with(&s, &peer, "sign", &sid, index, detail, e).await);
        }
    };
    let digest = hex::encode(Sha256::digest(package.message()));
    let crate::sessions::Open { key, nonces, .. } = *open;
    let share = match threshold::sign(&key, nonces, &package) {
        Ok(share) => share,
        Err(e) => {
            let reason = match e {
                threshold::Error::CommitmentMissing(_) => Reason::CommitmentMissing,
                threshold::Error::CommitmentAltered(_) => Reason::CommitmentAltered,
                _ => Reason::InvalidSigningPackage,
            };
            let e = ApiError::bad(reason);
            let detail = format!("session={session_hex}");
            return Err(refuse_with(&s, &peer, "sign", &sid, index, detail, e).await);
        }
    };
    drop(key);
    #[cfg(feature = "fault-injection")]
    let share = crate::fault::signature_share(share);
    let mut row = event(&peer, "sign", &sid, index, "ok", "");
    row.detail = format!("session={session_hex} message_sha256={digest}");
    if !s.journal.record(row).await {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            Reason::AuditUnavailable,
        ));
    }
    tracing::info!(peer = %peer.0, secret_id = %sid, holder, session = %session_hex, message_sha256 = %digest, "signature share");
    Ok(Json(SignResponse {
        holder,
        share: B64.encode(share.as_bytes()),
    })
    .into_response())
}
