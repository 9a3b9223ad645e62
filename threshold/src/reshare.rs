//! Reshare: a key moves to a new set of holders (new `t`, new `n`, holders added, replaced
//! or removed) without being rebuilt anywhere, and with the same group key.
//!
//! A quorum of at least `t` old holders, the *dealers*, each weight their share by its
//! Lagrange coefficient at zero over the quorum (`λ_i·s_i`: the quorum's weighted shares
//! sum to the key) and split that weighted share with a fresh polynomial of the new
//! threshold among the new holders ([`deal`]). Each new holder gets one [`SubShare`] from
//! every dealer, over the peer channel, and adds them ([`combine`]): the sum is its share
//! of the same key under the sum of the dealers' polynomials.
//!
//! A new holder checks every sub-share against its dealer's commitment (Feldman), that the
//! commitment is the one the dealer announced to every holder, and that its constant term
//! is the dealer's old public share weighted alike (`λ_i·Y_i`, from the old public key
//! package): a dealer cannot deal anything but its own weighted share without being named
//! ([`Error::DkgCheater`]). The new group commitment is the sum of the dealers'; its
//! constant term is the old group key, and the new key package is checked against it
//! before it is answered.

use std::collections::{BTreeMap, BTreeSet};

use frost_core::keys::{
    IdentifierList, KeyPackage as FrostKeyPackage, PublicKeyPackage as FrostPublicKeyPackage,
    SecretShare, SigningShare, VerifiableSecretSharingCommitment,
};
use frost_core::{Group, Identifier, SigningKey};
use rand_core::CryptoRngCore;

use crate::dkg::{checked_share, KeyShare};
use crate::keys::{Commitment, KeyPackage, PublicKeyPackage};
use crate::raw::held;
use crate::suite::{dispatch, holder, identifier, refuse, Suite};
use crate::{Error, HolderId, Threshold};

held! {
    /// One dealer's share of its weighted share for one new holder, with the dealer's
    /// commitment. Secret: goes over mutual TLS to that holder only.
    sealed SubShare(keys::SecretShare)
}

/// What one dealer deals: its commitment (public, for every new holder alike) and one
/// sub-share per new holder `1..=n`.
#[derive(Debug)]
pub struct Dealing {
    /// The commitment to the dealer's polynomial; its constant term is `λ_i·Y_i`.
    pub commitment: Commitment,
    /// One sub-share per new holder.
    pub shares: BTreeMap<HolderId, SubShare>,
}

/// Deals holder `old.key_package`'s Lagrange-weighted share over the quorum `dealers` (at
/// least the old threshold, this holder among them) to new holders `1..=to.n()`, `to.t()`
/// of whom will sign.
pub fn deal(
    old: &KeyPackage,
    dealers: &BTreeSet<HolderId>,
    to: Threshold,
    rng: &mut impl CryptoRngCore,
) -> Result<Dealing, Error> {
    dispatch!(old.kind(), S => deal_as::<S>(old, dealers, to, rng))
}

fn deal_as<S: Suite>(
    old: &KeyPackage,
    dealers: &BTreeSet<HolderId>,
    to: Threshold,
    rng: &mut impl CryptoRngCore,
) -> Result<Dealing, Error> {
    let package: FrostKeyPackage<S> = old.raw.read::<S, _>()?;
    if dealers.len() < usize::from(*package.min_signers()) {
        return Err(Error::Participants("fewer dealers than the old threshold"));
    }
    let quorum = identifiers::<S>(dealers)?;
    if !quorum.contains(package.identifier()) {
        return Err(Error::Participants("this holder is not one of the dealers"));
    }
    let lambda = frost_core::compute_lagrange_coefficient(&quorum, None, *package.identifier())
        .map_err(refuse::<S>)?;
    let weighted = SigningKey::<S>::from_scalar(package.signing_share().to_scalar() * lambda)
        .map_err(refuse::<S>)?;
    let (shares, _) =
        frost_core::keys::split(&weighted, to.n(), to.t(), IdentifierList::Default, rng)
            .map_err(refuse::<S>)?;
    drop(weighted);
    let commitment = shares
        .values()
        .next()
        .map(|share| Commitment::from_frost::<S>(share.commitment()))
        .ok_or(Error::Participants("no new holders"))??;
    let shares = shares
        .iter()
        .map(|(id, share)| Ok((holder::<S>(id)?, SubShare::from_frost::<S>(share)?)))
        .collect::<Result<_, Error>>()?;
    Ok(Dealing { commitment, shares })
}

