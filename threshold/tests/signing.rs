//! Threshold signing end to end, for every kind: dealt and DKG keys, every
//! signing subset, and the refusals a coordinator or a holder relies on.

mod common;

use std::collections::BTreeMap;

use common::{holder, rng, run_dkg, sign_with, subsets};
use threshold::{
    aggregate, commit, deal, dkg, import, sign, Commitment, Dealt, Error, GroupKey, HolderId,
    KeyPackage, Kind, PublicKeyPackage, SeededRng, Signature, SignatureShare, SigningCommitments,
    SigningPackage, Threshold, Zeroizing,
};

const MESSAGE: &[u8] = b"release 2.4.1 of the signing service";

fn three_of_four() -> Threshold {
    Threshold::new(3, 4).unwrap()
}

fn dealt(kind: Kind) -> Dealt {
    deal(kind, three_of_four(), &mut rng()).unwrap()
}

#[test]
fn every_three_of_four_subset_signs_for_every_kind() {
    for kind in Kind::ALL {
        let dealt = dealt(kind);
        assert_eq!(
            dealt.public.holders(),
            (1..=4).map(holder).collect::<Vec<_>>()
        );
        assert_eq!(dealt.public.min_signers(), 3);
        dealt.public.check(&dealt.commitment).unwrap();
        for (id, key) in &dealt.key_packages {
            assert_eq!(key.holder(), *id);
            assert_eq!(key.min_signers(), 3);
            assert_eq!(key.group_key(), dealt.public.group_key());
            key.check(&dealt.commitment).unwrap();
        }
        let group_key = dealt.public.group_key();
        for signers in subsets(4, 3) {
            let signature = sign_with(&dealt.key_packages, &dealt.public, &signers, MESSAGE)
                .unwrap_or_else(|e| panic!("{kind} {signers:?}: {e}"));
            group_key.verify(MESSAGE, &signature).unwrap();
            assert_eq!(
                group_key.verify(b"a different message", &signature),
                Err(Error::InvalidSignature)
            );
        }
        let all_four = sign_with(&dealt.key_packages, &dealt.public, &[1, 2, 3, 4], MESSAGE);
        group_key.verify(MESSAGE, &all_four.unwrap()).unwrap();
    }
}

#[test]
fn signatures_and_keys_have_each_ecosystems_length() {
    for (kind, signature_len, key_len) in [
        (Kind::Ed25519, 64, 32),
        (Kind::Secp256k1Tr, 64, 32),
        (Kind::P256Schnorr, 65, 33),
    ] {
        let dealt = dealt(kind);
        let signature = sign_with(&dealt.key_packages, &dealt.public, &[1, 2, 4], MESSAGE).unwrap();
        assert_eq!(signature.as_bytes().len(), signature_len, "{kind}");
        assert_eq!(dealt.public.group_key().as_bytes().len(), key_len, "{kind}");
        let again = Signature::decode(kind, signature.as_bytes()).unwrap();
        dealt.public.group_key().verify(MESSAGE, &again).unwrap();
    }
}

#[test]
fn fewer_than_t_cannot_sign() {
    for kind in Kind::ALL {
        let dealt = dealt(kind);
        let refused = sign_with(&dealt.key_packages, &dealt.public, &[1, 2], MESSAGE);
        assert!(
            matches!(refused, Err(Error::Participants(_))),
            "{kind}: {refused:?}"
        );
    }
}

#[test]
fn dkg_then_sign_for_every_kind() {
    for kind in Kind::ALL {
        let shares = run_dkg(kind, three_of_four(), &mut rng());
        let first = &shares[&holder(1)];
        let mut key_packages = BTreeMap::new();
        for (id, share) in shares.iter() {
            assert_eq!(share.public, first.public, "{kind}: every holder agrees");
            assert_eq!(share.commitment, first.commitment, "{kind}");
            assert_eq!(share.key_package.holder(), *id);
            share.key_package.check(&share.commitment).unwrap();
            share.public.check(&share.commitment).unwrap();
            let sealed = share.key_package.expose().to_vec();
            key_packages.insert(*id, KeyPackage::decode(kind, &sealed).unwrap());
        }
        for signers in subsets(4, 3) {
            let signature = sign_with(&key_packages, &first.public, &signers, MESSAGE).unwrap();
            first
                .public
                .group_key()
                .verify(MESSAGE, &signature)
                .unwrap();
        }
    }
}

