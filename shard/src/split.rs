//! Shamir secret sharing over GF(2^8) with the `blahaj` crate.
//!
//! `blahaj` is the maintained fork of `sharks` with the fix for RUSTSEC-2024-0398
//! (biased polynomial coefficients). Its own `recover` does not refuse duplicate
//! indices or index 0, so [`combine`] checks those before calling it.

use blahaj::{Share, Sharks};
use zeroize::Zeroizing;

use crate::{Error, Secret, ShareBytes};

/// Largest number of shards.
pub const MAX_SHARDS: u8 = 16;

/// A validated `t`-of-`n` threshold: `2 <= t <= n <= 16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Threshold {
    t: u8,
    n: u8,
}

impl Threshold {
    /// Checks `2 <= t <= n <= 16`.
    pub fn new(t: u8, n: u8) -> Result<Self, Error> {
        if t < 2 || t > n || n > MAX_SHARDS {
            return Err(Error::InvalidThreshold { t, n });
        }
        Ok(Threshold { t, n })
    }

    /// Shards needed to recover.
    pub fn t(self) -> u8 {
        self.t
    }

    /// Shards made.
    pub fn n(self) -> u8 {
        self.n
    }
}

/// One share: its index (1..=n) and value bytes (as long as the secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedShare {
    /// Evaluation point, 1..=n.
    pub index: u8,
    /// Share value, one byte per secret byte.
    pub bytes: ShareBytes,
}

/// Splits `secret` into `n` shares, any `t` of which recover it.
///
/// Every polynomial coefficient comes from `rng`; the enroller passes a generator
/// seeded from its token's randomness mixed with the OS generator
/// ([`crate::rng::mixed_rng`]).
pub fn split<R: rand::CryptoRng>(
    secret: &Secret,
    threshold: Threshold,
    rng: &mut R,
) -> Vec<IndexedShare> {
    Sharks(threshold.t)
        .dealer_rng(secret.expose(), rng)
        .take(usize::from(threshold.n))
        .map(|share| {
            let raw = Zeroizing::new(Vec::from(&share));
            IndexedShare {
                index: raw[0],
                bytes: ShareBytes::new(raw[1..].to_vec()),
            }
        })
        .collect()
}

/// Combines at least `t` shares into the secret.
///
/// Refuses index 0, duplicate indices, unequal lengths and fewer than `t` shares,
/// each with its own error. Uses the first `t` shares given.
pub fn combine(t: u8, shares: &[IndexedShare]) -> Result<Secret, Error> {
    let mut seen = [false; 256];
    let len = shares.first().map(|s| s.bytes.len()).unwrap_or(0);
    for s in shares {
        if s.index == 0 {
            return Err(Error::IndexZero);
        }
        if seen[usize::from(s.index)] {
            return Err(Error::DuplicateIndex(s.index));
        }
        seen[usize::from(s.index)] = true;
        if s.bytes.len() != len {
            return Err(Error::MixedParameters);
        }
    }
    if t < 2 || shares.len() < usize::from(t) {
        return Err(Error::NotEnoughShards {
            have: shares.len(),
            need: usize::from(t),
        });
    }
    if len == 0 {
        return Err(Error::SecretLength(0));
    }
    let parts: Vec<Share> = shares[..usize::from(t)]
        .iter()
        .map(|s| {
            let mut raw = Zeroizing::new(Vec::with_capacity(s.bytes.len() + 1));
            raw.push(s.index);
            raw.extend_from_slice(s.bytes.expose());
            // Invariant: raw has at least 2 bytes (index plus a non-empty value), the only
            // condition blahaj's conversion checks.
            Share::try_from(raw.as_slice()).map_err(|_| Error::SecretLength(0))
        })
        .collect::<Result<_, _>>()?;
    let secret = Sharks(t)
        .recover(&parts)
        .map_err(|_| Error::NotEnoughShards {
            have: shares.len(),
            need: usize::from(t),
        })?;
    Secret::new(secret)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::StdRng, SeedableRng};

    #[test]
    fn threshold_bounds() {
        assert!(Threshold::new(2, 2).is_ok());
        assert!(Threshold::new(16, 16).is_ok());
        for (t, n) in [(1, 4), (0, 0), (5, 4), (3, 17), (17, 17)] {
            assert_eq!(Threshold::new(t, n), Err(Error::InvalidThreshold { t, n }));
        }
    }

    #[test]
    fn three_of_four_round_trip_and_refusals() {
        let mut rng = StdRng::from_seed([7; 32]);
        let secret = Secret::from_slice(b"correct horse battery staple").unwrap();
        let shares = split(&secret, Threshold::new(3, 4).unwrap(), &mut rng);
        assert_eq!(shares.len(), 4);
        assert_eq!(
            shares.iter().map(|s| s.index).collect::<Vec<_>>(),
            vec![1, 2, 3, 4]
        );
        assert_eq!(combine(3, &shares[1..]).unwrap(), secret);
        assert_eq!(
            combine(3, &shares[..2]),
            Err(Error::NotEnoughShards { have: 2, need: 3 })
        );
        let dup = vec![shares[0].clone(), shares[0].clone(), shares[1].clone()];
        assert_eq!(combine(3, &dup), Err(Error::DuplicateIndex(1)));
        let mut zero = shares.clone();
        zero[0].index = 0;
        assert_eq!(combine(3, &zero), Err(Error::IndexZero));
    }
}