/// New holder `me`'s key share of a `to` sharing: checks every dealer's sub-share (keyed
/// by the dealer's old holder number, with the commitment the dealer announced to every
/// new holder) against the old public key package and adds them. A dealer whose
/// sub-share or commitment does not check is named as [`Error::DkgCheater`].
pub fn combine(
    me: HolderId,
    to: Threshold,
    old: &PublicKeyPackage,
    dealings: &BTreeMap<HolderId, (Commitment, SubShare)>,
) -> Result<KeyShare, Error> {
    dispatch!(old.kind(), S => combine_as::<S>(me, to, old, dealings))
}

fn combine_as<S: Suite>(
    me: HolderId,
    to: Threshold,
    old: &PublicKeyPackage,
    dealings: &BTreeMap<HolderId, (Commitment, SubShare)>,
) -> Result<KeyShare, Error> {
    to.check(me)?;
    let old: FrostPublicKeyPackage<S> = old.raw.read::<S, _>()?;
    let old_t = old.min_signers().ok_or(Error::Participants(
        "the old public key package names no threshold",
    ))?;
    let dealers: BTreeSet<HolderId> = dealings.keys().copied().collect();
    if dealers.len() < usize::from(old_t) {
        return Err(Error::Participants("fewer dealers than the old threshold"));
    }
    let quorum = identifiers::<S>(&dealers)?;
    let me_id = identifier::<S>(me)?;
    let mut sum = <<S::Group as Group>::Field as frost_core::Field>::zero();
    let mut commitments = Vec::with_capacity(dealings.len());
    for (dealer, (announced, sub)) in dealings {
        let cheater = Error::DkgCheater { culprit: *dealer };
        let id = identifier::<S>(*dealer)?;
        let old_share = old
            .verifying_shares()
            .get(&id)
            .ok_or(Error::Participants("a dealer that is not an old holder"))?;
        let share: SecretShare<S> = sub.raw.read::<S, _>().map_err(|_| cheater.clone())?;
        let announced: VerifiableSecretSharingCommitment<S> =
            announced.raw.read::<S, _>().map_err(|_| cheater.clone())?;
        if *share.identifier() != me_id {
            return Err(Error::Participants("a sub-share for another holder"));
        }
        let lambda =
            frost_core::compute_lagrange_coefficient(&quorum, None, id).map_err(refuse::<S>)?;
        let weighted = old_share.to_element() * lambda;
        let coefficients = share.commitment().coefficients();
        let fits = *share.commitment() == announced
            && coefficients.len() == usize::from(to.t())
            && coefficients.first().map(|c| c.value()) == Some(weighted)
            && share.verify().is_ok();
        if !fits {
            return Err(cheater);
        }
        sum = sum + share.signing_share().to_scalar();
        commitments.push(announced);
    }
    let refs: Vec<_> = commitments.iter().collect();
    let commitment = frost_core::keys::sum_commitments(&refs).map_err(refuse::<S>)?;
    let holders = identifiers::<S>(&HolderId::all(to.n()).collect())?;
    let public =
        FrostPublicKeyPackage::from_commitment(&holders, &commitment).map_err(refuse::<S>)?;
    if public.verifying_key() != old.verifying_key() {
        return Err(Error::Participants(
            "the dealt key is not the old group key",
        ));
    }
    let verifying_share = *public
        .verifying_shares()
        .get(&me_id)
        .ok_or(Error::InvalidHolder(me.get()))?;
    let key_package = FrostKeyPackage::new(
        me_id,
        SigningShare::new(sum),
        verifying_share,
        *old.verifying_key(),
        to.t(),
    );
    checked_share::<S>(&key_package, &public, &commitment)
}

