//! Recovery: check every returned shard against the verified manifest, name the
//! custodians that returned bad ones, and combine from valid ones.

use std::fmt;

use zeroize::Zeroizing;

use crate::split::{combine, IndexedShare};
use crate::{CustodianId, Error, Manifest, Secret, SecretKind, ShardEnvelope};

/// What one custodian returned at recovery (an encoded [`ShardEnvelope`]).
pub struct Returned {
    /// Who returned it (from the verified TLS identity, not from the payload).
    pub custodian: CustodianId,
    /// The encoded envelope. Zeroized on drop.
    pub envelope: Zeroizing<Vec<u8>>,
}

/// Why a returned shard was not used.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// The envelope does not decode.
    Malformed(Error),
    /// The custodian is not listed in the manifest.
    NotInManifest,
    /// The envelope carries another index than the one the manifest gives this custodian.
    WrongIndex {
        /// Index the manifest assigns.
        expected: u8,
        /// Index in the envelope.
        got: u8,
    },
    /// The envelope belongs to another secret.
    WrongSecret,
    /// The envelope belongs to another epoch.
    WrongEpoch,
    /// The envelope disagrees with the manifest on `t` or `n`.
    WrongParameters,
    /// The shard does not match its commitment: altered, or another shard.
    CommitmentMismatch,
    /// The same custodian answered twice; only the first answer counts.
    Duplicate,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Malformed(e) => write!(f, "malformed shard ({e})"),
            Fault::NotInManifest => f.write_str("not a custodian of this secret"),
            Fault::WrongIndex { expected, got } => {
                write!(f, "returned shard {got}, holds shard {expected}")
            }
            Fault::WrongSecret => f.write_str("returned a shard of another secret"),
            Fault::WrongEpoch => f.write_str("returned a shard of another epoch"),
            Fault::WrongParameters => f.write_str("returned a shard with other parameters"),
            Fault::CommitmentMismatch => f.write_str("shard does not match the signed manifest"),
            Fault::Duplicate => f.write_str("answered twice"),
        }
    }
}

/// A successful recovery.
#[derive(Debug)]
pub struct Recovered {
    /// The secret.
    pub secret: Secret,
    /// The custodians whose shards were combined, in the order used.
    pub used: Vec<CustodianId>,
    /// Custodians that returned a bad shard, and why.
    pub bad: Vec<(CustodianId, Fault)>,
}

/// Why recovery failed. Retry only with more custodians' answers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecoverError {
    /// Fewer valid shards than the threshold.
    #[error("{valid} of {needed} shards verified")]
    NotEnoughValid {
        /// Shards that verified.
        valid: usize,
        /// The threshold.
        needed: usize,
        /// Custodians that returned a bad shard, and why.
        bad: Vec<(CustodianId, Fault)>,
    },
    /// The combined secret does not match the manifest's public key: the manifest's
    /// signer committed to inconsistent shards.
    #[error("recovered key does not match the manifest's public key")]
    PublicKeyMismatch,
    /// Combining verified shards failed.
    #[error("combining shards failed: {0}")]
    Combine(Error),
}

/// Checks each returned shard against `manifest` (which the caller has verified with
/// [`crate::SignedManifest::verify`]), reports every bad one by custodian, and combines
/// the first `t` valid shards.
pub fn combine_verified(
    manifest: &Manifest,
    returned: Vec<Returned>,
) -> Result<Recovered, RecoverError> {
    let t = manifest.threshold.t();
    let mut bad = Vec::new();
    let mut valid: Vec<(CustodianId, IndexedShare)> = Vec::new();
    let mut answered: Vec<CustodianId> = Vec::new();
    for r in returned {
        if answered.contains(&r.custodian) {
            bad.push((r.custodian, Fault::Duplicate));
            continue;
        }
        answered.push(r.custodian.clone());
        match check(manifest, &r) {
            Ok(share) => valid.push((r.custodian, share)),
            Err(fault) => bad.push((r.custodian, fault)),
        }
    }
    if valid.len() < usize::from(t) {
        return Err(RecoverError::NotEnoughValid {
            valid: valid.len(),
            needed: usize::from(t),
            bad,
        });
    }
    valid.truncate(usize::from(t));
    let (used, shares): (Vec<_>, Vec<_>) = valid.into_iter().unzip();
    let secret = combine(t, &shares).map_err(RecoverError::Combine)?;
    if let SecretKind::P256(pk) = &manifest.kind {
        let matches = p256::SecretKey::from_slice(secret.expose())
            .map(|sk| sk.public_key() == *pk)
            .unwrap_or(false);
        if !matches {
            return Err(RecoverError::PublicKeyMismatch);
        }
    }
    Ok(Recovered { secret, used, bad })
}

/// Checks one returned shard against `manifest` by the rules [`combine_verified`]
/// applies, so a client can judge each answer as it arrives.
pub fn check_returned(manifest: &Manifest, returned: &Returned) -> Result<(), Fault> {
    check(manifest, returned).map(|_| ())
}

fn check(manifest: &Manifest, r: &Returned) -> Result<IndexedShare, Fault> {
    let env = ShardEnvelope::decode(&r.envelope).map_err(Fault::Malformed)?;
    let expected = manifest
        .index_of(&r.custodian)
        .ok_or(Fault::NotInManifest)?;
    if env.secret_id != manifest.secret_id {
        return Err(Fault::WrongSecret);
    }
    if env.epoch != manifest.epoch {
        return Err(Fault::WrongEpoch);
    }
    if env.threshold != manifest.threshold {
        return Err(Fault::WrongParameters);
    }
    if env.index != expected {
        return Err(Fault::WrongIndex {
            expected,
            got: env.index,
        });
    }
    let committed = &manifest.commitments[usize::from(expected) - 1];
    if !env.commitment().matches(committed) {
        return Err(Fault::CommitmentMismatch);
    }
    Ok(IndexedShare {
        index: env.index,
        bytes: env.share.clone(),
    })
}
