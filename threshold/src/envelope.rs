//! The key envelope: what a custodian seals for a threshold-signing key, the
//! counterpart of the shard envelope for the signing kinds.
//!
//! ```text
//! magic        "SHKE"     4
//! version      u8         KEY_ENVELOPE_VERSION
//! secret id    [u8; 16]
//! kind         u8         1 ed25519, 2 secp256k1-tr, 3 p256-schnorr
//! holder       u16 BE     1..=n
//! t, n         u16 BE     2 <= t <= n <= MAX_HOLDERS
//! epoch        u32 BE
//! 3 times:     u32 BE length, bytes: the key package (secret), the public key
//!              package, the group's commitment (FROST's encodings)
//! ```
//!
//! [`KeyEnvelope::decode`] accepts exactly this and only when its parts agree: the key
//! package is the named holder's, of the named threshold, and passes Feldman's check
//! against the commitment; the public key package names holders `1..=n` and is the one
//! the commitment defines. A custodian that decodes an envelope has therefore checked its
//! share against the group's commitments before it acknowledges anything.

use std::fmt;

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::{Commitment, Error, HolderId, KeyPackage, Kind, PublicKeyPackage, Threshold};

/// Version of the layout this build writes.
pub const KEY_ENVELOPE_VERSION: u8 = 1;
/// The most holders a key can have (as many custodians as a manifest can name).
pub const MAX_HOLDERS: u16 = 16;
/// Largest encoded envelope this build reads.
pub const MAX_KEY_ENVELOPE_LEN: usize = 8 * 1024;
const MAGIC: &[u8; 4] = b"SHKE";

/// Whether `bytes` start like a key envelope (any version): how a custodian tells a
/// key from a shard before decoding either.
pub fn is_key_envelope(bytes: &[u8]) -> bool {
    bytes.starts_with(MAGIC)
}

/// One holder's part of a threshold-signing key, with everything needed to check it.
pub struct KeyEnvelope {
    /// The key's id (the secret id of its manifest).
    pub secret_id: [u8; 16],
    /// The epoch of the sharing.
    pub epoch: u32,
    /// `t` of `n`.
    pub threshold: Threshold,
    /// This holder's key package (secret).
    pub key_package: KeyPackage,
    /// Every holder's public share and the group key.
    pub public: PublicKeyPackage,
    /// The group's Feldman commitment.
    pub commitment: Commitment,
}

impl fmt::Debug for KeyEnvelope {
    /// Ids, holder, threshold and kind; never the package.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyEnvelope")
            .field("secret_id", &hex::encode(self.secret_id))
            .field("epoch", &self.epoch)
            .field("threshold", &self.threshold)
            .field("holder", &self.key_package.holder())
            .field("kind", &self.kind())
            .finish_non_exhaustive()
    }
}

fn kind_code(kind: Kind) -> u8 {
    match kind {
        Kind::Ed25519 => 1,
        Kind::Secp256k1Tr => 2,
        Kind::P256Schnorr => 3,
    }
}

fn kind_of(code: u8) -> Option<Kind> {
    Kind::ALL.into_iter().find(|k| kind_code(*k) == code)
}

impl KeyEnvelope {
    /// The key kind.
    pub fn kind(&self) -> Kind {
        self.key_package.kind()
    }

    /// The holder this envelope is for.
    pub fn holder(&self) -> HolderId {
        self.key_package.holder()
    }

    /// Builds the envelope for one holder, checking that its parts agree exactly as
    /// [`KeyEnvelope::decode`] will.
    pub fn new(
        secret_id: [u8; 16],
        epoch: u32,
        key_package: KeyPackage,
        public: PublicKeyPackage,
        commitment: Commitment,
    ) -> Result<Self, Error> {
        let n = u16::try_from(public.holders().len())
            .map_err(|_| Error::Participants("too many holders"))?;
        let threshold = Threshold::new(key_package.min_signers(), n)?;
        let envelope = KeyEnvelope {
            secret_id,
            epoch,
            threshold,
            key_package,
            public,
            commitment,
        };
        envelope.check()?;
        Ok(envelope)
    }

