//! The commitment salt: 32 random bytes per shard, carried only inside the sealed
//! envelope and hashed into the shard's public commitment.
//!
//! Its own module because both the envelope (which carries it) and the commitment
//! (which hashes it) need it, and neither should depend on the other for it.

use std::fmt;

use zeroize::Zeroize;

/// A 32-byte commitment salt. Zeroized on drop, never printed.
#[derive(Clone, PartialEq, Eq, Zeroize)]
#[zeroize(drop)]
pub struct Salt(pub [u8; 32]);

impl fmt::Debug for Salt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Salt(..)")
    }
}
