//! The enrollment manifest: what was split, how, for whom, and where each shard went,
//! signed by the enroller's token-resident P-256 key.
//!
//! Canonical encoding (the bytes that are signed, ECDSA P-256 over SHA-256):
//!
//! ```text
//! magic       "SHMF"      4
//! version     u8          MANIFEST_VERSION
//! secret id   [u8; 16]
//! t, n        u8, u8
//! epoch       u32 BE
//! created at  u64 BE      Unix seconds
//! owner       u8 len, UTF-8 (the owner's SPIFFE id, 1..=255 bytes)
//! kind        u8          0 = opaque bytes, 1 = P-256 private key, and the
//!                         threshold-signing keys: 2 = ed25519, 3 = secp256k1-tr,
//!                         4 = p256-schnorr
//! public key  kind 1: [u8; 33] compressed SEC1; kind 2: [u8; 32] Ed25519 key;
//!             kind 3: [u8; 32] BIP340 x-only key; kind 4: [u8; 33] compressed SEC1;
//!             nothing for kind 0
//! n times:    u8 len, custodian name, [u8; 32] commitment
//! ```
//!
//! For a shard the commitment is the shard's salted commitment; for a signing key it is
//! the holder's digest (SHA-256 over a domain tag, the kind, the holder and its public
//! verifying share: `threshold::PublicKeyPackage::holder_digests`), so that a coordinator
//! can check the public key package a custodian answers.
//!
//! A signed manifest is `u32 BE length || canonical bytes || 64-byte r||s signature`.

use p256::ecdsa::signature::hazmat::PrehashVerifier;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::PublicKey;
use sha2::{Digest, Sha256};

use crate::commitment::Commitment;
use crate::{CustodianId, Error, SecretId, Threshold};

/// Version of the manifest layout written by this build.
pub const MANIFEST_VERSION: u8 = 1;
const MAGIC: &[u8; 4] = b"SHMF";
const WHAT: &str = "manifest";
/// Largest encoded signed manifest (16 custodians with 63-byte names, a 255-byte owner).
pub const MAX_SIGNED_MANIFEST_LEN: usize =
    4 + 4 + 1 + 16 + 2 + 4 + 8 + 256 + 1 + 33 + 16 * (64 + 32) + 64;

/// What kind of secret was escrowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretKind {
    /// Bytes the user brought; recovery checks only the commitments.
    Opaque,
    /// A P-256 private key (32-byte big-endian scalar) with this public key; recovery
    /// also checks that the combined scalar gives this public key.
    P256(PublicKey),
    /// A threshold-signing key that is never recovered, only used to sign: its kind's
    /// wire name (one of [`SIGNING_KINDS`]) and its group public key in the kind's own
    /// encoding.
    Signing {
        /// `ed25519`, `secp256k1-tr` or `p256-schnorr`.
        kind: &'static str,
        /// The group key (32, 32 or 33 bytes).
        group_key: Vec<u8>,
    },
}

/// The threshold-signing kinds a manifest can name: code, wire name, group key length.
pub const SIGNING_KINDS: [(u8, &str, usize); 3] = [
    (2, "ed25519", 32),
    (3, "secp256k1-tr", 32),
    (4, "p256-schnorr", 33),
];

impl SecretKind {
    /// A signing kind by its wire name, checking the group key's length.
    pub fn signing(kind: &str, group_key: &[u8]) -> Result<SecretKind, Error> {
        let (_, name, len) = SIGNING_KINDS
            .iter()
            .find(|(_, name, _)| *name == kind)
            .ok_or(Error::InvalidField("unknown signing kind"))?;
        if group_key.len() != *len {
            return Err(Error::InvalidField(
                "group key length does not fit its kind",
            ));
        }
        Ok(SecretKind::Signing {
            kind: name,
            group_key: group_key.to_vec(),
        })
    }

    /// The kind's wire name: `p256`, `secret`, or a signing kind's.
    pub fn name(&self) -> &'static str {
        match self {
            SecretKind::Opaque => "secret",
            SecretKind::P256(_) => "p256",
            SecretKind::Signing { kind, .. } => kind,
        }
    }
}

/// An enrollment manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The secret's id.
    pub secret_id: SecretId,
    /// Threshold and count.
    pub threshold: Threshold,
    /// Enrollment epoch (bumped when a secret is re-split).
    pub epoch: u32,
    /// Creation time, Unix seconds.
    pub created_at: u64,
    /// The owner's identity (SPIFFE id text).
    pub owner: String,
    /// What the secret is.
    pub kind: SecretKind,
    /// Custodian holding shard `i + 1` is `custodians[i]`.
    pub custodians: Vec<CustodianId>,
    /// Commitment to shard `i + 1` is `commitments[i]`.
    pub commitments: Vec<Commitment>,
}

/// Something that signs manifests with a P-256 key: the enroller's token, or a
/// `p256` key in tests.
pub trait ManifestSigner {
    /// Signs a SHA-256 digest with ECDSA P-256 (PKCS#11 `CKM_ECDSA` over the digest).
    fn sign_digest(&self, digest: &[u8; 32]) -> Result<Signature, Error>;
}

