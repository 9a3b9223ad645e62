//! Keys split among holders: by a dealer (a fresh key, or an imported one),
//! each holder's key package and its Feldman check against the group's
//! commitment, and the group key in its ecosystem's encoding.

use std::collections::BTreeMap;

use frost_core::keys::{
    IdentifierList, KeyPackage as FrostKeyPackage, PublicKeyPackage as FrostPublicKeyPackage,
    SecretShare, VerifiableSecretSharingCommitment,
};
use frost_core::{SigningKey, VerifyingKey};
use rand_core::CryptoRngCore;

use crate::raw::{held, Open, Raw, Sealed};
use crate::suite::{dispatch, holder, holders, malformed, refuse, Suite, Wire};
use crate::{Error, HolderId, Kind, Threshold};

held! {
    /// The group's public commitment to its key polynomial (Feldman VSS):
    /// `t` points, the first of them the group key. A holder checks its key
    /// package against it ([`KeyPackage::check`]) before acknowledging, so a
    /// dealer cannot hand out shares of different keys unnoticed.
    open Commitment(keys::VerifiableSecretSharingCommitment)
}

/// One holder's share of a group key: the secret signing share, the holder's
/// public share, the group key and the threshold. Secret: it leaves the crate
/// only through [`KeyPackage::expose`], to be sealed.
pub struct KeyPackage {
    pub(crate) raw: Raw<Sealed>,
    holder: HolderId,
    min_signers: u16,
    group_key: GroupKey,
}

impl KeyPackage {
    /// The holder this package belongs to.
    pub fn holder(&self) -> HolderId {
        self.holder
    }

    /// The number of holders that must sign (`t`).
    pub fn min_signers(&self) -> u16 {
        self.min_signers
    }

    /// The group key that signatures made with this share verify under.
    pub fn group_key(&self) -> &GroupKey {
        &self.group_key
    }

    /// Feldman's check: the holder's share times the generator is the group's
    /// commitment evaluated at the holder, and the group key and threshold are
    /// the commitment's. A custodian runs it before acknowledging a share.
    pub fn check(&self, commitment: &Commitment) -> Result<(), Error> {
        dispatch!(self.kind(), S => check_share::<S>(
            &self.raw.read::<S, _>()?,
            &commitment.raw.read::<S, _>()?,
        ))
    }

    pub(crate) fn from_frost<S: Suite>(package: &FrostKeyPackage<S>) -> Result<Self, Error> {
        Ok(KeyPackage {
            raw: Raw::write::<S, _>(package)?,
            holder: holder::<S>(package.identifier())?,
            min_signers: *package.min_signers(),
            group_key: GroupKey::from_frost::<S>(package.verifying_key())?,
        })
    }
}

held! {
    @bytes KeyPackage(keys::KeyPackage) expose,
    "FROST's bytes for the key package: secret, to seal before it is stored."
}

impl zeroize::ZeroizeOnDrop for KeyPackage {}

impl std::fmt::Debug for KeyPackage {
    /// The holder and the kind only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyPackage(holder {}, {:?})", self.holder, self.raw)
    }
}

/// What every coordinator needs to aggregate and check signatures: the group
/// key, each holder's public share, and the threshold. Public.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKeyPackage {
    pub(crate) raw: Raw<Open>,
    holders: Vec<HolderId>,
    min_signers: u16,
    group_key: GroupKey,
}

impl PublicKeyPackage {
    /// Every holder of the key, in order.
    pub fn holders(&self) -> &[HolderId] {
        &self.holders
    }

    /// The number of holders that must sign (`t`).
    pub fn min_signers(&self) -> u16 {
        self.min_signers
    }

    /// The group key.
    pub fn group_key(&self) -> &GroupKey {
        &self.group_key
    }

