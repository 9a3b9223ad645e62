//! Reshare: the three steps the enroller coordinates (open, deal, finish), each for the
//! enroller only. State between steps lives in [`crate::reshare`], in memory; a dealer's
//! sub-shares go to the new holders over the peer channel ([`super::peer`]), never
//! through the enroller.
//!
//! A step that is refused after it took the reshare's secrets (a cheating dealer, a
//! malformed relayed value) ends the reshare here; the coordinator aborts it everywhere.

use std::collections::{BTreeMap, BTreeSet};

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use base64::Engine;
use certs::{Role, SpiffeId};
use shard::SecretId;
use threshold::{Commitment, HolderId, KeyEnvelope, Kind, PublicKeyPackage, Threshold, Zeroizing};
use wire::dkg::DkgFinishResponse;
use wire::reshare::{
    PeerReshare, ReshareDeal, ReshareDealResponse, ReshareFinish, ReshareOpen, ReshareOpenResponse,
};
use wire::Reason;

use super::dkg::{holder_named, stored_key_share, valid_peers};
use super::shards::{seal_and_store, Deposited};
use super::signing::fresh_rng;
use super::{
    blocking, event, keyed_body, refuse, refuse_with, step_error, ApiError, AppState, Peer, Shared,
    B64,
};
use crate::reshare::{DealStart, Dealt, FinishStart, Params, Step};
use crate::store::DepositOutcome;

async fn start<T>(
    s: &AppState,
    peer: &Peer,
    op: &'static str,
    raw_id: &str,
    body: Result<Json<T>, JsonRejection>,
) -> Result<(SecretId, String, T), ApiError> {
    keyed_body(s, peer, op, raw_id, &[Role::Enroller], body, Ok).await
}

/// Open's parameters, checked: a user owner of this trust domain, a signing kind, a new
/// threshold, the next epoch, one new holder per number `1..=n` in order, dealers under
/// increasing old holder numbers, and this custodian among one or the other.
fn params(s: &AppState, req: ReshareOpen) -> Result<Params, ApiError> {
    let bad = || ApiError::bad(Reason::InvalidReshare);
    let owner = match req.owner.parse::<SpiffeId>() {
        Ok(o) if o.role() == Role::User && o.trust_domain() == &s.trust_domain => o,
        _ => return Err(ApiError::bad(Reason::InvalidOwner)),
    };
    let kind: Kind = req.kind.parse().map_err(|_| bad())?;
    let split = Threshold::new(req.t, req.n).map_err(|_| bad())?;
    let next = req.from_epoch >= 1 && req.from_epoch.checked_add(1) == Some(req.epoch);
    if !next || req.peers.len() != usize::from(split.n()) || req.dealers.len() < 2 {
        return Err(bad());
    }
    let increasing =
        |i: usize, holder: u16| i == 0 || req.dealers.get(i - 1).is_some_and(|p| p.holder < holder);
    if !valid_peers(&req.peers, |i, holder| usize::from(holder) == i + 1)
        || !valid_peers(&req.dealers, increasing)
    {
        return Err(bad());
    }
    let me = holder_named(&req.peers, s.name.as_str());
    let dealer = holder_named(&req.dealers, s.name.as_str());
    if me.is_none() && dealer.is_none() {
        return Err(bad());
    }
    Ok(Params {
        owner: owner.to_string(),
        kind,
        t: split.t(),
        n: split.n(),
        epoch: req.epoch,
        from: req.from_epoch,
        peers: req.peers,
        dealers: req.dealers,
        me,
        dealer,
    })
}

