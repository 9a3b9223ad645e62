//! Reshare of a threshold-signing key: epoch `e` at one set of custodians to epoch `e + 1`
//! at another (custodians replaced, added or removed, another `t`), same group key, and
//! the key never rebuilt: a quorum of `t` old holders (the first `t` that answer, in
//! holder order) deal Lagrange-weighted sub-shares of their shares straight to the new
//! holders over the peer channel; the enroller relays only public values (each dealer's
//! commitment and the old public key package, checked against the signed manifest).
//!
//! The job is a refresh's (`users::Job`, kind `reshare`, with both sets): `prepare`
//! (pending rows of `e + 1` at the new holders), the turning point (the manifest of
//! `e + 1`, naming the new set, stored with the job's step `commit`), then `commit` at
//! the new holders and `DELETE e` at the old ones. Before the turning point, a failure
//! or a restart aborts at both sets; after it, the job only goes forward.

use base64::Engine;
use mtls::StatusCode;
use shard::{CustodianId, Manifest, SecretId, SecretKind, SignedManifest, Threshold};
use threshold::PublicKeyPackage;
use wire::dkg::{DkgPackage, DkgPeer};
use wire::enroller::RefreshResponse;
use wire::reshare::{ReshareDeal, ReshareFinish, ReshareOpen};
use wire::{CustodianFailure, Reason};

use crate::distribute::{all_or_failed, each, Failed};
use crate::refresh::{abort, db, drive, sign, Running};
use crate::routes::{ApiError, Shared};
use crate::set::Set;
use crate::users::Job;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn refused(status: StatusCode, reason: Reason) -> ApiError {
    ApiError::new(status, reason)
}

fn failed(reason: Reason, failure: Failed) -> ApiError {
    let mut e = ApiError::new(StatusCode::BAD_GATEWAY, reason);
    e.custodians = Some(failure.failed);
    e
}

/// Moves `owner`'s key `secret_id` to the custodians `names` (in holder order), `t` of
/// whom sign. Answers once the manifest of the new epoch is in force.
pub async fn reshare(
    s: &Shared,
    owner: &certs::SpiffeId,
    secret_id: SecretId,
    names: &[String],
    t: u8,
) -> Result<RefreshResponse, ApiError> {
    let id = *secret_id.as_bytes();
    let row = db(s, move |d| d.enrollment(&id)).await?;
    let Some(row) = row.filter(|r| r.owner == owner.to_string()) else {
        return Err(refused(StatusCode::NOT_FOUND, Reason::NotFound));
    };
    let signed = SignedManifest::decode(&row.manifest)
        .map_err(|e| crate::routes::internal(Reason::ManifestSigning, e))?;
    let manifest = signed.unverified().clone();
    let SecretKind::Signing { kind, group_key } = &manifest.kind else {
        return Err(refused(StatusCode::CONFLICT, Reason::ReshareNotForKind));
    };
    let kind: threshold::Kind = kind
        .parse()
        .map_err(|_| refused(StatusCode::CONFLICT, Reason::ReshareNotForKind))?;
    let new = new_set(s, names, t)?;
    let old = crate::set::resolve(&s.known, &manifest.custodians).map_err(|name| {
        tracing::warn!(%secret_id, custodian = %name, "reshare: a custodian of the manifest is not configured");
        refused(StatusCode::CONFLICT, Reason::CustodianSetChanged)
    })?;
    let Some(running) = Running::claim(id) else {
        return Err(refused(
            StatusCode::SERVICE_UNAVAILABLE,
            Reason::RefreshInProgress,
        ));
    };
    if let Some(job) = db(s, move |d| d.job(&id)).await? {
        // A job left unfinished (a crash, a custodian that was down) is finished or
        // aborted first; then the reshare starts over from the manifest in force.
        drive(s, &job).await;
        drop(running);
        if db(s, move |d| d.job(&id)).await?.is_some() {
            return Err(refused(
                StatusCode::SERVICE_UNAVAILABLE,
                Reason::RefreshInProgress,
            ));
        }
        return again(s, owner, secret_id, names, t).await;
    }
    let from = manifest.epoch;
    let to = from
        .checked_add(1)
        .ok_or_else(|| refused(StatusCode::CONFLICT, Reason::ReshareNotForKind))?;
    let job = Job {
        secret_id: id,
        kind: "reshare".into(),
        from_epoch: from,
        to_epoch: to,
        step: "prepare".into(),
        old: old.names(),
        new: new.set.names(),
    };
    let begun = job.clone();
    if !db(s, move |d| d.begin_job(&begun)).await? {
        return Err(refused(
            StatusCode::SERVICE_UNAVAILABLE,
            Reason::RefreshInProgress,
        ));
    }
    #[cfg(feature = "fault-injection")]
    crate::fault::at("reshare-after-begin");
    let run = Run {
        manifest: &manifest,
        kind,
        group_key,
        old: &old,
        new: &new,
        to,
    };
    let next = match prepare(s, &run).await {
        Ok(next) => next,
        Err(e) => {
            abort(s, &job).await;
            return Err(e);
        }
    };
    crate::refresh::turn(s, job, next).await
}

