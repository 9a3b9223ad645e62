//! Property tests of the shard core: splitting, combining, envelopes and verified recovery.

use proptest::prelude::*;
use rand::{rngs::StdRng, SeedableRng};
use shard::{
    combine, combine_envelopes, combine_verified, commitments, deal, split, CustodianId, Error,
    Fault, IndexedShare, Manifest, RecoverError, Returned, Secret, SecretId, SecretKind,
    ShardEnvelope, Threshold,
};
use zeroize::Zeroizing;

/// All `k`-subsets of `0..n` when there are at most `limit` of them, else `limit` random ones.
fn subsets(n: usize, k: usize, limit: usize, rng: &mut StdRng) -> Vec<Vec<usize>> {
    fn all(
        n: usize,
        k: usize,
        start: usize,
        cur: &mut Vec<usize>,
        out: &mut Vec<Vec<usize>>,
        limit: usize,
    ) {
        if out.len() > limit {
            return;
        }
        if cur.len() == k {
            out.push(cur.clone());
            return;
        }
        for i in start..n {
            cur.push(i);
            all(n, k, i + 1, cur, out, limit);
            cur.pop();
        }
    }
    let mut out = Vec::new();
    all(n, k, 0, &mut Vec::new(), &mut out, limit);
    if out.len() <= limit {
        return out;
    }
    use rand::seq::SliceRandom;
    (0..limit)
        .map(|_| {
            let mut idx: Vec<usize> = (0..n).collect();
            idx.shuffle(rng);
            idx.truncate(k);
            idx
        })
        .collect()
}

fn params() -> impl Strategy<Value = (u8, u8, Vec<u8>, u64)> {
    (2u8..=16)
        .prop_flat_map(|n| (2u8..=n, Just(n)))
        .prop_flat_map(|(t, n)| {
            (
                Just(t),
                Just(n),
                prop::collection::vec(any::<u8>(), 1..300),
                any::<u64>(),
            )
        })
}

fn manifest_for(envs: &[ShardEnvelope], kind: SecretKind) -> (Manifest, Vec<CustodianId>) {
    let n = envs[0].threshold.n();
    let custodians: Vec<CustodianId> = (1..=n)
        .map(|i| CustodianId::new(&format!("c{i}")).unwrap())
        .collect();
    let m = Manifest {
        secret_id: envs[0].secret_id,
        threshold: envs[0].threshold,
        epoch: envs[0].epoch,
        created_at: 1_700_000_000,
        owner: "spiffe://example.test/user/alice".into(),
        kind,
        custodians: custodians.clone(),
        commitments: commitments(envs),
    };
    (m, custodians)
}