impl ManifestSigner for p256::ecdsa::SigningKey {
    fn sign_digest(&self, digest: &[u8; 32]) -> Result<Signature, Error> {
        use p256::ecdsa::signature::hazmat::PrehashSigner;
        self.sign_prehash(digest)
            .map_err(|_| Error::Signer("p256 prehash signing failed".into()))
    }
}

impl Manifest {
    /// Checks the internal consistency a signer must not sign past.
    pub fn validate(&self) -> Result<(), Error> {
        let n = usize::from(self.threshold.n());
        if self.custodians.len() != n || self.commitments.len() != n {
            return Err(Error::InvalidField(
                "custodian and commitment lists must have n entries",
            ));
        }
        for (i, c) in self.custodians.iter().enumerate() {
            if self.custodians[..i].contains(c) {
                return Err(Error::InvalidField("a custodian appears twice"));
            }
        }
        if self.owner.is_empty() || self.owner.len() > 255 {
            return Err(Error::InvalidField("owner must be 1..=255 bytes"));
        }
        if let SecretKind::Signing { kind, group_key } = &self.kind {
            SecretKind::signing(kind, group_key)?;
        }
        Ok(())
    }

    /// The custodian expected to hold shard `index` (1-based).
    pub fn custodian_for(&self, index: u8) -> Option<&CustodianId> {
        usize::from(index)
            .checked_sub(1)
            .and_then(|i| self.custodians.get(i))
    }

    /// The shard index `custodian` was given, if any.
    pub fn index_of(&self, custodian: &CustodianId) -> Option<u8> {
        // Invariant: at most 16 custodians, so the position fits in u8.
        self.custodians
            .iter()
            .position(|c| c == custodian)
            .map(|i| (i + 1) as u8)
    }

    /// The canonical bytes that are signed.
    pub fn canonical_bytes(&self) -> Result<Vec<u8>, Error> {
        self.validate()?;
        let mut v = Vec::with_capacity(256);
        v.extend_from_slice(MAGIC);
        v.push(MANIFEST_VERSION);
        v.extend_from_slice(self.secret_id.as_bytes());
        v.push(self.threshold.t());
        v.push(self.threshold.n());
        v.extend_from_slice(&self.epoch.to_be_bytes());
        v.extend_from_slice(&self.created_at.to_be_bytes());
        // Invariant: validate() bounded the owner to 255 bytes.
        v.push(self.owner.len() as u8);
        v.extend_from_slice(self.owner.as_bytes());
        match &self.kind {
            SecretKind::Opaque => v.push(0),
            SecretKind::P256(pk) => {
                v.push(1);
                v.extend_from_slice(pk.to_encoded_point(true).as_bytes());
            }
            SecretKind::Signing { kind, group_key } => {
                // Invariant: validate() checked the kind is one of SIGNING_KINDS.
                let code = SIGNING_KINDS
                    .iter()
                    .find(|(_, name, _)| name == kind)
                    .map_or(0, |(code, _, _)| *code);
                v.push(code);
                v.extend_from_slice(group_key);
            }
        }
        for (c, m) in self.custodians.iter().zip(&self.commitments) {
            // Invariant: custodian names are at most 63 bytes.
            v.push(c.as_str().len() as u8);
            v.extend_from_slice(c.as_str().as_bytes());
            v.extend_from_slice(&m.0);
        }
        Ok(v)
    }

    /// Signs the manifest.
    pub fn sign(self, signer: &dyn ManifestSigner) -> Result<SignedManifest, Error> {
        let body = self.canonical_bytes()?;
        let digest: [u8; 32] = Sha256::digest(&body).into();
        let signature = signer.sign_digest(&digest)?;
        Ok(SignedManifest {
            manifest: self,
            body,
            signature,
        })
    }

    fn parse(body: &[u8]) -> Result<Manifest, Error> {
        let mut r = Cursor { b: body, pos: 0 };
        if r.take(4)? != MAGIC {
            return Err(Error::BadMagic(WHAT));
        }
        let version = r.u8()?;
        if version != MANIFEST_VERSION {
            return Err(Error::UnsupportedVersion {
                what: WHAT,
                version,
            });
        }
        let mut id = [0u8; 16];
        id.copy_from_slice(r.take(16)?);
        let t = r.u8()?;
        let n = r.u8()?;
        let threshold = Threshold::new(t, n)?;
        let epoch = u32::from_be_bytes(r.array()?);
        let created_at = u64::from_be_bytes(r.array()?);
        let owner_len = usize::from(r.u8()?);
        let owner = std::str::from_utf8(r.take(owner_len)?)
            .map_err(|_| Error::InvalidField("owner is not UTF-8"))?
            .to_owned();
        let kind = match r.u8()? {
            0 => SecretKind::Opaque,
            1 => SecretKind::P256(
                PublicKey::from_sec1_bytes(r.take(33)?)
                    .map_err(|_| Error::InvalidField("public key is not a P-256 point"))?,
            ),
            code => match SIGNING_KINDS.iter().find(|(c, _, _)| *c == code) {
                Some((_, name, len)) => SecretKind::signing(name, r.take(*len)?)?,
                None => return Err(Error::InvalidField("unknown secret kind")),
            },
        };
        let mut custodians = Vec::with_capacity(usize::from(n));
        let mut commitments = Vec::with_capacity(usize::from(n));
        for _ in 0..n {
            let len = usize::from(r.u8()?);
            let name = std::str::from_utf8(r.take(len)?)
                .map_err(|_| Error::InvalidField("custodian name is not UTF-8"))?;
            custodians.push(CustodianId::new(name)?);
            commitments.push(Commitment(r.array()?));
        }
        if r.pos != body.len() {
            return Err(Error::Oversized(WHAT));
        }
        let m = Manifest {
            secret_id: SecretId::from_bytes(id),
            threshold,
            epoch,
            created_at,
            owner,
            kind,
            custodians,
            commitments,
        };
        m.validate()?;
        Ok(m)
    }
}

