//! The two signing rounds and the aggregation (RFC 9591, section 5).
//!
//! Round 1: each holder [`commit`]s, keeping its [`Nonces`] in memory and
//! answering its [`SigningCommitments`]. The coordinator builds one
//! [`SigningPackage`] from `t` of them and the message. Round 2: each of those
//! holders [`sign`]s, which spends its nonces, and answers its
//! [`SignatureShare`]. The coordinator [`aggregate`]s them into a
//! [`Signature`], naming any holder whose share is invalid.

use std::collections::BTreeMap;

use frost_core::keys::{KeyPackage as FrostKeyPackage, PublicKeyPackage as FrostPublicKeyPackage};
use frost_core::round1::{SigningCommitments as FrostCommitments, SigningNonces};
use frost_core::round2::SignatureShare as FrostShare;
use frost_core::{CheaterDetection, SigningPackage as FrostPackage};
use rand_core::CryptoRngCore;

use crate::keys::{GroupKey, KeyPackage, PublicKeyPackage};
use crate::raw::{held, read_all, Open, Raw};
use crate::suite::{dispatch, holders, refuse, Suite};
use crate::{Error, HolderId, Kind};

held! {
    /// A holder's secret nonces for one signing session. They stay in the
    /// memory of the holder that made them: this type cannot be cloned,
    /// serialized or read, is zeroized on drop, and [`sign`] takes it by
    /// value, so a pair of nonces signs at most once.
    ///
    /// ```compile_fail,E0277
    /// fn copies<T: Clone>() {}
    /// copies::<threshold::Nonces>();
    /// ```
    ///
    /// ```compile_fail,E0277
    /// fn writes<T: serde::Serialize>() {}
    /// writes::<threshold::Nonces>();
    /// ```
    memory Nonces(round1::SigningNonces)
}

held! {
    /// A holder's public commitments to its nonces (round 1's answer).
    open SigningCommitments(round1::SigningCommitments)
}

held! {
    /// A holder's signature share (round 2's answer).
    open SignatureShare(round2::SignatureShare)
}

held! {
    /// A signature in its ecosystem's encoding: 64 bytes (RFC 8032) for
    /// Ed25519, 64 bytes (BIP340) for secp256k1-tr, 65 bytes (compressed `R`,
    /// then `z`) for p256-schnorr, which is Schnorr and not ECDSA.
    open Signature(Signature)
}

/// What the coordinator sends every chosen holder in round 2: the message and
/// the commitments of exactly the holders that are to sign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningPackage {
    raw: Raw<Open>,
    message: Vec<u8>,
    holders: Vec<HolderId>,
}

impl GroupKey {
    /// Checks a signature over `message` under this key, as the ecosystem's
    /// verifier would (RFC 8032, BIP340, or FROST(P-256, SHA-256)).
    pub fn verify(&self, message: &[u8], signature: &Signature) -> Result<(), Error> {
        dispatch!(self.kind, S => self
            .read::<S>()?
            .verify(message, &signature.raw.read::<S, _>()?)
            .map_err(|_| Error::InvalidSignature))
    }
}

impl SigningPackage {
    /// Builds the package for `message` from the chosen holders' commitments.
    pub fn new(
        kind: Kind,
        commitments: &BTreeMap<HolderId, SigningCommitments>,
        message: &[u8],
    ) -> Result<Self, Error> {
        dispatch!(kind, S => {
            let commitments = read_all::<S, FrostCommitments<S>, _>(
                commitments.iter().map(|(holder, c)| (holder, &c.raw)),
            )?;
            Self::from_frost::<S>(&FrostPackage::new(commitments, message))
        })
    }

    /// The message to be signed (what an audit row digests).
    pub fn message(&self) -> &[u8] {
        &self.message
    }

    /// The holders whose commitments the package carries: the signers.
    pub fn holders(&self) -> &[HolderId] {
        &self.holders
    }

    fn from_frost<S: Suite>(package: &FrostPackage<S>) -> Result<Self, Error> {
        Ok(SigningPackage {
            raw: Raw::write::<S, _>(package)?,
            message: package.message().clone(),
            holders: holders::<S>(package.signing_commitments().keys())?,
        })
    }
}

held! {
    @bytes SigningPackage(SigningPackage) as_bytes,
    "FROST's bytes for the package, to send."
}