/// A reshare started over once an unfinished job was cleared.
fn again<'a>(
    s: &'a Shared,
    owner: &'a certs::SpiffeId,
    secret_id: SecretId,
    names: &'a [String],
    t: u8,
) -> std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<RefreshResponse, ApiError>> + Send + 'a>,
> {
    Box::pin(reshare(s, owner, secret_id, names, t))
}

/// The new set, checked: configured custodians, each once, `2 <= t <= n <= 16`.
struct NewSet {
    set: Set,
    threshold: Threshold,
}

fn new_set(s: &Shared, names: &[String], t: u8) -> Result<NewSet, ApiError> {
    let bad = || refused(StatusCode::BAD_REQUEST, Reason::InvalidReshare);
    let distinct = names
        .iter()
        .enumerate()
        .all(|(i, n)| CustodianId::new(n).is_ok() && !names[..i].contains(n));
    let n = u8::try_from(names.len()).map_err(|_| bad())?;
    let threshold = Threshold::new(t, n).map_err(|_| bad())?;
    if !distinct {
        return Err(bad());
    }
    let set = crate::set::resolve(&s.known, names).map_err(|_| bad())?;
    Ok(NewSet { set, threshold })
}

struct Run<'a> {
    manifest: &'a Manifest,
    kind: threshold::Kind,
    group_key: &'a [u8],
    old: &'a Set,
    new: &'a NewSet,
    to: u32,
}

