//! Keys born distributed: FROST's distributed key generation (Pedersen's DKG
//! with proofs of knowledge, RFC 9591 appendix C's trusted dealer replaced by
//! every holder dealing a share of its own polynomial), for one holder.
//!
//! [`part1`]: the holder's [`Round1Package`] goes to every other holder (the
//! coordinator may relay it: it is public). [`part2`]: one [`Round2Package`]
//! per other holder, each secret, for that holder only (the peer channel).
//! [`part3`]: the holder's key package. No machine ever holds the key.

use std::collections::BTreeMap;

use frost_core::keys::dkg::{round1, round2};
use frost_core::keys::{CoefficientCommitment, VerifiableSecretSharingCommitment};
use frost_core::{Element, Group, Identifier, VerifyingKey};
use rand_core::CryptoRngCore;

use crate::keys::{Commitment, KeyPackage, PublicKeyPackage};
use crate::raw::{held, read_all, Raw};
use crate::suite::{by_holder, dispatch, identifier, malformed, refuse, Suite, Wire};
use crate::{Error, HolderId, Kind, Threshold};

held! {
    /// What a holder keeps in memory between [`part1`] and [`part2`]: its
    /// secret polynomial. Cannot be cloned or serialized; zeroized on drop.
    memory Round1Secret(keys::dkg::round1::SecretPackage)
}

held! {
    /// What a holder keeps in memory between [`part2`] and [`part3`]: its own
    /// share of its own polynomial. Cannot be cloned or serialized; zeroized
    /// on drop.
    memory Round2Secret(keys::dkg::round2::SecretPackage)
}

held! {
    /// A holder's public round-1 package: the commitment to its polynomial and
    /// a proof that it knows the constant term. Goes to every other holder.
    open Round1Package(keys::dkg::round1::Package)
}

held! {
    /// A holder's secret share of its polynomial for one other holder. Goes,
    /// sealed or over mutual TLS, to that holder only.
    sealed Round2Package(keys::dkg::round2::Package)
}

/// What the DKG leaves one holder with.
#[derive(Debug)]
pub struct KeyShare {
    /// The holder's key package: secret, to seal.
    pub key_package: KeyPackage,
    /// The group's public key package; every holder computes the same one.
    pub public: PublicKeyPackage,
    /// The group's commitment (the sum of every holder's), which
    /// [`KeyPackage::check`] accepts the key package against.
    pub commitment: Commitment,
}

/// Round 1 for holder `me` of a `t`-of-`n` key: draws the holder's polynomial.
pub fn part1(
    kind: Kind,
    me: HolderId,
    threshold: Threshold,
    rng: &mut impl CryptoRngCore,
) -> Result<(Round1Secret, Round1Package), Error> {
    threshold.check(me)?;
    dispatch!(kind, S => {
        let (secret, package) =
            frost_core::keys::dkg::part1(identifier::<S>(me)?, threshold.n(), threshold.t(), rng)
                .map_err(refuse::<S>)?;
        Ok((
            Round1Secret::from_frost::<S>(&secret)?,
            Round1Package::from_frost::<S>(&package)?,
        ))
    })
}

/// Round 2: checks every other holder's round-1 package (its proof of
/// knowledge) and answers one secret package for each of them. `round1` holds
/// one package from each other holder; an entry for this holder is ignored.
pub fn part2(
    secret: Round1Secret,
    round1: &BTreeMap<HolderId, Round1Package>,
) -> Result<(Round2Secret, BTreeMap<HolderId, Round2Package>), Error> {
    dispatch!(secret.kind(), S => {
        let secret: round1::SecretPackage<S> = secret.raw.read::<S, _>()?;
        let round1 = others::<S, round1::Package<S>, _>(
            secret.identifier(),
            round1.iter().map(|(holder, package)| (holder, &package.raw)),
        )?;
        let (secret, packages) =
            frost_core::keys::dkg::part2(secret, &round1).map_err(refuse::<S>)?;
        let packages = by_holder::<S, _>(packages)?
            .into_iter()
            .map(|(holder, package)| Ok((holder, Round2Package::from_frost::<S>(&package)?)))
            .collect::<Result<_, Error>>()?;
        Ok((Round2Secret::from_frost::<S>(&secret)?, packages))
    })
}

