//! Epochs: what a custodian does with a share beyond keeping and releasing it. Today, the
//! share check without recovery: the custodian unseals its row inside, checks it against
//! the manifest's commitment for it, and answers a verdict; the share never leaves it.
//! And the commit of a refresh's next epoch (the refresh itself runs the DKG's steps with
//! sharings of zero, [`super::dkg`]). Reshare and repair come here next.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use certs::Role;
use shard::{SecretId, ShardEnvelope};
use threshold::KeyEnvelope;
use wire::custodian::{CommitEpoch, CommitEpochResponse, Verify, VerifyResponse};

use crate::store::CommitOutcome;
use wire::Reason;

use super::shards::{unseal_row, Want, SHARD};
use super::{blocking, device_error, event, keyed_body, refuse, ApiError, Peer, Shared};

/// What a stored row is checked for: that it unseals, decodes as the row says, and
/// matches `expected`. `Err` is the reason of a `bad` verdict.
fn check(
    id: &SecretId,
    index: u8,
    epoch: u32,
    kind: &str,
    bytes: &[u8],
    expected: &[u8; 32],
) -> Result<(), Reason> {
    let invalid = Reason::StoredEnvelopeInvalid;
    let found: [u8; 32] = if kind == SHARD {
        let env = ShardEnvelope::decode(bytes).map_err(|_| invalid)?;
        if env.secret_id != *id || env.index != index || env.epoch != epoch {
            return Err(invalid);
        }
        env.commitment().0
    } else {
        // Decoding runs Feldman's check of the key package against the group commitment.
        let key = KeyEnvelope::decode(bytes).map_err(|_| invalid)?;
        let holder = key.holder();
        if key.secret_id != *id.as_bytes() || key.epoch != epoch || holder.get() != u16::from(index)
        {
            return Err(invalid);
        }
        let digests = key.public.holder_digests().map_err(|_| invalid)?;
        let Some(digest) = digests.get(usize::from(holder.get()).wrapping_sub(1)) else {
            return Err(invalid);
        };
        *digest
    };
    if found == *expected {
        Ok(())
    } else {
        Err(Reason::CommitmentMismatch)
    }
}

pub(crate) async fn verify(
    State(s): State<Shared>,
    Extension(peer): Extension<Peer>,
    Path(raw_id): Path<String>,
    body: Result<Json<Verify>, JsonRejection>,
) -> Result<Response, ApiError> {
    let op = "verify";
    let roles = [Role::User, Role::Enroller];
    let (id, sid, (epoch, expected)) = keyed_body(&s, &peer, op, &raw_id, &roles, body, |req| {
        let mut expected = [0u8; 32];
        hex::decode_to_slice(&req.commitment, &mut expected)
            .map_err(|_| ApiError::bad(Reason::InvalidCommitment))?;
        Ok((req.epoch, expected))
    })
    .await?;
    // A user checks only their own rows; the enroller (its scheduled checks) any row.
    let owner = (peer.0.role() == Role::User).then(|| peer.0.to_string());
    let found = unseal_row(&s, &peer, op, id, &sid, epoch, Want::Any, owner).await?;
    let index = i64::from(found.index);
    let verdict = match &found.unsealed {
        Ok(bytes) => check(&id, found.index, found.epoch, &found.kind, bytes, &expected),
        Err(e) => match device_error(e) {
            // The device could not answer: no verdict either way.
            refusal if refusal.reason == Reason::DeviceUnavailable => {
                return Err(refuse(&s, &peer, op, &sid, index, refusal).await)
            }
            refusal => Err(refusal.reason),
        },
    };
    drop(found.unsealed);
    let (outcome, reason) = match verdict {
        Ok(()) => ("ok", None),
        Err(reason) => ("bad", Some(reason)),
    };
    s.metrics.share_verified(outcome);
    let why = reason.map(Reason::as_str).unwrap_or_default();
    if !s
        .journal
        .record(event(&peer, op, &sid, index, outcome, why))
        .await
    {
        return Err(ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            Reason::AuditUnavailable,
        ));
    }
    if reason.is_some() {
        tracing::warn!(peer = %peer.0, secret_id = %sid, index, reason = why, "share check: bad");
    } else {
        tracing::info!(peer = %peer.0, secret_id = %sid, index, "share check: ok");
    }
    Ok(Json(VerifyResponse {
        secret_id: sid,
        epoch: found.epoch,
        index: found.index,
        kind: found.kind,
        verdict: outcome.to_owned(),
        reason: reason.map(|r| r.as_str().to_owned()),
    })
    .into_response())
}

/// `POST /v1/shards/{id}/commit {epoch}` (the enroller, once the manifest of `epoch` is
/// stored): a refresh's pending row becomes the current one. Idempotent; the row of the
/// epoch before stays until the coordinator deletes it.
pub(crate) async fn commit_epoch(
    State(s): State<Shared>,
    Extension(peer): Extension<Peer>,
    Path(raw_id): Path<String>,
    body: Result<Json<CommitEpoch>, JsonRejection>,
) -> Result<Response, ApiError> {
    let op = "commit_epoch";
    let roles = [Role::Enroller];
    let (id, sid, epoch) =
        keyed_body(&s, &peer, op, &raw_id, &roles, body, |req| Ok(req.epoch)).await?;
    let store = s.store.clone();
    let mut audit = event(&peer, op, &sid, -1, "ok", "");
    audit.detail = format!("epoch={epoch}");
    let outcome = blocking(op, &sid, move || store.commit_epoch(&id, epoch, audit)).await?;
    #[cfg(feature = "fault-injection")]
    crate::fault::exit_at("exit-after-commit-epoch");
    let already_committed = match outcome {
        CommitOutcome::Committed => false,
        CommitOutcome::AlreadyCommitted => true,
        CommitOutcome::Missing => {
            return Err(ApiError::new(
                axum::http::StatusCode::NOT_FOUND,
                Reason::NotFound,
            ))
        }
    };
    tracing::info!(peer = %peer.0, secret_id = %sid, epoch, already_committed, "epoch committed");
    Ok(Json(CommitEpochResponse {
        secret_id: sid,
        epoch,
        already_committed,
    })
    .into_response())
}
