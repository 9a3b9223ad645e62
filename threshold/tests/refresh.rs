//! Proactive refresh of signing keys (a DKG of zero): after it, the group key is the
//! same, every `t` new key packages sign, and old and new key packages do not mix.

mod common;

use std::collections::BTreeMap;

use common::{dkg_keys, holder, rng, run_dkg, sign_with, subsets};
use threshold::{deal, dkg, HolderId, KeyEnvelope, KeyPackage, Kind, Threshold};

const MESSAGE: &[u8] = b"refreshed";

/// Every holder's refresh of `old`, all holders run here; packages cross as bytes.
fn refresh(
    kind: Kind,
    threshold: Threshold,
    old: &BTreeMap<HolderId, dkg::KeyShare>,
) -> BTreeMap<HolderId, dkg::KeyShare> {
    let mut rng = rng();
    let mut secrets = BTreeMap::new();
    let mut round1 = BTreeMap::new();
    for id in HolderId::all(threshold.n()) {
        let (secret, package) = dkg::refresh_part1(kind, id, threshold, &mut rng).unwrap();
        round1.insert(
            id,
            dkg::Round1Package::decode(kind, package.as_bytes()).unwrap(),
        );
        secrets.insert(id, secret);
    }
    let mut seconds = BTreeMap::new();
    let mut inbox: BTreeMap<HolderId, BTreeMap<HolderId, dkg::Round2Package>> = BTreeMap::new();
    for (id, secret) in secrets {
        let (secret, outgoing) = dkg::refresh_part2(secret, &round1).unwrap();
        for (to, package) in outgoing {
            let sent = dkg::Round2Package::decode(kind, package.expose()).unwrap();
            inbox.entry(to).or_default().insert(id, sent);
        }
        seconds.insert(id, secret);
    }
    seconds
        .into_iter()
        .map(|(id, secret)| {
            let new = dkg::refresh_part3(secret, &round1, &inbox[&id], &old[&id]).unwrap();
            (id, new)
        })
        .collect()
}

/// A dealt key as the holders' shares.
fn dealt_shares(kind: Kind, threshold: Threshold) -> BTreeMap<HolderId, dkg::KeyShare> {
    let dealt = deal(kind, threshold, &mut rng()).unwrap();
    dealt
        .key_packages
        .into_iter()
        .map(|(id, key_package)| {
            let share = dkg::KeyShare {
                key_package,
                public: dealt.public.clone(),
                commitment: dealt.commitment.clone(),
            };
            (id, share)
        })
        .collect()
}

fn copy(keys: &BTreeMap<HolderId, KeyPackage>, kind: Kind) -> BTreeMap<HolderId, KeyPackage> {
    keys.iter()
        .map(|(id, k)| (*id, KeyPackage::decode(kind, k.expose()).unwrap()))
        .collect()
}

#[test]
fn a_refreshed_key_signs_under_the_same_group_key_and_old_shares_do_not_mix() {
    let split = Threshold::new(3, 4).unwrap();
    for kind in Kind::ALL {
        for (how, old) in [
            ("dealt", dealt_shares(kind, split)),
            ("dkg", run_dkg(kind, split, &mut rng())),
        ] {
            let new = refresh(kind, split, &old);
            let group_key = old[&holder(1)].public.group_key().clone();
            for (id, share) in &new {
                assert_eq!(share.public.group_key(), &group_key, "{kind} {how}");
                assert_ne!(share.key_package.expose(), old[id].key_package.expose());
                // The new package travels in an envelope of the next epoch, which decodes
                // only if it passes Feldman's check against the new commitment.
                let envelope = KeyEnvelope::new(
                    [5; 16],
                    2,
                    KeyPackage::decode(kind, share.key_package.expose()).unwrap(),
                    share.public.clone(),
                    share.commitment.clone(),
                )
                .unwrap();
                KeyEnvelope::decode(&envelope.encode()).unwrap();
                // The old commitment does not fit the new package.
                assert!(share.key_package.check(&old[id].commitment).is_err());
            }
            let (new_keys, new_public) = dkg_keys(new);
            let (old_keys, _) = dkg_keys(old);
            for signers in subsets(4, 3) {
                let signature = sign_with(&new_keys, &new_public, &signers, MESSAGE).unwrap();
                group_key.verify(MESSAGE, &signature).unwrap();
            }
            // Two new packages and one old one: no valid signature comes out.
            let mut mixed = copy(&new_keys, kind);
            mixed.insert(
                holder(3),
                KeyPackage::decode(kind, old_keys[&holder(3)].expose()).unwrap(),
            );
            let signed = sign_with(&mixed, &new_public, &[1, 2, 3], MESSAGE);
            assert!(
                signed.is_err() || group_key.verify(MESSAGE, &signed.unwrap()).is_err(),
                "{kind} {how}: an old share signed with new ones"
            );
        }
    }
}

#[test]
fn a_wrong_share_of_zero_names_its_sender() {
    let split = Threshold::new(3, 4).unwrap();
    for kind in Kind::ALL {
        let old = dealt_shares(kind, split);
        let mut rng = rng();
        let mut secrets = BTreeMap::new();
        let mut round1 = BTreeMap::new();
        for id in HolderId::all(4) {
            let (secret, package) = dkg::refresh_part1(kind, id, split, &mut rng).unwrap();
            round1.insert(id, package);
            secrets.insert(id, secret);
        }
        let mut for_one = BTreeMap::new();
        let mut own = None;
        for (id, secret) in secrets {
            let (secret, mut outgoing) = dkg::refresh_part2(secret, &round1).unwrap();
            if id == holder(1) {
                own = Some(secret);
            } else {
                for_one.insert(id, outgoing.remove(&holder(1)).unwrap());
            }
        }
        // Holder 3's share for holder 1, one bit changed (still a valid encoding).
        let good = for_one[&holder(3)].expose().to_vec();
        let bent = (0..good.len())
            .rev()
            .find_map(|at| {
                let mut b = good.clone();
                b[at] ^= 1;
                dkg::Round2Package::decode(kind, &b).ok()
            })
            .unwrap();
        for_one.insert(holder(3), bent);
        let refused = dkg::refresh_part3(own.unwrap(), &round1, &for_one, &old[&holder(1)]);
        assert!(
            matches!(refused, Err(threshold::Error::DkgCheater { culprit }) if culprit == holder(3)),
            "{kind}: {refused:?}"
        );
    }
}
