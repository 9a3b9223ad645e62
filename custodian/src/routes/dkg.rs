//! Keys born distributed: the three DKG steps the enroller coordinates (round 1, round 2,
//! finish), each for the enroller only. State between steps lives in [`crate::dkg`],
//! in memory; the secret round-2 packages go to the other holders over the peer channel
//! ([`super::peer`]), never through the enroller.
//!
//! A step that is refused after it took the DKG's secret (a malformed relayed package, a
//! cheater) ends the DKG here; the coordinator aborts it everywhere and starts a new one.

use std::collections::BTreeMap;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use base64::Engine;
use certs::{Role, SpiffeId};
use sha2::{Digest, Sha256};
use shard::SecretId;
use threshold::dkg::Round1Package;
use threshold::{HolderId, KeyEnvelope, Kind, Threshold, Zeroizing};
use wire::dkg::{
    DkgFinish, DkgFinishResponse, DkgPackage, DkgPeer, DkgRound1, DkgRound1Response, DkgRound2,
    DkgRound2Response,
};
use wire::Reason;

use super::shards::{seal_and_store, unseal_row, Deposited, Want};
use super::signing::fresh_rng;
use super::step_error;
use super::{
    blocking, device_error, event, keyed_body, refuse, refuse_with, ApiError, AppState, Peer,
    Shared, B64,
};
use crate::dkg::{Finish, Outgoing, Params, Round2Start, Step};
use crate::store::DepositOutcome;

/// The checks every step starts with, each refusal audited as `op`: the key id, the
/// enroller's role and the body.
async fn start<T>(
    s: &AppState,
    peer: &Peer,
    op: &'static str,
    raw_id: &str,
    body: Result<Json<T>, JsonRejection>,
) -> Result<(SecretId, String, T), ApiError> {
    keyed_body(s, peer, op, raw_id, &[Role::Enroller], body, Ok).await
}

/// Round 1's parameters, checked: a user owner of this trust domain, a signing kind, a
/// threshold, and exactly one peer entry per holder `1..=n` in order, with distinct
/// names, parseable addresses, and this custodian among them.
fn params(s: &AppState, req: DkgRound1) -> Result<Params, ApiError> {
    let bad = || ApiError::bad(Reason::InvalidDkg);
    let owner = match req.owner.parse::<SpiffeId>() {
        Ok(o) if o.role() == Role::User && o.trust_domain() == &s.trust_domain => o,
        _ => return Err(ApiError::bad(Reason::InvalidOwner)),
    };
    let kind: Kind = req.kind.parse().map_err(|_| bad())?;
    let split = Threshold::new(req.t, req.n).map_err(|_| bad())?;
    if req.epoch == 0 || req.peers.len() != usize::from(split.n()) {
        return Err(bad());
    }
    if req
        .refreshes
        .is_some_and(|from| from.checked_add(1) != Some(req.epoch))
    {
        return Err(bad());
    }
    if !valid_peers(&req.peers, |i, holder| usize::from(holder) == i + 1) {
        return Err(bad());
    }
    let me = holder_named(&req.peers, s.name.as_str());
    Ok(Params {
        owner: owner.to_string(),
        kind,
        t: split.t(),
        n: split.n(),
        me: me.ok_or_else(bad)?,
        epoch: req.epoch,
        peers: req.peers,
        refreshes: req.refreshes,
    })
}

/// Whether every entry of `peers` is numbered as `numbered(position, holder)` wants and
/// names a distinct custodian at a parseable address and server name.
pub(super) fn valid_peers(peers: &[DkgPeer], numbered: impl Fn(usize, u16) -> bool) -> bool {
    peers.len() <= usize::from(threshold::MAX_HOLDERS)
        && peers.iter().enumerate().all(|(i, p)| {
            numbered(i, p.holder)
                && HolderId::new(p.holder).is_ok()
                && shard::CustodianId::new(&p.name).is_ok()
                && peers[..i].iter().all(|q| q.name != p.name)
                && p.address.parse::<std::net::SocketAddr>().is_ok()
                && rustls_name(&p.server_name).is_some()
        })
}

/// The holder number under which `peers` name custodian `name`.
pub(super) fn holder_named(peers: &[DkgPeer], name: &str) -> Option<HolderId> {
    peers
        .iter()
        .find(|p| p.name == name)
        .and_then(|p| HolderId::new(p.holder).ok())
}