fn identifiers<S: Suite>(holders: &BTreeSet<HolderId>) -> Result<BTreeSet<Identifier<S>>, Error> {
    holders.iter().map(|h| identifier::<S>(*h)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Kind, SeededRng, Zeroizing};

    fn rng(seed: u8) -> SeededRng {
        SeededRng::from_seed(Zeroizing::new([seed; 32]))
    }

    fn h(n: u16) -> HolderId {
        HolderId::new(n).unwrap()
    }

    /// Every new holder's share from the dealers' dealings.
    fn reshare(
        dealt: &crate::Dealt,
        dealers: &[u16],
        to: Threshold,
        seed: u8,
    ) -> Vec<Result<KeyShare, Error>> {
        let quorum: BTreeSet<_> = dealers.iter().map(|d| h(*d)).collect();
        let dealings: Vec<(HolderId, Dealing)> = quorum
            .iter()
            .map(|d| {
                let old = &dealt.key_packages[d];
                (
                    *d,
                    deal(old, &quorum, to, &mut rng(seed + d.get() as u8)).unwrap(),
                )
            })
            .collect();
        HolderId::all(to.n())
            .map(|me| {
                let mine = dealings
                    .iter()
                    .map(|(d, dealing)| {
                        let sub =
                            SubShare::decode(dealt.public.kind(), dealing.shares[&me].expose())
                                .unwrap();
                        (*d, (dealing.commitment.clone(), sub))
                    })
                    .collect();
                combine(me, to, &dealt.public, &mine)
            })
            .collect()
    }

    #[test]
    fn a_reshared_key_keeps_its_group_key_and_every_new_share_checks() {
        for kind in [Kind::Ed25519, Kind::Secp256k1Tr, Kind::P256Schnorr] {
            let dealt = crate::deal(kind, Threshold::new(3, 4).unwrap(), &mut rng(1)).unwrap();
            for (dealers, to) in [
                (&[1u16, 2, 3][..], Threshold::new(3, 4).unwrap()),
                (&[2, 3, 4][..], Threshold::new(2, 3).unwrap()),
                (&[1, 2, 3, 4][..], Threshold::new(4, 5).unwrap()),
            ] {
                let shares = reshare(&dealt, dealers, to, 10);
                let first = shares[0].as_ref().unwrap();
                for share in &shares {
                    let share = share.as_ref().unwrap();
                    assert_eq!(share.public, first.public, "{kind}");
                    assert_eq!(share.key_package.group_key(), dealt.public.group_key());
                    assert_eq!(share.key_package.min_signers(), to.t());
                    share.key_package.check(&share.commitment).unwrap();
                }
                assert_eq!(first.public.holders().len(), usize::from(to.n()));
            }
        }
    }

    #[test]
    fn too_few_dealers_or_a_stranger_dealer_is_refused() {
        let dealt = crate::deal(Kind::Ed25519, Threshold::new(3, 4).unwrap(), &mut rng(2)).unwrap();
        let to = Threshold::new(2, 3).unwrap();
        let two: BTreeSet<_> = [h(1), h(2)].into();
        assert!(matches!(
            deal(&dealt.key_packages[&h(1)], &two, to, &mut rng(3)),
            Err(Error::Participants(_))
        ));
        let others: BTreeSet<_> = [h(2), h(3), h(4)].into();
        assert!(matches!(
            deal(&dealt.key_packages[&h(1)], &others, to, &mut rng(3)),
            Err(Error::Participants(_))
        ));
    }

    #[test]
    fn a_dealer_that_deals_anything_else_is_named() {
        let kind = Kind::P256Schnorr;
        let dealt = crate::deal(kind, Threshold::new(2, 3).unwrap(), &mut rng(4)).unwrap();
        let other = crate::deal(kind, Threshold::new(2, 3).unwrap(), &mut rng(5)).unwrap();
        let to = Threshold::new(2, 3).unwrap();
        let quorum: BTreeSet<_> = [h(1), h(3)].into();
        let honest = deal(&dealt.key_packages[&h(1)], &quorum, to, &mut rng(6)).unwrap();
        // Holder 3 deals a share of another key: its constant term is not λ·Y_3.
        let liar = deal(&other.key_packages[&h(3)], &quorum, to, &mut rng(7)).unwrap();
        let sub = |d: &Dealing, me: u16| SubShare::decode(kind, d.shares[&h(me)].expose()).unwrap();
        let mine: BTreeMap<_, _> = [
            (h(1), (honest.commitment.clone(), sub(&honest, 1))),
            (h(3), (liar.commitment.clone(), sub(&liar, 1))),
        ]
        .into();
        assert_eq!(
            combine(h(1), to, &dealt.public, &mine).unwrap_err(),
            Error::DkgCheater { culprit: h(3) }
        );
        // Holder 3 announces one commitment and sends a sub-share under another.
        let again = deal(&dealt.key_packages[&h(3)], &quorum, to, &mut rng(8)).unwrap();
        let real = deal(&dealt.key_packages[&h(3)], &quorum, to, &mut rng(9)).unwrap();
        let mine: BTreeMap<_, _> = [
            (h(1), (honest.commitment.clone(), sub(&honest, 2))),
            (h(3), (again.commitment.clone(), sub(&real, 2))),
        ]
        .into();
        assert_eq!(
            combine(h(2), to, &dealt.public, &mine).unwrap_err(),
            Error::DkgCheater { culprit: h(3) }
        );
        // Honest dealings combine.
        let mine: BTreeMap<_, _> = [
            (h(1), (honest.commitment.clone(), sub(&honest, 2))),
            (h(3), (real.commitment.clone(), sub(&real, 2))),
        ]
        .into();
        combine(h(2), to, &dealt.public, &mine).unwrap();
    }
}