/// The secp256k1-tr DKG negates the sharing when the summed key has odd `y`:
/// half of all runs. Sixteen seeded runs take both paths.
#[test]
fn secp256k1_tr_dkg_commitments_hold_for_either_parity() {
    for seed in 0..16u8 {
        let mut rng = SeededRng::from_seed(Zeroizing::new([seed; 32]));
        for share in run_dkg(Kind::Secp256k1Tr, three_of_four(), &mut rng).values() {
            share.key_package.check(&share.commitment).unwrap();
            share.public.check(&share.commitment).unwrap();
        }
    }
}

#[test]
fn dkg_names_the_holder_whose_package_is_bad() {
    for kind in Kind::ALL {
        let mut rng = rng();
        let mut secrets = BTreeMap::new();
        let mut round1 = BTreeMap::new();
        for id in HolderId::all(3) {
            let (secret, package) =
                dkg::part1(kind, id, Threshold::new(2, 3).unwrap(), &mut rng).unwrap();
            secrets.insert(id, secret);
            round1.insert(id, package);
        }
        // Holder 2's slot carries holder 3's package: its proof of knowledge
        // is bound to holder 3 and fails for 2.
        let mut forged = round1.clone();
        forged.insert(holder(2), round1[&holder(3)].clone());
        let secret = secrets.remove(&holder(1)).unwrap();
        assert_eq!(
            dkg::part2(secret, &forged).map(|_| ()),
            Err(Error::DkgCheater { culprit: holder(2) }),
            "{kind}"
        );

        // Round 2: holder 3's share for holder 1 arrives as holder 2's.
        let mut round2_secrets = BTreeMap::new();
        let mut inbox: BTreeMap<HolderId, BTreeMap<HolderId, dkg::Round2Package>> = BTreeMap::new();
        for (id, secret) in secrets {
            let (secret, outgoing) = dkg::part2(secret, &round1).unwrap();
            for (to, package) in outgoing {
                inbox.entry(to).or_default().insert(id, package);
            }
            round2_secrets.insert(id, secret);
        }
        // Holder 2 receives, in holder 1's slot, the share holder 3 sent it:
        // it fails against holder 1's commitment, so holder 1 is named.
        let mut to_two = inbox.remove(&holder(2)).unwrap();
        let three_to_two = to_two[&holder(3)].expose().to_vec();
        to_two.insert(
            holder(1),
            dkg::Round2Package::decode(kind, &three_to_two).unwrap(),
        );
        let secret = round2_secrets.remove(&holder(2)).unwrap();
        assert_eq!(
            dkg::part3(secret, &round1, &to_two).map(|_| ()),
            Err(Error::DkgCheater { culprit: holder(1) }),
            "{kind}"
        );
    }
}

#[test]
fn a_bad_signature_share_is_named() {
    for kind in Kind::ALL {
        let dealt = dealt(kind);
        let mut rng = rng();
        let mut nonces = BTreeMap::new();
        let mut commitments = BTreeMap::new();
        for id in [1, 3, 4].map(holder) {
            let (mine, public_part) = commit(&dealt.key_packages[&id], &mut rng).unwrap();
            nonces.insert(id, mine);
            commitments.insert(id, public_part);
        }
        let package = SigningPackage::new(kind, &commitments, MESSAGE).unwrap();
        let mut shares: BTreeMap<HolderId, SignatureShare> = nonces
            .into_iter()
            .map(|(id, mine)| (id, sign(&dealt.key_packages[&id], mine, &package).unwrap()))
            .collect();
        let honest = aggregate(&dealt.public, &package, &shares).unwrap();
        dealt.public.group_key().verify(MESSAGE, &honest).unwrap();

        // Holder 3 answers holder 4's share as its own.
        let stolen = shares[&holder(4)].clone();
        shares.insert(holder(3), stolen);
        assert_eq!(
            aggregate(&dealt.public, &package, &shares),
            Err(Error::InvalidShares {
                culprits: vec![holder(3)]
            }),
            "{kind}"
        );
        // Two bad shares: both are named.
        let one = shares[&holder(1)].clone();
        shares.insert(holder(4), one);
        assert_eq!(
            aggregate(&dealt.public, &package, &shares),
            Err(Error::InvalidShares {
                culprits: vec![holder(3), holder(4)]
            }),
            "{kind}"
        );
        // A share missing, or one from a holder outside the package.
        shares.remove(&holder(4));
        assert!(matches!(
            aggregate(&dealt.public, &package, &shares),
            Err(Error::Participants(_))
        ));
    }
}