/// What open needs of the store: no row at the new epoch, and for a dealer the owner's
/// committed key package of this kind under its old holder number at the epoch dealt from.
async fn fits_the_store(
    s: &AppState,
    id: SecretId,
    sid: &str,
    params: &Params,
) -> Result<(), ApiError> {
    let store = s.store.clone();
    let (epoch, from) = (params.epoch, params.from);
    let (next, old) = blocking("reshare_open", sid, move || {
        Ok((
            store.fetch(&id, Some(epoch))?,
            store.fetch(&id, Some(from))?,
        ))
    })
    .await?;
    if next.is_some() {
        return Err(step_error(Step::Exists));
    }
    let Some(dealer) = params.dealer else {
        return Ok(());
    };
    match old {
        Some(row)
            if row.owner == params.owner
                && row.kind == params.kind.as_str()
                && u16::from(row.index) == dealer.get()
                && !row.pending =>
        {
            Ok(())
        }
        _ => Err(ApiError::new(StatusCode::NOT_FOUND, Reason::NotFound)),
    }
}

pub(crate) async fn open(
    State(s): State<Shared>,
    Extension(peer): Extension<Peer>,
    Path(raw_id): Path<String>,
    body: Result<Json<ReshareOpen>, JsonRejection>,
) -> Result<Response, ApiError> {
    let op = "reshare_open";
    let (id, sid, req) = start(&s, &peer, op, &raw_id, body).await?;
    let params = match params(&s, req) {
        Ok(p) => p,
        Err(e) => return Err(refuse(&s, &peer, op, &sid, -1, e).await),
    };
    let index = params.me.map_or(-1, |h| i64::from(h.get()));
    if let Err(e) = fits_the_store(&s, id, &sid, &params).await {
        return Err(refuse(&s, &peer, op, &sid, index, e).await);
    }
    let (holder, dealer) = (
        params.me.map(HolderId::get),
        params.dealer.map(HolderId::get),
    );
    let left = match s.reshares.open(id, params) {
        Ok(left) => left,
        Err(step) => return Err(refuse(&s, &peer, op, &sid, index, step_error(step)).await),
    };
    tracing::info!(peer = %peer.0, secret_id = %sid, ?holder, ?dealer, "reshare opened");
    Ok(Json(ReshareOpenResponse {
        holder,
        dealer,
        deadline_ms: left.as_millis() as u64,
    })
    .into_response())
}

pub(crate) async fn deal(
    State(s): State<Shared>,
    Extension(peer): Extension<Peer>,
    Path(raw_id): Path<String>,
    body: Result<Json<ReshareDeal>, JsonRejection>,
) -> Result<Response, ApiError> {
    let op = "reshare_deal";
    let (id, sid, _) = start(&s, &peer, op, &raw_id, body).await?;
    let (params, sending, commitment, public) = match s.reshares.deal(&id) {
        Ok(DealStart::Fresh(params)) => match dealt(&s, &peer, op, id, &sid, &params).await {
            Ok((sending, commitment, public)) => (params, sending, commitment, public),
            Err(e) => {
                s.reshares.abort(&id);
                return Err(refuse(&s, &peer, op, &sid, -1, e).await);
            }
        },
        Ok(DealStart::Resend(params, sending, commitment, public)) => {
            (params, sending, commitment, public)
        }
        Err(step) => return Err(refuse(&s, &peer, op, &sid, -1, step_error(step)).await),
    };
    // Invariant: `deal` starts only for a dealer.
    let dealer = params.dealer.map_or(0, HolderId::get);
    let mut sends = Vec::with_capacity(sending.len());
    for (to, share) in sending {
        let Some(entry) = params.peer(to.get()) else {
            return Err(refuse(
                &s,
                &peer,
                op,
                &sid,
                -1,
                ApiError::bad(Reason::InvalidReshare),
            )
            .await);
        };
        #[cfg(feature = "fault-injection")]
        let share = crate::fault::sub_share(params.kind, share);
        let req = PeerReshare {
            secret_id: sid.clone(),
            from: dealer,
            to: to.get(),
            share: Zeroizing::new(B64.encode(&*share)),
        };
        sends.push((entry, req));
    }
    if let Err((name, e)) = super::peer::send_all(&s, &sid, sends).await {
        let detail = format!("peer={name}");
        return Err(refuse_with(&s, &peer, op, &sid, i64::from(dealer), detail, e).await);
    }
    let mut audit = event(&peer, op, &sid, i64::from(dealer), "ok", "");
    audit.detail = format!("epoch={} to={}", params.from, params.epoch);
    s.journal.record(audit).await;
    tracing::info!(peer = %peer.0, secret_id = %sid, dealer, "reshare: every new holder took its sub-share");
    Ok(Json(ReshareDealResponse {
        dealer,
        commitment: B64.encode(commitment),
        public: B64.encode(public),
    })
    .into_response())
}

