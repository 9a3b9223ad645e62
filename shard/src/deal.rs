//! Dealing: from one secret to `n` complete envelopes plus the commitments that go
//! into the manifest, and back from envelopes to the secret.

use crate::split::{combine, split, IndexedShare};
use crate::{Commitment, Error, Salt, Secret, SecretId, ShardEnvelope, Threshold};

/// Splits `secret` and wraps each share in an envelope with a fresh salt from `rng`.
/// Returns the envelopes in index order (shard `i` at position `i - 1`).
pub fn deal<R: rand::CryptoRng>(
    secret: &Secret,
    threshold: Threshold,
    secret_id: SecretId,
    epoch: u32,
    rng: &mut R,
) -> Vec<ShardEnvelope> {
    split(secret, threshold, rng)
        .into_iter()
        .map(|share| {
            let mut salt = Salt([0u8; 32]);
            rng.fill_bytes(&mut salt.0);
            ShardEnvelope {
                secret_id,
                index: share.index,
                threshold,
                epoch,
                salt,
                share: share.bytes.clone(),
            }
        })
        .collect()
}

/// The commitments of dealt envelopes, in the same order.
pub fn commitments(envelopes: &[ShardEnvelope]) -> Vec<Commitment> {
    envelopes.iter().map(ShardEnvelope::commitment).collect()
}

/// Combines envelopes without a manifest (e.g. in tests, or when the manifest is
/// checked elsewhere). Refuses envelopes of different secrets, epochs or parameters.
pub fn combine_envelopes(envelopes: &[ShardEnvelope]) -> Result<Secret, Error> {
    let first = envelopes
        .first()
        .ok_or(Error::NotEnoughShards { have: 0, need: 2 })?;
    for e in envelopes {
        if e.secret_id != first.secret_id {
            return Err(Error::MixedSecrets);
        }
        if e.epoch != first.epoch {
            return Err(Error::MixedEpochs);
        }
        if e.threshold != first.threshold || e.share.len() != first.share.len() {
            return Err(Error::MixedParameters);
        }
    }
    let shares: Vec<IndexedShare> = envelopes
        .iter()
        .map(|e| IndexedShare {
            index: e.index,
            bytes: e.share.clone(),
        })
        .collect();
    combine(first.threshold.t(), &shares)
}