    /// Checks that every holder's public share, the group key and the
    /// threshold are the ones the group's commitment defines.
    pub fn check(&self, commitment: &Commitment) -> Result<(), Error> {
        dispatch!(self.kind(), S => {
            let public: FrostPublicKeyPackage<S> = self.raw.read::<S, _>()?;
            let commitment = commitment.raw.read::<S, _>()?;
            let holders = public.verifying_shares().keys().copied().collect();
            match FrostPublicKeyPackage::from_commitment(&holders, &commitment) {
                Ok(expected) if expected == public => Ok(()),
                _ => Err(Error::ShareMismatch),
            }
        })
    }

    /// Every holder's public verifying share (`share·G`), in the ciphersuite's encoding.
    pub fn verifying_shares(&self) -> Result<Vec<(HolderId, Vec<u8>)>, Error> {
        dispatch!(self.kind(), S => {
            let public: FrostPublicKeyPackage<S> = self.raw.read::<S, _>()?;
            public
                .verifying_shares()
                .iter()
                .map(|(id, share)| Ok((holder::<S>(id)?, share.serialize().map_err(refuse::<S>)?)))
                .collect()
        })
    }

    pub(crate) fn from_frost<S: Suite>(package: &FrostPublicKeyPackage<S>) -> Result<Self, Error> {
        Ok(PublicKeyPackage {
            raw: Raw::write::<S, _>(package)?,
            holders: holders::<S>(package.verifying_shares().keys())?,
            min_signers: package
                .min_signers()
                .ok_or_else(|| malformed::<S>("public key package"))?,
            group_key: GroupKey::from_frost::<S>(package.verifying_key())?,
        })
    }
}

held! {
    @bytes PublicKeyPackage(keys::PublicKeyPackage) as_bytes,
    "FROST's bytes for the package, to send or store."
}

/// A group's public key in its ecosystem's encoding: the 32-byte Ed25519
/// public key, the 32-byte BIP340 x-only key, or the 33-byte SEC1 compressed
/// P-256 point.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GroupKey {
    pub(crate) kind: Kind,
    bytes: Vec<u8>,
}

/// DER of an Ed25519 SubjectPublicKeyInfo up to the key (RFC 8410).
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

impl GroupKey {
    /// Reads a group key of `kind` in its ecosystem's encoding, refusing bytes
    /// that are not a valid point.
    pub fn decode(kind: Kind, bytes: &[u8]) -> Result<Self, Error> {
        let key = GroupKey {
            kind,
            bytes: bytes.to_vec(),
        };
        dispatch!(kind, S => key.read::<S>().map(|_| key))
    }

    /// Reads the text form [`GroupKey::to_text`] writes.
    pub fn from_text(kind: Kind, text: &str) -> Result<Self, Error> {
        let bad = Error::Malformed {
            kind,
            what: "group key text",
        };
        let bytes = match kind {
            Kind::Ed25519 => {
                let pem = pem::parse(text).map_err(|_| bad.clone())?;
                match pem.contents().strip_prefix(&ED25519_SPKI_PREFIX[..]) {
                    Some(key) if pem.tag() == "PUBLIC KEY" => key.to_vec(),
                    _ => return Err(bad),
                }
            }
            Kind::Secp256k1Tr | Kind::P256Schnorr => hex::decode(text.trim()).map_err(|_| bad)?,
        };
        Self::decode(kind, &bytes)
    }

    /// The key kind.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The key in its ecosystem's encoding.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The key as its ecosystem writes it: a PEM SubjectPublicKeyInfo for
    /// Ed25519 (what `openssl pkey -pubin` reads), lowercase hex of the x-only
    /// key for secp256k1-tr, lowercase hex of the SEC1 compressed point for
    /// p256-schnorr.
    pub fn to_text(&self) -> String {
        match self.kind {
            Kind::Ed25519 => {
                let der = [&ED25519_SPKI_PREFIX[..], &self.bytes].concat();
                // LF line endings, as OpenSSL writes them (the crate's default is CRLF).
                pem::encode_config(
                    &pem::Pem::new("PUBLIC KEY", der),
                    pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
                )
            }
            Kind::Secp256k1Tr | Kind::P256Schnorr => hex::encode(&self.bytes),
        }
    }