/// The custodians' reshare (open, deal, finish), checked (same group key, every new
/// holder agreeing), and the manifest of `to` naming the new set, signed by the token.
async fn prepare(s: &Shared, run: &Run<'_>) -> Result<SignedManifest, ApiError> {
    let manifest = run.manifest;
    let sid = manifest.secret_id.to_string();
    let dealers = dealers(run.old, usize::from(manifest.threshold.t())).await?;
    // Every custodian that takes part, once: the dealers, then the new holders not among them.
    let mut taking_part: Vec<(CustodianId, std::sync::Arc<mtls::Client>)> = dealers
        .iter()
        .map(|(i, _)| run.old.clients[*i].clone())
        .collect();
    for (name, client) in &run.new.set.clients {
        if !taking_part.iter().any(|(c, _)| c == name) {
            taking_part.push((name.clone(), client.clone()));
        }
    }
    let open = ReshareOpen {
        secret_id: sid.clone(),
        owner: manifest.owner.clone(),
        kind: run.kind.as_str().to_owned(),
        t: u16::from(run.new.threshold.t()),
        n: u16::from(run.new.threshold.n()),
        epoch: run.to,
        from_epoch: manifest.epoch,
        peers: run.new.set.peers.clone(),
        dealers: dealers.iter().map(|(_, p)| p.clone()).collect(),
    };
    let open = &open;
    all_or_failed(each(&taking_part, |_, c| c.call(open)).await)
        .map_err(|f| failed(Reason::ReshareTooFewHolders, f))?;
    let dealer_clients: Vec<_> = dealers
        .iter()
        .map(|(i, _)| run.old.clients[*i].clone())
        .collect();
    let deal = ReshareDeal {
        secret_id: sid.clone(),
    };
    let deal = &deal;
    let dealt = all_or_failed(each(&dealer_clients, |_, c| c.call(deal)).await)
        .map_err(|f| failed(Reason::CustodiansFailed, f))?;
    #[cfg(feature = "fault-injection")]
    crate::fault::at("reshare-after-deal");
    // The old public key package every dealer dealt under must be the manifest's.
    let disagree = || refused(StatusCode::BAD_GATEWAY, Reason::CustodiansDisagree);
    let public = dealt
        .first()
        .map(|d| d.public.clone())
        .ok_or_else(disagree)?;
    let old_public = B64
        .decode(public.as_bytes())
        .ok()
        .and_then(|bytes| PublicKeyPackage::decode(run.kind, &bytes).ok())
        .ok_or_else(disagree)?;
    let digests = old_public
        .holder_digests()
        .map_err(|e| crate::routes::internal(Reason::Secret, e))?;
    let matches_manifest = old_public.group_key().as_bytes() == run.group_key
        && digests
            .iter()
            .map(|d| &d[..])
            .eq(manifest.commitments.iter().map(|c| &c.0[..]));
    let in_order = dealt
        .iter()
        .zip(&dealers)
        .all(|(d, (_, p))| d.dealer == p.holder && d.public == public);
    if !matches_manifest || !in_order {
        return Err(disagree());
    }
    let finish = ReshareFinish {
        secret_id: sid.clone(),
        public,
        dealings: dealt
            .iter()
            .map(|d| DkgPackage {
                holder: d.dealer,
                package: d.commitment.clone(),
            })
            .collect(),
    };
    let finish = &finish;
    let outcomes = each(&run.new.set.clients, |_, c| c.call(finish)).await;
    let accused = crate::dkg::cheaters(&outcomes);
    let finished = all_or_failed(outcomes).map_err(|mut failure| {
        if !accused.is_empty() {
            failure.failed = accused;
        }
        failed(Reason::CustodiansFailed, failure)
    })?;
    let first = finished.first().ok_or_else(disagree)?;
    let agree = finished.iter().enumerate().all(|(i, f)| {
        f.public == first.public && f.epoch == run.to && usize::from(f.holder) == i + 1
    });
    let new_public = B64
        .decode(first.public.as_bytes())
        .ok()
        .and_then(|bytes| PublicKeyPackage::decode(run.kind, &bytes).ok())
        .filter(|p| {
            agree
                && p.group_key().as_bytes() == run.group_key
                && p.min_signers() == u16::from(run.new.threshold.t())
                && p.holders().len() == usize::from(run.new.threshold.n())
        })
        .ok_or_else(disagree)?;
    let commitments = new_public
        .holder_digests()
        .map_err(|e| crate::routes::internal(Reason::Secret, e))?
        .into_iter()
        .map(shard::Commitment)
        .collect();
    let custodians = run.new.set.clients.iter().map(|(c, _)| c.clone()).collect();
    sign(
        s,
        Manifest {
            epoch: run.to,
            created_at: crate::routes::now() as u64,
            custodians,
            threshold: run.new.threshold,
            commitments,
            ..manifest.clone()
        },
    )
    .await
}

/// The dealers: the first `t` old holders (in holder order) that answer their health
/// check, each with its index in the old set and its entry under its old holder number.
/// Fewer than `t` answering is [`Reason::ReshareTooFewHolders`], naming the others.
async fn dealers(old: &Set, t: usize) -> Result<Vec<(usize, DkgPeer)>, ApiError> {
    let answers = each(&old.clients, |_, c| c.health()).await;
    let mut chosen = Vec::new();
    let mut silent = Vec::new();
    for (i, (name, answer)) in answers.into_iter().enumerate() {
        match answer {
            Ok(_) if chosen.len() < t => chosen.push((i, old.peers[i].clone())),
            Ok(_) => {}
            Err(e) => silent.push(CustodianFailure {
                name: name.to_string(),
                reason: crate::distribute::failure_reason(&e),
            }),
        }
    }
    if chosen.len() < t {
        let mut e = refused(StatusCode::BAD_GATEWAY, Reason::ReshareTooFewHolders);
        e.custodians = Some(silent);
        return Err(e);
    }
    Ok(chosen)
}