    fn check(&self) -> Result<(), Error> {
        let (t, n) = (self.threshold.t(), self.threshold.n());
        if n > MAX_HOLDERS {
            return Err(Error::Participants("more holders than a key can have"));
        }
        let kind = self.kind();
        for (what, found) in [
            ("public key package", self.public.kind()),
            ("commitment", self.commitment.kind()),
        ] {
            if found != kind {
                return Err(Error::KindMismatch {
                    expected: kind,
                    found,
                    what,
                });
            }
        }
        if self.holder().get() > n {
            return Err(Error::InvalidHolder(self.holder().get()));
        }
        if self.key_package.min_signers() != t || self.public.min_signers() != t {
            return Err(Error::ShareMismatch);
        }
        if !self.public.holders().iter().copied().eq(HolderId::all(n)) {
            return Err(Error::Participants(
                "the public key package does not name holders 1..=n",
            ));
        }
        self.key_package.check(&self.commitment)?;
        self.public.check(&self.commitment)?;
        if self.public.group_key() != self.key_package.group_key() {
            return Err(Error::ShareMismatch);
        }
        Ok(())
    }

    /// The encoded envelope; it holds the key package, so it zeroizes on drop.
    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        let parts: [&[u8]; 3] = [
            self.key_package.expose(),
            self.public.as_bytes(),
            self.commitment.as_bytes(),
        ];
        let mut v = Zeroizing::new(Vec::with_capacity(
            34 + parts.iter().map(|p| 4 + p.len()).sum::<usize>(),
        ));
        v.extend_from_slice(MAGIC);
        v.push(KEY_ENVELOPE_VERSION);
        v.extend_from_slice(&self.secret_id);
        v.push(kind_code(self.kind()));
        v.extend_from_slice(&self.holder().get().to_be_bytes());
        v.extend_from_slice(&self.threshold.t().to_be_bytes());
        v.extend_from_slice(&self.threshold.n().to_be_bytes());
        v.extend_from_slice(&self.epoch.to_be_bytes());
        for part in parts {
            // Invariant: each part is far below 4 GiB (bounded by MAX_HOLDERS).
            v.extend_from_slice(&(part.len() as u32).to_be_bytes());
            v.extend_from_slice(part);
        }
        v
    }

    /// Decodes and checks an envelope, refusing anything malformed or inconsistent.
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        let envelope = Self::parse(bytes)?;
        envelope.check()?;
        Ok(envelope)
    }

    /// Decodes an envelope this holder checked with [`KeyEnvelope::decode`] before sealing
    /// it, and that its device has just unsealed (and so authenticated): the same parsing
    /// and the same threshold and holder checks, without Feldman's check again, which costs
    /// `n * t` point multiplications on every signing.
    pub fn decode_sealed(bytes: &[u8]) -> Result<Self, Error> {
        let envelope = Self::parse(bytes)?;
        let (t, n) = (envelope.threshold.t(), envelope.threshold.n());
        if envelope.holder().get() > n
            || envelope.key_package.min_signers() != t
            || envelope.public.min_signers() != t
            || envelope.public.holders().len() != usize::from(n)
            || envelope.public.group_key() != envelope.key_package.group_key()
        {
            return Err(Error::ShareMismatch);
        }
        Ok(envelope)
    }

    fn parse(bytes: &[u8]) -> Result<Self, Error> {
        const WHAT: &str = "key envelope";
        let malformed = |kind| Error::Malformed { kind, what: WHAT };
        // Before the kind is known, defects are reported against ed25519's envelope.
        let early = malformed(Kind::Ed25519);
        if bytes.len() > MAX_KEY_ENVELOPE_LEN || !bytes.starts_with(MAGIC) {
            return Err(early);
        }
        let mut r = Reader { bytes, pos: 4 };
        if r.take(1).ok_or(early.clone())?[0] != KEY_ENVELOPE_VERSION {
            return Err(Error::Participants("unsupported key envelope version"));
        }
        let fixed = r.take(16 + 1 + 2 + 2 + 2 + 4).ok_or(early.clone())?;
        let mut secret_id = [0u8; 16];
        secret_id.copy_from_slice(&fixed[..16]);
        let kind = kind_of(fixed[16]).ok_or(early)?;
        let word = |at: usize| u16::from_be_bytes([fixed[at], fixed[at + 1]]);
        let holder = HolderId::new(word(17))?;
        let threshold = Threshold::new(word(19), word(21))?;
        let epoch = u32::from_be_bytes([fixed[23], fixed[24], fixed[25], fixed[26]]);
        let mut part = || -> Result<&[u8], Error> {
            let len = r.take(4).ok_or(malformed(kind))?;
            let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
            r.take(len).ok_or(malformed(kind))
        };
        let key_package = KeyPackage::decode(kind, part()?)?;
        let public = PublicKeyPackage::decode(kind, part()?)?;
        let commitment = Commitment::decode(kind, part()?)?;
        if r.pos != bytes.len() {
            return Err(malformed(kind));
        }
        if key_package.holder() != holder {
            return Err(Error::InvalidHolder(holder.get()));
        }
        Ok(KeyEnvelope {
            secret_id,
            epoch,
            threshold,
            key_package,
            public,
            commitment,
        })
    }
}