fn returned(custodian: &CustodianId, env: &ShardEnvelope) -> Returned {
    Returned {
        custodian: custodian.clone(),
        envelope: env.encode(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Every t-subset of the n shards recovers the secret; t-1 shards never do.
    #[test]
    fn every_t_subset_recovers_and_t_minus_1_never((t, n, bytes, seed) in params()) {
        let mut rng = StdRng::seed_from_u64(seed);
        let secret = Secret::new(bytes).unwrap();
        let shares = split(&secret, Threshold::new(t, n).unwrap(), &mut rng);
        prop_assert_eq!(shares.len(), usize::from(n));
        for subset in subsets(usize::from(n), usize::from(t), 200, &mut rng) {
            let chosen: Vec<IndexedShare> = subset.iter().map(|&i| shares[i].clone()).collect();
            prop_assert_eq!(&combine(t, &chosen).unwrap(), &secret);
        }
        for subset in subsets(usize::from(n), usize::from(t - 1), 50, &mut rng) {
            let chosen: Vec<IndexedShare> = subset.iter().map(|&i| shares[i].clone()).collect();
            prop_assert_eq!(
                combine(t, &chosen).unwrap_err(),
                Error::NotEnoughShards { have: usize::from(t - 1), need: usize::from(t) }
            );
            // Interpolating t-1 points as if the threshold were t-1 yields some other value:
            // with a secret of 8 bytes or more a coincidence has probability 2^-64.
            if t > 2 && secret.len() >= 8 {
                let wrong = combine(t - 1, &chosen).unwrap();
                prop_assert_ne!(&wrong, &secret);
            }
        }
    }

    /// Envelopes round-trip, and every strict prefix or extension is refused with its own error.
    #[test]
    fn envelope_truncation_and_extension((t, n, bytes, seed) in params(), extra in 1usize..64) {
        let mut rng = StdRng::seed_from_u64(seed);
        let secret = Secret::new(bytes).unwrap();
        let envs = deal(&secret, Threshold::new(t, n).unwrap(), SecretId::from_bytes([3; 16]), 1, &mut rng);
        let enc = envs[0].encode();
        prop_assert_eq!(&ShardEnvelope::decode(&enc).unwrap(), &envs[0]);
        let cut = (seed as usize) % enc.len();
        let e = ShardEnvelope::decode(&enc[..cut]).unwrap_err();
        prop_assert!(matches!(e, Error::Truncated(_)), "prefix of {} gave {:?}", cut, e);
        let mut long = enc.to_vec();
        long.extend(std::iter::repeat_n(0u8, extra));
        prop_assert_eq!(ShardEnvelope::decode(&long).unwrap_err(), Error::Oversized("shard envelope"));
    }

    /// A flipped bit anywhere in one returned shard: combine_verified names exactly that
    /// custodian and still succeeds when t valid shards remain.
    #[test]
    fn flipped_bit_names_the_custodian((t, n, bytes, seed) in params(), bit in any::<usize>(), victim in any::<usize>()) {
        let mut rng = StdRng::seed_from_u64(seed);
        let secret = Secret::new(bytes).unwrap();
        let envs = deal(&secret, Threshold::new(t, n).unwrap(), SecretId::from_bytes([5; 16]), 2, &mut rng);
        let (manifest, custodians) = manifest_for(&envs, SecretKind::Opaque);
        let victim = victim % usize::from(n);
        let mut answers: Vec<Returned> = envs.iter().zip(&custodians).map(|(e, c)| returned(c, e)).collect();
        let len = answers[victim].envelope.len();
        let bit = bit % (len * 8);
        answers[victim].envelope[bit / 8] ^= 1 << (bit % 8);
        let result = combine_verified(&manifest, answers);
        if n > t {
            let rec = result.unwrap();
            prop_assert_eq!(&rec.secret, &secret);
            prop_assert_eq!(rec.bad.len(), 1);
            prop_assert_eq!(&rec.bad[0].0, &custodians[victim]);
            prop_assert!(!rec.used.contains(&custodians[victim]));
        } else {
            match result.unwrap_err() {
                RecoverError::NotEnoughValid { valid, needed, bad } => {
                    prop_assert_eq!(valid, usize::from(t) - 1);
                    prop_assert_eq!(needed, usize::from(t));
                    prop_assert_eq!(bad.len(), 1);
                    prop_assert_eq!(&bad[0].0, &custodians[victim]);
                }
                other => prop_assert!(false, "unexpected {:?}", other),
            }
        }
    }
}

#[test]
fn max_length_secret_round_trips() {
    let mut rng = StdRng::seed_from_u64(9);
    let bytes: Vec<u8> = (0..65_536u32).map(|i| (i * 7 + 3) as u8).collect();
    let secret = Secret::new(bytes).unwrap();
    let envs = deal(
        &secret,
        Threshold::new(3, 4).unwrap(),
        SecretId::from_bytes([1; 16]),
        1,
        &mut rng,
    );
    let decoded: Vec<ShardEnvelope> = envs[1..]
        .iter()
        .map(|e| ShardEnvelope::decode(&e.encode()).unwrap())
        .collect();
    assert_eq!(combine_envelopes(&decoded).unwrap(), secret);
}

#[test]
fn index_zero_and_duplicates_are_refused() {
    let mut rng = StdRng::seed_from_u64(1);
    let secret = Secret::from_slice(b"0123456789abcdef").unwrap();
    let shares = split(&secret, Threshold::new(2, 3).unwrap(), &mut rng);
    let mut zero = shares.clone();
    zero[1].index = 0;
    assert_eq!(combine(2, &zero), Err(Error::IndexZero));
    let dup = vec![shares[2].clone(), shares[2].clone()];
    assert_eq!(combine(2, &dup), Err(Error::DuplicateIndex(3)));

    let envs = deal(
        &secret,
        Threshold::new(2, 3).unwrap(),
        SecretId::from_bytes([1; 16]),
        1,
        &mut rng,
    );
    let mut enc = envs[0].encode();
    enc[21] = 0; // the index byte
    assert_eq!(ShardEnvelope::decode(&enc), Err(Error::IndexZero));
    assert_eq!(
        combine_envelopes(&[envs[1].clone(), envs[1].clone()]),
        Err(Error::DuplicateIndex(2))
    );
}

#[test]
fn mixed_secrets_and_epochs_are_refused() {
    let mut rng = StdRng::seed_from_u64(2);
    let a = Secret::from_slice(b"first secret....").unwrap();
    let b = Secret::from_slice(b"second secret...").unwrap();
    let th = Threshold::new(2, 3).unwrap();
    let ea = deal(&a, th, SecretId::from_bytes([1; 16]), 1, &mut rng);
    let eb = deal(&b, th, SecretId::from_bytes([2; 16]), 1, &mut rng);
    let ea2 = deal(&a, th, SecretId::from_bytes([1; 16]), 2, &mut rng);
    assert_eq!(
        combine_envelopes(&[ea[0].clone(), eb[1].clone()]),
        Err(Error::MixedSecrets)
    );
    assert_eq!(
        combine_envelopes(&[ea[0].clone(), ea2[1].clone()]),
        Err(Error::MixedEpochs)
    );
    assert_eq!(combine_envelopes(&ea[..2]).unwrap(), a);

    // Through the manifest: the foreign shards are named, each with its own fault.
    let (m, cs) = manifest_for(&ea, SecretKind::Opaque);
    let answers = vec![
        returned(&cs[0], &ea[0]),
        returned(&cs[1], &eb[1]),
        returned(&cs[2], &ea2[2]),
    ];
    match combine_verified(&m, answers).unwrap_err() {
        RecoverError::NotEnoughValid {
            valid: 1,
            needed: 2,
            bad,
        } => {
            assert_eq!(
                bad,
                vec![
                    (cs[1].clone(), Fault::WrongSecret),
                    (cs[2].clone(), Fault::WrongEpoch)
                ]
            );
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn shard_returned_by_the_wrong_custodian_is_named() {
    let mut rng = StdRng::seed_from_u64(3);
    let secret = Secret::from_slice(b"swap me around!!").unwrap();
    let envs = deal(
        &secret,
        Threshold::new(2, 4).unwrap(),
        SecretId::from_bytes([1; 16]),
        1,
        &mut rng,
    );
    let (m, cs) = manifest_for(&envs, SecretKind::Opaque);
    let stranger = CustodianId::new("mallory").unwrap();
    let answers = vec![
        returned(&cs[0], &envs[1]), // c1 returns c2's shard
        returned(&stranger, &envs[2]),
        returned(&cs[3], &envs[3]),
        returned(&cs[3], &envs[3]), // answers twice
        returned(&cs[2], &envs[2]),
    ];
    let rec = combine_verified(&m, answers).unwrap();
    assert_eq!(rec.secret, secret);
    assert_eq!(rec.used, vec![cs[3].clone(), cs[2].clone()]);
    assert_eq!(
        rec.bad,
        vec![
            (
                cs[0].clone(),
                Fault::WrongIndex {
                    expected: 1,
                    got: 2
                }
            ),
            (stranger, Fault::NotInManifest),
            (cs[3].clone(), Fault::Duplicate),
        ]
    );
}

#[test]
fn p256_secret_is_checked_against_the_public_key() {
    let mut rng = StdRng::seed_from_u64(4);
    let sk = p256::SecretKey::from_slice(&[0x11; 32]).unwrap();
    let secret = Secret::from_slice(&sk.to_bytes()).unwrap();
    let envs = deal(
        &secret,
        Threshold::new(3, 4).unwrap(),
        SecretId::from_bytes([8; 16]),
        1,
        &mut rng,
    );
    let (m, cs) = manifest_for(&envs, SecretKind::P256(sk.public_key()));
    let answers: Vec<Returned> = envs.iter().zip(&cs).map(|(e, c)| returned(c, e)).collect();
    assert_eq!(combine_verified(&m, answers).unwrap().secret, secret);

    // A manifest that names another public key is caught after combining.
    let other = p256::SecretKey::from_slice(&[0x22; 32]).unwrap();
    let (m2, _) = manifest_for(&envs, SecretKind::P256(other.public_key()));
    let answers: Vec<Returned> = envs.iter().zip(&cs).map(|(e, c)| returned(c, e)).collect();
    assert_eq!(
        combine_verified(&m2, answers).unwrap_err(),
        RecoverError::PublicKeyMismatch
    );
}

#[test]
fn returned_debug_and_errors_do_not_leak_shard_bytes() {
    let mut rng = StdRng::seed_from_u64(6);
    let secret = Secret::from_slice(&[0x5A; 40]).unwrap();
    let envs = deal(
        &secret,
        Threshold::new(2, 2).unwrap(),
        SecretId::from_bytes([1; 16]),
        1,
        &mut rng,
    );
    let text = format!("{:?} {:?}", envs[0], secret);
    let share_hex = hex::encode(envs[0].share.expose());
    assert!(!text.contains(&share_hex[..16]), "{text}");
    assert!(!text.contains("90, 90"), "{text}");
    let _unused: Zeroizing<Vec<u8>> = envs[0].encode();
}