/// A manifest with its signature. Obtain one by [`Manifest::sign`] or
/// [`SignedManifest::decode`] followed by [`SignedManifest::verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedManifest {
    manifest: Manifest,
    body: Vec<u8>,
    signature: Signature,
}

impl SignedManifest {
    /// Encodes as `u32 length || canonical bytes || signature`.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(4 + self.body.len() + 64);
        // Invariant: the body is bounded by MAX_SIGNED_MANIFEST_LEN.
        v.extend_from_slice(&(self.body.len() as u32).to_be_bytes());
        v.extend_from_slice(&self.body);
        v.extend_from_slice(&self.signature.to_bytes());
        v
    }

    /// Parses the structure; does NOT check the signature (call [`SignedManifest::verify`]).
    pub fn decode(bytes: &[u8]) -> Result<SignedManifest, Error> {
        if bytes.len() > MAX_SIGNED_MANIFEST_LEN {
            return Err(Error::Oversized(WHAT));
        }
        let mut r = Cursor { b: bytes, pos: 0 };
        let len = u32::from_be_bytes(r.array()?) as usize;
        let body = r.take(len)?.to_vec();
        let sig: [u8; 64] = r.array()?;
        if r.pos != bytes.len() {
            return Err(Error::Oversized(WHAT));
        }
        let signature = Signature::from_slice(&sig)
            .map_err(|_| Error::InvalidField("signature scalars out of range"))?;
        let manifest = Manifest::parse(&body)?;
        Ok(SignedManifest {
            manifest,
            body,
            signature,
        })
    }

    /// Checks the signature with the enroller's public key and returns the manifest.
    pub fn verify(&self, key: &VerifyingKey) -> Result<&Manifest, Error> {
        let digest = Sha256::digest(&self.body);
        key.verify_prehash(&digest, &self.signature)
            .map_err(|_| Error::BadSignature)?;
        Ok(&self.manifest)
    }

    /// The manifest WITHOUT any signature check: for display only, never for recovery.
    pub fn unverified(&self) -> &Manifest {
        &self.manifest
    }

    /// The 64-byte r||s signature.
    pub fn signature_bytes(&self) -> [u8; 64] {
        self.signature.to_bytes().into()
    }
}

struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        let end = self.pos.checked_add(n).ok_or(Error::Truncated(WHAT))?;
        let s = self.b.get(self.pos..end).ok_or(Error::Truncated(WHAT))?;
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, Error> {
        Ok(self.take(1)?[0])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Error> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(kind: SecretKind) -> Manifest {
        Manifest {
            secret_id: SecretId::from_bytes([3; 16]),
            threshold: Threshold::new(2, 3).unwrap(),
            epoch: 1,
            created_at: 7,
            owner: "spiffe://t/user/alice".into(),
            kind,
            custodians: ["c1", "c2", "c3"]
                .iter()
                .map(|c| CustodianId::new(c).unwrap())
                .collect(),
            commitments: (1..=3).map(|i| Commitment([i; 32])).collect(),
        }
    }

    #[test]
    fn signing_kinds_round_trip_and_their_keys_are_checked() {
        let signer = p256::ecdsa::SigningKey::from_slice(&[5; 32]).unwrap();
        for (code, name, len) in SIGNING_KINDS {
            let kind = SecretKind::signing(name, &vec![9; len]).unwrap();
            assert_eq!(kind.name(), name);
            let signed = manifest(kind).sign(&signer).unwrap();
            let bytes = signed.encode();
            let back = SignedManifest::decode(&bytes).unwrap();
            assert_eq!(
                back.verify(signer.verifying_key()).unwrap(),
                signed.unverified()
            );
            // The kind code sits after the owner; another code of another length is refused.
            let at = 4 + 4 + 1 + 16 + 2 + 4 + 8 + 1 + "spiffe://t/user/alice".len();
            assert_eq!(bytes[at], code);
            assert!(SecretKind::signing(name, &vec![9; len + 1]).is_err());
        }
        assert!(SecretKind::signing("ed448", &[9; 57]).is_err());
        let bad = Manifest {
            kind: SecretKind::Signing {
                kind: "ed25519",
                group_key: vec![1; 33],
            },
            ..manifest(SecretKind::Opaque)
        };
        assert!(bad.sign(&signer).is_err());
    }
}