/// A server name the peer channel's TLS accepts (a DNS name or an IP address).
fn rustls_name(name: &str) -> Option<()> {
    (!name.is_empty() && name.len() <= 253 && name.bytes().all(|b| b.is_ascii_graphic()))
        .then_some(())
}

pub(crate) async fn round1(
    State(s): State<Shared>,
    Extension(peer): Extension<Peer>,
    Path(raw_id): Path<String>,
    body: Result<Json<DkgRound1>, JsonRejection>,
) -> Result<Response, ApiError> {
    let (id, sid, req) = start(&s, &peer, "dkg_round1", &raw_id, body).await?;
    let params = match params(&s, req) {
        Ok(p) => p,
        Err(e) => return Err(refuse(&s, &peer, "dkg_round1", &sid, -1, e).await),
    };
    let me = params.me;
    let index = i64::from(me.get());
    if let Err(e) = fits_the_store(&s, id, &sid, &params).await {
        return Err(refuse(&s, &peer, "dkg_round1", &sid, index, e).await);
    }
    let split =
        Threshold::new(params.t, params.n).map_err(|_| ApiError::bad(Reason::InvalidDkg))?;
    let mut rng = fresh_rng(id.as_bytes())?;
    let part1 = match params.refreshes {
        None => threshold::dkg::part1,
        Some(_) => threshold::dkg::refresh_part1,
    };
    let (secret, package) = part1(params.kind, me, split, &mut rng).map_err(|e| {
        tracing::error!(error = %e, secret_id = %sid, "DKG part 1 failed");
        ApiError::ours(Reason::Internal)
    })?;
    drop(rng);
    let (package, left) = match s.dkgs.begin(id, params, secret, package) {
        Ok(begun) => begun,
        Err(step) => {
            return Err(refuse(&s, &peer, "dkg_round1", &sid, index, step_error(step)).await)
        }
    };
    tracing::info!(peer = %peer.0, secret_id = %sid, holder = me.get(), "DKG round 1");
    Ok(Json(DkgRound1Response {
        holder: me.get(),
        package: B64.encode(package.as_bytes()),
        deadline_ms: left.as_millis() as u64,
    })
    .into_response())
}

/// What round 1 needs of the store. A new key: no row of this id at all (a finished DKG
/// or a deposit is never redone). A refresh: the owner's committed key package of this
/// kind and holder at the epoch refreshed, and no row yet at the next one.
async fn fits_the_store(
    s: &AppState,
    id: SecretId,
    sid: &str,
    params: &Params,
) -> Result<(), ApiError> {
    let store = s.store.clone();
    let (epoch, from) = (params.epoch, params.refreshes);
    let (next, old) = blocking("dkg_round1", sid, move || {
        let next = store.fetch(&id, Some(epoch))?;
        let old = match from {
            Some(e) => store.fetch(&id, Some(e))?,
            None => store.fetch(&id, None)?,
        };
        Ok((next, old))
    })
    .await?;
    if next.is_some() {
        return Err(step_error(Step::Exists));
    }
    match (from, old) {
        (None, None) => Ok(()),
        (None, Some(_)) => Err(step_error(Step::Exists)),
        (Some(_), Some(row))
            if row.owner == params.owner
                && row.kind == params.kind.as_str()
                && u16::from(row.index) == params.me.get()
                && !row.pending =>
        {
            Ok(())
        }
        (Some(_), _) => Err(ApiError::new(StatusCode::NOT_FOUND, Reason::NotFound)),
    }
}

/// The key package a refresh (or a reshare's dealer) starts from: the row at epoch
/// `from`, unsealed and authenticated by the device (its Feldman check ran when it was
/// stored).
pub(super) async fn stored_key_share(
    s: &AppState,
    peer: &Peer,
    op: &'static str,
    id: SecretId,
    sid: &str,
    from: u32,
) -> Result<threshold::dkg::KeyShare, ApiError> {
    let found = unseal_row(s, peer, op, id, sid, Some(from), Want::SigningKey, None).await?;
    let bytes = found.unsealed.map_err(|e| device_error(&e))?;
    match KeyEnvelope::decode_sealed(&bytes) {
        Ok(key) if key.secret_id == *id.as_bytes() && key.epoch == from => {
            Ok(threshold::dkg::KeyShare {
                key_package: key.key_package,
                public: key.public,
                commitment: key.commitment,
            })
        }
        _ => Err(ApiError::ours(Reason::StoredEnvelopeInvalid)),
    }
}

