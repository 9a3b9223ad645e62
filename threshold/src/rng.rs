//! The generator every key, polynomial and nonce of this crate comes from.
//!
//! The crate reads no randomness of its own: every operation that draws takes
//! a [`CryptoRngCore`](rand_core::CryptoRngCore), and [`SeededRng`] makes one
//! from 32 bytes the caller gives (the services: their token-mixed randomness).

use rand_chacha::ChaCha20Rng;
use rand_core::{CryptoRng, RngCore, SeedableRng};
use zeroize::Zeroizing;

/// ChaCha20 seeded from 32 bytes. Build one per operation and drop it after;
/// `Debug` prints nothing of its state.
pub struct SeededRng(ChaCha20Rng);

impl SeededRng {
    /// The stream that `seed` determines. The seed must be secret and never
    /// reused: two operations drawing from one seed draw the same nonces.
    pub fn from_seed(seed: Zeroizing<[u8; 32]>) -> Self {
        SeededRng(ChaCha20Rng::from_seed(*seed))
    }
}

impl Drop for SeededRng {
    /// Overwrites the generator's state (its key and buffered output) in place with a
    /// stream of the zero seed, so that what was drawn cannot be drawn again from memory.
    fn drop(&mut self) {
        self.0 = ChaCha20Rng::from_seed([0; 32]);
        std::hint::black_box(&mut self.0);
    }
}

impl std::fmt::Debug for SeededRng {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SeededRng")
    }
}

impl RngCore for SeededRng {
    fn next_u32(&mut self) -> u32 {
        self.0.next_u32()
    }

    fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        self.0.fill_bytes(dest)
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.0.try_fill_bytes(dest)
    }
}

impl CryptoRng for SeededRng {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_determines_the_stream() {
        let draw = |seed: u8| SeededRng::from_seed(Zeroizing::new([seed; 32])).next_u64();
        assert_eq!(draw(1), draw(1));
        assert_ne!(draw(1), draw(2));
        assert_eq!(
            format!("{:?}", SeededRng::from_seed(Zeroizing::new([7; 32]))),
            "SeededRng"
        );
    }
}
