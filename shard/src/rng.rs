//! The generator every key and polynomial coefficient comes from.
//!
//! The enroller draws 32 bytes from its token (`C_GenerateRandom`) and 32 from the
//! OS, and seeds a ChaCha-based CSPRNG with SHA-256 over both: the result is
//! unpredictable as long as either source is.

use rand::{rngs::StdRng, SeedableRng};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// A CSPRNG seeded from token and OS entropy. Build one per enrollment and drop it after.
pub fn mixed_rng(token_entropy: &[u8; 32], os_entropy: &[u8; 32]) -> StdRng {
    let mut h = Sha256::new();
    h.update(b"shard-rng-seed-v1\0");
    h.update(token_entropy);
    h.update(os_entropy);
    let seed = Zeroizing::new(<[u8; 32]>::from(h.finalize()));
    StdRng::from_seed(*seed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn either_source_changes_the_stream() {
        let a = mixed_rng(&[1; 32], &[2; 32]).next_u64();
        assert_ne!(a, mixed_rng(&[1; 32], &[3; 32]).next_u64());
        assert_ne!(a, mixed_rng(&[4; 32], &[2; 32]).next_u64());
        assert_eq!(a, mixed_rng(&[1; 32], &[2; 32]).next_u64());
    }
}