/// A dealer's first deal: its stored key package of the epoch dealt from, weighted and
/// split among the new holders. Answers the sub-shares to send and the public values.
#[allow(clippy::type_complexity)]
async fn dealt(
    s: &AppState,
    peer: &Peer,
    op: &'static str,
    id: SecretId,
    sid: &str,
    params: &Params,
) -> Result<(Vec<(HolderId, Zeroizing<Vec<u8>>)>, Vec<u8>, Vec<u8>), ApiError> {
    let old = stored_key_share(s, peer, op, id, sid, params.from).await?;
    let quorum = params
        .dealers
        .iter()
        .map(|d| HolderId::new(d.holder))
        .collect::<Result<BTreeSet<_>, _>>()
        .map_err(|_| ApiError::bad(Reason::InvalidReshare))?;
    let to =
        Threshold::new(params.t, params.n).map_err(|_| ApiError::bad(Reason::InvalidReshare))?;
    let mut rng = fresh_rng(id.as_bytes())?;
    let dealing =
        threshold::reshare::deal(&old.key_package, &quorum, to, &mut rng).map_err(|e| {
            tracing::warn!(secret_id = %sid, error = %e, "reshare: cannot deal");
            ApiError::bad(Reason::InvalidReshare)
        })?;
    drop(rng);
    let dealt = Dealt {
        commitment: dealing.commitment.as_bytes().to_vec(),
        public: old.public.as_bytes().to_vec(),
        outgoing: dealing.shares,
    };
    let answer = (
        dealt.sending(),
        dealt.commitment.clone(),
        dealt.public.clone(),
    );
    s.reshares.dealt(&id, dealt).map_err(step_error)?;
    Ok(answer)
}

pub(crate) async fn finish(
    State(s): State<Shared>,
    Extension(peer): Extension<Peer>,
    Path(raw_id): Path<String>,
    body: Result<Json<ReshareFinish>, JsonRejection>,
) -> Result<Response, ApiError> {
    let op = "reshare_finish";
    let (id, sid, req) = start(&s, &peer, op, &raw_id, body).await?;
    let (params, shares) = match s.reshares.finish(&id) {
        Ok(FinishStart::Start(params, shares)) => (params, shares),
        Ok(FinishStart::Done(answer)) => {
            return Ok(Json(DkgFinishResponse {
                already_stored: true,
                ..answer
            })
            .into_response())
        }
        Err(step) => return Err(refuse(&s, &peer, op, &sid, -1, step_error(step)).await),
    };
    // Invariant: `finish` starts only for a new holder.
    let Some(me) = params.me else {
        return Err(ApiError::ours(Reason::Internal));
    };
    let index = i64::from(me.get());
    let made = combined(&params, me, &req, shares).and_then(|share| {
        let public = share.public.as_bytes().to_vec();
        KeyEnvelope::new(
            *id.as_bytes(),
            params.epoch,
            share.key_package,
            share.public,
            share.commitment,
        )
        .map(|envelope| (envelope.encode(), public))
        .map_err(|e| {
            tracing::error!(secret_id = %sid, error = %e, "reshare key envelope failed");
            (ApiError::ours(Reason::Internal), String::new())
        })
    });
    let (encoded, public) = match made {
        Ok(made) => made,
        Err((e, detail)) => {
            s.reshares.abort(&id);
            return Err(refuse_with(&s, &peer, op, &sid, index, detail, e).await);
        }
    };
    // Invariant: MAX_HOLDERS is 16, so a holder number fits in u8.
    let env = Deposited {
        secret_id: id,
        index: me.get() as u8,
        epoch: params.epoch,
        kind: params.kind.as_str(),
    };
    let mut audit = event(&peer, op, &sid, index, "ok", "");
    audit.detail = format!("kind={} from={}", params.kind, params.from);
    let stored = seal_and_store(&s, params.owner.clone(), encoded, &env, true, audit).await;
    let (outcome, key_version) = match stored {
        Ok(stored) => stored,
        Err(e) => {
            s.reshares.abort(&id);
            return Err(refuse(&s, &peer, op, &sid, index, e).await);
        }
    };
    #[cfg(feature = "fault-injection")]
    crate::fault::exit_at("exit-after-pending-store");
    if outcome == DepositOutcome::Conflict {
        s.reshares.abort(&id);
        return Err(refuse(&s, &peer, op, &sid, index, step_error(Step::Exists)).await);
    }
    let answer = DkgFinishResponse {
        holder: me.get(),
        epoch: params.epoch,
        public: B64.encode(&public),
        key_version,
        already_stored: outcome == DepositOutcome::AlreadyStored,
    };
    s.reshares.done(&id, answer.clone());
    tracing::info!(peer = %peer.0, secret_id = %sid, holder = me.get(), "reshare finished: key package stored");
    let status = if answer.already_stored {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(answer)).into_response())
}

