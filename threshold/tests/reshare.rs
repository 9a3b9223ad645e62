//! Reshare of signing keys: a quorum of old holders deals Lagrange-weighted shares to a
//! new set. After it, the group key is the same, every `t'` new key packages sign, and
//! old and new key packages do not mix.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{dkg_keys, holder, rng, run_dkg, sign_with, subsets};
use threshold::reshare::{combine, deal, SubShare};
use threshold::{dkg, HolderId, KeyPackage, Kind, Threshold};

const MESSAGE: &[u8] = b"reshared";

/// Every new holder's share, the dealers' packages crossing as bytes.
fn reshare(
    kind: Kind,
    old: &BTreeMap<HolderId, dkg::KeyShare>,
    dealers: &[u16],
    to: Threshold,
) -> BTreeMap<HolderId, dkg::KeyShare> {
    let quorum: BTreeSet<_> = dealers.iter().map(|d| holder(*d)).collect();
    let dealings: Vec<_> = quorum
        .iter()
        .map(|d| {
            (
                *d,
                deal(&old[d].key_package, &quorum, to, &mut rng()).unwrap(),
            )
        })
        .collect();
    let public = &old[&holder(dealers[0])].public;
    HolderId::all(to.n())
        .map(|me| {
            let mine = dealings
                .iter()
                .map(|(d, dealing)| {
                    let sub = SubShare::decode(kind, dealing.shares[&me].expose()).unwrap();
                    (*d, (dealing.commitment.clone(), sub))
                })
                .collect();
            (me, combine(me, to, public, &mine).unwrap())
        })
        .collect()
}

#[test]
fn a_reshared_key_signs_under_the_same_group_key_with_the_new_threshold_only() {
    for kind in Kind::ALL {
        let old = run_dkg(kind, Threshold::new(3, 4).unwrap(), &mut rng());
        let group_key = old[&holder(1)].public.group_key().clone();
        // Holder 4 is lost: 1, 2, 3 deal to five new holders, any two of whom sign.
        let to = Threshold::new(2, 5).unwrap();
        let new = reshare(kind, &old, &[1, 2, 3], to);
        for share in new.values() {
            assert_eq!(share.public.group_key(), &group_key, "{kind}");
            assert_eq!(share.public.min_signers(), 2);
        }
        let (new_keys, new_public) = dkg_keys(new);
        for signers in subsets(5, 2) {
            let signature = sign_with(&new_keys, &new_public, &signers, MESSAGE).unwrap();
            group_key.verify(MESSAGE, &signature).unwrap();
        }
        // One new package and one old one: no valid signature comes out.
        let (old_keys, _) = dkg_keys(old);
        let mut mixed: BTreeMap<_, _> = new_keys
            .iter()
            .map(|(id, k)| (*id, KeyPackage::decode(kind, k.expose()).unwrap()))
            .collect();
        mixed.insert(
            holder(2),
            KeyPackage::decode(kind, old_keys[&holder(2)].expose()).unwrap(),
        );
        let signed = sign_with(&mixed, &new_public, &[1, 2], MESSAGE);
        assert!(
            signed.is_err() || group_key.verify(MESSAGE, &signed.unwrap()).is_err(),
            "{kind}: an old share signed with a new one"
        );
    }
}
