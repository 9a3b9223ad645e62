//! Keys born distributed: the enroller coordinates FROST's DKG among the custodians and
//! sees only public values.
//!
//! Round 1 asks every custodian for its public round-1 package; round 2 relays all of
//! them to every custodian, each of which sends its secret round-2 packages straight to
//! the others over the peer channel; finish has each custodian check what it received,
//! seal and store its key package and answer the group's public key package, which must
//! be the same everywhere. Any failure is taken back by the caller
//! ([`crate::distribute::take_back`], which also aborts the DKG at every custodian).

use std::sync::Arc;

use base64::Engine;
use mtls::Client;
use shard::{CustodianId, SecretId};
use threshold::{Kind, PublicKeyPackage};
use wire::dkg::{DkgFinish, DkgPackage, DkgPeer, DkgRound1, DkgRound2};
use wire::{CustodianFailure, Reason};

use crate::distribute::{all_or_failed, each, Failed};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The custodians that finishing holders named as cheaters (`dkg_cheater`), once each.
pub(crate) fn cheaters<T>(
    outcomes: &[(&CustodianId, Result<T, mtls::Error>)],
) -> Vec<CustodianFailure> {
    let mut named: Vec<CustodianFailure> = Vec::new();
    for (_, outcome) in outcomes {
        if let Err(mtls::Error::Refused { body, .. }) = outcome {
            if body.reason == Reason::DkgCheater {
                for c in body.custodians.iter().flatten() {
                    if !named.iter().any(|n| n.name == c.name) {
                        named.push(c.clone());
                    }
                }
            }
        }
    }
    named
}

/// Why a DKG did not give a key.
#[derive(Debug)]
pub enum DkgFailed {
    /// Custodians failed a step; each is named with its reason.
    Custodians(Failed),
    /// Every custodian finished, but their public key packages differ (or do not decode,
    /// or name another threshold or holder set).
    Disagree,
}

/// What a DKG makes: whose key, of which kind and threshold, its id and epoch, and for a
/// refresh the epoch it starts from.
#[derive(Debug, Clone, Copy)]
pub struct KeyRun<'a> {
    /// The owner's SPIFFE id.
    pub owner: &'a str,
    /// The key kind.
    pub kind: Kind,
    /// `t` of `n`.
    pub threshold: shard::Threshold,
    /// The key's id.
    pub secret_id: SecretId,
    /// The epoch made.
    pub epoch: u32,
    /// The epoch refreshed, or `None` for a new key.
    pub refreshes: Option<u32>,
}

/// A DKG of one key among `custodians` (or, with `refreshes`, a refresh of the key
/// package stored at that epoch into `epoch`: the same steps over sharings of zero) (holder `i + 1` is `custodians[i]`, reached by its
/// peers as `peers[i]`), for `owner`. Answers the group's public key package.
pub async fn run(
    custodians: &[(CustodianId, Arc<Client>)],
    peers: &[DkgPeer],
    key: &KeyRun<'_>,
) -> Result<PublicKeyPackage, DkgFailed> {
    let KeyRun {
        owner,
        kind,
        threshold,
        secret_id,
        epoch,
        refreshes,
    } = *key;
    let sid = secret_id.to_string();
    let round1 = DkgRound1 {
        secret_id: sid.clone(),
        owner: owner.to_owned(),
        kind: kind.as_str().to_owned(),
        t: u16::from(threshold.t()),
        n: u16::from(threshold.n()),
        epoch,
        peers: peers.to_vec(),
        refreshes,
    };
    let round1 = &round1;
    let answers = all_or_failed(each(custodians, |_, c| c.call(round1)).await)
        .map_err(DkgFailed::Custodians)?;
    // Each custodian must answer as the holder it was given.
    let mut packages = Vec::with_capacity(answers.len());
    for (i, answer) in answers.into_iter().enumerate() {
        if usize::from(answer.holder) != i + 1 {
            return Err(DkgFailed::Disagree);
        }
        packages.push(DkgPackage {
            holder: answer.holder,
            package: answer.package,
        });
    }
    let round2 = DkgRound2 {
        secret_id: sid.clone(),
        round1: packages,
    };
    let round2 = &round2;
    let transcripts = all_or_failed(each(custodians, |_, c| c.call(round2)).await)
        .map_err(DkgFailed::Custodians)?;
    if transcripts
        .windows(2)
        .any(|w| w[0].transcript != w[1].transcript)
    {
        return Err(DkgFailed::Disagree);
    }
    let finish = DkgFinish {
        secret_id: sid.clone(),
    };
    let finish = &finish;
    let outcomes = each(custodians, |_, c| c.call(finish)).await;
    let accused = cheaters(&outcomes);
    let finished = all_or_failed(outcomes).map_err(|mut failure| {
        // Holders that found a share failing its sender's commitment name the sender:
        // report the cheater, not the custodians it cheated.
        if !accused.is_empty() {
            failure.failed = accused;
        }
        DkgFailed::Custodians(failure)
    })?;
    let first = finished.first().ok_or(DkgFailed::Disagree)?;
    let agree = finished.iter().enumerate().all(|(i, f)| {
        f.public == first.public && f.epoch == epoch && usize::from(f.holder) == i + 1
    });
    let public = B64
        .decode(first.public.as_bytes())
        .ok()
        .and_then(|bytes| PublicKeyPackage::decode(kind, &bytes).ok())
        .filter(|p| {
            agree
                && p.min_signers() == u16::from(threshold.t())
                && p.holders().len() == usize::from(threshold.n())
        })
        .ok_or(DkgFailed::Disagree)?;
    Ok(public)
}
