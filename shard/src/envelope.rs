//! The versioned shard envelope: what the enroller deposits at a custodian and what
//! the custodian releases at recovery (sealed in between).
//!
//! ```text
//! magic      "SHEN"     4
//! version    u8         ENVELOPE_VERSION
//! secret id  [u8; 16]
//! index      u8         1..=n
//! t          u8
//! n          u8         2 <= t <= n <= 16
//! epoch      u32 BE
//! salt       [u8; 32]   commitment salt; secret, like the share
//! length     u32 BE     1..=65536
//! share      [u8; length]
//! ```
//!
//! The decoder accepts exactly this and nothing else: every other input is refused
//! with a typed error and no partial value.

use std::fmt;

use zeroize::Zeroizing;

use crate::commitment::Commitment;
use crate::salt::Salt;
use crate::{Error, SecretId, ShareBytes, Threshold, MAX_SECRET_LEN};

/// Version of the envelope layout written by this build.
pub const ENVELOPE_VERSION: u8 = 1;
const MAGIC: &[u8; 4] = b"SHEN";
const FIXED_LEN: usize = 4 + 1 + 16 + 1 + 1 + 1 + 4 + 32 + 4;

/// Largest encoded envelope.
pub const MAX_ENVELOPE_LEN: usize = FIXED_LEN + MAX_SECRET_LEN;

/// One shard with everything needed to check and combine it.
#[derive(Clone, PartialEq, Eq)]
pub struct ShardEnvelope {
    /// The secret this shard belongs to.
    pub secret_id: SecretId,
    /// Shamir index, 1..=n.
    pub index: u8,
    /// Threshold and count.
    pub threshold: Threshold,
    /// Enrollment epoch.
    pub epoch: u32,
    /// Commitment salt (secret: with it, a commitment would let one test guesses of a short share).
    pub salt: Salt,
    /// Share value.
    pub share: ShareBytes,
}

impl fmt::Debug for ShardEnvelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShardEnvelope")
            .field("secret_id", &self.secret_id)
            .field("index", &self.index)
            .field("threshold", &self.threshold)
            .field("epoch", &self.epoch)
            .field("share_len", &self.share.len())
            .finish_non_exhaustive()
    }
}

impl ShardEnvelope {
    /// The salted commitment to this shard.
    pub fn commitment(&self) -> Commitment {
        Commitment::compute(&self.salt, self.index, &self.share)
    }

    /// Encodes the envelope. The result holds the share, so it zeroizes on drop.
    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        let mut v = Zeroizing::new(Vec::with_capacity(FIXED_LEN + self.share.len()));
        v.extend_from_slice(MAGIC);
        v.push(ENVELOPE_VERSION);
        v.extend_from_slice(self.secret_id.as_bytes());
        v.push(self.index);
        v.push(self.threshold.t());
        v.push(self.threshold.n());
        v.extend_from_slice(&self.epoch.to_be_bytes());
        v.extend_from_slice(&self.salt.0);
        // Invariant: share length is at most 64 KiB, which fits in u32.
        v.extend_from_slice(&(self.share.len() as u32).to_be_bytes());
        v.extend_from_slice(self.share.expose());
        v
    }

    /// Decodes an envelope, refusing anything malformed with its own error.
    pub fn decode(bytes: &[u8]) -> Result<ShardEnvelope, Error> {
        const WHAT: &str = "shard envelope";
        if bytes.len() < 5 {
            return Err(Error::Truncated(WHAT));
        }
        if &bytes[..4] != MAGIC {
            return Err(Error::BadMagic(WHAT));
        }
        if bytes[4] != ENVELOPE_VERSION {
            return Err(Error::UnsupportedVersion {
                what: WHAT,
                version: bytes[4],
            });
        }
        if bytes.len() < FIXED_LEN {
            return Err(Error::Truncated(WHAT));
        }
        let mut r = Reader { bytes, pos: 5 };
        let secret_id = SecretId::from_bytes(r.array::<16>());
        let index = r.byte();
        let t = r.byte();
        let n = r.byte();
        let epoch = u32::from_be_bytes(r.array::<4>());
        let salt = Salt(r.array::<32>());
        let len = u32::from_be_bytes(r.array::<4>()) as usize;
        let threshold = Threshold::new(t, n)?;
        if index == 0 {
            return Err(Error::IndexZero);
        }
        if index > n {
            return Err(Error::IndexOutOfRange { index, n });
        }
        if len == 0 {
            return Err(Error::InvalidField("share length is zero"));
        }
        if len > MAX_SECRET_LEN {
            return Err(Error::Oversized(WHAT));
        }
        let rest = &bytes[FIXED_LEN..];
        if rest.len() < len {
            return Err(Error::Truncated(WHAT));
        }
        if rest.len() > len {
            return Err(Error::Oversized(WHAT));
        }
        Ok(ShardEnvelope {
            secret_id,
            index,
            threshold,
            epoch,
            salt,
            share: ShareBytes::new(rest.to_vec()),
        })
    }
}