/// SHA-256 over the relayed round-1 packages in holder order: what every holder must
/// have been shown alike.
fn transcript(packages: &[(u16, Vec<u8>)]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"shard-custodians/dkg-round1/v1\0");
    for (holder, bytes) in packages {
        h.update(holder.to_be_bytes());
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(bytes);
    }
    h.finalize().into()
}

/// The relayed round-1 packages, base64 decoded, refused unless they are one per holder
/// `1..=n` in order.
fn relayed(packages: &[DkgPackage], n: usize) -> Result<Vec<(u16, Vec<u8>)>, ApiError> {
    let bad = || ApiError::bad(Reason::InvalidRound1Package);
    if packages.len() > threshold::MAX_HOLDERS.into() {
        return Err(bad());
    }
    let decoded = packages
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let bytes = B64.decode(p.package.as_bytes()).map_err(|_| bad())?;
            (usize::from(p.holder) == i + 1)
                .then_some((p.holder, bytes))
                .ok_or_else(bad)
        })
        .collect::<Result<Vec<_>, _>>()?;
    (decoded.len() == n).then_some(decoded).ok_or_else(bad)
}

pub(crate) async fn round2(
    State(s): State<Shared>,
    Extension(peer): Extension<Peer>,
    Path(raw_id): Path<String>,
    body: Result<Json<DkgRound2>, JsonRejection>,
) -> Result<Response, ApiError> {
    let op = "dkg_round2";
    let (id, sid, req) = start(&s, &peer, op, &raw_id, body).await?;
    let Some(known) = s.dkgs.params(&id) else {
        return Err(refuse(&s, &peer, op, &sid, -1, step_error(Step::Unknown)).await);
    };
    let index = i64::from(known.me.get());
    let packages = match relayed(&req.round1, usize::from(known.n)) {
        Ok(p) => p,
        Err(e) => return Err(refuse(&s, &peer, op, &sid, index, e).await),
    };
    let transcript = transcript(&packages);
    let (params, outgoing) = match s.dkgs.round2(&id, &transcript) {
        Ok(Round2Start::Fresh(secret, params, own)) => {
            match compute_round2(&s, id, secret, &params, &own, &packages, transcript) {
                Ok(outgoing) => (params, outgoing),
                Err(e) => {
                    s.dkgs.abort(&id);
                    return Err(refuse(&s, &peer, op, &sid, index, e).await);
                }
            }
        }
        Ok(Round2Start::Resend(params, outgoing)) => (params, outgoing),
        Err(step) => return Err(refuse(&s, &peer, op, &sid, index, step_error(step)).await),
    };
    if let Err((name, e)) = super::peer::send_round2(&s, &sid, &params, &transcript, outgoing).await
    {
        let detail = format!("peer={name}");
        return Err(refuse_with(&s, &peer, op, &sid, index, detail, e).await);
    }
    tracing::info!(peer = %peer.0, secret_id = %sid, holder = params.me.get(), "DKG round 2: every peer took its package");
    Ok(Json(DkgRound2Response {
        holder: params.me.get(),
        transcript: B64.encode(transcript),
    })
    .into_response())
}

/// Round 2's computation: the relayed packages must carry this holder's own unchanged,
/// every other must decode and prove knowledge of its polynomial's constant term.
/// Keeps the holder's share and answers the packages to send, `(holder, bytes)`.
fn compute_round2(
    s: &AppState,
    id: SecretId,
    secret: threshold::dkg::Round1Secret,
    params: &Params,
    own: &Round1Package,
    packages: &[(u16, Vec<u8>)],
    transcript: [u8; 32],
) -> Result<Outgoing, ApiError> {
    let bad = || ApiError::bad(Reason::InvalidRound1Package);
    let mut round1 = BTreeMap::new();
    for (holder, bytes) in packages {
        let holder = HolderId::new(*holder).map_err(|_| bad())?;
        let package = Round1Package::decode(params.kind, bytes).map_err(|_| bad())?;
        if holder == params.me && package != *own {
            return Err(bad());
        }
        round1.insert(holder, package);
    }
    let part2 = match params.refreshes {
        None => threshold::dkg::part2,
        Some(_) => threshold::dkg::refresh_part2,
    };
    let (secret2, outgoing) = part2(secret, &round1).map_err(|e| {
        tracing::warn!(error = %e, "DKG round 2 refused a round-1 package");
        bad()
    })?;
    let sending = outgoing
        .iter()
        .map(|(h, p)| (*h, Zeroizing::new(p.expose().to_vec())))
        .collect();
    s.dkgs
        .round2_done(&id, secret2, round1, transcript, outgoing)
        .map_err(step_error)?;
    Ok(sending)
}