/// The new key share from the dealers' sub-shares, checked against the relayed old public
/// key package and the commitments every dealer announced. A dealer whose sub-share does
/// not check is named in the refusal.
fn combined(
    params: &Params,
    me: HolderId,
    req: &ReshareFinish,
    shares: BTreeMap<HolderId, threshold::reshare::SubShare>,
) -> Result<threshold::dkg::KeyShare, (ApiError, String)> {
    let bad = || (ApiError::bad(Reason::InvalidRound1Package), String::new());
    let public = B64
        .decode(req.public.as_bytes())
        .ok()
        .and_then(|bytes| PublicKeyPackage::decode(params.kind, &bytes).ok())
        .ok_or_else(bad)?;
    let in_order = req.dealings.len() == params.dealers.len()
        && req
            .dealings
            .iter()
            .zip(&params.dealers)
            .all(|(d, p)| d.holder == p.holder);
    if !in_order {
        return Err(bad());
    }
    let mut dealings = BTreeMap::new();
    let mut shares = shares;
    for d in &req.dealings {
        let dealer = HolderId::new(d.holder).map_err(|_| bad())?;
        let share = shares.remove(&dealer).ok_or_else(bad)?;
        let commitment = B64
            .decode(d.package.as_bytes())
            .ok()
            .and_then(|bytes| Commitment::decode(params.kind, &bytes).ok())
            .ok_or_else(bad)?;
        dealings.insert(dealer, (commitment, share));
    }
    let to = Threshold::new(params.t, params.n).map_err(|_| bad())?;
    threshold::reshare::combine(me, to, &public, &dealings).map_err(|e| match e {
        threshold::Error::DkgCheater { culprit } => {
            let name = params
                .dealer_entry(culprit.get())
                .map(|p| p.name.clone())
                .unwrap_or_default();
            tracing::warn!(culprit = culprit.get(), peer = %name, "reshare: a dealer's sub-share fails its commitment");
            let mut e = ApiError::bad(Reason::DkgCheater);
            e.named = Some(vec![wire::CustodianFailure {
                name: name.clone(),
                reason: Reason::DkgCheater,
            }]);
            (e, format!("culprit={} peer={name}", culprit.get()))
        }
        e => {
            tracing::warn!(error = %e, "reshare: the sub-shares do not combine");
            (ApiError::bad(Reason::InvalidRound2Package), String::new())
        }
    })
}