/// Round 3: checks every share received against its sender's commitment
/// (naming a cheater as [`Error::DkgCheater`]) and answers the holder's key
/// package, the group's public key package and the group's commitment.
/// `round1` is as for [`part2`]; `round2` holds the package each other holder
/// sent this one.
pub fn part3(
    secret: Round2Secret,
    round1: &BTreeMap<HolderId, Round1Package>,
    round2: &BTreeMap<HolderId, Round2Package>,
) -> Result<KeyShare, Error> {
    dispatch!(secret.kind(), S => {
        let secret: round2::SecretPackage<S> = secret.raw.read::<S, _>()?;
        let me = secret.identifier();
        let round1 = others::<S, round1::Package<S>, _>(
            me,
            round1.iter().map(|(holder, package)| (holder, &package.raw)),
        )?;
        let round2 = others::<S, round2::Package<S>, _>(
            me,
            round2.iter().map(|(holder, package)| (holder, &package.raw)),
        )?;
        let (key_package, public) =
            frost_core::keys::dkg::part3(&secret, &round1, &round2).map_err(refuse::<S>)?;
        let commitment = group_commitment::<S>(
            round1.values().map(round1::Package::commitment).chain([secret.commitment()]),
            public.verifying_key(),
            *secret.min_signers(),
        )?;
        let share = KeyShare {
            key_package: KeyPackage::from_frost::<S>(&key_package)?,
            public: PublicKeyPackage::from_frost::<S>(&public)?,
            commitment: Commitment::from_frost::<S>(&commitment)?,
        };
        share.key_package.check(&share.commitment)?;
        Ok(share)
    })
}

/// The packages of every holder but `me`, read.
fn others<'a, S: Suite, T: Wire<S>, B: AsRef<[u8]> + From<Vec<u8>> + 'a>(
    me: &Identifier<S>,
    packages: impl Iterator<Item = (&'a HolderId, &'a Raw<B>)>,
) -> Result<BTreeMap<Identifier<S>, T>, Error> {
    let mut read = read_all::<S, T, B>(packages)?;
    read.remove(me);
    Ok(read)
}

/// The group's commitment: the point-wise sum of every holder's commitment,
/// turned as the DKG's last step turns the sharing, with the group key as its
/// constant term. For secp256k1-tr that step may negate the sharing (even `y`)
/// and adds the BIP341 tweak to the key and to every share alike, which shifts
/// the constant term only; for the other kinds it changes nothing.
fn group_commitment<'a, S: Suite>(
    commitments: impl Iterator<Item = &'a VerifiableSecretSharingCommitment<S>>,
    group_key: &VerifyingKey<S>,
    min_signers: u16,
) -> Result<VerifiableSecretSharingCommitment<S>, Error> {
    let what = <VerifiableSecretSharingCommitment<S> as Wire<S>>::WHAT;
    let bad = || malformed::<S>(what);
    let point = |bytes: &[u8]| {
        CoefficientCommitment::<S>::deserialize(bytes)
            .map(|c| c.value())
            .map_err(|_| bad())
    };
    let encode = |sum: &Element<S>| {
        <S::Group as Group>::serialize(sum)
            .map(|bytes| bytes.as_ref().to_vec())
            .map_err(|_| bad())
    };
    let mut sums = vec![<S::Group as Group>::identity(); usize::from(min_signers)];
    for commitment in commitments {
        let points = commitment.serialize().map_err(|_| bad())?;
        if points.len() != sums.len() {
            return Err(Error::Participants(
                "a DKG commitment has another threshold",
            ));
        }
        for (sum, bytes) in sums.iter_mut().zip(points) {
            *sum = *sum + point(&bytes)?;
        }
    }
    let constant = sums.first().ok_or(Error::Participants("no threshold"))?;
    if S::dkg_negates(&Wire::<S>::decode(&encode(constant)?)?) {
        for sum in sums.iter_mut() {
            *sum = <S::Group as Group>::identity() - *sum;
        }
    }
    if let Some(constant) = sums.first_mut() {
        *constant = point(&group_key.encode()?)?;
    }
    let encoded = sums.iter().map(encode).collect::<Result<Vec<_>, _>>()?;
    VerifiableSecretSharingCommitment::deserialize(encoded).map_err(|_| bad())
}
