//! Salted per-shard commitments.
//!
//! `commitment_i = SHA-256("shard-commitment-v1\0" || salt_i || index_i || share_i)`.
//! The salt travels only inside the sealed shard, so the public manifest reveals
//! nothing about even a 1-byte share, yet a shard returned at recovery can be checked
//! against the manifest without trusting the custodian that returned it.

use std::fmt;

use sha2::{Digest, Sha256};
use subtle_eq::ct_eq;

use crate::salt::Salt;
use crate::ShareBytes;

/// A 32-byte salted commitment to one shard.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Commitment(pub [u8; 32]);

impl Commitment {
    /// Computes the commitment to `share` at `index` with `salt`.
    pub fn compute(salt: &Salt, index: u8, share: &ShareBytes) -> Commitment {
        let mut h = Sha256::new();
        h.update(b"shard-commitment-v1\0");
        h.update(salt.0);
        h.update([index]);
        h.update(share.expose());
        Commitment(h.finalize().into())
    }

    /// Compares in constant time.
    pub fn matches(&self, other: &Commitment) -> bool {
        ct_eq(&self.0, &other.0)
    }
}

impl fmt::Debug for Commitment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Commitment({})", hex::encode(self.0))
    }
}

mod subtle_eq {
    /// Constant-time equality of two 32-byte values.
    pub fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
        let mut diff = 0u8;
        for (x, y) in a.iter().zip(b.iter()) {
            diff |= x ^ y;
        }
        std::hint::black_box(diff) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_input_changes_it() {
        let s = ShareBytes::new(vec![1, 2, 3]);
        let c = Commitment::compute(&Salt([0; 32]), 1, &s);
        assert!(c.matches(&Commitment::compute(&Salt([0; 32]), 1, &s)));
        assert!(!c.matches(&Commitment::compute(&Salt([1; 32]), 1, &s)));
        assert!(!c.matches(&Commitment::compute(&Salt([0; 32]), 2, &s)));
        assert!(!c.matches(&Commitment::compute(
            &Salt([0; 32]),
            1,
            &ShareBytes::new(vec![1, 2, 4])
        )));
    }
}