/// Round 1 for one holder: fresh nonces (hedged with the holder's share, as
/// RFC 9591 section 4.1 does) and their public commitments.
pub fn commit(
    key: &KeyPackage,
    rng: &mut impl CryptoRngCore,
) -> Result<(Nonces, SigningCommitments), Error> {
    dispatch!(key.kind(), S => {
        let key: FrostKeyPackage<S> = key.raw.read::<S, _>()?;
        let (nonces, commitments) = frost_core::round1::commit(key.signing_share(), rng);
        Ok((
            Nonces::from_frost::<S>(&nonces)?,
            SigningCommitments::from_frost::<S>(&commitments)?,
        ))
    })
}

/// Round 2 for one holder: spends `nonces` on the package and answers the
/// holder's signature share. Refuses, signing nothing, a package that carries
/// no commitment from this holder ([`Error::CommitmentMissing`]) or one other
/// than these nonces made ([`Error::CommitmentAltered`]: altered, or replayed
/// from another session). The nonces are gone either way.
pub fn sign(
    key: &KeyPackage,
    nonces: Nonces,
    package: &SigningPackage,
) -> Result<SignatureShare, Error> {
    dispatch!(key.kind(), S => sign_with::<S>(key, &nonces, package))
}

fn sign_with<S: Suite>(
    key: &KeyPackage,
    nonces: &Nonces,
    package: &SigningPackage,
) -> Result<SignatureShare, Error> {
    let frost_key: FrostKeyPackage<S> = key.raw.read::<S, _>()?;
    let nonces: SigningNonces<S> = nonces.raw.read::<S, _>()?;
    let package: FrostPackage<S> = package.raw.read::<S, _>()?;
    let own = package
        .signing_commitment(frost_key.identifier())
        .ok_or(Error::CommitmentMissing(key.holder()))?;
    if own != *nonces.commitments() {
        return Err(Error::CommitmentAltered(key.holder()));
    }
    let share = frost_core::round2::sign(&package, &nonces, &frost_key).map_err(refuse::<S>)?;
    SignatureShare::from_frost::<S>(&share)
}

/// The coordinator's last step: checks the shares of exactly the package's
/// holders and sums them into the group's signature. If the sum does not
/// verify, every holder whose share is invalid is named
/// ([`Error::InvalidShares`]), so the caller can retry with another subset.
pub fn aggregate(
    public: &PublicKeyPackage,
    package: &SigningPackage,
    shares: &BTreeMap<HolderId, SignatureShare>,
) -> Result<Signature, Error> {
    dispatch!(public.kind(), S => {
        let shares = read_all::<S, FrostShare<S>, _>(
            shares.iter().map(|(holder, share)| (holder, &share.raw)),
        )?;
        let signature = frost_core::aggregate_custom(
            &package.raw.read::<S, _>()?,
            &shares,
            &public.raw.read::<S, FrostPublicKeyPackage<S>>()?,
            CheaterDetection::AllCheaters,
        )
        .map_err(refuse::<S>)?;
        Signature::from_frost::<S>(&signature)
    })
}

#[cfg(test)]
mod tests {
    use zeroize::{Zeroize, ZeroizeOnDrop};

    use super::*;
    use crate::{deal, dkg, SeededRng, Threshold, Zeroizing};

    fn zeroized_on_drop<T: ZeroizeOnDrop>() {}

    #[test]
    fn every_secret_is_zeroized_on_drop() {
        zeroized_on_drop::<Nonces>();
        zeroized_on_drop::<KeyPackage>();
        zeroized_on_drop::<dkg::Round1Secret>();
        zeroized_on_drop::<dkg::Round2Secret>();
        zeroized_on_drop::<dkg::Round2Package>();
    }

    #[test]
    fn wiped_nonces_sign_nothing() {
        let mut rng = SeededRng::from_seed(Zeroizing::new([3; 32]));
        for kind in Kind::ALL {
            let dealt = deal(kind, Threshold::new(2, 2).unwrap(), &mut rng).unwrap();
            let key = |n| &dealt.key_packages[&HolderId::new(n).unwrap()];
            let (mut nonces, one) = commit(key(1), &mut rng).unwrap();
            let (_, two) = commit(key(2), &mut rng).unwrap();
            assert!(!nonces.raw.bytes().is_empty());
            nonces.zeroize();
            assert!(nonces.raw.bytes().is_empty());
            let commitments = BTreeMap::from([
                (HolderId::new(1).unwrap(), one),
                (HolderId::new(2).unwrap(), two),
            ]);
            let package = SigningPackage::new(kind, &commitments, b"message").unwrap();
            assert_eq!(
                sign(key(1), nonces, &package).map(|_| ()),
                Err(Error::Malformed {
                    kind,
                    what: "signing nonces"
                })
            );
        }
    }
}