/// A bounds-checked cursor.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let slice = self.bytes.get(self.pos..end)?;
        self.pos = end;
        Some(slice)
    }
}

impl PublicKeyPackage {
    /// What a signed manifest records for each holder of a signing key: SHA-256 over a
    /// domain tag, the kind, the holder and the holder's public verifying share. With the
    /// group key and the threshold, these fix the whole public key package, so a
    /// coordinator checks the package a custodian answers against the manifest.
    pub fn holder_digests(&self) -> Result<Vec<[u8; 32]>, Error> {
        self.verifying_shares()?
            .into_iter()
            .map(|(holder, share)| {
                let mut h = Sha256::new();
                h.update(b"shard-custodians/verifying-share/v1\0");
                h.update(self.kind().as_str().as_bytes());
                h.update([0]);
                h.update(holder.get().to_be_bytes());
                h.update(&share);
                Ok(h.finalize().into())
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{deal, SeededRng};

    fn rng(seed: u8) -> SeededRng {
        SeededRng::from_seed(Zeroizing::new([seed; 32]))
    }

    fn envelopes(kind: Kind, seed: u8) -> Vec<KeyEnvelope> {
        let dealt = deal(kind, Threshold::new(3, 4).unwrap(), &mut rng(seed)).unwrap();
        dealt
            .key_packages
            .into_values()
            .map(|key| {
                KeyEnvelope::new(
                    [7; 16],
                    1,
                    key,
                    dealt.public.clone(),
                    dealt.commitment.clone(),
                )
                .unwrap()
            })
            .collect()
    }

    #[test]
    fn round_trips_for_every_kind_and_debug_hides_the_package() {
        for kind in Kind::ALL {
            for envelope in envelopes(kind, 1) {
                let bytes = envelope.encode();
                assert!(is_key_envelope(&bytes));
                let back = KeyEnvelope::decode(&bytes).unwrap();
                let sealed = KeyEnvelope::decode_sealed(&bytes).unwrap();
                assert_eq!(sealed.encode(), bytes);
                assert_eq!(back.encode(), bytes);
                assert_eq!(back.holder(), envelope.holder());
                assert_eq!(back.kind(), kind);
                assert_eq!(back.threshold, Threshold::new(3, 4).unwrap());
                let debug = format!("{back:?}");
                assert!(debug.contains("holder") && debug.len() < 200, "{debug}");
            }
        }
    }

    #[test]
    fn a_package_of_another_dealing_fails_the_feldman_check() {
        for kind in Kind::ALL {
            let ours = envelopes(kind, 1);
            let theirs = envelopes(kind, 2);
            let mixed = KeyEnvelope {
                secret_id: [7; 16],
                epoch: 1,
                threshold: ours[0].threshold,
                key_package: KeyPackage::decode(kind, theirs[0].key_package.expose()).unwrap(),
                public: ours[0].public.clone(),
                commitment: ours[0].commitment.clone(),
            };
            assert_eq!(
                KeyEnvelope::decode(&mixed.encode()).unwrap_err(),
                Error::ShareMismatch
            );
        }
    }

    #[test]
    fn every_truncation_and_every_flipped_header_byte_is_refused() {
        let envelope = &envelopes(Kind::Ed25519, 3)[1];
        let bytes = envelope.encode();
        for len in 0..bytes.len() {
            assert!(KeyEnvelope::decode(&bytes[..len]).is_err(), "{len}");
        }
        let mut long = bytes.to_vec();
        long.push(0);
        assert!(KeyEnvelope::decode(&long).is_err());
        // Every byte of the fixed header but the secret id and the epoch is checked.
        for at in (0..5).chain(21..28) {
            let mut bad = bytes.to_vec();
            bad[at] ^= 0x01;
            assert!(KeyEnvelope::decode(&bad).is_err(), "byte {at}");
        }
    }

    #[test]
    fn holder_digests_name_each_holder_and_differ_between_keys() {
        for kind in Kind::ALL {
            let a = envelopes(kind, 4);
            let b = envelopes(kind, 5);
            let da = a[0].public.holder_digests().unwrap();
            assert_eq!(da.len(), 4);
            assert_eq!(da, a[3].public.holder_digests().unwrap());
            let unique: std::collections::BTreeSet<_> = da.iter().collect();
            assert_eq!(unique.len(), 4);
            assert_ne!(da, b[0].public.holder_digests().unwrap());
        }
    }
}
