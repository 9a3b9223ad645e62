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
    round1_of(Of::Key, kind, me, threshold, rng)
}

/// A DKG of a new key, or a refresh (a DKG of zero added to the shares held).
#[derive(Clone, Copy)]
enum Of {
    Key,
    Zero,
}

fn round1_of(
    of: Of,
    kind: Kind,
    me: HolderId,
    threshold: Threshold,
    rng: &mut impl CryptoRngCore,
) -> Result<(Round1Secret, Round1Package), Error> {
    threshold.check(me)?;
    dispatch!(kind, S => {
        let (id, n, t) = (identifier::<S>(me)?, threshold.n(), threshold.t());
        let (secret, package) = match of {
            Of::Key => frost_core::keys::dkg::part1(id, n, t, &mut *rng),
            Of::Zero => frost_core::keys::refresh::refresh_dkg_part1(id, n, t, &mut *rng),
        }
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
    round2_of(Of::Key, secret, round1)
}

fn round2_of(
    of: Of,
    secret: Round1Secret,
    round1: &BTreeMap<HolderId, Round1Package>,
) -> Result<(Round2Secret, BTreeMap<HolderId, Round2Package>), Error> {
    dispatch!(secret.kind(), S => {
        let secret: round1::SecretPackage<S> = secret.raw.read::<S, _>()?;
        let round1 = others::<S, round1::Package<S>, _>(
            secret.identifier(),
            round1.iter().map(|(holder, package)| (holder, &package.raw)),
        )?;
        let (secret, packages) = match of {
            Of::Key => frost_core::keys::dkg::part2(secret, &round1),
            Of::Zero => frost_core::keys::refresh::refresh_dkg_part2(secret, &round1),
        }
        .map_err(refuse::<S>)?;
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
        let (secret, round1, round2) = read_round3::<S>(&secret, round1, round2)?;
        let (key_package, public) =
            frost_core::keys::dkg::part3(&secret, &round1, &round2).map_err(refuse::<S>)?;
        let commitment = group_commitment::<S>(
            round1.values().map(round1::Package::commitment).chain([secret.commitment()]),
            public.verifying_key(),
            *secret.min_signers(),
        )?;
        checked_share::<S>(&key_package, &public, &commitment)
    })
}

/// Refresh, round 1: like [`part1`], for a polynomial whose constant term is zero (a
/// sharing of zero, FROST's `refresh_dkg_part1`). Its round-1 package goes to every other
/// holder like a DKG's; the refresh's secrets are the same types as a DKG's.
pub fn refresh_part1(
    kind: Kind,
    me: HolderId,
    threshold: Threshold,
    rng: &mut impl CryptoRngCore,
) -> Result<(Round1Secret, Round1Package), Error> {
    round1_of(Of::Zero, kind, me, threshold, rng)
}

/// Refresh, round 2: like [`part2`], for the sharings of zero of [`refresh_part1`].
pub fn refresh_part2(
    secret: Round1Secret,
    round1: &BTreeMap<HolderId, Round1Package>,
) -> Result<(Round2Secret, BTreeMap<HolderId, Round2Package>), Error> {
    round2_of(Of::Zero, secret, round1)
}

/// Refresh, round 3: checks every received share of zero against its sender's
/// commitment and adds them all to the holder's old key package. Answers the new key
/// package, the new public key package (same group key, new verifying shares) and the
/// new group commitment (the old one plus every sharing of zero's), which the new key
/// package is checked against before it is answered. Old shares do not combine with new
/// ones.
pub fn refresh_part3(
    secret: Round2Secret,
    round1: &BTreeMap<HolderId, Round1Package>,
    round2: &BTreeMap<HolderId, Round2Package>,
    old: &KeyShare,
) -> Result<KeyShare, Error> {
    dispatch!(secret.kind(), S => {
        let (secret, round1, round2) = read_round3::<S>(&secret, round1, round2)?;
        let me = secret.identifier();
        let old_key: frost_core::keys::KeyPackage<S> = old.key_package.raw.read::<S, _>()?;
        if old_key.identifier() != me {
            return Err(Error::Participants("the old key package is another holder's"));
        }
        let old_public: frost_core::keys::PublicKeyPackage<S> = old.public.raw.read::<S, _>()?;
        let old_commitment: VerifiableSecretSharingCommitment<S> =
            old.commitment.raw.read::<S, _>()?;
        let (key_package, public) = frost_core::keys::refresh::refresh_dkg_shares(
            &secret,
            &round1,
            &round2,
            old_public,
            old_key,
        )
        .map_err(|e| match e {
            // FROST's refresh names no culprit for a share that fails its commitment.
            frost_core::Error::InvalidSecretShare { culprit: None } => {
                match refresh_culprit::<S>(me, &round1, &round2) {
                    Some(culprit) => Error::DkgCheater { culprit },
                    None => refuse::<S>(e),
                }
            }
            e => refuse::<S>(e),
        })?;
        let commitment = refreshed_commitment::<S>(
            &old_commitment,
            round1.values().map(round1::Package::commitment).chain([secret.commitment()]),
        )?;
        checked_share::<S>(&key_package, &public, &commitment)
    })
}

/// The first holder whose share of zero for `me` fails its commitment:
/// `share·G` against the sum over `k >= 1` of `C_k·x^k` (a sharing of zero's commitment
/// omits its constant term), `x` being `me`'s identifier.
fn refresh_culprit<S: Suite>(
    me: &Identifier<S>,
    round1: &BTreeMap<Identifier<S>, round1::Package<S>>,
    round2: &BTreeMap<Identifier<S>, round2::Package<S>>,
) -> Option<HolderId> {
    type F<S> = <<S as frost_core::Ciphersuite>::Group as Group>::Field;
    let scalar = |bytes: &[u8]| {
        let serialized = <F<S> as frost_core::Field>::Serialization::try_from(bytes).ok()?;
        <F<S> as frost_core::Field>::deserialize(&serialized).ok()
    };
    let x = scalar(&me.serialize())?;
    for (sender, package) in round2 {
        let share = scalar(&package.signing_share().serialize())?;
        let lhs = <S::Group as Group>::generator() * share;
        let mut rhs = <S::Group as Group>::identity();
        let mut power = x;
        for bytes in round1.get(sender)?.commitment().serialize().ok()? {
            let point = CoefficientCommitment::<S>::deserialize(&bytes)
                .ok()?
                .value();
            rhs = rhs + point * power;
            power = power * x;
        }
        if lhs != rhs {
            return crate::suite::by_holder::<S, _>([(*sender, ())])
                .ok()?
                .into_keys()
                .next();
        }
    }
    None
}

/// The group commitment after a refresh: the old one, plus at every coefficient but the
/// constant the sum of the sharings of zero's commitments (which omit their constant,
/// the identity).
fn refreshed_commitment<'a, S: Suite>(
    old: &VerifiableSecretSharingCommitment<S>,
    zeros: impl Iterator<Item = &'a VerifiableSecretSharingCommitment<S>>,
) -> Result<VerifiableSecretSharingCommitment<S>, Error> {
    let what = <VerifiableSecretSharingCommitment<S> as Wire<S>>::WHAT;
    let bad = || malformed::<S>(what);
    let point = |bytes: &[u8]| {
        CoefficientCommitment::<S>::deserialize(bytes)
            .map(|c| c.value())
            .map_err(|_| bad())
    };
    let mut sums = old
        .serialize()
        .map_err(|_| bad())?
        .iter()
        .map(|b| point(b))
        .collect::<Result<Vec<_>, _>>()?;
    for zero in zeros {
        let points = zero.serialize().map_err(|_| bad())?;
        if points.len() + 1 != sums.len() {
            return Err(Error::Participants(
                "a sharing of zero has another threshold",
            ));
        }
        for (sum, bytes) in sums.iter_mut().skip(1).zip(points) {
            *sum = *sum + point(&bytes)?;
        }
    }
    let encoded = sums
        .iter()
        .map(|sum| {
            <S::Group as Group>::serialize(sum)
                .map(|bytes| bytes.as_ref().to_vec())
                .map_err(|_| bad())
        })
        .collect::<Result<Vec<_>, _>>()?;
    VerifiableSecretSharingCommitment::deserialize(encoded).map_err(|_| bad())
}

/// What round 3 (of a DKG or a refresh) reads: the holder's secret, and the other
/// holders' round-1 and round-2 packages.
#[allow(clippy::type_complexity)]
fn read_round3<S: Suite>(
    secret: &Round2Secret,
    round1: &BTreeMap<HolderId, Round1Package>,
    round2: &BTreeMap<HolderId, Round2Package>,
) -> Result<
    (
        round2::SecretPackage<S>,
        BTreeMap<Identifier<S>, round1::Package<S>>,
        BTreeMap<Identifier<S>, round2::Package<S>>,
    ),
    Error,
> {
    let secret: round2::SecretPackage<S> = secret.raw.read::<S, _>()?;
    let me = secret.identifier();
    let round1 = others::<S, round1::Package<S>, _>(
        me,
        round1
            .iter()
            .map(|(holder, package)| (holder, &package.raw)),
    )?;
    let round2 = others::<S, round2::Package<S>, _>(
        me,
        round2
            .iter()
            .map(|(holder, package)| (holder, &package.raw)),
    )?;
    Ok((secret, round1, round2))
}

/// A holder's outcome of a DKG or refresh, answered only once its key package and the
/// public key package pass Feldman's check against the group commitment.
pub(crate) fn checked_share<S: Suite>(
    key_package: &frost_core::keys::KeyPackage<S>,
    public: &frost_core::keys::PublicKeyPackage<S>,
    commitment: &VerifiableSecretSharingCommitment<S>,
) -> Result<KeyShare, Error> {
    let share = KeyShare {
        key_package: KeyPackage::from_frost::<S>(key_package)?,
        public: PublicKeyPackage::from_frost::<S>(public)?,
        commitment: Commitment::from_frost::<S>(commitment)?,
    };
    share.key_package.check(&share.commitment)?;
    share.public.check(&share.commitment)?;
    Ok(share)
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