    pub(crate) fn from_frost<S: Suite>(key: &VerifyingKey<S>) -> Result<Self, Error> {
        Ok(GroupKey {
            kind: S::KIND,
            bytes: S::ecosystem_key(key.encode()?),
        })
    }

    pub(crate) fn read<S: Suite>(&self) -> Result<VerifyingKey<S>, Error> {
        if self.kind != S::KIND {
            return Err(Error::KindMismatch {
                expected: S::KIND,
                found: self.kind,
                what: "group key",
            });
        }
        Wire::<S>::decode(&S::frost_key(&self.bytes))
    }
}

/// A key split by a dealer: every holder's key package, the public key package
/// and the group's commitment.
#[derive(Debug)]
pub struct Dealt {
    /// One key package per holder, `1..=n`; each goes, sealed, to its holder only.
    pub key_packages: BTreeMap<HolderId, KeyPackage>,
    /// The public key package, for coordinators.
    pub public: PublicKeyPackage,
    /// The commitment each holder checks its key package against.
    pub commitment: Commitment,
}

/// Splits a fresh key of `kind` `t`-of-`n` among holders `1..=n`, drawing the
/// key and the polynomial from `rng`.
pub fn deal(
    kind: Kind,
    threshold: Threshold,
    rng: &mut impl CryptoRngCore,
) -> Result<Dealt, Error> {
    dispatch!(kind, S => split::<S>(&SigningKey::new(rng), threshold, rng))
}

/// Splits an existing private key of `kind` `t`-of-`n` among holders `1..=n`;
/// the group key is that key's public key. The private key is in its
/// ecosystem's encoding: the 32-byte Ed25519 seed (RFC 8032, as PKCS#8
/// carries it), the 32-byte big-endian secp256k1 secret (BIP340), the
/// 32-byte big-endian P-256 scalar.
pub fn import(
    kind: Kind,
    private_key: &[u8],
    threshold: Threshold,
    rng: &mut impl CryptoRngCore,
) -> Result<Dealt, Error> {
    dispatch!(kind, S => split::<S>(&S::import_key(private_key)?, threshold, rng))
}

fn split<S: Suite>(
    key: &SigningKey<S>,
    threshold: Threshold,
    rng: &mut impl CryptoRngCore,
) -> Result<Dealt, Error> {
    let (shares, public) = frost_core::keys::split(
        key,
        threshold.n(),
        threshold.t(),
        IdentifierList::Default,
        rng,
    )
    .map_err(refuse::<S>)?;
    let commitment = shares
        .values()
        .next()
        .map(|share| Commitment::from_frost::<S>(share.commitment()))
        .ok_or(Error::Participants("no holders"))??;
    let key_packages = shares
        .into_iter()
        .map(|(id, share)| {
            let package = FrostKeyPackage::try_from(share).map_err(refuse::<S>)?;
            Ok((holder::<S>(&id)?, KeyPackage::from_frost::<S>(&package)?))
        })
        .collect::<Result<_, Error>>()?;
    Ok(Dealt {
        key_packages,
        public: PublicKeyPackage::from_frost::<S>(&public)?,
        commitment,
    })
}

fn check_share<S: Suite>(
    package: &FrostKeyPackage<S>,
    commitment: &VerifiableSecretSharingCommitment<S>,
) -> Result<(), Error> {
    let share = SecretShare::new(
        *package.identifier(),
        *package.signing_share(),
        commitment.clone(),
    );
    let (verifying_share, group_key) = share.verify().map_err(|_| Error::ShareMismatch)?;
    let degree = commitment.serialize().map(|points| points.len()).ok();
    if verifying_share != *package.verifying_share()
        || group_key != *package.verifying_key()
        || degree != Some(usize::from(*package.min_signers()))
    {
        return Err(Error::ShareMismatch);
    }
    Ok(())
}