#[test]
fn round_two_refuses_a_replayed_altered_or_missing_commitment() {
    for kind in Kind::ALL {
        let dealt = dealt(kind);
        let key = |n| &dealt.key_packages[&holder(n)];
        let mut rng = rng();
        let (_, earlier) = commit(key(1), &mut rng).unwrap();
        let (nonces_1, _) = commit(key(1), &mut rng).unwrap();
        let (_, commitments_2) = commit(key(2), &mut rng).unwrap();
        let (_, commitments_3) = commit(key(3), &mut rng).unwrap();
        let package = |one: &SigningCommitments| {
            let set = BTreeMap::from([
                (holder(1), one.clone()),
                (holder(2), commitments_2.clone()),
                (holder(3), commitments_3.clone()),
            ]);
            SigningPackage::new(kind, &set, MESSAGE).unwrap()
        };

        // Replayed: the package carries holder 1's commitment from an earlier session.
        assert_eq!(
            sign(key(1), nonces_1, &package(&earlier)).map(|_| ()),
            Err(Error::CommitmentAltered(holder(1)))
        );

        // Altered: holder 2's commitment in holder 1's slot.
        let (nonces_1, _) = commit(key(1), &mut rng).unwrap();
        assert_eq!(
            sign(key(1), nonces_1, &package(&commitments_2)).map(|_| ()),
            Err(Error::CommitmentAltered(holder(1)))
        );

        // Missing: a package for holders 2, 3 and 4 reaches holder 1.
        let (nonces_1, _) = commit(key(1), &mut rng).unwrap();
        let (_, commitments_4) = commit(key(4), &mut rng).unwrap();
        let without_one = BTreeMap::from([
            (holder(2), commitments_2.clone()),
            (holder(3), commitments_3.clone()),
            (holder(4), commitments_4),
        ]);
        let without_one = SigningPackage::new(kind, &without_one, MESSAGE).unwrap();
        assert_eq!(without_one.holders(), [2, 3, 4].map(holder));
        assert_eq!(
            sign(key(1), nonces_1, &without_one).map(|_| ()),
            Err(Error::CommitmentMissing(holder(1)))
        );

        // The package these nonces made is signed.
        let (nonces_1, commitments_1) = commit(key(1), &mut rng).unwrap();
        assert!(sign(key(1), nonces_1, &package(&commitments_1)).is_ok());
    }
}

#[test]
fn kinds_do_not_mix() {
    let ed25519 = dealt(Kind::Ed25519);
    let p256 = dealt(Kind::P256Schnorr);
    let mut rng = rng();
    let (nonces, commitments) = commit(&ed25519.key_packages[&holder(1)], &mut rng).unwrap();
    let refused = SigningPackage::new(
        Kind::P256Schnorr,
        &BTreeMap::from([(holder(1), commitments)]),
        MESSAGE,
    );
    assert!(matches!(
        refused,
        Err(Error::KindMismatch {
            expected: Kind::P256Schnorr,
            found: Kind::Ed25519,
            ..
        })
    ));
    let (_, p256_commitments) = commit(&p256.key_packages[&holder(1)], &mut rng).unwrap();
    let p256_package = SigningPackage::new(
        Kind::P256Schnorr,
        &BTreeMap::from([(holder(1), p256_commitments)]),
        MESSAGE,
    )
    .unwrap();
    assert!(matches!(
        sign(&ed25519.key_packages[&holder(1)], nonces, &p256_package),
        Err(Error::KindMismatch { .. })
    ));
    assert!(matches!(
        ed25519.key_packages[&holder(1)].check(&p256.commitment),
        Err(Error::KindMismatch { .. })
    ));
    let p256_signature = sign_with(&p256.key_packages, &p256.public, &[1, 2, 3], MESSAGE).unwrap();
    assert!(matches!(
        ed25519.public.group_key().verify(MESSAGE, &p256_signature),
        Err(Error::KindMismatch { .. })
    ));
    // FROST's bytes name their ciphersuite: another kind's bytes do not decode.
    let bytes = p256.key_packages[&holder(1)].expose().to_vec();
    assert!(matches!(
        KeyPackage::decode(Kind::Secp256k1Tr, &bytes),
        Err(Error::Malformed { .. })
    ));
}