/// A cursor over a buffer whose length was checked beforehand.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> u8 {
        let b = self.bytes[self.pos];
        self.pos += 1;
        b
    }

    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut a = [0u8; N];
        a.copy_from_slice(&self.bytes[self.pos..self.pos + N]);
        self.pos += N;
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ShardEnvelope {
        ShardEnvelope {
            secret_id: SecretId::from_bytes([1; 16]),
            index: 2,
            threshold: Threshold::new(3, 4).unwrap(),
            epoch: 5,
            salt: Salt([9; 32]),
            share: ShareBytes::new(vec![0xAA; 33]),
        }
    }

    #[test]
    fn round_trip_and_debug_hides_bytes() {
        let e = sample();
        let enc = e.encode();
        assert_eq!(enc.len(), FIXED_LEN + 33);
        assert_eq!(ShardEnvelope::decode(&enc).unwrap(), e);
        let d = format!("{e:?}");
        assert!(
            !d.contains("170") && !d.contains("aa") && !d.contains("AA"),
            "{d}"
        );
    }

    #[test]
    fn each_defect_has_its_error() {
        let enc = sample().encode();
        assert_eq!(
            ShardEnvelope::decode(&enc[..3]),
            Err(Error::Truncated("shard envelope"))
        );
        assert_eq!(
            ShardEnvelope::decode(&enc[..enc.len() - 1]),
            Err(Error::Truncated("shard envelope"))
        );
        let mut long = enc.to_vec();
        long.push(0);
        assert_eq!(
            ShardEnvelope::decode(&long),
            Err(Error::Oversized("shard envelope"))
        );
        let mut bad = enc.to_vec();
        bad[0] = b'X';
        assert_eq!(
            ShardEnvelope::decode(&bad),
            Err(Error::BadMagic("shard envelope"))
        );
        let mut bad = enc.to_vec();
        bad[4] = 9;
        assert!(matches!(
            ShardEnvelope::decode(&bad),
            Err(Error::UnsupportedVersion { version: 9, .. })
        ));
        let mut bad = enc.to_vec();
        bad[21] = 0;
        assert_eq!(ShardEnvelope::decode(&bad), Err(Error::IndexZero));
        let mut bad = enc.to_vec();
        bad[21] = 5;
        assert_eq!(
            ShardEnvelope::decode(&bad),
            Err(Error::IndexOutOfRange { index: 5, n: 4 })
        );
        let mut bad = enc.to_vec();
        bad[22] = 1;
        assert_eq!(
            ShardEnvelope::decode(&bad),
            Err(Error::InvalidThreshold { t: 1, n: 4 })
        );
        let mut bad = enc.to_vec();
        bad[FIXED_LEN - 4..FIXED_LEN].copy_from_slice(&(70_000u32).to_be_bytes());
        assert_eq!(
            ShardEnvelope::decode(&bad),
            Err(Error::Oversized("shard envelope"))
        );
    }
}