pub(crate) async fn finish(
    State(s): State<Shared>,
    Extension(peer): Extension<Peer>,
    Path(raw_id): Path<String>,
    body: Result<Json<DkgFinish>, JsonRejection>,
) -> Result<Response, ApiError> {
    let op = "dkg_finish";
    let (id, sid, _) = start(&s, &peer, op, &raw_id, body).await?;
    let start = match s.dkgs.finish(&id) {
        Ok(Finish::Start(start)) => *start,
        Ok(Finish::Done(answer)) => {
            return Ok(Json(DkgFinishResponse {
                already_stored: true,
                ..answer
            })
            .into_response())
        }
        Err(step) => return Err(refuse(&s, &peer, op, &sid, -1, step_error(step)).await),
    };
    let params = start.params.clone();
    let holder = params.me.get();
    let index = i64::from(holder);
    let transcript_hex = hex::encode(start.transcript);
    let old = match params.refreshes {
        None => None,
        Some(from) => match stored_key_share(&s, &peer, op, id, &sid, from).await {
            Ok(old) => Some(old),
            Err(e) => {
                s.dkgs.abort(&id);
                return Err(refuse(&s, &peer, op, &sid, index, e).await);
            }
        },
    };
    let made = match &old {
        None => threshold::dkg::part3(start.secret, &start.round1, &start.round2),
        Some(old) => threshold::dkg::refresh_part3(start.secret, &start.round1, &start.round2, old),
    };
    drop(old);
    let made = made
        .map_err(|e| match e {
            threshold::Error::DkgCheater { culprit } => {
                let name = params.peer(culprit.get()).map(|p| p.name.clone()).unwrap_or_default();
                tracing::warn!(secret_id = %sid, culprit = culprit.get(), peer = %name, "DKG: a holder's share fails its commitment");
                let mut e = ApiError::bad(Reason::DkgCheater);
                e.named = Some(vec![wire::CustodianFailure {
                    name: name.clone(),
                    reason: Reason::DkgCheater,
                }]);
                (e, format!("culprit={} peer={name}", culprit.get()))
            }
            e => {
                tracing::warn!(secret_id = %sid, error = %e, "DKG part 3 failed");
                (ApiError::bad(Reason::InvalidRound2Package), String::new())
            }
        })
        .and_then(|share| {
            let public = share.public.as_bytes().to_vec();
            KeyEnvelope::new(*id.as_bytes(), params.epoch, share.key_package, share.public, share.commitment)
                .map(|envelope| (envelope.encode(), public))
                .map_err(|e| {
                    tracing::error!(secret_id = %sid, error = %e, "DKG key envelope failed");
                    (ApiError::ours(Reason::Internal), String::new())
                })
        });
    let (encoded, public) = match made {
        Ok(made) => made,
        Err((e, detail)) => {
            s.dkgs.abort(&id);
            return Err(refuse_with(&s, &peer, op, &sid, index, detail, e).await);
        }
    };
    // Invariant: MAX_HOLDERS is 16, so a holder number fits in u8.
    let env = Deposited {
        secret_id: id,
        index: holder as u8,
        epoch: params.epoch,
        kind: params.kind.as_str(),
    };
    let mut audit = event(&peer, op, &sid, index, "ok", "");
    audit.detail = format!("kind={} transcript={transcript_hex}", params.kind);
    let pending = params.refreshes.is_some();
    let stored = seal_and_store(&s, params.owner.clone(), encoded, &env, pending, audit).await;
    let (outcome, key_version) = match stored {
        Ok(stored) => stored,
        Err(e) => {
            s.dkgs.abort(&id);
            return Err(refuse(&s, &peer, op, &sid, index, e).await);
        }
    };
    #[cfg(feature = "fault-injection")]
    if pending {
        crate::fault::exit_at("exit-after-pending-store");
    }
    if outcome == DepositOutcome::Conflict {
        s.dkgs.abort(&id);
        return Err(refuse(&s, &peer, op, &sid, index, step_error(Step::Exists)).await);
    }
    let answer = DkgFinishResponse {
        holder,
        epoch: params.epoch,
        public: B64.encode(&public),
        key_version,
        already_stored: outcome == DepositOutcome::AlreadyStored,
    };
    s.dkgs.done(&id, answer.clone());
    tracing::info!(peer = %peer.0, secret_id = %sid, holder, kind = %params.kind, "DKG finished: key package stored");
    let status = if answer.already_stored {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(answer)).into_response())
}