#[test]
fn a_key_package_from_another_dealing_fails_the_feldman_check() {
    for kind in Kind::ALL {
        let one = dealt(kind);
        let other = dealt(kind);
        let key = &one.key_packages[&holder(2)];
        key.check(&one.commitment).unwrap();
        assert_eq!(key.check(&other.commitment), Err(Error::ShareMismatch));
        assert_eq!(
            one.public.check(&other.commitment),
            Err(Error::ShareMismatch)
        );

        // The right commitment with one point altered: another polynomial.
        let points = one.commitment.as_bytes();
        let second_half = other.commitment.as_bytes();
        let len = points.len() / 3;
        let spliced = [&points[..2 * len], &second_half[2 * len..]].concat();
        let spliced = Commitment::decode(kind, &spliced).unwrap();
        assert_eq!(key.check(&spliced), Err(Error::ShareMismatch));

        // A commitment of another threshold.
        let two_of_four = deal(kind, Threshold::new(2, 4).unwrap(), &mut rng()).unwrap();
        assert_eq!(
            key.check(&two_of_four.commitment),
            Err(Error::ShareMismatch)
        );
    }
}

#[test]
fn imported_keys_keep_their_public_key() {
    // P-256: the key's SEC1 point, as the p256 crate computes it.
    let scalar = [0x42u8; 32];
    let secret = p256::SecretKey::from_slice(&scalar).unwrap();
    let point =
        p256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(&secret.public_key(), true);
    let dealt = import(Kind::P256Schnorr, &scalar, three_of_four(), &mut rng()).unwrap();
    assert_eq!(dealt.public.group_key().as_bytes(), point.as_bytes());
    let signature = sign_with(&dealt.key_packages, &dealt.public, &[2, 3, 4], MESSAGE).unwrap();
    dealt
        .public
        .group_key()
        .verify(MESSAGE, &signature)
        .unwrap();

    for kind in Kind::ALL {
        // Any 32 bytes are an Ed25519 seed; a scalar must be below the order.
        let out_of_range: &[&[u8]] = match kind {
            Kind::Ed25519 => &[],
            Kind::Secp256k1Tr | Kind::P256Schnorr => &[&[0u8; 32], &[0xffu8; 32]],
        };
        let wrong_length: &[&[u8]] = &[&[], &[1u8; 31], &[1u8; 33], &[1u8; 64]];
        for bad in wrong_length.iter().chain(out_of_range) {
            assert_eq!(
                import(kind, bad, three_of_four(), &mut rng()).map(|_| ()),
                Err(Error::InvalidPrivateKey(kind)),
                "{kind} {bad:?}"
            );
        }
    }
}

#[test]
fn values_survive_their_bytes() {
    for kind in Kind::ALL {
        let dealt = dealt(kind);
        let key = &dealt.key_packages[&holder(1)];
        let again = KeyPackage::decode(kind, key.expose()).unwrap();
        assert_eq!(again.expose(), key.expose());
        assert_eq!(again.holder(), holder(1));
        assert_eq!(
            PublicKeyPackage::decode(kind, dealt.public.as_bytes()),
            Ok(dealt.public.clone())
        );
        assert_eq!(
            Commitment::decode(kind, dealt.commitment.as_bytes()),
            Ok(dealt.commitment.clone())
        );
        let (nonces, commitments) = commit(key, &mut rng()).unwrap();
        assert_eq!(
            SigningCommitments::decode(kind, commitments.as_bytes()),
            Ok(commitments.clone())
        );
        let package =
            SigningPackage::new(kind, &BTreeMap::from([(holder(1), commitments)]), MESSAGE)
                .unwrap();
        assert_eq!(
            SigningPackage::decode(kind, package.as_bytes()),
            Ok(package.clone())
        );
        let _ = nonces;
        let group_key = dealt.public.group_key();
        assert_eq!(
            GroupKey::decode(kind, group_key.as_bytes()).as_ref(),
            Ok(group_key)
        );
        assert_eq!(
            GroupKey::from_text(kind, &group_key.to_text()).as_ref(),
            Ok(group_key)
        );
        // Secrets print nothing of themselves.
        let printed = format!(
            "{key:?} {nonces:?}",
            nonces = commit(key, &mut rng()).unwrap().0
        );
        assert!(
            !printed.contains(&hex::encode(key.expose())[..16]),
            "{printed}"
        );
    }
    let pem = dealt(Kind::Ed25519).public.group_key().to_text();
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"), "{pem}");
}

#[test]
fn threshold_outside_its_bounds_is_refused() {
    assert_eq!(
        Threshold::new(1, 4),
        Err(Error::InvalidThreshold { t: 1, n: 4 })
    );
    assert_eq!(
        Threshold::new(5, 4),
        Err(Error::InvalidThreshold { t: 5, n: 4 })
    );
    assert_eq!(
        dkg::part1(Kind::Ed25519, holder(5), three_of_four(), &mut rng()).map(|_| ()),
        Err(Error::InvalidHolder(5))
    );
}
